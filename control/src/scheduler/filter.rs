//! The filters: whether one node can take one pod, and if not, why — in
//! Kubernetes' words, so `0/5 nodes are available: …` reads as it does there.
//!
//! Checked in this order, the first failing check deciding (as Kubernetes'
//! filter plugins run in order and stop at the first failure): Ready, not
//! cordoned, taints, nodeSelector and required node affinity, runtime, image
//! platform, then resources (which reports every short resource at once, as
//! `NodeResourcesFit` does).

use std::fmt;

use shturman_api::core::{NodeSelector, Pod, Taint, TaintEffect, Toleration};

use super::platform::{ImagePlatforms, PlatformError, PlatformSet, pod_platforms};
use super::resources::PodRequests;
use super::snapshot::{ClusterSnapshot, NodeInfo, OwnerId};

/// The taint a cordoned node implicitly carries; a pod tolerating it may be
/// placed on cordoned nodes (Kubernetes' `NodeUnschedulable` plugin).
pub const UNSCHEDULABLE_TAINT_KEY: &str = "node.kubernetes.io/unschedulable";

/// A runtime a pod needs and a node may offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Runtime {
    /// Wasm pods: the in-process wasmtime sandbox.
    Wasmtime,
    /// OCI pods: containerd and runc.
    Containerd,
}

impl Runtime {
    /// The runtime a pod needs ([`Pod::is_wasm`] decides).
    pub fn of(pod: &Pod) -> Runtime {
        if pod.is_wasm() {
            Runtime::Wasmtime
        } else {
            Runtime::Containerd
        }
    }

    /// The runtime a node's `status.runtimeHandlers[].name` stands for:
    /// `wasmtime`, and `runc` or `containerd` for OCI (the agent reports
    /// runc, the OCI runtime containerd drives; both names are accepted).
    pub fn from_handler(name: &str) -> Option<Runtime> {
        match name {
            "wasmtime" => Some(Runtime::Wasmtime),
            "runc" | "containerd" => Some(Runtime::Containerd),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Runtime::Wasmtime => "wasmtime",
            Runtime::Containerd => "containerd",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Runtime::Wasmtime => 1,
            Runtime::Containerd => 2,
        }
    }
}

/// The set of runtimes a node offers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Runtimes(u8);

impl Runtimes {
    pub fn insert(&mut self, r: Runtime) {
        self.0 |= r.bit();
    }

    pub fn contains(self, r: Runtime) -> bool {
        self.0 & r.bit() != 0
    }
}

/// Why a node cannot take a pod, one per counted line of the message.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FilterReason {
    /// `node(s) were not ready`
    NotReady,
    /// `node(s) were unschedulable` (cordoned)
    Unschedulable,
    /// `node(s) had untolerated taint {key: value}`
    UntoleratedTaint { key: String, value: String },
    /// `node(s) didn't match Pod's node affinity/selector`
    NodeAffinity,
    /// `node(s) don't offer the wasmtime runtime` (or containerd)
    MissingRuntime(Runtime),
    /// `node(s) didn't match the image's platforms`
    PlatformMismatch,
    /// `Insufficient cpu`
    InsufficientCpu,
    /// `Insufficient memory`
    InsufficientMemory,
    /// `Too many pods`
    TooManyPods,
}

impl fmt::Display for FilterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FilterReason::NotReady => f.write_str("node(s) were not ready"),
            FilterReason::Unschedulable => f.write_str("node(s) were unschedulable"),
            FilterReason::UntoleratedTaint { key, value } => {
                write!(f, "node(s) had untolerated taint {{{key}: {value}}}")
            }
            FilterReason::NodeAffinity => f.write_str("node(s) didn't match Pod's node affinity/selector"),
            FilterReason::MissingRuntime(r) => write!(f, "node(s) don't offer the {} runtime", r.name()),
            FilterReason::PlatformMismatch => f.write_str("node(s) didn't match the image's platforms"),
            FilterReason::InsufficientCpu => f.write_str("Insufficient cpu"),
            FilterReason::InsufficientMemory => f.write_str("Insufficient memory"),
            FilterReason::TooManyPods => f.write_str("Too many pods"),
        }
    }
}

/// A node's rejection of a pod, cheap to copy; [`Rejection::reasons`] turns
/// it into [`FilterReason`]s only when a message is needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    NotReady,
    Unschedulable,
    /// The index into the node's `hard_taints` of the first untolerated one.
    Taint(usize),
    NodeAffinity,
    MissingRuntime(Runtime),
    PlatformMismatch,
    Resources {
        cpu: bool,
        memory: bool,
        pods: bool,
    },
}

impl Rejection {
    /// The reasons this rejection counts for (resources may count several).
    pub fn reasons(self, node: &NodeInfo) -> Vec<FilterReason> {
        match self {
            Rejection::NotReady => vec![FilterReason::NotReady],
            Rejection::Unschedulable => vec![FilterReason::Unschedulable],
            Rejection::Taint(i) => {
                let (key, value) = node
                    .hard_taints
                    .get(i)
                    .map(|t| (t.key.clone(), t.value.clone().unwrap_or_default()))
                    .unwrap_or_default();
                vec![FilterReason::UntoleratedTaint { key, value }]
            }
            Rejection::NodeAffinity => vec![FilterReason::NodeAffinity],
            Rejection::MissingRuntime(r) => vec![FilterReason::MissingRuntime(r)],
            Rejection::PlatformMismatch => vec![FilterReason::PlatformMismatch],
            Rejection::Resources { cpu, memory, pods } => {
                let mut v = Vec::with_capacity(3);
                if pods {
                    v.push(FilterReason::TooManyPods);
                }
                if cpu {
                    v.push(FilterReason::InsufficientCpu);
                }
                if memory {
                    v.push(FilterReason::InsufficientMemory);
                }
                v
            }
        }
    }
}

/// What the filters and scores need about one pending pod, computed once
/// per decision rather than once per node.
#[derive(Debug)]
pub struct PodFacts<'a> {
    pub pod: &'a Pod,
    pub requests: PodRequests,
    pub runtime: Runtime,
    /// `Some` when the image platforms are known (OCI pods only).
    pub platforms: Option<PlatformSet>,
    /// The controller owner, when it already has pods in the snapshot.
    pub owner: Option<OwnerId>,
    required_affinity: Option<&'a NodeSelector>,
    tolerates_cordon: bool,
}

impl<'a> PodFacts<'a> {
    /// Gathers the facts; fails only on an invalid image-platforms annotation.
    pub fn new(
        pod: &'a Pod,
        images: &ImagePlatforms,
        snapshot: &ClusterSnapshot,
    ) -> Result<PodFacts<'a>, PlatformError> {
        let runtime = Runtime::of(pod);
        let platforms = match runtime {
            Runtime::Wasmtime => None,
            Runtime::Containerd => pod_platforms(pod, images)?,
        };
        let cordon = Taint {
            key: UNSCHEDULABLE_TAINT_KEY.to_string(),
            value: None,
            effect: TaintEffect::NoSchedule,
            time_added: None,
        };
        Ok(PodFacts {
            pod,
            requests: PodRequests::of(pod),
            runtime,
            platforms,
            owner: pod
                .metadata
                .controller_ref()
                .and_then(|r| snapshot.owner_id(&r.uid)),
            required_affinity: pod
                .spec
                .affinity
                .as_ref()
                .and_then(|a| a.node_affinity.as_ref())
                .and_then(|na| na.required_during_scheduling_ignored_during_execution.as_ref()),
            tolerates_cordon: tolerated(&pod.spec.tolerations, &cordon),
        })
    }

    pub fn tolerations(&self) -> &'a [Toleration] {
        &self.pod.spec.tolerations
    }
}

/// Whether any toleration tolerates `taint`.
pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| t.tolerates(taint))
}

/// Runs every filter; `Ok` when the node can take the pod.
pub fn check(facts: &PodFacts<'_>, node: &NodeInfo) -> Result<(), Rejection> {
    if !node.ready {
        return Err(Rejection::NotReady);
    }
    if node.unschedulable && !facts.tolerates_cordon {
        return Err(Rejection::Unschedulable);
    }
    if let Some(i) = node
        .hard_taints
        .iter()
        .position(|t| !tolerated(facts.tolerations(), t))
    {
        return Err(Rejection::Taint(i));
    }
    if !matches_selector(facts, node) {
        return Err(Rejection::NodeAffinity);
    }
    if !node.runtimes.contains(facts.runtime) {
        return Err(Rejection::MissingRuntime(facts.runtime));
    }
    if let Some(p) = &facts.platforms
        && !p.runs_on(&node.os, &node.arch)
    {
        return Err(Rejection::PlatformMismatch);
    }
    fits(facts.requests, node)
}

/// `nodeSelector` (every pair equal) and required node affinity (any term).
fn matches_selector(facts: &PodFacts<'_>, node: &NodeInfo) -> bool {
    facts
        .pod
        .spec
        .node_selector
        .iter()
        .all(|(k, v)| node.labels.get(k) == Some(v))
        && facts.required_affinity.is_none_or(|s| s.matches(&node.labels))
}

/// Kubernetes' `NodeResourcesFit`: the pod count always, cpu and memory only
/// when the pod requests some (a zero request fits even an overcommitted node).
fn fits(req: PodRequests, node: &NodeInfo) -> Result<(), Rejection> {
    let alloc = node.allocatable;
    let used = node.requested.exact;
    let pods = used.pods.saturating_add(1) > alloc.pods;
    let cpu = req.exact.milli_cpu > 0 && req.exact.milli_cpu > alloc.milli_cpu.saturating_sub(used.milli_cpu);
    let memory = req.exact.memory > 0 && req.exact.memory > alloc.memory.saturating_sub(used.memory);
    if pods || cpu || memory {
        Err(Rejection::Resources { cpu, memory, pods })
    } else {
        Ok(())
    }
}
