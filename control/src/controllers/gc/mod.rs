//! The garbage collector, as Kubernetes' GC controller: objects whose owners
//! are all gone are deleted (`Background`), owners deleted in the
//! `Foreground` wait (finalizer `foregroundDeletion`) until their blocking
//! dependents are gone, and owners deleted with `Orphan` (finalizer
//! `orphan`) first strip their references from their dependents.
//!
//! It works over any set of kinds ([`GarbageCollector::watch`]), one work
//! queue per kind; a reconcile looks at one object both as a dependent
//! (are its owners still there?) and as an owner being deleted (what do its
//! dependents still need?). Decisions are the pure functions of [`plan`];
//! this module reads (cache first, a live read before believing an owner is
//! gone) and writes.

mod kinds;
pub mod plan;

use std::collections::HashMap;
use std::sync::Arc;

use shturman_api::apps::{Deployment, ReplicaSet};
use shturman_api::core::Pod;
use shturman_api::kind::Kind;
use shturman_api::meta::{Object, ObjectMeta, OwnerReference};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use self::kinds::{Typed, Watched, kind_named, live_meta};
use self::plan::{DependentVerdict, DependentView, OwnerState};
use crate::client::Client;
use crate::runtime::controller::QueueHandle;
use crate::runtime::{Action, Controller, Informer, ObjectKey};
use crate::server::error::ApiError;
use crate::server::handlers::{FOREGROUND_FINALIZER, ORPHAN_FINALIZER};

/// Why a garbage-collection pass failed (it is retried with back-off).
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("{kind} {key}: {source}")]
    Api {
        kind: &'static str,
        key: ObjectKey,
        source: ApiError,
    },
}

/// The garbage collector: add the kinds it watches, then [`run`](Self::run) it.
pub struct GarbageCollector {
    client: Client,
    kinds: Vec<Arc<dyn Watched>>,
}

/// Starts a garbage collector over Deployments, ReplicaSets and Pods with
/// two workers per kind; it stops when `stop` is cancelled.
pub fn start(
    client: Client,
    deployments: &Informer<Deployment>,
    replicasets: &Informer<ReplicaSet>,
    pods: &Informer<Pod>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let gc = GarbageCollector::new(client)
        .watch(deployments)
        .watch(replicasets)
        .watch(pods);
    tokio::spawn(gc.run(2, stop))
}

impl GarbageCollector {
    pub fn new(client: Client) -> GarbageCollector {
        GarbageCollector {
            client,
            kinds: Vec::new(),
        }
    }

    /// Collects objects of `T` (as dependents and as owners). Owners of kinds
    /// not watched are still checked, by a live read, but a kind must be
    /// watched for its own dependents to be collected when it goes.
    #[must_use]
    pub fn watch<T: Object + Send + Sync + 'static>(mut self, informer: &Informer<T>) -> Self {
        if self.kinds.iter().all(|k| k.kind() != T::KIND) {
            self.kinds.push(Arc::new(Typed {
                informer: informer.clone(),
            }));
        }
        self
    }

    /// Runs `workers` reconciles per kind at a time until `stop` fires.
    pub async fn run(self, workers: usize, stop: CancellationToken) {
        let mut controllers = Vec::new();
        let mut handles = HashMap::new();
        let mut kinds = HashMap::new();
        for w in &self.kinds {
            let c = Controller::new("garbage-collector", stop.clone());
            handles.insert(w.kind(), c.handle());
            kinds.insert(w.kind(), w.clone());
            controllers.push((w.kind(), c));
        }
        let shared = Arc::new(Shared {
            client: self.client,
            kinds,
            handles,
        });
        // Deciding that an owner has no dependents left needs every cache.
        for w in &self.kinds {
            tokio::select! {
                () = w.wait_synced() => {}
                () = stop.cancelled() => return,
            }
        }
        let mut tasks = JoinSet::new();
        for w in &self.kinds {
            tasks.spawn(w.route(shared.clone(), stop.clone()));
        }
        for (kind, c) in controllers {
            let s = shared.clone();
            tasks.spawn(c.run(workers, move |key: ObjectKey| {
                let s = s.clone();
                async move { s.reconcile(kind, key).await }
            }));
        }
        shared.resync();
        while tasks.join_next().await.is_some() {}
    }
}

/// What every reconcile shares: the client, the watched kinds, their queues.
pub(super) struct Shared {
    client: Client,
    kinds: HashMap<Kind, Arc<dyn Watched>>,
    handles: HashMap<Kind, QueueHandle>,
}

fn key_of(m: &ObjectMeta) -> ObjectKey {
    ObjectKey::new(m.namespace(), m.name())
}

/// Where the owner a reference names lives, seen from a dependent in
/// `namespace` (`None` for a cluster-scoped dependent naming a namespaced
/// owner, which cannot be resolved).
fn owner_key(kind: Kind, r: &OwnerReference, namespace: &str) -> Option<ObjectKey> {
    if !kind.namespaced() {
        Some(ObjectKey::new("", r.name.clone()))
    } else if namespace.is_empty() {
        None
    } else {
        Some(ObjectKey::new(namespace, r.name.clone()))
    }
}

impl Shared {
    fn queue(&self, kind: Kind, key: ObjectKey) {
        if let Some(h) = self.handles.get(&kind) {
            h.add(key);
        }
    }

    /// Looks at everything again (after a relist or missed changes).
    pub(super) fn resync(&self) {
        for (kind, w) in &self.kinds {
            for key in w.keys() {
                self.queue(*kind, key);
            }
        }
    }

    /// Routes one change: the object itself; its dependents when it is gone;
    /// its owners when they wait for it.
    pub(super) fn on_change(&self, kind: Kind, m: &ObjectMeta, deleted: bool) {
        if !deleted {
            self.queue(kind, key_of(m));
        } else if let Some(uid) = m.uid.as_deref() {
            for (k, w) in &self.kinds {
                for d in w.dependents_of(uid) {
                    self.queue(*k, key_of(&d));
                }
            }
        }
        for r in &m.owner_references {
            let Some(k) = kind_named(&r.kind) else { continue };
            let (Some(w), Some(key)) = (self.kinds.get(&k), owner_key(k, r, m.namespace())) else {
                continue;
            };
            if let Some(owner) = w.cached(&key)
                && owner.uid.as_deref() == Some(r.uid.as_str())
                && owner.deletion_timestamp.is_some()
            {
                self.queue(k, key);
            }
        }
    }

    fn dependents(&self, uid: &str) -> Vec<(Kind, ObjectMeta)> {
        self.kinds
            .iter()
            .flat_map(|(k, w)| w.dependents_of(uid).into_iter().map(|d| (*k, d)))
            .collect()
    }

    fn watched(&self, kind: Kind) -> Option<&Arc<dyn Watched>> {
        self.kinds.get(&kind)
    }

    async fn reconcile(self: Arc<Self>, kind: Kind, key: ObjectKey) -> Result<Action, GcError> {
        let err = |source: ApiError| GcError::Api {
            kind: kind.name(),
            key: key.clone(),
            source,
        };
        let Some(w) = self.watched(kind) else {
            return Ok(Action::Done);
        };
        let Some(meta) = w.cached(&key) else {
            return Ok(Action::Done);
        };
        if meta.deletion_timestamp.is_some() {
            if plan::orphans_dependents(&meta) {
                self.orphan(w, &key, &meta).await.map_err(err)?;
            } else if plan::waits_for_dependents(&meta) {
                self.foreground(w, &key, &meta).await.map_err(err)?;
            }
            return Ok(Action::Done);
        }
        if !meta.owner_references.is_empty() {
            self.attempt_to_delete(w, &key, &meta).await.map_err(err)?;
        }
        Ok(Action::Done)
    }

    /// How one owner reference resolves: from the cache when it shows the
    /// owner, else from a live read (the cache may lag behind a create).
    async fn resolve(&self, r: &OwnerReference, namespace: &str) -> Result<OwnerState, ApiError> {
        let Some(kind) = kind_named(&r.kind) else {
            tracing::warn!(kind = %r.kind, name = %r.name, "owner reference to a kind Shturman does not serve; kept");
            return Ok(OwnerState::Solid);
        };
        let Some(key) = owner_key(kind, r, namespace) else {
            return Ok(OwnerState::Solid);
        };
        if let Some(w) = self.watched(kind)
            && let Some(m) = w.cached(&key)
            && m.uid.as_deref() == Some(r.uid.as_str())
        {
            return Ok(plan::owner_state(r, Some(&m)));
        }
        let live = live_meta(&self.client, kind, &key).await?;
        Ok(plan::owner_state(r, live.as_ref()))
    }

    /// A dependent: deletes it when no owner remains, or drops references
    /// to owners that are gone.
    async fn attempt_to_delete(
        &self,
        w: &Arc<dyn Watched>,
        key: &ObjectKey,
        meta: &ObjectMeta,
    ) -> Result<(), ApiError> {
        let mut states = Vec::with_capacity(meta.owner_references.len());
        for r in &meta.owner_references {
            states.push(self.resolve(r, meta.namespace()).await?);
        }
        // Only asked when it matters: it scans every cache.
        let has_dependents = states.contains(&OwnerState::WaitingForDependents)
            && meta
                .uid
                .as_deref()
                .is_some_and(|uid| self.kinds.values().any(|k| !k.dependents_of(uid).is_empty()));
        let verdict = plan::dependent_verdict(&meta.owner_references, &states, has_dependents);
        if verdict == (DependentVerdict::Keep { drop_refs: vec![] }) {
            return Ok(());
        }
        // Act on the object as it is now, and only if it is still this one.
        let Some(live) = w.live(&self.client, key).await? else {
            return Ok(());
        };
        // Its references changed since the cache showed it (an owner orphaned
        // it, say): the change will bring it back with the new ones.
        if live.uid != meta.uid
            || live.deletion_timestamp.is_some()
            || live.owner_references != meta.owner_references
        {
            return Ok(());
        }
        match verdict {
            DependentVerdict::Keep { drop_refs } => {
                if let Some(patch) = plan::drop_owner_refs_patch(&live, &drop_refs) {
                    tracing::info!(kind = w.kind().name(), %key, "dropping references to owners that are gone");
                    w.merge_patch(&self.client, key, &patch).await?;
                }
            }
            DependentVerdict::Delete(propagation) => {
                tracing::info!(kind = w.kind().name(), %key, ?propagation, "deleting a dependent whose owners are gone");
                w.delete(&self.client, key, propagation).await?;
            }
        }
        Ok(())
    }

    /// An owner deleted with `Orphan`: strips its references from every
    /// dependent, then removes its `orphan` finalizer.
    async fn orphan(
        &self,
        w: &Arc<dyn Watched>,
        key: &ObjectKey,
        owner: &ObjectMeta,
    ) -> Result<(), ApiError> {
        let Some(uid) = owner.uid.clone() else {
            return Ok(());
        };
        // Listed live, not from the caches: a dependent created just before
        // the owner's delete may not be cached yet, and releasing the owner
        // without stripping it would let it be collected as an orphan.
        let namespace = owner.namespace.as_deref().filter(|ns| !ns.is_empty());
        let mut dependents = Vec::new();
        for (kind, dw) in &self.kinds {
            for d in dw.live_dependents_of(&self.client, namespace, &uid).await? {
                dependents.push((*kind, d));
            }
        }
        for (kind, d) in dependents {
            let Some(dw) = self.watched(kind) else { continue };
            let dkey = key_of(&d);
            let Some(live) = dw.live(&self.client, &dkey).await? else {
                continue;
            };
            if live.uid != d.uid {
                continue;
            }
            if let Some(patch) = plan::drop_owner_refs_patch(&live, std::slice::from_ref(&uid)) {
                dw.merge_patch(&self.client, &dkey, &patch).await?;
            }
        }
        self.drop_finalizer(w, key, owner, ORPHAN_FINALIZER).await
    }

    /// An owner deleted in the `Foreground`: has its dependents deleted and
    /// removes its finalizer once none blocks it.
    async fn foreground(
        &self,
        w: &Arc<dyn Watched>,
        key: &ObjectKey,
        owner: &ObjectMeta,
    ) -> Result<(), ApiError> {
        let Some(uid) = owner.uid.clone() else {
            return Ok(());
        };
        let views: Vec<DependentView<(Kind, ObjectKey)>> = self
            .dependents(&uid)
            .into_iter()
            .filter_map(|(kind, d)| {
                let reference = d.owner_references.iter().find(|r| r.uid == uid)?.clone();
                Some(DependentView {
                    key: (kind, key_of(&d)),
                    reference,
                    deleting: d.deletion_timestamp.is_some(),
                })
            })
            .collect();
        let plan = plan::foreground_plan(&views);
        // Each dependent's own pass sees this owner waiting and deletes it.
        for (kind, dkey) in plan.delete {
            self.queue(kind, dkey);
        }
        if plan.release {
            self.drop_finalizer(w, key, owner, FOREGROUND_FINALIZER).await?;
        }
        Ok(())
    }

    async fn drop_finalizer(
        &self,
        w: &Arc<dyn Watched>,
        key: &ObjectKey,
        owner: &ObjectMeta,
        finalizer: &str,
    ) -> Result<(), ApiError> {
        let Some(live) = w.live(&self.client, key).await? else {
            return Ok(());
        };
        if live.uid != owner.uid {
            return Ok(());
        }
        if let Some(patch) = plan::drop_finalizer_patch(&live, finalizer) {
            tracing::info!(kind = w.kind().name(), %key, finalizer, "removing finalizer");
            w.merge_patch(&self.client, key, &patch).await?;
        }
        Ok(())
    }
}
