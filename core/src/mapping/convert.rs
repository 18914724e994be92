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
            FieldValue::Number(d) => crate::model::decimal_text(*d),
            FieldValue::Date(d) => iso_date(*d),
            FieldValue::DateTime(t) => t.to_rfc3339(),
            FieldValue::Bool(b) => b.to_string(),
        }
    }

    /// `to_text`, without copying text that already is text.
    pub fn into_text(self) -> String {
        match self {
            FieldValue::Text(s) => s,
            FieldValue::Date(d) => iso_date(d),
            other => other.to_text(),
        }
    }

    /// `to_text`, borrowed when the value already is text.
    pub fn as_text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            FieldValue::Text(s) => std::borrow::Cow::Borrowed(s),
            other => std::borrow::Cow::Owned(other.to_text()),
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

    /// `to_json`, without copying text.
    pub fn into_json(self) -> serde_json::Value {
        match self {
            FieldValue::Bool(b) => serde_json::Value::Bool(b),
            other => serde_json::Value::String(other.into_text()),
        }
    }

    /// Reads one scalar from a source record; `None` for null and blank
    /// text, which count as "not set" everywhere.
    pub fn from_json(value: &serde_json::Value) -> Result<Option<FieldValue>, String> {
        match value {
            serde_json::Value::Null => Ok(None),
            serde_json::Value::String(s) if trim_blank(s).is_empty() => Ok(None),
            serde_json::Value::String(s) => Ok(Some(FieldValue::Text(s.clone()))),
            serde_json::Value::Bool(b) => Ok(Some(FieldValue::Bool(*b))),
            // Integers convert exactly, as their text would (scale 0).
            serde_json::Value::Number(n) if n.as_i64().is_some() => {
                Ok(Some(FieldValue::Number(Decimal::from(n.as_i64().expect("checked")))))
            }
            serde_json::Value::Number(n) if n.as_u64().is_some() => {
                Ok(Some(FieldValue::Number(Decimal::from(n.as_u64().expect("checked")))))
            }
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

/// Whether text is blank: "not set", as `FieldValue::from_json` and
/// `convert_text` read it.
pub(crate) fn is_blank_text(text: &str) -> bool {
    trim_blank(text).is_empty()
}

/// `text.trim_matches(is_blank)`. Most ends are ASCII, which is trimmed
/// byte by byte; a non-ASCII end (NBSP, …) takes the char-wise rule.
fn trim_blank(text: &str) -> &str {
    // `char::is_whitespace` on ASCII: tab, line feed, vertical tab, form
    // feed, carriage return and space.
    let ascii_blank = |b: u8| b == b' ' || (b'\t'..=b'\r').contains(&b);
    let bytes = text.as_bytes();
    let start = bytes.iter().position(|b| !ascii_blank(*b)).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !ascii_blank(*b)).map_or(start, |last| last + 1);
    // ASCII bytes never sit inside a UTF-8 sequence: both ends are char
    // boundaries.
    let rest = &text[start..end.max(start)];
    let bytes = rest.as_bytes();
    match (bytes.first(), last_char_lead(bytes)) {
        (Some(&first), Some(last)) if may_start_blank(first) || may_start_blank(last) => rest.trim_matches(is_blank),
        _ => rest,
    }
}

/// Whether a char whose UTF-8 encoding starts with `lead` may be blank,
/// for an end that ASCII trimming left: ASCII there is not blank, and a
/// non-ASCII blank (U+0085, U+00A0, U+1680, U+2000–U+200A, U+2028,
/// U+2029, U+202F, U+205F, U+3000) starts with one of four bytes. Text
/// that ends in letters (Cyrillic starts with 0xD0/0xD1) is not walked
/// char by char.
fn may_start_blank(lead: u8) -> bool {
    matches!(lead, 0xC2 | 0xE1 | 0xE2 | 0xE3)
}

/// The first byte of the last char of `bytes` (UTF-8).
fn last_char_lead(bytes: &[u8]) -> Option<u8> {
    // A char is at most four bytes; continuation bytes are 0b10xx_xxxx.
    bytes.iter().rev().take(4).copied().find(|b| b & 0xC0 != 0x80)
}

/// `yyyy-mm-dd`, as chrono's `%Y-%m-%d` writes it, without parsing the
/// format string for every value.
fn iso_date(date: NaiveDate) -> String {
    use chrono::Datelike;
    let (year, month, day) = (date.year(), date.month(), date.day());
    if !(0..=9999).contains(&year) {
        // Signed or five-digit years: chrono's rules, rarely needed.
        return date.format("%Y-%m-%d").to_string();
    }
    let mut out = String::with_capacity(10);
    for n in [year as u32 / 100, year as u32 % 100, month, day] {
        if out.len() == 4 || out.len() == 7 {
            out.push('-');
        }
        out.push(char::from(b'0' + (n / 10) as u8));
        out.push(char::from(b'0' + (n % 10) as u8));
    }
    out
}

/// Trims blanks in place: no new string when there is nothing to trim.
fn trim_in_place(mut text: String) -> String {
    let trimmed = trim_blank(&text);
    if trimmed.len() == text.len() {
        return text;
    }
    let start = trimmed.as_ptr() as usize - text.as_ptr() as usize;
    let end = start + trimmed.len();
    text.truncate(end);
    text.drain(..start);
    text
}

/// Upper or lower case, reusing the string when it is ASCII (the usual
/// case for codes), with `str::to_uppercase`'s rules otherwise.
fn change_case(mut text: String, upper: bool) -> String {
    if !text.is_ascii() {
        return if upper { text.to_uppercase() } else { text.to_lowercase() };
    }
    if upper {
        text.make_ascii_uppercase();
    } else {
        text.make_ascii_lowercase();
    }
    text
}

/// Applies one conversion. `Ok(None)` means the value became empty
/// (`empty_if`), which counts as "not set".
pub fn apply(
    conversion: &Conversion,
    value: FieldValue,
    lookups: &BTreeMap<String, BTreeMap<String, String>>,
) -> Result<FieldValue, ConvertError> {
    // Text is converted in place where it can be: this runs for every
    // field of every record.
    Ok(match conversion {
        Conversion::Trim => FieldValue::Text(trim_in_place(value.into_text())),
        Conversion::Upper => FieldValue::Text(change_case(value.into_text(), true)),
        Conversion::Lower => FieldValue::Text(change_case(value.into_text(), false)),
        Conversion::Decimal => match value {
            FieldValue::Number(d) => FieldValue::Number(d),
            other => FieldValue::Number(parse_decimal(&other.as_text())?),
        },
        Conversion::Date => match value {
            FieldValue::Date(d) => FieldValue::Date(d),
            FieldValue::DateTime(t) => FieldValue::Date(t.date_naive()),
            other => FieldValue::Date(parse_date(&other.as_text())?),
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
            let key = value.as_text();
            match entries.get(key.as_ref()) {
                Some(found) => FieldValue::Text(found.clone()),
                None => return Err(ConvertError::NotInLookup { table: table.clone(), value: key.into_owned() }),
            }
        }
        Conversion::StripPrefix(prefix) => {
            let mut text = value.into_text();
            if text.starts_with(prefix.as_str()) {
                text.drain(..prefix.len());
            }
            FieldValue::Text(text)
        }
        Conversion::EmptyIf(_) => value,
    })
}

/// Reads text from a source record and runs `conversions` on it, as
/// `FieldValue::from_json` and `apply` one by one would, but on borrowed
/// text until a conversion needs a new string: trimming, a case change
/// that changes nothing and a lookup copy nothing; decimals and dates are
/// parsed where the text lies. `Ok(None)`: blank, or emptied.
pub fn convert_text(
    raw: &str,
    conversions: &[Conversion],
    lookups: &BTreeMap<String, BTreeMap<String, String>>,
) -> Result<Option<FieldValue>, ConvertError> {
    use std::borrow::Cow;
    let trimmed = trim_blank(raw);
    if trimmed.is_empty() {
        return Ok(None);
    }
    let mut text: Cow<'_, str> = Cow::Borrowed(raw);
    for (position, conversion) in conversions.iter().enumerate() {
        text = match conversion {
            // The usual first step: the blank check has trimmed already.
            Conversion::Trim if position == 0 => Cow::Borrowed(trimmed),
            Conversion::EmptyIf(marker) if text == marker.as_str() => return Ok(None),
            Conversion::EmptyIf(_) => text,
            Conversion::Trim => match text {
                Cow::Borrowed(t) => Cow::Borrowed(trim_blank(t)),
                Cow::Owned(t) => Cow::Owned(trim_in_place(t)),
            },
            Conversion::Upper | Conversion::Lower => {
                let upper = matches!(conversion, Conversion::Upper);
                let unchanged = text.is_ascii()
                    && !text.bytes().any(|b| if upper { b.is_ascii_lowercase() } else { b.is_ascii_uppercase() });
                if unchanged { text } else { Cow::Owned(change_case(text.into_owned(), upper)) }
            }
            Conversion::Lookup(table) => {
                let entries = lookups.get(table).ok_or_else(|| ConvertError::UnknownLookup(table.clone()))?;
                match entries.get(text.as_ref()) {
                    Some(found) => Cow::Borrowed(found.as_str()),
                    None => return Err(ConvertError::NotInLookup { table: table.clone(), value: text.into_owned() }),
                }
            }
            Conversion::StripPrefix(prefix) => match text {
                Cow::Borrowed(t) => Cow::Borrowed(t.strip_prefix(prefix.as_str()).unwrap_or(t)),
                Cow::Owned(t) => Cow::Owned(apply(conversion, FieldValue::Text(t), lookups)?.into_text()),
            },
            // The value stops being text: the rest runs on `FieldValue`s.
            typed => {
                let mut value = match typed {
                    Conversion::Decimal => FieldValue::Number(parse_decimal(&text)?),
                    Conversion::Date => FieldValue::Date(parse_date(&text)?),
                    other => apply(other, FieldValue::Text(text.into_owned()), lookups)?,
                };
                for conversion in &conversions[position + 1..] {
                    if is_emptied(conversion, &value) {
                        return Ok(None);
                    }
                    value = apply(conversion, value, lookups)?;
                }
                return Ok(Some(value));
            }
        };
    }
    Ok(Some(FieldValue::Text(text.into_owned())))
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
    matches!(conversion, Conversion::EmptyIf(marker) if value.as_text() == marker.as_str())
}

/// Parses a decimal written the way people and 1C write it: `1234.5`,
/// `1 234,50`, `1.234.567,89`, `1,234,567.89`, NBSP or apostrophes as
/// thousands separators.
pub fn parse_decimal(raw: &str) -> Result<Decimal, ConvertError> {
    // The same rules as `parse_decimal_general`, on a stack buffer: amounts
    // are short and ASCII once blanks are gone. Anything else takes the
    // general path.
    const CAPACITY: usize = 64;
    let bad = || ConvertError::NotANumber(raw.to_owned());
    let mut compact = [0u8; CAPACITY];
    let Some(kept) = compact_ascii(raw, &mut compact) else { return parse_compact_chars(raw) };
    let compact = &compact[..kept.len];
    let (commas, dots) = (kept.commas, kept.dots);
    // (separator dropped as thousands, separator read as the decimal point)
    let (thousands, point) = match (commas, dots) {
        (0, 0) => (None, None),
        (_, 0) if commas == 1 => (None, Some(b',')),
        (_, 0) => (Some(b','), None),
        (0, 1) => (None, None),
        (0, _) => (Some(b'.'), None),
        _ if kept.last_comma > kept.last_dot && commas == 1 => (Some(b'.'), Some(b',')),
        _ if kept.last_dot > kept.last_comma && dots == 1 => (Some(b','), None),
        _ => return Err(bad()),
    };
    if let Some(decimal) = small_decimal(compact, thousands, point) {
        return Ok(decimal);
    }
    let mut normalized = [0u8; CAPACITY];
    let mut len = 0;
    for &b in compact {
        if Some(b) == thousands {
            continue;
        }
        normalized[len] = if Some(b) == point { b'.' } else { b };
        len += 1;
    }
    let normalized = std::str::from_utf8(&normalized[..len]).map_err(|_| bad())?;
    check_decimal_shape(normalized).ok_or_else(bad)?;
    Decimal::from_str(normalized).map_err(|_| bad())
}

/// What `compact_ascii` kept of a value: how many bytes, and how many of
/// each separator where (positions in the kept bytes), which decide how
/// the separators are read.
struct Compacted {
    len: usize,
    commas: usize,
    dots: usize,
    last_comma: Option<usize>,
    last_dot: Option<usize>,
}

/// The bytes `parse_decimal` keeps of `raw` (blanks and apostrophes
/// dropped), read byte by byte, into `out`, with its separators counted
/// in the same pass. `None` when a char needs the char-wise rules:
/// anything non-ASCII but the no-break space (the usual thousands
/// separator of 1C and Excel exports), or more than `out` holds.
fn compact_ascii(raw: &str, out: &mut [u8]) -> Option<Compacted> {
    let bytes = raw.as_bytes();
    let mut kept = Compacted { len: 0, commas: 0, dots: 0, last_comma: None, last_dot: None };
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        i += 1;
        match b {
            // `char::is_whitespace` on ASCII, and the apostrophe.
            b' ' | b'\t'..=b'\r' | b'\'' => continue,
            // U+00A0, NO-BREAK SPACE.
            0xC2 if bytes.get(i) == Some(&0xA0) => {
                i += 1;
                continue;
            }
            _ if !b.is_ascii() || kept.len == out.len() => return None,
            b',' => (kept.commas, kept.last_comma) = (kept.commas + 1, Some(kept.len)),
            b'.' => (kept.dots, kept.last_dot) = (kept.dots + 1, Some(kept.len)),
            _ => {}
        }
        out[kept.len] = b;
        kept.len += 1;
    }
    Some(kept)
}

/// `parse_decimal` when a char of `raw` is non-ASCII (other blanks, `’`,
/// the minus sign U+2212): the same rules, char by char.
fn parse_compact_chars(raw: &str) -> Result<Decimal, ConvertError> {
    const CAPACITY: usize = 64;
    let mut compact = String::with_capacity(raw.len());
    for c in raw.chars() {
        if is_blank(c) || c == '\'' || c == '’' {
            continue;
        }
        let c = if c == '\u{2212}' { '-' } else { c };
        if !c.is_ascii() || compact.len() == CAPACITY {
            return parse_decimal_general(raw);
        }
        compact.push(c);
    }
    // Only ASCII is left, which the byte-wise path reads the same way.
    parse_decimal(&compact).map_err(|_| ConvertError::NotANumber(raw.to_owned()))
}

/// The compacted bytes with `thousands` dropped and `point` read as the
/// decimal point, when that is a well-formed `[+-]digits[.digits]` of at
/// most 19 digits, as `Decimal::from_str` reads it (mantissa and scale as
/// written, no rounding), in one pass; `None` sends anything else to
/// `from_str`.
fn small_decimal(compact: &[u8], thousands: Option<u8>, point: Option<u8>) -> Option<Decimal> {
    let (mut negative, mut first) = (false, true);
    let (mut int_digits, mut frac_digits, mut in_fraction) = (0u32, 0u32, false);
    let mut mantissa = 0u64;
    for &b in compact {
        if Some(b) == thousands {
            continue;
        }
        let b = if Some(b) == point { b'.' } else { b };
        // A sign counts only in front.
        if std::mem::take(&mut first) && (b == b'-' || b == b'+') {
            negative = b == b'-';
            continue;
        }
        match b {
            b'0'..=b'9' if int_digits + frac_digits < 19 => {
                mantissa = mantissa * 10 + u64::from(b - b'0');
                if in_fraction {
                    frac_digits += 1;
                } else {
                    int_digits += 1;
                }
            }
            b'.' if !in_fraction => in_fraction = true,
            _ => return None,
        }
    }
    if int_digits == 0 || (in_fraction && frac_digits == 0) {
        return None;
    }
    // `from_parts` keeps no sign on zero, as `from_str` does not.
    Some(Decimal::from_parts(mantissa as u32, (mantissa >> 32) as u32, 0, negative, frac_digits))
}

/// `[+-]digits[.digits]`, as `Decimal::from_str` should see it.
fn check_decimal_shape(normalized: &str) -> Option<()> {
    let digits = normalized.strip_prefix(['-', '+']).unwrap_or(normalized);
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    let well_formed = !int_part.is_empty()
        && int_part.bytes().all(|b| b.is_ascii_digit())
        && frac_part.bytes().all(|b| b.is_ascii_digit())
        && !(digits.contains('.') && frac_part.is_empty());
    well_formed.then_some(())
}

/// `parse_decimal` for any input (non-ASCII text, very long values).
fn parse_decimal_general(raw: &str) -> Result<Decimal, ConvertError> {
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
    check_decimal_shape(&normalized).ok_or_else(bad)?;
    Decimal::from_str(&normalized).map_err(|_| bad())
}

/// Parses `dd.mm.yyyy`, `yyyy-mm-dd`, or takes the date of a date-time as
/// written (in its own offset).
pub fn parse_date(raw: &str) -> Result<NaiveDate, ConvertError> {
    let text = trim_blank(raw);
    if let Some(date) = exact_date(text) {
        return Ok(date);
    }
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

/// A valid `dd.mm.yyyy` or `yyyy-mm-dd` with every digit written, read
/// without chrono's format parser; `None` leaves the value to it.
fn exact_date(text: &str) -> Option<NaiveDate> {
    let b = text.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        b[range].iter().try_fold(0u32, |n, &d| d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0')))
    };
    if b.len() != 10 {
        return None;
    }
    let (year, month, day) = match (b[2], b[5], b[4], b[7]) {
        (b'.', b'.', _, _) => (number(6..10)?, number(3..5)?, number(0..2)?),
        (_, _, b'-', b'-') => (number(0..4)?, number(5..7)?, number(8..10)?),
        _ => return None,
    };
    NaiveDate::from_ymd_opt(year as i32, month, day)
}

/// Parses a date-time that carries its offset.
pub fn parse_datetime(raw: &str) -> Result<DateTime<FixedOffset>, ConvertError> {
    let text = trim_blank(raw);
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
    let naive = parse_naive_datetime(trim_blank(raw)).map_err(|_| ConvertError::NotALocalDateTime(raw.to_owned()))?;
    // In an autumn overlap the earlier instant is taken: it is the one the
    // clock showed first.
    tz.from_local_datetime(&naive)
        .earliest()
        .map(|t| t.fixed_offset())
        .ok_or_else(|| ConvertError::NonexistentLocalTime { value: raw.to_owned(), zone: zone.to_owned() })
}

/// Parses yes/no values as Bitrix24 (`Y`/`N`), 1C and people write them.
pub fn parse_bool(raw: &str) -> Result<bool, ConvertError> {
    match trim_blank(raw).to_lowercase().as_str() {
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
    fn every_non_ascii_blank_starts_with_a_byte_trimming_checks() {
        let mut utf8 = [0u8; 4];
        for c in (0x80..=0x10FFFF).filter_map(char::from_u32).filter(|c| is_blank(*c)) {
            let lead = c.encode_utf8(&mut utf8).as_bytes()[0];
            assert!(may_start_blank(lead), "{c:?} starts with {lead:#x}");
        }
    }

    #[test]
    fn trimming_any_mix_of_ends_is_the_char_rule() {
        let pieces =
            ["", " ", "\t", "\u{a0}", "\u{2007}", "\u{3000}", "\u{85}", "a", "Я", "ё", "€", "😀", "x y", "\u{202f}"];
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    let text = format!("{a}{b}{c}");
                    assert_eq!(trim_blank(&text), text.trim_matches(is_blank), "{text:?}");
                }
            }
        }
    }

    #[test]
    fn the_fast_decimal_paths_read_as_the_general_one() {
        // splitmix64: deterministic inputs from a small alphabet of what
        // amounts are written with, and of what breaks them.
        let mut state = 0x5EED_u64;
        let mut next = move || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let alphabet = [
            "0", "1", "2", "5", "9", "0", "7", "3", ",", ".", " ", "\u{a0}", "-", "+", "'", "’", "\u{2212}",
            "\u{202f}", "e", "00", "999", "\t",
        ];
        let mut inputs: Vec<String> = [
            "-0",
            "-0.00",
            "+0",
            "0.000",
            "007.50",
            "1 234 567,89",
            "1\u{a0}234,5",
            "18446744073709551615",
            "9999999999999999999",
            "99999999999999999999",
            "0.0000000000000000000000000001",
            "1.",
            ".5",
            "-",
            "1,234,567.89",
            "1.234.567,89",
            "12'345.6",
            "\u{2212}5,25",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        for _ in 0..50_000 {
            let len = 1 + next() % 14;
            inputs.push((0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect());
        }
        for input in &inputs {
            let (fast, general) = (parse_decimal(input), parse_decimal_general(input));
            assert_eq!(fast, general, "{input:?}");
            if let (Ok(a), Ok(b)) = (fast, general) {
                assert_eq!(a.serialize(), b.serialize(), "same bits: {input:?}");
            }
        }
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
        assert_eq!(parse_decimal("\u{2212}5,5").unwrap(), dec("-5.5"));
        let long = format!("{},5", "1".repeat(70));
        assert_eq!(parse_decimal(&long), parse_decimal_general(&long), "long values take the general path");
        let samples = "1 234 567,89|1,234.5|1.234,5|12,34,56.7.8|+7|-0,00|1.|١٢|0|-0|0.000|007,50|-5|+0,5|\
                       999999999999999999|9999999999999999999|-123456789012345678|1.0000000000000000000000000001";
        for raw in samples.split('|') {
            let (fast, general) = (parse_decimal(raw), parse_decimal_general(raw));
            assert_eq!(fast, general, "{raw:?}");
            if let (Ok(fast), Ok(general)) = (fast, general) {
                assert_eq!((fast.scale(), fast.is_sign_negative()), (general.scale(), general.is_sign_negative()));
            }
        }
    }

    #[test]
    fn blank_trimming_is_the_char_rule() {
        let samples = [
            "",
            " ",
            "  a  ",
            "\t\n\x0b\x0c\r x \r\n",
            "\u{00A0}1 234\u{00A0}",
            " \u{00A0} x \u{202F} ",
            "\u{2007}",
            "\u{0085}x\u{3000}",
            "ООО «Ромашка» ",
            " Сделка",
            "x\u{00A0}",
            "\u{00A0}",
            "a b",
            "\x1f x \x1f",
        ];
        for sample in samples {
            assert_eq!(trim_blank(sample), sample.trim_matches(is_blank), "{sample:?}");
        }
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
        assert_eq!(parse_date("1.02.2024").unwrap(), feb1, "chrono's forms still parse");
        assert!(parse_date("2024-13-01").is_err());
        assert_eq!(FieldValue::Date(feb1).to_text(), "2024-02-01");
        let early = NaiveDate::from_ymd_opt(33, 1, 9).unwrap();
        assert_eq!(FieldValue::Date(early).to_text(), early.format("%Y-%m-%d").to_string());
        let start = NaiveDate::from_ymd_opt(1999, 11, 28).unwrap();
        for date in (0..800).map(|n| start + chrono::Days::new(n)).chain([NaiveDate::MIN, NaiveDate::MAX]) {
            assert_eq!(iso_date(date), date.format("%Y-%m-%d").to_string(), "{date:?}");
        }
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
    fn borrowed_text_conversions_equal_the_step_by_step_ones() {
        let lookups = BTreeMap::from([("cur".to_owned(), BTreeMap::from([("RUB".to_owned(), "RUB".to_owned())]))]);
        let chains: Vec<Vec<Conversion>> = vec![
            vec![Conversion::Trim],
            vec![Conversion::Trim, Conversion::Upper, Conversion::Lookup("cur".into())],
            vec![Conversion::Upper, Conversion::Lookup("cur".into())],
            vec![Conversion::Lower, Conversion::Trim],
            vec![Conversion::Decimal],
            vec![Conversion::Trim, Conversion::Decimal, Conversion::Trim],
            vec![Conversion::Date],
            vec![Conversion::EmptyIf("0".into()), Conversion::Decimal],
            vec![Conversion::Trim, Conversion::EmptyIf("-".into())],
            vec![Conversion::StripPrefix("D_".into()), Conversion::Upper, Conversion::StripPrefix("X".into())],
            vec![Conversion::Boolean, Conversion::Trim],
            vec![Conversion::Lookup("missing".into())],
        ];
        let inputs =
            [" rub ", "RUB", "rub", "Rüb", " 1 234,50 ", "0", "-", " - ", "01.02.2024", "d_x1", "Y", "x", "  "];
        for chain in &chains {
            for input in inputs {
                let stepwise = FieldValue::from_json(&serde_json::json!(input)).unwrap().map_or(Ok(None), |v| {
                    let mut value = v;
                    for conversion in chain {
                        if is_emptied(conversion, &value) {
                            return Ok(None);
                        }
                        value = apply(conversion, value, &lookups)?;
                    }
                    Ok(Some(value))
                });
                assert_eq!(convert_text(input, chain, &lookups), stepwise, "{input:?} through {chain:?}");
            }
        }
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
