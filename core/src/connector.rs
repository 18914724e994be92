//! The inbound half of a connector, as the hub's inbox sees it.
//!
//! The inbox stays system-agnostic: it asks the connector instance named in
//! the URL whether a request is authentic and which delivery key identifies
//! it, then persists the raw request untouched. Decoding the body into
//! records happens later, after the 202, so a slow or failing decoder never
//! loses an accepted event.

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

    /// Request headers (lower case) worth keeping with the raw event besides
    /// the ones the inbox always keeps.
    fn kept_headers(&self) -> &'static [&'static str] {
        &[]
    }

    /// Turns a stored raw event into the records it carries. Runs after the
    /// 202, from the stored bytes, so it may be re-run on replay.
    fn decode(&self, body: &[u8], headers: &[(String, String)]) -> Result<Vec<SourceRecord>, DecodeError>;
}
