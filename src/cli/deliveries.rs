//! `dealbridge deliveries list|retry|discard`: the admin's view of commands
//! that did not reach their target, working on the store directly (a
//! running hub picks a retried command up on its next resume pass).

use std::process::ExitCode;

use chrono::Utc;
use clap::Subcommand;
use dealbridge_core::store::{AdminRefusal, DeliveryRecord, DeliveryState};
use uuid::Uuid;

use crate::app::open_store;
use crate::server::api::DeliveryView;
use crate::settings::Settings;

#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// List commands in one delivery state, oldest first.
    List {
        /// `parked`, `dead`, `waiting`, `held`, `done` or `discarded`.
        #[arg(long, default_value = "parked")]
        state: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Print JSON (as `GET /api/v1/deliveries`).
        #[arg(long)]
        json: bool,
    },
    /// Try a parked command again (its deal resumes in order), or put a dead
    /// or discarded one back into its deal's lane.
    Retry { command_id: Uuid },
    /// Give a command up; a parked deal goes on with its next command.
    Discard { command_id: Uuid },
}

pub async fn run(
    settings: &Settings,
    command: DeliveriesCommand,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<ExitCode> {
    let store = open_store(settings, env).await?;
    match command {
        DeliveriesCommand::List { state, limit, json } => {
            let Some(state) = DeliveryState::parse(&state) else {
                eprintln!("unknown state `{state}`: use parked, dead, waiting, held, done or discarded");
                return Ok(ExitCode::from(2));
            };
            let rows = store.deliveries_in_state(state, limit.clamp(1, 10_000)).await?;
            if json {
                let views: Vec<DeliveryView> = rows.into_iter().map(DeliveryView::from).collect();
                println!("{}", serde_json::to_string_pretty(&views)?);
            } else {
                print!("{}", render(&rows, state));
            }
            Ok(ExitCode::SUCCESS)
        }
        DeliveriesCommand::Retry { command_id } => {
            report(command_id, "retried", store.delivery_retry(command_id, Utc::now()).await?)
        }
        DeliveriesCommand::Discard { command_id } => {
            report(command_id, "discarded", store.delivery_discard(command_id, Utc::now()).await?)
        }
    }
}

fn report(id: Uuid, action: &str, result: Result<DeliveryRecord, AdminRefusal>) -> anyhow::Result<ExitCode> {
    match result {
        Ok(record) => {
            println!("{id}: {action}; now {}", record.state.as_str());
            Ok(ExitCode::SUCCESS)
        }
        Err(AdminRefusal::NotFound) => {
            eprintln!("no delivery of command {id}");
            Ok(ExitCode::FAILURE)
        }
        Err(AdminRefusal::WrongState(state)) => {
            eprintln!("command {id} is {}: it cannot be {action}", state.as_str());
            Ok(ExitCode::FAILURE)
        }
    }
}

fn render(rows: &[DeliveryRecord], state: DeliveryState) -> String {
    if rows.is_empty() {
        return format!("no {} deliveries\n", state.as_str());
    }
    let mut out = String::new();
    for r in rows {
        let deal = r.command.deal.map_or_else(|| "-".to_owned(), |d| d.to_string());
        out.push_str(&format!(
            "{}  deal {deal}  {} via {}  attempts {}  since {}\n",
            r.command.id,
            r.command.op.name(),
            r.command.connector,
            r.attempts,
            r.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
        ));
        if let Some(error) = &r.last_error {
            let class = r.last_class.as_deref().unwrap_or("?");
            out.push_str(&format!("    last error ({class}): {error}\n"));
        }
    }
    out.push_str(&format!("{} {} deliveries\n", rows.len(), state.as_str()));
    out
}
