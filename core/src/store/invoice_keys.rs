//! The keys payments find invoices by, and the slim projection of an
//! invoice that matching reads.
//!
//! Both stores keep, beside each invoice's JSON document, the folded form
//! of its number, the digits the number ends in, its client's INN as a
//! number and the few fields matching scores on (date, total, currency,
//! paid, open or not). A statement import then asks only for the open
//! invoices its payments' purpose texts and payers point at — by indexed
//! columns — instead of reading every open invoice's document. The folding
//! lives here so the store (writing the keys) and the bank connector
//! (looking them up) can never disagree on it.

use std::str::FromStr;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use uuid::Uuid;

use super::StoreError;
use super::doc::tag;
use super::error::corrupt;
use super::payments::OpenInvoice;
use crate::model::{Invoice, InvoiceKind, InvoiceStatus, Money};

/// One character of a number as matching compares it: upper case, Cyrillic
/// letters that look Latin as the Latin ones; `None` for separators.
pub fn fold_number_char(c: char) -> Option<char> {
    if c.is_ascii_alphanumeric() {
        return Some(c.to_ascii_uppercase());
    }
    let folded = match c {
        'а' | 'А' => 'A',
        'в' | 'В' => 'B',
        'е' | 'Е' | 'ё' | 'Ё' => 'E',
        'к' | 'К' => 'K',
        'м' | 'М' => 'M',
        'н' | 'Н' => 'H',
        'о' | 'О' => 'O',
        'р' | 'Р' => 'P',
        'с' | 'С' => 'C',
        'т' | 'Т' => 'T',
        'у' | 'У' => 'Y',
        'х' | 'Х' => 'X',
        'б'..='я' => char::from_u32(c as u32 - 0x20).unwrap_or(c),
        c if c.is_alphanumeric() => c.to_uppercase().next().unwrap_or(c),
        _ => return None,
    };
    Some(folded)
}

/// Case-, separator- and script-insensitive form of a number: «А-123»,
/// «a123» and «A 123» are all `A123`.
pub fn number_key(number: &str) -> String {
    number.chars().filter_map(fold_number_char).collect()
}

/// Whether `number`'s key ([`number_key`]) is `key`, without building it:
/// the matcher asks this of every invoice a number's hash chains to.
pub fn has_number_key(number: &str, key: &str) -> bool {
    number.chars().filter_map(fold_number_char).eq(key.chars())
}

/// The hash of a number's key and the digits it ends in (leading zeros
/// dropped; `None` when it ends in a letter, the digits are all zeros or
/// more than 18), in one pass without allocating.
pub fn number_hash_and_digits(number: &str) -> (u64, Option<u64>) {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    let (mut value, mut significant) = (0_u64, 0_u32);
    let mut buf = [0_u8; 4];
    for c in number.chars().filter_map(fold_number_char) {
        for b in c.encode_utf8(&mut buf).bytes() {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        match c.to_digit(10) {
            Some(d) => {
                if significant > 0 || d != 0 {
                    significant += 1;
                }
                if significant <= 18 {
                    value = value * 10 + u64::from(d);
                }
            }
            None => (value, significant) = (0, 0),
        }
    }
    (hash, (1..=18).contains(&significant).then_some(value))
}

/// The digits a number ends in, without leading zeros (see
/// [`number_hash_and_digits`]).
pub fn number_digits(number: &str) -> Option<u64> {
    number_hash_and_digits(number).1
}

/// An INN of 10 or 12 digits as one number (its length kept apart);
/// `None` for anything else.
pub fn inn_key(inn: &str) -> Option<u64> {
    let inn = inn.trim();
    if !(inn.len() == 10 || inn.len() == 12) || !inn.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    inn.parse::<u64>().ok().map(|v| v * 16 + inn.len() as u64)
}

/// What payments may point at: open invoices with one of these folded
/// numbers ([`number_key`]), ending in one of these digits
/// ([`number_digits`]) or of a client with one of these INNs ([`inn_key`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InvoiceKeys {
    pub numbers: Vec<String>,
    pub digits: Vec<u64>,
    pub inns: Vec<u64>,
}

impl InvoiceKeys {
    pub fn is_empty(&self) -> bool {
        self.numbers.is_empty() && self.digits.is_empty() && self.inns.is_empty()
    }
}

/// Whether an invoice in this status still expects money.
pub fn is_open(status: InvoiceStatus) -> bool {
    matches!(status, InvoiceStatus::Open | InvoiceStatus::PartiallyPaid)
}

/// The columns an invoice row carries for matching, derived from the
/// invoice. Keys are stored as signed integers (both databases' integers
/// are signed; every key fits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Projection {
    pub number_key: String,
    pub number_digits: Option<i64>,
    pub inn_key: Option<i64>,
    pub client_inn: Option<String>,
    pub date: NaiveDate,
    pub total: String,
    pub currency: String,
    pub paid: String,
    pub is_open: bool,
}

impl Projection {
    pub fn of(invoice: &Invoice) -> Self {
        let client_inn = invoice.client.as_ref().and_then(|c| c.inn.as_ref()).map(|i| i.as_str().to_owned());
        Self {
            number_key: number_key(&invoice.number),
            number_digits: number_digits(&invoice.number).and_then(|d| i64::try_from(d).ok()),
            inn_key: client_inn.as_deref().and_then(inn_key).and_then(|k| i64::try_from(k).ok()),
            client_inn,
            date: invoice.date,
            total: invoice.total.amount.to_string(),
            currency: invoice.total.currency.clone(),
            paid: invoice.paid.amount.to_string(),
            is_open: is_open(invoice.status),
        }
    }
}

/// The projection columns of a row, read back as matching sees them.
pub(crate) struct ProjectedRow {
    pub id: Uuid,
    pub deal_id: Option<Uuid>,
    pub kind: String,
    pub number: String,
    pub date: NaiveDate,
    pub client_inn: Option<String>,
    pub total: String,
    pub currency: String,
    pub paid: String,
}

impl ProjectedRow {
    /// An import turns a few hundred thousand rows into this: the texts are
    /// moved, not copied, and the kind is matched by name rather than
    /// parsed as JSON.
    pub fn into_open_invoice(self) -> Result<OpenInvoice, StoreError> {
        let id = self.id;
        let amount = |text: &str, what: &str| {
            Decimal::from_str(text).map_err(|e| corrupt(format!("invoice {id} {what} `{text}`: {e}")))
        };
        let kind = match self.kind.as_str() {
            "invoice" => InvoiceKind::Invoice,
            "order" => InvoiceKind::Order,
            other => return Err(corrupt(format!("invoice {id} kind `{other}`"))),
        };
        let total = amount(&self.total, "total")?;
        let paid = amount(&self.paid, "paid amount")?;
        Ok(OpenInvoice {
            id,
            deal_id: self.deal_id,
            kind,
            number: self.number,
            date: self.date,
            client_inn: self.client_inn,
            total: Money { amount: total, currency: self.currency.clone() },
            paid: Money { amount: paid, currency: self.currency },
        })
    }
}

/// An invoice's paid amount, status and time after payments were applied
/// to it: written beside the stored document (migration 0012) and laid
/// over it on every read, so an import touching many invoices neither
/// reads nor rewrites their whole documents.
#[derive(Debug, Clone, PartialEq)]
pub struct InvoicePaid {
    pub id: Uuid,
    pub paid: Money,
    pub status: InvoiceStatus,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl InvoicePaid {
    /// The JSON texts the document gets: `paid`, `status` (a JSON string
    /// value, unquoted here) and `updated_at` as serde writes them, so the
    /// document reads back exactly as a whole rewrite would have left it.
    pub(crate) fn doc_parts(&self) -> Result<(String, String, String), StoreError> {
        let paid = super::doc::to_doc("invoice paid amount", &self.paid)?;
        let at = match serde_json::to_value(self.updated_at) {
            Ok(serde_json::Value::String(at)) => at,
            other => return Err(StoreError::Database(format!("invoice time as JSON: {other:?}"))),
        };
        Ok((paid, tag(&self.status)?, at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `into_open_invoice` reads the kind column by these names.
    #[test]
    fn kind_columns_hold_the_names_read_back() {
        assert_eq!(tag(&InvoiceKind::Invoice).unwrap(), "invoice");
        assert_eq!(tag(&InvoiceKind::Order).unwrap(), "order");
    }

    #[test]
    fn numbers_fold_across_case_script_and_separators() {
        assert_eq!(number_key("А-123"), "A123");
        assert_eq!(number_key("a 123"), "A123");
        assert_eq!(number_key("ЗК-0042"), "ЗK0042");
        assert_eq!(number_digits("ТД00-000123"), Some(123));
        assert_eq!(number_digits("INV-17A"), None);
        assert_eq!(number_digits("000"), None);
    }

    #[test]
    fn a_number_has_the_key_it_folds_to_and_no_other() {
        for number in ["А-123", "a 123", "ЗК-0042", "ТД00-000123", "", "--"] {
            assert!(has_number_key(number, &number_key(number)), "{number}");
        }
        assert!(!has_number_key("А-123", "A12"), "a prefix of the key");
        assert!(!has_number_key("А-12", "A123"), "the key goes on");
        assert!(!has_number_key("Б-123", "A123"));
    }

    #[test]
    fn inns_of_ten_or_twelve_digits_are_keys() {
        assert_eq!(inn_key(" 7707083893 "), inn_key("7707083893"));
        assert_ne!(inn_key("7707083893"), inn_key("007707083893"), "length is part of the key");
        assert_eq!(inn_key("77070838"), None);
        assert_eq!(inn_key("77070838x3"), None);
    }
}
