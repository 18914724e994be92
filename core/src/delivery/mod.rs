//! Outbound delivery: from the bus to the connected systems.
//!
//! - `target`: the outbound half of a connector (`OutboundConnector`) and
//!   how it reports a failure (`FailureClass`);
//! - `policy`: the retry schedule (`backon`) and what each failure class
//!   leads to — retry, pause the target, park the deal, dead-letter;
//! - `gate`: per-target token buckets and pauses (`governor`);
//! - `performer`: one attempt, from gate to recorded outcome;
//! - `dispatcher`: a worker per bus partition (first attempts);
//! - `batch`: one batch off a partition, its deals side by side;
//! - `carpool`: commands of all workers sharing a coalescing target's calls;
//! - `group_settle`: the batches of all partitions written together;
//! - `resumer`: retries, and the commands held behind them, in order;
//! - `sharing`: which partitions each hub replica consumes;
//! - `gauges`: delivery figures for `/metrics`.
//!
//! What the store keeps about deliveries is in `store::deliveries`.

mod batch;
mod carpool;
mod dispatcher;
mod gate;
mod gauges;
mod group_settle;
mod performer;
mod policy;
mod resumer;
mod sharing;
mod target;
#[cfg(test)]
mod tests;

pub use dispatcher::Dispatcher;
pub use gate::{Admittance, RateQuota, TargetGates};
pub use gauges::DeliveryGauges;
pub use performer::{CommandPerformer, OutboundTarget, OutboundTargets, Prior, RoundItem, Step};
pub use policy::{DeliveryPolicy, PermanentAction, RetrySchedule, Verdict};
pub use resumer::LaneResumer;
pub use sharing::{ReplicaRoster, Share};
pub use target::{AttemptContext, DeliveryFailure, FailureClass, OutboundConnector, Performed};
