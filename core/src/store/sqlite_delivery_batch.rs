//! A partition worker's batch of admissions and settlements on SQLite: two
//! reads to admit the whole batch, one write transaction to settle it.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Row, Sqlite, Transaction};

use super::StoreError;
use super::deliveries::{Admission, Admitted, DeliveryState, Settlement, decide_admissions};
use super::error::corrupt;
use super::sqlite::{SqliteStore, micros, parse_uuid};
use super::sqlite_deliveries::{IMMEDIATE, OCCUPYING, link_created, settle_in};

/// Rows per multi-row statement: 13 values each stays far below SQLite's
/// limit of bound variables.
const CHUNK: usize = 500;

pub(super) async fn admit_all(
    store: &SqliteStore,
    admissions: &[Admission],
    now: DateTime<Utc>,
) -> Result<Vec<Admitted>, StoreError> {
    if admissions.is_empty() {
        return Ok(Vec::new());
    }
    // As in `delivery_admit`, the lock-free answer holds for free lanes:
    // only this partition's consumer adds rows to them.
    let mut known = HashMap::new();
    let mut busy = HashSet::new();
    for chunk in admissions.chunks(CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new("SELECT command_id, state FROM deliveries WHERE command_id IN (");
        let mut list = q.separated(", ");
        for a in chunk {
            list.push_bind(a.command_id.to_string());
        }
        q.push(")");
        for row in q.build().fetch_all(&store.reader).await? {
            let state: String = row.try_get("state")?;
            let state = DeliveryState::parse(&state).ok_or_else(|| corrupt(format!("delivery state `{state}`")))?;
            known.insert(parse_uuid(row.try_get("command_id")?)?, state);
        }
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "SELECT DISTINCT lane FROM deliveries WHERE state IN {OCCUPYING} AND lane IN ("
        ));
        let mut list = q.separated(", ");
        for a in chunk {
            list.push_bind(a.lane.as_str());
        }
        q.push(")");
        for row in q.build().fetch_all(&store.reader).await? {
            busy.insert(row.try_get::<String, _>("lane")?);
        }
    }
    decide_admissions(store, admissions, &known, &busy, now).await
}

pub(super) async fn settle_all(store: &SqliteStore, settlements: &[Settlement]) -> Result<(), StoreError> {
    if settlements.is_empty() {
        return Ok(());
    }
    let mut tx = store.writer.begin_with(IMMEDIATE).await?;
    if any_exists(&mut tx, settlements).await? {
        for s in settlements {
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

async fn any_exists(tx: &mut Transaction<'_, Sqlite>, settlements: &[Settlement]) -> Result<bool, StoreError> {
    for chunk in settlements.chunks(CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new("SELECT 1 FROM deliveries WHERE command_id IN (");
        let mut list = q.separated(", ");
        for s in chunk {
            list.push_bind(s.admission.command_id.to_string());
        }
        q.push(") LIMIT 1");
        if q.build().fetch_optional(&mut **tx).await?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Commands seen for the first time (straight off the bus): plain
/// multi-row inserts, in slice order so `seq` keeps each lane's order.
async fn insert_fresh(tx: &mut Transaction<'_, Sqlite>, settlements: &[Settlement]) -> Result<(), StoreError> {
    for chunk in settlements.chunks(CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO deliveries (command_id, lane, deal_id, connector, state, attempts, round_attempts, due_at,
                                     last_class, last_error, outcome, created_at, updated_at) ",
        );
        q.push_values(chunk, |mut row, s| {
            row.push_bind(s.admission.command_id.to_string())
                .push_bind(s.admission.lane.clone())
                .push_bind(s.admission.deal_id.map(|d| d.to_string()))
                .push_bind(s.admission.connector.clone())
                .push_bind(s.state.as_str())
                .push_bind(i64::from(s.attempts))
                .push_bind(i64::from(s.round_attempts))
                .push_bind(s.due_at.map(micros))
                .push_bind(s.last_class.clone())
                .push_bind(s.last_error.clone())
                .push_bind(s.outcome.clone())
                .push_bind(micros(s.at))
                .push_bind(micros(s.at));
        });
        q.build().execute(&mut **tx).await?;
        let attempts: Vec<_> = chunk.iter().filter_map(|s| s.attempt.as_ref()).collect();
        if attempts.is_empty() {
            continue;
        }
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO delivery_attempts (command_id, deal_id, attempt, at, outcome, class, error, latency_us) ",
        );
        q.push_values(attempts, |mut row, a| {
            row.push_bind(a.command_id.to_string())
                .push_bind(a.deal_id.map(|d| d.to_string()))
                .push_bind(i64::from(a.attempt))
                .push_bind(micros(a.at))
                .push_bind(a.outcome.clone())
                .push_bind(a.class.clone())
                .push_bind(a.error.clone())
                .push_bind(i64::try_from(a.latency_us).unwrap_or(i64::MAX));
        });
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}
