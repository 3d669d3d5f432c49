//! Apply → all replicas Running, and the control plane's memory with a
//! populated fleet.
//!
//! - `deploy`: a 100-replica Wasm Deployment of the `ticker` example,
//!   timed from the create's response until a pod watch through the API
//!   ([`crate::podwatch`]) has seen every replica Running:
//!   1. on one real node (the release `shturman-agent`, real Wasm pods);
//!      anchor, same run: 100 `ctr run -d` busybox containers started one
//!      after another on containerd + runc (the private containerd of
//!      `shturman_e2e::containerd`), wall clock until the last returned;
//!   2. on ten simulated nodes (`shturman_e2e::sim::fleet`) that report
//!      each pod Running after a fixed delay (a Wasm pod's start); the
//!      anchor is the same figure without the scheduler, informational.
//! - `fleet-rss`: the control plane's RSS with 1,000 simulated nodes and
//!   10,000 pods Running (a Deployment over them), next to the same
//!   process idle before the fleet joined.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use shturman_e2e::api::{Api, is_ready};
use shturman_e2e::containerd::{CTR_NAMESPACE, Containerd};
use shturman_e2e::oci_image;
use shturman_e2e::sim::fleet::{Fleet, FleetConfig};

use crate::podwatch::PodWatch;
use crate::procfs::{self, mib};
use crate::report::{Goal, Report, Row};
use crate::spawn::{Agent, Control, join_token};
use crate::wasm_start::ticker_wasm;

const LABEL: &str = "app=bench-deploy";

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    pub replicas: usize,
    pub sim_nodes: usize,
    /// A simulated node's delay from receiving a pod to reporting it Running.
    pub sim_delay: Duration,
    /// Longest wait for all replicas.
    pub cap: Duration,
}

fn deployment(replicas: usize, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "bench-deploy"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "bench-deploy"}},
            "template": {
                "metadata": {"labels": {"app": "bench-deploy"}},
                "spec": {
                    "runtimeClassName": "wasmtime",
                    "containers": [{
                        "name": "ticker",
                        "image": image,
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

/// Creates the Deployment and waits until the watch has seen `replicas`
/// pods Running; the time from the create's response to that event. As any
/// Kubernetes client, it starts over from a fresh list when the server ends
/// the watch (a watcher that fell behind gets a 410 `ERROR` and the end).
async fn apply_until_running(
    control: &Control,
    replicas: usize,
    image: &str,
    cap: Duration,
) -> Result<Duration> {
    let mut watch = PodWatch::start(control, LABEL).await?;
    let api = Api::new(&control.url, &control.token);
    let (code, body) = api
        .post(
            "/apis/apps/v1/namespaces/default/deployments",
            &deployment(replicas, image),
        )
        .await?;
    let t0 = Instant::now();
    if code != 201 {
        bail!("creating the Deployment answered {code}: {body}");
    }
    let mut running: HashMap<String, bool> = HashMap::new();
    let mut rewatches = 0;
    loop {
        let left = cap.saturating_sub(t0.elapsed());
        if left.is_zero() {
            let n = running.values().filter(|r| **r).count();
            bail!("only {n} of {replicas} replicas Running after {cap:?}");
        }
        match tokio::time::timeout(left, watch.events.recv()).await {
            Ok(Some(ev)) if ev.kind == "ERROR" => {
                eprintln!("  the pod watch ended with an ERROR event; watching again");
            }
            Ok(Some(ev)) => {
                if ev.kind == "DELETED" {
                    running.remove(&ev.name);
                } else if !ev.name.is_empty() {
                    running.insert(ev.name.clone(), ev.running && ev.phase == "Running");
                }
                if running.values().filter(|r| **r).count() >= replicas {
                    return Ok(ev.at.saturating_duration_since(t0));
                }
            }
            Ok(None) => {
                // The new watch lists every pod again as ADDED.
                rewatches += 1;
                if rewatches > MAX_REWATCHES {
                    bail!("the pod watch ended {rewatches} times");
                }
                running.clear();
                watch = PodWatch::start(control, LABEL).await?;
            }
            Err(_) => {}
        }
    }
}

/// How often `apply_until_running` starts its watch over before giving up.
const MAX_REWATCHES: usize = 20;

/// 100 `ctr run -d` busybox `sleep` containers one after another: the wall
/// clock until the last `ctr` returned (blocking).
fn ctr_run_detached(n: usize) -> Result<Duration> {
    let c = Containerd::start().context("starting the private containerd")?;
    let layout = oci_image::busybox(&c.dir().join("images").join("busybox"))
        .context("building the busybox OCI image")?;
    c.import_layout(CTR_NAMESPACE, &layout)
        .context("importing busybox")?;
    let image = layout.reference();
    let ids: Vec<String> = (0..n)
        .map(|i| format!("deploy-{}-{i}", std::process::id()))
        .collect();
    let run = |id: &str| -> Result<()> {
        let flags = c.run_flags(id);
        let mut args = vec!["-n", CTR_NAMESPACE, "run", "-d"];
        args.extend(flags.iter().map(String::as_str));
        args.extend([image.as_str(), id, "sleep", "100000"]);
        c.ctr_ok(&args).map(|_| ())
    };
    // One untimed container first: caches warm, as the Wasm side's module
    // cache is warm after its first pod.
    let warm = format!("deploy-warm-{}", std::process::id());
    let warmed = run(&warm);
    let t0 = Instant::now();
    let result = ids.iter().try_for_each(|id| run(id)).map(|()| t0.elapsed());
    for id in ids.iter().chain([&warm]) {
        let _ = c.ctr(&["-n", CTR_NAMESPACE, "tasks", "kill", "-s", "SIGKILL", id]);
        let _ = c.ctr(&["-n", CTR_NAMESPACE, "tasks", "delete", "-f", id]);
        let _ = c.ctr(&["-n", CTR_NAMESPACE, "containers", "rm", id]);
    }
    warmed?;
    result
}

/// A fleet of `nodes` simulated nodes joined to `control`.
async fn fleet(control: &Control, nodes: usize, delay: Duration) -> Result<Fleet> {
    let token = join_token(control).await?;
    let mut cfg = FleetConfig::new("127.0.0.1", control.mqtt_port, nodes, &token);
    cfg.report_delay = delay;
    cfg.connects_per_sec = 100;
    let f = Fleet::start(cfg);
    #[allow(clippy::cast_precision_loss)]
    let ramp = Duration::from_secs_f64(nodes as f64 / 100.0);
    f.wait_joined(ramp + Duration::from_secs(120)).await?;
    // Every node Ready in the API before the clock starts.
    let api = Api::new(&control.url, &control.token);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ready = api
            .items("/api/v1/nodes?labelSelector=shturman.io%2Fsimulated%3Dtrue")
            .await?
            .iter()
            .filter(|n| is_ready(n))
            .count();
        if ready >= nodes {
            return Ok(f);
        }
        if Instant::now() > deadline {
            bail!("only {ready} of {nodes} simulated nodes Ready after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `deploy` and adds its rows.
pub async fn run(report: &mut Report, opts: &Options) -> Result<()> {
    let n = opts.replicas;
    let wasm = ticker_wasm()?;
    let image = format!("file://{}", wasm.display());
    eprintln!("deploy: {n}-replica Wasm Deployment on one real node");
    let one = {
        let control = Control::start("sled").await?;
        let max = (n + 10).to_string();
        let agent = Agent::start(&control, "bench-deploy", &["--max-pods", &max]).await?;
        let r = apply_until_running(&control, n, &image, opts.cap).await;
        if r.is_err() {
            eprintln!("agent log (tail):\n{}", agent.log_tail(30));
        }
        r?
    };
    eprintln!("  {n} Running {:.2} s after the create", one.as_secs_f64());
    let anchor = tokio::task::spawn_blocking(move || ctr_run_detached(n))
        .await
        .context("the ctr anchor panicked")??;
    eprintln!("  anchor: {n} ctr run -d in {:.2} s", anchor.as_secs_f64());
    report.push(
        Row {
            scenario: format!("apply → {n} replicas Running, Wasm, one real node"),
            metric: "seconds, create to all Running (API watch)".into(),
            shturman: one.as_secs_f64(),
            anchor_name: format!("{n} × ctr run -d busybox, containerd + runc, one after another"),
            anchor: Some(anchor.as_secs_f64()),
            goal: "<= 1.0x the anchor".into(),
            higher_is_better: false,
        }
        .check(Goal::RatioAtMost(1.0)),
    );

    eprintln!(
        "deploy: {n}-replica Deployment on {} simulated nodes (each pod reported Running {} ms after it arrives)",
        opts.sim_nodes,
        opts.sim_delay.as_millis()
    );
    let control = Control::start("sled").await?;
    let f = fleet(&control, opts.sim_nodes, opts.sim_delay).await?;
    let sim = apply_until_running(&control, n, "ticker.wasm", opts.cap).await;
    f.stop().await;
    let sim = sim?;
    eprintln!("  {n} Running {:.2} s after the create", sim.as_secs_f64());
    report.push(
        Row {
            scenario: format!(
                "apply → {n} replicas Running, {} simulated nodes, {} ms start",
                opts.sim_nodes,
                opts.sim_delay.as_millis()
            ),
            metric: "seconds, create to all Running (API watch)".into(),
            shturman: sim.as_secs_f64(),
            anchor_name: "-".into(),
            anchor: None,
            goal: "informational (control plane path: controllers, scheduler, MQTT, reports)".into(),
            higher_is_better: false,
        }
        .check(Goal::Informational),
    );
    Ok(())
}

/// Runs `fleet-rss`: `nodes` simulated nodes and `pods` pods Running.
pub async fn run_rss(report: &mut Report, nodes: usize, pods: usize, cap: Duration) -> Result<()> {
    eprintln!("fleet-rss: control plane memory with {nodes} simulated nodes and {pods} pods Running");
    let control = Control::start("sled").await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = procfs::rss_kib(control.pid())?;
    let f = fleet(&control, nodes, Duration::from_millis(50)).await?;
    let r = apply_until_running(&control, pods, "ticker.wasm", cap).await;
    let figures = match r {
        Ok(t) => {
            eprintln!(
                "  {pods} Running {:.1} s after the create; settling",
                t.as_secs_f64()
            );
            // Let the informers, queues and the broker's logs settle.
            tokio::time::sleep(Duration::from_secs(20)).await;
            let rss = procfs::rss_kib(control.pid())?;
            let hwm = procfs::status_kib(control.pid(), "VmHWM:")?;
            Ok((rss, hwm, t))
        }
        Err(e) => Err(e),
    };
    f.stop().await;
    let (rss, hwm, t) = figures?;
    eprintln!(
        "  RSS {:.0} MiB (peak {:.0} MiB), idle {:.0} MiB",
        mib(rss),
        mib(hwm),
        mib(idle)
    );
    let scenario = format!("footprint, control plane with {nodes} simulated nodes and {pods} pods Running");
    report.push(
        Row {
            scenario: scenario.clone(),
            metric: "control plane RSS MiB".into(),
            shturman: mib(rss),
            anchor_name: "same process idle, no nodes".into(),
            anchor: Some(mib(idle)),
            goal: "<= 200 MiB".into(),
            higher_is_better: false,
        }
        .check(Goal::AtMost(200.0)),
    );
    report.push(
        Row {
            scenario: scenario.clone(),
            metric: "control plane peak RSS MiB (VmHWM)".into(),
            shturman: mib(hwm),
            anchor_name: "same process idle, no nodes".into(),
            anchor: Some(mib(idle)),
            goal: "informational".into(),
            higher_is_better: false,
        }
        .check(Goal::Informational),
    );
    report.push(
        Row {
            scenario,
            metric: "seconds, create to all Running (API watch)".into(),
            shturman: t.as_secs_f64(),
            anchor_name: "-".into(),
            anchor: None,
            goal: "informational".into(),
            higher_is_better: false,
        }
        .check(Goal::Informational),
    );
    Ok(())
}
