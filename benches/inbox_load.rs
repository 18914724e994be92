//! Inbox load benchmark: durable 202s per second and latency percentiles.
//!
//! This process is the load generator; the hub runs as a separate process
//! (the release `dealbridge` binary) on loopback, with a fresh SQLite file
//! or a fresh PostgreSQL database. Two measurements per store:
//!
//! * `max`: closed loop, `--concurrency` senders posting signed webhooks as
//!   fast as they are answered; reports accepted/s and p50/p99.
//! * `rate`: open loop at a fixed `--rate` (default 2,000/s); latency is
//!   measured from each request's *scheduled* send time, so a stalled hub
//!   cannot hide its stalls (no coordinated omission).
//!
//! Each store runs twice by default: with the event processor running
//! beside the inbox (as a production hub does) and with it switched off
//! (`engine.process_events = false`), which separates what the engine loops
//! cost from what the machine gives. With the processor running the bench
//! waits after the `max` run until the backlog is processed and reports how
//! long that took, so the `rate` run starts from a drained inbox.
//!
//! Besides throughput and latency it reports the hub's CPU time per
//! accepted event (user + system, from `/proc/<pid>/stat`): unlike
//! events/s this hardly depends on what else the machine is running.
//!
//! Run: `cargo bench --bench inbox_load -- [--store sqlite|postgres|both]
//! [--processor running|paused|both] [--seconds N]`
//! PostgreSQL needs `DEALBRIDGE_TEST_PG_URL` (an admin URL; a throwaway
//! database is created and dropped).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dealbridge_connector_http::{SigningSecret, sign};
use tokio::sync::Mutex;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

struct Args {
    stores: Vec<String>,
    /// `true`: the hub processes events while accepting them.
    processor: Vec<bool>,
    seconds: u64,
    concurrency: usize,
    rate: u64,
}

fn args() -> Args {
    let mut a = Args {
        stores: vec!["sqlite".into(), "postgres".into()],
        processor: vec![true, false],
        seconds: 10,
        concurrency: 64,
        rate: 2000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--store" => {
                let v = value();
                a.stores = if v == "both" { vec!["sqlite".into(), "postgres".into()] } else { vec![v] };
            }
            "--processor" => {
                a.processor = match value().as_str() {
                    "running" => vec![true],
                    "paused" => vec![false],
                    "both" => vec![true, false],
                    other => panic!("--processor running|paused|both, not {other}"),
                }
            }
            "--seconds" => a.seconds = value().parse().expect("--seconds N"),
            "--concurrency" => a.concurrency = value().parse().expect("--concurrency N"),
            "--rate" => a.rate = value().parse().expect("--rate N"),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

struct Hub {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_hub(store: &str, pg_url: Option<&str>, process_events: bool) -> Hub {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dealbridge.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[store]\nbackend = \"{store}\"\ndata_dir = \"{}\"\n\
             url_env = \"BENCH_DATABASE_URL\"\nmax_connections = 16\n[log]\nformat = \"json\"\nlevel = \"warn\"\n\
             [engine]\nprocess_events = {process_events}\n\
             [connectors.http]\nkind = \"http\"\nsecret_env = \"BENCH_SECRET\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dealbridge"));
    cmd.arg("--config").arg(&config).args(["serve"]).env("BENCH_SECRET", SECRET).env("RUST_LOG", "info");
    if let Some(url) = pg_url {
        cmd.env("BENCH_DATABASE_URL", url);
    }
    let mut child = cmd.stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("hub exited before listening").unwrap();
        if line.contains("Hub listening.") {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            break v["listen"].as_str().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Hub { child, addr, _dir: dir }
}

fn request(client: &reqwest::Client, secret: &SigningSecret, addr: SocketAddr, id: &str) -> reqwest::RequestBuilder {
    let body = format!(r#"{{"event":"deal.updated","deal":{{"id":"{id}","stage":"payment","amount":"125000.00"}}}}"#);
    let ts = chrono::Utc::now().timestamp();
    client
        .post(format!("http://{addr}/hooks/http"))
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sign(secret, id, ts, body.as_bytes()))
        .header("content-type", "application/json")
        .body(body)
}

struct Report {
    accepted: usize,
    failed: usize,
    elapsed: Duration,
    latencies_us: Vec<u64>,
    /// Hub CPU time (user + system) spent during the run.
    hub_cpu: Duration,
}

impl Report {
    fn percentile(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }

    fn print(&mut self, label: &str) {
        self.latencies_us.sort_unstable();
        println!(
            "{label:<36} accepted {:>7}  failed {:>4}  {:>8.0} accepted/s  p50 {:>6.2} ms  p99 {:>6.2} ms  \
             max {:>7.2} ms  hub CPU {:>4.0} µs/event",
            self.accepted,
            self.failed,
            self.accepted as f64 / self.elapsed.as_secs_f64(),
            self.percentile(0.50),
            self.percentile(0.99),
            self.latencies_us.last().copied().unwrap_or(0) as f64 / 1000.0,
            self.hub_cpu.as_secs_f64() * 1e6 / self.accepted.max(1) as f64,
        );
    }
}

/// CPU time (user + system) a process has used so far, from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Duration {
    static TICKS_PER_SECOND: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let ticks_per_second = *TICKS_PER_SECOND.get_or_init(|| {
        let out = Command::new("getconf").arg("CLK_TCK").output().expect("getconf CLK_TCK");
        String::from_utf8_lossy(&out.stdout).trim().parse().expect("CLK_TCK is a number")
    });
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    Duration::from_secs_f64((ticks(14) + ticks(15)) / ticks_per_second)
}

/// Sum of a counter's series in the hub's Prometheus text whose labels
/// contain `label` (empty: all series).
fn counter_sum(metrics: &str, name: &str, label: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{') && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until the hub has processed every event it accepted, for at most
/// `DRAIN_LIMIT`; returns how long it took, how many events were waiting at
/// the start and how many still are.
async fn drain(addr: SocketAddr) -> (Duration, u64, u64) {
    const DRAIN_LIMIT: Duration = Duration::from_secs(30);
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut backlog = None;
    loop {
        let metrics = client.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
        let accepted = counter_sum(&metrics, "dealbridge_ingest_total", "outcome=\"accepted\"");
        let processed = counter_sum(&metrics, "dealbridge_events_processed_total", "");
        let waiting = (accepted - processed).max(0.0) as u64;
        let backlog = *backlog.get_or_insert(waiting);
        if waiting == 0 || started.elapsed() > DRAIN_LIMIT {
            return (started.elapsed(), backlog, waiting);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Prints what `drain` found.
fn print_drain(label: &str, (took, backlog, left): (Duration, u64, u64)) {
    let took = took.as_secs_f64();
    if left == 0 {
        println!("{label:<36} {backlog} events waited; processed in {took:.2} s");
    } else {
        println!("{label:<36} {backlog} events waited; {left} STILL UNPROCESSED after {took:.0} s");
    }
}

async fn closed_loop(addr: SocketAddr, concurrency: usize, seconds: u64, tag: &str) -> Report {
    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().unwrap();
    let secret = SigningSecret::parse(SECRET).unwrap();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|w| {
            let (client, secret, tag) = (client.clone(), secret.clone(), tag.to_owned());
            tokio::spawn(async move {
                let (mut ok, mut failed, mut lat) = (0, 0, Vec::with_capacity(200_000));
                let mut n = 0u64;
                while Instant::now() < deadline {
                    n += 1;
                    let t0 = Instant::now();
                    let r = request(&client, &secret, addr, &format!("{tag}-{w}-{n}")).send().await;
                    match r {
                        Ok(r) if r.status() == 202 => {
                            ok += 1;
                            lat.push(t0.elapsed().as_micros() as u64);
                        }
                        _ => failed += 1,
                    }
                }
                (ok, failed, lat)
            })
        })
        .collect();
    let mut report =
        Report { accepted: 0, failed: 0, elapsed: Duration::ZERO, latencies_us: Vec::new(), hub_cpu: Duration::ZERO };
    for t in tasks {
        let (ok, failed, lat) = t.await.unwrap();
        report.accepted += ok;
        report.failed += failed;
        report.latencies_us.extend(lat);
    }
    report.elapsed = started.elapsed();
    report
}

async fn open_loop(addr: SocketAddr, rate: u64, seconds: u64, tag: &str) -> Report {
    let client = reqwest::Client::builder().pool_max_idle_per_host(256).build().unwrap();
    let secret = SigningSecret::parse(SECRET).unwrap();
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let results = Arc::new(Mutex::new((0usize, 0usize, Vec::with_capacity(total as usize))));
    let started = Instant::now();
    let mut handles = Vec::with_capacity(total as usize);
    for n in 0..total {
        let scheduled = started + interval * n as u32;
        tokio::time::sleep_until(scheduled.into()).await;
        let (client, secret, results) = (client.clone(), secret.clone(), results.clone());
        let id = format!("{tag}-{n}");
        handles.push(tokio::spawn(async move {
            let r = request(&client, &secret, addr, &id).send().await;
            let latency = scheduled.elapsed().as_micros() as u64;
            let mut g = results.lock().await;
            match r {
                Ok(r) if r.status() == 202 => {
                    g.0 += 1;
                    g.2.push(latency);
                }
                _ => g.1 += 1,
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let elapsed = started.elapsed();
    let (accepted, failed, latencies_us) = std::mem::take(&mut *results.lock().await);
    Report { accepted, failed, elapsed, latencies_us, hub_cpu: Duration::ZERO }
}

/// Runs `run` and charges the hub's CPU time meanwhile to its report.
async fn measured(hub: &Hub, run: impl std::future::Future<Output = Report>) -> Report {
    let before = cpu_time(hub.child.id());
    let mut report = run.await;
    report.hub_cpu = cpu_time(hub.child.id()).saturating_sub(before);
    report
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    println!(
        "inbox_load: {} s per run, closed loop with {} senders, open loop at {}/s",
        args.seconds, args.concurrency, args.rate
    );
    for store in &args.stores {
        for &processing in &args.processor {
            runtime.block_on(async {
                let db = if store == "postgres" {
                    let Some(admin) = dealbridge_core::testing::pg_admin_url("inbox_load postgres") else { return };
                    Some(dealbridge_core::testing::TestDatabase::create(&admin).await)
                } else {
                    None
                };
                let hub = start_hub(store, db.as_ref().map(|d| d.url.as_str()), processing);
                let mode = if processing { "processor running" } else { "processor paused" };
                // Warm up connections and the store's caches.
                closed_loop(hub.addr, 8, 1, &format!("warm-{store}")).await;
                if processing {
                    drain(hub.addr).await;
                }
                measured(&hub, closed_loop(hub.addr, args.concurrency, args.seconds, &format!("max-{store}")))
                    .await
                    .print(&format!("{store} max, {mode}"));
                if processing {
                    print_drain("  backlog after max", drain(hub.addr).await);
                }
                measured(&hub, open_loop(hub.addr, args.rate, args.seconds, &format!("rate-{store}")))
                    .await
                    .print(&format!("{store} at {}/s, {mode}", args.rate));
                if processing {
                    print_drain("  backlog after rate", drain(hub.addr).await);
                }
                drop(hub);
                if let Some(db) = db {
                    db.drop_db().await;
                }
            });
        }
    }
}
