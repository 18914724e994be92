//! `dealbridge import-statement FILE [--dry-run] [--json]`: reads a bank
//! statement (1CClientBankExchange, camt.053, MT940) and prints what it holds
//! — format, encoding, accounts, documents, credits and debits with totals,
//! warnings. With `--dry-run` nothing is stored; without it the statement
//! is imported into the configured store (directly, like the other admin
//! commands; a running hub delivers the resulting commands): payments
//! stored once, incoming ones matched to open invoices and applied through
//! the flows, all in one transaction.
//!
//! Exit codes: 0 the statement reads (and was imported, or had been), 1 it
//! is rejected (the message names the line or XML path and the field) or
//! the store failed, 2 usage (unreadable file, invalid mappings).

use std::io::{BufReader, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use dealbridge_connector_bank::import::{ImportError, ImportReport, ImportSource, StatementImporter};
use dealbridge_connector_bank::{Summary, parse_statement};
use dealbridge_core::mapping::MappingSet;
use dealbridge_core::runner::EngineRunner;

use crate::app::open_store;
use crate::settings::Settings;

#[derive(Debug, clap::Args)]
pub struct ImportStatementArgs {
    /// The statement file.
    pub file: PathBuf,
    /// Only read and summarise the statement; store nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the summary (or the import report) as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Files below this size parse too fast for a progress bar to be useful.
const PROGRESS_BAR_FROM_BYTES: u64 = 8 * 1024 * 1024;

pub async fn run(settings: &Settings, args: &ImportStatementArgs, env: &dyn Fn(&str) -> Option<String>) -> ExitCode {
    if args.dry_run {
        dry_run(args)
    } else {
        match import(settings, args, env).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("{}: not imported: {e:#}", args.file.display());
                ExitCode::FAILURE
            }
        }
    }
}

/// Imports the file into the store.
async fn import(
    settings: &Settings,
    args: &ImportStatementArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<ExitCode> {
    let bytes = match std::fs::read(&args.file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{}: {e}", args.file.display());
            return Ok(ExitCode::from(2));
        }
    };
    let set = match MappingSet::load_dir(&settings.mappings.dir) {
        Ok(set) => set,
        Err(problems) => {
            for p in &problems {
                eprintln!("{p}");
            }
            eprintln!("the mapping set in {} is invalid: nothing imported", settings.mappings.dir.display());
            return Ok(ExitCode::from(2));
        }
    };
    let store = open_store(settings, env).await?;
    store.migrate().await?;
    // A one-off import looks its candidates up in the store: reading every
    // open invoice into memory first would take longer than that.
    let importer = StatementImporter {
        store: store.clone(),
        runner: EngineRunner::new(store),
        rules: settings.bank.rules(),
        open_invoices: None,
    };
    let name = args.file.file_name().map(|n| n.to_string_lossy().into_owned());
    let report = match importer.import(&set, &bytes, name.as_deref(), ImportSource::Cli).await {
        Ok(report) => report,
        Err(ImportError::Rejected(e)) => {
            eprintln!("{}: rejected, nothing imported: {e}", args.file.display());
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(e.into()),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_report(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// The import report as an accountant reads it.
fn render_report(report: &ImportReport) -> String {
    let t = &report.payments;
    let mut out = String::new();
    if report.already_imported {
        out.push_str(&format!("already imported as statement {}: nothing changed\n", report.statement_id));
    } else {
        out.push_str(&format!("imported as statement {}\n", report.statement_id));
    }
    out.push_str(&format!("payments:  {} in the file, {} new, {} already known\n", t.in_file, t.new, t.known));
    out.push_str(&format!(
        "new:       {} matched ({} overpaid), {} to review, {} outgoing\n",
        t.matched, t.overpaid, t.review, t.outgoing
    ));
    for r in &report.results {
        let what = match (&r.invoice_number, &r.review_reason) {
            (Some(number), _) => format!(
                "→ invoice № {number}{} (confidence {}){}",
                r.also_invoice_numbers.iter().map(|n| format!(", № {n}")).collect::<String>(),
                r.confidence.unwrap_or(0),
                r.overpaid.as_ref().map(|o| format!(", overpaid by {o}")).unwrap_or_default()
            ),
            (None, Some(reason)) => format!("review: {reason}"),
            (None, None) => r.state.as_str().to_owned(),
        };
        out.push_str(&format!(
            "  № {} of {}  {}  {}  {what}\n",
            r.document_number,
            r.date.format("%d.%m.%Y"),
            r.amount,
            r.payer
        ));
    }
    if t.review > 0 {
        out.push_str("match the payments to review with `dealbridge payments list` and `dealbridge payments match`\n");
    }
    out
}

fn dry_run(args: &ImportStatementArgs) -> ExitCode {
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
