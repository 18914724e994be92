//! The roll of hub replicas sharing one store: each replica renews a
//! heartbeat row, and the live rows tell every replica who its peers are,
//! so they can split the bus partitions between them without a
//! coordinator (see `delivery::sharing`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;

use super::StoreError;
use super::postgres::PgStore;
use super::sqlite::{SqliteStore, micros};

#[async_trait]
pub trait ReplicaRoll: Send + Sync {
    /// In one transaction: records that `replica` lives until `until`,
    /// forgets replicas whose heartbeat ran out before `now`, and returns
    /// the live replicas' ids, sorted.
    async fn replica_heartbeat(
        &self,
        replica: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError>;

    /// Takes `replica` off the roll (a clean shutdown), so its peers take
    /// its share at their next heartbeat instead of after it runs out.
    async fn replica_leave(&self, replica: &str) -> Result<(), StoreError>;
}

#[async_trait]
impl ReplicaRoll for SqliteStore {
    async fn replica_heartbeat(
        &self,
        replica: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self.writer.begin().await?;
        sqlx::query("DELETE FROM hub_replicas WHERE heartbeat_until < ? AND id <> ?")
            .bind(micros(now))
            .bind(replica)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO hub_replicas (id, heartbeat_until, started_at) VALUES (?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET heartbeat_until = excluded.heartbeat_until",
        )
        .bind(replica)
        .bind(micros(until))
        .bind(micros(now))
        .execute(&mut *tx)
        .await?;
        let live = sqlx::query("SELECT id FROM hub_replicas ORDER BY id").fetch_all(&mut *tx).await?;
        tx.commit().await?;
        live.iter().map(|r| r.try_get::<String, _>("id").map_err(StoreError::from)).collect()
    }

    async fn replica_leave(&self, replica: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM hub_replicas WHERE id = ?").bind(replica).execute(&self.writer).await?;
        Ok(())
    }
}

#[async_trait]
impl ReplicaRoll for PgStore {
    async fn replica_heartbeat(
        &self,
        replica: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM hub_replicas WHERE heartbeat_until < $1 AND id <> $2")
            .bind(now)
            .bind(replica)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO hub_replicas (id, heartbeat_until, started_at) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET heartbeat_until = excluded.heartbeat_until",
        )
        .bind(replica)
        .bind(until)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let live: Vec<String> =
            sqlx::query_scalar("SELECT id FROM hub_replicas ORDER BY id COLLATE \"C\"").fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok(live)
    }

    async fn replica_leave(&self, replica: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM hub_replicas WHERE id = $1").bind(replica).execute(&self.pool).await?;
        Ok(())
    }
}
