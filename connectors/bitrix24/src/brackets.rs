//! PHP-style bracketed form keys (`data[FIELDS][ID]`, `select[]`), as
//! Bitrix24 sends them in events and accepts them in `batch` command
//! strings. `form_urlencoded` splits and percent-decodes the pairs; this
//! module splits the keys and nests the pairs into JSON.

use serde_json::{Map, Value};

/// Splits `data[FIELDS][ID]` into `["data", "FIELDS", "ID"]`; `a[]` gives
/// an empty last segment. `None` when the brackets are unbalanced.
pub fn split_key(key: &str) -> Option<Vec<&str>> {
    let (head, mut rest) = match key.find('[') {
        Some(i) => (&key[..i], &key[i..]),
        None => return if key.contains(']') { None } else { Some(vec![key]) },
    };
    if head.is_empty() || head.contains(']') {
        return None;
    }
    let mut parts = vec![head];
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let end = inner.find(']')?;
        let part = &inner[..end];
        if part.contains('[') {
            return None;
        }
        parts.push(part);
        rest = &inner[end + 1..];
    }
    Some(parts)
}

/// Nests decoded pairs into one JSON object. `a[]=x&a[]=y` becomes an
/// array; a later scalar for a key already holding an object wins (PHP
/// does the same). Unbalanced keys are kept flat under their full text.
pub fn nest<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Value {
    let mut root = Value::Object(Map::new());
    for (key, value) in pairs {
        match split_key(key) {
            Some(parts) => insert(&mut root, &parts, value),
            None => insert(&mut root, &[key], value),
        }
    }
    root
}

fn insert(node: &mut Value, parts: &[&str], value: &str) {
    let Some((first, rest)) = parts.split_first() else {
        *node = Value::String(value.to_owned());
        return;
    };
    if first.is_empty() {
        if !node.is_array() {
            *node = Value::Array(Vec::new());
        }
        let items = node.as_array_mut().expect("just made an array");
        let mut child = Value::Null;
        insert(&mut child, rest, value);
        items.push(child);
        return;
    }
    if !node.is_object() {
        *node = Value::Object(Map::new());
    }
    let map = node.as_object_mut().expect("just made an object");
    let child = map.entry((*first).to_owned()).or_insert(Value::Null);
    insert(child, rest, value);
}

/// Parses an `a=1&b[c]=2` query into nested JSON.
pub fn parse_query(query: &str) -> Value {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    nest(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// Encodes JSON params as a bracketed query (`fields[TITLE]=x`), the way
/// `batch` command strings carry them.
pub fn to_query(params: &Value) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    fn walk(prefix: &str, value: &Value, out: &mut form_urlencoded::Serializer<'_, String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}[{k}]") };
                    walk(&key, v, out);
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
            Value::Bool(b) => {
                out.append_pair(prefix, if *b { "Y" } else { "N" });
            }
            Value::Number(n) => {
                out.append_pair(prefix, &n.to_string());
            }
        }
    }
    walk("", params, &mut out);
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_split_on_brackets() {
        assert_eq!(split_key("data[FIELDS][ID]"), Some(vec!["data", "FIELDS", "ID"]));
        assert_eq!(split_key("event"), Some(vec!["event"]));
        assert_eq!(split_key("a[]"), Some(vec!["a", ""]));
        assert_eq!(split_key("a[b"), None);
        assert_eq!(split_key("[b]"), None);
        assert_eq!(split_key("a]b"), None);
        assert_eq!(split_key("a[b]c"), None);
    }

    #[test]
    fn percent_encoded_brackets_nest_too() {
        let v = parse_query("event=X&data%5BFIELDS%5D%5BID%5D=7&select[]=ID&select[]=TITLE");
        assert_eq!(v, json!({"event": "X", "data": {"FIELDS": {"ID": "7"}}, "select": ["ID", "TITLE"]}));
    }

    #[test]
    fn queries_round_trip_through_json() {
        let params = json!({"id": 5, "fields": {"TITLE": "a&b [x]", "UF_CRM_TASK": ["D_5"]}});
        let back = parse_query(&to_query(&params));
        assert_eq!(back, json!({"id": "5", "fields": {"TITLE": "a&b [x]", "UF_CRM_TASK": {"0": "D_5"}}}));
    }
}
