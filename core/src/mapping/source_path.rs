//! Source paths: where a value sits in a source record. Dotted keys,
//! `[n]` for the n-th array item (from 0) and `[*]` for every item:
//! `TITLE`, `Контрагент.ИНН`, `Товары[0].Сумма`, `EMAIL[*].VALUE`.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
    Every,
}

/// A parsed source path.
#[derive(Debug, Clone)]
pub struct SourcePath {
    text: String,
    segments: Vec<Segment>,
    /// Position of the first key in its binding's `RecordKeys`, when the
    /// binding looked the key up for all its paths in one walk.
    slot: Option<usize>,
}

/// Two paths are equal when they read the same place; where a binding
/// keeps the first key is not part of that.
impl PartialEq for SourcePath {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text && self.segments == other.segments
    }
}

impl Eq for SourcePath {}

impl SourcePath {
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("source path `{text}`: {why}");
        let mut segments = Vec::new();
        let mut rest = text;
        let mut expect_key = true;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('[') {
                let close = after.find(']').ok_or_else(|| bad("`[` without `]`"))?;
                let inside = after[..close].trim();
                segments.push(if inside == "*" {
                    Segment::Every
                } else {
                    Segment::Index(inside.parse().map_err(|_| bad("write `[0]`, `[1]`, … or `[*]`"))?)
                });
                rest = &after[close + 1..];
                expect_key = false;
            } else if let Some(after) = rest.strip_prefix('.') {
                if expect_key {
                    return Err(bad("empty key"));
                }
                rest = after;
                expect_key = true;
                if rest.is_empty() {
                    return Err(bad("ends with `.`"));
                }
            } else {
                if !expect_key {
                    return Err(bad("a key must follow `.`"));
                }
                let end = rest.find(['.', '[', ']']).unwrap_or(rest.len());
                if end == 0 {
                    return Err(bad("unexpected `]`"));
                }
                segments.push(Segment::Key(rest[..end].to_owned()));
                rest = &rest[end..];
                expect_key = false;
            }
        }
        if segments.is_empty() {
            return Err("source path is empty".to_owned());
        }
        Ok(Self { text: text.to_owned(), segments, slot: None })
    }

    /// A path of one key, taken literally.
    pub fn key(name: &str) -> Self {
        Self { text: name.to_owned(), segments: vec![Segment::Key(name.to_owned())], slot: None }
    }

    /// Whether the path has `[*]` and so yields a list.
    pub fn is_list(&self) -> bool {
        self.segments.contains(&Segment::Every)
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The top-level key the path starts with, if it starts with one.
    pub(crate) fn first_key(&self) -> Option<&str> {
        match self.segments.first() {
            Some(Segment::Key(k)) => Some(k),
            _ => None,
        }
    }

    /// Tells the path where its binding's `RecordKeys` keep its first key.
    pub(crate) fn set_slot(&mut self, slot: usize) {
        self.slot = Some(slot);
    }

    /// The single value at the path, if any (for paths without `[*]`; for
    /// one with `[*]`, the first value it reaches).
    pub fn get<'v>(&self, record: &'v serde_json::Value) -> Option<&'v serde_json::Value> {
        self.walk(0, record)
    }

    /// `get`, with the first key already looked up in `top` (the values of
    /// the binding's record keys) when the path has a slot there.
    pub(crate) fn get_in<'v>(
        &self,
        record: &'v serde_json::Value,
        top: &super::record_keys::TopValues<'v>,
    ) -> Option<&'v serde_json::Value> {
        match top.get(self.slot) {
            // Most paths are one key: its value is the path's.
            Some(first) if self.segments.len() == 1 => first,
            Some(first) => self.walk(1, first?),
            None => self.get(record),
        }
    }

    /// Walks the segments from `start` on, in place: every record field of
    /// every binding goes through here, so nothing is collected.
    fn walk<'v>(&self, start: usize, value: &'v serde_json::Value) -> Option<&'v serde_json::Value> {
        let mut current = value;
        for (position, segment) in self.segments.iter().enumerate().skip(start) {
            current = match (segment, current) {
                (Segment::Key(k), serde_json::Value::Object(map)) => map.get(k)?,
                (Segment::Index(i), serde_json::Value::Array(items)) => items.get(*i)?,
                (Segment::Every, _) => {
                    let mut first = None;
                    self.visit(position, current, &mut |v| {
                        first.get_or_insert(v);
                    });
                    return first;
                }
                _ => return None,
            };
        }
        Some(current)
    }

    /// Every value the path reaches; missing branches are skipped.
    pub fn get_all<'v>(&self, record: &'v serde_json::Value) -> Vec<&'v serde_json::Value> {
        let mut all = Vec::new();
        self.visit(0, record, &mut |v| all.push(v));
        all
    }

    /// `get_all`, one value at a time, with the first key looked up in
    /// `top` as `get_in` does.
    pub(crate) fn for_each_in<'v>(
        &self,
        record: &'v serde_json::Value,
        top: &super::record_keys::TopValues<'v>,
        each: &mut dyn FnMut(&'v serde_json::Value),
    ) {
        match top.get(self.slot) {
            Some(Some(first)) => self.visit(1, first, each),
            Some(None) => {}
            None => self.visit(0, record, each),
        }
    }

    /// `for_each_in` that keeps list items aligned: one call per item of
    /// the `[*]` list, `None` where an item lacks the rest of the path, so
    /// two paths into the same table line up item by item.
    pub(crate) fn for_each_item_in<'v>(
        &self,
        record: &'v serde_json::Value,
        top: &super::record_keys::TopValues<'v>,
        each: &mut dyn FnMut(Option<&'v serde_json::Value>),
    ) {
        match top.get(self.slot) {
            Some(Some(first)) => self.visit_items(1, first, false, each),
            Some(None) => {}
            None => self.visit_items(0, record, false, each),
        }
    }

    fn visit_items<'v>(
        &self,
        start: usize,
        value: &'v serde_json::Value,
        in_item: bool,
        each: &mut dyn FnMut(Option<&'v serde_json::Value>),
    ) {
        let mut current = value;
        for (position, segment) in self.segments.iter().enumerate().skip(start) {
            let next = match (segment, current) {
                (Segment::Key(k), serde_json::Value::Object(map)) => map.get(k),
                (Segment::Index(i), serde_json::Value::Array(items)) => items.get(*i),
                (Segment::Every, serde_json::Value::Array(items)) => {
                    for item in items {
                        self.visit_items(position + 1, item, true, each);
                    }
                    return;
                }
                _ => None,
            };
            match next {
                Some(v) => current = v,
                None if in_item => return each(None),
                None => return,
            }
        }
        each(Some(current));
    }

    /// Calls `each` with every value the segments from `start` on reach
    /// from `value`, in order, without building a list per segment.
    fn visit<'v>(&self, start: usize, value: &'v serde_json::Value, each: &mut dyn FnMut(&'v serde_json::Value)) {
        let mut current = value;
        for (position, segment) in self.segments.iter().enumerate().skip(start) {
            current = match (segment, current) {
                (Segment::Key(k), serde_json::Value::Object(map)) => match map.get(k) {
                    Some(v) => v,
                    None => return,
                },
                (Segment::Index(i), serde_json::Value::Array(items)) => match items.get(*i) {
                    Some(v) => v,
                    None => return,
                },
                (Segment::Every, serde_json::Value::Array(items)) => {
                    for item in items {
                        self.visit(position + 1, item, each);
                    }
                    return;
                }
                _ => return,
            };
        }
        each(current);
    }
}

impl fmt::Display for SourcePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn dotted_keys_indexes_and_wildcards() {
        let record = json!({
            "ID": "42",
            "Контрагент": {"ИНН": "7707083893"},
            "Товары": [{"Сумма": 10}, {"Сумма": 20}],
            "EMAIL": [{"VALUE": "a@b.ru"}, {"VALUE": "c@d.ru"}]
        });
        let get = |p: &str| SourcePath::parse(p).unwrap().get(&record).cloned();
        assert_eq!(get("ID"), Some(json!("42")));
        assert_eq!(get("Контрагент.ИНН"), Some(json!("7707083893")));
        assert_eq!(get("Товары[1].Сумма"), Some(json!(20)));
        assert_eq!(get("Товары[5].Сумма"), None);
        assert_eq!(get("ID.x"), None);
        let all = SourcePath::parse("EMAIL[*].VALUE").unwrap();
        assert!(all.is_list());
        assert_eq!(all.get_all(&record), vec![&json!("a@b.ru"), &json!("c@d.ru")]);
    }

    #[test]
    fn malformed_paths_are_refused() {
        for bad in ["", ".a", "a.", "a..b", "a[", "a[x]", "a]", "a[0]b", "[-1]"] {
            assert!(SourcePath::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(SourcePath::parse("[0].a").is_ok(), "a record may be an array");
    }
}
