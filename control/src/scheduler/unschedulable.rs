//! Why a pod could not be placed, as the `PodScheduled=False` condition
//! reports it: `0/5 nodes are available: 3 Insufficient memory, 2 node(s)
//! didn't match Pod's node affinity/selector.`
//!
//! Each node counts once per reason it failed (a node short of both cpu and
//! memory counts for both). Reasons are listed by count, largest first, then
//! by text. Kubernetes itself sorts the `"<count> <reason>"` strings as plain
//! text (`sort.Strings`), which puts `10 …` before `9 …`; the count-first
//! order is the and reads better, and [`Unschedulable::reasons`]
//! keeps the counts for tools that want their own order.

use std::collections::HashMap;

use super::filter::FilterReason;
use super::platform::PlatformError;

/// The `PodScheduled` condition's reason when no node fits.
pub const REASON_UNSCHEDULABLE: &str = "Unschedulable";

/// Kubernetes' message when the cluster has no nodes at all.
pub const NO_NODES_MESSAGE: &str = "no nodes available to schedule pods";

/// No node can take the pod right now.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Unschedulable {
    /// The condition message.
    pub message: String,
    /// How many nodes the snapshot held.
    pub nodes: usize,
    /// Each reason with the number of nodes it ruled out, in message order.
    pub reasons: Vec<(FilterReason, usize)>,
    /// Set when the pod itself is at fault (no node was even tried).
    pub pod_problem: Option<PlatformError>,
}

impl Unschedulable {
    /// From per-reason node counts.
    pub fn from_counts(nodes: usize, counts: HashMap<FilterReason, usize>) -> Unschedulable {
        if nodes == 0 {
            return Unschedulable::no_nodes();
        }
        let mut reasons: Vec<(FilterReason, usize)> = counts.into_iter().collect();
        let mut keyed: Vec<(usize, String, FilterReason)> =
            reasons.drain(..).map(|(r, c)| (c, r.to_string(), r)).collect();
        keyed.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let listed: Vec<String> = keyed.iter().map(|(c, text, _)| format!("{c} {text}")).collect();
        let message = if listed.is_empty() {
            format!("0/{nodes} nodes are available.")
        } else {
            format!("0/{nodes} nodes are available: {}.", listed.join(", "))
        };
        Unschedulable {
            message,
            nodes,
            reasons: keyed.into_iter().map(|(c, _, r)| (r, c)).collect(),
            pod_problem: None,
        }
    }

    /// The pod cannot be placed anywhere because of itself (Kubernetes'
    /// pre-filter message form: `0/5 nodes are available: <why>.`).
    pub fn pod_problem(nodes: usize, problem: PlatformError) -> Unschedulable {
        Unschedulable {
            message: format!("0/{nodes} nodes are available: {problem}."),
            nodes,
            reasons: Vec::new(),
            pod_problem: Some(problem),
        }
    }

    /// The cluster has no nodes.
    pub fn no_nodes() -> Unschedulable {
        Unschedulable {
            message: NO_NODES_MESSAGE.to_string(),
            nodes: 0,
            reasons: Vec::new(),
            pod_problem: None,
        }
    }

    /// The number of nodes ruled out for `reason`.
    pub fn count(&self, reason: &FilterReason) -> usize {
        self.reasons
            .iter()
            .find(|(r, _)| r == reason)
            .map_or(0, |(_, c)| *c)
    }
}
