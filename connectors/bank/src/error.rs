//! Why a statement was rejected. A rejected file yields no statement at all:
//! nothing is half-imported.

use crate::statement::Location;

#[derive(Debug, thiserror::Error)]
pub enum StatementError {
    /// A value or structure problem at a known place.
    #[error("{location}{}: {problem}", field.as_ref().map(|f| format!(", field `{f}`")).unwrap_or_default())]
    Invalid { location: Location, field: Option<String>, problem: String },
    /// The file ends before the format's end marker.
    #[error("the file ends at line {last_line} before {expected}{}", open.as_ref().map(|o| format!(" (section opened at {o} is not closed)")).unwrap_or_default())]
    Unfinished { last_line: usize, expected: &'static str, open: Option<Location> },
    #[error("the file is empty")]
    Empty,
    #[error("not a bank statement this hub reads (expected 1CClientBankExchange, camt.053 XML or MT940)")]
    UnknownFormat,
    #[error("reading the file: {0}")]
    Io(#[from] std::io::Error),
}

impl StatementError {
    pub fn at_line(line: usize, field: Option<&str>, problem: impl Into<String>) -> Self {
        Self::Invalid { location: Location::Line(line), field: field.map(str::to_owned), problem: problem.into() }
    }

    pub fn at_path(path: impl Into<String>, field: Option<&str>, problem: impl Into<String>) -> Self {
        Self::Invalid {
            location: Location::XmlPath(path.into()),
            field: field.map(str::to_owned),
            problem: problem.into(),
        }
    }
}
