//! `GET /api/v1/deals/{id}`: a canonical deal with its children, external
//! refs and stage history — what an admin looks at first when asking "what
//! does the hub think this deal is?" — and `/trace`: why it is so.

use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use dealbridge_core::explain::{DealTrace, deal_trace};
use dealbridge_core::model::Deal;
use serde::Serialize;
use uuid::Uuid;

use crate::app::AppState;
use crate::server::{Access, ApiError, Area, Caller};

/// A deal and its child deals.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DealView {
    #[serde(flatten)]
    pub deal: Deal,
    /// Child deals (spawned for other departments), oldest first.
    pub children: Vec<Deal>,
}

/// A canonical deal with its children, external refs and stage history.
#[utoipa::path(
    get,
    path = "/v1/deals/{id}",
    tag = "deals",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Canonical deal id")),
    responses(
        (status = 200, body = DealView),
        (status = 401, description = "No valid token"),
        (status = 404, description = "No such deal"),
    )
)]
pub async fn get_deal(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<Uuid>,
) -> Result<Json<DealView>, ApiError> {
    caller.require(Area::Deals, Access::Read)?;
    let deal = state.store.get_deal(id).await?.ok_or_else(|| ApiError::not_found(format!("no deal {id}")))?;
    let children = state.store.child_deals(id).await?;
    Ok(Json(DealView { deal, children }))
}

/// The deal's timeline: raw event → mapping version → canonical change →
/// flow and action → command, and how long each stage took.
#[utoipa::path(
    get,
    path = "/v1/deals/{id}/trace",
    tag = "deals",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Canonical deal id")),
    responses(
        (status = 200, body = DealTrace),
        (status = 401, description = "No valid token"),
        (status = 404, description = "No such deal"),
    )
)]
pub async fn get_deal_trace(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<Uuid>,
) -> Result<Json<DealTrace>, ApiError> {
    caller.require(Area::Deals, Access::Read)?;
    let trace = deal_trace(state.store.as_ref(), id, chrono::Utc::now()).await?;
    trace.map(Json).ok_or_else(|| ApiError::not_found(format!("no deal {id}")))
}

/// Which system record to look up.
#[derive(serde::Deserialize, utoipa::IntoParams)]
pub struct RefQuery {
    /// Connector kind, e.g. `bitrix24`.
    pub system: String,
    /// Connector instance name.
    pub instance: String,
    /// The record's id in that system.
    pub external_id: String,
}

/// The canonical deal that carries an external ref.
#[utoipa::path(
    get,
    path = "/v1/deals",
    tag = "deals",
    security(("bearer" = [])),
    params(RefQuery),
    responses(
        (status = 200, body = DealView),
        (status = 401, description = "No valid token"),
        (status = 404, description = "No deal carries this ref"),
    )
)]
pub async fn find_deal(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    axum::extract::Query(query): axum::extract::Query<RefQuery>,
) -> Result<Json<DealView>, ApiError> {
    caller.require(Area::Deals, Access::Read)?;
    let external = dealbridge_core::model::ExternalRef::new(&query.system, &query.instance, &query.external_id);
    let deal = state.store.find_deal(&external).await?.ok_or_else(|| {
        ApiError::not_found(format!("no deal is {} ({}) {}", query.system, query.instance, query.external_id))
    })?;
    let children = state.store.child_deals(deal.id).await?;
    Ok(Json(DealView { deal, children }))
}
