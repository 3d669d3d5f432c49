//! The `shturman` command: the all-in-one cluster (`up`), the control plane
//! (`control`) and the kubectl-like
//! client verbs (`apply`, `get`, `describe`, `delete`, `version`, `scale`,
//! `rollout`, `cordon`, `uncordon`, `drain`, `logs`).
//!
//! Layout: [`args`] is the clap surface; [`config`] resolves the client
//! configuration (kubeconfig files); [`client`] talks HTTP and turns failures
//! into messages; each verb has its own module. Formatting is pure and tested
//! on its own: [`table`] (layout, ages), [`columns`] (per-kind rows),
//! [`yaml`], [`output`] (json/List/name), [`describe`] + [`describe_kinds`];
//! so is `apply`'s decision logic in [`apply_plan`], `rollout`'s in
//! [`rollout_plan`] and `drain`'s in [`drain_plan`].

mod apply;
mod apply_plan;
mod args;
mod client;
mod columns;
mod config;
mod control_cmd;
mod delete;
mod describe;
mod describe_kinds;
mod drain_plan;
mod duration;
mod get;
mod logs;
mod manifests;
mod node_cmd;
mod output;
mod rollout;
mod rollout_plan;
mod rollout_status;
mod scale;
mod table;
mod targets;
mod token;
mod up;
mod value;
mod version;
mod watch;
mod yaml;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::args::{Cli, Command};
use crate::client::{ApiError, Client};

/// An error whose message was already printed; main only sets the exit code.
#[derive(Debug)]
pub struct AlreadyReported;

impl std::fmt::Display for AlreadyReported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("errors were reported above")
    }
}

impl std::error::Error for AlreadyReported {}

fn init_tracing(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

fn client(cli: &Cli) -> anyhow::Result<Client> {
    let inputs = config::Inputs {
        flag_server: cli.conn.server.clone().filter(|s| !s.trim().is_empty()),
        flag_token: cli.conn.token.clone().filter(|s| !s.is_empty()),
        flag_config: cli.conn.config.clone(),
        flag_namespace: cli.conn.namespace.clone(),
        env_config: std::env::var("SHTURMAN_CONFIG").ok(),
        home: std::env::var_os("HOME").map(Into::into),
    };
    let resolved = config::resolve(&inputs, &|p| std::fs::read_to_string(p))?;
    Client::new(resolved)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Control(args) = &cli.command {
        init_tracing("info,sled=warn,rumqttd=off");
        return control_cmd::run(args).await;
    }
    if let Command::Up(args) = &cli.command {
        init_tracing("info,sled=warn,rumqttd=off");
        return up::run(args).await;
    }
    init_tracing("warn");
    let client = client(&cli)?;
    match &cli.command {
        Command::Control(_) | Command::Up(_) => Ok(()),
        Command::Apply(a) => apply::run(a, &client).await,
        Command::Get(a) => get::run(a, &client).await,
        Command::Describe(a) => describe::run(a, &client).await,
        Command::Delete(a) => delete::run(a, &client).await,
        Command::Version => version::run(&client).await,
        Command::Scale(a) => scale::run(a, &client).await,
        Command::Rollout(a) => rollout::run(a, &client).await,
        Command::Token(args::TokenCommand::Create(a)) => token::create(a, &client).await,
        Command::Cordon(a) => node_cmd::cordon(a, &client, true).await,
        Command::Uncordon(a) => node_cmd::cordon(a, &client, false).await,
        Command::Drain(a) => node_cmd::drain(a, &client).await,
        Command::Logs(a) => logs::run(a, &client).await,
    }
}

/// Prints an error as kubectl would: a server `Status` as `Error from server
/// (Reason): …`, anything else as `error: …`.
pub fn report(e: &anyhow::Error) {
    if e.downcast_ref::<AlreadyReported>().is_some() {
        // Already printed.
    } else if let Some(api @ ApiError::Server(_)) = e.downcast_ref::<ApiError>() {
        eprintln!("{api}");
    } else {
        eprintln!("error: {e:#}");
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e);
            ExitCode::FAILURE
        }
    }
}
