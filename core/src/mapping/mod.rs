//! Mapping files: the declarative YAML that maps each system's records
//! into the canonical model and declares the company's flows.
//!
//! Path of a set through this module: `yaml` parses each file into the
//! `spec` types (serde-saphyr, with positions), `merge` joins the files,
//! `validate` checks every reference, expression and path and compiles
//! the flow plan and bindings, and `set::MappingSet` serves the result.
//! `testcase` reads the mapping test cases beside the files, `testrun`
//! runs them through the set and the flow engine.

pub mod convert;
mod custom_fields;
pub mod delay;
pub mod diagnostic;
mod exprs;
pub mod fields;
mod filters;
mod merge;
mod record;
mod record_keys;
mod recover;
pub mod schema;
mod set;
pub mod source_path;
pub mod spec;
pub mod testcase;
mod testcheck;
pub mod testrun;
#[cfg(test)]
mod tests;
mod validate;
mod version;
pub mod yaml;

pub use diagnostic::Diagnostic;
pub use record::{MappedRecord, MappingError};
pub use set::MappingSet;
pub use validate::DEFAULT_MAX_CASCADE_DEPTH;
pub use version::content_version;
