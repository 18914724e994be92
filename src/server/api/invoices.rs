//! `POST /api/v1/invoices`: invoices and customer orders as JSON, for
//! tests and for admins whose ERP has no connector yet — what bank
//! payments are matched against. `GET /api/v1/invoices/{id}` shows one
//! with what has been paid so far.
//!
//! An invoice that names an external ref (`ref`) already stored is updated
//! (number, date, total, client, deal); what has been paid is kept. The
//! whole request is one transaction: one bad invoice and none is stored.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{NaiveDate, Utc};
use dealbridge_connector_bank::apply::status_for;
use dealbridge_core::model::{Client, ExternalRef, Invoice, InvoiceKind, InvoiceStatus, Money, new_id};
use dealbridge_core::store::ChangeSet;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::app::AppState;
use crate::server::{Access, ApiError, Area, Caller};

/// A deal by one of its systems' ids.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct DealRef {
    pub system: String,
    pub instance: String,
    pub external_id: String,
}

/// One invoice or order to store.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvoiceInput {
    /// `invoice` (default) or `order`.
    #[serde(default)]
    pub kind: Option<InvoiceKind>,
    /// As printed, letters included (`А-123`).
    pub number: String,
    pub date: NaiveDate,
    /// `{"amount": "100000.00", "currency": "RUB"}`.
    pub total: Money,
    /// The canonical deal it belongs to …
    #[serde(default)]
    pub deal_id: Option<Uuid>,
    /// … or the deal by a connected system's id.
    #[serde(default)]
    pub deal: Option<DealRef>,
    #[serde(default)]
    pub client: Option<Client>,
    /// The invoice's id in the system it comes from; re-posting it updates.
    #[serde(default, rename = "ref")]
    pub external_ref: Option<ExternalRef>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct InvoiceImport {
    pub invoices: Vec<InvoiceInput>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InvoicesStored {
    pub invoices: Vec<Invoice>,
}

fn bad(index: usize, field: &str, message: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_invoice", format!("invoices[{index}].{field}: {message}"))
}

/// Stores invoices and orders (all or none).
#[utoipa::path(
    post,
    path = "/v1/invoices",
    tag = "payments",
    security(("bearer" = [])),
    request_body = InvoiceImport,
    responses(
        (status = 200, body = InvoicesStored, description = "Stored (new or updated), in request order"),
        (status = 400, description = "An invoice is invalid; the message names it and the field. Nothing stored"),
        (status = 401, description = "No valid token"),
    )
)]
pub async fn import_invoices(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(request): Json<InvoiceImport>,
) -> Result<Json<InvoicesStored>, ApiError> {
    caller.require(Area::Payments, Access::Write)?;
    let now = Utc::now();
    let mut stored = Vec::with_capacity(request.invoices.len());
    for (index, input) in request.invoices.into_iter().enumerate() {
        if input.number.trim().is_empty() {
            return Err(bad(index, "number", "must not be empty"));
        }
        let total = Money::new(input.total.amount, &input.total.currency).map_err(|e| bad(index, "total", e))?;
        if total.amount.is_zero() || total.amount.is_sign_negative() {
            return Err(bad(index, "total", "must be more than zero"));
        }
        let deal_id = match (input.deal_id, &input.deal) {
            (Some(id), None) => {
                state.store.get_deal(id).await?.ok_or_else(|| bad(index, "deal_id", format!("no deal {id}")))?;
                Some(id)
            }
            (None, Some(r)) => {
                let external = ExternalRef::new(&r.system, &r.instance, &r.external_id);
                let deal = state.store.find_deal(&external).await?.ok_or_else(|| {
                    bad(index, "deal", format!("no deal is {}/{}/{}", r.system, r.instance, r.external_id))
                })?;
                Some(deal.id)
            }
            (None, None) => None,
            (Some(_), Some(_)) => return Err(bad(index, "deal", "give deal_id or deal, not both")),
        };
        let existing = match &input.external_ref {
            Some(r) => state.store.find_invoice(r).await?,
            None => None,
        };
        let invoice = match existing {
            Some(mut invoice) => {
                if invoice.paid.currency != total.currency && !invoice.paid.amount.is_zero() {
                    return Err(bad(index, "total", "the currency differs from what has been paid"));
                }
                invoice.kind = input.kind.unwrap_or(invoice.kind);
                invoice.number = input.number.trim().to_owned();
                invoice.date = input.date;
                invoice.deal_id = deal_id.or(invoice.deal_id);
                invoice.client = input.client.or(invoice.client);
                invoice.paid = Money { amount: invoice.paid.amount, currency: total.currency.clone() };
                if invoice.status != InvoiceStatus::Cancelled {
                    invoice.status = status_for(invoice.paid.amount, total.amount);
                }
                invoice.total = total;
                invoice.updated_at = now;
                invoice
            }
            None => Invoice {
                id: new_id(),
                kind: input.kind.unwrap_or(InvoiceKind::Invoice),
                number: input.number.trim().to_owned(),
                date: input.date,
                deal_id,
                client: input.client,
                paid: Money { amount: Default::default(), currency: total.currency.clone() },
                shipped: Money { amount: Default::default(), currency: total.currency.clone() },
                shipments: Vec::new(),
                paid_parts: Vec::new(),
                total,
                status: InvoiceStatus::Open,
                lines: Vec::new(),
                custom_fields: Default::default(),
                external_refs: input.external_ref.into_iter().collect(),
                updated_at: now,
            },
        };
        stored.push(invoice);
    }
    let changes = ChangeSet { invoices: stored.clone(), ..Default::default() };
    state.store.apply(&changes).await.map_err(|e| match e {
        dealbridge_core::store::StoreError::Conflict(message) => {
            ApiError::new(StatusCode::CONFLICT, "conflict", message)
        }
        other => ApiError::from(other),
    })?;
    tracing::info!(count = stored.len(), "Invoices imported.");
    Ok(Json(InvoicesStored { invoices: stored }))
}

/// One invoice or order, with what has been paid so far.
#[utoipa::path(
    get,
    path = "/v1/invoices/{id}",
    tag = "payments",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Invoice id")),
    responses(
        (status = 200, body = Invoice),
        (status = 401, description = "No valid token"),
        (status = 404, description = "No such invoice"),
    )
)]
pub async fn get_invoice(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<Uuid>,
) -> Result<Json<Invoice>, ApiError> {
    caller.require(Area::Payments, Access::Read)?;
    let invoice = state.store.get_invoice(id).await?.ok_or_else(|| ApiError::not_found(format!("no invoice {id}")))?;
    Ok(Json(invoice))
}
