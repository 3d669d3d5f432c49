//! The scores, each 0–100 per node and combined by weight (Kubernetes'
//! default weights): least-allocated resources (1), spreading an owner's
//! replicas across nodes and zones (2), and untolerated `PreferNoSchedule`
//! taints (3).
//!
//! Spreading follows Kubernetes' `SelectorSpread`, keyed by the controller
//! owner's uid: a node scores `100 · (max − count) / max` over the candidate
//! nodes; when candidates carry `topology.kubernetes.io/zone`, a zoned node's
//! score is one third that and two thirds the same formula over zones (zone
//! counts are the snapshot's whole-zone totals, not only the candidates').

use super::filter::{PodFacts, tolerated};
use super::resources::Resources;
use super::snapshot::ClusterSnapshot;

/// The best a node can score on one criterion.
pub const MAX_NODE_SCORE: i64 = 100;

/// How much each score counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Weights {
    pub least_allocated: i64,
    pub spread: i64,
    pub taints: i64,
}

impl Default for Weights {
    /// Kubernetes' defaults: NodeResourcesFit 1, PodTopologySpread 2,
    /// TaintToleration 3.
    fn default() -> Weights {
        Weights {
            least_allocated: 1,
            spread: 2,
            taints: 3,
        }
    }
}

/// Kubernetes' `LeastAllocated`: the mean over cpu and memory of the share
/// left free after placing the pod (non-zero requests, so best-effort pods
/// count too). A resource the node has none of scores 0.
pub fn least_allocated(allocatable: Resources, requested: Resources, pod: Resources) -> i64 {
    let one = |alloc: i64, used: i64, want: i64| -> i64 {
        let alloc = i128::from(alloc);
        let after = i128::from(used) + i128::from(want);
        if alloc <= 0 || after > alloc {
            return 0;
        }
        let score = (alloc - after) * i128::from(MAX_NODE_SCORE) / alloc;
        i64::try_from(score).unwrap_or(0)
    };
    let cpu = one(allocatable.milli_cpu, requested.milli_cpu, pod.milli_cpu);
    let memory = one(allocatable.memory, requested.memory, pod.memory);
    (cpu + memory) / 2
}

/// `100 · (max − count) / max`, or 100 when `max` is 0.
fn spread_formula(count: u32, max: u32) -> i64 {
    if max == 0 {
        return MAX_NODE_SCORE;
    }
    MAX_NODE_SCORE * i64::from(max.saturating_sub(count)) / i64::from(max)
}

/// Writes each candidate's total weighted score into `out` (same order as
/// `candidates`, which are indexes into the snapshot's nodes).
pub fn score(
    facts: &PodFacts<'_>,
    snap: &ClusterSnapshot,
    candidates: &[usize],
    weights: Weights,
    out: &mut Vec<i64>,
) {
    let nodes = snap.nodes();
    out.clear();
    out.extend(candidates.iter().map(|&i| {
        let n = &nodes[i];
        weights.least_allocated
            * least_allocated(n.allocatable, n.requested.non_zero, facts.requests.non_zero)
    }));

    if let Some(owner) = facts.owner {
        // (count on the node, count in its zone) per candidate, looked up once.
        let counts: Vec<(u32, Option<u32>)> = candidates
            .iter()
            .map(|&i| {
                let zone = nodes[i].zone.map(|z| snap.owner_in_zone(owner, z));
                (snap.owner_on_node(owner, i), zone)
            })
            .collect();
        let max_node = counts.iter().map(|c| c.0).max().unwrap_or(0);
        let max_zone = counts.iter().filter_map(|c| c.1).max();
        for (total, &(on_node, in_zone)) in out.iter_mut().zip(&counts) {
            let node_score = spread_formula(on_node, max_node);
            let s = match (in_zone, max_zone) {
                (Some(z), Some(max)) => (node_score + 2 * spread_formula(z, max)) / 3,
                _ => node_score,
            };
            *total += weights.spread * s;
        }
    } else {
        // No replicas of this owner yet (or no owner): every node is equally spread.
        for total in out.iter_mut() {
            *total += weights.spread * MAX_NODE_SCORE;
        }
    }

    let tolerations = facts.tolerations();
    let untolerated = |i: usize| -> i64 {
        let n = nodes[i]
            .prefer_taints
            .iter()
            .filter(|t| !tolerated(tolerations, t))
            .count();
        i64::try_from(n).unwrap_or(i64::MAX)
    };
    let max_taints = candidates.iter().map(|&i| untolerated(i)).max().unwrap_or(0);
    for (total, &i) in out.iter_mut().zip(candidates) {
        let s = if max_taints == 0 {
            MAX_NODE_SCORE
        } else {
            MAX_NODE_SCORE - untolerated(i) * MAX_NODE_SCORE / max_taints
        };
        *total += weights.taints * s;
    }
}
