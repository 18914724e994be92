//! The payment ledger's scenarios, run on both backends by the conformance
//! suite's macro: an import commits whole and once, a stale computation
//! writes nothing, a manual match needs its payment still in review, and
//! only open invoices are matched against.

use std::collections::HashMap;

use rust_decimal::Decimal;

use super::*;
use crate::model::{Client, Inn, MatchMethod, Money, Party, Payment, PaymentDirection, PaymentMatch, ReviewNote};
use crate::store::invoice_keys::{InvoiceKeys, InvoicePaid, inn_key, is_open, number_key};

const STATEMENT_FILE: &str = "1CClientBankExchange\r\nКонецФайла\r\n";

fn statement(digest: &str) -> NewStatement {
    NewStatement {
        record: StatementRecord {
            id: Uuid::now_v7(),
            digest: digest.into(),
            file_name: Some("kl_to_1c.txt".into()),
            source: "upload".into(),
            format: "1CClientBankExchange 1.03".into(),
            imported_at: now_micros(),
            summary: serde_json::json!({"documents": 2}),
            payments_new: 2,
            payments_known: 0,
        },
        file: StoredFile::compress(STATEMENT_FILE.as_bytes()).unwrap(),
    }
}

fn stored_payment(statement: Uuid, state: PaymentState, amount: &str) -> StoredPayment {
    StoredPayment {
        payment: Payment {
            id: Uuid::now_v7(),
            direction: if state == PaymentState::Outgoing {
                PaymentDirection::Outgoing
            } else {
                PaymentDirection::Incoming
            },
            document_number: "17".into(),
            date: NaiveDate::from_ymd_opt(2025, 3, 20).unwrap(),
            amount: amount.parse().unwrap(),
            payer: Party {
                name: "ООО Ромашка".into(), inn: Some(Inn::new("7707083893")), ..Default::default()
            },
            payee: Party::default(),
            purpose: "Оплата по счету № 123 от 14.03.2025".into(),
            invoice_id: None,
            custom_fields: Default::default(),
            external_refs: Vec::new(),
            recorded_at: now_micros(),
        },
        statement_id: statement,
        state,
        matched: None,
        also_matched: Vec::new(),
        review: (state == PaymentState::Review).then(|| ReviewNote {
            reason: "no_reference".into(),
            detail: "nothing to go on".into(),
            candidates: Vec::new(),
        }),
        notes: Vec::new(),
        updated_at: now_micros(),
    }
}

fn paid(invoice: &Invoice, amount: &str) -> Invoice {
    let mut paid = invoice.clone();
    paid.paid = amount.parse().unwrap();
    paid.status = InvoiceStatus::PartiallyPaid;
    paid
}

async fn an_import_commits_whole_and_once(store: &dyn Store) {
    let mut inv = invoice(None, "123", &[]);
    inv.client =
        Some(Client { name: "ООО Ромашка".into(), inn: Some(Inn::new("7707083893")), ..Default::default() });
    store.apply(&ChangeSet { invoices: vec![inv.clone()], ..Default::default() }).await.unwrap();
    let open = store.open_invoices().await.unwrap();
    assert_eq!(open, vec![OpenInvoice::of(&inv)]);
    assert_eq!(open[0].client_inn.as_deref(), Some("7707083893"));

    let file = statement("digest-1");
    let incoming = stored_payment(file.record.id, PaymentState::Matched, "40000.00 RUB");
    let outgoing = stored_payment(file.record.id, PaymentState::Outgoing, "100 RUB");
    let commit = PaymentCommit {
        statement: Some(file.clone()),
        new_payments: vec![incoming.clone(), outgoing.clone()],
        updated_payments: Vec::new(),
        invoices_read: vec![(inv.id, Decimal::ZERO)],
        changes: ChangeSet { invoices: vec![paid(&inv, "40000.00 RUB")], ..Default::default() },
        invoices_paid: Vec::new(),
    };
    assert_eq!(store.commit_payments(&commit).await.unwrap(), CommitOutcome::Committed);

    assert_eq!(store.get_payment(incoming.payment.id).await.unwrap(), Some(incoming.clone()));
    assert_eq!(store.statement_by_digest("digest-1").await.unwrap(), Some(file.record.clone()));
    assert_eq!(store.get_statement(file.record.id).await.unwrap(), Some(file.record.clone()));
    let stored_file = store.statement_file(file.record.id).await.unwrap().expect("the file is kept");
    assert_eq!((stored_file.encoding, stored_file.original().unwrap()), (FileEncoding::Zstd, STATEMENT_FILE.into()));
    assert_eq!(store.statement_file(Uuid::now_v7()).await.unwrap(), None);
    let of_statement = store.payments_of_statement(file.record.id, 100).await.unwrap();
    assert_eq!(of_statement, vec![incoming.clone(), outgoing.clone()], "file order");
    assert_eq!(store.payments_of_statement(file.record.id, 1).await.unwrap(), vec![incoming.clone()]);
    let counts = store.payment_counts().await.unwrap();
    assert_eq!((counts[&PaymentState::Matched], counts[&PaymentState::Outgoing]), (1, 1));
    assert_eq!(counts[&PaymentState::Review], 0, "every state is counted");
    let known = store.known_payments(&[outgoing.payment.id, Uuid::now_v7()]).await.unwrap();
    assert_eq!(known, vec![outgoing.payment.id]);
    let open = store.open_invoices().await.unwrap();
    assert_eq!(open[0].paid.amount, Decimal::new(4_000_000, 2), "partially paid is still open");

    // The same file again: nothing is written, not even a payment it adds.
    let mut again = commit.clone();
    again.statement =
        Some(NewStatement { record: StatementRecord { id: Uuid::now_v7(), ..file.record.clone() }, ..file });
    again.new_payments = vec![stored_payment(Uuid::now_v7(), PaymentState::Review, "1 RUB")];
    again.invoices_read.clear();
    assert_eq!(store.commit_payments(&again).await.unwrap(), CommitOutcome::StatementKnown(commit_id(&commit)));
    assert!(store.get_payment(again.new_payments[0].payment.id).await.unwrap().is_none());
}

fn commit_id(commit: &PaymentCommit) -> Uuid {
    commit.statement.as_ref().unwrap().record.id
}

async fn a_stale_payment_commit_writes_nothing(store: &dyn Store) {
    let inv = invoice(None, "7", &[]);
    store.apply(&ChangeSet { invoices: vec![inv.clone()], ..Default::default() }).await.unwrap();
    let file = statement("digest-2");
    let payment = stored_payment(file.record.id, PaymentState::Matched, "5 RUB");
    // Computed from a paid amount that is not the stored one.
    let commit = PaymentCommit {
        statement: Some(file.clone()),
        new_payments: vec![payment.clone()],
        updated_payments: Vec::new(),
        invoices_read: vec![(inv.id, Decimal::ONE)],
        changes: ChangeSet { invoices: vec![paid(&inv, "6 RUB")], ..Default::default() },
        invoices_paid: Vec::new(),
    };
    assert!(matches!(store.commit_payments(&commit).await.unwrap(), CommitOutcome::Stale(_)));
    assert!(store.statement_by_digest("digest-2").await.unwrap().is_none());
    assert!(store.get_payment(payment.payment.id).await.unwrap().is_none());
    assert_eq!(store.get_invoice(inv.id).await.unwrap().unwrap().paid.amount, Decimal::ZERO);

    // A payment another import stored meanwhile.
    let first = PaymentCommit { invoices_read: vec![(inv.id, Decimal::ZERO)], ..commit.clone() };
    assert_eq!(store.commit_payments(&first).await.unwrap(), CommitOutcome::Committed);
    let other = PaymentCommit {
        statement: Some(statement("digest-3")),
        new_payments: vec![payment.clone()],
        invoices_read: Vec::new(),
        changes: ChangeSet::default(),
        updated_payments: Vec::new(),
        invoices_paid: Vec::new(),
    };
    assert!(matches!(store.commit_payments(&other).await.unwrap(), CommitOutcome::Stale(_)));
    assert!(store.statement_by_digest("digest-3").await.unwrap().is_none());
}

async fn a_manual_match_needs_its_payment_still_in_review(store: &dyn Store) {
    let file = statement("digest-4");
    let waiting = stored_payment(file.record.id, PaymentState::Review, "10 RUB");
    let import = PaymentCommit { statement: Some(file), new_payments: vec![waiting.clone()], ..Default::default() };
    assert_eq!(store.commit_payments(&import).await.unwrap(), CommitOutcome::Committed);
    assert_eq!(store.payments_in_state(PaymentState::Review, 10).await.unwrap(), vec![waiting.clone()]);

    let mut matched = waiting.clone();
    matched.state = PaymentState::Matched;
    matched.review = None;
    let manual =
        PaymentCommit { updated_payments: vec![(matched.clone(), PaymentState::Review)], ..Default::default() };
    assert_eq!(store.commit_payments(&manual).await.unwrap(), CommitOutcome::Committed);
    assert_eq!(store.get_payment(waiting.payment.id).await.unwrap(), Some(matched));
    assert!(store.payments_in_state(PaymentState::Review, 10).await.unwrap().is_empty());
    assert!(matches!(store.commit_payments(&manual).await.unwrap(), CommitOutcome::Stale(_)), "matched once");
}

fn automatic_match(invoice: Uuid, number: &str, amount: &str) -> PaymentMatch {
    let amount: Money = amount.parse().unwrap();
    PaymentMatch {
        invoice_id: invoice,
        invoice_number: number.into(),
        deal_id: None,
        method: MatchMethod::Automatic,
        confidence: 90,
        reasons: Vec::new(),
        paid_before: Money { amount: Decimal::ZERO, currency: amount.currency.clone() },
        paid_total: amount.clone(),
        invoice_total: amount,
        overpaid: None,
        matched_by: None,
        matched_at: now_micros(),
    }
}

/// A payment split over three invoices is applied to each: the engine
/// finds it by any of them (an ERP's receipt for the last one is the same
/// money). A manual correction that drops a share drops it here too.
async fn a_split_payment_is_found_by_each_of_its_invoices(store: &dyn Store) {
    let [first, second, third, other] = [Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7()];
    let file = statement("digest-split");
    let mut split = stored_payment(file.record.id, PaymentState::Matched, "600 RUB");
    split.payment.invoice_id = Some(first);
    split.matched = Some(automatic_match(first, "12", "100 RUB"));
    split.also_matched = vec![automatic_match(second, "13", "200 RUB"), automatic_match(third, "14", "300 RUB")];
    let single = stored_payment(file.record.id, PaymentState::Matched, "5 RUB");
    let mut single = single;
    single.payment.invoice_id = Some(other);
    single.matched = Some(automatic_match(other, "15", "5 RUB"));
    let import = PaymentCommit {
        statement: Some(file),
        new_payments: vec![split.clone(), single.clone()],
        ..Default::default()
    };
    assert_eq!(store.commit_payments(&import).await.unwrap(), CommitOutcome::Committed);

    for invoice in [first, second, third] {
        assert_eq!(store.payments_applied_to(&[invoice]).await.unwrap(), vec![split.clone()], "by {invoice}");
    }
    let both = store.payments_applied_to(&[third, other, second]).await.unwrap();
    assert_eq!(both, vec![split.clone(), single.clone()], "each once, oldest first");
    assert!(store.payments_applied_to(&[Uuid::now_v7()]).await.unwrap().is_empty());

    let mut corrected = split.clone();
    corrected.also_matched.truncate(1);
    let manual =
        PaymentCommit { updated_payments: vec![(corrected.clone(), PaymentState::Matched)], ..Default::default() };
    assert_eq!(store.commit_payments(&manual).await.unwrap(), CommitOutcome::Committed);
    assert_eq!(store.payments_applied_to(&[second]).await.unwrap(), vec![corrected.clone()]);
    assert!(store.payments_applied_to(&[third]).await.unwrap().is_empty(), "the dropped share is gone");
}

/// A statement's tally counts its payments by state and overpayment as
/// they stand, a manual match included; other statements' payments not.
async fn a_statements_tally_counts_states_and_overpayments(store: &dyn Store) {
    let file = statement("digest-tally");
    let overpaying = |amount: &str| {
        let mut p = stored_payment(file.record.id, PaymentState::Matched, amount);
        let mut matched = automatic_match(Uuid::now_v7(), "21", "100 RUB");
        matched.overpaid = Some("50 RUB".parse().unwrap());
        p.matched = Some(matched);
        p
    };
    let mut exact = stored_payment(file.record.id, PaymentState::Matched, "100 RUB");
    exact.matched = Some(automatic_match(Uuid::now_v7(), "22", "100 RUB"));
    let waiting = stored_payment(file.record.id, PaymentState::Review, "150 RUB");
    let payments = vec![
        overpaying("150 RUB"),
        exact,
        waiting.clone(),
        stored_payment(file.record.id, PaymentState::Outgoing, "9 RUB"),
        overpaying("170 RUB"),
    ];
    let import = PaymentCommit { statement: Some(file.clone()), new_payments: payments, ..Default::default() };
    assert_eq!(store.commit_payments(&import).await.unwrap(), CommitOutcome::Committed);
    let other = statement("digest-tally-other");
    let elsewhere = stored_payment(other.record.id, PaymentState::Review, "1 RUB");
    let import = PaymentCommit { statement: Some(other), new_payments: vec![elsewhere], ..Default::default() };
    assert_eq!(store.commit_payments(&import).await.unwrap(), CommitOutcome::Committed);

    let tally = store.statement_tally(file.record.id).await.unwrap();
    let states = |t: &StatementTally| PaymentState::ALL.map(|s| t.by_state[&s]);
    assert_eq!((states(&tally), tally.overpaid), ([3, 1, 1], 2), "matched, review, outgoing; overpaid");

    let mut by_hand = overpaying("150 RUB");
    by_hand.payment = waiting.payment.clone();
    by_hand.review = None;
    let manual = PaymentCommit { updated_payments: vec![(by_hand, PaymentState::Review)], ..Default::default() };
    assert_eq!(store.commit_payments(&manual).await.unwrap(), CommitOutcome::Committed);
    let tally = store.statement_tally(file.record.id).await.unwrap();
    assert_eq!((states(&tally), tally.overpaid), ([4, 0, 1], 3));
    let unknown = store.statement_tally(Uuid::now_v7()).await.unwrap();
    assert_eq!((states(&unknown), unknown.overpaid), ([0, 0, 0], 0));
}

async fn only_open_invoices_are_matched_against(store: &dyn Store) {
    let open = invoice(None, "1", &[]);
    let partly = paid(&invoice(None, "2", &[]), "1 RUB");
    let mut done = invoice(None, "3", &[]);
    done.status = InvoiceStatus::Paid;
    let mut cancelled = invoice(None, "4", &[]);
    cancelled.status = InvoiceStatus::Cancelled;
    let all = vec![open.clone(), partly.clone(), done.clone(), cancelled];
    store.apply(&ChangeSet { invoices: all, ..Default::default() }).await.unwrap();
    let numbers: Vec<String> = store.open_invoices().await.unwrap().into_iter().map(|i| i.number).collect();
    assert_eq!(numbers, ["1", "2"]);
    let by_ids = store.invoices_by_ids(&[done.id, Uuid::now_v7(), open.id]).await.unwrap();
    assert_eq!(by_ids, vec![open, done], "by id, unknown ids skipped");
    let _ = Money::zero("RUB");
}

fn of_client(mut invoice: Invoice, inn: &str) -> Invoice {
    invoice.client =
        Some(Client { name: format!("Клиент {inn}"), inn: Some(Inn::new(inn)), ..Default::default() });
    invoice
}

async fn open_invoices_are_found_by_their_keys(store: &dyn Store) {
    let lettered = of_client(invoice(None, "А-123", &[]), "7707083893");
    let long = of_client(invoice(None, "ТД00-000123", &[]), "500100732259");
    let other = of_client(invoice(None, "77", &[]), "7707083893");
    let mut done = of_client(invoice(None, "a123", &[]), "7707083893");
    done.status = InvoiceStatus::Paid;
    let all = vec![lettered.clone(), long.clone(), other.clone(), done];
    store.apply(&ChangeSet { invoices: all, ..Default::default() }).await.unwrap();
    let found = |keys: InvoiceKeys| async move {
        let found = store.open_invoices_by_keys(&keys).await.unwrap();
        found.into_iter().map(|i| i.number).collect::<Vec<_>>()
    };
    let by_id = |mut invoices: Vec<&Invoice>| {
        invoices.sort_by_key(|i| i.id);
        invoices.into_iter().map(|i| i.number.clone()).collect::<Vec<_>>()
    };
    let numbers = InvoiceKeys { numbers: vec![number_key("a-123")], ..Default::default() };
    assert_eq!(found(numbers).await, ["А-123"], "folded numbers; paid invoices never");
    let digits = InvoiceKeys { digits: vec![123], ..Default::default() };
    assert_eq!(found(digits).await, by_id(vec![&lettered, &long]));
    let inn = InvoiceKeys { inns: vec![inn_key("7707083893").unwrap()], ..Default::default() };
    assert_eq!(found(inn).await, by_id(vec![&lettered, &other]));
    let all_keys =
        InvoiceKeys { numbers: vec!["77".into()], digits: vec![123], inns: vec![inn_key("7707083893").unwrap()] };
    assert_eq!(found(all_keys).await, by_id(vec![&lettered, &long, &other]), "each once, by id");
    // Lists as long as a large statement's (SQLite looks them up in parts
    // side by side): an invoice found by keys of different parts and lists
    // comes once, and the order stays by id.
    let filler = |n: u64| (0..n).map(|k| format!("nothing-{k}"));
    let mut numbers: Vec<String> = vec![number_key("А-123")];
    numbers.extend(filler(2_500));
    numbers.push(number_key("77"));
    let mut inns: Vec<u64> = (1..2_500).collect();
    inns.push(inn_key("7707083893").unwrap());
    let long_keys = InvoiceKeys { numbers, digits: vec![123], inns };
    assert_eq!(found(long_keys).await, by_id(vec![&lettered, &long, &other]), "long lists: each once, by id");
    assert!(found(InvoiceKeys::default()).await.is_empty());
    let open = store.open_invoices().await.unwrap();
    assert_eq!(
        open,
        by_id(vec![&lettered, &long, &other])
            .iter()
            .map(|n| { OpenInvoice::of([&lettered, &long, &other].into_iter().find(|i| &i.number == n).unwrap()) })
            .collect::<Vec<_>>()
    );
}

async fn paid_amounts_are_written_into_the_stored_invoice(store: &dyn Store) {
    let mut inv = of_client(invoice(None, "9", &[("onec", "erp", "СЧ-9")]), "7707083893");
    inv.total = "100 RUB".parse().unwrap();
    inv.custom_fields.insert("note".into(), "kept".into());
    store.apply(&ChangeSet { invoices: vec![inv.clone()], ..Default::default() }).await.unwrap();
    let at = now_micros();
    let pay = |amount: &str, status: InvoiceStatus| InvoicePaid {
        id: inv.id,
        paid: amount.parse().unwrap(),
        status,
        updated_at: at,
    };
    let commit = PaymentCommit {
        invoices_read: vec![(inv.id, Decimal::ZERO)],
        invoices_paid: vec![pay("30 RUB", InvoiceStatus::PartiallyPaid), pay("40 RUB", InvoiceStatus::PartiallyPaid)],
        ..Default::default()
    };
    assert_eq!(store.commit_payments(&commit).await.unwrap(), CommitOutcome::Committed);
    let mut expected = inv.clone();
    expected.paid = "40 RUB".parse().unwrap();
    expected.status = InvoiceStatus::PartiallyPaid;
    expected.updated_at = at;
    assert_eq!(store.get_invoice(inv.id).await.unwrap(), Some(expected.clone()), "the last one; the rest as stored");
    assert_eq!(store.find_invoice(&inv.external_refs[0]).await.unwrap(), Some(expected.clone()), "refs kept");
    assert_eq!(store.open_invoices().await.unwrap(), vec![OpenInvoice::of(&expected)]);

    // Computed from an amount that is no longer stored: nothing changes.
    let stale = PaymentCommit {
        invoices_read: vec![(inv.id, Decimal::ZERO)],
        invoices_paid: vec![pay("100 RUB", InvoiceStatus::Paid)],
        ..Default::default()
    };
    assert!(matches!(store.commit_payments(&stale).await.unwrap(), CommitOutcome::Stale(_)));
    assert_eq!(store.get_invoice(inv.id).await.unwrap(), Some(expected.clone()));

    // An invoice that is not stored fails the whole commit.
    let file = statement("digest-paid");
    let unknown = PaymentCommit {
        statement: Some(file),
        invoices_paid: vec![InvoicePaid { id: Uuid::now_v7(), ..pay("1 RUB", InvoiceStatus::PartiallyPaid) }],
        ..Default::default()
    };
    assert!(store.commit_payments(&unknown).await.is_err());
    assert!(store.statement_by_digest("digest-paid").await.unwrap().is_none());

    let full = PaymentCommit {
        invoices_read: vec![(inv.id, Decimal::new(40, 0))],
        invoices_paid: vec![pay("100 RUB", InvoiceStatus::Paid)],
        ..Default::default()
    };
    assert_eq!(store.commit_payments(&full).await.unwrap(), CommitOutcome::Committed);
    assert_eq!(store.get_invoice(inv.id).await.unwrap().unwrap().status, InvoiceStatus::Paid);
    assert!(store.open_invoices().await.unwrap().is_empty(), "a paid invoice is no longer open");
    let by_number = InvoiceKeys { numbers: vec!["9".into()], ..Default::default() };
    assert!(store.open_invoices_by_keys(&by_number).await.unwrap().is_empty());
}

/// Every read of `inv` (of `deal`) gives `expected`, and the matching reads
/// see its paid amount and status.
async fn reads_as(store: &dyn Store, inv: &Invoice, deal: Uuid, expected: Invoice) {
    assert_eq!(store.get_invoice(inv.id).await.unwrap(), Some(expected.clone()), "get_invoice");
    assert_eq!(store.find_invoice(&inv.external_refs[0]).await.unwrap(), Some(expected.clone()), "find_invoice");
    assert_eq!(store.invoices_of_deals(&[deal]).await.unwrap(), vec![expected.clone()], "invoices_of_deals");
    assert_eq!(store.invoices_by_ids(&[inv.id]).await.unwrap(), vec![expected.clone()], "invoices_by_ids");
    let open = if is_open(expected.status) { vec![OpenInvoice::of(&expected)] } else { Vec::new() };
    assert_eq!(store.open_invoices().await.unwrap(), open, "open_invoices");
    let keys = InvoiceKeys { numbers: vec![number_key(&inv.number)], ..Default::default() };
    assert_eq!(store.open_invoices_by_keys(&keys).await.unwrap(), open, "open_invoices_by_keys");
}

/// A paid amount a payment wrote beside the document (`invoice_match`) is
/// what every read of the invoice sees; writing the document whole after
/// that replaces it, and the next payment compares with the new amount.
async fn every_invoice_read_sees_the_paid_amount(store: &dyn Store) {
    let deal = Uuid::now_v7();
    let mut inv = of_client(invoice(Some(deal), "ТД-77", &[("onec", "erp", "СЧ-77")]), "7707083893");
    inv.total = "100 RUB".parse().unwrap();
    store.apply(&ChangeSet { invoices: vec![inv.clone()], ..Default::default() }).await.unwrap();
    // Nanoseconds and all: the document reads back as a whole rewrite would.
    let at = Utc::now();
    let pay = |amount: &str, status: InvoiceStatus| InvoicePaid {
        id: inv.id,
        paid: amount.parse().unwrap(),
        status,
        updated_at: at,
    };
    let commit = PaymentCommit {
        invoices_read: vec![(inv.id, Decimal::ZERO)],
        invoices_paid: vec![pay("30 RUB", InvoiceStatus::PartiallyPaid)],
        ..Default::default()
    };
    assert_eq!(store.commit_payments(&commit).await.unwrap(), CommitOutcome::Committed);
    let mut expected = inv.clone();
    expected.paid = "30 RUB".parse().unwrap();
    expected.status = InvoiceStatus::PartiallyPaid;
    expected.updated_at = at;
    reads_as(store, &inv, deal, expected.clone()).await;

    // The engine writes the invoice whole, as read, with a change of its own.
    let mut rewritten = store.get_invoice(inv.id).await.unwrap().unwrap();
    rewritten.custom_fields.insert("note".into(), "shipped".into());
    rewritten.paid = "50 RUB".parse().unwrap();
    store.apply(&ChangeSet { invoices: vec![rewritten.clone()], ..Default::default() }).await.unwrap();
    reads_as(store, &inv, deal, rewritten.clone()).await;

    // The payment computed from the earlier amount is stale; from the new one it is not.
    let stale = PaymentCommit {
        invoices_read: vec![(inv.id, Decimal::new(30, 0))],
        invoices_paid: vec![pay("100 RUB", InvoiceStatus::Paid)],
        ..Default::default()
    };
    assert!(matches!(store.commit_payments(&stale).await.unwrap(), CommitOutcome::Stale(_)));
    reads_as(store, &inv, deal, rewritten.clone()).await;
    let fresh = PaymentCommit { invoices_read: vec![(inv.id, Decimal::new(50, 0))], ..stale };
    assert_eq!(store.commit_payments(&fresh).await.unwrap(), CommitOutcome::Committed);
    let mut done = rewritten;
    done.paid = "100 RUB".parse().unwrap();
    done.status = InvoiceStatus::Paid;
    done.updated_at = at;
    reads_as(store, &inv, deal, done).await;
}

/// The invoices written since a generation, whoever wrote them: invoices
/// written whole, paid amounts a payment commit wrote; writes of anything
/// else, and a stale commit, leave the counter where it was.
async fn invoice_changes_list_what_was_written_since(store: &dyn Store) {
    let Some(start) = store.invoice_changes(0).await.unwrap() else {
        assert_eq!(store.backend(), Backend::Postgres, "only PostgreSQL does not number its invoice writes");
        return;
    };
    assert!(start.open.is_empty() && start.closed.is_empty());
    assert!(start.generation >= 1, "a reader from 0 is at 1 or later after");
    let sorted = |mut invoices: Vec<OpenInvoice>| {
        invoices.sort_by_key(|i| i.id);
        invoices
    };
    let a = of_client(invoice(None, "1", &[]), "7707083893");
    let b = invoice(None, "2", &[]);
    let mut done = invoice(None, "3", &[]);
    done.status = InvoiceStatus::Paid;
    let written = vec![a.clone(), b.clone(), done.clone()];
    store.apply(&ChangeSet { invoices: written, ..Default::default() }).await.unwrap();

    let everything = store.invoice_changes(0).await.unwrap().unwrap();
    assert_eq!(sorted(everything.open), vec![OpenInvoice::of(&a), OpenInvoice::of(&b)]);
    assert!(everything.closed.is_empty(), "a read from 0 lists the open ones only");
    let since = store.invoice_changes(start.generation).await.unwrap().unwrap();
    assert!(since.generation > start.generation);
    assert_eq!(sorted(since.open), vec![OpenInvoice::of(&a), OpenInvoice::of(&b)]);
    assert_eq!(since.closed, vec![done.id]);
    assert_eq!(everything.generation, since.generation);

    store.apply(&ChangeSet { deals: vec![deal("sales", "new", &[])], ..Default::default() }).await.unwrap();
    let quiet = store.invoice_changes(since.generation).await.unwrap().unwrap();
    assert_eq!((quiet.generation, quiet.open.len(), quiet.closed.len()), (since.generation, 0, 0));

    let at = now_micros();
    let pay = |id: Uuid, amount: &str, status: InvoiceStatus| InvoicePaid {
        id,
        paid: amount.parse().unwrap(),
        status,
        updated_at: at,
    };
    let stale = PaymentCommit {
        invoices_read: vec![(a.id, Decimal::ONE)],
        invoices_paid: vec![pay(a.id, "2 RUB", InvoiceStatus::PartiallyPaid)],
        ..Default::default()
    };
    assert!(matches!(store.commit_payments(&stale).await.unwrap(), CommitOutcome::Stale(_)));
    let after_stale = store.invoice_changes(since.generation).await.unwrap().unwrap();
    assert_eq!((after_stale.generation, after_stale.open.len()), (since.generation, 0), "rolled back");

    let commit = PaymentCommit {
        invoices_read: vec![(a.id, Decimal::ZERO), (b.id, Decimal::ZERO)],
        invoices_paid: vec![
            pay(a.id, "1250000.50 RUB", InvoiceStatus::Paid),
            pay(b.id, "1 RUB", InvoiceStatus::PartiallyPaid),
        ],
        ..Default::default()
    };
    assert_eq!(store.commit_payments(&commit).await.unwrap(), CommitOutcome::Committed);
    let paid = store.invoice_changes(since.generation).await.unwrap().unwrap();
    assert!(paid.generation > since.generation);
    let mut b_paid = OpenInvoice::of(&b);
    b_paid.paid = "1 RUB".parse().unwrap();
    assert_eq!(paid.open, vec![b_paid.clone()]);
    assert_eq!(paid.closed, vec![a.id]);
    let now_open = store.invoice_changes(0).await.unwrap().unwrap();
    assert_eq!(now_open.open, vec![b_paid]);
    assert_eq!(now_open.generation, paid.generation);
}

/// A payment belongs to a stored statement: payments naming a statement
/// that is not stored make the whole commit fail, and none of them stays.
/// (On SQLite the key is checked when the transaction commits, migration
/// 0016: the failure comes from `COMMIT`.)
async fn a_payment_needs_its_statement_stored(store: &dyn Store) {
    let file = statement("digest-orphans");
    let stored = stored_payment(file.record.id, PaymentState::Review, "10 RUB");
    let import = PaymentCommit { statement: Some(file), new_payments: vec![stored.clone()], ..Default::default() };
    assert_eq!(store.commit_payments(&import).await.unwrap(), CommitOutcome::Committed);

    let nowhere = Uuid::now_v7();
    let orphans = vec![
        stored_payment(nowhere, PaymentState::Review, "20 RUB"),
        stored_payment(nowhere, PaymentState::Review, "30 RUB"),
    ];
    let commit = PaymentCommit { new_payments: orphans.clone(), ..Default::default() };
    let refused = store.commit_payments(&commit).await;
    assert!(refused.is_err(), "payments of an unknown statement are refused: {refused:?}");
    for orphan in &orphans {
        assert_eq!(store.get_payment(orphan.payment.id).await.unwrap(), None);
    }
    assert_eq!(store.get_payment(stored.payment.id).await.unwrap(), Some(stored));
}

/// An import paying thousands of invoices writes them in statements of
/// several sizes (on SQLite while the next is bound): one amount read that
/// is no longer stored, among the last rows, still makes the whole commit
/// stale, and the commit computed again writes every row. (How large
/// imports read back on SQLite: `large_import_on_sqlite` below.)
async fn a_stale_amount_among_many_fails_the_whole_commit(store: &dyn Store) {
    const INVOICES: usize = 4_445; // one statement of each size: 4,000 + 400 + 40 + 4 + 1
    const PAYMENTS: usize = 557; // 500 + 50 + 5 + 1 + 1
    let invoices: Vec<Invoice> = (0..INVOICES).map(|k| invoice(None, &format!("L-{k}"), &[])).collect();
    store.apply(&ChangeSet { invoices: invoices.clone(), ..Default::default() }).await.unwrap();
    let at = now_micros();
    let paid: Vec<InvoicePaid> = invoices
        .iter()
        .enumerate()
        .map(|(k, i)| InvoicePaid {
            id: i.id,
            paid: format!("{} RUB", k % 997 + 1).parse().unwrap(),
            status: InvoiceStatus::PartiallyPaid,
            updated_at: at,
        })
        .collect();
    let file = statement("digest-large");
    let payments: Vec<StoredPayment> = (0..PAYMENTS)
        .map(|k| stored_payment(file.record.id, PaymentState::Review, &format!("{} RUB", k + 1)))
        .collect();
    let mut read: Vec<(Uuid, Decimal)> = invoices.iter().map(|i| (i.id, Decimal::ZERO)).collect();
    read[INVOICES - 2].1 = Decimal::ONE;
    let stale = PaymentCommit {
        statement: Some(file.clone()),
        new_payments: payments.clone(),
        invoices_read: read,
        invoices_paid: paid.clone(),
        ..Default::default()
    };
    assert!(matches!(store.commit_payments(&stale).await.unwrap(), CommitOutcome::Stale(_)));
    assert!(store.statement_by_digest("digest-large").await.unwrap().is_none(), "nothing written");
    assert!(store.open_invoices().await.unwrap().iter().all(|i| i.paid.amount.is_zero()));

    let commit = PaymentCommit { invoices_read: invoices.iter().map(|i| (i.id, Decimal::ZERO)).collect(), ..stale };
    assert_eq!(store.commit_payments(&commit).await.unwrap(), CommitOutcome::Committed);
    assert_eq!(store.payments_of_statement(file.record.id, 1_000).await.unwrap(), payments, "every one, in order");
    let stored: HashMap<Uuid, Money> =
        store.open_invoices().await.unwrap().into_iter().map(|i| (i.id, i.paid)).collect();
    let expected: HashMap<Uuid, Money> = paid.into_iter().map(|p| (p.id, p.paid)).collect();
    assert_eq!(stored, expected);
}

/// An import's transaction in steps: payments handed over chunk by chunk
/// land in the order given, with the paid amounts and a payment rewritten
/// at the end, when it finishes; dropped unfinished, or after a chunk
/// holding a payment stored already, it leaves nothing behind.
async fn payments_go_in_by_chunks_in_one_transaction(store: &dyn Store) {
    let inv = invoice(None, "88", &[]);
    store.apply(&ChangeSet { invoices: vec![inv.clone()], ..Default::default() }).await.unwrap();
    let begin = |file: NewStatement| async move {
        match store.begin_payments(Some(&file)).await.unwrap() {
            PaymentsBegun::Open(write) => write,
            PaymentsBegun::StatementKnown(id) => panic!("statement {id} is not stored yet"),
        }
    };

    // Dropped before it finishes: nothing of it is stored.
    let dropped = statement("digest-chunks-dropped");
    let unfinished = stored_payment(dropped.record.id, PaymentState::Review, "3 RUB");
    let mut write = begin(dropped.clone()).await;
    assert_eq!(write.insert_payments(std::slice::from_ref(&unfinished)).await.unwrap(), None);
    drop(write);
    assert!(store.statement_by_digest("digest-chunks-dropped").await.unwrap().is_none());
    assert!(store.get_payment(unfinished.payment.id).await.unwrap().is_none());

    let file = statement("digest-chunks");
    let payments: Vec<StoredPayment> =
        (1..=5).map(|n| stored_payment(file.record.id, PaymentState::Review, &format!("{n} RUB"))).collect();
    let mut write = begin(file.clone()).await;
    assert_eq!(write.insert_payments(&payments[..2]).await.unwrap(), None);
    assert_eq!(write.insert_payments(&payments[2..]).await.unwrap(), None);
    let mut noted = payments[3].clone();
    noted.notes.push("the deal's flows did not run: a guard refused".into());
    let updated = [(noted.clone(), PaymentState::Review)];
    let invoices_paid = [InvoicePaid {
        id: inv.id,
        paid: "4 RUB".parse().unwrap(),
        status: InvoiceStatus::PartiallyPaid,
        updated_at: now_micros(),
    }];
    assert_eq!(write.pay_invoices(&[(inv.id, Decimal::ZERO)], &invoices_paid).await.unwrap(), None);
    let settlement = PaymentSettlement { updated_payments: &updated, changes: &ChangeSet::default() };
    assert_eq!(write.finish(settlement).await.unwrap(), CommitOutcome::Committed);
    let mut expected = payments.clone();
    expected[3] = noted;
    assert_eq!(store.payments_of_statement(file.record.id, 100).await.unwrap(), expected, "in the order handed over");
    assert_eq!(store.get_invoice(inv.id).await.unwrap().unwrap().paid.amount, Decimal::from(4));

    // A later chunk naming a payment another statement stored: that one
    // is named, and the transaction, dropped, leaves nothing.
    let overlapping = statement("digest-chunks-overlapping");
    let fresh = stored_payment(overlapping.record.id, PaymentState::Review, "6 RUB");
    let mut write = begin(overlapping.clone()).await;
    assert_eq!(write.insert_payments(std::slice::from_ref(&fresh)).await.unwrap(), None);
    let repeated = StoredPayment { statement_id: overlapping.record.id, ..payments[1].clone() };
    assert_eq!(write.insert_payments(&[repeated]).await.unwrap(), Some(payments[1].payment.id));
    drop(write);
    assert!(store.statement_by_digest("digest-chunks-overlapping").await.unwrap().is_none());
    assert!(store.get_payment(fresh.payment.id).await.unwrap().is_none());
    assert_eq!(store.get_payment(payments[1].payment.id).await.unwrap().unwrap().statement_id, file.record.id);

    // An invoice paid since it was read: named, and the transaction,
    // dropped, leaves nothing (neither payments nor paid amounts).
    let late = statement("digest-chunks-late");
    let fresh = stored_payment(late.record.id, PaymentState::Review, "7 RUB");
    let mut write = begin(late.clone()).await;
    assert_eq!(write.insert_payments(std::slice::from_ref(&fresh)).await.unwrap(), None);
    let paid_again = [InvoicePaid { paid: "11 RUB".parse().unwrap(), ..invoices_paid[0].clone() }];
    assert_eq!(write.pay_invoices(&[(inv.id, Decimal::ZERO)], &paid_again).await.unwrap(), Some(inv.id));
    drop(write);
    assert!(store.statement_by_digest("digest-chunks-late").await.unwrap().is_none());
    assert!(store.get_payment(fresh.payment.id).await.unwrap().is_none());
    assert_eq!(store.get_invoice(inv.id).await.unwrap().unwrap().paid.amount, Decimal::from(4));

    // The same file as a stored statement: known at the start.
    let again = NewStatement { record: StatementRecord { id: Uuid::now_v7(), ..file.record.clone() }, ..file.clone() };
    match store.begin_payments(Some(&again)).await.unwrap() {
        PaymentsBegun::StatementKnown(id) => assert_eq!(id, file.record.id),
        PaymentsBegun::Open(_) => panic!("the same file began a second import"),
    }
}

store_suite!(
    payments_go_in_by_chunks_in_one_transaction,
    invoice_changes_list_what_was_written_since,
    a_stale_amount_among_many_fails_the_whole_commit,
    a_payment_needs_its_statement_stored,
    every_invoice_read_sees_the_paid_amount,
    open_invoices_are_found_by_their_keys,
    paid_amounts_are_written_into_the_stored_invoice,
    an_import_commits_whole_and_once,
    a_stale_payment_commit_writes_nothing,
    a_manual_match_needs_its_payment_still_in_review,
    only_open_invoices_are_matched_against,
    a_split_payment_is_found_by_each_of_its_invoices,
    a_statements_tally_counts_states_and_overpayments,
);

/// Invoices stored before migration 0011 get their matching columns when
/// `migrate` runs again: here their columns are emptied by hand first.
mod stored_before_the_matching_columns {
    use super::*;

    fn invoices() -> Vec<Invoice> {
        let mut paid = of_client(invoice(None, "ТД-5", &[]), "7707083893");
        paid.status = InvoiceStatus::Paid;
        vec![of_client(invoice(None, "А-5", &[]), "7707083893"), paid]
    }

    async fn are_found_once_migrated(store: &dyn Store, open: &Invoice) {
        store.migrate().await.unwrap();
        let keys = InvoiceKeys { digits: vec![5], ..Default::default() };
        assert_eq!(store.open_invoices_by_keys(&keys).await.unwrap(), vec![OpenInvoice::of(open)]);
        assert_eq!(store.open_invoices().await.unwrap(), vec![OpenInvoice::of(open)]);
    }

    /// Rows stored before 0011 have no `invoice_match` row either (0012 copies
    /// only filled rows).
    const EMPTY_MATCH_ROWS: &str = "DELETE FROM invoice_match";

    const EMPTY_COLUMNS: &str = "UPDATE invoices SET number_key = NULL, number_digits = NULL, inn_key = NULL,
        client_inn = NULL, invoice_date = NULL, total_amount = NULL, currency = NULL, paid_amount = NULL";

    #[tokio::test]
    async fn on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("hub.db").display());
        let store = SqliteStore::open(&url, 2).await.unwrap();
        store.migrate().await.unwrap();
        let all = invoices();
        store.apply(&ChangeSet { invoices: all.clone(), ..Default::default() }).await.unwrap();
        let sql = format!("{EMPTY_COLUMNS}, is_open = 0");
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&store.writer).await.unwrap();
        sqlx::query(EMPTY_MATCH_ROWS).execute(&store.writer).await.unwrap();
        assert!(store.open_invoices().await.unwrap().is_empty());
        are_found_once_migrated(&store, &all[0]).await;
    }

    #[tokio::test]
    async fn on_postgres() {
        let Some(admin) = pg_admin_url("stored_before_the_matching_columns") else { return };
        let db = TestDatabase::create(&admin).await;
        let store = PgStore::connect(&db.url, 2).await.unwrap();
        store.migrate().await.unwrap();
        let all = invoices();
        store.apply(&ChangeSet { invoices: all.clone(), ..Default::default() }).await.unwrap();
        let sql = format!("{EMPTY_COLUMNS}, is_open = FALSE");
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(store.pool()).await.unwrap();
        sqlx::query(EMPTY_MATCH_ROWS).execute(store.pool()).await.unwrap();
        assert!(store.open_invoices().await.unwrap().is_empty());
        are_found_once_migrated(&store, &all[0]).await;
        drop(store);
        db.drop_db().await;
    }
}

/// Payments stored before migration 0016, which builds `payments` and
/// `payment_shares` again (SQLite), are all there after it: found the same
/// ways, and numbered on from where the numbering was. The statement file
/// stored before 0017 reads back as it was stored, uncompressed.
mod payments_stored_before_0016 {
    use super::*;

    async fn last_number(store: &SqliteStore) -> i64 {
        sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = 'payments'")
            .fetch_one(&store.reader)
            .await
            .unwrap()
    }

    /// The statement's row as stores before 0017 wrote it: the file as received.
    async fn insert_uncompressed(store: &SqliteStore, statement: &NewStatement) {
        let r = &statement.record;
        sqlx::query(
            "INSERT INTO bank_statements (id, digest, file_name, source, format, imported_at, summary, payments_new,
                 payments_known, body)
             VALUES (?, ?, ?, ?, ?, 0, '{}', 3, 0, ?)",
        )
        .bind(r.id.to_string())
        .bind(&r.digest)
        .bind(&r.file_name)
        .bind(&r.source)
        .bind(&r.format)
        .bind(statement.file.original().unwrap())
        .execute(&store.writer)
        .await
        .unwrap();
    }

    async fn number_of(store: &SqliteStore, payment: &StoredPayment) -> i64 {
        sqlx::query_scalar("SELECT seq FROM payments WHERE id = ?")
            .bind(payment.payment.id.to_string())
            .fetch_one(&store.reader)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn are_kept_whole_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("hub.db").display());
        let store = SqliteStore::open(&url, 2).await.unwrap();
        sqlx::migrate!("./migrations/sqlite").run_to(15, &store.writer).await.unwrap();
        let file = statement("digest-before-0016");
        let statement_id = file.record.id;
        insert_uncompressed(&store, &file).await;
        let [first, second] = [Uuid::now_v7(), Uuid::now_v7()];
        let mut split = stored_payment(statement_id, PaymentState::Matched, "300 RUB");
        split.payment.invoice_id = Some(first);
        split.matched = Some(automatic_match(first, "12", "100 RUB"));
        split.also_matched = vec![automatic_match(second, "13", "200 RUB")];
        let waiting = stored_payment(statement_id, PaymentState::Review, "5 RUB");
        let removed = stored_payment(statement_id, PaymentState::Review, "6 RUB");
        let import =
            PaymentCommit { new_payments: vec![split.clone(), waiting.clone(), removed.clone()], ..Default::default() };
        assert_eq!(store.commit_payments(&import).await.unwrap(), CommitOutcome::Committed);
        let numbered = last_number(&store).await;
        assert_eq!(number_of(&store, &removed).await, numbered);
        // The last row gone (by hand): its number is never handed out again.
        sqlx::query("DELETE FROM payments WHERE id = ?")
            .bind(removed.payment.id.to_string())
            .execute(&store.writer)
            .await
            .unwrap();

        store.migrate().await.unwrap();
        let after = store.payments_of_statement(statement_id, 10).await.unwrap();
        assert_eq!(after, vec![split.clone(), waiting.clone()], "every payment, in the order stored");
        assert_eq!(store.payments_in_state(PaymentState::Review, 10).await.unwrap(), vec![waiting.clone()]);
        assert_eq!(store.payments_applied_to(&[second]).await.unwrap(), vec![split.clone()], "by its share");
        assert_eq!(last_number(&store).await, numbered);
        let shares_refer_to: String =
            sqlx::query_scalar("SELECT \"table\" FROM pragma_foreign_key_list('payment_shares')")
                .fetch_one(&store.reader)
                .await
                .unwrap();
        assert_eq!(shares_refer_to, "payments");
        let kept = store.statement_file(statement_id).await.unwrap().unwrap();
        assert_eq!((kept.encoding, kept.original().unwrap()), (FileEncoding::Identity, STATEMENT_FILE.into()));

        let next = statement("digest-after-0016");
        let later = stored_payment(next.record.id, PaymentState::Review, "7 RUB");
        let import = PaymentCommit { statement: Some(next), new_payments: vec![later.clone()], ..Default::default() };
        assert_eq!(store.commit_payments(&import).await.unwrap(), CommitOutcome::Committed);
        assert!(number_of(&store, &later).await > numbered, "numbered on, never again");
        assert!(store.commit_payments(&import).await.is_ok_and(|o| matches!(o, CommitOutcome::StatementKnown(_))));
    }
}

/// Payments stored while `payments.doc` was `jsonb` (before migration
/// 0013) read back the same once it is text.
mod payments_stored_as_jsonb {
    use super::*;

    #[tokio::test]
    async fn read_back_the_same_after_0013() {
        let Some(admin) = pg_admin_url("payments_stored_as_jsonb") else { return };
        let db = TestDatabase::create(&admin).await;
        let store = PgStore::connect(&db.url, 2).await.unwrap();
        sqlx::migrate!("./migrations/postgres").run_to(12, store.pool()).await.unwrap();
        let statement = statement("digest-before-0013");
        let r = &statement.record;
        sqlx::query(
            "INSERT INTO bank_statements (id, digest, source, format, imported_at, summary, payments_new,
                 payments_known, body)
             VALUES ($1, $2, $3, $4, $5, $6::jsonb, 1, 0, $7)",
        )
        .bind(r.id)
        .bind(&r.digest)
        .bind(&r.source)
        .bind(&r.format)
        .bind(r.imported_at)
        .bind(r.summary.to_string())
        .bind(statement.file.original().unwrap())
        .execute(store.pool())
        .await
        .unwrap();
        let payment = stored_payment(r.id, PaymentState::Review, "1500 RUB");
        sqlx::query(
            "INSERT INTO payments (id, statement_id, direction, state, payment_date, doc, updated_at)
             VALUES ($1, $2, 'incoming', 'review', $3, $4::jsonb, $5)",
        )
        .bind(payment.payment.id)
        .bind(r.id)
        .bind(payment.payment.date)
        .bind(serde_json::to_string(&payment).unwrap())
        .bind(payment.updated_at)
        .execute(store.pool())
        .await
        .unwrap();

        store.migrate().await.unwrap();
        assert_eq!(store.get_payment(payment.payment.id).await.unwrap(), Some(payment.clone()));
        assert_eq!(store.payments_of_statement(r.id, 100).await.unwrap(), vec![payment.clone()]);
        assert_eq!(store.payments_in_state(PaymentState::Review, 10).await.unwrap(), vec![payment]);
        drop(store);
        db.drop_db().await;
    }
}

/// A statement larger than one write of each kind, on SQLite.
mod large_import_on_sqlite {
    use super::*;

    /// An import paying more invoices than one write takes, with more
    /// payments than one insert takes: every invoice gets its amount and
    /// every payment is stored, in file order.
    #[tokio::test]
    async fn a_large_import_writes_every_payment_and_paid_amount() {
        const INVOICES: usize = 20_001;
        const PAYMENTS: usize = 33_001;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("hub.db").display());
        let store = SqliteStore::open(&url, 2).await.unwrap();
        store.migrate().await.unwrap();
        let invoices: Vec<Invoice> = (0..INVOICES).map(|n| invoice(None, &n.to_string(), &[])).collect();
        store.apply(&ChangeSet { invoices: invoices.clone(), ..Default::default() }).await.unwrap();
        let file = statement("digest-large");
        let at = now_micros();
        let paid = |n: usize| Money::new(Decimal::from(n + 1), "RUB").unwrap();
        let payments: Vec<StoredPayment> =
            (0..PAYMENTS).map(|_| stored_payment(file.record.id, PaymentState::Review, "1 RUB")).collect();
        let commit = PaymentCommit {
            statement: Some(file.clone()),
            new_payments: payments.clone(),
            invoices_read: invoices.iter().map(|i| (i.id, Decimal::ZERO)).collect(),
            invoices_paid: invoices
                .iter()
                .enumerate()
                .map(|(n, i)| InvoicePaid {
                    id: i.id,
                    paid: paid(n),
                    status: InvoiceStatus::PartiallyPaid,
                    updated_at: at,
                })
                .collect(),
            ..Default::default()
        };
        assert_eq!(store.commit_payments(&commit).await.unwrap(), CommitOutcome::Committed);
        let open = store.open_invoices().await.unwrap();
        assert_eq!(open.len(), INVOICES);
        for (n, inv) in invoices.iter().enumerate() {
            let found = open.binary_search_by_key(&inv.id, |o| o.id).map(|at| &open[at]).unwrap();
            assert_eq!(found.paid, paid(n), "invoice {n}");
        }
        let stored = store.payments_of_statement(file.record.id, PAYMENTS as u32).await.unwrap();
        assert!(stored == payments, "{} of {PAYMENTS} payments read back, in file order", stored.len());
        let first = store.payments_of_statement(file.record.id, 1000).await.unwrap();
        assert!(first[..] == payments[..1000], "the first 1000, in file order");
        let tally = store.statement_tally(file.record.id).await.unwrap();
        let in_state = |s: PaymentState| payments.iter().filter(|p| p.state == s).count() as u64;
        for state in PaymentState::ALL {
            assert_eq!(tally.by_state[&state], in_state(state), "{state:?}");
        }
        assert_eq!(tally.overpaid, payments.iter().filter(|p| p.overpays()).count() as u64);
    }
}
