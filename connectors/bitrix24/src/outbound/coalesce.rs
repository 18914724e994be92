//! Commands of several deals as one `batch` call.
//!
//! When a portal's queue is deep the dispatcher hands the target up to 50
//! lane heads at once (`OutboundConnector::perform_all`). Each command that
//! is one REST call needing no read first goes into a single `batch`
//! request — one unit of the portal's 2 requests/s — run with `halt=0`, so
//! one command's failure does not stop the others; only the commands that
//! failed are retried, each alone. A command that needs a read first
//! (a retry that may already have been applied) or two calls (a pipeline
//! change through `crm.item.update`) is performed on its own after the
//! batch.

use dealbridge_core::delivery::{AttemptContext, DeliveryFailure, FailureClass, Performed};
use dealbridge_core::flow::{Command, CommandOp};
use serde_json::{Value, json};

use super::{Bitrix24Target, created_ref, not_found_is_permanent, task_fields};
use crate::rest::{BatchCommand, BatchOutcome, id_text};

impl Bitrix24Target {
    pub(super) async fn perform_batched(
        &self,
        commands: &[(&Command, AttemptContext)],
    ) -> Vec<Result<Performed, DeliveryFailure>> {
        let mut results: Vec<Option<Result<Performed, DeliveryFailure>>> = commands.iter().map(|_| None).collect();
        let mut calls: Vec<(usize, BatchCommand)> = Vec::new();
        let mut alone = Vec::new();
        for (index, (command, context)) in commands.iter().enumerate() {
            match self.single_call(command, *context).await {
                Ok(Some((method, params))) => {
                    calls.push((index, BatchCommand { key: format!("c{index}"), method: method.into(), params }))
                }
                Ok(None) => alone.push(index),
                Err(failure) => results[index] = Some(Err(failure)),
            }
        }
        if !calls.is_empty() {
            let batch: Vec<BatchCommand> = calls.iter().map(|(_, call)| call.clone()).collect();
            match self.client.batch(&batch, false).await {
                Ok(outcome) => {
                    for (index, call) in &calls {
                        results[*index] = Some(answer(commands[*index].0, call, &outcome));
                    }
                }
                Err(e) => {
                    let failure = DeliveryFailure::from(e);
                    for (index, _) in &calls {
                        results[*index] = Some(Err(failure.clone()));
                    }
                }
            }
        }
        for index in alone {
            let (command, context) = commands[index];
            results[index] = Some(self.perform_one(command, context).await);
        }
        results.into_iter().map(|r| r.expect("every command was answered")).collect()
    }

    /// The one REST call (method, params) a command amounts to; `None` when
    /// it needs a read first or more than one call.
    async fn single_call(
        &self,
        command: &Command,
        context: AttemptContext,
    ) -> Result<Option<(&'static str, Value)>, DeliveryFailure> {
        Ok(match &command.op {
            CommandOp::UpdateDeal { external_id, stage, fields } => {
                if context.possibly_applied {
                    return Ok(None);
                }
                let wanted = self.update_fields(external_id, stage.as_deref(), fields).await?;
                if wanted.is_empty() || wanted.contains_key("CATEGORY_ID") {
                    return Ok(None);
                }
                Some(("crm.deal.update", json!({ "id": external_id, "fields": wanted })))
            }
            CommandOp::CreateDeal { .. } if context.possibly_applied => None,
            CommandOp::CreateDeal { .. } => {
                Some(("crm.deal.add", json!({ "fields": self.create_fields(command).await? })))
            }
            CommandOp::CreateTask { .. } => Some(("tasks.task.add", json!({ "fields": task_fields(&command.op) }))),
            CommandOp::Notify { to, text, .. } => {
                Some(("im.notify.system.add", json!({ "USER_ID": to, "MESSAGE": text })))
            }
        })
    }
}

/// One command's part of a `batch` answer, read like the method's own.
fn answer(command: &Command, call: &BatchCommand, outcome: &BatchOutcome) -> Result<Performed, DeliveryFailure> {
    if let Some(e) = outcome.errors.get(&call.key) {
        return Err(match command.op {
            CommandOp::UpdateDeal { .. } => not_found_is_permanent(e.clone()),
            _ => e.clone().into(),
        });
    }
    let Some(value) = outcome.results.get(&call.key) else {
        // With `halt=0` every command runs; a missing answer means the
        // portal cut the batch short, so this one was not run.
        return Err(DeliveryFailure::new(
            FailureClass::Retryable,
            format!("{} was left out of the batch", call.method),
        ));
    };
    let unexpected =
        || DeliveryFailure::new(FailureClass::Retryable, format!("{} answered {value} in the batch", call.method));
    match &command.op {
        CommandOp::UpdateDeal { .. } if *value == Value::Bool(true) => Ok(Performed::Applied { created: None }),
        CommandOp::CreateDeal { .. } => {
            let id = id_text(value).ok_or_else(unexpected)?;
            Ok(Performed::Applied { created: Some(created_ref(command, id)) })
        }
        CommandOp::CreateTask { .. } if value.get("task").and_then(|t| t.get("id")).is_some() => {
            Ok(Performed::Applied { created: None })
        }
        CommandOp::Notify { .. } if id_text(value).is_some() => Ok(Performed::Applied { created: None }),
        _ => Err(unexpected()),
    }
}
