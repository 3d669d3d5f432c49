//! Sled-only store behaviour: group commit, unusable data dirs, close.

use std::sync::Arc;

use futures::FutureExt;

use shturman_control::store::conformance::within;
use shturman_control::store::{Key, Prefix, SledStore, Store, StoreError};

fn expect_corrupt(result: Result<SledStore, StoreError>, needle: &str) -> (String, String) {
    match result {
        Err(StoreError::Corrupt { path, reason }) => {
            assert!(
                reason.contains(needle),
                "reason {reason:?} should mention {needle:?}"
            );
            (path, reason)
        }
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("expected Corrupt, but the store opened"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_share_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(dir.path()).unwrap());
    let writes = 200;
    // Hold flushes until every writer has applied its change, as a slow
    // disk would: then one flush must acknowledge them all.
    store.hold_flushes(true);
    let before = store.flush_count();
    let mut watch = store.watch(&Prefix::new("pods", None), 0).await.unwrap();
    let tasks: Vec<_> = (0..writes)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .create(&Key::new("pods", "a", format!("p{i}")), vec![1])
                    .await
            })
        })
        .collect();
    within("every write to be applied", async {
        while store.applied_revision() < writes {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(
        store.revision().await.unwrap(),
        0,
        "nothing is durable (or visible) before a flush"
    );
    let read = store.get(&Key::new("pods", "a", "p0")).now_or_never();
    assert!(read.is_none(), "a read of an applied but not durable write waits");
    assert!(watch.try_recv().is_err(), "watchers see only durable changes");
    store.hold_flushes(false);
    for t in tasks {
        within("the writers", t).await.unwrap().unwrap();
    }
    for revision in 1..=writes {
        let event = within("the watch", watch.recv()).await.unwrap().unwrap();
        assert_eq!(event.revision, revision);
    }
    let flushes = store.flush_count() - before;
    assert_eq!(
        flushes, 1,
        "{writes} writes applied before a flush are acknowledged by one flush"
    );
    assert_eq!(store.revision().await.unwrap(), writes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_do_not_each_flush() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(dir.path()).unwrap());
    let writes = 200;
    let before = store.flush_count();
    let start = Arc::new(tokio::sync::Barrier::new(writes));
    let tasks: Vec<_> = (0..writes)
        .map(|i| {
            let (store, start) = (Arc::clone(&store), Arc::clone(&start));
            tokio::spawn(async move {
                start.wait().await;
                store
                    .create(&Key::new("pods", "a", format!("p{i}")), vec![1])
                    .await
            })
        })
        .collect();
    for t in tasks {
        within("the writers", t).await.unwrap().unwrap();
    }
    let flushes = store.flush_count() - before;
    eprintln!("{writes} concurrent writes took {flushes} flushes");
    assert!(
        flushes < u64::try_from(writes).unwrap(),
        "{writes} concurrent writes took {flushes} flushes"
    );
}

#[tokio::test]
async fn a_data_dir_that_is_a_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("store");
    std::fs::write(&file, b"not a directory").unwrap();
    let (path, reason) = expect_corrupt(SledStore::open(&file), "not a directory");
    assert_eq!(path, file.display().to_string());
    assert!(
        reason.contains("--data-dir"),
        "the reason says what to do: {reason}"
    );
}

/// Fills a store with some objects, then overwrites those of its files whose
/// names `pick` accepts with garbage; returns the store's path.
async fn damaged_store(dir: &std::path::Path, pick: impl Fn(&str) -> bool) -> std::path::PathBuf {
    let path = dir.join("store");
    {
        let store = SledStore::open(&path).unwrap();
        for i in 0..50 {
            store
                .create(&Key::new("pods", "a", format!("p{i}")), vec![7; 100])
                .await
                .unwrap();
        }
    }
    let mut garbage = 0u64;
    for entry in std::fs::read_dir(&path).unwrap() {
        let file = entry.unwrap().path();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        if file.is_file() && pick(&name) {
            let len = std::fs::metadata(&file).unwrap().len().max(64);
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7919 % 251) as u8).collect();
            std::fs::write(&file, bytes).unwrap();
            garbage += 1;
        }
    }
    assert!(garbage > 0, "sled wrote files to overwrite");
    path
}

#[tokio::test]
async fn garbage_over_every_sled_file_is_refused_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = damaged_store(dir.path(), |name| name != "SHTURMAN_STORE").await;
    expect_corrupt(SledStore::open(&path), "move it away");
}

#[tokio::test]
async fn garbage_over_sled_data_is_refused_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = damaged_store(dir.path(), |name| !matches!(name, "conf" | "SHTURMAN_STORE")).await;
    expect_corrupt(SledStore::open(&path), "move it away");
}

#[tokio::test]
async fn a_damaged_marker_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = damaged_store(dir.path(), |name| name == "SHTURMAN_STORE").await;
    expect_corrupt(SledStore::open(&path), "SHTURMAN_STORE file is damaged");
}

#[tokio::test]
async fn a_newer_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(SledStore::open(dir.path()).unwrap());
    {
        let db = sled::open(dir.path()).unwrap();
        db.insert(b"shturman/format", &2u32.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    expect_corrupt(SledStore::open(dir.path()), "newer Shturman");
}

#[tokio::test]
async fn a_newer_format_marker_is_refused_before_sled_opens() {
    let dir = tempfile::tempdir().unwrap();
    drop(SledStore::open(dir.path()).unwrap());
    std::fs::write(dir.path().join("SHTURMAN_STORE"), "shturman-store format 7\n").unwrap();
    expect_corrupt(SledStore::open(dir.path()), "store format 7");
}

#[tokio::test]
async fn a_non_empty_directory_is_not_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    expect_corrupt(SledStore::open(dir.path()), "not empty (notes.txt is there)");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "nothing was written there"
    );
}

#[tokio::test]
async fn a_foreign_sled_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        db.insert(b"something", b"else").unwrap();
        db.flush().unwrap();
    }
    expect_corrupt(SledStore::open(dir.path()), "not a Shturman store");
}

#[tokio::test]
async fn a_store_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = SledStore::open(dir.path()).unwrap();
    expect_corrupt(SledStore::open(dir.path()), "locked by another process");
}

#[tokio::test]
async fn an_unreadable_data_dir_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::read_dir(&locked).is_ok() {
        // Running as root: permissions do not apply, nothing to check.
        return;
    }
    let result = SledStore::open(&locked.join("store"));
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();
    expect_corrupt(result, "permission denied");
}

#[tokio::test]
async fn close_blocking_flushes_pending_writes_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(dir.path()).unwrap());
    store.hold_flushes(true);
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.create(&Key::new("pods", "a", "p"), b"x".to_vec()).await })
    };
    within("the write to be applied", async {
        while store.applied_revision() < 1 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    // Closing overrides the hold: the pending write is flushed and acknowledged.
    store.close_blocking().unwrap();
    assert_eq!(within("the writer", writer).await.unwrap().unwrap(), 1);
    assert_eq!(store.flush_count(), 1);
    assert!(matches!(store.revision().await, Ok(1)));
    drop(store);
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(store.revision().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_checkpoints_as_it_fills_and_a_reopen_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let key = |i: usize| Key::new("configmaps", "default", format!("big-{}", i % 20));
    let value = |i: usize| vec![u8::try_from(i % 251).unwrap(); 64 * 1024];
    let last = {
        let store = SledStore::open(dir.path()).unwrap();
        let mut last = 0;
        // 300 writes of 64 KiB: more than the log's 16 MiB segment.
        for i in 0..300 {
            last = if i < 20 {
                store.create(&key(i), value(i)).await.unwrap()
            } else {
                store.update(&key(i), value(i), None).await.unwrap()
            };
        }
        assert!(store.checkpoint_count() >= 1, "the log never started over");
        last
    };
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(store.revision().await.unwrap(), last);
    for i in 280..300 {
        let got = store.get(&key(i)).await.unwrap().expect("kept");
        assert_eq!(got.value, value(i), "{}", key(i));
    }
    assert_eq!(
        store
            .list(&Prefix::new("configmaps", None))
            .await
            .unwrap()
            .items
            .len(),
        20
    );
}
