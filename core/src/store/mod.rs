//! The durable store: one narrow trait, two backends.
//!
//! `SqliteStore` is the embedded default (one file under the data dir, WAL);
//! `PgStore` serves production and several hub replicas. Both run the same
//! conformance suite (`suite.rs`). Every write that belongs together goes
//! through one call — `append_events` for a batch of raw events, `apply` for
//! a `ChangeSet` — and each call is one transaction, so nothing is ever half
//! written.

mod applied_payments;
mod changeset;
mod cursors;
mod deal_refs;
mod deliveries;
mod doc;
mod error;
mod event;
pub mod invoice_keys;
mod payment_doc;
mod payments;
mod postgres;
mod postgres_deliveries;
mod postgres_delivery_batch;
mod postgres_invoices;
mod postgres_payment_copy;
mod postgres_payments;
mod replicas;
mod source_reads;
mod sqlite;
mod sqlite_checkpoint;
mod sqlite_deliveries;
mod sqlite_delivery_batch;
mod sqlite_invoices;
mod sqlite_memory;
mod sqlite_payments;
mod statement_file;
#[cfg(test)]
mod suite;
mod world;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::flow::effects::{Command, TraceStep};
use crate::model::{Deal, ExternalRef, Invoice, Task, Timer};

pub use applied_payments::AppliedPayments;
pub use changeset::{ChangeSet, EventOutcome};
pub use cursors::SourceCursors;
pub use deal_refs::DealRefs;
pub use deliveries::{
    AdminRefusal, Admission, Admitted, AttemptRecord, DeliveryLog, DeliveryRecord, DeliveryState, Lease, Settlement,
};
pub use error::StoreError;
pub use event::{Appended, EventState, NewRawEvent, RawEvent};
pub use invoice_keys::{InvoiceKeys, InvoicePaid};
pub use payments::{
    CommitOutcome, InvoiceChanges, NewStatement, OpenInvoice, PaymentCommit, PaymentLedger, PaymentSettlement,
    PaymentState, PaymentWrite, PaymentsBegun, StatementRecord, StatementTally, StoredPayment,
};
pub use postgres::PgStore;
pub use replicas::ReplicaRoll;
pub use source_reads::SourceReads;
pub use sqlite::SqliteStore;
pub use statement_file::{FileEncoding, StoredFile};
pub use world::{change_set_from_world, extend_world, load_world};

/// Which backend a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

#[async_trait]
/// Delivery bookkeeping (`DeliveryLog`), source cursors (`SourceCursors`),
/// source reads (`SourceReads`), the deals' ids per system (`DealRefs`),
/// payments (`PaymentLedger`) and the replica roll (`ReplicaRoll`) are part
/// of every store; their methods live in their own traits and files to
/// keep this one readable.
pub trait Store:
    DeliveryLog
    + SourceCursors
    + SourceReads
    + DealRefs
    + PaymentLedger
    + AppliedPayments
    + ReplicaRoll
    + Send
    + Sync
    + 'static
{
    fn backend(&self) -> Backend;

    /// Applies pending migrations. Idempotent.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Cheap round trip for readiness checks.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Persists raw events in one transaction. An event whose
    /// `(connector, delivery_key)` is already stored (or appears earlier in
    /// the same batch) is not stored again: its result carries the original
    /// id with `duplicate = true`. Results are in input order.
    async fn append_events(&self, events: &[NewRawEvent]) -> Result<Vec<Appended>, StoreError>;

    async fn get_event(&self, id: Uuid) -> Result<Option<RawEvent>, StoreError>;

    /// Raw events in arrival order with `seq > after_seq`, at most `limit`;
    /// used by the event processor and by replay.
    async fn events_after(&self, after_seq: i64, limit: u32) -> Result<Vec<RawEvent>, StoreError>;

    /// Applies a change set in one transaction: all of it or none of it.
    async fn apply(&self, changes: &ChangeSet) -> Result<(), StoreError>;

    async fn get_deal(&self, id: Uuid) -> Result<Option<Deal>, StoreError>;

    /// The deal that carries this external ref, if any.
    async fn find_deal(&self, external: &ExternalRef) -> Result<Option<Deal>, StoreError>;

    /// Child deals of `parent`, oldest first.
    async fn child_deals(&self, parent: Uuid) -> Result<Vec<Deal>, StoreError>;

    /// The deals with these ids, by id; unknown ids are skipped. Loads a world.
    async fn deals_by_ids(&self, ids: &[Uuid]) -> Result<Vec<Deal>, StoreError>;

    /// One invoice or order by id.
    async fn get_invoice(&self, id: Uuid) -> Result<Option<Invoice>, StoreError>;

    /// Invoices and orders of these deals, by id, for the engine's totals.
    async fn invoices_of_deals(&self, deals: &[Uuid]) -> Result<Vec<Invoice>, StoreError>;

    /// The invoice that carries this external ref, to match incoming documents.
    async fn find_invoice(&self, external: &ExternalRef) -> Result<Option<Invoice>, StoreError>;

    /// One task by id.
    async fn get_task(&self, id: Uuid) -> Result<Option<Task>, StoreError>;

    /// Tasks of these deals (only open ones if `open_only`), by id.
    async fn tasks_of_deals(&self, deals: &[Uuid], open_only: bool) -> Result<Vec<Task>, StoreError>;

    /// Timers of these deals (only pending ones if `pending_only`), by id.
    async fn timers_of_deals(&self, deals: &[Uuid], pending_only: bool) -> Result<Vec<Timer>, StoreError>;

    /// Pending timers due at or before `at`, earliest first (ties by id), at
    /// most `limit`: what the scheduler fires next.
    async fn due_timers(&self, at: DateTime<Utc>, limit: u32) -> Result<Vec<Timer>, StoreError>;

    /// Every team's round-robin position, for assignment.
    async fn team_cursors(&self) -> Result<BTreeMap<String, u64>, StoreError>;

    /// Open tasks assigned to each person plus deals they are responsible
    /// for, for least-loaded assignment; every person asked for is present.
    async fn person_loads(&self, people: &[String]) -> Result<BTreeMap<String, u64>, StoreError>;

    /// A deal's audit trail in the order it was written.
    async fn trace_of_deal(&self, deal: Uuid) -> Result<Vec<TraceStep>, StoreError>;

    /// Outbox commands concerning a deal in the order they were queued.
    async fn commands_of_deal(&self, deal: Uuid) -> Result<Vec<Command>, StoreError>;

    /// Every trace step caused by one of these raw events, in the order it
    /// was written; used by replay to compare what happened with what an
    /// edited mapping would do.
    async fn trace_of_causes(&self, causes: &[Uuid]) -> Result<Vec<TraceStep>, StoreError>;

    /// Every outbox command caused by one of these raw events, in the order
    /// it was queued; the replay counterpart of `trace_of_causes`.
    async fn commands_of_causes(&self, causes: &[Uuid]) -> Result<Vec<Command>, StoreError>;

    /// Unpublished outbox commands with `seq > after_seq`, by seq, at most
    /// `limit`, with their seq: what the outbox relay publishes next.
    async fn pending_commands(&self, after_seq: i64, limit: u32) -> Result<Vec<(i64, Command)>, StoreError>;

    /// Marks commands published so the relay skips them; unknown or already
    /// published ids are ignored.
    async fn mark_commands_published(&self, ids: &[Uuid]) -> Result<(), StoreError>;

    // The embedded bus (`crate::bus::EmbeddedBus`): a queue per partition.

    /// Queues messages in one transaction, in slice order: all or none. A
    /// message whose id is still in the queue (waiting, handed out, or
    /// acked and not yet removed) is the same one published again: skipped.
    async fn bus_enqueue(&self, messages: &[QueuedMessage]) -> Result<(), StoreError>;

    /// Takes or renews the lease of `partition` for `owner` until `until`;
    /// false when another owner holds an unexpired lease at `now`.
    async fn bus_lease(
        &self,
        partition: u32,
        owner: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Gives up `owner`'s lease of `partition` (no-op when not its owner).
    async fn bus_release(&self, partition: u32, owner: &str) -> Result<(), StoreError>;

    /// In one transaction: removes the `acked` messages (the consumer's
    /// previous batch), takes or renews the lease (as `bus_lease`) and,
    /// when it holds it, returns up to `limit` of the partition's first
    /// messages visible at `now`, in partition order, counting the delivery
    /// of each. Empty when not the owner or nothing is visible; with
    /// nothing to remove and nothing visible it writes nothing.
    async fn bus_claim(
        &self,
        partition: u32,
        owner: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: u32,
        acked: &[Uuid],
    ) -> Result<Vec<ClaimedMessage>, StoreError>;

    /// Removes acknowledged messages in one statement; unknown ids are
    /// ignored.
    async fn bus_ack(&self, ids: &[Uuid]) -> Result<(), StoreError>;

    /// Moves a message to the dead letters with a reason.
    async fn bus_dead_letter(&self, id: Uuid, reason: &str, at: DateTime<Utc>) -> Result<(), StoreError>;

    /// Puts a message at the back of its partition, invisible until
    /// `visible_at`, one attempt more and not yet delivered.
    async fn bus_retry(&self, id: Uuid, visible_at: DateTime<Utc>) -> Result<(), StoreError>;

    /// Dead letters, oldest first, at most `limit`.
    async fn bus_dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter>, StoreError>;
}

/// A message for the embedded bus queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    pub id: Uuid,
    pub partition: u32,
    pub key: String,
    pub idempotency_key: String,
    pub payload: Vec<u8>,
    pub visible_at: DateTime<Utc>,
}

/// The head of a partition as handed to its consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedMessage {
    pub message: QueuedMessage,
    /// Failed attempts so far (`bus_retry` calls).
    pub attempts: u32,
    /// Times it was handed out, this one included; > 1 means redelivered.
    pub deliveries: u32,
}

/// A dead-lettered bus message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub message: QueuedMessage,
    pub attempts: u32,
    pub reason: String,
    pub dead_at: DateTime<Utc>,
}

/// Opens the store a URL names: `sqlite://PATH` (created if missing) or
/// `postgres://…`.
pub async fn open(url: &str, max_connections: u32) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url, max_connections).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Arc::new(PgStore::connect(url, max_connections).await?))
    } else {
        Err(StoreError::Config(format!(
            "unsupported store URL scheme in `{}`: use sqlite:// or postgres://",
            redact_url(url)
        )))
    }
}

/// Drops the password from a connection URL before it is shown anywhere.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}://{}:***@{}", &url[..scheme_end], user, &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_leave_the_url_redactor() {
        assert_eq!(redact_url("postgres://hub:s3cret@db:5432/x"), "postgres://hub:***@db:5432/x");
        assert_eq!(redact_url("sqlite://data/hub.db"), "sqlite://data/hub.db");
    }
}
