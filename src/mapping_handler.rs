//! The `RecordHandler` of a running hub: maps a raw event's records through
//! the live mapping set and applies the canonical events through the flow
//! engine, recording the mapping version that handled the event in the same
//! transaction.
//!
//! The engine clock of an event is its `received_at` and its ids derive
//! from the raw event's id, so replaying stored events gives the same
//! canonical changes and commands as the first time.

use std::sync::Arc;

use async_trait::async_trait;
use dealbridge_core::connector::SourceRecord;
use dealbridge_core::mapping::MappingSet;
use dealbridge_core::runner::{EngineRunner, RunError, canonical_events};
use dealbridge_core::store::{EventOutcome, EventState, RawEvent, Store};

use crate::processor::{HandleError, Handled, RecordHandler};
use crate::reload::LiveSet;

pub struct MappingHandler {
    pub store: Arc<dyn Store>,
    pub runner: EngineRunner,
    pub mappings: Arc<LiveSet<MappingSet>>,
}

#[async_trait]
impl RecordHandler for MappingHandler {
    async fn handle(&self, event: &RawEvent, records: Vec<SourceRecord>) -> Result<Handled, HandleError> {
        let set = self.mappings.current();
        let events = canonical_events(&set, event, &records).map_err(HandleError::Permanent)?;
        if events.is_empty() {
            let kinds: Vec<&str> = records.iter().map(|r| r.kind.as_str()).collect();
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
