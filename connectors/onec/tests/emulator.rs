//! The connector against its 1C test double over real HTTP: the OData
//! client's reads, writes, posting and error classes, the outbound half's
//! commands (with "already applied"), the catch-up, and the notifications
//! the double sends as a configured 1C would, accepted by the inbound half.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use dealbridge_connector_onec::catch_up::CatchUp;
use dealbridge_connector_onec::emulator::{self, CallRecord, EmulatorConfig, NotifyAuth, RunningEmulator};
use dealbridge_connector_onec::odata::{Query, query};
use dealbridge_connector_onec::{
    Credentials, InboundCredentials, ODataClient, OnecConfig, OnecInbound, OnecTarget, RecordKind,
};
use dealbridge_core::connector::{InboundConnector, InboundRequest, Reconciler};
use dealbridge_core::delivery::{AttemptContext, FailureClass, OutboundConnector, Performed};
use dealbridge_core::flow::{Command, CommandOp};
use serde_json::{Map, Value, json};

const PASSWORD: &str = "emulator-password";
const NOTIFY_TOKEN: &str = "notify-token-0001";
const MANAGER: &str = "5d2a2156-6c1e-11ee-8c99-0242ac120002";

/// What a stand-in hub received: `(authorization, body)`.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

async fn stand_in_hub() -> (String, Received) {
    let received: Received = Arc::default();
    let store = received.clone();
    let app = axum::Router::new().route(
        "/hooks/onec",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let store = store.clone();
            async move {
                let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                store.lock().unwrap().push((auth, body.to_vec()));
                axum::http::StatusCode::ACCEPTED
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/onec", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

async fn start(handler: Option<String>) -> RunningEmulator {
    let config = EmulatorConfig {
        handler: handler.map(|h| h.parse().unwrap()),
        notify_auth: NotifyAuth::Bearer(NOTIFY_TOKEN.into()),
        ..EmulatorConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    emulator::spawn(config, listener).unwrap()
}

fn client(emu: &RunningEmulator, password: &str) -> ODataClient {
    ODataClient::new(
        &emu.base_url(),
        Credentials::new("dealbridge", password),
        Duration::from_secs(5),
        Duration::from_secs(2),
    )
    .unwrap()
}

fn config(emu: &RunningEmulator) -> OnecConfig {
    serde_json::from_value(json!({
        "base_url": emu.base_url(), "user": "dealbridge", "password_env": "X", "notify_secret_env": "Y",
        "origin_field": "ИдентификаторИнтеграции"
    }))
    .unwrap()
}

fn object(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn command(op: CommandOp, key: &str) -> Command {
    Command {
        id: uuid::Uuid::new_v4(),
        idempotency_key: key.into(),
        connector: "onec".into(),
        system: "onec".into(),
        deal: None,
        cause_event: uuid::Uuid::new_v4(),
        flow: "test".into(),
        op,
    }
}

async fn calls(emu: &RunningEmulator) -> Vec<CallRecord> {
    reqwest::get(emu.control_url("calls")).await.unwrap().json().await.unwrap()
}

const INTERESTS: &str = "Document_CRM_Интерес";

#[tokio::test]
async fn odata_reads_and_writes_keep_guids_cyrillic_dates_and_amounts() {
    let emu = start(None).await;
    let odata = client(&emu, PASSWORD);
    let created = odata
        .create(
            INTERESTS,
            &object(
                json!({"Date": "2026-03-20T10:15:00", "Description": "Насосная станция «Север»", "Сценарий": "Продажа",
                "Этап": "Обращение", "СуммаДокумента": 1234567.89, "Ответственный_Key": MANAGER}),
            ),
        )
        .await
        .unwrap();
    let id = created["Ref_Key"].as_str().unwrap().to_owned();
    let read = odata.get(INTERESTS, &id).await.unwrap();
    assert_eq!(read["Description"], "Насосная станция «Север»");
    assert_eq!(read["Date"], "2026-03-20T10:15:00");
    assert_eq!(read["СуммаДокумента"].to_string(), "1234567.89");
    assert_eq!(read["Ответственный_Key"], MANAGER);

    for n in 0..4 {
        odata
            .create(INTERESTS, &object(json!({"Date": format!("2026-01-0{}T00:00:00", n + 1), "Сценарий": "Работы"})))
            .await
            .unwrap();
    }
    let filter = format!(
        "Date ge {} and Сценарий eq {}",
        query::datetime(chrono::NaiveDate::from_ymd_opt(2026, 1, 2).unwrap().and_hms_opt(0, 0, 0).unwrap()),
        query::string("Работы")
    );
    let (rows, complete) = odata
        .list_all(INTERESTS, &Query { orderby: Some("Date".into()), ..Query::filter(filter) }, 2, 10)
        .await
        .unwrap();
    assert!(complete);
    let dates: Vec<&str> = rows.iter().map(|r| r["Date"].as_str().unwrap()).collect();
    assert_eq!(dates, ["2026-01-02T00:00:00", "2026-01-03T00:00:00", "2026-01-04T00:00:00"]);
    let paged: Vec<String> = calls(&emu)
        .await
        .iter()
        .filter(|c| c.method == "GET" && c.resource == INTERESTS)
        .map(|c| c.query.clone())
        .collect();
    assert!(paged.iter().any(|q| q.contains("$top=2") && q.contains("$skip=2")), "{paged:?}");
    assert!(paged[0].contains("$filter=Date ge datetime'2026-01-02T00:00:00' and Сценарий eq 'Работы'"), "{paged:?}");

    // A stale DataVersion is refused (412), and retryable: read again.
    let stale = created["DataVersion"].as_str().unwrap();
    odata.update(INTERESTS, &id, &object(json!({"Этап": "Расчет"})), Some(stale)).await.unwrap();
    let err = odata.update(INTERESTS, &id, &object(json!({"Этап": "КП"})), Some(stale)).await.unwrap_err();
    assert_eq!((err.status, err.class), (Some(412), FailureClass::Retryable));
    emu.stop().await;
}

#[tokio::test]
async fn errors_arrive_classified_for_the_dispatcher() {
    let emu = start(None).await;
    let err = client(&emu, "wrong-password").list(INTERESTS, &Query::default()).await.unwrap_err();
    assert_eq!((err.status, err.class), (Some(401), FailureClass::Auth));
    assert!(!err.to_string().contains("wrong-password"));
    let odata = client(&emu, PASSWORD);
    let err = odata.get(INTERESTS, "8b9660f6-6332-11ec-ad72-000c29b45b09").await.unwrap_err();
    assert_eq!((err.class, err.code.as_deref()), (FailureClass::Permanent, Some("-1")));
    let err = odata.create("Document_ЗаказКлиента_Товары", &object(json!({"LineNumber": "1"}))).await.unwrap_err();
    assert_eq!((err.class, err.code.as_deref()), (FailureClass::Permanent, Some("13")));
    assert!(err.message.contains("табличной части"), "{err}");
    let fault = json!({"method": "GET", "resource": INTERESTS, "status": 503, "message": "Сервер перегружен", "retry_after": 9});
    reqwest::Client::new().post(emu.control_url("faults")).json(&fault).send().await.unwrap();
    let err = odata.list(INTERESTS, &Query::default()).await.unwrap_err();
    assert_eq!((err.class, err.retry_after), (FailureClass::RateLimited, Some(Duration::from_secs(9))));
    let fault = json!({"method": "POST", "resource": "Document_ЗаказКлиента(", "status": 500,
        "message": "Произошла внутренняя ошибка OData сервиса. Недостаточно товара на складе"});
    reqwest::Client::new().post(emu.control_url("faults")).json(&fault).send().await.unwrap();
    let order = odata.create("Document_ЗаказКлиента", &object(json!({"Date": "2026-03-20T00:00:00"}))).await.unwrap();
    let err = odata.post_document("Document_ЗаказКлиента", order["Ref_Key"].as_str().unwrap()).await.unwrap_err();
    assert_eq!((err.class, err.code.as_deref()), (FailureClass::Retryable, Some("-1")));
    assert!(err.to_string().contains("Недостаточно товара"), "{err}");
    emu.stop().await;
}

#[tokio::test]
async fn the_target_moves_interests_creates_children_orders_and_tasks_once() {
    let emu = start(None).await;
    let odata = client(&emu, PASSWORD);
    let target = OnecTarget::new(&config(&emu), client(&emu, PASSWORD)).unwrap();
    let parent = odata.create(INTERESTS, &object(json!({"Сценарий": "Продажа", "Этап": "Расчет"}))).await.unwrap();
    let parent_id = parent["Ref_Key"].as_str().unwrap().to_owned();
    let first = AttemptContext { attempt: 1, possibly_applied: false };
    let retry = AttemptContext { attempt: 2, possibly_applied: true };

    // The stage and a tabular section: written once, a repeat finds them there.
    let update = command(
        CommandOp::UpdateDeal {
            external_id: parent_id.clone(),
            stage: Some("РасчетГотов".into()),
            fields: BTreeMap::from([
                ("СуммаДокумента".into(), json!("245000.50")),
                (
                    "Услуги".into(),
                    json!([{"Наименование": "Монтаж", "Сумма": "200000"}, {"Наименование": "Пусконаладка", "Сумма": "45000.50"}]),
                ),
            ]),
        },
        "e1/calculation-ready/0.0/onec",
    );
    assert_eq!(target.perform(&update, first).await.unwrap(), Performed::Applied { created: None });
    assert_eq!(target.perform(&update, retry).await.unwrap(), Performed::AlreadyApplied { created: None });
    let stored = odata.get(INTERESTS, &parent_id).await.unwrap();
    assert_eq!(stored["Этап"], "РасчетГотов");
    assert_eq!(stored["СуммаДокумента"], json!(245000.5));
    assert_eq!(stored["Услуги"][1]["LineNumber"], "2");
    assert_eq!(stored["Услуги"][1]["Сумма"], json!(45000.5));

    // A child Interest: linked to its parent, created once however often retried.
    let create = command(
        CommandOp::CreateDeal {
            create: BTreeMap::from([("Сценарий".into(), "ИнженерныйРасчет".into())]),
            parent_external_id: Some(parent_id.clone()),
            stage: Some("Новый".into()),
            responsible: Some(MANAGER.into()),
            fields: BTreeMap::from([
                ("Description".into(), json!("Расчёт: Насосная станция")),
                ("Контрагент.Наименование".into(), json!("ООО")),
            ]),
            document: None,
        },
        "e1/engineer-calculation/0.0/onec",
    );
    let Performed::Applied { created: Some(child) } = target.perform(&create, first).await.unwrap() else { panic!() };
    assert_eq!((child.system.as_str(), child.instance.as_str()), ("onec", "onec"));
    let again = target.perform(&create, retry).await.unwrap();
    assert_eq!(again, Performed::AlreadyApplied { created: Some(child.clone()) });
    let stored = odata.get(INTERESTS, &child.id).await.unwrap();
    assert_eq!((stored["Основание_Key"].as_str(), stored["Этап"].as_str()), (Some(parent_id.as_str()), Some("Новый")));
    assert_eq!(stored["Ответственный_Key"], MANAGER);
    assert!(!stored.contains_key("Контрагент.Наименование"));
    let children =
        odata.list(INTERESTS, &Query::filter(format!("Основание_Key eq {}", query::guid(&parent_id)))).await.unwrap();
    assert_eq!(children.value.len(), 1, "a retry made no second child");

    // A customer order with its goods, posted.
    let order = command(
        CommandOp::CreateDeal {
            create: BTreeMap::from([
                ("odata.entity_set".into(), "Document_ЗаказКлиента".into()),
                ("odata.post".into(), "true".into()),
                ("Статус".into(), "КОбеспечению".into()),
            ]),
            parent_external_id: None,
            stage: None,
            responsible: None,
            fields: BTreeMap::from([(
                "Товары".into(),
                json!([{"Номенклатура_Key": "41aa6331-954f-11e3-814b-005056c00008", "Количество": "2", "Цена": "600.00", "Сумма": "1200.00"}]),
            )]),
            document: None,
        },
        "e2/won-creates-order/0.0/onec",
    );
    let Performed::Applied { created: Some(made) } = target.perform(&order, first).await.unwrap() else { panic!() };
    let stored = odata.get("Document_ЗаказКлиента", &made.id).await.unwrap();
    assert_eq!(stored["Posted"], json!(true));
    assert_eq!(stored["Товары"][0]["LineNumber"], "1");
    assert_eq!(stored["Товары"][0]["Сумма"], json!(1200.0));

    // A task about the Interest, and a message for a user through the HTTP service.
    let task = CommandOp::CreateTask {
        task: uuid::Uuid::new_v4(),
        external_id: Some(parent_id.clone()),
        title: "Сделку «Котёл» пытались закрыть как проигранную без причины".into(),
        description: String::new(),
        responsible: MANAGER.into(),
        deadline: Some(Utc::now()),
    };
    target.perform(&command(task, "e3/t/0/onec"), first).await.unwrap();
    let tasks = odata.list("Task_ЗадачаИсполнителя", &Query::default()).await.unwrap();
    assert_eq!(tasks.value[0]["Предмет"], json!(parent_id));
    assert_eq!(tasks.value[0]["Предмет_Type"], "StandardODATA.Document_CRM_Интерес");
    let notify =
        CommandOp::Notify {
            to: MANAGER.into(), text: "Расчёт готов".into(), external_id: Some(parent_id.clone())
        };
    target.perform(&command(notify, "e3/n/0/onec"), first).await.unwrap();
    let messages: Vec<Value> = reqwest::get(emu.control_url("messages")).await.unwrap().json().await.unwrap();
    assert_eq!(messages, [json!({"to": MANAGER, "text": "Расчёт готов", "interest": parent_id})]);

    // A gone Interest is permanent.
    let gone = command(
        CommandOp::UpdateDeal {
            external_id: "8b9660f6-6332-11ec-ad72-000c29b45b09".into(),
            stage: Some("КП".into()),
            fields: BTreeMap::new(),
        },
        "e4/x/0/onec",
    );
    assert_eq!(target.perform(&gone, first).await.unwrap_err().class, FailureClass::Permanent);
    emu.stop().await;
}

#[tokio::test]
async fn changes_are_notified_as_1c_would_and_the_catch_up_finds_the_rest_once() {
    let (hub, received) = stand_in_hub().await;
    let emu = start(Some(hub)).await;
    let odata = client(&emu, PASSWORD);
    let client_ref = odata
        .create("Catalog_Контрагенты", &object(json!({"Description": "ООО Ромашка", "ИНН": "7707083893"})))
        .await
        .unwrap();
    let interest = odata
        .create(
            INTERESTS,
            &object(json!({"Сценарий": "Продажа", "Этап": "Обращение", "Контрагент_Key": client_ref["Ref_Key"]})),
        )
        .await
        .unwrap();
    let id = interest["Ref_Key"].as_str().unwrap().to_owned();
    odata.update(INTERESTS, &id, &object(json!({"Этап": "Расчет"})), None).await.unwrap();
    let inbound = OnecInbound::new(InboundCredentials::new(None, NOTIFY_TOKEN).unwrap(), None);
    let started = std::time::Instant::now();
    while received.lock().unwrap().len() < 2 {
        assert!(started.elapsed() < Duration::from_secs(10), "notifications did not arrive");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = received.lock().unwrap().clone();
    let mut keys = Vec::new();
    for (auth, body) in &got {
        let mut headers = http::HeaderMap::new();
        headers.insert("authorization", auth.parse().unwrap());
        let verified = inbound.verify(&InboundRequest { headers: &headers, body, received_at: Utc::now() }).unwrap();
        keys.push(verified.delivery_key.unwrap());
    }
    let records = inbound.decode(&got[1].1, &[]).unwrap();
    assert_eq!(records[0].kind, "interest");
    assert_eq!(records[0].data["Этап"], "Расчет");
    assert_eq!(records[0].data["Контрагент"]["ИНН"], "7707083893", "references expanded as the HTTP service does");

    // The catch-up hands out what no notification brought, each version once.
    let catch_up = CatchUp::new(
        client(&emu, PASSWORD),
        vec![(RecordKind::Interest, INTERESTS.into())],
        Duration::from_secs(60),
        30,
    );
    let found = catch_up.reconcile(None).await.unwrap();
    assert_eq!(found.events.len(), 1, "the interest's latest version");
    assert_eq!(found.events[0].delivery_key, keys[1], "the same key as its notification: stored once");
    assert_eq!(inbound.decode(&found.events[0].body, &[]).unwrap()[0].data["Этап"], "Расчет");
    assert!(catch_up.reconcile(None).await.unwrap().events.is_empty());
    odata.update(INTERESTS, &id, &object(json!({"Этап": "КП"})), None).await.unwrap();
    assert_eq!(catch_up.reconcile(None).await.unwrap().events.len(), 1);
    emu.stop().await;
}
