//! Resource limits of one instance. Memory: a [`MemoryLimiter`] on the store
//! caps the sum of its linear memories at `resources.limits.memory`; growing
//! past it traps and the run ends `OOMKilled`. CPU: every store yields at each
//! epoch tick, and a [`CpuThrottle`] token bucket makes an instance that used
//! more than its `resources.limits.cpu` share sleep before it resumes.

use std::time::{Duration, Instant};

use shturman_api::core::Container;

/// Tables may not grow past this many elements (a hostile module cannot
/// exhaust the agent's memory through tables either).
#[cfg(feature = "wasm")]
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// The limits read from a container's `resources.limits`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of linear memory, all memories together.
    pub memory: Option<u64>,
    /// CPU in millicores.
    pub cpu_millis: Option<u64>,
}

impl Limits {
    pub fn of(c: &Container) -> Limits {
        let memory = c
            .resources
            .limits
            .get("memory")
            .and_then(|q| u64::try_from(q.value()).ok());
        let cpu_millis = c
            .resources
            .limits
            .get("cpu")
            .and_then(|q| u64::try_from(q.milli_value()).ok())
            .filter(|m| *m > 0);
        Limits { memory, cpu_millis }
    }
}

/// The error a store's memory growth fails with once over the limit.
#[derive(Debug, thiserror::Error)]
#[error("memory limit exceeded: growing linear memory to {wanted} bytes, limit {limit} bytes")]
pub struct OverMemoryLimit {
    pub wanted: u64,
    pub limit: u64,
}

/// Caps linear memory; remembers that it refused growth so the run is
/// reported `OOMKilled` however the guest reacted.
#[derive(Debug, Default)]
pub struct MemoryLimiter {
    limit: Option<u64>,
    used: u64,
    /// Set once growth was refused: the message for the termination.
    pub oom: Option<String>,
}

impl MemoryLimiter {
    pub fn new(limit: Option<u64>) -> MemoryLimiter {
        MemoryLimiter {
            limit,
            used: 0,
            oom: None,
        }
    }

    /// Accounts one memory growing from `current` to `desired` bytes.
    pub fn grow(&mut self, current: usize, desired: usize) -> Result<(), OverMemoryLimit> {
        let to64 = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        let wanted = self
            .used
            .saturating_sub(to64(current))
            .saturating_add(to64(desired));
        match self.limit {
            Some(limit) if wanted > limit => {
                let e = OverMemoryLimit { wanted, limit };
                self.oom = Some(e.to_string());
                Err(e)
            }
            _ => {
                self.used = wanted;
                Ok(())
            }
        }
    }
}

#[cfg(feature = "wasm")]
impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // An error (not `Ok(false)`) traps: the guest cannot swallow the OOM.
        self.grow(current, desired).map_err(wasmtime::Error::new)?;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// A per-instance token bucket over wall time spent in Wasm, charged at
/// epoch ticks. An instance at `millis`/1000 of a core earns that fraction
/// of elapsed time as credit (up to `burst`); each tick charges the time since
/// the previous one (at most two ticks, so time blocked in a host call such
/// as a sleep is not charged); in debt, it sleeps until the debt is repaid.
#[derive(Clone, Debug)]
pub struct CpuThrottle {
    millis: u64,
    tick: Duration,
    burst: Duration,
    credit_ns: i128,
    last: Instant,
}

impl CpuThrottle {
    /// `None` when no throttling applies (no limit, or a whole core or more:
    /// one instance runs on one thread at a time).
    pub fn new(millis: Option<u64>, tick: Duration, now: Instant) -> Option<CpuThrottle> {
        let millis = millis.filter(|m| *m < 1000)?;
        Some(CpuThrottle {
            millis,
            tick,
            burst: tick.saturating_mul(10),
            credit_ns: 0,
            last: now,
        })
    }

    /// Called at an epoch tick while the instance runs Wasm: how long it
    /// must sleep before resuming, if at all.
    pub fn on_tick(&mut self, now: Instant) -> Option<Duration> {
        let elapsed = now.saturating_duration_since(self.last);
        let charged = elapsed.min(self.tick.saturating_mul(2));
        let earned = elapsed.as_nanos() * u128::from(self.millis) / 1000;
        let earned = i128::try_from(earned).unwrap_or(i128::MAX);
        let charged = i128::try_from(charged.as_nanos()).unwrap_or(i128::MAX);
        let burst = i128::try_from(self.burst.as_nanos()).unwrap_or(i128::MAX);
        self.credit_ns = self
            .credit_ns
            .saturating_add(earned)
            .saturating_sub(charged)
            .min(burst);
        self.last = now;
        if self.credit_ns >= 0 {
            return None;
        }
        // Repaying the debt takes debt / share of wall time, asleep.
        let debt = u128::try_from(-self.credit_ns).unwrap_or(0);
        let nanos = debt * 1000 / u128::from(self.millis);
        let sleep = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        self.credit_ns = 0;
        self.last = now + sleep;
        Some(sleep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shturman_api::quantity::Quantity;

    #[test]
    fn reads_limits() {
        let mut c = Container::default();
        c.resources
            .limits
            .insert("memory".into(), Quantity::parse("64Mi").unwrap());
        c.resources
            .limits
            .insert("cpu".into(), Quantity::parse("250m").unwrap());
        assert_eq!(
            Limits::of(&c),
            Limits {
                memory: Some(64 << 20),
                cpu_millis: Some(250)
            }
        );
        assert_eq!(Limits::of(&Container::default()), Limits::default());
    }

    #[test]
    fn memory_limit_counts_all_memories() {
        let mut m = MemoryLimiter::new(Some(100));
        assert!(m.grow(0, 60).is_ok());
        assert!(m.grow(0, 40).is_ok());
        assert!(m.grow(60, 61).is_err());
        assert!(m.oom.as_deref().unwrap().contains("limit 100"));
        let mut free = MemoryLimiter::new(None);
        assert!(free.grow(0, usize::MAX).is_ok());
    }

    #[test]
    fn throttle_holds_a_spinner_to_its_share() {
        let tick = Duration::from_millis(10);
        let t0 = Instant::now();
        assert!(CpuThrottle::new(Some(1000), tick, t0).is_none());
        assert!(CpuThrottle::new(None, tick, t0).is_none());
        let mut th = CpuThrottle::new(Some(250), tick, t0).unwrap();
        // Spin for 10 s of wall time, ticking every 10 ms and sleeping when told.
        let (mut now, mut ran, mut slept) = (t0, Duration::ZERO, Duration::ZERO);
        while now < t0 + Duration::from_secs(10) {
            now += tick;
            ran += tick;
            if let Some(s) = th.on_tick(now) {
                now += s;
                slept += s;
            }
        }
        let share = ran.as_secs_f64() / (ran + slept).as_secs_f64();
        assert!((0.22..0.28).contains(&share), "share {share}");
    }

    #[test]
    fn host_sleeps_are_not_charged() {
        let tick = Duration::from_millis(10);
        let t0 = Instant::now();
        let mut th = CpuThrottle::new(Some(100), tick, t0).unwrap();
        // A ticker: a tick after a one-second sleep in a host call.
        assert_eq!(th.on_tick(t0 + Duration::from_secs(1)), None);
    }
}
