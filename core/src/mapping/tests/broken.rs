//! Broken files: every problem is reported, at its exact `file:line:column`.

use super::{load, problems};

#[test]
fn bad_indentation_is_a_syntax_error_at_its_line() {
    let found = problems(&[("bad.yaml", "pipelines:\n  sales: [new, won]\n   engineering: [new]\n")]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("bad.yaml:3:"), "{found:?}");
}

#[test]
fn an_unknown_key_points_at_the_key() {
    let found = problems(&[(
        "flows.yaml",
        "pipelines: { sales: [new, won] }\nflows:\n  - name: f\n    wehn: { deal_enters: { pipeline: sales } }\n",
    )]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("flows.yaml:4:5: "), "{found:?}");
    assert!(found[0].contains("wehn"), "{found:?}");
}

#[test]
fn a_wrong_type_points_at_the_value() {
    let found = problems(&[("s.yaml", "settings:\n  max_cascade_depth: many\n")]);
    assert!(found[0].starts_with("s.yaml:2:22: "), "{found:?}");
}

const PIPELINES: &str = "pipelines:\n  sales: [new, payment, won]\n  engineering: [new, calculated]\n";

#[test]
fn bad_expressions_unknown_stages_and_names_are_all_reported_at_their_spot() {
    let flows = "\
flows:
  - name: f1
    when: { deal_enters: { pipeline: sales, stage: paymnt } }
    if: \"deal.amount >\"
    then:
      - move: { stage: wonn }
      - notify: { to: { person: ghost }, text: \"{{ deal.title\" }
  - name: f2
    when: { child_enters: { pipeline: enginering } }
    then:
      - cancel_timer: never-scheduled
      - set_field: { field: custom.nothing, value: \"1\" }
";
    let found = problems(&[("a.yaml", PIPELINES), ("flows.yaml", flows)]);
    let expected = [
        "flows.yaml:3:52: unknown stage `paymnt` in pipeline `sales`",
        "flows.yaml:4:9: bad expression `deal.amount >`",
        "flows.yaml:6:24: unknown stage `wonn` in pipeline `sales`",
        "flows.yaml:7:33: unknown person `ghost`",
        "flows.yaml:7:48: bad template",
        "flows.yaml:9:39: unknown pipeline `enginering`",
        "flows.yaml:11:23: timer `never-scheduled` is cancelled but never scheduled",
        "flows.yaml:12:29: unknown custom field `custom.nothing`",
    ];
    assert_eq!(found.len(), expected.len(), "{found:#?}");
    for (line, prefix) in found.iter().zip(expected) {
        assert!(line.starts_with(prefix), "expected `{prefix}…`, got `{line}`");
    }
}

#[test]
fn problems_in_several_files_are_all_reported() {
    let found = problems(&[
        ("a.yaml", "pipelines:\n  sales: [new, won\n"),
        ("b.yaml", "flows:\n  - name: f\n    when: { deal_enters: { pipeline: sales } }\n    then: []\n"),
    ]);
    assert!(found.iter().any(|l| l.starts_with("a.yaml:")), "{found:?}");
    assert!(found.iter().any(|l| l.starts_with("b.yaml:2:11: flow `f` has no actions")), "{found:?}");
}

#[test]
fn duplicates_across_files_point_at_both() {
    let found = problems(&[("a.yaml", PIPELINES), ("b.yaml", "pipelines:\n  sales: [new]\n")]);
    assert_eq!(found, vec!["b.yaml:2:3: pipeline `sales` is already defined at a.yaml:2:3"]);
}

#[test]
fn binding_problems_point_at_their_spot() {
    let bindings = "\
lookups: { cur: { RUR: RUB } }
bindings:
  - name: b
    connector: crm
    system: bitrix24
    record: deal
    filter: \"record.X ==\"
    id: \"a..b\"
    stage: { from: STAGE_ID, map: nomap }
    fields:
      titel: { from: TITLE }
      amount: { from: SUM, currency: { from: CUR, convert: [{ lookup: nolookup }] } }
      custom.d: { from: D, convert: [decimal], default: \"abc\" }
      title: { from: \"T[*]\" }
";
    let found = problems(&[("a.yaml", PIPELINES), ("b.yaml", bindings)]);
    let expected = [
        "b.yaml:7:13: bad expression",
        "b.yaml:8:9: source path `a..b`: empty key",
        "b.yaml:9:35: unknown stage map `nomap`",
        "b.yaml:11:7: unknown canonical field `titel`",
        "b.yaml:12:61: unknown lookup table `nolookup`",
        "b.yaml:13:57: default `abc`: `abc` is not a number",
        "b.yaml:14:22: `title` holds one value",
    ];
    assert_eq!(found.len(), expected.len(), "{found:#?}");
    for (line, prefix) in found.iter().zip(expected) {
        assert!(line.starts_with(prefix), "expected `{prefix}…`, got `{line}`");
    }
}

#[test]
fn ambiguous_outbound_stages_are_refused_until_chosen() {
    let map = "stage_maps:\n  m:\n    pipeline: sales\n    stages: { A: new, B: new, C: won }\n";
    let found = problems(&[("a.yaml", PIPELINES), ("m.yaml", map)]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("m.yaml:2:3: stage map `m`: canonical stage `new` has several system stages (A, B)"));
    let chosen = format!("{map}    outbound: {{ new: B }}\n");
    assert!(load(&[("a.yaml", PIPELINES), ("m.yaml", &chosen)]).is_ok());
    let wrong = format!("{map}    outbound: {{ new: C }}\n");
    let found = problems(&[("a.yaml", PIPELINES), ("m.yaml", &wrong)]);
    assert!(found[0].starts_with("m.yaml:5:22: outbound stage `C` for `new` must be one of"), "{found:?}");
}

#[test]
fn flow_only_actions_are_checked_against_their_trigger() {
    let flows = "\
flows:
  - name: g
    when: payment_applied
    then:
      - guard: { condition: \"true\", message: \"no\" }
      - mirror_child_stage: { field: title }
      - schedule_timer: { timer: t, after: 3 weeks }
";
    let found = problems(&[("a.yaml", PIPELINES), ("f.yaml", flows)]);
    let expected = [
        "f.yaml:5:9: `guard` works only in a `deal_enters` flow",
        "f.yaml:6:9: `mirror_child_stage` works only in a `child_enters` flow",
        "f.yaml:7:44: `3 weeks` is not a delay",
    ];
    assert_eq!(found.len(), expected.len(), "{found:#?}");
    for (line, prefix) in found.iter().zip(expected) {
        assert!(line.starts_with(prefix), "expected `{prefix}…`, got `{line}`");
    }
}

#[test]
fn document_bindings_say_what_documents_can_say() {
    let bindings = "\
bindings:
  - name: orders
    connector: erp
    system: onec
    record: customer_order
    target: order
    id: Ref_Key
    stage: { from: Этап, map: none }
    covers: { from: ЗаказКлиента_Key }
    fields:
      title: { from: Description }
      total: { from: СуммаДокумента }
  - name: shipments
    connector: erp
    system: onec
    record: shipment
    target: shipment
    id: Ref_Key
    fields:
      paid: { from: СуммаОплаты, currency: { default: RUB } }
";
    let found = problems(&[("a.yaml", PIPELINES), ("docs.yaml", bindings)]);
    let expected = [
        "docs.yaml:8:20: a binding with `target: order` cannot have `stage`",
        "docs.yaml:8:31: unknown stage map `none`",
        "docs.yaml:9:21: a binding with `target: order` cannot have `covers`",
        "docs.yaml:11:7: this binding cannot fill `title`; it fills number, date, total, paid, shipped",
        "docs.yaml:12:7: `total` needs `currency: {from: …, default: …}`",
        "docs.yaml:13:11: a binding with `target: shipment` needs `covers` (the order it ships)",
        "docs.yaml:13:11: a binding with `target: shipment` needs the field `amount`",
        "docs.yaml:20:7: this binding cannot fill `paid`; it fills number, date, amount",
    ];
    assert_eq!(found.len(), expected.len(), "{found:#?}");
    for (line, prefix) in found.iter().zip(expected) {
        assert!(line.starts_with(prefix), "expected `{prefix}…`, got `{line}`");
    }
}

#[test]
fn payment_bindings_name_what_they_pay_and_count_paid_once() {
    let bindings = "\
bindings:
  - name: orders
    connector: erp
    system: onec
    record: customer_order
    target: order
    id: Ref_Key
    fields:
      total: { from: СуммаДокумента, currency: { default: RUB } }
      paid: { from: СуммаОплаты, currency: { default: RUB } }
  - name: receipts
    connector: erp
    system: onec
    record: bank_receipt
    target: payment
    id: Ref_Key
    fields:
      amount: { from: СуммаДокумента, currency: { default: RUB } }
  - name: split
    connector: erp
    system: onec
    record: card_receipt
    target: payment
    id: Ref_Key
    pays: { from: \"Строки[*].Заказ\" }
    fields:
      amount: { from: СуммаДокумента, currency: { default: RUB } }
      total: { from: Итог, currency: { default: RUB } }
";
    let found = problems(&[("a.yaml", PIPELINES), ("pay.yaml", bindings)]);
    let expected = [
        "pay.yaml:10:7: `paid` would count payments twice: binding `receipts` reads the payments of connector `erp`",
        "pay.yaml:11:11: a binding with `target: payment` needs `pays` (the order or invoice it pays)",
        "pay.yaml:27:23: `pays: Строки[*].Заказ` and `amount: СуммаДокумента` must both be list paths",
        "pay.yaml:28:7: this binding cannot fill `total`; it fills number, date, amount",
    ];
    assert_eq!(found.len(), expected.len(), "{found:#?}");
    for (line, prefix) in found.iter().zip(expected) {
        assert!(line.starts_with(prefix), "expected `{prefix}…`, got `{line}`");
    }
}

#[test]
fn a_comment_is_a_text_or_a_text_with_its_deal_and_its_template_is_checked_where_written() {
    let flows = "\
flows:
  - name: c
    when: { child_enters: { pipeline: engineering, stage: calculated } }
    then:
      - comment: \"Расчёт готов: {{ deal.amout }}\"
      - comment: { target: parent, text: \"{{ deal.title\" }
";
    let found = problems(&[("a.yaml", PIPELINES), ("f.yaml", flows)]);
    let expected = ["f.yaml:5:18: unknown deal field `deal.amout`", "f.yaml:6:42: bad template"];
    assert_eq!(found.len(), expected.len(), "{found:#?}");
    for (line, prefix) in found.iter().zip(expected) {
        assert!(line.starts_with(prefix), "expected `{prefix}…`, got `{line}`");
    }
    let good = "\
flows:
  - name: c
    when: { child_enters: { pipeline: engineering, stage: calculated } }
    then:
      - comment: \"Расчёт готов: {{ deal.amount }}\"
      - comment: { target: parent, text: \"Инженер закончил: {{ deal.title }}\" }
";
    assert!(load(&[("a.yaml", PIPELINES), ("f.yaml", good)]).is_ok());
    let typo = "flows:\n  - name: c\n    when: payment_applied\n    then:\n      - comment: { txt: x }\n";
    let found = problems(&[("a.yaml", PIPELINES), ("f.yaml", typo)]);
    assert!(found[0].starts_with("f.yaml:5:") && found[0].contains("txt"), "{found:?}");
}
