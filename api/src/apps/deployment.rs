//! The Deployment object: desired replicas of a pod template, rolled out
//! through ReplicaSets by strategy (RollingUpdate / Recreate), with defaults.

use serde::{Deserialize, Serialize};

use super::PodTemplateSpec;
use crate::intstr::IntOrString;
use crate::kind::Kind;
use crate::meta::{ConditionStatus, Object, ObjectMeta, Time, object_accessors};
use crate::selector::LabelSelector;
use crate::validate::{self, FieldError, NameRule};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Deployment {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: DeploymentSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<DeploymentStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    #[serde(default)]
    pub selector: LabelSelector,
    #[serde(default)]
    pub template: PodTemplateSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<DeploymentStrategy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_history_limit: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline_seconds: Option<i32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentStrategy {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<DeploymentStrategyType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<RollingUpdateDeployment>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeploymentStrategyType {
    #[default]
    RollingUpdate,
    Recreate,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollingUpdateDeployment {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<IntOrString>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<DeploymentCondition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collision_count: Option<i32>,
}

impl DeploymentStatus {
    pub fn condition(&self, t: DeploymentConditionType) -> Option<&DeploymentCondition> {
        self.conditions.iter().find(|c| c.type_ == t)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeploymentConditionType {
    Available,
    Progressing,
    ReplicaFailure,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentCondition {
    #[serde(rename = "type")]
    pub type_: DeploymentConditionType,
    pub status: ConditionStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl DeploymentSpec {
    /// Kubernetes' defaults: 1 replica, RollingUpdate 25%/25%, 10 old
    /// ReplicaSets kept, 600 s progress deadline, pod template defaults.
    pub fn apply_defaults(&mut self) {
        self.replicas.get_or_insert(1);
        self.revision_history_limit.get_or_insert(10);
        self.progress_deadline_seconds.get_or_insert(600);
        let strategy = self.strategy.get_or_insert_with(DeploymentStrategy::default);
        let kind = *strategy
            .type_
            .get_or_insert(DeploymentStrategyType::RollingUpdate);
        if kind == DeploymentStrategyType::RollingUpdate {
            let ru = strategy
                .rolling_update
                .get_or_insert_with(RollingUpdateDeployment::default);
            ru.max_unavailable.get_or_insert_with(|| "25%".into());
            ru.max_surge.get_or_insert_with(|| "25%".into());
        }
        self.template.spec.apply_defaults();
    }

    /// The strategy type after defaults.
    pub fn strategy_type(&self) -> DeploymentStrategyType {
        self.strategy.as_ref().and_then(|s| s.type_).unwrap_or_default()
    }
}

impl Object for Deployment {
    const KIND: Kind = Kind::Deployment;
    object_accessors!();

    fn apply_defaults(&mut self) {
        self.spec.apply_defaults();
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate::check_object_meta(&self.metadata, NameRule::Subdomain, true, &mut errs);
        validate::workload::check_deployment_spec(&self.spec, &mut errs);
        errs
    }
}
