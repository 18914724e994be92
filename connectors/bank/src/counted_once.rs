//! Money an ERP has already reported. A company whose 1C makes receipts
//! («Поступление безналичных денежных средств») from the same bank
//! statements the accountant imports here would see every payment twice:
//! an order keeps the ERP's receipts as paid parts, and a bank payment with
//! the same payer's order number, date and amount as one of them is that
//! receipt — it stays matched (with its reasons), but adds nothing to what
//! the order is paid and fires no flow.
//!
//! Only orders already partly paid can hold such a part, so only those are
//! read in full; an import against unpaid invoices reads nothing more.

use std::collections::{HashMap, HashSet};

use dealbridge_core::model::{ExternalRef, Invoice, Money, PaymentMatch};
use dealbridge_core::store::{OpenInvoice, Store, StoreError, StoredPayment};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::apply::Application;
use crate::import::{is_overpayment_note, overpayment_note};

/// Turns the applications of payments an ERP already reported into
/// applications that add nothing, shifts the later ones on the same
/// invoices accordingly, and says so on each payment.
pub async fn settle(
    store: &dyn Store,
    stored: &mut [StoredPayment],
    applications: &mut [Application],
    invoices: &HashMap<Uuid, &OpenInvoice>,
) -> Result<(), StoreError> {
    CountedOnce::default().settle(store, stored, applications, invoices).await
}

/// [`settle`] for an import that hands its payments over in chunks, in
/// order: what earlier chunks settled carries over to later ones.
#[derive(Default)]
pub struct CountedOnce {
    /// Invoices already read (those paid before the import), and of them
    /// the ones holding paid parts.
    read: HashSet<Uuid>,
    with_parts: HashMap<Uuid, Invoice>,
    ledger: Ledger,
}

impl CountedOnce {
    /// Settles `applications` of the payments `stored` (the next ones in
    /// order); `invoices` holds (at least) their invoices as matched.
    pub async fn settle(
        &mut self,
        store: &dyn Store,
        stored: &mut [StoredPayment],
        applications: &mut [Application],
        invoices: &HashMap<Uuid, &OpenInvoice>,
    ) -> Result<(), StoreError> {
        let mut paid_before: Vec<Uuid> = applications
            .iter()
            .filter_map(|a| invoices.get(&a.invoice_id))
            .filter(|i| i.paid.amount > Decimal::ZERO && !self.read.contains(&i.id))
            .map(|i| i.id)
            .collect();
        paid_before.sort_unstable();
        paid_before.dedup();
        if !paid_before.is_empty() {
            let read = store.invoices_by_ids(&paid_before).await?;
            self.with_parts.extend(read.into_iter().filter(|i| !i.paid_parts.is_empty()).map(|i| (i.id, i)));
            self.read.extend(paid_before);
        }
        if self.with_parts.is_empty() {
            return Ok(());
        }
        let index: HashMap<Uuid, usize> = stored.iter().enumerate().map(|(n, s)| (s.payment.id, n)).collect();
        for application in applications.iter_mut() {
            let Some(&n) = index.get(&application.payment_id) else { continue };
            let record = &mut stored[n];
            let invoice = self.with_parts.get(&application.invoice_id);
            let reported =
                invoice.and_then(|invoice| self.ledger.reported(invoice, &record.payment, &application.amount));
            if !self.ledger.shift(application, reported.is_some()) {
                continue;
            }
            // The amounts moved: the recorded match and its overpayment
            // note say what the payment now does.
            for matched in record.matched.iter_mut().chain(record.also_matched.iter_mut()) {
                if matched.invoice_id == application.invoice_id {
                    restate(matched, application, &mut record.notes);
                }
            }
            if let Some(receipt) = reported {
                record.notes.push(format!(
                    "the same money as receipt {} reported by {} for invoice № {}: counted once",
                    receipt.id,
                    receipt.instance,
                    invoice.map(|i| i.number.as_str()).unwrap_or_default()
                ));
            }
        }
        Ok(())
    }
}

/// What has been settled so far in one import: the receipts already paired
/// with a bank payment, and per invoice the amount taken back.
#[derive(Default)]
struct Ledger {
    paired: HashSet<(Uuid, ExternalRef)>,
    taken_back: HashMap<Uuid, Decimal>,
}

impl Ledger {
    /// The receipt among the invoice's parts that is this payment's money,
    /// not yet paired with another payment of the import.
    fn reported(
        &mut self,
        invoice: &Invoice,
        payment: &dealbridge_core::model::Payment,
        amount: &Money,
    ) -> Option<ExternalRef> {
        let bank = payment.external_refs.first();
        let part = invoice.paid_parts.iter().find(|part| {
            let ours = bank.is_some_and(|b| part.names(b) || part.payment.instance == b.instance);
            !ours
                && part.same_as.is_empty()
                && part.same_money(&payment.document_number, Some(payment.date), amount)
                && !self.paired.contains(&(invoice.id, part.payment.clone()))
        })?;
        self.paired.insert((invoice.id, part.payment.clone()));
        Some(part.payment.clone())
    }

    /// Moves an application by what was taken back before it on its
    /// invoice; a reported one adds nothing and is taken back itself.
    /// Whether anything moved.
    fn shift(&mut self, application: &mut Application, reported: bool) -> bool {
        let back = self.taken_back.entry(application.invoice_id).or_default();
        application.paid_before -= *back;
        application.paid_after -= *back;
        if reported {
            *back += application.paid_after - application.paid_before;
            application.paid_after = application.paid_before;
        }
        reported || *back > Decimal::ZERO
    }
}

/// The match as recorded, with the amounts the application now has, and
/// the payment's overpayment note for that invoice said again (or dropped).
fn restate(matched: &mut PaymentMatch, application: &Application, notes: &mut Vec<String>) {
    matched.paid_before.amount = application.paid_before;
    matched.paid_total.amount = application.paid_after;
    // As the matcher counts it: what the invoice is paid beyond its total.
    let total = matched.invoice_total.amount;
    let over = (application.paid_after > total && application.paid_after > application.paid_before)
        .then(|| application.paid_after - total);
    matched.overpaid = over.map(|amount| Money { amount, currency: matched.paid_total.currency.clone() });
    notes.retain(|n| !is_overpayment_note(n, &matched.invoice_number));
    if let Some(over) = over {
        notes.push(overpayment_note(over, &matched.invoice_number));
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;
    use dealbridge_core::model::{PaidPart, Party, PaymentDirection};

    use super::*;

    fn rub(amount: i64) -> Money {
        Money { amount: Decimal::from(amount), currency: "RUB".into() }
    }

    fn payment(number: &str, amount: i64) -> dealbridge_core::model::Payment {
        dealbridge_core::model::Payment {
            id: Uuid::new_v4(),
            direction: PaymentDirection::Incoming,
            document_number: number.into(),
            date: NaiveDate::from_ymd_opt(2026, 2, 5).unwrap(),
            amount: rub(amount),
            payer: Party::default(),
            payee: Party::default(),
            purpose: String::new(),
            invoice_id: None,
            custom_fields: Default::default(),
            external_refs: vec![ExternalRef::new("bank", "40702810900000002851", format!("k{number}"))],
            recorded_at: chrono::Utc::now(),
        }
    }

    fn invoice_with_receipt(number: &str, amount: i64) -> Invoice {
        let mut invoice: Invoice = serde_json::from_value(serde_json::json!({
            "id": Uuid::new_v4(), "kind": "order", "number": "ТД00-17", "date": "2026-02-03",
            "total": {"amount": "150000", "currency": "RUB"}, "paid": {"amount": "100000", "currency": "RUB"},
            "shipped": {"amount": "0", "currency": "RUB"}, "status": "partially_paid",
            "updated_at": "2026-02-05T10:00:00Z"}))
        .unwrap();
        invoice.paid_parts.push(PaidPart {
            payment: ExternalRef::new("onec", "onec", "c1"),
            number: number.into(),
            date: NaiveDate::from_ymd_opt(2026, 2, 5),
            amount: rub(amount),
            same_as: Vec::new(),
        });
        invoice
    }

    fn application(payment: &dealbridge_core::model::Payment, invoice: Uuid, before: i64) -> Application {
        Application {
            payment_id: payment.id,
            part: 0,
            invoice_id: invoice,
            amount: payment.amount.clone(),
            paid_before: Decimal::from(before),
            paid_after: Decimal::from(before) + payment.amount.amount,
        }
    }

    #[test]
    fn a_bank_payment_1c_already_reported_adds_nothing_and_later_ones_shift_back() {
        let invoice = invoice_with_receipt("512", 100_000);
        let (same, other) = (payment("000512", 100_000), payment("513", 50_000));
        let mut ledger = Ledger::default();
        let mut first = application(&same, invoice.id, 100_000);
        let reported = ledger.reported(&invoice, &same, &first.amount);
        assert_eq!(reported, Some(ExternalRef::new("onec", "onec", "c1")));
        assert!(ledger.shift(&mut first, true));
        assert_eq!((first.paid_before, first.paid_after), (Decimal::from(100_000), Decimal::from(100_000)));

        let mut second = application(&other, invoice.id, 200_000);
        assert_eq!(ledger.reported(&invoice, &other, &second.amount), None, "another payment order is other money");
        assert!(ledger.shift(&mut second, false), "moved back by the first");
        assert_eq!((second.paid_before, second.paid_after), (Decimal::from(100_000), Decimal::from(150_000)));

        let mut elsewhere = application(&other, Uuid::new_v4(), 0);
        assert!(!ledger.shift(&mut elsewhere, false), "another invoice is not moved");

        // The receipt pairs with one bank payment only.
        let again = payment("512", 100_000);
        assert_eq!(ledger.reported(&invoice, &again, &again.amount), None);
    }
}
