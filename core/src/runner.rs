//! Runs the flow engine against the store.
//!
//! For a batch of canonical events (the records of one raw event, a fired
//! timer, a decided approval) it loads the deals they concern into one
//! `World`, runs the engine over them in order, and commits the new state,
//! the audit trail, the outbox commands and the raw event's outcome in one
//! transaction — or nothing. A dry run does the same and writes nothing,
//! which is what `replay --dry-run` compares.

use std::sync::Arc;

use uuid::Uuid;

use crate::connector::SourceRecord;
use crate::flow::{Cause, Effects, Engine, EngineError, World};
use crate::mapping::MappingSet;
use crate::model::{CanonicalEvent, ExternalRef, Money, PaidPart, PaymentMatch};
use crate::store::{
    ChangeSet, EventOutcome, RawEvent, Store, StoreError, StoredPayment, change_set_from_world, extend_world,
    load_world,
};

/// How many unloaded deals one run may pull in before it is called a bug.
const MAX_EXTENSIONS: usize = 64;

/// Why a batch was not applied.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The events cannot apply to the stored state; nothing was written.
    #[error("{0}")]
    Rejected(String),
}

/// The engine bound to a store.
#[derive(Clone)]
pub struct EngineRunner {
    store: Arc<dyn Store>,
    /// Notified after a commit that queued commands (wakes the outbox relay).
    commands_committed: Arc<tokio::sync::Notify>,
}

/// What a run produced and the state it left.
#[derive(Debug, Clone, Default)]
pub struct RunResult {
    pub effects: Effects,
    pub world: World,
}

impl EngineRunner {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store, commands_committed: Arc::new(tokio::sync::Notify::new()) }
    }

    /// Notified whenever a commit queued commands for delivery.
    pub fn commands_committed(&self) -> Arc<tokio::sync::Notify> {
        self.commands_committed.clone()
    }

    /// Runs `events` in order and commits everything with `outcome`.
    pub async fn apply(
        &self,
        set: &MappingSet,
        events: &[(CanonicalEvent, Cause)],
        outcome: Option<EventOutcome>,
    ) -> Result<RunResult, RunError> {
        let result = self.dry_run(set, events).await?;
        let mut changes: ChangeSet = change_set_from_world(&result.world, &result.effects);
        changes.event_outcomes.extend(outcome);
        if !changes.is_empty() {
            self.store.apply(&changes).await?;
        }
        if !changes.commands.is_empty() {
            self.commands_committed.notify_one();
        }
        record_metrics(&result.effects);
        Ok(result)
    }

    /// Fires the timers due at `now` (at most `limit`), each in its own
    /// transaction, at its own due time as the engine clock so a replay
    /// gives the same result. Returns how many fired. A timer whose deal is
    /// gone is cancelled rather than retried forever.
    pub async fn fire_due_timers(
        &self,
        set: &MappingSet,
        now: chrono::DateTime<chrono::Utc>,
        limit: u32,
    ) -> Result<usize, RunError> {
        let due = self.store.due_timers(now, limit).await?;
        for timer in &due {
            let event =
                CanonicalEvent::TimerFired { deal_id: timer.deal_id, timer: timer.name.clone(), timer_id: timer.id };
            let cause = Cause::new(timer.id, timer.due_at);
            match self.apply(set, &[(event, cause)], None).await {
                Ok(_) => {}
                Err(RunError::Rejected(reason)) => {
                    tracing::warn!(timer = %timer.name, deal = %timer.deal_id, %reason, "Timer cannot fire; cancelled.");
                    let cancelled =
                        crate::model::Timer { status: crate::model::TimerStatus::Cancelled, ..timer.clone() };
                    self.store.apply(&ChangeSet { timers: vec![cancelled], ..Default::default() }).await?;
                }
                Err(store) => return Err(store),
            }
        }
        metrics::counter!("dealbridge_timers_fired_total").increment(due.len() as u64);
        Ok(due.len())
    }

    /// Runs `events` in order on the stored state and writes nothing.
    pub async fn dry_run(&self, set: &MappingSet, events: &[(CanonicalEvent, Cause)]) -> Result<RunResult, RunError> {
        let seeds = self.seed_deals(events).await?;
        let mut world = load_world(self.store.as_ref(), &seeds).await?;
        self.load_documents(events, &mut world).await?;
        self.load_bank_parts(events, &mut world).await?;
        self.load_team_loads(set, &mut world).await?;
        let engine = Engine::new(set.plan(), set.runtime(), set);
        let mut effects = Effects::default();
        for (event, cause) in events {
            let produced = self.process(&engine, &mut world, event, cause).await?;
            extend_effects(&mut effects, produced);
        }
        Ok(RunResult { effects, world })
    }

    /// Runs one event on a world the caller keeps (replay chains many
    /// events on one world), loading deals the cascade reaches from the
    /// store and running again from the same starting state until the
    /// world holds all it needs.
    pub async fn process(
        &self,
        engine: &Engine<'_>,
        world: &mut World,
        event: &CanonicalEvent,
        cause: &Cause,
    ) -> Result<Effects, RunError> {
        for _ in 0..MAX_EXTENSIONS {
            let mut attempt = world.clone();
            match engine.process(&mut attempt, event, cause) {
                Ok(effects) => {
                    *world = attempt;
                    return Ok(effects);
                }
                Err(EngineError::NotLoaded(deal)) => {
                    if !extend_world(self.store.as_ref(), world, deal).await? {
                        return Err(RunError::Rejected(format!("deal {deal} is referred to but not stored")));
                    }
                }
                Err(EngineError::Rejected(message)) => return Err(RunError::Rejected(message)),
            }
        }
        Err(RunError::Rejected(format!("the event needed more than {MAX_EXTENSIONS} further deals")))
    }

    /// The stored deals the events name, directly or by external ref.
    pub async fn seed_deals(&self, events: &[(CanonicalEvent, Cause)]) -> Result<Vec<Uuid>, StoreError> {
        let mut seeds = Vec::new();
        for (event, _) in events {
            match event {
                CanonicalEvent::DealObserved { source, observed } => {
                    if let Some(deal) = self.store.find_deal(source).await? {
                        seeds.push(deal.id);
                    }
                    if let Some(parent) = &observed.parent
                        && let Some(deal) = self.store.find_deal(parent).await?
                    {
                        seeds.push(deal.id);
                    }
                }
                CanonicalEvent::DealDeleted { source } => {
                    seeds.extend(self.store.find_deal(source).await?.map(|d| d.id));
                }
                CanonicalEvent::InvoiceObserved { source, deal, .. } => {
                    if let Some(deal) = deal
                        && let Some(deal) = self.store.find_deal(deal).await?
                    {
                        seeds.push(deal.id);
                    }
                    seeds.extend(self.store.find_invoice(source).await?.and_then(|i| i.deal_id));
                    seeds.extend(self.store.find_deal(source).await?.map(|d| d.id));
                }
                CanonicalEvent::ShipmentObserved { covers, .. } => {
                    seeds.extend(self.store.find_invoice(covers).await?.and_then(|i| i.deal_id));
                }
                CanonicalEvent::PaymentObserved { observed, .. } => {
                    for share in &observed.shares {
                        seeds.extend(self.store.find_invoice(&share.pays).await?.and_then(|i| i.deal_id));
                    }
                }
                CanonicalEvent::PaymentApplied { deal_id, .. }
                | CanonicalEvent::InvoiceFullyPaid { deal_id, .. }
                | CanonicalEvent::ShipmentsCoverOrder { deal_id, .. }
                | CanonicalEvent::MessageArrived { deal_id, .. }
                | CanonicalEvent::TimerFired { deal_id, .. }
                | CanonicalEvent::ApprovalDecided { deal_id, .. } => seeds.push(*deal_id),
            }
        }
        seeds.sort();
        seeds.dedup();
        Ok(seeds)
    }

    /// The invoices and orders the events name by external ref, also those
    /// that belong to no deal (the world loads invoices by deal).
    async fn load_documents(&self, events: &[(CanonicalEvent, Cause)], world: &mut World) -> Result<(), StoreError> {
        for (event, _) in events {
            let named: Vec<&ExternalRef> = match event {
                CanonicalEvent::InvoiceObserved { source, .. } => vec![source],
                CanonicalEvent::ShipmentObserved { covers, .. } => vec![covers],
                CanonicalEvent::PaymentObserved { observed, .. } => observed.shares.iter().map(|s| &s.pays).collect(),
                _ => continue,
            };
            for named in named {
                if world.invoice_by_ref(named).is_none()
                    && let Some(invoice) = self.store.find_invoice(named).await?
                {
                    world.invoices.entry(invoice.id).or_insert(invoice);
                }
            }
        }
        Ok(())
    }

    /// The bank statement payments applied to the documents an ERP's
    /// payment pays, as parts of those documents (already in their paid
    /// amount), so the engine sees the same money reported twice.
    async fn load_bank_parts(&self, events: &[(CanonicalEvent, Cause)], world: &mut World) -> Result<(), StoreError> {
        let mut paid: Vec<Uuid> = Vec::new();
        for (event, _) in events {
            if let CanonicalEvent::PaymentObserved { observed, .. } = event {
                paid.extend(observed.shares.iter().filter_map(|s| world.invoice_by_ref(&s.pays)));
            }
        }
        paid.sort();
        paid.dedup();
        for stored in self.store.payments_applied_to(&paid).await? {
            // A payment split over several invoices is a part of each.
            for matched in stored.matched.iter().chain(&stored.also_matched) {
                let Some(part) = bank_part(&stored, matched) else { continue };
                let Some(invoice) = world.invoices.get_mut(&matched.invoice_id) else { continue };
                if !invoice.paid_parts.iter().any(|p| p.names(&part.payment)) {
                    invoice.paid_parts.push(part);
                }
            }
        }
        Ok(())
    }

    /// Least-loaded assignment compares every member of a team, loaded or not.
    async fn load_team_loads(&self, set: &MappingSet, world: &mut World) -> Result<(), StoreError> {
        let members: Vec<String> = set
            .plan()
            .teams
            .iter()
            .flat_map(|t| t.members.iter())
            .filter(|m| !world.loads.contains_key(*m))
            .cloned()
            .collect();
        if !members.is_empty() {
            let loads = self.store.person_loads(&members).await?;
            world.loads.extend(loads);
        }
        Ok(())
    }
}

/// The canonical events one raw event's records map to, each with its
/// cause. `Ok(empty)` when no binding is interested.
pub fn canonical_events(
    set: &MappingSet,
    event: &RawEvent,
    records: &[SourceRecord],
) -> Result<Vec<(CanonicalEvent, Cause)>, String> {
    let mut events = Vec::new();
    for (index, record) in records.iter().enumerate() {
        let mapped = set
            .map_record(&event.connector, &record.kind, &record.data)
            .map_err(|e| format!("record {} (`{}`): {e}", index + 1, record.kind))?;
        for m in mapped {
            let sequence = events.len() as u32;
            let cause = Cause { event_id: event.id, sequence, at: event.received_at, binding: Some(m.binding) };
            events.push((m.event, cause));
        }
    }
    Ok(events)
}

fn extend_effects(all: &mut Effects, more: Effects) {
    all.changes.extend(more.changes);
    all.commands.extend(more.commands);
    all.notifications.extend(more.notifications);
    all.trace.extend(more.trace);
    all.problems.extend(more.problems);
}

fn record_metrics(effects: &Effects) {
    metrics::counter!("dealbridge_engine_changes_total").increment(effects.changes.len() as u64);
    metrics::counter!("dealbridge_engine_commands_total").increment(effects.commands.len() as u64);
    metrics::counter!("dealbridge_engine_problems_total").increment(effects.problems.len() as u64);
}

/// A matched bank payment's share of one of its invoices (`matched`: its
/// first, or a further one of a split) as a part of that invoice.
fn bank_part(stored: &StoredPayment, matched: &PaymentMatch) -> Option<PaidPart> {
    // A payment that added nothing (the same money as a receipt already
    // counted) is no part of its own.
    if matched.paid_total.amount <= matched.paid_before.amount {
        return None;
    }
    let payment = stored.payment.external_refs.first()?.clone();
    Some(PaidPart {
        payment,
        number: stored.payment.document_number.clone(),
        date: Some(stored.payment.date),
        amount: Money {
            amount: matched.paid_total.amount - matched.paid_before.amount,
            currency: matched.paid_total.currency.clone(),
        },
        same_as: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    //! The runner over a real SQLite file: a timer scheduled by one hub
    //! process fires in the next one, exactly once.

    use std::path::PathBuf;

    use chrono::{DateTime, Duration, Utc};
    use serde_json::json;

    use super::*;
    use crate::model::{Deal, ExternalRef, TaskStatus, TimerStatus};
    use crate::store::SqliteStore;

    fn shipped_set() -> MappingSet {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../mappings");
        MappingSet::load_dir(&dir).unwrap_or_else(|d| panic!("{d:?}"))
    }

    async fn open(dir: &std::path::Path) -> Arc<dyn Store> {
        let store = SqliteStore::open(&format!("sqlite://{}/hub.db", dir.display()), 2).await.unwrap();
        store.migrate().await.unwrap();
        Arc::new(store)
    }

    fn t0() -> DateTime<Utc> {
        "2025-03-03T07:00:00Z".parse().unwrap()
    }

    #[tokio::test]
    async fn a_timer_survives_a_restart_and_fires_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let set = shipped_set();
        let deal_id = {
            let store = open(dir.path()).await;
            let mut deal = Deal::new("sales", "proposal_sent", t0(), "test");
            deal.title = "Станки".into();
            deal.responsible = Some("ivanov".into());
            deal.external_refs.push(ExternalRef::new("bitrix24", "bitrix24", "500"));
            store.apply(&ChangeSet { deals: vec![deal.clone()], ..Default::default() }).await.unwrap();
            let record = json!({"ID": "500", "CATEGORY_ID": "0", "STAGE_ID": "PREPAYMENT_INVOICE", "TITLE": "Станки", "ASSIGNED_BY_ID": "7"});
            let mapped = set.map_record("bitrix24", "deal", &record).unwrap().remove(0);
            let cause = Cause { binding: Some(mapped.binding), ..Cause::new(Uuid::now_v7(), t0()) };
            let runner = EngineRunner::new(store.clone());
            let result = runner.apply(&set, &[(mapped.event, cause)], None).await.unwrap();
            assert!(result.effects.problems.is_empty(), "{:?}", result.effects.problems);
            let timers = store.timers_of_deals(&[deal.id], true).await.unwrap();
            assert_eq!(timers.len(), 1);
            assert_eq!(timers[0].name, "payment-check");
            deal.id
            // The store and the runner are dropped here: the hub stops.
        };

        let store = open(dir.path()).await;
        let runner = EngineRunner::new(store.clone());
        assert_eq!(runner.fire_due_timers(&set, t0() + Duration::days(2), 10).await.unwrap(), 0, "not due yet");
        assert_eq!(runner.fire_due_timers(&set, t0() + Duration::days(4), 10).await.unwrap(), 1);
        assert_eq!(runner.fire_due_timers(&set, t0() + Duration::days(5), 10).await.unwrap(), 0, "fired once");

        let timers = store.timers_of_deals(&[deal_id], false).await.unwrap();
        assert_eq!(timers[0].status, TimerStatus::Fired);
        let tasks = store.tasks_of_deals(&[deal_id], true).await.unwrap();
        assert_eq!(tasks.len(), 1);
        assert!(tasks[0].title.starts_with("Что с оплатой?"), "{}", tasks[0].title);
        assert_eq!((tasks[0].assignee.as_str(), tasks[0].status), ("ivanov", TaskStatus::Open));
        let commands = store.commands_of_deal(deal_id).await.unwrap();
        let ops: Vec<String> =
            commands.iter().map(|c| serde_json::to_value(&c.op).unwrap()["op"].as_str().unwrap().to_owned()).collect();
        assert_eq!(ops, ["create_task"], "the task goes to Bitrix24");
        let trace = store.trace_of_deal(deal_id).await.unwrap();
        assert!(
            trace
                .iter()
                .any(|s| matches!(&s.kind, crate::flow::TraceKind::Action { action, .. } if action == "timer_fired"))
        );
    }

    #[tokio::test]
    async fn a_rejected_batch_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let set = shipped_set();
        let store = open(dir.path()).await;
        // A deal new to the hub whose record the mapping cannot give a stage.
        let event = CanonicalEvent::DealObserved {
            source: ExternalRef::new("bitrix24", "bitrix24", "9"),
            observed: Default::default(),
        };
        let cause = Cause::new(Uuid::now_v7(), t0());
        let runner = EngineRunner::new(store.clone());
        assert!(matches!(runner.apply(&set, &[(event, cause)], None).await, Err(RunError::Rejected(_))));
        assert!(store.find_deal(&ExternalRef::new("bitrix24", "bitrix24", "9")).await.unwrap().is_none());
    }
}
