//! New payments into PostgreSQL by `COPY … FROM STDIN` (text format)
//! instead of `INSERT … SELECT FROM UNNEST`: an import's records (100,000
//! of ~1.85 KB each in a large statement) go in as one stream, which
//! PostgreSQL writes a page at a time rather than a row at a time.
//!
//! `COPY` has no `ON CONFLICT`. A payment stored already — by an earlier
//! statement, or by an import that committed first meanwhile — fails it
//! with a unique violation, which aborts the transaction: the commit is
//! then `Stale` and rolls back, as with the insert this replaces.

use std::fmt::Write as _;

use chrono::SecondsFormat;
use sqlx::postgres::PgDatabaseError;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::StoreError;
use super::doc::tag;
use super::payment_doc::payment_doc;
use super::payments::StoredPayment;

/// Columns in the order each line gives them; `seq` numbers the rows in
/// the order sent, which is file order.
const COPY_PAYMENTS: &str = "COPY payments (id, statement_id, direction, state, invoice_id, payment_date, doc, \
                             updated_at, overpaid) FROM STDIN";

/// Bytes gathered before they are sent: large enough that sending is not
/// per row, small enough not to hold a statement's records twice.
const SEND_AT: usize = 4 << 20;

/// PostgreSQL's `unique_violation`.
const UNIQUE_VIOLATION: &str = "23505";

/// Copies the payments in, in order. Returns one that was stored already,
/// if any; the transaction is then aborted and must be rolled back.
pub(super) async fn copy_payments(
    tx: &mut Transaction<'_, Postgres>,
    payments: &[StoredPayment],
) -> Result<Option<Uuid>, StoreError> {
    let Some(first) = payments.first() else { return Ok(None) };
    let mut copy = tx.copy_in_raw(COPY_PAYMENTS).await?;
    let mut lines = String::with_capacity(SEND_AT + 8192);
    for payment in payments {
        push_line(&mut lines, payment)?;
        if lines.len() >= SEND_AT {
            copy.send(std::mem::replace(&mut lines, String::with_capacity(SEND_AT + 8192)).into_bytes()).await?;
        }
    }
    if !lines.is_empty() {
        copy.send(lines.into_bytes()).await?;
    }
    match copy.finish().await {
        Ok(_) => Ok(None),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(UNIQUE_VIOLATION) => {
            let named = e.try_downcast_ref::<PgDatabaseError>().and_then(PgDatabaseError::detail).and_then(key_of);
            Ok(Some(named.unwrap_or(first.payment.id)))
        }
        Err(e) => Err(e.into()),
    }
}

/// One payment as a line of `COPY`'s text format.
fn push_line(lines: &mut String, p: &StoredPayment) -> Result<(), StoreError> {
    // Writing to a `String` does not fail.
    let _ = write!(lines, "{}\t{}\t", p.payment.id, p.statement_id);
    push_text(lines, &tag(&p.payment.direction)?);
    lines.push('\t');
    push_text(lines, p.state.as_str());
    lines.push('\t');
    match p.payment.invoice_id {
        Some(id) => {
            let _ = write!(lines, "{id}");
        }
        None => lines.push_str("\\N"),
    }
    let _ = write!(lines, "\t{}\t", p.payment.date);
    push_text(lines, &payment_doc(p, 2_048)?);
    lines.push('\t');
    // Microseconds, as PostgreSQL keeps them (and as sqlx binds a time).
    lines.push_str(&p.updated_at.to_rfc3339_opts(SecondsFormat::Micros, true));
    lines.push_str(if p.overpays() { "\tt\n" } else { "\tf\n" });
    Ok(())
}

/// `text` as a field of `COPY`'s text format: backslash, and the line and
/// column separators, escaped. (A JSON record has no raw control
/// characters, but its escapes have backslashes.)
fn push_text(lines: &mut String, text: &str) {
    let mut from = 0;
    for (at, byte) in text.bytes().enumerate() {
        let escaped = match byte {
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            _ => continue,
        };
        // `at` is an ASCII byte: a character boundary.
        lines.push_str(&text[from..at]);
        lines.push_str(escaped);
        from = at + 1;
    }
    lines.push_str(&text[from..]);
}

/// The id in a unique violation's detail: `Key (id)=(…) already exists.`
fn key_of(detail: &str) -> Option<Uuid> {
    let (_, rest) = detail.split_once("=(")?;
    let (key, _) = rest.split_once(')')?;
    Uuid::parse_str(key).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backslashes_and_separators_are_escaped() {
        let mut out = String::new();
        push_text(&mut out, "{\"purpose\":\"счет\\n№ 1\\\\2\"}\tx\ny\rz");
        assert_eq!(out, "{\"purpose\":\"счет\\\\n№ 1\\\\\\\\2\"}\\tx\\ny\\rz");
    }

    #[test]
    fn the_payment_stored_already_is_read_from_the_detail() {
        let id = Uuid::now_v7();
        assert_eq!(key_of(&format!("Key (id)=({id}) already exists.")), Some(id));
        assert_eq!(key_of("something else"), None);
    }
}
