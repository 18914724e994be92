//! Tasks the hub creates for people: follow-ups, approvals, escalations.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ExternalRef;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Something to do («Оформить реализацию товаров»).
    Todo,
    /// A decision that holds the deal until it is taken.
    Approval,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Open,
    Done,
    Approved,
    Rejected,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, utoipa::ToSchema)]
pub struct Task {
    pub id: Uuid,
    pub kind: TaskKind,
    pub title: String,
    #[serde(default)]
    pub description: String,
    /// Canonical person id.
    pub assignee: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deal_id: Option<Uuid>,
    pub status: TaskStatus,
    /// For an approval: the stage the deal may not enter until it is
    /// granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_stage: Option<String>,
    /// The flow that created it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<String>,
    #[serde(default)]
    pub external_refs: Vec<ExternalRef>,
    pub created_at: DateTime<Utc>,
}
