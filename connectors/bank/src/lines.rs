//! Reads a text statement (1CClientBankExchange, MT940) line by line from
//! any `BufRead`, decoding each line on its own.
//!
//! Why per line: the `Кодировка` header is often wrong, and real files mix
//! encodings (a Windows-1251 file whose last line was appended as UTF-8).
//! A line that is valid UTF-8 is read as UTF-8; anything else as
//! Windows-1251. Accidental validity is not a practical risk: every 1C key is
//! Cyrillic with lower-case letters (0xE0–0xFF in Windows-1251), and a
//! lower-case letter followed by another letter is never valid UTF-8.
//! Line ends may be CRLF, LF or mixed; the last line may lack one.

use std::io::BufRead;

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

pub struct LineReader<R> {
    input: R,
    raw: Vec<u8>,
    decoded: String,
    line_number: usize,
    pub tally: EncodingTally,
    /// Windows-1251 bytes 0x80–0xFF as UTF-8, from encoding_rs's table: a
    /// lookup per byte is cheaper than a decoder per (short) line.
    high_half: Vec<String>,
}

fn windows_1251_high_half() -> Vec<String> {
    (0x80..=0xFFu8).map(|b| WINDOWS_1251.decode_without_bom_handling(&[b]).0.into_owned()).collect()
}

impl<R: BufRead> LineReader<R> {
    pub fn new(input: R) -> Self {
        Self {
            input,
            raw: Vec::with_capacity(256),
            decoded: String::with_capacity(512),
            line_number: 0,
            tally: Default::default(),
            high_half: windows_1251_high_half(),
        }
    }

    /// Number of the line last returned (1-based; 0 before the first).
    pub fn line_number(&self) -> usize {
        self.line_number
    }

    /// The next line without its line end, with its number (1-based), or
    /// `None` at the end of input.
    pub fn next_line(&mut self) -> std::io::Result<Option<(usize, &str)>> {
        let n = self.line_number + 1;
        Ok(self.read_line()?.map(|line| (n, line)))
    }

    fn read_line(&mut self) -> std::io::Result<Option<&str>> {
        self.raw.clear();
        if self.input.read_until(b'\n', &mut self.raw)? == 0 {
            return Ok(None);
        }
        self.line_number += 1;
        let mut bytes: &[u8] = &self.raw;
        if let Some(rest) = bytes.strip_suffix(b"\n") {
            bytes = rest;
        }
        if let Some(rest) = bytes.strip_suffix(b"\r") {
            bytes = rest;
        }
        if self.line_number == 1
            && let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF")
        {
            bytes = rest;
        }
        if bytes.is_ascii() {
            // ASCII is valid UTF-8 and reads the same in both encodings.
            return Ok(Some(std::str::from_utf8(bytes).unwrap_or_default()));
        }
        if let Ok(text) = std::str::from_utf8(bytes) {
            if self.tally.utf8_lines == 0 {
                self.tally.first_utf8_line = self.line_number;
            }
            self.tally.utf8_lines += 1;
            return Ok(Some(text));
        }
        if self.tally.windows1251_lines == 0 {
            self.tally.first_windows1251_line = self.line_number;
        }
        self.tally.windows1251_lines += 1;
        self.decoded.clear();
        self.decoded.reserve(bytes.len() * 3);
        for &b in bytes {
            if b < 0x80 {
                self.decoded.push(b as char);
            } else {
                self.decoded.push_str(&self.high_half[usize::from(b - 0x80)]);
            }
        }
        Ok(Some(&self.decoded))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_lines(input: &[u8]) -> (Vec<String>, TextEncoding) {
        let mut reader = LineReader::new(input);
        let mut out = Vec::new();
        while let Some((_, line)) = reader.next_line().unwrap() {
            out.push(line.to_owned());
        }
        (out, reader.tally.encoding())
    }

    #[test]
    fn crlf_lf_mixed_and_no_final_newline() {
        let (lines, enc) = all_lines(b"a\r\nb\nc\r\n\r\nd");
        assert_eq!(lines, ["a", "b", "c", "", "d"]);
        assert_eq!(enc, TextEncoding::Ascii);
    }

    #[test]
    fn each_line_is_decoded_in_its_own_encoding() {
        let mut input = b"\xEF\xBB\xBF1CClientBankExchange\r\n".to_vec();
        input.extend_from_slice(b"\xc2\xe5\xf0\xf1\xe8\xff=1.03\r\n"); // «Версия» in Windows-1251
        input.extend_from_slice("КонецФайла\n".as_bytes());
        let (lines, enc) = all_lines(&input);
        assert_eq!(lines, ["1CClientBankExchange", "Версия=1.03", "КонецФайла"]);
        assert_eq!(enc, TextEncoding::Mixed);
    }
}
