//! The one place that knows the YAML library.
//!
//! serde-saphyr is young and changes major versions quickly, so everything
//! else goes through `parse_yaml` and `Located<T>`; swapping the library
//! means rewriting this file only.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde::{Deserialize, Deserializer};
use serde_saphyr::MessageFormatter;

use super::diagnostic::Diagnostic;
use crate::flow::plan::SourceSpan;

/// Parses one YAML document into `T`, reporting the first syntax or shape
/// problem with its line and column.
pub(crate) fn parse_yaml<T: for<'de> Deserialize<'de>>(file: &str, source: &str) -> Result<T, Diagnostic> {
    let options = serde_saphyr::options! {
        with_snippet: false,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
    };
    serde_saphyr::from_str_with_options::<T>(source, options).map_err(|error| {
        let message = serde_saphyr::UserMessageFormatter.format_message(&error).into_owned();
        let (line, column) = error
            .location()
            .map(|l| (u32::try_from(l.line()).unwrap_or(u32::MAX), u32::try_from(l.column()).unwrap_or(u32::MAX)))
            .unwrap_or((0, 0));
        Diagnostic { file: file.to_owned(), line, column, message }
    })
}

/// A value with the line and column it was written at, so semantic checks
/// (unknown stage, bad expression) point at the exact spot.
///
/// Equality and ordering look at the value only: two equal names written
/// in different places are the same name.
#[derive(Debug, Clone)]
pub struct Located<T> {
    pub value: T,
    pub line: u32,
    pub column: u32,
}

impl<T> Located<T> {
    /// Where the value is, in `file`.
    pub fn span(&self, file: &str) -> SourceSpan {
        SourceSpan { file: file.to_owned(), line: self.line, column: self.column }
    }
}

impl<T> std::ops::Deref for Located<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = serde_saphyr::Spanned::<T>::deserialize(deserializer)?;
        let line = u32::try_from(spanned.referenced.line()).unwrap_or(u32::MAX);
        let column = u32::try_from(spanned.referenced.column()).unwrap_or(u32::MAX);
        Ok(Self { value: spanned.value, line, column })
    }
}

impl<T: PartialEq> PartialEq for Located<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl<T: Eq> Eq for Located<T> {}

impl<T: Ord> PartialOrd for Located<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T: Ord> Ord for Located<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.value.cmp(&other.value)
    }
}

/// The schema of a located value is the schema of the value: the location
/// is invisible in the file.
impl<T: schemars::JsonSchema> schemars::JsonSchema for Located<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }

    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }

    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Probe {
        names: BTreeMap<Located<String>, Located<u32>>,
    }

    #[test]
    fn keys_and_values_keep_their_positions() {
        let probe: Probe = parse_yaml("p.yaml", "names:\n  alpha: 1\n  beta:   2\n").unwrap();
        let (key, value) = probe.names.iter().nth(1).unwrap();
        assert_eq!((key.value.as_str(), key.line, key.column), ("beta", 3, 3));
        assert_eq!((value.value, value.line, value.column), (2, 3, 11));
    }

    #[test]
    fn unknown_keys_are_reported_with_their_position() {
        let err = parse_yaml::<Probe>("p.yaml", "names: {}\nnmes: {}\n").unwrap_err();
        assert_eq!((err.line, err.column), (2, 1), "{err}");
        assert!(err.message.contains("nmes"), "{err}");
    }
}
