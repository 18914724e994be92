//! The hub as one value: opened store, running inbox writers, connectors,
//! tokens and metrics. `serve` builds it and runs the HTTP server; the
//! end-to-end tests build it the same way on a random port.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use backon::{ExponentialBuilder, Retryable};
use dealbridge_core::inbox::{GroupCommitter, InboxOptions};
use dealbridge_core::store::{self, Backend, Store, StoreError};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::connectors::ConnectorRegistry;
use crate::server;
use crate::settings::{ApiTokens, Settings, StoreBackend};

/// Shared by every request handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub inbox: GroupCommitter,
    pub connectors: ConnectorRegistry,
    pub tokens: ApiTokens,
    pub metrics: PrometheusHandle,
    pub settings: Arc<Settings>,
}

/// A started hub: state plus the inbox writer tasks it must drain on exit.
pub struct Hub {
    pub state: AppState,
    writers: JoinSet<()>,
}

/// Opens the configured store and returns it with its URL for messages.
pub async fn open_store(settings: &Settings, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Arc<dyn Store>> {
    let url = match settings.store.backend {
        StoreBackend::Sqlite => format!("sqlite://{}", settings.sqlite_path().display()),
        StoreBackend::Postgres => env(&settings.store.url_env)
            .with_context(|| format!("store.backend is postgres but {} is not set", settings.store.url_env))?,
    };
    // The database may come up after the hub (containers start together):
    // retry transient failures with exponential backoff and jitter for up to
    // `connect_timeout_secs` in all, but fail at once on configuration errors.
    let patience = Duration::from_secs(settings.store.connect_timeout_secs);
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .without_max_times()
        .with_jitter();
    let last_error = std::sync::Mutex::new(None::<String>);
    let attempts = (|| store::open(&url, settings.store.max_connections))
        .retry(backoff)
        .when(|e| matches!(e, StoreError::Unavailable(_)))
        .notify(|e, wait| {
            tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "Store not reachable yet; retrying.");
            *last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
        });
    let context = || format!("opening the {} store at {}", backend_name(settings), store::redact_url(&url));
    let store = match tokio::time::timeout(patience, attempts).await {
        Ok(result) => result.with_context(context)?,
        Err(_) => {
            let last = last_error.lock().unwrap_or_else(|p| p.into_inner()).take().unwrap_or_default();
            anyhow::bail!("{}: not reachable within {} s (last error: {last})", context(), patience.as_secs());
        }
    };
    Ok(store)
}

fn backend_name(settings: &Settings) -> &'static str {
    match settings.store.backend {
        StoreBackend::Sqlite => "SQLite",
        StoreBackend::Postgres => "PostgreSQL",
    }
}

impl Hub {
    /// Opens and migrates the store, starts the inbox writers and builds
    /// the connectors. Secrets are read through `env`.
    pub async fn start(settings: Settings, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let connectors = ConnectorRegistry::build(&settings.connectors, env)?;
        let tokens = ApiTokens::from_env(env)?;
        if tokens.is_empty() {
            tracing::warn!("No API tokens are configured: every /api request will be refused.");
        }
        let store = open_store(&settings, env).await?;
        store.migrate().await.context("migrating the store")?;
        let writers = match (settings.inbox.writers, store.backend()) {
            (0, Backend::Sqlite) => 1,
            (0, Backend::Postgres) => 4,
            (n, _) => n,
        };
        let options = InboxOptions {
            max_batch: settings.inbox.max_batch,
            writers,
            queue_capacity: settings.inbox.queue_capacity,
        };
        let (inbox, writers) = GroupCommitter::start(store.clone(), options);
        let state = AppState {
            store,
            inbox,
            connectors,
            tokens,
            metrics: crate::telemetry::metrics_handle(),
            settings: Arc::new(settings),
        };
        Ok(Self { state, writers })
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets
    /// in-flight requests finish (up to the grace period) and waits until
    /// the inbox has committed everything it accepted.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Hub { state, mut writers } = self;
        let grace = Duration::from_secs(state.settings.server.shutdown_grace_secs);
        let router = server::router(state);
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("Shutdown requested; draining in-flight requests.");
            let _ = stopping_tx.send(());
        });
        let serve = async move { serve.await.context("HTTP server failed") };
        tokio::pin!(serve);
        tokio::select! {
            result = &mut serve => result?,
            _ = async { let _ = stopping_rx.await; tokio::time::sleep(grace).await } => {
                tracing::warn!(grace_secs = grace.as_secs(), "In-flight requests did not finish within the grace period.");
            }
        }
        // Every handler (and its inbox handle) is gone once the server has
        // stopped; the writers then drain the queue and exit.
        while writers.join_next().await.is_some() {}
        tracing::info!("Hub stopped.");
        Ok(())
    }
}
