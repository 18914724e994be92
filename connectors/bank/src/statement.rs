//! The one parsed shape every statement format is read into: the accounts
//! the statement covers with their balances, the entries (payment documents)
//! and the warnings found on the way.
//!
//! Nothing here is canonical yet: `payments.rs` turns entries into
//! `dealbridge_core::model::Payment`s, `summary.rs` counts and sums them.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Serialize;

use crate::attributes::Attributes;
use crate::warning::Warning;

/// Text of an entry: up to 23 bytes (numbers, INNs, accounts, BICs, the
/// currency) live inline, longer text is shared on clone, so a large
/// statement does not allocate a dozen small strings per document and
/// documents naming the same bank or document type share one copy.
pub type Text = smol_str::SmolStr;

/// Which format the statement was read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "name", content = "version", rename_all = "snake_case")]
pub enum Format {
    /// 1CClientBankExchange; the version is `ВерсияФормата` as written (`1.02`, `1.03`).
    ClientBankExchange(String),
    /// ISO 20022 camt.053; the version is the namespace suffix (`001.02` … `001.08`).
    Camt053(String),
    /// SWIFT MT940.
    Mt940,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Format::ClientBankExchange(v) => write!(f, "1CClientBankExchange {v}"),
            Format::Camt053(v) => write!(f, "camt.053.{v}"),
            Format::Mt940 => f.write_str("MT940"),
        }
    }
}

/// The byte encoding the text was found to be in (by content, not by what the
/// file claims).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TextEncoding {
    /// Only ASCII bytes: both encodings read it the same.
    Ascii,
    #[serde(rename = "utf-8")]
    Utf8,
    #[serde(rename = "windows-1251")]
    Windows1251,
    /// Lines in both UTF-8 and Windows-1251 (each line was read in its own).
    Mixed,
}

impl std::fmt::Display for TextEncoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TextEncoding::Ascii => "ASCII",
            TextEncoding::Utf8 => "UTF-8",
            TextEncoding::Windows1251 => "Windows-1251",
            TextEncoding::Mixed => "mixed UTF-8 and Windows-1251",
        })
    }
}

/// Where in the file something is: a line (1-based) or an XML element path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Location {
    Line(usize),
    XmlPath(String),
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Line(n) => write!(f, "line {n}"),
            Location::XmlPath(p) => write!(f, "{p}"),
        }
    }
}

/// A parsed statement. A file that cannot be read whole never becomes one.
#[derive(Debug, Clone, Serialize)]
pub struct Statement {
    pub format: Format,
    pub encoding: TextEncoding,
    /// File-level fields as written (1C header keys, camt message id, MT940
    /// reference), unknown ones included.
    pub header: Attributes,
    pub accounts: Vec<Account>,
    pub entries: Vec<Entry>,
    pub warnings: Vec<Warning>,
}

impl Statement {
    /// Whether `number` is one of the statement's own accounts.
    pub fn is_own_account(&self, number: &str) -> bool {
        !number.is_empty() && self.accounts.iter().any(|a| a.number == number)
    }
}

/// One of the company's accounts the statement reports on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Account {
    /// Account number (20 digits in Russia, IBAN or a local id elsewhere).
    pub number: String,
    /// ISO 4217 code when the format says it (1C statements are in roubles).
    pub currency: Option<String>,
    /// Balance periods in file order; banks may write one per day.
    pub balances: Vec<BalancePeriod>,
}

/// The statement's own figures for one account over one period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BalancePeriod {
    pub location: Location,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    pub opening: Option<Decimal>,
    /// Total credited in the period as stated by the bank (`ВсегоПоступило`).
    pub credited: Option<Decimal>,
    /// Total debited in the period as stated by the bank (`ВсегоСписано`).
    pub debited: Option<Decimal>,
    pub closing: Option<Decimal>,
    /// Keys of the section the parser gives no meaning to, as written.
    pub extra: Attributes,
}

/// Which way an entry moves money, seen from the statement's own accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Money received on an own account.
    Credit,
    /// Money paid from an own account.
    Debit,
    /// From one own account to another: neither income nor expense.
    BetweenOwnAccounts,
    /// Neither side is an own account and the file gives no other clue.
    Unknown,
}

/// A payment document (1C) or a booked entry (camt.053, MT940).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    pub location: Location,
    /// Document type (`Платежное поручение`, `Банковский ордер`, …) or the
    /// bank transaction code.
    pub kind: Text,
    /// Document number as printed (may contain letters); bank reference for
    /// camt/MT940 when there is no number.
    pub number: Text,
    /// Document date (1C) or booking date (camt, MT940).
    pub date: NaiveDate,
    /// Always positive; `direction` says which way.
    pub amount: Decimal,
    pub currency: Text,
    pub direction: Direction,
    /// The own account this entry is booked on, when known.
    pub account: Option<Text>,
    pub payer: Counterparty,
    pub payee: Counterparty,
    /// Purpose of payment / remittance information.
    pub purpose: String,
    /// Date the money left the payer's account (`ДатаСписано`).
    pub debited_on: Option<NaiveDate>,
    /// Date the money reached the payee's account (`ДатаПоступило`, camt value date).
    pub credited_on: Option<NaiveDate>,
    /// References such as camt `EndToEndId` or `AcctSvcrRef`, as `(name, value)`.
    pub references: Vec<(String, String)>,
    /// Every key of the document as written, unknown keys included (1C only).
    pub attributes: Attributes,
}

/// Payer or payee of an entry as the bank printed it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counterparty {
    pub name: Text,
    pub inn: Text,
    pub kpp: Text,
    pub account: Text,
    pub bank_bic: Text,
    pub bank_name: Text,
    pub correspondent_account: Text,
    /// Other identifiers (camt `Othr/Id` with its issuer or scheme).
    pub other_ids: Vec<String>,
}
