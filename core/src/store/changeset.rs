//! A change set: everything one step of processing writes, applied in one
//! transaction so state, refs and event outcomes never disagree.

use uuid::Uuid;

use super::EventState;
use crate::model::Deal;

/// The outcome to record for a processed raw event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventOutcome {
    pub event_id: Uuid,
    pub state: EventState,
}

/// Writes that must land together. Later layers (flow engine, outbox,
/// timers) add their own parts here rather than opening transactions of
/// their own.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChangeSet {
    /// Deals to insert or replace, with their external refs. A deal's refs
    /// are replaced by the ones given.
    pub deals: Vec<Deal>,
    pub event_outcomes: Vec<EventOutcome>,
}

impl ChangeSet {
    pub fn is_empty(&self) -> bool {
        self.deals.is_empty() && self.event_outcomes.is_empty()
    }
}
