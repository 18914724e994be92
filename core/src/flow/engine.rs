//! The engine: applies one canonical event to a `World` and runs the flows
//! its real changes trigger, breadth first, up to the plan's cascade depth.
//!
//! Determinism is the contract: the same plan, world, event, cause id and
//! clock give the same changes, ids, commands and trail. That is what makes
//! replay meaningful and retries after a crash harmless. Nothing here does
//! I/O or reads the wall clock.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::context::FlowRuntime;
use super::effects::{Change, Effects, Problem, TraceKind, TraceStep};
use super::outbound::OutboundMap;
use super::plan::{Flow, FlowPlan, Trigger};
use super::world::{IdSource, World};
use crate::model::{CanonicalEvent, TaskKind, TaskStatus, TimerStatus};

/// Why an event could not be applied at all (nothing of it is kept).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The cascade reached a deal the caller did not load: load it, run again.
    #[error("deal {0} is needed but was not loaded")]
    NotLoaded(Uuid),
    /// The event cannot apply to this state (unknown deal, a new deal
    /// without a pipeline, …).
    #[error("{0}")]
    Rejected(String),
}

/// Where an event came from, for ids, idempotency keys and the trail.
#[derive(Debug, Clone)]
pub struct Cause {
    /// The raw event (or the fired timer's id), as the trail records it.
    pub event_id: Uuid,
    /// Which canonical event of that raw event this is (one raw event may
    /// carry several records): 0 for the first.
    pub sequence: u32,
    /// The engine's clock for this event.
    pub at: DateTime<Utc>,
    /// The binding that mapped the record, when it came from one (shared
    /// with the binding and the trail steps of the event).
    pub binding: Option<Arc<str>>,
}

impl Cause {
    /// The first canonical event of `event_id`.
    pub fn new(event_id: Uuid, at: DateTime<Utc>) -> Self {
        Self { event_id, sequence: 0, at, binding: None }
    }

    /// Seeds the ids and idempotency keys of this canonical event: the raw
    /// event's id for the first, a stable derivation for the others.
    pub fn seed(&self) -> Uuid {
        match self.sequence {
            0 => self.event_id,
            n => crate::model::name_based_id(&self.event_id, &n.to_be_bytes()),
        }
    }
}

/// The engine bound to one plan; cheap to build per event.
pub struct Engine<'a> {
    pub plan: &'a FlowPlan,
    pub runtime: &'a FlowRuntime,
    pub outbound: &'a dyn OutboundMap,
}

impl<'a> Engine<'a> {
    pub fn new(plan: &'a FlowPlan, runtime: &'a FlowRuntime, outbound: &'a dyn OutboundMap) -> Self {
        Self { plan, runtime, outbound }
    }

    /// Applies `event` to `world` and runs the flows it triggers. On error
    /// the world may be partly changed: the caller discards it.
    pub fn process(&self, world: &mut World, event: &CanonicalEvent, cause: &Cause) -> Result<Effects, EngineError> {
        let mut run = Run {
            engine: self,
            world,
            cause,
            ids: IdSource::new(cause.seed(), cause.at),
            // Room for what a typical event records, so the lists do not
            // grow step by step (a trace step is a few hundred bytes).
            effects: Effects { changes: Vec::with_capacity(4), trace: Vec::with_capacity(8), ..Effects::default() },
            queue: ChangeQueue::default(),
            occurrences: Vec::new(),
            event_scope: super::actions::EventScope::of(event),
        };
        run.apply_event(event)?;
        run.drain()?;
        Ok(run.effects)
    }
}

/// One engine run: the state it works on and what it produced so far.
pub(crate) struct Run<'e, 'w> {
    pub engine: &'e Engine<'e>,
    pub world: &'w mut World,
    pub cause: &'e Cause,
    pub ids: IdSource,
    pub effects: Effects,
    /// Changes whose flows have not run yet, as positions in
    /// `effects.changes`, with the depth of the flow that made them (0: the
    /// event itself).
    pub queue: ChangeQueue,
    /// How often each (flow, action) ran in this event, for unique keys.
    /// An event runs a handful of actions: a short list, searched, costs
    /// less than a map keyed by a copy of the flow's name.
    pub occurrences: Vec<(&'e str, usize, u32)>,
    pub event_scope: super::actions::EventScope,
}

/// The changes of a run whose flows have not run yet, first in first out.
/// Every change is queued as it is recorded, so the queue is the run's
/// changes from a cursor on, and only their depths need keeping: the
/// first few inline, so that a typical event allocates nothing for them.
#[derive(Debug, Default)]
pub(crate) struct ChangeQueue {
    /// Depth of each change recorded, by position in `effects.changes`.
    depths: [u32; INLINE_DEPTHS],
    /// Depths past the inline ones.
    more: Vec<u32>,
    /// Changes recorded.
    len: usize,
    /// The first change whose flows have not run.
    next: usize,
}

/// Changes an event records without allocating for their depths.
const INLINE_DEPTHS: usize = 8;

impl ChangeQueue {
    /// Queues the change recorded at `position` (the changes recorded so far).
    fn push(&mut self, position: usize, depth: u32) {
        debug_assert_eq!(position, self.len, "every change is queued as it is recorded");
        match self.depths.get_mut(self.len) {
            Some(slot) => *slot = depth,
            None => self.more.push(depth),
        }
        self.len += 1;
    }

    /// The oldest queued change: its position and depth.
    fn pop(&mut self) -> Option<(usize, u32)> {
        if self.next == self.len {
            return None;
        }
        let position = self.next;
        self.next += 1;
        let depth = self.depths.get(position).copied().unwrap_or_else(|| self.more[position - INLINE_DEPTHS]);
        Some((position, depth))
    }
}

/// What a flow runs on: its deal and the trigger's depth.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FlowTarget {
    pub deal: Uuid,
    pub depth: u32,
}

impl<'e> Run<'e, '_> {
    fn apply_event(&mut self, event: &CanonicalEvent) -> Result<(), EngineError> {
        match event {
            CanonicalEvent::DealObserved { source, observed } => self.observe(source, observed),
            CanonicalEvent::DealDeleted { source } => {
                if let Some(deal) = self.world.deal_by_ref(source) {
                    let detail = format!("deleted in {} ({})", source.instance, source.id);
                    self.trace(deal, 0, TraceKind::Action { flow: String::new(), action: "deleted".into(), detail });
                }
                Ok(())
            }
            CanonicalEvent::InvoiceObserved { source, deal, observed } => {
                self.invoice_observed(source, deal.as_ref(), observed)
            }
            CanonicalEvent::ShipmentObserved { source, covers, observed } => {
                self.shipment_observed(source, covers, observed)
            }
            CanonicalEvent::PaymentObserved { source, observed } => self.payment_observed(source, observed),
            CanonicalEvent::PaymentApplied { deal_id, invoice_id, paid_total, .. } => {
                self.require(*deal_id)?;
                if let Some(invoice) = self.world.invoices.get(invoice_id)
                    && invoice.paid != *paid_total
                {
                    let invoice = self.world.invoice_mut(*invoice_id).expect("checked");
                    invoice.paid = paid_total.clone();
                    invoice.updated_at = self.cause.at;
                }
                self.fire(&|t| matches!(t, Trigger::PaymentApplied), *deal_id, 0)
            }
            CanonicalEvent::InvoiceFullyPaid { deal_id, .. } => {
                self.require(*deal_id)?;
                self.fire(&|t| matches!(t, Trigger::InvoiceFullyPaid), *deal_id, 0)
            }
            CanonicalEvent::ShipmentsCoverOrder { deal_id, .. } => {
                self.require(*deal_id)?;
                self.fire(&|t| matches!(t, Trigger::ShipmentsCoverOrder), *deal_id, 0)
            }
            CanonicalEvent::MessageArrived { deal_id, .. } => {
                self.require(*deal_id)?;
                self.fire(&|t| matches!(t, Trigger::MessageArrives), *deal_id, 0)
            }
            CanonicalEvent::TimerFired { deal_id, timer, timer_id } => self.timer_fired(*deal_id, timer, *timer_id),
            CanonicalEvent::ApprovalDecided { deal_id, task_id, approved, by } => {
                self.approval_decided(*deal_id, *task_id, *approved, by)
            }
        }
    }

    /// The deal must be in the world.
    pub(crate) fn require(&self, deal: Uuid) -> Result<(), EngineError> {
        if self.world.deals.contains_key(&deal) {
            Ok(())
        } else if self.world.not_loaded.contains(&deal) {
            Err(EngineError::NotLoaded(deal))
        } else {
            Err(EngineError::Rejected(format!("deal {deal} is not known")))
        }
    }

    fn timer_fired(&mut self, deal: Uuid, name: &str, timer_id: Uuid) -> Result<(), EngineError> {
        self.require(deal)?;
        // A cancelled or rescheduled timer fires nothing: cancelling is exact.
        let pending = self.world.timers.get(&timer_id).is_some_and(|t| t.status == TimerStatus::Pending);
        if !pending {
            return Ok(());
        }
        self.world.timer_mut(timer_id).expect("checked").status = TimerStatus::Fired;
        let detail = format!("timer `{name}` fired");
        self.trace(deal, 0, TraceKind::Action { flow: String::new(), action: "timer_fired".into(), detail });
        self.fire(&|t| matches!(t, Trigger::TimerFires { timer } if timer == name), deal, 0)
    }

    fn approval_decided(&mut self, deal: Uuid, task_id: Uuid, approved: bool, by: &str) -> Result<(), EngineError> {
        self.require(deal)?;
        let open =
            self.world.tasks.get(&task_id).is_some_and(|t| {
                t.kind == TaskKind::Approval && t.status == TaskStatus::Open && t.deal_id == Some(deal)
            });
        if !open {
            // Decided already, or not an approval of this deal: a repeat changes nothing.
            return Ok(());
        }
        let task = self.world.task_mut(task_id).expect("checked");
        task.status = if approved { TaskStatus::Approved } else { TaskStatus::Rejected };
        let detail = format!("{} by {by}: {}", if approved { "approved" } else { "rejected" }, task.title);
        self.trace(deal, 0, TraceKind::Action { flow: String::new(), action: "approval_decided".into(), detail });
        self.fire(
            &|t| matches!(t, Trigger::ApprovalDecided { approved: want } if want.is_none_or(|w| w == approved)),
            deal,
            0,
        )
    }

    /// Runs the queued changes' flows until nothing is left.
    fn drain(&mut self) -> Result<(), EngineError> {
        while let Some((position, depth)) = self.queue.pop() {
            // A share of the change, so the flows can record more changes
            // while its stages are borrowed.
            let change = Arc::clone(&self.effects.changes[position]);
            if let Change::StageEntered { deal, from, to, reverted: false, .. } = &*change {
                self.stage_entered(*deal, from.as_ref(), to, depth)?;
            }
        }
        Ok(())
    }

    /// Records a change: into the effects and the trail (one copy, shared
    /// by both), and onto the queue so its flows run.
    pub(crate) fn changed(&mut self, change: Change, depth: u32) {
        // Every change the event itself makes names the binding.
        let binding = if depth == 0 { self.cause.binding.clone() } else { None };
        let change = Arc::new(change);
        self.trace(change.deal(), depth, TraceKind::Change { binding, change: Arc::clone(&change) });
        self.queue.push(self.effects.changes.len(), depth);
        self.effects.changes.push(change);
    }

    pub(crate) fn trace(&mut self, deal: Uuid, depth: u32, kind: TraceKind) {
        self.effects.trace.push(TraceStep { deal, at: self.cause.at, cause_event: self.cause.event_id, depth, kind });
    }

    pub(crate) fn problem(&mut self, deal: Uuid, depth: u32, problem: Problem) {
        self.trace(deal, depth, TraceKind::Problem { problem: problem.clone() });
        self.effects.problems.push(problem);
    }

    /// A deal entered a stage: approval holds and guards first (a refused
    /// entry runs no flow at all), then the flows on leaving the old stage,
    /// entering the new one, and the parent's flows on its child entering.
    fn stage_entered(
        &mut self,
        deal: Uuid,
        from: Option<&(String, String)>,
        to: &(String, String),
        depth: u32,
    ) -> Result<(), EngineError> {
        if self.refused_by_hold(deal, from, to, depth)? || self.refused_by_guard(deal, from, to, depth)? {
            return Ok(());
        }
        if let Some((pipeline, stage)) = from {
            let leaves = |t: &Trigger| matches!(t, Trigger::DealLeaves { pipeline: p, stage: s } if p == pipeline && s.as_ref().is_none_or(|s| s == stage));
            self.fire(&leaves, deal, depth)?;
        }
        let (pipeline, stage) = to;
        let enters = |t: &Trigger| matches!(t, Trigger::DealEnters { pipeline: p, stage: s } if p == pipeline && s.as_ref().is_none_or(|s| s == stage));
        self.fire(&enters, deal, depth)?;
        let child_enters = |t: &Trigger| matches!(t, Trigger::ChildEnters { pipeline: p, stage: s } if p == pipeline && s.as_ref().is_none_or(|s| s == stage));
        if self.world.deals.get(&deal).is_some_and(|d| d.parent_id.is_some()) {
            self.fire(&child_enters, deal, depth)?;
        }
        Ok(())
    }

    /// Runs every flow whose trigger matches, in the order the files
    /// declare them, one level deeper than the change that triggered them.
    pub(crate) fn fire(
        &mut self,
        matches: &dyn Fn(&Trigger) -> bool,
        deal: Uuid,
        depth: u32,
    ) -> Result<(), EngineError> {
        let plan = self.engine.plan;
        for flow in plan.flows.iter().filter(|f| matches(&f.trigger)) {
            let flow_depth = depth + 1;
            if flow_depth > plan.max_cascade_depth {
                let problem = Problem::CascadeTooDeep {
                    flow: flow.name.clone(),
                    depth: flow_depth,
                    limit: plan.max_cascade_depth,
                };
                self.problem(deal, depth, problem);
                continue;
            }
            self.run_flow(flow, FlowTarget { deal, depth: flow_depth })?;
        }
        Ok(())
    }

    fn run_flow(&mut self, flow: &'e Flow, target: FlowTarget) -> Result<(), EngineError> {
        if let Some(condition) = &flow.condition {
            let scope = self.scope(target.deal)?;
            match self.engine.runtime.holds(condition, &scope) {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(message) => {
                    self.problem(target.deal, target.depth, Problem::Condition { flow: flow.name.clone(), message });
                    return Ok(());
                }
            }
        }
        for (index, action) in flow.actions.iter().enumerate() {
            self.run_action(flow, index, action, target)?;
        }
        Ok(())
    }
}
