//! Many idle Wasm pods on one node: the real release `shturman control` and
//! one real `shturman-agent` (`--max-pods 1100`), running Deployments of the
//! `ticker` example (one line a second, otherwise asleep).
//!
//! 1. Memory per idle pod beyond its linear memory. A 1-replica Deployment
//!    runs first (so the compiled module, the executor and the first log
//!    file are in the baseline), then it is scaled to 1 + N. From
//!    `/proc/PID/smaps` before and after: ΔRSS (the sum of every mapping's
//!    `Rss`) and Δlinear (the resident part of the Wasm linear memories,
//!    recognised as [`procfs::linear_memories`] explains); the figure is
//!    (ΔRSS − Δlinear) / N. It is taken a few seconds after the last pod
//!    runs; a second sample later shows how much it still grows (each
//!    container keeps its last 1,000 log lines in memory, so a ticker's ring
//!    fills over its first ~17 minutes).
//! 2. 1,000 ticker pods on one node: a 1,000-replica Deployment created in
//!    one call; the time from the create's response until a pod watch has
//!    seen 1,000 of them Running; then at steady state the agent's RSS and
//!    CPU (utime + stime from `/proc/PID/stat` over a window) and the control
//!    plane's RSS.
//!
//! The pods request 1m CPU and 1Mi memory (limits 100m and 16Mi, as the
//! example's manifest), so the scheduler fits 1,000 on a 2-core node.
//!
//! Anchor, in the same run: 20 `ctr run -d` busybox `sleep` containers on
//! the private containerd of `shturman_e2e::containerd`, each measured as
//! its `containerd-shim-runc-v2` plus the container's process (RSS summed,
//! per container; PSS printed too), removed afterwards.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use shturman_e2e::api::Api;

use crate::containerd_anchor::{Anchor, ContainerMemory};
use crate::podwatch::{PodEvent, PodWatch};
use crate::procfs::{self, mib};
use crate::report::{Report, Row};
use crate::spawn::{Agent, Control};
use crate::wasm_start::ticker_wasm;

/// Per-pod memory goal beyond linear memory, KiB.
const GOAL_PER_POD_KIB: f64 = 1024.0;
/// Lines the agent keeps in memory per container run (`LogLimits::default`
/// in edge-agent/src/wasm/logs.rs).
const RING_LINES: f64 = 1000.0;

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Pods added for the per-pod memory figure.
    pub pods: usize,
    /// Pods of the large Deployment.
    pub big: usize,
    /// The agent's `--max-pods`.
    pub max_pods: u32,
    /// Idle containers of the anchor.
    pub containers: usize,
    /// Wait after the last pod runs before sampling.
    pub settle: Duration,
    /// Second sample this long after the first (growth).
    pub growth: Duration,
    /// Longest wait for the large Deployment to run.
    pub ramp_cap: Duration,
    /// CPU window at steady state.
    pub cpu_window: Duration,
}

const LABEL_KEY: &str = "app";
const LABEL_VALUE: &str = "bench-ticker";

fn deployment(replicas: usize, wasm: &Path) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "tickers"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {LABEL_KEY: LABEL_VALUE}},
            "template": {
                "metadata": {"labels": {LABEL_KEY: LABEL_VALUE}},
                "spec": {
                    "runtimeClassName": "wasmtime",
                    "containers": [{
                        "name": "ticker",
                        "image": format!("file://{}", wasm.display()),
                        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                        "resources": {
                            "requests": {"cpu": "1m", "memory": "1Mi"},
                            "limits": {"cpu": "100m", "memory": "16Mi"},
                        },
                    }],
                },
            },
        },
    })
}

/// Pods seen by the watch and whether each is running now.
#[derive(Default)]
struct Running(HashMap<String, bool>);

impl Running {
    fn apply(&mut self, ev: &PodEvent) {
        if ev.kind == "DELETED" {
            self.0.remove(&ev.name);
        } else if !ev.name.is_empty() {
            self.0
                .insert(ev.name.clone(), ev.running && ev.phase == "Running");
        }
    }

    fn count(&self) -> usize {
        self.0.values().filter(|r| **r).count()
    }
}

/// Waits until `target` pods run; calls `progress` about every 10 s.
/// Returns when they ran (relative to `t0`), or `None` after `cap`.
async fn wait_running(
    watch: &mut PodWatch,
    running: &mut Running,
    target: usize,
    t0: Instant,
    cap: Duration,
    mut progress: impl FnMut(usize, Duration),
) -> Result<Option<Duration>> {
    let mut next_report = Duration::from_secs(10);
    loop {
        if running.count() >= target {
            return Ok(Some(t0.elapsed()));
        }
        let elapsed = t0.elapsed();
        if elapsed >= cap {
            return Ok(None);
        }
        if elapsed >= next_report {
            progress(running.count(), elapsed);
            next_report += Duration::from_secs(10);
        }
        let wait = (cap - elapsed)
            .min(next_report.saturating_sub(elapsed))
            .max(Duration::from_millis(1));
        match tokio::time::timeout(wait, watch.events.recv()).await {
            Ok(Some(ev)) => {
                if ev.kind == "ERROR" {
                    bail!("the pod watch ended with an error event");
                }
                // The event's time, not now: the count is right at that instant.
                running.apply(&ev);
                if running.count() >= target {
                    return Ok(Some(ev.at.saturating_duration_since(t0)));
                }
            }
            Ok(None) => bail!("the pod watch ended"),
            Err(_) => {}
        }
    }
}

/// How many ticker modules have printed at least once on the node: their
/// container log files (`<data-dir>/logs/<ns>_<pod>_<uid>/ticker.log`) are
/// not empty. The agent-side view of "running", next to the API's.
fn ticking(data: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(data.join("logs")) else {
        return 0;
    };
    rd.filter_map(Result::ok)
        .filter(|e| std::fs::metadata(e.path().join("ticker.log")).is_ok_and(|m| m.len() > 0))
        .count()
}

/// Counts [`ticking`] pods every 250 ms and notes when `target` first ticked.
struct TickWatch {
    state: Arc<Mutex<(usize, Option<Duration>)>>,
    task: tokio::task::JoinHandle<()>,
}

impl TickWatch {
    fn start(data: PathBuf, target: usize, t0: Instant) -> TickWatch {
        let state = Arc::new(Mutex::new((0, None)));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let n = ticking(&data);
                {
                    let mut g = shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    g.0 = n;
                    if n >= target && g.1.is_none() {
                        g.1 = Some(t0.elapsed());
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        TickWatch { state, task }
    }

    fn get(&self) -> (usize, Option<Duration>) {
        *self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for TickWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Resident memory of a process and of its Wasm linear memories, from one
/// read of smaps (KiB).
#[derive(Clone, Copy, Debug)]
struct MemSample {
    rss: u64,
    linear: procfs::LinearMemories,
}

fn mem_sample(pid: u32) -> Result<MemSample> {
    let maps = procfs::smaps(pid)?;
    Ok(MemSample {
        rss: maps.iter().map(|m| m.rss_kib).sum(),
        linear: procfs::linear_memories(&maps),
    })
}

/// `(ΔRSS − Δlinear) / n` and `Δlinear / n`, KiB per pod.
#[allow(clippy::cast_precision_loss)]
fn per_pod(a: MemSample, b: MemSample, n: usize) -> (f64, f64) {
    let d_rss = b.rss as f64 - a.rss as f64;
    let d_lin = b.linear.rss_kib as f64 - a.linear.rss_kib as f64;
    ((d_rss - d_lin) / n as f64, d_lin / n as f64)
}

async fn scale(api: &Api, replicas: usize) -> Result<()> {
    let (code, body) = api
        .patch(
            "/apis/apps/v1/namespaces/default/deployments/tickers",
            &json!({"spec": {"replicas": replicas}}),
        )
        .await?;
    if code != 200 {
        bail!("scaling the Deployment answered {code}: {body}");
    }
    Ok(())
}

async fn create(api: &Api, replicas: usize, wasm: &Path) -> Result<Instant> {
    let (code, body) = api
        .post(
            "/apis/apps/v1/namespaces/default/deployments",
            &deployment(replicas, wasm),
        )
        .await?;
    let t0 = Instant::now();
    if code != 201 {
        bail!("creating the Deployment answered {code}: {body}");
    }
    Ok(t0)
}

/// Part 1's figures.
struct PerPod {
    n: usize,
    beyond_linear_kib: f64,
    linear_kib: f64,
    /// Growth of the first figure per minute after it, KiB per pod.
    growth_kib_per_min: f64,
    memories_seen: usize,
}

async fn per_pod_memory(opts: &Options, wasm: &Path) -> Result<PerPod> {
    let control = Control::start("sled").await?;
    let max = opts.max_pods.to_string();
    let agent = Agent::start(&control, "bench-tickers", &["--max-pods", &max]).await?;
    let api = Api::new(&control.url, &control.token);
    let mut watch = PodWatch::start(&control, &format!("{LABEL_KEY}={LABEL_VALUE}")).await?;
    let mut running = Running::default();
    let r = async {
        let t0 = create(&api, 1, wasm).await?;
        wait_running(&mut watch, &mut running, 1, t0, Duration::from_secs(60), |_, _| {})
            .await?
            .context("the first ticker pod did not run within 60 s")?;
        tokio::time::sleep(opts.settle).await;
        let s0 = mem_sample(agent.pid())?;
        let total = 1 + opts.pods;
        let t1 = Instant::now();
        scale(&api, total).await?;
        let took = wait_running(&mut watch, &mut running, total, t1, Duration::from_secs(300), |n, e| {
            eprintln!("  {n}/{total} running after {:.0} s", e.as_secs_f64());
        })
        .await?
        .with_context(|| format!("{total} ticker pods did not run within 300 s"))?;
        eprintln!(
            "  {total} ticker pods running, {} added in {:.1} s",
            opts.pods,
            took.as_secs_f64()
        );
        tokio::time::sleep(opts.settle).await;
        let s1 = mem_sample(agent.pid())?;
        tokio::time::sleep(opts.growth).await;
        let s2 = mem_sample(agent.pid())?;
        if running.count() != total {
            eprintln!(
                "  note: {} of {total} pods running at the end of the window",
                running.count()
            );
        }
        let (beyond, linear) = per_pod(s0, s1, opts.pods);
        let (beyond2, _) = per_pod(s0, s2, opts.pods);
        eprintln!(
            "  agent RSS {:.1} → {:.1} → {:.1} MiB; linear memories {} ({:.1} MiB) → {} ({:.1} MiB) → {} ({:.1} MiB)",
            mib(s0.rss),
            mib(s1.rss),
            mib(s2.rss),
            s0.linear.count,
            mib(s0.linear.rss_kib),
            s1.linear.count,
            mib(s1.linear.rss_kib),
            s2.linear.count,
            mib(s2.linear.rss_kib),
        );
        if s1.linear.count != total {
            eprintln!(
                "  note: {} linear memories recognised for {total} running pods",
                s1.linear.count
            );
        }
        anyhow::Ok(PerPod {
            n: opts.pods,
            beyond_linear_kib: beyond,
            linear_kib: linear,
            growth_kib_per_min: (beyond2 - beyond) / opts.growth.as_secs_f64().max(1.0) * 60.0,
            memories_seen: s1.linear.count,
        })
    }
    .await;
    if r.is_err() {
        eprintln!("agent log (tail):\n{}", agent.log_tail(40));
    }
    r
}

/// Part 2's figures.
struct Big {
    target: usize,
    ran: usize,
    ramp: Option<Duration>,
    /// When every module had printed on the node (its log file), if seen.
    ticked: Option<Duration>,
    idle_rss_kib: u64,
    agent: MemSample,
    agent_cpu: f64,
    control_rss_kib: u64,
    control_cpu: f64,
    ramp_agent_cpu_s: f64,
    ramp_control_cpu_s: f64,
}

async fn big_deployment(opts: &Options, wasm: &Path) -> Result<Big> {
    let hz = procfs::clock_ticks();
    let control = Control::start("sled").await?;
    let max = opts.max_pods.to_string();
    let mut agent = Agent::start(&control, "bench-1k", &["--max-pods", &max]).await?;
    let api = Api::new(&control.url, &control.token);
    let mut watch = PodWatch::start(&control, &format!("{LABEL_KEY}={LABEL_VALUE}")).await?;
    let mut running = Running::default();
    let (apid, cpid) = (agent.pid(), control.pid());
    let r = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle_rss_kib = procfs::rss_kib(apid)?;
        let (a0, c0) = (procfs::cpu_sample(apid)?, procfs::cpu_sample(cpid)?);
        let target = opts.big;
        let t0 = create(&api, target, wasm).await?;
        let ticks = TickWatch::start(agent.data.clone(), target, t0);
        let mut last = (a0, c0);
        let ramp = wait_running(&mut watch, &mut running, target, t0, opts.ramp_cap, |n, e| {
            let (a, c) = (procfs::cpu_sample(apid), procfs::cpu_sample(cpid));
            let (ar, cr) = (procfs::rss_kib(apid), procfs::rss_kib(cpid));
            if let (Ok(a), Ok(c), Ok(ar), Ok(cr)) = (a, c, ar, cr) {
                eprintln!(
                    "  {n}/{target} Running in the API, {} ticking on the node, after {:.0} s; \
                     agent {:.0} MiB {:.0} % CPU, control plane {:.0} MiB {:.0} % CPU",
                    ticks.get().0,
                    e.as_secs_f64(),
                    mib(ar),
                    procfs::cpu_percent(last.0, a, hz),
                    mib(cr),
                    procfs::cpu_percent(last.1, c, hz),
                );
                last = (a, c);
            }
        })
        .await?;
        let (a1, c1) = (procfs::cpu_sample(apid)?, procfs::cpu_sample(cpid)?);
        #[allow(clippy::cast_precision_loss)]
        let secs = |a: procfs::CpuSample, b: procfs::CpuSample| b.ticks.saturating_sub(a.ticks) as f64 / hz;
        // Give the node-side count a moment to catch up, then stop it.
        for _ in 0..8 {
            if ticks.get().1.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let ticked = ticks.get().1;
        drop(ticks);
        match ticked {
            Some(d) => eprintln!(
                "  all {target} modules had printed on the node {:.1} s after the create",
                d.as_secs_f64()
            ),
            None => eprintln!("  not every module had printed on the node by then"),
        }
        match ramp {
            Some(d) => eprintln!(
                "  {target}/{target} Running in the API {:.1} s after the create",
                d.as_secs_f64()
            ),
            None => eprintln!(
                "  only {}/{target} running after {:.0} s: measuring what is there",
                running.count(),
                opts.ramp_cap.as_secs_f64()
            ),
        }
        tokio::time::sleep(opts.settle).await;
        let (a2, c2) = (procfs::cpu_sample(apid)?, procfs::cpu_sample(cpid)?);
        tokio::time::sleep(opts.cpu_window).await;
        let (a3, c3) = (procfs::cpu_sample(apid)?, procfs::cpu_sample(cpid)?);
        let agent_mem = mem_sample(apid)?;
        // Drain what the watch delivered meanwhile, for the final count.
        while let Ok(ev) = watch.events.try_recv() {
            running.apply(&ev);
        }
        anyhow::Ok(Big {
            target,
            ran: running.count(),
            ramp,
            ticked,
            idle_rss_kib,
            agent: agent_mem,
            agent_cpu: procfs::cpu_percent(a2, a3, hz),
            control_rss_kib: procfs::rss_kib(cpid)?,
            control_cpu: procfs::cpu_percent(c2, c3, hz),
            ramp_agent_cpu_s: secs(a0, a1),
            ramp_control_cpu_s: secs(c0, c1),
        })
    }
    .await;
    if !agent.alive() {
        eprintln!("  the agent died:\n{}", agent.log_tail(60));
    }
    match &r {
        Err(_) => eprintln!("agent log (tail):\n{}", agent.log_tail(40)),
        Ok(b) if b.ramp.is_none() => {
            let log = agent.log_text();
            let warns = log
                .lines()
                .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
                .count();
            eprintln!(
                "  agent log: {warns} warnings/errors; tail:\n{}",
                agent.log_tail(30)
            );
        }
        Ok(_) => {}
    }
    r
}

/// Runs the scenario and adds its rows.
pub async fn run(report: &mut Report, opts: &Options) -> Result<()> {
    if let Some(limit) = procfs::open_files_limit()
        && limit < 4096
    {
        eprintln!(
            "  note: the open-files limit is {limit}; the agent keeps a log file per container \
             (run `ulimit -n $(ulimit -Hn)` first, scripts/bench.sh does)"
        );
    }
    let wasm = ticker_wasm()?;
    eprintln!(
        "tickers: memory per idle ticker pod beyond its linear memory, 1 + {} pods",
        opts.pods
    );
    let p = per_pod_memory(opts, &wasm).await?;
    eprintln!(
        "  per pod: {:.0} KiB beyond linear memory, {:.0} KiB linear memory resident; then +{:.1} KiB per pod per minute",
        p.beyond_linear_kib, p.linear_kib, p.growth_kib_per_min
    );

    eprintln!(
        "tickers anchor: {} idle `ctr run -d` busybox sleep containers (shim + process)",
        opts.containers
    );
    let n = opts.containers;
    let settle = opts.settle;
    let anchor = tokio::task::spawn_blocking(move || -> Result<ContainerMemory> {
        let a = Anchor::start()?;
        a.idle_containers(n, settle)
    })
    .await
    .context("the container anchor panicked")?;
    #[allow(clippy::cast_precision_loss)]
    let (per_container, anchor_name) = match &anchor {
        Ok(m) => {
            let per = m.rss_kib as f64 / m.n as f64;
            eprintln!(
                "  {} containers, {} processes: RSS {:.0} KiB per container (PSS {:.0} KiB); containerd itself +{:.0} KiB",
                m.n,
                m.processes,
                per,
                m.pss_kib as f64 / m.n as f64,
                m.containerd_delta_kib
            );
            (
                Some(per),
                format!("idle busybox container: shim + process RSS, n={}", m.n),
            )
        }
        Err(e) => {
            eprintln!("  anchor not measured: {e:#}");
            (None, format!("idle container (not measured: {e})"))
        }
    };
    report.push(
        Row {
            scenario: format!("idle ticker pod beyond its linear memory, N={}", p.n),
            metric: "KiB per pod".into(),
            shturman: p.beyond_linear_kib,
            anchor_name,
            anchor: per_container,
            goal: format!("<= {GOAL_PER_POD_KIB} KiB"),
            higher_is_better: false,
        }
        .check(crate::report::Goal::AtMost(GOAL_PER_POD_KIB)),
    );
    // A ticker prints a line a second and the agent keeps each container's
    // last RING_LINES lines in memory: the ring is full after RING_LINES s.
    let ring_minutes = RING_LINES / 60.0;
    report.push(Row {
        scenario: format!(
            "idle ticker pod beyond its linear memory, projected with a full log ring (+{:.1} KiB/min × {ring_minutes:.1} min)",
            p.growth_kib_per_min
        ),
        metric: "KiB per pod".into(),
        shturman: p.beyond_linear_kib + p.growth_kib_per_min * ring_minutes,
        anchor_name: "idle busybox container: shim + process RSS".into(),
        anchor: per_container,
        goal: format!("informational (a projection, not a measurement; the goal, {GOAL_PER_POD_KIB} KiB, is checked on the measured rows)"),
        higher_is_better: false,
    }
    .check(crate::report::Goal::Informational));
    report.push(Row {
        scenario: format!(
            "idle ticker pod: resident linear memory ({} memories seen)",
            p.memories_seen
        ),
        metric: "KiB per pod".into(),
        shturman: p.linear_kib,
        anchor_name: "-".into(),
        anchor: None,
        goal: "informational".into(),
        higher_is_better: false,
    });
    if let Ok(m) = &anchor {
        #[allow(clippy::cast_precision_loss)]
        report.push(Row {
            scenario: format!("idle busybox container, PSS (shared pages split), n={}", m.n),
            metric: "KiB per container".into(),
            shturman: m.pss_kib as f64 / m.n as f64,
            anchor_name: "-".into(),
            anchor: None,
            goal: "reference".into(),
            higher_is_better: false,
        });
    }

    eprintln!(
        "tickers: {} ticker pods on one node (--max-pods {})",
        opts.big, opts.max_pods
    );
    let b = big_deployment(opts, &wasm).await?;
    let scenario = format!("{} ticker pods on one agent ({} ran)", b.target, b.ran);
    report.push(Row {
        scenario: scenario.clone(),
        metric: match b.ramp {
            Some(_) => "s create → all Running".into(),
            None => format!("s (cap; only {}/{} Running)", b.ran, b.target),
        },
        shturman: b.ramp.unwrap_or(opts.ramp_cap).as_secs_f64(),
        anchor_name: "-".into(),
        anchor: None,
        goal: "informational".into(),
        higher_is_better: false,
    });
    #[allow(clippy::cast_precision_loss)]
    let extrapolated = per_container.map(|k| k * b.target as f64 / 1024.0);
    if let Some(t) = b.ticked {
        report.push(Row {
            scenario: scenario.clone(),
            metric: "s create → every module printed on the node".into(),
            shturman: t.as_secs_f64(),
            anchor_name: "-".into(),
            anchor: None,
            goal: "informational (node side of the figure above)".into(),
            higher_is_better: false,
        });
    }
    report.push(Row {
        scenario: scenario.clone(),
        metric: "agent RSS MiB".into(),
        shturman: mib(b.agent.rss),
        anchor_name: format!("{} × measured idle container RSS (extrapolated)", b.target),
        anchor: extrapolated,
        goal: "informational".into(),
        higher_is_better: false,
    });
    #[allow(clippy::cast_precision_loss)]
    let beyond_at_scale =
        (b.agent.rss as f64 - b.idle_rss_kib as f64 - b.agent.linear.rss_kib as f64) / b.ran.max(1) as f64;
    report.push(
        Row {
            scenario: scenario.clone(),
            metric: "KiB per pod beyond linear memory (vs idle agent)".into(),
            shturman: beyond_at_scale,
            anchor_name: "idle busybox container RSS".into(),
            anchor: per_container,
            goal: format!("<= {GOAL_PER_POD_KIB} KiB"),
            higher_is_better: false,
        }
        .check(crate::report::Goal::AtMost(GOAL_PER_POD_KIB)),
    );
    report.push(Row {
        scenario: scenario.clone(),
        metric: "agent CPU % of one core (steady)".into(),
        shturman: b.agent_cpu,
        anchor_name: "-".into(),
        anchor: None,
        goal: "informational".into(),
        higher_is_better: false,
    });
    report.push(Row {
        scenario: scenario.clone(),
        metric: "control plane RSS MiB".into(),
        shturman: mib(b.control_rss_kib),
        anchor_name: "-".into(),
        anchor: None,
        goal: "informational".into(),
        higher_is_better: false,
    });
    report.push(Row {
        scenario,
        metric: "control plane CPU % of one core (steady)".into(),
        shturman: b.control_cpu,
        anchor_name: "-".into(),
        anchor: None,
        goal: "informational".into(),
        higher_is_better: false,
    });
    eprintln!(
        "  ramp CPU: agent {:.1} s, control plane {:.1} s; agent idle before {:.1} MiB; {} linear memories ({:.1} MiB resident)",
        b.ramp_agent_cpu_s,
        b.ramp_control_cpu_s,
        mib(b.idle_rss_kib),
        b.agent.linear.count,
        mib(b.agent.linear.rss_kib)
    );
    Ok(())
}
