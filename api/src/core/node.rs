//! The Node object: an edge worker, its taints and schedulability, and what
//! its agent reports (capacity, conditions, addresses, system info, runtimes).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::kind::Kind;
use crate::meta::{ConditionStatus, Object, ObjectMeta, Time, object_accessors};
use crate::quantity::Quantity;
use crate::validate::{self, FieldError, NameRule, Path};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Node {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: NodeSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<NodeStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSpec {
    /// Cordoned: no new pods are scheduled here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unschedulable: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Taint>,
    #[serde(default, rename = "podCIDR", skip_serializing_if = "Option::is_none")]
    pub pod_cidr: Option<String>,
    #[serde(default, rename = "providerID", skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
}

/// Repels pods that do not tolerate it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Taint {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub effect: TaintEffect,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_added: Option<Time>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaintEffect {
    #[default]
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

/// What the node's agent reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeStatus {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub capacity: BTreeMap<String, Quantity>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub allocatable: BTreeMap<String, Quantity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<NodeCondition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<NodeAddress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_info: Option<NodeSystemInfo>,
    /// The runtimes this node offers (`wasmtime`, `runc`), matched against a
    /// pod's `runtimeClassName`. Kubernetes' field name (1.30+); `version` is
    /// Shturman-specific.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runtime_handlers: Vec<NodeRuntimeHandler>,
}

impl NodeStatus {
    pub fn condition(&self, t: NodeConditionType) -> Option<&NodeCondition> {
        self.conditions.iter().find(|c| c.type_ == t)
    }

    /// Whether the `Ready` condition is `True`.
    pub fn is_ready(&self) -> bool {
        self.condition(NodeConditionType::Ready)
            .is_some_and(|c| c.status.is_true())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NodeConditionType {
    Ready,
    MemoryPressure,
    DiskPressure,
    PIDPressure,
    NetworkUnavailable,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeCondition {
    #[serde(rename = "type")]
    pub type_: NodeConditionType,
    pub status: ConditionStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeAddress {
    #[serde(rename = "type")]
    pub type_: NodeAddressType,
    pub address: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NodeAddressType {
    Hostname,
    InternalIP,
    ExternalIP,
    InternalDNS,
    ExternalDNS,
}

/// Facts about the machine. `agentVersion` is Shturman-specific; `kubeletVersion`
/// carries the same value for tools that expect it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSystemInfo {
    /// `amd64`, `arm64`, `arm` (Go's names, as Kubernetes uses).
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub operating_system: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kernel_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub os_image: String,
    #[serde(default, rename = "machineID", skip_serializing_if = "String::is_empty")]
    pub machine_id: String,
    #[serde(default, rename = "bootID", skip_serializing_if = "String::is_empty")]
    pub boot_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub container_runtime_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kubelet_version: String,
    /// Shturman-specific: the `shturman-agent` version.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub agent_version: String,
}

/// One runtime a node offers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeRuntimeHandler {
    /// `wasmtime` or `runc`.
    pub name: String,
    /// Shturman-specific: the runtime's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl Node {
    pub fn is_unschedulable(&self) -> bool {
        self.spec.unschedulable == Some(true)
    }

    pub fn is_ready(&self) -> bool {
        self.status.as_ref().is_some_and(NodeStatus::is_ready)
    }
}

impl Object for Node {
    const KIND: Kind = Kind::Node;
    object_accessors!();

    fn apply_defaults(&mut self) {}

    fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate::check_object_meta(&self.metadata, NameRule::Subdomain, false, &mut errs);
        for (i, t) in self.spec.taints.iter().enumerate() {
            let p = Path::new("spec").field("taints").index(i);
            validate::check_key(&p.field("key"), &t.key, &mut errs);
            if let Some(v) = &t.value
                && !validate::is_label_value(v)
            {
                errs.push(
                    p.field("value")
                        .error(format!("{v:?} is not a valid taint value"))
                        .hint("use at most 63 letters, digits, '-', '_' and '.'"),
                );
            }
        }
        if let Some(status) = &self.status {
            for (name, map) in [
                ("capacity", &status.capacity),
                ("allocatable", &status.allocatable),
            ] {
                for (k, q) in map {
                    if q.is_negative() {
                        errs.push(
                            Path::new("status")
                                .field(name)
                                .key(k)
                                .error(format!("{q} is negative"))
                                .hint("report a non-negative amount"),
                        );
                    }
                }
            }
        }
        errs
    }
}
