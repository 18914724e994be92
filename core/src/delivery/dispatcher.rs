//! The dispatcher: one worker per bus partition takes commands in order and
//! performs them, and the lane resumer carries on with the ones that could
//! not go out at once.
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

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::performer::{CommandPerformer, Prior, Step, admission_of, deferred};
use super::resumer::LaneResumer;
use crate::bus::{Bus, BusError, Delivery, PartitionConsumer};
use crate::flow::effects::Command;
use crate::store::{Admitted, Store, StoreError};

pub struct Dispatcher {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub performer: Arc<CommandPerformer>,
    /// Names this replica's leases on lane heads.
    pub owner: String,
    pub resume_poll: Duration,
}

#[derive(Debug, thiserror::Error)]
enum HandleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bus(#[from] BusError),
}

impl Dispatcher {
    /// Runs a worker per partition and the lane resumer until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut tasks = JoinSet::new();
        for partition in 0..self.bus.partitions() {
            let me = self.clone();
            let stop = stop.clone();
            tasks.spawn(async move { me.work_partition(partition, stop).await });
        }
        let resumer = LaneResumer {
            store: self.store.clone(),
            performer: self.performer.clone(),
            owner: self.owner.clone(),
            poll: self.resume_poll,
        };
        let resume_stop = stop.clone();
        tasks.spawn(async move { resumer.run(resume_stop).await });
        while tasks.join_next().await.is_some() {}
    }

    /// Consumes one partition, reconnecting (with backoff) when the bus
    /// drops it.
    async fn work_partition(&self, partition: u32, stop: CancellationToken) {
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
            match self.consume(consumer.as_mut(), &stop).await {
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

    async fn consume(&self, consumer: &mut dyn PartitionConsumer, stop: &CancellationToken) -> Result<(), HandleError> {
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                next = consumer.next(Duration::from_secs(1)) => next?,
            };
            if let Some(delivery) = next {
                self.handle(consumer, &delivery).await?;
            }
        }
    }

    async fn handle(&self, consumer: &mut dyn PartitionConsumer, delivery: &Delivery) -> Result<(), HandleError> {
        let command: Command = match serde_json::from_slice(&delivery.message.payload) {
            Ok(command) => command,
            Err(e) => {
                let reason = format!("not a command: {e}");
                tracing::error!(message = %delivery.message.id, %reason, "Dead-lettering an unreadable bus message.");
                metrics::counter!("dealbridge_delivery_unreadable_total").increment(1);
                consumer.dead_letter(delivery, &reason).await?;
                return Ok(());
            }
        };
        let admission = admission_of(&command, delivery.message.key.clone());
        match self.store.delivery_admit(&admission, Utc::now()).await? {
            Admitted::Known(state) => {
                tracing::debug!(command = %command.id, state = state.as_str(), "Already recorded; not performed again.");
                metrics::counter!("dealbridge_delivery_duplicates_total").increment(1);
            }
            Admitted::Held => {
                tracing::debug!(command = %command.id, lane = %admission.lane, "Held behind its lane's head.");
            }
            Admitted::Free => {
                let prior = Prior { possibly_applied: delivery.redelivered, ..Prior::default() };
                let settlement = match self.performer.attempt(&command, admission.clone(), prior).await {
                    Step::Settle(settlement) => settlement,
                    Step::Defer(due) => deferred(admission, prior, due),
                };
                self.store.delivery_settle(&settlement, None).await?;
            }
        }
        consumer.ack(delivery).await?;
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
