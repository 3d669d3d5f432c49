//! One simulated edge node's identity and the messages it sends, built from
//! the wire spec (`shturman_api::wire`) and signed as the agent signs them:
//! its join request, the online flag, heartbeats, and the report that a pod
//! it was given is Running. Pure: no I/O here (the link is in
//! [`super::fleet`]).

use std::collections::BTreeMap;

use chrono::Utc;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use shturman_api::core::node::NodeRuntimeHandler;
use shturman_api::core::pod_status::{ContainerStateRunning, PodIp};
use shturman_api::core::{
    ContainerState, ContainerStatus, NodeAddress, NodeAddressType, NodeCondition, NodeConditionType,
    NodeStatus, NodeSystemInfo, PodCondition, PodConditionType, PodPhase, PodStatus,
};
use shturman_api::meta::{ConditionStatus, Time};
use shturman_api::quantity::Quantity;
use shturman_api::wire::{
    DesiredPod, Heartbeat, JoinRequest, ONLINE_FALSE, ONLINE_TRUE, PodReport, Signed, Stamp, Usage,
};

const MIB: i64 = 1024 * 1024;

/// A pod a simulated node holds: what its report needs, not the whole pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// `metadata.resourceVersion` as a number (0: none), for `PodSet::covers`.
    pub revision: u64,
    /// `(container name, image)`.
    pub containers: Vec<(String, String)>,
}

impl HeldPod {
    /// What a node keeps of a desired pod; `None` without a uid.
    pub fn of(d: &DesiredPod) -> Option<HeldPod> {
        let m = &d.pod.metadata;
        Some(HeldPod {
            namespace: m.namespace().to_string(),
            name: m.name().to_string(),
            uid: m.uid.clone()?,
            revision: m
                .resource_version
                .as_deref()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            containers: d
                .pod
                .spec
                .containers
                .iter()
                .map(|c| (c.name.clone(), c.image.clone()))
                .collect(),
        })
    }
}

/// One simulated node: its identity and what it reports.
pub struct SimNode {
    pub name: String,
    pub secret: String,
    epoch: u64,
    seq: u64,
    /// Where its first periodic heartbeat falls within the period (0..1).
    pub phase: f64,
    started: Time,
    template: NodeStatus,
    labels: BTreeMap<String, String>,
    ip: String,
}

impl SimNode {
    /// Node `i` of a fleet, named `name`, stamping with `epoch`.
    pub fn new(name: String, i: usize, epoch: u64) -> SimNode {
        let (template, labels) = profile(&name, i);
        let ip = template
            .addresses
            .iter()
            .find(|a| a.type_ == NodeAddressType::InternalIP)
            .map(|a| a.address.clone())
            .unwrap_or_default();
        // The golden ratio spreads any prefix of the fleet evenly over the period.
        #[allow(clippy::cast_precision_loss)]
        let phase = (i as f64 * 0.618_033_988_75).fract();
        SimNode {
            name,
            secret: node_secret(),
            epoch,
            seq: 0,
            phase,
            started: Time(Utc::now()),
            template,
            labels,
            ip,
        }
    }

    fn stamp(&mut self) -> Stamp {
        self.seq += 1;
        Stamp {
            epoch: self.epoch,
            seq: self.seq,
        }
    }

    /// The join request for `token`.
    pub fn join_request(&mut self, token: &str) -> Vec<u8> {
        let req = JoinRequest {
            node: self.name.clone(),
            token: token.to_string(),
            node_secret: self.secret.clone(),
            agent_version: concat!("v", env!("CARGO_PKG_VERSION"), "-sim").into(),
            stamp: self.stamp(),
        };
        serde_json::to_vec(&req).unwrap_or_default()
    }

    /// The signed online flag (the `false` one is the last will).
    pub fn online(&self, online: bool) -> Vec<u8> {
        let body = if online { ONLINE_TRUE } else { ONLINE_FALSE };
        serde_json::to_vec(&seal(&self.secret, body.to_string())).unwrap_or_default()
    }

    /// A signed heartbeat stamped now, saying it runs `pods` pods.
    pub fn heartbeat(&mut self, pods: usize) -> Vec<u8> {
        let now = Time(Utc::now());
        let mut status = self.template.clone();
        for c in &mut status.conditions {
            c.last_heartbeat_time = Some(now);
            c.last_transition_time = Some(self.started);
        }
        let cpu_capacity = status.capacity.get("cpu").map_or(1000, Quantity::milli_value);
        // A plausible, slowly moving usage figure.
        let wobble = i64::try_from(self.seq % 7).unwrap_or(0);
        let hb = Heartbeat {
            node: self.name.clone(),
            stamp: self.stamp(),
            sent_at: Some(now),
            status,
            labels: self.labels.clone(),
            usage: Usage {
                cpu_millis: u64::try_from(cpu_capacity / 10 + wobble * 10).unwrap_or(0),
                memory_bytes: u64::try_from((200 + wobble) * MIB).unwrap_or(0),
                pods: u64::try_from(pods).unwrap_or(0),
            },
            offline_log: Vec::new(),
        };
        let body = serde_json::to_string(&hb).unwrap_or_default();
        serde_json::to_vec(&seal(&self.secret, body)).unwrap_or_default()
    }

    /// A signed report that `pod` runs and is ready, as the agent sends
    /// once its containers started (Wasm pods share the node's IP).
    pub fn running_report(&mut self, pod: &HeldPod) -> Vec<u8> {
        let now = Some(Time(Utc::now()));
        let condition = |type_| PodCondition {
            type_,
            status: ConditionStatus::True,
            last_probe_time: None,
            last_transition_time: now,
            reason: None,
            message: None,
        };
        let status = PodStatus {
            phase: Some(PodPhase::Running),
            conditions: vec![
                condition(PodConditionType::PodScheduled),
                condition(PodConditionType::Initialized),
                condition(PodConditionType::ContainersReady),
                condition(PodConditionType::Ready),
            ],
            host_ip: Some(self.ip.clone()),
            pod_ip: Some(self.ip.clone()),
            pod_ips: vec![PodIp { ip: self.ip.clone() }],
            start_time: now,
            container_statuses: pod
                .containers
                .iter()
                .map(|(name, image)| ContainerStatus {
                    name: name.clone(),
                    state: Some(ContainerState {
                        running: Some(ContainerStateRunning { started_at: now }),
                        ..ContainerState::default()
                    }),
                    ready: true,
                    image: image.clone(),
                    started: Some(true),
                    ..ContainerStatus::default()
                })
                .collect(),
            ..PodStatus::default()
        };
        let report = PodReport {
            node: self.name.clone(),
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid.clone(),
            stamp: self.stamp(),
            status,
        };
        let body = serde_json::to_string(&report).unwrap_or_default();
        serde_json::to_vec(&seal(&self.secret, body)).unwrap_or_default()
    }
}

/// `HMAC-SHA256(key = the secret's text as bytes, body)` as lowercase hex,
/// wrapped with the body: `wire::Signed`.
pub fn seal(secret: &str, body: String) -> Signed {
    let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).map_or_else(
        |_| String::new(),
        |mut m| {
            m.update(body.as_bytes());
            hex(&m.finalize().into_bytes())
        },
    );
    Signed { mac, body }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// 32 random bytes as 64 lowercase hex digits (what the agent generates).
fn node_secret() -> String {
    let mut b = [0u8; 32];
    if getrandom::fill(&mut b).is_err() {
        // No OS randomness: a unique but guessable secret is still a valid
        // secret for a loopback simulation.
        let t = Utc::now().timestamp_nanos_opt().unwrap_or(0).to_le_bytes();
        for (i, x) in b.iter_mut().enumerate() {
            *x = t[i % t.len()] ^ u8::try_from(i).unwrap_or(0);
        }
    }
    hex(&b)
}

/// A plausible edge machine for node `i`: a mix of Raspberry-Pi-like arm
/// boards and small amd64 boxes, with the agent's allocatable rule (100m of
/// CPU and 10% of memory, 64–512 MiB, kept back).
fn profile(name: &str, i: usize) -> (NodeStatus, BTreeMap<String, String>) {
    let (arch, cpus, mem_gib) = match i % 4 {
        0 => ("arm64", 4, 4),
        1 => ("arm", 4, 1),
        2 => ("amd64", 4, 8),
        _ => ("arm64", 4, 8),
    };
    let memory = mem_gib * 1024 * MIB;
    let reserve = (memory / 10).clamp(64 * MIB, 512 * MIB);
    let resources = |cpu_milli: i64, mem: i64| {
        BTreeMap::from([
            ("cpu".to_string(), Quantity::from_milli(cpu_milli)),
            ("memory".to_string(), Quantity::from_bytes(mem)),
            ("pods".to_string(), Quantity::from_value(110)),
        ])
    };
    let octets = u32::try_from(i).unwrap_or(0).to_be_bytes();
    let status = NodeStatus {
        capacity: resources(cpus * 1000, memory),
        allocatable: resources(cpus * 1000 - 100, memory - reserve),
        conditions: vec![NodeCondition {
            type_: NodeConditionType::Ready,
            status: ConditionStatus::True,
            last_heartbeat_time: None,
            last_transition_time: None,
            reason: Some("AgentReady".into()),
            message: Some("shturman-agent is posting ready status".into()),
        }],
        addresses: vec![
            NodeAddress {
                type_: NodeAddressType::InternalIP,
                address: format!("10.{}.{}.{}", octets[1], octets[2], octets[3]),
            },
            NodeAddress {
                type_: NodeAddressType::Hostname,
                address: name.to_string(),
            },
        ],
        node_info: Some(NodeSystemInfo {
            architecture: arch.into(),
            operating_system: "linux".into(),
            kernel_version: "6.6.31-sim".into(),
            os_image: "Debian GNU/Linux 12 (bookworm)".into(),
            machine_id: format!("{:032x}", i + 1),
            boot_id: format!("{:032x}", i + 0x1000),
            container_runtime_version: String::new(),
            kubelet_version: concat!("v", env!("CARGO_PKG_VERSION")).into(),
            agent_version: concat!("v", env!("CARGO_PKG_VERSION")).into(),
        }),
        runtime_handlers: vec![NodeRuntimeHandler {
            name: "wasmtime".into(),
            version: None,
        }],
    };
    let labels = BTreeMap::from([
        ("kubernetes.io/arch".to_string(), arch.to_string()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/hostname".to_string(), name.to_string()),
        ("shturman.io/simulated".to_string(), "true".to_string()),
    ]);
    (status, labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shturman_api::core::{Container, Pod, PodSpec};
    use shturman_api::meta::ObjectMeta;

    #[test]
    fn seal_matches_rfc4231() {
        let s = seal("Jefe", "what do ya want for nothing?".into());
        assert_eq!(
            s.mac,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn heartbeat_is_signed_and_plausible() {
        let mut n = SimNode::new("sim-00003".into(), 3, 7);
        assert_eq!(n.secret.len(), 64);
        let signed: Signed = serde_json::from_slice(&n.heartbeat(2)).unwrap();
        assert_eq!(seal(&n.secret, signed.body.clone()).mac, signed.mac);
        let hb: Heartbeat = serde_json::from_str(&signed.body).unwrap();
        assert_eq!(hb.node, "sim-00003");
        assert_eq!(hb.stamp, Stamp { epoch: 7, seq: 1 });
        assert_eq!(hb.usage.pods, 2);
        assert!(hb.status.is_ready());
        assert!(hb.status.allocatable["cpu"] < hb.status.capacity["cpu"]);
        assert!(hb.status.allocatable["memory"] < hb.status.capacity["memory"]);
        let ready = hb.status.condition(NodeConditionType::Ready).unwrap();
        assert_eq!(ready.last_heartbeat_time, hb.sent_at);
        assert_eq!(hb.labels["kubernetes.io/hostname"], "sim-00003");
        assert_eq!(hb.status.runtime_handlers[0].name, "wasmtime");
        let second: Signed = serde_json::from_slice(&n.heartbeat(2)).unwrap();
        let hb2: Heartbeat = serde_json::from_str(&second.body).unwrap();
        assert!(hb2.stamp > hb.stamp);
    }

    #[test]
    fn a_held_pod_is_reported_running_and_ready() {
        let d = DesiredPod {
            pod: Pod {
                metadata: ObjectMeta {
                    name: Some("web-1".into()),
                    namespace: Some("default".into()),
                    uid: Some("u1".into()),
                    resource_version: Some("42".into()),
                    ..ObjectMeta::default()
                },
                spec: PodSpec {
                    containers: vec![Container {
                        name: "app".into(),
                        image: "ticker.wasm".into(),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                },
                ..Pod::default()
            },
            ..DesiredPod::default()
        };
        let held = HeldPod::of(&d).unwrap();
        assert_eq!((held.revision, held.uid.as_str()), (42, "u1"));
        let mut n = SimNode::new("sim-00001".into(), 1, 1);
        let signed: Signed = serde_json::from_slice(&n.running_report(&held)).unwrap();
        assert_eq!(seal(&n.secret, signed.body.clone()).mac, signed.mac);
        let r: PodReport = serde_json::from_str(&signed.body).unwrap();
        assert_eq!(
            (r.node.as_str(), r.name.as_str(), r.uid.as_str()),
            ("sim-00001", "web-1", "u1")
        );
        assert_eq!(r.status.phase, Some(PodPhase::Running));
        assert!(r.status.is_ready());
        let c = &r.status.container_statuses[0];
        assert!(c.ready && c.state.as_ref().unwrap().running.is_some());
        assert_eq!(r.status.pod_ip.as_deref(), Some("10.0.0.1"));
    }
}
