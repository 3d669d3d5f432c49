//! The core/v1 objects with Kubernetes' JSON shapes: Pod ([`pod`],
//! [`pod_status`], [`container`]), Service and its Endpoints, ConfigMap and
//! Secret, Node, Event, Namespace. Each top-level type implements [`crate::meta::Object`].

pub mod config;
pub mod container;
pub mod endpoints;
pub mod event;
pub mod namespace;
pub mod node;
pub mod pod;
pub mod pod_status;
pub mod service;

pub use config::{ConfigMap, Secret};
pub use container::{
    Container, ContainerPort, EnvFromSource, EnvVar, EnvVarSource, ImagePullPolicy, Probe, Protocol,
    ResourceRequirements, VolumeMount,
};
pub use endpoints::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints};
pub use event::{Event, EventSource, EventType, ObjectReference};
pub use namespace::{Namespace, NamespacePhase, NamespaceSpec, NamespaceStatus};
pub use node::{
    Node, NodeAddress, NodeAddressType, NodeCondition, NodeConditionType, NodeSpec, NodeStatus,
    NodeSystemInfo, Taint, TaintEffect,
};
pub use pod::{
    Affinity, NodeSelector, NodeSelectorRequirement, Pod, PodSpec, RestartPolicy, Toleration,
    TolerationOperator, Volume,
};
pub use pod_status::{ContainerState, ContainerStatus, PodCondition, PodConditionType, PodPhase, PodStatus};
pub use service::{
    ClientIpConfig, Service, ServicePort, ServiceSpec, ServiceStatus, ServiceType, SessionAffinity,
    SessionAffinityConfig,
};

#[cfg(test)]
mod tests;
