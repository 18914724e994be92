//! The outbound half: the hub's commands as OData writes and HTTP-service
//! calls on one infobase.
//!
//! | command | call |
//! | --- | --- |
//! | `update_deal` | `PATCH <interest set>(guid'…')` with the stage attribute and the fields |
//! | `create_deal` | `POST <set>` with the binding's `create_with` attributes, the stage, the parent (`parent_field`), the responsible user and the fields; `POST …/Post` after it when `create_with` says `odata.post: "true"` |
//! | `create_task` | `POST <task_set>` with the Interest as the task's subject (`Предмет`) |
//! | `notify` | `POST /hs/<http_service>/notifications` |
//! | `comment` | nothing: an Interest has no timeline; the command fails for good, saying so |
//!
//! Two `create_with` keys are the connector's own, not attributes:
//! `odata.entity_set` (create in that set instead of the Interests', e.g.
//! `Document_ЗаказКлиента`) and `odata.post` (post the new document).
//!
//! A field whose value is an array of objects is a tabular section and is
//! written whole (1C refuses rows created one by one); rows get their
//! `LineNumber` ("1", "2", … as OData v3 writes Int64) where they lack one.
//! Field names with `.` or `[` are read-only projections of referenced
//! objects (`Контрагент.Наименование`) and are not written.
//!
//! "Already applied": when an attempt may repeat one that reached 1C, an
//! update first reads the object and writes nothing if it already holds
//! the values (else it writes with `If-Match: <DataVersion>`), and a create
//! looks for the object carrying the command's origin id in
//! `origin_field` (when configured). Tasks and notifications have no such
//! check.

use std::collections::BTreeMap;
use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dealbridge_core::delivery::{AttemptContext, DeliveryFailure, FailureClass, OutboundConnector, Performed};
use dealbridge_core::flow::{Command, CommandOp};
use dealbridge_core::model::ExternalRef;
use serde_json::{Map, Value, json};

use crate::config::OnecConfig;
use crate::kinds::{EntitySets, RecordKind};
use crate::odata::{ODataClient, ODataError, Query, query};

/// `create_with` key naming the entity set to create in.
pub const ENTITY_SET_KEY: &str = "odata.entity_set";
/// `create_with` key asking to post the created document.
pub const POST_KEY: &str = "odata.post";

/// Namespace of the origin ids derived from idempotency keys.
const ORIGIN_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x1c0e_5d2c_8f4b_4b1e_9c3d_2b24_0000_0007);

/// Attributes whose decimal text is written as an OData number.
const NUMERIC_FIELDS: [&str; 6] = ["СуммаДокумента", "Сумма", "Цена", "Количество", "СуммаНДС", "СуммаСНДС"];

/// A configured `onec` instance's outbound half.
pub struct OnecTarget {
    client: ODataClient,
    interest_set: String,
    stage_field: String,
    parent_field: String,
    responsible_field: String,
    origin_field: Option<String>,
    task_set: String,
    http_service: String,
    timezone: chrono_tz::Tz,
}

impl OnecTarget {
    pub fn new(config: &OnecConfig, client: ODataClient) -> Result<Self, String> {
        let sets = EntitySets::with_overrides(&config.entity_sets)?;
        let timezone: chrono_tz::Tz =
            config.timezone.parse().map_err(|_| format!("timezone `{}` is not an IANA zone", config.timezone))?;
        if !query::is_entity_set_name(&config.task_set) {
            return Err(format!("task_set `{}` is not an OData entity set name", config.task_set));
        }
        Ok(Self {
            client,
            interest_set: sets.of(RecordKind::Interest).to_owned(),
            stage_field: config.stage_field.clone(),
            parent_field: config.parent_field.clone(),
            responsible_field: config.responsible_field.clone(),
            origin_field: config.origin_field.clone(),
            task_set: config.task_set.clone(),
            http_service: config.http_service.trim_matches('/').to_owned(),
            timezone,
        })
    }

    pub fn client(&self) -> &ODataClient {
        &self.client
    }

    /// The origin id a command's created object carries.
    pub fn origin_id(command: &Command) -> String {
        uuid::Uuid::new_v5(&ORIGIN_NAMESPACE, command.idempotency_key.as_bytes()).to_string()
    }

    /// A 1C date: local time of the infobase, no offset.
    fn local(&self, at: DateTime<Utc>) -> String {
        at.with_timezone(&self.timezone).format("%Y-%m-%dT%H:%M:%S").to_string()
    }

    async fn update_deal(
        &self,
        ref_key: &str,
        stage: Option<&str>,
        fields: &BTreeMap<String, Value>,
        context: AttemptContext,
    ) -> Result<Performed, DeliveryFailure> {
        let mut changes = writable(fields)?;
        if let Some(stage) = stage {
            changes.insert(self.stage_field.clone(), json!(stage));
        }
        if changes.is_empty() {
            return Ok(Performed::AlreadyApplied { created: None });
        }
        let set = &self.interest_set;
        let mut if_match = None;
        if context.possibly_applied {
            let current = self.client.get(set, ref_key).await.map_err(gone_is_permanent)?;
            if changes.iter().all(|(k, v)| same_value(current.get(k), v)) {
                return Ok(Performed::AlreadyApplied { created: None });
            }
            if_match = current.get("DataVersion").and_then(Value::as_str).map(str::to_owned);
        }
        self.client.update(set, ref_key, &changes, if_match.as_deref()).await.map_err(gone_is_permanent)?;
        Ok(Performed::Applied { created: None })
    }

    async fn create_deal(&self, command: &Command, context: AttemptContext) -> Result<Performed, DeliveryFailure> {
        let CommandOp::CreateDeal { create, parent_external_id, stage, responsible, fields, .. } = &command.op else {
            unreachable!("called for create_deal only");
        };
        let set = create.get(ENTITY_SET_KEY).cloned().unwrap_or_else(|| self.interest_set.clone());
        if !query::is_entity_set_name(&set) {
            return Err(DeliveryFailure::new(
                FailureClass::Permanent,
                format!("create_with `{ENTITY_SET_KEY}` `{set}` is not an OData entity set name"),
            ));
        }
        let post = create.get(POST_KEY).is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let origin = Self::origin_id(command);
        let created = |id: &str| Some(ExternalRef::new(command.system.clone(), command.connector.clone(), id));
        if context.possibly_applied
            && let Some(field) = &self.origin_field
        {
            let query = Query { top: Some(1), ..Query::filter(format!("{field} eq {}", query::string(&origin))) };
            let found = self.client.list(&set, &query).await?.value.into_iter().next();
            if let Some(object) = found
                && let Some(id) = object.get("Ref_Key").and_then(Value::as_str)
            {
                if post && object.get("Posted") != Some(&json!(true)) {
                    self.client.post_document(&set, id).await?;
                }
                return Ok(Performed::AlreadyApplied { created: created(id) });
            }
        }
        let mut object = writable(fields)?;
        for (k, v) in create.iter().filter(|(k, _)| !k.starts_with("odata.")) {
            object.insert(k.clone(), json!(v));
        }
        if let Some(stage) = stage {
            object.insert(self.stage_field.clone(), json!(stage));
        }
        if let Some(parent) = parent_external_id {
            object.insert(self.parent_field.clone(), json!(parent));
        }
        if let Some(user) = responsible {
            object.insert(self.responsible_field.clone(), json!(user));
        }
        if let Some(field) = &self.origin_field {
            object.insert(field.clone(), json!(origin));
        }
        object.entry("Date").or_insert_with(|| json!(self.local(Utc::now())));
        let answer = self.client.create(&set, &object).await?;
        let Some(id) = answer.get("Ref_Key").and_then(Value::as_str) else {
            return Err(
                ODataError::malformed(&format!("POST {set}"), "the created object has no `Ref_Key`".into()).into()
            );
        };
        if post {
            self.client.post_document(&set, id).await?;
        }
        Ok(Performed::Applied { created: created(id) })
    }

    async fn create_task(&self, op: &CommandOp) -> Result<Performed, DeliveryFailure> {
        let CommandOp::CreateTask { external_id, title, description, responsible, deadline, .. } = op else {
            unreachable!("called for create_task only");
        };
        let mut task = Map::new();
        task.insert("Date".into(), json!(self.local(Utc::now())));
        task.insert("Description".into(), json!(title));
        task.insert("Описание".into(), json!(description));
        task.insert("Исполнитель_Key".into(), json!(responsible));
        if let Some(at) = deadline {
            task.insert("СрокИсполнения".into(), json!(self.local(*at)));
        }
        if let Some(interest) = external_id {
            task.insert("Предмет".into(), json!(interest));
            task.insert("Предмет_Type".into(), json!(format!("StandardODATA.{}", self.interest_set)));
        }
        self.client.create(&self.task_set, &task).await?;
        Ok(Performed::Applied { created: None })
    }
}

/// The fields that are attributes, tabular sections numbered, decimal
/// text of numeric attributes as numbers.
fn writable(fields: &BTreeMap<String, Value>) -> Result<Map<String, Value>, DeliveryFailure> {
    let mut out = Map::new();
    for (name, value) in fields {
        if name.contains('.') || name.contains('[') {
            continue;
        }
        out.insert(name.clone(), attribute_value(name, value)?);
    }
    Ok(out)
}

fn attribute_value(name: &str, value: &Value) -> Result<Value, DeliveryFailure> {
    match value {
        Value::Array(rows) if !rows.is_empty() && rows.iter().all(Value::is_object) => {
            let mut numbered = Vec::with_capacity(rows.len());
            for (i, row) in rows.iter().enumerate() {
                let mut row = row.as_object().cloned().unwrap_or_default();
                row.entry("LineNumber").or_insert_with(|| json!((i + 1).to_string()));
                for (k, v) in row.iter_mut() {
                    *v = attribute_value(k, v)?;
                }
                numbered.push(Value::Object(row));
            }
            Ok(Value::Array(numbered))
        }
        Value::String(text) if NUMERIC_FIELDS.contains(&name) => exact_number(name, text),
        other => Ok(other.clone()),
    }
}

/// Decimal text as an OData number (`Edm.Double`), refused when the number
/// would not read back as the same decimal.
fn exact_number(name: &str, text: &str) -> Result<Value, DeliveryFailure> {
    let trimmed = text.trim();
    let Ok(number) = serde_json::Number::from_str(trimmed) else { return Ok(json!(text)) };
    let back = number.as_f64().map(|f| f.to_string()).unwrap_or_default();
    if normalized(&back) != normalized(trimmed) {
        return Err(DeliveryFailure::new(
            FailureClass::Permanent,
            format!("`{name}` {trimmed} cannot be written exactly as an OData number"),
        ));
    }
    Ok(Value::Number(number))
}

/// Decimal text without a trailing fraction of zeros (`1.50` = `1.5`).
fn normalized(text: &str) -> String {
    match text.split_once('.') {
        Some((int, frac)) => {
            let frac = frac.trim_end_matches('0');
            if frac.is_empty() { int.to_owned() } else { format!("{int}.{frac}") }
        }
        None => text.to_owned(),
    }
}

/// An Interest that is gone cannot be changed, whatever else is wrong.
fn gone_is_permanent(e: ODataError) -> DeliveryFailure {
    let not_found = e.is_not_found();
    let mut failure: DeliveryFailure = e.into();
    if not_found {
        failure.class = FailureClass::Permanent;
        failure.message = format!("{} (the object was deleted or never existed)", failure.message);
    }
    failure
}

/// Whether the object's current value is the wanted one as 1C returns it:
/// numbers as numbers or strings, tabular rows compared by what the
/// command sets.
fn same_value(current: Option<&Value>, wanted: &Value) -> bool {
    let current = current.unwrap_or(&Value::Null);
    if current == wanted {
        return true;
    }
    match (current, wanted) {
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_value(Some(x), y))
        }
        (Value::Object(a), Value::Object(b)) => b.iter().all(|(k, v)| same_value(a.get(k), v)),
        (Value::Null, Value::String(s)) => s.is_empty(),
        _ => match (scalar(current), scalar(wanted)) {
            (Some(a), Some(b)) => a == b || matches!((a.parse::<f64>(), b.parse::<f64>()), (Ok(x), Ok(y)) if x == y),
            _ => false,
        },
    }
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[async_trait]
impl OutboundConnector for OnecTarget {
    fn kind(&self) -> &'static str {
        "onec"
    }

    /// The publication: one infobase serves every instance pointing at it.
    fn rate_key(&self, _command: &Command) -> String {
        format!("onec:{}", self.client.host())
    }

    async fn perform(&self, command: &Command, context: AttemptContext) -> Result<Performed, DeliveryFailure> {
        match &command.op {
            CommandOp::UpdateDeal { external_id, stage, fields } => {
                self.update_deal(external_id, stage.as_deref(), fields, context).await
            }
            CommandOp::CreateDeal { .. } => self.create_deal(command, context).await,
            op @ CommandOp::CreateTask { .. } => self.create_task(op).await,
            CommandOp::Notify { to, text, external_id } => {
                let body = json!({ "to": to, "text": text, "interest": external_id });
                self.client.call_service(&format!("{}/notifications", self.http_service), &body).await?;
                Ok(Performed::Applied { created: None })
            }
            // Retrying cannot help, so it fails at once and the admin sees why.
            CommandOp::Comment { external_id, .. } => Err(DeliveryFailure::new(
                FailureClass::Permanent,
                format!(
                    "1C has no timeline to write a comment on (Interest {external_id}); \
                     a flow's `comment` reaches the CRMs that hold the deal, not 1C"
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tabular_sections_are_numbered_and_amounts_written_as_exact_numbers() {
        let fields = BTreeMap::from([
            ("СуммаДокумента".to_owned(), json!("245000.50")),
            (
                "Услуги".to_owned(),
                json!([{"Наименование": "Монтаж", "Сумма": "200000"}, {"Наименование": "Пусконаладка", "Сумма": "45000.5"}]),
            ),
            ("Контрагент.Наименование".to_owned(), json!("ООО Ромашка")),
            ("Номер".to_owned(), json!("0000-000042")),
        ]);
        let out = writable(&fields).unwrap();
        assert_eq!(out["СуммаДокумента"], json!(245000.5));
        assert_eq!(out["Услуги"][0]["LineNumber"], "1");
        assert_eq!(out["Услуги"][1]["LineNumber"], "2");
        assert_eq!(out["Услуги"][1]["Сумма"], json!(45000.5));
        assert_eq!(out["Номер"], "0000-000042");
        assert!(!out.contains_key("Контрагент.Наименование"), "a projection is not an attribute");
        let too_precise = BTreeMap::from([("Сумма".to_owned(), json!("12345678901234567.89"))]);
        let err = writable(&too_precise).unwrap_err();
        assert_eq!(err.class, FailureClass::Permanent);
        assert!(err.message.contains("cannot be written exactly"), "{}", err.message);
    }

    #[test]
    fn values_compare_the_way_1c_returns_them() {
        assert!(same_value(Some(&json!("РасчетГотов")), &json!("РасчетГотов")));
        assert!(same_value(Some(&json!(245000.5)), &json!("245000.50")));
        assert!(same_value(
            Some(&json!([{"LineNumber": "1", "Наименование": "Монтаж", "Сумма": 1}])),
            &json!([{"LineNumber": "1", "Наименование": "Монтаж"}])
        ));
        assert!(!same_value(Some(&json!("Расчет")), &json!("РасчетГотов")));
        assert!(!same_value(Some(&json!([])), &json!([{"LineNumber": "1"}])));
        assert!(same_value(None, &json!("")));
    }
}
