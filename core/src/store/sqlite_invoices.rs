//! Invoices on SQLite: written in bulk with their matching columns
//! (`invoice_keys.rs`), their paid amounts updated in place after payments,
//! and the open ones looked up by the keys payments point at.
//!
//! What matching reads lives in the narrow table `invoice_match`, and what
//! payments write in `invoice_paid` (migration 0012), not in the `invoices`
//! rows with their kilobyte documents: a payment writes a small row of the
//! invoices paid so far, and every read of a document lays that row over
//! it ([`INVOICE_DOC`]); writing the document whole deletes the row.
//!
//! Every statement here handles many rows: a statement import touches tens
//! of thousands of invoices, and each statement is a round trip to
//! SQLite's connection thread. Lists are bound as one JSON array
//! (`json_each`), rows of multi-row `INSERT`s in a few fixed shapes so they
//! stay in sqlx's prepared-statement cache.

use std::collections::HashMap;
use std::str::FromStr;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use sqlx::{Row, Sqlite, SqlitePool, Transaction};
use uuid::Uuid;

use super::StoreError;
use super::doc::{from_doc, tag, to_doc};
use super::error::corrupt;
use super::invoice_keys::{InvoiceKeys, InvoicePaid, ProjectedRow, Projection, is_open};
use super::payments::{InvoiceChanges, OpenInvoice};
use super::sqlite::{delete_refs, insert_refs, micros, parse_uuid};
use crate::model::Invoice;

const INVOICE_KIND: &str = "invoice";

/// Rows per invoice `INSERT` (15 binds a row: 960 at most, far below
/// SQLite's 32,766).
const INSERT_ROWS: [usize; 3] = [64, 8, 1];

/// An invoice's document as stored, with what payments wrote into
/// `invoice_paid` laid over it; for `SELECT … FROM` [`INVOICE_FROM`].
pub(super) const INVOICE_DOC: &str = "CASE WHEN p.id IS NULL THEN i.doc ELSE \
     json_set(i.doc, '$.paid', json(p.paid), '$.status', p.status, '$.updated_at', p.paid_at) END AS doc";

/// The invoices (`i`) with their paid rows (`p`), for [`INVOICE_DOC`].
pub(super) const INVOICE_FROM: &str = "invoices i LEFT JOIN invoice_paid p ON p.id = i.id";

/// The matching rows (`m`) with their paid rows (`p`): the paid amount and
/// open flag as they stand are `coalesce(p.…, m.…)`.
const MATCH_FROM: &str = "invoice_match m LEFT JOIN invoice_paid p ON p.id = m.id";

/// Columns of an `invoice_match` row that an invoice's document gives.
const MATCH_COLUMNS: &str = "id, deal_id, kind, number, number_key, number_digits, inn_key, client_inn, \
                             invoice_date, total_amount, currency, paid_amount, is_open, changed";

fn insert_match_sql(rows: usize) -> String {
    let mut sql = format!("INSERT INTO invoice_match ({MATCH_COLUMNS}) VALUES ");
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    }
    sql.push_str(
        " ON CONFLICT (id) DO UPDATE SET deal_id = excluded.deal_id, kind = excluded.kind,
             number = excluded.number, number_key = excluded.number_key, number_digits = excluded.number_digits,
             inn_key = excluded.inn_key, client_inn = excluded.client_inn, invoice_date = excluded.invoice_date,
             total_amount = excluded.total_amount, currency = excluded.currency,
             paid_amount = excluded.paid_amount, is_open = excluded.is_open, changed = excluded.changed",
    );
    sql
}

/// Writes the `invoice_match` rows of these invoices, and deletes their
/// `invoice_paid` rows: their documents are written whole, the paid amount
/// in them is the one that stands.
async fn write_match_rows(tx: &mut Transaction<'_, Sqlite>, invoices: &[&Invoice]) -> Result<(), StoreError> {
    if invoices.is_empty() {
        return Ok(());
    }
    let generation = next_generation(tx).await?;
    for chunk in invoices.chunks(LIST_CHUNK) {
        sqlx::query("DELETE FROM invoice_paid WHERE id IN (SELECT value FROM json_each(?))")
            .bind(id_list(chunk.iter().map(|i| &i.id)))
            .execute(&mut **tx)
            .await?;
    }
    let mut rest = invoices;
    while !rest.is_empty() {
        let rows = INSERT_ROWS.into_iter().find(|&n| n <= rest.len()).unwrap_or(1);
        let (chunk, tail) = rest.split_at(rows);
        rest = tail;
        let mut insert = sqlx::query(sqlx::AssertSqlSafe(insert_match_sql(rows)));
        for invoice in chunk {
            let insert_id = insert
                .bind(invoice.id.to_string())
                .bind(invoice.deal_id.map(|d| d.to_string()))
                .bind(tag(&invoice.kind)?)
                .bind(&invoice.number);
            insert = bind_projection(insert_id, invoice).bind(generation);
        }
        insert.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Takes the next value of the invoices' generation counter (migration
/// 0015) for the rows this write stamps. Inside the writing transaction,
/// and SQLite has one writer: values grow in commit order.
async fn next_generation(tx: &mut Transaction<'_, Sqlite>) -> Result<i64, StoreError> {
    let value =
        sqlx::query_scalar("UPDATE store_generations SET value = value + 1 WHERE name = 'invoices' RETURNING value")
            .fetch_one(&mut **tx)
            .await?;
    Ok(value)
}

/// Binds the matching columns of `invoice` (its [`Projection`]), which
/// both the `invoices` row and its `invoice_match` row end with.
fn bind_projection<'q>(query: SqliteQuery<'q>, invoice: &Invoice) -> SqliteQuery<'q> {
    let p = Projection::of(invoice);
    query
        .bind(p.number_key)
        .bind(p.number_digits)
        .bind(p.inn_key)
        .bind(p.client_inn)
        .bind(p.date.to_string())
        .bind(p.total)
        .bind(p.currency)
        .bind(p.paid)
        .bind(p.is_open)
}

type SqliteQuery<'q> = sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>;

/// Rows per JSON list bound to one statement.
const LIST_CHUNK: usize = 10_000;

const INVOICE_COLUMNS: &str = "id, deal_id, kind, number, doc, updated_at, number_key, number_digits, inn_key, \
                               client_inn, invoice_date, total_amount, currency, paid_amount, is_open";

fn insert_sql(rows: usize) -> String {
    let mut sql = format!("INSERT INTO invoices ({INVOICE_COLUMNS}) VALUES ");
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    }
    sql.push_str(
        " ON CONFLICT (id) DO UPDATE SET deal_id = excluded.deal_id, kind = excluded.kind, number = excluded.number,
             doc = excluded.doc, updated_at = excluded.updated_at, number_key = excluded.number_key,
             number_digits = excluded.number_digits, inn_key = excluded.inn_key, client_inn = excluded.client_inn,
             invoice_date = excluded.invoice_date, total_amount = excluded.total_amount,
             currency = excluded.currency, paid_amount = excluded.paid_amount, is_open = excluded.is_open",
    );
    sql
}

/// An id list as one bindable JSON array.
fn id_list<'a>(ids: impl IntoIterator<Item = &'a Uuid>) -> String {
    serde_json::Value::from(ids.into_iter().map(|id| id.to_string()).collect::<Vec<_>>()).to_string()
}

/// The last version of each invoice, in the order of their first mention:
/// writing them is what writing every version in turn would leave.
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

/// Inserts or replaces invoices with their matching columns, and replaces
/// their external refs.
pub(super) async fn write_invoices(tx: &mut Transaction<'_, Sqlite>, invoices: &[Invoice]) -> Result<(), StoreError> {
    let invoices = last_versions(invoices);
    let mut rest = invoices.as_slice();
    while !rest.is_empty() {
        let rows = INSERT_ROWS.into_iter().find(|&n| n <= rest.len()).unwrap_or(1);
        let (chunk, tail) = rest.split_at(rows);
        rest = tail;
        let mut insert = sqlx::query(sqlx::AssertSqlSafe(insert_sql(rows)));
        for invoice in chunk {
            let with_doc = insert
                .bind(invoice.id.to_string())
                .bind(invoice.deal_id.map(|d| d.to_string()))
                .bind(tag(&invoice.kind)?)
                .bind(&invoice.number)
                .bind(to_doc("invoice", invoice)?)
                .bind(micros(invoice.updated_at));
            insert = bind_projection(with_doc, invoice);
        }
        insert.execute(&mut **tx).await?;
    }
    write_match_rows(tx, &invoices).await?;
    for chunk in invoices.chunks(LIST_CHUNK) {
        let ids = chunk.iter().map(|i| i.id.to_string()).collect::<Vec<_>>();
        delete_refs(tx, INVOICE_KIND, &ids).await?;
    }
    for invoice in invoices.iter().filter(|i| !i.external_refs.is_empty()) {
        insert_refs(tx, INVOICE_KIND, &invoice.id.to_string(), &invoice.external_refs).await?;
    }
    Ok(())
}

/// Writes paid amounts, statuses and times into `invoice_paid`, laid over
/// the invoices' documents on read; the documents stay as stored. With
/// `read`, an invoice is written only while its paid amount is the one
/// read (compared as the text the column holds, which is how it was read).
/// Returns how many of the (distinct) invoices were written, and how many
/// there were; an invoice that is not stored is not written.
pub(super) async fn update_paid(
    tx: &mut Transaction<'_, Sqlite>,
    paid: &[InvoicePaid],
    read: Option<&HashMap<Uuid, Decimal>>,
) -> Result<(u64, u64), StoreError> {
    // The last update of an invoice wins, as if they were applied in turn.
    let mut latest: HashMap<Uuid, &InvoicePaid> = HashMap::with_capacity(paid.len());
    for p in paid {
        latest.insert(p.id, p);
    }
    // In key order: the lookups in `invoice_match` and the rows added to
    // `invoice_paid` then walk each b-tree once from left to right (pages
    // cached, rows appended) instead of jumping about as a hash map's
    // order would have them.
    let mut latest: Vec<&InvoicePaid> = latest.into_values().collect();
    latest.sort_unstable_by_key(|p| p.id);
    if latest.is_empty() {
        return Ok((0, 0));
    }
    let generation = next_generation(tx).await?;
    let mut written = 0;
    let mut rest = latest.as_slice();
    let mut next = next_paid_update(&mut rest, generation, read)?;
    while let Some(update) = next.take() {
        // While SQLite's thread writes these rows, this one binds the next.
        let (done, following) =
            futures::future::join(update.execute(&mut **tx), async { next_paid_update(&mut rest, generation, read) })
                .await;
        written += done?.rows_affected();
        next = following?;
    }
    Ok((written, latest.len() as u64))
}

/// The statement writing the next rows of `rest` (see [`update_paid_sql`]),
/// if any are left.
fn next_paid_update<'q>(
    rest: &mut &[&InvoicePaid],
    generation: i64,
    read: Option<&HashMap<Uuid, Decimal>>,
) -> Result<Option<SqliteQuery<'q>>, StoreError> {
    if rest.is_empty() {
        return Ok(None);
    }
    let rows = PAID_ROWS.into_iter().find(|&n| n <= rest.len()).unwrap_or(1);
    let (chunk, tail) = rest.split_at(rows);
    *rest = tail;
    let mut update = sqlx::query(sqlx::AssertSqlSafe(update_paid_sql(rows))).bind(generation);
    for p in chunk {
        let (paid_doc, status, at) = p.doc_parts()?;
        let was = read.and_then(|r| r.get(&p.id)).map(Decimal::to_string);
        update = update
            .bind(p.id.to_string())
            .bind(paid_doc)
            .bind(status)
            .bind(at)
            .bind(p.paid.amount.to_string())
            .bind(is_open(p.status))
            .bind(was);
    }
    Ok(Some(update))
}

/// Invoices per paid-amount statement: a few fixed sizes, as for payments
/// (7 binds a row: 28,000 at most, below SQLite's 32,766). Bound values
/// rather than one JSON list per statement: SQLite parsed each row out of
/// the list again for every column, and that was half of the step.
const PAID_ROWS: [usize; 5] = [4_000, 400, 40, 4, 1];

/// Writes one `invoice_paid` row, stamped with the generation bound first,
/// per bound row (id, paid, status, paid at, paid amount, open, the amount
/// read or NULL) whose invoice is stored and, when an amount read is
/// bound, still has that paid amount. A row per invoice paid, in a table
/// of only those: the pages written are about as many as the bytes need.
fn update_paid_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO invoice_paid (id, paid, status, paid_at, paid_amount, is_open, changed)
         SELECT m.id, u.column2, u.column3, u.column4, u.column5, u.column6, ? FROM (VALUES ",
    );
    for i in 0..rows {
        sql.push_str(if i == 0 { "(?, ?, ?, ?, ?, ?, ?)" } else { ", (?, ?, ?, ?, ?, ?, ?)" });
    }
    sql.push_str(
        ") AS u JOIN invoice_match m ON m.id = u.column1 LEFT JOIN invoice_paid p ON p.id = m.id
         WHERE u.column7 IS NULL OR coalesce(p.paid_amount, m.paid_amount) = u.column7
         ON CONFLICT (id) DO UPDATE SET paid = excluded.paid, status = excluded.status,
             paid_at = excluded.paid_at, paid_amount = excluded.paid_amount, is_open = excluded.is_open,
             changed = excluded.changed",
    );
    sql
}

fn decimal(text: Option<String>, id: &str) -> Result<Decimal, StoreError> {
    let text = text.ok_or_else(|| corrupt(format!("invoice {id} without a paid amount")))?;
    Decimal::from_str(&text).map_err(|e| corrupt(format!("invoice {id} paid amount `{text}`: {e}")))
}

/// The stored paid amounts of these invoices, by id (unknown ids absent).
pub(super) async fn paid_amounts(
    tx: &mut Transaction<'_, Sqlite>,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Decimal>, StoreError> {
    let mut stored = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(LIST_CHUNK) {
        let sql = format!(
            "SELECT m.id AS id, coalesce(p.paid_amount, m.paid_amount) AS paid_amount FROM {MATCH_FROM}
             WHERE m.id IN (SELECT value FROM json_each(?))"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id_list(chunk)).fetch_all(&mut **tx).await?;
        for row in &rows {
            let id: &str = row.try_get("id")?;
            stored.insert(parse_uuid(id)?, decimal(row.try_get("paid_amount")?, id)?);
        }
    }
    Ok(stored)
}

/// One projected row as `json_array` gives it.
type JsonRow = (String, Option<String>, String, String, String, Option<String>, String, String, String);

fn projected(row: JsonRow) -> Result<OpenInvoice, StoreError> {
    let (id, deal, kind, number, date, client_inn, total, currency, paid) = row;
    let id = parse_uuid(&id)?;
    ProjectedRow {
        id,
        deal_id: deal.as_deref().map(parse_uuid).transpose()?,
        kind,
        number,
        date: NaiveDate::from_str(&date).map_err(|e| corrupt(format!("invoice {id} date `{date}`: {e}")))?,
        client_inn,
        total,
        currency,
        paid,
    }
    .into_open_invoice()
}

/// The projected rows of open invoices `filter` selects (on `m`, the
/// matching rows; it may use one bound parameter, `list`). SQLite hands them over as one JSON array: row by row, sqlx's
/// per-row cost is several times SQLite's own for rows this small.
async fn projected_rows(
    reader: &SqlitePool,
    filter: &str,
    list: Option<String>,
) -> Result<Vec<OpenInvoice>, StoreError> {
    let sql = format!(
        "SELECT json_group_array(json_array(m.id, m.deal_id, m.kind, m.number, m.invoice_date, m.client_inn,
                    m.total_amount, m.currency, coalesce(p.paid_amount, m.paid_amount))) AS rows
         FROM {MATCH_FROM} WHERE {filter} AND coalesce(p.is_open, m.is_open) = 1"
    );
    let mut query = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
    if let Some(list) = list {
        query = query.bind(list);
    }
    let text = query.fetch_one(reader).await?;
    let rows: Vec<JsonRow> = from_doc("invoice projection", &text)?;
    rows.into_iter().map(projected).collect()
}

/// Every open invoice, by id.
pub(super) async fn open_invoices(reader: &SqlitePool) -> Result<Vec<OpenInvoice>, StoreError> {
    let mut found = projected_rows(reader, "true", None).await?;
    found.sort_unstable_by_key(|i| i.id);
    Ok(found)
}

/// Open invoices with one of the keys, by id, each once.
pub(super) async fn open_invoices_by_keys(
    reader: &SqlitePool,
    keys: &InvoiceKeys,
) -> Result<Vec<OpenInvoice>, StoreError> {
    let numbers: Vec<serde_json::Value> = keys.numbers.iter().map(|k| k.as_str().into()).collect();
    let digits: Vec<serde_json::Value> = keys.digits.iter().map(|&d| d.into()).collect();
    let inns: Vec<serde_json::Value> = keys.inns.iter().map(|&k| k.into()).collect();
    let mut lookups = Vec::new();
    for (column, list) in [("number_key", numbers), ("number_digits", digits), ("inn_key", inns)] {
        // At least two chunks of a long list, so both reading connections
        // take part; at most `LIST_CHUNK * 5` keys bound to one statement.
        let size = list.len().div_ceil(2).clamp(1_000, LIST_CHUNK * 5);
        for chunk in list.chunks(size) {
            let filter = format!("m.{column} IN (SELECT value FROM json_each(?))");
            let list = serde_json::Value::Array(chunk.to_vec()).to_string();
            lookups.push(async move { projected_rows(reader, &filter, Some(list)).await });
        }
    }
    // Side by side on the reading connections (an import looks up by
    // numbers and by digits at once): each lookup is SQLite's own work on
    // its connection's thread, and the pool bounds how many run at once.
    let mut found: Vec<OpenInvoice> = futures::future::try_join_all(lookups).await?.into_iter().flatten().collect();
    found.sort_unstable_by_key(|i| i.id);
    found.dedup_by_key(|i| i.id);
    Ok(found)
}

/// One changed row as `json_array` gives it: a projected row and whether
/// the invoice is open.
type ChangedRow = (String, Option<String>, String, String, String, Option<String>, String, String, String, i64);

/// Open invoices per page of a full read.
const FULL_READ_PAGE: i64 = 100_000;

/// The invoices written after generation `since` (0: every open one, in
/// pages by id). The counter is read first: rows stamped later may come
/// too (read again next time, harmless), rows stamped up to it all do.
pub(super) async fn invoice_changes(reader: &SqlitePool, since: u64) -> Result<InvoiceChanges, StoreError> {
    let generation: i64 =
        sqlx::query_scalar("SELECT value FROM store_generations WHERE name = 'invoices'").fetch_one(reader).await?;
    let mut changes = InvoiceChanges {
        generation: u64::try_from(generation).map_err(|_| corrupt(format!("invoice generation {generation}")))?,
        ..Default::default()
    };
    let row = "json_array(m.id, m.deal_id, m.kind, m.number, m.invoice_date, m.client_inn, m.total_amount, \
               m.currency, coalesce(p.paid_amount, m.paid_amount), coalesce(p.is_open, m.is_open))";
    if since == 0 {
        let sql = format!(
            "SELECT coalesce(json_group_array(json(r)), '[]') FROM (SELECT {row} AS r FROM {MATCH_FROM}
             WHERE m.id > ? AND coalesce(p.is_open, m.is_open) = 1 ORDER BY m.id LIMIT ?)"
        );
        let mut after = String::new();
        loop {
            let text: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(&after)
                .bind(FULL_READ_PAGE)
                .fetch_one(reader)
                .await?;
            let rows: Vec<ChangedRow> = from_doc("invoice projection", &text)?;
            let Some(last) = rows.last() else { return Ok(changes) };
            after = last.0.clone();
            let page = rows.len() as i64;
            add_changed(&mut changes, rows)?;
            if page < FULL_READ_PAGE {
                return Ok(changes);
            }
        }
    }
    let since = i64::try_from(since).map_err(|_| StoreError::Database(format!("invoice generation {since}")))?;
    let sql = format!(
        "SELECT coalesce(json_group_array({row}), '[]') FROM {MATCH_FROM}
         WHERE m.id IN (SELECT id FROM invoice_match WHERE changed > ?1 UNION SELECT id FROM invoice_paid WHERE changed > ?1)"
    );
    let text: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(since).fetch_one(reader).await?;
    add_changed(&mut changes, from_doc("invoice projection", &text)?)?;
    Ok(changes)
}

fn add_changed(changes: &mut InvoiceChanges, rows: Vec<ChangedRow>) -> Result<(), StoreError> {
    for (id, deal, kind, number, date, client_inn, total, currency, paid, open) in rows {
        if open == 1 {
            changes.open.push(projected((id, deal, kind, number, date, client_inn, total, currency, paid))?);
        } else {
            changes.closed.push(parse_uuid(&id)?);
        }
    }
    Ok(())
}

/// Fills the matching columns (and `invoice_match` rows) of invoices stored
/// before they existed (migration 0011), a batch at a time. Cheap when there are none: a
/// partial index holds exactly those rows.
pub(super) async fn project_stored_invoices(writer: &SqlitePool) -> Result<u64, StoreError> {
    let mut filled = 0;
    loop {
        let mut tx = writer.begin().await?;
        let rows =
            sqlx::query("SELECT doc FROM invoices WHERE number_key IS NULL LIMIT 1000").fetch_all(&mut *tx).await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(filled);
        }
        for row in &rows {
            let invoice: Invoice = from_doc("invoice", row.try_get("doc")?)?;
            let p = Projection::of(&invoice);
            sqlx::query(
                "UPDATE invoices SET number_key = ?, number_digits = ?, inn_key = ?, client_inn = ?, invoice_date = ?,
                     total_amount = ?, currency = ?, paid_amount = ?, is_open = ? WHERE id = ?",
            )
            .bind(p.number_key)
            .bind(p.number_digits)
            .bind(p.inn_key)
            .bind(p.client_inn)
            .bind(p.date.to_string())
            .bind(p.total)
            .bind(p.currency)
            .bind(p.paid)
            .bind(p.is_open)
            .bind(invoice.id.to_string())
            .execute(&mut *tx)
            .await?;
            write_match_rows(&mut tx, &[&invoice]).await?;
            filled += 1;
        }
        tx.commit().await?;
    }
}
