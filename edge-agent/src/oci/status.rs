//! CRI statuses as Kubernetes ones, pure: a container's CRI state becomes
//! what the supervisor acts on ([`Observed`]), an exited container its
//! `terminated` state (exit code, reason — `OOMKilled` straight from the
//! runtime, else `Completed` or `Error` — and times), and the sandbox's
//! network status the pod's `podIP`/`podIPs`.

use k8s_cri::v1::{ContainerState as CriState, ContainerStatus as CriStatus, PodSandboxNetworkStatus};
use shturman_api::core::ContainerState;
use shturman_api::core::pod_status::{ContainerStateTerminated, PodIp};
use shturman_api::meta::Time;

use crate::wasm::lifecycle::{self, Exit};

/// Reason containerd gives an exited container that failed to start.
pub const START_ERROR: &str = "StartError";
/// Reason when the runtime lost a container (kubelet's).
pub const CONTAINER_STATUS_UNKNOWN: &str = "ContainerStatusUnknown";

/// What the supervisor saw of a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// Created, not started yet.
    Created,
    /// Running since `started` (ns since the epoch).
    Running { started: i64 },
    /// Exited: its `terminated` state and how it ended.
    Exited { state: ContainerState, exit: Exit },
    /// The runtime does not know what it is doing.
    Unknown,
}

/// Nanoseconds since the epoch as a time; `None` for 0 (unset).
pub fn time_of(ns: i64) -> Option<Time> {
    if ns <= 0 {
        return None;
    }
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = u32::try_from(ns.rem_euclid(1_000_000_000)).unwrap_or(0);
    chrono::DateTime::from_timestamp(secs, nanos).map(Time)
}

/// How a CRI container status reads.
pub fn observe(s: &CriStatus) -> Observed {
    match CriState::try_from(s.state) {
        Ok(CriState::ContainerCreated) => Observed::Created,
        Ok(CriState::ContainerRunning) => Observed::Running {
            started: s.started_at,
        },
        Ok(CriState::ContainerExited) => {
            let exit = exit_of(s);
            Observed::Exited {
                state: terminated(s, &exit),
                exit,
            }
        }
        Ok(CriState::ContainerUnknown) | Err(_) => Observed::Unknown,
    }
}

/// How an exited container ended: `OOMKilled` when the runtime says so
/// (the cgroup's OOM killer struck), else its exit code.
pub fn exit_of(s: &CriStatus) -> Exit {
    if s.reason == lifecycle::OOM_KILLED {
        Exit::OomKilled(s.message.clone())
    } else {
        Exit::Code(s.exit_code)
    }
}

/// The `terminated` state of an exited container: the runtime's reason
/// when it gave one (`OOMKilled`, `StartError`, …), else `Completed` for 0
/// and `Error` otherwise; its message (first line, bounded).
pub fn terminated(s: &CriStatus, exit: &Exit) -> ContainerState {
    let reason = if s.reason.is_empty() {
        if s.exit_code == 0 {
            lifecycle::COMPLETED
        } else {
            lifecycle::ERROR
        }
    } else {
        s.reason.as_str()
    };
    let exit_code = match exit {
        // An OOM kill is a SIGKILL: 137 when the runtime reported nothing else.
        Exit::OomKilled(_) if s.exit_code == 0 => 137,
        _ => s.exit_code,
    };
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code,
            reason: Some(reason.to_string()),
            message: (!s.message.trim().is_empty()).then(|| lifecycle::short(&s.message)),
            started_at: time_of(s.started_at),
            finished_at: time_of(s.finished_at),
            container_id: Some(container_id(&s.id)),
            ..ContainerStateTerminated::default()
        }),
        ..ContainerState::default()
    }
}

/// The `terminated` state of a container the runtime lost (removed behind
/// the agent's back): as kubelet, exit code 137 and `ContainerStatusUnknown`.
pub fn lost(id: &str, started: Option<Time>, now: Time) -> (ContainerState, Exit) {
    let state = ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: 137,
            reason: Some(CONTAINER_STATUS_UNKNOWN.into()),
            message: Some("The container could not be located when the pod was terminated".into()),
            started_at: started,
            finished_at: Some(now),
            container_id: Some(container_id(id)),
            ..ContainerStateTerminated::default()
        }),
        ..ContainerState::default()
    };
    (state, Exit::Code(137))
}

/// The `terminated` state and exit of a run the agent killed because its
/// liveness or startup probe failed (`message`, e.g. `Liveness probe
/// failed: …`): what the runtime reported (exit code, reason, times) with
/// the probe's message, and [`Exit::Unhealthy`], which restarts it unless
/// `restartPolicy` is `Never` (kubelet restarts such a container whatever
/// its exit code). An OOM kill that raced the probe stays `OOMKilled`.
pub fn killed_by_probe(state: ContainerState, exit: Exit, message: &str) -> (ContainerState, Exit) {
    if matches!(exit, Exit::OomKilled(_)) {
        return (state, exit);
    }
    let mut state = state;
    if let Some(t) = state.terminated.as_mut() {
        t.message = Some(lifecycle::short(message));
    }
    (state, Exit::Unhealthy(message.to_string()))
}

/// `containerd://<id>`, as kubelet reports container ids.
pub fn container_id(id: &str) -> String {
    format!("containerd://{id}")
}

/// The pod's IPs from its sandbox's network status: the primary first.
pub fn pod_ips(net: Option<&PodSandboxNetworkStatus>) -> (Option<String>, Vec<PodIp>) {
    let Some(n) = net.filter(|n| !n.ip.is_empty()) else {
        return (None, Vec::new());
    };
    let mut ips = vec![PodIp { ip: n.ip.clone() }];
    ips.extend(
        n.additional_ips
            .iter()
            .filter(|a| !a.ip.is_empty() && a.ip != n.ip)
            .map(|a| PodIp { ip: a.ip.clone() }),
    );
    (Some(n.ip.clone()), ips)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::PodIp as CriPodIp;
    use shturman_api::core::pod_status::ContainerStateKind;

    fn status(state: CriState, code: i32, reason: &str, message: &str) -> CriStatus {
        CriStatus {
            id: "abc".into(),
            state: state as i32,
            exit_code: code,
            reason: reason.into(),
            message: message.into(),
            started_at: 1_700_000_000_123_456_789,
            finished_at: 1_700_000_005_000_000_000,
            ..CriStatus::default()
        }
    }

    fn term(o: Observed) -> (ContainerStateTerminated, Exit) {
        let Observed::Exited { state, exit } = o else {
            panic!("{o:?}")
        };
        (state.terminated.unwrap(), exit)
    }

    #[test]
    fn exits_map_to_kubernetes_reasons() {
        let (t, e) = term(observe(&status(CriState::ContainerExited, 0, "", "")));
        assert_eq!(
            (t.exit_code, t.reason.as_deref(), e),
            (0, Some("Completed"), Exit::Code(0))
        );
        assert_eq!(t.container_id.as_deref(), Some("containerd://abc"));
        assert_eq!(
            t.started_at.unwrap().0.timestamp_nanos_opt(),
            Some(1_700_000_000_123_456_789)
        );
        let (t, e) = term(observe(&status(CriState::ContainerExited, 137, "Error", "")));
        assert_eq!((t.exit_code, t.reason.as_deref()), (137, Some("Error")));
        assert!(lifecycle::should_restart(
            shturman_api::core::RestartPolicy::OnFailure,
            &e
        ));
        let (t, _) = term(observe(&status(CriState::ContainerExited, 2, "", "")));
        assert_eq!(t.reason.as_deref(), Some("Error"));
        let (t, e) = term(observe(&status(CriState::ContainerExited, 137, "OOMKilled", "")));
        assert_eq!((t.exit_code, t.reason.as_deref()), (137, Some("OOMKilled")));
        assert!(matches!(e, Exit::OomKilled(_)));
        // OOM with no exit code reported still reads as a kill.
        let (t, _) = term(observe(&status(CriState::ContainerExited, 0, "OOMKilled", "")));
        assert_eq!(t.exit_code, 137);
        let (t, _) = term(observe(&status(
            CriState::ContainerExited,
            128,
            START_ERROR,
            "exec: \"nope\": executable file not found in $PATH\nmore",
        )));
        assert_eq!(t.reason.as_deref(), Some(START_ERROR));
        assert_eq!(
            t.message.as_deref(),
            Some("exec: \"nope\": executable file not found in $PATH")
        );
    }

    #[test]
    fn live_states() {
        assert_eq!(
            observe(&status(CriState::ContainerRunning, 0, "", "")),
            Observed::Running {
                started: 1_700_000_000_123_456_789
            }
        );
        assert_eq!(
            observe(&status(CriState::ContainerCreated, 0, "", "")),
            Observed::Created
        );
        assert_eq!(
            observe(&status(CriState::ContainerUnknown, 0, "", "")),
            Observed::Unknown
        );
        let mut odd = status(CriState::ContainerRunning, 0, "", "");
        odd.state = 42;
        assert_eq!(observe(&odd), Observed::Unknown);
        assert_eq!(time_of(0), None);
        assert_eq!(time_of(-5), None);
    }

    #[test]
    fn lost_containers_read_like_kubelet() {
        let now = Time(chrono::Utc::now());
        let (s, e) = lost("x", None, now);
        let ContainerStateKind::Terminated(t) = s.kind() else {
            panic!()
        };
        assert_eq!(
            (t.exit_code, t.reason.as_deref()),
            (137, Some(CONTAINER_STATUS_UNKNOWN))
        );
        assert_eq!(e, Exit::Code(137));
    }

    #[test]
    fn probe_kills_keep_the_exit_and_carry_the_message() {
        use shturman_api::core::RestartPolicy;
        let Observed::Exited { state, exit } = observe(&status(CriState::ContainerExited, 137, "Error", ""))
        else {
            panic!()
        };
        let (s, e) = killed_by_probe(state, exit, "Liveness probe failed: command exited with 1");
        let t = s.terminated.unwrap();
        assert_eq!((t.exit_code, t.reason.as_deref()), (137, Some("Error")));
        assert_eq!(
            t.message.as_deref(),
            Some("Liveness probe failed: command exited with 1")
        );
        assert_eq!(t.container_id.as_deref(), Some("containerd://abc"));
        assert!(matches!(e, Exit::Unhealthy(_)));
        // Restarted under OnFailure even when it exited 0 on SIGTERM; not under Never.
        let Observed::Exited { state, exit } = observe(&status(CriState::ContainerExited, 0, "", "")) else {
            panic!()
        };
        let (_, e) = killed_by_probe(state, exit, "Startup probe failed: x");
        assert!(lifecycle::should_restart(RestartPolicy::OnFailure, &e));
        assert!(!lifecycle::should_restart(RestartPolicy::Never, &e));
        // An OOM kill wins.
        let Observed::Exited { state, exit } =
            observe(&status(CriState::ContainerExited, 137, "OOMKilled", ""))
        else {
            panic!()
        };
        let (s, e) = killed_by_probe(state, exit, "Liveness probe failed: x");
        assert_eq!(s.terminated.unwrap().reason.as_deref(), Some("OOMKilled"));
        assert!(matches!(e, Exit::OomKilled(_)));
    }

    #[test]
    fn pod_ips_primary_first() {
        assert_eq!(pod_ips(None), (None, vec![]));
        let net = PodSandboxNetworkStatus {
            ip: "10.128.0.5".into(),
            additional_ips: vec![
                CriPodIp { ip: "fd00::5".into() },
                CriPodIp {
                    ip: "10.128.0.5".into(),
                },
            ],
        };
        let (ip, ips) = pod_ips(Some(&net));
        assert_eq!(ip.as_deref(), Some("10.128.0.5"));
        let v: Vec<&str> = ips.iter().map(|p| p.ip.as_str()).collect();
        assert_eq!(v, ["10.128.0.5", "fd00::5"]);
        let empty = PodSandboxNetworkStatus::default();
        assert_eq!(pod_ips(Some(&empty)), (None, vec![]));
    }
}
