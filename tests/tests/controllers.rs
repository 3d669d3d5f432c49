//! The desired-state engine end to end: the real `shturman control` on a free
//! loopback port, nodes simulated through the API (heartbeats and pod
//! readiness), and the controllers and scheduler doing the rest.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use futures::StreamExt;
use serde_json::{Value, json};
use shturman_e2e::api::{Api, eventually};
use shturman_e2e::sim::{Sim, SimNode};
use shturman_e2e::{ControlPlane, stderr, stdout};

const DEPLOYS: &str = "/apis/apps/v1/namespaces/default/deployments";
const RSS: &str = "/apis/apps/v1/namespaces/default/replicasets";
const PODS: &str = "/api/v1/namespaces/default/pods";
const WAIT: Duration = Duration::from_secs(60);

fn start(extra: &[&str]) -> (ControlPlane, Api) {
    let cp = tokio::task::block_in_place(|| ControlPlane::start_with(extra)).expect("control plane");
    let api = Api::new(&cp.url, &cp.token);
    (cp, api)
}

fn deployment(name: &str, replicas: u32, image: &str, strategy: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "strategy": strategy,
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "app", "image": image,
                                        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}}})
}

/// Live (not terminating) pods of app `app`.
async fn pods_of(api: &Api, app: &str) -> Result<Vec<Value>> {
    Ok(api
        .items(&format!("{PODS}?labelSelector=app%3D{app}"))
        .await?
        .into_iter()
        .filter(|p| p["metadata"].get("deletionTimestamp").is_none())
        .collect())
}

fn is_ready(p: &Value) -> bool {
    p["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn image_of(p: &Value) -> &str {
    p["spec"]["containers"][0]["image"].as_str().unwrap_or("")
}

/// Waits until deployment `name` has rolled out completely.
async fn rolled_out(api: &Api, name: &str, replicas: u64) -> Result<Value> {
    eventually(
        &format!("deployment {name} rolled out with {replicas}"),
        WAIT,
        || async {
            let (_, d) = api.get(&format!("{DEPLOYS}/{name}")).await?;
            let s = &d["status"];
            let done = s["observedGeneration"] == d["metadata"]["generation"]
                && s["updatedReplicas"].as_u64().unwrap_or(0) == replicas
                && s["readyReplicas"].as_u64().unwrap_or(0) == replicas
                && s["availableReplicas"].as_u64().unwrap_or(0) == replicas
                && s["replicas"].as_u64().unwrap_or(0) == replicas;
            let pods = pods_of(api, name).await?;
            Ok((done && pods.len() as u64 == replicas).then_some(d))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_replace_spread_and_cascade_delete() {
    let (_cp, api) = start(&[]);
    let _sim = Sim::start(
        &api.url,
        &api_token(&_cp),
        vec![SimNode::new("n1"), SimNode::new("n2")],
    )
    .await
    .unwrap();
    let (code, body) = api
        .post(DEPLOYS, &deployment("web", 3, "example.org/web:1", json!({})))
        .await
        .unwrap();
    assert_eq!(code, 201, "{body}");
    rolled_out(&api, "web", 3).await.unwrap();
    let pods = pods_of(&api, "web").await.unwrap();
    let nodes: BTreeSet<&str> = pods
        .iter()
        .map(|p| p["spec"]["nodeName"].as_str().unwrap())
        .collect();
    assert_eq!(nodes.len(), 2, "replicas spread over both nodes: {nodes:?}");
    let rs = api.items(RSS).await.unwrap();
    assert_eq!(rs.len(), 1);
    assert!(rs[0]["metadata"]["labels"]["pod-template-hash"].is_string());

    // Scale up, then down.
    api.patch(&format!("{DEPLOYS}/web"), &json!({"spec": {"replicas": 5}}))
        .await
        .unwrap();
    rolled_out(&api, "web", 5).await.unwrap();
    api.patch(&format!("{DEPLOYS}/web"), &json!({"spec": {"replicas": 2}}))
        .await
        .unwrap();
    rolled_out(&api, "web", 2).await.unwrap();

    // A deleted pod is replaced.
    let before = pods_of(&api, "web").await.unwrap();
    let victim = before[0]["metadata"]["name"].as_str().unwrap().to_string();
    let (code, _) = api.delete(&format!("{PODS}/{victim}")).await.unwrap();
    assert_eq!(code, 200);
    eventually("the deleted pod to be replaced", WAIT, || async {
        let pods = pods_of(&api, "web").await?;
        let names: Vec<&str> = pods
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap_or(""))
            .collect();
        Ok((pods.len() == 2 && !names.contains(&victim.as_str()) && pods.iter().all(is_ready)).then_some(()))
    })
    .await
    .unwrap();

    // Cascade: the Deployment takes its ReplicaSets and Pods with it.
    let (code, _) = api.delete(&format!("{DEPLOYS}/web")).await.unwrap();
    assert_eq!(code, 200);
    eventually("ReplicaSets and Pods to be collected", WAIT, || async {
        let rs = api.items(RSS).await?;
        let pods = api.items(PODS).await?;
        Ok((rs.is_empty() && pods.is_empty()).then_some(()))
    })
    .await
    .unwrap();

    // Events tell the story.
    let events = api.items("/api/v1/namespaces/default/events").await.unwrap();
    let reasons: BTreeSet<&str> = events.iter().filter_map(|e| e["reason"].as_str()).collect();
    assert!(reasons.contains("ScalingReplicaSet"), "{reasons:?}");
    assert!(reasons.contains("Scheduled"), "{reasons:?}");
}

fn api_token(cp: &ControlPlane) -> String {
    cp.token.clone()
}

/// Watches the app's pods and checks the rolling-update bounds after every change.
struct Bounds {
    violations: Arc<Mutex<Vec<String>>>,
    seen: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl Bounds {
    async fn watch(api: &Api, app: &str, max_total: usize, min_ready: usize) -> Bounds {
        let list: Value = api
            .get(&format!("{PODS}?labelSelector=app%3D{app}"))
            .await
            .unwrap()
            .1;
        let rv = list["metadata"]["resourceVersion"].as_str().unwrap().to_string();
        let mut pods: BTreeMap<String, bool> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["metadata"]["name"].as_str().unwrap().to_string(), is_ready(p)))
            .collect();
        let resp = api
            .watch(&format!(
                "{PODS}?watch=true&labelSelector=app%3D{app}&resourceVersion={rv}"
            ))
            .await
            .unwrap();
        let violations: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen: Arc<Mutex<usize>> = Arc::default();
        let (v, n) = (violations.clone(), seen.clone());
        let task = tokio::spawn(async move {
            let mut stream = resp.bytes_stream();
            let mut buf = String::new();
            while let Some(Ok(chunk)) = stream.next().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(i) = buf.find('\n') {
                    let line: String = buf.drain(..=i).collect();
                    let Ok(ev) = serde_json::from_str::<Value>(&line) else {
                        continue;
                    };
                    *n.lock().unwrap() += 1;
                    let name = ev["object"]["metadata"]["name"]
                        .as_str()
                        .unwrap_or("")
                        .to_string();
                    if ev["type"] == "DELETED" || ev["object"]["metadata"].get("deletionTimestamp").is_some()
                    {
                        pods.remove(&name);
                    } else {
                        pods.insert(name, is_ready(&ev["object"]));
                    }
                    let ready = pods.values().filter(|r| **r).count();
                    if pods.len() > max_total || ready < min_ready {
                        v.lock().unwrap().push(format!(
                            "{} pods, {ready} ready after {}",
                            pods.len(),
                            ev["type"]
                        ));
                    }
                }
            }
        });
        Bounds {
            violations,
            seen,
            task,
        }
    }

    /// The violations, and how many events were checked.
    fn finish(self) -> (Vec<String>, usize) {
        self.task.abort();
        let seen = *self.seen.lock().unwrap();
        (self.violations.lock().unwrap().clone(), seen)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_keeps_its_bounds_rolls_over_and_undoes() {
    let (cp, api) = start(&[]);
    let _sim = Sim::start(&api.url, &cp.token, vec![SimNode::new("n1"), SimNode::new("n2")])
        .await
        .unwrap();
    let strategy = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}});
    api.post(DEPLOYS, &deployment("web", 4, "example.org/web:1", strategy))
        .await
        .unwrap();
    rolled_out(&api, "web", 4).await.unwrap();

    // v1 → v2, watched at every step: never above 4+1 pods, never below 4-1 ready.
    let bounds = Bounds::watch(&api, "web", 5, 3).await;
    api.patch(&format!("{DEPLOYS}/web"), &json!({"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "example.org/web:2", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}}}))
        .await
        .unwrap();
    let d = rolled_out(&api, "web", 4).await.unwrap();
    let pods = pods_of(&api, "web").await.unwrap();
    assert!(pods.iter().all(|p| image_of(p) == "example.org/web:2"));
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
    let (violations, seen) = bounds.finish();
    assert!(
        violations.is_empty(),
        "rolling update broke its bounds: {violations:?}"
    );
    // 4 new pods created and readied, 4 old ones deleted: at least 12 events checked.
    assert!(seen >= 12, "the bounds were checked on only {seen} events");

    // Rollover: v3 then v4 before v3 finishes; everything ends on v4.
    for image in ["example.org/web:3", "example.org/web:4"] {
        api.patch(&format!("{DEPLOYS}/web"), &json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": image, "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}}}))
            .await
            .unwrap();
    }
    rolled_out(&api, "web", 4).await.unwrap();
    let pods = pods_of(&api, "web").await.unwrap();
    assert!(
        pods.iter().all(|p| image_of(p) == "example.org/web:4"),
        "rollover ends on the latest template"
    );
    let rs = api.items(RSS).await.unwrap();
    let live: Vec<&Value> = rs
        .iter()
        .filter(|r| r["spec"]["replicas"].as_u64() != Some(0))
        .collect();
    assert_eq!(live.len(), 1, "only the newest ReplicaSet keeps replicas");

    // Undo: back to the previous template (v3), through the CLI.
    let out = cp.cli(&["rollout", "undo", "deployment", "web"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "deployment.apps/web rolled back");
    rolled_out(&api, "web", 4).await.unwrap();
    let pods = pods_of(&api, "web").await.unwrap();
    assert!(
        pods.iter().all(|p| image_of(p) == "example.org/web:3"),
        "undo restores the previous template"
    );

    // A stuck rollout: new pods never get ready; the deadline passes, old pods keep serving.
    api.patch(&format!("{DEPLOYS}/web"), &json!({"spec": {"progressDeadlineSeconds": 2, "template": {"spec": {"containers": [
        {"name": "app", "image": "example.org/web:never-ready", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}}}))
        .await
        .unwrap();
    eventually("ProgressDeadlineExceeded", WAIT, || async {
        let (_, d) = api.get(&format!("{DEPLOYS}/web")).await?;
        Ok(d["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Progressing" && c["reason"] == "ProgressDeadlineExceeded")
            .then_some(()))
    })
    .await
    .unwrap();
    let pods = pods_of(&api, "web").await.unwrap();
    let ready_old = pods
        .iter()
        .filter(|p| image_of(p) == "example.org/web:3" && is_ready(p))
        .count();
    assert!(ready_old >= 3, "old pods keep serving: {ready_old} ready");
    let out = cp.cli(&["rollout", "status", "deployment", "web", "--timeout", "20s"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("exceeded its progress deadline"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_filters_and_explains() {
    let (cp, api) = start(&[]);
    let _sim = Sim::start(
        &api.url,
        &cp.token,
        vec![
            SimNode::new("amd").resources(2000, 2048),
            SimNode::new("arm")
                .arch("arm64")
                .runtimes(&["wasmtime"])
                .resources(1000, 1024),
            SimNode::new("gpu").label("dedicated", "gpu"),
        ],
    )
    .await
    .unwrap();
    // Taint the gpu node so only tolerating pods go there.
    api.patch(
        "/api/v1/nodes/gpu",
        &json!({"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}),
    )
    .await
    .unwrap();
    let pod = |name: &str, spec: Value| {
        let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                           "spec": {"containers": [{"name": "c", "image": "example.org/x:1"}]}});
        if let (Some(dst), Some(src)) = (p["spec"].as_object_mut(), spec.as_object()) {
            for (k, v) in src {
                dst.insert(k.clone(), v.clone());
            }
        }
        p
    };
    let cases = [
        (
            "wasm-on-arm",
            pod(
                "wasm-on-arm",
                json!({"runtimeClassName": "wasmtime", "nodeSelector": {"kubernetes.io/arch": "arm64"}}),
            ),
        ),
        (
            "tolerates-gpu",
            pod(
                "tolerates-gpu",
                json!({"nodeSelector": {"dedicated": "gpu"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]}),
            ),
        ),
        (
            "oci-on-arm",
            pod(
                "oci-on-arm",
                json!({"nodeSelector": {"kubernetes.io/arch": "arm64"}}),
            ),
        ),
        (
            "gpu-untolerated",
            pod("gpu-untolerated", json!({"nodeSelector": {"dedicated": "gpu"}})),
        ),
        (
            "too-big",
            pod(
                "too-big",
                json!({"containers": [{"name": "c", "image": "example.org/x:1",
            "resources": {"requests": {"memory": "64Gi"}}}]}),
            ),
        ),
    ];
    for (_, p) in &cases {
        let (code, body) = api.post(PODS, p).await.unwrap();
        assert_eq!(code, 201, "{body}");
    }
    let bound = |name: &'static str, node: &'static str| {
        let api = api.clone();
        async move {
            eventually(&format!("{name} bound to {node}"), WAIT, || async {
                let (_, p) = api.get(&format!("{PODS}/{name}")).await?;
                Ok((p["spec"]["nodeName"] == node).then_some(()))
            })
            .await
            .unwrap()
        }
    };
    bound("wasm-on-arm", "arm").await;
    bound("tolerates-gpu", "gpu").await;
    let unschedulable = |name: &'static str| {
        let api = api.clone();
        async move {
            eventually(&format!("{name} to be reported unschedulable"), WAIT, || async {
                let (_, p) = api.get(&format!("{PODS}/{name}")).await?;
                Ok(p["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|c| c["type"] == "PodScheduled" && c["status"] == "False")
                    .map(|c| {
                        (
                            c["reason"].as_str().unwrap_or("").to_string(),
                            c["message"].as_str().unwrap_or("").to_string(),
                        )
                    }))
            })
            .await
            .unwrap()
        }
    };
    let (reason, msg) = unschedulable("oci-on-arm").await;
    assert_eq!(reason, "Unschedulable");
    assert!(msg.starts_with("0/3 nodes are available:"), "{msg}");
    assert!(msg.contains("containerd"), "{msg}");
    assert!(
        msg.contains("node(s) didn't match Pod's node affinity/selector"),
        "{msg}"
    );
    let (_, msg) = unschedulable("gpu-untolerated").await;
    assert!(msg.contains("untolerated taint"), "{msg}");
    let (_, msg) = unschedulable("too-big").await;
    assert!(msg.contains("1 Insufficient memory"), "{msg}");
    assert!(
        msg.contains("1 node(s) had untolerated taint {dedicated: gpu}"),
        "{msg}"
    );
    let out = cp.cli(&["describe", "pod", "too-big"]);
    assert!(
        stdout(&out).contains("Insufficient memory"),
        "describe shows why: {}",
        stdout(&out)
    );

    // A node that fits appears: the pending pod is retried and placed.
    let _big = Sim::start(
        &api.url,
        &cp.token,
        vec![SimNode::new("big").resources(8000, 128 * 1024)],
    )
    .await
    .unwrap();
    bound("too-big", "big").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_node_is_tainted_and_its_pods_move() {
    let (cp, api) = start(&[
        "--node-monitor-grace-period",
        "2s",
        "--default-toleration-seconds",
        "2",
    ]);
    let sim = Sim::start(&api.url, &cp.token, vec![SimNode::new("n1"), SimNode::new("n2")])
        .await
        .unwrap();
    api.post(DEPLOYS, &deployment("web", 4, "example.org/web:1", json!({})))
        .await
        .unwrap();
    rolled_out(&api, "web", 4).await.unwrap();
    sim.silence("n2");
    eventually("n2 NotReady with the unreachable taint", WAIT, || async {
        let (_, n) = api.get("/api/v1/nodes/n2").await?;
        let unknown = n["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "Unknown");
        let tainted = n["spec"]["taints"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == "NoExecute");
        Ok((unknown && tainted).then_some(()))
    })
    .await
    .unwrap();
    eventually("all pods rebound to n1", WAIT, || async {
        let pods = pods_of(&api, "web").await?;
        Ok(
            (pods.len() == 4 && pods.iter().all(|p| p["spec"]["nodeName"] == "n1" && is_ready(p)))
                .then_some(()),
        )
    })
    .await
    .unwrap();
    let out = cp.cli(&["get", "nodes"]);
    assert!(stdout(&out).contains("NotReady"), "{}", stdout(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_back_within_toleration_keeps_its_pods() {
    let (cp, api) = start(&[
        "--node-monitor-grace-period",
        "2s",
        "--default-toleration-seconds",
        "120",
    ]);
    let sim = Sim::start(&api.url, &cp.token, vec![SimNode::new("n1"), SimNode::new("n2")])
        .await
        .unwrap();
    api.post(DEPLOYS, &deployment("web", 4, "example.org/web:1", json!({})))
        .await
        .unwrap();
    rolled_out(&api, "web", 4).await.unwrap();
    let before: BTreeSet<String> = pods_of(&api, "web")
        .await
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["uid"].as_str().unwrap().to_string())
        .collect();
    sim.silence("n2");
    let tainted = |want: bool| {
        let api = api.clone();
        async move {
            eventually(&format!("n2 unreachable taint = {want}"), WAIT, || async {
                let (_, n) = api.get("/api/v1/nodes/n2").await?;
                let has = n["spec"]["taints"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|t| t["key"] == "node.kubernetes.io/unreachable");
                Ok((has == want).then_some(()))
            })
            .await
            .unwrap()
        }
    };
    tainted(true).await;
    sim.revive("n2");
    tainted(false).await;
    let after: BTreeSet<String> = pods_of(&api, "web")
        .await
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["uid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(before, after, "no pod was evicted");
}
