//! The mapping-file format as admins write it: serde + schemars types.
//!
//! Every field carries a `///` comment because schemars turns it into the
//! hover text the editor shows. Unknown keys are errors everywhere
//! (`deny_unknown_fields`), so a typo never silently does nothing. Enums are
//! externally tagged (`- move: {stage: won}`) because that keeps YAML
//! positions, which internally tagged and untagged enums lose.

mod binding;
mod flow;
mod org;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

pub use binding::{BindingSpec, Conversion, CurrencySpec, FieldSpec, ParentSpec, StageSourceSpec, TargetKind};
pub use flow::{ActionSpec, AssigneeSpec, DealTargetSpec, FlowSpec, StageRefSpec, TriggerSpec};
pub use flow::{
    ApprovalDecidedSpec, CommentOnSpec, CommentSpec, CopyFieldsSpec, CreateRecordSpec, CreateTaskSpec, GuardSpec,
    MirrorChildStageSpec, MoveSpec, NotifySpec, RequireApprovalSpec, ScheduleTimerSpec, SetFieldSpec, SpawnChildSpec,
};
pub use org::{AssignmentRuleSpec, CalendarSpec, PersonSpec, SettingsSpec, StageMapSpec, TeamSpec};

use super::yaml::Located;

/// A located name (pipeline, stage, person, …).
pub type Name = Located<String>;

/// One mapping file. Every section is optional; a mapping set is all
/// `*.yaml` files of a directory, with their sections merged (a name
/// defined in two files is an error).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "dealbridge mapping file")]
pub struct MappingFile {
    /// Canonical pipelines and their stages, in order: the vocabulary every
    /// stage reference is checked against. Example: `sales: [new, payment, won, lost]`.
    #[serde(default)]
    pub pipelines: BTreeMap<Name, Vec<Name>>,
    /// Custom canonical fields flows may use besides those bindings produce:
    /// name → what it holds. Referenced as `custom.<name>`.
    #[serde(default)]
    pub custom_fields: BTreeMap<Name, Option<String>>,
    /// Named lookup tables for the `lookup` conversion: table name → (source
    /// value → canonical value).
    #[serde(default)]
    pub lookups: BTreeMap<Name, BTreeMap<String, String>>,
    /// Which records of which connector instance map to canonical records,
    /// and how their fields map.
    #[serde(default)]
    pub bindings: Vec<BindingSpec>,
    /// Stage maps: system stage id ↔ canonical stage, per pipeline.
    #[serde(default)]
    pub stage_maps: BTreeMap<Name, StageMapSpec>,
    /// Flows: when something happens (and a condition holds), do these actions.
    #[serde(default)]
    pub flows: Vec<FlowSpec>,
    /// People by canonical id: name, user id in each system, supervisor, flags.
    #[serde(default)]
    pub people: BTreeMap<Name, PersonSpec>,
    /// Teams by id: members and how a member is picked.
    #[serde(default)]
    pub teams: BTreeMap<Name, TeamSpec>,
    /// The working calendar for `working hours` / `working days` delays.
    /// At most one file of a set may declare it.
    #[serde(default)]
    pub calendar: Option<Located<CalendarSpec>>,
    /// Engine settings. At most one file of a set may declare them.
    #[serde(default)]
    pub settings: Option<Located<SettingsSpec>>,
}
