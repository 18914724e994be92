//! Test support shared by the bank connector's test files: where the real
//! sample statements are.

use std::path::PathBuf;

/// Where the real samples are: `DEALBRIDGE_SAMPLES_DIR`, else `../shared/samples`
/// beside the repository. A checkout without them skips these tests, saying so.
pub fn samples_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("DEALBRIDGE_SAMPLES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/samples"));
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("SKIPPED: no bank samples at {} (set DEALBRIDGE_SAMPLES_DIR)", dir.display());
        None
    }
}
