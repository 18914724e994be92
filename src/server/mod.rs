//! The HTTP surface: webhook inbox, admin API, health and metrics, with the
//! cross-cutting layers (request ids, tracing spans, secret redaction, panic
//! catching) applied once here.

pub mod api;
mod auth;
mod error;
mod health;
mod hooks;

use axum::Router;
use axum::http::{HeaderName, Request};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

pub use auth::{Access, Area, Caller};
pub use error::ApiError;

use crate::app::AppState;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole router with its layers.
pub fn router(state: AppState) -> Router {
    let (documented, _) = api::routes().split_for_parts();
    let sensitive = [axum::http::header::AUTHORIZATION, axum::http::header::COOKIE];
    Router::new()
        .merge(health::router())
        .merge(documented)
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::guard_api))
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .layer(SetSensitiveRequestHeadersLayer::new(sensitive))
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_request(())
                        .on_response(DefaultOnResponse::new().level(Level::INFO)),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(CatchPanicLayer::custom(error::panic_response)),
        )
}

/// Every log line written while handling a request carries its id.
fn request_span<B>(request: &Request<B>) -> tracing::Span {
    let id = request.extensions().get::<RequestId>().and_then(|id| id.header_value().to_str().ok()).unwrap_or("-");
    tracing::info_span!("request", request_id = %id, method = %request.method(), path = %request.uri().path())
}
