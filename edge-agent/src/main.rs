//! `shturman-agent`: parse the command line (and `--config` file), set up
//! logging, run the agent until SIGTERM or Ctrl-C. Exit codes: 0 after a clean
//! shutdown, 2 when a person must act (bad configuration, refused join
//! token), 1 for anything else.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use shturman_agent::config::{self, Config, Layer, Source};
use shturman_agent::runtime::Runtimes;

/// Shturman edge agent: joins a node to a Shturman cluster over MQTT.
#[derive(Debug, Parser)]
#[command(name = "shturman-agent", version)]
struct Args {
    /// The control plane's MQTT broker, mqtt://host:port.
    #[arg(long, env = "SHTURMAN_MQTT_URL")]
    mqtt_url: Option<String>,
    /// Join token from `shturman token create` (needed until the node has joined).
    #[arg(long, env = "SHTURMAN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// This node's name (DNS-1123); default: the hostname, made one.
    #[arg(long, env = "SHTURMAN_NODE_NAME")]
    node_name: Option<String>,
    /// Where identity, journal and state live (default /var/lib/shturman).
    #[arg(long, env = "SHTURMAN_DATA_DIR")]
    data_dir: Option<String>,
    /// Extra node labels, k=v,k2=v2.
    #[arg(long, env = "SHTURMAN_LABELS")]
    labels: Option<String>,
    /// containerd's socket (default /run/containerd/containerd.sock; `none`
    /// turns OCI pods off); offered as a runtime when it answers.
    #[arg(long, env = "SHTURMAN_CONTAINERD_SOCKET")]
    containerd_socket: Option<String>,
    /// Registries pulled from over plain http, host:port,… (loopback ones
    /// always are; the rest use https).
    #[arg(long, env = "SHTURMAN_INSECURE_REGISTRIES")]
    insecure_registries: Option<String>,
    /// Heartbeat period, e.g. 10s.
    #[arg(long, env = "SHTURMAN_HEARTBEAT_INTERVAL")]
    heartbeat_interval: Option<String>,
    /// Most pods this node takes (its `pods` capacity; kubelet's default 110).
    #[arg(long, env = "SHTURMAN_MAX_PODS")]
    max_pods: Option<String>,
    /// The node's InternalIP (found from the interfaces when unset).
    #[arg(long, env = "SHTURMAN_NODE_IP")]
    node_ip: Option<String>,
    /// Where Wasm pods get their own IPs, e.g. 10.42.1.0/24 (unset: the node's IP).
    #[arg(long, env = "SHTURMAN_POD_CIDR")]
    pod_cidr: Option<String>,
    /// Services' ClusterIP range, as the control plane's --service-cidr
    /// (default 10.43.0.0/16): Wasm pods annotated
    /// `shturman.io/allow-outbound: services` may reach these addresses only.
    #[arg(long, env = "SHTURMAN_SERVICE_CIDR")]
    service_cidr: Option<String>,
    /// A YAML config file with the same settings (camelCase keys); flags win.
    #[arg(long, env = "SHTURMAN_AGENT_CONFIG")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cfg = match load_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shturman-agent: {e:#}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shturman-agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtimes = match Runtimes::for_config(&cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shturman-agent: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(shturman_agent::run(cfg, runtimes, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shturman-agent: {e}");
            if e.needs_operator() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn load_config(args: &Args) -> anyhow::Result<Config> {
    let mut flags = Layer::new("the command line");
    flags
        .set("mqtt-url", args.mqtt_url.clone())
        .set("token", args.token.clone())
        .set("node-name", args.node_name.clone())
        .set("data-dir", args.data_dir.clone())
        .set("labels", args.labels.clone())
        .set("containerd-socket", args.containerd_socket.clone())
        .set("insecure-registries", args.insecure_registries.clone())
        .set("heartbeat-interval", args.heartbeat_interval.clone())
        .set("max-pods", args.max_pods.clone())
        .set("node-ip", args.node_ip.clone())
        .set("pod-cidr", args.pod_cidr.clone())
        .set("service-cidr", args.service_cidr.clone());
    let mut layers = vec![flags];
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        layers.push(config::file_layer(&path.display().to_string(), &text)?);
    }
    // Last: what a node gets when nothing says otherwise (as k3s's agent
    // takes its hostname and a data dir under /var/lib).
    let mut defaults = Layer::new("the defaults (the hostname)");
    defaults
        .set(
            "node-name",
            Some(config::node_name_from_hostname(
                &sysinfo::System::host_name().unwrap_or_default(),
            )),
        )
        .set("data-dir", Some(config::DEFAULT_DATA_DIR.to_string()));
    layers.push(defaults);
    Ok(Config::parse(&Source(layers))?)
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
