//! The binder loop: the thin shell around the pure scheduler. It watches
//! pods and nodes through the shared informers, schedules every pending pod
//! against one snapshot per pass (assuming each placement so the next pod
//! sees it), writes the bindings concurrently so the store's group commit
//! batches them, reports unschedulable pods (`PodScheduled=False` with the
//! reasons) once per distinct message, and tries them again whenever a node
//! or a pod changes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use shturman_api::core::{Node, Pod, PodPhase};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{ClusterSnapshot, Config, REASON_UNSCHEDULABLE, Scheduler, Unschedulable};
use crate::client::Client;
use crate::runtime::{Informer, Recorder};

/// Bindings written at once (the store batches them into shared flushes).
const IN_FLIGHT: usize = 64;

/// Whether the scheduler should place `pod`.
fn pending(pod: &Pod) -> bool {
    pod.spec.node_name.as_deref().is_none_or(str::is_empty)
        && pod.metadata.deletion_timestamp.is_none()
        && !matches!(
            pod.status.as_ref().and_then(|s| s.phase),
            Some(PodPhase::Succeeded | PodPhase::Failed)
        )
}

/// Starts the scheduler.
pub fn start(
    client: Client,
    nodes: &Informer<Node>,
    pods: &Informer<Pod>,
    recorder: Recorder,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let changed = Arc::new(Notify::new());
    relay(nodes, changed.clone(), stop.clone());
    relay(pods, changed.clone(), stop.clone());
    let (nodes, pods) = (nodes.clone(), pods.clone());
    tokio::spawn(async move {
        tokio::select! {
            () = run(client, nodes, pods, recorder, changed) => {}
            () = stop.cancelled() => {}
        }
    })
}

/// Wakes the loop on every change of an informer's kind.
fn relay<T: shturman_api::meta::Object + Send + Sync + 'static>(
    informer: &Informer<T>,
    changed: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut rx = informer.subscribe();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                r = rx.recv() => match r {
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => changed.notify_one(),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                () = stop.cancelled() => return,
            }
        }
    });
}

async fn run(
    client: Client,
    nodes: Informer<Node>,
    pods: Informer<Pod>,
    recorder: Recorder,
    changed: Arc<Notify>,
) {
    nodes.wait_synced().await;
    pods.wait_synced().await;
    let mut scheduler = Scheduler::new(Config::default());
    // The last unschedulable message written per pod uid.
    let mut reported: HashMap<String, String> = HashMap::new();
    loop {
        let all_pods = pods.list();
        let mut queue: Vec<&Arc<Pod>> = all_pods.iter().filter(|p| pending(p)).collect();
        if queue.is_empty() {
            reported.clear();
            changed.notified().await;
            continue;
        }
        queue.sort_by(|a, b| {
            (a.metadata.creation_timestamp.as_ref(), &a.metadata.name)
                .cmp(&(b.metadata.creation_timestamp.as_ref(), &b.metadata.name))
        });
        let node_list = nodes.list();
        let mut snapshot =
            ClusterSnapshot::build(node_list.iter().map(|n| &**n), all_pods.iter().map(|p| &**p));
        let mut bindings = Vec::new();
        let mut failures = Vec::new();
        for pod in queue {
            match scheduler.schedule_and_assume(pod, &mut snapshot) {
                Ok(node) => bindings.push((pod.clone(), node)),
                Err(why) => failures.push((pod.clone(), why)),
            }
        }
        let bound = bindings.len();
        let highest = futures::stream::iter(bindings)
            .map(|(pod, node)| bind(&client, &recorder, pod, node))
            .buffer_unordered(IN_FLIGHT)
            .fold(0, |acc, rev| async move { acc.max(rev) })
            .await;
        let mut wrote = false;
        for (pod, why) in &failures {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            if reported.get(&uid) == Some(&why.message) {
                continue;
            }
            if report_unschedulable(&client, &recorder, pod, why).await {
                reported.insert(uid, why.message.clone());
                wrote = true;
            }
        }
        if highest > 0 {
            // The next pass must see this pass's placements.
            pods.wait_seen(highest, Duration::from_secs(5)).await;
        }
        tracing::debug!(bound, unschedulable = failures.len(), "scheduling pass");
        if bound == 0 && !wrote {
            // Nothing placeable: wait for the cluster to change.
            changed.notified().await;
        }
    }
}

/// Writes one binding and its event; returns the revision (0 on failure).
async fn bind(client: &Client, recorder: &Recorder, pod: Arc<Pod>, node: String) -> u64 {
    let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    match client.bind_pod(&ns, &name, &uid, &node).await {
        Ok(rev) => {
            recorder
                .normal(
                    &*pod,
                    "Scheduled",
                    &format!("Successfully assigned {ns}/{name} to {node}"),
                )
                .await;
            rev
        }
        Err(e) => {
            tracing::debug!(pod = %name, error = %e, "binding not written; retried next pass");
            0
        }
    }
}

/// Sets `PodScheduled=False` with the reasons; whether it was written.
async fn report_unschedulable(client: &Client, recorder: &Recorder, pod: &Pod, why: &Unschedulable) -> bool {
    let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let name = pod.metadata.name.clone().unwrap_or_default();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut conditions: Vec<serde_json::Value> = pod
        .status
        .as_ref()
        .map(|s| {
            s.conditions
                .iter()
                .filter_map(|c| serde_json::to_value(c).ok())
                .collect()
        })
        .unwrap_or_default();
    conditions.retain(|c| c.get("type").and_then(|t| t.as_str()) != Some("PodScheduled"));
    conditions.push(
        json!({"type": "PodScheduled", "status": "False", "reason": REASON_UNSCHEDULABLE,
        "message": why.message, "lastTransitionTime": now}),
    );
    let patch = json!({"status": {"conditions": conditions}});
    match client.merge_patch::<Pod>(Some(&ns), &name, &patch, true).await {
        Ok(_) => {
            recorder.warning(pod, "FailedScheduling", &why.message).await;
            true
        }
        Err(e) => {
            tracing::debug!(pod = %name, error = %e, "unschedulable status not written");
            false
        }
    }
}
