//! One accepted connection: pick a backend, connect (bounded time, bounded
//! retries on other backends), then copy bytes both ways until both sides
//! are done.
//!
//! **Copying.** Two plain copy loops over the sockets' borrowed halves, one
//! per direction, each with a 16 KiB buffer taken from a shared pool and
//! given back (no allocation per connection once warm). splice(2) would save
//! the copy through user space, but needs `unsafe` (forbidden in this
//! workspace) or a crate wrapping it; at an edge node's rates the syscalls,
//! not the memcpy, dominate. Counters are bumped per chunk, so a long-lived
//! connection's bytes show while it runs.
//!
//! **Half-close.** When one side ends its stream (EOF), the proxy shuts down
//! the write half towards the other side and keeps copying the other
//! direction until it ends too. An error in either direction (a reset) ends
//! both.
//!
//! **Drain.** A connection holds its own sockets and a lease on its backend:
//! route changes, removed backends and even a removed Service (its listener
//! closed) leave it alone until it ends.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use shturman_api::wire::ProxyPortStats;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::pick::{Balancer, Policy, Rng, XorShift};
use super::table::{PortKey, PortSpec};

/// How long a connect to a backend may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(1500);
/// Most backends one connection tries before giving up.
pub const MAX_ATTEMPTS: usize = 3;
/// Size of each copy buffer.
const BUF_SIZE: usize = 16 * 1024;
/// Most idle buffers the pool keeps (4 MiB).
const POOL_MAX: usize = 256;
/// At most one "no backend reachable" warning per Service port this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One Service port's counters.
#[derive(Debug, Default)]
pub struct Counters {
    pub accepted: AtomicU64,
    pub active: AtomicU64,
    pub failed: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

/// A Service port as its listeners and connections share it.
#[derive(Debug)]
pub struct PortState {
    pub key: PortKey,
    balancer: Mutex<(Balancer, XorShift)>,
    pub counters: Counters,
    last_warning: Mutex<Option<Instant>>,
}

impl PortState {
    pub fn new(key: PortKey, policy: Policy, seed: u64) -> PortState {
        PortState {
            key,
            balancer: Mutex::new((Balancer::new(policy), XorShift::new(seed))),
            counters: Counters::default(),
            last_warning: Mutex::new(None),
        }
    }

    /// Takes a route's backends and affinity; open connections are not touched.
    pub fn update(&self, spec: &PortSpec) -> bool {
        let mut b = lock(&self.balancer);
        b.0.set_affinity(spec.affinity);
        b.0.set_backends(spec.backends.clone())
    }

    /// The backends new connections go to.
    pub fn backends(&self) -> Vec<SocketAddr> {
        lock(&self.balancer).0.backends().to_vec()
    }

    /// The counters, as sent to the control plane.
    pub fn stats(&self) -> ProxyPortStats {
        let c = &self.counters;
        ProxyPortStats {
            namespace: self.key.namespace.clone(),
            name: self.key.name.clone(),
            port: self.key.port,
            accepted: c.accepted.load(Ordering::Relaxed),
            active: c.active.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            bytes_in: c.bytes_in.load(Ordering::Relaxed),
            bytes_out: c.bytes_out.load(Ordering::Relaxed),
        }
    }

    fn pick(self: &Arc<Self>, client: IpAddr, tried: &[SocketAddr]) -> Option<Lease> {
        let mut g = lock(&self.balancer);
        let (balancer, rng) = &mut *g;
        let addr = balancer.pick(client, tried, Instant::now(), rng as &mut dyn Rng)?;
        Some(Lease {
            port: self.clone(),
            addr,
        })
    }

    fn warn_unreachable(&self, tried: &[(SocketAddr, String)]) {
        let now = Instant::now();
        {
            let mut last = lock(&self.last_warning);
            if last.is_some_and(|l| now.saturating_duration_since(l) < WARN_EVERY) {
                return;
            }
            *last = Some(now);
        }
        if tried.is_empty() {
            tracing::warn!(service = %self.key, "connection refused: the service has no ready endpoint");
        } else {
            let tried: Vec<String> = tried.iter().map(|(a, e)| format!("{a}: {e}")).collect();
            tracing::warn!(service = %self.key, tried = %tried.join("; "), "connection closed: no endpoint could be reached");
        }
    }
}

/// A connection's claim on a backend: counted as open until dropped.
struct Lease {
    port: Arc<PortState>,
    addr: SocketAddr,
}

impl Lease {
    fn failed(self) {
        lock(&self.port.balancer).0.failed(self.addr, Instant::now());
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        lock(&self.port.balancer).0.release(self.addr);
    }
}

/// Counts a connection as active while it lives.
struct Active<'a>(&'a Counters);

impl<'a> Active<'a> {
    fn new(c: &'a Counters) -> Active<'a> {
        c.accepted.fetch_add(1, Ordering::Relaxed);
        c.active.fetch_add(1, Ordering::Relaxed);
        Active(c)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Copy buffers, reused across connections.
#[derive(Debug, Default)]
pub struct BufPool(Mutex<Vec<Box<[u8]>>>);

impl BufPool {
    fn take(&self) -> Box<[u8]> {
        lock(&self.0)
            .pop()
            .unwrap_or_else(|| vec![0u8; BUF_SIZE].into_boxed_slice())
    }

    fn give(&self, buf: Box<[u8]>) {
        let mut pool = lock(&self.0);
        if pool.len() < POOL_MAX {
            pool.push(buf);
        }
    }
}

/// Serves one accepted connection to its end.
pub async fn serve(mut client: TcpStream, peer: SocketAddr, port: Arc<PortState>, bufs: Arc<BufPool>) {
    let _active = Active::new(&port.counters);
    let _ = client.set_nodelay(true);
    let mut tried: Vec<SocketAddr> = Vec::with_capacity(MAX_ATTEMPTS);
    let mut errors: Vec<(SocketAddr, String)> = Vec::new();
    let connected = loop {
        if tried.len() >= MAX_ATTEMPTS {
            break None;
        }
        let Some(lease) = port.pick(peer.ip(), &tried) else {
            break None;
        };
        tried.push(lease.addr);
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(lease.addr)).await {
            Ok(Ok(s)) => break Some((lease, s)),
            Ok(Err(e)) => {
                tracing::debug!(service = %port.key, backend = %lease.addr, error = %e, "connect failed; trying another endpoint");
                errors.push((lease.addr, e.to_string()));
                lease.failed();
            }
            Err(_) => {
                tracing::debug!(service = %port.key, backend = %lease.addr, "connect timed out; trying another endpoint");
                errors.push((lease.addr, format!("no answer within {CONNECT_TIMEOUT:?}")));
                lease.failed();
            }
        }
    };
    let Some((lease, mut backend)) = connected else {
        port.counters.failed.fetch_add(1, Ordering::Relaxed);
        port.warn_unreachable(&errors);
        return;
    };
    let _ = backend.set_nodelay(true);
    let (mut up_buf, mut down_buf) = (bufs.take(), bufs.take());
    let (mut cr, mut cw) = client.split();
    let (mut br, mut bw) = backend.split();
    let c = &port.counters;
    let result = tokio::try_join!(
        pump(&mut cr, &mut bw, &mut up_buf, &c.bytes_in),
        pump(&mut br, &mut cw, &mut down_buf, &c.bytes_out),
    );
    if let Err(e) = result {
        tracing::trace!(service = %port.key, backend = %lease.addr, error = %e, "connection ended with an error");
    }
    bufs.give(up_buf);
    bufs.give(down_buf);
    drop(lease);
}

/// Copies `r` to `w` until EOF, then shuts `w` down (half-close).
async fn pump<R, W>(r: &mut R, w: &mut W, buf: &mut [u8], count: &AtomicU64) -> std::io::Result<()>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    loop {
        let n = r.read(buf).await?;
        if n == 0 {
            return match w.shutdown().await {
                // The other side already went: nothing left to tell it.
                Err(e) if e.kind() == std::io::ErrorKind::NotConnected => Ok(()),
                other => other,
            };
        }
        w.write_all(&buf[..n]).await?;
        count.fetch_add(n as u64, Ordering::Relaxed);
    }
}
