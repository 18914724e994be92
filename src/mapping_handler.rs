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

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dealbridge_core::connector::FetchedRecords;
use dealbridge_core::flow::{Cause, CommandOp};
use dealbridge_core::mapping::MappingSet;
use dealbridge_core::model::{CanonicalEvent, DealObservation, ExternalRef};
use dealbridge_core::runner::{EngineRunner, RunError, canonical_events};
use dealbridge_core::store::{EventOutcome, EventState, RawEvent, Store, StoreError};

use crate::processor::{HandleError, Handled, RecordHandler};
use crate::reload::LiveSet;

pub struct MappingHandler {
    pub store: Arc<dyn Store>,
    pub runner: EngineRunner,
    pub mappings: Arc<LiveSet<MappingSet>>,
}

#[async_trait]
impl RecordHandler for MappingHandler {
    async fn handle(&self, event: &RawEvent, fetched: FetchedRecords) -> Result<Handled, HandleError> {
        let set = self.mappings.current();
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
                CommandOp::CreateTask { .. } | CommandOp::Notify { .. } => {}
            }
        }
        Ok(writes)
    }
}

fn is_write(op: &CommandOp) -> bool {
    matches!(op, CommandOp::UpdateDeal { .. } | CommandOp::CreateDeal { .. })
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
