//! Applying matched payments: the paid amount accumulates on each invoice
//! (and so on its deal), and the engine hears `PaymentApplied` for every
//! payment and `InvoiceFullyPaid` for the one that completes an invoice —
//! the flows in `mappings/` turn those into tasks and stage moves. The
//! result is a change set the caller commits together with the payments.
//!
//! Each payment is its own cause (its id), so the commands it leads to have
//! idempotency keys of their own and a repeated application collapses.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use dealbridge_core::flow::Cause;
use dealbridge_core::mapping::MappingSet;
use dealbridge_core::model::{CanonicalEvent, Invoice, InvoiceStatus, Money};
use dealbridge_core::runner::{EngineRunner, RunError};
use dealbridge_core::store::{ChangeSet, Store, StoreError, change_set_from_world};
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
    /// Invoice totals and the engine's output.
    pub changes: ChangeSet,
    /// Each invoice's paid amount the applications started from.
    pub invoices_read: Vec<(Uuid, Decimal)>,
    /// The invoices as they are after the applications, by id.
    pub invoices: BTreeMap<Uuid, Invoice>,
    /// Notes per payment (flows that could not run, invoices without a deal).
    pub notes: HashMap<Uuid, Vec<String>>,
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

/// Computes invoice totals and runs the engine for `applications` (in
/// order) at engine time `at`. Writes nothing.
pub async fn apply(
    store: &dyn Store,
    runner: &EngineRunner,
    set: &MappingSet,
    applications: &[Application],
    at: DateTime<Utc>,
) -> Result<Applied, StoreError> {
    let mut applied = Applied::default();
    if applications.is_empty() {
        return Ok(applied);
    }
    let ids: BTreeSet<Uuid> = applications.iter().map(|a| a.invoice_id).collect();
    let ids: Vec<Uuid> = ids.into_iter().collect();
    let mut invoices: BTreeMap<Uuid, Invoice> =
        store.invoices_by_ids(&ids).await?.into_iter().map(|i| (i.id, i)).collect();
    let deal_ids: Vec<Uuid> =
        invoices.values().filter_map(|i| i.deal_id).collect::<BTreeSet<_>>().into_iter().collect();
    let stored_deals: BTreeSet<Uuid> = store.deals_by_ids(&deal_ids).await?.into_iter().map(|d| d.id).collect();

    let mut by_deal: BTreeMap<Uuid, Events> = BTreeMap::new();
    let mut payments_of_deal: BTreeMap<Uuid, Vec<Uuid>> = BTreeMap::new();
    for a in applications {
        let Some(invoice) = invoices.get_mut(&a.invoice_id) else {
            return Err(StoreError::Conflict(format!("invoice {} is no longer stored", a.invoice_id)));
        };
        if !applied.invoices_read.iter().any(|(id, _)| *id == a.invoice_id) {
            applied.invoices_read.push((a.invoice_id, a.paid_before));
        }
        let total = invoice.total.clone();
        invoice.paid = Money { amount: a.paid_after, currency: total.currency.clone() };
        invoice.status = status_for(a.paid_after, total.amount);
        invoice.updated_at = at;
        let deal = invoice.deal_id.filter(|d| stored_deals.contains(d));
        let Some(deal_id) = deal else {
            let note = match invoice.deal_id {
                Some(d) => format!("invoice № {} names deal {d}, which is not stored: no flows ran", invoice.number),
                None => format!("invoice № {} belongs to no deal: no flows ran", invoice.number),
            };
            applied.notes.entry(a.payment_id).or_default().push(note);
            continue;
        };
        let cause = |n: u32| Cause { event_id: a.payment_id, sequence: a.part * 2 + n, at, binding: None };
        let events = by_deal.entry(deal_id).or_default();
        events.push((
            CanonicalEvent::PaymentApplied {
                deal_id,
                invoice_id: a.invoice_id,
                amount: a.amount.clone(),
                paid_total: invoice.paid.clone(),
                invoice_total: total.clone(),
            },
            cause(0),
        ));
        if a.paid_before < total.amount && a.paid_after >= total.amount {
            events.push((CanonicalEvent::InvoiceFullyPaid { deal_id, invoice_id: a.invoice_id }, cause(1)));
        }
        payments_of_deal.entry(deal_id).or_default().push(a.payment_id);
    }

    applied.changes = run_engine(runner, set, &by_deal, &payments_of_deal, &mut applied.notes).await?;
    // The invoices carry this module's totals and status, whatever the
    // engine's copy of them says.
    applied.changes.invoices.retain(|i| !invoices.contains_key(&i.id));
    applied.changes.invoices.extend(invoices.values().cloned());
    applied.invoices = invoices;
    Ok(applied)
}

/// Runs each deal's events on a world of its own (cheap for large
/// statements); should two deals' runs touch the same record, runs all of
/// them on one world instead so neither overwrites the other.
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
    for (deal, events) in by_deal {
        match runner.dry_run(set, events).await {
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
