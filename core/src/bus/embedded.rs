//! The embedded bus: a queue per partition kept in the `Store` (SQLite by
//! default, or the PostgreSQL several replicas share), so the hub needs no
//! broker.
//!
//! Single active consumer is a lease row per partition: a consumer claims
//! the head messages only while it holds the lease, a background task
//! renews the lease while the consumer lives, dropping the consumer gives
//! it up, and after a crash it expires (`lease`) so another consumer takes
//! over and gets the unacked messages again, flagged `redelivered`.
//!
//! Acks ride on the next claim: `ack_all` settles the batch at once for
//! this consumer, and the rows go in the same transaction that claims the
//! next batch (or when the consumer is dropped). That saves a commit — an
//! fsync on SQLite's one writer — per batch. A crash in between brings the
//! acked messages back as redeliveries, which the dispatcher recognises by
//! their `done` delivery rows.
//!
//! A message's id is unique in the queue: publishing an id that is still
//! there (waiting, handed out, or acked and not yet removed) succeeds and
//! leaves the first copy as it is, so a republish by the outbox relay after
//! a crash neither fails nor delivers the command twice while it is queued.
//! After the first copy is gone the id is queued again, and the consumer
//! recognises the command as above (RabbitMQ always queues the second copy).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::{Bus, BusError, BusMessage, Delivery, PartitionConsumer, partition_of};
use crate::store::{ClaimedMessage, QueuedMessage, Store};

/// Store-backed `Bus`.
pub struct EmbeddedBus {
    store: Arc<dyn Store>,
    partitions: u32,
    lease: Duration,
    poll: Duration,
}

impl EmbeddedBus {
    /// A bus over `store` with `partitions` partitions (at least 1), a 10 s
    /// lease and a 20 ms poll interval.
    pub fn new(store: Arc<dyn Store>, partitions: u32) -> Self {
        Self { store, partitions: partitions.max(1), lease: Duration::from_secs(10), poll: Duration::from_millis(20) }
    }

    /// How long a crashed consumer keeps its partition before another takes
    /// over (renewed every third of it while alive).
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(30));
        self
    }
}

fn after(d: Duration) -> chrono::DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

#[async_trait]
impl Bus for EmbeddedBus {
    fn partitions(&self) -> u32 {
        self.partitions
    }

    async fn publish(&self, messages: &[BusMessage]) -> Result<(), BusError> {
        let now = Utc::now();
        let queued: Vec<QueuedMessage> = messages
            .iter()
            .map(|m| QueuedMessage {
                id: m.id,
                partition: partition_of(&m.key, self.partitions),
                key: m.key.clone(),
                idempotency_key: m.idempotency_key.clone(),
                payload: m.payload.clone(),
                visible_at: now,
            })
            .collect();
        Ok(self.store.bus_enqueue(&queued).await?)
    }

    async fn depth(&self) -> Result<u64, BusError> {
        Ok(self.store.bus_depth().await?)
    }

    async fn consume(&self, partition: u32) -> Result<Box<dyn PartitionConsumer>, BusError> {
        if partition >= self.partitions {
            return Err(BusError::Invalid(format!("partition {partition} of {}", self.partitions)));
        }
        let owner = format!("consumer-{}", Uuid::new_v4().simple());
        let (stop, stopped) = oneshot::channel::<Vec<Uuid>>();
        tokio::spawn(renew_lease(self.store.clone(), partition, owner.clone(), self.lease, stopped));
        Ok(Box::new(EmbeddedConsumer {
            store: self.store.clone(),
            partition,
            owner,
            lease: self.lease,
            poll: self.poll,
            in_flight: HashSet::new(),
            acked: Vec::new(),
            stop: Some(stop),
        }))
    }

    async fn ping(&self) -> Result<(), BusError> {
        Ok(self.store.ping().await?)
    }
}

/// Keeps (or waits for) the partition's lease until the consumer is dropped,
/// then removes the messages it had acked and releases the lease so another
/// consumer takes over at once. Renewal and release run in this one task,
/// so a release can never be overtaken by a late renewal.
async fn renew_lease(
    store: Arc<dyn Store>,
    partition: u32,
    owner: String,
    lease: Duration,
    mut stopped: oneshot::Receiver<Vec<Uuid>>,
) {
    let acked = loop {
        tokio::select! {
            acked = &mut stopped => break acked.unwrap_or_default(),
            () = tokio::time::sleep(lease / 3) => {
                if let Err(e) = store.bus_lease(partition, &owner, after(lease), Utc::now()).await {
                    tracing::warn!(partition, error = %e, "cannot renew bus partition lease");
                }
            }
        }
    };
    if let Err(e) = store.bus_ack(&acked).await {
        tracing::warn!(partition, error = %e, "cannot remove acked bus messages; they come back as redeliveries");
    }
    if let Err(e) = store.bus_release(partition, &owner).await {
        tracing::warn!(partition, error = %e, "cannot release bus partition lease; it expires by itself");
    }
}

struct EmbeddedConsumer {
    store: Arc<dyn Store>,
    partition: u32,
    owner: String,
    lease: Duration,
    poll: Duration,
    /// The unsettled deliveries of the last batch.
    in_flight: HashSet<Uuid>,
    /// Acked, to be removed with the next claim.
    acked: Vec<Uuid>,
    /// Told on drop (with the acked ids): the renewal task removes them and
    /// releases the lease.
    stop: Option<oneshot::Sender<Vec<Uuid>>>,
}

impl Drop for EmbeddedConsumer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(std::mem::take(&mut self.acked));
        }
    }
}

impl EmbeddedConsumer {
    /// Settling works only on this consumer's unsettled deliveries.
    fn ensure_open(&self, d: &Delivery) -> Result<(), BusError> {
        if self.in_flight.contains(&d.message.id) {
            Ok(())
        } else {
            Err(BusError::Invalid(format!("message {} is not an open delivery of this consumer", d.message.id)))
        }
    }
}

fn delivery_of(c: ClaimedMessage) -> Delivery {
    Delivery {
        partition: c.message.partition,
        redelivered: c.deliveries > 1,
        message: BusMessage {
            id: c.message.id,
            key: c.message.key,
            idempotency_key: c.message.idempotency_key,
            payload: c.message.payload,
        },
        tag: 0,
    }
}

#[async_trait]
impl PartitionConsumer for EmbeddedConsumer {
    async fn next_batch(&mut self, wait: Duration, max: usize) -> Result<Vec<Delivery>, BusError> {
        if !self.in_flight.is_empty() {
            tokio::time::sleep(wait).await;
            return Ok(Vec::new());
        }
        let limit = u32::try_from(max.max(1)).unwrap_or(u32::MAX);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let now = Utc::now();
            let claimed =
                self.store.bus_claim(self.partition, &self.owner, after(self.lease), now, limit, &self.acked).await?;
            self.acked.clear();
            if !claimed.is_empty() {
                let batch: Vec<Delivery> = claimed.into_iter().map(delivery_of).collect();
                self.in_flight = batch.iter().map(|d| d.message.id).collect();
                return Ok(batch);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(Vec::new());
            }
            tokio::time::sleep(left.min(self.poll)).await;
        }
    }

    async fn ack_all(&mut self, deliveries: &[Delivery]) -> Result<(), BusError> {
        for d in deliveries {
            self.ensure_open(d)?;
        }
        for d in deliveries {
            self.in_flight.remove(&d.message.id);
            self.acked.push(d.message.id);
        }
        Ok(())
    }

    async fn dead_letter(&mut self, d: &Delivery, reason: &str) -> Result<(), BusError> {
        self.ensure_open(d)?;
        self.store.bus_dead_letter(d.message.id, reason, Utc::now()).await?;
        self.in_flight.remove(&d.message.id);
        Ok(())
    }

    async fn retry_later(&mut self, d: &Delivery, delay: Duration) -> Result<(), BusError> {
        self.ensure_open(d)?;
        self.store.bus_retry(d.message.id, after(delay)).await?;
        self.in_flight.remove(&d.message.id);
        Ok(())
    }
}
