//! The inbound half: Bitrix24 outgoing-webhook events.
//!
//! Bitrix24 POSTs `application/x-www-form-urlencoded` bodies with PHP-style
//! keys (`event`, `data[FIELDS][ID]`, `ts`, `auth[application_token]`,
//! `auth[domain]`, …; brackets may arrive percent-encoded). There is no
//! signature header: the outgoing webhook's application token travels in
//! the body and is compared in constant time, and is cut out of the body
//! before the inbox stores it. Events carry ids only, so
//! [`Bitrix24Inbound::decode`] yields a thin `deal.event` / `item.event`
//! record; the fetch step ([`crate::fetch`]) reads the record itself.
//!
//! Events get no delivery key: Bitrix24 never redelivers one, and two
//! changes of a deal within one second send identical bodies (`ts` has
//! whole seconds), so a key could only drop the second change as a repeat.
//! A POST a proxy repeats is stored twice and costs one more read, which
//! changes nothing. The catch-up ([`crate::catch_up`]) finds what was lost.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dealbridge_core::connector::{
    DecodeError, InboundConnector, InboundRequest, Reconciler, RecordFetcher, Rejection, SourceRecord, Verified,
};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::catch_up::{CATCH_UP_KEY, DealCatchUp};
use crate::fetch::DealFetcher;
use crate::reader::PortalReader;

/// The form key of the outgoing webhook's application token.
const TOKEN_KEY: &str = "auth[application_token]";

/// The outgoing webhook's application token. `Debug` never shows it.
#[derive(Clone)]
pub struct ApplicationToken(Vec<u8>);

impl ApplicationToken {
    /// `None` for an empty (or blank) token.
    pub fn new(token: &str) -> Option<Self> {
        let token = token.trim();
        (!token.is_empty()).then(|| Self(token.as_bytes().to_vec()))
    }

    fn matches(&self, candidate: &str) -> bool {
        // `ct_eq` on slices of different lengths is false without comparing
        // the bytes; the length of the token is not a secret worth hiding.
        bool::from(self.0.as_slice().ct_eq(candidate.as_bytes()))
    }
}

impl std::fmt::Debug for ApplicationToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApplicationToken(***)")
    }
}

/// The keys of one event body this connector reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventForm {
    /// Upper-cased event name, e.g. `ONCRMDEALUPDATE`.
    pub event: String,
    pub id: String,
    /// Unix seconds the event left Bitrix24's queue.
    pub ts: String,
    pub domain: String,
    pub member_id: Option<String>,
    /// Absent in a stored body (cut out before storing).
    pub application_token: Option<String>,
    /// Smart-process type of `ONCRMDYNAMICITEM*` events.
    pub entity_type_id: Option<String>,
    /// `ONCRMDEALMOVETOCATEGORY` only.
    pub category_id: Option<String>,
    pub stage_id: Option<String>,
}

/// What kind of record an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subject {
    Deal,
    Item,
}

impl EventForm {
    /// Parses a body; every refusal says what is wrong (never a secret).
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(body).map_err(|_| "body is not UTF-8 form data".to_owned())?;
        if text.trim().is_empty() {
            return Err("empty body".into());
        }
        let mut pairs: HashMap<String, String> = HashMap::new();
        for (key, value) in form_urlencoded::parse(text.as_bytes()) {
            if key.contains('\u{FFFD}') || value.contains('\u{FFFD}') {
                return Err("a percent-encoded key or value is not UTF-8".into());
            }
            if crate::brackets::split_key(&key).is_none() {
                return Err(format!("key `{}` has unbalanced brackets", shorten(&key)));
            }
            if let Some(previous) = pairs.insert(key.to_string(), value.to_string())
                && previous != value
            {
                return Err(format!("key `{}` is given twice with different values", shorten(&key)));
            }
        }
        let mut take = |key: &str| pairs.remove(key).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let event = take("event").ok_or("no `event`: not a Bitrix24 event")?.to_ascii_uppercase();
        let id = take("data[FIELDS][ID]").ok_or("no `data[FIELDS][ID]`")?;
        let ts = take("ts").ok_or("no `ts`")?;
        let domain = take("auth[domain]").ok_or("no `auth[domain]`")?;
        let application_token = take(TOKEN_KEY);
        let member_id = take("auth[member_id]");
        let entity_type_id = take("data[FIELDS][ENTITY_TYPE_ID]");
        let category_id = take("data[FIELDS][CATEGORY_ID]");
        let stage_id = take("data[FIELDS][STAGE_ID]");
        let numeric = |v: &str| !v.is_empty() && v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit());
        if !event.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') || event.len() > 64 {
            return Err(format!("`event` `{}` is not an event name", shorten(&event)));
        }
        if !numeric(&id) {
            return Err(format!("`data[FIELDS][ID]` `{}` is not a number", shorten(&id)));
        }
        if !numeric(&ts) || ts.parse::<i64>().is_err() {
            return Err(format!("`ts` `{}` is not unix seconds", shorten(&ts)));
        }
        if let Some(t) = &entity_type_id
            && !numeric(t)
        {
            return Err(format!("`data[FIELDS][ENTITY_TYPE_ID]` `{}` is not a number", shorten(t)));
        }
        Ok(Self { event, id, ts, domain, member_id, application_token, entity_type_id, category_id, stage_id })
    }

    fn subject(&self) -> Result<Subject, String> {
        let e = self.event.as_str();
        if matches!(e, "ONCRMDEALADD" | "ONCRMDEALUPDATE" | "ONCRMDEALDELETE" | "ONCRMDEALMOVETOCATEGORY") {
            return Ok(Subject::Deal);
        }
        let item = ["ONCRMDYNAMICITEMADD", "ONCRMDYNAMICITEMUPDATE", "ONCRMDYNAMICITEMDELETE"].iter().any(|base| {
            e.strip_prefix(base).is_some_and(|rest| {
                rest.is_empty()
                    || rest.strip_prefix('_').is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
        });
        if item {
            if self.entity_type_id.is_none() {
                return Err(format!("`{e}` without `data[FIELDS][ENTITY_TYPE_ID]`"));
            }
            return Ok(Subject::Item);
        }
        Err(format!("event `{e}` is not handled (deal and smart-process item events are)"))
    }

    /// `add`, `update`, `delete` or `move_to_category`.
    fn action(&self) -> &'static str {
        let e = self.event.as_str();
        if e.ends_with("MOVETOCATEGORY") {
            "move_to_category"
        } else if e.contains("ADD") {
            "add"
        } else if e.contains("DELETE") {
            "delete"
        } else {
            "update"
        }
    }

    /// `event:id:ts` (with the smart-process type for items): what tells
    /// events apart in logs; not unique (see the module's notes).
    pub fn label(&self) -> String {
        match &self.entity_type_id {
            Some(t) => format!("{}:{t}:{}:{}", self.event, self.id, self.ts),
            None => format!("{}:{}:{}", self.event, self.id, self.ts),
        }
    }
}

fn shorten(text: &str) -> String {
    let mut s: String = text.chars().take(40).collect();
    if s.len() < text.len() {
        s.push('…');
    }
    s
}

/// A configured `bitrix24` instance's inbound half.
pub struct Bitrix24Inbound {
    token: ApplicationToken,
    domain: Option<String>,
    fetcher: Option<DealFetcher>,
    catch_up: Option<DealCatchUp>,
    integration_user: Option<String>,
}

impl Bitrix24Inbound {
    /// `domain`, when given, must equal each event's `auth[domain]`.
    pub fn new(token: ApplicationToken, domain: Option<String>) -> Self {
        let domain = domain.map(|d| d.trim().to_ascii_lowercase());
        Self { token, domain, fetcher: None, catch_up: None, integration_user: None }
    }

    /// Marks deals read with `MODIFY_BY_ID` = `user` as changed last by
    /// the hub (see `Bitrix24Config::integration_user_id`).
    pub fn integration_user(mut self, user: Option<String>) -> Self {
        let user = user.map(|u| u.trim().to_owned()).filter(|u| !u.is_empty());
        if let Some(fetcher) = self.fetcher.as_mut() {
            fetcher.integration_user = user.clone();
        }
        self.integration_user = user;
        self
    }

    /// With the catch-up on, every `every` asks the portal which of the
    /// deals the hub knows it still has (see `crate::catch_up`).
    pub fn checking_deletions(mut self, every: Option<Duration>) -> Self {
        if let Some(catch_up) = self.catch_up.as_mut() {
            catch_up.deletions_every = every;
        }
        self
    }

    /// Reads the deals events name through `reader`, and with `catch_up`
    /// every that long looks for changes whose events were lost.
    pub fn reading(mut self, reader: Arc<PortalReader>, catch_up: Option<Duration>) -> Self {
        let mut fetcher = DealFetcher::new(reader.clone());
        fetcher.integration_user = self.integration_user.clone();
        self.fetcher = Some(fetcher);
        self.catch_up = catch_up.map(|every| DealCatchUp::new(reader, every));
        self
    }
}

/// The body without its `auth[application_token]` pairs, every other byte
/// as received; `None` when it has none.
fn without_token(body: &[u8]) -> Option<Vec<u8>> {
    let mut found = false;
    let kept: Vec<&[u8]> = body
        .split(|b| *b == b'&')
        .filter(|pair| {
            let key = pair.split(|b| *b == b'=').next().unwrap_or_default();
            let is_token = form_urlencoded::parse(key).next().is_some_and(|(k, _)| k == TOKEN_KEY);
            found |= is_token;
            !is_token
        })
        .collect();
    found.then(|| kept.join(&b'&'))
}

/// A catch-up's synthetic event (`{"catch_up": "deal", "ID": …}`, with
/// `"gone": true` for a deal the portal no longer has).
fn decode_catch_up(body: &[u8]) -> Option<Result<Vec<SourceRecord>, DecodeError>> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let subject = value.get(CATCH_UP_KEY)?;
    Some(match (subject.as_str(), value.get("ID").and_then(crate::rest::id_text)) {
        (Some("deal"), Some(id)) if value.get("gone") == Some(&Value::Bool(true)) => {
            let data = json!({ "event": "CATCH_UP", "action": "delete", "id": id });
            Ok(vec![SourceRecord { kind: "deal.event".into(), data }])
        }
        (Some("deal"), Some(id)) => {
            let date_modify = value.get("DATE_MODIFY").cloned().unwrap_or(Value::Null);
            let data = json!({ "event": "CATCH_UP", "action": "update", "id": id, "date_modify": date_modify });
            Ok(vec![SourceRecord { kind: "deal.event".into(), data }])
        }
        _ => Err(DecodeError(format!("catch-up event `{value}` names no deal"))),
    })
}

impl InboundConnector for Bitrix24Inbound {
    fn kind(&self) -> &'static str {
        "bitrix24"
    }

    fn verify(&self, request: &InboundRequest<'_>) -> Result<Verified, Rejection> {
        let form = EventForm::parse(request.body).map_err(Rejection::Malformed)?;
        let Some(token) = &form.application_token else {
            return Err(Rejection::Malformed(format!("no `{TOKEN_KEY}`")));
        };
        if !self.token.matches(token) {
            return Err(Rejection::Unauthenticated("`auth[application_token]` does not match".into()));
        }
        if let Some(expected) = &self.domain
            && !form.domain.eq_ignore_ascii_case(expected)
        {
            return Err(Rejection::Unauthenticated(format!(
                "`auth[domain]` `{}` is not this connector's portal",
                shorten(&form.domain)
            )));
        }
        form.subject().map_err(Rejection::Malformed)?;
        Ok(Verified { delivery_key: None })
    }

    fn stored_body(&self, body: &[u8]) -> Option<Vec<u8>> {
        without_token(body)
    }

    fn fetcher(&self) -> Option<&dyn RecordFetcher> {
        self.fetcher.as_ref().map(|f| f as &dyn RecordFetcher)
    }

    fn reconciler(&self) -> Option<&dyn Reconciler> {
        self.catch_up.as_ref().map(|c| c as &dyn Reconciler)
    }

    fn decode(&self, body: &[u8], _headers: &[(String, String)]) -> Result<Vec<SourceRecord>, DecodeError> {
        if body.first() == Some(&b'{')
            && let Some(records) = decode_catch_up(body)
        {
            return records;
        }
        let form = EventForm::parse(body).map_err(DecodeError)?;
        let subject = form.subject().map_err(DecodeError)?;
        let ts: i64 = form.ts.parse().map_err(|_| DecodeError("`ts` out of range".into()))?;
        let mut data = json!({
            "event": form.event,
            "action": form.action(),
            "id": form.id,
            "ts": ts,
            "domain": form.domain,
        });
        let extra = [("member_id", &form.member_id), ("category_id", &form.category_id), ("stage_id", &form.stage_id)];
        for (key, value) in extra {
            if let Some(v) = value {
                data[key] = json!(v);
            }
        }
        let kind = match subject {
            Subject::Deal => "deal.event",
            Subject::Item => {
                data["entity_type_id"] = json!(form.entity_type_id);
                "item.event"
            }
        };
        Ok(vec![SourceRecord { kind: kind.into(), data }])
    }
}

/// An event body as Bitrix24 sends it (the emulator and tests use it).
pub fn encode_event(
    event: &str,
    fields: &[(&str, &str)],
    ts: i64,
    domain: &str,
    member_id: &str,
    token: &str,
) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    out.append_pair("event", event);
    out.append_pair("event_handler_id", "1");
    for (k, v) in fields {
        out.append_pair(&format!("data[FIELDS][{k}]"), v);
    }
    out.append_pair("ts", &ts.to_string());
    out.append_pair("auth[domain]", domain);
    out.append_pair("auth[client_endpoint]", &format!("https://{domain}/rest/"));
    out.append_pair("auth[server_endpoint]", "https://oauth.bitrix24.tech/rest/");
    out.append_pair("auth[member_id]", member_id);
    out.append_pair("auth[application_token]", token);
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use http::HeaderMap;

    const TOKEN: &str = "jvh9y1ulvt2m6k5or90v9mg8nn32ozas";

    fn connector() -> Bitrix24Inbound {
        Bitrix24Inbound::new(ApplicationToken::new(TOKEN).unwrap(), None)
    }

    fn verify(c: &Bitrix24Inbound, body: &[u8]) -> Result<Verified, Rejection> {
        c.verify(&InboundRequest { headers: &HeaderMap::new(), body, received_at: Utc::now() })
    }

    /// The on-the-wire body from the reference, brackets unencoded.
    const WIRE: &str = "event=ONCRMDEALUPDATE&event_handler_id=975&data[FIELDS][ID]=7405&ts=1766047124\
        &auth[domain]=some-domain.bitrix24.ru&auth[client_endpoint]=https://some-domain.bitrix24.ru/rest/\
        &auth[server_endpoint]=https://oauth.bitrix24.tech/rest/&auth[member_id]=d897063e1ce7c5eb9f04b9751eef5915\
        &auth[application_token]=jvh9y1ulvt2m6k5or90v9mg8nn32ozas";

    #[test]
    fn a_real_shaped_deal_update_is_accepted_and_decoded() {
        let c = connector();
        let v = verify(&c, WIRE.as_bytes()).unwrap();
        assert_eq!(v.delivery_key, None, "two changes in one second look the same: no key may merge them");
        let records = c.decode(WIRE.as_bytes(), &[]).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].kind, "deal.event");
        assert_eq!(
            records[0].data,
            json!({"event": "ONCRMDEALUPDATE", "action": "update", "id": "7405", "ts": 1766047124,
                   "domain": "some-domain.bitrix24.ru", "member_id": "d897063e1ce7c5eb9f04b9751eef5915"})
        );
        assert!(!records[0].data.to_string().contains(TOKEN));
    }

    #[test]
    fn percent_encoded_brackets_and_encoded_bodies_are_the_same_event() {
        let body = encode_event("ONCRMDEALADD", &[("ID", "7405")], 1766047124, "x.bitrix24.ru", "m", TOKEN);
        assert!(body.contains("data%5BFIELDS%5D%5BID%5D=7405"));
        let c = connector();
        assert!(verify(&c, body.as_bytes()).is_ok());
        assert_eq!(EventForm::parse(body.as_bytes()).unwrap().label(), "ONCRMDEALADD:7405:1766047124");
        assert_eq!(c.decode(body.as_bytes(), &[]).unwrap()[0].data["action"], "add");
    }

    #[test]
    fn the_stored_body_has_no_token_and_still_decodes() {
        let c = connector();
        let stored = c.stored_body(WIRE.as_bytes()).unwrap();
        let text = String::from_utf8(stored.clone()).unwrap();
        assert!(!text.contains(TOKEN) && !text.contains("application_token"), "{text}");
        assert!(text.starts_with("event=ONCRMDEALUPDATE&event_handler_id=975&data[FIELDS][ID]=7405"), "{text}");
        assert_eq!(c.decode(&stored, &[]).unwrap(), c.decode(WIRE.as_bytes(), &[]).unwrap());
        let encoded = encode_event("ONCRMDEALADD", &[("ID", "1")], 1, "d", "m", TOKEN);
        let stored = c.stored_body(encoded.as_bytes()).unwrap();
        assert!(!String::from_utf8_lossy(&stored).contains(TOKEN));
        assert!(matches!(verify(&c, &stored), Err(Rejection::Malformed(_))), "a stored body is no credential");
        assert_eq!(c.stored_body(b"event=ONCRMDEALADD"), None);
    }

    #[test]
    fn catch_up_events_decode_into_deal_events() {
        let c = connector();
        let body = crate::catch_up::synthetic_event("42", "2026-01-01T10:00:00+03:00").body;
        let records = c.decode(&body, &[]).unwrap();
        assert_eq!(records[0].kind, "deal.event");
        assert_eq!((records[0].data["id"].as_str(), records[0].data["action"].as_str()), (Some("42"), Some("update")));
        assert!(c.decode(br#"{"catch_up": "lead", "ID": "1"}"#, &[]).is_err());
        let gone = crate::catch_up::vanished_event("42").body;
        assert_eq!(c.decode(&gone, &[]).unwrap()[0].data["action"], "delete");
        assert!(matches!(verify(&c, &body), Err(Rejection::Malformed(_))), "never accepted over HTTP");
    }

    #[test]
    fn smart_process_items_decode_with_their_type() {
        let body = encode_event(
            "ONCRMDYNAMICITEMUPDATE_1220",
            &[("ID", "24"), ("ENTITY_TYPE_ID", "1220")],
            1723538517,
            "d",
            "m",
            TOKEN,
        );
        let c = connector();
        assert!(verify(&c, body.as_bytes()).is_ok());
        assert_eq!(
            EventForm::parse(body.as_bytes()).unwrap().label(),
            "ONCRMDYNAMICITEMUPDATE_1220:1220:24:1723538517"
        );
        let r = &c.decode(body.as_bytes(), &[]).unwrap()[0];
        assert_eq!(r.kind, "item.event");
        assert_eq!(r.data["entity_type_id"], "1220");
    }

    #[test]
    fn a_wrong_or_missing_token_is_unauthenticated() {
        let c = connector();
        let wrong = WIRE.replace(TOKEN, "51856fefc120afa4b628cc82d3935cce");
        assert!(matches!(verify(&c, wrong.as_bytes()), Err(Rejection::Unauthenticated(_))));
        let short = WIRE.replace(TOKEN, "x");
        assert!(matches!(verify(&c, short.as_bytes()), Err(Rejection::Unauthenticated(_))));
        let err = verify(&c, wrong.as_bytes()).unwrap_err().to_string();
        assert!(!err.contains(TOKEN) && !err.contains("51856fef"), "{err}");
    }

    #[test]
    fn the_portal_domain_is_checked_when_configured() {
        let c = Bitrix24Inbound::new(ApplicationToken::new(TOKEN).unwrap(), Some("other.bitrix24.ru".into()));
        assert!(matches!(verify(&c, WIRE.as_bytes()), Err(Rejection::Unauthenticated(_))));
        let c = Bitrix24Inbound::new(ApplicationToken::new(TOKEN).unwrap(), Some("Some-Domain.bitrix24.ru".into()));
        assert!(verify(&c, WIRE.as_bytes()).is_ok());
    }

    #[test]
    fn garbage_and_truncated_bodies_are_malformed_never_a_panic() {
        let c = connector();
        let mut bodies: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"{\"event\":\"ONCRMDEALADD\"}".to_vec(),
            b"\xff\xfe\x00garbage".to_vec(),
            b"event=%FF%FE&data[FIELDS][ID]=1".to_vec(),
            b"event=ONCRMDEALADD&data[FIELDS][ID=1".to_vec(),
            WIRE.replace("7405", "12a").into_bytes(),
            WIRE.replace("1766047124", "99999999999999999999").into_bytes(),
            WIRE.replace("ONCRMDEALUPDATE", "ONCRMLEADADD").into_bytes(),
            format!("{WIRE}&event=ONCRMDEALDELETE").into_bytes(),
        ];
        // Every prefix of a real body that cuts off a required key.
        for cut in (0..WIRE.len()).step_by(7) {
            bodies.push(WIRE.as_bytes()[..cut].to_vec());
        }
        for body in &bodies {
            match verify(&c, body) {
                Err(Rejection::Malformed(_)) | Err(Rejection::Unauthenticated(_)) => {}
                Ok(_) => panic!("accepted {:?}", String::from_utf8_lossy(body)),
            }
            // Decoding the same bytes never panics either.
            let _ = c.decode(body, &[]);
        }
        assert!(matches!(verify(&c, b"\xff\xfe\x00garbage"), Err(Rejection::Malformed(_))));
        assert!(matches!(verify(&c, &WIRE.as_bytes()[..60]), Err(Rejection::Malformed(_))));
    }
}
