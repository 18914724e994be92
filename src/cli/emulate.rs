//! `dealbridge emulate bitrix24`: an in-memory Bitrix24 portal to rehearse
//! mappings and flows without a real one (see docs/connectors/bitrix24.md);
//! `dealbridge emulate amocrm`: the same for an amoCRM account
//! (docs/connectors/amocrm.md); `dealbridge emulate onec`: a 1C infobase
//! publishing OData and the integration HTTP service (docs/connectors/onec.md).

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
    /// An amoCRM account: API v4 with a bearer token, lead webhooks to a
    /// handler, the 7 requests per second limit.
    Amocrm(AmocrmArgs),
    /// A 1C infobase: the standard OData interface, the integration HTTP
    /// service, and change notifications to a handler.
    Onec(OnecArgs),
}

#[derive(Debug, clap::Args)]
pub struct OnecArgs {
    /// Address the publication listens on, e.g. 127.0.0.1:9001.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Where change notifications are POSTed, e.g.
    /// http://127.0.0.1:8080/hooks/onec. Without it they are only recorded.
    #[arg(long)]
    pub handler: Option<String>,
    /// The publication's name: OData at /<base>/odata/standard.odata/.
    #[arg(long, default_value = "trade")]
    pub base: String,
    /// The infobase user and password OData accepts (the connector's `user`
    /// and `password_env`).
    #[arg(long, default_value = "dealbridge")]
    pub user: String,
    #[arg(long, env = "DEALBRIDGE_EMULATOR_ONEC_PASSWORD", default_value = "emulator-password")]
    pub password: String,
    /// The bearer token notifications carry (the connector's `notify_secret_env`).
    #[arg(long, env = "DEALBRIDGE_EMULATOR_ONEC_NOTIFY_TOKEN", default_value = "emulator-notify-token")]
    pub notify_token: String,
    /// Share of notifications lost instead of sent (0 to 1), to rehearse the catch-up.
    #[arg(long, default_value_t = 0.0, value_parser = share)]
    pub drop_share: f64,
}

#[derive(Debug, clap::Args)]
pub struct AmocrmArgs {
    /// Address the account listens on, e.g. 127.0.0.1:9070.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Where lead webhooks are POSTed, with the connector's secret, e.g.
    /// http://127.0.0.1:8080/hooks/amocrm?token=…. Without it webhooks are only logged.
    #[arg(long)]
    pub handler: Option<String>,
    /// The access token the hub's connector sends; its `access_token_env`
    /// variable must hold the same value.
    #[arg(long, env = "DEALBRIDGE_EMULATOR_AMOCRM_TOKEN", default_value = "emulator-access-token")]
    pub access_token: String,
    /// `account[subdomain]` of the webhooks; the connector's `subdomain`.
    #[arg(long, default_value = "emulator")]
    pub subdomain: String,
    /// `account[id]` of the webhooks.
    #[arg(long, default_value_t = 31000001)]
    pub account_id: u64,
    /// Requests allowed in any one second (amoCRM: 7).
    #[arg(long, default_value_t = 7)]
    pub per_second: usize,
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
    let args = match args.system {
        EmulatedSystem::Bitrix24(args) => args,
        EmulatedSystem::Amocrm(args) => return run_amocrm(args).await,
        EmulatedSystem::Onec(args) => return run_onec(args).await,
    };
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

async fn run_amocrm(args: AmocrmArgs) -> anyhow::Result<ExitCode> {
    use dealbridge_connector_amocrm::emulator as amo;
    let handler = match &args.handler {
        Some(url) => Some(amo::Url::parse(url).context("--handler is not a URL")?),
        None => None,
    };
    let config = amo::EmulatorConfig {
        subdomain: args.subdomain,
        account_id: args.account_id,
        tokens: vec![(amo::INTEGRATION_USER, args.access_token)],
        handler,
        per_second: args.per_second,
    };
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("amoCRM emulator on http://{addr} (account `{}`, id {})", config.subdomain, config.account_id);
    match &config.handler {
        // The handler's query carries the webhook secret: print only where it goes.
        Some(url) => println!("  webhooks to:      {}://{}{}", url.scheme(), url.authority(), url.path()),
        None => println!("  webhooks:         logged only (no --handler)"),
    }
    println!("  request log:      http://{addr}/_emulator/requests");
    let app = amo::router(config, &format!("http://{addr}"));
    axum::serve(listener, app).with_graceful_shutdown(super::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

async fn run_onec(args: OnecArgs) -> anyhow::Result<ExitCode> {
    use dealbridge_connector_onec::emulator as onec;
    let handler = match &args.handler {
        Some(url) => Some(onec::Url::parse(url).with_context(|| format!("--handler `{url}`"))?),
        None => None,
    };
    let config = onec::EmulatorConfig {
        base: args.base,
        user: args.user,
        password: args.password,
        handler,
        notify_auth: onec::NotifyAuth::Bearer(args.notify_token),
        drop_share: args.drop_share,
        ..onec::EmulatorConfig::default()
    };
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("1C emulator on http://{addr}/{}", config.base);
    println!("  OData:            http://{addr}/{}/odata/standard.odata/", config.base);
    println!("  HTTP service:     http://{addr}/{}/hs/{}/", config.base, config.http_service);
    match &config.handler {
        Some(url) => println!("  notifications to: {url} (losing {:.0} %)", config.drop_share * 100.0),
        None => println!("  notifications:    recorded only (no --handler)"),
    }
    println!("  call log:         http://{addr}/_emulator/calls");
    axum::serve(listener, onec::router(config)).with_graceful_shutdown(super::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
