//! The MQTT link (rumqttc): one task owns the event loop, reconnects forever
//! with jittered exponential back-off, and turns what happens into
//! [`LinkEvent`]s; the agent publishes through [`Link`] without ever blocking
//! on the network.
//!
//! Session: client id = node name, username = node name, password = the join
//! token until joined and the node secret after; `clean_session = false` so a
//! broker that keeps sessions queues the deletions published while the node
//! was away (a broker that lost the session, or was restarted, cannot: the
//! retained pod set covers that). Subscriptions, made on every connect: the
//! pod set, the desired pods, the join answer, log requests and cancels,
//! and every Service's route and the service set (for the proxy). Last will:
//! `nodes/{node}/online` = `false`, retained.

use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing,
    Packet, QoS, StateError,
};
use shturman_api::wire::{self, Topic};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::MqttAddr;

/// Keep-alive: a silent link is noticed by the broker within 1.5× this.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Something that happened on the link.
#[derive(Debug)]
pub enum LinkEvent {
    /// CONNACK accepted; subscriptions must be (re)made.
    Connected,
    /// A message on a subscribed topic.
    Message {
        topic: String,
        payload: Vec<u8>,
        retain: bool,
    },
    /// The broker refused the credentials (or the connection).
    Refused(ConnectReturnCode),
    /// The broker closed the connection after CONNECT without a CONNACK:
    /// rumqttd's way of refusing credentials (or of being full).
    ClosedAtConnect,
    /// The link broke (or could not be made); the task retries.
    Disconnected(String),
}

#[derive(Debug, thiserror::Error)]
#[error("cannot queue an MQTT request: {0}")]
pub struct LinkError(String);

/// The agent's handle on the link.
pub struct Link {
    client: AsyncClient,
    node: String,
    events: mpsc::Receiver<LinkEvent>,
    password: watch::Sender<String>,
    task: JoinHandle<()>,
}

impl Link {
    /// Starts connecting (in a task) as `node` with `password`; `will` is the
    /// (signed) `online = false` payload the broker publishes if the link dies.
    pub fn start(addr: &MqttAddr, node: &str, password: String, will: Vec<u8>) -> Link {
        let mut opts = MqttOptions::new(node, addr.host.clone(), addr.port);
        opts.set_credentials(node, password.clone())
            .set_keep_alive(KEEP_ALIVE)
            .set_clean_session(false)
            .set_max_packet_size(wire::MAX_PACKET_BYTES, wire::MAX_PACKET_BYTES)
            .set_last_will(LastWill::new(online_topic(node), will, QoS::AtLeastOnce, true));
        let (client, mut eventloop) = AsyncClient::new(opts, 256);
        // Small messages (acks, pod reports) go out at once: with Nagle on,
        // a report behind an unacknowledged ack waits out the broker's
        // delayed ACK (~40 ms on Linux).
        let mut net = rumqttc::NetworkOptions::new();
        net.set_tcp_nodelay(true);
        eventloop.set_network_options(net);
        let (tx, events) = mpsc::channel(256);
        let (password, pw_rx) = watch::channel(password);
        let task = tokio::spawn(drive(eventloop, node.to_string(), tx, pw_rx));
        Link {
            client,
            node: node.to_string(),
            events,
            password,
            task,
        }
    }

    /// The next event; `None` once the link task has ended.
    pub async fn next(&mut self) -> Option<LinkEvent> {
        self.events.recv().await
    }

    /// The password for the next connection attempts.
    pub fn set_password(&self, password: String) {
        self.password.send_replace(password);
    }

    /// Subscribes to everything this node must hear (call on every connect).
    pub fn subscribe(&self) -> Result<(), LinkError> {
        let filters = wire::node_filters(&self.node)
            .into_iter()
            .chain(wire::node_log_filters(&self.node))
            .chain(wire::services_filters())
            .map(|f| rumqttc::SubscribeFilter::new(f, QoS::AtLeastOnce));
        self.client
            .try_subscribe_many(filters)
            .map_err(|e| LinkError(e.to_string()))
    }

    /// Queues a QoS 1 publish; never waits.
    pub fn publish(&self, topic: String, retain: bool, payload: Vec<u8>) -> Result<(), LinkError> {
        self.client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload)
            .map_err(|e| LinkError(e.to_string()))
    }

    /// A handle for tasks that stream replies (logs); it waits for room in
    /// the client's queue instead of failing.
    pub fn publisher(&self) -> Publisher {
        Publisher(self.client.clone())
    }

    /// Publishes `offline` (the signed `online = false`), disconnects, and
    /// waits (bounded) for the task to write both.
    pub async fn close(self, connected: bool, offline: Vec<u8>) {
        if connected {
            let _ = self.publish(online_topic(&self.node), true, offline);
            let _ = self.client.try_disconnect();
        }
        let Link { task, events, .. } = self;
        drop(events);
        if connected {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(3), task).await.is_err() {
                abort.abort();
            }
        } else {
            task.abort();
        }
    }
}

/// A cloneable, waiting publisher (QoS 1, not retained) for reply streams.
#[derive(Clone)]
pub struct Publisher(AsyncClient);

impl Publisher {
    #[cfg(test)]
    pub(crate) fn for_tests(client: AsyncClient) -> Publisher {
        Publisher(client)
    }

    /// Queues a QoS 1 publish, waiting while the client's queue is full.
    pub async fn publish(&self, topic: String, payload: Vec<u8>) -> Result<(), LinkError> {
        self.0
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .map_err(|e| LinkError(e.to_string()))
    }
}

/// `shturman/v1/nodes/{node}/online`.
pub fn online_topic(node: &str) -> String {
    Topic::NodeOnline { node: node.into() }.name()
}

/// The link task: polls the event loop, reconnecting with back-off.
async fn drive(
    mut el: EventLoop,
    node: String,
    tx: mpsc::Sender<LinkEvent>,
    mut pw: watch::Receiver<String>,
) {
    let mut backoff = wire::RECONNECT_MIN;
    let mut up = false;
    loop {
        if pw.has_changed().unwrap_or(false) {
            let p = pw.borrow_and_update().clone();
            el.mqtt_options.set_credentials(node.clone(), p);
        }
        let ev = match el.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = wire::RECONNECT_MIN;
                up = true;
                Some(LinkEvent::Connected)
            }
            Ok(Event::Incoming(Packet::Publish(p))) => Some(LinkEvent::Message {
                topic: p.topic,
                payload: p.payload.to_vec(),
                retain: p.retain,
            }),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => None,
            Err(e) => {
                let ev = match e {
                    ConnectionError::ConnectionRefused(code) => LinkEvent::Refused(code),
                    ConnectionError::MqttState(StateError::ConnectionAborted) if !up => {
                        LinkEvent::ClosedAtConnect
                    }
                    other => LinkEvent::Disconnected(other.to_string()),
                };
                up = false;
                if tx.send(ev).await.is_err() {
                    return;
                }
                tokio::time::sleep(wire::jittered(backoff, getrandom::u32().unwrap_or(0))).await;
                backoff = (backoff * 2).min(wire::RECONNECT_MAX);
                None
            }
        };
        if let Some(ev) = ev
            && tx.send(ev).await.is_err()
        {
            return;
        }
    }
}
