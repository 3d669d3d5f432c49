//! The Service routes an agent knows (pure): what arrived on
//! `services/{ns}/{name}` and `serviceset`, with the ordering rules of
//! docs/MQTT.md, and the listeners and backends they ask for.
//!
//! - A route replaces the held one unless it is older: same Service (uid)
//!   and a lower `(revision, endpointsRevision)`, or another uid with a
//!   lower `revision` (a deleted Service's route arriving after its
//!   successor's). A route the last applied set covers but does not list
//!   belongs to a Service that is gone, and is ignored.
//! - An empty payload withdraws the route.
//! - A [`ServiceSet`] drops every held route it covers and lacks (a
//!   withdrawal lost with the broker's memory); a set older than the newest
//!   applied is ignored.
//!
//! [`Table::plan`] turns the routes into [`PortSpec`]s: per TCP Service
//! port, the addresses to accept on (`clusterIP:port`, and `nodeIP:nodePort`
//! for NodePort Services) and the ready backends.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use shturman_api::core::{Protocol, ServiceType, SessionAffinity};
use shturman_api::wire::{ServiceRoute, ServiceSet};

/// A Service: `(namespace, name)`.
pub type ServiceKey = (String, String);

/// One Service port, as counters and listeners know it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortKey {
    pub namespace: String,
    pub name: String,
    /// The Service port's number.
    pub port: i32,
}

impl std::fmt::Display for PortKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.name, self.port)
    }
}

/// A payload the table cannot take.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TableError {
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("the route on services/{topic} is for {payload}")]
    WrongTopic { topic: String, payload: String },
}

/// What applying a message did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The table changed.
    Changed,
    /// Nothing new.
    Unchanged,
    /// Left out, and why.
    Ignored(&'static str),
}

/// One Service port to serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSpec {
    pub key: PortKey,
    /// Where to accept: the cluster IP's port first, then the node port.
    pub listen: Vec<SocketAddr>,
    /// Ready backends, in the route's order.
    pub backends: Vec<SocketAddr>,
    /// `ClientIP` affinity timeout, when the Service asks for it.
    pub affinity: Option<Duration>,
}

/// What the routes ask for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Sorted by key.
    pub ports: Vec<PortSpec>,
    /// Cluster IPs (not loopback) the node must own: IP → its Service.
    pub cluster_ips: BTreeMap<IpAddr, ServiceKey>,
    /// What was left out and why, one line each (the shell logs each once).
    pub notes: Vec<String>,
}

/// `sessionAffinity: ClientIP`'s default timeout (Kubernetes': 3 hours).
const DEFAULT_AFFINITY: Duration = Duration::from_secs(10_800);

/// The routes, by Service.
#[derive(Clone, Debug, Default)]
pub struct Table {
    routes: BTreeMap<ServiceKey, ServiceRoute>,
    /// The newest set applied.
    set: Option<ServiceSet>,
}

/// Decodes a `services/{namespace}/{name}` payload: `None` for a withdrawal.
pub fn decode_route(namespace: &str, name: &str, payload: &[u8]) -> Result<Option<ServiceRoute>, TableError> {
    if payload.is_empty() {
        return Ok(None);
    }
    let route: ServiceRoute = serde_json::from_slice(payload).map_err(|e| TableError::Malformed {
        what: "ServiceRoute",
        reason: e.to_string(),
    })?;
    if route.namespace != namespace || route.name != name {
        return Err(TableError::WrongTopic {
            topic: format!("{namespace}/{name}"),
            payload: format!("{}/{}", route.namespace, route.name),
        });
    }
    Ok(Some(route))
}

/// Decodes a `serviceset` payload (`None`: empty, nothing to do).
pub fn decode_set(payload: &[u8]) -> Result<Option<ServiceSet>, TableError> {
    if payload.is_empty() {
        return Ok(None);
    }
    serde_json::from_slice(payload)
        .map(Some)
        .map_err(|e| TableError::Malformed {
            what: "ServiceSet",
            reason: e.to_string(),
        })
}

impl Table {
    /// The routes held.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether no route is held.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Whether a set was applied (the table is then authoritative).
    pub fn has_set(&self) -> bool {
        self.set.is_some()
    }

    /// The route of a Service, if held.
    pub fn get(&self, namespace: &str, name: &str) -> Option<&ServiceRoute> {
        self.routes.get(&(namespace.to_string(), name.to_string()))
    }

    /// Applies what arrived on `services/{namespace}/{name}` (`None`: withdrawn).
    pub fn apply_route(&mut self, namespace: &str, name: &str, route: Option<ServiceRoute>) -> Applied {
        let key = (namespace.to_string(), name.to_string());
        let Some(route) = route else {
            return match self.routes.remove(&key) {
                Some(_) => Applied::Changed,
                None => Applied::Unchanged,
            };
        };
        if let Some(set) = &self.set
            && set.covers(route.revision)
            && !set.contains(namespace, name, &route.uid)
        {
            return Applied::Ignored("the service set says this Service is gone");
        }
        if let Some(held) = self.routes.get(&key) {
            if *held == route {
                return Applied::Unchanged;
            }
            let older = if held.uid == route.uid {
                (route.revision, route.endpoints_revision) < (held.revision, held.endpoints_revision)
            } else {
                route.revision < held.revision
            };
            if older {
                return Applied::Ignored("older than the route held");
            }
        }
        self.routes.insert(key, route);
        Applied::Changed
    }

    /// Applies a [`ServiceSet`]: returns the Services dropped, or `None`
    /// when the set is older than the newest applied (ignored).
    pub fn apply_set(&mut self, set: ServiceSet) -> Option<Vec<ServiceKey>> {
        if self.set.as_ref().is_some_and(|s| set.revision < s.revision) {
            return None;
        }
        let drop: Vec<ServiceKey> = self
            .routes
            .iter()
            .filter(|((ns, name), r)| set.covers(r.revision) && !set.contains(ns, name, &r.uid))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &drop {
            self.routes.remove(k);
        }
        self.set = Some(set);
        Some(drop)
    }

    /// The listeners and backends every held route asks for; NodePorts
    /// listen on `node_ip` (`0.0.0.0` when unset). An address two ports
    /// claim goes to the first (by Service and port) and a note names both.
    pub fn plan(&self, node_ip: Option<IpAddr>) -> Plan {
        let node_ip = node_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let mut plan = Plan::default();
        let mut owners: BTreeMap<SocketAddr, PortKey> = BTreeMap::new();
        for ((ns, name), route) in &self.routes {
            let svc = format!("{ns}/{name}");
            let Some(text) = route.cluster_ip.as_deref() else {
                continue; // headless: nothing to proxy
            };
            let Ok(cluster_ip) = text.trim().parse::<IpAddr>() else {
                if !text.trim().eq_ignore_ascii_case("none") {
                    plan.notes.push(format!(
                        "service {svc}: cluster IP {text:?} is not an IP address; not served"
                    ));
                }
                continue;
            };
            if !cluster_ip.is_loopback() && !cluster_ip.is_unspecified() {
                plan.cluster_ips
                    .entry(cluster_ip)
                    .or_insert_with(|| (ns.clone(), name.clone()));
            }
            let affinity = (route.session_affinity == SessionAffinity::ClientIP).then(|| {
                route
                    .client_ip_timeout_seconds
                    .and_then(|s| u64::try_from(s).ok())
                    .filter(|s| *s > 0)
                    .map_or(DEFAULT_AFFINITY, Duration::from_secs)
            });
            for p in &route.ports {
                if p.protocol != Protocol::Tcp {
                    plan.notes.push(format!(
                        "service {svc} port {}: only TCP is proxied; {:?} is not",
                        p.port, p.protocol
                    ));
                    continue;
                }
                let Ok(port) = u16::try_from(p.port) else {
                    plan.notes
                        .push(format!("service {svc}: port {} is out of range", p.port));
                    continue;
                };
                let key = PortKey {
                    namespace: ns.clone(),
                    name: name.clone(),
                    port: p.port,
                };
                let mut listen = vec![SocketAddr::new(cluster_ip, port)];
                if route.type_ == ServiceType::NodePort
                    && let Some(np) = p.node_port
                {
                    match u16::try_from(np) {
                        Ok(np) if np > 0 => listen.push(SocketAddr::new(node_ip, np)),
                        _ => plan
                            .notes
                            .push(format!("service {svc}: node port {np} is out of range")),
                    }
                }
                listen.retain(|a| match owners.get(a) {
                    Some(owner) => {
                        plan.notes.push(format!(
                            "service {svc} port {}: {a} is already served for {owner}; not served twice",
                            p.port
                        ));
                        false
                    }
                    None => {
                        owners.insert(*a, key.clone());
                        true
                    }
                });
                let backends = route
                    .backends(&p.name)
                    .filter_map(|(ip, port)| {
                        let ip = ip.parse::<IpAddr>().ok()?;
                        let port = u16::try_from(port).ok().filter(|p| *p > 0)?;
                        Some(SocketAddr::new(ip, port))
                    })
                    .collect();
                plan.ports.push(PortSpec {
                    key,
                    listen,
                    backends,
                    affinity,
                });
            }
        }
        plan.ports.sort_by(|a, b| a.key.cmp(&b.key));
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shturman_api::intstr::IntOrString;
    use shturman_api::wire::{RouteEndpoint, RoutePort, ServiceRef};

    fn route(name: &str, uid: &str, revision: u64, ips: &[&str]) -> ServiceRoute {
        ServiceRoute {
            namespace: "default".into(),
            name: name.into(),
            uid: uid.into(),
            revision,
            endpoints_revision: 0,
            type_: ServiceType::ClusterIP,
            cluster_ip: Some("127.43.0.10".into()),
            session_affinity: SessionAffinity::None,
            client_ip_timeout_seconds: None,
            ports: vec![RoutePort {
                name: String::new(),
                protocol: Protocol::Tcp,
                port: 80,
                node_port: None,
                target_port: IntOrString::Int(8080),
            }],
            endpoints: ips
                .iter()
                .map(|ip| RouteEndpoint {
                    ip: (*ip).into(),
                    ready: true,
                    ports: BTreeMap::from([(String::new(), 8080)]),
                    ..RouteEndpoint::default()
                })
                .collect(),
        }
    }

    fn set(revision: u64, services: &[(&str, &str)]) -> ServiceSet {
        ServiceSet {
            revision,
            services: services
                .iter()
                .map(|(name, uid)| ServiceRef {
                    namespace: "default".into(),
                    name: (*name).into(),
                    uid: (*uid).into(),
                })
                .collect(),
        }
    }

    #[test]
    fn payloads_decode_and_must_match_their_topic() {
        let r = route("web", "u1", 5, &["10.0.0.1"]);
        let bytes = serde_json::to_vec(&r).unwrap();
        assert_eq!(decode_route("default", "web", &bytes), Ok(Some(r)));
        assert_eq!(decode_route("default", "web", b""), Ok(None));
        assert!(matches!(
            decode_route("default", "api", &bytes),
            Err(TableError::WrongTopic { .. })
        ));
        assert!(matches!(
            decode_route("default", "web", b"{"),
            Err(TableError::Malformed { .. })
        ));
        assert_eq!(decode_set(b""), Ok(None));
        assert!(decode_set(b"7").is_err());
        assert_eq!(decode_set(br#"{"revision":3}"#), Ok(Some(set(3, &[]))));
    }

    #[test]
    fn newest_route_wins_and_withdrawals_remove() {
        let mut t = Table::default();
        assert_eq!(
            t.apply_route("default", "web", Some(route("web", "u1", 5, &["10.0.0.1"]))),
            Applied::Changed
        );
        assert_eq!(
            t.apply_route("default", "web", Some(route("web", "u1", 5, &["10.0.0.1"]))),
            Applied::Unchanged
        );
        // New endpoints, same Service revision: taken.
        let mut newer = route("web", "u1", 5, &["10.0.0.1", "10.0.0.2"]);
        newer.endpoints_revision = 9;
        assert_eq!(
            t.apply_route("default", "web", Some(newer.clone())),
            Applied::Changed
        );
        // An older one (late QoS 1 duplicate) is not.
        let mut older = route("web", "u1", 5, &["10.0.0.3"]);
        older.endpoints_revision = 8;
        assert!(matches!(
            t.apply_route("default", "web", Some(older)),
            Applied::Ignored(_)
        ));
        assert_eq!(t.get("default", "web"), Some(&newer));
        // A re-created Service (new uid, newer revision) replaces it; an
        // older uid's route does not come back.
        assert_eq!(
            t.apply_route("default", "web", Some(route("web", "u2", 20, &[]))),
            Applied::Changed
        );
        assert!(matches!(
            t.apply_route("default", "web", Some(route("web", "u1", 6, &[]))),
            Applied::Ignored(_)
        ));
        assert_eq!(t.apply_route("default", "web", None), Applied::Changed);
        assert_eq!(t.apply_route("default", "web", None), Applied::Unchanged);
        assert!(t.is_empty());
    }

    #[test]
    fn sets_drop_covered_routes_they_lack() {
        let mut t = Table::default();
        t.apply_route("default", "web", Some(route("web", "u1", 5, &[])));
        t.apply_route("default", "api", Some(route("api", "u2", 30, &[])));
        // The set at revision 10 lacks both: only "web" (revision 5) is covered.
        assert_eq!(
            t.apply_set(set(10, &[])),
            Some(vec![("default".into(), "web".into())])
        );
        assert_eq!(t.len(), 1);
        // An older set is ignored.
        assert_eq!(t.apply_set(set(9, &[])), None);
        // A set listing "api" with another uid (re-created) drops the old one.
        assert_eq!(
            t.apply_set(set(40, &[("api", "u3")])),
            Some(vec![("default".into(), "api".into())])
        );
        // A late route of a Service the set says is gone is ignored; its
        // successor (listed) is taken.
        assert!(matches!(
            t.apply_route("default", "api", Some(route("api", "u2", 30, &[]))),
            Applied::Ignored(_)
        ));
        assert_eq!(
            t.apply_route("default", "api", Some(route("api", "u3", 35, &[]))),
            Applied::Changed
        );
        // A Service newer than the set is kept even though the set lacks it.
        assert_eq!(
            t.apply_route("default", "new", Some(route("new", "u9", 50, &[]))),
            Applied::Changed
        );
        assert_eq!(t.apply_set(set(40, &[("api", "u3")])), Some(vec![]));
        assert_eq!(t.len(), 2);
        assert!(t.has_set());
    }

    #[test]
    fn plans_listeners_and_ready_backends() {
        let mut t = Table::default();
        let mut web = route("web", "u1", 5, &["10.0.0.1", "10.0.0.2", "bogus"]);
        web.endpoints[1].ready = false;
        web.type_ = ServiceType::NodePort;
        web.ports[0].node_port = Some(30080);
        web.session_affinity = SessionAffinity::ClientIP;
        web.client_ip_timeout_seconds = Some(60);
        web.ports.push(RoutePort {
            name: "dns".into(),
            protocol: Protocol::Udp,
            port: 53,
            node_port: None,
            target_port: IntOrString::Int(53),
        });
        t.apply_route("default", "web", Some(web));
        let mut api = route("api", "u2", 6, &["10.0.0.9"]);
        api.cluster_ip = Some("10.43.0.7".into());
        t.apply_route("default", "api", Some(api));
        let mut headless = route("db", "u3", 7, &["10.0.0.5"]);
        headless.cluster_ip = None;
        t.apply_route("default", "db", Some(headless));

        let plan = t.plan(Some("127.0.0.2".parse().unwrap()));
        assert_eq!(plan.ports.len(), 2, "{plan:?}");
        let api = &plan.ports[0];
        assert_eq!(api.key.to_string(), "default/api:80");
        assert_eq!(api.listen, ["10.43.0.7:80".parse().unwrap()]);
        assert_eq!(api.affinity, None);
        let web = &plan.ports[1];
        assert_eq!(
            web.listen,
            [
                "127.43.0.10:80".parse().unwrap(),
                "127.0.0.2:30080".parse().unwrap()
            ]
        );
        assert_eq!(web.backends, ["10.0.0.1:8080".parse().unwrap()]);
        assert_eq!(web.affinity, Some(Duration::from_secs(60)));
        // Only non-loopback cluster IPs need an interface.
        assert_eq!(
            plan.cluster_ips.keys().collect::<Vec<_>>(),
            [&"10.43.0.7".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(plan.notes.len(), 1, "{:?}", plan.notes);
        assert!(plan.notes[0].contains("only TCP"));
        // Without a node IP, node ports listen on every address.
        let plan = t.plan(None);
        assert_eq!(plan.ports[1].listen[1], "0.0.0.0:30080".parse().unwrap());
    }

    #[test]
    fn an_address_is_served_once() {
        let mut t = Table::default();
        t.apply_route("default", "a", Some(route("a", "u1", 5, &[])));
        t.apply_route("default", "b", Some(route("b", "u2", 6, &[])));
        let plan = t.plan(None);
        assert_eq!(plan.ports[0].listen.len(), 1);
        assert!(plan.ports[1].listen.is_empty());
        assert!(
            plan.notes[0].contains("already served for default/a:80"),
            "{:?}",
            plan.notes
        );
    }
}
