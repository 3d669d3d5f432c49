//! Informers: one per kind, shared by every controller. An informer lists
//! the kind, then watches from the list's revision, keeping a local cache of
//! typed objects; when its watch expires (410) it lists again. Subscribers
//! hear of each change after the cache holds it.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use shturman_api::meta::Object;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::queue::ObjectKey;
use crate::client::Client;
use crate::store::{EventKind, Prefix, Revision, StoreError, Versioned};

/// What changed in an informer's cache.
#[derive(Debug)]
pub enum Change<T> {
    /// Added or modified: the new state.
    Applied(Arc<T>),
    /// Deleted: the last state.
    Deleted(Arc<T>),
    /// The cache was rebuilt from a fresh list: look at everything again.
    Resynced,
}

impl<T> Clone for Change<T> {
    fn clone(&self) -> Self {
        match self {
            Change::Applied(o) => Change::Applied(o.clone()),
            Change::Deleted(o) => Change::Deleted(o.clone()),
            Change::Resynced => Change::Resynced,
        }
    }
}

struct Inner<T> {
    cache: RwLock<BTreeMap<ObjectKey, Arc<T>>>,
    changes: broadcast::Sender<Change<T>>,
    /// The latest revision the cache reflects.
    seen: watch::Sender<Revision>,
    /// Whether the first list has landed.
    synced: watch::Sender<bool>,
}

/// A shared, typed cache of one kind.
pub struct Informer<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Clone for Informer<T> {
    fn clone(&self) -> Self {
        Informer {
            inner: self.inner.clone(),
        }
    }
}

fn decode<T: Object>(v: &Versioned) -> Option<T> {
    match serde_json::from_slice::<T>(&v.value) {
        Ok(mut obj) => {
            obj.metadata_mut().resource_version = Some(v.revision.to_string());
            Some(obj)
        }
        Err(e) => {
            tracing::error!(kind = T::KIND.name(), error = %e, "a stored object does not decode; skipped");
            None
        }
    }
}

impl<T: Object + Send + Sync + 'static> Informer<T> {
    /// Starts listing and watching; runs until `stop` is cancelled.
    pub fn start(client: Client, stop: CancellationToken) -> Informer<T> {
        let (changes, _) = broadcast::channel(4096);
        let inner = Arc::new(Inner {
            cache: RwLock::new(BTreeMap::new()),
            changes,
            seen: watch::channel(0).0,
            synced: watch::channel(false).0,
        });
        let informer = Informer { inner };
        let run = informer.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = run.run(client) => {}
                () = stop.cancelled() => {}
            }
        });
        informer
    }

    async fn run(&self, client: Client) {
        let prefix = Prefix::new(T::KIND.plural(), None);
        let mut retry = Duration::from_millis(50);
        loop {
            let listing = match client.store().list(&prefix).await {
                Ok(l) => l,
                Err(StoreError::Closed) => return,
                Err(e) => {
                    tracing::warn!(kind = T::KIND.name(), error = %e, "list failed; retrying");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            let fresh: BTreeMap<ObjectKey, Arc<T>> = listing
                .items
                .iter()
                .filter_map(|(_, v)| decode::<T>(v))
                .map(|o| (ObjectKey::of(&o), Arc::new(o)))
                .collect();
            if let Ok(mut c) = self.inner.cache.write() {
                *c = fresh;
            }
            self.inner.seen.send_replace(listing.revision);
            self.inner.synced.send_replace(true);
            let _ = self.inner.changes.send(Change::Resynced);
            let mut events = match client.store().watch(&prefix, listing.revision).await {
                Ok(w) => w,
                Err(StoreError::Closed) => return,
                Err(e) => {
                    tracing::warn!(kind = T::KIND.name(), error = %e, "watch failed; relisting");
                    tokio::time::sleep(retry).await;
                    continue;
                }
            };
            retry = Duration::from_millis(50);
            while let Some(ev) = events.recv().await {
                let ev = match ev {
                    Ok(ev) => ev,
                    Err(StoreError::Closed) => return,
                    Err(e) => {
                        tracing::debug!(kind = T::KIND.name(), error = %e, "watch ended; relisting");
                        break;
                    }
                };
                let Some(obj) = decode::<T>(&Versioned {
                    value: ev.value,
                    revision: ev.revision,
                }) else {
                    continue;
                };
                let obj = Arc::new(obj);
                let key = ObjectKey::of(&*obj);
                if let Ok(mut c) = self.inner.cache.write() {
                    match ev.kind {
                        EventKind::Deleted => c.remove(&key),
                        EventKind::Added | EventKind::Modified => c.insert(key, obj.clone()),
                    };
                }
                self.inner.seen.send_replace(ev.revision);
                let change = match ev.kind {
                    EventKind::Deleted => Change::Deleted(obj),
                    _ => Change::Applied(obj),
                };
                let _ = self.inner.changes.send(change);
            }
        }
    }

    /// Waits until the first list is in the cache.
    pub async fn wait_synced(&self) {
        let mut rx = self.inner.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Waits (up to `timeout`) until the cache reflects revision `rev` — after
    /// a controller's own write of this kind, so its next pass reads it.
    pub async fn wait_seen(&self, rev: Revision, timeout: Duration) -> bool {
        let mut rx = self.inner.seen.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|seen| *seen >= rev))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The latest revision the cache reflects.
    pub fn revision(&self) -> Revision {
        *self.inner.seen.borrow()
    }

    /// One cached object.
    pub fn get(&self, key: &ObjectKey) -> Option<Arc<T>> {
        self.inner.cache.read().ok()?.get(key).cloned()
    }

    /// Every cached object.
    pub fn list(&self) -> Vec<Arc<T>> {
        self.inner
            .cache
            .read()
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Cached objects of one namespace.
    pub fn list_in(&self, namespace: &str) -> Vec<Arc<T>> {
        let Ok(c) = self.inner.cache.read() else {
            return Vec::new();
        };
        let from = ObjectKey::new(namespace, "");
        c.range(from..)
            .take_while(|(k, _)| k.namespace == namespace)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Cached objects that pass `keep`.
    pub fn filter(&self, keep: impl Fn(&T) -> bool) -> Vec<Arc<T>> {
        self.inner
            .cache
            .read()
            .map(|c| c.values().filter(|o| keep(o)).cloned().collect())
            .unwrap_or_default()
    }

    /// Hears of every change after the cache holds it.
    pub fn subscribe(&self) -> broadcast::Receiver<Change<T>> {
        self.inner.changes.subscribe()
    }
}
