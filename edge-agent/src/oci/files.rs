//! A pod's files on the node before its containers are created (blocking
//! I/O: call from a blocking context): the log directories containerd writes
//! into, the `emptyDir`/`configMap`/`secret` volumes (the Wasm runtime's
//! [`materialize`]), `hostPath` volumes checked or created per their `type`,
//! and `subPath` directories.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use shturman_api::core::pod::HostPathType;
use shturman_api::wire::DesiredPod;

use super::spec::PodPaths;
use crate::wasm::volumes::{VolumeError, materialize, relative};

/// Why a pod's files cannot be prepared (`CreateContainerConfigError`).
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error("volume {name:?}: hostPath {path:?} must be {want:?} but {found}")]
    HostPath {
        name: String,
        path: String,
        want: HostPathType,
        found: String,
    },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FilesError + 'a {
    move |source| FilesError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Writes everything the pod's containers mount or log to.
pub fn prepare(paths: &PodPaths, pod: &DesiredPod) -> Result<(), FilesError> {
    let logs = paths.logs();
    for c in &pod.pod.spec.containers {
        let dir = logs.join(relative(&c.name, &c.name)?);
        fs::create_dir_all(&dir).map_err(io_err("creating the log directory", &dir))?;
    }
    materialize(&paths.dir, pod)?;
    for v in &pod.pod.spec.volumes {
        if let Some(h) = &v.host_path {
            host_path(&v.name, Path::new(&h.path), h.type_.unwrap_or_default())?;
        }
    }
    // subPaths that do not exist yet are created (as kubelet does).
    for c in &pod.pod.spec.containers {
        for m in &c.volume_mounts {
            let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) else {
                continue;
            };
            let Some(v) = pod.pod.spec.volumes.iter().find(|v| v.name == m.name) else {
                continue; // reported when the mounts are built
            };
            let base = match &v.host_path {
                Some(h) => PathBuf::from(&h.path),
                None => paths.dir.join("volumes").join(relative(&v.name, &v.name)?),
            };
            let dir = base.join(relative(&v.name, sub)?);
            if !dir.exists() {
                fs::create_dir_all(&dir).map_err(io_err("creating the subPath", &dir))?;
            }
        }
    }
    Ok(())
}

/// Checks (or creates) a hostPath per its type.
fn host_path(name: &str, path: &Path, want: HostPathType) -> Result<(), FilesError> {
    use std::os::unix::fs::FileTypeExt;
    let mismatch = |found: &str| FilesError::HostPath {
        name: name.into(),
        path: path.display().to_string(),
        want,
        found: found.into(),
    };
    match want {
        HostPathType::Unset => return Ok(()),
        HostPathType::DirectoryOrCreate if !path.exists() => {
            return fs::create_dir_all(path).map_err(io_err("creating the hostPath", path));
        }
        HostPathType::FileOrCreate if !path.exists() => {
            return fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map(drop)
                .map_err(io_err("creating the hostPath", path));
        }
        _ => {}
    }
    let meta = fs::metadata(path).map_err(|_| mismatch("it does not exist"))?;
    let t = meta.file_type();
    let ok = match want {
        HostPathType::Directory | HostPathType::DirectoryOrCreate => t.is_dir(),
        HostPathType::File | HostPathType::FileOrCreate => t.is_file(),
        HostPathType::Socket => t.is_socket(),
        HostPathType::CharDevice => t.is_char_device(),
        HostPathType::BlockDevice => t.is_block_device(),
        HostPathType::Unset => true,
    };
    if ok {
        Ok(())
    } else {
        Err(mismatch("it is something else"))
    }
}

/// Removes a pod's dir (stopped for good).
pub fn remove_pod_dir(paths: &PodPaths) {
    if let Err(e) = fs::remove_dir_all(&paths.dir)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %paths.dir.display(), error = %e, "cannot remove a pod's directory");
    }
}

/// Removes the log files of runs before `keep_from` of a container (kubelet
/// keeps the current and the previous run).
pub fn prune_logs(paths: &PodPaths, container: &str, keep_from: u32) {
    for (n, p) in super::logs::runs(&paths.logs().join(container)) {
        if n < keep_from {
            let _ = fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::PodKey;
    use shturman_api::core::container::VolumeMount;
    use shturman_api::core::pod::{EmptyDirVolumeSource, HostPathVolumeSource};
    use shturman_api::core::{Container, Pod, Volume};

    #[test]
    fn prepares_logs_volumes_and_host_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let host = tmp.path().join("host");
        let file = tmp.path().join("f.txt");
        std::fs::write(&file, "x").unwrap();
        let mut pod = Pod::default();
        let hp = |name: &str, path: &Path, t| Volume {
            name: name.into(),
            host_path: Some(HostPathVolumeSource {
                path: path.display().to_string(),
                type_: Some(t),
            }),
            ..Volume::default()
        };
        pod.spec.volumes = vec![
            Volume {
                name: "scratch".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            },
            hp("made", &host, HostPathType::DirectoryOrCreate),
            hp("file", &file, HostPathType::File),
            hp(
                "touched",
                &tmp.path().join("new.sock"),
                HostPathType::FileOrCreate,
            ),
        ];
        pod.spec.containers.push(Container {
            name: "app".into(),
            volume_mounts: vec![VolumeMount {
                name: "scratch".into(),
                mount_path: "/s".into(),
                read_only: None,
                sub_path: Some("a/b".into()),
            }],
            ..Container::default()
        });
        let d = DesiredPod {
            pod,
            ..DesiredPod::default()
        };
        let paths = PodPaths::new(&tmp.path().join("pods"), &PodKey::new("ns", "p"), "u");
        prepare(&paths, &d).unwrap();
        assert!(paths.logs().join("app").is_dir());
        assert!(paths.dir.join("volumes/scratch/a/b").is_dir());
        assert!(host.is_dir());
        assert!(tmp.path().join("new.sock").is_file());

        let mut wrong = d.clone();
        wrong.pod.spec.volumes = vec![hp("dir", &file, HostPathType::Directory)];
        let e = prepare(&paths, &wrong).unwrap_err();
        assert!(e.to_string().contains("must be Directory"), "{e}");
        wrong.pod.spec.volumes = vec![hp("gone", &tmp.path().join("nope"), HostPathType::Socket)];
        let e = prepare(&paths, &wrong).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");

        for n in 0..4 {
            std::fs::write(paths.logs().join("app").join(format!("{n}.log")), "").unwrap();
        }
        prune_logs(&paths, "app", 2);
        let left: Vec<u32> = super::super::logs::runs(&paths.logs().join("app"))
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(left, [2, 3]);
        remove_pod_dir(&paths);
        assert!(!paths.dir.exists());
    }
}
