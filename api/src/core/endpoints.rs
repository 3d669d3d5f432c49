//! The Endpoints object (core/v1): the addresses and ports behind a Service
//! of the same name, grouped in subsets that share a port list. Ready
//! addresses serve traffic; `notReadyAddresses` are known but not (yet)
//! ready. Written by the control plane's endpoints controller for Services
//! with a selector, by the user for Services without one.

use serde::{Deserialize, Serialize};

use super::container::Protocol;
use super::event::ObjectReference;
use crate::kind::Kind;
use crate::meta::{Object, ObjectMeta, object_accessors};
use crate::validate::{self, FieldError, NameRule};

/// The label the endpoints controller puts on the Endpoints it manages
/// (Kubernetes' own, since 1.33); Endpoints without it are the user's.
pub const MANAGED_BY_LABEL: &str = "endpoints.kubernetes.io/managed-by";
/// [`MANAGED_BY_LABEL`]'s value for the control plane's controller.
pub const MANAGED_BY_CONTROLLER: &str = "endpoint-controller";
/// The label on the Endpoints of a headless Service (value empty).
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoints {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subsets: Vec<EndpointSubset>,
}

/// Addresses that all offer the same ports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointSubset {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<EndpointAddress>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ready_addresses: Vec<EndpointAddress>,
    /// Empty only for a headless Service without ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<EndpointPort>,
}

/// One backend: its IP, the node it runs on and the pod it is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointAddress {
    pub ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<ObjectReference>,
}

/// A port the subset's addresses serve, named after the Service port it
/// backs (unnamed when the Service has a single unnamed port).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub port: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

impl EndpointPort {
    /// The name, `""` when unset.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }
}

impl Endpoints {
    /// Whether the endpoints controller manages these Endpoints.
    pub fn is_managed(&self) -> bool {
        self.metadata.labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY_CONTROLLER)
    }

    /// How many ready addresses there are, over all subsets.
    pub fn ready_count(&self) -> usize {
        self.subsets.iter().map(|s| s.addresses.len()).sum()
    }
}

impl Object for Endpoints {
    const KIND: Kind = Kind::Endpoints;
    object_accessors!();

    /// Ports are TCP unless they say otherwise.
    fn apply_defaults(&mut self) {
        for p in self.subsets.iter_mut().flat_map(|s| s.ports.iter_mut()) {
            p.protocol.get_or_insert(Protocol::Tcp);
        }
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate::check_object_meta(&self.metadata, NameRule::Subdomain, true, &mut errs);
        validate::endpoints::check_subsets(&self.subsets, &mut errs);
        errs
    }
}
