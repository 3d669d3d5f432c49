//! Simulated nodes. Two kinds, for two levels of test:
//!
//! - [`fleet`] (with [`node`]): hollow nodes that speak the real MQTT
//!   protocol — join, heartbeat, receive their desired pods and report them
//!   Running through the agent's path — many per process, for scale tests
//!   and the benchmarks.
//! - [`Sim`] here: nodes driven straight through the API, for the
//!   controllers' tests that need no MQTT at all: each registers a Node,
//!   heartbeats its Ready condition, and marks pods bound to it Running and
//!   Ready (or, for images named `…never-ready…`, Running but never Ready).
//!   Bounded: it stops when dropped, and after `MAX_LIFETIME` at the latest.

pub mod fleet;
pub mod node;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// No simulator outlives this.
const MAX_LIFETIME: Duration = Duration::from_secs(600);
/// How often nodes heartbeat and pods are looked at.
const TICK: Duration = Duration::from_millis(100);

/// One simulated node's shape.
#[derive(Clone, Debug)]
pub struct SimNode {
    pub name: String,
    pub arch: &'static str,
    pub milli_cpu: u64,
    pub memory_mib: u64,
    pub pods: u64,
    pub runtimes: Vec<&'static str>,
    pub labels: BTreeMap<String, String>,
}

impl SimNode {
    /// An amd64 node with 2 cpu, 4 GiB, 110 pods, both runtimes.
    pub fn new(name: &str) -> SimNode {
        SimNode {
            name: name.to_string(),
            arch: "amd64",
            milli_cpu: 2000,
            memory_mib: 4096,
            pods: 110,
            runtimes: vec!["wasmtime", "containerd"],
            labels: BTreeMap::new(),
        }
    }

    pub fn arch(mut self, arch: &'static str) -> Self {
        self.arch = arch;
        self
    }

    pub fn resources(mut self, milli_cpu: u64, memory_mib: u64) -> Self {
        self.milli_cpu = milli_cpu;
        self.memory_mib = memory_mib;
        self
    }

    pub fn runtimes(mut self, runtimes: &[&'static str]) -> Self {
        self.runtimes = runtimes.to_vec();
        self
    }

    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.insert(k.to_string(), v.to_string());
        self
    }

    fn object(&self) -> Value {
        let mut labels = self.labels.clone();
        labels.insert("kubernetes.io/arch".into(), self.arch.into());
        labels.insert("kubernetes.io/os".into(), "linux".into());
        labels.insert("kubernetes.io/hostname".into(), self.name.clone());
        json!({"apiVersion": "v1", "kind": "Node",
               "metadata": {"name": self.name, "labels": labels},
               "spec": {},
               "status": self.status()})
    }

    fn status(&self) -> Value {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let res = json!({"cpu": format!("{}m", self.milli_cpu), "memory": format!("{}Mi", self.memory_mib),
                         "pods": self.pods.to_string()});
        json!({"capacity": res, "allocatable": res,
               "conditions": [{"type": "Ready", "status": "True", "reason": "AgentReady",
                               "lastHeartbeatTime": now, "lastTransitionTime": now}],
               "nodeInfo": {"architecture": self.arch, "operatingSystem": "linux"},
               "runtimeHandlers": self.runtimes.iter().map(|r| json!({"name": r})).collect::<Vec<_>>()})
    }
}

struct Shared {
    /// Nodes that heartbeat (a node removed from here goes silent).
    alive: BTreeSet<String>,
    stop: bool,
}

/// A set of simulated nodes and their background loop.
pub struct Sim {
    shared: Arc<Mutex<Shared>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Sim {
    /// Registers `nodes` and starts heartbeating them and running their pods.
    pub async fn start(url: &str, token: &str, nodes: Vec<SimNode>) -> anyhow::Result<Sim> {
        let http = reqwest::Client::new();
        for n in &nodes {
            let r = http
                .post(format!("{url}/api/v1/nodes"))
                .bearer_auth(token)
                .json(&n.object())
                .send()
                .await?;
            anyhow::ensure!(
                r.status().is_success(),
                "node {} not registered: {}",
                n.name,
                r.text().await?
            );
        }
        let shared = Arc::new(Mutex::new(Shared {
            alive: nodes.iter().map(|n| n.name.clone()).collect(),
            stop: false,
        }));
        let (url, token, s) = (url.to_string(), token.to_string(), shared.clone());
        let task = tokio::spawn(async move {
            let started = Instant::now();
            while started.elapsed() < MAX_LIFETIME {
                let alive = {
                    let g = s.lock().expect("sim lock");
                    if g.stop {
                        return;
                    }
                    g.alive.clone()
                };
                for n in nodes.iter().filter(|n| alive.contains(&n.name)) {
                    let _ = tick_node(&http, &url, &token, n).await;
                }
                tokio::time::sleep(TICK).await;
            }
        });
        Ok(Sim {
            shared,
            task: Some(task),
        })
    }

    /// Stops a node's heartbeats (as if its agent died).
    pub fn silence(&self, node: &str) {
        self.shared.lock().expect("sim lock").alive.remove(node);
    }

    /// Resumes a node's heartbeats.
    pub fn revive(&self, node: &str) {
        self.shared
            .lock()
            .expect("sim lock")
            .alive
            .insert(node.to_string());
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Ok(mut g) = self.shared.lock() {
            g.stop = true;
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

async fn tick_node(http: &reqwest::Client, url: &str, token: &str, n: &SimNode) -> anyhow::Result<()> {
    // Heartbeat.
    let patch = json!({"status": n.status()});
    http.patch(format!("{url}/api/v1/nodes/{}/status", n.name))
        .bearer_auth(token)
        .header("content-type", "application/merge-patch+json")
        .json(&patch)
        .send()
        .await?;
    // Run what is bound here.
    let list: Value = http
        .get(format!(
            "{url}/api/v1/pods?fieldSelector=spec.nodeName%3D{}",
            n.name
        ))
        .bearer_auth(token)
        .send()
        .await?
        .json()
        .await?;
    for pod in list["items"].as_array().into_iter().flatten() {
        if pod["status"]["phase"] != "Pending" || pod["metadata"].get("deletionTimestamp").is_some() {
            continue;
        }
        let never = pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["image"].as_str().is_some_and(|i| i.contains("never-ready")));
        let ready = if never { "False" } else { "True" };
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let containers: Vec<Value> = pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                json!({"name": c["name"], "image": c["image"], "ready": !never, "restartCount": 0,
                            "started": true, "state": {"running": {"startedAt": now}}})
            })
            .collect();
        let status = json!({"status": {"phase": "Running", "startTime": now, "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": ready, "lastTransitionTime": now},
                {"type": "Ready", "status": ready, "lastTransitionTime": now}],
            "containerStatuses": containers}});
        let (ns, name) = (
            pod["metadata"]["namespace"].as_str().unwrap_or("default"),
            pod["metadata"]["name"].as_str().unwrap_or(""),
        );
        http.patch(format!("{url}/api/v1/namespaces/{ns}/pods/{name}/status"))
            .bearer_auth(token)
            .header("content-type", "application/merge-patch+json")
            .json(&status)
            .send()
            .await?;
    }
    Ok(())
}
