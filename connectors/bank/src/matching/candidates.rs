//! Which open invoices an import's payments can be matched to, read from
//! the store through its indexes instead of every open invoice.
//!
//! A payment looks at the open invoices a number in its purpose text is
//! (or ends like), and — only when the text names none of them — at the
//! open invoices of its payer. So the invoices are read in two steps: by
//! the numbers of all the payments' texts, then by the INNs of the payers
//! whose texts named no open invoice. The matcher built over the result
//! decides every payment exactly as one built over all open invoices: each
//! payment's lookups find the same invoices, in the same (id) order.

use std::collections::BTreeSet;

use dealbridge_core::model::{Payment, PaymentDirection};
use dealbridge_core::store::invoice_keys::{inn_key, number_hash_and_digits, number_key};
use dealbridge_core::store::{InvoiceKeys, OpenInvoice, Store, StoreError};

use super::purpose::{NumberReference, number_references};
use super::{MatchRules, PaymentMatcher};

/// The open invoices payments can be matched to, and the numbers each
/// payment's purpose text names (read once, for the lookup and for
/// [`PaymentMatcher::decide_with`]).
#[derive(Debug, Clone, Default)]
pub struct Candidates {
    /// By id, each once.
    pub invoices: Vec<OpenInvoice>,
    /// Per payment, in the order given; empty for payments not incoming.
    pub references: Vec<Vec<NumberReference>>,
}

/// The open invoices `payments` can be matched to, by id.
pub async fn open_candidates(
    store: &dyn Store,
    payments: &[Payment],
    rules: &MatchRules,
) -> Result<Candidates, StoreError> {
    let references: Vec<Vec<NumberReference>> = payments
        .iter()
        .map(|p| if p.direction == PaymentDirection::Incoming { number_references(&p.purpose) } else { Vec::new() })
        .collect();
    let incoming: Vec<(&Payment, &[NumberReference])> = payments
        .iter()
        .zip(&references)
        .filter(|(p, _)| p.direction == PaymentDirection::Incoming)
        .map(|(p, r)| (p, r.as_slice()))
        .collect();
    if incoming.is_empty() {
        return Ok(Candidates { invoices: Vec::new(), references });
    }
    let by_number = store.open_invoices_by_keys(&number_keys(&incoming)).await?;
    let inns = payer_keys(&incoming, &by_number, rules);
    if inns.is_empty() {
        return Ok(Candidates { invoices: by_number, references });
    }
    let by_payer = store.open_invoices_by_keys(&InvoiceKeys { inns, ..Default::default() }).await?;
    Ok(Candidates { invoices: merge(by_number, by_payer), references })
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
