//! 1CClientBankExchange (versions 1.02 and 1.03): the text format 1C and
//! Russian banks exchange statements and payment orders in.
//!
//! Read line by line from any `BufRead`, so a large file is never held as
//! one string; only the parsed documents are kept.

mod direction;
mod keys;
mod parser;
mod shared_text;

pub use parser::parse;

/// Whether `head` (the first bytes of a file) looks like this format.
pub fn sniff(head: &[u8]) -> bool {
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let start = head.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(head.len());
    head[start..].starts_with(b"1CClientBankExchange")
}
