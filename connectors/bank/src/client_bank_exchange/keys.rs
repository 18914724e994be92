//! The document keys the parser reads into typed fields, with the spelling
//! variants seen in real files (`ПлательщикКорСчет` for `ПлательщикКорсчет`).
//! Every other key is still kept, as written, in the entry's attributes.

/// A document key the parser gives meaning to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentKey {
    Number,
    Date,
    Amount,
    PayerAccount,
    PayerSettlementAccount,
    DebitedOn,
    Payer,
    PayerInn,
    PayerName1,
    PayerKpp,
    PayerBank1,
    PayerBic,
    PayerCorrespondentAccount,
    PayeeAccount,
    PayeeSettlementAccount,
    CreditedOn,
    Payee,
    PayeeInn,
    PayeeName1,
    PayeeKpp,
    PayeeBank1,
    PayeeBic,
    PayeeCorrespondentAccount,
    Purpose,
    /// `НазначениеПлатежа1` … `НазначениеПлатежа6`: the purpose split into lines.
    Purpose1,
    Purpose2,
    Purpose3,
    Purpose4,
    Purpose5,
    Purpose6,
}

impl DocumentKey {
    /// Number of slots a document keeps (one per key, purpose lines 1–6 included).
    pub const SLOTS: usize = 30;

    pub fn slot(self) -> usize {
        self as usize
    }

    /// Name used in error messages.
    pub fn name(self) -> &'static str {
        match self {
            DocumentKey::Number => "Номер",
            DocumentKey::Date => "Дата",
            DocumentKey::Amount => "Сумма",
            DocumentKey::DebitedOn => "ДатаСписано",
            DocumentKey::CreditedOn => "ДатаПоступило",
            _ => "",
        }
    }

    /// Exact spellings first (the fast path for a well-formed file), then a
    /// case-insensitive match for variants.
    pub fn from_key(key: &str) -> Option<Self> {
        Self::exact(key).or_else(|| {
            // Unknown keys are common (a full 1.03 document has ~60 keys, 30
            // of them read here), so this fallback must not allocate.
            CANONICAL.iter().find(|c| c.len() == key.len() && same_key(c, key)).and_then(|c| Self::exact(c))
        })
    }

    fn exact(key: &str) -> Option<Self> {
        use DocumentKey::*;
        Some(match key {
            "Номер" => Number,
            "Дата" => Date,
            "Сумма" => Amount,
            "ПлательщикСчет" => PayerAccount,
            "ПлательщикРасчСчет" => PayerSettlementAccount,
            "ДатаСписано" => DebitedOn,
            "Плательщик" => Payer,
            "ПлательщикИНН" => PayerInn,
            "Плательщик1" => PayerName1,
            "ПлательщикКПП" => PayerKpp,
            "ПлательщикБанк1" => PayerBank1,
            "ПлательщикБИК" => PayerBic,
            "ПлательщикКорсчет" | "ПлательщикКорСчет" => PayerCorrespondentAccount,
            "ПолучательСчет" => PayeeAccount,
            "ПолучательРасчСчет" => PayeeSettlementAccount,
            "ДатаПоступило" => CreditedOn,
            "Получатель" => Payee,
            "ПолучательИНН" => PayeeInn,
            "Получатель1" => PayeeName1,
            "ПолучательКПП" => PayeeKpp,
            "ПолучательБанк1" => PayeeBank1,
            "ПолучательБИК" => PayeeBic,
            "ПолучательКорсчет" | "ПолучательКорСчет" => PayeeCorrespondentAccount,
            "НазначениеПлатежа" => Purpose,
            "НазначениеПлатежа1" => Purpose1,
            "НазначениеПлатежа2" => Purpose2,
            "НазначениеПлатежа3" => Purpose3,
            "НазначениеПлатежа4" => Purpose4,
            "НазначениеПлатежа5" => Purpose5,
            "НазначениеПлатежа6" => Purpose6,
            _ => return None,
        })
    }
}

const CANONICAL: [&str; 30] = [
    "Номер",
    "Дата",
    "Сумма",
    "ПлательщикСчет",
    "ПлательщикРасчСчет",
    "ДатаСписано",
    "Плательщик",
    "ПлательщикИНН",
    "Плательщик1",
    "ПлательщикКПП",
    "ПлательщикБанк1",
    "ПлательщикБИК",
    "ПлательщикКорсчет",
    "ПолучательСчет",
    "ПолучательРасчСчет",
    "ДатаПоступило",
    "Получатель",
    "ПолучательИНН",
    "Получатель1",
    "ПолучательКПП",
    "ПолучательБанк1",
    "ПолучательБИК",
    "ПолучательКорсчет",
    "НазначениеПлатежа",
    "НазначениеПлатежа1",
    "НазначениеПлатежа2",
    "НазначениеПлатежа3",
    "НазначениеПлатежа4",
    "НазначениеПлатежа5",
    "НазначениеПлатежа6",
];

/// The Fx hash (rustc's): keys are short and trusted to be few (the cache is
/// capped), so hashing eight bytes per step beats SipHash here.
#[derive(Default)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut h = self.0;
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let word = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
            h = (h.rotate_left(5) ^ word).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            h = (h.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
        self.0 = h;
    }
}

/// Remembers what each key spelling means, so each line costs one hash
/// lookup instead of a chain of string comparisons.
#[derive(Default)]
pub struct KeyCache(std::collections::HashMap<Box<str>, Option<DocumentKey>, std::hash::BuildHasherDefault<KeyHasher>>);

impl KeyCache {
    /// Hostile input could invent endless keys; past this many the cache stops growing.
    const MAX_KEYS: usize = 4096;

    pub fn get(&mut self, key: &str) -> Option<DocumentKey> {
        if let Some(known) = self.0.get(key) {
            return *known;
        }
        let known = DocumentKey::from_key(key);
        if self.0.len() < Self::MAX_KEYS {
            self.0.insert(key.into(), known);
        }
        known
    }
}

/// Header and balance-section keys compared case-insensitively.
pub fn same_key(a: &str, b: &str) -> bool {
    a == b || a.chars().flat_map(char::to_lowercase).eq(b.chars().flat_map(char::to_lowercase))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_distinct_and_within_bounds() {
        let mut seen = [false; DocumentKey::SLOTS];
        for name in CANONICAL {
            let slot = DocumentKey::from_key(name).unwrap().slot();
            assert!(!seen[slot], "{name}");
            seen[slot] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn spelling_variants() {
        assert_eq!(DocumentKey::from_key("ПлательщикКорСчет"), Some(DocumentKey::PayerCorrespondentAccount));
        assert_eq!(DocumentKey::from_key("ПОЛУЧАТЕЛЬКОРСЧЕТ"), Some(DocumentKey::PayeeCorrespondentAccount));
        assert_eq!(DocumentKey::from_key("плательщикинн"), Some(DocumentKey::PayerInn));
        assert_eq!(DocumentKey::from_key("КодДебитора"), None);
    }
}
