//! The command-line surface: every verb and flag `shturman` accepts, as clap
//! derive structs. Parsing only; the verbs live in their own modules.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

use shturman_control::{NodePortRange, ServiceCidr};

use crate::duration::parse_duration;

/// Shturman: a Kubernetes-style orchestrator for edge fleets.
#[derive(Debug, Parser)]
#[command(name = "shturman", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// How client verbs find and authenticate to the API server.
#[derive(Debug, Args)]
pub struct ConnArgs {
    /// API server URL, e.g. http://127.0.0.1:7443 (overrides the config file).
    #[arg(long, global = true, env = "SHTURMAN_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// Bearer token sent with every request (overrides the config file).
    #[arg(long, global = true, env = "SHTURMAN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Client config file (a kubeconfig); defaults to $SHTURMAN_CONFIG,
    /// ~/.shturman/config, then ./shturman-data/admin.conf.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Namespace to work in (default: the config's context namespace, else `default`).
    #[arg(short = 'n', long, global = true, value_name = "NS")]
    pub namespace: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a one-node cluster: control plane, embedded MQTT broker and a local agent.
    Up(UpArgs),
    /// Run the control plane: API server and store.
    Control(ControlArgs),
    /// Create or update objects from manifests.
    Apply(ApplyArgs),
    /// List objects, or show some by name.
    Get(GetArgs),
    /// Show details of objects, with their events.
    Describe(DescribeArgs),
    /// Delete objects by kind and name, or those in manifests.
    Delete(DeleteArgs),
    /// Print the client and server versions.
    Version,
    /// Set a new size for a deployment or replica set.
    Scale(ScaleArgs),
    /// Manage the rollout of a deployment.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Manage join tokens for new nodes.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Mark a node as unschedulable.
    Cordon(NodeArgs),
    /// Mark a node as schedulable.
    Uncordon(NodeArgs),
    /// Cordon a node and evict its pods, in preparation for maintenance.
    Drain(DrainArgs),
    /// Print the logs of a container in a pod (fetched from its node).
    Logs(LogsArgs),
}

/// Which store `shturman control` keeps objects in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StoreArg {
    /// sled, in <data-dir>/store.
    Sled,
    /// In memory; everything is lost on exit.
    Memory,
    /// An etcd cluster (--etcd-endpoints).
    Etcd,
}

/// Where the control plane keeps its objects.
#[derive(Clone, Debug, Args)]
pub struct StoreArgs {
    /// Store backend: sled (in <data-dir>/store), memory, or etcd.
    #[arg(long, value_enum, default_value_t = StoreArg::Sled)]
    pub store: StoreArg,
    /// etcd's client URLs, with --store etcd: http://HOST:2379,…
    #[arg(
        long,
        value_name = "URL,…",
        value_delimiter = ',',
        required_if_eq("store", "etcd")
    )]
    pub etcd_endpoints: Vec<String>,
    /// The etcd key prefix this cluster's objects live under (one control
    /// plane per prefix).
    #[arg(long, default_value = shturman_control::store::etcd_store::DEFAULT_PREFIX, value_name = "P")]
    pub etcd_prefix: String,
}

impl StoreArgs {
    /// The store these flags choose; etcd flags without `--store etcd` are
    /// a mistake worth saying.
    pub fn choice(&self) -> anyhow::Result<shturman_control::StoreChoice> {
        use shturman_control::StoreChoice;
        Ok(match self.store {
            StoreArg::Sled | StoreArg::Memory if !self.etcd_endpoints.is_empty() => anyhow::bail!(
                "--etcd-endpoints is only used with --store etcd (the store is {})",
                self.label()
            ),
            StoreArg::Sled => StoreChoice::Sled,
            StoreArg::Memory => StoreChoice::Memory,
            StoreArg::Etcd => StoreChoice::Etcd(shturman_control::store::EtcdConfig {
                endpoints: self.etcd_endpoints.clone(),
                prefix: self.etcd_prefix.clone(),
            }),
        })
    }

    /// How the start banner names the store.
    pub fn label(&self) -> String {
        match self.store {
            StoreArg::Sled => "sled".into(),
            StoreArg::Memory => "memory (lost on exit)".into(),
            StoreArg::Etcd => format!(
                "etcd at {}, prefix {}",
                self.etcd_endpoints.join(","),
                self.etcd_prefix
            ),
        }
    }
}

#[derive(Debug, Args)]
pub struct ControlArgs {
    /// Where the store, the admin token and admin.conf live.
    #[arg(long, default_value = "./shturman-data", value_name = "D")]
    pub data_dir: PathBuf,
    /// Address the API listens on.
    #[arg(long, default_value = "127.0.0.1:7443", value_name = "A")]
    pub api_addr: SocketAddr,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Address the embedded MQTT broker listens on (agents dial it).
    #[arg(
        long,
        default_value = "127.0.0.1:1883",
        value_name = "M",
        conflicts_with = "mqtt_url"
    )]
    pub mqtt_addr: SocketAddr,
    /// Use this external MQTT broker instead of the embedded one:
    /// mqtt://[user:password@]host[:port].
    #[arg(long, value_name = "URL")]
    pub mqtt_url: Option<String>,
    /// How long a node may go without a heartbeat before it is NotReady
    /// (Unknown) and tainted unreachable.
    #[arg(long, default_value = "40s", value_name = "DURATION", value_parser = crate::duration::parse_duration)]
    pub node_monitor_grace_period: std::time::Duration,
    /// How long pods wait for an unreachable or not-ready node before they
    /// are evicted, unless their own tolerations say otherwise.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub default_toleration_seconds: u32,
    /// The IPv4 range Services' cluster IPs come from (a /12 to a /30).
    #[arg(long, default_value = "10.43.0.0/16", value_name = "CIDR")]
    pub service_cidr: ServiceCidr,
    /// The ports NodePort Services' node ports come from.
    #[arg(long, default_value = "30000-32767", value_name = "FIRST-LAST")]
    pub service_node_port_range: NodePortRange,
}

/// `shturman up`: `shturman control`'s flags (embedded broker only) plus
/// the local agent's.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Where the store, admin.conf and the local agent's data (`<D>/agent`) live.
    #[arg(long, default_value = "./shturman-data", value_name = "D")]
    pub data_dir: PathBuf,
    /// Address the API listens on.
    #[arg(long, default_value = "127.0.0.1:7443", value_name = "A")]
    pub api_addr: SocketAddr,
    /// Address the embedded MQTT broker listens on (agents dial it); use
    /// 0.0.0.0:1883 to let other machines join.
    #[arg(long, default_value = "127.0.0.1:1883", value_name = "M")]
    pub mqtt_addr: SocketAddr,
    /// The local node's name (default: this machine's hostname, made DNS-1123-safe).
    #[arg(long, value_name = "N")]
    pub node_name: Option<String>,
    /// containerd's socket (default /run/containerd/containerd.sock; `none`
    /// turns OCI pods off); the local node offers OCI pods when it answers.
    #[arg(long, value_name = "S")]
    pub containerd_socket: Option<PathBuf>,
    /// Registries the local node pulls Wasm artifacts from over plain
    /// http, host:port,… (loopback ones always are; the rest use https).
    #[arg(long, value_name = "HOST:PORT,…")]
    pub insecure_registries: Option<String>,
    /// Most pods the local node takes (its `pods` capacity; 110 by default).
    #[arg(long, value_name = "N")]
    pub max_pods: Option<u32>,
    /// The local node's InternalIP (found from the interfaces when unset).
    #[arg(long, value_name = "IP")]
    pub node_ip: Option<String>,
    /// Where the local node's Wasm pods get their own IPs, e.g. 10.42.0.0/24
    /// (unset: they share the node's IP).
    #[arg(long, value_name = "CIDR")]
    pub pod_cidr: Option<String>,
    /// Extra labels for the local node, k=v,k2=v2.
    #[arg(long, value_name = "K=V,…")]
    pub labels: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// How long a node may go without a heartbeat before it is NotReady
    /// (Unknown); the local agent heartbeats at a quarter of it (at most 10s).
    #[arg(long, default_value = "40s", value_name = "DURATION", value_parser = crate::duration::parse_duration)]
    pub node_monitor_grace_period: std::time::Duration,
    /// How long pods wait for an unreachable or not-ready node before they
    /// are evicted, unless their own tolerations say otherwise.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub default_toleration_seconds: u32,
    /// The IPv4 range Services' cluster IPs come from (a /12 to a /30);
    /// the local agent's Wasm pods that opt in to outbound requests may
    /// reach these addresses only.
    #[arg(long, default_value = "10.43.0.0/16", value_name = "CIDR")]
    pub service_cidr: ServiceCidr,
    /// The ports NodePort Services' node ports come from.
    #[arg(long, default_value = "30000-32767", value_name = "FIRST-LAST")]
    pub service_node_port_range: NodePortRange,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Manifest file, directory (its *.yaml, *.yml, *.json files) or `-` for stdin.
    #[arg(short = 'f', long = "filename", required = true, value_name = "FILE|DIR|-")]
    pub files: Vec<String>,
}

/// `-o` formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Wide,
    Yaml,
    Json,
    Name,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// KIND [NAME…], or KIND/NAME…; KIND may be a comma-separated list.
    #[arg(required = true, value_name = "KIND[/NAME]")]
    pub targets: Vec<String>,
    /// List across all namespaces.
    #[arg(short = 'A', long = "all-namespaces")]
    pub all_namespaces: bool,
    /// Label selector, e.g. `app=web,tier!=db`.
    #[arg(short = 'l', long = "selector", value_name = "SEL")]
    pub selector: Option<String>,
    /// Field selector, e.g. `spec.nodeName=pi-1`.
    #[arg(long, value_name = "S")]
    pub field_selector: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum)]
    pub output: Option<OutputFormat>,
    /// After listing, watch for changes.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Add a LABELS column.
    #[arg(long)]
    pub show_labels: bool,
}

#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// KIND [NAME…], or KIND/NAME…; without a name, every object of the kind.
    #[arg(required = true, value_name = "KIND[/NAME]")]
    pub targets: Vec<String>,
    /// Label selector when describing every object of a kind.
    #[arg(short = 'l', long = "selector", value_name = "SEL")]
    pub selector: Option<String>,
}

/// `--cascade` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cascade {
    Background,
    Foreground,
    Orphan,
}

impl Cascade {
    /// The `propagationPolicy` sent in `DeleteOptions`.
    pub fn policy(self) -> &'static str {
        match self {
            Cascade::Background => "Background",
            Cascade::Foreground => "Foreground",
            Cascade::Orphan => "Orphan",
        }
    }
}

/// Parses `--cascade`, accepting kubectl's legacy `true`/`false` too.
pub fn parse_cascade(s: &str) -> Result<Cascade, String> {
    match s.to_ascii_lowercase().as_str() {
        "background" | "true" => Ok(Cascade::Background),
        "foreground" => Ok(Cascade::Foreground),
        "orphan" | "false" => Ok(Cascade::Orphan),
        _ => Err(format!(
            "invalid cascade value {s:?}: use background, foreground or orphan"
        )),
    }
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// KIND NAME…, or KIND/NAME….
    #[arg(value_name = "KIND[/NAME]")]
    pub targets: Vec<String>,
    /// Delete the objects in these manifests (file, directory or `-`).
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-")]
    pub files: Vec<String>,
    /// What happens to dependents: background, foreground or orphan.
    #[arg(long, default_value = "background", value_parser = parse_cascade)]
    pub cascade: Cascade,
    /// Treat "not found" as success.
    #[arg(long)]
    pub ignore_not_found: bool,
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// KIND NAME…, or KIND/NAME… (deployments and replicasets).
    #[arg(required = true, value_name = "KIND[/NAME]")]
    pub targets: Vec<String>,
    /// The new number of replicas.
    #[arg(long, required = true, value_name = "COUNT", allow_negative_numbers = true)]
    pub replicas: i64,
    /// Only scale when the current number of replicas is this (a precondition).
    #[arg(long, value_name = "COUNT")]
    pub current_replicas: Option<i64>,
}

/// `shturman rollout …`.
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Watch a deployment's rollout until it finishes.
    Status(RolloutStatusArgs),
    /// List a deployment's revisions, or show one.
    History(RolloutHistoryArgs),
    /// Roll a deployment back to its previous (or a given) revision.
    Undo(RolloutUndoArgs),
    /// Pause a deployment: template changes start no rollout until resumed.
    Pause(RolloutTargets),
    /// Resume a paused deployment.
    Resume(RolloutTargets),
    /// Restart a deployment's pods with a new rollout.
    Restart(RolloutTargets),
}

#[derive(Debug, Args)]
pub struct RolloutTargets {
    /// deployment NAME…, or deployment/NAME….
    #[arg(required = true, value_name = "KIND[/NAME]")]
    pub targets: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RolloutStatusArgs {
    /// deployment NAME, or deployment/NAME.
    #[arg(required = true, value_name = "KIND[/NAME]")]
    pub targets: Vec<String>,
    /// Watch until the rollout finishes (`--watch=false`: print the status once).
    #[arg(
        short = 'w',
        long,
        action = ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value_t = true,
        default_missing_value = "true"
    )]
    pub watch: bool,
    /// Give up after this long (e.g. 30s, 5m); 0 waits forever.
    #[arg(long, value_parser = parse_duration, default_value = "0s", value_name = "D")]
    pub timeout: Duration,
    /// Expect this revision to be the one rolling out.
    #[arg(long, value_name = "N")]
    pub revision: Option<i64>,
}

#[derive(Debug, Args)]
pub struct RolloutHistoryArgs {
    /// deployment NAME…, or deployment/NAME….
    #[arg(required = true, value_name = "KIND[/NAME]")]
    pub targets: Vec<String>,
    /// Show the pod template of this revision.
    #[arg(long, value_name = "N")]
    pub revision: Option<i64>,
}

#[derive(Debug, Args)]
pub struct RolloutUndoArgs {
    /// deployment NAME…, or deployment/NAME….
    #[arg(required = true, value_name = "KIND[/NAME]")]
    pub targets: Vec<String>,
    /// The revision to roll back to (default: the previous one).
    #[arg(long, value_name = "N")]
    pub to_revision: Option<i64>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The pod: NAME or pod/NAME.
    #[arg(value_name = "POD")]
    pub pod: String,
    /// The container (required when the pod has several).
    #[arg(short = 'c', long, value_name = "C")]
    pub container: Option<String>,
    /// Keep streaming new lines until interrupted (Ctrl-C).
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines; -1 shows all kept lines.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true, value_name = "N")]
    pub tail: i64,
    /// The previous run of the container (after a restart).
    #[arg(short = 'p', long)]
    pub previous: bool,
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The node's name.
    #[arg(value_name = "NODE")]
    pub node: String,
}

#[derive(Debug, Args)]
pub struct DrainArgs {
    /// The node's name.
    #[arg(value_name = "NODE")]
    pub node: String,
    /// Leave DaemonSet-managed pods in place instead of refusing to drain.
    #[arg(long)]
    pub ignore_daemonsets: bool,
    /// Evict pods with emptyDir volumes too (their data is lost).
    #[arg(long)]
    pub delete_emptydir_data: bool,
    /// Evict pods that no controller manages too (they are not recreated).
    #[arg(long)]
    pub force: bool,
    /// Seconds each pod gets to terminate; negative uses the pod's own setting.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true, value_name = "N")]
    pub grace_period: i64,
    /// Give up waiting for pods to go after this long (e.g. 2m); 0 waits forever.
    #[arg(long, value_parser = parse_duration, default_value = "0s", value_name = "D")]
    pub timeout: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_kubectl_style_lines() {
        let cli = Cli::try_parse_from([
            "shturman", "get", "pods", "-n", "edge", "-l", "app=web", "-o", "wide",
        ])
        .expect("parses");
        assert_eq!(cli.conn.namespace.as_deref(), Some("edge"));
        match cli.command {
            Command::Get(g) => {
                assert_eq!(g.targets, vec!["pods"]);
                assert_eq!(g.selector.as_deref(), Some("app=web"));
                assert_eq!(g.output, Some(OutputFormat::Wide));
            }
            other => panic!("unexpected {other:?}"),
        }
        let cli =
            Cli::try_parse_from(["shturman", "delete", "deploy", "web", "--cascade=orphan"]).expect("parses");
        match cli.command {
            Command::Delete(d) => assert_eq!(d.cascade, Cascade::Orphan),
            other => panic!("unexpected {other:?}"),
        }
        assert!(Cli::try_parse_from(["shturman", "apply"]).is_err());
    }

    #[test]
    fn rollout_and_node_verbs_parse() {
        let cli = Cli::try_parse_from([
            "shturman",
            "rollout",
            "status",
            "deploy/web",
            "--watch=false",
            "--timeout",
            "2m",
        ])
        .expect("parses");
        match cli.command {
            Command::Rollout(RolloutCommand::Status(s)) => {
                assert_eq!(s.targets, vec!["deploy/web"]);
                assert!(!s.watch);
                assert_eq!(s.timeout, Duration::from_secs(120));
            }
            other => panic!("unexpected {other:?}"),
        }
        let cli = Cli::try_parse_from(["shturman", "rollout", "status", "-w", "deployment", "web"])
            .expect("parses");
        match cli.command {
            Command::Rollout(RolloutCommand::Status(s)) => {
                assert!(s.watch);
                assert_eq!(s.targets, vec!["deployment", "web"]);
            }
            other => panic!("unexpected {other:?}"),
        }
        let cli =
            Cli::try_parse_from(["shturman", "scale", "deploy", "web", "--replicas=-1"]).expect("parses");
        assert!(matches!(
            cli.command,
            Command::Scale(ScaleArgs { replicas: -1, .. })
        ));
        assert!(Cli::try_parse_from(["shturman", "scale", "deploy", "web"]).is_err());
        let cli = Cli::try_parse_from(["shturman", "drain", "n1", "--force", "--grace-period", "0"])
            .expect("parses");
        match cli.command {
            Command::Drain(d) => {
                assert!(d.force && !d.ignore_daemonsets);
                assert_eq!(d.grace_period, 0);
                assert_eq!(d.timeout, Duration::ZERO);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn logs_parses_kubectl_flags() {
        let cli = Cli::try_parse_from([
            "shturman", "logs", "web-1", "-c", "app", "-f", "--tail", "2", "-n", "edge",
        ])
        .expect("parses");
        assert_eq!(cli.conn.namespace.as_deref(), Some("edge"));
        match cli.command {
            Command::Logs(l) => {
                assert_eq!(l.pod, "web-1");
                assert_eq!(l.container.as_deref(), Some("app"));
                assert!(l.follow && !l.previous);
                assert_eq!(l.tail, 2);
            }
            other => panic!("unexpected {other:?}"),
        }
        let cli = Cli::try_parse_from(["shturman", "logs", "pod/web", "--previous"]).expect("parses");
        assert!(matches!(
            cli.command,
            Command::Logs(LogsArgs {
                previous: true,
                tail: -1,
                ..
            })
        ));
    }

    #[test]
    fn cascade_accepts_legacy_booleans() {
        assert_eq!(parse_cascade("true"), Ok(Cascade::Background));
        assert_eq!(parse_cascade("false"), Ok(Cascade::Orphan));
        assert_eq!(parse_cascade("Foreground"), Ok(Cascade::Foreground));
        assert!(parse_cascade("later").is_err());
    }
}

/// `shturman token …`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a join token and print it, alone, on stdout.
    Create(TokenCreateArgs),
}

#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// How long the token is valid, e.g. 24h, 30m; 0 means it never expires.
    #[arg(long, default_value = "24h", value_name = "D", value_parser = parse_duration)]
    pub ttl: Duration,
}
