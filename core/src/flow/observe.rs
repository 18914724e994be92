//! Applying a source system's view of a deal (`DealObserved`) to canonical
//! state. Only what differs becomes a change: an echo of the hub's own
//! write, or a repeat of a known state, changes nothing and fires nothing.

use uuid::Uuid;

use super::deal_fields;
use super::effects::{Change, Problem};
use super::engine::{EngineError, Run};
use crate::model::{Deal, DealObservation, ExternalRef};

impl Run<'_, '_> {
    pub(crate) fn observe(&mut self, source: &ExternalRef, observed: &DealObservation) -> Result<(), EngineError> {
        let parent = self.observed_parent(source, observed);
        let existing = self.world.deal_by_ref(source).or_else(|| self.adoptable_child(source, observed, parent));
        let deal = match existing {
            Some(id) => id,
            None => self.create_observed(source, observed, parent)?,
        };
        if !self.world.deals[&deal].external_refs.contains(source) {
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
        for (field, value) in observed_fields(observed) {
            self.observe_field(deal, &field, value);
        }
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

    fn observe_field(&mut self, deal: Uuid, field: &str, value: serde_json::Value) {
        let current = deal_fields::read(&self.world.deals[&deal], field);
        if current == value {
            return;
        }
        let target = self.world.deal_mut(deal).expect("exists");
        match deal_fields::write(target, field, value.clone()) {
            Ok(true) => {
                target.updated_at = self.cause.at;
                self.changed(Change::FieldChanged { deal, field: field.to_owned(), from: current, to: value }, 0);
            }
            Ok(false) => {}
            Err(message) => self.problem(deal, 0, Problem::Action { flow: String::new(), message }),
        }
    }

    fn observe_stage(&mut self, deal: Uuid, source: &ExternalRef, observed: &DealObservation) {
        let current = &self.world.deals[&deal];
        let pipeline = observed.pipeline.clone().unwrap_or_else(|| current.pipeline.clone());
        let Some(stage) = observed.stage.clone() else { return };
        if current.pipeline == pipeline && current.stage == stage {
            return;
        }
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

/// The fields an observation carries, as canonical paths and JSON values;
/// fields the mapping did not produce are absent and stay as they are.
fn observed_fields(observed: &DealObservation) -> Vec<(String, serde_json::Value)> {
    let mut fields = Vec::new();
    if let Some(title) = &observed.title {
        fields.push(("title".to_owned(), title.as_str().into()));
    }
    if let Some(amount) = &observed.amount {
        fields.push(("amount".to_owned(), serde_json::to_value(amount).unwrap_or_default()));
    }
    if let Some(responsible) = &observed.responsible {
        fields.push(("responsible".to_owned(), responsible.as_str().into()));
    }
    if let Some(client) = &observed.client {
        // Each binding fills only some client fields: merge, never wipe.
        if !client.name.is_empty() {
            fields.push(("client.name".to_owned(), client.name.as_str().into()));
        }
        if let Some(inn) = &client.inn {
            fields.push(("client.inn".to_owned(), inn.as_str().into()));
        }
        if let Some(kpp) = &client.kpp {
            fields.push(("client.kpp".to_owned(), kpp.as_str().into()));
        }
        if !client.emails.is_empty() {
            fields.push(("client.emails".to_owned(), client.emails.clone().into()));
        }
        if !client.phones.is_empty() {
            fields.push(("client.phones".to_owned(), client.phones.clone().into()));
        }
    }
    for (name, value) in &observed.custom_fields {
        fields.push((format!("custom.{name}"), value.clone()));
    }
    fields
}
