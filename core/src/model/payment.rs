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

/// How a payment found its invoice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MatchMethod {
    /// The matcher was sure enough on its own.
    Automatic,
    /// A person chose the invoice.
    Manual,
}

/// One piece of evidence for or against pairing a payment with an invoice.
/// `points` is what it added to (or took from) the candidate's score.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, utoipa::ToSchema)]
pub struct MatchReason {
    /// Stable code, e.g. `number_exact`, `inn_equal`, `amount_partial`.
    pub code: String,
    /// What was compared, for people.
    pub detail: String,
    pub points: i32,
}

/// A payment applied to an invoice, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, utoipa::ToSchema)]
pub struct PaymentMatch {
    pub invoice_id: Uuid,
    pub invoice_number: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deal_id: Option<Uuid>,
    pub method: MatchMethod,
    /// 0–100: the matcher's score (capped), 100 for a manual match.
    pub confidence: u8,
    pub reasons: Vec<MatchReason>,
    /// What the invoice had been paid before this payment.
    pub paid_before: Money,
    /// What it has been paid with this payment.
    pub paid_total: Money,
    pub invoice_total: Money,
    /// The part of the payment beyond what the invoice still owed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overpaid: Option<Money>,
    /// Who matched it by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_by: Option<String>,
    pub matched_at: DateTime<Utc>,
}

/// An invoice a payment might belong to, with its score.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, utoipa::ToSchema)]
pub struct MatchCandidate {
    pub invoice_id: Uuid,
    pub invoice_number: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deal_id: Option<Uuid>,
    pub score: i32,
    pub reasons: Vec<MatchReason>,
}

/// Why a payment waits for a person, with the invoices it might belong to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, utoipa::ToSchema)]
pub struct ReviewNote {
    /// `no_reference`, `no_open_invoice`, `ambiguous` or `weak`.
    pub reason: String,
    pub detail: String,
    #[serde(default)]
    pub candidates: Vec<MatchCandidate>,
}

/// What one payment document pays of one order or invoice. An invoice keeps
/// one part per payment document, so a document reported again (edited,
/// re-sent by a catch-up) replaces its part; and the same money seen by two
/// sources — a bank statement's payment and the ERP's receipt made from
/// it — is one part, counted once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, utoipa::ToSchema)]
pub struct PaidPart {
    /// The payment document as the source that counted it names it.
    pub payment: ExternalRef,
    /// The payer's payment order number, when known.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub number: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<NaiveDate>,
    /// What it pays of this invoice.
    pub amount: Money,
    /// The same payment as other sources name it: linked, not counted again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub same_as: Vec<ExternalRef>,
}

impl PaidPart {
    /// Whether `other` (from another source) is the same money: the same
    /// payment order number, date and amount. Without a number on both
    /// sides nothing is assumed: two equal payments on one day are common.
    pub fn same_money(&self, number: &str, date: Option<NaiveDate>, amount: &Money) -> bool {
        let key = |n: &str| n.trim().trim_start_matches('0').to_lowercase();
        !self.number.trim().is_empty()
            && key(&self.number) == key(number)
            && self.date.is_some()
            && self.date == date
            && self.amount == *amount
    }

    /// Whether this part is `payment`, by itself or linked.
    pub fn names(&self, payment: &ExternalRef) -> bool {
        self.payment.same_record(payment) || self.same_as.iter().any(|r| r.same_record(payment))
    }
}
