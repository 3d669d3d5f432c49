//! Wasm pod start latency: the real release `shturman control` (sled store,
//! embedded broker) and one real `shturman-agent`; pods created one at a
//! time already bound (`spec.nodeName` set, so the scheduler is not in the
//! measurement), each running the `ticker` example component from a
//! `file://` path. The clock runs from the create call's response to the
//! moment a pod watch, opened before the loop, delivers the event whose first
//! container has `state.running`. Each pod is deleted after (not timed), and
//! the next one waits until the agent has stopped it (its log dir is gone).
//!
//! The first pod of the run is the cold start (the agent reads, hashes and
//! compiles the module) and is reported on its own; the measured pods run
//! with the compiled module cached in memory, as every replica after the
//! first does.
//!
//! The anchor, in the same run: `ctr run --rm` of a small busybox image
//! (`true`) on a private containerd + runc (`shturman_e2e::containerd`), a
//! whole OCI container start to exit.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use shturman_e2e::api::Api;

use crate::podwatch::PodWatch;
use crate::report::{Report, Row};
use crate::spawn::{Agent, Control};

/// No pod waits longer than this to run.
const START_CAP: Duration = Duration::from_secs(30);
/// Nor longer than this to be stopped by the agent after its delete.
const STOP_CAP: Duration = Duration::from_secs(15);
/// The whole measured loop stops after this, whatever the count.
const LOOP_CAP: Duration = Duration::from_secs(300);
/// Label of every pod this scenario creates.
const LABEL: &str = "bench=wasm-start";
/// The node name of the scenario's agent.
const NODE: &str = "bench-wasm";

/// The `ticker` example component, built by `scripts/build-wasm-examples.sh`
/// (run here when the file is missing).
pub fn ticker_wasm() -> Result<PathBuf> {
    example_wasm("ticker", "ticker.wasm")
}

/// The module `file` of the example crate `wasm-examples/{example}` (built
/// for wasm32-wasip2), building the examples first when it is missing.
pub fn example_wasm(example: &str, file: &str) -> Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?
        .to_path_buf();
    let wasm = root.join(format!(
        "wasm-examples/{example}/target/wasm32-wasip2/release/{file}"
    ));
    if !wasm.exists() {
        eprintln!(
            "{} is missing: running scripts/build-wasm-examples.sh",
            wasm.display()
        );
        let status = std::process::Command::new("bash")
            .arg(root.join("scripts/build-wasm-examples.sh"))
            .status()
            .context("running scripts/build-wasm-examples.sh")?;
        if !status.success() || !wasm.exists() {
            bail!(
                "{} is missing and scripts/build-wasm-examples.sh did not build it ({status})",
                wasm.display()
            );
        }
    }
    Ok(wasm)
}

/// A bound ticker pod.
fn pod(name: &str, node: &str, wasm: &Path) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": "wasm-start"}},
        "spec": {
            "nodeName": node,
            "runtimeClassName": "wasmtime",
            "containers": [{
                "name": "ticker",
                "image": format!("file://{}", wasm.display()),
                "resources": {"limits": {"cpu": "100m", "memory": "16Mi"}},
            }],
        },
    })
}

/// Percentile (nearest rank) of sorted durations, in ms.
pub fn pct_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

/// One start: create, then wait for the running event. Returns (latency to
/// running, latency to the node's first status report, uid).
async fn one_start(
    api: &Api,
    watch: &mut PodWatch,
    name: &str,
    wasm: &Path,
) -> Result<(Duration, Option<Duration>, String)> {
    let (code, created) = api
        .post("/api/v1/namespaces/default/pods", &pod(name, NODE, wasm))
        .await?;
    let t0 = Instant::now();
    if code != 201 {
        bail!("creating pod {name} answered {code}: {created}");
    }
    let uid = created["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut reported = None;
    loop {
        let ev = tokio::time::timeout(START_CAP.saturating_sub(t0.elapsed()), watch.events.recv())
            .await
            .with_context(|| format!("pod {name} not running after {START_CAP:?}"))?
            .context("the pod watch ended")?;
        if ev.name != name {
            continue;
        }
        if ev.reported && reported.is_none() {
            reported = Some(ev.at.saturating_duration_since(t0));
        }
        if ev.running {
            return Ok((ev.at.saturating_duration_since(t0), reported, uid));
        }
    }
}

/// Deletes a pod and waits until the agent has stopped it (its container
/// log dir is removed then). Returns whether it saw that in time.
async fn delete_and_wait(api: &Api, agent: &Agent, name: &str, uid: &str) -> Result<bool> {
    let (code, body) = api
        .delete(&format!("/api/v1/namespaces/default/pods/{name}"))
        .await?;
    if code != 200 {
        bail!("deleting pod {name} answered {code}: {body}");
    }
    let dir = agent.data.join("logs").join(format!("default_{name}_{uid}"));
    let t = Instant::now();
    while t.elapsed() < STOP_CAP {
        if !dir.exists() {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(false)
}

/// What the Wasm half measured.
pub struct WasmFigures {
    pub cold: Duration,
    /// Sorted.
    pub warm: Vec<Duration>,
    /// Sorted latencies to the node's first status report.
    pub first_report: Vec<Duration>,
    pub slow_stops: usize,
}

/// Cold start, then `n` warm starts, one at a time.
pub async fn measure_wasm(n: usize) -> Result<WasmFigures> {
    let wasm = ticker_wasm()?;
    let control = Control::start("sled").await?;
    let agent = Agent::start(&control, NODE, &[]).await?;
    let api = Api::new(&control.url, &control.token);
    let mut watch = PodWatch::start(&control, LABEL).await?;
    let result = async {
        let (cold, _, uid) = one_start(&api, &mut watch, "ws-cold", &wasm).await?;
        let mut slow_stops = usize::from(!delete_and_wait(&api, &agent, "ws-cold", &uid).await?);
        eprintln!(
            "  cold start (fetch + compile + run): {:.1} ms",
            cold.as_secs_f64() * 1e3
        );
        let (mut warm, mut first_report) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let started = Instant::now();
        for i in 0..n {
            if started.elapsed() > LOOP_CAP {
                eprintln!("  stopping after {i} pods: {LOOP_CAP:?} elapsed");
                break;
            }
            let name = format!("ws-{i}");
            let (d, rep, uid) = one_start(&api, &mut watch, &name, &wasm).await?;
            warm.push(d);
            first_report.extend(rep);
            slow_stops += usize::from(!delete_and_wait(&api, &agent, &name, &uid).await?);
        }
        warm.sort();
        first_report.sort();
        anyhow::Ok(WasmFigures {
            cold,
            warm,
            first_report,
            slow_stops,
        })
    }
    .await;
    if result.is_err() {
        eprintln!("agent log (tail):\n{}", agent.log_tail(40));
    }
    result
}

/// Prints a coarse histogram of the latencies (to spot poll-period steps).
fn print_distribution(sorted: &[Duration]) {
    let edges_ms = [
        1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 300.0, 500.0, 1000.0,
    ];
    let mut counts = vec![0usize; edges_ms.len() + 1];
    for d in sorted {
        let ms = d.as_secs_f64() * 1e3;
        let i = edges_ms.iter().position(|e| ms <= *e).unwrap_or(edges_ms.len());
        counts[i] += 1;
    }
    let mut parts = Vec::new();
    for (i, c) in counts.iter().enumerate() {
        if *c == 0 {
            continue;
        }
        let label = match i {
            0 => format!("<={}ms", edges_ms[0]),
            i if i == edges_ms.len() => format!(">{}ms", edges_ms[i - 1]),
            i => format!("{}-{}ms", edges_ms[i - 1], edges_ms[i]),
        };
        parts.push(format!("{label}: {c}"));
    }
    eprintln!("  distribution: {}", parts.join(", "));
}

/// Runs the scenario and adds its rows.
pub async fn run(report: &mut Report, n: usize, ctr_n: usize) -> Result<()> {
    eprintln!("wasm-start: 1 cold + {n} warm bound ticker pods, one at a time");
    let w = measure_wasm(n).await?;
    print_distribution(&w.warm);
    if w.slow_stops > 0 {
        eprintln!(
            "  note: {} pods were not stopped by the agent within {STOP_CAP:?} of their delete",
            w.slow_stops
        );
    }
    let (p50, p99) = (pct_ms(&w.warm, 50.0), pct_ms(&w.warm, 99.0));
    eprintln!(
        "  warm: n={} min {:.1} p50 {p50:.1} p99 {p99:.1} max {:.1} ms; first status report p50 {:.1} ms",
        w.warm.len(),
        pct_ms(&w.warm, 0.0),
        pct_ms(&w.warm, 100.0),
        pct_ms(&w.first_report, 50.0)
    );

    eprintln!("wasm-start anchor: `ctr run --rm` busybox, {ctr_n} times, private containerd + runc");
    let ctr = crate::containerd_anchor::ctr_run(ctr_n).await;
    let (ctr_p50, ctr_p99, ctr_name) = match &ctr {
        Ok(d) => (
            Some(pct_ms(d, 50.0)),
            Some(pct_ms(d, 99.0)),
            format!("ctr run --rm busybox true, containerd+runc, n={}", d.len()),
        ),
        Err(e) => {
            eprintln!("  anchor not measured: {e:#}");
            (None, None, format!("ctr run --rm (not measured: {e})"))
        }
    };
    let scenario = format!("Wasm pod start, bound → running, n={}", w.warm.len());
    report.push(
        Row {
            scenario: scenario.clone(),
            metric: "p50 ms".into(),
            shturman: p50,
            anchor_name: ctr_name.clone(),
            anchor: ctr_p50,
            goal: "<= 1/20 of ctr run p50 (ratio <= 0.05)".into(),
            higher_is_better: false,
        }
        .check(crate::report::Goal::RatioAtMost(0.05)),
    );
    report.push(Row {
        scenario,
        metric: "p99 ms".into(),
        shturman: p99,
        anchor_name: ctr_name,
        anchor: ctr_p99,
        goal: "informational".into(),
        higher_is_better: false,
    });
    report.push(Row {
        scenario: "Wasm pod start, bound → node's first status report".into(),
        metric: "p50 ms".into(),
        shturman: pct_ms(&w.first_report, 50.0),
        anchor_name: "-".into(),
        anchor: None,
        goal: "informational (where the time goes)".into(),
        higher_is_better: false,
    });
    report.push(Row {
        scenario: "Wasm pod cold start (fetch + compile + run), n=1".into(),
        metric: "ms".into(),
        shturman: w.cold.as_secs_f64() * 1e3,
        anchor_name: "ctr run --rm p50 (image already unpacked)".into(),
        anchor: ctr_p50,
        goal: "informational".into(),
        higher_is_better: false,
    });
    if let Some(a) = ctr_p50 {
        eprintln!(
            "  ratio Shturman p50 / ctr run p50 = {:.4} (goal <= 0.05, i.e. >= 20x faster): {}",
            p50 / a,
            if p50 / a <= 0.05 { "met" } else { "MISSED" }
        );
    }
    Ok(())
}
