//! What one engine run produces besides the changed world: canonical
//! changes, outbound commands, notifications, the audit trail and the
//! problems worth reporting. All of it is written in the same transaction
//! as the state, so the trail never disagrees with what happened.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A change of canonical state. Flows fire on these and on nothing else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Change {
    /// A deal became known (observed for the first time, or spawned).
    DealCreated { deal: Uuid, pipeline: String, stage: String },
    /// A deal entered a stage; `from` is where it was.
    StageEntered {
        deal: Uuid,
        from: Option<(String, String)>,
        to: (String, String),
        actor: String,
        /// A guard or hold moved the deal back: a restoration, not news,
        /// so it fires no flows.
        #[serde(default)]
        reverted: bool,
    },
    /// A field of a deal took a new value.
    FieldChanged { deal: Uuid, field: String, from: serde_json::Value, to: serde_json::Value },
}

impl Change {
    pub fn deal(&self) -> Uuid {
        match self {
            Change::DealCreated { deal, .. }
            | Change::StageEntered { deal, .. }
            | Change::FieldChanged { deal, .. } => *deal,
        }
    }
}

/// An outbound call the hub owes a connected system. Published through the
/// outbox; `idempotency_key` (cause event, flow, action, occurrence) lets
/// every later stage drop a duplicate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    pub id: Uuid,
    pub idempotency_key: String,
    /// Connector instance that performs it.
    pub connector: String,
    /// Connector kind (`bitrix24`, `onec`, …).
    pub system: String,
    /// The canonical deal it concerns: commands of one deal apply in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deal: Option<Uuid>,
    pub cause_event: Uuid,
    pub flow: String,
    #[serde(flatten)]
    pub op: CommandOp,
}

/// What to do, in the target system's own ids, stage codes and field names
/// (translated through the mapping set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum CommandOp {
    /// Change the stage and/or fields of an existing record.
    UpdateDeal {
        external_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stage: Option<String>,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        fields: BTreeMap<String, serde_json::Value>,
    },
    /// Create a child deal; the connector records the new id as an
    /// external ref of `deal`.
    CreateDeal {
        /// Fields the binding says a new record of this pipeline needs
        /// (e.g. Bitrix24 `CATEGORY_ID`).
        create: BTreeMap<String, String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent_external_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stage: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        responsible: Option<String>,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        fields: BTreeMap<String, serde_json::Value>,
        /// Set when the new record is a document made for the deal (its
        /// binding's record kind, e.g. `customer_order`) rather than the
        /// deal itself: the hub links it as such (see `ExternalRef::document`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        document: Option<String>,
    },
    /// Create a task linked to the deal.
    CreateTask {
        task: Uuid,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        external_id: Option<String>,
        title: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        description: String,
        responsible: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deadline: Option<DateTime<Utc>>,
    },
    /// Tell a user something.
    Notify {
        to: String,
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        external_id: Option<String>,
    },
    /// Write a comment on the record's timeline (its history), where
    /// everyone who opens the record sees it.
    Comment { external_id: String, text: String },
}

impl CommandOp {
    /// The `op` tag, as serialized.
    pub fn name(&self) -> &'static str {
        match self {
            CommandOp::UpdateDeal { .. } => "update_deal",
            CommandOp::CreateDeal { .. } => "create_deal",
            CommandOp::CreateTask { .. } => "create_task",
            CommandOp::Notify { .. } => "notify",
            CommandOp::Comment { .. } => "comment",
        }
    }
}

/// A message for a person, canonical (whatever system it is sent through).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub deal: Uuid,
    /// Canonical person id.
    pub to: String,
    pub text: String,
    pub flow: String,
}

/// One entry of a deal's audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceStep {
    pub deal: Uuid,
    pub at: DateTime<Utc>,
    pub cause_event: Uuid,
    /// Cascade depth: 0 for what the event itself changed.
    pub depth: u32,
    #[serde(flatten)]
    pub kind: TraceKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum TraceKind {
    /// The event changed canonical state; `binding` maps it when it came
    /// from a source record.
    Change {
        /// The binding's name, one copy shared by the steps of an event;
        /// stored as a plain string.
        #[serde(default, skip_serializing_if = "Option::is_none", with = "shared_text")]
        binding: Option<Arc<str>>,
        /// The same change as in `Effects::changes`, shared: the trail
        /// does not pay for a second copy of its texts and values.
        #[serde(with = "shared_change")]
        change: Arc<Change>,
    },
    /// A flow ran an action.
    Action { flow: String, action: String, detail: String },
    /// A command was queued for delivery.
    Command { command: Uuid, connector: String, op: String, idempotency_key: String },
    /// A guard or an approval hold refused a stage.
    Refused { flow: String, stage: String, reason: String },
    /// Something went wrong but the rest of the event still applied.
    Problem { problem: Problem },
}

/// A problem that does not stop the event: reported in the trace, counted
/// in metrics, shown by `dealbridge test` and `replay`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Problem {
    #[error("cascade stopped: flow `{flow}` would run at depth {depth}, deeper than the limit {limit}")]
    CascadeTooDeep { flow: String, depth: u32, limit: u32 },
    #[error("flow `{flow}`: {message}")]
    Action { flow: String, message: String },
    #[error("flow `{flow}`: condition failed: {message}")]
    Condition { flow: String, message: String },
}

/// A shared change (de)serializes as the change itself, whatever serde
/// features the build has: the stored trail's JSON does not depend on
/// how the engine holds it.
mod shared_change {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Change;

    pub fn serialize<S: Serializer>(change: &Arc<Change>, serializer: S) -> Result<S::Ok, S::Error> {
        Change::serialize(change, serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Arc<Change>, D::Error> {
        Change::deserialize(deserializer).map(Arc::new)
    }
}

/// A shared optional text (de)serializes as the text itself.
mod shared_text {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(text: &Option<Arc<str>>, serializer: S) -> Result<S::Ok, S::Error> {
        text.as_deref().serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Arc<str>>, D::Error> {
        Ok(Option::<String>::deserialize(deserializer)?.map(Arc::from))
    }
}

/// Everything one engine run produced, in the order it happened.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Effects {
    /// Shared with the trail's `TraceKind::Change` steps.
    pub changes: Vec<Arc<Change>>,
    pub commands: Vec<Command>,
    pub notifications: Vec<Notification>,
    pub trace: Vec<TraceStep>,
    pub problems: Vec<Problem>,
}

impl Effects {
    /// Nothing changed: the event was already known (an echo of our own
    /// write, a duplicate, a field the mapping does not use).
    pub fn is_noop(&self) -> bool {
        self.changes.is_empty() && self.commands.is_empty() && self.notifications.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The trail's JSON is stored: sharing a change and the binding's name
    /// must not change a byte of it.
    #[test]
    fn a_change_step_keeps_its_stored_json() {
        let deal = Uuid::from_u128(1);
        let at = DateTime::parse_from_rfc3339("2025-03-04T08:00:00Z").unwrap().with_timezone(&Utc);
        let change = Change::FieldChanged {
            deal,
            field: "custom.region".into(),
            from: serde_json::Value::Null,
            to: "MSK".into(),
        };
        let step = |binding: Option<&str>| TraceStep {
            deal,
            at,
            cause_event: Uuid::from_u128(2),
            depth: 0,
            kind: TraceKind::Change { binding: binding.map(Arc::from), change: Arc::new(change.clone()) },
        };
        let with = serde_json::json!({
            "deal": "00000000-0000-0000-0000-000000000001",
            "at": "2025-03-04T08:00:00Z",
            "cause_event": "00000000-0000-0000-0000-000000000002",
            "depth": 0,
            "step": "change",
            "binding": "b24-deals",
            "change": {
                "type": "field_changed",
                "deal": "00000000-0000-0000-0000-000000000001",
                "field": "custom.region",
                "from": null,
                "to": "MSK"
            }
        });
        let mut without = with.clone();
        without.as_object_mut().unwrap().remove("binding");
        for (step, json) in [(step(Some("b24-deals")), with), (step(None), without)] {
            assert_eq!(serde_json::to_value(&step).unwrap(), json);
            assert_eq!(serde_json::from_value::<TraceStep>(json).unwrap(), step);
        }
    }
}
