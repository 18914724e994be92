//! A binding's top-level record keys, looked up in one ordered walk.
//!
//! A binding reads a record through twenty-odd paths, and a record has
//! forty-odd keys. Looking each path's first key up in the record's map is
//! a search per path; walking the record's keys once beside the binding's
//! own sorted keys finds them all with about one comparison per key. Both
//! lists are in the same (byte) order: serde_json's map is a `BTreeMap`
//! unless its `preserve_order` feature is on, which `RecordKeys` checks
//! once and then looks each key up instead.

use std::cmp::Ordering;

use serde_json::Value;

/// The first keys of a binding's paths, sorted and without repeats.
#[derive(Debug, Clone, Default)]
pub(crate) struct RecordKeys {
    keys: Vec<String>,
    /// Whether serde_json maps iterate in key order (see the module doc).
    ordered: bool,
}

/// The values of a binding's record keys in one record, by slot.
pub(crate) struct TopValues<'v> {
    /// Empty when the record is not an object: paths look themselves up.
    values: Vec<Option<&'v Value>>,
}

impl<'v> TopValues<'v> {
    /// `Some(value or absence)` for a path whose first key has a slot,
    /// `None` when the path has to look itself up.
    pub(crate) fn get(&self, slot: Option<usize>) -> Option<Option<&'v Value>> {
        slot.and_then(|s| self.values.get(s).copied())
    }
}

impl RecordKeys {
    /// The keys, in any order and with repeats.
    pub(crate) fn new<'a>(keys: impl IntoIterator<Item = &'a str>) -> Self {
        let mut keys: Vec<String> = keys.into_iter().map(str::to_owned).collect();
        keys.sort();
        keys.dedup();
        Self { keys, ordered: maps_iterate_in_key_order() }
    }

    /// Where `key` is kept.
    pub(crate) fn slot(&self, key: &str) -> Option<usize> {
        self.keys.binary_search_by(|k| k.as_str().cmp(key)).ok()
    }

    /// The values of every key in `record`.
    pub(crate) fn resolve<'v>(&self, record: &'v Value) -> TopValues<'v> {
        let Value::Object(map) = record else { return TopValues { values: Vec::new() } };
        let mut values = vec![None; self.keys.len()];
        if !self.ordered {
            for (slot, key) in self.keys.iter().enumerate() {
                values[slot] = map.get(key);
            }
            return TopValues { values };
        }
        let mut wanted = self.keys.iter().enumerate().peekable();
        'record: for (key, value) in map {
            while let Some((slot, want)) = wanted.peek() {
                match want.as_str().cmp(key.as_str()) {
                    // Not in the record.
                    Ordering::Less => {
                        wanted.next();
                    }
                    Ordering::Equal => {
                        values[*slot] = Some(value);
                        wanted.next();
                        continue 'record;
                    }
                    Ordering::Greater => continue 'record,
                }
            }
            break;
        }
        TopValues { values }
    }
}

/// Whether a serde_json map hands its keys out sorted (true without the
/// `preserve_order` feature, which some crate in a build may switch on).
fn maps_iterate_in_key_order() -> bool {
    let mut probe = serde_json::Map::new();
    probe.insert("b".to_owned(), Value::Null);
    probe.insert("a".to_owned(), Value::Null);
    probe.keys().next().is_some_and(|k| k == "a")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn one_walk_finds_what_lookups_find() {
        let keys = RecordKeys::new(["TITLE", "ID", "EMAIL", "ID", "Контрагент", "MISSING", "A", "ZZ"]);
        let records = [
            json!({"ID": "1", "TITLE": "x", "EMAIL": [], "Контрагент": {"ИНН": "1"}, "OTHER": 1, "B": null}),
            json!({"ZZ": 1}),
            json!({"A": 0, "AA": 1, "ZZZ": 2}),
            json!({}),
        ];
        for record in &records {
            let top = keys.resolve(record);
            for key in ["TITLE", "ID", "EMAIL", "Контрагент", "MISSING", "A", "ZZ"] {
                assert_eq!(top.get(keys.slot(key)), Some(record.get(key)), "{key} in {record}");
            }
        }
        assert_eq!(keys.resolve(&json!([1])).get(keys.slot("ID")), None, "not an object: paths look themselves up");
        assert_eq!(keys.slot("NOPE"), None);
    }
}
