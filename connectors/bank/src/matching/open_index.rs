//! The hub's in-memory copy of the open invoices, indexed the way
//! payments look for them.
//!
//! Looking up a large statement's candidates in the database is most of an
//! import's reading time: a quarter of a million index seeks, each row
//! turned into text and parsed back. A running hub keeps the open invoices
//! in memory instead — by folded number, by the digits a number ends in and
//! by the client's INN, as [`crate::matching::PaymentMatcher`] indexes them
//! — and before each import reads only the invoices written since it last
//! looked, whoever wrote them (this hub, another replica, a CLI import):
//! every invoice write takes the next value of the store's invoice counter
//! and stamps its rows with it
//! ([`dealbridge_core::store::PaymentLedger::invoice_changes`]).
//!
//! The copy is a cache, never the truth: the payment commit still compares
//! the paid amount of every invoice it read and refuses when one changed,
//! and the import then reads and decides again. A store that does not
//! number its invoice writes (PostgreSQL) answers `None`, and the import
//! looks up by keys in the database as before.

use std::collections::HashMap;
use std::time::Instant;

use dealbridge_core::store::invoice_keys::{inn_key, number_hash_and_digits};
use dealbridge_core::store::{InvoiceChanges, InvoiceKeys, OpenInvoice, Store, StoreError};
use tokio::sync::{Mutex, MutexGuard};
use uuid::Uuid;

use super::{KeyMap, NONE};

/// Open invoices in memory, brought up to date before each use.
#[derive(Default)]
pub struct OpenInvoiceIndex {
    copy: Mutex<Option<IndexedInvoices>>,
}

impl OpenInvoiceIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// The open invoices as the store has them now, or `None` when the
    /// store does not number its invoice writes. The first call reads every
    /// open invoice (a hub calls it on start); later ones read what was
    /// written since. Other callers wait while the view is held.
    pub async fn current(&self, store: &dyn Store) -> Result<Option<OpenInvoicesView<'_>>, StoreError> {
        let mut copy = self.copy.lock().await;
        let since = copy.as_ref().map_or(0, |c| c.generation);
        let started = Instant::now();
        let Some(changes) = store.invoice_changes(since).await? else {
            return Ok(None);
        };
        let read_at = started.elapsed();
        let (open, closed) = (changes.open.len(), changes.closed.len());
        match copy.as_mut() {
            Some(indexed) if since > 0 => indexed.apply(changes),
            _ => *copy = Some(IndexedInvoices::of(changes)),
        }
        if open + closed > 0 {
            tracing::debug!(
                since,
                open,
                closed,
                read_ms = read_at.as_millis() as u64,
                index_ms = (started.elapsed() - read_at).as_millis() as u64,
                "open invoices brought up to date"
            );
        }
        Ok(Some(OpenInvoicesView { copy }))
    }
}

/// The open invoices, current as of [`OpenInvoiceIndex::current`].
pub struct OpenInvoicesView<'a> {
    copy: MutexGuard<'a, Option<IndexedInvoices>>,
}

impl OpenInvoicesView<'_> {
    fn indexed(&self) -> &IndexedInvoices {
        // `current` returns a view only once the copy is filled.
        self.copy.as_ref().unwrap_or_else(|| unreachable!("a view of an index never filled"))
    }

    /// How many open invoices there are.
    pub fn len(&self) -> usize {
        self.indexed().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The open invoices with one of the keys, by id, each once — what
    /// [`dealbridge_core::store::PaymentLedger::open_invoices_by_keys`]
    /// answers. A number is compared by the hash of its folded form, as the
    /// matcher compares it: a collision adds an invoice the matcher then
    /// scores like any other, it never loses one.
    pub fn by_keys(&self, keys: &InvoiceKeys) -> Vec<OpenInvoice> {
        let indexed = self.indexed();
        let mut slots: Vec<u32> = Vec::new();
        for key in &keys.numbers {
            slots.extend(indexed.by_number.chain(number_hash_and_digits(key).0));
        }
        for &digits in &keys.digits {
            slots.extend(indexed.by_digits.chain(digits));
        }
        for &inn in &keys.inns {
            slots.extend(indexed.by_inn.chain(inn));
        }
        // Each invoice once before copying it out (an invoice found by its
        // number is often found by its digits too).
        slots.sort_unstable();
        slots.dedup();
        let mut found: Vec<OpenInvoice> =
            slots.into_iter().filter_map(|slot| indexed.slots[slot as usize].clone()).collect();
        found.sort_unstable_by_key(|i| i.id);
        found
    }
}

/// Heads of chains per key, and each slot's next slot with the same key.
#[derive(Default)]
struct KeyChains {
    heads: KeyMap,
    next: Vec<u32>,
}

impl KeyChains {
    fn with_capacity(n: usize) -> Self {
        Self { heads: KeyMap::with_capacity_and_hasher(n, Default::default()), next: Vec::with_capacity(n) }
    }

    fn link(&mut self, key: u64, slot: u32) {
        if self.next.len() <= slot as usize {
            self.next.resize(slot as usize + 1, NONE);
        }
        self.next[slot as usize] = self.heads.insert(key, slot).unwrap_or(NONE);
    }

    /// Takes `slot` out of `key`'s chain (chains are a few slots long).
    fn unlink(&mut self, key: u64, slot: u32) {
        let Some(&head) = self.heads.get(&key) else { return };
        let after = self.next[slot as usize];
        if head == slot {
            if after == NONE {
                self.heads.remove(&key);
            } else {
                self.heads.insert(key, after);
            }
            return;
        }
        let mut at = head;
        while at != NONE {
            let next = self.next[at as usize];
            if next == slot {
                self.next[at as usize] = after;
                return;
            }
            at = next;
        }
    }

    fn chain(&self, key: u64) -> impl Iterator<Item = u32> + '_ {
        let mut at = self.heads.get(&key).copied().unwrap_or(NONE);
        std::iter::from_fn(move || {
            (at != NONE).then(|| {
                let here = at;
                at = self.next[here as usize];
                here
            })
        })
    }
}

/// The keys an invoice is found by.
fn keys_of(invoice: &OpenInvoice) -> (u64, Option<u64>, Option<u64>) {
    let (hash, digits) = number_hash_and_digits(&invoice.number);
    (hash, digits, invoice.client_inn.as_deref().and_then(inn_key))
}

/// The open invoices in slots, and the chains that find them.
struct IndexedInvoices {
    /// The store's invoice counter this copy is current with.
    generation: u64,
    slots: Vec<Option<OpenInvoice>>,
    free: Vec<u32>,
    by_id: HashMap<Uuid, u32>,
    by_number: KeyChains,
    by_digits: KeyChains,
    by_inn: KeyChains,
}

impl IndexedInvoices {
    fn of(changes: InvoiceChanges) -> Self {
        let n = changes.open.len();
        let mut indexed = Self {
            generation: changes.generation,
            slots: Vec::with_capacity(n),
            free: Vec::new(),
            by_id: HashMap::with_capacity(n),
            by_number: KeyChains::with_capacity(n),
            by_digits: KeyChains::with_capacity(n),
            by_inn: KeyChains::with_capacity(n / 4),
        };
        for invoice in changes.open {
            indexed.put(invoice);
        }
        indexed
    }

    fn apply(&mut self, changes: InvoiceChanges) {
        for id in changes.closed {
            self.remove(id);
        }
        for invoice in changes.open {
            self.put(invoice);
        }
        self.generation = changes.generation;
    }

    fn put(&mut self, invoice: OpenInvoice) {
        self.remove(invoice.id);
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
        };
        let (number, digits, inn) = keys_of(&invoice);
        self.by_number.link(number, slot);
        if let Some(digits) = digits {
            self.by_digits.link(digits, slot);
        }
        if let Some(inn) = inn {
            self.by_inn.link(inn, slot);
        }
        self.by_id.insert(invoice.id, slot);
        self.slots[slot as usize] = Some(invoice);
    }

    fn remove(&mut self, id: Uuid) {
        let Some(slot) = self.by_id.remove(&id) else { return };
        if let Some(invoice) = self.slots[slot as usize].take() {
            let (number, digits, inn) = keys_of(&invoice);
            self.by_number.unlink(number, slot);
            if let Some(digits) = digits {
                self.by_digits.unlink(digits, slot);
            }
            if let Some(inn) = inn {
                self.by_inn.unlink(inn, slot);
            }
        }
        self.free.push(slot);
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use dealbridge_core::model::{Invoice, InvoiceStatus, Money};
    use dealbridge_core::store::invoice_keys::number_key;
    use dealbridge_core::store::{ChangeSet, CommitOutcome, InvoicePaid, PaymentCommit, PaymentLedger, SqliteStore};
    use rust_decimal::Decimal;

    use super::*;

    fn invoice(number: &str, inn: &str) -> Invoice {
        crate::matching::open_test_invoice(number, inn)
    }

    /// Keys that find invoices by number, by digits (shared by several)
    /// and by INN (shared by several), and keys that find nothing.
    fn key_sets() -> Vec<InvoiceKeys> {
        let inn = |i: &str| inn_key(i).unwrap();
        vec![
            InvoiceKeys { numbers: vec![number_key("А-100")], ..Default::default() },
            InvoiceKeys { digits: vec![100, 7], ..Default::default() },
            InvoiceKeys { inns: vec![inn("7707083893")], ..Default::default() },
            InvoiceKeys {
                numbers: vec![number_key("ТД-7"), "NOTHING".into()],
                digits: vec![100, 555],
                inns: vec![inn("500100732259"), inn("7707083893")],
            },
            InvoiceKeys { numbers: vec!["NOTHING".into()], digits: vec![9_999], inns: vec![1] },
        ]
    }

    async fn same_as_the_store(index: &OpenInvoiceIndex, store: &SqliteStore) {
        let view = index.current(store).await.unwrap().expect("SQLite numbers its invoice writes");
        assert_eq!(view.len(), store.open_invoices().await.unwrap().len());
        for keys in key_sets() {
            assert_eq!(view.by_keys(&keys), store.open_invoices_by_keys(&keys).await.unwrap(), "{keys:?}");
        }
    }

    /// Whatever writes the invoices — whole, renumbered, paid in part or
    /// in full, new ones — the in-memory copy finds what the store's key
    /// lookup finds, once brought up to date.
    #[tokio::test]
    async fn the_copy_finds_what_the_store_finds_after_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&format!("sqlite://{}", dir.path().join("hub.db").display()), 2).await.unwrap();
        store.migrate().await.unwrap();
        let mut invoices = vec![
            invoice("А-100", "7707083893"),
            invoice("ТД00-000100", "7707083893"),
            invoice("100", "500100732259"),
            invoice("ТД-7", "7707083893"),
            invoice("7", "500100732259"),
        ];
        store.apply(&ChangeSet { invoices: invoices.clone(), ..Default::default() }).await.unwrap();
        let index = OpenInvoiceIndex::new();
        same_as_the_store(&index, &store).await;

        // Renumbered (its old keys must no longer find it) and a new one.
        invoices[1].number = "ТД00-000555".into();
        let added = invoice("А-101", "7707083893");
        store.apply(&ChangeSet { invoices: vec![invoices[1].clone(), added], ..Default::default() }).await.unwrap();
        same_as_the_store(&index, &store).await;

        // Paid in full (no longer open) and in part (open, new amount),
        // each the head or the middle of a chain of shared keys.
        let at = Utc::now();
        let pay = |invoice: &Invoice, amount: i64, status| InvoicePaid {
            id: invoice.id,
            paid: Money::new(Decimal::from(amount), "RUB").unwrap(),
            status,
            updated_at: at,
        };
        let commit = PaymentCommit {
            invoices_read: vec![(invoices[0].id, Decimal::ZERO), (invoices[3].id, Decimal::ZERO)],
            invoices_paid: vec![
                pay(&invoices[0], 1000, InvoiceStatus::Paid),
                pay(&invoices[3], 10, InvoiceStatus::PartiallyPaid),
            ],
            ..Default::default()
        };
        assert_eq!(store.commit_payments(&commit).await.unwrap(), CommitOutcome::Committed);
        same_as_the_store(&index, &store).await;
        let view = index.current(&store).await.unwrap().unwrap();
        let by_inn = view.by_keys(&InvoiceKeys { inns: vec![inn_key("7707083893").unwrap()], ..Default::default() });
        assert!(by_inn.iter().all(|i| i.id != invoices[0].id), "the paid one is gone");
        let part = by_inn.iter().find(|i| i.id == invoices[3].id).expect("partly paid is still open");
        assert_eq!(part.paid.amount, Decimal::from(10));
        drop(view);

        // Written whole again as open: back in the copy.
        store.apply(&ChangeSet { invoices: vec![invoices[0].clone()], ..Default::default() }).await.unwrap();
        same_as_the_store(&index, &store).await;

        // A second copy read from nothing agrees with the one kept current.
        same_as_the_store(&OpenInvoiceIndex::new(), &store).await;
    }
}
