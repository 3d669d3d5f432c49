//! The agents' Service proxy counters (`nodes/{node}/proxy-stats`, a
//! [`Signed`](shturman_api::wire::Signed) [`ProxyStats`] every heartbeat
//! period), kept for `/metrics` (`server/metrics.rs` renders them as
//! `shturman_proxy_*{node,namespace,service,port}`).
//!
//! Each message replaces its node's figures whole (a Service port the
//! proxy no longer serves disappears); a message whose stamp is not newer
//! than the node's last applied one (a QoS 1 duplicate, a late one) is
//! dropped. A node silent for [`STALE_AFTER`] is left out of the
//! exposition. The counters live in memory only: they are the agents'
//! own cumulative counts, so a control-plane restart loses nothing the
//! next message does not bring back.
//!
//! The figures are kept in the API server's state ([`ProxyStatsHub`], reached
//! through the gateway's client): the gateway writes it and `/metrics` reads it.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use shturman_api::wire::{ProxyPortStats, ProxyStats, Stamp};

use super::Shared;

/// A node whose counters have not come for this long is left out.
pub const STALE_AFTER: Duration = Duration::from_secs(300);
/// Most Service ports kept per node (the rest of a message is dropped, logged).
pub const MAX_PORTS_PER_NODE: usize = 4096;

#[derive(Debug)]
struct NodeStats {
    stamp: Stamp,
    at: Instant,
    ports: Vec<ProxyPortStats>,
}

/// Every node's latest proxy counters.
#[derive(Debug, Default)]
pub struct ProxyStatsHub {
    nodes: Mutex<BTreeMap<String, NodeStats>>,
}

/// One Service port's counters on one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub node: String,
    pub stats: ProxyPortStats,
}

impl ProxyStatsHub {
    fn nodes(&self) -> MutexGuard<'_, BTreeMap<String, NodeStats>> {
        self.nodes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes `stats` from `node` (already authenticated) if it is newer than
    /// the last applied; returns whether it was applied.
    pub fn apply(&self, node: &str, mut stats: ProxyStats, now: Instant) -> bool {
        let mut nodes = self.nodes();
        if nodes.get(node).is_some_and(|n| stats.stamp <= n.stamp) {
            return false;
        }
        if stats.ports.len() > MAX_PORTS_PER_NODE {
            tracing::warn!(
                node,
                ports = stats.ports.len(),
                "proxy counters for more than {MAX_PORTS_PER_NODE} service ports; the rest are dropped"
            );
            stats.ports.truncate(MAX_PORTS_PER_NODE);
        }
        nodes.retain(|_, n| now.saturating_duration_since(n.at) < STALE_AFTER);
        nodes.insert(
            node.to_string(),
            NodeStats {
                stamp: stats.stamp,
                at: now,
                ports: stats.ports,
            },
        );
        true
    }

    /// Every fresh node's counters, sorted by node, namespace, service and port.
    pub fn snapshot(&self, now: Instant) -> Vec<Sample> {
        let nodes = self.nodes();
        let mut out: Vec<Sample> = nodes
            .iter()
            .filter(|(_, n)| now.saturating_duration_since(n.at) < STALE_AFTER)
            .flat_map(|(node, n)| {
                n.ports.iter().map(|p| Sample {
                    node: node.clone(),
                    stats: p.clone(),
                })
            })
            .collect();
        out.sort_by(|a, b| {
            (&a.node, &a.stats.namespace, &a.stats.name, a.stats.port).cmp(&(
                &b.node,
                &b.stats.namespace,
                &b.stats.name,
                b.stats.port,
            ))
        });
        out
    }
}

impl Shared {
    /// A node's signed-and-checked proxy counters.
    pub(super) fn proxy_stats(&self, node: &str, body: &str) {
        let stats: ProxyStats = match serde_json::from_str(body) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(node, "dropping malformed proxy counters: {e}");
                return;
            }
        };
        if stats.node != node {
            tracing::warn!(
                node,
                claimed = %stats.node,
                "dropping proxy counters that name another node"
            );
            return;
        }
        if !self.client.proxy_stats().apply(node, stats, Instant::now()) {
            tracing::debug!(node, "stale proxy counters dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(node: &str, seq: u64, ports: &[(&str, i32, u64)]) -> ProxyStats {
        ProxyStats {
            node: node.into(),
            stamp: Stamp { epoch: 1, seq },
            ports: ports
                .iter()
                .map(|(name, port, accepted)| ProxyPortStats {
                    namespace: "default".into(),
                    name: (*name).into(),
                    port: *port,
                    accepted: *accepted,
                    ..ProxyPortStats::default()
                })
                .collect(),
        }
    }

    #[test]
    fn newer_messages_replace_a_node_s_figures() {
        let hub = ProxyStatsHub::default();
        let t0 = Instant::now();
        assert!(hub.apply("pi-2", stats("pi-2", 5, &[("web", 80, 3)]), t0));
        assert!(hub.apply("pi-1", stats("pi-1", 5, &[("web", 80, 7), ("api", 8080, 1)]), t0));
        let snap = hub.snapshot(t0);
        let got: Vec<_> = snap
            .iter()
            .map(|s| (s.node.as_str(), s.stats.name.as_str(), s.stats.accepted))
            .collect();
        assert_eq!(got, [("pi-1", "api", 1), ("pi-1", "web", 7), ("pi-2", "web", 3)]);
        // A duplicate or older message is dropped; a newer one replaces all.
        assert!(!hub.apply("pi-1", stats("pi-1", 5, &[]), t0));
        assert!(!hub.apply("pi-1", stats("pi-1", 4, &[]), t0));
        assert!(hub.apply("pi-1", stats("pi-1", 6, &[("web", 80, 9)]), t0));
        assert_eq!(hub.snapshot(t0).len(), 2);
        // A restarted agent (new epoch) counts from zero again.
        let mut restarted = stats("pi-1", 1, &[("web", 80, 1)]);
        restarted.stamp.epoch = 2;
        assert!(hub.apply("pi-1", restarted, t0));
        // A silent node drops out.
        let later = t0 + STALE_AFTER;
        assert!(hub.snapshot(later).is_empty());
        assert!(hub.apply("pi-3", stats("pi-3", 1, &[("web", 80, 1)]), later));
        assert_eq!(hub.snapshot(later).len(), 1);
        assert_eq!(hub.nodes().len(), 1, "stale nodes are forgotten");
    }

    #[test]
    fn too_many_ports_are_cut() {
        let hub = ProxyStatsHub::default();
        let ports: Vec<(&str, i32, u64)> = (0..MAX_PORTS_PER_NODE + 3)
            .map(|i| ("web", i32::try_from(i).unwrap_or(0), 0))
            .collect();
        hub.apply("pi-1", stats("pi-1", 1, &ports), Instant::now());
        assert_eq!(hub.snapshot(Instant::now()).len(), MAX_PORTS_PER_NODE);
    }
}
