//! How a payment record is stored: its JSON document without what the
//! row's own columns hold (the payment's id, direction, date and invoice,
//! the statement, the state), and without the times a payment was recorded
//! and matched when they are the time of its last change, which the
//! document keeps. Reading puts them back, so a caller sees the whole
//! [`StoredPayment`].
//!
//! Why: a statement of 100,000 payments writes its records in one
//! transaction, and on SQLite the bytes written are most of what that costs
//! (see docs/benchmarks.md, session 26). The columns are written anyway;
//! repeating them in the document was about 15 % of its bytes.
//!
//! Documents written before this (with every field) read the same way:
//! the columns replace what they repeat.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::StoreError;
use super::doc::{from_doc, to_doc_sized};
use super::error::corrupt;
use super::payments::{PaymentState, StoredPayment};
use crate::model::{
    CustomFields, ExternalRef, MatchMethod, MatchReason, Money, Party, Payment, PaymentDirection, PaymentMatch,
    ReviewNote,
};

/// What a payment read selects: the columns its document leaves out, and
/// the document.
pub(crate) const PAYMENT_COLUMNS: &str = "id, statement_id, direction, state, invoice_id, payment_date, doc";

/// The columns of a payment row that its document leaves out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PaymentColumns {
    pub id: Uuid,
    pub statement_id: Uuid,
    pub direction: PaymentDirection,
    pub state: PaymentState,
    pub invoice_id: Option<Uuid>,
    pub date: NaiveDate,
}

/// The document stored for `p`, its buffer sized `capacity` to start with.
pub(crate) fn payment_doc(p: &StoredPayment, capacity: usize) -> Result<String, StoreError> {
    to_doc_sized("payment", &PaymentDoc::of(p), capacity)
}

/// The payment a stored document and its row's columns make up.
pub(crate) fn payment_from_doc(doc: &str, columns: PaymentColumns) -> Result<StoredPayment, StoreError> {
    let mut record: Map<String, Value> = from_doc("payment", doc)?;
    let id = columns.id;
    let updated_at =
        record.get("updated_at").cloned().ok_or_else(|| corrupt(format!("payment {id}: no updated_at")))?;
    let Some(Value::Object(payment)) = record.get_mut("payment") else {
        return Err(corrupt(format!("payment {id}: no payment in its document")));
    };
    payment.insert("id".into(), json(&id)?);
    payment.insert("direction".into(), json(&columns.direction)?);
    payment.insert("date".into(), json(&columns.date)?);
    match columns.invoice_id {
        Some(invoice) => payment.insert("invoice_id".into(), json(&invoice)?),
        None => payment.remove("invoice_id"),
    };
    payment.entry("recorded_at").or_insert_with(|| updated_at.clone());
    if let Some(Value::Object(matched)) = record.get_mut("matched") {
        matched.entry("matched_at").or_insert(updated_at);
    }
    record.insert("statement_id".into(), json(&columns.statement_id)?);
    record.insert("state".into(), json(&columns.state)?);
    serde_json::from_value(Value::Object(record)).map_err(|e| corrupt(format!("payment {id} document: {e}")))
}

impl PaymentColumns {
    /// From the columns' values as text where they are (SQLite's `TEXT`,
    /// PostgreSQL's `direction` and `state`).
    pub fn from_text(
        id: Uuid,
        statement_id: Uuid,
        direction: &str,
        state: &str,
        invoice_id: Option<Uuid>,
        date: NaiveDate,
    ) -> Result<Self, StoreError> {
        let direction = serde_json::from_value(Value::String(direction.to_owned()))
            .map_err(|_| corrupt(format!("payment {id}: direction `{direction}`")))?;
        let state = PaymentState::parse(state).ok_or_else(|| corrupt(format!("payment {id}: state `{state}`")))?;
        Ok(Self { id, statement_id, direction, state, invoice_id, date })
    }
}

fn json<T: Serialize>(value: &T) -> Result<Value, StoreError> {
    serde_json::to_value(value).map_err(|e| StoreError::Database(e.to_string()))
}

/// A time the document leaves out when it is the last change's.
fn unless_same(at: &DateTime<Utc>, updated_at: &DateTime<Utc>) -> Option<DateTime<Utc>> {
    (at != updated_at).then_some(*at)
}

/// [`StoredPayment`] as stored: the same field names, fewer fields.
#[derive(Serialize)]
struct PaymentDoc<'a> {
    payment: PaymentBody<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    matched: Option<MatchBody<'a>>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    also_matched: &'a [PaymentMatch],
    #[serde(skip_serializing_if = "Option::is_none")]
    review: Option<&'a ReviewNote>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    notes: &'a [String],
    updated_at: &'a DateTime<Utc>,
}

/// [`Payment`] without its id, direction, date and invoice.
#[derive(Serialize)]
struct PaymentBody<'a> {
    document_number: &'a str,
    amount: &'a Money,
    payer: &'a Party,
    payee: &'a Party,
    purpose: &'a str,
    custom_fields: &'a CustomFields,
    external_refs: &'a [ExternalRef],
    #[serde(skip_serializing_if = "Option::is_none")]
    recorded_at: Option<DateTime<Utc>>,
}

/// [`PaymentMatch`], its time left out when it is the last change's.
#[derive(Serialize)]
struct MatchBody<'a> {
    invoice_id: &'a Uuid,
    invoice_number: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    deal_id: &'a Option<Uuid>,
    method: &'a MatchMethod,
    confidence: u8,
    reasons: &'a [MatchReason],
    paid_before: &'a Money,
    paid_total: &'a Money,
    invoice_total: &'a Money,
    #[serde(skip_serializing_if = "Option::is_none")]
    overpaid: &'a Option<Money>,
    #[serde(skip_serializing_if = "Option::is_none")]
    matched_by: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    matched_at: Option<DateTime<Utc>>,
}

impl<'a> PaymentDoc<'a> {
    // Every struct is taken apart whole: a field added to the model does
    // not compile until it is stored here (or said to be a column).
    fn of(stored: &'a StoredPayment) -> Self {
        let StoredPayment { payment, statement_id: _, state: _, matched, also_matched, review, notes, updated_at } =
            stored;
        let Payment {
            id: _,
            direction: _,
            document_number,
            date: _,
            amount,
            payer,
            payee,
            purpose,
            invoice_id: _,
            custom_fields,
            external_refs,
            recorded_at,
        } = payment;
        PaymentDoc {
            payment: PaymentBody {
                document_number,
                amount,
                payer,
                payee,
                purpose,
                custom_fields,
                external_refs,
                recorded_at: unless_same(recorded_at, updated_at),
            },
            matched: matched.as_ref().map(|m| MatchBody::of(m, updated_at)),
            also_matched,
            review: review.as_ref(),
            notes,
            updated_at,
        }
    }
}

impl<'a> MatchBody<'a> {
    fn of(m: &'a PaymentMatch, updated_at: &DateTime<Utc>) -> Self {
        let PaymentMatch {
            invoice_id,
            invoice_number,
            deal_id,
            method,
            confidence,
            reasons,
            paid_before,
            paid_total,
            invoice_total,
            overpaid,
            matched_by,
            matched_at,
        } = m;
        MatchBody {
            invoice_id,
            invoice_number,
            deal_id,
            method,
            confidence: *confidence,
            reasons,
            paid_before,
            paid_total,
            invoice_total,
            overpaid,
            matched_by,
            matched_at: unless_same(matched_at, updated_at),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use chrono::Duration;
    use rust_decimal::Decimal;

    use super::*;
    use crate::model::{BankAccount, Inn, MatchCandidate};

    fn money(text: &str) -> Money {
        Money { amount: Decimal::from_str(text).unwrap(), currency: "RUB".into() }
    }

    /// Every field set, every optional one present.
    fn full_payment(state: PaymentState) -> StoredPayment {
        let at = DateTime::parse_from_rfc3339("2026-12-04T13:26:23.448138734Z").unwrap().to_utc();
        let invoice = Uuid::now_v7();
        let reason = MatchReason { code: "number_exact".into(), detail: "«12» is invoice № 12".into(), points: 50 };
        let matched = PaymentMatch {
            invoice_id: invoice,
            invoice_number: "12".into(),
            deal_id: Some(Uuid::now_v7()),
            method: MatchMethod::Manual,
            confidence: 100,
            reasons: vec![reason.clone()],
            paid_before: money("0"),
            paid_total: money("150.50"),
            invoice_total: money("100"),
            overpaid: Some(money("50.50")),
            matched_by: Some("accountant@example.ru".into()),
            matched_at: at,
        };
        let party = |inn: &str| Party {
            name: format!("ООО «Клиент {inn}»\t\"кавычки\""),
            inn: Some(Inn::new(inn)),
            account: Some(BankAccount {
                number: "40702810000000000001".into(),
                bic: Some("044525225".into()),
                ..BankAccount::default()
            }),
            ..Party::default()
        };
        let mut custom_fields = CustomFields::new();
        custom_fields.insert("statement_line".into(), serde_json::json!(9));
        StoredPayment {
            payment: Payment {
                id: Uuid::now_v7(),
                direction: PaymentDirection::Incoming,
                document_number: "А-17".into(),
                date: NaiveDate::from_ymd_opt(2024, 3, 2).unwrap(),
                amount: money("150.50"),
                payer: party("7700744872"),
                payee: party("7707083893"),
                purpose: "Оплата по сч. № 12\nот 01.02.2024".into(),
                invoice_id: Some(invoice),
                custom_fields,
                external_refs: vec![ExternalRef::new("bank", "40702810000000000001", "line-9")],
                recorded_at: at - Duration::days(1),
            },
            statement_id: Uuid::now_v7(),
            state,
            matched: Some(matched.clone()),
            also_matched: vec![PaymentMatch { invoice_number: "13".into(), ..matched }],
            review: Some(ReviewNote {
                reason: "weak".into(),
                detail: "the best invoice scores 35".into(),
                candidates: vec![MatchCandidate {
                    invoice_id: invoice,
                    invoice_number: "12".into(),
                    deal_id: None,
                    score: 35,
                    reasons: vec![reason],
                }],
            }),
            notes: vec!["the payer's INN is not valid".into()],
            updated_at: at,
        }
    }

    fn columns_of(p: &StoredPayment) -> PaymentColumns {
        PaymentColumns {
            id: p.payment.id,
            statement_id: p.statement_id,
            direction: p.payment.direction,
            state: p.state,
            invoice_id: p.payment.invoice_id,
            date: p.payment.date,
        }
    }

    #[test]
    fn a_payment_reads_back_whole_from_its_document_and_columns() {
        let full = full_payment(PaymentState::Matched);
        let doc = payment_doc(&full, 16).unwrap();
        assert_eq!(payment_from_doc(&doc, columns_of(&full)).unwrap(), full);

        // Without any optional part, times all the last change's.
        let mut bare = full_payment(PaymentState::Review);
        bare.payment.recorded_at = bare.updated_at;
        bare.payment.invoice_id = None;
        bare.payment.direction = PaymentDirection::Outgoing;
        bare.matched = None;
        bare.also_matched.clear();
        bare.review = None;
        bare.notes.clear();
        let doc = payment_doc(&bare, 16).unwrap();
        assert_eq!(payment_from_doc(&doc, columns_of(&bare)).unwrap(), bare);
    }

    #[test]
    fn the_document_leaves_out_what_the_columns_hold() {
        let mut p = full_payment(PaymentState::Matched);
        p.payment.recorded_at = p.updated_at;
        let doc: Value = serde_json::from_str(&payment_doc(&p, 16).unwrap()).unwrap();
        for key in ["statement_id", "state"] {
            assert!(doc.get(key).is_none(), "{key} in {doc}");
        }
        for key in ["id", "direction", "date", "invoice_id", "recorded_at"] {
            assert!(doc["payment"].get(key).is_none(), "payment.{key} in {doc}");
        }
        assert!(doc["matched"].get("matched_at").is_none(), "{doc}");
        // A split payment's further matches keep their own times.
        assert!(doc["also_matched"][0].get("matched_at").is_some(), "{doc}");
        let full = serde_json::to_string(&p).unwrap();
        let stored = doc.to_string();
        // Two ids, an invoice id, two times, a date, the state and the
        // direction, with their keys: about 300 bytes a payment.
        assert!(stored.len() + 280 < full.len(), "{} bytes stored of {}", stored.len(), full.len());
    }

    #[test]
    fn a_document_written_whole_reads_as_before() {
        let p = full_payment(PaymentState::Review);
        let whole = serde_json::to_string(&p).unwrap();
        assert_eq!(payment_from_doc(&whole, columns_of(&p)).unwrap(), p);
    }

    #[test]
    fn a_document_without_its_payment_is_named() {
        let p = full_payment(PaymentState::Review);
        let err = payment_from_doc(r#"{"updated_at":"2026-12-04T13:26:23Z"}"#, columns_of(&p)).unwrap_err();
        assert!(err.to_string().contains(&p.payment.id.to_string()), "{err}");
    }
}
