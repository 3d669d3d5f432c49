//! A node without containerd is never given an OCI pod: the real
//! `shturman up`, its local agent pointed at a containerd socket that does
//! not exist, keeps an OCI Deployment's pod Pending, and `describe pod` says
//! why in the scheduler's words, while a Wasm pod next to it runs.

use std::time::Duration;

use shturman_e2e::api::{Api, eventually};
use shturman_e2e::{Up, stderr, stdout};

fn token(up: &Up) -> String {
    std::fs::read_to_string(up.admin_conf())
        .expect("admin.conf")
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: ").map(str::to_string))
        .expect("a token in admin.conf")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_without_containerd_never_gets_an_oci_pod() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("no-containerd.sock");
    let absent = absent.to_str().unwrap().to_string();
    let up = tokio::task::block_in_place(|| {
        Up::start(Some("wasm-only"), &["--containerd-socket", absent.as_str()])
    })
    .expect("shturman up");
    let api = Api::new(&up.url, &token(&up));

    // The node is Ready and offers wasmtime only.
    let node = eventually("node wasm-only Ready", Duration::from_secs(60), || async {
        let (code, n) = api.get("/api/v1/nodes/wasm-only").await?;
        let ready = code == 200
            && n["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
        Ok(ready.then_some(n))
    })
    .await
    .unwrap();
    let runtimes = node["status"]["nodeInfo"]["containerRuntimeVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!runtimes.contains("containerd"), "node offers {runtimes:?}");

    let manifest = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: httpd
        image: 127.0.0.1:5000/busybox-httpd:1
        ports:
        - containerPort: 80
";
    let out = up.cli_stdin(&["apply", "-f", "-"], Some(manifest));
    assert!(out.status.success(), "{}", stderr(&out));

    let pod = eventually(
        "the web pod marked Unschedulable",
        Duration::from_secs(60),
        || async {
            let pods = api
                .items("/api/v1/namespaces/default/pods?labelSelector=app%3Dweb")
                .await?;
            Ok(pods.into_iter().find(|p| {
                p["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "PodScheduled" && c["reason"] == "Unschedulable")
            }))
        },
    )
    .await
    .unwrap();
    assert_eq!(pod["status"]["phase"], "Pending", "{pod:#}");
    assert!(pod["spec"]["nodeName"].is_null(), "bound: {pod:#}");

    let name = pod["metadata"]["name"].as_str().unwrap().to_string();
    let described = eventually(
        "describe pod names the missing runtime",
        Duration::from_secs(30),
        || async {
            let out = tokio::task::block_in_place(|| up.cli(&["describe", "pod", &name]));
            let text = stdout(&out);
            Ok(text
                .contains("don't offer the containerd runtime")
                .then_some(text))
        },
    )
    .await
    .unwrap();
    assert!(
        described.contains("0/1 nodes are available"),
        "describe lacks the scheduler's count:\n{described}"
    );
    assert!(described.contains("FailedScheduling"), "{described}");

    // Still unbound after the node's next heartbeat (which makes the
    // scheduler look at the pod again).
    let beat = |n: &serde_json::Value| {
        n["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Ready")
            .map(|c| c["lastHeartbeatTime"].clone())
    };
    let (_, before) = api.get("/api/v1/nodes/wasm-only").await.unwrap();
    let first = beat(&before);
    eventually("a newer node heartbeat", Duration::from_secs(60), || async {
        let (_, n) = api.get("/api/v1/nodes/wasm-only").await?;
        Ok((beat(&n) != first).then_some(()))
    })
    .await
    .unwrap();
    let (_, again) = api
        .get(&format!("/api/v1/namespaces/default/pods/{name}"))
        .await
        .unwrap();
    assert!(again["spec"]["nodeName"].is_null(), "bound later: {again:#}");
}
