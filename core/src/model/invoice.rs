//! Invoices and customer orders: what the client owes, and how much of it
//! has been paid and shipped.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Client, CustomFields, ExternalRef, Money, PaidPart, ShippedPart};

/// Whether the document is an invoice for payment or a customer order; both
/// are matched against payments and shipments the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceKind {
    Invoice,
    Order,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    Open,
    PartiallyPaid,
    Paid,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, utoipa::ToSchema)]
pub struct Invoice {
    pub id: Uuid,
    pub kind: InvoiceKind,
    /// The number as printed, letters included (`А-123`).
    pub number: String,
    pub date: NaiveDate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deal_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<Client>,
    pub total: Money,
    /// Sum of the payments applied so far.
    pub paid: Money,
    /// The payment documents behind `paid`, one part per document (a bank
    /// statement's payment, an ERP's receipt), when payments are reported
    /// one by one (empty when a system reports the paid total itself).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paid_parts: Vec<PaidPart>,
    /// Sum of the shipments that cover this order so far.
    pub shipped: Money,
    /// The shipments behind `shipped`, one part per shipment document, when
    /// shipments are reported one by one (empty when a system reports the
    /// shipped total itself).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shipments: Vec<ShippedPart>,
    pub status: InvoiceStatus,
    #[serde(default)]
    pub lines: Vec<InvoiceLine>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub custom_fields: CustomFields,
    #[serde(default)]
    pub external_refs: Vec<ExternalRef>,
    pub updated_at: DateTime<Utc>,
}

/// A line of an invoice or order (a product or a service).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, utoipa::ToSchema)]
pub struct InvoiceLine {
    pub line_number: u32,
    pub item: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_ref: Option<ExternalRef>,
    #[schemars(with = "String")]
    #[schema(value_type = String)]
    pub quantity: Decimal,
    pub price: Money,
    pub amount: Money,
}

impl Invoice {
    /// What is still to be paid (never negative).
    pub fn outstanding(&self) -> Decimal {
        (self.total.amount - self.paid.amount).max(Decimal::ZERO)
    }
}
