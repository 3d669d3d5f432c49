//! The Deployment and ReplicaSet controllers against the real API state
//! in-process (memory store), with a tiny fake kubelet that binds pods to
//! `n1` and marks them Running and Ready: a deployment comes up with one
//! ReplicaSet, scales both ways, replaces a deleted pod exactly once (never
//! running more pods than asked for, even 30 at once), and rolls a new
//! template out, leaving the old ReplicaSet at 0 and the revision at 2.
//! Every wait is on a condition with a deadline.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use shturman_api::apps::{Deployment, ReplicaSet};
use shturman_api::core::{Event, Pod};
use shturman_api::meta::Object;
use shturman_control::client::Client;
use shturman_control::controllers::deployment::template_hash;
use shturman_control::controllers::deployment::util::REVISION;
use shturman_control::controllers::replicaset::pods::is_active;
use shturman_control::controllers::{deployment, replicaset};
use shturman_control::runtime::{Change, Informer, Recorder, SystemClock};
use shturman_control::server::State;
use shturman_control::store::memory::MemoryStore;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);
const NS: Option<&str> = Some("default");

struct Env {
    client: Client,
    pods: Informer<Pod>,
    stop: CancellationToken,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// An API with both controllers and the fake kubelet running.
async fn cluster() -> Env {
    let state = State::new(Arc::new(MemoryStore::new()), "test-token".to_string());
    state.ensure_default_namespace().await.unwrap();
    let client = Client::new(state);
    let stop = CancellationToken::new();
    let deployments = Informer::<Deployment>::start(client.clone(), stop.clone());
    let replicasets = Informer::<ReplicaSet>::start(client.clone(), stop.clone());
    let pods = Informer::<Pod>::start(client.clone(), stop.clone());
    let clock = Arc::new(SystemClock);
    replicaset::run::start(
        client.clone(),
        &replicasets,
        &pods,
        Recorder::new(client.clone(), "replicaset-controller", clock.clone()),
        clock.clone(),
        4,
        stop.clone(),
    );
    deployment::run::start(
        client.clone(),
        &deployments,
        &replicasets,
        &pods,
        Recorder::new(client.clone(), "deployment-controller", clock.clone()),
        clock,
        4,
        stop.clone(),
    );
    // Subscribed before the test makes any pod, so no change is missed.
    let changes = pods.subscribe();
    tokio::spawn(kubelet(client.clone(), pods.clone(), changes, stop.clone()));
    Env { client, pods, stop }
}

/// Binds every unbound pod to `n1`, then marks it Running and Ready.
async fn kubelet(
    client: Client,
    pods: Informer<Pod>,
    mut changes: tokio::sync::broadcast::Receiver<Change<Pod>>,
    stop: CancellationToken,
) {
    pods.wait_synced().await;
    // The first pass covers the pods listed before any change arrived.
    let mut todo = pods.list();
    loop {
        for p in todo {
            let (m, name) = (&p.metadata, p.metadata.name());
            if m.deletion_timestamp.is_some() {
                continue;
            }
            // Failures are fine: the pod changed or went; a later change retries.
            if p.spec.node_name.is_none() {
                let patch = json!({"spec": {"nodeName": "n1"}});
                let _ = client.merge_patch::<Pod>(NS, name, &patch, false).await;
            } else if !p.status.as_ref().is_some_and(|s| s.is_ready()) {
                let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                let patch = json!({"status": {"phase": "Running", "conditions": [
                    {"type": "Ready", "status": "True", "lastTransitionTime": now}]}});
                let _ = client.merge_patch::<Pod>(NS, name, &patch, true).await;
            }
        }
        let change = tokio::select! {
            c = changes.recv() => c,
            () = stop.cancelled() => return,
        };
        todo = match change {
            Ok(Change::Applied(p)) => vec![p],
            Ok(Change::Deleted(_)) => Vec::new(),
            Ok(Change::Resynced) | Err(RecvError::Lagged(_)) => pods.list(),
            Err(RecvError::Closed) => return,
        };
    }
}

/// Waits until `check` holds, failing the test with `what` after [`WAIT`].
async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let polled = async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(WAIT, polled).await.is_err() {
        panic!("timed out waiting for {what}");
    }
}

/// Follows every pod change of `app` and keeps the most active pods seen at
/// once (each change applied in order, so no state in between is missed).
struct PodHighWater {
    max: Arc<AtomicUsize>,
}

impl PodHighWater {
    fn watch(env: &Env, app: &str) -> PodHighWater {
        let max = Arc::new(AtomicUsize::new(0));
        let (pods, stop, app, high) = (env.pods.clone(), env.stop.clone(), app.to_string(), max.clone());
        let mut changes = pods.subscribe();
        tokio::spawn(async move {
            let mut active: HashMap<String, bool> = HashMap::new();
            let of_app = |p: &Pod| p.metadata.labels.get("app") == Some(&app);
            loop {
                let change = tokio::select! {
                    c = changes.recv() => c,
                    () = stop.cancelled() => return,
                };
                match change {
                    Ok(Change::Applied(p)) if of_app(&p) => {
                        active.insert(p.metadata.name().to_string(), is_active(&p));
                    }
                    Ok(Change::Deleted(p)) if of_app(&p) => {
                        active.remove(p.metadata.name());
                    }
                    Ok(Change::Applied(_) | Change::Deleted(_)) => {}
                    Ok(Change::Resynced) | Err(RecvError::Lagged(_)) => {
                        active = pods
                            .list()
                            .iter()
                            .filter(|p| of_app(p))
                            .map(|p| (p.metadata.name().to_string(), is_active(p)))
                            .collect();
                    }
                    Err(RecvError::Closed) => return,
                }
                let now = active.values().filter(|a| **a).count();
                high.fetch_max(now, Ordering::SeqCst);
            }
        });
        PodHighWater { max }
    }

    fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }
}

fn parse<T: Object>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

async fn create_deployment(c: &Client, name: &str, replicas: i32, image: &str) -> Deployment {
    let d: Deployment = parse(json!({"metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "app", "image": image}]}}}}));
    c.create(&d).await.unwrap()
}

async fn patch_deployment(c: &Client, name: &str, patch: Value) {
    c.merge_patch::<Deployment>(NS, name, &patch, false)
        .await
        .unwrap();
}

async fn get_deployment(c: &Client, name: &str) -> Deployment {
    c.get::<Deployment>(NS, name).await.unwrap().unwrap()
}

/// The active pods labelled `app`.
async fn active_pods(c: &Client, app: &str) -> Vec<Pod> {
    let (pods, _) = c.list::<Pod>(NS).await.unwrap();
    pods.into_iter()
        .filter(|p| p.metadata.labels.get("app").map(String::as_str) == Some(app) && is_active(p))
        .collect()
}

/// The ReplicaSets `d` controls.
async fn replicasets_of(c: &Client, d: &Deployment) -> Vec<ReplicaSet> {
    let (all, _) = c.list::<ReplicaSet>(NS).await.unwrap();
    all.into_iter()
        .filter(|rs| rs.metadata.controller_ref().map(|r| &r.uid) == d.metadata.uid.as_ref())
        .collect()
}

/// Whether `name` is fully rolled out at `replicas`: every count in its
/// status says so and exactly that many active pods run, all ready.
async fn rolled_out(c: &Client, name: &str, replicas: i32) -> bool {
    let d = get_deployment(c, name).await;
    let Some(s) = d.status.as_ref() else {
        return false;
    };
    let n = Some(replicas);
    let pods = active_pods(c, name).await;
    s.observed_generation == d.metadata.generation
        && (
            s.replicas,
            s.updated_replicas,
            s.ready_replicas,
            s.available_replicas,
        ) == (n, n, n, n)
        && pods.len() == usize::try_from(replicas).unwrap()
        && pods
            .iter()
            .all(|p| p.status.as_ref().is_some_and(|s| s.is_ready()))
}

fn replicas_of(rs: &ReplicaSet) -> i32 {
    rs.spec.replicas.unwrap_or(1)
}

fn revision_of(meta: &shturman_api::meta::ObjectMeta) -> Option<&str> {
    meta.annotations.get(REVISION).map(String::as_str)
}

/// The messages of the events with `reason` about the deployment `name`.
async fn events(c: &Client, name: &str, reason: &str) -> Vec<String> {
    let (all, _) = c.list::<Event>(NS).await.unwrap();
    all.into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.involved_object.kind.as_deref() == Some("Deployment")
                && e.involved_object.name.as_deref() == Some(name)
        })
        .filter_map(|e| e.message)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_of_three_becomes_ready_with_one_replicaset() {
    let env = cluster().await;
    let c = &env.client;
    let high = PodHighWater::watch(&env, "web");
    let d = create_deployment(c, "web", 3, "example.org/web:1").await;
    wait_for("3 ready replicas", || rolled_out(c, "web", 3)).await;

    let rss = replicasets_of(c, &d).await;
    assert_eq!(rss.len(), 1, "one ReplicaSet");
    let rs = &rss[0];
    assert_eq!(replicas_of(rs), 3);
    assert_eq!(revision_of(&rs.metadata), Some("1"));
    assert!(rs.metadata.name().starts_with("web-"));
    let pods = active_pods(c, "web").await;
    assert!(
        pods.iter()
            .all(|p| p.metadata.controller_ref().map(|r| &r.uid) == rs.metadata.uid.as_ref())
    );
    wait_for("the deployment's revision annotation", || async {
        revision_of(&get_deployment(c, "web").await.metadata) == Some("1")
    })
    .await;
    wait_for("a ScalingReplicaSet event", || async {
        events(c, "web", "ScalingReplicaSet")
            .await
            .iter()
            .any(|m| m == &format!("Scaled up replica set {} from 0 to 3", rs.metadata.name()))
    })
    .await;
    assert_eq!(high.max(), 3, "never more pods than asked for");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_up_and_down_follows_the_deployment() {
    let env = cluster().await;
    let c = &env.client;
    let d = create_deployment(c, "api", 2, "example.org/api:1").await;
    wait_for("2 ready replicas", || rolled_out(c, "api", 2)).await;

    patch_deployment(c, "api", json!({"spec": {"replicas": 6}})).await;
    wait_for("6 ready replicas", || rolled_out(c, "api", 6)).await;

    patch_deployment(c, "api", json!({"spec": {"replicas": 1}})).await;
    wait_for("1 ready replica", || rolled_out(c, "api", 1)).await;

    let rss = replicasets_of(c, &d).await;
    assert_eq!(rss.len(), 1, "scaling makes no new ReplicaSet");
    assert_eq!(replicas_of(&rss[0]), 1);
    let name = rss[0].metadata.name().to_string();
    wait_for("the scaling events", || async {
        let messages = events(c, "api", "ScalingReplicaSet").await;
        messages.contains(&format!("Scaled up replica set {name} from 2 to 6"))
            && messages.contains(&format!("Scaled down replica set {name} from 6 to 1"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_pods_are_replaced_exactly_once_even_thirty_at_a_time() {
    let env = cluster().await;
    let c = &env.client;
    let high = PodHighWater::watch(&env, "burst");
    create_deployment(c, "burst", 30, "example.org/burst:1").await;
    wait_for("30 ready replicas", || rolled_out(c, "burst", 30)).await;
    assert_eq!(high.max(), 30, "a burst of 30 never runs more than 30 pods");

    // One pod deleted: exactly one new one.
    let before: BTreeSet<String> = active_pods(c, "burst")
        .await
        .iter()
        .map(|p| p.metadata.name().to_string())
        .collect();
    let victim = before.iter().next().cloned().unwrap();
    assert!(c.delete::<Pod>(NS, &victim, None).await.unwrap());
    wait_for("the deleted pod to be replaced", || async {
        rolled_out(c, "burst", 30).await
            && !active_pods(c, "burst")
                .await
                .iter()
                .any(|p| p.metadata.name() == victim)
    })
    .await;
    let after: BTreeSet<String> = active_pods(c, "burst")
        .await
        .iter()
        .map(|p| p.metadata.name().to_string())
        .collect();
    assert_eq!(after.difference(&before).count(), 1, "exactly one new pod");
    assert_eq!(
        before.difference(&after).cloned().collect::<Vec<_>>(),
        vec![victim]
    );

    // Five at once, concurrently: exactly five new ones.
    let victims: Vec<String> = after.iter().take(5).cloned().collect();
    let deletes = victims.iter().map(|v| c.delete::<Pod>(NS, v, None));
    for deleted in futures::future::join_all(deletes).await {
        assert!(deleted.unwrap());
    }
    wait_for("the five deleted pods to be replaced", || async {
        let names: Vec<String> = active_pods(c, "burst")
            .await
            .iter()
            .map(|p| p.metadata.name().to_string())
            .collect();
        rolled_out(c, "burst", 30).await && victims.iter().all(|v| !names.contains(v))
    })
    .await;
    let last: BTreeSet<String> = active_pods(c, "burst")
        .await
        .iter()
        .map(|p| p.metadata.name().to_string())
        .collect();
    assert_eq!(last.difference(&after).count(), 5, "exactly five new pods");
    assert_eq!(high.max(), 30, "replacing pods never runs more than 30");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_moves_every_pod_to_the_new_template() {
    let env = cluster().await;
    let c = &env.client;
    let d = create_deployment(c, "roll", 4, "example.org/roll:1").await;
    wait_for("4 ready v1 replicas", || rolled_out(c, "roll", 4)).await;
    wait_for("revision 1", || async {
        revision_of(&get_deployment(c, "roll").await.metadata) == Some("1")
    })
    .await;
    let v1 = replicasets_of(c, &d).await;
    assert_eq!(v1.len(), 1);
    let old_name = v1[0].metadata.name().to_string();

    patch_deployment(
        c,
        "roll",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "example.org/roll:2"}]}}}}),
    )
    .await;
    wait_for("the rollout to v2 to complete", || async {
        rolled_out(c, "roll", 4).await
            && active_pods(c, "roll")
                .await
                .iter()
                .all(|p| p.spec.containers[0].image == "example.org/roll:2")
    })
    .await;

    let rss = replicasets_of(c, &d).await;
    assert_eq!(rss.len(), 2, "old and new ReplicaSets");
    let old = rss.iter().find(|rs| rs.metadata.name() == old_name).unwrap();
    let new = rss.iter().find(|rs| rs.metadata.name() != old_name).unwrap();
    assert_eq!(replicas_of(old), 0, "the old ReplicaSet is scaled to 0");
    assert_eq!(replicas_of(new), 4);
    assert_eq!(revision_of(&old.metadata), Some("1"));
    assert_eq!(revision_of(&new.metadata), Some("2"));
    wait_for("revision 2 on the deployment", || async {
        revision_of(&get_deployment(c, "roll").await.metadata) == Some("2")
    })
    .await;
    wait_for("the old ReplicaSet's status at 0", || async {
        let rs = c.get::<ReplicaSet>(NS, &old_name).await.unwrap().unwrap();
        rs.status.is_some_and(|s| s.replicas == 0)
    })
    .await;
    let new_name = new.metadata.name().to_string();
    wait_for("scale-up and scale-down events", || async {
        let messages = events(c, "roll", "ScalingReplicaSet").await;
        messages
            .iter()
            .any(|m| m.starts_with(&format!("Scaled up replica set {new_name} ")))
            && messages
                .iter()
                .any(|m| m.starts_with(&format!("Scaled down replica set {old_name} ")))
            && messages.iter().any(|m| m.ends_with(" to 0"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicaset_adopts_a_matching_orphan_and_creates_the_rest() {
    let env = cluster().await;
    let c = &env.client;
    let orphan: Pod = parse(
        json!({"metadata": {"name": "stray", "namespace": "default", "labels": {"app": "solo"}},
        "spec": {"containers": [{"name": "app", "image": "example.org/solo:1"}]}}),
    );
    c.create(&orphan).await.unwrap();
    let rs: ReplicaSet = parse(json!({"metadata": {"name": "solo", "namespace": "default"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "solo"}},
                 "template": {"metadata": {"labels": {"app": "solo"}},
                              "spec": {"containers": [{"name": "app", "image": "example.org/solo:1"}]}}}}));
    let rs = c.create(&rs).await.unwrap();
    wait_for(
        "3 pods of the set, the orphan among them, and its status",
        || async {
            let pods = active_pods(c, "solo").await;
            let owned = pods
                .iter()
                .all(|p| p.metadata.controller_ref().map(|r| &r.uid) == rs.metadata.uid.as_ref());
            let status = c
                .get::<ReplicaSet>(NS, "solo")
                .await
                .unwrap()
                .and_then(|r| r.status)
                .is_some_and(|s| s.replicas == 3 && s.ready_replicas == Some(3));
            pods.len() == 3 && owned && pods.iter().any(|p| p.metadata.name() == "stray") && status
        },
    )
    .await;
    assert_eq!(active_pods(c, "solo").await.len(), 3, "no pod beyond the three");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_collision_moves_the_new_replicaset_to_another_name() {
    let env = cluster().await;
    let c = &env.client;
    // Paused, the deployment makes no ReplicaSet yet: its name can be taken first.
    let d: Deployment = parse(json!({"metadata": {"name": "clash", "namespace": "default"},
        "spec": {"replicas": 2, "paused": true, "selector": {"matchLabels": {"app": "clash"}},
                 "template": {"metadata": {"labels": {"app": "clash"}},
                              "spec": {"containers": [{"name": "app", "image": "example.org/clash:1"}]}}}}));
    let d = c.create(&d).await.unwrap();
    let taken = format!("clash-{}", template_hash(&d.spec.template));
    // Another set under that name, which the deployment's selector does not match.
    let squatter: ReplicaSet = parse(json!({"metadata": {"name": taken, "namespace": "default"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "squatter"}},
                 "template": {"metadata": {"labels": {"app": "squatter"}},
                              "spec": {"containers": [{"name": "app", "image": "example.org/other:1"}]}}}}));
    c.create(&squatter).await.unwrap();

    patch_deployment(c, "clash", json!({"spec": {"paused": false}})).await;
    wait_for("2 ready replicas despite the collision", || {
        rolled_out(c, "clash", 2)
    })
    .await;
    let d = get_deployment(c, "clash").await;
    assert_eq!(d.status.as_ref().and_then(|s| s.collision_count), Some(1));
    let rss = replicasets_of(c, &d).await;
    assert_eq!(rss.len(), 1);
    assert_ne!(rss[0].metadata.name(), taken, "the new set moved to another name");
    let squatter = c.get::<ReplicaSet>(NS, &taken).await.unwrap().unwrap();
    assert!(
        squatter.metadata.controller_ref().is_none(),
        "the squatter is left alone"
    );
}
