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

use std::sync::Arc;
use std::time::Duration;

use dealbridge_core::connector::InboundConnector;
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
        let pass =
            Pass { name: name.to_owned(), connector: connector.clone(), store: store.clone(), wake: wake.clone() };
        let stop = stop.clone();
        loops.spawn(async move {
            loop {
                pass.run().await;
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

    async fn try_run(&self) -> Result<(), String> {
        let Some(reconciler) = self.connector.reconciler() else { return Ok(()) };
        let cursor_name = self.cursor_name();
        let cursor = self.store.source_cursor(&cursor_name).await.map_err(|e| e.to_string())?;
        let found = reconciler.reconcile(cursor.as_deref()).await.map_err(|e| e.to_string())?;
        let now = chrono::Utc::now();
        let events: Vec<NewRawEvent> = found
            .events
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
        let mut added = 0u64;
        if !events.is_empty() {
            let appended = self.store.append_events(&events).await.map_err(|e| e.to_string())?;
            added = appended.iter().filter(|a| !a.duplicate).count() as u64;
            if added > 0 {
                self.wake.notify_one();
            }
        }
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
