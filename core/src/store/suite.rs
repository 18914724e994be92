//! One conformance suite for every store backend.
//!
//! Each scenario is a plain async fn taking `&dyn Store`; the macro at the
//! bottom runs all of them on SQLite (always) and on PostgreSQL (when the
//! test server is configured, mandatory in CI).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use uuid::Uuid;

use super::*;
use crate::flow::effects::{Command, CommandOp, Effects, TraceKind, TraceStep};
use crate::model::{
    Deal, ExternalRef, Invoice, InvoiceKind, InvoiceStatus, Task, TaskKind, TaskStatus, Timer, TimerStatus,
};
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
        ..Default::default()
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

fn invoice(deal: Option<Uuid>, number: &str, refs: &[(&str, &str, &str)]) -> Invoice {
    Invoice {
        id: Uuid::now_v7(),
        kind: InvoiceKind::Invoice,
        number: number.into(),
        date: NaiveDate::from_ymd_opt(2025, 3, 14).unwrap(),
        deal_id: deal,
        client: None,
        total: "1250000.50 RUB".parse().unwrap(),
        paid: "0 RUB".parse().unwrap(),
        shipped: "0 RUB".parse().unwrap(),
        shipments: Vec::new(),
        paid_parts: Vec::new(),
        status: InvoiceStatus::Open,
        lines: Vec::new(),
        custom_fields: Default::default(),
        external_refs: refs.iter().map(|(s, i, id)| ExternalRef::new(*s, *i, *id)).collect(),
        updated_at: now_micros(),
    }
}

fn task(deal: Option<Uuid>, assignee: &str, status: TaskStatus) -> Task {
    Task {
        id: Uuid::now_v7(),
        kind: TaskKind::Approval,
        title: "Согласовать скидку".into(),
        description: String::new(),
        assignee: assignee.into(),
        due: Some(now_micros() + Duration::days(2)),
        deal_id: deal,
        status,
        hold_stage: Some("contract".into()),
        flow: Some("discount-approval".into()),
        external_refs: Vec::new(),
        created_at: now_micros(),
    }
}

fn timer(deal: Uuid, name: &str, due_at: DateTime<Utc>, status: TimerStatus) -> Timer {
    Timer {
        id: Uuid::now_v7(),
        deal_id: deal,
        name: name.into(),
        due_at,
        status,
        flow: "payment-check".into(),
        created_at: now_micros(),
    }
}

fn command(deal: Uuid, key: &str) -> Command {
    Command {
        id: Uuid::now_v7(),
        idempotency_key: key.into(),
        connector: "b24-main".into(),
        system: "bitrix24".into(),
        deal: Some(deal),
        cause_event: Uuid::now_v7(),
        flow: "closing".into(),
        op: CommandOp::UpdateDeal {
            external_id: "101".into(),
            stage: Some("C2:WON".into()),
            fields: BTreeMap::from([("UF_CRM_PAID".into(), serde_json::json!("1250000.50"))]),
        },
    }
}

fn step(deal: Uuid, detail: &str, at: DateTime<Utc>) -> TraceStep {
    TraceStep {
        deal,
        at,
        cause_event: Uuid::now_v7(),
        depth: 1,
        kind: TraceKind::Action { flow: "closing".into(), action: "notify".into(), detail: detail.into() },
    }
}

/// A change set carrying one of everything the engine produces, for `deal`.
fn engine_output(deal: &Deal) -> ChangeSet {
    ChangeSet {
        deals: vec![deal.clone()],
        invoices: vec![invoice(Some(deal.id), "А-123", &[("onec", "erp", "inv-1")])],
        tasks: vec![task(Some(deal.id), "anna", TaskStatus::Open)],
        timers: vec![timer(deal.id, "payment-check", now_micros() + Duration::days(3), TimerStatus::Pending)],
        commands: vec![command(deal.id, "ev1/closing/0/0"), command(deal.id, "ev1/closing/1/0")],
        trace: vec![step(deal.id, "first", now_micros()), step(deal.id, "second", now_micros())],
        team_cursors: vec![("managers".into(), 3)],
        event_outcomes: Vec::new(),
    }
}

async fn engine_output_is_stored_and_upserted(store: &dyn Store) {
    let d = deal("sales", "invoice", &[]);
    let changes = engine_output(&d);
    store.apply(&changes).await.unwrap();

    let inv = &changes.invoices[0];
    assert_eq!(store.get_invoice(inv.id).await.unwrap().as_ref(), Some(inv));
    assert_eq!(store.find_invoice(&ExternalRef::new("onec", "erp", "inv-1")).await.unwrap().as_ref(), Some(inv));
    assert!(store.find_deal(&ExternalRef::new("onec", "erp", "inv-1")).await.unwrap().is_none(), "kinds differ");
    assert_eq!(store.invoices_of_deals(&[d.id]).await.unwrap(), changes.invoices);
    assert_eq!(store.get_task(changes.tasks[0].id).await.unwrap().as_ref(), Some(&changes.tasks[0]));
    assert_eq!(store.tasks_of_deals(&[d.id], true).await.unwrap(), changes.tasks);
    assert_eq!(store.timers_of_deals(&[d.id], true).await.unwrap(), changes.timers);
    assert_eq!(store.commands_of_deal(d.id).await.unwrap(), changes.commands);
    assert_eq!(store.trace_of_deal(d.id).await.unwrap(), changes.trace);
    assert_eq!(store.team_cursors().await.unwrap(), BTreeMap::from([("managers".to_owned(), 3)]));
    assert!(store.get_invoice(Uuid::now_v7()).await.unwrap().is_none());
    assert!(store.get_task(Uuid::now_v7()).await.unwrap().is_none());

    // Writing the same records again replaces them.
    let mut paid = inv.clone();
    paid.paid = paid.total.clone();
    paid.status = InvoiceStatus::Paid;
    paid.external_refs = vec![ExternalRef::new("onec", "erp", "inv-1b")];
    let mut done = changes.tasks[0].clone();
    done.status = TaskStatus::Approved;
    let mut fired = changes.timers[0].clone();
    fired.status = TimerStatus::Fired;
    let update = ChangeSet {
        invoices: vec![paid.clone()],
        tasks: vec![done.clone()],
        timers: vec![fired.clone()],
        team_cursors: vec![("managers".into(), 4), ("engineers".into(), 1)],
        ..Default::default()
    };
    store.apply(&update).await.unwrap();
    assert_eq!(store.get_invoice(inv.id).await.unwrap(), Some(paid));
    assert!(store.find_invoice(&ExternalRef::new("onec", "erp", "inv-1")).await.unwrap().is_none());
    assert_eq!(
        store.find_invoice(&ExternalRef::new("onec", "erp", "inv-1b")).await.unwrap().map(|i| i.id),
        Some(inv.id)
    );
    assert_eq!(store.get_task(done.id).await.unwrap(), Some(done.clone()));
    assert!(store.tasks_of_deals(&[d.id], true).await.unwrap().is_empty());
    assert_eq!(store.timers_of_deals(&[d.id], false).await.unwrap(), vec![fired]);
    assert!(store.timers_of_deals(&[d.id], true).await.unwrap().is_empty());
    assert_eq!(
        store.team_cursors().await.unwrap(),
        BTreeMap::from([("engineers".to_owned(), 1), ("managers".to_owned(), 4)])
    );
}

async fn a_failing_engine_change_set_leaves_nothing_behind(store: &dyn Store) {
    let e = event("http", Some("z"), b"{}");
    store.append_events(std::slice::from_ref(&e)).await.unwrap();
    let d = deal("sales", "invoice", &[]);
    let mut changes = engine_output(&d);
    changes.event_outcomes = vec![
        EventOutcome { event_id: e.id, state: EventState::Processed { mapping_version: "v1".into() } },
        // Written last: everything before it must roll back.
        EventOutcome { event_id: Uuid::now_v7(), state: EventState::Pending },
    ];
    assert!(store.apply(&changes).await.is_err());
    assert!(store.get_deal(d.id).await.unwrap().is_none());
    assert!(store.get_invoice(changes.invoices[0].id).await.unwrap().is_none());
    assert!(store.find_invoice(&ExternalRef::new("onec", "erp", "inv-1")).await.unwrap().is_none());
    assert!(store.get_task(changes.tasks[0].id).await.unwrap().is_none());
    assert!(store.timers_of_deals(&[d.id], false).await.unwrap().is_empty());
    assert!(store.commands_of_deal(d.id).await.unwrap().is_empty());
    assert!(store.pending_commands(0, 100).await.unwrap().is_empty());
    assert!(store.trace_of_deal(d.id).await.unwrap().is_empty());
    assert!(store.team_cursors().await.unwrap().is_empty());
    assert_eq!(store.get_event(e.id).await.unwrap().unwrap().state, EventState::Pending);

    // An invoice ref owned by another invoice is a conflict, and rolls back too.
    store
        .apply(&ChangeSet { invoices: vec![invoice(None, "1", &[("onec", "erp", "7")])], ..Default::default() })
        .await
        .unwrap();
    let innocent = invoice(None, "2", &[]);
    let thief = invoice(None, "3", &[("onec", "erp", "7")]);
    let err =
        store.apply(&ChangeSet { invoices: vec![innocent.clone(), thief], ..Default::default() }).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(ref m) if m.contains("onec/erp/7") && m.contains("invoice")), "{err}");
    assert!(store.get_invoice(innocent.id).await.unwrap().is_none());
}

async fn a_command_with_a_known_idempotency_key_is_dropped(store: &dyn Store) {
    let d = deal("sales", "won", &[]);
    let first = command(d.id, "ev1/closing/0/0");
    store.apply(&ChangeSet { commands: vec![first.clone()], ..Default::default() }).await.unwrap();

    let retry = command(d.id, "ev1/closing/0/0");
    let next = command(d.id, "ev1/closing/1/0");
    let next_again = command(d.id, "ev1/closing/1/0");
    let changes = ChangeSet { commands: vec![retry, next.clone(), next_again], ..Default::default() };
    store.apply(&changes).await.unwrap();
    assert_eq!(store.commands_of_deal(d.id).await.unwrap(), vec![first.clone(), next.clone()]);

    let pending = store.pending_commands(0, 100).await.unwrap();
    assert_eq!(pending.iter().map(|(_, c)| c.id).collect::<Vec<_>>(), vec![first.id, next.id]);
    assert!(pending[0].0 < pending[1].0, "by seq");
    let after_first = store.pending_commands(pending[0].0, 100).await.unwrap();
    assert_eq!(after_first.iter().map(|(_, c)| c.id).collect::<Vec<_>>(), vec![next.id]);
    assert_eq!(store.pending_commands(0, 1).await.unwrap().len(), 1);

    store.mark_commands_published(&[first.id, Uuid::now_v7()]).await.unwrap();
    let pending = store.pending_commands(0, 100).await.unwrap();
    assert_eq!(pending.iter().map(|(_, c)| c.id).collect::<Vec<_>>(), vec![next.id]);
    assert_eq!(store.commands_of_deal(d.id).await.unwrap().len(), 2, "published commands stay in the history");

    // A published command's key still drops a later duplicate.
    store.apply(&ChangeSet { commands: vec![command(d.id, "ev1/closing/0/0")], ..Default::default() }).await.unwrap();
    assert_eq!(store.commands_of_deal(d.id).await.unwrap().len(), 2);
}

async fn due_timers_come_earliest_first_and_only_pending(store: &dyn Store) {
    let d = deal("sales", "invoice", &[]);
    let now = now_micros();
    let t1 = timer(d.id, "a", now - Duration::hours(1), TimerStatus::Pending);
    let t2 = timer(d.id, "b", now - Duration::hours(2), TimerStatus::Pending);
    let t3 = timer(d.id, "c", now - Duration::hours(2), TimerStatus::Pending);
    let on_time = timer(d.id, "d", now, TimerStatus::Pending);
    let future = timer(d.id, "e", now + Duration::hours(1), TimerStatus::Pending);
    let fired = timer(d.id, "f", now - Duration::hours(3), TimerStatus::Fired);
    let cancelled = timer(d.id, "g", now - Duration::hours(3), TimerStatus::Cancelled);
    let all = vec![t1.clone(), t2.clone(), t3.clone(), on_time.clone(), future.clone(), fired, cancelled];
    store.apply(&ChangeSet { timers: all.clone(), ..Default::default() }).await.unwrap();

    let mut same_due = [t2.id, t3.id];
    same_due.sort();
    let ids = |timers: Vec<Timer>| timers.into_iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(ids(store.due_timers(now, 10).await.unwrap()), vec![same_due[0], same_due[1], t1.id, on_time.id]);
    assert_eq!(ids(store.due_timers(now, 2).await.unwrap()), same_due.to_vec());
    assert!(store.due_timers(now - Duration::days(1), 10).await.unwrap().is_empty());
    assert_eq!(store.timers_of_deals(&[d.id], false).await.unwrap().len(), 7);
    assert_eq!(store.timers_of_deals(&[d.id], true).await.unwrap().len(), 5);

    // Moving a pending timer later takes it out of the due ones.
    let mut moved = t1.clone();
    moved.due_at = now + Duration::days(1);
    store.apply(&ChangeSet { timers: vec![moved], ..Default::default() }).await.unwrap();
    assert!(!ids(store.due_timers(now, 10).await.unwrap()).contains(&t1.id));
}

async fn tasks_can_be_limited_to_open_ones(store: &dyn Store) {
    let (d1, d2, other) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let open = task(Some(d1), "anna", TaskStatus::Open);
    let done = task(Some(d1), "anna", TaskStatus::Done);
    let rejected = task(Some(d1), "boris", TaskStatus::Rejected);
    let open2 = task(Some(d2), "boris", TaskStatus::Open);
    let unrelated = task(Some(other), "boris", TaskStatus::Open);
    let free = task(None, "boris", TaskStatus::Open);
    let tasks = vec![open.clone(), done.clone(), rejected.clone(), open2.clone(), unrelated, free];
    store.apply(&ChangeSet { tasks, ..Default::default() }).await.unwrap();

    assert_eq!(store.tasks_of_deals(&[d1], true).await.unwrap(), vec![open.clone()]);
    assert_eq!(store.tasks_of_deals(&[d1], false).await.unwrap(), vec![open.clone(), done, rejected]);
    assert_eq!(store.tasks_of_deals(&[d1, d2], true).await.unwrap(), vec![open, open2]);
    assert!(store.tasks_of_deals(&[], false).await.unwrap().is_empty());
}

async fn a_deal_trace_reads_back_in_insertion_order(store: &dyn Store) {
    let (d, other) = (Uuid::now_v7(), Uuid::now_v7());
    let now = now_micros();
    // Insertion order, not the steps' own times, is the order.
    let first = vec![step(d, "1", now), step(other, "x", now), step(d, "2", now - Duration::hours(1))];
    store.apply(&ChangeSet { trace: first, ..Default::default() }).await.unwrap();
    let second = vec![step(d, "3", now - Duration::hours(2)), step(d, "4", now)];
    store.apply(&ChangeSet { trace: second, ..Default::default() }).await.unwrap();
    let details: Vec<String> = store
        .trace_of_deal(d)
        .await
        .unwrap()
        .into_iter()
        .map(|s| match s.kind {
            TraceKind::Action { detail, .. } => detail,
            other => panic!("unexpected step {other:?}"),
        })
        .collect();
    assert_eq!(details, ["1", "2", "3", "4"]);
    assert_eq!(store.trace_of_deal(other).await.unwrap().len(), 1);
    assert!(store.trace_of_deal(Uuid::now_v7()).await.unwrap().is_empty());
}

async fn trace_and_commands_are_found_by_cause_in_insertion_order(store: &dyn Store) {
    let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let (d1, d2) = (Uuid::now_v7(), Uuid::now_v7());
    let now = now_micros();
    let caused = |cause: Uuid, deal: Uuid, detail: &str, at: DateTime<Utc>| TraceStep {
        cause_event: cause,
        ..step(deal, detail, at)
    };
    let queued = |cause: Uuid, deal: Uuid, key: &str| Command { cause_event: cause, ..command(deal, key) };
    // Causes interleave across deals and change sets; steps' own times disagree
    // with insertion order.
    let first = ChangeSet {
        trace: vec![
            caused(b, d1, "b1", now),
            caused(a, d2, "a1", now - Duration::hours(1)),
            caused(c, d1, "c1", now),
            caused(b, d2, "b2", now - Duration::hours(2)),
        ],
        commands: vec![queued(c, d1, "c/0"), queued(b, d1, "b/0"), queued(a, d2, "a/0")],
        ..Default::default()
    };
    store.apply(&first).await.unwrap();
    let second = ChangeSet {
        trace: vec![caused(c, d2, "c2", now), caused(a, d1, "a2", now - Duration::hours(3))],
        commands: vec![queued(a, d1, "a/1"), queued(c, d2, "c/1"), queued(b, d2, "b/1")],
        ..Default::default()
    };
    store.apply(&second).await.unwrap();

    let details = |steps: Vec<TraceStep>| -> Vec<String> {
        steps
            .into_iter()
            .map(|s| match s.kind {
                TraceKind::Action { detail, .. } => detail,
                other => panic!("unexpected step {other:?}"),
            })
            .collect()
    };
    let keys = |commands: Vec<Command>| commands.into_iter().map(|c| c.idempotency_key).collect::<Vec<_>>();
    // Asked in any order and with repeats: only theirs, each once, as written.
    let asked = [a, Uuid::now_v7(), b, a];
    assert_eq!(details(store.trace_of_causes(&asked).await.unwrap()), ["b1", "a1", "b2", "a2"]);
    assert_eq!(keys(store.commands_of_causes(&asked).await.unwrap()), ["b/0", "a/0", "a/1", "b/1"]);
    let trace_of_c = store.trace_of_causes(&[c]).await.unwrap();
    assert_eq!(trace_of_c, vec![first.trace[2].clone(), second.trace[0].clone()], "read back whole");
    assert_eq!(
        store.commands_of_causes(&[c]).await.unwrap(),
        vec![first.commands[0].clone(), second.commands[1].clone()]
    );
    assert!(store.trace_of_causes(&[Uuid::now_v7()]).await.unwrap().is_empty());
    assert!(store.trace_of_causes(&[]).await.unwrap().is_empty());
    assert!(store.commands_of_causes(&[]).await.unwrap().is_empty());
}

async fn person_loads_count_open_tasks_and_responsible_deals(store: &dyn Store) {
    let mut d1 = deal("sales", "new", &[]);
    d1.responsible = Some("anna".into());
    let mut d2 = deal("sales", "new", &[]);
    d2.responsible = Some("anna".into());
    let mut d3 = deal("sales", "new", &[]);
    d3.responsible = Some("boris".into());
    let changes = ChangeSet {
        deals: vec![d1.clone(), d2.clone(), d3.clone()],
        tasks: vec![
            task(Some(d3.id), "anna", TaskStatus::Open),
            task(Some(d3.id), "anna", TaskStatus::Done),
            task(Some(d1.id), "boris", TaskStatus::Open),
            task(None, "boris", TaskStatus::Open),
            task(None, "gleb", TaskStatus::Cancelled),
        ],
        ..Default::default()
    };
    store.apply(&changes).await.unwrap();
    let people = ["anna", "boris", "gleb", "vera", "anna"].map(String::from);
    let expected = BTreeMap::from([("anna".into(), 3), ("boris".into(), 3), ("gleb".into(), 0), ("vera".into(), 0)]);
    assert_eq!(store.person_loads(&people).await.unwrap(), expected);
    assert!(store.person_loads(&[]).await.unwrap().is_empty());

    // Handing a deal over moves its weight.
    d2.responsible = Some("boris".into());
    store.apply(&ChangeSet { deals: vec![d2], ..Default::default() }).await.unwrap();
    let loads = store.person_loads(&["anna".into(), "boris".into()]).await.unwrap();
    assert_eq!(loads, BTreeMap::from([("anna".into(), 2), ("boris".into(), 4)]));
}

async fn a_world_holds_the_deal_its_family_and_their_records(store: &dyn Store) {
    let grandparent = deal("sales", "won", &[]);
    let mut parent = deal("sales", "contract", &[]);
    parent.parent_id = Some(grandparent.id);
    parent.responsible = Some("anna".into());
    let mut this = deal("engineering", "new", &[("bitrix24", "main", "55")]);
    this.parent_id = Some(parent.id);
    let mut sibling = deal("logistics", "new", &[]);
    sibling.parent_id = Some(parent.id);
    let mut child = deal("engineering", "calc", &[]);
    child.parent_id = Some(this.id);
    let mut grandchild = deal("engineering", "calc", &[]);
    grandchild.parent_id = Some(child.id);
    let unrelated = deal("sales", "new", &[]);
    let deals = vec![grandparent.clone(), parent.clone(), this.clone(), sibling.clone(), child.clone()];

    let inv_this = invoice(Some(this.id), "1", &[]);
    let inv_parent = invoice(Some(parent.id), "2", &[]);
    let inv_grandparent = invoice(Some(grandparent.id), "3", &[]);
    let open = task(Some(sibling.id), "boris", TaskStatus::Open);
    // A finished to-do is not loaded; approvals are, whatever their state (they hold stages).
    let closed = Task { kind: TaskKind::Todo, hold_stage: None, ..task(Some(sibling.id), "gleb", TaskStatus::Done) };
    let pending = timer(child.id, "sla", now_micros(), TimerStatus::Pending);
    let fired = timer(child.id, "sla", now_micros(), TimerStatus::Fired);
    let changes = ChangeSet {
        deals: [deals.clone(), vec![grandchild.clone(), unrelated.clone()]].concat(),
        invoices: vec![inv_this.clone(), inv_parent.clone(), inv_grandparent.clone()],
        tasks: vec![open.clone(), closed, task(Some(unrelated.id), "vera", TaskStatus::Open)],
        timers: vec![pending.clone(), fired],
        team_cursors: vec![("engineers".into(), 7)],
        ..Default::default()
    };
    store.apply(&changes).await.unwrap();

    let mut world = load_world(store, &[this.id, Uuid::now_v7()]).await.unwrap();
    let loaded: Vec<Uuid> = world.deals.keys().copied().collect();
    let mut expected = vec![parent.id, this.id, sibling.id, child.id];
    expected.sort();
    assert_eq!(loaded, expected, "the deal, its parent, child and sibling; no grandparent, grandchild or stranger");
    assert_eq!(world.deals[&this.id], this);
    assert_eq!(world.not_loaded, [grandparent.id].into(), "known to exist, not loaded");
    assert_eq!(world.invoices.keys().copied().collect::<Vec<_>>(), vec![inv_this.id, inv_parent.id]);
    assert_eq!(world.tasks.values().cloned().collect::<Vec<_>>(), vec![open.clone()], "open tasks only");
    assert_eq!(world.timers.values().cloned().collect::<Vec<_>>(), vec![pending], "pending timers only");
    assert_eq!(world.team_cursors, BTreeMap::from([("engineers".into(), 7)]));
    assert_eq!(world.loads, BTreeMap::from([("anna".into(), 1), ("boris".into(), 1)]));
    assert!(world.dirty().deals.is_empty());

    // The engine reached the grandparent: load it on demand.
    assert!(extend_world(store, &mut world, grandparent.id).await.unwrap());
    assert!(world.deals.contains_key(&grandparent.id) && world.not_loaded.is_empty());
    assert!(world.invoices.contains_key(&inv_grandparent.id));
    assert!(!extend_world(store, &mut world, Uuid::now_v7()).await.unwrap());

    // What the engine changes goes back as one change set.
    world.deal_mut(this.id).unwrap().stage = "design".into();
    let mut new_task = task(Some(this.id), "boris", TaskStatus::Open);
    new_task.kind = TaskKind::Todo;
    world.put_task(new_task.clone());
    let position = world.advance_cursor("engineers");
    assert_eq!(position, 7);
    let effects = Effects {
        commands: vec![command(this.id, "ev9/eng/0/0")],
        trace: vec![step(this.id, "moved", now_micros())],
        ..Default::default()
    };
    let changes = change_set_from_world(&world, &effects);
    assert_eq!(changes.deals.iter().map(|d| d.id).collect::<Vec<_>>(), vec![this.id]);
    assert_eq!(changes.tasks, vec![new_task.clone()]);
    assert_eq!(changes.team_cursors, vec![("engineers".into(), 8)]);
    assert!(changes.invoices.is_empty() && changes.timers.is_empty());
    store.apply(&changes).await.unwrap();
    assert_eq!(store.get_deal(this.id).await.unwrap().unwrap().stage, "design");
    assert_eq!(store.get_task(new_task.id).await.unwrap(), Some(new_task));
    assert_eq!(store.team_cursors().await.unwrap()["engineers"], 8);
    assert_eq!(store.commands_of_deal(this.id).await.unwrap(), effects.commands);
    assert_eq!(store.trace_of_deal(this.id).await.unwrap(), effects.trace);
    assert_eq!(store.person_loads(&["boris".into()]).await.unwrap()["boris"], 2);
}

async fn deals_are_read_in_bulk(store: &dyn Store) {
    let (a, b) = (deal("sales", "new", &[]), deal("sales", "new", &[]));
    store.apply(&ChangeSet { deals: vec![b.clone(), a.clone()], ..Default::default() }).await.unwrap();
    let got = store.deals_by_ids(&[b.id, Uuid::now_v7(), a.id, a.id]).await.unwrap();
    assert_eq!(got, vec![a, b], "by id, unknown ids skipped, no repeats");
    assert!(store.deals_by_ids(&[]).await.unwrap().is_empty());
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
    engine_output_is_stored_and_upserted,
    a_failing_engine_change_set_leaves_nothing_behind,
    a_command_with_a_known_idempotency_key_is_dropped,
    due_timers_come_earliest_first_and_only_pending,
    tasks_can_be_limited_to_open_ones,
    a_deal_trace_reads_back_in_insertion_order,
    trace_and_commands_are_found_by_cause_in_insertion_order,
    person_loads_count_open_tasks_and_responsible_deals,
    a_world_holds_the_deal_its_family_and_their_records,
    deals_are_read_in_bulk,
    migrations_can_run_twice,
);

// The payment ledger scenarios (`payments_suite.rs`) use `store_suite!` above.
#[path = "payments_suite.rs"]
mod payments_suite;
