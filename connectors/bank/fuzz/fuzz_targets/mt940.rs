//! Fuzz target: `mt940::parse` must never panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = dealbridge_connector_bank::mt940::parse(data);
});
