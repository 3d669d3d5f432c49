//! `http-hello` (issue 7): requests/s to `wasi:http` Wasm pods through the
//! Service proxy, next to the same pods reached directly, same load
//! generator, same run, loopback only.
//!
//! - **Cluster**: the real release `shturman control` (Service CIDR
//!   `127.48.0.0/16`) and one real `shturman-agent` (`--node-ip
//!   127.0.0.21`, `--pod-cidr 127.49.1.0/24`, no containerd), so every
//!   address stays on loopback and no interface is touched.
//! - **Workload**: a 2-replica Deployment of the `http-hello` example (one
//!   instance per request from the pooling allocator; it answers with its
//!   pod name and a request counter) behind a ClusterIP Service, as a user
//!   would apply it.
//! - **Load**: `wrk` ([`crate::proxy`]'s settings) through the Service's
//!   cluster IP (the agent's proxy balancing over both pods) and, as the
//!   anchor, straight to one pod's IP; interleaved, 3 rounds, medians.
//!
//! Informational: the proxy's own goal is measured against HAProxy in
//! [`crate::proxy`]; this row shows what a Wasm HTTP pod serves and what
//! the proxy costs in front of it.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use shturman_e2e::api::{Api, eventually};

use crate::proxy::{self, Sample};
use crate::report::{Report, Row};
use crate::spawn::{Agent, Control};
use crate::wasm_start::example_wasm;

const SERVICE_CIDR: &str = "127.48.0.0/16";
const NODE_IP: &str = "127.0.0.21";
const POD_CIDR: &str = "127.49.1.0/24";
const REPLICAS: usize = 2;
const ROUNDS: usize = 3;
const WRK_SECS: u64 = 10;

fn deployment(wasm: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "http-hello"},
        "spec": {
            "replicas": REPLICAS,
            "selector": {"matchLabels": {"app": "http-hello"}},
            "template": {
                "metadata": {"labels": {"app": "http-hello"}},
                "spec": {
                    "runtimeClassName": "wasmtime",
                    "containers": [{
                        "name": "http-hello",
                        "image": format!("file://{wasm}"),
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1},
                    }],
                },
            },
        },
    })
}

fn service() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "http-hello"},
        "spec": {
            "selector": {"app": "http-hello"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    })
}

pub async fn run(report: &mut Report) -> Result<()> {
    eprintln!("http-hello: wasi:http Wasm pods through the Service proxy, next to direct");
    let wasm = example_wasm("http-hello", "http_hello.wasm")?;
    let control = Control::start_with("sled", &["--service-cidr", SERVICE_CIDR]).await?;
    let agent = Agent::start(
        &control,
        "hello-node",
        &[
            "--containerd-socket",
            "none",
            "--node-ip",
            NODE_IP,
            "--pod-cidr",
            POD_CIDR,
            "--service-cidr",
            SERVICE_CIDR,
        ],
    )
    .await?;
    let api = Api::new(&control.url, &control.token);
    for (path, body) in [
        (
            "/apis/apps/v1/namespaces/default/deployments",
            deployment(&wasm.display().to_string()),
        ),
        ("/api/v1/namespaces/default/services", service()),
    ] {
        let (code, answer) = api.post(path, &body).await?;
        if code != 201 {
            bail!("creating {path} answered {code}: {answer}");
        }
    }

    // Both pods ready in the Endpoints, and the proxy serving them.
    let pods: Vec<SocketAddr> = eventually("2 ready endpoints", Duration::from_secs(120), || async {
        let (code, ep) = api.get("/api/v1/namespaces/default/endpoints/http-hello").await?;
        let addrs: Vec<SocketAddr> = ep["subsets"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| {
                let port = s["ports"][0]["port"].as_u64().and_then(|p| u16::try_from(p).ok());
                s["addresses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(move |a| Some(SocketAddr::new(a["ip"].as_str()?.parse().ok()?, port?)))
            })
            .collect();
        Ok((code == 200 && addrs.len() == REPLICAS).then_some(addrs))
    })
    .await
    .with_context(|| agent.log_tail(30))?;
    let (_, svc) = api.get("/api/v1/namespaces/default/services/http-hello").await?;
    let cluster_ip: std::net::IpAddr = svc["spec"]["clusterIP"]
        .as_str()
        .context("the Service has no clusterIP")?
        .parse()?;
    let cluster = SocketAddr::new(cluster_ip, 80);
    eventually(
        "the proxy to serve both pods",
        Duration::from_secs(30),
        || async {
            let log = agent.log_text();
            Ok(log
                .lines()
                .rfind(|l| l.contains("service endpoints updated") && l.contains("default/http-hello:80"))
                .is_some_and(|l| l.contains(&format!("endpoints={REPLICAS}")))
                .then_some(()))
        },
    )
    .await
    .with_context(|| agent.log_tail(30))?;
    eprintln!("  pods {pods:?}; Service {cluster}");

    let targets = [("direct to one pod", pods[0]), ("through the proxy", cluster)];
    for (name, addr) in targets {
        proxy::wrk(addr, 2)
            .await
            .with_context(|| format!("warm-up {name}"))?;
    }
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); targets.len()];
    for round in 0..ROUNDS {
        for i in 0..targets.len() {
            let j = (i + round) % targets.len();
            let (name, addr) = targets[j];
            let s = proxy::wrk(addr, WRK_SECS)
                .await
                .with_context(|| format!("wrk {name}"))?;
            eprintln!(
                "  round {} {name:>17}: {:>8.0} req/s, p50 {:.3} ms, p99 {:.3} ms, errors {}",
                round + 1,
                s.rps,
                s.p50_ms,
                s.p99_ms,
                s.errors
            );
            if s.errors > 0 {
                bail!("wrk {name}: {} errors", s.errors);
            }
            samples[j].push(s);
        }
    }
    let med = |j: usize, f: fn(&Sample) -> f64| proxy::median(samples[j].iter().map(f).collect());
    let settings = format!(
        "wrk -t{} -c{} -d{WRK_SECS}s, median of {ROUNDS}",
        proxy::WRK_THREADS,
        proxy::WRK_CONNS
    );
    report.push(Row {
        scenario: "http-hello".into(),
        metric: format!("requests/s to 2 http-hello Wasm pods via the proxy ({settings})"),
        shturman: med(1, |s| s.rps),
        anchor_name: "the same pods, direct to one pod".into(),
        anchor: Some(med(0, |s| s.rps)),
        goal: "informational".into(),
        higher_is_better: true,
    });
    report.push(Row {
        scenario: "http-hello".into(),
        metric: "p99 latency via the proxy, ms".into(),
        shturman: med(1, |s| s.p99_ms),
        anchor_name: "the same pods, direct to one pod".into(),
        anchor: Some(med(0, |s| s.p99_ms)),
        goal: "informational".into(),
        higher_is_better: false,
    });
    drop(agent);
    drop(control);
    Ok(())
}
