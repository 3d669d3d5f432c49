//! The Service proxy: a userspace L4 (TCP) load balancer in every agent.
//!
//! Every agent serves every Service (routes come retained on
//! `services/{ns}/{name}` and `serviceset`; docs/MQTT.md), accepting on
//! `clusterIP:port` and, for NodePort Services, on `nodeIP:nodePort`, and
//! forwarding each connection to a ready endpoint, on this node or another.
//!
//! - [`table`] (pure): the routes and their ordering rules → a [`table::Plan`];
//! - [`pick`] (pure): least-connections by two random choices (default) or
//!   round-robin, `ClientIP` affinity, skipping endpoints that just failed;
//! - [`forward`]: one connection — connect with retries, copy both ways;
//! - [`listen`]: the listening sockets (`SO_REUSEPORT`) and accept loops;
//! - [`workers`]: the data-plane threads, one runtime each, that accept
//!   and copy;
//! - [`crate::netif`]: cluster IPs outside `127/8` on the dummy `shturman0`.
//!
//! This module is the thin shell: the agent hands it MQTT payloads
//! ([`Proxy::on_message`]), which update the table and wake the proxy's own
//! task; that task turns the plan into listeners, per-port balancer state
//! and interface addresses, and retries what failed (a port in use, an
//! address it could not add). Counters per Service port come out of
//! [`Proxy::stats`].

pub mod forward;
pub mod listen;
pub mod pick;
pub mod table;
#[cfg(test)]
mod tests;
pub mod workers;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use shturman_api::wire::{ProxyPortStats, ServiceTopic};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use self::forward::PortState;
use self::listen::Listeners;
use self::pick::Policy;
use self::table::{Applied, PortKey, ServiceKey, Table};
use crate::netif;

/// How soon a listener that could not be bound is tried again.
const BIND_RETRY: Duration = Duration::from_secs(5);
/// How soon a cluster IP that could not be added is tried again.
const NETIF_RETRY: Duration = Duration::from_secs(60);

/// How the proxy runs.
#[derive(Clone, Debug, Default)]
pub struct ProxyConfig {
    /// Where NodePorts listen (`--node-ip`); every address when unset.
    pub node_ip: Option<IpAddr>,
    /// How connections are spread.
    pub policy: Policy,
    /// Whether cluster IPs outside `127/8` are added to [`netif::IFACE`]
    /// (off in tests that must not touch the host's interfaces).
    pub manage_interface: bool,
    /// The cluster's `--service-cidr`: only addresses inside it are ever
    /// tidied away from the interface (pod IPs may share it).
    pub service_cidr: Option<(IpAddr, u8)>,
    /// Data-plane threads ([`workers`]); 0: one per core.
    pub threads: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the agent and the proxy's task share.
#[derive(Default)]
struct Shared {
    table: Mutex<Table>,
    wake: Notify,
    ports: Mutex<BTreeMap<PortKey, Arc<PortState>>>,
    /// Addresses listening right now (for tests and logs).
    listening: Mutex<Vec<SocketAddr>>,
}

/// The agent's handle on its proxy.
pub struct Proxy {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Starts the proxy's task (needs a tokio runtime).
    pub fn start(config: ProxyConfig) -> Proxy {
        let shared = Arc::new(Shared::default());
        let task = tokio::spawn(run(shared.clone(), config));
        Proxy { shared, task }
    }

    /// A message on a Service topic.
    pub fn on_message(&self, topic: &ServiceTopic, payload: &[u8]) {
        let changed = match topic {
            ServiceTopic::Route { namespace, name } => self.on_route(namespace, name, payload),
            ServiceTopic::Set => self.on_set(payload),
        };
        if changed {
            self.shared.wake.notify_one();
        }
    }

    fn on_route(&self, namespace: &str, name: &str, payload: &[u8]) -> bool {
        let route = match table::decode_route(namespace, name, payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(service = %format!("{namespace}/{name}"), error = %e, "service route dropped");
                return false;
            }
        };
        let withdrawn = route.is_none();
        match lock(&self.shared.table).apply_route(namespace, name, route) {
            Applied::Changed => {
                if withdrawn {
                    tracing::info!(service = %format!("{namespace}/{name}"), "service withdrawn");
                } else {
                    tracing::debug!(service = %format!("{namespace}/{name}"), "service route updated");
                }
                true
            }
            Applied::Unchanged => false,
            Applied::Ignored(why) => {
                tracing::debug!(service = %format!("{namespace}/{name}"), why, "service route ignored");
                false
            }
        }
    }

    fn on_set(&self, payload: &[u8]) -> bool {
        let set = match table::decode_set(payload) {
            Ok(Some(s)) => s,
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(error = %e, "service set dropped");
                return false;
            }
        };
        let (revision, count) = (set.revision, set.services.len());
        let mut t = lock(&self.shared.table);
        let first = !t.has_set();
        match t.apply_set(set) {
            Some(dropped) => {
                for (ns, name) in &dropped {
                    tracing::info!(service = %format!("{ns}/{name}"), "service dropped: no longer in the service set");
                }
                tracing::debug!(
                    revision,
                    services = count,
                    dropped = dropped.len(),
                    "service set applied"
                );
                // The first set also lets the task tidy the interface.
                first || !dropped.is_empty()
            }
            None => {
                tracing::debug!(revision, "older service set ignored");
                false
            }
        }
    }

    /// Every served Service port's counters, sorted.
    pub fn stats(&self) -> Vec<ProxyPortStats> {
        lock(&self.shared.ports).values().map(|p| p.stats()).collect()
    }

    /// The ready backends new connections to a Service port go to (as the
    /// running proxy has applied them).
    pub fn backends(&self, key: &PortKey) -> Option<Vec<SocketAddr>> {
        lock(&self.shared.ports).get(key).map(|p| p.backends())
    }

    /// The addresses the proxy listens on right now.
    pub fn listening(&self) -> Vec<SocketAddr> {
        lock(&self.shared.listening).clone()
    }

    /// Stops accepting (listeners close); open connections end with the
    /// runtime.
    pub fn shutdown(&self) {
        self.task.abort();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The interface addresses the proxy manages.
#[derive(Default)]
struct Interface {
    /// Where cluster IPs go, once found ([`netif::prepare`]).
    device: Option<netif::Device>,
    /// Added, and where.
    added: BTreeMap<IpAddr, netif::Device>,
    /// Could not be added: when to try again.
    failed: BTreeMap<IpAddr, Instant>,
    /// Stray addresses were removed once the first service set arrived.
    tidied: bool,
}

/// The proxy's task: apply the plan, then wait for a change or a retry.
async fn run(shared: Arc<Shared>, config: ProxyConfig) {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mut listeners = Listeners::new(workers::thread_count(config.threads, cores));
    let mut iface = Interface::default();
    let mut noted: HashSet<String> = HashSet::new();
    let mut seed = [0u8; 8];
    let _ = getrandom::fill(&mut seed);
    let mut seed = u64::from_le_bytes(seed);
    loop {
        let (plan, has_set) = {
            let t = lock(&shared.table);
            (t.plan(config.node_ip), t.has_set())
        };
        // Each distinct note once (again after it went away and came back).
        let now_notes: HashSet<String> = plan.notes.iter().cloned().collect();
        for n in now_notes.difference(&noted) {
            tracing::warn!("{n}");
        }
        noted = now_notes;

        // Per-port state: kept across updates, so counters and draining
        // connections' counts go on.
        let states: Vec<(Arc<PortState>, &table::PortSpec)> = {
            let mut ports = lock(&shared.ports);
            let keys: BTreeSet<&PortKey> = plan.ports.iter().map(|p| &p.key).collect();
            ports.retain(|k, _| keys.contains(k));
            plan.ports
                .iter()
                .map(|spec| {
                    let state = ports
                        .entry(spec.key.clone())
                        .or_insert_with(|| {
                            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                            Arc::new(PortState::new(spec.key.clone(), config.policy, seed))
                        })
                        .clone();
                    if state.update(spec) {
                        tracing::info!(service = %spec.key, endpoints = spec.backends.len(), "service endpoints updated");
                    }
                    (state, spec)
                })
                .collect()
        };

        let local = if config.manage_interface {
            sync_interface(&mut iface, &plan.cluster_ips, has_set, config.service_cidr).await
        } else {
            BTreeSet::new()
        };

        let mut want: BTreeMap<SocketAddr, Arc<PortState>> = BTreeMap::new();
        for (state, spec) in &states {
            for addr in &spec.listen {
                let ip = addr.ip();
                if config.manage_interface && plan.cluster_ips.contains_key(&ip) && !local.contains(&ip) {
                    continue; // not ours yet: warned in sync_interface
                }
                want.insert(*addr, state.clone());
            }
        }
        for (addr, why) in listeners.reconcile(&want) {
            let service = want.get(&addr).map(|p| p.key.to_string()).unwrap_or_default();
            tracing::warn!(%service, %addr, error = %why, "cannot listen for the service; retrying every {BIND_RETRY:?}");
        }
        *lock(&shared.listening) = listeners.addresses();

        let retry_bind = !listeners.failed().is_empty();
        let retry_netif = iface.failed.values().min().copied();
        let sleep_until = match (retry_bind, retry_netif) {
            (true, Some(t)) => Some(t.min(Instant::now() + BIND_RETRY)),
            (true, None) => Some(Instant::now() + BIND_RETRY),
            (false, t) => t,
        };
        match sleep_until {
            Some(t) => {
                tokio::select! {
                    () = shared.wake.notified() => {}
                    () = tokio::time::sleep_until(t.into()) => {}
                }
            }
            None => shared.wake.notified().await,
        }
    }
}

/// Adds wanted cluster IPs to the interface and removes unwanted ones;
/// returns the cluster IPs the node owns now.
async fn sync_interface(
    iface: &mut Interface,
    wanted: &BTreeMap<IpAddr, ServiceKey>,
    has_set: bool,
    service_cidr: Option<(IpAddr, u8)>,
) -> BTreeSet<IpAddr> {
    let now = Instant::now();
    iface.failed.retain(|ip, _| wanted.contains_key(ip));
    for (ip, (ns, name)) in wanted {
        if iface.added.contains_key(ip) || iface.failed.get(ip).is_some_and(|t| *t > now) {
            continue;
        }
        let added = match iface.device {
            Some(d) => netif::add(*ip, d).await.map(|()| d),
            None => match netif::prepare().await {
                Ok(d) => {
                    tracing::info!("cluster IPs outside 127.0.0.0/8 go on {d}");
                    iface.device = Some(d);
                    netif::add(*ip, d).await.map(|()| d)
                }
                Err(e) => Err(e),
            },
        };
        match added {
            Ok(d) => {
                tracing::info!(service = %format!("{ns}/{name}"), cluster_ip = %ip, "cluster IP added to {d}");
                iface.failed.remove(ip);
                iface.added.insert(*ip, d);
            }
            Err(e) => {
                if !iface.failed.contains_key(ip) {
                    tracing::warn!(
                        service = %format!("{ns}/{name}"),
                        cluster_ip = %ip,
                        error = %e,
                        "the service is not reachable on its cluster IP from this node: cannot make the address local; {}",
                        netif::advice(*ip)
                    );
                }
                iface.failed.insert(*ip, now + NETIF_RETRY);
            }
        }
    }
    let mut remove: Vec<(IpAddr, netif::Device)> = iface
        .added
        .iter()
        .filter(|(ip, _)| !wanted.contains_key(ip))
        .map(|(ip, d)| (*ip, *d))
        .collect();
    if has_set && !iface.tidied {
        // Left by an earlier run: once the first set says what exists.
        iface.tidied = true;
        match netif::addresses().await {
            Ok(found) => remove.extend(found.into_iter().filter(|(ip, _)| {
                !wanted.contains_key(ip)
                    && !iface.added.contains_key(ip)
                    && netif::needs_interface(*ip)
                    && !is_link_local(*ip)
                    && service_cidr.is_none_or(|c| crate::podip::contains(c, *ip))
            })),
            Err(e) => tracing::debug!(error = %e, "cannot list the cluster IPs left on this node"),
        }
    }
    for (ip, d) in remove {
        // A failure is not retried: the address is harmless once nothing
        // listens on it.
        match netif::remove(ip, d).await {
            Ok(()) => tracing::info!(cluster_ip = %ip, "cluster IP removed from {d}"),
            Err(e) => tracing::warn!(cluster_ip = %ip, error = %e, "cannot remove a withdrawn cluster IP"),
        }
        iface.added.remove(&ip);
    }
    iface.added.keys().copied().collect()
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}
