//! Every `key=value` of a section as written, in file order, unknown keys
//! included, so nothing a bank sends is dropped.
//!
//! Stored as one text buffer plus offsets: a 1C document has 30–60 keys and a
//! large statement hundreds of thousands of documents, so two allocations per
//! section instead of two per key keep the parser fast.
//!
//! The keys of the 1CClientBankExchange format ([`COMMON_KEYS`]) are not
//! copied into the buffer but stored by their number: they are most of a
//! document's text (`ПлательщикКорсчет` is 34 bytes of UTF-8, its value
//! often 20), and every document repeats them.

use std::borrow::Cow;

use serde::ser::{Serialize, SerializeSeq, Serializer};

/// Keys stored by number instead of as text: the 1CClientBankExchange
/// 1.02/1.03 document, header and balance keys, with the spelling variants
/// banks write. Any other key is kept as text, so this list only decides
/// memory use, never what is read.
const COMMON_KEYS: [&str; 88] = [
    // Document: identity and amount.
    "Номер",
    "Дата",
    "Сумма",
    "КвитанцияДата",
    "КвитанцияВремя",
    "КвитанцияСодержание",
    // Payer.
    "ПлательщикСчет",
    "ДатаСписано",
    "Плательщик",
    "ПлательщикИНН",
    "Плательщик1",
    "Плательщик2",
    "Плательщик3",
    "Плательщик4",
    "ПлательщикРасчСчет",
    "ПлательщикБанк1",
    "ПлательщикБанк2",
    "ПлательщикБИК",
    "ПлательщикКорсчет",
    "ПлательщикКорСчет",
    "ПлательщикКПП",
    // Payee.
    "ПолучательСчет",
    "ДатаПоступило",
    "Получатель",
    "ПолучательИНН",
    "Получатель1",
    "Получатель2",
    "Получатель3",
    "Получатель4",
    "ПолучательРасчСчет",
    "ПолучательБанк1",
    "ПолучательБанк2",
    "ПолучательБИК",
    "ПолучательКорсчет",
    "ПолучательКорСчет",
    "ПолучательКПП",
    // Payment details and budget payment fields.
    "ВидПлатежа",
    "ВидОплаты",
    "Код",
    "КодНазПлатежа",
    "КодВыплат",
    "СтатусСоставителя",
    "ПоказательКБК",
    "ОКАТО",
    "ОКТМО",
    "ПоказательОснования",
    "ПоказательПериода",
    "ПоказательНомера",
    "ПоказательДаты",
    "ПоказательТипа",
    "Очередность",
    "СрокАкцепта",
    "ВидАккредитива",
    "СрокПлатежа",
    "УсловиеОплаты1",
    "УсловиеОплаты2",
    "УсловиеОплаты3",
    "ПлатежПоПредст",
    "ДополнУсловия",
    "НомерСчетаПоставщика",
    "ДатаОтсылкиДок",
    "НазначениеПлатежа",
    "НазначениеПлатежа1",
    "НазначениеПлатежа2",
    "НазначениеПлатежа3",
    "НазначениеПлатежа4",
    "НазначениеПлатежа5",
    "НазначениеПлатежа6",
    "Идентификатор",
    "ИдентификаторПлатежа",
    // Header.
    "ВерсияФормата",
    "Кодировка",
    "Отправитель",
    "ДатаСоздания",
    "ВремяСоздания",
    "ДатаНачала",
    "ДатаКонца",
    "РасчСчет",
    "Документ",
    // Balance sections.
    "НачальныйОстаток",
    "ВсегоСписано",
    "ВсегоПоступило",
    "КонечныйОстаток",
    // Other formats' header keys written for every statement.
    ":20:",
    ":25:",
    ":28C:",
    "Stmt/Id",
    "MsgId",
];

/// A key as [`Attributes`] stores it: the number of a [`COMMON_KEYS`] entry,
/// or text to copy. Made only by [`StoredKey::new`], so equal keys are
/// always stored alike (which `PartialEq` of `Attributes` relies on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey<'a>(KeyForm<'a>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyForm<'a> {
    Common(u32),
    Text(Cow<'a, str>),
}

impl<'a> StoredKey<'a> {
    /// How `key` will be stored. A scan of a short list: callers that store
    /// the same key often (the 1C parser's key cache) keep the result.
    pub fn new(key: &'a str) -> Self {
        match COMMON_KEYS.iter().position(|common| *common == key) {
            Some(index) => Self(KeyForm::Common(index as u32)),
            None => Self(KeyForm::Text(Cow::Borrowed(key))),
        }
    }

    /// The same key owning its text, to be kept.
    pub fn into_owned(self) -> StoredKey<'static> {
        StoredKey(match self.0 {
            KeyForm::Common(index) => KeyForm::Common(index),
            KeyForm::Text(text) => KeyForm::Text(Cow::Owned(text.into_owned())),
        })
    }

    /// The key as written.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            KeyForm::Common(index) => common_key(*index),
            KeyForm::Text(text) => text,
        }
    }
}

fn common_key(index: u32) -> &'static str {
    COMMON_KEYS.get(index as usize).copied().unwrap_or_default()
}

/// Where a pair is in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bound {
    /// `COMMON | index` for a common key (the value starts where the previous
    /// pair ended); otherwise where the key's text ends (it starts where the
    /// previous pair ended, and the value right after it).
    key: u32,
    value_end: u32,
}

impl Bound {
    /// Marks `key` as a [`COMMON_KEYS`] index. Text offsets stay below it:
    /// a section's text is capped at [`Attributes::MAX_TEXT`].
    const COMMON: u32 = 1 << 31;
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    text: String,
    bounds: Vec<Bound>,
}

impl Attributes {
    /// No real section comes near 2 GiB of text; past it pairs are refused.
    const MAX_TEXT: usize = (Bound::COMMON - 1) as usize;

    pub fn with_capacity(text: usize, keys: usize) -> Self {
        Self { text: String::with_capacity(text), bounds: Vec::with_capacity(keys) }
    }

    /// Appends a pair. Returns `false` (and stores nothing) if the section
    /// would exceed 2 GiB of text, which no real section does.
    pub fn push(&mut self, key: &str, value: &str) -> bool {
        self.push_with(&StoredKey::new(key), |text| text.push_str(value))
    }

    /// Appends `key` and the value `write_value` appends to the buffer it
    /// is given (so a value can be decoded straight into place). Returns
    /// `false` (and stores nothing) as `push` does.
    pub fn push_with(&mut self, key: &StoredKey<'_>, write_value: impl FnOnce(&mut String)) -> bool {
        let start = self.text.len();
        let key = match &key.0 {
            KeyForm::Common(index) => Bound::COMMON | index,
            KeyForm::Text(text) => {
                self.text.push_str(text);
                self.text.len() as u32
            }
        };
        write_value(&mut self.text);
        if self.text.len() > Self::MAX_TEXT {
            self.text.truncate(start);
            return false;
        }
        self.bounds.push(Bound { key, value_end: self.text.len() as u32 });
        true
    }

    pub fn len(&self) -> usize {
        self.bounds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bounds.is_empty()
    }

    /// The `index`-th pair (as returned by `push` order), if any.
    pub fn pair(&self, index: usize) -> Option<(&str, &str)> {
        let bound = *self.bounds.get(index)?;
        let start = if index == 0 { 0 } else { self.bounds[index - 1].value_end as usize };
        Some(self.split(start, bound))
    }

    /// Only the `index`-th value: what the parser reads a document's fields
    /// from, without looking at the key.
    pub fn value(&self, index: usize) -> Option<&str> {
        let bound = *self.bounds.get(index)?;
        let start = match bound.key {
            key if key & Bound::COMMON == 0 => key,
            _ if index == 0 => 0,
            _ => self.bounds[index - 1].value_end,
        };
        self.text.get(start as usize..bound.value_end as usize)
    }

    /// The key and value of the pair `bound` whose text starts at `start`.
    fn split(&self, start: usize, bound: Bound) -> (&str, &str) {
        let end = bound.value_end as usize;
        if bound.key & Bound::COMMON != 0 {
            return (common_key(bound.key & !Bound::COMMON), self.text.get(start..end).unwrap_or_default());
        }
        let key_end = bound.key as usize;
        (self.text.get(start..key_end).unwrap_or_default(), self.text.get(key_end..end).unwrap_or_default())
    }

    /// Bytes of text held (to size the next section's buffer).
    pub fn text_len(&self) -> usize {
        self.text.len()
    }

    /// Pairs in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut start = 0usize;
        self.bounds.iter().map(move |&bound| {
            let pair = self.split(start, bound);
            start = bound.value_end as usize;
            pair
        })
    }

    /// The last value written under `key` (exact spelling).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter().filter(|(k, _)| *k == key).last().map(|(_, v)| v)
    }

    /// Every value written under `key`, in order (header `РасчСчет`, `Документ`).
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.iter().filter(move |(k, _)| *k == key).map(|(_, v)| v)
    }
}

impl Serialize for Attributes {
    /// A list of `[key, value]` pairs: a map would lose repeated keys and order.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for pair in self.iter() {
            seq.serialize_element(&pair)?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_repeats_and_empty_values() {
        let mut a = Attributes::default();
        a.push("РасчСчет", "1");
        a.push("Документ", "");
        a.push("РасчСчет", "2");
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![("РасчСчет", "1"), ("Документ", ""), ("РасчСчет", "2")]);
        assert_eq!(a.get("РасчСчет"), Some("2"));
        assert_eq!(a.get_all("РасчСчет").collect::<Vec<_>>(), vec!["1", "2"]);
        assert_eq!(a.get("Нет"), None);
    }

    #[test]
    fn push_with_writes_the_value_in_place() {
        let mut a = Attributes::default();
        a.push("Номер", "1");
        assert!(a.push_with(&StoredKey::new("Сумма"), |text| text.push_str("12.50")));
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![("Номер", "1"), ("Сумма", "12.50")]);
    }

    #[test]
    fn common_and_other_keys_mix() {
        let mut a = Attributes::default();
        for (key, value) in [("КодДебитора", "77"), ("Номер", "1"), ("", "x"), ("Сумма", ""), ("Ещё", "")]
        {
            a.push(key, value);
        }
        let pairs = [("КодДебитора", "77"), ("Номер", "1"), ("", "x"), ("Сумма", ""), ("Ещё", "")];
        assert_eq!(a.iter().collect::<Vec<_>>(), pairs);
        for (index, pair) in pairs.iter().enumerate() {
            assert_eq!(a.pair(index), Some(*pair));
            assert_eq!(a.value(index), Some(pair.1));
        }
        assert_eq!(a.pair(pairs.len()), None);
        // Only the keys outside the common list take room in the text.
        assert_eq!(a.text_len(), "КодДебитора77".len() + "1x".len() + "Ещё".len());
    }

    #[test]
    fn equal_pairs_are_equal_attributes() {
        let (mut a, mut b) = (Attributes::default(), Attributes::with_capacity(64, 4));
        a.push("Номер", "1");
        a.push("Прочее", "2");
        b.push_with(&StoredKey::new("Номер"), |t| t.push('1'));
        b.push_with(&StoredKey::new("Прочее"), |t| t.push('2'));
        assert_eq!(a, b);
    }

    #[test]
    fn common_keys_are_distinct() {
        for (i, key) in COMMON_KEYS.iter().enumerate() {
            assert_eq!(StoredKey::new(key), StoredKey(KeyForm::Common(i as u32)), "{key}");
        }
    }
}
