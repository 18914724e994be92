//! The RabbitMQ topology the hub declares at start, and the start-up check
//! that refuses one which could silently lose messages.
//!
//! Names start with a configurable prefix `<p>`:
//! - `<p>.commands` (direct exchange) routes a message by its partition
//!   number to the quorum queue `<p>.commands.<n>`; each is durable, has a
//!   single active consumer, and dead-letters at least once
//!   (`x-dead-letter-strategy=at-least-once`, which needs
//!   `x-overflow=reject-publish`) to `<p>.dead`.
//! - `<p>.dead` (fanout exchange) feeds the durable quorum queue `<p>.dead`,
//!   where rejected messages wait for an operator.
//! - `<p>.retry` (headers exchange) feeds one quorum queue per delay bucket,
//!   `<p>.retry.<ms>`, with `x-message-ttl=<ms>` and dead-lettering back to
//!   `<p>.commands`; a retried message keeps its partition routing key, so
//!   it comes back to its partition after the bucket's delay. One queue per
//!   bucket, never mixed TTLs in one queue; a requested delay is rounded up
//!   to the next bucket (and capped at the largest).

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ExchangeKind};

use super::BusError;

/// Header naming a retry copy's delay bucket (headers exchanges ignore
/// headers starting with `x-`, so it has none).
pub(crate) const RETRY_HEADER: &str = "dealbridge-retry-ms";

/// What a queue is for; the start-up check holds each role to its rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueRole {
    Partition(u32),
    Retry(Duration),
    Dead,
}

/// One queue as the hub declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSpec {
    pub name: String,
    pub role: QueueRole,
    pub durable: bool,
    pub arguments: Vec<(&'static str, AMQPValue)>,
}

impl QueueSpec {
    fn arg_str(&self, name: &str) -> Option<String> {
        self.arguments.iter().find(|(k, _)| *k == name).map(|(_, v)| match v {
            AMQPValue::LongString(s) => s.to_string(),
            other => format!("{other:?}"),
        })
    }

    pub(crate) fn field_table(&self) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in &self.arguments {
            t.insert((*k).into(), v.clone());
        }
        t
    }
}

/// Names and shape of the hub's exchanges and queues.
#[derive(Debug, Clone)]
pub struct Topology {
    prefix: String,
    partitions: u32,
    retry_buckets: Vec<Duration>,
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.into())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Topology {
    /// `retry_buckets` are sorted and deduplicated; an empty list becomes
    /// the default set (1 s, 10 s, 1 min, 10 min, 1 h).
    pub fn new(prefix: &str, partitions: u32, mut retry_buckets: Vec<Duration>) -> Self {
        retry_buckets.retain(|d| !d.is_zero());
        if retry_buckets.is_empty() {
            retry_buckets = [1, 10, 60, 600, 3600].into_iter().map(Duration::from_secs).collect();
        }
        retry_buckets.sort();
        retry_buckets.dedup_by_key(|d| millis(*d));
        Self { prefix: prefix.to_owned(), partitions: partitions.max(1), retry_buckets }
    }

    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    pub fn commands_exchange(&self) -> String {
        format!("{}.commands", self.prefix)
    }

    pub fn partition_queue(&self, n: u32) -> String {
        format!("{}.commands.{n}", self.prefix)
    }

    pub fn dead_exchange(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    pub fn dead_queue(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    pub fn retry_exchange(&self) -> String {
        format!("{}.retry", self.prefix)
    }

    pub fn retry_queue(&self, bucket: Duration) -> String {
        format!("{}.retry.{}", self.prefix, millis(bucket))
    }

    /// The retry bucket a delay goes to: the smallest bucket not shorter
    /// than `delay`, or the largest bucket.
    pub fn bucket_for(&self, delay: Duration) -> Duration {
        let largest = *self.retry_buckets.last().expect("at least one bucket");
        self.retry_buckets.iter().copied().find(|b| *b >= delay).unwrap_or(largest)
    }

    /// Every queue the hub declares.
    pub fn queues(&self) -> Vec<QueueSpec> {
        let safe_dead_lettering = |dlx: String| {
            vec![
                ("x-queue-type", text("quorum")),
                ("x-dead-letter-exchange", text(&dlx)),
                ("x-dead-letter-strategy", text("at-least-once")),
                ("x-overflow", text("reject-publish")),
            ]
        };
        let mut queues: Vec<QueueSpec> = (0..self.partitions)
            .map(|n| {
                let mut arguments = safe_dead_lettering(self.dead_exchange());
                arguments.push(("x-single-active-consumer", AMQPValue::Boolean(true)));
                QueueSpec { name: self.partition_queue(n), role: QueueRole::Partition(n), durable: true, arguments }
            })
            .collect();
        for bucket in &self.retry_buckets {
            let mut arguments = safe_dead_lettering(self.commands_exchange());
            arguments
                .push(("x-message-ttl", AMQPValue::LongLongInt(i64::try_from(millis(*bucket)).unwrap_or(i64::MAX))));
            queues.push(QueueSpec {
                name: self.retry_queue(*bucket),
                role: QueueRole::Retry(*bucket),
                durable: true,
                arguments,
            });
        }
        queues.push(QueueSpec {
            name: self.dead_queue(),
            role: QueueRole::Dead,
            durable: true,
            arguments: vec![("x-queue-type", text("quorum"))],
        });
        queues
    }

    /// Refuses a topology that can lose messages silently, naming each
    /// problem: a non-durable queue, a work or retry queue without a
    /// dead-letter target, at-most-once dead-lettering, or at-least-once
    /// without `reject-publish` overflow (RabbitMQ then falls back to
    /// at-most-once).
    pub fn check(queues: &[QueueSpec]) -> Result<(), BusError> {
        let mut problems = Vec::new();
        for q in queues {
            if !q.durable {
                problems.push(format!("queue `{}` is not durable (a broker restart would lose it)", q.name));
            }
            if q.arg_str("x-queue-type").as_deref() != Some("quorum") {
                problems
                    .push(format!("queue `{}` is not a quorum queue (no replication, no safe dead-lettering)", q.name));
            }
            if q.role == QueueRole::Dead {
                continue;
            }
            if q.arg_str("x-dead-letter-exchange").is_none_or(|x| x.is_empty()) {
                problems.push(format!(
                    "queue `{}` has no dead-letter exchange (rejected or expired messages would be dropped)",
                    q.name
                ));
            }
            if q.arg_str("x-dead-letter-strategy").as_deref() != Some("at-least-once") {
                problems.push(format!(
                    "queue `{}` dead-letters at most once (set x-dead-letter-strategy=at-least-once)",
                    q.name
                ));
            }
            if q.arg_str("x-overflow").as_deref() != Some("reject-publish") {
                problems.push(format!(
                    "queue `{}` needs x-overflow=reject-publish for at-least-once dead-lettering",
                    q.name
                ));
            }
            if matches!(q.role, QueueRole::Partition(_))
                && q.arguments
                    .iter()
                    .all(|(k, v)| !(*k == "x-single-active-consumer" && *v == AMQPValue::Boolean(true)))
            {
                problems.push(format!("queue `{}` has no single active consumer (per-deal order would break)", q.name));
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(BusError::Topology(problems.join("; "))) }
    }

    /// Declares exchanges, queues and bindings (idempotent). A queue that
    /// exists with other arguments (e.g. without a dead-letter exchange or
    /// not durable) makes the broker refuse, and this names the queue.
    pub async fn declare(&self, conn: &Connection) -> Result<(), BusError> {
        Self::check(&self.queues())?;
        let ch = conn.create_channel().await?;
        let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
        for (name, kind) in [
            (self.commands_exchange(), ExchangeKind::Direct),
            (self.dead_exchange(), ExchangeKind::Fanout),
            (self.retry_exchange(), ExchangeKind::Headers),
        ] {
            ch.exchange_declare(name.as_str().into(), kind, durable, FieldTable::default()).await.map_err(|e| {
                BusError::Topology(format!("exchange `{name}` cannot be declared as the hub needs it: {e}"))
            })?;
        }
        let mut ch = ch;
        for q in self.queues() {
            if !ch.status().connected() {
                ch = conn.create_channel().await?;
            }
            let options = QueueDeclareOptions { durable: q.durable, ..QueueDeclareOptions::default() };
            if let Err(e) = ch.queue_declare(q.name.as_str().into(), options, q.field_table()).await {
                return Err(BusError::Topology(format!(
                    "queue `{}` exists with other properties than the hub requires (durable quorum queue with {}): {e}",
                    q.name,
                    q.arguments.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
                )));
            }
            let (exchange, key, args) = match q.role {
                QueueRole::Partition(n) => (self.commands_exchange(), n.to_string(), FieldTable::default()),
                QueueRole::Dead => (self.dead_exchange(), String::new(), FieldTable::default()),
                QueueRole::Retry(bucket) => {
                    let mut t = FieldTable::default();
                    t.insert("x-match".into(), text("all"));
                    t.insert(RETRY_HEADER.into(), text(&millis(bucket).to_string()));
                    (self.retry_exchange(), String::new(), t)
                }
            };
            ch.queue_bind(
                q.name.as_str().into(),
                exchange.as_str().into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                args,
            )
            .await?;
        }
        let _ = ch.close(200, "OK".into()).await;
        Ok(())
    }

    /// The start-up check against the broker: every queue exists with the
    /// declared properties (a passive declare finds it, a full declare with
    /// the required arguments is accepted) and publisher confirms can be
    /// enabled. Refuses with a message naming what is wrong.
    pub async fn verify(&self, conn: &Connection) -> Result<(), BusError> {
        Self::check(&self.queues())?;
        for q in self.queues() {
            let ch = conn.create_channel().await?;
            let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
            ch.queue_declare(q.name.as_str().into(), passive, FieldTable::default())
                .await
                .map_err(|e| BusError::Topology(format!("queue `{}` is missing: {e}", q.name)))?;
            let options = QueueDeclareOptions { durable: q.durable, ..QueueDeclareOptions::default() };
            ch.queue_declare(q.name.as_str().into(), options, q.field_table()).await.map_err(|e| {
                BusError::Topology(format!(
                    "queue `{}` is not the durable quorum queue with dead-lettering the hub requires: {e}",
                    q.name
                ))
            })?;
            let _ = ch.close(200, "OK".into()).await;
        }
        let ch = conn.create_channel().await?;
        ch.confirm_select(lapin::options::ConfirmSelectOptions::default())
            .await
            .map_err(|e| BusError::Topology(format!("publisher confirms cannot be enabled: {e}")))?;
        let _ = ch.close(200, "OK".into()).await;
        Ok(())
    }

    /// Deletes every queue and exchange of this topology (tests, teardown).
    pub async fn delete(&self, ch: &Channel) -> Result<(), BusError> {
        for q in self.queues() {
            ch.queue_delete(q.name.as_str().into(), lapin::options::QueueDeleteOptions::default()).await?;
        }
        for x in [self.commands_exchange(), self.dead_exchange(), self.retry_exchange()] {
            ch.exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default()).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_declared_topology_passes_its_own_check() {
        let t = Topology::new("t", 4, vec![]);
        Topology::check(&t.queues()).unwrap();
        assert_eq!(t.queues().len(), 4 + 5 + 1);
    }

    #[test]
    fn a_lossy_topology_is_refused_with_the_reason() {
        let t = Topology::new("t", 2, vec![Duration::from_secs(1)]);
        let mut queues = t.queues();
        queues[0].durable = false;
        queues[1].arguments.retain(|(k, _)| *k != "x-dead-letter-exchange");
        let err = Topology::check(&queues).unwrap_err().to_string();
        assert!(err.contains("`t.commands.0` is not durable"), "{err}");
        assert!(err.contains("`t.commands.1` has no dead-letter exchange"), "{err}");
    }

    #[test]
    fn delays_round_up_to_the_next_bucket() {
        let t = Topology::new("t", 1, vec![Duration::from_secs(10), Duration::from_secs(1)]);
        assert_eq!(t.bucket_for(Duration::from_millis(10)), Duration::from_secs(1));
        assert_eq!(t.bucket_for(Duration::from_secs(1)), Duration::from_secs(1));
        assert_eq!(t.bucket_for(Duration::from_millis(1001)), Duration::from_secs(10));
        assert_eq!(t.bucket_for(Duration::from_secs(99)), Duration::from_secs(10), "capped at the largest");
        assert_eq!(t.retry_queue(Duration::from_secs(10)), "t.retry.10000");
    }
}
