//! Applying matched payments: the paid amount accumulates on each invoice
//! (and so on its deal), and the engine hears `PaymentApplied` for every
//! payment and `InvoiceFullyPaid` for the one that completes an invoice —
//! the flows in `mappings/` turn those into tasks and stage moves. The
//! result is a change set and the invoices' new paid amounts, which the
//! caller commits together with the payments.
//!
//! The invoices are not read again: the caller passes them as matching read
//! them (`OpenInvoice`), and their new paid amount and status are written
//! beside the stored invoices (`InvoicePaid`, laid over the documents on
//! read) — an import paying tens of thousands of invoices neither reads
//! nor rewrites their whole documents.
//!
//! Each payment is its own cause (its id), so the commands it leads to have
//! idempotency keys of their own and a repeated application collapses.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use dealbridge_core::flow::Cause;
use dealbridge_core::mapping::MappingSet;
use dealbridge_core::model::{CanonicalEvent, InvoiceStatus, Money};
use dealbridge_core::runner::{EngineRunner, RunError, RunResult};
use dealbridge_core::store::{ChangeSet, InvoicePaid, OpenInvoice, Store, StoreError, change_set_from_world};
use futures::StreamExt;
use rust_decimal::Decimal;
use uuid::Uuid;

/// One payment applied to one invoice.
#[derive(Debug, Clone, PartialEq)]
pub struct Application {
    pub payment_id: Uuid,
    /// Which share of the payment this is (0 unless it was split over
    /// several invoices): each share is a cause of its own.
    pub part: u32,
    pub invoice_id: Uuid,
    pub amount: Money,
    /// What the invoice had been paid before, as the caller computed it.
    pub paid_before: Decimal,
    pub paid_after: Decimal,
}

/// What applying produced.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// The engine's output (deal moves, tasks, commands, trail).
    pub changes: ChangeSet,
    /// Each invoice's paid amount the applications started from.
    pub invoices_read: Vec<(Uuid, Decimal)>,
    /// Each invoice's paid amount and status after the applications.
    pub invoices_paid: Vec<InvoicePaid>,
    /// Notes per payment whose invoice names no stored deal, so no flows
    /// ran (what [`StoredDeals::deal_of`] says).
    pub without_flows: HashMap<Uuid, Vec<String>>,
    /// Notes per payment whose deal's flows refused to run.
    pub refused: HashMap<Uuid, Vec<String>>,
}

impl Applied {
    /// Every note for `payment`: why no flows ran, or why they refused.
    pub fn notes_of(&self, payment: Uuid) -> impl Iterator<Item = &String> {
        let without_flows = self.without_flows.get(&payment).into_iter().flatten();
        without_flows.chain(self.refused.get(&payment).into_iter().flatten())
    }
}

/// The status an invoice's paid amount gives it.
pub fn status_for(paid: Decimal, total: Decimal) -> InvoiceStatus {
    if paid >= total {
        InvoiceStatus::Paid
    } else if paid > Decimal::ZERO {
        InvoiceStatus::PartiallyPaid
    } else {
        InvoiceStatus::Open
    }
}

type Events = Vec<(CanonicalEvent, Cause)>;

/// Which deals the applied invoices name are stored: only a stored deal's
/// flows can run. Grows as more applications are looked up, so an import
/// can ask chunk by chunk.
#[derive(Debug, Default)]
pub struct StoredDeals {
    looked_up: HashSet<Uuid>,
    stored: HashSet<Uuid>,
}

impl StoredDeals {
    /// Looks up the deals of `applications`' invoices not looked up before.
    pub async fn look_up(
        &mut self,
        store: &dyn Store,
        applications: &[Application],
        invoices: &HashMap<Uuid, &OpenInvoice>,
    ) -> Result<(), StoreError> {
        let mut ids = BTreeSet::new();
        for a in applications {
            ids.extend(invoice_of(invoices, a.invoice_id)?.deal_id.filter(|d| !self.looked_up.contains(d)));
        }
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = ids.into_iter().collect();
        self.stored.extend(store.deals_by_ids(&ids).await?.into_iter().map(|d| d.id));
        self.looked_up.extend(ids);
        Ok(())
    }

    /// The stored deal an application's flows run on; otherwise the note
    /// saying why none run. `None` for an application that adds nothing
    /// (money the ERP already reported): no flow hears of it.
    pub fn deal_of(&self, a: &Application, invoice: &OpenInvoice) -> Option<Result<Uuid, String>> {
        if a.paid_after == a.paid_before {
            return None;
        }
        Some(match invoice.deal_id {
            Some(d) if self.stored.contains(&d) => Ok(d),
            Some(d) => Err(format!("invoice № {} names deal {d}, which is not stored: no flows ran", invoice.number)),
            None => Err(format!("invoice № {} belongs to no deal: no flows ran", invoice.number)),
        })
    }
}

fn invoice_of<'a>(invoices: &HashMap<Uuid, &'a OpenInvoice>, id: Uuid) -> Result<&'a OpenInvoice, StoreError> {
    invoices.get(&id).copied().ok_or_else(|| StoreError::Conflict(format!("invoice {id} was not read")))
}

/// Computes invoice totals and runs the engine for `applications` (in
/// order) at engine time `at`; `invoices` are the applied invoices as read
/// (by id). Writes nothing.
pub async fn apply(
    store: &dyn Store,
    runner: &EngineRunner,
    set: &MappingSet,
    applications: &[Application],
    invoices: &HashMap<Uuid, &OpenInvoice>,
    at: DateTime<Utc>,
) -> Result<Applied, StoreError> {
    let mut deals = StoredDeals::default();
    deals.look_up(store, applications, invoices).await?;
    let PaidAmounts { read, paid } = paid_amounts(applications, invoices, at)?;
    let applied = run_flows(runner, set, applications, invoices, &deals, at).await?;
    Ok(Applied { invoices_read: read, invoices_paid: paid, ..applied })
}

/// What applications do to their invoices' paid amounts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PaidAmounts {
    /// The paid amount each invoice had before them (its first
    /// application's), by id.
    pub read: Vec<(Uuid, Decimal)>,
    /// Its paid amount and status after each (the last one of an invoice
    /// is where it ends).
    pub paid: Vec<InvoicePaid>,
}

/// The paid amounts `applications` (in order) leave their invoices with.
pub fn paid_amounts(
    applications: &[Application],
    invoices: &HashMap<Uuid, &OpenInvoice>,
    at: DateTime<Utc>,
) -> Result<PaidAmounts, StoreError> {
    let mut read: HashMap<Uuid, Decimal> = HashMap::new();
    let mut paid = Vec::with_capacity(applications.len());
    for a in applications {
        let total = &invoice_of(invoices, a.invoice_id)?.total;
        read.entry(a.invoice_id).or_insert(a.paid_before);
        paid.push(InvoicePaid {
            id: a.invoice_id,
            paid: Money { amount: a.paid_after, currency: total.currency.clone() },
            status: status_for(a.paid_after, total.amount),
            updated_at: at,
        });
    }
    let mut read: Vec<(Uuid, Decimal)> = read.into_iter().collect();
    read.sort_unstable_by_key(|(id, _)| *id);
    Ok(PaidAmounts { read, paid })
}

/// Runs the engine for `applications` (in order) at engine time `at`,
/// with the deals looked up already (`deals` must have looked up every
/// application's). The result's paid amounts are left empty: see
/// [`paid_amounts`].
pub async fn run_flows(
    runner: &EngineRunner,
    set: &MappingSet,
    applications: &[Application],
    invoices: &HashMap<Uuid, &OpenInvoice>,
    deals: &StoredDeals,
    at: DateTime<Utc>,
) -> Result<Applied, StoreError> {
    let mut applied = Applied::default();
    if applications.is_empty() {
        return Ok(applied);
    }
    let mut by_deal: BTreeMap<Uuid, Events> = BTreeMap::new();
    let mut payments_of_deal: BTreeMap<Uuid, Vec<Uuid>> = BTreeMap::new();
    for a in applications {
        let invoice = invoice_of(invoices, a.invoice_id)?;
        // Money the ERP already reported (`counted_once`) adds nothing, so
        // no flow hears of it.
        let deal_id = match deals.deal_of(a, invoice) {
            None => continue,
            Some(Ok(deal)) => deal,
            Some(Err(note)) => {
                applied.without_flows.entry(a.payment_id).or_default().push(note);
                continue;
            }
        };
        let total = &invoice.total;
        let paid_total = Money { amount: a.paid_after, currency: total.currency.clone() };
        let cause = |n: u32| Cause { event_id: a.payment_id, sequence: a.part * 2 + n, at, binding: None };
        let events = by_deal.entry(deal_id).or_default();
        events.push((
            CanonicalEvent::PaymentApplied {
                deal_id,
                invoice_id: a.invoice_id,
                amount: a.amount.clone(),
                paid_total,
                invoice_total: total.clone(),
            },
            cause(0),
        ));
        if a.paid_before < total.amount && a.paid_after >= total.amount {
            events.push((CanonicalEvent::InvoiceFullyPaid { deal_id, invoice_id: a.invoice_id }, cause(1)));
        }
        payments_of_deal.entry(deal_id).or_default().push(a.payment_id);
    }

    applied.changes = run_engine(runner, set, &by_deal, &payments_of_deal, &mut applied.refused).await?;
    // The invoices carry this module's totals and status, written in place;
    // the engine's copies of them (paid amounts it heard of) are dropped.
    let paid: HashSet<Uuid> = applications.iter().map(|a| a.invoice_id).collect();
    applied.changes.invoices.retain(|i| !paid.contains(&i.id));
    Ok(applied)
}

/// How many deals' runs are under way at once. A run is mostly reads of
/// its deal's world, a round trip each; side by side the store serves
/// several (PostgreSQL on its own processes, SQLite on its reading
/// connections' threads) while this thread runs the engine for another.
/// Beyond the store's connections more would only queue.
const RUNS_AT_ONCE: usize = 4;

/// Runs each deal's events on a world of its own (cheap for large
/// statements: the engine copies its world per event); should two deals'
/// runs touch the same record, runs all of them on one world instead so
/// neither overwrites the other.
///
/// The runs only read the store, so they go side by side
/// ([`RUNS_AT_ONCE`]); their results are taken in deal order, so the
/// merged change set and the notes are those of running them in turn.
async fn run_engine(
    runner: &EngineRunner,
    set: &MappingSet,
    by_deal: &BTreeMap<Uuid, Events>,
    payments_of_deal: &BTreeMap<Uuid, Vec<Uuid>>,
    notes: &mut HashMap<Uuid, Vec<String>>,
) -> Result<ChangeSet, StoreError> {
    let mut merged = ChangeSet::default();
    let mut touched: BTreeSet<String> = BTreeSet::new();
    let mut overlap = false;
    // The futures are made here, before the stream, from a named `async
    // fn`: a closure returning an `async` block leaves the compiler unable
    // to prove the import's future `Send` for every lifetime.
    let runs: Vec<_> = by_deal.iter().map(|(deal, events)| run_deal(runner, set, deal, events)).collect();
    let mut runs = futures::stream::iter(runs).buffered(RUNS_AT_ONCE);
    while let Some((deal, run)) = runs.next().await {
        match run {
            Ok(result) => {
                let changes = change_set_from_world(&result.world, &result.effects);
                for key in touched_records(&changes) {
                    overlap |= !touched.insert(key);
                }
                append(&mut merged, changes);
            }
            Err(RunError::Rejected(reason)) => {
                for payment in payments_of_deal.get(deal).into_iter().flatten() {
                    notes.entry(*payment).or_default().push(format!("the deal's flows did not run: {reason}"));
                }
            }
            Err(RunError::Store(e)) => return Err(e),
        }
    }
    if !overlap || by_deal.len() < 2 {
        return Ok(merged);
    }
    let all: Events = by_deal.values().flatten().cloned().collect();
    match runner.dry_run(set, &all).await {
        Ok(result) => Ok(change_set_from_world(&result.world, &result.effects)),
        Err(RunError::Store(e)) => Err(e),
        // Each deal ran alone above; together something refused. Keep the
        // per-deal result of the first run: it is what each deal's own
        // events lead to.
        Err(RunError::Rejected(_)) => Ok(merged),
    }
}

/// One deal's run, tagged with the deal.
async fn run_deal<'a>(
    runner: &'a EngineRunner,
    set: &'a MappingSet,
    deal: &'a Uuid,
    events: &'a Events,
) -> (&'a Uuid, Result<RunResult, RunError>) {
    (deal, runner.dry_run(set, events).await)
}

fn touched_records(changes: &ChangeSet) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    keys.extend(changes.deals.iter().map(|d| format!("deal:{}", d.id)));
    keys.extend(changes.invoices.iter().map(|i| format!("invoice:{}", i.id)));
    keys.extend(changes.tasks.iter().map(|t| format!("task:{}", t.id)));
    keys.extend(changes.timers.iter().map(|t| format!("timer:{}", t.id)));
    keys.extend(changes.team_cursors.iter().map(|(team, _)| format!("team:{team}")));
    keys
}

fn append(all: &mut ChangeSet, more: ChangeSet) {
    all.deals.extend(more.deals);
    all.invoices.extend(more.invoices);
    all.tasks.extend(more.tasks);
    all.timers.extend(more.timers);
    all.commands.extend(more.commands);
    all.trace.extend(more.trace);
    all.team_cursors.extend(more.team_cursors);
    all.event_outcomes.extend(more.event_outcomes);
}
