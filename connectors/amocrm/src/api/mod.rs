//! A client for an account's REST API v4: `Authorization: Bearer <token>`,
//! JSON in, HAL (`application/hal+json`: `_embedded`, `_links`) out, errors
//! as `application/problem+json` ([`ApiError`]).
//!
//! The client neither retries nor throttles: the dispatcher owns the
//! account's budget (7 requests per second) and the retry policy.

mod error;

use std::time::Duration;

use chrono::Utc;
use serde_json::{Map, Value};

pub use error::{ApiError, classify};

/// The integration's access token. `Debug` never shows it.
#[derive(Clone)]
pub struct AccessToken(String);

impl AccessToken {
    /// `None` for an empty (or blank) token.
    pub fn new(token: &str) -> Option<Self> {
        let token = token.trim();
        (!token.is_empty()).then(|| Self(token.to_owned()))
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessToken(***)")
    }
}

pub struct ApiClient {
    http: reqwest::Client,
    base: reqwest::Url,
    token: AccessToken,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient").field("base", &self.base.as_str()).finish_non_exhaustive()
    }
}

/// `Retry-After` in seconds or as an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    (at.with_timezone(&Utc) - Utc::now()).to_std().ok()
}

/// A lenient id: amoCRM sends ids as numbers, webhooks as strings.
pub fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The ids of `_embedded.<entity>[]` of a creating call's answer.
fn created_ids(operation: &str, answer: &Value, entity: &str) -> Result<Vec<String>, ApiError> {
    let items = answer.pointer(&format!("/_embedded/{entity}")).and_then(Value::as_array);
    let ids: Option<Vec<String>> =
        items.and_then(|items| items.iter().map(|i| i.get("id").and_then(id_text)).collect());
    ids.filter(|ids| !ids.is_empty()).ok_or_else(|| {
        let mut e = ApiError::network(operation, format!("answer has no `_embedded.{entity}[].id`"));
        e.class = dealbridge_core::delivery::FailureClass::Retryable;
        e
    })
}

impl ApiClient {
    pub fn new(
        base: reqwest::Url,
        token: AccessToken,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout.max(Duration::from_secs(1)))
            .connect_timeout(connect_timeout.max(Duration::from_secs(1)))
            .user_agent(concat!("dealbridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self { http, base, token })
    }

    /// The account's host (and port): what its rate limit is counted by.
    pub fn account(&self) -> String {
        match (self.base.host_str(), self.base.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            _ => self.base.to_string(),
        }
    }

    /// One call; `Ok(None)` for an empty success (204: nothing found).
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Result<Option<Value>, ApiError> {
        let operation = format!("{method} {path}");
        let mut url = self.base.clone();
        url.set_path(path);
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(&self.token.0)
            .header(reqwest::header::ACCEPT, "application/hal+json, application/json");
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| ApiError::network(&operation, format!("no answer: {e}")))?;
        let status = response.status().as_u16();
        let after = retry_after(response.headers());
        let bytes =
            response.bytes().await.map_err(|e| ApiError::network(&operation, format!("answer broken off: {e}")))?;
        if !(200..300).contains(&status) {
            return Err(ApiError::answered(&operation, status, &bytes, after));
        }
        if status == 204 || bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(&bytes).map(Some).map_err(|_| {
            let snippet: String = String::from_utf8_lossy(&bytes).chars().take(200).collect();
            ApiError::network(&operation, format!("answer is not JSON: {snippet}"))
        })
    }

    /// `GET /api/v4/leads/{id}`; `Ok(None)` when the account has no such
    /// lead (amoCRM answers 204, or 404).
    pub async fn lead(&self, id: &str) -> Result<Option<Map<String, Value>>, ApiError> {
        match self.call(reqwest::Method::GET, &format!("/api/v4/leads/{id}"), None).await {
            Ok(Some(Value::Object(lead))) => Ok(Some(lead)),
            Ok(_) => Ok(None),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `PATCH /api/v4/leads/{id}` with the fields to change.
    pub async fn update_lead(&self, id: &str, fields: &Map<String, Value>) -> Result<(), ApiError> {
        self.call(reqwest::Method::PATCH, &format!("/api/v4/leads/{id}"), Some(&Value::Object(fields.clone())))
            .await
            .map(drop)
    }

    /// `POST /api/v4/leads` with one lead; its new id.
    pub async fn add_lead(&self, lead: &Map<String, Value>) -> Result<String, ApiError> {
        let body = Value::Array(vec![Value::Object(lead.clone())]);
        let answer = self.call(reqwest::Method::POST, "/api/v4/leads", Some(&body)).await?.unwrap_or_default();
        Ok(created_ids("POST /api/v4/leads", &answer, "leads")?.remove(0))
    }

    /// `POST /api/v4/tasks` with one task; its new id.
    pub async fn add_task(&self, task: &Map<String, Value>) -> Result<String, ApiError> {
        let body = Value::Array(vec![Value::Object(task.clone())]);
        let answer = self.call(reqwest::Method::POST, "/api/v4/tasks", Some(&body)).await?.unwrap_or_default();
        Ok(created_ids("POST /api/v4/tasks", &answer, "tasks")?.remove(0))
    }

    /// `POST /api/v4/leads/{id}/notes` with one common (text) note.
    pub async fn add_lead_note(&self, lead: &str, text: &str) -> Result<String, ApiError> {
        let body = serde_json::json!([{ "note_type": "common", "params": { "text": text } }]);
        let path = format!("/api/v4/leads/{lead}/notes");
        let answer = self.call(reqwest::Method::POST, &path, Some(&body)).await?.unwrap_or_default();
        Ok(created_ids(&format!("POST {path}"), &answer, "notes")?.remove(0))
    }
}
