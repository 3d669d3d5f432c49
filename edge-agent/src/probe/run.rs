//! The probe task of one run of one container: it drives a [`Prober`] with
//! real time (tokio's clock) and real checks ([`check::check`]), each check
//! in its own subtask so a slow one never delays the others, and publishes
//! the container's [`ProbeView`] through a `tokio::sync::watch`, raising the
//! runtime's `changed` signal on every transition so the agent reports it at
//! once.
//!
//! A container without probes gets no task at all ([`spawn`] returns
//! `None`; its view is [`ProbeView::NO_PROBES`] while it runs), so a node
//! with a thousand probe-less pods pays nothing. A runtime uses it so:
//!
//! 1. when a container's run starts: `let mut probes = spawn(ProbeSet::of(&c), target, changed, pod)`;
//! 2. its status: [`view_of`] the [`ProbeRun::subscribe`]d receiver, or the
//!    run's [`ProbeRun::view`] (`started`, `ready`);
//! 3. while the run lasts, also wait on [`restart_requested`]: when it
//!    resolves, kill the container and restart it per `restartPolicy` with
//!    back-off (its last state `terminated`, reason `Error`, with the
//!    request's message);
//! 4. when the run ends, drop the [`ProbeRun`] (that stops the task); the
//!    next run gets a new one (its startup probe runs again, readiness
//!    starts failing again, as kubelet does for a new container).

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{Notify, watch};
use tokio::task::{Id, JoinHandle, JoinSet};
use tokio::time::Instant;

use super::check::{self, Target};
use super::{Outcome, ProbeKind, ProbeSet, ProbeView, Prober, RestartRequest, Transition};

/// The probe task of one container run; dropping it stops the task.
#[derive(Debug)]
pub struct ProbeRun {
    view: watch::Receiver<ProbeView>,
    task: JoinHandle<()>,
}

/// Starts probing a container run that has just started, on the current
/// tokio runtime; `None` (and no task) when it has no probes. `pod` names
/// the pod in log lines (`namespace/name`).
pub fn spawn(probes: ProbeSet, target: Target, changed: Arc<Notify>, pod: &str) -> Option<ProbeRun> {
    if probes.is_empty() {
        return None;
    }
    let prober = Prober::new(probes);
    let (tx, view) = watch::channel(prober.view());
    let task = tokio::spawn(drive(prober, Arc::new(target), tx, changed, pod.to_string()));
    Some(ProbeRun { view, task })
}

impl ProbeRun {
    /// The current view.
    pub fn view(&self) -> ProbeView {
        self.view.borrow().clone()
    }

    /// A receiver of the view, e.g. for the runtime's `status`.
    pub fn subscribe(&self) -> watch::Receiver<ProbeView> {
        self.view.clone()
    }

    /// Resolves once a liveness or startup probe asks for a restart.
    pub async fn restart_requested(&mut self) -> RestartRequest {
        loop {
            if let Some(r) = self.view.borrow_and_update().restart.clone() {
                return r;
            }
            if self.view.changed().await.is_err() {
                // The task ended without asking (nothing left to probe).
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Drop for ProbeRun {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// [`ProbeRun::restart_requested`], or never for a run without probes
/// (handy in a `select!` beside the container's run).
pub async fn restart_requested(run: Option<&mut ProbeRun>) -> RestartRequest {
    match run {
        Some(run) => run.restart_requested().await,
        None => std::future::pending().await,
    }
}

/// A container's view from its run's receiver (none: no probes).
pub fn view_of(rx: Option<&watch::Receiver<ProbeView>>) -> ProbeView {
    rx.map_or(ProbeView::NO_PROBES, |rx| rx.borrow().clone())
}

/// Logs each failure once per distinct message (kubelet records an
/// `Unhealthy` event for each; the agent has no event path yet).
#[derive(Default)]
struct FailureLog(HashMap<ProbeKind, String>);

impl FailureLog {
    fn note(&mut self, pod: &str, container: &str, kind: ProbeKind, outcome: &Outcome) {
        let (message, errored) = match outcome {
            Outcome::Success => {
                self.0.remove(&kind);
                return;
            }
            Outcome::Warning(m) => {
                tracing::debug!(pod, container, "{kind} probe warning: {m}");
                self.0.remove(&kind);
                return;
            }
            Outcome::Failure(m) => (m, false),
            Outcome::Unknown(m) => (m, true),
        };
        let text = if errored {
            format!("{kind} probe errored: {message}")
        } else {
            format!("{kind} probe failed: {message}")
        };
        if self.0.get(&kind) == Some(&text) {
            tracing::debug!(pod, container, reason = "Unhealthy", "{text}");
        } else {
            tracing::warn!(pod, container, reason = "Unhealthy", "{text}");
            self.0.insert(kind, text);
        }
    }
}

fn log_transition(pod: &str, container: &str, t: &Transition) {
    match t {
        Transition::Started => tracing::info!(pod, container, "container started (startup probe passed)"),
        Transition::Ready(ready) => tracing::info!(pod, container, ready, "container readiness changed"),
        Transition::Restart(r) => {
            let probe = match r.probe {
                ProbeKind::Startup => "startup",
                ProbeKind::Liveness | ProbeKind::Readiness => "liveness",
            };
            tracing::warn!(
                pod,
                container,
                reason = "Killing",
                "Container {container} failed {probe} probe, will be restarted"
            );
        }
    }
}

/// What a check task returns.
type Checked = (ProbeKind, Outcome);

/// A finished check: its kind and outcome (a check task that panicked or
/// was cancelled counts as unknown); `None` for nothing to record.
fn finished(
    done: Option<Result<(Id, Checked), tokio::task::JoinError>>,
    running: &mut HashMap<Id, ProbeKind>,
) -> Option<Checked> {
    match done? {
        Ok((id, result)) => {
            running.remove(&id);
            Some(result)
        }
        Err(e) => running
            .remove(&e.id())
            .map(|kind| (kind, Outcome::Unknown(format!("the check did not finish: {e}")))),
    }
}

async fn drive(
    mut prober: Prober,
    target: Arc<Target>,
    tx: watch::Sender<ProbeView>,
    changed: Arc<Notify>,
    pod: String,
) {
    let start = Instant::now();
    let mut checks: JoinSet<Checked> = JoinSet::new();
    let mut running: HashMap<Id, ProbeKind> = HashMap::new();
    let mut failures = FailureLog::default();
    loop {
        for kind in prober.take_due(start.elapsed()) {
            let Some(spec) = prober.spec(kind) else {
                continue;
            };
            let (handler, timeout, target) = (spec.handler.clone(), spec.timeout, target.clone());
            let task = checks.spawn(async move { (kind, check::check(&handler, timeout, &target).await) });
            running.insert(task.id(), kind);
        }
        let next = prober.next_due();
        let done = tokio::select! {
            done = checks.join_next_with_id(), if !checks.is_empty() => finished(done, &mut running),
            () = tokio::time::sleep_until(start + next.unwrap_or_default()), if next.is_some() => None,
            // Nothing due and nothing in flight: held after a restart request,
            // or only a startup probe that has passed. The view stays as is.
            else => return,
        };
        let Some((kind, outcome)) = done else {
            continue;
        };
        failures.note(&pod, &target.container, kind, &outcome);
        let transitions = prober.record(kind, &outcome);
        if transitions.is_empty() {
            continue;
        }
        for t in &transitions {
            log_transition(&pod, &target.container, t);
        }
        tx.send_replace(prober.view());
        changed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::TcpListener;

    use super::*;
    use crate::probe::check::Unsupported;
    use crate::probe::{Handler, ProbeSpec};

    const DEADLINE: Duration = Duration::from_secs(10);

    fn target() -> Target {
        Target {
            host: "127.0.0.1".into(),
            container: "main".into(),
            exec: Arc::new(Unsupported("no exec in tests")),
        }
    }

    fn tcp(port: u16, failure_threshold: u32) -> ProbeSpec {
        ProbeSpec {
            handler: Handler::TcpSocket { host: None, port },
            initial_delay: Duration::ZERO,
            period: Duration::from_millis(30),
            timeout: Duration::from_secs(1),
            success_threshold: 1,
            failure_threshold,
        }
    }

    /// Waits (with a deadline) for the view to satisfy `ok`, woken by `changed`.
    async fn until(run: &ProbeRun, changed: &Notify, what: &str, ok: impl Fn(&ProbeView) -> bool) {
        let wait = async {
            while !ok(&run.view()) {
                changed.notified().await;
            }
        };
        assert!(
            tokio::time::timeout(DEADLINE, wait).await.is_ok(),
            "timed out waiting for {what}: {:?}",
            run.view()
        );
    }

    #[tokio::test]
    async fn no_probes_no_task() {
        let run = spawn(ProbeSet::default(), target(), Arc::default(), "default/p");
        assert!(run.is_none());
        assert_eq!(view_of(None), ProbeView::NO_PROBES);
        let never = tokio::time::timeout(Duration::from_millis(50), restart_requested(None)).await;
        assert!(never.is_err());
    }

    #[tokio::test]
    async fn readiness_follows_a_listener_and_raises_changed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let changed = Arc::new(Notify::new());
        let set = ProbeSet {
            readiness: Some(tcp(port, 1)),
            ..ProbeSet::default()
        };
        let run = spawn(set, target(), changed.clone(), "default/p").unwrap();
        let rx = run.subscribe();
        assert!(!view_of(Some(&rx)).ready, "not ready before the first check");
        until(&run, &changed, "ready", |v| v.ready).await;
        assert!(view_of(Some(&rx)).ready);
        drop(listener);
        until(&run, &changed, "not ready", |v| !v.ready).await;
        assert_eq!(run.view().restart, None);
    }

    #[tokio::test]
    async fn liveness_failures_ask_for_a_restart_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let changed = Arc::new(Notify::new());
        let set = ProbeSet {
            liveness: Some(tcp(port, 2)),
            ..ProbeSet::default()
        };
        let mut run = spawn(set, target(), changed.clone(), "default/p").unwrap();
        let r = tokio::time::timeout(DEADLINE, run.restart_requested())
            .await
            .unwrap();
        assert_eq!(r.probe, ProbeKind::Liveness);
        let want = format!("Liveness probe failed: dial tcp 127.0.0.1:{port}: ");
        assert!(r.message.starts_with(&want), "{r:?}");
        // Asked again, it answers the same (the view keeps it).
        assert_eq!(run.restart_requested().await, r);
        let v = run.view();
        assert!(v.started && !v.ready);
    }
}
