//! Conversions: small pure functions that turn what a system sends into
//! canonical values (`"1 234 567,89"` → `1234567.89`, `"01.02.2024"` → a
//! date). Money is parsed into `Decimal`, never a float.

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone};
use rust_decimal::Decimal;

use super::spec::Conversion;

/// A source value on its way to a canonical field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldValue {
    Text(String),
    Number(Decimal),
    Date(NaiveDate),
    DateTime(DateTime<FixedOffset>),
    Bool(bool),
}

/// Why a value could not be converted; the caller adds binding and field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("`{0}` is not a number")]
    NotANumber(String),
    #[error("`{0}` is not a date (expected dd.mm.yyyy or yyyy-mm-dd)")]
    NotADate(String),
    #[error("`{0}` is not a date-time with an offset (expected e.g. 2024-02-01T10:00:00+03:00)")]
    NotADateTime(String),
    #[error("`{0}` is not a local date-time (expected e.g. 2024-02-01T10:00:00 or 01.02.2024 10:00)")]
    NotALocalDateTime(String),
    #[error("`{value}` does not exist in time zone {zone} (a daylight-saving gap)")]
    NonexistentLocalTime { value: String, zone: String },
    #[error("unknown time zone `{0}`")]
    UnknownZone(String),
    #[error("`{0}` is not a yes/no value")]
    NotABoolean(String),
    #[error("`{value}` is not in lookup table `{table}`")]
    NotInLookup { table: String, value: String },
    #[error("unknown lookup table `{0}`")]
    UnknownLookup(String),
}

impl FieldValue {
    /// The value as text: what a text field stores and a lookup is keyed by.
    pub fn to_text(&self) -> String {
        match self {
            FieldValue::Text(s) => s.clone(),
            FieldValue::Number(d) => d.to_string(),
            FieldValue::Date(d) => d.format("%Y-%m-%d").to_string(),
            FieldValue::DateTime(t) => t.to_rfc3339(),
            FieldValue::Bool(b) => b.to_string(),
        }
    }

    /// The value as a custom-field JSON value. Numbers become decimal
    /// strings, like canonical money, so no JSON consumer rounds them.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            FieldValue::Bool(b) => serde_json::Value::Bool(*b),
            other => serde_json::Value::String(other.to_text()),
        }
    }

    /// Reads one scalar from a source record; `None` for null and blank
    /// text, which count as "not set" everywhere.
    pub fn from_json(value: &serde_json::Value) -> Result<Option<FieldValue>, String> {
        match value {
            serde_json::Value::Null => Ok(None),
            serde_json::Value::String(s) if s.trim_matches(is_blank).is_empty() => Ok(None),
            serde_json::Value::String(s) => Ok(Some(FieldValue::Text(s.clone()))),
            serde_json::Value::Bool(b) => Ok(Some(FieldValue::Bool(*b))),
            // serde_json keeps integers exact; a fractional JSON number has
            // already been through f64 in the sender and the parser, so its
            // shortest decimal text is the best that can be recovered.
            serde_json::Value::Number(n) => {
                let text = n.to_string();
                Decimal::from_str(&text)
                    .or_else(|_| Decimal::from_scientific(&text))
                    .map(|d| Some(FieldValue::Number(d)))
                    .map_err(|_| format!("number `{text}` is out of range"))
            }
            serde_json::Value::Array(_) => Err("expected a single value, found a list".into()),
            serde_json::Value::Object(_) => Err("expected a single value, found an object".into()),
        }
    }
}

fn is_blank(c: char) -> bool {
    c.is_whitespace() || c == '\u{00A0}' || c == '\u{202F}' || c == '\u{2007}'
}

/// Applies one conversion. `Ok(None)` means the value became empty
/// (`empty_if`), which counts as "not set".
pub fn apply(
    conversion: &Conversion,
    value: FieldValue,
    lookups: &BTreeMap<String, BTreeMap<String, String>>,
) -> Result<FieldValue, ConvertError> {
    Ok(match conversion {
        Conversion::Trim => FieldValue::Text(value.to_text().trim_matches(is_blank).to_owned()),
        Conversion::Upper => FieldValue::Text(value.to_text().to_uppercase()),
        Conversion::Lower => FieldValue::Text(value.to_text().to_lowercase()),
        Conversion::Decimal => match value {
            FieldValue::Number(d) => FieldValue::Number(d),
            other => FieldValue::Number(parse_decimal(&other.to_text())?),
        },
        Conversion::Date => match value {
            FieldValue::Date(d) => FieldValue::Date(d),
            FieldValue::DateTime(t) => FieldValue::Date(t.date_naive()),
            other => FieldValue::Date(parse_date(&other.to_text())?),
        },
        Conversion::Datetime => match value {
            FieldValue::DateTime(t) => FieldValue::DateTime(t),
            other => FieldValue::DateTime(parse_datetime(&other.to_text())?),
        },
        Conversion::LocalDatetime(zone) => match value {
            FieldValue::DateTime(t) => FieldValue::DateTime(t),
            other => FieldValue::DateTime(parse_local_datetime(&other.to_text(), zone)?),
        },
        Conversion::Boolean => match value {
            FieldValue::Bool(b) => FieldValue::Bool(b),
            other => FieldValue::Bool(parse_bool(&other.to_text())?),
        },
        Conversion::Lookup(table) => {
            let entries = lookups.get(table).ok_or_else(|| ConvertError::UnknownLookup(table.clone()))?;
            let key = value.to_text();
            match entries.get(&key) {
                Some(found) => FieldValue::Text(found.clone()),
                None => return Err(ConvertError::NotInLookup { table: table.clone(), value: key }),
            }
        }
        Conversion::StripPrefix(prefix) => {
            let text = value.to_text();
            FieldValue::Text(text.strip_prefix(prefix.as_str()).unwrap_or(&text).to_owned())
        }
        Conversion::EmptyIf(_) => value,
    })
}

/// Gives a `default:` its field's type. A default is a canonical value, so
/// only the conversions that decide the type (decimal, dates, boolean) run
/// on it; lookups, prefixes and case changes are for source values.
pub fn typed_default(
    default: &str,
    conversions: &[Conversion],
    lookups: &BTreeMap<String, BTreeMap<String, String>>,
) -> Result<FieldValue, ConvertError> {
    let mut value = FieldValue::Text(default.to_owned());
    for conversion in conversions {
        if matches!(
            conversion,
            Conversion::Decimal
                | Conversion::Date
                | Conversion::Datetime
                | Conversion::LocalDatetime(_)
                | Conversion::Boolean
        ) {
            value = apply(conversion, value, lookups)?;
        }
    }
    Ok(value)
}

/// Whether an `empty_if` conversion turns this value into "not set".
pub fn is_emptied(conversion: &Conversion, value: &FieldValue) -> bool {
    matches!(conversion, Conversion::EmptyIf(marker) if value.to_text() == *marker)
}

/// Parses a decimal written the way people and 1C write it: `1234.5`,
/// `1 234,50`, `1.234.567,89`, `1,234,567.89`, NBSP or apostrophes as
/// thousands separators.
pub fn parse_decimal(raw: &str) -> Result<Decimal, ConvertError> {
    let bad = || ConvertError::NotANumber(raw.to_owned());
    let compact: String = raw.chars().filter(|c| !is_blank(*c) && *c != '\'' && *c != '’').collect();
    let compact = compact.replace('\u{2212}', "-");
    let commas = compact.matches(',').count();
    let dots = compact.matches('.').count();
    // With both separators the last one is the decimal separator; with one
    // kind, a single occurrence is decimal and several are thousands.
    let normalized = match (commas, dots) {
        (0, 0) => compact,
        (_, 0) if commas == 1 => compact.replace(',', "."),
        (_, 0) => compact.replace(',', ""),
        (0, 1) => compact,
        (0, _) => compact.replace('.', ""),
        _ if compact.rfind(',') > compact.rfind('.') && commas == 1 => compact.replace('.', "").replace(',', "."),
        _ if compact.rfind('.') > compact.rfind(',') && dots == 1 => compact.replace(',', ""),
        _ => return Err(bad()),
    };
    let digits = normalized.strip_prefix(['-', '+']).unwrap_or(&normalized);
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    let well_formed = !int_part.is_empty()
        && int_part.bytes().all(|b| b.is_ascii_digit())
        && frac_part.bytes().all(|b| b.is_ascii_digit())
        && !(digits.contains('.') && frac_part.is_empty());
    if !well_formed {
        return Err(bad());
    }
    Decimal::from_str(&normalized).map_err(|_| bad())
}

/// Parses `dd.mm.yyyy`, `yyyy-mm-dd`, or takes the date of a date-time as
/// written (in its own offset).
pub fn parse_date(raw: &str) -> Result<NaiveDate, ConvertError> {
    let text = raw.trim_matches(is_blank);
    for format in ["%d.%m.%Y", "%Y-%m-%d"] {
        if let Ok(date) = NaiveDate::parse_from_str(text, format) {
            return Ok(date);
        }
    }
    if let Ok(t) = parse_datetime(text) {
        return Ok(t.date_naive());
    }
    if let Ok(t) = parse_naive_datetime(text) {
        return Ok(t.date());
    }
    Err(ConvertError::NotADate(raw.to_owned()))
}

/// Parses a date-time that carries its offset.
pub fn parse_datetime(raw: &str) -> Result<DateTime<FixedOffset>, ConvertError> {
    let text = raw.trim_matches(is_blank);
    DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%:z"))
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%z"))
        .map_err(|_| ConvertError::NotADateTime(raw.to_owned()))
}

fn parse_naive_datetime(text: &str) -> Result<NaiveDateTime, ()> {
    const FORMATS: [&str; 6] = [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%d.%m.%Y %H:%M:%S",
        "%d.%m.%Y %H:%M",
        "%Y-%m-%d %H:%M",
    ];
    FORMATS.iter().find_map(|f| NaiveDateTime::parse_from_str(text, f).ok()).ok_or(())
}

/// Parses a local date-time (no offset) in an IANA zone. A value that
/// already has an offset keeps it.
pub fn parse_local_datetime(raw: &str, zone: &str) -> Result<DateTime<FixedOffset>, ConvertError> {
    let tz: chrono_tz::Tz = zone.parse().map_err(|_| ConvertError::UnknownZone(zone.to_owned()))?;
    if let Ok(t) = parse_datetime(raw) {
        return Ok(t);
    }
    let naive = parse_naive_datetime(raw.trim_matches(is_blank))
        .map_err(|_| ConvertError::NotALocalDateTime(raw.to_owned()))?;
    // In an autumn overlap the earlier instant is taken: it is the one the
    // clock showed first.
    tz.from_local_datetime(&naive)
        .earliest()
        .map(|t| t.fixed_offset())
        .ok_or_else(|| ConvertError::NonexistentLocalTime { value: raw.to_owned(), zone: zone.to_owned() })
}

/// Parses yes/no values as Bitrix24 (`Y`/`N`), 1C and people write them.
pub fn parse_bool(raw: &str) -> Result<bool, ConvertError> {
    match raw.trim_matches(is_blank).to_lowercase().as_str() {
        "y" | "yes" | "true" | "1" | "да" => Ok(true),
        "n" | "no" | "false" | "0" | "нет" => Ok(false),
        _ => Err(ConvertError::NotABoolean(raw.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn decimals_with_comma_dot_and_thousands_separators() {
        assert_eq!(parse_decimal("1 234 567,89").unwrap(), dec("1234567.89"));
        assert_eq!(parse_decimal("1\u{00A0}234\u{00A0}567,89").unwrap(), dec("1234567.89"));
        assert_eq!(parse_decimal("1\u{202F}234,5").unwrap(), dec("1234.5"));
        assert_eq!(parse_decimal("1234.50").unwrap(), dec("1234.50"));
        assert_eq!(parse_decimal("1,234,567.89").unwrap(), dec("1234567.89"));
        assert_eq!(parse_decimal("1.234.567,89").unwrap(), dec("1234567.89"));
        assert_eq!(parse_decimal("1'234'567.89").unwrap(), dec("1234567.89"));
        assert_eq!(parse_decimal(" -12,5 ").unwrap(), dec("-12.5"));
        assert_eq!(parse_decimal("+7").unwrap(), dec("7"));
        assert_eq!(parse_decimal("1.000.000").unwrap(), dec("1000000"));
        assert_eq!(parse_decimal("0,01").unwrap(), dec("0.01"));
    }

    #[test]
    fn malformed_decimals_are_refused() {
        for bad in ["", "abc", "12,34,56.7.8", "1.2.3,4,5", "1,", "12a", "--1", ",5", "1 000 руб"] {
            assert!(parse_decimal(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn dates_in_russian_iso_and_datetime_forms() {
        let feb1 = NaiveDate::from_ymd_opt(2024, 2, 1).unwrap();
        assert_eq!(parse_date("01.02.2024").unwrap(), feb1);
        assert_eq!(parse_date("2024-02-01").unwrap(), feb1);
        assert_eq!(parse_date("2024-02-01T23:30:00+03:00").unwrap(), feb1, "the date as written, not UTC");
        assert_eq!(parse_date("2024-02-01T10:00:00").unwrap(), feb1, "1C dates have no offset");
        assert!(parse_date("31.02.2024").is_err());
        assert!(parse_date("2024/02/01").is_err());
    }

    #[test]
    fn datetimes_keep_their_offset() {
        let t = parse_datetime("2024-02-01T10:00:00+03:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2024-02-01T10:00:00+03:00");
        assert_eq!(t.naive_utc().to_string(), "2024-02-01 07:00:00");
        assert_eq!(parse_datetime("2024-02-01T07:00:00Z").unwrap(), t);
        assert!(parse_datetime("2024-02-01T10:00:00").is_err(), "no offset is not guessed");
    }

    #[test]
    fn local_datetimes_take_the_zone_offset() {
        let t = parse_local_datetime("01.02.2024 10:00", "Europe/Moscow").unwrap();
        assert_eq!(t.to_rfc3339(), "2024-02-01T10:00:00+03:00");
        let t = parse_local_datetime("2024-07-01T10:00:00", "Europe/Berlin").unwrap();
        assert_eq!(t.to_rfc3339(), "2024-07-01T10:00:00+02:00");
        assert!(matches!(
            parse_local_datetime("2024-03-31T02:30:00", "Europe/Berlin"),
            Err(ConvertError::NonexistentLocalTime { .. })
        ));
        assert!(matches!(parse_local_datetime("x", "Mars/Base"), Err(ConvertError::UnknownZone(_))));
    }

    #[test]
    fn text_conversions_and_lookups() {
        let lookups = BTreeMap::from([("cur".to_owned(), BTreeMap::from([("RUR".to_owned(), "RUB".to_owned())]))]);
        let text = |s: &str| FieldValue::Text(s.to_owned());
        assert_eq!(apply(&Conversion::Trim, text("\u{00A0} a b \n"), &lookups).unwrap(), text("a b"));
        assert_eq!(apply(&Conversion::Upper, text("ооо ромашка"), &lookups).unwrap(), text("ООО РОМАШКА"));
        assert_eq!(apply(&Conversion::Lower, text("A@B.RU"), &lookups).unwrap(), text("a@b.ru"));
        assert_eq!(apply(&Conversion::Lookup("cur".into()), text("RUR"), &lookups).unwrap(), text("RUB"));
        assert_eq!(
            apply(&Conversion::Lookup("cur".into()), text("XXX"), &lookups),
            Err(ConvertError::NotInLookup { table: "cur".into(), value: "XXX".into() })
        );
        assert_eq!(apply(&Conversion::StripPrefix("D_".into()), text("D_42"), &lookups).unwrap(), text("42"));
        assert_eq!(apply(&Conversion::StripPrefix("D_".into()), text("42"), &lookups).unwrap(), text("42"));
        assert_eq!(apply(&Conversion::Boolean, text("Y"), &lookups).unwrap(), FieldValue::Bool(true));
        assert_eq!(apply(&Conversion::Boolean, text("нет"), &lookups).unwrap(), FieldValue::Bool(false));
        let number = apply(&Conversion::Decimal, FieldValue::Number(dec("5")), &lookups).unwrap();
        assert_eq!(apply(&Conversion::Trim, number, &lookups).unwrap(), text("5"));
        assert!(is_emptied(&Conversion::EmptyIf("0".into()), &text("0")));
    }

    #[test]
    fn json_scalars_are_read_without_floats() {
        assert_eq!(FieldValue::from_json(&serde_json::json!(" ")).unwrap(), None);
        assert_eq!(FieldValue::from_json(&serde_json::json!(null)).unwrap(), None);
        assert_eq!(FieldValue::from_json(&serde_json::json!(1250)).unwrap(), Some(FieldValue::Number(dec("1250"))));
        assert_eq!(FieldValue::from_json(&serde_json::json!(1250.1)).unwrap(), Some(FieldValue::Number(dec("1250.1"))));
        assert!(FieldValue::from_json(&serde_json::json!([1])).is_err());
        assert_eq!(FieldValue::Number(dec("1250.10")).to_json(), serde_json::json!("1250.10"));
    }
}
