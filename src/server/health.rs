//! Liveness, readiness and Prometheus metrics: the unauthenticated surface
//! for orchestrators and scrapers.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::auth::authenticate;
use crate::app::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).route("/metrics", get(metrics))
}

/// The process is up and serving HTTP.
async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

/// The hub can do its job: the store answers, and so does the bus (the
/// embedded bus pings its store, RabbitMQ its connection).
async fn readyz(State(state): State<AppState>) -> Response {
    let store = state.store.ping().await;
    let bus = state.bus.ping().await.map_err(|e| e.to_string());
    // The cause goes to the log, not to an unauthenticated caller.
    let check = |part: &str, r: Result<(), String>| match r {
        Ok(()) => json!({"status": "ok"}),
        Err(e) => {
            tracing::warn!(part, error = %e, "Not ready.");
            json!({"status": "down"})
        }
    };
    let ready = store.is_ok() && bus.is_ok();
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "store": check("store", store.map_err(|e| e.to_string())),
        "bus": check("bus", bus),
    });
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(body)).into_response()
}

/// Prometheus text exposition. Optionally token-protected.
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if state.settings.server.metrics_require_token
        && let Err(e) = authenticate(&state.tokens, &headers)
    {
        return e.into_response();
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}
