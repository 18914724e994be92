//! `PaymentLedger` on PostgreSQL. Replicas may import at once: a payment
//! transaction locks the `invoice_match` rows of the invoices it computed from (`FOR
//! UPDATE`, in id order) before comparing their paid amounts, a payment
//! stored concurrently fails the `COPY` of the new ones with a unique
//! violation (`postgres_payment_copy.rs`), and a state update names the
//! state it expects — so the loser of a race sees `Stale` and recomputes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rust_decimal::Decimal;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use super::StoreError;
use super::applied_payments::write_shares_pg;
use super::doc::{from_doc, to_doc};
use super::error::corrupt;
use super::invoice_keys::{InvoiceKeys, InvoicePaid};
use super::payment_doc::{PAYMENT_COLUMNS, PaymentColumns, payment_doc, payment_from_doc};
use super::payments::{
    CommitOutcome, InvoiceChanges, NewStatement, OpenInvoice, PaymentLedger, PaymentSettlement, PaymentState,
    PaymentWrite, PaymentsBegun, StatementRecord, StatementTally, StoredPayment,
};
use super::postgres::{PgStore, doc_from_row, write_change_set};
use super::postgres_invoices::{
    INVOICE_DOC, INVOICE_FROM, lock_paid_amounts, open_invoices, open_invoices_by_keys, update_paid,
};
use super::postgres_payment_copy::copy_payments;
use super::statement_file::{FileEncoding, StoredFile};
use crate::model::Invoice;

const STATEMENT_COLUMNS: &str =
    "id, digest, file_name, source, format, imported_at, summary::text AS summary, payments_new, payments_known";

fn statement_from_row(row: &PgRow) -> Result<StatementRecord, StoreError> {
    let count = |name: &str| -> Result<u32, StoreError> {
        let v: i32 = row.try_get(name)?;
        u32::try_from(v).map_err(|_| corrupt(format!("{name} {v}")))
    };
    Ok(StatementRecord {
        id: row.try_get("id")?,
        digest: row.try_get("digest")?,
        file_name: row.try_get("file_name")?,
        source: row.try_get("source")?,
        format: row.try_get("format")?,
        imported_at: row.try_get("imported_at")?,
        summary: from_doc("statement summary", row.try_get("summary")?)?,
        payments_new: count("payments_new")?,
        payments_known: count("payments_known")?,
    })
}

/// Rows of `state`, `n` (how many) and `overpaid` (how many of them).
fn tally(rows: &[PgRow]) -> Result<StatementTally, StoreError> {
    let rows = rows.iter().map(|r| Ok((r.try_get("state")?, r.try_get("n")?, r.try_get("overpaid")?)));
    StatementTally::of_rows(rows.collect::<Result<Vec<_>, StoreError>>()?)
}

async fn insert_statement(tx: &mut Transaction<'_, Postgres>, statement: &NewStatement) -> Result<bool, StoreError> {
    let r = &statement.record;
    let inserted = sqlx::query(
        "INSERT INTO bank_statements (id, digest, file_name, source, format, imported_at, summary, payments_new,
             payments_known, body, body_encoding)
         VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10, $11) ON CONFLICT (digest) DO NOTHING",
    )
    .bind(r.id)
    .bind(&r.digest)
    .bind(&r.file_name)
    .bind(&r.source)
    .bind(&r.format)
    .bind(r.imported_at)
    .bind(to_doc("statement summary", &r.summary)?)
    .bind(i32::try_from(r.payments_new).unwrap_or(i32::MAX))
    .bind(i32::try_from(r.payments_known).unwrap_or(i32::MAX))
    .bind(&statement.file.bytes)
    .bind(statement.file.encoding.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

async fn update_payment(
    tx: &mut Transaction<'_, Postgres>,
    p: &StoredPayment,
    expected: PaymentState,
) -> Result<bool, StoreError> {
    let updated = sqlx::query(
        "UPDATE payments SET state = $1, invoice_id = $2, doc = $3, updated_at = $4, overpaid = $7
         WHERE id = $5 AND state = $6",
    )
    .bind(p.state.as_str())
    .bind(p.payment.invoice_id)
    .bind(payment_doc(p, 2_048)?)
    .bind(p.updated_at)
    .bind(p.payment.id)
    .bind(expected.as_str())
    .bind(p.overpays())
    .execute(&mut **tx)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Locks the invoices read and returns the first whose stored paid amount
/// is not the one read, if any.
async fn changed_invoice(
    tx: &mut Transaction<'_, Postgres>,
    read: &[(Uuid, Decimal)],
) -> Result<Option<Uuid>, StoreError> {
    if read.is_empty() {
        return Ok(None);
    }
    let ids: Vec<Uuid> = read.iter().map(|(id, _)| *id).collect();
    let stored = lock_paid_amounts(tx, &ids).await?;
    Ok(read.iter().find(|(id, paid)| stored.get(id) != Some(paid)).map(|(id, _)| *id))
}

/// A payment read with [`PAYMENT_COLUMNS`].
pub(super) fn payment_from_row(row: &PgRow) -> Result<StoredPayment, StoreError> {
    let columns = PaymentColumns::from_text(
        row.try_get("id")?,
        row.try_get("statement_id")?,
        row.try_get("direction")?,
        row.try_get("state")?,
        row.try_get("invoice_id")?,
        row.try_get("payment_date")?,
    )?;
    payment_from_doc(row.try_get("doc")?, columns)
}

/// A payment transaction on one of the pool's connections.
struct PgPaymentWrite {
    tx: Transaction<'static, Postgres>,
    /// Time taken to begin (and store the statement), to copy the
    /// payments in so far and to pay the invoices: for the commit's debug
    /// log.
    begun: Duration,
    inserting: Duration,
    paying: Duration,
}

#[async_trait]
impl PaymentWrite for PgPaymentWrite {
    async fn insert_payments(&mut self, payments: &[StoredPayment]) -> Result<Option<Uuid>, StoreError> {
        let started = Instant::now();
        if let Some(stored) = copy_payments(&mut self.tx, payments).await? {
            return Ok(Some(stored));
        }
        let new: Vec<&StoredPayment> = payments.iter().collect();
        write_shares_pg(&mut self.tx, &new, false).await?;
        self.inserting += started.elapsed();
        Ok(None)
    }

    async fn pay_invoices(
        &mut self,
        read: &[(Uuid, Decimal)],
        paid: &[InvoicePaid],
    ) -> Result<Option<Uuid>, StoreError> {
        let started = Instant::now();
        if let Some(id) = changed_invoice(&mut self.tx, read).await? {
            return Ok(Some(id));
        }
        update_paid(&mut self.tx, paid).await?;
        self.paying += started.elapsed();
        Ok(None)
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
        write_shares_pg(&mut tx, &updated, true).await?;
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
impl PaymentLedger for PgStore {
    async fn begin_payments(&self, statement: Option<&NewStatement>) -> Result<PaymentsBegun, StoreError> {
        let started = Instant::now();
        let mut tx = self.pool.begin().await?;
        if let Some(statement) = statement
            && !insert_statement(&mut tx, statement).await?
        {
            let id: Uuid = sqlx::query_scalar("SELECT id FROM bank_statements WHERE digest = $1")
                .bind(&statement.record.digest)
                .fetch_one(&mut *tx)
                .await?;
            return Ok(PaymentsBegun::StatementKnown(id));
        }
        let begun = started.elapsed();
        let write = PgPaymentWrite { tx, begun, inserting: Duration::ZERO, paying: Duration::ZERO };
        Ok(PaymentsBegun::Open(Box::new(write)))
    }

    async fn statement_by_digest(&self, digest: &str) -> Result<Option<StatementRecord>, StoreError> {
        let sql = format!("SELECT {STATEMENT_COLUMNS} FROM bank_statements WHERE digest = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(digest).fetch_optional(&self.pool).await?;
        row.as_ref().map(statement_from_row).transpose()
    }

    async fn get_statement(&self, id: Uuid) -> Result<Option<StatementRecord>, StoreError> {
        let sql = format!("SELECT {STATEMENT_COLUMNS} FROM bank_statements WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(statement_from_row).transpose()
    }

    async fn statement_file(&self, id: Uuid) -> Result<Option<StoredFile>, StoreError> {
        let row: Option<(Vec<u8>, String)> =
            sqlx::query_as("SELECT body, body_encoding FROM bank_statements WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|(bytes, encoding)| Ok(StoredFile { encoding: FileEncoding::parse(&encoding)?, bytes })).transpose()
    }

    async fn known_payments(&self, ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
        let mut known = Vec::new();
        for chunk in ids.chunks(10_000) {
            let rows: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM payments WHERE id = ANY($1)")
                .bind(chunk)
                .fetch_all(&self.pool)
                .await?;
            known.extend(rows);
        }
        Ok(known)
    }

    async fn get_payment(&self, id: Uuid) -> Result<Option<StoredPayment>, StoreError> {
        let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(payment_from_row).transpose()
    }

    async fn payments_in_state(&self, state: PaymentState, limit: u32) -> Result<Vec<StoredPayment>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE state = $1 ORDER BY seq LIMIT $2"
        )))
        .bind(state.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(payment_from_row).collect()
    }

    async fn payments_of_statement(&self, statement: Uuid, limit: u32) -> Result<Vec<StoredPayment>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE statement_id = $1 ORDER BY seq LIMIT $2"
        )))
        .bind(statement)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(payment_from_row).collect()
    }

    async fn statement_tally(&self, statement: Uuid) -> Result<StatementTally, StoreError> {
        let rows = sqlx::query(
            "SELECT state, COUNT(*) AS n, COUNT(*) FILTER (WHERE overpaid) AS overpaid
             FROM payments WHERE statement_id = $1 GROUP BY state",
        )
        .bind(statement)
        .fetch_all(&self.pool)
        .await?;
        tally(&rows)
    }

    async fn payment_counts(&self) -> Result<BTreeMap<PaymentState, u64>, StoreError> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n, 0::bigint AS overpaid FROM payments GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        Ok(tally(&rows)?.by_state)
    }

    async fn open_invoices(&self) -> Result<Vec<OpenInvoice>, StoreError> {
        open_invoices(&self.pool).await
    }

    async fn open_invoices_by_keys(&self, keys: &InvoiceKeys) -> Result<Vec<OpenInvoice>, StoreError> {
        open_invoices_by_keys(&self.pool, keys).await
    }

    /// Not numbered here. Replicas write invoices concurrently; a counter
    /// taken inside each transaction grows in commit order only when it is
    /// held to the commit, and writers that take it after other row locks
    /// would deadlock (the engine writes deals before invoices, an import
    /// locks invoices before it writes deals). Imports on PostgreSQL look
    /// open invoices up by keys.
    async fn invoice_changes(&self, _since: u64) -> Result<Option<InvoiceChanges>, StoreError> {
        Ok(None)
    }

    async fn invoices_by_ids(&self, ids: &[Uuid]) -> Result<Vec<Invoice>, StoreError> {
        let sql = format!("SELECT {INVOICE_DOC} FROM {INVOICE_FROM} WHERE i.id = ANY($1) ORDER BY i.id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(ids).fetch_all(&self.pool).await?;
        rows.iter().map(|r| doc_from_row(r, "invoice")).collect()
    }
}
