//! Every `key=value` of a section as written, in file order, unknown keys
//! included, so nothing a bank sends is dropped.
//!
//! Stored as one text buffer plus offsets: a 1C document has 30–60 keys and a
//! large statement hundreds of thousands of documents, so two allocations per
//! section instead of two per key keep the parser fast.

use serde::ser::{Serialize, SerializeSeq, Serializer};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    text: String,
    /// `(key_end, value_end)`; each key starts where the previous value ended.
    bounds: Vec<(u32, u32)>,
}

impl Attributes {
    pub fn with_capacity(text: usize, keys: usize) -> Self {
        Self { text: String::with_capacity(text), bounds: Vec::with_capacity(keys) }
    }

    /// Appends a pair. Returns `false` (and stores nothing) if the section
    /// would exceed 4 GiB of text, which no real section does.
    pub fn push(&mut self, key: &str, value: &str) -> bool {
        if self.text.len() + key.len() + value.len() > u32::MAX as usize {
            return false;
        }
        self.text.push_str(key);
        let key_end = self.text.len() as u32;
        self.text.push_str(value);
        self.bounds.push((key_end, self.text.len() as u32));
        true
    }

    /// Appends `key` and the value `write_value` appends to the buffer it
    /// is given (so a value can be decoded straight into place). Returns
    /// `false` (and stores nothing) as `push` does.
    pub fn push_with(&mut self, key: &str, write_value: impl FnOnce(&mut String)) -> bool {
        let start = self.text.len();
        self.text.push_str(key);
        let key_end = self.text.len();
        write_value(&mut self.text);
        if self.text.len() > u32::MAX as usize {
            self.text.truncate(start);
            return false;
        }
        self.bounds.push((key_end as u32, self.text.len() as u32));
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
        let &(key_end, value_end) = self.bounds.get(index)?;
        let start = if index == 0 { 0 } else { self.bounds[index - 1].1 as usize };
        Some((&self.text[start..key_end as usize], &self.text[key_end as usize..value_end as usize]))
    }

    /// Bytes of text held (to size the next section's buffer).
    pub fn text_len(&self) -> usize {
        self.text.len()
    }

    /// Pairs in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut start = 0usize;
        self.bounds.iter().map(move |&(key_end, value_end)| {
            let (k, v) = (key_end as usize, value_end as usize);
            let pair = (&self.text[start..k], &self.text[k..v]);
            start = v;
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
        assert!(a.push_with("Сумма", |text| text.push_str("12.50")));
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![("Номер", "1"), ("Сумма", "12.50")]);
    }
}
