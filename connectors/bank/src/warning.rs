//! Warnings: things in a statement that do not stop the import but that an
//! accountant should know about. Each kind is explained in
//! docs/connectors/bank.md under its code.

use serde::Serialize;

use crate::statement::Location;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WarningCode {
    /// The `Кодировка` header names another encoding than the bytes are in.
    DeclaredEncodingDiffers,
    /// Some lines are UTF-8 and others Windows-1251.
    MixedEncoding,
    /// A key repeats inside one section; the last value is used.
    RepeatedKey,
    /// `СекцияДокумент` without `=type`; the type is taken from the header.
    DocumentTypeMissing,
    /// A document has no number.
    DocumentNumberMissing,
    /// Neither account of the document is the statement's; the direction
    /// was taken from `ДатаСписано`/`ДатаПоступило`.
    DirectionFromDates,
    /// The direction of a document could not be told.
    DirectionUnknown,
    /// A document moves money between two of the statement's own accounts.
    BetweenOwnAccounts,
    /// The statement names no account of its own.
    NoAccounts,
    /// The statement's own totals (`ВсегоПоступило`, `ВсегоСписано`, camt
    /// transaction summary) differ from the sum of its documents.
    TotalsDisagree,
    /// Opening balance + credits − debits ≠ closing balance.
    BalanceDoesNotAdd,
    /// A payer or payee INN fails its length or check digits.
    InvalidInn,
    /// Lines after `КонецФайла` (or the MT940 trailer) were ignored.
    TextAfterEnd,
    /// A camt.053 entry is not booked (`PDNG`, `INFO`): it is listed but may change.
    EntryNotBooked,
    /// Amounts in different currencies where one was expected.
    CurrencyMismatch,
    /// The amount used a comma as decimal separator.
    CommaDecimalSeparator,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub code: WarningCode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    pub message: String,
}

impl Warning {
    pub fn new(code: WarningCode, location: Option<Location>, message: impl Into<String>) -> Self {
        Self { code, location, message: message.into() }
    }

    pub fn at_line(code: WarningCode, line: usize, message: impl Into<String>) -> Self {
        Self::new(code, Some(Location::Line(line)), message)
    }
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.location {
            Some(at) => write!(f, "{at}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}
