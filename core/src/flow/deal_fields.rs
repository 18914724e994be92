//! Reading and writing a deal's fields by their canonical path (`title`,
//! `amount`, `client.inn`, `custom.cost`), as flows copy and set them.
//! Values travel as JSON so a field copied from a child to its parent keeps
//! its exact form (money as its decimal text, lists as lists).

use serde_json::Value;

use crate::model::{Client, Deal, Inn, Money};

/// A field's current value; `Null` when unset.
pub fn read(deal: &Deal, path: &str) -> Value {
    let client = deal.client.as_ref();
    match path {
        "title" => Value::from(deal.title.as_str()),
        "amount" => deal.amount.as_ref().map_or(Value::Null, money_json),
        "responsible" => deal.responsible.as_deref().map_or(Value::Null, Value::from),
        "client" => client.map_or(Value::Null, |c| serde_json::to_value(c).unwrap_or(Value::Null)),
        "client.name" => client.map_or(Value::Null, |c| Value::from(c.name.as_str())),
        "client.inn" => client.and_then(|c| c.inn.as_ref()).map_or(Value::Null, |i| Value::from(i.as_str())),
        "client.kpp" => client.and_then(|c| c.kpp.as_deref()).map_or(Value::Null, Value::from),
        "client.emails" => client.map_or(Value::Null, |c| Value::from(c.emails.clone())),
        "client.phones" => client.map_or(Value::Null, |c| Value::from(c.phones.clone())),
        other => match other.strip_prefix("custom.") {
            Some(name) => deal.custom_fields.get(name).cloned().unwrap_or(Value::Null),
            None => Value::Null,
        },
    }
}

/// Money as JSON, `{"amount": "1.50", "currency": "RUB"}`: what
/// `serde_json::to_value` gives, without going through a serializer.
pub(crate) fn money_json(money: &Money) -> Value {
    let mut object = serde_json::Map::new();
    object.insert("amount".to_owned(), Value::String(crate::model::decimal_text(money.amount)));
    object.insert("currency".to_owned(), Value::String(money.currency.clone()));
    Value::Object(object)
}

/// Sets a field; returns whether the value changed. `Null` clears it.
pub fn write(deal: &mut Deal, path: &str, value: Value) -> Result<bool, String> {
    if read(deal, path) == value {
        return Ok(false);
    }
    write_different(deal, path, value)?;
    Ok(true)
}

/// `write` for a value the caller has already found to differ from
/// `read(deal, path)`.
pub(crate) fn write_different(deal: &mut Deal, path: &str, value: Value) -> Result<(), String> {
    match path {
        "title" => deal.title = text(&value),
        "amount" => deal.amount = money(&value, deal.amount.as_ref())?,
        "responsible" => deal.responsible = (!value.is_null()).then(|| text(&value)),
        "client" => {
            deal.client = if value.is_null() {
                None
            } else {
                Some(serde_json::from_value(value).map_err(|e| format!("`client`: {e}"))?)
            }
        }
        client_field if client_field.starts_with("client.") => write_client(deal, client_field, value)?,
        other => match other.strip_prefix("custom.") {
            Some(name) if value.is_null() => {
                deal.custom_fields.remove(name);
            }
            Some(name) => {
                deal.custom_fields.insert(name.into(), value);
            }
            None => return Err(format!("unknown field `{other}`")),
        },
    }
    Ok(())
}

fn write_client(deal: &mut Deal, path: &str, value: Value) -> Result<(), String> {
    let client = deal.client.get_or_insert_with(Client::default);
    match path {
        "client.name" => client.name = text(&value),
        "client.inn" if value.is_null() => client.inn = None,
        "client.inn" => client.inn = Some(Inn::new(&text(&value))),
        "client.kpp" => client.kpp = (!value.is_null()).then(|| text(&value)),
        "client.emails" => client.emails = list(&value),
        "client.phones" => client.phones = list(&value),
        other => return Err(format!("unknown field `{other}`")),
    }
    Ok(())
}

/// Money from `{"amount": "1.5", "currency": "RUB"}`, `"1.5 RUB"`, or a bare
/// decimal (text or number) in the deal's current currency.
fn money(value: &Value, current: Option<&Money>) -> Result<Option<Money>, String> {
    if value.is_null() {
        return Ok(None);
    }
    if value.is_object() {
        return serde_json::from_value(value.clone()).map(Some).map_err(|e| format!("`amount`: {e}"));
    }
    let raw = text(value);
    if let Ok(parsed) = raw.parse::<Money>() {
        return Ok(Some(parsed));
    }
    let amount = raw.trim().parse().map_err(|_| format!("`amount`: `{raw}` is not a decimal amount"))?;
    let currency = current.map_or("RUB", |m| m.currency.as_str());
    Money::new(amount, currency).map(Some).map_err(|e| format!("`amount`: {e}"))
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn list(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => items.iter().map(text).collect(),
        Value::Null => Vec::new(),
        other => vec![text(other)],
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;

    use super::*;

    #[test]
    fn money_and_custom_fields_round_trip() {
        let mut child = Deal::new("engineering", "calculated", Utc::now(), "t");
        child.amount = Some("245000.50 RUB".parse().unwrap());
        child.custom_fields.insert("services".into(), json!(["Монтаж"]));
        let mut parent = Deal::new("sales", "calculation", Utc::now(), "t");
        for field in ["amount", "custom.services"] {
            assert!(write(&mut parent, field, read(&child, field)).unwrap());
            assert!(!write(&mut parent, field, read(&child, field)).unwrap(), "a second copy changes nothing");
        }
        assert_eq!(parent.amount, child.amount);
        assert_eq!(parent.custom_fields["services"], json!(["Монтаж"]));
    }

    #[test]
    fn money_json_is_the_serialized_form() {
        for text in ["1250.50 RUB", "0 USD", "-0.01 EUR", "1234567.8900 RUB", "79228162514264337593543950335 RUB"] {
            let money: Money = text.parse().unwrap();
            assert_eq!(money_json(&money), serde_json::to_value(&money).unwrap(), "{text}");
        }
    }

    #[test]
    fn a_bare_amount_keeps_the_currency_and_a_bad_one_is_an_error() {
        let mut deal = Deal::new("sales", "new", Utc::now(), "t");
        deal.amount = Some("1 USD".parse().unwrap());
        write(&mut deal, "amount", json!("18500.00")).unwrap();
        assert_eq!(deal.amount.as_ref().unwrap().to_string(), "18500.00 USD");
        assert!(write(&mut deal, "amount", json!("много")).is_err());
    }
}
