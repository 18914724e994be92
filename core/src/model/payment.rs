//! Payments from bank statements or from the ERP.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{CustomFields, ExternalRef, Money, Party};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentDirection {
    /// Money received from a customer.
    Incoming,
    /// Money paid by the company.
    Outgoing,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, utoipa::ToSchema)]
pub struct Payment {
    pub id: Uuid,
    pub direction: PaymentDirection,
    /// Payment document number as printed (may contain letters).
    pub document_number: String,
    pub date: NaiveDate,
    pub amount: Money,
    pub payer: Party,
    pub payee: Party,
    /// Purpose of payment text («Оплата по счету № 123 от 01.02.2024»).
    #[serde(default)]
    pub purpose: String,
    /// Invoice this payment was applied to, once matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice_id: Option<Uuid>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub custom_fields: CustomFields,
    #[serde(default)]
    pub external_refs: Vec<ExternalRef>,
    pub recorded_at: DateTime<Utc>,
}
