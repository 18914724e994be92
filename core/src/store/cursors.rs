//! Source cursors: where a connector's reconciliation pass goes on from
//! (e.g. the last modification time a Bitrix24 catch-up saw). One small
//! table, a value per name, opaque to the store, kept across restarts and
//! shared by hub replicas.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;

use super::StoreError;
use super::postgres::PgStore;
use super::sqlite::{SqliteStore, micros};

#[async_trait]
pub trait SourceCursors: Send + Sync {
    /// The cursor stored under `name`, if any.
    async fn source_cursor(&self, name: &str) -> Result<Option<String>, StoreError>;

    /// Stores (or replaces) the cursor under `name`.
    async fn set_source_cursor(&self, name: &str, value: &str, at: DateTime<Utc>) -> Result<(), StoreError>;
}

#[async_trait]
impl SourceCursors for SqliteStore {
    async fn source_cursor(&self, name: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT value FROM source_cursors WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.map(|r| r.try_get("value")).transpose()?)
    }

    async fn set_source_cursor(&self, name: &str, value: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO source_cursors (name, value, updated_at) VALUES (?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(value)
        .bind(micros(at))
        .execute(&self.writer)
        .await?;
        Ok(())
    }
}

#[async_trait]
impl SourceCursors for PgStore {
    async fn source_cursor(&self, name: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT value FROM source_cursors WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("value")).transpose()?)
    }

    async fn set_source_cursor(&self, name: &str, value: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO source_cursors (name, value, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(value)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    async fn round_trip(store: &dyn Store) {
        assert_eq!(store.source_cursor("b24:deals").await.unwrap(), None);
        store.set_source_cursor("b24:deals", "2026-01-01T10:00:00+03:00|0", Utc::now()).await.unwrap();
        store.set_source_cursor("b24:deals", "2026-01-01T11:00:00+03:00|7", Utc::now()).await.unwrap();
        store.set_source_cursor("other", "x", Utc::now()).await.unwrap();
        let value = store.source_cursor("b24:deals").await.unwrap();
        assert_eq!(value.as_deref(), Some("2026-01-01T11:00:00+03:00|7"));
    }

    #[tokio::test]
    async fn cursors_are_kept_per_name_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&format!("sqlite://{}/hub.db", dir.path().display()), 2).await.unwrap();
        store.migrate().await.unwrap();
        round_trip(&store).await;
    }

    #[tokio::test]
    async fn cursors_are_kept_per_name_on_postgres() {
        let Some(admin) = crate::testing::pg_admin_url("source_cursors") else { return };
        let db = crate::testing::TestDatabase::create(&admin).await;
        let store = PgStore::connect(&db.url, 2).await.unwrap();
        store.migrate().await.unwrap();
        round_trip(&store).await;
        drop(store);
        db.drop_db().await;
    }
}
