//! The Service object: a stable address in front of the pods a selector
//! picks, its ports, type (ClusterIP / NodePort), session affinity and
//! defaults. The control plane assigns `clusterIP` and node ports at create
//! time (`shturman-control`'s `server::alloc`); a headless Service
//! (`clusterIP: None`) gets no address.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::container::Protocol;
use crate::intstr::IntOrString;
use crate::kind::Kind;
use crate::meta::{Object, ObjectMeta, object_accessors};
use crate::validate::{self, FieldError, NameRule};

/// `spec.clusterIP` of a headless Service: no address, no proxying.
pub const CLUSTER_IP_NONE: &str = "None";
/// How long a `ClientIP` affinity lasts without traffic (Kubernetes' default, 3 h).
pub const DEFAULT_CLIENT_IP_TIMEOUT_SECONDS: i32 = 10_800;
/// The longest `ClientIP` affinity timeout Kubernetes accepts (one day).
pub const MAX_CLIENT_IP_TIMEOUT_SECONDS: i32 = 86_400;

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
    /// Pods with these labels back the Service; without a selector the
    /// Service's Endpoints are the user's to write.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    /// Assigned by the control plane from the service CIDR when unset;
    /// `None` makes the Service headless. Immutable once set.
    #[serde(default, rename = "clusterIP", skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<String>,
    /// `[clusterIP]` (single-stack only).
    #[serde(default, rename = "clusterIPs", skip_serializing_if = "Vec::is_empty")]
    pub cluster_ips: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<SessionAffinity>,
    /// The `ClientIP` affinity's timeout (defaulted with `ClientIP`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity_config: Option<SessionAffinityConfig>,
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

/// `sessionAffinityConfig`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SessionAffinityConfig {
    #[serde(default, rename = "clientIP", skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<ClientIpConfig>,
}

/// `sessionAffinityConfig.clientIP`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientIpConfig {
    /// 1–86400; 10800 by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i32>,
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
    /// For `type: NodePort`: a port in the control plane's node port range
    /// (`--service-node-port-range`, 30000–32767 by default); assigned by
    /// the control plane when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<i32>,
}

impl ServicePort {
    /// The protocol, TCP when unset.
    pub fn protocol(&self) -> Protocol {
        self.protocol.unwrap_or_default()
    }

    /// The name, `""` when unset (a Service's only port may be unnamed).
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }

    /// The target port, `port` when unset.
    pub fn target(&self) -> IntOrString {
        self.target_port.clone().unwrap_or(IntOrString::Int(self.port))
    }
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
    /// Kubernetes' defaults: ClusterIP, TCP, targetPort = port,
    /// sessionAffinity None (ClientIP gets a 10800 s timeout), and
    /// `clusterIPs` / `clusterIP` filled from each other.
    pub fn apply_defaults(&mut self) {
        self.type_.get_or_insert(ServiceType::ClusterIP);
        let affinity = *self.session_affinity.get_or_insert(SessionAffinity::None);
        if affinity == SessionAffinity::ClientIP {
            self.session_affinity_config
                .get_or_insert_with(SessionAffinityConfig::default)
                .client_ip
                .get_or_insert_with(ClientIpConfig::default)
                .timeout_seconds
                .get_or_insert(DEFAULT_CLIENT_IP_TIMEOUT_SECONDS);
        }
        for p in &mut self.ports {
            p.protocol.get_or_insert(Protocol::Tcp);
            if p.target_port.is_none() {
                p.target_port = Some(IntOrString::Int(p.port));
            }
        }
        match (self.cluster_ip.as_deref(), self.cluster_ips.first()) {
            (Some(ip), None) if !ip.is_empty() => self.cluster_ips = vec![ip.to_string()],
            (None | Some(""), Some(first)) => self.cluster_ip = Some(first.clone()),
            _ => {}
        }
    }

    /// The type, ClusterIP when unset.
    pub fn type_(&self) -> ServiceType {
        self.type_.unwrap_or_default()
    }

    /// Whether the Service is headless (`clusterIP: None`).
    pub fn is_headless(&self) -> bool {
        self.cluster_ip.as_deref() == Some(CLUSTER_IP_NONE)
    }

    /// The assigned or requested cluster IP: unset, empty and `None` give `None`.
    pub fn cluster_ip(&self) -> Option<&str> {
        self.cluster_ip
            .as_deref()
            .filter(|ip| !ip.is_empty() && *ip != CLUSTER_IP_NONE)
    }

    /// Whether the Service's ports get node ports (`type: NodePort`).
    pub fn needs_node_ports(&self) -> bool {
        self.type_() == ServiceType::NodePort
    }

    /// The session affinity, None when unset.
    pub fn session_affinity(&self) -> SessionAffinity {
        self.session_affinity.unwrap_or_default()
    }

    /// The `ClientIP` affinity timeout in seconds, when the affinity is `ClientIP`.
    pub fn client_ip_timeout(&self) -> Option<i32> {
        (self.session_affinity() == SessionAffinity::ClientIP).then(|| {
            self.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .unwrap_or(DEFAULT_CLIENT_IP_TIMEOUT_SECONDS)
        })
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
