//! A deterministic simulation of the Deployment and ReplicaSet planners
//! together: each step runs every ReplicaSet's plan (so pods follow a scale
//! one step later), then the Deployment's plan, then a fake kubelet that makes
//! pods ready `ready_after` steps after creation (never for broken images),
//! then advances the clock 10 s. Invariants are checked after every step.

use std::collections::{BTreeMap, BTreeSet};

use shturman_api::apps::{
    Deployment, DeploymentConditionType, DeploymentStrategy, DeploymentStrategyType, ReplicaSet,
};
use shturman_api::core::{Container, Pod, PodCondition, PodConditionType, PodPhase, PodStatus};
use shturman_api::intstr::IntOrString;
use shturman_api::meta::{ConditionStatus, Time};

use super::tests::t;
use super::util::{self, REVISION, REVISION_HISTORY};
use super::{Action, plan};
use crate::controllers::replicaset;

const STEP_SECS: i64 = 10;

/// How strictly to check `ready >= replicas - maxUnavailable`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Floor {
    /// At every step once the first rollout completed.
    Strict,
    /// Ready pods never drop below the floor (replicas change mid-run).
    NoDropBelow,
    /// Recreate: old and new pods never run together instead.
    Recreate,
}

struct World {
    d: Deployment,
    rss: Vec<ReplicaSet>,
    pods: Vec<Pod>,
    born: BTreeMap<String, u32>,
    broken: BTreeSet<String>,
    ready_after: u32,
    step: u32,
    uid: u64,
    names: u64,
    events: Vec<String>,
    /// replicas + maxSurge and the availability floor of the spec the
    /// previous deployment pass planned for (the pods follow it this step).
    last_bound: i32,
    last_floor: i32,
    last_ready: i32,
    rollout_done: bool,
    floor: Floor,
}

fn deployment(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> Deployment {
    let mut d = Deployment::default();
    d.metadata.name = Some("web".into());
    d.metadata.namespace = Some("default".into());
    d.metadata.uid = Some("d-uid".into());
    d.metadata.generation = Some(1);
    d.spec.replicas = Some(replicas);
    d.spec.selector.match_labels.insert("app".into(), "web".into());
    d.spec.template.metadata.labels.insert("app".into(), "web".into());
    d.spec.template.spec.containers.push(Container {
        name: "c".into(),
        image: "v1".into(),
        ..Default::default()
    });
    d.spec.strategy = Some(DeploymentStrategy {
        type_: Some(DeploymentStrategyType::RollingUpdate),
        rolling_update: Some(shturman_api::apps::RollingUpdateDeployment {
            max_surge: Some(surge),
            max_unavailable: Some(unavailable),
        }),
    });
    d.spec.apply_defaults();
    d
}

impl World {
    fn new(d: Deployment, ready_after: u32, floor: Floor) -> World {
        World {
            d,
            rss: Vec::new(),
            pods: Vec::new(),
            born: BTreeMap::new(),
            broken: BTreeSet::new(),
            ready_after,
            step: 0,
            uid: 0,
            names: 0,
            events: Vec::new(),
            last_bound: i32::MAX,
            last_floor: 0,
            last_ready: 0,
            rollout_done: false,
            floor,
        }
    }

    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        t(i64::from(self.step) * STEP_SECS)
    }

    fn next_uid(&mut self) -> String {
        self.uid += 1;
        format!("uid-{}", self.uid)
    }

    fn set_image(&mut self, image: &str) {
        self.d.spec.template.spec.containers[0].image = image.into();
        self.bump_generation();
    }

    fn set_replicas(&mut self, n: i32) {
        self.d.spec.replicas = Some(n);
        self.bump_generation();
    }

    fn bump_generation(&mut self) {
        self.d.metadata.generation = Some(self.d.metadata.generation.unwrap_or(0) + 1);
    }

    /// One step; returns the deployment's actions.
    fn step(&mut self) -> Vec<Action> {
        let now = self.now();
        // ReplicaSet controllers.
        for i in 0..self.rss.len() {
            let rs = self.rss[i].clone();
            let mut counter = self.names;
            let mut names = || {
                counter += 1;
                format!("p{counter:05}")
            };
            let actions = replicaset::plan(&rs, &self.pods, now, &mut names);
            self.names = counter;
            for a in actions {
                self.apply_rs(i, a);
            }
        }
        // Deployment controller.
        let actions = plan(&self.d, &self.rss, &self.pods, now);
        for a in actions.clone() {
            self.apply_deployment(a);
        }
        // Kubelet: pods become ready after `ready_after` steps unless broken.
        for pod in &mut self.pods {
            let age = self.step - self.born.get(pod.metadata.name()).copied().unwrap_or(0);
            let image = pod
                .spec
                .containers
                .first()
                .map(|c| c.image.clone())
                .unwrap_or_default();
            let ready = pod.status.as_ref().is_some_and(|s| s.is_ready());
            if !ready && age >= self.ready_after && !self.broken.contains(&image) {
                pod.status = Some(pod_status(true, now));
            }
        }
        self.check();
        self.last_bound = util::desired_replicas(&self.d).saturating_add(util::max_surge(&self.d));
        self.last_floor = util::desired_replicas(&self.d) - util::max_unavailable(&self.d);
        self.step += 1;
        actions
    }

    fn apply_rs(&mut self, i: usize, a: replicaset::Action) {
        use replicaset::{Action as A, OwnerChange};
        match a {
            A::CreatePod(p) => {
                let mut p = *p;
                p.metadata.uid = Some(self.next_uid());
                p.metadata.creation_timestamp = Some(Time(self.now()));
                p.spec.node_name = Some(format!("n{}", self.names % 3));
                p.status = Some(pod_status(false, self.now()));
                self.born.insert(p.metadata.name().to_string(), self.step);
                self.pods.push(p);
            }
            A::DeletePod { name, .. } => self.pods.retain(|p| p.metadata.name() != name),
            A::PatchOwner { pod, change, .. } => {
                if let Some(p) = self.pods.iter_mut().find(|p| p.metadata.name() == pod) {
                    match change {
                        OwnerChange::Adopt(r) => p.metadata.owner_references.push(r),
                        OwnerChange::Release { owner_uid } => {
                            p.metadata.owner_references.retain(|r| r.uid != owner_uid)
                        }
                    }
                }
            }
            A::UpdateStatus(s) => self.rss[i].status = Some(s),
            A::Event(_) | A::RequeueAfter(_) => {}
        }
    }

    fn apply_deployment(&mut self, a: Action) {
        match a {
            Action::CreateReplicaSet(rs) => {
                let mut rs = *rs;
                assert!(
                    !self.rss.iter().any(|r| r.metadata.name == rs.metadata.name),
                    "created twice"
                );
                rs.metadata.uid = Some(self.next_uid());
                rs.metadata.creation_timestamp = Some(Time(self.now()));
                self.rss.push(rs);
            }
            Action::ScaleReplicaSet {
                name,
                replicas,
                min_ready_seconds,
                annotations,
                ..
            } => {
                let rs = self.rss.iter_mut().find(|r| r.metadata.name() == name);
                let rs = rs.unwrap_or_else(|| panic!("scaled a missing RS {name}"));
                rs.spec.replicas = Some(replicas);
                rs.spec.min_ready_seconds = min_ready_seconds;
                rs.metadata.annotations = annotations;
            }
            Action::DeleteReplicaSet { name, .. } => {
                let uid = self
                    .rss
                    .iter()
                    .find(|r| r.metadata.name() == name)
                    .and_then(|r| r.metadata.uid.clone());
                assert!(
                    !self.pods.iter().any(|p| uid
                        .as_deref()
                        .is_some_and(|u| super::pods::is_controlled_by(p, u))),
                    "deleted RS {name} with pods"
                );
                self.rss.retain(|r| r.metadata.name() != name);
            }
            Action::UpdateDeploymentAnnotations { revision } => {
                self.d.metadata.annotations.insert(REVISION.into(), revision);
            }
            Action::UpdateDeploymentStatus(s) => self.d.status = Some(s),
            Action::Event(e) => self.events.push(e.message),
            Action::AdoptReplicaSet { .. } | Action::RequeueAfter(_) => {}
        }
    }

    fn active(&self) -> impl Iterator<Item = &Pod> {
        self.pods.iter().filter(|p| super::pods::is_active(p))
    }

    fn ready(&self) -> i32 {
        i32::try_from(self.active().filter(|p| super::pods::is_ready(p)).count()).unwrap_or(0)
    }

    fn is_current(&self, p: &Pod) -> bool {
        p.spec.containers == self.d.spec.template.spec.containers
    }

    fn check(&mut self) {
        let total = i32::try_from(self.active().count()).unwrap_or(0);
        let ready = self.ready();
        let step = self.step;
        assert!(
            total <= self.last_bound,
            "step {step}: {total} pods > bound {}",
            self.last_bound
        );
        match self.floor {
            Floor::Strict if self.rollout_done => {
                assert!(
                    ready >= self.last_floor,
                    "step {step}: {ready} ready < floor {}",
                    self.last_floor
                );
            }
            Floor::NoDropBelow if self.rollout_done && ready < self.last_ready => {
                assert!(
                    ready >= self.last_floor,
                    "step {step}: ready dropped to {ready} < {}",
                    self.last_floor
                );
            }
            Floor::Recreate => {
                let images: BTreeSet<String> = self
                    .active()
                    .map(|p| p.spec.containers[0].image.clone())
                    .collect();
                assert!(
                    images.len() <= 1,
                    "step {step}: old and new pods together: {images:?}"
                );
            }
            _ => {}
        }
        self.last_ready = ready;
    }

    fn complete(&self) -> bool {
        let desired = util::desired_replicas(&self.d);
        let s = self.d.status.clone().unwrap_or_default();
        let current = self.active().filter(|p| self.is_current(p)).count();
        let ready = self.active().filter(|p| super::pods::is_ready(p)).count();
        s.updated_replicas == Some(desired)
            && s.available_replicas == Some(desired)
            && s.replicas == Some(desired)
            && usize::try_from(desired).ok() == Some(current)
            && self.active().count() == current
            && ready == current
    }

    /// Steps until the rollout is complete and a further step plans nothing.
    fn run_until_stable(&mut self, max_steps: u32) {
        for _ in 0..max_steps {
            let actions = self.step();
            let quiet = actions.iter().all(|a| matches!(a, Action::RequeueAfter(_)));
            if self.complete() && quiet {
                self.rollout_done = true;
                self.assert_converged();
                return;
            }
        }
        panic!(
            "no convergence after {max_steps} steps: status {:?}, rss {:?}",
            self.d.status,
            self.rss
                .iter()
                .map(|r| (r.metadata.name().to_string(), r.spec.replicas))
                .collect::<Vec<_>>()
        );
    }

    fn assert_converged(&self) {
        let new: Vec<&ReplicaSet> = self
            .rss
            .iter()
            .filter(|r| util::equal_ignore_hash(&r.spec.template, &self.d.spec.template))
            .collect();
        assert_eq!(new.len(), 1, "one RS for the current template");
        assert_eq!(new[0].spec.replicas, self.d.spec.replicas);
        for old in self
            .rss
            .iter()
            .filter(|r| r.metadata.name != new[0].metadata.name)
        {
            assert_eq!(
                old.spec.replicas,
                Some(0),
                "old RS {} scaled down",
                old.metadata.name()
            );
        }
        let s = self.d.status.clone().unwrap_or_default();
        let reason = |t| s.condition(t).and_then(|c| c.reason.clone());
        assert_eq!(
            reason(DeploymentConditionType::Available).as_deref(),
            Some("MinimumReplicasAvailable")
        );
        assert_eq!(
            reason(DeploymentConditionType::Progressing).as_deref(),
            Some("NewReplicaSetAvailable")
        );
        assert_eq!(
            self.d.metadata.annotations.get(REVISION),
            new[0].metadata.annotations.get(REVISION)
        );
    }

    fn revision_of(&self, image: &str) -> Option<String> {
        self.rss
            .iter()
            .find(|r| r.spec.template.spec.containers[0].image == image)
            .and_then(|r| r.metadata.annotations.get(REVISION).cloned())
    }
}

fn pod_status(ready: bool, now: chrono::DateTime<chrono::Utc>) -> PodStatus {
    PodStatus {
        phase: Some(if ready {
            PodPhase::Running
        } else {
            PodPhase::Pending
        }),
        conditions: vec![PodCondition {
            type_: PodConditionType::Ready,
            status: ConditionStatus::from_bool(ready),
            last_probe_time: None,
            last_transition_time: Some(Time(now)),
            reason: None,
            message: None,
        }],
        ..Default::default()
    }
}

#[test]
fn rolling_updates_keep_surge_and_availability_bounds() {
    let cases: [(i32, IntOrString, IntOrString, u32, i32); 8] = [
        (10, "25%".into(), "25%".into(), 2, 0),
        (5, 1.into(), 0.into(), 1, 0),
        (5, 0.into(), 1.into(), 3, 0),
        (3, "50%".into(), "0%".into(), 1, 0),
        (1, 1.into(), 0.into(), 2, 0),
        (7, 2.into(), 3.into(), 0, 0),
        (4, "0%".into(), "0%".into(), 1, 0),
        (6, 2.into(), 1.into(), 1, 20),
    ];
    for (replicas, surge, unavailable, ready_after, min_ready) in cases {
        let mut d = deployment(replicas, surge, unavailable);
        d.spec.min_ready_seconds = Some(min_ready);
        let mut w = World::new(d, ready_after, Floor::Strict);
        w.run_until_stable(60);
        for image in ["v2", "v3"] {
            w.set_image(image);
            w.run_until_stable(200);
        }
        assert_eq!(w.revision_of("v3").as_deref(), Some("3"));
        assert!(
            w.events
                .iter()
                .any(|e| e.starts_with("Scaled up replica set web-") && e.contains(" from 0 to "))
        );
        assert!(
            w.events
                .iter()
                .any(|e| e.starts_with("Scaled down replica set web-"))
        );
    }
}

#[test]
fn rollover_mid_rollout_abandons_the_intermediate_replica_set() {
    let mut w = World::new(deployment(10, "25%".into(), "25%".into()), 3, Floor::Strict);
    w.run_until_stable(60);
    w.set_image("v2");
    for _ in 0..3 {
        w.step();
    }
    let v2 = w
        .rss
        .iter()
        .find(|r| r.spec.template.spec.containers[0].image == "v2")
        .cloned();
    assert!(
        v2.is_some_and(|r| r.spec.replicas > Some(0)),
        "v2 was rolling out"
    );
    w.set_image("v3");
    w.run_until_stable(200);
    assert_eq!(w.rss.len(), 3);
    assert_eq!(w.revision_of("v3").as_deref(), Some("3"));
}

#[test]
fn scaling_during_a_rollout_is_proportional_and_converges() {
    let mut w = World::new(deployment(10, "25%".into(), "25%".into()), 3, Floor::NoDropBelow);
    w.run_until_stable(60);
    w.set_image("v2");
    for _ in 0..2 {
        w.step();
    }
    w.set_replicas(15);
    for _ in 0..2 {
        w.step();
    }
    w.set_replicas(4);
    for _ in 0..2 {
        w.step();
    }
    w.set_replicas(9);
    w.run_until_stable(200);
    assert_eq!(w.active().count(), 9);
}

#[test]
fn recreate_never_runs_old_and_new_together() {
    let mut d = deployment(4, 1.into(), 1.into());
    d.spec.strategy = Some(DeploymentStrategy {
        type_: Some(DeploymentStrategyType::Recreate),
        rolling_update: None,
    });
    let mut w = World::new(d, 2, Floor::Recreate);
    w.run_until_stable(60);
    w.set_image("v2");
    w.run_until_stable(100);
    w.set_replicas(6);
    w.run_until_stable(100);
    assert_eq!(w.revision_of("v2").as_deref(), Some("2"));
}

#[test]
fn stuck_rollout_times_out_while_old_pods_keep_serving() {
    let mut d = deployment(4, 1.into(), 1.into());
    d.spec.progress_deadline_seconds = Some(60);
    let mut w = World::new(d, 1, Floor::Strict);
    w.run_until_stable(60);
    w.broken.insert("v2".into());
    w.set_image("v2");
    for _ in 0..40 {
        w.step();
    }
    let s = w.d.status.clone().unwrap_or_default();
    let progressing = s.condition(DeploymentConditionType::Progressing).cloned();
    assert_eq!(
        progressing.as_ref().and_then(|c| c.reason.as_deref()),
        Some("ProgressDeadlineExceeded")
    );
    assert_eq!(progressing.map(|c| c.status), Some(ConditionStatus::False));
    let available = s.condition(DeploymentConditionType::Available).map(|c| c.status);
    assert_eq!(available, Some(ConditionStatus::True));
    let old_ready = w
        .active()
        .filter(|p| p.spec.containers[0].image == "v1" && super::pods::is_ready(p))
        .count();
    assert_eq!(old_ready, 3, "old pods keep serving at the floor");
    // A fixed template rolls over the stuck one.
    w.set_image("v3");
    w.run_until_stable(100);
}

#[test]
fn undo_reuses_the_old_replica_set_and_bumps_its_revision() {
    let mut w = World::new(deployment(5, "25%".into(), "25%".into()), 1, Floor::Strict);
    w.run_until_stable(60);
    w.set_image("v2");
    w.run_until_stable(100);
    let undo = super::template_for_undo(&w.rss, None).map(|e| e.template);
    assert_eq!(
        undo.as_ref().map(|t| t.spec.containers[0].image.as_str()),
        Some("v1")
    );
    w.d.spec.template = undo.unwrap_or_default();
    w.bump_generation();
    w.run_until_stable(100);
    assert_eq!(w.rss.len(), 2, "no new ReplicaSet for an old template");
    assert_eq!(w.revision_of("v1").as_deref(), Some("3"));
    let v1 = w
        .rss
        .iter()
        .find(|r| r.spec.template.spec.containers[0].image == "v1");
    assert_eq!(
        v1.and_then(|r| r.metadata.annotations.get(REVISION_HISTORY))
            .map(String::as_str),
        Some("1")
    );
    let history: Vec<i64> = super::rollout_history(&w.rss)
        .iter()
        .map(|e| e.revision)
        .collect();
    assert_eq!(history, [2, 3]);
}

#[test]
fn paused_deployment_scales_but_does_not_roll_out_until_resumed() {
    let mut w = World::new(deployment(4, "25%".into(), "25%".into()), 1, Floor::NoDropBelow);
    w.run_until_stable(60);
    w.d.spec.paused = Some(true);
    w.set_image("v2");
    for _ in 0..5 {
        w.step();
    }
    assert_eq!(w.rss.len(), 1, "no rollout while paused");
    w.set_replicas(6);
    for _ in 0..5 {
        w.step();
    }
    assert_eq!(w.active().count(), 6);
    assert!(w.active().all(|p| p.spec.containers[0].image == "v1"));
    w.d.spec.paused = Some(false);
    w.run_until_stable(100);
}

#[test]
fn history_is_pruned_to_the_limit() {
    let mut d = deployment(2, 1.into(), 0.into());
    d.spec.revision_history_limit = Some(2);
    let mut w = World::new(d, 1, Floor::Strict);
    w.run_until_stable(60);
    for i in 2..=6 {
        w.set_image(&format!("v{i}"));
        w.run_until_stable(100);
        // Cleanup runs on the pass after completion.
        w.step();
    }
    assert_eq!(w.rss.len(), 3, "the current ReplicaSet and two old ones");
    let revisions: Vec<i64> = super::rollout_history(&w.rss)
        .iter()
        .map(|e| e.revision)
        .collect();
    assert_eq!(revisions, [4, 5, 6]);
}
