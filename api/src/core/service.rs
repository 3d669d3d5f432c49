//! The Service object: a stable address in front of the pods a selector
//! picks, its ports, type (ClusterIP / NodePort) and defaults.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::container::Protocol;
use crate::intstr::IntOrString;
use crate::kind::Kind;
use crate::meta::{Object, ObjectMeta, object_accessors};
use crate::validate::{self, FieldError, NameRule};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Service {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ServiceSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ServiceStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<ServiceType>,
    /// Pods with these labels back the Service; empty selects no pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    /// Assigned by the control plane from the service CIDR when unset.
    #[serde(default, rename = "clusterIP", skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<String>,
    #[serde(default, rename = "clusterIPs", skip_serializing_if = "Vec::is_empty")]
    pub cluster_ips: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<SessionAffinity>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SessionAffinity {
    #[default]
    None,
    ClientIP,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    pub port: i32,
    /// A port number or a container port name; defaults to `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<IntOrString>,
    /// For `type: NodePort`, 30000–32767; assigned by the control plane when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<i32>,
}

/// Service status; `loadBalancer` is always empty in Shturman.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceStatus {
    #[serde(default)]
    pub load_balancer: LoadBalancerStatus,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancerStatus {}

impl ServiceSpec {
    /// Kubernetes' defaults: ClusterIP, TCP, targetPort = port, sessionAffinity None.
    pub fn apply_defaults(&mut self) {
        self.type_.get_or_insert(ServiceType::ClusterIP);
        self.session_affinity.get_or_insert(SessionAffinity::None);
        for p in &mut self.ports {
            p.protocol.get_or_insert(Protocol::Tcp);
            if p.target_port.is_none() {
                p.target_port = Some(IntOrString::Int(p.port));
            }
        }
    }
}

impl Object for Service {
    const KIND: Kind = Kind::Service;
    object_accessors!();

    fn apply_defaults(&mut self) {
        self.spec.apply_defaults();
        if self.status.is_none() {
            self.status = Some(ServiceStatus::default());
        }
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate::check_object_meta(&self.metadata, NameRule::Dns1035, true, &mut errs);
        validate::service::check_service_spec(&self.spec, &mut errs);
        errs
    }
}
