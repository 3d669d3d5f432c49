//! The store: a versioned key/value space of objects with watches.
//!
//! Every backend implements [`Store`] and must pass the one conformance suite
//! in [`conformance`]. The store knows bytes, keys and revisions; it does not
//! know object types (the API layer owns those) — as etcd does for Kubernetes.
//!
//! Promises every backend keeps:
//! - a write returns only once it is durable (the sled backend syncs its
//!   write-ahead log, with group commit, before it answers; etcd syncs its
//!   own);
//! - revisions are global, strictly increasing, and never go backwards, even
//!   across crashes; an object's revision is the revision of its last write;
//! - reads only show durable writes;
//! - a conditional write against a stale revision fails with
//!   [`StoreError::Conflict`];
//! - a watch from revision N yields every later change under its prefix, in
//!   revision order, with no gaps and no duplicates, or [`StoreError::Compacted`]
//!   when N is older than the history the backend keeps (the client relists);
//!   a watcher too slow to keep up gets a final `Compacted` and its stream ends
//!   (it never slows writers down); after a restart the history is empty, so
//!   only a watch from the current revision (or later) is served.
//!
//! Layout: [`memory`], [`sled_store`] and [`etcd_store`] are the backends
//! (the sled on-disk format is in `sled_format`); `history` is the watch
//! ring they share.

use std::fmt;

pub mod conformance;
pub mod etcd_store;
mod history;
pub mod memory;
mod sled_format;
pub mod sled_store;
mod wal;

pub use etcd_store::{EtcdConfig, EtcdStore};
pub use history::StoreOptions;
pub use memory::MemoryStore;
pub use sled_store::SledStore;

/// A global revision. 0 means "nothing yet" (a fresh etcd is at 1).
pub type Revision = u64;

/// Where an object lives: `resource/namespace/name` (namespace empty for
/// cluster-scoped objects).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// The resource, e.g. `pods` or `deployments.apps`.
    pub resource: String,
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(resource: impl Into<String>, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Key {
            resource: resource.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.resource, self.namespace, self.name)
    }
}

/// What to list or watch: one resource, optionally one namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Prefix {
    pub resource: String,
    /// `None`: every namespace (and cluster-scoped objects).
    pub namespace: Option<String>,
}

impl Prefix {
    pub fn new(resource: impl Into<String>, namespace: Option<String>) -> Self {
        Prefix {
            resource: resource.into(),
            namespace,
        }
    }

    /// Whether `key` falls under this prefix.
    pub fn contains(&self, key: &Key) -> bool {
        key.resource == self.resource && self.namespace.as_ref().is_none_or(|ns| *ns == key.namespace)
    }
}

/// A stored value and the revision of its last write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    pub value: Vec<u8>,
    pub revision: Revision,
}

/// What a change did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Added,
    Modified,
    Deleted,
}

/// One change, as a watch delivers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub key: Key,
    /// The new value; for `Deleted`, the last value before the delete.
    pub value: Vec<u8>,
    /// The revision of this change.
    pub revision: Revision,
}

/// A stream of changes. Ends with `Err(Compacted)` if the watcher fell too far
/// behind to be served without gaps; the client then relists.
pub type Watch = tokio::sync::mpsc::Receiver<Result<Event, StoreError>>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{key} not found")]
    NotFound { key: Key },
    #[error("{key} already exists")]
    AlreadyExists { key: Key },
    #[error("{key} was changed by someone else: expected revision {expected}, found {actual}")]
    Conflict {
        key: Key,
        expected: Revision,
        actual: Revision,
    },
    #[error(
        "revision {requested} is no longer kept (oldest is {oldest}); list again and watch from the list's revision"
    )]
    Compacted { requested: Revision, oldest: Revision },
    #[error("the data directory {path} cannot be used: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("storage I/O failed: {0}")]
    Io(String),
    #[error("the store is shutting down")]
    Closed,
}

/// A consistent listing: the objects and the revision they were read at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    pub items: Vec<(Key, Versioned)>,
    pub revision: Revision,
}

/// The storage contract. Writes are async because they wait for durability.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads one object.
    async fn get(&self, key: &Key) -> Result<Option<Versioned>, StoreError>;

    /// Lists every object under `prefix`, consistent at one revision, in
    /// key order (resource, namespace, name).
    async fn list(&self, prefix: &Prefix) -> Result<Listing, StoreError>;

    /// Creates `key`; fails with `AlreadyExists` if it is there.
    async fn create(&self, key: &Key, value: Vec<u8>) -> Result<Revision, StoreError>;

    /// Replaces `key`. With `expected`, fails with `Conflict` unless the
    /// object's current revision equals it. Fails with `NotFound` if absent.
    async fn update(
        &self,
        key: &Key,
        value: Vec<u8>,
        expected: Option<Revision>,
    ) -> Result<Revision, StoreError>;

    /// Deletes `key` (with `expected`, only at that revision). Returns the
    /// delete's revision and the last value.
    async fn delete(
        &self,
        key: &Key,
        expected: Option<Revision>,
    ) -> Result<(Revision, Versioned), StoreError>;

    /// Watches changes under `prefix` with revision greater than `from`.
    async fn watch(&self, prefix: &Prefix, from: Revision) -> Result<Watch, StoreError>;

    /// The latest durable revision.
    async fn revision(&self) -> Result<Revision, StoreError>;

    /// Shuts the store down: waits until every acknowledged write is durable,
    /// ends every watch with `Err(Closed)`, releases files and threads. Later
    /// operations fail with `Closed`; closing again does nothing. Dropping
    /// the store closes it too; this is the way to do it without blocking.
    async fn close(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
