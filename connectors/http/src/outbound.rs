//! The outbound half of the `http` connector: each command is POSTed as JSON
//! to one configured URL, signed per the Standard Webhooks scheme with the
//! command's idempotency key as `webhook-id` (and as `Idempotency-Key`), so
//! the receiver can verify it and recognise a repeat.
//!
//! The receiver's answer decides the outcome:
//!
//! | answer | outcome |
//! | --- | --- |
//! | 2xx | applied; a JSON body `{"id": "…"}` names a created record |
//! | 409 | already applied (the receiver has seen this idempotency key) |
//! | 429 | rate limited, honouring `Retry-After` |
//! | 401, 403 | auth: the target is paused |
//! | 408, 425, 5xx, no answer | retryable (`Retry-After` honoured) |
//! | other 4xx | permanent |

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use dealbridge_core::delivery::{AttemptContext, DeliveryFailure, FailureClass, OutboundConnector, Performed};
use dealbridge_core::flow::Command;
use dealbridge_core::model::ExternalRef;
use http::StatusCode;
use serde::Deserialize;

use crate::signature::{SigningSecret, sign};

/// `[connectors.<name>.outbound]` of an `http` connector.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HttpOutboundConfig {
    /// Where commands are POSTed.
    pub url: String,
    /// Environment variable holding the secret outbound requests are
    /// signed with (`whsec_…`).
    pub secret_env: String,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

const fn default_timeout() -> u64 {
    10
}

/// What the receiver may answer to a created record.
#[derive(Deserialize)]
struct CreatedAnswer {
    id: Option<serde_json::Value>,
}

pub struct HttpTarget {
    client: reqwest::Client,
    url: reqwest::Url,
    secret: SigningSecret,
}

impl HttpTarget {
    pub fn new(config: &HttpOutboundConfig, secret: SigningSecret) -> Result<Self, String> {
        let url = reqwest::Url::parse(&config.url).map_err(|e| format!("outbound url `{}`: {e}", config.url))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("outbound url `{}` must be http or https", config.url));
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_secs.max(1)))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self { client, url, secret })
    }
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    (at.with_timezone(&Utc) - Utc::now()).to_std().ok()
}

fn classify(status: StatusCode) -> FailureClass {
    match status.as_u16() {
        429 => FailureClass::RateLimited,
        401 | 403 => FailureClass::Auth,
        408 | 425 | 500..=599 => FailureClass::Retryable,
        _ => FailureClass::Permanent,
    }
}

#[async_trait]
impl OutboundConnector for HttpTarget {
    fn kind(&self) -> &'static str {
        "http"
    }

    fn rate_key(&self, command: &Command) -> String {
        command.connector.clone()
    }

    async fn perform(&self, command: &Command, context: AttemptContext) -> Result<Performed, DeliveryFailure> {
        let body = serde_json::to_vec(command)
            .map_err(|e| DeliveryFailure::new(FailureClass::Permanent, format!("cannot encode the command: {e}")))?;
        let timestamp = Utc::now().timestamp();
        let id = &command.idempotency_key;
        let response = self
            .client
            .post(self.url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", sign(&self.secret, id, timestamp, &body))
            .header("idempotency-key", id)
            .header("dealbridge-attempt", context.attempt.to_string())
            .body(body)
            .send()
            .await
            .map_err(|e| DeliveryFailure::new(FailureClass::Retryable, format!("no answer from the target: {e}")))?;
        let status = response.status();
        let created_ref = |id: String| ExternalRef::new(command.system.clone(), command.connector.clone(), id);
        if status == StatusCode::CONFLICT {
            return Ok(Performed::AlreadyApplied { created: None });
        }
        if status.is_success() {
            let text = response.bytes().await.unwrap_or_default();
            let created = serde_json::from_slice::<CreatedAnswer>(&text)
                .ok()
                .and_then(|a| a.id)
                .map(|id| match id {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                })
                .map(created_ref);
            return Ok(Performed::Applied { created });
        }
        let after = retry_after(response.headers());
        let text = response.text().await.unwrap_or_default();
        let snippet: String = text.chars().take(300).collect();
        Err(DeliveryFailure::new(classify(status), format!("HTTP {status}: {snippet}")).retry_after(after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_map_onto_failure_classes() {
        assert_eq!(classify(StatusCode::TOO_MANY_REQUESTS), FailureClass::RateLimited);
        assert_eq!(classify(StatusCode::UNAUTHORIZED), FailureClass::Auth);
        assert_eq!(classify(StatusCode::FORBIDDEN), FailureClass::Auth);
        assert_eq!(classify(StatusCode::SERVICE_UNAVAILABLE), FailureClass::Retryable);
        assert_eq!(classify(StatusCode::REQUEST_TIMEOUT), FailureClass::Retryable);
        assert_eq!(classify(StatusCode::UNPROCESSABLE_ENTITY), FailureClass::Permanent);
        assert_eq!(classify(StatusCode::NOT_FOUND), FailureClass::Permanent);
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        let later = (Utc::now() + chrono::Duration::seconds(120)).to_rfc2822();
        headers.insert(reqwest::header::RETRY_AFTER, later.parse().unwrap());
        let got = retry_after(&headers).unwrap();
        assert!(got > Duration::from_secs(100) && got <= Duration::from_secs(120), "{got:?}");
        headers.insert(reqwest::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }
}
