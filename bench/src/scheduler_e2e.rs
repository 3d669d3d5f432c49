//! Scheduler throughput end to end: the control plane's real store (sled,
//! durable, group commit), API layer, informers and binder loop, in one
//! process; thousands of nodes and pending pods already stored; the clock
//! runs from the scheduler's start until every pod is bound (each binding a
//! durable write, each with its `Scheduled` event).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures::StreamExt;
use shturman_api::core::{Node, Pod};
use shturman_control::client::Client;
use shturman_control::runtime::{Informer, Recorder, SystemClock};
use shturman_control::server::State;
use shturman_control::store::SledStore;
use tokio_util::sync::CancellationToken;

use crate::report::{Report, Row};
use crate::scheduler::{synthetic_node, synthetic_pod};

/// No run waits longer than this for its pods to be bound.
const TIME_CAP: Duration = Duration::from_secs(300);

async fn create_all<T: shturman_api::meta::Object + Send + Sync + 'static>(
    client: &Client,
    objs: Vec<T>,
) -> Result<()> {
    let results: Vec<_> = futures::stream::iter(objs)
        .map(|o| {
            let c = client.clone();
            async move { c.create(&o).await }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    for r in results {
        r?;
    }
    Ok(())
}

/// Binds `pods` pending pods over `nodes` nodes; returns pods/s.
async fn one(nodes: usize, pods: usize) -> Result<(f64, usize)> {
    let dir = tempfile::tempdir_in(std::env::temp_dir())?;
    let path = dir.path().join("store");
    let store = tokio::task::spawn_blocking(move || SledStore::open(&path)).await??;
    let state = State::new(Arc::new(store), "bench".into());
    state.ensure_default_namespace().await?;
    let client = Client::new(state.clone());
    create_all(&client, (0..nodes).map(synthetic_node).collect::<Vec<Node>>()).await?;
    create_all(&client, (0..pods).map(synthetic_pod).collect::<Vec<Pod>>()).await?;

    let stop = CancellationToken::new();
    let node_informer = Informer::<Node>::start(client.clone(), stop.clone());
    let pod_informer = Informer::<Pod>::start(client.clone(), stop.clone());
    node_informer.wait_synced().await;
    pod_informer.wait_synced().await;
    let recorder = Recorder::new(client.clone(), "default-scheduler", Arc::new(SystemClock));
    let started = Instant::now();
    let task = shturman_control::scheduler::run::start(
        client.clone(),
        &node_informer,
        &pod_informer,
        recorder,
        stop.clone(),
    );
    let bound = loop {
        let bound = pod_informer.filter(|p| p.spec.node_name.is_some()).len();
        if bound >= pods {
            break bound;
        }
        if started.elapsed() > TIME_CAP {
            stop.cancel();
            bail!("only {bound} of {pods} pods bound after {TIME_CAP:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let secs = started.elapsed().as_secs_f64();
    stop.cancel();
    let _ = task.await;
    state.store.close().await?;
    #[allow(clippy::cast_precision_loss)]
    Ok((bound as f64 / secs, bound))
}

/// Adds the end-to-end scheduler rows.
pub async fn run(report: &mut Report, node_counts: &[usize], pods: usize) -> Result<()> {
    for &n in node_counts {
        eprintln!("scheduler end to end: {n} nodes, {pods} pending pods (durable bindings)");
        let (per_sec, bound) = one(n, pods).await?;
        report.push(
            Row {
                scenario: format!("scheduler end to end, {n} nodes, {bound} pods, durable bindings"),
                metric: "pods/s".into(),
                shturman: per_sec,
                anchor_name: "kube-scheduler_perf floor (published, not measured here)".into(),
                anchor: Some(810.0),
                goal: ">= 1600 pods/s".into(),
                higher_is_better: true,
            }
            .check(crate::report::Goal::AtLeast(1600.0)),
        );
    }
    Ok(())
}
