//! Bitrix24 batch benchmark: queued stage moves for one portal under its
//! 2 requests/s limit, coalesced into `batch` calls.
//!
//! A Bitrix24 portal emulator (the one `dealbridge emulate bitrix24` runs,
//! with the real leaky bucket: 2 requests/s, blocked above 50) runs in this
//! process with `--deals` deals. `--moves` stage moves over those deals are
//! committed to the outbox of a fresh SQLite hub before the hub starts; the
//! hub (the release `dealbridge` binary, a separate process) is configured
//! with the portal's budget (`per_second = 2`, `burst = 50`). Reported: moves
//! per second from the hub's start until every move is recorded, the HTTP
//! requests the portal saw, how many it refused with
//! `QUERY_LIMIT_EXCEEDED`, and the parked and dead commands (must be 0).
//! Afterwards every deal's stage at the portal is checked against its last
//! move.
//!
//! `--busy` fills the portal's bucket just before the hub starts (as other
//! integrations of the portal would): the hub's first calls are refused
//! and the whole run goes at the sustained 2 requests/s.
//!
//! Events the portal sends for the hub's own writes are not delivered to
//! the hub here (each would cost a `crm.deal.get`): this measures the
//! outbound side only; see docs/benchmarks.md.
//!
//! Run: `cargo bench --bench bitrix24_moves -- [--moves N] [--deals N]`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dealbridge_connector_bitrix24::emulator::{self, CallRecord, EmulatorConfig};
use dealbridge_connector_bitrix24::{RestClient, WebhookUrl};
use dealbridge_core::flow::{Command as HubCommand, CommandOp};
use dealbridge_core::store::{ChangeSet, DeliveryState, Store};
use serde_json::json;
use uuid::Uuid;

const APP_TOKEN: &str = "bench-application-token";
/// The stages moves cycle through (codes of the emulator's sales pipeline).
const STAGES: [&str; 4] = ["UC_EVALUATE", "PREPARATION", "EXECUTING", "FINAL_INVOICE"];

struct Args {
    moves: usize,
    deals: usize,
    busy: bool,
}

fn args() -> Args {
    let mut a = Args { moves: 1_000, deals: 1_000, busy: false };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--moves" => a.moves = value().parse().expect("--moves N"),
            "--deals" => a.deals = value().parse().expect("--deals N"),
            "--busy" => a.busy = true,
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(a.deals > 0 && a.moves > 0, "--moves and --deals must be > 0");
    a
}

struct Hub {
    child: Child,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &std::path::Path) {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[store]\nbackend = \"sqlite\"\ndata_dir = \"{}\"\n\
         [log]\nformat = \"json\"\nlevel = \"warn\"\n\
         [delivery]\nresume_poll_ms = 50\n\
         [connectors.bitrix24]\nkind = \"bitrix24\"\nwebhook_url_env = \"BENCH_B24_WEBHOOK_URL\"\n\
         application_token_env = \"BENCH_B24_APP_TOKEN\"\ncatch_up_secs = 0\n\
         [delivery.targets.bitrix24]\nper_second = 2.0\nburst = 50\n",
        dir.join("data").display()
    );
    std::fs::write(dir.join("dealbridge.toml"), text).unwrap();
}

fn start_hub(dir: &std::path::Path, webhook: &str) -> Hub {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dealbridge"));
    cmd.arg("--config").arg(dir.join("dealbridge.toml")).arg("serve");
    cmd.env("BENCH_B24_WEBHOOK_URL", webhook).env("BENCH_B24_APP_TOKEN", APP_TOKEN).env("RUST_LOG", "info");
    let mut child = cmd.stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("hub exited before listening").unwrap();
        if line.contains("Hub listening.") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Hub { child }
}

/// Creates the deals through `batch` (50 per request); returns their ids.
async fn create_deals(client: &RestClient, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for first in (0..n).step_by(50) {
        let commands: Vec<_> = (first..n.min(first + 50))
            .map(|i| dealbridge_connector_bitrix24::rest::BatchCommand {
                key: format!("d{i}"),
                method: "crm.deal.add".into(),
                params: json!({ "fields": { "TITLE": format!("Bench deal {i}"), "STAGE_ID": "NEW" } }),
            })
            .collect();
        let outcome = loop {
            match client.batch(&commands, true).await {
                Ok(outcome) => break outcome,
                // Refused before it ran: wait for the bucket to leak.
                Err(e) if e.code == "QUERY_LIMIT_EXCEEDED" => tokio::time::sleep(Duration::from_secs(1)).await,
                Err(e) => panic!("creating deals: {e}"),
            }
        };
        for c in &commands {
            let id = outcome.results.get(&c.key).expect("deal created");
            ids.push(id.as_u64().map_or_else(|| id.as_str().unwrap().to_owned(), |n| n.to_string()));
        }
    }
    ids
}

/// The moves: deal `k % deals` goes to the next stage of the cycle.
fn moves(deals: &[(Uuid, String)], n: usize) -> (Vec<HubCommand>, BTreeMap<String, &'static str>) {
    let mut last = BTreeMap::new();
    let commands = (0..n)
        .map(|k| {
            let (deal, external_id) = &deals[k % deals.len()];
            let stage = STAGES[(k / deals.len()) % STAGES.len()];
            last.insert(external_id.clone(), stage);
            HubCommand {
                id: Uuid::now_v7(),
                idempotency_key: format!("{deal}/bench/{k}"),
                connector: "bitrix24".into(),
                system: "bitrix24".into(),
                deal: Some(*deal),
                cause_event: Uuid::now_v7(),
                flow: "bench".into(),
                op: CommandOp::UpdateDeal {
                    external_id: external_id.clone(),
                    stage: Some(stage.into()),
                    fields: BTreeMap::new(),
                },
            }
        })
        .collect();
    (commands, last)
}

async fn open_store(dir: &std::path::Path) -> Arc<dyn Store> {
    let url = format!("sqlite://{}", dir.join("data").join("dealbridge.db").display());
    let store = dealbridge_core::store::open(&url, 2).await.unwrap();
    store.migrate().await.unwrap();
    store
}

/// Calls the portal until it refuses: its bucket is at the blocking level.
async fn fill_bucket(client: &RestClient) {
    while client.deal_categories().await.is_ok() {}
}

async fn calls(base: &str) -> Vec<CallRecord> {
    reqwest::get(format!("{base}/_emulator/calls")).await.unwrap().json().await.unwrap()
}

/// The portal's stage of every deal, read in pages of 50 (after the run).
async fn stages_at_portal(client: &RestClient) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut start: i64 = 0;
    loop {
        let page = loop {
            match client.deal_list(&json!({}), &["ID", "STAGE_ID"], &json!({"ID": "ASC"}), start).await {
                Ok(page) => break page,
                // The bucket is still full from the run: wait for it to drain.
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        };
        for deal in &page.items {
            let text = |k: &str| deal.get(k).map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned));
            out.insert(text("ID").unwrap(), text("STAGE_ID").unwrap_or_default());
        }
        match page.next {
            Some(next) => start = next as i64,
            None => return out,
        }
    }
}

#[tokio::main]
async fn main() {
    let args = args();
    let config = EmulatorConfig { application_token: APP_TOKEN.into(), ..EmulatorConfig::default() };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let portal = emulator::spawn(config.clone(), listener).unwrap();
    let webhook = portal.webhook_url(&config);
    let client =
        RestClient::new(WebhookUrl::parse(&webhook).unwrap(), Duration::from_secs(30), Duration::from_secs(5)).unwrap();
    let external_ids = create_deals(&client, args.deals).await;
    let deals: Vec<(Uuid, String)> = external_ids.into_iter().map(|id| (Uuid::now_v7(), id)).collect();
    // Let the portal's bucket drain from the set-up calls.
    let setup_calls = args.deals.div_ceil(50).min(50) as f64;
    tokio::time::sleep(Duration::from_secs_f64(setup_calls / 2.0 + 1.0)).await;
    reqwest::Client::new().delete(format!("{}/_emulator/calls", portal.base_url())).send().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    let store = open_store(dir.path()).await;
    let (commands, last) = moves(&deals, args.moves);
    for chunk in commands.chunks(1000) {
        store.apply(&ChangeSet { commands: chunk.to_vec(), ..Default::default() }).await.unwrap();
    }
    if args.busy {
        fill_bucket(&client).await;
        reqwest::Client::new().delete(format!("{}/_emulator/calls", portal.base_url())).send().await.unwrap();
    }
    let started = Instant::now();
    let hub = start_hub(dir.path(), &webhook);
    let deadline = started + Duration::from_secs(900);
    let counts = loop {
        let counts = store.delivery_counts().await.unwrap();
        let settled: u64 = [DeliveryState::Done, DeliveryState::Dead, DeliveryState::Parked, DeliveryState::Discarded]
            .iter()
            .map(|s| counts.get(s).copied().unwrap_or(0))
            .sum();
        if settled as usize >= args.moves || Instant::now() > deadline {
            break counts;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let elapsed = started.elapsed();
    drop(hub);

    let log = calls(&portal.base_url()).await;
    let requests: Vec<&CallRecord> = log.iter().filter(|c| !c.in_batch).collect();
    let batches = requests.iter().filter(|c| c.method == "batch").count();
    let refused = requests.iter().filter(|c| c.error.as_deref() == Some("QUERY_LIMIT_EXCEEDED")).count();
    let updates = log.iter().filter(|c| c.method == "crm.deal.update" && c.error.is_none()).count();
    let count = |s: DeliveryState| counts.get(&s).copied().unwrap_or(0);
    println!(
        "{}{} moves over {} deals in {:.2} s = {:.0} moves/s; {} requests to the portal ({} batch, {} refused \
         QUERY_LIMIT_EXCEEDED), {} crm.deal.update applied; done {}, parked {}, dead {}",
        if args.busy { "busy portal: " } else { "" },
        args.moves,
        args.deals,
        elapsed.as_secs_f64(),
        count(DeliveryState::Done) as f64 / elapsed.as_secs_f64(),
        requests.len(),
        batches,
        refused,
        updates,
        count(DeliveryState::Done),
        count(DeliveryState::Parked),
        count(DeliveryState::Dead),
    );
    let at_portal = stages_at_portal(&client).await;
    let wrong = last.iter().filter(|(id, stage)| at_portal.get(*id).map(String::as_str) != Some(**stage)).count();
    println!("portal check: {} of {} deals at their last move's stage", last.len() - wrong, last.len());
    portal.stop().await;
    let failed = count(DeliveryState::Done) as usize != args.moves || wrong > 0;
    if failed {
        eprintln!("FAILED: not every move reached the portal");
        std::process::exit(1);
    }
}
