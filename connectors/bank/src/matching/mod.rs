//! Matching incoming payments to open invoices and orders.
//!
//! [`PaymentMatcher`] indexes the open invoices once — by number, by the
//! digits their number ends in, by client INN (`chains.rs`), or borrows the
//! index of the hub's in-memory copy (`open_index.rs`) — so each payment
//! looks up only its few candidates. Every candidate is scored from
//! evidence, each piece a [`MatchReason`] with its points:
//!
//! | code | points | evidence |
//! | --- | ---: | --- |
//! | `number_exact` | +50 | a number in the purpose text is the invoice's number (case, `-`/`/`/spaces and Latin/Cyrillic look-alike letters ignored) |
//! | `number_digits` | +35 | a number in the text is the digits the invoice's number ends in («123» ~ «ТД00-000123») |
//! | `date_equal` / `date_differs` | +10 / −25 | the text dates the number («№ 123 от 01.02.2024») and the invoice has that date / another one |
//! | `inn_equal` / `inn_differs` | +30 / −30 | the payer's INN (check digits valid) is / is not the invoice client's |
//! | `amount_exact` | +20 | the amount is what the invoice still owes |
//! | `amount_partial` | +5 | the amount is less than what it owes |
//! | `amount_over` | 0 | the amount is more than what it owes (an overpayment, flagged) |
//! | `date_window` / `date_outside` | +5 / −10 | the payment is dated from 3 days before the invoice to `window_days` after it / outside that |
//!
//! An invoice is a candidate when a number in the text points at it, or —
//! when the text names no number of an open invoice — when its client has
//! the payer's INN. The best candidate is matched when it scores at least
//! `min_score` and leads the next by `min_margin`; otherwise the payment
//! goes to review with the candidates and their scores. Confidence is the
//! score capped at 100. An invalid payer INN is never used (a note says so).
//!
//! A purpose naming several open invoices of the payer whose amount pays
//! them in the order named is split over them first (`split.rs`: each share
//! scored with `amount_split` / `amount_split_partial` instead of the amount
//! reasons).

pub mod candidates;
mod chains;
pub mod open_index;
pub mod purpose;
mod split;

pub use split::Share;

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use chrono::Duration;
use dealbridge_core::model::{MatchCandidate, MatchReason, Payment, PaymentDirection, ReviewNote};
use dealbridge_core::store::OpenInvoice;
pub use dealbridge_core::store::invoice_keys::number_key;
use dealbridge_core::store::invoice_keys::{has_number_key, inn_key, number_hash_and_digits};
use rust_decimal::Decimal;

use chains::InvoiceChains;
use purpose::{NumberReference, number_references};

/// Thresholds of automatic matching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchRules {
    /// How many days after its invoice a payment is still expected.
    pub window_days: i64,
    /// The least score an automatic match needs.
    pub min_score: i32,
    /// How far the best candidate must lead the second.
    pub min_margin: i32,
    /// A payer with more open invoices than this is not matched by INN alone.
    pub max_invoices_per_payer: usize,
}

impl Default for MatchRules {
    fn default() -> Self {
        Self { window_days: 120, min_score: 55, min_margin: 15, max_invoices_per_payer: 50 }
    }
}

/// What the matcher decided for one payment.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Apply the payment to `invoices[invoice]`.
    Matched {
        invoice: usize,
        confidence: u8,
        reasons: Vec<MatchReason>,
        paid_before: Decimal,
        paid_after: Decimal,
        /// The part of the payment beyond what the invoice still owed.
        overpaid: Option<Decimal>,
    },
    /// Split over several invoices the purpose names (`matching/split.rs`),
    /// in the order named; each share is applied like a match.
    Split(Vec<Share>),
    /// A person must decide.
    Review(ReviewNote),
    /// Not an incoming payment: nothing to match.
    NotIncoming,
}

const NONE: u32 = u32::MAX;
const DAYS_BEFORE_INVOICE: i64 = 3;
const NUMBER_EXACT: i32 = 50;
const NUMBER_DIGITS: i32 = 35;
const DATE_EQUAL: i32 = 10;
const DATE_DIFFERS: i32 = -25;
const INN_EQUAL: i32 = 30;
const INN_DIFFERS: i32 = -30;
const AMOUNT_EXACT: i32 = 20;
const AMOUNT_PARTIAL: i32 = 5;
const AMOUNT_OVER: i32 = 0;
const DATE_WINDOW: i32 = 5;
const DATE_OUTSIDE: i32 = -10;

/// Hashing for keys that are already hashes or numbers: one folded
/// multiply instead of SipHash (the index is built over a million keys).
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        let product = u128::from(self.0) * 0x9e37_79b9_7f4a_7c15;
        (product as u64) ^ ((product >> 64) as u64)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, key: u64) {
        self.0 = key;
    }

    fn write_usize(&mut self, key: usize) {
        self.0 = key as u64;
    }
}

type KeyMap = HashMap<u64, u32, BuildHasherDefault<KeyHasher>>;

/// Open invoices indexed for matching, and what this run has applied to
/// them so far (two payments of one statement to one invoice add up).
pub struct PaymentMatcher<'a> {
    invoices: Invoices<'a>,
    /// Built here over a list, or borrowed from the hub's copy.
    chains: Cow<'a, InvoiceChains>,
    rules: MatchRules,
    /// Paid amounts this run changed, by position; the others are the
    /// invoice's own.
    paid: HashMap<usize, Decimal, BuildHasherDefault<KeyHasher>>,
}

/// Where the matcher's positions point: a list of open invoices, or the
/// slots of the hub's copy (its chains point at filled slots only).
#[derive(Clone, Copy)]
enum Invoices<'a> {
    Listed(&'a [OpenInvoice]),
    Slots(&'a [Option<OpenInvoice>]),
}

/// An open invoice of 1,000 RUB dated 2024-02-01 whose client has `inn`,
/// as the store tests of this module write them.
#[cfg(test)]
fn open_test_invoice(number: &str, inn: &str) -> dealbridge_core::model::Invoice {
    use chrono::{NaiveDate, Utc};
    use dealbridge_core::model::{Client, Inn, Invoice, InvoiceKind, InvoiceStatus, Money};
    let rub = |n: i64| Money::new(Decimal::from(n), "RUB").unwrap_or_else(|e| panic!("{e}"));
    Invoice {
        id: uuid::Uuid::now_v7(),
        kind: InvoiceKind::Invoice,
        number: number.into(),
        date: NaiveDate::from_ymd_opt(2024, 2, 1).unwrap_or_default(),
        deal_id: None,
        client: Some(Client { name: format!("Клиент {inn}"), inn: Some(Inn::new(inn)), ..Default::default() }),
        total: rub(1000),
        paid: rub(0),
        shipped: rub(0),
        shipments: Vec::new(),
        paid_parts: Vec::new(),
        status: InvoiceStatus::Open,
        lines: Vec::new(),
        custom_fields: Default::default(),
        external_refs: Vec::new(),
        updated_at: Utc::now(),
    }
}

/// The digits a number key ends in, without leading zeros.
#[cfg(test)]
fn trailing_digits(key: &str) -> Option<u64> {
    number_hash_and_digits(key).1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NumberFit {
    Exact,
    Digits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AmountFit {
    Exact,
    Partial,
    Over,
}

/// What was found for one candidate; its reasons are written out only
/// for the candidates a person or the match record will see.
#[derive(Debug, Clone)]
struct Evidence {
    invoice: usize,
    /// How a number of the text fits, and which reference it was.
    number: Option<(NumberFit, usize)>,
    date_equal: Option<bool>,
    inn_equal: Option<bool>,
    amount: AmountFit,
    in_window: bool,
    score: i32,
}

fn reason(code: &str, points: i32, detail: String) -> MatchReason {
    MatchReason { code: code.to_owned(), detail, points }
}

impl<'a> PaymentMatcher<'a> {
    /// Indexes `invoices` (at most `u32::MAX - 1`); a decision's
    /// `invoice` is a position in this list.
    pub fn new(invoices: &'a [OpenInvoice], rules: MatchRules) -> Self {
        let chains = Cow::Owned(InvoiceChains::of(invoices));
        Self { invoices: Invoices::Listed(invoices), chains, rules, paid: HashMap::default() }
    }

    /// Over the hub's copy: `chains` point at filled `slots`.
    fn over_slots(slots: &'a [Option<OpenInvoice>], chains: &'a InvoiceChains, rules: MatchRules) -> Self {
        Self { invoices: Invoices::Slots(slots), chains: Cow::Borrowed(chains), rules, paid: HashMap::default() }
    }

    /// The invoice at a decision's position.
    pub fn invoice(&self, at: usize) -> &'a OpenInvoice {
        match self.invoices {
            Invoices::Listed(list) => &list[at],
            Invoices::Slots(slots) => {
                slots[at].as_ref().unwrap_or_else(|| unreachable!("a chain points at the empty slot {at}"))
            }
        }
    }

    /// What the invoice at `at` has been paid, counting this run's payments.
    fn paid(&self, at: usize) -> Decimal {
        self.paid.get(&at).copied().unwrap_or_else(|| self.invoice(at).paid.amount)
    }

    /// Whether a number in the text is (or ends like) one of the indexed
    /// invoices' numbers: when none is, matching falls back to the
    /// payer's INN.
    pub fn names_an_invoice(&self, references: &[NumberReference]) -> bool {
        !self.by_reference(references).is_empty()
    }

    /// Decides one payment and, when it matches, counts it as paid so the
    /// next payment to the same invoice sees it.
    pub fn decide(&mut self, payment: &Payment) -> Decision {
        if payment.direction != PaymentDirection::Incoming {
            return Decision::NotIncoming;
        }
        self.decide_with(payment, &number_references(&payment.purpose))
    }

    /// [`Self::decide`] with the numbers of the payment's purpose text read
    /// already (`number_references`): an import reads them once, to look up
    /// the candidates, and matches with the same.
    pub fn decide_with(&mut self, payment: &Payment, references: &[NumberReference]) -> Decision {
        if payment.direction != PaymentDirection::Incoming {
            return Decision::NotIncoming;
        }
        let payer_inn = payment.payer.inn.as_ref().filter(|i| i.verify().is_ok()).map(|i| i.as_str());
        if references.len() >= 2
            && let Some(decision) = self.split(payment, references, payer_inn)
        {
            return decision;
        }
        let mut candidates = self.by_reference(references);
        let mut from_inn = false;
        if candidates.is_empty()
            && let Some(inn) = payer_inn.and_then(inn_key)
        {
            let of_payer: Vec<usize> = self.chains.by_inn.chain(inn).collect();
            if of_payer.len() > self.rules.max_invoices_per_payer {
                return Decision::Review(ReviewNote {
                    reason: "weak".into(),
                    detail: format!(
                        "the purpose names no open invoice and the payer has {} open invoices: too many to choose \
                         by amount",
                        of_payer.len()
                    ),
                    candidates: Vec::new(),
                });
            }
            candidates = of_payer.into_iter().map(|i| Evidence::new(i, None, None)).collect();
            from_inn = true;
        }
        let currency = &payment.amount.currency;
        candidates.retain(|c| {
            let invoice = self.invoice(c.invoice);
            invoice.total.currency == *currency && invoice.total.amount > self.paid(c.invoice)
        });
        if candidates.is_empty() {
            return Decision::Review(self.nothing_found(references, from_inn));
        }
        for c in &mut candidates {
            self.weigh(c, payment, payer_inn);
        }
        // Best first; of equal ones the older invoice, then the later id,
        // so the order never depends on where the invoices sit.
        candidates.sort_by(|a, b| {
            let (x, y) = (self.invoice(a.invoice), self.invoice(b.invoice));
            b.score.cmp(&a.score).then_with(|| x.date.cmp(&y.date)).then_with(|| y.id.cmp(&x.id))
        });
        let best = &candidates[0];
        let review = |reason: &str, detail: String| {
            Decision::Review(ReviewNote {
                reason: reason.into(),
                detail,
                candidates: candidates
                    .iter()
                    .take(5)
                    .map(|c| self.candidate(c, references, payment, payer_inn))
                    .collect(),
            })
        };
        if best.score < self.rules.min_score {
            let detail = format!(
                "the best invoice, № {}, scores {} (at least {} needed)",
                self.invoice(best.invoice).number,
                best.score,
                self.rules.min_score
            );
            return review("weak", detail);
        }
        if let Some(second) = candidates.get(1).filter(|s| best.score - s.score < self.rules.min_margin) {
            let detail = format!(
                "invoices № {} and № {} score {} and {}: too close to choose",
                self.invoice(best.invoice).number,
                self.invoice(second.invoice).number,
                best.score,
                second.score
            );
            return review("ambiguous", detail);
        }
        let reasons = self.reasons(best, references, payment, payer_inn);
        let (index, confidence) = (best.invoice, best.score.clamp(0, 100) as u8);
        let total = self.invoice(index).total.amount;
        let paid_before = self.paid(index);
        let paid_after = paid_before + payment.amount.amount;
        self.paid.insert(index, paid_after);
        let overpaid = (paid_after > total).then(|| paid_after - total);
        Decision::Matched { invoice: index, confidence, reasons, paid_before, paid_after, overpaid }
    }

    /// Candidates a number in the text points at: exact numbers first, then
    /// numbers ending in the same digits; one entry per invoice.
    fn by_reference(&self, references: &[NumberReference]) -> Vec<Evidence> {
        let mut found: Vec<Evidence> = Vec::new();
        for (k, r) in references.iter().enumerate() {
            let key = number_key(&r.text);
            let (hash, digits) = number_hash_and_digits(&r.text);
            for i in self.chains.by_number.chain(hash) {
                if !found.iter().any(|f| f.invoice == i) && has_number_key(&self.invoice(i).number, &key) {
                    found.push(Evidence::new(i, Some((NumberFit::Exact, k)), self.date_fit(i, r)));
                }
            }
            let only_digits = key.bytes().all(|b| b.is_ascii_digit());
            if let Some(digits) = digits.filter(|_| only_digits) {
                for i in self.chains.by_digits.chain(digits) {
                    if !found.iter().any(|f| f.invoice == i) {
                        found.push(Evidence::new(i, Some((NumberFit::Digits, k)), self.date_fit(i, r)));
                    }
                }
            }
        }
        found
    }

    fn date_fit(&self, invoice: usize, r: &NumberReference) -> Option<bool> {
        r.date.map(|d| d == self.invoice(invoice).date)
    }

    /// Adds the INN, amount and date evidence and the score.
    fn weigh(&self, c: &mut Evidence, payment: &Payment, payer_inn: Option<&str>) {
        let invoice = self.invoice(c.invoice);
        c.inn_equal = match (payer_inn, invoice.client_inn.as_deref()) {
            (Some(payer), Some(client)) => Some(payer == client.trim()),
            _ => None,
        };
        let owed = invoice.total.amount - self.paid(c.invoice);
        let amount = payment.amount.amount;
        c.amount = if amount == owed {
            AmountFit::Exact
        } else if amount < owed {
            AmountFit::Partial
        } else {
            AmountFit::Over
        };
        c.in_window = self.in_window(c.invoice, payment);
        c.score = match c.number {
            Some((NumberFit::Exact, _)) => NUMBER_EXACT,
            Some((NumberFit::Digits, _)) => NUMBER_DIGITS,
            None => 0,
        } + match c.date_equal {
            Some(true) => DATE_EQUAL,
            Some(false) => DATE_DIFFERS,
            None => 0,
        } + match c.inn_equal {
            Some(true) => INN_EQUAL,
            Some(false) => INN_DIFFERS,
            None => 0,
        } + match c.amount {
            AmountFit::Exact => AMOUNT_EXACT,
            AmountFit::Partial => AMOUNT_PARTIAL,
            AmountFit::Over => AMOUNT_OVER,
        } + if c.in_window { DATE_WINDOW } else { DATE_OUTSIDE };
    }

    /// Whether the payment is dated from a few days before the invoice to
    /// `window_days` after it.
    fn in_window(&self, invoice: usize, payment: &Payment) -> bool {
        let date = self.invoice(invoice).date;
        let from = date - Duration::days(DAYS_BEFORE_INVOICE);
        let to = date + Duration::days(self.rules.window_days);
        payment.date >= from && payment.date <= to
    }

    /// The evidence for one candidate as reasons people read.
    fn reasons(
        &self,
        c: &Evidence,
        references: &[NumberReference],
        payment: &Payment,
        payer_inn: Option<&str>,
    ) -> Vec<MatchReason> {
        let invoice = self.invoice(c.invoice);
        let mut reasons = Vec::with_capacity(5);
        if let Some((fit, k)) = c.number {
            let text = &references[k].text;
            reasons.push(match fit {
                NumberFit::Exact => reason(
                    "number_exact",
                    NUMBER_EXACT,
                    format!("«{text}» in the purpose is invoice № {}", invoice.number),
                ),
                NumberFit::Digits => reason(
                    "number_digits",
                    NUMBER_DIGITS,
                    format!("«{text}» in the purpose is the digits of invoice № {}", invoice.number),
                ),
            });
            if let (Some(equal), Some(date)) = (c.date_equal, references[k].date) {
                let date = date.format("%d.%m.%Y");
                reasons.push(if equal {
                    reason("date_equal", DATE_EQUAL, format!("the purpose dates it {date}, as the invoice"))
                } else {
                    let actual = invoice.date.format("%d.%m.%Y");
                    reason(
                        "date_differs",
                        DATE_DIFFERS,
                        format!("the purpose dates it {date}, the invoice is of {actual}"),
                    )
                });
            }
        }
        if let (Some(equal), Some(payer)) = (c.inn_equal, payer_inn) {
            reasons.push(if equal {
                reason("inn_equal", INN_EQUAL, format!("the payer's INN {payer} is the client's"))
            } else {
                let client = invoice.client_inn.as_deref().unwrap_or_default();
                reason("inn_differs", INN_DIFFERS, format!("the payer's INN {payer} is not the client's {client}"))
            });
        }
        let owed = invoice.total.amount - self.paid(c.invoice);
        let amount = payment.amount.amount;
        reasons.push(match c.amount {
            AmountFit::Exact => {
                reason("amount_exact", AMOUNT_EXACT, format!("{amount} is what the invoice still owes"))
            }
            AmountFit::Partial => {
                reason("amount_partial", AMOUNT_PARTIAL, format!("{amount} is part of the {owed} still owed"))
            }
            AmountFit::Over => reason(
                "amount_over",
                AMOUNT_OVER,
                format!("{amount} is more than the {owed} still owed (by {})", amount - owed),
            ),
        });
        let days = (payment.date - invoice.date).num_days();
        reasons.push(if c.in_window {
            reason("date_window", DATE_WINDOW, format!("paid {days} days after the invoice"))
        } else {
            reason("date_outside", DATE_OUTSIDE, format!("paid {days} days after the invoice"))
        });
        reasons
    }

    fn candidate(
        &self,
        c: &Evidence,
        references: &[NumberReference],
        payment: &Payment,
        payer_inn: Option<&str>,
    ) -> MatchCandidate {
        let invoice = self.invoice(c.invoice);
        MatchCandidate {
            invoice_id: invoice.id,
            invoice_number: invoice.number.clone(),
            deal_id: invoice.deal_id,
            score: c.score,
            reasons: self.reasons(c, references, payment, payer_inn),
        }
    }

    fn nothing_found(&self, references: &[NumberReference], from_inn: bool) -> ReviewNote {
        let (reason, detail) = if !references.is_empty() {
            let numbers: Vec<&str> = references.iter().map(|r| r.text.as_str()).collect();
            (
                "no_open_invoice",
                format!("no open invoice in this currency is numbered {} (or it is paid already)", numbers.join(", ")),
            )
        } else if from_inn {
            ("no_open_invoice", "the payer's invoices are all paid or in another currency".to_owned())
        } else {
            ("no_reference", "the purpose names no invoice number and no open invoice has the payer's INN".to_owned())
        };
        ReviewNote { reason: reason.into(), detail, candidates: Vec::new() }
    }
}

impl Evidence {
    fn new(invoice: usize, number: Option<(NumberFit, usize)>, date_equal: Option<bool>) -> Self {
        Self { invoice, number, date_equal, inn_equal: None, amount: AmountFit::Partial, in_window: true, score: 0 }
    }
}

#[cfg(test)]
mod tests;
