//! The Deployment controller's decision core, after Kubernetes'
//! `pkg/controller/deployment`: find or create the ReplicaSet of the current
//! template, roll out by strategy ([`rolling`]: RollingUpdate and Recreate),
//! scale proportionally when replicas change mid-rollout ([`scale`]), prune
//! history, and compute status and progress conditions ([`status`]).
//!
//! Pod counts come from the pods passed in (fresher than ReplicaSet status);
//! when deciding how far old ReplicaSets may shrink, an RS's available pods
//! count at most up to its `spec.replicas`, so a scale-down the RS controller
//! has not carried out yet is never counted as capacity.

pub mod hash;
pub mod history;
mod rolling;
pub mod run;
mod scale;
mod status;
pub mod util;

use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use shturman_api::apps::{Deployment, DeploymentStatus, DeploymentStrategyType, ReplicaSet, ReplicaSetSpec};
use shturman_api::core::{Pod, PodPhase};
use shturman_api::meta::{ObjectMeta, OwnerReference};

pub use hash::{compute_hash, template_hash};
pub use history::{RevisionEntry, rollout_history, template_for_undo};

use super::EventRecord;
use super::replicaset::pods;
use util::{POD_TEMPLATE_HASH, REVISION, rs_replicas};

/// What the executor does, in order; stop at the first failure and requeue.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Take ownership of an orphan ReplicaSet whose labels match the selector.
    AdoptReplicaSet {
        name: String,
        uid: Option<String>,
        owner: OwnerReference,
    },
    /// Create the new ReplicaSet (name, labels, selector and template carry the hash).
    CreateReplicaSet(Box<ReplicaSet>),
    /// Update an existing ReplicaSet: set `spec.replicas`, `spec.minReadySeconds`
    /// and replace its annotations. `resource_version` is a precondition.
    ScaleReplicaSet {
        name: String,
        replicas: i32,
        min_ready_seconds: Option<i32>,
        annotations: std::collections::BTreeMap<String, String>,
        resource_version: Option<String>,
    },
    /// Delete an old ReplicaSet beyond `revisionHistoryLimit`.
    DeleteReplicaSet { name: String, uid: Option<String> },
    /// Set the deployment's `deployment.kubernetes.io/revision` annotation.
    UpdateDeploymentAnnotations { revision: String },
    /// Write the deployment's status (only emitted when it changed).
    UpdateDeploymentStatus(DeploymentStatus),
    /// Record an event on the deployment.
    Event(EventRecord),
    /// Look again after this long (progress deadline, minReadySeconds).
    RequeueAfter(Duration),
}

/// One ReplicaSet in the working state of a pass, with what its pods show.
#[derive(Clone, Debug)]
pub(crate) struct Rs {
    /// The working copy: planned changes are applied here as they are emitted.
    pub rs: ReplicaSet,
    /// Active pods (not terminating, not finished).
    pub actual: i32,
    pub ready: i32,
    /// Active pods available after the RS's minReadySeconds.
    pub available: i32,
    /// Pods that may still run: not finished (terminating ones included).
    pub running: i32,
    /// The earliest time a ready pod becomes available, if one is waiting.
    pub next_available: Option<DateTime<Utc>>,
}

impl Rs {
    fn new(rs: ReplicaSet, pods: &[&Pod], now: DateTime<Utc>) -> Rs {
        let uid = rs.metadata.uid.clone().unwrap_or_default();
        let min_ready = rs.spec.min_ready_seconds.unwrap_or(0);
        let mut r = Rs {
            rs,
            actual: 0,
            ready: 0,
            available: 0,
            running: 0,
            next_available: None,
        };
        if uid.is_empty() {
            return r;
        }
        for pod in pods.iter().filter(|p| pods::is_controlled_by(p, &uid)) {
            if !matches!(pod.phase(), PodPhase::Succeeded | PodPhase::Failed) {
                r.running += 1;
            }
            if !pods::is_active(pod) {
                continue;
            }
            r.actual += 1;
            r.ready += i32::from(pods::is_ready(pod));
            if pods::is_available(pod, min_ready, now) {
                r.available += 1;
            } else if let Some(Some(at)) = pods::available_at(pod, min_ready) {
                r.next_available = Some(r.next_available.map_or(at, |n| n.min(at)));
            }
        }
        r
    }

    pub fn name(&self) -> &str {
        self.rs.metadata.name()
    }

    pub fn replicas(&self) -> i32 {
        rs_replicas(&self.rs)
    }

    /// Available pods counted no higher than `spec.replicas`.
    pub fn capped_available(&self) -> i32 {
        self.available.min(self.replicas())
    }
}

/// Why a pass stopped early (the actions so far still apply).
pub(crate) struct Halt;

/// The working state of one pass.
pub(crate) struct Sync {
    /// The deployment with Kubernetes' defaults filled in (template untouched).
    pub d: Deployment,
    pub now: DateTime<Utc>,
    /// Owned ReplicaSets, oldest first (ties by name).
    pub rss: Vec<Rs>,
    /// Index in `rss` of the ReplicaSet whose template is the deployment's.
    pub new: Option<usize>,
    /// The deployment's status as this pass has changed it so far.
    pub status: DeploymentStatus,
    pub actions: Vec<Action>,
}

/// Plans one reconcile pass of `d`. `rss` are the ReplicaSets it owns (orphans
/// matching its selector are adopted, others ignored); `pods` are the pods of
/// those ReplicaSets (others are ignored). The executor should hold off
/// re-planning until its caches show the effects of the previous pass's
/// actions (Kubernetes' expectations), or a stale cache may repeat them.
pub fn plan<P: std::borrow::Borrow<Pod>>(
    d: &Deployment,
    rss: &[ReplicaSet],
    pods: &[P],
    now: DateTime<Utc>,
) -> Vec<Action> {
    // Borrowed, never copied: the executor hands in its cache's shared pods.
    let pods: Vec<&Pod> = pods.iter().map(std::borrow::Borrow::borrow).collect();
    let mut s = Sync::new(d, rss, &pods, now.trunc_subsecs(0));
    if s.d.spec.selector.is_empty() {
        s.actions.push(Action::Event(EventRecord::warning(
            "SelectingAll",
            "This deployment is selecting all pods. A non-empty selector is required.",
        )));
        if s.status.observed_generation < s.d.metadata.generation {
            s.status.observed_generation = s.d.metadata.generation;
        }
        return s.finish(d);
    }
    // Errors stop the pass; what was planned until then still applies.
    let _ = s.run();
    s.finish(d)
}

impl Sync {
    fn new(d: &Deployment, rss: &[ReplicaSet], pods: &[&Pod], now: DateTime<Utc>) -> Sync {
        let mut dd = d.clone();
        let template = dd.spec.template.clone();
        dd.spec.apply_defaults();
        dd.spec.template = template;
        let uid = dd.metadata.uid.clone().unwrap_or_default();
        let namespace = dd.metadata.namespace().to_string();
        let mut actions = Vec::new();
        let mut owned: Vec<Rs> = Vec::new();
        for rs in rss.iter().filter(|rs| rs.metadata.namespace() == namespace) {
            match rs.metadata.controller_ref() {
                Some(r) if r.uid == uid && !uid.is_empty() => owned.push(Rs::new(rs.clone(), pods, now)),
                Some(_) => {}
                None => {
                    let adoptable = !uid.is_empty()
                        && dd.metadata.deletion_timestamp.is_none()
                        && rs.metadata.deletion_timestamp.is_none()
                        && !dd.spec.selector.is_empty()
                        && dd.spec.selector.matches(&rs.metadata.labels);
                    if adoptable {
                        let owner = deployment_ref(&dd, &uid);
                        actions.push(Action::AdoptReplicaSet {
                            name: rs.metadata.name().to_string(),
                            uid: rs.metadata.uid.clone(),
                            owner: owner.clone(),
                        });
                        let mut rs = rs.clone();
                        rs.metadata.owner_references.push(owner);
                        owned.push(Rs::new(rs, pods, now));
                    }
                }
            }
        }
        owned.sort_by(|a, b| {
            (a.rs.metadata.creation_timestamp, a.name()).cmp(&(b.rs.metadata.creation_timestamp, b.name()))
        });
        let status = dd.status.clone().unwrap_or_default();
        Sync {
            d: dd,
            now,
            rss: owned,
            new: None,
            status,
            actions,
        }
    }

    /// Kubernetes' `syncDeployment` after the selector check.
    fn run(&mut self) -> Result<(), Halt> {
        if self.d.metadata.deletion_timestamp.is_some() {
            self.resolve_new(false)?;
            self.sync_deployment_status();
            return Ok(());
        }
        self.check_paused_conditions();
        if self.d.spec.paused == Some(true) || self.is_scaling_event()? {
            return self.sync();
        }
        match self.d.spec.strategy_type() {
            DeploymentStrategyType::Recreate => self.rollout_recreate(),
            DeploymentStrategyType::RollingUpdate => self.rollout_rolling(),
        }
    }

    /// Emits the revision annotation and status updates if they changed.
    fn finish(mut self, original: &Deployment) -> Vec<Action> {
        if let Some(new) = self.new {
            let rev = self.rss[new].rs.metadata.annotations.get(REVISION).cloned();
            if let Some(rev) = rev.filter(|r| original.metadata.annotations.get(REVISION) != Some(r)) {
                self.actions
                    .push(Action::UpdateDeploymentAnnotations { revision: rev });
            }
        }
        let mut status = self.status.clone();
        normalize(&mut status);
        let mut before = original.status.clone().unwrap_or_default();
        normalize(&mut before);
        if original.status.is_none() || status != before {
            self.actions.push(Action::UpdateDeploymentStatus(status));
        }
        self.actions
    }

    /// Indices of the old ReplicaSets (all but the new one), oldest first.
    pub fn old(&self) -> Vec<usize> {
        (0..self.rss.len()).filter(|i| Some(*i) != self.new).collect()
    }

    /// Kubernetes' `getNewReplicaSet`: find the RS of the current template and
    /// bring its revision and annotations up to date, or (when `create`) make it.
    fn resolve_new(&mut self, create: bool) -> Result<(), Halt> {
        self.new = self
            .rss
            .iter()
            .position(|r| util::equal_ignore_hash(&r.rs.spec.template, &self.d.spec.template));
        let old = self.old();
        let new_revision = util::max_revision(old.iter().map(|i| &self.rss[*i].rs)).saturating_add(1);
        if let Some(i) = self.new {
            let mut rs = self.rss[i].rs.clone();
            let changed = util::set_new_rs_annotations(&self.d, &mut rs, new_revision, true);
            let min_ready_changed = rs.spec.min_ready_seconds != self.d.spec.min_ready_seconds;
            if changed || min_ready_changed {
                rs.spec.min_ready_seconds = self.d.spec.min_ready_seconds;
                self.rss[i].rs = rs;
                self.push_update(i);
            }
            if util::has_progress_deadline(&self.d) && self.status.condition(PROGRESSING).is_none() {
                let msg = format!("Found new replica set {:?}", self.rss[i].name());
                self.set_condition(PROGRESSING, true, status::FOUND_NEW_RS, msg);
            }
            return Ok(());
        }
        if !create {
            return Ok(());
        }
        let hash = compute_hash(&self.d.spec.template, self.status.collision_count);
        let name = format!("{}-{hash}", self.d.metadata.name());
        if self.rss.iter().any(|r| r.name() == name) {
            // Another template already has this name: move the hash and retry.
            let count = self.status.collision_count.unwrap_or(0);
            self.status.collision_count = Some(count.wrapping_add(1));
            self.actions.push(Action::RequeueAfter(Duration::ZERO));
            return Err(Halt);
        }
        let uid = self.d.metadata.uid.clone().unwrap_or_default();
        let mut template = self.d.spec.template.clone();
        template.metadata.labels = util::with_hash_label(&template.metadata.labels, &hash);
        let mut selector = self.d.spec.selector.clone();
        selector
            .match_labels
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: self.d.metadata.namespace.clone(),
                labels: template.metadata.labels.clone(),
                owner_references: vec![deployment_ref(&self.d, &uid)],
                ..Default::default()
            },
            spec: ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: self.d.spec.min_ready_seconds,
                selector,
                template,
            },
            ..Default::default()
        };
        shturman_api::meta::Object::set_type_meta(&mut rs);
        self.rss.push(Rs::new(rs.clone(), &[], self.now));
        let i = self.rss.len() - 1;
        let replicas = self.new_rs_new_replicas(i);
        rs.spec.replicas = Some(replicas);
        util::set_new_rs_annotations(&self.d, &mut rs, new_revision, false);
        self.rss[i].rs = rs.clone();
        self.new = Some(i);
        self.actions.push(Action::CreateReplicaSet(Box::new(rs)));
        if replicas > 0 {
            self.event(format!("Scaled up replica set {name} from 0 to {replicas}"));
        }
        if util::has_progress_deadline(&self.d) {
            let msg = format!("Created new replica set {name:?}");
            self.set_condition(PROGRESSING, true, status::NEW_RS_CREATED, msg);
        }
        Ok(())
    }

    /// Kubernetes' `NewRSNewReplicas`: how big the new RS may be now.
    pub fn new_rs_new_replicas(&self, new: usize) -> i32 {
        let desired = util::desired_replicas(&self.d);
        let current = self.rss[new].replicas();
        if self.d.spec.strategy_type() == DeploymentStrategyType::Recreate {
            return desired;
        }
        let max_total = desired.saturating_add(util::max_surge(&self.d));
        let total = self.total_replicas(0..self.rss.len());
        if total >= max_total {
            return current;
        }
        current.saturating_add((max_total - total).min(desired - current))
    }

    /// The sum of `spec.replicas` over `idx`.
    pub fn total_replicas(&self, idx: impl IntoIterator<Item = usize>) -> i32 {
        idx.into_iter()
            .fold(0i32, |n, i| n.saturating_add(self.rss[i].replicas()))
    }

    /// Kubernetes' `scaleReplicaSetAndRecordEvent`: scale if the size differs.
    pub fn scale_and_record(&mut self, i: usize, replicas: i32) -> bool {
        self.rss[i].replicas() != replicas && self.scale_rs(i, replicas)
    }

    /// Kubernetes' `scaleReplicaSet`: set the size and the replicas
    /// annotations; records a ScalingReplicaSet event if the size changed.
    pub fn scale_rs(&mut self, i: usize, replicas: i32) -> bool {
        let replicas = replicas.max(0);
        let desired = util::desired_replicas(&self.d);
        let max = desired.saturating_add(util::max_surge(&self.d));
        let old = self.rss[i].replicas();
        let size_changed = old != replicas;
        let rs = &mut self.rss[i].rs;
        if !size_changed && !util::replicas_annotations_need_update(rs, desired, max) {
            return false;
        }
        rs.spec.replicas = Some(replicas);
        util::set_replicas_annotations(rs, desired, max);
        self.push_update(i);
        if size_changed {
            let op = if replicas > old { "up" } else { "down" };
            let name = self.rss[i].name().to_string();
            self.event(format!("Scaled {op} replica set {name} from {old} to {replicas}"));
        }
        size_changed
    }

    fn push_update(&mut self, i: usize) {
        let rs = &self.rss[i].rs;
        let action = Action::ScaleReplicaSet {
            name: rs.metadata.name().to_string(),
            replicas: rs_replicas(rs),
            min_ready_seconds: rs.spec.min_ready_seconds,
            annotations: rs.metadata.annotations.clone(),
            resource_version: rs.metadata.resource_version.clone(),
        };
        // A ReplicaSet created in this pass is updated by re-creating it.
        if let Some(Action::CreateReplicaSet(created)) = self
            .actions
            .iter_mut()
            .find(|a| matches!(a, Action::CreateReplicaSet(c) if c.metadata.name == rs.metadata.name))
        {
            **created = rs.clone();
            return;
        }
        self.actions.push(action);
    }

    fn event(&mut self, message: String) {
        self.actions
            .push(Action::Event(EventRecord::normal("ScalingReplicaSet", message)));
    }

    /// Kubernetes' `oldPodsRunning`: any pod of an old RS that may still run.
    pub fn old_pods_running(&self) -> bool {
        self.old().iter().any(|i| self.rss[*i].running > 0)
    }
}

pub(crate) use status::PROGRESSING;

/// The controller reference a deployment puts on its ReplicaSets.
fn deployment_ref(d: &Deployment, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: d.metadata.name().to_string(),
        uid: uid.to_string(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Makes the counts explicit so an absent status compares equal to zeros.
fn normalize(s: &mut DeploymentStatus) {
    for f in [
        &mut s.replicas,
        &mut s.updated_replicas,
        &mut s.ready_replicas,
        &mut s.available_replicas,
        &mut s.unavailable_replicas,
    ] {
        f.get_or_insert(0);
    }
}

#[cfg(test)]
mod sim_tests;
#[cfg(test)]
mod tests;
