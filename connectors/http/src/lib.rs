//! Generic JSON webhook connector, signed per the Standard Webhooks scheme.
//!
//! A sender signs `{webhook-id}.{webhook-timestamp}.{body}` with HMAC-SHA256
//! under a shared secret and sends `webhook-signature: v1,<base64>` (several
//! space-separated signatures are allowed, so secrets can be rotated). The
//! timestamp must be within a tolerance of now, which stops replays of old
//! captured requests; the `webhook-id` is the delivery key, which makes
//! retries of one message idempotent.

mod config;
mod outbound;
mod signature;

pub use config::HttpConnectorConfig;
pub use outbound::{HttpOutboundConfig, HttpTarget};
pub use signature::{SigningSecret, SigningSecretError, sign};

use chrono::Utc;
use dealbridge_core::connector::{DecodeError, InboundConnector, InboundRequest, Rejection, SourceRecord, Verified};

/// A configured `http` connector instance.
pub struct HttpConnector {
    secrets: Vec<SigningSecret>,
    tolerance_secs: i64,
}

impl HttpConnector {
    /// `secrets` holds the current secret and, during a rotation, the
    /// previous one; a signature by any of them is accepted.
    pub fn new(secrets: Vec<SigningSecret>, tolerance_secs: u32) -> Self {
        Self { secrets, tolerance_secs: i64::from(tolerance_secs) }
    }
}

fn header<'a>(request: &'a InboundRequest<'_>, name: &str) -> Result<&'a str, Rejection> {
    let value =
        request.headers.get(name).ok_or_else(|| Rejection::Unauthenticated(format!("missing `{name}` header")))?;
    value.to_str().map_err(|_| Rejection::Unauthenticated(format!("`{name}` header is not ASCII")))
}

impl InboundConnector for HttpConnector {
    fn kind(&self) -> &'static str {
        "http"
    }

    fn verify(&self, request: &InboundRequest<'_>) -> Result<Verified, Rejection> {
        let id = header(request, "webhook-id")?;
        let timestamp = header(request, "webhook-timestamp")?;
        let signatures = header(request, "webhook-signature")?;
        if id.is_empty() || id.len() > 256 {
            return Err(Rejection::Unauthenticated("`webhook-id` must be 1 to 256 characters".into()));
        }
        let sent_at: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| Rejection::Unauthenticated("`webhook-timestamp` is not unix seconds".into()))?;
        let skew = (request.received_at.timestamp() - sent_at).abs();
        if skew > self.tolerance_secs {
            return Err(Rejection::Unauthenticated(format!(
                "`webhook-timestamp` is {skew} s away from now (tolerance {} s)",
                self.tolerance_secs
            )));
        }
        let valid = self.secrets.iter().any(|s| s.verify(id, timestamp.trim(), request.body, signatures));
        if !valid {
            return Err(Rejection::Unauthenticated("no valid `v1` signature in `webhook-signature`".into()));
        }
        Ok(Verified { delivery_key: Some(id.to_owned()) })
    }

    fn kept_headers(&self) -> &'static [&'static str] {
        &["webhook-id", "webhook-timestamp"]
    }

    fn decode(&self, body: &[u8], _headers: &[(String, String)]) -> Result<Vec<SourceRecord>, DecodeError> {
        decode_payload(body)
    }
}

/// Standard Webhooks payloads are `{"type": …, "timestamp": …, "data": {…}}`:
/// `type` is the record kind mapping bindings match on, `data` the record.
/// A body that is a JSON array carries several such payloads.
fn decode_payload(body: &[u8]) -> Result<Vec<SourceRecord>, DecodeError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| DecodeError(format!("body is not JSON: {e}")))?;
    let payloads = match value {
        serde_json::Value::Array(items) => items,
        other => vec![other],
    };
    payloads
        .into_iter()
        .enumerate()
        .map(|(i, mut p)| {
            let kind = p
                .get("type")
                .and_then(|t| t.as_str())
                .filter(|t| !t.is_empty())
                .ok_or_else(|| DecodeError(format!("payload {i}: no string `type`")))?
                .to_owned();
            let data = p.get_mut("data").map(serde_json::Value::take).unwrap_or(serde_json::Value::Null);
            if !data.is_object() {
                return Err(DecodeError(format!("payload {i} (`{kind}`): `data` must be an object")));
            }
            Ok(SourceRecord { kind, data })
        })
        .collect()
}

/// Current unix time, for callers that sign (tests, the load tool).
pub fn now_unix() -> i64 {
    Utc::now().timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use http::{HeaderMap, HeaderValue};

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn signed(id: &str, ts: i64, body: &[u8], secret: &SigningSecret) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("webhook-id", HeaderValue::from_str(id).unwrap());
        h.insert("webhook-timestamp", HeaderValue::from_str(&ts.to_string()).unwrap());
        h.insert("webhook-signature", HeaderValue::from_str(&sign(secret, id, ts, body)).unwrap());
        h
    }

    fn verify(c: &HttpConnector, headers: &HeaderMap, body: &[u8], now: DateTime<Utc>) -> Result<Verified, Rejection> {
        c.verify(&InboundRequest { headers, body, received_at: now })
    }

    #[test]
    fn a_correctly_signed_message_is_accepted_with_its_id_as_delivery_key() {
        let secret = SigningSecret::parse(SECRET).unwrap();
        let c = HttpConnector::new(vec![secret.clone()], 300);
        let now = Utc::now();
        let h = signed("msg_1", now.timestamp(), b"{\"a\":1}", &secret);
        assert_eq!(verify(&c, &h, b"{\"a\":1}", now).unwrap().delivery_key.as_deref(), Some("msg_1"));
    }

    #[test]
    fn a_tampered_body_or_wrong_secret_is_refused() {
        let secret = SigningSecret::parse(SECRET).unwrap();
        let other = SigningSecret::parse("whsec_c2Vjb25kLXNlY3JldC1mb3ItdGVzdHM=").unwrap();
        let c = HttpConnector::new(vec![secret.clone()], 300);
        let now = Utc::now();
        let h = signed("msg_1", now.timestamp(), b"{\"a\":1}", &secret);
        assert!(verify(&c, &h, b"{\"a\":2}", now).is_err());
        let h = signed("msg_1", now.timestamp(), b"{\"a\":1}", &other);
        assert!(verify(&c, &h, b"{\"a\":1}", now).is_err());
    }

    #[test]
    fn stale_or_future_timestamps_are_refused() {
        let secret = SigningSecret::parse(SECRET).unwrap();
        let c = HttpConnector::new(vec![secret.clone()], 300);
        let now = Utc::now();
        for ts in [now.timestamp() - 301, now.timestamp() + 301] {
            let h = signed("msg_1", ts, b"{}", &secret);
            assert!(matches!(verify(&c, &h, b"{}", now), Err(Rejection::Unauthenticated(_))));
        }
    }

    #[test]
    fn any_of_several_signatures_and_secrets_may_match_during_rotation() {
        let old = SigningSecret::parse(SECRET).unwrap();
        let new = SigningSecret::parse("whsec_c2Vjb25kLXNlY3JldC1mb3ItdGVzdHM=").unwrap();
        let c = HttpConnector::new(vec![new.clone(), old.clone()], 300);
        let now = Utc::now();
        let mut h = signed("m", now.timestamp(), b"x", &old);
        let both = format!("v1,AAAA {}", h["webhook-signature"].to_str().unwrap());
        h.insert("webhook-signature", HeaderValue::from_str(&both).unwrap());
        assert!(verify(&c, &h, b"x", now).is_ok());
    }

    #[test]
    fn payloads_decode_into_typed_records() {
        let body =
            br#"{"type":"deal.updated","timestamp":"2026-11-23T10:00:00Z","data":{"id":"42","stage":"payment"}}"#;
        let records = decode_payload(body).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].kind, "deal.updated");
        assert_eq!(records[0].data["stage"], "payment");
        let many = br#"[{"type":"a","data":{}},{"type":"b","data":{"x":1}}]"#;
        assert_eq!(decode_payload(many).unwrap().iter().map(|r| r.kind.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn undecodable_payloads_say_why() {
        assert!(decode_payload(b"not json").unwrap_err().0.contains("not JSON"));
        assert!(decode_payload(br#"{"data":{}}"#).unwrap_err().0.contains("no string `type`"));
        assert!(decode_payload(br#"{"type":"x","data":[1]}"#).unwrap_err().0.contains("must be an object"));
    }

    #[test]
    fn missing_headers_are_named() {
        let c = HttpConnector::new(vec![SigningSecret::parse(SECRET).unwrap()], 300);
        let err = verify(&c, &HeaderMap::new(), b"{}", Utc::now()).unwrap_err();
        assert_eq!(err, Rejection::Unauthenticated("missing `webhook-id` header".into()));
    }
}
