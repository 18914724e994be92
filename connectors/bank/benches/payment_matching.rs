//! Payment matching at scale: 100,000 incoming payments against 1,000,000
//! open invoices, in memory (no file reading, no store).
//!
//! ```sh
//! cargo bench -p dealbridge-connector-bank --bench payment_matching
//! # peak memory of the whole run:
//! /usr/bin/time -v target/release/deps/payment_matching-* --bench 2>&1 | grep -E 'match|Maximum resident'
//! ```
//!
//! Invoices: numbers `1`…`600000` and `ТД00-…` for the rest, 100,000
//! clients with valid INNs. Payments reference invoices in the forms of
//! `docs/connectors/bank.md` (number with date and INN, «сч.», prefixed
//! numbers, digits only, INN only, nothing at all) with exact, partial and
//! over-amounts. Prints the time to index, the time to match, the outcome
//! counts and the process's peak resident memory (`VmHWM`).

use std::time::Instant;

use chrono::{NaiveDate, Utc};
use dealbridge_connector_bank::matching::{Decision, MatchRules, PaymentMatcher};
use dealbridge_core::model::{Inn, InvoiceKind, Money, Party, Payment, PaymentDirection};
use dealbridge_core::store::OpenInvoice;
use rust_decimal::Decimal;
use uuid::Uuid;

const INVOICES: usize = 1_000_000;
const PAYMENTS: usize = 100_000;
const CLIENTS: u64 = 100_000;

/// A deterministic generator (SplitMix64), so every run matches the same data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A valid 10-digit INN for client `n`.
fn inn(n: u64) -> String {
    Inn::organisation(&format!("77{:07}", n)).expect("nine digits").as_str().to_owned()
}

fn number(i: usize) -> String {
    if i < 600_000 { format!("{}", i + 1) } else { format!("ТД00-{:06}", i + 1) }
}

fn main() {
    let base = NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
    let mut rng = Rng(42);
    let invoices: Vec<OpenInvoice> = (0..INVOICES)
        .map(|i| {
            let total = Decimal::from(1_000 + rng.below(500_000));
            OpenInvoice {
                id: Uuid::from_u128(i as u128 + 1),
                deal_id: Some(Uuid::from_u128((i as u128 + 1) << 64)),
                kind: InvoiceKind::Invoice,
                number: number(i),
                date: base + chrono::Duration::days(rng.below(300) as i64),
                client_inn: Some(inn(i as u64 % CLIENTS)),
                total: Money { amount: total, currency: "RUB".into() },
                paid: Money { amount: Decimal::ZERO, currency: "RUB".into() },
            }
        })
        .collect();
    let payments: Vec<Payment> = (0..PAYMENTS)
        .map(|k| {
            let i = rng.below(INVOICES as u64) as usize;
            let inv = &invoices[i];
            let form = rng.below(10);
            let amount = match rng.below(4) {
                0 | 1 => inv.total.amount,
                2 => inv.total.amount / Decimal::from(2),
                _ => inv.total.amount + Decimal::from(100),
            };
            let date = inv.date.format("%d.%m.%Y");
            let purpose = match form {
                0..=2 => format!("Оплата по счету № {} от {date}, НДС не облагается", inv.number),
                3 | 4 => format!("Оплата сч. {} за товар", inv.number),
                5 => format!("по сч.№{}", inv.number),
                6 => format!("Оплата по счету {}", inv.number.trim_start_matches("ТД00-").trim_start_matches('0')),
                7 | 8 => "Оплата за оборудование".to_owned(),
                _ => "Возврат займа".to_owned(),
            };
            let payer_inn = if form == 9 { None } else { inv.client_inn.as_deref().map(Inn::new) };
            Payment {
                id: Uuid::from_u128(u128::MAX - k as u128),
                direction: PaymentDirection::Incoming,
                document_number: format!("{k}"),
                date: inv.date + chrono::Duration::days(3),
                amount: Money { amount, currency: "RUB".into() },
                payer: Party { name: "ООО Клиент".into(), inn: payer_inn, ..Default::default() },
                payee: Party::default(),
                purpose,
                invoice_id: None,
                custom_fields: Default::default(),
                external_refs: Vec::new(),
                recorded_at: Utc::now(),
            }
        })
        .collect();

    let started = Instant::now();
    let mut matcher = PaymentMatcher::new(&invoices, MatchRules::default());
    let indexed = started.elapsed();
    let (mut matched, mut review, mut overpaid) = (0usize, 0usize, 0usize);
    let matching = Instant::now();
    for payment in &payments {
        match matcher.decide(payment) {
            Decision::Matched { overpaid: over, .. } => {
                matched += 1;
                overpaid += usize::from(over.is_some());
            }
            Decision::Split(_) => matched += 1,
            Decision::Review(_) => review += 1,
            Decision::NotIncoming => {}
        }
    }
    let matched_in = matching.elapsed();
    let total = started.elapsed();
    println!("payment matching: {PAYMENTS} payments against {INVOICES} open invoices");
    println!("  index build:   {:>8.1} ms", indexed.as_secs_f64() * 1e3);
    println!(
        "  matching:      {:>8.1} ms ({:.0} payments/s)",
        matched_in.as_secs_f64() * 1e3,
        PAYMENTS as f64 / matched_in.as_secs_f64()
    );
    println!("  index + match: {:>8.1} ms", total.as_secs_f64() * 1e3);
    println!("  outcome: {matched} matched ({overpaid} overpaid), {review} to review");
    if let Some(peak) = peak_rss() {
        println!("  peak resident memory (VmHWM, whole process incl. test data): {peak}");
    }
}

/// The process's peak resident set, from /proc (Linux).
fn peak_rss() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find(|l| l.starts_with("VmHWM:")).map(|l| l.trim_start_matches("VmHWM:").trim().to_owned())
}
