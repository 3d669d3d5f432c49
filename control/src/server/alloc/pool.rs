//! The pools Services draw from and the record of what is taken, pure:
//! the service CIDR (`--service-cidr`, ClusterIPs), the node port range
//! (`--service-node-port-range`), and [`RangeAllocation`], the registry of
//! one pool kept in the store (value → owning Service), with the
//! operations an allocation needs: claim a given value, allocate any free
//! one, release.
//!
//! Dynamic allocation prefers the upper part of a pool and leaves a lower
//! band for Services that ask for a specific value, as Kubernetes does
//! (KEP-3070 for IPs, KEP-3668 for node ports): a user who picks an address
//! from the low band rarely collides with one handed out at random.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The narrowest prefix accepted for a service CIDR (2^20 addresses), as
/// kube-apiserver.
pub const MIN_CIDR_PREFIX: u8 = 12;
/// The widest prefix accepted (two usable addresses).
pub const MAX_CIDR_PREFIX: u8 = 30;

/// Why a `--service-cidr` or `--service-node-port-range` was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("{input:?} is not a CIDR; write it like 10.43.0.0/16")]
    NotACidr { input: String },
    #[error("{input:?} is an IPv6 range; service CIDRs are IPv4 only for now (e.g. 10.43.0.0/16)")]
    Ipv6 { input: String },
    #[error(
        "{input:?} has a /{prefix} prefix; use a prefix from /{MIN_CIDR_PREFIX} (about a million addresses) to /{MAX_CIDR_PREFIX}"
    )]
    Prefix { input: String, prefix: u8 },
    #[error("{input:?} is not a port range; write it like 30000-32767")]
    NotAPortRange { input: String },
    #[error(
        "{input:?} is empty or backwards; write the first port, a dash, then the last (e.g. 30000-32767)"
    )]
    Backwards { input: String },
}

/// An IPv4 service CIDR. Its network and broadcast addresses are never
/// handed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceCidr {
    network: Ipv4Addr,
    prefix: u8,
}

impl ServiceCidr {
    /// The usable addresses (all but the network and broadcast ones).
    pub fn size(&self) -> u64 {
        (1u64 << (32 - u32::from(self.prefix))) - 2
    }

    /// The offset of `ip` among the usable addresses, if it is one.
    pub fn offset_of(&self, ip: Ipv4Addr) -> Option<u64> {
        let delta = u64::from(u32::from(ip)).checked_sub(u64::from(u32::from(self.network)))?;
        (delta >= 1 && delta <= self.size()).then(|| delta - 1)
    }

    /// The usable address at `offset` (`offset < size()`).
    pub fn at(&self, offset: u64) -> Ipv4Addr {
        let base = u64::from(u32::from(self.network));
        Ipv4Addr::from(u32::try_from(base + 1 + offset).unwrap_or(u32::MAX))
    }

    /// Whether `ip` lies anywhere in the CIDR (network and broadcast included).
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - u32::from(self.prefix));
        u32::from(ip) & mask == u32::from(self.network)
    }
}

impl FromStr for ServiceCidr {
    type Err = RangeError;

    /// `a.b.c.d/p`; host bits are cleared (`10.43.1.0/16` is `10.43.0.0/16`).
    fn from_str(s: &str) -> Result<Self, RangeError> {
        let input = s.trim();
        let bad = || RangeError::NotACidr { input: input.into() };
        let (addr, prefix) = input.split_once('/').ok_or_else(bad)?;
        if addr.parse::<std::net::Ipv6Addr>().is_ok() {
            return Err(RangeError::Ipv6 { input: input.into() });
        }
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if !(MIN_CIDR_PREFIX..=MAX_CIDR_PREFIX).contains(&prefix) {
            return Err(RangeError::Prefix {
                input: input.into(),
                prefix,
            });
        }
        let mask = u32::MAX << (32 - u32::from(prefix));
        Ok(ServiceCidr {
            network: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        })
    }
}

impl fmt::Display for ServiceCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// An inclusive range of node ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodePortRange {
    first: u16,
    last: u16,
}

impl NodePortRange {
    pub fn size(&self) -> u64 {
        u64::from(self.last - self.first) + 1
    }

    pub fn offset_of(&self, port: i32) -> Option<u64> {
        let port = u16::try_from(port).ok()?;
        (self.first..=self.last)
            .contains(&port)
            .then(|| u64::from(port - self.first))
    }

    pub fn at(&self, offset: u64) -> u16 {
        u16::try_from(u64::from(self.first) + offset).unwrap_or(u16::MAX)
    }
}

impl FromStr for NodePortRange {
    type Err = RangeError;

    /// `first-last`, e.g. `30000-32767`.
    fn from_str(s: &str) -> Result<Self, RangeError> {
        let input = s.trim();
        let bad = || RangeError::NotAPortRange { input: input.into() };
        let (a, b) = input.split_once('-').ok_or_else(bad)?;
        let first: u16 = a.trim().parse().map_err(|_| bad())?;
        let last: u16 = b.trim().parse().map_err(|_| bad())?;
        if first == 0 || last < first {
            return Err(RangeError::Backwards { input: input.into() });
        }
        Ok(NodePortRange { first, last })
    }
}

impl fmt::Display for NodePortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// Where Services' addresses and node ports come from: the control plane's
/// `--service-cidr` and `--service-node-port-range`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceNetwork {
    pub cidr: ServiceCidr,
    pub node_ports: NodePortRange,
}

impl Default for ServiceNetwork {
    /// `10.43.0.0/16` (k3s' default) and `30000-32767` (Kubernetes').
    fn default() -> Self {
        ServiceNetwork {
            cidr: ServiceCidr {
                network: Ipv4Addr::new(10, 43, 0, 0),
                prefix: 16,
            },
            node_ports: NodePortRange {
                first: 30000,
                last: 32767,
            },
        }
    }
}

/// One pool, typed: what its values are and how they are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    ClusterIps(ServiceCidr),
    NodePorts(NodePortRange),
}

/// Why a value could not be had.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllocError {
    /// Not a value of this pool at all (not an IPv4 address / port number).
    Malformed { value: String },
    /// Outside the pool's range.
    OutOfRange { value: String },
    /// Held by another Service (`namespace/name`).
    Taken { value: String, by: String },
    /// Nothing is free.
    Full,
}

impl Pool {
    /// The pool's range as configured: `10.43.0.0/16`, `30000-32767`.
    pub fn range(&self) -> String {
        match self {
            Pool::ClusterIps(c) => c.to_string(),
            Pool::NodePorts(r) => r.to_string(),
        }
    }

    /// How many values it has.
    pub fn size(&self) -> u64 {
        match self {
            Pool::ClusterIps(c) => c.size(),
            Pool::NodePorts(r) => r.size(),
        }
    }

    /// The lower band kept for values asked for by name: none in pools
    /// under 16 values, else a 16th of an IP pool (16–256) or a 32nd of a
    /// port pool (16–128).
    pub fn static_band(&self) -> u64 {
        let size = self.size();
        if size < 16 {
            return 0;
        }
        match self {
            Pool::ClusterIps(_) => (size / 16).clamp(16, 256),
            Pool::NodePorts(_) => (size / 32).clamp(16, 128),
        }
    }

    /// The offset of `value` (its text), with the canonical text.
    pub fn offset_of(&self, value: &str) -> Result<(u64, String), AllocError> {
        let malformed = || AllocError::Malformed { value: value.into() };
        let out = |canonical: String| AllocError::OutOfRange { value: canonical };
        match self {
            Pool::ClusterIps(c) => {
                let ip: Ipv4Addr = value.parse().map_err(|_| malformed())?;
                c.offset_of(ip)
                    .map(|o| (o, ip.to_string()))
                    .ok_or_else(|| out(ip.to_string()))
            }
            Pool::NodePorts(r) => {
                let port: i32 = value.parse().map_err(|_| malformed())?;
                r.offset_of(port)
                    .map(|o| (o, port.to_string()))
                    .ok_or_else(|| out(port.to_string()))
            }
        }
    }

    /// The text of the value at `offset`.
    pub fn value_at(&self, offset: u64) -> String {
        match self {
            Pool::ClusterIps(c) => c.at(offset).to_string(),
            Pool::NodePorts(r) => r.at(offset).to_string(),
        }
    }
}

/// Who holds a value: a Service, by `namespace/name` and uid.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Owner {
    /// `namespace/name`.
    pub service: String,
    pub uid: String,
}

/// One pool's registry as stored: its range and every value taken.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RangeAllocation {
    /// The range the values were taken from ([`Pool::range`]).
    pub range: String,
    /// Value (canonical text) → its holder.
    #[serde(default)]
    pub allocated: BTreeMap<String, Owner>,
}

/// One value asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Want {
    /// Any free value.
    Any,
    /// This value (text), e.g. a `clusterIP` or `nodePort` the user wrote.
    Exactly(String),
    /// Whatever the earlier request at this index got (a port number a
    /// Service exposes over both TCP and UDP shares one node port).
    SameAs(usize),
}

/// A value granted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Granted {
    pub value: String,
    /// Whether this grant took it (false: the owner held it already).
    pub fresh: bool,
}

impl RangeAllocation {
    /// An empty registry for `pool`.
    pub fn new(pool: &Pool) -> Self {
        RangeAllocation {
            range: pool.range(),
            allocated: BTreeMap::new(),
        }
    }

    /// Takes `value` for `owner` (already its own: granted, not fresh).
    pub fn claim(&mut self, pool: &Pool, value: &str, owner: &Owner) -> Result<Granted, AllocError> {
        let (_, canonical) = pool.offset_of(value)?;
        match self.allocated.get(&canonical) {
            Some(o) if o.uid == owner.uid => Ok(Granted {
                value: canonical,
                fresh: false,
            }),
            Some(o) => Err(AllocError::Taken {
                value: canonical,
                by: o.service.clone(),
            }),
            None => {
                self.allocated.insert(canonical.clone(), owner.clone());
                Ok(Granted {
                    value: canonical,
                    fresh: true,
                })
            }
        }
    }

    /// Takes a free value for `owner`: the first free one at or after
    /// `start` (wrapping) above the static band, else in the band.
    pub fn allocate(&mut self, pool: &Pool, owner: &Owner, start: u64) -> Result<Granted, AllocError> {
        let (size, band) = (pool.size(), pool.static_band());
        let upper = size - band;
        let scan = (0..upper)
            .map(|i| band + (start % upper.max(1) + i) % upper)
            .chain(0..band);
        for offset in scan {
            let value = pool.value_at(offset);
            if !self.allocated.contains_key(&value) {
                self.allocated.insert(value.clone(), owner.clone());
                return Ok(Granted { value, fresh: true });
            }
        }
        Err(AllocError::Full)
    }

    /// Grants every request, or none: on any failure the registry is left
    /// as it was and every failure is returned with its request's index.
    pub fn grant(
        &mut self,
        pool: &Pool,
        owner: &Owner,
        wants: &[Want],
        start: u64,
    ) -> Result<Vec<Granted>, Vec<(usize, AllocError)>> {
        let mut next = self.clone();
        let mut granted: Vec<Granted> = Vec::with_capacity(wants.len());
        let mut errors = Vec::new();
        // Named values first, so a random pick never takes one asked for.
        let mut slots: Vec<Option<Granted>> = vec![None; wants.len()];
        for (i, w) in wants.iter().enumerate() {
            if let Want::Exactly(v) = w {
                match next.claim(pool, v, owner) {
                    Ok(g) => slots[i] = Some(g),
                    Err(e) => errors.push((i, e)),
                }
            }
        }
        for (i, w) in wants.iter().enumerate() {
            if *w == Want::Any {
                match next.allocate(pool, owner, start.wrapping_add(i as u64)) {
                    Ok(g) => slots[i] = Some(g),
                    Err(e) => errors.push((i, e)),
                }
            }
        }
        if !errors.is_empty() {
            errors.sort_by_key(|(i, _)| *i);
            return Err(errors);
        }
        for (i, w) in wants.iter().enumerate() {
            let g = match w {
                Want::SameAs(j) => slots
                    .get(*j)
                    .cloned()
                    .flatten()
                    .map(|g| Granted { fresh: false, ..g }),
                _ => slots[i].clone(),
            };
            granted.push(g.unwrap_or(Granted {
                value: String::new(),
                fresh: false,
            }));
        }
        *self = next;
        Ok(granted)
    }

    /// Gives `value` back if `uid` holds it; whether it did.
    pub fn release(&mut self, value: &str, uid: &str) -> bool {
        if self.allocated.get(value).is_some_and(|o| o.uid == uid) {
            self.allocated.remove(value);
            true
        } else {
            false
        }
    }

    /// Gives back everything `uid` holds; the values released.
    pub fn release_owner(&mut self, uid: &str) -> Vec<String> {
        let gone: Vec<String> = self
            .allocated
            .iter()
            .filter(|(_, o)| o.uid == uid)
            .map(|(v, _)| v.clone())
            .collect();
        for v in &gone {
            self.allocated.remove(v);
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(uid: &str) -> Owner {
        Owner {
            service: format!("default/{uid}"),
            uid: uid.into(),
        }
    }

    fn cidr(s: &str) -> Pool {
        Pool::ClusterIps(s.parse().unwrap())
    }

    #[test]
    fn ranges_parse_and_say_what_is_wrong() {
        let c: ServiceCidr = "10.43.7.9/16".parse().unwrap();
        assert_eq!(c.to_string(), "10.43.0.0/16");
        assert_eq!(c.size(), 65534);
        assert_eq!(c.offset_of("10.43.0.1".parse().unwrap()), Some(0));
        assert_eq!(c.offset_of("10.43.255.254".parse().unwrap()), Some(65533));
        assert_eq!(c.offset_of("10.43.0.0".parse().unwrap()), None);
        assert_eq!(c.offset_of("10.43.255.255".parse().unwrap()), None);
        assert_eq!(c.offset_of("10.44.0.1".parse().unwrap()), None);
        assert_eq!(c.at(65533), "10.43.255.254".parse::<Ipv4Addr>().unwrap());
        assert!(c.contains("10.43.255.255".parse().unwrap()));
        assert_eq!(ServiceNetwork::default().cidr.to_string(), "10.43.0.0/16");
        assert_eq!(ServiceNetwork::default().node_ports.to_string(), "30000-32767");
        for (bad, what) in [
            ("10.43.0.0", "not a CIDR"),
            ("10.43.0.0/33", "/33 prefix"),
            ("fd00::/108", "IPv6"),
            ("10.0.0.0/8", "/8 prefix"),
            ("10.0.0.0/31", "/31 prefix"),
            ("ten/16", "not a CIDR"),
        ] {
            let e = bad.parse::<ServiceCidr>().unwrap_err().to_string();
            assert!(e.contains(what), "{bad}: {e}");
        }
        let r: NodePortRange = "30000-32767".parse().unwrap();
        assert_eq!((r.size(), r.to_string()), (2768, "30000-32767".to_string()));
        assert_eq!(r.offset_of(30000), Some(0));
        assert_eq!(r.offset_of(32768), None);
        assert!("32767-30000".parse::<NodePortRange>().is_err());
        assert!("0-10".parse::<NodePortRange>().is_err());
        assert!(
            "30000"
                .parse::<NodePortRange>()
                .unwrap_err()
                .to_string()
                .contains("30000-32767")
        );
    }

    #[test]
    fn static_bands_follow_kubernetes() {
        assert_eq!(cidr("10.43.0.0/16").static_band(), 256);
        assert_eq!(cidr("10.43.0.0/24").static_band(), 16);
        assert_eq!(cidr("10.43.0.0/28").static_band(), 0);
        let ports = Pool::NodePorts("30000-32767".parse().unwrap());
        assert_eq!(ports.static_band(), 86);
    }

    #[test]
    fn claims_are_exclusive_and_idempotent() {
        let pool = cidr("10.43.0.0/24");
        let mut reg = RangeAllocation::new(&pool);
        let g = reg.claim(&pool, "10.43.0.10", &owner("a")).unwrap();
        assert!(g.fresh);
        assert!(!reg.claim(&pool, "10.43.0.10", &owner("a")).unwrap().fresh);
        assert_eq!(
            reg.claim(&pool, "10.43.0.10", &owner("b")),
            Err(AllocError::Taken {
                value: "10.43.0.10".into(),
                by: "default/a".into()
            })
        );
        assert_eq!(
            reg.claim(&pool, "10.44.0.1", &owner("b")),
            Err(AllocError::OutOfRange {
                value: "10.44.0.1".into()
            })
        );
        assert_eq!(
            reg.claim(&pool, "10.43.0.0", &owner("b")),
            Err(AllocError::OutOfRange {
                value: "10.43.0.0".into()
            })
        );
        assert!(matches!(
            reg.claim(&pool, "fd00::1", &owner("b")),
            Err(AllocError::Malformed { .. })
        ));
        assert!(!reg.release("10.43.0.10", "b"));
        assert!(reg.release("10.43.0.10", "a"));
        assert!(reg.allocated.is_empty());
    }

    #[test]
    fn allocation_prefers_the_upper_band_never_repeats_and_fills_up() {
        let pool = cidr("10.43.0.0/27"); // 30 usable, band 16
        let mut reg = RangeAllocation::new(&pool);
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..14 {
            let g = reg.allocate(&pool, &owner(&format!("s{i}")), 5).unwrap();
            let (offset, _) = pool.offset_of(&g.value).unwrap();
            assert!(offset >= 16, "{} is in the static band", g.value);
            assert!(seen.insert(g.value));
        }
        // The upper part is full: the band is used next.
        let g = reg.allocate(&pool, &owner("x"), 5).unwrap();
        assert!(pool.offset_of(&g.value).unwrap().0 < 16);
        for i in 0..15 {
            assert!(seen.insert(reg.allocate(&pool, &owner(&format!("t{i}")), i).unwrap().value));
        }
        assert_eq!(reg.allocated.len(), 30);
        assert_eq!(reg.allocate(&pool, &owner("y"), 0), Err(AllocError::Full));
        assert_eq!(reg.release_owner("s3").len(), 1);
        assert!(reg.allocate(&pool, &owner("y"), 0).is_ok());
    }

    #[test]
    fn grants_are_all_or_nothing() {
        let pool = Pool::NodePorts("30000-30099".parse().unwrap());
        let mut reg = RangeAllocation::new(&pool);
        reg.claim(&pool, "30080", &owner("other")).unwrap();
        let before = reg.clone();
        let wants = [
            Want::Any,
            Want::Exactly("30080".into()),
            Want::Exactly("40000".into()),
        ];
        let errs = reg.grant(&pool, &owner("me"), &wants, 0).unwrap_err();
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].0, 1);
        assert!(matches!(errs[1].1, AllocError::OutOfRange { .. }));
        assert_eq!(reg, before);
        let wants = [Want::Exactly("30010".into()), Want::Any, Want::SameAs(1)];
        let got = reg.grant(&pool, &owner("me"), &wants, 7).unwrap();
        assert_eq!(got[0].value, "30010");
        assert_ne!(got[1].value, "30080");
        assert_eq!(got[2].value, got[1].value);
        assert!(got[0].fresh && got[1].fresh && !got[2].fresh);
        assert_eq!(reg.allocated.len(), 3);
        assert_eq!(reg.release_owner("me").len(), 2);
    }

    #[test]
    fn registries_serialize_readably() {
        let pool = cidr("10.43.0.0/16");
        let mut reg = RangeAllocation::new(&pool);
        reg.claim(&pool, "10.43.0.10", &owner("a")).unwrap();
        let v = serde_json::to_value(&reg).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"range": "10.43.0.0/16",
                "allocated": {"10.43.0.10": {"service": "default/a", "uid": "a"}}})
        );
    }
}
