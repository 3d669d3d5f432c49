//! The Pod object and its spec: containers, volumes, scheduling constraints
//! (nodeSelector, node affinity, tolerations), restart policy and defaults.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::container::Container;
use super::node::{Taint, TaintEffect};
use super::pod_status::PodStatus;
use crate::kind::Kind;
use crate::meta::{Object, ObjectMeta, object_accessors};
use crate::quantity::Quantity;
use crate::validate::{self, FieldError, NameRule, Path};

/// A group of containers scheduled together on one node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pod {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PodSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PodStatus>,
}

/// What a pod runs and where. `initContainers` and other fields Shturman does
/// not implement are rejected by the decoder.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSpec {
    #[serde(default)]
    pub containers: Vec<Container>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,
    /// The node the pod is bound to; set by the scheduler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// `wasmtime` makes this a Wasm pod; anything else (or unset) an OCI pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Accepted for compatibility; Shturman has no service accounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
}

/// When the node restarts a pod's containers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

/// A reference to an object by name in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalObjectReference {
    pub name: String,
}

/// A named volume; exactly one source is set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Volume {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<EmptyDirVolumeSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<HostPathVolumeSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapVolumeSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretVolumeSource>,
}

impl Volume {
    /// How many sources are set (valid volumes have exactly one).
    pub fn source_count(&self) -> usize {
        usize::from(self.empty_dir.is_some())
            + usize::from(self.host_path.is_some())
            + usize::from(self.config_map.is_some())
            + usize::from(self.secret.is_some())
    }
}

/// A scratch directory that lives as long as the pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmptyDirVolumeSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub medium: Option<StorageMedium>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_limit: Option<Quantity>,
}

/// Where an emptyDir lives: node disk (`""`) or RAM (`Memory`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StorageMedium {
    #[default]
    #[serde(rename = "")]
    Default,
    Memory,
}

/// A path on the node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostPathVolumeSource {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "type")]
    pub type_: Option<HostPathType>,
}

/// What must exist at a hostPath.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HostPathType {
    /// No check.
    #[default]
    #[serde(rename = "")]
    Unset,
    DirectoryOrCreate,
    Directory,
    FileOrCreate,
    File,
    Socket,
    CharDevice,
    BlockDevice,
}

/// A ConfigMap's keys as files.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigMapVolumeSource {
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<KeyToPath>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_mode: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// A Secret's keys as files.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretVolumeSource {
    pub secret_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<KeyToPath>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_mode: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// Maps one key to a file path inside the volume.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyToPath {
    pub key: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<i32>,
}

/// Scheduling affinity; only required node affinity is supported.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Affinity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_affinity: Option<NodeAffinity>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeAffinity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_during_scheduling_ignored_during_execution: Option<NodeSelector>,
}

/// Node selector terms, ORed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSelector {
    pub node_selector_terms: Vec<NodeSelectorTerm>,
}

/// Requirements, ANDed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSelectorTerm {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<NodeSelectorRequirement>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSelectorRequirement {
    pub key: String,
    pub operator: NodeSelectorOperator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NodeSelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    /// Integer greater-than (single value).
    Gt,
    /// Integer less-than (single value).
    Lt,
}

impl NodeSelector {
    /// Whether a node with `labels` satisfies any term (an empty list matches nothing).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.node_selector_terms.iter().any(|t| t.matches(labels))
    }
}

impl NodeSelectorTerm {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.match_expressions.is_empty() && self.match_expressions.iter().all(|r| r.matches(labels))
    }
}

impl NodeSelectorRequirement {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        let int_cmp = |f: fn(i64, i64) -> bool| {
            let label = value.and_then(|v| v.parse::<i64>().ok());
            let bound = self.values.first().and_then(|v| v.parse::<i64>().ok());
            matches!((label, bound), (Some(l), Some(b)) if f(l, b))
        };
        match self.operator {
            NodeSelectorOperator::In => value.is_some_and(|v| self.values.contains(v)),
            NodeSelectorOperator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            NodeSelectorOperator::Exists => value.is_some(),
            NodeSelectorOperator::DoesNotExist => value.is_none(),
            NodeSelectorOperator::Gt => int_cmp(|l, b| l > b),
            NodeSelectorOperator::Lt => int_cmp(|l, b| l < b),
        }
    }
}

/// Lets a pod run on nodes with a matching taint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Toleration {
    /// Empty with operator Exists tolerates every taint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<TolerationOperator>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Unset tolerates every effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<TaintEffect>,
    /// For NoExecute: how long the pod stays after the taint appears.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toleration_seconds: Option<i64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TolerationOperator {
    Exists,
    #[default]
    Equal,
}

impl Toleration {
    /// Whether this toleration tolerates `taint`.
    pub fn tolerates(&self, taint: &Taint) -> bool {
        if self.effect.is_some_and(|e| e != taint.effect) {
            return false;
        }
        let key = self.key.as_deref().unwrap_or("");
        match self.operator.unwrap_or_default() {
            TolerationOperator::Exists => key.is_empty() || key == taint.key,
            TolerationOperator::Equal => {
                key == taint.key
                    && self.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
            }
        }
    }
}

impl PodSpec {
    /// Kubernetes' pod defaults: restartPolicy Always, 30 s grace, container defaults.
    pub fn apply_defaults(&mut self) {
        self.restart_policy.get_or_insert(RestartPolicy::Always);
        self.termination_grace_period_seconds.get_or_insert(30);
        for c in &mut self.containers {
            c.apply_defaults();
        }
        for t in &mut self.tolerations {
            t.operator.get_or_insert(TolerationOperator::Equal);
        }
    }
}

impl Pod {
    /// Whether this pod runs as WebAssembly (`runtimeClassName: wasmtime`, or
    /// every image is a `.wasm` module).
    pub fn is_wasm(&self) -> bool {
        self.spec.runtime_class_name.as_deref() == Some("wasmtime")
            || (!self.spec.containers.is_empty()
                && self.spec.containers.iter().all(|c| c.image.ends_with(".wasm")))
    }

    /// The phase, `Pending` when no status has been reported.
    pub fn phase(&self) -> super::pod_status::PodPhase {
        self.status.as_ref().and_then(|s| s.phase).unwrap_or_default()
    }
}

impl Object for Pod {
    const KIND: Kind = Kind::Pod;
    object_accessors!();

    fn apply_defaults(&mut self) {
        self.spec.apply_defaults();
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate::check_object_meta(&self.metadata, NameRule::Subdomain, true, &mut errs);
        validate::pod::check_pod_spec(&Path::new("spec"), &self.spec, &mut errs);
        errs
    }
}
