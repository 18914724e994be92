//! Statement entries as canonical `Payment`s.
//!
//! Only credits (incoming) and debits (outgoing) become payments; transfers
//! between own accounts and entries of unknown direction are left to the
//! warnings. The payment id is a UUID v5 of the entry's identity (own
//! account, date, number, amount, payer and payee accounts), so importing the
//! same statement twice yields the same ids — the store can refuse the
//! duplicate.

use chrono::{DateTime, Utc};
use dealbridge_core::model::{BankAccount, ExternalRef, Inn, Money, Party, Payment, PaymentDirection};
use uuid::Uuid;

use crate::statement::{Counterparty, Direction, Entry, Location, Statement};

/// Namespace of payment ids derived from statement entries.
const PAYMENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2a7e_4b0d_5e39_9a51_d3c8_0b6e_7f21);

/// The entry's identity: own account, date, number, amount, payer and payee
/// accounts (`Номер` alone repeats across days and banks).
pub fn entry_key(entry: &Entry) -> String {
    format!(
        "{}|{}|{}|{}|{}|{}|{}",
        entry.account.as_deref().unwrap_or(""),
        entry.date,
        entry.number,
        entry.amount.normalize(),
        entry.currency,
        entry.payer.account,
        entry.payee.account
    )
}

/// Canonical payments of the statement's credits and debits, in file order.
pub fn to_payments(statement: &Statement, recorded_at: DateTime<Utc>) -> Vec<Payment> {
    statement.entries.iter().filter_map(|e| to_payment(e, recorded_at)).collect()
}

/// One entry as a payment, or `None` if it is neither a credit nor a debit
/// or its currency code is not ISO 4217 shaped.
pub fn to_payment(entry: &Entry, recorded_at: DateTime<Utc>) -> Option<Payment> {
    let direction = match entry.direction {
        Direction::Credit => PaymentDirection::Incoming,
        Direction::Debit => PaymentDirection::Outgoing,
        Direction::BetweenOwnAccounts | Direction::Unknown => return None,
    };
    let key = entry_key(entry);
    let mut custom_fields = dealbridge_core::model::CustomFields::new();
    custom_fields.insert("statement_document_kind".into(), entry.kind.to_string().into());
    if let Location::Line(n) = &entry.location {
        custom_fields.insert("statement_line".into(), (*n).into());
    }
    if let Some(d) = entry.debited_on {
        custom_fields.insert("debited_on".into(), d.to_string().into());
    }
    if let Some(d) = entry.credited_on {
        custom_fields.insert("credited_on".into(), d.to_string().into());
    }
    for (name, value) in &entry.references {
        custom_fields.insert(format!("ref_{name}").into(), value.clone().into());
    }
    Some(Payment {
        id: dealbridge_core::model::name_based_id(&PAYMENT_ID_NAMESPACE, key.as_bytes()),
        direction,
        document_number: entry.number.to_string(),
        date: entry.date,
        amount: Money::new(entry.amount, &entry.currency).ok()?,
        payer: party(&entry.payer),
        payee: party(&entry.payee),
        purpose: entry.purpose.clone(),
        invoice_id: None,
        custom_fields,
        external_refs: vec![ExternalRef::new("bank", entry.account.as_deref().unwrap_or(""), key)],
        recorded_at,
    })
}

fn party(c: &Counterparty) -> Party {
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    Party {
        name: c.name.to_string(),
        // «0» means "no INN" in 1C files.
        inn: (!c.inn.is_empty() && c.inn != "0").then(|| Inn::new(&c.inn)),
        kpp: non_empty(&c.kpp).filter(|k| k != "0"),
        account: non_empty(&c.account).map(|number| BankAccount {
            number,
            bic: non_empty(&c.bank_bic),
            bank_name: non_empty(&c.bank_name),
            correspondent_account: non_empty(&c.correspondent_account),
        }),
    }
}
