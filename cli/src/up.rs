//! `shturman up`: a one-node cluster in one process — the control plane with
//! its embedded MQTT broker (as `shturman control` runs it) and one local
//! edge agent, joined with a short-lived token `up` makes itself.
//!
//! Order of life: start the control plane and serve; create a join token
//! through the local API; start the agent on `<data-dir>/agent`; print what a
//! new user needs; say when the local node is Ready (and delete the token,
//! which is no longer needed). On Ctrl-C or SIGTERM the agent stops first (it
//! publishes `online=false`, so its Node turns NotReady), then the control
//! plane drains and closes the store.
//!
//! The pure parts (node name from a hostname, the heartbeat period for a
//! grace period, the banner) are tested here; the process is tested end to
//! end in `tests/tests/up.rs`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use chrono::{TimeDelta, Utc};
use shturman_agent::config::{self as agent_config, Layer, Source};
use shturman_agent::runtime::Runtimes;
use shturman_control::Control;
use shturman_control::tokens::{JoinToken, SYSTEM_NAMESPACE};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::args::{ControlArgs, UpArgs};
use crate::client::Client;
use crate::config::{Inputs, resolve};
use crate::control_cmd::shutdown_signal;

/// How long the local agent's join token is valid; it is deleted as soon as
/// the node is Ready.
const LOCAL_TOKEN_TTL: Duration = Duration::from_secs(10 * 60);
/// The agent's default heartbeat period (and the most `up` uses).
const MAX_HEARTBEAT: Duration = agent_config::DEFAULT_HEARTBEAT;
/// The shortest heartbeat period the agent accepts.
const MIN_HEARTBEAT: Duration = Duration::from_millis(100);
/// How long the agent gets to say goodbye on shutdown.
const AGENT_STOP: Duration = Duration::from_secs(10);
/// How long to wait for the control plane to record the node as offline.
const OFFLINE_RECORDED: Duration = Duration::from_secs(3);
/// How often the local node's Ready condition is polled.
const POLL: Duration = Duration::from_millis(250);
/// After this long without a Ready local node, say so once.
const SLOW_READY: Duration = Duration::from_secs(30);
/// The local agent's heartbeat period: a quarter of the grace period (as
/// Kubernetes' 10 s / 40 s), between 100 ms and 10 s.
pub fn heartbeat_for(grace: Duration) -> Duration {
    (grace / 4).clamp(MIN_HEARTBEAT, MAX_HEARTBEAT)
}

/// `500ms`, `2s`, `1m30s`: a duration as the agent's `--heartbeat-interval` takes it.
pub fn duration_flag(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    match (s / 60, s % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

/// `0.0.0.0` / `::` → loopback, for talking to our own listener.
fn reachable_locally(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(v) if v.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port()),
        IpAddr::V6(v) if v.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port()),
        _ => addr,
    }
}

/// The MQTT URL other machines should dial, and a note when there is none.
pub fn join_url(broker: SocketAddr, this_machine: &str) -> (String, Option<String>) {
    let ip = broker.ip();
    if ip.is_loopback() {
        let note = format!(
            "the broker listens on loopback only, so this works for agents on this machine; \
             to join other machines, start `shturman up --mqtt-addr 0.0.0.0:{}` and use this machine's address",
            broker.port()
        );
        (format!("mqtt://{broker}"), Some(note))
    } else if ip.is_unspecified() {
        (format!("mqtt://{this_machine}:{}", broker.port()), None)
    } else {
        (format!("mqtt://{broker}"), None)
    }
}

/// What `up` prints once the cluster is running.
pub struct Banner<'a> {
    pub api_url: &'a str,
    /// How the store is named, e.g. `sled`.
    pub store: &'a str,
    pub admin_conf: &'a Path,
    pub admin_conf_absolute: &'a Path,
    pub mqtt_url: &'a str,
    pub node: &'a str,
    pub agent_dir: &'a Path,
    pub heartbeat: Duration,
    /// Where `shturman` and `shturman-agent` are.
    pub bin_dir: &'a Path,
    /// The URL to give new agents, and a caveat about it.
    pub join_url: &'a str,
    pub join_note: Option<&'a str>,
}

impl Banner<'_> {
    pub fn render(&self) -> String {
        let store = self.store;
        let heartbeat_flag = if self.heartbeat == MAX_HEARTBEAT {
            String::new()
        } else {
            format!(" --heartbeat-interval {}", duration_flag(self.heartbeat))
        };
        let mut out = format!(
            "shturman up v{version}: a one-node cluster is running\n\
             \n  API server:   {api} (store: {store})\
             \n  admin config: {conf}; use it with: export SHTURMAN_CONFIG={abs}\
             \n  MQTT broker:  {mqtt} (embedded)\
             \n  local node:   {node} (agent data in {agent_dir}); it turns Ready within seconds\
             \n\
             \nNext steps, in another terminal (the binaries are in {bin_dir}):\
             \n  export SHTURMAN_CONFIG={abs}\
             \n  shturman get nodes -o wide\
             \n  ./scripts/build-wasm-examples.sh    # builds the example Wasm modules\
             \n  sudo mkdir -p /opt/shturman/wasm\
             \n  sudo cp wasm-examples/ticker/target/wasm32-wasip2/release/ticker.wasm /opt/shturman/wasm/\
             \n  shturman apply -f wasm-examples/manifests/ticker-deployment.yaml\
             \n  shturman get pods -o wide    # three ticker pods Running\
             \n  shturman logs -f <pod>       # one line a second\
             \n\
             \nJoin more nodes: make a token here, then run the agent on the new node:\
             \n  TOKEN=$(shturman token create)\
             \n  shturman-agent --mqtt-url {join} --token \"$TOKEN\" --node-name <name> --data-dir /var/lib/shturman{heartbeat_flag}\n",
            version = env!("CARGO_PKG_VERSION"),
            api = self.api_url,
            conf = self.admin_conf.display(),
            abs = self.admin_conf_absolute.display(),
            mqtt = self.mqtt_url,
            node = self.node,
            agent_dir = self.agent_dir.display(),
            join = self.join_url,
            bin_dir = self.bin_dir.display(),
        );
        if let Some(note) = self.join_note {
            out.push_str(&format!("  ({note})\n"));
        }
        out.push_str("\nCtrl-C stops the local agent, then the control plane.\n");
        out
    }
}

/// The control-plane flags `up` implies.
fn control_args(args: &UpArgs) -> ControlArgs {
    ControlArgs {
        data_dir: args.data_dir.clone(),
        api_addr: args.api_addr,
        store: args.store.clone(),
        mqtt_addr: args.mqtt_addr,
        mqtt_url: None,
        node_monitor_grace_period: args.node_monitor_grace_period,
        default_toleration_seconds: args.default_toleration_seconds,
        service_cidr: args.service_cidr,
        service_node_port_range: args.service_node_port_range,
    }
}

/// The local agent's configuration, checked by the agent's own parser (so
/// errors name the flag); `mqtt_url` may be a placeholder before the broker
/// has its real address.
fn agent_config(
    args: &UpArgs,
    node: &str,
    mqtt_url: &str,
    token: Option<String>,
) -> Result<agent_config::Config> {
    let mut flags = Layer::new("the command line");
    flags
        .set("mqtt-url", Some(mqtt_url.to_string()))
        .set("token", token)
        .set("node-name", Some(node.to_string()))
        .set("data-dir", Some(agent_dir(args).display().to_string()))
        .set("labels", args.labels.clone())
        .set(
            "containerd-socket",
            args.containerd_socket.as_ref().map(|p| p.display().to_string()),
        )
        .set("max-pods", args.max_pods.map(|n| n.to_string()))
        .set("insecure-registries", args.insecure_registries.clone())
        .set("node-ip", args.node_ip.clone())
        .set("pod-cidr", args.pod_cidr.clone())
        // The control plane's Service range is the local agent's too (the
        // outbound allow-list of Wasm pods annotated
        // `shturman.io/allow-outbound: services`).
        .set("service-cidr", Some(args.service_cidr.to_string()));
    let mut cfg = agent_config::Config::parse(&Source(vec![flags]))?;
    cfg.heartbeat_interval = heartbeat_for(args.node_monitor_grace_period);
    Ok(cfg)
}

fn agent_dir(args: &UpArgs) -> PathBuf {
    args.data_dir.join("agent")
}

/// A client of our own API, authenticated with the admin token `Control`
/// just wrote.
fn local_client(admin_conf: &Path, api: SocketAddr) -> Result<Client> {
    let inputs = Inputs {
        flag_config: Some(admin_conf.to_path_buf()),
        flag_server: Some(format!("http://{}", reachable_locally(api))),
        ..Inputs::default()
    };
    Client::new(resolve(&inputs, &|p| std::fs::read_to_string(p))?)
}

/// Stores a join token valid for `ttl` and returns it.
async fn create_token(client: &Client, ttl: Duration) -> Result<JoinToken> {
    let token = JoinToken::random();
    let expires = Utc::now()
        .checked_add_signed(TimeDelta::from_std(ttl)?)
        .context("token expiry out of range")?;
    let secret = serde_json::to_value(token.to_secret(Some(expires)))?;
    client
        .post(&format!("/api/v1/namespaces/{SYSTEM_NAMESPACE}/secrets"), &secret)
        .await
        .context("cannot create a join token for the local agent")?;
    Ok(token)
}

async fn delete_token(client: &Client, token: &JoinToken) {
    let path = format!(
        "/api/v1/namespaces/{SYSTEM_NAMESPACE}/secrets/{}",
        token.secret_name()
    );
    if let Err(e) = client.delete(&path, &serde_json::json!({})).await
        && !e.is_not_found()
    {
        tracing::warn!(error = %e, "cannot delete the local agent's join token; it expires on its own");
    }
}

/// The node's Ready condition status (`True`, `False`, `Unknown`), if any.
async fn ready_status(client: &Client, node: &str) -> Option<String> {
    let v = client.get_opt(&format!("/api/v1/nodes/{node}")).await.ok()??;
    v["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["status"].as_str())
        .map(str::to_string)
}

/// Waits until the local node is Ready, then drops its join token.
async fn announce_ready(client: &Client, node: &str, token: &JoinToken) {
    let started = tokio::time::Instant::now();
    let mut warned = false;
    while ready_status(client, node).await.as_deref() != Some("True") {
        if !warned && started.elapsed() > SLOW_READY {
            warned = true;
            tracing::warn!(%node, "the local node is not Ready yet; see the agent's log lines above");
        }
        tokio::time::sleep(POLL).await;
    }
    println!("local node {node} is Ready");
    delete_token(client, token).await;
}

type ControlTask = JoinHandle<Result<(), shturman_control::Error>>;
type AgentTask = JoinHandle<Result<(), shturman_agent::AgentError>>;

/// Stops the control plane and waits for it.
async fn stop_control(stop: oneshot::Sender<()>, task: ControlTask) -> Result<()> {
    let _ = stop.send(());
    match task.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(anyhow!("the control plane stopped with an error: {e}")),
        Err(e) => Err(anyhow!("the control plane task failed: {e}")),
    }
}

fn agent_outcome(
    joined: Result<Result<(), shturman_agent::AgentError>, tokio::task::JoinError>,
) -> Result<()> {
    match joined {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(anyhow!("the local agent stopped: {e}")),
        Err(e) => Err(anyhow!("the local agent's task failed: {e}")),
    }
}

pub async fn run(args: &UpArgs) -> Result<()> {
    let node = match &args.node_name {
        Some(n) => n.clone(),
        None => agent_config::node_name_from_hostname(&sysinfo::System::host_name().unwrap_or_default()),
    };
    // Check the agent's flags before anything starts.
    agent_config(args, &node, "mqtt://127.0.0.1:1883", None)?;

    let control = Control::start(crate::control_cmd::config(&control_args(args))?)
        .await
        .map_err(|e| anyhow!("the control plane could not start: {e}"))?;
    let api = control
        .url
        .strip_prefix("http://")
        .and_then(|a| a.parse::<SocketAddr>().ok())
        .unwrap_or(args.api_addr);
    let broker = control
        .mqtt_addr
        .context("the embedded MQTT broker did not start")?;
    let mqtt_url = format!("mqtt://{}", reachable_locally(broker));
    let url = control.url.clone();
    let admin_conf = control.admin_conf.clone();
    let (stop_control_tx, stop_control_rx) = oneshot::channel::<()>();
    let mut control_task: ControlTask = tokio::spawn(control.run_until(async move {
        let _ = stop_control_rx.await;
    }));

    let client = match local_client(&admin_conf, api) {
        Ok(c) => c,
        Err(e) => {
            stop_control(stop_control_tx, control_task).await?;
            return Err(e);
        }
    };
    let token = match create_token(&client, LOCAL_TOKEN_TTL).await {
        Ok(t) => t,
        Err(e) => {
            stop_control(stop_control_tx, control_task).await?;
            return Err(e);
        }
    };
    let cfg = agent_config(args, &node, &mqtt_url, Some(token.to_string()))?;
    let heartbeat = cfg.heartbeat_interval;
    let (stop_agent_tx, stop_agent_rx) = oneshot::channel::<()>();
    let runtimes = Runtimes::for_config(&cfg).map_err(|e| anyhow!("the local agent cannot start: {e}"))?;
    let mut agent_task: AgentTask = tokio::spawn(shturman_agent::run(cfg, runtimes, async move {
        let _ = stop_agent_rx.await;
    }));

    let absolute = std::path::absolute(&admin_conf).unwrap_or(admin_conf.clone());
    let this_machine = shturman_agent::facts::internal_ip();
    let (join, note) = join_url(broker, &this_machine);
    let agent_dir = agent_dir(args);
    let exe = std::env::current_exe().unwrap_or_default();
    let bin_dir = exe.parent().unwrap_or(Path::new("."));
    print!(
        "{}",
        Banner {
            api_url: &url,
            store: &args.store.label(),
            admin_conf: &admin_conf,
            admin_conf_absolute: &absolute,
            mqtt_url: &mqtt_url,
            node: &node,
            agent_dir: &agent_dir,
            heartbeat,
            bin_dir,
            join_url: &join,
            join_note: note.as_deref(),
        }
        .render()
    );
    tracing::info!(%url, %node, "shturman up started");

    // Run until a signal, or until the agent or the control plane ends on its own.
    let announce = announce_ready(&client, &node, &token);
    tokio::pin!(announce);
    let mut announced = false;
    let signal = shutdown_signal();
    tokio::pin!(signal);
    enum Ended {
        Signal,
        Agent(Result<()>),
        Control(String),
    }
    let ended = loop {
        tokio::select! {
            () = &mut signal => break Ended::Signal,
            () = &mut announce, if !announced => announced = true,
            joined = &mut agent_task => break Ended::Agent(agent_outcome(joined).and_then(|()| {
                Err(anyhow!("the local agent stopped on its own"))
            })),
            joined = &mut control_task => break Ended::Control(match joined {
                Ok(Ok(())) => "the control plane stopped on its own".to_string(),
                Ok(Err(e)) => format!("the control plane stopped with an error: {e}"),
                Err(e) => format!("the control plane task failed: {e}"),
            }),
        }
    };
    match ended {
        Ended::Signal => {
            tracing::info!("shutting down: stopping the local agent, then the control plane");
            let _ = stop_agent_tx.send(());
            let agent = match tokio::time::timeout(AGENT_STOP, &mut agent_task).await {
                Ok(joined) => agent_outcome(joined),
                Err(_) => {
                    agent_task.abort();
                    Err(anyhow!("the local agent did not stop within {AGENT_STOP:?}"))
                }
            };
            // Let the gateway record the goodbye before the control plane goes.
            let recorded = tokio::time::timeout(OFFLINE_RECORDED, async {
                while ready_status(&client, &node).await.as_deref() == Some("True") {
                    tokio::time::sleep(POLL).await;
                }
            })
            .await;
            if recorded.is_err() {
                tracing::warn!(%node, "the control plane did not record the local node as offline in time");
            }
            if !announced {
                delete_token(&client, &token).await;
            }
            let control = stop_control(stop_control_tx, control_task).await;
            agent?;
            control?;
            println!("stopped: local node {node} is offline and the control plane closed its store");
            Ok(())
        }
        Ended::Agent(err) => {
            stop_control(stop_control_tx, control_task).await?;
            err
        }
        Ended::Control(err) => {
            let _ = stop_agent_tx.send(());
            let _ = tokio::time::timeout(AGENT_STOP, agent_task).await;
            bail!(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_is_a_quarter_of_the_grace() {
        assert_eq!(heartbeat_for(Duration::from_secs(40)), Duration::from_secs(10));
        assert_eq!(heartbeat_for(Duration::from_secs(600)), Duration::from_secs(10));
        assert_eq!(heartbeat_for(Duration::from_secs(2)), Duration::from_millis(500));
        assert_eq!(heartbeat_for(Duration::ZERO), Duration::from_millis(100));
        assert_eq!(duration_flag(Duration::from_millis(500)), "500ms");
        assert_eq!(duration_flag(Duration::from_secs(10)), "10s");
        assert_eq!(duration_flag(Duration::from_secs(90)), "1m30s");
        assert_eq!(duration_flag(Duration::from_secs(120)), "2m");
    }

    #[test]
    fn join_urls_say_who_can_reach_them() {
        let (u, note) = join_url("127.0.0.1:1883".parse().unwrap(), "10.0.0.5");
        assert_eq!(u, "mqtt://127.0.0.1:1883");
        assert!(note.unwrap().contains("--mqtt-addr 0.0.0.0:1883"));
        let (u, note) = join_url("0.0.0.0:1884".parse().unwrap(), "10.0.0.5");
        assert_eq!(u, "mqtt://10.0.0.5:1884");
        assert!(note.is_none());
        let (u, _) = join_url("192.168.1.2:1883".parse().unwrap(), "10.0.0.5");
        assert_eq!(u, "mqtt://192.168.1.2:1883");
    }

    #[test]
    fn banner_tells_a_new_user_what_to_do() {
        let b = Banner {
            api_url: "http://127.0.0.1:7443",
            store: "sled",
            admin_conf: Path::new("./shturman-data/admin.conf"),
            admin_conf_absolute: Path::new("/home/me/shturman-data/admin.conf"),
            mqtt_url: "mqtt://127.0.0.1:1883",
            node: "laptop",
            agent_dir: Path::new("./shturman-data/agent"),
            heartbeat: Duration::from_secs(10),
            bin_dir: Path::new("/src/shturman/target/release"),
            join_url: "mqtt://127.0.0.1:1883",
            join_note: Some("loopback only"),
        }
        .render();
        for want in [
            "API server:   http://127.0.0.1:7443 (store: sled)",
            "export SHTURMAN_CONFIG=/home/me/shturman-data/admin.conf",
            "MQTT broker:  mqtt://127.0.0.1:1883 (embedded)",
            "local node:   laptop",
            "shturman apply -f wasm-examples/manifests/ticker-deployment.yaml",
            "ticker.wasm /opt/shturman/wasm/",
            "shturman get nodes",
            "the binaries are in /src/shturman/target/release",
            "TOKEN=$(shturman token create)",
            "shturman-agent --mqtt-url mqtt://127.0.0.1:1883 --token \"$TOKEN\" --node-name <name> --data-dir /var/lib/shturman\n",
            "(loopback only)",
        ] {
            assert!(b.contains(want), "missing {want:?} in\n{b}");
        }
        assert!(!b.contains("--heartbeat-interval"), "{b}");
    }

    #[test]
    fn bad_agent_flags_are_refused_before_anything_starts() {
        use clap::Parser;
        let cli = crate::args::Cli::try_parse_from([
            "shturman",
            "up",
            "--labels",
            "novalue",
            "--node-monitor-grace-period",
            "2s",
        ])
        .expect("parses");
        let crate::args::Command::Up(args) = cli.command else {
            panic!("not up");
        };
        let e = agent_config(&args, "n1", "mqtt://127.0.0.1:1883", None).unwrap_err();
        assert!(e.to_string().contains("--labels"), "{e}");
        let e = agent_config(
            &UpArgs { labels: None, ..args },
            "Bad_Name",
            "mqtt://127.0.0.1:1883",
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("--node-name"), "{e}");
    }

    #[test]
    fn the_local_agent_shares_the_service_cidr() {
        use clap::Parser;
        let parse = |extra: &[&str]| {
            let cli =
                crate::args::Cli::try_parse_from(["shturman", "up"].iter().chain(extra)).expect("parses");
            let crate::args::Command::Up(args) = cli.command else {
                panic!("not up");
            };
            agent_config(&args, "n1", "mqtt://127.0.0.1:1883", None)
                .unwrap()
                .service_cidr
        };
        assert_eq!(parse(&[]), ("10.43.0.0".parse().unwrap(), 16));
        assert_eq!(
            parse(&["--service-cidr", "127.43.0.0/16"]),
            ("127.43.0.0".parse().unwrap(), 16)
        );
    }
}
