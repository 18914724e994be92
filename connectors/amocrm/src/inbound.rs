//! The inbound half: amoCRM lead webhooks.
//!
//! amoCRM signs nothing and sends no header of ours, so a webhook proves
//! itself in two ways, both required:
//!
//! 1. the URL given to amoCRM carries a secret, `?token=<secret>`; it is
//!    compared in constant time ([`InboundConnector::verify_query`]). The
//!    query is never stored, and the hub's request log shows only the path;
//! 2. the body's `account[subdomain]` (and `account[id]`, when configured)
//!    must be this connector's account, so a token leaked from one account's
//!    settings cannot feed another account's leads into this instance.
//!
//! A body carries the leads themselves (not just ids): each lead entry
//! becomes one `lead` record, several per POST. The fetch step
//! ([`WebhookLeads`]) reads nothing: it turns deletions into gone records
//! and dates the leads by when amoCRM last modified them.
//!
//! Webhooks get no delivery key: amoCRM redelivers only what was not
//! answered 2xx, i.e. what was not stored, and a repeated body changes
//! nothing the second time.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dealbridge_core::connector::{
    DecodeError, FetchError, FetchedRecords, GoneRecord, InboundConnector, InboundRequest, RecordFetcher, Rejection,
    SourceRecord, Verified,
};
use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::webhook::{LeadAction, WebhookForm};

/// The query parameter of the webhook URL that carries the secret.
pub const TOKEN_PARAM: &str = "token";

/// The secret of the webhook URL. `Debug` never shows it.
#[derive(Clone)]
pub struct WebhookToken(Vec<u8>);

impl WebhookToken {
    /// `None` for a token too short to be a secret (under 16 characters).
    pub fn new(token: &str) -> Option<Self> {
        let token = token.trim();
        (token.len() >= 16).then(|| Self(token.as_bytes().to_vec()))
    }

    fn matches(&self, candidate: &str) -> bool {
        // Slices of different lengths compare false without a byte compare;
        // the token's length is no secret worth hiding.
        bool::from(self.0.as_slice().ct_eq(candidate.as_bytes()))
    }
}

impl std::fmt::Debug for WebhookToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookToken(***)")
    }
}

/// A configured `amocrm` instance's inbound half.
pub struct AmocrmInbound {
    token: WebhookToken,
    subdomain: String,
    account_id: Option<u64>,
    leads: WebhookLeads,
}

impl AmocrmInbound {
    pub fn new(token: WebhookToken, subdomain: &str, account_id: Option<u64>) -> Self {
        Self { token, subdomain: subdomain.trim().to_ascii_lowercase(), account_id, leads: WebhookLeads }
    }
}

impl InboundConnector for AmocrmInbound {
    fn kind(&self) -> &'static str {
        "amocrm"
    }

    fn verify_query(&self, query: Option<&str>) -> Result<(), Rejection> {
        let given = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .find(|(k, _)| k == TOKEN_PARAM)
            .map(|(_, v)| v.into_owned());
        match given {
            None => Err(Rejection::Unauthenticated(format!("no `{TOKEN_PARAM}` in the webhook URL's query"))),
            Some(given) if self.token.matches(&given) => Ok(()),
            Some(_) => Err(Rejection::Unauthenticated(format!("the webhook URL's `{TOKEN_PARAM}` does not match"))),
        }
    }

    fn verify(&self, request: &InboundRequest<'_>) -> Result<Verified, Rejection> {
        let form = WebhookForm::parse(request.body).map_err(Rejection::Malformed)?;
        if !form.subdomain.eq_ignore_ascii_case(&self.subdomain) {
            return Err(Rejection::Unauthenticated(format!(
                "`account[subdomain]` `{}` is not this connector's account",
                form.subdomain.chars().take(40).collect::<String>()
            )));
        }
        if let Some(expected) = self.account_id
            && form.account_id.as_deref() != Some(expected.to_string().as_str())
        {
            return Err(Rejection::Unauthenticated("`account[id]` is missing or not this connector's account".into()));
        }
        Ok(Verified { delivery_key: None })
    }

    fn decode(&self, body: &[u8], _headers: &[(String, String)]) -> Result<Vec<SourceRecord>, DecodeError> {
        let form = WebhookForm::parse(body).map_err(DecodeError)?;
        Ok(form.leads.iter().map(|lead| SourceRecord { kind: "lead".into(), data: lead.record() }).collect())
    }

    fn fetcher(&self) -> Option<&dyn RecordFetcher> {
        Some(&self.leads)
    }
}

/// The fetch step of amoCRM webhooks. The leads arrive whole, so nothing
/// is read, but what a webhook shows is the lead as it was when it was
/// modified, which can be before a write of the hub reached amoCRM: the
/// echo of the hub's first write to a lead arrives while its second write
/// is on its way, still showing the old status. So the records are dated
/// (`read_at`) by the earliest `updated_at` / `last_modified` among them
/// (whole seconds of amoCRM's clock, a second earlier for clock skew), and
/// the hub leaves out of them what its writes not settled by then change.
/// A `delete` entry becomes a gone record (the hub records the deletion).
pub struct WebhookLeads;

/// Leeway for amoCRM's clock and its whole seconds.
const CLOCK_SKEW: chrono::Duration = chrono::Duration::seconds(1);

fn modified_at(record: &SourceRecord) -> Option<DateTime<Utc>> {
    let stamp =
        ["updated_at", "last_modified"].iter().find_map(|k| record.data.get(*k)?.as_str()?.parse::<i64>().ok())?;
    DateTime::from_timestamp(stamp, 0)
}

#[async_trait]
impl RecordFetcher for WebhookLeads {
    async fn fetch(
        &self,
        records: Vec<SourceRecord>,
        received_at: DateTime<Utc>,
    ) -> Result<FetchedRecords, FetchError> {
        let mut out = FetchedRecords::default();
        let mut shown_at = received_at;
        for record in records {
            let deleted = record.kind == "lead" && record.data["action"] == LeadAction::Delete.as_str();
            match record.data.get("id").and_then(Value::as_str) {
                Some(id) if deleted => out.gone.push(GoneRecord { system: "amocrm".into(), id: id.to_owned() }),
                _ => {
                    shown_at = modified_at(&record).map_or(shown_at, |at| at.min(shown_at));
                    out.records.push(record);
                }
            }
        }
        if !out.records.is_empty() {
            out.read_at = Some(shown_at - CLOCK_SKEW);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::encode_webhook;
    use http::HeaderMap;
    use serde_json::json;

    const SECRET: &str = "Zq3v7N1xkS0pLr2mW8dT";

    fn connector(account_id: Option<u64>) -> AmocrmInbound {
        AmocrmInbound::new(WebhookToken::new(SECRET).unwrap(), "Example", account_id)
    }

    fn verify(c: &AmocrmInbound, query: Option<&str>, body: &[u8]) -> Result<Verified, Rejection> {
        c.verify_query(query)?;
        c.verify(&InboundRequest { headers: &HeaderMap::new(), body, received_at: Utc::now() })
    }

    fn body(subdomain: &str, account: u64) -> String {
        let lead = json!({"id": "5", "status_id": "7000012", "old_status_id": "7000011", "pipeline_id": "7000001"});
        encode_webhook(&[(LeadAction::Status, &lead)], subdomain, account, "https://example.amocrm.ru")
    }

    #[test]
    fn the_url_token_and_the_account_both_decide() {
        let c = connector(Some(42));
        let query = format!("token={SECRET}");
        assert_eq!(verify(&c, Some(&query), body("example", 42).as_bytes()), Ok(Verified { delivery_key: None }));
        let refused = [
            (None, body("example", 42)),
            (Some("token=wrong-token-of-twenty-chars".to_owned()), body("example", 42)),
            (Some(format!("other={SECRET}")), body("example", 42)),
            (Some(query.clone()), body("another", 42)),
            (Some(query.clone()), body("example", 43)),
        ];
        for (query, body) in refused {
            let err = verify(&c, query.as_deref(), body.as_bytes()).unwrap_err();
            assert!(matches!(err, Rejection::Unauthenticated(_)), "{query:?}: {err}");
            assert!(!err.to_string().contains(SECRET), "{err}");
        }
        // Without a configured account id, the subdomain alone decides.
        assert!(verify(&connector(None), Some(&query), body("EXAMPLE", 7).as_bytes()).is_ok());
    }

    #[test]
    fn short_tokens_are_no_secret() {
        assert!(WebhookToken::new("short").is_none());
        assert_eq!(format!("{:?}", WebhookToken::new(SECRET).unwrap()), "WebhookToken(***)");
    }

    #[test]
    fn garbage_and_truncated_bodies_are_malformed_never_a_panic() {
        let c = connector(None);
        let query = format!("token={SECRET}");
        let wire = body("example", 42);
        for cut in 0..wire.len() {
            let piece = &wire.as_bytes()[..cut];
            let _ = c.decode(piece, &[]);
            if let Ok(v) = verify(&c, Some(&query), piece) {
                // A cut that still holds a whole account and whole leads is a real, shorter webhook.
                assert_eq!(v.delivery_key, None);
                assert!(std::str::from_utf8(piece).unwrap().contains("account%5Bsubdomain%5D=example"));
            }
        }
        for garbage in [&b"\xff\xfe\x00"[..], b"{\"leads\":[]}", b"leads[status][0][id]=1", b"&&&==="] {
            assert!(matches!(verify(&c, Some(&query), garbage), Err(Rejection::Malformed(_))), "{garbage:?}");
        }
    }

    #[tokio::test]
    async fn every_lead_is_a_record_and_deletions_are_gone() {
        let c = connector(None);
        let moved = json!({"id": "5", "status_id": "142", "pipeline_id": "7000001", "price": "1500",
            "updated_at": "1796241199"});
        let deleted = json!({"id": "6"});
        let body = encode_webhook(
            &[(LeadAction::Status, &moved), (LeadAction::Delete, &deleted)],
            "example",
            42,
            "https://example.amocrm.ru",
        );
        let records = c.decode(body.as_bytes(), &[]).unwrap();
        assert_eq!(records.len(), 2);
        let received_at = Utc::now();
        let fetched = c.fetcher().unwrap().fetch(records, received_at).await.unwrap();
        assert_eq!(fetched.records.len(), 1);
        assert_eq!(fetched.records[0].data["status_id"], "142");
        assert_eq!(fetched.gone, vec![GoneRecord { system: "amocrm".into(), id: "6".into() }]);
        let modified = DateTime::from_timestamp(1796241199, 0).unwrap();
        assert_eq!(fetched.read_at, Some(modified.min(received_at) - CLOCK_SKEW), "the state as amoCRM modified it");
        let undated = c.decode(body.replace("1796241199", "").as_bytes(), &[]).unwrap();
        let fetched = c.fetcher().unwrap().fetch(undated, received_at).await.unwrap();
        assert_eq!(fetched.read_at, Some(received_at - CLOCK_SKEW), "no stamp: as received");
    }
}
