//! What the node is and has, read with sysinfo, turned into a [`Heartbeat`].
//!
//! - capacity: `cpu` = the CPU count (as millicores), `memory` = total bytes,
//!   `pods` = `--max-pods` (110 by default, as Kubernetes);
//! - allocatable = capacity minus a reserve for the OS and the agent:
//!   100m of CPU, and 10% of memory clamped to 64–512 MiB;
//! - usage: CPU in use (millicores, averaged since the previous heartbeat),
//!   memory in use (bytes), pods admitted;
//! - arch in Kubernetes' names (`amd64`, `arm64`, `arm`) from the binary's
//!   own target, so an armv7 agent on a 64-bit kernel says `arm`;
//! - InternalIP: the first non-loopback, non-link-local interface address
//!   (IPv4 preferred), else 127.0.0.1;
//! - runtime handlers: `wasmtime` always; `containerd` when its socket accepts
//!   a connection.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use shturman_api::core::node::NodeRuntimeHandler;
use shturman_api::core::{
    NodeAddress, NodeAddressType, NodeCondition, NodeConditionType, NodeStatus, NodeSystemInfo,
};
use shturman_api::meta::{ConditionStatus, Time};
use shturman_api::quantity::Quantity;
use shturman_api::wire::{Heartbeat, Stamp, Usage};
use sysinfo::{CpuRefreshKind, MemoryRefreshKind, Networks, RefreshKind, System};

use crate::runtime::{CONTAINERD, WASMTIME};

/// CPU kept back for the OS and the agent, millicores.
pub const CPU_RESERVE_MILLIS: u64 = 100;
const MIB: u64 = 1024 * 1024;
/// The agent's version, reported in `nodeInfo`.
pub const AGENT_VERSION: &str = concat!("v", env!("CARGO_PKG_VERSION"));

/// Kubernetes' (Go's) name for a Rust target architecture.
pub fn kube_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "x86" => "386",
        "riscv64" => "riscv64",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// This binary's architecture, Kubernetes-named.
pub fn arch() -> &'static str {
    kube_arch(std::env::consts::ARCH)
}

/// Allocatable `(cpu millicores, memory bytes)` from capacity.
pub fn allocatable(cpu_millis: u64, memory: u64) -> (u64, u64) {
    let mem_reserve = (memory / 10).clamp(64 * MIB, 512 * MIB).min(memory);
    (
        cpu_millis.saturating_sub(CPU_RESERVE_MILLIS.min(cpu_millis / 2)),
        memory - mem_reserve,
    )
}

/// Reads the machine.
pub struct Facts {
    /// `None` where sysinfo cannot read this system: figures are then zero.
    sys: Option<System>,
    hostname: String,
    internal_ip: String,
    started: Time,
    max_pods: u32,
    info: NodeSystemInfo,
}

impl Facts {
    /// Reads what does not change (system info, addresses) and primes CPU usage.
    pub fn new(started: Time, max_pods: u32, node_ip: Option<std::net::IpAddr>) -> Facts {
        let kind = RefreshKind::nothing()
            .with_cpu(CpuRefreshKind::nothing().with_usage())
            .with_memory(MemoryRefreshKind::nothing().with_ram());
        let sys = System::new_with_specifics(kind)
            .inspect_err(|e| tracing::warn!(error = %e, "sysinfo cannot read this system; reporting zeros"))
            .ok();
        let hostname = System::host_name().unwrap_or_else(|_| "localhost".into());
        let os_image = os_release_pretty_name()
            .or_else(|| System::long_os_version().ok())
            .unwrap_or_default();
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        let info = NodeSystemInfo {
            architecture: arch().to_string(),
            operating_system: std::env::consts::OS.to_string(),
            kernel_version: System::kernel_version().unwrap_or_default(),
            os_image,
            machine_id: read("/etc/machine-id"),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
            container_runtime_version: String::new(),
            kubelet_version: AGENT_VERSION.to_string(),
            agent_version: AGENT_VERSION.to_string(),
        };
        Facts {
            sys,
            hostname,
            internal_ip: node_ip.map_or_else(internal_ip, |ip| ip.to_string()),
            started,
            max_pods,
            info,
        }
    }

    /// The node's InternalIP.
    pub fn internal_ip(&self) -> &str {
        &self.internal_ip
    }

    /// A heartbeat with fresh figures.
    pub fn heartbeat(&mut self, hb: HeartbeatInput, now: Time) -> Heartbeat {
        let (cpus, memory, used, busy) = match &mut self.sys {
            Some(sys) => {
                sys.refresh_cpu_usage();
                sys.refresh_memory();
                let busy = f64::from(sys.global_cpu_usage().clamp(0.0, 100.0)) / 100.0;
                (sys.cpus().len(), sys.total_memory(), sys.used_memory(), busy)
            }
            None => (0, 0, 0, 0.0),
        };
        let cpus = if cpus == 0 {
            std::thread::available_parallelism().map_or(1, usize::from)
        } else {
            cpus
        };
        let cpu_capacity = u64::try_from(cpus).unwrap_or(1).saturating_mul(1000);
        let (cpu_alloc, mem_alloc) = allocatable(cpu_capacity, memory);
        let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let resources = |cpu: u64, mem: u64| {
            BTreeMap::from([
                ("cpu".to_string(), Quantity::from_milli(to_i64(cpu))),
                ("memory".to_string(), Quantity::from_bytes(to_i64(mem))),
                ("pods".to_string(), Quantity::from_value(i64::from(self.max_pods))),
            ])
        };
        let mut handlers = vec![NodeRuntimeHandler {
            name: WASMTIME.into(),
            version: None,
        }];
        if hb.containerd {
            handlers.push(NodeRuntimeHandler {
                name: CONTAINERD.into(),
                version: None,
            });
        }
        let mut labels = hb.labels;
        labels.insert("kubernetes.io/arch".into(), self.info.architecture.clone());
        labels.insert("kubernetes.io/os".into(), self.info.operating_system.clone());
        labels.insert("kubernetes.io/hostname".into(), hb.node.clone());
        Heartbeat {
            node: hb.node,
            stamp: hb.stamp,
            sent_at: Some(now),
            status: NodeStatus {
                capacity: resources(cpu_capacity, memory),
                allocatable: resources(cpu_alloc, mem_alloc),
                conditions: vec![NodeCondition {
                    type_: NodeConditionType::Ready,
                    status: ConditionStatus::True,
                    last_heartbeat_time: Some(now),
                    last_transition_time: Some(self.started),
                    reason: Some("AgentReady".into()),
                    message: Some("shturman-agent is posting ready status".into()),
                }],
                addresses: vec![
                    NodeAddress {
                        type_: NodeAddressType::InternalIP,
                        address: self.internal_ip.clone(),
                    },
                    NodeAddress {
                        type_: NodeAddressType::Hostname,
                        address: self.hostname.clone(),
                    },
                ],
                // The runtimes offered, for `get nodes -o wide`'s CONTAINER-RUNTIME.
                node_info: Some(NodeSystemInfo {
                    container_runtime_version: handlers
                        .iter()
                        .map(|h| h.name.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                    ..self.info.clone()
                }),
                runtime_handlers: handlers,
            },
            labels,
            usage: Usage {
                cpu_millis: millis_in_use(busy, cpu_capacity),
                memory_bytes: used,
                pods: hb.pods,
            },
            offline_log: hb.offline_log,
        }
    }
}

/// What a heartbeat needs from the rest of the agent.
#[derive(Clone, Debug, Default)]
pub struct HeartbeatInput {
    pub node: String,
    pub stamp: Stamp,
    pub labels: BTreeMap<String, String>,
    pub pods: u64,
    pub containerd: bool,
    pub offline_log: Vec<String>,
}

/// `busy` (0..=1) of `capacity` millicores.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn millis_in_use(busy: f64, capacity: u64) -> u64 {
    // Exact enough: capacity is a few hundred thousand at most.
    let cap = u32::try_from(capacity).unwrap_or(u32::MAX);
    (busy * f64::from(cap)).round().clamp(0.0, f64::from(cap)) as u64
}

/// `PRETTY_NAME` from /etc/os-release (what Kubernetes shows as OS-IMAGE).
fn os_release_pretty_name() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim().trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
}

/// The first usable non-loopback address, IPv4 preferred; else 127.0.0.1.
pub fn internal_ip() -> String {
    let Ok(nets) = Networks::new_with_refreshed_list() else {
        return "127.0.0.1".into();
    };
    let mut names: Vec<_> = nets.keys().collect();
    names.sort();
    let candidates: Vec<IpAddr> = names
        .into_iter()
        .flat_map(|n| nets[n].ip_networks().iter().map(|ip| ip.addr))
        .filter(|a| !a.is_loopback() && !a.is_unspecified() && !is_link_local(a))
        .collect();
    candidates
        .iter()
        .find(|a| a.is_ipv4())
        .or(candidates.first())
        .map_or_else(|| "127.0.0.1".into(), ToString::to_string)
}

fn is_link_local(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => v.is_link_local(),
        IpAddr::V6(v) => (v.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// Whether containerd's socket exists and accepts a connection.
pub async fn containerd_answers(socket: Option<&Path>) -> bool {
    let Some(path) = socket else { return false };
    if !path.exists() {
        return false;
    }
    #[cfg(unix)]
    {
        matches!(
            tokio::time::timeout(Duration::from_secs(1), tokio::net::UnixStream::connect(path)).await,
            Ok(Ok(_))
        )
    }
    #[cfg(not(unix))]
    {
        let _ = Duration::ZERO;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_names_are_kubernetes_names() {
        assert_eq!(kube_arch("x86_64"), "amd64");
        assert_eq!(kube_arch("aarch64"), "arm64");
        assert_eq!(kube_arch("arm"), "arm");
        assert!(["amd64", "arm64", "arm"].contains(&arch()), "{}", arch());
    }

    #[test]
    fn reserve_is_small_and_bounded() {
        assert_eq!(
            allocatable(4000, 16 * 1024 * MIB),
            (3900, 16 * 1024 * MIB - 512 * MIB)
        );
        assert_eq!(allocatable(1000, 1024 * MIB), (900, 1024 * MIB - 1024 * MIB / 10));
        assert_eq!(allocatable(1000, 100 * MIB).1, 36 * MIB);
        assert_eq!(allocatable(100, 10 * MIB), (50, 0));
    }

    #[test]
    fn heartbeat_has_real_figures() {
        let mut f = Facts::new(Time(chrono::Utc::now()), 110, None);
        let hb = f.heartbeat(
            HeartbeatInput {
                node: "pi-1".into(),
                stamp: Stamp { epoch: 1, seq: 1 },
                labels: BTreeMap::from([("zone".into(), "a".into())]),
                pods: 2,
                containerd: false,
                offline_log: vec![],
            },
            Time(chrono::Utc::now()),
        );
        let cap = &hb.status.capacity;
        assert!(cap["cpu"].milli_value() >= 1000, "{cap:?}");
        assert!(cap["memory"].value() > 0, "{cap:?}");
        assert_eq!(cap["pods"].value(), 110);
        assert!(hb.status.allocatable["cpu"] < cap["cpu"]);
        assert!(hb.status.allocatable["memory"] < cap["memory"]);
        assert!(hb.usage.memory_bytes > 0);
        assert_eq!(hb.usage.pods, 2);
        assert!(hb.status.is_ready());
        assert_eq!(hb.labels["kubernetes.io/hostname"], "pi-1");
        assert_eq!(hb.labels["kubernetes.io/arch"], arch());
        assert_eq!(hb.labels["zone"], "a");
        let info = hb.status.node_info.as_ref().unwrap();
        assert_eq!(info.operating_system, "linux");
        assert!(!info.kernel_version.is_empty());
        assert_eq!(hb.status.runtime_handlers.len(), 1);
        assert_eq!(
            hb.status
                .node_info
                .as_ref()
                .map(|i| i.container_runtime_version.as_str()),
            Some("wasmtime")
        );
        assert_eq!(hb.status.addresses[0].type_, NodeAddressType::InternalIP);
        assert!(hb.status.addresses[0].address.parse::<IpAddr>().is_ok());
    }

    #[tokio::test]
    async fn containerd_probe() {
        assert!(!containerd_answers(None).await);
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("containerd.sock");
        assert!(!containerd_answers(Some(&sock)).await);
        let _l = tokio::net::UnixListener::bind(&sock).unwrap();
        assert!(containerd_answers(Some(&sock)).await);
    }
}
