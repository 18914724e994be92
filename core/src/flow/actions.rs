//! What each flow action does to the world, and the commands, tasks,
//! timers and notifications it leaves behind.
//!
//! An action that cannot run (no parent to move, nobody to assign) is a
//! reported problem; the other actions of the flow still run, because the
//! event itself is real and its other consequences are still owed.

use uuid::Uuid;

use super::calendar;
use super::context::{DealScope, Scope};
use super::deal_fields;
use super::effects::{Change, Notification, Problem, TraceKind};
use super::engine::{EngineError, FlowTarget, Run};
use super::outbound::{self, CommandOrigin, DealWrite, NewRecord};
use super::plan::{Action, Assignee, AssignmentRule, DealTarget, Delay, Expr, FieldPath, Flow};
use crate::model::{CanonicalEvent, Deal, Money, Task, TaskKind, TaskStatus, Timer, TimerStatus};

/// The `event` a flow reads: the trigger's own data.
#[derive(Debug, Clone, Default)]
pub(crate) struct EventScope {
    fields: serde_json::Map<String, serde_json::Value>,
    money: Vec<(String, Money)>,
}

impl EventScope {
    pub(crate) fn of(event: &CanonicalEvent) -> Self {
        let mut scope = Self::default();
        let mut put = |k: &str, v: serde_json::Value| {
            scope.fields.insert(k.to_owned(), v);
        };
        match event {
            CanonicalEvent::PaymentApplied { invoice_id, .. }
            | CanonicalEvent::InvoiceFullyPaid { invoice_id, .. }
            | CanonicalEvent::ShipmentsCoverOrder { invoice_id, .. } => {
                put("invoice_id", invoice_id.to_string().into())
            }
            CanonicalEvent::MessageArrived { message, .. } => {
                put("from", message.from.as_str().into());
                put("subject", message.subject.as_str().into());
                put("body", message.body.as_str().into());
            }
            CanonicalEvent::TimerFired { timer, .. } => put("timer", timer.as_str().into()),
            CanonicalEvent::ApprovalDecided { approved, by, .. } => {
                put("approved", (*approved).into());
                put("by", by.as_str().into());
            }
            CanonicalEvent::DealObserved { .. }
            | CanonicalEvent::DealDeleted { .. }
            | CanonicalEvent::InvoiceObserved { .. }
            | CanonicalEvent::ShipmentObserved { .. }
            | CanonicalEvent::PaymentObserved { .. } => {}
        }
        if let CanonicalEvent::PaymentApplied { amount, paid_total, invoice_total, .. } = event {
            scope.money = vec![
                ("amount".into(), amount.clone()),
                ("paid_total".into(), paid_total.clone()),
                ("invoice_total".into(), invoice_total.clone()),
            ];
        }
        scope
    }
}

impl<'e> Run<'e, '_> {
    /// What a flow on `deal` can read.
    /// Borrowed from the world: nothing is copied until an expression
    /// reads it.
    pub(crate) fn scope(&self, deal: Uuid) -> Result<Scope<'_>, EngineError> {
        let deal = self.deal_scope(deal)?;
        let parent = match deal.deal.parent_id {
            Some(parent) if self.world.not_loaded.contains(&parent) => return Err(EngineError::NotLoaded(parent)),
            Some(parent) if self.world.deals.contains_key(&parent) => Some(self.deal_scope(parent)?),
            _ => None,
        };
        let responsible = deal.deal.responsible.as_deref().and_then(|r| self.person(r));
        Ok(Scope {
            deal: Some(deal),
            parent,
            event: Some(&self.event_scope.fields),
            event_money: &self.event_scope.money,
            responsible,
        })
    }

    fn deal_scope(&self, deal: Uuid) -> Result<DealScope<'_>, EngineError> {
        self.require(deal)?;
        Ok(DealScope { deal: &self.world.deals[&deal], totals: self.world.deal_totals(deal) })
    }

    fn person(&self, id: &str) -> Option<&super::plan::Person> {
        self.engine.plan.people.iter().find(|p| p.id == id)
    }

    pub(crate) fn run_action(
        &mut self,
        flow: &'e Flow,
        index: usize,
        action: &Action,
        target: FlowTarget,
    ) -> Result<(), EngineError> {
        let occurrence = self.count_occurrence(&flow.name, index);
        let origin = outbound::action_origin(index, occurrence);
        let step = ActionStep { flow, origin, target };
        let result = match action {
            Action::SpawnChild { pipeline, stage, copy, responsible, title } => {
                self.spawn_child(&step, pipeline, stage, copy, responsible, title.as_ref())
            }
            Action::Move { target: which, pipeline, stage } => {
                self.move_deal(&step, *which, pipeline.as_deref(), stage)
            }
            Action::SetField { target: which, field, value } => self.set_field(&step, *which, field, value),
            Action::CopyFields { from, to, fields } => self.copy_fields(&step, *from, *to, fields),
            Action::MirrorChildStage { field } => self.mirror_child_stage(&step, field),
            Action::CreateTask { title, description, assignee, due } => {
                self.create_task(&step, TaskKind::Todo, title, description.as_ref(), assignee, *due, None)
            }
            Action::Notify { to, text } => self.notify(&step, to, text),
            Action::Comment { target: which, text } => self.comment(&step, *which, text),
            Action::ScheduleTimer { timer, after } => self.schedule_timer(&step, timer, *after),
            Action::CancelTimer { timer } => self.cancel_timer(&step, timer),
            Action::RequireApproval { approver, title, hold_stage } => {
                self.create_task(&step, TaskKind::Approval, title, None, approver, None, hold_stage.clone())
            }
            Action::CreateRecord { connector, system, create, fields, document } => {
                let record = NewRecord { connector, system, create, document: document.as_deref() };
                self.create_record(&step, &record, fields)
            }
            // Checked before any flow of the stage entry ran (see `guards`).
            Action::Guard { .. } => Ok(Ok(())),
        };
        match result? {
            Ok(()) => Ok(()),
            Err(message) => {
                self.problem(target.deal, target.depth, Problem::Action { flow: flow.name.clone(), message });
                Ok(())
            }
        }
    }

    /// Counts one more run of action `index` of `flow` in this event; the
    /// count so far, from 1.
    fn count_occurrence(&mut self, flow: &'e str, index: usize) -> u32 {
        match self.occurrences.iter_mut().find(|(f, i, _)| *i == index && *f == flow) {
            Some((_, _, count)) => {
                *count += 1;
                *count
            }
            None => {
                self.occurrences.push((flow, index, 1));
                1
            }
        }
    }

    /// The deal an action addresses.
    fn target_deal(&self, step: &ActionStep<'_>, which: DealTarget) -> Result<Result<Uuid, String>, EngineError> {
        match which {
            DealTarget::This => Ok(Ok(step.target.deal)),
            DealTarget::Parent => match self.world.deals[&step.target.deal].parent_id {
                Some(parent) => self.require(parent).map(|()| Ok(parent)),
                None => Ok(Err("the deal has no parent".into())),
            },
        }
    }

    fn origin<'s>(&self, step: &'s ActionStep<'_>) -> CommandOrigin<'s> {
        CommandOrigin {
            cause: self.cause.event_id,
            seed: self.cause.seed(),
            flow: &step.flow.name,
            action: std::borrow::Cow::Borrowed(&step.origin),
        }
    }

    fn action_trace(&mut self, step: &ActionStep<'_>, deal: Uuid, action: &str, detail: String) {
        let kind = TraceKind::Action { flow: step.flow.name.clone(), action: action.into(), detail };
        self.trace(deal, step.target.depth, kind);
    }

    /// Queues commands and records them in the trail.
    pub(crate) fn push_commands(&mut self, commands: Vec<super::effects::Command>, depth: u32) {
        for command in commands {
            let op = command.op.name().to_owned();
            let kind = TraceKind::Command {
                command: command.id,
                connector: command.connector.clone(),
                op,
                idempotency_key: command.idempotency_key.clone(),
            };
            if let Some(deal) = command.deal {
                self.trace(deal, depth, kind);
            }
            self.effects.commands.push(command);
        }
    }

    /// Writes a deal's changed stage and fields to the systems it lives in.
    pub(crate) fn write_out(&mut self, origin: &CommandOrigin<'_>, deal: Uuid, write: &DealWrite, depth: u32) {
        let (deal, ids) = (&self.world.deals[&deal], &mut self.ids);
        let commands = outbound::update_deal(self.engine.outbound, origin, deal, write, || ids.next_id());
        self.push_commands(commands, depth);
    }

    fn spawn_child(
        &mut self,
        step: &ActionStep<'_>,
        pipeline: &str,
        stage: &str,
        copy: &[(FieldPath, FieldPath)],
        responsible: &Assignee,
        title: Option<&Expr>,
    ) -> Result<Result<(), String>, EngineError> {
        let parent = self.world.deals[&step.target.deal].clone();
        let actor = format!("flow:{}", step.flow.name);
        let mut child = Deal::new(pipeline, stage, self.cause.at, &actor);
        child.id = self.ids.next_id();
        child.parent_id = Some(parent.id);
        child.title = match title {
            Some(t) => match self.engine.runtime.text(t, &self.scope(parent.id)?) {
                Ok(text) => text,
                Err(e) => return Ok(Err(e)),
            },
            None => parent.title.clone(),
        };
        let mut copied = Vec::new();
        for (from, to) in copy {
            let value = deal_fields::read(&parent, &from.0);
            if !value.is_null() && deal_fields::write(&mut child, &to.0, value.clone()).is_ok() {
                copied.push((to.0.clone(), value));
            }
        }
        child.responsible = match self.assign(responsible, parent.id)? {
            Ok(person) => Some(person),
            Err(e) => return Ok(Err(e)),
        };
        if let Some(person) = &child.responsible {
            *self.world.loads.entry(person.clone()).or_insert(0) += 1;
        }
        let id = child.id;
        let detail = format!("spawned {id} in {pipeline}/{stage}");
        self.world.put_deal(child.clone());
        self.action_trace(step, parent.id, "spawn_child", detail);
        let depth = step.target.depth;
        self.changed(Change::DealCreated { deal: id, pipeline: pipeline.into(), stage: stage.into() }, depth);
        let to = (pipeline.to_owned(), stage.to_owned());
        self.changed(Change::StageEntered { deal: id, from: None, to, actor, reverted: false }, depth);
        let origin = self.origin(step);
        let ids = &mut self.ids;
        let commands =
            outbound::create_child(self.engine.outbound, &origin, &parent, &child, &copied, || ids.next_id());
        self.push_commands(commands, depth);
        Ok(Ok(()))
    }

    fn move_deal(
        &mut self,
        step: &ActionStep<'_>,
        which: DealTarget,
        pipeline: Option<&str>,
        stage: &str,
    ) -> Result<Result<(), String>, EngineError> {
        let deal = match self.target_deal(step, which)? {
            Ok(deal) => deal,
            Err(e) => return Ok(Err(e)),
        };
        let current = &self.world.deals[&deal];
        let from = (current.pipeline.clone(), current.stage.clone());
        let pipeline = pipeline.unwrap_or(&from.0).to_owned();
        if from.0 == pipeline && from.1 == stage {
            return Ok(Ok(()));
        }
        let actor = format!("flow:{}", step.flow.name);
        let at = self.cause.at;
        if !self.world.deal_mut(deal).expect("required").move_to(&pipeline, stage, at, &actor) {
            return Ok(Ok(()));
        }
        self.action_trace(step, deal, "move", format!("{}/{} → {pipeline}/{stage}", from.0, from.1));
        let depth = step.target.depth;
        let to = (pipeline, stage.to_owned());
        self.changed(Change::StageEntered { deal, from: Some(from), to, actor, reverted: false }, depth);
        let origin = self.origin(step);
        self.write_out(&origin, deal, &DealWrite { stage: true, fields: Vec::new() }, depth);
        Ok(Ok(()))
    }

    /// Sets fields of one deal; the changed ones become changes and one
    /// command per system.
    fn write_fields(
        &mut self,
        step: &ActionStep<'_>,
        deal: Uuid,
        values: Vec<(String, serde_json::Value)>,
    ) -> Result<(), String> {
        let depth = step.target.depth;
        let mut written = Vec::new();
        for (field, value) in values {
            let before = deal_fields::read(&self.world.deals[&deal], &field);
            if before == value {
                continue;
            }
            let target = self.world.deal_mut(deal).expect("required");
            if deal_fields::write(target, &field, value.clone())? {
                target.updated_at = self.cause.at;
                self.changed(
                    Change::FieldChanged { deal, field: field.clone(), from: before, to: value.clone() },
                    depth,
                );
                written.push((field, value));
            }
        }
        if !written.is_empty() {
            let names: Vec<&str> = written.iter().map(|(f, _)| f.as_str()).collect();
            self.action_trace(step, deal, "set_fields", names.join(", "));
            let origin = self.origin(step);
            self.write_out(&origin, deal, &DealWrite { stage: false, fields: written }, depth);
        }
        Ok(())
    }

    fn set_field(
        &mut self,
        step: &ActionStep<'_>,
        which: DealTarget,
        field: &FieldPath,
        value: &Expr,
    ) -> Result<Result<(), String>, EngineError> {
        let deal = match self.target_deal(step, which)? {
            Ok(deal) => deal,
            Err(e) => return Ok(Err(e)),
        };
        let value = match self.engine.runtime.value(value, &self.scope(step.target.deal)?) {
            Ok(value) => value,
            Err(e) => return Ok(Err(e)),
        };
        Ok(self.write_fields(step, deal, vec![(field.0.clone(), value)]))
    }

    fn copy_fields(
        &mut self,
        step: &ActionStep<'_>,
        from: DealTarget,
        to: DealTarget,
        fields: &[(FieldPath, FieldPath)],
    ) -> Result<Result<(), String>, EngineError> {
        let (source, destination) = match (self.target_deal(step, from)?, self.target_deal(step, to)?) {
            (Ok(s), Ok(d)) => (s, d),
            (Err(e), _) | (_, Err(e)) => return Ok(Err(e)),
        };
        let values = fields
            .iter()
            .map(|(src, dst)| (dst.0.clone(), deal_fields::read(&self.world.deals[&source], &src.0)))
            .collect();
        Ok(self.write_fields(step, destination, values))
    }

    fn mirror_child_stage(
        &mut self,
        step: &ActionStep<'_>,
        field: &FieldPath,
    ) -> Result<Result<(), String>, EngineError> {
        let parent = match self.target_deal(step, DealTarget::Parent)? {
            Ok(parent) => parent,
            Err(e) => return Ok(Err(e)),
        };
        let stage = self.world.deals[&step.target.deal].stage.clone();
        Ok(self.write_fields(step, parent, vec![(field.0.clone(), stage.into())]))
    }

    #[allow(clippy::too_many_arguments)]
    fn create_task(
        &mut self,
        step: &ActionStep<'_>,
        kind: TaskKind,
        title: &Expr,
        description: Option<&Expr>,
        assignee: &Assignee,
        due: Option<Delay>,
        hold_stage: Option<String>,
    ) -> Result<Result<(), String>, EngineError> {
        let deal = step.target.deal;
        let scope = self.scope(deal)?;
        let runtime = self.engine.runtime;
        let texts = runtime.text(title, &scope).and_then(|t| {
            let d = description.map(|d| runtime.text(d, &scope)).transpose()?;
            Ok((t, d.unwrap_or_default()))
        });
        let (title, description) = match texts {
            Ok(texts) => texts,
            Err(e) => return Ok(Err(e)),
        };
        let assignee = match self.assign(assignee, deal)? {
            Ok(person) => person,
            Err(e) => return Ok(Err(e)),
        };
        let due = match due.map(|d| calendar::due_at(self.engine.plan.calendar.as_ref(), self.cause.at, d)).transpose()
        {
            Ok(due) => due,
            Err(e) => return Ok(Err(e.to_string())),
        };
        let task = Task {
            id: self.ids.next_id(),
            kind,
            title,
            description,
            assignee,
            due,
            deal_id: Some(deal),
            status: TaskStatus::Open,
            hold_stage,
            flow: Some(step.flow.name.clone()),
            external_refs: Vec::new(),
            created_at: self.cause.at,
        };
        *self.world.loads.entry(task.assignee.clone()).or_insert(0) += 1;
        let action = if kind == TaskKind::Approval { "require_approval" } else { "create_task" };
        self.action_trace(step, deal, action, [task.title.as_str(), " → ", &task.assignee].concat());
        let origin = self.origin(step);
        let (deal_record, ids) = (&self.world.deals[&deal], &mut self.ids);
        let commands = outbound::create_task(self.engine.outbound, &origin, deal_record, &task, || ids.next_id());
        self.world.put_task(task);
        self.push_commands(commands, step.target.depth);
        Ok(Ok(()))
    }

    /// A record for the deal in a system it does not live in yet; the
    /// connector links the new record's id to the deal once it exists.
    fn create_record(
        &mut self,
        step: &ActionStep<'_>,
        record: &NewRecord<'_>,
        fields: &[(String, Expr)],
    ) -> Result<Result<(), String>, EngineError> {
        let (deal, connector) = (step.target.deal, record.connector);
        if let Some(existing) = self.world.deals[&deal].external_refs.iter().find(|r| r.instance == connector) {
            let detail = format!("already in {connector} ({}): nothing created", existing.id);
            self.action_trace(step, deal, "create_record", detail);
            return Ok(Ok(()));
        }
        let scope = self.scope(deal)?;
        let mut written = std::collections::BTreeMap::new();
        for (name, template) in fields {
            match self.engine.runtime.text(template, &scope) {
                Ok(text) if text.trim().is_empty() => {}
                Ok(text) => {
                    written.insert(name.clone(), serde_json::Value::from(text));
                }
                Err(e) => return Ok(Err(format!("field `{name}`: {e}"))),
            }
        }
        let detail = format!(
            "asked {connector} to create a record with {}",
            written.keys().cloned().collect::<Vec<_>>().join(", ")
        );
        self.action_trace(step, deal, "create_record", detail);
        let origin = self.origin(step);
        let command = outbound::create_record(&origin, self.ids.next_id(), record, deal, written);
        self.push_commands(vec![command], step.target.depth);
        Ok(Ok(()))
    }

    fn notify(&mut self, step: &ActionStep<'_>, to: &Assignee, text: &Expr) -> Result<Result<(), String>, EngineError> {
        let deal = step.target.deal;
        let text = match self.engine.runtime.text(text, &self.scope(deal)?) {
            Ok(text) => text,
            Err(e) => return Ok(Err(e)),
        };
        let person = match self.assign(to, deal)? {
            Ok(person) => person,
            Err(e) => return Ok(Err(e)),
        };
        // A message for the parent's people goes out through the parent's systems.
        let about = match to {
            Assignee::ParentResponsible => self.world.deals[&deal].parent_id.unwrap_or(deal),
            _ => deal,
        };
        self.send_notification(&step.flow.name, &self.origin(step), about, &person, &text, step.target.depth);
        Ok(Ok(()))
    }

    /// A comment on the timeline of the flow's deal or its parent, in every
    /// system holding it. The text reads the flow's deal, as `notify` does.
    fn comment(
        &mut self,
        step: &ActionStep<'_>,
        which: DealTarget,
        text: &Expr,
    ) -> Result<Result<(), String>, EngineError> {
        let deal = match self.target_deal(step, which)? {
            Ok(deal) => deal,
            Err(e) => return Ok(Err(e)),
        };
        let text = match self.engine.runtime.text(text, &self.scope(step.target.deal)?) {
            Ok(text) if text.trim().is_empty() => return Ok(Err("the comment's text is empty".into())),
            Ok(text) => text,
            Err(e) => return Ok(Err(e)),
        };
        self.action_trace(step, deal, "comment", text.clone());
        let origin = self.origin(step);
        let (record, ids) = (&self.world.deals[&deal], &mut self.ids);
        let commands = outbound::comment(&origin, record, &text, || ids.next_id());
        self.push_commands(commands, step.target.depth);
        Ok(Ok(()))
    }

    /// Records a notification and sends it through the deal's systems.
    pub(crate) fn send_notification(
        &mut self,
        flow: &str,
        origin: &CommandOrigin<'_>,
        deal: Uuid,
        person: &str,
        text: &str,
        depth: u32,
    ) {
        // `concat` writes what `format!("{person}: {text}")` would, without `fmt`.
        let detail = [person, ": ", text].concat();
        let kind = TraceKind::Action { flow: flow.into(), action: "notify".into(), detail };
        self.trace(deal, depth, kind);
        self.effects.notifications.push(Notification {
            deal,
            to: person.to_owned(),
            text: text.to_owned(),
            flow: flow.to_owned(),
        });
        let (record, ids) = (&self.world.deals[&deal], &mut self.ids);
        let commands = outbound::notify(self.engine.outbound, origin, record, person, text, || ids.next_id());
        self.push_commands(commands, depth);
    }

    fn schedule_timer(
        &mut self,
        step: &ActionStep<'_>,
        name: &str,
        after: Delay,
    ) -> Result<Result<(), String>, EngineError> {
        let deal = step.target.deal;
        let due_at = match calendar::due_at(self.engine.plan.calendar.as_ref(), self.cause.at, after) {
            Ok(due) => due,
            Err(e) => return Ok(Err(e.to_string())),
        };
        // One pending timer per name and deal: scheduling again moves it.
        match self.world.pending_timer(deal, name).map(|t| t.id) {
            Some(id) => self.world.timer_mut(id).expect("pending").due_at = due_at,
            None => {
                let timer = Timer {
                    id: self.ids.next_id(),
                    deal_id: deal,
                    name: name.to_owned(),
                    due_at,
                    status: TimerStatus::Pending,
                    flow: step.flow.name.clone(),
                    created_at: self.cause.at,
                };
                self.world.put_timer(timer);
            }
        }
        self.action_trace(step, deal, "schedule_timer", format!("{name} at {}", due_at.to_rfc3339()));
        Ok(Ok(()))
    }

    fn cancel_timer(&mut self, step: &ActionStep<'_>, name: &str) -> Result<Result<(), String>, EngineError> {
        let deal = step.target.deal;
        if let Some(id) = self.world.pending_timer(deal, name).map(|t| t.id) {
            self.world.timer_mut(id).expect("pending").status = TimerStatus::Cancelled;
            self.action_trace(step, deal, "cancel_timer", name.to_owned());
        }
        Ok(Ok(()))
    }

    /// The person an assignee means for a flow on `deal`.
    fn assign(&mut self, assignee: &Assignee, deal: Uuid) -> Result<Result<String, String>, EngineError> {
        let record = &self.world.deals[&deal];
        let parent_responsible = || -> Result<Result<String, String>, EngineError> {
            let Some(parent) = record.parent_id else { return Ok(Err("the deal has no parent".into())) };
            self.require(parent)?;
            Ok(self.world.deals[&parent].responsible.clone().ok_or_else(|| "the parent deal has no responsible".into()))
        };
        Ok(match assignee {
            Assignee::Person(id) => Ok(id.clone()),
            Assignee::Responsible => record.responsible.clone().ok_or_else(|| "the deal has no responsible".into()),
            Assignee::ParentResponsible => return parent_responsible(),
            Assignee::Supervisor => match record.responsible.as_deref() {
                None => Err("the deal has no responsible, so no supervisor".into()),
                Some(r) => self
                    .person(r)
                    .and_then(|p| p.supervisor.clone())
                    .ok_or_else(|| format!("`{r}` has no supervisor in the people files")),
            },
            Assignee::Team(team) => self.team_member(team),
        })
    }

    /// Picks a team member by the team's rule (the caller counts the new work).
    fn team_member(&mut self, team: &str) -> Result<String, String> {
        let plan = self.engine.plan;
        let team = plan.teams.iter().find(|t| t.id == team).ok_or_else(|| format!("unknown team `{team}`"))?;
        if team.members.is_empty() {
            return Err(format!("team `{}` has no members", team.id));
        }
        let member = match team.rule {
            AssignmentRule::RoundRobin => {
                let position = self.world.advance_cursor(&team.id) % team.members.len() as u64;
                team.members[position as usize].clone()
            }
            AssignmentRule::LeastLoaded => team
                .members
                .iter()
                .min_by_key(|m| self.world.loads.get(*m).copied().unwrap_or(0))
                .cloned()
                .expect("members is not empty"),
        };
        Ok(member)
    }
}

/// One action being run: its flow, its key within the event, its deal.
pub(crate) struct ActionStep<'f> {
    pub flow: &'f Flow,
    pub origin: String,
    pub target: FlowTarget,
}
