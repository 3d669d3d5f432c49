//! The fleet simulator: many simulated edge nodes in one process, each
//! speaking the real protocol (`shturman_api::wire`) over its own MQTT
//! connection, as a real `shturman-agent` does — the way kubemark's hollow
//! nodes stand in for kubelets. Today a simulated node joins and
//! heartbeats; accepting pods and reporting them comes with issue 9.
//!
//! A node: connects with username = its name and password = the join
//! token, with a signed `online = false` last will; subscribes to its
//! filters; sends a [`JoinRequest`] carrying a node secret it generated;
//! on an accepted [`JoinResult`] switches its password to that secret,
//! publishes a signed `online = true` and a first [`Heartbeat`] at once (as
//! the agent does), then one every period, starting at an offset spread
//! evenly over the period so a fleet that joined in a burst does not beat
//! in step.
//!
//! Bounded: connections ramp up at a fixed rate, joins are retried a fixed
//! number of times, and [`Fleet::stop`] disconnects every node and waits a
//! bounded time. Signing is written here from the wire spec (not borrowed
//! from the control plane), so the simulator checks the spec as an agent
//! would.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use chrono::Utc;
use hmac::{Hmac, KeyInit, Mac};
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS};
use sha2::Sha256;
use shturman_api::core::node::NodeRuntimeHandler;
use shturman_api::core::{
    NodeAddress, NodeAddressType, NodeCondition, NodeConditionType, NodeStatus, NodeSystemInfo,
};
use shturman_api::meta::{ConditionStatus, Time};
use shturman_api::quantity::Quantity;
use shturman_api::wire::{
    self, Heartbeat, JoinRequest, JoinResult, ONLINE_FALSE, ONLINE_TRUE, Signed, Stamp, Topic, Usage,
};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

/// The agent's keep-alive (edge-agent/src/link.rs).
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// A join not answered in this long is sent again (the agent's interval)…
const JOIN_RETRY: Duration = Duration::from_secs(10);
/// …at most this many times in all (the answer is awaited until stop).
const JOIN_ATTEMPTS: u32 = 6;
/// First and largest pause between connection attempts (the agent's, in
/// edge-agent/src/link.rs), with up to a quarter more of jitter.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// After stop, how long a node may take to disconnect cleanly.
const DISCONNECT_GRACE: Duration = Duration::from_secs(3);
const MIB: i64 = 1024 * 1024;

/// What the fleet is and where it connects.
#[derive(Clone, Debug)]
pub struct FleetConfig {
    pub host: String,
    pub port: u16,
    pub nodes: usize,
    /// Node names are `{prefix}-{index:05}`.
    pub prefix: String,
    /// A join token (`id.secret`).
    pub token: String,
    /// Heartbeat period (the agent's default is 10 s).
    pub period: Duration,
    /// New connections per second while ramping up.
    pub connects_per_sec: u32,
}

impl FleetConfig {
    /// The name of node `i`.
    pub fn node_name(&self, i: usize) -> String {
        format!("{}-{i:05}", self.prefix)
    }
}

/// What the fleet has done so far (monotonic counters).
#[derive(Default)]
struct Counters {
    connacks: AtomicUsize,
    joined: AtomicUsize,
    refused: AtomicUsize,
    heartbeats_queued: AtomicU64,
    heartbeats_not_queued: AtomicU64,
    pubacks: AtomicU64,
    link_errors: AtomicU64,
    first_refusal: Mutex<Option<String>>,
    /// Link errors by kind (a few kinds: rumqttc's messages).
    error_kinds: Mutex<BTreeMap<String, u64>>,
}

impl Counters {
    fn link_error(&self, e: &rumqttc::ConnectionError) {
        self.link_errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut kinds) = self.error_kinds.lock() {
            let kind = e.to_string();
            // Bounded: a handful of distinct messages in practice.
            if kinds.len() < 32 || kinds.contains_key(&kind) {
                *kinds.entry(kind).or_default() += 1;
            }
        }
    }

    fn kinds(&self) -> String {
        self.error_kinds
            .lock()
            .map(|k| {
                k.iter()
                    .map(|(e, n)| format!("{n}× {e}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default()
    }
}

/// A copy of the counters at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct Snapshot {
    /// CONNACKs received (reconnects included).
    pub connacks: usize,
    pub joined: usize,
    pub refused: usize,
    /// Heartbeats handed to the nodes' MQTT clients.
    pub heartbeats_queued: u64,
    /// Heartbeats a node's client could not take (its queue was full).
    pub heartbeats_not_queued: u64,
    /// QoS 1 publishes the broker acknowledged (join, online, heartbeats).
    pub pubacks: u64,
    pub link_errors: u64,
}

/// A running fleet; [`Fleet::stop`] ends it (dropping it aborts every task).
pub struct Fleet {
    nodes: usize,
    stop: CancellationToken,
    counters: Arc<Counters>,
    /// The ramp task owns every node task and returns once they all ended;
    /// `None` once stopped.
    ramp: Option<JoinHandle<()>>,
}

impl Fleet {
    /// Starts ramping up `cfg.nodes` nodes at `cfg.connects_per_sec`.
    pub fn start(cfg: FleetConfig) -> Fleet {
        let stop = CancellationToken::new();
        let counters = Arc::new(Counters::default());
        let nodes = cfg.nodes;
        let ramp = tokio::spawn(ramp(Arc::new(cfg), counters.clone(), stop.clone()));
        Fleet {
            nodes,
            stop,
            counters,
            ramp: Some(ramp),
        }
    }

    /// Link errors so far, by kind.
    pub fn error_kinds(&self) -> String {
        self.counters.kinds()
    }

    /// The counters now.
    pub fn snapshot(&self) -> Snapshot {
        let c = &self.counters;
        Snapshot {
            connacks: c.connacks.load(Ordering::Relaxed),
            joined: c.joined.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            heartbeats_queued: c.heartbeats_queued.load(Ordering::Relaxed),
            heartbeats_not_queued: c.heartbeats_not_queued.load(Ordering::Relaxed),
            pubacks: c.pubacks.load(Ordering::Relaxed),
            link_errors: c.link_errors.load(Ordering::Relaxed),
        }
    }

    /// Waits until every node has joined; fails on a refusal or after `cap`.
    /// Returns how long it took.
    pub async fn wait_joined(&self, cap: Duration) -> Result<Duration> {
        let started = Instant::now();
        let mut last_report = Instant::now();
        loop {
            let s = self.snapshot();
            if s.refused > 0 {
                let why = self
                    .counters
                    .first_refusal
                    .lock()
                    .ok()
                    .and_then(|g| g.clone())
                    .unwrap_or_default();
                bail!("{} simulated nodes were refused; first: {why}", s.refused);
            }
            if s.joined >= self.nodes {
                return Ok(started.elapsed());
            }
            if started.elapsed() > cap {
                bail!(
                    "only {} of {} simulated nodes joined in {cap:?} ({} CONNACKs, {} link errors: {})",
                    s.joined,
                    self.nodes,
                    s.connacks,
                    s.link_errors,
                    self.counters.kinds()
                );
            }
            if last_report.elapsed() > Duration::from_secs(10) {
                eprintln!(
                    "  … {} of {} nodes joined ({} CONNACKs, {} link errors)",
                    s.joined, self.nodes, s.connacks, s.link_errors
                );
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Disconnects every node (a clean DISCONNECT: no last will) and waits
    /// for them, at most `DISCONNECT_GRACE` plus a margin.
    pub async fn stop(mut self) {
        self.stop.cancel();
        let Some(ramp) = self.ramp.take() else { return };
        let abort = ramp.abort_handle();
        if tokio::time::timeout(DISCONNECT_GRACE + Duration::from_secs(5), ramp)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(ramp) = &self.ramp {
            ramp.abort();
        }
    }
}

/// Starts the nodes at the configured rate, then waits for all of them.
async fn ramp(cfg: Arc<FleetConfig>, counters: Arc<Counters>, stop: CancellationToken) {
    let mut tasks = JoinSet::new();
    let epoch = u64::try_from(Utc::now().timestamp()).unwrap_or(1);
    let rate = f64::from(cfg.connects_per_sec.max(1));
    let started = tokio::time::Instant::now();
    for i in 0..cfg.nodes {
        #[allow(clippy::cast_precision_loss)]
        let at = started + Duration::from_secs_f64(i as f64 / rate);
        tokio::select! {
            () = tokio::time::sleep_until(at) => {}
            () = stop.cancelled() => break,
        }
        let sim = SimNode::new(&cfg, i, epoch);
        tasks.spawn(sim.run(cfg.clone(), counters.clone(), stop.clone()));
    }
    while tasks.join_next().await.is_some() {}
}

/// One simulated node: its identity and what it reports.
struct SimNode {
    name: String,
    secret: String,
    epoch: u64,
    seq: u64,
    /// Where its first periodic heartbeat falls within the period (0..1).
    phase: f64,
    started: Time,
    template: NodeStatus,
    labels: BTreeMap<String, String>,
}

/// What a simulated node's event loop tells its heartbeat loop.
#[derive(Clone, Copy, PartialEq, Eq)]
enum JoinState {
    Pending,
    Joined,
    Refused,
}

impl SimNode {
    fn new(cfg: &FleetConfig, i: usize, epoch: u64) -> SimNode {
        let name = cfg.node_name(i);
        let (template, labels) = profile(&name, i);
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
        }
    }

    fn stamp(&mut self) -> Stamp {
        self.seq += 1;
        Stamp {
            epoch: self.epoch,
            seq: self.seq,
        }
    }

    fn join_request(&mut self, token: &str) -> Vec<u8> {
        let req = JoinRequest {
            node: self.name.clone(),
            token: token.to_string(),
            node_secret: self.secret.clone(),
            agent_version: concat!("v", env!("CARGO_PKG_VERSION"), "-sim").into(),
            stamp: self.stamp(),
        };
        serde_json::to_vec(&req).unwrap_or_default()
    }

    fn online(&self, online: bool) -> Vec<u8> {
        let body = if online { ONLINE_TRUE } else { ONLINE_FALSE };
        serde_json::to_vec(&seal(&self.secret, body.to_string())).unwrap_or_default()
    }

    /// A signed heartbeat stamped now.
    fn heartbeat(&mut self) -> Vec<u8> {
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
                pods: 0,
            },
            offline_log: Vec::new(),
        };
        let body = serde_json::to_string(&hb).unwrap_or_default();
        serde_json::to_vec(&seal(&self.secret, body)).unwrap_or_default()
    }

    /// Runs the node until `stop`: the MQTT event loop and the heartbeat
    /// loop side by side in one task (the event loop's `poll` is never
    /// cancelled mid-write, only after the disconnect grace).
    async fn run(mut self, cfg: Arc<FleetConfig>, counters: Arc<Counters>, stop: CancellationToken) {
        let mut opts = MqttOptions::new(self.name.clone(), cfg.host.clone(), cfg.port);
        opts.set_credentials(self.name.clone(), cfg.token.clone())
            .set_keep_alive(KEEP_ALIVE)
            .set_clean_session(false)
            .set_max_packet_size(wire::MAX_PACKET_BYTES, wire::MAX_PACKET_BYTES)
            .set_last_will(LastWill::new(
                Topic::NodeOnline {
                    node: self.name.clone(),
                }
                .name(),
                self.online(false),
                QoS::AtLeastOnce,
                true,
            ));
        let (client, events) = AsyncClient::new(opts, 16);
        let (joined_tx, joined_rx) = watch::channel(JoinState::Pending);
        let join = self.join_request(&cfg.token);
        let online = self.online(true);
        let driver = drive(
            events,
            client.clone(),
            DriverCtx {
                node: self.name.clone(),
                secret: self.secret.clone(),
                join: join.clone(),
                online,
            },
            joined_tx,
            counters.clone(),
            stop.clone(),
        );
        let beats = self.beat(client, join, joined_rx, cfg.period, counters, stop);
        tokio::join!(driver, beats);
    }

    /// Waits for the join (re-sending it a bounded number of times), then
    /// heartbeats every `period` until `stop`, then disconnects.
    async fn beat(
        &mut self,
        client: AsyncClient,
        join: Vec<u8>,
        mut joined: watch::Receiver<JoinState>,
        period: Duration,
        counters: Arc<Counters>,
        stop: CancellationToken,
    ) {
        let join_topic = Topic::Join {
            node: self.name.clone(),
        }
        .name();
        let status_topic = Topic::NodeStatus {
            node: self.name.clone(),
        }
        .name();
        let mut attempts = 1;
        let outcome = loop {
            tokio::select! {
                r = joined.wait_for(|s| *s != JoinState::Pending) => {
                    break r.map_or(JoinState::Refused, |s| *s);
                }
                () = tokio::time::sleep(JOIN_RETRY), if attempts < JOIN_ATTEMPTS => {
                    // Re-sent a bounded number of times; the answer is
                    // awaited until `stop` (a slow join still counts).
                    attempts += 1;
                    let _ = client.try_publish(join_topic.clone(), QoS::AtLeastOnce, false, join.clone());
                }
                () = stop.cancelled() => break JoinState::Pending,
            }
        };
        if outcome == JoinState::Joined {
            // The agent heartbeats at once on joining, then on its interval.
            self.send_heartbeat(&client, &status_topic, &counters);
            let first = tokio::time::Instant::now() + period.mul_f64(self.phase);
            let mut tick = tokio::time::interval_at(first, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => self.send_heartbeat(&client, &status_topic, &counters),
                    () = stop.cancelled() => break,
                }
            }
        } else {
            stop.cancelled().await;
        }
        let _ = client.try_disconnect();
    }

    fn send_heartbeat(&mut self, client: &AsyncClient, topic: &str, counters: &Counters) {
        let payload = self.heartbeat();
        // Retained, QoS 1: what the agent does (a late subscriber sees the
        // latest status at once).
        match client.try_publish(topic, QoS::AtLeastOnce, true, payload) {
            Ok(()) => counters.heartbeats_queued.fetch_add(1, Ordering::Relaxed),
            Err(_) => counters.heartbeats_not_queued.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// What the event loop needs to answer the link.
struct DriverCtx {
    node: String,
    secret: String,
    join: Vec<u8>,
    online: Vec<u8>,
}

/// Polls one node's MQTT event loop: subscribes and asks to join on every
/// CONNACK until joined, handles the join answer, counts acks and errors,
/// reconnects after a pause, and ends on DISCONNECT or after the grace.
async fn drive(
    mut events: EventLoop,
    client: AsyncClient,
    ctx: DriverCtx,
    joined: watch::Sender<JoinState>,
    counters: Arc<Counters>,
    stop: CancellationToken,
) {
    let joined_topic = Topic::Joined {
        node: ctx.node.clone(),
    }
    .name();
    let deadline = async {
        stop.cancelled().await;
        tokio::time::sleep(DISCONNECT_GRACE).await;
    };
    tokio::pin!(deadline);
    let mut up = false;
    let mut closed_at_connect = 0u32;
    let mut backoff = BACKOFF_MIN;
    loop {
        let ev = tokio::select! {
            ev = events.poll() => ev,
            () = &mut deadline => return,
        };
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                counters.connacks.fetch_add(1, Ordering::Relaxed);
                up = true;
                closed_at_connect = 0;
                backoff = BACKOFF_MIN;
                let filters = wire::node_filters(&ctx.node)
                    .into_iter()
                    .map(|f| rumqttc::SubscribeFilter::new(f, QoS::AtLeastOnce));
                let _ = client.try_subscribe_many(filters);
                let topic = match *joined.borrow() {
                    JoinState::Joined => Topic::NodeOnline {
                        node: ctx.node.clone(),
                    },
                    _ => Topic::Join {
                        node: ctx.node.clone(),
                    },
                };
                let (payload, retain) = if matches!(topic, Topic::NodeOnline { .. }) {
                    (ctx.online.clone(), true)
                } else {
                    (ctx.join.clone(), false)
                };
                let _ = client.try_publish(topic.name(), QoS::AtLeastOnce, retain, payload);
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == joined_topic => {
                if *joined.borrow() != JoinState::Pending {
                    continue;
                }
                let result: JoinResult = serde_json::from_slice(&p.payload).unwrap_or_default();
                if result.accepted {
                    events
                        .mqtt_options
                        .set_credentials(ctx.node.clone(), ctx.secret.clone());
                    let online = Topic::NodeOnline {
                        node: ctx.node.clone(),
                    }
                    .name();
                    let _ = client.try_publish(online, QoS::AtLeastOnce, true, ctx.online.clone());
                    counters.joined.fetch_add(1, Ordering::Relaxed);
                    joined.send_replace(JoinState::Joined);
                } else {
                    counters.refused.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut first) = counters.first_refusal.lock() {
                        first.get_or_insert_with(|| format!("{}: {}", ctx.node, result.message));
                    }
                    joined.send_replace(JoinState::Refused);
                }
            }
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                counters.pubacks.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(e) => {
                counters.link_error(&e);
                if stop.is_cancelled() {
                    return;
                }
                let at_connect = matches!(
                    e,
                    rumqttc::ConnectionError::MqttState(rumqttc::StateError::ConnectionAborted)
                        | rumqttc::ConnectionError::ConnectionRefused(_)
                );
                if *joined.borrow() == JoinState::Pending && !up && at_connect {
                    // rumqttd refuses credentials by closing without a
                    // CONNACK; twice in a row counts as a refusal (as the
                    // agent does).
                    closed_at_connect += 1;
                    if closed_at_connect >= 2 {
                        counters.refused.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut first) = counters.first_refusal.lock() {
                            first.get_or_insert_with(|| {
                                format!("{}: the broker closed the link at CONNECT ({e})", ctx.node)
                            });
                        }
                        joined.send_replace(JoinState::Refused);
                        return;
                    }
                }
                up = false;
                tokio::select! {
                    () = tokio::time::sleep(jitter(backoff)) => {}
                    () = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// `d` plus up to a quarter of it, so the fleet does not reconnect in step.
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let r = if getrandom::fill(&mut b).is_ok() {
        u32::from(u16::from_le_bytes(b))
    } else {
        0
    };
    d + d / 4 * r / u32::from(u16::MAX)
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
        // secret for a loopback benchmark.
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
        let cfg = FleetConfig {
            host: "127.0.0.1".into(),
            port: 1,
            nodes: 1,
            prefix: "sim".into(),
            token: "abcdef.0123456789abcdef".into(),
            period: Duration::from_secs(10),
            connects_per_sec: 1,
        };
        let mut n = SimNode::new(&cfg, 3, 7);
        assert_eq!(n.name, "sim-00003");
        assert_eq!(n.secret.len(), 64);
        let signed: Signed = serde_json::from_slice(&n.heartbeat()).unwrap();
        assert_eq!(seal(&n.secret, signed.body.clone()).mac, signed.mac);
        let hb: Heartbeat = serde_json::from_str(&signed.body).unwrap();
        assert_eq!(hb.node, "sim-00003");
        assert_eq!(hb.stamp, Stamp { epoch: 7, seq: 1 });
        assert!(hb.status.is_ready());
        assert!(hb.status.allocatable["cpu"] < hb.status.capacity["cpu"]);
        assert!(hb.status.allocatable["memory"] < hb.status.capacity["memory"]);
        let ready = hb.status.condition(NodeConditionType::Ready).unwrap();
        assert_eq!(ready.last_heartbeat_time, hb.sent_at);
        assert_eq!(hb.labels["kubernetes.io/hostname"], "sim-00003");
        assert_eq!(hb.status.runtime_handlers[0].name, "wasmtime");
        let second: Signed = serde_json::from_slice(&n.heartbeat()).unwrap();
        let hb2: Heartbeat = serde_json::from_str(&second.body).unwrap();
        assert!(hb2.stamp > hb.stamp);
    }
}
