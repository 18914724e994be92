//! The production store: PostgreSQL, shared by every hub replica.
//!
//! Batches of raw events go in as one `INSERT … SELECT FROM UNNEST(…)` so a
//! group commit costs one round trip however many events it carries.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Connection, Postgres, Row, Transaction};
use uuid::Uuid;

use super::error::corrupt;
use super::event::{first_occurrences, headers_from_json, headers_to_json};
use super::{Appended, Backend, ChangeSet, EventState, NewRawEvent, RawEvent, Store, StoreError, redact_url};
use crate::model::{Deal, ExternalRef};

pub struct PgStore {
    pool: PgPool,
}

const DEAL_KIND: &str = "deal";

impl PgStore {
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("bad PostgreSQL URL `{}`: {e}", redact_url(url))))?
            .application_name("dealbridge");
        // One direct connection first: it fails at once when the server is
        // down (the pool would retry quietly until its acquire timeout),
        // which leaves waiting policy to the caller.
        let probe = options.connect().await?;
        let _ = probe.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(2))
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(options);
        Ok(Self { pool })
    }

    /// The underlying pool, for tests and tools that need raw SQL.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

fn event_from_row(row: &PgRow) -> Result<RawEvent, StoreError> {
    let state = EventState::from_parts(row.try_get("state")?, row.try_get("state_detail")?).map_err(corrupt)?;
    Ok(RawEvent {
        seq: row.try_get("seq")?,
        id: row.try_get("id")?,
        connector: row.try_get("connector")?,
        delivery_key: row.try_get("delivery_key")?,
        received_at: row.try_get("received_at")?,
        headers: headers_from_json(row.try_get("headers")?).map_err(corrupt)?,
        body: row.try_get("body")?,
        state,
        processed_at: row.try_get("processed_at")?,
    })
}

fn deal_from_row(row: &PgRow) -> Result<Deal, StoreError> {
    let doc: &str = row.try_get("doc")?;
    serde_json::from_str(doc).map_err(|e| corrupt(format!("deal document: {e}")))
}

const EVENT_COLUMNS: &str = "seq, id, connector, delivery_key, received_at, headers::text AS headers, body, state, \
                             state_detail, processed_at";

async fn write_deal(tx: &mut Transaction<'_, Postgres>, deal: &Deal) -> Result<(), StoreError> {
    let doc = serde_json::to_string(deal).map_err(|e| StoreError::Database(e.to_string()))?;
    sqlx::query(
        "INSERT INTO deals (id, pipeline, stage, parent_id, doc, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7)
         ON CONFLICT (id) DO UPDATE SET pipeline = excluded.pipeline, stage = excluded.stage,
             parent_id = excluded.parent_id, doc = excluded.doc, updated_at = excluded.updated_at",
    )
    .bind(deal.id)
    .bind(&deal.pipeline)
    .bind(&deal.stage)
    .bind(deal.parent_id)
    .bind(doc)
    .bind(deal.created_at)
    .bind(deal.updated_at)
    .execute(&mut **tx)
    .await?;
    sqlx::query("DELETE FROM external_refs WHERE canonical_id = $1 AND record_kind = $2")
        .bind(deal.id)
        .bind(DEAL_KIND)
        .execute(&mut **tx)
        .await?;
    for r in &deal.external_refs {
        sqlx::query(
            "INSERT INTO external_refs (system, instance, record_kind, external_id, canonical_id)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&r.system)
        .bind(&r.instance)
        .bind(DEAL_KIND)
        .bind(&r.id)
        .bind(deal.id)
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

/// Column arrays for the UNNEST insert of the events that are first of
/// their delivery key in the batch.
#[derive(Default)]
struct EventColumns {
    ids: Vec<Uuid>,
    connectors: Vec<String>,
    keys: Vec<Option<String>>,
    received: Vec<DateTime<Utc>>,
    headers: Vec<String>,
    bodies: Vec<Vec<u8>>,
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("./migrations/postgres").run(&self.pool).await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn append_events(&self, events: &[NewRawEvent]) -> Result<Vec<Appended>, StoreError> {
        let firsts = first_occurrences(events);
        let mut cols = EventColumns::default();
        for (i, e) in events.iter().enumerate().filter(|(i, _)| firsts[*i] == *i) {
            debug_assert_eq!(firsts[i], i);
            cols.ids.push(e.id);
            cols.connectors.push(e.connector.clone());
            cols.keys.push(e.delivery_key.clone());
            cols.received.push(e.received_at);
            cols.headers.push(headers_to_json(&e.headers));
            cols.bodies.push(e.body.clone());
        }
        let mut tx = self.pool.begin().await?;
        let inserted: Vec<Uuid> = sqlx::query_scalar(
            "INSERT INTO inbox_events (id, connector, delivery_key, received_at, headers, body)
             SELECT u.id, u.connector, u.delivery_key, u.received_at, u.headers::jsonb, u.body
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::bytea[])
                  AS u(id, connector, delivery_key, received_at, headers, body)
             ON CONFLICT (connector, delivery_key) DO NOTHING
             RETURNING id",
        )
        .bind(&cols.ids)
        .bind(&cols.connectors)
        .bind(&cols.keys)
        .bind(&cols.received)
        .bind(&cols.headers)
        .bind(&cols.bodies)
        .fetch_all(&mut *tx)
        .await?;
        let inserted: std::collections::HashSet<Uuid> = inserted.into_iter().collect();

        // Events that lost to an earlier delivery: look up the original ids.
        let (mut dup_connectors, mut dup_keys) = (Vec::new(), Vec::new());
        for (i, id) in cols.ids.iter().enumerate() {
            if !inserted.contains(id) {
                dup_connectors.push(cols.connectors[i].clone());
                dup_keys.push(cols.keys[i].clone().unwrap_or_default());
            }
        }
        let mut originals = std::collections::HashMap::new();
        if !dup_keys.is_empty() {
            let rows = sqlx::query(
                "SELECT e.id, e.connector, e.delivery_key FROM inbox_events e
                 JOIN UNNEST($1::text[], $2::text[]) AS k(connector, delivery_key)
                   ON e.connector = k.connector AND e.delivery_key = k.delivery_key",
            )
            .bind(&dup_connectors)
            .bind(&dup_keys)
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                let key: (String, String) = (row.try_get("connector")?, row.try_get("delivery_key")?);
                originals.insert(key, row.try_get::<Uuid, _>("id")?);
            }
        }
        tx.commit().await?;

        let mut results: Vec<Appended> = Vec::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            if firsts[i] != i {
                results.push(Appended { id: results[firsts[i]].id, duplicate: true });
            } else if inserted.contains(&e.id) {
                results.push(Appended { id: e.id, duplicate: false });
            } else {
                let key = (e.connector.clone(), e.delivery_key.clone().unwrap_or_default());
                let id = *originals.get(&key).ok_or_else(|| {
                    StoreError::Database(format!("event {} was neither stored nor a duplicate", e.id))
                })?;
                results.push(Appended { id, duplicate: true });
            }
        }
        Ok(results)
    }

    async fn get_event(&self, id: Uuid) -> Result<Option<RawEvent>, StoreError> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM inbox_events WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(event_from_row).transpose()
    }

    async fn events_after(&self, after_seq: i64, limit: u32) -> Result<Vec<RawEvent>, StoreError> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM inbox_events WHERE seq > $1 ORDER BY seq LIMIT $2");
        let rows =
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(after_seq).bind(i64::from(limit)).fetch_all(&self.pool).await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn apply(&self, changes: &ChangeSet) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for deal in &changes.deals {
            write_deal(&mut tx, deal).await?;
        }
        for outcome in &changes.event_outcomes {
            let updated = sqlx::query(
                "UPDATE inbox_events SET state = $1, state_detail = $2, processed_at = now() WHERE id = $3",
            )
            .bind(outcome.state.name())
            .bind(outcome.state.detail())
            .bind(outcome.event_id)
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
            sqlx::query("SELECT doc::text AS doc FROM deals WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(deal_from_row).transpose()
    }

    async fn find_deal(&self, external: &ExternalRef) -> Result<Option<Deal>, StoreError> {
        let row = sqlx::query(
            "SELECT d.doc::text AS doc FROM external_refs r JOIN deals d ON d.id = r.canonical_id
             WHERE r.system = $1 AND r.instance = $2 AND r.record_kind = $3 AND r.external_id = $4",
        )
        .bind(&external.system)
        .bind(&external.instance)
        .bind(DEAL_KIND)
        .bind(&external.id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(deal_from_row).transpose()
    }

    async fn child_deals(&self, parent: Uuid) -> Result<Vec<Deal>, StoreError> {
        let rows = sqlx::query("SELECT doc::text AS doc FROM deals WHERE parent_id = $1 ORDER BY created_at, id")
            .bind(parent)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(deal_from_row).collect()
    }
}
