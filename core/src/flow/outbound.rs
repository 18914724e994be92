//! Turns what a flow did to a canonical deal into commands for the systems
//! that deal lives in, in each system's own stage codes, field names and
//! user ids. The translation tables come from the mapping files (through
//! `OutboundMap`, which `MappingSet` implements); core knows no system.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::effects::{Command, CommandOp};
use crate::model::{Deal, ExternalRef, Task};

/// The mapping set's outbound half: how canonical names read in a system.
pub trait OutboundMap: Send + Sync {
    /// The stage code to write for `stage` of `pipeline` in an instance.
    fn system_stage(&self, instance: &str, pipeline: &str, stage: &str) -> Option<String>;
    /// The system field a canonical field of `pipeline` is written to.
    fn system_field(&self, instance: &str, pipeline: &str, field: &str) -> Option<String>;
    /// How a new record of `pipeline` is created in an instance: the
    /// connector kind and the fields it needs (e.g. `CATEGORY_ID`).
    fn create_with(&self, instance: &str, pipeline: &str) -> Option<(String, BTreeMap<String, String>)>;
    /// A person's user id in an instance.
    fn system_user(&self, instance: &str, person: &str) -> Option<String>;
}

/// A map that knows no system: flows still run, nothing goes out. Used by
/// tests of the engine alone and by dry runs.
pub struct NoSystems;

impl OutboundMap for NoSystems {
    fn system_stage(&self, _: &str, _: &str, _: &str) -> Option<String> {
        None
    }
    fn system_field(&self, _: &str, _: &str, _: &str) -> Option<String> {
        None
    }
    fn create_with(&self, _: &str, _: &str) -> Option<(String, BTreeMap<String, String>)> {
        None
    }
    fn system_user(&self, _: &str, _: &str) -> Option<String> {
        None
    }
}

/// What a flow changed on one deal, before translation.
#[derive(Debug, Clone, Default)]
pub struct DealWrite {
    pub stage: bool,
    /// Canonical field paths with their new values.
    pub fields: Vec<(String, serde_json::Value)>,
}

/// Who a command is for, and why: the parts of its idempotency key.
pub struct CommandOrigin<'a> {
    /// The raw event (or timer) the command traces back to.
    pub cause: Uuid,
    /// The canonical event's id seed (`Cause::seed`): unique per canonical
    /// event even when one raw event carries several.
    pub seed: Uuid,
    pub flow: &'a str,
    /// `<action index>.<occurrence>`: unique within the cause event.
    pub action: std::borrow::Cow<'a, str>,
}

/// `<action index>.<occurrence>`, as `format!("{index}.{occurrence}")`
/// writes it.
pub(crate) fn action_origin(index: usize, occurrence: u32) -> String {
    let mut origin = String::with_capacity(8);
    push_decimal(&mut origin, index as u64);
    origin.push('.');
    push_decimal(&mut origin, u64::from(occurrence));
    origin
}

/// Appends `n` in decimal, as `Display` writes it, without `fmt`.
fn push_decimal(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend(digits[start..].iter().map(|&d| char::from(d)));
}

impl CommandOrigin<'_> {
    /// `<seed>/<flow>/<action>/<connector>`, the seed hyphenated in lower
    /// case as `Uuid`'s `Display` writes it: every command has one, and
    /// `format!` spends most of its time on the uuid.
    fn idempotency_key(&self, connector: &str) -> String {
        let mut buffer = Uuid::encode_buffer();
        let seed = self.seed.hyphenated().encode_lower(&mut buffer);
        let mut key = String::with_capacity(seed.len() + self.flow.len() + self.action.len() + connector.len() + 3);
        for (i, part) in [seed, self.flow, &self.action, connector].into_iter().enumerate() {
            if i > 0 {
                key.push('/');
            }
            key.push_str(part);
        }
        key
    }

    fn command(&self, id: Uuid, connector: &str, system: &str, deal: Option<Uuid>, op: CommandOp) -> Command {
        Command {
            id,
            idempotency_key: self.idempotency_key(connector),
            connector: connector.to_owned(),
            system: system.to_owned(),
            deal,
            cause_event: self.cause,
            flow: self.flow.to_owned(),
            op,
        }
    }
}

/// Commands that carry a flow's write of an existing deal to every system
/// holding it. A system that maps neither the stage nor any written field
/// gets nothing.
pub fn update_deal(
    map: &dyn OutboundMap,
    origin: &CommandOrigin<'_>,
    deal: &Deal,
    write: &DealWrite,
    mut next_id: impl FnMut() -> Uuid,
) -> Vec<Command> {
    let mut commands = Vec::new();
    for external in deal_records(deal) {
        let instance = external.instance.as_str();
        let stage = if write.stage { map.system_stage(instance, &deal.pipeline, &deal.stage) } else { None };
        let fields = system_fields(map, instance, &deal.pipeline, &write.fields);
        if stage.is_none() && fields.is_empty() {
            continue;
        }
        let op = CommandOp::UpdateDeal { external_id: external.id.clone(), stage, fields };
        commands.push(origin.command(next_id(), instance, &external.system, Some(deal.id), op));
    }
    commands
}

/// Commands that create a spawned child in every system its parent lives
/// in, where the mapping says how to create a record of its pipeline.
pub fn create_child(
    map: &dyn OutboundMap,
    origin: &CommandOrigin<'_>,
    parent: &Deal,
    child: &Deal,
    copied: &[(String, serde_json::Value)],
    mut next_id: impl FnMut() -> Uuid,
) -> Vec<Command> {
    let mut commands = Vec::new();
    for external in deal_records(parent) {
        let instance = external.instance.as_str();
        let Some((system, create)) = map.create_with(instance, &child.pipeline) else { continue };
        let mut written = copied.to_vec();
        written.push(("title".to_owned(), serde_json::Value::from(child.title.as_str())));
        let op = CommandOp::CreateDeal {
            create,
            parent_external_id: Some(external.id.clone()),
            stage: map.system_stage(instance, &child.pipeline, &child.stage),
            responsible: child.responsible.as_deref().and_then(|p| map.system_user(instance, p)),
            fields: system_fields(map, instance, &child.pipeline, &written),
            document: None,
        };
        commands.push(origin.command(next_id(), instance, &system, Some(child.id), op));
    }
    commands
}

/// What `create_record` asks a system for: where, how, and whether the
/// new record is a document for the deal rather than the deal itself.
pub struct NewRecord<'a> {
    pub connector: &'a str,
    pub system: &'a str,
    pub create: &'a BTreeMap<String, String>,
    /// The document's record kind; `None` when the record is the deal's.
    pub document: Option<&'a str>,
}

/// The command that creates a record for `deal` in a system it does not
/// live in yet, with the fields already in that system's terms.
pub fn create_record(
    origin: &CommandOrigin<'_>,
    id: Uuid,
    record: &NewRecord<'_>,
    deal: Uuid,
    fields: BTreeMap<String, serde_json::Value>,
) -> Command {
    let op = CommandOp::CreateDeal {
        create: record.create.clone(),
        parent_external_id: None,
        stage: None,
        responsible: None,
        fields,
        document: record.document.map(str::to_owned),
    };
    origin.command(id, record.connector, record.system, Some(deal), op)
}

/// Commands that create a task in every system the deal lives in and the
/// assignee has a user in.
pub fn create_task(
    map: &dyn OutboundMap,
    origin: &CommandOrigin<'_>,
    deal: &Deal,
    task: &Task,
    mut next_id: impl FnMut() -> Uuid,
) -> Vec<Command> {
    let mut commands = Vec::new();
    for external in deal_records(deal) {
        let instance = external.instance.as_str();
        let Some(responsible) = map.system_user(instance, &task.assignee) else { continue };
        let op = CommandOp::CreateTask {
            task: task.id,
            external_id: Some(external.id.clone()),
            title: task.title.clone(),
            description: task.description.clone(),
            responsible,
            deadline: task.due,
        };
        commands.push(origin.command(next_id(), instance, &external.system, Some(deal.id), op));
    }
    commands
}

/// Commands that deliver a notification through every system the deal
/// lives in and the person has a user in.
pub fn notify(
    map: &dyn OutboundMap,
    origin: &CommandOrigin<'_>,
    deal: &Deal,
    person: &str,
    text: &str,
    mut next_id: impl FnMut() -> Uuid,
) -> Vec<Command> {
    let mut commands = Vec::new();
    for external in deal_records(deal) {
        let instance = external.instance.as_str();
        let Some(to) = map.system_user(instance, person) else { continue };
        let op = CommandOp::Notify { to, text: text.to_owned(), external_id: Some(external.id.clone()) };
        commands.push(origin.command(next_id(), instance, &external.system, Some(deal.id), op));
    }
    commands
}

/// Commands that write a comment on the deal's timeline in every system
/// holding it. Every system gets it: a comment needs no translation.
pub fn comment(origin: &CommandOrigin<'_>, deal: &Deal, text: &str, mut next_id: impl FnMut() -> Uuid) -> Vec<Command> {
    deal_records(deal)
        .map(|external| {
            let op = CommandOp::Comment { external_id: external.id.clone(), text: text.to_owned() };
            origin.command(next_id(), &external.instance, &external.system, Some(deal.id), op)
        })
        .collect()
}

/// The deal's own records in the systems it lives in: where its writes,
/// tasks and messages go. Documents made for it (a customer order in 1C)
/// are left out: writing a deal's stage to an order would fail there.
fn deal_records(deal: &Deal) -> impl Iterator<Item = &ExternalRef> {
    deal.external_refs.iter().filter(|r| r.holds_deal())
}

/// Canonical fields in a system's names; fields the system does not map
/// are not written there. A person is written as the system's user id.
fn system_fields(
    map: &dyn OutboundMap,
    instance: &str,
    pipeline: &str,
    fields: &[(String, serde_json::Value)],
) -> BTreeMap<String, serde_json::Value> {
    let mut out = BTreeMap::new();
    for (field, value) in fields {
        let Some(name) = map.system_field(instance, pipeline, field) else { continue };
        let value = match (field.as_str(), value) {
            ("responsible", serde_json::Value::String(person)) => match map.system_user(instance, person) {
                Some(user) => serde_json::Value::from(user),
                None => continue,
            },
            // Money goes out as its decimal text; the currency is a field of its own.
            ("amount", serde_json::Value::Object(money)) => money.get("amount").cloned().unwrap_or_default(),
            _ => value.clone(),
        };
        out.insert(name, value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_origins_are_written_as_format_writes_them() {
        for (index, occurrence) in [(0, 1), (3, 12), (1002, 7), (usize::MAX, u32::MAX)] {
            assert_eq!(action_origin(index, occurrence), format!("{index}.{occurrence}"));
        }
        let seed = Uuid::from_u128(0x0195_0000_0000_7000_8000_0000_0000_00ab);
        for action in ["0.1", "refuse.2.notify"] {
            let origin = CommandOrigin { cause: Uuid::nil(), seed, flow: "left-new", action: action.into() };
            assert_eq!(origin.idempotency_key("b24"), format!("{seed}/left-new/{action}/b24"));
        }
    }
}
