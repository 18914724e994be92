//! The canonical deal: a sales deal, a 1C:CRM Interest, an amoCRM lead, or a
//! child deal spawned for another department.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Client, CustomFields, ExternalRef, Money};

/// One deal. Pipelines and stages are canonical names chosen in the mapping
/// files (`sales`/`calculation`, `logistics`/`approval`, …); core attaches no
/// meaning to them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, utoipa::ToSchema)]
pub struct Deal {
    pub id: Uuid,
    pub pipeline: String,
    pub stage: String,
    #[serde(default)]
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<Money>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<Client>,
    /// Canonical person id of the responsible user (people are declared in
    /// the mapping files with their id in each system).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub responsible: Option<String>,
    /// The deal this one was spawned from, for child deals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<Uuid>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub custom_fields: CustomFields,
    #[serde(default)]
    pub external_refs: Vec<ExternalRef>,
    /// Every stage the deal entered, oldest first; the last entry is the
    /// current stage.
    #[serde(default)]
    pub stage_history: Vec<StageEntry>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A stage the deal entered: when, and who moved it there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, utoipa::ToSchema)]
pub struct StageEntry {
    pub pipeline: String,
    pub stage: String,
    pub entered_at: DateTime<Utc>,
    /// Who moved it: a canonical person id, `flow:<name>` for a flow, or
    /// `system:<connector>` when the source did not say.
    pub actor: String,
}

impl Deal {
    /// A new deal in `pipeline`/`stage`, with the first stage-history entry.
    pub fn new(pipeline: &str, stage: &str, at: DateTime<Utc>, actor: &str) -> Self {
        Self {
            id: super::new_id(),
            pipeline: pipeline.to_owned(),
            stage: stage.to_owned(),
            title: String::new(),
            amount: None,
            client: None,
            responsible: None,
            parent_id: None,
            custom_fields: CustomFields::new(),
            external_refs: Vec::new(),
            stage_history: vec![StageEntry {
                pipeline: pipeline.to_owned(),
                stage: stage.to_owned(),
                entered_at: at,
                actor: actor.to_owned(),
            }],
            created_at: at,
            updated_at: at,
        }
    }

    /// Moves the deal; returns false (and records nothing) when it already
    /// is in that stage of that pipeline, because a move that changes
    /// nothing must fire nothing.
    pub fn move_to(&mut self, pipeline: &str, stage: &str, at: DateTime<Utc>, actor: &str) -> bool {
        if self.pipeline == pipeline && self.stage == stage {
            return false;
        }
        // Most moves stay in the pipeline: its name is not copied again,
        // and the stage's text reuses the old one's buffer.
        if self.pipeline != pipeline {
            self.pipeline = pipeline.to_owned();
        }
        self.stage.clear();
        self.stage.push_str(stage);
        self.stage_history.push(StageEntry {
            pipeline: pipeline.to_owned(),
            stage: stage.to_owned(),
            entered_at: at,
            actor: actor.to_owned(),
        });
        self.updated_at = at;
        true
    }

    /// The external ref this deal has in `system`/`instance`, if any.
    pub fn external_ref(&self, system: &str, instance: &str) -> Option<&ExternalRef> {
        self.external_refs.iter().find(|r| r.system == system && r.instance == instance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_move_to_the_current_stage_changes_nothing() {
        let t0 = Utc::now();
        let mut deal = Deal::new("sales", "new", t0, "system:test");
        assert!(!deal.move_to("sales", "new", t0, "u1"));
        assert_eq!(deal.stage_history.len(), 1);
        assert!(deal.move_to("sales", "calculation", t0, "u1"));
        assert_eq!(deal.stage_history.last().unwrap().stage, "calculation");
        assert_eq!(deal.stage_history.last().unwrap().actor, "u1");
    }

    #[test]
    fn deals_round_trip_through_json() {
        let mut deal = Deal::new("sales", "new", Utc::now(), "system:test");
        deal.amount = Some("100500.01 RUB".parse().unwrap());
        deal.external_refs.push(ExternalRef::new("bitrix24", "main", "42"));
        let json = serde_json::to_string(&deal).unwrap();
        assert_eq!(serde_json::from_str::<Deal>(&json).unwrap(), deal);
    }
}
