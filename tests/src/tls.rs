//! Throwaway TLS for end-to-end tests, made with the `openssl` command: a
//! test CA and a server certificate for `127.0.0.1` (subjectAltName IP) in a
//! test's temp dir, and `openssl s_server -WWW` serving a directory over
//! https on a free loopback port (HTTP/1.0, close-delimited bodies).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::{free_port, wait_for};

/// A CA (`ca.pem`, the file to trust) and a server certificate it signed.
pub struct TestCerts {
    pub ca_pem: PathBuf,
    pub server_pem: PathBuf,
    pub server_key: PathBuf,
}

/// Runs `openssl args…` in `dir`; fails with its output.
fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .context("running openssl (install the openssl package)")?;
    if !out.status.success() {
        bail!(
            "openssl {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Makes a P-256 CA (named after `dir`) and a server certificate for IP
/// 127.0.0.1 in `dir`.
pub fn make_certs(dir: &Path) -> Result<TestCerts> {
    std::fs::create_dir_all(dir)?;
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    // Each CA its own name (from its dir), so two never look alike.
    let subject = format!(
        "/CN=shturman e2e test CA {}",
        dir.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
    );
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        &subject,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &ca)?;
    let mut csr = vec!["req", "-new"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(dir, &csr)?;
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    )?;
    Ok(TestCerts {
        ca_pem: dir.join("ca.pem"),
        server_pem: dir.join("server.pem"),
        server_key: dir.join("server.key"),
    })
}

/// `openssl s_server -WWW`: serves the files of its root over https.
pub struct HttpsServer {
    pub port: u16,
    child: Option<Child>,
    log: PathBuf,
}

impl HttpsServer {
    /// Serves `root` (files by path relative to it) on a free loopback port;
    /// waits until it accepts connections. Logs to `<root>/../s_server.log`.
    pub fn start(root: &Path, certs: &TestCerts) -> Result<HttpsServer> {
        let port = free_port();
        let log = root.parent().unwrap_or(root).join(format!("s_server-{port}.log"));
        let file = std::fs::File::create(&log)?;
        let child = Command::new("openssl")
            .args(["s_server", "-accept", &format!("127.0.0.1:{port}"), "-WWW"])
            .arg("-cert")
            .arg(&certs.server_pem)
            .arg("-key")
            .arg(&certs.server_key)
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("starting openssl s_server (install the openssl package)")?;
        let mut server = HttpsServer {
            port,
            child: Some(child),
            log,
        };
        wait_for("openssl s_server to listen", Duration::from_secs(20), || {
            if let Some(c) = server.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                return Some(Err(anyhow::anyhow!(
                    "openssl s_server exited: {status}\n{}",
                    server.log_text()
                )));
            }
            TcpStream::connect(("127.0.0.1", port)).ok().map(|_| Ok(()))
        })??;
        Ok(server)
    }

    /// `https://127.0.0.1:<port>/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}/{path}", self.port)
    }

    /// What the server printed (one `FILE:<path>` line per file it served).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
