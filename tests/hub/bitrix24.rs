//! Bitrix24 end to end over real HTTP, against the portal emulator: events
//! in (fetched with `crm.deal.get`, diffed by the engine), commands out,
//! the hub's own writes coming back as events without a loop, story S2 on
//! the embedded bus and on RabbitMQ, and the catch-up recovering events the
//! portal dropped.
//!
//! The emulator has three incoming webhooks: the hub's (user 1, the
//! integration user), a manager's (7, ivanov) and a logistician's (31,
//! orlova); the test acts as the people through theirs, so the call log
//! tells the hub's calls from theirs.

use std::time::{Duration, Instant};

use dealbridge_connector_bitrix24::emulator::{self, CallRecord, EmulatorConfig, EventRecord, RunningEmulator};
use dealbridge_connector_bitrix24::{RestClient, WebhookUrl, encode_event};
use serde_json::{Map, Value, json};

use crate::delivery::BusUnderTest;
use crate::support::*;

const TOKEN: &str = "test-b24-application-token";
const HUB_USER: u64 = 1;
const MANAGER: (u64, &str) = (7, "manager-webhook");
const LOGISTICIAN: (u64, &str) = (31, "logistician-webhook");
const INSTALLER: (u64, &str) = (21, "installer-webhook");

/// The hub and the emulated portal wired to each other.
struct Rig {
    hub: TestHub,
    emu: RunningEmulator,
    _dir: tempfile::TempDir,
}

fn hub_config(catch_up_secs: u64) -> String {
    format!(
        r#"
[connectors.bitrix24]
kind = "bitrix24"
webhook_url_env = "TEST_B24_WEBHOOK_URL"
application_token_env = "TEST_B24_APP_TOKEN"
timeout_secs = 5
catch_up_secs = {catch_up_secs}
[delivery.targets.bitrix24]
per_second = 1.8
burst = 45
[engine]
event_poll_ms = 50
timer_poll_ms = 1000
[delivery]
resume_poll_ms = 20
attempt_timeout_secs = 5
max_inline_wait_ms = 100
[delivery.retry]
first_delay_secs = 0.05
max_delay_secs = 0.5
factor = 2.0
max_attempts = 8
"#
    )
}

impl Rig {
    /// Starts the hub and then the emulator, which sends its events to the
    /// hub's `POST /hooks/bitrix24`.
    async fn start(store: &StoreKind, bus: &BusUnderTest, drop_share: f64, catch_up_secs: u64) -> Self {
        Self::start_with(store, bus, drop_share, catch_up_secs, tempfile::tempdir().unwrap(), "").await
    }

    /// Like `start`, with more config (e.g. a `[mappings]` directory in `dir`).
    async fn start_with(
        store: &StoreKind,
        bus: &BusUnderTest,
        drop_share: f64,
        catch_up_secs: u64,
        dir: tempfile::TempDir,
        extra: &str,
    ) -> Self {
        write_config(dir.path(), store, &format!("{}{}{extra}", hub_config(catch_up_secs), bus.config()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut config = emulator_config(drop_share);
        let webhook = format!("http://{}/rest/{HUB_USER}/{}/", listener.local_addr().unwrap(), config.webhook_code);
        let mut env = vec![("TEST_B24_WEBHOOK_URL", webhook), ("TEST_B24_APP_TOKEN", TOKEN.to_owned())];
        env.extend(bus.env());
        let hub = TestHub::start_with_env(dir.path(), store, &env).await;
        config.handler = Some(hub.url("/hooks/bitrix24").parse().unwrap());
        let emu = emulator::spawn(config, listener).unwrap();
        Self { hub, emu, _dir: dir }
    }

    fn person(&self, (user, code): (u64, &str)) -> RestClient {
        let url = WebhookUrl::parse(&format!("http://{}/rest/{user}/{code}/", self.emu.addr)).unwrap();
        RestClient::new(url, Duration::from_secs(5), Duration::from_secs(2)).unwrap()
    }

    async fn calls(&self) -> Vec<CallRecord> {
        reqwest::get(format!("{}/_emulator/calls", self.emu.base_url())).await.unwrap().json().await.unwrap()
    }

    /// The timeline comments written on the portal.
    async fn timeline(&self) -> Vec<Value> {
        reqwest::get(format!("{}/_emulator/timeline", self.emu.base_url())).await.unwrap().json().await.unwrap()
    }

    async fn events(&self) -> Vec<EventRecord> {
        reqwest::get(format!("{}/_emulator/events", self.emu.base_url())).await.unwrap().json().await.unwrap()
    }

    /// The canonical deal carrying this Bitrix24 id, if the hub knows it.
    async fn canonical(&self, id: &str) -> Option<Value> {
        let path = format!("/api/v1/deals?system=bitrix24&instance=bitrix24&external_id={id}");
        let response = self.hub.get_with_token(&path, Some(VIEWER)).await;
        (response.status() == 200).then_some(())?;
        Some(response.json().await.unwrap())
    }

    async fn stop(self) {
        self.hub.stop().await;
        self.emu.stop().await;
    }
}

fn emulator_config(drop_share: f64) -> EmulatorConfig {
    EmulatorConfig {
        webhook_user: HUB_USER,
        user_webhooks: vec![
            (MANAGER.0, MANAGER.1.into()),
            (LOGISTICIAN.0, LOGISTICIAN.1.into()),
            (INSTALLER.0, INSTALLER.1.into()),
        ],
        application_token: TOKEN.into(),
        drop_share,
        ..EmulatorConfig::default()
    }
}

fn fields(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

/// Polls `probe` until it gives a value, failing after `limit`.
async fn eventually<T>(what: &str, limit: Duration, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(started.elapsed() < limit, "timed out after {limit:?} waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the portal saw no call for `quiet`, and returns the log.
async fn settled_calls(rig: &Rig, quiet: Duration) -> Vec<CallRecord> {
    let mut last = rig.calls().await;
    let mut since = Instant::now();
    while since.elapsed() < quiet {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = rig.calls().await;
        if now.len() != last.len() {
            (last, since) = (now, Instant::now());
        }
    }
    last
}

/// Waits until the hub made a call `matches` accepts. The waiting reads
/// the emulator's log, not the portal: polling the portal would spend the
/// budget the hub needs.
async fn hub_called(rig: &Rig, what: &str, matches: impl Fn(&CallRecord) -> bool) {
    eventually(what, Duration::from_secs(20), async || {
        rig.calls().await.iter().any(|c| c.user == HUB_USER && c.status == 200 && matches(c)).then_some(())
    })
    .await;
}

/// A hub `crm.deal.update` of `id` setting `field` to `value`.
fn update_of(id: &str, field: &str, value: &str) -> impl Fn(&CallRecord) -> bool {
    let (id, field, value) = (id.to_owned(), field.to_owned(), value.to_owned());
    move |c| c.method == "crm.deal.update" && c.params["id"] == json!(id) && c.params["fields"][&field] == json!(value)
}

fn text<'a>(deal: &'a Value, key: &str) -> &'a str {
    deal.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// S2, as the people of seed 002 do it in their portal.
async fn logistics_estimate(store: StoreKind, bus: BusUnderTest) {
    let rig = Rig::start(&store, &bus, 0.0, 0).await;
    let manager = rig.person(MANAGER);
    let logistician = rig.person(LOGISTICIAN);

    // 1. A sales deal, then the manager moves it to «Оценить».
    let sale = manager
        .deal_add(&fields(json!({"TITLE": "Поставка в Казань", "CATEGORY_ID": 0, "ASSIGNED_BY_ID": 7})))
        .await
        .unwrap();
    eventually("the hub knows the sales deal", Duration::from_secs(10), async || rig.canonical(&sale).await).await;
    manager.deal_update(&sale, &fields(json!({"STAGE_ID": "UC_EVALUATE"}))).await.unwrap();

    // 2. The hub creates the logistics deal with the parent link, records
    //    it on the parent and mirrors its stage.
    hub_called(&rig, "the hub creates the logistics deal", |c| c.method == "crm.deal.add").await;
    let page = manager.deal_list(&json!({"CATEGORY_ID": 1}), &["*", "UF_*"], &json!({}), 0).await.unwrap();
    let child = page.items[0].clone();
    let child_id = text(&child, "ID").to_owned();
    assert_eq!(text(&child, "UF_CRM_PARENT_DEAL"), format!("D_{sale}"));
    assert_eq!(text(&child, "STAGE_ID"), "C1:NEW");
    assert_eq!(text(&child, "TITLE"), "Логистика: Поставка в Казань");
    assert_eq!(text(&child, "ASSIGNED_BY_ID"), "31", "the logisticians' team");
    hub_called(&rig, "the parent mirrors `new`", update_of(&sale, "UF_CRM_LOGISTICS_STAGE", "new")).await;
    let canonical_child = eventually("the child's Bitrix24 id is linked", Duration::from_secs(15), async || {
        rig.canonical(&child_id).await
    })
    .await;
    let canonical_sale = rig.canonical(&sale).await.unwrap();
    assert_eq!(canonical_child["parent_id"], canonical_sale["id"]);
    assert_eq!(canonical_sale["custom_fields"]["logistics_deal"], canonical_child["id"]);

    // 3. Each child stage is mirrored on the parent.
    logistician.deal_update(&child_id, &fields(json!({"STAGE_ID": "C1:PREPARATION"}))).await.unwrap();
    let mirrored = update_of(&sale, "UF_CRM_LOGISTICS_STAGE", "in_progress");
    hub_called(&rig, "the parent mirrors `in_progress`", mirrored).await;

    // 4. «Согласование» with a cost: the parent goes to «Оценка готова» with it.
    let approval = json!({"STAGE_ID": "C1:UC_APPROVAL", "UF_CRM_LOGISTICS_COST": "18500.00"});
    logistician.deal_update(&child_id, &fields(approval)).await.unwrap();
    hub_called(&rig, "the parent is «Оценка готова»", update_of(&sale, "STAGE_ID", "UC_ESTIMATE_READY")).await;
    let log = settled_calls(&rig, Duration::from_secs(3)).await;
    let parent = manager.deal_get(&sale).await.unwrap();
    assert_eq!(parent["STAGE_ID"], "UC_ESTIMATE_READY");
    assert_eq!(parent["UF_CRM_LOGISTICS_COST"], "18500.00");
    assert_eq!(parent["UF_CRM_LOGISTICS_STAGE"], "approval");
    let canonical_sale = rig.canonical(&sale).await.unwrap();
    assert_eq!(canonical_sale["stage"], "estimate_ready");
    assert_eq!(canonical_sale["custom_fields"]["logistics_cost"], "18500.00");
    assert_eq!(canonical_sale["custom_fields"]["logistics_stage"], "approval");
    let stages: Vec<&str> =
        canonical_sale["stage_history"].as_array().unwrap().iter().map(|s| s["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, ["new", "evaluation", "estimate_ready"], "every stage entered once: no echo moved it back");
    let children = canonical_sale["children"].as_array().unwrap();
    assert_eq!(children.len(), 1, "one child, however often the parent came back");
    assert_eq!(children[0]["stage"], "approval");
    // The estimate is written on the sale's timeline, once.
    let timeline = rig.timeline().await;
    assert_eq!(timeline.len(), 1, "{timeline:#?}");
    assert_eq!(
        (timeline[0]["ENTITY_TYPE"].as_str(), timeline[0]["ENTITY_ID"].to_string()),
        (Some("deal"), sale.clone())
    );
    assert_eq!(timeline[0]["COMMENT"], "Оценка логистики: 18500.00 RUB (Логистика: Поставка в Казань)");

    // 5. The call log: the hub's writes are exactly what the story needs;
    //    its reads are one per event at most; its own writes came back as
    //    events and caused nothing more.
    let hub_calls: Vec<&CallRecord> = log.iter().filter(|c| c.user == HUB_USER).collect();
    let writes: Vec<(&str, Value)> = hub_calls
        .iter()
        .filter(|c| !matches!(c.method.as_str(), "crm.deal.get" | "crm.category.list" | "crm.status.list"))
        .map(|c| (c.method.as_str(), c.params.clone()))
        .collect();
    let methods: Vec<&str> = writes.iter().map(|(m, _)| *m).collect();
    assert_eq!(methods.iter().filter(|m| **m == "crm.deal.add").count(), 1, "{writes:#?}");
    assert_eq!(methods.iter().filter(|m| **m == "im.notify.system.add").count(), 1, "{writes:#?}");
    let updates: Vec<&Value> = writes.iter().filter(|(m, _)| *m == "crm.deal.update").map(|(_, p)| p).collect();
    assert!(updates.iter().all(|p| p["id"] == json!(sale)), "only the parent is updated: {updates:#?}");
    let mut written: Vec<String> = updates.iter().map(|p| p["fields"].to_string()).collect();
    written.sort();
    let expected = [
        json!({"STAGE_ID": "UC_ESTIMATE_READY"}),
        json!({"UF_CRM_LOGISTICS_COST": "18500.00"}),
        json!({"UF_CRM_LOGISTICS_STAGE": "approval"}),
        json!({"UF_CRM_LOGISTICS_STAGE": "in_progress"}),
        json!({"UF_CRM_LOGISTICS_STAGE": "new"}),
    ];
    let mut expected: Vec<String> = expected.iter().map(Value::to_string).collect();
    expected.sort();
    assert_eq!(written, expected, "each write once, nothing else: {updates:#?}");
    for (i, a) in updates.iter().enumerate() {
        assert!(!updates[i + 1..].contains(a), "a write repeated (an echo loop?): {updates:#?}");
    }
    let events = rig.events().await;
    let gets = hub_calls.iter().filter(|c| c.method == "crm.deal.get").count();
    assert!(gets <= events.len(), "{gets} reads for {} events", events.len());
    assert_eq!(hub_calls.iter().filter(|c| c.method == "crm.category.list").count(), 1, "stages are cached");
    assert!(log.iter().all(|c| c.status == 200), "no call failed: {log:#?}");
    eprintln!("S2 call log: {} hub writes {methods:?}, {gets} reads, {} events", writes.len(), events.len());

    assert!(events.iter().all(|e| e.status == Some(202)), "every event stored: {events:#?}");
    rig.stop().await;
    bus.clean_up().await;
}

#[tokio::test]
async fn s2_logistics_estimate_end_to_end_on_the_embedded_bus() {
    logistics_estimate(StoreKind::Sqlite, BusUnderTest::Embedded).await;
}

#[tokio::test]
async fn s2_logistics_estimate_end_to_end_through_rabbitmq_and_postgres() {
    let Some(bus) = BusUnderTest::rabbit("s2_logistics_estimate_through_rabbitmq") else { return };
    let Some((store, db)) = postgres("s2_logistics_estimate_through_rabbitmq").await else { return };
    let _broker = crate::delivery::BROKER.lock().await;
    logistics_estimate(store, bus).await;
    db.drop_db().await;
}

#[tokio::test]
async fn the_hubs_own_write_coming_back_changes_nothing_and_costs_one_read() {
    let rig = Rig::start(&StoreKind::Sqlite, &BusUnderTest::Embedded, 0.0, 0).await;
    let manager = rig.person(MANAGER);
    let sale = manager.deal_add(&fields(json!({"TITLE": "Эхо", "ASSIGNED_BY_ID": 7}))).await.unwrap();
    manager.deal_update(&sale, &fields(json!({"STAGE_ID": "UC_EVALUATE"}))).await.unwrap();
    hub_called(&rig, "the hub creates the logistics deal", |c| c.method == "crm.deal.add").await;
    hub_called(&rig, "the parent mirrors `new`", update_of(&sale, "UF_CRM_LOGISTICS_STAGE", "new")).await;
    let before = settled_calls(&rig, Duration::from_secs(2)).await;
    let events_before = rig.events().await.len();

    // The hub writes the parent once more (a mirrored stage); its event
    // comes back, is read once and changes nothing.
    let child = manager.deal_list(&json!({"CATEGORY_ID": 1}), &["ID"], &json!({}), 0).await.unwrap().items[0].clone();
    let logistician = rig.person(LOGISTICIAN);
    logistician.deal_update(text(&child, "ID"), &fields(json!({"STAGE_ID": "C1:PREPARATION"}))).await.unwrap();
    let after = settled_calls(&rig, Duration::from_secs(3)).await;
    let new: Vec<&CallRecord> = after[before.len()..].iter().collect();
    let by_hub: Vec<&str> = new.iter().filter(|c| c.user == HUB_USER).map(|c| c.method.as_str()).collect();
    // The logistician's event: one read; the mirror: one write; its echo:
    // one read, and then nothing.
    assert_eq!(by_hub, ["crm.deal.get", "crm.deal.update", "crm.deal.get"], "{new:#?}");
    assert_eq!(rig.events().await.len(), events_before + 2, "the logistician's change and the hub's mirror");
    let canonical = rig.canonical(&sale).await.unwrap();
    assert_eq!(canonical["custom_fields"]["logistics_stage"], "in_progress");

    // A stored event keeps every key but the application token.
    let body = encode_event("ONCRMDEALUPDATE", &[("ID", &sale)], 1_766_047_124, "emulator.bitrix24.test", "m", TOKEN);
    let response = rig.hub.client.post(rig.hub.url("/hooks/bitrix24")).body(body).send().await.unwrap();
    let id = accepted_id(response).await;
    let stored: Value =
        rig.hub.get_with_token(&format!("/api/v1/events/{id}"), Some(VIEWER)).await.json().await.unwrap();
    let stored = stored["body"].as_str().unwrap();
    assert!(stored.contains("ONCRMDEALUPDATE") && stored.contains(&format!("data%5BFIELDS%5D%5BID%5D={sale}")));
    assert!(!stored.contains(TOKEN) && !stored.contains("application_token"), "{stored}");
    rig.stop().await;
}

#[tokio::test]
async fn with_a_fifth_of_the_events_dropped_the_catch_up_brings_the_hub_to_the_portals_state() {
    let catch_up_secs = 3;
    let rig = Rig::start(&StoreKind::Sqlite, &BusUnderTest::Embedded, 0.2, catch_up_secs).await;
    let manager = rig.person(MANAGER);
    // The emulator drops events 4, 9, 14, …: the creation of deal 4 and the
    // last changes of deals 2 and 4. Changes are spaced so the hub reads
    // each delivered event before the next change: what a dropped event
    // reports reaches the hub only through the catch-up.
    let pace = Duration::from_millis(400);
    let mut ids = Vec::new();
    for i in 0..5 {
        let deal = json!({"TITLE": format!("Сделка {i}"), "ASSIGNED_BY_ID": 7, "OPPORTUNITY": 1000 * (i + 1)});
        ids.push(manager.deal_add(&fields(deal)).await.unwrap());
        tokio::time::sleep(pace).await;
    }
    for (i, id) in ids.iter().enumerate() {
        let change = json!({"STAGE_ID": "UC_ESTIMATE_READY", "TITLE": format!("Сделка {i} (оценена)")});
        manager.deal_update(id, &fields(change)).await.unwrap();
        tokio::time::sleep(pace).await;
        manager.deal_update(id, &fields(json!({"OPPORTUNITY": 2500 + i}))).await.unwrap();
        tokio::time::sleep(pace).await;
    }
    let changed_at = Instant::now();
    let events = rig.events().await;
    let dropped: Vec<u64> = events.iter().filter(|e| e.dropped).map(|e| e.seq).collect();
    assert_eq!(dropped, [4, 9, 14], "{events:#?}");
    for id in &ids {
        let portal = manager.deal_get(id).await.unwrap();
        let limit = Duration::from_secs(catch_up_secs + 5);
        eventually(&format!("deal {id} matches the portal"), limit, async || {
            let deal = rig.canonical(id).await?;
            let amount = deal["amount"]["amount"].as_str().unwrap_or_default().parse::<f64>().ok()?;
            let same = deal["stage"] == "estimate_ready"
                && deal["title"] == portal["TITLE"]
                && Some(amount) == portal["OPPORTUNITY"].as_str().and_then(|a| a.parse().ok());
            same.then_some(())
        })
        .await;
    }
    let took = changed_at.elapsed();
    eprintln!("catch-up: the hub matched the portal {took:?} after the last change");
    assert!(took < Duration::from_secs(catch_up_secs + 5), "within the interval (and a pass)");

    // Deal 2's last change was never sent: the hub read it after a list.
    let log = rig.calls().await;
    assert!(log.iter().all(|c| c.status == 200), "no call refused: {log:#?}");
    let changed = log
        .iter()
        .rposition(|c| c.user == MANAGER.0 && c.method == "crm.deal.update" && c.params["id"] == json!(ids[2]))
        .unwrap();
    let listed = log[changed..].iter().position(|c| c.user == HUB_USER && c.method == "crm.deal.list");
    let read = log[changed..]
        .iter()
        .rposition(|c| c.user == HUB_USER && c.method == "crm.deal.get" && c.params["id"] == json!(ids[2]));
    assert!(listed.is_some() && listed < read, "the catch-up found the change and the hub read it: {log:#?}");
    rig.stop().await;
}

/// The installers' smart process «Монтаж» (entityTypeId 1032 = hex 408,
/// its pipeline 5), bound beside the shipped set: a sale entering shipment
/// gets an installation child there, which may not be closed without the
/// act's number.
const INSTALLATION: &str = r#"
pipelines:
  installation: [new, in_progress, done]
stage_maps:
  b24-installation:
    pipeline: installation
    stages:
      "DT1032_5:NEW": new
      "DT1032_5:PREPARATION": in_progress
      "DT1032_5:SUCCESS": done
bindings:
  - name: b24-installation-items
    connector: bitrix24
    system: bitrix24
    record: item
    filter: "record.entityTypeId == 1032"
    id: ref
    parent: { from: parentId2 }
    stage: { from: stageId, map: b24-installation }
    fields:
      title: { from: title }
      responsible: { from: assignedById }
      custom.act_number: { from: ufCrm5ActNumber }
    create_with: { entityTypeId: "1032", categoryId: "5" }
flows:
  - name: order-installation
    when: { deal_enters: { pipeline: sales, stage: shipment } }
    then:
      - spawn_child:
          pipeline: installation
          stage: new
          responsible: { person: sidorov }
          title: "Монтаж: {{ deal.title }}"
  - name: installation-needs-act
    when: { deal_enters: { pipeline: installation, stage: done } }
    then:
      - guard:
          condition: "deal.custom.act_number is defined and deal.custom.act_number"
          message: "Монтаж не закрыть без номера акта: {{ deal.title }}"
"#;

/// The shipped mappings plus the installation smart process, in `root`.
fn installation_mappings(root: &std::path::Path) -> std::path::PathBuf {
    let dir = root.join("mappings");
    std::fs::create_dir_all(&dir).unwrap();
    let shipped = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("mappings");
    for entry in std::fs::read_dir(shipped).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "json") {
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(dir.join("installation.yaml"), INSTALLATION).unwrap();
    dir
}

#[tokio::test]
async fn a_child_in_a_smart_process_is_created_as_an_item_of_the_sale_and_moved_back_as_an_item() {
    let dir = tempfile::tempdir().unwrap();
    let mappings = installation_mappings(dir.path());
    let extra = format!("[mappings]\ndir = \"{}\"\n", mappings.display());
    let rig = Rig::start_with(&StoreKind::Sqlite, &BusUnderTest::Embedded, 0.0, 0, dir, &extra).await;
    let manager = rig.person(MANAGER);
    let installer = rig.person(INSTALLER);

    // 1. The manager's sale goes to «В работе» (shipment): the hub orders
    //    the installation as an item of the smart process, linked to the
    //    sale by `parentId2`.
    let sale = manager.deal_add(&fields(json!({"TITLE": "Насосная станция", "ASSIGNED_BY_ID": 7}))).await.unwrap();
    eventually("the hub knows the sale", Duration::from_secs(10), async || rig.canonical(&sale).await).await;
    manager.deal_update(&sale, &fields(json!({"STAGE_ID": "EXECUTING"}))).await.unwrap();
    hub_called(&rig, "the hub adds the installation item", |c| c.method == "crm.item.add").await;
    let log = rig.calls().await;
    let add = log.iter().find(|c| c.user == HUB_USER && c.method == "crm.item.add").unwrap();
    assert_eq!(add.params["entityTypeId"], json!(1032), "{add:#?}");
    let wanted = json!({"title": "Монтаж: Насосная станция", "stageId": "DT1032_5:NEW", "categoryId": "5",
                        "assignedById": "21", "parentId2": sale});
    for (key, value) in wanted.as_object().unwrap() {
        assert_eq!(&add.params["fields"][key], value, "`{key}` of {add:#?}");
    }
    assert!(!log.iter().any(|c| c.user == HUB_USER && c.method == "crm.deal.add"), "no deal for the item: {log:#?}");

    // 2. The hub knows the item by its code, as the child of the sale.
    let item = installer.item_list(1032, &json!({}), &["id"]).await.unwrap()[0]["id"].to_string();
    let code = format!("T408_{item}");
    let child =
        eventually("the item is the sale's child", Duration::from_secs(15), async || rig.canonical(&code).await).await;
    let canonical_sale = rig.canonical(&sale).await.unwrap();
    assert_eq!(child["parent_id"], canonical_sale["id"]);
    assert_eq!((child["pipeline"].as_str(), child["stage"].as_str()), (Some("installation"), Some("new")));
    assert_eq!(canonical_sale["children"].as_array().unwrap().len(), 1, "the item's own event adds no second child");

    // 3. The installer closes it without the act's number: the hub moves
    //    it back with `crm.item.update` of the smart process, never
    //    `crm.deal.update` of a deal with the item's id.
    installer.item_update(1032, &item, &fields(json!({"stageId": "DT1032_5:SUCCESS"}))).await.unwrap();
    let moved_back = |c: &CallRecord| {
        c.method == "crm.item.update"
            && c.params["id"] == json!(item)
            && c.params["fields"]["stageId"] == "DT1032_5:NEW"
    };
    hub_called(&rig, "the hub moves the item back", moved_back).await;
    let log = settled_calls(&rig, Duration::from_secs(2)).await;
    let update = log.iter().find(|c| c.user == HUB_USER && moved_back(c)).unwrap();
    assert_eq!(update.params["entityTypeId"], json!(1032), "{update:#?}");
    assert!(
        !log.iter().any(|c| c.user == HUB_USER && c.method == "crm.deal.update" && c.params["id"] == json!(item)),
        "{log:#?}"
    );
    assert_eq!(installer.item_get(1032, &item).await.unwrap()["stageId"], "DT1032_5:NEW");
    let told = log.iter().find(|c| c.user == HUB_USER && c.method == "im.notify.system.add").unwrap();
    assert_eq!(told.params["USER_ID"], "21", "the installer is told why: {told:#?}");
    let child = rig.canonical(&code).await.unwrap();
    assert_eq!(child["stage"], "new");
    assert!(log.iter().all(|c| c.status == 200), "no call failed: {log:#?}");
    rig.stop().await;
}
