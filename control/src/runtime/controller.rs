//! A controller: informers feed keys into a deduplicating queue; a bounded
//! number of workers reconcile them; the reconcile's answer (done, requeue
//! after a while, or an error that backs off) decides what happens next.

use std::fmt::Display;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use shturman_api::meta::Object;
use tokio::sync::{Notify, Semaphore, broadcast};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::informer::{Change, Informer};
use super::queue::{ObjectKey, Queue};

/// What a reconcile asks for next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing until something changes.
    Done,
    /// Look again after this long (a deadline, a grace period…).
    RequeueAfter(Duration),
}

/// Adds keys to a controller's queue from anywhere.
#[derive(Clone)]
pub struct QueueHandle {
    queue: Arc<Mutex<Queue>>,
    notify: Arc<Notify>,
}

impl QueueHandle {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `key` now.
    pub fn add(&self, key: ObjectKey) {
        self.lock().add(key);
        self.notify.notify_one();
    }

    /// Queues `key` after `delay`.
    pub fn add_after(&self, key: ObjectKey, delay: Duration) {
        self.lock().add_at(key, Instant::now() + delay);
        self.notify.notify_one();
    }
}

/// One controller's queue and workers.
pub struct Controller {
    name: &'static str,
    handle: QueueHandle,
    stop: CancellationToken,
}

impl Controller {
    pub fn new(name: &'static str, stop: CancellationToken) -> Controller {
        Controller {
            name,
            handle: QueueHandle {
                queue: Arc::default(),
                notify: Arc::default(),
            },
            stop,
        }
    }

    /// A handle to queue keys from elsewhere.
    pub fn handle(&self) -> QueueHandle {
        self.handle.clone()
    }

    /// Queues the keys `map` returns for every change of `informer`'s kind
    /// (and for every cached object after a relist or a missed change).
    pub fn watches<T, F>(&self, informer: &Informer<T>, map: F)
    where
        T: Object + Send + Sync + 'static,
        F: Fn(&T) -> Vec<ObjectKey> + Send + Sync + 'static,
    {
        let mut rx = informer.subscribe();
        let informer = informer.clone();
        let handle = self.handle.clone();
        let stop = self.stop.clone();
        let name = self.name;
        tokio::spawn(async move {
            loop {
                let change = tokio::select! {
                    c = rx.recv() => c,
                    () = stop.cancelled() => return,
                };
                let keys = match change {
                    Ok(Change::Applied(o) | Change::Deleted(o)) => map(&o),
                    Ok(Change::Resynced) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        tracing::debug!(controller = name, kind = T::KIND.name(), "resync");
                        informer.list().iter().flat_map(|o| map(o)).collect()
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if !keys.is_empty() {
                    let mut q = handle.lock();
                    for k in keys {
                        q.add(k);
                    }
                    drop(q);
                    handle.notify.notify_one();
                }
            }
        });
    }

    /// Runs `workers` reconciles at a time until the stop token fires.
    pub async fn run<F, Fut, E>(self, workers: usize, reconcile: F)
    where
        F: Fn(ObjectKey) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        let reconcile = Arc::new(reconcile);
        let permits = Arc::new(Semaphore::new(workers.max(1)));
        let mut running = JoinSet::new();
        let handle = self.handle;
        loop {
            let next_timer = handle.lock().fire_timers(Instant::now());
            while let Ok(permit) = permits.clone().try_acquire_owned() {
                let Some(key) = handle.lock().take() else {
                    drop(permit);
                    break;
                };
                let (reconcile, handle, name) = (reconcile.clone(), handle.clone(), self.name);
                running.spawn(async move {
                    let outcome = reconcile(key.clone()).await;
                    let mut q = handle.lock();
                    match outcome {
                        Ok(Action::Done) => q.succeeded(&key),
                        Ok(Action::RequeueAfter(d)) => {
                            q.succeeded(&key);
                            q.add_at(key.clone(), Instant::now() + d);
                        }
                        Err(e) => {
                            let wait = q.failed(&key);
                            tracing::warn!(controller = name, %key, error = %e, retry_in = ?wait, "reconcile failed");
                            q.add_at(key.clone(), Instant::now() + wait);
                        }
                    }
                    q.release(&key);
                    drop(q);
                    drop(permit);
                    handle.notify.notify_one();
                });
            }
            let sleep = async {
                match next_timer {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = handle.notify.notified() => {}
                () = sleep => {}
                Some(_) = running.join_next(), if !running.is_empty() => {}
                () = self.stop.cancelled() => break,
            }
        }
        running.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn reconciles_each_key_and_requeues_on_request() {
        let stop = CancellationToken::new();
        let c = Controller::new("test", stop.clone());
        let h = c.handle();
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let done = Arc::new(Notify::new());
        let done2 = done.clone();
        let task = tokio::spawn(c.run(2, move |key: ObjectKey| {
            let (seen, done) = (seen.clone(), done2.clone());
            async move {
                let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
                if key.name == "again" && n < 3 {
                    return Ok::<_, String>(Action::RequeueAfter(Duration::from_millis(5)));
                }
                if key.name == "flaky" && n < 5 {
                    return Err("not yet".to_string());
                }
                done.notify_one();
                Ok(Action::Done)
            }
        }));
        h.add(ObjectKey::new("", "again"));
        tokio::time::timeout(Duration::from_secs(5), done.notified())
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        h.add(ObjectKey::new("", "flaky"));
        tokio::time::timeout(Duration::from_secs(5), done.notified())
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
}
