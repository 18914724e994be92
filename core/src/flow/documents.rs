//! Invoices, customer orders and shipments a source system reports (an ERP
//! such as 1C): kept on the canonical invoice, and turned into the same
//! triggers bank payments give — `payment_applied` and `invoice_fully_paid`
//! when the paid amount the system reports grows, `shipments_cover_order`
//! when the deal's shipments reach 100 % of what it invoiced (or ordered).
//!
//! Payments an ERP reports (receipts) are parts of the orders they pay, in
//! the same way, beside the bank statement payments applied to them; the
//! same money from both is one part.
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
    CanonicalEvent, ExternalRef, Invoice, InvoiceKind, InvoiceObservation, InvoiceStatus, Money, PaidPart,
    PaymentObservation, PaymentShare, ShipmentObservation, ShippedPart,
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
        self.paid_news(deal, id, &paid_before)?;
        self.shipments_news(deal, id, shipped_before)
    }

    /// Fires `payment_applied` when the invoice's paid amount has grown
    /// from `paid_before`, and `invoice_fully_paid` when it has just
    /// reached the total.
    fn paid_news(&mut self, deal: Uuid, id: Uuid, paid_before: &Money) -> Result<(), EngineError> {
        let invoice = &self.world.invoices[&id];
        if invoice.paid.amount <= paid_before.amount {
            return Ok(());
        }
        let fully_paid = paid_before.amount < invoice.total.amount && invoice.paid.amount >= invoice.total.amount;
        let applied = CanonicalEvent::PaymentApplied {
            deal_id: deal,
            invoice_id: id,
            amount: Money { amount: invoice.paid.amount - paid_before.amount, currency: invoice.paid.currency.clone() },
            paid_total: invoice.paid.clone(),
            invoice_total: invoice.total.clone(),
        };
        self.event_scope = EventScope::of(&applied);
        self.fire(&|t| matches!(t, Trigger::PaymentApplied), deal, 0)?;
        if fully_paid {
            self.event_scope = EventScope::of(&CanonicalEvent::InvoiceFullyPaid { deal_id: deal, invoice_id: id });
            self.fire(&|t| matches!(t, Trigger::InvoiceFullyPaid), deal, 0)?;
        }
        Ok(())
    }

    /// A payment document an ERP reports: each share becomes (or replaces)
    /// the document's part of the order it pays, unless the same money is
    /// already there from another source (a bank statement). A payment
    /// naming only documents the hub does not know is refused.
    pub(crate) fn payment_observed(
        &mut self,
        source: &ExternalRef,
        observed: &PaymentObservation,
    ) -> Result<(), EngineError> {
        let known: Vec<(Uuid, &PaymentShare)> =
            observed.shares.iter().filter_map(|share| Some((self.world.invoice_by_ref(&share.pays)?, share))).collect();
        if known.is_empty() && !observed.shares.is_empty() {
            let named: Vec<&str> = observed.shares.iter().map(|s| s.pays.id.as_str()).collect();
            return Err(EngineError::Rejected(format!(
                "payment {} in {} pays {}, which the hub does not know (not an order or invoice of {})",
                source.id,
                source.instance,
                named.join(", "),
                source.instance
            )));
        }
        for (id, share) in known {
            self.payment_share(source, observed, id, &share.amount)?;
        }
        Ok(())
    }

    fn payment_share(
        &mut self,
        source: &ExternalRef,
        observed: &PaymentObservation,
        id: Uuid,
        amount: &Money,
    ) -> Result<(), EngineError> {
        let deal = self.world.invoices[&id].deal_id;
        if let Some(deal) = deal {
            self.require(deal)?;
        }
        let invoice = &self.world.invoices[&id];
        if amount.currency != invoice.total.currency {
            return Err(EngineError::Rejected(format!(
                "payment {} pays {amount} of {} {}, which is in {}",
                source.id,
                kind_name(invoice.kind),
                invoice.number,
                invoice.total.currency
            )));
        }
        let number = observed.number.as_deref().unwrap_or_default();
        let part = PaidPart {
            payment: source.clone(),
            number: number.to_owned(),
            date: observed.date,
            amount: amount.clone(),
            same_as: Vec::new(),
        };
        let at = self.cause.at;
        let invoice = self.world.invoice_mut(id).expect("present");
        let counted_before: Decimal = invoice.paid_parts.iter().map(|p| p.amount.amount).sum();
        let Some(outcome) = take_part(&mut invoice.paid_parts, part) else { return Ok(()) };
        let counted: Decimal = invoice.paid_parts.iter().map(|p| p.amount.amount).sum();
        // Bank payments applied by amount (not as parts) stay in `paid`: the
        // part moves it by what it changed.
        let paid_before = invoice.paid.clone();
        invoice.paid.amount += counted - counted_before;
        if invoice.status != InvoiceStatus::Cancelled {
            invoice.status = status_of(invoice.paid.amount, invoice.total.amount);
        }
        invoice.updated_at = at;
        let document = format!("{} {}", kind_name(invoice.kind), invoice.number);
        let (paid, total) = (invoice.paid.clone(), invoice.total.clone());
        let Some(deal) = deal else { return Ok(()) };
        let payment = observed.number.as_deref().unwrap_or(&source.id);
        let detail = format!(
            "payment {payment} in {} pays {amount} of {document}{outcome}: {paid} of {total} paid",
            source.instance
        );
        self.trace(deal, 0, TraceKind::Action { flow: String::new(), action: "payment_observed".into(), detail });
        self.paid_news(deal, id, &paid_before)
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
            paid_parts: Vec::new(),
            status: InvoiceStatus::Open,
            lines: Vec::new(),
            custom_fields: Default::default(),
            external_refs: vec![source.clone()],
            updated_at: self.cause.at,
        }
    }
}

/// Puts a payment document's part among an invoice's paid parts: it
/// replaces the document's earlier part, or joins a part that is the same
/// money from another source (counted once). `None` when nothing changed;
/// otherwise what happened, for the trail.
fn take_part(parts: &mut Vec<PaidPart>, part: PaidPart) -> Option<&'static str> {
    if let Some(known) = parts.iter_mut().find(|p| p.payment.same_record(&part.payment)) {
        if known.number == part.number && known.date == part.date && known.amount == part.amount {
            return None;
        }
        let same_as = std::mem::take(&mut known.same_as);
        *known = PaidPart { same_as, ..part };
        return Some(" (corrected)");
    }
    if parts.iter().any(|p| p.names(&part.payment)) {
        return None;
    }
    let other_source = |p: &&mut PaidPart| {
        p.payment.instance != part.payment.instance && !p.same_as.iter().any(|r| r.instance == part.payment.instance)
    };
    match parts.iter_mut().filter(other_source).find(|p| p.same_money(&part.number, part.date, &part.amount)) {
        Some(same) => {
            same.same_as.push(part.payment);
            Some(" (the same money as one already counted: counted once)")
        }
        None => {
            parts.push(part);
            Some("")
        }
    }
}

/// The status a paid amount gives an invoice of `total`.
fn status_of(paid: Decimal, total: Decimal) -> InvoiceStatus {
    if paid >= total && total > Decimal::ZERO {
        InvoiceStatus::Paid
    } else if paid > Decimal::ZERO {
        InvoiceStatus::PartiallyPaid
    } else {
        InvoiceStatus::Open
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
    // Payments reported one by one are the paid amount; a reported total
    // counts only where there are none.
    if let Some(paid) = &observed.paid
        && invoice.paid_parts.is_empty()
    {
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
        invoice.status = status_of(invoice.paid.amount, invoice.total.amount);
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

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;

    fn part(system: &str, instance: &str, id: &str, number: &str, amount: i64) -> PaidPart {
        PaidPart {
            payment: ExternalRef::new(system, instance, id),
            number: number.to_owned(),
            date: NaiveDate::from_ymd_opt(2026, 2, 5),
            amount: Money { amount: Decimal::from(amount), currency: "RUB".into() },
            same_as: Vec::new(),
        }
    }

    #[test]
    fn a_receipt_sent_again_counts_once_and_a_corrected_one_replaces_its_part() {
        let mut parts = Vec::new();
        assert_eq!(take_part(&mut parts, part("onec", "erp", "c1", "311", 50_000)), Some(""));
        assert_eq!(take_part(&mut parts, part("onec", "erp", "c1", "311", 50_000)), None);
        assert_eq!(take_part(&mut parts, part("onec", "erp", "c1", "311", 40_000)), Some(" (corrected)"));
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].amount.amount, Decimal::from(40_000));
    }

    #[test]
    fn the_same_payment_from_the_bank_and_from_1c_is_one_part() {
        let mut parts = vec![part("bank", "40702810900000000001", "k1", "000311", 50_000)];
        let outcome = take_part(&mut parts, part("onec", "erp", "c1", "311", 50_000));
        assert_eq!(outcome, Some(" (the same money as one already counted: counted once)"));
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].same_as, [ExternalRef::new("onec", "erp", "c1")]);
        // Sent again, the linked receipt changes nothing.
        assert_eq!(take_part(&mut parts, part("onec", "erp", "c1", "311", 50_000)), None);
        // Another receipt of the same amount on the same day with another
        // number is other money; without numbers nothing is assumed.
        assert_eq!(take_part(&mut parts, part("onec", "erp", "c2", "312", 50_000)), Some(""));
        assert_eq!(take_part(&mut parts, part("onec", "erp", "c3", "", 50_000)), Some(""));
        assert_eq!(parts.len(), 3);
    }
}
