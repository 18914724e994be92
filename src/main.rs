//! Binary entry point: parse the command line, run, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;
use dealbridge::cli::{Cli, run};

/// mimalloc instead of glibc malloc: every event allocates dozens of small
/// strings and maps, and mimalloc serves them in a fraction of the
/// instructions (see `dealbridge_core::allocator` and docs/benchmarks.md,
/// flow evaluation).
#[global_allocator]
static GLOBAL: dealbridge_core::allocator::HubAllocator = dealbridge_core::allocator::HubAllocator;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        // A missing secret is a configuration problem whatever the command.
        Err(e) if e.downcast_ref::<dealbridge::settings::SecretError>().is_some() => {
            eprintln!("invalid configuration: {e:#}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
