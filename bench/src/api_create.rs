//! API create throughput and latency with durable writes (sled, flushed
//! before the answer), next to two anchors from the same run: a plain
//! write + fdatasync loop on the same disk (what one durable write costs
//! without batching), and the same API on the in-memory store (what
//! durability costs Shturman).

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use hdrhistogram::Histogram;
use serde_json::json;

use crate::report::{Report, Row};
use crate::spawn::Control;

/// No measured loop runs longer than this.
const TIME_CAP: Duration = Duration::from_secs(60);

struct Figures {
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
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
                let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": format!("{tag}-{i}"), "labels": {"bench": "api-create"}},
                    "data": {"key": "a small value, like most config"}});
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
    let secs = started.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let done = hist.len() as f64;
    #[allow(clippy::cast_precision_loss)]
    Ok(Figures {
        per_sec: done / secs,
        p50_ms: hist.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
    })
}

/// Sequential 1 KiB write + fdatasync on the same temp filesystem: the cost
/// of one durable write when nothing is batched.
fn fsync_loop(max_ops: usize) -> Result<Figures> {
    let dir = tempfile::tempdir_in(std::env::temp_dir())?;
    let mut f = std::fs::File::create(dir.path().join("log"))?;
    let block = [7u8; 1024];
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
    #[allow(clippy::cast_precision_loss)]
    Ok(Figures {
        per_sec: hist.len() as f64 / started.elapsed().as_secs_f64(),
        p50_ms: hist.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
    })
}

/// Runs the scenario and adds its rows.
pub async fn run(report: &mut Report, objects: usize, concurrency: &[usize]) -> Result<()> {
    eprintln!("api-create: {objects} ConfigMap creates per run, concurrency {concurrency:?}");
    let fsync = tokio::task::spawn_blocking(move || fsync_loop(objects)).await??;
    report.push(Row {
        scenario: "durable write, no batching".into(),
        metric: "writes/s".into(),
        shturman: fsync.per_sec,
        anchor_name: "-".into(),
        anchor: None,
        goal: format!("reference (fdatasync p50 {:.2} ms)", fsync.p50_ms),
        higher_is_better: true,
    });
    for &c in concurrency {
        let durable = Control::start("sled").await?;
        // Warm the connection pool and the server.
        creates(&durable, c.max(8), c, "warm").await?;
        let d = creates(&durable, objects, c, "obj").await?;
        let durable_rss = durable.rss_mib();
        drop(durable);
        let memory = Control::start("memory").await?;
        creates(&memory, c.max(8), c, "warm").await?;
        let m = creates(&memory, objects, c, "obj").await?;
        let memory_rss = memory.rss_mib();
        drop(memory);
        if let Some(rss) = durable_rss {
            report.push(Row {
                scenario: format!("API create, sled durable, {c} clients"),
                metric: "control plane RSS MiB".into(),
                shturman: rss,
                anchor_name: "same API, memory store".into(),
                anchor: memory_rss,
                goal: "informational".into(),
                higher_is_better: false,
            });
        }
        report.push(Row {
            scenario: format!("API create, sled durable, {c} clients"),
            metric: "creates/s".into(),
            shturman: d.per_sec,
            anchor_name: "bare fdatasync loop".into(),
            anchor: Some(fsync.per_sec),
            goal: "informational".into(),
            higher_is_better: true,
        });
        report.push(Row {
            scenario: format!("API create, sled durable, {c} clients"),
            metric: "p50 ms".into(),
            shturman: d.p50_ms,
            anchor_name: "same API, memory store".into(),
            anchor: Some(m.p50_ms),
            goal: "informational".into(),
            higher_is_better: false,
        });
        report.push(Row {
            scenario: format!("API create, sled durable, {c} clients"),
            metric: "p99 ms".into(),
            shturman: d.p99_ms,
            anchor_name: "same API, memory store".into(),
            anchor: Some(m.p99_ms),
            goal: "informational".into(),
            higher_is_better: false,
        });
        report.push(Row {
            scenario: format!("API create, memory store, {c} clients"),
            metric: "creates/s".into(),
            shturman: m.per_sec,
            anchor_name: "-".into(),
            anchor: None,
            goal: "reference (no durability)".into(),
            higher_is_better: true,
        });
    }
    Ok(())
}
