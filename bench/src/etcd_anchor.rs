//! The etcd anchor of `api-create`: a private single-member etcd (Debian's
//! `etcd-server`) on free loopback ports with its data dir on the same
//! filesystem as the control plane's, and durable single-key puts from N
//! concurrent clients (one gRPC connection each), the same count and value
//! size as the API creates. etcd answers a put once its WAL entry is
//! fdatasynced, as Shturman answers a create once its log is synced.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;

use crate::api_create::Figures;

/// No measured loop runs longer than this.
const TIME_CAP: Duration = Duration::from_secs(60);

pub use shturman_e2e::etcd::Etcd;

/// etcd's own count of WAL fdatasyncs and their mean, ms (from its
/// /metrics): shows its puts were durable, not only how fast they were.
pub async fn wal_fsyncs(etcd: &Etcd) -> Option<(f64, f64)> {
    let text = reqwest::get(format!("{}/metrics", etcd.url))
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
pub fn rss_mib(etcd: &Etcd) -> Option<f64> {
    crate::procfs::rss_kib(etcd.pid()).ok().map(crate::procfs::mib)
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
