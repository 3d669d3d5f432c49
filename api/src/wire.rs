//! The MQTT protocol between the control plane and edge agents: topic names
//! and JSON messages, versioned by the topic prefix `shturman/v1/`.
//!
//! Level-triggered and retained where it matters: a node's desired pods are
//! retained one topic per pod, so an agent that reconnects after an hour
//! receives exactly its current set. Messages carry an ordering stamp
//! ([`Stamp`]) so a QoS 1 duplicate or a late message is recognised and
//! ignored.
//!
//! | topic (under `shturman/v1/`) | direction | retained | payload |
//! |---|---|---|---|
//! | `nodes/{node}/status` | agent → cp | yes | [`Heartbeat`] |
//! | `nodes/{node}/online` | agent → cp | yes | `true` / `false` (the last will) |
//! | `nodes/{node}/podset` | cp → agent | yes (QoS 1) | [`PodSet`]: the node's complete desired set |
//! | `nodes/{node}/pods/{ns}/{name}` | cp → agent | yes | [`DesiredPod`]; empty deletes |
//! | `nodes/{node}/podstatus/{ns}/{name}` | agent → cp | no (QoS 1) | [`PodReport`] |
//! | `nodes/{node}/join` | agent → cp | no (QoS 1) | [`JoinRequest`] |
//! | `nodes/{node}/joined` | cp → agent | no (QoS 1) | [`JoinResult`] |
//! | `nodes/{node}/logs/request` | cp → agent | no (QoS 1) | [`LogRequest`] |
//! | `nodes/{node}/logs/cancel/{id}` | cp → agent | no (QoS 1) | empty (the id is in the topic) |
//! | `nodes/{node}/logs/reply/{id}` | agent → cp | no (QoS 1) | [`Signed`] [`LogChunk`] |
//! | `nodes/{node}/proxy-stats` | agent → cp | no (QoS 1) | [`Signed`] [`ProxyStats`] |
//! | `serviceset` | cp → every agent | yes (QoS 1) | [`ServiceSet`]: every Service's key |
//! | `services/{ns}/{name}` | cp → every agent | yes (QoS 1) | [`ServiceRoute`]; empty deletes |
//!
//! Service topics are not per node ([`ServiceTopic`]): every agent's proxy
//! serves every Service, so each agent subscribes to [`services_filters`].
//!
//! Joining: an agent connects with MQTT username = its node name and
//! password = a join token (`shturman token create`) or, once joined, its
//! own node secret. The embedded broker checks these at CONNECT (and
//! refuses by closing the link without a CONNACK: an agent reads a link
//! closed right after CONNECT as "credentials refused"). The agent
//! subscribes to its `joined` topic, then sends a [`JoinRequest`] carrying the token and a node secret it
//! generated and keeps on disk; the control plane checks the token again
//! (an external broker may not), registers the Node, remembers the secret
//! and answers with a [`JoinResult`]. Every later agent → control plane
//! message is wrapped in a [`Signed`] envelope whose MAC is keyed by that
//! node secret, so one node cannot speak as another even on a broker
//! without per-node ACLs. No secret ever travels from the control plane to
//! the node.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::core::{ConfigMap, NodeStatus, Pod, PodStatus, Protocol, Secret, ServiceType, SessionAffinity};
use crate::intstr::IntOrString;
use crate::meta::Time;

/// Every topic starts with this; a new incompatible protocol gets `v2`.
pub const PREFIX: &str = "shturman/v1";

/// The largest MQTT packet either side sends or accepts (4 MiB: a pod with
/// its ConfigMaps and Secrets). The embedded broker drops a connection that
/// sends more, and rumqttc's default (10 KiB) is far too small: set both
/// limits with `MqttOptions::set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES)`.
pub const MAX_PACKET_BYTES: usize = 4 * 1024 * 1024;

/// The body of a [`Signed`] message on `nodes/{node}/online`: JSON `true`
/// when the agent connects; the last will the agent registers at CONNECT
/// carries a [`Signed`] `false`, which the broker publishes when the link
/// dies.
pub const ONLINE_TRUE: &str = "true";
/// See [`ONLINE_TRUE`].
pub const ONLINE_FALSE: &str = "false";

/// An ordering stamp: `epoch` grows with every agent start (kept on the
/// node's disk), `seq` within one run. Compared as a pair.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    pub epoch: u64,
    pub seq: u64,
}

/// What an agent says about its node, every heartbeat period.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    pub node: String,
    pub stamp: Stamp,
    /// When the agent sent it (its clock).
    pub sent_at: Option<Time>,
    /// Capacity, allocatable, conditions (Ready with `lastHeartbeatTime`),
    /// addresses, system info, runtime handlers.
    pub status: NodeStatus,
    /// Labels the node asks for (`--labels`, arch, os, hostname).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// What the node uses right now.
    #[serde(default)]
    pub usage: Usage,
    /// While the link was down: what happened (restarts, exits), in words.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offline_log: Vec<String>,
}

/// A node's current usage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub pods: u64,
}

/// A pod the node must run, with the ConfigMaps and Secrets it refers to, so
/// the node can start it without asking anyone.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredPod {
    pub pod: Pod,
    #[serde(default)]
    pub config_maps: Vec<ConfigMap>,
    #[serde(default)]
    pub secrets: Vec<Secret>,
}

/// The complete set of pods a node must run, retained on
/// `nodes/{node}/podset`: the level-triggered answer to "which of my pods
/// were deleted while I was away?" even after the broker lost every retained
/// message and session. An agent drops each pod it holds that is not in the
/// set (by uid), provided the set is at least as new as the pod it holds
/// ([`PodSet::covers`]); it waits for the `pods/…` message of each pod in
/// the set it does not hold yet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSet {
    /// The control plane's store revision the set was computed at (or
    /// later): every pod change up to it is reflected. Compared with a held
    /// pod's `metadata.resourceVersion`, so a set that was computed before a
    /// pod was created (and arrives late, or was retained before it) never
    /// removes that pod. 0: unknown (covers only pods without a version).
    #[serde(default)]
    pub revision: u64,
    /// The pods, sorted by namespace and name.
    #[serde(default)]
    pub pods: Vec<PodRef>,
}

/// One pod of a [`PodSet`].
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl PodSet {
    /// Whether the set holds the pod `namespace/name` with this `uid`.
    pub fn contains(&self, namespace: &str, name: &str, uid: &str) -> bool {
        self.pods
            .iter()
            .any(|p| p.namespace == namespace && p.name == name && p.uid == uid)
    }

    /// Whether the set is authoritative about a pod at `resource_version`:
    /// it was computed at or after that version. An unparsable or missing
    /// version counts as 0 (covered by any set).
    pub fn covers(&self, resource_version: Option<&str>) -> bool {
        resource_version.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) <= self.revision
    }
}

/// A Service as an agent's proxy needs it, retained on
/// `services/{namespace}/{name}` (an empty payload withdraws it: the Service
/// was deleted): its address and ports, and every known backend with the
/// port it serves for each Service port. Built by the control plane from
/// the Service and its Endpoints; sent again whenever either changes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRoute {
    pub namespace: String,
    pub name: String,
    /// The Service's uid: a route of a deleted and re-created Service has
    /// another one.
    pub uid: String,
    /// The Service's `resourceVersion`, compared with
    /// [`ServiceSet::revision`] ([`ServiceSet::covers`]).
    pub revision: u64,
    /// The `resourceVersion` of the Endpoints the backends come from (0:
    /// none yet). Informative: a route is always sent whole.
    #[serde(default)]
    pub endpoints_revision: u64,
    #[serde(rename = "type")]
    pub type_: ServiceType,
    /// The address to accept on; `None` for a headless Service (nothing to
    /// proxy: its backends are reached by their own addresses).
    #[serde(default, rename = "clusterIP", skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<String>,
    pub session_affinity: SessionAffinity,
    /// With `ClientIP` affinity: how long a client sticks to its backend
    /// without traffic, in seconds.
    #[serde(
        default,
        rename = "clientIPTimeoutSeconds",
        skip_serializing_if = "Option::is_none"
    )]
    pub client_ip_timeout_seconds: Option<i32>,
    pub ports: Vec<RoutePort>,
    /// Every backend, ready or not, sorted by IP then pod.
    #[serde(default)]
    pub endpoints: Vec<RouteEndpoint>,
}

/// One port of a [`ServiceRoute`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoutePort {
    /// The Service port's name (`""` for a single unnamed port): the key of
    /// [`RouteEndpoint::ports`].
    #[serde(default)]
    pub name: String,
    pub protocol: Protocol,
    /// Accepted on the cluster IP.
    pub port: i32,
    /// Accepted on every node address (`type: NodePort`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<i32>,
    /// The Service's `targetPort` as written (a number or a container port
    /// name); the backends' resolved ports are in [`RouteEndpoint::ports`].
    pub target_port: IntOrString,
}

/// One backend of a [`ServiceRoute`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteEndpoint {
    pub ip: String,
    /// The node it runs on, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The pod it is, when it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Ready to take new connections. A backend that is not ready (or no
    /// longer listed) gets no new connections; established ones drain.
    pub ready: bool,
    /// Service port name → the port this backend serves it on. A port the
    /// backend lacks (a named `targetPort` its pod does not declare) is
    /// absent.
    #[serde(default)]
    pub ports: BTreeMap<String, i32>,
}

impl ServiceRoute {
    /// The ready backends of Service port `port_name`: `(ip, port)`, in
    /// endpoint order.
    pub fn backends<'a>(&'a self, port_name: &'a str) -> impl Iterator<Item = (&'a str, i32)> + 'a {
        self.endpoints
            .iter()
            .filter(|e| e.ready)
            .filter_map(move |e| e.ports.get(port_name).map(|p| (e.ip.as_str(), *p)))
    }
}

/// Every Service's key, retained on `serviceset`: the level-triggered answer
/// to "which Services were deleted while I was away?" even after the broker
/// lost the withdrawals. An agent drops each route it holds that the set
/// does not list (by uid), provided the set covers it ([`ServiceSet::covers`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSet {
    /// The control plane's store revision of Services the set was computed
    /// at (or later); compared with [`ServiceRoute::revision`].
    #[serde(default)]
    pub revision: u64,
    /// The Services, sorted by namespace and name.
    #[serde(default)]
    pub services: Vec<ServiceRef>,
}

/// One Service of a [`ServiceSet`].
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl ServiceSet {
    /// Whether the set holds the Service `namespace/name` with this `uid`.
    pub fn contains(&self, namespace: &str, name: &str, uid: &str) -> bool {
        self.services
            .iter()
            .any(|s| s.namespace == namespace && s.name == name && s.uid == uid)
    }

    /// Whether the set is authoritative about a route of `revision`
    /// ([`ServiceRoute::revision`]): it was computed at or after it.
    pub fn covers(&self, revision: u64) -> bool {
        revision <= self.revision
    }
}

/// The topics every agent hears about Services (not per node).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceTopic {
    /// `services/{namespace}/{name}`: a [`ServiceRoute`], empty = withdrawn.
    Route { namespace: String, name: String },
    /// `serviceset`: the [`ServiceSet`].
    Set,
}

impl ServiceTopic {
    /// The topic's name.
    pub fn name(&self) -> String {
        match self {
            ServiceTopic::Route { namespace, name } => format!("{PREFIX}/services/{namespace}/{name}"),
            ServiceTopic::Set => format!("{PREFIX}/serviceset"),
        }
    }

    /// Parses a topic name; `None` for anything else.
    pub fn parse(topic: &str) -> Option<ServiceTopic> {
        let rest = topic.strip_prefix(PREFIX)?.strip_prefix('/')?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            ["serviceset"] => Some(ServiceTopic::Set),
            ["services", ns, name] if valid_segment(ns) && valid_segment(name) => Some(ServiceTopic::Route {
                namespace: (*ns).to_string(),
                name: (*name).to_string(),
            }),
            _ => None,
        }
    }
}

/// Filters for the Service routes and set every agent hears (the set first).
pub fn services_filters() -> [String; 2] {
    [format!("{PREFIX}/serviceset"), format!("{PREFIX}/services/+/+")]
}

/// What an agent's Service proxy counted, sent on `nodes/{node}/proxy-stats`
/// every heartbeat period while it serves any Service port (and once more,
/// empty, after its last one went). Counters run from the agent's start
/// (`stamp.epoch`): a new epoch starts them again from zero, which
/// Prometheus reads as a counter reset.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyStats {
    pub node: String,
    pub stamp: Stamp,
    /// One entry per Service port the proxy serves, sorted by namespace,
    /// name and port.
    #[serde(default)]
    pub ports: Vec<ProxyPortStats>,
}

/// The counters of one Service port in a [`ProxyStats`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyPortStats {
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// The Service port's number ([`RoutePort::port`]).
    pub port: i32,
    /// Connections accepted (on the cluster IP or a node port).
    #[serde(default)]
    pub accepted: u64,
    /// Connections open right now.
    #[serde(default)]
    pub active: u64,
    /// Connections closed because no backend could be reached.
    #[serde(default)]
    pub failed: u64,
    /// Bytes from clients to backends.
    #[serde(default)]
    pub bytes_in: u64,
    /// Bytes from backends to clients.
    #[serde(default)]
    pub bytes_out: u64,
}

/// Filter for every node's proxy counters (the control plane).
pub fn proxy_stats_filter() -> String {
    format!("{PREFIX}/nodes/+/proxy-stats")
}

/// An agent's report of one pod's state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodReport {
    pub node: String,
    pub namespace: String,
    pub name: String,
    /// The pod's uid: a report about an older pod of the same name is ignored.
    pub uid: String,
    pub stamp: Stamp,
    pub status: PodStatus,
}

/// An agent asks to join (or re-join) the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinRequest {
    pub node: String,
    /// The join token (`id.secret`); empty when re-joining with a known secret.
    #[serde(default)]
    pub token: String,
    /// The secret the node generated for itself: 64 or more lowercase hex
    /// digits (32 random bytes or more).
    pub node_secret: String,
    pub agent_version: String,
    pub stamp: Stamp,
}

/// The control plane's answer to a [`JoinRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinResult {
    pub accepted: bool,
    /// Why not, in words a person can act on.
    #[serde(default)]
    pub message: String,
}

/// An agent → control plane message with its MAC: `mac` is the lowercase
/// hex HMAC-SHA256 of `body` (the inner message's JSON text, exactly as
/// sent) keyed by the node secret's text as bytes (the same string as
/// [`JoinRequest::node_secret`], not hex-decoded). Used on `status`
/// ([`Heartbeat`]), `podstatus` ([`PodReport`]) and `online`
/// ([`ONLINE_TRUE`] / [`ONLINE_FALSE`]); anything unsigned or wrongly
/// signed there is dropped by the control plane.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Signed {
    pub mac: String,
    pub body: String,
}

/// Most bytes of log text in one [`LogChunk`] (well below
/// [`MAX_PACKET_BYTES`], so a chunk with its envelope always fits, and small
/// enough that a slow board does not hold a large buffer per stream).
pub const LOG_CHUNK_BYTES: usize = 64 * 1024;

/// Log requests one node serves at once; the control plane asks no more of
/// it, and an agent refuses (with [`LogFailureReason::TooManyRequests`])
/// any beyond.
pub const LOG_REQUESTS_PER_NODE: usize = 8;

/// How long a follow stream may run before the agent ends it (the client
/// reconnects if it still wants more): bounds the cost of a control plane
/// that restarted and never sent a cancel.
pub const LOG_FOLLOW_MAX: Duration = Duration::from_secs(3600);

/// First pause between an agent's MQTT connection attempts; it doubles up
/// to [`RECONNECT_MAX`] and goes back to this once connected. (The fleet
/// simulator reconnects the same way.)
pub const RECONNECT_MIN: Duration = Duration::from_millis(250);
/// Largest pause between connection attempts.
pub const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// `d` plus up to a quarter of it, by `r` (a uniformly random number), so a
/// fleet cut off at once does not reconnect in step.
#[must_use]
pub fn jittered(d: Duration, r: u32) -> Duration {
    d + d.mul_f64(0.25 * f64::from(r) / f64::from(u32::MAX))
}

/// The control plane asks a node for a container's log
/// (`nodes/{node}/logs/request`). Answered by [`LogChunk`]s on
/// `nodes/{node}/logs/reply/{id}`; a follow stream runs until
/// `nodes/{node}/logs/cancel/{id}` or [`LOG_FOLLOW_MAX`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogRequest {
    /// Names the reply and cancel topics: one topic segment (see
    /// [`valid_segment`]), unique per request.
    pub id: String,
    pub namespace: String,
    pub name: String,
    /// The pod's uid: a node holding another pod of that name refuses.
    pub uid: String,
    /// Always named: the control plane resolves the default.
    pub container: String,
    /// Only the last lines (`tailLines`); all kept lines when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail_lines: Option<u64>,
    /// The previous run of the container instead of the current one.
    #[serde(default)]
    pub previous: bool,
    /// Keep streaming new lines.
    #[serde(default)]
    pub follow: bool,
}

/// One piece of an answer to a [`LogRequest`]. Chunks are numbered from 0;
/// the receiver orders them by `seq` and drops duplicates (QoS 1). The first
/// chunk comes at once, even when empty, so the control plane knows the node
/// is serving; the last has `end` (and `error` when the request failed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogChunk {
    pub id: String,
    pub seq: u64,
    /// Whole lines, each ending in `\n`, at most [`LOG_CHUNK_BYTES`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub data: String,
    #[serde(default)]
    pub end: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<LogFailure>,
}

/// Why a node could not serve a [`LogRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogFailure {
    pub reason: LogFailureReason,
    /// In words a person can act on (shown as the API error's message).
    pub message: String,
}

/// The kind of a [`LogFailure`], mapped to an HTTP status by the API server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogFailureReason {
    /// The node does not run that pod (or that uid).
    NotFound,
    /// No such container, no previous run, nothing started yet.
    BadRequest,
    /// The node already serves [`LOG_REQUESTS_PER_NODE`] requests.
    TooManyRequests,
    /// The node could not read or send the log.
    Internal,
}

/// Splits `lines` (without their newlines) into chunk bodies of whole lines,
/// each at most `max` bytes; a longer line is cut at a char boundary.
pub fn pack_lines<'a>(lines: impl IntoIterator<Item = &'a str>, max: usize) -> Vec<String> {
    let max = max.max(8);
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in lines {
        let mut rest = line;
        loop {
            // Room for the line and its newline?
            if cur.len() + rest.len() < max {
                cur.push_str(rest);
                cur.push('\n');
                break;
            }
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            let mut cut = max - 1;
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            let (head, tail) = rest.split_at(cut);
            cur.push_str(head);
            cur.push('\n');
            out.push(std::mem::take(&mut cur));
            rest = tail;
            if rest.is_empty() {
                break;
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A topic, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Topic {
    NodeStatus {
        node: String,
    },
    NodeOnline {
        node: String,
    },
    PodSet {
        node: String,
    },
    DesiredPod {
        node: String,
        namespace: String,
        name: String,
    },
    PodStatus {
        node: String,
        namespace: String,
        name: String,
    },
    Join {
        node: String,
    },
    Joined {
        node: String,
    },
    LogRequest {
        node: String,
    },
    LogCancel {
        node: String,
        id: String,
    },
    LogReply {
        node: String,
        id: String,
    },
    ProxyStats {
        node: String,
    },
}

impl Topic {
    /// The topic's name.
    pub fn name(&self) -> String {
        match self {
            Topic::NodeStatus { node } => format!("{PREFIX}/nodes/{node}/status"),
            Topic::NodeOnline { node } => format!("{PREFIX}/nodes/{node}/online"),
            Topic::PodSet { node } => format!("{PREFIX}/nodes/{node}/podset"),
            Topic::DesiredPod {
                node,
                namespace,
                name,
            } => {
                format!("{PREFIX}/nodes/{node}/pods/{namespace}/{name}")
            }
            Topic::PodStatus {
                node,
                namespace,
                name,
            } => {
                format!("{PREFIX}/nodes/{node}/podstatus/{namespace}/{name}")
            }
            Topic::Join { node } => format!("{PREFIX}/nodes/{node}/join"),
            Topic::Joined { node } => format!("{PREFIX}/nodes/{node}/joined"),
            Topic::LogRequest { node } => format!("{PREFIX}/nodes/{node}/logs/request"),
            Topic::LogCancel { node, id } => format!("{PREFIX}/nodes/{node}/logs/cancel/{id}"),
            Topic::LogReply { node, id } => format!("{PREFIX}/nodes/{node}/logs/reply/{id}"),
            Topic::ProxyStats { node } => format!("{PREFIX}/nodes/{node}/proxy-stats"),
        }
    }

    /// Parses a topic name; `None` for anything not ours.
    pub fn parse(topic: &str) -> Option<Topic> {
        let rest = topic.strip_prefix(PREFIX)?.strip_prefix('/')?;
        let parts: Vec<&str> = rest.split('/').collect();
        let s = |x: &str| x.to_string();
        match parts.as_slice() {
            ["nodes", node, "status"] => Some(Topic::NodeStatus { node: s(node) }),
            ["nodes", node, "online"] => Some(Topic::NodeOnline { node: s(node) }),
            ["nodes", node, "join"] => Some(Topic::Join { node: s(node) }),
            ["nodes", node, "joined"] => Some(Topic::Joined { node: s(node) }),
            ["nodes", node, "podset"] => Some(Topic::PodSet { node: s(node) }),
            ["nodes", node, "pods", ns, name] => Some(Topic::DesiredPod {
                node: s(node),
                namespace: s(ns),
                name: s(name),
            }),
            ["nodes", node, "podstatus", ns, name] => Some(Topic::PodStatus {
                node: s(node),
                namespace: s(ns),
                name: s(name),
            }),
            ["nodes", node, "logs", "request"] => Some(Topic::LogRequest { node: s(node) }),
            ["nodes", node, "proxy-stats"] => Some(Topic::ProxyStats { node: s(node) }),
            ["nodes", node, "logs", "cancel", id] if valid_segment(id) => Some(Topic::LogCancel {
                node: s(node),
                id: s(id),
            }),
            ["nodes", node, "logs", "reply", id] if valid_segment(id) => Some(Topic::LogReply {
                node: s(node),
                id: s(id),
            }),
            _ => None,
        }
        .filter(|t| t.node_name().is_some_and(valid_segment))
    }

    /// The node a topic belongs to.
    pub fn node_name(&self) -> Option<&str> {
        match self {
            Topic::NodeStatus { node }
            | Topic::NodeOnline { node }
            | Topic::Join { node }
            | Topic::Joined { node }
            | Topic::PodSet { node }
            | Topic::DesiredPod { node, .. }
            | Topic::PodStatus { node, .. }
            | Topic::LogRequest { node }
            | Topic::LogCancel { node, .. }
            | Topic::LogReply { node, .. }
            | Topic::ProxyStats { node } => Some(node),
        }
    }
}

/// Whether a name can stand in a topic (no wildcards, separators or empties).
pub fn valid_segment(s: &str) -> bool {
    !s.is_empty() && !s.contains(['/', '+', '#', '\0'])
}

/// Filter for everything the control plane hears from agents.
pub fn agents_filter() -> [String; 4] {
    [
        format!("{PREFIX}/nodes/+/join"),
        format!("{PREFIX}/nodes/+/status"),
        format!("{PREFIX}/nodes/+/online"),
        format!("{PREFIX}/nodes/+/podstatus/+/+"),
    ]
}

/// Filter for every node's log replies (the control plane).
pub fn log_replies_filter() -> String {
    format!("{PREFIX}/nodes/+/logs/reply/+")
}

/// Filters for the log requests and cancels one node's agent must hear.
pub fn node_log_filters(node: &str) -> [String; 2] {
    [
        format!("{PREFIX}/nodes/{node}/logs/request"),
        format!("{PREFIX}/nodes/{node}/logs/cancel/+"),
    ]
}

/// Filters for everything one node's agent must hear (the pod set first).
pub fn node_filters(node: &str) -> [String; 3] {
    [
        format!("{PREFIX}/nodes/{node}/podset"),
        format!("{PREFIX}/nodes/{node}/pods/+/+"),
        format!("{PREFIX}/nodes/{node}/joined"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_adds_at_most_a_quarter() {
        let d = Duration::from_secs(4);
        assert_eq!(jittered(d, 0), d);
        assert_eq!(jittered(d, u32::MAX), Duration::from_secs(5));
        for r in [1, u32::MAX / 3, u32::MAX / 2, u32::MAX - 1] {
            let j = jittered(d, r);
            assert!(j >= d && j <= Duration::from_secs(5), "{j:?}");
        }
    }

    #[test]
    fn topics_round_trip() {
        let all = [
            Topic::NodeStatus { node: "pi-1".into() },
            Topic::NodeOnline { node: "pi-1".into() },
            Topic::Join { node: "pi-1".into() },
            Topic::Joined { node: "pi-1".into() },
            Topic::PodSet { node: "pi-1".into() },
            Topic::DesiredPod {
                node: "pi-1".into(),
                namespace: "default".into(),
                name: "web-x".into(),
            },
            Topic::PodStatus {
                node: "pi-1".into(),
                namespace: "default".into(),
                name: "web-x".into(),
            },
            Topic::LogRequest { node: "pi-1".into() },
            Topic::LogCancel {
                node: "pi-1".into(),
                id: "r1".into(),
            },
            Topic::LogReply {
                node: "pi-1".into(),
                id: "r1".into(),
            },
            Topic::ProxyStats { node: "pi-1".into() },
        ];
        for t in all {
            assert_eq!(Topic::parse(&t.name()), Some(t.clone()), "{}", t.name());
        }
        assert_eq!(Topic::parse("shturman/v2/nodes/a/status"), None);
        assert_eq!(Topic::parse("shturman/v1/nodes/+/status"), None);
        assert_eq!(Topic::parse("shturman/v1/nodes//status"), None);
        assert_eq!(Topic::parse("shturman/v1/nodes/a/b/c/d/e/f"), None);
        assert_eq!(Topic::parse("shturman/v1/nodes/a/logs/reply/+"), None);
        assert_eq!(Topic::parse("shturman/v1/nodes/a/logs/cancel/"), None);
    }

    #[test]
    fn log_messages_are_camel_case_and_lenient() {
        let req = LogRequest {
            id: "r1".into(),
            namespace: "default".into(),
            name: "web".into(),
            uid: "u1".into(),
            container: "app".into(),
            tail_lines: Some(2),
            previous: false,
            follow: true,
        };
        let v = serde_json::to_value(&req).unwrap();
        assert_eq!(v["tailLines"], 2);
        assert_eq!(serde_json::from_value::<LogRequest>(v).unwrap(), req);
        let c: LogChunk = serde_json::from_str(r#"{"id":"r1","seq":3}"#).unwrap();
        assert_eq!((c.seq, c.end, c.data.as_str(), c.error), (3, false, "", None));
        let failed = LogChunk {
            id: "r1".into(),
            seq: 0,
            end: true,
            error: Some(LogFailure {
                reason: LogFailureReason::BadRequest,
                message: "no".into(),
            }),
            ..LogChunk::default()
        };
        let v = serde_json::to_value(&failed).unwrap();
        assert_eq!(v["error"]["reason"], "BadRequest");
        assert!(v.get("data").is_none());
    }

    #[test]
    fn lines_pack_into_bounded_chunks() {
        assert!(pack_lines(Vec::<&str>::new(), 16).is_empty());
        assert_eq!(pack_lines(["a", "b"], 16), ["a\nb\n"]);
        let packed = pack_lines(["aaaa", "bbbb", "cccc"], 10);
        assert_eq!(packed, ["aaaa\nbbbb\n", "cccc\n"]);
        // A line longer than a chunk is cut; every chunk stays within bounds.
        let long = "x".repeat(25);
        let packed = pack_lines([long.as_str(), "y"], 10);
        assert!(packed.iter().all(|c| c.len() <= 10), "{packed:?}");
        assert_eq!(packed.concat().replace('\n', ""), format!("{long}y"));
        // Multi-byte characters are never split.
        let wide = "é".repeat(10);
        let packed = pack_lines([wide.as_str()], 8);
        assert!(packed.iter().all(|c| c.len() <= 8));
        assert_eq!(packed.concat().replace('\n', ""), wide);
    }

    #[test]
    fn pod_sets_contain_by_uid_and_cover_older_versions() {
        let set = PodSet {
            revision: 40,
            pods: vec![PodRef {
                namespace: "default".into(),
                name: "web".into(),
                uid: "u1".into(),
            }],
        };
        assert!(set.contains("default", "web", "u1"));
        assert!(!set.contains("default", "web", "u2"));
        assert!(!set.contains("prod", "web", "u1"));
        assert!(set.covers(Some("40")));
        assert!(set.covers(Some("7")));
        assert!(set.covers(None));
        assert!(set.covers(Some("junk")));
        assert!(!set.covers(Some("41")));
        let v = serde_json::to_value(&set).unwrap();
        assert_eq!(v["pods"][0]["uid"], "u1");
        assert_eq!(
            serde_json::from_value::<PodSet>(serde_json::json!({})).unwrap(),
            PodSet::default()
        );
    }

    #[test]
    fn service_topics_round_trip() {
        let route = ServiceTopic::Route {
            namespace: "default".into(),
            name: "web".into(),
        };
        assert_eq!(route.name(), "shturman/v1/services/default/web");
        assert_eq!(ServiceTopic::parse(&route.name()), Some(route));
        assert_eq!(ServiceTopic::Set.name(), "shturman/v1/serviceset");
        assert_eq!(
            ServiceTopic::parse("shturman/v1/serviceset"),
            Some(ServiceTopic::Set)
        );
        assert_eq!(ServiceTopic::parse("shturman/v1/services/default/+"), None);
        assert_eq!(ServiceTopic::parse("shturman/v1/services/default"), None);
        assert_eq!(ServiceTopic::parse("shturman/v1/nodes/a/status"), None);
        // Node topics do not mistake service topics for theirs, nor the reverse.
        assert_eq!(Topic::parse("shturman/v1/services/default/web"), None);
        assert_eq!(services_filters()[1], "shturman/v1/services/+/+");
    }

    #[test]
    fn service_routes_are_camel_case_and_pick_ready_backends() {
        let route = ServiceRoute {
            namespace: "default".into(),
            name: "web".into(),
            uid: "u1".into(),
            revision: 7,
            endpoints_revision: 9,
            type_: ServiceType::NodePort,
            cluster_ip: Some("10.43.0.10".into()),
            session_affinity: SessionAffinity::ClientIP,
            client_ip_timeout_seconds: Some(10800),
            ports: vec![RoutePort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 80,
                node_port: Some(30080),
                target_port: IntOrString::String("web".into()),
            }],
            endpoints: vec![
                RouteEndpoint {
                    ip: "10.0.0.5".into(),
                    node: Some("pi-1".into()),
                    pod: Some("web-a".into()),
                    ready: true,
                    ports: BTreeMap::from([("http".into(), 8080)]),
                },
                RouteEndpoint {
                    ip: "10.0.0.6".into(),
                    node: Some("pi-2".into()),
                    pod: Some("web-b".into()),
                    ready: false,
                    ports: BTreeMap::from([("http".into(), 8080)]),
                },
            ],
        };
        let v = serde_json::to_value(&route).unwrap();
        assert_eq!(v["clusterIP"], "10.43.0.10");
        assert_eq!(v["type"], "NodePort");
        assert_eq!(v["sessionAffinity"], "ClientIP");
        assert_eq!(v["clientIPTimeoutSeconds"], 10800);
        assert_eq!(v["ports"][0]["nodePort"], 30080);
        assert_eq!(v["ports"][0]["protocol"], "TCP");
        assert_eq!(v["ports"][0]["targetPort"], "web");
        assert_eq!(v["endpoints"][0]["ports"]["http"], 8080);
        assert_eq!(serde_json::from_value::<ServiceRoute>(v).unwrap(), route);
        let ready: Vec<_> = route.backends("http").collect();
        assert_eq!(ready, [("10.0.0.5", 8080)]);
        assert_eq!(route.backends("dns").count(), 0);
        let set = ServiceSet {
            revision: 7,
            services: vec![ServiceRef {
                namespace: "default".into(),
                name: "web".into(),
                uid: "u1".into(),
            }],
        };
        assert!(set.contains("default", "web", "u1") && !set.contains("default", "web", "u2"));
        assert!(set.covers(route.revision) && !set.covers(8));
    }

    #[test]
    fn proxy_stats_are_camel_case_and_lenient() {
        let stats = ProxyStats {
            node: "pi-1".into(),
            stamp: Stamp { epoch: 2, seq: 5 },
            ports: vec![ProxyPortStats {
                namespace: "default".into(),
                name: "web".into(),
                port: 80,
                accepted: 3,
                active: 1,
                failed: 0,
                bytes_in: 100,
                bytes_out: 2000,
            }],
        };
        let v = serde_json::to_value(&stats).unwrap();
        assert_eq!(v["ports"][0]["bytesOut"], 2000);
        assert_eq!(serde_json::from_value::<ProxyStats>(v).unwrap(), stats);
        let p: ProxyPortStats = serde_json::from_str(r#"{"namespace":"a","name":"b","port":1}"#).unwrap();
        assert_eq!((p.accepted, p.bytes_in), (0, 0));
        assert_eq!(
            Topic::parse("shturman/v1/nodes/pi-1/proxy-stats"),
            Some(Topic::ProxyStats { node: "pi-1".into() })
        );
        assert_eq!(proxy_stats_filter(), "shturman/v1/nodes/+/proxy-stats");
    }

    #[test]
    fn stamps_order_by_epoch_then_seq() {
        let a = Stamp { epoch: 1, seq: 900 };
        let b = Stamp { epoch: 2, seq: 1 };
        assert!(a < b);
        assert!(Stamp { epoch: 2, seq: 2 } > b);
    }

    #[test]
    fn messages_are_json_with_kubernetes_shapes() {
        let hb = Heartbeat {
            node: "pi-1".into(),
            stamp: Stamp { epoch: 3, seq: 4 },
            ..Heartbeat::default()
        };
        let v = serde_json::to_value(&hb).unwrap();
        assert_eq!(v["stamp"]["epoch"], 3);
        let back: Heartbeat = serde_json::from_value(v).unwrap();
        assert_eq!(back, hb);
    }
}
