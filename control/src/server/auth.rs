//! The admin token and `admin.conf`: generated on first start, kept in the data
//! dir (mode 0600), checked on every request in constant time.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rand::Rng;

const TOKEN_FILE: &str = "admin.token";
const ADMIN_CONF: &str = "admin.conf";

/// Reads the admin token, creating one on first start.
pub fn load_or_create_token(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join(TOKEN_FILE);
    match fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let bytes: [u8; 24] = rand::rng().random();
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_private(&path, token.as_bytes())?;
    Ok(token)
}

/// Writes `<data-dir>/admin.conf`: a kubeconfig naming the server and the
/// admin token, readable by `shturman` and by kubectl.
pub fn write_admin_conf(data_dir: &Path, url: &str, token: &str) -> std::io::Result<PathBuf> {
    let path = data_dir.join(ADMIN_CONF);
    let text = format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: shturman\n  cluster:\n    server: {url}\n\
         users:\n\
         - name: admin\n  user:\n    token: {token}\n\
         contexts:\n\
         - name: shturman\n  context:\n    cluster: shturman\n    user: admin\n\
         current-context: shturman\n"
    );
    write_private(&path, text.as_bytes())?;
    Ok(path)
}

/// Writes a file readable by its owner only, atomically (temp file + rename).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
}

/// Whether an `Authorization` header value carries `token`, compared in
/// constant time.
pub fn bearer_matches(header: Option<&str>, token: &str) -> bool {
    let Some(given) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return false;
    };
    let (a, b) = (given.trim().as_bytes(), token.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let t1 = load_or_create_token(dir.path()).unwrap();
        let t2 = load_or_create_token(dir.path()).unwrap();
        assert_eq!(t1, t2);
        assert_eq!(t1.len(), 48);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(TOKEN_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn bearer_checks() {
        assert!(bearer_matches(Some("Bearer abc"), "abc"));
        assert!(!bearer_matches(Some("Bearer abd"), "abc"));
        assert!(!bearer_matches(Some("Basic abc"), "abc"));
        assert!(!bearer_matches(Some("Bearer ab"), "abc"));
        assert!(!bearer_matches(None, "abc"));
    }

    #[test]
    fn admin_conf_names_server_and_token() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_admin_conf(dir.path(), "http://127.0.0.1:1", "tok").unwrap();
        let text = fs::read_to_string(p).unwrap();
        assert!(text.contains("server: http://127.0.0.1:1\n"));
        assert!(text.contains("token: tok\n"));
        assert!(text.contains("current-context: shturman"));
    }
}
