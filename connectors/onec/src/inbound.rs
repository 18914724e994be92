//! The inbound half: notifications from the 1C HTTP service, and the
//! catch-up's synthetic events for versions no notification brought.
//!
//! A notification is checked for its credentials first (a wrong one is
//! answered 401 before the body is looked at, and nothing is stored), then
//! for its shape (answered 400 naming the field).
//!
//! A notification carries the object as it was when 1C wrote it, and 1C
//! sends them from a queue: one can arrive after the hub has written the
//! object again, showing a state older than the hub's own write (the
//! stage before the hub moved it) — mapping that would undo the move and
//! fire the flows again. So objects of the `fetch_kinds` (Interests by
//! default) are read again through OData just before they are mapped, and
//! handed on as read at that moment: the hub then leaves out what its
//! writes not yet settled by then change, like for Bitrix24's fetched
//! deals. References the notification expanded (`Контрагент`) are kept
//! where the reference is still the same. Other kinds are mapped as sent.
//!
//! Decoded records are the object itself, of kind `interest`,
//! `customer_order`, `invoice`, `bank_receipt`, `shipment`, `nomenclature`
//! or `stock`; a deletion becomes a record the source no longer has.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dealbridge_core::connector::{
    DecodeError, FetchError, FetchedRecords, GoneRecord, InboundConnector, InboundRequest, Reconciler, RecordFetcher,
    Rejection, SourceRecord, Verified,
};
use serde_json::{Map, Value};

use crate::catch_up::CatchUp;
use crate::config::InboundCredentials;
use crate::kinds::{EntitySets, RecordKind};
use crate::notification::Notification;
use crate::odata::ODataClient;

/// Suffix of the record kind of a deletion (only between decode and fetch).
const DELETED: &str = ".deleted";

/// A configured `onec` instance's inbound half.
pub struct OnecInbound {
    credentials: InboundCredentials,
    catch_up: Option<CatchUp>,
    fetcher: FreshRead,
}

impl OnecInbound {
    /// Maps every notification as sent.
    pub fn new(credentials: InboundCredentials, catch_up: Option<CatchUp>) -> Self {
        Self { credentials, catch_up, fetcher: FreshRead { reader: None, kinds: Vec::new() } }
    }

    /// Reads objects of `kinds` again through `client` before they are mapped.
    pub fn reading(mut self, client: ODataClient, sets: EntitySets, kinds: Vec<RecordKind>) -> Self {
        self.fetcher = FreshRead { reader: Some((client, sets)), kinds };
        self
    }
}

impl InboundConnector for OnecInbound {
    fn kind(&self) -> &'static str {
        "onec"
    }

    fn verify(&self, request: &InboundRequest<'_>) -> Result<Verified, Rejection> {
        let Some(header) = request.headers.get(http::header::AUTHORIZATION) else {
            return Err(Rejection::Unauthenticated("no `Authorization` header".into()));
        };
        let header = header.to_str().map_err(|_| Rejection::Unauthenticated("unreadable `Authorization`".into()))?;
        self.credentials.admits(header).map_err(Rejection::Unauthenticated)?;
        let notification = Notification::parse(request.body).map_err(|e| Rejection::Malformed(e.to_string()))?;
        Ok(Verified { delivery_key: Some(notification.delivery_key()) })
    }

    fn decode(&self, body: &[u8], _headers: &[(String, String)]) -> Result<Vec<SourceRecord>, DecodeError> {
        let n = Notification::parse(body).map_err(|e| DecodeError(e.to_string()))?;
        let kind = if n.deleted { format!("{}{DELETED}", n.kind.as_str()) } else { n.kind.as_str().to_owned() };
        Ok(vec![SourceRecord { kind, data: Value::Object(n.object) }])
    }

    fn fetcher(&self) -> Option<&dyn RecordFetcher> {
        Some(&self.fetcher)
    }

    fn reconciler(&self) -> Option<&dyn Reconciler> {
        self.catch_up.as_ref().map(|c| c as &dyn Reconciler)
    }
}

/// Reads objects of some kinds again; passes the rest on as sent.
struct FreshRead {
    reader: Option<(ODataClient, EntitySets)>,
    kinds: Vec<RecordKind>,
}

#[async_trait]
impl RecordFetcher for FreshRead {
    async fn fetch(
        &self,
        records: Vec<SourceRecord>,
        _received_at: DateTime<Utc>,
    ) -> Result<FetchedRecords, FetchError> {
        let mut fetched = FetchedRecords::default();
        for record in records {
            let ref_key = record.data.get("Ref_Key").and_then(Value::as_str).map(str::to_owned);
            if record.kind.ends_with(DELETED) {
                if let Some(id) = ref_key {
                    fetched.gone.push(GoneRecord { system: "onec".into(), id });
                }
                continue;
            }
            let kind = RecordKind::parse(&record.kind).filter(|k| self.kinds.contains(k));
            let (Some(kind), Some(id), Some((client, sets))) = (kind, ref_key, &self.reader) else {
                fetched.records.push(record);
                continue;
            };
            // Taken before the read: the state read is at least this new.
            let read_at = Utc::now();
            match client.get(sets.of(kind), &id).await {
                Ok(fresh) => {
                    fetched.read_at = Some(fetched.read_at.map_or(read_at, |t: DateTime<Utc>| t.min(read_at)));
                    let data = with_expansions(fresh, &record.data);
                    fetched.records.push(SourceRecord { kind: record.kind, data: Value::Object(data) });
                }
                Err(e) if e.is_not_found() => fetched.gone.push(GoneRecord { system: "onec".into(), id }),
                Err(e) => return Err(e.to_fetch_error()),
            }
        }
        Ok(fetched)
    }
}

/// The object as read now, with the references the notification expanded
/// (`Контрагент` beside `Контрагент_Key`) where the reference is unchanged.
fn with_expansions(mut fresh: Map<String, Value>, notified: &Value) -> Map<String, Value> {
    let Some(notified) = notified.as_object() else { return fresh };
    for (key, value) in notified {
        if !value.is_object() || fresh.contains_key(key) {
            continue;
        }
        let reference = format!("{key}_Key");
        if fresh.get(&reference).is_some() && fresh.get(&reference) == notified.get(&reference) {
            fresh.insert(key.clone(), value.clone());
        }
    }
    fresh
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use http::HeaderMap;
    use serde_json::json;

    #[test]
    fn expansions_are_kept_only_for_unchanged_references() {
        let fresh = json!({"Ref_Key": "r", "Контрагент_Key": "k1", "Партнер_Key": "p2"}).as_object().unwrap().clone();
        let notified = json!({"Контрагент_Key": "k1", "Контрагент": {"Description": "ООО Ромашка"},
            "Партнер_Key": "p1", "Партнер": {"Description": "Старый"}});
        let merged = with_expansions(fresh, &notified);
        assert_eq!(merged["Контрагент"]["Description"], "ООО Ромашка");
        assert!(!merged.contains_key("Партнер"), "the reference changed since: its expansion is stale");
    }

    const BODY: &str = r#"{"message_id": "5f0c9e44-2d1b-4f3e-9a51-0c4b7e2f6a10", "kind": "interest",
        "object": {"Ref_Key": "a0000000-0000-0000-0000-000000000001", "DataVersion": "AAAACgAAAAA=", "Этап": "Расчет"}}"#;

    fn inbound() -> OnecInbound {
        OnecInbound::new(InboundCredentials::new(Some("crm-hook"), "hook-secret").unwrap(), None)
    }

    fn verify(c: &OnecInbound, authorization: Option<&str>, body: &[u8]) -> Result<Verified, Rejection> {
        let mut headers = HeaderMap::new();
        if let Some(a) = authorization {
            headers.insert(http::header::AUTHORIZATION, a.parse().unwrap());
        }
        c.verify(&InboundRequest { headers: &headers, body, received_at: Utc::now() })
    }

    fn basic(user: &str, password: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
    }

    #[test]
    fn an_authenticated_notification_is_keyed_by_its_version() {
        let v = verify(&inbound(), Some(&basic("crm-hook", "hook-secret")), BODY.as_bytes()).unwrap();
        assert_eq!(v.delivery_key.as_deref(), Some("onec:interest:a0000000-0000-0000-0000-000000000001:AAAACgAAAAA="));
        let records = inbound().decode(BODY.as_bytes(), &[]).unwrap();
        assert_eq!(records[0].kind, "interest");
        assert_eq!(records[0].data["Этап"], "Расчет");
    }

    #[test]
    fn wrong_credentials_are_refused_before_the_body_is_read() {
        let c = inbound();
        for auth in [None, Some("Bearer hook-secret"), Some(basic("crm-hook", "guess-77").as_str())] {
            assert!(matches!(verify(&c, auth, BODY.as_bytes()), Err(Rejection::Unauthenticated(_))), "{auth:?}");
            assert!(matches!(verify(&c, auth, b"garbage"), Err(Rejection::Unauthenticated(_))), "{auth:?}");
        }
        let err = verify(&c, Some(&basic("crm-hook", "guess-77")), BODY.as_bytes()).unwrap_err().to_string();
        assert!(!err.contains("hook-secret") && !err.contains("guess-77"), "{err}");
    }

    #[test]
    fn garbage_from_an_authenticated_caller_is_malformed_naming_the_field() {
        let auth = basic("crm-hook", "hook-secret");
        let err = verify(&inbound(), Some(&auth), b"{\"message_id\": \"m\", \"kind\": \"interest\", \"object\": {}}");
        match err {
            Err(Rejection::Malformed(m)) => assert!(m.starts_with("object.Ref_Key"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(verify(&inbound(), Some(&auth), b"\x00\x01"), Err(Rejection::Malformed(_))));
    }

    #[tokio::test]
    async fn without_a_reader_deletions_become_gone_records_and_the_rest_is_mapped_as_sent() {
        let c = inbound();
        let body = r#"{"message_id": "m", "kind": "interest", "deleted": true,
            "object": {"Ref_Key": "a0000000-0000-0000-0000-000000000001"}}"#;
        let mut records = c.decode(body.as_bytes(), &[]).unwrap();
        records.extend(c.decode(BODY.as_bytes(), &[]).unwrap());
        let at = Utc::now();
        let fetched = c.fetcher().unwrap().fetch(records, at).await.unwrap();
        assert_eq!(
            fetched.gone,
            [GoneRecord { system: "onec".into(), id: "a0000000-0000-0000-0000-000000000001".into() }]
        );
        assert_eq!(fetched.records.len(), 1);
        assert_eq!(fetched.read_at, None, "the notification's own payload");
    }
}
