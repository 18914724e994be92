//! The connector against the account emulator over real HTTP: commands
//! become API v4 calls, the account's answers become failure classes, and
//! the webhooks the account sends for every change decode into leads.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use dealbridge_connector_amocrm::emulator::{self, EmulatorConfig, RequestRecord, RunningEmulator, WebhookRecord};
use dealbridge_connector_amocrm::{AccessToken, AmocrmInbound, AmocrmTarget, ApiClient, WebhookToken};
use dealbridge_core::connector::{InboundConnector, InboundRequest};
use dealbridge_core::delivery::{AttemptContext, FailureClass, OutboundConnector, Performed};
use dealbridge_core::flow::{Command, CommandOp};
use serde_json::{Map, Value, json};

const HUB_TOKEN: &str = "hub-access-token";
const MANAGER: (u64, &str) = (5000007, "manager-access-token");
const WEBHOOK_SECRET: &str = "a-webhook-secret-of-some-length";

/// Webhooks as the handler received them: the URL's query and the body.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

struct Account {
    emu: RunningEmulator,
    received: Received,
}

/// An emulated account whose webhooks go to a handler that keeps them.
async fn account() -> Account {
    let received: Received = Arc::default();
    let keep = received.clone();
    let handler = axum::Router::new().route(
        "/hooks/amocrm",
        axum::routing::post(move |axum::extract::RawQuery(q): axum::extract::RawQuery, body: axum::body::Bytes| {
            let keep = keep.clone();
            async move {
                keep.lock().unwrap().push((q.unwrap_or_default(), body.to_vec()));
                axum::http::StatusCode::ACCEPTED
            }
        }),
    );
    let hook_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = hook_listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(hook_listener, handler).await.unwrap() });
    let config = EmulatorConfig {
        tokens: vec![(emulator::INTEGRATION_USER, HUB_TOKEN.into()), (MANAGER.0, MANAGER.1.into())],
        handler: Some(format!("http://{hook}/hooks/amocrm?token={WEBHOOK_SECRET}").parse().unwrap()),
        ..EmulatorConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Account { emu: emulator::spawn(config, listener).unwrap(), received }
}

fn client(account: &Account, token: &str) -> ApiClient {
    let base = account.emu.base_url().parse().unwrap();
    ApiClient::new(base, AccessToken::new(token).unwrap(), Duration::from_secs(5), Duration::from_secs(2)).unwrap()
}

fn target(account: &Account) -> AmocrmTarget {
    AmocrmTarget::new(client(account, HUB_TOKEN), Some(902))
}

fn command(op: CommandOp) -> Command {
    Command {
        id: uuid::Uuid::now_v7(),
        idempotency_key: uuid::Uuid::now_v7().to_string(),
        connector: "amocrm".into(),
        system: "amocrm".into(),
        deal: None,
        cause_event: uuid::Uuid::now_v7(),
        flow: "test".into(),
        op,
    }
}

fn update(id: &str, stage: Option<&str>, fields: Value) -> Command {
    let fields = fields.as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    command(CommandOp::UpdateDeal { external_id: id.into(), stage: stage.map(str::to_owned), fields })
}

const FIRST: AttemptContext = AttemptContext { attempt: 1, possibly_applied: false };
const RETRY: AttemptContext = AttemptContext { attempt: 2, possibly_applied: true };

async fn requests(account: &Account) -> Vec<RequestRecord> {
    reqwest::get(format!("{}/_emulator/requests", account.emu.base_url())).await.unwrap().json().await.unwrap()
}

async fn webhooks(account: &Account) -> Vec<WebhookRecord> {
    reqwest::get(format!("{}/_emulator/webhooks", account.emu.base_url())).await.unwrap().json().await.unwrap()
}

fn lead(fields: Value) -> Map<String, Value> {
    fields.as_object().unwrap().clone()
}

#[tokio::test]
async fn a_managers_lead_moved_by_the_hub_sends_webhooks_the_connector_reads() {
    let account = account().await;
    let manager = client(&account, MANAGER.1);
    let id = manager.add_lead(&lead(json!({"name": "Поставка", "price": 1000, "pipeline_id": 7000001}))).await.unwrap();

    let moved = update(&id, Some("7000012"), json!({"price": "2500.00", "custom_fields_by_id.900": "new"}));
    let performed = target(&account).perform(&moved, FIRST).await.unwrap();
    assert_eq!(performed, Performed::Applied { created: None });
    let read = manager.lead(&id).await.unwrap().unwrap();
    assert_eq!((read["status_id"].clone(), read["price"].clone()), (json!(7000012), json!(2500)));
    assert_eq!(read["updated_by"], json!(emulator::INTEGRATION_USER));
    assert_eq!(read["custom_fields_values"][0]["values"][0]["value"], "new");

    // The account sent the add and the status change, form-encoded with the
    // URL token; both decode into leads of this account.
    let inbound = AmocrmInbound::new(WebhookToken::new(WEBHOOK_SECRET).unwrap(), "emulator", Some(31000001));
    let received = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if account.received.lock().unwrap().len() == 2 {
                return account.received.lock().unwrap().clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("two webhooks");
    let mut decoded = Vec::new();
    for (query, body) in &received {
        inbound.verify_query(Some(query)).unwrap();
        let headers = http::HeaderMap::new();
        inbound.verify(&InboundRequest { headers: &headers, body, received_at: Utc::now() }).unwrap();
        decoded.extend(inbound.decode(body, &[]).unwrap());
    }
    let actions: Vec<&str> = decoded.iter().map(|r| r.data["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["add", "status"]);
    let status = &decoded[1].data;
    assert_eq!((status["id"].as_str(), status["status_id"].as_str()), (Some(id.as_str()), Some("7000012")));
    assert_eq!((status["old_status_id"].as_str(), status["pipeline_id"].as_str()), (Some("7000011"), Some("7000001")));
    assert_eq!(status["modified_user_id"], emulator::INTEGRATION_USER.to_string());
    assert_eq!(status["custom_fields_by_id"]["900"], "new");
    assert!(webhooks(&account).await.iter().all(|w| w.status == Some(202)));
    account.emu.stop().await;
}

#[tokio::test]
async fn creates_tasks_and_notes_return_their_ids_and_won_takes_the_leads_pipeline() {
    let account = account().await;
    let target = target(&account);
    let create = command(CommandOp::CreateDeal {
        create: [("pipeline_id".to_owned(), "7000002".to_owned())].into(),
        parent_external_id: Some("77".into()),
        stage: Some("7000021".into()),
        responsible: Some(MANAGER.0.to_string()),
        fields: [("name".to_owned(), json!("Логистика: Поставка"))].into(),
        document: None,
    });
    let Performed::Applied { created: Some(created) } = target.perform(&create, FIRST).await.unwrap() else {
        panic!("a created lead")
    };
    let child = client(&account, HUB_TOKEN).lead(&created.id).await.unwrap().unwrap();
    assert_eq!((child["pipeline_id"].clone(), child["status_id"].clone()), (json!(7000002), json!(7000021)));
    assert_eq!(child["responsible_user_id"], json!(MANAGER.0));
    assert_eq!(child["custom_fields_values"][0]["field_id"], json!(902), "the parent link");
    assert_eq!(child["custom_fields_values"][0]["values"][0]["value"], "77");

    // A create that may have gone through is not repeated.
    let again = target.perform(&create, RETRY).await.unwrap_err();
    assert_eq!(again.class, FailureClass::Permanent);
    assert!(again.message.contains("may have succeeded"), "{}", again.message);

    // «won» is 142 in every pipeline: the lead's own pipeline goes with it.
    target.perform(&update(&created.id, Some("142"), json!({})), FIRST).await.unwrap();
    let patch = requests(&account).await.into_iter().rfind(|r| r.method == "PATCH").unwrap();
    assert_eq!(patch.body, json!({"status_id": 142, "pipeline_id": 7000002}));

    let task = command(CommandOp::CreateTask {
        task: uuid::Uuid::now_v7(),
        external_id: Some(created.id.clone()),
        title: "Позвонить".into(),
        description: String::new(),
        responsible: MANAGER.0.to_string(),
        deadline: None,
    });
    assert_eq!(target.perform(&task, FIRST).await.unwrap(), Performed::Applied { created: None });
    let note = command(CommandOp::Notify {
        to: "5000007".into(),
        text: "Оценка готова".into(),
        external_id: Some(created.id),
    });
    assert_eq!(target.perform(&note, FIRST).await.unwrap(), Performed::Applied { created: None });
    let log: Vec<(String, String, u16)> =
        requests(&account).await.into_iter().map(|r| (r.method, r.path, r.status)).collect();
    let tail = &log[log.len() - 2..];
    assert_eq!(tail[0], ("POST".into(), "/api/v4/tasks".into(), 200));
    assert!(tail[1].1.ends_with("/notes") && tail[1].2 == 200, "{log:?}");
    account.emu.stop().await;
}

#[tokio::test]
async fn a_possibly_applied_retry_reads_first_and_writes_nothing_already_there() {
    let account = account().await;
    let target = target(&account);
    let id = client(&account, MANAGER.1).add_lead(&lead(json!({"name": "x", "pipeline_id": 7000001}))).await.unwrap();
    let moved = update(&id, Some("7000013"), json!({"custom_fields_by_id.901": "18500"}));
    target.perform(&moved, FIRST).await.unwrap();
    let before = requests(&account).await.len();
    assert_eq!(target.perform(&moved, RETRY).await.unwrap(), Performed::AlreadyApplied { created: None });
    let after: Vec<String> = requests(&account).await[before..].iter().map(|r| r.method.clone()).collect();
    assert_eq!(after, ["GET"], "one read, no write");
    account.emu.stop().await;
}

#[tokio::test]
async fn the_accounts_refusals_have_their_classes() {
    let account = account().await;
    let target = target(&account);
    let id = client(&account, MANAGER.1).add_lead(&lead(json!({"name": "x"}))).await.unwrap();

    let gone = target.perform(&update("999999", Some("7000012"), json!({})), FIRST).await.unwrap_err();
    assert_eq!(gone.class, FailureClass::Permanent);
    assert!(gone.message.contains("404") && gone.message.contains("deleted"), "{}", gone.message);

    let invalid =
        target.perform(&update(&id, None, json!({"custom_fields_by_id.12345": "x"})), FIRST).await.unwrap_err();
    assert_eq!(invalid.class, FailureClass::Permanent);
    assert!(invalid.message.contains("custom_fields_values.0.field_id: The value you selected"), "{}", invalid.message);
    let wrong_status = target.perform(&update(&id, Some("7000021"), json!({})), FIRST).await.unwrap_err();
    assert!(
        wrong_status.message.contains("status_id"),
        "a logistics status in the sales pipeline: {}",
        wrong_status.message
    );

    let stranger = AmocrmTarget::new(client(&account, "not-a-token-of-this-account"), None);
    let refused = stranger.perform(&update(&id, Some("7000012"), json!({})), FIRST).await.unwrap_err();
    assert_eq!(refused.class, FailureClass::Auth);

    let fault = json!({"method": "PATCH", "status": 503, "times": 1});
    reqwest::Client::new()
        .post(format!("{}/_emulator/faults", account.emu.base_url()))
        .json(&fault)
        .send()
        .await
        .unwrap();
    let down = target.perform(&update(&id, Some("7000012"), json!({})), FIRST).await.unwrap_err();
    assert_eq!(down.class, FailureClass::Retryable);

    // Above 7 requests in a second the account answers 429.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let api = client(&account, HUB_TOKEN);
    let mut classes = Vec::new();
    for _ in 0..9 {
        classes.push(api.lead(&id).await.map(|_| ()).map_err(|e| (e.class, e.status)));
    }
    assert_eq!(classes.iter().filter(|c| c.is_ok()).count(), 7, "{classes:?}");
    assert!(classes[7..].iter().all(|c| *c == Err((FailureClass::RateLimited, Some(429)))), "{classes:?}");
    account.emu.stop().await;
}
