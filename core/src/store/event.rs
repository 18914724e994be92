//! Raw events as the inbox stores them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A request accepted by the inbox, not yet stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRawEvent {
    pub id: Uuid,
    /// Connector instance name (the `{connector}` of `/hooks/{connector}`).
    pub connector: String,
    pub delivery_key: Option<String>,
    pub received_at: DateTime<Utc>,
    /// Kept request headers, lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Where an event is in its processing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum EventState {
    /// Durable, waiting for mapping.
    Pending,
    /// Mapped and applied; `mapping_version` names the mapping set used.
    Processed { mapping_version: String },
    /// No mapping binds this event; kept for replay.
    Ignored { reason: String },
    /// Mapping or applying failed; kept for replay after a fix.
    Failed { error: String },
}

impl EventState {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            EventState::Pending => "pending",
            EventState::Processed { .. } => "processed",
            EventState::Ignored { .. } => "ignored",
            EventState::Failed { .. } => "failed",
        }
    }

    pub(crate) fn detail(&self) -> Option<&str> {
        match self {
            EventState::Pending => None,
            EventState::Processed { mapping_version } => Some(mapping_version),
            EventState::Ignored { reason } => Some(reason),
            EventState::Failed { error } => Some(error),
        }
    }

    pub(crate) fn from_parts(name: &str, detail: Option<String>) -> Result<Self, String> {
        let detail = detail.unwrap_or_default();
        Ok(match name {
            "pending" => EventState::Pending,
            "processed" => EventState::Processed { mapping_version: detail },
            "ignored" => EventState::Ignored { reason: detail },
            "failed" => EventState::Failed { error: detail },
            other => return Err(format!("unknown event state `{other}`")),
        })
    }
}

/// A stored raw event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    /// Arrival order, gap-free within one backend only by accident: use it
    /// for ordering and paging, never for counting.
    pub seq: i64,
    pub id: Uuid,
    pub connector: String,
    pub delivery_key: Option<String>,
    pub received_at: DateTime<Utc>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub state: EventState,
    pub processed_at: Option<DateTime<Utc>>,
}

/// The result of appending one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The stored event's id: the new one, or the original for a duplicate.
    pub id: Uuid,
    pub duplicate: bool,
}

/// For each event, the index of the first event in the batch with the same
/// `(connector, delivery_key)`, or its own index. Both backends use this so
/// in-batch duplicates behave exactly like cross-batch ones.
pub(crate) fn first_occurrences(events: &[NewRawEvent]) -> Vec<usize> {
    let mut seen = std::collections::HashMap::new();
    events
        .iter()
        .enumerate()
        .map(|(i, e)| match &e.delivery_key {
            Some(key) => *seen.entry((e.connector.as_str(), key.as_str())).or_insert(i),
            None => i,
        })
        .collect()
}

/// The kept headers as one JSON object, keys sorted (as `serde_json::Map`
/// orders them); serialized from borrowed text, since this runs for every
/// accepted webhook.
pub(crate) fn headers_to_json(headers: &[(String, String)]) -> String {
    let map: std::collections::BTreeMap<&str, &str> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    serde_json::to_string(&map).unwrap_or_else(|_| "{}".to_owned())
}

pub(crate) fn headers_from_json(text: &str) -> Result<Vec<(String, String)>, String> {
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| format!("headers column: {e}"))?;
    Ok(map.into_iter().map(|(k, v)| (k, v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()))).collect())
}
