//! A [`DesiredPod`] as CRI requests, pure (no clock, no I/O), as kubelet
//! builds them: the pod's [`PodSandboxConfig`] (metadata, hostname, log
//! directory, labels including Shturman's own, host port mappings, Linux
//! namespaces) and one [`ContainerConfig`] per container (image, command and
//! args with `$(VAR)` expanded, env, mounts, cgroup resources, log path).
//!
//! Files live under the pod's dir on the node (see [`PodPaths`]):
//! `volumes/<name>` (written by [`crate::wasm::volumes::materialize`], shared
//! with the Wasm runtime) and `logs/<container>/<restartCount>.log`
//! (written by containerd in the CRI log format).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_cri::v1::{
    AuthConfig, ContainerConfig, ContainerMetadata, ImageSpec, KeyValue, LinuxContainerConfig,
    LinuxContainerResources, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, Mount, MountPropagation, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata, PortMapping, Protocol,
};
use shturman_api::core::Container;
use shturman_api::core::container::Protocol as PortProtocol;
use shturman_api::quantity::Quantity;
use shturman_api::wire::DesiredPod;

use super::image::Credentials;
use crate::plan::PodKey;
use crate::probe::ProbeKind;
use crate::wasm::env::{self, EnvError};
use crate::wasm::logs::pod_dir_name;
use crate::wasm::volumes::{VolumeError, relative};

/// Label on every sandbox Shturman creates: the node (agent) that owns it.
pub const LABEL_NODE: &str = "io.shturman.node";
/// Label: the pod's uid. Only sandboxes carrying it are ever touched.
pub const LABEL_POD_UID: &str = "io.shturman.pod-uid";
/// Label: the pod's namespace.
pub const LABEL_POD_NAMESPACE: &str = "io.shturman.pod-namespace";
/// Label: the pod's name.
pub const LABEL_POD_NAME: &str = "io.shturman.pod-name";
/// Label: the pod spec's hash ([`crate::plan::spec_hash`]); a sandbox is
/// adopted after an agent restart only when it still matches.
pub const LABEL_SPEC_HASH: &str = "io.shturman.pod-spec-hash";
/// Label on containers: the container's name in the pod.
pub const LABEL_CONTAINER: &str = "io.shturman.container";

/// kubelet's labels, so `crictl pods` and friends show familiar names.
const K8S_POD_NAME: &str = "io.kubernetes.pod.name";
const K8S_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
const K8S_POD_UID: &str = "io.kubernetes.pod.uid";
const K8S_CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// kubelet's annotation with a container's restart count (read back when a
/// restarted agent adopts the container).
pub const ANNOTATION_RESTART_COUNT: &str = "io.kubernetes.container.restartCount";

/// The CFS period kubelet uses (100 ms, in µs).
pub const CPU_PERIOD_US: i64 = 100_000;
/// Smallest CFS quota kubelet sets (1 ms, in µs).
const MIN_CPU_QUOTA_US: i64 = 1_000;
/// cpu.shares bounds (the kernel's).
const MIN_SHARES: i64 = 2;
const MAX_SHARES: i64 = 262_144;
/// Longest hostname (a DNS label).
const MAX_HOSTNAME: usize = 63;

/// Why a container's config cannot be built (`CreateContainerConfigError`).
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error("container {0:?} has no image: set spec.containers[].image")]
    NoImage(String),
}

/// Where a pod's files live on the node: `<data-dir>/oci/pods/<ns>_<name>_<uid>/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodPaths {
    pub dir: PathBuf,
}

impl PodPaths {
    /// The dir of pod `key` with `uid` under `root` (`<data-dir>/oci/pods`, absolute).
    pub fn new(root: &Path, key: &PodKey, uid: &str) -> PodPaths {
        PodPaths {
            dir: root.join(pod_dir_name(key, uid)),
        }
    }

    /// The sandbox's log directory (CRI `log_directory`).
    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// The log file of run `attempt` of `container`.
    pub fn log_file(&self, container: &str, attempt: u32) -> PathBuf {
        self.logs().join(log_path(container, attempt))
    }
}

/// The CRI `log_path` of run `attempt` of `container`, relative to the
/// sandbox's log directory: `<container>/<attempt>.log`, as kubelet.
pub fn log_path(container: &str, attempt: u32) -> String {
    format!("{container}/{attempt}.log")
}

/// The labels that mark a sandbox as this node's, for pod `uid`.
pub fn ownership_labels(node: &str, uid: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_NODE.to_string(), node.to_string()),
        (LABEL_POD_UID.to_string(), uid.to_string()),
    ])
}

/// The pod's sandbox config: `attempt` counts sandboxes made for this pod.
pub fn sandbox_config(pod: &DesiredPod, node: &str, paths: &PodPaths, attempt: u32) -> PodSandboxConfig {
    let meta = &pod.pod.metadata;
    let key = PodKey::of(&pod.pod);
    let uid = meta.uid.clone().unwrap_or_default();
    let mut labels: HashMap<String, String> =
        meta.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    labels.extend([
        (K8S_POD_NAME.to_string(), key.name.clone()),
        (K8S_POD_NAMESPACE.to_string(), key.namespace.clone()),
        (K8S_POD_UID.to_string(), uid.clone()),
        (LABEL_POD_NAME.to_string(), key.name.clone()),
        (LABEL_POD_NAMESPACE.to_string(), key.namespace.clone()),
        (LABEL_SPEC_HASH.to_string(), crate::plan::spec_hash(&pod.pod)),
    ]);
    labels.extend(ownership_labels(node, &uid));
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: key.name.clone(),
            uid,
            namespace: key.namespace.clone(),
            attempt,
        }),
        hostname: hostname(pod),
        log_directory: paths.logs().display().to_string(),
        // None: containerd gives the pod the node's resolv.conf (kubelet's
        // `dnsPolicy: Default`; there is no cluster DNS yet).
        dns_config: None,
        port_mappings: port_mappings(pod),
        labels,
        annotations: meta
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        linux: Some(LinuxPodSandboxConfig {
            // Empty: containerd's default parent (cgroupfs driver).
            cgroup_parent: String::new(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces()),
                ..LinuxSandboxSecurityContext::default()
            }),
            ..LinuxPodSandboxConfig::default()
        }),
        windows: None,
    }
}

/// Network and IPC shared by the pod, a PID namespace per container (kubelet's
/// default without `shareProcessNamespace`).
fn namespaces() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Pod as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..NamespaceOption::default()
    }
}

/// `spec.hostname` or the pod's name, cut to a DNS label as kubelet does.
pub fn hostname(pod: &DesiredPod) -> String {
    let name = pod
        .pod
        .spec
        .hostname
        .as_deref()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| pod.pod.metadata.name());
    let cut: String = name.chars().take(MAX_HOSTNAME).collect();
    cut.trim_end_matches(['-', '.']).to_string()
}

/// Every `containerPort` with a `hostPort`: reachable from other nodes on
/// the node's address (containerd hands them to CNI's `portmap`).
pub fn port_mappings(pod: &DesiredPod) -> Vec<PortMapping> {
    pod.pod
        .spec
        .containers
        .iter()
        .flat_map(|c| &c.ports)
        .filter_map(|p| {
            let host_port = p.host_port.filter(|h| *h > 0)?;
            Some(PortMapping {
                protocol: match p.protocol.unwrap_or_default() {
                    PortProtocol::Tcp => Protocol::Tcp as i32,
                    PortProtocol::Udp => Protocol::Udp as i32,
                },
                container_port: p.container_port,
                host_port,
                host_ip: String::new(),
            })
        })
        .collect()
}

/// The config of run `attempt` of container `c` (which names its log file;
/// `restart_count` is recorded as kubelet's annotation), with its
/// environment already resolved (see [`environment`]).
pub fn container_config(
    pod: &DesiredPod,
    c: &Container,
    paths: &PodPaths,
    attempt: u32,
    restart_count: i32,
    envs: &[(String, String)],
) -> Result<ContainerConfig, SpecError> {
    if c.image.trim().is_empty() {
        return Err(SpecError::NoImage(c.name.clone()));
    }
    let key = PodKey::of(&pod.pod);
    let uid = pod.pod.metadata.uid.clone().unwrap_or_default();
    let vars: BTreeMap<&str, &str> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let labels = HashMap::from([
        (K8S_CONTAINER_NAME.to_string(), c.name.clone()),
        (K8S_POD_NAME.to_string(), key.name.clone()),
        (K8S_POD_NAMESPACE.to_string(), key.namespace.clone()),
        (K8S_POD_UID.to_string(), uid.clone()),
        (LABEL_POD_UID.to_string(), uid),
        (LABEL_CONTAINER.to_string(), c.name.clone()),
    ]);
    Ok(ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: c.name.clone(),
            attempt,
        }),
        image: Some(image_spec(&c.image)),
        // kubelet hands command and args over as they are (after `$(VAR)`
        // expansion): the runtime puts `command` in place of the image's
        // ENTRYPOINT and `args` in place of its CMD.
        command: c.command.iter().map(|s| expand(s, &vars)).collect(),
        args: c.args.iter().map(|s| expand(s, &vars)).collect(),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: envs
            .iter()
            .map(|(k, v)| KeyValue {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        mounts: mounts(&paths.dir, pod, c)?,
        labels,
        annotations: HashMap::from([(ANNOTATION_RESTART_COUNT.to_string(), restart_count.to_string())]),
        log_path: log_path(&c.name, attempt),
        linux: Some(LinuxContainerConfig {
            resources: Some(resources(c)),
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(namespaces()),
                ..LinuxContainerSecurityContext::default()
            }),
        }),
        ..ContainerConfig::default()
    })
}

/// The CRI image spec of a reference.
pub fn image_spec(image: &str) -> ImageSpec {
    ImageSpec {
        image: image.to_string(),
        user_specified_image: image.to_string(),
        ..ImageSpec::default()
    }
}

/// Pull credentials as CRI's `AuthConfig`. `server_address` stays empty, as
/// kubelet leaves it: the credentials were already chosen for the image's
/// registry, and containerd 1.6 `url.Parse`s a non-empty one, which fails
/// for a bare `host:port` ("first path segment in URL cannot contain
/// colon": the pull errors) and gives no host for `name:port` (the
/// credentials are silently dropped).
pub fn auth_config(c: &Credentials) -> AuthConfig {
    AuthConfig {
        username: c.username.clone(),
        password: c.password.clone(),
        auth: c.auth.clone(),
        server_address: String::new(),
        identity_token: c.identity_token.clone(),
        registry_token: String::new(),
    }
}

/// kubelet's `$(VAR)` expansion of command and args: `$(NAME)` becomes the
/// variable's value when it is defined and stays as written otherwise;
/// `$$` is a literal `$`.
pub fn expand(input: &str, vars: &BTreeMap<&str, &str>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(open) = after.strip_prefix('(')
            && let Some(close) = open.find(')')
        {
            let name = &open[..close];
            match vars.get(name) {
                Some(v) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &open[close + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn cpu_millis(m: &BTreeMap<String, Quantity>) -> Option<i64> {
    m.get("cpu").map(Quantity::milli_value)
}

/// cpu.shares for a request of `millis` (kubelet's `MilliCPUToShares`).
pub fn shares(millis: i64) -> i64 {
    if millis <= 0 {
        return MIN_SHARES;
    }
    (millis.saturating_mul(1024) / 1000).clamp(MIN_SHARES, MAX_SHARES)
}

/// The CFS quota for a limit of `millis` (kubelet's `MilliCPUToQuota`).
pub fn quota(millis: i64) -> i64 {
    if millis <= 0 {
        return 0;
    }
    (millis.saturating_mul(CPU_PERIOD_US) / 1000).max(MIN_CPU_QUOTA_US)
}

/// `resources` as cgroup settings: cpu.shares from the cpu request (the limit
/// when no request is set, as the API server's defaulting does), a CFS quota
/// over a 100 ms period from the cpu limit, and the memory limit, with swap
/// capped to it so a container over its limit is OOM-killed, not swapped.
pub fn resources(c: &Container) -> LinuxContainerResources {
    let r = &c.resources;
    let request = cpu_millis(&r.requests).or_else(|| cpu_millis(&r.limits));
    let limit = cpu_millis(&r.limits).filter(|m| *m > 0);
    let memory = r.limits.get("memory").map(Quantity::value).filter(|m| *m > 0);
    LinuxContainerResources {
        cpu_period: if limit.is_some() { CPU_PERIOD_US } else { 0 },
        cpu_quota: limit.map_or(0, quota),
        cpu_shares: shares(request.unwrap_or(0)),
        memory_limit_in_bytes: memory.unwrap_or(0),
        memory_swap_limit_in_bytes: memory.unwrap_or(0),
        ..LinuxContainerResources::default()
    }
}

/// The container's `volumeMounts` as bind mounts: `emptyDir`, `configMap`
/// and `secret` volumes from the pod dir (configMap and secret read-only, as
/// in Kubernetes), `hostPath` from the node; `subPath` inside either.
pub fn mounts(pod_dir: &Path, pod: &DesiredPod, c: &Container) -> Result<Vec<Mount>, SpecError> {
    let mut out = Vec::new();
    for m in &c.volume_mounts {
        let v = pod
            .pod
            .spec
            .volumes
            .iter()
            .find(|v| v.name == m.name)
            .ok_or_else(|| VolumeError::NoSuchVolume(m.name.clone()))?;
        if !m.mount_path.starts_with('/') {
            return Err(VolumeError::RelativeMount {
                name: m.name.clone(),
                path: m.mount_path.clone(),
            }
            .into());
        }
        let mut readonly = m.read_only == Some(true);
        let mut host = if let Some(h) = &v.host_path {
            PathBuf::from(&h.path)
        } else {
            readonly |= v.config_map.is_some() || v.secret.is_some();
            pod_dir.join("volumes").join(relative(&v.name, &v.name)?)
        };
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            host = host.join(relative(&v.name, sub)?);
        }
        out.push(Mount {
            container_path: m.mount_path.clone(),
            host_path: host.display().to_string(),
            readonly,
            propagation: MountPropagation::PropagationPrivate as i32,
            ..Mount::default()
        });
    }
    Ok(out)
}

/// The resolved environment of `c` (envFrom, env, valueFrom), shared with
/// the Wasm runtime.
pub fn environment(pod: &DesiredPod, c: &Container) -> Result<Vec<(String, String)>, SpecError> {
    Ok(env::resolve(c, pod)?)
}

/// The grace period (SIGTERM → SIGKILL) of a container killed because its
/// `kind` probe failed: the probe's `terminationGracePeriodSeconds`, else
/// the pod's, else 30 s (kubelet's rule; a readiness probe never kills).
pub fn probe_kill_grace(pod: &DesiredPod, c: &Container, kind: ProbeKind) -> Duration {
    let probe = match kind {
        ProbeKind::Liveness => c.liveness_probe.as_ref(),
        ProbeKind::Startup => c.startup_probe.as_ref(),
        ProbeKind::Readiness => None,
    };
    probe
        .and_then(|p| p.termination_grace_period_seconds)
        .or(pod.pod.spec.termination_grace_period_seconds)
        .map_or(DEFAULT_GRACE, |s| {
            Duration::from_secs(u64::try_from(s).unwrap_or(0))
        })
}

/// A pod's grace period when it does not say (Kubernetes' default).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;
    use shturman_api::core::container::{ContainerPort, EnvVar, ResourceRequirements, VolumeMount};
    use shturman_api::core::pod::{
        ConfigMapVolumeSource, EmptyDirVolumeSource, HostPathVolumeSource, SecretVolumeSource,
    };
    use shturman_api::core::{Pod, Volume};
    use shturman_api::meta::ObjectMeta;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }

    fn pod() -> DesiredPod {
        let mut p = Pod {
            metadata: ObjectMeta {
                name: Some("web-1".into()),
                namespace: Some("shop".into()),
                uid: Some("u-1".into()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        };
        p.metadata.labels.insert("app".into(), "web".into());
        // A pod label cannot pass for Shturman's own.
        p.metadata.labels.insert(LABEL_NODE.into(), "other".into());
        p.spec.containers.push(Container {
            name: "httpd".into(),
            image: "127.0.0.1:5000/busybox-httpd:1".into(),
            ports: vec![
                ContainerPort {
                    container_port: 80,
                    host_port: Some(8080),
                    ..ContainerPort::default()
                },
                ContainerPort {
                    container_port: 9090,
                    ..ContainerPort::default()
                },
            ],
            ..Container::default()
        });
        p.spec.containers.push(Container {
            name: "dns".into(),
            image: "dns:1".into(),
            ports: vec![ContainerPort {
                container_port: 53,
                host_port: Some(5353),
                protocol: Some(PortProtocol::Udp),
                ..ContainerPort::default()
            }],
            ..Container::default()
        });
        DesiredPod {
            pod: p,
            ..DesiredPod::default()
        }
    }

    fn paths() -> PodPaths {
        PodPaths::new(Path::new("/data/oci/pods"), &PodKey::new("shop", "web-1"), "u-1")
    }

    #[test]
    fn sandbox_carries_identity_labels_ports_and_namespaces() {
        let d = pod();
        let s = sandbox_config(&d, "edge-1", &paths(), 2);
        let m = s.metadata.as_ref().unwrap();
        assert_eq!(
            (m.name.as_str(), m.namespace.as_str(), m.uid.as_str(), m.attempt),
            ("web-1", "shop", "u-1", 2)
        );
        assert_eq!(s.hostname, "web-1");
        assert_eq!(s.log_directory, "/data/oci/pods/shop_web-1_u-1/logs");
        assert_eq!(s.labels["app"], "web");
        assert_eq!(s.labels[LABEL_NODE], "edge-1");
        assert_eq!(s.labels[LABEL_POD_UID], "u-1");
        assert_eq!(s.labels[LABEL_POD_NAME], "web-1");
        assert_eq!(s.labels[LABEL_POD_NAMESPACE], "shop");
        assert_eq!(s.labels[LABEL_SPEC_HASH], crate::plan::spec_hash(&d.pod));
        assert_eq!(s.labels["io.kubernetes.pod.uid"], "u-1");
        assert_eq!(
            s.port_mappings,
            vec![
                PortMapping {
                    protocol: Protocol::Tcp as i32,
                    container_port: 80,
                    host_port: 8080,
                    host_ip: String::new(),
                },
                PortMapping {
                    protocol: Protocol::Udp as i32,
                    container_port: 53,
                    host_port: 5353,
                    host_ip: String::new(),
                },
            ]
        );
        let linux = s.linux.unwrap();
        assert_eq!(linux.cgroup_parent, "");
        let ns = linux.security_context.unwrap().namespace_options.unwrap();
        assert_eq!(ns.network, NamespaceMode::Pod as i32);
        assert_eq!(ns.pid, NamespaceMode::Container as i32);
        assert!(s.dns_config.is_none());
    }

    #[test]
    fn hostnames_are_dns_labels() {
        let mut d = pod();
        d.pod.spec.hostname = Some("custom".into());
        assert_eq!(hostname(&d), "custom");
        d.pod.spec.hostname = None;
        d.pod.metadata.name = Some(format!("{}-{}", "a".repeat(62), "b".repeat(10)));
        let h = hostname(&d);
        assert_eq!(h, "a".repeat(62));
    }

    #[test]
    fn containers_get_image_command_env_labels_and_log_path() {
        let mut d = pod();
        let c = &mut d.pod.spec.containers[0];
        c.command = vec!["/bin/sh".into(), "-c".into()];
        c.args = vec!["echo $(GREETING) $$(GREETING) $(NOPE) $".into()];
        c.working_dir = Some("/srv".into());
        c.env = vec![EnvVar {
            name: "GREETING".into(),
            value: Some("hi".into()),
            value_from: None,
        }];
        let c = d.pod.spec.containers[0].clone();
        let env = environment(&d, &c).unwrap();
        let cfg = container_config(&d, &c, &paths(), 3, 2, &env).unwrap();
        let m = cfg.metadata.unwrap();
        assert_eq!((m.name.as_str(), m.attempt), ("httpd", 3));
        let image = cfg.image.unwrap();
        assert_eq!(image.image, "127.0.0.1:5000/busybox-httpd:1");
        assert_eq!(cfg.command, ["/bin/sh", "-c"]);
        assert_eq!(cfg.args, ["echo hi $(GREETING) $(NOPE) $"]);
        assert_eq!(cfg.working_dir, "/srv");
        assert_eq!(
            cfg.envs,
            vec![KeyValue {
                key: "GREETING".into(),
                value: "hi".into()
            }]
        );
        assert_eq!(cfg.log_path, "httpd/3.log");
        assert_eq!(cfg.annotations[ANNOTATION_RESTART_COUNT], "2");
        assert_eq!(
            paths().log_file("httpd", 3),
            PathBuf::from("/data/oci/pods/shop_web-1_u-1/logs/httpd/3.log")
        );
        assert_eq!(cfg.labels[LABEL_CONTAINER], "httpd");
        assert_eq!(cfg.labels[LABEL_POD_UID], "u-1");
        // Only args: the image's entrypoint stays (the runtime's rule).
        let mut only_args = c.clone();
        only_args.command.clear();
        only_args.args = vec!["-p".into(), "8080".into()];
        let cfg = container_config(&d, &only_args, &paths(), 0, 0, &[]).unwrap();
        assert!(cfg.command.is_empty());
        assert_eq!(cfg.args, ["-p", "8080"]);
        let mut no_image = c;
        no_image.image = " ".into();
        assert!(matches!(
            container_config(&d, &no_image, &paths(), 0, 0, &[]),
            Err(SpecError::NoImage(_))
        ));
    }

    #[test]
    fn expansion_follows_kubelet() {
        let vars = BTreeMap::from([("A", "1"), ("B", "two")]);
        let e = |s: &str| expand(s, &vars);
        assert_eq!(e("$(A)-$(B)"), "1-two");
        assert_eq!(e("$$(A)"), "$(A)");
        assert_eq!(e("$(C)"), "$(C)");
        assert_eq!(e("$A $"), "$A $");
        assert_eq!(e("$(A"), "$(A");
        assert_eq!(e("x$$y"), "x$y");
        assert_eq!(e(""), "");
    }

    fn res(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
        let m = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| ((*k).to_string(), q(v))).collect();
        Container {
            resources: ResourceRequirements {
                requests: m(requests),
                limits: m(limits),
            },
            ..Container::default()
        }
    }

    #[test]
    fn resources_as_kubelet_computes_them() {
        let r = resources(&res(&[("cpu", "250m")], &[("cpu", "500m"), ("memory", "32Mi")]));
        assert_eq!(r.cpu_period, 100_000);
        assert_eq!(r.cpu_quota, 50_000);
        assert_eq!(r.cpu_shares, 256);
        assert_eq!(r.memory_limit_in_bytes, 32 << 20);
        assert_eq!(r.memory_swap_limit_in_bytes, 32 << 20);
        // A limit without a request: the request defaults to the limit.
        let r = resources(&res(&[], &[("cpu", "2")]));
        assert_eq!((r.cpu_quota, r.cpu_shares), (200_000, 2048));
        // Nothing set: best effort, minimal shares, no quota.
        let r = resources(&res(&[], &[]));
        assert_eq!(
            (r.cpu_period, r.cpu_quota, r.cpu_shares, r.memory_limit_in_bytes),
            (0, 0, 2, 0)
        );
        // Tiny limits hit kubelet's floors.
        let r = resources(&res(&[("cpu", "1m")], &[("cpu", "1m")]));
        assert_eq!((r.cpu_quota, r.cpu_shares), (1000, 2));
        assert_eq!(shares(1_000_000), MAX_SHARES);
    }

    #[test]
    fn mounts_come_from_the_pod_dir_or_the_node() {
        let mut d = pod();
        d.pod.spec.volumes = vec![
            Volume {
                name: "scratch".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            },
            Volume {
                name: "cfg".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: "web-config".into(),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            },
            Volume {
                name: "creds".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: "db".into(),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            },
            Volume {
                name: "host".into(),
                host_path: Some(HostPathVolumeSource {
                    path: "/var/data".into(),
                    type_: None,
                }),
                ..Volume::default()
            },
        ];
        let mount = |name: &str, path: &str, ro: Option<bool>, sub: Option<&str>| VolumeMount {
            name: name.into(),
            mount_path: path.into(),
            read_only: ro,
            sub_path: sub.map(Into::into),
        };
        let mut c = d.pod.spec.containers[0].clone();
        c.volume_mounts = vec![
            mount("scratch", "/tmp/s", None, None),
            mount("cfg", "/etc/web", None, None),
            mount("creds", "/run/creds", Some(false), None),
            mount("host", "/data", Some(true), Some("web")),
        ];
        let ms = mounts(&paths().dir, &d, &c).unwrap();
        let view: Vec<(&str, &str, bool)> = ms
            .iter()
            .map(|m| (m.container_path.as_str(), m.host_path.as_str(), m.readonly))
            .collect();
        assert_eq!(
            view,
            [
                ("/tmp/s", "/data/oci/pods/shop_web-1_u-1/volumes/scratch", false),
                ("/etc/web", "/data/oci/pods/shop_web-1_u-1/volumes/cfg", true),
                ("/run/creds", "/data/oci/pods/shop_web-1_u-1/volumes/creds", true),
                ("/data", "/var/data/web", true),
            ]
        );
        for (bad, sub) in [("nope", None), ("host", Some("../etc"))] {
            c.volume_mounts = vec![mount(bad, "/x", None, sub)];
            assert!(matches!(mounts(&paths().dir, &d, &c), Err(SpecError::Volume(_))));
        }
        c.volume_mounts = vec![mount("scratch", "relative", None, None)];
        let e = mounts(&paths().dir, &d, &c).unwrap_err();
        assert!(e.to_string().contains("must be absolute"), "{e}");
    }

    #[test]
    fn env_errors_name_the_missing_source() {
        let mut d = pod();
        d.pod.spec.containers[0].env = vec![EnvVar {
            name: "T".into(),
            value: None,
            value_from: Some(shturman_api::core::EnvVarSource {
                secret_key_ref: Some(shturman_api::core::container::KeySelector {
                    name: "db".into(),
                    key: "token".into(),
                    optional: None,
                }),
                ..Default::default()
            }),
        }];
        let c = d.pod.spec.containers[0].clone();
        let e = environment(&d, &c).unwrap_err();
        assert_eq!(e.to_string(), "env T: secret \"db\" not found");
    }

    #[test]
    fn probe_kills_take_the_probes_grace_then_the_pods() {
        use shturman_api::core::container::Probe;
        let mut d = pod();
        let c = d.pod.spec.containers[0].clone();
        assert_eq!(probe_kill_grace(&d, &c, ProbeKind::Liveness), DEFAULT_GRACE);
        d.pod.spec.termination_grace_period_seconds = Some(7);
        assert_eq!(
            probe_kill_grace(&d, &c, ProbeKind::Liveness),
            Duration::from_secs(7)
        );
        let mut c = c;
        c.liveness_probe = Some(Probe {
            termination_grace_period_seconds: Some(2),
            ..Probe::default()
        });
        c.startup_probe = Some(Probe::default());
        assert_eq!(
            probe_kill_grace(&d, &c, ProbeKind::Liveness),
            Duration::from_secs(2)
        );
        assert_eq!(
            probe_kill_grace(&d, &c, ProbeKind::Startup),
            Duration::from_secs(7)
        );
        // A negative value (refused by validation) never wraps around.
        d.pod.spec.termination_grace_period_seconds = Some(-1);
        assert_eq!(probe_kill_grace(&d, &c, ProbeKind::Startup), Duration::ZERO);
    }

    #[test]
    fn auth_config_carries_the_credentials() {
        let a = auth_config(&Credentials {
            server: "r:5000".into(),
            username: "u".into(),
            password: "p".into(),
            ..Credentials::default()
        });
        assert_eq!(
            (
                a.server_address.as_str(),
                a.username.as_str(),
                a.password.as_str()
            ),
            ("", "u", "p")
        );
    }
}
