//! The emulated account's data and operations: pipelines with their
//! statuses, lead custom fields, leads, tasks and notes, validated the way
//! API v4 validates them, and the webhook entry each lead change sends.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::webhook::LeadAction;

/// A validation error: `(code, path, detail)` of `validation-errors`.
pub type Invalid = (&'static str, String, &'static str);

const NOT_A_CHOICE: &str = "The value you selected is not a valid choice.";
const NOT_AN_INTEGER: &str = "This value should be of type int.";

/// A pipeline and its statuses `(id, name)`; 142 and 143 are in every one.
pub struct Pipeline {
    pub id: u64,
    pub name: &'static str,
    pub statuses: Vec<(u64, &'static str)>,
}

pub struct Account {
    pub id: u64,
    pub subdomain: String,
    pub base_url: String,
    pub pipelines: Vec<Pipeline>,
    /// Lead custom fields: id → name.
    pub custom_fields: BTreeMap<u64, &'static str>,
    pub leads: BTreeMap<u64, Map<String, Value>>,
    pub tasks: BTreeMap<u64, Value>,
    pub notes: BTreeMap<u64, Value>,
    next_id: u64,
}

/// The integer a JSON value holds, as amoCRM reads it (numbers only).
fn int(value: &Value) -> Option<u64> {
    value.as_u64()
}

impl Account {
    /// The seeded account: a sales and a logistics pipeline, the custom
    /// fields the shipped `mappings/amocrm.yaml` names.
    pub fn seeded(id: u64, subdomain: &str, base_url: &str) -> Self {
        let closed = [(142, "Успешно реализовано"), (143, "Закрыто и не реализовано")];
        let sales = [
            (7000011, "Новая заявка"),
            (7000012, "Оценить"),
            (7000013, "Оценка готова"),
            (7000014, "Подготовка КП"),
            (7000015, "КП отправлено"),
            (7000016, "Ожидает оплаты"),
            (7000017, "Отгрузка"),
        ];
        let logistics = [(7000021, "Новая"), (7000022, "В работе"), (7000023, "Согласование")];
        Self {
            id,
            subdomain: subdomain.to_owned(),
            base_url: base_url.to_owned(),
            pipelines: vec![
                Pipeline { id: 7000001, name: "Продажи", statuses: sales.into_iter().chain(closed).collect() },
                Pipeline {
                    id: 7000002, name: "Логистика", statuses: logistics.into_iter().chain(closed).collect()
                },
            ],
            custom_fields: BTreeMap::from([
                (900, "Этап логистики"),
                (901, "Стоимость логистики"),
                (902, "Родительская сделка"),
                (903, "Причина отказа"),
            ]),
            leads: BTreeMap::new(),
            tasks: BTreeMap::new(),
            notes: BTreeMap::new(),
            next_id: 1000,
        }
    }

    fn next(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn link(&self, path: &str) -> Value {
        json!({ "self": { "href": format!("{}{path}", self.base_url) } })
    }

    fn has_status(&self, pipeline: u64, status: u64) -> bool {
        self.pipelines.iter().any(|p| p.id == pipeline && p.statuses.iter().any(|(s, _)| *s == status))
    }

    /// Applies the fields of a create or update to `lead`, checking each.
    fn write(&self, lead: &mut Map<String, Value>, fields: &Map<String, Value>, at: &str) -> Result<(), Vec<Invalid>> {
        let mut invalid = Vec::new();
        let path = |key: &str| if at.is_empty() { key.to_owned() } else { format!("{at}.{key}") };
        for (key, value) in fields {
            match key.as_str() {
                "name" => match value.as_str() {
                    Some(_) => {
                        lead.insert(key.clone(), value.clone());
                    }
                    None => invalid.push(("InvalidType", path(key), "This value should be of type string.")),
                },
                "price" | "responsible_user_id" | "status_id" | "pipeline_id" | "loss_reason_id" => match int(value) {
                    Some(_) => {
                        lead.insert(key.clone(), value.clone());
                    }
                    None => invalid.push(("InvalidType", path(key), NOT_AN_INTEGER)),
                },
                "custom_fields_values" => {
                    let Some(items) = value.as_array() else {
                        invalid.push(("InvalidType", path(key), "This value should be of type array."));
                        continue;
                    };
                    let mut current: Vec<Value> = lead.get(key).and_then(Value::as_array).cloned().unwrap_or_default();
                    for (i, item) in items.iter().enumerate() {
                        let id = item.get("field_id").and_then(int);
                        let Some(id) = id.filter(|id| self.custom_fields.contains_key(id)) else {
                            invalid.push(("NotSupportedChoice", path(&format!("{key}.{i}.field_id")), NOT_A_CHOICE));
                            continue;
                        };
                        let values = item.get("values").and_then(Value::as_array).cloned().unwrap_or_default();
                        current.retain(|f| f.get("field_id").and_then(int) != Some(id));
                        if !values.is_empty() {
                            current.push(json!({"field_id": id, "field_name": self.custom_fields[&id],
                                "field_code": null, "field_type": "text", "values": values}));
                        }
                    }
                    lead.insert(key.clone(), if current.is_empty() { Value::Null } else { Value::Array(current) });
                }
                "id" | "request_id" | "_embedded" | "updated_by" | "created_by" => {}
                _ => invalid.push(("NotSupportedChoice", path(key), "This field is not expected.")),
            }
        }
        let pipeline = lead.get("pipeline_id").and_then(int).unwrap_or_default();
        let status = lead.get("status_id").and_then(int).unwrap_or_default();
        if invalid.is_empty() && !self.has_status(pipeline, status) {
            invalid.push(("NotSupportedChoice", path("status_id"), NOT_A_CHOICE));
        }
        if invalid.is_empty() { Ok(()) } else { Err(invalid) }
    }

    /// `POST /api/v4/leads`: the new lead's id.
    pub fn add_lead(&mut self, fields: &Map<String, Value>, user: u64, index: usize) -> Result<u64, Vec<Invalid>> {
        let now = chrono::Utc::now().timestamp();
        let first = &self.pipelines[0];
        let pipeline = fields.get("pipeline_id").and_then(int).unwrap_or(first.id);
        let entry = self.pipelines.iter().find(|p| p.id == pipeline).unwrap_or(first);
        let mut lead = Map::new();
        for (k, v) in [
            ("name", json!("")),
            ("price", json!(0)),
            ("responsible_user_id", json!(user)),
            ("group_id", json!(0)),
            ("status_id", json!(entry.statuses[0].0)),
            ("pipeline_id", json!(entry.id)),
            ("loss_reason_id", Value::Null),
            ("created_by", json!(user)),
            ("updated_by", json!(user)),
            ("created_at", json!(now)),
            ("updated_at", json!(now)),
            ("closed_at", Value::Null),
            ("closest_task_at", Value::Null),
            ("is_deleted", json!(false)),
            ("custom_fields_values", Value::Null),
            ("score", Value::Null),
            ("account_id", json!(self.id)),
        ] {
            lead.insert(k.into(), v);
        }
        self.write(&mut lead, fields, &index.to_string())?;
        let id = self.next();
        lead.insert("id".into(), json!(id));
        lead.insert("_links".into(), self.link(&format!("/api/v4/leads/{id}")));
        lead.insert("_embedded".into(), json!({"tags": [], "companies": []}));
        self.leads.insert(id, lead);
        Ok(id)
    }

    /// `PATCH /api/v4/leads/{id}`: the lead before the change, or `None`
    /// when there is no such lead.
    pub fn update_lead(
        &mut self,
        id: u64,
        fields: &Map<String, Value>,
        user: u64,
    ) -> Option<Result<Map<String, Value>, Vec<Invalid>>> {
        let before = self.leads.get(&id)?.clone();
        let mut lead = before.clone();
        if let Err(invalid) = self.write(&mut lead, fields, "") {
            return Some(Err(invalid));
        }
        lead.insert("updated_by".into(), json!(user));
        lead.insert("updated_at".into(), json!(chrono::Utc::now().timestamp()));
        let closed = matches!(lead.get("status_id").and_then(int), Some(142 | 143));
        if closed && before.get("status_id") != lead.get("status_id") {
            lead.insert("closed_at".into(), json!(chrono::Utc::now().timestamp()));
        }
        self.leads.insert(id, lead);
        Some(Ok(before))
    }

    /// `POST /api/v4/tasks` of one task.
    pub fn add_task(&mut self, task: &Map<String, Value>, user: u64, index: usize) -> Result<u64, Vec<Invalid>> {
        let mut invalid = Vec::new();
        let text = task.get("text").and_then(Value::as_str).filter(|t| !t.is_empty());
        if text.is_none() {
            invalid.push(("NotBlank", format!("{index}.text"), "This value should not be blank."));
        }
        if task.get("complete_till").and_then(int).is_none() {
            invalid.push(("InvalidType", format!("{index}.complete_till"), NOT_AN_INTEGER));
        }
        let entity = task.get("entity_id").and_then(int);
        if task.get("entity_type").and_then(Value::as_str) != Some("leads")
            || entity.is_none_or(|e| !self.leads.contains_key(&e))
        {
            invalid.push(("NotSupportedChoice", format!("{index}.entity_id"), NOT_A_CHOICE));
        }
        if !invalid.is_empty() {
            return Err(invalid);
        }
        let id = self.next();
        let mut stored = task.clone();
        stored.insert("id".into(), json!(id));
        stored.insert("created_by".into(), json!(user));
        stored.insert("is_completed".into(), json!(false));
        stored.insert("account_id".into(), json!(self.id));
        self.tasks.insert(id, Value::Object(stored));
        Ok(id)
    }

    /// `POST /api/v4/leads/{lead}/notes` of one note; `None`: no such lead.
    pub fn add_note(&mut self, lead: u64, note: &Value, user: u64, index: usize) -> Option<Result<u64, Vec<Invalid>>> {
        self.leads.get(&lead)?;
        if note.get("note_type").and_then(Value::as_str) != Some("common")
            || note.pointer("/params/text").and_then(Value::as_str).is_none()
        {
            return Some(Err(vec![("NotSupportedChoice", format!("{index}.note_type"), NOT_A_CHOICE)]));
        }
        let id = self.next();
        let stored = json!({"id": id, "entity_id": lead, "created_by": user, "note_type": "common",
            "params": note["params"], "account_id": self.id});
        self.notes.insert(id, stored);
        Some(Ok(id))
    }

    /// The webhook entry of a lead's change, in the shape webhooks use
    /// (strings, legacy `custom_fields`), and which section it goes in.
    pub fn webhook_entry(&self, lead: &Map<String, Value>, before: Option<&Map<String, Value>>) -> (LeadAction, Value) {
        let text = |v: Option<&Value>| match v {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        };
        let mut entry = Map::new();
        for (key, from) in [
            ("id", "id"),
            ("name", "name"),
            ("status_id", "status_id"),
            ("price", "price"),
            ("responsible_user_id", "responsible_user_id"),
            ("last_modified", "updated_at"),
            ("modified_user_id", "updated_by"),
            ("created_user_id", "created_by"),
            ("date_create", "created_at"),
            ("pipeline_id", "pipeline_id"),
            ("account_id", "account_id"),
            ("created_at", "created_at"),
            ("updated_at", "updated_at"),
        ] {
            entry.insert(key.into(), json!(text(lead.get(from))));
        }
        let fields = lead.get("custom_fields_values").and_then(Value::as_array).cloned().unwrap_or_default();
        let legacy: Vec<Value> = fields
            .iter()
            .map(|f| {
                let values: Vec<Value> = f["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|v| json!({ "value": text(v.get("value")) }))
                    .collect();
                json!({"id": text(f.get("field_id")), "name": text(f.get("field_name")), "values": values})
            })
            .collect();
        if !legacy.is_empty() {
            entry.insert("custom_fields".into(), Value::Array(legacy));
        }
        let action = match before {
            None => LeadAction::Add,
            Some(before) => {
                let moved = before.get("status_id") != lead.get("status_id")
                    || before.get("pipeline_id") != lead.get("pipeline_id");
                if !moved {
                    LeadAction::Update
                } else {
                    entry.insert("old_status_id".into(), json!(text(before.get("status_id"))));
                    if before.get("pipeline_id") != lead.get("pipeline_id") {
                        entry.insert("old_pipeline_id".into(), json!(text(before.get("pipeline_id"))));
                    }
                    LeadAction::Status
                }
            }
        };
        (action, Value::Object(entry))
    }
}
