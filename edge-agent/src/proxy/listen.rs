//! The proxy's listening sockets: for each address a Service port is served
//! on, one socket per data-plane thread ([`super::workers`]), each with an
//! accept loop on its thread handing connections to [`forward::serve`].
//!
//! Sockets are bound with `SO_REUSEADDR` and `SO_REUSEPORT`: the kernel
//! spreads new connections over the threads' sockets, and two agents on one
//! machine (tests, or a node running a second agent) can both serve the
//! same `clusterIP:port`, each knowing every endpoint. (`SO_REUSEPORT` needs
//! both processes to run as the same user.)
//!
//! [`Listeners::reconcile`] is level-triggered: it closes listeners no
//! longer wanted (their open connections go on), opens missing ones, and
//! remembers the addresses it could not bind so the shell retries them.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::forward::{self, BufPool, PortState};
use super::table::PortKey;
use super::workers::Workers;

/// Pending connections the kernel queues per listener.
const BACKLOG: u32 = 1024;
/// Most connections the proxy serves at once (all ports together); beyond
/// it new connections wait in the kernel's queue.
pub const MAX_CONNECTIONS: usize = 16_384;
/// Pause after a failed accept (e.g. out of file descriptors).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Binds a listening TCP socket on `addr` with `SO_REUSEADDR` and `SO_REUSEPORT`.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// One open address: an accept loop per data-plane thread.
struct Open {
    key: PortKey,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Open {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Every listener the proxy has open.
pub struct Listeners {
    open: HashMap<SocketAddr, Open>,
    /// Addresses that could not be bound: why (retried by the shell).
    failed: BTreeMap<SocketAddr, String>,
    permits: Arc<Semaphore>,
    bufs: Arc<BufPool>,
    /// How many data-plane threads to start with the first listener.
    threads: usize,
    workers: Option<Workers>,
}

impl Listeners {
    /// No listeners yet; the first one starts `threads` data-plane threads.
    pub fn new(threads: usize) -> Listeners {
        Listeners {
            open: HashMap::new(),
            failed: BTreeMap::new(),
            permits: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            bufs: Arc::default(),
            threads: threads.max(1),
            workers: None,
        }
    }

    /// Binds `addr` once per data-plane thread (starting them if need be)
    /// and starts an accept loop on each.
    fn open(&mut self, addr: SocketAddr, port: &Arc<PortState>) -> std::io::Result<Open> {
        if self.workers.is_none() {
            let w = Workers::start(self.threads)?;
            tracing::info!(threads = w.len(), "proxy data-plane threads started");
            self.workers = Some(w);
        }
        let Some(workers) = &self.workers else {
            return Err(std::io::Error::other(
                "the proxy's data-plane threads did not start",
            ));
        };
        // All sockets first: a half-bound address is closed again.
        let mut bound = Vec::with_capacity(workers.len());
        for h in workers.handles() {
            let _in = h.enter();
            bound.push((h.clone(), bind(addr)?));
        }
        let tasks = bound
            .into_iter()
            .map(|(h, l)| {
                h.spawn(accept_loop(
                    l,
                    port.clone(),
                    self.permits.clone(),
                    self.bufs.clone(),
                ))
            })
            .collect();
        Ok(Open {
            key: port.key.clone(),
            tasks,
        })
    }

    /// Addresses open right now.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        let mut a: Vec<_> = self.open.keys().copied().collect();
        a.sort();
        a
    }

    /// Addresses that could not be bound, and why.
    pub fn failed(&self) -> &BTreeMap<SocketAddr, String> {
        &self.failed
    }

    /// Makes the open listeners exactly `want` (address → its port). Returns
    /// the addresses that failed to bind this time, with the error.
    pub fn reconcile(&mut self, want: &BTreeMap<SocketAddr, Arc<PortState>>) -> Vec<(SocketAddr, String)> {
        self.open
            .retain(|addr, o| want.get(addr).is_some_and(|p| p.key == o.key));
        self.failed.retain(|addr, _| want.contains_key(addr));
        let mut newly_failed = Vec::new();
        for (addr, port) in want {
            if self.open.contains_key(addr) {
                continue;
            }
            match self.open(*addr, port) {
                Ok(open) => {
                    self.failed.remove(addr);
                    tracing::info!(service = %port.key, %addr, "proxy listening");
                    self.open.insert(*addr, open);
                }
                Err(e) => {
                    let why = e.to_string();
                    if self.failed.get(addr) != Some(&why) {
                        newly_failed.push((*addr, why.clone()));
                    }
                    self.failed.insert(*addr, why);
                }
            }
        }
        newly_failed
    }
}

/// Accepts until aborted; each connection runs in its own task.
async fn accept_loop(l: TcpListener, port: Arc<PortState>, permits: Arc<Semaphore>, bufs: Arc<BufPool>) {
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        match l.accept().await {
            Ok((stream, peer)) => {
                let port = port.clone();
                let bufs = bufs.clone();
                tokio::spawn(async move {
                    forward::serve(stream, peer, port, bufs).await;
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::debug!(service = %port.key, error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}
