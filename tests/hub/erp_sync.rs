//! Story S8 over real HTTP, between two systems: a deal the manager wins
//! in the Bitrix24 emulator is ordered in the 1C double (the hub creates
//! and posts the customer order, linked to the deal by its `Ref_Key`), and
//! what 1C reports paid against that order appears on the Bitrix24 deal.

use std::time::{Duration, Instant};

use dealbridge_connector_bitrix24::RestClient;
use dealbridge_connector_bitrix24::WebhookUrl;
use dealbridge_connector_bitrix24::emulator::{self as b24, RunningEmulator as Portal};
use dealbridge_connector_onec::emulator::{self as onec, NotifyAuth, RunningEmulator as Infobase};
use dealbridge_connector_onec::odata::Query;
use dealbridge_connector_onec::{Credentials, ODataClient};
use serde_json::{Map, Value, json};

use crate::support::*;

const B24_TOKEN: &str = "test-b24-application-token";
const HUB_USER: u64 = 1;
const MANAGER: (u64, &str) = (7, "manager-webhook");
const ONEC_PASSWORD: &str = "test-onec-password";
const NOTIFY_USER: &str = "crm-hook";
const NOTIFY_SECRET: &str = "test-onec-notify-secret";
const ORDERS: &str = "Document_ЗаказКлиента";

/// The hub wired to the portal and to the infobase.
struct Rig {
    hub: TestHub,
    portal: Portal,
    infobase: Infobase,
    /// The manager's incoming webhook into the portal.
    manager: RestClient,
    /// The accountant's 1C client.
    onec: ODataClient,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn start(store: &StoreKind) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let portal_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let onec_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let onec_url = format!("http://{}/trade", onec_listener.local_addr().unwrap());
        let extra = format!(
            r#"
[connectors.bitrix24]
kind = "bitrix24"
webhook_url_env = "TEST_B24_WEBHOOK_URL"
application_token_env = "TEST_B24_APP_TOKEN"
timeout_secs = 5
catch_up_secs = 0
[connectors.onec]
kind = "onec"
base_url = "{onec_url}"
user = "dealbridge"
password_env = "TEST_ONEC_PASSWORD"
notify_user = "{NOTIFY_USER}"
notify_secret_env = "TEST_ONEC_NOTIFY"
origin_field = "ИдентификаторИнтеграции"
timeout_secs = 5
catch_up_secs = 0
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
        );
        write_config(dir.path(), store, &extra);
        let mut portal_config = b24::EmulatorConfig {
            webhook_user: HUB_USER,
            user_webhooks: vec![(MANAGER.0, MANAGER.1.into())],
            application_token: B24_TOKEN.into(),
            ..b24::EmulatorConfig::default()
        };
        let portal_addr = portal_listener.local_addr().unwrap();
        let webhook = format!("http://{portal_addr}/rest/{HUB_USER}/{}/", portal_config.webhook_code);
        let env = [
            ("TEST_B24_WEBHOOK_URL", webhook),
            ("TEST_B24_APP_TOKEN", B24_TOKEN.to_owned()),
            ("TEST_ONEC_PASSWORD", ONEC_PASSWORD.to_owned()),
            ("TEST_ONEC_NOTIFY", NOTIFY_SECRET.to_owned()),
        ];
        let hub = TestHub::start_with_env(dir.path(), store, &env).await;
        portal_config.handler = Some(hub.url("/hooks/bitrix24").parse().unwrap());
        let portal = b24::spawn(portal_config, portal_listener).unwrap();
        let onec_config = onec::EmulatorConfig {
            password: ONEC_PASSWORD.into(),
            handler: Some(hub.url("/hooks/onec").parse().unwrap()),
            notify_auth: NotifyAuth::Basic { user: NOTIFY_USER.into(), password: NOTIFY_SECRET.into() },
            ..onec::EmulatorConfig::default()
        };
        let infobase = onec::spawn(onec_config, onec_listener).unwrap();
        let manager_url =
            WebhookUrl::parse(&format!("http://{portal_addr}/rest/{}/{}/", MANAGER.0, MANAGER.1)).unwrap();
        let manager = RestClient::new(manager_url, Duration::from_secs(5), Duration::from_secs(2)).unwrap();
        let credentials = Credentials::new("dealbridge", ONEC_PASSWORD);
        let onec = ODataClient::new(&onec_url, credentials, Duration::from_secs(5), Duration::from_secs(2)).unwrap();
        Self { hub, portal, infobase, manager, onec, _dir: dir }
    }

    /// The canonical deal carrying this id in an instance, if the hub knows it.
    async fn canonical(&self, instance: &str, id: &str) -> Option<Value> {
        let path = format!("/api/v1/deals?system={instance}&instance={instance}&external_id={id}");
        let response = self.hub.get_with_token(&path, Some(VIEWER)).await;
        (response.status() == 200).then_some(())?;
        Some(response.json().await.unwrap())
    }

    async fn stop(self) {
        self.hub.stop().await;
        self.portal.stop().await;
        self.infobase.stop().await;
    }
}

/// Polls `probe` until it gives a value, failing after 20 s. Slowly: a
/// probe of the portal spends the manager's request budget (a refused
/// read is "not yet").
async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn fields(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn text<'a>(object: &'a Map<String, Value>, key: &str) -> &'a str {
    object.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn text_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// A field holding a number, as text or as a number.
fn number(object: &Map<String, Value>, key: &str) -> Option<f64> {
    match object.get(key)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

async fn won_deal_is_ordered_in_1c_and_shows_what_1c_was_paid(store: StoreKind) {
    let rig = Rig::start(&store).await;

    // The manager invoices the client in Bitrix24 …
    let deal = rig
        .manager
        .deal_add(&fields(json!({"TITLE": "Котёл", "CATEGORY_ID": 0, "ASSIGNED_BY_ID": 7,
                                 "STAGE_ID": "PREPAYMENT_INVOICE", "OPPORTUNITY": "150000.50", "CURRENCY_ID": "RUB",
                                 "UF_CRM_CLIENT_NAME": "ООО Тепло"})))
        .await
        .unwrap();
    let canonical = eventually("the hub knows the deal", async || rig.canonical("bitrix24", &deal).await).await;
    assert_eq!(canonical["stage"], "payment");

    // … and marks it won: the client agreed, nothing is paid or shipped yet.
    rig.manager.deal_update(&deal, &fields(json!({"STAGE_ID": "WON"}))).await.unwrap();

    // The customer order appears in 1C, posted, for the deal's amount.
    let order = eventually("the hub creates the customer order in 1C", async || {
        rig.onec.list(ORDERS, &Query::default()).await.unwrap().value.into_iter().next()
    })
    .await;
    let order_key = text(&order, "Ref_Key").to_owned();
    assert_eq!(order["СуммаДокумента"], json!(150000.5));
    assert_eq!(text(&order, "Валюта"), "RUB");
    assert_eq!(text(&order, "Комментарий"), "Сделка «Котёл»");
    let posted = eventually("the order is posted", async || {
        let order = rig.onec.get(ORDERS, &order_key).await.unwrap();
        (order.get("Posted") == Some(&json!(true))).then_some(order)
    })
    .await;
    assert_eq!(rig.onec.list(ORDERS, &Query::default()).await.unwrap().value.len(), 1, "one order: {posted:?}");

    // The order is the deal's record in 1C; the won waits for payment and shipment.
    let linked = eventually("the order is linked to the deal", async || rig.canonical("onec", &order_key).await).await;
    assert_eq!(linked["id"], canonical["id"]);
    let back = eventually("the deal goes back to payment in Bitrix24", async || {
        let deal = rig.manager.deal_get(&deal).await.ok()?;
        (text(&deal, "STAGE_ID") == "PREPAYMENT_INVOICE").then_some(deal)
    })
    .await;
    assert_eq!(number(&back, "UF_CRM_PAID_TOTAL"), None, "nothing paid yet");

    // The client pays in full; the accountant posts the bank receipt in 1C.
    pay_order_in_1c(&rig.onec, &order_key, 150000.5, "311").await;
    let shown = eventually("the paid amount appears on the Bitrix24 deal", async || {
        let deal = rig.manager.deal_get(&deal).await.ok()?;
        number(&deal, "UF_CRM_PAID_TOTAL").is_some().then_some(deal)
    })
    .await;
    assert_eq!(number(&shown, "UF_CRM_PAID_TOTAL"), Some(150000.5), "{shown:?}");
    let shipping = eventually("full payment moves the deal to shipment", async || {
        let deal = rig.manager.deal_get(&deal).await.ok()?;
        (text(&deal, "STAGE_ID") == "EXECUTING").then_some(deal)
    })
    .await;
    assert_eq!(text(&shipping, "TITLE"), "Котёл");

    // The order is the deal's document, not the deal: the deal's stage
    // moves went to Bitrix24 only, and nothing was sent to 1C as if the
    // order were an Interest (a write there would fail and dead-letter).
    let linked = rig.canonical("onec", &order_key).await.unwrap();
    let order_ref = linked["external_refs"].as_array().unwrap().iter().find(|r| r["id"] == order_key.as_str());
    assert_eq!(order_ref.unwrap()["document"], "customer_order", "{linked}");
    let calls: Vec<Value> = reqwest::get(rig.infobase.control_url("calls")).await.unwrap().json().await.unwrap();
    let refused: Vec<&Value> = calls.iter().filter(|c| c["status"].as_u64().unwrap_or(0) >= 400).collect();
    assert!(refused.is_empty(), "1C refused calls: {refused:?}");
    let hub_writes = calls.iter().filter(|c| c["method"] != "GET" && !text_of(c, "resource").contains("Поступление"));
    let elsewhere: Vec<&Value> = hub_writes.filter(|c| !text_of(c, "resource").starts_with(ORDERS)).collect();
    assert!(elsewhere.is_empty(), "the hub wrote only the order to 1C: {elsewhere:?}");
    for state in ["parked", "dead"] {
        let path = format!("/api/v1/deliveries?state={state}");
        let list: Value = rig.hub.get_with_token(&path, Some(VIEWER)).await.json().await.unwrap();
        assert_eq!(list["deliveries"].as_array().map_or(0, Vec::len), 0, "{state}: {list}");
    }
    rig.stop().await;
}

#[tokio::test]
async fn s8_won_deal_is_ordered_in_1c_and_shows_what_1c_was_paid_on_sqlite() {
    won_deal_is_ordered_in_1c_and_shows_what_1c_was_paid(StoreKind::Sqlite).await;
}

#[tokio::test]
async fn s8_won_deal_is_ordered_in_1c_and_shows_what_1c_was_paid_on_postgres() {
    let Some((store, _db)) = postgres("erp_sync_s8").await else { return };
    won_deal_is_ordered_in_1c_and_shows_what_1c_was_paid(store).await;
}
