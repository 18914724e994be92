//! Stopping the hub as an orchestrator does (SIGTERM): in-flight requests
//! finish, and a client that stalls cannot keep the hub from exiting.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::support::*;

#[tokio::test]
async fn a_stalled_client_cannot_keep_the_hub_from_stopping() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &StoreKind::Sqlite, "");
    let hub = TestHub::start(dir.path(), &StoreKind::Sqlite).await;

    // A well-behaved webhook is stored…
    let event = accepted_id(hub.post_signed("http", "msg_before_stop", r#"{"type":"x","data":{}}"#).await).await;
    // …and a client announces 1000 bytes, sends 10 and goes silent.
    let mut stalled = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    let head = "POST /hooks/http HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n";
    stalled.write_all(head.as_bytes()).await.unwrap();
    stalled.write_all(b"{\"type\":\"x").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    let stopped = tokio::time::timeout(Duration::from_secs(30), hub.stop()).await;
    assert!(stopped.is_ok(), "the hub hung on shutdown");
    // Grace for in-flight requests (5 s in the test config) plus at most one more for the inbox.
    assert!(started.elapsed() < Duration::from_secs(12), "took {:?}", started.elapsed());
    drop(stalled);

    let hub = TestHub::start(dir.path(), &StoreKind::Sqlite).await;
    let stored = hub.get_with_token(&format!("/api/v1/events/{event}"), Some(VIEWER)).await;
    assert_eq!(stored.status(), 200, "what was acknowledged before the stop is still there");
    hub.stop().await;
}
