//! An amoCRM account emulator (`dealbridge emulate amocrm`): an in-memory
//! account behind API v4, so admins can rehearse mappings and tests can
//! run over real HTTP without an account.
//!
//! - API v4 with a bearer token: `GET|PATCH /api/v4/leads/{id}`,
//!   `POST /api/v4/leads`, `GET /api/v4/leads/pipelines`, `POST /api/v4/tasks`,
//!   `POST /api/v4/leads/{id}/notes`; HAL answers (`_links`, `_embedded`),
//!   errors as problem JSON (`title`, `type`, `status`, `detail`, and
//!   `validation-errors` on a 400), 204 for a lead it does not have, and
//!   429 above the limit (7 requests in any second by default).
//! - A lead webhook to the handler URL for every change, API-made ones
//!   included, in order: `leads[add]` for a new lead, `leads[status]` when
//!   the status or pipeline changed, `leads[update]` otherwise.
//! - Test endpoints under `/_emulator/`: `GET|DELETE requests` (the API
//!   request log: method, path, body, status, user), `GET webhooks` (sent
//!   webhooks), `POST faults` (make the next requests fail with a status).

mod account;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use account::{Account, Invalid};
/// The handler URL type of [`EmulatorConfig`].
pub use reqwest::Url;

use crate::webhook::encode_webhook;

/// How an emulated account behaves.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    pub subdomain: String,
    pub account_id: u64,
    /// Access tokens and the user each belongs to: a change made with a
    /// token shows its user as `updated_by` / `modified_user_id`.
    pub tokens: Vec<(u64, String)>,
    /// Where lead webhooks are POSTed (with the `?token=` the connector
    /// expects); none: they are only logged.
    pub handler: Option<Url>,
    /// Requests allowed in any one second.
    pub per_second: usize,
}

/// The integration user of the default token.
pub const INTEGRATION_USER: u64 = 5000001;

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            subdomain: "emulator".into(),
            account_id: 31000001,
            tokens: vec![(INTEGRATION_USER, "emulator-access-token".into())],
            handler: None,
            per_second: 7,
        }
    }
}

/// One API request as the account saw it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    pub body: Value,
    pub status: u16,
    /// The user of the token (0: no valid token).
    pub user: u64,
}

/// One webhook.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WebhookRecord {
    pub seq: u64,
    /// `add`, `update` or `status`.
    pub action: String,
    pub lead: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Makes the next `times` requests with `method` (`*`: any) fail.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Fault {
    pub method: String,
    pub status: u16,
    #[serde(default = "one")]
    pub times: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
}

const fn one() -> u32 {
    1
}

struct Shared {
    config: EmulatorConfig,
    account: Mutex<Account>,
    admitted: Mutex<VecDeque<Instant>>,
    requests: Mutex<Vec<RequestRecord>>,
    webhooks: Mutex<Vec<WebhookRecord>>,
    faults: Mutex<Vec<Fault>>,
    outbox: mpsc::UnboundedSender<(u64, String)>,
}

/// A running emulator (tests): its address and the way to stop it.
pub struct RunningEmulator {
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningEmulator {
    /// The API's base URL to configure the connector with.
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
    let app = router(config, &format!("http://{addr}"));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
    });
    Ok(RunningEmulator { addr, shutdown: Some(tx), task })
}

/// The emulator's routes for an account reached at `base_url`, with its
/// webhook sender running in the background (it needs a Tokio runtime).
pub fn router(config: EmulatorConfig, base_url: &str) -> Router {
    let (outbox, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        account: Mutex::new(Account::seeded(config.account_id, &config.subdomain, base_url)),
        admitted: Mutex::new(VecDeque::new()),
        requests: Mutex::new(Vec::new()),
        webhooks: Mutex::new(Vec::new()),
        faults: Mutex::new(Vec::new()),
        config,
        outbox,
    });
    tokio::spawn(send_webhooks(shared.clone(), rx));
    Router::new()
        .route("/api/v4/leads", post(add_leads))
        .route("/api/v4/leads/pipelines", get(pipelines))
        .route("/api/v4/leads/{id}", get(lead).patch(update_lead))
        .route("/api/v4/leads/{id}/notes", post(add_notes))
        .route("/api/v4/tasks", post(add_tasks))
        .route("/_emulator/requests", get(requests).delete(clear_requests))
        .route("/_emulator/webhooks", get(webhooks))
        .route("/_emulator/faults", post(add_fault))
        .with_state(shared)
}

/// A problem answer (`application/problem+json`).
fn problem(status: u16, title: &str, detail: &str) -> Response {
    let body = json!({ "title": title, "type": format!("https://httpstatus.es/{status}"), "status": status, "detail": detail });
    problem_body(status, body)
}

fn problem_body(status: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    (status, [(header::CONTENT_TYPE, "application/problem+json")], body.to_string()).into_response()
}

fn invalid(errors: Vec<Invalid>) -> Response {
    let errors: Vec<Value> =
        errors.into_iter().map(|(code, path, detail)| json!({"code": code, "path": path, "detail": detail})).collect();
    problem_body(
        400,
        json!({"validation-errors": [{"request_id": "0", "errors": errors}], "title": "Bad Request",
            "type": "https://httpstatus.es/400", "status": 400, "detail": "Request validation failed"}),
    )
}

fn hal(body: Value) -> Response {
    ([(header::CONTENT_TYPE, "application/hal+json")], body.to_string()).into_response()
}

impl Shared {
    /// The user of the bearer token, if it is one of the account's.
    fn user(&self, headers: &HeaderMap) -> Option<u64> {
        let given = headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")?;
        self.config.tokens.iter().find(|(_, token)| token == given).map(|(user, _)| *user)
    }

    /// At most `per_second` requests in any one second.
    fn admit(&self) -> bool {
        let mut admitted = self.admitted.lock().expect("admitted");
        let now = Instant::now();
        while admitted.front().is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1)) {
            admitted.pop_front();
        }
        if admitted.len() >= self.config.per_second {
            return false;
        }
        admitted.push_back(now);
        true
    }

    fn take_fault(&self, method: &Method) -> Option<Fault> {
        let mut faults = self.faults.lock().expect("faults");
        let i = faults.iter().position(|f| f.method == "*" || f.method.eq_ignore_ascii_case(method.as_str()))?;
        let fault = faults[i].clone();
        faults[i].times -= 1;
        if faults[i].times == 0 {
            faults.remove(i);
        }
        Some(fault)
    }

    /// Authenticates, rate-limits and logs one API request around `handle`.
    fn serve(
        &self,
        method: Method,
        path: String,
        headers: &HeaderMap,
        body: &[u8],
        handle: impl FnOnce(&Self, u64, Value) -> Response,
    ) -> Response {
        let user = self.user(headers);
        let parsed: Value = if body.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(body).unwrap_or_else(|_| json!(String::from_utf8_lossy(body)))
        };
        let response = match user {
            None => problem(401, "Unauthorized", "Authorization header is missing or the token is not valid"),
            Some(_) if !self.admit() => problem(429, "Too Many Requests", "Too many requests per second"),
            Some(user) => match self.take_fault(&method) {
                Some(fault) => {
                    let mut response = problem(fault.status, "Emulated fault", "Emulated fault");
                    if let Some(secs) = fault.retry_after_secs {
                        response.headers_mut().insert(header::RETRY_AFTER, secs.into());
                    }
                    response
                }
                None if !body.is_empty() && !parsed.is_object() && !parsed.is_array() => {
                    problem(400, "Bad Request", "Request body is not JSON")
                }
                None => handle(self, user, parsed.clone()),
            },
        };
        let record = RequestRecord {
            method: method.to_string(),
            path,
            body: parsed,
            status: response.status().as_u16(),
            user: user.unwrap_or(0),
        };
        self.requests.lock().expect("requests").push(record);
        response
    }

    /// Queues the webhook of a lead's change.
    fn changed(&self, account: &Account, id: u64, before: Option<&Map<String, Value>>) {
        let Some(lead) = account.leads.get(&id) else { return };
        let (action, entry) = account.webhook_entry(lead, before);
        let body = encode_webhook(&[(action, &entry)], &account.subdomain, account.id, &account.base_url);
        let mut webhooks = self.webhooks.lock().expect("webhooks");
        let seq = webhooks.len() as u64;
        webhooks.push(WebhookRecord { seq, action: action.as_str().into(), lead: entry, status: None, error: None });
        if self.config.handler.is_some() {
            let _ = self.outbox.send((seq, body));
        }
    }
}

fn numeric_id(id: &str) -> Option<u64> {
    id.parse().ok().filter(|id| *id > 0)
}

async fn lead(State(shared): State<Arc<Shared>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let path = format!("/api/v4/leads/{id}");
    shared.serve(Method::GET, path, &headers, &[], |shared, _, _| {
        let account = shared.account.lock().expect("account");
        match numeric_id(&id).and_then(|id| account.leads.get(&id)) {
            Some(lead) => hal(Value::Object(lead.clone())),
            None => StatusCode::NO_CONTENT.into_response(),
        }
    })
}

async fn update_lead(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/api/v4/leads/{id}");
    shared.serve(Method::PATCH, path, &headers, &body, |shared, user, fields| {
        let Some(fields) = fields.as_object() else { return problem(400, "Bad Request", "Expected a JSON object") };
        let mut account = shared.account.lock().expect("account");
        let Some(id) = numeric_id(&id) else { return problem(404, "Not Found", "Lead not found") };
        match account.update_lead(id, fields, user) {
            None => problem(404, "Not Found", "Lead not found"),
            Some(Err(errors)) => invalid(errors),
            Some(Ok(before)) => {
                let lead = &account.leads[&id];
                let answer = json!({"id": id, "updated_at": lead["updated_at"], "_links": account.link(&format!("/api/v4/leads/{id}"))});
                if lead != &before {
                    shared.changed(&account, id, Some(&before));
                }
                hal(answer)
            }
        }
    })
}

async fn add_leads(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    shared.serve(Method::POST, "/api/v4/leads".into(), &headers, &body, |shared, user, leads| {
        let Some(leads) = leads.as_array().filter(|l| !l.is_empty() && l.len() <= 250) else {
            return problem(400, "Bad Request", "Expected an array of 1 to 250 leads");
        };
        let mut account = shared.account.lock().expect("account");
        let mut created = Vec::new();
        for (i, lead) in leads.iter().enumerate() {
            let fields = lead.as_object().cloned().unwrap_or_default();
            match account.add_lead(&fields, user, i) {
                Ok(id) => created.push((id, lead.get("request_id").cloned().unwrap_or(json!(i.to_string())))),
                Err(errors) => return invalid(errors),
            }
        }
        for (id, _) in &created {
            shared.changed(&account, *id, None);
        }
        let items: Vec<Value> = created
            .iter()
            .map(|(id, request)| json!({"id": id, "request_id": request, "_links": account.link(&format!("/api/v4/leads/{id}"))}))
            .collect();
        hal(json!({"_links": account.link("/api/v4/leads"), "_embedded": {"leads": items}}))
    })
}

async fn add_tasks(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    shared.serve(Method::POST, "/api/v4/tasks".into(), &headers, &body, |shared, user, tasks| {
        let Some(tasks) = tasks.as_array().filter(|t| !t.is_empty()) else {
            return problem(400, "Bad Request", "Expected an array of tasks");
        };
        let mut account = shared.account.lock().expect("account");
        let mut items = Vec::new();
        for (i, task) in tasks.iter().enumerate() {
            match account.add_task(&task.as_object().cloned().unwrap_or_default(), user, i) {
                Ok(id) => items.push(json!({"id": id, "request_id": i.to_string(), "_links": account.link(&format!("/api/v4/tasks/{id}"))})),
                Err(errors) => return invalid(errors),
            }
        }
        hal(json!({"_links": account.link("/api/v4/tasks"), "_embedded": {"tasks": items}}))
    })
}

async fn add_notes(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/api/v4/leads/{id}/notes");
    shared.serve(Method::POST, path.clone(), &headers, &body, |shared, user, notes| {
        let Some(notes) = notes.as_array().filter(|n| !n.is_empty()) else {
            return problem(400, "Bad Request", "Expected an array of notes");
        };
        let Some(lead) = numeric_id(&id) else { return problem(404, "Not Found", "Lead not found") };
        let mut account = shared.account.lock().expect("account");
        let mut items = Vec::new();
        for (i, note) in notes.iter().enumerate() {
            match account.add_note(lead, note, user, i) {
                None => return problem(404, "Not Found", "Lead not found"),
                Some(Err(errors)) => return invalid(errors),
                Some(Ok(note)) => items.push(json!({"id": note, "entity_id": lead, "request_id": i.to_string(),
                    "_links": account.link(&format!("{path}/{note}"))})),
            }
        }
        hal(json!({"_links": account.link(&path), "_embedded": {"notes": items}}))
    })
}

async fn pipelines(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    shared.serve(Method::GET, "/api/v4/leads/pipelines".into(), &headers, &[], |shared, _, _| {
        let account = shared.account.lock().expect("account");
        let items: Vec<Value> = account
            .pipelines
            .iter()
            .enumerate()
            .map(|(sort, p)| {
                let statuses: Vec<Value> = p
                    .statuses
                    .iter()
                    .enumerate()
                    .map(|(i, (id, name))| {
                        json!({"id": id, "name": name, "sort": (i + 1) * 10, "pipeline_id": p.id,
                        "is_editable": *id != 142 && *id != 143, "type": 0, "account_id": account.id})
                    })
                    .collect();
                json!({"id": p.id, "name": p.name, "sort": (sort + 1) * 1000, "is_main": sort == 0,
                    "is_unsorted_on": false, "is_archive": false, "account_id": account.id,
                    "_links": account.link(&format!("/api/v4/leads/pipelines/{}", p.id)),
                    "_embedded": {"statuses": statuses}})
            })
            .collect();
        hal(json!({"_total_items": items.len(), "_links": account.link("/api/v4/leads/pipelines"),
            "_embedded": {"pipelines": items}}))
    })
}

/// Sends queued webhooks one after another, in order.
async fn send_webhooks(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<(u64, String)>) {
    let Some(handler) = shared.config.handler.clone() else { return };
    let client = match reqwest::Client::builder().timeout(Duration::from_secs(10)).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "Emulator cannot build its webhook client.");
            return;
        }
    };
    while let Some((seq, body)) = rx.recv().await {
        let outcome = client
            .post(handler.clone())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await;
        let mut webhooks = shared.webhooks.lock().expect("webhooks");
        let Some(record) = webhooks.get_mut(seq as usize) else { continue };
        match outcome {
            Ok(r) => record.status = Some(r.status().as_u16()),
            // `without_url`: the handler URL carries the webhook secret.
            Err(e) => record.error = Some(e.without_url().to_string()),
        }
    }
}

async fn requests(State(shared): State<Arc<Shared>>) -> axum::Json<Vec<RequestRecord>> {
    axum::Json(shared.requests.lock().expect("requests").clone())
}

async fn clear_requests(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.requests.lock().expect("requests").clear();
    StatusCode::NO_CONTENT
}

async fn webhooks(State(shared): State<Arc<Shared>>) -> axum::Json<Vec<WebhookRecord>> {
    axum::Json(shared.webhooks.lock().expect("webhooks").clone())
}

async fn add_fault(State(shared): State<Arc<Shared>>, axum::Json(fault): axum::Json<Fault>) -> StatusCode {
    if fault.times == 0 {
        return StatusCode::BAD_REQUEST;
    }
    shared.faults.lock().expect("faults").push(fault);
    StatusCode::NO_CONTENT
}
