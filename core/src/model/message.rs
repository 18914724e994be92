//! Messages: letters and chat messages that land on a deal's timeline.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ExternalRef;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageChannel {
    Email,
    Chat,
    Comment,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, utoipa::ToSchema)]
pub struct Message {
    pub id: Uuid,
    pub channel: MessageChannel,
    pub from: String,
    #[serde(default)]
    pub to: Vec<String>,
    #[serde(default)]
    pub subject: String,
    #[serde(default)]
    pub body: String,
    /// `Message-ID` of the letter, for threading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// `In-Reply-To` / `References` ids, oldest first.
    #[serde(default)]
    pub thread: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deal_id: Option<Uuid>,
    #[serde(default)]
    pub external_refs: Vec<ExternalRef>,
    pub received_at: DateTime<Utc>,
}
