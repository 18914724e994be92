//! Delivery benchmark: commands per second and latency from the outbox to
//! an HTTP target, through the embedded bus and through RabbitMQ.
//!
//! The hub runs as a separate process (the release `dealbridge` binary)
//! on a fresh SQLite file; this process writes commands into its outbox (as
//! the engine commits them) and runs an unthrottled target on loopback that
//! answers 200 at once and notes when each command arrived.
//!
//! * `max`: `--commands` commands over `--deals` deals are committed before
//!   the hub starts; reports commands/s from start to the last arrival.
//! * `rate`: the hub runs idle, then commands are committed at a fixed
//!   `--rate` for `--seconds`; latency is from each command's commit to its
//!   arrival at the target (p50, p99, max).
//!
//! Run: `cargo bench --bench delivery_load -- [--bus embedded|rabbitmq|both]
//! [--commands N] [--deals N] [--rate N] [--seconds N]`. RabbitMQ needs
//! `DEALBRIDGE_TEST_AMQP_URL`; the bench declares its own prefix and deletes
//! it afterwards.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use dealbridge_core::flow::{Command as HubCommand, CommandOp};
use dealbridge_core::store::{ChangeSet, Store};
use uuid::Uuid;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

struct Args {
    buses: Vec<String>,
    commands: usize,
    deals: usize,
    rate: u64,
    seconds: u64,
}

fn args() -> Args {
    let mut a = Args {
        buses: vec!["embedded".into(), "rabbitmq".into()],
        commands: 20_000,
        deals: 2_000,
        rate: 1_000,
        seconds: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--bus" => {
                let v = value();
                a.buses = if v == "both" { vec!["embedded".into(), "rabbitmq".into()] } else { vec![v] };
            }
            "--commands" => a.commands = value().parse().expect("--commands N"),
            "--deals" => a.deals = value().parse().expect("--deals N"),
            "--rate" => a.rate = value().parse().expect("--rate N"),
            "--seconds" => a.seconds = value().parse().expect("--seconds N"),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// Arrival time per command id, and commit time per command id.
#[derive(Default)]
struct Arrivals {
    at: HashMap<Uuid, Instant>,
}

async fn receive(State(arrivals): State<Arc<Mutex<Arrivals>>>, body: Bytes) -> StatusCode {
    let now = Instant::now();
    let command: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if let Some(id) = command["id"].as_str().and_then(|s| Uuid::parse_str(s).ok()) {
        arrivals.lock().unwrap().at.entry(id).or_insert(now);
    }
    StatusCode::OK
}

struct Hub {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &std::path::Path, target: std::net::SocketAddr, bus: &str, prefix: &str) {
    let bus_block = match bus {
        "rabbitmq" => format!("[bus]\nbackend = \"rabbitmq\"\nurl_env = \"BENCH_AMQP_URL\"\nprefix = \"{prefix}\"\n"),
        _ => String::new(),
    };
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[store]\nbackend = \"sqlite\"\ndata_dir = \"{}\"\n\
         [log]\nformat = \"json\"\nlevel = \"warn\"\n[engine]\nevent_poll_ms = 10\n{bus_block}\
         [delivery]\nresume_poll_ms = 50\n\
         [connectors.http]\nkind = \"http\"\nsecret_env = \"BENCH_SECRET\"\n\
         [connectors.http.outbound]\nurl = \"http://{target}/commands\"\nsecret_env = \"BENCH_SECRET\"\n",
        dir.join("data").display()
    );
    std::fs::write(dir.join("dealbridge.toml"), text).unwrap();
}

fn start_hub(dir: tempfile::TempDir, amqp: Option<&str>) -> Hub {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dealbridge"));
    cmd.arg("--config").arg(dir.path().join("dealbridge.toml")).arg("serve");
    cmd.env("BENCH_SECRET", SECRET).env("RUST_LOG", "info");
    if let Some(url) = amqp {
        cmd.env("BENCH_AMQP_URL", url);
    }
    let mut child = cmd.stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("hub exited before listening").unwrap();
        if line.contains("Hub listening.") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Hub { child, _dir: dir }
}

fn commands(deals: &[Uuid], n: usize, offset: usize) -> Vec<HubCommand> {
    (0..n)
        .map(|i| {
            let k = offset + i;
            let deal = deals[k % deals.len()];
            HubCommand {
                id: Uuid::now_v7(),
                idempotency_key: format!("{deal}/bench/{k}"),
                connector: "http".into(),
                system: "http".into(),
                deal: Some(deal),
                cause_event: Uuid::now_v7(),
                flow: "bench".into(),
                op: CommandOp::UpdateDeal {
                    external_id: format!("rec-{}", k % deals.len()),
                    stage: Some("shipment".into()),
                    fields: [("n".to_owned(), serde_json::json!(k))].into_iter().collect(),
                },
            }
        })
        .collect()
}

async fn open_store(dir: &std::path::Path) -> Arc<dyn Store> {
    let url = format!("sqlite://{}", dir.join("data").join("dealbridge.db").display());
    let store = dealbridge_core::store::open(&url, 2).await.unwrap();
    store.migrate().await.unwrap();
    store
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn wait_all(arrivals: &Arc<Mutex<Arrivals>>, n: usize, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if arrivals.lock().unwrap().at.len() >= n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

async fn run_max(bus: &str, args: &Args, amqp: Option<&str>) {
    let arrivals = Arc::new(Mutex::new(Arrivals::default()));
    let target = start_target(arrivals.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("dbbench-{}", Uuid::new_v4().simple());
    write_config(dir.path(), target, bus, &prefix);
    let deals: Vec<Uuid> = (0..args.deals).map(|_| Uuid::now_v7()).collect();
    let store = open_store(dir.path()).await;
    for chunk in commands(&deals, args.commands, 0).chunks(1000) {
        store.apply(&ChangeSet { commands: chunk.to_vec(), ..Default::default() }).await.unwrap();
    }
    drop(store);
    let started = Instant::now();
    let hub = start_hub(dir, amqp);
    let done = wait_all(&arrivals, args.commands, Duration::from_secs(600)).await;
    let elapsed = started.elapsed();
    let got = arrivals.lock().unwrap().at.len();
    println!(
        "{bus:<9} max   {got:>7} of {} commands over {} deals in {:>6.2} s = {:>7.0} commands/s{}",
        args.commands,
        args.deals,
        elapsed.as_secs_f64(),
        got as f64 / elapsed.as_secs_f64(),
        if done { "" } else { "  (TIMED OUT)" }
    );
    drop(hub);
    clean_up(amqp, &prefix).await;
}

async fn run_rate(bus: &str, args: &Args, amqp: Option<&str>) {
    let arrivals = Arc::new(Mutex::new(Arrivals::default()));
    let target = start_target(arrivals.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("dbbench-{}", Uuid::new_v4().simple());
    write_config(dir.path(), target, bus, &prefix);
    let store = open_store(dir.path()).await;
    let hub = start_hub(dir, amqp);
    let deals: Vec<Uuid> = (0..args.deals).map(|_| Uuid::now_v7()).collect();
    // Commit in 10 ms ticks, each tick's share as one transaction (as an
    // engine pass commits several events' commands together).
    let tick = Duration::from_millis(10);
    let per_tick = (args.rate as f64 * tick.as_secs_f64()).max(1.0) as usize;
    let ticks = (args.seconds * 1000 / 10) as usize;
    let mut committed: HashMap<Uuid, Instant> = HashMap::new();
    let start = Instant::now();
    for t in 0..ticks {
        let due = start + tick * t as u32;
        tokio::time::sleep_until(due.into()).await;
        let batch = commands(&deals, per_tick, t * per_tick);
        store.apply(&ChangeSet { commands: batch.clone(), ..Default::default() }).await.unwrap();
        let now = Instant::now();
        committed.extend(batch.iter().map(|c| (c.id, now)));
    }
    let total = committed.len();
    let done = wait_all(&arrivals, total, Duration::from_secs(300)).await;
    let at = arrivals.lock().unwrap().at.clone();
    let mut latencies: Vec<Duration> =
        committed.iter().filter_map(|(id, c)| at.get(id).map(|a| a.saturating_duration_since(*c))).collect();
    latencies.sort();
    println!(
        "{bus:<9} rate  {:>7} commands at {}/s: p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms{}",
        latencies.len(),
        args.rate,
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        if done { "" } else { "  (TIMED OUT)" }
    );
    drop(hub);
    clean_up(amqp, &prefix).await;
}

async fn start_target(arrivals: Arc<Mutex<Arrivals>>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/commands", axum::routing::post(receive)).with_state(arrivals);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn clean_up(amqp: Option<&str>, prefix: &str) {
    if let Some(url) = amqp {
        let config = dealbridge_core::bus::RabbitConfig {
            url: url.to_owned(),
            prefix: prefix.to_owned(),
            partitions: 8,
            retry_buckets: Vec::new(),
        };
        if let Ok(bus) = dealbridge_core::bus::RabbitBus::connect(&config).await {
            let _ = bus.delete_topology().await;
            bus.close().await;
        }
    }
}

#[tokio::main]
async fn main() {
    let args = args();
    for bus in &args.buses {
        let amqp = if bus == "rabbitmq" {
            match std::env::var("DEALBRIDGE_TEST_AMQP_URL") {
                Ok(url) if !url.is_empty() => Some(url),
                _ => {
                    println!("rabbitmq: skipped (set DEALBRIDGE_TEST_AMQP_URL)");
                    continue;
                }
            }
        } else {
            None
        };
        run_max(bus, &args, amqp.as_deref()).await;
        run_rate(bus, &args, amqp.as_deref()).await;
    }
}
