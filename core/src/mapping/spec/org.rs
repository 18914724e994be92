//! Spec types for the organisation and vocabulary sections: stage maps,
//! people, teams, the working calendar and settings.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::Name;

/// System stage ids ↔ canonical stages of one pipeline.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StageMapSpec {
    /// The canonical pipeline these stages belong to.
    pub pipeline: Name,
    /// System stage id → canonical stage, e.g. `"C1:NEW": new`. Several
    /// system stages may map to one canonical stage.
    pub stages: BTreeMap<Name, Name>,
    /// Canonical stage → the system stage to write when the hub moves a
    /// deal there. Needed only where several system stages map to one
    /// canonical stage (otherwise the single one is used).
    #[serde(default)]
    pub outbound: BTreeMap<Name, Name>,
}

/// A person the hub assigns work to.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PersonSpec {
    /// Display name, used in tasks and notifications.
    pub name: String,
    /// Their user id in each connected system, by connector instance
    /// (e.g. `bitrix24: "17"`, `onec: "9f0c…"`).
    #[serde(default)]
    pub ids: BTreeMap<Name, String>,
    /// Canonical id of their supervisor (for approvals and escalations).
    #[serde(default)]
    pub supervisor: Option<Name>,
    /// Free-form flags that conditions can test, e.g. `new_manager`.
    #[serde(default)]
    pub flags: Vec<String>,
}

/// How a team picks the member who gets the work.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AssignmentRuleSpec {
    /// Members take turns.
    RoundRobin,
    /// The member with the fewest open deals and tasks.
    LeastLoaded,
}

/// A group of people that work is assigned to.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamSpec {
    /// Canonical ids of the members (declared under `people`).
    pub members: Vec<Name>,
    /// How a member is picked: `round_robin` (default) or `least_loaded`.
    #[serde(default = "round_robin")]
    pub assign: AssignmentRuleSpec,
}

fn round_robin() -> AssignmentRuleSpec {
    AssignmentRuleSpec::RoundRobin
}

/// Working time, so `4 working hours` means what the company means.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CalendarSpec {
    /// IANA time zone, e.g. `Europe/Moscow`.
    pub timezone: Name,
    /// Working weekdays: `mon`, `tue`, `wed`, `thu`, `fri`, `sat`, `sun`.
    /// Default: Monday to Friday.
    #[serde(default)]
    pub working_days: Option<Vec<Name>>,
    /// Working hours of a day as `HH:MM-HH:MM`, e.g. `"09:00-18:00"`.
    pub hours: Name,
    /// Public holidays (`YYYY-MM-DD`): not worked even on a working weekday.
    #[serde(default)]
    pub holidays: Vec<Name>,
    /// Weekend days that are worked (transferred working days), `YYYY-MM-DD`.
    #[serde(default)]
    pub working_weekends: Vec<Name>,
}

/// Engine settings.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsSpec {
    /// Longest chain of flows one event may cause before it is stopped and
    /// reported (a guard against flows that trigger each other forever).
    /// Default 8.
    #[serde(default)]
    pub max_cascade_depth: Option<u32>,
}
