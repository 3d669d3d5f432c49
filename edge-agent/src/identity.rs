//! The node's identity, kept in `<data-dir>/identity` (mode 0600): the node
//! name it belongs to, the node secret (32 random bytes, hex) that keys every
//! [`Signed`](shturman_api::wire::Signed) message and is the MQTT password
//! once joined, the start counter used as `Stamp.epoch`, and whether the
//! control plane has accepted the join.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::sign;

/// File name inside the data dir.
pub const FILE: &str = "identity";

/// What the node remembers about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Identity {
    pub node_name: String,
    /// Hex of 32 random bytes; never leaves the node except in the JoinRequest.
    pub node_secret: String,
    /// Incremented on every start; the `epoch` of every [`Stamp`](shturman_api::wire::Stamp).
    pub epoch: u64,
    /// The control plane accepted this node's join.
    #[serde(default)]
    pub joined: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read or write {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is damaged ({reason}); move it away to make this a new node (it must join again)")]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "{path} belongs to node {found:?}, not {wanted:?}: give each node its own --data-dir, or use --node-name {found}"
    )]
    OtherNode {
        path: PathBuf,
        found: String,
        wanted: String,
    },
    #[error("no random bytes from the operating system: {0}")]
    Random(String),
}

impl Identity {
    /// Loads the identity (creating one on first start), increments the epoch
    /// and saves it before returning, so two runs never share an epoch.
    pub fn start(data_dir: &Path, node_name: &str) -> Result<Identity, IdentityError> {
        let path = data_dir.join(FILE);
        let io_err = |source| IdentityError::Io {
            path: path.clone(),
            source,
        };
        fsutil::create_private_dir(data_dir).map_err(io_err)?;
        let mut id = match std::fs::read(&path) {
            Ok(bytes) => {
                let id: Identity = serde_json::from_slice(&bytes).map_err(|e| IdentityError::Corrupt {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                if id.node_name != node_name {
                    return Err(IdentityError::OtherNode {
                        path,
                        found: id.node_name,
                        wanted: node_name.to_string(),
                    });
                }
                if sign::decode_hex(&id.node_secret).is_none_or(|b| b.len() < 32) {
                    return Err(IdentityError::Corrupt {
                        path,
                        reason: "the node secret is not 32 bytes of hex".into(),
                    });
                }
                id
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Identity {
                node_name: node_name.to_string(),
                node_secret: new_secret()?,
                epoch: 0,
                joined: false,
            },
            Err(e) => return Err(io_err(e)),
        };
        id.epoch = id.epoch.saturating_add(1);
        id.save(data_dir)?;
        Ok(id)
    }

    /// Writes the identity atomically, mode 0600.
    pub fn save(&self, data_dir: &Path) -> Result<(), IdentityError> {
        let path = data_dir.join(FILE);
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| IdentityError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        fsutil::write_atomic(&path, &bytes, 0o600).map_err(|source| IdentityError::Io { path, source })
    }
}

/// 32 random bytes from the OS, hex.
fn new_secret() -> Result<String, IdentityError> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| IdentityError::Random(e.to_string()))?;
    Ok(sign::encode_hex(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_epoch_grows() {
        let dir = tempfile::tempdir().unwrap();
        let a = Identity::start(dir.path(), "pi-1").unwrap();
        assert_eq!(a.epoch, 1);
        assert_eq!(a.node_secret.len(), 64);
        assert!(!a.joined);
        let mut b = Identity::start(dir.path(), "pi-1").unwrap();
        assert_eq!(b.epoch, 2);
        assert_eq!(b.node_secret, a.node_secret);
        b.joined = true;
        b.save(dir.path()).unwrap();
        let c = Identity::start(dir.path(), "pi-1").unwrap();
        assert!(c.joined);
        assert_eq!(c.epoch, 3);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn another_nodes_dir_or_garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        Identity::start(dir.path(), "pi-1").unwrap();
        let e = Identity::start(dir.path(), "pi-2").unwrap_err();
        assert!(e.to_string().contains("belongs to node \"pi-1\""), "{e}");
        std::fs::write(dir.path().join(FILE), "{not json").unwrap();
        assert!(matches!(
            Identity::start(dir.path(), "pi-1"),
            Err(IdentityError::Corrupt { .. })
        ));
    }
}
