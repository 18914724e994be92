//! A client for a portal's REST API through an incoming webhook: the
//! envelope (`result`, `next`, `total`, `time`, `error`,
//! `error_description`), the methods the hub uses, and `batch`.
//!
//! Every call is one POST of JSON to `…/rest/<user>/<code>/<method>.json`.
//! The client does not retry and does not throttle: the dispatcher owns the
//! per-portal budget and the retry policy, and a retry of a non-idempotent
//! call (`crm.deal.add`) must be decided by the caller.

mod error;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Map, Value, json};

pub use error::{RestError, classify};

use crate::config::WebhookUrl;

/// Rows per `crm.*.list` page; fixed by Bitrix24.
pub const PAGE_SIZE: usize = 50;
/// Most commands one `batch` call may carry.
pub const MAX_BATCH: usize = 50;

/// A successful answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub result: Value,
    /// Offset of the next page (`start`); absent on the last page.
    pub next: Option<u64>,
    pub total: Option<u64>,
    pub time: Option<Value>,
}

/// One page of a list method.
#[derive(Debug, Clone, PartialEq)]
pub struct ListPage {
    pub items: Vec<Value>,
    pub next: Option<u64>,
    pub total: Option<u64>,
}

/// One command of a `batch`: a key, a method and its params.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchCommand {
    pub key: String,
    pub method: String,
    pub params: Value,
}

/// What a `batch` answered, per command key. A command is in at most one
/// of `results` and `errors`; with `halt`, those after a failure are in
/// neither and were not run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchOutcome {
    pub results: BTreeMap<String, Value>,
    pub errors: BTreeMap<String, RestError>,
    pub totals: BTreeMap<String, u64>,
    pub nexts: BTreeMap<String, u64>,
}

pub struct RestClient {
    http: reqwest::Client,
    url: WebhookUrl,
    /// Per method, the last `time.operating_reset_at` seen: when an
    /// `OPERATION_TIME_LIMIT` block of that method lifts at the latest.
    operating_reset: Mutex<HashMap<String, i64>>,
}

impl std::fmt::Debug for RestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestClient").field("url", &self.url).finish_non_exhaustive()
    }
}

/// A lenient id: Bitrix24 sends ids as strings or numbers.
pub fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn number(value: Option<&Value>) -> Option<u64> {
    match value? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// PHP sends an empty map as `[]` and numeric-keyed maps as lists.
fn map_or_list(value: Option<&Value>) -> Vec<(String, Value)> {
    match value {
        Some(Value::Object(map)) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        Some(Value::Array(items)) => items.iter().enumerate().map(|(i, v)| (i.to_string(), v.clone())).collect(),
        _ => Vec::new(),
    }
}

/// `Retry-After` in seconds or as an HTTP date.
/// How long a `QUERY_LIMIT_EXCEEDED` refusal should pause the portal's
/// calls. The portal's leaky bucket drains 2 requests a second (5 on
/// Enterprise plans), so after a second there is room again; the
/// dispatcher's own default pause (5 s) would leave most of the budget
/// unused. The refusal happens before anything runs, so the retry repeats
/// nothing; the gate sends one probe and then goes on at the configured
/// rate.
fn leak_time(code: &str) -> Option<Duration> {
    code.eq_ignore_ascii_case("QUERY_LIMIT_EXCEEDED").then_some(Duration::from_secs(1))
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    (at.with_timezone(&Utc) - Utc::now()).to_std().ok()
}

impl RestClient {
    pub fn new(url: WebhookUrl, timeout: Duration, connect_timeout: Duration) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout.max(Duration::from_secs(1)))
            .connect_timeout(connect_timeout.max(Duration::from_secs(1)))
            .user_agent(concat!("dealbridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self { http, url, operating_reset: Mutex::new(HashMap::new()) })
    }

    /// The portal's host: what its rate limit is counted by.
    pub fn portal(&self) -> &str {
        self.url.portal()
    }

    /// Calls one method with JSON params.
    pub async fn call<P: serde::Serialize + ?Sized>(&self, method: &str, params: &P) -> Result<Envelope, RestError> {
        let response = self
            .http
            .post(self.url.method_url(method))
            .header(reqwest::header::ACCEPT, "application/json")
            .json(params)
            .send()
            .await
            // `without_url`: the URL carries the webhook's secret code.
            .map_err(|e| RestError::network(method, format!("no answer: {}", e.without_url())))?;
        let status = response.status().as_u16();
        let after = retry_after(response.headers());
        let body = response
            .bytes()
            .await
            .map_err(|e| RestError::network(method, format!("answer broken off: {}", e.without_url())))?;
        let parsed: Option<Map<String, Value>> = serde_json::from_slice(&body).ok();
        let Some(mut envelope) = parsed else {
            let snippet: String = String::from_utf8_lossy(&body).chars().take(200).collect();
            let mut e = RestError::new(method, Some(status), "", &format!("answer is not a JSON object: {snippet}"));
            if (200..300).contains(&status) {
                e.class = dealbridge_core::delivery::FailureClass::Retryable;
            }
            e.retry_after = after;
            return Err(e);
        };
        if let Some(code) = envelope.get("error") {
            let code = match code {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            let description = envelope.get("error_description").and_then(Value::as_str).unwrap_or_default();
            let mut e = RestError::new(method, Some(status), &code, description);
            e.retry_after = after.or_else(|| self.operating_block(method, &code)).or_else(|| leak_time(&code));
            return Err(e);
        }
        if !(200..300).contains(&status) || !envelope.contains_key("result") {
            let mut e = RestError::new(method, Some(status), "", "answer has neither `result` nor `error`");
            e.retry_after = after;
            return Err(e);
        }
        let time = envelope.remove("time");
        if let Some(reset) = time.as_ref().and_then(|t| t.get("operating_reset_at")).and_then(Value::as_i64) {
            self.operating_reset.lock().expect("operating map").insert(method.to_owned(), reset);
        }
        Ok(Envelope {
            result: envelope.remove("result").unwrap_or(Value::Null),
            next: number(envelope.get("next")),
            total: number(envelope.get("total")),
            time,
        })
    }

    /// How long an `OPERATION_TIME_LIMIT` block of `method` lasts: until
    /// the reset time the last good answer named, else the documented
    /// 10 minutes.
    fn operating_block(&self, method: &str, code: &str) -> Option<Duration> {
        if !code.eq_ignore_ascii_case("OPERATION_TIME_LIMIT") {
            return None;
        }
        let reset = self.operating_reset.lock().expect("operating map").get(method).copied();
        let now = Utc::now().timestamp();
        Some(match reset {
            Some(at) if at > now => Duration::from_secs((at - now) as u64),
            _ => Duration::from_secs(600),
        })
    }

    /// `crm.deal.get`: the deal's fields (numbers arrive as strings).
    pub async fn deal_get(&self, id: &str) -> Result<Map<String, Value>, RestError> {
        let e = self.call("crm.deal.get", &json!({ "id": id })).await?;
        match e.result {
            Value::Object(map) => Ok(map),
            other => Err(RestError::new("crm.deal.get", None, "", &format!("result is not a deal: {other}"))),
        }
    }

    /// `crm.deal.list` one page: `start` is a multiple of 50, or -1 to skip
    /// counting (then neither `next` nor a useful `total` comes back).
    pub async fn deal_list(
        &self,
        filter: &Value,
        select: &[&str],
        order: &Value,
        start: i64,
    ) -> Result<ListPage, RestError> {
        let params = json!({ "filter": filter, "select": select, "order": order, "start": start });
        let e = self.call("crm.deal.list", &params).await?;
        let items = match e.result {
            Value::Array(items) => items,
            Value::Object(map) if map.is_empty() => Vec::new(),
            other => return Err(RestError::new("crm.deal.list", None, "", &format!("result is not a list: {other}"))),
        };
        Ok(ListPage { items, next: e.next, total: e.total })
    }

    /// Every deal matching `filter`, the fast way for large pulls: ordered
    /// by `ID`, `>ID` of the last row seen, `start=-1`, until a short page.
    /// Stops after `max_pages` pages (returning what it has) so one pass
    /// cannot run unbounded.
    pub async fn deal_scan(
        &self,
        filter: &Value,
        select: &[&str],
        after_id: u64,
        max_pages: usize,
    ) -> Result<Vec<Value>, RestError> {
        let mut last = after_id;
        let mut all = Vec::new();
        for _ in 0..max_pages {
            let mut page_filter = filter.as_object().cloned().unwrap_or_default();
            page_filter.insert(">ID".into(), json!(last));
            let page = self.deal_list(&Value::Object(page_filter), select, &json!({"ID": "ASC"}), -1).await?;
            let n = page.items.len();
            if let Some(id) = page.items.last().and_then(|d| d.get("ID")).and_then(id_text).and_then(|s| s.parse().ok())
            {
                last = id;
            }
            all.extend(page.items);
            if n < PAGE_SIZE {
                break;
            }
        }
        Ok(all)
    }

    /// `crm.deal.update`; `CATEGORY_ID` cannot change here (see `item_update`).
    pub async fn deal_update(&self, id: &str, fields: &Map<String, Value>) -> Result<(), RestError> {
        let e = self.call("crm.deal.update", &json!({ "id": id, "fields": fields })).await?;
        match e.result {
            Value::Bool(true) => Ok(()),
            other => Err(RestError::new("crm.deal.update", None, "", &format!("answered {other} instead of true"))),
        }
    }

    /// `crm.deal.add`: the new deal's id.
    pub async fn deal_add(&self, fields: &Map<String, Value>) -> Result<String, RestError> {
        let e = self.call("crm.deal.add", &json!({ "fields": fields })).await?;
        id_text(&e.result)
            .ok_or_else(|| RestError::new("crm.deal.add", None, "", &format!("answered {} instead of an id", e.result)))
    }

    /// `crm.item.add` (camelCase fields): the created item.
    pub async fn item_add(&self, entity_type_id: u32, fields: &Map<String, Value>) -> Result<Value, RestError> {
        let e = self.call("crm.item.add", &json!({ "entityTypeId": entity_type_id, "fields": fields })).await?;
        Ok(e.result.get("item").cloned().unwrap_or(e.result))
    }

    /// `crm.item.update`; with `entityTypeId` 2 this is how a deal changes
    /// pipeline (`categoryId` + `stageId`).
    pub async fn item_update(
        &self,
        entity_type_id: u32,
        id: &str,
        fields: &Map<String, Value>,
    ) -> Result<Value, RestError> {
        let params = json!({ "entityTypeId": entity_type_id, "id": id, "fields": fields });
        let e = self.call("crm.item.update", &params).await?;
        Ok(e.result.get("item").cloned().unwrap_or(e.result))
    }

    /// `crm.item.get` (camelCase fields): the item.
    pub async fn item_get(&self, entity_type_id: u32, id: &str) -> Result<Map<String, Value>, RestError> {
        let e = self.call("crm.item.get", &json!({ "entityTypeId": entity_type_id, "id": id })).await?;
        match e.result.get("item").cloned().unwrap_or(e.result) {
            Value::Object(map) => Ok(map),
            other => Err(RestError::new("crm.item.get", None, "", &format!("result is not an item: {other}"))),
        }
    }

    /// `crm.item.list`, first page: the items of a smart process matching
    /// `filter` (camelCase keys), with the `select`ed fields.
    pub async fn item_list(
        &self,
        entity_type_id: u32,
        filter: &Value,
        select: &[&str],
    ) -> Result<Vec<Value>, RestError> {
        let params = json!({ "entityTypeId": entity_type_id, "filter": filter, "select": select });
        let e = self.call("crm.item.list", &params).await?;
        match e.result.get("items") {
            Some(Value::Array(items)) => Ok(items.clone()),
            _ => Err(RestError::new("crm.item.list", None, "", &format!("result is not a list: {}", e.result))),
        }
    }

    /// `crm.category.list` for deals (`entityTypeId` 2): `(id, name)` of
    /// each pipeline.
    pub async fn deal_categories(&self) -> Result<Vec<(String, String)>, RestError> {
        let e = self.call("crm.category.list", &json!({ "entityTypeId": 2 })).await?;
        let items = e.result.get("categories").and_then(Value::as_array).cloned().unwrap_or_default();
        Ok(items
            .iter()
            .filter_map(|c| {
                let id = c.get("id").and_then(id_text)?;
                Some((id, c.get("name").and_then(Value::as_str).unwrap_or_default().to_owned()))
            })
            .collect())
    }

    /// `crm.status.list` for one `ENTITY_ID` (`DEAL_STAGE`, `DEAL_STAGE_<n>`).
    pub async fn status_list(&self, entity_id: &str) -> Result<Vec<Value>, RestError> {
        let params = json!({ "filter": { "ENTITY_ID": entity_id }, "order": { "SORT": "ASC" } });
        let e = self.call("crm.status.list", &params).await?;
        match e.result {
            Value::Array(items) => Ok(items),
            other => Err(RestError::new("crm.status.list", None, "", &format!("result is not a list: {other}"))),
        }
    }

    /// `tasks.task.add`: the new task's id.
    pub async fn task_add(&self, fields: &Map<String, Value>) -> Result<String, RestError> {
        let e = self.call("tasks.task.add", &json!({ "fields": fields })).await?;
        e.result
            .get("task")
            .and_then(|t| t.get("id"))
            .and_then(id_text)
            .ok_or_else(|| RestError::new("tasks.task.add", None, "", "answer names no task id"))
    }

    /// `im.notify.system.add`: the notification's id (Bitrix24 may answer
    /// `false` when it created none, which is an error here).
    pub async fn notify_system(&self, user_id: &str, message: &str) -> Result<String, RestError> {
        let e = self.call("im.notify.system.add", &json!({ "USER_ID": user_id, "MESSAGE": message })).await?;
        id_text(&e.result)
            .ok_or_else(|| RestError::new("im.notify.system.add", None, "", &format!("answered {}", e.result)))
    }

    /// `crm.timeline.comment.add` (always the lowercase `fields` key).
    pub async fn timeline_comment_add(
        &self,
        entity_type: &str,
        entity_id: &str,
        comment: &str,
    ) -> Result<String, RestError> {
        let params = json!({ "fields": { "ENTITY_TYPE": entity_type, "ENTITY_ID": entity_id, "COMMENT": comment } });
        let e = self.call("crm.timeline.comment.add", &params).await?;
        id_text(&e.result)
            .ok_or_else(|| RestError::new("crm.timeline.comment.add", None, "", &format!("answered {}", e.result)))
    }

    /// `batch`: up to 50 commands in one request (one unit of the rate
    /// limit). The call itself fails only when the batch as a whole does;
    /// per-command failures are in [`BatchOutcome::errors`], and only those
    /// may be retried: the others already took effect.
    pub async fn batch(&self, commands: &[BatchCommand], halt: bool) -> Result<BatchOutcome, RestError> {
        if commands.is_empty() {
            return Ok(BatchOutcome::default());
        }
        if commands.len() > MAX_BATCH {
            return Err(RestError::new(
                "batch",
                None,
                "ERROR_BATCH_LENGTH_EXCEEDED",
                &format!("{} commands, at most {MAX_BATCH}", commands.len()),
            ));
        }
        let cmd: Vec<(String, String)> = commands
            .iter()
            .map(|c| (c.key.clone(), format!("{}?{}", c.method, crate::brackets::to_query(&c.params))))
            .collect();
        let params = BatchParams { halt: u8::from(halt), cmd: OrderedCmd(&cmd) };
        let e = self.call("batch", &params).await?;
        let mut outcome = BatchOutcome::default();
        for (key, value) in map_or_list(e.result.get("result")) {
            outcome.results.insert(key, value);
        }
        let method_of =
            |key: &str| commands.iter().find(|c| c.key == key).map(|c| c.method.clone()).unwrap_or_default();
        for (key, value) in map_or_list(e.result.get("result_error")) {
            let code = value.get("error").and_then(Value::as_str).unwrap_or_default();
            let description = value.get("error_description").and_then(Value::as_str).unwrap_or_default();
            outcome.errors.insert(key.clone(), RestError::new(&method_of(&key), None, code, description));
        }
        for (key, value) in map_or_list(e.result.get("result_total")) {
            if let Some(n) = number(Some(&value)) {
                outcome.totals.insert(key, n);
            }
        }
        for (key, value) in map_or_list(e.result.get("result_next")) {
            if let Some(n) = number(Some(&value)) {
                outcome.nexts.insert(key, n);
            }
        }
        Ok(outcome)
    }
}

/// `batch` params. Commands run in the order of `cmd`'s keys, so they are
/// written in the caller's order (a `serde_json::Map` would sort them).
#[derive(serde::Serialize)]
struct BatchParams<'a> {
    halt: u8,
    cmd: OrderedCmd<'a>,
}

struct OrderedCmd<'a>(&'a [(String, String)]);

impl serde::Serialize for OrderedCmd<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, command) in self.0 {
            map.serialize_entry(key, command)?;
        }
        map.end()
    }
}
