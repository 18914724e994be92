//! `kill -9` under load loses nothing that was answered 202.
//!
//! The hub runs as a real child process fed by concurrent senders. It is
//! killed without warning while requests are in flight, restarted on the
//! same data, and every event that got a 202 must be there. Its log output
//! must never contain a secret.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;

pub(crate) struct HubProcess {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

/// Starts the `dealbridge` binary and waits for its "Hub listening." line.
pub(crate) fn spawn_hub(config: &Path, store: &StoreKind) -> HubProcess {
    spawn_hub_with_env(config, store, &[])
}

/// Like `spawn_hub`, with more environment variables (e.g. a broker URL).
pub(crate) fn spawn_hub_with_env(config: &Path, store: &StoreKind, extra: &[(&str, String)]) -> HubProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dealbridge"))
        .arg("--config")
        .arg(config)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_clear()
        .env("RUST_LOG", "info")
        .envs(test_env(store))
        .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start the hub binary");
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if line.contains("Hub listening.") {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                let _ = tx.send(v["listen"].as_str().unwrap().parse::<SocketAddr>().unwrap());
            }
            sink.lock().unwrap().push_str(&line);
            sink.lock().unwrap().push('\n');
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(60)).expect("hub did not start listening");
    HubProcess { child, addr, log }
}

/// Sends signed events from `senders` concurrent tasks until stopped;
/// returns the (webhook-id → event id) pairs that were answered 202, and
/// counts them in `answered` as they come.
async fn load(
    addr: SocketAddr,
    senders: usize,
    round: usize,
    stop: tokio::sync::watch::Receiver<bool>,
    answered: Arc<AtomicUsize>,
) -> HashMap<String, String> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let tasks: Vec<_> = (0..senders)
        .map(|s| {
            let (client, stop, answered) = (client.clone(), stop.clone(), answered.clone());
            tokio::spawn(async move {
                let mut acked = HashMap::new();
                for n in 0.. {
                    if *stop.borrow() {
                        break;
                    }
                    let id = format!("crash-{round}-{s}-{n}");
                    let body = format!(r#"{{"sender":{s},"n":{n}}}"#);
                    let mut req = client.post(format!("http://{addr}/hooks/http")).body(body.clone());
                    for (k, v) in signed_headers(&id, &body) {
                        req = req.header(k, v);
                    }
                    match req.send().await {
                        Ok(r) if r.status() == 202 => {
                            if let Ok(v) = r.json::<serde_json::Value>().await {
                                acked.insert(id, v["event_id"].as_str().unwrap().to_owned());
                                answered.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Ok(_) | Err(_) => break, // the hub is gone
                    }
                }
                acked
            })
        })
        .collect();
    let mut all = HashMap::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_event() {
    kill_9_under_load(StoreKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_event_on_postgres() {
    let Some((store, db)) = postgres("kill_9_under_load_on_postgres").await else { return };
    kill_9_under_load(store).await;
    db.drop_db().await;
}

async fn kill_9_under_load(store: StoreKind) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &store, "");
    let mut acknowledged: HashMap<String, String> = HashMap::new();
    let mut logs = String::new();

    for round in 0..3 {
        let mut hub = spawn_hub(&config, &store);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let answered = Arc::new(AtomicUsize::new(0));
        let sending = tokio::spawn(load(hub.addr, 32, round, stop_rx, answered.clone()));
        // Let load build up, then kill at a moment that varies per round:
        // after a number of answers rather than a time, so that a machine
        // busy with other tests still kills a hub under load.
        let kill_after = 150 + 150 * round;
        let building = async {
            while answered.load(Ordering::Relaxed) < kill_after {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), building)
            .await
            .unwrap_or_else(|_| panic!("round {round}: {kill_after} answers not reached in 60 s"));
        hub.child.kill().unwrap(); // SIGKILL: no shutdown code runs
        hub.child.wait().unwrap();
        let _ = stop_tx.send(true);
        let acked = sending.await.unwrap();
        assert!(acked.len() > 100, "round {round}: only {} events were acknowledged", acked.len());
        acknowledged.extend(acked);
        logs.push_str(&hub.log.lock().unwrap());
    }

    // Restart on the same data and look for every acknowledged event.
    let hub = spawn_hub(&config, &store);
    let client = reqwest::Client::new();
    let mut missing = Vec::new();
    for (webhook_id, event_id) in &acknowledged {
        let r = client
            .get(format!("http://{}/api/v1/events/{event_id}", hub.addr))
            .bearer_auth(VIEWER)
            .send()
            .await
            .unwrap();
        if r.status() != 200 {
            missing.push(webhook_id.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged events lost: {:?}",
        missing.len(),
        acknowledged.len(),
        &missing[..missing.len().min(5)]
    );

    // A sender retrying an acknowledged message gets the original id back.
    let (webhook_id, event_id) = acknowledged.iter().next().unwrap();
    let body = "{}";
    let mut req = client.post(format!("http://{}/hooks/http", hub.addr)).body(body);
    for (k, v) in signed_headers(webhook_id, body) {
        req = req.header(k, v);
    }
    let again: serde_json::Value = req.send().await.unwrap().json().await.unwrap();
    assert_eq!(&again["event_id"], event_id.as_str());

    let mut hub = hub;
    hub.child.kill().unwrap();
    hub.child.wait().unwrap();
    logs.push_str(&hub.log.lock().unwrap());
    for secret in [SECRET, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", ADMIN, VIEWER, ACCOUNTANT] {
        assert!(!logs.contains(secret), "a secret reached the log");
    }
    assert!(logs.contains("request_id"), "request lines carry their request id");
}
