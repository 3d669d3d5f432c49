//! The apps/v1 workloads: [`deployment`] (rolling updates over ReplicaSets)
//! and [`replicaset`] (N copies of a pod template). Both implement
//! [`crate::meta::Object`].

pub mod deployment;
pub mod replicaset;

pub use deployment::{
    Deployment, DeploymentCondition, DeploymentConditionType, DeploymentSpec, DeploymentStatus,
    DeploymentStrategy, DeploymentStrategyType, RollingUpdateDeployment,
};
pub use replicaset::{
    ReplicaSet, ReplicaSetCondition, ReplicaSetConditionType, ReplicaSetSpec, ReplicaSetStatus,
};

use serde::{Deserialize, Serialize};

use crate::core::PodSpec;
use crate::meta::ObjectMeta;

/// The pod a workload stamps out.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodTemplateSpec {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PodSpec,
}
