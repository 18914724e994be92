//! One copy of text that repeats across a statement's documents: the
//! document type, the company's own name and bank, frequent counterparties.
//! A statement of 100,000 documents names a handful of banks; sharing their
//! names saves an allocation (and a free) per field per document.

use std::collections::HashSet;
use std::hash::BuildHasherDefault;

use super::keys::KeyHasher;
use crate::statement::Text;

#[derive(Default)]
pub struct SharedText {
    seen: HashSet<Text, BuildHasherDefault<KeyHasher>>,
}

impl SharedText {
    /// Bounds the memory hostile input (every name different) can pin.
    const MAX_SHARED: usize = 4096;
    /// Text this short is stored inline anyway.
    const INLINE: usize = 23;

    /// `text` as a `Text`, shared with earlier equal text.
    pub fn get(&mut self, text: &str) -> Text {
        if text.len() <= Self::INLINE {
            return Text::new(text);
        }
        if let Some(shared) = self.seen.get(text) {
            return shared.clone();
        }
        let text = Text::new(text);
        if self.seen.len() < Self::MAX_SHARED {
            self.seen.insert(text.clone());
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_long_text_is_one_copy() {
        let mut shared = SharedText::default();
        let bank = "СТАВРОПОЛЬСКОЕ ОТДЕЛЕНИЕ N5230 ПАО СБЕРБАНК";
        let (a, b) = (shared.get(bank), shared.get(bank));
        assert_eq!(a, bank);
        assert!(std::ptr::eq(a.as_str(), b.as_str()));
        assert_eq!(shared.get("7707083893"), "7707083893");
    }
}
