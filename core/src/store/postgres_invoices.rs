//! Invoices on PostgreSQL: written in bulk with their matching columns
//! (`invoice_keys.rs`), their paid amounts updated in place after payments,
//! and the open ones looked up by the keys payments point at.
//!
//! What matching reads and what payments write lives in the narrow table
//! `invoice_match` (migration 0012), not in the `invoices` rows with their
//! kilobyte documents: a payment rewrites a ~150-byte row there, and every
//! read of a document lays that row's paid state over it ([`INVOICE_DOC`]).
//!
//! A statement import touches tens of thousands of invoices; each
//! statement here takes its rows as arrays (`UNNEST`), so that is a few
//! round trips instead of one per invoice.

use std::collections::HashMap;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

use super::StoreError;
use super::doc::{from_doc, tag, to_doc};
use super::error::corrupt;
use super::invoice_keys::{InvoiceKeys, InvoicePaid, ProjectedRow, Projection, is_open};
use super::payments::OpenInvoice;
use super::postgres::{delete_refs, insert_refs};
use crate::model::Invoice;

const INVOICE_KIND: &str = "invoice";

/// Rows per statement: bounds the arrays sent at once.
const CHUNK: usize = 10_000;

/// An invoice's document as stored, with the paid state payments wrote
/// into `invoice_match` laid over it, as text; for `SELECT … FROM`
/// [`INVOICE_FROM`]. A subquery per row rather than a join: it is always
/// the primary-key lookup, whatever the statistics of a freshly filled
/// `invoice_match` make the planner think of a join.
pub(super) const INVOICE_DOC: &str = "(i.doc || coalesce((SELECT jsonb_build_object('paid', m.paid, 'status', \
     m.status, 'updated_at', m.paid_at) FROM invoice_match m WHERE m.id = i.id AND m.paid IS NOT NULL), \
     '{}'::jsonb))::text AS doc";

/// The invoices (`i`), for [`INVOICE_DOC`].
pub(super) const INVOICE_FROM: &str = "invoices i";

/// What matching reads of an invoice row.
const PROJECTED_COLUMNS: &str =
    "id, deal_id, kind, number, invoice_date, client_inn, total_amount, currency, paid_amount";

/// The last version of each invoice, in the order of their first mention:
/// writing them is what writing every version in turn would leave (and one
/// `INSERT … ON CONFLICT` may not touch a row twice).
fn last_versions(invoices: &[Invoice]) -> Vec<&Invoice> {
    let mut position: HashMap<Uuid, usize> = HashMap::with_capacity(invoices.len());
    let mut latest: Vec<&Invoice> = Vec::with_capacity(invoices.len());
    for invoice in invoices {
        match position.get(&invoice.id) {
            Some(&at) => latest[at] = invoice,
            None => {
                position.insert(invoice.id, latest.len());
                latest.push(invoice);
            }
        }
    }
    latest
}

/// Column arrays of a chunk of invoices.
#[derive(Default)]
struct InvoiceColumns {
    ids: Vec<Uuid>,
    deals: Vec<Option<Uuid>>,
    kinds: Vec<String>,
    numbers: Vec<String>,
    docs: Vec<String>,
    updated: Vec<DateTime<Utc>>,
    number_keys: Vec<String>,
    number_digits: Vec<Option<i64>>,
    inn_keys: Vec<Option<i64>>,
    client_inns: Vec<Option<String>>,
    dates: Vec<NaiveDate>,
    totals: Vec<String>,
    currencies: Vec<String>,
    paid: Vec<String>,
    open: Vec<bool>,
}

impl InvoiceColumns {
    fn push(&mut self, invoice: &Invoice) -> Result<(), StoreError> {
        let p = Projection::of(invoice);
        self.ids.push(invoice.id);
        self.deals.push(invoice.deal_id);
        self.kinds.push(tag(&invoice.kind)?);
        self.numbers.push(invoice.number.clone());
        self.docs.push(to_doc("invoice", invoice)?);
        self.updated.push(invoice.updated_at);
        self.number_keys.push(p.number_key);
        self.number_digits.push(p.number_digits);
        self.inn_keys.push(p.inn_key);
        self.client_inns.push(p.client_inn);
        self.dates.push(p.date);
        self.totals.push(p.total);
        self.currencies.push(p.currency);
        self.paid.push(p.paid);
        self.open.push(p.is_open);
        Ok(())
    }
}

/// Writes the `invoice_match` rows of these invoices' columns (their
/// documents are written whole, so whatever paid state lay over them is
/// cleared).
async fn write_match_rows(tx: &mut Transaction<'_, Postgres>, c: &InvoiceColumns) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO invoice_match (id, deal_id, kind, number, number_key, number_digits, inn_key, client_inn,
             invoice_date, total_amount, currency, paid_amount, is_open)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::int8[], $7::int8[],
             $8::text[], $9::date[], $10::text[], $11::text[], $12::text[], $13::bool[])
         ON CONFLICT (id) DO UPDATE SET deal_id = excluded.deal_id, kind = excluded.kind,
             number = excluded.number, number_key = excluded.number_key, number_digits = excluded.number_digits,
             inn_key = excluded.inn_key, client_inn = excluded.client_inn, invoice_date = excluded.invoice_date,
             total_amount = excluded.total_amount, currency = excluded.currency,
             paid_amount = excluded.paid_amount, is_open = excluded.is_open, paid = NULL, status = NULL,
             paid_at = NULL",
    )
    .bind(&c.ids)
    .bind(&c.deals)
    .bind(&c.kinds)
    .bind(&c.numbers)
    .bind(&c.number_keys)
    .bind(&c.number_digits)
    .bind(&c.inn_keys)
    .bind(&c.client_inns)
    .bind(&c.dates)
    .bind(&c.totals)
    .bind(&c.currencies)
    .bind(&c.paid)
    .bind(&c.open)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Inserts or replaces invoices with their matching columns, and replaces
/// their external refs.
pub(super) async fn write_invoices(tx: &mut Transaction<'_, Postgres>, invoices: &[Invoice]) -> Result<(), StoreError> {
    let invoices = last_versions(invoices);
    for chunk in invoices.chunks(CHUNK) {
        let mut c = InvoiceColumns::default();
        for invoice in chunk {
            c.push(invoice)?;
        }
        sqlx::query(
            "INSERT INTO invoices (id, deal_id, kind, number, doc, updated_at, number_key, number_digits, inn_key,
                 client_inn, invoice_date, total_amount, currency, paid_amount, is_open)
             SELECT id, deal_id, kind, number, doc::jsonb, updated_at, number_key, number_digits, inn_key,
                 client_inn, invoice_date, total_amount, currency, paid_amount, is_open
             FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
                 $7::text[], $8::int8[], $9::int8[], $10::text[], $11::date[], $12::text[], $13::text[],
                 $14::text[], $15::bool[])
                 AS u(id, deal_id, kind, number, doc, updated_at, number_key, number_digits, inn_key, client_inn,
                      invoice_date, total_amount, currency, paid_amount, is_open)
             ON CONFLICT (id) DO UPDATE SET deal_id = excluded.deal_id, kind = excluded.kind,
                 number = excluded.number, doc = excluded.doc, updated_at = excluded.updated_at,
                 number_key = excluded.number_key, number_digits = excluded.number_digits,
                 inn_key = excluded.inn_key, client_inn = excluded.client_inn, invoice_date = excluded.invoice_date,
                 total_amount = excluded.total_amount, currency = excluded.currency,
                 paid_amount = excluded.paid_amount, is_open = excluded.is_open",
        )
        .bind(&c.ids)
        .bind(&c.deals)
        .bind(&c.kinds)
        .bind(&c.numbers)
        .bind(&c.docs)
        .bind(&c.updated)
        .bind(&c.number_keys)
        .bind(&c.number_digits)
        .bind(&c.inn_keys)
        .bind(&c.client_inns)
        .bind(&c.dates)
        .bind(&c.totals)
        .bind(&c.currencies)
        .bind(&c.paid)
        .bind(&c.open)
        .execute(&mut **tx)
        .await?;
        write_match_rows(tx, &c).await?;
        delete_refs(tx, INVOICE_KIND, &c.ids).await?;
    }
    for invoice in invoices.iter().filter(|i| !i.external_refs.is_empty()) {
        insert_refs(tx, INVOICE_KIND, invoice.id, &invoice.external_refs).await?;
    }
    Ok(())
}

/// Writes paid amounts, statuses and times into the invoices' matching
/// rows, laid over their documents on read; the documents stay as stored.
/// The caller locked the rows (`lock_paid_amounts`).
pub(super) async fn update_paid(tx: &mut Transaction<'_, Postgres>, paid: &[InvoicePaid]) -> Result<(), StoreError> {
    // The last update of an invoice wins, as if they were applied in turn
    // (and one `UPDATE … FROM` may not change a row twice).
    let mut latest: HashMap<Uuid, &InvoicePaid> = HashMap::with_capacity(paid.len());
    for p in paid {
        latest.insert(p.id, p);
    }
    // In key order, as the lock pass took them: the index and heap pages
    // are visited in one sweep rather than at random.
    let mut latest: Vec<&InvoicePaid> = latest.into_values().collect();
    latest.sort_unstable_by_key(|p| p.id);
    for chunk in latest.chunks(CHUNK) {
        let n = chunk.len();
        let (mut ids, mut docs, mut statuses, mut ats) =
            (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut amounts, mut open) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for p in chunk {
            let (paid_doc, status, at) = p.doc_parts()?;
            ids.push(p.id);
            docs.push(paid_doc);
            statuses.push(status);
            ats.push(at);
            amounts.push(p.paid.amount.to_string());
            open.push(is_open(p.status));
        }
        // No index holds a column written here (see migration 0012): the
        // new row versions stay on their pages.
        let done = sqlx::query(
            "UPDATE invoice_match AS m SET paid = u.paid::jsonb, status = u.status, paid_at = u.at,
                 paid_amount = u.amount, is_open = u.open
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bool[])
                 AS u(id, paid, status, at, amount, open)
             WHERE m.id = u.id",
        )
        .bind(&ids)
        .bind(&docs)
        .bind(&statuses)
        .bind(&ats)
        .bind(&amounts)
        .bind(&open)
        .execute(&mut **tx)
        .await?;
        if done.rows_affected() != n as u64 {
            return Err(StoreError::Conflict(format!(
                "{} of {n} invoices to pay are not stored",
                n as u64 - done.rows_affected()
            )));
        }
    }
    Ok(())
}

fn decimal(text: Option<String>, id: Uuid) -> Result<Decimal, StoreError> {
    let text = text.ok_or_else(|| corrupt(format!("invoice {id} without a paid amount")))?;
    Decimal::from_str(&text).map_err(|e| corrupt(format!("invoice {id} paid amount `{text}`: {e}")))
}

/// Locks these invoices' matching rows (in id order, so concurrent commits
/// cannot deadlock) and returns their stored paid amounts, by id.
pub(super) async fn lock_paid_amounts(
    tx: &mut Transaction<'_, Postgres>,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Decimal>, StoreError> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    let mut stored = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(CHUNK) {
        let rows = sqlx::query("SELECT id, paid_amount FROM invoice_match WHERE id = ANY($1) ORDER BY id FOR UPDATE")
            .bind(chunk)
            .fetch_all(&mut **tx)
            .await?;
        for row in &rows {
            let id: Uuid = row.try_get("id")?;
            stored.insert(id, decimal(row.try_get("paid_amount")?, id)?);
        }
    }
    Ok(stored)
}

fn projected_from_row(row: &PgRow) -> Result<OpenInvoice, StoreError> {
    ProjectedRow {
        id: row.try_get("id")?,
        deal_id: row.try_get("deal_id")?,
        kind: row.try_get("kind")?,
        number: row.try_get("number")?,
        date: row.try_get("invoice_date")?,
        client_inn: row.try_get("client_inn")?,
        total: row.try_get("total_amount")?,
        currency: row.try_get("currency")?,
        paid: row.try_get("paid_amount")?,
    }
    .into_open_invoice()
}

/// Every open invoice, by id.
pub(super) async fn open_invoices(pool: &PgPool) -> Result<Vec<OpenInvoice>, StoreError> {
    let sql = format!("SELECT {PROJECTED_COLUMNS} FROM invoice_match WHERE is_open ORDER BY id");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await?;
    rows.iter().map(projected_from_row).collect()
}

/// Open invoices with one of the keys, by id, each once.
pub(super) async fn open_invoices_by_keys(pool: &PgPool, keys: &InvoiceKeys) -> Result<Vec<OpenInvoice>, StoreError> {
    let digits: Vec<i64> = keys.digits.iter().filter_map(|&d| i64::try_from(d).ok()).collect();
    let inns: Vec<i64> = keys.inns.iter().filter_map(|&k| i64::try_from(k).ok()).collect();
    // One statement; each arm of the union uses its index.
    let sql = format!(
        "SELECT {PROJECTED_COLUMNS} FROM invoice_match WHERE is_open AND number_key = ANY($1)
         UNION
         SELECT {PROJECTED_COLUMNS} FROM invoice_match WHERE is_open AND number_digits = ANY($2)
         UNION
         SELECT {PROJECTED_COLUMNS} FROM invoice_match WHERE is_open AND inn_key = ANY($3)
         ORDER BY id"
    );
    let rows =
        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(&keys.numbers).bind(&digits).bind(&inns).fetch_all(pool).await?;
    rows.iter().map(projected_from_row).collect()
}

/// Fills the matching columns (and `invoice_match` rows) of invoices stored
/// before they existed (migration 0011), a batch at a time. Cheap when there are none: a
/// partial index holds exactly those rows.
pub(super) async fn project_stored_invoices(pool: &PgPool) -> Result<u64, StoreError> {
    let mut filled = 0;
    loop {
        let mut tx = pool.begin().await?;
        let rows = sqlx::query("SELECT doc::text AS doc FROM invoices WHERE number_key IS NULL LIMIT 1000 FOR UPDATE")
            .fetch_all(&mut *tx)
            .await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(filled);
        }
        let mut c = InvoiceColumns::default();
        for row in &rows {
            let invoice: Invoice = from_doc("invoice", row.try_get("doc")?)?;
            c.push(&invoice)?;
        }
        sqlx::query(
            "UPDATE invoices AS i SET number_key = u.number_key, number_digits = u.number_digits,
                 inn_key = u.inn_key, client_inn = u.client_inn, invoice_date = u.invoice_date,
                 total_amount = u.total_amount, currency = u.currency, paid_amount = u.paid_amount,
                 is_open = u.is_open
             FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::int8[], $5::text[], $6::date[], $7::text[],
                 $8::text[], $9::text[], $10::bool[])
                 AS u(id, number_key, number_digits, inn_key, client_inn, invoice_date, total_amount, currency,
                      paid_amount, is_open)
             WHERE i.id = u.id",
        )
        .bind(&c.ids)
        .bind(&c.number_keys)
        .bind(&c.number_digits)
        .bind(&c.inn_keys)
        .bind(&c.client_inns)
        .bind(&c.dates)
        .bind(&c.totals)
        .bind(&c.currencies)
        .bind(&c.paid)
        .bind(&c.open)
        .execute(&mut *tx)
        .await?;
        write_match_rows(&mut tx, &c).await?;
        filled += rows.len() as u64;
        tx.commit().await?;
    }
}
