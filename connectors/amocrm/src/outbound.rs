//! The outbound half: the hub's commands as API v4 calls on one account.
//!
//! | command | call |
//! | --- | --- |
//! | `update_deal` | `PATCH /api/v4/leads/{id}` with `status_id` (and `pipeline_id`) for the stage and the fields |
//! | `create_deal` | `POST /api/v4/leads` with the binding's `create` fields (e.g. `pipeline_id`), the stage, `responsible_user_id`, the fields and the parent link (custom field `parent_field_id`); the new id is `_embedded.leads[0].id` |
//! | `create_task` | `POST /api/v4/tasks` on the lead (`entity_type: leads`), due at the deadline or in a day |
//! | `notify` | `POST /api/v4/leads/{id}/notes`, a common note on the lead: amoCRM has no API to message a user |
//! | `comment` | `POST /api/v4/leads/{id}/notes`, a common note on the lead (its timeline) |
//!
//! Stages are status ids. Mapping files may write `<pipeline_id>:<status_id>`
//! to move a lead to another pipeline; "won" (142) and "lost" (143) are the
//! same in every pipeline, so a bare 142/143 is sent with the pipeline the
//! lead is in (read first).
//!
//! Fields are the lead's own (`name`, `price`, `status_id`, `pipeline_id`,
//! `responsible_user_id`, `loss_reason_id`) and custom fields named
//! `custom_fields_by_id.<field id>`, the path the webhook records give them
//! (sent as `custom_fields_values`).
//!
//! "Already applied" is checked only when an earlier attempt may have
//! reached the account (`possibly_applied`): an update first reads the lead
//! and skips the write when it already holds the values. A lead create
//! whose earlier attempt may have gone through is not repeated: amoCRM has
//! no field the hub could find its own lead by, so the command fails for an
//! admin to check the account and retry or discard it.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::Utc;
use dealbridge_core::delivery::{AttemptContext, DeliveryFailure, FailureClass, OutboundConnector, Performed};
use dealbridge_core::flow::{Command, CommandOp};
use dealbridge_core::model::ExternalRef;
use serde_json::{Map, Value, json};

use crate::api::{ApiClient, ApiError, id_text};

/// The source-path prefix of a custom field in `lead` records.
pub const CUSTOM_FIELD_PREFIX: &str = "custom_fields_by_id.";

/// Statuses that exist in every pipeline: "won" and "lost".
const CLOSED_STATUSES: [&str; 2] = ["142", "143"];

/// Lead fields written as integers.
const INTEGER_FIELDS: [&str; 5] = ["status_id", "pipeline_id", "responsible_user_id", "loss_reason_id", "price"];

/// A configured `amocrm` instance's outbound half.
pub struct AmocrmTarget {
    client: ApiClient,
    parent_field_id: Option<u64>,
}

fn permanent(message: String) -> DeliveryFailure {
    DeliveryFailure::new(FailureClass::Permanent, message)
}

/// A gone lead cannot be changed, whatever else is wrong.
fn not_found_is_permanent(e: ApiError) -> DeliveryFailure {
    let not_found = e.is_not_found();
    let mut failure: DeliveryFailure = e.into();
    if not_found {
        failure.class = FailureClass::Permanent;
        failure.message = format!("{} (the lead was deleted or never existed)", failure.message);
    }
    failure
}

/// An integer as amoCRM wants it, from a number or its text (`"18500.00"`).
fn integer(field: &str, value: &Value) -> Result<Value, DeliveryFailure> {
    let text = match value {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().replace([' ', '\u{a0}'], "").replace(',', "."),
        other => return Err(permanent(format!("`{field}` must be a number, not {other}"))),
    };
    let number: f64 = text.parse().map_err(|_| permanent(format!("`{field}` `{text}` is not a number")))?;
    if !number.is_finite() || number.fract() != 0.0 || number.abs() > 9.0e15 {
        return Err(permanent(format!("`{field}` `{text}` is not a whole number (amoCRM keeps integers)")));
    }
    Ok(json!(number as i64))
}

/// `<pipeline>:<status>` or `<status>`.
fn parse_stage(stage: &str) -> Result<(Option<&str>, &str), DeliveryFailure> {
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (pipeline, status) = match stage.split_once(':') {
        Some((p, s)) => (Some(p), s),
        None => (None, stage),
    };
    if !numeric(status) || pipeline.is_some_and(|p| !numeric(p)) {
        return Err(permanent(format!(
            "stage `{stage}` is not an amoCRM status id (`<status_id>` or `<pipeline_id>:<status_id>`)"
        )));
    }
    Ok((pipeline, status))
}

/// The request body of a lead's fields: its own fields at the top level,
/// custom fields in `custom_fields_values`.
fn lead_fields<'a>(
    fields: impl IntoIterator<Item = (&'a String, &'a Value)>,
) -> Result<Map<String, Value>, DeliveryFailure> {
    let mut lead = Map::new();
    let mut custom = Vec::new();
    for (name, value) in fields {
        if let Some(id) = name.strip_prefix(CUSTOM_FIELD_PREFIX) {
            let field_id = integer(name, &json!(id))?;
            let values: Vec<Value> = match value {
                Value::Array(items) => items.iter().map(|v| json!({ "value": v })).collect(),
                Value::Null => Vec::new(),
                v => vec![json!({ "value": v })],
            };
            custom.push(json!({ "field_id": field_id, "values": values }));
        } else if INTEGER_FIELDS.contains(&name.as_str()) {
            lead.insert(name.clone(), integer(name, value)?);
        } else if name == "name" {
            lead.insert(name.clone(), json!(value.as_str().map(str::to_owned).unwrap_or_else(|| value.to_string())));
        } else {
            return Err(permanent(format!(
                "field `{name}` cannot be written to an amoCRM lead (write name, price, status_id, pipeline_id, \
                 responsible_user_id, loss_reason_id or {CUSTOM_FIELD_PREFIX}<field id>)"
            )));
        }
    }
    if !custom.is_empty() {
        lead.insert("custom_fields_values".into(), Value::Array(custom));
    }
    Ok(lead)
}

fn value_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The texts of a custom field's values in a lead as read.
fn custom_values(lead: &Map<String, Value>, field_id: &Value) -> Vec<String> {
    let fields = lead.get("custom_fields_values").and_then(Value::as_array);
    let field = fields.into_iter().flatten().find(|f| f.get("field_id").and_then(value_text) == value_text(field_id));
    let values = field.and_then(|f| f.get("values")).and_then(Value::as_array);
    values.into_iter().flatten().filter_map(|v| v.get("value").and_then(value_text)).collect()
}

/// Whether a lead as read already holds every wanted value.
fn holds(lead: &Map<String, Value>, wanted: &Map<String, Value>) -> bool {
    wanted.iter().all(|(key, value)| match key.as_str() {
        "custom_fields_values" => value.as_array().into_iter().flatten().all(|field| {
            let want: Vec<String> =
                field["values"].as_array().into_iter().flatten().filter_map(|v| value_text(&v["value"])).collect();
            custom_values(lead, &field["field_id"]) == want
        }),
        _ => lead.get(key).and_then(value_text) == value_text(value),
    })
}

impl AmocrmTarget {
    pub fn new(client: ApiClient, parent_field_id: Option<u64>) -> Self {
        Self { client, parent_field_id }
    }

    pub fn client(&self) -> &ApiClient {
        &self.client
    }

    /// Sets `status_id` (and `pipeline_id`) for a stage; a bare won/lost
    /// status takes the pipeline of `lead` (read when not already known).
    async fn put_stage(
        &self,
        stage: &str,
        into: &mut Map<String, Value>,
        lead: Option<&str>,
    ) -> Result<(), DeliveryFailure> {
        let (pipeline, status) = parse_stage(stage)?;
        into.insert("status_id".into(), integer("status_id", &json!(status))?);
        if let Some(pipeline) = pipeline {
            into.insert("pipeline_id".into(), integer("pipeline_id", &json!(pipeline))?);
        } else if CLOSED_STATUSES.contains(&status) && !into.contains_key("pipeline_id") {
            let Some(id) = lead else {
                return Err(permanent(format!("status {status} needs a pipeline: write `<pipeline_id>:{status}`")));
            };
            let read = self.client.lead(id).await.map_err(DeliveryFailure::from)?;
            let pipeline = read.as_ref().and_then(|l| l.get("pipeline_id")).and_then(id_text);
            let pipeline = pipeline.ok_or_else(|| permanent(format!("lead {id} was deleted or never existed")))?;
            into.insert("pipeline_id".into(), integer("pipeline_id", &json!(pipeline))?);
        }
        Ok(())
    }

    async fn update_lead(
        &self,
        id: &str,
        stage: Option<&str>,
        fields: &BTreeMap<String, Value>,
        context: AttemptContext,
    ) -> Result<Performed, DeliveryFailure> {
        let mut wanted = lead_fields(fields)?;
        if let Some(stage) = stage {
            self.put_stage(stage, &mut wanted, Some(id)).await?;
        }
        if wanted.is_empty() {
            return Ok(Performed::AlreadyApplied { created: None });
        }
        if context.possibly_applied {
            let lead = self.client.lead(id).await.map_err(DeliveryFailure::from)?;
            let Some(lead) = lead else {
                return Err(permanent(format!("lead {id} was deleted or never existed")));
            };
            if holds(&lead, &wanted) {
                return Ok(Performed::AlreadyApplied { created: None });
            }
        }
        self.client.update_lead(id, &wanted).await.map_err(not_found_is_permanent)?;
        Ok(Performed::Applied { created: None })
    }

    async fn create_lead(&self, command: &Command, context: AttemptContext) -> Result<Performed, DeliveryFailure> {
        let CommandOp::CreateDeal { create, parent_external_id, stage, responsible, fields, .. } = &command.op else {
            unreachable!("called for create_deal only");
        };
        if context.possibly_applied {
            return Err(permanent(
                "an earlier attempt to create this lead may have succeeded (its answer was lost): check the \
                 amoCRM account, then retry the command or discard it"
                    .into(),
            ));
        }
        let create: BTreeMap<String, Value> = create.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        let mut lead = lead_fields(create.iter().chain(fields.iter()))?;
        if let Some(stage) = stage {
            self.put_stage(stage, &mut lead, None).await?;
        }
        if let Some(user) = responsible {
            lead.insert("responsible_user_id".into(), integer("responsible_user_id", &json!(user))?);
        }
        if let (Some(parent), Some(field)) = (parent_external_id, self.parent_field_id) {
            let link = json!({ "field_id": field, "values": [{ "value": parent }] });
            match lead.get_mut("custom_fields_values").and_then(Value::as_array_mut) {
                Some(custom) => custom.push(link),
                None => {
                    lead.insert("custom_fields_values".into(), json!([link]));
                }
            }
        }
        let id = self.client.add_lead(&lead).await?;
        let created = ExternalRef::new(command.system.clone(), command.connector.clone(), id);
        Ok(Performed::Applied { created: Some(created) })
    }
}

#[async_trait]
impl OutboundConnector for AmocrmTarget {
    fn kind(&self) -> &'static str {
        "amocrm"
    }

    /// The account: amoCRM counts its 7 requests per second per account.
    fn rate_key(&self, _command: &Command) -> String {
        format!("amocrm:{}", self.client.account())
    }

    async fn perform(&self, command: &Command, context: AttemptContext) -> Result<Performed, DeliveryFailure> {
        match &command.op {
            CommandOp::UpdateDeal { external_id, stage, fields } => {
                self.update_lead(external_id, stage.as_deref(), fields, context).await
            }
            CommandOp::CreateDeal { .. } => self.create_lead(command, context).await,
            CommandOp::CreateTask { external_id, title, description, responsible, deadline, .. } => {
                let Some(lead) = external_id else {
                    return Err(permanent("an amoCRM task needs the lead it belongs to".into()));
                };
                let text = if description.is_empty() { title.clone() } else { format!("{title}\n\n{description}") };
                let due = deadline.unwrap_or_else(|| Utc::now() + chrono::Duration::days(1));
                let mut task = Map::new();
                task.insert("text".into(), json!(text));
                task.insert("complete_till".into(), json!(due.timestamp()));
                task.insert("entity_id".into(), integer("entity_id", &json!(lead))?);
                task.insert("entity_type".into(), json!("leads"));
                task.insert("responsible_user_id".into(), integer("responsible_user_id", &json!(responsible))?);
                self.client.add_task(&task).await.map_err(not_found_is_permanent)?;
                Ok(Performed::Applied { created: None })
            }
            CommandOp::Notify { text, external_id, .. } => {
                let Some(lead) = external_id else {
                    return Err(permanent(
                        "amoCRM has no API to message a user: a notice needs a lead to note it on".into(),
                    ));
                };
                self.client.add_lead_note(lead, text).await.map_err(not_found_is_permanent)?;
                Ok(Performed::Applied { created: None })
            }
            CommandOp::Comment { external_id, text } => {
                self.client.add_lead_note(external_id, text).await.map_err(not_found_is_permanent)?;
                Ok(Performed::Applied { created: None })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_become_a_lead_body() {
        let fields = BTreeMap::from([
            ("name".to_owned(), json!("Поставка")),
            ("price".to_owned(), json!("18500.00")),
            ("custom_fields_by_id.900".to_owned(), json!("approval")),
            ("custom_fields_by_id.901".to_owned(), json!(["a", "b"])),
        ]);
        let lead = lead_fields(&fields).unwrap();
        assert_eq!(
            Value::Object(lead),
            json!({"name": "Поставка", "price": 18500, "custom_fields_values": [
                {"field_id": 900, "values": [{"value": "approval"}]},
                {"field_id": 901, "values": [{"value": "a"}, {"value": "b"}]}]})
        );
        let refused = [("TITLE", json!("x")), ("price", json!("12.5")), ("status_id", json!("abc"))];
        for (name, value) in refused {
            let err = lead_fields(&BTreeMap::from([(name.to_owned(), value)])).unwrap_err();
            assert_eq!(err.class, FailureClass::Permanent, "{name}");
        }
    }

    #[test]
    fn stages_are_status_ids_maybe_with_their_pipeline() {
        assert_eq!(parse_stage("7000012").unwrap(), (None, "7000012"));
        assert_eq!(parse_stage("7000001:142").unwrap(), (Some("7000001"), "142"));
        assert!(parse_stage("WON").is_err());
        assert!(parse_stage("x:142").is_err());
    }

    #[test]
    fn a_lead_holds_values_the_way_amocrm_returns_them() {
        let lead = json!({"id": 5, "status_id": 7000013, "pipeline_id": 7000001, "price": 18500,
            "custom_fields_values": [{"field_id": 900, "field_name": "Этап логистики", "values": [{"value": "approval"}]}]});
        let lead = lead.as_object().unwrap();
        let wanted = lead_fields(&BTreeMap::from([
            ("status_id".to_owned(), json!("7000013")),
            ("price".to_owned(), json!("18500.00")),
            ("custom_fields_by_id.900".to_owned(), json!("approval")),
        ]))
        .unwrap();
        assert!(holds(lead, &wanted));
        let other = lead_fields(&BTreeMap::from([("custom_fields_by_id.900".to_owned(), json!("done"))])).unwrap();
        assert!(!holds(lead, &other));
        let missing = lead_fields(&BTreeMap::from([("custom_fields_by_id.901".to_owned(), json!("x"))])).unwrap();
        assert!(!holds(lead, &missing));
    }
}
