//! Checks flows (triggers, conditions, actions, references to stages,
//! fields, people, teams and timers) and compiles them into the plan.

use std::collections::{BTreeMap, BTreeSet};

use super::stages::unknown_stage;
use crate::flow::plan::{Action, Assignee, DealTarget, FieldPath, Flow, SourceSpan, Trigger};
use crate::mapping::delay::parse_delay;
use crate::mapping::diagnostic::Diagnostics;
use crate::mapping::exprs::{self, Scope};
use crate::mapping::fields::check_flow_field;
use crate::mapping::merge::{Defined, MergedSpec};
use crate::mapping::spec::{
    ActionSpec, AssigneeSpec, CommentSpec, DealTargetSpec, FlowSpec, Name, StageRefSpec, TargetKind, TriggerSpec,
};
use crate::mapping::yaml::Located;

/// What flow checking refers to.
pub(crate) struct FlowContext<'a> {
    pub spec: &'a MergedSpec,
    pub pipelines: &'a BTreeMap<String, Vec<String>>,
    pub custom_fields: &'a BTreeSet<String>,
    /// Every timer some flow schedules.
    pub timers: BTreeSet<String>,
}

/// Timer names scheduled anywhere in the set.
pub(crate) fn scheduled_timers(spec: &MergedSpec) -> BTreeSet<String> {
    spec.flows
        .iter()
        .flat_map(|f| f.spec.then.iter())
        .filter_map(|a| match &a.value {
            ActionSpec::ScheduleTimer(t) => Some(t.timer.value.clone()),
            _ => None,
        })
        .collect()
}

pub(crate) fn flows(ctx: &FlowContext<'_>, diags: &mut Diagnostics) -> Vec<Flow> {
    ctx.spec.flows.iter().map(|def| FlowChecker { ctx, def, diags: &mut *diags }.flow()).collect()
}

struct FlowChecker<'a, 'd> {
    ctx: &'a FlowContext<'a>,
    def: &'a Defined<FlowSpec>,
    diags: &'d mut Diagnostics,
}

impl FlowChecker<'_, '_> {
    fn at<V>(&self, located: &Located<V>) -> SourceSpan {
        self.def.at(located)
    }

    fn flow(mut self) -> Flow {
        let flow = &self.def.spec;
        let trigger = self.trigger(&flow.when);
        let condition = flow.condition.as_ref().map(|c| self.expression(c));
        if flow.then.is_empty() {
            self.diags.error(&self.def.span(), format!("flow `{}` has no actions under `then`", flow.name.value));
        }
        let actions = flow.then.iter().map(|a| self.action(a, &trigger)).collect();
        Flow { name: flow.name.value.clone(), trigger, condition, actions, span: self.def.span() }
    }

    fn trigger(&mut self, when: &Located<TriggerSpec>) -> Trigger {
        match &when.value {
            TriggerSpec::DealEnters(r) => {
                let (pipeline, stage) = self.stage_ref(r);
                Trigger::DealEnters { pipeline, stage }
            }
            TriggerSpec::DealLeaves(r) => {
                let (pipeline, stage) = self.stage_ref(r);
                Trigger::DealLeaves { pipeline, stage }
            }
            TriggerSpec::ChildEnters(r) => {
                let (pipeline, stage) = self.stage_ref(r);
                Trigger::ChildEnters { pipeline, stage }
            }
            TriggerSpec::PaymentApplied => Trigger::PaymentApplied,
            TriggerSpec::InvoiceFullyPaid => Trigger::InvoiceFullyPaid,
            TriggerSpec::ShipmentsCoverOrder => Trigger::ShipmentsCoverOrder,
            TriggerSpec::MessageArrives => Trigger::MessageArrives,
            TriggerSpec::TimerFires(name) => {
                if !self.ctx.timers.contains(name.as_str()) {
                    self.diags.error(&self.at(name), format!("timer `{}` is never scheduled by any flow", name.value));
                }
                Trigger::TimerFires { timer: name.value.clone() }
            }
            TriggerSpec::ApprovalDecided(a) => Trigger::ApprovalDecided { approved: a.approved },
        }
    }

    fn stage_ref(&mut self, r: &StageRefSpec) -> (String, Option<String>) {
        if let Some(stage) = &r.stage {
            self.stage_in(Some(&r.pipeline), stage);
        } else {
            self.pipeline(&r.pipeline);
        }
        (r.pipeline.value.clone(), r.stage.as_ref().map(|s| s.value.clone()))
    }

    fn pipeline(&mut self, pipeline: &Name) -> Option<&[String]> {
        let stages = self.ctx.pipelines.get(pipeline.as_str());
        if stages.is_none() {
            let known: Vec<&str> = self.ctx.pipelines.keys().map(String::as_str).collect();
            self.diags.error(
                &self.at(pipeline),
                format!("unknown pipeline `{}`; known pipelines: {}", pipeline.value, known.join(", ")),
            );
        }
        stages.map(Vec::as_slice)
    }

    /// Checks a stage in a pipeline, or (without one) that some pipeline has it.
    fn stage_in(&mut self, pipeline: Option<&Name>, stage: &Name) {
        match pipeline {
            Some(p) => {
                if let Some(stages) = self.pipeline(p).map(<[String]>::to_vec)
                    && !stages.contains(&stage.value)
                {
                    self.diags.error(&self.at(stage), unknown_stage(&stage.value, &p.value, &stages));
                }
            }
            None => {
                if !self.ctx.pipelines.values().any(|stages| stages.contains(&stage.value)) {
                    self.diags.error(&self.at(stage), format!("unknown stage `{}`: no pipeline has it", stage.value));
                }
            }
        }
    }

    /// The pipeline of the flow's deal when the trigger names it.
    fn trigger_pipeline(&self) -> Option<&Name> {
        match &self.def.spec.when.value {
            TriggerSpec::DealEnters(r) | TriggerSpec::DealLeaves(r) | TriggerSpec::ChildEnters(r) => Some(&r.pipeline),
            _ => None,
        }
    }

    fn field(&mut self, field: &Name) -> FieldPath {
        if let Err(message) = check_flow_field(field, self.ctx.custom_fields) {
            self.diags.error(&self.at(field), message);
        }
        FieldPath(field.value.clone())
    }

    fn field_pairs<'n>(&mut self, pairs: impl Iterator<Item = (&'n Name, &'n Name)>) -> Vec<(FieldPath, FieldPath)> {
        pairs.map(|(from, to)| (self.field(from), self.field(to))).collect()
    }

    fn assignee(&mut self, assignee: &Located<AssigneeSpec>) -> Assignee {
        match &assignee.value {
            AssigneeSpec::Responsible => Assignee::Responsible,
            AssigneeSpec::ParentResponsible => Assignee::ParentResponsible,
            AssigneeSpec::Supervisor => Assignee::Supervisor,
            AssigneeSpec::Person(id) => {
                if !self.ctx.spec.people.contains_key(id.as_str()) {
                    self.diags.error(&self.at(id), format!("unknown person `{}`", id.value));
                }
                Assignee::Person(id.value.clone())
            }
            AssigneeSpec::Team(id) => {
                if !self.ctx.spec.teams.contains_key(id.as_str()) {
                    self.diags.error(&self.at(id), format!("unknown team `{}`", id.value));
                }
                Assignee::Team(id.value.clone())
            }
        }
    }

    fn template(&mut self, text: &Located<String>) -> crate::flow::plan::Expr {
        let span = self.at(text);
        let custom_fields = self.ctx.custom_fields;
        exprs::template(text, span, &Scope::Flow { custom_fields }, self.diags)
    }

    fn expression(&mut self, text: &Located<String>) -> crate::flow::plan::Expr {
        let span = self.at(text);
        let custom_fields = self.ctx.custom_fields;
        exprs::expression(text, span, &Scope::Flow { custom_fields }, self.diags)
    }

    fn delay(&mut self, text: &Located<String>) -> Option<crate::flow::plan::Delay> {
        parse_delay(text).map_err(|message| self.diags.error(&self.at(text), message)).ok()
    }

    fn action(&mut self, action: &Located<ActionSpec>, trigger: &Trigger) -> Action {
        match &action.value {
            ActionSpec::SpawnChild(s) => {
                self.stage_in(Some(&s.pipeline), &s.stage);
                let mut copy: Vec<(FieldPath, FieldPath)> =
                    s.copy.iter().map(|f| (self.field(f), FieldPath(f.value.clone()))).collect();
                copy.extend(self.field_pairs(s.copy_as.iter()));
                let responsible = s.responsible.as_ref().map_or(Assignee::Responsible, |r| self.assignee(r));
                let title = s.title.as_ref().map(|t| self.template(t));
                Action::SpawnChild {
                    pipeline: s.pipeline.value.clone(),
                    stage: s.stage.value.clone(),
                    copy,
                    responsible,
                    title,
                }
            }
            ActionSpec::Move(m) => {
                let context_pipeline = match m.target {
                    DealTargetSpec::This => self.trigger_pipeline().cloned(),
                    DealTargetSpec::Parent => None,
                };
                self.stage_in(m.pipeline.as_ref().or(context_pipeline.as_ref()), &m.stage);
                Action::Move {
                    target: target(m.target),
                    pipeline: m.pipeline.as_ref().map(|p| p.value.clone()),
                    stage: m.stage.value.clone(),
                }
            }
            ActionSpec::SetField(s) => Action::SetField {
                target: target(s.target),
                field: self.field(&s.field),
                value: self.expression(&s.value),
            },
            ActionSpec::CopyFields(c) => {
                if target(c.from) == target(c.to) {
                    self.diags.error(&self.at(action), "`copy_fields` needs different `from` and `to` (this, parent)");
                }
                Action::CopyFields { from: target(c.from), to: target(c.to), fields: self.field_pairs(c.fields.iter()) }
            }
            ActionSpec::MirrorChildStage(m) => {
                if !matches!(trigger, Trigger::ChildEnters { .. }) {
                    self.diags.error(&self.at(action), "`mirror_child_stage` works only in a `child_enters` flow");
                }
                Action::MirrorChildStage { field: self.field(&m.field) }
            }
            ActionSpec::CreateTask(t) => Action::CreateTask {
                title: self.template(&t.title),
                description: t.description.as_ref().map(|d| self.template(d)),
                assignee: t.assignee.as_ref().map_or(Assignee::Responsible, |a| self.assignee(a)),
                due: t.due.as_ref().and_then(|d| self.delay(d)),
            },
            ActionSpec::Notify(n) => Action::Notify { to: self.assignee(&n.to), text: self.template(&n.text) },
            ActionSpec::Comment(c) => self.comment(c),
            ActionSpec::ScheduleTimer(t) => {
                let after = self.delay(&t.after);
                Action::ScheduleTimer {
                    timer: t.timer.value.clone(),
                    after: after.unwrap_or(crate::flow::plan::Delay {
                        amount: 0,
                        unit: crate::flow::plan::DelayUnit::Minutes,
                        working: false,
                    }),
                }
            }
            ActionSpec::CancelTimer(name) => {
                if !self.ctx.timers.contains(name.as_str()) {
                    self.diags.error(
                        &self.at(name),
                        format!("timer `{}` is cancelled but never scheduled by any flow", name.value),
                    );
                }
                Action::CancelTimer { timer: name.value.clone() }
            }
            ActionSpec::RequireApproval(r) => {
                if let Some(hold) = &r.hold_stage {
                    let pipeline = self.trigger_pipeline().cloned();
                    self.stage_in(pipeline.as_ref(), hold);
                }
                Action::RequireApproval {
                    approver: self.assignee(&r.approver),
                    title: self.template(&r.title),
                    hold_stage: r.hold_stage.as_ref().map(|h| h.value.clone()),
                }
            }
            ActionSpec::Guard(g) => {
                if !matches!(trigger, Trigger::DealEnters { .. }) {
                    self.diags.error(&self.at(action), "`guard` works only in a `deal_enters` flow");
                }
                let otherwise = g
                    .otherwise
                    .iter()
                    .map(|nested| {
                        if matches!(nested.value, ActionSpec::Guard(_)) {
                            self.diags.error(&self.at(nested), "a guard's `otherwise` cannot hold another guard");
                        }
                        self.action(nested, trigger)
                    })
                    .collect();
                Action::Guard {
                    condition: self.expression(&g.condition),
                    message: self.template(&g.message),
                    otherwise,
                }
            }
            ActionSpec::CreateRecord(c) => Action::CreateRecord {
                connector: c.connector.value.clone(),
                system: c.system.value.clone(),
                create: c.create.clone(),
                fields: c.fields.iter().map(|(name, text)| (name.clone(), self.template(text))).collect(),
                document: c.record.as_ref().and_then(|record| self.document_kind(&c.connector, record)),
            },
        }
    }
}

impl FlowChecker<'_, '_> {
    /// What `create_record`'s `record` names: the binding of that connector
    /// and record kind, which says whether the new record is a document.
    fn document_kind(&mut self, connector: &Name, record: &Name) -> Option<String> {
        let mut bound =
            self.ctx.spec.bindings.values().map(|b| &b.spec).filter(|b| b.connector.value == connector.value);
        match bound.find(|b| b.record.value == record.value) {
            Some(binding) if binding.target == TargetKind::Deal => None,
            Some(_) => Some(record.value.clone()),
            None => {
                let message = format!(
                    "`record: {}`: no binding reads `{}` records of connector `{}`, so the new record could never be read back",
                    record.value, record.value, connector.value
                );
                self.diags.error(&self.at(record), message);
                None
            }
        }
    }
}

impl FlowChecker<'_, '_> {
    /// A comment's text is checked where it is written: the value itself
    /// when it is the bare text.
    fn comment(&mut self, comment: &Located<CommentSpec>) -> Action {
        match &comment.value {
            CommentSpec::Text(text) => {
                let located = Located { value: text.clone(), line: comment.line, column: comment.column };
                Action::Comment { target: DealTarget::This, text: self.template(&located) }
            }
            CommentSpec::On(on) => Action::Comment { target: target(on.target), text: self.template(&on.text) },
        }
    }
}

fn target(spec: DealTargetSpec) -> DealTarget {
    match spec {
        DealTargetSpec::This => DealTarget::This,
        DealTargetSpec::Parent => DealTarget::Parent,
    }
}
