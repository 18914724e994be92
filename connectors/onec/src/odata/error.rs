//! OData errors and their failure classes.
//!
//! 1C answers errors as `{"odata.error": {"code": "-1", "message":
//! {"lang": "ru", "value": "…"}}}` (code `-1` for internal errors such as
//! a refused `Post`, `13` for a tabular-section row created on its own).
//! The HTTP status decides the class:
//!
//! | answer | class |
//! | --- | --- |
//! | 429, 503 with `Retry-After` | rate limited, for that long |
//! | 401, 403 | auth: the hub's 1C user or its rights |
//! | 400, 404, 405, 409, 422 | permanent: the request can never succeed |
//! | 412 (`If-Match` no longer matches) | retryable: read again and repeat |
//! | other 5xx, 408, timeouts, refused connections, broken answers | retryable |

use std::time::Duration;

use dealbridge_core::connector::FetchError;
use dealbridge_core::delivery::{DeliveryFailure, FailureClass};
use serde_json::Value;

/// A failed OData or HTTP-service call. `Display` never shows credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{operation}: {}", self.summary())]
pub struct ODataError {
    /// What was called, e.g. `PATCH Document_CRM_Интерес(guid'…')`.
    pub operation: String,
    pub class: FailureClass,
    pub status: Option<u16>,
    /// `odata.error.code`, when the answer had one.
    pub code: Option<String>,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl ODataError {
    /// An HTTP error answer with its body.
    pub fn from_answer(operation: &str, status: u16, retry_after: Option<Duration>, body: &[u8]) -> Self {
        let (code, message) = match parse_error_body(body) {
            Some((code, message)) => (Some(code), message),
            None => (None, plain_text(body)),
        };
        Self {
            operation: operation.to_owned(),
            class: classify(status, retry_after),
            status: Some(status),
            code,
            message,
            retry_after,
        }
    }

    /// No usable answer: timeout, refused connection.
    pub fn network(operation: &str, message: String) -> Self {
        Self {
            operation: operation.to_owned(),
            class: FailureClass::Retryable,
            status: None,
            code: None,
            message,
            retry_after: None,
        }
    }

    /// A success status whose body is not what the interface sends; the
    /// message names the place.
    pub fn malformed(operation: &str, message: String) -> Self {
        Self {
            operation: operation.to_owned(),
            class: FailureClass::Retryable,
            status: None,
            code: None,
            message: format!("malformed answer: {message}"),
            retry_after: None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status == Some(404)
    }

    fn summary(&self) -> String {
        let mut s = match self.status {
            Some(status) => format!("HTTP {status}"),
            None => "no answer".to_owned(),
        };
        if let Some(code) = &self.code {
            s.push_str(&format!(" (odata.error {code})"));
        }
        if !self.message.is_empty() {
            s.push_str(": ");
            s.push_str(&self.message);
        }
        s
    }

    pub fn to_fetch_error(&self) -> FetchError {
        match self.class {
            FailureClass::Permanent => FetchError::Permanent(self.to_string()),
            _ => FetchError::Transient(self.to_string()),
        }
    }
}

impl From<ODataError> for DeliveryFailure {
    fn from(e: ODataError) -> Self {
        DeliveryFailure::new(e.class, e.to_string()).retry_after(e.retry_after)
    }
}

fn classify(status: u16, retry_after: Option<Duration>) -> FailureClass {
    match status {
        429 => FailureClass::RateLimited,
        503 if retry_after.is_some() => FailureClass::RateLimited,
        401 | 403 => FailureClass::Auth,
        400 | 404 | 405 | 409 | 422 => FailureClass::Permanent,
        412 | 408 => FailureClass::Retryable,
        s if s >= 500 => FailureClass::Retryable,
        _ => FailureClass::Permanent,
    }
}

/// `(code, message)` of an `odata.error` body.
pub fn parse_error_body(body: &[u8]) -> Option<(String, String)> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let error = value.get("odata.error")?;
    let code = match error.get("code")? {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let message = error.get("message").and_then(|m| m.get("value").or(Some(m))).and_then(Value::as_str);
    Some((code, message.unwrap_or_default().trim().to_owned()))
}

/// The start of a non-JSON error body (1C's web server answers 401 with
/// text), on one line.
fn plain_text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut s: String = line.chars().take(200).collect();
    if s.len() < line.len() {
        s.push('…');
    }
    s
}

/// `Retry-After` in seconds (HTTP dates are not used by 1C's publications).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let secs: u64 = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs.min(3600)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERNAL: &str = r#"{"odata.error":{"code":"-1","message":{"lang":"ru","value":"Произошла внутренняя ошибка OData сервиса. Не удалось провести"}}}"#;

    #[test]
    fn odata_error_bodies_are_read() {
        let e = ODataError::from_answer("POST Document_X(guid'1')/Post", 500, None, INTERNAL.as_bytes());
        assert_eq!(e.code.as_deref(), Some("-1"));
        assert!(e.message.starts_with("Произошла внутренняя ошибка"));
        assert_eq!(e.class, FailureClass::Retryable);
        assert!(e.to_string().contains("HTTP 500 (odata.error -1)"), "{e}");
    }

    #[test]
    fn statuses_decide_the_class() {
        let class = |status, after| ODataError::from_answer("GET x", status, after, b"").class;
        assert_eq!(class(429, None), FailureClass::RateLimited);
        assert_eq!(class(503, Some(Duration::from_secs(5))), FailureClass::RateLimited);
        assert_eq!(class(503, None), FailureClass::Retryable);
        assert_eq!(class(502, None), FailureClass::Retryable);
        assert_eq!(class(401, None), FailureClass::Auth);
        assert_eq!(class(403, None), FailureClass::Auth);
        assert_eq!(class(404, None), FailureClass::Permanent);
        assert_eq!(class(400, None), FailureClass::Permanent);
        assert_eq!(class(412, None), FailureClass::Retryable);
        let failure: DeliveryFailure = ODataError::from_answer("GET x", 429, Some(Duration::from_secs(7)), b"").into();
        assert_eq!(failure.retry_after, Some(Duration::from_secs(7)));
    }

    #[test]
    fn text_answers_are_kept_short_and_on_one_line() {
        let e = ODataError::from_answer("GET x", 401, None, "Unauthorized\r\n\r\nlogin   failed".as_bytes());
        assert_eq!(e.message, "Unauthorized login failed");
        assert_eq!(e.code, None);
        assert_eq!(parse_error_body(b"{\"odata.error\": 5}"), None);
    }
}
