//! The ids a connected system gives the hub's deals: what a connector's
//! check for deletions whose events were lost asks the source about (a
//! Bitrix24 portal says which of them it still has).

use async_trait::async_trait;
use sqlx::Row;

use super::StoreError;
use super::postgres::PgStore;
use super::sqlite::SqliteStore;

/// `record_kind` of a deal's external refs (as the deal writers store them).
const DEAL_KIND: &str = "deal";

#[async_trait]
pub trait DealRefs: Send + Sync {
    /// The external ids of every deal referenced in `system` / `instance`,
    /// in id order (deals the source deleted included: their refs stay).
    async fn deal_ids_in(&self, system: &str, instance: &str) -> Result<Vec<String>, StoreError>;
}

#[async_trait]
impl DealRefs for SqliteStore {
    async fn deal_ids_in(&self, system: &str, instance: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT external_id FROM external_refs WHERE system = ? AND instance = ? AND record_kind = ? \
             ORDER BY external_id",
        )
        .bind(system)
        .bind(instance)
        .bind(DEAL_KIND)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("external_id")?)).collect()
    }
}

#[async_trait]
impl DealRefs for PgStore {
    async fn deal_ids_in(&self, system: &str, instance: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT external_id FROM external_refs WHERE system = $1 AND instance = $2 AND record_kind = $3 \
             ORDER BY external_id",
        )
        .bind(system)
        .bind(instance)
        .bind(DEAL_KIND)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("external_id")?)).collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{Deal, ExternalRef};
    use crate::store::{ChangeSet, Store, open};
    use crate::testing::{TestDatabase, pg_admin_url};

    async fn ids_of_one_instance(store: &dyn Store) {
        let at = chrono::Utc::now();
        let mut deals = Vec::new();
        for (system, instance, id) in
            [("bitrix24", "b24", "12"), ("bitrix24", "b24", "7"), ("bitrix24", "other", "9"), ("amocrm", "b24", "3")]
        {
            let mut deal = Deal::new("sales", "new", at, "test");
            deal.external_refs.push(ExternalRef::new(system, instance, id));
            deals.push(deal);
        }
        store.apply(&ChangeSet { deals, ..Default::default() }).await.unwrap();
        assert_eq!(store.deal_ids_in("bitrix24", "b24").await.unwrap(), ["12", "7"]);
        assert!(store.deal_ids_in("bitrix24", "none").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn ids_of_one_instance_in_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&format!("sqlite://{}", dir.path().join("hub.db").display()), 2).await.unwrap();
        store.migrate().await.unwrap();
        ids_of_one_instance(&*store).await;
    }

    #[tokio::test]
    async fn ids_of_one_instance_in_postgres() {
        let Some(admin) = pg_admin_url("ids_of_one_instance_in_postgres") else { return };
        let db = TestDatabase::create(&admin).await;
        let store = open(&db.url, 2).await.unwrap();
        store.migrate().await.unwrap();
        ids_of_one_instance(&*store).await;
        drop(store);
        db.drop_db().await;
    }
}
