//! The proxy's data-plane threads: one single-threaded tokio runtime per
//! thread, each with its own epoll, listeners and connections.
//!
//! Every listening address gets one `SO_REUSEPORT` socket per thread, so
//! the kernel spreads new connections over the threads and a connection
//! lives its whole life on the thread that accepted it: no task migration,
//! no cross-thread wake-ups per request (the way Envoy's workers and
//! HAProxy's threads split a port). The agent's own runtime keeps the
//! control side (routes, the table, the interface); these threads only
//! accept and copy.
//!
//! The threads start with the first listener, so a node serving no Service
//! pays nothing; they stop when [`Workers`] is dropped (open connections
//! end with them).

use std::thread::JoinHandle;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// The name every data-plane thread carries (its CPU time can be read per
/// thread from `/proc/self/task/*/comm`).
pub const THREAD_NAME: &str = "shturman-proxy";
/// Most data-plane threads when sized from the cores.
const MAX_AUTO_THREADS: usize = 8;

/// How many data-plane threads: `configured`, or one per core (at most
/// [`MAX_AUTO_THREADS`]) when it is 0.
pub fn thread_count(configured: usize, cores: usize) -> usize {
    match configured {
        0 => cores.clamp(1, MAX_AUTO_THREADS),
        n => n,
    }
}

/// One running data-plane thread.
struct Worker {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// The running data-plane threads.
pub struct Workers {
    workers: Vec<Worker>,
}

impl Workers {
    /// Starts `n` threads (at least one), each running its own runtime.
    pub fn start(n: usize) -> std::io::Result<Workers> {
        let mut workers = Vec::with_capacity(n.max(1));
        for _ in 0..n.max(1) {
            let rt = Builder::new_current_thread().enable_all().build()?;
            let handle = rt.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(THREAD_NAME.to_string())
                .spawn(move || {
                    // Returns when the sender is sent to or dropped.
                    let _ = rt.block_on(stopped);
                })?;
            workers.push(Worker {
                handle,
                stop: Some(stop),
                thread: Some(thread),
            });
        }
        Ok(Workers { workers })
    }

    /// The threads' runtimes, to bind sockets in and spawn tasks on.
    pub fn handles(&self) -> impl Iterator<Item = &Handle> {
        self.workers.iter().map(|w| &w.handle)
    }

    /// How many threads run.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Whether no thread runs (never, once started).
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for w in &mut self.workers {
            drop(w.stop.take());
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                // Joining from inside an async context would block a
                // runtime thread; the runtime ends on its own once stopped.
                if Handle::try_current().is_err() {
                    let _ = t.join();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_thread_per_core_within_bounds_unless_configured() {
        assert_eq!(thread_count(0, 4), 4);
        assert_eq!(thread_count(0, 0), 1);
        assert_eq!(thread_count(0, 64), MAX_AUTO_THREADS);
        assert_eq!(thread_count(3, 64), 3);
    }

    #[test]
    fn threads_run_tasks_and_stop_when_dropped() {
        let workers = Workers::start(2).unwrap();
        assert_eq!(workers.len(), 2);
        let (tx, rx) = std::sync::mpsc::channel();
        for h in workers.handles() {
            let tx = tx.clone();
            h.spawn(async move {
                let name = std::thread::current().name().map(str::to_string);
                tx.send(name).unwrap();
            });
        }
        for _ in 0..2 {
            let name = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
            assert_eq!(name.as_deref(), Some(THREAD_NAME));
        }
        drop(workers);
    }
}
