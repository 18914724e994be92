//! The document keys the parser reads into typed fields, with the spelling
//! variants seen in real files (`ПлательщикКорСчет` for `ПлательщикКорсчет`).
//! Every other key is still kept, as written, in the entry's attributes.

use crate::attributes::StoredKey;
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
    pub stored: StoredKey<'static>,
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
            stored: StoredKey::new(text).into_owned(),
        }
    }

    /// The key as the document keeps it.
    pub fn text(&self) -> &str {
        self.stored.as_str()
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

/// Raw key bytes → index in [`KeyCache::keys`].
type RawKeyMap = std::collections::HashMap<Box<[u8]>, u32, std::hash::BuildHasherDefault<RawKeyHasher>>;

/// A key's raw bytes in one line encoding, and what they read as.
struct CachedKey {
    raw: Box<[u8]>,
    windows_1251: bool,
    known: KnownKey,
}

/// Remembers what each key's bytes mean, per line encoding, so a document
/// line costs no decoding, trimming or string comparisons of its key.
///
/// Documents of one statement list their keys in the same order (the
/// program that wrote the file has one template per document type), so
/// the key at each position of the previous document is tried first: one
/// comparison of the line's start, which also finds the `=` without
/// searching for it. Only a line that differs costs a search and a hash
/// lookup.
#[derive(Default)]
pub struct KeyCache {
    keys: Vec<CachedKey>,
    text: RawKeyMap,
    windows_1251: RawKeyMap,
    /// `keys` indices by position in the document being read, and in the
    /// one before ([`KeyCache::NOT_CACHED`] where the cache was full).
    current: Vec<u32>,
    previous: Vec<u32>,
}

impl KeyCache {
    /// Hostile input could invent endless keys; past this many the cache stops growing.
    const MAX_KEYS: usize = 4096;
    const NOT_CACHED: u32 = u32::MAX;

    /// A new document starts: the one just read becomes the prediction.
    pub fn next_document(&mut self) {
        if !self.current.is_empty() {
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.clear();
        }
    }

    /// Calls `read` with where the `=` of `line` (the `position`-th pair of
    /// its document, 0-based) is and what the key before it means. `None`
    /// when the line has no `=`.
    pub fn with_document_key<T>(
        &mut self,
        line: &RawLine<'_>,
        position: usize,
        read: impl FnOnce(usize, &KnownKey) -> T,
    ) -> Option<T> {
        let windows_1251 = matches!(line, RawLine::Windows1251(_));
        if let Some(index) = self.predicted(line.bytes(), position, windows_1251) {
            self.record(position, index);
            let cached = &self.keys[index as usize];
            return Some(read(cached.raw.len(), &cached.known));
        }
        let eq = memchr::memchr(b'=', line.bytes())?;
        let Some(index) = self.look_up(line, eq, windows_1251) else {
            self.record(position, Self::NOT_CACHED);
            return Some(read(eq, &KnownKey::read(line, eq)));
        };
        self.record(position, index);
        Some(read(eq, &self.keys[index as usize].known))
    }

    /// The key at `position` of the previous document, if `line` starts
    /// with it (in the same encoding) and a `=`.
    fn predicted(&self, line: &[u8], position: usize, windows_1251: bool) -> Option<u32> {
        let index = *self.previous.get(position)?;
        let cached = self.keys.get(index as usize)?;
        (cached.windows_1251 == windows_1251 && starts_with_key(line, &cached.raw)).then_some(index)
    }

    /// The index in `keys` of `line`'s key (its bytes before `eq`), added
    /// if new; `None` once the cache is full.
    fn look_up(&mut self, line: &RawLine<'_>, eq: usize, windows_1251: bool) -> Option<u32> {
        let raw = &line.bytes()[..eq];
        let map = if windows_1251 { &mut self.windows_1251 } else { &mut self.text };
        if let Some(&index) = map.get(raw) {
            return Some(index);
        }
        if self.keys.len() >= Self::MAX_KEYS {
            return None;
        }
        let index = self.keys.len() as u32;
        map.insert(raw.into(), index);
        self.keys.push(CachedKey { raw: raw.into(), windows_1251, known: KnownKey::read(line, eq) });
        Some(index)
    }

    fn record(&mut self, position: usize, index: u32) {
        // Pairs come in order, so this is a push but after a line the cache
        // did not see (a section opening, an overlong document).
        if self.current.len() != position {
            self.current.resize(position, Self::NOT_CACHED);
        }
        self.current.push(index);
    }
}

/// Whether `line` starts with `key` followed by `=` (then that `=` is the
/// line's first: a cached key has none).
fn starts_with_key(line: &[u8], key: &[u8]) -> bool {
    line.get(key.len()) == Some(&b'=') && line.starts_with(key)
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
        let read = |eq: usize, k: &KnownKey| (eq, k.text().to_owned(), k.key);
        for _ in 0..2 {
            let got = cache.with_document_key(&RawLine::Windows1251(cp1251), 0, read);
            assert_eq!(got, Some((14, "ПлательщикИНН".to_owned(), Some(DocumentKey::PayerInn))));
            let got = cache.with_document_key(&RawLine::Text(utf8), 1, read);
            assert_eq!(got, Some((utf8.len() - 2, "ПлательщикИНН".to_owned(), Some(DocumentKey::PayerInn))));
            cache.next_document();
        }
        assert_eq!(cache.with_document_key(&RawLine::Text("СекцияДокумент=x"), 0, |_, k| k.opens_section), Some(true));
        assert_eq!(cache.with_document_key(&RawLine::Text("КонецДокумента"), 0, |_, _| ()), None);
    }

    #[test]
    fn a_line_unlike_the_prediction_is_read_as_written() {
        let mut cache = KeyCache::default();
        let keys = |cache: &mut KeyCache, lines: &[&str]| -> Vec<(usize, String)> {
            cache.next_document();
            let read = |eq: usize, k: &KnownKey| (eq, k.text().to_owned());
            lines
                .iter()
                .enumerate()
                .map(|(i, l)| cache.with_document_key(&RawLine::Text(l), i, read).unwrap())
                .collect()
        };
        keys(&mut cache, &["Номер=1", "Дата=2", "Сумма=3"]);
        // Same start, longer key; a key that ends where the prediction's `=` is; another order.
        let got = keys(&mut cache, &["НомерДок=1", "Дат=2", "Сумма=3=4", "Дата=5"]);
        let want = [(16, "НомерДок"), (6, "Дат"), (10, "Сумма"), (8, "Дата")];
        assert_eq!(got, want.map(|(eq, k)| (eq, k.to_owned())));
        // A Windows-1251 line is not taken for the UTF-8 key predicted at its place.
        // The same bytes are «Ж» in UTF-8 and «Р–» in Windows-1251.
        keys(&mut cache, &["Ж=1"]);
        let got =
            cache.with_document_key(&RawLine::Windows1251(b"\xd0\x96=\xff"), 0, |eq, k| (eq, k.text().to_owned()));
        assert_eq!(got, Some((2, "Р–".to_owned())));
    }
}
