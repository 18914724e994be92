//! `DeliveryLog` on PostgreSQL. Every transaction that moves a lane first
//! takes a transaction-level advisory lock on the lane's name, so replicas
//! (and one replica's consumer and resumer) never interleave on one lane;
//! claiming due heads skips rows another replica has locked.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use super::StoreError;
use super::deliveries::{
    AdminRefusal, Admission, Admitted, AttemptRecord, DeliveryLog, DeliveryRecord, DeliveryState, Lease, Settlement,
};
use super::doc::to_doc;
use super::error::corrupt;
use super::postgres::{PgStore, deal_from_row, doc_from_row};

const RECORD_COLUMNS: &str = "d.lane, d.state, d.attempts, d.round_attempts, d.due_at, d.last_class, d.last_error, \
                              d.outcome, d.created_at, d.updated_at, c.doc::text AS doc";
const FROM_JOINED: &str = "FROM deliveries d JOIN outbox_commands c ON c.id = d.command_id";
pub(super) const OCCUPYING: &str = "('waiting', 'parked', 'held')";

pub(super) fn parse_state(text: &str) -> Result<DeliveryState, StoreError> {
    DeliveryState::parse(text).ok_or_else(|| corrupt(format!("delivery state `{text}`")))
}

fn record_from_row(row: &PgRow) -> Result<DeliveryRecord, StoreError> {
    Ok(DeliveryRecord {
        command: doc_from_row(row, "command")?,
        lane: row.try_get("lane")?,
        state: parse_state(row.try_get("state")?)?,
        attempts: small(row.try_get("attempts")?)?,
        round_attempts: small(row.try_get("round_attempts")?)?,
        due_at: row.try_get("due_at")?,
        last_class: row.try_get("last_class")?,
        last_error: row.try_get("last_error")?,
        outcome: row.try_get("outcome")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn attempt_from_row(row: &PgRow) -> Result<AttemptRecord, StoreError> {
    let latency: i64 = row.try_get("latency_us")?;
    Ok(AttemptRecord {
        command_id: row.try_get("command_id")?,
        deal_id: row.try_get("deal_id")?,
        attempt: small(row.try_get("attempt")?)?,
        at: row.try_get("at")?,
        outcome: row.try_get("outcome")?,
        class: row.try_get("class")?,
        error: row.try_get("error")?,
        latency_us: u64::try_from(latency).map_err(|_| corrupt(format!("negative latency {latency}")))?,
    })
}

fn small(v: i32) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| corrupt(format!("count {v} out of range")))
}

pub(super) fn int(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

async fn lock_lane(tx: &mut Transaction<'_, Postgres>, lane: &str) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7140))").bind(lane).execute(&mut **tx).await?;
    Ok(())
}

async fn state_of(tx: &mut Transaction<'_, Postgres>, command_id: Uuid) -> Result<Option<DeliveryState>, StoreError> {
    let state: Option<String> = sqlx::query_scalar("SELECT state FROM deliveries WHERE command_id = $1")
        .bind(command_id)
        .fetch_optional(&mut **tx)
        .await?;
    state.as_deref().map(parse_state).transpose()
}

async fn lane_occupied(
    tx: &mut Transaction<'_, Postgres>,
    lane: &str,
    except: Option<Uuid>,
) -> Result<bool, StoreError> {
    let found: Option<i32> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT 1 FROM deliveries WHERE lane = $1 AND state IN {OCCUPYING} AND command_id IS DISTINCT FROM $2 LIMIT 1"
    )))
    .bind(lane)
    .bind(except)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(found.is_some())
}

async fn record_in(tx: &mut Transaction<'_, Postgres>, command_id: Uuid) -> Result<Option<DeliveryRecord>, StoreError> {
    sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {RECORD_COLUMNS} {FROM_JOINED} WHERE d.command_id = $1")))
        .bind(command_id)
        .fetch_optional(&mut **tx)
        .await?
        .as_ref()
        .map(record_from_row)
        .transpose()
}

/// Makes the lane's first held command its head, due at `now`, unless the
/// lane still has a head. The caller holds the lane's lock.
async fn promote_next(
    tx: &mut Transaction<'_, Postgres>,
    lane: &str,
    now: DateTime<Utc>,
    lease: Option<&Lease>,
) -> Result<Option<DeliveryRecord>, StoreError> {
    let has_head: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM deliveries WHERE lane = $1 AND state IN ('waiting', 'parked') LIMIT 1")
            .bind(lane)
            .fetch_optional(&mut **tx)
            .await?;
    if has_head.is_some() {
        return Ok(None);
    }
    let next: Option<Uuid> = sqlx::query_scalar(
        "UPDATE deliveries SET state = 'waiting', due_at = $1, lease_owner = $2, lease_until = $3, updated_at = $1
         WHERE seq = (SELECT seq FROM deliveries WHERE lane = $4 AND state = 'held' ORDER BY seq LIMIT 1)
         RETURNING command_id",
    )
    .bind(now)
    .bind(lease.map(|l| l.owner.as_str()))
    .bind(lease.map(|l| l.until))
    .bind(lane)
    .fetch_optional(&mut **tx)
    .await?;
    match next {
        Some(id) => record_in(tx, id).await,
        None => Ok(None),
    }
}

async fn insert_attempt(tx: &mut Transaction<'_, Postgres>, a: &AttemptRecord) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO delivery_attempts (command_id, deal_id, attempt, at, outcome, class, error, latency_us)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(a.command_id)
    .bind(a.deal_id)
    .bind(int(a.attempt))
    .bind(a.at)
    .bind(&a.outcome)
    .bind(&a.class)
    .bind(&a.error)
    .bind(i64::try_from(a.latency_us).unwrap_or(i64::MAX))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Puts a final command back into its lane under a fresh seq (behind the
/// lane's last command when the lane is occupied).
async fn reenter(
    tx: &mut Transaction<'_, Postgres>,
    record: &DeliveryRecord,
    behind_others: bool,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let id = record.command.id;
    sqlx::query("DELETE FROM deliveries WHERE command_id = $1").bind(id).execute(&mut **tx).await?;
    sqlx::query(
        "INSERT INTO deliveries (command_id, lane, deal_id, connector, state, attempts, round_attempts, due_at,
                                 last_class, last_error, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8, $9, $10, $11)",
    )
    .bind(id)
    .bind(&record.lane)
    .bind(record.command.deal)
    .bind(&record.command.connector)
    .bind(if behind_others { "held" } else { "waiting" })
    .bind(int(record.attempts))
    .bind(if behind_others { None } else { Some(now) })
    .bind(&record.last_class)
    .bind(&record.last_error)
    .bind(record.created_at)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Links the record a done command created to the command's deal: an
/// external ref in `external_refs` and in the deal's document, so the
/// target's events about it find the deal. A ref that already belongs to
/// another deal is left there (and logged): the settlement still counts.
pub(super) async fn link_created(tx: &mut Transaction<'_, Postgres>, s: &Settlement) -> Result<(), StoreError> {
    let (Some(created), Some(deal_id), DeliveryState::Done) = (&s.created, s.admission.deal_id, s.state) else {
        return Ok(());
    };
    let row = sqlx::query("SELECT doc::text AS doc FROM deals WHERE id = $1 FOR UPDATE")
        .bind(deal_id)
        .fetch_optional(&mut **tx)
        .await?;
    let Some(row) = row else {
        tracing::warn!(deal = %deal_id, external = %created.id, "The deal of a created record is gone; not linked.");
        return Ok(());
    };
    // `DO UPDATE` (a no-op) rather than `DO NOTHING`, so the row comes back
    // either way and says whose it is; a unique violation would abort the
    // whole transaction.
    let owner: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO external_refs (system, instance, record_kind, external_id, canonical_id)
         VALUES ($1, $2, 'deal', $3, $4)
         ON CONFLICT (system, instance, record_kind, external_id)
         DO UPDATE SET canonical_id = external_refs.canonical_id RETURNING canonical_id",
    )
    .bind(&created.system)
    .bind(&created.instance)
    .bind(&created.id)
    .bind(deal_id)
    .fetch_optional(&mut **tx)
    .await?;
    if owner != Some(deal_id) {
        tracing::warn!(deal = %deal_id, external = %created.id, owner = ?owner, "A created record's id already belongs to another deal; not linked.");
        return Ok(());
    }
    let mut deal = deal_from_row(&row)?;
    if !deal.external_refs.iter().any(|r| r.same_record(created)) {
        deal.external_refs.push(created.clone());
        sqlx::query("UPDATE deals SET doc = $1::jsonb WHERE id = $2")
            .bind(to_doc("deal", &deal)?)
            .bind(deal_id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Writes one settlement inside `tx`, under its lane's lock (see
/// `DeliveryLog::delivery_settle`).
pub(super) async fn settle_in(
    tx: &mut Transaction<'_, Postgres>,
    s: &Settlement,
    next_lease: Option<&Lease>,
) -> Result<Option<DeliveryRecord>, StoreError> {
    lock_lane(tx, &s.admission.lane).await?;
    let before = state_of(tx, s.admission.command_id).await?;
    sqlx::query(
        "INSERT INTO deliveries (command_id, lane, deal_id, connector, state, attempts, round_attempts, due_at,
                                     last_class, last_error, outcome, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)
             ON CONFLICT (command_id) DO UPDATE SET
                 state = excluded.state, attempts = excluded.attempts, round_attempts = excluded.round_attempts,
                 due_at = excluded.due_at, last_class = excluded.last_class, last_error = excluded.last_error,
                 outcome = excluded.outcome, lease_owner = NULL, lease_until = NULL, updated_at = excluded.updated_at",
    )
    .bind(s.admission.command_id)
    .bind(&s.admission.lane)
    .bind(s.admission.deal_id)
    .bind(&s.admission.connector)
    .bind(s.state.as_str())
    .bind(int(s.attempts))
    .bind(int(s.round_attempts))
    .bind(s.due_at)
    .bind(&s.last_class)
    .bind(&s.last_error)
    .bind(&s.outcome)
    .bind(s.at)
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

impl PgStore {
    /// A transaction holding the lock of the command's lane, with the
    /// command's row as it stands under that lock.
    async fn locked_lane_of(
        &self,
        command_id: Uuid,
    ) -> Result<Option<(Transaction<'static, Postgres>, DeliveryRecord)>, StoreError> {
        let Some(found) = self.delivery(command_id).await? else { return Ok(None) };
        let mut tx = self.pool.begin().await?;
        lock_lane(&mut tx, &found.lane).await?;
        Ok(record_in(&mut tx, command_id).await?.map(|record| (tx, record)))
    }
}

#[async_trait]
impl DeliveryLog for PgStore {
    async fn delivery_admit(&self, admission: &Admission, now: DateTime<Utc>) -> Result<Admitted, StoreError> {
        // Most commands find their lane free: answer that without a lock.
        // Only this partition's consumer adds rows to a free lane, so
        // "free" cannot change under it.
        let known: Option<String> = sqlx::query_scalar("SELECT state FROM deliveries WHERE command_id = $1")
            .bind(admission.command_id)
            .fetch_optional(&self.pool)
            .await?;
        if let Some(state) = known {
            return Ok(Admitted::Known(parse_state(&state)?));
        }
        let busy: Option<i32> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT 1 FROM deliveries WHERE lane = $1 AND state IN {OCCUPYING} LIMIT 1"
        )))
        .bind(&admission.lane)
        .fetch_optional(&self.pool)
        .await?;
        if busy.is_none() {
            return Ok(Admitted::Free);
        }
        let mut tx = self.pool.begin().await?;
        lock_lane(&mut tx, &admission.lane).await?;
        // The head may have finished meanwhile: decide again under the lock.
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
             VALUES ($1, $2, $3, $4, 'held', $5, $5)",
        )
        .bind(admission.command_id)
        .bind(&admission.lane)
        .bind(admission.deal_id)
        .bind(&admission.connector)
        .bind(now)
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
        let mut tx = self.pool.begin().await?;
        let next = settle_in(&mut tx, s, next_lease).await?;
        tx.commit().await?;
        Ok(next)
    }

    async fn delivery_admit_all(
        &self,
        admissions: &[Admission],
        now: DateTime<Utc>,
    ) -> Result<Vec<Admitted>, StoreError> {
        super::postgres_delivery_batch::admit_all(self, admissions, now).await
    }

    async fn delivery_settle_all(&self, settlements: &[Settlement]) -> Result<(), StoreError> {
        super::postgres_delivery_batch::settle_all(self, settlements).await
    }

    async fn delivery_claim_due(
        &self,
        lease: &Lease,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "UPDATE deliveries SET lease_owner = $1, lease_until = $2
             WHERE seq IN (SELECT seq FROM deliveries
                           WHERE state = 'waiting' AND due_at <= $3 AND (lease_until IS NULL OR lease_until < $3)
                           ORDER BY due_at LIMIT $4 FOR UPDATE SKIP LOCKED)
             RETURNING command_id",
        )
        .bind(&lease.owner)
        .bind(lease.until)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RECORD_COLUMNS} {FROM_JOINED} WHERE d.command_id = ANY($1) ORDER BY d.due_at"
        )))
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(record_from_row).collect()
    }

    async fn delivery_defer(
        &self,
        command_id: Uuid,
        due_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE deliveries SET due_at = $1, lease_owner = NULL, lease_until = NULL, updated_at = $2
             WHERE command_id = $3 AND state = 'waiting'",
        )
        .bind(due_at)
        .bind(now)
        .bind(command_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn delivery(&self, command_id: Uuid) -> Result<Option<DeliveryRecord>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {RECORD_COLUMNS} {FROM_JOINED} WHERE d.command_id = $1")))
            .bind(command_id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(record_from_row)
            .transpose()
    }

    async fn deliveries_in_state(&self, state: DeliveryState, limit: u32) -> Result<Vec<DeliveryRecord>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RECORD_COLUMNS} {FROM_JOINED} WHERE d.state = $1 ORDER BY d.seq LIMIT $2"
        )))
        .bind(state.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(record_from_row)
        .collect()
    }

    async fn deliveries_of_deal(&self, deal: Uuid) -> Result<Vec<DeliveryRecord>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RECORD_COLUMNS} {FROM_JOINED} WHERE d.deal_id = $1 ORDER BY d.seq"
        )))
        .bind(deal)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(record_from_row)
        .collect()
    }

    async fn attempts_of_deal(&self, deal: Uuid) -> Result<Vec<AttemptRecord>, StoreError> {
        sqlx::query("SELECT * FROM delivery_attempts WHERE deal_id = $1 ORDER BY seq")
            .bind(deal)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(attempt_from_row)
            .collect()
    }

    async fn unpublished_commands(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox_commands WHERE state = 'pending'")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn bus_depth(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM bus_messages").fetch_one(&self.pool).await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn delivery_counts(&self) -> Result<BTreeMap<DeliveryState, u64>, StoreError> {
        let rows =
            sqlx::query("SELECT state, count(*) AS n FROM deliveries GROUP BY state").fetch_all(&self.pool).await?;
        let mut counts: BTreeMap<DeliveryState, u64> = DeliveryState::ALL.into_iter().map(|s| (s, 0)).collect();
        for row in rows {
            let n: i64 = row.try_get("n")?;
            counts.insert(parse_state(row.try_get("state")?)?, u64::try_from(n).unwrap_or(0));
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
        match record.state {
            DeliveryState::Parked => {
                sqlx::query(
                    "UPDATE deliveries SET state = 'waiting', due_at = $1, round_attempts = 0, lease_owner = NULL,
                     lease_until = NULL, updated_at = $1 WHERE command_id = $2",
                )
                .bind(now)
                .bind(command_id)
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
             updated_at = $1 WHERE command_id = $2",
        )
        .bind(now)
        .bind(command_id)
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
