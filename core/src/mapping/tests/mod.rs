//! Tests of whole mapping sets: the shipped `mappings/`, record mapping,
//! outbound helpers, and broken files with their exact positions.

mod broken;
mod records;
mod shipped;

use super::{Diagnostic, MappingSet};

/// Loads a set from in-memory files.
fn load(files: &[(&str, &str)]) -> Result<MappingSet, Vec<Diagnostic>> {
    let sources: Vec<(String, String)> = files.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect();
    MappingSet::from_sources(&sources)
}

/// The diagnostics of a set that must fail, as `file:line:column: message`.
fn problems(files: &[(&str, &str)]) -> Vec<String> {
    match load(files) {
        Ok(_) => panic!("the set loaded, but problems were expected"),
        Err(diagnostics) => diagnostics.iter().map(ToString::to_string).collect(),
    }
}
