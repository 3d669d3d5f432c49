//! Kubernetes probes (`startupProbe`, `livenessProbe`, `readinessProbe`), as
//! kubelet's prober runs them, for any runtime.
//!
//! This module is the pure core: [`ProbeSet::of`] reads a container's probes
//! (defaults, port names, thresholds) and a [`Prober`] is the per-container
//! state machine. Time is an argument (a [`Duration`] since the container's
//! run started), so it neither sleeps nor does I/O:
//!
//! - [`Prober::next_due`] says when the next probe is due,
//! - [`Prober::take_due`] hands out the probes due now (marking them in flight),
//! - [`Prober::record`] takes a probe's [`Outcome`] and returns the
//!   [`Transition`]s it caused (`Started`, `Ready(bool)`, `Restart`).
//!
//! Kubelet's rules, as modelled here:
//!
//! - every probe waits `initialDelaySeconds` from the container's start, then
//!   runs every `periodSeconds`, each check bounded by `timeoutSeconds`;
//! - a result changes the probe's state only after `successThreshold`
//!   consecutive successes or `failureThreshold` consecutive failures;
//!   an [`Outcome::Unknown`] (the probe could not run, e.g. an unknown port
//!   name) is thrown away, as kubelet throws away a probe that errored;
//! - until the startup probe succeeds, liveness and readiness do not run
//!   (and the container is not started); after it succeeds it stops;
//! - liveness and startup start out passing, readiness failing: a
//!   container with a readiness probe is not ready until it passes; one
//!   without is ready once started;
//! - a liveness or startup probe failing past its threshold asks for a
//!   restart ([`Transition::Restart`]); the prober then holds (no more
//!   probes) until the runtime starts a new run with a new [`Prober`].
//!
//! [`check`] runs one check (tcpSocket, httpGet, exec through the [`check::Exec`]
//! trait a runtime implements) and [`run`] drives a [`Prober`] with real
//! time and checks in a task, publishing a [`ProbeView`].

pub mod check;
pub mod run;

use std::fmt;
use std::time::Duration;

use shturman_api::core::Container;
use shturman_api::core::container::{Probe, UriScheme};
use shturman_api::intstr::IntOrString;

/// Which of a container's probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

impl ProbeKind {
    /// All three, in the order they are considered.
    pub const ALL: [ProbeKind; 3] = [ProbeKind::Startup, ProbeKind::Liveness, ProbeKind::Readiness];
}

impl fmt::Display for ProbeKind {
    /// `Startup`, `Liveness`, `Readiness` (as in kubelet's event messages).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        })
    }
}

/// `http` or `https`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Scheme {
    #[default]
    Http,
    Https,
}

impl Scheme {
    /// The lower-case URL scheme.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// An `httpGet` check, its port resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpGet {
    pub scheme: Scheme,
    /// The probe's `host`; `None` means the runtime's default host (the pod IP).
    pub host: Option<String>,
    pub port: u16,
    /// The request path, with its query (default `/`).
    pub path: String,
    /// `httpHeaders`, in order.
    pub headers: Vec<(String, String)>,
}

/// What a probe checks, its port resolved against the container's ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handler {
    /// Runs a command in the container; exit 0 passes.
    Exec { command: Vec<String> },
    /// An HTTP(S) GET; 200–399 passes.
    HttpGet(HttpGet),
    /// A TCP connect; success passes. `host` `None`: the runtime's default host.
    TcpSocket { host: Option<String>, port: u16 },
    /// A gRPC health check (not supported yet: its checks are [`Outcome::Unknown`]).
    Grpc { port: i32, service: Option<String> },
    /// A probe that cannot run as written (no handler, unknown port name,
    /// port out of range): every check is [`Outcome::Unknown`] with this message.
    Invalid(String),
}

/// One probe with kubelet's defaults applied and its values bounded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeSpec {
    pub handler: Handler,
    /// `initialDelaySeconds` (default 0).
    pub initial_delay: Duration,
    /// `periodSeconds` (default 10, at least 1).
    pub period: Duration,
    /// `timeoutSeconds` (default 1, at least 1).
    pub timeout: Duration,
    /// `successThreshold` (default 1; always 1 for liveness and startup).
    pub success_threshold: u32,
    /// `failureThreshold` (default 3, at least 1).
    pub failure_threshold: u32,
}

fn seconds(value: Option<i32>, default: i32, min: i32) -> Duration {
    let s = value.unwrap_or(default).max(min);
    Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

fn count(value: Option<i32>, default: i32) -> u32 {
    u32::try_from(value.unwrap_or(default)).unwrap_or(1).max(1)
}

impl ProbeSpec {
    /// The probe `kind` of container `c` as kubelet would run it.
    pub fn of(kind: ProbeKind, probe: &Probe, c: &Container) -> ProbeSpec {
        let success_threshold = match kind {
            ProbeKind::Readiness => count(probe.success_threshold, 1),
            ProbeKind::Liveness | ProbeKind::Startup => 1,
        };
        ProbeSpec {
            handler: handler(probe, c),
            initial_delay: seconds(probe.initial_delay_seconds, 0, 0),
            period: seconds(probe.period_seconds, 10, 1),
            timeout: seconds(probe.timeout_seconds, 1, 1),
            success_threshold,
            failure_threshold: count(probe.failure_threshold, 3),
        }
    }
}

/// A probe's port: a number, or the name of one of the container's ports.
pub fn resolve_port(port: &IntOrString, c: &Container) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => c
            .ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port)
            .ok_or_else(|| format!("the container has no port named {name:?}"))?,
    };
    u16::try_from(number)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("port {number} is out of range (1-65535)"))
}

fn handler(probe: &Probe, c: &Container) -> Handler {
    let port = |p: &IntOrString| resolve_port(p, c);
    if let Some(e) = &probe.exec {
        return Handler::Exec {
            command: e.command.clone(),
        };
    }
    if let Some(h) = &probe.http_get {
        return match port(&h.port) {
            Ok(port) => Handler::HttpGet(HttpGet {
                scheme: match h.scheme.unwrap_or_default() {
                    UriScheme::Http => Scheme::Http,
                    UriScheme::Https => Scheme::Https,
                },
                host: h.host.clone().filter(|s| !s.is_empty()),
                port,
                path: match h.path.as_deref() {
                    None | Some("") => "/".to_string(),
                    Some(p) if p.starts_with('/') => p.to_string(),
                    Some(p) => format!("/{p}"),
                },
                headers: h
                    .http_headers
                    .iter()
                    .map(|x| (x.name.clone(), x.value.clone()))
                    .collect(),
            }),
            Err(m) => Handler::Invalid(m),
        };
    }
    if let Some(t) = &probe.tcp_socket {
        return match port(&t.port) {
            Ok(port) => Handler::TcpSocket {
                host: t.host.clone().filter(|s| !s.is_empty()),
                port,
            },
            Err(m) => Handler::Invalid(m),
        };
    }
    if let Some(g) = &probe.grpc {
        return Handler::Grpc {
            port: g.port,
            service: g.service.clone(),
        };
    }
    Handler::Invalid("the probe has no handler (exec, httpGet, tcpSocket or grpc)".into())
}

/// A container's probes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProbeSet {
    pub startup: Option<ProbeSpec>,
    pub liveness: Option<ProbeSpec>,
    pub readiness: Option<ProbeSpec>,
}

impl ProbeSet {
    /// The probes of container `c`.
    pub fn of(c: &Container) -> ProbeSet {
        let spec = |kind, p: &Option<Probe>| p.as_ref().map(|p| ProbeSpec::of(kind, p, c));
        ProbeSet {
            startup: spec(ProbeKind::Startup, &c.startup_probe),
            liveness: spec(ProbeKind::Liveness, &c.liveness_probe),
            readiness: spec(ProbeKind::Readiness, &c.readiness_probe),
        }
    }

    /// No probe at all: nothing to run (the container is started and ready
    /// while it runs).
    pub fn is_empty(&self) -> bool {
        self.startup.is_none() && self.liveness.is_none() && self.readiness.is_none()
    }

    /// The probe of one kind.
    pub fn get(&self, kind: ProbeKind) -> Option<&ProbeSpec> {
        match kind {
            ProbeKind::Startup => self.startup.as_ref(),
            ProbeKind::Liveness => self.liveness.as_ref(),
            ProbeKind::Readiness => self.readiness.as_ref(),
        }
    }
}

/// The result of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Passed, with a note (e.g. an HTTP redirect to another host, not followed).
    Warning(String),
    /// Failed, with why (`HTTP probe failed with statuscode: 500`).
    Failure(String),
    /// Could not be run (unsupported handler, unknown port name): not counted.
    Unknown(String),
}

impl Outcome {
    /// `Some(true)` passed, `Some(false)` failed, `None` not counted.
    pub fn passed(&self) -> Option<bool> {
        match self {
            Outcome::Success | Outcome::Warning(_) => Some(true),
            Outcome::Failure(_) => Some(false),
            Outcome::Unknown(_) => None,
        }
    }
}

/// A failed liveness or startup probe asks for the container to be killed
/// and restarted (per its pod's `restartPolicy`, with back-off).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestartRequest {
    /// [`ProbeKind::Liveness`] or [`ProbeKind::Startup`].
    pub probe: ProbeKind,
    /// What kubelet's `Unhealthy` event says, e.g.
    /// `Liveness probe failed: HTTP probe failed with statuscode: 500`.
    pub message: String,
}

/// A change of a container's probe view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    /// The startup probe passed (liveness and readiness begin).
    Started,
    /// The container became ready or not.
    Ready(bool),
    /// Kill and restart the container.
    Restart(RestartRequest),
}

/// What the probes say about one run of a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeView {
    /// `started`: no startup probe, or it has passed.
    pub started: bool,
    /// `ready`: started, and the readiness probe (if any) passes.
    pub ready: bool,
    /// Set once a liveness or startup probe failed past its threshold.
    pub restart: Option<RestartRequest>,
}

impl ProbeView {
    /// The view of a running container without probes: started and ready.
    pub const NO_PROBES: ProbeView = ProbeView {
        started: true,
        ready: true,
        restart: None,
    };
}

/// One probe's schedule and counts.
#[derive(Clone, Debug)]
struct Slot {
    spec: ProbeSpec,
    /// When it is next due, since the run started.
    next: Duration,
    in_flight: bool,
    /// The last counted result and how many times in a row.
    last: Option<bool>,
    run: u32,
    /// The probe's current state (kubelet's result): liveness and startup
    /// start passing, readiness failing.
    passing: bool,
}

impl Slot {
    fn new(spec: ProbeSpec, passing: bool) -> Slot {
        Slot {
            next: spec.initial_delay,
            spec,
            in_flight: false,
            last: None,
            run: 0,
            passing,
        }
    }

    /// Marks it taken at `now`: the next check one period after this one was
    /// due, or one period from now when it ran late (gated, or a slow check).
    fn take(&mut self, now: Duration) {
        self.in_flight = true;
        let late = now.saturating_sub(self.next);
        self.next = if late < self.spec.period {
            self.next.saturating_add(self.spec.period)
        } else {
            now.saturating_add(self.spec.period)
        };
    }

    /// Counts a result; the new state if it reached its threshold.
    fn count(&mut self, passed: bool) -> Option<bool> {
        if self.last == Some(passed) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(passed);
            self.run = 1;
        }
        let threshold = if passed {
            self.spec.success_threshold
        } else {
            self.spec.failure_threshold
        };
        (self.run >= threshold).then(|| {
            self.passing = passed;
            passed
        })
    }
}

/// The prober of one run of one container (see the module docs).
#[derive(Clone, Debug)]
pub struct Prober {
    startup: Option<Slot>,
    liveness: Option<Slot>,
    readiness: Option<Slot>,
    restart: Option<RestartRequest>,
}

impl Prober {
    /// A prober for a run that has just started (time zero).
    pub fn new(set: ProbeSet) -> Prober {
        Prober {
            startup: set.startup.map(|s| Slot::new(s, false)),
            liveness: set.liveness.map(|s| Slot::new(s, true)),
            readiness: set.readiness.map(|s| Slot::new(s, false)),
            restart: None,
        }
    }

    fn slot(&self, kind: ProbeKind) -> Option<&Slot> {
        match kind {
            ProbeKind::Startup => self.startup.as_ref(),
            ProbeKind::Liveness => self.liveness.as_ref(),
            ProbeKind::Readiness => self.readiness.as_ref(),
        }
    }

    fn slot_mut(&mut self, kind: ProbeKind) -> Option<&mut Slot> {
        match kind {
            ProbeKind::Startup => self.startup.as_mut(),
            ProbeKind::Liveness => self.liveness.as_mut(),
            ProbeKind::Readiness => self.readiness.as_mut(),
        }
    }

    /// The probe of one kind, if the container has it.
    pub fn spec(&self, kind: ProbeKind) -> Option<&ProbeSpec> {
        self.slot(kind).map(|s| &s.spec)
    }

    /// Whether the container has started: no startup probe, or it passed.
    pub fn started(&self) -> bool {
        self.startup.as_ref().is_none_or(|s| s.passing)
    }

    /// The current view.
    pub fn view(&self) -> ProbeView {
        let started = self.started();
        ProbeView {
            started,
            ready: started && self.restart.is_none() && self.readiness.as_ref().is_none_or(|s| s.passing),
            restart: self.restart.clone(),
        }
    }

    /// Whether a probe may run now (present, not in flight, not gated, not held).
    fn active(&self, kind: ProbeKind) -> bool {
        let Some(slot) = self.slot(kind) else {
            return false;
        };
        let gate = match kind {
            ProbeKind::Startup => !self.started(),
            ProbeKind::Liveness | ProbeKind::Readiness => self.started(),
        };
        gate && !slot.in_flight && self.restart.is_none()
    }

    /// When the next probe is due (since the run started); `None` when
    /// nothing will be due until a check in flight reports (or ever).
    pub fn next_due(&self) -> Option<Duration> {
        ProbeKind::ALL
            .into_iter()
            .filter(|k| self.active(*k))
            .filter_map(|k| self.slot(k).map(|s| s.next))
            .min()
    }

    /// The probes due at `now`, marked in flight: run each, then
    /// [`record`](Prober::record) its outcome.
    pub fn take_due(&mut self, now: Duration) -> Vec<ProbeKind> {
        let due: Vec<ProbeKind> = ProbeKind::ALL
            .into_iter()
            .filter(|k| self.active(*k) && self.slot(*k).is_some_and(|s| s.next <= now))
            .collect();
        for k in &due {
            if let Some(s) = self.slot_mut(*k) {
                s.take(now);
            }
        }
        due
    }

    /// Records the outcome of a `kind` check and returns what changed.
    /// Results that arrive after a restart was asked for are thrown away.
    pub fn record(&mut self, kind: ProbeKind, outcome: &Outcome) -> Vec<Transition> {
        let before = self.view();
        let held = self.restart.is_some();
        let Some(slot) = self.slot_mut(kind) else {
            return Vec::new();
        };
        slot.in_flight = false;
        let Some(passed) = outcome.passed() else {
            return Vec::new();
        };
        if held {
            return Vec::new();
        }
        if slot.count(passed) == Some(false) && kind != ProbeKind::Readiness {
            let detail = match outcome {
                Outcome::Failure(m) | Outcome::Warning(m) | Outcome::Unknown(m) => m.as_str(),
                Outcome::Success => "",
            };
            // Held until a new run: its counts start over then.
            slot.run = 0;
            self.restart = Some(RestartRequest {
                probe: kind,
                message: format!("{kind} probe failed: {detail}"),
            });
        }
        let after = self.view();
        let mut out = Vec::new();
        if after.started && !before.started {
            out.push(Transition::Started);
        }
        if after.ready != before.ready {
            out.push(Transition::Ready(after.ready));
        }
        if let (Some(r), None) = (&after.restart, &before.restart) {
            out.push(Transition::Restart(r.clone()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shturman_api::core::ContainerPort;
    use shturman_api::core::container::{ExecAction, HttpGetAction, HttpHeader, TcpSocketAction};

    const S: Duration = Duration::from_secs(1);

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn spec(period: u64, delay: u64, success: u32, failure: u32) -> ProbeSpec {
        ProbeSpec {
            handler: Handler::TcpSocket { host: None, port: 80 },
            initial_delay: secs(delay),
            period: secs(period),
            timeout: S,
            success_threshold: success,
            failure_threshold: failure,
        }
    }

    fn fail() -> Outcome {
        Outcome::Failure("HTTP probe failed with statuscode: 500".into())
    }

    /// Takes `kind` at `now` (it must be the only probe due) and records `outcome`.
    fn probe(p: &mut Prober, now: Duration, kind: ProbeKind, outcome: Outcome) -> Vec<Transition> {
        assert_eq!(p.take_due(now), [kind], "due at {now:?}");
        p.record(kind, &outcome)
    }

    #[test]
    fn no_probes_means_started_and_ready_and_nothing_due() {
        let c = Container {
            name: "c".into(),
            ..Container::default()
        };
        let set = ProbeSet::of(&c);
        assert!(set.is_empty());
        let mut p = Prober::new(set);
        assert_eq!(p.view(), ProbeView::NO_PROBES);
        assert_eq!(p.next_due(), None);
        assert!(p.take_due(secs(1000)).is_empty());
        assert!(p.record(ProbeKind::Liveness, &fail()).is_empty());
    }

    #[test]
    fn readiness_waits_its_initial_delay_and_counts_thresholds() {
        let mut p = Prober::new(ProbeSet {
            readiness: Some(spec(10, 5, 2, 3)),
            ..ProbeSet::default()
        });
        let v = p.view();
        assert!(v.started && !v.ready, "a readiness probe starts failing");
        assert_eq!(p.next_due(), Some(secs(5)));
        assert!(p.take_due(secs(4)).is_empty());
        // Two successes in a row make it ready (successThreshold 2).
        assert!(probe(&mut p, secs(5), ProbeKind::Readiness, Outcome::Success).is_empty());
        assert_eq!(p.next_due(), Some(secs(15)));
        assert_eq!(
            probe(&mut p, secs(15), ProbeKind::Readiness, Outcome::Success),
            [Transition::Ready(true)]
        );
        // Two failures, a success (the run starts over), then three failures.
        assert!(probe(&mut p, secs(25), ProbeKind::Readiness, fail()).is_empty());
        assert!(probe(&mut p, secs(35), ProbeKind::Readiness, fail()).is_empty());
        assert!(probe(&mut p, secs(45), ProbeKind::Readiness, Outcome::Success).is_empty());
        assert!(probe(&mut p, secs(55), ProbeKind::Readiness, fail()).is_empty());
        assert!(probe(&mut p, secs(65), ProbeKind::Readiness, fail()).is_empty());
        assert_eq!(
            probe(&mut p, secs(75), ProbeKind::Readiness, fail()),
            [Transition::Ready(false)]
        );
        assert!(!p.view().ready);
        // Readiness never restarts anything.
        assert!(probe(&mut p, secs(85), ProbeKind::Readiness, fail()).is_empty());
        assert_eq!(p.view().restart, None);
        // A warning passes.
        assert!(
            probe(
                &mut p,
                secs(95),
                ProbeKind::Readiness,
                Outcome::Warning("redirect".into())
            )
            .is_empty()
        );
        assert_eq!(
            probe(&mut p, secs(105), ProbeKind::Readiness, Outcome::Success),
            [Transition::Ready(true)]
        );
    }

    #[test]
    fn unknown_outcomes_are_not_counted() {
        let mut p = Prober::new(ProbeSet {
            liveness: Some(spec(1, 0, 1, 2)),
            readiness: Some(spec(1, 0, 1, 1)),
            ..ProbeSet::default()
        });
        for t in 0..10 {
            let due = p.take_due(secs(t));
            assert_eq!(due, [ProbeKind::Liveness, ProbeKind::Readiness]);
            for k in due {
                assert!(
                    p.record(k, &Outcome::Unknown("no port named \"x\"".into()))
                        .is_empty()
                );
            }
        }
        // Liveness keeps passing (no restart), readiness keeps failing.
        assert_eq!(
            p.view(),
            ProbeView {
                started: true,
                ready: false,
                restart: None
            }
        );
    }

    #[test]
    fn a_check_in_flight_is_not_due_again_and_late_checks_reschedule_from_now() {
        let mut p = Prober::new(ProbeSet {
            liveness: Some(spec(10, 0, 1, 3)),
            ..ProbeSet::default()
        });
        assert_eq!(p.take_due(Duration::ZERO), [ProbeKind::Liveness]);
        assert_eq!(p.next_due(), None, "in flight");
        assert!(p.take_due(secs(100)).is_empty());
        p.record(ProbeKind::Liveness, &Outcome::Success);
        // The tick at 10 s was missed: the next is a period after it ran.
        assert_eq!(p.next_due(), Some(secs(10)));
        assert_eq!(p.take_due(secs(100)), [ProbeKind::Liveness]);
        p.record(ProbeKind::Liveness, &Outcome::Success);
        assert_eq!(p.next_due(), Some(secs(110)));
        // On time (a few ms late), the schedule does not drift.
        assert_eq!(
            p.take_due(secs(110) + Duration::from_millis(3)),
            [ProbeKind::Liveness]
        );
        p.record(ProbeKind::Liveness, &Outcome::Success);
        assert_eq!(p.next_due(), Some(secs(120)));
    }

    #[test]
    fn startup_gates_liveness_and_readiness() {
        let mut p = Prober::new(ProbeSet {
            startup: Some(spec(1, 0, 1, 30)),
            liveness: Some(spec(10, 0, 1, 1)),
            readiness: Some(spec(10, 0, 1, 1)),
        });
        let v = p.view();
        assert!(!v.started && !v.ready);
        for t in 0..5 {
            assert!(probe(&mut p, secs(t), ProbeKind::Startup, fail()).is_empty());
        }
        assert_eq!(
            probe(&mut p, secs(5), ProbeKind::Startup, Outcome::Success),
            [Transition::Started]
        );
        // The others were held back: due at once, and startup never again.
        assert_eq!(p.next_due(), Some(Duration::ZERO));
        assert_eq!(p.take_due(secs(5)), [ProbeKind::Liveness, ProbeKind::Readiness]);
        assert_eq!(p.record(ProbeKind::Liveness, &Outcome::Success), []);
        assert_eq!(
            p.record(ProbeKind::Readiness, &Outcome::Success),
            [Transition::Ready(true)]
        );
        // Less than a period late: they keep their grid (as kubelet's tickers).
        assert_eq!(p.next_due(), Some(secs(10)));
        assert_eq!(p.take_due(secs(10)), [ProbeKind::Liveness, ProbeKind::Readiness]);
    }

    #[test]
    fn startup_without_readiness_makes_ready_when_started() {
        let mut p = Prober::new(ProbeSet {
            startup: Some(spec(1, 2, 1, 3)),
            ..ProbeSet::default()
        });
        assert_eq!(p.next_due(), Some(secs(2)));
        assert_eq!(
            probe(&mut p, secs(2), ProbeKind::Startup, Outcome::Success),
            [Transition::Started, Transition::Ready(true)]
        );
        assert_eq!(p.next_due(), None, "the startup probe has done its job");
    }

    #[test]
    fn startup_failing_past_its_threshold_restarts() {
        let mut p = Prober::new(ProbeSet {
            startup: Some(spec(1, 0, 1, 3)),
            readiness: Some(spec(1, 0, 1, 1)),
            ..ProbeSet::default()
        });
        assert!(probe(&mut p, secs(0), ProbeKind::Startup, fail()).is_empty());
        assert!(probe(&mut p, secs(1), ProbeKind::Startup, fail()).is_empty());
        let t = probe(
            &mut p,
            secs(2),
            ProbeKind::Startup,
            Outcome::Failure("dial tcp: refused".into()),
        );
        let want = RestartRequest {
            probe: ProbeKind::Startup,
            message: "Startup probe failed: dial tcp: refused".into(),
        };
        assert_eq!(t, [Transition::Restart(want.clone())]);
        assert_eq!(p.view().restart, Some(want));
        assert!(!p.view().started);
        assert_eq!(p.next_due(), None);
    }

    #[test]
    fn liveness_failing_past_its_threshold_restarts_and_holds() {
        let mut p = Prober::new(ProbeSet {
            liveness: Some(spec(1, 0, 1, 3)),
            readiness: Some(spec(1, 0, 1, 1)),
            ..ProbeSet::default()
        });
        let both = |p: &mut Prober, t: u64, live: Outcome| {
            assert_eq!(p.take_due(secs(t)), [ProbeKind::Liveness, ProbeKind::Readiness]);
            let mut out = p.record(ProbeKind::Readiness, &Outcome::Success);
            out.extend(p.record(ProbeKind::Liveness, &live));
            out
        };
        assert_eq!(both(&mut p, 0, fail()), [Transition::Ready(true)]);
        assert!(both(&mut p, 1, fail()).is_empty());
        // A success in between starts the count over.
        assert!(both(&mut p, 2, Outcome::Success).is_empty());
        assert!(both(&mut p, 3, fail()).is_empty());
        assert!(both(&mut p, 4, fail()).is_empty());
        let t = both(&mut p, 5, fail());
        let want = RestartRequest {
            probe: ProbeKind::Liveness,
            message: "Liveness probe failed: HTTP probe failed with statuscode: 500".into(),
        };
        assert_eq!(t, [Transition::Ready(false), Transition::Restart(want.clone())]);
        let v = p.view();
        assert_eq!((v.started, v.ready, v.restart), (true, false, Some(want)));
        // Held: nothing is due, late results change nothing.
        assert_eq!(p.next_due(), None);
        assert!(p.take_due(secs(100)).is_empty());
        assert!(p.record(ProbeKind::Readiness, &Outcome::Success).is_empty());
        assert!(p.record(ProbeKind::Liveness, &Outcome::Success).is_empty());
    }

    #[test]
    fn liveness_and_startup_success_threshold_is_one() {
        let c = Container {
            name: "c".into(),
            liveness_probe: Some(Probe {
                tcp_socket: Some(TcpSocketAction {
                    port: 80.into(),
                    host: None,
                }),
                success_threshold: Some(3),
                ..Probe::default()
            }),
            readiness_probe: Some(Probe {
                tcp_socket: Some(TcpSocketAction {
                    port: 80.into(),
                    host: None,
                }),
                success_threshold: Some(3),
                ..Probe::default()
            }),
            ..Container::default()
        };
        let set = ProbeSet::of(&c);
        assert_eq!(set.liveness.unwrap().success_threshold, 1);
        assert_eq!(set.readiness.unwrap().success_threshold, 3);
    }

    #[test]
    fn specs_take_kubelets_defaults_and_resolve_ports() {
        let c = Container {
            name: "web".into(),
            ports: vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..ContainerPort::default()
            }],
            liveness_probe: Some(Probe {
                http_get: Some(HttpGetAction {
                    path: Some("healthz?full=1".into()),
                    port: IntOrString::String("http".into()),
                    host: None,
                    scheme: Some(UriScheme::Https),
                    http_headers: vec![HttpHeader {
                        name: "X-Probe".into(),
                        value: "1".into(),
                    }],
                }),
                ..Probe::default()
            }),
            readiness_probe: Some(Probe {
                tcp_socket: Some(TcpSocketAction {
                    port: IntOrString::String("grpc".into()),
                    host: None,
                }),
                period_seconds: Some(-4),
                timeout_seconds: Some(0),
                failure_threshold: Some(0),
                initial_delay_seconds: Some(-1),
                ..Probe::default()
            }),
            startup_probe: Some(Probe {
                exec: Some(ExecAction {
                    command: vec!["true".into()],
                }),
                initial_delay_seconds: Some(7),
                ..Probe::default()
            }),
            ..Container::default()
        };
        let set = ProbeSet::of(&c);
        let live = set.liveness.unwrap();
        assert_eq!(
            live.handler,
            Handler::HttpGet(HttpGet {
                scheme: Scheme::Https,
                host: None,
                port: 8080,
                path: "/healthz?full=1".into(),
                headers: vec![("X-Probe".into(), "1".into())],
            })
        );
        assert_eq!(
            (
                live.period,
                live.timeout,
                live.success_threshold,
                live.failure_threshold,
                live.initial_delay
            ),
            (secs(10), S, 1, 3, Duration::ZERO)
        );
        let ready = set.readiness.unwrap();
        assert!(
            matches!(&ready.handler, Handler::Invalid(m) if m.contains("\"grpc\"")),
            "{ready:?}"
        );
        assert_eq!(
            (
                ready.period,
                ready.timeout,
                ready.failure_threshold,
                ready.initial_delay
            ),
            (S, S, 1, Duration::ZERO),
            "out-of-range values are bounded, never a panic"
        );
        let start = set.startup.unwrap();
        assert_eq!(
            start.handler,
            Handler::Exec {
                command: vec!["true".into()]
            }
        );
        assert_eq!(start.initial_delay, secs(7));
        assert_eq!(
            resolve_port(&IntOrString::Int(70000), &c),
            Err("port 70000 is out of range (1-65535)".into())
        );
        let none = ProbeSpec::of(ProbeKind::Liveness, &Probe::default(), &c);
        assert!(matches!(none.handler, Handler::Invalid(_)));
    }
}
