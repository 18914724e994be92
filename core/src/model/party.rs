//! Clients and payment counterparties.

use serde::{Deserialize, Serialize};

use super::Inn;

/// The customer of a deal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, utoipa::ToSchema)]
pub struct Client {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inn: Option<Inn>,
    /// KPP (tax registration reason code) of an organisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kpp: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phones: Vec<String>,
}

/// A bank account as it appears on a payment order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, utoipa::ToSchema)]
pub struct BankAccount {
    /// Account number (20 digits in Russia, IBAN elsewhere).
    pub number: String,
    /// BIC of the bank.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank_name: Option<String>,
    /// Correspondent account of the bank.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correspondent_account: Option<String>,
}

/// Payer or payee of a payment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, utoipa::ToSchema)]
pub struct Party {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inn: Option<Inn>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kpp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<BankAccount>,
}
