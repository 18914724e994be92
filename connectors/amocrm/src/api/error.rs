//! API v4 errors and their failure classes.
//!
//! amoCRM answers errors as `application/problem+json`:
//! `{"title", "type", "status", "detail"}`, and a 400 on a write adds
//! `validation-errors: [{"request_id", "errors": [{"code", "path", "detail"}]}]`.
//! The HTTP status decides:
//!
//! | answer | class |
//! | --- | --- |
//! | 401 (token wrong, expired or revoked) | auth |
//! | 402 (the account's subscription has run out), 403 (no rights, or the account or IP blocked for abuse) | auth: every command to the account fails until someone acts |
//! | 404, 400 (validation: the message lists each error's path and detail), other 4xx | permanent |
//! | 429 (over 7 requests per second) | rate limited, for `Retry-After` when sent |
//! | 408, 5xx, no answer | retryable |

use std::time::Duration;

use dealbridge_core::delivery::{DeliveryFailure, FailureClass};
use serde_json::Value;

/// A failed API call. `Display` never contains the access token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{operation}: {}", self.summary())]
pub struct ApiError {
    /// `PATCH /api/v4/leads/5`.
    pub operation: String,
    pub class: FailureClass,
    pub status: Option<u16>,
    /// `title` and `detail` of the problem, or what went wrong.
    pub title: String,
    pub detail: String,
    /// `path: detail` of each validation error.
    pub validation: Vec<String>,
    pub retry_after: Option<Duration>,
}

impl ApiError {
    /// An answer with an error status and its (problem) body.
    pub fn answered(operation: &str, status: u16, body: &[u8], retry_after: Option<Duration>) -> Self {
        let problem: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let text = |key: &str| problem.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
        let mut validation = Vec::new();
        for request in problem.get("validation-errors").and_then(Value::as_array).into_iter().flatten() {
            for error in request.get("errors").and_then(Value::as_array).into_iter().flatten() {
                let part = |key: &str| error.get(key).and_then(Value::as_str).unwrap_or_default();
                validation.push(format!("{}: {} ({})", part("path"), part("detail"), part("code")));
            }
        }
        let detail = match text("detail") {
            d if d.is_empty() && problem.is_null() => String::from_utf8_lossy(body).chars().take(200).collect(),
            d => d,
        };
        Self {
            operation: operation.to_owned(),
            class: classify(status),
            status: Some(status),
            title: text("title"),
            detail,
            validation,
            retry_after,
        }
    }

    /// No (usable) answer: connection refused, timeout, broken body.
    pub fn network(operation: &str, message: String) -> Self {
        Self {
            operation: operation.to_owned(),
            class: FailureClass::Retryable,
            status: None,
            title: String::new(),
            detail: message,
            validation: Vec::new(),
            retry_after: None,
        }
    }

    /// The lead (or other record) does not exist.
    pub fn is_not_found(&self) -> bool {
        self.status == Some(404)
    }

    fn summary(&self) -> String {
        let mut out = self.status.map(|s| format!("HTTP {s}")).unwrap_or_default();
        for part in [&self.title, &self.detail] {
            if !part.is_empty() {
                out.push_str(if out.is_empty() { "" } else { " " });
                out.push_str(part);
            }
        }
        if !self.validation.is_empty() {
            out.push_str(&format!(": {}", self.validation.join("; ")));
        }
        out.chars().take(600).collect()
    }
}

impl From<ApiError> for DeliveryFailure {
    fn from(e: ApiError) -> Self {
        let hint = match e.status {
            Some(401) => " (check or renew the integration's access token)",
            Some(402) => " (the amoCRM account's subscription has run out)",
            Some(403) => " (the token's user lacks rights, or amoCRM blocked the account or IP for too many requests)",
            _ => "",
        };
        DeliveryFailure::new(e.class, format!("{e}{hint}")).retry_after(e.retry_after)
    }
}

/// The failure class of an error status.
pub fn classify(status: u16) -> FailureClass {
    match status {
        401..=403 => FailureClass::Auth,
        429 => FailureClass::RateLimited,
        408 | 500..=599 => FailureClass::Retryable,
        _ => FailureClass::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FailureClass::*;

    #[test]
    fn statuses_have_their_classes() {
        let cases = [
            (401, Auth),
            (402, Auth),
            (403, Auth),
            (404, Permanent),
            (400, Permanent),
            (422, Permanent),
            (429, RateLimited),
            (408, Retryable),
            (500, Retryable),
            (502, Retryable),
            (503, Retryable),
            (504, Retryable),
        ];
        for (status, class) in cases {
            assert_eq!(classify(status), class, "{status}");
        }
    }

    #[test]
    fn validation_errors_are_named_in_the_message() {
        let body = br#"{"validation-errors":[{"request_id":"0","errors":[{"code":"NotSupportedChoice","path":"custom_fields_values.0.field_id","detail":"The value you selected is not a valid choice."}]}],"title":"Bad Request","type":"https://httpstatus.es/400","status":400,"detail":"Request validation failed"}"#;
        let e = ApiError::answered("PATCH /api/v4/leads/5", 400, body, None);
        assert_eq!(e.class, Permanent);
        let message = DeliveryFailure::from(e).message;
        assert!(
            message.contains("custom_fields_values.0.field_id: The value you selected is not a valid choice."),
            "{message}"
        );
        assert!(
            message.starts_with("PATCH /api/v4/leads/5: HTTP 400 Bad Request Request validation failed"),
            "{message}"
        );
    }

    #[test]
    fn a_rate_limit_keeps_its_retry_after_and_auth_gets_a_hint() {
        let body = br#"{"title":"Too Many Requests","type":"https://httpstatus.es/429","status":429,"detail":"Too many requests"}"#;
        let f: DeliveryFailure =
            ApiError::answered("GET /api/v4/leads/5", 429, body, Some(Duration::from_secs(2))).into();
        assert_eq!((f.class, f.retry_after), (RateLimited, Some(Duration::from_secs(2))));
        let f: DeliveryFailure = ApiError::answered("GET /api/v4/leads/5", 401, b"<html>", None).into();
        assert_eq!(f.class, Auth);
        assert!(f.message.contains("<html>") && f.message.contains("access token"), "{}", f.message);
    }
}
