//! The embedded MQTT broker: rumqttd 0.20, one MQTT 3.1.1 listener, run on
//! a thread of its own with its own single-threaded tokio runtime (rumqttd
//! is written that way: its router is a blocking thread, its listener a
//! future that never returns).
//!
//! What this module adds around rumqttd (docs/MQTT.md has the findings):
//!
//! - **Port 0.** rumqttd binds the address itself and never says which port
//!   it got, so [`start`] binds first, keeps the port the OS picked, closes
//!   its socket and gives rumqttd that port (the same trick tests use for a
//!   free port; the window in between is a few microseconds).
//! - **Readiness.** [`start`] returns once a real MQTT client (the control
//!   plane's internal credential) has been accepted, so callers never race
//!   the listener.
//! - **Authentication.** Every CONNECT goes through the [`AuthFn`] given;
//!   the control plane's is `gateway::auth`. rumqttd refuses by closing the
//!   connection *without* a CONNACK, so a refused client sees the link drop
//!   rather than a return code.
//! - **Shutdown.** rumqttd has no stop. Dropping the listener's runtime
//!   closes the listening socket and every client connection; the router
//!   thread cannot be stopped and stays parked on its channel (one idle
//!   thread and its in-memory retained messages per broker started in a
//!   process: nothing for `shturman control`, a few per test binary).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttd::protocol::v4::V4;
use rumqttd::{ConnectionSettings, LinkType, Router, RouterConfig, Server, ServerSettings};
use tokio::sync::oneshot;

/// Decides a CONNECT: `(client_id, username, password) → allowed`.
pub type AuthFn =
    Arc<dyn Fn(String, String, String) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// How the embedded broker runs.
#[derive(Clone, Debug)]
pub struct BrokerSettings {
    /// Where it listens; port 0 picks a free one.
    pub addr: SocketAddr,
    /// Largest MQTT packet accepted, in bytes (a bigger one drops the
    /// sender's connection, so every client must keep under it).
    pub max_payload: usize,
    /// Most simultaneous connections (one per node, plus the gateway).
    pub max_connections: usize,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        BrokerSettings {
            addr: SocketAddr::from(([127, 0, 0, 1], 1883)),
            max_payload: shturman_api::wire::MAX_PACKET_BYTES,
            max_connections: 10_010,
        }
    }
}

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("the MQTT broker cannot listen on {addr}: {source}; pick another address with --mqtt-addr")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Url(String),
    #[error("the MQTT broker's thread could not start: {0}")]
    Thread(std::io::Error),
    #[error("the MQTT broker on {addr} did not accept the control plane within {secs} s: {last}")]
    NotReady {
        addr: SocketAddr,
        secs: u64,
        last: String,
    },
}

/// A running embedded broker.
pub struct EmbeddedBroker {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Starts the broker and waits until it accepts `probe` (username, password).
pub async fn start(
    settings: BrokerSettings,
    auth: AuthFn,
    probe: (String, String),
) -> Result<EmbeddedBroker, BrokerError> {
    let addr = reserve(settings.addr)?;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server_settings = server_settings(&settings, addr, auth);
    let router_config = router_config(&settings);
    let thread = std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || run(router_config, server_settings, stop_rx))
        .map_err(BrokerError::Thread)?;
    let broker = EmbeddedBroker {
        addr,
        stop: Some(stop_tx),
        thread: Some(thread),
    };
    let deadline = Duration::from_secs(10);
    if let Err(last) = wait_accepting(addr, &probe, deadline).await {
        broker.shutdown().await;
        return Err(BrokerError::NotReady {
            addr,
            secs: deadline.as_secs(),
            last,
        });
    }
    tracing::info!(%addr, "embedded MQTT broker ready");
    Ok(broker)
}

impl EmbeddedBroker {
    /// The address it listens on (the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes the listener and every client connection; waits (briefly)
    /// for the broker's thread to end.
    pub async fn shutdown(mut self) {
        self.stop_now();
        if let Some(t) = self.thread.take() {
            let joined = tokio::task::spawn_blocking(move || t.join());
            if tokio::time::timeout(Duration::from_secs(5), joined)
                .await
                .is_err()
            {
                tracing::warn!("the MQTT broker's thread did not stop within 5 s; leaving it");
            }
        }
    }

    fn stop_now(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// Binds `addr` to learn the port (the OS's pick for port 0) and to fail
/// early with a clear error; closes it again for rumqttd to bind.
fn reserve(addr: SocketAddr) -> Result<SocketAddr, BrokerError> {
    let l = std::net::TcpListener::bind(addr).map_err(|source| BrokerError::Bind { addr, source })?;
    l.local_addr()
        .map_err(|source| BrokerError::Bind { addr, source })
}

fn server_settings(settings: &BrokerSettings, addr: SocketAddr, auth: AuthFn) -> ServerSettings {
    let mut connections = ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: settings.max_payload,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: false,
    };
    connections.set_auth_handler(move |client_id, user, pass| auth(client_id, user, pass));
    ServerSettings {
        name: "shturman-v4".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    }
}

fn router_config(settings: &BrokerSettings) -> RouterConfig {
    RouterConfig {
        max_connections: settings.max_connections,
        max_outgoing_packet_count: 200,
        // Each subscribed filter keeps a commit log of at most
        // size × count bytes: heartbeats of the whole fleet share one.
        max_segment_size: settings.max_payload.max(1024 * 1024),
        max_segment_count: 4,
        custom_segment: Some(HashMap::new()),
        initialized_filters: None,
        shared_subscriptions_strategy: rumqttd::Strategy::default(),
    }
}

/// The broker thread: the router (its own thread, for good) and the
/// listener on a runtime that is dropped on stop.
fn run(router: RouterConfig, settings: ServerSettings, stop: oneshot::Receiver<()>) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "the MQTT broker's runtime could not start");
            return;
        }
    };
    let router_tx = Router::new(0, router).spawn();
    let mut server = Server::new(settings, router_tx, V4);
    runtime.block_on(async {
        tokio::select! {
            r = server.start(LinkType::Remote) => {
                if let Err(e) = r {
                    tracing::error!(error = ?e, "the MQTT broker's listener stopped");
                }
            }
            _ = stop => {}
        }
    });
    // Dropping the runtime drops the listener and every connection task.
    runtime.shutdown_timeout(Duration::from_secs(1));
    tracing::info!("embedded MQTT broker stopped");
}

/// Connects as `probe` until the broker answers CONNACK, or `within` passes.
async fn wait_accepting(addr: SocketAddr, probe: &(String, String), within: Duration) -> Result<(), String> {
    let started = Instant::now();
    let mut last = String::from("no answer");
    while started.elapsed() < within {
        let mut opts = rumqttc::MqttOptions::new(
            format!("shturman-probe-{}", uuid::Uuid::new_v4().simple()),
            addr.ip().to_string(),
            addr.port(),
        );
        opts.set_credentials(probe.0.clone(), probe.1.clone());
        opts.set_keep_alive(Duration::from_secs(5));
        let (client, mut events) = rumqttc::AsyncClient::new(opts, 4);
        let polled = tokio::time::timeout(Duration::from_secs(2), events.poll()).await;
        match polled {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)))) => {
                let _ = client.try_disconnect();
                let _ = tokio::time::timeout(Duration::from_millis(200), events.poll()).await;
                return Ok(());
            }
            Ok(Ok(other)) => last = format!("unexpected {other:?}"),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "timed out".into(),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(last)
}

/// Where the control plane's MQTT broker is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MqttChoice {
    /// Run the embedded broker on this address (port 0: any free port).
    Embedded(SocketAddr),
    /// Use an external broker: `mqtt://[user:password@]host[:port]`.
    External(String),
    /// No MQTT at all (tests of the bare API).
    Off,
}

/// An external broker's address and the gateway's login there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerUrl {
    pub host: String,
    pub port: u16,
    pub credentials: Option<crate::gateway::auth::Credentials>,
}

/// Parses `mqtt://[user:password@]host[:port]` (port 1883 by default).
pub fn parse_url(url: &str) -> Result<BrokerUrl, String> {
    let bad = |why: &str| {
        format!(
            "--mqtt-url {url:?} {why}; write it like mqtt://broker.lan:1883 or mqtt://user:password@broker.lan:1883"
        )
    };
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
        .ok_or_else(|| bad("must start with mqtt:// (TLS, mqtts://, is not supported yet)"))?;
    let rest = rest.trim_end_matches('/');
    let (login, hostport) = match rest.rsplit_once('@') {
        Some((l, h)) => (Some(l), h),
        None => (None, rest),
    };
    let credentials = login
        .map(|l| {
            let (u, p) = l.split_once(':').unwrap_or((l, ""));
            (!u.is_empty())
                .then(|| crate::gateway::auth::Credentials {
                    username: u.to_string(),
                    password: p.to_string(),
                })
                .ok_or_else(|| bad("has an empty user name"))
        })
        .transpose()?;
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => (
            h,
            p.parse::<u16>()
                .map_err(|_| bad("has a port that is not a number from 1 to 65535"))?,
        ),
        _ => (hostport, 1883),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains('/') {
        return Err(bad("has no host"));
    }
    Ok(BrokerUrl {
        host: host.to_string(),
        port,
        credentials,
    })
}

/// The control plane's MQTT side once set up.
pub struct Mqtt {
    /// The embedded broker, when it runs.
    pub broker: Option<EmbeddedBroker>,
    /// The URL agents dial (`mqtt://host:port`), when MQTT is on.
    pub url: Option<String>,
    /// How the node gateway connects, when MQTT is on.
    pub gateway: Option<crate::gateway::GatewayConfig>,
}

/// Starts the embedded broker (or checks the external broker's URL) and
/// says how the gateway connects.
pub async fn setup(choice: &MqttChoice, client: crate::client::Client) -> Result<Mqtt, BrokerError> {
    let max_payload = shturman_api::wire::MAX_PACKET_BYTES;
    let gateway = |host: String, port: u16, credentials| crate::gateway::GatewayConfig {
        host,
        port,
        credentials,
        max_payload,
        ingest_workers: 4,
        // The kubelet's NodeStatus report frequency.
        status_refresh: Duration::from_secs(300),
    };
    match choice {
        MqttChoice::Off => Ok(Mqtt {
            broker: None,
            url: None,
            gateway: None,
        }),
        MqttChoice::External(url) => {
            let parsed = parse_url(url).map_err(BrokerError::Url)?;
            Ok(Mqtt {
                broker: None,
                url: Some(format!("mqtt://{}:{}", parsed.host, parsed.port)),
                gateway: Some(gateway(parsed.host, parsed.port, parsed.credentials)),
            })
        }
        MqttChoice::Embedded(addr) => {
            let internal = crate::gateway::auth::Credentials::internal();
            let hook = crate::gateway::auth::ConnectAuth::new(client, internal.clone())
                .hook(tokio::runtime::Handle::current());
            let settings = BrokerSettings {
                addr: *addr,
                ..BrokerSettings::default()
            };
            let probe = (internal.username.clone(), internal.password.clone());
            let broker = start(settings, hook, probe).await?;
            let bound = broker.addr();
            // Agents on other machines dial the host's address; a wildcard
            // listener is reached locally through loopback.
            let host = if bound.ip().is_unspecified() {
                "127.0.0.1".to_string()
            } else {
                bound.ip().to_string()
            };
            Ok(Mqtt {
                url: Some(format!("mqtt://{bound}")),
                gateway: Some(gateway(host, bound.port(), Some(internal))),
                broker: Some(broker),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("mqtt://broker.lan:1884").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.credentials),
            ("broker.lan", 1884, None)
        );
        let u = parse_url("mqtt://cp:s3cret@10.0.0.2").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("10.0.0.2", 1883));
        assert_eq!(u.credentials.unwrap().password, "s3cret");
        assert_eq!(parse_url("mqtt://[::1]:1999").unwrap().host, "::1");
        for bad in [
            "broker:1883",
            "mqtts://b:1",
            "mqtt://",
            "mqtt://b:port",
            "mqtt://:pw@b",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
