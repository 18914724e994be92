//! The JSON Schema of mapping files, generated from the spec types, so
//! editors autocomplete keys and show the `///` docs as hover text.
//!
//! The shipped `mappings/schema.json` is checked against the generated one
//! by a test (`UPDATE_SCHEMA=1` rewrites it), so the two cannot drift.

use super::spec::MappingFile;

/// The schema as pretty JSON with a trailing newline.
pub fn mapping_schema_json() -> String {
    let schema = schemars::schema_for!(MappingFile);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_schema_is_up_to_date() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../mappings/schema.json");
        let generated = mapping_schema_json();
        if std::env::var_os("UPDATE_SCHEMA").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let shipped = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            shipped == generated,
            "mappings/schema.json is out of date; run `UPDATE_SCHEMA=1 cargo test -p dealbridge-core schema` and commit it"
        );
    }

    #[test]
    fn the_schema_carries_doc_comments() {
        let text = mapping_schema_json();
        assert!(text.contains("Canonical pipelines and their stages"));
        assert!(text.contains("\"deal_enters\""));
        assert!(text.contains("\"spawn_child\""));
    }
}
