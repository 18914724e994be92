//! The admin API is closed by default: bearer tokens with roles, and an
//! OpenAPI document generated from the handlers.

use serde_json::Value;

use crate::support::*;

async fn hub() -> (TestHub, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &StoreKind::Sqlite, "");
    (TestHub::start(dir.path(), &StoreKind::Sqlite).await, dir)
}

#[tokio::test]
async fn everything_under_api_needs_a_known_token() {
    let (hub, _dir) = hub().await;
    let id = accepted_id(hub.post_signed("http", "sec-1", "{}").await).await;
    let path = format!("/api/v1/events/{id}");

    for token in [None, Some("not-a-configured-token-at-all")] {
        let r = hub.get_with_token(&path, token).await;
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
    }
    // Unknown API paths do not reveal themselves to anonymous callers.
    assert_eq!(hub.get_with_token("/api/v1/nothing-here", None).await.status(), 401);
    assert_eq!(hub.get_with_token("/api/v1/nothing-here", Some(ADMIN)).await.status(), 404);

    assert_eq!(hub.get_with_token(&path, Some(VIEWER)).await.status(), 200);
    assert_eq!(hub.get_with_token(&path, Some(ADMIN)).await.status(), 200);
    assert_eq!(hub.get_with_token(&path, Some(ACCOUNTANT)).await.status(), 403, "accountants see payments only");
    let missing = format!("/api/v1/events/{}", uuid::Uuid::now_v7());
    assert_eq!(hub.get_with_token(&missing, Some(VIEWER)).await.status(), 404);
    hub.stop().await;
}

#[tokio::test]
async fn the_openapi_document_describes_the_served_routes() {
    let (hub, _dir) = hub().await;
    assert_eq!(hub.get_with_token("/api/v1/openapi.json", None).await.status(), 401);
    let doc: Value = hub.get_with_token("/api/v1/openapi.json", Some(VIEWER)).await.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for p in ["/hooks/{connector}", "/api/v1/events/{id}", "/api/v1/deals/{id}", "/api/v1/openapi.json"] {
        assert!(paths.contains_key(p), "missing {p} in {:?}", paths.keys().collect::<Vec<_>>());
    }
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    hub.stop().await;
}

#[tokio::test]
async fn metrics_can_require_a_token() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &StoreKind::Sqlite, "");
    let config = dir.path().join("dealbridge.toml");
    let text =
        std::fs::read_to_string(&config).unwrap().replace("[server]\n", "[server]\nmetrics_require_token = true\n");
    std::fs::write(&config, text).unwrap();
    let hub = TestHub::start(dir.path(), &StoreKind::Sqlite).await;
    assert_eq!(hub.get_with_token("/metrics", None).await.status(), 401);
    assert_eq!(hub.get_with_token("/metrics", Some(VIEWER)).await.status(), 200);
    assert_eq!(hub.get_with_token("/healthz", None).await.status(), 200);
    hub.stop().await;
}

#[tokio::test]
async fn deals_are_readable_with_their_children() {
    use dealbridge_core::model::{Deal, ExternalRef};
    use dealbridge_core::store::ChangeSet;

    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &StoreKind::Sqlite, "");
    let hub = TestHub::start(dir.path(), &StoreKind::Sqlite).await;
    let store =
        dealbridge_core::store::open(&format!("sqlite://{}", dir.path().join("data/dealbridge.db").display()), 2)
            .await
            .unwrap();
    let now = chrono::Utc::now();
    let mut parent = Deal::new("sales", "calculation", now, "system:test");
    parent.external_refs.push(ExternalRef::new("bitrix24", "main", "101"));
    let mut child = Deal::new("engineering", "new", now, "flow:engineer-calculation");
    child.parent_id = Some(parent.id);
    store.apply(&ChangeSet { deals: vec![parent.clone(), child.clone()], ..Default::default() }).await.unwrap();

    let path = format!("/api/v1/deals/{}", parent.id);
    assert_eq!(hub.get_with_token(&path, None).await.status(), 401);
    let view: Value = hub.get_with_token(&path, Some(VIEWER)).await.json().await.unwrap();
    assert_eq!(view["stage"], "calculation");
    assert_eq!(view["external_refs"][0]["id"], "101");
    assert_eq!(view["stage_history"][0]["stage"], "calculation");
    assert_eq!(view["children"][0]["id"], child.id.to_string());
    assert_eq!(view["children"][0]["stage_history"][0]["actor"], "flow:engineer-calculation");
    hub.stop().await;
}
