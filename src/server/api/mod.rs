//! The admin API under `/api/v1`, described by an OpenAPI document that is
//! generated from these very handlers (utoipa), so it cannot drift.
//!
//! Authentication is not done here: `server::auth::guard_api` refuses every
//! `/api/` request without a valid token before routing, unknown paths
//! included. Handlers only state what role they need.

mod deals;
mod deliveries;
mod events;
mod invoices;
mod mappings;
mod payments;
mod statements;
mod tasks;

use std::sync::Arc;

use axum::Extension;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Access, Area, Caller};
use super::{ApiError, hooks};
use crate::app::AppState;

pub use deals::DealView;
pub use deliveries::DeliveryView;
pub use events::EventView;
pub use statements::{importer as statement_importer, watched_folder as statement_folder};

#[derive(OpenApi)]
#[openapi(
    info(title = "dealbridge", description = "Integration hub: webhook inbox and admin API"),
    modifiers(&BearerAuth),
    tags(
        (name = "inbox", description = "Webhooks from connected systems, authenticated per connector"),
        (name = "events", description = "Stored raw events and their processing state"),
        (name = "deals", description = "Canonical deals, their children and history"),
        (name = "deliveries", description = "Commands on their way out: parked deals, dead letters, retry and discard"),
        (name = "mappings", description = "The mapping set in force, and reloading it"),
        (name = "payments", description = "Bank statements, payments matched to invoices, the review queue, invoices to match against"),
        (name = "meta", description = "This document"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build();
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// Every documented route: the inbox and the `/api` tree.
pub fn routes() -> OpenApiRouter<AppState> {
    let api = OpenApiRouter::new()
        .routes(routes!(events::get_event))
        .routes(routes!(deals::get_deal))
        .routes(routes!(deals::get_deal_trace))
        .routes(routes!(deals::find_deal))
        .routes(routes!(mappings::get_mappings))
        .routes(routes!(mappings::reload_mappings))
        .routes(routes!(tasks::decide))
        .routes(routes!(deliveries::list_deliveries))
        .routes(routes!(deliveries::retry_delivery))
        .routes(routes!(deliveries::discard_delivery))
        .routes(routes!(statements::upload_statement))
        .routes(routes!(statements::get_statement_file))
        .routes(routes!(payments::list_payments))
        .routes(routes!(payments::get_payment))
        .routes(routes!(payments::match_payment))
        .routes(routes!(invoices::import_invoices))
        .routes(routes!(invoices::get_invoice))
        .routes(routes!(openapi_json));
    OpenApiRouter::with_openapi(ApiDoc::openapi()).routes(routes!(hooks::receive)).nest("/api", api)
}

/// The generated OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().split_for_parts().1
}

/// The OpenAPI document of this API.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "meta",
    security(("bearer" = [])),
    responses((status = 200, description = "OpenAPI 3.1 document"), (status = 401, description = "No valid token"))
)]
async fn openapi_json(Extension(caller): Extension<Caller>) -> Result<axum::Json<Arc<serde_json::Value>>, ApiError> {
    static DOC: std::sync::OnceLock<Arc<serde_json::Value>> = std::sync::OnceLock::new();
    caller.require(Area::Docs, Access::Read)?;
    let doc = DOC.get_or_init(|| Arc::new(serde_json::to_value(openapi()).unwrap_or_default()));
    Ok(axum::Json(doc.clone()))
}
