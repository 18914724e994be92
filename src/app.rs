//! The hub as one value: opened store, running inbox writers, connectors,
//! tokens, metrics, the live mapping set, and the background loops (event
//! processor, timer scheduler, outbox relay, dispatcher). `serve` builds it
//! and runs the HTTP server; the end-to-end tests build it the same way on a
//! random port.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use backon::{ExponentialBuilder, Retryable};
use dealbridge_connector_bank::matching::open_index::OpenInvoiceIndex;
use dealbridge_core::bus::{Bus, EmbeddedBus, RabbitBus, RabbitConfig};
use dealbridge_core::delivery::{CommandPerformer, DeliveryGauges, DeliveryPolicy, Dispatcher, ReplicaRoster, Share};
use dealbridge_core::inbox::{GroupCommitter, InboxOptions};
use dealbridge_core::mapping::MappingSet;
use dealbridge_core::outbox::OutboxRelay;
use dealbridge_core::runner::EngineRunner;
use dealbridge_core::store::{self, Backend, Store, StoreError};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::connectors::ConnectorRegistry;
use crate::mapping_handler::MappingHandler;
use crate::processor::EventProcessor;
use crate::reload::{LiveSet, LoadFn, MappingWatcher};
use crate::server;
use crate::settings::{ApiTokens, BusBackend, SecretError, Settings, StoreBackend};

/// Shared by every request handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub inbox: GroupCommitter,
    pub connectors: ConnectorRegistry,
    pub tokens: ApiTokens,
    pub metrics: PrometheusHandle,
    pub settings: Arc<Settings>,
    /// The mapping set in force (swapped atomically on a valid edit).
    pub mappings: Arc<LiveSet<MappingSet>>,
    pub runner: EngineRunner,
    /// Where committed commands go (embedded queue or RabbitMQ).
    pub bus: Arc<dyn Bus>,
    /// Delivery policy, checked at start.
    pub delivery: Arc<DeliveryPolicy>,
    /// The open invoices statement imports match against, kept in memory
    /// (`[bank] open_invoices_in_memory`).
    pub open_invoices: Option<Arc<OpenInvoiceIndex>>,
}

/// A started hub: state plus the inbox writer tasks it must drain on exit
/// and the engine loops it stops.
pub struct Hub {
    pub state: AppState,
    writers: JoinSet<()>,
    loops: JoinSet<()>,
    stop_loops: CancellationToken,
    _watcher: Option<MappingWatcher>,
}

/// The mapping set could not be loaded: every problem as `file:line:column: message`.
#[derive(Debug, thiserror::Error)]
#[error("the mapping set is invalid:\n{}", .0.join("\n"))]
pub struct MappingsError(pub Vec<String>);

/// Loads and validates a whole mapping directory.
pub fn mapping_loader() -> LoadFn<MappingSet> {
    Arc::new(|dir: &std::path::Path| {
        MappingSet::load_dir(dir).map_err(|diagnostics| diagnostics.iter().map(ToString::to_string).collect())
    })
}

/// Opens the configured store and returns it with its URL for messages.
pub async fn open_store(settings: &Settings, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Arc<dyn Store>> {
    let url = match settings.store.backend {
        StoreBackend::Sqlite => format!("sqlite://{}", settings.sqlite_path().display()),
        StoreBackend::Postgres => env(&settings.store.url_env).ok_or_else(|| SecretError {
            var: settings.store.url_env.clone(),
            message: "not set: store.backend is postgres and needs the database URL".into(),
        })?,
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

/// Connects the configured bus; RabbitMQ declares and checks its topology
/// and refuses one that could lose messages.
pub async fn open_bus(
    settings: &Settings,
    store: &Arc<dyn Store>,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Arc<dyn Bus>> {
    let bus = &settings.bus;
    Ok(match bus.backend {
        BusBackend::Embedded => Arc::new(EmbeddedBus::new(store.clone(), bus.partitions)),
        BusBackend::Rabbitmq => {
            let url = env(&bus.url_env).ok_or_else(|| SecretError {
                var: bus.url_env.clone(),
                message: "not set: bus.backend is rabbitmq and needs the broker URL".into(),
            })?;
            let config = RabbitConfig {
                url: url.clone(),
                prefix: bus.prefix.clone(),
                partitions: bus.partitions,
                retry_buckets: Vec::new(),
            };
            let connected = RabbitBus::connect(&config)
                .await
                .with_context(|| format!("connecting the bus at {}", store::redact_url(&url)))?;
            // Twice the batch: the next batch streams in while one is worked on.
            Arc::new(connected.with_prefetch(settings.delivery.batch.saturating_mul(2)))
        }
    })
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
        let connectors = ConnectorRegistry::build(&settings.connectors, &settings.delivery.targets, env)?;
        let delivery = Arc::new(settings.delivery.policy().map_err(|e| anyhow::anyhow!("invalid config: {e}"))?);
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
        let mappings = LiveSet::load(&settings.mappings.dir, mapping_loader()).map_err(MappingsError)?;
        tracing::info!(dir = %settings.mappings.dir.display(), version = mappings.current().version(), "Mapping set loaded.");
        let watcher = if settings.mappings.watch {
            Some(mappings.watch(Duration::from_millis(300)).context("watching the mappings directory")?)
        } else {
            None
        };
        let bus = open_bus(&settings, &store, env).await?;
        let (inbox, writers) = GroupCommitter::start(store.clone(), options);
        let runner = EngineRunner::new(store.clone());
        let open_invoices = settings.bank.open_invoices_in_memory.then(|| Arc::new(OpenInvoiceIndex::new()));
        let state = AppState {
            store,
            inbox,
            connectors,
            tokens,
            metrics: crate::telemetry::metrics_handle(),
            settings: Arc::new(settings),
            mappings,
            runner,
            bus,
            delivery,
            open_invoices,
        };
        let stop_loops = CancellationToken::new();
        let mut loops = start_engine_loops(&state, &stop_loops);
        if let Some(index) = state.open_invoices.clone() {
            loops.spawn(read_open_invoices(index, state.store.clone()));
        }
        Ok(Self { state, writers, loops, stop_loops, _watcher: watcher })
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets
    /// in-flight requests finish (up to the grace period) and waits until
    /// the inbox has committed everything it accepted.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Hub { state, mut writers, mut loops, stop_loops, _watcher } = self;
        let grace = Duration::from_secs(state.settings.server.shutdown_grace_secs);
        let router = server::router(state);
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("Shutdown requested; draining in-flight requests.");
            let _ = stopping_tx.send(());
        });
        let serve = async move { serve.await.context("HTTP server failed") };
        let mut serve = Box::pin(serve);
        let stalled = tokio::select! {
            result = &mut serve => {
                result?;
                false
            }
            _ = async { let _ = stopping_rx.await; tokio::time::sleep(grace).await } => {
                tracing::warn!(grace_secs = grace.as_secs(), "In-flight requests did not finish within the grace period.");
                true
            }
        };
        drop(serve);
        // Once every handler (and its inbox handle) is gone the writers drain
        // the queue and exit. Connections stalled past the grace period may
        // still hold a handle: give the writers one more grace period, then
        // stop them. Nothing acknowledged is lost that way — a 202 is only
        // sent after its commit, so whatever is still queued was never
        // answered.
        let drained = tokio::time::timeout(grace.max(Duration::from_secs(1)), async {
            while writers.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(stalled, "Inbox writers still had senders after the grace period; stopping them.");
            writers.abort_all();
            while writers.join_next().await.is_some() {}
        }
        // Whatever the loops are applying commits or rolls back as a whole.
        stop_loops.cancel();
        while loops.join_next().await.is_some() {}
        tracing::info!("Hub stopped.");
        Ok(())
    }
}

/// Fills the in-memory open invoices on start, so the first import does not
/// wait for it. A failure is only logged: the first import reads them again.
async fn read_open_invoices(index: Arc<OpenInvoiceIndex>, store: Arc<dyn Store>) {
    let started = std::time::Instant::now();
    match index.current(store.as_ref()).await {
        Ok(Some(view)) => tracing::info!(
            invoices = view.len(),
            ms = started.elapsed().as_millis() as u64,
            "Open invoices read into memory for statement imports."
        ),
        Ok(None) => tracing::info!("This store does not number invoice writes: imports look invoices up in it."),
        Err(error) => tracing::warn!(%error, "Reading the open invoices into memory failed; the first import retries."),
    }
}

/// Starts the event processor and the timer scheduler.
fn start_engine_loops(state: &AppState, stop: &CancellationToken) -> JoinSet<()> {
    let mut loops = JoinSet::new();
    let handler =
        MappingHandler { store: state.store.clone(), runner: state.runner.clone(), mappings: state.mappings.clone() };
    let processor = EventProcessor {
        store: state.store.clone(),
        connectors: state.connectors.clone(),
        handler: Arc::new(handler),
        wake: state.inbox.committed(),
        inbox_load: state.inbox.load(),
        poll_interval: Duration::from_millis(state.settings.engine.event_poll_ms.max(10)),
    };
    if state.settings.engine.process_events {
        loops.spawn(processor.run(stop.clone()));
    } else {
        tracing::warn!("engine.process_events is false: stored events stay pending.");
    }
    let timers = TimerScheduler {
        runner: state.runner.clone(),
        mappings: state.mappings.clone(),
        poll_interval: Duration::from_millis(state.settings.engine.timer_poll_ms.max(10)),
    };
    loops.spawn(timers.run(stop.clone()));
    let replica = replica_id();
    let (share_tx, share) = watch::channel(Share::ALONE);
    let ttl = Duration::from_secs(state.settings.delivery.replica_ttl_secs.max(1));
    let roster = ReplicaRoster { store: state.store.clone(), replica: replica.clone(), ttl, every: ttl / 4 };
    loops.spawn(roster.run(share_tx, stop.clone()));
    let relay = OutboxRelay {
        store: state.store.clone(),
        bus: state.bus.clone(),
        batch: 256,
        wake: state.runner.commands_committed(),
        poll_interval: Duration::from_millis(state.settings.engine.event_poll_ms.max(10)),
        share: share.clone(),
    };
    loops.spawn(relay.run(stop.clone()));
    // Shared with the connectors' own reads (e.g. Bitrix24 fetches), so a
    // portal's budget covers every call the hub makes to it.
    let gates = state.connectors.gates();
    let performer = Arc::new(CommandPerformer::new(state.connectors.outbound(), gates.clone(), state.delivery.clone()));
    let dispatcher = Arc::new(Dispatcher {
        store: state.store.clone(),
        bus: state.bus.clone(),
        performer,
        owner: replica,
        resume_poll: Duration::from_millis(state.settings.delivery.resume_poll_ms.max(10)),
        batch: usize::from(state.settings.delivery.batch),
        share,
    });
    loops.spawn(dispatcher.run(stop.clone()));
    let gauges =
        DeliveryGauges { store: state.store.clone(), bus: state.bus.clone(), gates, every: Duration::from_secs(5) };
    loops.spawn(gauges.run(stop.clone()));
    if let Some(folder) = crate::server::api::statement_folder(state) {
        loops.spawn(folder.run(stop.clone()));
    }
    loops
}

/// Names this process in leases it takes: host, pid and a random part (a
/// restarted process must not inherit its predecessor's leases).
fn replica_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "hub".into());
    format!("{host}-{}-{}", std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// Fires due timers. Timers are rows, so a restarted hub picks up where
/// the last one stopped; several replicas may race for a timer and the
/// engine's deterministic ids make the loser's write a no-op.
struct TimerScheduler {
    runner: EngineRunner,
    mappings: Arc<LiveSet<MappingSet>>,
    poll_interval: Duration,
}

impl TimerScheduler {
    const BATCH: u32 = 100;

    async fn run(self, stop: CancellationToken) {
        let mut backoff = self.poll_interval;
        while !stop.is_cancelled() {
            let set = self.mappings.current();
            let wait = match self.runner.fire_due_timers(&set, chrono::Utc::now(), Self::BATCH).await {
                // A full batch: more may be due right away.
                Ok(fired) if fired as u32 == Self::BATCH => Duration::ZERO,
                Ok(_) => {
                    backoff = self.poll_interval;
                    self.poll_interval
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "Timer scheduler paused.");
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    backoff
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}
