//! Between the store and the flow engine: loading the slice of canonical
//! state one event concerns into a `World`, and turning what the engine
//! changed into one `ChangeSet`.

use std::collections::BTreeSet;

use uuid::Uuid;

use super::{ChangeSet, Store, StoreError};
use crate::flow::effects::Effects;
use crate::flow::world::World;
use crate::model::{TaskKind, TaskStatus};

/// Loads `deal_ids` with their parents, their children and their parents'
/// children (siblings), one level each way; then those deals' invoices,
/// open tasks and pending timers, every team cursor, and the load of every
/// person who is a task assignee or deal responsible in that set. Parents
/// of loaded deals that were not loaded themselves are listed in
/// `not_loaded`. Unknown ids are skipped.
pub async fn load_world(store: &dyn Store, deal_ids: &[Uuid]) -> Result<World, StoreError> {
    let mut world = World::default();
    let requested = store.deals_by_ids(deal_ids).await?;
    let requested_ids: Vec<Uuid> = requested.iter().map(|d| d.id).collect();
    let parent_ids: Vec<Uuid> =
        requested.iter().filter_map(|d| d.parent_id).filter(|p| !requested_ids.contains(p)).collect();
    for deal in requested {
        world.insert_deal(deal);
    }
    for parent in store.deals_by_ids(&dedup(parent_ids)).await? {
        world.insert_deal(parent);
    }
    let parents_of_children: Vec<Uuid> = world.deals.keys().copied().collect();
    for parent in parents_of_children {
        for child in store.child_deals(parent).await? {
            world.deals.entry(child.id).or_insert(child);
        }
    }
    world.not_loaded = unloaded_parents(&world);

    let ids: Vec<Uuid> = world.deals.keys().copied().collect();
    load_records(store, &mut world, &ids).await?;
    world.team_cursors = store.team_cursors().await?;
    load_missing_loads(store, &mut world).await?;
    Ok(world)
}

/// Adds one more deal, with its invoices, open tasks and pending timers,
/// when the engine reached a deal that was not loaded. What the world holds
/// already is kept as it is (it may carry changes). Returns false when no
/// such deal is stored.
pub async fn extend_world(store: &dyn Store, world: &mut World, deal_id: Uuid) -> Result<bool, StoreError> {
    world.not_loaded.remove(&deal_id);
    if world.deals.contains_key(&deal_id) {
        return Ok(true);
    }
    let Some(deal) = store.get_deal(deal_id).await? else {
        return Ok(false);
    };
    world.insert_deal(deal);
    world.not_loaded.extend(unloaded_parents(world));
    load_records(store, world, &[deal_id]).await?;
    load_missing_loads(store, world).await?;
    Ok(true)
}

/// What a run changed — the dirty deals, invoices, tasks and timers as the
/// world holds them now, the dirty teams' cursor positions — together with
/// the run's commands and trace, as one change set. The caller adds the
/// event outcome.
pub fn change_set_from_world(world: &World, effects: &Effects) -> ChangeSet {
    let dirty = world.dirty();
    ChangeSet {
        deals: dirty.deals.iter().filter_map(|id| world.deals.get(id)).cloned().collect(),
        invoices: dirty.invoices.iter().filter_map(|id| world.invoices.get(id)).cloned().collect(),
        tasks: dirty.tasks.iter().filter_map(|id| world.tasks.get(id)).cloned().collect(),
        timers: dirty.timers.iter().filter_map(|id| world.timers.get(id)).cloned().collect(),
        commands: effects.commands.clone(),
        trace: effects.trace.clone(),
        team_cursors: dirty
            .team_cursors
            .iter()
            .filter_map(|team| world.team_cursors.get(team).map(|position| (team.clone(), *position)))
            .collect(),
        event_outcomes: Vec::new(),
    }
}

/// Invoices, open tasks and approvals, and pending timers of `deals`, keeping what the
/// world holds already.
async fn load_records(store: &dyn Store, world: &mut World, deals: &[Uuid]) -> Result<(), StoreError> {
    for invoice in store.invoices_of_deals(deals).await? {
        world.invoices.entry(invoice.id).or_insert(invoice);
    }
    // Open tasks, and approvals whatever their state: a rejected approval
    // still holds its deal out of the stage it guards.
    for task in store.tasks_of_deals(deals, false).await? {
        if task.status == TaskStatus::Open || task.kind == TaskKind::Approval {
            world.tasks.entry(task.id).or_insert(task);
        }
    }
    for timer in store.timers_of_deals(deals, true).await? {
        world.timers.entry(timer.id).or_insert(timer);
    }
    Ok(())
}

/// Loads of the assignees and responsibles in the world that have none yet.
async fn load_missing_loads(store: &dyn Store, world: &mut World) -> Result<(), StoreError> {
    let people: BTreeSet<&String> = world
        .tasks
        .values()
        .map(|t| &t.assignee)
        .chain(world.deals.values().filter_map(|d| d.responsible.as_ref()))
        .filter(|person| !world.loads.contains_key(*person))
        .collect();
    if people.is_empty() {
        return Ok(());
    }
    let people: Vec<String> = people.into_iter().cloned().collect();
    let loads = store.person_loads(&people).await?;
    world.loads.extend(loads);
    Ok(())
}

fn unloaded_parents(world: &World) -> BTreeSet<Uuid> {
    world.deals.values().filter_map(|d| d.parent_id).filter(|p| !world.deals.contains_key(p)).collect()
}

fn dedup(ids: Vec<Uuid>) -> Vec<Uuid> {
    ids.into_iter().collect::<BTreeSet<_>>().into_iter().collect()
}
