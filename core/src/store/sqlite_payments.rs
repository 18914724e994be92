//! `PaymentLedger` on SQLite. A payment transaction takes the write lock
//! at its start (`BEGIN IMMEDIATE`): it reads invoices, then writes, and a
//! CLI import may run in another process beside the hub.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rust_decimal::Decimal;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, Transaction};
use uuid::Uuid;

use super::StoreError;
use super::applied_payments::write_shares_sqlite;
use super::doc::{from_doc, tag, to_doc};
use super::error::corrupt;
use super::invoice_keys::{InvoiceKeys, InvoicePaid};
use super::payment_doc::{PAYMENT_COLUMNS, PaymentColumns, payment_doc, payment_from_doc};
use super::payments::{
    CommitOutcome, InvoiceChanges, NewStatement, OpenInvoice, PaymentLedger, PaymentSettlement, PaymentState,
    PaymentWrite, PaymentsBegun, StatementRecord, StatementTally, StoredPayment,
};
use super::sqlite::{SqliteStore, doc_from_row, from_micros, micros, parse_uuid, write_change_set};
use super::sqlite_invoices::{
    INVOICE_DOC, INVOICE_FROM, invoice_changes, open_invoices, open_invoices_by_keys, paid_amounts, update_paid,
};
use super::statement_file::{FileEncoding, StoredFile};
use crate::model::Invoice;

const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";
const STATEMENT_COLUMNS: &str =
    "id, digest, file_name, source, format, imported_at, summary, payments_new, payments_known";

fn id_list(ids: &[Uuid]) -> String {
    serde_json::Value::from(ids.iter().map(|id| id.to_string()).collect::<Vec<_>>()).to_string()
}

/// Rows of `state`, `n` (how many) and `overpaid` (how many of them).
fn tally(rows: &[SqliteRow]) -> Result<StatementTally, StoreError> {
    let rows = rows.iter().map(|r| Ok((r.try_get("state")?, r.try_get("n")?, r.try_get("overpaid")?)));
    StatementTally::of_rows(rows.collect::<Result<Vec<_>, StoreError>>()?)
}

fn statement_from_row(row: &SqliteRow) -> Result<StatementRecord, StoreError> {
    let count = |name: &str| -> Result<u32, StoreError> {
        let v: i64 = row.try_get(name)?;
        u32::try_from(v).map_err(|_| corrupt(format!("{name} {v}")))
    };
    Ok(StatementRecord {
        id: parse_uuid(row.try_get("id")?)?,
        digest: row.try_get("digest")?,
        file_name: row.try_get("file_name")?,
        source: row.try_get("source")?,
        format: row.try_get("format")?,
        imported_at: from_micros(row.try_get("imported_at")?)?,
        summary: from_doc("statement summary", row.try_get("summary")?)?,
        payments_new: count("payments_new")?,
        payments_known: count("payments_known")?,
    })
}

async fn insert_statement(tx: &mut Transaction<'_, Sqlite>, statement: &NewStatement) -> Result<bool, StoreError> {
    let r = &statement.record;
    let inserted = sqlx::query(
        "INSERT INTO bank_statements (id, digest, file_name, source, format, imported_at, summary, payments_new,
             payments_known, body, body_encoding)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (digest) DO NOTHING",
    )
    .bind(r.id.to_string())
    .bind(&r.digest)
    .bind(&r.file_name)
    .bind(&r.source)
    .bind(&r.format)
    .bind(micros(r.imported_at))
    .bind(to_doc("statement summary", &r.summary)?)
    .bind(i64::from(r.payments_new))
    .bind(i64::from(r.payments_known))
    .bind(&statement.file.bytes)
    .bind(statement.file.encoding.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Rows per payment `INSERT`: a few fixed sizes, so the statements stay in
/// sqlx's prepared-statement cache, and a large import makes a five
/// hundredth of the round trips one row per statement would (9 binds a
/// row: 4,500, far below SQLite's 32,766).
const PAYMENT_INSERT_ROWS: [usize; 4] = [500, 50, 5, 1];

/// `OR IGNORE`: a payment stored already is skipped (the caller counts the
/// rows written), and no constraint can make the statement fail half-way.
/// With the deferred statement key (migration 0016) SQLite then keeps no
/// statement journal for it: the copy of every index page each 500 rows
/// touch, about a gigabyte for a statement of 100,000 payments.
fn insert_payments_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT OR IGNORE INTO payments (id, statement_id, direction, state, invoice_id, payment_date, doc, \
         updated_at, overpaid) VALUES ",
    );
    for i in 0..rows {
        sql.push_str(if i == 0 { "(?, ?, ?, ?, ?, ?, ?, ?, ?)" } else { ", (?, ?, ?, ?, ?, ?, ?, ?, ?)" });
    }
    sql
}

/// A payment read with [`PAYMENT_COLUMNS`].
pub(super) fn payment_from_row(row: &SqliteRow) -> Result<StoredPayment, StoreError> {
    let id = parse_uuid(row.try_get("id")?)?;
    let invoice: Option<&str> = row.try_get("invoice_id")?;
    let date: &str = row.try_get("payment_date")?;
    let date = date.parse().map_err(|_| corrupt(format!("payment {id}: date `{date}`")))?;
    let columns = PaymentColumns::from_text(
        id,
        parse_uuid(row.try_get("statement_id")?)?,
        row.try_get("direction")?,
        row.try_get("state")?,
        invoice.map(parse_uuid).transpose()?,
        date,
    )?;
    payment_from_doc(row.try_get("doc")?, columns)
}

/// One payment's columns, its document serialised.
struct PaymentRow {
    id: String,
    statement: String,
    direction: String,
    state: &'static str,
    invoice: Option<String>,
    date: String,
    doc: String,
    updated: i64,
    overpaid: bool,
}

fn payment_rows(chunk: &[StoredPayment]) -> Result<Vec<PaymentRow>, StoreError> {
    // Each document's buffer is sized from the one before: a statement's
    // payment records are of about one size.
    let mut size = 2_048;
    chunk
        .iter()
        .map(|p| {
            let doc = payment_doc(p, size)?;
            size = doc.len() + doc.len() / 4;
            Ok(PaymentRow {
                id: p.payment.id.to_string(),
                statement: p.statement_id.to_string(),
                direction: tag(&p.payment.direction)?,
                state: p.state.as_str(),
                invoice: p.payment.invoice_id.map(|i| i.to_string()),
                date: p.payment.date.to_string(),
                doc,
                updated: micros(p.updated_at),
                overpaid: p.overpays(),
            })
        })
        .collect()
}

/// The next chunk of payments to insert: the largest statement shape that fits.
fn next_chunk<'a>(rest: &mut &'a [StoredPayment]) -> Option<&'a [StoredPayment]> {
    if rest.is_empty() {
        return None;
    }
    let rows = PAYMENT_INSERT_ROWS.into_iter().find(|&n| n <= rest.len()).unwrap_or(1);
    let (chunk, tail) = rest.split_at(rows);
    *rest = tail;
    Some(chunk)
}

/// Inserts the payments; returns one that was stored already, if any
/// (then the caller rolls back). While SQLite's thread inserts one chunk,
/// this one serialises the next (their documents are most of the bytes).
async fn insert_payments<'a>(
    tx: &mut Transaction<'_, Sqlite>,
    payments: &'a [StoredPayment],
) -> Result<Option<Uuid>, StoreError> {
    let mut rest = payments;
    // Time spent serialising, for the commit's debug log: the part of
    // the step on this thread rather than SQLite's.
    let mut serialising = Duration::ZERO;
    let mut rows_of = |chunk: Option<&'a [StoredPayment]>| {
        let started = Instant::now();
        let rows = chunk.map(|c| payment_rows(c).map(|rows| (c, rows))).transpose();
        serialising += started.elapsed();
        rows
    };
    let mut next = rows_of(next_chunk(&mut rest))?;
    while let Some((chunk, rows)) = next.take() {
        let mut insert = sqlx::query(sqlx::AssertSqlSafe(insert_payments_sql(chunk.len())));
        for row in rows {
            insert = insert
                .bind(row.id)
                .bind(row.statement)
                .bind(row.direction)
                .bind(row.state)
                .bind(row.invoice)
                .bind(row.date)
                .bind(row.doc)
                .bind(row.updated)
                .bind(row.overpaid);
        }
        let following = next_chunk(&mut rest);
        // `join` polls the insert first: it is on SQLite's thread before
        // the serialisation starts here.
        let (inserted, following) =
            futures::future::join(insert.execute(&mut **tx), async { rows_of(following) }).await;
        let inserted = inserted?.rows_affected();
        if inserted < chunk.len() as u64 {
            // Rows of this chunk stored by another statement were there before.
            let ids: Vec<Uuid> = chunk.iter().map(|p| p.payment.id).collect();
            let earlier: Option<String> = sqlx::query_scalar(
                "SELECT id FROM payments WHERE id IN (SELECT value FROM json_each(?)) AND statement_id <> ? LIMIT 1",
            )
            .bind(id_list(&ids))
            .bind(chunk[0].statement_id.to_string())
            .fetch_optional(&mut **tx)
            .await?;
            let earlier = earlier.as_deref().map(parse_uuid).transpose()?;
            return Ok(Some(earlier.unwrap_or(chunk[0].payment.id)));
        }
        next = following?;
    }
    tracing::debug!(serialise_ms = serialising.as_millis() as u64, "payment rows serialised");
    Ok(None)
}

async fn update_payment(
    tx: &mut Transaction<'_, Sqlite>,
    p: &StoredPayment,
    expected: PaymentState,
) -> Result<bool, StoreError> {
    let updated = sqlx::query(
        "UPDATE payments SET state = ?, invoice_id = ?, doc = ?, updated_at = ?, overpaid = ? WHERE id = ? AND state = ?",
    )
    .bind(p.state.as_str())
    .bind(p.payment.invoice_id.map(|i| i.to_string()))
    .bind(payment_doc(p, 2_048)?)
    .bind(micros(p.updated_at))
    .bind(p.overpays())
    .bind(p.payment.id.to_string())
    .bind(expected.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// The first invoice whose stored paid amount is not the one read, if any.
async fn changed_invoice(
    tx: &mut Transaction<'_, Sqlite>,
    read: &[(Uuid, Decimal)],
) -> Result<Option<Uuid>, StoreError> {
    if read.is_empty() {
        return Ok(None);
    }
    let ids: Vec<Uuid> = read.iter().map(|(id, _)| *id).collect();
    let stored = paid_amounts(tx, &ids).await?;
    Ok(read.iter().find(|(id, paid)| stored.get(id) != Some(paid)).map(|(id, _)| *id))
}

/// Writes the invoices' new paid amounts if every invoice read still has
/// the paid amount read; otherwise the first that does not.
///
/// The comparison happens in the write itself (one pass over the
/// invoices instead of a read and a write); only when some invoice was not
/// written are the amounts compared one by one, as numbers, to tell a
/// change (stale) from a mere difference in how an amount is written.
async fn pay_invoices(
    tx: &mut Transaction<'_, Sqlite>,
    invoices_read: &[(Uuid, Decimal)],
    invoices_paid: &[InvoicePaid],
) -> Result<Option<Uuid>, StoreError> {
    let read: HashMap<Uuid, Decimal> = invoices_read.iter().copied().collect();
    let paid: HashSet<Uuid> = invoices_paid.iter().map(|p| p.id).collect();
    let only_read: Vec<(Uuid, Decimal)> = invoices_read.iter().filter(|(id, _)| !paid.contains(id)).copied().collect();
    if let Some(id) = changed_invoice(tx, &only_read).await? {
        return Ok(Some(id));
    }
    let (written, expected) = update_paid(tx, invoices_paid, Some(&read)).await?;
    if written == expected {
        return Ok(None);
    }
    if let Some(id) = changed_invoice(tx, invoices_read).await? {
        return Ok(Some(id));
    }
    // Every amount is as read: write the rest (writing one again is harmless).
    let (written, expected) = update_paid(tx, invoices_paid, None).await?;
    if written < expected {
        return Err(StoreError::Conflict(format!(
            "{} of {expected} invoices to pay are not stored",
            expected - written
        )));
    }
    Ok(None)
}

/// A payment transaction on SQLite's writer, holding its write lock.
struct SqlitePaymentWrite {
    tx: Transaction<'static, Sqlite>,
    /// Time taken to begin (and store the statement), to insert the
    /// payments so far and to pay the invoices: for the commit's debug log.
    begun: Duration,
    inserting: Duration,
    paying: Duration,
}

#[async_trait]
impl PaymentWrite for SqlitePaymentWrite {
    async fn insert_payments(&mut self, payments: &[StoredPayment]) -> Result<Option<Uuid>, StoreError> {
        let started = Instant::now();
        if let Some(stored) = insert_payments(&mut self.tx, payments).await? {
            return Ok(Some(stored));
        }
        let new: Vec<&StoredPayment> = payments.iter().collect();
        write_shares_sqlite(&mut self.tx, &new, false).await?;
        self.inserting += started.elapsed();
        Ok(None)
    }

    async fn pay_invoices(
        &mut self,
        read: &[(Uuid, Decimal)],
        paid: &[InvoicePaid],
    ) -> Result<Option<Uuid>, StoreError> {
        let started = Instant::now();
        let stale = pay_invoices(&mut self.tx, read, paid).await?;
        self.paying += started.elapsed();
        Ok(stale)
    }

    async fn finish(self: Box<Self>, settlement: PaymentSettlement<'_>) -> Result<CommitOutcome, StoreError> {
        let started = Instant::now();
        let Self { mut tx, begun, inserting, paying } = *self;
        for (payment, expected) in settlement.updated_payments {
            if !update_payment(&mut tx, payment, *expected).await? {
                return Ok(CommitOutcome::Stale(format!(
                    "payment {} is no longer {}",
                    payment.payment.id,
                    expected.as_str()
                )));
            }
        }
        let updated: Vec<&StoredPayment> = settlement.updated_payments.iter().map(|(p, _)| p).collect();
        write_shares_sqlite(&mut tx, &updated, true).await?;
        let updated_at = started.elapsed();
        write_change_set(&mut tx, settlement.changes).await?;
        let changes_at = started.elapsed();
        tx.commit().await?;
        tracing::debug!(
            statement_ms = begun.as_millis() as u64,
            payments_ms = inserting.as_millis() as u64,
            invoices_paid_ms = paying.as_millis() as u64,
            payments_updated_ms = updated_at.as_millis() as u64,
            changes_ms = (changes_at - updated_at).as_millis() as u64,
            commit_ms = (started.elapsed() - changes_at).as_millis() as u64,
            "payments committed"
        );
        Ok(CommitOutcome::Committed)
    }
}

#[async_trait]
impl PaymentLedger for SqliteStore {
    async fn begin_payments(&self, statement: Option<&NewStatement>) -> Result<PaymentsBegun, StoreError> {
        let started = Instant::now();
        let mut tx = self.writer.begin_with(BEGIN_WRITE).await?;
        if let Some(statement) = statement
            && !insert_statement(&mut tx, statement).await?
        {
            let id: String = sqlx::query_scalar("SELECT id FROM bank_statements WHERE digest = ?")
                .bind(&statement.record.digest)
                .fetch_one(&mut *tx)
                .await?;
            return Ok(PaymentsBegun::StatementKnown(parse_uuid(&id)?));
        }
        let begun = started.elapsed();
        let write = SqlitePaymentWrite { tx, begun, inserting: Duration::ZERO, paying: Duration::ZERO };
        Ok(PaymentsBegun::Open(Box::new(write)))
    }

    async fn statement_by_digest(&self, digest: &str) -> Result<Option<StatementRecord>, StoreError> {
        let sql = format!("SELECT {STATEMENT_COLUMNS} FROM bank_statements WHERE digest = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(digest).fetch_optional(&self.reader).await?;
        row.as_ref().map(statement_from_row).transpose()
    }

    async fn get_statement(&self, id: Uuid) -> Result<Option<StatementRecord>, StoreError> {
        let sql = format!("SELECT {STATEMENT_COLUMNS} FROM bank_statements WHERE id = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.to_string()).fetch_optional(&self.reader).await?;
        row.as_ref().map(statement_from_row).transpose()
    }

    async fn statement_file(&self, id: Uuid) -> Result<Option<StoredFile>, StoreError> {
        let row: Option<(Vec<u8>, String)> =
            sqlx::query_as("SELECT body, body_encoding FROM bank_statements WHERE id = ?")
                .bind(id.to_string())
                .fetch_optional(&self.reader)
                .await?;
        row.map(|(bytes, encoding)| Ok(StoredFile { encoding: FileEncoding::parse(&encoding)?, bytes })).transpose()
    }

    async fn known_payments(&self, ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
        // Bounded chunks keep each bound JSON list small; they are looked
        // up side by side, each on a reader connection (and its thread) of
        // its own as the pool has them.
        let lookups = ids.chunks(10_000).map(|chunk| async move {
            let rows: Vec<String> =
                sqlx::query_scalar("SELECT id FROM payments WHERE id IN (SELECT value FROM json_each(?))")
                    .bind(id_list(chunk))
                    .fetch_all(&self.reader)
                    .await?;
            rows.iter().map(|id| parse_uuid(id)).collect::<Result<Vec<Uuid>, StoreError>>()
        });
        Ok(futures::future::try_join_all(lookups).await?.concat())
    }

    async fn get_payment(&self, id: Uuid) -> Result<Option<StoredPayment>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = ?")))
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(payment_from_row).transpose()
    }

    async fn payments_in_state(&self, state: PaymentState, limit: u32) -> Result<Vec<StoredPayment>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE state = ? ORDER BY seq LIMIT ?"
        )))
        .bind(state.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(payment_from_row).collect()
    }

    async fn payments_of_statement(&self, statement: Uuid, limit: u32) -> Result<Vec<StoredPayment>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE statement_id = ? ORDER BY seq LIMIT ?"
        )))
        .bind(statement.to_string())
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(payment_from_row).collect()
    }

    async fn statement_tally(&self, statement: Uuid) -> Result<StatementTally, StoreError> {
        let rows = sqlx::query(
            "SELECT state, COUNT(*) AS n, SUM(overpaid) AS overpaid FROM payments WHERE statement_id = ? GROUP BY state",
        )
        .bind(statement.to_string())
        .fetch_all(&self.reader)
        .await?;
        tally(&rows)
    }

    async fn payment_counts(&self) -> Result<BTreeMap<PaymentState, u64>, StoreError> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n, 0 AS overpaid FROM payments GROUP BY state")
            .fetch_all(&self.reader)
            .await?;
        Ok(tally(&rows)?.by_state)
    }

    async fn open_invoices(&self) -> Result<Vec<OpenInvoice>, StoreError> {
        open_invoices(&self.reader).await
    }

    async fn open_invoices_by_keys(&self, keys: &InvoiceKeys) -> Result<Vec<OpenInvoice>, StoreError> {
        open_invoices_by_keys(&self.reader, keys).await
    }

    async fn invoice_changes(&self, since: u64) -> Result<Option<InvoiceChanges>, StoreError> {
        invoice_changes(&self.reader, since).await.map(Some)
    }

    async fn invoices_by_ids(&self, ids: &[Uuid]) -> Result<Vec<Invoice>, StoreError> {
        let mut found = Vec::new();
        for chunk in ids.chunks(10_000) {
            let sql = format!(
                "SELECT {INVOICE_DOC} FROM {INVOICE_FROM} WHERE i.id IN (SELECT value FROM json_each(?)) ORDER BY i.id"
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id_list(chunk)).fetch_all(&self.reader).await?;
            for row in &rows {
                found.push(doc_from_row(row, "invoice")?);
            }
        }
        Ok(found)
    }
}
