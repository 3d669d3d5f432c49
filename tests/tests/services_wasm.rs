//! Services end to end over Wasm pods: the real `shturman up` (node
//! `wasm-a`, `--node-ip 127.0.0.12`, `--pod-cidr 127.46.1.0/24`) and a
//! second `shturman-agent` (node `wasm-b`, `--node-ip 127.0.0.13`,
//! `--pod-cidr 127.46.2.0/24`), both without containerd
//! (`--containerd-socket none`) and with a Service CIDR inside
//! `127.0.0.0/8`, so every address stays on loopback and no interface is
//! touched. The addresses differ from tests/services_proxy.rs's, so the two
//! can run side by side.
//!
//! A NodePort Service over 3 `http-hello` replicas (a
//! `wasi:http/incoming-handler` component from wasm-examples answering
//! `hello from <pod name> (request #n)` on `<pod IP>:8080`), spread over
//! both nodes, answers on its cluster IP (both agents listen on it) and on
//! its node port on both node IPs; 60 requests reach all 3 replicas.
//! Scaling down to 2 removes a pod from the endpoints and the proxies, and
//! no new request fails or reaches it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use shturman_e2e::api::{Api, eventually, is_ready, is_running_and_ready};
use shturman_e2e::service_client::{self, ready_endpoints};
use shturman_e2e::{Agent, Up, stderr, stdout, workspace_root};

const NODE_A: &str = "wasm-a";
const NODE_B: &str = "wasm-b";
const IP_A: &str = "127.0.0.12";
const IP_B: &str = "127.0.0.13";
const SERVICE_CIDR: &str = "127.45.0.0/16";
const POD_CIDR_A: &str = "127.46.1.0/24";
const POD_CIDR_B: &str = "127.46.2.0/24";

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

/// The Deployment and its NodePort Service.
fn manifest(wasm: &str, replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: http-hello
spec:
  replicas: {replicas}
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
        image: file://{wasm}
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
---
apiVersion: v1
kind: Service
metadata:
  name: http-hello
spec:
  type: NodePort
  selector:
    app: http-hello
  ports:
  - name: http
    port: 80
    targetPort: http
"#
    )
}

/// The pod name in `hello from <pod> (request #n)`.
fn pod_name(body: &str) -> Result<String, String> {
    body.strip_prefix("hello from ")
        .and_then(|rest| rest.split_once(" (request #"))
        .map(|(name, _)| name.to_string())
        .ok_or_else(|| format!("not a hello: {body:?}"))
}

/// `n` requests through `addr`, counted by pod; any failure is an error naming it.
fn spread(addr: SocketAddr, n: usize) -> Result<BTreeMap<String, usize>, String> {
    service_client::spread(addr, "http-hello", n, pod_name)
}

/// The endpoint count the proxy last logged for `default/http-hello:80`.
fn proxy_endpoints(log: &str) -> Option<usize> {
    service_client::proxy_endpoints(log, "default/http-hello:80")
}

struct Cluster {
    // Dropped in reverse: the agent first, then `up`.
    up: Up,
    agent: Agent,
    _agent_root: tempfile::TempDir,
    api: Api,
    wasm: String,
}

impl Cluster {
    fn start() -> Cluster {
        let wasm = http_hello_wasm().display().to_string();
        let up = Up::start_with_env(
            Some(NODE_A),
            &[
                "--containerd-socket",
                "none",
                "--service-cidr",
                SERVICE_CIDR,
                "--node-ip",
                IP_A,
                "--pod-cidr",
                POD_CIDR_A,
                // Heartbeats (and proxy counters) every 2 s.
                "--node-monitor-grace-period",
                "8s",
            ],
            &[("SHTURMAN_RESTART_BACKOFF_BASE_MS", "500")],
        )
        .expect("shturman up");
        let token = up.token().expect("a join token");
        let agent_root = tempfile::tempdir().unwrap();
        let agent = Agent::start(
            &up.mqtt_url,
            NODE_B,
            &token,
            agent_root.path(),
            &[
                "--containerd-socket",
                "none",
                "--node-ip",
                IP_B,
                "--service-cidr",
                SERVICE_CIDR,
                "--pod-cidr",
                POD_CIDR_B,
                "--heartbeat-interval",
                "1s",
            ],
        )
        .expect("second agent");
        let admin = std::fs::read_to_string(up.admin_conf()).expect("admin.conf");
        let admin_token = admin
            .lines()
            .find_map(|l| l.trim().strip_prefix("token: "))
            .expect("a token in admin.conf")
            .to_string();
        let api = Api::new(&up.url, &admin_token);
        Cluster {
            up,
            agent,
            _agent_root: agent_root,
            api,
            wasm,
        }
    }

    fn logs(&self) -> String {
        format!(
            "--- shturman up ---\n{}\n--- agent {NODE_B} ---\n{}",
            self.up.log_text(),
            self.agent.log_text(),
        )
    }

    fn apply(&self, replicas: u32) {
        let out = self
            .up
            .cli_stdin(&["apply", "-f", "-"], Some(&manifest(&self.wasm, replicas)));
        assert!(out.status.success(), "{}", stderr(&out));
    }

    /// Waits until the Endpoints list exactly `n` ready pods and both
    /// proxies applied `n` endpoints; returns the pod names.
    async fn wait_endpoints(&self, n: usize) -> BTreeSet<String> {
        let pods = eventually(
            &format!("{n} ready endpoints"),
            Duration::from_secs(120),
            || async {
                let (code, ep) = self
                    .api
                    .get("/api/v1/namespaces/default/endpoints/http-hello")
                    .await?;
                let ready = ready_endpoints(&ep);
                Ok((code == 200 && ready.len() == n).then_some(ready))
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()));
        eventually(
            &format!("both proxies to apply {n} endpoints"),
            Duration::from_secs(30),
            || async {
                let a = proxy_endpoints(&self.up.log_text());
                let b = proxy_endpoints(&self.agent.log_text());
                Ok((a == Some(n) && b == Some(n)).then_some(()))
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()));
        pods
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_port_service_over_wasm_replicas_on_two_nodes() {
    let c = tokio::task::block_in_place(Cluster::start);
    let api = &c.api;

    // Both nodes Ready.
    eventually("both nodes Ready", Duration::from_secs(60), || async {
        let nodes = api.items("/api/v1/nodes").await?;
        let ready = nodes.iter().filter(|n| is_ready(n)).count();
        Ok((ready == 2).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));

    tokio::task::block_in_place(|| c.apply(3));
    let pods = eventually(
        "3 http-hello pods Running and Ready",
        Duration::from_secs(120),
        || async {
            let pods = api
                .items("/api/v1/namespaces/default/pods?labelSelector=app%3Dhttp-hello")
                .await?;
            Ok((pods.len() == 3 && pods.iter().all(is_running_and_ready)).then_some(pods))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    // Spread over both nodes (the scheduler's default spreading of an
    // owner's replicas): each proxy has local and remote endpoints.
    let nodes: BTreeSet<&str> = pods
        .iter()
        .filter_map(|p| p["spec"]["nodeName"].as_str())
        .collect();
    assert_eq!(nodes, BTreeSet::from([NODE_A, NODE_B]), "{pods:?}");
    // Each pod's IP is in its node's pod CIDR.
    for p in &pods {
        let ip = p["status"]["podIP"].as_str().unwrap_or_default();
        let prefix = match p["spec"]["nodeName"].as_str() {
            Some(NODE_A) => "127.46.1.",
            _ => "127.46.2.",
        };
        assert!(ip.starts_with(prefix), "{p}");
    }
    eventually("the Deployment 3/3", Duration::from_secs(30), || async {
        let out = tokio::task::block_in_place(|| c.up.cli(&["get", "deploy", "http-hello"]));
        Ok(stdout(&out).contains("3/3").then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    let three = c.wait_endpoints(3).await;
    let names: BTreeSet<String> = pods
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    assert_eq!(three, names);

    let (_, svc) = api
        .get("/api/v1/namespaces/default/services/http-hello")
        .await
        .unwrap();
    let cluster_ip = svc["spec"]["clusterIP"].as_str().unwrap_or_default().to_string();
    assert!(cluster_ip.starts_with("127.45."), "{svc}");
    let node_port = u16::try_from(svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap_or(0)).unwrap();
    assert!(node_port >= 30000, "{svc}");
    let cluster: SocketAddr = format!("{cluster_ip}:80").parse().unwrap();
    let node_a: SocketAddr = format!("{IP_A}:{node_port}").parse().unwrap();
    let node_b: SocketAddr = format!("{IP_B}:{node_port}").parse().unwrap();

    // 60 requests on the cluster IP reach all 3 replicas; both node ports
    // answer and reach them too.
    let seen =
        tokio::task::block_in_place(|| spread(cluster, 60)).unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    assert_eq!(seen.keys().cloned().collect::<BTreeSet<_>>(), three, "{seen:?}");
    let mut via_nodes = BTreeSet::new();
    for addr in [node_a, node_b] {
        let seen =
            tokio::task::block_in_place(|| spread(addr, 30)).unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
        assert!(!seen.is_empty());
        via_nodes.extend(seen.into_keys());
    }
    assert_eq!(via_nodes, three);

    // Scaling down to 2: once the proxies have the new endpoints, no request
    // fails and none reaches the removed pod.
    tokio::task::block_in_place(|| c.apply(2));
    let two = c.wait_endpoints(2).await;
    assert!(two.is_subset(&three), "{two:?} within {three:?}");
    let removed: BTreeSet<String> = three.difference(&two).cloned().collect();
    assert_eq!(removed.len(), 1);
    for addr in [cluster, node_a, node_b] {
        let seen =
            tokio::task::block_in_place(|| spread(addr, 60)).unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
        let got: BTreeSet<String> = seen.keys().cloned().collect();
        assert_eq!(got, two, "through {addr}: {seen:?} (removed: {removed:?})");
    }
}
