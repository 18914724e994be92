//! Diagnostics: one problem in a mapping file, as `file:line:column: message`.
//!
//! The loader collects every problem it can find instead of stopping at the
//! first, so an admin fixes a broken edit in one round trip.

use std::fmt;

use crate::flow::plan::SourceSpan;

/// One problem found while loading a mapping set.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    /// The file name as given to the loader (a path for `load_dir`).
    pub file: String,
    /// 1-based line; 0 when the problem concerns the whole file.
    pub line: u32,
    /// 1-based column; 0 when the problem concerns the whole file.
    pub column: u32,
    pub message: String,
}

impl Diagnostic {
    pub fn at(span: &SourceSpan, message: impl Into<String>) -> Self {
        Self { file: span.file.clone(), line: span.line, column: span.column, message: message.into() }
    }

    /// A problem with a whole file (unreadable, not UTF-8).
    pub fn file(file: &str, message: impl Into<String>) -> Self {
        Self { file: file.to_owned(), line: 0, column: 0, message: message.into() }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.column, self.message)
    }
}

/// Collects diagnostics while validation walks the spec.
#[derive(Debug, Default)]
pub(crate) struct Diagnostics(Vec<Diagnostic>);

impl Diagnostics {
    pub fn error(&mut self, span: &SourceSpan, message: impl Into<String>) {
        self.0.push(Diagnostic::at(span, message));
    }

    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.0.push(diagnostic);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sorted by file and position so the report reads top to bottom.
    pub fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.0.sort();
        self.0.dedup();
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnostics_display_as_file_line_column() {
        let d = Diagnostic { file: "sales.yaml".into(), line: 3, column: 7, message: "unknown stage `x`".into() };
        assert_eq!(d.to_string(), "sales.yaml:3:7: unknown stage `x`");
    }
}
