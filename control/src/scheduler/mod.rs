//! The scheduler: binds each unbound pod to a node — filter, then score,
//! then bind.
//!
//! The decision is pure (no I/O, no clock, no global randomness) and lives
//! here; the binder loop that watches pods and nodes and writes bindings is
//! a thin shell around it.
//!
//! - [`snapshot`]: [`ClusterSnapshot`] and [`NodeInfo`], the cluster as the
//!   scheduler sees it, kept current with [`ClusterSnapshot::assume`];
//! - [`filter`]: whether a node can take a pod, and why not
//!   ([`FilterReason`], Kubernetes' wording);
//! - [`score`]: least-allocated, spreading across nodes and zones, and
//!   `PreferNoSchedule` taints;
//! - [`resources`]: a pod's effective requests, a node's allocatable;
//! - [`platform`]: which `os/arch` an OCI pod's images provide
//!   (`shturman.io/image-platforms`);
//! - [`unschedulable`]: the `0/N nodes are available: …` message.
//!
//! # How many nodes are examined
//!
//! As kube-scheduler's `percentageOfNodesToScore`: filtering stops once
//! enough feasible nodes are found, and only those are scored. With the
//! adaptive default the share is `50% − nodes/125`, floored at 5% (reached
//! at 5,625 nodes; 42% at 1,000, 10% at 5,000), and never fewer than 100
//! nodes; clusters under 100 nodes are always examined whole. Each decision
//! starts where the previous one stopped, so every node gets its turn. A pod
//! no node can take is checked against every node, so its message counts
//! them all. Set [`Config::percentage_of_nodes_to_score`] to 100 for an
//! exhaustive search.
//!
//! # Ties
//!
//! Equal best scores are broken by reservoir sampling (as kube-scheduler's
//! `selectHost`) driven by a SplitMix64 generator seeded from
//! [`Config::seed`]: the same seed, snapshot and pod sequence always give the
//! same placements.

pub mod filter;
pub mod platform;
pub mod resources;
pub mod run;
pub mod score;
pub mod snapshot;
pub mod unschedulable;

#[cfg(test)]
mod tests;

use std::collections::HashMap;

use shturman_api::core::Pod;

pub use filter::{FilterReason, Rejection, Runtime};
pub use platform::{IMAGE_PLATFORMS_ANNOTATION, ImagePlatforms, Platform, PlatformError, PlatformSet};
pub use resources::{PodRequests, Resources};
pub use score::Weights;
pub use snapshot::{ClusterSnapshot, NodeInfo, SnapshotError};
pub use unschedulable::{REASON_UNSCHEDULABLE, Unschedulable};

use filter::PodFacts;

/// Below this many nodes every node is examined; above, at least this many.
pub const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// The adaptive share never drops below this percentage.
pub const MIN_FEASIBLE_NODES_PERCENTAGE: usize = 5;

/// How the scheduler decides.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Share of nodes (1–100) to find feasible before scoring; `None` is
    /// Kubernetes' adaptive default (see the module docs).
    pub percentage_of_nodes_to_score: Option<u8>,
    /// Seeds tie-breaking.
    pub seed: u64,
    pub weights: Weights,
}

/// How many feasible nodes to find among `nodes` before scoring.
pub fn num_feasible_nodes_to_find(percentage: Option<u8>, nodes: usize) -> usize {
    if nodes < MIN_FEASIBLE_NODES_TO_FIND {
        return nodes;
    }
    let pct = match percentage {
        Some(p) if p > 0 => usize::from(p.min(100)),
        _ => 50usize
            .saturating_sub(nodes / 125)
            .max(MIN_FEASIBLE_NODES_PERCENTAGE),
    };
    (nodes.saturating_mul(pct) / 100).clamp(MIN_FEASIBLE_NODES_TO_FIND, nodes)
}

/// SplitMix64: a tiny, seedable generator for tie-breaking.
#[derive(Clone, Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Places pods, one decision at a time. Holds only the rotation point, the
/// tie-break generator, the caller's image platforms and scratch buffers;
/// the cluster state is the [`ClusterSnapshot`] passed in.
#[derive(Clone, Debug)]
pub struct Scheduler {
    config: Config,
    images: ImagePlatforms,
    next_start: usize,
    rng: SplitMix64,
    feasible: Vec<usize>,
    rejected: Vec<(usize, Rejection)>,
    scores: Vec<i64>,
}

impl Default for Scheduler {
    fn default() -> Scheduler {
        Scheduler::new(Config::default())
    }
}

impl Scheduler {
    pub fn new(config: Config) -> Scheduler {
        Scheduler {
            rng: SplitMix64(config.seed),
            config,
            images: ImagePlatforms::default(),
            next_start: 0,
            feasible: Vec::new(),
            rejected: Vec::new(),
            scores: Vec::new(),
        }
    }

    /// Supplies known image platforms (see [`platform`]).
    pub fn with_image_platforms(mut self, images: ImagePlatforms) -> Scheduler {
        self.images = images;
        self
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Picks a node for `pod`, or says why none fits. Does not change the
    /// snapshot: call [`ClusterSnapshot::assume`] (or use
    /// [`Self::schedule_and_assume`]) before deciding the next pod.
    pub fn schedule(&mut self, pod: &Pod, snap: &ClusterSnapshot) -> Result<String, Unschedulable> {
        let idx = self.decide(pod, snap)?;
        Ok(snap.nodes()[idx].name.clone())
    }

    /// [`Self::schedule`], then assumes the pod on the chosen node.
    pub fn schedule_and_assume(
        &mut self,
        pod: &Pod,
        snap: &mut ClusterSnapshot,
    ) -> Result<String, Unschedulable> {
        let idx = self.decide(pod, snap)?;
        let name = snap.nodes()[idx].name.clone();
        // The node came from this snapshot, so it is known.
        let _ = snap.assume(pod, &name);
        Ok(name)
    }

    fn decide(&mut self, pod: &Pod, snap: &ClusterSnapshot) -> Result<usize, Unschedulable> {
        let n = snap.len();
        if n == 0 {
            return Err(Unschedulable::no_nodes());
        }
        let facts = PodFacts::new(pod, &self.images, snap).map_err(|e| Unschedulable::pod_problem(n, e))?;
        let want = num_feasible_nodes_to_find(self.config.percentage_of_nodes_to_score, n);
        let start = self.next_start % n;
        self.feasible.clear();
        self.rejected.clear();
        let nodes = snap.nodes();
        let mut processed = 0;
        for i in 0..n {
            let idx = (start + i) % n;
            processed += 1;
            match filter::check(&facts, &nodes[idx]) {
                Ok(()) => {
                    self.feasible.push(idx);
                    if self.feasible.len() >= want {
                        break;
                    }
                }
                Err(r) => self.rejected.push((idx, r)),
            }
        }
        self.next_start = (start + processed) % n;
        if self.feasible.is_empty() {
            let mut counts: HashMap<FilterReason, usize> = HashMap::new();
            for &(idx, r) in &self.rejected {
                for reason in r.reasons(&nodes[idx]) {
                    *counts.entry(reason).or_insert(0) += 1;
                }
            }
            return Err(Unschedulable::from_counts(n, counts));
        }
        score::score(
            &facts,
            snap,
            &self.feasible,
            self.config.weights,
            &mut self.scores,
        );
        let mut best = None;
        let mut best_score = i64::MIN;
        let mut ties = 0u64;
        for (&idx, &s) in self.feasible.iter().zip(&self.scores) {
            if s > best_score {
                best_score = s;
                best = Some(idx);
                ties = 1;
            } else if s == best_score {
                ties += 1;
                if self.rng.below(ties) == 0 {
                    best = Some(idx);
                }
            }
        }
        // `feasible` is not empty, so `best` is set.
        best.ok_or_else(Unschedulable::no_nodes)
    }
}
