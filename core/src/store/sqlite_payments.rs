//! `PaymentLedger` on SQLite. A commit takes the write lock at its start
//! (`BEGIN IMMEDIATE`): it reads invoices, then writes, and a CLI import
//! may run in another process beside the hub.

use std::collections::BTreeMap;
use std::str::FromStr;

use async_trait::async_trait;
use chrono::NaiveDate;
use rust_decimal::Decimal;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, Transaction};
use uuid::Uuid;

use super::StoreError;
use super::doc::{from_doc, tag, to_doc};
use super::error::corrupt;
use super::payments::{
    CommitOutcome, NewStatement, OpenInvoice, PaymentCommit, PaymentLedger, PaymentState, StatementRecord,
    StoredPayment,
};
use super::sqlite::{SqliteStore, doc_from_row, from_micros, micros, parse_uuid, write_change_set};
use crate::model::{Invoice, Money};

const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";
const STATEMENT_COLUMNS: &str =
    "id, digest, file_name, source, format, imported_at, summary, payments_new, payments_known";

fn id_list(ids: &[Uuid]) -> String {
    serde_json::Value::from(ids.iter().map(|id| id.to_string()).collect::<Vec<_>>()).to_string()
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

fn decimal(text: Option<String>, what: &str) -> Result<Decimal, StoreError> {
    let text = text.ok_or_else(|| corrupt(format!("invoice without {what}")))?;
    Decimal::from_str(&text).map_err(|e| corrupt(format!("invoice {what} `{text}`: {e}")))
}

fn open_invoice_from_row(row: &SqliteRow) -> Result<OpenInvoice, StoreError> {
    let deal: Option<String> = row.try_get("deal_id")?;
    let kind: String = row.try_get("kind")?;
    let date: String = row.try_get("date")?;
    let currency: String = row.try_get("currency")?;
    let money = |amount: Decimal| Money { amount, currency: currency.clone() };
    Ok(OpenInvoice {
        id: parse_uuid(row.try_get("id")?)?,
        deal_id: deal.as_deref().map(parse_uuid).transpose()?,
        kind: from_doc("invoice kind", &format!("\"{kind}\""))?,
        number: row.try_get("number")?,
        date: NaiveDate::from_str(&date).map_err(|e| corrupt(format!("invoice date `{date}`: {e}")))?,
        client_inn: row.try_get("inn")?,
        total: money(decimal(row.try_get("total")?, "total")?),
        paid: money(decimal(row.try_get("paid")?, "paid amount")?),
    })
}

async fn insert_statement(tx: &mut Transaction<'_, Sqlite>, statement: &NewStatement) -> Result<bool, StoreError> {
    let r = &statement.record;
    let inserted = sqlx::query(
        "INSERT INTO bank_statements (id, digest, file_name, source, format, imported_at, summary, payments_new,
             payments_known, body)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (digest) DO NOTHING",
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
    .bind(&statement.body)
    .execute(&mut **tx)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Rows per payment `INSERT`: a few fixed sizes, so the statements stay in
/// sqlx's prepared-statement cache, and a large import makes a hundredth
/// of the round trips one row per statement would (8 binds a row, far
/// below SQLite's 32,766).
const PAYMENT_INSERT_ROWS: [usize; 3] = [100, 10, 1];

fn insert_payments_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO payments (id, statement_id, direction, state, invoice_id, payment_date, doc, updated_at) VALUES ",
    );
    for i in 0..rows {
        sql.push_str(if i == 0 { "(?, ?, ?, ?, ?, ?, ?, ?)" } else { ", (?, ?, ?, ?, ?, ?, ?, ?)" });
    }
    sql.push_str(" ON CONFLICT (id) DO NOTHING");
    sql
}

/// Inserts the payments; returns one that was stored already, if any
/// (then the caller rolls back).
async fn insert_payments(
    tx: &mut Transaction<'_, Sqlite>,
    payments: &[StoredPayment],
) -> Result<Option<Uuid>, StoreError> {
    let mut rest = payments;
    while !rest.is_empty() {
        let rows = PAYMENT_INSERT_ROWS.into_iter().find(|&n| n <= rest.len()).unwrap_or(1);
        let (chunk, tail) = rest.split_at(rows);
        rest = tail;
        let mut insert = sqlx::query(sqlx::AssertSqlSafe(insert_payments_sql(rows)));
        for p in chunk {
            insert = insert
                .bind(p.payment.id.to_string())
                .bind(p.statement_id.to_string())
                .bind(tag(&p.payment.direction)?)
                .bind(p.state.as_str())
                .bind(p.payment.invoice_id.map(|i| i.to_string()))
                .bind(p.payment.date.to_string())
                .bind(to_doc("payment", p)?)
                .bind(micros(p.updated_at));
        }
        let inserted = insert.execute(&mut **tx).await?.rows_affected();
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
    }
    Ok(None)
}

async fn update_payment(
    tx: &mut Transaction<'_, Sqlite>,
    p: &StoredPayment,
    expected: PaymentState,
) -> Result<bool, StoreError> {
    let updated = sqlx::query(
        "UPDATE payments SET state = ?, invoice_id = ?, doc = ?, updated_at = ? WHERE id = ? AND state = ?",
    )
    .bind(p.state.as_str())
    .bind(p.payment.invoice_id.map(|i| i.to_string()))
    .bind(to_doc("payment", p)?)
    .bind(micros(p.updated_at))
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
    let rows = sqlx::query(
        "SELECT id, json_extract(doc, '$.paid.amount') AS paid FROM invoices
         WHERE id IN (SELECT value FROM json_each(?))",
    )
    .bind(id_list(&ids))
    .fetch_all(&mut **tx)
    .await?;
    let mut stored = std::collections::HashMap::with_capacity(rows.len());
    for row in &rows {
        stored.insert(parse_uuid(row.try_get("id")?)?, decimal(row.try_get("paid")?, "paid amount")?);
    }
    Ok(read.iter().find(|(id, paid)| stored.get(id) != Some(paid)).map(|(id, _)| *id))
}

#[async_trait]
impl PaymentLedger for SqliteStore {
    async fn commit_payments(&self, commit: &PaymentCommit) -> Result<CommitOutcome, StoreError> {
        let mut tx = self.writer.begin_with(BEGIN_WRITE).await?;
        if let Some(statement) = &commit.statement
            && !insert_statement(&mut tx, statement).await?
        {
            let id: String = sqlx::query_scalar("SELECT id FROM bank_statements WHERE digest = ?")
                .bind(&statement.record.digest)
                .fetch_one(&mut *tx)
                .await?;
            return Ok(CommitOutcome::StatementKnown(parse_uuid(&id)?));
        }
        if let Some(stored) = insert_payments(&mut tx, &commit.new_payments).await? {
            return Ok(CommitOutcome::Stale(format!("payment {stored} is stored already")));
        }
        for (payment, expected) in &commit.updated_payments {
            if !update_payment(&mut tx, payment, *expected).await? {
                return Ok(CommitOutcome::Stale(format!(
                    "payment {} is no longer {}",
                    payment.payment.id,
                    expected.as_str()
                )));
            }
        }
        if let Some(id) = changed_invoice(&mut tx, &commit.invoices_read).await? {
            return Ok(CommitOutcome::Stale(format!("invoice {id} was paid meanwhile")));
        }
        write_change_set(&mut tx, &commit.changes).await?;
        tx.commit().await?;
        Ok(CommitOutcome::Committed)
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

    async fn known_payments(&self, ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
        let mut known = Vec::new();
        // Bounded chunks keep each bound JSON list small.
        for chunk in ids.chunks(10_000) {
            let rows: Vec<String> =
                sqlx::query_scalar("SELECT id FROM payments WHERE id IN (SELECT value FROM json_each(?))")
                    .bind(id_list(chunk))
                    .fetch_all(&self.reader)
                    .await?;
            for id in rows {
                known.push(parse_uuid(&id)?);
            }
        }
        Ok(known)
    }

    async fn get_payment(&self, id: Uuid) -> Result<Option<StoredPayment>, StoreError> {
        let row = sqlx::query("SELECT doc FROM payments WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(|r| doc_from_row(r, "payment")).transpose()
    }

    async fn payments_in_state(&self, state: PaymentState, limit: u32) -> Result<Vec<StoredPayment>, StoreError> {
        let rows = sqlx::query("SELECT doc FROM payments WHERE state = ? ORDER BY seq LIMIT ?")
            .bind(state.as_str())
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(|r| doc_from_row(r, "payment")).collect()
    }

    async fn payments_of_statement(&self, statement: Uuid) -> Result<Vec<StoredPayment>, StoreError> {
        let rows = sqlx::query("SELECT doc FROM payments WHERE statement_id = ? ORDER BY seq")
            .bind(statement.to_string())
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(|r| doc_from_row(r, "payment")).collect()
    }

    async fn payment_counts(&self) -> Result<BTreeMap<PaymentState, u64>, StoreError> {
        let mut counts: BTreeMap<PaymentState, u64> = PaymentState::ALL.into_iter().map(|s| (s, 0)).collect();
        let rows =
            sqlx::query("SELECT state, COUNT(*) AS n FROM payments GROUP BY state").fetch_all(&self.reader).await?;
        for row in &rows {
            let state: String = row.try_get("state")?;
            let n: i64 = row.try_get("n")?;
            let state = PaymentState::parse(&state).ok_or_else(|| corrupt(format!("payment state `{state}`")))?;
            counts.insert(state, u64::try_from(n).map_err(|_| corrupt(format!("count {n}")))?);
        }
        Ok(counts)
    }

    async fn open_invoices(&self) -> Result<Vec<OpenInvoice>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, deal_id, kind, number, json_extract(doc, '$.date') AS date,
                    json_extract(doc, '$.client.inn') AS inn, json_extract(doc, '$.total.amount') AS total,
                    json_extract(doc, '$.total.currency') AS currency, json_extract(doc, '$.paid.amount') AS paid
             FROM invoices WHERE status IN ('open', 'partially_paid') ORDER BY id",
        )
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(open_invoice_from_row).collect()
    }

    async fn invoices_by_ids(&self, ids: &[Uuid]) -> Result<Vec<Invoice>, StoreError> {
        let mut found = Vec::new();
        for chunk in ids.chunks(10_000) {
            let rows = sqlx::query("SELECT doc FROM invoices WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id")
                .bind(id_list(chunk))
                .fetch_all(&self.reader)
                .await?;
            for row in &rows {
                found.push(doc_from_row(row, "invoice")?);
            }
        }
        Ok(found)
    }
}
