//! Importing a statement for real, and matching a payment by hand.
//!
//! An import reads the file (a broken one is rejected whole), derives each
//! document's payment id from its identity (see [`crate::payments`]), skips
//! payments an earlier statement brought, matches the new incoming ones to
//! open invoices ([`crate::matching`]), applies the matches
//! ([`crate::apply`]) and commits the statement, its payments and the
//! engine's output in one transaction. The transaction opens before
//! matching, and the payments go in chunk by chunk as they are decided
//! ([`crate::payment_writer`]). The same file again (by SHA-256) is
//! answered with the first import's result and writes nothing.
//!
//! A manual match takes a payment from the review queue and applies it to
//! the invoice a person chose, exactly as an automatic match would.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use dealbridge_core::mapping::MappingSet;
use dealbridge_core::model::{
    Invoice, InvoiceStatus, MatchMethod, MatchReason, Money, Payment, PaymentDirection, PaymentMatch,
};
use dealbridge_core::runner::EngineRunner;
use dealbridge_core::store::{
    CommitOutcome, NewStatement, OpenInvoice, PaymentCommit, PaymentSettlement, PaymentState, PaymentWrite,
    PaymentsBegun, StatementRecord, StatementTally, Store, StoreError, StoredFile, StoredPayment,
};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use rust_decimal::Decimal;
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::apply::{Application, StoredDeals, apply, paid_amounts, run_flows};
use crate::counted_once::{self, CountedOnce};
use crate::matching::candidates::{OpenInvoices, open_candidates};
use crate::matching::open_index::OpenInvoiceIndex;
use crate::matching::purpose::NumberReference;
use crate::matching::{Decision, MatchRules, PaymentMatcher};
use crate::payment_writer::{Inserted, PaymentWriter};
use crate::payments::{to_payment, to_payments};
use crate::statement::Statement;
use crate::{StatementError, Summary, parse_statement};

/// Payments handed to the store at a time, while the next are matched.
const WRITE_CHUNK: usize = 4_096;
/// How often a commit is recomputed when another import got there first.
const COMMIT_ATTEMPTS: usize = 5;
/// At most this many payments are listed one by one in a report.
pub const PAYMENTS_LISTED: usize = 1000;

/// Where a statement came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportSource {
    Upload,
    Cli,
    Watch,
}

impl ImportSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ImportSource::Upload => "upload",
            ImportSource::Cli => "cli",
            ImportSource::Watch => "watch",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file is not a statement this hub reads; nothing was imported.
    #[error("rejected, nothing imported: {0}")]
    Rejected(#[from] StatementError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Other imports kept changing the same invoices; nothing was imported.
    #[error("the invoices kept changing while importing ({0}); nothing imported, try again")]
    Busy(String),
}

/// What an import did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ImportReport {
    pub statement_id: Uuid,
    /// The same file was imported before: nothing was written now, and the
    /// figures are those of the first import.
    pub already_imported: bool,
    /// What the statement holds (as `import-statement --dry-run --json`).
    #[schema(value_type = Object)]
    pub summary: serde_json::Value,
    pub payments: PaymentTally,
    /// The statement's new payments one by one (at most 1000).
    pub results: Vec<PaymentResult>,
}

/// Counts of an import's payments.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PaymentTally {
    /// Credits and debits in the file (transfers between own accounts and
    /// documents of unknown direction are not payments).
    pub in_file: u32,
    /// Stored by this import.
    pub new: u32,
    /// Brought by an earlier statement (or repeated in this file): skipped.
    pub known: u32,
    pub matched: u32,
    pub review: u32,
    pub outgoing: u32,
    /// Matched payments that pay more than their invoice still owed.
    pub overpaid: u32,
}

/// One new payment and what happened to it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PaymentResult {
    pub payment_id: Uuid,
    pub document_number: String,
    pub date: chrono::NaiveDate,
    pub amount: Money,
    pub direction: PaymentDirection,
    pub payer: String,
    pub state: PaymentState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invoice_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invoice_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deal_id: Option<Uuid>,
    /// Numbers of the further invoices a payment was split over.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub also_invoice_numbers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overpaid: Option<Money>,
    /// Why it waits for review: `no_reference`, `no_open_invoice`, `ambiguous`, `weak`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub review_reason: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl PaymentResult {
    pub fn of(stored: &StoredPayment) -> Self {
        let p = &stored.payment;
        Self {
            payment_id: p.id,
            document_number: p.document_number.clone(),
            date: p.date,
            amount: p.amount.clone(),
            direction: p.direction,
            payer: p.payer.name.clone(),
            state: stored.state,
            invoice_id: stored.matched.as_ref().map(|m| m.invoice_id),
            invoice_number: stored.matched.as_ref().map(|m| m.invoice_number.clone()),
            deal_id: stored.matched.as_ref().and_then(|m| m.deal_id),
            also_invoice_numbers: stored.also_matched.iter().map(|m| m.invoice_number.clone()).collect(),
            confidence: stored.matched.as_ref().map(|m| m.confidence),
            overpaid: stored.matched.as_ref().and_then(|m| m.overpaid.clone()),
            review_reason: stored.review.as_ref().map(|r| r.reason.clone()),
            notes: stored.notes.clone(),
        }
    }
}

/// Why a manual match was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManualMatchError {
    #[error("no payment {0}")]
    PaymentNotFound(Uuid),
    #[error("payment {0} is {1}, not waiting for review")]
    NotInReview(Uuid, &'static str),
    #[error("no invoice {0}")]
    InvoiceNotFound(Uuid),
    #[error("invoice № {number} is {status}: it takes no payment")]
    InvoiceClosed { number: String, status: &'static str },
    #[error("the payment is in {payment}, invoice № {number} in {invoice}")]
    CurrencyDiffers { number: String, payment: String, invoice: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the invoice kept changing while matching ({0}); try again")]
    Busy(String),
}

/// Imports statements and applies manual matches against one store.
#[derive(Clone)]
pub struct StatementImporter {
    pub store: Arc<dyn Store>,
    pub runner: EngineRunner,
    pub rules: MatchRules,
    /// The hub's in-memory copy of the open invoices; without one (a
    /// one-off CLI import) candidates are looked up in the store.
    pub open_invoices: Option<Arc<OpenInvoiceIndex>>,
}

/// The statement file compressed for storing, on a blocking thread: for a
/// large statement that takes a fraction of a second, while this one
/// parses and matches. Shared: each commit attempt takes the same result.
fn compressed(bytes: &[u8]) -> Shared<BoxFuture<'static, Result<StoredFile, String>>> {
    let owned = bytes.to_vec();
    tokio::task::spawn_blocking(move || StoredFile::compress(&owned).map_err(|e| e.to_string()))
        .map(|joined| joined.map_err(|e| format!("compressing the statement file: {e}"))?)
        .boxed()
        .shared()
}

/// SHA-256 of a file's bytes, hex.
pub fn digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

impl StatementImporter {
    /// Imports one statement file; see the module documentation.
    pub async fn import(
        &self,
        set: &MappingSet,
        bytes: &[u8],
        file_name: Option<&str>,
        source: ImportSource,
    ) -> Result<ImportReport, ImportError> {
        let started = Instant::now();
        let digest = digest(bytes);
        // The same file again is answered without reading it.
        if let Some(known) = self.store.statement_by_digest(&digest).await? {
            return self.report_of(known, true).await;
        }
        let file = compressed(bytes);
        let statement = parse_statement(bytes)?;
        let summary = serde_json::to_value(Summary::of(&statement)).unwrap_or_default();
        let mut phases = Phases { parse: started.elapsed(), ..Default::default() };
        let mut last_conflict = String::new();
        for _ in 0..COMMIT_ATTEMPTS {
            if let Some(known) = self.store.statement_by_digest(&digest).await? {
                return self.report_of(known, true).await;
            }
            let at = Utc::now();
            let statement_id = Uuid::now_v7();
            let preparing = Instant::now();
            let (payments, repeated_in_file) = unique(payments_of(&statement, at));
            let in_file = payments.len() as u32;
            let ids: Vec<Uuid> = payments.iter().map(|p| p.id).collect();
            // Both are reads: which payments are stored already, and the
            // open invoices the payments point at (or the in-memory copy of
            // all, held until this attempt ends). Side by side; for a
            // payment already stored the candidates are not used.
            let (known, candidates) = tokio::try_join!(
                self.store.known_payments(&ids),
                open_candidates(self.store.as_ref(), self.open_invoices.as_deref(), &payments, &self.rules)
            )?;
            let known: HashSet<Uuid> = known.into_iter().collect();
            // The ids are unique in the file, so each known one is one payment.
            let (payments_new, payments_known) = (payments.len() - known.len(), known.len() + repeated_in_file);
            // Filtered as matching takes them, not copied into a new list
            // first (for 100,000 payments, 50 MB more to touch).
            let fresh = payments.into_iter().zip(candidates.references).filter(move |(p, _)| !known.contains(&p.id));
            phases.lookup += preparing.elapsed();
            let record = StatementRecord {
                id: statement_id,
                digest: digest.clone(),
                file_name: file_name.map(str::to_owned),
                source: source.as_str().to_owned(),
                format: statement.format.to_string(),
                imported_at: at,
                summary: summary.clone(),
                payments_new: payments_new as u32,
                payments_known: payments_known as u32,
            };
            let new_statement =
                NewStatement { record: record.clone(), file: file.clone().await.map_err(StoreError::Database)? };
            let write = match self.store.begin_payments(Some(&new_statement)).await? {
                PaymentsBegun::Open(write) => write,
                PaymentsBegun::StatementKnown(id) => return self.statement_known(id).await,
            };
            let importing = Importing { set, open: &candidates.invoices, statement_id, at };
            let (outcome, written) = self.decide_and_write(importing, fresh, write, &mut phases).await?;
            match outcome {
                CommitOutcome::Committed => {
                    if written.commands {
                        self.runner.commands_committed().notify_one();
                    }
                    let stored = || written.chunks.iter().flatten();
                    metrics::counter!("dealbridge_payments_imported_total").increment(record.payments_new as u64);
                    tracing::info!(
                        payments = record.payments_new,
                        parse_ms = phases.parse.as_millis() as u64,
                        lookup_ms = phases.lookup.as_millis() as u64,
                        match_ms = phases.matching.as_millis() as u64,
                        apply_ms = phases.apply.as_millis() as u64,
                        commit_ms = phases.commit.as_millis() as u64,
                        total_ms = started.elapsed().as_millis() as u64,
                        "statement imported"
                    );
                    let listed: Vec<StoredPayment> = stored().take(PAYMENTS_LISTED).cloned().collect();
                    let report = report(record, false, in_file, &StatementTally::of_payments(stored()), &listed);
                    drop_later((written, statement));
                    return Ok(report);
                }
                CommitOutcome::StatementKnown(id) => return self.statement_known(id).await,
                CommitOutcome::Stale(why) => last_conflict = why,
            }
        }
        Err(ImportError::Busy(last_conflict))
    }

    /// The report of the statement another import of the same file stored.
    async fn statement_known(&self, id: Uuid) -> Result<ImportReport, ImportError> {
        let known =
            self.store.get_statement(id).await?.ok_or_else(|| {
                StoreError::Conflict(format!("statement {id} vanished while importing the same file"))
            })?;
        self.report_of(known, true).await
    }

    /// Matches the new payments (with the numbers their purpose texts
    /// name) against the open invoices and applies the matches, handing
    /// the decided payments to a [`PaymentWriter`] on `write` a chunk at a
    /// time; then writes the rest and commits. Returns how the commit went
    /// and what was written.
    async fn decide_and_write(
        &self,
        importing: Importing<'_, '_>,
        fresh: impl Iterator<Item = (Payment, Vec<NumberReference>)> + Send,
        write: Box<dyn PaymentWrite>,
        phases: &mut Phases,
    ) -> Result<(CommitOutcome, Written), StoreError> {
        let Importing { set, open, statement_id, at } = importing;
        let store = self.store.as_ref();
        let matching = Instant::now();
        let writer = PaymentWriter::start(write);
        let mut matcher = open.matcher(self.rules.clone());
        let mut applications = Vec::new();
        let mut applied_to: HashMap<Uuid, &OpenInvoice> = HashMap::new();
        let mut counted_once = CountedOnce::default();
        let mut deals = StoredDeals::default();
        let mut fresh = fresh.peekable();
        while fresh.peek().is_some() {
            let first = applications.len();
            let mut chunk = Vec::with_capacity(WRITE_CHUNK);
            for (payment, references) in fresh.by_ref().take(WRITE_CHUNK) {
                let decision = matcher.decide_with(&payment, &references);
                let applying = (&mut applications, &mut applied_to);
                chunk.push(decided(payment, decision, &matcher, (statement_id, at), applying));
            }
            // Before a payment is written, everything said of it must be
            // known: money the ERP already reported, and whether its deal's
            // flows can run at all.
            counted_once.settle(store, &mut chunk, &mut applications[first..], &applied_to).await?;
            deals.look_up(store, &applications[first..], &applied_to).await?;
            note_without_flows(&mut chunk, &applications[first..], &applied_to, &deals);
            if !writer.hand_over(chunk) {
                // The writer stopped; `finish` says why.
                break;
            }
        }
        // The store writes the paid amounts while the flows run.
        writer.pay_invoices(paid_amounts(&applications, &applied_to, at)?);
        phases.matching += matching.elapsed();
        let applying = Instant::now();
        let applied = run_flows(&self.runner, set, &applications, &applied_to, &deals, at).await?;
        phases.apply += applying.elapsed();
        let committing = Instant::now();
        let Inserted { write, mut chunks, stale } = writer.finish().await?;
        if let Some(stale) = stale {
            return Ok((stale.outcome(), Written::default()));
        }
        // Flows that refused: said on payments written already.
        let mut updated = Vec::new();
        for record in chunks.iter_mut().flatten() {
            if let Some(refused) = applied.refused.get(&record.payment.id) {
                record.notes.extend(refused.iter().cloned());
                updated.push((record.clone(), record.state));
            }
        }
        let settlement = PaymentSettlement { updated_payments: &updated, changes: &applied.changes };
        let outcome = write.finish(settlement).await?;
        phases.commit += committing.elapsed();
        Ok((outcome, Written { chunks, commands: !applied.changes.commands.is_empty() }))
    }

    /// The report of a statement imported before: counted from the
    /// store's columns, with the first payments listed, so the same large
    /// file again is answered without reading all its payments.
    async fn report_of(&self, record: StatementRecord, already: bool) -> Result<ImportReport, ImportError> {
        let tally = self.store.statement_tally(record.id).await?;
        let listed = self.store.payments_of_statement(record.id, PAYMENTS_LISTED as u32).await?;
        let in_file = record.payments_new + record.payments_known;
        Ok(report(record, already, in_file, &tally, &listed))
    }

    /// Applies a payment waiting for review to `invoice_id`, as an
    /// automatic match would, recording who matched it.
    pub async fn match_by_hand(
        &self,
        set: &MappingSet,
        payment_id: Uuid,
        invoice_id: Uuid,
        by: &str,
    ) -> Result<StoredPayment, ManualMatchError> {
        let mut last_conflict = String::new();
        for _ in 0..COMMIT_ATTEMPTS {
            let stored =
                self.store.get_payment(payment_id).await?.ok_or(ManualMatchError::PaymentNotFound(payment_id))?;
            if stored.state != PaymentState::Review {
                return Err(ManualMatchError::NotInReview(payment_id, stored.state.as_str()));
            }
            let invoice = self
                .store
                .invoices_by_ids(&[invoice_id])
                .await?
                .pop()
                .ok_or(ManualMatchError::InvoiceNotFound(invoice_id))?;
            if matches!(invoice.status, InvoiceStatus::Cancelled) {
                return Err(ManualMatchError::InvoiceClosed { number: invoice.number, status: "cancelled" });
            }
            let amount = stored.payment.amount.clone();
            if amount.currency != invoice.total.currency {
                return Err(ManualMatchError::CurrencyDiffers {
                    number: invoice.number,
                    payment: amount.currency,
                    invoice: invoice.total.currency,
                });
            }
            let at = Utc::now();
            let (mut updated, application) = manual_match(&stored, &invoice, by, at);
            let read = OpenInvoice::of(&invoice);
            let invoices = HashMap::from([(invoice_id, &read)]);
            // Money 1C already reported for this invoice is counted once, by
            // hand as in an import.
            let mut applications = [application];
            counted_once::settle(self.store.as_ref(), std::slice::from_mut(&mut updated), &mut applications, &invoices)
                .await?;
            let applied = apply(self.store.as_ref(), &self.runner, set, &applications, &invoices, at).await?;
            updated.notes.extend(applied.notes_of(payment_id).cloned());
            let commit = PaymentCommit {
                statement: None,
                new_payments: Vec::new(),
                updated_payments: vec![(updated.clone(), PaymentState::Review)],
                invoices_read: applied.invoices_read,
                changes: applied.changes,
                invoices_paid: applied.invoices_paid,
            };
            match self.store.commit_payments(&commit).await? {
                CommitOutcome::Committed => {
                    if !commit.changes.commands.is_empty() {
                        self.runner.commands_committed().notify_one();
                    }
                    return Ok(updated);
                }
                CommitOutcome::Stale(why) => last_conflict = why,
                // A manual match commits no statement.
                CommitOutcome::StatementKnown(_) => {}
            }
        }
        Err(ManualMatchError::Busy(last_conflict))
    }
}

/// What one import attempt matches and applies with.
struct Importing<'s, 'o> {
    set: &'s MappingSet,
    open: &'s OpenInvoices<'o>,
    statement_id: Uuid,
    at: DateTime<Utc>,
}

/// What an import attempt wrote.
#[derive(Default)]
struct Written {
    /// The new payments, in chunks as handed to the writer.
    chunks: Vec<Vec<StoredPayment>>,
    /// Whether the engine's output holds outbound commands.
    commands: bool,
}

/// The payment records the matcher's `decision` makes of `payment`, brought
/// by statement `statement_id` at `at`; the applications it makes are added
/// to `applications`, and the invoices they apply to to `applied_to`.
fn decided<'a>(
    payment: Payment,
    decision: Decision,
    matcher: &PaymentMatcher<'a>,
    (statement_id, at): (Uuid, DateTime<Utc>),
    (applications, applied_to): (&mut Vec<Application>, &mut HashMap<Uuid, &'a OpenInvoice>),
) -> StoredPayment {
    let mut record = StoredPayment {
        statement_id,
        state: PaymentState::Outgoing,
        matched: None,
        also_matched: Vec::new(),
        review: None,
        notes: inn_notes(&payment),
        updated_at: at,
        payment,
    };
    match decision {
        Decision::NotIncoming => {}
        Decision::Review(note) => {
            record.state = PaymentState::Review;
            record.review = Some(note);
        }
        Decision::Matched { invoice, confidence, reasons, paid_before, paid_after, overpaid } => {
            let invoice = matcher.invoice(invoice);
            applied_to.insert(invoice.id, invoice);
            let payment = &mut record.payment;
            payment.invoice_id = Some(invoice.id);
            applications.push(Application {
                payment_id: payment.id,
                part: 0,
                invoice_id: invoice.id,
                amount: payment.amount.clone(),
                paid_before,
                paid_after,
            });
            record.state = PaymentState::Matched;
            let amounts = (paid_before, paid_after, overpaid);
            record.matched = Some(automatic_match(invoice, confidence, reasons, amounts, at));
            if let Some(over) = overpaid {
                record.notes.push(overpayment_note(over, &invoice.number));
            }
        }
        Decision::Split(shares) => {
            record.state = PaymentState::Matched;
            for (part, share) in shares.into_iter().enumerate() {
                let invoice = matcher.invoice(share.invoice);
                applied_to.insert(invoice.id, invoice);
                let payment = &mut record.payment;
                applications.push(Application {
                    payment_id: payment.id,
                    part: part as u32,
                    invoice_id: invoice.id,
                    amount: Money { amount: share.amount, currency: payment.amount.currency.clone() },
                    paid_before: share.paid_before,
                    paid_after: share.paid_after,
                });
                let amounts = (share.paid_before, share.paid_after, None);
                let matched = automatic_match(invoice, share.confidence, share.reasons, amounts, at);
                if record.matched.is_none() {
                    payment.invoice_id = Some(invoice.id);
                    record.matched = Some(matched);
                } else {
                    record.also_matched.push(matched);
                }
            }
        }
    }
    record
}

/// Says on each payment of `chunk` whose application (of `applications`,
/// theirs) leads to no stored deal that no flows ran for it.
fn note_without_flows(
    chunk: &mut [StoredPayment],
    applications: &[Application],
    invoices: &HashMap<Uuid, &OpenInvoice>,
    deals: &StoredDeals,
) {
    let index: HashMap<Uuid, usize> = chunk.iter().enumerate().map(|(n, p)| (p.payment.id, n)).collect();
    for a in applications {
        let note = invoices.get(&a.invoice_id).and_then(|invoice| deals.deal_of(a, invoice)).and_then(Result::err);
        if let (Some(note), Some(&n)) = (note, index.get(&a.payment_id)) {
            chunk[n].notes.push(note);
        }
    }
}

/// A payment waiting for review as matched by `by` to `invoice`, and its
/// application.
fn manual_match(
    stored: &StoredPayment,
    invoice: &Invoice,
    by: &str,
    at: DateTime<Utc>,
) -> (StoredPayment, Application) {
    let amount = stored.payment.amount.clone();
    let paid_before = invoice.paid.amount;
    let paid_after = paid_before + amount.amount;
    let owed = (invoice.total.amount - paid_before).max(Decimal::ZERO);
    let overpaid = (amount.amount > owed).then(|| amount.amount - owed);
    let currency = invoice.total.currency.clone();
    let mut updated = stored.clone();
    updated.payment.invoice_id = Some(invoice.id);
    updated.state = PaymentState::Matched;
    updated.matched = Some(PaymentMatch {
        invoice_id: invoice.id,
        invoice_number: invoice.number.clone(),
        deal_id: invoice.deal_id,
        method: MatchMethod::Manual,
        confidence: 100,
        reasons: vec![MatchReason { code: "manual".into(), detail: format!("matched by {by}"), points: 0 }],
        paid_before: Money { amount: paid_before, currency: currency.clone() },
        paid_total: Money { amount: paid_after, currency: currency.clone() },
        invoice_total: invoice.total.clone(),
        overpaid: overpaid.map(|amount| Money { amount, currency }),
        matched_by: Some(by.to_owned()),
        matched_at: at,
    });
    if let Some(over) = overpaid {
        updated.notes.push(overpayment_note(over, &invoice.number));
    }
    updated.updated_at = at;
    let application =
        Application { payment_id: stored.payment.id, part: 0, invoice_id: invoice.id, amount, paid_before, paid_after };
    (updated, application)
}

/// The record of an automatic application of a payment to `invoice`;
/// `amounts` are the invoice's paid amount before and after, and the
/// overpaid part.
fn automatic_match(
    invoice: &OpenInvoice,
    confidence: u8,
    reasons: Vec<MatchReason>,
    (paid_before, paid_after, overpaid): (Decimal, Decimal, Option<Decimal>),
    at: DateTime<Utc>,
) -> PaymentMatch {
    let currency = invoice.total.currency.clone();
    PaymentMatch {
        invoice_id: invoice.id,
        invoice_number: invoice.number.clone(),
        deal_id: invoice.deal_id,
        method: MatchMethod::Automatic,
        confidence,
        reasons,
        paid_before: Money { amount: paid_before, currency: currency.clone() },
        paid_total: Money { amount: paid_after, currency: currency.clone() },
        invoice_total: invoice.total.clone(),
        overpaid: overpaid.map(|amount| Money { amount, currency }),
        matched_by: None,
        matched_at: at,
    }
}

/// Where an import's time went (logged with the import).
#[derive(Debug, Default)]
struct Phases {
    parse: Duration,
    /// Payment ids, the check which of them are stored already and the
    /// read of the open invoices they point at (side by side).
    lookup: Duration,
    /// Matching, and settling each chunk before it is handed to the
    /// writer (which inserts meanwhile).
    matching: Duration,
    apply: Duration,
    /// From the flows' end until committed: the writer's last chunks,
    /// the paid amounts, the engine's output and `COMMIT`.
    commit: Duration,
}

/// Frees a large value (a parsed statement, an import's payments) on a
/// blocking thread, so the caller gets its answer without waiting for
/// hundreds of thousands of allocations to be released.
fn drop_later<T: Send + 'static>(value: T) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn_blocking(move || drop(value))),
        Err(_) => drop(value),
    }
}

/// From this many entries on, a statement's payments are built on two threads.
const PARALLEL_FROM: usize = 10_000;

/// The statement's payments in file order ([`to_payments`]). A large
/// statement's are built in two halves side by side: each entry becomes its
/// payment on its own (a SHA-1 of its identity, a dozen strings), and
/// 100,000 of them take a few hundred milliseconds on one thread.
fn payments_of(statement: &Statement, at: DateTime<Utc>) -> Vec<Payment> {
    let entries = &statement.entries;
    if entries.len() < PARALLEL_FROM {
        return to_payments(statement, at);
    }
    let (first, second) = entries.split_at(entries.len() / 2);
    std::thread::scope(|scope| {
        let later = scope.spawn(|| second.iter().filter_map(|e| to_payment(e, at)).collect::<Vec<_>>());
        let mut all = Vec::with_capacity(entries.len());
        all.extend(first.iter().filter_map(|e| to_payment(e, at)));
        match later.join() {
            Ok(rest) => all.extend(rest),
            // Building a payment does not panic; if it did, the import
            // fails as it would have on this thread.
            Err(panic) => std::panic::resume_unwind(panic),
        }
        all
    })
}

/// Payments with distinct ids, in file order, and how many repeats were dropped.
fn unique(payments: Vec<Payment>) -> (Vec<Payment>, usize) {
    let mut seen = std::collections::HashSet::with_capacity(payments.len());
    let total = payments.len();
    let kept: Vec<Payment> = payments.into_iter().filter(|p| seen.insert(p.id)).collect();
    let repeated = total - kept.len();
    (kept, repeated)
}

/// A note when the payer's INN fails its check digits.
fn inn_notes(payment: &Payment) -> Vec<String> {
    match payment.payer.inn.as_ref().map(|i| (i, i.verify())) {
        Some((inn, Err(_))) if payment.direction == PaymentDirection::Incoming => {
            vec![format!("the payer's INN `{}` fails its length or check digits: not used for matching", inn.as_str())]
        }
        _ => Vec::new(),
    }
}

/// The report of a statement whose new payments stand as `tally` says;
/// `listed` are the first of them (at most [`PAYMENTS_LISTED`] are listed).
fn report(
    record: StatementRecord,
    already: bool,
    in_file: u32,
    tally: &StatementTally,
    listed: &[StoredPayment],
) -> ImportReport {
    let count = |state| tally.by_state.get(&state).copied().unwrap_or(0) as u32;
    let new = PaymentState::ALL.into_iter().map(count).sum();
    let payments = PaymentTally {
        in_file,
        new,
        known: in_file.saturating_sub(new),
        matched: count(PaymentState::Matched),
        review: count(PaymentState::Review),
        outgoing: count(PaymentState::Outgoing),
        overpaid: tally.overpaid as u32,
    };
    ImportReport {
        statement_id: record.id,
        already_imported: already,
        summary: record.summary,
        payments,
        results: listed.iter().take(PAYMENTS_LISTED).map(PaymentResult::of).collect(),
    }
}

/// The note on a payment that pays an invoice beyond what it owed.
pub(crate) fn overpayment_note(over: Decimal, number: &str) -> String {
    format!("overpayment: {over} more than invoice № {number} owed")
}

/// Whether `note` is the overpayment note for invoice `number`.
pub(crate) fn is_overpayment_note(note: &str, number: &str) -> bool {
    note.strip_prefix("overpayment: ")
        .is_some_and(|rest| rest.ends_with(&format!(" more than invoice № {number} owed")))
}

#[cfg(test)]
mod chunked;

#[cfg(test)]
mod tests {
    use super::*;

    /// A UTF-8 1C statement of `n` credits to one own account: credit `k`
    /// pays «{1000 + k}.50» by invoice № k of 01.03.2024.
    pub(super) fn statement_of(n: usize) -> Vec<u8> {
        let mut text = String::from(
            "1CClientBankExchange\nВерсияФормата=1.03\nКодировка=Windows\nРасчСчет=40702810000000000001\n",
        );
        for k in 0..n {
            text.push_str(&format!(
                "СекцияДокумент=Платежное поручение\nНомер={k}\nДата=02.03.2024\nСумма={}.50\n\
                 ПлательщикСчет=407028109999{k:08}\nПлательщик=ООО Клиент {k}\nПлательщикИНН=7707083893\n\
                 ПолучательСчет=40702810000000000001\nПолучатель=ООО Продавец\n\
                 НазначениеПлатежа=Оплата по счету № {k} от 01.03.2024\nКонецДокумента\n",
                1000 + k
            ));
        }
        text.push_str("КонецФайла\n");
        text.into_bytes()
    }

    /// Built on two threads, a large statement's payments are the ones one
    /// thread builds, in file order.
    #[test]
    fn payments_of_a_large_statement_are_those_of_one_thread() {
        let statement = parse_statement(statement_of(PARALLEL_FROM + 3).as_slice()).expect("statement");
        let at = Utc::now();
        let both = payments_of(&statement, at);
        assert_eq!(both.len(), PARALLEL_FROM + 3);
        assert_eq!(both, to_payments(&statement, at));
    }
}
