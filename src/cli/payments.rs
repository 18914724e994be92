//! `dealbridge payments list|match`: the accountant's review queue from the
//! command line, working on the store directly like the other admin
//! commands. A manual match applies the payment exactly as an automatic
//! one (invoice totals, flows, commands for the CRM that a running hub
//! delivers).

use std::process::ExitCode;

use clap::Subcommand;
use dealbridge_connector_bank::import::{ManualMatchError, StatementImporter};
use dealbridge_core::mapping::MappingSet;
use dealbridge_core::runner::EngineRunner;
use dealbridge_core::store::{PaymentState, StoredPayment};
use uuid::Uuid;

use crate::app::open_store;
use crate::settings::Settings;

#[derive(Debug, Subcommand)]
pub enum PaymentsCommand {
    /// List payments in one state, oldest first: `review` (the queue),
    /// `matched` or `outgoing`.
    List {
        #[arg(long, default_value = "review")]
        state: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Print JSON (the payments as `GET /api/v1/payments` lists them).
        #[arg(long)]
        json: bool,
    },
    /// Apply a payment waiting for review to an invoice.
    Match {
        payment_id: Uuid,
        invoice_id: Uuid,
        /// Who matched it, kept with the match.
        #[arg(long, default_value = "cli")]
        by: String,
    },
}

pub async fn run(
    settings: &Settings,
    command: PaymentsCommand,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<ExitCode> {
    let store = open_store(settings, env).await?;
    match command {
        PaymentsCommand::List { state, limit, json } => {
            let Some(state) = PaymentState::parse(&state) else {
                eprintln!("unknown state `{state}`: use review, matched or outgoing");
                return Ok(ExitCode::from(2));
            };
            let rows = store.payments_in_state(state, limit.clamp(1, 10_000)).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", render(&rows, state));
            }
            Ok(ExitCode::SUCCESS)
        }
        PaymentsCommand::Match { payment_id, invoice_id, by } => {
            let set = match MappingSet::load_dir(&settings.mappings.dir) {
                Ok(set) => set,
                Err(problems) => {
                    for p in &problems {
                        eprintln!("{p}");
                    }
                    return Ok(ExitCode::from(2));
                }
            };
            let importer = StatementImporter {
                store: store.clone(),
                runner: EngineRunner::new(store),
                rules: settings.bank.rules(),
                open_invoices: None,
            };
            match importer.match_by_hand(&set, payment_id, invoice_id, &by).await {
                Ok(matched) => {
                    let m = matched.matched.as_ref();
                    println!(
                        "{payment_id}: matched to invoice № {}; paid {} of {}",
                        m.map(|m| m.invoice_number.as_str()).unwrap_or("?"),
                        m.map(|m| m.paid_total.to_string()).unwrap_or_default(),
                        m.map(|m| m.invoice_total.to_string()).unwrap_or_default(),
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(ManualMatchError::Store(e)) => Err(e.into()),
                Err(e) => {
                    eprintln!("{e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}

fn render(rows: &[StoredPayment], state: PaymentState) -> String {
    if rows.is_empty() {
        return format!("no {} payments\n", state.as_str());
    }
    let mut out = String::new();
    for r in rows {
        let p = &r.payment;
        out.push_str(&format!(
            "{}  № {} of {}  {}  {} (INN {})\n    «{}»\n",
            p.id,
            p.document_number,
            p.date.format("%d.%m.%Y"),
            p.amount,
            p.payer.name,
            p.payer.inn.as_ref().map(|i| i.as_str()).unwrap_or("-"),
            p.purpose
        ));
        if let Some(review) = &r.review {
            out.push_str(&format!("    review ({}): {}\n", review.reason, review.detail));
            for c in &review.candidates {
                out.push_str(&format!(
                    "      candidate invoice № {} ({})  score {}\n",
                    c.invoice_number, c.invoice_id, c.score
                ));
            }
        }
        if let Some(m) = &r.matched {
            out.push_str(&format!(
                "    matched to invoice № {} ({:?}, confidence {}); paid {} of {}\n",
                m.invoice_number, m.method, m.confidence, m.paid_total, m.invoice_total
            ));
        }
        for note in &r.notes {
            out.push_str(&format!("    note: {note}\n"));
        }
    }
    out.push_str(&format!("{} {} payments\n", rows.len(), state.as_str()));
    out
}
