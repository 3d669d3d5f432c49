//! A private OCI registry (`docker-registry serve`, distribution 2.8) on a free loopback port with storage in a temp dir, optionally behind htpasswd auth; images are pushed to it with skopeo.
//!
//! distribution's htpasswd auth accepts bcrypt hashes only (`openssl passwd
//! -apr1` MD5 hashes are rejected), so the htpasswd file is written here
//! with the `bcrypt` crate: no apache2-utils needed. Auth over plain http is
//! fine on loopback (the registry only logs a warning).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::containerd::{check_output, on_path, run_with_timeout};
use crate::{free_port, wait_for};

/// How long a push may take.
const PUSH_TIMEOUT: Duration = Duration::from_secs(120);

/// A running `docker-registry serve`.
pub struct Registry {
    dir: tempfile::TempDir,
    child: Option<Child>,
    port: u16,
    log: PathBuf,
    creds: Option<(String, String)>,
}

impl Registry {
    /// Starts an open registry (anyone may pull and push).
    pub fn start() -> Result<Registry> {
        Self::spawn(None)
    }

    /// Starts a registry where only `user`/`pass` may pull or push.
    pub fn start_with_auth(user: &str, pass: &str) -> Result<Registry> {
        Self::spawn(Some((user.to_string(), pass.to_string())))
    }

    fn spawn(creds: Option<(String, String)>) -> Result<Registry> {
        for (p, pkg) in [("docker-registry", "docker-registry"), ("skopeo", "skopeo")] {
            if !on_path(p) {
                bail!("{p} is missing (Debian package {pkg}); scripts/setup.sh installs it");
            }
        }
        let dir = tempfile::Builder::new().prefix("reg").tempdir()?;
        let port = free_port();
        let d = dir.path();
        std::fs::create_dir_all(d.join("data"))?;
        let mut config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {data}\n  delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: shturman-e2e-not-secret\n",
            data = d.join("data").display(),
        );
        if let Some((user, pass)) = &creds {
            if user.contains(':') || user.contains('\n') {
                bail!("bad registry user name {user:?}");
            }
            // Cost 4 (bcrypt's minimum): the registry checks the hash on every request.
            let hash = bcrypt::hash(pass, 4).context("bcrypt")?;
            std::fs::write(d.join("htpasswd"), format!("{user}:{hash}\n"))?;
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: shturman-e2e\n    path: {}\n",
                d.join("htpasswd").display()
            ));
        }
        std::fs::write(d.join("config.yml"), config)?;
        let log = d.join("registry.log");
        let file = std::fs::File::create(&log)?;
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve").arg(d.join("config.yml"));
        // The registry lets REGISTRY_* variables override its config file.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("REGISTRY_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("starting docker-registry")?;
        let mut r = Registry {
            child: Some(child),
            port,
            log,
            creds,
            dir,
        };
        r.wait_ready()?;
        Ok(r)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let host = self.host();
        let auth = self.creds.is_some();
        wait_for("the registry to answer /v2/", Duration::from_secs(30), || {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                return Some(Err(anyhow::anyhow!(
                    "docker-registry exited early: {status}\n--- registry.log ---\n{}",
                    self.log_text()
                )));
            }
            // 200 when open, 401 when auth is on.
            let code = v2_status(&host, None)?;
            (code == if auth { 401 } else { 200 }).then_some(Ok(()))
        })
        .map_err(|e| anyhow::anyhow!("{e}\n--- registry.log ---\n{}", self.log_text()))?
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The registry's temp dir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `(user, password)` when auth is on.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.creds.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// What the registry logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The HTTP status of `GET /v2/` with `basic` credentials (`user:pass`), if any.
    pub fn v2_status(&self, basic: Option<(&str, &str)>) -> Option<u16> {
        v2_status(&self.host(), basic)
    }

    /// Pushes the image of the OCI layout at `layout_dir` (its only
    /// `index.json` entry; every platform of a multi-arch index) as
    /// `name:tag`; returns the pullable reference `127.0.0.1:PORT/name:tag`.
    pub fn push_layout(&self, layout_dir: &Path, name_tag: &str) -> Result<String> {
        let dest = format!("{}/{name_tag}", self.host());
        let mut cmd = Command::new("skopeo");
        // --insecure-policy: don't depend on the host's /etc/containers/policy.json.
        cmd.args(["--insecure-policy", "copy", "--all", "--retry-times", "0"])
            .args(["--dest-tls-verify=false"]);
        if let Some((u, p)) = &self.creds {
            cmd.arg("--dest-creds").arg(format!("{u}:{p}"));
        } else {
            cmd.arg("--dest-no-creds");
        }
        cmd.arg(format!("oci:{}", layout_dir.display()))
            .arg(format!("docker://{dest}"));
        let out = run_with_timeout(&mut cmd, PUSH_TIMEOUT).context("running skopeo")?;
        check_output(
            &format!("skopeo copy oci:{} docker://{dest}", layout_dir.display()),
            out,
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "{e}\n--- registry.log ---\n{}",
                crate::containerd::tail(&self.log_text(), 30)
            )
        })?;
        Ok(dest)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `GET http://HOST/v2/` on loopback; the status code, or None when there
/// is no HTTP answer (yet).
fn v2_status(host: &str, basic: Option<(&str, &str)>) -> Option<u16> {
    let mut s = TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = basic
        .map(|(u, p)| {
            format!(
                "Authorization: Basic {}\r\n",
                base64(format!("{u}:{p}").as_bytes())
            )
        })
        .unwrap_or_default();
    let req = format!("GET /v2/ HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Standard base64 with padding (for a Basic auth header).
fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(super::base64(b""), "");
        assert_eq!(super::base64(b"f"), "Zg==");
        assert_eq!(super::base64(b"fo"), "Zm8=");
        assert_eq!(super::base64(b"foo"), "Zm9v");
        assert_eq!(super::base64(b"user:pass"), "dXNlcjpwYXNz");
    }
}
