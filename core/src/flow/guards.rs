//! Refusing a stage: approval holds and guards.
//!
//! Both are checked when a deal enters a stage and before any flow of that
//! entry runs, so a refused entry has no other consequence: the deal goes
//! back to where it came from (in canonical state and in every system it
//! lives in) and its responsible is told why.

use uuid::Uuid;

use super::effects::{Change, Problem, TraceKind};
use super::engine::{EngineError, FlowTarget, Run};
use super::outbound::{CommandOrigin, DealWrite};
use super::plan::{Action, Trigger};

/// Name under which holds appear in the trail and in idempotency keys.
const HOLD: &str = "approval-hold";

/// Action numbers of a guard's `otherwise` start here (times the guard's
/// own number), so their idempotency keys never meet the flow's actions.
const OTHERWISE_BASE: usize = 1000;

impl<'e> Run<'e, '_> {
    /// An open approval holds the deal out of this stage.
    pub(crate) fn refused_by_hold(
        &mut self,
        deal: Uuid,
        from: Option<&(String, String)>,
        to: &(String, String),
        depth: u32,
    ) -> Result<bool, EngineError> {
        let Some(task) = self.world.hold_on(deal, &to.1) else { return Ok(false) };
        let reason = format!("«{}» waits for approval: {} ({})", to.1, task.title, task.assignee);
        Ok(self.refuse(deal, from, to, HOLD, &reason, depth))
    }

    /// A guard of a flow on entering this stage does not hold.
    pub(crate) fn refused_by_guard(
        &mut self,
        deal: Uuid,
        from: Option<&(String, String)>,
        to: &(String, String),
        depth: u32,
    ) -> Result<bool, EngineError> {
        let plan = self.engine.plan;
        let entering = |t: &Trigger| matches!(t, Trigger::DealEnters { pipeline, stage } if *pipeline == to.0 && stage.as_ref().is_none_or(|s| *s == to.1));
        for flow in plan.flows.iter().filter(|f| entering(&f.trigger)) {
            let guards: Vec<_> = flow
                .actions
                .iter()
                .enumerate()
                .filter_map(|(index, a)| match a {
                    Action::Guard { condition, message, otherwise } => Some((index, condition, message, otherwise)),
                    _ => None,
                })
                .collect();
            if guards.is_empty() {
                continue;
            }
            let runtime = self.engine.runtime;
            if let Some(condition) = &flow.condition
                && !runtime.holds(condition, &self.scope(deal)?).unwrap_or(true)
            {
                continue;
            }
            for (index, condition, message, otherwise) in guards {
                // A guard that cannot be evaluated refuses: closing a deal on
                // a broken rule is worse than asking a person to look. (The
                // scope is taken again per guard; a refusal that could not
                // move the deal back left it as it was.)
                let scope = self.scope(deal)?;
                let refusal = match runtime.holds(condition, &scope) {
                    Ok(true) => None,
                    Ok(false) => Some(runtime.text(message, &scope).unwrap_or_else(|e| e)),
                    Err(e) => Some(format!("the guard could not be checked: {e}")),
                };
                if let Some(reason) = refusal
                    && self.refuse(deal, from, to, &flow.name, &reason, depth)
                {
                    let target = FlowTarget { deal, depth: depth + 1 };
                    for (nested, action) in otherwise.iter().enumerate() {
                        // Keys of nested actions stay apart from the flow's own.
                        self.run_action(flow, OTHERWISE_BASE * (index + 1) + nested, action, target)?;
                    }
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Moves the deal back and tells its responsible. False when there is
    /// nowhere to go back to (a deal first seen in a guarded stage): then
    /// the entry stands and the problem is reported.
    fn refuse(
        &mut self,
        deal: Uuid,
        from: Option<&(String, String)>,
        to: &(String, String),
        flow: &str,
        reason: &str,
        depth: u32,
    ) -> bool {
        let Some((pipeline, stage)) = from.cloned() else {
            let message = format!("cannot refuse «{}»: the deal has no previous stage ({reason})", to.1);
            self.problem(deal, depth, Problem::Action { flow: flow.to_owned(), message });
            return false;
        };
        let actor = format!("flow:{flow}");
        let at = self.cause.at;
        self.world.deal_mut(deal).expect("entered").move_to(&pipeline, &stage, at, &actor);
        let refused = TraceKind::Refused { flow: flow.to_owned(), stage: to.1.clone(), reason: reason.to_owned() };
        self.trace(deal, depth, refused);
        let back = Change::StageEntered { deal, from: Some(to.clone()), to: (pipeline, stage), actor, reverted: true };
        self.changed(back, depth);
        let origin = CommandOrigin {
            cause: self.cause.event_id,
            seed: self.cause.seed(),
            flow,
            action: format!("refuse.{depth}").into(),
        };
        self.write_out(&origin, deal, &DealWrite { stage: true, fields: Vec::new() }, depth);
        let origin = CommandOrigin { action: format!("refuse.{depth}.notify").into(), ..origin };
        match self.world.deals[&deal].responsible.clone() {
            Some(person) => self.send_notification(flow, &origin, deal, &person, reason, depth),
            None => {
                let message = format!("refused «{}» but the deal has no responsible to tell: {reason}", to.1);
                self.problem(deal, depth, Problem::Action { flow: flow.to_owned(), message });
            }
        }
        true
    }
}
