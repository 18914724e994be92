//! One behaviour suite for every bus backend.
//!
//! Each scenario is a plain async fn taking a `Fixture`; the macro at the
//! bottom runs every scenario on the embedded bus over SQLite (always) and
//! over PostgreSQL (`DEALBRIDGE_TEST_PG_URL`), and on RabbitMQ
//! (`DEALBRIDGE_TEST_AMQP_URL`, e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`)
//! with a unique name prefix per test whose queues and exchanges are deleted
//! afterwards. A missing service skips with a printed reason, unless
//! `DEALBRIDGE_REQUIRE_SERVICES` is set (CI), where it fails.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::*;
use crate::store::{Store, open};
use crate::testing::{REQUIRE_VAR, TestDatabase, pg_admin_url};

const AMQP_URL_VAR: &str = "DEALBRIDGE_TEST_AMQP_URL";
const PARTITIONS: u32 = 4;
/// Long enough for a slow CI machine to hand over a partition.
const LONG: Duration = Duration::from_secs(5);
const SHORT: Duration = Duration::from_millis(300);
const RETRY: Duration = Duration::from_millis(400);

pub(super) enum Place {
    Store(Arc<dyn Store>),
    Rabbit(Arc<RabbitBus>),
}

pub(super) struct Fixture {
    bus: Arc<dyn Bus>,
    place: Place,
    /// The embedded store's database URL (none on RabbitMQ).
    db_url: Option<String>,
}

impl Fixture {
    /// Runs `sqlite` or `postgres`, whichever matches the embedded store, on
    /// a connection of its own to the store's database.
    async fn store_sql(&self, sqlite: &'static str, postgres: &'static str) {
        use sqlx::Connection;
        let url = self.db_url.as_deref().expect("raw SQL needs an embedded store");
        if url.starts_with("sqlite:") {
            let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::raw_sql(sqlite).execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        } else {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::raw_sql(postgres).execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        }
    }

    /// Ids of dead-lettered messages (waits a little on RabbitMQ, whose
    /// dead-lettering is asynchronous).
    async fn dead_ids(&self, expected: usize) -> Vec<Uuid> {
        match &self.place {
            Place::Store(store) => {
                store.bus_dead_letters(100).await.unwrap().into_iter().map(|d| d.message.id).collect()
            }
            Place::Rabbit(bus) => {
                let mut ids = Vec::new();
                let deadline = Instant::now() + LONG;
                while ids.len() < expected && Instant::now() < deadline {
                    ids.extend(bus.take_dead_letters(100).await.unwrap().into_iter().map(|m| m.id));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                ids
            }
        }
    }
}

fn message(key: &str, n: usize) -> BusMessage {
    BusMessage {
        id: Uuid::now_v7(),
        key: key.to_owned(),
        idempotency_key: format!("{key}/{n}"),
        payload: format!("{{\"n\":{n}}}").into_bytes(),
    }
}

/// A key that lands on `partition`.
fn key_on(partition: u32) -> String {
    (0..).map(|i| format!("deal-{i}")).find(|k| partition_of(k, PARTITIONS) == partition).unwrap()
}

async fn order_is_kept_within_each_partition(f: &Fixture) {
    let keys: Vec<String> = (0..7).map(|i| format!("deal-{i}")).collect();
    let batch: Vec<BusMessage> = (0..200).map(|n| message(&keys[n % keys.len()], n)).collect();
    for chunk in batch.chunks(50) {
        f.bus.publish(chunk).await.unwrap();
    }
    let mut expected: BTreeMap<u32, Vec<Uuid>> = BTreeMap::new();
    for m in &batch {
        expected.entry(partition_of(&m.key, PARTITIONS)).or_default().push(m.id);
    }
    assert!(expected.len() > 1, "the keys spread over several partitions");
    for (partition, ids) in expected {
        let mut consumer = f.bus.consume(partition).await.unwrap();
        let mut got = Vec::new();
        while got.len() < ids.len() {
            let d = consumer.next(LONG).await.unwrap().expect("a message of this partition");
            assert_eq!(d.partition, partition);
            assert_eq!(partition_of(&d.message.key, PARTITIONS), partition);
            assert!(!d.redelivered);
            got.push(d.message.id);
            consumer.ack(&d).await.unwrap();
        }
        assert_eq!(got, ids, "partition {partition} in publish order");
        assert!(consumer.next(SHORT).await.unwrap().is_none());
    }
}

async fn keys_map_to_stable_partitions(f: &Fixture) {
    assert_eq!(f.bus.partitions(), PARTITIONS);
    let sent = message("deal-42", 1);
    let p = partition_of("deal-42", PARTITIONS);
    assert_eq!(p, partition_of("deal-42", PARTITIONS));
    f.bus.publish(std::slice::from_ref(&sent)).await.unwrap();
    let mut consumer = f.bus.consume(p).await.unwrap();
    let d = consumer.next(LONG).await.unwrap().expect("delivered on the key's partition");
    assert_eq!(d.message, sent, "id, key, idempotency key and payload survive the trip");
    assert_eq!(d.partition, p);
    consumer.ack(&d).await.unwrap();
}

/// Waits until the bus reports `expected` waiting messages (the broker's
/// counters trail its confirms a little).
async fn depth_becomes(f: &Fixture, expected: u64) {
    let deadline = Instant::now() + LONG;
    loop {
        let depth = f.bus.depth().await.unwrap();
        if depth == expected {
            return;
        }
        assert!(Instant::now() < deadline, "depth {depth}, expected {expected}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn an_acked_message_is_gone(f: &Fixture) {
    let key = key_on(1);
    depth_becomes(f, 0).await;
    f.bus.publish(&[message(&key, 1), message(&key, 2)]).await.unwrap();
    depth_becomes(f, 2).await;
    let mut consumer = f.bus.consume(1).await.unwrap();
    for _ in 0..2 {
        let d = consumer.next(LONG).await.unwrap().unwrap();
        consumer.ack(&d).await.unwrap();
    }
    // The embedded bus removes acked rows with the consumer's next claim.
    assert!(consumer.next(SHORT).await.unwrap().is_none());
    depth_becomes(f, 0).await;
    drop(consumer);
    let mut again = f.bus.consume(1).await.unwrap();
    assert!(again.next(SHORT).await.unwrap().is_none());
}

async fn an_unacked_delivery_comes_back_when_its_consumer_goes(f: &Fixture) {
    let key = key_on(2);
    let (first, second) = (message(&key, 1), message(&key, 2));
    f.bus.publish(&[first.clone(), second.clone()]).await.unwrap();
    let mut consumer = f.bus.consume(2).await.unwrap();
    let d = consumer.next(LONG).await.unwrap().unwrap();
    assert_eq!((d.message.id, d.redelivered), (first.id, false));
    assert!(consumer.next(SHORT).await.unwrap().is_none(), "one delivery at a time");
    drop(consumer);
    let mut next = f.bus.consume(2).await.unwrap();
    let d = next.next(LONG).await.unwrap().expect("the unacked message again");
    assert_eq!((d.message.id, d.redelivered), (first.id, true), "same message, flagged, still first");
    next.ack(&d).await.unwrap();
    let d = next.next(LONG).await.unwrap().unwrap();
    // RabbitMQ may flag it redelivered too: with a prefetch above one the
    // broker had already pushed it to the first consumer.
    assert_eq!(d.message.id, second.id);
    next.ack(&d).await.unwrap();
}

async fn a_batch_comes_in_order_and_the_next_waits_until_it_is_settled(f: &Fixture) {
    let key = key_on(1);
    let sent: Vec<BusMessage> = (0..10).map(|n| message(&key, n)).collect();
    f.bus.publish(&sent).await.unwrap();
    let mut consumer = f.bus.consume(1).await.unwrap();
    // RabbitMQ streams messages in: a batch is whatever has arrived, 1 to 4.
    let first = consumer.next_batch(LONG, 4).await.unwrap();
    assert!((1..=4).contains(&first.len()), "batch of {}", first.len());
    assert!(consumer.next_batch(SHORT, 4).await.unwrap().is_empty(), "nothing while a batch is open");
    let mut seen: Vec<Uuid> = first.iter().map(|d| d.message.id).collect();
    consumer.ack_all(&first).await.unwrap();
    while seen.len() < sent.len() {
        let batch = consumer.next_batch(LONG, 4).await.unwrap();
        assert!(!batch.is_empty() && batch.len() <= 4, "batch of {}", batch.len());
        seen.extend(batch.iter().map(|d| d.message.id));
        consumer.ack_all(&batch).await.unwrap();
    }
    assert_eq!(seen, sent.iter().map(|m| m.id).collect::<Vec<_>>(), "publish order, each once");
    assert!(consumer.next_batch(SHORT, 4).await.unwrap().is_empty());
    drop(consumer);
    let mut again = f.bus.consume(1).await.unwrap();
    assert!(again.next_batch(SHORT, 4).await.unwrap().is_empty(), "acked batches stay acked");
}

async fn one_consumer_per_partition_is_active(f: &Fixture) {
    let key = key_on(3);
    let (first, second) = (message(&key, 1), message(&key, 2));
    let mut active = f.bus.consume(3).await.unwrap();
    let mut standby = f.bus.consume(3).await.unwrap();
    f.bus.publish(&[first.clone(), second.clone()]).await.unwrap();
    let d = active.next(LONG).await.unwrap().expect("the first consumer is active");
    assert_eq!(d.message.id, first.id);
    assert!(standby.next(SHORT).await.unwrap().is_none(), "the standby gets nothing while the active one lives");
    drop(active);
    let d = standby.next(LONG).await.unwrap().expect("the standby takes over");
    assert_eq!((d.message.id, d.redelivered), (first.id, true));
    standby.ack(&d).await.unwrap();
    let d = standby.next(LONG).await.unwrap().unwrap();
    assert_eq!(d.message.id, second.id);
    standby.ack(&d).await.unwrap();
}

async fn a_dead_letter_leaves_the_partition(f: &Fixture) {
    let key = key_on(0);
    let (poison, next) = (message(&key, 1), message(&key, 2));
    f.bus.publish(&[poison.clone(), next.clone()]).await.unwrap();
    let mut consumer = f.bus.consume(0).await.unwrap();
    let d = consumer.next(LONG).await.unwrap().unwrap();
    assert_eq!(d.message.id, poison.id);
    consumer.dead_letter(&d, "target said 422: no such stage").await.unwrap();
    let d = consumer.next(LONG).await.unwrap().unwrap();
    assert_eq!(d.message.id, next.id, "the partition moves on");
    consumer.ack(&d).await.unwrap();
    assert!(consumer.next(SHORT).await.unwrap().is_none());
    assert_eq!(f.dead_ids(1).await, vec![poison.id]);
    if let Place::Store(store) = &f.place {
        let dead = store.bus_dead_letters(10).await.unwrap();
        assert_eq!(dead[0].reason, "target said 422: no such stage");
        assert_eq!(dead[0].message.payload, poison.payload);
    }
}

async fn a_retry_comes_back_after_its_delay_and_not_before(f: &Fixture) {
    let key = key_on(1);
    let sent = message(&key, 1);
    f.bus.publish(std::slice::from_ref(&sent)).await.unwrap();
    let mut consumer = f.bus.consume(1).await.unwrap();
    let d = consumer.next(LONG).await.unwrap().unwrap();
    let retried_at = Instant::now();
    consumer.retry_later(&d, RETRY).await.unwrap();
    assert!(consumer.next(RETRY / 2).await.unwrap().is_none(), "not before the delay");
    let d = consumer.next(LONG).await.unwrap().expect("back after the delay");
    let waited = retried_at.elapsed();
    assert!(waited >= RETRY - Duration::from_millis(20), "came back after {waited:?}");
    assert!(waited < RETRY + Duration::from_secs(3), "came back only after {waited:?}");
    assert_eq!(d.message, sent);
    consumer.ack(&d).await.unwrap();
}

/// Embedded only: one publish is one transaction. A trigger refuses the
/// third message of a batch, after the first two went in.
async fn a_batch_is_published_whole_or_not_at_all(f: &Fixture) {
    f.store_sql(
        "CREATE TRIGGER refuse_message BEFORE INSERT ON bus_messages
         WHEN NEW.idempotency_key = 'refused-by-trigger'
         BEGIN SELECT RAISE(ABORT, 'message refused by the test trigger'); END",
        "CREATE FUNCTION refuse_message() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'message refused by the test trigger'; END $$;
         CREATE TRIGGER refuse_message BEFORE INSERT ON bus_messages FOR EACH ROW
         WHEN (NEW.idempotency_key = 'refused-by-trigger') EXECUTE FUNCTION refuse_message()",
    )
    .await;
    let key = key_on(2);
    let (good, next) = (message(&key, 1), message(&key, 2));
    let mut refused = message(&key, 3);
    refused.idempotency_key = "refused-by-trigger".into();
    let err = f.bus.publish(&[good.clone(), next, refused]).await.expect_err("the third insert fails");
    assert!(err.to_string().contains("message refused by the test trigger"), "{err}");
    depth_becomes(f, 0).await;
    let mut consumer = f.bus.consume(2).await.unwrap();
    assert!(consumer.next(SHORT).await.unwrap().is_none(), "nothing of the failed batch");
    f.bus.publish(std::slice::from_ref(&good)).await.unwrap();
    let d = consumer.next(LONG).await.unwrap().unwrap();
    assert_eq!(d.message, good);
    consumer.ack(&d).await.unwrap();
    assert!(consumer.next(SHORT).await.unwrap().is_none(), "only the good message");
}

/// Embedded only: publishing a message whose id is still in the queue —
/// waiting, handed out, or acked and not yet removed — succeeds and queues
/// no second copy (the outbox relay republishes after a crash between
/// publishing and marking its commands published). RabbitMQ would queue
/// another copy.
async fn a_message_published_again_while_queued_is_delivered_once(f: &Fixture) {
    let key = key_on(3);
    let (first, second) = (message(&key, 1), message(&key, 2));
    f.bus.publish(std::slice::from_ref(&first)).await.unwrap();
    f.bus.publish(std::slice::from_ref(&first)).await.expect("published again while waiting");
    f.bus.publish(&[first.clone(), second.clone(), second.clone()]).await.expect("again, within a batch");
    depth_becomes(f, 2).await;
    let mut consumer = f.bus.consume(3).await.unwrap();
    let d = consumer.next(LONG).await.unwrap().expect("the first copy");
    assert_eq!((&d.message, d.redelivered), (&first, false));
    f.bus.publish(std::slice::from_ref(&first)).await.expect("published again while handed out");
    consumer.ack(&d).await.unwrap();
    // The acked row stays until the consumer's next claim.
    depth_becomes(f, 2).await;
    f.bus.publish(std::slice::from_ref(&first)).await.expect("published again after its ack");
    depth_becomes(f, 2).await;
    let d = consumer.next(LONG).await.unwrap().expect("the second message");
    assert_eq!((&d.message, d.redelivered), (&second, false), "the first is not delivered again");
    consumer.ack(&d).await.unwrap();
    assert!(consumer.next(SHORT).await.unwrap().is_none(), "each message once");
    depth_becomes(f, 0).await;
    drop(consumer);
    let mut again = f.bus.consume(3).await.unwrap();
    assert!(again.next(SHORT).await.unwrap().is_none(), "nothing comes back");
}

/// Embedded only: a consumer that died without giving up its lease (a
/// crashed replica) holds the partition until the lease expires; then
/// another consumer takes over and gets the unacked message again.
async fn a_crashed_consumers_partition_is_taken_over_after_its_lease(f: &Fixture) {
    let Place::Store(store) = &f.place else { return };
    let key = key_on(0);
    let sent = message(&key, 1);
    f.bus.publish(std::slice::from_ref(&sent)).await.unwrap();
    let now = chrono::Utc::now();
    let lease = chrono::Duration::milliseconds(600);
    let crashed = store.bus_claim(0, "crashed-replica", now + lease, now, 1, &[]).await.unwrap().remove(0);
    assert_eq!((crashed.message.id, crashed.deliveries), (sent.id, 1));
    let mut survivor = f.bus.consume(0).await.unwrap();
    assert!(survivor.next(Duration::from_millis(200)).await.unwrap().is_none(), "the lease still holds");
    let d = survivor.next(LONG).await.unwrap().expect("taken over after expiry");
    assert_eq!((d.message.id, d.redelivered), (sent.id, true));
    survivor.ack(&d).await.unwrap();
}

async fn sqlite_fixture() -> (Fixture, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("hub.db").display());
    let store = open(&url, 4).await.unwrap();
    store.migrate().await.unwrap();
    let bus = Arc::new(EmbeddedBus::new(store.clone(), PARTITIONS));
    (Fixture { bus, place: Place::Store(store), db_url: Some(url) }, dir)
}

async fn pg_fixture(test: &str) -> Option<(Fixture, TestDatabase)> {
    let admin = pg_admin_url(test)?;
    let db = TestDatabase::create(&admin).await;
    let store = open(&db.url, 8).await.unwrap();
    store.migrate().await.unwrap();
    let bus = Arc::new(EmbeddedBus::new(store.clone(), PARTITIONS));
    Some((Fixture { bus, place: Place::Store(store), db_url: Some(db.url.clone()) }, db))
}

fn amqp_url(test: &str) -> Option<String> {
    match std::env::var(AMQP_URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os(REQUIRE_VAR).is_some() => {
            panic!("{test}: {REQUIRE_VAR} is set but {AMQP_URL_VAR} is not: RabbitMQ tests must run here")
        }
        _ => {
            eprintln!("SKIPPED {test}: set {AMQP_URL_VAR} (e.g. amqp://guest:guest@127.0.0.1:5672/%2f) to run it");
            None
        }
    }
}

fn rabbit_config(url: String) -> RabbitConfig {
    RabbitConfig {
        url,
        prefix: format!("dealbridge-test-{}", Uuid::new_v4().simple()),
        partitions: PARTITIONS,
        retry_buckets: vec![RETRY, Duration::from_secs(2)],
    }
}

async fn rabbit_fixture(test: &str) -> Option<Fixture> {
    let url = amqp_url(test)?;
    let bus = Arc::new(
        RabbitBus::connect(&rabbit_config(url))
            .await
            .unwrap_or_else(|e| panic!("cannot set up RabbitMQ for tests: {e}")),
    );
    Some(Fixture { bus: bus.clone(), place: Place::Rabbit(bus), db_url: None })
}

async fn rabbit_teardown(f: Fixture) {
    let Place::Rabbit(bus) = f.place else { return };
    drop(f.bus);
    bus.delete_topology().await.unwrap();
    bus.close().await;
}

macro_rules! bus_suite {
    (all: [$($scenario:ident),* $(,)?], embedded: [$($embedded:ident),* $(,)?] $(,)?) => {
        mod sqlite_backend {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let (f, _dir) = super::sqlite_fixture().await;
                    super::$scenario(&f).await;
                }
            )*
            $(
                #[tokio::test]
                async fn $embedded() {
                    let (f, _dir) = super::sqlite_fixture().await;
                    super::$embedded(&f).await;
                }
            )*
        }
        mod postgres_backend {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let Some((f, db)) = super::pg_fixture(stringify!($scenario)).await else { return };
                    super::$scenario(&f).await;
                    drop(f);
                    db.drop_db().await;
                }
            )*
            $(
                #[tokio::test]
                async fn $embedded() {
                    let Some((f, db)) = super::pg_fixture(stringify!($embedded)).await else { return };
                    super::$embedded(&f).await;
                    drop(f);
                    db.drop_db().await;
                }
            )*
        }
        mod rabbitmq_backend {
            $(
                #[tokio::test]
                async fn $scenario() {
                    use futures::FutureExt;
                    let Some(f) = super::rabbit_fixture(stringify!($scenario)).await else { return };
                    // Tear the topology down even when the scenario fails.
                    let outcome = std::panic::AssertUnwindSafe(super::$scenario(&f)).catch_unwind().await;
                    super::rabbit_teardown(f).await;
                    if let Err(panic) = outcome {
                        std::panic::resume_unwind(panic);
                    }
                }
            )*
        }
    };
}

bus_suite!(
    all: [
        order_is_kept_within_each_partition,
        keys_map_to_stable_partitions,
        an_acked_message_is_gone,
        an_unacked_delivery_comes_back_when_its_consumer_goes,
        a_batch_comes_in_order_and_the_next_waits_until_it_is_settled,
        one_consumer_per_partition_is_active,
        a_dead_letter_leaves_the_partition,
        a_retry_comes_back_after_its_delay_and_not_before,
    ],
    embedded: [
        a_batch_is_published_whole_or_not_at_all,
        a_message_published_again_while_queued_is_delivered_once,
        a_crashed_consumers_partition_is_taken_over_after_its_lease,
    ],
);

/// The start-up check against a real broker: a queue that exists without
/// dead-lettering and not durable makes `connect` refuse, naming it.
#[tokio::test]
async fn rabbitmq_refuses_a_lossy_existing_queue() {
    use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
    let Some(url) = amqp_url("rabbitmq_refuses_a_lossy_existing_queue") else { return };
    let config = rabbit_config(url.clone());
    let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let lossy = format!("{}.commands.0", config.prefix);
    ch.queue_declare(lossy.as_str().into(), QueueDeclareOptions::default(), lapin::types::FieldTable::default())
        .await
        .unwrap();
    let err = match RabbitBus::connect(&config).await {
        Ok(_) => panic!("a lossy queue was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(&lossy), "{err}");
    assert!(err.contains("unsafe or mismatched bus topology"), "{err}");
    // Clean up what got declared before the refusal.
    let t = Topology::new(&config.prefix, config.partitions, config.retry_buckets.clone());
    for q in t.queues() {
        let ch = conn.create_channel().await.unwrap();
        let _ = ch.queue_delete(q.name.as_str().into(), QueueDeleteOptions::default()).await;
    }
    let ch = conn.create_channel().await.unwrap();
    for x in [t.commands_exchange(), t.dead_exchange(), t.retry_exchange()] {
        let _ = ch.exchange_delete(x.as_str().into(), lapin::options::ExchangeDeleteOptions::default()).await;
    }
    let _ = conn.close(200, "OK".into()).await;
}
