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
use super::performer::{CommandPerformer, Prior, RoundItem, Step, admission_of};
use crate::store::{DeliveryRecord, Lease, Store, StoreError};

/// Lanes worked on at once by one replica.
const LANES_AT_ONCE: usize = 16;
/// Heads claimed per pass.
const CLAIM_BATCH: u32 = 64;
/// Passes worked at once by one replica.
const PASSES_AT_ONCE: usize = 4;

pub struct LaneResumer {
    pub store: Arc<dyn Store>,
    pub performer: Arc<CommandPerformer>,
    pub owner: String,
    pub poll: Duration,
}

impl LaneResumer {
    /// Claims due heads and works them until `stop`. When a claim comes
    /// back full more are likely due: the next claim goes at once, beside
    /// the passes still working (up to `PASSES_AT_ONCE`), so a deep backlog
    /// of retries — e.g. a rate-limited portal's, whose commands share
    /// calls — is not worked 64 at a time.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut passes = tokio::task::JoinSet::new();
        let mut backoff = Duration::from_millis(200);
        while !stop.is_cancelled() {
            let mut wait = self.poll;
            if passes.len() < PASSES_AT_ONCE {
                match self.store.delivery_claim_due(&self.lease(), Utc::now(), CLAIM_BATCH).await {
                    Ok(heads) => {
                        backoff = Duration::from_millis(200);
                        if heads.len() as u32 == CLAIM_BATCH {
                            wait = Duration::ZERO;
                        }
                        if !heads.is_empty() {
                            let resumer = self.clone();
                            passes.spawn(async move { resumer.work(heads).await });
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "Lane resumer paused.");
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                        wait = backoff;
                    }
                }
            }
            tokio::select! {
                Some(done) = passes.join_next(), if !passes.is_empty() => {
                    if let Ok(Err(e)) = done {
                        tracing::warn!(error = %e, "Lane resumer pass failed; its leases run out and its lanes are taken up again.");
                    }
                }
                stopped = sleep_or_stop(&stop, wait) => if stopped { break },
            }
        }
        // Passes finish their calls and record them before the hub stops.
        while passes.join_next().await.is_some() {}
    }

    /// Works claimed heads. Heads for a target that coalesces are first
    /// attempted together, so a deep queue of retries to a rate-limited
    /// portal goes out in shared calls; each lane then goes on alone.
    async fn work(&self, heads: Vec<DeliveryRecord>) -> Result<(), StoreError> {
        let (together, alone): (Vec<_>, Vec<_>) =
            heads.into_iter().partition(|head| self.performer.coalesces(&head.command));
        let nexts = self.attempt_together(together).await?;
        let results: Vec<Result<(), StoreError>> = futures::stream::iter(alone.into_iter().chain(nexts))
            .map(|head| self.work_lane(head))
            .buffer_unordered(LANES_AT_ONCE)
            .collect()
            .await;
        results.into_iter().collect::<Result<(), _>>()
    }

    fn lease(&self) -> Lease {
        // Long enough for an attempt with its timeout and a wait for budget.
        let ttl =
            self.performer.policy.attempt_timeout * 2 + self.performer.policy.max_inline_wait + Duration::from_secs(30);
        Lease { owner: self.owner.clone(), until: Utc::now() + chrono::Duration::from_std(ttl).unwrap_or_default() }
    }

    /// Attempts heads of different lanes in one round; returns the commands
    /// that were held behind the heads now done.
    async fn attempt_together(&self, heads: Vec<DeliveryRecord>) -> Result<Vec<DeliveryRecord>, StoreError> {
        if heads.is_empty() {
            return Ok(Vec::new());
        }
        let round: Vec<RoundItem<'_>> = heads
            .iter()
            .map(|head| RoundItem {
                command: &head.command,
                admission: admission_of(&head.command, head.lane.clone()),
                prior: prior_of(head),
            })
            .collect();
        let steps = self.performer.attempt_round(&round).await;
        let mut nexts = Vec::new();
        for (head, step) in heads.iter().zip(steps) {
            nexts.extend(self.record(head, step).await?);
        }
        Ok(nexts)
    }

    async fn work_lane(&self, mut head: DeliveryRecord) -> Result<(), StoreError> {
        loop {
            let admission = admission_of(&head.command, head.lane.clone());
            let step = self.performer.attempt(&head.command, admission, prior_of(&head)).await;
            match self.record(&head, step).await? {
                Some(next) => head = next,
                None => return Ok(()),
            }
        }
    }

    /// Writes an attempt's step; returns the lane's next command when the
    /// head is done and one was held behind it.
    async fn record(&self, head: &DeliveryRecord, step: Step) -> Result<Option<DeliveryRecord>, StoreError> {
        match step {
            Step::Defer(due) => {
                self.store.delivery_defer(head.command.id, due, Utc::now()).await?;
                Ok(None)
            }
            Step::Settle(settlement) => self.store.delivery_settle(&settlement, Some(&self.lease())).await,
        }
    }
}

fn prior_of(head: &DeliveryRecord) -> Prior {
    Prior {
        attempts: head.attempts,
        round_attempts: head.round_attempts,
        // A retryable failure may have been a lost answer to a call that
        // did reach the target.
        possibly_applied: head.attempts > 0 && head.last_class.as_deref() == Some("retryable"),
    }
}
