//! Invoice and order numbers in a payment's purpose text, in the forms
//! people really type them:
//!
//! - «Оплата по счету № 123 от 01.02.2024», «Оплата счета 123», «по счету на оплату № 45»
//! - «сч. 123», «сч.123», «по сч.№А-123», «по сч № А-123», «Счет N 77», «inv. 12»
//! - «по счетам № 12, 13 и 14», «по заказу №ЗК-0042»
//!
//! A keyword (`счет` in its cases, `сч`, `заказ`, `invoice`/`inv`) is
//! followed by optional filler (`№`, `N`, `#`, `на оплату`, …) and then a
//! number token that contains a digit. A date after it («от 01.02.2024»)
//! is kept with the number. What is *not* taken: «счет-фактура»/«с/ф»
//! (a VAT invoice), a bank account («расчетный счет 40702…», any run of 15
//! or more digits), and words that only start like a keyword («счетчик»).

use chrono::NaiveDate;

/// A number found in the purpose text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberReference {
    /// The number as written (`А-123`).
    pub text: String,
    /// Whether the keyword was an order («заказ») rather than an invoice.
    pub order: bool,
    /// The date written after it («от 01.02.2024»), if any.
    pub date: Option<NaiveDate>,
}

/// Endings of «счет» and «заказ» in the cases used in purpose texts.
const ENDINGS: [&str; 9] = ["", "а", "у", "е", "ом", "ам", "ах", "ов", "ы"];
/// Words before «счет» that make it a bank account, not an invoice.
const ACCOUNT_WORDS: [&str; 6] = ["расчетный", "расчетного", "расчетному", "лицевой", "лицевого", "банковский"];
/// Words that may stand between the keyword and the number.
const FILLER_WORDS: [&str; 8] = ["на", "оплату", "оплата", "оплаты", "покупателю", "номер", "no", "nr"];

/// Every invoice or order number the text refers to, in order, without repeats.
pub fn number_references(purpose: &str) -> Vec<NumberReference> {
    let text: Vec<char> = purpose.chars().map(fold_char).collect();
    let mut found: Vec<NumberReference> = Vec::new();
    let mut i = 0;
    while i < text.len() {
        if i > 0 && is_letter_or_digit(text[i - 1]) {
            i += 1;
            continue;
        }
        match keyword_at(&text, i) {
            Some((end, order)) if !account_before(&text, i) => {
                let (next, refs) = numbers_after(&text, end, order);
                for r in refs {
                    if !found.iter().any(|f| f.text == r.text) {
                        found.push(r);
                    }
                }
                i = next.max(i + 1);
            }
            _ => i += 1,
        }
    }
    found
}

/// Lower case, `ё` as `е`, typographic dashes as `-`.
fn fold_char(c: char) -> char {
    match c {
        'ё' | 'Ё' => 'е',
        '‐' | '‑' | '‒' | '–' | '—' => '-',
        c => c.to_lowercase().next().unwrap_or(c),
    }
}

/// `char::is_alphabetic`. Folded purpose texts are mostly lower-case
/// Cyrillic, which std answers from its Unicode tables (a search per
/// character, a large part of reading 100k purposes); that range is
/// answered first.
fn is_letter(c: char) -> bool {
    matches!(c, 'а'..='я') || c.is_alphabetic()
}

/// `char::is_alphanumeric`, with lower-case Cyrillic answered first as in
/// [`is_letter`].
fn is_letter_or_digit(c: char) -> bool {
    matches!(c, 'а'..='я') || c.is_alphanumeric()
}

fn starts_with(text: &[char], at: usize, word: &str) -> bool {
    (at..).zip(word.chars()).all(|(i, c)| text.get(i) == Some(&c))
}

/// The word starting at `at` (letters only).
fn word_at(text: &[char], at: usize) -> String {
    text[at..].iter().take_while(|c| is_letter(**c)).collect()
}

/// A keyword at `at`: where it ends and whether it names an order.
fn keyword_at(text: &[char], at: usize) -> Option<(usize, bool)> {
    let word = word_at(text, at);
    let after = at + word.chars().count();
    let ends_with_ending = |stem: &str| word.strip_prefix(stem).is_some_and(|rest| ENDINGS.contains(&rest));
    if ends_with_ending("счет") {
        // «счет-фактура», «счет фактура», «счету-фактуре»: a VAT invoice.
        let rest: String = text[after..].iter().take(10).collect();
        let rest = rest.trim_start_matches(['-', ' ']);
        return (!rest.starts_with("фактур")).then_some((after, false));
    }
    if word == "сч" {
        // «сч/ф», «сч.-ф.», «сч-ф»: a VAT invoice.
        let rest: String = text[after..].iter().take(4).collect();
        let rest = rest.trim_start_matches(['.', '/', '-', ' ']);
        let vat = rest.starts_with('ф') && !rest.chars().nth(1).is_some_and(is_letter);
        return (!vat).then_some((after, false));
    }
    if ends_with_ending("заказ") {
        return Some((after, true));
    }
    if word == "invoice" || word == "inv" || word == "счетам" {
        return Some((after, false));
    }
    None
}

/// Whether the word before `at` makes the keyword a bank account.
fn account_before(text: &[char], at: usize) -> bool {
    let mut end = at;
    while end > 0 && !is_letter(text[end - 1]) {
        end -= 1;
    }
    let mut start = end;
    while start > 0 && is_letter(text[start - 1]) {
        start -= 1;
    }
    let word: String = text[start..end].iter().collect();
    ACCOUNT_WORDS.contains(&word.as_str())
}

/// Numbers after a keyword ending at `at`; returns where scanning stopped.
fn numbers_after(text: &[char], mut at: usize, order: bool) -> (usize, Vec<NumberReference>) {
    let mut refs = Vec::new();
    // «счет от 01.02.2024 № 123»: a date before the number belongs to it.
    let mut date_before = None;
    let mut steps = 0;
    while at < text.len() && steps < 12 {
        steps += 1;
        let c = text[at];
        if c.is_whitespace() || matches!(c, '.' | ':' | '№' | '#' | '(' | '"' | '«') {
            at += 1;
            continue;
        }
        // `N 12`, `N12`, `n° 12`: a number sign, not part of the number.
        if c == 'n' && text.get(at + 1).is_some_and(|n| n.is_whitespace() || n.is_ascii_digit() || *n == '°') {
            at += 1;
            continue;
        }
        if is_letter(c) {
            let word = word_at(text, at);
            if FILLER_WORDS.contains(&word.as_str()) {
                at += word.chars().count();
                continue;
            }
            if word == "от" {
                // «счет от 01.02.2024 № 123»: the date comes first.
                let (next, date) = date_after(text, at + 2);
                if date.is_some() {
                    date_before = date;
                    at = next;
                    continue;
                }
            }
        }
        let Some((end, number)) = number_token(text, at) else { break };
        let (next, date) = date_after_word(text, end);
        refs.push(NumberReference { text: number, order, date: date.or(date_before) });
        at = next;
        // A list: «12, 13 и 14», «12; 13», «№ 12, № 13».
        let mut look = at;
        while look < text.len() && (text[look].is_whitespace() || matches!(text[look], ',' | ';' | '№')) {
            look += 1;
        }
        if starts_with(text, look, "и ") {
            look += 2;
            while look < text.len() && (text[look].is_whitespace() || text[look] == '№') {
                look += 1;
            }
        }
        if look > at
            && number_token(text, look).is_some()
            && text[at..look].iter().any(|c| matches!(c, ',' | ';' | 'и'))
        {
            at = look;
            continue;
        }
        break;
    }
    (at, refs)
}

/// A number token at `at`: letters, digits and `-`, `/`, `_` inside, at
/// least one digit, not a date, not an account-long run of digits. A token
/// glued to «от» («123от01.02.2024») ends before it.
fn number_token(text: &[char], at: usize) -> Option<(usize, String)> {
    let mut end = at;
    while end < text.len() {
        let c = text[end];
        let inner =
            matches!(c, '-' | '/' | '_' | '.') && text.get(end + 1).is_some_and(|n| is_letter_or_digit(*n)) && end > at;
        if !(is_letter_or_digit(c) || inner) {
            break;
        }
        if end > at && text[end - 1].is_ascii_digit() && starts_with(text, end, "от") {
            break;
        }
        end += 1;
    }
    let token: String = text[at..end].iter().collect();
    let digits = token.chars().filter(char::is_ascii_digit).count();
    if digits == 0 || parse_date(&token).is_some() {
        return None;
    }
    if digits >= 15 && !token.chars().any(is_letter) {
        return None;
    }
    // «123.» at the end of a sentence, or «123г.»: not part of the number.
    let token = token.trim_end_matches(['.', '-', '/']).to_owned();
    // Original case is lost by folding; keep the folded form, matching compares keys.
    Some((end, token))
}

/// `от <date>` (or a bare date) right after a number.
fn date_after_word(text: &[char], at: usize) -> (usize, Option<NaiveDate>) {
    let mut look = at;
    while look < text.len() && text[look].is_whitespace() {
        look += 1;
    }
    if starts_with(text, look, "от") {
        let (next, date) = date_after(text, look + 2);
        if date.is_some() {
            return (next, date);
        }
    }
    (at, None)
}

/// A date `dd.mm.yyyy` (or `dd.mm.yy`, `-` or `/` between) after optional
/// spaces, with an optional «г.» after it.
fn date_after(text: &[char], at: usize) -> (usize, Option<NaiveDate>) {
    let mut start = at;
    while start < text.len() && text[start].is_whitespace() {
        start += 1;
    }
    let mut end = start;
    while end < text.len() && (text[end].is_ascii_digit() || matches!(text[end], '.' | '/' | '-')) {
        end += 1;
    }
    let token: String = text[start..end].iter().collect();
    match parse_date(token.trim_end_matches('.')) {
        Some(date) => {
            let mut next = end;
            if text.get(next) == Some(&'г') {
                next += 1;
                if text.get(next) == Some(&'.') {
                    next += 1;
                }
            }
            (next, Some(date))
        }
        None => (at, None),
    }
}

/// `dd.mm.yyyy`, `d.m.yy`, with `.`, `/` or `-` between.
fn parse_date(token: &str) -> Option<NaiveDate> {
    let parts: Vec<&str> = token.split(['.', '/', '-']).collect();
    let [d, m, y] = parts.as_slice() else { return None };
    if d.is_empty() || d.len() > 2 || m.is_empty() || m.len() > 2 || !(y.len() == 2 || y.len() == 4) {
        return None;
    }
    let (d, m, y): (u32, u32, i32) = (d.parse().ok()?, m.parse().ok()?, y.parse().ok()?);
    let y = if y < 100 { 2000 + y } else { y };
    NaiveDate::from_ymd_opt(y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(text: &str) -> Vec<String> {
        number_references(text).into_iter().map(|r| r.text).collect()
    }

    #[test]
    fn the_forms_people_type() {
        assert_eq!(numbers("Оплата по счету № 123 от 01.02.2024"), ["123"]);
        assert_eq!(numbers("Оплата по счёту №123 от 01.02.2024 г. НДС не облагается"), ["123"]);
        assert_eq!(numbers("Оплата сч. 123"), ["123"]);
        assert_eq!(numbers("оплата сч.123 за оборудование"), ["123"]);
        assert_eq!(numbers("Оплата по сч.№А-123"), ["а-123"]);
        assert_eq!(numbers("Оплата по сч № А-123 от 5.2.24"), ["а-123"]);
        assert_eq!(numbers("ОПЛАТА ПО СЧЕТУ N 77, В Т.Ч. НДС 20% 1666.67"), ["77"]);
        assert_eq!(numbers("Оплата счета 456 за услуги"), ["456"]);
        assert_eq!(numbers("по счету на оплату № 45 от 03.03.2024"), ["45"]);
        assert_eq!(numbers("Оплата по счету №123от01.02.2024"), ["123"]);
        assert_eq!(numbers("Предоплата по счету ТД00-000123 от 01.02.2024"), ["тд00-000123"]);
        assert_eq!(numbers("Invoice #INV-2024/17 payment"), ["inv-2024/17"]);
        assert_eq!(numbers("Оплата по заказу №ЗК-0042"), ["зк-0042"]);
    }

    #[test]
    fn lists_of_numbers() {
        assert_eq!(numbers("Оплата по счетам № 12, 13 и 14"), ["12", "13", "14"]);
        assert_eq!(numbers("Оплата по сч. 12; сч. 13"), ["12", "13"]);
    }

    #[test]
    fn dates_stay_with_their_number() {
        let refs = number_references("Оплата по счету № 123 от 01.02.2024");
        assert_eq!(refs[0].date, NaiveDate::from_ymd_opt(2024, 2, 1));
        let refs = number_references("Оплата по счету от 01.02.2024 № 123");
        assert_eq!((refs[0].text.as_str(), refs[0].date), ("123", NaiveDate::from_ymd_opt(2024, 2, 1)));
    }

    #[test]
    fn what_is_not_an_invoice_number() {
        assert!(numbers("Оплата по счет-фактуре № 55 от 01.02.2024").is_empty());
        assert!(numbers("НДС по сч/ф 55").is_empty());
        assert!(numbers("Перевод на расчетный счет 40702810900000002851").is_empty());
        assert!(numbers("Поверка счетчика 5 шт").is_empty());
        assert!(numbers("Оплата по договору № 5 от 01.01.2024").is_empty());
        assert!(numbers("Оплата по счету от 01.02.2024").is_empty());
        assert!(numbers("").is_empty());
    }

    #[test]
    fn letters_are_what_std_says_they_are() {
        for c in (0..=0x10_FFFF).filter_map(char::from_u32) {
            assert_eq!(is_letter(c), c.is_alphabetic(), "{c:?}");
            assert_eq!(is_letter_or_digit(c), c.is_alphanumeric(), "{c:?}");
        }
    }
}
