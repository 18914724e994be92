//! The slice of canonical state one event works on.
//!
//! The engine is a pure function of (plan, world, event, clock): it never
//! touches the store. The caller loads the deals an event concerns (the
//! deal, its parent and children, their invoices, open tasks and pending
//! timers) into a `World`, runs the engine, and writes back what the world
//! marks dirty in the same transaction as the audit trail and the outbox.
//! Should a cascade reach a deal that was not loaded, the engine stops with
//! `EngineError::NotLoaded` and the caller loads it and runs again; the
//! engine is deterministic, so the second run is the first one, completed.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::model::{Deal, ExternalRef, Invoice, InvoiceKind, Task, TaskKind, TaskStatus, Timer, TimerStatus};

/// Canonical state for one engine run, and what the run changed.
#[derive(Debug, Clone, Default)]
pub struct World {
    pub deals: BTreeMap<Uuid, Deal>,
    pub invoices: BTreeMap<Uuid, Invoice>,
    /// Tasks of the loaded deals (open ones and approvals at least).
    pub tasks: BTreeMap<Uuid, Task>,
    /// Timers of the loaded deals (pending ones at least).
    pub timers: BTreeMap<Uuid, Timer>,
    /// Round-robin position per team: how many members were assigned so far.
    pub team_cursors: BTreeMap<String, u64>,
    /// Open work per person (open tasks plus deals they are responsible
    /// for), for least-loaded assignment. Only members of teams matter.
    pub loads: BTreeMap<String, u64>,
    /// Deals the caller knows exist but did not load.
    pub not_loaded: BTreeSet<Uuid>,
    dirty: Dirty,
}

/// What a run changed, for the caller to write back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dirty {
    pub deals: BTreeSet<Uuid>,
    pub invoices: BTreeSet<Uuid>,
    pub tasks: BTreeSet<Uuid>,
    pub timers: BTreeSet<Uuid>,
    pub team_cursors: BTreeSet<String>,
}

impl World {
    pub fn insert_deal(&mut self, deal: Deal) {
        self.deals.insert(deal.id, deal);
    }

    /// The deal that carries `external`, by its system, instance and id.
    pub fn deal_by_ref(&self, external: &ExternalRef) -> Option<Uuid> {
        self.deals.values().find(|d| d.external_refs.iter().any(|r| r.same_record(external))).map(|d| d.id)
    }

    /// The deal that has this id in `instance`, whatever the system is called.
    pub fn deal_by_instance_id(&self, instance: &str, id: &str) -> Option<Uuid> {
        self.deals.values().find(|d| d.external_refs.iter().any(|r| r.instance == instance && r.id == id)).map(|d| d.id)
    }

    /// The invoice or order that carries `external`.
    pub fn invoice_by_ref(&self, external: &ExternalRef) -> Option<Uuid> {
        self.invoices.values().find(|i| i.external_refs.iter().any(|r| r.same_record(external))).map(|i| i.id)
    }

    /// Children of `parent` in id order (ids are v7: creation order).
    pub fn children(&self, parent: Uuid) -> impl Iterator<Item = &Deal> {
        self.deals.values().filter(move |d| d.parent_id == Some(parent))
    }

    /// Open tasks of a deal.
    pub fn open_tasks(&self, deal: Uuid) -> impl Iterator<Item = &Task> {
        self.tasks.values().filter(move |t| t.deal_id == Some(deal) && t.status == TaskStatus::Open)
    }

    /// The approval that holds `deal` out of `stage`, if any: the latest
    /// approval for that stage, unless it was granted (or cancelled). A
    /// rejection keeps the hold until a new approval is granted.
    pub fn hold_on(&self, deal: Uuid, stage: &str) -> Option<&Task> {
        self.tasks
            .values()
            .filter(|t| {
                t.deal_id == Some(deal) && t.kind == TaskKind::Approval && t.hold_stage.as_deref() == Some(stage)
            })
            .max_by_key(|t| (t.created_at, t.id))
            .filter(|t| matches!(t.status, TaskStatus::Open | TaskStatus::Rejected))
    }

    /// The pending timer of a deal with this name.
    pub fn pending_timer(&self, deal: Uuid, name: &str) -> Option<&Timer> {
        self.timers.values().find(|t| t.deal_id == deal && t.name == name && t.status == TimerStatus::Pending)
    }

    /// Pending timers due at or before `at`, earliest first (ties by id).
    pub fn due_timers(&self, at: DateTime<Utc>) -> Vec<Timer> {
        let mut due: Vec<Timer> =
            self.timers.values().filter(|t| t.status == TimerStatus::Pending && t.due_at <= at).cloned().collect();
        due.sort_by_key(|t| (t.due_at, t.id));
        due
    }

    /// Invoiced, paid and shipped totals of a deal's invoices and orders,
    /// in the deal's currency (other currencies are not summed). Orders and
    /// invoices for the same goods would double count, so invoices count
    /// when there are any and orders otherwise.
    pub fn deal_totals(&self, deal: Uuid) -> DealTotals {
        // Every flow scope asks, so the invoices are walked without a copy.
        let of_deal = || self.invoices.values().filter(move |i| i.deal_id == Some(deal));
        let has_invoices = of_deal().any(|i| i.kind == InvoiceKind::Invoice);
        let counted = of_deal().filter(|i| (i.kind == InvoiceKind::Invoice) == has_invoices);
        let mut totals = DealTotals::default();
        for invoice in counted {
            totals.invoiced += invoice.total.amount;
            totals.paid += invoice.paid.amount;
            totals.shipped += invoice.shipped.amount;
        }
        totals
    }

    pub fn dirty(&self) -> &Dirty {
        &self.dirty
    }

    /// Forgets what was changed (after the caller wrote it back).
    pub fn take_dirty(&mut self) -> Dirty {
        std::mem::take(&mut self.dirty)
    }

    pub(crate) fn deal_mut(&mut self, id: Uuid) -> Option<&mut Deal> {
        let deal = self.deals.get_mut(&id)?;
        self.dirty.deals.insert(id);
        Some(deal)
    }

    pub(crate) fn invoice_mut(&mut self, id: Uuid) -> Option<&mut Invoice> {
        let invoice = self.invoices.get_mut(&id)?;
        self.dirty.invoices.insert(id);
        Some(invoice)
    }

    pub(crate) fn task_mut(&mut self, id: Uuid) -> Option<&mut Task> {
        let task = self.tasks.get_mut(&id)?;
        self.dirty.tasks.insert(id);
        Some(task)
    }

    pub(crate) fn timer_mut(&mut self, id: Uuid) -> Option<&mut Timer> {
        let timer = self.timers.get_mut(&id)?;
        self.dirty.timers.insert(id);
        Some(timer)
    }

    pub(crate) fn put_deal(&mut self, deal: Deal) {
        self.dirty.deals.insert(deal.id);
        self.deals.insert(deal.id, deal);
    }

    pub(crate) fn put_invoice(&mut self, invoice: Invoice) {
        self.dirty.invoices.insert(invoice.id);
        self.invoices.insert(invoice.id, invoice);
    }

    pub(crate) fn put_task(&mut self, task: Task) {
        self.dirty.tasks.insert(task.id);
        self.tasks.insert(task.id, task);
    }

    pub(crate) fn put_timer(&mut self, timer: Timer) {
        self.dirty.timers.insert(timer.id);
        self.timers.insert(timer.id, timer);
    }

    pub(crate) fn advance_cursor(&mut self, team: &str) -> u64 {
        self.dirty.team_cursors.insert(team.to_owned());
        let cursor = self.team_cursors.entry(team.to_owned()).or_insert(0);
        let position = *cursor;
        *cursor += 1;
        position
    }
}

/// Sums over a deal's invoices (or orders), for guards such as "100 % paid".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DealTotals {
    pub invoiced: Decimal,
    pub paid: Decimal,
    pub shipped: Decimal,
}

/// Deterministic ids: UUID v7 carrying the engine clock, with the random
/// part derived from the cause event and a counter, so running the same
/// event through the same state twice yields the same ids (replay and
/// retries compare equal).
#[derive(Debug, Clone)]
pub struct IdSource {
    cause: Uuid,
    millis: u64,
    counter: u64,
}

impl IdSource {
    pub fn new(cause: Uuid, now: DateTime<Utc>) -> Self {
        Self { cause, millis: now.timestamp_millis().max(0) as u64, counter: 0 }
    }

    pub fn next_id(&mut self) -> Uuid {
        self.counter += 1;
        let name = self.counter.to_be_bytes();
        let digest = crate::model::name_based_id(&self.cause, &name);
        let random: [u8; 10] = digest.as_bytes()[6..16].try_into().expect("10 bytes");
        uuid::Builder::from_unix_timestamp_millis(self.millis, &random).into_uuid()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_v7_and_repeat_for_the_same_cause() {
        let cause = Uuid::now_v7();
        let now = Utc::now();
        let (mut a, mut b) = (IdSource::new(cause, now), IdSource::new(cause, now));
        let first = a.next_id();
        assert_eq!(first.get_version_num(), 7);
        assert_eq!(first, b.next_id());
        assert_ne!(a.next_id(), first);
        assert_ne!(IdSource::new(Uuid::now_v7(), now).next_id(), first);
    }
}
