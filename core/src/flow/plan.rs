//! Compiled flows: what the engine executes.
//!
//! The mapping loader parses YAML into its own spec types, validates them
//! (stages exist, expressions compile, people and teams are declared) and
//! compiles them into these. Nothing here knows YAML, and nothing here
//! names a stage, a pipeline or a field of a particular company: those are
//! all data.

use std::collections::BTreeMap;

use serde::Serialize;

/// Where a piece of a mapping file came from, for error messages and the
/// trace (`file:line:column`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct SourceSpan {
    pub file: String,
    pub line: u32,
    pub column: u32,
}

impl std::fmt::Display for SourceSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// A minijinja expression (conditions) or template (texts), kept as
/// source: it was compiled once by the loader to prove it is valid, and the
/// engine compiles it into its own environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Expr {
    pub source: String,
    pub span: SourceSpan,
}

/// A dotted canonical field path: `title`, `amount`, `client.inn`,
/// `responsible`, `custom.cost`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct FieldPath(pub String);

/// One flow: when `trigger` happens and `condition` holds, run `actions`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Flow {
    pub name: String,
    pub trigger: Trigger,
    pub condition: Option<Expr>,
    pub actions: Vec<Action>,
    pub span: SourceSpan,
}

/// What starts a flow. `stage: None` means any stage of the pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Trigger {
    DealEnters {
        pipeline: String,
        stage: Option<String>,
    },
    DealLeaves {
        pipeline: String,
        stage: Option<String>,
    },
    /// A child deal in `pipeline` enters `stage`; the flow runs with the
    /// child as `deal` and its parent as `parent`.
    ChildEnters {
        pipeline: String,
        stage: Option<String>,
    },
    PaymentApplied,
    InvoiceFullyPaid,
    ShipmentsCoverOrder,
    TimerFires {
        timer: String,
    },
    MessageArrives,
    ApprovalDecided {
        approved: Option<bool>,
    },
}

/// Which deal an action works on, relative to the flow's deal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DealTarget {
    This,
    Parent,
}

/// Who gets a task, a notification or a child deal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", content = "id", rename_all = "snake_case")]
pub enum Assignee {
    /// A declared person by canonical id.
    Person(String),
    /// A declared team; the team's assignment rule picks the member.
    Team(String),
    /// The responsible of the flow's deal.
    Responsible,
    /// The responsible of the parent deal.
    ParentResponsible,
    /// The supervisor of the flow deal's responsible.
    Supervisor,
}

/// A duration such as `3d`, `4h` or `4 working hours`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Delay {
    pub amount: u32,
    pub unit: DelayUnit,
    /// Counted in the working calendar (working days and hours, holidays).
    pub working: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DelayUnit {
    Minutes,
    Hours,
    Days,
}

/// What a flow does.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    SpawnChild {
        pipeline: String,
        stage: String,
        /// Fields copied from the parent: (parent field, child field).
        copy: Vec<(FieldPath, FieldPath)>,
        responsible: Assignee,
        title: Option<Expr>,
    },
    Move {
        target: DealTarget,
        pipeline: Option<String>,
        stage: String,
    },
    SetField {
        target: DealTarget,
        field: FieldPath,
        value: Expr,
    },
    /// Copy fields between the flow's deal and its parent (either way):
    /// (source field, destination field).
    CopyFields {
        from: DealTarget,
        to: DealTarget,
        fields: Vec<(FieldPath, FieldPath)>,
    },
    /// Write the child's current stage onto a field of the parent.
    MirrorChildStage {
        field: FieldPath,
    },
    CreateTask {
        title: Expr,
        description: Option<Expr>,
        assignee: Assignee,
        due: Option<Delay>,
    },
    Notify {
        to: Assignee,
        text: Expr,
    },
    /// Write a comment on the timeline of a deal in every system holding it.
    Comment {
        target: DealTarget,
        text: Expr,
    },
    ScheduleTimer {
        timer: String,
        after: Delay,
    },
    CancelTimer {
        timer: String,
    },
    /// Create an approval task and hold the deal: it may not enter
    /// `hold_stage` until the approval is granted.
    RequireApproval {
        approver: Assignee,
        title: Expr,
        hold_stage: Option<String>,
    },
    /// Refuse entry into the stage just entered unless `condition` holds:
    /// move the deal back to where it came from and tell the responsible
    /// `message`.
    Guard {
        condition: Expr,
        message: Expr,
        /// Run after a refusal (the deal is already back), e.g. a task for
        /// the supervisor.
        otherwise: Vec<Action>,
    },
    /// Create a record for the deal in a connected system it does not
    /// live in yet: `create` as a binding's `create_with`, the fields in
    /// the system's names with their templates.
    CreateRecord {
        connector: String,
        system: String,
        create: BTreeMap<String, String>,
        fields: Vec<(String, Expr)>,
        /// The record kind when the new record is a document for the deal
        /// (its binding targets an order, invoice or shipment).
        document: Option<String>,
    },
}

/// A declared person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Person {
    pub id: String,
    pub name: String,
    /// Their user id in each connected system, by connector instance.
    pub system_ids: std::collections::BTreeMap<String, String>,
    pub supervisor: Option<String>,
    pub flags: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AssignmentRule {
    RoundRobin,
    LeastLoaded,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Team {
    pub id: String,
    pub members: Vec<String>,
    pub rule: AssignmentRule,
}

/// Working time, so `4 working hours` means what the company means.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkingCalendar {
    /// IANA zone name, e.g. `Europe/Moscow`.
    pub timezone: String,
    /// ISO weekday numbers, Monday = 1.
    pub working_days: Vec<u8>,
    /// Working hours of a day, minutes after midnight: [start, end).
    pub day_start_minute: u16,
    pub day_end_minute: u16,
    pub holidays: Vec<chrono::NaiveDate>,
    /// Weekend days that are worked (transferred working days).
    pub extra_working_days: Vec<chrono::NaiveDate>,
}

/// Everything the engine needs from a loaded mapping set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlowPlan {
    /// Content hash of the mapping files this plan was built from; recorded
    /// with every processed event.
    pub version: String,
    /// Canonical pipelines and their stages, in order.
    pub pipelines: std::collections::BTreeMap<String, Vec<String>>,
    pub flows: Vec<Flow>,
    pub people: Vec<Person>,
    pub teams: Vec<Team>,
    pub calendar: Option<WorkingCalendar>,
    /// Longest chain of flows one event may cause before it is stopped and
    /// reported.
    pub max_cascade_depth: u32,
}
