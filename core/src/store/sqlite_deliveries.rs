//! `DeliveryLog` on SQLite. Lane moves need no extra lock here: every write
//! goes through the store's single writer connection, so two transactions
//! on one lane never interleave.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, Transaction};
use uuid::Uuid;

use super::StoreError;
use super::deliveries::{
    AdminRefusal, Admission, Admitted, AttemptRecord, DeliveryLog, DeliveryRecord, DeliveryState, Lease, Settlement,
};
use super::doc::to_doc;
use super::error::corrupt;
use super::sqlite::{SqliteStore, deal_from_row, doc_from_row, from_micros, micros, parse_uuid};

const RECORD_COLUMNS: &str = "d.lane, d.state, d.attempts, d.round_attempts, d.due_at, d.last_class, d.last_error, \
                              d.outcome, d.created_at, d.updated_at, c.doc";
pub(super) const OCCUPYING: &str = "('waiting', 'parked', 'held')";
/// Takes the write lock at the start: these transactions read, then write,
/// and an admin command (`dealbridge deliveries`) may write from another
/// process, so a deferred transaction could fail to upgrade (`SQLITE_BUSY`)
/// instead of waiting its turn.
pub(super) const IMMEDIATE: &str = "BEGIN IMMEDIATE";

fn record_from_row(row: &SqliteRow) -> Result<DeliveryRecord, StoreError> {
    let state: String = row.try_get("state")?;
    let due: Option<i64> = row.try_get("due_at")?;
    Ok(DeliveryRecord {
        command: doc_from_row(row, "command")?,
        lane: row.try_get("lane")?,
        state: DeliveryState::parse(&state).ok_or_else(|| corrupt(format!("delivery state `{state}`")))?,
        attempts: small(row.try_get("attempts")?)?,
        round_attempts: small(row.try_get("round_attempts")?)?,
        due_at: due.map(from_micros).transpose()?,
        last_class: row.try_get("last_class")?,
        last_error: row.try_get("last_error")?,
        outcome: row.try_get("outcome")?,
        created_at: from_micros(row.try_get("created_at")?)?,
        updated_at: from_micros(row.try_get("updated_at")?)?,
    })
}

fn attempt_from_row(row: &SqliteRow) -> Result<AttemptRecord, StoreError> {
    let deal: Option<String> = row.try_get("deal_id")?;
    let latency: i64 = row.try_get("latency_us")?;
    Ok(AttemptRecord {
        command_id: parse_uuid(row.try_get("command_id")?)?,
        deal_id: deal.as_deref().map(parse_uuid).transpose()?,
        attempt: small(row.try_get("attempt")?)?,
        at: from_micros(row.try_get("at")?)?,
        outcome: row.try_get("outcome")?,
        class: row.try_get("class")?,
        error: row.try_get("error")?,
        latency_us: u64::try_from(latency).map_err(|_| corrupt(format!("negative latency {latency}")))?,
    })
}

fn small(v: i64) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| corrupt(format!("count {v} out of range")))
}

async fn state_of(tx: &mut Transaction<'_, Sqlite>, command_id: Uuid) -> Result<Option<DeliveryState>, StoreError> {
    let state: Option<String> = sqlx::query_scalar("SELECT state FROM deliveries WHERE command_id = ?")
        .bind(command_id.to_string())
        .fetch_optional(&mut **tx)
        .await?;
    state.map(|s| DeliveryState::parse(&s).ok_or_else(|| corrupt(format!("delivery state `{s}`")))).transpose()
}

async fn lane_occupied(tx: &mut Transaction<'_, Sqlite>, lane: &str, except: Option<Uuid>) -> Result<bool, StoreError> {
    let found: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT 1 FROM deliveries WHERE lane = ? AND state IN {OCCUPYING} AND command_id IS NOT ? LIMIT 1"
    )))
    .bind(lane)
    .bind(except.map(|id| id.to_string()))
    .fetch_optional(&mut **tx)
    .await?;
    Ok(found.is_some())
}

async fn record_in(tx: &mut Transaction<'_, Sqlite>, command_id: Uuid) -> Result<Option<DeliveryRecord>, StoreError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {RECORD_COLUMNS} FROM deliveries d JOIN outbox_commands c ON c.id = d.command_id WHERE d.command_id = ?"
    )))
    .bind(command_id.to_string())
    .fetch_optional(&mut **tx)
    .await?
    .as_ref()
    .map(record_from_row)
    .transpose()
}

/// Makes the lane's first held command its head, due at `now`, unless the
/// lane still has a head.
async fn promote_next(
    tx: &mut Transaction<'_, Sqlite>,
    lane: &str,
    now: DateTime<Utc>,
    lease: Option<&Lease>,
) -> Result<Option<DeliveryRecord>, StoreError> {
    let has_head: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM deliveries WHERE lane = ? AND state IN ('waiting', 'parked') LIMIT 1")
            .bind(lane)
            .fetch_optional(&mut **tx)
            .await?;
    if has_head.is_some() {
        return Ok(None);
    }
    let next: Option<String> = sqlx::query_scalar(
        "UPDATE deliveries SET state = 'waiting', due_at = ?, lease_owner = ?, lease_until = ?, updated_at = ?
         WHERE seq = (SELECT seq FROM deliveries WHERE lane = ? AND state = 'held' ORDER BY seq LIMIT 1)
         RETURNING command_id",
    )
    .bind(micros(now))
    .bind(lease.map(|l| l.owner.as_str()))
    .bind(lease.map(|l| micros(l.until)))
    .bind(micros(now))
    .bind(lane)
    .fetch_optional(&mut **tx)
    .await?;
    match next {
        Some(id) => record_in(tx, parse_uuid(&id)?).await,
        None => Ok(None),
    }
}

async fn insert_attempt(tx: &mut Transaction<'_, Sqlite>, a: &AttemptRecord) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO delivery_attempts (command_id, deal_id, attempt, at, outcome, class, error, latency_us)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(a.command_id.to_string())
    .bind(a.deal_id.map(|d| d.to_string()))
    .bind(i64::from(a.attempt))
    .bind(micros(a.at))
    .bind(&a.outcome)
    .bind(&a.class)
    .bind(&a.error)
    .bind(i64::try_from(a.latency_us).unwrap_or(i64::MAX))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Links the record a done command created to the command's deal: an
/// external ref in `external_refs` and in the deal's document, so the
/// target's events about it find the deal. A ref that already belongs to
/// another deal is left there (and logged): the settlement still counts.
pub(super) async fn link_created(tx: &mut Transaction<'_, Sqlite>, s: &Settlement) -> Result<(), StoreError> {
    let (Some(created), Some(deal_id), DeliveryState::Done) = (&s.created, s.admission.deal_id, s.state) else {
        return Ok(());
    };
    let id = deal_id.to_string();
    let Some(row) = sqlx::query("SELECT doc FROM deals WHERE id = ?").bind(&id).fetch_optional(&mut **tx).await? else {
        tracing::warn!(deal = %deal_id, external = %created.id, "The deal of a created record is gone; not linked.");
        return Ok(());
    };
    let owner: Option<String> = sqlx::query_scalar(
        "INSERT INTO external_refs (system, instance, record_kind, external_id, canonical_id)
         VALUES (?, ?, 'deal', ?, ?)
         ON CONFLICT (system, instance, record_kind, external_id)
         DO UPDATE SET canonical_id = canonical_id RETURNING canonical_id",
    )
    .bind(&created.system)
    .bind(&created.instance)
    .bind(&created.id)
    .bind(&id)
    .fetch_optional(&mut **tx)
    .await?;
    if owner.as_deref() != Some(id.as_str()) {
        tracing::warn!(deal = %deal_id, external = %created.id, owner = ?owner, "A created record's id already belongs to another deal; not linked.");
        return Ok(());
    }
    let mut deal = deal_from_row(&row)?;
    if !deal.external_refs.iter().any(|r| r.same_record(created)) {
        deal.external_refs.push(created.clone());
        sqlx::query("UPDATE deals SET doc = ? WHERE id = ?")
            .bind(to_doc("deal", &deal)?)
            .bind(&id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Writes one settlement inside `tx` (see `DeliveryLog::delivery_settle`).
pub(super) async fn settle_in(
    tx: &mut Transaction<'_, Sqlite>,
    s: &Settlement,
    next_lease: Option<&Lease>,
) -> Result<Option<DeliveryRecord>, StoreError> {
    let before = state_of(tx, s.admission.command_id).await?;
    sqlx::query(
        "INSERT INTO deliveries (command_id, lane, deal_id, connector, state, attempts, round_attempts, due_at,
                                     last_class, last_error, outcome, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (command_id) DO UPDATE SET
                 state = excluded.state, attempts = excluded.attempts, round_attempts = excluded.round_attempts,
                 due_at = excluded.due_at, last_class = excluded.last_class, last_error = excluded.last_error,
                 outcome = excluded.outcome, lease_owner = NULL, lease_until = NULL, updated_at = excluded.updated_at",
    )
    .bind(s.admission.command_id.to_string())
    .bind(&s.admission.lane)
    .bind(s.admission.deal_id.map(|d| d.to_string()))
    .bind(&s.admission.connector)
    .bind(s.state.as_str())
    .bind(i64::from(s.attempts))
    .bind(i64::from(s.round_attempts))
    .bind(s.due_at.map(micros))
    .bind(&s.last_class)
    .bind(&s.last_error)
    .bind(&s.outcome)
    .bind(micros(s.at))
    .bind(micros(s.at))
    .execute(&mut **tx)
    .await?;
    if let Some(attempt) = &s.attempt {
        insert_attempt(tx, attempt).await?;
    }
    // A command performed straight from the bus had no row: nothing can
    // be held behind it.
    let next = if s.state.is_final() && before.is_some_and(DeliveryState::occupies_lane) {
        promote_next(tx, &s.admission.lane, s.at, next_lease).await?
    } else {
        None
    };
    Ok(next)
}

impl SqliteStore {
    /// A write transaction (the single writer serialises every lane), with
    /// the command's row as it stands in it.
    async fn locked_lane_of(
        &self,
        command_id: Uuid,
    ) -> Result<Option<(Transaction<'static, Sqlite>, DeliveryRecord)>, StoreError> {
        let mut tx = self.writer.begin_with(IMMEDIATE).await?;
        Ok(record_in(&mut tx, command_id).await?.map(|record| (tx, record)))
    }
}

#[async_trait]
impl DeliveryLog for SqliteStore {
    async fn delivery_admit(&self, admission: &Admission, now: DateTime<Utc>) -> Result<Admitted, StoreError> {
        // Most commands find their lane free: answer that from a reader
        // without queueing on the writer. Only this partition's consumer adds
        // rows to a free lane, so "free" cannot change under it.
        let id = admission.command_id.to_string();
        let known: Option<String> = sqlx::query_scalar("SELECT state FROM deliveries WHERE command_id = ?")
            .bind(&id)
            .fetch_optional(&self.reader)
            .await?;
        if let Some(state) = known {
            return Ok(Admitted::Known(
                DeliveryState::parse(&state).ok_or_else(|| corrupt(format!("delivery state `{state}`")))?,
            ));
        }
        let busy: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT 1 FROM deliveries WHERE lane = ? AND state IN {OCCUPYING} LIMIT 1"
        )))
        .bind(&admission.lane)
        .fetch_optional(&self.reader)
        .await?;
        if busy.is_none() {
            return Ok(Admitted::Free);
        }
        let mut tx = self.writer.begin_with(IMMEDIATE).await?;
        // The head may have finished meanwhile: decide again under the writer.
        if let Some(state) = state_of(&mut tx, admission.command_id).await? {
            tx.commit().await?;
            return Ok(Admitted::Known(state));
        }
        if !lane_occupied(&mut tx, &admission.lane, None).await? {
            tx.commit().await?;
            return Ok(Admitted::Free);
        }
        sqlx::query(
            "INSERT INTO deliveries (command_id, lane, deal_id, connector, state, created_at, updated_at)
             VALUES (?, ?, ?, ?, 'held', ?, ?)",
        )
        .bind(&id)
        .bind(&admission.lane)
        .bind(admission.deal_id.map(|d| d.to_string()))
        .bind(&admission.connector)
        .bind(micros(now))
        .bind(micros(now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Admitted::Held)
    }

    async fn delivery_settle(
        &self,
        s: &Settlement,
        next_lease: Option<&Lease>,
    ) -> Result<Option<DeliveryRecord>, StoreError> {
        let mut tx = self.writer.begin_with(IMMEDIATE).await?;
        let next = settle_in(&mut tx, s, next_lease).await?;
        tx.commit().await?;
        Ok(next)
    }

    async fn delivery_admit_all(
        &self,
        admissions: &[Admission],
        now: DateTime<Utc>,
    ) -> Result<Vec<Admitted>, StoreError> {
        super::sqlite_delivery_batch::admit_all(self, admissions, now).await
    }

    async fn delivery_settle_all(&self, settlements: &[Settlement]) -> Result<(), StoreError> {
        super::sqlite_delivery_batch::settle_all(self, settlements).await
    }

    async fn delivery_claim_due(
        &self,
        lease: &Lease,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let mut tx = self.writer.begin_with(IMMEDIATE).await?;
        let ids: Vec<String> = sqlx::query_scalar(
            "UPDATE deliveries SET lease_owner = ?, lease_until = ?
             WHERE seq IN (SELECT seq FROM deliveries
                           WHERE state = 'waiting' AND due_at <= ? AND (lease_until IS NULL OR lease_until < ?)
                           ORDER BY due_at LIMIT ?)
             RETURNING command_id",
        )
        .bind(&lease.owner)
        .bind(micros(lease.until))
        .bind(micros(now))
        .bind(micros(now))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(record) = record_in(&mut tx, parse_uuid(&id)?).await? {
                out.push(record);
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn delivery_defer(
        &self,
        command_id: Uuid,
        due_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE deliveries SET due_at = ?, lease_owner = NULL, lease_until = NULL, updated_at = ?
             WHERE command_id = ? AND state = 'waiting'",
        )
        .bind(micros(due_at))
        .bind(micros(now))
        .bind(command_id.to_string())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn delivery(&self, command_id: Uuid) -> Result<Option<DeliveryRecord>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RECORD_COLUMNS} FROM deliveries d JOIN outbox_commands c ON c.id = d.command_id
             WHERE d.command_id = ?"
        )))
        .bind(command_id.to_string())
        .fetch_optional(&self.reader)
        .await?
        .as_ref()
        .map(record_from_row)
        .transpose()
    }

    async fn deliveries_in_state(&self, state: DeliveryState, limit: u32) -> Result<Vec<DeliveryRecord>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RECORD_COLUMNS} FROM deliveries d JOIN outbox_commands c ON c.id = d.command_id
             WHERE d.state = ? ORDER BY d.seq LIMIT ?"
        )))
        .bind(state.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?
        .iter()
        .map(record_from_row)
        .collect()
    }

    async fn deliveries_of_deal(&self, deal: Uuid) -> Result<Vec<DeliveryRecord>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RECORD_COLUMNS} FROM deliveries d JOIN outbox_commands c ON c.id = d.command_id
             WHERE d.deal_id = ? ORDER BY d.seq"
        )))
        .bind(deal.to_string())
        .fetch_all(&self.reader)
        .await?
        .iter()
        .map(record_from_row)
        .collect()
    }

    async fn attempts_of_deal(&self, deal: Uuid) -> Result<Vec<AttemptRecord>, StoreError> {
        sqlx::query("SELECT * FROM delivery_attempts WHERE deal_id = ? ORDER BY seq")
            .bind(deal.to_string())
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(attempt_from_row)
            .collect()
    }

    async fn unpublished_commands(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox_commands WHERE state = 'pending'")
            .fetch_one(&self.reader)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn bus_depth(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM bus_messages").fetch_one(&self.reader).await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn delivery_counts(&self) -> Result<BTreeMap<DeliveryState, u64>, StoreError> {
        let rows =
            sqlx::query("SELECT state, count(*) AS n FROM deliveries GROUP BY state").fetch_all(&self.reader).await?;
        let mut counts: BTreeMap<DeliveryState, u64> = DeliveryState::ALL.into_iter().map(|s| (s, 0)).collect();
        for row in rows {
            let state: String = row.try_get("state")?;
            let n: i64 = row.try_get("n")?;
            let state = DeliveryState::parse(&state).ok_or_else(|| corrupt(format!("delivery state `{state}`")))?;
            counts.insert(state, u64::try_from(n).unwrap_or(0));
        }
        Ok(counts)
    }

    async fn delivery_retry(
        &self,
        command_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Result<DeliveryRecord, AdminRefusal>, StoreError> {
        let Some((mut tx, record)) = self.locked_lane_of(command_id).await? else {
            return Ok(Err(AdminRefusal::NotFound));
        };
        let id = command_id.to_string();
        match record.state {
            DeliveryState::Parked => {
                sqlx::query(
                    "UPDATE deliveries SET state = 'waiting', due_at = ?, round_attempts = 0, lease_owner = NULL,
                     lease_until = NULL, updated_at = ? WHERE command_id = ?",
                )
                .bind(micros(now))
                .bind(micros(now))
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            }
            DeliveryState::Dead | DeliveryState::Discarded => {
                let busy = lane_occupied(&mut tx, &record.lane, Some(command_id)).await?;
                reenter(&mut tx, &record, busy, now).await?;
            }
            other => return Ok(Err(AdminRefusal::WrongState(other))),
        }
        let updated = record_in(&mut tx, command_id).await?.ok_or_else(|| corrupt("retried delivery vanished"))?;
        tx.commit().await?;
        Ok(Ok(updated))
    }

    async fn delivery_discard(
        &self,
        command_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Result<DeliveryRecord, AdminRefusal>, StoreError> {
        let Some((mut tx, record)) = self.locked_lane_of(command_id).await? else {
            return Ok(Err(AdminRefusal::NotFound));
        };
        if !(record.state.occupies_lane() || record.state == DeliveryState::Dead) {
            return Ok(Err(AdminRefusal::WrongState(record.state)));
        }
        sqlx::query(
            "UPDATE deliveries SET state = 'discarded', due_at = NULL, lease_owner = NULL, lease_until = NULL,
             updated_at = ? WHERE command_id = ?",
        )
        .bind(micros(now))
        .bind(command_id.to_string())
        .execute(&mut *tx)
        .await?;
        if matches!(record.state, DeliveryState::Waiting | DeliveryState::Parked) {
            promote_next(&mut tx, &record.lane, now, None).await?;
        }
        let updated = record_in(&mut tx, command_id).await?.ok_or_else(|| corrupt("discarded delivery vanished"))?;
        tx.commit().await?;
        Ok(Ok(updated))
    }
}

/// Puts a final command back into its lane under a fresh seq.
async fn reenter(
    tx: &mut Transaction<'_, Sqlite>,
    record: &DeliveryRecord,
    behind_others: bool,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let id = record.command.id.to_string();
    let created: i64 = sqlx::query_scalar("DELETE FROM deliveries WHERE command_id = ? RETURNING created_at")
        .bind(&id)
        .fetch_one(&mut **tx)
        .await?;
    sqlx::query(
        "INSERT INTO deliveries (command_id, lane, deal_id, connector, state, attempts, round_attempts, due_at,
                                 last_class, last_error, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?)",
    )
    .bind(&id)
    .bind(&record.lane)
    .bind(record.command.deal.map(|d| d.to_string()))
    .bind(&record.command.connector)
    .bind(if behind_others { "held" } else { "waiting" })
    .bind(i64::from(record.attempts))
    .bind(if behind_others { None } else { Some(micros(now)) })
    .bind(&record.last_class)
    .bind(&record.last_error)
    .bind(created)
    .bind(micros(now))
    .execute(&mut **tx)
    .await?;
    Ok(())
}
