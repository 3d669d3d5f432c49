//! The offline journal: the node's desired set on its own disk, one JSON file
//! per pod in `<data-dir>/journal/` (`{namespace}_{name}.json`, mode 0600
//! since a [`DesiredPod`] carries the Secrets its pod uses), each written
//! atomically. Loaded at start, before the link is up, so a node that reboots
//! without its control plane brings its pods back.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use shturman_api::wire::DesiredPod;

use crate::fsutil;
use crate::plan::PodKey;

/// Folder inside the data dir.
pub const DIR: &str = "journal";

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("journal: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("journal: {0:?} cannot name a file")]
    BadKey(String),
}

/// The journal folder.
#[derive(Clone, Debug)]
pub struct Journal {
    dir: PathBuf,
}

/// What [`Journal::load`] found.
#[derive(Debug, Default)]
pub struct Loaded {
    pub pods: BTreeMap<PodKey, DesiredPod>,
    /// Files that could not be read, with why (they are left in place).
    pub skipped: Vec<String>,
}

impl Journal {
    /// Opens (creating) `<data_dir>/journal`.
    pub fn open(data_dir: &Path) -> Result<Journal, JournalError> {
        let dir = data_dir.join(DIR);
        fsutil::create_private_dir(&dir).map_err(|source| JournalError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(Journal { dir })
    }

    fn path(&self, key: &PodKey) -> Result<PathBuf, JournalError> {
        let ok = |s: &str| {
            !s.is_empty()
                && !s.starts_with('.')
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        };
        if !ok(&key.namespace) || !ok(&key.name) {
            return Err(JournalError::BadKey(key.to_string()));
        }
        Ok(self.dir.join(format!("{}_{}.json", key.namespace, key.name)))
    }

    /// Every pod in the journal; unreadable files are reported, not fatal.
    pub fn load(&self) -> Result<Loaded, JournalError> {
        let io_err = |source| JournalError::Io {
            path: self.dir.clone(),
            source,
        };
        let mut out = Loaded::default();
        let mut names: Vec<_> = std::fs::read_dir(&self.dir)
            .map_err(io_err)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter(|p| {
                !p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        names.sort();
        for path in names {
            let parsed = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<DesiredPod>(&b).map_err(|e| e.to_string()));
            match parsed {
                Ok(dp) => {
                    let key = PodKey::of(&dp.pod);
                    if self.path(&key).ok().as_ref() == Some(&path) {
                        out.pods.insert(key, dp);
                    } else {
                        out.skipped.push(format!("{}: holds pod {key}", path.display()));
                    }
                }
                Err(e) => out.skipped.push(format!("{}: {e}", path.display())),
            }
        }
        Ok(out)
    }

    /// Records `pod` (atomically, 0600).
    pub fn put(&self, key: &PodKey, pod: &DesiredPod) -> Result<(), JournalError> {
        let path = self.path(key)?;
        let bytes = serde_json::to_vec(pod)?;
        fsutil::write_atomic(&path, &bytes, 0o600).map_err(|source| JournalError::Io { path, source })
    }

    /// Forgets a pod.
    pub fn remove(&self, key: &PodKey) -> Result<(), JournalError> {
        let path = self.path(key)?;
        match std::fs::remove_file(&path) {
            Ok(()) => {
                fsutil::sync_dir(&self.dir);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(JournalError::Io { path, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shturman_api::core::{Pod, Secret};

    fn desired(ns: &str, name: &str) -> DesiredPod {
        let mut pod = Pod::default();
        pod.metadata.name = Some(name.into());
        pod.metadata.namespace = Some(ns.into());
        pod.metadata.uid = Some(format!("uid-{name}"));
        let mut secret = Secret::default();
        secret.metadata.name = Some("creds".into());
        secret.string_data.insert("password".into(), "hunter2".into());
        DesiredPod {
            pod,
            secrets: vec![secret],
            ..DesiredPod::default()
        }
    }

    #[test]
    fn round_trip_remove_and_skip_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let a = desired("default", "web-1");
        let b = desired("prod", "db.0");
        j.put(&PodKey::of(&a.pod), &a).unwrap();
        j.put(&PodKey::of(&b.pod), &b).unwrap();
        std::fs::write(dir.path().join(DIR).join("junk.json"), "{").unwrap();
        let loaded = Journal::open(dir.path()).unwrap().load().unwrap();
        assert_eq!(loaded.pods.len(), 2);
        assert_eq!(loaded.pods[&PodKey::of(&a.pod)], a);
        assert_eq!(loaded.skipped.len(), 1, "{:?}", loaded.skipped);
        j.remove(&PodKey::of(&a.pod)).unwrap();
        j.remove(&PodKey::of(&a.pod)).unwrap();
        assert_eq!(j.load().unwrap().pods.len(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let f = dir.path().join(DIR).join("prod_db.0.json");
            assert_eq!(std::fs::metadata(f).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }

    #[test]
    fn hostile_keys_never_name_files() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        for (ns, name) in [("..", "x"), ("a", "../b"), ("a/b", "c"), ("", "x"), ("A", "x")] {
            let key = PodKey {
                namespace: ns.into(),
                name: name.into(),
            };
            assert!(j.put(&key, &DesiredPod::default()).is_err(), "{key}");
        }
    }
}
