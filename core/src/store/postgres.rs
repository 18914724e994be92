//! The production store: PostgreSQL, shared by every hub replica.
//!
//! Batches of raw events go in as one `INSERT … SELECT FROM UNNEST(…)` so a
//! group commit costs one round trip however many events it carries.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Connection, Postgres, Row, Transaction};
use uuid::Uuid;

use super::doc::{from_doc, tag, to_doc};
use super::error::corrupt;
use super::event::{first_occurrences, headers_from_json, headers_to_json};
use super::postgres_invoices::{INVOICE_DOC, INVOICE_FROM, project_stored_invoices, write_invoices};
use super::{
    Appended, Backend, ChangeSet, ClaimedMessage, DeadLetter, EventOutcome, EventState, NewRawEvent, QueuedMessage,
    RawEvent, Store, StoreError, redact_url,
};
use crate::flow::effects::{Command, TraceStep};
use crate::model::{Deal, ExternalRef, Invoice, Task, Timer};

pub struct PgStore {
    pub(super) pool: PgPool,
}

const DEAL_KIND: &str = "deal";
const INVOICE_KIND: &str = "invoice";

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

pub(super) fn deal_from_row(row: &PgRow) -> Result<Deal, StoreError> {
    doc_from_row(row, "deal")
}

/// The record a row's `doc` column (selected as `doc::text AS doc`) holds.
pub(super) fn doc_from_row<T: DeserializeOwned>(row: &PgRow, what: &str) -> Result<T, StoreError> {
    from_doc(what, row.try_get("doc")?)
}

fn count(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| corrupt(format!("negative count {v}")))
}

const EVENT_COLUMNS: &str = "seq, id, connector, delivery_key, received_at, headers::text AS headers, body, state, \
                             state_detail, processed_at";

/// Records events' outcomes with one `UPDATE` whatever their number (the
/// processor writes a page of them at once); every event must be stored.
async fn record_outcomes(tx: &mut Transaction<'_, Postgres>, outcomes: &[EventOutcome]) -> Result<(), StoreError> {
    if outcomes.is_empty() {
        return Ok(());
    }
    // The last outcome of an event wins, as if they were applied in order.
    let mut latest = std::collections::HashMap::with_capacity(outcomes.len());
    for outcome in outcomes {
        latest.insert(outcome.event_id, outcome);
    }
    let (mut ids, mut states, mut details) = (Vec::new(), Vec::new(), Vec::new());
    for (id, outcome) in &latest {
        ids.push(*id);
        states.push(outcome.state.name());
        details.push(outcome.state.detail());
    }
    let updated = sqlx::query(
        "UPDATE inbox_events e SET state = o.state, state_detail = o.detail, processed_at = now()
         FROM UNNEST($1::uuid[], $2::text[], $3::text[]) AS o(id, state, detail)
         WHERE e.id = o.id",
    )
    .bind(&ids)
    .bind(&states)
    .bind(&details)
    .execute(&mut **tx)
    .await?;
    if updated.rows_affected() == ids.len() as u64 {
        return Ok(());
    }
    let stored: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM inbox_events WHERE id = ANY($1)").bind(&ids).fetch_all(&mut **tx).await?;
    let missing = ids.iter().find(|id| !stored.contains(id)).copied().unwrap_or_default();
    Err(StoreError::Conflict(format!("no stored event {missing}")))
}

async fn write_deal(tx: &mut Transaction<'_, Postgres>, deal: &Deal) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO deals (id, pipeline, stage, parent_id, responsible, doc, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8)
         ON CONFLICT (id) DO UPDATE SET pipeline = excluded.pipeline, stage = excluded.stage,
             parent_id = excluded.parent_id, responsible = excluded.responsible, doc = excluded.doc,
             updated_at = excluded.updated_at",
    )
    .bind(deal.id)
    .bind(&deal.pipeline)
    .bind(&deal.stage)
    .bind(deal.parent_id)
    .bind(&deal.responsible)
    .bind(to_doc("deal", deal)?)
    .bind(deal.created_at)
    .bind(deal.updated_at)
    .execute(&mut **tx)
    .await?;
    replace_refs(tx, DEAL_KIND, deal.id, &deal.external_refs).await
}

/// Replaces the external refs of one canonical record.
async fn replace_refs(
    tx: &mut Transaction<'_, Postgres>,
    kind: &str,
    id: Uuid,
    refs: &[ExternalRef],
) -> Result<(), StoreError> {
    delete_refs(tx, kind, &[id]).await?;
    insert_refs(tx, kind, id, refs).await
}

/// Removes every external ref of these canonical records (one statement).
pub(super) async fn delete_refs(
    tx: &mut Transaction<'_, Postgres>,
    kind: &str,
    ids: &[Uuid],
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM external_refs WHERE canonical_id = ANY($1) AND record_kind = $2")
        .bind(ids)
        .bind(kind)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Stores external refs of one canonical record; a ref another record
/// holds is a conflict naming it.
pub(super) async fn insert_refs(
    tx: &mut Transaction<'_, Postgres>,
    kind: &str,
    id: Uuid,
    refs: &[ExternalRef],
) -> Result<(), StoreError> {
    for r in refs {
        sqlx::query(
            "INSERT INTO external_refs (system, instance, record_kind, external_id, canonical_id)
             VALUES ($1, $2, $3, $4, $5)",
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

async fn write_task(tx: &mut Transaction<'_, Postgres>, task: &Task) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO tasks (id, deal_id, assignee, status, doc, created_at) VALUES ($1, $2, $3, $4, $5::jsonb, $6)
         ON CONFLICT (id) DO UPDATE SET deal_id = excluded.deal_id, assignee = excluded.assignee,
             status = excluded.status, doc = excluded.doc",
    )
    .bind(task.id)
    .bind(task.deal_id)
    .bind(&task.assignee)
    .bind(tag(&task.status)?)
    .bind(to_doc("task", task)?)
    .bind(task.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn write_timer(tx: &mut Transaction<'_, Postgres>, timer: &Timer) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO timers (id, deal_id, name, due_at, status, doc) VALUES ($1, $2, $3, $4, $5, $6::jsonb)
         ON CONFLICT (id) DO UPDATE SET deal_id = excluded.deal_id, name = excluded.name,
             due_at = excluded.due_at, status = excluded.status, doc = excluded.doc",
    )
    .bind(timer.id)
    .bind(timer.deal_id)
    .bind(&timer.name)
    .bind(timer.due_at)
    .bind(tag(&timer.status)?)
    .bind(to_doc("timer", timer)?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Queues a command unless one with its idempotency key is stored already.
async fn insert_command(tx: &mut Transaction<'_, Postgres>, command: &Command) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO outbox_commands (id, idempotency_key, connector, deal_id, cause_event, doc, created_at)
         VALUES ($1, $2, $3, $4, $5, $6::jsonb, now())
         ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .bind(command.id)
    .bind(&command.idempotency_key)
    .bind(&command.connector)
    .bind(command.deal)
    .bind(command.cause_event)
    .bind(to_doc("command", command)?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn append_trace(tx: &mut Transaction<'_, Postgres>, step: &TraceStep) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO trace_steps (deal_id, cause_event, at, doc) VALUES ($1, $2, $3, $4::jsonb)")
        .bind(step.deal)
        .bind(step.cause_event)
        .bind(step.at)
        .bind(to_doc("trace step", step)?)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn write_team_cursor(tx: &mut Transaction<'_, Postgres>, team: &str, position: u64) -> Result<(), StoreError> {
    let position = i64::try_from(position)
        .map_err(|_| StoreError::Database(format!("team `{team}` cursor {position} out of range")))?;
    sqlx::query(
        "INSERT INTO team_cursors (team, position) VALUES ($1, $2)
         ON CONFLICT (team) DO UPDATE SET position = excluded.position",
    )
    .bind(team)
    .bind(position)
    .execute(&mut **tx)
    .await?;
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

/// Writes a change set inside the caller's transaction (`apply`, and the
/// payment ledger that commits an import together with its engine output).
pub(super) async fn write_change_set(
    tx: &mut Transaction<'_, Postgres>,
    changes: &ChangeSet,
) -> Result<(), StoreError> {
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
        insert_command(tx, command).await?;
    }
    for step in &changes.trace {
        append_trace(tx, step).await?;
    }
    for (team, position) in &changes.team_cursors {
        write_team_cursor(tx, team, *position).await?;
    }
    record_outcomes(tx, &changes.event_outcomes).await
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("./migrations/postgres").run(&self.pool).await?;
        let filled = project_stored_invoices(&self.pool).await?;
        if filled > 0 {
            tracing::info!(invoices = filled, "filled the matching columns of stored invoices");
        }
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
             -- A repeat filtered here takes no sequence number: a gap in
             -- `seq` holds the event processor (see GAP_GRACE there).
             WHERE NOT EXISTS (SELECT 1 FROM inbox_events e
                               WHERE e.connector = u.connector AND e.delivery_key = u.delivery_key)
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
        write_change_set(&mut tx, changes).await?;
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

    async fn deals_by_ids(&self, ids: &[Uuid]) -> Result<Vec<Deal>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query("SELECT doc::text AS doc FROM deals WHERE id = ANY($1) ORDER BY id")
            .bind(ids)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(deal_from_row).collect()
    }

    async fn get_invoice(&self, id: Uuid) -> Result<Option<Invoice>, StoreError> {
        let sql = format!("SELECT {INVOICE_DOC} FROM {INVOICE_FROM} WHERE i.id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(|r| doc_from_row(r, "invoice")).transpose()
    }

    async fn invoices_of_deals(&self, deals: &[Uuid]) -> Result<Vec<Invoice>, StoreError> {
        if deals.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!("SELECT {INVOICE_DOC} FROM {INVOICE_FROM} WHERE i.deal_id = ANY($1) ORDER BY i.id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(deals).fetch_all(&self.pool).await?;
        rows.iter().map(|r| doc_from_row(r, "invoice")).collect()
    }

    async fn find_invoice(&self, external: &ExternalRef) -> Result<Option<Invoice>, StoreError> {
        let sql = format!(
            "SELECT {INVOICE_DOC} FROM external_refs r JOIN invoices i ON i.id = r.canonical_id
             WHERE r.system = $1 AND r.instance = $2 AND r.record_kind = $3 AND r.external_id = $4"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&external.system)
            .bind(&external.instance)
            .bind(INVOICE_KIND)
            .bind(&external.id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(|r| doc_from_row(r, "invoice")).transpose()
    }

    async fn get_task(&self, id: Uuid) -> Result<Option<Task>, StoreError> {
        let row =
            sqlx::query("SELECT doc::text AS doc FROM tasks WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(|r| doc_from_row(r, "task")).transpose()
    }

    async fn tasks_of_deals(&self, deals: &[Uuid], open_only: bool) -> Result<Vec<Task>, StoreError> {
        if deals.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT doc::text AS doc FROM tasks WHERE deal_id = ANY($1)
               AND (status = 'open' OR NOT $2::boolean) ORDER BY id",
        )
        .bind(deals)
        .bind(open_only)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| doc_from_row(r, "task")).collect()
    }

    async fn timers_of_deals(&self, deals: &[Uuid], pending_only: bool) -> Result<Vec<Timer>, StoreError> {
        if deals.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT doc::text AS doc FROM timers WHERE deal_id = ANY($1)
               AND (status = 'pending' OR NOT $2::boolean) ORDER BY id",
        )
        .bind(deals)
        .bind(pending_only)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| doc_from_row(r, "timer")).collect()
    }

    async fn due_timers(&self, at: DateTime<Utc>, limit: u32) -> Result<Vec<Timer>, StoreError> {
        let rows = sqlx::query(
            "SELECT doc::text AS doc FROM timers WHERE status = 'pending' AND due_at <= $1
             ORDER BY due_at, id LIMIT $2",
        )
        .bind(at)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| doc_from_row(r, "timer")).collect()
    }

    async fn team_cursors(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let rows = sqlx::query("SELECT team, position FROM team_cursors").fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((r.try_get("team")?, count(r.try_get("position")?)?))).collect()
    }

    async fn person_loads(&self, people: &[String]) -> Result<BTreeMap<String, u64>, StoreError> {
        if people.is_empty() {
            return Ok(BTreeMap::new());
        }
        let rows = sqlx::query(
            "SELECT p.person,
                    (SELECT COUNT(*) FROM tasks t WHERE t.assignee = p.person AND t.status = 'open')
                  + (SELECT COUNT(*) FROM deals d WHERE d.responsible = p.person) AS open_work
             FROM (SELECT DISTINCT person FROM UNNEST($1::text[]) AS u(person)) p",
        )
        .bind(people)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("person")?, count(r.try_get("open_work")?)?))).collect()
    }

    async fn trace_of_deal(&self, deal: Uuid) -> Result<Vec<TraceStep>, StoreError> {
        let rows = sqlx::query("SELECT doc::text AS doc FROM trace_steps WHERE deal_id = $1 ORDER BY seq")
            .bind(deal)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| doc_from_row(r, "trace step")).collect()
    }

    async fn commands_of_deal(&self, deal: Uuid) -> Result<Vec<Command>, StoreError> {
        let rows = sqlx::query("SELECT doc::text AS doc FROM outbox_commands WHERE deal_id = $1 ORDER BY seq")
            .bind(deal)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| doc_from_row(r, "command")).collect()
    }

    async fn trace_of_causes(&self, causes: &[Uuid]) -> Result<Vec<TraceStep>, StoreError> {
        if causes.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query("SELECT doc::text AS doc FROM trace_steps WHERE cause_event = ANY($1) ORDER BY seq")
            .bind(causes)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| doc_from_row(r, "trace step")).collect()
    }

    async fn commands_of_causes(&self, causes: &[Uuid]) -> Result<Vec<Command>, StoreError> {
        if causes.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query("SELECT doc::text AS doc FROM outbox_commands WHERE cause_event = ANY($1) ORDER BY seq")
            .bind(causes)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| doc_from_row(r, "command")).collect()
    }

    async fn pending_commands(&self, after_seq: i64, limit: u32) -> Result<Vec<(i64, Command)>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, doc::text AS doc FROM outbox_commands WHERE state = 'pending' AND seq > $1
             ORDER BY seq LIMIT $2",
        )
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("seq")?, doc_from_row(r, "command")?))).collect()
    }

    async fn mark_commands_published(&self, ids: &[Uuid]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "UPDATE outbox_commands SET state = 'published', published_at = now()
             WHERE state = 'pending' AND id = ANY($1)",
        )
        .bind(ids)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn bus_enqueue(&self, messages: &[QueuedMessage]) -> Result<(), StoreError> {
        if messages.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = messages.iter().map(|m| m.id).collect();
        let partitions: Vec<i32> = messages.iter().map(|m| partition_i32(m.partition)).collect::<Result<_, _>>()?;
        let keys: Vec<&str> = messages.iter().map(|m| m.key.as_str()).collect();
        let idem: Vec<&str> = messages.iter().map(|m| m.idempotency_key.as_str()).collect();
        let payloads: Vec<&[u8]> = messages.iter().map(|m| m.payload.as_slice()).collect();
        let visible: Vec<DateTime<Utc>> = messages.iter().map(|m| m.visible_at).collect();
        // One statement, so one batch is all or nothing; WITH ORDINALITY keeps
        // slice order in seq. An id still in the table (queued, handed out,
        // or acked and not yet removed) is the same command published again:
        // its first copy stays where it is.
        sqlx::query(
            "INSERT INTO bus_messages (id, partition, key, idempotency_key, payload, visible_at)
             SELECT id, partition, key, idempotency_key, payload, visible_at
             FROM UNNEST($1::uuid[], $2::int4[], $3::text[], $4::text[], $5::bytea[], $6::timestamptz[])
                  WITH ORDINALITY AS t(id, partition, key, idempotency_key, payload, visible_at, n)
             ORDER BY n
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&ids)
        .bind(&partitions)
        .bind(&keys)
        .bind(&idem)
        .bind(&payloads)
        .bind(&visible)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn bus_lease(
        &self,
        partition: u32,
        owner: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let held = bus_take_lease(&mut tx, partition, owner, until, now).await?;
        tx.commit().await?;
        Ok(held)
    }

    async fn bus_release(&self, partition: u32, owner: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM bus_leases WHERE partition = $1 AND owner = $2")
            .bind(partition_i32(partition)?)
            .bind(owner)
            .execute(&self.pool)
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
        // An idle partition is polled often: answer "empty" without a write.
        if acked.is_empty() {
            let visible: Option<i32> =
                sqlx::query_scalar("SELECT 1 FROM bus_messages WHERE partition = $1 AND visible_at <= $2 LIMIT 1")
                    .bind(partition_i32(partition)?)
                    .bind(now)
                    .fetch_optional(&self.pool)
                    .await?;
            if visible.is_none() {
                return Ok(Vec::new());
            }
        }
        let mut tx = self.pool.begin().await?;
        if !acked.is_empty() {
            sqlx::query("DELETE FROM bus_messages WHERE id = ANY($1)").bind(acked).execute(&mut *tx).await?;
        }
        if !bus_take_lease(&mut tx, partition, owner, until, now).await? {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "UPDATE bus_messages SET deliveries = deliveries + 1
             WHERE seq IN (SELECT seq FROM bus_messages WHERE partition = $1 AND visible_at <= $2
                           ORDER BY seq LIMIT $3)
             RETURNING seq, id, partition, key, idempotency_key, payload, visible_at, attempts, deliveries",
        )
        .bind(partition_i32(partition)?)
        .bind(now)
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
        sqlx::query("DELETE FROM bus_messages WHERE id = ANY($1)").bind(ids).execute(&self.pool).await?;
        Ok(())
    }

    async fn bus_dead_letter(&self, id: Uuid, reason: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query(
            "WITH gone AS (DELETE FROM bus_messages WHERE id = $1
                           RETURNING id, partition, key, idempotency_key, payload, attempts)
             INSERT INTO bus_dead (id, partition, key, idempotency_key, payload, attempts, reason, dead_at)
             SELECT id, partition, key, idempotency_key, payload, attempts, $2, $3 FROM gone",
        )
        .bind(id)
        .bind(reason)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn bus_retry(&self, id: Uuid, visible_at: DateTime<Utc>) -> Result<(), StoreError> {
        // A new row gets a new seq: the message goes to the back of its partition.
        sqlx::query(
            "WITH gone AS (DELETE FROM bus_messages WHERE id = $1
                           RETURNING id, partition, key, idempotency_key, payload, attempts)
             INSERT INTO bus_messages (id, partition, key, idempotency_key, payload, visible_at, attempts)
             SELECT id, partition, key, idempotency_key, payload, $2, attempts + 1 FROM gone",
        )
        .bind(id)
        .bind(visible_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn bus_dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, partition, key, idempotency_key, payload, dead_at AS visible_at, attempts, reason, dead_at
             FROM bus_dead ORDER BY seq LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DeadLetter {
                    message: queued_from_row(r)?,
                    attempts: small(r.try_get("attempts")?)?,
                    reason: r.try_get("reason")?,
                    dead_at: r.try_get("dead_at")?,
                })
            })
            .collect()
    }
}

/// Takes `partition`'s lease for `owner` when it is free, expired at `now`
/// or already `owner`'s; true when `owner` holds it afterwards. Concurrent
/// claimers serialize on the lease row.
async fn bus_take_lease(
    tx: &mut Transaction<'_, Postgres>,
    partition: u32,
    owner: &str,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let row = sqlx::query(
        "INSERT INTO bus_leases (partition, owner, expires_at) VALUES ($1, $2, $3)
         ON CONFLICT (partition) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
         WHERE bus_leases.owner = excluded.owner OR bus_leases.expires_at <= $4
         RETURNING owner",
    )
    .bind(partition_i32(partition)?)
    .bind(owner)
    .bind(until)
    .bind(now)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.is_some())
}

fn partition_i32(p: u32) -> Result<i32, StoreError> {
    i32::try_from(p).map_err(|_| StoreError::Config(format!("partition {p} out of range")))
}

fn queued_from_row(row: &PgRow) -> Result<QueuedMessage, StoreError> {
    let partition: i32 = row.try_get("partition")?;
    Ok(QueuedMessage {
        id: row.try_get("id")?,
        partition: u32::try_from(partition).map_err(|_| corrupt(format!("partition {partition}")))?,
        key: row.try_get("key")?,
        idempotency_key: row.try_get("idempotency_key")?,
        payload: row.try_get("payload")?,
        visible_at: row.try_get("visible_at")?,
    })
}

fn small(v: i32) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| corrupt(format!("count {v} out of range")))
}
