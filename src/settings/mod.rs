//! Service configuration: `config/dealbridge.toml`, overridden key by key
//! from the environment (`DEALBRIDGE__SECTION__KEY`), plus secrets that only
//! ever come from the environment.
//!
//! Loading is pure and reports the first problem with the file and the key
//! it concerns, so `dealbridge check` and `serve` fail the same clear way.

mod bank;
mod delivery;
mod load;
mod secrets;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

pub use bank::BankSettings;
pub use delivery::DeliverySettings;
pub use load::{ConfigError, ENV_PREFIX, load};
pub use secrets::{ApiTokens, Role, SecretError};

/// The whole service config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub store: StoreSettings,
    #[serde(default)]
    pub inbox: InboxSettings,
    #[serde(default)]
    pub bus: BusSettings,
    #[serde(default)]
    pub mappings: MappingSettings,
    #[serde(default)]
    pub engine: EngineSettings,
    #[serde(default)]
    pub delivery: DeliverySettings,
    #[serde(default)]
    pub log: LogSettings,
    #[serde(default)]
    pub bank: BankSettings,
    /// Connector instances by name; the name is the `{connector}` segment of
    /// `POST /hooks/{connector}`.
    #[serde(default)]
    pub connectors: BTreeMap<String, ConnectorSettings>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    /// Largest accepted webhook body; larger ones get 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Require a bearer token (any role) for `/metrics`.
    #[serde(default)]
    pub metrics_require_token: bool,
    /// How long a shutdown waits for in-flight requests.
    #[serde(default = "default_grace")]
    pub shutdown_grace_secs: u64,
}

const fn default_max_body() -> usize {
    1024 * 1024
}

const fn default_grace() -> u64 {
    30
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    pub backend: StoreBackend,
    /// Directory of the SQLite file (`dealbridge.db`), relative to the
    /// working directory unless absolute.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Environment variable holding the PostgreSQL URL (it may carry a
    /// password, so it never lives in the file).
    #[serde(default = "default_database_url_env")]
    pub url_env: String,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// How long `serve` keeps retrying (with exponential backoff) when the
    /// database is not reachable yet at start, e.g. while a container
    /// orchestrator is still starting PostgreSQL.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
}

const fn default_connect_timeout() -> u64 {
    30
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}

fn default_database_url_env() -> String {
    "DEALBRIDGE_DATABASE_URL".into()
}

const fn default_max_connections() -> u32 {
    8
}

/// Group-commit tuning of the webhook inbox.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InboxSettings {
    pub max_batch: usize,
    /// Concurrent commit tasks; 0 picks 1 for SQLite and 4 for PostgreSQL.
    pub writers: usize,
    pub queue_capacity: usize,
}

impl Default for InboxSettings {
    fn default() -> Self {
        Self { max_batch: 512, writers: 0, queue_capacity: 16_384 }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum BusBackend {
    /// The store-backed queue: no broker needed.
    #[default]
    Embedded,
    /// RabbitMQ quorum queues (production, several replicas).
    Rabbitmq,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusSettings {
    pub backend: BusBackend,
    /// Environment variable holding the RabbitMQ URL (it carries a password).
    pub url_env: String,
    /// Prefix of every RabbitMQ exchange and queue.
    pub prefix: String,
    /// Partitions: commands of one deal share one, partitions run in parallel.
    /// Every replica must use the same number.
    pub partitions: u32,
}

impl Default for BusSettings {
    fn default() -> Self {
        Self {
            backend: BusBackend::Embedded,
            url_env: "DEALBRIDGE_AMQP_URL".into(),
            prefix: "dealbridge".into(),
            partitions: 8,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingSettings {
    pub dir: PathBuf,
    /// Reload the set when its files change (the last good set keeps
    /// running if an edit is invalid).
    #[serde(default = "default_true")]
    pub watch: bool,
}

impl Default for MappingSettings {
    fn default() -> Self {
        Self { dir: PathBuf::from("mappings"), watch: true }
    }
}

const fn default_true() -> bool {
    true
}

/// How the engine's background loops pace themselves.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSettings {
    /// How often stored events are looked for when nothing woke the
    /// processor (events written by other hub replicas).
    pub event_poll_ms: u64,
    /// How often due timers are looked for.
    pub timer_poll_ms: u64,
    /// Map and apply stored events in this hub. `false` makes an
    /// accept-only hub: events are stored and stay pending until a hub that
    /// processes them runs (another replica, or this one restarted).
    pub process_events: bool,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self { event_poll_ms: 1000, timer_poll_ms: 1000, process_events: true }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable on a terminal, JSON otherwise.
    #[default]
    Auto,
    Human,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    #[serde(default)]
    pub format: LogFormat,
    /// `tracing` filter directive, e.g. `info,dealbridge=debug`. `RUST_LOG`
    /// wins when set.
    #[serde(default = "default_level")]
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self { format: LogFormat::Auto, level: default_level() }
    }
}

fn default_level() -> String {
    "info".into()
}

/// One connector instance: its kind and the kind's own settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ConnectorSettings {
    Http(dealbridge_connector_http::HttpConnectorConfig),
    Bitrix24(dealbridge_connector_bitrix24::Bitrix24Config),
    Amocrm(dealbridge_connector_amocrm::AmocrmConfig),
    /// Boxed: its many attribute names would make every variant as large.
    Onec(Box<dealbridge_connector_onec::OnecConfig>),
}

impl Settings {
    /// Where the SQLite file lives for the embedded store.
    pub fn sqlite_path(&self) -> PathBuf {
        self.store.data_dir.join("dealbridge.db")
    }
}
