//! Scale, in small: the real `shturman control` (embedded broker, sled
//! store, scheduler, controllers) and 50 hollow nodes of the fleet
//! simulator speaking the real MQTT protocol. A 200-replica Wasm Deployment
//! is scheduled over them, every pod is reported Running through the
//! agent's report path, then the Deployment is scaled to zero and deleted
//! and every pod is gone from the API and from the nodes.

use std::time::Duration;

use anyhow::{Result, ensure};
use serde_json::{Value, json};
use shturman_e2e::api::{Api, eventually, is_ready, is_running_and_ready};
use shturman_e2e::sim::fleet::{Fleet, FleetConfig};
use shturman_e2e::{ControlPlane, free_port, stderr, stdout};

const NODES: usize = 50;
const REPLICAS: usize = 200;
const DEPLOY: &str = "/apis/apps/v1/namespaces/default/deployments";
const PODS: &str = "/api/v1/namespaces/default/pods?labelSelector=app%3Dfleet";
/// Generous for a 2-core CI machine running other tests at once.
const WAIT: Duration = Duration::from_secs(120);

fn deployment(replicas: usize) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "fleet"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "fleet"}},
                 "template": {"metadata": {"labels": {"app": "fleet"}},
                              "spec": {"runtimeClassName": "wasmtime",
                                       "containers": [{"name": "app", "image": "ticker.wasm",
                                           "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}}})
}

async fn pods(api: &Api) -> Result<Vec<Value>> {
    api.items(PODS).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_runs_on_a_simulated_fleet_and_goes_away() -> Result<()> {
    let mqtt = free_port();
    let mqtt_addr = format!("127.0.0.1:{mqtt}");
    let cp = tokio::task::block_in_place(|| ControlPlane::start_with(&["--mqtt-addr", &mqtt_addr]))?;
    let api = Api::new(&cp.url, &cp.token);
    let out = tokio::task::block_in_place(|| cp.cli(&["token", "create"]));
    ensure!(out.status.success(), "token create: {}", stderr(&out));
    let token = stdout(&out).trim().to_string();

    let mut cfg = FleetConfig::new("127.0.0.1", mqtt, NODES, &token);
    cfg.prefix = "hollow".into();
    cfg.period = Duration::from_secs(2);
    cfg.connects_per_sec = 100;
    cfg.report_delay = Duration::from_millis(100);
    let fleet = Fleet::start(cfg);
    fleet.wait_joined(WAIT).await?;
    eventually("every simulated node Ready in the API", WAIT, || async {
        let nodes = api.items("/api/v1/nodes").await?;
        let ready = nodes
            .iter()
            .filter(|n| {
                n["metadata"]["name"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("hollow-"))
            })
            .filter(|n| is_ready(n))
            .count();
        Ok((ready == NODES).then_some(()))
    })
    .await?;

    let (code, body) = api.post(DEPLOY, &deployment(REPLICAS)).await?;
    ensure!(code == 201, "create: {code} {body}");
    let running = eventually("every replica Running and Ready", WAIT, || async {
        let ps = pods(&api).await?;
        let n = ps.iter().filter(|p| is_running_and_ready(p)).count();
        Ok((n == REPLICAS).then_some(ps))
    })
    .await?;
    // Spread by the scheduler over the fleet, each on a node that said so.
    let mut on: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for p in &running {
        let node = p["spec"]["nodeName"].as_str().unwrap_or_default().to_string();
        ensure!(node.starts_with("hollow-"), "pod on {node:?}");
        ensure!(
            p["status"]["containerStatuses"][0]["state"]["running"].is_object(),
            "no running container in {p}"
        );
        *on.entry(node).or_default() += 1;
    }
    ensure!(on.len() >= NODES / 2, "200 pods on only {} nodes", on.len());
    let held = fleet.snapshot();
    ensure!(
        held.pods_held == REPLICAS as u64,
        "the nodes hold {} pods, not {REPLICAS}",
        held.pods_held
    );
    ensure!(held.pods_reported >= REPLICAS as u64);

    let (code, body) = api
        .patch(&format!("{DEPLOY}/fleet"), &json!({"spec": {"replicas": 0}}))
        .await?;
    ensure!(code == 200, "scale: {code} {body}");
    eventually("every pod gone from the API", WAIT, || async {
        Ok(pods(&api).await?.is_empty().then_some(()))
    })
    .await?;
    eventually("every pod withdrawn from the nodes", WAIT, || async {
        Ok((fleet.snapshot().pods_held == 0).then_some(()))
    })
    .await?;
    let (code, body) = api.delete(&format!("{DEPLOY}/fleet")).await?;
    ensure!(code == 200, "delete: {code} {body}");
    let s = fleet.snapshot();
    ensure!(s.refused == 0 && s.joined == NODES, "{s:?}");
    fleet.stop().await;
    Ok(())
}
