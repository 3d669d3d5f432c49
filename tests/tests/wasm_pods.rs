//! Wasm pods end to end: the real `shturman up` (control plane, broker and a
//! local agent with the wasmtime runtime) runs a 3-replica `ticker`
//! Deployment built from wasm-examples, and the modules really run.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use shturman_e2e::api::{Api, eventually};
use shturman_e2e::{Up, stderr, stdout, ticker_wasm};

fn is_running_and_ready(p: &Value) -> bool {
    p["status"]["phase"] == "Running"
        && p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticker_deployment_runs_three_replicas() {
    let wasm = ticker_wasm();
    let up = tokio::task::block_in_place(|| Up::start(Some("edge-1"), &[])).expect("shturman up");
    let manifest = format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: ticker
spec:
  replicas: 3
  selector:
    matchLabels:
      app: ticker
  template:
    metadata:
      labels:
        app: ticker
    spec:
      runtimeClassName: wasmtime
      containers:
      - name: ticker
        image: file://{}
        resources:
          limits:
            cpu: 100m
            memory: 16Mi
",
        wasm.display()
    );
    let out = up.cli_stdin(&["apply", "-f", "-"], Some(&manifest));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "deployment.apps/ticker created");

    let token = std::fs::read_to_string(up.admin_conf())
        .unwrap()
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: ").map(str::to_string))
        .unwrap();
    let api = Api::new(&up.url, &token);
    let pods = eventually(
        "3 ticker pods Running and Ready",
        Duration::from_secs(90),
        || async {
            let pods = api
                .items("/api/v1/namespaces/default/pods?labelSelector=app%3Dticker")
                .await?;
            Ok((pods.len() == 3 && pods.iter().all(is_running_and_ready)).then_some(pods))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", up.log_text()));
    for p in &pods {
        assert_eq!(p["spec"]["nodeName"], "edge-1");
        let c = &p["status"]["containerStatuses"][0];
        assert!(c["state"]["running"].is_object(), "container running: {c}");
    }
    let out = up.cli(&["get", "deploy", "ticker"]);
    assert!(stdout(&out).contains("3/3"), "{}", stdout(&out));

    // The modules really run: each container's log on the node grows.
    let logs = up.data_dir().join("agent/logs");
    for p in &pods {
        let dir = format!(
            "default_{}_{}",
            p["metadata"]["name"].as_str().unwrap(),
            p["metadata"]["uid"].as_str().unwrap()
        );
        let file = logs.join(dir).join("ticker.log");
        let lines = |f: &PathBuf| std::fs::read_to_string(f).map(|t| t.lines().count()).unwrap_or(0);
        let first = eventually("ticker output", Duration::from_secs(30), || async {
            let n = lines(&file);
            Ok((n > 0).then_some(n))
        })
        .await
        .unwrap();
        eventually("more ticker output", Duration::from_secs(30), || async {
            Ok((lines(&file) > first).then_some(()))
        })
        .await
        .unwrap();
    }
}
