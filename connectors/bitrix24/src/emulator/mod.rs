//! A Bitrix24 portal emulator (`dealbridge emulate bitrix24`): an in-memory
//! portal behind an incoming-webhook URL, so admins can rehearse mappings
//! and tests can run over real HTTP without a portal.
//!
//! - REST at `/rest/<user>/<code>/<method>[.json]` (JSON, form or query
//!   params) with the real envelope (`result`, `next`, `total`, `time`),
//!   paging (50 a page, `start=-1`), error bodies and statuses, and the
//!   leaky-bucket limit (default drain 2/s, threshold 50 →
//!   503 `QUERY_LIMIT_EXCEEDED`; a `batch` counts once). Methods:
//!   `crm.deal.get/list/add/update/delete`, `crm.item.add/update/get/list`,
//!   `crm.status.list`, `crm.category.list`, `tasks.task.add`,
//!   `im.notify.system.add`, `crm.timeline.comment.add`, `batch`.
//! - Outgoing-webhook events, form-encoded with the application token, to
//!   the handler URL for every change, REST-made ones included, in order;
//!   `drop_share` drops that share of them (exactly, every 1/share-th).
//! - Test endpoints under `/_emulator/`: `GET|DELETE calls` (the call log:
//!   method, params, status, error code), `GET events` (sent and dropped
//!   events), `GET timeline` (the timeline comments written, with their
//!   `ENTITY_TYPE` and `ENTITY_ID`), `POST faults` (make the next calls of
//!   a method fail with a given status and error code).

mod portal;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use portal::Portal;
pub use portal::{ApiError, Fault};
/// The handler URL type of [`EmulatorConfig`].
pub use reqwest::Url;

/// How an emulated portal behaves.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// The incoming webhook's user id and code: `/rest/<user>/<code>/`.
    pub webhook_user: u64,
    pub webhook_code: String,
    /// More incoming webhooks, `(user id, code)`: a change made through one
    /// shows that user as `MODIFY_BY_ID` (e.g. a manager moving a deal by
    /// hand, while the hub's webhook belongs to the integration user).
    pub user_webhooks: Vec<(u64, String)>,
    /// Where outgoing-webhook events are POSTed; none: events are only logged.
    pub handler: Option<reqwest::Url>,
    pub application_token: String,
    /// Share of events dropped instead of sent, 0.0 to 1.0.
    pub drop_share: f64,
    /// `auth[domain]` and `auth[member_id]` of the events.
    pub domain: String,
    pub member_id: String,
    /// Leaky bucket: drained per second, and the level that blocks.
    pub per_second: f64,
    pub burst: f64,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            webhook_user: 1,
            webhook_code: "emulator".into(),
            user_webhooks: Vec::new(),
            handler: None,
            application_token: "emulator-application-token".into(),
            drop_share: 0.0,
            domain: "emulator.bitrix24.test".into(),
            member_id: "emulator0000000000000000000000000".into(),
            per_second: 2.0,
            burst: 50.0,
        }
    }
}

/// One REST call as the portal saw it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CallRecord {
    pub method: String,
    pub params: Value,
    pub status: u16,
    /// The error code answered, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Run as a command of a `batch` call.
    #[serde(default)]
    pub in_batch: bool,
    /// The user whose incoming webhook made the call (0: refused before
    /// the webhook was known).
    #[serde(default)]
    pub user: u64,
}

/// One outgoing-webhook event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventRecord {
    pub seq: u64,
    pub event: String,
    pub fields: Value,
    pub dropped: bool,
    /// The handler's HTTP status once sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

struct Bucket {
    level: f64,
    at: Instant,
}

struct Shared {
    config: EmulatorConfig,
    portal: Mutex<Portal>,
    bucket: Mutex<Bucket>,
    events: Mutex<Vec<EventRecord>>,
    outbox: mpsc::UnboundedSender<(u64, String)>,
}

/// A running emulator (tests): its address and the way to stop it.
pub struct RunningEmulator {
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningEmulator {
    /// The incoming-webhook URL to configure the connector with.
    pub fn webhook_url(&self, config: &EmulatorConfig) -> String {
        format!("http://{}/rest/{}/{}/", self.addr, config.webhook_user, config.webhook_code)
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
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
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let app = router(config);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
    });
    Ok(RunningEmulator { addr, shutdown: Some(tx), task })
}

/// The emulator's routes, with its event sender running in the background
/// (it needs a Tokio runtime).
pub fn router(config: EmulatorConfig) -> Router {
    let (outbox, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        portal: Mutex::new(Portal::seeded(config.webhook_user)),
        bucket: Mutex::new(Bucket { level: 0.0, at: Instant::now() }),
        events: Mutex::new(Vec::new()),
        config,
        outbox,
    });
    tokio::spawn(send_events(shared.clone(), rx));
    Router::new()
        .route("/rest/{user}/{code}/{method}", any(rest))
        .route("/_emulator/calls", get(calls).delete(clear_calls))
        .route("/_emulator/events", get(events))
        .route("/_emulator/timeline", get(timeline))
        .route("/_emulator/faults", post(add_fault))
        .with_state(shared)
}

fn envelope_time() -> Value {
    let now = chrono::Utc::now();
    let secs = now.timestamp_micros() as f64 / 1e6;
    json!({
        "start": secs, "finish": secs, "duration": 0.0, "processing": 0.0,
        "date_start": now.to_rfc3339(), "date_finish": now.to_rfc3339(),
        "operating_reset_at": now.timestamp() + 600, "operating": 0,
    })
}

fn error_response(e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response =
        (status, axum::Json(json!({ "error": e.code, "error_description": e.description }))).into_response();
    if let Some(secs) = e.retry_after {
        response.headers_mut().insert("retry-after", secs.into());
    }
    response
}

/// Request params: a JSON body, a form body and the query string, merged.
fn read_params(headers: &HeaderMap, query: Option<&str>, body: &[u8]) -> Result<Value, ApiError> {
    let mut params = query.map(crate::brackets::parse_query).unwrap_or_else(|| json!({}));
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let from_body = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else if content_type.starts_with("application/json") || body.first() == Some(&b'{') {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::new(400, "INVALID_REQUEST", &format!("Request body is not JSON: {e}")))?;
        Some(v)
    } else {
        let text = std::str::from_utf8(body).map_err(|_| ApiError::new(400, "INVALID_REQUEST", "Body is not UTF-8"))?;
        Some(crate::brackets::parse_query(text))
    };
    if let (Some(Value::Object(extra)), Some(map)) = (from_body, params.as_object_mut()) {
        map.extend(extra);
    }
    Ok(params)
}

/// The order of a `batch`'s `cmd` keys as sent (JSON maps here sort them).
fn batch_order(query: Option<&str>, body: &[u8]) -> Vec<String> {
    struct Keys(Vec<String>);
    impl<'de> Deserialize<'de> for Keys {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visit;
            impl<'de> serde::de::Visitor<'de> for Visit {
                type Value = Keys;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a map")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                    let mut keys = Vec::new();
                    while let Some((k, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                        keys.push(k);
                    }
                    Ok(Keys(keys))
                }
            }
            d.deserialize_map(Visit)
        }
    }
    #[derive(Deserialize)]
    struct Batch {
        #[serde(alias = "CMD")]
        cmd: Keys,
    }
    if let Ok(batch) = serde_json::from_slice::<Batch>(body) {
        return batch.cmd.0;
    }
    let mut keys = Vec::new();
    for raw in [query.unwrap_or_default().as_bytes(), body] {
        for (key, _) in form_urlencoded::parse(raw) {
            if let Some(parts) = crate::brackets::split_key(&key)
                && parts.len() == 2
                && parts[0].eq_ignore_ascii_case("cmd")
                && !keys.iter().any(|k| k == parts[1])
            {
                keys.push(parts[1].to_owned());
            }
        }
    }
    keys
}

async fn rest(
    State(shared): State<Arc<Shared>>,
    Path((user, code, method)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let method = method.strip_suffix(".json").unwrap_or(&method).to_owned();
    let params = read_params(&headers, query.as_deref(), &body);
    let order = if method == "batch" { batch_order(query.as_deref(), &body) } else { Vec::new() };
    let outcome = {
        let mut portal = shared.portal.lock().expect("portal");
        let log_params = params.clone().unwrap_or(Value::Null);
        let caller = shared.caller(&user, &code);
        portal.acting_user = caller.unwrap_or(0);
        let result = if caller.is_none() {
            Err(ApiError::new(401, "NO_AUTH_FOUND", "Wrong authorization data"))
        } else if !shared.admit() {
            Err(ApiError::new(503, "QUERY_LIMIT_EXCEEDED", "Too many requests"))
        } else if let Some(fault) = portal.take_fault(&method) {
            Err(fault)
        } else {
            portal.batch_order = order;
            params.and_then(|p| portal.call(&method, &p))
        };
        portal.log(&method, log_params, &result, false);
        for (event, fields) in portal.take_events() {
            shared.emit(event, fields);
        }
        result
    };
    match outcome {
        Ok(reply) => {
            let mut body = json!({ "result": reply.result, "time": envelope_time() });
            if let Some(total) = reply.total {
                body["total"] = json!(total);
            }
            if let Some(next) = reply.next {
                body["next"] = json!(next);
            }
            axum::Json(body).into_response()
        }
        Err(e) => error_response(&e),
    }
}

impl Shared {
    /// The user whose incoming webhook `/rest/<user>/<code>/` is.
    fn caller(&self, user: &str, code: &str) -> Option<u64> {
        let config = &self.config;
        std::iter::once((config.webhook_user, config.webhook_code.as_str()))
            .chain(config.user_webhooks.iter().map(|(u, c)| (*u, c.as_str())))
            .find(|(u, c)| u.to_string() == user && *c == code)
            .map(|(u, _)| u)
    }

    /// The leaky bucket: every request adds 1, `per_second` drains; a
    /// request that would pass `burst` is refused (and adds nothing).
    fn admit(&self) -> bool {
        let mut bucket = self.bucket.lock().expect("bucket");
        let now = Instant::now();
        let drained = now.duration_since(bucket.at).as_secs_f64() * self.config.per_second;
        bucket.level = (bucket.level - drained).max(0.0);
        bucket.at = now;
        if bucket.level + 1.0 > self.config.burst {
            return false;
        }
        bucket.level += 1.0;
        true
    }

    /// Records an event and queues it unless it is one of the dropped share.
    fn emit(&self, event: String, fields: Vec<(String, String)>) {
        let mut events = self.events.lock().expect("events");
        let seq = events.len() as u64;
        let share = self.config.drop_share.clamp(0.0, 1.0);
        let dropped = ((seq + 1) as f64 * share).floor() > (seq as f64 * share).floor();
        let ts = chrono::Utc::now().timestamp();
        let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let body = crate::inbound::encode_event(
            &event,
            &pairs,
            ts,
            &self.config.domain,
            &self.config.member_id,
            &self.config.application_token,
        );
        let fields_json: serde_json::Map<String, Value> = fields.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        events.push(EventRecord { seq, event, fields: Value::Object(fields_json), dropped, status: None, error: None });
        if !dropped && self.config.handler.is_some() {
            let _ = self.outbox.send((seq, body));
        }
    }
}

/// Sends queued events one after another, in order.
async fn send_events(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<(u64, String)>) {
    let Some(handler) = shared.config.handler.clone() else { return };
    let client = match reqwest::Client::builder().timeout(Duration::from_secs(10)).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "Emulator cannot build its event client.");
            return;
        }
    };
    while let Some((seq, body)) = rx.recv().await {
        let outcome = client
            .post(handler.clone())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await;
        let mut events = shared.events.lock().expect("events");
        let Some(record) = events.get_mut(seq as usize) else { continue };
        match outcome {
            Ok(r) => record.status = Some(r.status().as_u16()),
            Err(e) => record.error = Some(e.without_url().to_string()),
        }
    }
}

async fn calls(State(shared): State<Arc<Shared>>) -> axum::Json<Vec<CallRecord>> {
    axum::Json(shared.portal.lock().expect("portal").calls.clone())
}

async fn clear_calls(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.portal.lock().expect("portal").calls.clear();
    StatusCode::NO_CONTENT
}

async fn events(State(shared): State<Arc<Shared>>) -> axum::Json<Vec<EventRecord>> {
    axum::Json(shared.events.lock().expect("events").clone())
}

async fn timeline(State(shared): State<Arc<Shared>>) -> axum::Json<Vec<Value>> {
    axum::Json(shared.portal.lock().expect("portal").timeline().to_vec())
}

async fn add_fault(State(shared): State<Arc<Shared>>, axum::Json(fault): axum::Json<Fault>) -> StatusCode {
    shared.portal.lock().expect("portal").faults.push(fault);
    StatusCode::NO_CONTENT
}
