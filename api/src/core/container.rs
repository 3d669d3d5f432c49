//! Containers: image, command, environment, ports, resources, volume mounts,
//! probes and pull policy, with Kubernetes' defaults.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::intstr::IntOrString;
use crate::quantity::Quantity;

/// One container of a pod.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Container {
    pub name: String,
    /// An OCI image reference, or a `.wasm` module reference for Wasm pods.
    #[serde(default)]
    pub image: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<EnvFromSource>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    #[serde(default, skip_serializing_if = "ResourceRequirements::is_empty")]
    pub resources: ResourceRequirements,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_probe: Option<Probe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,
}

/// When to pull a container's image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ImagePullPolicy {
    Always,
    IfNotPresent,
    Never,
}

/// A transport protocol for ports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Protocol {
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
}

/// An environment variable: a literal value or one taken from elsewhere.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvVar {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSource>,
}

/// Where an environment variable's value comes from; exactly one is set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvVarSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeySelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<KeySelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_ref: Option<ObjectFieldSelector>,
}

/// A key of a ConfigMap or Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeySelector {
    pub name: String,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// A field of the pod, e.g. `metadata.name` or `status.podIP`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectFieldSelector {
    pub field_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
}

/// Every key of a ConfigMap or Secret as environment variables.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvFromSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<LocalObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// A ConfigMap or Secret in the pod's namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalObjectRef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// A port a container listens on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub container_port: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
}

/// Resource names Shturman schedules and enforces.
pub const RESOURCE_NAMES: &[&str] = &["cpu", "memory", "ephemeral-storage", "pods"];

/// Resource requests and limits, keyed by `cpu`, `memory`, `ephemeral-storage`, `pods`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceRequirements {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, Quantity>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, Quantity>,
}

impl ResourceRequirements {
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty() && self.limits.is_empty()
    }
}

/// Where a volume appears inside a container.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeMount {
    pub name: String,
    pub mount_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
}

/// A health check; exactly one handler (`exec`, `httpGet`, `tcpSocket`,
/// `grpc`) is set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Probe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGetAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpSocketAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<i32>,
    /// Grace period for a container killed by a failed liveness or startup
    /// probe (overrides the pod's `terminationGracePeriodSeconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,
}

/// Run a command in the container; exit 0 is healthy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecAction {
    #[serde(default)]
    pub command: Vec<String>,
}

/// An HTTP GET; 200–399 is healthy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpGetAction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A port number or a container port name.
    pub port: IntOrString,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<UriScheme>,
    /// Extra request headers (a `Host` header here sets the virtual host).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_headers: Vec<HttpHeader>,
}

/// One HTTP header of an `httpGet` probe.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHeader {
    pub name: String,
    pub value: String,
}

/// `HTTP` or `HTTPS`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UriScheme {
    #[default]
    #[serde(rename = "HTTP")]
    Http,
    #[serde(rename = "HTTPS")]
    Https,
}

/// A TCP connect; success is healthy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSocketAction {
    pub port: IntOrString,
    /// The host to connect to (default: the pod's IP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// A gRPC health check (`grpc.health.v1.Health/Check`); `SERVING` is healthy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcAction {
    /// A port number (gRPC probes take no port names).
    pub port: i32,
    /// The service name sent in the `HealthCheckRequest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

impl Probe {
    /// Kubernetes' probe defaults.
    pub fn apply_defaults(&mut self) {
        self.period_seconds.get_or_insert(10);
        self.timeout_seconds.get_or_insert(1);
        self.failure_threshold.get_or_insert(3);
        self.success_threshold.get_or_insert(1);
        if let Some(h) = &mut self.http_get {
            h.path.get_or_insert_with(|| "/".to_string());
            h.scheme.get_or_insert(UriScheme::Http);
        }
    }
}

/// Whether an image reference names no tag or `:latest` (so it is pulled `Always`).
pub fn is_latest_image(image: &str) -> bool {
    let without_digest = match image.split_once('@') {
        Some((_, _)) => return false,
        None => image,
    };
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    match last.rsplit_once(':') {
        Some((_, tag)) => tag == "latest",
        None => true,
    }
}

impl Container {
    /// Kubernetes' container defaults: pull policy from the tag, TCP ports, probe timings.
    pub fn apply_defaults(&mut self) {
        if self.image_pull_policy.is_none() {
            self.image_pull_policy = Some(if is_latest_image(&self.image) {
                ImagePullPolicy::Always
            } else {
                ImagePullPolicy::IfNotPresent
            });
        }
        for p in &mut self.ports {
            p.protocol.get_or_insert(Protocol::Tcp);
        }
        for probe in [
            &mut self.liveness_probe,
            &mut self.readiness_probe,
            &mut self.startup_probe,
        ]
        .into_iter()
        .flatten()
        {
            probe.apply_defaults();
        }
        // A limit without a request requests the limit, as Kubernetes does.
        let ResourceRequirements { requests, limits } = &mut self.resources;
        for (name, limit) in limits.iter() {
            if !RESOURCE_NAMES.contains(&name.as_str()) {
                continue; // reported by validation, once
            }
            requests.entry(name.clone()).or_insert_with(|| limit.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policy_follows_the_tag() {
        assert!(is_latest_image("nginx"));
        assert!(is_latest_image("nginx:latest"));
        assert!(is_latest_image("localhost:5000/nginx"));
        assert!(!is_latest_image("localhost:5000/nginx:1.27"));
        assert!(!is_latest_image("nginx@sha256:abc"));
        let mut c = Container {
            name: "a".into(),
            image: "nginx:1.27".into(),
            ..Default::default()
        };
        c.apply_defaults();
        assert_eq!(c.image_pull_policy, Some(ImagePullPolicy::IfNotPresent));
        let mut c = Container {
            name: "a".into(),
            image: "nginx".into(),
            ..Default::default()
        };
        c.apply_defaults();
        assert_eq!(c.image_pull_policy, Some(ImagePullPolicy::Always));
    }

    #[test]
    fn probe_and_port_defaults() {
        let mut c: Container = serde_json::from_value(serde_json::json!({
            "name": "a", "image": "x:1",
            "ports": [{"containerPort": 80}],
            "readinessProbe": {"httpGet": {"port": 80}},
            "resources": {"limits": {"cpu": "1"}}
        }))
        .unwrap();
        c.apply_defaults();
        assert_eq!(c.ports[0].protocol, Some(Protocol::Tcp));
        let p = c.readiness_probe.unwrap();
        assert_eq!(
            (
                p.period_seconds,
                p.timeout_seconds,
                p.failure_threshold,
                p.success_threshold
            ),
            (Some(10), Some(1), Some(3), Some(1))
        );
        assert_eq!(p.http_get.unwrap().path.as_deref(), Some("/"));
        assert_eq!(c.resources.requests["cpu"], Quantity::from_value(1));
    }

    #[test]
    fn probe_headers_hosts_grpc_and_grace_round_trip() {
        let json = serde_json::json!({
            "httpGet": {"port": 8080, "httpHeaders": [{"name": "X-Probe", "value": "1"}]},
            "terminationGracePeriodSeconds": 5
        });
        let p: Probe = serde_json::from_value(json.clone()).unwrap();
        let h = p.http_get.as_ref().unwrap();
        assert_eq!(
            h.http_headers,
            [HttpHeader {
                name: "X-Probe".into(),
                value: "1".into()
            }]
        );
        assert_eq!(p.termination_grace_period_seconds, Some(5));
        assert_eq!(serde_json::to_value(&p).unwrap(), json);
        let p: Probe = serde_json::from_value(serde_json::json!({
            "grpc": {"port": 9000, "service": "health"}
        }))
        .unwrap();
        assert_eq!(
            p.grpc,
            Some(GrpcAction {
                port: 9000,
                service: Some("health".into())
            })
        );
        let t: TcpSocketAction =
            serde_json::from_value(serde_json::json!({"port": "http", "host": "10.0.0.1"})).unwrap();
        assert_eq!(t.host.as_deref(), Some("10.0.0.1"));
        // Nothing new is written when unset.
        let plain = serde_json::json!({"tcpSocket": {"port": 80}});
        let p: Probe = serde_json::from_value(plain.clone()).unwrap();
        assert_eq!(serde_json::to_value(&p).unwrap(), plain);
    }
}
