//! The bank statement payments applied to given invoices: what the engine
//! compares an ERP's receipt with, so the same money reported by the bank
//! and by the ERP (whose receipt was made from that statement) counts once.
//!
//! A payment's first invoice is its `invoice_id` column; the further
//! invoices of a payment split over several are rows of `payment_shares`,
//! written here with the payment.

use async_trait::async_trait;
use sqlx::{Postgres, Sqlite, Transaction};
use uuid::Uuid;

use super::payment_doc::PAYMENT_COLUMNS;
use super::payments::StoredPayment;
use super::postgres::PgStore;
use super::sqlite::SqliteStore;
use super::{PaymentState, StoreError};
use super::{postgres_payments, sqlite_payments};

#[async_trait]
pub trait AppliedPayments: Send + Sync {
    /// Matched payments applied to one of `invoices`, as their first
    /// invoice or as a further share of a split, oldest first.
    async fn payments_applied_to(&self, invoices: &[Uuid]) -> Result<Vec<StoredPayment>, StoreError>;
}

/// (further invoice, payment) of every split payment among `payments`.
fn shares(payments: &[&StoredPayment]) -> Vec<(Uuid, Uuid)> {
    let mut shares: Vec<(Uuid, Uuid)> =
        payments.iter().flat_map(|p| p.also_matched.iter().map(|m| (m.invoice_id, p.payment.id))).collect();
    shares.sort_unstable();
    shares.dedup();
    shares
}

/// Writes the further invoices of these payments, stored just now or
/// replaced: a replaced payment's old shares go first.
pub(super) async fn write_shares_sqlite(
    tx: &mut Transaction<'_, Sqlite>,
    payments: &[&StoredPayment],
    replaced: bool,
) -> Result<(), StoreError> {
    if replaced {
        for p in payments {
            sqlx::query("DELETE FROM payment_shares WHERE payment_id = ?")
                .bind(p.payment.id.to_string())
                .execute(&mut **tx)
                .await?;
        }
    }
    for (invoice, payment) in shares(payments) {
        sqlx::query("INSERT INTO payment_shares (invoice_id, payment_id) VALUES (?, ?)")
            .bind(invoice.to_string())
            .bind(payment.to_string())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// [`write_shares_sqlite`] on PostgreSQL.
pub(super) async fn write_shares_pg(
    tx: &mut Transaction<'_, Postgres>,
    payments: &[&StoredPayment],
    replaced: bool,
) -> Result<(), StoreError> {
    if replaced {
        let ids: Vec<Uuid> = payments.iter().map(|p| p.payment.id).collect();
        sqlx::query("DELETE FROM payment_shares WHERE payment_id = ANY($1)").bind(ids).execute(&mut **tx).await?;
    }
    let (invoices, ids): (Vec<Uuid>, Vec<Uuid>) = shares(payments).into_iter().unzip();
    if !invoices.is_empty() {
        sqlx::query("INSERT INTO payment_shares (invoice_id, payment_id) SELECT * FROM UNNEST($1::uuid[], $2::uuid[])")
            .bind(invoices)
            .bind(ids)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

#[async_trait]
impl AppliedPayments for SqliteStore {
    async fn payments_applied_to(&self, invoices: &[Uuid]) -> Result<Vec<StoredPayment>, StoreError> {
        if invoices.is_empty() {
            return Ok(Vec::new());
        }
        let ids = serde_json::Value::from(invoices.iter().map(Uuid::to_string).collect::<Vec<_>>()).to_string();
        // `+state`: found through the invoice and id indexes, not by
        // walking every matched payment in the state index (SQLite picks
        // that for `state = ?` when it has no statistics).
        let sql = format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments
             WHERE (invoice_id IN (SELECT value FROM json_each(?))
                    OR id IN (SELECT payment_id FROM payment_shares WHERE invoice_id IN (SELECT value FROM json_each(?))))
               AND +state = ? ORDER BY seq"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ids.clone())
            .bind(ids)
            .bind(PaymentState::Matched.as_str())
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(sqlite_payments::payment_from_row).collect()
    }
}

#[async_trait]
impl AppliedPayments for PgStore {
    async fn payments_applied_to(&self, invoices: &[Uuid]) -> Result<Vec<StoredPayment>, StoreError> {
        if invoices.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments
             WHERE (invoice_id = ANY($1) OR id IN (SELECT payment_id FROM payment_shares WHERE invoice_id = ANY($1)))
               AND state = $2 ORDER BY seq"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(invoices)
            .bind(PaymentState::Matched.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(postgres_payments::payment_from_row).collect()
    }
}
