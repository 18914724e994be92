//! Reading amounts and dates exactly as banks write them: decimals, never
//! floats; `дд.мм.гггг`, ISO `yyyy-mm-dd` and MT940 `yymmdd` dates.

use chrono::NaiveDate;
use rust_decimal::Decimal;

/// What was wrong with an amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmountProblem {
    NotANumber,
    TooLarge,
}

impl std::fmt::Display for AmountProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AmountProblem::NotANumber => "is not an amount (digits with an optional `.` and up to 28 decimals)",
            AmountProblem::TooLarge => "is too large for an amount",
        })
    }
}

/// Parses an unsigned amount: digits, optionally one `.` or `,` and more
/// digits (`140000`, `22.9`, `150000.00`, MT940 `25,03`). Returns whether a
/// comma was the separator so callers can warn where the format wants a dot.
pub fn parse_amount(text: &str) -> Result<(Decimal, bool), AmountProblem> {
    let text = trim(text);
    let bytes = text.as_bytes();
    let mut separator = None;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'0'..=b'9' => {}
            b'.' | b',' if separator.is_none() => separator = Some(i),
            _ => return Err(AmountProblem::NotANumber),
        }
    }
    let (int, frac) = match separator {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => (bytes, &bytes[..0]),
    };
    // MT940 writes `25,` for 25.00; an empty integer part (`,5`) is not an amount.
    if int.is_empty() || frac.len() > 28 {
        return Err(AmountProblem::NotANumber);
    }
    // Build the mantissa by hand: cheaper than Decimal::from_str and gives
    // the exact scale written.
    let mut mantissa: i128 = 0;
    for &b in int.iter().chain(frac) {
        mantissa = mantissa
            .checked_mul(10)
            .and_then(|m| m.checked_add(i128::from(b - b'0')))
            .ok_or(AmountProblem::TooLarge)?;
    }
    let value = Decimal::try_from_i128_with_scale(mantissa, frac.len() as u32).map_err(|_| AmountProblem::TooLarge)?;
    Ok((value, separator.is_some_and(|i| bytes[i] == b',')))
}

/// `text.trim()`, answered without decoding characters when both ends
/// are plainly not white space: an ASCII letter, digit or sign, or a
/// Cyrillic letter (U+0400–U+047F, UTF-8 `D0`/`D1` and one continuation
/// byte). Nearly every value ends so, and `str::trim` checks each end's
/// character against the Unicode white-space table.
pub fn trim(text: &str) -> &str {
    let b = text.as_bytes();
    let plain_ascii = |c: u8| c.is_ascii() && !matches!(c, b'\t'..=b'\r' | b' ');
    let starts_plain = b.first().is_some_and(|&c| plain_ascii(c) || matches!(c, 0xD0 | 0xD1));
    let ends_plain = match b {
        [.., c] if plain_ascii(*c) => true,
        [.., 0xD0 | 0xD1, c] => *c & 0xC0 == 0x80,
        _ => false,
    };
    if starts_plain && ends_plain { text } else { text.trim() }
}

fn digits(bytes: &[u8]) -> Option<u32> {
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(bytes.iter().fold(0u32, |n, &b| n * 10 + u32::from(b - b'0')))
}

/// `дд.мм.гггг` (1CClientBankExchange).
pub fn parse_russian_date(text: &str) -> Option<NaiveDate> {
    let b = trim(text).as_bytes();
    if b.len() != 10 || b[2] != b'.' || b[5] != b'.' {
        return None;
    }
    NaiveDate::from_ymd_opt(digits(&b[6..10])? as i32, digits(&b[3..5])?, digits(&b[..2])?)
}

/// `yyyy-mm-dd`, optionally followed by a time (`2014-12-31T13:15:00+01:00`):
/// the calendar date as written is the booking date.
pub fn parse_iso_date(text: &str) -> Option<NaiveDate> {
    let b = text.trim().as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' || (b.len() > 10 && b[10] != b'T') {
        return None;
    }
    NaiveDate::from_ymd_opt(digits(&b[..4])? as i32, digits(&b[5..7])?, digits(&b[8..10])?)
}

/// `yymmdd` (MT940); years 00–79 are 20xx, 80–99 19xx as SWIFT usage has it.
pub fn parse_yymmdd(text: &str) -> Option<NaiveDate> {
    let b = text.as_bytes();
    if b.len() != 6 {
        return None;
    }
    let yy = digits(&b[..2])? as i32;
    let year = if yy < 80 { 2000 + yy } else { 1900 + yy };
    NaiveDate::from_ymd_opt(year, digits(&b[2..4])?, digits(&b[4..6])?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn amounts_in_every_written_form() {
        let d = |s| Decimal::from_str(s).unwrap();
        assert_eq!(parse_amount("140000"), Ok((d("140000"), false)));
        assert_eq!(parse_amount("22.9"), Ok((d("22.9"), false)));
        assert_eq!(parse_amount(" 150000.00 "), Ok((d("150000.00"), false)));
        assert_eq!(parse_amount("25,03"), Ok((d("25.03"), true)));
        assert_eq!(parse_amount("25,"), Ok((d("25"), true)));
        for bad in ["", "-1", "1.2.3", "1e5", ",5", "12 000", "1_0", "NaN"] {
            assert_eq!(parse_amount(bad), Err(AmountProblem::NotANumber), "{bad}");
        }
        assert_eq!(parse_amount(&"9".repeat(40)), Err(AmountProblem::TooLarge));
    }

    #[test]
    fn trim_agrees_with_str_trim() {
        let ends = [
            "", " ", "\t", "\u{0B}", "\u{1C}", "\u{1F}", "\u{0}", "\u{85}", "\u{A0}", "\u{3000}", "a", "1", "-", "Ж",
            "я", "ё", "Ѐ", "«", "№", "€",
        ];
        for start in ends {
            for end in ends {
                for middle in ["", "x", " ", "Сумма 1"] {
                    let text = format!("{start}{middle}{end}");
                    assert_eq!(trim(&text), text.trim(), "{text:?}");
                }
            }
        }
    }

    #[test]
    fn dates() {
        assert_eq!(parse_russian_date("09.01.2024"), NaiveDate::from_ymd_opt(2024, 1, 9));
        assert_eq!(parse_russian_date("31.02.2024"), None);
        assert_eq!(parse_russian_date("9.1.2024"), None);
        assert_eq!(parse_iso_date("2014-12-31T13:15:00+01:00"), NaiveDate::from_ymd_opt(2014, 12, 31));
        assert_eq!(parse_iso_date("2014-12-31"), NaiveDate::from_ymd_opt(2014, 12, 31));
        assert_eq!(parse_iso_date("2014-12-3x"), None);
        assert_eq!(parse_yymmdd("100722"), NaiveDate::from_ymd_opt(2010, 7, 22));
        assert_eq!(parse_yymmdd("991231"), NaiveDate::from_ymd_opt(1999, 12, 31));
    }
}
