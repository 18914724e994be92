//! The embedded default store: one SQLite file in WAL mode.
//!
//! SQLite allows one writer at a time, so writes go through a dedicated
//! single-connection pool: transactions queue in-process instead of spinning
//! on `SQLITE_BUSY`, and reads use their own pool in parallel. `synchronous =
//! FULL` makes every commit durable; the inbox's group commit keeps that
//! affordable by committing many events per fsync. WAL checkpoints run in a
//! task of their own (`sqlite_checkpoint.rs`), not inside commits.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};
use uuid::Uuid;

use super::doc::{from_doc, tag, to_doc};
use super::error::corrupt;
use super::event::{first_occurrences, headers_from_json, headers_to_json};
use super::sqlite_checkpoint::Checkpointer;
use super::sqlite_invoices::{INVOICE_DOC, INVOICE_FROM, project_stored_invoices, write_invoices};
use super::sqlite_memory;
use super::{
    Appended, Backend, ChangeSet, ClaimedMessage, DeadLetter, EventOutcome, EventState, NewRawEvent, QueuedMessage,
    RawEvent, Store, StoreError,
};
use crate::flow::effects::{Command, TraceStep};
use crate::model::{Deal, ExternalRef, Invoice, Task, Timer};

pub struct SqliteStore {
    pub(super) writer: SqlitePool,
    pub(super) reader: SqlitePool,
    _checkpointer: Checkpointer,
}

const DEAL_KIND: &str = "deal";
const INVOICE_KIND: &str = "invoice";

impl SqliteStore {
    /// Opens (creating if missing) the database at `url`
    /// (`sqlite://path/to/hub.db` or `sqlite::memory:`).
    pub async fn open(url: &str, max_readers: u32) -> Result<Self, StoreError> {
        if url.contains(":memory:") || url.contains("mode=memory") {
            // Two pools would see two different in-memory databases.
            return Err(StoreError::Config("in-memory SQLite is not supported: give a file path".into()));
        }
        sqlite_memory::configure();
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("bad SQLite URL `{url}`: {e}")))?
            .create_if_missing(true)
            // 16 KiB pages for a new database (an existing one keeps its
            // size: docs/operations.md says how to convert it). Payment and
            // invoice records are 1–3 KB: a 4 KiB page holds one or two of
            // them and is left a third empty on average: 100k payments took
            // 72k leaf pages (283 MB) there, 13.5k (212 MB) on 16 KiB pages,
            // each page one more to allocate, split and write. Storing them
            // took 2.0 s on 4 KiB pages, 1.6 s on 8 KiB and 1.3 s on 16 KiB
            // (docs/benchmarks.md); commits of one small row are as fast on
            // each.
            .page_size(16384)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            // Pages a reader keeps (up to 64 MiB, allocated as used; the
            // writer's below).
            .pragma("cache_size", "-65536")
            .pragma("temp_store", "memory")
            // Reads through memory mapping instead of a copy per page.
            .pragma("mmap_size", "1073741824")
            // Checkpoints run off the commits (`sqlite_checkpoint.rs`).
            .pragma("wal_autocheckpoint", "0");
        if let Some(dir) = options.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Unavailable(format!("cannot create data dir {}: {e}", dir.display())))?;
        }
        // A statement import touches several hundred megabytes in one
        // transaction; with SQLite's default 2 MiB cache the writer spilled
        // pages to the WAL again and again before the commit. Up to 256 MiB.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone().pragma("cache_size", "-262144"))
            .await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(max_readers.max(1))
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await?;
        let checkpoints = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        Ok(Self { writer, reader, _checkpointer: Checkpointer::start(checkpoints) })
    }
}

pub(super) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(super) fn from_micros(v: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(v).ok_or_else(|| corrupt(format!("timestamp {v} out of range")))
}

pub(super) fn parse_uuid(text: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(text).map_err(|e| corrupt(format!("uuid `{text}`: {e}")))
}

fn event_from_row(row: &SqliteRow) -> Result<RawEvent, StoreError> {
    let state = EventState::from_parts(row.try_get("state")?, row.try_get("state_detail")?).map_err(corrupt)?;
    let processed_at: Option<i64> = row.try_get("processed_at")?;
    Ok(RawEvent {
        seq: row.try_get("seq")?,
        id: parse_uuid(row.try_get("id")?)?,
        connector: row.try_get("connector")?,
        delivery_key: row.try_get("delivery_key")?,
        received_at: from_micros(row.try_get("received_at")?)?,
        headers: headers_from_json(row.try_get("headers")?).map_err(corrupt)?,
        body: row.try_get("body")?,
        state,
        processed_at: processed_at.map(from_micros).transpose()?,
    })
}

pub(super) fn deal_from_row(row: &SqliteRow) -> Result<Deal, StoreError> {
    doc_from_row(row, "deal")
}

/// The record a row's `doc` column holds.
pub(super) fn doc_from_row<T: DeserializeOwned>(row: &SqliteRow, what: &str) -> Result<T, StoreError> {
    from_doc(what, row.try_get("doc")?)
}

/// An id list as one bindable JSON array, for `IN (SELECT value FROM json_each(?))`.
fn id_list(ids: &[Uuid]) -> String {
    serde_json::Value::from(ids.iter().map(|id| id.to_string()).collect::<Vec<_>>()).to_string()
}

fn count(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| corrupt(format!("negative count {v}")))
}

const EVENT_COLUMNS: &str =
    "seq, id, connector, delivery_key, received_at, headers, body, state, state_detail, processed_at";

/// Row counts of the multi-row `INSERT`s that store a batch of raw events.
/// Every statement is one round trip to SQLite's connection thread, so a
/// batch goes in a few statements instead of one per event; a fixed set of
/// shapes keeps them all in the prepared-statement cache. 64 rows are 384
/// parameters, far below SQLite's limit.
const EVENT_INSERT_ROWS: [usize; 4] = [64, 16, 4, 1];

/// The largest statement shape that fits `remaining` events.
fn insert_chunk_len(remaining: usize) -> usize {
    EVENT_INSERT_ROWS.into_iter().find(|&n| n <= remaining).unwrap_or(1)
}

/// `INSERT` of `rows` raw events; a repeated delivery key inserts nothing.
fn insert_events_sql(rows: usize) -> String {
    let mut sql =
        String::from("INSERT INTO inbox_events (id, connector, delivery_key, received_at, headers, body) VALUES ");
    for i in 0..rows {
        sql.push_str(if i == 0 { "(?, ?, ?, ?, ?, ?)" } else { ", (?, ?, ?, ?, ?, ?)" });
    }
    sql.push_str(" ON CONFLICT (connector, delivery_key) DO NOTHING");
    sql
}

/// Records events' outcomes with one `UPDATE` whatever their number (the
/// processor writes a page of them at once); every event must be stored.
async fn record_outcomes(
    tx: &mut Transaction<'_, Sqlite>,
    outcomes: &[EventOutcome],
    now: i64,
) -> Result<(), StoreError> {
    if outcomes.is_empty() {
        return Ok(());
    }
    // The last outcome of an event wins, as if they were applied in order.
    let mut latest = std::collections::HashMap::with_capacity(outcomes.len());
    for outcome in outcomes {
        latest.insert(outcome.event_id, outcome);
    }
    let rows: Vec<serde_json::Value> = latest
        .values()
        .map(|o| serde_json::json!([o.event_id.to_string(), o.state.name(), o.state.detail()]))
        .collect();
    let updated = sqlx::query(
        "UPDATE inbox_events SET state = o.state, state_detail = o.detail, processed_at = ?
         FROM (SELECT value ->> 0 AS id, value ->> 1 AS state, value ->> 2 AS detail FROM json_each(?)) AS o
         WHERE inbox_events.id = o.id",
    )
    .bind(now)
    .bind(serde_json::Value::Array(rows).to_string())
    .execute(&mut **tx)
    .await?;
    if updated.rows_affected() == latest.len() as u64 {
        return Ok(());
    }
    let ids: Vec<Uuid> = latest.keys().copied().collect();
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT id FROM inbox_events WHERE id IN (SELECT value FROM json_each(?))")
            .bind(id_list(&ids))
            .fetch_all(&mut **tx)
            .await?;
    let missing = ids.iter().find(|id| !stored.contains(&id.to_string())).copied().unwrap_or_default();
    Err(StoreError::Conflict(format!("no stored event {missing}")))
}

async fn write_deal(tx: &mut Transaction<'_, Sqlite>, deal: &Deal) -> Result<(), StoreError> {
    let id = deal.id.to_string();
    sqlx::query(
        "INSERT INTO deals (id, pipeline, stage, parent_id, responsible, doc, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET pipeline = excluded.pipeline, stage = excluded.stage,
             parent_id = excluded.parent_id, responsible = excluded.responsible, doc = excluded.doc,
             updated_at = excluded.updated_at",
    )
    .bind(&id)
    .bind(&deal.pipeline)
    .bind(&deal.stage)
    .bind(deal.parent_id.map(|p| p.to_string()))
    .bind(&deal.responsible)
    .bind(to_doc("deal", deal)?)
    .bind(micros(deal.created_at))
    .bind(micros(deal.updated_at))
    .execute(&mut **tx)
    .await?;
    replace_refs(tx, DEAL_KIND, &id, &deal.external_refs).await
}

/// Replaces the external refs of one canonical record.
async fn replace_refs(
    tx: &mut Transaction<'_, Sqlite>,
    kind: &str,
    id: &str,
    refs: &[ExternalRef],
) -> Result<(), StoreError> {
    delete_refs(tx, kind, &[id.to_owned()]).await?;
    insert_refs(tx, kind, id, refs).await
}

/// Removes every external ref of these canonical records (one statement).
pub(super) async fn delete_refs(
    tx: &mut Transaction<'_, Sqlite>,
    kind: &str,
    ids: &[String],
) -> Result<(), StoreError> {
    let [id] = ids else {
        sqlx::query(
            "DELETE FROM external_refs WHERE canonical_id IN (SELECT value FROM json_each(?)) AND record_kind = ?",
        )
        .bind(serde_json::Value::from(ids.to_vec()).to_string())
        .bind(kind)
        .execute(&mut **tx)
        .await?;
        return Ok(());
    };
    sqlx::query("DELETE FROM external_refs WHERE canonical_id = ? AND record_kind = ?")
        .bind(id)
        .bind(kind)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Stores external refs of one canonical record; a ref another record
/// holds is a conflict naming it.
pub(super) async fn insert_refs(
    tx: &mut Transaction<'_, Sqlite>,
    kind: &str,
    id: &str,
    refs: &[ExternalRef],
) -> Result<(), StoreError> {
    for r in refs {
        sqlx::query(
            "INSERT INTO external_refs (system, instance, record_kind, external_id, canonical_id) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&r.system)
        .bind(&r.instance)
        .bind(kind)
        .bind(&r.id)
        .bind(id)
        .execute(&mut **tx)
        .await
        .map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) => StoreError::Conflict(format!(
                "external ref {}/{}/{} already belongs to another {kind}",
                r.system, r.instance, r.id
            )),
            other => other,
        })?;
    }
    Ok(())
}

async fn write_task(tx: &mut Transaction<'_, Sqlite>, task: &Task) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO tasks (id, deal_id, assignee, status, doc, created_at) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET deal_id = excluded.deal_id, assignee = excluded.assignee,
             status = excluded.status, doc = excluded.doc",
    )
    .bind(task.id.to_string())
    .bind(task.deal_id.map(|d| d.to_string()))
    .bind(&task.assignee)
    .bind(tag(&task.status)?)
    .bind(to_doc("task", task)?)
    .bind(micros(task.created_at))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn write_timer(tx: &mut Transaction<'_, Sqlite>, timer: &Timer) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO timers (id, deal_id, name, due_at, status, doc) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET deal_id = excluded.deal_id, name = excluded.name,
             due_at = excluded.due_at, status = excluded.status, doc = excluded.doc",
    )
    .bind(timer.id.to_string())
    .bind(timer.deal_id.to_string())
    .bind(&timer.name)
    .bind(micros(timer.due_at))
    .bind(tag(&timer.status)?)
    .bind(to_doc("timer", timer)?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Queues a command unless one with its idempotency key is stored already.
async fn insert_command(tx: &mut Transaction<'_, Sqlite>, command: &Command, now: i64) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO outbox_commands (id, idempotency_key, connector, deal_id, cause_event, doc, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .bind(command.id.to_string())
    .bind(&command.idempotency_key)
    .bind(&command.connector)
    .bind(command.deal.map(|d| d.to_string()))
    .bind(command.cause_event.to_string())
    .bind(to_doc("command", command)?)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn append_trace(tx: &mut Transaction<'_, Sqlite>, step: &TraceStep) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO trace_steps (deal_id, cause_event, at, doc) VALUES (?, ?, ?, ?)")
        .bind(step.deal.to_string())
        .bind(step.cause_event.to_string())
        .bind(micros(step.at))
        .bind(to_doc("trace step", step)?)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn write_team_cursor(tx: &mut Transaction<'_, Sqlite>, team: &str, position: u64) -> Result<(), StoreError> {
    let position = i64::try_from(position)
        .map_err(|_| StoreError::Database(format!("team `{team}` cursor {position} out of range")))?;
    sqlx::query(
        "INSERT INTO team_cursors (team, position) VALUES (?, ?)
         ON CONFLICT (team) DO UPDATE SET position = excluded.position",
    )
    .bind(team)
    .bind(position)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Writes a change set inside the caller's transaction (`apply`, and the
/// payment ledger that commits an import together with its engine output).
pub(super) async fn write_change_set(tx: &mut Transaction<'_, Sqlite>, changes: &ChangeSet) -> Result<(), StoreError> {
    let now = micros(Utc::now());
    for deal in &changes.deals {
        write_deal(tx, deal).await?;
    }
    write_invoices(tx, &changes.invoices).await?;
    for task in &changes.tasks {
        write_task(tx, task).await?;
    }
    for timer in &changes.timers {
        write_timer(tx, timer).await?;
    }
    for command in &changes.commands {
        insert_command(tx, command, now).await?;
    }
    for step in &changes.trace {
        append_trace(tx, step).await?;
    }
    for (team, position) in &changes.team_cursors {
        write_team_cursor(tx, team, *position).await?;
    }
    record_outcomes(tx, &changes.event_outcomes, now).await
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("./migrations/sqlite").run(&self.writer).await?;
        let filled = project_stored_invoices(&self.writer).await?;
        if filled > 0 {
            tracing::info!(invoices = filled, "filled the matching columns of stored invoices");
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn append_events(&self, events: &[NewRawEvent]) -> Result<Vec<Appended>, StoreError> {
        let firsts = first_occurrences(events);
        // Only the first of several events with one delivery key is inserted.
        let unique: Vec<&NewRawEvent> =
            events.iter().enumerate().filter(|(i, _)| firsts[*i] == *i).map(|(_, e)| e).collect();
        let mut originals = std::collections::HashMap::new();
        let mut tx = self.writer.begin().await?;
        let mut rest = unique.as_slice();
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(insert_chunk_len(rest.len()));
            rest = tail;
            let mut insert = sqlx::query(sqlx::AssertSqlSafe(insert_events_sql(chunk.len())));
            for event in chunk {
                insert = insert
                    .bind(event.id.to_string())
                    .bind(&event.connector)
                    .bind(&event.delivery_key)
                    .bind(micros(event.received_at))
                    .bind(headers_to_json(&event.headers))
                    .bind(&event.body);
            }
            let inserted = insert.execute(&mut *tx).await?.rows_affected();
            if inserted == chunk.len() as u64 {
                continue;
            }
            // Some repeated a stored delivery: find the original ids (rare).
            for event in chunk.iter().filter(|e| e.delivery_key.is_some()) {
                let stored: String =
                    sqlx::query_scalar("SELECT id FROM inbox_events WHERE connector = ? AND delivery_key = ?")
                        .bind(&event.connector)
                        .bind(&event.delivery_key)
                        .fetch_one(&mut *tx)
                        .await?;
                let stored = parse_uuid(&stored)?;
                if stored != event.id {
                    originals.insert(event.id, stored);
                }
            }
        }
        tx.commit().await?;
        let mut results: Vec<Appended> = Vec::with_capacity(events.len());
        for (i, event) in events.iter().enumerate() {
            results.push(if firsts[i] != i {
                Appended { id: results[firsts[i]].id, duplicate: true }
            } else {
                match originals.get(&event.id) {
                    Some(original) => Appended { id: *original, duplicate: true },
                    None => Appended { id: event.id, duplicate: false },
                }
            });
        }
        Ok(results)
    }

    async fn get_event(&self, id: Uuid) -> Result<Option<RawEvent>, StoreError> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM inbox_events WHERE id = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.to_string()).fetch_optional(&self.reader).await?;
        row.as_ref().map(event_from_row).transpose()
    }

    async fn events_after(&self, after_seq: i64, limit: u32) -> Result<Vec<RawEvent>, StoreError> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM inbox_events WHERE seq > ? ORDER BY seq LIMIT ?");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(after_seq)
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn apply(&self, changes: &ChangeSet) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut tx = self.writer.begin().await?;
        write_change_set(&mut tx, changes).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_deal(&self, id: Uuid) -> Result<Option<Deal>, StoreError> {
        let row =
            sqlx::query("SELECT doc FROM deals WHERE id = ?").bind(id.to_string()).fetch_optional(&self.reader).await?;
        row.as_ref().map(deal_from_row).transpose()
    }

    async fn find_deal(&self, external: &ExternalRef) -> Result<Option<Deal>, StoreError> {
        let row = sqlx::query(
            "SELECT d.doc FROM external_refs r JOIN deals d ON d.id = r.canonical_id
             WHERE r.system = ? AND r.instance = ? AND r.record_kind = ? AND r.external_id = ?",
        )
        .bind(&external.system)
        .bind(&external.instance)
        .bind(DEAL_KIND)
        .bind(&external.id)
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(deal_from_row).transpose()
    }

    async fn child_deals(&self, parent: Uuid) -> Result<Vec<Deal>, StoreError> {
        let rows = sqlx::query("SELECT doc FROM deals WHERE parent_id = ? ORDER BY created_at, id")
            .bind(parent.to_string())
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(deal_from_row).collect()
    }

    async fn deals_by_ids(&self, ids: &[Uuid]) -> Result<Vec<Deal>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query("SELECT doc FROM deals WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id")
            .bind(id_list(ids))
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(deal_from_row).collect()
    }

    async fn get_invoice(&self, id: Uuid) -> Result<Option<Invoice>, StoreError> {
        let sql = format!("SELECT {INVOICE_DOC} FROM {INVOICE_FROM} WHERE i.id = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.to_string()).fetch_optional(&self.reader).await?;
        row.as_ref().map(|r| doc_from_row(r, "invoice")).transpose()
    }

    async fn invoices_of_deals(&self, deals: &[Uuid]) -> Result<Vec<Invoice>, StoreError> {
        if deals.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {INVOICE_DOC} FROM {INVOICE_FROM}
             WHERE i.deal_id IN (SELECT value FROM json_each(?)) ORDER BY i.id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id_list(deals)).fetch_all(&self.reader).await?;
        rows.iter().map(|r| doc_from_row(r, "invoice")).collect()
    }

    async fn find_invoice(&self, external: &ExternalRef) -> Result<Option<Invoice>, StoreError> {
        let sql = format!(
            "SELECT {INVOICE_DOC} FROM external_refs r JOIN invoices i ON i.id = r.canonical_id
                 LEFT JOIN invoice_paid p ON p.id = i.id
             WHERE r.system = ? AND r.instance = ? AND r.record_kind = ? AND r.external_id = ?"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&external.system)
            .bind(&external.instance)
            .bind(INVOICE_KIND)
            .bind(&external.id)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(|r| doc_from_row(r, "invoice")).transpose()
    }

    async fn get_task(&self, id: Uuid) -> Result<Option<Task>, StoreError> {
        let row =
            sqlx::query("SELECT doc FROM tasks WHERE id = ?").bind(id.to_string()).fetch_optional(&self.reader).await?;
        row.as_ref().map(|r| doc_from_row(r, "task")).transpose()
    }

    async fn tasks_of_deals(&self, deals: &[Uuid], open_only: bool) -> Result<Vec<Task>, StoreError> {
        if deals.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT doc FROM tasks WHERE deal_id IN (SELECT value FROM json_each(?))
               AND (status = 'open' OR NOT ?) ORDER BY id",
        )
        .bind(id_list(deals))
        .bind(open_only)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(|r| doc_from_row(r, "task")).collect()
    }

    async fn timers_of_deals(&self, deals: &[Uuid], pending_only: bool) -> Result<Vec<Timer>, StoreError> {
        if deals.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT doc FROM timers WHERE deal_id IN (SELECT value FROM json_each(?))
               AND (status = 'pending' OR NOT ?) ORDER BY id",
        )
        .bind(id_list(deals))
        .bind(pending_only)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(|r| doc_from_row(r, "timer")).collect()
    }

    async fn due_timers(&self, at: DateTime<Utc>, limit: u32) -> Result<Vec<Timer>, StoreError> {
        let rows =
            sqlx::query("SELECT doc FROM timers WHERE status = 'pending' AND due_at <= ? ORDER BY due_at, id LIMIT ?")
                .bind(micros(at))
                .bind(i64::from(limit))
                .fetch_all(&self.reader)
                .await?;
        rows.iter().map(|r| doc_from_row(r, "timer")).collect()
    }

    async fn team_cursors(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let rows = sqlx::query("SELECT team, position FROM team_cursors").fetch_all(&self.reader).await?;
        rows.iter().map(|r| Ok((r.try_get("team")?, count(r.try_get("position")?)?))).collect()
    }

    async fn person_loads(&self, people: &[String]) -> Result<BTreeMap<String, u64>, StoreError> {
        if people.is_empty() {
            return Ok(BTreeMap::new());
        }
        let rows = sqlx::query(
            "SELECT p.value AS person,
                    (SELECT COUNT(*) FROM tasks t WHERE t.assignee = p.value AND t.status = 'open')
                  + (SELECT COUNT(*) FROM deals d WHERE d.responsible = p.value) AS open_work
             FROM (SELECT DISTINCT value FROM json_each(?)) p",
        )
        .bind(serde_json::Value::from(people.to_vec()).to_string())
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("person")?, count(r.try_get("open_work")?)?))).collect()
    }

    async fn trace_of_deal(&self, deal: Uuid) -> Result<Vec<TraceStep>, StoreError> {
        let rows = sqlx::query("SELECT doc FROM trace_steps WHERE deal_id = ? ORDER BY seq")
            .bind(deal.to_string())
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(|r| doc_from_row(r, "trace step")).collect()
    }

    async fn commands_of_deal(&self, deal: Uuid) -> Result<Vec<Command>, StoreError> {
        let rows = sqlx::query("SELECT doc FROM outbox_commands WHERE deal_id = ? ORDER BY seq")
            .bind(deal.to_string())
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(|r| doc_from_row(r, "command")).collect()
    }

    async fn trace_of_causes(&self, causes: &[Uuid]) -> Result<Vec<TraceStep>, StoreError> {
        if causes.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT doc FROM trace_steps WHERE cause_event IN (SELECT value FROM json_each(?)) ORDER BY seq",
        )
        .bind(id_list(causes))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(|r| doc_from_row(r, "trace step")).collect()
    }

    async fn commands_of_causes(&self, causes: &[Uuid]) -> Result<Vec<Command>, StoreError> {
        if causes.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT doc FROM outbox_commands WHERE cause_event IN (SELECT value FROM json_each(?)) ORDER BY seq",
        )
        .bind(id_list(causes))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(|r| doc_from_row(r, "command")).collect()
    }

    async fn pending_commands(&self, after_seq: i64, limit: u32) -> Result<Vec<(i64, Command)>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, doc FROM outbox_commands WHERE state = 'pending' AND seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("seq")?, doc_from_row(r, "command")?))).collect()
    }

    async fn mark_commands_published(&self, ids: &[Uuid]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "UPDATE outbox_commands SET state = 'published', published_at = ?
             WHERE state = 'pending' AND id IN (SELECT value FROM json_each(?))",
        )
        .bind(micros(Utc::now()))
        .bind(id_list(ids))
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn bus_enqueue(&self, messages: &[QueuedMessage]) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        for m in messages {
            // An id still in the table (queued, handed out, or acked and not
            // yet removed) is the same command published again: its first
            // copy stays where it is.
            sqlx::query(
                "INSERT INTO bus_messages (id, partition, key, idempotency_key, payload, visible_at)
                 VALUES (?, ?, ?, ?, ?, ?)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(m.id.to_string())
            .bind(i64::from(m.partition))
            .bind(&m.key)
            .bind(&m.idempotency_key)
            .bind(&m.payload)
            .bind(micros(m.visible_at))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn bus_lease(
        &self,
        partition: u32,
        owner: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.writer.begin().await?;
        let held = bus_take_lease(&mut tx, partition, owner, until, now).await?;
        tx.commit().await?;
        Ok(held)
    }

    async fn bus_release(&self, partition: u32, owner: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM bus_leases WHERE partition = ? AND owner = ?")
            .bind(i64::from(partition))
            .bind(owner)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn bus_claim(
        &self,
        partition: u32,
        owner: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: u32,
        acked: &[Uuid],
    ) -> Result<Vec<ClaimedMessage>, StoreError> {
        // An idle partition is polled often: answer "empty" from a reader
        // instead of queueing a write (and its fsync) on the one writer.
        if acked.is_empty() {
            let visible: Option<i64> =
                sqlx::query_scalar("SELECT 1 FROM bus_messages WHERE partition = ? AND visible_at <= ? LIMIT 1")
                    .bind(i64::from(partition))
                    .bind(micros(now))
                    .fetch_optional(&self.reader)
                    .await?;
            if visible.is_none() {
                return Ok(Vec::new());
            }
        }
        let mut tx = self.writer.begin().await?;
        if !acked.is_empty() {
            let mut query = sqlx::QueryBuilder::new("DELETE FROM bus_messages WHERE id IN (");
            let mut list = query.separated(", ");
            for id in acked {
                list.push_bind(id.to_string());
            }
            query.push(")");
            query.build().execute(&mut *tx).await?;
        }
        if !bus_take_lease(&mut tx, partition, owner, until, now).await? {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "UPDATE bus_messages SET deliveries = deliveries + 1
             WHERE seq IN (SELECT seq FROM bus_messages WHERE partition = ? AND visible_at <= ? ORDER BY seq LIMIT ?)
             RETURNING seq, id, partition, key, idempotency_key, payload, visible_at, attempts, deliveries",
        )
        .bind(i64::from(partition))
        .bind(micros(now))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        // RETURNING gives no order: put them back in partition order.
        let mut claimed = Vec::with_capacity(rows.len());
        for r in &rows {
            let seq: i64 = r.try_get("seq")?;
            let message = ClaimedMessage {
                message: queued_from_row(r)?,
                attempts: small(r.try_get("attempts")?)?,
                deliveries: small(r.try_get("deliveries")?)?,
            };
            claimed.push((seq, message));
        }
        claimed.sort_by_key(|(seq, _)| *seq);
        Ok(claimed.into_iter().map(|(_, m)| m).collect())
    }

    async fn bus_ack(&self, ids: &[Uuid]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut query = sqlx::QueryBuilder::new("DELETE FROM bus_messages WHERE id IN (");
        let mut list = query.separated(", ");
        for id in ids {
            list.push_bind(id.to_string());
        }
        query.push(")");
        query.build().execute(&self.writer).await?;
        Ok(())
    }

    async fn bus_dead_letter(&self, id: Uuid, reason: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "INSERT INTO bus_dead (id, partition, key, idempotency_key, payload, attempts, reason, dead_at)
             SELECT id, partition, key, idempotency_key, payload, attempts, ?, ? FROM bus_messages WHERE id = ?",
        )
        .bind(reason)
        .bind(micros(at))
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM bus_messages WHERE id = ?").bind(id.to_string()).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn bus_retry(&self, id: Uuid, visible_at: DateTime<Utc>) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        // A new row gets a new seq: the message goes to the back of its partition.
        let row = sqlx::query(
            "DELETE FROM bus_messages WHERE id = ?
             RETURNING id, partition, key, idempotency_key, payload, visible_at, attempts",
        )
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = row {
            let m = queued_from_row(&row)?;
            let attempts: i64 = row.try_get("attempts")?;
            sqlx::query(
                "INSERT INTO bus_messages (id, partition, key, idempotency_key, payload, visible_at, attempts)
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(m.id.to_string())
            .bind(i64::from(m.partition))
            .bind(&m.key)
            .bind(&m.idempotency_key)
            .bind(&m.payload)
            .bind(micros(visible_at))
            .bind(attempts + 1)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn bus_dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, partition, key, idempotency_key, payload, dead_at AS visible_at, attempts, reason, dead_at
             FROM bus_dead ORDER BY seq LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DeadLetter {
                    message: queued_from_row(r)?,
                    attempts: small(r.try_get("attempts")?)?,
                    reason: r.try_get("reason")?,
                    dead_at: from_micros(r.try_get("dead_at")?)?,
                })
            })
            .collect()
    }
}

/// Takes `partition`'s lease for `owner` when it is free, expired at `now`
/// or already `owner`'s; true when `owner` holds it afterwards.
async fn bus_take_lease(
    tx: &mut Transaction<'_, Sqlite>,
    partition: u32,
    owner: &str,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let row = sqlx::query(
        "INSERT INTO bus_leases (partition, owner, expires_at) VALUES (?, ?, ?)
         ON CONFLICT (partition) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
         WHERE bus_leases.owner = excluded.owner OR bus_leases.expires_at <= ?
         RETURNING owner",
    )
    .bind(i64::from(partition))
    .bind(owner)
    .bind(micros(until))
    .bind(micros(now))
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.is_some())
}

fn queued_from_row(row: &SqliteRow) -> Result<QueuedMessage, StoreError> {
    let partition: i64 = row.try_get("partition")?;
    Ok(QueuedMessage {
        id: parse_uuid(row.try_get("id")?)?,
        partition: u32::try_from(partition).map_err(|_| corrupt(format!("partition {partition}")))?,
        key: row.try_get("key")?,
        idempotency_key: row.try_get("idempotency_key")?,
        payload: row.try_get("payload")?,
        visible_at: from_micros(row.try_get("visible_at")?)?,
    })
}

fn small(v: i64) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| corrupt(format!("count {v} out of range")))
}

#[cfg(test)]
mod tests {
    use super::SqliteStore;
    use crate::store::Store;

    async fn page_size(store: &SqliteStore) -> i64 {
        sqlx::query_scalar("PRAGMA page_size").fetch_one(&store.reader).await.unwrap()
    }

    #[tokio::test]
    async fn a_new_database_has_16_kib_pages_and_an_old_one_keeps_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = format!("sqlite://{}", dir.path().join("new.db").display());
        let store = SqliteStore::open(&fresh, 2).await.unwrap();
        store.migrate().await.unwrap();
        assert_eq!(page_size(&store).await, 16384);

        // A database made with SQLite's default 4 KiB pages, as hubs
        // before this setting made them: opening it changes nothing.
        let old = dir.path().join("old.db");
        database_with_4k_pages(&old).await;
        let store = SqliteStore::open(&format!("sqlite://{}", old.display()), 2).await.unwrap();
        store.migrate().await.unwrap();
        assert_eq!(page_size(&store).await, 4096);
        let kept: String = sqlx::query_scalar("SELECT v FROM kept").fetch_one(&store.reader).await.unwrap();
        assert_eq!(kept, "before");
    }

    /// A WAL database with 4 KiB pages and a row in it.
    async fn database_with_4k_pages(path: &std::path::Path) {
        use std::str::FromStr;
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .unwrap()
            .create_if_missing(true)
            .page_size(4096)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        sqlx::query("CREATE TABLE kept (v TEXT)").execute(&pool).await.unwrap();
        sqlx::query("INSERT INTO kept VALUES ('before')").execute(&pool).await.unwrap();
        pool.close().await;
    }
}
