//! The hub carrying an event end to end: a signed webhook is mapped by the
//! mapping files, moves a canonical deal, runs the company's flows, and the
//! deal's trace explains it; an invalid mapping edit on the running hub
//! leaves the last good set in force.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

/// A binding of the generic JSON webhook onto the shipped sales pipeline.
const HTTP_BINDING: &str = r#"# yaml-language-server: $schema=./schema.json
stage_maps:
  http-sales:
    pipeline: sales
    stages: { new: new, evaluate: evaluation, proposal: proposal, proposal_sent: proposal_sent }
bindings:
  - name: http-deals
    connector: http
    system: http
    record: deal.updated
    id: id
    stage: { from: stage, map: http-sales }
    fields:
      title: { from: title, convert: [trim], required: true }
      amount: { from: amount, convert: [decimal], currency: { default: RUB } }
      responsible: { from: manager }
"#;

/// The shipped mappings plus the webhook binding, in a directory of the test's own.
fn mappings_dir(root: &Path) -> PathBuf {
    let dir = root.join("mappings");
    std::fs::create_dir_all(&dir).unwrap();
    let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("mappings");
    for entry in std::fs::read_dir(shipped).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "json") {
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(dir.join("http.yaml"), HTTP_BINDING).unwrap();
    // The webhook's sender knows Иван Иванов as user 7.
    let people = std::fs::read_to_string(dir.join("people.yaml")).unwrap();
    let people = people.replace(r#"ids: { bitrix24: "7","#, r#"ids: { http: "7", bitrix24: "7","#);
    std::fs::write(dir.join("people.yaml"), people).unwrap();
    dir
}

fn config_extra(mappings: &Path) -> String {
    format!("[mappings]\ndir = \"{}\"\n[engine]\nevent_poll_ms = 50\ntimer_poll_ms = 50\n", mappings.display())
}

async fn json_of(hub: &TestHub, path: &str) -> (u16, Value) {
    let response = hub.get_with_token(path, Some(VIEWER)).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Waits until the stored event is no longer pending; returns its view.
async fn processed(hub: &TestHub, event_id: &str) -> Value {
    for _ in 0..200 {
        let (_, event) = json_of(hub, &format!("/api/v1/events/{event_id}")).await;
        if event["processing"]["state"] != "pending" {
            return event;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("event {event_id} was not processed");
}

fn deal_update(id: &str, stage: &str) -> String {
    json!({"type": "deal.updated", "timestamp": "2025-03-03T09:00:00Z", "data": {"id": id, "stage": stage, "title": " Поставка в Казань "}})
        .to_string()
}

fn proposal_update(id: &str, stage: &str) -> String {
    let data = json!({"id": id, "stage": stage, "title": "Котельная", "amount": "1 250 000,00", "manager": "7"});
    json!({"type": "deal.updated", "data": data}).to_string()
}

async fn a_webhook_moves_a_deal_runs_flows_and_is_explained(store: StoreKind) {
    let dir = tempfile::tempdir().unwrap();
    let mappings = mappings_dir(dir.path());
    write_config(dir.path(), &store, &config_extra(&mappings));
    let hub = TestHub::start(dir.path(), &store).await;
    let (_, set) = json_of(&hub, "/api/v1/mappings").await;

    // S2.1: the deal is moved to «evaluate» in the source system.
    let event_id = accepted_id(hub.post_signed("http", "msg_s2_1", &deal_update("900", "evaluate")).await).await;
    let event = processed(&hub, &event_id).await;
    assert_eq!(event["processing"]["state"], "processed", "{event}");
    assert_eq!(event["processing"]["mapping_version"], set["version"], "the event records the mapping version");

    let (status, deal) = json_of(&hub, "/api/v1/deals?system=http&instance=http&external_id=900").await;
    assert_eq!(status, 200, "{deal}");
    assert_eq!((deal["pipeline"].as_str(), deal["stage"].as_str()), (Some("sales"), Some("evaluation")));
    assert_eq!(deal["title"], "Поставка в Казань");
    // S2.2: the logistics child exists, assigned to the logisticians, and the parent mirrors it.
    let children = deal["children"].as_array().unwrap();
    assert_eq!(children.len(), 1, "{deal}");
    assert_eq!((children[0]["pipeline"].as_str(), children[0]["stage"].as_str()), (Some("logistics"), Some("new")));
    assert_eq!(children[0]["responsible"], "orlova");
    assert_eq!(deal["custom_fields"]["logistics_stage"], "new");
    assert_eq!(deal["custom_fields"]["logistics_deal"], children[0]["id"]);

    // The trace: raw event → binding and mapping version → change → flow → action.
    let deal_id = deal["id"].as_str().unwrap();
    let (_, trace) = json_of(&hub, &format!("/api/v1/deals/{deal_id}/trace")).await;
    let entry = &trace["timeline"][0];
    assert_eq!(entry["cause_event"], event_id.as_str());
    assert_eq!(entry["source"]["connector"], "http");
    let steps = entry["steps"].as_array().unwrap();
    assert!(steps.iter().any(|s| s["step"] == "change" && s["binding"] == "http-deals"), "{trace}");
    assert!(steps.iter().any(|s| s["flow"] == "logistics-estimate" && s["action"] == "spawn_child"), "{trace}");
    let before = steps.len();

    // The same state delivered again (an echo) changes nothing and fires nothing.
    let echo = accepted_id(hub.post_signed("http", "msg_s2_echo", &deal_update("900", "evaluate")).await).await;
    assert_eq!(processed(&hub, &echo).await["processing"]["state"], "processed");
    let (_, trace) = json_of(&hub, &format!("/api/v1/deals/{deal_id}/trace")).await;
    let total: usize = trace["timeline"].as_array().unwrap().iter().map(|e| e["steps"].as_array().unwrap().len()).sum();
    assert_eq!(total, before, "{trace}");
    let (_, again) = json_of(&hub, "/api/v1/deals?system=http&instance=http&external_id=900").await;
    assert_eq!(again["children"].as_array().unwrap().len(), 1, "no second child");

    // A record no binding reads is kept, marked ignored, with the reason.
    let other = json!({"type": "invoice.paid", "data": {"id": "1"}}).to_string();
    let ignored = accepted_id(hub.post_signed("http", "msg_other", &other).await).await;
    let ignored = processed(&hub, &ignored).await;
    assert_eq!(ignored["processing"]["state"], "ignored");
    assert!(ignored["processing"]["reason"].as_str().unwrap().contains("invoice.paid"));
    hub.stop().await;
}

#[tokio::test]
async fn a_webhook_moves_a_deal_runs_flows_and_is_explained_on_sqlite() {
    a_webhook_moves_a_deal_runs_flows_and_is_explained(StoreKind::Sqlite).await;
}

#[tokio::test]
async fn a_webhook_moves_a_deal_runs_flows_and_is_explained_on_postgres() {
    let Some((store, db)) = postgres("a_webhook_moves_a_deal_on_postgres").await else { return };
    a_webhook_moves_a_deal_runs_flows_and_is_explained(store).await;
    db.drop_db().await;
}

#[tokio::test]
async fn an_invalid_edit_on_a_running_hub_keeps_the_last_good_set() {
    let dir = tempfile::tempdir().unwrap();
    let mappings = mappings_dir(dir.path());
    write_config(dir.path(), &StoreKind::Sqlite, &config_extra(&mappings));
    let hub = TestHub::start(dir.path(), &StoreKind::Sqlite).await;
    let (_, first) = json_of(&hub, "/api/v1/mappings").await;

    // An admin saves a flow with a typo in a stage name.
    let broken = std::fs::read_to_string(mappings.join("flows-payment.yaml"))
        .unwrap()
        .replace("stage: shipment }", "stage: shiped }");
    std::fs::write(mappings.join("flows-payment.yaml"), &broken).unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (_, now) = json_of(&hub, "/api/v1/mappings").await;
    assert_eq!(now["version"], first["version"], "the last good set keeps running");

    let reload = hub.client.post(hub.url("/api/v1/mappings/reload")).bearer_auth(ADMIN).send().await.unwrap();
    let reload: Value = reload.json().await.unwrap();
    assert_eq!(reload["outcome"], "rejected");
    let problem = reload["problems"][0].as_str().unwrap();
    assert!(problem.contains("flows-payment.yaml:") && problem.contains("unknown stage `shiped`"), "{problem}");
    let metrics = hub.client.get(hub.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let rejected = metrics.lines().find(|l| l.starts_with(r#"dealbridge_mapping_reloads_total{outcome="rejected"}"#));
    assert!(rejected.is_some_and(|l| !l.ends_with(" 0")), "the rejected edit is counted: {metrics}");

    // The fix is picked up by the watcher and swapped in.
    std::fs::write(mappings.join("flows-payment.yaml"), broken.replace("shiped", "shipment") + "\n# fixed\n").unwrap();
    let mut swapped = false;
    for _ in 0..100 {
        let (_, now) = json_of(&hub, "/api/v1/mappings").await;
        if now["version"] != first["version"] {
            swapped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(swapped, "the valid edit was not swapped in");
    hub.stop().await;
}

/// S6 over HTTP: a large proposal waits for the supervisor's approval; the
/// hub holds it out of `proposal_sent` until the approval API grants it.
#[tokio::test]
async fn a_large_proposal_is_held_until_its_approval_is_granted() {
    let dir = tempfile::tempdir().unwrap();
    let mappings = mappings_dir(dir.path());
    write_config(dir.path(), &StoreKind::Sqlite, &config_extra(&mappings));
    let hub = TestHub::start(dir.path(), &StoreKind::Sqlite).await;
    let deal = "/api/v1/deals?system=http&instance=http&external_id=901";

    let id = accepted_id(hub.post_signed("http", "p1", &proposal_update("901", "proposal")).await).await;
    processed(&hub, &id).await;
    let id = accepted_id(hub.post_signed("http", "p2", &proposal_update("901", "proposal_sent")).await).await;
    processed(&hub, &id).await;
    let (_, held) = json_of(&hub, deal).await;
    assert_eq!(held["stage"], "proposal", "held until approved: {held}");

    let deal_id = held["id"].as_str().unwrap();
    let (_, trace) = json_of(&hub, &format!("/api/v1/deals/{deal_id}/trace")).await;
    let approval = trace["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["steps"].as_array().unwrap().iter())
        .find(|s| s["action"] == "require_approval")
        .expect("an approval was asked for");
    assert!(approval["detail"].as_str().unwrap().ends_with("→ petrov"), "{approval}");
    let refused = trace.to_string();
    assert!(refused.contains("waits for approval"), "{refused}");

    // The approval task id, from the tasks the engine stored for the deal.
    let task_id = approval_task(&hub, deal_id).await;
    let decided = hub
        .client
        .post(hub.url(&format!("/api/v1/tasks/{task_id}/decision")))
        .bearer_auth(ADMIN)
        .json(&json!({"approved": true, "by": "petrov"}))
        .send()
        .await
        .unwrap();
    assert_eq!(decided.status(), 200);
    assert_eq!(decided.json::<Value>().await.unwrap()["status"], "approved");
    let viewer_try = hub.client.post(hub.url(&format!("/api/v1/tasks/{task_id}/decision"))).bearer_auth(VIEWER);
    assert_eq!(viewer_try.json(&json!({"approved": false, "by": "x"})).send().await.unwrap().status(), 403);

    // The refusal's commands (stage back, a message for the manager) went
    // through the outbox onto the bus.
    let mut relayed = false;
    for _ in 0..100 {
        let metrics = hub.client.get(hub.url("/metrics")).send().await.unwrap().text().await.unwrap();
        if metrics.lines().any(|l| l.starts_with("dealbridge_outbox_published_total") && !l.ends_with(" 0")) {
            relayed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(relayed, "the outbox relay published nothing");

    let id = accepted_id(hub.post_signed("http", "p3", &proposal_update("901", "proposal_sent")).await).await;
    processed(&hub, &id).await;
    let (_, sent) = json_of(&hub, deal).await;
    assert_eq!(sent["stage"], "proposal_sent", "{sent}");
    hub.stop().await;
}

/// The open approval of a deal, from its trace.
async fn approval_task(hub: &TestHub, deal_id: &str) -> String {
    let (_, trace) = json_of(hub, &format!("/api/v1/deals/{deal_id}/trace")).await;
    let tasks = trace["tasks"].as_array().unwrap();
    let approval = tasks.iter().find(|t| t["kind"] == "approval" && t["status"] == "open").expect("an open approval");
    assert_eq!(approval["assignee"], "petrov");
    assert_eq!(approval["hold_stage"], "proposal_sent");
    approval["id"].as_str().unwrap().to_owned()
}
