//! REST errors and their failure classes.
//!
//! Bitrix24 answers errors as `{"error": CODE, "error_description": TEXT}`.
//! The code decides, case-insensitively, before the HTTP status: both
//! `QUERY_LIMIT_EXCEEDED` and `OVERLOAD_LIMIT` are 503, and `crm.deal.*`
//! answers a missing deal with an *empty* code and the text "Not found".
//!
//! | answer | class |
//! | --- | --- |
//! | `QUERY_LIMIT_EXCEEDED` (503) | rate limited: a refusal before execution, safe to repeat |
//! | `OPERATION_TIME_LIMIT` (429) | rate limited until the method's `operating_reset_at` (10 min at most) |
//! | `OVERLOAD_LIMIT` (503) | retryable, never rate limited: a manual block by Bitrix24 support that must not be hammered; the deal parks once retries are used up |
//! | `expired_token`, `invalid_token`, `NO_AUTH_FOUND`, `ACCESS_DENIED`, `INVALID_CREDENTIALS`, `insufficient_scope`, `user_access_error`, `WRONG_AUTH_TYPE`, `PORTAL_DELETED`, HTTP 401/403 | auth |
//! | empty code + "Not found", `NOT_FOUND`, `ERROR_METHOD_NOT_FOUND` | permanent |
//! | empty code + "Access denied" (this record is hidden from the webhook's user) | permanent |
//! | `INTERNAL_SERVER_ERROR`, `ERROR_UNEXPECTED_ANSWER`, other 5xx, 408, no answer | retryable |
//! | HTTP 503/429 without a code | rate limited |
//! | anything else (validation, `USER_ID_EMPTY`, …) | permanent |

use std::time::Duration;

use dealbridge_core::delivery::{DeliveryFailure, FailureClass};

/// A failed REST call. `Display` never contains the webhook URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{method}: {}", self.summary())]
pub struct RestError {
    pub method: String,
    pub class: FailureClass,
    /// Bitrix24's `error` code as sent (may be empty).
    pub code: String,
    pub description: String,
    /// HTTP status, when an answer arrived.
    pub status: Option<u16>,
    pub retry_after: Option<Duration>,
}

impl RestError {
    pub fn new(method: &str, status: Option<u16>, code: &str, description: &str) -> Self {
        Self {
            method: method.to_owned(),
            class: classify(status, code, description),
            code: code.to_owned(),
            description: description.to_owned(),
            status,
            retry_after: None,
        }
    }

    /// No (usable) answer: connection refused, timeout, broken body.
    pub fn network(method: &str, message: String) -> Self {
        Self {
            method: method.to_owned(),
            class: FailureClass::Retryable,
            code: String::new(),
            description: message,
            status: None,
            retry_after: None,
        }
    }

    /// The record does not exist (deleted, or a wrong id).
    pub fn is_not_found(&self) -> bool {
        let code = self.code.to_ascii_lowercase();
        code == "not_found" || (code.is_empty() && self.description.to_ascii_lowercase().contains("not found"))
    }

    fn summary(&self) -> String {
        let status = self.status.map(|s| format!("HTTP {s} ")).unwrap_or_default();
        let description: String = self.description.chars().take(300).collect();
        match self.code.as_str() {
            "" => format!("{status}{description}"),
            code => format!("{status}{code}: {description}"),
        }
    }
}

impl From<RestError> for DeliveryFailure {
    fn from(e: RestError) -> Self {
        let hint = match e.code.to_ascii_uppercase().as_str() {
            "OVERLOAD_LIMIT" => " (REST API blocked by Bitrix24 support: contact them before retrying)",
            "EXPIRED_TOKEN" | "NO_AUTH_FOUND" | "INVALID_TOKEN" => " (check or renew the incoming webhook)",
            _ => "",
        };
        DeliveryFailure::new(e.class, format!("{e}{hint}")).retry_after(e.retry_after)
    }
}

/// The failure class of an answer: the code first, then the status.
pub fn classify(status: Option<u16>, code: &str, description: &str) -> FailureClass {
    let code = code.trim().to_ascii_lowercase();
    match code.as_str() {
        "query_limit_exceeded" | "operation_time_limit" => return FailureClass::RateLimited,
        "overload_limit" | "internal_server_error" | "error_unexpected_answer" => return FailureClass::Retryable,
        "expired_token"
        | "invalid_token"
        | "no_auth_found"
        | "access_denied"
        | "invalid_credentials"
        | "insufficient_scope"
        | "user_access_error"
        | "wrong_auth_type"
        | "portal_deleted" => {
            return FailureClass::Auth;
        }
        "not_found" | "error_method_not_found" => return FailureClass::Permanent,
        "" => {
            let text = description.to_ascii_lowercase();
            if text.contains("not found") || text.contains("access denied") {
                return FailureClass::Permanent;
            }
        }
        _ => {}
    }
    match status {
        None => FailureClass::Retryable,
        Some(401 | 403) => FailureClass::Auth,
        Some(429 | 503) => FailureClass::RateLimited,
        Some(408 | 500..=599) => FailureClass::Retryable,
        Some(_) => FailureClass::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FailureClass::*;

    #[test]
    fn every_documented_code_has_its_class() {
        let cases: &[(u16, &str, &str, FailureClass)] = &[
            (503, "QUERY_LIMIT_EXCEEDED", "Too many requests", RateLimited),
            (429, "OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit", RateLimited),
            (503, "OVERLOAD_LIMIT", "REST API is blocked due to overload", Retryable),
            (401, "expired_token", "The access token provided has expired", Auth),
            (401, "invalid_token", "", Auth),
            (401, "NO_AUTH_FOUND", "Wrong authorization data", Auth),
            (403, "ACCESS_DENIED", "REST API is available only on commercial plans", Auth),
            (400, "ACCESS_DENIED", "", Auth),
            (403, "INVALID_CREDENTIALS", "Invalid request credentials", Auth),
            (403, "insufficient_scope", "", Auth),
            (403, "user_access_error", "", Auth),
            (403, "WRONG_AUTH_TYPE", "", Auth),
            (500, "PORTAL_DELETED", "Portal was deleted", Auth),
            (400, "", "Not found", Permanent),
            (400, "NOT_FOUND", "Элемент не найден", Permanent),
            (404, "ERROR_METHOD_NOT_FOUND", "Method not found!", Permanent),
            (400, "", "Access denied", Permanent),
            (400, "", "ID is not defined or invalid", Permanent),
            (400, "USER_ID_EMPTY", "User ID can't be empty", Permanent),
            (400, "ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded", Permanent),
            (400, "Invalid parameters.", "Переданы некорректные параметры.", Permanent),
            (500, "INTERNAL_SERVER_ERROR", "Internal server error", Retryable),
            (500, "ERROR_UNEXPECTED_ANSWER", "", Retryable),
            (502, "", "", Retryable),
            (503, "", "", RateLimited),
            (429, "", "", RateLimited),
            (401, "", "", Auth),
            (403, "", "", Auth),
            (422, "", "", Permanent),
        ];
        for (status, code, description, class) in cases {
            assert_eq!(classify(Some(*status), code, description), *class, "{status} {code} {description}");
        }
        assert_eq!(classify(None, "", "connection refused"), Retryable);
        assert_eq!(classify(Some(200), "query_limit_exceeded", ""), RateLimited);
    }

    #[test]
    fn not_found_is_recognised_by_code_or_text() {
        assert!(RestError::new("crm.deal.get", Some(400), "", "Not found").is_not_found());
        assert!(RestError::new("crm.item.get", Some(400), "NOT_FOUND", "Элемент не найден").is_not_found());
        assert!(!RestError::new("crm.deal.get", Some(400), "", "Access denied").is_not_found());
    }

    #[test]
    fn failures_carry_the_code_and_a_hint() {
        let f: DeliveryFailure = RestError::new("crm.deal.update", Some(503), "OVERLOAD_LIMIT", "blocked").into();
        assert_eq!(f.class, Retryable);
        assert!(f.message.contains("OVERLOAD_LIMIT") && f.message.contains("support"), "{}", f.message);
    }
}
