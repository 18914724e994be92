//! The webhook inbox as a sender and an admin see it: signed posts are
//! stored durably once, survive restarts, and every refusal says why.

use serde_json::Value;

use crate::support::*;

/// The first-run story from the issue: post, read back with a viewer token,
/// restart, read again; a repeated webhook-id is stored once.
async fn a_signed_webhook_is_stored_once_and_survives_a_restart(store: StoreKind) {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &store, "");
    let hub = TestHub::start(dir.path(), &store).await;

    assert_eq!(hub.get_with_token("/healthz", None).await.status(), 200);
    let body = r#"{"deal": {"id": 42, "stage": "Оценить"}}"#;
    let first = accepted_id(hub.post_signed("http", "msg_2f9a", body).await).await;
    let again = hub.post_signed("http", "msg_2f9a", body).await;
    assert_eq!(again.status(), 202);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["event_id"], first.as_str(), "a repeated delivery is answered with the original id");
    assert_eq!(again["duplicate"], true);
    hub.stop().await;

    let hub = TestHub::start(dir.path(), &store).await;
    let path = format!("/api/v1/events/{first}");
    assert_eq!(hub.get_with_token(&path, None).await.status(), 401);
    let stored = hub.get_with_token(&path, Some(VIEWER)).await;
    assert_eq!(stored.status(), 200);
    let stored: Value = stored.json().await.unwrap();
    assert_eq!(stored["connector"], "http");
    assert_eq!(stored["delivery_key"], "msg_2f9a");
    assert_eq!(stored["body"], body);
    assert_eq!(stored["body_encoding"], "utf8");
    assert_eq!(stored["headers"]["webhook-id"], "msg_2f9a");
    // Kept whatever became of it: this payload has no `type`, so processing
    // marks it failed (with the reason) rather than dropping it.
    let state = stored["processing"]["state"].as_str().unwrap();
    assert!(["pending", "failed"].contains(&state), "{stored}");
    assert!(stored["headers"].get("webhook-signature").is_none(), "only the kept headers are stored");
    hub.stop().await;
}

#[tokio::test]
async fn a_signed_webhook_is_stored_once_and_survives_a_restart_on_sqlite() {
    a_signed_webhook_is_stored_once_and_survives_a_restart(StoreKind::Sqlite).await;
}

#[tokio::test]
async fn a_signed_webhook_is_stored_once_and_survives_a_restart_on_postgres() {
    let Some((store, db)) = postgres("inbox_on_postgres").await else { return };
    a_signed_webhook_is_stored_once_and_survives_a_restart(store).await;
    db.drop_db().await;
}

#[tokio::test]
async fn refusals_store_nothing_and_say_why() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &StoreKind::Sqlite, "");
    let hub = TestHub::start(dir.path(), &StoreKind::Sqlite).await;

    // A bad signature: 401, nothing stored.
    let mut headers = signed_headers("msg_bad", "{}");
    headers[2].1 = format!("v1,{}", b64(&[0u8; 32]));
    let mut req = hub.client.post(hub.url("/hooks/http")).body("{}");
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let refused = req.send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let reason: Value = refused.json().await.unwrap();
    assert_eq!(reason["error"], "unauthorized");

    // Unsigned: 401 naming the missing header.
    let unsigned = hub.client.post(hub.url("/hooks/http")).body("{}").send().await.unwrap();
    assert_eq!(unsigned.status(), 401);
    assert!(unsigned.text().await.unwrap().contains("webhook-id"));

    // Unknown connector: 404.
    assert_eq!(hub.post_signed("nosuch", "m1", "{}").await.status(), 404);

    // Too large (the test config allows 64 KiB): 413.
    let big = "x".repeat(70_000);
    assert_eq!(hub.post_signed("http", "m-big", &big).await.status(), 413);

    // The same id that was refused above is still free: nothing was stored.
    let ok: Value = hub.post_signed("http", "msg_bad", "{}").await.json().await.unwrap();
    assert_eq!(ok["duplicate"], false);
    hub.stop().await;
}

#[tokio::test]
async fn a_store_that_is_gone_gets_503_never_202() {
    let Some((store, db)) = postgres("store_down_is_503").await else { return };
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &store, "");
    let hub = TestHub::start(dir.path(), &store).await;
    accepted_id(hub.post_signed("http", "before", "{}").await).await;

    db.drop_db().await;
    let answer = hub.post_signed("http", "after", "{}").await;
    assert_eq!(answer.status(), 503);
    assert!(answer.headers().contains_key("retry-after"));
    assert_eq!(hub.get_with_token("/readyz", None).await.status(), 503);
    hub.stop().await;
}

#[tokio::test]
async fn metrics_count_ingest_by_connector_and_outcome() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &StoreKind::Sqlite, "");
    let hub = TestHub::start(dir.path(), &StoreKind::Sqlite).await;
    accepted_id(hub.post_signed("http", "metrics-1", "{}").await).await;
    hub.post_signed("http", "metrics-1", "{}").await;
    let text = hub.get_with_token("/metrics", None).await.text().await.unwrap();
    assert!(text.contains(r#"dealbridge_ingest_total{connector="http",outcome="accepted"}"#), "{text}");
    assert!(text.contains(r#"dealbridge_ingest_total{connector="http",outcome="duplicate"}"#));
    assert!(text.contains("dealbridge_ingest_duration_seconds_bucket"));
    hub.stop().await;
}
