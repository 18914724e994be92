//! The outbound half: the hub's commands as REST calls on one portal.
//!
//! | command | call |
//! | --- | --- |
//! | `update_deal` | `crm.deal.update` with `STAGE_ID` and the fields; a `CATEGORY_ID` among the fields first moves the deal with `crm.item.update` (entityTypeId 2), since `crm.deal.update` ignores it |
//! | `create_deal` | `crm.deal.add` with the binding's `create` fields (e.g. `CATEGORY_ID`), `STAGE_ID`, `ASSIGNED_BY_ID`, the parent link (`parent_field` = prefix + parent id) and `ORIGINATOR_ID`/`ORIGIN_ID` identifying the command |
//! | `create_task` | `tasks.task.add` linked to the deal by `UF_CRM_TASK: ["D_<id>"]` (an item: `["T<hex type>_<id>"]`) |
//! | `notify` | `im.notify.system.add` |
//! | `comment` | `crm.timeline.comment.add` with `ENTITY_TYPE` `deal` (an item: `dynamic_<entityTypeId>`), `ENTITY_ID`, `COMMENT` |
//!
//! A child whose binding's `create_with` names a smart process
//! (`entityTypeId`) is an item: `create_deal` calls `crm.item.add` and
//! `update_deal` `crm.item.update` instead (see `items`).
//!
//! "Already applied" is checked only when the attempt is told the change
//! may have reached the portal (`possibly_applied`: a retry after a
//! retryable failure, a redelivery after a crash): an update first reads
//! the deal and skips the write when the stage and fields already hold the
//! command's values; a create looks for a deal carrying the command's
//! `ORIGIN_ID`. First attempts write directly: the portal's budget
//! (2 requests/s) is the scarcest resource, a read before every stage move
//! would halve the moves per second, and writing a value the deal already
//! has changes nothing. Tasks, notifications and comments have no such
//! check (a retry after a lost answer can repeat them).
//!
//! Several deals' commands at once go out as one `batch` (`coalesce`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dealbridge_core::connector::FetchError;
use dealbridge_core::delivery::{AttemptContext, DeliveryFailure, FailureClass, OutboundConnector, Performed};
use dealbridge_core::flow::{Command, CommandOp};
use dealbridge_core::model::ExternalRef;
use serde_json::{Map, Value, json};

use crate::config::{Bitrix24Config, WebhookUrl};
use crate::reader::PortalReader;
use crate::records::PortalRecord;
use crate::rest::{MAX_BATCH, RestClient, RestError, id_text};
use crate::stages::looks_like_code;

mod coalesce;
mod items;

/// `ORIGINATOR_ID` of every deal the hub creates.
pub const ORIGINATOR: &str = "dealbridge";

/// Namespace of the `ORIGIN_ID`s derived from idempotency keys.
const ORIGIN_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6a0e_5d2c_8f4b_4b1e_9c3d_2b24_0000_0001);

/// A configured `bitrix24` instance's outbound half.
pub struct Bitrix24Target {
    client: RestClient,
    parent_field: String,
    parent_prefix: String,
    /// Where stage names are looked up (none: stages must be codes).
    reader: Option<Arc<PortalReader>>,
}

impl Bitrix24Target {
    pub fn new(config: &Bitrix24Config, url: WebhookUrl) -> Result<Self, String> {
        let client = RestClient::new(
            url,
            Duration::from_secs(config.timeout_secs),
            Duration::from_secs(config.connect_timeout_secs),
        )?;
        Ok(Self {
            client,
            parent_field: config.parent_field.clone(),
            parent_prefix: config.parent_value_prefix.clone(),
            reader: None,
        })
    }

    /// Looks stage names up in the catalogue `reader` keeps.
    pub fn with_reader(mut self, reader: Arc<PortalReader>) -> Self {
        self.reader = Some(reader);
        self
    }

    /// The code of a stage a command names by code or by name. A name is
    /// looked up in the deal's pipeline: `category`, else the pipeline the
    /// deal was last read in, else the deal as read now.
    async fn stage_code(
        &self,
        stage: &str,
        category: Option<String>,
        deal: Option<&str>,
    ) -> Result<String, DeliveryFailure> {
        if looks_like_code(stage) {
            return Ok(stage.to_owned());
        }
        let Some(reader) = &self.reader else {
            return Err(DeliveryFailure::new(
                FailureClass::Permanent,
                format!("stage `{stage}` is not a Bitrix24 stage code, and no stage catalogue is available"),
            ));
        };
        let catalogue = reader.stages(None).await.map_err(|e| match e {
            FetchError::Transient(m) => DeliveryFailure::new(FailureClass::Retryable, m),
            FetchError::Permanent(m) => DeliveryFailure::new(FailureClass::Permanent, m),
        })?;
        let category = match (category, deal) {
            (Some(c), _) => Some(c),
            (None, Some(id)) => match reader.category_of(id) {
                Some(c) => Some(c),
                None => {
                    self.client.deal_get(id).await.map_err(not_found_is_permanent)?.get("CATEGORY_ID").and_then(id_text)
                }
            },
            (None, None) => None,
        };
        catalogue.code_for(category.as_deref(), stage).map_err(|m| DeliveryFailure::new(FailureClass::Permanent, m))
    }

    pub fn client(&self) -> &RestClient {
        &self.client
    }

    /// The `ORIGIN_ID` a command's created deal carries.
    pub fn origin_id(command: &Command) -> String {
        uuid::Uuid::new_v5(&ORIGIN_NAMESPACE, command.idempotency_key.as_bytes()).to_string()
    }

    /// What `update_deal` writes: the fields, with the stage as its code.
    async fn update_fields(
        &self,
        id: &str,
        stage: Option<&str>,
        fields: &BTreeMap<String, Value>,
    ) -> Result<Map<String, Value>, DeliveryFailure> {
        let mut wanted: Map<String, Value> = fields.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        if let Some(stage) = stage {
            let category = wanted.get("CATEGORY_ID").and_then(id_text);
            wanted.insert("STAGE_ID".into(), json!(self.stage_code(stage, category, Some(id)).await?));
        }
        Ok(wanted)
    }

    async fn update_deal(
        &self,
        id: &str,
        stage: Option<&str>,
        fields: &BTreeMap<String, Value>,
        context: AttemptContext,
    ) -> Result<Performed, DeliveryFailure> {
        let mut wanted = self.update_fields(id, stage, fields).await?;
        if wanted.is_empty() {
            return Ok(Performed::AlreadyApplied { created: None });
        }
        if context.possibly_applied {
            let deal = self.client.deal_get(id).await.map_err(not_found_is_permanent)?;
            if wanted.iter().all(|(k, v)| same_value(deal.get(k), v)) {
                return Ok(Performed::AlreadyApplied { created: None });
            }
        }
        if let Some(category) = wanted.remove("CATEGORY_ID") {
            let mut moved = Map::new();
            moved.insert("categoryId".into(), category);
            if let Some(stage) = wanted.remove("STAGE_ID") {
                moved.insert("stageId".into(), stage);
            }
            self.client.item_update(2, id, &moved).await.map_err(not_found_is_permanent)?;
            if wanted.is_empty() {
                return Ok(Performed::Applied { created: None });
            }
        }
        self.client.deal_update(id, &wanted).await.map_err(not_found_is_permanent)?;
        Ok(Performed::Applied { created: None })
    }

    /// The deal a `create_deal` command makes, as `crm.deal.add` fields.
    async fn create_fields(&self, command: &Command) -> Result<Map<String, Value>, DeliveryFailure> {
        let CommandOp::CreateDeal { create, parent_external_id, stage, responsible, fields, .. } = &command.op else {
            unreachable!("called for create_deal only");
        };
        let mut all: Map<String, Value> = fields.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (k, v) in create {
            all.insert(k.clone(), json!(v));
        }
        if let Some(stage) = stage {
            let category = all.get("CATEGORY_ID").and_then(id_text);
            all.insert("STAGE_ID".into(), json!(self.stage_code(stage, category, None).await?));
        }
        if let Some(user) = responsible {
            all.insert("ASSIGNED_BY_ID".into(), json!(user));
        }
        if let Some(parent) = parent_external_id {
            all.insert(self.parent_field.clone(), json!(format!("{}{parent}", self.parent_prefix)));
        }
        all.insert("ORIGINATOR_ID".into(), json!(ORIGINATOR));
        all.insert("ORIGIN_ID".into(), json!(Self::origin_id(command)));
        Ok(all)
    }

    async fn create_deal(&self, command: &Command, context: AttemptContext) -> Result<Performed, DeliveryFailure> {
        if context.possibly_applied {
            let filter = json!({ "ORIGINATOR_ID": ORIGINATOR, "ORIGIN_ID": Self::origin_id(command) });
            let page = self.client.deal_list(&filter, &["ID"], &json!({"ID": "ASC"}), 0).await?;
            if let Some(id) = page.items.first().and_then(|d| d.get("ID")).and_then(id_text) {
                return Ok(Performed::AlreadyApplied { created: Some(created_ref(command, id)) });
            }
        }
        let id = self.client.deal_add(&self.create_fields(command).await?).await?;
        Ok(Performed::Applied { created: Some(created_ref(command, id)) })
    }
}

/// The deal a `create_deal` command made, as the canonical deal's new ref.
fn created_ref(command: &Command, id: String) -> ExternalRef {
    ExternalRef::new(command.system.clone(), command.connector.clone(), id)
}

/// `tasks.task.add` fields of a `create_task` command.
fn task_fields(op: &CommandOp) -> Map<String, Value> {
    let CommandOp::CreateTask { external_id, title, description, responsible, deadline, .. } = op else {
        unreachable!("called for create_task only");
    };
    let mut fields = Map::new();
    fields.insert("TITLE".into(), json!(title));
    fields.insert("RESPONSIBLE_ID".into(), json!(responsible));
    if !description.is_empty() {
        fields.insert("DESCRIPTION".into(), json!(description));
    }
    if let Some(at) = deadline {
        fields.insert("DEADLINE".into(), json!(at.to_rfc3339()));
    }
    if let Some(deal) = external_id {
        fields.insert("UF_CRM_TASK".into(), json!([PortalRecord::parse(deal).crm_link()]));
    }
    fields
}

/// A deal that is gone cannot be changed, whatever else is wrong.
fn not_found_is_permanent(e: RestError) -> DeliveryFailure {
    let not_found = e.is_not_found();
    let mut failure: DeliveryFailure = e.into();
    if not_found {
        failure.class = FailureClass::Permanent;
        failure.message = format!("{} (the deal was deleted or never existed)", failure.message);
    }
    failure
}

/// Whether a deal's current value equals a wanted one, the way Bitrix24
/// stores it: numbers come back as strings (`"1000.00"`), empty as `null`
/// or `""`, multiple values as lists.
fn same_value(current: Option<&Value>, wanted: &Value) -> bool {
    let current = current.unwrap_or(&Value::Null);
    if current == wanted {
        return true;
    }
    match (current, wanted) {
        (Value::Null, Value::String(s)) | (Value::String(s), Value::Null) => s.is_empty(),
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_value(Some(x), y))
        }
        (Value::Bool(b), Value::String(s)) | (Value::String(s), Value::Bool(b)) => s == if *b { "Y" } else { "N" },
        _ => match (scalar_text(current), scalar_text(wanted)) {
            (Some(a), Some(b)) if a == b => true,
            (Some(a), Some(b)) => matches!((a.parse::<f64>(), b.parse::<f64>()), (Ok(x), Ok(y)) if x == y),
            _ => false,
        },
    }
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[async_trait]
impl OutboundConnector for Bitrix24Target {
    fn kind(&self) -> &'static str {
        "bitrix24"
    }

    /// The portal: Bitrix24 counts its limit per portal (and source IP),
    /// so every instance talking to one portal shares one budget.
    fn rate_key(&self, _command: &Command) -> String {
        format!("bitrix24:{}", self.client.portal())
    }

    async fn perform(&self, command: &Command, context: AttemptContext) -> Result<Performed, DeliveryFailure> {
        self.perform_one(command, context).await
    }

    /// A `batch` carries up to 50 commands.
    fn coalesce_limit(&self) -> usize {
        MAX_BATCH
    }

    async fn perform_all(&self, commands: &[(&Command, AttemptContext)]) -> Vec<Result<Performed, DeliveryFailure>> {
        self.perform_batched(commands).await
    }
}

impl Bitrix24Target {
    async fn perform_one(&self, command: &Command, context: AttemptContext) -> Result<Performed, DeliveryFailure> {
        match &command.op {
            CommandOp::UpdateDeal { external_id, stage, fields } => match PortalRecord::parse(external_id) {
                PortalRecord::Deal(id) => self.update_deal(id, stage.as_deref(), fields, context).await,
                PortalRecord::Item { entity_type_id, id } => {
                    self.update_item(entity_type_id, id, stage.as_deref(), fields, context).await
                }
            },
            CommandOp::CreateDeal { create, .. } => match items::item_type(create)? {
                None => self.create_deal(command, context).await,
                Some(entity_type_id) => self.create_item(command, entity_type_id, context).await,
            },
            CommandOp::Comment { external_id, text } => {
                let (entity_type, id) = PortalRecord::parse(external_id).timeline();
                self.client.timeline_comment_add(&entity_type, id, text).await.map_err(not_found_is_permanent)?;
                Ok(Performed::Applied { created: None })
            }
            CommandOp::CreateTask { .. } => {
                self.client.task_add(&task_fields(&command.op)).await?;
                Ok(Performed::Applied { created: None })
            }
            CommandOp::Notify { to, text, .. } => {
                self.client.notify_system(to, text).await?;
                Ok(Performed::Applied { created: None })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_compare_the_way_bitrix24_stores_them() {
        assert!(same_value(Some(&json!("C1:NEW")), &json!("C1:NEW")));
        assert!(same_value(Some(&json!("1000.00")), &json!(1000)));
        assert!(same_value(Some(&json!("5")), &json!(5)));
        assert!(same_value(None, &json!("")));
        assert!(same_value(Some(&Value::Null), &json!("")));
        assert!(same_value(Some(&json!("Y")), &json!(true)));
        assert!(same_value(Some(&json!(["1", "2"])), &json!([1, 2])));
        assert!(!same_value(Some(&json!("NEW")), &json!("WON")));
        assert!(!same_value(Some(&json!("1000.00")), &json!("1000.01")));
        assert!(!same_value(None, &json!("x")));
    }
}
