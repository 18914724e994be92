//! One batch off a partition: admitted together, its lanes performed side
//! by side (each lane's commands one after another, in order), settled in
//! one transaction and acked at once.
//!
//! Why batches: one command at a time costs a claim, an admission, a
//! settlement and an ack per command — four round trips to the store or
//! broker around one HTTP call, and only one call in flight per partition.
//! A batch pays for those once and keeps every lane of the batch busy.
//!
//! Order within a lane holds because a lane's commands of one batch run in
//! sequence, and a command that cannot go out now (it becomes the lane's
//! head, `waiting` or `parked`) sends the lane's later commands of the
//! batch to `held` behind it, written after it in the same transaction.

use std::collections::{HashMap, HashSet};

use chrono::Utc;
use futures::future::{join, join_all};

use super::group_settle::SettlementCommitter;
use super::performer::{CommandPerformer, Prior, RoundItem, Step, admission_of, deferred, held};
use crate::bus::Delivery;
use crate::flow::effects::Command;
use crate::store::{Admission, Admitted, Settlement, Store, StoreError};

/// A readable command of the batch.
struct Item {
    command: Command,
    admission: Admission,
    redelivered: bool,
}

/// What the worker does with a batch once it is decoded.
pub(super) struct Batch {
    items: Vec<Item>,
}

/// A delivery whose payload is not a command, with the reason.
pub(super) struct Unreadable<'a> {
    pub delivery: &'a Delivery,
    pub reason: String,
}

impl Batch {
    /// Decodes the batch, leaving out unreadable payloads (returned, to be
    /// dead-lettered) and second copies of a command within the batch
    /// (the relay may publish a command twice; acking the copy is enough).
    pub(super) fn decode(deliveries: &[Delivery]) -> (Batch, Vec<Unreadable<'_>>) {
        let mut items = Vec::with_capacity(deliveries.len());
        let mut unreadable = Vec::new();
        let mut seen = HashSet::with_capacity(deliveries.len());
        for delivery in deliveries {
            match serde_json::from_slice::<Command>(&delivery.message.payload) {
                Ok(command) if !seen.insert(command.id) => {
                    metrics::counter!("dealbridge_delivery_duplicates_total").increment(1);
                }
                Ok(command) => items.push(Item {
                    admission: admission_of(&command, delivery.message.key.clone()),
                    command,
                    redelivered: delivery.redelivered,
                }),
                Err(e) => unreadable.push(Unreadable { delivery, reason: format!("not a command: {e}") }),
            }
        }
        (Batch { items }, unreadable)
    }

    /// Admits, performs and settles the batch; the caller acks it after.
    pub(super) async fn run(
        self,
        store: &dyn Store,
        performer: &CommandPerformer,
        committer: &SettlementCommitter,
    ) -> Result<(), StoreError> {
        if self.items.is_empty() {
            return Ok(());
        }
        let admissions: Vec<Admission> = self.items.iter().map(|i| i.admission.clone()).collect();
        let admitted = store.delivery_admit_all(&admissions, Utc::now()).await?;
        // Lanes with a command for a coalescing target go in rounds, so that
        // their heads can share calls; the others run on their own.
        let (rounds, solo): (Vec<_>, Vec<_>) = self
            .free_lanes(&admitted)
            .into_iter()
            .partition(|lane| lane.iter().any(|&p| performer.coalesces(&self.items[p].command)));
        let solo_runs = join_all(solo.iter().map(|positions| self.run_lane(performer, positions)));
        let (solo, rounds) = join(solo_runs, self.run_rounds(performer, &rounds)).await;
        let mut settlements: Vec<(usize, Settlement)> = solo.into_iter().flatten().chain(rounds).collect();
        // Batch order: a lane's head is written before what it holds.
        settlements.sort_by_key(|(position, _)| *position);
        let settlements: Vec<Settlement> = settlements.into_iter().map(|(_, s)| s).collect();
        committer.settle(settlements).await
    }

    /// Positions of the commands to perform now, grouped by lane in batch
    /// order; commands already known or held by the store are left out.
    fn free_lanes(&self, admitted: &[Admitted]) -> Vec<Vec<usize>> {
        let mut lanes: Vec<Vec<usize>> = Vec::new();
        let mut lane_of: HashMap<&str, usize> = HashMap::new();
        for (position, (item, admitted)) in self.items.iter().zip(admitted).enumerate() {
            match admitted {
                Admitted::Free => {
                    let lane = *lane_of.entry(item.admission.lane.as_str()).or_insert_with(|| {
                        lanes.push(Vec::new());
                        lanes.len() - 1
                    });
                    lanes[lane].push(position);
                }
                Admitted::Known(state) => {
                    tracing::debug!(command = %item.command.id, state = state.as_str(), "Already recorded; not performed again.");
                    metrics::counter!("dealbridge_delivery_duplicates_total").increment(1);
                }
                Admitted::Held => {
                    tracing::debug!(command = %item.command.id, lane = %item.admission.lane, "Held behind its lane's head.");
                }
            }
        }
        lanes
    }

    /// Performs lanes in rounds: each round attempts the next command of
    /// every lane still going, together (see `attempt_round`); a lane whose
    /// command cannot go out has the rest held behind it.
    async fn run_rounds(&self, performer: &CommandPerformer, lanes: &[Vec<usize>]) -> Vec<(usize, Settlement)> {
        let mut out = Vec::new();
        let mut rests: Vec<&[usize]> = lanes.iter().map(Vec::as_slice).collect();
        loop {
            rests.retain(|rest| !rest.is_empty());
            if rests.is_empty() {
                return out;
            }
            let round: Vec<RoundItem<'_>> = rests.iter().map(|rest| self.round_item(rest[0])).collect();
            let steps = performer.attempt_round(&round).await;
            for ((rest, item), step) in rests.iter_mut().zip(&round).zip(steps) {
                let settlement = match step {
                    Step::Settle(settlement) => settlement,
                    Step::Defer(due) => deferred(item.admission.clone(), item.prior, due),
                };
                let blocked = settlement.state.occupies_lane();
                out.push((rest[0], settlement));
                *rest = &rest[1..];
                if blocked {
                    // The lane's later commands wait behind its head.
                    out.extend(rest.iter().map(|&p| (p, held(self.items[p].admission.clone()))));
                    *rest = &[];
                }
            }
        }
    }

    fn round_item(&self, position: usize) -> RoundItem<'_> {
        let item = &self.items[position];
        let prior = Prior { possibly_applied: item.redelivered, ..Prior::default() };
        RoundItem { command: &item.command, admission: item.admission.clone(), prior }
    }

    /// Performs one lane's commands in order until one cannot go out; the
    /// rest are held behind it.
    async fn run_lane(&self, performer: &CommandPerformer, positions: &[usize]) -> Vec<(usize, Settlement)> {
        let mut out = Vec::with_capacity(positions.len());
        let mut blocked = false;
        for &position in positions {
            let item = &self.items[position];
            if blocked {
                out.push((position, held(item.admission.clone())));
                continue;
            }
            let prior = Prior { possibly_applied: item.redelivered, ..Prior::default() };
            let settlement = match performer.attempt(&item.command, item.admission.clone(), prior).await {
                Step::Settle(settlement) => settlement,
                Step::Defer(due) => deferred(item.admission.clone(), prior, due),
            };
            blocked = settlement.state.occupies_lane();
            out.push((position, settlement));
        }
        out
    }
}
