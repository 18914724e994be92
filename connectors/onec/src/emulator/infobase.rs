//! The emulator's in-memory infobase: objects by entity set, with
//! `Ref_Key`, `DataVersion`, `Number`, `Posted`, and the subset of OData
//! `$filter` 1C integrations use (`eq ne gt ge lt le` joined by `and`, on
//! `guid'…'`, `datetime'…'`, `'text'`, numbers and booleans).

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::{Map, Value, json};

use crate::kinds::{EMPTY_REF, is_guid};

/// A refusal as 1C would answer it.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl Refusal {
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self { status, code: code.to_owned(), message: message.into() }
    }

    /// The `odata.error` body.
    pub fn body(&self) -> Value {
        json!({ "odata.error": { "code": self.code, "message": { "lang": "ru", "value": self.message } } })
    }
}

#[derive(Default)]
pub struct Infobase {
    sets: BTreeMap<String, Vec<Map<String, Value>>>,
    versions: u64,
    numbers: u64,
}

impl Infobase {
    fn next_version(&mut self) -> String {
        self.versions += 1;
        base64::engine::general_purpose::STANDARD.encode(self.versions.to_be_bytes())
    }

    pub fn all(&self, set: &str) -> &[Map<String, Value>] {
        self.sets.get(set).map(Vec::as_slice).unwrap_or_default()
    }

    pub fn get(&self, set: &str, ref_key: &str) -> Option<&Map<String, Value>> {
        self.all(set).iter().find(|o| o.get("Ref_Key").and_then(Value::as_str) == Some(ref_key))
    }

    /// Any catalog object with this reference (to expand `<X>_Key`).
    pub fn catalog_object(&self, ref_key: &str) -> Option<&Map<String, Value>> {
        if ref_key == EMPTY_REF {
            return None;
        }
        self.sets
            .iter()
            .filter(|(s, _)| s.starts_with("Catalog_"))
            .find_map(|(_, objects)| objects.iter().find(|o| o.get("Ref_Key").and_then(Value::as_str) == Some(ref_key)))
    }

    pub fn create(&mut self, set: &str, mut object: Map<String, Value>) -> Result<Map<String, Value>, Refusal> {
        let ref_key = match object.get("Ref_Key").and_then(Value::as_str) {
            Some(r) if is_guid(r) && r != EMPTY_REF => r.to_owned(),
            Some(r) => return Err(Refusal::new(400, "-1", format!("Неверное значение Ref_Key: {r}"))),
            None => uuid::Uuid::new_v4().to_string(),
        };
        if self.get(set, &ref_key).is_some() {
            return Err(Refusal::new(400, "-1", format!("Объект с ключом {ref_key} уже существует")));
        }
        if object.contains_key("Posted") && set.starts_with("Document_") && object["Posted"] == json!(true) {
            return Err(Refusal::new(400, "-1", "Проведение при создании не поддерживается: используйте Post"));
        }
        number_rows(&mut object);
        object.insert("Ref_Key".into(), json!(ref_key));
        object.insert("DataVersion".into(), json!(self.next_version()));
        object.entry("DeletionMark").or_insert(json!(false));
        if set.starts_with("Document_") {
            self.numbers += 1;
            object.entry("Number").or_insert(json!(format!("0000-{:06}", self.numbers)));
            object.entry("Date").or_insert(json!(chrono::Local::now().format("%Y-%m-%dT%H:%M:%S").to_string()));
            object.insert("Posted".into(), json!(false));
        }
        self.sets.entry(set.to_owned()).or_default().push(object.clone());
        Ok(object)
    }

    pub fn update(
        &mut self,
        set: &str,
        ref_key: &str,
        changes: Map<String, Value>,
        if_match: Option<&str>,
    ) -> Result<Map<String, Value>, Refusal> {
        let version = self.next_version();
        let object = self.get_mut(set, ref_key)?;
        if let Some(expected) = if_match.filter(|v| *v != "*")
            && object.get("DataVersion").and_then(Value::as_str) != Some(expected)
        {
            return Err(Refusal::new(412, "-1", "Версия объекта изменилась (DataVersion не совпадает)"));
        }
        let mut changes = changes;
        for key in ["Ref_Key", "DataVersion", "Posted"] {
            changes.remove(key);
        }
        number_rows(&mut changes);
        object.extend(changes);
        object.insert("DataVersion".into(), json!(version));
        Ok(object.clone())
    }

    pub fn post(&mut self, set: &str, ref_key: &str) -> Result<Map<String, Value>, Refusal> {
        if !set.starts_with("Document_") {
            return Err(Refusal::new(400, "-1", format!("{set} не является документом")));
        }
        let version = self.next_version();
        let object = self.get_mut(set, ref_key)?;
        if object.get("DeletionMark") == Some(&json!(true)) {
            return Err(Refusal::new(500, "-1", "Помеченный на удаление документ не может быть проведен"));
        }
        object.insert("Posted".into(), json!(true));
        object.insert("DataVersion".into(), json!(version));
        Ok(object.clone())
    }

    fn get_mut(&mut self, set: &str, ref_key: &str) -> Result<&mut Map<String, Value>, Refusal> {
        self.sets
            .get_mut(set)
            .and_then(|objects| objects.iter_mut().find(|o| o.get("Ref_Key").and_then(Value::as_str) == Some(ref_key)))
            .ok_or_else(|| Refusal::new(404, "-1", format!("Объект {set}(guid'{ref_key}') не найден")))
    }
}

/// Rows of tabular sections without a `LineNumber` get theirs, as 1C
/// numbers rows it stores.
fn number_rows(object: &mut Map<String, Value>) {
    for value in object.values_mut() {
        if let Value::Array(rows) = value {
            for (i, row) in rows.iter_mut().enumerate() {
                if let Value::Object(row) = row {
                    row.entry("LineNumber").or_insert(json!((i + 1).to_string()));
                }
            }
        }
    }
}

/// One comparison of a `$filter`.
#[derive(Debug, Clone, PartialEq)]
struct Condition {
    field: String,
    op: String,
    value: Value,
}

/// A parsed `$filter`: all conditions must hold.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Filter(Vec<Condition>);

impl Filter {
    pub fn parse(text: &str) -> Result<Self, Refusal> {
        let bad = |m: String| Refusal::new(400, "-1", format!("Ошибка разбора $filter: {m}"));
        let mut conditions = Vec::new();
        for part in split_and(text) {
            let part = part.trim();
            let mut words = part.splitn(3, ' ');
            let (Some(field), Some(op), Some(literal)) = (words.next(), words.next(), words.next()) else {
                return Err(bad(format!("`{part}`")));
            };
            if !["eq", "ne", "gt", "ge", "lt", "le"].contains(&op) {
                return Err(bad(format!("оператор `{op}` не поддерживается")));
            }
            let value = literal_value(literal.trim()).ok_or_else(|| bad(format!("литерал `{literal}`")))?;
            conditions.push(Condition { field: field.to_owned(), op: op.to_owned(), value });
        }
        Ok(Self(conditions))
    }

    pub fn matches(&self, object: &Map<String, Value>) -> bool {
        self.0.iter().all(|c| {
            let current = object.get(&c.field).unwrap_or(&Value::Null);
            let ordering = compare(current, &c.value);
            match c.op.as_str() {
                "eq" => ordering == Some(std::cmp::Ordering::Equal),
                "ne" => ordering != Some(std::cmp::Ordering::Equal),
                "gt" => ordering == Some(std::cmp::Ordering::Greater),
                "ge" => matches!(ordering, Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)),
                "lt" => ordering == Some(std::cmp::Ordering::Less),
                _ => matches!(ordering, Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal)),
            }
        })
    }
}

/// Splits on ` and ` outside quotes.
fn split_and(text: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut quoted = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c == '\'' {
            quoted = !quoted;
        }
        if !quoted && rest.starts_with(" and ") {
            parts.push(String::new());
            rest = &rest[5..];
            continue;
        }
        parts.last_mut().expect("one part").push(c);
        rest = &rest[c.len_utf8()..];
    }
    parts
}

fn literal_value(literal: &str) -> Option<Value> {
    let quoted = |prefix: &str| {
        literal.strip_prefix(prefix).and_then(|r| r.strip_prefix('\'')).and_then(|r| r.strip_suffix('\''))
    };
    if let Some(g) = quoted("guid") {
        return is_guid(g).then(|| json!(g));
    }
    if let Some(d) = quoted("datetime") {
        return chrono::NaiveDateTime::parse_from_str(d, "%Y-%m-%dT%H:%M:%S").ok().map(|_| json!(d));
    }
    if let Some(s) = quoted("") {
        return Some(json!(s.replace("''", "'")));
    }
    match literal {
        "true" => Some(json!(true)),
        "false" => Some(json!(false)),
        other => other.parse::<f64>().ok().map(|n| json!(n)),
    }
}

fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_select_by_dates_guids_and_text() {
        let filter =
            Filter::parse("Date ge datetime'2024-01-01T00:00:00' and Сценарий eq 'Продажа' and Posted eq false")
                .unwrap();
        let object = |date: &str, scenario: &str| {
            json!({"Date": date, "Сценарий": scenario, "Posted": false}).as_object().unwrap().clone()
        };
        assert!(filter.matches(&object("2024-03-20T10:00:00", "Продажа")));
        assert!(!filter.matches(&object("2023-12-31T23:59:59", "Продажа")));
        assert!(!filter.matches(&object("2024-03-20T10:00:00", "Работы")));
        let quoted = Filter::parse("Description eq 'Rock and roll''s'").unwrap();
        assert!(quoted.matches(json!({"Description": "Rock and roll's"}).as_object().unwrap()));
        assert_eq!(Filter::parse("substringof('x', Description)").unwrap_err().status, 400);
        assert!(Filter::parse("Ref_Key eq guid'zzz'").is_err());
    }

    #[test]
    fn versions_change_with_every_write_and_if_match_guards_them() {
        let mut base = Infobase::default();
        let created = base.create("Document_ЗаказКлиента", Map::new()).unwrap();
        let id = created["Ref_Key"].as_str().unwrap().to_owned();
        let v1 = created["DataVersion"].as_str().unwrap().to_owned();
        let changes = json!({"Товары": [{"Сумма": 1}]}).as_object().unwrap().clone();
        let updated = base.update("Document_ЗаказКлиента", &id, changes.clone(), Some(&v1)).unwrap();
        assert_ne!(updated["DataVersion"], json!(v1));
        assert_eq!(updated["Товары"][0]["LineNumber"], "1");
        assert_eq!(base.update("Document_ЗаказКлиента", &id, changes, Some(&v1)).unwrap_err().status, 412);
        assert_eq!(base.post("Document_ЗаказКлиента", &id).unwrap()["Posted"], json!(true));
        assert_eq!(base.post("Document_ЗаказКлиента", "8b9660f6-6332-11ec-ad72-000c29b45b09").unwrap_err().status, 404);
    }
}
