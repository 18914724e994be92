//! `dealbridge import-statement FILE --dry-run [--json]`: reads a bank
//! statement (1CClientBankExchange, camt.053, MT940) and prints what it holds
//! — format, encoding, accounts, documents, credits and debits with totals,
//! warnings — without storing anything.
//!
//! Importing for real (storing payments, matching them to invoices) is not
//! built yet; without `--dry-run` the command says so and exits with 2.
//!
//! Exit codes: 0 the statement reads, 1 it is rejected (the message names
//! the line or XML path and the field), 2 usage (no `--dry-run`, unreadable file).

use std::io::{BufReader, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use dealbridge_connector_bank::{Summary, parse_statement};

#[derive(Debug, clap::Args)]
pub struct ImportStatementArgs {
    /// The statement file.
    pub file: PathBuf,
    /// Only read and summarise the statement; store nothing. Required for now.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Files below this size parse too fast for a progress bar to be useful.
const PROGRESS_BAR_FROM_BYTES: u64 = 8 * 1024 * 1024;

pub fn run(args: &ImportStatementArgs) -> ExitCode {
    if !args.dry_run {
        eprintln!(
            "import-statement: only --dry-run is available yet; storing payments and matching them to invoices \
             is not built. Run `dealbridge import-statement {} --dry-run` to check the file.",
            args.file.display()
        );
        return ExitCode::from(2);
    }
    let file = match std::fs::File::open(&args.file) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{}: {e}", args.file.display());
            return ExitCode::from(2);
        }
    };
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let show_progress = size >= PROGRESS_BAR_FROM_BYTES && std::io::stderr().is_terminal();
    let result = if show_progress {
        let bar = indicatif::ProgressBar::new(size).with_style(
            indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let parsed = parse_statement(BufReader::with_capacity(1 << 16, bar.wrap_read(file)));
        bar.finish_and_clear();
        parsed
    } else {
        parse_statement(BufReader::with_capacity(1 << 16, file))
    };
    let statement = match result {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}: rejected, nothing imported: {e}", args.file.display());
            return ExitCode::FAILURE;
        }
    };
    let summary = Summary::of(&statement);
    if args.json {
        match serde_json::to_string_pretty(&summary) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("writing the summary: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{summary}");
        println!("dry run: nothing was stored");
    }
    ExitCode::SUCCESS
}
