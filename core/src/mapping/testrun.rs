//! Runs mapping test cases (`mappings/tests/*.yaml`) through the mapping
//! set and the flow engine, entirely in memory, on a simulated clock.
//!
//! A case is a story in an admin's words: given these deals, when these
//! records and events arrive and this much time passes, expect this state,
//! these tasks, notifications, timers and commands. `dealbridge test`
//! prints one line per case and ends with `N passed, M failed`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::testcase::{BindStep, EventStep, Expect, GivenDeal, GivenInvoice, Step, TestCase};
use super::{MappingSet, delay};
use crate::flow::{Cause, Command, Engine, Notification, World, calendar};
use crate::model::{
    CanonicalEvent, Deal, Invoice, InvoiceKind, InvoiceStatus, Message, MessageChannel, Money, TaskKind, TimerStatus,
};

/// The clock a case starts at unless it says `now`: a Monday morning.
pub const DEFAULT_NOW: &str = "2025-03-03T09:00:00+03:00";

/// The result of one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseResult {
    pub file: String,
    pub name: String,
    /// Empty when the case passed.
    pub failures: Vec<String>,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Runs one case against a set. Problems in the case itself (unknown keys,
/// stages) are failures too, named by `file:line:column`.
pub fn run_case(file: &str, case: &TestCase, set: &MappingSet) -> CaseResult {
    let problems = case.check(file, set);
    let failures = if problems.is_empty() {
        CaseRun::new(file, case, set).and_then(|run| run.play(case)).unwrap_or_else(|e| vec![e])
    } else {
        problems.iter().map(ToString::to_string).collect()
    };
    CaseResult { file: file.to_owned(), name: case.name.clone(), failures }
}

struct CaseRun<'a> {
    set: &'a MappingSet,
    world: World,
    now: DateTime<Utc>,
    /// Seeds the cause id of every step, so a case runs the same each time.
    seed: Uuid,
    steps_run: u64,
    deals: BTreeMap<String, Uuid>,
    invoices: BTreeMap<String, Uuid>,
    commands: Vec<Command>,
    notifications: Vec<Notification>,
    errors: Vec<String>,
}

impl<'a> CaseRun<'a> {
    fn new(file: &str, case: &TestCase, set: &'a MappingSet) -> Result<Self, String> {
        let raw_now = case.now.as_ref().map_or(DEFAULT_NOW, |n| n.value.as_str());
        let now = DateTime::parse_from_rfc3339(raw_now).map_err(|e| format!("{file}: `now`: {e}"))?.to_utc();
        let mut run = Self {
            set,
            world: World::default(),
            now,
            seed: Uuid::new_v5(&Uuid::NAMESPACE_URL, case.name.as_bytes()),
            steps_run: 0,
            deals: BTreeMap::new(),
            invoices: BTreeMap::new(),
            commands: Vec::new(),
            notifications: Vec::new(),
            errors: Vec::new(),
        };
        for deal in &case.given.deals {
            run.given_deal(deal)?;
        }
        for deal in &case.given.deals {
            if let Some(parent) = &deal.parent {
                let parent_id = run.deals[parent.as_str()];
                run.world.deals.get_mut(&run.deals[deal.key.as_str()]).expect("given").parent_id = Some(parent_id);
            }
        }
        for invoice in &case.given.invoices {
            run.given_invoice(invoice)?;
        }
        Ok(run)
    }

    fn next_cause(&mut self) -> Uuid {
        self.steps_run += 1;
        Uuid::new_v5(&self.seed, &self.steps_run.to_be_bytes())
    }

    fn given_deal(&mut self, given: &GivenDeal) -> Result<(), String> {
        let mut deal = Deal::new(&given.pipeline, &given.stage, self.now, "test:given");
        deal.id = Uuid::new_v5(&self.seed, given.key.as_bytes());
        deal.title = given.title.clone().unwrap_or_default();
        deal.amount = given.amount.as_deref().map(parse_money).transpose()?;
        deal.client = given.client.clone();
        deal.responsible = given.responsible.as_ref().map(|r| r.value.clone());
        deal.custom_fields = given.custom.iter().map(|(name, value)| (name.as_str().into(), value.clone())).collect();
        deal.external_refs = given.refs.clone();
        self.deals.insert(given.key.value.clone(), deal.id);
        self.world.insert_deal(deal);
        Ok(())
    }

    fn given_invoice(&mut self, given: &GivenInvoice) -> Result<(), String> {
        let total = parse_money(&given.total)?;
        let zero = Money { amount: 0.into(), currency: total.currency.clone() };
        let invoice = Invoice {
            id: Uuid::new_v5(&self.seed, format!("invoice:{}", given.key.value).as_bytes()),
            kind: given.kind.unwrap_or(InvoiceKind::Invoice),
            number: given.number.clone(),
            date: self.now.date_naive(),
            deal_id: Some(self.deals[given.deal.as_str()]),
            client: None,
            paid: given.paid.as_deref().map(parse_money).transpose()?.unwrap_or_else(|| zero.clone()),
            shipped: given.shipped.as_deref().map(parse_money).transpose()?.unwrap_or(zero),
            shipments: Vec::new(),
            paid_parts: Vec::new(),
            total,
            status: InvoiceStatus::Open,
            lines: Vec::new(),
            custom_fields: Default::default(),
            external_refs: Vec::new(),
            updated_at: self.now,
        };
        self.invoices.insert(given.key.value.clone(), invoice.id);
        self.world.invoices.insert(invoice.id, invoice);
        Ok(())
    }

    fn play(mut self, case: &TestCase) -> Result<Vec<String>, String> {
        for step in &case.steps {
            match &step.value {
                Step::Record(record) => self.record(&record.connector, &record.kind, &record.data),
                Step::Event(event) => self.event(event)?,
                Step::Advance(delay) => self.advance(delay)?,
                Step::Bind(bind) => self.bind(bind)?,
            }
        }
        Ok(self.check(&case.expect))
    }

    fn process(&mut self, event: &CanonicalEvent, binding: Option<std::sync::Arc<str>>) {
        let cause = Cause { binding, ..Cause::new(self.next_cause(), self.now) };
        let engine = Engine::new(self.set.plan(), self.set.runtime(), self.set);
        // The engine's world is discarded on error, as the store's transaction would be.
        let mut world = self.world.clone();
        match engine.process(&mut world, event, &cause) {
            Ok(effects) => {
                self.world = world;
                self.world.take_dirty();
                self.errors.extend(effects.problems.iter().map(ToString::to_string));
                self.commands.extend(effects.commands);
                self.notifications.extend(effects.notifications);
            }
            Err(e) => self.errors.push(e.to_string()),
        }
    }

    fn record(&mut self, connector: &str, kind: &str, data: &serde_json::Value) {
        match self.set.map_record(connector, kind, data) {
            Ok(mapped) => {
                for record in mapped {
                    self.process(&record.event, Some(record.binding));
                }
            }
            Err(e) => self.errors.push(e.to_string()),
        }
    }

    fn event(&mut self, step: &EventStep) -> Result<(), String> {
        match step {
            EventStep::PaymentApplied { deal, invoice, amount } => {
                let (deal_id, invoice_id) = (self.deals[deal.as_str()], self.invoices[invoice.as_str()]);
                let amount = parse_money(amount)?;
                let current = &self.world.invoices[&invoice_id];
                let paid_total = current.paid.checked_add(&amount).map_err(|e| e.to_string())?;
                let invoice_total = current.total.clone();
                let full = paid_total.amount >= invoice_total.amount;
                let event = CanonicalEvent::PaymentApplied { deal_id, invoice_id, amount, paid_total, invoice_total };
                self.process(&event, None);
                if full {
                    self.process(&CanonicalEvent::InvoiceFullyPaid { deal_id, invoice_id }, None);
                }
            }
            EventStep::ShipmentsCoverOrder { deal, invoice } => {
                let (deal_id, invoice_id) = (self.deals[deal.as_str()], self.invoices[invoice.as_str()]);
                let invoice = self.world.invoices.get_mut(&invoice_id).expect("checked");
                invoice.shipped = invoice.total.clone();
                self.process(&CanonicalEvent::ShipmentsCoverOrder { deal_id, invoice_id }, None);
            }
            EventStep::ApprovalDecided { deal, approved, by } => {
                let deal_id = self.deals[deal.as_str()];
                let task = self
                    .world
                    .open_tasks(deal_id)
                    .filter(|t| t.kind == TaskKind::Approval)
                    .max_by_key(|t| (t.created_at, t.id))
                    .map(|t| t.id)
                    .ok_or_else(|| format!("`{}` has no open approval to decide", deal.value))?;
                let event = CanonicalEvent::ApprovalDecided {
                    deal_id,
                    task_id: task,
                    approved: *approved,
                    by: by.value.clone(),
                };
                self.process(&event, None);
            }
            EventStep::MessageArrived { deal, from, subject, body } => {
                let deal_id = self.deals[deal.as_str()];
                let message = Message {
                    id: self.next_cause(),
                    channel: MessageChannel::Email,
                    from: from.clone(),
                    to: Vec::new(),
                    subject: subject.clone(),
                    body: body.clone(),
                    message_id: None,
                    thread: Vec::new(),
                    deal_id: Some(deal_id),
                    external_refs: Vec::new(),
                    received_at: self.now,
                };
                self.process(&CanonicalEvent::MessageArrived { deal_id, message }, None);
            }
        }
        Ok(())
    }

    /// Moves the clock on, firing every timer that falls due on the way at
    /// its due time, in order — as the scheduler would.
    fn advance(&mut self, raw: &str) -> Result<(), String> {
        let delay = delay::parse_delay(raw)?;
        let target = calendar::due_at(self.set.plan().calendar.as_ref(), self.now, delay).map_err(|e| e.to_string())?;
        while let Some(timer) = self.world.due_timers(target).into_iter().next() {
            self.now = self.now.max(timer.due_at);
            let event =
                CanonicalEvent::TimerFired { deal_id: timer.deal_id, timer: timer.name.clone(), timer_id: timer.id };
            self.process(&event, None);
            // A timer the engine could not fire must not stop the clock.
            if let Some(t) = self.world.timers.get_mut(&timer.id).filter(|t| t.status == TimerStatus::Pending) {
                t.status = TimerStatus::Fired;
            }
        }
        self.now = target.max(self.now);
        Ok(())
    }

    fn bind(&mut self, bind: &BindStep) -> Result<(), String> {
        let parent = self.deals[bind.child_of.as_str()];
        let child =
            self.world.children(parent).filter(|c| c.pipeline == bind.pipeline.value).map(|c| c.id).last().ok_or_else(
                || format!("`{}` has no child in `{}` to bind", bind.child_of.value, bind.pipeline.value),
            )?;
        if let Some(external) = &bind.r#ref {
            let deal = self.world.deals.get_mut(&child).expect("found");
            if !deal.external_refs.iter().any(|r| r.same_record(external)) {
                deal.external_refs.push(external.clone());
            }
        }
        self.deals.insert(bind.key.value.clone(), child);
        Ok(())
    }

    fn check(&self, expect: &Expect) -> Vec<String> {
        let mut failures = Vec::new();
        super::testcheck::deals(self, expect, &mut failures);
        super::testcheck::tasks_and_notifications(self, expect, &mut failures);
        super::testcheck::timers(self, expect, &mut failures);
        super::testcheck::commands(self, expect, &mut failures);
        super::testcheck::errors(&self.errors, &expect.errors, &mut failures);
        failures
    }
}

/// What the checks read of a finished run.
pub(crate) trait FinishedRun {
    fn world(&self) -> &World;
    fn deal_id(&self, key: &str) -> Option<Uuid>;
    fn deal_key(&self, id: Uuid) -> Option<&str>;
    fn commands(&self) -> &[Command];
    fn notifications(&self) -> &[Notification];
}

impl FinishedRun for CaseRun<'_> {
    fn world(&self) -> &World {
        &self.world
    }
    fn deal_id(&self, key: &str) -> Option<Uuid> {
        self.deals.get(key).copied()
    }
    fn deal_key(&self, id: Uuid) -> Option<&str> {
        self.deals.iter().find(|(_, d)| **d == id).map(|(k, _)| k.as_str())
    }
    fn commands(&self) -> &[Command] {
        &self.commands
    }
    fn notifications(&self) -> &[Notification] {
        &self.notifications
    }
}

pub(crate) fn parse_money(raw: &str) -> Result<Money, String> {
    raw.parse::<Money>().map_err(|e| format!("money `{raw}`: {e}"))
}
