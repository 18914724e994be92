//! The inbound side against the portal emulator over real HTTP: the fetch
//! step (a deal read per event, shared by events it already shows, a
//! deleted deal), the catch-up's pass and cursor, the stage catalogue and
//! stage names on the way out, and reads under the portal's rate limit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use dealbridge_connector_bitrix24::emulator::{self, CallRecord, EmulatorConfig, RunningEmulator};
use dealbridge_connector_bitrix24::{
    ApplicationToken, Bitrix24Config, Bitrix24Inbound, Bitrix24Target, PortalReader, ReadBudget, RestClient, WebhookUrl,
};
use dealbridge_core::connector::{FetchError, InboundConnector, SourceRecord};
use dealbridge_core::delivery::{AttemptContext, OutboundConnector, RateQuota, TargetGates};
use dealbridge_core::flow::{Command, CommandOp};
use serde_json::{Map, Value, json};
use uuid::Uuid;

async fn start(config: &EmulatorConfig) -> RunningEmulator {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    emulator::spawn(config.clone(), listener).unwrap()
}

fn client(emu: &RunningEmulator, config: &EmulatorConfig) -> RestClient {
    let url = WebhookUrl::parse(&emu.webhook_url(config)).unwrap();
    RestClient::new(url, Duration::from_secs(5), Duration::from_secs(2)).unwrap()
}

fn reader(emu: &RunningEmulator, config: &EmulatorConfig, budget: ReadBudget) -> Arc<PortalReader> {
    Arc::new(PortalReader::new(client(emu, config), budget))
}

fn inbound(reader: Arc<PortalReader>, catch_up: Option<Duration>) -> Bitrix24Inbound {
    Bitrix24Inbound::new(ApplicationToken::new("t").unwrap(), None).reading(reader, catch_up)
}

async fn calls(emu: &RunningEmulator) -> Vec<CallRecord> {
    reqwest::get(format!("{}/_emulator/calls", emu.base_url())).await.unwrap().json().await.unwrap()
}

fn event(action: &str, id: &str) -> SourceRecord {
    SourceRecord { kind: "deal.event".into(), data: json!({"event": "X", "action": action, "id": id}) }
}

fn fields(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

#[tokio::test]
async fn an_event_becomes_the_deal_as_read_with_its_stage_names() {
    let cfg = EmulatorConfig { burst: 10_000.0, ..EmulatorConfig::default() };
    let emu = start(&cfg).await;
    let c = client(&emu, &cfg);
    let id = c.deal_add(&fields(json!({"TITLE": "Т", "CATEGORY_ID": 1, "STAGE_ID": "C1:UC_APPROVAL"}))).await.unwrap();
    let connector = inbound(reader(&emu, &cfg, ReadBudget::default()), None);
    let fetcher = connector.fetcher().unwrap();
    let received = Utc::now();
    let fetched = fetcher.fetch(vec![event("update", &id)], received).await.unwrap();
    assert_eq!(fetched.records.len(), 1);
    let deal = &fetched.records[0];
    assert_eq!(deal.kind, "deal");
    assert_eq!((deal.data["ID"].as_str(), deal.data["STAGE_ID"].as_str()), (Some(id.as_str()), Some("C1:UC_APPROVAL")));
    assert_eq!(deal.data["STAGE_NAME"], "Согласование");
    assert_eq!(deal.data["CATEGORY_NAME"], "Логистика");
    assert!(fetched.read_at.is_some_and(|at| at >= received));

    // A second event received before that read began is shown by it.
    let again = fetcher.fetch(vec![event("update", &id)], received).await.unwrap();
    assert_eq!(again.records, fetched.records);
    let gets = calls(&emu).await.iter().filter(|c| c.method == "crm.deal.get").count();
    assert_eq!(gets, 1, "one read for both events");
    // One received after it needs a read of its own.
    fetcher.fetch(vec![event("update", &id)], Utc::now()).await.unwrap();
    let log = calls(&emu).await;
    assert_eq!(log.iter().filter(|c| c.method == "crm.deal.get").count(), 2);
    assert_eq!(log.iter().filter(|c| c.method == "crm.category.list").count(), 1, "the catalogue is cached");
    emu.stop().await;
}

#[tokio::test]
async fn a_deleted_deal_is_gone_whether_the_event_says_so_or_the_portal_does() {
    let cfg = EmulatorConfig { burst: 10_000.0, ..EmulatorConfig::default() };
    let emu = start(&cfg).await;
    let connector = inbound(reader(&emu, &cfg, ReadBudget::default()), None);
    let fetcher = connector.fetcher().unwrap();
    let fetched = fetcher.fetch(vec![event("delete", "77"), event("update", "78")], Utc::now()).await.unwrap();
    assert!(fetched.records.is_empty());
    let gone: Vec<&str> = fetched.gone.iter().map(|g| g.id.as_str()).collect();
    assert_eq!(gone, ["77", "78"]);
    assert!(fetched.gone.iter().all(|g| g.system == "bitrix24"));
    let log = calls(&emu).await;
    let gets: Vec<&Value> = log.iter().filter(|c| c.method == "crm.deal.get").map(|c| &c.params).collect();
    assert_eq!(gets, [&json!({"id": "78"})], "a delete event is not read");
    emu.stop().await;
}

#[tokio::test]
async fn reads_wait_for_the_budget_and_a_refusal_is_transient() {
    let cfg = EmulatorConfig { burst: 10_000.0, ..EmulatorConfig::default() };
    let emu = start(&cfg).await;
    let c = client(&emu, &cfg);
    let id = c.deal_add(&fields(json!({"TITLE": "Т"}))).await.unwrap();
    let gates = Arc::new(TargetGates::default());
    let budget = ReadBudget { gates: gates.clone(), quota: Some(RateQuota { per_second: 5.0, burst: 1 }) };
    let connector = inbound(reader(&emu, &cfg, budget), None);
    let fetcher = connector.fetcher().unwrap();
    let started = std::time::Instant::now();
    for _ in 0..3 {
        fetcher.fetch(vec![event("update", &id)], Utc::now()).await.unwrap();
    }
    // Catalogue (2 statuses + 1 category) and 3 reads at 5/s after a burst of 1.
    assert!(started.elapsed() >= Duration::from_millis(900), "{:?}", started.elapsed());

    let fault = json!({"method": "crm.deal.get", "status": 503, "error": "QUERY_LIMIT_EXCEEDED",
                       "error_description": "Too many requests", "retry_after_secs": 30});
    reqwest::Client::new().post(format!("{}/_emulator/faults", emu.base_url())).json(&fault).send().await.unwrap();
    let refused = fetcher.fetch(vec![event("update", &id)], Utc::now()).await.unwrap_err();
    assert!(matches!(&refused, FetchError::Transient(m) if m.contains("QUERY_LIMIT_EXCEEDED")), "{refused}");
    assert!(gates.paused().iter().any(|(key, left)| key.starts_with("bitrix24:") && *left > Duration::from_secs(20)));
    emu.stop().await;
}

#[tokio::test]
async fn the_catch_up_lists_changes_it_has_not_read_and_moves_its_cursor() {
    let cfg = EmulatorConfig { burst: 10_000.0, ..EmulatorConfig::default() };
    let emu = start(&cfg).await;
    let c = client(&emu, &cfg);
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(c.deal_add(&fields(json!({"TITLE": format!("D{i}")}))).await.unwrap());
    }
    let connector = inbound(reader(&emu, &cfg, ReadBudget::default()), Some(Duration::from_secs(60)));
    // A change stamped within the last two seconds waits for a later pass.
    let open = connector.reconciler().unwrap().reconcile(None).await.unwrap();
    assert!(open.events.is_empty(), "{:?}", open.events);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // The hub has read the first deal already (after its second was over).
    connector.fetcher().unwrap().fetch(vec![event("add", &ids[0])], Utc::now()).await.unwrap();
    let reconciler = connector.reconciler().unwrap();
    assert_eq!(reconciler.interval(), Duration::from_secs(60));
    let pass = reconciler.reconcile(None).await.unwrap();
    let keys: Vec<&str> = pass.events.iter().map(|e| e.delivery_key.as_str()).collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(
        keys[0].starts_with(&format!("CATCHUP:{}:", ids[1])) && keys[1].starts_with(&format!("CATCHUP:{}:", ids[2]))
    );
    let records = connector.decode(&pass.events[0].body, &[]).unwrap();
    assert_eq!((records[0].kind.as_str(), records[0].data["id"].as_str()), ("deal.event", Some(ids[1].as_str())));
    let cursor = pass.cursor.unwrap();
    assert!(cursor.ends_with("|0"), "{cursor}");
    let list = calls(&emu).await.into_iter().find(|c| c.method == "crm.deal.list").unwrap();
    assert_eq!(list.params["start"], -1);
    assert_eq!(list.params["order"], json!({"ID": "ASC"}));
    assert_eq!(list.params["select"], json!(["ID", "DATE_MODIFY"]));
    assert!(list.params["filter"].get(">=DATE_MODIFY").is_some() && list.params["filter"][">ID"] == 0);
    // From the cursor: nothing new (the same second's deals were listed).
    let again = reconciler.reconcile(Some(&cursor)).await.unwrap();
    assert!(again.events.is_empty(), "handed out once: {:?}", again.events);
    emu.stop().await;
}

#[tokio::test]
async fn deals_the_portal_no_longer_has_become_deletions_50_ids_a_request() {
    let cfg = EmulatorConfig { burst: 10_000.0, ..EmulatorConfig::default() };
    let emu = start(&cfg).await;
    let c = client(&emu, &cfg);
    let mut known = Vec::new();
    for i in 0..60 {
        known.push(c.deal_add(&fields(json!({"TITLE": format!("D{i}")}))).await.unwrap());
    }
    for gone in [&known[3], &known[55]] {
        c.call("crm.deal.delete", &json!({"id": gone})).await.unwrap();
    }
    known.push("999999".into());
    let connector = inbound(reader(&emu, &cfg, ReadBudget::default()), Some(Duration::from_secs(60)))
        .checking_deletions(Some(Duration::from_secs(3600)));
    let reconciler = connector.reconciler().unwrap();
    assert_eq!(reconciler.vanished_interval(), Some(Duration::from_secs(3600)));
    let before = calls(&emu).await.len();
    let found = reconciler.vanished(&known).await.unwrap();
    let keys: Vec<&str> = found.iter().map(|e| e.delivery_key.as_str()).collect();
    assert_eq!(keys, [format!("GONE:{}", known[3]), format!("GONE:{}", known[55]), "GONE:999999".into()]);
    let records = connector.decode(&found[0].body, &[]).unwrap();
    assert_eq!(
        (records[0].data["action"].as_str(), records[0].data["id"].as_str()),
        (Some("delete"), Some(known[3].as_str()))
    );
    let fetched = connector.fetcher().unwrap().fetch(records, Utc::now()).await.unwrap();
    assert_eq!(fetched.gone.len(), 1, "recorded like a received ONCRMDEALDELETE");
    let lists: Vec<CallRecord> = calls(&emu).await.split_off(before);
    assert_eq!(lists.len(), 2, "61 ids: two requests of at most 50");
    assert!(lists.iter().all(|l| l.method == "crm.deal.list" && l.params["select"] == json!(["ID"])));
    assert_eq!(lists[0].params["filter"]["@ID"].as_array().unwrap().len(), 50);
    // Off unless asked for.
    let plain = inbound(reader(&emu, &cfg, ReadBudget::default()), Some(Duration::from_secs(60)));
    assert_eq!(plain.reconciler().unwrap().vanished_interval(), None);
    emu.stop().await;
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

#[tokio::test]
async fn commands_may_name_stages_by_name() {
    let cfg = EmulatorConfig { burst: 10_000.0, ..EmulatorConfig::default() };
    let emu = start(&cfg).await;
    let config: Bitrix24Config =
        serde_json::from_value(json!({"webhook_url_env": "X", "application_token_env": "Y"})).unwrap();
    let url = WebhookUrl::parse(&emu.webhook_url(&cfg)).unwrap();
    let target = Bitrix24Target::new(&config, url).unwrap().with_reader(reader(&emu, &cfg, ReadBudget::default()));
    let first = AttemptContext { attempt: 1, possibly_applied: false };
    let create = CommandOp::CreateDeal {
        create: BTreeMap::from([("CATEGORY_ID".into(), "1".into())]),
        parent_external_id: None,
        stage: Some("Новая".into()),
        responsible: None,
        fields: BTreeMap::from([("TITLE".into(), json!("Логистика"))]),
        document: None,
    };
    let created = target.perform(&command(create), first).await.unwrap();
    let id = created.created().unwrap().id.clone();
    let c = client(&emu, &cfg);
    assert_eq!(c.deal_get(&id).await.unwrap()["STAGE_ID"], "C1:NEW", "«Новая» of pipeline 1, not of 0");
    let update =
        CommandOp::UpdateDeal {
            external_id: id.clone(), stage: Some("согласование".into()), fields: BTreeMap::new()
        };
    target.perform(&command(update), first).await.unwrap();
    assert_eq!(c.deal_get(&id).await.unwrap()["STAGE_ID"], "C1:UC_APPROVAL");
    let unknown =
        CommandOp::UpdateDeal { external_id: id, stage: Some("Нет такой".into()), fields: BTreeMap::new() };
    let failure = target.perform(&command(unknown), first).await.unwrap_err();
    assert_eq!(failure.class, dealbridge_core::delivery::FailureClass::Permanent);
    assert!(failure.message.contains("Нет такой"), "{}", failure.message);
    emu.stop().await;
}
