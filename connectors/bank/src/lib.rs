//! Bank statements for dealbridge: parsers for 1CClientBankExchange, ISO 20022
//! camt.053 and MT940 into one [`Statement`] shape, a [`Summary`] of what a
//! statement holds, the conversion of its entries to canonical `Payment`s,
//! matching them to open invoices (`matching`), applying the matches
//! through the flow engine (`apply`) and importing a statement into the
//! store in one transaction (`import`, `watch` for a watched folder).
//!
//! Every parser reads from a `BufRead`, rejects a broken file whole (the
//! error names the line or XML path and the field) and never panics.

pub mod apply;
pub mod attributes;
pub mod camt053;
pub mod client_bank_exchange;
mod counted_once;
pub mod error;
pub mod import;
mod lines;
pub mod matching;
pub mod mt940;
mod payment_writer;
pub mod payments;
mod reconcile;
pub mod statement;
pub mod summary;
pub mod values;
pub mod warning;
pub mod watch;

use std::io::BufRead;

pub use error::StatementError;
pub use statement::{
    Account, BalancePeriod, Counterparty, Direction, Entry, Format, Location, Statement, TextEncoding,
};
pub use summary::Summary;
pub use warning::{Warning, WarningCode};

/// Reads a statement in whichever supported format its first bytes show.
pub fn parse_statement<R: BufRead>(mut input: R) -> Result<Statement, StatementError> {
    let head = input.fill_buf()?;
    if head.iter().all(u8::is_ascii_whitespace) {
        return Err(StatementError::Empty);
    }
    if client_bank_exchange::sniff(head) {
        client_bank_exchange::parse(input)
    } else if camt053::sniff(head) {
        camt053::parse(input)
    } else if mt940::sniff(head) {
        mt940::parse(input)
    } else {
        Err(StatementError::UnknownFormat)
    }
}
