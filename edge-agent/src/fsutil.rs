//! Crash-safe file writes for the agent's data dir: write a temp file, fsync
//! it, rename it over the target, fsync the directory. A reader sees the old
//! file or the new one, never half of either; concurrent writers of one path
//! each use their own temp file, and the last rename wins.

use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Makes each temp file's name unique within the process.
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` atomically with permission bits `mode` (unix).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}-{seq}.tmp", std::process::id()));
    let written = write_synced(&tmp, bytes, mode).and_then(|()| fs::rename(&tmp, path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    sync_dir(dir);
    Ok(())
}

/// Writes a new file and fsyncs it.
fn write_synced(tmp: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    let mut f = opts.open(tmp)?;
    #[cfg(unix)]
    {
        // The umask may have narrowed the mode: set it exactly.
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Flushes a directory's entries (best effort; not every OS supports it).
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Creates a directory (and parents) readable only by its owner.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_writers_of_one_path_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("module.wasm");
        let values: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 4096]).collect();
        std::thread::scope(|s| {
            for v in &values {
                let path = &path;
                s.spawn(move || {
                    for _ in 0..25 {
                        write_atomic(path, v, 0o644).expect("a concurrent write");
                    }
                });
            }
        });
        let got = std::fs::read(&path).unwrap();
        assert!(values.contains(&got), "a whole value, not a mix");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["module.wasm"], "no temp file is left behind");
    }
}
