//! Wasm HTTP pods end to end: the real `shturman up --pod-cidr
//! 127.42.1.0/24` (control plane, broker and a local agent) runs a
//! 3-replica `http-hello` Deployment (a `wasi:http/incoming-handler`
//! component built from wasm-examples). Every pod gets its own loopback IP,
//! reaches Running and Ready through its readiness probe, answers on
//! `<pod IP>:8080` with its own name and a counter kept in its emptyDir,
//! and `shturman logs` shows one access-log line per request.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use shturman_e2e::api::{Api, eventually};
use shturman_e2e::{Up, stderr, stdout, workspace_root};

/// The http-hello component; scripts/test.sh builds it first.
fn http_hello_wasm() -> PathBuf {
    let p = workspace_root().join("wasm-examples/http-hello/target/wasm32-wasip2/release/http_hello.wasm");
    assert!(
        p.exists(),
        "{} is missing: run scripts/build-wasm-examples.sh (scripts/test.sh does)",
        p.display()
    );
    p
}

fn is_running_and_ready(p: &Value) -> bool {
    p["status"]["phase"] == "Running"
        && p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_hello_deployment_serves_on_each_pods_own_ip() {
    let wasm = http_hello_wasm();
    let up = tokio::task::block_in_place(|| Up::start(Some("edge-1"), &["--pod-cidr", "127.42.1.0/24"]))
        .expect("shturman up");
    let manifest = format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: http-hello
spec:
  replicas: 3
  selector:
    matchLabels:
      app: http-hello
  template:
    metadata:
      labels:
        app: http-hello
    spec:
      runtimeClassName: wasmtime
      containers:
      - name: http-hello
        image: file://{}
        ports:
        - name: http
          containerPort: 8080
        env:
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        volumeMounts:
        - name: data
          mountPath: /data
        readinessProbe:
          httpGet:
            path: /healthz
            port: http
          periodSeconds: 1
        resources:
          limits:
            cpu: 200m
            memory: 32Mi
      volumes:
      - name: data
        emptyDir: {{}}
",
        wasm.display()
    );
    let out = tokio::task::block_in_place(|| up.cli_stdin(&["apply", "-f", "-"], Some(&manifest)));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "deployment.apps/http-hello created");

    let token = std::fs::read_to_string(up.admin_conf())
        .unwrap()
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: ").map(str::to_string))
        .unwrap();
    let api = Api::new(&up.url, &token);
    let pods = eventually(
        "3 http-hello pods Running and Ready",
        Duration::from_secs(90),
        || async {
            let pods = api
                .items("/api/v1/namespaces/default/pods?labelSelector=app%3Dhttp-hello")
                .await?;
            Ok((pods.len() == 3 && pods.iter().all(is_running_and_ready)).then_some(pods))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", up.log_text()));

    // Each pod its own address in the pod CIDR (never .0 or .1).
    let ips: BTreeSet<String> = pods
        .iter()
        .map(|p| p["status"]["podIP"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ips.len(), 3, "distinct pod IPs: {ips:?}");
    for ip in &ips {
        let last: u8 = ip
            .strip_prefix("127.42.1.")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{ip} is not in 127.42.1.0/24"));
        assert!(last >= 2, "{ip}");
    }
    let out = tokio::task::block_in_place(|| up.cli(&["get", "deploy", "http-hello"]));
    assert!(stdout(&out).contains("3/3"), "{}", stdout(&out));
    let out = tokio::task::block_in_place(|| up.cli(&["get", "pods", "-o", "wide"]));
    for ip in &ips {
        assert!(stdout(&out).contains(ip.as_str()), "{}", stdout(&out));
    }

    // Each pod answers on its own IP with its own name; the counter is the
    // pod's (in its emptyDir), not the instance's.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for p in &pods {
        let name = p["metadata"]["name"].as_str().unwrap();
        let ip = p["status"]["podIP"].as_str().unwrap();
        for n in 1..=2 {
            let resp = http.get(format!("http://{ip}:8080/")).send().await.unwrap();
            assert_eq!(resp.status().as_u16(), 200);
            assert_eq!(
                resp.text().await.unwrap(),
                format!("hello from {name} (request #{n})\n")
            );
        }
    }

    // `shturman logs` shows the access log: one line per request.
    for p in &pods {
        let name = p["metadata"]["name"].as_str().unwrap();
        let out = tokio::task::block_in_place(|| up.cli(&["logs", name]));
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        let hits = text
            .lines()
            .filter(|l| l.contains("\"GET / HTTP/1.1\" 200"))
            .count();
        assert_eq!(hits, 2, "{name}'s log:\n{text}");
        assert!(
            text.contains("\"GET /healthz HTTP/1.1\" 200"),
            "the readiness probe's requests too:\n{text}"
        );
    }
}
