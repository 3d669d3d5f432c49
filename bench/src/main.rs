//! The benchmark suite: each scenario prints Shturman's figure next to an
//! anchor measured in the same run on the same machine, and the ratio.
//!
//! Every load loop is bounded in count and in time and talks to loopback only.

mod api_create;
mod report;
mod scheduler;
mod scheduler_e2e;
mod spawn;

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
    /// Which scenarios to run: `all`, `api-create`, `scheduler` (repeatable).
    #[arg(long, default_values_t = vec!["all".to_string()],
          value_parser = clap::builder::PossibleValuesParser::new(["all", "api-create", "scheduler"]))]
    scenario: Vec<String>,
    /// Node counts for the scheduler benchmark (repeatable).
    #[arg(long, default_values_t = vec![1000, 5000])]
    sched_nodes: Vec<usize>,
    /// Pending pods per scheduler benchmark run.
    #[arg(long, default_value_t = 10_000)]
    sched_pods: usize,
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
    report.print();
    report.write_json(&args.json)?;
    eprintln!("results written to {}", args.json.display());
    Ok(())
}
