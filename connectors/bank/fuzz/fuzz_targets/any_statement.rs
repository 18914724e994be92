//! Fuzz target: format detection plus parsing plus the summary and the
//! conversion to payments must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(statement) = dealbridge_connector_bank::parse_statement(data) {
        let _ = dealbridge_connector_bank::Summary::of(&statement).to_string();
        let _ = dealbridge_connector_bank::payments::to_payments(&statement, Default::default());
    }
});
