//! Source reads: what a connector's fetch step read for a stored event
//! before it was mapped (a Bitrix24 event names a deal by id; the deal is
//! read with `crm.deal.get`). The processor keeps each read under its
//! event's id, so `replay` maps what was read then and never reads the
//! source as it is now: a replay is deterministic.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::Row;
use uuid::Uuid;

use super::StoreError;
use super::postgres::PgStore;
use super::sqlite::{SqliteStore, from_micros, micros};
use crate::connector::{FetchedRecords, GoneRecord, SourceRecord};

#[async_trait]
pub trait SourceReads: Send + Sync {
    /// Keeps (or replaces) what was read for an event.
    async fn keep_source_read(
        &self,
        event_id: Uuid,
        read: &FetchedRecords,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// The reads kept for these events, by event id.
    async fn source_reads(&self, event_ids: &[Uuid]) -> Result<HashMap<Uuid, FetchedRecords>, StoreError>;
}

/// The stored JSON of a read (`read_at` has a column of its own).
fn to_doc(read: &FetchedRecords) -> Value {
    json!({
        "records": read.records.iter().map(|r| json!({ "kind": r.kind, "data": r.data })).collect::<Vec<_>>(),
        "gone": read.gone.iter().map(|g| json!({ "system": g.system, "id": g.id })).collect::<Vec<_>>(),
        "modified_by_hub": read.modified_by_hub,
    })
}

fn from_doc(doc: &Value, read_at: Option<DateTime<Utc>>) -> Result<FetchedRecords, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("source read: {what}"));
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned).ok_or_else(|| corrupt(key));
    let items = |key: &str| doc.get(key).and_then(Value::as_array).ok_or_else(|| corrupt(key));
    let records = items("records")?
        .iter()
        .map(|r| Ok(SourceRecord { kind: text(r, "kind")?, data: r.get("data").cloned().unwrap_or(Value::Null) }))
        .collect::<Result<_, StoreError>>()?;
    let gone = items("gone")?
        .iter()
        .map(|g| Ok(GoneRecord { system: text(g, "system")?, id: text(g, "id")? }))
        .collect::<Result<_, StoreError>>()?;
    let modified_by_hub = items("modified_by_hub")?
        .iter()
        .map(|i| i.as_u64().map(|i| i as usize).ok_or_else(|| corrupt("modified_by_hub")))
        .collect::<Result<_, StoreError>>()?;
    Ok(FetchedRecords { records, gone, read_at, modified_by_hub })
}

#[async_trait]
impl SourceReads for SqliteStore {
    async fn keep_source_read(
        &self,
        event_id: Uuid,
        read: &FetchedRecords,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO source_reads (event_id, doc, read_at, stored_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (event_id) DO UPDATE SET doc = excluded.doc, read_at = excluded.read_at, \
             stored_at = excluded.stored_at",
        )
        .bind(event_id.to_string())
        .bind(to_doc(read).to_string())
        .bind(read.read_at.map(micros))
        .bind(micros(at))
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn source_reads(&self, event_ids: &[Uuid]) -> Result<HashMap<Uuid, FetchedRecords>, StoreError> {
        let mut found = HashMap::new();
        for chunk in event_ids.chunks(1000) {
            let ids = Value::from(chunk.iter().map(Uuid::to_string).collect::<Vec<_>>()).to_string();
            let rows = sqlx::query(
                "SELECT event_id, doc, read_at FROM source_reads WHERE event_id IN (SELECT value FROM json_each(?))",
            )
            .bind(ids)
            .fetch_all(&self.reader)
            .await?;
            for row in rows {
                let id: String = row.try_get("event_id")?;
                let id = Uuid::parse_str(&id).map_err(|e| StoreError::Corrupt(format!("source read id: {e}")))?;
                let doc: String = row.try_get("doc")?;
                let doc: Value =
                    serde_json::from_str(&doc).map_err(|e| StoreError::Corrupt(format!("source read: {e}")))?;
                let read_at = row.try_get::<Option<i64>, _>("read_at")?.map(from_micros).transpose()?;
                found.insert(id, from_doc(&doc, read_at)?);
            }
        }
        Ok(found)
    }
}

#[async_trait]
impl SourceReads for PgStore {
    async fn keep_source_read(
        &self,
        event_id: Uuid,
        read: &FetchedRecords,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO source_reads (event_id, doc, read_at, stored_at) VALUES ($1, $2::jsonb, $3, $4) \
             ON CONFLICT (event_id) DO UPDATE SET doc = excluded.doc, read_at = excluded.read_at, \
             stored_at = excluded.stored_at",
        )
        .bind(event_id)
        .bind(to_doc(read).to_string())
        .bind(read.read_at)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn source_reads(&self, event_ids: &[Uuid]) -> Result<HashMap<Uuid, FetchedRecords>, StoreError> {
        if event_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = sqlx::query("SELECT event_id, doc::text AS doc, read_at FROM source_reads WHERE event_id = ANY($1)")
            .bind(event_ids)
            .fetch_all(&self.pool)
            .await?;
        let mut found = HashMap::new();
        for row in rows {
            let doc: String = row.try_get("doc")?;
            let doc: Value =
                serde_json::from_str(&doc).map_err(|e| StoreError::Corrupt(format!("source read: {e}")))?;
            found.insert(row.try_get("event_id")?, from_doc(&doc, row.try_get("read_at")?)?);
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, open};
    use crate::testing::{TestDatabase, pg_admin_url};

    /// A read kept, replaced by a later one, and found by its event only.
    async fn reads_are_kept_by_event(store: &dyn Store) {
        let (first, other) = (Uuid::now_v7(), Uuid::now_v7());
        let at: DateTime<Utc> = "2026-01-01T07:00:00.123456Z".parse().unwrap();
        let mut read = FetchedRecords {
            records: vec![SourceRecord { kind: "deal".into(), data: json!({"ID": "410", "STAGE_ID": "NEW"}) }],
            read_at: Some(at),
            ..Default::default()
        };
        store.keep_source_read(first, &read, at).await.unwrap();
        read.records[0].data["STAGE_ID"] = json!("UC_EVALUATE");
        read.gone.push(GoneRecord { system: "bitrix24".into(), id: "411".into() });
        store.keep_source_read(first, &read, at).await.unwrap();
        let found = store.source_reads(&[first, other]).await.unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[&first], read);
        assert!(store.source_reads(&[]).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn reads_are_kept_by_event_in_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&format!("sqlite://{}", dir.path().join("hub.db").display()), 2).await.unwrap();
        store.migrate().await.unwrap();
        reads_are_kept_by_event(&*store).await;
    }

    #[tokio::test]
    async fn reads_are_kept_by_event_in_postgres() {
        let Some(admin) = pg_admin_url("reads_are_kept_by_event_in_postgres") else { return };
        let db = TestDatabase::create(&admin).await;
        let store = open(&db.url, 2).await.unwrap();
        store.migrate().await.unwrap();
        reads_are_kept_by_event(&*store).await;
        drop(store);
        db.drop_db().await;
    }

    #[test]
    fn a_read_round_trips_through_its_document() {
        let read = FetchedRecords {
            records: vec![SourceRecord { kind: "deal".into(), data: json!({"ID": "410", "STAGE_ID": "UC_EVALUATE"}) }],
            gone: vec![GoneRecord { system: "bitrix24".into(), id: "411".into() }],
            read_at: Some("2026-01-01T07:00:00Z".parse().unwrap()),
            modified_by_hub: vec![0],
        };
        assert_eq!(from_doc(&to_doc(&read), read.read_at).unwrap(), read);
        assert!(from_doc(&json!({"records": "x"}), None).is_err());
    }
}
