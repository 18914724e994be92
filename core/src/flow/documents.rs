//! Invoices, customer orders and shipments a source system reports (an ERP
//! such as 1C): kept on the canonical invoice, and turned into the same
//! triggers bank payments give — `payment_applied` and `invoice_fully_paid`
//! when the paid amount the system reports grows, `shipments_cover_order`
//! when the deal's shipments reach 100 % of what it invoiced (or ordered).
//!
//! A shipment is one part of the order it covers: the order keeps a part
//! per shipment document, so a shipment reported again (edited, re-sent by
//! a catch-up) replaces its part and never counts twice.

use rust_decimal::Decimal;
use uuid::Uuid;

use super::actions::EventScope;
use super::effects::TraceKind;
use super::engine::{EngineError, Run};
use super::plan::Trigger;
use crate::model::{
    CanonicalEvent, ExternalRef, Invoice, InvoiceKind, InvoiceObservation, InvoiceStatus, Money, ShipmentObservation,
    ShippedPart,
};

impl Run<'_, '_> {
    /// An invoice or order as its system sees it now: created or updated,
    /// and the paid amount's growth and the deal's coverage made news.
    pub(crate) fn invoice_observed(
        &mut self,
        source: &ExternalRef,
        deal_ref: Option<&ExternalRef>,
        observed: &InvoiceObservation,
    ) -> Result<(), EngineError> {
        // A document the hub created for a deal (`create_record`) carries its
        // deal as the deal's external ref rather than in a field.
        let deal = deal_ref.and_then(|r| self.world.deal_by_ref(r)).or_else(|| self.world.deal_by_ref(source));
        let existing = self.world.invoice_by_ref(source);
        let deal = deal.or_else(|| existing.and_then(|id| self.world.invoices[&id].deal_id));
        if let Some(deal) = deal {
            self.require(deal)?;
        }
        let shipped_before = deal.is_some_and(|d| self.fully_shipped(d));
        let id = match existing {
            Some(id) => id,
            None => {
                let invoice = self.new_invoice(source, observed);
                let id = invoice.id;
                self.world.put_invoice(invoice);
                id
            }
        };
        let stored = self.world.invoices[&id].clone();
        let updated = updated_invoice(stored.clone(), deal, observed, self.cause.at);
        let changed = existing.is_none() || updated != stored;
        let details = differences(&stored, &updated, existing.is_none());
        if updated != stored {
            *self.world.invoice_mut(id).expect("present") = updated;
        }
        let paid_before = stored.paid;
        let Some(deal) = deal else { return Ok(()) };
        if changed {
            let detail = format!(
                "{} {} in {} ({}): {details}",
                kind_name(observed.kind),
                self.world.invoices[&id].number,
                source.instance,
                source.id
            );
            self.trace(deal, 0, TraceKind::Action { flow: String::new(), action: "invoice_observed".into(), detail });
        }
        let invoice = self.world.invoices[&id].clone();
        if invoice.paid.amount > paid_before.amount {
            let applied = CanonicalEvent::PaymentApplied {
                deal_id: deal,
                invoice_id: id,
                amount: Money {
                    amount: invoice.paid.amount - paid_before.amount,
                    currency: invoice.paid.currency.clone(),
                },
                paid_total: invoice.paid.clone(),
                invoice_total: invoice.total.clone(),
            };
            self.event_scope = EventScope::of(&applied);
            self.fire(&|t| matches!(t, Trigger::PaymentApplied), deal, 0)?;
            if paid_before.amount < invoice.total.amount && invoice.paid.amount >= invoice.total.amount {
                self.event_scope = EventScope::of(&CanonicalEvent::InvoiceFullyPaid { deal_id: deal, invoice_id: id });
                self.fire(&|t| matches!(t, Trigger::InvoiceFullyPaid), deal, 0)?;
            }
        }
        self.shipments_news(deal, id, shipped_before)
    }

    /// A shipment of (part of) an order: its part replaces what the same
    /// shipment covered before, and the order's shipped amount is their sum.
    pub(crate) fn shipment_observed(
        &mut self,
        source: &ExternalRef,
        covers: &ExternalRef,
        observed: &ShipmentObservation,
    ) -> Result<(), EngineError> {
        let Some(id) = self.world.invoice_by_ref(covers) else {
            return Err(EngineError::Rejected(format!(
                "shipment {} in {} covers {}, which the hub does not know (not an order or invoice of {})",
                source.id, source.instance, covers.id, covers.instance
            )));
        };
        let deal = self.world.invoices[&id].deal_id;
        if let Some(deal) = deal {
            self.require(deal)?;
        }
        let shipped_before = deal.is_some_and(|d| self.fully_shipped(d));
        let part = ShippedPart {
            shipment: source.clone(),
            number: observed.number.clone().unwrap_or_default(),
            date: observed.date,
            amount: observed.amount.clone(),
        };
        let invoice = &self.world.invoices[&id];
        if invoice.shipments.contains(&part) {
            return Ok(());
        }
        if observed.amount.currency != invoice.total.currency {
            return Err(EngineError::Rejected(format!(
                "shipment {} ships {} but order № {} is in {}",
                source.id, observed.amount, invoice.number, invoice.total.currency
            )));
        }
        let at = self.cause.at;
        let invoice = self.world.invoice_mut(id).expect("present");
        invoice.shipments.retain(|p| p.shipment != part.shipment);
        invoice.shipments.push(part);
        let shipped: Decimal = invoice.shipments.iter().map(|p| p.amount.amount).sum();
        invoice.shipped = Money { amount: shipped, currency: invoice.total.currency.clone() };
        invoice.updated_at = at;
        let (number, shipped, total) = (invoice.number.clone(), invoice.shipped.clone(), invoice.total.clone());
        let Some(deal) = deal else { return Ok(()) };
        let shipment = observed.number.as_deref().unwrap_or(&source.id);
        let detail = format!(
            "shipment {shipment} in {} ships {} of order № {number}: {shipped} of {total} shipped",
            source.instance, observed.amount
        );
        self.trace(deal, 0, TraceKind::Action { flow: String::new(), action: "shipment_observed".into(), detail });
        self.shipments_news(deal, id, shipped_before)
    }

    /// Fires `shipments_cover_order` when the deal's shipments have just
    /// reached what it invoiced (or ordered).
    fn shipments_news(&mut self, deal: Uuid, invoice: Uuid, shipped_before: bool) -> Result<(), EngineError> {
        if self.fully_shipped(deal) && !shipped_before {
            let event = CanonicalEvent::ShipmentsCoverOrder { deal_id: deal, invoice_id: invoice };
            self.event_scope = EventScope::of(&event);
            self.fire(&|t| matches!(t, Trigger::ShipmentsCoverOrder), deal, 0)?;
        }
        Ok(())
    }

    /// Whether the deal's shipments cover 100 % of what it invoiced.
    fn fully_shipped(&self, deal: Uuid) -> bool {
        let totals = self.world.deal_totals(deal);
        totals.invoiced > Decimal::ZERO && totals.shipped >= totals.invoiced
    }

    fn new_invoice(&mut self, source: &ExternalRef, observed: &InvoiceObservation) -> Invoice {
        let currency = [&observed.total, &observed.paid, &observed.shipped]
            .into_iter()
            .find_map(|m| m.as_ref().map(|m| m.currency.clone()))
            .unwrap_or_else(|| "RUB".to_owned());
        let zero = Money { amount: Decimal::ZERO, currency };
        Invoice {
            id: self.ids.next_id(),
            kind: observed.kind,
            number: source.id.clone(),
            date: self.cause.at.date_naive(),
            deal_id: None,
            client: None,
            total: zero.clone(),
            paid: zero.clone(),
            shipped: zero,
            shipments: Vec::new(),
            status: InvoiceStatus::Open,
            lines: Vec::new(),
            custom_fields: Default::default(),
            external_refs: vec![source.clone()],
            updated_at: self.cause.at,
        }
    }
}

/// The invoice with what the observation says: mapped fields replace the
/// stored ones, the rest stay.
fn updated_invoice(
    mut invoice: Invoice,
    deal: Option<Uuid>,
    observed: &InvoiceObservation,
    at: chrono::DateTime<chrono::Utc>,
) -> Invoice {
    let before = invoice.clone();
    invoice.kind = observed.kind;
    invoice.deal_id = deal.or(invoice.deal_id);
    if let Some(number) = &observed.number {
        invoice.number.clone_from(number);
    }
    if let Some(date) = observed.date {
        invoice.date = date;
    }
    if let Some(total) = &observed.total {
        invoice.total = total.clone();
    }
    if let Some(paid) = &observed.paid {
        invoice.paid = paid.clone();
    }
    // Shipments reported one by one are the shipped amount; a reported
    // total counts only where there are none.
    if let Some(shipped) = &observed.shipped
        && invoice.shipments.is_empty()
    {
        invoice.shipped = shipped.clone();
    }
    if let Some(client) = &observed.client {
        invoice.client = Some(client.clone());
    }
    for (name, value) in &observed.custom_fields {
        invoice.custom_fields.insert(name.clone(), value.clone());
    }
    if invoice.status != InvoiceStatus::Cancelled {
        invoice.status = if invoice.paid.amount >= invoice.total.amount && invoice.total.amount > Decimal::ZERO {
            InvoiceStatus::Paid
        } else if invoice.paid.amount > Decimal::ZERO {
            InvoiceStatus::PartiallyPaid
        } else {
            InvoiceStatus::Open
        };
    }
    if invoice != before {
        invoice.updated_at = at;
    }
    invoice
}

/// What an observation changed, for the trail.
fn differences(before: &Invoice, after: &Invoice, new: bool) -> String {
    if new {
        return format!("total {}, paid {}, shipped {}", after.total, after.paid, after.shipped);
    }
    let mut parts = Vec::new();
    if before.total != after.total {
        parts.push(format!("total {} → {}", before.total, after.total));
    }
    if before.paid != after.paid {
        parts.push(format!("paid {} → {}", before.paid, after.paid));
    }
    if before.shipped != after.shipped {
        parts.push(format!("shipped {} → {}", before.shipped, after.shipped));
    }
    if parts.is_empty() {
        parts.push("details updated".to_owned());
    }
    parts.join(", ")
}

fn kind_name(kind: InvoiceKind) -> &'static str {
    match kind {
        InvoiceKind::Invoice => "invoice №",
        InvoiceKind::Order => "order №",
    }
}
