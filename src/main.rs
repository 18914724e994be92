//! Binary entry point: parse the command line, run, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;
use dealbridge::cli::{Cli, run};

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
