//! INN, the Russian taxpayer number, with its check digits.
//!
//! Banks and CRMs carry INNs typed by people, so a wrong check digit is common.
//! The model keeps whatever was received; `Inn::verify` says whether the
//! check digits hold so callers can warn rather than reject.

use serde::{Deserialize, Serialize};

/// A taxpayer number as received: 10 digits for an organisation, 12 for a
/// person or sole trader.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema, utoipa::ToSchema,
)]
#[serde(transparent)]
#[schema(value_type = String, example = "7707083893")]
pub struct Inn(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InnError {
    #[error("INN `{0}` must be 10 or 12 digits")]
    Shape(String),
    #[error("INN `{0}` fails its check digits")]
    CheckDigits(String),
}

const W10: [u32; 9] = [2, 4, 10, 3, 5, 9, 4, 6, 8];
const W11: [u32; 10] = [7, 2, 4, 10, 3, 5, 9, 4, 6, 8];
const W12: [u32; 11] = [3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8];

fn check_digit(digits: &[u32], weights: &[u32]) -> u32 {
    let sum: u32 = digits.iter().zip(weights).map(|(d, w)| d * w).sum();
    sum % 11 % 10
}

fn has_inn_shape(s: &str) -> bool {
    (s.len() == 10 || s.len() == 12) && s.bytes().all(|b| b.is_ascii_digit())
}

impl Inn {
    /// Keeps the trimmed text; never fails, so nothing received is lost.
    pub fn new(raw: &str) -> Self {
        Self(raw.trim().to_owned())
    }

    /// `new` for text the caller owns: text that is already trimmed (what
    /// a mapping's `trim` leaves) is kept as it is, not copied.
    pub fn from_text(raw: String) -> Self {
        if raw.trim().len() == raw.len() { Self(raw) } else { Self::new(&raw) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Checks length and check digits (FNS algorithm).
    pub fn verify(&self) -> Result<(), InnError> {
        let s = &self.0;
        if !has_inn_shape(s) {
            return Err(InnError::Shape(s.clone()));
        }
        if Self::is_valid(s) { Ok(()) } else { Err(InnError::CheckDigits(s.clone())) }
    }

    /// An organisation's INN: its first nine digits with the check digit
    /// they call for; `None` unless `body` is nine ASCII digits. For demo
    /// and test data that must pass [`Inn::verify`].
    pub fn organisation(body: &str) -> Option<Self> {
        if body.len() != 9 || !body.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let digits: Vec<u32> = body.bytes().map(|b| u32::from(b - b'0')).collect();
        Some(Self(format!("{body}{}", check_digit(&digits, &W10))))
    }

    /// Whether `text` as it stands (not trimmed) passes [`Inn::verify`],
    /// without allocating: parsers check every document's INNs.
    pub fn is_valid(text: &str) -> bool {
        if !has_inn_shape(text) {
            return false;
        }
        let mut d = [0_u32; 12];
        for (digit, b) in d.iter_mut().zip(text.bytes()) {
            *digit = u32::from(b - b'0');
        }
        if text.len() == 10 {
            check_digit(&d[..9], &W10) == d[9]
        } else {
            check_digit(&d[..10], &W11) == d[10] && check_digit(&d[..11], &W12) == d[11]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_inns_pass_and_typos_fail() {
        // Sberbank (organisation) and a valid 12-digit personal INN.
        assert_eq!(Inn::new("7707083893").verify(), Ok(()));
        assert_eq!(Inn::new("500100732259").verify(), Ok(()));
        assert!(matches!(Inn::new("7707083894").verify(), Err(InnError::CheckDigits(_))));
        assert!(matches!(Inn::new("500100732258").verify(), Err(InnError::CheckDigits(_))));
        assert!(matches!(Inn::new("77070838").verify(), Err(InnError::Shape(_))));
        assert!(matches!(Inn::new("77070838AB").verify(), Err(InnError::Shape(_))));
        assert_eq!(Inn::organisation("770708389"), Some(Inn::new("7707083893")));
        assert_eq!(Inn::organisation("77070838"), None);
        assert_eq!(Inn::organisation("77070838A"), None);
        for n in 0..2_000_u32 {
            let inn = Inn::organisation(&format!("77{:07}", n * 4_999)).unwrap();
            assert_eq!(inn.verify(), Ok(()), "{inn:?}");
        }
        for (text, valid) in [("7707083893", true), ("500100732259", true), ("7707083894", false), ("77070838", false)]
        {
            assert_eq!(Inn::is_valid(text), valid, "{text}");
        }
    }

    #[test]
    fn owned_text_is_kept_as_new_keeps_it() {
        for raw in ["7707083893", " 7707083893 ", "\t500100732259\n", "", "  "] {
            assert_eq!(Inn::from_text(raw.to_owned()), Inn::new(raw), "{raw:?}");
        }
    }
}
