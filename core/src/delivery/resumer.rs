//! The lane resumer: attempts lane heads whose time has come, and when a
//! head is done, goes straight on with the commands that were held behind
//! it, in order, until the lane is empty or blocked again.
//!
//! Heads are leased before they are attempted, so several replicas share
//! the work without performing one command twice; a replica that dies
//! mid-lane leaves its lease to run out and another one carries on.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::dispatcher::sleep_or_stop;
use super::performer::{CommandPerformer, Prior, Step, admission_of};
use crate::store::{DeliveryRecord, Lease, Store, StoreError};

/// Lanes worked on at once by one replica.
const LANES_AT_ONCE: usize = 16;
/// Heads claimed per pass.
const CLAIM_BATCH: u32 = 64;

pub struct LaneResumer {
    pub store: Arc<dyn Store>,
    pub performer: Arc<CommandPerformer>,
    pub owner: String,
    pub poll: Duration,
}

impl LaneResumer {
    pub async fn run(self, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(200);
        while !stop.is_cancelled() {
            let wait = match self.resume_due().await {
                Ok(0) => self.poll,
                // More may be due already: look again at once.
                Ok(_) => Duration::ZERO,
                Err(e) => {
                    tracing::warn!(error = %e, "Lane resumer paused.");
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    backoff
                }
            };
            if sleep_or_stop(&stop, wait).await {
                return;
            }
        }
    }

    /// One pass: claims due heads and works their lanes; returns how many
    /// heads it claimed.
    pub async fn resume_due(&self) -> Result<usize, StoreError> {
        let heads = self.store.delivery_claim_due(&self.lease(), Utc::now(), CLAIM_BATCH).await?;
        let claimed = heads.len();
        let results: Vec<Result<(), StoreError>> = futures::stream::iter(heads)
            .map(|head| self.work_lane(head))
            .buffer_unordered(LANES_AT_ONCE)
            .collect()
            .await;
        results.into_iter().collect::<Result<(), _>>()?;
        Ok(claimed)
    }

    fn lease(&self) -> Lease {
        // Long enough for an attempt with its timeout and a wait for budget.
        let ttl =
            self.performer.policy.attempt_timeout * 2 + self.performer.policy.max_inline_wait + Duration::from_secs(30);
        Lease { owner: self.owner.clone(), until: Utc::now() + chrono::Duration::from_std(ttl).unwrap_or_default() }
    }

    async fn work_lane(&self, mut head: DeliveryRecord) -> Result<(), StoreError> {
        loop {
            let admission = admission_of(&head.command, head.lane.clone());
            let prior = Prior {
                attempts: head.attempts,
                round_attempts: head.round_attempts,
                // A retryable failure may have been a lost answer to a call
                // that did reach the target.
                possibly_applied: head.attempts > 0 && head.last_class.as_deref() == Some("retryable"),
            };
            match self.performer.attempt(&head.command, admission, prior).await {
                Step::Defer(due) => {
                    self.store.delivery_defer(head.command.id, due, Utc::now()).await?;
                    return Ok(());
                }
                Step::Settle(settlement) => match self.store.delivery_settle(&settlement, Some(&self.lease())).await? {
                    Some(next) => head = next,
                    None => return Ok(()),
                },
            }
        }
    }
}
