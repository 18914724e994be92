//! `POST /hooks/{connector}`: the webhook inbox.
//!
//! Order matters here: find the connector (404), read the body within the
//! limit (413), let the connector authenticate it (401, nothing stored),
//! then commit the raw request and only then answer 202. Any failure to
//! commit is a 503, so a 2xx always means the event is durable.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, body};
use chrono::Utc;
use dealbridge_core::connector::{InboundRequest, Rejection};
use dealbridge_core::inbox::InboxError;
use dealbridge_core::store::NewRawEvent;
use serde::Serialize;
use uuid::Uuid;

use super::ApiError;
use super::error::ErrorBody;
use crate::app::AppState;

/// Headers kept with every raw event, whatever the connector.
const ALWAYS_KEPT: [&str; 5] = ["content-type", "user-agent", "idempotency-key", "x-request-id", "x-forwarded-for"];

#[derive(Serialize, utoipa::ToSchema)]
pub struct Accepted {
    /// Id of the stored event (the original one for a repeated delivery).
    pub event_id: Uuid,
    /// True when this delivery repeated one already stored.
    pub duplicate: bool,
}

/// Receive a webhook for a configured connector instance.
#[utoipa::path(
    post,
    path = "/hooks/{connector}",
    tag = "inbox",
    params(("connector" = String, Path, description = "Connector instance name from the config")),
    request_body(content = String, description = "The raw request as the source system sends it"),
    responses(
        (status = 202, description = "Stored durably (or a repeated delivery of a stored event)", body = Accepted),
        (status = 400, description = "Not a request this connector understands", body = ErrorBody),
        (status = 401, description = "Authentication failed; nothing stored", body = ErrorBody),
        (status = 404, description = "No connector instance with that name", body = ErrorBody),
        (status = 413, description = "Body larger than server.max_body_bytes", body = ErrorBody),
        (status = 503, description = "Not stored; retry later", body = ErrorBody),
    )
)]
pub async fn receive(
    State(state): State<AppState>,
    Path(connector): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    raw_body: Body,
) -> Response {
    let started = Instant::now();
    let (label, outcome, response) = match handle(&state, &connector, query.as_deref(), &headers, raw_body).await {
        Ok((label, accepted)) => {
            let outcome = if accepted.duplicate { "duplicate" } else { "accepted" };
            (label, outcome, (StatusCode::ACCEPTED, Json(accepted)).into_response())
        }
        Err((label, outcome, error)) => (label, outcome, error.into_response()),
    };
    metrics::counter!("dealbridge_ingest_total", "connector" => label.clone(), "outcome" => outcome).increment(1);
    metrics::histogram!("dealbridge_ingest_duration_seconds", "connector" => label)
        .record(started.elapsed().as_secs_f64());
    response
}

type Failure = (String, &'static str, ApiError);

async fn handle(
    state: &AppState,
    connector: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    raw_body: Body,
) -> Result<(String, Accepted), Failure> {
    let Some(instance) = state.connectors.get(connector) else {
        // A fixed label keeps unknown names out of the metrics' cardinality.
        let e = ApiError::not_found(format!("no connector named `{connector}`"));
        return Err(("unknown".into(), "unknown_connector", e));
    };
    let label = connector.to_owned();
    let limit = state.settings.server.max_body_bytes;
    let body = body::to_bytes(raw_body, limit).await.map_err(|e| {
        let e = e.into_inner();
        if e.is::<http_body_util::LengthLimitError>() {
            let message = format!("body larger than {limit} bytes");
            (label.clone(), "too_large", ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message))
        } else {
            // The client went away or sent a broken body: nothing to store.
            let message = format!("the request body could not be read: {e}");
            (label.clone(), "body_error", ApiError::new(StatusCode::BAD_REQUEST, "bad_body", message))
        }
    })?;
    let received_at = Utc::now();
    let request = InboundRequest { headers, body: &body, received_at };
    let verified = instance.verify_query(query).and_then(|()| instance.verify(&request)).map_err(|r| match r {
        Rejection::Unauthenticated(m) => {
            tracing::info!(connector, reason = %m, "Webhook refused: authentication failed.");
            (label.clone(), "unauthorized", ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m))
        }
        Rejection::Malformed(m) => (label.clone(), "malformed", ApiError::new(StatusCode::BAD_REQUEST, "malformed", m)),
    })?;
    let delivery_key = verified.delivery_key.or_else(|| header_text(headers, "idempotency-key"));
    let event = NewRawEvent {
        id: dealbridge_core::model::new_id(),
        connector: label.clone(),
        delivery_key,
        received_at,
        headers: kept_headers(headers, instance.kept_headers()),
        // A connector may keep a credential out of the stored body.
        body: instance.stored_body(&body).unwrap_or_else(|| body.to_vec()),
    };
    match state.inbox.append(event).await {
        Ok(appended) => Ok((label, Accepted { event_id: appended.id, duplicate: appended.duplicate })),
        Err(e) => {
            let outcome = match e {
                InboxError::Overloaded => "overloaded",
                InboxError::Store(_) | InboxError::Closed => "store_unavailable",
            };
            // The cause is logged by the inbox writer; the sender only needs to retry.
            tracing::warn!(connector = %label, error = %e, "Webhook not stored; answered 503.");
            let message = match e {
                InboxError::Overloaded => "event not stored: the hub is overloaded; retry later",
                InboxError::Store(_) | InboxError::Closed => {
                    "event not stored: the store is not available; retry later"
                }
            };
            Err((label, outcome, ApiError::unavailable(message)))
        }
    }
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned).filter(|v| !v.is_empty())
}

fn kept_headers(headers: &HeaderMap, extra: &[&str]) -> Vec<(String, String)> {
    ALWAYS_KEPT
        .iter()
        .chain(extra)
        .filter_map(|name| header_text(headers, name).map(|v| ((*name).to_owned(), v)))
        .collect()
}
