//! Applying a source system's view of a deal (`DealObserved`) to canonical
//! state. Only what differs becomes a change: an echo of the hub's own
//! write, or a repeat of a known state, changes nothing and fires nothing.

use std::sync::Arc;

use uuid::Uuid;

use super::deal_fields;
use super::effects::{Change, Problem};
use super::engine::{EngineError, Run};
use crate::model::{CustomFields, Deal, DealObservation, ExternalRef, Inn, Money};

impl Run<'_, '_> {
    pub(crate) fn observe(&mut self, source: &ExternalRef, observed: &DealObservation) -> Result<(), EngineError> {
        let parent = self.observed_parent(source, observed);
        let by_ref = self.world.deal_by_ref(source);
        let existing = by_ref.or_else(|| self.adoptable_child(source, observed, parent));
        let deal = match existing {
            Some(id) => id,
            None => self.create_observed(source, observed, parent)?,
        };
        // A deal found by this ref has it already: only an adopted or a new
        // one is checked.
        if by_ref.is_none() && !self.world.deals[&deal].external_refs.iter().any(|r| r.same_record(source)) {
            self.world.deal_mut(deal).expect("exists").external_refs.push(source.clone());
        }
        if let Some(parent) = parent
            && self.world.deals[&deal].parent_id != Some(parent)
            && parent != deal
        {
            let from = self.world.deals[&deal].parent_id.map_or(serde_json::Value::Null, |p| p.to_string().into());
            self.world.deal_mut(deal).expect("exists").parent_id = Some(parent);
            self.changed(
                Change::FieldChanged { deal, field: "parent_id".into(), from, to: parent.to_string().into() },
                0,
            );
        }
        observed_fields(observed, |field, value| self.observe_field(deal, field, value));
        self.observe_custom_fields(deal, &observed.custom_fields);
        self.observe_stage(deal, source, observed);
        Ok(())
    }

    /// The canonical parent the source names, if the hub knows it.
    fn observed_parent(&mut self, source: &ExternalRef, observed: &DealObservation) -> Option<Uuid> {
        let parent_ref = observed.parent.as_ref()?;
        let found = self.world.deal_by_ref(parent_ref);
        if found.is_none() {
            let message = format!("parent {} of {} ({}) is not known yet", parent_ref.id, source.id, source.instance);
            let deal = self.world.deal_by_ref(source).unwrap_or(Uuid::nil());
            self.problem(deal, 0, Problem::Action { flow: String::new(), message });
        }
        found
    }

    /// A child the hub spawned comes back from the system that created it
    /// before the creating call recorded its id: the newest child of the
    /// same parent and pipeline without an id in that system is this one.
    fn adoptable_child(&self, source: &ExternalRef, observed: &DealObservation, parent: Option<Uuid>) -> Option<Uuid> {
        let (parent, pipeline) = (parent?, observed.pipeline.as_deref()?);
        self.world
            .children(parent)
            .filter(|c| c.pipeline == pipeline && c.external_ref(&source.system, &source.instance).is_none())
            .map(|c| c.id)
            .last()
    }

    fn create_observed(
        &mut self,
        source: &ExternalRef,
        observed: &DealObservation,
        parent: Option<Uuid>,
    ) -> Result<Uuid, EngineError> {
        let (Some(pipeline), Some(stage)) = (&observed.pipeline, &observed.stage) else {
            return Err(EngineError::Rejected(format!(
                "deal {} ({}) is new to the hub, but the mapping gave it no pipeline and stage",
                source.id, source.instance
            )));
        };
        let actor = actor(source, observed);
        let mut deal = Deal::new(pipeline, stage, self.cause.at, &actor);
        deal.id = self.ids.next_id();
        deal.parent_id = parent;
        deal.external_refs.push(source.clone());
        let id = deal.id;
        self.world.put_deal(deal);
        self.changed(Change::DealCreated { deal: id, pipeline: pipeline.clone(), stage: stage.clone() }, 0);
        let to = (pipeline.clone(), stage.clone());
        self.changed(Change::StageEntered { deal: id, from: None, to, actor, reverted: false }, 0);
        Ok(id)
    }

    fn observe_field(&mut self, deal: Uuid, field: ObservedField, value: ObservedValue<'_>) {
        // Most observed fields repeat what the deal holds: that is decided
        // on the typed values, and only a difference pays for JSON.
        if value.is_held_by(&self.world.deals[&deal], &field) {
            return;
        }
        let (observed_field, typed) = (field, value);
        // The path is made once: the change keeps it.
        let (field, value) = (field.path(), value.to_json());
        // The field's JSON form decides, as `deal_fields::write` would.
        let current = deal_fields::read(&self.world.deals[&deal], &field);
        if current == value {
            return;
        }
        let target = self.world.deal_mut(deal).expect("exists");
        // The typed value is written as it is; `write_different` would parse
        // its JSON form back into the same thing.
        let written = if typed.write_to(target, &observed_field) {
            Ok(())
        } else {
            deal_fields::write_different(target, &field, value.clone())
        };
        match written {
            Ok(()) => {
                target.updated_at = self.cause.at;
                self.changed(Change::FieldChanged { deal, field, from: current, to: value }, 0);
            }
            Err(message) => self.problem(deal, 0, Problem::Action { flow: String::new(), message }),
        }
    }

    /// Writes the observed custom fields whose value differs from the held
    /// one (a field the deal does not have holds `null`) and records each
    /// as a change, in name order. Both maps are sorted by name, so one
    /// walk pairs them, and a changed value is replaced where the walk
    /// found it, the old one moved out as the change's `from`, instead of
    /// being searched for again. A field that comes or goes is inserted or
    /// removed after the walk.
    fn observe_custom_fields(&mut self, deal: Uuid, observed: &CustomFields) {
        let held = &mut self.world.deals.get_mut(&deal).expect("exists").custom_fields;
        let mut changed: Vec<(&Arc<str>, CustomSlot, &serde_json::Value)> = Vec::new();
        let mut walk = held.iter_mut().peekable();
        for (name, to) in observed {
            let current = loop {
                match walk.peek().map(|(h, _)| h.cmp(&name)) {
                    Some(std::cmp::Ordering::Less) => {
                        walk.next();
                    }
                    Some(std::cmp::Ordering::Equal) => break walk.next().map(|(_, v)| v),
                    _ => break None,
                }
            };
            match current {
                Some(value) if value == to => {}
                Some(_) if to.is_null() => changed.push((name, CustomSlot::Remove, to)),
                Some(value) => changed.push((name, CustomSlot::Replaced(std::mem::replace(value, to.clone())), to)),
                None if to.is_null() => {}
                None => changed.push((name, CustomSlot::Insert, to)),
            }
        }
        if changed.is_empty() {
            return;
        }
        let target = self.world.deal_mut(deal).expect("exists");
        target.updated_at = self.cause.at;
        for (name, slot, to) in changed {
            let from = match slot {
                CustomSlot::Replaced(from) => Some(from),
                CustomSlot::Remove => self.world.deals.get_mut(&deal).and_then(|d| d.custom_fields.remove(name)),
                CustomSlot::Insert => {
                    let held = &mut self.world.deals.get_mut(&deal).expect("exists").custom_fields;
                    held.insert(name.clone(), to.clone());
                    None
                }
            };
            let from = from.unwrap_or_default();
            let field = ["custom.", &**name].concat();
            self.changed(Change::FieldChanged { deal, field, from, to: to.clone() }, 0);
        }
    }

    fn observe_stage(&mut self, deal: Uuid, source: &ExternalRef, observed: &DealObservation) {
        let current = &self.world.deals[&deal];
        let Some(stage) = observed.stage.as_deref() else { return };
        let pipeline = observed.pipeline.as_deref().unwrap_or(&current.pipeline);
        // Compared borrowed: an observation that repeats the stage copies nothing.
        if current.pipeline == pipeline && current.stage == stage {
            return;
        }
        let (pipeline, stage) = (pipeline.to_owned(), stage.to_owned());
        let from = (current.pipeline.clone(), current.stage.clone());
        let actor = actor(source, observed);
        let at = self.cause.at;
        if self.world.deal_mut(deal).expect("exists").move_to(&pipeline, &stage, at, &actor) {
            self.changed(
                Change::StageEntered { deal, from: Some(from), to: (pipeline, stage), actor, reverted: false },
                0,
            );
        }
    }
}

/// Who made the change: the person the source names, or the source itself.
fn actor(source: &ExternalRef, observed: &DealObservation) -> String {
    observed.actor.clone().unwrap_or_else(|| format!("system:{}", source.instance))
}

/// A fixed canonical field an observation carries (custom fields take
/// `observe_custom_fields`). A variant each, not its path: matching on a
/// path compared texts for every field of every event.
#[derive(Debug, Clone, Copy)]
enum ObservedField {
    Title,
    Amount,
    Responsible,
    ClientName,
    ClientInn,
    ClientKpp,
    ClientEmails,
    ClientPhones,
}

impl ObservedField {
    /// The field's path, as `deal_fields` and the changes name it.
    fn path(self) -> String {
        match self {
            ObservedField::Title => "title",
            ObservedField::Amount => "amount",
            ObservedField::Responsible => "responsible",
            ObservedField::ClientName => "client.name",
            ObservedField::ClientInn => "client.inn",
            ObservedField::ClientKpp => "client.kpp",
            ObservedField::ClientEmails => "client.emails",
            ObservedField::ClientPhones => "client.phones",
        }
        .to_owned()
    }
}

/// An observed value, borrowed from the observation.
#[derive(Debug, Clone, Copy)]
enum ObservedValue<'o> {
    Text(&'o str),
    Money(&'o Money),
    List(&'o [String]),
}

impl ObservedValue<'_> {
    /// The value as `deal_fields` reads and writes it.
    fn to_json(self) -> serde_json::Value {
        match self {
            ObservedValue::Text(text) => text.into(),
            ObservedValue::Money(money) => deal_fields::money_json(money),
            ObservedValue::List(items) => items.to_vec().into(),
        }
    }

    /// Writes the value into `deal` as `deal_fields::write_different` would
    /// write its JSON form; false (and nothing written) for a combination
    /// it does not know, which the caller then writes the JSON way.
    fn write_to(&self, deal: &mut Deal, field: &ObservedField) -> bool {
        fn client(deal: &mut Deal) -> &mut crate::model::Client {
            deal.client.get_or_insert_with(Default::default)
        }
        match (field, *self) {
            (ObservedField::Title, ObservedValue::Text(t)) => deal.title = t.to_owned(),
            (ObservedField::Responsible, ObservedValue::Text(t)) => deal.responsible = Some(t.to_owned()),
            (ObservedField::Amount, ObservedValue::Money(m)) => deal.amount = Some(m.clone()),
            (ObservedField::ClientName, ObservedValue::Text(t)) => client(deal).name = t.to_owned(),
            (ObservedField::ClientInn, ObservedValue::Text(t)) => client(deal).inn = Some(Inn::new(t)),
            (ObservedField::ClientKpp, ObservedValue::Text(t)) => client(deal).kpp = Some(t.to_owned()),
            (ObservedField::ClientEmails, ObservedValue::List(l)) => client(deal).emails = l.to_vec(),
            (ObservedField::ClientPhones, ObservedValue::List(l)) => client(deal).phones = l.to_vec(),
            _ => return false,
        }
        true
    }

    /// True only when `deal_fields::read(deal, field)` is certainly equal
    /// to `to_json()`; false sends the field the JSON way, which decides.
    fn is_held_by(&self, deal: &Deal, field: &ObservedField) -> bool {
        let client = deal.client.as_ref();
        match (field, *self) {
            (ObservedField::Title, ObservedValue::Text(t)) => deal.title == t,
            (ObservedField::Responsible, ObservedValue::Text(t)) => deal.responsible.as_deref() == Some(t),
            (ObservedField::ClientName, ObservedValue::Text(t)) => client.is_some_and(|c| c.name == t),
            (ObservedField::ClientInn, ObservedValue::Text(t)) => {
                client.and_then(|c| c.inn.as_ref()).is_some_and(|i| i.as_str() == t)
            }
            (ObservedField::ClientKpp, ObservedValue::Text(t)) => client.and_then(|c| c.kpp.as_deref()) == Some(t),
            (ObservedField::ClientEmails, ObservedValue::List(l)) => client.is_some_and(|c| c.emails == l),
            (ObservedField::ClientPhones, ObservedValue::List(l)) => client.is_some_and(|c| c.phones == l),
            // The same bits give the same decimal text (`1.50` ≠ `1.5` in
            // JSON although they are equal numbers).
            (ObservedField::Amount, ObservedValue::Money(m)) => deal
                .amount
                .as_ref()
                .is_some_and(|held| held.currency == m.currency && held.amount.serialize() == m.amount.serialize()),
            _ => false,
        }
    }
}

/// The fields an observation carries, in a fixed order; fields the mapping
/// did not produce are absent and stay as they are.
fn observed_fields<'o>(observed: &'o DealObservation, mut each: impl FnMut(ObservedField, ObservedValue<'o>)) {
    if let Some(title) = &observed.title {
        each(ObservedField::Title, ObservedValue::Text(title));
    }
    if let Some(amount) = &observed.amount {
        each(ObservedField::Amount, ObservedValue::Money(amount));
    }
    if let Some(responsible) = &observed.responsible {
        each(ObservedField::Responsible, ObservedValue::Text(responsible));
    }
    if let Some(client) = &observed.client {
        // Each binding fills only some client fields: merge, never wipe.
        if !client.name.is_empty() {
            each(ObservedField::ClientName, ObservedValue::Text(&client.name));
        }
        if let Some(inn) = &client.inn {
            each(ObservedField::ClientInn, ObservedValue::Text(inn.as_str()));
        }
        if let Some(kpp) = &client.kpp {
            each(ObservedField::ClientKpp, ObservedValue::Text(kpp));
        }
        if !client.emails.is_empty() {
            each(ObservedField::ClientEmails, ObservedValue::List(&client.emails));
        }
        if !client.phones.is_empty() {
            each(ObservedField::ClientPhones, ObservedValue::List(&client.phones));
        }
    }
}

/// What the walk over a deal's custom fields did to a changed one.
enum CustomSlot {
    /// Replaced in place: the value it had.
    Replaced(serde_json::Value),
    /// Held, observed as `null`: to be removed.
    Remove,
    /// Not held: to be inserted.
    Insert,
}
