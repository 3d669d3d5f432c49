//! The node lifecycle controller, as Kubernetes' (simplified), on an
//! injected [`Clock`]:
//!
//! - a node whose agent stops heartbeating (the `Ready` condition's
//!   `lastHeartbeatTime`) for `node_grace` gets its conditions set to
//!   `Unknown` and the `node.kubernetes.io/unreachable` taints (`NoExecute`,
//!   `NoSchedule`); a node reporting `Ready=False` gets the `not-ready` ones;
//!   a node Ready again loses them (the agent writes the condition back);
//! - taint-based eviction: pods bound to a node with a `NoExecute` taint they
//!   do not tolerate are deleted at once, those tolerating it for
//!   `tolerationSeconds` (by default `default_toleration_seconds` for the
//!   not-ready/unreachable taints) that long after the taint's `timeAdded`.
//!   The controller wakes exactly at the next deadline (requeue-after);
//! - pods bound to a node that no longer exists are deleted (Kubernetes'
//!   PodGC), so their ReplicaSets replace them.
//!
//! Decisions are pure ([`health`], [`eviction`]); this module reads the
//! caches and writes.

pub mod eviction;
pub mod health;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use shturman_api::core::{Node, Pod};
use shturman_api::meta::ObjectMeta;
use tokio_util::sync::CancellationToken;

use self::eviction::{Eviction, eviction_deadline};
use self::health::{NodeVerdict, desired_taints, mark_unknown, node_health};
use crate::client::Client;
use crate::runtime::{Action, Clock, Controller, Informer, ObjectKey, Recorder};
use crate::server::error::ApiError;

/// How the node lifecycle controller judges nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeLifecycleConfig {
    /// How long a node may go without a heartbeat before it is `Unknown`
    /// (Kubernetes' `--node-monitor-grace-period`, 40 s).
    pub node_grace: Duration,
    /// The `tolerationSeconds` every pod gets for the not-ready and
    /// unreachable taints unless it tolerates them itself (Kubernetes'
    /// `DefaultTolerationSeconds` admission plugin, 300 s): how long a pod
    /// waits for its node to come back before it is evicted.
    pub default_toleration_seconds: i64,
    /// Reconciles running at once.
    pub workers: usize,
}

impl Default for NodeLifecycleConfig {
    fn default() -> Self {
        NodeLifecycleConfig {
            node_grace: Duration::from_secs(40),
            default_toleration_seconds: 300,
            workers: 2,
        }
    }
}

/// Why a node pass failed (it is retried with back-off).
#[derive(Debug, thiserror::Error)]
pub enum NodeLifecycleError {
    #[error("node {node}: {source}")]
    Api { node: String, source: ApiError },
}

/// Slack added to a wake-up so the deadline has passed when it fires.
const WAKE_SLACK: Duration = Duration::from_millis(20);

struct Inner {
    client: Client,
    nodes: Informer<Node>,
    pods: Informer<Pod>,
    clock: Arc<dyn Clock>,
    recorder: Recorder,
    config: NodeLifecycleConfig,
    /// Whether each node was Ready when last seen, for `NodeReady` /
    /// `NodeNotReady` events on changes.
    last_ready: Mutex<HashMap<String, bool>>,
}

/// Starts the node lifecycle controller; it stops when `stop` is cancelled.
pub fn start(
    client: Client,
    nodes: &Informer<Node>,
    pods: &Informer<Pod>,
    clock: Arc<dyn Clock>,
    config: NodeLifecycleConfig,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(client, nodes.clone(), pods.clone(), clock, config, stop))
}

/// Runs the node lifecycle controller until `stop` is cancelled.
pub async fn run(
    client: Client,
    nodes: Informer<Node>,
    pods: Informer<Pod>,
    clock: Arc<dyn Clock>,
    config: NodeLifecycleConfig,
    stop: CancellationToken,
) {
    let recorder = Recorder::new(client.clone(), "node-controller", clock.clone());
    let workers = config.workers;
    let inner = Arc::new(Inner {
        client,
        nodes,
        pods,
        clock,
        recorder,
        config,
        last_ready: Mutex::default(),
    });
    tokio::select! {
        () = async { inner.nodes.wait_synced().await; inner.pods.wait_synced().await } => {}
        () = stop.cancelled() => return,
    }
    let controller = Controller::new("node-lifecycle-controller", stop);
    controller.watches(&inner.nodes, |n: &Node| vec![node_key(n.metadata.name())]);
    controller.watches(&inner.pods, |p: &Pod| {
        p.spec.node_name.iter().map(|n| node_key(n)).collect()
    });
    let handle = controller.handle();
    for n in inner.nodes.list() {
        handle.add(node_key(n.metadata.name()));
    }
    for p in inner.pods.list() {
        if let Some(n) = &p.spec.node_name {
            handle.add(node_key(n));
        }
    }
    controller
        .run(workers, move |key: ObjectKey| {
            let inner = inner.clone();
            async move { inner.reconcile(&key.name).await }
        })
        .await;
}

fn node_key(name: &str) -> ObjectKey {
    ObjectKey::new("", name)
}

impl Inner {
    async fn reconcile(&self, name: &str) -> Result<Action, NodeLifecycleError> {
        let err = |source| NodeLifecycleError::Api {
            node: name.to_string(),
            source,
        };
        let Some(node) = self.nodes.get(&node_key(name)) else {
            self.pod_gc(name).await.map_err(err)?;
            return Ok(Action::Done);
        };
        let now = self.clock.now();
        let verdict = node_health(&node, now, self.config.node_grace);
        let node = self.mark(&node, verdict, now).await.map_err(err)?;
        let next = self.evict(&node, now).await.map_err(err)?;
        let wake = [verdict.stale_at(), next].into_iter().flatten().min();
        Ok(wake.map_or(Action::Done, |t| {
            Action::RequeueAfter((t - now).to_std().unwrap_or_default() + WAKE_SLACK)
        }))
    }

    /// Writes what the verdict says into the node: conditions `Unknown` when
    /// it went silent, the controller's taints; records readiness changes.
    async fn mark(&self, node: &Node, verdict: NodeVerdict, now: DateTime<Utc>) -> Result<Node, ApiError> {
        let name = node.metadata.name();
        let mut node = node.clone();
        if verdict == NodeVerdict::Stale
            && let Some(status) = mark_unknown(node.status.as_ref(), now)
        {
            node.status = Some(status);
            node = self.client.replace_status(&node).await?;
        }
        let ready = verdict.is_ready();
        let before = self
            .last_ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_string(), ready);
        if before.is_some_and(|b| b != ready) {
            let reason = if ready { "NodeReady" } else { "NodeNotReady" };
            let message = format!("Node {name} status is now: {reason}");
            self.recorder.normal(&node, reason, &message).await;
        }
        if let Some(taints) = desired_taints(&node.spec.taints, verdict, now) {
            let patch = serde_json::json!({
                "metadata": {"resourceVersion": node.metadata.resource_version},
                "spec": {"taints": taints},
            });
            tracing::info!(node = name, ?verdict, "updating node taints");
            node = self.client.merge_patch::<Node>(None, name, &patch, false).await?;
        }
        Ok(node)
    }

    /// Evicts the pods on `node` whose time is up; returns the next deadline.
    async fn evict(&self, node: &Node, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, ApiError> {
        let name = node.metadata.name();
        let mut next: Option<DateTime<Utc>> = None;
        for pod in self.pods_on(name) {
            let due = match eviction_deadline(&pod, &node.spec.taints, self.config.default_toleration_seconds)
            {
                Eviction::Never => false,
                Eviction::Now => true,
                Eviction::At(t) if t <= now => true,
                Eviction::At(t) => {
                    next = Some(next.map_or(t, |n| n.min(t)));
                    false
                }
            };
            if due {
                let message = format!(
                    "Marking for deletion Pod {}/{}",
                    pod.metadata.namespace(),
                    pod.metadata.name()
                );
                self.delete_pod(&pod.metadata, name, Some(("TaintManagerEviction", message)))
                    .await?;
            }
        }
        Ok(next)
    }

    /// Pods bound to `node` and not already going.
    fn pods_on(&self, node: &str) -> Vec<Arc<Pod>> {
        self.pods
            .filter(|p| p.spec.node_name.as_deref() == Some(node) && p.metadata.deletion_timestamp.is_none())
    }

    /// Deletes the pods of a node that is gone (confirmed by a live read:
    /// the cache may lag behind its creation).
    async fn pod_gc(&self, node: &str) -> Result<(), ApiError> {
        self.last_ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(node);
        let pods = self.pods_on(node);
        if pods.is_empty() || self.client.get::<Node>(None, node).await?.is_some() {
            return Ok(());
        }
        for pod in pods {
            tracing::info!(node, pod = %ObjectKey::of(&*pod), "deleting a pod of a node that is gone");
            self.delete_pod(&pod.metadata, node, None).await?;
        }
        Ok(())
    }

    /// Deletes a pod if it is still the one seen, still bound to `node`;
    /// records `event` on it first.
    async fn delete_pod(
        &self,
        seen: &ObjectMeta,
        node: &str,
        event: Option<(&str, String)>,
    ) -> Result<(), ApiError> {
        let (ns, name) = (seen.namespace.as_deref(), seen.name());
        let Some(live) = self.client.get::<Pod>(ns, name).await? else {
            return Ok(());
        };
        if live.metadata.uid != seen.uid
            || live.spec.node_name.as_deref() != Some(node)
            || live.metadata.deletion_timestamp.is_some()
        {
            return Ok(());
        }
        if let Some((reason, message)) = event {
            tracing::info!(node, pod = %ObjectKey::of(&live), "{message}");
            self.recorder.normal(&live, reason, &message).await;
        }
        self.client.delete::<Pod>(ns, name, None).await?;
        Ok(())
    }
}
