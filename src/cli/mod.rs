//! The command line: `serve`, `check`, `test`, `replay`, `explain`,
//! `deliveries`, `migrate`, `openapi`.
//!
//! Exit codes: 0 success, 1 runtime failure or problems found (mapping
//! errors, failed test cases), 2 invalid configuration.

mod deliveries;
mod emulate;
mod inspect;
mod mappings;
mod payments;
mod statement;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::app::{Hub, MappingsError, open_store};
use crate::connectors::ConnectorRegistry;
use crate::settings::{self, ApiTokens, BusBackend, Settings, StoreBackend};
use crate::telemetry;

#[derive(Debug, Parser)]
#[command(name = "dealbridge", version, about = "Integration hub for CRM deals, 1C documents and bank payments")]
pub struct Cli {
    /// Service config file.
    #[arg(long, global = true, env = "DEALBRIDGE_CONFIG", default_value = "config/dealbridge.toml")]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the hub: webhook inbox, admin API, health and metrics.
    Serve {
        /// Listen address, overriding `server.listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Validate the config, its secrets, the mappings and their test cases;
    /// change nothing. Mapping problems print as `file:line:column: message`.
    Check {
        /// Mappings directory to validate instead of `mappings.dir`.
        path: Option<PathBuf>,
    },
    /// Run the mapping test cases (`tests/` beside the mappings); ends with
    /// `N passed, M failed`.
    Test {
        /// Mappings directory instead of `mappings.dir`.
        path: Option<PathBuf>,
    },
    /// Run stored events through a mapping set and show how the canonical
    /// changes and commands would differ from what happened. Writes nothing.
    Replay {
        /// Start of the window: RFC 3339 time, a date (`2025-03-03`, UTC), or
        /// a duration back from now (`24h`, `7d`).
        #[arg(long)]
        since: String,
        /// End of the window (same forms); default now.
        #[arg(long)]
        until: Option<String>,
        /// The candidate mapping set; default `mappings.dir`.
        #[arg(long)]
        mappings: Option<PathBuf>,
        /// Required: replay only shows, it never applies.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show how a deal got where it is: stages and their durations, every
    /// event, flow action and command.
    Explain {
        deal_id: uuid::Uuid,
        /// Print the trace as JSON (as `GET /api/v1/deals/{id}/trace`).
        #[arg(long)]
        json: bool,
    },
    /// Commands that did not reach their target: list, retry, discard.
    Deliveries {
        #[command(subcommand)]
        command: deliveries::DeliveriesCommand,
    },
    /// Import a bank statement (payments stored once, matched to invoices,
    /// applied through the flows); `--dry-run` only shows what it holds.
    ImportStatement(statement::ImportStatementArgs),
    /// Bank payments: the review queue and manual matches.
    Payments {
        #[command(subcommand)]
        command: payments::PaymentsCommand,
    },
    /// Run an emulated connected system, e.g. `emulate bitrix24 --listen 127.0.0.1:9024`.
    Emulate(emulate::EmulateArgs),
    /// Apply pending store migrations and exit.
    Migrate,
    /// Print the admin API's OpenAPI document.
    Openapi,
}

/// Runs a parsed command line on a fresh runtime.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let env = |name: &str| std::env::var(name).ok();
    let settings = match settings::load(&cli.config, std::env::vars()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("invalid configuration: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    telemetry::init_logging(&settings.log);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Serve { listen } => runtime.block_on(serve(settings, listen, &env)),
        Command::Check { path } => Ok(check(&settings, path, &env)),
        Command::Test { path } => Ok(mappings::run_tests(&path.unwrap_or_else(|| settings.mappings.dir.clone()))),
        Command::Replay { since, until, mappings, dry_run, json } => {
            let options = inspect::ReplayOptions { since, until, mappings, dry_run, json };
            runtime.block_on(inspect::replay(&settings, options, &env))
        }
        Command::Explain { deal_id, json } => runtime.block_on(inspect::explain(&settings, deal_id, json, &env)),
        Command::Deliveries { command } => runtime.block_on(deliveries::run(&settings, command, &env)),
        Command::ImportStatement(args) => Ok(runtime.block_on(statement::run(&settings, &args, &env))),
        Command::Payments { command } => runtime.block_on(payments::run(&settings, command, &env)),
        Command::Emulate(args) => runtime.block_on(emulate::run(args)),
        Command::Migrate => runtime.block_on(migrate(&settings, &env)),
        Command::Openapi => {
            println!("{}", serde_json::to_string_pretty(&crate::server::api::openapi())?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn serve(
    mut settings: Settings,
    listen: Option<SocketAddr>,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<ExitCode> {
    if let Some(addr) = listen {
        settings.server.listen = addr;
    }
    let addr = settings.server.listen;
    let hub = match Hub::start(settings, env).await {
        Ok(hub) => hub,
        Err(e) if e.downcast_ref::<settings::SecretError>().is_some() => {
            eprintln!("invalid configuration: {e}");
            return Ok(ExitCode::from(2));
        }
        Err(e) if e.downcast_ref::<MappingsError>().is_some() => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e),
    };
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    tracing::info!(listen = %listener.local_addr()?, store = hub.state.store.backend().as_str(), "Hub listening.");
    hub.run(listener, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (container stop).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

fn check(settings: &Settings, path: Option<PathBuf>, env: &dyn Fn(&str) -> Option<String>) -> ExitCode {
    let mut problems = Vec::new();
    if let Err(e) = ConnectorRegistry::build(&settings.connectors, &settings.delivery.targets, env) {
        problems.push(e.to_string());
    }
    if let Err(e) = ApiTokens::from_env(env) {
        problems.push(e.to_string());
    }
    if let Err(e) = settings.delivery.policy() {
        problems.push(e);
    }
    let needed = [
        (settings.store.backend == StoreBackend::Postgres, &settings.store.url_env, "store.backend is postgres"),
        (settings.bus.backend == BusBackend::Rabbitmq, &settings.bus.url_env, "bus.backend is rabbitmq"),
    ];
    for (_, var, why) in needed.iter().filter(|(used, var, _)| *used && env(var).is_none()) {
        problems.push(format!("{var}: not set, but {why}"));
    }
    let dir = path.unwrap_or_else(|| settings.mappings.dir.clone());
    if !dir.is_dir() {
        problems.push(format!("mappings directory {} does not exist", dir.display()));
    }
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("{p}");
        }
        return ExitCode::from(2);
    }
    let mapping_problems = mappings::mapping_problems(&dir);
    if !mapping_problems.is_empty() {
        for p in &mapping_problems {
            println!("{p}");
        }
        eprintln!("{} problem(s) in {}", mapping_problems.len(), dir.display());
        return ExitCode::FAILURE;
    }
    println!(
        "ok: config, secrets and mappings ({}) are valid; {} connector(s) configured",
        dir.display(),
        settings.connectors.len()
    );
    ExitCode::SUCCESS
}

async fn migrate(settings: &Settings, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<ExitCode> {
    let store = open_store(settings, env).await?;
    store.migrate().await.context("applying migrations")?;
    println!("ok: {} store is up to date", store.backend().as_str());
    Ok(ExitCode::SUCCESS)
}
