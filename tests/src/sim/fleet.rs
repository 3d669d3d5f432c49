//! The fleet simulator: many simulated edge nodes in one process, each
//! speaking the real protocol (`shturman_api::wire`) over its own MQTT
//! connection as a real `shturman-agent` does — the way kubemark's hollow
//! nodes stand in for kubelets. Used by the scale tests and the benchmarks.
//!
//! A node: connects with username = its name and password = the join
//! token, with a signed `online = false` last will; subscribes to its
//! filters (`wire::node_filters`); sends a join request carrying a node
//! secret it generated; on an accepted answer switches its password to that
//! secret, publishes a signed `online = true` and a first heartbeat at once
//! (as the agent does), then one every period, starting at an offset spread
//! evenly over the period so a fleet that joined in a burst does not beat
//! in step. Each desired pod it receives (`nodes/{node}/pods/…`) is held
//! and, after [`FleetConfig::report_delay`] (what starting it would take),
//! reported Running and Ready on `podstatus` — the agent's path; an empty
//! payload or a pod set without it drops it.
//!
//! Bounded: connections ramp up at a fixed rate, joins are re-sent a fixed
//! number of times, and [`Fleet::stop`] disconnects every node and waits a
//! bounded time.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use chrono::Utc;
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS};
use shturman_api::wire::{self, DesiredPod, JoinResult, PodSet, Topic};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::node::{HeldPod, SimNode};

/// The agent's keep-alive (edge-agent/src/link.rs).
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// A join not answered in this long is sent again (the agent's interval)…
const JOIN_RETRY: Duration = Duration::from_secs(10);
/// …at most this many times in all (the answer is awaited until stop).
const JOIN_ATTEMPTS: u32 = 6;
/// After stop, how long a node may take to disconnect cleanly.
const DISCONNECT_GRACE: Duration = Duration::from_secs(3);

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
    /// From receiving a desired pod to reporting it Running.
    pub report_delay: Duration,
}

impl FleetConfig {
    /// A fleet of `nodes` on the broker at `host:port`, joining with
    /// `token`: 10 s heartbeats, 200 connects/s, pods Running after 50 ms.
    pub fn new(host: &str, port: u16, nodes: usize, token: &str) -> FleetConfig {
        FleetConfig {
            host: host.to_string(),
            port,
            nodes,
            prefix: "sim".into(),
            token: token.to_string(),
            period: Duration::from_secs(10),
            connects_per_sec: 200,
            report_delay: Duration::from_millis(50),
        }
    }

    /// The name of node `i`.
    pub fn node_name(&self, i: usize) -> String {
        format!("{}-{i:05}", self.prefix)
    }
}

/// What the fleet has done so far.
#[derive(Default)]
struct Counters {
    connacks: AtomicUsize,
    joined: AtomicUsize,
    refused: AtomicUsize,
    heartbeats_queued: AtomicU64,
    heartbeats_not_queued: AtomicU64,
    pubacks: AtomicU64,
    link_errors: AtomicU64,
    pods_held: AtomicI64,
    pods_reported: AtomicU64,
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

    fn refuse(&self, why: impl FnOnce() -> String) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_refusal.lock() {
            first.get_or_insert_with(why);
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
    /// QoS 1 publishes the broker acknowledged (join, online, heartbeats,
    /// pod reports).
    pub pubacks: u64,
    pub link_errors: u64,
    /// Pods the nodes hold now (desired and not withdrawn).
    pub pods_held: u64,
    /// Running reports sent (monotonic).
    pub pods_reported: u64,
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
            pods_held: u64::try_from(c.pods_held.load(Ordering::Relaxed)).unwrap_or(0),
            pods_reported: c.pods_reported.load(Ordering::Relaxed),
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
        let sim = SimNode::new(cfg.node_name(i), i, epoch);
        tasks.spawn(run(sim, cfg.clone(), counters.clone(), stop.clone()));
    }
    while tasks.join_next().await.is_some() {}
}

/// What a simulated node's event loop tells the rest of the node.
#[derive(Clone, Copy, PartialEq, Eq)]
enum JoinState {
    Pending,
    Joined,
    Refused,
}

/// Desired-pod news from the event loop.
enum PodNews {
    Desired(HeldPod),
    Withdrawn { namespace: String, name: String },
    Set(PodSet),
}

/// Runs one node until `stop`: the MQTT event loop and the node's own loop
/// (join, heartbeats, pod reports) side by side in one task (the event
/// loop's `poll` is never cancelled mid-write, only after the grace).
async fn run(mut node: SimNode, cfg: Arc<FleetConfig>, counters: Arc<Counters>, stop: CancellationToken) {
    let mut opts = MqttOptions::new(node.name.clone(), cfg.host.clone(), cfg.port);
    opts.set_credentials(node.name.clone(), cfg.token.clone())
        .set_keep_alive(KEEP_ALIVE)
        .set_clean_session(false)
        .set_max_packet_size(wire::MAX_PACKET_BYTES, wire::MAX_PACKET_BYTES)
        .set_last_will(LastWill::new(
            Topic::NodeOnline {
                node: node.name.clone(),
            }
            .name(),
            node.online(false),
            QoS::AtLeastOnce,
            true,
        ));
    let (client, mut events) = AsyncClient::new(opts, 32);
    // As the agent: small messages (acks, reports) go out at once.
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(true);
    events.set_network_options(net);
    let (joined_tx, joined_rx) = watch::channel(JoinState::Pending);
    let (news_tx, news_rx) = mpsc::unbounded_channel();
    let join = node.join_request(&cfg.token);
    let ctx = DriverCtx {
        node: node.name.clone(),
        secret: node.secret.clone(),
        join: join.clone(),
        online: node.online(true),
    };
    let driver = drive(
        events,
        client.clone(),
        ctx,
        joined_tx,
        news_tx,
        counters.clone(),
        stop.clone(),
    );
    let life = Life {
        client,
        counters,
        held: HashMap::new(),
        due: VecDeque::new(),
    };
    let lives = life.run(&mut node, &cfg, join, joined_rx, news_rx, stop);
    tokio::join!(driver, lives);
}

type PodKey = (String, String);

/// The node's side of the link: heartbeats and pods.
struct Life {
    client: AsyncClient,
    counters: Arc<Counters>,
    held: HashMap<PodKey, (HeldPod, bool)>,
    /// Pods to report, in arrival order (one delay for all: FIFO is due order).
    due: VecDeque<(tokio::time::Instant, PodKey, String)>,
}

impl Life {
    /// Waits for the join (re-sending it a bounded number of times), then
    /// heartbeats every period and reports pods until `stop`, then
    /// disconnects.
    async fn run(
        mut self,
        node: &mut SimNode,
        cfg: &FleetConfig,
        join: Vec<u8>,
        mut joined: watch::Receiver<JoinState>,
        mut news: mpsc::UnboundedReceiver<PodNews>,
        stop: CancellationToken,
    ) {
        let join_topic = Topic::Join {
            node: node.name.clone(),
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
                    let _ = self.client.try_publish(join_topic.clone(), QoS::AtLeastOnce, false, join.clone());
                }
                () = stop.cancelled() => break JoinState::Pending,
            }
        };
        if outcome == JoinState::Joined {
            let status_topic = Topic::NodeStatus {
                node: node.name.clone(),
            }
            .name();
            // The agent heartbeats at once on joining, then on its interval.
            self.send_heartbeat(node, &status_topic);
            let first = tokio::time::Instant::now() + cfg.period.mul_f64(node.phase);
            let mut tick = tokio::time::interval_at(first, cfg.period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let next_due = self.due.front().map(|(at, ..)| *at);
                tokio::select! {
                    _ = tick.tick() => self.send_heartbeat(node, &status_topic),
                    Some(n) = news.recv() => self.hear(n, cfg.report_delay),
                    () = sleep_until(next_due) => self.report_due(node).await,
                    () = stop.cancelled() => break,
                }
            }
        } else {
            stop.cancelled().await;
        }
        let held = i64::try_from(self.held.len()).unwrap_or(0);
        self.counters.pods_held.fetch_sub(held, Ordering::Relaxed);
        let _ = self.client.try_disconnect();
    }

    fn send_heartbeat(&self, node: &mut SimNode, topic: &str) {
        let payload = node.heartbeat(self.held.len());
        // Retained, QoS 1: what the agent does (a late subscriber sees the
        // latest status at once).
        match self.client.try_publish(topic, QoS::AtLeastOnce, true, payload) {
            Ok(()) => self.counters.heartbeats_queued.fetch_add(1, Ordering::Relaxed),
            Err(_) => self
                .counters
                .heartbeats_not_queued
                .fetch_add(1, Ordering::Relaxed),
        };
    }

    fn hear(&mut self, news: PodNews, delay: Duration) {
        match news {
            PodNews::Desired(pod) => {
                let key = (pod.namespace.clone(), pod.name.clone());
                if self.held.get(&key).is_some_and(|(p, _)| p.uid == pod.uid) {
                    return; // a QoS 1 duplicate or a retained copy
                }
                let uid = pod.uid.clone();
                if self.held.insert(key.clone(), (pod, false)).is_none() {
                    self.counters.pods_held.fetch_add(1, Ordering::Relaxed);
                }
                self.due
                    .push_back((tokio::time::Instant::now() + delay, key, uid));
            }
            PodNews::Withdrawn { namespace, name } => self.drop_pod(&(namespace, name)),
            PodNews::Set(set) => {
                let gone: Vec<PodKey> = self
                    .held
                    .iter()
                    .filter(|(_, (p, _))| {
                        set.revision >= p.revision && !set.contains(&p.namespace, &p.name, &p.uid)
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in gone {
                    self.drop_pod(&k);
                }
            }
        }
    }

    fn drop_pod(&mut self, key: &PodKey) {
        if self.held.remove(key).is_some() {
            self.counters.pods_held.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Reports the first due pod Running, if the node still holds it.
    async fn report_due(&mut self, node: &mut SimNode) {
        let Some((_, key, uid)) = self.due.pop_front() else {
            return;
        };
        let Some((pod, reported)) = self.held.get_mut(&key) else {
            return;
        };
        if pod.uid != uid || *reported {
            return;
        }
        *reported = true;
        let payload = node.running_report(pod);
        let topic = Topic::PodStatus {
            node: node.name.clone(),
            namespace: key.0.clone(),
            name: key.1.clone(),
        }
        .name();
        // Waits for room in the client's queue (a burst of pods is normal).
        if self
            .client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .is_ok()
        {
            self.counters.pods_reported.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Sleeps until `at`; never wakes without one.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What the event loop needs to answer the link.
struct DriverCtx {
    node: String,
    secret: String,
    join: Vec<u8>,
    online: Vec<u8>,
}

/// Polls one node's MQTT event loop: subscribes and asks to join (or says
/// it is online) on every CONNACK, handles the join answer, passes desired
/// pods on, counts acks and errors, reconnects after a pause, and ends on
/// DISCONNECT or after the grace.
async fn drive(
    mut events: EventLoop,
    client: AsyncClient,
    ctx: DriverCtx,
    joined: watch::Sender<JoinState>,
    news: mpsc::UnboundedSender<PodNews>,
    counters: Arc<Counters>,
    stop: CancellationToken,
) {
    let deadline = async {
        stop.cancelled().await;
        tokio::time::sleep(DISCONNECT_GRACE).await;
    };
    tokio::pin!(deadline);
    let mut up = false;
    let mut closed_at_connect = 0u32;
    let mut backoff = wire::RECONNECT_MIN;
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
                backoff = wire::RECONNECT_MIN;
                let filters = wire::node_filters(&ctx.node)
                    .into_iter()
                    .map(|f| rumqttc::SubscribeFilter::new(f, QoS::AtLeastOnce));
                let _ = client.try_subscribe_many(filters);
                let (topic, payload, retain) = if *joined.borrow() == JoinState::Joined {
                    let t = Topic::NodeOnline {
                        node: ctx.node.clone(),
                    };
                    (t, ctx.online.clone(), true)
                } else {
                    let t = Topic::Join {
                        node: ctx.node.clone(),
                    };
                    (t, ctx.join.clone(), false)
                };
                let _ = client.try_publish(topic.name(), QoS::AtLeastOnce, retain, payload);
            }
            Ok(Event::Incoming(Packet::Publish(p))) => match Topic::parse(&p.topic) {
                Some(Topic::Joined { .. }) => {
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
                        counters.refuse(|| format!("{}: {}", ctx.node, result.message));
                        joined.send_replace(JoinState::Refused);
                    }
                }
                Some(Topic::DesiredPod { namespace, name, .. }) => {
                    let pod = if p.payload.is_empty() {
                        None
                    } else {
                        serde_json::from_slice::<DesiredPod>(&p.payload)
                            .ok()
                            .filter(|d| d.pod.metadata.deletion_timestamp.is_none())
                            .as_ref()
                            .and_then(HeldPod::of)
                    };
                    let _ = news.send(match pod {
                        Some(pod) => PodNews::Desired(pod),
                        None => PodNews::Withdrawn { namespace, name },
                    });
                }
                Some(Topic::PodSet { .. }) => {
                    if let Ok(set) = serde_json::from_slice::<PodSet>(&p.payload) {
                        let _ = news.send(PodNews::Set(set));
                    }
                }
                _ => {}
            },
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
                        counters
                            .refuse(|| format!("{}: the broker closed the link at CONNECT ({e})", ctx.node));
                        joined.send_replace(JoinState::Refused);
                        return;
                    }
                }
                up = false;
                tokio::select! {
                    () = tokio::time::sleep(wire::jittered(backoff, getrandom::u32().unwrap_or(0))) => {}
                    () = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(wire::RECONNECT_MAX);
            }
        }
    }
}
