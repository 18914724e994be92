//! The emulated portal's data and methods: deals, smart-process items,
//! pipelines and stages, tasks, notifications, timeline comments (of deals
//! and of items, `dynamic_<entityTypeId>`).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::CallRecord;
use crate::rest::{MAX_BATCH, PAGE_SIZE, id_text};

/// An error answer: HTTP status, `error`, `error_description`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: String,
    pub description: String,
    /// Sent as `Retry-After` (faults only; the real portal sends none).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: u16, code: &str, description: &str) -> Self {
        Self { status, code: code.into(), description: description.into(), retry_after: None }
    }

    /// What `crm.deal.*` answers for a missing deal: an empty code.
    fn not_found() -> Self {
        Self::new(400, "", "Not found")
    }

    fn invalid_id() -> Self {
        Self::new(400, "", "ID is not defined or invalid")
    }
}

/// Makes the next `times` calls of `method` (`*`: any) fail.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Fault {
    pub method: String,
    pub status: u16,
    pub error: String,
    #[serde(default)]
    pub error_description: String,
    #[serde(default = "one")]
    pub times: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
}

const fn one() -> u32 {
    1
}

/// A successful answer's parts.
pub struct Reply {
    pub result: Value,
    pub total: Option<u64>,
    pub next: Option<u64>,
}

impl Reply {
    fn of(result: Value) -> Self {
        Self { result, total: None, next: None }
    }
}

struct Status {
    entity_id: String,
    status_id: String,
    name: String,
    sort: u32,
    category: u64,
    semantics: Option<&'static str>,
}

pub struct Portal {
    /// The user of the incoming webhook the current call came through.
    pub acting_user: u64,
    deals: BTreeMap<u64, Map<String, Value>>,
    items: BTreeMap<(u64, u64), Map<String, Value>>,
    categories: Vec<(u64, String)>,
    statuses: Vec<Status>,
    tasks: BTreeMap<u64, Value>,
    notifications: Vec<Value>,
    comments: Vec<Value>,
    next_id: u64,
    pub calls: Vec<CallRecord>,
    pub faults: Vec<Fault>,
    events: Vec<(String, Vec<(String, String)>)>,
    batch_depth: u32,
    /// Key order of the next `batch`'s `cmd`, as sent.
    pub batch_order: Vec<String>,
}

/// Case-insensitive top-level param (`id`/`ID`, `fields`/`FIELDS`).
fn param<'a>(params: &'a Value, name: &str) -> Option<&'a Value> {
    params.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
}

fn positive_id(params: &Value) -> Result<u64, ApiError> {
    param(params, "id")
        .and_then(id_text)
        .and_then(|s| s.parse().ok())
        .filter(|n| *n > 0)
        .ok_or_else(ApiError::invalid_id)
}

/// What Bitrix24 stores: scalars as strings, booleans as `Y`/`N`.
fn stored(value: &Value) -> Value {
    match value {
        Value::Number(n) => Value::String(n.to_string()),
        Value::Bool(b) => Value::String(if *b { "Y" } else { "N" }.into()),
        Value::Array(items) => Value::Array(items.iter().map(stored).collect()),
        Value::Object(map) if map.keys().all(|k| k.parse::<usize>().is_ok()) => {
            // `a[0]=x&a[1]=y` from a form arrives as a numeric-keyed map.
            let mut entries: Vec<(usize, &Value)> = map.iter().map(|(k, v)| (k.parse().unwrap_or(0), v)).collect();
            entries.sort_by_key(|(i, _)| *i);
            Value::Array(entries.into_iter().map(|(_, v)| stored(v)).collect())
        }
        other => other.clone(),
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "Y" } else { "N" }.into()),
        _ => None,
    }
}

fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    let (a, b) = (text(a)?, text(b)?);
    match (a.trim().parse::<f64>(), b.trim().parse::<f64>()) {
        (Ok(x), Ok(y)) => x.partial_cmp(&y),
        _ => Some(a.cmp(&b)),
    }
}

/// `categoryId` → `CATEGORY_ID`, `ufCrmParentDeal` → `UF_CRM_PARENT_DEAL`.
fn upper_snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// `CATEGORY_ID` → `categoryId`.
fn camel(name: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

fn fields_of(params: &Value) -> Result<Map<String, Value>, ApiError> {
    match param(params, "fields") {
        Some(Value::Object(map)) => Ok(map.clone()),
        None => Ok(Map::new()),
        Some(_) => Err(ApiError::new(400, "", "Parameter 'fields' must be array")),
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

impl Portal {
    /// A portal with the sales pipeline (0) and the logistics one (1).
    pub fn seeded(user: u64) -> Self {
        let mut statuses = Vec::new();
        let sales = [
            ("NEW", "Новая", None),
            ("UC_EVALUATE", "Оценить", None),
            ("UC_ESTIMATE_READY", "Оценка готова", None),
            ("PREPARATION", "Подготовка документов", None),
            ("UC_PROPOSAL_SENT", "КП отправлено", None),
            ("PREPAYMENT_INVOICE", "Счёт на предоплату", None),
            ("EXECUTING", "В работе", None),
            ("FINAL_INVOICE", "Финальный счёт", None),
            ("WON", "Сделка успешна", Some("S")),
            ("LOSE", "Сделка провалена", Some("F")),
            ("APOLOGY", "Анализ причины провала", Some("F")),
        ];
        for (i, (id, name, semantics)) in sales.into_iter().enumerate() {
            statuses.push(Status {
                entity_id: "DEAL_STAGE".into(),
                status_id: id.into(),
                name: name.into(),
                sort: 10 * (i as u32 + 1),
                category: 0,
                semantics,
            });
        }
        let logistics = [
            ("C1:NEW", "Новая", None),
            ("C1:PREPARATION", "В работе", None),
            ("C1:UC_APPROVAL", "Согласование", None),
            ("C1:WON", "Выполнено", Some("S")),
            ("C1:LOSE", "Отменено", Some("F")),
        ];
        for (i, (id, name, semantics)) in logistics.into_iter().enumerate() {
            statuses.push(Status {
                entity_id: "DEAL_STAGE_1".into(),
                status_id: id.into(),
                name: name.into(),
                sort: 10 * (i as u32 + 1),
                category: 1,
                semantics,
            });
        }
        Self {
            acting_user: user,
            deals: BTreeMap::new(),
            items: BTreeMap::new(),
            categories: vec![(0, "Продажи".into()), (1, "Логистика".into())],
            statuses,
            tasks: BTreeMap::new(),
            notifications: Vec::new(),
            comments: Vec::new(),
            next_id: 1,
            calls: Vec::new(),
            faults: Vec::new(),
            events: Vec::new(),
            batch_depth: 0,
            batch_order: Vec::new(),
        }
    }

    fn new_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub fn log(&mut self, method: &str, params: Value, result: &Result<Reply, ApiError>, in_batch: bool) {
        let (status, error) = match result {
            Ok(_) => (200, None),
            Err(e) => (e.status, Some(e.code.clone())),
        };
        let user = self.acting_user;
        self.calls.push(CallRecord { method: method.to_owned(), params, status, error, in_batch, user });
    }

    pub fn take_fault(&mut self, method: &str) -> Option<ApiError> {
        let i = self.faults.iter().position(|f| f.method == method || f.method == "*")?;
        let fault = &mut self.faults[i];
        let mut error = ApiError::new(fault.status, &fault.error, &fault.error_description);
        error.retry_after = fault.retry_after_secs;
        fault.times = fault.times.saturating_sub(1);
        if fault.times == 0 {
            self.faults.remove(i);
        }
        Some(error)
    }

    pub fn take_events(&mut self) -> Vec<(String, Vec<(String, String)>)> {
        std::mem::take(&mut self.events)
    }

    fn event(&mut self, name: &str, fields: &[(&str, String)]) {
        self.events.push((name.to_owned(), fields.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()));
    }

    pub fn call(&mut self, method: &str, params: &Value) -> Result<Reply, ApiError> {
        match method {
            "crm.deal.get" => self.deal_get(params),
            "crm.deal.list" => self.deal_list(params),
            "crm.deal.add" => self.deal_add(params),
            "crm.deal.update" => self.deal_update(params),
            "crm.deal.delete" => self.deal_delete(params),
            "crm.item.get" => self.item_get(params),
            "crm.item.add" => self.item_add(params),
            "crm.item.update" => self.item_update(params),
            "crm.item.list" => self.item_list(params),
            "crm.status.list" => self.status_list(params),
            "crm.category.list" => self.category_list(params),
            "tasks.task.add" => self.task_add(params),
            "im.notify.system.add" => self.notify(params),
            "crm.timeline.comment.add" => self.comment_add(params),
            "batch" => self.batch(params),
            _ => Err(ApiError::new(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")),
        }
    }

    fn stages_of(&self, category: u64) -> impl Iterator<Item = &Status> {
        self.statuses.iter().filter(move |s| s.category == category)
    }

    fn check_stage(&self, category: u64, stage: &str) -> Result<&Status, ApiError> {
        self.stages_of(category).find(|s| s.status_id == stage).ok_or_else(|| {
            ApiError::new(400, "", &format!("Stage `{stage}` does not belong to the pipeline {category}"))
        })
    }

    fn deal_get(&mut self, params: &Value) -> Result<Reply, ApiError> {
        let id = positive_id(params)?;
        let deal = self.deals.get(&id).ok_or_else(ApiError::not_found)?;
        Ok(Reply::of(Value::Object(deal.clone())))
    }

    fn deal_list(&mut self, params: &Value) -> Result<Reply, ApiError> {
        let filter = match param(params, "filter") {
            None => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(Value::Array(a)) if a.is_empty() => Map::new(),
            Some(_) => return Err(ApiError::new(400, "", "Parameter 'filter' must be array.")),
        };
        let mut rows: Vec<&Map<String, Value>> = self.deals.values().filter(|d| matches(d, &filter)).collect();
        let order: Vec<(String, bool)> = match param(params, "order") {
            Some(Value::Object(m)) if !m.is_empty() => m
                .iter()
                .map(|(k, v)| (k.to_ascii_uppercase(), text(v).is_some_and(|d| d.eq_ignore_ascii_case("DESC"))))
                .collect(),
            _ => vec![("ID".into(), false)],
        };
        rows.sort_by(|a, b| {
            for (field, desc) in &order {
                let o = compare(a.get(field).unwrap_or(&Value::Null), b.get(field).unwrap_or(&Value::Null))
                    .unwrap_or(Ordering::Equal);
                if o != Ordering::Equal {
                    return if *desc { o.reverse() } else { o };
                }
            }
            Ordering::Equal
        });
        let select: Vec<String> = match param(params, "select") {
            Some(Value::Array(items)) => items.iter().filter_map(text).map(|s| s.to_ascii_uppercase()).collect(),
            Some(Value::Object(map)) => map.values().filter_map(text).map(|s| s.to_ascii_uppercase()).collect(),
            _ => Vec::new(),
        };
        let project = |deal: &Map<String, Value>| -> Value {
            if select.is_empty() {
                return Value::Object(deal.clone());
            }
            let picked = deal
                .iter()
                .filter(|(k, _)| {
                    k.as_str() == "ID"
                        || select.iter().any(|s| {
                            s == *k || (s == "*" && !k.starts_with("UF_")) || (s == "UF_*" && k.starts_with("UF_"))
                        })
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            Value::Object(picked)
        };
        let start: i64 = param(params, "start").and_then(text).and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        if start < 0 {
            // `start=-1`: no count, no `next`; the caller pages by `>ID`.
            let page = rows.iter().take(PAGE_SIZE).map(|d| project(d)).collect();
            return Ok(Reply { result: Value::Array(page), total: Some(0), next: None });
        }
        let start = start as usize;
        let total = rows.len();
        let page: Vec<Value> = rows.iter().skip(start).take(PAGE_SIZE).map(|d| project(d)).collect();
        let next = (start + PAGE_SIZE < total).then_some((start + PAGE_SIZE) as u64);
        Ok(Reply { result: Value::Array(page), total: Some(total as u64), next })
    }

    fn deal_add(&mut self, params: &Value) -> Result<Reply, ApiError> {
        let fields = fields_of(params)?;
        let mut deal: Map<String, Value> = fields.iter().map(|(k, v)| (k.to_ascii_uppercase(), stored(v))).collect();
        let category: u64 = match deal.get("CATEGORY_ID").and_then(text) {
            None => 0,
            Some(c) => c.trim().parse().map_err(|_| ApiError::new(400, "", "CATEGORY_ID is invalid"))?,
        };
        if !self.categories.iter().any(|(id, _)| *id == category) {
            return Err(ApiError::new(400, "", &format!("Pipeline {category} not found")));
        }
        let stage = match deal.get("STAGE_ID").and_then(text) {
            Some(stage) => self.check_stage(category, &stage)?,
            None => self.stages_of(category).next().expect("every pipeline has stages"),
        };
        let (stage_id, semantics) = (stage.status_id.clone(), stage.semantics.unwrap_or("P"));
        let id = self.new_id();
        let user = self.acting_user.to_string();
        let now = now();
        deal.insert("ID".into(), json!(id.to_string()));
        deal.insert("CATEGORY_ID".into(), json!(category.to_string()));
        deal.insert("STAGE_ID".into(), json!(stage_id));
        deal.insert("STAGE_SEMANTIC_ID".into(), json!(semantics));
        deal.entry("TITLE").or_insert_with(|| json!(format!("Сделка #{id}")));
        deal.entry("CURRENCY_ID").or_insert_with(|| json!("RUB"));
        deal.entry("OPPORTUNITY").or_insert_with(|| json!("0.00"));
        deal.entry("ASSIGNED_BY_ID").or_insert_with(|| json!(user));
        for key in ["CREATED_BY_ID", "MODIFY_BY_ID", "MOVED_BY_ID"] {
            deal.insert(key.into(), json!(user));
        }
        for key in ["DATE_CREATE", "DATE_MODIFY", "MOVED_TIME"] {
            deal.insert(key.into(), json!(now));
        }
        deal.entry("ORIGINATOR_ID").or_insert(Value::Null);
        deal.entry("ORIGIN_ID").or_insert(Value::Null);
        self.deals.insert(id, deal);
        self.event("ONCRMDEALADD", &[("ID", id.to_string())]);
        // `crm.deal.add` answers the id as a JSON number.
        Ok(Reply::of(json!(id)))
    }

    /// Applies upper-case fields to a deal; `CATEGORY_ID` only when `move_category`.
    fn change_deal(&mut self, id: u64, fields: Map<String, Value>, move_category: bool) -> Result<bool, ApiError> {
        let deal = self.deals.get(&id).ok_or_else(ApiError::not_found)?;
        let mut category: u64 = deal.get("CATEGORY_ID").and_then(text).and_then(|c| c.parse().ok()).unwrap_or(0);
        let old_category = category;
        if move_category && let Some(c) = fields.get("CATEGORY_ID").and_then(text) {
            category = c.trim().parse().map_err(|_| ApiError::new(400, "", "CATEGORY_ID is invalid"))?;
            if !self.categories.iter().any(|(cid, _)| *cid == category) {
                return Err(ApiError::new(400, "NOT_FOUND", &format!("Pipeline {category} not found")));
            }
        }
        let stage = match fields.get("STAGE_ID").and_then(text) {
            Some(s) => Some(self.check_stage(category, &s)?),
            None if category != old_category => self.stages_of(category).next(),
            None => None,
        };
        let stage = stage.map(|s| (s.status_id.clone(), s.semantics.unwrap_or("P")));
        let user = self.acting_user.to_string();
        let now = now();
        let deal = self.deals.get_mut(&id).expect("checked above");
        for (k, v) in fields {
            // `CATEGORY_ID` is immutable in `crm.deal.update` (ignored there).
            if k == "ID" || k == "CATEGORY_ID" || k == "STAGE_ID" {
                continue;
            }
            deal.insert(k, stored(&v));
        }
        if let Some((stage_id, semantics)) = stage
            && deal.get("STAGE_ID").and_then(text).as_deref() != Some(stage_id.as_str())
        {
            deal.insert("STAGE_ID".into(), json!(stage_id));
            deal.insert("STAGE_SEMANTIC_ID".into(), json!(semantics));
            deal.insert("MOVED_BY_ID".into(), json!(user));
            deal.insert("MOVED_TIME".into(), json!(now));
        }
        deal.insert("CATEGORY_ID".into(), json!(category.to_string()));
        deal.insert("MODIFY_BY_ID".into(), json!(user));
        deal.insert("DATE_MODIFY".into(), json!(now));
        Ok(category != old_category)
    }

    fn deal_update(&mut self, params: &Value) -> Result<Reply, ApiError> {
        let id = positive_id(params)?;
        let fields: Map<String, Value> =
            fields_of(params)?.into_iter().map(|(k, v)| (k.to_ascii_uppercase(), v)).collect();
        self.change_deal(id, fields, false)?;
        self.event("ONCRMDEALUPDATE", &[("ID", id.to_string())]);
        Ok(Reply::of(json!(true)))
    }

    fn deal_delete(&mut self, params: &Value) -> Result<Reply, ApiError> {
        let id = positive_id(params)?;
        self.deals.remove(&id).ok_or_else(ApiError::not_found)?;
        self.event("ONCRMDEALDELETE", &[("ID", id.to_string())]);
        Ok(Reply::of(json!(true)))
    }

    fn entity_type(params: &Value) -> Result<u64, ApiError> {
        param(params, "entityTypeId")
            .and_then(id_text)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ApiError::new(400, "NOT_FOUND", "Смарт-процесс не найден"))
    }

    fn deal_as_item(deal: &Map<String, Value>) -> Value {
        let mut item: Map<String, Value> = deal.iter().map(|(k, v)| (camel(k), v.clone())).collect();
        item.insert("entityTypeId".into(), json!(2));
        json!({ "item": item })
    }

    fn item_get(&mut self, params: &Value) -> Result<Reply, ApiError> {
        let entity = Self::entity_type(params)?;
        let id = positive_id(params)?;
        let missing = || ApiError::new(400, "NOT_FOUND", "Элемент не найден");
        if entity == 2 {
            return Ok(Reply::of(Self::deal_as_item(self.deals.get(&id).ok_or_else(missing)?)));
        }
        let item = self.items.get(&(entity, id)).ok_or_else(missing)?;
        Ok(Reply::of(json!({ "item": item })))
    }

    fn item_add(&mut self, params: &Value) -> Result<Reply, ApiError> {
        let entity = Self::entity_type(params)?;
        let fields = fields_of(params)?;
        if entity == 2 {
            let upper: Map<String, Value> = fields.iter().map(|(k, v)| (upper_snake(k), v.clone())).collect();
            let id = self.deal_add(&json!({ "fields": upper }))?.result;
            let id = id.as_u64().expect("deal ids are numbers");
            return Ok(Reply::of(Self::deal_as_item(&self.deals[&id])));
        }
        let id = self.new_id();
        let mut item: Map<String, Value> = fields;
        item.insert("id".into(), json!(id));
        item.insert("entityTypeId".into(), json!(entity));
        self.items.insert((entity, id), item.clone());
        self.event("ONCRMDYNAMICITEMADD", &[("ID", id.to_string()), ("ENTITY_TYPE_ID", entity.to_string())]);
        Ok(Reply::of(json!({ "item": item })))
    }

    fn item_update(&mut self, params: &Value) -> Result<Reply, ApiError> {
        let entity = Self::entity_type(params)?;
        let id = positive_id(params)?;
        let fields = fields_of(params)?;
        if entity == 2 {
            if !self.deals.contains_key(&id) {
                return Err(ApiError::new(400, "NOT_FOUND", "Элемент не найден"));
            }
            let upper: Map<String, Value> = fields.iter().map(|(k, v)| (upper_snake(k), v.clone())).collect();
            let moved = self.change_deal(id, upper, true)?;
            // A pipeline move fires only ONCRMDEALMOVETOCATEGORY, which an
            // outgoing webhook cannot subscribe to: nothing is sent then.
            if !moved {
                self.event("ONCRMDEALUPDATE", &[("ID", id.to_string())]);
            }
            return Ok(Reply::of(Self::deal_as_item(&self.deals[&id])));
        }
        let item =
            self.items.get_mut(&(entity, id)).ok_or_else(|| ApiError::new(400, "NOT_FOUND", "Элемент не найден"))?;
        for (k, v) in fields {
            item.insert(k, v);
        }
        let item = item.clone();
        self.event("ONCRMDYNAMICITEMUPDATE", &[("ID", id.to_string()), ("ENTITY_TYPE_ID", entity.to_string())]);
        Ok(Reply::of(json!({ "item": item })))
    }

    /// `crm.item.list` of a smart process: equality filters on camelCase
    /// fields, ordered by id, one page.
    fn item_list(&mut self, params: &Value) -> Result<Reply, ApiError> {
        let entity = Self::entity_type(params)?;
        let filter = param(params, "filter").and_then(Value::as_object).cloned().unwrap_or_default();
        let items: Vec<Value> = self
            .items
            .range((entity, 0)..=(entity, u64::MAX))
            .map(|(_, item)| item)
            .filter(|item| {
                filter
                    .iter()
                    .all(|(k, wanted)| item.get(k).is_some_and(|have| compare(have, wanted) == Some(Ordering::Equal)))
            })
            .take(PAGE_SIZE)
            .map(|item| Value::Object(item.clone()))
            .collect();
        let total = items.len() as u64;
        Ok(Reply { result: json!({ "items": items }), total: Some(total), next: None })
    }

    /// The timeline comments written so far, oldest first.
    pub fn timeline(&self) -> &[Value] {
        &self.comments
    }

    fn status_list(&mut self, params: &Value) -> Result<Reply, ApiError> {
        let filter = param(params, "filter").and_then(Value::as_object).cloned().unwrap_or_default();
        let entity = filter.iter().find(|(k, _)| k.eq_ignore_ascii_case("ENTITY_ID")).and_then(|(_, v)| text(v));
        let rows: Vec<Value> = self
            .statuses
            .iter()
            .enumerate()
            .filter(|(_, s)| entity.as_deref().is_none_or(|e| e == s.entity_id))
            .map(|(i, s)| {
                json!({
                    "ID": (101 + 2 * i).to_string(), "ENTITY_ID": s.entity_id, "STATUS_ID": s.status_id,
                    "NAME": s.name, "NAME_INIT": s.name, "SORT": s.sort.to_string(),
                    "SYSTEM": if s.semantics.is_some() || s.status_id.ends_with("NEW") { "Y" } else { "N" },
                    "CATEGORY_ID": if s.category == 0 { Value::Null } else { json!(s.category.to_string()) },
                    "SEMANTICS": s.semantics,
                })
            })
            .collect();
        let total = rows.len() as u64;
        Ok(Reply { result: Value::Array(rows), total: Some(total), next: None })
    }

    fn category_list(&mut self, params: &Value) -> Result<Reply, ApiError> {
        if Self::entity_type(params)? != 2 {
            return Err(ApiError::new(400, "NOT_FOUND", "Смарт-процесс не найден"));
        }
        let categories: Vec<Value> = self
            .categories
            .iter()
            .map(|(id, name)| {
                json!({ "id": id, "name": name, "sort": 100 * (id + 1), "entityTypeId": 2,
                                      "isDefault": if *id == 0 { "Y" } else { "N" } })
            })
            .collect();
        let total = categories.len() as u64;
        Ok(Reply { result: json!({ "categories": categories }), total: Some(total), next: None })
    }

    fn task_add(&mut self, params: &Value) -> Result<Reply, ApiError> {
        let fields: Map<String, Value> =
            fields_of(params)?.into_iter().map(|(k, v)| (k.to_ascii_uppercase(), stored(&v))).collect();
        let title = fields.get("TITLE").and_then(text).filter(|t| !t.trim().is_empty());
        let responsible = fields.get("RESPONSIBLE_ID").and_then(text).filter(|t| !t.trim().is_empty());
        let (Some(title), Some(responsible)) = (title, responsible) else {
            return Err(ApiError::new(400, "ERROR_CORE", "TITLE and RESPONSIBLE_ID are required"));
        };
        let id = self.new_id();
        let task = json!({
            "id": id.to_string(), "title": title, "responsibleId": responsible,
            "createdBy": self.acting_user.to_string(), "description": fields.get("DESCRIPTION").cloned().unwrap_or(json!("")),
            "deadline": fields.get("DEADLINE").cloned().unwrap_or(Value::Null),
            "ufCrmTask": fields.get("UF_CRM_TASK").cloned().unwrap_or(json!([])),
        });
        self.tasks.insert(id, task.clone());
        Ok(Reply::of(json!({ "task": task })))
    }

    fn notify(&mut self, params: &Value) -> Result<Reply, ApiError> {
        let user = param(params, "USER_ID").and_then(text).filter(|u| !u.trim().is_empty());
        let Some(user) = user else {
            return Err(ApiError::new(400, "USER_ID_EMPTY", "User ID can't be empty"));
        };
        let message = param(params, "MESSAGE").and_then(text).map(|m| m.trim().to_owned()).filter(|m| !m.is_empty());
        let Some(message) = message else {
            return Err(ApiError::new(400, "MESSAGE_EMPTY", "Message can't be empty"));
        };
        let id = self.new_id();
        self.notifications.push(json!({ "id": id, "USER_ID": user, "MESSAGE": message }));
        Ok(Reply::of(json!(id)))
    }

    fn comment_add(&mut self, params: &Value) -> Result<Reply, ApiError> {
        // Only the lower-case `fields` key is accepted (crm 23.100.0 on).
        let Some(Value::Object(fields)) = params.get("fields") else {
            return Err(ApiError::new(400, "", "Parameter 'fields' must be array"));
        };
        let entity_type = fields.get("ENTITY_TYPE").and_then(text).unwrap_or_default().to_ascii_lowercase();
        let entity_id: u64 = fields.get("ENTITY_ID").and_then(text).and_then(|s| s.parse().ok()).unwrap_or(0);
        let comment = fields.get("COMMENT").and_then(text).unwrap_or_default();
        if entity_id == 0 || entity_type.is_empty() || comment.trim().is_empty() {
            return Err(ApiError::new(400, "", "ENTITY_ID, ENTITY_TYPE and COMMENT are required"));
        }
        let exists = match entity_type.strip_prefix("dynamic_").map(str::parse::<u64>) {
            None if entity_type == "deal" => self.deals.contains_key(&entity_id),
            Some(Ok(entity)) => self.items.contains_key(&(entity, entity_id)),
            _ => true,
        };
        if !exists {
            return Err(ApiError::not_found());
        }
        let id = self.new_id();
        self.comments.push(json!({ "id": id, "ENTITY_TYPE": entity_type, "ENTITY_ID": entity_id, "COMMENT": comment }));
        Ok(Reply::of(json!(id)))
    }

    fn batch(&mut self, params: &Value) -> Result<Reply, ApiError> {
        if self.batch_depth > 0 {
            return Err(ApiError::new(405, "ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage"));
        }
        let halt = param(params, "halt")
            .and_then(text)
            .is_some_and(|h| h == "1" || h.eq_ignore_ascii_case("true") || h == "Y");
        let mut commands: Vec<(String, String)> = match param(params, "cmd") {
            Some(Value::Object(map)) => map.iter().filter_map(|(k, v)| Some((k.clone(), text(v)?))).collect(),
            Some(Value::Array(items)) => {
                items.iter().enumerate().filter_map(|(i, v)| Some((i.to_string(), text(v)?))).collect()
            }
            _ => return Err(ApiError::new(400, "INVALID_REQUEST", "Parameter 'cmd' is required")),
        };
        let order = std::mem::take(&mut self.batch_order);
        commands.sort_by_key(|(key, _)| order.iter().position(|k| k == key).unwrap_or(usize::MAX));
        if commands.len() > MAX_BATCH {
            return Err(ApiError::new(400, "ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded"));
        }
        let mut results = Map::new();
        let mut errors = Map::new();
        let mut totals = Map::new();
        let mut nexts = Map::new();
        let mut times = Map::new();
        self.batch_depth += 1;
        for (key, command) in commands {
            let (method, query) = command.split_once('?').unwrap_or((command.as_str(), ""));
            let mut params = crate::brackets::parse_query(query);
            substitute_all(&mut params, &results);
            let outcome = if method == "batch" {
                Err(ApiError::new(405, "ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage"))
            } else {
                self.take_fault(method).map(Err).unwrap_or_else(|| self.call(method, &params))
            };
            self.log(method, params, &outcome, true);
            match outcome {
                Ok(reply) => {
                    results.insert(key.clone(), reply.result);
                    if let Some(t) = reply.total {
                        totals.insert(key.clone(), json!(t));
                    }
                    if let Some(n) = reply.next {
                        nexts.insert(key.clone(), json!(n));
                    }
                    times.insert(key, super::envelope_time());
                }
                Err(e) => {
                    errors.insert(key, json!({ "error": e.code, "error_description": e.description }));
                    if halt {
                        break;
                    }
                }
            }
        }
        self.batch_depth -= 1;
        // PHP answers an empty map as `[]`.
        let php = |m: Map<String, Value>| if m.is_empty() { json!([]) } else { Value::Object(m) };
        Ok(Reply::of(json!({
            "result": php(results), "result_error": php(errors), "result_total": php(totals),
            "result_next": php(nexts), "result_time": php(times),
        })))
    }
}

/// Replaces `$result[…]` references in every decoded param value.
fn substitute_all(params: &mut Value, results: &Map<String, Value>) {
    match params {
        Value::String(s) if s.contains("$result[") => *s = substitute(s, results),
        Value::Array(items) => items.iter_mut().for_each(|v| substitute_all(v, results)),
        Value::Object(map) => map.values_mut().for_each(|v| substitute_all(v, results)),
        _ => {}
    }
}

/// Replaces `$result[key][field]…` in a decoded value with earlier results.
fn substitute(command: &str, results: &Map<String, Value>) -> String {
    let mut out = String::new();
    let mut rest = command;
    while let Some(at) = rest.find("$result[") {
        out.push_str(&rest[..at]);
        let mut tail = &rest[at + "$result".len()..];
        let mut path = Vec::new();
        while let Some(inner) = tail.strip_prefix('[') {
            let Some(end) = inner.find(']') else { break };
            path.push(&inner[..end]);
            tail = &inner[end + 1..];
        }
        let mut node = path.first().and_then(|k| results.get(*k));
        for part in path.iter().skip(1) {
            node = node.and_then(|n| match n {
                Value::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
                Value::Object(map) => map.get(*part),
                _ => None,
            });
        }
        match node.and_then(text) {
            Some(value) => out.push_str(&value),
            // Unresolved: the text goes on as an ordinary value, as on a portal.
            None => out.push_str(&rest[at..rest.len() - tail.len()]),
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// `crm.deal.list` filter keys with their operator prefixes.
fn matches(deal: &Map<String, Value>, filter: &Map<String, Value>) -> bool {
    filter.iter().all(|(key, wanted)| {
        let ops = [">=", "<=", "!=", "!@", "=%", "%=", ">", "<", "=", "!", "@", "%"];
        let (op, field) =
            ops.iter().find_map(|op| key.strip_prefix(op).map(|f| (*op, f))).unwrap_or(("=", key.as_str()));
        let field = field.to_ascii_uppercase();
        let have = deal.get(&field).unwrap_or(&Value::Null);
        let eq = |w: &Value| match (have, w) {
            (Value::Null, w) => text(w).is_none_or(|t| t.is_empty()),
            _ => compare(have, w) == Some(Ordering::Equal),
        };
        let list = |w: &Value| match w {
            Value::Array(items) => items.clone(),
            Value::Object(map) => map.values().cloned().collect(),
            other => vec![other.clone()],
        };
        let like = |pattern: &str| {
            let have = text(have).unwrap_or_default().to_lowercase();
            have.contains(&pattern.trim_matches('%').to_lowercase())
        };
        match op {
            "=" => eq(wanted),
            "!" | "!=" => !eq(wanted),
            "@" => list(wanted).iter().any(eq),
            "!@" => !list(wanted).iter().any(eq),
            ">" => compare(have, wanted) == Some(Ordering::Greater),
            ">=" => matches!(compare(have, wanted), Some(Ordering::Greater | Ordering::Equal)),
            "<" => compare(have, wanted) == Some(Ordering::Less),
            "<=" => matches!(compare(have, wanted), Some(Ordering::Less | Ordering::Equal)),
            _ => text(wanted).is_some_and(|p| like(&p)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_convert_between_cases() {
        assert_eq!(upper_snake("categoryId"), "CATEGORY_ID");
        assert_eq!(upper_snake("ufCrmParentDeal"), "UF_CRM_PARENT_DEAL");
        assert_eq!(camel("CATEGORY_ID"), "categoryId");
    }

    #[test]
    fn batch_references_resolve_or_stay_as_text() {
        let mut results = Map::new();
        results.insert("deal".into(), json!({"ID": "7", "TITLE": "a b"}));
        assert_eq!(substitute("$result[deal][ID]", &results), "7");
        assert_eq!(substitute("t: $result[deal][TITLE]!", &results), "t: a b!");
        assert_eq!(substitute("$result[nope][ID]", &results), "$result[nope][ID]");
        let mut params = json!({"id": "$result[deal][ID]", "fields": {"T": ["$result[deal][TITLE]"]}});
        substitute_all(&mut params, &results);
        assert_eq!(params, json!({"id": "7", "fields": {"T": ["a b"]}}));
    }
}
