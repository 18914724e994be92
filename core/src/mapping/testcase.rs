//! Mapping test cases: YAML files in `mappings/tests/` that say "given this
//! canonical state, when these records and events arrive (and this much
//! time passes), expect this state, these tasks, notifications, timers and
//! commands". `dealbridge test` runs them through the mapping set and the
//! flow engine; this module defines the format and checks a case against
//! a set (every deal key, pipeline, stage and person it names exists).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use schemars::JsonSchema;
use serde::Deserialize;

use super::diagnostic::{Diagnostic, Diagnostics};
use super::spec::Name;
use super::yaml::{Located, parse_yaml};
use super::{MappingSet, delay};
use crate::model::ExternalRef;

/// One test case (one file).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// What the case shows, e.g. `S1: calculation ready moves the parent`.
    pub name: String,
    /// The clock when the case starts (RFC 3339 with offset). Default: the
    /// runner's fixed epoch `2025-03-03T09:00:00+03:00` (a Monday morning).
    #[serde(default)]
    pub now: Option<Located<String>>,
    /// Canonical state before the first step.
    #[serde(default)]
    pub given: Given,
    /// What happens, in order.
    pub steps: Vec<Located<Step>>,
    /// What must be true after the last step. Lists are subsets: things not
    /// listed may exist too, except under `commands` when `exact_commands`.
    pub expect: Expect,
}

/// Canonical state before the first step.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Given {
    /// Deals, each with a key the rest of the case refers to.
    #[serde(default)]
    pub deals: Vec<GivenDeal>,
    /// Invoices and orders of those deals.
    #[serde(default)]
    pub invoices: Vec<GivenInvoice>,
}

/// A deal that exists before the first step.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GivenDeal {
    /// Handle of the deal inside this case.
    pub key: Name,
    pub pipeline: Name,
    pub stage: Name,
    #[serde(default)]
    pub title: Option<String>,
    /// Money as `"<amount> <currency>"`, e.g. `"150000.00 RUB"`.
    #[serde(default)]
    pub amount: Option<String>,
    #[serde(default)]
    pub client: Option<crate::model::Client>,
    /// Canonical person id.
    #[serde(default)]
    pub responsible: Option<Name>,
    /// Key of the parent deal.
    #[serde(default)]
    pub parent: Option<Name>,
    /// Custom fields by name (without `custom.`).
    #[serde(default)]
    pub custom: BTreeMap<String, serde_json::Value>,
    /// Ids in connected systems.
    #[serde(default)]
    pub refs: Vec<ExternalRef>,
}

/// An invoice or order before the first step.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GivenInvoice {
    /// Handle of the invoice inside this case.
    pub key: Name,
    /// Key of its deal.
    pub deal: Name,
    /// Number as printed.
    pub number: String,
    /// `invoice` (default) or `order`.
    #[serde(default)]
    pub kind: Option<crate::model::InvoiceKind>,
    /// Total, e.g. `"100000.00 RUB"`.
    pub total: String,
    /// Paid so far; default zero.
    #[serde(default)]
    pub paid: Option<String>,
    /// Shipped so far; default zero.
    #[serde(default)]
    pub shipped: Option<String>,
}

/// One step of a case.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// A source record arrives (as a connector decoded it) and goes through
    /// `map_record`, then the engine.
    Record(RecordStep),
    /// A canonical event the mapping layer does not produce from records
    /// (payments, shipments, approvals, messages).
    Event(EventStep),
    /// The clock moves on (`3d`, `4 working hours`); due timers fire.
    Advance(Located<String>),
    /// Names a deal the hub created (e.g. a spawned child) and gives it the
    /// id the target system returned, so later records can refer to it.
    Bind(BindStep),
}

/// A source record.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordStep {
    /// Connector instance, e.g. `bitrix24`.
    pub connector: Name,
    /// Record kind, e.g. `deal`.
    pub kind: String,
    /// The record as the connector decoded it.
    pub data: serde_json::Value,
}

/// A canonical event; deals and invoices by key, money as `"<amount> <currency>"`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventStep {
    /// Money applied to an invoice (the runner computes the paid total).
    PaymentApplied { deal: Name, invoice: Name, amount: String },
    /// Shipments now cover the order in full.
    ShipmentsCoverOrder { deal: Name, invoice: Name },
    /// The open approval of the deal is decided.
    ApprovalDecided { deal: Name, approved: bool, by: Name },
    /// A message lands on the deal's timeline.
    MessageArrived {
        deal: Name,
        from: String,
        subject: String,
        #[serde(default)]
        body: String,
    },
}

/// Binds a deal the hub created to a key and an external id.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BindStep {
    /// New key for the deal.
    pub key: Name,
    /// Key of its parent: the child of this deal …
    pub child_of: Name,
    /// … in this pipeline (the most recently created one, if several).
    pub pipeline: Name,
    /// The id the target system gave it.
    #[serde(default)]
    pub r#ref: Option<ExternalRef>,
}

/// What must hold after the last step.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Deals by key (given or bound); only the fields listed are compared.
    #[serde(default)]
    pub deals: Vec<ExpectedDeal>,
    /// Open tasks that must exist.
    #[serde(default)]
    pub tasks: Vec<ExpectedTask>,
    /// Notifications that must have been sent.
    #[serde(default)]
    pub notifications: Vec<ExpectedNotification>,
    /// Timers that must be pending afterwards.
    #[serde(default)]
    pub timers: Vec<ExpectedTimer>,
    /// Timers that must not be pending afterwards (cancelled or fired).
    #[serde(default)]
    pub no_timers: Vec<ExpectedTimer>,
    /// Outbound commands, in order; each is a JSON subset of the command
    /// the engine produced at that position among those matched.
    #[serde(default)]
    pub commands: Vec<serde_json::Value>,
    /// When true, no commands besides those listed.
    #[serde(default)]
    pub exact_commands: bool,
    /// Texts each of which some mapping or flow error must contain; empty
    /// means no errors are allowed.
    #[serde(default)]
    pub errors: Vec<String>,
}

/// Expected fields of one deal.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectedDeal {
    pub key: Name,
    #[serde(default)]
    pub pipeline: Option<Name>,
    #[serde(default)]
    pub stage: Option<Name>,
    #[serde(default)]
    pub title: Option<String>,
    /// `"<amount> <currency>"`.
    #[serde(default)]
    pub amount: Option<String>,
    #[serde(default)]
    pub responsible: Option<Name>,
    /// Custom fields that must have these values.
    #[serde(default)]
    pub custom: BTreeMap<String, serde_json::Value>,
    /// The stages entered, oldest first (the whole history, given stage included).
    #[serde(default)]
    pub stage_history: Option<Vec<String>>,
}

/// An expected task.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectedTask {
    /// Key of the deal it belongs to.
    pub deal: Name,
    /// Canonical person id.
    pub assignee: Name,
    /// Text the title must contain.
    pub title_contains: String,
    /// `todo` (default) or `approval`.
    #[serde(default)]
    pub kind: Option<crate::model::TaskKind>,
}

/// An expected notification.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectedNotification {
    /// Canonical person id.
    pub to: Name,
    /// Text the notification must contain.
    pub text_contains: String,
}

/// A timer of a deal.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectedTimer {
    pub deal: Name,
    pub timer: String,
}

impl TestCase {
    /// Parses one case.
    pub fn from_str(file: &str, text: &str) -> Result<Self, Vec<Diagnostic>> {
        parse_yaml(file, text).map_err(|d| vec![d])
    }

    /// Loads every `*.yaml` case in `dir`, sorted by file name.
    pub fn load_dir(dir: &Path) -> Result<Vec<(String, TestCase)>, Vec<Diagnostic>> {
        let display = dir.display().to_string();
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| vec![Diagnostic::file(&display, format!("cannot read the test directory: {e}"))])?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        paths.sort();
        let mut cases = Vec::new();
        let mut problems = Vec::new();
        for path in paths {
            let name = path.display().to_string();
            match std::fs::read_to_string(&path) {
                Ok(text) => match Self::from_str(&name, &text) {
                    Ok(case) => cases.push((name, case)),
                    Err(d) => problems.extend(d),
                },
                Err(e) => problems.push(Diagnostic::file(&name, format!("cannot read: {e}"))),
            }
        }
        if problems.is_empty() { Ok(cases) } else { Err(problems) }
    }

    /// Checks the case against a mapping set: deal keys are defined before
    /// use, and pipelines, stages, people and delays exist or parse.
    pub fn check(&self, file: &str, set: &MappingSet) -> Vec<Diagnostic> {
        CaseChecker { file, set, keys: BTreeSet::new(), diags: Diagnostics::default() }.run(self)
    }
}

struct CaseChecker<'a> {
    file: &'a str,
    set: &'a MappingSet,
    keys: BTreeSet<String>,
    diags: Diagnostics,
}

impl CaseChecker<'_> {
    fn run(mut self, case: &TestCase) -> Vec<Diagnostic> {
        if let Some(now) = &case.now
            && chrono::DateTime::parse_from_rfc3339(now).is_err()
        {
            self.error(now, format!("`{}` is not an RFC 3339 time with offset", now.value));
        }
        for deal in &case.given.deals {
            if !self.keys.insert(deal.key.value.clone()) {
                self.error(&deal.key, format!("deal key `{}` is used twice", deal.key.value));
            }
            self.stage(&deal.pipeline, Some(&deal.stage));
            self.person(deal.responsible.as_ref());
        }
        for deal in &case.given.deals {
            if let Some(parent) = &deal.parent {
                self.key(parent);
            }
        }
        let invoices: BTreeSet<&str> = case.given.invoices.iter().map(|i| i.key.as_str()).collect();
        for invoice in &case.given.invoices {
            self.key(&invoice.deal);
        }
        for step in &case.steps {
            match &step.value {
                Step::Record(r) => self.connector(&r.connector),
                Step::Event(event) => self.event(event, &invoices),
                Step::Advance(d) => {
                    if let Err(message) = delay::parse_delay(d) {
                        self.error(d, message);
                    }
                }
                Step::Bind(bind) => {
                    self.key(&bind.child_of);
                    self.stage(&bind.pipeline, None);
                    self.keys.insert(bind.key.value.clone());
                }
            }
        }
        self.expect(&case.expect);
        self.diags.into_sorted()
    }

    fn event(&mut self, event: &EventStep, invoices: &BTreeSet<&str>) {
        let (deal, invoice) = match event {
            EventStep::PaymentApplied { deal, invoice, .. } | EventStep::ShipmentsCoverOrder { deal, invoice } => {
                (deal, Some(invoice))
            }
            EventStep::ApprovalDecided { deal, by, .. } => {
                self.person(Some(by));
                (deal, None)
            }
            EventStep::MessageArrived { deal, .. } => (deal, None),
        };
        self.key(deal);
        if let Some(invoice) = invoice.filter(|i| !invoices.contains(i.as_str())) {
            self.error(invoice, format!("unknown invoice key `{}`", invoice.value));
        }
    }

    fn expect(&mut self, expect: &Expect) {
        for deal in &expect.deals {
            self.key(&deal.key);
            if let Some(pipeline) = &deal.pipeline {
                self.stage(pipeline, deal.stage.as_ref());
            }
            self.person(deal.responsible.as_ref());
        }
        for task in &expect.tasks {
            self.key(&task.deal);
            self.person(Some(&task.assignee));
        }
        for notification in &expect.notifications {
            self.person(Some(&notification.to));
        }
        for timer in expect.timers.iter().chain(&expect.no_timers) {
            self.key(&timer.deal);
        }
    }

    fn error<T>(&mut self, at: &Located<T>, message: impl Into<String>) {
        self.diags.error(&at.span(self.file), message);
    }

    fn key(&mut self, key: &Name) {
        if !self.keys.contains(key.as_str()) {
            self.error(
                key,
                format!("unknown deal key `{}` (define it under `given.deals` or a `bind` step)", key.value),
            );
        }
    }

    fn connector(&mut self, connector: &Name) {
        if !self.set.has_connector(connector) {
            self.error(connector, format!("no binding reads from connector `{}`", connector.value));
        }
    }

    fn person(&mut self, person: Option<&Name>) {
        if let Some(person) = person
            && !self.set.plan().people.iter().any(|p| p.id == person.value)
        {
            self.error(person, format!("unknown person `{}`", person.value));
        }
    }

    fn stage(&mut self, pipeline: &Name, stage: Option<&Name>) {
        match self.set.plan().pipelines.get(pipeline.as_str()) {
            None => self.error(pipeline, format!("unknown pipeline `{}`", pipeline.value)),
            Some(stages) => {
                if let Some(stage) = stage.filter(|s| !stages.contains(&s.value)) {
                    self.error(stage, format!("unknown stage `{}` in pipeline `{}`", stage.value, pipeline.value));
                }
            }
        }
    }
}
