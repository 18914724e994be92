//! The matcher on small invoice sets: each purpose-text form, INN, amount
//! cases, ambiguity, and payments adding up within one run.

use chrono::{NaiveDate, Utc};
use dealbridge_core::model::{Inn, InvoiceKind, Money, Party, Payment, PaymentDirection};
use dealbridge_core::store::OpenInvoice;
use rust_decimal::Decimal;
use uuid::Uuid;

use super::*;

const CLIENT_INN: &str = "7707083893";
const OTHER_INN: &str = "7702070139";

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 2, d).unwrap()
}

fn rub(amount: i64) -> Money {
    Money::new(Decimal::from(amount), "RUB").unwrap()
}

fn invoice(number: &str, total: i64, inn: Option<&str>) -> OpenInvoice {
    OpenInvoice {
        id: Uuid::now_v7(),
        deal_id: Some(Uuid::now_v7()),
        kind: InvoiceKind::Invoice,
        number: number.into(),
        date: day(1),
        client_inn: inn.map(str::to_owned),
        total: rub(total),
        paid: rub(0),
    }
}

fn payment(purpose: &str, amount: i64, inn: Option<&str>) -> Payment {
    Payment {
        id: Uuid::now_v7(),
        direction: PaymentDirection::Incoming,
        document_number: "1".into(),
        date: day(5),
        amount: rub(amount),
        payer: Party { name: "ООО Ромашка".into(), inn: inn.map(Inn::new), ..Default::default() },
        payee: Party::default(),
        purpose: purpose.into(),
        invoice_id: None,
        custom_fields: Default::default(),
        external_refs: Vec::new(),
        recorded_at: Utc::now(),
    }
}

fn matched(decision: &Decision) -> (usize, u8, Vec<String>) {
    match decision {
        Decision::Matched { invoice, confidence, reasons, .. } => {
            (*invoice, *confidence, reasons.iter().map(|r| r.code.clone()).collect())
        }
        other => panic!("expected a match, got {other:?}"),
    }
}

fn review_reason(decision: &Decision) -> &str {
    match decision {
        Decision::Review(note) => &note.reason,
        other => panic!("expected review, got {other:?}"),
    }
}

#[test]
fn every_purpose_form_finds_its_invoice() {
    let invoices = vec![invoice("123", 100_000, None), invoice("А-123", 5_000, None), invoice("77", 900, None)];
    let forms = [
        ("Оплата по счету № 123 от 01.02.2024", 0),
        ("Оплата сч. 123 за станки", 0),
        ("оплата сч.123", 0),
        ("Оплата по сч.№А-123", 1),
        ("Оплата по сч № A-123 (латинская A)", 1),
        ("по счету А123", 1),
        ("ОПЛАТА ПО СЧЕТУ N 77 В Т.Ч. НДС", 2),
    ];
    for (purpose, expected) in forms {
        let mut matcher = PaymentMatcher::new(&invoices, MatchRules::default());
        let (got, _, reasons) = matched(&matcher.decide(&payment(purpose, 100, None)));
        assert_eq!(got, expected, "{purpose}");
        assert!(reasons.iter().any(|r| r == "number_exact"), "{purpose}: {reasons:?}");
    }
}

#[test]
fn the_full_evidence_gives_full_confidence() {
    let invoices = vec![invoice("123", 100_000, Some(CLIENT_INN))];
    let mut matcher = PaymentMatcher::new(&invoices, MatchRules::default());
    let (_, confidence, reasons) =
        matched(&matcher.decide(&payment("Оплата по счету № 123 от 01.02.2024", 100_000, Some(CLIENT_INN))));
    assert_eq!(confidence, 100);
    assert_eq!(reasons, ["number_exact", "date_equal", "inn_equal", "amount_exact", "date_window"]);
}

#[test]
fn digits_of_a_prefixed_number_match_with_supporting_evidence() {
    let invoices = vec![invoice("ТД00-000123", 40_000, None)];
    let mut matcher = PaymentMatcher::new(&invoices, MatchRules::default());
    let (_, confidence, reasons) = matched(&matcher.decide(&payment("Оплата по счету 123", 40_000, None)));
    assert_eq!(reasons[0], "number_digits");
    assert_eq!(confidence, 60);
    // Digits alone with a partial amount are not enough.
    let mut matcher = PaymentMatcher::new(&invoices, MatchRules::default());
    assert_eq!(review_reason(&matcher.decide(&payment("Оплата по счету 123", 1_000, None))), "weak");
}

#[test]
fn the_payer_inn_alone_matches_an_exact_amount() {
    let invoices = vec![invoice("9", 12_000, Some(CLIENT_INN)), invoice("10", 30_000, Some(CLIENT_INN))];
    let mut matcher = PaymentMatcher::new(&invoices, MatchRules::default());
    let (got, _, reasons) = matched(&matcher.decide(&payment("Оплата за оборудование", 30_000, Some(CLIENT_INN))));
    assert_eq!(got, 1);
    assert_eq!(reasons, ["inn_equal", "amount_exact", "date_window"]);
    // A partial amount by INN alone could be either invoice.
    let mut matcher = PaymentMatcher::new(&invoices, MatchRules::default());
    let decision = matcher.decide(&payment("Оплата за оборудование", 1_000, Some(CLIENT_INN)));
    assert!(matches!(review_reason(&decision), "weak" | "ambiguous"));
}

#[test]
fn an_invalid_payer_inn_is_not_used() {
    let invoices = vec![invoice("10", 30_000, Some("7707083894"))];
    let mut matcher = PaymentMatcher::new(&invoices, MatchRules::default());
    // 7707083894 fails its check digit: no INN evidence, nothing to go on.
    assert_eq!(review_reason(&matcher.decide(&payment("Оплата", 30_000, Some("7707083894")))), "no_reference");
}

#[test]
fn another_payers_inn_counts_against_the_number() {
    let invoices = vec![invoice("123", 100_000, Some(CLIENT_INN))];
    let mut matcher = PaymentMatcher::new(&invoices, MatchRules::default());
    let decision = matcher.decide(&payment("Оплата по счету 123", 40_000, Some(OTHER_INN)));
    assert_eq!(review_reason(&decision), "weak");
    let Decision::Review(note) = decision else { unreachable!() };
    assert_eq!(note.candidates.len(), 1);
    assert!(note.candidates[0].reasons.iter().any(|r| r.code == "inn_differs"));
}

#[test]
fn same_number_for_two_clients_is_settled_by_inn_or_goes_to_review() {
    let invoices = vec![invoice("55", 10_000, Some(CLIENT_INN)), invoice("55", 10_000, Some(OTHER_INN))];
    let mut matcher = PaymentMatcher::new(&invoices, MatchRules::default());
    assert_eq!(matched(&matcher.decide(&payment("Оплата по счету 55", 10_000, Some(OTHER_INN)))).0, 1);
    let mut matcher = PaymentMatcher::new(&invoices, MatchRules::default());
    let decision = matcher.decide(&payment("Оплата по счету 55", 10_000, None));
    assert_eq!(review_reason(&decision), "ambiguous");
    let Decision::Review(note) = decision else { unreachable!() };
    assert_eq!(note.candidates.len(), 2);
}

/// Two invoices equal in every piece of evidence: however they are listed,
/// the review shows them in one order, and where no lead is required the
/// one with the later id is chosen — the decision never depends on where
/// an invoice sits (the hub's in-memory copy keeps them in no order).
#[test]
fn equal_candidates_are_ordered_the_same_wherever_they_sit() {
    let note = |list: &[OpenInvoice]| {
        let mut matcher = PaymentMatcher::new(list, MatchRules::default());
        match matcher.decide(&payment("Оплата по сч. 7", 500, None)) {
            Decision::Review(note) => note,
            other => panic!("expected review, got {other:?}"),
        }
    };
    let (a, b) = (invoice("7", 500, None), invoice("7", 500, None));
    assert!(a.id < b.id);
    assert_eq!(note(&[a.clone(), b.clone()]).reason, "ambiguous");
    let ids = |list: &[OpenInvoice]| note(list).candidates.iter().map(|c| c.invoice_id).collect::<Vec<_>>();
    assert_eq!(ids(&[a.clone(), b.clone()]), vec![b.id, a.id]);
    assert_eq!(ids(&[b.clone(), a.clone()]), vec![b.id, a.id]);
    let no_lead = MatchRules { min_score: 0, min_margin: 0, ..MatchRules::default() };
    for list in [[a.clone(), b.clone()], [b.clone(), a.clone()]] {
        let mut matcher = PaymentMatcher::new(&list, no_lead.clone());
        let (at, _, _) = matched(&matcher.decide(&payment("Оплата по сч. 7", 500, None)));
        assert_eq!(matcher.invoice(at).id, b.id);
    }
}

#[test]
fn a_date_in_the_text_tells_this_years_invoice_from_last_years() {
    let mut old = invoice("7", 500, None);
    old.date = NaiveDate::from_ymd_opt(2023, 1, 20).unwrap();
    let invoices = vec![old, invoice("7", 500, None)];
    let mut matcher = PaymentMatcher::new(&invoices, MatchRules::default());
    assert_eq!(matched(&matcher.decide(&payment("Оплата по сч. 7 от 01.02.2024", 500, None))).0, 1);
}

#[test]
fn partial_payments_add_up_and_an_overpayment_is_flagged() {
    let invoices = vec![invoice("123", 100_000, Some(CLIENT_INN))];
    let mut matcher = PaymentMatcher::new(&invoices, MatchRules::default());
    let first = matcher.decide(&payment("Оплата по счету 123", 40_000, Some(CLIENT_INN)));
    let Decision::Matched { paid_before, paid_after, overpaid, reasons, .. } = first else { panic!("{first:?}") };
    assert_eq!((paid_before, paid_after, overpaid), (Decimal::ZERO, Decimal::from(40_000), None));
    assert!(reasons.iter().any(|r| r.code == "amount_partial"));
    let second = matcher.decide(&payment("Оплата по счету 123", 70_000, Some(CLIENT_INN)));
    let Decision::Matched { paid_after, overpaid, reasons, .. } = second else { panic!("{second:?}") };
    assert_eq!((paid_after, overpaid), (Decimal::from(110_000), Some(Decimal::from(10_000))));
    assert!(reasons.iter().any(|r| r.code == "amount_over"));
    // Fully paid now: a third payment finds no open invoice.
    let third = matcher.decide(&payment("Оплата по счету 123", 1_000, Some(CLIENT_INN)));
    assert_eq!(review_reason(&third), "no_open_invoice");
}

#[test]
fn unmatched_and_outgoing_payments() {
    let invoices = vec![invoice("123", 100, None)];
    let mut matcher = PaymentMatcher::new(&invoices, MatchRules::default());
    assert_eq!(review_reason(&matcher.decide(&payment("Возврат займа", 100, None))), "no_reference");
    assert_eq!(review_reason(&matcher.decide(&payment("Оплата по счету 999", 100, None))), "no_open_invoice");
    let mut outgoing = payment("Оплата по счету 123", 100, None);
    outgoing.direction = PaymentDirection::Outgoing;
    assert_eq!(matcher.decide(&outgoing), Decision::NotIncoming);
}

#[test]
fn another_currency_is_not_a_candidate() {
    let invoices = vec![invoice("123", 100, None)];
    let mut matcher = PaymentMatcher::new(&invoices, MatchRules::default());
    let mut euro = payment("Invoice 123", 100, None);
    euro.amount = Money::new(Decimal::from(100), "EUR").unwrap();
    assert_eq!(review_reason(&matcher.decide(&euro)), "no_open_invoice");
}

#[test]
fn number_keys_ignore_case_separators_and_look_alike_letters() {
    assert_eq!(number_key("А-123"), "A123");
    assert_eq!(number_key("a 123"), "A123");
    assert_eq!(number_key("ТД00-000123"), number_key("TД00/000123"));
    assert_eq!(trailing_digits("TD00000123"), Some(123));
    assert_eq!(trailing_digits("A12B"), None);
}

fn shares(decision: &Decision) -> Vec<(usize, Decimal, u8, Vec<String>)> {
    match decision {
        Decision::Split(shares) => shares
            .iter()
            .map(|s| (s.invoice, s.amount, s.confidence, s.reasons.iter().map(|r| r.code.clone()).collect()))
            .collect(),
        other => panic!("expected a split, got {other:?}"),
    }
}

#[test]
fn a_payment_naming_two_invoices_and_paying_their_sum_is_split() {
    let invoices =
        vec![invoice("12", 1_000, Some(CLIENT_INN)), invoice("13", 2_500, Some(CLIENT_INN)), invoice("14", 700, None)];
    for purpose in ["Оплата по счетам № 12, 13 от 01.02.2024", "Оплата сч. 12 и 13", "по сч.№12, сч.№13"]
    {
        let mut matcher = PaymentMatcher::new(&invoices, MatchRules::default());
        let split = shares(&matcher.decide(&payment(purpose, 3_500, Some(CLIENT_INN))));
        assert_eq!(split.len(), 2, "{purpose}");
        assert_eq!((split[0].0, split[0].1), (0, Decimal::from(1_000)), "{purpose}");
        assert_eq!((split[1].0, split[1].1), (1, Decimal::from(2_500)), "{purpose}");
        for (_, _, confidence, codes) in &split {
            assert!(*confidence >= 55, "{purpose}: {confidence}");
            assert!(codes.contains(&"number_exact".to_owned()) && codes.contains(&"amount_split".to_owned()));
            assert!(codes.contains(&"inn_equal".to_owned()), "{purpose}: {codes:?}");
        }
        // Both are paid now: the shares count like matches.
        let again = matcher.decide(&payment("Оплата по счету 12", 100, Some(CLIENT_INN)));
        assert_eq!(review_reason(&again), "no_open_invoice");
    }
}

#[test]
fn a_smaller_amount_covers_the_invoices_in_the_order_named() {
    let invoices = vec![invoice("12", 1_000, Some(CLIENT_INN)), invoice("13", 2_500, Some(CLIENT_INN))];
    let mut matcher = PaymentMatcher::new(&invoices, MatchRules::default());
    // Named 13 first: 13 is paid in full, 12 gets the rest.
    let split = shares(&matcher.decide(&payment("Оплата по счетам 13, 12", 3_000, Some(CLIENT_INN))));
    assert_eq!(
        split.iter().map(|s| (s.0, s.1)).collect::<Vec<_>>(),
        [(1, Decimal::from(2_500)), (0, Decimal::from(500))]
    );
    assert!(split[1].3.contains(&"amount_split_partial".to_owned()));
    // Less than the first invoice owes is a partial payment of one of the
    // two, which the single-invoice decision cannot choose: review.
    let mut matcher = PaymentMatcher::new(&invoices, MatchRules::default());
    let decision = matcher.decide(&payment("Оплата по счетам 12, 13", 400, Some(CLIENT_INN)));
    assert_eq!(review_reason(&decision), "ambiguous");
}

#[test]
fn unclear_splits_go_to_review_or_to_the_single_decision() {
    let ours = |n: &str, total| invoice(n, total, Some(CLIENT_INN));
    // More than both owe together: which invoice the rest is for is unclear.
    let invoices = vec![ours("12", 1_000), ours("13", 2_500)];
    let mut matcher = PaymentMatcher::new(&invoices, MatchRules::default());
    assert_eq!(review_reason(&matcher.decide(&payment("по счетам 12, 13", 5_000, Some(CLIENT_INN)))), "ambiguous");
    // Invoices of two clients are not split over, whoever pays.
    let invoices = vec![ours("12", 1_000), invoice("13", 2_500, Some(OTHER_INN))];
    for inn in [Some(CLIENT_INN), None] {
        let mut matcher = PaymentMatcher::new(&invoices, MatchRules::default());
        let decision = matcher.decide(&payment("по счетам 12, 13", 3_500, inn));
        assert!(!matches!(decision, Decision::Split(_)), "{inn:?}: {decision:?}");
    }
    // A number naming two open invoices of the payer is not a split.
    let invoices = vec![ours("12", 1_000), ours("12", 1_000), ours("13", 2_500)];
    let mut matcher = PaymentMatcher::new(&invoices, MatchRules::default());
    let decision = matcher.decide(&payment("по счетам 12, 13", 3_500, Some(CLIENT_INN)));
    assert!(!matches!(decision, Decision::Split(_)), "{decision:?}");
    // One of the numbers is no open invoice: decided as a single payment.
    let invoices = vec![ours("12", 1_000)];
    let mut matcher = PaymentMatcher::new(&invoices, MatchRules::default());
    let decision = matcher.decide(&payment("по счетам 12, 99", 1_000, Some(CLIENT_INN)));
    assert_eq!(matched(&decision).0, 0);
}

/// An import reads the purpose texts' numbers once and matches with them:
/// it decides as reading them in `decide` does, payment after payment.
#[test]
fn deciding_with_numbers_read_before_decides_the_same() {
    let invoices = vec![invoice("123", 100_000, Some(CLIENT_INN)), invoice("12", 1_000, Some(CLIENT_INN))];
    let payments = [
        payment("Оплата по счету 123", 40_000, Some(CLIENT_INN)),
        payment("Оплата по счетам 12, 123", 61_000, Some(CLIENT_INN)),
        payment("Оплата за оборудование", 500, Some(CLIENT_INN)),
        payment("Возврат займа", 100, None),
    ];
    let mut reading = PaymentMatcher::new(&invoices, MatchRules::default());
    let mut given = PaymentMatcher::new(&invoices, MatchRules::default());
    for p in &payments {
        assert_eq!(given.decide_with(p, &number_references(&p.purpose)), reading.decide(p), "{}", p.purpose);
    }
}
