//! Conformance checks of watches and of reopening a persistent store.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Factory, Op, churn, key, next_event, next_events, ok, state_at, v, within};
use crate::store::{Event, EventKind, Key, Prefix, Store, StoreError, StoreOptions};

pub async fn watch_reports_kinds_and_values(mut f: impl Factory) {
    let s = f.open(StoreOptions::default());
    let start = ok(s.revision().await, "revision");
    let k = key("pods", "default", "web");
    let r1 = ok(s.create(&k, v("1")).await, "create");
    let r2 = ok(s.update(&k, v("2"), None).await, "update");
    let mut w = ok(s.watch(&Prefix::new("pods", None), start).await, "watch");
    let (r3, _) = ok(s.delete(&k, None).await, "delete");
    let r4 = ok(s.create(&k, v("4")).await, "create");
    let got: Vec<_> = next_events(&mut w, 4)
        .await
        .into_iter()
        .map(|e| (e.kind, e.key, e.value, e.revision))
        .collect();
    use EventKind::*;
    let want = vec![
        (Added, k.clone(), v("1"), r1),
        (Modified, k.clone(), v("2"), r2),
        (Deleted, k.clone(), v("2"), r3),
        (Added, k.clone(), v("4"), r4),
    ];
    assert_eq!(got, want, "a Deleted event carries the last value");
}

pub async fn watch_filters_by_prefix(mut f: impl Factory) {
    let s = f.open(StoreOptions::default());
    let writes = [
        key("pods", "a", "x"),
        key("pods", "ab", "y"),
        key("pods.metrics", "a", "z"),
        key("nodes", "", "n1"),
        key("pods", "b", "w"),
        key("pod", "a", "q"),
    ];
    let prefixes = [
        Prefix::new("pods", Some("a".into())),
        Prefix::new("pods", None),
        Prefix::new("nodes", None),
        Prefix::new("pod", None),
    ];
    let mut watches = Vec::new();
    let start = ok(s.revision().await, "revision");
    for p in &prefixes {
        watches.push(ok(s.watch(p, start).await, "watch"));
    }
    for k in &writes {
        ok(s.create(k, v("x")).await, "create");
    }
    // One closing write under each prefix, so "nothing else came" is checkable.
    let ends = [
        key("pods", "a", "end"),
        key("pods", "b", "end"),
        key("nodes", "", "end"),
        key("pod", "a", "end"),
    ];
    for k in &ends {
        ok(s.create(k, v("end")).await, "create");
    }
    for (p, w) in prefixes.iter().zip(&mut watches) {
        let want: Vec<Key> = writes
            .iter()
            .chain(&ends)
            .filter(|k| p.contains(k))
            .cloned()
            .collect();
        let got: Vec<Key> = next_events(w, want.len())
            .await
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(got, want, "watch of {p:?}");
        assert!(
            w.try_recv().is_err(),
            "watch of {p:?} got an event outside its prefix"
        );
    }
}

pub async fn watch_delivers_every_change_in_order(mut f: impl Factory) {
    let s = Arc::new(f.open(StoreOptions::default()));
    let pods = Prefix::new("pods", None);
    let mut ops = churn(Arc::clone(&s), 99, 6).await;
    let from = *ops.keys().nth(3).expect("setup writes");
    let mut early = ok(s.watch(&pods, from).await, "watch");
    let writers: Vec<_> = (0..4)
        .map(|t| tokio::spawn(churn(Arc::clone(&s), t, 30)))
        .collect();
    let noise = {
        let s = Arc::clone(&s);
        tokio::spawn(async move {
            for i in 0..40 {
                ok(
                    s.create(&key("services", "ns0", &format!("s{i}")), v("x")).await,
                    "create",
                );
            }
        })
    };
    // A watch that starts while the writers run: its replay and live parts
    // must meet with no gap and no duplicate.
    within("some writes", async {
        while ok(s.revision().await, "revision") < 60 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let mid = ok(s.revision().await, "revision");
    let mut late = ok(s.watch(&pods, mid).await, "watch");
    for w in writers {
        ops.extend(within("the writers", w).await.expect("writer panicked"));
    }
    within("the noise writer", noise)
        .await
        .expect("noise writer panicked");
    let end = key("pods", "zz", "end");
    let r_end = ok(s.create(&end, v("end")).await, "create");
    ops.insert(r_end, Op::Put(EventKind::Added, end, v("end")));
    for (w, start) in [(&mut early, from), (&mut late, mid)] {
        let want: Vec<_> = ops.range(start + 1..).collect();
        // Read up to the closing write, so a gap fails at once, not by timeout.
        let mut got = Vec::new();
        while got.last().is_none_or(|e: &Event| e.revision < r_end) {
            got.push(next_event(w).await);
        }
        let got_revs: Vec<_> = got.iter().map(|e| e.revision).collect();
        let want_revs: Vec<_> = want.iter().map(|(r, _)| **r).collect();
        assert_eq!(
            got_revs, want_revs,
            "watch from {start}: every acknowledged change, in order, once"
        );
        for (e, (_, op)) in got.iter().zip(want) {
            let (kind, k, value) = match op {
                Op::Put(kind, k, value) => (*kind, k, value),
                Op::Delete(k, value) => (EventKind::Deleted, k, value),
            };
            assert_eq!(
                (e.kind, &e.key, &e.value),
                (kind, k, value),
                "event at {}",
                e.revision
            );
        }
    }
}

pub async fn watch_from_too_old_is_compacted(mut f: impl Factory) {
    let history = 5;
    let s = f.open(StoreOptions {
        history,
        ..StoreOptions::default()
    });
    let pods = Prefix::new("pods", None);
    let mut revs = Vec::new();
    for i in 0..20 {
        revs.push(ok(
            s.create(&key("pods", "a", &format!("p{i}")), v("x")).await,
            "create",
        ));
    }
    let oldest_kept = revs[revs.len() - history];
    for from in [0, oldest_kept - 2] {
        match s.watch(&pods, from).await {
            Err(StoreError::Compacted { requested, oldest }) => {
                assert_eq!((requested, oldest), (from, oldest_kept));
            }
            other => panic!("a watch from {from} must be Compacted, got {other:?}"),
        }
    }
    let mut w = ok(
        s.watch(&pods, oldest_kept - 1).await,
        "watch from just before the oldest kept",
    );
    let got: Vec<_> = next_events(&mut w, history)
        .await
        .iter()
        .map(|e| e.revision)
        .collect();
    assert_eq!(got, revs[revs.len() - history..]);
    let mut now = ok(
        s.watch(&pods, *revs.last().expect("writes")).await,
        "watch from now",
    );
    let r = ok(s.create(&key("pods", "a", "new"), v("x")).await, "create");
    assert_eq!(next_event(&mut now).await.revision, r);
}

pub async fn slow_watcher_is_cut_off_without_blocking_writers(mut f: impl Factory) {
    let s = f.open(StoreOptions {
        watch_buffer: 4,
        ..StoreOptions::default()
    });
    let start = ok(s.revision().await, "revision");
    let mut w = ok(s.watch(&Prefix::new("pods", None), start).await, "watch");
    within("writes while a watcher does not read", async {
        for i in 0..40 {
            ok(
                s.create(&key("pods", "a", &format!("p{i}")), v("x")).await,
                "create",
            );
        }
    })
    .await;
    let mut last = 0;
    loop {
        match within("the lagging watch", w.recv()).await {
            Some(Ok(e)) => {
                assert!(e.revision > last);
                last = e.revision;
            }
            Some(Err(StoreError::Compacted { .. })) => break,
            other => panic!("a lagging watch must end with Compacted, got {other:?}"),
        }
    }
    assert!(
        last < 40,
        "a watcher with a buffer of 4 cannot have received all 40 events"
    );
    assert!(
        within("the end of the watch", w.recv()).await.is_none(),
        "the stream ends after Compacted"
    );
}

pub async fn reopen_keeps_objects_and_revision(mut f: impl Factory) {
    if !f.persistent() {
        return;
    }
    let s = f.open(StoreOptions::default());
    let mut ops = churn(Arc::new(s), 0, 30).await;
    let last = *ops.keys().last().expect("writes");
    let s = f.open(StoreOptions::default());
    let at = ok(s.revision().await, "revision after reopen");
    assert!(
        at >= last,
        "the revision went back from {last} to {at} across a reopen"
    );
    let listing = ok(s.list(&Prefix::new("pods", None)).await, "list");
    assert_eq!(listing.items, state_at(&ops, last), "a reopen keeps every object");
    match s.watch(&Prefix::new("pods", None), last - 1).await {
        Err(StoreError::Compacted { .. }) => {}
        other => panic!("history does not survive a reopen; expected Compacted, got {other:?}"),
    }
    let mut w = ok(
        s.watch(&Prefix::new("pods", None), at).await,
        "watch from the current revision",
    );
    let k = key("pods", "a", "after");
    let r = ok(s.create(&k, v("x")).await, "create after reopen");
    assert!(r > at);
    ops.insert(r, Op::Put(EventKind::Added, k, v("x")));
    assert_eq!(next_event(&mut w).await.revision, r);
    drop(w);
    drop(s);
    let s = f.open(StoreOptions::default());
    assert!(ok(s.revision().await, "revision") >= r);
    let listing = ok(s.list(&Prefix::new("pods", None)).await, "list");
    assert_eq!(listing.items, state_at(&ops, r));
}

pub async fn reopen_keeps_concurrent_writes(mut f: impl Factory) {
    if !f.persistent() {
        return;
    }
    let s = Arc::new(f.open(StoreOptions::default()));
    let writers: Vec<_> = (0..4)
        .map(|t| tokio::spawn(churn(Arc::clone(&s), t, 25)))
        .collect();
    let mut ops = BTreeMap::new();
    for w in writers {
        ops.extend(within("the writers", w).await.expect("writer panicked"));
    }
    let last = *ops.keys().last().expect("writes");
    drop(Arc::try_unwrap(s).ok().expect("the only handle"));
    let s = f.open(StoreOptions::default());
    assert!(ok(s.revision().await, "revision") >= last);
    let listing = ok(s.list(&Prefix::new("pods", None)).await, "list");
    assert_eq!(listing.items, state_at(&ops, last));
}

pub async fn close_refuses_work_and_ends_watches(mut f: impl Factory) {
    let s = f.open(StoreOptions::default());
    let k = key("pods", "a", "p");
    let r = ok(s.create(&k, v("x")).await, "create");
    let mut w = ok(s.watch(&Prefix::new("pods", None), r).await, "watch");
    ok(within("close", s.close()).await, "close");
    ok(within("a second close", s.close()).await, "a second close");
    assert!(matches!(s.get(&k).await, Err(StoreError::Closed)));
    assert!(matches!(
        s.list(&Prefix::new("pods", None)).await,
        Err(StoreError::Closed)
    ));
    assert!(matches!(
        s.create(&key("pods", "a", "q"), v("x")).await,
        Err(StoreError::Closed)
    ));
    assert!(matches!(
        s.update(&k, v("y"), None).await,
        Err(StoreError::Closed)
    ));
    assert!(matches!(s.delete(&k, None).await, Err(StoreError::Closed)));
    assert!(matches!(
        s.watch(&Prefix::new("pods", None), r).await,
        Err(StoreError::Closed)
    ));
    match within("the watch to end", w.recv()).await {
        Some(Err(StoreError::Closed)) => {}
        other => panic!("a watch ends with Closed when the store closes, got {other:?}"),
    }
    assert!(within("the watch to end", w.recv()).await.is_none());
    if f.persistent() {
        drop(s);
        let s = f.open(StoreOptions::default());
        assert_eq!(
            ok(s.get(&k).await, "get after reopen").map(|x| x.revision),
            Some(r)
        );
    }
}
