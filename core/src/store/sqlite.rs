//! The embedded default store: one SQLite file in WAL mode.
//!
//! SQLite allows one writer at a time, so writes go through a dedicated
//! single-connection pool: transactions queue in-process instead of spinning
//! on `SQLITE_BUSY`, and reads use their own pool in parallel. `synchronous =
//! FULL` makes every commit durable; the inbox's group commit keeps that
//! affordable by committing many events per fsync.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};
use uuid::Uuid;

use super::error::corrupt;
use super::event::{first_occurrences, headers_from_json, headers_to_json};
use super::{Appended, Backend, ChangeSet, EventState, NewRawEvent, RawEvent, Store, StoreError};
use crate::model::{Deal, ExternalRef};

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

const DEAL_KIND: &str = "deal";

impl SqliteStore {
    /// Opens (creating if missing) the database at `url`
    /// (`sqlite://path/to/hub.db` or `sqlite::memory:`).
    pub async fn open(url: &str, max_readers: u32) -> Result<Self, StoreError> {
        if url.contains(":memory:") || url.contains("mode=memory") {
            // Two pools would see two different in-memory databases.
            return Err(StoreError::Config("in-memory SQLite is not supported: give a file path".into()));
        }
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("bad SQLite URL `{url}`: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        if let Some(dir) = options.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Unavailable(format!("cannot create data dir {}: {e}", dir.display())))?;
        }
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(max_readers.max(1))
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        Ok(Self { writer, reader })
    }
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_micros(v: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(v).ok_or_else(|| corrupt(format!("timestamp {v} out of range")))
}

fn parse_uuid(text: &str) -> Result<Uuid, StoreError> {
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

fn deal_from_row(row: &SqliteRow) -> Result<Deal, StoreError> {
    let doc: &str = row.try_get("doc")?;
    serde_json::from_str(doc).map_err(|e| corrupt(format!("deal document: {e}")))
}

const EVENT_COLUMNS: &str =
    "seq, id, connector, delivery_key, received_at, headers, body, state, state_detail, processed_at";

async fn write_deal(tx: &mut Transaction<'_, Sqlite>, deal: &Deal) -> Result<(), StoreError> {
    let doc = serde_json::to_string(deal).map_err(|e| StoreError::Database(e.to_string()))?;
    let id = deal.id.to_string();
    sqlx::query(
        "INSERT INTO deals (id, pipeline, stage, parent_id, doc, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET pipeline = excluded.pipeline, stage = excluded.stage,
             parent_id = excluded.parent_id, doc = excluded.doc, updated_at = excluded.updated_at",
    )
    .bind(&id)
    .bind(&deal.pipeline)
    .bind(&deal.stage)
    .bind(deal.parent_id.map(|p| p.to_string()))
    .bind(doc)
    .bind(micros(deal.created_at))
    .bind(micros(deal.updated_at))
    .execute(&mut **tx)
    .await?;
    sqlx::query("DELETE FROM external_refs WHERE canonical_id = ? AND record_kind = ?")
        .bind(&id)
        .bind(DEAL_KIND)
        .execute(&mut **tx)
        .await?;
    for r in &deal.external_refs {
        sqlx::query(
            "INSERT INTO external_refs (system, instance, record_kind, external_id, canonical_id) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&r.system)
        .bind(&r.instance)
        .bind(DEAL_KIND)
        .bind(&r.id)
        .bind(&id)
        .execute(&mut **tx)
        .await
        .map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) => StoreError::Conflict(format!(
                "external ref {}/{}/{} already belongs to another deal",
                r.system, r.instance, r.id
            )),
            other => other,
        })?;
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("./migrations/sqlite").run(&self.writer).await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn append_events(&self, events: &[NewRawEvent]) -> Result<Vec<Appended>, StoreError> {
        let firsts = first_occurrences(events);
        let mut results: Vec<Appended> = Vec::with_capacity(events.len());
        let mut tx = self.writer.begin().await?;
        for (i, event) in events.iter().enumerate() {
            if firsts[i] != i {
                results.push(Appended { id: results[firsts[i]].id, duplicate: true });
                continue;
            }
            let inserted = sqlx::query(
                "INSERT INTO inbox_events (id, connector, delivery_key, received_at, headers, body)
                 VALUES (?, ?, ?, ?, ?, ?)
                 ON CONFLICT (connector, delivery_key) DO NOTHING",
            )
            .bind(event.id.to_string())
            .bind(&event.connector)
            .bind(&event.delivery_key)
            .bind(micros(event.received_at))
            .bind(headers_to_json(&event.headers))
            .bind(&event.body)
            .execute(&mut *tx)
            .await?;
            if inserted.rows_affected() == 1 {
                results.push(Appended { id: event.id, duplicate: false });
                continue;
            }
            let original: String =
                sqlx::query_scalar("SELECT id FROM inbox_events WHERE connector = ? AND delivery_key = ?")
                    .bind(&event.connector)
                    .bind(&event.delivery_key)
                    .fetch_one(&mut *tx)
                    .await?;
            results.push(Appended { id: parse_uuid(&original)?, duplicate: true });
        }
        tx.commit().await?;
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
        for deal in &changes.deals {
            write_deal(&mut tx, deal).await?;
        }
        let now = micros(Utc::now());
        for outcome in &changes.event_outcomes {
            let updated =
                sqlx::query("UPDATE inbox_events SET state = ?, state_detail = ?, processed_at = ? WHERE id = ?")
                    .bind(outcome.state.name())
                    .bind(outcome.state.detail())
                    .bind(now)
                    .bind(outcome.event_id.to_string())
                    .execute(&mut *tx)
                    .await?;
            if updated.rows_affected() != 1 {
                return Err(StoreError::Conflict(format!("no stored event {}", outcome.event_id)));
            }
        }
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
}
