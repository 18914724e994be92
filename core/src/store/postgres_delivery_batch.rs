//! A partition worker's batch of admissions and settlements on PostgreSQL:
//! two reads to admit the whole batch, and one transaction of a few
//! statements to settle it, instead of a few round trips per command.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::{Postgres, QueryBuilder, Row, Transaction};
use uuid::Uuid;

use super::StoreError;
use super::deliveries::{Admission, Admitted, Settlement, decide_admissions};
use super::postgres::PgStore;
use super::postgres_deliveries::{OCCUPYING, int, link_created, parse_state, settle_in};

/// Rows per multi-row statement: 13 values each stays far below
/// PostgreSQL's 65,535 bound parameters.
const CHUNK: usize = 1_000;

pub(super) async fn admit_all(
    store: &PgStore,
    admissions: &[Admission],
    now: DateTime<Utc>,
) -> Result<Vec<Admitted>, StoreError> {
    if admissions.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = admissions.iter().map(|a| a.command_id).collect();
    let lanes: Vec<&str> = admissions.iter().map(|a| a.lane.as_str()).collect();
    // As in `delivery_admit`, the lock-free answer holds for free lanes:
    // only this partition's consumer adds rows to them.
    let mut known = HashMap::new();
    for row in sqlx::query("SELECT command_id, state FROM deliveries WHERE command_id = ANY($1)")
        .bind(&ids)
        .fetch_all(&store.pool)
        .await?
    {
        known.insert(row.try_get::<Uuid, _>("command_id")?, parse_state(row.try_get("state")?)?);
    }
    let busy: HashSet<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT DISTINCT lane FROM deliveries WHERE lane = ANY($1) AND state IN {OCCUPYING}"
    )))
    .bind(&lanes)
    .fetch_all(&store.pool)
    .await?
    .into_iter()
    .collect();
    decide_admissions(store, admissions, &known, &busy, now).await
}

pub(super) async fn settle_all(store: &PgStore, settlements: &[Settlement]) -> Result<(), StoreError> {
    if settlements.is_empty() {
        return Ok(());
    }
    let mut tx = store.pool.begin().await?;
    lock_lanes(&mut tx, settlements).await?;
    let ids: Vec<Uuid> = settlements.iter().map(|s| s.admission.command_id).collect();
    let existing: Option<i32> = sqlx::query_scalar("SELECT 1 FROM deliveries WHERE command_id = ANY($1) LIMIT 1")
        .bind(&ids)
        .fetch_optional(&mut *tx)
        .await?;
    if existing.is_some() {
        for s in settlements {
            // Advisory locks nest: taking a lane's lock again is free.
            settle_in(&mut tx, s, None).await?;
        }
    } else {
        insert_fresh(&mut tx, settlements).await?;
        for s in settlements.iter().filter(|s| s.created.is_some()) {
            link_created(&mut tx, s).await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Takes every lane's lock in one statement, in sorted order, so two
/// batches sharing lanes cannot deadlock.
async fn lock_lanes(tx: &mut Transaction<'_, Postgres>, settlements: &[Settlement]) -> Result<(), StoreError> {
    let mut lanes: Vec<&str> = settlements.iter().map(|s| s.admission.lane.as_str()).collect();
    lanes.sort_unstable();
    lanes.dedup();
    // `unnest` yields the array in order; the locks are taken row by row.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended(lane, 7140)) FROM unnest($1::text[]) AS lane")
        .bind(&lanes)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Commands seen for the first time (straight off the bus): plain
/// multi-row inserts, in slice order so `seq` keeps each lane's order.
async fn insert_fresh(tx: &mut Transaction<'_, Postgres>, settlements: &[Settlement]) -> Result<(), StoreError> {
    for chunk in settlements.chunks(CHUNK) {
        let mut q = QueryBuilder::<Postgres>::new(
            "INSERT INTO deliveries (command_id, lane, deal_id, connector, state, attempts, round_attempts, due_at,
                                     last_class, last_error, outcome, created_at, updated_at) ",
        );
        q.push_values(chunk, |mut row, s| {
            row.push_bind(s.admission.command_id)
                .push_bind(s.admission.lane.clone())
                .push_bind(s.admission.deal_id)
                .push_bind(s.admission.connector.clone())
                .push_bind(s.state.as_str())
                .push_bind(int(s.attempts))
                .push_bind(int(s.round_attempts))
                .push_bind(s.due_at)
                .push_bind(s.last_class.clone())
                .push_bind(s.last_error.clone())
                .push_bind(s.outcome.clone())
                .push_bind(s.at)
                .push_bind(s.at);
        });
        q.build().execute(&mut **tx).await?;
        let attempts: Vec<_> = chunk.iter().filter_map(|s| s.attempt.as_ref()).collect();
        if attempts.is_empty() {
            continue;
        }
        let mut q = QueryBuilder::<Postgres>::new(
            "INSERT INTO delivery_attempts (command_id, deal_id, attempt, at, outcome, class, error, latency_us) ",
        );
        q.push_values(attempts, |mut row, a| {
            row.push_bind(a.command_id)
                .push_bind(a.deal_id)
                .push_bind(int(a.attempt))
                .push_bind(a.at)
                .push_bind(a.outcome.clone())
                .push_bind(a.class.clone())
                .push_bind(a.error.clone())
                .push_bind(i64::try_from(a.latency_us).unwrap_or(i64::MAX));
        });
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}
