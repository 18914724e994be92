//! The fetch step of Bitrix24 events: an event names a deal (or a
//! smart-process item) by id; the record itself is read here, just before
//! mapping, so what the mappings see is the portal's state now.
//!
//! | decoded record | becomes |
//! | --- | --- |
//! | `deal.event`, action `add` / `update` / `move_to_category` (and catch-up) | `deal`: the `crm.deal.get` result plus `STAGE_NAME` and `CATEGORY_NAME` from the stage catalogue |
//! | `deal.event`, action `delete`, or a deal the portal answers "Not found" | a gone record: the hub records the deletion |
//! | `item.event` | `item`: the `crm.item.get` item (camelCase fields) plus `ref`, its code `T<hex type>_<id>` (see `records`); nothing if it is gone |
//!
//! Diffing against the last known state is the engine's work: a read that
//! shows what the hub already knows (the echo of its own write) changes
//! nothing and fires nothing. With an integration user configured, a deal
//! whose `MODIFY_BY_ID` is that user is marked as changed last by the hub
//! (`FetchedRecords::modified_by_hub`), for the hub's second echo guard.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dealbridge_core::connector::{FetchError, FetchedRecords, GoneRecord, RecordFetcher, SourceRecord};
use serde_json::{Map, Value, json};

use crate::reader::PortalReader;
use crate::records::{ITEM_REF_KEY, item_code};
use crate::rest::id_text;

/// Reads the records of this connector's events.
pub struct DealFetcher {
    reader: Arc<PortalReader>,
    /// The integration user's id, whose changes are the hub's own.
    pub(crate) integration_user: Option<String>,
}

impl DealFetcher {
    pub fn new(reader: Arc<PortalReader>) -> Self {
        Self { reader, integration_user: None }
    }

    /// Adds the names of the deal's stage and pipeline. The catalogue is a
    /// convenience: when the portal refuses it for good (no `crm` scope for
    /// statuses), deals still map by code.
    async fn with_stage_names(&self, mut deal: Map<String, Value>) -> Result<Map<String, Value>, FetchError> {
        let code = deal.get("STAGE_ID").and_then(id_text);
        let catalogue = match self.reader.stages(code.as_deref()).await {
            Ok(catalogue) => catalogue,
            Err(FetchError::Permanent(reason)) => {
                tracing::warn!(%reason, "Bitrix24 stage catalogue unreadable; deals map by stage code only.");
                return Ok(deal);
            }
            Err(transient) => return Err(transient),
        };
        if let Some(stage) = code.as_deref().and_then(|c| catalogue.by_code(c)) {
            deal.insert("STAGE_NAME".into(), json!(stage.name));
            deal.insert("CATEGORY_NAME".into(), json!(stage.category_name));
        }
        Ok(deal)
    }
}

fn field(record: &SourceRecord, key: &str) -> Option<String> {
    record.data.get(key).and_then(id_text)
}

#[async_trait]
impl RecordFetcher for DealFetcher {
    async fn fetch(
        &self,
        records: Vec<SourceRecord>,
        received_at: DateTime<Utc>,
    ) -> Result<FetchedRecords, FetchError> {
        let mut out = FetchedRecords::default();
        let read_at = |at: DateTime<Utc>, out: &mut FetchedRecords| {
            out.read_at = Some(out.read_at.map_or(at, |earliest| earliest.min(at)));
        };
        for record in records {
            let (Some(id), action) = (field(&record, "id"), field(&record, "action").unwrap_or_default()) else {
                out.records.push(record);
                continue;
            };
            match record.kind.as_str() {
                "deal.event" if action == "delete" => {
                    out.gone.push(GoneRecord { system: "bitrix24".into(), id });
                }
                "deal.event" => {
                    let read = match self.reader.read_since(&id, received_at) {
                        Some(read) => Some(read),
                        None => self.reader.deal(&id).await?,
                    };
                    match read {
                        None => out.gone.push(GoneRecord { system: "bitrix24".into(), id }),
                        Some(read) => {
                            read_at(read.started_at, &mut out);
                            let deal = self.with_stage_names(read.deal).await?;
                            let modifier = deal.get("MODIFY_BY_ID").and_then(id_text);
                            if modifier.is_some() && modifier == self.integration_user {
                                out.modified_by_hub.push(out.records.len());
                            }
                            out.records.push(SourceRecord { kind: "deal".into(), data: Value::Object(deal) });
                        }
                    }
                }
                "item.event" if action == "delete" => {}
                "item.event" => {
                    let Some(entity) = field(&record, "entity_type_id").and_then(|t| t.parse::<u32>().ok()) else {
                        return Err(FetchError::Permanent(format!("item event {id} names no entity type")));
                    };
                    let started_at = Utc::now();
                    let item = self.reader.admitted().await?.item_get(entity, &id).await;
                    match self.reader.returned(item) {
                        Ok(mut item) => {
                            read_at(started_at, &mut out);
                            item.insert(ITEM_REF_KEY.into(), json!(item_code(entity, &id)));
                            out.records.push(SourceRecord { kind: "item".into(), data: Value::Object(item) });
                        }
                        Err(e) if e.is_not_found() => {}
                        Err(e) => return Err(self.reader.fetch_error(e)),
                    }
                }
                _ => out.records.push(record),
            }
        }
        Ok(out)
    }
}
