//! Services end to end through every agent's proxy: the real `shturman up`
//! (node `edge-a`, `--node-ip 127.0.0.2`) and a second `shturman-agent`
//! (node `edge-b`, `--node-ip 127.0.0.3`), both on one private containerd
//! (tests/src/containerd.rs; sandboxes are told apart by node label) and a
//! Service CIDR inside `127.0.0.0/8`, so every address stays on loopback
//! and no interface is touched.
//!
//! A NodePort Service over 3 busybox httpd replicas (each serving its own
//! pod name, from the downward API) answers on its cluster IP (both agents
//! listen on it with `SO_REUSEPORT`) and on its node port on both node IPs;
//! 60 requests reach all 3 replicas. A connection opened before an
//! endpoints change completes after it. Scaling down removes the pods from
//! the proxies, and no new request fails or reaches them. Both nodes'
//! counters show up in the control plane's `/metrics`.
//!
//! Needs root, containerd, runc, the CNI plugins, docker-registry, skopeo
//! and busybox-static (scripts/setup.sh installs them).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use shturman_e2e::api::{Api, eventually, is_ready, is_running_and_ready};
use shturman_e2e::containerd::Containerd;
use shturman_e2e::registry::Registry;
use shturman_e2e::service_client::{self, read_answer, ready_endpoints};
use shturman_e2e::{Agent, Up, oci_image, stderr};

const NODE_A: &str = "edge-a";
const NODE_B: &str = "edge-b";
const IP_A: &str = "127.0.0.2";
const IP_B: &str = "127.0.0.3";
const SERVICE_CIDR: &str = "127.43.0.0/16";

/// The Deployment and its NodePort Service.
fn manifest(image: &str, replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: {replicas}
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
        image: {image}
        command: ["/bin/sh", "-c", "mkdir -p /tmp/www && echo \"$POD_NAME\" > /tmp/www/index.html && exec /bin/busybox httpd -f -p 80 -h /tmp/www"]
        env:
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        ports:
        - name: http
          containerPort: 80
        # Ready once httpd accepts, not merely once it runs.
        readinessProbe:
          tcpSocket:
            port: http
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: NodePort
  selector:
    app: web
  ports:
  - port: 80
    targetPort: http
"#
    )
}

/// `n` requests through `addr`, counted by pod; any failure is an error naming it.
fn spread(addr: SocketAddr, n: usize) -> Result<BTreeMap<String, usize>, String> {
    service_client::spread(addr, "web", n, |body| Ok(body.to_string()))
}

/// The endpoint count the proxy last logged for `default/web:80`.
fn proxy_endpoints(log: &str) -> Option<usize> {
    service_client::proxy_endpoints(log, "default/web:80")
}

struct Cluster {
    // Dropped in reverse: the agent and `up` first, then the registry and containerd.
    _registry: Registry,
    containerd: Containerd,
    up: Up,
    agent: Agent,
    _agent_root: tempfile::TempDir,
    api: Api,
    httpd: String,
}

impl Cluster {
    fn start() -> Cluster {
        let containerd = Containerd::start().expect("private containerd");
        let registry = Registry::start().expect("private registry");
        containerd
            .trust_plain_http(&registry.host())
            .expect("hosts.toml for the registry");
        let images = tempfile::tempdir().unwrap();
        let layout = oci_image::busybox_httpd(&images.path().join("httpd")).expect("busybox-httpd layout");
        let httpd = registry
            .push_layout(&layout.dir, "busybox-httpd:1")
            .expect("push busybox-httpd");
        let socket = containerd.socket().display().to_string();
        let up = Up::start_with_env(
            Some(NODE_A),
            &[
                "--containerd-socket",
                &socket,
                "--service-cidr",
                SERVICE_CIDR,
                "--node-ip",
                IP_A,
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
                &socket,
                "--node-ip",
                IP_B,
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
            _registry: registry,
            containerd,
            up,
            agent,
            _agent_root: agent_root,
            api,
            httpd,
        }
    }

    fn logs(&self) -> String {
        format!(
            "--- shturman up ---\n{}\n--- agent {NODE_B} ---\n{}\n--- containerd (tail) ---\n{}",
            self.up.log_text(),
            self.agent.log_text(),
            shturman_e2e::containerd::tail(&self.containerd.log_text(), 40),
        )
    }

    fn apply(&self, replicas: u32) {
        let out = self
            .up
            .cli_stdin(&["apply", "-f", "-"], Some(&manifest(&self.httpd, replicas)));
        assert!(out.status.success(), "{}", stderr(&out));
    }

    /// Waits until the Endpoints list exactly `n` ready pods and both
    /// proxies applied `n` endpoints; returns the pod names.
    async fn wait_endpoints(&self, n: usize) -> BTreeSet<String> {
        let pods = eventually(
            &format!("{n} ready endpoints"),
            Duration::from_secs(150),
            || async {
                let (code, ep) = self.api.get("/api/v1/namespaces/default/endpoints/web").await?;
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
async fn node_port_service_over_oci_replicas_on_two_nodes() {
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

    c.apply(3);
    let pods = eventually(
        "3 web pods Running and Ready",
        Duration::from_secs(150),
        || async {
            let pods = api
                .items("/api/v1/namespaces/default/pods?labelSelector=app%3Dweb")
                .await?;
            Ok((pods.len() == 3 && pods.iter().all(is_running_and_ready)).then_some(pods))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    // Spread over both nodes: each proxy has local and remote endpoints.
    let nodes: BTreeSet<&str> = pods
        .iter()
        .filter_map(|p| p["spec"]["nodeName"].as_str())
        .collect();
    assert_eq!(nodes, BTreeSet::from([NODE_A, NODE_B]));
    let three = c.wait_endpoints(3).await;

    let (_, svc) = api.get("/api/v1/namespaces/default/services/web").await.unwrap();
    let cluster_ip = svc["spec"]["clusterIP"].as_str().unwrap_or_default().to_string();
    assert!(cluster_ip.starts_with("127.43."), "{svc}");
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
        via_nodes.extend(seen.into_keys());
    }
    assert_eq!(via_nodes, three);

    // A connection opened before an endpoints change (a 4th replica) is
    // served after it: half a request now, the rest once both proxies
    // took the new endpoints.
    let mut long = TcpStream::connect_timeout(&cluster, Duration::from_secs(3)).unwrap();
    long.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    long.write_all(b"GET / HTTP/1.0\r\n").unwrap();
    c.apply(4);
    let four = c.wait_endpoints(4).await;
    assert!(three.is_subset(&four));
    long.write_all(b"Host: web\r\n\r\n").unwrap();
    let body =
        read_answer(&mut long).unwrap_or_else(|e| panic!("the long-lived connection: {e}\n{}", c.logs()));
    assert!(four.contains(&body), "{body:?} is one of {four:?}");
    // Closed now: while it stays open, least-connections rightly steers
    // every new connection away from its backend.
    drop(long);

    // Scaling down to 2: once the proxies have the new endpoints, no request
    // fails and none reaches a removed pod.
    c.apply(2);
    let two = c.wait_endpoints(2).await;
    let removed: BTreeSet<String> = four.difference(&two).cloned().collect();
    assert_eq!(removed.len(), 2);
    for addr in [cluster, node_a, node_b] {
        let seen =
            tokio::task::block_in_place(|| spread(addr, 60)).unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
        let got: BTreeSet<String> = seen.keys().cloned().collect();
        assert_eq!(
            got,
            two,
            "through {addr}: {seen:?} (removed: {removed:?})\n{}",
            c.logs()
        );
    }

    // Both nodes' proxy counters reach /metrics.
    eventually("both nodes' proxy counters in /metrics", Duration::from_secs(30), || async {
        let (_, text) = api.get("/metrics").await?;
        let text = text.as_str().unwrap_or_default().to_string();
        let count = |node: &str| -> Option<u64> {
            let prefix = format!(
                "shturman_proxy_connections_total{{node=\"{node}\",namespace=\"default\",service=\"web\",port=\"80\"}} "
            );
            text.lines().find_map(|l| l.strip_prefix(prefix.as_str())?.parse().ok())
        };
        Ok(match (count(NODE_A), count(NODE_B)) {
            (Some(a), Some(b)) if a > 0 && b > 0 && a + b >= 60 + 60 + 1 + 180 => Some(()),
            _ => None,
        })
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
}
