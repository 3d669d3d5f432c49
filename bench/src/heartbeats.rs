//! Heartbeat ingest: the real release `shturman control` (sled store,
//! embedded broker; or, as a second data point, an external Mosquitto with
//! `--mqtt-url`), N simulated nodes (`shturman_e2e::sim::fleet`) joined
//! with a real join token and heartbeating every period over real MQTT
//! connections, and the control plane's CPU (utime + stime from
//! `/proc/<pid>/stat` over a measured window, as % of one core) and memory
//! (VmRSS at the end, VmHWM peak) — next to the same process idle with no
//! nodes, measured first in the same run. With Mosquitto, the broker's own
//! CPU and memory are reported too (the embedded broker's are inside the
//! control plane's figures). Heartbeats applied are checked in the store,
//! through the API: every node's Ready `lastHeartbeatTime` before and after
//! the window (a heartbeat that changes nothing is written at most every
//! two periods, as the gateway's ingest explains, so "applied" counts the
//! beats the stored times cover).
//!
//! The simulator runs on the same cores; its CPU is reported too, so the
//! reader can judge contention.
//!
//! Joining is quadratic in rumqttd 0.20's router: an uncached topic is
//! matched against every filter (`DataLog::matches`), a new filter against
//! every known topic (`next_native_offset`) and every retained message
//! (`read_retained_messages`), and each node brings 3 filters and 5 topics.
//! A fast ramp saturates the router thread, CONNACKs take longer than
//! rumqttc's 5 s connect timeout and nodes fall into reconnect storms.
//! Measured on 2 cores: 10,000 nodes at 50 connects/s joined Mosquitto in
//! 200 s (the ramp itself), while on the embedded broker joins fell behind
//! from about 5,000 nodes and only 7,498 had joined after 320 s. So the
//! 10,000-node figure comes from Mosquitto by default
//! (`--fleet-mosquitto-nodes`), the embedded broker's stop at 5,000.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;
use shturman_control::tokens::{JoinToken, SYSTEM_NAMESPACE};
use shturman_e2e::sim::fleet::{Fleet, FleetConfig, Snapshot};

use crate::broker::{ExternalControl, Mosquitto};
use crate::report::{Report, Row};
use crate::spawn::Control;

/// The goal of issues 4 and 9, at 10,000 nodes.
const GOAL_NODES: usize = 10_000;
const GOAL_CPU_PERCENT: f64 = 25.0;
const GOAL_RSS_MIB: f64 = 200.0;
/// A node counts as fresh when its stored heartbeat is at most this much
/// older than two periods (the longest a quiet beat goes unwritten), for
/// seconds-precision timestamps plus ingest lag.
const FRESH_SLACK: Duration = Duration::from_secs(5);

/// The oldest a live node's stored heartbeat may be.
fn fresh_limit(period: Duration) -> Duration {
    period * 2 + FRESH_SLACK
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Fleet sizes, one control plane each.
    pub nodes: Vec<usize>,
    pub period: Duration,
    /// The measured window, after every node joined and beat once.
    pub window: Duration,
    /// The idle anchor's window.
    pub idle_window: Duration,
    pub connects_per_sec: u32,
    /// Fleet sizes also run on an external Mosquitto.
    pub mosquitto_nodes: Vec<usize>,
}

/// Which broker the fleet and the control plane meet on.
enum Plane {
    Embedded(Control),
    Mosquitto(ExternalControl, Mosquitto),
}

impl Plane {
    async fn start(mosquitto: bool) -> Result<Plane> {
        if mosquitto {
            let m = Mosquitto::start().await?;
            let c = ExternalControl::start(m.port).await?;
            Ok(Plane::Mosquitto(c, m))
        } else {
            Ok(Plane::Embedded(Control::start("sled").await?))
        }
    }

    fn url(&self) -> &str {
        match self {
            Plane::Embedded(c) => &c.url,
            Plane::Mosquitto(c, _) => &c.url,
        }
    }

    fn token(&self) -> &str {
        match self {
            Plane::Embedded(c) => &c.token,
            Plane::Mosquitto(c, _) => &c.token,
        }
    }

    fn pid(&self) -> u32 {
        match self {
            Plane::Embedded(c) => c.pid(),
            Plane::Mosquitto(c, _) => c.pid,
        }
    }

    fn mqtt_port(&self) -> u16 {
        match self {
            Plane::Embedded(c) => c.mqtt_port,
            Plane::Mosquitto(_, m) => m.port,
        }
    }

    fn broker_pid(&self) -> Option<u32> {
        match self {
            Plane::Embedded(_) => None,
            Plane::Mosquitto(_, m) => Some(m.pid()),
        }
    }
}

/// CPU time and memory of one process at one moment (Linux /proc).
#[derive(Clone, Copy, Debug)]
struct ProcSample {
    at: Instant,
    /// utime + stime, in clock ticks.
    ticks: u64,
}

fn proc_sample(pid: u32) -> Result<ProcSample> {
    let at = Instant::now();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces: count fields after its ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("odd /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) are at 11, 12.
    let num = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .context("short /proc stat")?
            .parse::<u64>()
            .context("/proc stat field")
    };
    Ok(ProcSample {
        at,
        ticks: num(11)? + num(12)?,
    })
}

/// Clock ticks per second for /proc times (USER_HZ; 100 on Linux).
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// % of one core between two samples.
#[allow(clippy::cast_precision_loss)]
fn cpu_percent(a: ProcSample, b: ProcSample, hz: f64) -> f64 {
    let secs = b.at.duration_since(a.at).as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    (b.ticks.saturating_sub(a.ticks) as f64 / hz) / secs * 100.0
}

/// `(VmRSS, VmHWM)` in MiB.
fn memory_mib(pid: u32) -> Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<f64> {
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .with_context(|| format!("{name} missing"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()?;
        Ok(kb / 1024.0)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// The soft limit on open files, from /proc/self/limits.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Creates a join token the way `shturman token create` does.
async fn create_token(control: &Plane, http: &reqwest::Client) -> Result<String> {
    let token = JoinToken::random();
    let secret = token.to_secret(Some(Utc::now() + TimeDelta::hours(1)));
    let resp = http
        .post(format!(
            "{}/api/v1/namespaces/{SYSTEM_NAMESPACE}/secrets",
            control.url()
        ))
        .bearer_auth(control.token())
        .json(&secret)
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!(
            "creating the join token answered {}: {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        );
    }
    Ok(token.to_string())
}

/// Every simulated node's Ready status and `lastHeartbeatTime`, from the API.
async fn node_beats(
    control: &Plane,
    http: &reqwest::Client,
    prefix: &str,
) -> Result<HashMap<String, (bool, Option<DateTime<Utc>>)>> {
    let list: Value = http
        .get(format!("{}/api/v1/nodes", control.url()))
        .bearer_auth(control.token())
        .timeout(Duration::from_secs(60))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let mut out = HashMap::new();
    for item in list["items"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let Some(name) = item["metadata"]["name"].as_str() else {
            continue;
        };
        if !name.starts_with(prefix) {
            continue;
        }
        let ready = item["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"));
        let is_ready = ready.is_some_and(|c| c["status"] == "True");
        let beat = ready
            .and_then(|c| c["lastHeartbeatTime"].as_str())
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        out.insert(name.to_string(), (is_ready, beat));
    }
    Ok(out)
}

/// What one fleet size measured.
struct Figures {
    nodes: usize,
    /// "embedded broker" or "Mosquitto".
    broker: &'static str,
    /// The external broker's CPU % and RSS MiB, when there is one.
    broker_cpu: Option<f64>,
    broker_rss: Option<f64>,
    idle_cpu: f64,
    idle_rss: f64,
    idle_hwm: f64,
    join_secs: f64,
    cpu: f64,
    rss: f64,
    hwm: f64,
    sim_cpu: f64,
    published_per_sec: f64,
    applied_per_sec: f64,
    fresh: usize,
    oldest_beat_secs: f64,
}

async fn one(n: usize, opts: &Options, hz: f64, mosquitto: bool) -> Result<Figures> {
    let control = Plane::start(mosquitto).await?;
    let pid = control.pid();
    let bpid = control.broker_pid();
    let me = std::process::id();
    let http = reqwest::Client::new();

    // The anchor: the same process, idle, no nodes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let a = proc_sample(pid)?;
    tokio::time::sleep(opts.idle_window).await;
    let b = proc_sample(pid)?;
    let idle_cpu = cpu_percent(a, b, hz);
    let (idle_rss, idle_hwm) = memory_mib(pid)?;

    let token = create_token(&control, &http).await?;
    let mut cfg = FleetConfig::new("127.0.0.1", control.mqtt_port(), n, &token);
    cfg.period = opts.period;
    cfg.connects_per_sec = opts.connects_per_sec;
    let fleet = Fleet::start(cfg);
    // Ramp time plus two minutes for the joins to drain.
    #[allow(clippy::cast_precision_loss)]
    let ramp = Duration::from_secs_f64(n as f64 / f64::from(opts.connects_per_sec.max(1)));
    let join_time = match fleet.wait_joined(ramp + Duration::from_secs(120)).await {
        Ok(t) => t,
        Err(e) => return Err(e.context(JoinedOnly(fleet.snapshot().joined))),
    };
    eprintln!(
        "  {n} nodes joined in {:.1}s; settling one period",
        join_time.as_secs_f64()
    );
    // Every node has beaten once on joining; let each reach its own phase.
    tokio::time::sleep(opts.period + Duration::from_secs(2)).await;

    let before = node_beats(&control, &http, "sim-").await?;
    let b0 = bpid.map(proc_sample).transpose()?;
    let (c0, s0, f0) = (proc_sample(pid)?, proc_sample(me)?, fleet.snapshot());
    tokio::time::sleep(opts.window).await;
    let (c1, s1, f1) = (proc_sample(pid)?, proc_sample(me)?, fleet.snapshot());
    let b1 = bpid.map(proc_sample).transpose()?;
    let (rss, hwm) = memory_mib(pid)?;
    let broker_rss = bpid.map(memory_mib).transpose()?.map(|(r, _)| r);
    let after = node_beats(&control, &http, "sim-").await?;
    let now = Utc::now();
    eprintln!(
        "  window: {} heartbeats queued, {} not queued (client queue full), {} PUBACKs, {} link errors, {} reconnects",
        f1.heartbeats_queued - f0.heartbeats_queued,
        f1.heartbeats_not_queued - f0.heartbeats_not_queued,
        f1.pubacks - f0.pubacks,
        f1.link_errors - f0.link_errors,
        f1.connacks - f0.connacks,
    );
    if f1.link_errors > 0 {
        eprintln!("  link errors since start: {}", fleet.error_kinds());
    }
    fleet.stop().await;
    drop(control);

    let secs = c1.at.duration_since(c0.at).as_secs_f64();
    let period = opts.period.as_secs_f64();
    let mut applied = 0.0;
    let mut fresh = 0;
    let mut oldest = 0.0_f64;
    for (name, (ready, beat)) in &after {
        let age = beat.map_or(f64::INFINITY, |t| {
            (now - t).to_std().map_or(0.0, |d| d.as_secs_f64())
        });
        oldest = oldest.max(age);
        if *ready && age <= fresh_limit(opts.period).as_secs_f64() {
            fresh += 1;
        }
        if let (Some(t1), Some((_, Some(t0)))) = (beat, before.get(name)) {
            let gap = (*t1 - *t0).to_std().map_or(0.0, |d| d.as_secs_f64());
            applied += (gap / period).round();
        }
    }
    Ok(Figures {
        nodes: n,
        broker: if mosquitto { "Mosquitto" } else { "embedded broker" },
        broker_cpu: b0.zip(b1).map(|(a, b)| cpu_percent(a, b, hz)),
        broker_rss,
        idle_cpu,
        idle_rss,
        idle_hwm,
        join_secs: join_time.as_secs_f64(),
        cpu: cpu_percent(c0, c1, hz),
        rss,
        hwm,
        sim_cpu: cpu_percent(s0, s1, hz),
        published_per_sec: rate(f0, f1, secs),
        applied_per_sec: applied / secs,
        fresh,
        oldest_beat_secs: oldest,
    })
}

/// Heartbeats the broker acknowledged per second between two snapshots.
#[allow(clippy::cast_precision_loss)]
fn rate(a: Snapshot, b: Snapshot, secs: f64) -> f64 {
    b.pubacks.saturating_sub(a.pubacks) as f64 / secs.max(f64::EPSILON)
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

/// Runs the scenario and adds its rows.
pub async fn run(report: &mut Report, opts: &Options) -> Result<()> {
    let most = opts.nodes.iter().copied().max().unwrap_or(0);
    if let Some(limit) = open_files_limit() {
        let need = u64::try_from(most).unwrap_or(u64::MAX).saturating_add(256);
        if limit < need {
            bail!(
                "heartbeats: {most} nodes need about {need} open files per process but the limit is {limit}; \
                 raise it with `ulimit -n {need}` (scripts/bench.sh raises it to the hard limit)"
            );
        }
    }
    let hz = clock_ticks();
    let runs = opts
        .nodes
        .iter()
        .map(|n| (*n, false))
        .chain(opts.mosquitto_nodes.iter().map(|n| (*n, true)));
    for (n, mosquitto) in runs {
        eprintln!(
            "heartbeats: {n} simulated nodes every {:?} on {}, {:?} measured (idle anchor {:?}), {} connects/s",
            opts.period,
            if mosquitto {
                "Mosquitto"
            } else {
                "the embedded broker"
            },
            opts.window,
            opts.idle_window,
            opts.connects_per_sec
        );
        match one(n, opts, hz, mosquitto).await {
            Ok(f) => push_rows(report, opts, &f),
            // A fleet that does not join is a finding, not the end of the suite.
            Err(e) if e.downcast_ref::<JoinedOnly>().is_some() => {
                eprintln!("  {n} nodes: {e:#}");
                push_failure(report, opts, n, mosquitto, &e);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[allow(clippy::cast_precision_loss)]
fn push_rows(report: &mut Report, opts: &Options, f: &Figures) {
    let scenario = format!(
        "heartbeat ingest, {} nodes every {}s, {}",
        f.nodes,
        opts.period.as_secs(),
        f.broker
    );
    if let (Some(cpu), Some(rss)) = (f.broker_cpu, f.broker_rss) {
        report.push(Row {
            scenario: scenario.clone(),
            metric: "Mosquitto CPU % of one core (outside the control plane)".into(),
            shturman: cpu,
            anchor_name: "-".into(),
            anchor: None,
            goal: "informational (add to the control plane's)".into(),
            higher_is_better: false,
        });
        report.push(Row {
            scenario: scenario.clone(),
            metric: "Mosquitto RSS MiB (outside the control plane)".into(),
            shturman: rss,
            anchor_name: "-".into(),
            anchor: None,
            goal: "informational (add to the control plane's)".into(),
            higher_is_better: false,
        });
    }
    let idle = "same process idle, no nodes".to_string();
    let at_goal = f.nodes >= GOAL_NODES;
    let goal = |text: String, ok: bool| {
        if at_goal {
            format!("{text}: {}", verdict(ok))
        } else {
            format!("{text} at {GOAL_NODES} nodes (informational here)")
        }
    };
    // The CPU and memory goals are stated at GOAL_NODES nodes.
    let at_goal_or_info = |g| {
        if at_goal {
            g
        } else {
            crate::report::Goal::Informational
        }
    };
    report.push(
        Row {
            scenario: scenario.clone(),
            metric: "control plane CPU % of one core".into(),
            shturman: f.cpu,
            anchor_name: idle.clone(),
            anchor: Some(f.idle_cpu),
            goal: goal(format!("<= {GOAL_CPU_PERCENT}%"), f.cpu <= GOAL_CPU_PERCENT),
            higher_is_better: false,
        }
        .check(at_goal_or_info(crate::report::Goal::AtMost(GOAL_CPU_PERCENT))),
    );
    report.push(
        Row {
            scenario: scenario.clone(),
            metric: "control plane RSS MiB".into(),
            shturman: f.rss,
            anchor_name: idle.clone(),
            anchor: Some(f.idle_rss),
            goal: goal(format!("<= {GOAL_RSS_MIB} MiB"), f.rss <= GOAL_RSS_MIB),
            higher_is_better: false,
        }
        .check(at_goal_or_info(crate::report::Goal::AtMost(GOAL_RSS_MIB))),
    );
    report.push(
        Row {
            scenario: scenario.clone(),
            metric: "control plane peak RSS MiB (VmHWM, joins included)".into(),
            shturman: f.hwm,
            anchor_name: idle,
            anchor: Some(f.idle_hwm),
            goal: goal(format!("<= {GOAL_RSS_MIB} MiB"), f.hwm <= GOAL_RSS_MIB),
            higher_is_better: false,
        }
        .check(at_goal_or_info(crate::report::Goal::AtMost(GOAL_RSS_MIB))),
    );
    let offered = f.nodes as f64 / opts.period.as_secs_f64();
    report.push(
        Row {
            scenario: scenario.clone(),
            metric: "heartbeats applied/s (Node lastHeartbeatTime)".into(),
            shturman: f.applied_per_sec,
            anchor_name: "acked by the broker (PUBACK)".into(),
            anchor: Some(f.published_per_sec),
            goal: format!(
                "informational (offered {offered:.0}/s; stored times move every second beat, \
             the freshness rows below carry the goal)"
            ),
            higher_is_better: true,
        }
        .check(crate::report::Goal::Informational),
    );
    report.push(
        Row {
            scenario: scenario.clone(),
            metric: "nodes Ready with a fresh heartbeat at the end".into(),
            shturman: f.fresh as f64,
            anchor_name: "nodes simulated".into(),
            anchor: Some(f.nodes as f64),
            goal: format!("all (beat <= {}s old)", fresh_limit(opts.period).as_secs()),
            higher_is_better: true,
        }
        .check(crate::report::Goal::RatioAtLeast(1.0)),
    );
    report.push(
        Row {
            scenario: scenario.clone(),
            metric: "oldest lastHeartbeatTime at the end, s".into(),
            shturman: f.oldest_beat_secs,
            anchor_name: "heartbeat period".into(),
            anchor: Some(opts.period.as_secs_f64()),
            goal: "<= 2 periods (quiet beats are written every second one)".into(),
            higher_is_better: false,
        }
        .check(crate::report::Goal::AtMost(
            fresh_limit(opts.period).as_secs_f64(),
        )),
    );
    report.push(Row {
        scenario: scenario.clone(),
        metric: "simulator CPU % of one core (same cores)".into(),
        shturman: f.sim_cpu,
        anchor_name: "-".into(),
        anchor: None,
        goal: "informational (contention)".into(),
        higher_is_better: false,
    });
    report.push(Row {
        scenario,
        metric: "joins/s (connect, token check, Node + secret written)".into(),
        shturman: f.nodes as f64 / f.join_secs.max(f64::EPSILON),
        anchor_name: "connect ramp, /s".into(),
        anchor: Some(f64::from(opts.connects_per_sec)),
        goal: "informational".into(),
        higher_is_better: true,
    });
}

/// How many nodes had joined when a fleet gave up waiting.
#[derive(Debug)]
struct JoinedOnly(usize);

impl std::fmt::Display for JoinedOnly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} nodes joined", self.0)
    }
}

/// A fleet size that did not get through: one row that says so.
fn push_failure(report: &mut Report, opts: &Options, n: usize, mosquitto: bool, e: &anyhow::Error) {
    let broker = if mosquitto { "Mosquitto" } else { "embedded broker" };
    let joined = e.downcast_ref::<JoinedOnly>().map_or(0, |j| j.0);
    #[allow(clippy::cast_precision_loss)]
    report.push(
        Row {
            scenario: format!(
                "heartbeat ingest, {n} nodes every {}s, {broker}",
                opts.period.as_secs()
            ),
            metric: "nodes joined before the wait ended (joins did not complete)".into(),
            shturman: joined as f64,
            anchor_name: "nodes simulated".into(),
            anchor: Some(n as f64),
            goal: format!("all {n} join"),
            higher_is_better: true,
        }
        .check(crate::report::Goal::RatioAtLeast(1.0)),
    );
}
