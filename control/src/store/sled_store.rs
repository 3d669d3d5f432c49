//! `SledStore`: the durable backend, sled behind a write-ahead log with
//! group commit.
//!
//! Writes: under one short mutex a writer checks its precondition against the
//! current state, takes the next revision and applies the change to sled
//! (one insert or remove, in memory); then it waits, off the lock, until the
//! flusher has made that revision durable. The flusher is one thread: while
//! writes are pending it takes them all, appends them to the log
//! ([`super::wal`]) and syncs once, then publishes the covered events to
//! watchers and wakes every writer at or below that revision — so many
//! concurrent writers share one `fdatasync`. sled's own flush (several syncs)
//! runs only at checkpoints: when the log's segment fills, and on close,
//! sled is flushed with its revision key and the log starts over. On open,
//! logged changes sled lost are applied again (`recover`).
//!
//! Reads: a get or list reads sled under the same mutex, notes the applied
//! revision R, and returns only once R is durable. Clients therefore never
//! see a change a crash could lose, and the revisions they see never go
//! backwards across a restart.
//!
//! The write mutex is a std one, held only around sled calls that work on
//! sled's in-memory log buffers and page cache (never an fsync), so holding
//! it on a runtime thread is brief. Closing (or dropping) the store refuses
//! new work, lets the flusher make every applied write durable and
//! checkpoint, joins it and ends the watches. The on-disk layout lives in
//! [`super::sled_format`].

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use tokio::sync::watch;

use super::history::{Hub, StoreOptions};
use super::memory::check_expected;
use super::sled_format::{
    OBJECT_PREFIX, REVISION_KEY, WAL_FILE, corrupt, decode_revision, decode_value, encode_value, object_key,
    open_db, parse_object_key, prefix_key,
};
use super::wal::{self, Record, Wal};
use super::{Event, EventKind, Key, Listing, Prefix, Revision, Store, StoreError, Versioned, Watch};

/// What writers change under the write lock.
struct WriteState {
    /// The last revision applied to sled (maybe not yet durable).
    applied: Revision,
    /// Applied but not yet durable events, in revision order.
    pending: VecDeque<Event>,
    /// Set by `close`: refuse new work, flush what is pending, stop.
    closing: bool,
    /// Set when a flush failed; every later operation fails with it.
    failed: Option<String>,
    /// Tests hold flushes back to pile writes up (see `hold_flushes`).
    held: bool,
}

/// What the flusher announces to waiting readers and writers.
#[derive(Clone, Debug, Default)]
struct Durable {
    revision: Revision,
    failed: Option<String>,
}

/// Shared by the store handle and its flusher thread.
struct Shared {
    path: PathBuf,
    db: sled::Db,
    state: Mutex<WriteState>,
    /// Signals the flusher that `applied` moved or `closing` was set.
    work: Condvar,
    durable: watch::Sender<Durable>,
    hub: Hub,
    /// Log appends (one sync each) since open.
    flushes: AtomicU64,
    /// Checkpoints (sled flushed, the log started over) since open.
    checkpoints: AtomicU64,
    /// sled's log file, opened again to fdatasync it at each checkpoint.
    log_file: std::fs::File,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, WriteState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn io(&self, doing: &str, e: &sled::Error) -> StoreError {
        StoreError::Io(format!("{doing} in {} failed: {e}", self.path.display()))
    }
}

/// A [`Store`] in a sled database on local disk.
pub struct SledStore {
    shared: Arc<Shared>,
    flusher: Mutex<Option<JoinHandle<()>>>,
}

/// A change a writer wants once its precondition held.
enum Change {
    Put(EventKind, Vec<u8>),
    Delete,
}

impl SledStore {
    /// Opens (or creates) the store in `dir` with default watch options.
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        Self::open_with(dir, StoreOptions::default())
    }

    /// Opens (or creates) the store in `dir`. Fails with
    /// [`StoreError::Corrupt`] when `dir` cannot be used, saying why and what
    /// to do. The watch history starts empty: watching from the current
    /// revision works, older revisions are `Compacted`.
    pub fn open_with(dir: &Path, options: StoreOptions) -> Result<SledStore, StoreError> {
        let (db, sled_revision) = open_db(dir)?;
        let log_file = std::fs::File::open(dir.join("db")).map_err(|e| StoreError::Corrupt {
            path: dir.display().to_string(),
            reason: format!("cannot open sled's log file to sync it: {e}"),
        })?;
        let (mut wal, records) = Wal::open(&dir.join(WAL_FILE)).map_err(|e| StoreError::Corrupt {
            path: dir.display().to_string(),
            reason: format!(
                "cannot open the store's log {WAL_FILE}: {e}; check the permissions and free space"
            ),
        })?;
        let revision = recover(&db, &log_file, records, sled_revision).map_err(|e| StoreError::Corrupt {
            path: dir.display().to_string(),
            reason: format!("cannot apply the store's log to the database: {e}"),
        })?;
        wal.checkpointed();
        tracing::info!(dir = %dir.display(), revision, "opened the store");
        let shared = Arc::new(Shared {
            path: dir.to_path_buf(),
            db,
            state: Mutex::new(WriteState {
                applied: revision,
                pending: VecDeque::new(),
                closing: false,
                failed: None,
                held: false,
            }),
            work: Condvar::new(),
            durable: watch::Sender::new(Durable {
                revision,
                failed: None,
            }),
            hub: Hub::new(revision, options),
            flushes: AtomicU64::new(0),
            checkpoints: AtomicU64::new(0),
            log_file,
        });
        let for_thread = Arc::clone(&shared);
        let flusher = std::thread::Builder::new()
            .name("store-flusher".into())
            .spawn(move || run_flusher(&for_thread, wal, revision))
            .map_err(|e| StoreError::Io(format!("cannot start the store's flusher thread: {e}")))?;
        Ok(SledStore {
            shared,
            flusher: Mutex::new(Some(flusher)),
        })
    }

    /// How many times the flusher has synced the log since open: once per
    /// group of concurrent writes.
    pub fn flush_count(&self) -> u64 {
        self.shared.flushes.load(Ordering::Relaxed)
    }

    /// How many checkpoints (sled flushed, the log started over) since open.
    pub fn checkpoint_count(&self) -> u64 {
        self.shared.checkpoints.load(Ordering::Relaxed)
    }

    /// The last revision applied to sled, durable or not yet.
    pub fn applied_revision(&self) -> Revision {
        self.shared.lock().applied
    }

    /// For tests: while held, the flusher starts no new flush, so writes
    /// pile up and the next flush covers them all. Closing ignores it.
    #[doc(hidden)]
    pub fn hold_flushes(&self, hold: bool) {
        self.shared.lock().held = hold;
        self.shared.work.notify_all();
    }

    /// Like [`Store::close`], but blocks the calling thread (for at most one
    /// flush) instead of awaiting; dropping the store calls it.
    pub fn close_blocking(&self) -> Result<(), StoreError> {
        match self.begin_close() {
            Some(flusher) => self.finish_close(flusher.join()),
            None => Ok(()),
        }
    }

    /// Refuses new work and tells the flusher to stop once all is durable;
    /// returns its thread to join, unless an earlier close took it.
    fn begin_close(&self) -> Option<JoinHandle<()>> {
        self.shared.lock().closing = true;
        self.shared.work.notify_all();
        self.flusher.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    fn finish_close(&self, joined: std::thread::Result<()>) -> Result<(), StoreError> {
        self.shared.hub.close();
        if joined.is_err() {
            tracing::error!("the store's flusher thread panicked");
            return Err(StoreError::Io("the store's flusher thread panicked".into()));
        }
        tracing::info!(dir = %self.shared.path.display(), "closed the store");
        Ok(())
    }

    /// Fails unless the store still takes work.
    fn check_open(state: &WriteState) -> Result<(), StoreError> {
        if let Some(reason) = &state.failed {
            return Err(StoreError::Io(reason.clone()));
        }
        if state.closing {
            return Err(StoreError::Closed);
        }
        Ok(())
    }

    /// Waits until `revision` is durable.
    async fn wait_durable(&self, revision: Revision) -> Result<(), StoreError> {
        let mut rx = self.shared.durable.subscribe();
        let durable = rx
            .wait_for(|d| d.revision >= revision || d.failed.is_some())
            .await
            .map_err(|_| StoreError::Closed)?;
        match &durable.failed {
            Some(reason) if durable.revision < revision => Err(StoreError::Io(reason.clone())),
            _ => Ok(()),
        }
    }

    /// Reads one object's stored form.
    fn read(&self, raw_key: &[u8]) -> Result<Option<Versioned>, StoreError> {
        let Some(raw) = self
            .shared
            .db
            .get(raw_key)
            .map_err(|e| self.shared.io("reading", &e))?
        else {
            return Ok(None);
        };
        decode_value(&raw).map(Some).ok_or_else(|| {
            corrupt(
                &self.shared.path,
                format!("the record {} is damaged", String::from_utf8_lossy(raw_key)),
            )
        })
    }

    /// Checks `decide`'s precondition, applies its change at the next
    /// revision and waits until that revision is durable. Returns the new
    /// revision and the object as it was before.
    async fn write(
        &self,
        key: &Key,
        decide: impl FnOnce(Option<&Versioned>) -> Result<Change, StoreError>,
    ) -> Result<(Revision, Option<Versioned>), StoreError> {
        let raw_key = object_key(key);
        let (revision, before) = {
            let mut state = self.shared.lock();
            Self::check_open(&state)?;
            let before = self.read(&raw_key)?;
            let change = decide(before.as_ref())?;
            let revision = state.applied + 1;
            let (kind, value) = match change {
                Change::Put(kind, value) => {
                    self.shared
                        .db
                        .insert(raw_key, encode_value(revision, &value))
                        .map_err(|e| self.shared.io("writing", &e))?;
                    (kind, value)
                }
                Change::Delete => {
                    self.shared
                        .db
                        .remove(raw_key)
                        .map_err(|e| self.shared.io("writing", &e))?;
                    (
                        EventKind::Deleted,
                        before.as_ref().map(|b| b.value.clone()).unwrap_or_default(),
                    )
                }
            };
            state.applied = revision;
            state.pending.push_back(Event {
                kind,
                key: key.clone(),
                value,
                revision,
            });
            (revision, before)
        };
        self.shared.work.notify_one();
        self.wait_durable(revision).await?;
        Ok((revision, before))
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        if let Err(e) = self.close_blocking() {
            tracing::error!("closing the store failed: {e}");
        }
    }
}

/// The flusher loop: while there are applied-but-not-durable writes, append
/// them to the write-ahead log with one sync, then publish and wake what
/// that covered; checkpoint when the log's segment fills, and on close.
/// Ends on close or failure.
fn run_flusher(shared: &Shared, mut wal: Wal, mut durable: Revision) {
    loop {
        let (target, events) = {
            let mut state = shared.lock();
            while (state.applied <= durable || state.held) && !state.closing {
                state = shared.work.wait(state).unwrap_or_else(PoisonError::into_inner);
            }
            if state.applied <= durable {
                // Closing, and everything is durable: leave sled complete
                // and the log empty for the next open.
                if let Err(reason) = checkpoint(shared, &mut wal, durable) {
                    fail(shared, reason);
                }
                return;
            }
            let events: Vec<Event> = state.pending.drain(..).collect();
            (state.applied, events)
        };
        let records: Vec<Record> = events.iter().map(record_of).collect();
        let appended = wal.append(&records);
        shared.flushes.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = appended {
            fail(
                shared,
                format!(
                    "writing the store's log in {} failed: {e}; the control plane must restart",
                    shared.path.display()
                ),
            );
            return;
        }
        // Watchers first, then readers and writers: once a client can see
        // revision `target`, a watch from it has every earlier event.
        shared.hub.publish(events);
        durable = target;
        shared.durable.send_modify(|d| d.revision = target);
        if wal.used() >= CHECKPOINT_AT
            && let Err(reason) = checkpoint(shared, &mut wal, durable)
        {
            fail(shared, reason);
            return;
        }
    }
}

/// The log fills past this: flush sled and start the log over.
const CHECKPOINT_AT: u64 = wal::SEGMENT / 4 * 3;

/// Makes everything applied to sled durable in sled itself, with
/// `durable` (every change up to it is in sled) as its revision key, then
/// empties the log. sled's flush ends in sync_file_range, which leaves the disk's
/// write cache and the file's metadata unsynced; fdatasync on its log file
/// makes the checkpoint survive power loss, not just a killed process.
fn checkpoint(shared: &Shared, wal: &mut Wal, durable: Revision) -> Result<(), String> {
    shared
        .db
        .insert(REVISION_KEY, &durable.to_be_bytes())
        .and_then(|_| shared.db.flush())
        .map(|_| ())
        .and_then(|()| shared.log_file.sync_data().map_err(sled::Error::Io))
        .map_err(|e| {
            format!(
                "flushing the store in {} to disk failed: {e}; the control plane must restart",
                shared.path.display()
            )
        })?;
    shared.checkpoints.fetch_add(1, Ordering::Relaxed);
    wal.checkpointed();
    Ok(())
}

/// Marks the store failed: every later operation fails with `reason`.
fn fail(shared: &Shared, reason: String) {
    tracing::error!("{reason}");
    shared.lock().failed = Some(reason.clone());
    shared.durable.send_modify(|d| d.failed = Some(reason));
    shared.hub.close();
}

/// The log record of an applied change: the key and value as sled has them.
fn record_of(event: &Event) -> Record {
    Record {
        revision: event.revision,
        key: object_key(&event.key),
        value: match event.kind {
            EventKind::Deleted => None,
            EventKind::Added | EventKind::Modified => Some(encode_value(event.revision, &event.value)),
        },
    }
}

/// Brings sled up to date after a crash and returns the store's revision.
///
/// sled holds every change up to `checkpointed` (its revision key, written
/// at each checkpoint) and maybe some later ones it wrote on its own. The
/// log holds every acknowledged change since the checkpoint. Each logged
/// change newer than both is applied again; then the revision is the
/// newest of the log's and of every stored object's (a change sled kept
/// without an acknowledgement still counts, so no revision is ever handed
/// out twice), recorded, and sled is made durable: the log can start over.
fn recover(
    db: &sled::Db,
    log_file: &std::fs::File,
    records: Vec<Record>,
    checkpointed: Revision,
) -> sled::Result<Revision> {
    let mut last = checkpointed;
    let mut replayed = 0usize;
    for r in records.into_iter().filter(|r| r.revision > checkpointed) {
        last = last.max(r.revision);
        let stored = db.get(&r.key)?.and_then(|v| decode_revision(&v));
        if stored.is_some_and(|s| s >= r.revision) {
            continue;
        }
        match r.value {
            Some(value) => db.insert(r.key, value)?,
            None => db.remove(r.key)?,
        };
        replayed += 1;
    }
    for entry in db.scan_prefix(OBJECT_PREFIX) {
        let (_, raw) = entry?;
        last = last.max(decode_revision(&raw).unwrap_or(0));
    }
    db.insert(REVISION_KEY, &last.to_be_bytes())?;
    db.flush()?;
    log_file.sync_data()?;
    if replayed > 0 {
        tracing::info!(replayed, revision = last, "replayed the store's log");
    }
    Ok(last)
}

#[async_trait::async_trait]
impl Store for SledStore {
    async fn get(&self, key: &Key) -> Result<Option<Versioned>, StoreError> {
        let raw_key = object_key(key);
        let (value, at) = {
            let state = self.shared.lock();
            Self::check_open(&state)?;
            (self.read(&raw_key)?, state.applied)
        };
        self.wait_durable(at).await?;
        Ok(value)
    }

    async fn list(&self, prefix: &Prefix) -> Result<Listing, StoreError> {
        let scan = prefix_key(prefix);
        let (mut items, revision) = {
            let state = self.shared.lock();
            Self::check_open(&state)?;
            let mut items = Vec::new();
            for entry in self.shared.db.scan_prefix(&scan) {
                let (raw_key, raw) = entry.map_err(|e| self.shared.io("listing", &e))?;
                let damaged = || {
                    corrupt(
                        &self.shared.path,
                        format!("the record {} is damaged", String::from_utf8_lossy(&raw_key)),
                    )
                };
                let key = parse_object_key(&raw_key).ok_or_else(damaged)?;
                items.push((key, decode_value(&raw).ok_or_else(damaged)?));
            }
            (items, state.applied)
        };
        self.wait_durable(revision).await?;
        // Key order (resource, namespace, name), as the memory store lists.
        items.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Listing { items, revision })
    }

    async fn create(&self, key: &Key, value: Vec<u8>) -> Result<Revision, StoreError> {
        let (revision, _) = self
            .write(key, |before| match before {
                Some(_) => Err(StoreError::AlreadyExists { key: key.clone() }),
                None => Ok(Change::Put(EventKind::Added, value)),
            })
            .await?;
        Ok(revision)
    }

    async fn update(
        &self,
        key: &Key,
        value: Vec<u8>,
        expected: Option<Revision>,
    ) -> Result<Revision, StoreError> {
        let (revision, _) = self
            .write(key, |before| {
                let current = before.ok_or_else(|| StoreError::NotFound { key: key.clone() })?;
                check_expected(key, expected, current.revision)?;
                Ok(Change::Put(EventKind::Modified, value))
            })
            .await?;
        Ok(revision)
    }

    async fn delete(
        &self,
        key: &Key,
        expected: Option<Revision>,
    ) -> Result<(Revision, Versioned), StoreError> {
        let (revision, before) = self
            .write(key, |before| {
                let current = before.ok_or_else(|| StoreError::NotFound { key: key.clone() })?;
                check_expected(key, expected, current.revision)?;
                Ok(Change::Delete)
            })
            .await?;
        let before = before.ok_or_else(|| StoreError::NotFound { key: key.clone() })?;
        Ok((revision, before))
    }

    async fn watch(&self, prefix: &Prefix, from: Revision) -> Result<Watch, StoreError> {
        Self::check_open(&self.shared.lock())?;
        self.shared.hub.subscribe(prefix, from)
    }

    async fn close(&self) -> Result<(), StoreError> {
        let Some(flusher) = self.begin_close() else {
            return Ok(());
        };
        let joined = tokio::task::spawn_blocking(move || flusher.join())
            .await
            .map_err(|e| StoreError::Io(format!("waiting for the store's flusher failed: {e}")))?;
        self.finish_close(joined)
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        let durable = self.shared.durable.borrow();
        match &durable.failed {
            Some(reason) => Err(StoreError::Io(reason.clone())),
            None => Ok(durable.revision),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(db: &sled::Db, name: &str) -> Option<Versioned> {
        db.get(object_key(&Key::new("pods", "a", name)))
            .unwrap()
            .and_then(|raw| decode_value(&raw))
    }

    fn put(revision: Revision, name: &str, value: &[u8]) -> Record {
        Record {
            revision,
            key: object_key(&Key::new("pods", "a", name)),
            value: Some(encode_value(revision, value)),
        }
    }

    #[test]
    fn recovery_replays_what_sled_lacks_and_never_reuses_a_revision() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path().join("db")).open().unwrap();
        let log_file = std::fs::File::open(dir.path()).unwrap();
        // sled as a crash left it: checkpointed at 1 (c), and it kept a later
        // write of a (3) and an unacknowledged write of z (9) on its own.
        db.insert(object_key(&Key::new("pods", "a", "c")), encode_value(1, b"c1"))
            .unwrap();
        db.insert(object_key(&Key::new("pods", "a", "a")), encode_value(3, b"a3"))
            .unwrap();
        db.insert(object_key(&Key::new("pods", "a", "z")), encode_value(9, b"z9"))
            .unwrap();
        let records = vec![
            put(1, "c", b"c1"), // checkpointed already
            put(2, "a", b"a2"), // older than what sled has: kept as a3
            put(4, "b", b"b4"), // lost by sled: applied again
            Record {
                revision: 5,
                key: object_key(&Key::new("pods", "a", "c")),
                value: None,
            },
        ];
        let revision = recover(&db, &log_file, records, 1).unwrap();
        assert_eq!(revision, 9, "the unacknowledged z counts");
        assert_eq!(object(&db, "a").unwrap().value, b"a3");
        assert_eq!(object(&db, "b").unwrap().revision, 4);
        assert_eq!(object(&db, "c"), None, "the logged delete");
        assert_eq!(object(&db, "z").unwrap().revision, 9);
        assert_eq!(
            db.get(REVISION_KEY).unwrap().and_then(|r| decode_revision(&r)),
            Some(9)
        );
    }
}
