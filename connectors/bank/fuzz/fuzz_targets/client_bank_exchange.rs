//! Fuzz target: `client_bank_exchange::parse` must never panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = dealbridge_connector_bank::client_bank_exchange::parse(data);
});
