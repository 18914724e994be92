//! The document keys the parser reads into typed fields, with the spelling
//! variants seen in real files (`ПлательщикКорСчет` for `ПлательщикКорсчет`).
//! Every other key is still kept, as written, in the entry's attributes.

use crate::lines::RawLine;

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

/// What a key, as its bytes stand in a document line, reads as.
pub struct KnownKey {
    /// The key decoded and trimmed, as the document keeps it.
    pub text: Box<str>,
    pub key: Option<DocumentKey>,
    /// `СекцияДокумент` / `СекцияРасчСчет`: a section opening inside a document.
    pub opens_section: bool,
}

impl KnownKey {
    fn read(line: &RawLine<'_>, key_end: usize) -> Self {
        let mut decoded = String::new();
        line.decode_range_into(0..key_end, &mut decoded);
        let text = decoded.trim();
        Self {
            key: DocumentKey::from_key(text),
            opens_section: matches!(text, "СекцияДокумент" | "СекцияРасчСчет"),
            text: text.into(),
        }
    }
}

/// Hashes a raw key by its length and its first and last eight bytes: the
/// 1C keys differ there (`Плательщик…`/`Получатель…`, `…Платежа1`/`…2`), and
/// equal hashes are compared whole anyway, so hashing the middle is waste.
#[derive(Default)]
pub struct RawKeyHasher(KeyHasher);

impl std::hash::Hasher for RawKeyHasher {
    fn finish(&self) -> u64 {
        self.0.finish()
    }

    fn write(&mut self, bytes: &[u8]) {
        if bytes.len() <= 16 {
            return self.0.write(bytes);
        }
        self.0.write(&bytes[..8]);
        self.0.write(&bytes[bytes.len() - 8..]);
    }

    fn write_usize(&mut self, n: usize) {
        self.0.write(&n.to_le_bytes());
    }
}

type RawKeyMap = std::collections::HashMap<Box<[u8]>, KnownKey, std::hash::BuildHasherDefault<RawKeyHasher>>;

/// Remembers what each key's bytes mean, per line encoding, so a document
/// line costs one hash lookup on its raw key: no decoding, trimming or
/// string comparisons of the key.
#[derive(Default)]
pub struct KeyCache {
    text: RawKeyMap,
    windows_1251: RawKeyMap,
}

impl KeyCache {
    /// Hostile input could invent endless keys; past this many the cache stops growing.
    const MAX_KEYS: usize = 4096;

    /// Calls `read` with what the key in `line`'s bytes `..key_end` means.
    pub fn with_key<T>(&mut self, line: &RawLine<'_>, key_end: usize, read: impl FnOnce(&KnownKey) -> T) -> T {
        let raw = &line.bytes()[..key_end];
        let map = match line {
            RawLine::Text(_) => &mut self.text,
            RawLine::Windows1251(_) => &mut self.windows_1251,
        };
        if let Some(known) = map.get(raw) {
            return read(known);
        }
        let known = KnownKey::read(line, key_end);
        if map.len() + 1 >= Self::MAX_KEYS {
            return read(&known);
        }
        read(map.entry(raw.into()).or_insert(known))
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

    #[test]
    fn raw_keys_read_the_same_in_both_encodings() {
        let mut cache = KeyCache::default();
        let cp1251 = b" \xcf\xeb\xe0\xf2\xe5\xeb\xfc\xf9\xe8\xea\xc8\xcd\xcd=1"; // « ПлательщикИНН=1»
        let utf8 = "ПлательщикИНН =1";
        for _ in 0..2 {
            let (text, key) = cache.with_key(&RawLine::Windows1251(cp1251), 14, |k| (k.text.to_string(), k.key));
            assert_eq!((text.as_str(), key), ("ПлательщикИНН", Some(DocumentKey::PayerInn)));
            let (text, key) = cache.with_key(&RawLine::Text(utf8), utf8.len() - 2, |k| (k.text.to_string(), k.key));
            assert_eq!((text.as_str(), key), ("ПлательщикИНН", Some(DocumentKey::PayerInn)));
        }
        assert!(cache.with_key(&RawLine::Text("СекцияДокумент=x"), 28, |k| k.opens_section));
    }
}
