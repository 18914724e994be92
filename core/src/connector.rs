//! The inbound half of a connector, as the hub's inbox sees it.
//!
//! The inbox stays system-agnostic: it asks the connector instance named in
//! the URL whether a request is authentic and which delivery key identifies
//! it, then persists the raw request untouched (but for a credential the
//! connector cuts out with `stored_body`). Decoding the body into
//! records happens later, after the 202, so a slow or failing decoder never
//! loses an accepted event.
//!
//! Two optional hooks serve sources whose events are thin (an id, no
//! fields) and that never redeliver a lost one, such as Bitrix24:
//! a [`RecordFetcher`] reads the records an event names just before they
//! are mapped, and a [`Reconciler`] finds changes whose events never
//! arrived (and, optionally, records the source deleted whose deletions
//! were lost) and hands the hub synthetic events for them, which take the
//! same path as received ones.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use http::HeaderMap;

/// What the inbox hands a connector to verify.
pub struct InboundRequest<'a> {
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    pub received_at: DateTime<Utc>,
}

/// A request the connector accepted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Identifies the delivery so retries of the same event are stored once
    /// (e.g. the Standard Webhooks `webhook-id`). `None` lets the inbox fall
    /// back to an `Idempotency-Key` header.
    pub delivery_key: Option<String>,
}

/// Why a connector refused a request. The message is shown to the caller,
/// so it must never contain a secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Rejection {
    /// Missing or wrong credentials or signature: answered 401.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The request cannot be this connector's event at all: answered 400.
    #[error("malformed request: {0}")]
    Malformed(String),
}

/// A record decoded from a raw event: what mapping bindings match on
/// (`connector` instance + `kind`) and read fields from (`data`).
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRecord {
    /// Record kind as the source names it, e.g. `deal.updated` or `deal`.
    pub kind: String,
    pub data: serde_json::Value,
}

/// Why a stored raw event could not be decoded. The event stays stored
/// (state `failed`) so it can be replayed after the cause is fixed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("cannot decode event: {0}")]
pub struct DecodeError(pub String);

/// The verifying half of an inbound connector. One value per configured
/// connector instance; the instance name is the `{connector}` path segment of
/// `POST /hooks/{connector}`.
pub trait InboundConnector: Send + Sync {
    /// The connector kind, e.g. `http` or `bitrix24`.
    fn kind(&self) -> &'static str;

    /// Checks authenticity without side effects and extracts the delivery key.
    fn verify(&self, request: &InboundRequest<'_>) -> Result<Verified, Rejection>;

    /// Checks the query string of the hook's URL (`?token=…`), before
    /// [`Self::verify`]. A source that can neither sign its requests nor
    /// send a header of ours (amoCRM) can only prove itself by a secret in
    /// the URL it was given. The query is never stored, and the request
    /// log shows only the path. The default accepts any query.
    fn verify_query(&self, _query: Option<&str>) -> Result<(), Rejection> {
        Ok(())
    }

    /// Request headers (lower case) worth keeping with the raw event besides
    /// the ones the inbox always keeps.
    fn kept_headers(&self) -> &'static [&'static str] {
        &[]
    }

    /// The bytes the inbox stores for a verified request: `None` keeps the
    /// body as received; a connector whose bodies carry a credential
    /// returns the body without it. Whatever it returns must still decode.
    fn stored_body(&self, _body: &[u8]) -> Option<Vec<u8>> {
        None
    }

    /// Turns a stored raw event into the records it carries. Runs after the
    /// 202, from the stored bytes, so it may be re-run on replay.
    fn decode(&self, body: &[u8], headers: &[(String, String)]) -> Result<Vec<SourceRecord>, DecodeError>;

    /// Reads what decoded records only name, before they are mapped. `None`
    /// (the default): records are mapped as decoded.
    fn fetcher(&self) -> Option<&dyn RecordFetcher> {
        None
    }

    /// Recovers changes whose events were lost. `None` (the default): the
    /// source's deliveries are trusted.
    fn reconciler(&self) -> Option<&dyn Reconciler> {
        None
    }
}

/// Records ready for the mappings, after the fetch step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FetchedRecords {
    pub records: Vec<SourceRecord>,
    /// Records the source no longer has (deleted there).
    pub gone: Vec<GoneRecord>,
    /// When the records were read from the source, for records that are
    /// its state as read then rather than the event's own payload. A state
    /// read while a write of the hub was on its way can be older than the
    /// canonical state in what that write changes.
    pub read_at: Option<DateTime<Utc>>,
    /// Indices of `records` the source says the hub itself changed last
    /// (Bitrix24: `MODIFY_BY_ID` is the configured integration user). Such
    /// a record that shows the hub's own last writes as written is their
    /// echo, and changes nothing.
    pub modified_by_hub: Vec<usize>,
}

impl FetchedRecords {
    /// Decoded records, mapped as they are.
    pub fn as_decoded(records: Vec<SourceRecord>) -> Self {
        Self { records, gone: Vec::new(), read_at: None, modified_by_hub: Vec::new() }
    }
}

/// A record the source says it no longer has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoneRecord {
    /// Connector kind, the `system` of the record's external ref.
    pub system: String,
    /// The record's id in that system.
    pub id: String,
}

/// Why records could not be fetched.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FetchError {
    /// Try the same event again later (rate limit, timeout, source down):
    /// it stays pending and later events wait behind it.
    #[error("fetch failed, will retry: {0}")]
    Transient(String),
    /// The event cannot be completed; it is kept as failed for replay.
    #[error("fetch failed: {0}")]
    Permanent(String),
}

/// Reads the records a stored event names (e.g. `crm.deal.get` for a
/// Bitrix24 event that carries only a deal id).
#[async_trait]
pub trait RecordFetcher: Send + Sync {
    /// `received_at` is when the hub received the event: a record read
    /// after that already shows what the event reports.
    async fn fetch(&self, records: Vec<SourceRecord>, received_at: DateTime<Utc>)
    -> Result<FetchedRecords, FetchError>;
}

/// An event the hub makes up for a change it found by itself. It is stored
/// like a received one; its delivery key makes a repeated find a duplicate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticEvent {
    pub delivery_key: String,
    /// Decodes like a received body (with `decode`), never `verify`.
    pub body: Vec<u8>,
}

/// What one reconciliation pass found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub events: Vec<SyntheticEvent>,
    /// Where the next pass starts; stored only after `events` are.
    pub cursor: Option<String>,
}

/// Finds changes in the source that no stored event reports.
#[async_trait]
pub trait Reconciler: Send + Sync {
    /// How often a pass should run.
    fn interval(&self) -> Duration;

    /// One pass from `cursor` (`None` the first time).
    async fn reconcile(&self, cursor: Option<&str>) -> Result<Reconciled, FetchError>;

    /// How often [`Self::vanished`] should run; `None` (the default): never.
    /// A source that lists changes by modification time cannot list what
    /// it deleted, so lost deletions need a check of their own.
    fn vanished_interval(&self) -> Option<Duration> {
        None
    }

    /// Synthetic deletion events for the records among `known` (ids of the
    /// records the hub holds refs of in this instance) that the source no
    /// longer has. Their delivery keys make a deletion found again a
    /// duplicate.
    async fn vanished(&self, _known: &[String]) -> Result<Vec<SyntheticEvent>, FetchError> {
        Ok(Vec::new())
    }
}
