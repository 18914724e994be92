//! `dealbridge emulate bitrix24`: an in-memory Bitrix24 portal to rehearse
//! mappings and flows without a real one (see docs/connectors/bitrix24.md).

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use dealbridge_connector_bitrix24::emulator::{self, EmulatorConfig};

#[derive(Debug, clap::Args)]
pub struct EmulateArgs {
    #[command(subcommand)]
    pub system: EmulatedSystem,
}

#[derive(Debug, clap::Subcommand)]
pub enum EmulatedSystem {
    /// A Bitrix24 portal: REST through an incoming webhook, outgoing-webhook
    /// events to a handler, the 2 req/s leaky-bucket limit.
    Bitrix24(Bitrix24Args),
}

#[derive(Debug, clap::Args)]
pub struct Bitrix24Args {
    /// Address the portal listens on, e.g. 127.0.0.1:9024.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Where outgoing-webhook events are POSTed, e.g.
    /// http://127.0.0.1:8080/hooks/bitrix24. Without it events are only logged.
    #[arg(long)]
    pub handler: Option<String>,
    /// `auth[application_token]` of the events; the connector's
    /// `application_token_env` variable must hold the same value.
    #[arg(long, env = "DEALBRIDGE_EMULATOR_APPLICATION_TOKEN", default_value = "emulator-application-token")]
    pub application_token: String,
    /// Share of events dropped instead of sent (0 to 1), to rehearse losses.
    #[arg(long, default_value_t = 0.0, value_parser = share)]
    pub drop_share: f64,
    /// The incoming webhook's code: REST lives at /rest/<user>/<code>/.
    #[arg(long, default_value = "emulator")]
    pub webhook_code: String,
    #[arg(long, default_value_t = 1)]
    pub webhook_user: u64,
    /// Leaky bucket: requests drained per second (Enterprise plans: 5).
    #[arg(long, default_value_t = 2.0)]
    pub per_second: f64,
    /// Leaky bucket: the level that blocks (Enterprise plans: 250).
    #[arg(long, default_value_t = 50.0)]
    pub burst: f64,
}

fn share(text: &str) -> Result<f64, String> {
    let value: f64 = text.parse().map_err(|_| format!("`{text}` is not a number"))?;
    if (0.0..=1.0).contains(&value) { Ok(value) } else { Err("must be between 0 and 1".into()) }
}

pub async fn run(args: EmulateArgs) -> anyhow::Result<ExitCode> {
    let EmulatedSystem::Bitrix24(args) = args.system;
    let handler = match &args.handler {
        Some(url) => Some(emulator::Url::parse(url).with_context(|| format!("--handler `{url}`"))?),
        None => None,
    };
    let config = EmulatorConfig {
        webhook_user: args.webhook_user,
        webhook_code: args.webhook_code,
        handler,
        application_token: args.application_token,
        drop_share: args.drop_share,
        per_second: args.per_second,
        burst: args.burst,
        ..EmulatorConfig::default()
    };
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("Bitrix24 emulator on http://{addr}");
    println!("  incoming webhook: http://{addr}/rest/{}/{}/", config.webhook_user, config.webhook_code);
    match &config.handler {
        Some(url) => println!("  events to:        {url} (dropping {:.0} %)", config.drop_share * 100.0),
        None => println!("  events:           logged only (no --handler)"),
    }
    println!("  call log:         http://{addr}/_emulator/calls");
    axum::serve(listener, emulator::router(config)).with_graceful_shutdown(super::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
