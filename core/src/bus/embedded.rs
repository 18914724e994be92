//! The embedded bus: a queue per partition kept in the `Store` (SQLite by
//! default, or the PostgreSQL several replicas share), so the hub needs no
//! broker.
//!
//! Single active consumer is a lease row per partition: a consumer claims
//! the head message only while it holds the lease, a background task renews
//! the lease while the consumer lives, dropping the consumer gives it up,
//! and after a crash it expires (`lease`) so another consumer takes over
//! and gets the unacked head again, flagged `redelivered`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::{Bus, BusError, BusMessage, Delivery, PartitionConsumer, partition_of};
use crate::store::{QueuedMessage, Store};

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
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(renew_lease(self.store.clone(), partition, owner.clone(), self.lease, stopped));
        Ok(Box::new(EmbeddedConsumer {
            store: self.store.clone(),
            partition,
            owner,
            lease: self.lease,
            poll: self.poll,
            in_flight: None,
            _stop: stop,
        }))
    }

    async fn ping(&self) -> Result<(), BusError> {
        Ok(self.store.ping().await?)
    }
}

/// Keeps (or waits for) the partition's lease until the consumer is dropped,
/// then releases it so another consumer takes over at once. Renewal and
/// release run in this one task, so a release can never be overtaken by a
/// late renewal.
async fn renew_lease(
    store: Arc<dyn Store>,
    partition: u32,
    owner: String,
    lease: Duration,
    mut stopped: oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            () = tokio::time::sleep(lease / 3) => {
                if let Err(e) = store.bus_lease(partition, &owner, after(lease), Utc::now()).await {
                    tracing::warn!(partition, error = %e, "cannot renew bus partition lease");
                }
            }
        }
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
    /// The unsettled delivery (prefetch 1).
    in_flight: Option<Uuid>,
    /// Dropping it stops the renewal task, which then releases the lease.
    _stop: oneshot::Sender<()>,
}

impl EmbeddedConsumer {
    fn check(&self, d: &Delivery) -> Result<(), BusError> {
        match self.in_flight {
            Some(id) if id == d.message.id => Ok(()),
            _ => Err(BusError::Invalid(format!("message {} is not this consumer's open delivery", d.message.id))),
        }
    }
}

#[async_trait]
impl PartitionConsumer for EmbeddedConsumer {
    async fn next(&mut self, wait: Duration) -> Result<Option<Delivery>, BusError> {
        if self.in_flight.is_some() {
            tokio::time::sleep(wait).await;
            return Ok(None);
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let now = Utc::now();
            if let Some(c) = self.store.bus_claim(self.partition, &self.owner, after(self.lease), now).await? {
                self.in_flight = Some(c.message.id);
                return Ok(Some(Delivery {
                    partition: c.message.partition,
                    redelivered: c.deliveries > 1,
                    message: BusMessage {
                        id: c.message.id,
                        key: c.message.key,
                        idempotency_key: c.message.idempotency_key,
                        payload: c.message.payload,
                    },
                    tag: 0,
                }));
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            tokio::time::sleep(left.min(self.poll)).await;
        }
    }

    async fn ack(&mut self, d: &Delivery) -> Result<(), BusError> {
        self.check(d)?;
        self.store.bus_ack(d.message.id).await?;
        self.in_flight = None;
        Ok(())
    }

    async fn dead_letter(&mut self, d: &Delivery, reason: &str) -> Result<(), BusError> {
        self.check(d)?;
        self.store.bus_dead_letter(d.message.id, reason, Utc::now()).await?;
        self.in_flight = None;
        Ok(())
    }

    async fn retry_later(&mut self, d: &Delivery, delay: Duration) -> Result<(), BusError> {
        self.check(d)?;
        self.store.bus_retry(d.message.id, after(delay)).await?;
        self.in_flight = None;
        Ok(())
    }
}
