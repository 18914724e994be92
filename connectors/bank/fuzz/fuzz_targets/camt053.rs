//! Fuzz target: `camt053::parse` must never panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = dealbridge_connector_bank::camt053::parse(data);
});
