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
//! The pieces the Deployment executor shares live in the submodules:
//! `index` (pods by controller uid) and `written` (read-your-writes).

mod index;
mod written;

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use shturman_api::apps::{ReplicaSet, ReplicaSetStatus};
use shturman_api::core::Pod;
use shturman_api::meta::{ObjectMeta, OwnerReference};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Action as Planned, BURST_REPLICAS, OwnerChange, RandomSuffix, plan};
use crate::client::Client;
use crate::controllers::EventRecord;
use crate::runtime::{Action, Clock, Controller, Informer, ObjectKey, Recorder};
use crate::server::error::ApiError;

pub(crate) use self::index::OwnerIndex;
pub(crate) use self::written::{Written, revision_of};

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
    async fn claimable_pods(&self, rs: &ReplicaSet) -> Vec<Arc<Pod>> {
        let ns = rs.metadata.namespace();
        let uid = rs.metadata.uid.as_deref().unwrap_or("");
        if uid.is_empty() {
            return Vec::new();
        }
        let mut pods = self.index.owned(&self.pods, ns, uid, INDEX_CATCH_UP).await;
        pods.extend(self.index.owned(&self.pods, ns, "", INDEX_CATCH_UP).await);
        pods
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
