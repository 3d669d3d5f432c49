//! The node gateway: the control plane's MQTT client, between the store and
//! the agents.
//!
//! - Out: every bound pod is published, retained at QoS 1, on
//!   `nodes/{node}/pods/{ns}/{name}` as a [`DesiredPod`](shturman_api::wire::DesiredPod)
//!   carrying the ConfigMaps and Secrets it refers to; a deleted or rebound
//!   pod's topic gets an empty retained payload. This part is a runtime
//!   [`Controller`] keyed by pod, fed by the Pod, ConfigMap and Secret
//!   informers; it only sends what changed (a topic → hash map).
//!   Level-triggered: on every (re)connection everything is sent again (a
//!   restarted embedded broker has no retained state), and the gateway also
//!   reads the retained desired pods back from the broker to withdraw any
//!   it no longer wants (pods deleted while it was away).
//! - Out, per node: the complete set of pods it must run, retained on
//!   `nodes/{node}/podset` ([`podsets`]), so an agent that was away while
//!   the broker forgot a withdrawal still drops the pod.
//! - Out, to every agent: each Service with its Endpoints, retained on
//!   `services/{ns}/{name}`, and every Service's key on `serviceset`
//!   ([`services`], built by [`routes`]), for the agents' proxies.
//! - In: joins, heartbeats, the online flag and pod reports, handled in
//!   [`ingest`], one worker per shard of node names so one node's messages
//!   are applied in order.
//! - Both ways, on demand: container logs ([`logs`]): requests out, signed
//!   chunks in, handed to the API server's open streams.
//! - In: the agents' Service proxy counters ([`proxy_stats`]), for `/metrics`.
//!
//! [`auth`] decides the embedded broker's CONNECTs; [`sign`] checks MACs;
//! [`desired`] is the pure part of the publishing.

pub mod auth;
pub mod desired;
pub mod ingest;
pub mod logs;
pub mod podsets;
pub mod proxy_stats;
pub mod routes;
pub mod services;
pub mod sign;

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use shturman_api::core::{ConfigMap, Endpoints, Pod, Secret, Service};
use shturman_api::wire::{self, PREFIX, PodSet, ServiceSet, ServiceTopic, Stamp, Topic};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use self::auth::Credentials;
use crate::client::Client;
use crate::runtime::controller::QueueHandle;
use crate::runtime::{Action, Controller, Informer, ObjectKey, Recorder, SystemClock};

/// How the gateway reaches the broker.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    pub host: String,
    pub port: u16,
    pub credentials: Option<Credentials>,
    /// Largest message it sends; bigger desired pods are refused (logged).
    pub max_payload: usize,
    /// Workers applying agents' messages (each owns a shard of node names).
    pub ingest_workers: usize,
    /// Longest a heartbeat that changes nothing but its time goes unwritten
    /// (one and a half of the node's own periods at most: [`ingest::refresh_after`]).
    pub status_refresh: Duration,
}

/// The caches the gateway publishes from.
pub struct Inputs {
    pub pods: Informer<Pod>,
    pub config_maps: Informer<ConfigMap>,
    pub secrets: Informer<Secret>,
    pub services: Informer<Service>,
    pub endpoints: Informer<Endpoints>,
}

/// Why publishing a pod failed (the controller retries with back-off).
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot encode the desired pod {key}: {source}")]
    Encode {
        key: ObjectKey,
        source: serde_json::Error,
    },
    #[error("the MQTT client is gone: {0}")]
    Client(#[from] rumqttc::ClientError),
}

/// Topics a pod was published on, with the hash of what was sent (0: seen
/// retained in the broker, content unknown).
type Published = HashMap<ObjectKey, HashMap<String, u64>>;

/// What the gateway's tasks share.
pub(crate) struct Shared {
    client: Client,
    mqtt: AsyncClient,
    /// The publishing controller's queue.
    queue: QueueHandle,
    /// The pod-set controller's queue (keys: `("", node)`).
    podset_queue: QueueHandle,
    pods: Informer<Pod>,
    config_maps: Informer<ConfigMap>,
    secrets: Informer<Secret>,
    services: Informer<Service>,
    endpoints: Informer<Endpoints>,
    /// The service-route controller's queue (the set: `services::set_key`).
    service_queue: QueueHandle,
    /// Routes published in this connection, by Service, with their content
    /// hash (0: seen retained in the broker, content unknown).
    routes: Mutex<HashMap<ObjectKey, u64>>,
    /// The service set last published in this connection.
    service_set: Mutex<Option<ServiceSet>>,
    published: Mutex<Published>,
    /// The pod set last published per node in this connection.
    podsets: Mutex<HashMap<String, PodSet>>,
    /// Each node's last applied heartbeat (written to the Node or not).
    node_stamps: Mutex<HashMap<String, ingest::LastBeat>>,
    status_refresh: Duration,
    pod_stamps: Mutex<HashMap<ObjectKey, (String, Stamp)>>,
    max_payload: usize,
    /// Open log requests (shared with the API server).
    logs: Arc<logs::LogHub>,
    /// Records what nodes report of their time offline as Events.
    recorder: Recorder,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn published(&self) -> MutexGuard<'_, Published> {
        lock(&self.published)
    }
    fn podsets(&self) -> MutexGuard<'_, HashMap<String, PodSet>> {
        lock(&self.podsets)
    }
    fn routes(&self) -> MutexGuard<'_, HashMap<ObjectKey, u64>> {
        lock(&self.routes)
    }
    fn service_set(&self) -> MutexGuard<'_, Option<ServiceSet>> {
        lock(&self.service_set)
    }
    fn node_stamps(&self) -> MutexGuard<'_, HashMap<String, ingest::LastBeat>> {
        lock(&self.node_stamps)
    }
    fn pod_stamps(&self) -> MutexGuard<'_, HashMap<ObjectKey, (String, Stamp)>> {
        lock(&self.pod_stamps)
    }
}

/// Starts the gateway; it runs until `stop` is cancelled. `logs` is the
/// API server's hub of open log requests.
pub fn start(
    client: Client,
    inputs: Inputs,
    config: GatewayConfig,
    logs: Arc<logs::LogHub>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(client, inputs, config, logs, stop))
}

fn mqtt_options(config: &GatewayConfig) -> MqttOptions {
    let id = format!("shturman-gateway-{}", uuid::Uuid::new_v4().simple());
    let mut o = MqttOptions::new(id, config.host.clone(), config.port);
    o.set_keep_alive(Duration::from_secs(15));
    o.set_clean_session(true);
    o.set_max_packet_size(config.max_payload, config.max_payload);
    if let Some(c) = &config.credentials {
        o.set_credentials(c.username.clone(), c.password.clone());
    }
    o
}

/// Runs the gateway until `stop` is cancelled: waits for the caches, then
/// the MQTT event loop, the ingest workers and the publishing controller.
pub async fn run(
    client: Client,
    inputs: Inputs,
    config: GatewayConfig,
    logs: Arc<logs::LogHub>,
    stop: CancellationToken,
) {
    let Inputs {
        pods,
        config_maps,
        secrets,
        services,
        endpoints,
    } = inputs;
    let synced = async {
        pods.wait_synced().await;
        config_maps.wait_synced().await;
        secrets.wait_synced().await;
        services.wait_synced().await;
        endpoints.wait_synced().await;
    };
    tokio::select! {
        () = synced => {}
        () = stop.cancelled() => return,
    }
    let (mqtt, mut events) = AsyncClient::new(mqtt_options(&config), 1024);
    // Desired pods and acks are small: send them at once (no Nagle delay).
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(true);
    events.set_network_options(net);
    let controller = Controller::new("node-gateway", stop.clone());
    let podset_controller = Controller::new("node-gateway-podsets", stop.clone());
    let service_controller = Controller::new("node-gateway-services", stop.clone());
    let recorder = Recorder::new(client.clone(), "node-gateway", Arc::new(SystemClock));
    let shared = Arc::new(Shared {
        client,
        mqtt,
        queue: controller.handle(),
        podset_queue: podset_controller.handle(),
        pods,
        config_maps,
        secrets,
        services,
        endpoints,
        service_queue: service_controller.handle(),
        routes: Mutex::default(),
        service_set: Mutex::default(),
        published: Mutex::default(),
        podsets: Mutex::default(),
        node_stamps: Mutex::default(),
        status_refresh: config.status_refresh,
        pod_stamps: Mutex::default(),
        max_payload: config.max_payload,
        logs: logs.clone(),
        recorder,
    });
    logs.attach(shared.mqtt.clone());
    watch_inputs(&controller, &shared);
    service_controller.watches(&shared.services, |s: &Service| {
        vec![ObjectKey::of(s), services::set_key()]
    });
    service_controller.watches(&shared.endpoints, |e: &Endpoints| vec![ObjectKey::of(e)]);
    let mut tasks = JoinSet::new();
    let mut shards = Vec::new();
    for _ in 0..config.ingest_workers.max(1) {
        let (tx, rx) = mpsc::channel::<(Topic, bytes::Bytes)>(1024);
        shards.push(tx);
        tasks.spawn(ingest_worker(shared.clone(), rx, stop.clone()));
    }
    let publisher = shared.clone();
    tasks.spawn(controller.run(4, move |key: ObjectKey| {
        let s = publisher.clone();
        async move { s.reconcile(&key).await }
    }));
    let podsets = shared.clone();
    tasks.spawn(podset_controller.run(2, move |key: ObjectKey| {
        let s = podsets.clone();
        async move { s.reconcile_podset(&key).await }
    }));
    let routes = shared.clone();
    tasks.spawn(service_controller.run(2, move |key: ObjectKey| {
        let s = routes.clone();
        async move { s.reconcile_service(&key).await }
    }));
    event_loop(&shared, events, &shards, &stop).await;
    logs.detach();
    drop(shards);
    while tasks.join_next().await.is_some() {}
    tracing::info!("node gateway stopped");
}

/// Queues a pod when anything it is made of changes.
fn watch_inputs(controller: &Controller, shared: &Arc<Shared>) {
    controller.watches(&shared.pods, |p: &Pod| vec![ObjectKey::of(p)]);
    let pods = shared.pods.clone();
    controller.watches(&shared.config_maps, move |cm: &ConfigMap| {
        users(&pods, cm.metadata.namespace(), |r| {
            r.config_maps.contains(cm.metadata.name())
        })
    });
    let pods = shared.pods.clone();
    controller.watches(&shared.secrets, move |s: &Secret| {
        users(&pods, s.metadata.namespace(), |r| {
            r.secrets.contains(s.metadata.name())
        })
    });
}

fn users(pods: &Informer<Pod>, ns: &str, refers: impl Fn(&desired::Refs) -> bool) -> Vec<ObjectKey> {
    pods.list_in(ns)
        .iter()
        .filter(|p| p.spec.node_name.is_some() && refers(&desired::references(&p.spec)))
        .map(|p| ObjectKey::of(&**p))
        .collect()
}

fn shard_of(node: &str, n: usize) -> usize {
    let mut h = DefaultHasher::new();
    node.hash(&mut h);
    usize::try_from(h.finish() % (n.max(1) as u64)).unwrap_or(0)
}

async fn ingest_worker(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<(Topic, bytes::Bytes)>,
    stop: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            m = rx.recv() => m,
            () = stop.cancelled() => return,
        };
        let Some((topic, payload)) = msg else { return };
        shared.ingest(topic, &payload).await;
    }
}

/// Drives the MQTT connection: (re)subscribes and resyncs on every CONNACK,
/// hands agents' messages to the ingest shards, reads back retained desired
/// pods, and backs off while the broker is unreachable.
async fn event_loop(
    shared: &Arc<Shared>,
    mut events: rumqttc::EventLoop,
    shards: &[mpsc::Sender<(Topic, bytes::Bytes)>],
    stop: &CancellationToken,
) {
    let mut retry = Duration::from_millis(100);
    let mut failing = false;
    loop {
        let ev = tokio::select! {
            e = events.poll() => e,
            () = stop.cancelled() => break,
        };
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                tracing::info!("node gateway connected to the MQTT broker");
                retry = Duration::from_millis(100);
                failing = false;
                let filters = wire::agents_filter()
                    .into_iter()
                    .chain([
                        format!("{PREFIX}/nodes/+/podset"),
                        format!("{PREFIX}/nodes/+/pods/+/+"),
                        wire::log_replies_filter(),
                        wire::proxy_stats_filter(),
                    ])
                    .chain(wire::services_filters())
                    .map(|f| rumqttc::SubscribeFilter::new(f, QoS::AtLeastOnce));
                if let Err(e) = shared.mqtt.try_subscribe_many(filters) {
                    tracing::error!(error = %e, "node gateway could not subscribe");
                }
                shared.resync();
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if let Some(topic) = ServiceTopic::parse(&p.topic) {
                    shared.seen_service_topic(topic, p.payload.is_empty());
                    continue;
                }
                let Some(topic) = Topic::parse(&p.topic) else {
                    continue;
                };
                match &topic {
                    Topic::DesiredPod { namespace, name, .. } => {
                        if !p.payload.is_empty() {
                            shared.seen_retained(
                                ObjectKey::new(namespace.clone(), name.clone()),
                                p.topic.clone(),
                            );
                        }
                    }
                    Topic::PodSet { node } => shared.seen_podset(node),
                    Topic::Joined { .. } | Topic::LogRequest { .. } | Topic::LogCancel { .. } => {}
                    // Off the ingest shards: a log reader waits on it, and
                    // checking it never waits.
                    Topic::LogReply { node, id } => shared.log_reply(node, id, &p.payload),
                    _ => {
                        let node = topic.node_name().unwrap_or_default();
                        let shard = &shards[shard_of(node, shards.len())];
                        if shard.send((topic, p.payload)).await.is_err() {
                            break;
                        }
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "node gateway lost the MQTT broker; reconnecting");
                    failing = true;
                } else {
                    tracing::debug!(error = %e, "node gateway still cannot reach the MQTT broker");
                }
                tokio::select! {
                    () = tokio::time::sleep(retry) => {}
                    () = stop.cancelled() => break,
                }
                retry = (retry * 2).min(Duration::from_secs(5));
            }
        }
    }
    let _ = shared.mqtt.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while let Ok(ev) = events.poll().await {
            if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
    })
    .await;
}

impl Shared {
    /// A retained desired pod read back from the broker: remember the topic
    /// so the pod's next reconcile withdraws it if it is not wanted there.
    fn seen_retained(&self, key: ObjectKey, topic: String) {
        self.published()
            .entry(key.clone())
            .or_default()
            .entry(topic)
            .or_insert(0);
        self.queue.add(key);
    }

    /// After a (re)connection: forget what was sent, send everything again
    /// (each node's pod set, every service route and the service set too).
    fn resync(&self) {
        self.published().clear();
        for p in self.pods.list() {
            self.queue.add(ObjectKey::of(&*p));
        }
        self.resync_podsets();
        self.resync_services();
    }

    /// Publishes what `key` should be and withdraws where it should not.
    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, GatewayError> {
        let pod = self.pods.get(key);
        let want = pod.as_deref().and_then(|p| {
            let topic = desired::target(p)?.name();
            let ns = p.metadata.namespace().to_string();
            let d = desired::desired_pod(
                p,
                |n| {
                    self.config_maps
                        .get(&ObjectKey::new(ns.clone(), n))
                        .map(|c| (*c).clone())
                },
                |n| {
                    self.secrets
                        .get(&ObjectKey::new(ns.clone(), n))
                        .map(|s| (*s).clone())
                },
            );
            Some((topic, d))
        });
        if pod.is_none() {
            self.pod_stamps().remove(key);
        }
        let (withdraw, send) = {
            let published = self.published();
            let have = published.get(key);
            let withdraw: Vec<String> = have
                .map(|h| {
                    h.keys()
                        .filter(|t| want.as_ref().is_none_or(|(w, _)| w != *t))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            let send = match &want {
                Some((topic, d)) => {
                    let hash = desired::content_hash(d);
                    (have.and_then(|h| h.get(topic)) != Some(&hash)).then(|| (topic.clone(), d, hash))
                }
                None => None,
            };
            (withdraw, send)
        };
        for topic in withdraw {
            tracing::debug!(pod = %key, %topic, "withdrawing a desired pod");
            self.mqtt
                .publish(topic.clone(), QoS::AtLeastOnce, true, Vec::new())
                .await?;
            if let Some(h) = self.published().get_mut(key) {
                h.remove(&topic);
            }
            if let Some(node) = Topic::parse(&topic).as_ref().and_then(Topic::node_name) {
                self.podset_changed(node, None);
            }
        }
        if let Some((topic, d, hash)) = send {
            let bytes = serde_json::to_vec(d).map_err(|source| GatewayError::Encode {
                key: key.clone(),
                source,
            })?;
            if bytes.len() > self.max_payload {
                tracing::error!(pod = %key, bytes = bytes.len(), limit = self.max_payload,
                    "the pod with its ConfigMaps and Secrets is too large to send to its node; make them smaller");
            } else {
                tracing::debug!(pod = %key, %topic, "publishing a desired pod");
                self.mqtt
                    .publish(topic.clone(), QoS::AtLeastOnce, true, bytes)
                    .await?;
            }
            self.published()
                .entry(key.clone())
                .or_default()
                .insert(topic, hash);
            let p = &d.pod;
            if let Some(node) = p.spec.node_name.as_deref() {
                let uid = p.metadata.uid.as_deref().unwrap_or_default();
                self.podset_changed(node, Some((p.metadata.namespace(), p.metadata.name(), uid)));
            }
        }
        if self.published().get(key).is_some_and(HashMap::is_empty) {
            self.published().remove(key);
        }
        Ok(Action::Done)
    }
}
