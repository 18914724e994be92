//! `/api/v1/payments`: payments imported from bank statements — the review
//! queue (`?state=review`: unmatched and ambiguous incoming payments with
//! their candidate invoices), matched ones with the reasons of their match,
//! outgoing ones — and the manual match that applies a payment from the
//! queue to the invoice a person chose, exactly as an automatic match would.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use dealbridge_connector_bank::import::ManualMatchError;
use dealbridge_core::store::{PaymentState, StoredPayment};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::statements::importer;
use crate::app::AppState;
use crate::server::{Access, ApiError, Area, Caller};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct PaymentsQuery {
    /// `review` (the default), `matched` or `outgoing`.
    pub state: Option<String>,
    /// At most this many, oldest first (default 100, at most 1000).
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PaymentList {
    /// How many payments are in each state now.
    pub counts: BTreeMap<String, u64>,
    pub payments: Vec<StoredPayment>,
}

/// Lists payments in one state; `review` is the queue a person works through.
#[utoipa::path(
    get,
    path = "/v1/payments",
    tag = "payments",
    security(("bearer" = [])),
    params(PaymentsQuery),
    responses(
        (status = 200, body = PaymentList),
        (status = 400, description = "Unknown state"),
        (status = 401, description = "No valid token"),
    )
)]
pub async fn list_payments(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<PaymentsQuery>,
) -> Result<Json<PaymentList>, ApiError> {
    caller.require(Area::Payments, Access::Read)?;
    let wanted = query.state.as_deref().unwrap_or("review");
    let wanted = PaymentState::parse(wanted).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_state",
            format!("unknown state `{wanted}`: use review, matched or outgoing"),
        )
    })?;
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let payments = state.store.payments_in_state(wanted, limit).await?;
    let counts = state.store.payment_counts().await?.into_iter().map(|(s, n)| (s.as_str().to_owned(), n)).collect();
    Ok(Json(PaymentList { counts, payments }))
}

/// One payment with its match (and its reasons) or its review note.
#[utoipa::path(
    get,
    path = "/v1/payments/{id}",
    tag = "payments",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Payment id")),
    responses(
        (status = 200, body = StoredPayment),
        (status = 401, description = "No valid token"),
        (status = 404, description = "No such payment"),
    )
)]
pub async fn get_payment(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<Uuid>,
) -> Result<Json<StoredPayment>, ApiError> {
    caller.require(Area::Payments, Access::Read)?;
    let payment = state.store.get_payment(id).await?.ok_or_else(|| ApiError::not_found(format!("no payment {id}")))?;
    Ok(Json(payment))
}

/// The invoice a person chose for a payment.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ManualMatch {
    pub invoice_id: Uuid,
    /// Who matched it (kept with the match); default: the caller's role.
    pub by: Option<String>,
}

/// Applies a payment waiting for review to an invoice.
#[utoipa::path(
    post,
    path = "/v1/payments/{id}/match",
    tag = "payments",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Payment id")),
    request_body = ManualMatch,
    responses(
        (status = 200, body = StoredPayment, description = "Matched and applied"),
        (status = 401, description = "No valid token"),
        (status = 404, description = "No such payment or invoice"),
        (status = 409, description = "The payment is not waiting for review, or the invoice takes no payment"),
    )
)]
pub async fn match_payment(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<Uuid>,
    Json(request): Json<ManualMatch>,
) -> Result<Json<StoredPayment>, ApiError> {
    caller.require(Area::Payments, Access::Write)?;
    let by = request.by.unwrap_or_else(|| format!("{:?}", caller.role).to_lowercase());
    let set = state.mappings.current();
    let matched = importer(&state).match_by_hand(&set, id, request.invoice_id, &by).await.map_err(|e| match e {
        ManualMatchError::PaymentNotFound(_) | ManualMatchError::InvoiceNotFound(_) => {
            ApiError::not_found(e.to_string())
        }
        ManualMatchError::NotInReview(..)
        | ManualMatchError::InvoiceClosed { .. }
        | ManualMatchError::CurrencyDiffers { .. } => ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string()),
        ManualMatchError::Store(e) => ApiError::from(e),
        ManualMatchError::Busy(_) => ApiError::unavailable(e.to_string()),
    })?;
    tracing::info!(payment = %id, invoice = %request.invoice_id, %by, "Payment matched by hand.");
    Ok(Json(matched))
}
