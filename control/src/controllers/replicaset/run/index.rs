//! An index of an informer's objects by namespace and controller uid, so a
//! pass finds a set's pods without scanning (and cloning) a namespace.

use std::collections::{BTreeSet, HashMap};
use std::marker::PhantomData;
use std::sync::{Arc, PoisonError, RwLock, RwLockWriteGuard};
use std::time::Duration;

use shturman_api::meta::{Object, ObjectMeta};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::revision_of;
use crate::runtime::{Change, Informer, ObjectKey};
use crate::store::Revision;

/// Where an object sits in an [`OwnerIndex`]: namespace and controller uid
/// (empty for none).
type Bucket = (String, String);

#[derive(Default)]
struct IndexState {
    buckets: HashMap<Bucket, BTreeSet<String>>,
    bucket_of: HashMap<ObjectKey, Bucket>,
    /// Changes at or below this revision are already in a rebuild.
    floor: Revision,
}

impl IndexState {
    fn put(&mut self, key: ObjectKey, bucket: Option<Bucket>) {
        if let Some(old) = self.bucket_of.remove(&key)
            && let Some(names) = self.buckets.get_mut(&old)
        {
            names.remove(&key.name);
            if names.is_empty() {
                self.buckets.remove(&old);
            }
        }
        if let Some(bucket) = bucket {
            self.buckets
                .entry(bucket.clone())
                .or_default()
                .insert(key.name.clone());
            self.bucket_of.insert(key, bucket);
        }
    }
}

fn bucket_of(meta: &ObjectMeta) -> Bucket {
    let owner = meta.controller_ref().map(|r| r.uid.clone()).unwrap_or_default();
    (meta.namespace().to_string(), owner)
}

/// An index of one informer's objects by namespace and controller uid, kept
/// up to date from its changes, so a pass finds a set's pods without
/// scanning the namespace. Lookups check each object against the cache; a
/// lookup first waits for the index to catch up with the informer and scans
/// the namespace if it does not in time.
pub(crate) struct OwnerIndex<T> {
    state: Arc<RwLock<IndexState>>,
    seen: watch::Sender<Revision>,
    _kind: PhantomData<fn() -> T>,
}

impl<T> Clone for OwnerIndex<T> {
    fn clone(&self) -> Self {
        OwnerIndex {
            state: self.state.clone(),
            seen: self.seen.clone(),
            _kind: PhantomData,
        }
    }
}

impl<T: Object + Send + Sync + 'static> OwnerIndex<T> {
    /// Starts indexing `informer`; the task ends when `stop` is cancelled.
    pub(crate) fn start(informer: &Informer<T>, stop: CancellationToken) -> (OwnerIndex<T>, JoinHandle<()>) {
        let index = OwnerIndex {
            state: Arc::default(),
            seen: watch::channel(0).0,
            _kind: PhantomData,
        };
        let task = tokio::spawn(index.clone().follow(informer.clone(), stop));
        (index, task)
    }

    async fn follow(self, informer: Informer<T>, stop: CancellationToken) {
        // Subscribe before the first rebuild so no change falls in between.
        let mut changes = informer.subscribe();
        tokio::select! {
            () = informer.wait_synced() => {}
            () = stop.cancelled() => return,
        }
        self.rebuild(&informer);
        loop {
            let change = tokio::select! {
                c = changes.recv() => c,
                () = stop.cancelled() => return,
            };
            match change {
                Ok(Change::Applied(o)) => self.apply(&o, false),
                Ok(Change::Deleted(o)) => self.apply(&o, true),
                Ok(Change::Resynced) | Err(RecvError::Lagged(_)) => self.rebuild(&informer),
                Err(RecvError::Closed) => return,
            }
        }
    }

    fn write(&self) -> RwLockWriteGuard<'_, IndexState> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn rebuild(&self, informer: &Informer<T>) {
        // The cache holds at least what `revision` says once it says so.
        let revision = informer.revision();
        let objects = informer.list();
        let mut state = IndexState {
            floor: revision,
            ..IndexState::default()
        };
        for o in &objects {
            state.put(ObjectKey::of(&**o), Some(bucket_of(o.metadata())));
        }
        *self.write() = state;
        self.seen.send_if_modified(|s| {
            let moved = *s < revision;
            *s = (*s).max(revision);
            moved
        });
    }

    fn apply(&self, obj: &T, deleted: bool) {
        let meta = obj.metadata();
        let Some(revision) = revision_of(meta) else {
            return;
        };
        {
            let mut state = self.write();
            if revision <= state.floor {
                return;
            }
            let bucket = (!deleted).then(|| bucket_of(meta));
            state.put(ObjectKey::of(obj), bucket);
        }
        self.seen.send_if_modified(|s| {
            let moved = *s < revision;
            *s = (*s).max(revision);
            moved
        });
    }

    /// The cached objects of `namespace` whose controller has `owner_uid`
    /// (`""`: the orphans).
    pub(crate) async fn owned(
        &self,
        informer: &Informer<T>,
        namespace: &str,
        owner_uid: &str,
        catch_up: Duration,
    ) -> Vec<Arc<T>> {
        let target = informer.revision();
        let mut rx = self.seen.subscribe();
        let caught_up = tokio::time::timeout(catch_up, rx.wait_for(|s| *s >= target))
            .await
            .is_ok_and(|r| r.is_ok());
        let owned_by = |o: &T| o.metadata().controller_ref().map_or("", |r| r.uid.as_str()) == owner_uid;
        if !caught_up {
            tracing::debug!(
                kind = T::KIND.name(),
                "owner index behind its informer; scanning the namespace"
            );
            return informer
                .list_in(namespace)
                .into_iter()
                .filter(|o| owned_by(o))
                .collect();
        }
        let names: Vec<String> = {
            let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
            state
                .buckets
                .get(&(namespace.to_string(), owner_uid.to_string()))
                .map(|n| n.iter().cloned().collect())
                .unwrap_or_default()
        };
        names
            .into_iter()
            .filter_map(|n| informer.get(&ObjectKey::new(namespace, n)))
            .filter(|o| owned_by(o))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_state_moves_keys_between_owners_and_forgets_deleted_ones() {
        let mut s = IndexState::default();
        let key = ObjectKey::new("ns", "p");
        let bucket = |owner: &str| ("ns".to_string(), owner.to_string());
        s.put(key.clone(), Some(bucket("")));
        s.put(key.clone(), Some(bucket("rs-1")));
        assert!(!s.buckets.contains_key(&bucket("")), "empty buckets go");
        assert!(s.buckets[&bucket("rs-1")].contains("p"));
        s.put(key.clone(), None);
        assert!(s.buckets.is_empty() && s.bucket_of.is_empty());
    }
}
