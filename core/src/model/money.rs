//! Money: a decimal amount with its ISO 4217 currency code.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// An amount of money. The amount is a `Decimal` (serialized as a string such
/// as `"1250.50"`) so kopecks survive every hop exactly.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema, utoipa::ToSchema)]
pub struct Money {
    /// Decimal amount, e.g. `"1250.50"`.
    #[schemars(with = "String")]
    #[schema(value_type = String, example = "1250.50")]
    pub amount: Decimal,
    /// ISO 4217 alphabetic code, upper case, e.g. `RUB`.
    pub currency: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MoneyError {
    #[error("currency code `{0}` is not three ASCII letters")]
    BadCurrency(String),
    #[error("cannot combine {0} with {1}")]
    CurrencyMismatch(String, String),
}

impl Money {
    /// Builds an amount, normalising the currency code to upper case.
    pub fn new(amount: Decimal, currency: &str) -> Result<Self, MoneyError> {
        let code = currency.trim().to_ascii_uppercase();
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(MoneyError::BadCurrency(currency.to_owned()));
        }
        Ok(Self { amount, currency: code })
    }

    /// `new` for a code the caller owns: a code already in its normal
    /// form (three upper-case ASCII letters) is kept as it is, not copied.
    pub fn with_code(amount: Decimal, currency: String) -> Result<Self, MoneyError> {
        if currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Ok(Self { amount, currency });
        }
        Self::new(amount, &currency)
    }

    /// Zero in the given currency.
    pub fn zero(currency: &str) -> Result<Self, MoneyError> {
        Self::new(Decimal::ZERO, currency)
    }

    /// Sum of two amounts of the same currency.
    pub fn checked_add(&self, other: &Money) -> Result<Money, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch(self.currency.clone(), other.currency.clone()));
        }
        Ok(Money { amount: self.amount + other.amount, currency: self.currency.clone() })
    }
}

/// `amount.to_string()` (the same text: every digit of the scale, `-` for a
/// negative amount, `0.5` not `.5`), without going through `fmt`: amounts
/// are written to text for every mapped and compared value.
pub fn decimal_text(amount: Decimal) -> String {
    // 29 digits, a point, a leading `0` and a sign at most.
    let mut text = DigitsBackwards { buf: [0u8; 40], pos: 40 };
    let scale = amount.scale();
    let mantissa = amount.mantissa().unsigned_abs();
    // Nearly every amount fits 64 bits, whose division is far cheaper.
    let Ok(mut n) = u64::try_from(mantissa) else { return amount.to_string() };
    // Two digits per division: half the divisions of one at a time.
    let mut fraction = scale;
    while fraction >= 2 {
        text.pair(n % 100);
        n /= 100;
        fraction -= 2;
    }
    if fraction == 1 {
        text.push(b'0' + (n % 10) as u8);
        n /= 10;
    }
    if scale > 0 {
        text.push(b'.');
    }
    while n >= 100 {
        text.pair(n % 100);
        n /= 100;
    }
    if n >= 10 {
        text.pair(n);
    } else {
        text.push(b'0' + n as u8);
    }
    if amount.is_sign_negative() {
        text.push(b'-');
    }
    std::str::from_utf8(text.written()).map_or_else(|_| amount.to_string(), str::to_owned)
}

/// A number's text written from its last char to its first.
struct DigitsBackwards {
    buf: [u8; 40],
    pos: usize,
}

impl DigitsBackwards {
    fn push(&mut self, b: u8) {
        self.pos -= 1;
        self.buf[self.pos] = b;
    }

    /// The two digits of `pair` (below 100).
    fn pair(&mut self, pair: u64) {
        let at = pair as usize * 2;
        self.push(DIGIT_PAIRS[at + 1]);
        self.push(DIGIT_PAIRS[at]);
    }

    fn written(&self) -> &[u8] {
        &self.buf[self.pos..]
    }
}

/// `00`, `01`, … `99`: the two digits of every number below 100.
const DIGIT_PAIRS: &[u8; 200] = b"\
    0001020304050607080910111213141516171819\
    2021222324252627282930313233343536373839\
    4041424344454647484950515253545556575859\
    6061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899";

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

impl FromStr for Money {
    type Err = String;

    /// Parses `"1250.50 RUB"`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (amount, currency) =
            s.trim().rsplit_once(' ').ok_or_else(|| format!("`{s}` is not `<amount> <currency>`"))?;
        let amount = Decimal::from_str(amount.trim()).map_err(|e| format!("amount `{amount}`: {e}"))?;
        Money::new(amount, currency).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_keep_kopecks_through_json() {
        let m: Money = "1250.10 rub".parse().unwrap();
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"amount":"1250.10","currency":"RUB"}"#);
        assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), m);
    }

    #[test]
    fn an_owned_code_gives_what_new_gives() {
        for code in ["RUB", "rub", " Rub ", "RU", "RUBL", "R1B", "ЕВР", "", "\u{a0}USD"] {
            let amount = Decimal::new(12345, 2);
            assert_eq!(Money::with_code(amount, code.to_owned()), Money::new(amount, code), "{code:?}");
        }
    }

    #[test]
    fn adding_different_currencies_is_refused() {
        let a: Money = "1 RUB".parse().unwrap();
        let b: Money = "1 EUR".parse().unwrap();
        assert!(a.checked_add(&b).is_err());
        assert_eq!(a.checked_add(&a).unwrap().amount, Decimal::from(2));
    }

    #[test]
    fn decimal_text_is_display() {
        let mut values: Vec<Decimal> = [
            "0",
            "-0",
            "0.00",
            "-0.00",
            "1",
            "-1",
            "0.5",
            "0.05",
            "-0.05",
            "10",
            "1250.50",
            "1234567.89",
            "18446744073709551615",
            "18446744073709551616",
            "-18446744073709551617.5",
            "79228162514264337593543950335",
            "-79228162514264337593543950335",
            "0.0000000000000000000000000001",
            "7.9228162514264337593543950335",
        ]
        .iter()
        .map(|s| Decimal::from_str(s).unwrap())
        .collect();
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..2000 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let mantissa = i64::from_ne_bytes(seed.to_ne_bytes()) >> (seed % 60);
            values.push(Decimal::new(mantissa, (seed >> 59) as u32 % 29));
        }
        for value in values {
            assert_eq!(decimal_text(value), value.to_string(), "{value:?}");
        }
    }

    #[test]
    fn bad_currency_codes_are_refused() {
        assert!(Money::new(Decimal::ONE, "RU").is_err());
        assert!(Money::new(Decimal::ONE, "R1B").is_err());
    }
}
