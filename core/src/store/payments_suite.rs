//! The payment ledger's scenarios, run on both backends by the conformance
//! suite's macro: an import commits whole and once, a stale computation
//! writes nothing, a manual match needs its payment still in review, and
//! only open invoices are matched against.

use rust_decimal::Decimal;

use super::*;
use crate::model::{Client, Inn, Money, Party, Payment, PaymentDirection, ReviewNote};

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
        body: "1CClientBankExchange\r\nКонецФайла\r\n".as_bytes().to_vec(),
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
    };
    assert_eq!(store.commit_payments(&commit).await.unwrap(), CommitOutcome::Committed);

    assert_eq!(store.get_payment(incoming.payment.id).await.unwrap(), Some(incoming.clone()));
    assert_eq!(store.statement_by_digest("digest-1").await.unwrap(), Some(file.record.clone()));
    assert_eq!(store.get_statement(file.record.id).await.unwrap(), Some(file.record.clone()));
    let of_statement = store.payments_of_statement(file.record.id).await.unwrap();
    assert_eq!(of_statement, vec![incoming.clone(), outgoing.clone()], "file order");
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

store_suite!(
    an_import_commits_whole_and_once,
    a_stale_payment_commit_writes_nothing,
    a_manual_match_needs_its_payment_still_in_review,
    only_open_invoices_are_matched_against,
);
