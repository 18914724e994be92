//! Which open invoices an import's payments are matched against.
//!
//! A running hub on a store that numbers its invoice writes keeps every
//! open invoice in memory ([`OpenInvoiceIndex`]): the matcher then works
//! over that copy and its chains directly, and nothing is read or copied
//! per import beyond what changed since the last one.
//!
//! Otherwise (a one-off CLI import, PostgreSQL) the candidates are read
//! from the store through its indexes instead of every open invoice. A
//! payment looks at the open invoices a number in its purpose text is (or
//! ends like), and — only when the text names none of them — at the open
//! invoices of its payer. So the invoices are read in two steps: by the
//! numbers of all the payments' texts, then by the INNs of the payers whose
//! texts named no open invoice. The matcher built over the result decides
//! every payment exactly as one built over all open invoices: each
//! payment's lookups find the same invoices, and candidates of equal score
//! are ordered by date and id, never by where they sit.

use std::collections::BTreeSet;
use std::time::Instant;

use dealbridge_core::model::{Payment, PaymentDirection};
use dealbridge_core::store::invoice_keys::{inn_key, number_hash_and_digits, number_key};
use dealbridge_core::store::{InvoiceKeys, OpenInvoice, Store, StoreError};

use super::open_index::{OpenInvoiceIndex, OpenInvoicesView};
use super::purpose::{NumberReference, number_references};
use super::{MatchRules, PaymentMatcher};

/// The open invoices an import matches against.
pub enum OpenInvoices<'v> {
    /// Every open invoice: the hub's in-memory copy, held (other imports
    /// wait) until this is dropped.
    InMemory(OpenInvoicesView<'v>),
    /// The ones the payments point at, read from the store, by id.
    Read(Vec<OpenInvoice>),
}

impl OpenInvoices<'_> {
    /// A matcher over these invoices; its decisions' positions are its own.
    pub fn matcher(&self, rules: MatchRules) -> PaymentMatcher<'_> {
        match self {
            OpenInvoices::InMemory(view) => view.matcher(rules),
            OpenInvoices::Read(list) => PaymentMatcher::new(list, rules),
        }
    }
}

/// The open invoices payments are matched against, and the numbers each
/// payment's purpose text names (read once, for the lookup and for
/// [`PaymentMatcher::decide_with`]).
pub struct Candidates<'v> {
    pub invoices: OpenInvoices<'v>,
    /// Per payment, in the order given; empty for payments not incoming.
    pub references: Vec<Vec<NumberReference>>,
}

/// From this many payments on, their purpose texts are read on two threads.
const PARALLEL_FROM: usize = 10_000;

/// The open invoices `payments` can be matched against: the hub's
/// in-memory copy when it has one and the store keeps it current
/// ([`OpenInvoiceIndex`]), otherwise the candidates looked up in the store.
pub async fn open_candidates<'v>(
    store: &dyn Store,
    index: Option<&'v OpenInvoiceIndex>,
    payments: &[Payment],
    rules: &MatchRules,
) -> Result<Candidates<'v>, StoreError> {
    let started = Instant::now();
    let view = match index {
        Some(index) => index.current(store).await?,
        None => None,
    };
    let current_at = started.elapsed();
    let references = references_of(payments);
    if let Some(view) = view {
        tracing::debug!(
            invoices = view.len(),
            current_ms = current_at.as_millis() as u64,
            purposes_ms = (started.elapsed() - current_at).as_millis() as u64,
            "matching against the open invoices in memory"
        );
        return Ok(Candidates { invoices: OpenInvoices::InMemory(view), references });
    }
    let read_at = started.elapsed();
    let incoming: Vec<(&Payment, &[NumberReference])> = payments
        .iter()
        .zip(&references)
        .filter(|(p, _)| p.direction == PaymentDirection::Incoming)
        .map(|(p, r)| (p, r.as_slice()))
        .collect();
    if incoming.is_empty() {
        return Ok(Candidates { invoices: OpenInvoices::Read(Vec::new()), references });
    }
    let by_number = store.open_invoices_by_keys(&number_keys(&incoming)).await?;
    let numbers_at = started.elapsed();
    let inns = payer_keys(&incoming, &by_number, rules);
    let payers_at = started.elapsed();
    let invoices = if inns.is_empty() {
        by_number
    } else {
        let by_payer = store.open_invoices_by_keys(&InvoiceKeys { inns, ..Default::default() }).await?;
        merge(by_number, by_payer)
    };
    tracing::debug!(
        invoices = invoices.len(),
        purposes_ms = read_at.as_millis() as u64,
        by_number_ms = (numbers_at - read_at).as_millis() as u64,
        payers_ms = (payers_at - numbers_at).as_millis() as u64,
        by_payer_ms = (started.elapsed() - payers_at).as_millis() as u64,
        "candidate invoices read"
    );
    Ok(Candidates { invoices: OpenInvoices::Read(invoices), references })
}

/// The numbers each payment's purpose text names (none for payments not
/// incoming). A large statement's texts are read in two halves side by
/// side: each text is read on its own, and it is most of this step's time.
fn references_of(payments: &[Payment]) -> Vec<Vec<NumberReference>> {
    let read = |p: &Payment| {
        if p.direction == PaymentDirection::Incoming { number_references(&p.purpose) } else { Vec::new() }
    };
    if payments.len() < PARALLEL_FROM {
        return payments.iter().map(read).collect();
    }
    let (first, second) = payments.split_at(payments.len() / 2);
    std::thread::scope(|scope| {
        let later = scope.spawn(|| second.iter().map(read).collect::<Vec<_>>());
        let mut all: Vec<Vec<NumberReference>> = Vec::with_capacity(payments.len());
        all.extend(first.iter().map(read));
        match later.join() {
            Ok(rest) => all.extend(rest),
            // Reading a text does not panic; if it did, the import fails
            // as it would have on this thread.
            Err(panic) => std::panic::resume_unwind(panic),
        }
        all
    })
}

/// The folded numbers and, for numbers of digits only, the digits the
/// payments' texts name.
fn number_keys(incoming: &[(&Payment, &[NumberReference])]) -> InvoiceKeys {
    let (mut numbers, mut digits) = (BTreeSet::new(), BTreeSet::new());
    for reference in incoming.iter().flat_map(|(_, refs)| refs.iter()) {
        let key = number_key(&reference.text);
        let (_, ends_in) = number_hash_and_digits(&reference.text);
        if let Some(d) = ends_in.filter(|_| key.bytes().all(|b| b.is_ascii_digit())) {
            digits.insert(d);
        }
        numbers.insert(key);
    }
    InvoiceKeys { numbers: numbers.into_iter().collect(), digits: digits.into_iter().collect(), inns: Vec::new() }
}

/// The INNs (valid ones) of payers whose text names no open invoice.
fn payer_keys(incoming: &[(&Payment, &[NumberReference])], by_number: &[OpenInvoice], rules: &MatchRules) -> Vec<u64> {
    let matcher = PaymentMatcher::new(by_number, rules.clone());
    let mut inns = BTreeSet::new();
    for (payment, references) in incoming {
        let inn = payment.payer.inn.as_ref().filter(|i| i.verify().is_ok()).and_then(|i| inn_key(i.as_str()));
        if let Some(inn) = inn
            && !matcher.names_an_invoice(references)
        {
            inns.insert(inn);
        }
    }
    inns.into_iter().collect()
}

/// Both lists as one, by id, each invoice once.
fn merge(mut a: Vec<OpenInvoice>, b: Vec<OpenInvoice>) -> Vec<OpenInvoice> {
    a.extend(b);
    a.sort_unstable_by_key(|i| i.id);
    a.dedup_by_key(|i| i.id);
    a
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveDate, Utc};
    use dealbridge_core::model::{Money, Party};
    use uuid::Uuid;

    use super::*;

    fn payment(k: usize) -> Payment {
        Payment {
            id: Uuid::now_v7(),
            // Every third one outgoing: its text is not read.
            direction: if k.is_multiple_of(3) { PaymentDirection::Outgoing } else { PaymentDirection::Incoming },
            document_number: k.to_string(),
            date: NaiveDate::from_ymd_opt(2024, 3, 2).unwrap_or_default(),
            amount: Money::new(rust_decimal::Decimal::from(1000 + k), "RUB").expect("amount"),
            payer: Party::default(),
            payee: Party::default(),
            purpose: format!("Оплата по счету № {k} от 01.03.2024 и сч. А-{}", k + 1),
            invoice_id: None,
            custom_fields: Default::default(),
            external_refs: Vec::new(),
            recorded_at: Utc::now(),
        }
    }

    /// Read on two threads, a large statement's texts give what one thread
    /// reads, payment by payment.
    #[test]
    fn references_of_many_payments_are_those_of_one_thread() {
        let payments: Vec<Payment> = (0..PARALLEL_FROM + 5).map(payment).collect();
        let one: Vec<Vec<NumberReference>> = payments
            .iter()
            .map(|p| if p.direction == PaymentDirection::Incoming { number_references(&p.purpose) } else { Vec::new() })
            .collect();
        let both = references_of(&payments);
        assert_eq!(both, one);
        assert_eq!(both[1].len(), 2);
        assert!(both[0].is_empty());
    }

    /// A valid 10-digit INN for client `n` (check digit computed).
    fn inn(n: u32) -> String {
        dealbridge_core::model::Inn::organisation(&format!("77{n:07}")).expect("nine digits").as_str().to_owned()
    }

    fn stored_invoice(number: &str, client: u32) -> dealbridge_core::model::Invoice {
        crate::matching::open_test_invoice(number, &inn(client))
    }

    fn paying(purpose: &str, payer_inn: &str) -> Payment {
        let mut p = payment(1);
        p.direction = PaymentDirection::Incoming;
        p.purpose = purpose.into();
        p.amount = Money::new(rust_decimal::Decimal::from(1000), "RUB").unwrap();
        p.payer = Party {
            name: "Плательщик".into(),
            inn: Some(dealbridge_core::model::Inn::new(payer_inn)),
            ..Default::default()
        };
        p
    }

    /// Payers naming no number and payers naming a number no open invoice
    /// has (both looked up by INN), the same INN in both groups, an invalid
    /// INN and an outgoing payment: every payment is decided over the
    /// candidates as over all open invoices.
    #[tokio::test]
    async fn candidates_decide_as_all_open_invoices_do() {
        use dealbridge_core::store::{ChangeSet, PaymentLedger, SqliteStore, Store};

        use crate::matching::Decision;
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&format!("sqlite://{}", dir.path().join("hub.db").display()), 2).await.unwrap();
        store.migrate().await.unwrap();
        let invoices: Vec<_> = [("100", 1), ("101", 1), ("А-7", 2), ("200", 3), ("201", 3), ("300", 4), ("400", 5)]
            .into_iter()
            .map(|(number, client)| stored_invoice(number, client))
            .collect();
        store.apply(&ChangeSet { invoices, ..Default::default() }).await.unwrap();
        let mut outgoing = paying("Оплата за товар", &inn(5));
        outgoing.direction = PaymentDirection::Outgoing;
        let payments = vec![
            paying("Оплата по счету № 100 от 01.02.2024", &inn(1)),
            paying("Оплата за товар", &inn(3)),
            paying("Оплата по счету № 999", &inn(4)),
            paying("Оплата по счету № 998", &inn(3)),
            paying("Оплата за товар", "1234567890"),
            paying("по сч.№А-7", &inn(1)),
            outgoing,
        ];
        let rules = MatchRules::default();
        let candidates = open_candidates(&store, None, &payments, &rules).await.unwrap();
        let OpenInvoices::Read(read) = &candidates.invoices else { panic!("no in-memory copy given") };
        let numbers: Vec<&str> = read.iter().map(|i| i.number.as_str()).collect();
        for expected in ["100", "А-7", "200", "201", "300"] {
            assert!(numbers.contains(&expected), "{expected} in {numbers:?}");
        }
        assert!(!numbers.contains(&"400"), "the outgoing payment's payer is not looked up");
        // The hub's in-memory copy: matched over as it is, nothing read out.
        let index = OpenInvoiceIndex::new();
        let copy = open_candidates(&store, Some(&index), &payments, &rules).await.unwrap();
        assert!(matches!(copy.invoices, OpenInvoices::InMemory(_)), "SQLite numbers its invoice writes");
        assert_eq!(copy.references, candidates.references);
        let all = store.open_invoices().await.unwrap();
        let mut over_candidates = PaymentMatcher::new(read, rules.clone());
        let mut over_copy = copy.invoices.matcher(rules.clone());
        let mut over_all = PaymentMatcher::new(&all, rules.clone());
        for (payment, references) in payments.iter().zip(&candidates.references) {
            let b = over_all.decide(payment);
            let invoice_of = |d: &Decision, matcher: &PaymentMatcher<'_>| match d {
                Decision::Matched { invoice, .. } => Some(matcher.invoice(*invoice).id),
                _ => None,
            };
            for (a, matcher) in [
                (over_candidates.decide_with(payment, references), &over_candidates),
                (over_copy.decide(payment), &over_copy),
            ] {
                assert_eq!(invoice_of(&a, matcher), invoice_of(&b, &over_all), "{}", payment.purpose);
                if invoice_of(&a, matcher).is_none() {
                    assert_eq!(a, b, "{}", payment.purpose);
                }
            }
        }
    }
}
