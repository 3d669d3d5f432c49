//! The work queue: keys, deduplicated; a key being worked on is never handed
//! to a second worker, and a key added meanwhile is worked again after;
//! delayed adds (requeue-after, back-off) wait in a timer list. Pure state
//! with no I/O; the async wrapper lives in `controller`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

/// Which object a reconcile is about: namespace ("" when cluster-scoped) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of an object (its namespace and name).
    pub fn of<T: shturman_api::meta::Object>(obj: &T) -> Self {
        let m = obj.metadata();
        ObjectKey::new(
            m.namespace.clone().unwrap_or_default(),
            m.name.clone().unwrap_or_default(),
        )
    }

    /// The namespace as an API argument (`None` when cluster-scoped).
    pub fn ns(&self) -> Option<&str> {
        (!self.namespace.is_empty()).then_some(self.namespace.as_str())
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}", self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// The queue's state.
#[derive(Default)]
pub struct Queue {
    ready: VecDeque<ObjectKey>,
    /// Keys in `ready` (dedup).
    queued: HashSet<ObjectKey>,
    /// Keys a worker holds now.
    active: HashSet<ObjectKey>,
    /// Keys added while active: queued again when released.
    dirty: HashSet<ObjectKey>,
    /// When each delayed key is due.
    timers: BTreeMap<Instant, Vec<ObjectKey>>,
    /// Consecutive failures per key, for back-off.
    failures: HashMap<ObjectKey, u32>,
}

/// Back-off after `n` consecutive failures: 5 ms doubling, capped at 60 s.
pub fn backoff(n: u32) -> Duration {
    let ms = 5u64.saturating_mul(1u64 << n.min(20));
    Duration::from_millis(ms.min(60_000))
}

impl Queue {
    /// Adds a key now (no-op if already queued).
    pub fn add(&mut self, key: ObjectKey) {
        if self.active.contains(&key) {
            self.dirty.insert(key);
        } else if self.queued.insert(key.clone()) {
            self.ready.push_back(key);
        }
    }

    /// Adds a key once `at` has passed.
    pub fn add_at(&mut self, key: ObjectKey, at: Instant) {
        self.timers.entry(at).or_default().push(key);
    }

    /// Moves due timers to the ready list; returns when the next one is due.
    pub fn fire_timers(&mut self, now: Instant) -> Option<Instant> {
        let later = self.timers.split_off(&(now + Duration::from_nanos(1)));
        let due = std::mem::replace(&mut self.timers, later);
        for key in due.into_values().flatten() {
            self.add(key);
        }
        self.timers.keys().next().copied()
    }

    /// Hands the next key to a worker.
    pub fn take(&mut self) -> Option<ObjectKey> {
        let key = self.ready.pop_front()?;
        self.queued.remove(&key);
        self.active.insert(key.clone());
        Some(key)
    }

    /// A worker is done with `key`; it is queued again if it was added meanwhile.
    pub fn release(&mut self, key: &ObjectKey) {
        self.active.remove(key);
        if self.dirty.remove(key) {
            self.add(key.clone());
        }
    }

    /// Records a success (resets back-off).
    pub fn succeeded(&mut self, key: &ObjectKey) {
        self.failures.remove(key);
    }

    /// Records a failure; returns the back-off to wait before retrying.
    pub fn failed(&mut self, key: &ObjectKey) -> Duration {
        let n = self.failures.entry(key.clone()).or_insert(0);
        let wait = backoff(*n);
        *n = n.saturating_add(1);
        wait
    }

    /// Keys waiting to be taken.
    pub fn len(&self) -> usize {
        self.ready.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ready.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(n: &str) -> ObjectKey {
        ObjectKey::new("default", n)
    }

    #[test]
    fn dedups_and_keeps_order() {
        let mut q = Queue::default();
        q.add(k("a"));
        q.add(k("b"));
        q.add(k("a"));
        assert_eq!(q.len(), 2);
        assert_eq!(q.take(), Some(k("a")));
        assert_eq!(q.take(), Some(k("b")));
        assert_eq!(q.take(), None);
    }

    #[test]
    fn active_keys_are_not_handed_out_twice() {
        let mut q = Queue::default();
        q.add(k("a"));
        let a = q.take().unwrap();
        q.add(k("a"));
        assert_eq!(q.take(), None, "a is being worked on");
        q.release(&a);
        assert_eq!(q.take(), Some(k("a")), "added meanwhile, so worked again");
        q.release(&k("a"));
        assert_eq!(q.take(), None);
    }

    #[test]
    fn timers_fire_when_due() {
        let mut q = Queue::default();
        let t0 = Instant::now();
        q.add_at(k("late"), t0 + Duration::from_secs(10));
        q.add_at(k("soon"), t0 + Duration::from_secs(1));
        assert_eq!(q.fire_timers(t0), Some(t0 + Duration::from_secs(1)));
        assert!(q.is_empty());
        assert_eq!(
            q.fire_timers(t0 + Duration::from_secs(1)),
            Some(t0 + Duration::from_secs(10))
        );
        assert_eq!(q.take(), Some(k("soon")));
        assert_eq!(q.fire_timers(t0 + Duration::from_secs(11)), None);
        assert_eq!(q.take(), Some(k("late")));
    }

    #[test]
    fn backoff_grows_and_resets() {
        let mut q = Queue::default();
        let a = k("a");
        assert_eq!(q.failed(&a), Duration::from_millis(5));
        assert_eq!(q.failed(&a), Duration::from_millis(10));
        assert_eq!(q.failed(&a), Duration::from_millis(20));
        q.succeeded(&a);
        assert_eq!(q.failed(&a), Duration::from_millis(5));
        assert_eq!(backoff(30), Duration::from_secs(60));
    }
}
