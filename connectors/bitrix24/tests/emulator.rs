//! The connector against the portal emulator over real HTTP: events in,
//! every outbound op out (checked in the emulator's call log), error
//! classes, already-applied detection, paging, batch and the rate limit.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use dealbridge_connector_bitrix24::emulator::{self, CallRecord, EmulatorConfig, EventRecord, RunningEmulator};
use dealbridge_connector_bitrix24::rest::BatchCommand;
use dealbridge_connector_bitrix24::{
    ApplicationToken, Bitrix24Config, Bitrix24Inbound, Bitrix24Target, RestClient, WebhookUrl,
};
use dealbridge_core::connector::{InboundConnector, InboundRequest, Rejection};
use dealbridge_core::delivery::{AttemptContext, FailureClass, OutboundConnector, Performed};
use dealbridge_core::flow::{Command, CommandOp};
use serde_json::{Map, Value, json};
use uuid::Uuid;

const TOKEN: &str = "test-application-token-0001";

fn config() -> EmulatorConfig {
    EmulatorConfig { application_token: TOKEN.into(), burst: 10_000.0, ..EmulatorConfig::default() }
}

async fn start(config: &EmulatorConfig) -> RunningEmulator {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    emulator::spawn(config.clone(), listener).unwrap()
}

fn connector_config() -> Bitrix24Config {
    serde_json::from_value(json!({"webhook_url_env": "X", "application_token_env": "Y", "timeout_secs": 5})).unwrap()
}

fn target(emu: &RunningEmulator, config: &EmulatorConfig) -> Bitrix24Target {
    Bitrix24Target::new(&connector_config(), WebhookUrl::parse(&emu.webhook_url(config)).unwrap()).unwrap()
}

fn client(emu: &RunningEmulator, config: &EmulatorConfig) -> RestClient {
    let url = WebhookUrl::parse(&emu.webhook_url(config)).unwrap();
    RestClient::new(url, Duration::from_secs(5), Duration::from_secs(2)).unwrap()
}

async fn calls(emu: &RunningEmulator) -> Vec<CallRecord> {
    reqwest::get(format!("{}/_emulator/calls", emu.base_url())).await.unwrap().json().await.unwrap()
}

async fn clear_calls(emu: &RunningEmulator) {
    reqwest::Client::new().delete(format!("{}/_emulator/calls", emu.base_url())).send().await.unwrap();
}

async fn events(emu: &RunningEmulator) -> Vec<EventRecord> {
    reqwest::get(format!("{}/_emulator/events", emu.base_url())).await.unwrap().json().await.unwrap()
}

async fn fault(emu: &RunningEmulator, fault: Value) {
    let r =
        reqwest::Client::new().post(format!("{}/_emulator/faults", emu.base_url())).json(&fault).send().await.unwrap();
    assert!(r.status().is_success());
}

fn command(op: CommandOp) -> Command {
    Command {
        id: Uuid::now_v7(),
        idempotency_key: format!("evt:{}:flow:action:0", Uuid::now_v7()),
        connector: "b24".into(),
        system: "bitrix24".into(),
        deal: Some(Uuid::now_v7()),
        cause_event: Uuid::now_v7(),
        flow: "test".into(),
        op,
    }
}

const FIRST: AttemptContext = AttemptContext { attempt: 1, possibly_applied: false };
const RETRY: AttemptContext = AttemptContext { attempt: 2, possibly_applied: true };

async fn add_deal(c: &RestClient, fields: Value) -> String {
    let Value::Object(fields) = fields else { panic!() };
    c.deal_add(&fields).await.unwrap()
}

fn map(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

/// A handler that keeps every body it is sent.
async fn handler() -> (reqwest::Url, Arc<Mutex<Vec<Vec<u8>>>>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = bodies.clone();
    let app = axum::Router::new().route(
        "/hooks/b24",
        axum::routing::post(move |body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                kept.lock().unwrap().push(body.to_vec());
                axum::http::StatusCode::ACCEPTED
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hooks/b24").parse().unwrap(), bodies)
}

async fn wait_for<T>(mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..200 {
        if let Some(v) = probe().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out");
}

#[tokio::test]
async fn emulator_events_verify_and_decode_and_wrong_tokens_are_refused() {
    let (url, bodies) = handler().await;
    let cfg = EmulatorConfig { handler: Some(url), ..config() };
    let emu = start(&cfg).await;
    let c = client(&emu, &cfg);
    let id = add_deal(&c, json!({"TITLE": "A"})).await;
    c.deal_update(&id, &map(json!({"STAGE_ID": "UC_EVALUATE"}))).await.unwrap();
    let got = wait_for(async || {
        let b = bodies.lock().unwrap().clone();
        (b.len() == 2).then_some(b)
    })
    .await;
    let inbound = Bitrix24Inbound::new(ApplicationToken::new(TOKEN).unwrap(), Some(cfg.domain.clone()));
    let headers = http::HeaderMap::new();
    let mut kinds = Vec::new();
    for body in &got {
        let request = InboundRequest { headers: &headers, body, received_at: Utc::now() };
        let verified = inbound.verify(&request).unwrap();
        assert_eq!(verified.delivery_key, None, "same-second changes must not merge");
        let records = inbound.decode(body, &[]).unwrap();
        assert_eq!(records[0].kind, "deal.event");
        assert_eq!(records[0].data["id"], json!(id));
        kinds.push(records[0].data["event"].as_str().unwrap().to_owned());
    }
    assert_eq!(kinds, ["ONCRMDEALADD", "ONCRMDEALUPDATE"]);
    let other = Bitrix24Inbound::new(ApplicationToken::new("some-other-token").unwrap(), None);
    let request = InboundRequest { headers: &headers, body: &got[0], received_at: Utc::now() };
    assert!(matches!(other.verify(&request), Err(Rejection::Unauthenticated(_))));
    let truncated = &got[0][..got[0].len() / 3];
    let request = InboundRequest { headers: &headers, body: truncated, received_at: Utc::now() };
    assert!(matches!(inbound.verify(&request), Err(Rejection::Malformed(_))));
    emu.stop().await;
}

#[tokio::test]
async fn a_share_of_events_is_dropped_on_request() {
    let (url, bodies) = handler().await;
    let cfg = EmulatorConfig { handler: Some(url), drop_share: 0.2, ..config() };
    let emu = start(&cfg).await;
    let c = client(&emu, &cfg);
    let id = add_deal(&c, json!({})).await;
    for i in 0..9 {
        c.deal_update(&id, &map(json!({"TITLE": format!("t{i}")}))).await.unwrap();
    }
    let log = wait_for(async || {
        let log = events(&emu).await;
        (log.len() == 10 && log.iter().all(|e| e.dropped || e.status.is_some())).then_some(log)
    })
    .await;
    assert_eq!(log.iter().filter(|e| e.dropped).count(), 2);
    assert_eq!(bodies.lock().unwrap().len(), 8);
    emu.stop().await;
}

#[tokio::test]
async fn update_deal_sends_the_stage_and_fields() {
    let cfg = config();
    let emu = start(&cfg).await;
    let t = target(&emu, &cfg);
    let id = add_deal(t.client(), json!({"TITLE": "Sale"})).await;
    clear_calls(&emu).await;
    let op = CommandOp::UpdateDeal {
        external_id: id.clone(),
        stage: Some("UC_ESTIMATE_READY".into()),
        fields: BTreeMap::from([("OPPORTUNITY".into(), json!(1500.5))]),
    };
    assert_eq!(t.perform(&command(op), FIRST).await.unwrap(), Performed::Applied { created: None });
    let log = calls(&emu).await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].method, "crm.deal.update");
    assert_eq!(log[0].params, json!({"id": id, "fields": {"STAGE_ID": "UC_ESTIMATE_READY", "OPPORTUNITY": 1500.5}}));
    let deal = t.client().deal_get(&id).await.unwrap();
    assert_eq!(deal["STAGE_ID"], "UC_ESTIMATE_READY");
    assert_eq!(deal["OPPORTUNITY"], "1500.5");
    emu.stop().await;
}

#[tokio::test]
async fn a_pipeline_change_goes_through_crm_item_update() {
    let cfg = config();
    let emu = start(&cfg).await;
    let t = target(&emu, &cfg);
    let id = add_deal(t.client(), json!({"TITLE": "Sale"})).await;
    clear_calls(&emu).await;
    let op = CommandOp::UpdateDeal {
        external_id: id.clone(),
        stage: Some("C1:PREPARATION".into()),
        fields: BTreeMap::from([("CATEGORY_ID".into(), json!("1")), ("TITLE".into(), json!("Moved"))]),
    };
    t.perform(&command(op), FIRST).await.unwrap();
    let methods: Vec<_> = calls(&emu).await.into_iter().map(|c| (c.method, c.params)).collect();
    assert_eq!(methods[0].0, "crm.item.update");
    assert_eq!(methods[0].1["fields"], json!({"categoryId": "1", "stageId": "C1:PREPARATION"}));
    assert_eq!(methods[1].0, "crm.deal.update");
    assert_eq!(methods[1].1["fields"], json!({"TITLE": "Moved"}));
    let deal = t.client().deal_get(&id).await.unwrap();
    assert_eq!((deal["CATEGORY_ID"].as_str(), deal["STAGE_ID"].as_str()), (Some("1"), Some("C1:PREPARATION")));
    emu.stop().await;
}

#[tokio::test]
async fn create_deal_writes_the_category_parent_link_and_origin_and_returns_the_new_id() {
    let cfg = config();
    let emu = start(&cfg).await;
    let t = target(&emu, &cfg);
    let parent = add_deal(t.client(), json!({"TITLE": "Parent"})).await;
    clear_calls(&emu).await;
    let cmd = command(CommandOp::CreateDeal {
        create: BTreeMap::from([("CATEGORY_ID".into(), "1".into())]),
        parent_external_id: Some(parent.clone()),
        stage: Some("C1:NEW".into()),
        responsible: Some("7".into()),
        fields: BTreeMap::from([("TITLE".into(), json!("Logistics for Parent"))]),
        document: None,
    });
    let performed = t.perform(&cmd, FIRST).await.unwrap();
    let Performed::Applied { created: Some(created) } = performed else { panic!("{performed:?}") };
    assert_eq!((created.system.as_str(), created.instance.as_str()), ("bitrix24", "b24"));
    let log = calls(&emu).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].method, "crm.deal.add");
    let fields = &log[0].params["fields"];
    assert_eq!(fields["CATEGORY_ID"], "1");
    assert_eq!(fields["STAGE_ID"], "C1:NEW");
    assert_eq!(fields["ASSIGNED_BY_ID"], "7");
    assert_eq!(fields["UF_CRM_PARENT_DEAL"], format!("D_{parent}"));
    assert_eq!(fields["ORIGINATOR_ID"], "dealbridge");
    assert_eq!(fields["ORIGIN_ID"], Bitrix24Target::origin_id(&cmd));
    let child = t.client().deal_get(&created.id).await.unwrap();
    assert_eq!(child["CATEGORY_ID"], "1");
    assert_eq!(child["UF_CRM_PARENT_DEAL"], format!("D_{parent}"));

    // A retry after a lost answer finds the deal instead of adding a second.
    clear_calls(&emu).await;
    let again = t.perform(&cmd, RETRY).await.unwrap();
    assert_eq!(again, Performed::AlreadyApplied { created: Some(created.clone()) });
    let log = calls(&emu).await;
    assert_eq!(log.iter().map(|c| c.method.as_str()).collect::<Vec<_>>(), ["crm.deal.list"]);
    // A retry of a command that never arrived does add it.
    let fresh = command(cmd.op.clone());
    let Performed::Applied { created: Some(other) } = t.perform(&fresh, RETRY).await.unwrap() else { panic!() };
    assert_ne!(other.id, created.id);
    emu.stop().await;
}

#[tokio::test]
async fn create_task_is_linked_to_the_deal_and_notify_reaches_the_user() {
    let cfg = config();
    let emu = start(&cfg).await;
    let t = target(&emu, &cfg);
    let deal = add_deal(t.client(), json!({})).await;
    clear_calls(&emu).await;
    let due = Utc::now() + chrono::Duration::days(2);
    let task = command(CommandOp::CreateTask {
        task: Uuid::now_v7(),
        external_id: Some(deal.clone()),
        title: "Рассчитать доставку".into(),
        description: "Нужен расчёт".into(),
        responsible: "5".into(),
        deadline: Some(due),
    });
    assert_eq!(t.perform(&task, FIRST).await.unwrap(), Performed::Applied { created: None });
    let notify =
        command(CommandOp::Notify {
            to: "5".into(), text: "Расчёт готов".into(), external_id: Some(deal.clone())
        });
    assert_eq!(t.perform(&notify, FIRST).await.unwrap(), Performed::Applied { created: None });
    let log = calls(&emu).await;
    assert_eq!(log[0].method, "tasks.task.add");
    assert_eq!(
        log[0].params,
        json!({"fields": {"TITLE": "Рассчитать доставку", "DESCRIPTION": "Нужен расчёт", "RESPONSIBLE_ID": "5",
                          "DEADLINE": due.to_rfc3339(), "UF_CRM_TASK": [format!("D_{deal}")]}})
    );
    assert_eq!(log[1].method, "im.notify.system.add");
    assert_eq!(log[1].params, json!({"USER_ID": "5", "MESSAGE": "Расчёт готов"}));
    let empty = command(CommandOp::Notify { to: "".into(), text: "x".into(), external_id: None });
    let failure = t.perform(&empty, FIRST).await.unwrap_err();
    assert_eq!(failure.class, FailureClass::Permanent);
    assert!(failure.message.contains("USER_ID_EMPTY"), "{}", failure.message);
    emu.stop().await;
}

#[tokio::test]
async fn a_possibly_applied_update_already_in_place_is_not_written_again() {
    let cfg = config();
    let emu = start(&cfg).await;
    let t = target(&emu, &cfg);
    let id = add_deal(t.client(), json!({"STAGE_ID": "EXECUTING", "OPPORTUNITY": 1000})).await;
    clear_calls(&emu).await;
    let same = CommandOp::UpdateDeal {
        external_id: id.clone(),
        stage: Some("EXECUTING".into()),
        fields: BTreeMap::from([("OPPORTUNITY".into(), json!("1000.00"))]),
    };
    assert_eq!(t.perform(&command(same), RETRY).await.unwrap(), Performed::AlreadyApplied { created: None });
    assert_eq!(calls(&emu).await.iter().map(|c| c.method.as_str()).collect::<Vec<_>>(), ["crm.deal.get"]);
    clear_calls(&emu).await;
    let different =
        CommandOp::UpdateDeal { external_id: id.clone(), stage: Some("WON".into()), fields: BTreeMap::new() };
    assert_eq!(t.perform(&command(different.clone()), RETRY).await.unwrap(), Performed::Applied { created: None });
    assert_eq!(
        calls(&emu).await.iter().map(|c| c.method.as_str()).collect::<Vec<_>>(),
        ["crm.deal.get", "crm.deal.update"]
    );
    // First attempts write without reading.
    clear_calls(&emu).await;
    t.perform(&command(different), FIRST).await.unwrap();
    assert_eq!(calls(&emu).await.iter().map(|c| c.method.as_str()).collect::<Vec<_>>(), ["crm.deal.update"]);
    emu.stop().await;
}

#[tokio::test]
async fn errors_over_http_map_onto_failure_classes_with_retry_after() {
    let cfg = config();
    let emu = start(&cfg).await;
    let t = target(&emu, &cfg);
    let id = add_deal(t.client(), json!({})).await;
    let update =
        command(CommandOp::UpdateDeal { external_id: id.clone(), stage: Some("WON".into()), fields: BTreeMap::new() });
    let cases = [
        (503, "QUERY_LIMIT_EXCEEDED", FailureClass::RateLimited),
        (429, "OPERATION_TIME_LIMIT", FailureClass::RateLimited),
        (503, "OVERLOAD_LIMIT", FailureClass::Retryable),
        (401, "expired_token", FailureClass::Auth),
        (401, "invalid_token", FailureClass::Auth),
        (403, "ACCESS_DENIED", FailureClass::Auth),
        (403, "insufficient_scope", FailureClass::Auth),
        (500, "INTERNAL_SERVER_ERROR", FailureClass::Retryable),
        (502, "", FailureClass::Retryable),
        (400, "CRM_FIELD_ERROR_VALUE_NOT_VALID", FailureClass::Permanent),
    ];
    for (status, code, class) in cases {
        fault(&emu, json!({"method": "crm.deal.update", "status": status, "error": code, "error_description": "x"}))
            .await;
        let f = t.perform(&update, FIRST).await.unwrap_err();
        assert_eq!(f.class, class, "{status} {code}: {}", f.message);
        if !code.is_empty() {
            assert!(f.message.contains(code), "{}", f.message);
        }
    }
    // `Retry-After` is honoured.
    fault(
        &emu,
        json!({"method": "crm.deal.update", "status": 503, "error": "QUERY_LIMIT_EXCEEDED", "retry_after_secs": 7}),
    )
    .await;
    assert_eq!(t.perform(&update, FIRST).await.unwrap_err().retry_after, Some(Duration::from_secs(7)));
    // Without one, an operation-time block waits for the method's reset.
    fault(&emu, json!({"method": "crm.deal.update", "status": 429, "error": "OPERATION_TIME_LIMIT"})).await;
    let after = t.perform(&update, FIRST).await.unwrap_err().retry_after.unwrap();
    assert!(after > Duration::from_secs(500) && after <= Duration::from_secs(600), "{after:?}");
    // A deleted deal: the portal's own "Not found" answer.
    let gone = command(CommandOp::UpdateDeal {
        external_id: "999999".into(),
        stage: Some("WON".into()),
        fields: BTreeMap::new(),
    });
    let f = t.perform(&gone, FIRST).await.unwrap_err();
    assert_eq!(f.class, FailureClass::Permanent);
    assert!(f.message.contains("Not found"), "{}", f.message);
    let f = t.perform(&gone, RETRY).await.unwrap_err();
    assert_eq!(f.class, FailureClass::Permanent);
    // A wrong webhook code: NO_AUTH_FOUND, and the secret is not in the message.
    let bad = EmulatorConfig { webhook_code: "wrong-secret-code".into(), ..cfg.clone() };
    let wrong = target(&emu, &bad);
    let f = wrong.perform(&update, FIRST).await.unwrap_err();
    assert_eq!(f.class, FailureClass::Auth);
    assert!(f.message.contains("NO_AUTH_FOUND") && !f.message.contains("wrong-secret-code"), "{}", f.message);
    // Nobody listening: retryable, no URL (nor its secret) in the message.
    let addr = emu.addr;
    emu.stop().await;
    let url = WebhookUrl::parse(&format!("http://{addr}/rest/1/secret-code-xyz/")).unwrap();
    let dead = Bitrix24Target::new(&connector_config(), url).unwrap();
    let f = dead.perform(&update, FIRST).await.unwrap_err();
    assert_eq!(f.class, FailureClass::Retryable);
    assert!(!f.message.contains("secret-code-xyz"), "{}", f.message);
}

#[tokio::test]
async fn the_leaky_bucket_answers_query_limit_exceeded_after_the_burst() {
    let cfg = EmulatorConfig { burst: 50.0, per_second: 2.0, ..config() };
    let emu = start(&cfg).await;
    let c = client(&emu, &cfg);
    let mut refused = None;
    for i in 0..60 {
        match c.status_list("DEAL_STAGE").await {
            Ok(_) => {}
            Err(e) => {
                refused = Some((i, e));
                break;
            }
        }
    }
    let (at, e) = refused.expect("the limit answered");
    assert_eq!(at, 50, "50 requests pass, the 51st is refused");
    assert_eq!((e.status, e.code.as_str(), e.class), (Some(503), "QUERY_LIMIT_EXCEEDED", FailureClass::RateLimited));
    assert_eq!(e.retry_after, Some(Duration::from_secs(1)), "the time the bucket needs to leak one request");
    let log = calls(&emu).await;
    assert_eq!(log.last().unwrap().error.as_deref(), Some("QUERY_LIMIT_EXCEEDED"));
    // The bucket drains at 2/s: after a second one request passes again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(c.status_list("DEAL_STAGE").await.is_ok());
    emu.stop().await;
}

#[tokio::test]
async fn lists_page_by_start_and_by_id_and_batch_counts_once() {
    let cfg = config();
    let emu = start(&cfg).await;
    let c = client(&emu, &cfg);
    for chunk in 0..3 {
        let commands: Vec<BatchCommand> = (0..40)
            .map(|i| BatchCommand {
                key: format!("d{i}"),
                method: "crm.deal.add".into(),
                params: json!({"fields": {"TITLE": format!("Deal {chunk}-{i}"), "CATEGORY_ID": (i % 2).to_string()}}),
            })
            .collect();
        let outcome = c.batch(&commands, true).await.unwrap();
        assert_eq!(outcome.results.len(), 40);
        assert!(outcome.errors.is_empty());
    }
    let log = calls(&emu).await;
    assert_eq!(log.iter().filter(|c| !c.in_batch).count(), 3, "three HTTP requests");
    assert_eq!(log.iter().filter(|c| c.in_batch && c.method == "crm.deal.add").count(), 120);

    let first = c.deal_list(&json!({}), &["ID", "TITLE"], &json!({"ID": "ASC"}), 0).await.unwrap();
    assert_eq!((first.items.len(), first.next, first.total), (50, Some(50), Some(120)));
    assert_eq!(first.items[0].as_object().unwrap().len(), 2);
    let last = c.deal_list(&json!({}), &["ID"], &json!({"ID": "ASC"}), 100).await.unwrap();
    assert_eq!((last.items.len(), last.next), (20, None));
    let pipeline = c.deal_list(&json!({"CATEGORY_ID": 1}), &["ID"], &json!({}), 0).await.unwrap();
    assert_eq!(pipeline.total, Some(60));
    let fast = c.deal_list(&json!({">ID": 100}), &["ID"], &json!({"ID": "ASC"}), -1).await.unwrap();
    assert_eq!((fast.items.len(), fast.next, fast.total), (20, None, Some(0)));
    let all = c.deal_scan(&json!({}), &["ID"], 0, 10).await.unwrap();
    assert_eq!(all.len(), 120);
    let ids: Vec<u64> = all.iter().map(|d| d["ID"].as_str().unwrap().parse().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    emu.stop().await;
}

#[tokio::test]
async fn batch_reports_failed_commands_and_halts() {
    let cfg = config();
    let emu = start(&cfg).await;
    let c = client(&emu, &cfg);
    let cmd = |key: &str, method: &str, params: Value| BatchCommand { key: key.into(), method: method.into(), params };
    let commands = vec![
        cmd("add", "crm.deal.add", json!({"fields": {"TITLE": "x"}})),
        cmd("get", "crm.deal.get", json!({"id": "$result[add]"})),
        cmd("missing", "crm.deal.get", json!({"id": 987654})),
        cmd("after", "crm.status.list", json!({})),
    ];
    let outcome = c.batch(&commands, false).await.unwrap();
    assert_eq!(outcome.results["get"]["TITLE"], "x", "`$result[add]` resolved");
    assert!(outcome.errors["missing"].is_not_found());
    assert_eq!(outcome.errors["missing"].class, FailureClass::Permanent);
    assert!(outcome.results.contains_key("after"));
    let halted = c.batch(&commands, true).await.unwrap();
    assert!(halted.errors.contains_key("missing") && !halted.results.contains_key("after"));
    let too_many: Vec<BatchCommand> = (0..51).map(|i| cmd(&i.to_string(), "crm.status.list", json!({}))).collect();
    assert_eq!(c.batch(&too_many, false).await.unwrap_err().code, "ERROR_BATCH_LENGTH_EXCEEDED");
    emu.stop().await;
}

#[tokio::test]
async fn stages_comments_and_items_answer_like_a_portal() {
    let cfg = config();
    let emu = start(&cfg).await;
    let c = client(&emu, &cfg);
    let stages = c.status_list("DEAL_STAGE_1").await.unwrap();
    let ids: Vec<&str> = stages.iter().map(|s| s["STATUS_ID"].as_str().unwrap()).collect();
    assert_eq!(ids, ["C1:NEW", "C1:PREPARATION", "C1:UC_APPROVAL", "C1:WON", "C1:LOSE"]);
    let deal = add_deal(&c, json!({})).await;
    assert!(c.timeline_comment_add("deal", &deal, "Расчёт готов").await.is_ok());
    assert!(c.timeline_comment_add("deal", "424242", "x").await.unwrap_err().is_not_found());
    let item = c.item_add(1220, &map(json!({"title": "Заявка", "parentId2": deal}))).await.unwrap();
    let item_id = item["id"].to_string();
    let updated = c.item_update(1220, &item_id, &map(json!({"title": "Заявка 2"}))).await.unwrap();
    assert_eq!(updated["title"], "Заявка 2");
    let e = c.item_update(1220, "999", &map(json!({}))).await.unwrap_err();
    assert_eq!((e.code.as_str(), e.class), ("NOT_FOUND", FailureClass::Permanent));
    let e = c.call("crm.nothing.here", &json!({})).await.unwrap_err();
    assert_eq!((e.status, e.code.as_str()), (Some(404), "ERROR_METHOD_NOT_FOUND"));
    emu.stop().await;
}

#[tokio::test]
async fn several_deals_commands_go_out_as_one_batch_and_only_the_failed_one_fails() {
    let cfg = config();
    let emu = start(&cfg).await;
    let t = target(&emu, &cfg);
    let mut deals = Vec::new();
    for i in 0..5 {
        deals.push(add_deal(t.client(), json!({"TITLE": format!("Sale {i}")})).await);
    }
    clear_calls(&emu).await;
    let mut commands: Vec<Command> = deals
        .iter()
        .map(|id| {
            command(CommandOp::UpdateDeal {
                external_id: id.clone(),
                stage: Some("PREPARATION".into()),
                fields: BTreeMap::from([("OPPORTUNITY".into(), json!(100))]),
            })
        })
        .collect();
    // A deal someone deleted meanwhile.
    commands.push(command(CommandOp::UpdateDeal {
        external_id: "999999".into(),
        stage: Some("PREPARATION".into()),
        fields: BTreeMap::new(),
    }));
    commands.push(command(CommandOp::CreateDeal {
        create: BTreeMap::from([("CATEGORY_ID".into(), "1".into())]),
        parent_external_id: Some(deals[0].clone()),
        stage: Some("C1:NEW".into()),
        responsible: Some("5".into()),
        fields: BTreeMap::new(),
        document: None,
    }));
    commands.push(command(CommandOp::CreateTask {
        task: Uuid::now_v7(),
        external_id: Some(deals[1].clone()),
        title: "Подготовить документы".into(),
        description: String::new(),
        responsible: "5".into(),
        deadline: None,
    }));
    commands.push(command(CommandOp::Notify { to: "5".into(), text: "Готово".into(), external_id: None }));
    // A retry that may already have been applied reads first, so it goes alone.
    let retried = command(CommandOp::UpdateDeal {
        external_id: deals[4].clone(),
        stage: Some("PREPARATION".into()),
        fields: BTreeMap::new(),
    });
    let mut given: Vec<(&Command, AttemptContext)> = commands.iter().map(|c| (c, FIRST)).collect();
    given.push((&retried, RETRY));
    assert_eq!(t.coalesce_limit(), 50);

    let results = t.perform_all(&given).await;

    assert_eq!(results.len(), given.len());
    for (i, result) in results[..5].iter().enumerate() {
        assert_eq!(result, &Ok(Performed::Applied { created: None }), "deal {i}");
    }
    let gone = results[5].as_ref().unwrap_err();
    assert_eq!(gone.class, FailureClass::Permanent, "{gone}");
    assert!(gone.message.contains("deleted"), "{gone}");
    let Ok(Performed::Applied { created: Some(child) }) = &results[6] else { panic!("{:?}", results[6]) };
    assert_eq!(results[7], Ok(Performed::Applied { created: None }));
    assert_eq!(results[8], Ok(Performed::Applied { created: None }));
    assert_eq!(results[9], Ok(Performed::AlreadyApplied { created: None }), "deal 4 was moved by the batch");

    let log = calls(&emu).await;
    let requests: Vec<&str> = log.iter().filter(|c| !c.in_batch).map(|c| c.method.as_str()).collect();
    assert_eq!(requests, ["batch", "crm.deal.get"], "one batch, then the retry's read");
    let carried: Vec<&str> = log.iter().filter(|c| c.in_batch).map(|c| c.method.as_str()).collect();
    assert_eq!(carried.len(), 9, "{carried:?}");
    let child = t.client().deal_get(&child.id).await.unwrap();
    assert_eq!(child["CATEGORY_ID"], "1");
    assert_eq!(child["UF_CRM_PARENT_DEAL"], format!("D_{}", deals[0]));
    for id in &deals {
        assert_eq!(t.client().deal_get(id).await.unwrap()["STAGE_ID"], "PREPARATION");
    }
    emu.stop().await;
}

#[tokio::test]
async fn a_batch_the_portal_refuses_as_a_whole_fails_each_of_its_commands_alike() {
    let cfg = EmulatorConfig { burst: 1.0, per_second: 0.5, ..config() };
    let emu = start(&cfg).await;
    let t = target(&emu, &cfg);
    // The bucket is full after one call: the batch is refused whole.
    let _ = t.client().deal_categories().await;
    let commands: Vec<Command> = (0..3)
        .map(|i| {
            command(CommandOp::UpdateDeal {
                external_id: format!("{}", i + 1),
                stage: Some("PREPARATION".into()),
                fields: BTreeMap::new(),
            })
        })
        .collect();
    let given: Vec<(&Command, AttemptContext)> = commands.iter().map(|c| (c, FIRST)).collect();
    let results = t.perform_all(&given).await;
    for result in &results {
        let failure = result.as_ref().unwrap_err();
        assert_eq!(failure.class, FailureClass::RateLimited, "{failure}");
    }
    emu.stop().await;
}
