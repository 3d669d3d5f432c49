//! The garbage collector and the node lifecycle controller against the real
//! API state in-process (memory store): cascading deletes in the background,
//! in the foreground and with orphaning; nodes that stop heartbeating get
//! tainted and lose their pods, nodes that come back in time keep them.
//! Every wait is on a condition with a deadline.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shturman_api::apps::{Deployment, ReplicaSet};
use shturman_api::core::{Event, Node, NodeConditionType, Pod, TaintEffect};
use shturman_api::meta::{ConditionStatus, DeletionPropagation, Object};
use shturman_control::client::Client;
use shturman_control::controllers::gc;
use shturman_control::controllers::nodelifecycle::health::TAINT_UNREACHABLE;
use shturman_control::controllers::nodelifecycle::{self, NodeLifecycleConfig};
use shturman_control::runtime::{Informer, SystemClock};
use shturman_control::server::State;
use shturman_control::store::memory::MemoryStore;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(15);

struct Env {
    client: Client,
    stop: CancellationToken,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn api() -> Env {
    let state = State::new(Arc::new(MemoryStore::new()), "test-token".to_string());
    state.ensure_default_namespace().await.unwrap();
    Env {
        client: Client::new(state),
        stop: CancellationToken::new(),
    }
}

/// An API with the garbage collector running.
async fn with_gc() -> Env {
    let env = api().await;
    let deployments = Informer::<Deployment>::start(env.client.clone(), env.stop.clone());
    let replicasets = Informer::<ReplicaSet>::start(env.client.clone(), env.stop.clone());
    let pods = Informer::<Pod>::start(env.client.clone(), env.stop.clone());
    gc::start(
        env.client.clone(),
        &deployments,
        &replicasets,
        &pods,
        env.stop.clone(),
    );
    env
}

/// An API with the node lifecycle controller running.
async fn with_node_controller(node_grace: Duration, default_toleration_seconds: i64) -> Env {
    let env = api().await;
    let nodes = Informer::<Node>::start(env.client.clone(), env.stop.clone());
    let pods = Informer::<Pod>::start(env.client.clone(), env.stop.clone());
    let config = NodeLifecycleConfig {
        node_grace,
        default_toleration_seconds,
        ..NodeLifecycleConfig::default()
    };
    nodelifecycle::start(
        env.client.clone(),
        &nodes,
        &pods,
        Arc::new(SystemClock),
        config,
        env.stop.clone(),
    );
    env
}

/// Waits until `check` holds, failing the test with `what` after [`WAIT`].
async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn parse<T: Object>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

fn owner(kind: &str, obj: &impl Object, block: bool) -> Value {
    let m = obj.metadata();
    json!({"apiVersion": "apps/v1", "kind": kind, "name": m.name(), "uid": m.uid.clone().unwrap(),
           "controller": true, "blockOwnerDeletion": block})
}

fn template() -> Value {
    json!({"metadata": {"labels": {"app": "web"}},
           "spec": {"containers": [{"name": "app", "image": "example.org/app:1"}]}})
}

async fn deployment(c: &Client, name: &str) -> Deployment {
    let d: Deployment = parse(json!({"metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}}, "template": template()}}));
    c.create(&d).await.unwrap()
}

async fn replicaset(c: &Client, name: &str, owners: Vec<Value>) -> ReplicaSet {
    let rs: ReplicaSet = parse(
        json!({"metadata": {"name": name, "namespace": "default", "ownerReferences": owners},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}}, "template": template()}}),
    );
    c.create(&rs).await.unwrap()
}

async fn pod(c: &Client, name: &str, meta: Value, spec: Value) -> Pod {
    let mut v = json!({"metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "app", "image": "example.org/app:1"}]}});
    merge(&mut v["metadata"], meta);
    merge(&mut v["spec"], spec);
    c.create(&parse::<Pod>(v)).await.unwrap()
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}

async fn exists<T: Object>(c: &Client, name: &str) -> bool {
    let ns = T::KIND.namespaced().then_some("default");
    c.get::<T>(ns, name).await.unwrap().is_some()
}

async fn gone<T: Object>(c: &Client, name: &str) -> bool {
    !exists::<T>(c, name).await
}

// ---- garbage collector ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_delete_cascades_through_replicasets_to_pods() {
    let env = with_gc().await;
    let c = &env.client;
    let d = deployment(c, "web").await;
    let rs = replicaset(c, "web-1", vec![owner("Deployment", &d, true)]).await;
    for p in ["web-1-a", "web-1-b"] {
        pod(
            c,
            p,
            json!({"ownerReferences": [owner("ReplicaSet", &rs, true)]}),
            json!({}),
        )
        .await;
    }
    // An owner of the same name but another uid counts as gone.
    let other = replicaset(c, "other", vec![]).await;
    let mut stale = owner("ReplicaSet", &other, false);
    stale["uid"] = json!("not-the-uid-of-other");
    pod(c, "stale-owner", json!({"ownerReferences": [stale]}), json!({})).await;
    // One owner left keeps a pod; the dangling reference is dropped.
    let mut gone_ref = owner("ReplicaSet", &other, false);
    gone_ref["name"] = json!("never-existed");
    gone_ref["uid"] = json!("uid-never-existed");
    gone_ref["controller"] = json!(false);
    pod(
        c,
        "two-owners",
        json!({"ownerReferences": [owner("ReplicaSet", &other, false), gone_ref]}),
        json!({}),
    )
    .await;

    wait_for("the pod with a stale owner to go", || {
        gone::<Pod>(c, "stale-owner")
    })
    .await;
    wait_for("the dangling reference to be dropped", || async {
        let p = c
            .get::<Pod>(Some("default"), "two-owners")
            .await
            .unwrap()
            .unwrap();
        p.metadata.owner_references.len() == 1 && p.metadata.owner_references[0].name == "other"
    })
    .await;
    assert!(exists::<ReplicaSet>(c, "other").await);
    assert!(
        exists::<Pod>(c, "web-1-a").await,
        "owned pods stay while their owners do"
    );

    assert!(
        c.delete::<Deployment>(Some("default"), "web", None)
            .await
            .unwrap()
    );
    wait_for("the ReplicaSet to follow its Deployment", || {
        gone::<ReplicaSet>(c, "web-1")
    })
    .await;
    wait_for("the pods to follow their ReplicaSet", || async {
        gone::<Pod>(c, "web-1-a").await && gone::<Pod>(c, "web-1-b").await
    })
    .await;
    assert!(exists::<Pod>(c, "two-owners").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_delete_keeps_the_owner_until_its_dependents_are_gone() {
    let env = with_gc().await;
    let c = &env.client;
    let d = deployment(c, "web").await;
    let rs = replicaset(c, "web-1", vec![owner("Deployment", &d, true)]).await;
    let by_rs = json!([owner("ReplicaSet", &rs, true)]);
    pod(c, "web-1-a", json!({"ownerReferences": by_rs}), json!({})).await;
    // This pod's own finalizer holds it (and so its owners) until removed.
    pod(
        c,
        "web-1-held",
        json!({"ownerReferences": by_rs, "finalizers": ["example.com/hold"]}),
        json!({}),
    )
    .await;

    c.delete::<Deployment>(Some("default"), "web", Some(DeletionPropagation::Foreground))
        .await
        .unwrap();
    wait_for("the free pod to go", || gone::<Pod>(c, "web-1-a")).await;
    wait_for("the held pod to be marked for deletion", || async {
        let p = c.get::<Pod>(Some("default"), "web-1-held").await.unwrap();
        p.is_some_and(|p| p.metadata.deletion_timestamp.is_some())
    })
    .await;
    let d = c
        .get::<Deployment>(Some("default"), "web")
        .await
        .unwrap()
        .unwrap();
    assert!(d.metadata.deletion_timestamp.is_some());
    assert_eq!(d.metadata.finalizers, ["foregroundDeletion"]);
    let rs = c
        .get::<ReplicaSet>(Some("default"), "web-1")
        .await
        .unwrap()
        .unwrap();
    assert!(
        rs.metadata.deletion_timestamp.is_some(),
        "the ReplicaSet goes in the foreground too"
    );

    let release = json!({"metadata": {"finalizers": []}});
    c.merge_patch::<Pod>(Some("default"), "web-1-held", &release, false)
        .await
        .unwrap();
    wait_for("the ReplicaSet to go once its pods are gone", || {
        gone::<ReplicaSet>(c, "web-1")
    })
    .await;
    wait_for("the Deployment to go last", || gone::<Deployment>(c, "web")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_delete_leaves_dependents_without_the_owner() {
    let env = with_gc().await;
    let c = &env.client;
    let d = deployment(c, "web").await;
    let rs = replicaset(c, "web-1", vec![owner("Deployment", &d, true)]).await;
    pod(
        c,
        "web-1-a",
        json!({"ownerReferences": [owner("ReplicaSet", &rs, true)]}),
        json!({}),
    )
    .await;

    c.delete::<Deployment>(Some("default"), "web", Some(DeletionPropagation::Orphan))
        .await
        .unwrap();
    wait_for("the Deployment to go", || gone::<Deployment>(c, "web")).await;
    let rs = c
        .get::<ReplicaSet>(Some("default"), "web-1")
        .await
        .unwrap()
        .unwrap();
    assert!(rs.metadata.owner_references.is_empty());
    assert!(rs.metadata.deletion_timestamp.is_none());
    let p = c.get::<Pod>(Some("default"), "web-1-a").await.unwrap().unwrap();
    assert_eq!(
        p.metadata.owner_references[0].name, "web-1",
        "grandchildren keep their owner"
    );
}

// ---- node lifecycle ----

async fn node(c: &Client, name: &str) {
    let n: Node = parse(json!({"metadata": {"name": name}}));
    c.create(&n).await.unwrap();
    heartbeat(c, name).await;
}

/// Writes a `Ready=True` heartbeat, as an agent does.
async fn heartbeat(c: &Client, name: &str) {
    let mut n = c.get::<Node>(None, name).await.unwrap().unwrap();
    n.metadata.resource_version = None;
    let now = json!(chrono::Utc::now().to_rfc3339());
    n.status = Some(parse_status(
        json!({"conditions": [{"type": "Ready", "status": "True",
        "lastHeartbeatTime": now, "lastTransitionTime": now, "reason": "AgentReady"}]}),
    ));
    c.replace_status(&n).await.unwrap();
}

fn parse_status(v: Value) -> shturman_api::core::NodeStatus {
    serde_json::from_value(v).unwrap()
}

fn bound_to(node: &str) -> Value {
    json!({"nodeName": node})
}

async fn unreachable(c: &Client, name: &str) -> bool {
    let Some(n) = c.get::<Node>(None, name).await.unwrap() else {
        return false;
    };
    let unknown = n
        .status
        .as_ref()
        .and_then(|s| s.condition(NodeConditionType::Ready))
        .is_some_and(|r| r.status == ConditionStatus::Unknown);
    let tainted = |e| {
        n.spec
            .taints
            .iter()
            .any(|t| t.key == TAINT_UNREACHABLE && t.effect == e)
    };
    unknown && tainted(TaintEffect::NoExecute) && tainted(TaintEffect::NoSchedule)
}

async fn events(c: &Client, reason: &str) -> Vec<Event> {
    let (all, _) = c.list::<Event>(Some("default")).await.unwrap();
    all.into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_is_tainted_and_its_pods_evicted_after_their_toleration() {
    // Heartbeat times have second precision, so the grace must exceed 1 s.
    let env = with_node_controller(Duration::from_secs(2), 1).await;
    let c = &env.client;
    node(c, "edge-1").await;
    let forever = json!({"tolerations": [{"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}],
                         "nodeName": "edge-1"});
    // Named so the controller looks at it before the default one.
    pod(c, "a-forever", json!({}), forever).await;
    pod(c, "b-default", json!({}), bound_to("edge-1")).await;
    pod(c, "elsewhere", json!({}), json!({})).await;

    wait_for("the silent node to be Unknown and tainted", || {
        unreachable(c, "edge-1")
    })
    .await;
    wait_for("the pod with the default toleration to be evicted", || {
        gone::<Pod>(c, "b-default")
    })
    .await;
    assert!(
        exists::<Pod>(c, "a-forever").await,
        "tolerated without a limit: stays"
    );
    assert!(exists::<Pod>(c, "elsewhere").await);
    let evictions = events(c, "TaintManagerEviction").await;
    assert!(
        evictions
            .iter()
            .any(|e| e.message.as_deref() == Some("Marking for deletion Pod default/b-default")),
        "{evictions:?}"
    );
    let n = c.get::<Node>(None, "edge-1").await.unwrap().unwrap();
    let ready = n
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == NodeConditionType::Ready);
    assert_eq!(
        ready.unwrap().message.as_deref(),
        Some("Agent stopped posting node status.")
    );
    assert!(!events(c, "NodeNotReady").await.is_empty());

    // An untolerated NoExecute taint evicts at once; a deleted node's pods go.
    let patch = json!({"spec": {"taints": [{"key": "example.com/broken", "effect": "NoExecute"}]}});
    node(c, "edge-2").await;
    pod(c, "on-2", json!({}), bound_to("edge-2")).await;
    c.merge_patch::<Node>(None, "edge-2", &patch, false)
        .await
        .unwrap();
    wait_for("the untolerating pod to be evicted", || gone::<Pod>(c, "on-2")).await;
    c.delete::<Node>(None, "edge-1", None).await.unwrap();
    wait_for("the pods of a deleted node to go", || gone::<Pod>(c, "a-forever")).await;
    assert!(exists::<Pod>(c, "elsewhere").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_returns_before_the_toleration_ends_keeps_its_pods() {
    let toleration = 3;
    let env = with_node_controller(Duration::from_secs(2), toleration).await;
    let c = &env.client;
    node(c, "back").await;
    node(c, "dead").await;
    pod(c, "on-back", json!({}), bound_to("back")).await;
    pod(c, "on-dead", json!({}), bound_to("dead")).await;

    wait_for("the returning node to be tainted", || unreachable(c, "back")).await;
    let n = c.get::<Node>(None, "back").await.unwrap().unwrap();
    let added = n
        .spec
        .taints
        .iter()
        .find(|t| t.key == TAINT_UNREACHABLE && t.effect == TaintEffect::NoExecute)
        .and_then(|t| t.time_added)
        .unwrap();

    // The agent comes back and heartbeats on.
    let beats = env.stop.child_token();
    let (client, token) = (c.clone(), beats.clone());
    let beating = tokio::spawn(async move {
        while !token.is_cancelled() {
            heartbeat(&client, "back").await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    wait_for("the returning node to lose its taints", || async {
        let n = c.get::<Node>(None, "back").await.unwrap().unwrap();
        n.spec.taints.is_empty()
    })
    .await;
    wait_for("the dead node's pod to be evicted", || gone::<Pod>(c, "on-dead")).await;
    // The returning node's pod had the same deadline; wait past it.
    let deadline = added.0 + chrono::TimeDelta::seconds(toleration + 1);
    wait_for("the old eviction deadline to pass", || async {
        chrono::Utc::now() > deadline
    })
    .await;
    assert!(exists::<Pod>(c, "on-back").await, "its node came back in time");
    assert!(!events(c, "NodeReady").await.is_empty());
    beats.cancel();
    beating.await.unwrap();
}
