//! One payment over several invoices: «Оплата по счетам № 12, 13 от …»,
//! «сч. 12 и 13». When every number the purpose names is exactly one open
//! invoice of the payer, and the amount pays them in the order named (all
//! of them exactly, or the first ones in full and the next in part), the
//! payment is split: each invoice gets its share as an application of its
//! own, with its reasons and confidence.
//!
//! Anything less clear is left to the single-invoice decision (and so
//! usually to review): a number naming no open invoice or several, invoices
//! of different clients, a date in the text that is not the invoice's, an
//! amount that does not reach past the first invoice. An amount beyond
//! what all of them owe together goes to review as `ambiguous`: it is not
//! clear which invoice the rest is for.

use dealbridge_core::model::{MatchReason, Payment, ReviewNote};
use rust_decimal::Decimal;

use super::purpose::NumberReference;
use super::{
    AMOUNT_EXACT, AMOUNT_PARTIAL, DATE_EQUAL, DATE_OUTSIDE, DATE_WINDOW, Decision, INN_EQUAL, NUMBER_EXACT,
    PaymentMatcher, has_number_key, number_hash_and_digits, number_key, reason,
};

/// The part of a payment applied to one invoice.
#[derive(Debug, Clone, PartialEq)]
pub struct Share {
    /// Index into the matcher's invoices.
    pub invoice: usize,
    pub amount: Decimal,
    pub confidence: u8,
    pub reasons: Vec<MatchReason>,
    pub paid_before: Decimal,
    pub paid_after: Decimal,
}

/// An invoice the text names, with the reference that named it.
struct Named {
    invoice: usize,
    reference: usize,
    owed: Decimal,
}

impl PaymentMatcher<'_> {
    /// The split decision, or `None` when the text does not name several
    /// open invoices of this payer unambiguously.
    pub(super) fn split(
        &mut self,
        payment: &Payment,
        references: &[NumberReference],
        payer_inn: Option<&str>,
    ) -> Option<Decision> {
        let named = self.named_invoices(payment, references, payer_inn)?;
        let owed_together: Decimal = named.iter().map(|n| n.owed).sum();
        let amount = payment.amount.amount;
        let numbers = named.iter().map(|n| format!("№ {}", self.invoice(n.invoice).number)).collect::<Vec<_>>();
        let numbers = numbers.join(", ");
        if amount > owed_together {
            return Some(Decision::Review(ReviewNote {
                reason: "ambiguous".into(),
                detail: format!(
                    "the purpose names invoices {numbers}, which owe {owed_together} together; the payment of \
                     {amount} is more, and which one the rest is for is not clear"
                ),
                candidates: Vec::new(),
            }));
        }
        // It must pay the first invoice in full and reach into the next;
        // less is a partial payment of one invoice, decided as such.
        if amount <= named[0].owed {
            return None;
        }
        let mut left = amount;
        let mut shares = Vec::with_capacity(named.len());
        for n in &named {
            if left <= Decimal::ZERO {
                break;
            }
            let part = left.min(n.owed);
            left -= part;
            let reasons = self.share_reasons(n, part, amount, &numbers, owed_together, references, payment, payer_inn);
            let score: i32 = reasons.iter().map(|r| r.points).sum();
            if score < self.rules.min_score {
                return None;
            }
            shares.push(Share {
                invoice: n.invoice,
                amount: part,
                confidence: score.clamp(0, 100) as u8,
                reasons,
                paid_before: self.paid(n.invoice),
                paid_after: self.paid(n.invoice) + part,
            });
        }
        for share in &shares {
            self.paid.insert(share.invoice, share.paid_after);
        }
        Some(Decision::Split(shares))
    }

    /// One open invoice per number in the text, in the order named, all of
    /// one client (the payer, when the payer's INN is valid); `None` unless
    /// there are at least two.
    fn named_invoices(
        &self,
        payment: &Payment,
        references: &[NumberReference],
        payer_inn: Option<&str>,
    ) -> Option<Vec<Named>> {
        let mut named: Vec<Named> = Vec::new();
        for (k, r) in references.iter().enumerate() {
            let key = number_key(&r.text);
            let (hash, _) = number_hash_and_digits(&r.text);
            let mut found = self.chains.by_number.chain(hash).filter(|&i| {
                let invoice = self.invoice(i);
                has_number_key(&invoice.number, &key)
                    && invoice.total.currency == payment.amount.currency
                    && invoice.total.amount > self.paid(i)
                    && r.date.is_none_or(|d| d == invoice.date)
                    && payer_inn.is_none_or(|inn| invoice.client_inn.as_deref().map(str::trim) == Some(inn))
            });
            let (Some(invoice), None) = (found.next(), found.next()) else { return None };
            if !named.iter().any(|n| n.invoice == invoice) {
                let owed = self.invoice(invoice).total.amount - self.paid(invoice);
                named.push(Named { invoice, reference: k, owed });
            }
        }
        if named.len() < 2 {
            return None;
        }
        // Without the payer's INN, the invoices must at least share a client.
        let client = |n: &Named| self.invoice(n.invoice).client_inn.as_deref().map(str::trim);
        if payer_inn.is_none() && (client(&named[0]).is_none() || named.iter().any(|n| client(n) != client(&named[0])))
        {
            return None;
        }
        Some(named)
    }

    #[allow(clippy::too_many_arguments)]
    fn share_reasons(
        &self,
        n: &Named,
        part: Decimal,
        amount: Decimal,
        numbers: &str,
        owed_together: Decimal,
        references: &[NumberReference],
        payment: &Payment,
        payer_inn: Option<&str>,
    ) -> Vec<MatchReason> {
        let invoice = self.invoice(n.invoice);
        let text = &references[n.reference].text;
        let mut reasons = vec![reason(
            "number_exact",
            NUMBER_EXACT,
            format!("«{text}» in the purpose is invoice № {}", invoice.number),
        )];
        if let Some(date) = references[n.reference].date {
            let date = date.format("%d.%m.%Y");
            reasons.push(reason("date_equal", DATE_EQUAL, format!("the purpose dates it {date}, as the invoice")));
        }
        if let Some(payer) = payer_inn {
            reasons.push(reason("inn_equal", INN_EQUAL, format!("the payer's INN {payer} is the client's")));
        }
        reasons.push(if part == n.owed {
            reason(
                "amount_split",
                AMOUNT_EXACT,
                format!(
                    "{part} of the {amount} paid is what invoice № {} still owed; the purpose names {numbers}, \
                     owing {owed_together} together, paid in the order named",
                    invoice.number
                ),
            )
        } else {
            reason(
                "amount_split_partial",
                AMOUNT_PARTIAL,
                format!(
                    "the last {part} of the {amount} paid is part of the {} invoice № {} still owed; the purpose \
                     names {numbers}, paid in the order named",
                    n.owed, invoice.number
                ),
            )
        });
        let days = (payment.date - invoice.date).num_days();
        reasons.push(if self.in_window(n.invoice, payment) {
            reason("date_window", DATE_WINDOW, format!("paid {days} days after the invoice"))
        } else {
            reason("date_outside", DATE_OUTSIDE, format!("paid {days} days after the invoice"))
        });
        reasons
    }
}
