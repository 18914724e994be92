//! Story S3 over HTTP: bank statements move deals. A deal waits in
//! `payment` with its invoice; the accountant uploads a statement with a
//! partial payment and the manager's task reaches the CRM double; a second
//! statement completes the payment, the deal moves to `shipment` and the
//! task «Оформить реализацию товаров» goes out; uploading either file
//! again, or a statement overlapping both, changes nothing. An unmatched
//! payment waits in the review queue until it is matched by hand; a broken
//! file is rejected whole.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use dealbridge_connector_http::SigningSecret;
use serde_json::{Value, json};

use crate::support::*;

/// The CRM double: verifies each command's signature and keeps its body.
#[derive(Clone, Default)]
struct Crm {
    commands: Arc<Mutex<Vec<Value>>>,
}

async fn receive(State(crm): State<Crm>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let secret = SigningSecret::parse(SECRET).unwrap();
    if !secret.verify(&header("webhook-id"), &header("webhook-timestamp"), &body, &header("webhook-signature")) {
        return (StatusCode::UNAUTHORIZED, "bad signature".into());
    }
    crm.commands.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
    (StatusCode::OK, "{}".into())
}

impl Crm {
    async fn start() -> (Self, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let crm = Self::default();
        let app = axum::Router::new().route("/commands", axum::routing::post(receive)).with_state(crm.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (crm, addr)
    }

    fn all(&self) -> Vec<Value> {
        self.commands.lock().unwrap().clone()
    }

    /// Waits until a command satisfies `wanted`.
    async fn wait_for(&self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..400 {
            if let Some(found) = self.all().into_iter().find(|c| wanted(c)) {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the CRM never received {what}; it got {:#?}", self.all());
    }
}

/// The shipped mappings plus a binding of the generic webhook onto the
/// sales pipeline, its `payment` and `shipment` stages included.
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
    std::fs::write(
        dir.join("http.yaml"),
        r#"# yaml-language-server: $schema=./schema.json
stage_maps:
  http-sales:
    pipeline: sales
    stages: { new: new, payment: payment, shipment: shipment }
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
"#,
    )
    .unwrap();
    let people = std::fs::read_to_string(dir.join("people.yaml")).unwrap();
    let people = people.replace(r#"ids: { bitrix24: "7","#, r#"ids: { http: "7", bitrix24: "7","#);
    std::fs::write(dir.join("people.yaml"), people).unwrap();
    dir
}

const OUR_ACCOUNT: &str = "40702810900000002851";

/// One incoming payment document of a 1CClientBankExchange statement.
fn document(number: &str, date: &str, amount: &str, payer_inn: &str, purpose: &str) -> String {
    format!(
        "СекцияДокумент=Платежное поручение\r\nНомер={number}\r\nДата={date}\r\nСумма={amount}\r\n\
         ПлательщикСчет=40702810000000074935\r\nПлательщик=ООО \"Ромашка\"\r\nПлательщикИНН={payer_inn}\r\n\
         ПолучательСчет={OUR_ACCOUNT}\r\nПолучатель=ООО \"Станкопром\"\r\nПолучательИНН=7702070139\r\n\
         ДатаПоступило={date}\r\nНазначениеПлатежа={purpose}\r\nКонецДокумента\r\n"
    )
}

/// A statement of `documents`, in Windows-1251 like a bank's export.
fn statement(period: &str, documents: &[String]) -> Vec<u8> {
    let text = format!(
        "1CClientBankExchange\r\nВерсияФормата=1.03\r\nКодировка=Windows\r\nОтправитель=Банк\r\n\
         Получатель=1С:Предприятие\r\nДатаНачала={period}\r\nДатаКонца={period}\r\nРасчСчет={OUR_ACCOUNT}\r\n\
         {}КонецФайла\r\n",
        documents.concat()
    );
    windows_1251(&text)
}

/// The text in Windows-1251 (only what these statements use).
fn windows_1251(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| match c {
            c if c.is_ascii() => c as u8,
            'А'..='я' => (c as u32 - 0x410 + 0xC0) as u8,
            'Ё' => 0xA8,
            'ё' => 0xB8,
            '№' => 0xB9,
            other => panic!("`{other}` is not in this test's Windows-1251 table"),
        })
        .collect()
}

fn first_payment() -> String {
    document("501", "05.02.2024", "40000.00", "7707083893", "Оплата по счету № 123 от 01.02.2024, НДС не облагается")
}

fn second_payment() -> String {
    document("622", "12.02.2024", "60000.00", "7707083893", "Доплата по сч.123 за станки")
}

fn unmatched_payment() -> String {
    document("623", "12.02.2024", "5000.00", "0", "Оплата за оборудование")
}

async fn send(hub: &TestHub, method: reqwest::Method, path: &str, token: &str, body: Option<Vec<u8>>) -> (u16, Value) {
    let mut request = hub.client.request(method, hub.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.body(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn upload(hub: &TestHub, name: &str, bytes: &[u8]) -> (u16, Value) {
    let path = format!("/api/v1/statements?file_name={name}");
    send(hub, reqwest::Method::POST, &path, ACCOUNTANT, Some(bytes.to_vec())).await
}

/// A stored statement's file: status, Content-Disposition and bytes.
async fn statement_file(hub: &TestHub, id: &str, token: &str) -> (u16, Option<String>, Vec<u8>) {
    let response =
        hub.client.get(hub.url(&format!("/api/v1/statements/{id}/file"))).bearer_auth(token).send().await.unwrap();
    let status = response.status().as_u16();
    let disposition = response.headers().get("content-disposition").map(|v| v.to_str().unwrap().to_owned());
    (status, disposition, response.bytes().await.unwrap().to_vec())
}

async fn json_post(hub: &TestHub, path: &str, token: &str, body: Value) -> (u16, Value) {
    let response = hub.client.post(hub.url(path)).bearer_auth(token).json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get(hub: &TestHub, path: &str, token: &str) -> Value {
    let (status, body) = send(hub, reqwest::Method::GET, path, token, None).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// Waits until the webhook's deal is stored; returns it.
async fn stored_deal(hub: &TestHub) -> Value {
    stored_deal_of(hub, "900").await
}

/// The hub's deal for the CRM's deal `external_id`, once it arrived.
async fn stored_deal_of(hub: &TestHub, external_id: &str) -> Value {
    let path = format!("/api/v1/deals?system=http&instance=http&external_id={external_id}");
    for _ in 0..200 {
        let response = hub.get_with_token(&path, Some(ADMIN)).await;
        if response.status() == 200 {
            return response.json().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the deal never arrived");
}

fn is_task(command: &Value, title: &str) -> bool {
    command["op"] == "create_task" && command.to_string().contains(title)
}

/// A hub on `store` with the shipped mappings (plus `http.yaml`) whose
/// `http` connector sends its commands to a fresh CRM double. The
/// directory holds the hub's config and data: keep it while the hub runs.
async fn hub_with_crm(store: &StoreKind) -> (TestHub, Crm, tempfile::TempDir) {
    let (crm, crm_addr) = Crm::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mappings = mappings_dir(dir.path());
    let extra = format!(
        "[mappings]\ndir = \"{}\"\n[engine]\nevent_poll_ms = 50\ntimer_poll_ms = 200\n\
         [connectors.http.outbound]\nurl = \"http://{crm_addr}/commands\"\nsecret_env = \"TEST_HTTP_SECRET\"\n\
         [delivery]\nresume_poll_ms = 20\n",
        mappings.display()
    );
    write_config(dir.path(), store, &extra);
    let hub = TestHub::start(dir.path(), store).await;
    (hub, crm, dir)
}

async fn s3_payments_move_the_deal(store: StoreKind) {
    let (hub, crm, _dir) = hub_with_crm(&store).await;

    // The deal waits for payment in the CRM; its invoice is known to the hub.
    let webhook = json!({"type": "deal.updated", "data": {"id": "900", "stage": "payment", "title": "Станки", "amount": "100000", "manager": "7"}});
    accepted_id(hub.post_signed("http", "msg_s3_deal", &webhook.to_string()).await).await;
    let deal = stored_deal(&hub).await;
    let deal_id = deal["id"].as_str().unwrap().to_owned();
    let invoices = json!({"invoices": [
        {"number": "123", "date": "2024-02-01", "total": {"amount": "100000.00", "currency": "RUB"},
         "deal": {"system": "http", "instance": "http", "external_id": "900"},
         "client": {"name": "ООО Ромашка", "inn": "7707083893"}},
        {"number": "Б-7", "date": "2024-02-10", "total": {"amount": "5000.00", "currency": "RUB"}}
    ]});
    let (status, stored) = json_post(&hub, "/api/v1/invoices", ACCOUNTANT, invoices).await;
    assert_eq!(status, 200, "{stored}");
    let invoice_id = stored["invoices"][0]["id"].as_str().unwrap().to_owned();
    let loose_invoice = stored["invoices"][1]["id"].as_str().unwrap().to_owned();

    // S3.2–3: a partial payment — matched with its reasons, the manager gets a task.
    let first = statement("05.02.2024", &[first_payment()]);
    let (status, report) = upload(&hub, "kl_to_1c_0205.txt", &first).await;
    assert_eq!(status, 201, "{report}");
    assert_eq!(report["payments"]["matched"], 1, "{report}");
    assert_eq!(report["results"][0]["invoice_number"], "123");
    assert_eq!(report["results"][0]["confidence"], 100, "{report}");
    assert_eq!(report["summary"]["credits"]["total"], "40000.00");
    let task = crm.wait_for("the partial-payment task", |c| is_task(c, "Получена оплата 40000.00")).await;
    assert!(task.to_string().contains("100000.00"), "{task}");
    let payment_id = report["results"][0]["payment_id"].as_str().unwrap().to_owned();
    let payment = get(&hub, &format!("/api/v1/payments/{payment_id}"), ACCOUNTANT).await;
    assert_eq!(payment["state"], "matched");
    let codes: Vec<&str> =
        payment["matched"]["reasons"].as_array().unwrap().iter().map(|r| r["code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["number_exact", "date_equal", "inn_equal", "amount_partial", "date_window"]);
    let invoice = get(&hub, &format!("/api/v1/invoices/{invoice_id}"), ACCOUNTANT).await;
    assert_eq!(
        (invoice["paid"]["amount"].as_str(), invoice["status"].as_str()),
        (Some("40000.00"), Some("partially_paid"))
    );
    assert_eq!(get(&hub, &format!("/api/v1/deals/{deal_id}"), ADMIN).await["stage"], "payment");
    // The statement file is kept: it comes back byte for byte, with its name.
    let statement_id = report["statement_id"].as_str().unwrap().to_owned();
    let (status, disposition, bytes) = statement_file(&hub, &statement_id, ACCOUNTANT).await;
    assert_eq!((status, bytes.as_slice()), (200, first.as_slice()));
    assert_eq!(disposition.as_deref(), Some("attachment; filename*=UTF-8''kl_to_1c_0205.txt"));
    assert_eq!(statement_file(&hub, &statement_id, VIEWER).await.0, 200, "a viewer may read it");
    assert_eq!(statement_file(&hub, &uuid::Uuid::now_v7().to_string(), ACCOUNTANT).await.0, 404);

    // The second statement completes the payment: the deal moves to shipment with the task.
    let second = statement("12.02.2024", &[second_payment(), unmatched_payment()]);
    let (status, report) = upload(&hub, "kl_to_1c_0212.txt", &second).await;
    assert_eq!(status, 201, "{report}");
    assert_eq!((report["payments"]["matched"].as_u64(), report["payments"]["review"].as_u64()), (Some(1), Some(1)));
    crm.wait_for("the move to shipment", |c| c["op"] == "update_deal" && c.to_string().contains("shipment")).await;
    crm.wait_for("the shipment task", |c| is_task(c, "Оформить реализацию товаров")).await;
    assert_eq!(get(&hub, &format!("/api/v1/deals/{deal_id}"), ADMIN).await["stage"], "shipment");
    let invoice = get(&hub, &format!("/api/v1/invoices/{invoice_id}"), ACCOUNTANT).await;
    assert_eq!((invoice["paid"]["amount"].as_str(), invoice["status"].as_str()), (Some("100000.00"), Some("paid")));
    // The deal's trace names the payment that moved it and its statement.
    let trace = get(&hub, &format!("/api/v1/deals/{deal_id}/trace"), ADMIN).await;
    let moved_by = trace["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["payment"]["document_number"] == "622")
        .unwrap_or_else(|| panic!("no payment cause in {trace}"));
    let payment = &moved_by["payment"];
    assert_eq!(payment["file_name"], "kl_to_1c_0212.txt", "{payment}");
    assert_eq!(payment["format"], "1CClientBankExchange 1.03");
    assert_eq!(
        (payment["statement_from"].as_str(), payment["statement_to"].as_str()),
        (Some("2024-02-12"), Some("2024-02-12"))
    );
    assert_eq!((payment["date"].as_str(), payment["payer"].as_str()), (Some("2024-02-12"), Some("ООО \"Ромашка\"")));
    assert_eq!(
        (payment["amount"]["amount"].as_str(), payment["invoices"][0].as_str()),
        (Some("60000.00"), Some("123"))
    );
    assert!(moved_by["steps"].to_string().contains("shipment"), "{moved_by}");

    // S3.4: either file again, or one overlapping both, changes nothing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = crm.all().len();
    let trace_before = get(&hub, &format!("/api/v1/deals/{deal_id}/trace"), ADMIN).await;
    for (name, bytes) in [("again_0205.txt", &first), ("again_0212.txt", &second)] {
        let (status, report) = upload(&hub, name, bytes).await;
        assert_eq!(status, 200, "{report}");
        assert_eq!(report["already_imported"], true);
    }
    let overlapping = statement("01.02.2024", &[first_payment(), second_payment(), unmatched_payment()]);
    let (status, report) = upload(&hub, "overlap.txt", &overlapping).await;
    assert_eq!(status, 201, "{report}");
    assert_eq!((report["payments"]["new"].as_u64(), report["payments"]["known"].as_u64()), (Some(0), Some(3)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(crm.all().len(), sent, "no command went out again");
    let trace_after = get(&hub, &format!("/api/v1/deals/{deal_id}/trace"), ADMIN).await;
    for part in ["timeline", "tasks", "timers"] {
        assert_eq!(trace_after[part], trace_before[part], "the deal's {part} did not change");
    }
    let matched = get(&hub, "/api/v1/payments?state=matched", ACCOUNTANT).await;
    assert_eq!(matched["payments"].as_array().unwrap().len(), 2);
    assert_eq!(get(&hub, &format!("/api/v1/invoices/{invoice_id}"), ACCOUNTANT).await["paid"]["amount"], "100000.00");

    // The review queue, and a manual match that applies like an automatic one.
    let queue = get(&hub, "/api/v1/payments?state=review", ACCOUNTANT).await;
    let waiting = &queue["payments"][0];
    assert_eq!(queue["counts"]["review"], 1, "{queue}");
    assert_eq!(waiting["review"]["reason"], "no_reference");
    let waiting_id = waiting["payment"]["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/payments/{waiting_id}/match");
    let (status, matched) =
        json_post(&hub, &path, ACCOUNTANT, json!({"invoice_id": loose_invoice, "by": "petrova"})).await;
    assert_eq!(status, 200, "{matched}");
    assert_eq!((matched["state"].as_str(), matched["matched"]["method"].as_str()), (Some("matched"), Some("manual")));
    assert_eq!(matched["matched"]["matched_by"], "petrova");
    let invoice = get(&hub, &format!("/api/v1/invoices/{loose_invoice}"), ACCOUNTANT).await;
    assert_eq!(invoice["status"], "paid");
    let (status, again) = json_post(&hub, &path, ACCOUNTANT, json!({"invoice_id": loose_invoice})).await;
    assert_eq!(status, 409, "matched once: {again}");
    assert_eq!(get(&hub, "/api/v1/payments?state=review", ACCOUNTANT).await["counts"]["review"], 0);

    // A broken file is rejected whole, naming the line; a viewer may not upload.
    let mut broken = statement("13.02.2024", &[document("700", "13.02.2024", "5,0,0", "7707083893", "сч. 123")]);
    broken.truncate(broken.len() - 2);
    let (status, error) = upload(&hub, "broken.txt", &broken).await;
    assert_eq!(status, 422, "{error}");
    assert!(error["message"].as_str().unwrap().contains("line 12"), "{error}");
    let (status, _) = send(&hub, reqwest::Method::POST, "/api/v1/statements", VIEWER, Some(first.clone())).await;
    assert_eq!(status, 403);
    hub.stop().await;
}

#[tokio::test]
async fn s3_statements_move_deals_on_sqlite() {
    s3_payments_move_the_deal(StoreKind::Sqlite).await;
}

#[tokio::test]
async fn s3_statements_move_deals_on_postgres() {
    let Some((store, db)) = postgres("s3_statements").await else { return };
    s3_payments_move_the_deal(store).await;
    db.drop_db().await;
}

/// One statement pays the invoices of several deals (more than the import
/// runs side by side): every deal's flows run and each deal moves to
/// shipment with its own task, none lost or mixed with another's.
async fn one_statement_pays_several_deals(store: StoreKind) {
    const DEALS: usize = 7;
    let (hub, crm, _dir) = hub_with_crm(&store).await;
    let mut deal_ids = Vec::new();
    let mut invoices = Vec::new();
    let mut documents = Vec::new();
    for k in 0..DEALS {
        let external_id = format!("91{k}");
        let amount = format!("{}.00", 10_000 + 1_000 * k);
        let webhook = json!({"type": "deal.updated", "data": {"id": external_id, "stage": "payment",
            "title": format!("Станок {k}"), "amount": amount, "manager": "7"}});
        accepted_id(hub.post_signed("http", &format!("msg_many_{k}"), &webhook.to_string()).await).await;
        deal_ids.push(stored_deal_of(&hub, &external_id).await["id"].as_str().unwrap().to_owned());
        invoices.push(json!({"number": format!("3{k}0"), "date": "2024-02-01",
            "total": {"amount": amount, "currency": "RUB"},
            "deal": {"system": "http", "instance": "http", "external_id": external_id},
            "client": {"name": "ООО Ромашка", "inn": "7707083893"}}));
        let purpose = format!("Оплата по счету № 3{k}0 от 01.02.2024");
        documents.push(document(&format!("70{k}"), "07.02.2024", &amount, "7707083893", &purpose));
    }
    let (status, stored) = json_post(&hub, "/api/v1/invoices", ACCOUNTANT, json!({"invoices": invoices})).await;
    assert_eq!(status, 200, "{stored}");

    let (status, report) = upload(&hub, "kl_to_1c_0207.txt", &statement("07.02.2024", &documents)).await;
    assert_eq!(status, 201, "{report}");
    assert_eq!(report["payments"]["matched"], DEALS, "{report}");
    for deal_id in &deal_ids {
        assert_eq!(get(&hub, &format!("/api/v1/deals/{deal_id}"), ADMIN).await["stage"], "shipment");
    }
    for k in 0..DEALS {
        let deal = format!("Станок {k}");
        crm.wait_for(&format!("the shipment task of {deal}"), |c| {
            is_task(c, "Оформить реализацию товаров") && c.to_string().contains(&format!("91{k}"))
        })
        .await;
    }
    let tasks = crm.all().iter().filter(|c| is_task(c, "Оформить реализацию товаров")).count();
    assert_eq!(tasks, DEALS, "{:#?}", crm.all());
    hub.stop().await;
}

#[tokio::test]
async fn one_statement_pays_several_deals_on_sqlite() {
    one_statement_pays_several_deals(StoreKind::Sqlite).await;
}

#[tokio::test]
async fn one_statement_pays_several_deals_on_postgres() {
    let Some((store, db)) = postgres("several_deals").await else { return };
    one_statement_pays_several_deals(store).await;
    db.drop_db().await;
}

/// «Оплата по счетам № 12, 13»: one payment of both invoices' sum is split
/// over them; each share is applied as a match of its own, the deal waiting
/// for both moves to shipment.
#[tokio::test]
async fn one_payment_over_two_invoices_is_split() {
    let store = StoreKind::Sqlite;
    let (hub, crm, _dir) = hub_with_crm(&store).await;
    let webhook = json!({"type": "deal.updated", "data": {"id": "900", "stage": "payment", "title": "Станки", "amount": "30000", "manager": "7"}});
    accepted_id(hub.post_signed("http", "msg_split_deal", &webhook.to_string()).await).await;
    let deal_id = stored_deal(&hub).await["id"].as_str().unwrap().to_owned();
    let invoice = |number: &str, amount: &str| {
        json!({"number": number, "date": "2024-02-01", "total": {"amount": amount, "currency": "RUB"},
               "deal": {"system": "http", "instance": "http", "external_id": "900"},
               "client": {"name": "ООО Ромашка", "inn": "7707083893"}})
    };
    let (status, stored) = json_post(
        &hub,
        "/api/v1/invoices",
        ACCOUNTANT,
        json!({"invoices": [invoice("12", "10000.00"), invoice("13", "20000.00")]}),
    )
    .await;
    assert_eq!(status, 200, "{stored}");

    let paying_both =
        document("810", "06.02.2024", "30000.00", "7707083893", "Оплата по счетам № 12, 13 от 01.02.2024");
    let (status, report) = upload(&hub, "kl_to_1c_0206.txt", &statement("06.02.2024", &[paying_both])).await;
    assert_eq!(status, 201, "{report}");
    assert_eq!(report["payments"]["matched"], 1, "{report}");
    let result = &report["results"][0];
    assert_eq!(
        (result["invoice_number"].as_str(), result["also_invoice_numbers"][0].as_str()),
        (Some("12"), Some("13"))
    );
    for (k, paid) in [(0, "10000.00"), (1, "20000.00")] {
        let id = stored["invoices"][k]["id"].as_str().unwrap();
        let invoice = get(&hub, &format!("/api/v1/invoices/{id}"), ACCOUNTANT).await;
        assert_eq!(
            (invoice["paid"]["amount"].as_str(), invoice["status"].as_str()),
            (Some(paid), Some("paid")),
            "{invoice}"
        );
    }
    let payment_id = result["payment_id"].as_str().unwrap();
    let payment = get(&hub, &format!("/api/v1/payments/{payment_id}"), ACCOUNTANT).await;
    let shares = [&payment["matched"], &payment["also_matched"][0]];
    for share in shares {
        let codes = share["reasons"].to_string();
        assert!(codes.contains("amount_split") && codes.contains("number_exact"), "{share}");
        assert!(share["confidence"].as_u64().unwrap() >= 55, "{share}");
    }
    crm.wait_for("the shipment task", |c| is_task(c, "Оформить реализацию товаров")).await;
    assert_eq!(get(&hub, &format!("/api/v1/deals/{deal_id}"), ADMIN).await["stage"], "shipment");
    hub.stop().await;
}

/// The watched folder: a statement dropped in is imported and moved to
/// `processed/`; a broken one goes to `failed/` with the reason beside it.
#[tokio::test]
async fn statements_in_the_watched_folder_are_imported() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("bank-inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let extra = format!("[bank]\nwatch_dir = \"{}\"\nwatch_poll_ms = 50\n", inbox.display());
    write_config(dir.path(), &StoreKind::Sqlite, &extra);
    let hub = TestHub::start(dir.path(), &StoreKind::Sqlite).await;

    std::fs::write(inbox.join("kl_to_1c.txt"), statement("05.02.2024", &[first_payment()])).unwrap();
    let mut broken = statement("05.02.2024", &[second_payment()]);
    broken.truncate(broken.len() - 12);
    std::fs::write(inbox.join("broken.txt"), broken).unwrap();
    let processed = inbox.join("processed").join("kl_to_1c.txt");
    let failed = inbox.join("failed").join("broken.txt");
    for _ in 0..200 {
        if processed.exists() && failed.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(processed.exists() && failed.exists(), "files left: {:?}", std::fs::read_dir(&inbox).unwrap().count());
    assert!(!inbox.join("kl_to_1c.txt").exists());
    let reason = std::fs::read_to_string(inbox.join("failed").join("broken.txt.error.txt")).unwrap();
    assert!(reason.contains("rejected, nothing imported"), "{reason}");
    // The imported payment waits for review: there is no invoice to match.
    let queue = get(&hub, "/api/v1/payments?state=review", ACCOUNTANT).await;
    assert_eq!(queue["counts"]["review"], 1, "{queue}");
    assert_eq!(queue["payments"][0]["review"]["reason"], "no_open_invoice");
    hub.stop().await;
}
