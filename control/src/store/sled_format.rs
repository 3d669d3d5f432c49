//! The sled backend's on-disk format, version 1, and opening a data dir.
//!
//! sled is pre-1.0, so its files are an implementation detail kept behind
//! [`super::Store`]; our own layout inside it is versioned:
//!
//! | key | value |
//! |---|---|
//! | `shturman/format` | the format version, u32 big-endian (1) |
//! | `v1/revision` | the last committed revision, u64 big-endian |
//! | `v1/o/{resource}/{namespace}/{name}` | the object's revision (u64 big-endian) then its bytes |
//!
//! Key parts escape `%` as `%25` and `/` as `%2F`, so a prefix scan of
//! `v1/o/pods/` never sees `pods.metrics`, and a name with a slash round-trips.
//! The revision key is written in the same sled batch as every change. A
//! marker file `SHTURMAN_STORE` ("shturman-store format 1") beside sled's
//! files is written once the store exists, and checked before sled opens.

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use super::{Key, Prefix, Revision, StoreError, Versioned};

/// The format this build reads and writes.
pub(crate) const FORMAT_VERSION: u32 = 1;
pub(crate) const FORMAT_KEY: &[u8] = b"shturman/format";
pub(crate) const REVISION_KEY: &[u8] = b"v1/revision";
/// sled's page cache (its default is 1 GiB).
const SLED_CACHE_BYTES: u64 = 64 << 20;
/// How long a held lock on the data dir is waited out before it counts as
/// another process's.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
pub(crate) const OBJECT_PREFIX: &str = "v1/o/";
/// The store's write-ahead log, beside sled's files (`super::wal`).
pub(crate) const WAL_FILE: &str = "wal";

fn escape(part: &str, out: &mut String) {
    for c in part.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            c => out.push(c),
        }
    }
}

fn unescape(part: &str) -> Option<String> {
    let mut out = String::with_capacity(part.len());
    let mut rest = part;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("%25") => out.push('%'),
            Some("%2F") => out.push('/'),
            _ => return None,
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// `v1/o/{resource}/{namespace}/{name}`.
pub(crate) fn object_key(key: &Key) -> Vec<u8> {
    key_path(OBJECT_PREFIX, key).into_bytes()
}

/// The scan prefix for a list: `v1/o/{resource}/` or `v1/o/{resource}/{namespace}/`.
pub(crate) fn prefix_key(prefix: &Prefix) -> Vec<u8> {
    prefix_path(OBJECT_PREFIX, prefix).into_bytes()
}

/// The inverse of [`object_key`]; `None` if `raw` is not one.
pub(crate) fn parse_object_key(raw: &[u8]) -> Option<Key> {
    parse_key_path(OBJECT_PREFIX, raw)
}

/// The key layout the sled and etcd backends share:
/// `{root}{resource}/{namespace}/{name}`, with `%` and `/` inside a part
/// written `%25` and `%2F`, so the parts split cleanly.
pub(crate) fn key_path(root: &str, key: &Key) -> String {
    let mut s = String::from(root);
    escape(&key.resource, &mut s);
    s.push('/');
    escape(&key.namespace, &mut s);
    s.push('/');
    escape(&key.name, &mut s);
    s
}

/// Where a list's keys start: `{root}{resource}/` or
/// `{root}{resource}/{namespace}/`.
pub(crate) fn prefix_path(root: &str, prefix: &Prefix) -> String {
    let mut s = String::from(root);
    escape(&prefix.resource, &mut s);
    s.push('/');
    if let Some(ns) = &prefix.namespace {
        escape(ns, &mut s);
        s.push('/');
    }
    s
}

/// The inverse of [`key_path`]; `None` if `raw` is not one.
pub(crate) fn parse_key_path(root: &str, raw: &[u8]) -> Option<Key> {
    let s = std::str::from_utf8(raw).ok()?.strip_prefix(root)?;
    let mut parts = s.split('/');
    let (resource, namespace, name) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || resource.is_empty() || name.is_empty() {
        return None;
    }
    Some(Key::new(
        unescape(resource)?,
        unescape(namespace)?,
        unescape(name)?,
    ))
}

/// The revision, then the value.
pub(crate) fn encode_value(revision: Revision, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + value.len());
    out.extend_from_slice(&revision.to_be_bytes());
    out.extend_from_slice(value);
    out
}

pub(crate) fn decode_value(raw: &[u8]) -> Option<Versioned> {
    let (rev, value) = raw.split_first_chunk::<8>()?;
    Some(Versioned {
        value: value.to_vec(),
        revision: u64::from_be_bytes(*rev),
    })
}

pub(crate) fn decode_revision(raw: &[u8]) -> Option<Revision> {
    Some(u64::from_be_bytes(*raw.first_chunk::<8>()?))
}

/// A `Corrupt` error for `dir`.
pub(crate) fn corrupt(dir: &Path, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        path: dir.display().to_string(),
        reason: reason.into(),
    }
}

const MOVE_AWAY: &str = "restore it from a backup, or move it away to start with an empty store";

/// Whether sled could not take the data dir's lock (it reports a held
/// lock as `Other` with this text, or as `WouldBlock`).
fn is_lock_error(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock || e.to_string().contains("could not acquire lock")
}

/// Explains an I/O error met while opening the data dir.
fn io_reason(e: &io::Error, doing: &str) -> String {
    match e.kind() {
        io::ErrorKind::PermissionDenied => format!(
            "permission denied while {doing} ({e}); give the user running shturman read and write access to it"
        ),
        _ if is_lock_error(e) => {
            format!(
                "it is locked by another process ({e}); stop the other shturman using it, or pick another --data-dir"
            )
        }
        _ => format!("{doing} failed: {e}; check the path and its permissions, or pick another --data-dir"),
    }
}

/// Opens (creating if needed) the data dir, checks the format markers and
/// returns the database with its last committed revision.
pub(crate) fn open_db(dir: &Path) -> Result<(sled::Db, Revision), StoreError> {
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => {
            return Err(corrupt(
                dir,
                "it is not a directory; remove or rename that file, or pick another --data-dir",
            ));
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| corrupt(dir, io_reason(&e, "creating it")))?;
        }
        Err(e) => return Err(corrupt(dir, io_reason(&e, "reading it"))),
    }
    let marked = read_marker(dir)?;
    if !marked {
        refuse_foreign_files(dir)?;
    }
    // sled panics on some kinds of damaged files instead of returning an error.
    // Its page cache is bounded well below sled's 1 GiB default: the
    // informers hold every live object in memory already, so sled's cache
    // only serves the few reads they do not (lists at startup, history).
    let open = || {
        catch_unwind(AssertUnwindSafe(|| {
            sled::Config::new()
                .path(dir)
                .flush_every_ms(None)
                .cache_capacity(SLED_CACHE_BYTES)
                .open()
        }))
    };
    // A handle this process closed a moment ago may hold the file lock for
    // a few more milliseconds while sled's own I/O threads let go of it:
    // wait that out (bounded) before calling it another process's lock.
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    let mut opened = open();
    while matches!(&opened, Ok(Err(sled::Error::Io(e))) if is_lock_error(e))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
        opened = open();
    }
    let db = match opened {
        Ok(Ok(db)) => db,
        Ok(Err(sled::Error::Io(e))) => return Err(corrupt(dir, io_reason(&e, "opening the database"))),
        Ok(Err(e)) => {
            return Err(corrupt(
                dir,
                format!("the database files cannot be read ({e}); {MOVE_AWAY}"),
            ));
        }
        Err(_) => {
            return Err(corrupt(
                dir,
                format!("the database files are damaged (sled gave up reading them); {MOVE_AWAY}"),
            ));
        }
    };
    let revision = check_format(dir, &db, marked)?;
    if !marked {
        write_marker(dir).map_err(|e| corrupt(dir, io_reason(&e, "writing its format marker")))?;
    }
    Ok((db, revision))
}

/// The marker file: says "a store of this format lives here" outside sled,
/// so damaged sled files that sled opens as empty are not taken for a new
/// store, and a newer format is recognised before sled touches the files.
const MARKER_FILE: &str = "SHTURMAN_STORE";

/// Reads the marker file: whether it is there, checking its format.
fn read_marker(dir: &Path) -> Result<bool, StoreError> {
    let raw = match std::fs::read(dir.join(MARKER_FILE)) {
        Ok(raw) => raw,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(corrupt(dir, io_reason(&e, "reading its format marker"))),
    };
    let version = std::str::from_utf8(&raw)
        .ok()
        .map(str::trim)
        .and_then(|t| t.strip_prefix("shturman-store format "))
        .and_then(|v| v.parse::<u32>().ok())
        .ok_or_else(|| corrupt(dir, format!("its {MARKER_FILE} file is damaged; {MOVE_AWAY}")))?;
    check_version(dir, version)?;
    Ok(true)
}

fn check_version(dir: &Path, version: u32) -> Result<(), StoreError> {
    if version > FORMAT_VERSION {
        return Err(corrupt(
            dir,
            format!(
                "it was written by a newer Shturman (store format {version}; this one reads format \
                 {FORMAT_VERSION}); upgrade Shturman, or pick another --data-dir"
            ),
        ));
    }
    if version < FORMAT_VERSION {
        return Err(corrupt(
            dir,
            format!("it uses store format {version}, which this Shturman cannot read; {MOVE_AWAY}"),
        ));
    }
    Ok(())
}

/// Refuses an unmarked directory holding anything but sled's own files (a
/// store interrupted while being created), so a mistyped --data-dir never
/// turns someone's directory into a store.
fn refuse_foreign_files(dir: &Path) -> Result<(), StoreError> {
    let entries = std::fs::read_dir(dir).map_err(|e| corrupt(dir, io_reason(&e, "reading it")))?;
    for entry in entries {
        let entry = entry.map_err(|e| corrupt(dir, io_reason(&e, "reading it")))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let sleds_own =
            matches!(name.as_ref(), "conf" | "db" | "blobs" | WAL_FILE) || name.starts_with("snap.");
        if !sleds_own {
            return Err(corrupt(
                dir,
                format!(
                    "it is not empty ({name} is there) and holds no Shturman store; pick an empty or new \
                     --data-dir"
                ),
            ));
        }
    }
    Ok(())
}

/// Writes the marker file durably (temporary file, fsync, rename, fsync dir).
fn write_marker(dir: &Path) -> io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{MARKER_FILE}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    writeln!(file, "shturman-store format {FORMAT_VERSION}")?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(MARKER_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Checks the format key (writing it into an empty, unmarked database) and
/// reads the committed revision.
fn check_format(dir: &Path, db: &sled::Db, marked: bool) -> Result<Revision, StoreError> {
    let read_err = |e: sled::Error| corrupt(dir, format!("reading the database failed ({e}); {MOVE_AWAY}"));
    let Some(raw) = db.get(FORMAT_KEY).map_err(read_err)? else {
        if marked {
            return Err(corrupt(
                dir,
                format!("the store's data is missing or damaged; {MOVE_AWAY}"),
            ));
        }
        if !db.is_empty() {
            return Err(corrupt(
                dir,
                "it holds a database that is not a Shturman store (no format marker); pick another --data-dir",
            ));
        }
        let mut batch = sled::Batch::default();
        batch.insert(FORMAT_KEY, &FORMAT_VERSION.to_be_bytes());
        batch.insert(REVISION_KEY, &0u64.to_be_bytes());
        db.apply_batch(batch).map_err(read_err)?;
        db.flush().map_err(read_err)?;
        tracing::info!(dir = %dir.display(), "created a new store");
        return Ok(0);
    };
    let version = raw
        .as_ref()
        .first_chunk::<4>()
        .map(|b| u32::from_be_bytes(*b))
        .ok_or_else(|| corrupt(dir, format!("the store's format key is damaged; {MOVE_AWAY}")))?;
    check_version(dir, version)?;
    let raw = db.get(REVISION_KEY).map_err(read_err)?.ok_or_else(|| {
        corrupt(
            dir,
            format!("the store's revision counter is missing; {MOVE_AWAY}"),
        )
    })?;
    decode_revision(&raw).ok_or_else(|| {
        corrupt(
            dir,
            format!("the store's revision counter is damaged; {MOVE_AWAY}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_prefixes_do_not_leak() {
        for key in [
            Key::new("pods", "default", "web-1"),
            Key::new("nodes", "", "pi-4"),
            Key::new("configmaps", "a/b", "x%2Fy/%"),
        ] {
            assert_eq!(parse_object_key(&object_key(&key)), Some(key.clone()));
            assert!(object_key(&key).starts_with(&prefix_key(&Prefix::new(key.resource.clone(), None))));
        }
        let metrics = object_key(&Key::new("pods.metrics", "default", "x"));
        assert!(!metrics.starts_with(&prefix_key(&Prefix::new("pods", None))));
        let other_ns = object_key(&Key::new("pods", "defaults", "x"));
        assert!(!other_ns.starts_with(&prefix_key(&Prefix::new("pods", Some("default".into())))));
        assert_eq!(parse_object_key(b"v1/o/pods/x"), None);
        assert_eq!(parse_object_key(b"v1/o/pods/x/y/z"), None);
    }

    #[test]
    fn values_round_trip() {
        let raw = encode_value(42, b"hello");
        assert_eq!(
            decode_value(&raw),
            Some(Versioned {
                value: b"hello".to_vec(),
                revision: 42
            })
        );
        assert_eq!(decode_value(b"short"), None);
    }
}
