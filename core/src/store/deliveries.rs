//! What the store keeps for outbound delivery: one row per command the
//! dispatcher has seen (its state in its lane) and one per attempt.
//!
//! A *lane* is a command's bus key — its deal, or the command itself when it
//! concerns no deal. Commands of a lane are performed in order. When one
//! cannot be performed now, it becomes the lane's *head* (`Waiting` for its
//! next attempt, or `Parked` until an admin acts) and the lane's later
//! commands are recorded `Held` behind it, so other lanes keep flowing on
//! the same partition. Every call below is one transaction; calls that move
//! a lane serialise on that lane (SQLite: the single writer; PostgreSQL: a
//! transaction-level advisory lock), so a command is never held behind a
//! head that has just finished.

use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::StoreError;
use crate::flow::effects::Command;
use crate::model::ExternalRef;

/// Where a command stands in delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Performed (or found already applied). Final.
    Done,
    /// Head of its lane; the next attempt is due at `due_at`.
    Waiting,
    /// Behind its lane's head, in order.
    Held,
    /// Head of its lane after its retries ran out; waits for an admin.
    Parked,
    /// Failed for good (permanent error); its lane went on without it.
    Dead,
    /// An admin gave it up. Final.
    Discarded,
}

impl DeliveryState {
    pub const ALL: [DeliveryState; 6] = [
        DeliveryState::Done,
        DeliveryState::Waiting,
        DeliveryState::Held,
        DeliveryState::Parked,
        DeliveryState::Dead,
        DeliveryState::Discarded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Done => "done",
            DeliveryState::Waiting => "waiting",
            DeliveryState::Held => "held",
            DeliveryState::Parked => "parked",
            DeliveryState::Dead => "dead",
            DeliveryState::Discarded => "discarded",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Nothing more will happen to it unless an admin re-enters it.
    pub fn is_final(self) -> bool {
        matches!(self, DeliveryState::Done | DeliveryState::Dead | DeliveryState::Discarded)
    }

    /// It blocks its lane (or waits in it).
    pub fn occupies_lane(self) -> bool {
        matches!(self, DeliveryState::Waiting | DeliveryState::Parked | DeliveryState::Held)
    }
}

/// A command as the dispatcher first sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Admission {
    pub command_id: Uuid,
    pub lane: String,
    pub deal_id: Option<Uuid>,
    pub connector: String,
}

/// What `delivery_admit` decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// The lane is free: perform it now, then `delivery_settle`.
    Free,
    /// Its lane has a head; it was recorded `Held` behind it.
    Held,
    /// It was seen before (a redelivery); nothing was written.
    Known(DeliveryState),
}

/// One delivery row with its command.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRecord {
    pub command: Command,
    pub lane: String,
    pub state: DeliveryState,
    /// Attempts so far, all rounds.
    pub attempts: u32,
    /// Attempts since it last entered the lane or an admin retried it:
    /// what the retry schedule counts.
    pub round_attempts: u32,
    pub due_at: Option<DateTime<Utc>>,
    pub last_class: Option<String>,
    pub last_error: Option<String>,
    /// `applied` or `already_applied` once done.
    pub outcome: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One try at performing a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AttemptRecord {
    pub command_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deal_id: Option<Uuid>,
    /// 1 for the first attempt of the command.
    pub attempt: u32,
    pub at: DateTime<Utc>,
    /// `applied`, `already_applied`, `failed` or `deferred` (not tried:
    /// the target was paused or out of budget).
    pub outcome: String,
    /// The failure class: `retryable`, `rate_limited`, `auth`, `permanent`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub latency_us: u64,
}

/// The new state of a command after an attempt (or an admin action), with
/// the attempt to record.
#[derive(Debug, Clone, PartialEq)]
pub struct Settlement {
    pub admission: Admission,
    pub state: DeliveryState,
    pub attempts: u32,
    pub round_attempts: u32,
    pub due_at: Option<DateTime<Utc>>,
    pub last_class: Option<String>,
    pub last_error: Option<String>,
    pub outcome: Option<String>,
    /// The record the command created in the target (a child deal's new
    /// id): settling it `Done` links it to the command's deal as an
    /// external ref, in the same transaction.
    pub created: Option<ExternalRef>,
    pub attempt: Option<AttemptRecord>,
    pub at: DateTime<Utc>,
}

/// Who takes the lane's next command when a head settles final.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub owner: String,
    pub until: DateTime<Utc>,
}

/// Why an admin action was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminRefusal {
    NotFound,
    /// The action does not apply in this state (e.g. retrying a done command).
    WrongState(DeliveryState),
}

#[async_trait]
pub trait DeliveryLog: Send + Sync {
    /// Decides, atomically with the lane's other writers, whether a command
    /// that just arrived can be performed now; see [`Admitted`].
    async fn delivery_admit(&self, admission: &Admission, now: DateTime<Utc>) -> Result<Admitted, StoreError>;

    /// Writes the command's new state and its attempt. When a lane head
    /// becomes final, the lane's first held command becomes the head,
    /// `Waiting` and due now; with `next_lease` it is leased to the caller
    /// and returned so the caller goes on with the lane at once.
    async fn delivery_settle(
        &self,
        settlement: &Settlement,
        next_lease: Option<&Lease>,
    ) -> Result<Option<DeliveryRecord>, StoreError>;

    /// `delivery_admit` for a batch of one partition's commands, answered
    /// as if each were admitted in turn (a lane's later command in the
    /// batch is `Free` when its earlier one is: the caller performs them in
    /// order). The ids must be distinct.
    async fn delivery_admit_all(
        &self,
        admissions: &[Admission],
        now: DateTime<Utc>,
    ) -> Result<Vec<Admitted>, StoreError>;

    /// `delivery_settle` for several commands in one transaction, in slice
    /// order (a lane's head before the commands held behind it), without a
    /// next lease.
    async fn delivery_settle_all(&self, settlements: &[Settlement]) -> Result<(), StoreError>;

    /// Leases up to `limit` lane heads whose attempt is due (and whose
    /// lease, if any, ran out) to `lease.owner`.
    async fn delivery_claim_due(
        &self,
        lease: &Lease,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, StoreError>;

    /// Moves a leased head's next attempt to `due_at` without counting an
    /// attempt (its target is paused or out of budget) and drops the lease.
    async fn delivery_defer(
        &self,
        command_id: Uuid,
        due_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    async fn delivery(&self, command_id: Uuid) -> Result<Option<DeliveryRecord>, StoreError>;

    /// Rows in `state`, oldest first, at most `limit`.
    async fn deliveries_in_state(&self, state: DeliveryState, limit: u32) -> Result<Vec<DeliveryRecord>, StoreError>;

    /// A deal's delivery rows in the order they were seen.
    async fn deliveries_of_deal(&self, deal: Uuid) -> Result<Vec<DeliveryRecord>, StoreError>;

    /// A deal's attempts, oldest first.
    async fn attempts_of_deal(&self, deal: Uuid) -> Result<Vec<AttemptRecord>, StoreError>;

    /// Commands committed but not yet on the bus (the outbox backlog).
    async fn unpublished_commands(&self) -> Result<u64, StoreError>;

    /// Messages in the embedded bus's partitions (not dead letters).
    async fn bus_depth(&self) -> Result<u64, StoreError>;

    /// How many rows are in each state (every state present, 0 included).
    async fn delivery_counts(&self) -> Result<BTreeMap<DeliveryState, u64>, StoreError>;

    /// Admin: try a parked command again now (its round starts over), or
    /// put a dead or discarded one back into its lane — at the head if the
    /// lane is free, else behind the lane's last command.
    async fn delivery_retry(
        &self,
        command_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Result<DeliveryRecord, AdminRefusal>, StoreError>;

    /// Admin: give a command up. A head's lane goes on with its next command.
    async fn delivery_discard(
        &self,
        command_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Result<DeliveryRecord, AdminRefusal>, StoreError>;
}

/// `delivery_admit_all`'s answers once a backend has read which commands of
/// the batch it knows and which of their lanes have a head: a known command
/// is `Known`; one on a lane with a head is decided by `delivery_admit`
/// (under the lane's lock: the head may have just finished); any other is
/// `Free`, which holds without a lock because only this partition's
/// consumer adds rows to a free lane.
pub(super) async fn decide_admissions<L: DeliveryLog + ?Sized>(
    log: &L,
    admissions: &[Admission],
    known: &HashMap<Uuid, DeliveryState>,
    busy: &HashSet<String>,
    now: DateTime<Utc>,
) -> Result<Vec<Admitted>, StoreError> {
    let mut out = Vec::with_capacity(admissions.len());
    for a in admissions {
        out.push(match known.get(&a.command_id) {
            Some(state) => Admitted::Known(*state),
            None if busy.contains(&a.lane) => log.delivery_admit(a, now).await?,
            None => Admitted::Free,
        });
    }
    Ok(out)
}
