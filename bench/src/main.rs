//! The benchmark suite: each scenario prints Shturman's figure next to an
//! anchor measured in the same run on the same machine, and the ratio.
//!
//! Every load loop is bounded in count and in time and talks to loopback only.

mod api_create;
mod broker;
mod chart;
mod containerd_anchor;
mod deploy;
mod etcd_anchor;
mod footprint;
mod heartbeats;
mod http_hello;
mod oci_start;
mod podwatch;
mod procfs;
mod proxy;
mod report;
mod results;
mod scheduler;
mod scheduler_e2e;
mod sizes;
mod spawn;
mod tickers;
mod wasm_start;

use clap::Parser;

/// Runs Shturman's benchmarks.
#[derive(Parser)]
#[command(name = "shturman-bench")]
struct Args {
    /// Objects created per measured run.
    #[arg(long, default_value_t = 4000)]
    objects: usize,
    /// Concurrent clients for the create benchmark (repeatable).
    #[arg(long, default_values_t = vec![1, 16, 64])]
    concurrency: Vec<usize>,
    /// Which scenarios to run: `all`, `api-create`, `scheduler`,
    /// `heartbeats`, `wasm-start`, `footprint`, `tickers`, `oci-start`,
    /// `proxy`, `http-hello`, `sizes`, `deploy`, `broker`, `fleet-rss` (repeatable).
    #[arg(long, default_values_t = vec!["all".to_string()],
          value_parser = clap::builder::PossibleValuesParser::new([
              "all", "api-create", "scheduler", "heartbeats", "wasm-start", "footprint", "tickers",
              "oci-start", "proxy", "http-hello", "sizes", "deploy", "broker", "fleet-rss",
          ]))]
    scenario: Vec<String>,
    /// Warm Wasm pod starts measured by `wasm-start` (after one cold start).
    #[arg(long, default_value_t = 100)]
    wasm_pods: usize,
    /// `ctr run --rm` runs of the `wasm-start` anchor.
    #[arg(long, default_value_t = 100)]
    ctr_runs: usize,
    /// How long `footprint` lets the idle agent settle (10 s heartbeats).
    #[arg(long, default_value_t = 35)]
    footprint_secs: u64,
    /// Ticker pods added for the per-pod memory figure of `tickers`.
    #[arg(long, default_value_t = 100)]
    ticker_pods: usize,
    /// Replicas of the large ticker Deployment of `tickers`.
    #[arg(long, default_value_t = 1000)]
    ticker_big: usize,
    /// The agent's `--max-pods` in `tickers`.
    #[arg(long, default_value_t = 1100)]
    ticker_max_pods: u32,
    /// Idle `ctr run -d` containers of the `tickers` anchor.
    #[arg(long, default_value_t = 20)]
    anchor_containers: usize,
    /// Longest wait, seconds, for the large ticker Deployment to run.
    #[arg(long, default_value_t = 600)]
    ticker_ramp_cap_secs: u64,
    /// Node counts for the scheduler benchmark (repeatable).
    #[arg(long, default_values_t = vec![1000, 5000])]
    sched_nodes: Vec<usize>,
    /// Pending pods per scheduler benchmark run.
    #[arg(long, default_value_t = 10_000)]
    sched_pods: usize,
    /// Simulated node counts for the heartbeat benchmark (repeatable).
    /// The goal is stated at 10,000; the default stops at 5,000 because
    /// 10,000 joins do not complete in minutes on the embedded broker yet
    /// (see bench/src/heartbeats.rs). `--fleet-nodes 1000 10000` tries it.
    #[arg(long, default_values_t = vec![1000, 5000])]
    fleet_nodes: Vec<usize>,
    /// Heartbeat period of the simulated nodes, seconds.
    #[arg(long, default_value_t = 10)]
    heartbeat_secs: u64,
    /// Measured window once every node has joined, seconds.
    #[arg(long, default_value_t = 30)]
    fleet_window_secs: u64,
    /// Window of the idle anchor (same process, no nodes), seconds.
    #[arg(long, default_value_t = 10)]
    idle_window_secs: u64,
    /// New simulated-node connections per second while ramping up.
    #[arg(long, default_value_t = 200)]
    connects_per_sec: u32,
    /// Simulated node counts of `heartbeats` also run on an external
    /// Mosquitto (`--mqtt-url`), as a data point (repeatable; 0: none).
    #[arg(long, default_values_t = vec![10_000])]
    fleet_mosquitto_nodes: Vec<usize>,
    /// Replicas of the `deploy` Deployment.
    #[arg(long, default_value_t = 100)]
    deploy_replicas: usize,
    /// Simulated nodes of `deploy`'s second run.
    #[arg(long, default_value_t = 10)]
    deploy_sim_nodes: usize,
    /// A simulated node's delay, ms, from receiving a pod to reporting it Running.
    #[arg(long, default_value_t = 50)]
    deploy_sim_delay_ms: u64,
    /// Publishers of `broker` (one subscriber).
    #[arg(long, default_value_t = 100)]
    broker_publishers: usize,
    /// Measured window of each `broker` round, seconds.
    #[arg(long, default_value_t = 10)]
    broker_window_secs: u64,
    /// Rounds per broker in `broker` (alternating).
    #[arg(long, default_value_t = 2)]
    broker_rounds: usize,
    /// Simulated nodes and pods of `fleet-rss`.
    #[arg(long, default_value_t = 1000)]
    rss_nodes: usize,
    #[arg(long, default_value_t = 10_000)]
    rss_pods: usize,
    /// Where to write the results as JSON; the Markdown table (`.md`) and
    /// the chart (`.png`) go beside it.
    #[arg(long, default_value = "target/bench/results.json")]
    json: std::path::PathBuf,
    /// Keep the rows of scenarios not run this time from the previous
    /// results at `--json` (partial runs add up to one report).
    #[arg(long)]
    merge: bool,
    /// Run nothing: redraw the table, Markdown and chart from this
    /// results.json (written to `--json` and beside it).
    #[arg(long, value_name = "FILE")]
    from_json: Option<std::path::PathBuf>,
    /// Also put the Markdown table into this file (the README) between its
    /// `<!-- bench-table:start -->` and `<!-- bench-table:end -->` lines.
    #[arg(long, value_name = "FILE")]
    update_doc: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let outputs = results::Outputs::beside(&args.json);
    if let Some(from) = &args.from_json {
        let loaded = results::Results::load(from)?;
        loaded.write(&outputs)?;
        return match &args.update_doc {
            Some(doc) => loaded.update_doc(doc),
            None => Ok(()),
        };
    }
    let commit = results::git_commit();
    let mut report = report::Report::new(commit.clone());
    // Each row pushed is tagged with the scenario that `wants` last let run.
    let tag = report.scenario_tag();
    let wants = |name: &str| {
        let yes = args.scenario.iter().any(|s| s == "all" || s == name);
        if yes {
            tag.set(name);
        }
        yes
    };
    if wants("api-create") {
        let r = api_create::run(&mut report, args.objects, &args.concurrency).await;
        finish(&mut report, "api-create", r);
    }
    if wants("scheduler") {
        // CPU-bound and alone on the runtime: run it in place, off the async path.
        let r = tokio::task::block_in_place(|| {
            scheduler::run_pure(&mut report, &args.sched_nodes, args.sched_pods)
        });
        finish(&mut report, "scheduler", r);
        let r = scheduler_e2e::run(&mut report, &args.sched_nodes, args.sched_pods).await;
        finish(&mut report, "scheduler", r);
    }
    if wants("heartbeats") {
        let opts = heartbeats::Options {
            nodes: args.fleet_nodes.clone(),
            period: std::time::Duration::from_secs(args.heartbeat_secs.max(1)),
            window: std::time::Duration::from_secs(args.fleet_window_secs.max(1)),
            idle_window: std::time::Duration::from_secs(args.idle_window_secs.max(1)),
            connects_per_sec: args.connects_per_sec.max(1),
            mosquitto_nodes: args
                .fleet_mosquitto_nodes
                .iter()
                .copied()
                .filter(|n| *n > 0)
                .collect(),
        };
        let r = heartbeats::run(&mut report, &opts).await;
        finish(&mut report, "heartbeats", r);
    }
    if wants("broker") {
        let opts = broker::Options {
            publishers: args.broker_publishers.max(1),
            window: std::time::Duration::from_secs(args.broker_window_secs.max(1)),
            rounds: args.broker_rounds.max(1),
        };
        let r = broker::run(&mut report, &opts).await;
        finish(&mut report, "broker", r);
    }
    if wants("deploy") {
        let opts = deploy::Options {
            replicas: args.deploy_replicas.max(1),
            sim_nodes: args.deploy_sim_nodes.max(1),
            sim_delay: std::time::Duration::from_millis(args.deploy_sim_delay_ms),
            cap: std::time::Duration::from_secs(300),
        };
        let r = deploy::run(&mut report, &opts).await;
        finish(&mut report, "deploy", r);
    }
    if wants("fleet-rss") {
        let cap = std::time::Duration::from_secs(600);
        let r = deploy::run_rss(&mut report, args.rss_nodes.max(1), args.rss_pods.max(1), cap).await;
        finish(&mut report, "fleet-rss", r);
    }
    if wants("wasm-start") {
        let r = wasm_start::run(&mut report, args.wasm_pods, args.ctr_runs).await;
        finish(&mut report, "wasm-start", r);
    }
    if wants("oci-start") {
        let r = oci_start::run(&mut report).await;
        finish(&mut report, "oci-start", r);
    }
    if wants("proxy") {
        let r = proxy::run(&mut report).await;
        finish(&mut report, "proxy", r);
    }
    if wants("http-hello") {
        let r = http_hello::run(&mut report).await;
        finish(&mut report, "http-hello", r);
    }
    if wants("footprint") {
        let r = footprint::run(
            &mut report,
            std::time::Duration::from_secs(args.footprint_secs.max(1)),
        )
        .await;
        finish(&mut report, "footprint", r);
    }
    if wants("tickers") {
        let opts = tickers::Options {
            pods: args.ticker_pods.max(1),
            big: args.ticker_big.max(1),
            max_pods: args.ticker_max_pods.max(1),
            containers: args.anchor_containers.max(1),
            settle: std::time::Duration::from_secs(5),
            growth: std::time::Duration::from_secs(30),
            ramp_cap: std::time::Duration::from_secs(args.ticker_ramp_cap_secs.max(1)),
            cpu_window: std::time::Duration::from_secs(10),
        };
        let r = tickers::run(&mut report, &opts).await;
        finish(&mut report, "tickers", r);
    }
    if wants("sizes") {
        let r = sizes::run(&mut report);
        finish(&mut report, "sizes", r);
    }
    let mut run = results::Results::new(commit, report.rows);
    if args.merge && args.json.exists() {
        run.merge_previous(results::Results::load(&args.json)?);
    }
    run.write(&outputs)?;
    match &args.update_doc {
        Some(doc) => run.update_doc(doc),
        None => Ok(()),
    }
}

/// A scenario that stopped with an error is a finding, not the end of the
/// suite: it gets a MISSED row saying why, and the others still run.
fn finish(report: &mut report::Report, scenario: &str, result: anyhow::Result<()>) {
    if let Err(e) = result {
        eprintln!("{scenario}: did not finish: {e:#}");
        let why: String = format!("{e:#}").chars().take(160).collect();
        report.push(
            report::Row {
                scenario: scenario.to_string(),
                metric: format!("did not finish: {why}"),
                shturman: 0.0,
                anchor_name: "-".into(),
                anchor: None,
                goal: "runs to the end".into(),
                higher_is_better: true,
            }
            .check(report::Goal::AtLeast(1.0)),
        );
    }
}
