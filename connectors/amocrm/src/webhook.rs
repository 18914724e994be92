//! amoCRM webhook bodies, as the account sends them: form-encoded
//! (`application/x-www-form-urlencoded`) with PHP-style bracketed keys, one
//! section per entity and action and one numbered entry per record:
//!
//! ```text
//! leads[status][0][id]=10701093&leads[status][0][status_id]=142
//! &leads[status][0][pipeline_id]=9217056&leads[status][0][old_status_id]=20067736
//! &leads[status][0][custom_fields][0][id]=66339&leads[status][0][custom_fields][0][values][0][value]=Сайт
//! &account[subdomain]=apfitness&account[id]=17769199
//! ```
//!
//! Several leads (and several actions) can arrive in one POST. Sections of
//! other entities (`contacts[…]`, `companies[…]`, `task[…]`, …) are
//! accepted and skipped: the hub maps leads only. Custom fields come in the
//! legacy v2 shape (`custom_fields[i][id|name|values][j][value|enum]`), so
//! each lead also gets `custom_fields_by_id`: field id → its value (or its
//! values, when there are several), which mapping paths can name.

use serde_json::{Map, Value, json};

/// What happened to a lead, as the section of its entry names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeadAction {
    Add,
    Update,
    /// The lead moved to another status (or pipeline).
    Status,
    Delete,
    Restore,
    Responsible,
    Note,
}

impl LeadAction {
    fn parse(section: &str) -> Option<Self> {
        Some(match section {
            "add" => Self::Add,
            "update" => Self::Update,
            "status" => Self::Status,
            "delete" => Self::Delete,
            "restore" => Self::Restore,
            "responsible" => Self::Responsible,
            "note" => Self::Note,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "add",
            Self::Update => "update",
            Self::Status => "status",
            Self::Delete => "delete",
            Self::Restore => "restore",
            Self::Responsible => "responsible",
            Self::Note => "note",
        }
    }
}

/// One lead entry of a webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct LeadChange {
    pub action: LeadAction,
    pub id: String,
    /// Every field of the entry, nested (numbered keys become arrays).
    pub fields: Map<String, Value>,
}

impl LeadChange {
    /// The record the mappings read: the entry's fields, `action`, and
    /// `custom_fields_by_id`.
    pub fn record(&self) -> Value {
        let mut data = self.fields.clone();
        data.insert("action".into(), json!(self.action.as_str()));
        data.insert("id".into(), json!(self.id));
        if let Some(Value::Array(fields)) = self.fields.get("custom_fields") {
            let mut by_id = Map::new();
            for field in fields {
                let Some(id) = field.get("id").and_then(Value::as_str) else { continue };
                let values: Vec<Value> = match field.get("values") {
                    Some(Value::Array(values)) => values
                        .iter()
                        .filter_map(|v| v.get("value").or(Some(v)).filter(|v| v.is_string()).cloned())
                        .collect(),
                    _ => Vec::new(),
                };
                let value = match values.len() {
                    0 => Value::Null,
                    1 => values.into_iter().next().unwrap_or_default(),
                    _ => Value::Array(values),
                };
                by_id.insert(id.to_owned(), value);
            }
            data.insert("custom_fields_by_id".into(), Value::Object(by_id));
        }
        Value::Object(data)
    }
}

/// A parsed webhook body.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookForm {
    /// `account[subdomain]`.
    pub subdomain: String,
    /// `account[id]`, when sent.
    pub account_id: Option<String>,
    /// Lead entries in the order their sections and numbers first appear.
    pub leads: Vec<LeadChange>,
}

/// Most lead entries one body may carry.
const MAX_LEADS: usize = 500;

/// Splits `leads[status][0][id]` into `["leads", "status", "0", "id"]`.
/// `None` when the brackets are unbalanced or a segment is empty.
fn split_key(key: &str) -> Option<Vec<&str>> {
    let (head, mut rest) = match key.find('[') {
        Some(i) => (&key[..i], &key[i..]),
        None => return (!key.is_empty() && !key.contains(']')).then(|| vec![key]),
    };
    if head.is_empty() || head.contains(']') {
        return None;
    }
    let mut parts = vec![head];
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let end = inner.find(']')?;
        let part = &inner[..end];
        if part.is_empty() || part.contains('[') {
            return None;
        }
        parts.push(part);
        rest = &inner[end + 1..];
    }
    Some(parts)
}

/// Puts `value` at `path` under `node`.
fn insert(node: &mut Map<String, Value>, path: &[&str], value: &str) -> Result<(), String> {
    let Some((first, rest)) = path.split_first() else { return Ok(()) };
    if rest.is_empty() {
        if node.contains_key(*first) {
            return Err(format!("`{first}` is given twice"));
        }
        node.insert((*first).to_owned(), Value::String(value.to_owned()));
        return Ok(());
    }
    let child = node.entry((*first).to_owned()).or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(child) = child else { return Err(format!("`{first}` is both a value and a list")) };
    insert(child, rest, value)
}

/// Numbered maps (`{"0": …, "1": …}`) become arrays, in number order.
fn arrays(value: Value) -> Value {
    match value {
        Value::Object(map) if !map.is_empty() && map.keys().all(|k| k.parse::<u32>().is_ok()) => {
            let mut items: Vec<(u32, Value)> =
                map.into_iter().map(|(k, v)| (k.parse().unwrap_or(u32::MAX), arrays(v))).collect();
            items.sort_by_key(|(i, _)| *i);
            Value::Array(items.into_iter().map(|(_, v)| v).collect())
        }
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, arrays(v))).collect()),
        other => other,
    }
}

fn shorten(text: &str) -> String {
    let mut s: String = text.chars().take(40).collect();
    if s.len() < text.len() {
        s.push('…');
    }
    s
}

fn numeric(text: &str) -> bool {
    !text.is_empty() && text.len() <= 20 && text.bytes().all(|b| b.is_ascii_digit())
}

impl WebhookForm {
    /// Parses a body; every refusal says what is wrong.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(body).map_err(|_| "body is not UTF-8 form data".to_owned())?;
        if text.trim().is_empty() {
            return Err("empty body".into());
        }
        let mut account = Map::new();
        // (action, number) in order of first appearance, with the fields.
        let mut entries: Vec<((LeadAction, String), Map<String, Value>)> = Vec::new();
        for (key, value) in form_urlencoded::parse(text.as_bytes()) {
            if key.contains('\u{FFFD}') || value.contains('\u{FFFD}') {
                return Err("a percent-encoded key or value is not UTF-8".into());
            }
            let parts =
                split_key(&key).ok_or_else(|| format!("key `{}` is not a bracketed form key", shorten(&key)))?;
            match parts.as_slice() {
                ["account", rest @ ..] if !rest.is_empty() => {
                    insert(&mut account, rest, &value).map_err(|e| format!("account: {e}"))?;
                }
                ["leads", section, number, rest @ ..] if !rest.is_empty() => {
                    let action = LeadAction::parse(section)
                        .ok_or_else(|| format!("`leads[{}]` is not a lead event", shorten(section)))?;
                    if !numeric(number) {
                        return Err(format!("`leads[{section}][{}]` is not a numbered entry", shorten(number)));
                    }
                    let at = (action, (*number).to_owned());
                    let entry = match entries.iter().position(|(k, _)| *k == at) {
                        Some(i) => &mut entries[i].1,
                        None => {
                            if entries.len() >= MAX_LEADS {
                                return Err(format!("more than {MAX_LEADS} lead entries in one body"));
                            }
                            entries.push((at, Map::new()));
                            &mut entries.last_mut().expect("just pushed").1
                        }
                    };
                    insert(entry, rest, &value).map_err(|e| format!("leads[{section}][{number}]: {e}"))?;
                }
                ["leads", ..] => return Err(format!("key `{}` is not `leads[<event>][<n>][<field>]`", shorten(&key))),
                // Other entities' sections: not the hub's business.
                _ => {}
            }
        }
        let text_of = |map: &Map<String, Value>, key: &str| {
            map.get(key).and_then(Value::as_str).map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned)
        };
        let subdomain = text_of(&account, "subdomain").ok_or("no `account[subdomain]`: not an amoCRM webhook")?;
        let account_id = text_of(&account, "id");
        if let Some(id) = &account_id
            && !numeric(id)
        {
            return Err(format!("`account[id]` `{}` is not a number", shorten(id)));
        }
        let mut leads = Vec::with_capacity(entries.len());
        for ((action, number), fields) in entries {
            let Value::Object(fields) = arrays(Value::Object(fields)) else { unreachable!("maps stay maps") };
            let id =
                text_of(&fields, "id").ok_or_else(|| format!("`leads[{}][{number}]` has no `id`", action.as_str()))?;
            if !numeric(&id) {
                return Err(format!("`leads[{}][{number}][id]` `{}` is not a number", action.as_str(), shorten(&id)));
            }
            for key in ["status_id", "pipeline_id", "old_status_id", "old_pipeline_id"] {
                if let Some(v) = text_of(&fields, key)
                    && !numeric(&v)
                {
                    return Err(format!(
                        "`leads[{}][{number}][{key}]` `{}` is not a number",
                        action.as_str(),
                        shorten(&v)
                    ));
                }
            }
            leads.push(LeadChange { action, id, fields });
        }
        Ok(Self { subdomain, account_id, leads })
    }
}

/// A webhook body as amoCRM sends it (the emulator and tests use it): one
/// entry per `(action, lead fields)`, then the account.
pub fn encode_webhook(leads: &[(LeadAction, &Value)], subdomain: &str, account_id: u64, base_url: &str) -> String {
    fn walk(prefix: &str, value: &Value, out: &mut form_urlencoded::Serializer<'_, String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    walk(&format!("{prefix}[{k}]"), v, out);
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(&format!("{prefix}[{i}]"), v, out);
                }
            }
            Value::Null => {
                out.append_pair(prefix, "");
            }
            Value::String(s) => {
                out.append_pair(prefix, s);
            }
            other => {
                out.append_pair(prefix, &other.to_string());
            }
        }
    }
    let mut out = form_urlencoded::Serializer::new(String::new());
    let mut numbers: Vec<(LeadAction, usize)> = Vec::new();
    for (action, lead) in leads {
        let n = match numbers.iter_mut().find(|(a, _)| a == action) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                numbers.push((*action, 0));
                0
            }
        };
        walk(&format!("leads[{}][{n}]", action.as_str()), lead, &mut out);
    }
    out.append_pair("account[subdomain]", subdomain);
    out.append_pair("account[id]", &account_id.to_string());
    out.append_pair("account[_links][self]", base_url);
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A status change as amoCRM sends it (the reference's real body, abridged).
    pub(crate) const WIRE: &str = "leads[status][0][id]=10701093&leads[status][0][name]=Семинар&leads[status][0][status_id]=142\
        &leads[status][0][old_status_id]=20067736&leads[status][0][price]=22500&leads[status][0][responsible_user_id]=2079676\
        &leads[status][0][last_modified]=1539782664&leads[status][0][modified_user_id]=2079718\
        &leads[status][0][pipeline_id]=9217056&leads[status][0][tags][0][id]=80147&leads[status][0][tags][0][name]=vip\
        &leads[status][0][account_id]=17769199&leads[status][0][custom_fields][0][id]=66339\
        &leads[status][0][custom_fields][0][name]=Источник&leads[status][0][custom_fields][0][values][0][value]=Сайт\
        &leads[status][0][custom_fields][0][values][0][enum]=139517\
        &leads[status][1][id]=10701094&leads[status][1][status_id]=20067736&leads[status][1][old_status_id]=20067735\
        &leads[status][1][pipeline_id]=9217056&leads[status][1][old_pipeline_id]=9217055\
        &account[subdomain]=apfitness&account[id]=17769199&account[_links][self]=https://apfitness.amocrm.ru";

    #[test]
    fn two_status_changes_in_one_post_are_two_leads() {
        let form = WebhookForm::parse(WIRE.as_bytes()).unwrap();
        assert_eq!((form.subdomain.as_str(), form.account_id.as_deref()), ("apfitness", Some("17769199")));
        assert_eq!(form.leads.len(), 2);
        let first = form.leads[0].record();
        assert_eq!(first["action"], "status");
        assert_eq!((first["id"].as_str(), first["status_id"].as_str()), (Some("10701093"), Some("142")));
        assert_eq!(first["old_status_id"], "20067736");
        assert_eq!(first["tags"][0]["name"], "vip");
        assert_eq!(first["custom_fields"][0]["values"][0]["enum"], "139517");
        assert_eq!(first["custom_fields_by_id"]["66339"], "Сайт");
        let second = form.leads[1].record();
        assert_eq!(
            (second["pipeline_id"].as_str(), second["old_pipeline_id"].as_str()),
            (Some("9217056"), Some("9217055"))
        );
    }

    #[test]
    fn encoded_bodies_parse_back_whatever_the_section() {
        let lead = json!({"id": "5", "status_id": "7000012", "pipeline_id": "7000001", "price": "100",
            "custom_fields": [{"id": "900", "values": [{"value": "a"}, {"value": "b"}]}]});
        let deleted = json!({"id": "6", "status_id": "7000011", "pipeline_id": "7000001"});
        let body = encode_webhook(
            &[(LeadAction::Update, &lead), (LeadAction::Delete, &deleted), (LeadAction::Update, &deleted)],
            "example",
            42,
            "https://example.amocrm.ru",
        );
        assert!(body.contains("leads%5Bupdate%5D%5B1%5D%5Bid%5D=6"), "{body}");
        let form = WebhookForm::parse(body.as_bytes()).unwrap();
        let actions: Vec<(&str, &str)> = form.leads.iter().map(|l| (l.action.as_str(), l.id.as_str())).collect();
        assert_eq!(actions, [("update", "5"), ("delete", "6"), ("update", "6")]);
        assert_eq!(form.leads[0].record()["custom_fields_by_id"]["900"], json!(["a", "b"]));
    }

    #[test]
    fn other_entities_are_skipped_and_malformed_lead_keys_refused() {
        let contacts_only = "contacts[add][0][id]=1&account[subdomain]=x&account[id]=2";
        assert_eq!(WebhookForm::parse(contacts_only.as_bytes()).unwrap().leads, vec![]);
        let refusals = [
            ("", "empty body"),
            ("leads[status][0][id]=1", "no `account[subdomain]`"),
            ("leads[status][0][id]=1&account[subdomain]=x&account[id]=abc", "`account[id]`"),
            ("leads[moved][0][id]=1&account[subdomain]=x", "not a lead event"),
            ("leads[status][x][id]=1&account[subdomain]=x", "numbered entry"),
            ("leads[status][0][status_id]=1&account[subdomain]=x", "has no `id`"),
            ("leads[status][0][id]=1a&account[subdomain]=x", "is not a number"),
            ("leads[status][0][id]=1&leads[status][0][status_id]=x&account[subdomain]=x", "status_id"),
            ("leads[status][0][id]=1&leads[status][0][id]=2&account[subdomain]=x", "given twice"),
            ("leads[status][0][id=1&account[subdomain]=x", "bracketed"),
            ("leads[status]=1&account[subdomain]=x", "leads[<event>]"),
            ("leads[status][0][id]=1&leads[status][0][id][x]=2&account[subdomain]=x", "both a value"),
        ];
        for (body, why) in refusals {
            let err = WebhookForm::parse(body.as_bytes()).unwrap_err();
            assert!(err.contains(why), "{body}: {err}");
        }
        assert!(WebhookForm::parse(b"\xff\xfe").is_err());
        assert!(WebhookForm::parse(b"leads[status][0][id]=%FF&account[subdomain]=x").is_err());
    }
}
