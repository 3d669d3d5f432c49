//! The one conformance suite every [`Store`] backend must pass.
//!
//! Each check is a `pub async fn` taking a [`Factory`] that opens the backend
//! under test. [`store_conformance_tests!`](crate::store_conformance_tests)
//! turns every check into a `#[tokio::test]` for one backend, so a new check
//! runs against every backend at once:
//!
//! ```ignore
//! mod memory {
//!     shturman_control::store_conformance_tests!(shturman_control::store::conformance::MemoryFactory);
//! }
//! ```
//!
//! Checks panic (with what went wrong) on a broken promise, and wait on
//! conditions with a deadline, never on fixed sleeps.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::{
    EventKind, Key, Listing, MemoryStore, Prefix, Revision, Store, StoreError, StoreOptions, Versioned, Watch,
};

/// Opens the backend under test.
pub trait Factory: Send + 'static {
    type Store: Store;
    /// The first call yields an empty store. For a backend that persists,
    /// later calls (once the previous store was dropped) reopen the same data.
    fn open(&mut self, options: StoreOptions) -> Self::Store;
    /// Whether reopening keeps the data; restart checks are skipped if not.
    fn persistent(&self) -> bool;
}

/// The factory for [`MemoryStore`].
pub struct MemoryFactory;

impl Factory for MemoryFactory {
    type Store = MemoryStore;
    fn open(&mut self, options: StoreOptions) -> MemoryStore {
        MemoryStore::with_options(options)
    }
    fn persistent(&self) -> bool {
        false
    }
}

/// Instantiates every conformance check as a `#[tokio::test]` (multi-thread
/// runtime) using the factory expression given, evaluated once per test.
#[macro_export]
macro_rules! store_conformance_tests {
    ($factory:expr) => {
        $crate::store_conformance_tests!(@each $factory;
            create_then_get, update_checks_presence_and_revision, delete_returns_last_value,
            revisions_are_global_and_increasing, list_filters_by_prefix, list_is_consistent_under_writes,
            concurrent_cas_loses_no_update, watch_reports_kinds_and_values, watch_filters_by_prefix,
            watch_delivers_every_change_in_order, watch_from_too_old_is_compacted,
            slow_watcher_is_cut_off_without_blocking_writers, reopen_keeps_objects_and_revision,
            reopen_keeps_concurrent_writes, close_refuses_work_and_ends_watches);
    };
    (@each $factory:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                $crate::store::conformance::$check($factory).await;
            }
        )*
    };
}

mod watch;

pub use watch::{
    close_refuses_work_and_ends_watches, reopen_keeps_concurrent_writes, reopen_keeps_objects_and_revision,
    slow_watcher_is_cut_off_without_blocking_writers, watch_delivers_every_change_in_order,
    watch_filters_by_prefix, watch_from_too_old_is_compacted, watch_reports_kinds_and_values,
};

const DEADLINE: Duration = Duration::from_secs(30);

/// Awaits `fut`, failing the check if it takes longer than [`DEADLINE`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {DEADLINE:?} waiting for {what}"),
    }
}

fn key(resource: &str, namespace: &str, name: &str) -> Key {
    Key::new(resource, namespace, name)
}

fn v(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn ok<T>(r: Result<T, StoreError>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("{what} failed: {e}"))
}

/// The next event of `watch`, which must be an `Ok` one.
async fn next_event(watch: &mut Watch) -> super::Event {
    match within("the next watch event", watch.recv()).await {
        Some(Ok(event)) => event,
        Some(Err(e)) => panic!("the watch failed: {e}"),
        None => panic!("the watch ended early"),
    }
}

async fn next_events(watch: &mut Watch, n: usize) -> Vec<super::Event> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        out.push(next_event(watch).await);
    }
    out
}

/// A write whose revision was acknowledged.
#[derive(Clone, Debug)]
enum Op {
    Put(EventKind, Key, Vec<u8>),
    Delete(Key, Vec<u8>),
}

/// Replays acknowledged writes up to `at`: the objects that must exist then.
fn state_at(ops: &BTreeMap<Revision, Op>, at: Revision) -> Vec<(Key, Versioned)> {
    let mut objects = BTreeMap::new();
    for (&revision, op) in ops.range(..=at) {
        match op {
            Op::Put(_, k, value) => {
                objects.insert(
                    k.clone(),
                    Versioned {
                        value: value.clone(),
                        revision,
                    },
                );
            }
            Op::Delete(k, _) => {
                objects.remove(k);
            }
        }
    }
    objects.into_iter().collect()
}

/// Writer `t` of a concurrent workload under `pods/ns{t}`: creates, updates
/// and deletes, returning every acknowledged write by revision.
async fn churn(store: Arc<impl Store>, t: usize, n: usize) -> BTreeMap<Revision, Op> {
    let mut ops = BTreeMap::new();
    for i in 0..n {
        let k = key("pods", &format!("ns{t}"), &format!("o{i}"));
        let value = v(&format!("{t}-{i}"));
        let r = ok(store.create(&k, value.clone()).await, "create");
        ops.insert(r, Op::Put(EventKind::Added, k.clone(), value));
        if i % 3 == 0 {
            let value = v(&format!("{t}-{i}-updated"));
            let r = ok(store.update(&k, value.clone(), Some(r)).await, "update");
            ops.insert(r, Op::Put(EventKind::Modified, k.clone(), value));
        }
        if i % 5 == 4 {
            let (r, last) = ok(store.delete(&k, None).await, "delete");
            ops.insert(r, Op::Delete(k, last.value));
        }
    }
    ops
}

pub async fn create_then_get(mut f: impl Factory) {
    let s = f.open(StoreOptions::default());
    // 0 for the embedded backends; a fresh etcd starts at 1.
    let r0 = ok(s.revision().await, "revision");
    assert!(r0 <= 1, "a fresh store is at revision {r0}");
    let k = key("pods", "default", "web");
    assert_eq!(ok(s.get(&k).await, "get"), None, "a fresh store is empty");
    let r1 = ok(s.create(&k, v("one")).await, "create");
    assert!(r1 > r0);
    let got = ok(s.get(&k).await, "get");
    assert_eq!(
        got,
        Some(Versioned {
            value: v("one"),
            revision: r1
        })
    );
    assert_eq!(ok(s.get(&key("pods", "default", "other")).await, "get"), None);
    assert_eq!(ok(s.get(&key("pods", "other", "web")).await, "get"), None);
    match s.create(&k, v("two")).await {
        Err(StoreError::AlreadyExists { key }) => assert_eq!(key, k),
        other => panic!("creating an existing key must fail with AlreadyExists, got {other:?}"),
    }
    assert_eq!(ok(s.get(&k).await, "get").map(|x| x.value), Some(v("one")));
    assert_eq!(
        ok(s.revision().await, "revision"),
        r1,
        "a failed write is no change"
    );
}

pub async fn update_checks_presence_and_revision(mut f: impl Factory) {
    let s = f.open(StoreOptions::default());
    let k = key("deployments.apps", "default", "web");
    for expected in [None, Some(1)] {
        match s.update(&k, v("x"), expected).await {
            Err(StoreError::NotFound { key }) => assert_eq!(key, k),
            other => panic!("updating a missing key must fail with NotFound, got {other:?}"),
        }
    }
    let r1 = ok(s.create(&k, v("1")).await, "create");
    let r2 = ok(s.update(&k, v("2"), None).await, "unconditional update");
    assert!(r2 > r1);
    let r3 = ok(
        s.update(&k, v("3"), Some(r2)).await,
        "update at the current revision",
    );
    assert!(r3 > r2);
    match s.update(&k, v("stale"), Some(r2)).await {
        Err(StoreError::Conflict {
            key,
            expected,
            actual,
        }) => {
            assert_eq!((key, expected, actual), (k.clone(), r2, r3));
        }
        other => panic!("an update at a stale revision must fail with Conflict, got {other:?}"),
    }
    assert_eq!(
        ok(s.get(&k).await, "get"),
        Some(Versioned {
            value: v("3"),
            revision: r3
        })
    );
}

pub async fn delete_returns_last_value(mut f: impl Factory) {
    let s = f.open(StoreOptions::default());
    let k = key("configmaps", "default", "cfg");
    assert!(matches!(
        s.delete(&k, None).await,
        Err(StoreError::NotFound { .. })
    ));
    let r1 = ok(s.create(&k, v("1")).await, "create");
    let r2 = ok(s.update(&k, v("2"), None).await, "update");
    match s.delete(&k, Some(r1)).await {
        Err(StoreError::Conflict { expected, actual, .. }) => assert_eq!((expected, actual), (r1, r2)),
        other => panic!("a delete at a stale revision must fail with Conflict, got {other:?}"),
    }
    let (rd, last) = ok(s.delete(&k, Some(r2)).await, "delete");
    assert!(rd > r2, "a delete is a change with its own revision");
    assert_eq!(
        last,
        Versioned {
            value: v("2"),
            revision: r2
        }
    );
    assert_eq!(ok(s.get(&k).await, "get"), None);
    assert_eq!(ok(s.revision().await, "revision"), rd);
    assert!(matches!(
        s.delete(&k, None).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        s.update(&k, v("x"), None).await,
        Err(StoreError::NotFound { .. })
    ));
    let rc = ok(s.create(&k, v("again")).await, "re-create after delete");
    assert!(rc > rd);
    assert_eq!(
        ok(s.get(&k).await, "get"),
        Some(Versioned {
            value: v("again"),
            revision: rc
        })
    );
}

pub async fn revisions_are_global_and_increasing(mut f: impl Factory) {
    let s = f.open(StoreOptions::default());
    let mut last = 0;
    for i in 0..20 {
        let k = match i % 3 {
            0 => key("pods", "a", &format!("p{i}")),
            1 => key("services", "b", &format!("s{i}")),
            _ => key("nodes", "", &format!("n{i}")),
        };
        let r = ok(s.create(&k, v("x")).await, "create");
        assert!(
            r > last,
            "revision {r} after {last}: revisions must be global and increasing"
        );
        last = r;
        let r = ok(s.update(&k, v("y"), Some(r)).await, "update");
        assert!(r > last);
        last = r;
        assert_eq!(ok(s.revision().await, "revision"), last);
    }
    assert_eq!(
        ok(s.list(&Prefix::new("pods", None)).await, "list").revision,
        last
    );
}

pub async fn list_filters_by_prefix(mut f: impl Factory) {
    let s = f.open(StoreOptions::default());
    let keys = [
        key("pods", "a", "p1"),
        key("pods", "a", "p/2%"),
        key("pods", "ab", "p3"),
        key("pods", "b", "p4"),
        key("pods.metrics", "a", "m1"),
        key("nodes", "", "n1"),
        key("pod", "a", "x"),
    ];
    let mut revs = BTreeMap::new();
    for k in &keys {
        revs.insert(k.clone(), ok(s.create(k, v(&k.to_string())).await, "create"));
    }
    let last = ok(s.revision().await, "revision");
    let cases = [
        ("pods", None),
        ("pods", Some("a")),
        ("pods", Some("b")),
        ("nodes", None),
        ("nodes", Some("")),
        ("secrets", None),
    ];
    for (resource, namespace) in cases {
        let want = Listing {
            items: revs
                .iter()
                .filter(|(k, _)| k.resource == resource && namespace.is_none_or(|ns| k.namespace == ns))
                .map(|(k, &revision)| {
                    (
                        k.clone(),
                        Versioned {
                            value: v(&k.to_string()),
                            revision,
                        },
                    )
                })
                .collect(),
            revision: last,
        };
        let prefix = Prefix::new(resource, namespace.map(String::from));
        assert_eq!(ok(s.list(&prefix).await, "list"), want, "listing {prefix:?}");
    }
}

pub async fn list_is_consistent_under_writes(mut f: impl Factory) {
    let s = Arc::new(f.open(StoreOptions::default()));
    let writers: Vec<_> = (0..3)
        .map(|t| tokio::spawn(churn(Arc::clone(&s), t, 40)))
        .collect();
    let lister = {
        let s = Arc::clone(&s);
        tokio::spawn(async move {
            let mut listings = Vec::new();
            while listings.len() < 5 || ok(s.revision().await, "revision") < 150 {
                listings.push(ok(s.list(&Prefix::new("pods", None)).await, "list"));
                tokio::task::yield_now().await;
            }
            listings
        })
    };
    let mut ops = BTreeMap::new();
    for w in writers {
        ops.extend(within("the writers", w).await.expect("writer panicked"));
    }
    let listings = within("the lister", lister).await.expect("lister panicked");
    for listing in listings {
        assert_eq!(
            listing.items,
            state_at(&ops, listing.revision),
            "a listing must show exactly the state at its revision {}",
            listing.revision
        );
    }
}

pub async fn concurrent_cas_loses_no_update(mut f: impl Factory) {
    let s = Arc::new(f.open(StoreOptions::default()));
    let k = key("configmaps", "default", "counter");
    ok(s.create(&k, v("0")).await, "create");
    let (tasks, per_task) = (8, 25);
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (s, k) = (Arc::clone(&s), k.clone());
            tokio::spawn(async move {
                let mut revisions = Vec::new();
                while revisions.len() < per_task {
                    let cur = ok(s.get(&k).await, "get").expect("the counter exists");
                    let n: u64 = String::from_utf8_lossy(&cur.value).parse().expect("a number");
                    match s.update(&k, v(&(n + 1).to_string()), Some(cur.revision)).await {
                        Ok(r) => revisions.push(r),
                        Err(StoreError::Conflict { .. }) => {}
                        Err(e) => panic!("update failed: {e}"),
                    }
                }
                revisions
            })
        })
        .collect();
    let mut all = BTreeSet::new();
    for h in handles {
        all.extend(within("the incrementers", h).await.expect("incrementer panicked"));
    }
    assert_eq!(
        all.len(),
        tasks * per_task,
        "every successful update has its own revision"
    );
    let fin = ok(s.get(&k).await, "get").expect("the counter exists");
    assert_eq!(
        fin.value,
        v(&(tasks * per_task).to_string()),
        "no update may be lost"
    );
    assert_eq!(Some(&fin.revision), all.last());
}
