//! The `RecordHandler` of a running hub: maps a raw event's records through
//! the live mapping set and applies the canonical events through the flow
//! engine, recording the mapping version that handled the event in the same
//! transaction.
//!
//! The engine clock of an event is its `received_at` and its ids derive
//! from the raw event's id, so replaying stored events gives the same
//! canonical changes and commands as the first time.
//!
//! Records the source no longer has become `DealDeleted`. Records that are
//! the source's state read at some moment (fetched, not an event's own
//! payload) are trusted only where no write of the hub to that source was
//! still unsettled then: the hub moved the deal, the move is on its way,
//! and a read of the deal in between still shows the old stage. Observing
//! that would undo the hub's own move and fire flows again (an echo loop);
//! so the stage and the fields such a write carries are left out of the
//! observation. The write's own echo, read once it has settled, then
//! changes nothing.
//!
//! A second, optional echo guard: records the source says the hub changed
//! last (`FetchedRecords::modified_by_hub`, e.g. Bitrix24's `MODIFY_BY_ID`
//! is the integration user) that show every field and the stage the hub
//! last wrote to that record as the hub wrote them are the echo of its own
//! write and are dropped whole, even where other fields differ from the
//! hub's state. It applies only when all of the hub's writes of the deal to
//! that instance have settled and were done.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dealbridge_core::connector::FetchedRecords;
use dealbridge_core::flow::{Cause, CommandOp};
use dealbridge_core::mapping::MappingSet;
use dealbridge_core::model::{CanonicalEvent, DealObservation, ExternalRef};
use dealbridge_core::runner::{EngineRunner, RunError, canonical_events};
use dealbridge_core::store::{DeliveryState, EventOutcome, EventState, RawEvent, Store, StoreError};
use serde_json::Value;

use crate::processor::{HandleError, Handled, RecordHandler};
use crate::reload::LiveSet;

pub struct MappingHandler {
    pub store: Arc<dyn Store>,
    pub runner: EngineRunner,
    pub mappings: Arc<LiveSet<MappingSet>>,
}

#[async_trait]
impl RecordHandler for MappingHandler {
    async fn handle(&self, event: &RawEvent, mut fetched: FetchedRecords) -> Result<Handled, HandleError> {
        let set = self.mappings.current();
        let echoes = self.drop_own_echoes(&set, event, &mut fetched).await?;
        if echoes > 0 && fetched.records.is_empty() && fetched.gone.is_empty() {
            return Ok(Handled::Ignored(format!(
                "the echo of the hub's own write: changed last by the integration user of `{}`, showing what \
                 the hub wrote",
                event.connector
            )));
        }
        let mut events = canonical_events(&set, event, &fetched.records).map_err(HandleError::Permanent)?;
        if let Some(read_at) = fetched.read_at {
            self.leave_out_unsettled_writes(&set, &mut events, read_at).await?;
        }
        for gone in &fetched.gone {
            let source = ExternalRef::new(&gone.system, &event.connector, &gone.id);
            let sequence = events.len() as u32;
            let cause = Cause { event_id: event.id, sequence, at: event.received_at, binding: None };
            events.push((CanonicalEvent::DealDeleted { source }, cause));
        }
        if events.is_empty() {
            let kinds: Vec<&str> = fetched.records.iter().map(|r| r.kind.as_str()).collect();
            return Ok(Handled::Ignored(format!("no binding reads {kinds:?} from connector `{}`", event.connector)));
        }
        let processed = EventState::Processed { mapping_version: set.version().to_owned() };
        let outcome = EventOutcome { event_id: event.id, state: processed };
        match self.runner.apply(&set, &events, Some(outcome)).await {
            Ok(result) => {
                for problem in &result.effects.problems {
                    tracing::warn!(event_id = %event.id, %problem, "Flow problem; the rest of the event applied.");
                }
                Ok(Handled::Applied)
            }
            Err(RunError::Store(e)) => Err(e.into()),
            Err(RunError::Rejected(reason)) => Err(HandleError::Permanent(reason)),
        }
    }
}

impl MappingHandler {
    /// The second echo guard (see the module's notes); returns how many
    /// records it dropped.
    async fn drop_own_echoes(
        &self,
        set: &MappingSet,
        event: &RawEvent,
        fetched: &mut FetchedRecords,
    ) -> Result<usize, StoreError> {
        let mut marked = std::mem::take(&mut fetched.modified_by_hub);
        marked.sort_unstable();
        marked.dedup();
        let mut dropped = 0;
        for index in marked.into_iter().rev() {
            let Some(record) = fetched.records.get(index) else { continue };
            if self.is_own_echo(set, &event.connector, &record.kind, &record.data).await? {
                fetched.records.remove(index);
                dropped += 1;
            }
        }
        Ok(dropped)
    }

    /// Whether every deal a record maps to shows the hub's last writes to
    /// it as written (and the hub has written it, and nothing is on its way).
    async fn is_own_echo(
        &self,
        set: &MappingSet,
        instance: &str,
        kind: &str,
        data: &Value,
    ) -> Result<bool, StoreError> {
        let Ok(mapped) = set.map_record(instance, kind, data) else { return Ok(false) };
        if mapped.is_empty() {
            return Ok(false);
        }
        for m in mapped {
            let CanonicalEvent::DealObserved { source, observed } = &m.event else { return Ok(false) };
            let Some(deal) = self.store.find_deal(source).await? else { return Ok(false) };
            let Some(last) = self.last_writes(deal.id, instance).await? else { return Ok(false) };
            let pipeline = observed.pipeline.as_deref().unwrap_or(&deal.pipeline);
            let stage_as_written = last.stage.as_deref().is_none_or(|code| {
                observed.stage.as_deref().and_then(|s| set.system_stage(instance, pipeline, s)) == Some(code)
            });
            let fields_as_written = last.fields.iter().all(|(name, value)| same_value(value_at(data, name), value));
            if !(stage_as_written && fields_as_written) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The stage and the fields the hub's writes of `deal` to `instance`
    /// last set; `None` when it wrote nothing there, or a write is not done.
    async fn last_writes(&self, deal: uuid::Uuid, instance: &str) -> Result<Option<LastWrites>, StoreError> {
        let commands: Vec<_> = self
            .store
            .commands_of_deal(deal)
            .await?
            .into_iter()
            .filter(|c| c.connector == instance && is_write(&c.op))
            .collect();
        if commands.is_empty() {
            return Ok(None);
        }
        let states: HashMap<uuid::Uuid, DeliveryState> =
            self.store.deliveries_of_deal(deal).await?.into_iter().map(|d| (d.command.id, d.state)).collect();
        if commands.iter().any(|c| states.get(&c.id) != Some(&DeliveryState::Done)) {
            return Ok(None);
        }
        let mut last = LastWrites::default();
        for command in commands {
            match command.op {
                CommandOp::UpdateDeal { stage, fields, .. } | CommandOp::CreateDeal { stage, fields, .. } => {
                    last.stage = stage.or(last.stage);
                    last.fields.extend(fields);
                }
                CommandOp::CreateTask { .. } | CommandOp::Notify { .. } | CommandOp::Comment { .. } => {}
            }
        }
        Ok(Some(last))
    }

    /// Drops from each observation what a write of the hub to the observed
    /// system changes, when that write had not settled before `read_at`.
    async fn leave_out_unsettled_writes(
        &self,
        set: &MappingSet,
        events: &mut [(CanonicalEvent, Cause)],
        read_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        for (event, _) in events.iter_mut() {
            let CanonicalEvent::DealObserved { source, observed } = event else { continue };
            let Some(deal) = self.store.find_deal(source).await? else { continue };
            let writes = self.unsettled_writes(deal.id, &source.instance, read_at).await?;
            if writes.stage || !writes.fields.is_empty() {
                leave_out(set, &source.instance, &deal.pipeline, &writes, observed);
            }
        }
        Ok(())
    }

    /// What the hub's writes of `deal` to `instance` change that had not
    /// settled (done, dead or discarded) before `read_at`.
    async fn unsettled_writes(
        &self,
        deal: uuid::Uuid,
        instance: &str,
        read_at: DateTime<Utc>,
    ) -> Result<Writes, StoreError> {
        let mut writes = Writes::default();
        let commands = self.store.commands_of_deal(deal).await?;
        if !commands.iter().any(|c| c.connector == instance && is_write(&c.op)) {
            return Ok(writes);
        }
        let settled: HashMap<uuid::Uuid, DateTime<Utc>> = self
            .store
            .deliveries_of_deal(deal)
            .await?
            .into_iter()
            .filter(|d| d.state.is_final())
            .map(|d| (d.command.id, d.updated_at))
            .collect();
        for command in commands.iter().filter(|c| c.connector == instance) {
            if settled.get(&command.id).is_some_and(|at| *at < read_at) {
                continue;
            }
            match &command.op {
                CommandOp::UpdateDeal { stage, fields, .. } | CommandOp::CreateDeal { stage, fields, .. } => {
                    writes.stage |= stage.is_some();
                    writes.fields.extend(fields.keys().cloned());
                }
                CommandOp::CreateTask { .. } | CommandOp::Notify { .. } | CommandOp::Comment { .. } => {}
            }
        }
        Ok(writes)
    }
}

fn is_write(op: &CommandOp) -> bool {
    matches!(op, CommandOp::UpdateDeal { .. } | CommandOp::CreateDeal { .. })
}

/// What the hub last wrote to a record: the stage code and system fields.
#[derive(Debug, Default)]
struct LastWrites {
    stage: Option<String>,
    fields: BTreeMap<String, Value>,
}

/// The value at a system field's name: a top-level key, or a dotted path
/// (`custom_fields_by_id.900`) when there is no such key.
fn value_at<'a>(data: &'a Value, name: &str) -> Option<&'a Value> {
    data.get(name).or_else(|| name.split('.').try_fold(data, |node, key| node.get(key)))
}

/// Whether a record's value is the one written, the way sources store
/// values: numbers as text (`"18500.00"` for `18500`), empty as `null`.
fn same_value(current: Option<&Value>, written: &Value) -> bool {
    let current = current.unwrap_or(&Value::Null);
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some(String::new()),
        _ => None,
    };
    match (current, written) {
        (a, b) if a == b => true,
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_value(Some(x), y))
        }
        _ => match (text(current), text(written)) {
            (Some(a), Some(b)) if a == b => true,
            (Some(a), Some(b)) => matches!((a.parse::<f64>(), b.parse::<f64>()), (Ok(x), Ok(y)) if x == y),
            _ => false,
        },
    }
}

/// The stage and system fields of unsettled writes.
#[derive(Debug, Default)]
struct Writes {
    stage: bool,
    fields: BTreeSet<String>,
}

/// Removes from `observed` the stage (when a write moves the deal) and every
/// canonical field whose system field a write sets.
fn leave_out(set: &MappingSet, instance: &str, pipeline: &str, writes: &Writes, observed: &mut DealObservation) {
    if writes.stage {
        observed.stage = None;
        observed.pipeline = None;
    }
    let written = |field: &str| set.system_field(instance, pipeline, field).is_some_and(|f| writes.fields.contains(f));
    if written("title") {
        observed.title = None;
    }
    if written("amount") {
        observed.amount = None;
    }
    if written("responsible") {
        observed.responsible = None;
    }
    if let Some(client) = observed.client.as_mut() {
        if written("client.name") {
            client.name.clear();
        }
        if written("client.inn") {
            client.inn = None;
        }
        if written("client.kpp") {
            client.kpp = None;
        }
        if written("client.emails") {
            client.emails.clear();
        }
        if written("client.phones") {
            client.phones.clear();
        }
    }
    observed.custom_fields.retain(|name, _| !written(&format!("custom.{name}")));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> MappingSet {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("mappings");
        MappingSet::load_dir(&dir).unwrap()
    }

    #[test]
    fn written_values_compare_the_way_sources_store_them() {
        let record = serde_json::json!({"UF_CRM_LOGISTICS_COST": "18500.00", "OPPORTUNITY": "0",
            "custom_fields_by_id": {"900": "approval"}, "EMPTY": null});
        assert!(same_value(value_at(&record, "UF_CRM_LOGISTICS_COST"), &serde_json::json!("18500")));
        assert!(same_value(value_at(&record, "OPPORTUNITY"), &serde_json::json!(0)));
        assert!(same_value(value_at(&record, "custom_fields_by_id.900"), &serde_json::json!("approval")));
        assert!(same_value(value_at(&record, "EMPTY"), &serde_json::json!("")));
        assert!(same_value(value_at(&record, "MISSING"), &serde_json::json!("")));
        assert!(!same_value(value_at(&record, "UF_CRM_LOGISTICS_COST"), &serde_json::json!("18500.01")));
        assert!(!same_value(value_at(&record, "custom_fields_by_id.900"), &serde_json::json!("done")));
        assert!(!same_value(value_at(&record, "MISSING"), &serde_json::json!("x")));
    }

    #[test]
    fn an_unsettled_write_hides_its_stage_and_fields_only() {
        let set = shipped();
        let record = serde_json::json!({"ID": "410", "CATEGORY_ID": "0", "STAGE_ID": "UC_EVALUATE", "TITLE": "Станки",
            "ASSIGNED_BY_ID": "7", "UF_CRM_LOGISTICS_STAGE": "new", "UF_CRM_LOGISTICS_COST": "10"});
        let mapped = set.map_record("bitrix24", "deal", &record).unwrap().remove(0);
        let CanonicalEvent::DealObserved { mut observed, .. } = mapped.event else { panic!() };
        let writes = Writes { stage: true, fields: BTreeSet::from(["UF_CRM_LOGISTICS_STAGE".to_owned()]) };
        leave_out(&set, "bitrix24", "sales", &writes, &mut observed);
        assert_eq!((observed.stage, observed.pipeline), (None, None));
        assert!(!observed.custom_fields.contains_key("logistics_stage"));
        assert!(observed.custom_fields.contains_key("logistics_cost"), "not written: still observed");
        assert_eq!(observed.title.as_deref(), Some("Станки"));
    }
}
