//! The sled store's write-ahead log: what makes a write durable.
//!
//! sled's own flush costs several syncs; one append and one `fdatasync` on
//! a preallocated file cost one. The store's flusher appends each group of
//! applied changes here and syncs once before it answers the writers; every
//! [`SEGMENT`] bytes (and on close) it flushes sled and starts the log over
//! from offset 0 (a checkpoint). On open, the records sled does not have yet
//! are applied to it again.
//!
//! A record is `len u32 | crc32 u32 | payload`, payload `revision u64 |
//! op u8 | key_len u32 | key | value` (big-endian). The file is preallocated
//! with zeros, so a sync writes data, not a growing file's metadata. Reading
//! stops at the first record that is empty (zeros), torn (bad length or
//! checksum) or not newer than the one before it — after a checkpoint the
//! old records beyond the new tail have older revisions, so they are never
//! taken for new ones.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::Revision;

/// The preallocated size; reaching it triggers a checkpoint.
pub(crate) const SEGMENT: u64 = 16 << 20;

const HEADER: usize = 8;
const PAYLOAD_FIXED: usize = 8 + 1 + 4;
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;

/// One change as sled stores it: the raw key and the raw value (`None`: the
/// key was removed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    pub revision: Revision,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// The open log: its file and where the next record goes.
pub(crate) struct Wal {
    file: File,
    end: u64,
}

impl Wal {
    /// Opens (creating and preallocating) `path`; returns the log positioned
    /// after its valid records, and those records.
    pub(crate) fn open(path: &Path) -> io::Result<(Wal, Vec<Record>)> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let mut raw = Vec::new();
        file.read_to_end(&mut raw)?;
        let (records, end) = decode_all(&raw);
        let len = u64::try_from(raw.len()).unwrap_or(u64::MAX);
        if len < SEGMENT {
            file.seek(SeekFrom::Start(len))?;
            let zeros = vec![0u8; 1 << 20];
            let mut left = SEGMENT - len;
            while left > 0 {
                let n = usize::try_from(left.min(zeros.len() as u64)).unwrap_or(zeros.len());
                file.write_all(&zeros[..n])?;
                left -= n as u64;
            }
            file.sync_all()?;
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
        }
        Ok((Wal { file, end }, records))
    }

    /// Bytes used since the last checkpoint.
    pub(crate) fn used(&self) -> u64 {
        self.end
    }

    /// Appends `records` and syncs them: durable once this returns.
    pub(crate) fn append(&mut self, records: &[Record]) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for r in records {
            encode(r, &mut buf);
        }
        self.file.seek(SeekFrom::Start(self.end))?;
        self.file.write_all(&buf)?;
        self.file.sync_data()?;
        self.end += buf.len() as u64;
        Ok(())
    }

    /// Starts over at offset 0: every record is in sled, flushed. The old
    /// records stay in the file until overwritten; reading stops at them
    /// (older revisions), so nothing needs zeroing.
    pub(crate) fn checkpointed(&mut self) {
        self.end = 0;
    }
}

fn encode(r: &Record, out: &mut Vec<u8>) {
    let value = r.value.as_deref().unwrap_or_default();
    let payload_len = PAYLOAD_FIXED + r.key.len() + value.len();
    let start = out.len();
    out.extend_from_slice(&u32::try_from(payload_len).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&r.revision.to_be_bytes());
    out.push(if r.value.is_some() { OP_PUT } else { OP_DELETE });
    out.extend_from_slice(&u32::try_from(r.key.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&r.key);
    out.extend_from_slice(value);
    let crc = crc32fast::hash(&out[start + HEADER..]);
    out[start + 4..start + HEADER].copy_from_slice(&crc.to_be_bytes());
}

/// The valid records at the head of `raw`, and where they end.
fn decode_all(raw: &[u8]) -> (Vec<Record>, u64) {
    let mut records = Vec::new();
    let mut at = 0usize;
    let mut last: Revision = 0;
    while let Some((record, next)) = decode_one(raw, at) {
        if record.revision <= last {
            break;
        }
        last = record.revision;
        records.push(record);
        at = next;
    }
    (records, at as u64)
}

fn decode_one(raw: &[u8], at: usize) -> Option<(Record, usize)> {
    let header = raw.get(at..at + HEADER)?;
    let len = usize::try_from(u32::from_be_bytes(header[..4].try_into().ok()?)).ok()?;
    let crc = u32::from_be_bytes(header[4..].try_into().ok()?);
    if len < PAYLOAD_FIXED {
        return None;
    }
    let payload = raw.get(at + HEADER..at + HEADER + len)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let revision = Revision::from_be_bytes(payload[..8].try_into().ok()?);
    let op = payload[8];
    let key_len = usize::try_from(u32::from_be_bytes(payload[9..13].try_into().ok()?)).ok()?;
    let key = payload.get(PAYLOAD_FIXED..PAYLOAD_FIXED + key_len)?.to_vec();
    let value = payload.get(PAYLOAD_FIXED + key_len..)?.to_vec();
    let value = match op {
        OP_PUT => Some(value),
        OP_DELETE if value.is_empty() => None,
        _ => return None,
    };
    Some((Record { revision, key, value }, at + HEADER + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(revision: Revision, key: &str, value: &str) -> Record {
        Record {
            revision,
            key: key.as_bytes().to_vec(),
            value: Some(value.as_bytes().to_vec()),
        }
    }

    fn del(revision: Revision, key: &str) -> Record {
        Record {
            revision,
            key: key.as_bytes().to_vec(),
            value: None,
        }
    }

    #[test]
    fn records_survive_a_reopen_and_the_file_is_preallocated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut wal, none) = Wal::open(&path).unwrap();
        assert!(none.is_empty());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), SEGMENT);
        let batch = [put(1, "a", "one"), put(2, "b", ""), del(3, "a")];
        wal.append(&batch).unwrap();
        wal.append(&[put(4, "c", "four")]).unwrap();
        drop(wal);
        let (wal, got) = Wal::open(&path).unwrap();
        assert_eq!(got, [&batch[..], &[put(4, "c", "four")]].concat());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), SEGMENT);
        assert!(wal.used() > 0);
    }

    #[test]
    fn a_torn_tail_ends_the_log_where_the_damage_starts() {
        let mut raw = Vec::new();
        encode(&put(1, "a", "one"), &mut raw);
        let good = raw.len();
        encode(&put(2, "b", "two"), &mut raw);
        // A torn second record: cut short, or a flipped byte.
        assert_eq!(
            decode_all(&raw[..raw.len() - 1]),
            (vec![put(1, "a", "one")], good as u64)
        );
        let mut flipped = raw.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        assert_eq!(decode_all(&flipped).0, [put(1, "a", "one")]);
        // Zeros (the preallocated rest) end it too.
        raw.extend_from_slice(&[0; 64]);
        assert_eq!(decode_all(&raw).0, [put(1, "a", "one"), put(2, "b", "two")]);
        assert_eq!(decode_all(&[0xff; 3]).0, []);
    }

    #[test]
    fn after_a_checkpoint_old_records_beyond_the_new_tail_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut wal, _) = Wal::open(&path).unwrap();
        wal.append(&[
            put(1, "a", "a long first value"),
            put(2, "b", "two"),
            put(3, "c", "3"),
        ])
        .unwrap();
        wal.checkpointed();
        wal.append(&[put(4, "d", "4")]).unwrap();
        drop(wal);
        let (_, got) = Wal::open(&path).unwrap();
        assert_eq!(got, [put(4, "d", "4")]);
    }
}
