//! Durable timers: "in 3 days, if the deal is still waiting, remind the
//! manager". A timer is a row, not a sleeping task, so it survives restarts;
//! the scheduler fires the due ones as canonical `TimerFired` events.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TimerStatus {
    Pending,
    Fired,
    Cancelled,
}

/// One named timer of one deal. A deal has at most one pending timer of a
/// name: scheduling it again moves the due time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, utoipa::ToSchema)]
pub struct Timer {
    pub id: Uuid,
    pub deal_id: Uuid,
    /// The timer's name in the mapping files, e.g. `payment-check`.
    pub name: String,
    pub due_at: DateTime<Utc>,
    pub status: TimerStatus,
    /// The flow that scheduled it.
    pub flow: String,
    pub created_at: DateTime<Utc>,
}
