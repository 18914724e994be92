//! A 1C test double (`dealbridge emulate onec`): an in-memory infobase
//! published the way 1C publishes one, so admins can rehearse mappings and
//! tests can run over real HTTP without 1C.
//!
//! - The standard OData interface at `/<base>/odata/standard.odata/`:
//!   `GET <set>` (`$filter`, `$top`, `$skip`, `$orderby`, `$select`) with
//!   the `odata.metadata` + `value` envelope, `GET|PATCH <set>(guid'…')`
//!   (`If-Match` against `DataVersion`, tabular sections replaced whole),
//!   `POST <set>` (new `Ref_Key`, `Number`, `DataVersion`), `POST
//!   <set>(guid'…')/Post`, HTTP Basic as the infobase user, and errors as
//!   `odata.error` (a tabular-section row created on its own: code 13).
//! - The integration HTTP service at `/<base>/hs/<http_service>/`:
//!   `notifications` takes the hub's messages for users.
//! - Notifications to the hub: after every change of an object of a known
//!   kind, the object (references to catalog objects expanded, e.g.
//!   `Контрагент_Key` → `Контрагент`) is POSTed to the handler URL with the
//!   configured credentials, in order — what the 1C side's subscription
//!   does; `drop_share` loses that share of them (exactly, every
//!   1/share-th), to rehearse the catch-up.
//! - Test endpoints under `/_emulator/`: `GET|DELETE calls` (the call log),
//!   `GET notifications` (sent to the hub, with its answers), `GET
//!   messages` (what the hub told users), `POST faults` (make the next
//!   calls fail with a given status and `odata.error`).

mod infobase;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

pub use infobase::{Filter, Infobase, Refusal};
pub use reqwest::Url;

use crate::kinds::{EntitySets, is_guid};
use crate::notification::Notification;

/// How the notifications to the hub authenticate.
#[derive(Debug, Clone)]
pub enum NotifyAuth {
    Basic { user: String, password: String },
    Bearer(String),
}

/// How an emulated infobase behaves.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// The publication's name: `/<base>/odata/…`, `/<base>/hs/…`.
    pub base: String,
    /// The infobase user OData and the HTTP service accept.
    pub user: String,
    pub password: String,
    /// Where notifications go (`POST /hooks/<instance>` of the hub); none:
    /// they are only recorded.
    pub handler: Option<Url>,
    pub notify_auth: NotifyAuth,
    pub http_service: String,
    pub sets: EntitySets,
    /// Share of notifications lost instead of sent, 0.0 to 1.0.
    pub drop_share: f64,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            base: "trade".into(),
            user: "dealbridge".into(),
            password: "emulator-password".into(),
            handler: None,
            notify_auth: NotifyAuth::Bearer("emulator-notify-token".into()),
            http_service: "dealbridge/v1".into(),
            sets: EntitySets::default(),
            drop_share: 0.0,
        }
    }
}

/// One call as the infobase saw it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CallRecord {
    pub method: String,
    /// The decoded resource path after `standard.odata/` or `hs/`.
    pub resource: String,
    pub query: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One notification sent (or meant) to the hub.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NotificationRecord {
    pub seq: u64,
    pub kind: String,
    pub ref_key: String,
    pub data_version: String,
    /// Lost on purpose (`drop_share`).
    #[serde(default)]
    pub dropped: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Make the next `times` calls matching `method` (and `resource` prefix) fail.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Fault {
    pub method: String,
    #[serde(default)]
    pub resource: String,
    pub status: u16,
    #[serde(default = "minus_one")]
    pub code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub retry_after: Option<u64>,
    #[serde(default = "one")]
    pub times: u32,
}

fn minus_one() -> String {
    "-1".into()
}
const fn one() -> u32 {
    1
}

struct Shared {
    config: EmulatorConfig,
    infobase: Mutex<Infobase>,
    calls: Mutex<Vec<CallRecord>>,
    notifications: Mutex<Vec<NotificationRecord>>,
    messages: Mutex<Vec<Value>>,
    faults: Mutex<Vec<Fault>>,
    outbox: mpsc::UnboundedSender<(u64, String)>,
}

/// A running emulator (tests): its address and the way to stop it.
pub struct RunningEmulator {
    pub addr: SocketAddr,
    pub base: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningEmulator {
    /// The publication URL to configure the connector with (`base_url`).
    pub fn base_url(&self) -> String {
        format!("http://{}/{}", self.addr, self.base)
    }

    /// Where the test endpoints are.
    pub fn control_url(&self, path: &str) -> String {
        format!("http://{}/_emulator/{path}", self.addr)
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Starts an emulator on `listener` in the background.
pub fn spawn(config: EmulatorConfig, listener: tokio::net::TcpListener) -> std::io::Result<RunningEmulator> {
    let addr = listener.local_addr()?;
    let base = config.base.clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let app = router(config);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
    });
    Ok(RunningEmulator { addr, base, shutdown: Some(tx), task })
}

/// The emulator's routes, with its notification sender running in the
/// background (it needs a Tokio runtime).
pub fn router(config: EmulatorConfig) -> Router {
    let (outbox, rx) = mpsc::unbounded_channel();
    let base = config.base.trim_matches('/').to_owned();
    let shared = Arc::new(Shared {
        config,
        infobase: Mutex::new(Infobase::default()),
        calls: Mutex::new(Vec::new()),
        notifications: Mutex::new(Vec::new()),
        messages: Mutex::new(Vec::new()),
        faults: Mutex::new(Vec::new()),
        outbox,
    });
    tokio::spawn(send_notifications(shared.clone(), rx));
    Router::new()
        .route(&format!("/{base}/odata/standard.odata/{{*resource}}"), any(odata))
        .route(&format!("/{base}/hs/{{*resource}}"), post(http_service))
        .route("/_emulator/calls", get(calls).delete(clear_calls))
        .route("/_emulator/notifications", get(notifications))
        .route("/_emulator/messages", get(messages))
        .route("/_emulator/faults", post(add_fault))
        .with_state(shared)
}

fn odata_error(refusal: &Refusal) -> Response {
    let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_REQUEST);
    (status, axum::Json(refusal.body())).into_response()
}

/// What a resource path names.
struct Resource {
    set: String,
    key: Option<String>,
    action: Option<String>,
}

fn parse_resource(path: &str) -> Result<Resource, Refusal> {
    let bad = || Refusal::new(400, "-1", format!("Неверный адрес ресурса: {path}"));
    let (head, action) = match path.split_once(")/") {
        Some((head, action)) => (format!("{head})"), Some(action.to_owned())),
        None => (path.to_owned(), None),
    };
    let (set, key) = match head.split_once('(') {
        Some((set, rest)) => {
            let inner = rest.strip_suffix(')').ok_or_else(bad)?;
            let guid = inner.strip_prefix("guid'").and_then(|g| g.strip_suffix('\'')).ok_or_else(bad)?;
            if !is_guid(guid) {
                return Err(bad());
            }
            (set.to_owned(), Some(guid.to_owned()))
        }
        None => (head, None),
    };
    if !crate::odata::is_entity_set_name(&set) {
        return Err(Refusal::new(404, "-1", format!("Не найден объект метаданных {set}")));
    }
    Ok(Resource { set, key, action })
}

fn query_params(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Shared {
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let expected =
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", self.config.user, self.config.password));
        headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == format!("Basic {expected}"))
    }

    fn take_fault(&self, method: &str, resource: &str) -> Option<Fault> {
        let mut faults = self.faults.lock().expect("faults");
        let i =
            faults.iter().position(|f| f.method.eq_ignore_ascii_case(method) && resource.starts_with(&f.resource))?;
        let fault = faults[i].clone();
        faults[i].times -= 1;
        if faults[i].times == 0 {
            faults.remove(i);
        }
        Some(fault)
    }

    fn log(&self, record: CallRecord) {
        self.calls.lock().expect("calls").push(record);
    }

    /// Queues the notification of a changed object of a known kind.
    fn notify(&self, set: &str, object: &Map<String, Value>) {
        let Some(kind) = self.config.sets.kind_of(set) else { return };
        let mut expanded = object.clone();
        {
            let infobase = self.infobase.lock().expect("infobase");
            for (key, value) in object {
                let (Some(name), Some(id)) = (key.strip_suffix("_Key"), value.as_str()) else { continue };
                if let Some(target) = infobase.catalog_object(id) {
                    let mut target = target.clone();
                    target.remove("DataVersion");
                    expanded.insert(name.to_owned(), Value::Object(target));
                }
            }
        }
        let notification = Notification::new(uuid::Uuid::new_v4().to_string(), kind, expanded);
        let mut records = self.notifications.lock().expect("notifications");
        let seq = records.len() as u64;
        let share = self.config.drop_share.clamp(0.0, 1.0);
        let dropped = ((seq + 1) as f64 * share).floor() > (seq as f64 * share).floor();
        records.push(NotificationRecord {
            seq,
            kind: kind.as_str().to_owned(),
            ref_key: notification.ref_key().unwrap_or_default().to_owned(),
            data_version: notification.data_version().unwrap_or_default().to_owned(),
            dropped,
            status: None,
            error: None,
        });
        if self.config.handler.is_some() && !dropped {
            let _ = self.outbox.send((seq, notification.to_json().to_string()));
        }
    }
}

async fn odata(
    State(shared): State<Arc<Shared>>,
    method: Method,
    Path(resource): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query = query.unwrap_or_default();
    let body_json: Option<Value> = serde_json::from_slice(&body).ok();
    let (response, status, error, changed) = if !shared.authorized(&headers) {
        let mut r =
            (StatusCode::UNAUTHORIZED, "Unauthorized: 1C:Enterprise user authentication failed").into_response();
        r.headers_mut().insert("www-authenticate", "Basic realm=\"1C:Enterprise\"".parse().expect("header"));
        (r, 401, Some("unauthorized".to_owned()), None)
    } else if let Some(fault) = shared.take_fault(method.as_str(), &resource) {
        let refusal = Refusal::new(fault.status, &fault.code, fault.message.clone());
        let mut r = odata_error(&refusal);
        if let Some(secs) = fault.retry_after {
            r.headers_mut().insert("retry-after", secs.into());
        }
        (r, fault.status, Some(format!("fault {}", fault.code)), None)
    } else {
        match handle(&shared, &method, &resource, &query, &headers, &body) {
            Ok((status, value, changed)) => {
                let r = match value {
                    Some(v) => (status, axum::Json(v)).into_response(),
                    None => status.into_response(),
                };
                (r, status.as_u16(), None, changed)
            }
            Err(refusal) => (odata_error(&refusal), refusal.status, Some(refusal.message.clone()), None),
        }
    };
    shared.log(CallRecord {
        method: method.to_string(),
        resource,
        query: percent_decode(&query),
        body: body_json,
        status,
        error,
    });
    if let Some((set, object)) = changed {
        shared.notify(&set, &object);
    }
    response
}

type Handled = (StatusCode, Option<Value>, Option<(String, Map<String, Value>)>);

fn handle(
    shared: &Shared,
    method: &Method,
    resource: &str,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Handled, Refusal> {
    let r = parse_resource(resource)?;
    // 1C writes the absolute URL of the publication, as the client reached it.
    let host = headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    let root = format!("http://{host}/{}/odata/standard.odata/$metadata#", shared.config.base);
    let params = query_params(query);
    let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let element = |set: &str, mut object: Map<String, Value>| {
        object.insert("odata.metadata".into(), json!(format!("{root}{set}/@Element")));
        Value::Object(object)
    };
    let json_body = || -> Result<Map<String, Value>, Refusal> {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(o)) => Ok(o),
            Ok(_) => Err(Refusal::new(400, "-1", "Тело запроса должно быть объектом JSON")),
            Err(e) => Err(Refusal::new(400, "-1", format!("Ошибка разбора JSON: {e}"))),
        }
    };
    let mut infobase = shared.infobase.lock().expect("infobase");
    match (method.as_str(), &r.key, r.action.as_deref()) {
        ("GET", None, None) => {
            let filter = param("$filter").map(Filter::parse).transpose()?.unwrap_or_default();
            let mut rows: Vec<Map<String, Value>> =
                infobase.all(&r.set).iter().filter(|o| filter.matches(o)).cloned().collect();
            if let Some(order) = param("$orderby") {
                let keys: Vec<String> =
                    order.split(',').map(|k| k.split_whitespace().next().unwrap_or("").to_owned()).collect();
                rows.sort_by(|a, b| {
                    keys.iter()
                        .map(|k| a.get(k).map(Value::to_string).cmp(&b.get(k).map(Value::to_string)))
                        .find(|o| o.is_ne())
                        .unwrap_or(std::cmp::Ordering::Equal)
                });
            }
            let skip = param("$skip").and_then(|s| s.parse().ok()).unwrap_or(0usize);
            let top = param("$top").and_then(|s| s.parse().ok()).unwrap_or(usize::MAX);
            let mut page: Vec<Value> = rows.into_iter().skip(skip).take(top).map(Value::Object).collect();
            if let Some(select) = param("$select") {
                let keep: Vec<&str> = select.split(',').map(str::trim).collect();
                for row in &mut page {
                    if let Value::Object(o) = row {
                        o.retain(|k, _| keep.contains(&k.as_str()));
                    }
                }
            }
            Ok((StatusCode::OK, Some(json!({ "odata.metadata": format!("{root}{}", r.set), "value": page })), None))
        }
        ("GET", Some(key), None) => {
            let object = infobase
                .get(&r.set, key)
                .cloned()
                .ok_or_else(|| Refusal::new(404, "-1", format!("Объект {}(guid'{key}') не найден", r.set)))?;
            Ok((StatusCode::OK, Some(element(&r.set, object)), None))
        }
        ("POST", None, None) => {
            if is_tabular_section(&r.set, &shared.config.sets, &infobase) {
                return Err(Refusal::new(400, "13", "Cоздание строк табличной части напрямую не поддерживается"));
            }
            let created = infobase.create(&r.set, json_body()?)?;
            Ok((StatusCode::CREATED, Some(element(&r.set, created.clone())), Some((r.set, created))))
        }
        ("PATCH", Some(key), None) => {
            let if_match = headers.get(axum::http::header::IF_MATCH).and_then(|v| v.to_str().ok());
            let updated = infobase.update(&r.set, key, json_body()?, if_match)?;
            Ok((StatusCode::OK, Some(element(&r.set, updated.clone())), Some((r.set, updated))))
        }
        ("POST", Some(key), Some("Post")) => {
            let posted = infobase.post(&r.set, key)?;
            Ok((StatusCode::OK, None, Some((r.set, posted))))
        }
        _ => Err(Refusal::new(405, "-1", format!("Метод {method} не поддерживается для {resource}"))),
    }
}

/// `Document_ЗаказКлиента_Товары`: a set whose owner (the name without
/// its last `_…`) is a set of the infobase.
fn is_tabular_section(set: &str, sets: &EntitySets, infobase: &Infobase) -> bool {
    set.rsplit_once('_').is_some_and(|(owner, _)| {
        crate::odata::is_entity_set_name(owner) && (sets.kind_of(owner).is_some() || !infobase.all(owner).is_empty())
    })
}

async fn http_service(
    State(shared): State<Arc<Shared>>,
    Path(resource): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body_json: Option<Value> = serde_json::from_slice(&body).ok();
    let service = shared.config.http_service.trim_matches('/');
    let (status, error) = if !shared.authorized(&headers) {
        (StatusCode::UNAUTHORIZED, Some("unauthorized".to_owned()))
    } else if resource.trim_matches('/') != format!("{service}/notifications") {
        (StatusCode::NOT_FOUND, Some("no such HTTP-service template".to_owned()))
    } else {
        match &body_json {
            Some(v)
                if v.get("to").and_then(Value::as_str).is_some() && v.get("text").and_then(Value::as_str).is_some() =>
            {
                shared.messages.lock().expect("messages").push(v.clone());
                (StatusCode::OK, None)
            }
            _ => (StatusCode::BAD_REQUEST, Some("`to` and `text` are required".to_owned())),
        }
    };
    shared.log(CallRecord {
        method: "POST".into(),
        resource: format!("hs/{resource}"),
        query: String::new(),
        body: body_json,
        status: status.as_u16(),
        error: error.clone(),
    });
    match error {
        Some(e) => (status, e).into_response(),
        None => (status, axum::Json(json!({"result": "ok"}))).into_response(),
    }
}

/// Sends queued notifications one after another, in order, retrying a
/// failed one a few times as a 1C background job would.
async fn send_notifications(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<(u64, String)>) {
    let Some(handler) = shared.config.handler.clone() else { return };
    let Ok(client) = reqwest::Client::builder().timeout(Duration::from_secs(10)).build() else { return };
    while let Some((seq, body)) = rx.recv().await {
        let mut outcome = Err(String::new());
        for attempt in 0..5u64 {
            let request = client.post(handler.clone()).header("content-type", "application/json; charset=utf-8");
            let request = match &shared.config.notify_auth {
                NotifyAuth::Basic { user, password } => request.basic_auth(user, Some(password)),
                NotifyAuth::Bearer(token) => request.bearer_auth(token),
            };
            outcome = request
                .body(body.clone())
                .send()
                .await
                .map(|r| r.status().as_u16())
                .map_err(|e| e.without_url().to_string());
            if matches!(outcome, Ok(s) if s < 500) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
        }
        let mut records = shared.notifications.lock().expect("notifications");
        let Some(record) = records.get_mut(seq as usize) else { continue };
        match outcome {
            Ok(s) => record.status = Some(s),
            Err(e) => record.error = Some(e),
        }
    }
}

async fn calls(State(shared): State<Arc<Shared>>) -> axum::Json<Vec<CallRecord>> {
    axum::Json(shared.calls.lock().expect("calls").clone())
}

async fn clear_calls(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.calls.lock().expect("calls").clear();
    StatusCode::NO_CONTENT
}

async fn notifications(State(shared): State<Arc<Shared>>) -> axum::Json<Vec<NotificationRecord>> {
    axum::Json(shared.notifications.lock().expect("notifications").clone())
}

async fn messages(State(shared): State<Arc<Shared>>) -> axum::Json<Vec<Value>> {
    axum::Json(shared.messages.lock().expect("messages").clone())
}

async fn add_fault(State(shared): State<Arc<Shared>>, axum::Json(fault): axum::Json<Fault>) -> StatusCode {
    shared.faults.lock().expect("faults").push(fault);
    StatusCode::NO_CONTENT
}
