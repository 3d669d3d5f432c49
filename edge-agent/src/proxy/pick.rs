//! Choosing a backend for a new connection (pure: time and randomness are
//! passed in, so every rule is unit-tested).
//!
//! Two policies:
//! - [`Policy::LeastConnections`] (the default): the power of two choices —
//!   draw two distinct backends at random and take the one with fewer open
//!   connections. An L4 proxy cannot see requests, only connections, and
//!   connections differ wildly in length (a health check, a long poll, a
//!   websocket); counting what is open steers new connections away from a
//!   backend that is slow or stuck, which round-robin never does. Two random
//!   choices instead of the global minimum keep the cost O(1), and avoid the
//!   herd effect of every proxy (one per node, each with only its own
//!   counts) piling onto the same "least loaded" backend at once.
//! - [`Policy::RoundRobin`]: each backend in turn.
//!
//! Both skip a backend whose connect just failed (for [`FAIL_COOLDOWN`]) —
//! unless every candidate failed, when trying one is better than refusing —
//! and never offer a backend the connection already tried.
//!
//! `sessionAffinity: ClientIP`: a client IP sticks to the backend it was
//! given while it keeps connecting within the timeout; a sticky backend that
//! left or failed is replaced. The table is bounded ([`MAX_STICKY`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// How long a backend whose connect failed gets no new connections (unless
/// nothing else is left).
pub const FAIL_COOLDOWN: Duration = Duration::from_secs(2);
/// Most client IPs remembered for `ClientIP` affinity per Service port;
/// beyond it, expired entries are swept, and if none expired new clients
/// are balanced without being remembered.
pub const MAX_STICKY: usize = 16_384;

/// How new connections are spread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Policy {
    /// Each backend in turn.
    RoundRobin,
    /// Fewer open connections wins, between two random choices.
    #[default]
    LeastConnections,
}

/// A source of random numbers (injected so tests are deterministic).
pub trait Rng {
    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize;
}

/// A small, fast generator (xorshift64*), seeded once from the OS: good
/// enough to spread load, not for secrets.
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    /// Seeded from `seed` (0 is replaced: xorshift must not start at 0).
    pub fn new(seed: u64) -> XorShift {
        XorShift(if seed == 0 { 0x9E37_79B9_7F4A_7C15 } else { seed })
    }
}

impl Rng for XorShift {
    fn below(&mut self, n: usize) -> usize {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        // n fits in u64 on every target; the remainder is below n.
        usize::try_from(r % (n.max(1) as u64)).unwrap_or(0)
    }
}

/// One Service port's balancing state.
#[derive(Debug, Default)]
pub struct Balancer {
    policy: Policy,
    /// The ready backends, in the route's order.
    backends: Vec<SocketAddr>,
    /// Round-robin cursor.
    next: usize,
    /// Open (and connecting) connections per backend, including backends
    /// that left the list and still drain.
    active: HashMap<SocketAddr, u32>,
    /// Backends whose connect failed, until when they are skipped.
    failed: HashMap<SocketAddr, Instant>,
    /// `ClientIP` affinity timeout; `None`: no affinity.
    affinity: Option<Duration>,
    /// Client IP → (backend, last use).
    sticky: HashMap<IpAddr, (SocketAddr, Instant)>,
}

impl Balancer {
    pub fn new(policy: Policy) -> Balancer {
        Balancer {
            policy,
            ..Balancer::default()
        }
    }

    /// The backends new connections may go to.
    pub fn backends(&self) -> &[SocketAddr] {
        &self.backends
    }

    /// Replaces the backends (a route changed); open connections are not
    /// touched. Returns whether anything changed.
    pub fn set_backends(&mut self, backends: Vec<SocketAddr>) -> bool {
        if backends == self.backends {
            return false;
        }
        self.failed.retain(|b, _| backends.contains(b));
        self.backends = backends;
        if self.next >= self.backends.len() {
            self.next = 0;
        }
        true
    }

    /// Turns `ClientIP` affinity on (with its timeout) or off.
    pub fn set_affinity(&mut self, timeout: Option<Duration>) {
        if timeout != self.affinity {
            self.affinity = timeout;
            self.sticky.clear();
        }
    }

    /// Open connections to `backend` (for tests and stats).
    pub fn active(&self, backend: SocketAddr) -> u32 {
        self.active.get(&backend).copied().unwrap_or(0)
    }

    /// Picks a backend for a new connection from `client`, never one of
    /// `tried`, and counts it as open (call [`Balancer::release`] when the
    /// connection ends or its connect fails). `None`: no backend left.
    pub fn pick(
        &mut self,
        client: IpAddr,
        tried: &[SocketAddr],
        now: Instant,
        rng: &mut dyn Rng,
    ) -> Option<SocketAddr> {
        let fresh = |b: &SocketAddr| !tried.contains(b);
        let healthy = |b: &SocketAddr, failed: &HashMap<SocketAddr, Instant>| {
            failed.get(b).is_none_or(|until| *until <= now)
        };
        let mut candidates: Vec<usize> = (0..self.backends.len())
            .filter(|&i| fresh(&self.backends[i]) && healthy(&self.backends[i], &self.failed))
            .collect();
        if candidates.is_empty() {
            // Every backend left just failed: try one anyway.
            candidates = (0..self.backends.len())
                .filter(|&i| fresh(&self.backends[i]))
                .collect();
        }
        if candidates.is_empty() {
            return None;
        }
        if let Some(timeout) = self.affinity
            && let Some((b, last)) = self.sticky.get(&client).copied()
            && now.saturating_duration_since(last) < timeout
            && candidates.iter().any(|&i| self.backends[i] == b)
        {
            self.sticky.insert(client, (b, now));
            self.open(b);
            return Some(b);
        }
        let chosen = match self.policy {
            Policy::RoundRobin => self.round_robin(&candidates),
            Policy::LeastConnections => self.two_choices(&candidates, rng),
        };
        let b = self.backends[chosen];
        if let Some(timeout) = self.affinity {
            self.remember(client, b, now, timeout);
        }
        self.open(b);
        Some(b)
    }

    /// The connection to `backend` ended (or its connect failed).
    pub fn release(&mut self, backend: SocketAddr) {
        if let Some(n) = self.active.get_mut(&backend) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.active.remove(&backend);
            }
        }
    }

    /// A connect to `backend` failed: skip it for [`FAIL_COOLDOWN`].
    pub fn failed(&mut self, backend: SocketAddr, now: Instant) {
        self.failed.retain(|_, until| *until > now);
        if self.backends.contains(&backend) {
            self.failed.insert(backend, now + FAIL_COOLDOWN);
        }
    }

    fn open(&mut self, b: SocketAddr) {
        *self.active.entry(b).or_default() += 1;
    }

    /// The first candidate at or after the cursor.
    fn round_robin(&mut self, candidates: &[usize]) -> usize {
        let n = self.backends.len();
        let chosen = (0..n)
            .map(|k| (self.next + k) % n)
            .find(|i| candidates.contains(i))
            .unwrap_or(candidates[0]);
        self.next = (chosen + 1) % n;
        chosen
    }

    /// Two distinct random candidates; fewer open connections wins (the
    /// first drawn on a tie).
    fn two_choices(&self, candidates: &[usize], rng: &mut dyn Rng) -> usize {
        let n = candidates.len();
        if n == 1 {
            return candidates[0];
        }
        let a = rng.below(n).min(n - 1);
        let mut b = rng.below(n - 1).min(n - 2);
        if b >= a {
            b += 1;
        }
        let (a, b) = (candidates[a], candidates[b]);
        if self.active(self.backends[b]) < self.active(self.backends[a]) {
            b
        } else {
            a
        }
    }

    fn remember(&mut self, client: IpAddr, b: SocketAddr, now: Instant, timeout: Duration) {
        if self.sticky.len() >= MAX_STICKY && !self.sticky.contains_key(&client) {
            self.sticky
                .retain(|_, (_, last)| now.saturating_duration_since(*last) < timeout);
            if self.sticky.len() >= MAX_STICKY {
                return;
            }
        }
        self.sticky.insert(client, (b, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Replays a fixed sequence (modulo n).
    struct Seq(Vec<usize>, usize);

    impl Rng for Seq {
        fn below(&mut self, n: usize) -> usize {
            let v = self.0[self.1 % self.0.len()];
            self.1 += 1;
            v % n
        }
    }

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], 8080))
    }

    fn client(last: u8) -> IpAddr {
        IpAddr::from([192, 168, 1, last])
    }

    fn three(policy: Policy) -> Balancer {
        let mut b = Balancer::new(policy);
        assert!(b.set_backends(vec![addr(1), addr(2), addr(3)]));
        b
    }

    #[test]
    fn round_robin_takes_each_in_turn_and_skips_tried() {
        let mut b = three(Policy::RoundRobin);
        let now = Instant::now();
        let mut rng = Seq(vec![0], 0);
        let got: Vec<_> = (0..6)
            .map(|_| b.pick(client(1), &[], now, &mut rng).unwrap())
            .collect();
        assert_eq!(got, [addr(1), addr(2), addr(3), addr(1), addr(2), addr(3)]);
        // Never a backend the connection already tried.
        assert_eq!(b.pick(client(1), &[addr(1)], now, &mut rng), Some(addr(2)));
        assert_eq!(
            b.pick(client(1), &[addr(1), addr(2), addr(3)], now, &mut rng),
            None
        );
        assert_eq!(
            Balancer::new(Policy::RoundRobin).pick(client(1), &[], now, &mut rng),
            None
        );
    }

    #[test]
    fn least_connections_prefers_the_less_loaded_of_two() {
        let mut b = three(Policy::LeastConnections);
        let now = Instant::now();
        // Load addr(1) with two connections.
        let mut first = Seq(vec![0, 0], 0);
        let others = [addr(2), addr(3)];
        assert_eq!(b.pick(client(1), &others, now, &mut first), Some(addr(1)));
        assert_eq!(b.pick(client(1), &others, now, &mut first), Some(addr(1)));
        assert_eq!(b.active(addr(1)), 2);
        // Choices 0 and 1 (addr 1 and 2): the idle one wins.
        let mut rng = Seq(vec![0, 0], 0);
        assert_eq!(b.pick(client(1), &[], now, &mut rng), Some(addr(2)));
        // Choices 2 and 0: addr 3 (idle) beats addr 1.
        let mut rng = Seq(vec![2, 0], 0);
        assert_eq!(b.pick(client(1), &[], now, &mut rng), Some(addr(3)));
        b.release(addr(1));
        b.release(addr(1));
        b.release(addr(1)); // one too many: stays at 0
        assert_eq!(b.active(addr(1)), 0);
    }

    #[test]
    fn least_connections_spreads_short_connections_over_every_backend() {
        let mut b = three(Policy::LeastConnections);
        let now = Instant::now();
        let mut rng = XorShift::new(42);
        let mut seen = BTreeMap::new();
        for _ in 0..60 {
            let got = b.pick(client(1), &[], now, &mut rng).unwrap();
            *seen.entry(got).or_insert(0) += 1;
            b.release(got);
        }
        assert_eq!(seen.len(), 3, "{seen:?}");
        // With connections held open, loads stay within one of each other.
        let mut held = Vec::new();
        for _ in 0..30 {
            held.push(b.pick(client(1), &[], now, &mut rng).unwrap());
        }
        let loads: Vec<u32> = [1, 2, 3].map(|i| b.active(addr(i))).to_vec();
        assert_eq!(loads.iter().sum::<u32>(), 30);
        assert!(loads.iter().all(|&l| (7..=13).contains(&l)), "{loads:?}");
    }

    #[test]
    fn failed_backends_are_skipped_for_a_while_unless_nothing_else_is_left() {
        let mut b = three(Policy::RoundRobin);
        let now = Instant::now();
        let mut rng = Seq(vec![0], 0);
        b.failed(addr(1), now);
        b.failed(addr(2), now);
        for _ in 0..3 {
            let got = b.pick(client(1), &[], now, &mut rng).unwrap();
            assert_eq!(got, addr(3));
            b.release(got);
        }
        // Only failed ones left (addr 3 already tried): one of them is tried.
        let got = b.pick(client(1), &[addr(3)], now, &mut rng).unwrap();
        assert!(got == addr(1) || got == addr(2));
        // After the cooldown they are back in turn.
        let later = now + FAIL_COOLDOWN;
        let got: Vec<_> = (0..3)
            .map(|_| b.pick(client(1), &[], later, &mut rng).unwrap())
            .collect();
        assert!(got.contains(&addr(1)) && got.contains(&addr(2)), "{got:?}");
        // A failure of a backend that is not (or no longer) listed is ignored.
        b.failed(addr(9), now);
        assert!(!b.failed.contains_key(&addr(9)));
    }

    #[test]
    fn changed_backends_keep_counts_of_draining_connections() {
        let mut b = three(Policy::RoundRobin);
        let now = Instant::now();
        let mut rng = Seq(vec![0], 0);
        let held = b.pick(client(1), &[], now, &mut rng).unwrap();
        assert_eq!(held, addr(1));
        assert!(b.set_backends(vec![addr(2), addr(3)]));
        assert!(!b.set_backends(vec![addr(2), addr(3)]));
        for _ in 0..10 {
            let got = b.pick(client(1), &[], now, &mut rng).unwrap();
            assert_ne!(got, addr(1), "a removed backend gets no new connections");
            b.release(got);
        }
        // The draining connection is still counted until it ends.
        assert_eq!(b.active(addr(1)), 1);
        b.release(addr(1));
        assert_eq!(b.active(addr(1)), 0);
        assert!(b.set_backends(Vec::new()));
        assert_eq!(b.pick(client(1), &[], now, &mut rng), None);
    }

    #[test]
    fn client_ip_affinity_sticks_until_the_timeout() {
        let mut b = three(Policy::RoundRobin);
        b.set_affinity(Some(Duration::from_secs(10)));
        let t0 = Instant::now();
        let mut rng = Seq(vec![0], 0);
        let first = b.pick(client(1), &[], t0, &mut rng).unwrap();
        let other = b.pick(client(2), &[], t0, &mut rng).unwrap();
        assert_ne!(first, other);
        // Client 1 keeps its backend while it keeps coming back in time.
        for s in 1..5 {
            let t = t0 + Duration::from_secs(5 * s);
            assert_eq!(b.pick(client(1), &[], t, &mut rng), Some(first));
        }
        // Silent for longer than the timeout: balanced again (round-robin moves on).
        let late = t0 + Duration::from_secs(100);
        assert_ne!(b.pick(client(1), &[], late, &mut rng), Some(first));
        // A sticky backend that failed or left is replaced.
        let t = late + Duration::from_secs(1);
        let now_sticky = b.pick(client(1), &[], t, &mut rng).unwrap();
        b.failed(now_sticky, t);
        let replaced = b.pick(client(1), &[], t, &mut rng).unwrap();
        assert_ne!(replaced, now_sticky);
        assert_eq!(b.pick(client(1), &[], t, &mut rng), Some(replaced));
        let keep: Vec<_> = b.backends().iter().copied().filter(|a| *a != replaced).collect();
        b.set_backends(keep);
        assert_ne!(b.pick(client(1), &[], t, &mut rng), Some(replaced));
        // Turning affinity off forgets everyone.
        b.set_affinity(None);
        assert!(b.sticky.is_empty());
    }

    #[test]
    fn the_affinity_table_is_bounded() {
        let mut b = three(Policy::RoundRobin);
        let timeout = Duration::from_secs(10);
        b.set_affinity(Some(timeout));
        let t0 = Instant::now();
        let mut rng = Seq(vec![0], 0);
        for i in 0..=MAX_STICKY {
            let [x, y] = u16::try_from(i).unwrap_or(u16::MAX).to_be_bytes();
            let ip = IpAddr::from([10, 9, x, y]);
            b.pick(ip, &[], t0, &mut rng);
        }
        assert_eq!(b.sticky.len(), MAX_STICKY);
        // Once they expire, the next new client sweeps them.
        b.pick(client(7), &[], t0 + timeout, &mut rng);
        assert_eq!(b.sticky.len(), 1);
    }

    #[test]
    fn xorshift_stays_below_n() {
        let mut r = XorShift::new(0);
        for n in 1..50 {
            assert!(r.below(n) < n);
        }
    }
}
