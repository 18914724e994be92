//! Money reported twice: the accountant imports the bank statement into the
//! hub, and 1C:ERP reports the receipt («Поступление безналичных денежных
//! средств») it made from the same statement. The order's paid amount
//! counts the payment once, whichever source is first; a receipt for other
//! money still counts.

use serde_json::{Value, json};

use crate::onec::{INTERESTS, ORDERS, Rig, SMIRNOVA, eventually, settled, text, until_field};
use crate::support::*;

const OUR_ACCOUNT: &str = "40702810900000002851";

/// A UTF-8 1CClientBankExchange statement with one incoming payment.
fn statement(number: &str, date: &str, amount: &str, purpose: &str) -> Vec<u8> {
    format!(
        "1CClientBankExchange\r\nВерсияФормата=1.03\r\nКодировка=Windows\r\nОтправитель=Банк\r\n\
         Получатель=1С:Предприятие\r\nДатаНачала={date}\r\nДатаКонца={date}\r\nРасчСчет={OUR_ACCOUNT}\r\n\
         СекцияДокумент=Платежное поручение\r\nНомер={number}\r\nДата={date}\r\nСумма={amount}\r\n\
         ПлательщикСчет=40702810000000074935\r\nПлательщик=ООО \"Тепло\"\r\nПлательщикИНН=7707083893\r\n\
         ПолучательСчет={OUR_ACCOUNT}\r\nПолучатель=ООО \"Станкопром\"\r\nПолучательИНН=7702070139\r\n\
         ДатаПоступило={date}\r\nНазначениеПлатежа={purpose}\r\nКонецДокумента\r\nКонецФайла\r\n"
    )
    .into_bytes()
}

async fn upload(rig: &Rig, name: &str, bytes: Vec<u8>) -> Value {
    let url = rig.hub.url(&format!("/api/v1/statements?file_name={name}"));
    let response = rig.hub.client.post(url).bearer_auth(ACCOUNTANT).body(bytes).send().await.unwrap();
    assert!(response.status().is_success(), "{:?}", response.text().await);
    response.json().await.unwrap()
}

/// The canonical order the bank payment of a statement was matched to.
/// The matched payments, oldest first; all must be matched.
async fn matched(rig: &Rig, count: usize) -> Vec<Value> {
    let list: Value =
        rig.hub.get_with_token("/api/v1/payments?state=matched", Some(ACCOUNTANT)).await.json().await.unwrap();
    let payments = list["payments"].as_array().unwrap_or_else(|| panic!("{list}"));
    if payments.len() != count {
        let review = rig.hub.get_with_token("/api/v1/payments?state=review", Some(ACCOUNTANT)).await;
        panic!("not matched: {}", review.text().await.unwrap());
    }
    payments.clone()
}

async fn matched_invoice(rig: &Rig) -> String {
    matched(rig, 1).await[0]["matched"]["invoice_id"].as_str().unwrap().to_owned()
}

/// The deal's trail, as `GET /api/v1/deals/{id}/trace` gives it.
async fn trace(rig: &Rig, sale: &str) -> String {
    let deal = rig.canonical(sale).await.unwrap();
    let path = format!("/api/v1/deals/{}/trace", deal["id"].as_str().unwrap());
    rig.hub.get_with_token(&path, Some(VIEWER)).await.text().await.unwrap()
}

async fn invoice(rig: &Rig, id: &str) -> Value {
    rig.hub.get_with_token(&format!("/api/v1/invoices/{id}"), Some(ACCOUNTANT)).await.json().await.unwrap()
}

async fn paid(rig: &Rig, id: &str) -> String {
    invoice(rig, id).await["paid"]["amount"].as_str().unwrap_or_default().to_owned()
}

/// An Interest with a posted order of 150,000.50 for ООО «Тепло».
async fn ordered_interest(rig: &Rig) -> (String, String) {
    let (sale, client) = interest(rig).await;
    let order = posted_order(rig, &sale, &client, "ТД00-000017", 150000.5).await;
    settled(rig).await;
    (sale, order)
}

/// An Interest of ООО «Тепло» in the payment stage: its key and the client's.
async fn interest(rig: &Rig) -> (String, String) {
    let onec = &rig.onec;
    let client = onec
        .create("Catalog_Контрагенты", json!({"Description": "ООО Тепло", "ИНН": "7707083893"}).as_object().unwrap())
        .await
        .unwrap();
    let client = text(&client, "Ref_Key").to_owned();
    let sale = json!({"Description": "Котёл", "Сценарий": "Продажа", "Этап": "Оплата", "Ответственный_Key": SMIRNOVA,
                      "Контрагент_Key": client});
    let sale = onec.create(INTERESTS, sale.as_object().unwrap()).await.unwrap();
    let sale = text(&sale, "Ref_Key").to_owned();
    eventually("the hub knows the Interest", async || rig.canonical(&sale).await).await;
    (sale, client)
}

/// A posted customer order of the Interest; its key.
async fn posted_order(rig: &Rig, sale: &str, client: &str, number: &str, amount: f64) -> String {
    let order = json!({"Number": number, "Date": "2026-02-03T10:00:00", "Сделка_Key": sale, "Контрагент_Key": client,
                       "СуммаДокумента": amount, "Валюта": "RUB"});
    let order = rig.onec.create(ORDERS, order.as_object().unwrap()).await.unwrap();
    let order = text(&order, "Ref_Key").to_owned();
    rig.onec.post_document(ORDERS, &order).await.unwrap();
    order
}

/// 1C's receipt of one payment order spread over several orders
/// (`РасшифровкаПлатежа`, a row per order), posted.
async fn receipt_over_orders_in_1c(rig: &Rig, number: &str, date: &str, rows: &[(&str, f64)]) {
    const RECEIPTS: &str = "Document_ПоступлениеБезналичныхДенежныхСредств";
    let breakdown: Vec<Value> = rows
        .iter()
        .map(|(order, amount)| json!({"Заказ": order, "Заказ_Type": "StandardODATA.Document_ЗаказКлиента", "Сумма": amount}))
        .collect();
    let receipt = json!({
        "ХозяйственнаяОперация": "ПоступлениеОплатыОтКлиента",
        "НомерВходящегоДокумента": number,
        "ДатаВходящегоДокумента": format!("{date}T00:00:00"),
        "СуммаДокумента": rows.iter().map(|(_, amount)| amount).sum::<f64>(),
        "Валюта": "RUB",
        "НазначениеПлатежа": format!("Оплата по платёжному поручению № {number}"),
        "РасшифровкаПлатежа": breakdown,
    });
    let created = rig.onec.create(RECEIPTS, receipt.as_object().unwrap()).await.unwrap();
    rig.onec.post_document(RECEIPTS, text(&created, "Ref_Key")).await.unwrap();
}

async fn bank_first_then_1c(store: StoreKind) {
    let rig = Rig::start(&store).await;
    let (sale, order) = ordered_interest(&rig).await;

    // The accountant imports the bank statement: 100,000 of the order.
    let purpose = "Оплата по счету № ТД00-000017 от 03.02.2026, НДС не облагается";
    upload(&rig, "bank.txt", statement("512", "05.02.2026", "100000.00", purpose)).await;
    let invoice_id = matched_invoice(&rig).await;
    assert_eq!(paid(&rig, &invoice_id).await, "100000.00");

    // 1C reports its receipt of the same payment order: counted once.
    pay_order_in_1c(&rig.onec, &order, 100000.0, "512").await;
    let linked = eventually("the receipt is linked to the bank payment", async || {
        let invoice = invoice(&rig, &invoice_id).await;
        let parts = invoice["paid_parts"].as_array()?.clone();
        parts.iter().any(|p| p["same_as"].as_array().is_some_and(|s| !s.is_empty())).then_some(invoice)
    })
    .await;
    assert_eq!(linked["paid"]["amount"], "100000.00", "{linked}");
    assert_eq!(linked["paid_parts"].as_array().unwrap().len(), 1, "{linked}");
    assert_eq!(rig.canonical(&sale).await.unwrap()["stage"], "payment");

    // The rest is other money (another payment order): it counts, the
    // order is paid, and the Interest moves on to shipment.
    pay_order_in_1c(&rig.onec, &order, 50000.5, "513").await;
    until_field(&rig, "full payment moves the Interest to shipment", &sale, "Этап", json!("Отгрузка")).await;
    let paid_in_full = invoice(&rig, &invoice_id).await;
    assert_eq!(paid_in_full["paid"]["amount"].as_str().map(|a| a.parse::<f64>().unwrap()), Some(150000.5));
    assert_eq!(paid_in_full["paid_parts"].as_array().unwrap().len(), 2, "{paid_in_full}");
    rig.stop().await;
}

/// 1C's receipt of payment order 512 for 100,000 of the order, once the
/// hub has counted it on the Interest.
async fn receipt_counted(rig: &Rig, sale: &str, order: &str) {
    pay_order_in_1c(&rig.onec, order, 100000.0, "512").await;
    eventually("the hub counts the receipt", async || {
        trace(rig, sale).await.contains("payment_observed").then_some(())
    })
    .await;
}

async fn receipt_first_then_bank(store: StoreKind) {
    let rig = Rig::start(&store).await;
    let (sale, order) = ordered_interest(&rig).await;

    // 1C reports the receipt first: 100,000 of the order.
    receipt_counted(&rig, &sale, &order).await;

    // The accountant imports the statement it came from: matched, but
    // counted once; the order is still not paid in full.
    let purpose = "Оплата по счету № ТД00-000017 от 03.02.2026, НДС не облагается";
    upload(&rig, "bank.txt", statement("512", "05.02.2026", "100000.00", purpose)).await;
    let payments = matched(&rig, 1).await;
    let notes = payments[0]["notes"].to_string();
    assert!(notes.contains("counted once"), "{}", payments[0]);
    assert!(!notes.contains("overpayment"), "counted once, it overpays nothing: {}", payments[0]);
    assert_eq!(payments[0]["matched"]["paid_total"]["amount"], payments[0]["matched"]["paid_before"]["amount"]);
    let invoice_id = payments[0]["matched"]["invoice_id"].as_str().unwrap().to_owned();
    let after_bank = invoice(&rig, &invoice_id).await;
    assert_eq!(after_bank["paid"]["amount"].as_str().map(|a| a.parse::<f64>().unwrap()), Some(100000.0));
    assert_eq!(rig.canonical(&sale).await.unwrap()["stage"], "payment");

    // The rest comes by bank: other money, it counts and completes the order.
    upload(&rig, "bank2.txt", statement("513", "09.02.2026", "50000.50", purpose)).await;
    until_field(&rig, "full payment moves the Interest to shipment", &sale, "Этап", json!("Отгрузка")).await;
    let full = invoice(&rig, &invoice_id).await;
    assert_eq!(full["paid"]["amount"].as_str().map(|a| a.parse::<f64>().unwrap()), Some(150000.5), "{full}");
    rig.stop().await;
}

/// 1C reports a receipt first; the bank payment it came from names no
/// order, so it waits for review, and the accountant matches it by hand:
/// counted once all the same.
async fn receipt_first_then_bank_matched_by_hand(store: StoreKind) {
    let rig = Rig::start(&store).await;
    let (sale, order) = ordered_interest(&rig).await;
    receipt_counted(&rig, &sale, &order).await;

    upload(&rig, "bank.txt", statement("512", "05.02.2026", "100000.00", "Оплата за котёл")).await;
    let queue: Value =
        rig.hub.get_with_token("/api/v1/payments?state=review", Some(ACCOUNTANT)).await.json().await.unwrap();
    let waiting = &queue["payments"][0];
    let payment_id = waiting["payment"]["id"].as_str().unwrap_or_else(|| panic!("in review: {queue}"));
    let candidates = waiting["review"]["candidates"].as_array().unwrap_or_else(|| panic!("{waiting}"));
    let invoice_id = candidates[0]["invoice_id"].as_str().unwrap().to_owned();

    let url = rig.hub.url(&format!("/api/v1/payments/{payment_id}/match"));
    let body = json!({"invoice_id": invoice_id, "by": "petrova"});
    let response = rig.hub.client.post(url).bearer_auth(ACCOUNTANT).json(&body).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let matched: Value = response.json().await.unwrap();
    assert_eq!(matched["matched"]["method"], "manual", "{matched}");
    assert!(matched["notes"].to_string().contains("counted once"), "{matched}");
    assert!(!matched["notes"].to_string().contains("overpayment"), "{matched}");
    assert_eq!(matched["matched"]["paid_total"]["amount"], matched["matched"]["paid_before"]["amount"]);
    let after = invoice(&rig, &invoice_id).await;
    assert_eq!(after["paid"]["amount"].as_str().map(|a| a.parse::<f64>().unwrap()), Some(100000.0), "{after}");
    assert_eq!(rig.canonical(&sale).await.unwrap()["stage"], "payment");
    rig.stop().await;
}

#[tokio::test]
async fn a_1c_receipt_and_its_bank_payment_matched_by_hand_count_once_on_sqlite() {
    receipt_first_then_bank_matched_by_hand(StoreKind::Sqlite).await;
}

#[tokio::test]
async fn a_1c_receipt_and_its_bank_payment_matched_by_hand_count_once_on_postgres() {
    let Some((store, _db)) = postgres("onec_receipt_then_bank_by_hand").await else { return };
    receipt_first_then_bank_matched_by_hand(store).await;
}

/// One bank payment for two orders («по счетам»): the hub splits it; 1C's
/// receipt of the same payment order, a row per order, is the same money
/// on both orders, not a second payment of the second one.
async fn split_bank_payment_then_1c(store: StoreKind) {
    let rig = Rig::start(&store).await;
    let (sale, client) = interest(&rig).await;
    let boiler = posted_order(&rig, &sale, &client, "ТД00-000017", 150000.5).await;
    let pump = posted_order(&rig, &sale, &client, "ТД00-000018", 40000.0).await;
    settled(&rig).await;

    let purpose = "Оплата по счетам № ТД00-000017, ТД00-000018, НДС не облагается";
    upload(&rig, "bank.txt", statement("512", "05.02.2026", "190000.50", purpose)).await;
    let payment = &matched(&rig, 1).await[0];
    let first = payment["matched"]["invoice_id"].as_str().unwrap().to_owned();
    let further = payment["also_matched"][0]["invoice_id"].as_str().unwrap_or_else(|| panic!("{payment}")).to_owned();
    assert_eq!(paid(&rig, &first).await.parse::<f64>().unwrap(), 150000.5);
    assert_eq!(paid(&rig, &further).await.parse::<f64>().unwrap(), 40000.0);

    receipt_over_orders_in_1c(&rig, "512", "2026-02-05", &[(&boiler, 150000.5), (&pump, 40000.0)]).await;
    for (id, amount) in [(&first, 150000.5), (&further, 40000.0)] {
        let linked = eventually("the receipt's row is linked to the bank payment's share", async || {
            let invoice = invoice(&rig, id).await;
            let parts = invoice["paid_parts"].as_array()?.clone();
            parts.iter().any(|p| p["same_as"].as_array().is_some_and(|s| !s.is_empty())).then_some(invoice)
        })
        .await;
        let paid = linked["paid"]["amount"].as_str().map(|a| a.parse::<f64>().unwrap());
        assert_eq!(paid, Some(amount), "counted once: {linked}");
        assert_eq!(linked["paid_parts"].as_array().unwrap().len(), 1, "{linked}");
    }
    rig.stop().await;
}

#[tokio::test]
async fn a_split_bank_payment_and_its_1c_receipt_count_once_on_sqlite() {
    split_bank_payment_then_1c(StoreKind::Sqlite).await;
}

#[tokio::test]
async fn a_split_bank_payment_and_its_1c_receipt_count_once_on_postgres() {
    let Some((store, _db)) = postgres("onec_split_bank_then_receipt").await else { return };
    split_bank_payment_then_1c(store).await;
}

#[tokio::test]
async fn a_1c_receipt_and_its_bank_payment_count_once_on_sqlite() {
    receipt_first_then_bank(StoreKind::Sqlite).await;
}

#[tokio::test]
async fn a_1c_receipt_and_its_bank_payment_count_once_on_postgres() {
    let Some((store, _db)) = postgres("onec_receipt_then_bank").await else { return };
    receipt_first_then_bank(store).await;
}

#[tokio::test]
async fn a_bank_payment_and_its_1c_receipt_count_once_on_sqlite() {
    bank_first_then_1c(StoreKind::Sqlite).await;
}

#[tokio::test]
async fn a_bank_payment_and_its_1c_receipt_count_once_on_postgres() {
    let Some((store, _db)) = postgres("onec_bank_then_receipt").await else { return };
    bank_first_then_1c(store).await;
}
