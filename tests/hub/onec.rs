//! 1C end to end over real HTTP, against the 1C test double: the people
//! work in 1C:CRM (through OData, as their 1C client would write), 1C's
//! HTTP service notifies the hub of every change, and the hub writes back
//! through OData — stories S1 (engineer calculation and works as child
//! Interests) and S4 (the guards on `won` and `lost`, shipments from 1C:ERP
//! that win the deal).

use std::time::{Duration, Instant};

use dealbridge_connector_onec::emulator::{self, CallRecord, EmulatorConfig, NotifyAuth, RunningEmulator};
use dealbridge_connector_onec::odata::{Query, query};
use dealbridge_connector_onec::{Credentials, ODataClient};
use serde_json::{Map, Value, json};

use crate::support::*;

const PASSWORD: &str = "test-onec-password";
const NOTIFY_USER: &str = "crm-hook";
const NOTIFY_SECRET: &str = "test-onec-notify-secret";
pub(crate) const INTERESTS: &str = "Document_CRM_Интерес";
pub(crate) const ORDERS: &str = "Document_ЗаказКлиента";
const SHIPMENTS: &str = "Document_РеализацияТоваровУслуг";
const TASKS: &str = "Task_ЗадачаИсполнителя";
const ORIGIN_FIELD: &str = "ИдентификаторИнтеграции";

/// 1C user ids of the people in mappings/people.yaml.
const IVANOV: &str = "5d2a2156-6c1e-11ee-8c99-0242ac120002";
pub(crate) const SMIRNOVA: &str = "5d2a2264-6c1e-11ee-8c99-0242ac120002";
const PETROV: &str = "5d2a1f30-6c1e-11ee-8c99-0242ac120002";
const ENGINEERS: [&str; 2] = ["5d2a2480-6c1e-11ee-8c99-0242ac120002", "5d2a258e-6c1e-11ee-8c99-0242ac120002"];

/// The hub and the 1C double wired to each other.
pub(crate) struct Rig {
    pub(crate) hub: TestHub,
    emu: RunningEmulator,
    /// The people's 1C client: the same publication and user as the hub's.
    pub(crate) onec: ODataClient,
    dir: tempfile::TempDir,
}

impl Rig {
    pub(crate) async fn start(store: &StoreKind) -> Self {
        Self::start_with(store, 0, 0.0).await
    }

    /// With the catch-up every `catch_up_secs` (0: off), the double losing
    /// `drop_share` of its notifications.
    async fn start_with(store: &StoreKind, catch_up_secs: u64, drop_share: f64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}/trade", listener.local_addr().unwrap());
        let extra = format!(
            r#"
[connectors.onec]
kind = "onec"
base_url = "{base_url}"
user = "dealbridge"
password_env = "TEST_ONEC_PASSWORD"
notify_user = "{NOTIFY_USER}"
notify_secret_env = "TEST_ONEC_NOTIFY"
origin_field = "{ORIGIN_FIELD}"
timeout_secs = 5
catch_up_secs = {catch_up_secs}
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
        let env = [("TEST_ONEC_PASSWORD", PASSWORD.to_owned()), ("TEST_ONEC_NOTIFY", NOTIFY_SECRET.to_owned())];
        let hub = TestHub::start_with_env(dir.path(), store, &env).await;
        let config = EmulatorConfig {
            password: PASSWORD.into(),
            handler: Some(hub.url("/hooks/onec").parse().unwrap()),
            notify_auth: NotifyAuth::Basic { user: NOTIFY_USER.into(), password: NOTIFY_SECRET.into() },
            drop_share,
            ..EmulatorConfig::default()
        };
        let emu = emulator::spawn(config, listener).unwrap();
        let onec = ODataClient::new(
            &base_url,
            Credentials::new("dealbridge", PASSWORD),
            Duration::from_secs(5),
            Duration::from_secs(2),
        )
        .unwrap();
        Self { hub, emu, onec, dir }
    }

    /// The canonical deal carrying this `Ref_Key`, if the hub knows it.
    pub(crate) async fn canonical(&self, ref_key: &str) -> Option<Value> {
        let path = format!("/api/v1/deals?system=onec&instance=onec&external_id={ref_key}");
        let response = self.hub.get_with_token(&path, Some(VIEWER)).await;
        (response.status() == 200).then_some(())?;
        Some(response.json().await.unwrap())
    }

    pub(crate) async fn interest(&self, ref_key: &str) -> Map<String, Value> {
        self.onec.get(INTERESTS, ref_key).await.unwrap()
    }

    /// A person changes an Interest in 1C.
    async fn change(&self, ref_key: &str, changes: Value) {
        self.onec.update(INTERESTS, ref_key, changes.as_object().unwrap(), None).await.unwrap();
    }

    /// The Interests whose parent is `ref_key`.
    async fn children(&self, ref_key: &str) -> Vec<Map<String, Value>> {
        let filter = format!("Основание_Key eq {}", query::guid(ref_key));
        self.onec.list(INTERESTS, &Query::filter(filter)).await.unwrap().value
    }

    async fn calls(&self) -> Vec<CallRecord> {
        reqwest::get(self.emu.control_url("calls")).await.unwrap().json().await.unwrap()
    }

    /// What the hub told 1C users through the HTTP service.
    async fn messages(&self) -> Vec<Value> {
        reqwest::get(self.emu.control_url("messages")).await.unwrap().json().await.unwrap()
    }

    async fn tasks(&self) -> Vec<Map<String, Value>> {
        self.onec.list(TASKS, &Query::default()).await.unwrap().value
    }

    pub(crate) async fn stop(self) -> tempfile::TempDir {
        self.hub.stop().await;
        self.emu.stop().await;
        self.dir
    }
}

/// Polls `probe` until it gives a value, failing after 20 s.
pub(crate) async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the Interest's `field` holds `value` in 1C.
pub(crate) async fn until_field(rig: &Rig, what: &str, ref_key: &str, field: &str, value: Value) -> Map<String, Value> {
    eventually(what, async || {
        let interest = rig.interest(ref_key).await;
        (interest.get(field) == Some(&value)).then_some(interest)
    })
    .await
}

/// Waits until the hub has answered every change 1C notified and made
/// every call those led to: nothing new for a while.
pub(crate) async fn settled(rig: &Rig) {
    let quiet = Duration::from_millis(700);
    let mut last = rig.calls().await.len();
    let mut since = Instant::now();
    while since.elapsed() < quiet {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = rig.calls().await.len();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
}

pub(crate) fn text<'a>(object: &'a Map<String, Value>, key: &str) -> &'a str {
    object.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// A statement paying `amount` by `purpose`, as a bank exports it (UTF-8 here).
fn statement(amount: &str, purpose: &str) -> Vec<u8> {
    format!(
        "1CClientBankExchange\r\nВерсияФормата=1.03\r\nКодировка=Windows\r\nОтправитель=Банк\r\n\
         Получатель=1С:Предприятие\r\nДатаНачала=05.02.2026\r\nДатаКонца=05.02.2026\r\nРасчСчет=40702810900000002851\r\n\
         СекцияДокумент=Платежное поручение\r\nНомер=501\r\nДата=05.02.2026\r\nСумма={amount}\r\n\
         ПлательщикСчет=40702810000000074935\r\nПлательщик=ООО \"Ромашка\"\r\nПлательщикИНН=7707083893\r\n\
         ПолучательСчет=40702810900000002851\r\nПолучатель=ООО \"Станкопром\"\r\nПолучательИНН=7702070139\r\n\
         ДатаПоступило=05.02.2026\r\nНазначениеПлатежа={purpose}\r\nКонецДокумента\r\nКонецФайла\r\n"
    )
    .into_bytes()
}

/// S1, as the people of seed 000 do it in 1C:CRM.
async fn engineer_calculation(store: StoreKind) {
    let rig = Rig::start(&store).await;
    let onec = &rig.onec;

    // The manager's Interest, for a client of the catalog.
    let client = onec
        .create("Catalog_Контрагенты", json!({"Description": "ООО Ромашка", "ИНН": "7707083893"}).as_object().unwrap())
        .await
        .unwrap();
    let sale = onec
        .create(
            INTERESTS,
            json!({"Date": "2026-02-01T09:30:00", "Description": "Насосная станция", "Сценарий": "Продажа",
                   "Этап": "Обращение", "Ответственный_Key": IVANOV, "Контрагент_Key": client["Ref_Key"],
                   "Комментарий": "Две насосные станции для котельной"})
            .as_object()
            .unwrap(),
        )
        .await
        .unwrap();
    let sale = text(&sale, "Ref_Key").to_owned();
    let canonical = eventually("the hub knows the Interest", async || rig.canonical(&sale).await).await;
    assert_eq!((canonical["pipeline"].as_str(), canonical["stage"].as_str()), (Some("sales"), Some("new")));
    assert_eq!(canonical["client"]["name"], "ООО Ромашка");
    assert_eq!(canonical["client"]["inn"], "7707083893");
    assert_eq!(canonical["responsible"], "ivanov");

    // S1.1: to calculation — the hub creates the engineers' child Interest.
    rig.change(&sale, json!({"Этап": "Расчет"})).await;
    let calc = eventually("the hub creates the engineering Interest", async || rig.children(&sale).await.pop()).await;
    let calc_id = text(&calc, "Ref_Key").to_owned();
    assert_eq!(text(&calc, "Сценарий"), "ИнженерныйРасчет");
    assert_eq!(text(&calc, "Этап"), "Новый");
    assert_eq!(text(&calc, "Description"), "Расчёт: Насосная станция");
    assert_eq!(text(&calc, "Комментарий"), "Две насосные станции для котельной");
    assert!(ENGINEERS.contains(&text(&calc, "Ответственный_Key")), "{calc:?}");
    assert!(!text(&calc, ORIGIN_FIELD).is_empty(), "the create carries its origin id");
    let engineer = text(&calc, "Ответственный_Key").to_owned();

    // S1.2: the parent always shows its child's status.
    until_field(&rig, "the parent mirrors `new`", &sale, "СостояниеРасчета", json!("new")).await;
    let child = eventually("the child Interest is linked", async || rig.canonical(&calc_id).await).await;
    assert_eq!(child["parent_id"], canonical["id"]);
    settled(&rig).await;
    rig.change(&calc_id, json!({"Этап": "ВРаботе"})).await;
    until_field(&rig, "the parent mirrors `in_progress`", &sale, "СостояниеРасчета", json!("in_progress")).await;
    settled(&rig).await;

    // S1.3: the engineer completes it with services and amounts.
    rig.change(
        &calc_id,
        json!({"Этап": "Рассчитан", "СуммаДокумента": 245000.5, "Валюта": "RUB",
               "Услуги": [{"LineNumber": "1", "Наименование": "Монтаж", "Сумма": 200000},
                          {"LineNumber": "2", "Наименование": "Пусконаладка", "Сумма": 45000.5}]}),
    )
    .await;
    let parent = until_field(&rig, "the parent is `calculation_ready`", &sale, "Этап", json!("РасчетГотов")).await;
    assert_eq!(parent["СуммаДокумента"], json!(245000.5), "the total, exactly");
    let message = eventually("the manager is told", async || {
        rig.messages().await.into_iter().find(|m| m["text"].as_str().unwrap_or("").starts_with("Расчёт готов"))
    })
    .await;
    assert_eq!(message["to"], IVANOV);
    assert_eq!(message["interest"], json!(sale));
    assert_eq!(message["text"], "Расчёт готов: Насосная станция — 245000.5 RUB");
    settled(&rig).await;
    let canonical = rig.canonical(&sale).await.unwrap();
    assert_eq!(canonical["stage"], "calculation_ready");
    assert_eq!(canonical["custom_fields"]["services"], json!(["Монтаж", "Пусконаладка"]));
    assert_eq!(canonical["custom_fields"]["engineering_stage"], "calculated");
    assert_eq!(canonical["amount"], json!({"amount": "245000.5", "currency": "RUB"}));

    // S1.4: the client pays the invoice (S3) …
    rig.change(&sale, json!({"Этап": "Оплата"})).await;
    eventually("the deal waits for payment", async || {
        (rig.canonical(&sale).await?["stage"] == "payment").then_some(())
    })
    .await;
    let invoices = json!({"invoices": [{"number": "123", "date": "2026-02-02", "total": {"amount": "245000.50", "currency": "RUB"},
        "deal": {"system": "onec", "instance": "onec", "external_id": sale}, "client": {"name": "ООО Ромашка", "inn": "7707083893"}}]});
    let response = rig
        .hub
        .client
        .post(rig.hub.url("/api/v1/invoices"))
        .bearer_auth(ACCOUNTANT)
        .json(&invoices)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = rig
        .hub
        .client
        .post(rig.hub.url("/api/v1/statements?file_name=kl_to_1c.txt"))
        .bearer_auth(ACCOUNTANT)
        .body(statement("245000.50", "Оплата по счету № 123 от 02.02.2026, НДС не облагается"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    until_field(&rig, "full payment moves the Interest to shipment", &sale, "Этап", json!("Отгрузка")).await;
    let task = eventually("the manager's task is in 1C", async || {
        rig.tasks().await.into_iter().find(|t| text(t, "Description") == "Оформить реализацию товаров")
    })
    .await;
    assert_eq!((text(&task, "Исполнитель_Key"), text(&task, "Предмет")), (IVANOV, sale.as_str()));
    settled(&rig).await;

    // … and the manager orders the works: a Works child for the engineers.
    rig.change(&sale, json!({"Этап": "Работы"})).await;
    let works = eventually("the hub creates the works Interest", async || {
        rig.children(&sale).await.into_iter().find(|c| text(c, "Сценарий") == "Работы")
    })
    .await;
    let works_id = text(&works, "Ref_Key").to_owned();
    assert_eq!((text(&works, "Этап"), text(&works, "Description")), ("Новый", "Работы: Насосная станция"));
    eventually("the works Interest is linked", async || rig.canonical(&works_id).await).await;
    settled(&rig).await;
    rig.change(&works_id, json!({"Этап": "ВРаботе"})).await;
    until_field(&rig, "the parent mirrors the works", &sale, "СостояниеРабот", json!("in_progress")).await;
    settled(&rig).await;
    rig.change(&works_id, json!({"Этап": "Выполнен"})).await;
    until_field(&rig, "the parent moves to `act`", &sale, "Этап", json!("Акт")).await;
    eventually("the manager is told to issue the act", async || {
        rig.messages().await.into_iter().find(|m| m["text"].as_str().unwrap_or("").contains("оформите акт"))
    })
    .await;
    settled(&rig).await;

    // One child of each kind however many notifications came back.
    let children = rig.children(&sale).await;
    assert_eq!(children.len(), 2, "{children:?}");

    // S1.5: who calculated, how long each stage took, what price.
    let deal_id = rig.canonical(&sale).await.unwrap()["id"].as_str().unwrap().to_owned();
    let response = rig.hub.get_with_token(&format!("/api/v1/deals/{deal_id}/trace"), Some(VIEWER)).await;
    let trace: Value = response.json().await.unwrap();
    let stages: Vec<&str> = trace["stages"].as_array().unwrap().iter().map(|s| s["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, ["new", "calculation", "calculation_ready", "payment", "shipment", "works", "act"]);
    let engineering = trace["children"].as_array().unwrap().iter().find(|c| c["pipeline"] == "engineering").unwrap();
    let who = engineering["responsible"].as_str().unwrap().to_owned();
    assert!(["sidorov", "kuznetsova"].contains(&who.as_str()), "{engineering}");
    assert_eq!(
        if who == "sidorov" { ENGINEERS[0] } else { ENGINEERS[1] },
        engineer,
        "the engineer in 1C is the one the hub assigned"
    );
    let dir = rig.stop().await;
    if matches!(store, StoreKind::Sqlite) {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dealbridge"))
            .arg("--config")
            .arg(dir.path().join("dealbridge.toml"))
            .args(["explain", &deal_id])
            .env_clear()
            .envs(test_env(&store))
            .env("TEST_ONEC_PASSWORD", PASSWORD)
            .env("TEST_ONEC_NOTIFY", NOTIFY_SECRET)
            .output()
            .unwrap();
        let explained = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{explained}{}", String::from_utf8_lossy(&out.stderr));
        assert!(explained.contains("amount:      245000.5 RUB"), "{explained}");
        assert!(
            explained.contains(&format!("engineering/calculated «Расчёт: Насосная станция», responsible {who}")),
            "{explained}"
        );
        assert!(explained.contains("sales/calculation_ready"), "{explained}");
        assert!(explained.contains("in onec (onec): "), "{explained}");
    }
}

#[tokio::test]
async fn s1_engineer_calculation_through_1c_on_sqlite() {
    engineer_calculation(StoreKind::Sqlite).await;
}

#[tokio::test]
async fn s1_engineer_calculation_through_1c_on_postgres() {
    let Some((store, _db)) = postgres("onec_s1").await else { return };
    engineer_calculation(store).await;
}

/// S4's guards, as the managers of seed 001 meet them in 1C:CRM.
async fn closing_guards(store: StoreKind) {
    let rig = Rig::start(&store).await;
    let interest = |title: &str, manager: &str| json!({"Description": title, "Сценарий": "Продажа", "Этап": "Отгрузка", "Ответственный_Key": manager});
    let boiler = rig.onec.create(INTERESTS, interest("Котёл", SMIRNOVA).as_object().unwrap()).await.unwrap();
    let boiler = text(&boiler, "Ref_Key").to_owned();
    let burner = rig.onec.create(INTERESTS, interest("Горелка", IVANOV).as_object().unwrap()).await.unwrap();
    let burner = text(&burner, "Ref_Key").to_owned();
    for id in [&boiler, &burner] {
        eventually("the hub knows the Interest", async || rig.canonical(id).await).await;
    }

    // A manual `won` without full payment and shipment is moved back, with the reason.
    rig.change(&boiler, json!({"Этап": "ИнтересЗакрыт"})).await;
    until_field(&rig, "`won` is refused", &boiler, "Этап", json!("Отгрузка")).await;
    let told = eventually("the manager is told why", async || {
        rig.messages()
            .await
            .into_iter()
            .find(|m| m["text"].as_str().unwrap_or("").contains("нельзя закрыть как выигранную"))
    })
    .await;
    assert_eq!((told["to"].as_str(), told["interest"].as_str()), (Some(SMIRNOVA), Some(boiler.as_str())));
    assert!(told["text"].as_str().unwrap().contains("Котёл"), "{told}");

    // `lost` without a reason is refused and the supervisor gets a task in 1C.
    rig.change(&burner, json!({"Этап": "ИнтересПотерян", "ПричинаПроигрыша": "  "})).await;
    until_field(&rig, "`lost` without a reason is refused", &burner, "Этап", json!("Отгрузка")).await;
    let task = eventually("the supervisor's task", async || {
        rig.tasks()
            .await
            .into_iter()
            .find(|t| text(t, "Description").contains("пытались закрыть как проигранную без причины"))
    })
    .await;
    assert_eq!((text(&task, "Исполнитель_Key"), text(&task, "Предмет")), (PETROV, burner.as_str()));
    assert_eq!(text(&task, "Предмет_Type"), "StandardODATA.Document_CRM_Интерес");
    eventually("the manager is asked for the reason", async || {
        rig.messages()
            .await
            .into_iter()
            .find(|m| m["text"].as_str().unwrap_or("").contains("Укажите причину проигрыша сделки «Горелка»"))
    })
    .await;
    settled(&rig).await;

    // With a reason it stays lost and waits for the supervisor's approval.
    rig.change(&burner, json!({"Этап": "ИнтересПотерян", "ПричинаПроигрыша": "Дорого"})).await;
    eventually("the supervisor is asked to approve", async || {
        rig.tasks().await.into_iter().find(|t| text(t, "Description") == "Подтвердите проигрыш «Горелка»: Дорого")
    })
    .await;
    settled(&rig).await;
    assert_eq!(text(&rig.interest(&burner).await, "Этап"), "ИнтересПотерян");
    assert_eq!(rig.canonical(&burner).await.unwrap()["stage"], "lost");
    rig.stop().await;
}

#[tokio::test]
async fn s4_guards_on_won_and_lost_through_1c_on_sqlite() {
    closing_guards(StoreKind::Sqlite).await;
}

#[tokio::test]
async fn s4_guards_on_won_and_lost_through_1c_on_postgres() {
    let Some((store, _db)) = postgres("onec_s4").await else { return };
    closing_guards(store).await;
}

/// S4.1 as 1C:ERP tells it: the customer order of an Interest, the client's
/// payment against it, then shipments («Реализация товаров и услуг»); when
/// the shipments cover the whole order the deal is won, and the Interest in
/// 1C:CRM follows.
async fn shipments_covering_the_order_win_the_deal(store: StoreKind) {
    let rig = Rig::start(&store).await;
    let onec = &rig.onec;
    let client = onec
        .create("Catalog_Контрагенты", json!({"Description": "ООО Тепло", "ИНН": "7707083893"}).as_object().unwrap())
        .await
        .unwrap();
    let sale = onec
        .create(
            INTERESTS,
            json!({"Description": "Котёл", "Сценарий": "Продажа", "Этап": "Оплата", "Ответственный_Key": SMIRNOVA,
                   "Контрагент_Key": client["Ref_Key"]})
            .as_object()
            .unwrap(),
        )
        .await
        .unwrap();
    let sale = text(&sale, "Ref_Key").to_owned();
    eventually("the hub knows the Interest", async || rig.canonical(&sale).await).await;

    // The order, posted: what the deal has to ship.
    let order = onec
        .create(
            ORDERS,
            json!({"Сделка_Key": sale, "Контрагент_Key": client["Ref_Key"], "СуммаДокумента": 150000.5,
                   "Валюта": "RUB",
                   "Товары": [{"Номенклатура": "Котёл КВ-150", "Количество": 1, "Сумма": 150000.5}]})
            .as_object()
            .unwrap(),
        )
        .await
        .unwrap();
    let order = text(&order, "Ref_Key").to_owned();
    onec.post_document(ORDERS, &order).await.unwrap();
    settled(&rig).await;

    // The client pays; the accountant posts the bank receipt for the order.
    pay_order_in_1c(onec, &order, 150000.5, "512").await;
    until_field(&rig, "full payment moves the Interest to shipment", &sale, "Этап", json!("Отгрузка")).await;
    settled(&rig).await;

    // A first shipment covers two thirds: the deal waits.
    let ship = async |amount: f64| {
        let shipment = onec
            .create(
                SHIPMENTS,
                json!({"ЗаказКлиента_Key": order, "Контрагент_Key": client["Ref_Key"], "СуммаДокумента": amount,
                       "Валюта": "RUB"})
                .as_object()
                .unwrap(),
            )
            .await
            .unwrap();
        let shipment = text(&shipment, "Ref_Key").to_owned();
        onec.post_document(SHIPMENTS, &shipment).await.unwrap();
        shipment
    };
    let first = ship(100000.0).await;
    settled(&rig).await;
    // Reposted (1C re-sends it): still counted once.
    onec.post_document(SHIPMENTS, &first).await.unwrap();
    settled(&rig).await;
    assert_eq!(text(&rig.interest(&sale).await, "Этап"), "Отгрузка");
    assert_eq!(rig.canonical(&sale).await.unwrap()["stage"], "shipment");

    // The rest ships: 100 % of the order, the deal is won.
    ship(50000.5).await;
    until_field(&rig, "the shipments win the Interest", &sale, "Этап", json!("ИнтересЗакрыт")).await;
    settled(&rig).await;
    let canonical = rig.canonical(&sale).await.unwrap();
    assert_eq!(canonical["stage"], "won");
    let deal_id = canonical["id"].as_str().unwrap();
    let trace = rig.hub.get_with_token(&format!("/api/v1/deals/{deal_id}/trace"), Some(VIEWER)).await;
    let trace = trace.text().await.unwrap();
    assert!(trace.contains("ships 50000.5 RUB of order № "), "{trace}");
    assert!(trace.contains("150000.5 RUB of 150000.5 RUB shipped"), "{trace}");
    assert_eq!(trace.matches("\"shipment_observed\"").count(), 2, "the reposted shipment changed nothing: {trace}");
    assert!(!trace.contains("нельзя закрыть как выигранную"), "paid and shipped: the guard lets it through");
    rig.stop().await;
}

#[tokio::test]
async fn s4_shipments_covering_the_order_win_the_deal_on_sqlite() {
    shipments_covering_the_order_win_the_deal(StoreKind::Sqlite).await;
}

#[tokio::test]
async fn s4_shipments_covering_the_order_win_the_deal_on_postgres() {
    let Some((store, _db)) = postgres("onec_s4_shipments").await else { return };
    shipments_covering_the_order_win_the_deal(store).await;
}

/// 1C never repeats a notification it failed to send: the catch-up reads
/// OData and the changes still move the deal. Requests that are not 1C's
/// are refused before anything is stored.
async fn lost_notifications_are_caught_up(store: StoreKind) {
    let rig = Rig::start_with(&store, 1, 1.0).await;
    let sale = rig
        .onec
        .create(
            INTERESTS,
            json!({"Description": "Станки", "Сценарий": "Продажа", "Этап": "Обращение", "Ответственный_Key": IVANOV})
                .as_object()
                .unwrap(),
        )
        .await
        .unwrap();
    let sale = text(&sale, "Ref_Key").to_owned();
    let canonical = eventually("the catch-up brings the Interest", async || rig.canonical(&sale).await).await;
    assert_eq!(canonical["title"], "Станки");
    rig.change(&sale, json!({"Этап": "Расчет"})).await;
    let calc =
        eventually("the caught-up move spawns the engineers' Interest", async || rig.children(&sale).await.pop()).await;
    assert_eq!(text(&calc, "Сценарий"), "ИнженерныйРасчет");
    let sent: Vec<Value> = reqwest::get(rig.emu.control_url("notifications")).await.unwrap().json().await.unwrap();
    assert!(!sent.is_empty() && sent.iter().all(|n| n["dropped"] == true), "every notification was lost");
    settled(&rig).await;
    assert_eq!(rig.children(&sale).await.len(), 1, "found again by later passes, still one child");

    // Wrong credentials: 401; a body that is no notification: 400 naming the field.
    let hook = rig.hub.url("/hooks/onec");
    let body = json!({"message_id": "m-1", "kind": "interest", "object": {"Ref_Key": sale}}).to_string();
    let wrong =
        rig.hub.client.post(&hook).basic_auth(NOTIFY_USER, Some("guess")).body(body.clone()).send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let bearer = rig.hub.client.post(&hook).bearer_auth(NOTIFY_SECRET).body(body).send().await.unwrap();
    assert_eq!(bearer.status(), 401, "this instance takes Basic");
    let garbage = json!({"message_id": "m-2", "kind": "interest", "object": {"Ref_Key": "42"}}).to_string();
    let refused =
        rig.hub.client.post(&hook).basic_auth(NOTIFY_USER, Some(NOTIFY_SECRET)).body(garbage).send().await.unwrap();
    assert_eq!(refused.status(), 400);
    let message = refused.text().await.unwrap();
    assert!(message.contains("object.Ref_Key") && message.contains("not a GUID"), "{message}");
    rig.stop().await;
}

#[tokio::test]
async fn lost_notifications_are_caught_up_on_sqlite() {
    lost_notifications_are_caught_up(StoreKind::Sqlite).await;
}

#[tokio::test]
async fn lost_notifications_are_caught_up_on_postgres() {
    let Some((store, _db)) = postgres("onec_catch_up").await else { return };
    lost_notifications_are_caught_up(store).await;
}

/// A write 1C refuses for good parks the deal with 1C's own reason; once
/// the cause is fixed an admin retries it and the deal goes on.
async fn a_refused_write_parks_with_the_reason_and_is_retried(store: StoreKind) {
    let rig = Rig::start(&store).await;
    let sale = rig
        .onec
        .create(
            INTERESTS,
            json!({"Description": "Котельная", "Сценарий": "Продажа", "Этап": "Обращение", "Ответственный_Key": IVANOV})
                .as_object()
                .unwrap(),
        )
        .await
        .unwrap();
    let sale = text(&sale, "Ref_Key").to_owned();
    eventually("the hub knows the Interest", async || rig.canonical(&sale).await).await;
    let fault = json!({"method": "POST", "resource": INTERESTS, "status": 400,
        "message": "Не заполнено поле «Организация»"});
    reqwest::Client::new().post(rig.emu.control_url("faults")).json(&fault).send().await.unwrap();
    rig.change(&sale, json!({"Этап": "Расчет"})).await;

    let refused = eventually("the child's create is given up", async || {
        for state in ["parked", "dead"] {
            let path = format!("/api/v1/deliveries?state={state}");
            let list: Value = rig.hub.get_with_token(&path, Some(VIEWER)).await.json().await.unwrap_or(Value::Null);
            let found = list["deliveries"].as_array().and_then(|d| d.iter().find(|d| d["last_class"] == "permanent"));
            if let Some(found) = found {
                return Some(found.clone());
            }
        }
        None
    })
    .await;
    let error = refused["last_error"].as_str().unwrap();
    assert!(error.contains("HTTP 400 (odata.error -1): Не заполнено поле «Организация»"), "{refused}");
    assert!(error.contains("POST Document_CRM_Интерес"), "{refused}");
    assert!(rig.children(&sale).await.is_empty());

    let id = refused["command_id"].as_str().unwrap();
    let retried = rig
        .hub
        .client
        .post(rig.hub.url(&format!("/api/v1/deliveries/{id}/retry")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert!(retried.status().is_success(), "{}", retried.text().await.unwrap());
    let calc = eventually("the retried create makes the child", async || rig.children(&sale).await.pop()).await;
    assert_eq!(text(&calc, "Сценарий"), "ИнженерныйРасчет");
    rig.stop().await;
}

#[tokio::test]
async fn a_refused_write_parks_with_the_reason_and_is_retried_on_sqlite() {
    a_refused_write_parks_with_the_reason_and_is_retried(StoreKind::Sqlite).await;
}
