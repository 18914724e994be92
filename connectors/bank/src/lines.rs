//! Reads a text statement (1CClientBankExchange, MT940) line by line from
//! any `BufRead`, deciding each line's encoding on its own.
//!
//! Why per line: the `Кодировка` header is often wrong, and real files mix
//! encodings (a Windows-1251 file whose last line was appended as UTF-8).
//! A line that is valid UTF-8 is read as UTF-8; anything else as
//! Windows-1251. Accidental validity is not a practical risk: every 1C key is
//! Cyrillic with lower-case letters (0xE0–0xFF in Windows-1251), and a
//! lower-case letter followed by another letter is never valid UTF-8.
//! Line ends may be CRLF, LF or mixed; the last line may lack one.
//!
//! Lines are handed out as slices of the reader's own buffer (for in-memory
//! input, of the input itself): only a line split across two buffer fills is
//! copied. A Windows-1251 line stays bytes until the caller decodes it
//! straight into the place it keeps the text ([`RawLine::decode_into`]), so
//! a 100 MB statement is copied once, not three times.

use std::io::BufRead;
use std::sync::LazyLock;

use encoding_rs::WINDOWS_1251;

use crate::statement::TextEncoding;

/// Counts of non-ASCII lines per encoding, with the first line of each.
#[derive(Debug, Default, Clone, Copy)]
pub struct EncodingTally {
    pub utf8_lines: usize,
    pub first_utf8_line: usize,
    pub windows1251_lines: usize,
    pub first_windows1251_line: usize,
}

impl EncodingTally {
    pub fn encoding(&self) -> TextEncoding {
        match (self.utf8_lines, self.windows1251_lines) {
            (0, 0) => TextEncoding::Ascii,
            (_, 0) => TextEncoding::Utf8,
            (0, _) => TextEncoding::Windows1251,
            _ => TextEncoding::Mixed,
        }
    }
}

/// One line without its line end, as found in the input.
#[derive(Debug, Clone, Copy)]
pub enum RawLine<'a> {
    /// ASCII or valid UTF-8: already text.
    Text(&'a str),
    /// Not valid UTF-8: Windows-1251 bytes.
    Windows1251(&'a [u8]),
}

/// The UTF-8 of every Windows-1251 byte: up to three bytes, zero-padded,
/// then how many there are. Built from encoding_rs's decoding of each byte
/// (its one unmapped byte, 0x98, reads as U+FFFD, as encoding_rs decodes it).
static UTF8_OF: LazyLock<[[u8; 4]; 256]> = LazyLock::new(|| {
    let mut table = [[0u8; 4]; 256];
    for (slot, b) in table.iter_mut().zip(0..=0xFFu8) {
        let byte = [b];
        let (decoded, _) = WINDOWS_1251.decode_without_bom_handling(&byte);
        let c = decoded.chars().next().unwrap_or('\u{FFFD}');
        let len = c.encode_utf8(&mut slot[..3]).len();
        slot[3] = len as u8;
    }
    table
});

/// Appends Windows-1251 `bytes` to `out` as UTF-8.
///
/// Each byte's UTF-8 is copied from a table straight into the string's
/// spare room, four bytes at a time whatever its length, so no branch
/// depends on the letter, instead of a `String::push` per character (a
/// capacity check and a branch on the character's length each). Measured
/// slower before: encoding_rs's decoder (set up per short value), `push_str`
/// of a per-byte string, and encoding into a stack buffer then validated.
pub fn decode_windows_1251_into(bytes: &[u8], out: &mut String) {
    // Most values of a Cyrillic document (dates, amounts, accounts) are
    // ASCII: copied whole. (`from_utf8` would check them a second time.)
    if bytes.is_ascii() {
        // SAFETY: ASCII bytes are valid UTF-8, so the string stays valid.
        unsafe { out.as_mut_vec() }.extend_from_slice(bytes);
        return;
    }
    let table = &*UTF8_OF;
    // The exact length, so a document's text grows no more than it needs
    // (reserving for the worst case would grow it to half again its size).
    let decoded_len: usize = bytes.iter().map(|&b| usize::from(table[usize::from(b)][3])).sum();
    // Three bytes of slack: every character is written as four bytes (its
    // UTF-8 and the table's length byte, overwritten by the next one).
    out.reserve(decoded_len + 3);
    let start = out.len();
    // SAFETY: `as_mut_vec` requires the string to be valid UTF-8 whenever it
    // is used as a string again. Writing into the spare capacity does not
    // change the string's contents; only `set_len` below does, and it takes
    // in exactly the `decoded_len` bytes written, which are whole UTF-8
    // sequences (`UTF8_OF` holds `char::encode_utf8` output, and each entry
    // is followed by the next at `at + len`). If anything panicked before,
    // the length would be unchanged and the string as it was. Tested by
    // `windows_1251_table_agrees_with_encoding_rs` and
    // `decoding_appends_exactly_the_text`.
    let buffer = unsafe { out.as_mut_vec() };
    let spare = &mut buffer.spare_capacity_mut()[..decoded_len + 3];
    let mut at = spare.as_mut_ptr().cast::<u8>();
    for &b in bytes {
        let utf8 = table[usize::from(b)];
        // SAFETY: `at` is `spare`'s start plus the lengths of the characters
        // before this one; those and this one's (at least 1) add up to at
        // most `decoded_len`, the sum of all lengths from the same table.
        // So `at` is at most `decoded_len - 1` bytes in, and the four bytes
        // written end within `spare` (`decoded_len + 3` long); the new `at`
        // stays within it too. `write_unaligned`: `u8` data has no alignment.
        unsafe {
            at.cast::<[u8; 4]>().write_unaligned(utf8);
            at = at.add(usize::from(utf8[3]));
        }
    }
    // SAFETY: `start + decoded_len` is within the capacity reserved above,
    // and the `decoded_len` bytes after `start` were written in the loop
    // (see the first SAFETY comment for why they are valid UTF-8).
    unsafe { buffer.set_len(start + decoded_len) };
}

impl<'a> RawLine<'a> {
    /// The bytes as they are in the file.
    pub fn bytes(&self) -> &'a [u8] {
        match self {
            RawLine::Text(text) => text.as_bytes(),
            RawLine::Windows1251(bytes) => bytes,
        }
    }

    /// Appends the line's bytes `range` (which must not split a character
    /// of a UTF-8 line, e.g. bounded by an ASCII byte) to `out` as UTF-8.
    pub fn decode_range_into(&self, range: std::ops::Range<usize>, out: &mut String) {
        match self {
            RawLine::Text(text) => out.push_str(text.get(range).unwrap_or_default()),
            RawLine::Windows1251(bytes) => decode_windows_1251_into(bytes.get(range).unwrap_or_default(), out),
        }
    }

    pub fn decode_into(&self, out: &mut String) {
        self.decode_range_into(0..self.bytes().len(), out);
    }
}

pub struct LineReader<R> {
    raw: RawLines<R>,
    /// The last line decoded by [`LineReader::next_line`].
    decoded: String,
}

/// The undecoded side of [`LineReader`].
struct RawLines<R> {
    input: R,
    /// Bytes of the line last returned still to be consumed from `input`.
    pending: usize,
    /// A line split across buffer fills, put together.
    carry: Vec<u8>,
    line_number: usize,
    tally: EncodingTally,
}

impl<R: BufRead> LineReader<R> {
    pub fn new(input: R) -> Self {
        let raw = RawLines { input, pending: 0, carry: Vec::new(), line_number: 0, tally: Default::default() };
        Self { raw, decoded: String::new() }
    }

    /// Number of the line last returned (1-based; 0 before the first).
    pub fn line_number(&self) -> usize {
        self.raw.line_number
    }

    /// The encodings of the lines read so far.
    pub fn tally(&self) -> EncodingTally {
        self.raw.tally
    }

    /// The next line decoded, without its line end, with its number
    /// (1-based), or `None` at the end of input.
    pub fn next_line(&mut self) -> std::io::Result<Option<(usize, &str)>> {
        let Some((n, line)) = self.raw.next()? else { return Ok(None) };
        let text = match line {
            RawLine::Text(text) => text,
            RawLine::Windows1251(bytes) => {
                self.decoded.clear();
                decode_windows_1251_into(bytes, &mut self.decoded);
                &self.decoded
            }
        };
        Ok(Some((n, text)))
    }

    /// The next line as found, with its number (1-based), or `None` at the
    /// end of input.
    pub fn next_raw(&mut self) -> std::io::Result<Option<(usize, RawLine<'_>)>> {
        self.raw.next()
    }
}

impl<R: BufRead> RawLines<R> {
    fn next(&mut self) -> std::io::Result<Option<(usize, RawLine<'_>)>> {
        self.input.consume(std::mem::take(&mut self.pending));
        let (newline, available) = {
            let buf = self.input.fill_buf()?;
            (memchr::memchr(b'\n', buf), buf.len())
        };
        if available == 0 {
            return Ok(None);
        }
        self.line_number += 1;
        let bytes: &[u8] = match newline {
            // The whole line is in the buffer: hand out a slice of it.
            Some(end) => {
                self.pending = end + 1;
                &self.input.fill_buf()?[..end]
            }
            None => {
                self.carry.clear();
                self.input.read_until(b'\n', &mut self.carry)?;
                self.carry.strip_suffix(b"\n").unwrap_or(&self.carry)
            }
        };
        let mut bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        if self.line_number == 1
            && let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF")
        {
            bytes = rest;
        }
        Ok(Some((self.line_number, classify(bytes, self.line_number, &mut self.tally))))
    }
}

/// The line as UTF-8 text, if it is valid UTF-8. Most non-UTF-8 lines are
/// told by their first non-ASCII byte and the next one (a Windows-1251
/// Cyrillic letter is neither a UTF-8 lead byte followed by a continuation
/// byte), without a full validation.
fn as_utf8(bytes: &[u8]) -> Option<&str> {
    let first = bytes.iter().position(|b| !b.is_ascii())?;
    let lead_ok = (0xC2..=0xF4).contains(&bytes[first]);
    let next_ok = bytes.get(first + 1).is_some_and(|b| b & 0xC0 == 0x80);
    if !(lead_ok && next_ok) {
        return None;
    }
    std::str::from_utf8(bytes).ok()
}

/// Decides a line's encoding and counts it.
fn classify<'a>(bytes: &'a [u8], line_number: usize, tally: &mut EncodingTally) -> RawLine<'a> {
    if bytes.is_ascii() {
        // ASCII is valid UTF-8 and reads the same in both encodings.
        return RawLine::Text(std::str::from_utf8(bytes).unwrap_or_default());
    }
    if let Some(text) = as_utf8(bytes) {
        if tally.utf8_lines == 0 {
            tally.first_utf8_line = line_number;
        }
        tally.utf8_lines += 1;
        return RawLine::Text(text);
    }
    if tally.windows1251_lines == 0 {
        tally.first_windows1251_line = line_number;
    }
    tally.windows1251_lines += 1;
    RawLine::Windows1251(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_lines(input: impl BufRead) -> (Vec<String>, TextEncoding) {
        let mut reader = LineReader::new(input);
        let mut out = Vec::new();
        while let Some((_, line)) = reader.next_line().unwrap() {
            out.push(line.to_owned());
        }
        (out, reader.tally().encoding())
    }

    #[test]
    fn crlf_lf_mixed_and_no_final_newline() {
        let (lines, enc) = all_lines(&b"a\r\nb\nc\r\n\r\nd"[..]);
        assert_eq!(lines, ["a", "b", "c", "", "d"]);
        assert_eq!(enc, TextEncoding::Ascii);
    }

    #[test]
    fn each_line_is_decoded_in_its_own_encoding() {
        let mut input = b"\xEF\xBB\xBF1CClientBankExchange\r\n".to_vec();
        input.extend_from_slice(b"\xc2\xe5\xf0\xf1\xe8\xff=1.03\r\n"); // «Версия» in Windows-1251
        input.extend_from_slice("КонецФайла\n".as_bytes());
        let (lines, enc) = all_lines(input.as_slice());
        assert_eq!(lines, ["1CClientBankExchange", "Версия=1.03", "КонецФайла"]);
        assert_eq!(enc, TextEncoding::Mixed);
    }

    #[test]
    fn lines_split_across_buffer_fills_read_the_same() {
        let mut input = Vec::new();
        for i in 0..200 {
            input.extend_from_slice(format!("Ключ{i}=значение\r\n").as_bytes());
            input.extend_from_slice(b"\xcd\xee\xec\xe5\xf0=\xb9 12\n"); // «Номер=№ 12» in Windows-1251
        }
        input.extend_from_slice(b"end");
        let (whole, _) = all_lines(input.as_slice());
        // A 7-byte buffer splits most lines, and some of them inside a character.
        let (split, enc) = all_lines(std::io::BufReader::with_capacity(7, input.as_slice()));
        assert_eq!(whole, split);
        assert_eq!(whole.len(), 401);
        assert_eq!(whole[1], "Номер=№ 12");
        assert_eq!(enc, TextEncoding::Mixed);
    }

    #[test]
    fn utf8_is_told_from_windows_1251_as_by_full_validation() {
        let samples: [&[u8]; 7] = [
            "Плательщик=ООО «Ромашка»".as_bytes(),
            b"\xcf\xeb\xe0\xf2=1",
            b"\xc2\xe5\xf0\xf1\xe8\xff",
            b"a\xd0",
            b"abc\xd0\x9f\xff",
            "№ 12".as_bytes(),
            b"\xb9 12",
        ];
        for bytes in samples {
            assert_eq!(as_utf8(bytes), std::str::from_utf8(bytes).ok(), "{bytes:?}");
        }
    }

    #[test]
    fn windows_1251_table_agrees_with_encoding_rs() {
        let all: Vec<u8> = (0..=255u8).filter(|b| *b != b'\n').collect();
        let mut ours = String::new();
        decode_windows_1251_into(&all, &mut ours);
        assert_eq!(ours, WINDOWS_1251.decode_without_bom_handling(&all).0);
    }

    #[test]
    fn decoding_appends_exactly_the_text() {
        // Every byte, after text from empty to past the string's capacity,
        // so both writing into the slack and growing the string are exercised.
        for b in 0..=255u8 {
            let want = WINDOWS_1251.decode_without_bom_handling(&[b, b'a', b, b]).0.into_owned();
            for before in 0..20 {
                let mut out = String::with_capacity(16);
                out.push_str(&"ж".repeat(before / 2));
                let prefix = out.clone();
                decode_windows_1251_into(&[b, b'a', b, b], &mut out);
                assert_eq!(out, prefix + &want, "{b:#x} after {before}");
            }
        }
        let mut out = String::from("№");
        decode_windows_1251_into(b"\xb9 \x85\xab", &mut out);
        assert_eq!(out, "№№ …«");
    }
}
