//! Binding filters, compiled once per mapping set.
//!
//! A filter runs on every incoming record, so it must not parse itself or
//! convert the whole record each time: the set compiles every filter into
//! one environment when it loads, and a filter that reads the record only
//! through dotted keys (`record.CATEGORY_ID`) is given just those keys.
//! One that indexes it (`record['Сценарий']`) gets the whole record.

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
}

impl FilterRuntime {
    /// Compiles `filters` (already validated by the loader).
    pub fn compile<'a>(filters: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut env = Environment::new();
        env.set_fuel(Some(FUEL));
        env.set_undefined_behavior(UndefinedBehavior::Lenient);
        let mut keys = BTreeMap::new();
        for filter in filters {
            if keys.contains_key(filter) {
                continue;
            }
            let read = env.compile_expression(filter).map_err(|e| format!("filter `{filter}`: {e}"))?;
            let keys_read = record_keys(read.undeclared_variables(true));
            env.add_template_owned(filter.to_owned(), format!("{{% if ({filter}) %}}1{{% endif %}}"))
                .map_err(|e| format!("filter `{filter}`: {e}"))?;
            keys.insert(filter.to_owned(), keys_read);
        }
        Ok(Self { env, keys })
    }

    /// Whether `record` passes `filter`.
    pub fn accepts(&self, filter: &str, record: &serde_json::Value) -> Result<bool, String> {
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
}
