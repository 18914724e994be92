//! One conformance suite for every store backend.
//!
//! Each scenario is a plain async fn taking `&dyn Store`; the macro at the
//! bottom runs all of them on SQLite (always) and on PostgreSQL (when the
//! test server is configured, mandatory in CI).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::*;
use crate::model::{Deal, ExternalRef};
use crate::testing::{TestDatabase, pg_admin_url};

fn now_micros() -> DateTime<Utc> {
    DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap()
}

fn event(connector: &str, key: Option<&str>, body: &[u8]) -> NewRawEvent {
    NewRawEvent {
        id: Uuid::now_v7(),
        connector: connector.into(),
        delivery_key: key.map(str::to_owned),
        received_at: now_micros(),
        headers: vec![("content-type".into(), "application/json".into()), ("webhook-id".into(), "k".into())],
        body: body.to_vec(),
    }
}

async fn a_stored_event_reads_back_exactly(store: &dyn Store) {
    let e = event("http", Some("msg-1"), b"\x00\xff{\"binary\":true}");
    let appended = store.append_events(std::slice::from_ref(&e)).await.unwrap();
    assert_eq!(appended, vec![Appended { id: e.id, duplicate: false }]);
    let got = store.get_event(e.id).await.unwrap().expect("stored");
    assert_eq!((got.id, got.connector.as_str(), got.delivery_key.as_deref()), (e.id, "http", Some("msg-1")));
    assert_eq!(got.body, e.body);
    assert_eq!(got.received_at, e.received_at);
    assert_eq!(got.headers.len(), 2);
    assert!(got.headers.contains(&("content-type".into(), "application/json".into())));
    assert_eq!(got.state, EventState::Pending);
    assert!(store.get_event(Uuid::now_v7()).await.unwrap().is_none());
}

async fn a_repeated_delivery_is_stored_once_with_the_original_id(store: &dyn Store) {
    let first = event("http", Some("msg-7"), b"{}");
    store.append_events(std::slice::from_ref(&first)).await.unwrap();
    let again = event("http", Some("msg-7"), b"{}");
    let result = store.append_events(std::slice::from_ref(&again)).await.unwrap();
    assert_eq!(result, vec![Appended { id: first.id, duplicate: true }]);
    assert!(store.get_event(again.id).await.unwrap().is_none());
    assert_eq!(store.events_after(0, 100).await.unwrap().len(), 1);
}

async fn duplicates_inside_one_batch_collapse_to_the_first(store: &dyn Store) {
    let batch = vec![
        event("http", Some("a"), b"1"),
        event("http", Some("b"), b"2"),
        event("http", Some("a"), b"3"),
        event("other", Some("a"), b"4"),
        event("http", None, b"5"),
        event("http", None, b"6"),
    ];
    let r = store.append_events(&batch).await.unwrap();
    assert_eq!(r[0], Appended { id: batch[0].id, duplicate: false });
    assert_eq!(r[2], Appended { id: batch[0].id, duplicate: true }, "same key, same connector");
    assert_eq!(r[3], Appended { id: batch[3].id, duplicate: false }, "same key, other connector");
    assert!(!r[4].duplicate && !r[5].duplicate, "events without a key never collide");
    let stored = store.events_after(0, 100).await.unwrap();
    assert_eq!(stored.len(), 5);
    let bodies: Vec<&[u8]> = stored.iter().map(|e| e.body.as_slice()).collect();
    assert_eq!(bodies, vec![&b"1"[..], b"2", b"4", b"5", b"6"], "arrival order is kept");
}

async fn concurrent_deliveries_of_one_message_store_one_event(store: &dyn Store) {
    let attempts =
        (0..8).map(|_| async { store.append_events(&[event("http", Some("race"), b"{}")]).await.unwrap()[0] });
    let results = futures::future::join_all(attempts).await;
    let originals: std::collections::HashSet<Uuid> = results.iter().map(|a| a.id).collect();
    assert_eq!(originals.len(), 1, "every delivery is answered with the same id");
    assert_eq!(results.iter().filter(|a| !a.duplicate).count(), 1);
    assert_eq!(store.events_after(0, 100).await.unwrap().len(), 1);
}

async fn events_page_in_arrival_order(store: &dyn Store) {
    let batch: Vec<_> = (0..25).map(|i| event("http", Some(&format!("p{i}")), format!("{i}").as_bytes())).collect();
    store.append_events(&batch[..10]).await.unwrap();
    store.append_events(&batch[10..]).await.unwrap();
    let first = store.events_after(0, 10).await.unwrap();
    let second = store.events_after(first.last().unwrap().seq, 100).await.unwrap();
    let ids: Vec<Uuid> = first.iter().chain(&second).map(|e| e.id).collect();
    assert_eq!(ids, batch.iter().map(|e| e.id).collect::<Vec<_>>());
}

fn deal(pipeline: &str, stage: &str, refs: &[(&str, &str, &str)]) -> Deal {
    let mut d = Deal::new(pipeline, stage, now_micros(), "system:test");
    d.title = "Насосная станция «Север»".into();
    d.amount = Some("1250000.50 RUB".parse().unwrap());
    d.external_refs = refs.iter().map(|(s, i, id)| ExternalRef::new(*s, *i, *id)).collect();
    d
}

async fn deals_are_found_by_id_external_ref_and_parent(store: &dyn Store) {
    let parent = deal("sales", "calculation", &[("bitrix24", "main", "101")]);
    let mut child = deal("engineering", "new", &[("bitrix24", "main", "102")]);
    child.parent_id = Some(parent.id);
    let changes = ChangeSet { deals: vec![parent.clone(), child.clone()], ..Default::default() };
    store.apply(&changes).await.unwrap();

    assert_eq!(store.get_deal(parent.id).await.unwrap(), Some(parent.clone()));
    let by_ref = store.find_deal(&ExternalRef::new("bitrix24", "main", "102")).await.unwrap();
    assert_eq!(by_ref.map(|d| d.id), Some(child.id));
    assert!(store.find_deal(&ExternalRef::new("bitrix24", "other", "102")).await.unwrap().is_none());
    let children = store.child_deals(parent.id).await.unwrap();
    assert_eq!(children.iter().map(|d| d.id).collect::<Vec<_>>(), vec![child.id]);

    // Moving the deal and replacing its refs updates the lookups.
    let mut moved = parent.clone();
    moved.move_to("sales", "calculation_ready", now_micros(), "flow:s1");
    moved.external_refs = vec![ExternalRef::new("onec", "crm", "8f1c…")];
    store.apply(&ChangeSet { deals: vec![moved.clone()], ..Default::default() }).await.unwrap();
    assert_eq!(store.get_deal(parent.id).await.unwrap().unwrap().stage, "calculation_ready");
    assert!(store.find_deal(&ExternalRef::new("bitrix24", "main", "101")).await.unwrap().is_none());
    assert_eq!(
        store.find_deal(&ExternalRef::new("onec", "crm", "8f1c…")).await.unwrap().map(|d| d.id),
        Some(parent.id)
    );
}

async fn a_failing_change_set_leaves_nothing_behind(store: &dyn Store) {
    let e = event("http", Some("x"), b"{}");
    store.append_events(std::slice::from_ref(&e)).await.unwrap();
    let owner = deal("sales", "new", &[("bitrix24", "main", "7")]);
    store.apply(&ChangeSet { deals: vec![owner], ..Default::default() }).await.unwrap();

    let innocent = deal("sales", "new", &[("bitrix24", "main", "8")]);
    let thief = deal("sales", "new", &[("bitrix24", "main", "7")]);
    let changes = ChangeSet {
        deals: vec![innocent.clone(), thief],
        event_outcomes: vec![EventOutcome {
            event_id: e.id,
            state: EventState::Processed { mapping_version: "v1".into() },
        }],
    };
    let err = store.apply(&changes).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(ref m) if m.contains("bitrix24/main/7")), "{err}");
    assert!(store.get_deal(innocent.id).await.unwrap().is_none(), "the earlier deal of the set was rolled back");
    assert_eq!(store.get_event(e.id).await.unwrap().unwrap().state, EventState::Pending);
}

async fn event_outcomes_are_recorded(store: &dyn Store) {
    let e = event("http", Some("y"), b"{}");
    store.append_events(std::slice::from_ref(&e)).await.unwrap();
    let state = EventState::Processed { mapping_version: "sha256:abc".into() };
    let outcome = EventOutcome { event_id: e.id, state: state.clone() };
    store.apply(&ChangeSet { event_outcomes: vec![outcome], ..Default::default() }).await.unwrap();
    let got = store.get_event(e.id).await.unwrap().unwrap();
    assert_eq!(got.state, state);
    assert!(got.processed_at.is_some());

    let missing = EventOutcome { event_id: Uuid::now_v7(), state: EventState::Pending };
    assert!(store.apply(&ChangeSet { event_outcomes: vec![missing], ..Default::default() }).await.is_err());
}

async fn migrations_can_run_twice(store: &dyn Store) {
    store.migrate().await.unwrap();
    store.ping().await.unwrap();
}

async fn sqlite_store() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("hub.db").display());
    let store = open(&url, 4).await.unwrap();
    store.migrate().await.unwrap();
    (store, dir)
}

async fn pg_store(test: &str) -> Option<(Arc<dyn Store>, TestDatabase)> {
    let admin = pg_admin_url(test)?;
    let db = TestDatabase::create(&admin).await;
    let store = open(&db.url, 8).await.unwrap();
    store.migrate().await.unwrap();
    Some((store, db))
}

macro_rules! store_suite {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite_backend {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let (store, _dir) = super::sqlite_store().await;
                    super::$scenario(&*store).await;
                }
            )*
        }
        mod postgres_backend {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let Some((store, db)) = super::pg_store(stringify!($scenario)).await else { return };
                    super::$scenario(&*store).await;
                    drop(store);
                    db.drop_db().await;
                }
            )*
        }
    };
}

store_suite!(
    a_stored_event_reads_back_exactly,
    a_repeated_delivery_is_stored_once_with_the_original_id,
    duplicates_inside_one_batch_collapse_to_the_first,
    concurrent_deliveries_of_one_message_store_one_event,
    events_page_in_arrival_order,
    deals_are_found_by_id_external_ref_and_parent,
    a_failing_change_set_leaves_nothing_behind,
    event_outcomes_are_recorded,
    migrations_can_run_twice,
);
