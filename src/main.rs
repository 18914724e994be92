//! Binary entry point: parse the command line, run, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;
use dealbridge::cli::{Cli, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
