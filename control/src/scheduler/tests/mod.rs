//! Unit tests of the pure scheduler, with small node and pod builders.

mod filters;
mod message;
mod platforms;
mod scheduling;
mod scores;
mod snapshots;

use shturman_api::core::node::NodeRuntimeHandler;
use shturman_api::core::pod::{NodeAffinity, NodeSelectorOperator, NodeSelectorTerm};
use shturman_api::core::{
    Affinity, Container, Node, NodeCondition, NodeConditionType, NodeSelector, NodeSelectorRequirement,
    NodeStatus, NodeSystemInfo, Pod, ResourceRequirements, Taint, TaintEffect, Toleration,
};
use shturman_api::meta::{ConditionStatus, OwnerReference};

use super::resources::quantities;
use super::{ClusterSnapshot, Config, Scheduler};

pub const GI: i64 = 1024 * 1024 * 1024;
pub const MI: i64 = 1024 * 1024;

/// A Ready linux/amd64 node offering wasmtime and runc, 4 cpu, 8 GiB, 110 pods.
pub fn node(name: &str) -> Node {
    let mut n = Node::default();
    n.metadata.name = Some(name.to_string());
    n.status = Some(NodeStatus {
        allocatable: quantities(4000, 8 * GI, 110),
        conditions: vec![NodeCondition {
            type_: NodeConditionType::Ready,
            status: ConditionStatus::True,
            last_heartbeat_time: None,
            last_transition_time: None,
            reason: None,
            message: None,
        }],
        node_info: Some(NodeSystemInfo {
            architecture: "amd64".into(),
            operating_system: "linux".into(),
            ..NodeSystemInfo::default()
        }),
        runtime_handlers: vec![handler("wasmtime"), handler("runc")],
        ..NodeStatus::default()
    });
    n
}

pub fn handler(name: &str) -> NodeRuntimeHandler {
    NodeRuntimeHandler {
        name: name.into(),
        version: None,
    }
}

pub fn status(n: &mut Node) -> &mut NodeStatus {
    n.status.get_or_insert_with(NodeStatus::default)
}

pub fn with_alloc(mut n: Node, milli_cpu: i64, memory: i64, pods: i64) -> Node {
    status(&mut n).allocatable = quantities(milli_cpu, memory, pods);
    n
}

pub fn with_label(mut n: Node, k: &str, v: &str) -> Node {
    n.metadata.labels.insert(k.into(), v.into());
    n
}

pub fn with_arch(mut n: Node, arch: &str) -> Node {
    if let Some(info) = status(&mut n).node_info.as_mut() {
        info.architecture = arch.into();
    }
    n
}

pub fn with_zone(n: Node, zone: &str) -> Node {
    with_label(n, "topology.kubernetes.io/zone", zone)
}

pub fn with_taint(mut n: Node, key: &str, value: &str, effect: TaintEffect) -> Node {
    n.spec.taints.push(Taint {
        key: key.into(),
        value: (!value.is_empty()).then(|| value.to_string()),
        effect,
        time_added: None,
    });
    n
}

pub fn with_runtimes(mut n: Node, names: &[&str]) -> Node {
    status(&mut n).runtime_handlers = names.iter().map(|h| handler(h)).collect();
    n
}

pub fn cordoned(mut n: Node) -> Node {
    n.spec.unschedulable = Some(true);
    n
}

pub fn not_ready(mut n: Node) -> Node {
    status(&mut n).conditions[0].status = ConditionStatus::False;
    n
}

/// An OCI pod requesting 100m cpu and 128 MiB.
pub fn pod(name: &str) -> Pod {
    requesting(name, 100, 128 * MI)
}

/// An OCI pod with one container requesting `milli_cpu` and `memory` (0 = unset).
pub fn requesting(name: &str, milli_cpu: i64, memory: i64) -> Pod {
    let mut p = Pod::default();
    p.metadata.name = Some(name.into());
    p.metadata.namespace = Some("default".into());
    let mut resources = ResourceRequirements::default();
    let q = quantities(milli_cpu, memory, 0);
    for (k, v) in q {
        let zero = (k == "cpu" && milli_cpu == 0) || (k == "memory" && memory == 0) || k == "pods";
        if !zero {
            resources.requests.insert(k, v);
        }
    }
    p.spec.containers.push(Container {
        name: "main".into(),
        image: "nginx:1.27".into(),
        resources,
        ..Container::default()
    });
    p
}

pub fn wasm(mut p: Pod) -> Pod {
    p.spec.runtime_class_name = Some("wasmtime".into());
    p
}

pub fn owned(mut p: Pod, uid: &str) -> Pod {
    p.metadata.owner_references.push(OwnerReference {
        api_version: "apps/v1".into(),
        kind: "ReplicaSet".into(),
        name: format!("rs-{uid}"),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: None,
    });
    p
}

pub fn bound(mut p: Pod, node: &str) -> Pod {
    p.spec.node_name = Some(node.into());
    p
}

pub fn tolerating(mut p: Pod, key: &str, value: Option<&str>, effect: Option<TaintEffect>) -> Pod {
    p.spec.tolerations.push(Toleration {
        key: Some(key.into()),
        operator: Some(if value.is_some() {
            shturman_api::core::TolerationOperator::Equal
        } else {
            shturman_api::core::TolerationOperator::Exists
        }),
        value: value.map(str::to_string),
        effect,
        toleration_seconds: None,
    });
    p
}

pub fn selecting(mut p: Pod, k: &str, v: &str) -> Pod {
    p.spec.node_selector.insert(k.into(), v.into());
    p
}

pub fn requiring(mut p: Pod, key: &str, op: NodeSelectorOperator, values: &[&str]) -> Pod {
    p.spec.affinity = Some(Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: vec![NodeSelectorRequirement {
                        key: key.into(),
                        operator: op,
                        values: values.iter().map(|v| v.to_string()).collect(),
                    }],
                }],
            }),
        }),
    });
    p
}

pub fn annotated(mut p: Pod, k: &str, v: &str) -> Pod {
    p.metadata.annotations.insert(k.into(), v.into());
    p
}

/// An exhaustive scheduler (every node examined) with seed 0.
pub fn exhaustive() -> Scheduler {
    Scheduler::new(Config {
        percentage_of_nodes_to_score: Some(100),
        ..Config::default()
    })
}

pub fn snap(nodes: &[Node]) -> ClusterSnapshot {
    ClusterSnapshot::new(nodes, &[])
}

/// Schedules `p` on a fresh exhaustive scheduler.
pub fn place(p: &Pod, s: &ClusterSnapshot) -> Result<String, super::Unschedulable> {
    exhaustive().schedule(p, s)
}
