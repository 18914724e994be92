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
//! batch. Smart-process items (`crm.item.add/update`) and timeline
//! comments go into the batch like deals.

use dealbridge_core::delivery::{AttemptContext, DeliveryFailure, FailureClass, Performed};
use dealbridge_core::flow::{Command, CommandOp};
use serde_json::{Value, json};

use super::items::{item_fields, item_type};
use super::{Bitrix24Target, created_ref, not_found_is_permanent, task_fields};
use crate::records::{PortalRecord, item_code};
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
            CommandOp::UpdateDeal { .. } | CommandOp::CreateDeal { .. } if context.possibly_applied => None,
            CommandOp::UpdateDeal { external_id, stage, fields } => match PortalRecord::parse(external_id) {
                PortalRecord::Deal(id) => {
                    let wanted = self.update_fields(id, stage.as_deref(), fields).await?;
                    if wanted.is_empty() || wanted.contains_key("CATEGORY_ID") {
                        return Ok(None);
                    }
                    Some(("crm.deal.update", json!({ "id": id, "fields": wanted })))
                }
                PortalRecord::Item { entity_type_id, id } => {
                    let wanted = item_fields(stage.as_deref(), fields)?;
                    if wanted.is_empty() {
                        return Ok(None);
                    }
                    Some(("crm.item.update", json!({ "entityTypeId": entity_type_id, "id": id, "fields": wanted })))
                }
            },
            CommandOp::CreateDeal { create, .. } => match item_type(create)? {
                None => Some(("crm.deal.add", json!({ "fields": self.create_fields(command).await? }))),
                Some(entity_type_id) => Some((
                    "crm.item.add",
                    json!({ "entityTypeId": entity_type_id, "fields": self.item_create_fields(command)? }),
                )),
            },
            CommandOp::Comment { external_id, text } => {
                let (entity_type, id) = PortalRecord::parse(external_id).timeline();
                let fields = json!({ "ENTITY_TYPE": entity_type, "ENTITY_ID": id, "COMMENT": text });
                Some(("crm.timeline.comment.add", json!({ "fields": fields })))
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
            CommandOp::UpdateDeal { .. } | CommandOp::Comment { .. } => not_found_is_permanent(e.clone()),
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
        CommandOp::UpdateDeal { .. } if call.method == "crm.item.update" && value.get("item").is_some() => {
            Ok(Performed::Applied { created: None })
        }
        CommandOp::CreateDeal { .. } => {
            let id = created_id(call, value).ok_or_else(unexpected)?;
            Ok(Performed::Applied { created: Some(created_ref(command, id)) })
        }
        CommandOp::Comment { .. } if id_text(value).is_some() => Ok(Performed::Applied { created: None }),
        CommandOp::CreateTask { .. } if value.get("task").and_then(|t| t.get("id")).is_some() => {
            Ok(Performed::Applied { created: None })
        }
        CommandOp::Notify { .. } if id_text(value).is_some() => Ok(Performed::Applied { created: None }),
        _ => Err(unexpected()),
    }
}

/// The id a create in the batch answered: a deal's id, or an item's code.
fn created_id(call: &BatchCommand, value: &Value) -> Option<String> {
    if call.method != "crm.item.add" {
        return id_text(value);
    }
    let entity_type_id = call.params.get("entityTypeId").and_then(Value::as_u64)?;
    let id = value.get("item").and_then(|item| item.get("id")).and_then(id_text)?;
    Some(item_code(u32::try_from(entity_type_id).ok()?, &id))
}
