//! A whole statement import at scale: 100,000 incoming payments (one
//! 1CClientBankExchange file, ~58 MB, held in memory) against 1,000,000
//! open invoices stored in the database — the embedded SQLite store, or
//! PostgreSQL with `BENCH_PG_URL`.
//!
//! ```sh
//! cargo bench -p dealbridge-connector-bank --bench statement_import
//! BENCH_PG_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!     cargo bench -p dealbridge-connector-bank --bench statement_import
//! # peak memory of the whole process:
//! /usr/bin/time -v target/release/deps/statement_import-* --bench 2>&1 | grep -E 'import|Maximum resident'
//! ```
//!
//! Timed: `StatementImporter::import` on the file's bytes — parse, payment
//! ids, the known-payment check, reading the open invoices the payments
//! point at, matching, applying (invoice totals; the flows run for
//! invoices with a stored deal) and the one transaction that stores the
//! statement, the payments and the invoices' new paid amounts. Not timed:
//! generating the data and storing the invoices beforehand. The phases are
//! also timed one by one (parse, the known-payment check, candidate read,
//! match) on the same data before the import, for where the time goes, and
//! matching over the candidates is checked to decide every payment exactly as matching over
//! all 1,000,000 open invoices does (`BENCH_VERIFY=0` skips that check).
//!
//! On SQLite the open invoices are read into memory before the import, as
//! the hub does on start (timed apart), and the import matches over that
//! copy; every decision over it is checked to be the one matching over the
//! store's candidates makes. `BENCH_IN_MEMORY=0` makes the import look them up in the
//! store instead (what a one-off CLI import and PostgreSQL do).
//!
//! `BENCH_DEALS=n` stores a deal for the first n invoices (default 2,000), so
//! that many of the matched payments run the payment flows as well.
//! `BENCH_PG_URL` names an administrative PostgreSQL URL: the bench creates
//! a throwaway database there and drops it at the end.
//!
//! `BENCH_REST_SECS=n` waits n seconds before the import, so that it meets
//! a store at rest (the setup's checkpoint done) rather than one just
//! written, as an accountant's import on a quiet hub would.

use std::sync::Arc;
use std::time::Instant;

use chrono::{NaiveDate, Utc};
use dealbridge_connector_bank::import::{ImportSource, StatementImporter};
use dealbridge_connector_bank::matching::candidates::{OpenInvoices, open_candidates};
use dealbridge_connector_bank::matching::open_index::OpenInvoiceIndex;
use dealbridge_connector_bank::matching::{Decision, MatchRules, PaymentMatcher};
use dealbridge_connector_bank::parse_statement;
use dealbridge_connector_bank::payments::to_payments;
use dealbridge_core::mapping::MappingSet;
use dealbridge_core::model::Payment;
use dealbridge_core::model::{Client, Deal, Inn, Invoice, InvoiceKind, InvoiceStatus, Money};
use dealbridge_core::runner::EngineRunner;
use dealbridge_core::store::{ChangeSet, PgStore, SqliteStore, Store};
use dealbridge_core::testing::TestDatabase;
use rust_decimal::Decimal;
use uuid::Uuid;

/// The hub binary's allocator (`src/main.rs`), so the import is measured as
/// the hub runs it: with glibc's malloc, a fifth of the import thread's time
/// went to `malloc`/`free` of its hundreds of thousands of small strings.
#[global_allocator]
static GLOBAL: dealbridge_core::allocator::HubAllocator = dealbridge_core::allocator::HubAllocator;

const INVOICES: usize = 1_000_000;
const PAYMENTS: usize = 100_000;
const CLIENTS: u64 = 100_000;
const OWN_ACCOUNT: &str = "40702810000000000001";

/// A deterministic generator (SplitMix64), so every run imports the same data.
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
    Inn::organisation(&format!("77{n:07}")).expect("nine digits").as_str().to_owned()
}

fn number(i: usize) -> String {
    if i < 600_000 { format!("{}", i + 1) } else { format!("ТД00-{:06}", i + 1) }
}

fn invoices(deals: usize) -> (Vec<Invoice>, Vec<Deal>) {
    let base = NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
    let mut rng = Rng(42);
    let now = Utc::now();
    let mut stored_deals = Vec::new();
    let invoices = (0..INVOICES)
        .map(|i| {
            let total = Decimal::from(1_000 + rng.below(500_000));
            let deal_id = Uuid::from_u128((i as u128 + 1) << 64);
            if i < deals {
                let mut deal = Deal::new("sales", "payment", now, "system:bench");
                deal.id = deal_id;
                deal.title = format!("Сделка {i}");
                deal.responsible = Some("manager".into());
                stored_deals.push(deal);
            }
            Invoice {
                id: Uuid::from_u128(i as u128 + 1),
                kind: InvoiceKind::Invoice,
                number: number(i),
                date: base + chrono::Duration::days(rng.below(300) as i64),
                deal_id: Some(deal_id),
                client: Some(Client {
                    name: format!("ООО Клиент {}", i as u64 % CLIENTS),
                    inn: Some(Inn::new(&inn(i as u64 % CLIENTS))),
                    ..Default::default()
                }),
                total: Money { amount: total, currency: "RUB".into() },
                paid: Money { amount: Decimal::ZERO, currency: "RUB".into() },
                shipped: Money { amount: Decimal::ZERO, currency: "RUB".into() },
                shipments: Vec::new(),
                paid_parts: Vec::new(),
                status: InvoiceStatus::Open,
                lines: Vec::new(),
                custom_fields: Default::default(),
                external_refs: Vec::new(),
                updated_at: now,
            }
        })
        .collect();
    (invoices, stored_deals)
}

/// A UTF-8 1C statement of `PAYMENTS` credits to `OWN_ACCOUNT`, paying
/// invoices in the purpose-text forms of `docs/connectors/bank.md` with
/// exact, partial and over-amounts, a tenth naming nothing.
fn statement(invoices: &[Invoice]) -> Vec<u8> {
    let mut rng = Rng(7);
    let mut out = String::with_capacity(PAYMENTS * 420);
    out.push_str("1CClientBankExchange\nВерсияФормата=1.03\nКодировка=Windows\nОтправитель=Банк\nПолучатель=1С\n");
    out.push_str(&format!("ДатаНачала=01.01.2024\nДатаКонца=31.12.2024\nРасчСчет={OWN_ACCOUNT}\n"));
    for k in 0..PAYMENTS {
        let inv = &invoices[rng.below(INVOICES as u64) as usize];
        let form = rng.below(10);
        let amount = match rng.below(4) {
            0 | 1 => inv.total.amount,
            2 => inv.total.amount / Decimal::from(2),
            _ => inv.total.amount + Decimal::from(100),
        };
        let invoice_date = inv.date.format("%d.%m.%Y");
        let purpose = match form {
            0..=2 => format!("Оплата по счету № {} от {invoice_date}, НДС не облагается", inv.number),
            3 | 4 => format!("Оплата сч. {} за товар", inv.number),
            5 => format!("по сч.№{}", inv.number),
            6 => format!("Оплата по счету {}", inv.number.trim_start_matches("ТД00-").trim_start_matches('0')),
            7 | 8 => "Оплата за оборудование".to_owned(),
            _ => "Возврат займа".to_owned(),
        };
        let client = inv.client.as_ref().expect("client");
        let payer_inn = if form == 9 { "" } else { client.inn.as_ref().map(Inn::as_str).unwrap_or("") };
        let date = (inv.date + chrono::Duration::days(3)).format("%d.%m.%Y");
        out.push_str(&format!(
            "СекцияДокумент=Платежное поручение\nНомер={k}\nДата={date}\nСумма={amount}\n\
             ПлательщикСчет=407028100000{k:08}\nПлательщик={name}\nПлательщикИНН={payer_inn}\n\
             ПлательщикБИК=044525225\nПолучательСчет={OWN_ACCOUNT}\nДатаПоступило={date}\n\
             Получатель=ООО Продавец\nПолучательИНН=7707083893\nНазначениеПлатежа={purpose}\nКонецДокумента\n",
            name = client.name,
        ));
    }
    out.push_str("КонецФайла\n");
    out.into_bytes()
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // The import logs where its time went.
    tracing_subscriber::fmt()
        .with_env_filter(
            "dealbridge_connector_bank=info,dealbridge_connector_bank::matching=debug,dealbridge_core::store=debug",
        )
        .with_target(false)
        .init();
    let deals: usize = std::env::var("BENCH_DEALS").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000);
    let verify = std::env::var("BENCH_VERIFY").map_or(true, |v| v != "0");
    let use_index = std::env::var("BENCH_IN_MEMORY").map_or(true, |v| v != "0");
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, pg, backend): (Arc<dyn Store>, Option<TestDatabase>, &str) = match std::env::var("BENCH_PG_URL") {
        Ok(admin) if !admin.is_empty() => {
            let db = TestDatabase::create(&admin).await;
            let store = PgStore::connect(&db.url, 4).await.expect("connect PostgreSQL");
            (Arc::new(store), Some(db), "PostgreSQL")
        }
        _ => {
            let url = format!("sqlite://{}", dir.path().join("hub.db").display());
            (Arc::new(SqliteStore::open(&url, 2).await.expect("open SQLite")), None, "SQLite")
        }
    };
    store.migrate().await.expect("migrate");

    let setup = Instant::now();
    let (invoices, stored_deals) = invoices(deals);
    let bytes = statement(&invoices);
    let mut chunks = invoices.chunks(50_000);
    let first = chunks.next().expect("invoices");
    store
        .apply(&ChangeSet { invoices: first.to_vec(), deals: stored_deals, ..Default::default() })
        .await
        .expect("store");
    for chunk in chunks {
        store.apply(&ChangeSet { invoices: chunk.to_vec(), ..Default::default() }).await.expect("store invoices");
    }
    drop(invoices);
    println!(
        "statement import: {PAYMENTS} payments ({:.1} MB, in memory) against {INVOICES} open invoices in {backend} \
         ({deals} with a stored deal); setup {:.1} s",
        bytes.len() as f64 / 1e6,
        setup.elapsed().as_secs_f64()
    );

    // The phases alone, read-only, on the same data.
    let t = Instant::now();
    let parsed = parse_statement(bytes.as_slice()).expect("statement");
    let payments = to_payments(&parsed, Utc::now());
    let parse = t.elapsed();
    // The hub reads the open invoices into memory on start (SQLite; a
    // store that does not number its invoice writes answers None).
    let t = Instant::now();
    let index = Arc::new(OpenInvoiceIndex::new());
    let in_memory = match index.current(store.as_ref()).await.expect("open invoices into memory") {
        Some(view) => {
            println!(
                "  open invoices read into memory (on the hub's start): {} in {:.1} ms",
                view.len(),
                ms(t.elapsed())
            );
            use_index
        }
        None => false,
    };
    let rules = MatchRules::default();
    let t = Instant::now();
    let OpenInvoices::Read(open) =
        open_candidates(store.as_ref(), None, &payments, &rules).await.expect("candidates").invoices
    else {
        unreachable!("no in-memory copy given")
    };
    let load = t.elapsed();
    let t = Instant::now();
    let decisions = decide_all(PaymentMatcher::new(&open, rules.clone()), &payments);
    let matching = t.elapsed();
    let matched = decisions.iter().filter(|d| matches!(d, Decision::Matched { .. } | Decision::Split(_))).count();
    let ids: Vec<Uuid> = payments.iter().map(|p| p.id).collect();
    let t = Instant::now();
    let known = store.known_payments(&ids).await.expect("known payments").len();
    let known_check = t.elapsed();
    println!("  phases alone: parse + payments {:>7.1} ms", ms(parse));
    println!("                known-payment check {:>5.1} ms ({known} known)", ms(known_check));
    println!("                read {} candidate invoices {:>5.1} ms", open.len(), ms(load));
    println!("                index + match {:>10.1} ms ({matched} matched)", ms(matching));
    if in_memory {
        let t = Instant::now();
        let copy = open_candidates(store.as_ref(), Some(&index), &payments, &rules).await.expect("candidates");
        let current = t.elapsed();
        let t = Instant::now();
        let over_copy = decide_all(copy.invoices.matcher(rules.clone()), &payments);
        println!("                in memory: current {:.1} ms, match {:.1} ms", ms(current), ms(t.elapsed()));
        let copy_matcher = copy.invoices.matcher(rules.clone());
        let differing = decisions
            .iter()
            .zip(&over_copy)
            .filter(|(a, b)| !same(a, b, &|i| open[i].id, &|i| copy_matcher.invoice(i).id))
            .count();
        assert_eq!(differing, 0, "matching over the in-memory copy must decide as over the store's candidates");
        println!("  (check) all {} decisions over the copy equal to those over the candidates", decisions.len());
    }
    if verify {
        let t = Instant::now();
        let all = store.open_invoices().await.expect("open invoices");
        println!("  (check) read all {} open invoices: {:.1} ms", all.len(), ms(t.elapsed()));
        let over_all = decide_all(PaymentMatcher::new(&all, rules.clone()), &payments);
        let differing =
            decisions.iter().zip(&over_all).filter(|(a, b)| !same(a, b, &|i| open[i].id, &|i| all[i].id)).count();
        assert_eq!(differing, 0, "matching over the candidates must decide as matching over all open invoices");
        println!("  (check) all {} decisions equal to matching over every open invoice", decisions.len());
        drop((all, over_all));
    }
    drop(decisions);
    drop((parsed, payments, open));

    let set = MappingSet::load_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../mappings").as_path())
        .unwrap_or_else(|problems| panic!("mappings: {problems:?}"));
    let importer = StatementImporter {
        store: store.clone(),
        runner: EngineRunner::new(store.clone()),
        rules: MatchRules::default(),
        open_invoices: in_memory.then_some(index),
    };
    let rest: u64 = std::env::var("BENCH_REST_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    if rest > 0 {
        println!("  resting {rest} s before the import");
        tokio::time::sleep(std::time::Duration::from_secs(rest)).await;
    }
    println!("  candidates for the import: {}", if in_memory { "from memory" } else { "looked up in the store" });
    let t = Instant::now();
    let report = importer.import(&set, &bytes, Some("bench.txt"), ImportSource::Cli).await.expect("import");
    let import = t.elapsed();
    let p = &report.payments;
    println!(
        "  import (parse, match, apply, one transaction): {:.1} ms — {} new, {} matched ({} overpaid), {} to review",
        ms(import),
        p.new,
        p.matched,
        p.overpaid,
        p.review
    );
    let t = Instant::now();
    let again = importer.import(&set, &bytes, Some("bench.txt"), ImportSource::Cli).await.expect("import again");
    println!("  the same file again: {:.1} ms (already imported: {})", ms(t.elapsed()), again.already_imported);
    if let Some(peak) = peak_rss() {
        println!("  peak resident memory (VmHWM, whole process incl. generated data): {peak}");
    }
    drop((importer, store));
    if let Some(db) = pg {
        db.drop_db().await;
    }
    if std::env::var_os("BENCH_KEEP_DB").is_some() {
        println!("  database kept in {}", dir.keep().display());
    }
}

/// Every payment's decision by one matcher, in file order.
fn decide_all(mut matcher: PaymentMatcher<'_>, payments: &[Payment]) -> Vec<Decision> {
    payments.iter().map(|p| matcher.decide(p)).collect()
}

/// Whether two decisions are the same, their invoices told apart by id
/// (`a_id` and `b_id` give the id at each matcher's position).
fn same(a: &Decision, b: &Decision, a_id: &dyn Fn(usize) -> Uuid, b_id: &dyn Fn(usize) -> Uuid) -> bool {
    match (a, b) {
        (Decision::Matched { invoice: x, .. }, Decision::Matched { invoice: y, .. }) => {
            a_id(*x) == b_id(*y) && strip(a) == strip(b)
        }
        (Decision::Split(x), Decision::Split(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| a_id(p.invoice) == b_id(q.invoice))
        }
        _ => a == b,
    }
}

/// A match without its invoice index (indices differ between invoice lists).
fn strip(d: &Decision) -> Decision {
    match d {
        Decision::Matched { confidence, reasons, paid_before, paid_after, overpaid, .. } => Decision::Matched {
            invoice: 0,
            confidence: *confidence,
            reasons: reasons.clone(),
            paid_before: *paid_before,
            paid_after: *paid_after,
            overpaid: *overpaid,
        },
        other => other.clone(),
    }
}

/// The process's peak resident set, from /proc (Linux).
fn peak_rss() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find(|l| l.starts_with("VmHWM:")).map(|l| l.trim_start_matches("VmHWM:").trim().to_owned())
}
