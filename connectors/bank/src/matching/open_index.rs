//! The hub's in-memory copy of the open invoices, indexed the way
//! payments look for them.
//!
//! Looking up a large statement's candidates in the database is most of an
//! import's reading time: a quarter of a million index seeks, each row
//! turned into text and parsed back. A running hub keeps the open invoices
//! in memory instead — chained by folded number, by the digits a number
//! ends in and by the client's INN, the chains the
//! [`crate::matching::PaymentMatcher`] then matches over as they are — and
//! before each import reads only the invoices written since it last looked,
//! whoever wrote them (this hub, another replica, a CLI import):
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

use dealbridge_core::store::{InvoiceChanges, OpenInvoice, Store, StoreError};
use tokio::sync::{Mutex, MutexGuard};
use uuid::Uuid;

use super::chains::InvoiceChains;
use super::{MatchRules, PaymentMatcher};

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
        // What the copy holds, for the operator watching the hub's memory
        // (about 400 bytes per open invoice).
        let held = copy.as_ref().map_or(0, |c| c.by_id.len());
        metrics::gauge!("dealbridge_open_invoices_in_memory").set(held as f64);
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

    /// A matcher over every open invoice of the copy. It borrows the
    /// copy's chains: nothing is copied out or indexed again, however many
    /// invoices a statement's payments point at, and it decides each
    /// payment as a matcher over the candidates read from the store would.
    pub fn matcher(&self, rules: MatchRules) -> PaymentMatcher<'_> {
        let indexed = self.indexed();
        PaymentMatcher::over_slots(&indexed.slots, &indexed.chains, rules)
    }

    /// The open invoices with one of the keys, by id, each once — what
    /// [`dealbridge_core::store::PaymentLedger::open_invoices_by_keys`]
    /// answers. A number is compared by the hash of its folded form, as the
    /// matcher compares it: a collision adds an invoice the matcher then
    /// scores like any other, it never loses one. The tests hold the copy's
    /// chains to the store's lookup with it.
    #[cfg(test)]
    fn by_keys(&self, keys: &dealbridge_core::store::InvoiceKeys) -> Vec<OpenInvoice> {
        use dealbridge_core::store::invoice_keys::number_hash_and_digits;
        let indexed = self.indexed();
        let chains = &indexed.chains;
        let mut slots: Vec<usize> = Vec::new();
        for key in &keys.numbers {
            slots.extend(chains.by_number.chain(number_hash_and_digits(key).0));
        }
        for &digits in &keys.digits {
            slots.extend(chains.by_digits.chain(digits));
        }
        for &inn in &keys.inns {
            slots.extend(chains.by_inn.chain(inn));
        }
        // Each invoice once before copying it out (an invoice found by its
        // number is often found by its digits too).
        slots.sort_unstable();
        slots.dedup();
        let mut found: Vec<OpenInvoice> = slots.into_iter().filter_map(|slot| indexed.slots[slot].clone()).collect();
        found.sort_unstable_by_key(|i| i.id);
        found
    }
}

/// The open invoices in slots, and the chains that find them.
struct IndexedInvoices {
    /// The store's invoice counter this copy is current with.
    generation: u64,
    slots: Vec<Option<OpenInvoice>>,
    free: Vec<u32>,
    by_id: HashMap<Uuid, u32>,
    chains: InvoiceChains,
}

impl IndexedInvoices {
    fn of(changes: InvoiceChanges) -> Self {
        let n = changes.open.len();
        let mut indexed = Self {
            generation: changes.generation,
            slots: Vec::with_capacity(n),
            free: Vec::new(),
            by_id: HashMap::with_capacity(n),
            chains: InvoiceChains::with_capacity(n),
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
        self.chains.link(&invoice, slot);
        self.by_id.insert(invoice.id, slot);
        self.slots[slot as usize] = Some(invoice);
    }

    fn remove(&mut self, id: Uuid) {
        let Some(slot) = self.by_id.remove(&id) else { return };
        if let Some(invoice) = self.slots[slot as usize].take() {
            self.chains.unlink(&invoice, slot);
        }
        self.free.push(slot);
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use dealbridge_core::model::{Invoice, InvoiceStatus, Money};
    use dealbridge_core::store::InvoiceKeys;
    use dealbridge_core::store::invoice_keys::{inn_key, number_key};
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

    /// `dealbridge_open_invoices_in_memory` says how many open invoices
    /// the copy holds after each update: more as they are written, fewer
    /// as they are paid.
    #[test]
    fn the_gauge_counts_what_the_copy_holds() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let held = || {
            let text = handle.render();
            let line = text.lines().find(|l| l.starts_with("dealbridge_open_invoices_in_memory "));
            line.and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        // The recorder is this thread's, and the current-thread runtime
        // polls `current` here: other tests' copies do not count.
        metrics::with_local_recorder(&recorder, || {
            runtime.block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("hub.db").display());
                let store = SqliteStore::open(&url, 2).await.unwrap();
                store.migrate().await.unwrap();
                let index = OpenInvoiceIndex::new();
                drop(index.current(&store).await.unwrap());
                assert_eq!(held(), Some(0.0));

                let invoices = [invoice("1", "7707083893"), invoice("2", "7707083893"), invoice("3", "500100732259")];
                store.apply(&ChangeSet { invoices: invoices.to_vec(), ..Default::default() }).await.unwrap();
                drop(index.current(&store).await.unwrap());
                assert_eq!(held(), Some(3.0));

                let commit = PaymentCommit {
                    invoices_read: vec![(invoices[1].id, Decimal::ZERO)],
                    invoices_paid: vec![InvoicePaid {
                        id: invoices[1].id,
                        paid: invoices[1].total.clone(),
                        status: InvoiceStatus::Paid,
                        updated_at: Utc::now(),
                    }],
                    ..Default::default()
                };
                assert_eq!(store.commit_payments(&commit).await.unwrap(), CommitOutcome::Committed);
                drop(index.current(&store).await.unwrap());
                assert_eq!(held(), Some(2.0), "the paid invoice left the copy");
            })
        });
    }
}
