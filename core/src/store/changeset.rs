//! A change set: everything one step of processing writes, applied in one
//! transaction so state, refs, the outbox, the audit trail and event
//! outcomes never disagree.

use uuid::Uuid;

use super::EventState;
use crate::flow::effects::{Command, TraceStep};
use crate::model::{Deal, Invoice, Task, Timer};

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
    /// Invoices and orders to insert or replace, refs replaced like deals'.
    pub invoices: Vec<Invoice>,
    /// Tasks to insert or replace.
    pub tasks: Vec<Task>,
    /// Timers to insert or replace.
    pub timers: Vec<Timer>,
    /// Commands for the outbox, in order. One whose `idempotency_key` is
    /// already stored (or came earlier in the set) is dropped silently.
    pub commands: Vec<Command>,
    /// Audit trail steps to append, in order.
    pub trace: Vec<TraceStep>,
    /// Round-robin positions to store, per team.
    pub team_cursors: Vec<(String, u64)>,
    pub event_outcomes: Vec<EventOutcome>,
}

impl ChangeSet {
    pub fn is_empty(&self) -> bool {
        self.deals.is_empty()
            && self.invoices.is_empty()
            && self.tasks.is_empty()
            && self.timers.is_empty()
            && self.commands.is_empty()
            && self.trace.is_empty()
            && self.team_cursors.is_empty()
            && self.event_outcomes.is_empty()
    }
}
