//! Record mapping: fields, conversions, stages, parents, people, errors.

use serde_json::json;

use super::load;
use crate::mapping::MappingError;
use crate::model::{CanonicalEvent, DealObservation, ExternalRef};

const SET: &str = r#"
pipelines: { sales: [new, payment, won, lost] }
lookups: { currencies: { RUR: RUB } }
people:
  anna: { name: Анна, ids: { crm: "17" } }
stage_maps:
  crm-sales:
    pipeline: sales
    stages: { NEW: new, INVOICE: payment, WON: won, LOSE: lost }
bindings:
  - name: crm-deals
    connector: crm
    system: bitrix24
    record: deal
    filter: "record.CATEGORY_ID == '0'"
    id: ID
    parent: { from: UF_PARENT, convert: [{ strip_prefix: D_ }] }
    stage: { from: STAGE_ID, map: crm-sales }
    fields:
      title: { from: TITLE, convert: [trim], required: true }
      amount: { from: SUM, convert: [decimal], currency: { from: CUR, convert: [{ lookup: currencies }], default: RUB } }
      client.inn: { from: Client.INN, convert: [trim] }
      client.emails: { from: "EMAIL[*].VALUE", convert: [lower] }
      responsible: { from: ASSIGNED_BY_ID }
      custom.due: { from: DUE, convert: [date] }
      custom.paid: { from: PAID, convert: [boolean] }
      custom.source: { default: crm }
"#;

fn observed(record: serde_json::Value) -> Result<Vec<(String, ExternalRef, DealObservation)>, MappingError> {
    let set = load(&[("set.yaml", SET)]).unwrap();
    Ok(set
        .map_record("crm", "deal", &record)?
        .into_iter()
        .map(|m| match m.event {
            CanonicalEvent::DealObserved { source, observed } => (m.binding.to_string(), source, observed),
            other => panic!("unexpected {other:?}"),
        })
        .collect())
}

#[test]
fn a_record_maps_to_a_partial_observation() {
    let mapped = observed(json!({
        "ID": "42", "CATEGORY_ID": "0", "STAGE_ID": "INVOICE", "TITLE": "  Поставка  ",
        "SUM": "1 234 567,89", "CUR": "RUR", "Client": {"INN": " 7707083893 "},
        "EMAIL": [{"VALUE": "A@B.RU"}, {"VALUE": ""}, {"VALUE": "c@d.ru"}],
        "ASSIGNED_BY_ID": "17", "DUE": "01.02.2024", "PAID": "N", "UF_PARENT": "D_7"
    }))
    .unwrap();
    assert_eq!(mapped.len(), 1);
    let (binding, source, o) = &mapped[0];
    assert_eq!(binding, "crm-deals");
    assert_eq!(*source, ExternalRef::new("bitrix24", "crm", "42"));
    assert_eq!(o.pipeline.as_deref(), Some("sales"));
    assert_eq!(o.stage.as_deref(), Some("payment"));
    assert_eq!(o.title.as_deref(), Some("Поставка"));
    assert_eq!(o.amount.as_ref().unwrap().to_string(), "1234567.89 RUB");
    let client = o.client.as_ref().unwrap();
    assert_eq!(client.inn.as_ref().unwrap().as_str(), "7707083893");
    assert_eq!(client.emails, vec!["a@b.ru", "c@d.ru"]);
    assert_eq!(o.responsible.as_deref(), Some("anna"));
    assert_eq!(o.parent, Some(ExternalRef::new("bitrix24", "crm", "7")));
    assert_eq!(o.custom_fields["due"], json!("2024-02-01"));
    assert_eq!(o.custom_fields["paid"], json!(false));
    assert_eq!(o.custom_fields["source"], json!("crm"));
}

#[test]
fn unmapped_and_empty_fields_stay_none() {
    let (_, _, o) = observed(json!({"ID": 5, "CATEGORY_ID": "0", "TITLE": "x", "SUM": null})).unwrap().remove(0);
    assert_eq!(o.stage, None);
    assert_eq!(o.amount, None);
    assert_eq!(o.client, None);
    assert_eq!(o.responsible, None);
    assert_eq!(o.parent, None);
    assert!(!o.custom_fields.contains_key("due"));
}

#[test]
fn filters_and_record_kinds_select_bindings() {
    assert!(observed(json!({"ID": "1", "CATEGORY_ID": "3", "TITLE": "x"})).unwrap().is_empty());
    let set = load(&[("set.yaml", SET)]).unwrap();
    assert!(set.map_record("crm", "contact", &json!({"ID": "1", "CATEGORY_ID": "0"})).unwrap().is_empty());
    assert!(set.map_record("other", "deal", &json!({"ID": "1", "CATEGORY_ID": "0"})).unwrap().is_empty());
}

#[test]
fn errors_name_binding_field_and_path() {
    let required = observed(json!({"ID": "1", "CATEGORY_ID": "0", "TITLE": "  "})).unwrap_err();
    assert_eq!(
        required,
        MappingError::Required { binding: "crm-deals".into(), field: "title".into(), path: "TITLE".into() }
    );
    let bad_number = observed(json!({"ID": "1", "CATEGORY_ID": "0", "TITLE": "x", "SUM": "12a"})).unwrap_err();
    assert_eq!(bad_number.to_string(), "binding `crm-deals`, field `amount` (from `SUM`): `12a` is not a number");
    let lookup = observed(json!({"ID": "1", "CATEGORY_ID": "0", "TITLE": "x", "SUM": 1, "CUR": "XXX"})).unwrap_err();
    assert!(lookup.to_string().contains("field `amount currency` (from `CUR`): `XXX` is not in lookup table"));
    let stage = observed(json!({"ID": "1", "CATEGORY_ID": "0", "TITLE": "x", "STAGE_ID": "C9:NEW"})).unwrap_err();
    assert!(matches!(stage, MappingError::UnknownStage { ref stage, .. } if stage == "C9:NEW"));
    let person = observed(json!({"ID": "1", "CATEGORY_ID": "0", "TITLE": "x", "ASSIGNED_BY_ID": "99"})).unwrap_err();
    assert!(person.to_string().contains("user `99` of `crm` is not declared under `people`"), "{person}");
    let id = observed(json!({"CATEGORY_ID": "0", "TITLE": "x"})).unwrap_err();
    assert!(matches!(id, MappingError::MissingId { .. }));
}

#[test]
fn russian_keys_work_in_paths_and_bracketed_filters() {
    let set = load(&[(
        "onec.yaml",
        r#"
bindings:
  - name: interests
    connector: onec
    system: onec
    record: interest
    filter: "record['Сценарий'] == 'Продажа'"
    id: Ref_Key
    parent: { from: Основание_Key, convert: [{ empty_if: "00000000-0000-0000-0000-000000000000" }] }
    fields:
      client.name: { from: Контрагент.Наименование }
      custom.services: { from: "Услуги[*].Наименование" }
      custom.created: { from: Date, convert: [{ local_datetime: Europe/Moscow }] }
"#,
    )])
    .unwrap();
    let record = json!({
        "Ref_Key": "a1", "Сценарий": "Продажа", "Основание_Key": "00000000-0000-0000-0000-000000000000",
        "Контрагент": {"Наименование": "ООО Ромашка"}, "Date": "2024-02-01T10:00:00",
        "Услуги": [{"Наименование": "Монтаж"}, {"Наименование": "Доставка"}]
    });
    let mapped = set.map_record("onec", "interest", &record).unwrap();
    let CanonicalEvent::DealObserved { observed: o, .. } = &mapped[0].event else { panic!() };
    assert_eq!(o.client.as_ref().unwrap().name, "ООО Ромашка");
    assert_eq!(o.parent, None, "the empty 1C reference is no parent");
    assert_eq!(o.custom_fields["services"], json!(["Монтаж", "Доставка"]));
    assert_eq!(o.custom_fields["created"], json!("2024-02-01T10:00:00+03:00"));
    let other = json!({"Ref_Key": "a2", "Сценарий": "Работы"});
    assert!(set.map_record("onec", "interest", &other).unwrap().is_empty());
}

const DOCUMENTS: &str = r#"
pipelines: { sales: [new, won] }
bindings:
  - name: erp-orders
    connector: erp
    system: onec
    record: customer_order
    target: order
    id: Ref_Key
    deal: { from: Сделка_Key, convert: [{ empty_if: "00000000-0000-0000-0000-000000000000" }] }
    fields:
      number: { from: Number, convert: [trim] }
      date: { from: Date, convert: [date] }
      total: { from: СуммаДокумента, currency: { from: Валюта, default: RUB } }
      paid: { from: СуммаОплаты, currency: { from: Валюта, default: RUB } }
      client.inn: { from: Контрагент.ИНН }
  - name: erp-shipments
    connector: erp
    system: onec
    record: shipment
    target: shipment
    id: Ref_Key
    covers: { from: ЗаказКлиента_Key }
    fields:
      date: { from: Date, convert: [date] }
      amount: { from: СуммаДокумента, currency: { default: RUB } }
"#;

const RECEIPTS: &str = r#"
pipelines: { sales: [new, won] }
bindings:
  - name: erp-receipts
    connector: erp
    system: onec
    record: bank_receipt
    target: payment
    id: Ref_Key
    pays: { from: "РасшифровкаПлатежа[*].Заказ", convert: [{ empty_if: "00000000-0000-0000-0000-000000000000" }] }
    fields:
      number: { from: НомерВходящегоДокумента, convert: [trim] }
      date: { from: ДатаВходящегоДокумента, convert: [date] }
      amount: { from: "РасшифровкаПлатежа[*].Сумма", convert: [decimal], currency: { from: Валюта, default: RUB } }
"#;

#[test]
fn an_order_names_its_deal_and_a_shipment_its_order_with_exact_amounts() {
    let set = load(&[("set.yaml", DOCUMENTS)]).unwrap();
    let order = json!({"Ref_Key": "b1", "Number": " ТД00-17 ", "Date": "2026-02-03T10:00:00", "Сделка_Key": "a1",
        "СуммаДокумента": "150 000,50", "Контрагент": {"ИНН": "7707083893"}});
    let mapped = set.map_record("erp", "customer_order", &order).unwrap().remove(0);
    let CanonicalEvent::InvoiceObserved { source, deal, observed } = mapped.event else { panic!("{mapped:?}") };
    assert_eq!(source, ExternalRef::new("onec", "erp", "b1"));
    assert_eq!(deal, Some(ExternalRef::new("onec", "erp", "a1")));
    assert_eq!(observed.kind, crate::model::InvoiceKind::Order);
    assert_eq!(observed.number.as_deref(), Some("ТД00-17"));
    assert_eq!(observed.date, chrono::NaiveDate::from_ymd_opt(2026, 2, 3));
    assert_eq!(observed.total.unwrap().to_string(), "150000.50 RUB");
    assert_eq!(observed.paid, None, "not reported: left alone");
    assert_eq!(observed.client.unwrap().inn.unwrap().as_str(), "7707083893");

    let unbound = json!({"Ref_Key": "b2", "Сделка_Key": "00000000-0000-0000-0000-000000000000", "СуммаДокумента": 1});
    let mapped = set.map_record("erp", "customer_order", &unbound).unwrap().remove(0);
    assert!(matches!(mapped.event, CanonicalEvent::InvoiceObserved { deal: None, .. }), "{mapped:?}");

    let shipment = json!({"Ref_Key": "d1", "ЗаказКлиента_Key": "b1", "СуммаДокумента": 100000.25});
    let mapped = set.map_record("erp", "shipment", &shipment).unwrap().remove(0);
    let CanonicalEvent::ShipmentObserved { covers, observed, .. } = mapped.event else { panic!("{mapped:?}") };
    assert_eq!(covers, ExternalRef::new("onec", "erp", "b1"));
    assert_eq!(observed.amount.to_string(), "100000.25 RUB");

    let nothing_covered = json!({"Ref_Key": "d2", "СуммаДокумента": 5});
    let error = set.map_record("erp", "shipment", &nothing_covered).unwrap_err().to_string();
    assert_eq!(error, "binding `erp-shipments`, field `covers` (from `ЗаказКлиента_Key`): required value is missing");
    let no_amount = json!({"Ref_Key": "d3", "ЗаказКлиента_Key": "b1"});
    let error = set.map_record("erp", "shipment", &no_amount).unwrap_err().to_string();
    assert_eq!(error, "binding `erp-shipments`, field `amount` (from `СуммаДокумента`): required value is missing");
}

#[test]
fn a_receipt_pays_each_order_of_its_table_with_the_amount_beside_it() {
    let set = load(&[("set.yaml", RECEIPTS)]).unwrap();
    let receipt = json!({"Ref_Key": "c1", "НомерВходящегоДокумента": " 311 ", "ДатаВходящегоДокумента": "2026-02-05T00:00:00",
        "РасшифровкаПлатежа": [
            {"LineNumber": "1", "Заказ": "b1", "Сумма": "50 000,25"},
            {"LineNumber": "2", "Сумма": 10000},
            {"LineNumber": "3", "Заказ": "00000000-0000-0000-0000-000000000000", "Сумма": 5},
            {"LineNumber": "4", "Заказ": "b2", "Сумма": 700}]});
    let mapped = set.map_record("erp", "bank_receipt", &receipt).unwrap().remove(0);
    let CanonicalEvent::PaymentObserved { source, observed } = mapped.event else { panic!("{mapped:?}") };
    assert_eq!(source, ExternalRef::new("onec", "erp", "c1"));
    assert_eq!(observed.number.as_deref(), Some("311"));
    assert_eq!(observed.date, chrono::NaiveDate::from_ymd_opt(2026, 2, 5));
    let shares: Vec<(String, String)> =
        observed.shares.iter().map(|s| (s.pays.id.clone(), s.amount.to_string())).collect();
    // Lines 2 and 3 name no order (an advance): no share, and the amounts
    // after them stay beside their own orders.
    assert_eq!(shares, [("b1".to_owned(), "50000.25 RUB".to_owned()), ("b2".to_owned(), "700 RUB".to_owned())]);

    let unpriced = json!({"Ref_Key": "c2", "РасшифровкаПлатежа": [{"Заказ": "b1"}]});
    let error = set.map_record("erp", "bank_receipt", &unpriced).unwrap_err().to_string();
    assert_eq!(
        error,
        "binding `erp-receipts`, field `amount` (from `РасшифровкаПлатежа[*].Сумма`): required value is missing"
    );
}
