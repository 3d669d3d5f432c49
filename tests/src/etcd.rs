//! A private single-member etcd (Debian's `etcd-server`) on free loopback
//! ports with its data in its own temp dir: the etcd store's tests and the
//! benchmarks' etcd anchor start one each. Killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::free_port;

/// A running etcd.
pub struct Etcd {
    child: Child,
    /// The client URL, `http://127.0.0.1:PORT`.
    pub url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts `etcd` in a new temp dir and waits until it answers a read.
    pub async fn start() -> Result<Etcd> {
        let exe = ["/usr/bin/etcd", "/usr/local/bin/etcd"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .context("etcd is not installed: `apt-get install etcd-server` (scripts/setup.sh does it)")?;
        let dir = tempfile::tempdir_in(std::env::temp_dir())?;
        let (client, peer) = (free_port(), free_port());
        let log = dir.path().join("etcd.log");
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new(exe)
            .args(["--name", "solo", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("solo={peer_url}")])
            .args([
                "--initial-cluster-state",
                "new",
                "--logger",
                "zap",
                "--log-level",
                "warn",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting etcd")?;
        let mut etcd = Etcd {
            child,
            url,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut c) = etcd_client::Client::connect([etcd.url.as_str()], None).await
                && c.get("/ready", None).await.is_ok()
            {
                return Ok(etcd);
            }
            if let Ok(Some(status)) = etcd.child.try_wait() {
                bail!("etcd exited ({status}): {}", etcd.log_tail());
            }
            if Instant::now() > deadline {
                bail!("etcd did not answer in 30 s: {}", etcd.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`STOP`, `CONT`, …) to etcd.
    pub fn signal(&self, sig: &str) -> Result<()> {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -{sig} etcd failed: {status}");
        }
        Ok(())
    }

    /// The last lines etcd logged.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
