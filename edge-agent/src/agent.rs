//! The agent's run loop: load identity and journal, resume the journalled
//! pods, then serve the link — join, heartbeats, desired pods and the node's
//! pod set in, pod reports out — until the shutdown future resolves.
//!
//! Service routes (`services/…`, `serviceset`) go to the proxy
//! ([`crate::proxy`]), whose counters are published on
//! `nodes/{node}/proxy-stats` every heartbeat period.
//!
//! The pod set (`nodes/{node}/podset`) prunes the journal: a pod deleted
//! while the node was away is dropped even when its withdrawal was lost
//! (a restarted broker, a dropped session).
//!
//! Shutdown publishes `online = false`, disconnects and returns. Pods of
//! in-process runtimes end with the process; pods of out-of-process runtimes
//! (containerd, later) keep running and are adopted on the next start.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use rumqttc::ConnectReturnCode;
use shturman_api::meta::Time;
use shturman_api::wire::{
    DesiredPod, JoinRequest, JoinResult, PodReport, PodSet, ProxyStats, ServiceTopic, Stamp, Topic,
};

use crate::config::Config;
use crate::facts::{self, Facts, HeartbeatInput};
use crate::identity::{Identity, IdentityError};
use crate::journal::{Journal, JournalError};
use crate::link::{Link, LinkEvent, online_topic};
use crate::logs_service::LogService;
use crate::manager::PodManager;
use crate::plan::{self, PodKey};
use crate::proxy::{Proxy, ProxyConfig};
use crate::runtime::{PodClass, Runtimes};
use crate::sign;
use crate::state::{AgentState, OfflineLog, PodState};
use crate::{fsutil, state};

/// How long to wait for a JoinResult before asking again.
const JOIN_RETRY: Duration = Duration::from_secs(5);
/// How often runtimes are asked for pod status changes.
const STATUS_POLL: Duration = Duration::from_secs(1);
/// Hint printed with every refused join.
const TOKEN_HINT: &str = "create one with `shturman token create` on the control plane";

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The join was refused: the operator must act (exit code 2).
    #[error("the control plane refused the join token: {0}; {TOKEN_HINT}")]
    JoinRefused(String),
    /// Not joined and no token (exit code 2).
    #[error("node {0:?} has not joined yet and no --token was given; {TOKEN_HINT}")]
    NoToken(String),
    /// The control plane no longer accepts this node's secret (exit code 2).
    #[error(
        "the control plane refused node {node:?}'s own secret ({why}); it may have been deleted: \
         start the agent with a new --token to join again"
    )]
    SecretRefused { node: String, why: String },
}

impl AgentError {
    /// Whether a person must act before a restart can help (exit code 2).
    pub fn needs_operator(&self) -> bool {
        matches!(
            self,
            AgentError::JoinRefused(_) | AgentError::NoToken(_) | AgentError::SecretRefused { .. }
        )
    }
}

/// Where the join stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Join {
    /// Connected with the token; a JoinRequest is out.
    Pending,
    /// Accepted (now or in an earlier run).
    Done,
}

struct Agent {
    cfg: Config,
    identity: Identity,
    key: Vec<u8>,
    journal: Journal,
    manager: PodManager,
    facts: Facts,
    offline: OfflineLog,
    journal_pods: usize,
    seq: u64,
    connected: bool,
    /// Connected at least once in this run (later refusals are retried, not fatal).
    ever_connected: bool,
    join: Join,
    /// Whether the password in use is the token (else the node secret).
    using_token: bool,
    /// Connections closed at CONNECT in a row.
    closed_at_connect: u32,
    /// Revision of the newest pod set applied in this run (older ones,
    /// delivered late, are ignored).
    podset_revision: u64,
    /// Serves `shturman logs` requests from the runtimes' log stores.
    logs: LogService,
    /// The state file is behind (written at the next status poll).
    state_dirty: bool,
    /// The Service proxy, fed from the Service topics.
    proxy: Proxy,
    /// The last proxy counters sent listed some port (so an empty list is
    /// sent once when the last one goes).
    proxy_stats_sent: bool,
}

/// Runs the agent until `shutdown` resolves or a fatal error.
pub async fn run(
    cfg: Config,
    runtimes: Runtimes,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let started = now();
    let identity = Identity::start(&cfg.data_dir, &cfg.node_name)?;
    tracing::info!(node = %cfg.node_name, epoch = identity.epoch, joined = identity.joined, "agent starting");
    let journal = Journal::open(&cfg.data_dir)?;
    let loaded = blocking({
        let j = journal.clone();
        move || j.load()
    })
    .await?;
    for skipped in &loaded.skipped {
        tracing::warn!("journal entry skipped: {skipped}");
    }
    let facts = Facts::new(started, cfg.max_pods, cfg.node_ip);
    let log_stores = runtimes.log_stores();
    let mut manager = PodManager::new(runtimes, Some(facts.internal_ip().to_string()));
    let journal_pods = loaded.pods.len();
    for (k, d) in loaded.pods {
        manager.set_desired(k, Some(d));
    }
    let mut offline = OfflineLog::default();
    offline.push(
        started,
        format!(
            "agent started (epoch {}) with {journal_pods} pods from the journal",
            identity.epoch
        ),
    );
    tracing::info!(pods = journal_pods, "loaded the journal");
    let (password, using_token, join) = if identity.joined {
        (identity.node_secret.clone(), false, Join::Done)
    } else {
        let token = cfg
            .token
            .clone()
            .ok_or_else(|| AgentError::NoToken(cfg.node_name.clone()))?;
        (token, true, Join::Pending)
    };
    let logs = LogService::new(
        cfg.node_name.clone(),
        sign::mac_key(&identity.node_secret),
        log_stores,
    );
    let cfg_node_ip = cfg.node_ip;
    let cfg_service_cidr = cfg.service_cidr;
    let mut agent = Agent {
        logs,
        key: sign::mac_key(&identity.node_secret),
        cfg,
        identity,
        journal,
        manager,
        facts,
        offline,
        journal_pods,
        seq: 0,
        connected: false,
        ever_connected: false,
        join,
        using_token,
        closed_at_connect: 0,
        podset_revision: 0,
        state_dirty: false,
        proxy: Proxy::start(ProxyConfig {
            node_ip: cfg_node_ip,
            manage_interface: true,
            service_cidr: Some(cfg_service_cidr),
            ..ProxyConfig::default()
        }),
        proxy_stats_sent: false,
    };
    agent.reconcile().await;
    agent.write_state().await;

    let will = sign::online_payload(&agent.key, false);
    let mut link = Link::start(&agent.cfg.mqtt, &agent.cfg.node_name, password, will);
    let mut heartbeat = tokio::time::interval(agent.cfg.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut join_retry = tokio::time::interval_at(tokio::time::Instant::now() + JOIN_RETRY, JOIN_RETRY);
    // Runtimes raise `changed` when a pod starts, exits or waits, and the
    // change is reported at once; the poll is a safety net for anything a
    // runtime learns without raising it.
    let changed = agent.manager.changed();
    // A pod's stop runs on its own; when it ends, a replacement may start.
    let stopped = agent.manager.stopped();
    let mut status_poll = tokio::time::interval(STATUS_POLL);
    status_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let result = loop {
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            ev = link.next() => {
                let Some(ev) = ev else { break Ok(()) };
                if let Err(e) = agent.on_event(ev, &link).await {
                    break Err(e);
                }
            }
            _ = heartbeat.tick() => {
                if agent.ready() {
                    agent.manager.refresh().await;
                    agent.send_heartbeat(&link).await;
                    agent.flush_reports(&link);
                    agent.send_proxy_stats(&link);
                }
            }
            () = changed.notified() => {
                if agent.ready() {
                    agent.manager.refresh().await;
                    agent.flush_reports(&link);
                }
            }
            () = stopped.notified() => {
                agent.reconcile().await;
                if agent.ready() {
                    agent.flush_reports(&link);
                }
                agent.state_dirty = true;
            }
            _ = status_poll.tick() => {
                if agent.ready() {
                    agent.manager.refresh().await;
                    agent.flush_reports(&link);
                }
                if agent.state_dirty {
                    agent.write_state().await;
                }
            }
            _ = join_retry.tick() => {
                if agent.connected && agent.join == Join::Pending {
                    agent.send_join(&link);
                }
            }
        }
    };
    tracing::info!("shutting down: publishing online=false and disconnecting");
    agent.logs.shutdown().await;
    agent.proxy.shutdown();
    link.close(agent.connected, sign::online_payload(&agent.key, false))
        .await;
    agent.connected = false;
    agent.write_state().await;
    result
}

impl Agent {
    fn ready(&self) -> bool {
        self.connected && self.join == Join::Done
    }

    fn stamp(&mut self) -> Stamp {
        self.seq += 1;
        Stamp {
            epoch: self.identity.epoch,
            seq: self.seq,
        }
    }

    async fn on_event(&mut self, ev: LinkEvent, link: &Link) -> Result<(), AgentError> {
        match ev {
            LinkEvent::Connected => {
                self.closed_at_connect = 0;
                tracing::info!(broker = %format!("{}:{}", self.cfg.mqtt.host, self.cfg.mqtt.port), "link up");
                self.connected = true;
                self.ever_connected = true;
                if let Err(e) = link.subscribe() {
                    tracing::warn!(error = %e, "subscribing failed");
                }
                match self.join {
                    Join::Pending => self.send_join(link),
                    Join::Done => self.on_ready(link).await,
                }
                self.write_state().await;
            }
            LinkEvent::Refused(code) => return self.on_refused(code, &format!("{code:?}"), link),
            LinkEvent::ClosedAtConnect => {
                // rumqttd refuses credentials by closing without a CONNACK;
                // twice in a row before any success counts as a refusal.
                self.closed_at_connect += 1;
                if self.closed_at_connect >= 2 {
                    self.closed_at_connect = 0;
                    let why = "it closed the connection at CONNECT";
                    return self.on_refused(ConnectReturnCode::NotAuthorized, why, link);
                }
            }
            LinkEvent::Disconnected(reason) => {
                if self.connected {
                    tracing::warn!(%reason, "link down; pods keep running, reconnecting");
                    self.offline.push(now(), format!("link lost: {reason}"));
                    self.connected = false;
                    self.write_state().await;
                } else {
                    tracing::debug!(%reason, "still no link");
                }
            }
            LinkEvent::Message { topic, payload, .. } if ServiceTopic::parse(&topic).is_some() => {
                if let Some(t) = ServiceTopic::parse(&topic) {
                    self.proxy.on_message(&t, &payload);
                }
            }
            LinkEvent::Message {
                topic,
                payload,
                retain,
            } => match Topic::parse(&topic) {
                Some(Topic::Joined { node }) if node == self.cfg.node_name => {
                    self.on_join_result(&payload, link).await?;
                }
                Some(Topic::DesiredPod {
                    node,
                    namespace,
                    name,
                }) if node == self.cfg.node_name => {
                    self.on_desired(PodKey::new(namespace, name), &payload, retain, link)
                        .await;
                }
                Some(Topic::PodSet { node }) if node == self.cfg.node_name => {
                    self.on_pod_set(&payload, link).await;
                }
                Some(Topic::LogRequest { node }) if node == self.cfg.node_name && self.ready() => {
                    self.logs
                        .on_request(&payload, self.manager.desired(), link.publisher());
                }
                Some(Topic::LogCancel { node, id }) if node == self.cfg.node_name => {
                    self.logs.on_cancel(&id);
                }
                _ => tracing::warn!(%topic, "message on an unexpected topic dropped"),
            },
        }
        Ok(())
    }

    fn on_refused(&mut self, code: ConnectReturnCode, why: &str, link: &Link) -> Result<(), AgentError> {
        let auth = matches!(
            code,
            ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized
        );
        if !auth || self.ever_connected {
            tracing::warn!(?code, "the broker refused the connection; retrying");
            return Ok(());
        }
        if self.using_token {
            return Err(AgentError::JoinRefused(format!(
                "the MQTT broker refused node {:?} with it ({why})",
                self.cfg.node_name
            )));
        }
        match self.cfg.token.clone() {
            Some(token) => {
                tracing::warn!(
                    ?code,
                    "the control plane refused this node's secret; joining again with --token"
                );
                self.using_token = true;
                self.join = Join::Pending;
                link.set_password(token);
                Ok(())
            }
            None => Err(AgentError::SecretRefused {
                node: self.cfg.node_name.clone(),
                why: why.to_string(),
            }),
        }
    }

    fn send_join(&mut self, link: &Link) {
        let req = JoinRequest {
            node: self.cfg.node_name.clone(),
            token: self.cfg.token.clone().unwrap_or_default(),
            node_secret: self.identity.node_secret.clone(),
            agent_version: facts::AGENT_VERSION.to_string(),
            stamp: self.stamp(),
        };
        tracing::info!("asking the control plane to join");
        let topic = Topic::Join {
            node: self.cfg.node_name.clone(),
        }
        .name();
        match serde_json::to_vec(&req) {
            Ok(body) => publish_or_warn(link, topic, false, body),
            Err(e) => tracing::error!(error = %e, "cannot encode the join request"),
        }
    }

    async fn on_join_result(&mut self, payload: &[u8], link: &Link) -> Result<(), AgentError> {
        let res: JoinResult = match serde_json::from_slice(payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "malformed JoinResult dropped");
                return Ok(());
            }
        };
        if self.join != Join::Pending {
            tracing::debug!(?res, "JoinResult while not joining; ignored");
            return Ok(());
        }
        if !res.accepted {
            return Err(AgentError::JoinRefused(if res.message.is_empty() {
                "no reason given".into()
            } else {
                res.message
            }));
        }
        tracing::info!("joined the cluster");
        self.identity.joined = true;
        let id = self.identity.clone();
        let dir = self.cfg.data_dir.clone();
        blocking(move || id.save(&dir)).await?;
        self.join = Join::Done;
        self.using_token = false;
        link.set_password(self.identity.node_secret.clone());
        self.on_ready(link).await;
        self.write_state().await;
        Ok(())
    }

    /// Joined and connected: say everything again.
    async fn on_ready(&mut self, link: &Link) {
        let online = sign::online_payload(&self.key, true);
        publish_or_warn(link, online_topic(&self.cfg.node_name), true, online);
        self.manager.resync();
        self.send_heartbeat(link).await;
        self.flush_reports(link);
    }

    async fn on_desired(&mut self, key: PodKey, payload: &[u8], retain: bool, link: &Link) {
        let pod = if payload.is_empty() {
            None
        } else {
            match serde_json::from_slice::<DesiredPod>(payload) {
                Ok(d) if PodKey::of(&d.pod) == key => Some(d),
                Ok(d) => {
                    tracing::warn!(topic_pod = %key, payload_pod = %PodKey::of(&d.pod), "DesiredPod for another pod dropped");
                    return;
                }
                Err(e) => {
                    tracing::warn!(pod = %key, error = %e, "malformed DesiredPod dropped");
                    return;
                }
            }
        };
        if !self.manager.set_desired(key.clone(), pod.clone()) {
            tracing::debug!(pod = %key, retain, "desired pod unchanged");
            return;
        }
        let j = self.journal.clone();
        let k = key.clone();
        let saved = blocking(move || match &pod {
            Some(d) => j.put(&k, d),
            None => j.remove(&k),
        })
        .await;
        if let Err(e) = saved {
            tracing::error!(pod = %key, error = %e, "journal write failed; the pod will not survive a restart");
        }
        self.reconcile().await;
        self.flush_reports(link);
        // The state file lists every pod: rewriting it per pod would make
        // admitting n pods cost O(n²) and an fsync each; the poll writes it.
        self.state_dirty = true;
    }

    /// The node's complete desired set: drop every held pod it covers and
    /// lacks (deleted, perhaps while this node was away); pods it lists that
    /// are not here yet come on their own topics.
    async fn on_pod_set(&mut self, payload: &[u8], link: &Link) {
        if payload.is_empty() {
            return;
        }
        let set = match serde_json::from_slice::<PodSet>(payload) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "malformed PodSet dropped");
                return;
            }
        };
        if set.revision < self.podset_revision {
            tracing::debug!(
                revision = set.revision,
                newest = self.podset_revision,
                "older pod set ignored"
            );
            return;
        }
        self.podset_revision = set.revision;
        let drop = plan::outside_set(&set, self.manager.desired());
        let awaited = plan::awaited(&set, self.manager.desired());
        tracing::info!(
            revision = set.revision,
            pods = set.pods.len(),
            dropping = drop.len(),
            awaited = awaited.len(),
            "pod set received"
        );
        if drop.is_empty() {
            return;
        }
        for key in &drop {
            tracing::info!(pod = %key, "dropping pod {key}: it is no longer in this node's pod set");
            self.manager.set_desired(key.clone(), None);
        }
        let j = self.journal.clone();
        let removed = blocking(move || drop.iter().try_for_each(|k| j.remove(k))).await;
        if let Err(e) = removed {
            tracing::error!(error = %e, "journal write failed; a dropped pod may come back after a restart");
        }
        self.reconcile().await;
        self.flush_reports(link);
        // The state file lists every pod: rewriting it per pod would make
        // admitting n pods cost O(n²) and an fsync each; the poll writes it.
        self.state_dirty = true;
    }

    async fn reconcile(&mut self) {
        for done in self.manager.reconcile(now()).await {
            tracing::info!("{done}");
            if !self.connected {
                self.offline.push(now(), &done);
            }
        }
    }

    async fn send_heartbeat(&mut self, link: &Link) {
        let offline_log = self.offline.take();
        let input = HeartbeatInput {
            node: self.cfg.node_name.clone(),
            stamp: self.stamp(),
            labels: self.cfg.labels.clone(),
            pods: u64::try_from(self.manager.pod_count()).unwrap_or(u64::MAX),
            // Offered only with an OCI runtime in this build and containerd answering.
            containerd: self.manager.offers(PodClass::Oci)
                && facts::containerd_answers(self.cfg.containerd_socket.as_deref()).await,
            offline_log,
        };
        let hb = self.facts.heartbeat(input, now());
        let topic = Topic::NodeStatus {
            node: self.cfg.node_name.clone(),
        }
        .name();
        let sent = sign::seal(&self.key, &hb)
            .map_err(|e| e.to_string())
            .and_then(|s| serde_json::to_vec(&s).map_err(|e| e.to_string()))
            .and_then(|p| link.publish(topic, true, p).map_err(|e| e.to_string()));
        if let Err(e) = sent {
            tracing::warn!(error = %e, "heartbeat not sent");
            self.offline.restore(hb.offline_log);
        }
    }

    /// Publishes the proxy's counters (signed, not retained) while it serves
    /// any Service port, and once more when it stopped serving the last.
    fn send_proxy_stats(&mut self, link: &Link) {
        let ports = self.proxy.stats();
        if ports.is_empty() && !self.proxy_stats_sent {
            return;
        }
        let stats = ProxyStats {
            node: self.cfg.node_name.clone(),
            stamp: self.stamp(),
            ports,
        };
        let topic = Topic::ProxyStats {
            node: self.cfg.node_name.clone(),
        }
        .name();
        let sent = sign::seal(&self.key, &stats)
            .map_err(|e| e.to_string())
            .and_then(|s| serde_json::to_vec(&s).map_err(|e| e.to_string()))
            .and_then(|p| link.publish(topic, false, p).map_err(|e| e.to_string()));
        match sent {
            Ok(()) => self.proxy_stats_sent = !stats.ports.is_empty(),
            Err(e) => tracing::debug!(error = %e, "proxy counters not sent"),
        }
    }

    /// Sends the pod statuses that changed (all of them after a resync).
    fn flush_reports(&mut self, link: &Link) {
        if !self.ready() {
            return;
        }
        for r in self.manager.take_reports() {
            let report = PodReport {
                node: self.cfg.node_name.clone(),
                namespace: r.key.namespace.clone(),
                name: r.key.name.clone(),
                uid: r.uid,
                stamp: self.stamp(),
                status: r.status,
            };
            let topic = Topic::PodStatus {
                node: self.cfg.node_name.clone(),
                namespace: r.key.namespace,
                name: r.key.name,
            }
            .name();
            let sent = sign::seal(&self.key, &report)
                .map_err(|e| e.to_string())
                .and_then(|s| serde_json::to_vec(&s).map_err(|e| e.to_string()))
                .and_then(|p| link.publish(topic, false, p).map_err(|e| e.to_string()));
            if let Err(e) = sent {
                tracing::warn!(error = %e, "pod report not sent; all will be sent again");
                self.manager.resync();
                return;
            }
        }
    }

    async fn write_state(&mut self) {
        self.state_dirty = false;
        let st = AgentState {
            node: self.cfg.node_name.clone(),
            epoch: self.identity.epoch,
            joined: self.join == Join::Done,
            connected: self.connected,
            journal_pods: self.journal_pods,
            pods: self
                .manager
                .summary()
                .into_iter()
                .map(|(k, uid, s)| PodState {
                    namespace: k.namespace,
                    name: k.name,
                    uid,
                    phase: format!("{:?}", s.phase.unwrap_or_default()),
                    reason: s.reason,
                })
                .collect(),
            updated_at: Some(now()),
        };
        let path: PathBuf = self.cfg.data_dir.join(state::FILE);
        let written = blocking(move || {
            let bytes = serde_json::to_vec_pretty(&st).map_err(std::io::Error::other)?;
            fsutil::write_atomic(&path, &bytes, 0o644)
        })
        .await;
        if let Err(e) = written {
            tracing::warn!(error = %e, "cannot write the state file");
        }
    }
}

fn publish_or_warn(link: &Link, topic: String, retain: bool, payload: Vec<u8>) {
    if let Err(e) = link.publish(topic, retain, payload) {
        tracing::warn!(error = %e, "publish failed");
    }
}

fn now() -> Time {
    Time(chrono::Utc::now())
}

/// Runs file I/O off the async runtime (a panic in it is passed on).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
