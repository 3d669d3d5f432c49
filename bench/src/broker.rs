//! The MQTT brokers side by side, and Mosquitto as an anchor.
//!
//! - [`Mosquitto`]: the Debian package's `mosquitto` on a free loopback
//!   port with a temp config (anonymous, no persistence; in-flight window
//!   100 as the embedded broker's `max_inflight_count`), killed on drop.
//! - [`ExternalControl`]: the real `shturman control` with `--mqtt-url`
//!   on such a broker (the heartbeat scenario's second data point).
//! - [`run`] (`broker` scenario): messages per second delivered from 100
//!   publishers to 1 subscriber at QoS 1 (the protocol's QoS), heartbeat-
//!   sized payloads on `shturman/v1/…` topics, through the embedded broker
//!   exactly as the control plane starts it (`shturman_control::broker`,
//!   rumqttd, its own thread) and through Mosquitto, with the same
//!   generator, in alternating rounds. The load is closed: at most
//!   [`IN_FLIGHT`] messages are published and not yet delivered at any
//!   moment (a publisher waits for a credit, the subscriber returns one per
//!   message), so the figure is what the broker sustains without dropping,
//!   not how fast it discards a flood. The generator's links set
//!   TCP_NODELAY, as the agent's and the gateway's do: rumqttd never sets
//!   it on the sockets it accepts, and with Nagle on both ends a single
//!   subscriber's acks wait out delayed ACKs (about 5,000 messages/s here,
//!   where Mosquitto is unaffected). The embedded broker runs in this
//!   process, Mosquitto in its own: both share the same two cores with the
//!   generator.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use shturman_control::broker::{self, BrokerSettings};
use tokio::sync::Semaphore;

use crate::report::{Goal, Report, Row};
use crate::spawn::bin;

/// The goal: the embedded broker delivers at least this share of Mosquitto's rate.
const GOAL_RATIO: f64 = 0.8;
/// Payload of every message: about a heartbeat's size.
const PAYLOAD_BYTES: usize = 1200;
/// Messages published and not yet delivered, at most (both brokers keep
/// far more than this per subscriber before dropping).
const IN_FLIGHT: usize = 1000;

/// A running `mosquitto`; killed on drop.
pub struct Mosquitto {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts `mosquitto -c <temp config>` on a free loopback port and waits
    /// until it accepts connections.
    pub async fn start() -> Result<Mosquitto> {
        let Some(program) = find("mosquitto") else {
            bail!("mosquitto is not installed: run scripts/setup.sh (Debian package `mosquitto`)");
        };
        let dir = tempfile::tempdir_in(std::env::temp_dir())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        // Started as root, mosquitto drops to the `mosquitto` user, which
        // cannot read a private temp dir.
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let conf = format!(
            "# Written by shturman-bench.\n\
             {user}\
             persistence false\n\
             log_dest stderr\n\
             log_type error\n\
             listener {port} 127.0.0.1\n\
             allow_anonymous true\n\
             max_inflight_messages 100\n\
             max_queued_messages 10000\n",
            user = if root { "user root\n" } else { "" },
        );
        let path = dir.path().join("mosquitto.conf");
        std::fs::write(&path, conf)?;
        let child = Command::new(program)
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting mosquitto")?;
        let mut m = Mosquitto {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if let Ok(Some(status)) = m.child.try_wait() {
                bail!("mosquitto exited at start: {status}");
            }
            if Instant::now() > deadline {
                bail!("mosquitto did not listen on 127.0.0.1:{port} within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(m)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find(program: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| PathBuf::from(d).join(program))
        .find(|p| p.exists())
}

/// `shturman control` on an external broker (`--mqtt-url`); killed on drop.
pub struct ExternalControl {
    child: Child,
    pub url: String,
    pub token: String,
    pub pid: u32,
    _dir: tempfile::TempDir,
}

impl ExternalControl {
    /// Starts `shturman control --mqtt-url mqtt://127.0.0.1:<mqtt_port>`
    /// (sled store) and waits for /readyz.
    pub async fn start(mqtt_port: u16) -> Result<ExternalControl> {
        let dir = tempfile::tempdir_in(std::env::temp_dir())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let data = dir.path().join("data");
        let child = Command::new(bin("shturman")?)
            .args(["control", "--store", "sled", "--data-dir"])
            .arg(&data)
            .args(["--api-addr", &format!("127.0.0.1:{port}")])
            .args(["--mqtt-url", &format!("mqtt://127.0.0.1:{mqtt_port}")])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        let pid = child.id();
        let mut c = ExternalControl {
            child,
            url: format!("http://127.0.0.1:{port}"),
            token: String::new(),
            pid,
            _dir: dir,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(data.join("admin.conf"))
                && let Some(token) = text.lines().find_map(|l| l.trim().strip_prefix("token: "))
                && http
                    .get(format!("{}/readyz", c.url))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            {
                c.token = token.to_string();
                return Ok(c);
            }
            if let Ok(Some(status)) = c.child.try_wait() {
                bail!("shturman control --mqtt-url exited at start: {status}");
            }
            if Instant::now() > deadline {
                bail!("shturman control --mqtt-url did not become ready in 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ExternalControl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    pub publishers: usize,
    /// Measured window of each round.
    pub window: Duration,
    /// Rounds per broker, alternating.
    pub rounds: usize,
}

/// One round's figures.
#[derive(Clone, Copy, Debug, Default)]
struct Round {
    delivered_per_sec: f64,
    acked_per_sec: f64,
}

/// 100 publishers → 1 subscriber on the broker at `port` for a warm-up and
/// then `window`; counts what the subscriber received in the window.
async fn round(port: u16, opts: &Options, tag: &str) -> Result<Round> {
    let received = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let filter = format!("shturman/v1/bench-{tag}/+/status");
    // The subscriber first, and subscribed, before anyone publishes.
    let mut o = MqttOptions::new(format!("bench-sub-{tag}"), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(15))
        .set_credentials("bench-sub", "x")
        .set_max_packet_size(1 << 20, 1 << 20);
    let (sub, mut sub_events) = AsyncClient::new(o, 64);
    sub_events.set_network_options(nodelay());
    sub.subscribe(&filter, QoS::AtLeastOnce).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout(Duration::from_secs(10), sub_events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => break,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => bail!("the subscriber could not connect to 127.0.0.1:{port}: {e}"),
            Err(_) => bail!("the subscriber got no SUBACK in 10 s"),
        }
        if Instant::now() > deadline {
            bail!("the subscriber got no SUBACK in 10 s");
        }
    }
    let credits = Arc::new(Semaphore::new(IN_FLIGHT));
    let (count, returned) = (received.clone(), credits.clone());
    let sub_task = tokio::spawn(async move {
        while let Ok(ev) = sub_events.poll().await {
            if let Event::Incoming(Packet::Publish(_)) = ev {
                count.fetch_add(1, Ordering::Relaxed);
                returned.add_permits(1);
            }
        }
    });
    let payload = vec![b'x'; PAYLOAD_BYTES];
    let mut pubs = Vec::new();
    for i in 0..opts.publishers {
        let mut o = MqttOptions::new(format!("bench-pub-{tag}-{i}"), "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(15))
            .set_credentials(format!("bench-pub-{i}"), "x")
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut events) = AsyncClient::new(o, 128);
        events.set_network_options(nodelay());
        let topic = format!("shturman/v1/bench-{tag}/pub-{i:04}/status");
        let (stop, acked, payload) = (stop.clone(), acked.clone(), payload.clone());
        let credits = credits.clone();
        let driver = tokio::spawn(async move {
            while let Ok(ev) = events.poll().await {
                if let Event::Incoming(Packet::PubAck(_)) = ev {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let publisher = tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Ok(Ok(credit)) = tokio::time::timeout(Duration::from_secs(1), credits.acquire()).await
                else {
                    continue;
                };
                credit.forget();
                if client
                    .publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone())
                    .await
                    .is_err()
                {
                    break;
                }
            }
            let _ = client.disconnect().await;
        });
        pubs.push((driver, publisher));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (r0, a0, t0) = (
        received.load(Ordering::Relaxed),
        acked.load(Ordering::Relaxed),
        Instant::now(),
    );
    tokio::time::sleep(opts.window).await;
    let (r1, a1, secs) = (
        received.load(Ordering::Relaxed),
        acked.load(Ordering::Relaxed),
        t0.elapsed().as_secs_f64(),
    );
    stop.store(true, Ordering::Relaxed);
    for (driver, publisher) in pubs {
        let _ = tokio::time::timeout(Duration::from_secs(2), publisher).await;
        driver.abort();
    }
    let _ = sub.disconnect().await;
    sub_task.abort();
    #[allow(clippy::cast_precision_loss)]
    Ok(Round {
        delivered_per_sec: (r1 - r0) as f64 / secs,
        acked_per_sec: (a1 - a0) as f64 / secs,
    })
}

/// Small packets (acks) go out at once, as the agent and the gateway set
/// their links.
fn nodelay() -> rumqttc::NetworkOptions {
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(true);
    net
}

/// The embedded broker, started as the control plane starts it (its
/// settings, its thread), with an authenticator that lets everyone in.
async fn embedded() -> Result<broker::EmbeddedBroker> {
    let settings = BrokerSettings {
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        ..BrokerSettings::default()
    };
    let auth: broker::AuthFn = Arc::new(|_, _, _| Box::pin(async { true }));
    Ok(broker::start(settings, auth, ("probe".into(), "probe".into())).await?)
}

fn mean(rounds: &[Round], f: impl Fn(&Round) -> f64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let n = rounds.len().max(1) as f64;
    rounds.iter().map(f).sum::<f64>() / n
}

/// Runs the scenario and adds its rows.
pub async fn run(report: &mut Report, opts: &Options) -> Result<()> {
    eprintln!(
        "broker: {} publishers → 1 subscriber, QoS 1, {PAYLOAD_BYTES}-byte payloads, {} rounds of {:?} each",
        opts.publishers, opts.rounds, opts.window
    );
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for r in 0..opts.rounds.max(1) {
        let b = embedded().await?;
        let port = b.addr().port();
        let got = round(port, opts, &format!("e{r}")).await;
        b.shutdown().await;
        let got = got?;
        eprintln!(
            "  round {r}: embedded {:.0} delivered/s ({:.0} acked/s)",
            got.delivered_per_sec, got.acked_per_sec
        );
        ours.push(got);
        let m = Mosquitto::start().await?;
        let got = round(m.port, opts, &format!("m{r}")).await?;
        drop(m);
        eprintln!(
            "  round {r}: mosquitto {:.0} delivered/s ({:.0} acked/s)",
            got.delivered_per_sec, got.acked_per_sec
        );
        theirs.push(got);
    }
    let scenario = format!(
        "MQTT broker, {} publishers → 1 subscriber, QoS 1",
        opts.publishers
    );
    report.push(
        Row {
            scenario: scenario.clone(),
            metric: "messages/s delivered to the subscriber".into(),
            shturman: mean(&ours, |r| r.delivered_per_sec),
            anchor_name: "Mosquitto (Debian), same generator".into(),
            anchor: Some(mean(&theirs, |r| r.delivered_per_sec)),
            goal: format!(">= {GOAL_RATIO}x Mosquitto"),
            higher_is_better: true,
        }
        .check(Goal::RatioAtLeast(GOAL_RATIO)),
    );
    report.push(
        Row {
            scenario,
            metric: "publishes/s acknowledged (PUBACK)".into(),
            shturman: mean(&ours, |r| r.acked_per_sec),
            anchor_name: "Mosquitto (Debian), same generator".into(),
            anchor: Some(mean(&theirs, |r| r.acked_per_sec)),
            goal: "informational".into(),
            higher_is_better: true,
        }
        .check(Goal::Informational),
    );
    Ok(())
}
