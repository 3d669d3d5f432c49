//! The ReplicaSet controller's executor: wires [`plan`] to the runtime.
//!
//! A ReplicaSet is reconciled when it changes, when a pod it controls
//! changes, and when an orphan pod its selector matches changes (adoption).
//! A pass reads the ReplicaSet and its pods from the informer caches (pods
//! through an index by controller uid), plans, and performs the actions in
//! order through the [`Client`], stopping at the first failure. New pods are
//! created in slow-start batches (1, 2, 4, … up to [`BURST_REPLICAS`]), as
//! Kubernetes does, so a failing create does not fail hundreds of times.
//!
//! Read-your-writes (Kubernetes' expectations): before a pass ends it waits
//! until the informers show what it wrote (created and patched objects by
//! their revision, deleted ones by their absence), so the next pass never
//! plans from a cache that misses its own pods and creates duplicates.
//!
//! The pieces the Deployment executor shares ([`OwnerIndex`], [`Written`])
//! live here too.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use futures::future::join_all;
use shturman_api::apps::{ReplicaSet, ReplicaSetStatus};
use shturman_api::core::Pod;
use shturman_api::meta::{Object, ObjectMeta, OwnerReference};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Action as Planned, BURST_REPLICAS, OwnerChange, RandomSuffix, plan};
use crate::client::Client;
use crate::controllers::EventRecord;
use crate::runtime::{Action, Change, Clock, Controller, Informer, ObjectKey, Recorder};
use crate::server::error::ApiError;
use crate::store::Revision;

/// How long a pass waits for the informers to show its own writes.
pub(crate) const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a pass waits for an owner index to catch up with its informer
/// before falling back to a namespace scan.
const INDEX_CATCH_UP: Duration = Duration::from_secs(1);

/// Why a ReplicaSet pass failed (it is retried with back-off).
#[derive(Debug, thiserror::Error)]
pub enum ReplicaSetError {
    #[error("replicaset {key}: {what}: {source}")]
    Api {
        key: ObjectKey,
        what: String,
        source: ApiError,
    },
}

/// Starts the ReplicaSet controller with `workers` reconciles at a time; it
/// stops when `stop` is cancelled.
pub fn start(
    client: Client,
    replicasets: &Informer<ReplicaSet>,
    pods: &Informer<Pod>,
    recorder: Recorder,
    clock: Arc<dyn Clock>,
    workers: usize,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(run(
        client,
        replicasets.clone(),
        pods.clone(),
        recorder,
        clock,
        workers,
        stop,
    ))
}

/// Runs the ReplicaSet controller until `stop` is cancelled.
pub async fn run(
    client: Client,
    replicasets: Informer<ReplicaSet>,
    pods: Informer<Pod>,
    recorder: Recorder,
    clock: Arc<dyn Clock>,
    workers: usize,
    stop: CancellationToken,
) {
    let (index, index_task) = OwnerIndex::start(&pods, stop.clone());
    let synced = async {
        replicasets.wait_synced().await;
        pods.wait_synced().await;
    };
    tokio::select! {
        () = synced => {}
        () = stop.cancelled() => {
            let _ = index_task.await;
            return;
        }
    }
    let controller = Controller::new("replicaset-controller", stop);
    controller.watches(&replicasets, |rs: &ReplicaSet| vec![ObjectKey::of(rs)]);
    let sets = replicasets.clone();
    controller.watches(&pods, move |p: &Pod| keys_for_pod(&sets, p));
    let handle = controller.handle();
    for rs in replicasets.list() {
        handle.add(ObjectKey::of(&*rs));
    }
    let inner = Arc::new(Inner {
        client,
        replicasets,
        pods,
        index,
        recorder,
        clock,
    });
    controller
        .run(workers, move |key: ObjectKey| {
            let inner = inner.clone();
            async move { inner.reconcile(&key).await }
        })
        .await;
    let _ = index_task.await;
}

/// The ReplicaSets a pod change concerns: its controller, or for an orphan
/// every ReplicaSet of its namespace that could adopt it.
fn keys_for_pod(replicasets: &Informer<ReplicaSet>, pod: &Pod) -> Vec<ObjectKey> {
    let ns = pod.metadata.namespace();
    match pod.metadata.controller_ref() {
        Some(r) if r.kind == "ReplicaSet" => vec![ObjectKey::new(ns, r.name.clone())],
        Some(_) => Vec::new(),
        None if pod.metadata.deletion_timestamp.is_some() => Vec::new(),
        None => replicasets
            .list_in(ns)
            .iter()
            .filter(|rs| !rs.spec.selector.is_empty() && rs.spec.selector.matches(&pod.metadata.labels))
            .map(|rs| ObjectKey::of(&**rs))
            .collect(),
    }
}

struct Inner {
    client: Client,
    replicasets: Informer<ReplicaSet>,
    pods: Informer<Pod>,
    index: OwnerIndex<Pod>,
    recorder: Recorder,
    clock: Arc<dyn Clock>,
}

/// Where a pass goes after a step.
enum Flow {
    Continue,
    /// The ReplicaSet is gone: end the pass quietly.
    OwnerGone,
}

/// Consecutive pod creates or deletes, each with the events that follow it.
enum Step {
    Create(Vec<(Pod, Vec<EventRecord>)>),
    Delete(Vec<(String, Option<String>, Vec<EventRecord>)>),
    One(Planned),
}

/// Groups consecutive creates and deletes so they run concurrently; an event
/// stays with the action before it.
fn steps(actions: Vec<Planned>) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    for a in actions {
        match (a, steps.last_mut()) {
            (Planned::CreatePod(p), Some(Step::Create(batch))) => batch.push((*p, Vec::new())),
            (Planned::CreatePod(p), _) => steps.push(Step::Create(vec![(*p, Vec::new())])),
            (Planned::DeletePod { name, uid }, Some(Step::Delete(batch))) => {
                batch.push((name, uid, Vec::new()));
            }
            (Planned::DeletePod { name, uid }, _) => {
                steps.push(Step::Delete(vec![(name, uid, Vec::new())]));
            }
            (Planned::Event(e), Some(Step::Create(batch))) if !batch.is_empty() => {
                if let Some((_, events)) = batch.last_mut() {
                    events.push(e);
                }
            }
            (Planned::Event(e), Some(Step::Delete(batch))) if !batch.is_empty() => {
                if let Some((_, _, events)) = batch.last_mut() {
                    events.push(e);
                }
            }
            (other, _) => steps.push(Step::One(other)),
        }
    }
    steps
}

/// One reconcile pass of one ReplicaSet: what it wrote, what it asks for next.
struct Pass<'a> {
    inner: &'a Inner,
    key: &'a ObjectKey,
    rs: &'a ReplicaSet,
    pods: Written<Pod>,
    sets: Written<ReplicaSet>,
    requeue: Option<Duration>,
    /// Whether a live read confirmed the ReplicaSet may adopt pods.
    may_adopt: Option<bool>,
}

impl Inner {
    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, ReplicaSetError> {
        let Some(rs) = self.replicasets.get(key) else {
            return Ok(Action::Done);
        };
        let pods = self.claimable_pods(&rs).await;
        let actions = {
            // The generator is not `Send`: keep it out of every await.
            let mut names = RandomSuffix(rand::rng());
            plan(&rs, &pods, self.clock.now(), &mut names)
        };
        drop(pods);
        let mut pass = Pass {
            inner: self,
            key,
            rs: &rs,
            pods: Written::default(),
            sets: Written::default(),
            requeue: None,
            may_adopt: None,
        };
        let outcome = pass.execute(actions).await;
        // Also after a failure: what did succeed must show before a retry.
        let settled = pass.pods.settle(&self.pods).await && pass.sets.settle(&self.replicasets).await;
        if !settled {
            tracing::warn!(replicaset = %key, "the caches did not show this pass's writes in time");
        }
        match outcome? {
            Flow::OwnerGone => Ok(Action::Done),
            Flow::Continue => Ok(pass.requeue.map_or(Action::Done, Action::RequeueAfter)),
        }
    }

    /// The pods `rs` controls and the orphans of its namespace, from the cache.
    async fn claimable_pods(&self, rs: &ReplicaSet) -> Vec<Pod> {
        let ns = rs.metadata.namespace();
        let uid = rs.metadata.uid.as_deref().unwrap_or("");
        if uid.is_empty() {
            return Vec::new();
        }
        let mut pods = self.index.owned(&self.pods, ns, uid, INDEX_CATCH_UP).await;
        pods.extend(self.index.owned(&self.pods, ns, "", INDEX_CATCH_UP).await);
        pods.into_iter().map(|p| (*p).clone()).collect()
    }
}

impl Pass<'_> {
    fn err<W: Into<String>>(&self, what: W) -> impl FnOnce(ApiError) -> ReplicaSetError + use<W> {
        let (key, what) = (self.key.clone(), what.into());
        move |source| ReplicaSetError::Api { key, what, source }
    }

    fn ns(&self) -> Option<&str> {
        self.key.ns()
    }

    async fn execute(&mut self, actions: Vec<Planned>) -> Result<Flow, ReplicaSetError> {
        for step in steps(actions) {
            let flow = match step {
                Step::Create(batch) => self.create_pods(batch).await?,
                Step::Delete(batch) => self.delete_pods(batch).await?,
                Step::One(Planned::PatchOwner { pod, pod_uid, change }) => {
                    self.patch_owner(&pod, pod_uid.as_deref(), change).await?
                }
                Step::One(Planned::UpdateStatus(status)) => self.update_status(status).await?,
                Step::One(Planned::Event(e)) => {
                    self.inner
                        .recorder
                        .record(self.rs, e.type_, &e.reason, &e.message)
                        .await;
                    Flow::Continue
                }
                Step::One(Planned::RequeueAfter(d)) => {
                    self.requeue = Some(self.requeue.map_or(d, |r| r.min(d)));
                    Flow::Continue
                }
                Step::One(Planned::CreatePod(_) | Planned::DeletePod { .. }) => Flow::Continue,
            };
            if let Flow::OwnerGone = flow {
                return Ok(Flow::OwnerGone);
            }
        }
        Ok(Flow::Continue)
    }

    /// Creates pods in slow-start batches, stopping after the first batch
    /// with a failure.
    async fn create_pods(&mut self, batch: Vec<(Pod, Vec<EventRecord>)>) -> Result<Flow, ReplicaSetError> {
        let mut rest = batch.into_iter();
        let mut size = 1;
        loop {
            let chunk: Vec<_> = rest.by_ref().take(size).collect();
            if chunk.is_empty() {
                return Ok(Flow::Continue);
            }
            let results = join_all(
                chunk
                    .into_iter()
                    .map(|(pod, events)| self.create_pod(pod, events)),
            )
            .await;
            let mut first_error = None;
            for result in results {
                match result {
                    Ok(created) => self.pods.wrote(&created),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = first_error {
                return Err(e);
            }
            size = size.saturating_mul(2).min(BURST_REPLICAS);
        }
    }

    async fn create_pod(&self, pod: Pod, events: Vec<EventRecord>) -> Result<Pod, ReplicaSetError> {
        let what = format!("create pod {}", pod.metadata.name());
        let created = self.inner.client.create(&pod).await.map_err(self.err(what))?;
        for e in events {
            self.inner
                .recorder
                .record(self.rs, e.type_, &e.reason, &e.message)
                .await;
        }
        Ok(created)
    }

    /// Deletes pods concurrently; a pod already gone is no failure.
    async fn delete_pods(
        &mut self,
        batch: Vec<(String, Option<String>, Vec<EventRecord>)>,
    ) -> Result<Flow, ReplicaSetError> {
        let results = join_all(
            batch
                .into_iter()
                .map(|(name, uid, events)| self.delete_pod(name, uid, events)),
        )
        .await;
        let mut first_error = None;
        for result in results {
            match result {
                Ok(Some(key)) => self.pods.deleted(key.0, key.1),
                Ok(None) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(Flow::Continue), Err)
    }

    /// Deletes one pod if the cache still shows the one planned for (the API
    /// takes no uid precondition here); returns its key and uid when deleted.
    async fn delete_pod(
        &self,
        name: String,
        uid: Option<String>,
        events: Vec<EventRecord>,
    ) -> Result<Option<(ObjectKey, Option<String>)>, ReplicaSetError> {
        let key = ObjectKey::new(self.key.namespace.clone(), name);
        let cached = self.inner.pods.get(&key);
        if uid.is_some() && cached.as_ref().and_then(|p| p.metadata.uid.as_ref()) != uid.as_ref() {
            return Ok(None);
        }
        let what = format!("delete pod {}", key.name);
        let deleted = self
            .inner
            .client
            .delete::<Pod>(self.ns(), &key.name, None)
            .await
            .map_err(self.err(what))?;
        if !deleted {
            return Ok(None);
        }
        for e in events {
            self.inner
                .recorder
                .record(self.rs, e.type_, &e.reason, &e.message)
                .await;
        }
        Ok(Some((key, uid)))
    }

    /// Adopts or releases a pod by rewriting its owner references, on the
    /// version the cache shows (a conflict retries the pass).
    async fn patch_owner(
        &mut self,
        pod: &str,
        pod_uid: Option<&str>,
        change: OwnerChange,
    ) -> Result<Flow, ReplicaSetError> {
        let key = ObjectKey::new(self.key.namespace.clone(), pod);
        let Some(cached) = self.inner.pods.get(&key) else {
            return Ok(Flow::Continue);
        };
        if pod_uid.is_some() && cached.metadata.uid.as_deref() != pod_uid {
            return Ok(Flow::Continue);
        }
        let refs = match change {
            OwnerChange::Adopt(owner) => {
                if !self.may_adopt().await? {
                    return Ok(Flow::Continue);
                }
                adopted(&cached.metadata, owner)
            }
            OwnerChange::Release { owner_uid } => released(&cached.metadata, &owner_uid),
        };
        let patch = owner_patch(&cached.metadata, &refs);
        match self
            .inner
            .client
            .merge_patch::<Pod>(self.ns(), pod, &patch, false)
            .await
        {
            Ok(p) => self.pods.wrote(&p),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(self.err(format!("patch owner of pod {pod}"))(e)),
        }
        Ok(Flow::Continue)
    }

    /// Kubernetes re-reads the ReplicaSet, uncached, before adopting: a set
    /// being deleted (or replaced) must not take pods.
    async fn may_adopt(&mut self) -> Result<bool, ReplicaSetError> {
        if let Some(ok) = self.may_adopt {
            return Ok(ok);
        }
        let live = self
            .inner
            .client
            .get::<ReplicaSet>(self.ns(), &self.key.name)
            .await
            .map_err(self.err("read before adopting"))?;
        let ok = live.is_some_and(|l| {
            l.metadata.uid == self.rs.metadata.uid && l.metadata.deletion_timestamp.is_none()
        });
        self.may_adopt = Some(ok);
        Ok(ok)
    }

    /// Writes the status on the cached version; on a conflict, once more on
    /// the latest one (the status is this controller's alone).
    async fn update_status(&mut self, status: ReplicaSetStatus) -> Result<Flow, ReplicaSetError> {
        let mut rs = self.rs.clone();
        rs.status = Some(status.clone());
        let client = &self.inner.client;
        match client.replace_status(&rs).await {
            Ok(written) => {
                self.sets.wrote(&written);
                return Ok(Flow::Continue);
            }
            Err(e) if e.is_not_found() => return Ok(Flow::OwnerGone),
            Err(e) if e.is_conflict() => {}
            Err(e) => return Err(self.err("update status")(e)),
        }
        let latest = client
            .get::<ReplicaSet>(self.ns(), &self.key.name)
            .await
            .map_err(self.err("read for status"))?;
        let Some(mut latest) = latest.filter(|l| l.metadata.uid == self.rs.metadata.uid) else {
            return Ok(Flow::OwnerGone);
        };
        latest.status = Some(status);
        match client.replace_status(&latest).await {
            Ok(written) => {
                self.sets.wrote(&written);
                Ok(Flow::Continue)
            }
            Err(e) if e.is_not_found() => Ok(Flow::OwnerGone),
            Err(e) => Err(self.err("update status")(e)),
        }
    }
}

/// `meta`'s owner references with `owner` added as the controller.
pub(crate) fn adopted(meta: &ObjectMeta, owner: OwnerReference) -> Vec<OwnerReference> {
    let mut refs: Vec<OwnerReference> = meta
        .owner_references
        .iter()
        .filter(|r| r.uid != owner.uid)
        .cloned()
        .collect();
    refs.push(owner);
    refs
}

/// `meta`'s owner references without the one to `owner_uid`.
fn released(meta: &ObjectMeta, owner_uid: &str) -> Vec<OwnerReference> {
    meta.owner_references
        .iter()
        .filter(|r| r.uid != owner_uid)
        .cloned()
        .collect()
}

/// A merge patch setting the owner references, valid only on the version
/// `meta` shows.
pub(crate) fn owner_patch(meta: &ObjectMeta, refs: &[OwnerReference]) -> serde_json::Value {
    serde_json::json!({
        "metadata": {
            "ownerReferences": refs,
            "resourceVersion": meta.resource_version,
        }
    })
}

/// The revision an object was read or written at.
pub(crate) fn revision_of(meta: &ObjectMeta) -> Option<Revision> {
    meta.resource_version.as_deref().and_then(|v| v.parse().ok())
}

/// What a pass wrote of one kind, to wait for before it ends.
pub(crate) struct Written<T> {
    /// The highest revision written (0: none).
    revision: Revision,
    /// Objects deleted: their keys and uids.
    gone: Vec<(ObjectKey, Option<String>)>,
    _kind: std::marker::PhantomData<fn() -> T>,
}

impl<T> Default for Written<T> {
    fn default() -> Self {
        Written {
            revision: 0,
            gone: Vec::new(),
            _kind: std::marker::PhantomData,
        }
    }
}

impl<T: Object + Send + Sync + 'static> Written<T> {
    /// Notes a created or updated object, as the API returned it.
    pub(crate) fn wrote(&mut self, obj: &T) {
        if let Some(rev) = revision_of(obj.metadata()) {
            self.revision = self.revision.max(rev);
        }
    }

    /// Notes a deleted object.
    pub(crate) fn deleted(&mut self, key: ObjectKey, uid: Option<String>) {
        self.gone.push((key, uid));
    }

    /// Waits (up to [`SETTLE_TIMEOUT`]) until `informer` shows every write:
    /// its revision reached, each deleted object gone (or terminating, or
    /// replaced by another uid). Whether it got there.
    pub(crate) async fn settle(&self, informer: &Informer<T>) -> bool {
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        let mut changes = informer.subscribe();
        if self.revision > 0 && !informer.wait_seen(self.revision, SETTLE_TIMEOUT).await {
            return false;
        }
        let mut pending: Vec<&(ObjectKey, Option<String>)> = self.gone.iter().collect();
        loop {
            pending.retain(|(key, uid)| {
                informer.get(key).is_some_and(|o| {
                    let m = o.metadata();
                    m.deletion_timestamp.is_none() && (uid.is_none() || m.uid == *uid)
                })
            });
            if pending.is_empty() {
                return true;
            }
            match tokio::time::timeout_at(deadline, changes.recv()).await {
                Err(_) | Ok(Err(RecvError::Closed)) => return false,
                Ok(Ok(_) | Err(RecvError::Lagged(_))) => {}
            }
        }
    }
}

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
    _kind: std::marker::PhantomData<fn() -> T>,
}

impl<T> Clone for OwnerIndex<T> {
    fn clone(&self) -> Self {
        OwnerIndex {
            state: self.state.clone(),
            seen: self.seen.clone(),
            _kind: std::marker::PhantomData,
        }
    }
}

impl<T: Object + Send + Sync + 'static> OwnerIndex<T> {
    /// Starts indexing `informer`; the task ends when `stop` is cancelled.
    pub(crate) fn start(informer: &Informer<T>, stop: CancellationToken) -> (OwnerIndex<T>, JoinHandle<()>) {
        let index = OwnerIndex {
            state: Arc::default(),
            seen: watch::channel(0).0,
            _kind: std::marker::PhantomData,
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

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, IndexState> {
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

    fn pod(name: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p
    }

    fn event(msg: &str) -> Planned {
        Planned::Event(EventRecord::normal("R", msg))
    }

    #[test]
    fn steps_group_creates_and_deletes_and_keep_events_with_their_action() {
        let actions = vec![
            event("first"),
            Planned::CreatePod(Box::new(pod("a"))),
            event("created a"),
            Planned::CreatePod(Box::new(pod("b"))),
            event("created b"),
            Planned::DeletePod {
                name: "c".into(),
                uid: None,
            },
            event("deleted c"),
            Planned::RequeueAfter(Duration::from_secs(1)),
            event("last"),
        ];
        let steps = steps(actions);
        assert_eq!(steps.len(), 5);
        assert!(matches!(&steps[0], Step::One(Planned::Event(e)) if e.message == "first"));
        let Step::Create(created) = &steps[1] else {
            panic!("creates grouped")
        };
        let names: Vec<(&str, &str)> = created
            .iter()
            .map(|(p, ev)| (p.metadata.name(), ev[0].message.as_str()))
            .collect();
        assert_eq!(names, [("a", "created a"), ("b", "created b")]);
        let Step::Delete(deleted) = &steps[2] else {
            panic!("deletes grouped")
        };
        assert_eq!(deleted[0].2[0].message, "deleted c");
        assert!(matches!(&steps[3], Step::One(Planned::RequeueAfter(_))));
        assert!(matches!(&steps[4], Step::One(Planned::Event(e)) if e.message == "last"));
    }

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

    #[test]
    fn ownership_patches_carry_the_version_they_build_on() {
        let mut meta = ObjectMeta {
            resource_version: Some("7".into()),
            ..ObjectMeta::default()
        };
        let owner = |uid: &str| OwnerReference {
            uid: uid.into(),
            controller: Some(true),
            ..OwnerReference::default()
        };
        meta.owner_references.push(OwnerReference {
            uid: "other".into(),
            ..OwnerReference::default()
        });
        let refs = adopted(&meta, owner("rs"));
        assert_eq!(refs.len(), 2);
        let patch = owner_patch(&meta, &refs);
        assert_eq!(patch["metadata"]["resourceVersion"], "7");
        meta.owner_references = refs;
        assert_eq!(released(&meta, "rs").len(), 1);
        assert_eq!(revision_of(&meta), Some(7));
    }
}
