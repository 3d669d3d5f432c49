//! The benchmark suite: each scenario prints Shturman's figure next to an
//! anchor measured in the same run on the same machine, and the ratio.
//!
//! Every load loop is bounded in count and in time and talks to loopback only.

mod api_create;
mod report;
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
    /// Where to write the results as JSON.
    #[arg(long, default_value = "target/bench/results.json")]
    json: std::path::PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut report = report::Report::default();
    api_create::run(&mut report, args.objects, &args.concurrency).await?;
    report.print();
    report.write_json(&args.json)?;
    eprintln!("results written to {}", args.json.display());
    Ok(())
}
