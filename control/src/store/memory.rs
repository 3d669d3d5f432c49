//! `MemoryStore`: the reference backend, everything in memory.
//!
//! Same semantics as the sled backend minus the disk: a write is "durable"
//! the moment it is applied, so reads and watches see it at once. Used by
//! controller unit tests and `--store memory`; its contents die with it.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::history::{Hub, StoreOptions};
use super::{Event, EventKind, Key, Listing, Prefix, Revision, Store, StoreError, Versioned, Watch};

/// The objects and the revision counter, changed under one lock.
#[derive(Default)]
struct State {
    objects: BTreeMap<Key, Versioned>,
    revision: Revision,
    closed: bool,
}

/// An in-memory [`Store`].
pub struct MemoryStore {
    state: Mutex<State>,
    /// Fed under the `state` lock, so events reach it in revision order.
    hub: Hub,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store with the default watch history.
    pub fn new() -> Self {
        Self::with_options(StoreOptions::default())
    }

    /// An empty store with the given watch history and buffer sizes.
    pub fn with_options(options: StoreOptions) -> Self {
        MemoryStore {
            state: Mutex::new(State::default()),
            hub: Hub::new(0, options),
        }
    }

    /// Locks the state, failing with `Closed` once the store was closed.
    fn lock(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.closed {
            return Err(StoreError::Closed);
        }
        Ok(state)
    }

    /// Applies one change at the next revision and publishes its event.
    fn commit(&self, state: &mut State, kind: EventKind, key: &Key, value: Vec<u8>) -> Revision {
        state.revision += 1;
        let revision = state.revision;
        match kind {
            EventKind::Deleted => {
                state.objects.remove(key);
            }
            EventKind::Added | EventKind::Modified => {
                state.objects.insert(
                    key.clone(),
                    Versioned {
                        value: value.clone(),
                        revision,
                    },
                );
            }
        }
        self.hub.publish([Event {
            kind,
            key: key.clone(),
            value,
            revision,
        }]);
        revision
    }
}

/// Fails with `Conflict` unless `expected` is absent or equals `actual`.
pub(crate) fn check_expected(
    key: &Key,
    expected: Option<Revision>,
    actual: Revision,
) -> Result<(), StoreError> {
    match expected {
        Some(expected) if expected != actual => Err(StoreError::Conflict {
            key: key.clone(),
            expected,
            actual,
        }),
        _ => Ok(()),
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn get(&self, key: &Key) -> Result<Option<Versioned>, StoreError> {
        Ok(self.lock()?.objects.get(key).cloned())
    }

    async fn list(&self, prefix: &Prefix) -> Result<Listing, StoreError> {
        let state = self.lock()?;
        let start = Key::new(
            prefix.resource.clone(),
            prefix.namespace.clone().unwrap_or_default(),
            "",
        );
        let items = state
            .objects
            .range(start..)
            .take_while(|(k, _)| k.resource == prefix.resource)
            .filter(|(k, _)| prefix.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(Listing {
            items,
            revision: state.revision,
        })
    }

    async fn create(&self, key: &Key, value: Vec<u8>) -> Result<Revision, StoreError> {
        let mut state = self.lock()?;
        if state.objects.contains_key(key) {
            return Err(StoreError::AlreadyExists { key: key.clone() });
        }
        Ok(self.commit(&mut state, EventKind::Added, key, value))
    }

    async fn update(
        &self,
        key: &Key,
        value: Vec<u8>,
        expected: Option<Revision>,
    ) -> Result<Revision, StoreError> {
        let mut state = self.lock()?;
        let Some(current) = state.objects.get(key) else {
            return Err(StoreError::NotFound { key: key.clone() });
        };
        check_expected(key, expected, current.revision)?;
        Ok(self.commit(&mut state, EventKind::Modified, key, value))
    }

    async fn delete(
        &self,
        key: &Key,
        expected: Option<Revision>,
    ) -> Result<(Revision, Versioned), StoreError> {
        let mut state = self.lock()?;
        let Some(current) = state.objects.get(key).cloned() else {
            return Err(StoreError::NotFound { key: key.clone() });
        };
        check_expected(key, expected, current.revision)?;
        let revision = self.commit(&mut state, EventKind::Deleted, key, current.value.clone());
        Ok((revision, current))
    }

    async fn watch(&self, prefix: &Prefix, from: Revision) -> Result<Watch, StoreError> {
        self.hub.subscribe(prefix, from)
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        Ok(self.lock()?.revision)
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).closed = true;
        self.hub.close();
        Ok(())
    }
}
