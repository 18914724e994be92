//! The dispatcher: one worker per bus partition takes commands in order, a
//! batch at a time, and performs them (`batch`), and the lane resumer
//! carries on with the ones that could not go out at once.
//!
//! A worker never sleeps on a failing deal: a command that fails (or whose
//! target is out of budget for longer than a moment) becomes the head of
//! its lane in the store, the delivery is acked, and the worker goes on
//! with the next command of the partition — which, if it belongs to the
//! same deal, is recorded as held behind that head. Order per deal, no
//! head-of-line blocking across deals.
//!
//! Exactly once, as far as the target allows: a command whose delivery row
//! says `done` is never performed again (the dedupe check before the call);
//! a redelivered one (its earlier consumer died mid-call) is performed with
//! `possibly_applied`, so the connector checks the target first; and every
//! call carries the command's idempotency key.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::batch::{Batch, Unreadable};
use super::group_settle::SettlementCommitter;
use super::performer::CommandPerformer;
use super::resumer::LaneResumer;
use super::sharing::Share;
use crate::bus::{Bus, BusError, Delivery, PartitionConsumer};
use crate::store::{Store, StoreError};

pub struct Dispatcher {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub performer: Arc<CommandPerformer>,
    /// Names this replica's leases on lane heads.
    pub owner: String,
    pub resume_poll: Duration,
    /// Most commands a partition worker takes off the bus at once.
    pub batch: usize,
    /// Which partitions this replica consumes (see `sharing`).
    pub share: watch::Receiver<Share>,
}

#[derive(Debug, thiserror::Error)]
enum HandleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bus(#[from] BusError),
}

impl Dispatcher {
    /// Runs a worker per partition of this replica's share, and the lane
    /// resumer, until `stop`; hands partitions over as the share changes.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut tasks = JoinSet::new();
        let resumer = Arc::new(LaneResumer {
            store: self.store.clone(),
            performer: self.performer.clone(),
            owner: self.owner.clone(),
            poll: self.resume_poll,
        });
        tasks.spawn(resumer.run(stop.clone()));
        let committer = SettlementCommitter::start(self.store.clone());
        let mut share = self.share.clone();
        let mut workers: HashMap<u32, CancellationToken> = HashMap::new();
        loop {
            let current = *share.borrow_and_update();
            for partition in 0..self.bus.partitions() {
                match (current.owns(partition), workers.contains_key(&partition)) {
                    (true, false) => {
                        let token = stop.child_token();
                        let me = self.clone();
                        let worker_stop = token.clone();
                        let committer = committer.clone();
                        tasks.spawn(async move { me.work_partition(partition, &committer, worker_stop).await });
                        workers.insert(partition, token);
                    }
                    // It finishes its batch, then lets the partition go.
                    (false, true) => workers.remove(&partition).into_iter().for_each(|t| t.cancel()),
                    _ => {}
                }
            }
            metrics::gauge!("dealbridge_delivery_partitions_owned").set(workers.len() as f64);
            tokio::select! {
                _ = stop.cancelled() => break,
                changed = share.changed() => {
                    if changed.is_err() {
                        // Nobody changes the share any more: keep it.
                        stop.cancelled().await;
                        break;
                    }
                }
                Some(_) = tasks.join_next() => {}
            }
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Consumes one partition, reconnecting (with backoff) when the bus
    /// drops it.
    async fn work_partition(&self, partition: u32, committer: &SettlementCommitter, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(200);
        while !stop.is_cancelled() {
            let mut consumer = match self.bus.consume(partition).await {
                Ok(consumer) => consumer,
                Err(e) => {
                    tracing::warn!(partition, error = %e, "Cannot consume the partition; trying again.");
                    if sleep_or_stop(&stop, backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            backoff = Duration::from_millis(200);
            match self.consume(consumer.as_mut(), committer, &stop).await {
                Ok(()) => return,
                Err(e) => {
                    // The unsettled delivery (if any) comes back to whoever
                    // consumes the partition next: nothing is lost.
                    tracing::warn!(partition, error = %e, "Partition worker stopped; starting over.");
                    drop(consumer);
                    if sleep_or_stop(&stop, backoff).await {
                        return;
                    }
                }
            }
        }
    }

    async fn consume(
        &self,
        consumer: &mut dyn PartitionConsumer,
        committer: &SettlementCommitter,
        stop: &CancellationToken,
    ) -> Result<(), HandleError> {
        loop {
            let deliveries = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                next = consumer.next_batch(Duration::from_secs(1), self.batch.max(1)) => next?,
            };
            if !deliveries.is_empty() {
                self.handle(consumer, committer, &deliveries).await?;
            }
        }
    }

    async fn handle(
        &self,
        consumer: &mut dyn PartitionConsumer,
        committer: &SettlementCommitter,
        deliveries: &[Delivery],
    ) -> Result<(), HandleError> {
        let (batch, unreadable) = Batch::decode(deliveries);
        let mut dead = HashSet::new();
        for Unreadable { delivery, reason } in unreadable {
            tracing::error!(message = %delivery.message.id, %reason, "Dead-lettering an unreadable bus message.");
            metrics::counter!("dealbridge_delivery_unreadable_total").increment(1);
            consumer.dead_letter(delivery, &reason).await?;
            dead.insert(delivery.message.id);
        }
        batch.run(self.store.as_ref(), &self.performer, committer).await?;
        let settled: Vec<Delivery> = deliveries.iter().filter(|d| !dead.contains(&d.message.id)).cloned().collect();
        consumer.ack_all(&settled).await?;
        Ok(())
    }
}

/// Sleeps unless stopped first; true when stopped.
pub(super) async fn sleep_or_stop(stop: &CancellationToken, wait: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(wait) => false,
    }
}
