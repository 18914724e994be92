//! A bank statement file as the store keeps it: the bytes the bank gave,
//! compressed with zstd, and read back byte for byte.
//!
//! A statement is stored once per file and read back only when someone
//! asks for the file as received, while a large one is tens of megabytes
//! of very repetitive text (a 58 MB 1CClientBankExchange file of 100,000
//! payments). Compressed, it costs the import's transaction a tenth of the
//! pages to write, and the database a tenth of the space. Files stored
//! before compression came in are kept as they were (`Identity`).

use std::io::Read;

use super::StoreError;

/// How a stored statement file's bytes are encoded (`bank_statements.body_encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileEncoding {
    /// The bytes as received.
    Identity,
    /// A zstd frame of the bytes as received.
    Zstd,
}

impl FileEncoding {
    pub fn as_str(self) -> &'static str {
        match self {
            FileEncoding::Identity => "identity",
            FileEncoding::Zstd => "zstd",
        }
    }

    pub fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "identity" => Ok(FileEncoding::Identity),
            "zstd" => Ok(FileEncoding::Zstd),
            other => Err(super::error::corrupt(format!("statement file encoding `{other}`"))),
        }
    }
}

/// zstd's level 3 (its default): a 58 MB statement shrinks about tenfold in
/// a fraction of a second, on a thread of its own while the import matches.
const LEVEL: i32 = 3;

/// A statement file, encoded for storing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    pub encoding: FileEncoding,
    pub bytes: Vec<u8>,
}

impl StoredFile {
    /// The file's bytes compressed. CPU-bound: call it off the async
    /// threads for a large file (`tokio::task::spawn_blocking`).
    pub fn compress(original: &[u8]) -> Result<Self, StoreError> {
        let failed = |e: std::io::Error| StoreError::Database(format!("compressing a statement file: {e}"));
        let mut compressor = zstd::bulk::Compressor::new(LEVEL).map_err(failed)?;
        // A checksum in the frame: a damaged file reads back as an error,
        // never as other bytes.
        compressor.include_checksum(true).map_err(failed)?;
        let bytes = compressor.compress(original).map_err(failed)?;
        Ok(Self { encoding: FileEncoding::Zstd, bytes })
    }

    /// The bytes as received.
    pub fn original(&self) -> Result<Vec<u8>, StoreError> {
        match self.encoding {
            FileEncoding::Identity => Ok(self.bytes.clone()),
            FileEncoding::Zstd => {
                let mut original = Vec::new();
                zstd::stream::read::Decoder::new(self.bytes.as_slice())
                    .and_then(|mut decoder| decoder.read_to_end(&mut original))
                    .map_err(|e| super::error::corrupt(format!("stored statement file: {e}")))?;
                Ok(original)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compressed_file_reads_back_byte_for_byte() {
        let text = "1CClientBankExchange\r\nСекцияДокумент=Платежное поручение\r\nСумма=85670.00\r\n".repeat(2_000);
        let file = StoredFile::compress(text.as_bytes()).unwrap();
        assert_eq!(file.encoding, FileEncoding::Zstd);
        assert!(file.bytes.len() * 20 < text.len(), "{} bytes from {}", file.bytes.len(), text.len());
        assert_eq!(file.original().unwrap(), text.as_bytes());

        let empty = StoredFile::compress(b"").unwrap();
        assert_eq!(empty.original().unwrap(), b"");
        let kept = StoredFile { encoding: FileEncoding::Identity, bytes: b"as received".to_vec() };
        assert_eq!(kept.original().unwrap(), b"as received");
    }

    #[test]
    fn a_damaged_file_is_an_error_not_other_bytes() {
        let mut file = StoredFile::compress("СекцияДокумент=Платежное поручение\r\n".repeat(100).as_bytes()).unwrap();
        let mut flipped = file.clone();
        let middle = flipped.bytes.len() / 2;
        flipped.bytes[middle] ^= 0x20;
        assert!(flipped.original().is_err(), "a changed byte");
        let last = file.bytes.len() - 1;
        file.bytes.truncate(last);
        assert!(file.original().is_err(), "a cut file");
        assert_eq!(FileEncoding::parse("zstd").unwrap(), FileEncoding::Zstd);
        assert!(FileEncoding::parse("gzip").is_err());
    }
}
