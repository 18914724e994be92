//! The keys payments find open invoices by — the folded number's hash, the
//! digits a number ends in, the client's INN — as chains of invoice
//! positions per key.
//!
//! One structure serves both places invoices are matched from: the
//! matcher's own index over a list read from the store, and the hub's
//! in-memory copy of every open invoice ([`super::open_index`]), which
//! keeps its chains current as invoices change and lends them to the
//! matcher instead of copying candidates out.

use dealbridge_core::store::OpenInvoice;
use dealbridge_core::store::invoice_keys::{inn_key, number_hash_and_digits};

use super::{KeyMap, NONE};

/// Heads of chains per key, and each position's next position with the same key.
#[derive(Debug, Clone, Default)]
pub(super) struct KeyChains {
    heads: KeyMap,
    next: Vec<u32>,
}

impl KeyChains {
    fn with_capacity(n: usize) -> Self {
        Self { heads: KeyMap::with_capacity_and_hasher(n, Default::default()), next: Vec::with_capacity(n) }
    }

    fn link(&mut self, key: u64, at: u32) {
        if self.next.len() <= at as usize {
            self.next.resize(at as usize + 1, NONE);
        }
        self.next[at as usize] = self.heads.insert(key, at).unwrap_or(NONE);
    }

    /// Takes `at` out of `key`'s chain (chains are a few positions long).
    fn unlink(&mut self, key: u64, at: u32) {
        let Some(&head) = self.heads.get(&key) else { return };
        let after = self.next[at as usize];
        if head == at {
            if after == NONE {
                self.heads.remove(&key);
            } else {
                self.heads.insert(key, after);
            }
            return;
        }
        let mut here = head;
        while here != NONE {
            let next = self.next[here as usize];
            if next == at {
                self.next[here as usize] = after;
                return;
            }
            here = next;
        }
    }

    /// The positions with `key`, the last linked first.
    pub(super) fn chain(&self, key: u64) -> impl Iterator<Item = usize> + '_ {
        let mut at = self.heads.get(&key).copied().unwrap_or(NONE);
        std::iter::from_fn(move || {
            (at != NONE).then(|| {
                let here = at;
                at = self.next[here as usize];
                here as usize
            })
        })
    }
}

/// The keys an invoice is found by: its number's hash, the digits it ends
/// in, its client's INN.
fn keys_of(invoice: &OpenInvoice) -> (u64, Option<u64>, Option<u64>) {
    let (hash, digits) = number_hash_and_digits(&invoice.number);
    (hash, digits, invoice.client_inn.as_deref().and_then(inn_key))
}

/// Open invoices' positions by each key payments name.
#[derive(Debug, Clone, Default)]
pub(super) struct InvoiceChains {
    pub(super) by_number: KeyChains,
    pub(super) by_digits: KeyChains,
    pub(super) by_inn: KeyChains,
}

impl InvoiceChains {
    /// Room for `n` invoices (about one client in four has an INN chain).
    pub(super) fn with_capacity(n: usize) -> Self {
        Self {
            by_number: KeyChains::with_capacity(n),
            by_digits: KeyChains::with_capacity(n),
            by_inn: KeyChains::with_capacity(n / 4),
        }
    }

    /// Chains `invoices` at their positions in the list (at most `u32::MAX - 1`).
    pub(super) fn of(invoices: &[OpenInvoice]) -> Self {
        let mut chains = Self::with_capacity(invoices.len());
        for (at, invoice) in invoices.iter().enumerate() {
            chains.link(invoice, at as u32);
        }
        chains
    }

    pub(super) fn link(&mut self, invoice: &OpenInvoice, at: u32) {
        let (number, digits, inn) = keys_of(invoice);
        self.by_number.link(number, at);
        if let Some(digits) = digits {
            self.by_digits.link(digits, at);
        }
        if let Some(inn) = inn {
            self.by_inn.link(inn, at);
        }
    }

    pub(super) fn unlink(&mut self, invoice: &OpenInvoice, at: u32) {
        let (number, digits, inn) = keys_of(invoice);
        self.by_number.unlink(number, at);
        if let Some(digits) = digits {
            self.by_digits.unlink(digits, at);
        }
        if let Some(inn) = inn {
            self.by_inn.unlink(inn, at);
        }
    }
}
