//! Binding filters, compiled once per mapping set.
//!
//! A filter runs on every incoming record, so it must not parse itself or
//! convert the whole record each time: the set compiles every filter into
//! one environment when it loads, and a filter that reads the record only
//! through dotted keys (`record.CATEGORY_ID`) is given just those keys.
//! One that indexes it (`record['Сценарий']`) gets the whole record.
//!
//! The common filter — `record.KEY == 'text'`, possibly several joined by
//! `and` — is also evaluated natively when the key holds text (or nothing),
//! which is where minijinja's answer is plain string equality. Anything
//! else, or a key holding a number, a list or an object, goes to minijinja.

use std::collections::BTreeMap;

use minijinja::value::{Serde, Value};
use minijinja::{Environment, UndefinedBehavior};

/// Bounds the work of one filter evaluation.
const FUEL: u64 = 10_000;

/// The compiled filters of a set.
#[derive(Debug)]
pub struct FilterRuntime {
    env: Environment<'static>,
    /// Per filter source: the record keys it reads, or `None` for all.
    keys: BTreeMap<String, Option<Vec<String>>>,
    /// Per filter source: its native form, when it has one.
    native: BTreeMap<String, Conjunction>,
}

/// `record.KEY == 'text'` (or `!=`), every one of them true.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Conjunction(Vec<Comparison>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Comparison {
    key: String,
    text: String,
    equal: bool,
}

impl Conjunction {
    /// Parses the filters it can answer exactly; `None` for the rest.
    fn parse(filter: &str) -> Option<Self> {
        let mut comparisons = Vec::new();
        let mut rest = filter.trim();
        loop {
            let (comparison, after) = Comparison::parse(rest)?;
            comparisons.push(comparison);
            rest = after.trim_start();
            if rest.is_empty() {
                return Some(Self(comparisons));
            }
            rest = rest.strip_prefix("and")?;
            if !rest.starts_with(char::is_whitespace) {
                return None;
            }
            rest = rest.trim_start();
        }
    }

    /// `Some(answer)` when every key read holds text or nothing; `None`
    /// when minijinja has to decide.
    fn accepts(&self, record: &serde_json::Value) -> Option<bool> {
        let mut all = true;
        for comparison in &self.0 {
            let same = match record.get(&comparison.key) {
                None | Some(serde_json::Value::Null) => false,
                Some(serde_json::Value::String(s)) => *s == comparison.text,
                Some(_) => return None,
            };
            all &= same == comparison.equal;
        }
        Some(all)
    }
}

impl Comparison {
    /// `record.KEY == 'text'` at the start of `input`, and what follows.
    fn parse(input: &str) -> Option<(Self, &str)> {
        let rest = input.strip_prefix("record.")?;
        let key_end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
        let key = &rest[..key_end];
        if key.is_empty() || key.starts_with(|c: char| c.is_ascii_digit()) {
            return None;
        }
        let rest = rest[key_end..].trim_start();
        let (equal, rest) = match (rest.strip_prefix("=="), rest.strip_prefix("!=")) {
            (Some(r), _) => (true, r),
            (_, Some(r)) => (false, r),
            _ => return None,
        };
        let rest = rest.trim_start();
        let quote = rest.chars().next().filter(|q| *q == '\'' || *q == '"')?;
        let body = &rest[1..];
        let close = body.find(quote)?;
        let text = &body[..close];
        // Escapes are minijinja's business.
        if text.contains('\\') {
            return None;
        }
        Some((Self { key: key.to_owned(), text: text.to_owned(), equal }, &body[close + 1..]))
    }
}

impl FilterRuntime {
    /// Compiles `filters` (already validated by the loader).
    pub fn compile<'a>(filters: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut env = Environment::new();
        env.set_fuel(Some(FUEL));
        env.set_undefined_behavior(UndefinedBehavior::Lenient);
        let mut keys = BTreeMap::new();
        let mut native = BTreeMap::new();
        for filter in filters {
            if keys.contains_key(filter) {
                continue;
            }
            let read = env.compile_expression(filter).map_err(|e| format!("filter `{filter}`: {e}"))?;
            let keys_read = record_keys(read.undeclared_variables(true));
            env.add_template_owned(filter.to_owned(), format!("{{% if ({filter}) %}}1{{% endif %}}"))
                .map_err(|e| format!("filter `{filter}`: {e}"))?;
            keys.insert(filter.to_owned(), keys_read);
            if let Some(conjunction) = Conjunction::parse(filter) {
                native.insert(filter.to_owned(), conjunction);
            }
        }
        Ok(Self { env, keys, native })
    }

    /// Whether `record` passes `filter`.
    pub fn accepts(&self, filter: &str, record: &serde_json::Value) -> Result<bool, String> {
        if let Some(answer) = self.native.get(filter).and_then(|c| c.accepts(record)) {
            return Ok(answer);
        }
        self.accepts_by_template(filter, record)
    }

    /// `accepts`, always through minijinja.
    fn accepts_by_template(&self, filter: &str, record: &serde_json::Value) -> Result<bool, String> {
        let template = self.env.get_template(filter).map_err(|e| format!("not compiled: {e}"))?;
        let record_value = match self.keys.get(filter).and_then(Option::as_ref) {
            Some(keys) => Value::from(
                keys.iter()
                    .map(|k| (k.clone(), record.get(k).map_or(Value::UNDEFINED, |v| Value::from(Serde(v)))))
                    .collect::<BTreeMap<String, Value>>(),
            ),
            None => Value::from(Serde(record)),
        };
        let rendered = template.render(minijinja::context! { record => record_value }).map_err(|e| e.to_string())?;
        Ok(rendered == "1")
    }
}

/// The top-level record keys a filter reads, when it reads it only as
/// `record.KEY…`; `None` when it uses `record` any other way.
fn record_keys(variables: std::collections::HashSet<String>) -> Option<Vec<String>> {
    let mut keys = Vec::new();
    for variable in variables {
        match variable.split('.').collect::<Vec<_>>().as_slice() {
            ["record"] => return None,
            ["record", key, ..] => keys.push((*key).to_owned()),
            _ => {}
        }
    }
    keys.sort();
    keys.dedup();
    Some(keys)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn dotted_and_indexed_filters_give_the_same_answers() {
        let filters = ["record.CATEGORY_ID == '0'", "record['Сценарий'] == 'Продажа' and not record.DeletionMark"];
        let runtime = FilterRuntime::compile(filters).unwrap();
        assert_eq!(runtime.keys[filters[0]], Some(vec!["CATEGORY_ID".to_owned()]));
        assert_eq!(runtime.keys[filters[1]], None, "indexing needs the whole record");
        assert!(runtime.accepts(filters[0], &json!({"CATEGORY_ID": "0", "X": 1})).unwrap());
        assert!(!runtime.accepts(filters[0], &json!({"CATEGORY_ID": "1"})).unwrap());
        assert!(!runtime.accepts(filters[0], &json!({})).unwrap(), "a missing key is undefined, not an error");
        assert!(runtime.accepts(filters[1], &json!({"Сценарий": "Продажа", "DeletionMark": false})).unwrap());
        assert!(!runtime.accepts(filters[1], &json!({"Сценарий": "Продажа", "DeletionMark": true})).unwrap());
    }

    #[test]
    fn native_answers_are_minijinja_answers() {
        let filters = [
            "record.CATEGORY_ID == '0'",
            "record.CATEGORY_ID != \"0\"",
            "record.TYPE == 'SALE'  and record.CATEGORY_ID=='0'",
            "record.A == 'x' or record.B == 'y'",
            "record.A == 'it\\'s'",
        ];
        let runtime = FilterRuntime::compile(filters).unwrap();
        assert_eq!(runtime.native.len(), 3, "{:?}", runtime.native.keys());
        assert_eq!(Conjunction::parse("record.A == 'x' andrecord.B == 'y'"), None);
        assert_eq!(Conjunction::parse("record.Вид == 'x'"), None, "non-ASCII keys go to minijinja");
        let records = [
            json!({"CATEGORY_ID": "0", "TYPE": "SALE"}),
            json!({"CATEGORY_ID": "1", "TYPE": "SALE"}),
            json!({"CATEGORY_ID": 0, "TYPE": "SALE"}),
            json!({"CATEGORY_ID": null}),
            json!({"CATEGORY_ID": "0 "}),
            json!({"CATEGORY_ID": ["0"], "TYPE": {"a": 1}}),
            json!({}),
            json!([1, 2]),
            json!("text"),
        ];
        for filter in filters {
            for record in &records {
                assert_eq!(
                    runtime.accepts(filter, record),
                    runtime.accepts_by_template(filter, record),
                    "{filter} on {record}"
                );
            }
        }
    }
}
