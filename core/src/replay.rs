//! Replay: what would an edited mapping set have done with real traffic?
//!
//! Stored raw events since a time are decoded again and mapped through the
//! candidate set — or, for events whose records were read from the source
//! before mapping (a Bitrix24 event names a deal, the processor read it),
//! the read the processor kept for the event is mapped: replay never reads
//! a source, so it is deterministic; the engine runs them, in arrival order, on the state the
//! deals had at that time, and nothing is written. Each event's canonical
//! changes and commands are compared with what actually happened — the
//! trail and the outbox recorded for it — and the differences are listed.
//!
//! The state at `since` is rebuilt from today's state by undoing, newest
//! first, the stage moves and field changes the trail recorded after it,
//! and by dropping deals, tasks and timers created after it. Timers and
//! tasks that changed state after `since` without being created then are
//! taken as they are now: the trail does not record enough to undo that.
//!
//! What the live hub left out of a kept read (the stage and fields of its
//! own writes still on their way, the echo guard's drops) is not left out
//! again: replay maps the read whole. An event processed before reads were
//! kept replays from its body alone (a thin Bitrix24 event then maps to
//! nothing).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::connector::{FetchedRecords, SourceRecord};
use crate::flow::{Cause, Change, Command, Engine, TraceKind, World, deal_fields};
use crate::mapping::MappingSet;
use crate::model::{CanonicalEvent, ExternalRef};
use crate::runner::{EngineRunner, RunError, canonical_events};
use crate::store::{RawEvent, Store, load_world};

/// Decodes a stored raw event into records (the connector's job).
pub type Decode<'a> = &'a (dyn Fn(&RawEvent) -> Result<Vec<SourceRecord>, String> + Sync);

/// The differences for one raw event.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EventDiff {
    pub event_id: Uuid,
    pub connector: String,
    pub received_at: DateTime<Utc>,
    /// What happened and would no longer happen.
    pub removed: Vec<String>,
    /// What would happen and did not.
    pub added: Vec<String>,
}

/// The outcome of a replay.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ReplayReport {
    pub since: Option<DateTime<Utc>>,
    pub mapping_version: String,
    pub events: usize,
    /// Only the events whose outcome would differ.
    pub differences: Vec<EventDiff>,
}

/// Replays stored events received in `[since, until)` through `set`.
pub async fn replay(
    store: &dyn Store,
    runner: &EngineRunner,
    decode: Decode<'_>,
    set: &MappingSet,
    since: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
) -> Result<ReplayReport, RunError> {
    let raw = events_between(store, since, until).await?;
    let causes: Vec<Uuid> = raw.iter().map(|e| e.id).collect();
    let recorded_trace = store.trace_of_causes(&causes).await?;
    let recorded_commands = store.commands_of_causes(&causes).await?;
    let reads = store.source_reads(&causes).await?;

    let mut mapped = Vec::with_capacity(raw.len());
    for event in &raw {
        let events = match reads.get(&event.id) {
            Some(read) => mapped_read(set, event, read),
            None => decode(event).and_then(|records| canonical_events(set, event, &records)),
        };
        mapped.push(events);
    }
    let all: Vec<_> = mapped.iter().filter_map(|m| m.as_ref().ok()).flatten().cloned().collect();
    let mut seeds = runner.seed_deals(&all).await?;
    seeds.extend(recorded_trace.iter().map(|s| s.deal));
    seeds.sort();
    seeds.dedup();
    let mut world = load_world(store, &seeds).await?;
    rewind(store, &mut world, since).await?;

    let engine = Engine::new(set.plan(), set.runtime(), set);
    let mut report =
        ReplayReport { since: Some(since), mapping_version: set.version().to_owned(), ..Default::default() };
    for (event, events) in raw.iter().zip(mapped) {
        report.events += 1;
        let mut after = Vec::new();
        match events {
            Err(e) => after.push(format!("error: {e}")),
            Ok(events) => {
                for (canonical, cause) in &events {
                    match runner.process(&engine, &mut world, canonical, cause).await {
                        Ok(effects) => {
                            after.extend(effects.changes.iter().map(|change| change_line(change)));
                            after.extend(effects.commands.iter().map(command_line));
                            after.extend(effects.problems.iter().map(|p| format!("problem: {p}")));
                        }
                        Err(RunError::Rejected(e)) => after.push(format!("error: {e}")),
                        Err(store_error) => return Err(store_error),
                    }
                }
            }
        }
        let before = recorded_lines(event, &recorded_trace, &recorded_commands);
        if let Some(diff) = diff(event, before, after) {
            report.differences.push(diff);
        }
    }
    Ok(report)
}

/// The canonical events of a kept read, as the live hub made them: the
/// records mapped, then a deletion for each record the source no longer had.
fn mapped_read(
    set: &MappingSet,
    event: &RawEvent,
    read: &FetchedRecords,
) -> Result<Vec<(CanonicalEvent, Cause)>, String> {
    let mut events = canonical_events(set, event, &read.records)?;
    for gone in &read.gone {
        let source = ExternalRef::new(&gone.system, &event.connector, &gone.id);
        let cause = Cause { event_id: event.id, sequence: events.len() as u32, at: event.received_at, binding: None };
        events.push((CanonicalEvent::DealDeleted { source }, cause));
    }
    Ok(events)
}

/// Stored events received in the window, in arrival order.
async fn events_between(
    store: &dyn Store,
    since: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
) -> Result<Vec<RawEvent>, RunError> {
    const PAGE: u32 = 1000;
    let (mut cursor, mut found) = (0, Vec::new());
    loop {
        let page = store.events_after(cursor, PAGE).await?;
        let Some(last) = page.last() else { break };
        cursor = last.seq;
        found.extend(page.into_iter().filter(|e| e.received_at >= since && until.is_none_or(|u| e.received_at < u)));
    }
    Ok(found)
}

/// Undoes, newest first, what the trail recorded after `since`.
async fn rewind(store: &dyn Store, world: &mut World, since: DateTime<Utc>) -> Result<(), RunError> {
    let deals: Vec<Uuid> = world.deals.keys().copied().collect();
    let mut created = BTreeSet::new();
    for deal in deals {
        let mut steps = store.trace_of_deal(deal).await?;
        steps.retain(|s| s.at >= since);
        for step in steps.iter().rev() {
            let TraceKind::Change { change, .. } = &step.kind else { continue };
            let Some(record) = world.deals.get_mut(&deal) else { continue };
            match &**change {
                Change::DealCreated { .. } => {
                    created.insert(deal);
                }
                Change::StageEntered { from: Some((pipeline, stage)), .. } => {
                    record.pipeline = pipeline.clone();
                    record.stage = stage.clone();
                    record.stage_history.pop();
                }
                Change::StageEntered { from: None, .. } => {}
                Change::FieldChanged { field, from, .. } if field == "parent_id" => {
                    record.parent_id = from.as_str().and_then(|p| p.parse().ok());
                }
                Change::FieldChanged { field, from, .. } => {
                    // A value the field accepted once, it accepts again.
                    let _ = deal_fields::write(record, field, from.clone());
                }
            }
        }
    }
    for deal in &created {
        world.deals.remove(deal);
    }
    world.tasks.retain(|_, t| t.created_at < since && !t.deal_id.is_some_and(|d| created.contains(&d)));
    world.timers.retain(|_, t| t.created_at < since && !created.contains(&t.deal_id));
    world.take_dirty();
    Ok(())
}

fn recorded_lines(event: &RawEvent, trace: &[crate::flow::TraceStep], commands: &[Command]) -> Vec<String> {
    let mut lines: Vec<String> = trace
        .iter()
        .filter(|s| s.cause_event == event.id)
        .filter_map(|s| match &s.kind {
            TraceKind::Change { change, .. } => Some(change_line(change)),
            TraceKind::Problem { problem } => Some(format!("problem: {problem}")),
            _ => None,
        })
        .collect();
    lines.extend(commands.iter().filter(|c| c.cause_event == event.id).map(command_line));
    if let crate::store::EventState::Failed { error } = &event.state {
        lines.push(format!("error: {error}"));
    }
    lines
}

/// Lines present on one side only; `None` when both agree (as multisets).
fn diff(event: &RawEvent, before: Vec<String>, after: Vec<String>) -> Option<EventDiff> {
    let mut count: BTreeMap<&str, i64> = BTreeMap::new();
    for line in &before {
        *count.entry(line).or_insert(0) += 1;
    }
    for line in &after {
        *count.entry(line).or_insert(0) -= 1;
    }
    let removed: Vec<String> = before.iter().filter(|l| take(&mut count, l, 1)).cloned().collect();
    let added: Vec<String> = after.iter().filter(|l| take(&mut count, l, -1)).cloned().collect();
    (!removed.is_empty() || !added.is_empty()).then(|| EventDiff {
        event_id: event.id,
        connector: event.connector.clone(),
        received_at: event.received_at,
        removed,
        added,
    })
}

/// Consumes one surplus occurrence of `line` on the side `sign` points to.
fn take(count: &mut BTreeMap<&str, i64>, line: &str, sign: i64) -> bool {
    match count.get_mut(line) {
        Some(n) if *n * sign > 0 => {
            *n -= sign;
            true
        }
        _ => false,
    }
}

fn change_line(change: &Change) -> String {
    match change {
        Change::DealCreated { deal, pipeline, stage } => format!("deal {deal} created in {pipeline}/{stage}"),
        Change::StageEntered { deal, from, to, reverted, .. } => {
            let from = from.as_ref().map(|(p, s)| format!("{p}/{s}")).unwrap_or_else(|| "—".into());
            let how = if *reverted { " (moved back)" } else { "" };
            format!("deal {deal} stage {from} → {}/{}{how}", to.0, to.1)
        }
        Change::FieldChanged { deal, field, to, .. } => format!("deal {deal} {field} = {to}"),
    }
}

fn command_line(command: &Command) -> String {
    let op = serde_json::to_value(&command.op).unwrap_or_default();
    let deal = command.deal.map(|d| format!(" deal {d}")).unwrap_or_default();
    format!("command → {}{deal}: {op}", command.connector)
}

/// The report as a person reads it.
pub fn render_text(report: &ReplayReport) -> String {
    let mut out = String::new();
    for d in &report.differences {
        out.push_str(&format!("event {} from `{}` at {}\n", d.event_id, d.connector, d.received_at.to_rfc3339()));
        for line in &d.removed {
            out.push_str(&format!("  - {line}\n"));
        }
        for line in &d.added {
            out.push_str(&format!("  + {line}\n"));
        }
    }
    out.push_str(&format!(
        "{} event(s) replayed through mapping version {}; {} would change\n",
        report.events,
        report.mapping_version,
        report.differences.len()
    ));
    out
}

#[cfg(test)]
mod tests {
    //! S2 traffic recorded through the shipped mappings, replayed through
    //! the same set (no difference) and through an edited one (the diff an
    //! admin expects to see).

    use std::path::PathBuf;
    use std::sync::Arc;

    use chrono::Duration;
    use serde_json::json;

    use super::*;
    use crate::model::{Deal, ExternalRef};
    use crate::store::{ChangeSet, EventOutcome, EventState, NewRawEvent, SqliteStore};

    fn shipped_sources() -> Vec<(String, String)> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../mappings");
        let mut sources: Vec<(String, String)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap()))
            .collect();
        sources.sort();
        sources
    }

    fn set(edit: impl Fn(&str, String) -> String) -> MappingSet {
        let sources: Vec<(String, String)> =
            shipped_sources().into_iter().map(|(n, t)| (n.clone(), edit(&n, t))).collect();
        MappingSet::from_sources(&sources).unwrap_or_else(|d| panic!("{d:?}"))
    }

    /// The test connector's wire format: `{"kind": …, "data": …}`.
    fn decode(event: &RawEvent) -> Result<Vec<SourceRecord>, String> {
        let body: serde_json::Value = serde_json::from_slice(&event.body).map_err(|e| e.to_string())?;
        Ok(vec![SourceRecord { kind: body["kind"].as_str().unwrap_or_default().into(), data: body["data"].clone() }])
    }

    fn t0() -> DateTime<Utc> {
        "2025-03-03T07:00:00Z".parse().unwrap()
    }

    async fn record_traffic(store: &Arc<dyn Store>, set: &MappingSet) {
        let mut sale = Deal::new("sales", "new", t0() - Duration::days(1), "test");
        sale.title = "Поставка в Казань".into();
        sale.responsible = Some("ivanov".into());
        sale.external_refs.push(ExternalRef::new("bitrix24", "bitrix24", "410"));
        store.apply(&ChangeSet { deals: vec![sale], ..Default::default() }).await.unwrap();
        let records = [
            json!({"ID": "410", "CATEGORY_ID": "0", "STAGE_ID": "UC_EVALUATE", "TITLE": "Поставка в Казань", "ASSIGNED_BY_ID": "7"}),
            json!({"ID": "411", "CATEGORY_ID": "1", "STAGE_ID": "C1:UC_APPROVAL", "TITLE": "Логистика: Поставка в Казань",
                   "UF_CRM_PARENT_DEAL": "D_410", "UF_CRM_LOGISTICS_COST": "18 500,00", "ASSIGNED_BY_ID": "31"}),
        ];
        let runner = EngineRunner::new(store.clone());
        for (i, data) in records.iter().enumerate() {
            let raw = NewRawEvent {
                id: Uuid::now_v7(),
                connector: "bitrix24".into(),
                delivery_key: None,
                received_at: t0() + Duration::minutes(i as i64 * 10),
                headers: vec![],
                body: serde_json::to_vec(&json!({"kind": "deal", "data": data})).unwrap(),
            };
            store.append_events(std::slice::from_ref(&raw)).await.unwrap();
            let stored = store.get_event(raw.id).await.unwrap().unwrap();
            let events = canonical_events(set, &stored, &decode(&stored).unwrap()).unwrap();
            let state = EventState::Processed { mapping_version: set.version().into() };
            let outcome = EventOutcome { event_id: raw.id, state };
            let result = runner.apply(set, &events, Some(outcome)).await.unwrap();
            assert!(result.effects.problems.is_empty(), "{:?}", result.effects.problems);
        }
    }

    /// S2 as the Bitrix24 connector delivers it: thin event bodies that only
    /// name a deal, and beside each event the deal as the processor read it.
    async fn record_thin_traffic(store: &Arc<dyn Store>, set: &MappingSet) -> Vec<RawEvent> {
        let mut sale = Deal::new("sales", "new", t0() - Duration::days(1), "test");
        sale.title = "Поставка в Казань".into();
        sale.responsible = Some("ivanov".into());
        sale.external_refs.push(ExternalRef::new("bitrix24", "bitrix24", "410"));
        store.apply(&ChangeSet { deals: vec![sale], ..Default::default() }).await.unwrap();
        let reads = [
            json!({"ID": "410", "CATEGORY_ID": "0", "STAGE_ID": "UC_EVALUATE", "TITLE": "Поставка в Казань", "ASSIGNED_BY_ID": "7"}),
            json!({"ID": "411", "CATEGORY_ID": "1", "STAGE_ID": "C1:UC_APPROVAL", "TITLE": "Логистика: Поставка в Казань",
                   "UF_CRM_PARENT_DEAL": "D_410", "UF_CRM_LOGISTICS_COST": "18 500,00", "ASSIGNED_BY_ID": "31"}),
        ];
        let runner = EngineRunner::new(store.clone());
        let mut stored_events = Vec::new();
        for (i, deal) in reads.iter().enumerate() {
            let received_at = t0() + Duration::minutes(i as i64 * 10);
            let thin = json!({"kind": "deal.event", "data": {"event": "ONCRMDEALUPDATE", "id": deal["ID"]}});
            let raw = NewRawEvent {
                id: Uuid::now_v7(),
                connector: "bitrix24".into(),
                delivery_key: None,
                received_at,
                headers: vec![],
                body: serde_json::to_vec(&thin).unwrap(),
            };
            store.append_events(std::slice::from_ref(&raw)).await.unwrap();
            let stored = store.get_event(raw.id).await.unwrap().unwrap();
            let read = FetchedRecords {
                records: vec![SourceRecord { kind: "deal".into(), data: deal.clone() }],
                read_at: Some(received_at),
                ..Default::default()
            };
            store.keep_source_read(raw.id, &read, received_at).await.unwrap();
            let events = canonical_events(set, &stored, &read.records).unwrap();
            let state = EventState::Processed { mapping_version: set.version().into() };
            let outcome = EventOutcome { event_id: raw.id, state };
            runner.apply(set, &events, Some(outcome)).await.unwrap();
            stored_events.push(stored);
        }
        stored_events
    }

    #[tokio::test]
    async fn replay_maps_the_read_kept_for_a_thin_event_never_its_bare_body() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&format!("sqlite://{}/hub.db", dir.path().display()), 2).await.unwrap());
        store.migrate().await.unwrap();
        let current = set(|_, text| text);
        let events = record_thin_traffic(&store, &current).await;
        // The bodies alone name deals no binding reads: without the kept
        // reads, replay would see nothing happen.
        for event in &events {
            assert!(canonical_events(&current, event, &decode(event).unwrap()).unwrap().is_empty());
        }
        let runner = EngineRunner::new(store.clone());
        let since = t0() - Duration::minutes(1);

        let same = replay(store.as_ref(), &runner, &decode, &current, since, None).await.unwrap();
        assert_eq!(same.events, 2);
        assert!(same.differences.is_empty(), "{}", render_text(&same));

        let edited = set(|name, text| {
            if name == "flows-logistics.yaml" {
                text.replace(
                    "move: { target: parent, stage: estimate_ready }",
                    "move: { target: parent, stage: proposal }",
                )
            } else {
                text
            }
        });
        let report = replay(store.as_ref(), &runner, &decode, &edited, since, None).await.unwrap();
        assert_eq!(report.differences.len(), 1, "{}", render_text(&report));
        let diff = &report.differences[0];
        assert_eq!(diff.event_id, events[1].id);
        assert!(diff.removed.iter().any(|l| l.contains("sales/evaluation → sales/estimate_ready")), "{diff:?}");
        assert!(diff.added.iter().any(|l| l.contains("sales/evaluation → sales/proposal")), "{diff:?}");
    }

    #[test]
    fn a_kept_read_maps_its_records_then_its_deletions() {
        let current = set(|_, text| text);
        let event = RawEvent {
            seq: 1,
            id: Uuid::now_v7(),
            connector: "bitrix24".into(),
            delivery_key: None,
            received_at: t0(),
            headers: Vec::new(),
            body: Vec::new(),
            state: EventState::Pending,
            processed_at: None,
        };
        let read = FetchedRecords {
            records: vec![SourceRecord {
                kind: "deal".into(),
                data: json!({"ID": "410", "CATEGORY_ID": "0",
                "STAGE_ID": "NEW", "TITLE": "x", "ASSIGNED_BY_ID": "7"}),
            }],
            gone: vec![crate::connector::GoneRecord { system: "bitrix24".into(), id: "411".into() }],
            ..Default::default()
        };
        let events = mapped_read(&current, &event, &read).unwrap();
        assert_eq!(events.len(), 2);
        assert!(matches!(&events[0].0, CanonicalEvent::DealObserved { .. }));
        let CanonicalEvent::DealDeleted { source } = &events[1].0 else { panic!("{events:?}") };
        assert_eq!((source.instance.as_str(), source.id.as_str()), ("bitrix24", "411"));
        assert_eq!(events[1].1.sequence, 1);
    }

    #[tokio::test]
    async fn replay_shows_what_an_edit_would_change_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&format!("sqlite://{}/hub.db", dir.path().display()), 2).await.unwrap());
        store.migrate().await.unwrap();
        let current = set(|_, text| text);
        record_traffic(&store, &current).await;
        let runner = EngineRunner::new(store.clone());
        let since = t0() - Duration::minutes(1);

        let same = replay(store.as_ref(), &runner, &decode, &current, since, None).await.unwrap();
        assert_eq!(same.events, 2);
        assert!(same.differences.is_empty(), "{}", render_text(&same));

        // The admin wants a ready estimate to go straight to the proposal.
        let edited = set(|name, text| {
            if name == "flows-logistics.yaml" {
                text.replace(
                    "move: { target: parent, stage: estimate_ready }",
                    "move: { target: parent, stage: proposal }",
                )
            } else {
                text
            }
        });
        let report = replay(store.as_ref(), &runner, &decode, &edited, since, None).await.unwrap();
        assert_eq!(report.differences.len(), 1, "{}", render_text(&report));
        let diff = &report.differences[0];
        assert!(diff.removed.iter().any(|l| l.contains("sales/evaluation → sales/estimate_ready")), "{diff:?}");
        assert!(diff.added.iter().any(|l| l.contains("sales/evaluation → sales/proposal")), "{diff:?}");
        assert!(diff.removed.iter().any(|l| l.contains("\"stage\":\"UC_ESTIMATE_READY\"")), "{diff:?}");
        assert!(diff.added.iter().any(|l| l.contains("\"stage\":\"PREPARATION\"")), "{diff:?}");
        // Nothing was written.
        let sale = store.find_deal(&ExternalRef::new("bitrix24", "bitrix24", "410")).await.unwrap().unwrap();
        assert_eq!(sale.stage, "estimate_ready");
    }
}
