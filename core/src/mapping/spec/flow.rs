//! Spec types for flows: `when` something happens, `if` a condition holds,
//! `then` run actions.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::Name;
use crate::mapping::yaml::Located;

/// One flow.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowSpec {
    /// Unique name, recorded with every step the flow causes (`flow:<name>`).
    pub name: Name,
    /// What starts the flow.
    pub when: Located<TriggerSpec>,
    /// Optional condition (minijinja expression) over `deal`, `parent`,
    /// `event`, `responsible`; the flow runs only when it is true.
    #[serde(default, rename = "if")]
    pub condition: Option<Located<String>>,
    /// Actions, run in order.
    pub then: Vec<Located<ActionSpec>>,
}

/// A pipeline, optionally narrowed to one stage (any stage when omitted).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StageRefSpec {
    /// Canonical pipeline.
    pub pipeline: Name,
    /// Canonical stage of that pipeline; omit for any stage.
    #[serde(default)]
    pub stage: Option<Name>,
}

/// Filter on the decision of an approval.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalDecidedSpec {
    /// `true`: only approvals; `false`: only rejections; omit for both.
    #[serde(default)]
    pub approved: Option<bool>,
}

/// What starts a flow.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TriggerSpec {
    /// The deal enters a stage of a pipeline.
    DealEnters(StageRefSpec),
    /// The deal leaves a stage of a pipeline.
    DealLeaves(StageRefSpec),
    /// A child deal in this pipeline enters the stage; the flow runs with
    /// the child as `deal` and its parent as `parent`.
    ChildEnters(StageRefSpec),
    /// A payment was applied to an invoice of the deal (partial or full).
    PaymentApplied,
    /// The last payment of an invoice of the deal arrived.
    InvoiceFullyPaid,
    /// Shipments now cover 100 % of the deal's orders.
    ShipmentsCoverOrder,
    /// A timer scheduled by `schedule_timer` fired (give its name).
    TimerFires(Name),
    /// A message landed on the deal's timeline.
    MessageArrives,
    /// Someone decided an approval created by `require_approval`.
    ApprovalDecided(ApprovalDecidedSpec),
}

/// Who gets a task, a notification or a child deal.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AssigneeSpec {
    /// The responsible of the flow's deal.
    Responsible,
    /// The responsible of the parent deal.
    ParentResponsible,
    /// The supervisor of the flow deal's responsible.
    Supervisor,
    /// A person declared under `people`.
    Person(Name),
    /// A team declared under `teams`; its rule picks the member.
    Team(Name),
}

/// Which deal an action works on.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DealTargetSpec {
    /// The flow's deal (the child, for `child_enters`).
    #[default]
    This,
    /// The parent of the flow's deal.
    Parent,
}

/// Create a child deal linked to this one.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpawnChildSpec {
    /// Pipeline of the child.
    pub pipeline: Name,
    /// Stage the child starts in.
    pub stage: Name,
    /// Fields copied from this deal to the child under the same name, e.g.
    /// `[title, client, custom.description]`.
    #[serde(default)]
    pub copy: Vec<Name>,
    /// Fields copied under another name: this deal's field → child's field.
    #[serde(default)]
    pub copy_as: BTreeMap<Name, Name>,
    /// Responsible of the child. Default: this deal's responsible.
    #[serde(default)]
    pub responsible: Option<Located<AssigneeSpec>>,
    /// Title template of the child, e.g. `"Расчёт: {{ deal.title }}"`.
    #[serde(default)]
    pub title: Option<Located<String>>,
}

/// Create a record for this deal in a connected system it does not live
/// in yet (e.g. the customer order in 1C when a CRM deal is won). The new
/// record's id becomes an external ref of the deal; a deal that already
/// lives in that connector gets nothing.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRecordSpec {
    /// Connector instance that creates it, e.g. `onec`.
    pub connector: Name,
    /// Kind of that connector, e.g. `onec`.
    pub system: Name,
    /// What the connector needs to know to create it, as a binding's
    /// `create_with` (e.g. `odata.entity_set: Document_ЗаказКлиента`).
    #[serde(default)]
    pub create: BTreeMap<String, String>,
    /// The record's fields in the system's own names, each a template,
    /// e.g. `СуммаДокумента: "{{ deal.amount }}"`. A field that renders
    /// empty is not written.
    #[serde(default)]
    pub fields: BTreeMap<String, Located<String>>,
    /// The record kind of the binding the new record comes back through
    /// (e.g. `customer_order`). When that binding reads an order, invoice
    /// or shipment, the record is linked as the deal's document: it finds
    /// the deal, but the deal's stage, fields, tasks and messages are not
    /// written to it. Without `record`, the new record is the deal's own.
    #[serde(default)]
    pub record: Option<Name>,
}

/// Move a deal to a stage.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveSpec {
    /// `this` (default) or `parent`.
    #[serde(default)]
    pub target: DealTargetSpec,
    /// Pipeline to move into; default: the deal's current pipeline.
    #[serde(default)]
    pub pipeline: Option<Name>,
    /// Canonical stage.
    pub stage: Name,
}

/// Set one field of a deal.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetFieldSpec {
    /// `this` (default) or `parent`.
    #[serde(default)]
    pub target: DealTargetSpec,
    /// Canonical field, e.g. `custom.logistics_deal`.
    pub field: Name,
    /// Minijinja *expression* giving the value, e.g. `deal.id`,
    /// `deal.custom.cost`, or a quoted text: `"'urgent'"`.
    pub value: Located<String>,
}

/// Copy fields between the flow's deal and its parent.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CopyFieldsSpec {
    /// `this` or `parent`.
    pub from: DealTargetSpec,
    /// `parent` or `this`; must differ from `from`.
    pub to: DealTargetSpec,
    /// Source field → destination field, e.g. `custom.cost: custom.logistics_cost`.
    pub fields: BTreeMap<Name, Name>,
}

/// Write the child's current stage onto a field of the parent.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MirrorChildStageSpec {
    /// Parent's field that shows the child's stage, e.g. `custom.engineering_stage`.
    pub field: Name,
}

/// Create a task for a person.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTaskSpec {
    /// Title template, e.g. `"Что с оплатой? {{ deal.title }}"`.
    pub title: Located<String>,
    /// Description template.
    #[serde(default)]
    pub description: Option<Located<String>>,
    /// Who gets the task. Default: the deal's responsible.
    #[serde(default)]
    pub assignee: Option<Located<AssigneeSpec>>,
    /// Due after this delay (`3d`, `4h`, `30m`, `2 working days`, `today`).
    #[serde(default)]
    pub due: Option<Located<String>>,
}

/// Send a notification.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifySpec {
    /// Who is notified.
    pub to: Located<AssigneeSpec>,
    /// Text template, e.g. `"Расчёт готов: {{ deal.title }}"`.
    pub text: Located<String>,
}

/// Write a comment on a deal's timeline in every system holding it: the
/// text template alone (`comment: "Расчёт готов: {{ deal.amount }}"`, on
/// the flow's deal), or `{ text, target }`.
#[derive(Debug, JsonSchema)]
#[serde(untagged)]
pub enum CommentSpec {
    /// Text template of the comment, written on the flow's deal.
    Text(String),
    /// The text template and the deal it is written on.
    On(CommentOnSpec),
}

/// A comment with the deal it goes on.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommentOnSpec {
    /// `this` (default) or `parent`.
    #[serde(default)]
    pub target: DealTargetSpec,
    /// Text template, e.g. `"Оценка логистики: {{ deal.custom.logistics_cost }}"`.
    pub text: Located<String>,
}

/// A comment is a text or a mapping. Read by hand rather than with
/// `#[serde(untagged)]`, which buffers the value and so loses the
/// positions diagnostics point at.
impl<'de> Deserialize<'de> for CommentSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = CommentSpec;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a text template, or a mapping with `text` and optionally `target`")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<CommentSpec, E> {
                Ok(CommentSpec::Text(text.to_owned()))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<CommentSpec, A::Error> {
                CommentOnSpec::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(CommentSpec::On)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Schedule a named timer on the deal (replacing one of the same name).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleTimerSpec {
    /// Timer name; a flow with `when: {timer_fires: <name>}` handles it.
    pub timer: Name,
    /// Delay: `3d`, `4h`, `30m`, `4 working hours`, `2 working days`.
    pub after: Located<String>,
}

/// Ask for an approval and hold the deal until it is granted.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequireApprovalSpec {
    /// Who decides.
    pub approver: Located<AssigneeSpec>,
    /// Title template of the approval task.
    pub title: Located<String>,
    /// Stage of the deal's pipeline it may not enter until approved.
    #[serde(default)]
    pub hold_stage: Option<Name>,
}

/// Refuse entry into the stage just entered unless a condition holds.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GuardSpec {
    /// Minijinja expression that must be true to stay in the stage.
    pub condition: Located<String>,
    /// Template of the message telling the responsible why the move was refused.
    pub message: Located<String>,
    /// Actions to run when the guard refuses, after the deal went back
    /// (e.g. a task for the supervisor). Not `guard` itself.
    #[serde(default)]
    pub otherwise: Vec<Located<ActionSpec>>,
}

/// What a flow does.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActionSpec {
    /// Create a child deal linked to this one.
    SpawnChild(SpawnChildSpec),
    /// Move this deal or its parent to a stage.
    Move(MoveSpec),
    /// Set a field of this deal or its parent.
    SetField(SetFieldSpec),
    /// Copy fields between this deal and its parent.
    CopyFields(CopyFieldsSpec),
    /// Show the child's stage on a field of its parent (for `child_enters` flows).
    MirrorChildStage(MirrorChildStageSpec),
    /// Create a task.
    CreateTask(CreateTaskSpec),
    /// Send a notification.
    Notify(NotifySpec),
    /// Write a comment on the deal's timeline in every system holding it.
    Comment(Located<CommentSpec>),
    /// Schedule a named timer.
    ScheduleTimer(ScheduleTimerSpec),
    /// Cancel a named timer of the deal (give its name).
    CancelTimer(Name),
    /// Ask for an approval and hold the deal.
    RequireApproval(RequireApprovalSpec),
    /// Refuse entry into the stage unless a condition holds (for `deal_enters` flows).
    Guard(GuardSpec),
    /// Create a record for this deal in another connected system.
    CreateRecord(CreateRecordSpec),
}
