//! `GET /api/v1/events/{id}`: a stored raw event and its processing state.

use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use base64::Engine;
use chrono::{DateTime, Utc};
use dealbridge_core::store::{EventState, RawEvent};
use serde::Serialize;
use std::collections::BTreeMap;
use uuid::Uuid;

use crate::app::AppState;
use crate::server::{Access, ApiError, Area, Caller};

/// A raw event as stored by the inbox.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EventView {
    pub id: Uuid,
    pub connector: String,
    pub delivery_key: Option<String>,
    pub received_at: DateTime<Utc>,
    /// The headers kept with the event (lower-case names).
    pub headers: BTreeMap<String, String>,
    /// The body: the text itself when it is UTF-8, base64 otherwise.
    pub body: String,
    /// `utf8` or `base64`.
    pub body_encoding: &'static str,
    pub processing: EventState,
    pub processed_at: Option<DateTime<Utc>>,
}

impl From<RawEvent> for EventView {
    fn from(e: RawEvent) -> Self {
        let (body, body_encoding) = match String::from_utf8(e.body) {
            Ok(text) => (text, "utf8"),
            Err(bytes) => (base64::engine::general_purpose::STANDARD.encode(bytes.into_bytes()), "base64"),
        };
        Self {
            id: e.id,
            connector: e.connector,
            delivery_key: e.delivery_key,
            received_at: e.received_at,
            headers: e.headers.into_iter().collect(),
            body,
            body_encoding,
            processing: e.state,
            processed_at: e.processed_at,
        }
    }
}

/// A stored raw event and its processing state.
#[utoipa::path(
    get,
    path = "/v1/events/{id}",
    tag = "events",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Event id as answered by the inbox")),
    responses(
        (status = 200, body = EventView),
        (status = 401, description = "No valid token"),
        (status = 404, description = "No such event"),
    )
)]
pub async fn get_event(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<Uuid>,
) -> Result<Json<EventView>, ApiError> {
    caller.require(Area::Events, Access::Read)?;
    let event = state.store.get_event(id).await?.ok_or_else(|| ApiError::not_found(format!("no event {id}")))?;
    Ok(Json(event.into()))
}
