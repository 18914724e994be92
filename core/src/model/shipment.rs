//! Shipments (1C «Реализация товаров и услуг») that cover orders, and the
//! part of an order each shipment covers.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{CustomFields, ExternalRef, Money};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, utoipa::ToSchema)]
pub struct Shipment {
    pub id: Uuid,
    pub number: String,
    pub date: NaiveDate,
    /// The order or invoice this shipment covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deal_id: Option<Uuid>,
    pub amount: Money,
    #[serde(default)]
    pub lines: Vec<ShipmentLine>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub custom_fields: CustomFields,
    #[serde(default)]
    pub external_refs: Vec<ExternalRef>,
    pub recorded_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, utoipa::ToSchema)]
pub struct ShipmentLine {
    pub item: String,
    #[schemars(with = "String")]
    #[schema(value_type = String)]
    pub quantity: Decimal,
    pub amount: Money,
}

/// What one shipment document covers of one order or invoice. An order
/// keeps one part per shipment, so a shipment reported again (edited,
/// re-sent) replaces its part instead of adding to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, utoipa::ToSchema)]
pub struct ShippedPart {
    /// The shipment document, as its system names it.
    pub shipment: ExternalRef,
    /// The number as printed, when the mapping gives one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub number: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<NaiveDate>,
    pub amount: Money,
}
