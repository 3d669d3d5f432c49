//! The Deployment controller's executor: wires [`plan`] to the runtime.
//!
//! A Deployment is reconciled when it changes, when a ReplicaSet it controls
//! (or an orphan it could adopt) changes, and when a pod of one of its
//! ReplicaSets changes. A pass reads the deployment, its ReplicaSets and
//! their pods from the informer caches, plans, and performs the actions in
//! order through the [`Client`], stopping at the first failure; events are
//! recorded right after the action they describe.
//!
//! Writes to the deployment carry the version the pass last saw (the cache,
//! then each write's answer), as do ReplicaSet updates (the planner's
//! `resource_version`): a conflict fails the pass, which is retried with
//! back-off on fresher caches. Before a pass ends it waits until the caches
//! show its writes (see `replicaset::run::Written`), so the next pass never creates a
//! ReplicaSet twice or scales from a stale size.
//!
//! A hash collision (creating the new ReplicaSet finds another object under
//! its name) bumps `status.collisionCount`, which moves the name, and
//! requeues, as Kubernetes does.

use std::sync::Arc;
use std::time::Duration;

use shturman_api::apps::{Deployment, DeploymentStatus, ReplicaSet};
use shturman_api::core::Pod;
use shturman_api::meta::OwnerReference;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::util::{REVISION, equal_ignore_hash};
use super::{Action as Planned, plan};
use crate::client::Client;
use crate::controllers::EventRecord;
use crate::controllers::replicaset::run::{OwnerIndex, Written, adopted, owner_patch};
use crate::runtime::{Action, Clock, Controller, Informer, ObjectKey, Recorder};
use crate::server::error::ApiError;

/// How long a pass waits for the pod index to catch up with its informer.
const INDEX_CATCH_UP: Duration = Duration::from_secs(1);

/// Why a Deployment pass failed (it is retried with back-off).
#[derive(Debug, thiserror::Error)]
pub enum DeploymentError {
    #[error("deployment {key}: {what}: {source}")]
    Api {
        key: ObjectKey,
        what: String,
        source: ApiError,
    },
    #[error("deployment {key}: replicaset {name} is not in the cache")]
    NotCached { key: ObjectKey, name: String },
}

/// Starts the Deployment controller with `workers` reconciles at a time; it
/// stops when `stop` is cancelled.
#[expect(
    clippy::too_many_arguments,
    reason = "the control plane wires every controller with this one shape"
)]
pub fn start(
    client: Client,
    deployments: &Informer<Deployment>,
    replicasets: &Informer<ReplicaSet>,
    pods: &Informer<Pod>,
    recorder: Recorder,
    clock: Arc<dyn Clock>,
    workers: usize,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let informers = Informers {
        deployments: deployments.clone(),
        replicasets: replicasets.clone(),
        pods: pods.clone(),
    };
    tokio::spawn(run(client, informers, recorder, clock, workers, stop))
}

/// The caches the Deployment controller reads.
#[derive(Clone)]
pub struct Informers {
    pub deployments: Informer<Deployment>,
    pub replicasets: Informer<ReplicaSet>,
    pub pods: Informer<Pod>,
}

/// Runs the Deployment controller until `stop` is cancelled.
pub async fn run(
    client: Client,
    informers: Informers,
    recorder: Recorder,
    clock: Arc<dyn Clock>,
    workers: usize,
    stop: CancellationToken,
) {
    let (index, index_task) = OwnerIndex::start(&informers.pods, stop.clone());
    let synced = async {
        informers.deployments.wait_synced().await;
        informers.replicasets.wait_synced().await;
        informers.pods.wait_synced().await;
    };
    tokio::select! {
        () = synced => {}
        () = stop.cancelled() => {
            let _ = index_task.await;
            return;
        }
    }
    let controller = Controller::new("deployment-controller", stop);
    controller.watches(&informers.deployments, |d: &Deployment| vec![ObjectKey::of(d)]);
    let deployments = informers.deployments.clone();
    controller.watches(&informers.replicasets, move |rs: &ReplicaSet| {
        keys_for_replicaset(&deployments, rs)
    });
    let replicasets = informers.replicasets.clone();
    controller.watches(&informers.pods, move |p: &Pod| keys_for_pod(&replicasets, p));
    let handle = controller.handle();
    for d in informers.deployments.list() {
        handle.add(ObjectKey::of(&*d));
    }
    let inner = Arc::new(Inner {
        client,
        informers,
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

/// The deployments a ReplicaSet change concerns: its controller, or for an
/// orphan every deployment of its namespace that could adopt it.
fn keys_for_replicaset(deployments: &Informer<Deployment>, rs: &ReplicaSet) -> Vec<ObjectKey> {
    let ns = rs.metadata.namespace();
    match rs.metadata.controller_ref() {
        Some(r) if r.kind == "Deployment" => vec![ObjectKey::new(ns, r.name.clone())],
        Some(_) => Vec::new(),
        None if rs.metadata.deletion_timestamp.is_some() => Vec::new(),
        None => deployments
            .list_in(ns)
            .iter()
            .filter(|d| !d.spec.selector.is_empty() && d.spec.selector.matches(&rs.metadata.labels))
            .map(|d| ObjectKey::of(&**d))
            .collect(),
    }
}

/// The deployment a pod change concerns: the one controlling its ReplicaSet.
fn keys_for_pod(replicasets: &Informer<ReplicaSet>, pod: &Pod) -> Vec<ObjectKey> {
    let ns = pod.metadata.namespace();
    let Some(r) = pod.metadata.controller_ref().filter(|r| r.kind == "ReplicaSet") else {
        return Vec::new();
    };
    let Some(rs) = replicasets.get(&ObjectKey::new(ns, r.name.clone())) else {
        return Vec::new();
    };
    if rs.metadata.uid.as_deref() != Some(r.uid.as_str()) {
        return Vec::new();
    }
    rs.metadata
        .controller_ref()
        .filter(|d| d.kind == "Deployment")
        .map(|d| vec![ObjectKey::new(ns, d.name.clone())])
        .unwrap_or_default()
}

struct Inner {
    client: Client,
    informers: Informers,
    index: OwnerIndex<Pod>,
    recorder: Recorder,
    clock: Arc<dyn Clock>,
}

/// Where a pass goes after a step.
enum Flow {
    Continue,
    /// Stop here and answer this (the deployment is gone, or a collision
    /// moved the name and the pass must be planned again).
    Stop(Action),
}

/// One reconcile pass of one deployment.
struct Pass<'a> {
    inner: &'a Inner,
    key: &'a ObjectKey,
    /// The deployment as last seen: the cache, then each write's answer.
    current: Deployment,
    deployments: Written<Deployment>,
    replicasets: Written<ReplicaSet>,
    requeue: Option<Duration>,
    /// Whether a live read confirmed the deployment may adopt ReplicaSets.
    may_adopt: Option<bool>,
}

impl Inner {
    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, DeploymentError> {
        let Some(d) = self.informers.deployments.get(key) else {
            return Ok(Action::Done);
        };
        let uid = d.metadata.uid.clone().unwrap_or_default();
        let rss: Vec<ReplicaSet> = self
            .informers
            .replicasets
            .list_in(&key.namespace)
            .iter()
            .filter(|rs| rs.metadata.controller_ref().is_none_or(|r| r.uid == uid))
            .map(|rs| (**rs).clone())
            .collect();
        let mut pods: Vec<Arc<Pod>> = Vec::new();
        for rs in &rss {
            if let Some(rs_uid) = rs.metadata.uid.as_deref().filter(|u| !u.is_empty()) {
                let owned = self
                    .index
                    .owned(&self.informers.pods, &key.namespace, rs_uid, INDEX_CATCH_UP)
                    .await;
                pods.extend(owned);
            }
        }
        let actions = plan(&d, &rss, &pods, self.clock.now());
        drop((rss, pods));
        let mut pass = Pass {
            inner: self,
            key,
            current: (*d).clone(),
            deployments: Written::default(),
            replicasets: Written::default(),
            requeue: None,
            may_adopt: None,
        };
        let outcome = pass.execute(actions).await;
        // Also after a failure: what did succeed must show before a retry.
        let settled = pass.replicasets.settle(&self.informers.replicasets).await
            && pass.deployments.settle(&self.informers.deployments).await;
        if !settled {
            tracing::warn!(deployment = %key, "the caches did not show this pass's writes in time");
        }
        match outcome? {
            Flow::Stop(action) => Ok(action),
            Flow::Continue => Ok(pass.requeue.map_or(Action::Done, Action::RequeueAfter)),
        }
    }
}

impl Pass<'_> {
    fn err<W: Into<String>>(&self, what: W) -> impl FnOnce(ApiError) -> DeploymentError + use<W> {
        let (key, what) = (self.key.clone(), what.into());
        move |source| DeploymentError::Api { key, what, source }
    }

    fn ns(&self) -> Option<&str> {
        self.key.ns()
    }

    fn cached_rs(&self, name: &str) -> Option<Arc<ReplicaSet>> {
        self.inner
            .informers
            .replicasets
            .get(&ObjectKey::new(self.key.namespace.clone(), name))
    }

    async fn execute(&mut self, actions: Vec<Planned>) -> Result<Flow, DeploymentError> {
        for action in actions {
            let flow = match action {
                Planned::AdoptReplicaSet { name, uid, owner } => {
                    self.adopt(&name, uid.as_deref(), owner).await?
                }
                Planned::CreateReplicaSet(rs) => self.create_rs(*rs).await?,
                Planned::ScaleReplicaSet {
                    name,
                    replicas,
                    min_ready_seconds,
                    annotations,
                    resource_version,
                } => {
                    let Some(cached) = self.cached_rs(&name) else {
                        return Err(DeploymentError::NotCached {
                            key: self.key.clone(),
                            name,
                        });
                    };
                    let mut rs = (*cached).clone();
                    rs.spec.replicas = Some(replicas);
                    rs.spec.min_ready_seconds = min_ready_seconds;
                    rs.metadata.annotations = annotations;
                    rs.metadata.resource_version = resource_version;
                    let what = format!("scale replicaset {name} to {replicas}");
                    let written = self.inner.client.replace(&rs).await.map_err(self.err(what))?;
                    self.replicasets.wrote(&written);
                    Flow::Continue
                }
                Planned::DeleteReplicaSet { name, uid } => {
                    let cached = self.cached_rs(&name);
                    let same = uid.is_none()
                        || cached.as_ref().and_then(|c| c.metadata.uid.as_ref()) == uid.as_ref();
                    if same {
                        let what = format!("delete replicaset {name}");
                        let client = &self.inner.client;
                        if client
                            .delete::<ReplicaSet>(self.ns(), &name, None)
                            .await
                            .map_err(self.err(what))?
                        {
                            let key = ObjectKey::new(self.key.namespace.clone(), name);
                            self.replicasets.deleted(key, uid);
                        }
                    }
                    Flow::Continue
                }
                Planned::UpdateDeploymentAnnotations { revision } => {
                    let patch = serde_json::json!({"metadata": {
                        "annotations": {REVISION: revision},
                        "resourceVersion": self.current.metadata.resource_version,
                    }});
                    let client = &self.inner.client;
                    let written = client
                        .merge_patch::<Deployment>(self.ns(), &self.key.name, &patch, false)
                        .await;
                    self.wrote_deployment(written, "set revision annotation")?
                }
                Planned::UpdateDeploymentStatus(status) => {
                    self.update_status(status, "update status").await?
                }
                Planned::Event(e) => {
                    self.record(&e).await;
                    Flow::Continue
                }
                Planned::RequeueAfter(d) => {
                    self.requeue = Some(self.requeue.map_or(d, |r| r.min(d)));
                    Flow::Continue
                }
            };
            if let Flow::Stop(_) = flow {
                return Ok(flow);
            }
        }
        Ok(Flow::Continue)
    }

    async fn record(&self, e: &EventRecord) {
        self.inner
            .recorder
            .record(&self.current, e.type_, &e.reason, &e.message)
            .await;
    }

    /// Takes in a write of the deployment: the new version is the one later
    /// writes build on; a deployment gone ends the pass.
    fn wrote_deployment(
        &mut self,
        written: Result<Deployment, ApiError>,
        what: &str,
    ) -> Result<Flow, DeploymentError> {
        match written {
            Ok(d) => {
                self.deployments.wrote(&d);
                self.current = d;
                Ok(Flow::Continue)
            }
            Err(e) if e.is_not_found() => Ok(Flow::Stop(Action::Done)),
            Err(e) => Err(self.err(what)(e)),
        }
    }

    async fn update_status(&mut self, status: DeploymentStatus, what: &str) -> Result<Flow, DeploymentError> {
        let mut d = self.current.clone();
        d.status = Some(status);
        let written = self.inner.client.replace_status(&d).await;
        self.wrote_deployment(written, what)
    }

    /// Adopts an orphan ReplicaSet on the version the cache shows.
    async fn adopt(
        &mut self,
        name: &str,
        uid: Option<&str>,
        owner: OwnerReference,
    ) -> Result<Flow, DeploymentError> {
        let Some(cached) = self.cached_rs(name) else {
            return Ok(Flow::Continue);
        };
        if (uid.is_some() && cached.metadata.uid.as_deref() != uid)
            || cached.metadata.controller_ref().is_some()
        {
            return Ok(Flow::Continue);
        }
        if !self.may_adopt().await? {
            return Ok(Flow::Continue);
        }
        let patch = owner_patch(&cached.metadata, &adopted(&cached.metadata, owner));
        match self
            .inner
            .client
            .merge_patch::<ReplicaSet>(self.ns(), name, &patch, false)
            .await
        {
            Ok(rs) => self.replicasets.wrote(&rs),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(self.err(format!("adopt replicaset {name}"))(e)),
        }
        Ok(Flow::Continue)
    }

    /// Kubernetes re-reads the deployment, uncached, before adopting: one
    /// being deleted (or replaced) must not take ReplicaSets.
    async fn may_adopt(&mut self) -> Result<bool, DeploymentError> {
        if let Some(ok) = self.may_adopt {
            return Ok(ok);
        }
        let live = self
            .inner
            .client
            .get::<Deployment>(self.ns(), &self.key.name)
            .await
            .map_err(self.err("read before adopting"))?;
        let ok = live.is_some_and(|l| {
            l.metadata.uid == self.current.metadata.uid && l.metadata.deletion_timestamp.is_none()
        });
        self.may_adopt = Some(ok);
        Ok(ok)
    }

    /// Creates the new ReplicaSet. When its name is taken: if by this
    /// deployment's own ReplicaSet of the same template (the cache had not
    /// shown it yet), plan again once the cache does; otherwise it is a hash
    /// collision: bump `status.collisionCount` and plan again.
    async fn create_rs(&mut self, rs: ReplicaSet) -> Result<Flow, DeploymentError> {
        let name = rs.metadata.name().to_string();
        let client = &self.inner.client;
        let err = match client.create(&rs).await {
            Ok(created) => {
                self.replicasets.wrote(&created);
                return Ok(Flow::Continue);
            }
            Err(e) if e.is_already_exists() => e,
            Err(e) => return Err(self.err(format!("create replicaset {name}"))(e)),
        };
        let existing = client
            .get::<ReplicaSet>(self.ns(), &name)
            .await
            .map_err(self.err(format!("read replicaset {name}")))?;
        let Some(existing) = existing else {
            // Gone again meanwhile: plan again.
            return Ok(Flow::Stop(Action::RequeueAfter(Duration::ZERO)));
        };
        let ours = existing
            .metadata
            .controller_ref()
            .is_some_and(|r| Some(&r.uid) == self.current.metadata.uid.as_ref());
        if ours && equal_ignore_hash(&existing.spec.template, &self.current.spec.template) {
            self.replicasets.wrote(&existing);
            return Ok(Flow::Stop(Action::RequeueAfter(Duration::ZERO)));
        }
        tracing::info!(deployment = %self.key, replicaset = %name, error = %err, "pod-template-hash collision");
        let mut status = self.current.status.clone().unwrap_or_default();
        status.collision_count = Some(status.collision_count.unwrap_or(0).saturating_add(1));
        match self.update_status(status, "bump collision count").await? {
            Flow::Continue => Ok(Flow::Stop(Action::RequeueAfter(Duration::ZERO))),
            stop @ Flow::Stop(_) => Ok(stop),
        }
    }
}
