//! The scheduler's view of the cluster: one [`NodeInfo`] per node with what
//! it offers and what is already bound to it, plus per-owner replica counts
//! per node and per zone for spreading.
//!
//! Built once from a node list and the bound pods, then kept current with
//! [`ClusterSnapshot::assume`] as decisions are made, so a batch of pending
//! pods is scheduled one after another without re-listing (kube-scheduler's
//! "assumed pods"); [`ClusterSnapshot::forget`] undoes an assumption whose
//! binding failed.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use shturman_api::core::{Node, Pod, Taint, TaintEffect};

use super::filter::{Runtime, Runtimes};
use super::resources::{PodRequests, Resources, allocatable};

/// The zone label spreading groups nodes by.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// The architecture label (Go's names), derived from `status.nodeInfo` when absent.
pub const ARCH_LABEL: &str = "kubernetes.io/arch";
/// The OS label, derived from `status.nodeInfo` when absent.
pub const OS_LABEL: &str = "kubernetes.io/os";
/// The hostname label, derived from the node name when absent.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// A controller owner interned in a snapshot (for spreading).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OwnerId(usize);

/// Why a snapshot update was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("node {0:?} is not in the scheduler's snapshot; it may have been deleted")]
    UnknownNode(String),
}

/// One node as the filters and scores see it.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub name: String,
    /// The node's labels plus `kubernetes.io/{arch,os,hostname}` derived from
    /// `status.nodeInfo` and the name when the node does not carry them.
    pub labels: BTreeMap<String, String>,
    pub ready: bool,
    /// Cordoned (`spec.unschedulable`).
    pub unschedulable: bool,
    /// `NoSchedule` and `NoExecute` taints: a pod must tolerate each.
    pub hard_taints: Vec<Taint>,
    /// `PreferNoSchedule` taints: only lower the score.
    pub prefer_taints: Vec<Taint>,
    pub runtimes: Runtimes,
    /// `kubernetes.io/os`, or `""` when unknown.
    pub os: String,
    /// `kubernetes.io/arch`, or `""` when unknown.
    pub arch: String,
    /// Index into the snapshot's zones, when the node has a zone label.
    pub zone: Option<usize>,
    pub allocatable: Resources,
    /// The sum over pods bound (or assumed) here; `requested.exact.pods` is
    /// their count.
    pub requested: PodRequests,
}

impl NodeInfo {
    fn new(node: &Node, zones: &mut Vec<String>) -> NodeInfo {
        let name = node.metadata.name().to_string();
        let mut labels = node.metadata.labels.clone();
        let info = node.status.as_ref().and_then(|s| s.node_info.as_ref());
        if let Some(info) = info {
            if !info.architecture.is_empty() {
                labels
                    .entry(ARCH_LABEL.to_string())
                    .or_insert_with(|| info.architecture.clone());
            }
            if !info.operating_system.is_empty() {
                labels
                    .entry(OS_LABEL.to_string())
                    .or_insert_with(|| info.operating_system.clone());
            }
        }
        labels
            .entry(HOSTNAME_LABEL.to_string())
            .or_insert_with(|| name.clone());
        let mut runtimes = Runtimes::default();
        for h in node.status.iter().flat_map(|s| &s.runtime_handlers) {
            if let Some(r) = Runtime::from_handler(&h.name) {
                runtimes.insert(r);
            }
        }
        let (prefer_taints, hard_taints) = node
            .spec
            .taints
            .iter()
            .cloned()
            .partition(|t| t.effect == TaintEffect::PreferNoSchedule);
        let zone = labels.get(ZONE_LABEL).filter(|z| !z.is_empty()).map(|z| {
            zones.iter().position(|known| known == z).unwrap_or_else(|| {
                zones.push(z.clone());
                zones.len() - 1
            })
        });
        NodeInfo {
            os: labels.get(OS_LABEL).cloned().unwrap_or_default(),
            arch: labels
                .get(ARCH_LABEL)
                .map(|a| super::platform::normalize_arch(a).to_string())
                .unwrap_or_default(),
            ready: node.is_ready(),
            unschedulable: node.is_unschedulable(),
            allocatable: allocatable(node),
            requested: PodRequests::default(),
            name,
            labels,
            hard_taints,
            prefer_taints,
            runtimes,
            zone,
        }
    }

    /// Pods bound or assumed here.
    pub fn pod_count(&self) -> i64 {
        self.requested.exact.pods
    }
}

/// Hashes a small integer index with one multiply (Fibonacci hashing):
/// the owner maps are probed once per candidate node per decision, and
/// SipHash's DoS resistance buys nothing for indexes we assign ourselves.
#[derive(Clone, Copy, Debug, Default)]
struct IndexHasher(u64);

impl Hasher for IndexHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_usize(&mut self, i: usize) {
        self.0 = u64::try_from(i)
            .unwrap_or(u64::MAX)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type IndexMap = HashMap<usize, u32, BuildHasherDefault<IndexHasher>>;

/// An owner's replicas per node and per zone (sparse: most owners touch few nodes).
#[derive(Clone, Debug, Default)]
struct OwnerCounts {
    per_node: IndexMap,
    per_zone: IndexMap,
}

/// The cluster as the scheduler sees it.
#[derive(Clone, Debug, Default)]
pub struct ClusterSnapshot {
    nodes: Vec<NodeInfo>,
    by_name: HashMap<String, usize>,
    zones: Vec<String>,
    owner_ids: HashMap<String, OwnerId>,
    owners: Vec<OwnerCounts>,
}

impl ClusterSnapshot {
    /// A snapshot of `nodes` with `pods` bound: every pod with `spec.nodeName`
    /// naming one of the nodes and not finished (Succeeded or Failed pods no
    /// longer hold resources, as in kube-scheduler's cache). A node name seen
    /// twice keeps the first node.
    pub fn new(nodes: &[Node], pods: &[Pod]) -> ClusterSnapshot {
        ClusterSnapshot::build(nodes, pods)
    }

    /// [`Self::new`] over any iterators of references, e.g. an informer's
    /// `Arc`ed cache (`nodes.iter().map(|n| &**n)`) without cloning objects.
    pub fn build<'a>(
        nodes: impl IntoIterator<Item = &'a Node>,
        pods: impl IntoIterator<Item = &'a Pod>,
    ) -> ClusterSnapshot {
        let mut snap = ClusterSnapshot::default();
        for node in nodes {
            let name = node.metadata.name();
            if snap.by_name.contains_key(name) {
                continue;
            }
            let info = NodeInfo::new(node, &mut snap.zones);
            snap.by_name.insert(info.name.clone(), snap.nodes.len());
            snap.nodes.push(info);
        }
        for pod in pods {
            if pod.phase().is_terminal() {
                continue;
            }
            if let Some(node) = pod.spec.node_name.as_deref() {
                // A pod bound to a node we do not know holds nothing we schedule.
                let _ = snap.assume(pod, node);
            }
        }
        snap
    }

    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.by_name.get(name).map(|&i| &self.nodes[i])
    }

    /// The zone names, indexed by [`NodeInfo::zone`].
    pub fn zones(&self) -> &[String] {
        &self.zones
    }

    /// The interned id of the controller with `uid`, if it has pods here.
    pub fn owner_id(&self, uid: &str) -> Option<OwnerId> {
        self.owner_ids.get(uid).copied()
    }

    /// Replicas of `owner` on the node at `node` (an index into [`Self::nodes`]).
    pub fn owner_on_node(&self, owner: OwnerId, node: usize) -> u32 {
        self.owners
            .get(owner.0)
            .and_then(|o| o.per_node.get(&node))
            .copied()
            .unwrap_or(0)
    }

    /// Replicas of `owner` in zone `zone` (an index into [`Self::zones`]).
    pub fn owner_in_zone(&self, owner: OwnerId, zone: usize) -> u32 {
        self.owners
            .get(owner.0)
            .and_then(|o| o.per_zone.get(&zone))
            .copied()
            .unwrap_or(0)
    }

    /// Counts `pod` as bound to `node`: its requests, its pod slot and its
    /// owner's replica counts.
    pub fn assume(&mut self, pod: &Pod, node: &str) -> Result<(), SnapshotError> {
        self.update(pod, node, true)
    }

    /// Undoes [`Self::assume`] (the binding failed, or the pod went away).
    pub fn forget(&mut self, pod: &Pod, node: &str) -> Result<(), SnapshotError> {
        self.update(pod, node, false)
    }

    fn update(&mut self, pod: &Pod, node: &str, add: bool) -> Result<(), SnapshotError> {
        let idx = *self
            .by_name
            .get(node)
            .ok_or_else(|| SnapshotError::UnknownNode(node.to_string()))?;
        let info = &mut self.nodes[idx];
        let req = PodRequests::of(pod);
        info.requested = if add {
            info.requested.plus(req)
        } else {
            info.requested.minus(req)
        };
        let zone = info.zone;
        // Pods being deleted do not count for spreading (as in Kubernetes'
        // SelectorSpread); they still hold their resources until they go.
        if pod.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let Some(owner) = pod.metadata.controller_ref() else {
            return Ok(());
        };
        let id = match self.owner_ids.get(&owner.uid) {
            Some(id) => *id,
            None if add => {
                let id = OwnerId(self.owners.len());
                self.owner_ids.insert(owner.uid.clone(), id);
                self.owners.push(OwnerCounts::default());
                id
            }
            None => return Ok(()),
        };
        let counts = &mut self.owners[id.0];
        bump(&mut counts.per_node, idx, add);
        if let Some(z) = zone {
            bump(&mut counts.per_zone, z, add);
        }
        Ok(())
    }
}

fn bump(map: &mut IndexMap, key: usize, add: bool) {
    if add {
        *map.entry(key).or_insert(0) += 1;
    } else if let Some(c) = map.get_mut(&key) {
        *c = c.saturating_sub(1);
        if *c == 0 {
            map.remove(&key);
        }
    }
}
