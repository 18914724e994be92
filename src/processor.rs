//! The event processor: stored raw events → source records → canonical
//! changes.
//!
//! It walks the inbox in arrival order, decodes each pending event through
//! the connector instance that received it, lets the connector fetch what
//! the event only names (a Bitrix24 event carries a deal id, the deal is
//! read with `crm.deal.get`), keeps what was read beside the event (so a
//! replay maps that read, never the source as it is by then), and hands
//! the records to a `RecordHandler` (the mapping set and the flow
//! engine). Nothing is lost on the way: an event whose connector is gone
//! or whose body cannot be decoded or fetched is marked `failed` with the
//! reason and stays stored for replay; a transient failure (store down,
//! source rate-limited or unreachable) leaves the event pending and is
//! retried with backoff, so events are never processed out of order.
//!
//! The processor also runs each connector's reconciliation pass
//! ([`catch_up`]): changes whose events never arrived become synthetic
//! events in the inbox and take the same path.
//!
//! Acceptance comes first: the processor shares the machine (and, on
//! SQLite, the one writer) with the inbox, so while webhooks queue for
//! their commit it pauses between pages and lets its pages grow instead of
//! competing. Nothing is skipped: it catches up once the burst is over.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dealbridge_core::connector::{FetchError, FetchedRecords, InboundConnector, SourceRecord};
use dealbridge_core::inbox::InboxLoad;
use dealbridge_core::store::{Backend, ChangeSet, EventOutcome, EventState, RawEvent, Store, StoreError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::connectors::ConnectorRegistry;

pub mod catch_up;

/// Why a handler could not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Try the same event again later (the store is unreachable, …).
    #[error("transient: {0}")]
    Transient(String),
    /// This event cannot be applied as it is; mark it failed and move on.
    #[error("{0}")]
    Permanent(String),
}

impl From<StoreError> for HandleError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => HandleError::Transient(m),
            other => HandleError::Permanent(other.to_string()),
        }
    }
}

/// What a handler did with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// Applied; the handler recorded the outcome in the same transaction as
    /// the changes, so "processed" and its effects never disagree.
    Applied,
    /// Nothing is interested in it; the processor records the outcome,
    /// batched with others (it changes nothing else, so it can wait).
    Ignored(String),
}

/// Applies the records of one raw event.
#[async_trait]
pub trait RecordHandler: Send + Sync {
    async fn handle(&self, event: &RawEvent, records: FetchedRecords) -> Result<Handled, HandleError>;
}

/// Runs the processing loop until cancelled.
pub struct EventProcessor {
    pub store: Arc<dyn Store>,
    pub connectors: ConnectorRegistry,
    pub handler: Arc<dyn RecordHandler>,
    /// Woken by the inbox after each commit; the loop also polls, for
    /// events written by other hub replicas.
    pub wake: Arc<Notify>,
    /// How busy the inbox is; the processor gives way while it is.
    pub inbox_load: InboxLoad,
    pub poll_interval: Duration,
}

/// Most events read and settled per pass. Ignored and failed outcomes of a
/// page are written in one transaction, so a bigger page means fewer
/// transactions competing with the inbox for the writer.
const PAGE: u32 = 1024;

/// How long a woken processor waits for more events before a pass.
const GATHER: Duration = Duration::from_millis(25);

/// How long a gap in the event sequence may be a commit still in flight.
/// PostgreSQL inbox writers commit concurrently, so event 41 can become
/// visible after event 42: paging past the gap at once would skip 41 for
/// good. Younger gaps hold the cursor; older ones are rolled-back sequence
/// numbers that will never fill.
const GAP_GRACE: Duration = Duration::from_secs(10);

/// The pause before the next pass while webhooks are waiting for their
/// commit. It bounds the processor to about one page per pause under a
/// burst (tens of thousands of events per second), so it keeps up with
/// everything but an overload and drains that afterwards.
const YIELD_TO_INBOX: Duration = Duration::from_millis(50);

impl EventProcessor {
    pub async fn run(self, stop: CancellationToken) {
        let catching_up = catch_up::start(&self.store, &self.connectors, &self.wake, &stop);
        self.process(&stop).await;
        catching_up.join().await;
    }

    async fn process(&self, stop: &CancellationToken) {
        let mut cursor = 0i64;
        let mut backoff = Duration::from_millis(100);
        while !stop.is_cancelled() {
            match self.process_page(cursor).await {
                Ok(Some(next)) => {
                    cursor = next;
                    backoff = Duration::from_millis(100);
                    if self.inbox_load.queued() > 0 {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(YIELD_TO_INBOX) => {}
                        }
                    }
                    continue;
                }
                Ok(None) => backoff = Duration::from_millis(100),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "Event processing paused.");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.wake.notified() => {
                    // Let a few more commits land first: every pass ends in a
                    // transaction of its own, and on SQLite those share the
                    // one writer (and its fsync) with the inbox.
                    tokio::time::sleep(GATHER).await;
                }
                _ = tokio::time::sleep(self.poll_interval) => {}
            }
        }
    }

    /// Processes the events after `cursor`; returns the new cursor, or
    /// `None` when there was nothing new. A transient error stops before the
    /// failing event so it is retried first.
    async fn process_page(&self, cursor: i64) -> Result<Option<i64>, HandleError> {
        let mut events = self.store.events_after(cursor, PAGE).await?;
        // SQLite commits one writer at a time in `seq` order, so a gap there
        // never fills later (a repeated delivery can leave one): no wait.
        let grace = match self.store.backend() {
            Backend::Sqlite => Duration::ZERO,
            Backend::Postgres => GAP_GRACE,
        };
        events.truncate(settled_prefix(cursor, &events, chrono::Utc::now(), grace));
        let Some(last) = events.last().map(|e| e.seq) else { return Ok(None) };
        let mut done = cursor;
        // Outcomes that change nothing else (ignored, failed) are written
        // together: one transaction per page instead of one per event keeps
        // the single SQLite writer free for the inbox.
        let mut outcomes = Vec::new();
        let mut tally = Tally::default();
        let mut result = Ok(());
        for event in events.iter().filter(|e| e.state == EventState::Pending) {
            match self.process_one(event).await {
                Ok(outcome) => {
                    tally.count(event, outcome.as_ref());
                    outcomes.extend(outcome);
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
            done = event.seq;
        }
        if !outcomes.is_empty() {
            self.store.apply(&ChangeSet { event_outcomes: outcomes, ..Default::default() }).await?;
        }
        tally.report();
        result?;
        Ok(Some(done.max(last)))
    }

    /// Handles one event; returns the outcome still to record, if any.
    async fn process_one(&self, event: &RawEvent) -> Result<Option<EventOutcome>, HandleError> {
        let state = match self.connectors.get(&event.connector) {
            None => {
                Some(EventState::Failed { error: format!("connector `{}` is no longer configured", event.connector) })
            }
            Some(connector) => match connector.decode(&event.body, &event.headers) {
                Err(e) => Some(EventState::Failed { error: e.to_string() }),
                Ok(records) => {
                    let fetched = self.fetched(connector.as_ref(), event, records).await;
                    match fetched {
                        Err(FetchError::Transient(reason)) => return Err(HandleError::Transient(reason)),
                        Err(e @ FetchError::Permanent(_)) => Some(EventState::Failed { error: e.to_string() }),
                        Ok(fetched) => match self.handler.handle(event, fetched).await {
                            Ok(Handled::Applied) => None,
                            Ok(Handled::Ignored(reason)) => Some(EventState::Ignored { reason }),
                            Err(HandleError::Permanent(error)) => Some(EventState::Failed { error }),
                            Err(transient) => return Err(transient),
                        },
                    }
                }
            },
        };
        Ok(state.map(|state| EventOutcome { event_id: event.id, state }))
    }

    /// The records ready for mapping: as decoded, or as the connector's
    /// fetch step read them, which is then kept beside the event for
    /// replay (before the event is handled: a crash in between reads and
    /// keeps again).
    async fn fetched(
        &self,
        connector: &dyn InboundConnector,
        event: &RawEvent,
        records: Vec<SourceRecord>,
    ) -> Result<FetchedRecords, FetchError> {
        let Some(fetcher) = connector.fetcher() else { return Ok(FetchedRecords::as_decoded(records)) };
        let fetched = fetcher.fetch(records, event.received_at).await?;
        match self.store.keep_source_read(event.id, &fetched, chrono::Utc::now()).await {
            Ok(()) => Ok(fetched),
            Err(StoreError::Unavailable(reason)) => Err(FetchError::Transient(format!("keeping the read: {reason}"))),
            Err(e) => Err(FetchError::Permanent(format!("keeping the read for replay: {e}"))),
        }
    }
}

/// What one pass did, reported once per pass rather than once per event:
/// a sender posting thousands of undecodable events must not turn into
/// thousands of log lines (each event keeps its own error in the store).
#[derive(Default)]
struct Tally {
    handled: u64,
    ignored: u64,
    /// Failures by (connector, error): how many, and the first event's id.
    failed: BTreeMap<(String, String), (u64, uuid::Uuid)>,
}

impl Tally {
    fn count(&mut self, event: &RawEvent, outcome: Option<&EventOutcome>) {
        match outcome.map(|o| &o.state) {
            None => self.handled += 1,
            Some(EventState::Failed { error }) => {
                self.failed.entry((event.connector.clone(), error.clone())).or_insert((0, event.id)).0 += 1;
            }
            Some(_) => self.ignored += 1,
        }
    }

    fn report(self) {
        let failed: u64 = self.failed.values().map(|(n, _)| n).sum();
        for (outcome, n) in [("handled", self.handled), ("ignored", self.ignored), ("failed", failed)] {
            if n > 0 {
                metrics::counter!("dealbridge_events_processed_total", "outcome" => outcome).increment(n);
            }
        }
        for ((connector, error), (events, first)) in self.failed {
            tracing::warn!(events, first_event_id = %first, %connector, %error, "Events failed; kept for replay.");
        }
    }
}

/// How many of `events` (read after `cursor`, in seq order) can be passed
/// by the cursor: all of them up to the first gap in the sequence that is
/// younger than `grace` (a commit that may still land in it).
fn settled_prefix(cursor: i64, events: &[RawEvent], now: chrono::DateTime<chrono::Utc>, grace: Duration) -> usize {
    let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    let mut previous = cursor;
    for (i, event) in events.iter().enumerate() {
        let gap = event.seq > previous + 1;
        if gap && now - event.received_at < grace {
            return i;
        }
        previous = event.seq;
    }
    events.len()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use chrono::Utc;
    use dealbridge_core::store::NewRawEvent;

    use super::*;
    use crate::settings::ConnectorSettings;

    /// Records what it was given; fails transiently the first `flaky` times.
    struct RecordingHandler {
        seen: Mutex<Vec<(String, String)>>,
        flaky: Mutex<u32>,
        store: Arc<dyn Store>,
    }

    #[async_trait]
    impl RecordHandler for RecordingHandler {
        async fn handle(&self, event: &RawEvent, records: FetchedRecords) -> Result<Handled, HandleError> {
            {
                let mut flaky = self.flaky.lock().unwrap();
                if *flaky > 0 {
                    *flaky -= 1;
                    return Err(HandleError::Transient("store hiccup".into()));
                }
            }
            for r in records.records {
                self.seen.lock().unwrap().push((r.kind, r.data.to_string()));
            }
            let state = EventState::Processed { mapping_version: "test".into() };
            let outcome = EventOutcome { event_id: event.id, state };
            self.store.apply(&ChangeSet { event_outcomes: vec![outcome], ..Default::default() }).await?;
            Ok(Handled::Applied)
        }
    }

    fn raw(connector: &str, body: &str) -> NewRawEvent {
        NewRawEvent {
            id: uuid::Uuid::now_v7(),
            connector: connector.into(),
            delivery_key: None,
            received_at: Utc::now(),
            headers: vec![],
            body: body.as_bytes().to_vec(),
        }
    }

    #[tokio::test]
    async fn events_are_handled_in_order_and_undecodable_ones_are_kept_as_failed() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            dealbridge_core::store::open(&format!("sqlite://{}/hub.db", dir.path().display()), 2).await.unwrap();
        store.migrate().await.unwrap();
        let events = [
            raw("http", r#"{"type":"deal.updated","data":{"id":"1"}}"#),
            raw("http", "not json"),
            raw("gone", r#"{"type":"deal.updated","data":{"id":"3"}}"#),
            raw("http", r#"{"type":"deal.updated","data":{"id":"4"}}"#),
        ];
        store.append_events(&events).await.unwrap();

        let mut configs = BTreeMap::new();
        let http = dealbridge_connector_http::HttpConnectorConfig {
            secret_env: "S".into(),
            tolerance_secs: 300,
            outbound: None,
        };
        configs.insert("http".to_string(), ConnectorSettings::Http(http));
        let secret = |_: &str| Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string());
        let handler =
            Arc::new(RecordingHandler { seen: Mutex::new(vec![]), flaky: Mutex::new(2), store: store.clone() });
        let processor = EventProcessor {
            store: store.clone(),
            connectors: ConnectorRegistry::build(&configs, &Default::default(), &secret).unwrap(),
            handler: handler.clone(),
            wake: Arc::new(Notify::new()),
            inbox_load: InboxLoad::default(),
            poll_interval: Duration::from_millis(20),
        };
        let stop = CancellationToken::new();
        let running = tokio::spawn(processor.run(stop.clone()));
        for _ in 0..100 {
            if store.get_event(events[3].id).await.unwrap().unwrap().state != EventState::Pending {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
        running.await.unwrap();

        let seen = handler.seen.lock().unwrap().clone();
        assert_eq!(seen.iter().map(|(_, d)| d.as_str()).collect::<Vec<_>>(), [r#"{"id":"1"}"#, r#"{"id":"4"}"#]);
        let state = |i: usize| {
            let store = store.clone();
            let id = events[i].id;
            async move { store.get_event(id).await.unwrap().unwrap().state }
        };
        assert!(matches!(state(0).await, EventState::Processed { .. }));
        assert!(matches!(state(1).await, EventState::Failed { error } if error.contains("not JSON")));
        assert!(matches!(state(2).await, EventState::Failed { error } if error.contains("no longer configured")));
        assert!(matches!(state(3).await, EventState::Processed { .. }));
    }

    fn stored(seq: i64, received_at: chrono::DateTime<Utc>) -> RawEvent {
        RawEvent {
            seq,
            id: uuid::Uuid::now_v7(),
            connector: "http".into(),
            delivery_key: None,
            received_at,
            headers: Vec::new(),
            body: Vec::new(),
            state: EventState::Pending,
            processed_at: None,
        }
    }

    #[test]
    fn the_cursor_waits_at_a_young_gap_and_passes_an_old_one() {
        let now = Utc::now();
        let grace = Duration::from_secs(10);
        let young = now - chrono::Duration::seconds(1);
        let old = now - chrono::Duration::seconds(60);
        // 41 is still committing (PostgreSQL writers commit out of order).
        let events = [stored(40, young), stored(42, young), stored(43, young)];
        assert_eq!(settled_prefix(39, &events, now, grace), 1, "stops before the gap at 41");
        assert_eq!(settled_prefix(40, &events[1..], now, grace), 0, "nothing passes a young gap");
        // A gap older than the grace is a rolled-back number: go on.
        let events = [stored(40, old), stored(42, old), stored(43, young)];
        assert_eq!(settled_prefix(39, &events, now, grace), 3);
        // No gap at all.
        assert_eq!(settled_prefix(0, &[stored(1, young), stored(2, young)], now, grace), 2);
    }
}
