//! The command line: `serve`, `check`, `migrate`, `openapi`.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 invalid configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::app::{Hub, open_store};
use crate::connectors::ConnectorRegistry;
use crate::settings::{self, ApiTokens, Settings};
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
    /// Validate the config, its secrets and the mappings; change nothing.
    Check {
        /// Mappings directory to validate instead of `mappings.dir`.
        path: Option<PathBuf>,
    },
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
    if let Err(e) = ConnectorRegistry::build(&settings.connectors, env) {
        problems.push(e.to_string());
    }
    if let Err(e) = ApiTokens::from_env(env) {
        problems.push(e.to_string());
    }
    let dir = path.unwrap_or_else(|| settings.mappings.dir.clone());
    if !dir.is_dir() {
        problems.push(format!("mappings directory {} does not exist", dir.display()));
    }
    if problems.is_empty() {
        println!("ok: config and secrets are valid; {} connector(s) configured", settings.connectors.len());
        ExitCode::SUCCESS
    } else {
        for p in &problems {
            eprintln!("{p}");
        }
        ExitCode::from(2)
    }
}

async fn migrate(settings: &Settings, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<ExitCode> {
    let store = open_store(settings, env).await?;
    store.migrate().await.context("applying migrations")?;
    println!("ok: {} store is up to date", store.backend().as_str());
    Ok(ExitCode::SUCCESS)
}
