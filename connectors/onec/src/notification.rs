//! The notification contract of the 1C HTTP service: what 1C POSTs to
//! `/hooks/<instance>` when an object changes (written by the 1C side's
//! subscription «ПриЗаписи»; see docs/connectors/onec.md for its JSON
//! schema).
//!
//! ```json
//! {"message_id": "5f0c9e44-2d1b-4f3e-9a51-0c4b7e2f6a10",
//!  "kind": "interest",
//!  "object": {"Ref_Key": "…", "DataVersion": "AAAACgAAAAA=", "Этап": "Расчет", …}}
//! ```
//!
//! `object` is the object as the standard OData interface shows it
//! (`Ref_Key`, `<Реквизит>_Key`, tabular sections as arrays with
//! `LineNumber`), optionally with referenced objects expanded
//! (`"Контрагент": {"Наименование": …, "ИНН": …}`). `"deleted": true`
//! reports an object deleted for good. The same body is what the catch-up
//! makes for a version it found by polling, so both take one path.

use serde_json::{Map, Value, json};

use crate::kinds::{RecordKind, is_guid};

/// Why a body is not a notification; names the field that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct NotificationError {
    /// Where in the body, e.g. `object.Ref_Key`.
    pub field: String,
    pub problem: String,
}

fn wrong(field: &str, problem: impl Into<String>) -> NotificationError {
    NotificationError { field: field.to_owned(), problem: problem.into() }
}

/// One decoded notification.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub message_id: String,
    pub kind: RecordKind,
    /// The object was deleted for good (not just marked for deletion).
    pub deleted: bool,
    pub object: Map<String, Value>,
}

impl Notification {
    pub fn new(message_id: impl Into<String>, kind: RecordKind, object: Map<String, Value>) -> Self {
        Self { message_id: message_id.into(), kind, deleted: false, object }
    }

    pub fn parse(body: &[u8]) -> Result<Self, NotificationError> {
        let text = std::str::from_utf8(body).map_err(|e| {
            wrong("body", format!("not UTF-8 (byte {}); 1C's ЗаписьJSON writes UTF-8", e.valid_up_to()))
        })?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if text.trim().is_empty() {
            return Err(wrong("body", "empty"));
        }
        let value: Value = serde_json::from_str(text)
            .map_err(|e| wrong("body", format!("not JSON at line {} column {}: {e}", e.line(), e.column())))?;
        let Value::Object(mut top) = value else { return Err(wrong("body", "not a JSON object")) };
        let message_id = match top.remove("message_id") {
            Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 128 => s.trim().to_owned(),
            Some(_) => return Err(wrong("message_id", "must be a non-empty string of at most 128 characters")),
            None => return Err(wrong("message_id", "missing")),
        };
        let kind = match top.remove("kind") {
            Some(Value::String(s)) => RecordKind::parse(&s).ok_or_else(|| {
                let known: Vec<&str> = RecordKind::ALL.iter().map(|k| k.as_str()).collect();
                wrong("kind", format!("`{}` is not one of {}", shorten(&s), known.join(", ")))
            })?,
            Some(_) => return Err(wrong("kind", "must be a string")),
            None => return Err(wrong("kind", "missing")),
        };
        let deleted = match top.remove("deleted") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => b,
            Some(_) => return Err(wrong("deleted", "must be true or false")),
        };
        let object = match top.remove("object") {
            Some(Value::Object(o)) => o,
            Some(_) => return Err(wrong("object", "must be a JSON object")),
            None => return Err(wrong("object", "missing")),
        };
        if kind.has_ref() {
            match object.get("Ref_Key") {
                Some(Value::String(r)) if is_guid(r) => {}
                Some(Value::String(r)) => {
                    return Err(wrong("object.Ref_Key", format!("`{}` is not a GUID", shorten(r))));
                }
                Some(_) => return Err(wrong("object.Ref_Key", "must be a GUID string")),
                None => {
                    return Err(wrong("object.Ref_Key", format!("missing: a {} is identified by it", kind.as_str())));
                }
            }
        }
        match object.get("DataVersion") {
            None | Some(Value::String(_)) => {}
            Some(_) => return Err(wrong("object.DataVersion", "must be a string")),
        }
        Ok(Self { message_id, kind, deleted, object })
    }

    /// The object's `Ref_Key`, if it has one.
    pub fn ref_key(&self) -> Option<&str> {
        self.object.get("Ref_Key").and_then(Value::as_str)
    }

    pub fn data_version(&self) -> Option<&str> {
        self.object.get("DataVersion").and_then(Value::as_str).filter(|v| !v.is_empty())
    }

    /// What identifies this notification in the inbox: the object's
    /// version when it has one, so a notification repeated by 1C and the
    /// catch-up finding the same version are stored once; else the
    /// message id.
    pub fn delivery_key(&self) -> String {
        match (self.ref_key(), self.data_version(), self.deleted) {
            (Some(r), _, true) => format!("onec:{}:{r}:deleted", self.kind.as_str()),
            (Some(r), Some(v), false) => version_key(self.kind, r, v),
            _ => format!("onec:message:{}", self.message_id),
        }
    }

    pub fn to_json(&self) -> Value {
        let mut body = json!({ "message_id": self.message_id, "kind": self.kind.as_str(), "object": self.object });
        if self.deleted {
            body["deleted"] = json!(true);
        }
        body
    }
}

/// The delivery key of one version of one object.
pub fn version_key(kind: RecordKind, ref_key: &str, data_version: &str) -> String {
    format!("onec:{}:{ref_key}:{data_version}", kind.as_str())
}

fn shorten(text: &str) -> String {
    let mut s: String = text.chars().take(40).collect();
    if s.len() < text.len() {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTEREST: &str = r#"{"message_id": "5f0c9e44-2d1b-4f3e-9a51-0c4b7e2f6a10", "kind": "interest",
        "object": {"Ref_Key": "a0000000-0000-0000-0000-000000000001", "DataVersion": "AAAACgAAAAA=",
                   "Этап": "Расчет", "СуммаДокумента": 245000.5, "Date": "2026-03-20T10:15:00"}}"#;

    #[test]
    fn an_interest_notification_reads_with_its_cyrillic_fields_untouched() {
        let n = Notification::parse(INTEREST.as_bytes()).unwrap();
        assert_eq!(n.kind, RecordKind::Interest);
        assert_eq!(n.object["Этап"], "Расчет");
        assert_eq!(n.object["СуммаДокумента"].to_string(), "245000.5");
        assert_eq!(n.delivery_key(), "onec:interest:a0000000-0000-0000-0000-000000000001:AAAACgAAAAA=");
        assert_eq!(Notification::parse(n.to_json().to_string().as_bytes()).unwrap(), n);
    }

    #[test]
    fn without_a_version_the_message_id_keys_the_delivery() {
        let body = r#"{"message_id": "m-1", "kind": "stock", "object": {"Номенклатура_Key": "x", "ВНаличии": 5}}"#;
        let n = Notification::parse(body.as_bytes()).unwrap();
        assert_eq!(n.delivery_key(), "onec:message:m-1");
        let deleted = r#"{"message_id": "m-2", "kind": "shipment", "deleted": true,
            "object": {"Ref_Key": "8b9660f6-6332-11ec-ad72-000c29b45b09"}}"#;
        let n = Notification::parse(deleted.as_bytes()).unwrap();
        assert_eq!(n.delivery_key(), "onec:shipment:8b9660f6-6332-11ec-ad72-000c29b45b09:deleted");
    }

    #[test]
    fn every_refusal_names_the_field() {
        let cases: [(&str, &str); 9] = [
            ("", "body"),
            ("[1]", "body"),
            ("{\"kind\": \"interest\"", "body"),
            (r#"{"kind": "interest", "object": {}}"#, "message_id"),
            (r#"{"message_id": "m", "kind": "deal", "object": {}}"#, "kind"),
            (r#"{"message_id": "m", "kind": "interest"}"#, "object"),
            (r#"{"message_id": "m", "kind": "interest", "object": {}}"#, "object.Ref_Key"),
            (r#"{"message_id": "m", "kind": "invoice", "object": {"Ref_Key": "42"}}"#, "object.Ref_Key"),
            (
                r#"{"message_id": "m", "kind": "invoice", "object": {"Ref_Key": "8b9660f6-6332-11ec-ad72-000c29b45b09", "DataVersion": 5}}"#,
                "object.DataVersion",
            ),
        ];
        for (body, field) in cases {
            let err = Notification::parse(body.as_bytes()).unwrap_err();
            assert_eq!(err.field, field, "{body}: {err}");
        }
        let err = Notification::parse(b"\xff\xfe").unwrap_err();
        assert!(err.to_string().contains("not UTF-8"), "{err}");
        let err = Notification::parse(b"{\"message_id\": \"m\",\n \"kind\": }").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }
}
