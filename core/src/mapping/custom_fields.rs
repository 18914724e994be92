//! The custom fields a deal binding fills, and the map a mapped record
//! carries them in.
//!
//! An observation holds its custom fields in a `BTreeMap` keyed by name.
//! Collecting it per record from `(name, value)` pairs sorts the names and
//! compares them again while building the tree. The names are the
//! binding's own, so their order is known when the binding compiles: each
//! custom field gets its place in that order once, and a record's map is a
//! copy of an all-`null` map of the binding's names with the values moved
//! in, in order. Copying a map shares the names (`Arc<str>`): it neither
//! copies nor compares them.

use std::sync::Arc;

use serde_json::Value;

use crate::model::CustomFields;

/// The binding's custom field names, each with a `null` value.
#[derive(Debug, Clone, Default)]
pub(crate) struct CustomFieldsTemplate {
    empty: CustomFields,
}

/// The custom values one record maps to, by the place of their field in
/// the binding's `CustomFieldsTemplate`.
pub(crate) struct CustomValues {
    /// `null` for a field the record does not set: no mapped value is
    /// `null` (values are texts, booleans or lists).
    values: Vec<Value>,
    /// How many of `values` are set.
    set: usize,
}

impl CustomFieldsTemplate {
    /// The names, in any order and with repeats.
    pub(crate) fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        Self { empty: names.into_iter().map(|name| (Arc::from(name), Value::Null)).collect() }
    }

    /// Where `name`'s value goes in `CustomValues`, if it is one of the
    /// binding's custom fields.
    pub(crate) fn place(&self, name: &str) -> Option<usize> {
        self.empty.keys().position(|k| &**k == name)
    }

    /// Room for one record's values, none set.
    pub(crate) fn values(&self) -> CustomValues {
        CustomValues { values: vec![Value::Null; self.empty.len()], set: 0 }
    }

    /// The map an observation carries: the fields `values` sets, by name.
    pub(crate) fn fill(&self, values: CustomValues) -> CustomFields {
        if values.set == 0 {
            return CustomFields::new();
        }
        let mut map = self.empty.clone();
        for (held, value) in map.values_mut().zip(values.values) {
            *held = value;
        }
        // Fields the record leaves unset are not in its observation.
        if values.set < map.len() {
            map.retain(|_, value| !value.is_null());
        }
        map
    }
}

impl CustomValues {
    /// Sets the value at `place` (from `CustomFieldsTemplate::place`); a
    /// later value for the same field replaces the earlier one.
    pub(crate) fn set(&mut self, place: usize, value: Value) {
        debug_assert!(!value.is_null(), "a mapped custom value is never null");
        let slot = &mut self.values[place];
        if slot.is_null() {
            self.set += 1;
        }
        *slot = value;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// What the binding did before: collect the pairs into the map.
    fn collected(pairs: &[(&str, Value)]) -> CustomFields {
        pairs.iter().map(|(name, value)| (Arc::from(*name), value.clone())).collect()
    }

    #[test]
    fn filled_maps_equal_collected_ones() {
        let names = ["source", "cost", "begin_date", "zeta", "cost", "Алфавит"];
        let template = CustomFieldsTemplate::new(names);
        let cases: Vec<Vec<(&str, Value)>> = vec![
            vec![],
            vec![("cost", json!("12.50"))],
            vec![("zeta", json!(true)), ("source", json!("web")), ("Алфавит", json!(["a", "b"]))],
            vec![("source", json!("a")), ("cost", json!("1")), ("begin_date", json!("2025-01-01"))],
            vec![("cost", json!("1")), ("cost", json!("2"))],
            names.iter().map(|n| (*n, json!(n.len()))).collect(),
        ];
        for pairs in cases {
            let mut values = template.values();
            for (name, value) in &pairs {
                values.set(template.place(name).expect("a binding's field"), value.clone());
            }
            assert_eq!(template.fill(values), collected(&pairs), "{pairs:?}");
        }
        assert_eq!(template.place("other"), None);
    }
}
