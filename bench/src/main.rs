//! The benchmark suite: each scenario prints Shturman's figure next to an
//! anchor measured in the same run on the same machine, and the ratio.
//!
//! Every load loop is bounded in count and in time and talks to loopback only.

mod api_create;
mod containerd_anchor;
mod fleet;
mod footprint;
mod heartbeats;
mod oci_start;
mod podwatch;
mod procfs;
mod proxy;
mod report;
mod scheduler;
mod scheduler_e2e;
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
    /// `proxy` (repeatable).
    #[arg(long, default_values_t = vec!["all".to_string()],
          value_parser = clap::builder::PossibleValuesParser::new([
              "all", "api-create", "scheduler", "heartbeats", "wasm-start", "footprint", "tickers",
              "oci-start", "proxy",
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
    /// Where to write the results as JSON.
    #[arg(long, default_value = "target/bench/results.json")]
    json: std::path::PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut report = report::Report::default();
    let wants = |name: &str| args.scenario.iter().any(|s| s == "all" || s == name);
    if wants("api-create") {
        api_create::run(&mut report, args.objects, &args.concurrency).await?;
    }
    if wants("scheduler") {
        // CPU-bound and alone on the runtime: run it in place, off the async path.
        tokio::task::block_in_place(|| scheduler::run_pure(&mut report, &args.sched_nodes, args.sched_pods))?;
        scheduler_e2e::run(&mut report, &args.sched_nodes, args.sched_pods).await?;
    }
    if wants("heartbeats") {
        let opts = heartbeats::Options {
            nodes: args.fleet_nodes.clone(),
            period: std::time::Duration::from_secs(args.heartbeat_secs.max(1)),
            window: std::time::Duration::from_secs(args.fleet_window_secs.max(1)),
            idle_window: std::time::Duration::from_secs(args.idle_window_secs.max(1)),
            connects_per_sec: args.connects_per_sec.max(1),
        };
        heartbeats::run(&mut report, &opts).await?;
    }
    if wants("wasm-start") {
        wasm_start::run(&mut report, args.wasm_pods, args.ctr_runs).await?;
    }
    if wants("oci-start") {
        oci_start::run(&mut report).await?;
    }
    if wants("proxy") {
        proxy::run(&mut report).await?;
    }
    if wants("footprint") {
        footprint::run(
            &mut report,
            std::time::Duration::from_secs(args.footprint_secs.max(1)),
        )
        .await?;
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
        tickers::run(&mut report, &opts).await?;
    }
    report.print();
    report.write_json(&args.json)?;
    eprintln!("results written to {}", args.json.display());
    Ok(())
}
