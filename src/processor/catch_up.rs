//! Reconciliation passes: for each connector instance that has a
//! [`Reconciler`](dealbridge_core::connector::Reconciler) (Bitrix24 never
//! redelivers a lost event), a loop runs a pass at start and then every
//! interval, appends what it found to the inbox as synthetic events and
//! stores where the next pass goes on from.
//!
//! Synthetic events carry delivery keys, so finding the same change twice
//! (an overlap between passes, two hub replicas) stores it once; they are
//! processed in arrival order with the received ones. The cursor is stored
//! only after the events, so a crash in between repeats a pass rather than
//! skipping one.
//!
//! A reconciler that checks for deletions whose events were lost (its
//! `vanished_interval`) is also handed, that often, the ids of the deals
//! the hub knows in its instance; the deletions it finds are stored the
//! same way.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dealbridge_core::connector::{InboundConnector, SyntheticEvent};
use dealbridge_core::store::{NewRawEvent, Store};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::connectors::ConnectorRegistry;

/// Header kept with every synthetic event, naming what made it.
pub const SOURCE_HEADER: &str = "x-dealbridge-source";

/// The running reconciliation loops.
pub struct CatchingUp {
    loops: JoinSet<()>,
}

impl CatchingUp {
    /// Waits until every loop has seen the stop.
    pub async fn join(mut self) {
        while self.loops.join_next().await.is_some() {}
    }
}

/// Starts one loop per connector instance that reconciles.
pub fn start(
    store: &Arc<dyn Store>,
    connectors: &ConnectorRegistry,
    wake: &Arc<Notify>,
    stop: &CancellationToken,
) -> CatchingUp {
    let mut loops = JoinSet::new();
    for name in connectors.names() {
        let Some(connector) = connectors.get(name) else { continue };
        let Some(interval) = connector.reconciler().map(|r| r.interval()) else { continue };
        let deletions_every = connector.reconciler().and_then(|r| r.vanished_interval());
        let pass =
            Pass { name: name.to_owned(), connector: connector.clone(), store: store.clone(), wake: wake.clone() };
        let stop = stop.clone();
        loops.spawn(async move {
            let mut checked: Option<Instant> = None;
            loop {
                pass.run().await;
                if let Some(every) = deletions_every
                    && checked.is_none_or(|at| at.elapsed() >= every)
                {
                    pass.check_deletions().await;
                    checked = Some(Instant::now());
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(interval.max(Duration::from_millis(100))) => {}
                }
            }
        });
    }
    CatchingUp { loops }
}

/// One connector instance's pass.
struct Pass {
    name: String,
    connector: Arc<dyn InboundConnector>,
    store: Arc<dyn Store>,
    wake: Arc<Notify>,
}

impl Pass {
    fn cursor_name(&self) -> String {
        format!("{}:catch-up", self.name)
    }

    /// Runs a pass; a failure is logged and the next pass tries again.
    async fn run(&self) {
        if let Err(error) = self.try_run().await {
            tracing::warn!(connector = %self.name, %error, "Catch-up pass failed; the next one retries.");
            metrics::counter!("dealbridge_catch_up_failures_total", "connector" => self.name.clone()).increment(1);
        }
    }

    /// Stores synthetic events (a repeated delivery key is a duplicate);
    /// how many were new.
    async fn store_events(
        &self,
        found: Vec<SyntheticEvent>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, String> {
        if found.is_empty() {
            return Ok(0);
        }
        let events: Vec<NewRawEvent> = found
            .into_iter()
            .map(|e| NewRawEvent {
                id: dealbridge_core::model::new_id(),
                connector: self.name.clone(),
                delivery_key: Some(e.delivery_key),
                received_at: now,
                headers: vec![(SOURCE_HEADER.to_owned(), "catch-up".to_owned())],
                body: e.body,
            })
            .collect();
        let appended = self.store.append_events(&events).await.map_err(|e| e.to_string())?;
        let added = appended.iter().filter(|a| !a.duplicate).count() as u64;
        if added > 0 {
            self.wake.notify_one();
        }
        Ok(added)
    }

    /// Asks the source which of the deals the hub knows in this instance
    /// it no longer has; a failure is logged and the next check tries again.
    async fn check_deletions(&self) {
        let Some(reconciler) = self.connector.reconciler() else { return };
        let outcome = async {
            let known = self.store.deal_ids_in(self.connector.kind(), &self.name).await.map_err(|e| e.to_string())?;
            let found = reconciler.vanished(&known).await.map_err(|e| e.to_string())?;
            self.store_events(found, chrono::Utc::now()).await
        };
        match outcome.await {
            Ok(0) => {}
            Ok(added) => {
                tracing::info!(connector = %self.name, deals = added, "Deals deleted in the source without an event.");
            }
            Err(error) => {
                tracing::warn!(connector = %self.name, %error, "Deletion check failed; the next one retries.");
                metrics::counter!("dealbridge_catch_up_failures_total", "connector" => self.name.clone()).increment(1);
            }
        }
    }

    async fn try_run(&self) -> Result<(), String> {
        let Some(reconciler) = self.connector.reconciler() else { return Ok(()) };
        let cursor_name = self.cursor_name();
        let cursor = self.store.source_cursor(&cursor_name).await.map_err(|e| e.to_string())?;
        let found = reconciler.reconcile(cursor.as_deref()).await.map_err(|e| e.to_string())?;
        let now = chrono::Utc::now();
        let added = self.store_events(found.events, now).await?;
        if let Some(next) = found.cursor
            && cursor.as_deref() != Some(next.as_str())
        {
            self.store.set_source_cursor(&cursor_name, &next, now).await.map_err(|e| e.to_string())?;
        }
        metrics::counter!("dealbridge_catch_up_events_total", "connector" => self.name.clone()).increment(added);
        if added > 0 {
            tracing::info!(connector = %self.name, events = added, "Catch-up found changes no event reported.");
        }
        Ok(())
    }
}
