//! API create throughput and latency with durable writes (sled, its log synced
//! before the answer), next to etcd's durable puts at the same concurrency
//! on the same disk (src/etcd_anchor.rs; goal: at least twice etcd's
//! throughput), with two references from the same run: a plain write +
//! fdatasync loop on the same disk (one durable write without batching),
//! and the same API on the in-memory store (what durability costs).

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use hdrhistogram::Histogram;
use serde_json::json;

use crate::etcd_anchor::{self, Etcd};
use crate::report::{Goal, Report, Row};
use crate::spawn::Control;

/// No measured loop runs longer than this.
const TIME_CAP: Duration = Duration::from_secs(60);

/// Throughput and latency of one measured loop.
pub struct Figures {
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Figures {
    /// From a histogram of microseconds, over `elapsed`.
    #[allow(clippy::cast_precision_loss)]
    pub fn from_hist(hist: &Histogram<u64>, elapsed: Duration) -> Figures {
        Figures {
            per_sec: hist.len() as f64 / elapsed.as_secs_f64(),
            p50_ms: hist.value_at_quantile(0.5) as f64 / 1000.0,
            p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
        }
    }
}

/// The ConfigMap each create sends (etcd's puts store the same bytes).
fn configmap(name: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"bench": "api-create"}},
        "data": {"key": "a small value, like most config"}})
}

/// `objects` creates spread over `concurrency` clients against `control`.
async fn creates(control: &Control, objects: usize, concurrency: usize, tag: &str) -> Result<Figures> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let url = Arc::new(format!("{}/api/v1/namespaces/default/configmaps", control.url));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, next, token, tag) = (
            client.clone(),
            url.clone(),
            next.clone(),
            control.token.clone(),
            tag.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3)?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= objects || started.elapsed() > TIME_CAP {
                    return anyhow::Ok(hist);
                }
                let body = configmap(&format!("{tag}-{i}"));
                let t = Instant::now();
                let resp = client
                    .post(url.as_str())
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await?;
                if resp.status().as_u16() != 201 {
                    bail!(
                        "create answered {}: {}",
                        resp.status(),
                        resp.text().await.unwrap_or_default()
                    );
                }
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

/// Sequential 1 KiB write + fdatasync on the same temp filesystem: the cost
/// of one durable write when nothing is batched. The file is written out
/// and synced first (untimed), as logs preallocate their segments, so each
/// fdatasync flushes data only, not a growing file's metadata.
fn fsync_loop(max_ops: usize) -> Result<Figures> {
    use std::io::{Seek, SeekFrom};
    let dir = tempfile::tempdir_in(std::env::temp_dir())?;
    let mut f = std::fs::File::create(dir.path().join("log"))?;
    let block = [7u8; 1024];
    for _ in 0..max_ops {
        f.write_all(&[0u8; 1024])?;
    }
    f.sync_all()?;
    f.seek(SeekFrom::Start(0))?;
    let mut hist = Histogram::<u64>::new(3)?;
    let started = Instant::now();
    for _ in 0..max_ops {
        if started.elapsed() > Duration::from_secs(10) {
            break;
        }
        let t = Instant::now();
        f.write_all(&block)?;
        f.sync_data()?;
        hist.record(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX))?;
    }
    Ok(Figures::from_hist(&hist, started.elapsed()))
}

/// etcd's puts at `c` clients, or why they were not measured.
async fn etcd_puts(objects: usize, c: usize) -> Result<(Figures, Option<f64>)> {
    let etcd = Etcd::start().await?;
    let value = serde_json::to_vec(&configmap("obj-0000"))?;
    etcd_anchor::puts(&etcd, c.max(8), c, &value, "warm").await?;
    let f = etcd_anchor::puts(&etcd, objects, c, &value, "obj").await?;
    if let Some((count, mean_ms)) = etcd_anchor::wal_fsyncs(&etcd).await {
        eprintln!("  etcd: {count:.0} WAL fdatasyncs (mean {mean_ms:.2} ms) for {objects} puts + warm-up");
    }
    Ok((f, etcd_anchor::rss_mib(&etcd)))
}

/// Runs the scenario and adds its rows.
pub async fn run(report: &mut Report, objects: usize, concurrency: &[usize]) -> Result<()> {
    eprintln!("api-create: {objects} ConfigMap creates per run, concurrency {concurrency:?}");
    let fsync = tokio::task::spawn_blocking(move || fsync_loop(objects)).await??;
    report.push(
        Row {
            scenario: "durable write, no batching (same disk)".into(),
            metric: "1 KiB write + fdatasync".into(),
            shturman: fsync.per_sec,
            anchor_name: "-".into(),
            anchor: None,
            goal: format!("reference: p50 {:.2} ms", fsync.p50_ms),
            higher_is_better: true,
        }
        .unit("writes/s"),
    );
    for &c in concurrency {
        let clients = if c == 1 {
            "1 client".to_string()
        } else {
            format!("{c} clients")
        };
        let durable = Control::start("sled").await?;
        // Warm the connection pool and the server.
        creates(&durable, c.max(8), c, "warm").await?;
        let d = creates(&durable, objects, c, "obj").await?;
        let durable_rss = durable.rss_mib();
        drop(durable);
        let memory = Control::start("memory").await?;
        creates(&memory, c.max(8), c, "warm").await?;
        let m = creates(&memory, objects, c, "obj").await?;
        drop(memory);
        let etcd = etcd_puts(objects, c).await;
        let (e, etcd_rss, etcd_name) = match etcd {
            Ok((f, rss)) => (Some(f), rss, format!("etcd 3.4 put, same disk, {clients}")),
            Err(err) => {
                eprintln!("  etcd anchor not measured: {err:#}");
                (None, None, format!("etcd (not measured: {err})"))
            }
        };
        let scenario = format!("API create (sled, durable), {clients}");
        let row = |metric: &str, shturman: f64, anchor: Option<f64>, higher_is_better: bool| Row {
            scenario: scenario.clone(),
            metric: metric.into(),
            shturman,
            anchor_name: etcd_name.clone(),
            anchor,
            goal: "informational".into(),
            higher_is_better,
        };
        report.push(
            row("creates/s", d.per_sec, e.as_ref().map(|e| e.per_sec), true).check(Goal::RatioAtLeast(2.0)),
        );
        report.push(row("p50 latency", d.p50_ms, e.as_ref().map(|e| e.p50_ms), false).unit("ms"));
        report.push(row("p99 latency", d.p99_ms, e.as_ref().map(|e| e.p99_ms), false).unit("ms"));
        if let Some(rss) = durable_rss {
            report.push(row("server RSS", rss, etcd_rss, false).unit("MiB"));
        }
        report.push(Row {
            scenario: format!("API create (memory store, no durability), {clients}"),
            metric: "creates/s".into(),
            shturman: m.per_sec,
            anchor_name: "same API, sled durable".into(),
            anchor: Some(d.per_sec),
            goal: format!("reference: what durability costs (p50 {:.2} ms)", m.p50_ms),
            higher_is_better: true,
        });
    }
    Ok(())
}
