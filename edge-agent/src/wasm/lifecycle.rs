//! The pure container lifecycle: how a run ended ([`Exit`], including a kill
//! for a failed liveness or startup probe) becomes a Kubernetes `terminated` state, whether `restartPolicy` restarts it, the
//! kubelet-style back-off (`CrashLoopBackOff`), and the pod phase and
//! conditions derived from its containers. No clock, no I/O.

use std::time::Duration;

use shturman_api::core::pod_status::{ContainerStateKind, ContainerStateTerminated};
use shturman_api::core::{
    ContainerState, ContainerStatus, PodCondition, PodConditionType, PodPhase, RestartPolicy,
};
use shturman_api::meta::{ConditionStatus, Time};

/// Reason for a container that exited 0.
pub const COMPLETED: &str = "Completed";
/// Reason for a non-zero exit or a trap.
pub const ERROR: &str = "Error";
/// Reason for a container that grew its memory past its limit.
pub const OOM_KILLED: &str = "OOMKilled";
/// Waiting reason between restarts.
pub const CRASH_LOOP_BACK_OFF: &str = "CrashLoopBackOff";
/// Waiting reason while a module is fetched and compiled.
pub const CONTAINER_CREATING: &str = "ContainerCreating";
/// Waiting reason when a module cannot be fetched or fails its pin.
pub const ERR_IMAGE_PULL: &str = "ErrImagePull";
/// Waiting reason between failed fetches.
pub const IMAGE_PULL_BACK_OFF: &str = "ImagePullBackOff";
/// Waiting reason when the module does not compile or link.
pub const CREATE_CONTAINER_ERROR: &str = "CreateContainerError";
/// Waiting reason when env or volumes cannot be resolved.
pub const CREATE_CONTAINER_CONFIG_ERROR: &str = "CreateContainerConfigError";

/// How one run of a container ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// `proc_exit` / `wasi:cli/exit`, or a return from `_start` (0).
    Code(i32),
    /// A trap (unreachable, out-of-bounds access, stack overflow …).
    Trap(String),
    /// Linear memory grew past `resources.limits.memory`.
    OomKilled(String),
    /// Stopped by the agent (pod deleted or replaced).
    Killed,
    /// Killed because a liveness or startup probe failed past its threshold
    /// (the probe's message, e.g. `Liveness probe failed: …`); restarted
    /// per `restartPolicy`, as any other failure.
    Unhealthy(String),
}

impl Exit {
    /// The exit code reported: traps 1 (as wasmtime's CLI), OOM 137 and
    /// killed 137 (as a container killed with SIGKILL, also for a failed probe).
    pub fn code(&self) -> i32 {
        match self {
            Exit::Code(c) => *c,
            Exit::Trap(_) => 1,
            Exit::OomKilled(_) | Exit::Killed | Exit::Unhealthy(_) => 137,
        }
    }

    /// The `terminated` state for this exit.
    pub fn terminated(&self, started: Option<Time>, finished: Option<Time>) -> ContainerState {
        let (reason, message) = match self {
            Exit::Code(0) => (COMPLETED, None),
            Exit::Code(_) | Exit::Killed => (ERROR, None),
            Exit::Trap(m) | Exit::Unhealthy(m) => (ERROR, Some(short(m))),
            Exit::OomKilled(m) => (OOM_KILLED, Some(short(m))),
        };
        ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: self.code(),
                reason: Some(reason.into()),
                message,
                started_at: started,
                finished_at: finished,
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        }
    }
}

/// The first line of a trap message, at most 200 characters.
pub fn short(message: &str) -> String {
    let line = message.lines().next().unwrap_or("").trim();
    match line.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_string(),
    }
}

/// Whether `policy` restarts a container that ended with `exit`.
pub fn should_restart(policy: RestartPolicy, exit: &Exit) -> bool {
    match (policy, exit) {
        (_, Exit::Killed) => false,
        (RestartPolicy::Always, _) => true,
        (RestartPolicy::OnFailure, e) => e.code() != 0,
        (RestartPolicy::Never, _) => false,
    }
}

/// Kubelet's restart back-off: `base` doubling per consecutive crash up to
/// `max`; a run that lasted longer than `reset_after` starts over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(10),
            max: Duration::from_secs(300),
            reset_after: Duration::from_secs(600),
        }
    }
}

impl Backoff {
    /// The delay before restart number `crashes` (1 = first restart).
    pub fn delay(&self, crashes: u32) -> Duration {
        let doublings = crashes.saturating_sub(1).min(31);
        self.base
            .checked_mul(1u32 << doublings)
            .map_or(self.max, |d| d.min(self.max))
    }

    /// The consecutive crash count after a run of `ran` that followed `previous` crashes.
    pub fn next_crashes(&self, previous: u32, ran: Duration) -> u32 {
        if ran > self.reset_after {
            1
        } else {
            previous.saturating_add(1)
        }
    }
}

/// The waiting state shown between restarts.
pub fn back_off_state(delay: Duration, container: &str, pod: &str) -> ContainerState {
    ContainerState::waiting(
        CRASH_LOOP_BACK_OFF,
        Some(format!(
            "back-off {} restarting failed container={container} pod={pod}",
            human(delay)
        )),
    )
}

fn kind(s: &ContainerStatus) -> ContainerStateKind<'_> {
    s.state
        .as_ref()
        .map_or(ContainerStateKind::Unknown, ContainerState::kind)
}

/// `10s`, `5m0s`, or `250ms` below a second (as Go prints durations).
fn human(d: Duration) -> String {
    let secs = d.as_secs();
    match (secs, d.subsec_millis()) {
        (0, ms) => format!("{ms}ms"),
        (s, _) if s >= 60 => format!("{}m{}s", s / 60, s % 60),
        (s, _) => format!("{s}s"),
    }
}

/// The pod phase from its containers' statuses and whether each is finished
/// for good (it will not be restarted).
pub fn phase(containers: &[(ContainerStatus, bool)]) -> PodPhase {
    if containers.is_empty() {
        return PodPhase::Pending;
    }
    if containers.iter().all(|(_, done)| *done) {
        let all_ok = containers
            .iter()
            .all(|(s, _)| matches!(kind(s), ContainerStateKind::Terminated(t) if t.exit_code == 0));
        return if all_ok {
            PodPhase::Succeeded
        } else {
            PodPhase::Failed
        };
    }
    // Running once every container has started at least once (as kubelet:
    // one waiting to restart after its first run has a last state).
    let started = containers.iter().all(|(s, _)| {
        s.restart_count > 0
            || s.last_state.as_ref().is_some_and(|l| l.terminated.is_some())
            || !matches!(
                kind(s),
                ContainerStateKind::Waiting(_) | ContainerStateKind::Unknown
            )
    });
    if started {
        PodPhase::Running
    } else {
        PodPhase::Pending
    }
}

/// Whether every container is ready (each container's `ready` already says:
/// its readiness probe passes, or it runs and has none).
pub fn all_ready(containers: &[ContainerStatus]) -> bool {
    !containers.is_empty() && containers.iter().all(|c| c.ready)
}

/// The pod's conditions: scheduled and initialized since `started`, ready
/// (per [`all_ready`]) or not since `ready_changed`. Times are inputs so an
/// unchanged pod yields an identical status and is not reported again.
pub fn conditions(containers: &[ContainerStatus], started: Time, ready_changed: Time) -> Vec<PodCondition> {
    let ready = all_ready(containers);
    let cond = |t: PodConditionType, ok: bool, at: Time| PodCondition {
        type_: t,
        status: if ok {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        },
        last_probe_time: None,
        last_transition_time: Some(at),
        reason: (!ok).then(|| "ContainersNotReady".to_string()),
        message: None,
    };
    vec![
        cond(PodConditionType::PodScheduled, true, started),
        cond(PodConditionType::Initialized, true, started),
        cond(PodConditionType::ContainersReady, ready, ready_changed),
        cond(PodConditionType::Ready, ready, ready_changed),
    ]
}

/// Environment variable shortening the restart back-off's base, in
/// milliseconds (for tests: a crash loop observed in seconds, not minutes).
/// Unset, kubelet's 10 s applies; users should leave it alone. Both the
/// Wasm and the OCI runtime read it.
pub const BACKOFF_BASE_ENV: &str = "SHTURMAN_RESTART_BACKOFF_BASE_MS";

/// The default back-off with its base taken from `value` (milliseconds,
/// as read from [`BACKOFF_BASE_ENV`]) when it is a positive number.
pub fn backoff_with_base(value: Option<&str>) -> Backoff {
    let default = Backoff::default();
    match value.map(|v| v.trim().parse::<u64>()) {
        None => default,
        Some(Ok(ms)) if ms > 0 => Backoff {
            base: Duration::from_millis(ms).min(default.max),
            ..default
        },
        Some(_) => {
            tracing::warn!(
                value = value.unwrap_or_default(),
                "{BACKOFF_BASE_ENV} is not a positive number of milliseconds; using {:?}",
                default.base
            );
            default
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminated_states() {
        let t = |e: Exit| e.terminated(None, None).terminated.unwrap();
        let ok = t(Exit::Code(0));
        assert_eq!((ok.exit_code, ok.reason.as_deref()), (0, Some(COMPLETED)));
        let three = t(Exit::Code(3));
        assert_eq!((three.exit_code, three.reason.as_deref()), (3, Some(ERROR)));
        let trap = t(Exit::Trap("wasm trap: unreachable\nbacktrace…".into()));
        assert_eq!(trap.message.as_deref(), Some("wasm trap: unreachable"));
        let oom = t(Exit::OomKilled("memory limit 64Mi".into()));
        assert_eq!((oom.exit_code, oom.reason.as_deref()), (137, Some(OOM_KILLED)));
        let sick = t(Exit::Unhealthy(
            "Liveness probe failed: HTTP probe failed with statuscode: 500".into(),
        ));
        assert_eq!((sick.exit_code, sick.reason.as_deref()), (137, Some(ERROR)));
        assert_eq!(
            sick.message.as_deref(),
            Some("Liveness probe failed: HTTP probe failed with statuscode: 500")
        );
        assert_eq!(short(&"x".repeat(300)).chars().count(), 201);
    }

    #[test]
    fn restart_policies() {
        use RestartPolicy::*;
        assert!(should_restart(Always, &Exit::Code(0)));
        assert!(!should_restart(OnFailure, &Exit::Code(0)));
        assert!(should_restart(OnFailure, &Exit::Code(3)));
        assert!(should_restart(OnFailure, &Exit::OomKilled(String::new())));
        assert!(!should_restart(Never, &Exit::Trap(String::new())));
        assert!(!should_restart(Always, &Exit::Killed));
        // A container killed for a failed probe restarts as a failed one.
        let sick = Exit::Unhealthy("Liveness probe failed: x".into());
        assert!(should_restart(Always, &sick));
        assert!(should_restart(OnFailure, &sick));
        assert!(!should_restart(Never, &sick));
    }

    #[test]
    fn back_off_doubles_to_the_cap_and_resets() {
        let b = Backoff::default();
        let secs: Vec<u64> = (1..=7).map(|n| b.delay(n).as_secs()).collect();
        assert_eq!(secs, [10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(b.delay(u32::MAX), b.max);
        assert_eq!(b.next_crashes(4, Duration::from_secs(1)), 5);
        assert_eq!(b.next_crashes(4, Duration::from_secs(601)), 1);
        let w = back_off_state(b.delay(2), "c", "p").waiting.unwrap();
        assert_eq!(w.reason.as_deref(), Some(CRASH_LOOP_BACK_OFF));
        assert!(w.message.unwrap().starts_with("back-off 20s"));
        assert_eq!(human(Duration::from_secs(300)), "5m0s");
        assert_eq!(human(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn phases() {
        let st = |state: ContainerState, restarts: i32| ContainerStatus {
            state: Some(state),
            restart_count: restarts,
            ..ContainerStatus::default()
        };
        let creating = st(ContainerState::waiting(CONTAINER_CREATING, None), 0);
        let running = st(ContainerState::running(None), 0);
        let ok = st(Exit::Code(0).terminated(None, None), 0);
        let bad = st(Exit::Code(2).terminated(None, None), 0);
        let looping = st(back_off_state(Duration::from_secs(10), "c", "p"), 2);
        // After the first crash, before the first restart: it has run.
        let first_back_off = ContainerStatus {
            last_state: Some(Exit::Trap("t".into()).terminated(None, None)),
            ..st(back_off_state(Duration::from_secs(10), "c", "p"), 0)
        };
        assert_eq!(phase(&[]), PodPhase::Pending);
        assert_eq!(
            phase(&[(creating.clone(), false), (running.clone(), false)]),
            PodPhase::Pending
        );
        assert_eq!(
            phase(&[(running.clone(), false), (looping, false)]),
            PodPhase::Running
        );
        assert_eq!(
            phase(&[(running, false), (first_back_off, false)]),
            PodPhase::Running
        );
        assert_eq!(phase(&[(ok.clone(), true)]), PodPhase::Succeeded);
        assert_eq!(phase(&[(ok, true), (bad, true)]), PodPhase::Failed);
    }
}
