//! Each node's complete desired set, retained on `nodes/{node}/podset`
//! ([`PodSet`]): how an agent learns of pods deleted while it was away even
//! when the broker lost every retained message (a restarted embedded broker)
//! or its session.
//!
//! A controller of its own, keyed by node name (`ObjectKey { namespace: "",
//! name: node }`), computes the set from the Pod cache ([`desired::pod_set`])
//! and publishes it. It runs for a node when a pod joins or leaves the node's
//! set (the pod publisher queues it: after withdrawing a topic, or after
//! publishing a pod the last published set lacks), for every known node after
//! each (re)connection, and for a node whose retained set the broker shows
//! and the gateway has not published in this connection. Known nodes: those
//! with a registered secret (`node-secret-*`), and those pods are bound to.
//!
//! Every run publishes with the cache's current revision, so the last set of
//! a node always carries a revision at or above any pod version sent to it:
//! an agent may drop every held pod the set covers and lacks.

use std::collections::BTreeSet;

use rumqttc::QoS;
use shturman_api::wire::{Topic, valid_segment};

use super::{GatewayError, Shared, desired};
use crate::runtime::{Action, ObjectKey};
use crate::tokens::SYSTEM_NAMESPACE;

/// The queue key of a node's set.
pub(super) fn node_key(node: &str) -> ObjectKey {
    ObjectKey::new("", node)
}

impl Shared {
    /// Publishes `key.name`'s pod set, computed from the cache now.
    pub(super) async fn reconcile_podset(&self, key: &ObjectKey) -> Result<Action, GatewayError> {
        let node = key.name.as_str();
        // The revision first: the pods read after it reflect at least it.
        let revision = self.pods.revision();
        let pods = self.pods.filter(|p| desired::target_node(p) == Some(node));
        let set = desired::pod_set(node, pods.iter().map(|p| &**p), revision);
        let bytes = serde_json::to_vec(&set).map_err(|source| GatewayError::Encode {
            key: key.clone(),
            source,
        })?;
        let topic = Topic::PodSet { node: node.into() }.name();
        tracing::debug!(
            node,
            pods = set.pods.len(),
            revision,
            "publishing a node's pod set"
        );
        self.mqtt.publish(topic, QoS::AtLeastOnce, true, bytes).await?;
        self.podsets().insert(node.to_string(), set);
        Ok(Action::Done)
    }

    /// Queues `node`'s set unless the last published one already holds
    /// `pod` (namespace, name, uid) — or, with `None`, queues it always.
    pub(super) fn podset_changed(&self, node: &str, pod: Option<(&str, &str, &str)>) {
        let fresh = pod.is_some_and(|(ns, name, uid)| {
            self.podsets()
                .get(node)
                .is_some_and(|s| s.contains(ns, name, uid))
        });
        if !fresh {
            self.podset_queue.add(node_key(node));
        }
    }

    /// The broker holds a pod set for `node`: publish ours if this
    /// connection has not yet (it may be stale, e.g. from before a restart).
    pub(super) fn seen_podset(&self, node: &str) {
        if !self.podsets().contains_key(node) {
            self.podset_queue.add(node_key(node));
        }
    }

    /// After a (re)connection: every known node's set again.
    pub(super) fn resync_podsets(&self) {
        self.podsets().clear();
        let mut nodes: BTreeSet<String> = self
            .pods
            .list()
            .iter()
            .filter_map(|p| desired::target_node(p).map(str::to_string))
            .collect();
        nodes.extend(self.secrets.list_in(SYSTEM_NAMESPACE).iter().filter_map(|s| {
            s.metadata
                .name()
                .strip_prefix(super::auth::NODE_SECRET_PREFIX)
                .filter(|n| valid_segment(n))
                .map(str::to_string)
        }));
        for node in nodes {
            self.podset_queue.add(node_key(&node));
        }
    }
}
