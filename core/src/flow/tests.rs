//! Engine properties the story cases do not show on their own: nothing
//! fires on nothing, runs are deterministic, cascades stop, keys are
//! unique, timers cancel exactly.

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::{Cause, Effects, Engine, Problem, World};
use crate::mapping::MappingSet;
use crate::model::{CanonicalEvent, Deal, ExternalRef, TimerStatus};

const SET: &str = r#"
pipelines: { sales: [new, a, b, c, won] }
people:
  anna: { name: Анна, ids: { crm: "17" }, supervisor: boss }
  boss: { name: Босс, ids: { crm: "1" } }
stage_maps:
  crm-sales: { pipeline: sales, stages: { NEW: new, A: a, B: b, C: c, WON: won } }
bindings:
  - name: crm-deals
    connector: crm
    system: bitrix24
    record: deal
    id: ID
    stage: { from: STAGE_ID, map: crm-sales }
    fields:
      title: { from: TITLE }
      responsible: { from: ASSIGNED_BY_ID }
settings: { max_cascade_depth: 5 }
flows:
  # a → b → a → … : a loop an admin can write by mistake.
  - name: a-to-b
    when: { deal_enters: { pipeline: sales, stage: a } }
    then: [ { move: { stage: b } } ]
  - name: b-to-a
    when: { deal_enters: { pipeline: sales, stage: b } }
    then: [ { move: { stage: a } } ]
  - name: remind
    when: { deal_enters: { pipeline: sales, stage: c } }
    then:
      - schedule_timer: { timer: check, after: 3d }
      - notify: { to: responsible, text: "{{ deal.title }} в работе" }
  - name: stop-reminder
    when: { deal_leaves: { pipeline: sales, stage: c } }
    then: [ { cancel_timer: check } ]
"#;

fn set() -> MappingSet {
    MappingSet::from_sources(&[("set.yaml".into(), SET.into())]).unwrap_or_else(|d| panic!("{d:?}"))
}

fn at() -> DateTime<Utc> {
    "2025-03-03T06:00:00Z".parse().unwrap()
}

fn world_with_deal() -> (World, Uuid) {
    let mut world = World::default();
    let mut deal = Deal::new("sales", "new", at(), "test");
    deal.title = "Котёл".into();
    deal.responsible = Some("anna".into());
    deal.external_refs.push(ExternalRef::new("bitrix24", "crm", "5"));
    let id = deal.id;
    world.insert_deal(deal);
    (world, id)
}

fn record(set: &MappingSet, stage: &str) -> CanonicalEvent {
    let data = json!({ "ID": "5", "STAGE_ID": stage, "TITLE": "Котёл", "ASSIGNED_BY_ID": "17" });
    set.map_record("crm", "deal", &data).unwrap().remove(0).event
}

fn process(set: &MappingSet, world: &mut World, event: &CanonicalEvent, cause: Uuid) -> Effects {
    let engine = Engine::new(set.plan(), set.runtime(), set);
    engine.process(world, event, &Cause::new(cause, at())).unwrap()
}

#[test]
fn an_event_that_changes_nothing_fires_nothing() {
    let set = set();
    let (mut world, _) = world_with_deal();
    let first = process(&set, &mut world, &record(&set, "C"), Uuid::now_v7());
    assert_eq!(first.notifications.len(), 1);
    world.take_dirty();
    // The same state again — e.g. our own write coming back as an event.
    let echo = process(&set, &mut world, &record(&set, "C"), Uuid::now_v7());
    assert!(echo.is_noop(), "{echo:?}");
    assert!(world.dirty().deals.is_empty());
}

#[test]
fn the_same_event_on_the_same_state_gives_the_same_effects() {
    let set = set();
    let (world, _) = world_with_deal();
    let cause = Uuid::now_v7();
    let (mut w1, mut w2) = (world.clone(), world);
    let e1 = process(&set, &mut w1, &record(&set, "C"), cause);
    let e2 = process(&set, &mut w2, &record(&set, "C"), cause);
    assert_eq!(e1, e2);
    assert_eq!(w1.timers, w2.timers);
}

#[test]
fn a_flow_loop_stops_at_the_cascade_limit_and_is_reported() {
    let set = set();
    let (mut world, deal) = world_with_deal();
    let effects = process(&set, &mut world, &record(&set, "A"), Uuid::now_v7());
    let too_deep: Vec<&Problem> =
        effects.problems.iter().filter(|p| matches!(p, Problem::CascadeTooDeep { limit: 5, .. })).collect();
    assert_eq!(too_deep.len(), 1, "{:?}", effects.problems);
    // a (event) → b → a → b → a → b: five flows ran, the sixth was stopped.
    assert_eq!(world.deals[&deal].stage_history.len(), 1 + 1 + 5);
    let keys: std::collections::BTreeSet<&str> = effects.commands.iter().map(|c| c.idempotency_key.as_str()).collect();
    assert_eq!(keys.len(), effects.commands.len(), "every command has its own key");
    assert_eq!(effects.commands.len(), 5, "one stage write per move");
}

#[test]
fn leaving_the_stage_cancels_exactly_its_timer() {
    let set = set();
    let (mut world, deal) = world_with_deal();
    process(&set, &mut world, &record(&set, "C"), Uuid::now_v7());
    let timer = world.pending_timer(deal, "check").expect("scheduled").clone();
    assert_eq!(timer.due_at, at() + chrono::Duration::days(3));
    process(&set, &mut world, &record(&set, "WON"), Uuid::now_v7());
    assert_eq!(world.timers[&timer.id].status, TimerStatus::Cancelled);
    // Firing the cancelled timer later changes nothing.
    let fired = CanonicalEvent::TimerFired { deal_id: deal, timer: "check".into(), timer_id: timer.id };
    assert!(process(&set, &mut world, &fired, Uuid::now_v7()).is_noop());
}

#[test]
fn commands_speak_the_target_system() {
    let set = set();
    let (mut world, deal) = world_with_deal();
    let effects = process(&set, &mut world, &record(&set, "C"), Uuid::now_v7());
    let notify = serde_json::to_value(&effects.commands[0]).unwrap();
    assert_eq!(notify["op"], "notify");
    assert_eq!(notify["to"], "17", "anna's user id in the crm instance");
    assert_eq!(notify["connector"], "crm");
    assert_eq!(notify["deal"], deal.to_string());
}

#[test]
fn a_comment_goes_to_every_system_holding_the_deal_and_one_for_a_missing_parent_is_a_problem() {
    let flows = r#"
  - name: won-comment
    when: { deal_enters: { pipeline: sales, stage: won } }
    then:
      - comment: "Выиграна: {{ deal.title }}"
      - comment: { target: parent, text: "Дочерняя сделка выиграна" }
"#;
    let set =
        MappingSet::from_sources(&[("set.yaml".into(), format!("{SET}{flows}"))]).unwrap_or_else(|d| panic!("{d:?}"));
    let (mut world, deal) = world_with_deal();
    let amo = ExternalRef::new("amocrm", "amo", "77");
    world.deal_mut(deal).unwrap().external_refs.push(amo);

    let effects = process(&set, &mut world, &record(&set, "WON"), Uuid::now_v7());

    let comments: Vec<(&str, serde_json::Value)> = effects
        .commands
        .iter()
        .filter(|c| c.op.name() == "comment")
        .map(|c| (c.connector.as_str(), serde_json::to_value(&c.op).unwrap()))
        .collect();
    let expected = [
        ("crm", json!({"op": "comment", "external_id": "5", "text": "Выиграна: Котёл"})),
        ("amo", json!({"op": "comment", "external_id": "77", "text": "Выиграна: Котёл"})),
    ];
    assert_eq!(comments, expected, "a comment needs no mapping: every system holding the deal gets it");
    let no_parent = Problem::Action { flow: "won-comment".into(), message: "the deal has no parent".into() };
    assert_eq!(effects.problems, [no_parent]);
}
