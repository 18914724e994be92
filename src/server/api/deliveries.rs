//! `/api/v1/deliveries`: commands that did not reach their target — parked
//! deals (retries ran out; the deal's later commands wait behind) and dead
//! letters (permanent failures) — and the two ways out: retry or discard.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use dealbridge_core::store::{AdminRefusal, DeliveryRecord, DeliveryState};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::app::AppState;
use crate::server::{Access, ApiError, Area, Caller};

/// One command's delivery.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    pub command_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deal_id: Option<Uuid>,
    pub connector: String,
    /// `update_deal`, `create_deal`, `create_task` or `notify`.
    pub op: String,
    pub flow: String,
    pub state: DeliveryState,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_class: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub first_seen_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The command as the engine made it.
    #[schema(value_type = Object)]
    pub command: serde_json::Value,
}

impl From<DeliveryRecord> for DeliveryView {
    fn from(r: DeliveryRecord) -> Self {
        Self {
            command_id: r.command.id,
            deal_id: r.command.deal,
            connector: r.command.connector.clone(),
            op: r.command.op.name().to_owned(),
            flow: r.command.flow.clone(),
            state: r.state,
            attempts: r.attempts,
            next_attempt_at: r.due_at,
            last_class: r.last_class,
            last_error: r.last_error,
            first_seen_at: r.created_at,
            updated_at: r.updated_at,
            command: serde_json::to_value(&r.command).unwrap_or_default(),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// `parked`, `dead`, `waiting`, `held`, `done` or `discarded`.
    pub state: String,
    /// At most this many, oldest first (default 100, at most 1000).
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryList {
    /// How many commands are in each state now.
    pub counts: BTreeMap<String, u64>,
    pub deliveries: Vec<DeliveryView>,
}

/// Lists deliveries in one state.
#[utoipa::path(
    get,
    path = "/v1/deliveries",
    tag = "deliveries",
    security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, body = DeliveryList),
        (status = 400, description = "Unknown state"),
        (status = 401, description = "No valid token"),
    )
)]
pub async fn list_deliveries(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<ListQuery>,
) -> Result<Json<DeliveryList>, ApiError> {
    caller.require(Area::Deliveries, Access::Read)?;
    let wanted = DeliveryState::parse(&query.state).ok_or_else(|| {
        ApiError::new(
            http::StatusCode::BAD_REQUEST,
            "bad_state",
            format!("unknown state `{}`: use parked, dead, waiting, held, done or discarded", query.state),
        )
    })?;
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let rows = state.store.deliveries_in_state(wanted, limit).await?;
    let counts = state.store.delivery_counts().await?.into_iter().map(|(s, n)| (s.as_str().to_owned(), n)).collect();
    Ok(Json(DeliveryList { counts, deliveries: rows.into_iter().map(DeliveryView::from).collect() }))
}

fn refused(id: Uuid, refusal: AdminRefusal, action: &str) -> ApiError {
    match refusal {
        AdminRefusal::NotFound => ApiError::not_found(format!("no delivery of command {id}")),
        AdminRefusal::WrongState(s) => ApiError::new(
            http::StatusCode::CONFLICT,
            "wrong_state",
            format!("command {id} is {}: it cannot be {action}", s.as_str()),
        ),
    }
}

/// Tries a parked command again now (its deal resumes in order), or puts a
/// dead or discarded one back into its deal's lane.
#[utoipa::path(
    post,
    path = "/v1/deliveries/{id}/retry",
    tag = "deliveries",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Command id")),
    responses(
        (status = 200, body = DeliveryView, description = "The delivery, waiting or held again"),
        (status = 401, description = "No valid token"),
        (status = 404, description = "No such delivery"),
        (status = 409, description = "Not parked, dead or discarded"),
    )
)]
pub async fn retry_delivery(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<Uuid>,
) -> Result<Json<DeliveryView>, ApiError> {
    caller.require(Area::Deliveries, Access::Write)?;
    let record = state.store.delivery_retry(id, Utc::now()).await?.map_err(|r| refused(id, r, "retried"))?;
    tracing::info!(command = %id, "Delivery retried by an admin.");
    Ok(Json(record.into()))
}

/// Gives a command up; a parked deal goes on with its next command.
#[utoipa::path(
    post,
    path = "/v1/deliveries/{id}/discard",
    tag = "deliveries",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Command id")),
    responses(
        (status = 200, body = DeliveryView, description = "The delivery, discarded"),
        (status = 401, description = "No valid token"),
        (status = 404, description = "No such delivery"),
        (status = 409, description = "Already done or discarded"),
    )
)]
pub async fn discard_delivery(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<Uuid>,
) -> Result<Json<DeliveryView>, ApiError> {
    caller.require(Area::Deliveries, Access::Write)?;
    let record = state.store.delivery_discard(id, Utc::now()).await?.map_err(|r| refused(id, r, "discarded"))?;
    tracing::info!(command = %id, "Delivery discarded by an admin.");
    Ok(Json(record.into()))
}
