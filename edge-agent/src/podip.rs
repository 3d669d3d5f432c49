//! Pod IPs for Wasm pods. With `--pod-cidr` each Wasm pod gets an address
//! of its own from the node's pod CIDR ([`PodIpAllocator`]: the next free
//! address after the last one handed out, skipping the network address,
//! the gateway (`.1`) and, for IPv4, the broadcast address; never two pods
//! the same; released when the pod stops). Without it a Wasm pod's IP is the
//! node's InternalIP, as a `hostNetwork` pod's is, and two pods listening
//! on the same port collide ([`Ports`] names the holder, the runtime reports
//! `PortConflict`).
//!
//! The allocator and the port table are pure. The I/O shell ([`host`])
//! makes a pod IP bindable: addresses in `127.0.0.0/8` always are (the
//! kernel routes the whole range to `lo`); any other address that is not
//! already on the host is added as a `/32` (`/128`) to the dummy link
//! `shturman0`, created when missing, by running `ip` (iproute2, needs
//! CAP_NET_ADMIN).
//!
//! Note for merging: the Service proxy's `netif.rs` adds ClusterIPs to the
//! same dummy link the same way; [`host`] should move there (or call it)
//! once both have landed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::config::Config;

/// The default `--service-cidr` (the control plane's default too).
pub const DEFAULT_SERVICE_CIDR: (IpAddr, u8) = (IpAddr::V4(Ipv4Addr::new(10, 43, 0, 0)), 16);

/// The network settings of the Wasm runtime, from the agent's [`Config`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkSettings {
    /// `--pod-cidr`: where Wasm pods get their own IPs (unset: the node's IP).
    pub pod_cidr: Option<(IpAddr, u8)>,
    /// `--node-ip`: the node's InternalIP (found from the interfaces when unset).
    pub node_ip: Option<IpAddr>,
    /// `--service-cidr`: Services' ClusterIPs, the only addresses a Wasm
    /// pod that opted in (`shturman.io/allow-outbound: services`) may reach.
    pub service_cidr: (IpAddr, u8),
}

impl Default for NetworkSettings {
    fn default() -> Self {
        NetworkSettings {
            pod_cidr: None,
            node_ip: None,
            service_cidr: DEFAULT_SERVICE_CIDR,
        }
    }
}

impl NetworkSettings {
    /// The settings of an agent configured with `cfg`.
    pub fn of(cfg: &Config) -> NetworkSettings {
        NetworkSettings {
            pod_cidr: cfg.pod_cidr,
            node_ip: cfg.node_ip,
            service_cidr: cfg.service_cidr,
        }
    }
}

/// Why a pod gets no IP.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PodIpError {
    #[error("--pod-cidr {cidr} is too small: it has no address for pods (use a /30 or larger)")]
    TooSmall { cidr: String },
    #[error("--pod-cidr {cidr} is full: all {size} pod addresses are in use")]
    Exhausted { cidr: String, size: u128 },
}

/// `a.b.c.d/len`, as written.
pub fn cidr_text((addr, len): (IpAddr, u8)) -> String {
    format!("{addr}/{len}")
}

/// Whether `ip` is inside `cidr` (both families compared as 128-bit numbers;
/// an IPv4 address is never in an IPv6 CIDR nor the reverse).
pub fn contains((net, len): (IpAddr, u8), ip: IpAddr) -> bool {
    if net.is_ipv4() != ip.is_ipv4() {
        return false;
    }
    let width: u32 = if net.is_ipv4() { 32 } else { 128 };
    let host_bits = width.saturating_sub(u32::from(len));
    let mask = |v: u128| v.checked_shr(host_bits).unwrap_or(0);
    mask(bits(net)) == mask(bits(ip))
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// Hands out the addresses of a pod CIDR, one per owner (a pod).
#[derive(Clone, Debug)]
pub struct PodIpAllocator {
    cidr: (IpAddr, u8),
    /// The network address as a number.
    base: u128,
    /// Host offsets pods may get: `first..=last`.
    first: u128,
    last: u128,
    /// Where the search for the next free address starts.
    next: u128,
    used: BTreeSet<u128>,
    owners: HashMap<String, u128>,
}

impl PodIpAllocator {
    /// An allocator over `cidr` (a network address and prefix length, as
    /// [`crate::config::parse_cidr`] gives).
    pub fn new(cidr: (IpAddr, u8)) -> Result<PodIpAllocator, PodIpError> {
        let (net, len) = cidr;
        let width: u32 = if net.is_ipv4() { 32 } else { 128 };
        let host_bits = width.saturating_sub(u32::from(len));
        // The largest host offset (all host bits set).
        let top = match host_bits {
            0 => 0,
            128.. => u128::MAX,
            n => (1u128 << n) - 1,
        };
        // Offset 0 is the network, 1 the gateway; IPv4 keeps its broadcast.
        let last = if net.is_ipv4() { top.saturating_sub(1) } else { top };
        let first = 2;
        if top < 2 || last < first {
            return Err(PodIpError::TooSmall {
                cidr: cidr_text(cidr),
            });
        }
        Ok(PodIpAllocator {
            cidr,
            base: bits(net),
            first,
            last,
            next: first,
            used: BTreeSet::new(),
            owners: HashMap::new(),
        })
    }

    /// The CIDR it hands out.
    pub fn cidr(&self) -> (IpAddr, u8) {
        self.cidr
    }

    /// How many addresses pods may get.
    pub fn size(&self) -> u128 {
        (self.last - self.first).saturating_add(1)
    }

    /// How many are in use.
    pub fn in_use(&self) -> usize {
        self.used.len()
    }

    /// `owner`'s address: the one it has, else the next free one.
    pub fn allocate(&mut self, owner: &str) -> Result<IpAddr, PodIpError> {
        if let Some(off) = self.owners.get(owner) {
            return Ok(self.addr(*off));
        }
        let size = self.size();
        if u128::try_from(self.used.len()).unwrap_or(u128::MAX) >= size {
            return Err(PodIpError::Exhausted {
                cidr: cidr_text(self.cidr),
                size,
            });
        }
        // At most `used + 1` candidates from the cursor on hold a free one.
        let mut off = self.next;
        loop {
            if !self.used.contains(&off) {
                break;
            }
            off = if off >= self.last { self.first } else { off + 1 };
        }
        self.used.insert(off);
        self.owners.insert(owner.to_string(), off);
        self.next = if off >= self.last { self.first } else { off + 1 };
        Ok(self.addr(off))
    }

    /// Frees `owner`'s address; returns it.
    pub fn release(&mut self, owner: &str) -> Option<IpAddr> {
        let off = self.owners.remove(owner)?;
        self.used.remove(&off);
        Some(self.addr(off))
    }

    /// `owner`'s address, if it has one.
    pub fn get(&self, owner: &str) -> Option<IpAddr> {
        self.owners.get(owner).map(|off| self.addr(*off))
    }

    fn addr(&self, off: u128) -> IpAddr {
        let n = self.base.wrapping_add(off);
        match self.cidr.0 {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(u32::try_from(n).unwrap_or(u32::MAX))),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(n)),
        }
    }
}

/// The ports pods listen on, so a second pod asking for a taken address
/// and port hears who holds it.
#[derive(Clone, Debug, Default)]
pub struct Ports {
    held: BTreeMap<(IpAddr, u16), String>,
}

/// `ip:port` is held by another pod.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("port {port} on {ip} is already in use by pod {holder}")]
pub struct PortTaken {
    pub ip: IpAddr,
    pub port: u16,
    pub holder: String,
}

impl Ports {
    /// Claims `ip:port` for `owner` (again: fine).
    pub fn claim(&mut self, ip: IpAddr, port: u16, owner: &str) -> Result<(), PortTaken> {
        match self.held.get(&(ip, port)) {
            Some(holder) if holder != owner => Err(PortTaken {
                ip,
                port,
                holder: holder.clone(),
            }),
            Some(_) => Ok(()),
            None => {
                self.held.insert((ip, port), owner.to_string());
                Ok(())
            }
        }
    }

    /// Frees `ip:port` if `owner` holds it.
    pub fn release(&mut self, ip: IpAddr, port: u16, owner: &str) {
        if self.held.get(&(ip, port)).is_some_and(|h| h == owner) {
            self.held.remove(&(ip, port));
        }
    }

    /// Frees every port `owner` holds.
    pub fn release_all(&mut self, owner: &str) {
        self.held.retain(|_, h| h != owner);
    }
}

/// The I/O shell: making a pod IP bindable on this host. Blocking: call
/// from a blocking context.
pub mod host {
    use std::io::ErrorKind;
    use std::net::{IpAddr, TcpListener};
    use std::process::Command;

    /// The dummy link pod IPs (and, later, ClusterIPs) are added to.
    pub const LINK: &str = "shturman0";

    /// Why a pod IP cannot be made local.
    #[derive(Debug, thiserror::Error)]
    #[error(
        "cannot add pod IP {ip} to {LINK}: {reason} (the agent needs the `ip` command and CAP_NET_ADMIN for a --pod-cidr outside 127.0.0.0/8)"
    )]
    pub struct AddError {
        pub ip: IpAddr,
        pub reason: String,
    }

    /// Whether `ip` can be bound here now.
    pub fn is_local(ip: IpAddr) -> bool {
        match TcpListener::bind((ip, 0)) {
            Ok(_) => true,
            Err(e) => e.kind() != ErrorKind::AddrNotAvailable,
        }
    }

    /// Makes `ip` bindable; `Ok(true)` when it was added (so it is removed
    /// with [`remove`] when the pod goes), `Ok(false)` when it already was.
    pub fn ensure(ip: IpAddr) -> Result<bool, AddError> {
        if ip.is_loopback() || is_local(ip) {
            return Ok(false);
        }
        let fail = |reason: String| AddError { ip, reason };
        if !run(&["link", "show", "dev", LINK]).map_err(fail)? {
            // Lost a race with another pod creating it: fine, checked below.
            let _ = run(&["link", "add", LINK, "type", "dummy"]).map_err(fail)?;
        }
        if !run(&["link", "set", LINK, "up"]).map_err(fail)? {
            return Err(fail(format!("`ip link set {LINK} up` failed")));
        }
        let addr = host_prefix(ip);
        if !run(&["addr", "add", &addr, "dev", LINK]).map_err(fail)? && !is_local(ip) {
            return Err(fail(format!("`ip addr add {addr} dev {LINK}` failed")));
        }
        Ok(true)
    }

    /// Removes an address [`ensure`] added (best effort).
    pub fn remove(ip: IpAddr) {
        let addr = host_prefix(ip);
        if let Err(e) = run(&["addr", "del", &addr, "dev", LINK]) {
            tracing::warn!(%ip, error = %e, "cannot remove pod IP from {LINK}");
        }
    }

    fn host_prefix(ip: IpAddr) -> String {
        let len = if ip.is_ipv4() { 32 } else { 128 };
        format!("{ip}/{len}")
    }

    /// Runs `ip ARGS`: whether it succeeded; an error when it cannot run.
    fn run(args: &[&str]) -> Result<bool, String> {
        let out = Command::new("ip")
            .args(args)
            .output()
            .map_err(|e| format!("cannot run `ip`: {e}"))?;
        if !out.status.success() {
            tracing::debug!(
                ?args,
                stderr = %String::from_utf8_lossy(&out.stderr).trim(),
                "ip failed"
            );
        }
        Ok(out.status.success())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_cidr;

    fn alloc(cidr: &str) -> PodIpAllocator {
        PodIpAllocator::new(parse_cidr(cidr).unwrap()).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn hands_out_the_next_free_address_skipping_network_gateway_broadcast() {
        let mut a = alloc("127.42.1.0/24");
        assert_eq!(a.size(), 253);
        assert_eq!(a.allocate("default/a").unwrap(), ip("127.42.1.2"));
        assert_eq!(a.allocate("default/b").unwrap(), ip("127.42.1.3"));
        // The same owner keeps its address.
        assert_eq!(a.allocate("default/a").unwrap(), ip("127.42.1.2"));
        assert_eq!(a.get("default/b"), Some(ip("127.42.1.3")));
        assert_eq!(a.in_use(), 2);
        // Released addresses are reused only after the rest (the next free
        // after the last handed out).
        assert_eq!(a.release("default/a"), Some(ip("127.42.1.2")));
        assert_eq!(a.release("default/a"), None);
        assert_eq!(a.allocate("default/c").unwrap(), ip("127.42.1.4"));
        assert_eq!(a.get("default/a"), None);
    }

    #[test]
    fn never_two_pods_the_same_address_and_wraps_around() {
        let mut a = alloc("10.42.0.0/29"); // .2 ..= .6
        let got: Vec<IpAddr> = (0..5).map(|i| a.allocate(&format!("p{i}")).unwrap()).collect();
        let distinct: BTreeSet<_> = got.iter().collect();
        assert_eq!(distinct.len(), 5);
        assert!(!got.contains(&ip("10.42.0.0")) && !got.contains(&ip("10.42.0.1")));
        assert!(!got.contains(&ip("10.42.0.7")), "broadcast");
        let e = a.allocate("p5").unwrap_err();
        assert_eq!(
            e,
            PodIpError::Exhausted {
                cidr: "10.42.0.0/29".into(),
                size: 5
            }
        );
        assert!(e.to_string().contains("10.42.0.0/29 is full"));
        // Free one in the middle: the next allocation wraps around to it.
        a.release("p2");
        assert_eq!(a.allocate("p6").unwrap(), ip("10.42.0.4"));
        let mut seen = BTreeSet::new();
        for i in [0, 1, 3, 4, 6] {
            assert!(seen.insert(a.get(&format!("p{i}")).unwrap()));
        }
    }

    #[test]
    fn tiny_and_ipv6_cidrs() {
        for small in ["10.0.0.0/31", "10.0.0.0/32", "fd00::/127", "fd00::/128"] {
            let e = PodIpAllocator::new(parse_cidr(small).unwrap()).unwrap_err();
            assert!(e.to_string().contains("too small"), "{small}: {e}");
        }
        let mut a = alloc("10.0.0.0/30");
        assert_eq!(a.allocate("x").unwrap(), ip("10.0.0.2"));
        assert!(a.allocate("y").is_err());
        let mut v6 = alloc("fd00:42::/64");
        assert_eq!(v6.allocate("x").unwrap(), ip("fd00:42::2"));
        assert_eq!(v6.size(), (1u128 << 64) - 2);
        let mut all = alloc("::/0");
        assert_eq!(all.allocate("x").unwrap(), ip("::2"));
    }

    #[test]
    fn cidr_membership() {
        let svc = parse_cidr("10.43.0.0/16").unwrap();
        assert!(contains(svc, ip("10.43.0.1")));
        assert!(contains(svc, ip("10.43.255.255")));
        assert!(!contains(svc, ip("10.44.0.1")));
        assert!(!contains(svc, ip("::ffff:10.43.0.1")));
        assert!(contains(parse_cidr("0.0.0.0/0").unwrap(), ip("1.2.3.4")));
        assert!(contains(parse_cidr("fd00::/8").unwrap(), ip("fd12::1")));
        assert!(!contains(parse_cidr("fd00::/8").unwrap(), ip("10.0.0.1")));
        assert!(contains(parse_cidr("127.43.0.5/32").unwrap(), ip("127.43.0.5")));
        assert!(!contains(parse_cidr("127.43.0.5/32").unwrap(), ip("127.43.0.6")));
    }

    #[test]
    fn ports_name_their_holder() {
        let mut p = Ports::default();
        let node = ip("192.168.1.20");
        p.claim(node, 8080, "default/a").unwrap();
        p.claim(node, 8080, "default/a").unwrap();
        p.claim(node, 8081, "default/b").unwrap();
        p.claim(ip("127.42.1.3"), 8080, "default/b").unwrap();
        let e = p.claim(node, 8080, "default/b").unwrap_err();
        assert_eq!(e.holder, "default/a");
        assert_eq!(
            e.to_string(),
            "port 8080 on 192.168.1.20 is already in use by pod default/a"
        );
        p.release(node, 8080, "default/b");
        assert!(
            p.claim(node, 8080, "default/c").is_err(),
            "only the holder releases"
        );
        p.release_all("default/a");
        p.claim(node, 8080, "default/c").unwrap();
    }

    #[test]
    fn loopback_pod_ips_are_always_local() {
        assert!(!host::ensure(ip("127.42.9.7")).unwrap());
        assert!(host::is_local(ip("127.0.0.1")));
    }
}
