//! Smart-process items: the records a binding creates in a smart process
//! (`create_with: { entityTypeId: "1032", categoryId: "5" }`) and writes
//! afterwards. They go through the universal `crm.item.*` methods, whose
//! fields are camelCase (`title`, `stageId`, `categoryId`,
//! `assignedById`), and link to their parent through `parentId<type>`
//! (`parentId2` for a deal). The hub knows an item by its code
//! (`T408_17`, see `crate::records`), which is what tells an update to go
//! to `crm.item.update` of that smart process.

use std::collections::BTreeMap;

use dealbridge_core::delivery::{AttemptContext, DeliveryFailure, FailureClass, Performed};
use dealbridge_core::flow::{Command, CommandOp};
use serde_json::{Map, Value, json};

use super::{Bitrix24Target, created_ref, not_found_is_permanent, same_value};
use crate::records::{DEAL_ENTITY_TYPE, PortalRecord, item_code};
use crate::rest::id_text;
use crate::stages::looks_like_code;

/// The `create_with` key that makes a child a smart-process item.
pub const ENTITY_TYPE_KEY: &str = "entityTypeId";

/// The item field that carries the command's origin id, so a create whose
/// answer was lost finds the item it made (the item's "external code").
pub const ITEM_ORIGIN_FIELD: &str = "xmlId";

/// The smart process a `create_with` names; `None` for a deal (no
/// `entityTypeId`, or 2).
pub(super) fn item_type(create: &BTreeMap<String, String>) -> Result<Option<u32>, DeliveryFailure> {
    let Some(text) = create.get(ENTITY_TYPE_KEY) else { return Ok(None) };
    let entity_type_id: u32 = text.trim().parse().map_err(|_| {
        DeliveryFailure::new(
            FailureClass::Permanent,
            format!("`create_with` {ENTITY_TYPE_KEY} `{text}` is not a number"),
        )
    })?;
    Ok((entity_type_id != DEAL_ENTITY_TYPE).then_some(entity_type_id))
}

/// What an item update writes: the fields, with the stage as `stageId`.
/// Item stages are written as codes (`DT1032_5:NEW`): the stage catalogue
/// the connector keeps is the deals' one.
pub(super) fn item_fields(
    stage: Option<&str>,
    fields: &BTreeMap<String, Value>,
) -> Result<Map<String, Value>, DeliveryFailure> {
    let mut wanted: Map<String, Value> = fields.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    if let Some(stage) = stage {
        if !looks_like_code(stage) {
            return Err(DeliveryFailure::new(
                FailureClass::Permanent,
                format!(
                    "stage `{stage}` is not a smart-process stage code (e.g. `DT1032_5:NEW`); only deal stages may be named by name"
                ),
            ));
        }
        wanted.insert("stageId".into(), json!(stage));
    }
    Ok(wanted)
}

/// The parent link of a new item: `parentId2` for a deal, `parentId<type>`
/// for an item of another smart process.
fn parent_link(parent: &str) -> (String, Value) {
    match PortalRecord::parse(parent) {
        PortalRecord::Deal(id) => (format!("parentId{DEAL_ENTITY_TYPE}"), json!(id)),
        PortalRecord::Item { entity_type_id, id } => (format!("parentId{entity_type_id}"), json!(id)),
    }
}

impl Bitrix24Target {
    pub(super) async fn update_item(
        &self,
        entity_type_id: u32,
        id: &str,
        stage: Option<&str>,
        fields: &BTreeMap<String, Value>,
        context: AttemptContext,
    ) -> Result<Performed, DeliveryFailure> {
        let wanted = item_fields(stage, fields)?;
        if wanted.is_empty() {
            return Ok(Performed::AlreadyApplied { created: None });
        }
        if context.possibly_applied {
            let item = self.client.item_get(entity_type_id, id).await.map_err(not_found_is_permanent)?;
            if wanted.iter().all(|(k, v)| same_value(item.get(k), v)) {
                return Ok(Performed::AlreadyApplied { created: None });
            }
        }
        self.client.item_update(entity_type_id, id, &wanted).await.map_err(not_found_is_permanent)?;
        Ok(Performed::Applied { created: None })
    }

    /// The item a `create_deal` command makes, as `crm.item.add` fields.
    pub(super) fn item_create_fields(&self, command: &Command) -> Result<Map<String, Value>, DeliveryFailure> {
        let CommandOp::CreateDeal { create, parent_external_id, stage, responsible, fields, .. } = &command.op else {
            unreachable!("called for create_deal only");
        };
        let mut all = item_fields(stage.as_deref(), fields)?;
        for (k, v) in create.iter().filter(|(k, _)| k.as_str() != ENTITY_TYPE_KEY) {
            all.insert(k.clone(), json!(v));
        }
        if let Some(user) = responsible {
            all.insert("assignedById".into(), json!(user));
        }
        if let Some(parent) = parent_external_id {
            let (field, id) = parent_link(parent);
            all.insert(field, id);
        }
        all.insert(ITEM_ORIGIN_FIELD.into(), json!(Self::origin_id(command)));
        Ok(all)
    }

    pub(super) async fn create_item(
        &self,
        command: &Command,
        entity_type_id: u32,
        context: AttemptContext,
    ) -> Result<Performed, DeliveryFailure> {
        if context.possibly_applied {
            let filter = json!({ ITEM_ORIGIN_FIELD: Self::origin_id(command) });
            let found = self.client.item_list(entity_type_id, &filter, &["id"]).await?;
            if let Some(id) = found.first().and_then(|i| i.get("id")).and_then(id_text) {
                return Ok(Performed::AlreadyApplied {
                    created: Some(created_ref(command, item_code(entity_type_id, &id))),
                });
            }
        }
        let item = self.client.item_add(entity_type_id, &self.item_create_fields(command)?).await?;
        let id = item.get("id").and_then(id_text).ok_or_else(|| {
            DeliveryFailure::new(FailureClass::Retryable, format!("crm.item.add answered {item} without an id"))
        })?;
        Ok(Performed::Applied { created: Some(created_ref(command, item_code(entity_type_id, &id))) })
    }
}
