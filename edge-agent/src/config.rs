//! The agent's configuration: one pure function ([`Config::parse`]) over a
//! layered key/value source (command-line flags and their environment
//! variables first, then a config file), in the manner of linkerd2-proxy's
//! `env.rs`, so tests hand it a map and every error names the key and where
//! its value came from.
//!
//! Keys are the long flag names: `mqtt-url`, `token`, `node-name`, `data-dir`,
//! `labels`, `containerd-socket`, `insecure-registries`, `heartbeat-interval`, `max-pods`, `node-ip`,
//! `pod-cidr`, `service-cidr`. The config file
//! (`--config /etc/shturman/agent.yaml`) holds the same settings in camelCase
//! (`mqttUrl`, `nodeName`, …, `labels` as a map) and is decoded strictly: an
//! unknown field is an error with its line and column.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use shturman_api::manifest::{self, Limits};
use shturman_api::validate;
use shturman_api::wire;

/// Default heartbeat period.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);
/// Shortest heartbeat period accepted (tests use short ones).
const MIN_HEARTBEAT: Duration = Duration::from_millis(100);
/// Where containerd listens on most hosts (`--containerd-socket`).
pub const DEFAULT_CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";
/// Default `--max-pods` (Kubernetes' default).
pub const DEFAULT_MAX_PODS: u32 = 110;
/// Default MQTT port when the URL has none.
const DEFAULT_MQTT_PORT: u16 = 1883;

/// Everything the agent needs to start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub mqtt: MqttAddr,
    /// The join token; needed only until the node has joined.
    pub token: Option<String>,
    pub node_name: String,
    pub data_dir: PathBuf,
    /// Extra node labels (`--labels k=v,…`).
    pub labels: BTreeMap<String, String>,
    pub containerd_socket: Option<PathBuf>,
    /// Registries whose Wasm artifacts are pulled over plain http
    /// (`--insecure-registries host:port,…`; an entry without a port
    /// matches every port). Loopback registries always are; the rest use https.
    pub insecure_registries: Vec<String>,
    pub heartbeat_interval: Duration,
    /// Most pods this node takes (kubelet's `--max-pods`), reported as its
    /// `pods` capacity.
    pub max_pods: u32,
    /// The node's InternalIP (kubelet's `--node-ip`): reported to the
    /// control plane, and where NodePorts listen. Found from the host's
    /// interfaces when unset.
    pub node_ip: Option<std::net::IpAddr>,
    /// Where this node's Wasm pods get their own IPs (`--pod-cidr`, e.g.
    /// `10.42.1.0/24`). Unset: Wasm pods share the node's IP, as
    /// `hostNetwork` pods do.
    pub pod_cidr: Option<(std::net::IpAddr, u8)>,
    /// Services' ClusterIP range (`--service-cidr`, the control plane's
    /// setting; default `10.43.0.0/16`): the only addresses a Wasm pod that
    /// opted in with `shturman.io/allow-outbound: services` may reach.
    pub service_cidr: (std::net::IpAddr, u8),
}

/// Where the broker listens (`mqtt://host:port`; no TLS yet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqttAddr {
    pub host: String,
    pub port: u16,
}

/// A configuration mistake, in words a person can act on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("--{key} (`{}` in a config file) is required ({hint})", file_key(.key))]
    Missing { key: &'static str, hint: &'static str },
    #[error("--{key} {value:?} (from {origin}) is invalid: {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        origin: String,
        reason: String,
    },
    #[error("{0}")]
    File(String),
}

/// A flag's name as a config file key: `mqtt-url` → `mqttUrl`.
fn file_key(flag: &str) -> String {
    let mut out = String::with_capacity(flag.len());
    let mut upper = false;
    for c in flag.chars() {
        match c {
            '-' => upper = true,
            c if upper => {
                out.push(c.to_ascii_uppercase());
                upper = false;
            }
            c => out.push(c),
        }
    }
    out
}

/// One layer of settings: where they came from and the values.
#[derive(Clone, Debug, Default)]
pub struct Layer {
    /// E.g. `the command line` or `config file /etc/shturman/agent.yaml`.
    pub origin: String,
    pub values: HashMap<String, String>,
}

impl Layer {
    pub fn new(origin: impl Into<String>) -> Layer {
        Layer {
            origin: origin.into(),
            values: HashMap::new(),
        }
    }

    /// Adds `key = value` when a value is given.
    pub fn set(&mut self, key: &str, value: Option<String>) -> &mut Layer {
        if let Some(v) = value {
            self.values.insert(key.to_string(), v);
        }
        self
    }
}

/// Layers in priority order: the first that has a key wins.
#[derive(Clone, Debug, Default)]
pub struct Source(pub Vec<Layer>);

impl Source {
    fn get(&self, key: &str) -> Option<(&str, &str)> {
        self.0.iter().find_map(|l| {
            l.values
                .get(key)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (v.as_str(), l.origin.as_str()))
        })
    }
}

impl Config {
    /// Reads and checks every setting. Pure: no I/O.
    pub fn parse(src: &Source) -> Result<Config, ConfigError> {
        let invalid =
            |key: &'static str, (value, origin): (&str, &str), reason: String| ConfigError::Invalid {
                key,
                value: value.to_string(),
                origin: origin.to_string(),
                reason,
            };
        let url = src.get("mqtt-url").ok_or(ConfigError::Missing {
            key: "mqtt-url",
            hint: "the control plane's MQTT address, e.g. mqtt://10.0.0.1:1883",
        })?;
        let mqtt = parse_mqtt_url(url.0).map_err(|r| invalid("mqtt-url", url, r))?;
        let name = src.get("node-name").ok_or(ConfigError::Missing {
            key: "node-name",
            hint: "a DNS-1123 name for this node, e.g. pi-kitchen",
        })?;
        if !validate::is_dns1123_subdomain(name.0) || !wire::valid_segment(name.0) {
            return Err(invalid(
                "node-name",
                name,
                "use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
                    .into(),
            ));
        }
        let data_dir = src.get("data-dir").ok_or(ConfigError::Missing {
            key: "data-dir",
            hint: "where the agent keeps its identity and journal, e.g. /var/lib/shturman",
        })?;
        let labels = match src.get("labels") {
            Some(l) => parse_labels(l.0).map_err(|r| invalid("labels", l, r))?,
            None => BTreeMap::new(),
        };
        let heartbeat_interval = match src.get("heartbeat-interval") {
            Some(h) => {
                let d = parse_duration(h.0).map_err(|r| invalid("heartbeat-interval", h, r))?;
                if d < MIN_HEARTBEAT {
                    return Err(invalid("heartbeat-interval", h, "use at least 100ms".into()));
                }
                d
            }
            None => DEFAULT_HEARTBEAT,
        };
        let max_pods = match src.get("max-pods") {
            Some(m) => match m.0.trim().parse::<u32>() {
                Ok(n) if n >= 1 => n,
                _ => {
                    return Err(invalid(
                        "max-pods",
                        m,
                        "want a whole number of pods, at least 1".into(),
                    ));
                }
            },
            None => DEFAULT_MAX_PODS,
        };
        let node_ip = match src.get("node-ip") {
            Some(v) => Some(v.0.trim().parse::<std::net::IpAddr>().map_err(|_| {
                invalid(
                    "node-ip",
                    v,
                    "want an IPv4 or IPv6 address, e.g. 192.168.1.20".into(),
                )
            })?),
            None => None,
        };
        let pod_cidr = match src.get("pod-cidr") {
            Some(v) => Some(parse_cidr(v.0.trim()).map_err(|r| invalid("pod-cidr", v, r))?),
            None => None,
        };
        let service_cidr = match src.get("service-cidr") {
            Some(v) => parse_cidr(v.0.trim()).map_err(|r| invalid("service-cidr", v, r))?,
            None => crate::podip::DEFAULT_SERVICE_CIDR,
        };
        let insecure_registries = match src.get("insecure-registries") {
            Some(v) => parse_registries(v.0).map_err(|r| invalid("insecure-registries", v, r))?,
            None => Vec::new(),
        };
        Ok(Config {
            mqtt,
            token: src.get("token").map(|t| t.0.trim().to_string()),
            node_name: name.0.to_string(),
            data_dir: PathBuf::from(data_dir.0),
            labels,
            insecure_registries,
            // containerd's usual socket unless told otherwise; `none` turns
            // the OCI runtime off.
            containerd_socket: match src.get("containerd-socket") {
                Some(s) if s.0.trim() == "none" => None,
                Some(s) => Some(PathBuf::from(s.0)),
                None => Some(PathBuf::from(DEFAULT_CONTAINERD_SOCKET)),
            },
            heartbeat_interval,
            max_pods,
            node_ip,
            pod_cidr,
            service_cidr,
        })
    }
}

/// The config file's shape (`--config`), decoded strictly.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    mqtt_url: Option<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    node_name: Option<String>,
    #[serde(default)]
    data_dir: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    containerd_socket: Option<String>,
    #[serde(default)]
    insecure_registries: Vec<String>,
    #[serde(default)]
    heartbeat_interval: Option<String>,
    #[serde(default)]
    max_pods: Option<u32>,
    #[serde(default)]
    node_ip: Option<String>,
    #[serde(default)]
    pod_cidr: Option<String>,
    #[serde(default)]
    service_cidr: Option<String>,
}

/// Turns a config file's text into a [`Layer`]; `source` names the file in errors.
pub fn file_layer(source: &str, text: &str) -> Result<Layer, ConfigError> {
    let docs = manifest::parse_documents(source, text, &Limits::default())
        .map_err(|e| ConfigError::File(e.to_string()))?;
    let docs: Vec<_> = docs.into_iter().filter(|d| !d.is_null()).collect();
    let file: FileConfig = match docs.as_slice() {
        [] => FileConfig::default(),
        [doc] => manifest::decode(source, doc).map_err(|e| ConfigError::File(e.to_string()))?,
        _ => {
            return Err(ConfigError::File(format!(
                "{source}: holds {} documents; an agent config file holds one",
                docs.len()
            )));
        }
    };
    let labels = (!file.labels.is_empty()).then(|| {
        file.labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    });
    let mut layer = Layer::new(format!("config file {source}"));
    layer
        .set("mqtt-url", file.mqtt_url)
        .set("token", file.token)
        .set("node-name", file.node_name)
        .set("data-dir", file.data_dir)
        .set("labels", labels)
        .set("containerd-socket", file.containerd_socket)
        .set(
            "insecure-registries",
            (!file.insecure_registries.is_empty()).then(|| file.insecure_registries.join(",")),
        )
        .set("heartbeat-interval", file.heartbeat_interval)
        .set("max-pods", file.max_pods.map(|n| n.to_string()))
        .set("node-ip", file.node_ip)
        .set("pod-cidr", file.pod_cidr)
        .set("service-cidr", file.service_cidr);
    Ok(layer)
}

/// `registry.local:5000,10.0.0.5`: registries as `host[:port]` (no scheme,
/// no path), lowercased.
pub fn parse_registries(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (host, port) = match item.strip_prefix('[') {
            Some(v6) => match v6.split_once(']') {
                Some((h, rest)) if h.parse::<std::net::Ipv6Addr>().is_ok() => (h, rest.strip_prefix(':')),
                _ => return Err(format!("{item:?} is not a registry: write host or host:port")),
            },
            None => match item.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (item, None),
            },
        };
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
        let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
        if item.contains("://") || item.contains('/') || !host_ok || !port_ok {
            return Err(format!(
                "{item:?} is not a registry: write host or host:port, without a scheme or path (e.g. registry.local:5000)"
            ));
        }
        out.push(item.to_ascii_lowercase());
    }
    Ok(out)
}

/// `10.42.1.0/24`: a network address and prefix length, the host bits zero.
pub fn parse_cidr(s: &str) -> Result<(std::net::IpAddr, u8), String> {
    let hint = "write it as address/prefix, e.g. 10.42.1.0/24";
    let (addr, len) = s.split_once('/').ok_or_else(|| hint.to_string())?;
    let addr: std::net::IpAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IP address; {hint}"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| *l <= max)
        .ok_or_else(|| format!("prefix length {len:?} must be 0..={max}; {hint}"))?;
    let bits = match addr {
        std::net::IpAddr::V4(a) => u128::from(u32::from(a)) << 96,
        std::net::IpAddr::V6(a) => u128::from(a),
    };
    let host_bits = bits.checked_shl(u32::from(len)).unwrap_or(0);
    if host_bits != 0 {
        return Err(format!("{s} has host bits set; {hint}"));
    }
    Ok((addr, len))
}

/// `mqtt://host[:port]` (or `tcp://`); TLS schemes are refused for now.
pub fn parse_mqtt_url(s: &str) -> Result<MqttAddr, String> {
    let rest = if let Some(r) = s.strip_prefix("mqtt://").or_else(|| s.strip_prefix("tcp://")) {
        r
    } else if s.starts_with("mqtts://") || s.starts_with("ssl://") {
        return Err("TLS is not supported by this agent yet; use mqtt://host:port".into());
    } else {
        return Err("write it as mqtt://host:port".into());
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains(['/', '@', '?']) {
        return Err("write it as mqtt://host:port, without a path or user".into());
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or("unclosed '[' in an IPv6 address")?;
        (h, after.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err("the host is missing; write it as mqtt://host:port".into());
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{p:?} is not a port (1-65535)"))?,
        None => DEFAULT_MQTT_PORT,
    };
    Ok(MqttAddr {
        host: host.to_string(),
        port,
    })
}

/// `k=v,k2=v2`, each a valid Kubernetes label.
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?} is not key=value"))?;
        if !validate::is_qualified_name(k) {
            return Err(format!("{k:?} is not a valid label key (e.g. example.com/zone)"));
        }
        if !validate::is_label_value(v) {
            return Err(format!(
                "{v:?} is not a valid label value (at most 63 letters, digits, '-', '_' and '.')"
            ));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// `500ms`, `10s`, `2m`, `1h`, or sums such as `1m30s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let hint = || format!("{s:?} is not a duration; write e.g. 10s, 500ms or 1m30s");
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(hint());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(hint());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| hint())?;
        rest = &rest[digits..];
        let unit = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let part = match &rest[..unit] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            _ => return Err(hint()),
        };
        total = total.saturating_add(part);
        rest = &rest[unit..];
    }
    Ok(total)
}

/// The node name when the hostname yields nothing usable.
const FALLBACK_NODE_NAME: &str = "shturman-node";
/// Where a node keeps its identity and journal unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/shturman";

/// A node's default name (`nodeName` unset; `shturman up`'s local node too): the hostname, lower-cased and made a
/// DNS-1123 subdomain (other characters become `-`, each dot-separated
/// label starts and ends with a letter or digit, at most 253 characters).
pub fn node_name_from_hostname(hostname: &str) -> String {
    let mapped: String = hostname
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut name = mapped
        .split('.')
        .map(|l| l.trim_matches('-'))
        .filter(|l| !l.is_empty())
        .map(|l| l.get(..63).unwrap_or(l).trim_end_matches('-'))
        .collect::<Vec<_>>()
        .join(".");
    if name.len() > 253 {
        name.truncate(253);
        name = name.trim_end_matches(['.', '-']).to_string();
    }
    if name.is_empty() {
        FALLBACK_NODE_NAME.to_string()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(origin: &str, kv: &[(&str, &str)]) -> Layer {
        Layer {
            origin: origin.into(),
            values: kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    fn minimal() -> Layer {
        layer(
            "the command line",
            &[
                ("mqtt-url", "mqtt://10.0.0.1:1884"),
                ("node-name", "pi-1"),
                ("data-dir", "/var/lib/shturman"),
            ],
        )
    }

    #[test]
    fn minimal_flags_give_defaults() {
        let c = Config::parse(&Source(vec![minimal()])).unwrap();
        assert_eq!(
            c.mqtt,
            MqttAddr {
                host: "10.0.0.1".into(),
                port: 1884
            }
        );
        assert_eq!(c.node_name, "pi-1");
        assert_eq!(c.heartbeat_interval, DEFAULT_HEARTBEAT);
        assert_eq!(c.token, None);
        assert!(c.labels.is_empty());
        assert_eq!(c.max_pods, DEFAULT_MAX_PODS);
        assert_eq!(
            c.containerd_socket.as_deref(),
            Some(std::path::Path::new(DEFAULT_CONTAINERD_SOCKET))
        );
        assert_eq!((c.node_ip, c.pod_cidr), (None, None));
        assert_eq!(c.service_cidr, ("10.43.0.0".parse().unwrap(), 16));
    }

    #[test]
    fn node_network_settings() {
        let mut l = minimal();
        for (k, v) in [
            ("node-ip", "127.0.0.2"),
            ("pod-cidr", "127.42.1.0/24"),
            ("service-cidr", "127.43.0.0/16"),
            ("max-pods", "1100"),
            ("containerd-socket", "none"),
        ] {
            l.values.insert(k.into(), v.into());
        }
        let c = Config::parse(&Source(vec![l])).unwrap();
        assert_eq!(c.node_ip, Some("127.0.0.2".parse().unwrap()));
        assert_eq!(c.pod_cidr, Some(("127.42.1.0".parse().unwrap(), 24)));
        assert_eq!(c.service_cidr, ("127.43.0.0".parse().unwrap(), 16));
        assert_eq!(c.max_pods, 1100);
        assert_eq!(c.containerd_socket, None, "`none` turns OCI off");
        for (k, v, want) in [
            ("node-ip", "pi.local", "IPv4 or IPv6"),
            ("pod-cidr", "10.42.1.1/24", "host bits"),
            ("pod-cidr", "10.42.1.0", "address/prefix"),
            ("pod-cidr", "10.42.1.0/33", "prefix length"),
            ("service-cidr", "10.43.0.0", "address/prefix"),
            ("max-pods", "0", "at least 1"),
        ] {
            let mut l = minimal();
            l.values.insert(k.into(), v.into());
            let e = Config::parse(&Source(vec![l])).unwrap_err().to_string();
            assert!(e.contains(k) && e.contains(want), "{k}={v}: {e}");
        }
        assert_eq!(parse_cidr("fd00:42::/64").unwrap().1, 64);
    }

    #[test]
    fn missing_and_invalid_keys_are_named() {
        let e = Config::parse(&Source(vec![layer("the command line", &[])])).unwrap_err();
        assert!(matches!(e, ConfigError::Missing { key: "mqtt-url", .. }), "{e}");
        assert!(
            e.to_string()
                .starts_with("--mqtt-url (`mqttUrl` in a config file) is required"),
            "{e}"
        );
        assert_eq!(file_key("containerd-socket"), "containerdSocket");
        let mut bad = minimal();
        bad.values.insert("node-name".into(), "Pi_1".into());
        let e = Config::parse(&Source(vec![bad])).unwrap_err().to_string();
        assert!(
            e.contains("--node-name \"Pi_1\" (from the command line) is invalid"),
            "{e}"
        );
        let mut bad = minimal();
        bad.values.insert("heartbeat-interval".into(), "10".into());
        let e = Config::parse(&Source(vec![bad])).unwrap_err().to_string();
        assert!(e.contains("heartbeat-interval") && e.contains("10s"), "{e}");
    }

    #[test]
    fn flags_win_over_the_file() {
        let file = file_layer(
            "/etc/shturman/agent.yaml",
            "mqttUrl: mqtt://cp.local\nnodeName: from-file\ndataDir: /d\nlabels:\n  zone: a\n  tier: edge\nheartbeatInterval: 1m30s\ntoken: abc.def\n",
        )
        .unwrap();
        let flags = layer("the command line", &[("node-name", "from-flag")]);
        let c = Config::parse(&Source(vec![flags, file])).unwrap();
        assert_eq!(c.node_name, "from-flag");
        assert_eq!(c.mqtt.port, 1883);
        assert_eq!(c.mqtt.host, "cp.local");
        assert_eq!(c.heartbeat_interval, Duration::from_secs(90));
        assert_eq!(c.token.as_deref(), Some("abc.def"));
        assert_eq!(c.labels.get("zone").map(String::as_str), Some("a"));
        assert_eq!(c.labels.len(), 2);
    }

    #[test]
    fn file_is_strict_with_positions() {
        let e = file_layer("agent.yaml", "mqttUrl: mqtt://x\nnodeNmae: pi\n").unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("agent.yaml:2:") && text.contains("nodeNmae"),
            "{text}"
        );
        assert!(file_layer("a.yaml", "a: 1\n---\nb: 2\n").is_err());
        assert!(file_layer("a.yaml", "").unwrap().values.is_empty());
    }

    #[test]
    fn urls() {
        assert_eq!(parse_mqtt_url("tcp://h").unwrap().port, 1883);
        assert_eq!(parse_mqtt_url("mqtt://[::1]:99").unwrap().host, "::1");
        assert!(parse_mqtt_url("mqtts://h:8883").unwrap_err().contains("TLS"));
        assert!(parse_mqtt_url("http://h").is_err());
        assert!(parse_mqtt_url("mqtt://h:0").is_err());
        assert!(parse_mqtt_url("mqtt://:1").is_err());
        assert!(parse_mqtt_url("mqtt://h:1/x").is_err());
    }

    #[test]
    fn insecure_registries() {
        let mut l = minimal();
        l.values.insert(
            "insecure-registries".into(),
            "Reg.local:5000, 10.0.0.5,[fd00::1]:443".into(),
        );
        let c = Config::parse(&Source(vec![l])).unwrap();
        assert_eq!(
            c.insecure_registries,
            ["reg.local:5000", "10.0.0.5", "[fd00::1]:443"]
        );
        assert!(
            Config::parse(&Source(vec![minimal()]))
                .unwrap()
                .insecure_registries
                .is_empty()
        );
        for bad in ["http://reg:5000", "reg:5000/path", "reg:0", "reg:x", "bad host"] {
            let mut l = minimal();
            l.values.insert("insecure-registries".into(), bad.into());
            let e = Config::parse(&Source(vec![l])).unwrap_err().to_string();
            assert!(
                e.contains("insecure-registries") && e.contains("host:port"),
                "{bad}: {e}"
            );
        }
        let file = file_layer("a.yaml", "insecureRegistries: [reg.local:5000, other]\n").unwrap();
        let c = Config::parse(&Source(vec![minimal(), file])).unwrap();
        assert_eq!(c.insecure_registries, ["reg.local:5000", "other"]);
    }

    #[test]
    fn labels_and_durations() {
        let l = parse_labels("a=b, example.com/zone=x,").unwrap();
        assert_eq!(l.len(), 2);
        assert!(parse_labels("novalue").is_err());
        assert!(parse_labels("bad key=x").is_err());
        assert!(parse_labels("k=has space").is_err());
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1h2m3s").unwrap(), Duration::from_secs(3723));
        for bad in ["", "s", "10", "10x", "-1s", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hostnames_become_dns_1123_names() {
        assert_eq!(node_name_from_hostname("pi-1"), "pi-1");
        assert_eq!(node_name_from_hostname("My_Laptop.local\n"), "my-laptop.local");
        assert_eq!(node_name_from_hostname("-edge-"), "edge");
        assert_eq!(node_name_from_hostname("a..b"), "a.b");
        assert_eq!(node_name_from_hostname("Ünïcode box"), "n-code-box");
        assert_eq!(node_name_from_hostname(""), FALLBACK_NODE_NAME);
        assert_eq!(node_name_from_hostname("___"), FALLBACK_NODE_NAME);
        let long = node_name_from_hostname(&"x".repeat(300));
        assert_eq!(long.len(), 63);
        let many = node_name_from_hostname(&["abc"; 100].join("."));
        assert!(many.len() <= 253 && !many.ends_with('.'), "{many}");
        for h in ["My_Laptop.local", "-edge-", &"y".repeat(70), "a.-b-.c"] {
            let n = node_name_from_hostname(h);
            assert!(
                shturman_api::validate::is_dns1123_subdomain(&n),
                "{h:?} gave {n:?}"
            );
        }
    }
}
