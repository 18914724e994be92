//! The bus between the outbox relay and the dispatcher: one narrow trait,
//! two backends side by side.
//!
//! `EmbeddedBus` keeps the queue in the `Store` (the default, no services);
//! `RabbitBus` uses RabbitMQ quorum queues (production, several replicas).
//! Both give the same guarantees and run one shared test suite (`suite.rs`):
//! messages are partitioned by key (`partition_of`), each partition is
//! consumed by a single active consumer one batch at a time in publish
//! order, an unacked delivery comes back (`redelivered`) when its consumer
//! goes away, and a delivery ends acked, dead-lettered or retried later.

mod embedded;
mod error;
mod rabbitmq;
#[cfg(test)]
mod suite;
mod topology;

use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

pub use embedded::EmbeddedBus;
pub use error::BusError;
pub use rabbitmq::{RabbitBus, RabbitConfig};
pub use topology::{QueueRole, QueueSpec, Topology};

/// One command on its way to a connected system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusMessage {
    pub id: Uuid,
    /// Partition key: the deal id, or the target when there is no deal.
    pub key: String,
    pub idempotency_key: String,
    /// The command as JSON.
    pub payload: Vec<u8>,
}

/// A message handed to a partition's consumer, to be settled exactly once
/// with `ack`, `dead_letter` or `retry_later`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub message: BusMessage,
    pub partition: u32,
    /// It was handed out before and not settled (its consumer went away).
    pub redelivered: bool,
    /// Backend-private handle (the AMQP delivery tag; unused on embedded).
    pub(crate) tag: u64,
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    fn partitions(&self) -> u32;

    /// Durable before it returns: embedded = committed in one transaction;
    /// RabbitMQ = persistent messages, mandatory routing, publisher confirms
    /// awaited (a nack or a returned message is an error).
    ///
    /// At least once, with ids: publishing a message again (the outbox relay
    /// does after a crash between publishing and marking its commands
    /// published) succeeds on both backends. RabbitMQ queues another copy.
    /// The embedded bus keeps just the first copy while its id is still in
    /// the queue — waiting (also for a retry), handed out, or acked and not
    /// yet removed (that happens with the consumer's next claim) — and adds
    /// nothing; once the first copy is gone (removed after its ack, or
    /// dead-lettered) the id is queued anew. Same id means same command, so
    /// a consumer that sees one again recognises it by its idempotency key.
    async fn publish(&self, messages: &[BusMessage]) -> Result<(), BusError>;

    /// Starts consuming partition `partition` as its single active consumer:
    /// other consumers of the same partition (in this or another replica)
    /// stay idle until this one goes away (dropped, or its process died).
    async fn consume(&self, partition: u32) -> Result<Box<dyn PartitionConsumer>, BusError>;

    /// Cheap reachability check for readiness.
    async fn ping(&self) -> Result<(), BusError>;

    /// Messages waiting in the partitions (ready or handed out, not yet
    /// settled; delayed retries and dead letters not included).
    async fn depth(&self) -> Result<u64, BusError>;
}

#[async_trait]
pub trait PartitionConsumer: Send {
    /// The next deliveries in the partition's publish order — at least one
    /// and at most `max` — or none when nothing came within `wait`. One
    /// batch at a time: while a delivery handed out earlier is unsettled,
    /// this waits and returns none. A batch is whatever is ready at once;
    /// it does not wait to fill up.
    async fn next_batch(&mut self, wait: Duration, max: usize) -> Result<Vec<Delivery>, BusError>;

    /// The next delivery alone (`next_batch` of one).
    async fn next(&mut self, wait: Duration) -> Result<Option<Delivery>, BusError> {
        Ok(self.next_batch(wait, 1).await?.into_iter().next())
    }

    /// Acks every delivery of `deliveries` (each unsettled, of this
    /// consumer) at once.
    async fn ack_all(&mut self, deliveries: &[Delivery]) -> Result<(), BusError>;

    async fn ack(&mut self, delivery: &Delivery) -> Result<(), BusError> {
        self.ack_all(std::slice::from_ref(delivery)).await
    }

    /// Takes it out of the partition into the dead-letter place (RabbitMQ:
    /// reject without requeue → dead-letter exchange, at-least-once;
    /// embedded: the store's dead letters, with the reason).
    async fn dead_letter(&mut self, delivery: &Delivery, reason: &str) -> Result<(), BusError>;

    /// Puts it at the back of its partition again, not visible before
    /// `delay`, and settles the original (RabbitMQ: the delay is rounded up
    /// to the next retry bucket, see `Topology::bucket_for`).
    async fn retry_later(&mut self, delivery: &Delivery, delay: Duration) -> Result<(), BusError>;
}

/// The partition of a key: 64-bit FNV-1a of its UTF-8 bytes modulo
/// `partitions`. Stable across processes, versions and platforms (no
/// randomized hasher), so every replica and both backends agree.
pub fn partition_of(key: &str, partitions: u32) -> u32 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = key.bytes().fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    u32::try_from(hash % u64::from(partitions.max(1))).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::partition_of;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        // FNV-1a 64 of "" and "a" (from the FNV reference), reduced mod 2^32 - 1.
        let m = u32::MAX;
        assert_eq!(partition_of("", m), (0xcbf2_9ce4_8422_2325_u64 % u64::from(m)) as u32);
        assert_eq!(partition_of("a", m), (0xaf63_dc4c_8601_ec8c_u64 % u64::from(m)) as u32);
        assert_eq!(partition_of("deal-1", 1), 0);
        assert_eq!(partition_of("deal-1", 0), 0, "zero partitions is treated as one");
    }
}
