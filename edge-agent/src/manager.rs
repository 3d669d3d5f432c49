//! The pod manager: holds the desired set, applies [`plan`]'s actions through
//! the [`Runtimes`] the agent has, and keeps each pod's status so the agent
//! reports only what changed (and everything again after a reconnect).
//!
//! A pod whose runtime this agent lacks is admitted but not run: it stays
//! `Pending`, its containers `waiting` with reason `RuntimeUnavailable`, and
//! `ContainersReady`/`Ready` are `False` with the same reason.

use std::collections::BTreeMap;
use std::time::Duration;

use shturman_api::core::{
    ContainerState, ContainerStatus, PodCondition, PodConditionType, PodPhase, PodStatus,
};
use shturman_api::meta::{ConditionStatus, Time};
use shturman_api::wire::DesiredPod;

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
    host_ip: Option<String>,
}

impl PodManager {
    pub fn new(runtimes: Runtimes, host_ip: Option<String>) -> PodManager {
        PodManager {
            runtimes,
            desired: BTreeMap::new(),
            pods: BTreeMap::new(),
            host_ip,
        }
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
    pub async fn reconcile(&mut self, now: Time) -> Vec<String> {
        let actual: BTreeMap<PodKey, RunningPod> = self
            .pods
            .iter()
            .map(|(k, m)| (k.clone(), m.running.clone()))
            .collect();
        let mut done = Vec::new();
        for action in plan(&self.desired, &actual) {
            match action {
                PodAction::Stop(key) => {
                    self.stop(&key).await;
                    done.push(format!("stopped pod {key}"));
                }
                PodAction::Replace(key) => {
                    self.stop(&key).await;
                    let what = self.start(&key, now).await;
                    done.push(format!("replaced pod {key} ({what})"));
                }
                PodAction::Start(key) => {
                    let what = self.start(&key, now).await;
                    done.push(format!("started pod {key} ({what})"));
                }
            }
        }
        done
    }

    async fn stop(&mut self, key: &PodKey) {
        let Some(m) = self.pods.remove(key) else {
            return;
        };
        let Some(name) = m.runtime else {
            return;
        };
        let grace = self
            .desired
            .get(key)
            .and_then(|d| d.pod.spec.termination_grace_period_seconds)
            .and_then(|s| u64::try_from(s).ok())
            .map_or(DEFAULT_GRACE, Duration::from_secs);
        if let Some(rt) = self.runtimes.iter().find(|r| r.name() == name)
            && let Err(e) = rt.stop(key, grace).await
        {
            tracing::warn!(pod = %key, error = %e, "stopping pod failed");
        }
    }

    /// Admits a desired pod; returns its phase in words.
    async fn start(&mut self, key: &PodKey, now: Time) -> String {
        let Some(d) = self.desired.get(key) else {
            return "gone".into();
        };
        let class = PodClass::of(&d.pod.spec);
        let mut m = Managed {
            running: RunningPod::of(&d.pod),
            runtime: None,
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

    #[derive(Default)]
    struct Recording(Mutex<Vec<String>>);

    #[async_trait::async_trait]
    impl Runtime for Recording {
        fn name(&self) -> &'static str {
            "wasmtime"
        }
        fn class(&self) -> PodClass {
            PodClass::Wasm
        }
        async fn start(&self, pod: &DesiredPod) -> Result<(), RuntimeError> {
            self.0
                .lock()
                .unwrap()
                .push(format!("start {}", PodKey::of(&pod.pod)));
            Ok(())
        }
        async fn stop(&self, key: &PodKey, _grace: Duration) -> Result<(), RuntimeError> {
            self.0.lock().unwrap().push(format!("stop {key}"));
            Ok(())
        }
        async fn status(&self, _key: &PodKey) -> Option<PodStatus> {
            Some(PodStatus {
                phase: Some(PodPhase::Running),
                ..PodStatus::default()
            })
        }
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
        m.reconcile(now()).await;
        m.set_desired(k, None);
        m.reconcile(now()).await;
        assert_eq!(
            *rec.0.lock().unwrap(),
            [
                "start default/w",
                "stop default/w",
                "start default/w",
                "stop default/w"
            ]
        );
        assert!(m.take_reports().is_empty());
    }
}
