//! The bank statement payments applied to given invoices: what the engine
//! compares an ERP's receipt with, so the same money reported by the bank
//! and by the ERP (whose receipt was made from that statement) counts once.

use async_trait::async_trait;
use sqlx::Row;
use uuid::Uuid;

use super::payments::StoredPayment;
use super::postgres::PgStore;
use super::sqlite::SqliteStore;
use super::{PaymentState, StoreError};

#[async_trait]
pub trait AppliedPayments: Send + Sync {
    /// Matched payments whose (first) invoice is one of `invoices`.
    async fn payments_applied_to(&self, invoices: &[Uuid]) -> Result<Vec<StoredPayment>, StoreError>;
}

fn decode(doc: &str) -> Result<StoredPayment, StoreError> {
    serde_json::from_str(doc).map_err(|e| StoreError::Corrupt(format!("payment document: {e}")))
}

#[async_trait]
impl AppliedPayments for SqliteStore {
    async fn payments_applied_to(&self, invoices: &[Uuid]) -> Result<Vec<StoredPayment>, StoreError> {
        if invoices.is_empty() {
            return Ok(Vec::new());
        }
        let ids = serde_json::Value::from(invoices.iter().map(Uuid::to_string).collect::<Vec<_>>()).to_string();
        let rows = sqlx::query(
            "SELECT doc FROM payments WHERE invoice_id IN (SELECT value FROM json_each(?)) AND state = ? ORDER BY seq",
        )
        .bind(ids)
        .bind(PaymentState::Matched.as_str())
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(|r| decode(r.try_get("doc")?)).collect()
    }
}

#[async_trait]
impl AppliedPayments for PgStore {
    async fn payments_applied_to(&self, invoices: &[Uuid]) -> Result<Vec<StoredPayment>, StoreError> {
        if invoices.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query("SELECT doc FROM payments WHERE invoice_id = ANY($1) AND state = $2 ORDER BY seq")
            .bind(invoices)
            .bind(PaymentState::Matched.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| decode(r.try_get("doc")?)).collect()
    }
}
