//! The pod manager: holds the desired set, applies [`plan`]'s actions through
//! the [`Runtimes`] the agent has, and keeps each pod's status so the agent
//! reports only what changed (and everything again after a reconnect).
//!
//! A pod whose runtime this agent lacks is admitted but not run: it stays
//! `Pending`, its containers `waiting` with reason `RuntimeUnavailable`, and
//! `ContainersReady`/`Ready` are `False` with the same reason.
//!
//! Stopping never holds the agent up: a pod's stop (SIGTERM, its grace
//! period, SIGKILL, removal) runs in a task of its own, so routes, pod sets
//! and heartbeats go on meanwhile. A pod to start again under the same key
//! (a replacement) waits until its old self has stopped; [`PodManager::stopped`]
//! is raised then, and the next [`PodManager::reconcile`] starts it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use shturman_api::core::{
    ContainerState, ContainerStatus, PodCondition, PodConditionType, PodPhase, PodStatus,
};
use shturman_api::meta::{ConditionStatus, Time};
use shturman_api::wire::DesiredPod;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::plan::{PodAction, PodKey, RunningPod, plan};
use crate::runtime::{PodClass, RuntimeError, Runtimes};

/// Reason given while no runtime of a pod's class exists in this agent.
pub const RUNTIME_UNAVAILABLE: &str = "RuntimeUnavailable";
/// Grace period when a pod does not set `terminationGracePeriodSeconds`.
const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// One pod the node has admitted.
#[derive(Clone, Debug)]
struct Managed {
    running: RunningPod,
    /// Set when a runtime runs it; `None` while it waits for one.
    runtime: Option<&'static str>,
    /// Its grace period, from its spec when it was admitted (the spec is
    /// gone by the time it is deleted).
    grace: Duration,
    status: PodStatus,
    /// What the control plane last heard (`None`: never, or resync needed).
    reported: Option<PodStatus>,
}

/// A status to send: the pod, its uid and its status.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub key: PodKey,
    pub uid: String,
    pub status: PodStatus,
}

/// The pod manager.
pub struct PodManager {
    runtimes: Runtimes,
    desired: BTreeMap<PodKey, DesiredPod>,
    pods: BTreeMap<PodKey, Managed>,
    /// Pods being stopped, each by its own task.
    stopping: BTreeMap<PodKey, JoinHandle<()>>,
    /// Raised when a stop ends.
    stopped: Arc<Notify>,
    host_ip: Option<String>,
}

impl PodManager {
    pub fn new(runtimes: Runtimes, host_ip: Option<String>) -> PodManager {
        PodManager {
            runtimes,
            desired: BTreeMap::new(),
            pods: BTreeMap::new(),
            stopping: BTreeMap::new(),
            stopped: Arc::new(Notify::new()),
            host_ip,
        }
    }

    /// Raised when a pod's stop has ended: reconcile again, a replacement
    /// may be waiting for it.
    pub fn stopped(&self) -> Arc<Notify> {
        self.stopped.clone()
    }

    /// Pods whose stop is still running.
    pub fn stopping(&self) -> usize {
        self.stopping.values().filter(|h| !h.is_finished()).count()
    }

    /// The desired set.
    pub fn desired(&self) -> &BTreeMap<PodKey, DesiredPod> {
        &self.desired
    }

    /// Sets (or with `None` removes) one desired pod; returns whether anything changed.
    pub fn set_desired(&mut self, key: PodKey, pod: Option<DesiredPod>) -> bool {
        match pod {
            Some(p) if self.desired.get(&key) == Some(&p) => false,
            Some(p) => {
                self.desired.insert(key, p);
                true
            }
            None => self.desired.remove(&key).is_some(),
        }
    }

    /// Whether this agent has a runtime for `class`.
    pub fn offers(&self, class: PodClass) -> bool {
        self.runtimes.for_class(class).is_some()
    }

    /// Number of pods admitted.
    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    /// Each admitted pod's phase and reason, for the state file.
    pub fn summary(&self) -> Vec<(PodKey, String, PodStatus)> {
        self.pods
            .iter()
            .map(|(k, m)| (k.clone(), m.running.uid.clone(), m.status.clone()))
            .collect()
    }

    /// Plans and applies; returns what it did, in words (for logs and the offline log).
    /// Stops are started, not awaited; a start under a key still stopping
    /// waits for a later call.
    pub async fn reconcile(&mut self, now: Time) -> Vec<String> {
        self.stopping.retain(|_, h| !h.is_finished());
        let actual: BTreeMap<PodKey, RunningPod> = self
            .pods
            .iter()
            .map(|(k, m)| (k.clone(), m.running.clone()))
            .collect();
        let mut done = Vec::new();
        for action in plan(&self.desired, &actual) {
            match action {
                PodAction::Stop(key) => {
                    if self.stop(&key) {
                        done.push(format!("stopping pod {key}"));
                    } else {
                        done.push(format!("stopped pod {key}"));
                    }
                }
                PodAction::Replace(key) => {
                    if self.stop(&key) {
                        done.push(format!("replacing pod {key}: stopping the old one first"));
                    } else {
                        let what = self.start(&key, now).await;
                        done.push(format!("replaced pod {key} ({what})"));
                    }
                }
                PodAction::Start(key) if self.stopping.contains_key(&key) => {
                    // Started once its old self has stopped (`stopped`).
                }
                PodAction::Start(key) => {
                    let what = self.start(&key, now).await;
                    done.push(format!("started pod {key} ({what})"));
                }
            }
        }
        done
    }

    /// Forgets `key` and has its runtime stop it in a task of its own;
    /// returns whether a stop is running.
    fn stop(&mut self, key: &PodKey) -> bool {
        let Some(m) = self.pods.remove(key) else {
            return false;
        };
        let Some(rt) = m
            .runtime
            .and_then(|name| self.runtimes.iter().find(|r| r.name() == name).cloned())
        else {
            return false;
        };
        let (key2, grace, stopped) = (key.clone(), m.grace, self.stopped.clone());
        let task = tokio::spawn(async move {
            match rt.stop(&key2, grace).await {
                Ok(()) => tracing::info!("stopped pod {key2}"),
                Err(e) => tracing::warn!(pod = %key2, error = %e, "stopping pod failed"),
            }
            stopped.notify_one();
        });
        self.stopping.insert(key.clone(), task);
        true
    }

    /// Admits a desired pod; returns its phase in words.
    async fn start(&mut self, key: &PodKey, now: Time) -> String {
        let Some(d) = self.desired.get(key) else {
            return "gone".into();
        };
        let class = PodClass::of(&d.pod.spec);
        let grace = d
            .pod
            .spec
            .termination_grace_period_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(DEFAULT_GRACE, Duration::from_secs);
        let mut m = Managed {
            running: RunningPod::of(&d.pod),
            runtime: None,
            grace,
            status: PodStatus::default(),
            reported: None,
        };
        let what;
        if let Some(rt) = self.runtimes.for_class(class).cloned() {
            m.runtime = Some(rt.name());
            m.status = match rt.start(d).await {
                Ok(()) => rt
                    .status(key)
                    .await
                    .unwrap_or_else(|| waiting(d, "ContainerCreating", "", now)),
                Err(RuntimeError { reason, message }) => waiting(d, &reason, &message, now),
            };
            what = format!("{} by {}", phase_name(&m.status), rt.name());
        } else {
            let message = format!("no {} runtime in this agent yet", class.handler());
            m.status = waiting(d, RUNTIME_UNAVAILABLE, &message, now);
            what = format!("Pending: {message}");
        }
        m.status.host_ip.clone_from(&self.host_ip);
        self.pods.insert(key.clone(), m);
        what
    }

    /// Raised when a runtime's pod status changes.
    pub fn changed(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.runtimes.changed()
    }

    /// Asks the runtimes for fresh statuses of the pods they run.
    pub async fn refresh(&mut self) {
        for (key, m) in &mut self.pods {
            let Some(name) = m.runtime else { continue };
            let Some(rt) = self.runtimes.iter().find(|r| r.name() == name) else {
                continue;
            };
            if let Some(mut s) = rt.status(key).await {
                s.host_ip.clone_from(&self.host_ip);
                m.status = s;
            }
        }
    }

    /// Forget what was reported: the next [`take_reports`](Self::take_reports) returns every pod.
    pub fn resync(&mut self) {
        for m in self.pods.values_mut() {
            m.reported = None;
        }
    }

    /// The statuses that changed since last reported, marked as reported.
    pub fn take_reports(&mut self) -> Vec<Report> {
        let mut out = Vec::new();
        for (key, m) in &mut self.pods {
            if m.reported.as_ref() != Some(&m.status) {
                m.reported = Some(m.status.clone());
                out.push(Report {
                    key: key.clone(),
                    uid: m.running.uid.clone(),
                    status: m.status.clone(),
                });
            }
        }
        out
    }
}

fn phase_name(s: &PodStatus) -> String {
    format!("{:?}", s.phase.unwrap_or_default())
}

/// A `Pending` status whose containers wait for `reason`.
fn waiting(d: &DesiredPod, reason: &str, message: &str, now: Time) -> PodStatus {
    let msg = (!message.is_empty()).then(|| message.to_string());
    let cond = |type_, status, why: Option<&str>| PodCondition {
        type_,
        status,
        last_probe_time: None,
        last_transition_time: Some(now),
        reason: why.map(str::to_string),
        message: why.and(msg.clone()),
    };
    PodStatus {
        phase: Some(PodPhase::Pending),
        conditions: vec![
            cond(PodConditionType::PodScheduled, ConditionStatus::True, None),
            cond(PodConditionType::Initialized, ConditionStatus::True, None),
            cond(
                PodConditionType::ContainersReady,
                ConditionStatus::False,
                Some(reason),
            ),
            cond(PodConditionType::Ready, ConditionStatus::False, Some(reason)),
        ],
        message: msg.clone(),
        reason: Some(reason.to_string()),
        start_time: Some(now),
        container_statuses: d
            .pod
            .spec
            .containers
            .iter()
            .map(|c| ContainerStatus {
                name: c.name.clone(),
                state: Some(ContainerState::waiting(reason, msg.clone())),
                image: c.image.clone(),
                started: Some(false),
                ..ContainerStatus::default()
            })
            .collect(),
        ..PodStatus::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Runtime;
    use shturman_api::core::pod_status::ContainerStateKind;
    use shturman_api::core::{Container, Pod};
    use std::sync::{Arc, Mutex};

    fn desired(name: &str, image: &str) -> (PodKey, DesiredPod) {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some("default".into());
        p.metadata.uid = Some(format!("uid-{name}"));
        p.spec.containers.push(Container {
            name: "main".into(),
            image: image.into(),
            ..Container::default()
        });
        (
            PodKey::of(&p),
            DesiredPod {
                pod: p,
                ..DesiredPod::default()
            },
        )
    }

    fn now() -> Time {
        Time(chrono::Utc::now())
    }

    #[tokio::test]
    async fn without_a_runtime_pods_wait_with_a_reason() {
        let mut m = PodManager::new(Runtimes::default(), Some("10.0.0.5".into()));
        let (kw, w) = desired("w", "file:///opt/hello.wasm");
        let (ko, o) = desired("o", "nginx:1.27");
        assert!(m.set_desired(kw.clone(), Some(w.clone())));
        assert!(!m.set_desired(kw.clone(), Some(w)));
        m.set_desired(ko, Some(o));
        let done = m.reconcile(now()).await;
        assert_eq!(done.len(), 2, "{done:?}");
        let reports = m.take_reports();
        assert_eq!(reports.len(), 2);
        let wasm = reports.iter().find(|r| r.key == kw).unwrap();
        assert_eq!(wasm.status.phase, Some(PodPhase::Pending));
        assert_eq!(wasm.status.host_ip.as_deref(), Some("10.0.0.5"));
        let cr = wasm.status.condition(PodConditionType::ContainersReady).unwrap();
        assert_eq!(cr.status, ConditionStatus::False);
        let state = wasm.status.container_statuses[0].state.as_ref().unwrap();
        let ContainerStateKind::Waiting(w) = state.kind() else {
            panic!("{state:?}")
        };
        assert_eq!(w.reason.as_deref(), Some(RUNTIME_UNAVAILABLE));
        assert_eq!(
            w.message.as_deref(),
            Some("no wasmtime runtime in this agent yet")
        );
        let oci = reports.iter().find(|r| r.key != kw).unwrap();
        assert!(oci.status.message.as_deref().unwrap().contains("containerd"));
        // Nothing changed: nothing to report, nothing to do.
        assert!(m.take_reports().is_empty());
        assert!(m.reconcile(now()).await.is_empty());
        m.resync();
        assert_eq!(m.take_reports().len(), 2);
        m.set_desired(kw, None);
        assert_eq!(
            m.reconcile(now()).await,
            vec!["stopped pod default/w".to_string()]
        );
        assert_eq!(m.pod_count(), 1);
    }

    /// Records calls; stops of pods named `slow` wait for `gate`.
    #[derive(Default)]
    struct Recording {
        calls: Mutex<Vec<String>>,
        gate: Arc<tokio::sync::Notify>,
    }

    #[async_trait::async_trait]
    impl Runtime for Recording {
        fn name(&self) -> &'static str {
            "wasmtime"
        }
        fn class(&self) -> PodClass {
            PodClass::Wasm
        }
        async fn start(&self, pod: &DesiredPod) -> Result<(), RuntimeError> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("start {}", PodKey::of(&pod.pod)));
            Ok(())
        }
        async fn stop(&self, key: &PodKey, grace: Duration) -> Result<(), RuntimeError> {
            if key.name == "slow" {
                self.calls
                    .lock()
                    .unwrap()
                    .push(format!("stop {key} grace {grace:?}"));
                self.gate.notified().await;
            } else {
                self.calls.lock().unwrap().push(format!("stop {key}"));
            }
            Ok(())
        }
        async fn status(&self, _key: &PodKey) -> Option<PodStatus> {
            Some(PodStatus {
                phase: Some(PodPhase::Running),
                ..PodStatus::default()
            })
        }
    }

    /// Waits (bounded) for the manager's `stopped` signal.
    async fn stopped(m: &PodManager) {
        tokio::time::timeout(Duration::from_secs(10), m.stopped().notified())
            .await
            .expect("a stop to end");
    }

    #[tokio::test]
    async fn runtimes_are_called_once_per_change() {
        let rec = Arc::new(Recording::default());
        let mut m = PodManager::new(Runtimes::new(vec![rec.clone()], Default::default()), None);
        let (k, d) = desired("w", "a.wasm");
        m.set_desired(k.clone(), Some(d.clone()));
        m.reconcile(now()).await;
        m.reconcile(now()).await;
        let mut d2 = d.clone();
        d2.pod.spec.containers[0].image = "b.wasm".into();
        m.set_desired(k.clone(), Some(d2));
        // The old pod stops first; its replacement starts once it has.
        assert_eq!(
            m.reconcile(now()).await,
            ["replacing pod default/w: stopping the old one first"]
        );
        stopped(&m).await;
        assert_eq!(
            m.reconcile(now()).await,
            ["started pod default/w (Running by wasmtime)"]
        );
        m.set_desired(k, None);
        assert_eq!(m.reconcile(now()).await, ["stopping pod default/w"]);
        stopped(&m).await;
        assert!(m.reconcile(now()).await.is_empty());
        assert_eq!(
            *rec.calls.lock().unwrap(),
            [
                "start default/w",
                "stop default/w",
                "start default/w",
                "stop default/w"
            ]
        );
        assert!(m.take_reports().is_empty() || m.pod_count() == 0);
    }

    #[tokio::test]
    async fn a_slow_stop_holds_up_nothing_but_its_own_replacement() {
        let rec = Arc::new(Recording::default());
        let gate = rec.gate.clone();
        let mut m = PodManager::new(Runtimes::new(vec![rec.clone()], Default::default()), None);
        let (slow, mut d) = desired("slow", "a.wasm");
        d.pod.spec.termination_grace_period_seconds = Some(7);
        let (other, o) = desired("other", "a.wasm");
        m.set_desired(slow.clone(), Some(d.clone()));
        m.reconcile(now()).await;
        // Deleted: its desired entry (and spec) is gone, its grace is not.
        m.set_desired(slow.clone(), None);
        assert_eq!(m.reconcile(now()).await, ["stopping pod default/slow"]);
        // While it stops, other pods start, and the same pod (recreated
        // under its name) waits.
        m.set_desired(other, Some(o));
        m.set_desired(slow.clone(), Some(d));
        assert_eq!(
            m.reconcile(now()).await,
            ["started pod default/other (Running by wasmtime)"]
        );
        assert_eq!(m.stopping(), 1);
        assert!(m.reconcile(now()).await.is_empty());
        gate.notify_one();
        stopped(&m).await;
        assert_eq!(m.stopping(), 0);
        assert_eq!(
            m.reconcile(now()).await,
            ["started pod default/slow (Running by wasmtime)"]
        );
        let calls = rec.calls.lock().unwrap().clone();
        let at = |c: &str| {
            calls
                .iter()
                .rposition(|x| x == c)
                .unwrap_or_else(|| panic!("{c}: {calls:?}"))
        };
        assert_eq!(calls.len(), 4, "{calls:?}");
        assert_eq!(calls[0], "start default/slow");
        assert!(
            at("stop default/slow grace 7s") < at("start default/slow"),
            "{calls:?}"
        );
        assert!(at("start default/other") > 0, "{calls:?}");
    }
}
