//! The etcd anchor of `api-create`: a private single-member etcd (Debian's
//! `etcd-server`) on free loopback ports with its data dir on the same
//! filesystem as the control plane's, and durable single-key puts from N
//! concurrent clients (one gRPC connection each), the same count and value
//! size as the API creates. etcd answers a put once its WAL entry is
//! fdatasynced, as Shturman answers a create once sled has flushed.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;

use crate::api_create::Figures;

/// No measured loop runs longer than this.
const TIME_CAP: Duration = Duration::from_secs(60);

/// A private etcd; killed and its data dir removed on drop.
pub struct Etcd {
    child: Child,
    pub url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Etcd {
    /// Starts `etcd` in a temp dir beside the control plane's (the system
    /// temp dir) and waits until it answers a read.
    pub async fn start() -> Result<Etcd> {
        let exe = ["/usr/bin/etcd", "/usr/local/bin/etcd"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .context("etcd is not installed: `apt-get install etcd-server` (scripts/bench.sh does it)")?;
        let dir = tempfile::tempdir_in(std::env::temp_dir())?;
        let (client, peer) = (free_port()?, free_port()?);
        let log = dir.path().join("etcd.log");
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new(exe)
            .args(["--name", "bench", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("bench={peer_url}")])
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

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }

    /// etcd's own count of WAL fdatasyncs and their mean, ms (from its
    /// /metrics): shows its puts were durable, not only how fast they were.
    pub async fn wal_fsyncs(&self) -> Option<(f64, f64)> {
        let text = reqwest::get(format!("{}/metrics", self.url))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let metric = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<f64>().ok())
        };
        let count = metric("etcd_disk_wal_fsync_duration_seconds_count")?;
        let sum = metric("etcd_disk_wal_fsync_duration_seconds_sum")?;
        Some((count, 1000.0 * sum / count.max(1.0)))
    }

    /// Resident memory of the etcd process, MiB.
    pub fn rss_mib(&self) -> Option<f64> {
        crate::procfs::rss_kib(self.child.id())
            .ok()
            .map(crate::procfs::mib)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `objects` puts of `value` under distinct keys from `concurrency`
/// clients, each on its own connection.
pub async fn puts(
    etcd: &Etcd,
    objects: usize,
    concurrency: usize,
    value: &[u8],
    tag: &str,
) -> Result<Figures> {
    let mut clients = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        clients.push(etcd_client::Client::connect([etcd.url.as_str()], None).await?);
    }
    let value = Arc::new(value.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut client in clients {
        let (value, next, tag) = (value.clone(), next.clone(), tag.to_string());
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3)?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= objects || started.elapsed() > TIME_CAP {
                    return anyhow::Ok(hist);
                }
                let key = format!("/registry/configmaps/default/{tag}-{i}");
                let t = Instant::now();
                client
                    .put(key, value.as_slice(), None)
                    .await
                    .context("etcd put")?;
                hist.record(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX))?;
            }
        }));
    }
    let mut hist = Histogram::<u64>::new(3)?;
    for t in tasks {
        hist.add(t.await??)?;
    }
    Ok(Figures::from_hist(&hist, started.elapsed()))
}
