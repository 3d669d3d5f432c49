//! The watch hub every backend shares: a bounded ring of recent events and the
//! live watchers, fed in revision order by whoever makes changes durable.
//!
//! A backend calls [`Hub::publish`] once a change is durable (the memory store
//! right away, the sled store from its flusher), always in revision order.
//! [`Hub::subscribe`] replays the retained events after `from` and registers
//! the watcher under the same lock, so there is neither a gap nor a duplicate
//! between replay and live events. Delivery never blocks: a watcher whose
//! channel is about to fill gets a final `Err(Compacted)` and is dropped.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::mpsc;

use super::{Event, Prefix, Revision, StoreError, Watch};

/// How much watch history a backend keeps, and how far a watcher may lag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// Events kept in memory for watches that start in the past. A watch
    /// from before the oldest of them gets [`StoreError::Compacted`].
    pub history: usize,
    /// Live events that may queue up for one watcher beyond its replay; a
    /// watcher that falls further behind gets [`StoreError::Compacted`].
    pub watch_buffer: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            history: 10_000,
            watch_buffer: 1_024,
        }
    }
}

/// One live watcher.
struct Watcher {
    prefix: Prefix,
    /// The last revision this watcher has been sent (or asked to start after);
    /// events at or below it are not sent again.
    last: Revision,
    tx: mpsc::Sender<Result<Event, StoreError>>,
}

impl Watcher {
    /// Offers `event`; returns whether the watcher stays registered.
    fn offer(&mut self, event: &Event) -> bool {
        if self.tx.is_closed() {
            return false;
        }
        if event.revision <= self.last || !self.prefix.contains(&event.key) {
            return true;
        }
        // Keep the last slot for the error that ends a lagging stream, so
        // the client always learns why its watch stopped.
        if self.tx.capacity() <= 1 {
            let _ = self.tx.try_send(Err(StoreError::Compacted {
                requested: self.last,
                oldest: event.revision,
            }));
            tracing::debug!(
                prefix = ?self.prefix,
                last = self.last,
                "a watcher fell too far behind; ending its watch"
            );
            return false;
        }
        match self.tx.try_send(Ok(event.clone())) {
            Ok(()) => {
                self.last = event.revision;
                true
            }
            Err(_) => false,
        }
    }
}

struct HubState {
    /// Every event with revision in `(base, published]`, oldest first.
    ring: VecDeque<Event>,
    base: Revision,
    published: Revision,
    watchers: Vec<Watcher>,
    closed: bool,
}

/// History ring plus live watchers.
pub(crate) struct Hub {
    options: StoreOptions,
    state: Mutex<HubState>,
}

impl Hub {
    /// A hub whose history starts after `revision` (nothing older is kept).
    pub(crate) fn new(revision: Revision, options: StoreOptions) -> Self {
        Hub {
            options,
            state: Mutex::new(HubState {
                ring: VecDeque::new(),
                base: revision,
                published: revision,
                watchers: Vec::new(),
                closed: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records durable events (in revision order) and sends them to the
    /// watchers they concern. Never blocks on a watcher.
    pub(crate) fn publish(&self, events: impl IntoIterator<Item = Event>) {
        let mut state = self.lock();
        for event in events {
            debug_assert!(event.revision > state.published, "events out of order");
            state.published = event.revision;
            state.watchers.retain_mut(|w| w.offer(&event));
            state.ring.push_back(event);
            while state.ring.len() > self.options.history {
                if let Some(old) = state.ring.pop_front() {
                    state.base = old.revision;
                }
            }
        }
    }

    /// Starts a watch of changes under `prefix` after `from`.
    pub(crate) fn subscribe(&self, prefix: &Prefix, from: Revision) -> Result<Watch, StoreError> {
        let mut state = self.lock();
        if state.closed {
            return Err(StoreError::Closed);
        }
        if from < state.base {
            return Err(StoreError::Compacted {
                requested: from,
                oldest: state.base + 1,
            });
        }
        let replay: Vec<&Event> = state
            .ring
            .iter()
            .filter(|e| e.revision > from && prefix.contains(&e.key))
            .collect();
        let (tx, rx) = mpsc::channel(replay.len() + self.options.watch_buffer.max(1) + 1);
        let mut last = from;
        for event in replay {
            // Cannot fail: the channel was sized for the replay.
            let _ = tx.try_send(Ok(event.clone()));
            last = event.revision;
        }
        state.watchers.push(Watcher {
            prefix: prefix.clone(),
            last,
            tx,
        });
        Ok(rx)
    }

    /// Forgets the history and starts again after `revision`: every live
    /// watcher gets a final `Compacted` (its client relists). For a backend
    /// whose change feed lost events it can no longer fetch.
    pub(crate) fn restart_at(&self, revision: Revision) {
        let mut state = self.lock();
        for w in state.watchers.drain(..) {
            let _ = w.tx.try_send(Err(StoreError::Compacted {
                requested: w.last,
                oldest: revision + 1,
            }));
        }
        state.ring.clear();
        state.base = revision;
        state.published = revision;
    }

    /// Ends every watch with `Err(Closed)` and refuses new ones.
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        for w in state.watchers.drain(..) {
            let _ = w.tx.try_send(Err(StoreError::Closed));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{EventKind, Key};

    fn event(revision: Revision) -> Event {
        Event {
            kind: EventKind::Added,
            key: Key::new("pods", "default", format!("p{revision}")),
            value: Vec::new(),
            revision,
        }
    }

    #[test]
    fn restart_ends_every_watch_and_forgets_the_history() {
        let hub = Hub::new(0, StoreOptions::default());
        let pods = Prefix::new("pods", None);
        let mut w = hub.subscribe(&pods, 0).expect("watch");
        hub.publish([event(1), event(2)]);
        assert_eq!(w.try_recv().expect("event").expect("ok").revision, 1);
        assert_eq!(w.try_recv().expect("event").expect("ok").revision, 2);

        hub.restart_at(9);
        match w.try_recv() {
            Ok(Err(StoreError::Compacted {
                requested: 2,
                oldest: 10,
            })) => {}
            other => panic!("expected Compacted(2, 10), got {other:?}"),
        }
        assert!(matches!(
            hub.subscribe(&pods, 2),
            Err(StoreError::Compacted { requested: 2, .. })
        ));
        let mut fresh = hub.subscribe(&pods, 9).expect("a watch from the new start");
        hub.publish([event(10)]);
        assert_eq!(fresh.try_recv().expect("event").expect("ok").revision, 10);
    }
}
