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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePath {
    text: String,
    segments: Vec<Segment>,
}

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
        Ok(Self { text: text.to_owned(), segments })
    }

    /// A path of one key, taken literally.
    pub fn key(name: &str) -> Self {
        Self { text: name.to_owned(), segments: vec![Segment::Key(name.to_owned())] }
    }

    /// Whether the path has `[*]` and so yields a list.
    pub fn is_list(&self) -> bool {
        self.segments.contains(&Segment::Every)
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The single value at the path, if any (for paths without `[*]`; for
    /// one with `[*]`, the first value it reaches).
    pub fn get<'v>(&self, record: &'v serde_json::Value) -> Option<&'v serde_json::Value> {
        // Every record field of every binding goes through here, so a path
        // without `[*]` is walked in place rather than through `get_all`.
        let mut current = record;
        for (position, segment) in self.segments.iter().enumerate() {
            current = match (segment, current) {
                (Segment::Key(k), serde_json::Value::Object(map)) => map.get(k)?,
                (Segment::Index(i), serde_json::Value::Array(items)) => items.get(*i)?,
                (Segment::Every, _) => return self.get_all_from(position, current).into_iter().next(),
                _ => return None,
            };
        }
        Some(current)
    }

    /// Every value the path reaches; missing branches are skipped.
    pub fn get_all<'v>(&self, record: &'v serde_json::Value) -> Vec<&'v serde_json::Value> {
        self.get_all_from(0, record)
    }

    /// Every value the segments from `start` on reach from `value`.
    fn get_all_from<'v>(&self, start: usize, value: &'v serde_json::Value) -> Vec<&'v serde_json::Value> {
        let mut current = vec![value];
        for segment in &self.segments[start..] {
            current = current
                .into_iter()
                .flat_map(|value| -> Vec<&serde_json::Value> {
                    match (segment, value) {
                        (Segment::Key(k), serde_json::Value::Object(map)) => map.get(k).into_iter().collect(),
                        (Segment::Index(i), serde_json::Value::Array(items)) => items.get(*i).into_iter().collect(),
                        (Segment::Every, serde_json::Value::Array(items)) => items.iter().collect(),
                        _ => Vec::new(),
                    }
                })
                .collect();
        }
        current
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
