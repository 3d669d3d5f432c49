//! Volumes as WASI preopens: each `volumeMount` becomes a directory the
//! module sees at its `mountPath`. `emptyDir` is a directory under the pod's
//! data dir, `hostPath` the node's directory, `configMap` and `secret` their
//! keys written as files (secrets `0600`) under the pod dir. Nothing else is
//! preopened. Blocking file I/O: call from a blocking context.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use shturman_api::core::config::base64_decode;
use shturman_api::core::pod::{HostPathType, KeyToPath};
use shturman_api::core::{Container, Volume};
use shturman_api::wire::DesiredPod;

use super::env::{config_map, secret, secret_value};
use crate::fsutil::{create_private_dir, write_atomic};

/// One directory the module sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preopen {
    pub host: PathBuf,
    pub guest: String,
    pub read_only: bool,
}

/// Why a volume cannot be mounted (reported as `CreateContainerConfigError`).
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("volumeMount {0:?}: no volume of that name in the pod")]
    NoSuchVolume(String),
    #[error("volumeMount {name:?}: mountPath {path:?} must be absolute")]
    RelativeMount { name: String, path: String },
    #[error("volume {name:?}: path {path:?} must be relative and stay inside the volume")]
    EscapingPath { name: String, path: String },
    #[error(
        "volume {name:?}: hostPath type {kind:?} is not supported for Wasm pods (WASI preopens directories)"
    )]
    HostPathType { name: String, kind: HostPathType },
    #[error("volume {name:?}: {what} {object:?} not found")]
    SourceMissing {
        name: String,
        what: &'static str,
        object: String,
    },
    #[error("volume {name:?}: key {key:?} not found in {what} {object:?}")]
    KeyMissing {
        name: String,
        what: &'static str,
        object: String,
        key: String,
    },
    #[error("volume {name:?}: {source}")]
    Io {
        name: String,
        #[source]
        source: io::Error,
    },
}

/// Writes the pod's volumes under `pod_dir/volumes/<name>` (emptyDir, configMap, secret).
pub fn materialize(pod_dir: &Path, pod: &DesiredPod) -> Result<(), VolumeError> {
    for v in &pod.pod.spec.volumes {
        let dir = pod_dir.join("volumes").join(safe_name(&v.name)?);
        let io = |source| VolumeError::Io {
            name: v.name.clone(),
            source,
        };
        if v.empty_dir.is_some() {
            fs::create_dir_all(&dir).map_err(io)?;
        } else if let Some(cm) = &v.config_map {
            let files = match config_map(pod, &cm.name) {
                Some(obj) => {
                    let mut all: Vec<(String, Vec<u8>)> = obj
                        .data
                        .iter()
                        .map(|(k, s)| (k.clone(), s.clone().into_bytes()))
                        .collect();
                    for (k, b) in &obj.binary_data {
                        if let Ok(bytes) = base64_decode(b) {
                            all.push((k.clone(), bytes));
                        }
                    }
                    select(v, "configmap", &cm.name, &cm.items, all)?
                }
                None if cm.optional == Some(true) => Vec::new(),
                None => return Err(missing(v, "configmap", &cm.name)),
            };
            write_files(&dir, &files, 0o644).map_err(io)?;
        } else if let Some(sv) = &v.secret {
            let files = match secret(pod, &sv.secret_name) {
                Some(obj) => {
                    let all = obj
                        .data
                        .keys()
                        .chain(obj.string_data.keys())
                        .filter_map(|k| secret_value(obj, k).map(|b| (k.clone(), b)))
                        .collect();
                    select(v, "secret", &sv.secret_name, &sv.items, all)?
                }
                None if sv.optional == Some(true) => Vec::new(),
                None => return Err(missing(v, "secret", &sv.secret_name)),
            };
            create_private_dir(&dir).map_err(io)?;
            write_files(&dir, &files, 0o600).map_err(io)?;
        }
    }
    Ok(())
}

/// The preopens of one container: its `volumeMounts`, resolved against the
/// pod's volumes (`hostPath` directories are checked or created here).
pub fn preopens(pod_dir: &Path, pod: &DesiredPod, c: &Container) -> Result<Vec<Preopen>, VolumeError> {
    let mut out = Vec::new();
    for m in &c.volume_mounts {
        let v = pod
            .pod
            .spec
            .volumes
            .iter()
            .find(|v| v.name == m.name)
            .ok_or_else(|| VolumeError::NoSuchVolume(m.name.clone()))?;
        if !m.mount_path.starts_with('/') {
            return Err(VolumeError::RelativeMount {
                name: m.name.clone(),
                path: m.mount_path.clone(),
            });
        }
        let mut read_only = m.read_only == Some(true);
        let mut host = if let Some(h) = &v.host_path {
            let kind = h.type_.unwrap_or_default();
            let p = PathBuf::from(&h.path);
            match kind {
                HostPathType::DirectoryOrCreate => {
                    fs::create_dir_all(&p).map_err(|source| VolumeError::Io {
                        name: v.name.clone(),
                        source,
                    })?
                }
                HostPathType::Unset | HostPathType::Directory => {}
                other => {
                    return Err(VolumeError::HostPathType {
                        name: v.name.clone(),
                        kind: other,
                    });
                }
            }
            p
        } else {
            // configMap and secret volumes are read-only, as in Kubernetes.
            read_only |= v.config_map.is_some() || v.secret.is_some();
            pod_dir.join("volumes").join(safe_name(&v.name)?)
        };
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            host = host.join(relative(&v.name, sub)?);
            fs::create_dir_all(&host).map_err(|source| VolumeError::Io {
                name: v.name.clone(),
                source,
            })?;
        }
        out.push(Preopen {
            host,
            guest: m.mount_path.clone(),
            read_only,
        });
    }
    Ok(out)
}

fn missing(v: &Volume, what: &'static str, object: &str) -> VolumeError {
    VolumeError::SourceMissing {
        name: v.name.clone(),
        what,
        object: object.into(),
    }
}

/// The files of a configMap/secret volume: every key, or just `items`.
fn select(
    v: &Volume,
    what: &'static str,
    object: &str,
    items: &[KeyToPath],
    all: Vec<(String, Vec<u8>)>,
) -> Result<Vec<(PathBuf, Vec<u8>)>, VolumeError> {
    if items.is_empty() {
        return all
            .into_iter()
            .map(|(k, b)| Ok((relative(&v.name, &k)?, b)))
            .collect();
    }
    items
        .iter()
        .map(|it| {
            let bytes = all
                .iter()
                .find(|(k, _)| *k == it.key)
                .map(|(_, b)| b.clone())
                .ok_or_else(|| VolumeError::KeyMissing {
                    name: v.name.clone(),
                    what,
                    object: object.into(),
                    key: it.key.clone(),
                })?;
            Ok((relative(&v.name, &it.path)?, bytes))
        })
        .collect()
}

fn write_files(dir: &Path, files: &[(PathBuf, Vec<u8>)], mode: u32) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    for (rel, bytes) in files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        write_atomic(&path, bytes, mode)?;
    }
    Ok(())
}

/// A path that stays inside its volume: relative, no `..`, not empty.
pub fn relative(volume: &str, path: &str) -> Result<PathBuf, VolumeError> {
    let p = Path::new(path);
    let ok = !path.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(p.to_path_buf())
    } else {
        Err(VolumeError::EscapingPath {
            name: volume.into(),
            path: path.into(),
        })
    }
}

fn safe_name(name: &str) -> Result<&str, VolumeError> {
    if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
        return Err(VolumeError::EscapingPath {
            name: name.into(),
            path: name.into(),
        });
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_volume() {
        assert_eq!(relative("v", "a/b.txt").unwrap(), PathBuf::from("a/b.txt"));
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "./x"] {
            assert!(relative("v", bad).is_err(), "{bad}");
        }
        assert!(safe_name("..").is_err());
    }
}
