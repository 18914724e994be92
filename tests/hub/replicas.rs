//! Two hub replicas against one PostgreSQL and one RabbitMQ broker: they
//! split the bus partitions between them, every command still reaches the
//! target once and in order per deal, and when one replica is killed the
//! other takes over its partitions.

use std::time::Duration;

use dealbridge_core::flow::Command;
use dealbridge_core::store::ChangeSet;

use crate::crash::{HubProcess, spawn_hub_with_env};
use crate::delivery::{BROKER, BusUnderTest, TargetDouble, commands, delivery_config, wait_for};
use crate::support::*;

/// A replica process that is killed when the test ends, pass or fail.
struct Replica(HubProcess);

impl Replica {
    fn start(config: &std::path::Path, store: &StoreKind, bus: &BusUnderTest) -> Self {
        Self(spawn_hub_with_env(config, store, &bus.env()))
    }

    /// SIGKILL: no shutdown code runs, its heartbeat simply stops.
    fn kill(&mut self) {
        let _ = self.0.child.kill();
        let _ = self.0.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sum of a metric's samples in a replica's `/metrics` (0 when absent).
async fn metric(hub: &Replica, name: &str) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", hub.0.addr)).await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn wait_for_partitions(hubs: &[&Replica], each: f64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut owned = Vec::new();
        for hub in hubs {
            owned.push(metric(hub, "dealbridge_delivery_partitions_owned").await);
        }
        if owned.iter().all(|&n| n == each) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "partitions never split {each} each: {owned:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Commits commands to the shared outbox, as the engine of either replica would.
async fn commit(url: &str, commands: &[Command]) {
    let store = dealbridge_core::store::open(url, 2).await.unwrap();
    for chunk in commands.chunks(1000) {
        store.apply(&ChangeSet { commands: chunk.to_vec(), ..Default::default() }).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_the_work_and_one_takes_over_when_the_other_is_killed() {
    let Some((store, db)) = postgres("two_replicas_share_the_work").await else { return };
    let Some(bus) = BusUnderTest::rabbit("two_replicas_share_the_work") else { return };
    let StoreKind::Postgres { url } = store.clone() else { unreachable!() };
    let _broker = BROKER.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let target = TargetDouble::start().await;
    let config = delivery_config(&target, 8).replace("[delivery]\n", "[delivery]\nreplica_ttl_secs = 3\n");
    let config = write_config(dir.path(), &store, &format!("{config}{}", bus.config()));
    let first = Replica::start(&config, &store, &bus);
    let mut second = Replica::start(&config, &store, &bus);
    wait_for_partitions(&[&first, &second], 4.0).await;

    // Both replicas up: 10,000 commands for 1,000 deals.
    let all = commands(1000, 20);
    let (wave_one, wave_two) = all.split_at(10_000);
    commit(&url, wave_one).await;
    wait_for("the first 10,000 commands are applied", Duration::from_secs(180), || target.applied_count() == 10_000)
        .await;
    let by_first = metric(&first, "dealbridge_delivery_attempts_total").await;
    let by_second = metric(&second, "dealbridge_delivery_attempts_total").await;
    eprintln!("attempts: first replica {by_first}, second replica {by_second}");
    assert_eq!(by_first + by_second, 10_000.0, "one attempt per command, no command performed by both");
    for share in [by_first, by_second] {
        assert!((2_500.0..=7_500.0).contains(&share), "each replica carries a fair part: {by_first} / {by_second}");
    }

    // The second replica dies mid-run: the first takes its partitions over.
    commit(&url, wave_two).await;
    wait_for("some of the second wave is applied", Duration::from_secs(60), || target.applied_count() >= 12_000).await;
    second.kill();
    wait_for_partitions(&[&first], 8.0).await;
    wait_for("all 20,000 commands are applied", Duration::from_secs(180), || target.applied_count() == 20_000).await;
    target.assert_all_in_order(1000, 20);
    let (calls, repeats) = target.calls_and_repeats();
    eprintln!("calls {calls}, repeats of an applied command {repeats}");
    // A command the killed replica had sent but not yet recorded goes out
    // again with `possibly_applied`; the target's idempotency key absorbs it.
    // Bound: a batch (64 by default) for each of its 4 partitions.
    assert!(repeats <= 4 * 64, "at most one batch per partition in flight when killed: {repeats}");
    drop(first);
    bus.clean_up().await;
    db.drop_db().await;
}
