//! What the store keeps for bank statements: each imported file, each
//! payment it held (once, however many statements repeat it), how the
//! payment was matched to an invoice or why it waits for a person, and the
//! open invoices payments are matched against.
//!
//! Importing is one transaction: the statement, its new payments, their
//! matches and the engine's output (invoice totals, deal moves, tasks,
//! outbox commands) land together or not at all. The caller computed all of
//! it from what it read before; the commit refuses with
//! [`CommitOutcome::Stale`] when that changed meanwhile (another import or
//! a manual match got there first), and the caller computes again.
//!
//! The transaction is written in one call ([`PaymentLedger::commit_payments`])
//! or in steps ([`PaymentLedger::begin_payments`]): a large import opens it
//! when matching starts and hands over its payments a chunk at a time as
//! they are decided, so the store writes them while the caller matches the
//! rest.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::corrupt;
use super::invoice_keys::{InvoiceKeys, InvoicePaid};
use super::statement_file::StoredFile;
use super::{ChangeSet, StoreError};
use crate::model::{Invoice, InvoiceKind, Money, Payment, PaymentMatch, ReviewNote};

/// Where a payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentState {
    /// Applied to an invoice (automatically or by hand).
    Matched,
    /// An incoming payment no invoice was found for with confidence: it
    /// waits for a person.
    Review,
    /// Money the company paid: recorded, never matched to customer invoices.
    Outgoing,
}

impl PaymentState {
    pub const ALL: [PaymentState; 3] = [PaymentState::Matched, PaymentState::Review, PaymentState::Outgoing];

    pub fn as_str(self) -> &'static str {
        match self {
            PaymentState::Matched => "matched",
            PaymentState::Review => "review",
            PaymentState::Outgoing => "outgoing",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// A payment as the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StoredPayment {
    pub payment: Payment,
    /// The statement that brought it first.
    pub statement_id: Uuid,
    pub state: PaymentState,
    /// How it was applied, when `matched` (to the first invoice, when split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched: Option<PaymentMatch>,
    /// The further invoices a payment naming several («по счетам 12, 13») was
    /// split over, in the order named; each share is `paid_total − paid_before`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also_matched: Vec<PaymentMatch>,
    /// Why it waits, when `review`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<ReviewNote>,
    /// Things about this payment a person should know (an invalid payer
    /// INN, an overpayment, flows that could not run).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    pub updated_at: DateTime<Utc>,
}

impl StoredPayment {
    /// Whether it pays its (first) invoice beyond what that still owed:
    /// what a statement's tally counts as overpaid.
    pub fn overpays(&self) -> bool {
        self.matched.as_ref().is_some_and(|m| m.overpaid.is_some())
    }
}

/// How the payments a statement brought stand now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatementTally {
    /// How many are in each state (every state present).
    pub by_state: BTreeMap<PaymentState, u64>,
    /// Matched ones that pay their invoice beyond what it still owed.
    pub overpaid: u64,
}

impl StatementTally {
    /// Of payments in memory, as the store would count them once stored.
    pub fn of_payments<'a>(payments: impl IntoIterator<Item = &'a StoredPayment>) -> Self {
        let mut tally = Self { by_state: PaymentState::ALL.into_iter().map(|s| (s, 0)).collect(), overpaid: 0 };
        for p in payments {
            *tally.by_state.entry(p.state).or_default() += 1;
            tally.overpaid += u64::from(p.overpays());
        }
        tally
    }

    /// From rows of (state, how many, how many of them overpay), as the
    /// stores' `GROUP BY state` gives them.
    pub(super) fn of_rows(rows: impl IntoIterator<Item = (String, i64, i64)>) -> Result<Self, StoreError> {
        let mut tally = Self { by_state: PaymentState::ALL.into_iter().map(|s| (s, 0)).collect(), overpaid: 0 };
        let count = |n: i64| u64::try_from(n).map_err(|_| corrupt(format!("payment count {n}")));
        for (state, n, overpaid) in rows {
            let state = PaymentState::parse(&state).ok_or_else(|| corrupt(format!("payment state `{state}`")))?;
            tally.by_state.insert(state, count(n)?);
            tally.overpaid += count(overpaid)?;
        }
        Ok(tally)
    }
}

/// One imported statement file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatementRecord {
    pub id: Uuid,
    /// SHA-256 of the file's bytes, hex.
    pub digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    /// `upload`, `cli` or `watch`.
    pub source: String,
    /// Format and version as read, e.g. `1CClientBankExchange 1.03`.
    pub format: String,
    pub imported_at: DateTime<Utc>,
    /// What the statement holds (the dry-run summary), as JSON.
    #[schema(value_type = Object)]
    pub summary: serde_json::Value,
    /// Payments this statement brought first.
    pub payments_new: u32,
    /// Payments of this statement that an earlier one had brought already.
    pub payments_known: u32,
}

/// A statement to store, with its file.
#[derive(Debug, Clone, PartialEq)]
pub struct NewStatement {
    pub record: StatementRecord,
    /// The file's bytes, as stored ([`StoredFile::compress`] them).
    pub file: StoredFile,
}

/// An invoice or order that still expects money: what matching reads.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenInvoice {
    pub id: Uuid,
    pub deal_id: Option<Uuid>,
    pub kind: InvoiceKind,
    pub number: String,
    pub date: NaiveDate,
    /// The client's INN as stored (not verified).
    pub client_inn: Option<String>,
    pub total: Money,
    pub paid: Money,
}

impl OpenInvoice {
    pub fn of(invoice: &Invoice) -> Self {
        Self {
            id: invoice.id,
            deal_id: invoice.deal_id,
            kind: invoice.kind,
            number: invoice.number.clone(),
            date: invoice.date,
            client_inn: invoice.client.as_ref().and_then(|c| c.inn.as_ref()).map(|i| i.as_str().to_owned()),
            total: invoice.total.clone(),
            paid: invoice.paid.clone(),
        }
    }
}

/// The invoices written since a generation of the store's invoice counter:
/// what an in-memory copy of the open invoices reads to catch up.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InvoiceChanges {
    /// The counter when read: pass it as `since` next time.
    pub generation: u64,
    /// Invoices written since that expect money, as matching reads them.
    pub open: Vec<OpenInvoice>,
    /// Invoices written since that no longer do (empty for a read from 0,
    /// which lists every open invoice).
    pub closed: Vec<Uuid>,
}

/// Everything one import or one manual match writes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PaymentCommit {
    /// The statement file, for an import.
    pub statement: Option<NewStatement>,
    /// Payments not stored before. One that is stored already makes the
    /// commit stale.
    pub new_payments: Vec<StoredPayment>,
    /// Stored payments to replace, each with the state it must still be in.
    pub updated_payments: Vec<(StoredPayment, PaymentState)>,
    /// The paid amount of every invoice the commit was computed from, as
    /// read; any other amount stored now makes the commit stale.
    pub invoices_read: Vec<(Uuid, Decimal)>,
    /// Invoice totals, deal moves, tasks, outbox commands and trail.
    pub changes: ChangeSet,
    /// Paid amounts and statuses of invoices the payments were applied to,
    /// written beside the stored invoices (every read lays them over the
    /// document) before `changes` (an invoice should not also be in
    /// `changes.invoices`, whose whole document would win).
    pub invoices_paid: Vec<InvoicePaid>,
}

impl PaymentCommit {
    /// What the commit writes last, after the paid amounts.
    pub fn settlement(&self) -> PaymentSettlement<'_> {
        PaymentSettlement { updated_payments: &self.updated_payments, changes: &self.changes }
    }
}

/// What a payment transaction writes when it ends ([`PaymentWrite::finish`]),
/// after the statement, the new payments and the paid amounts: the fields
/// of [`PaymentCommit`] with the same names.
#[derive(Debug, Clone, Copy)]
pub struct PaymentSettlement<'a> {
    pub updated_payments: &'a [(StoredPayment, PaymentState)],
    pub changes: &'a ChangeSet,
}

/// How [`PaymentLedger::begin_payments`] went.
pub enum PaymentsBegun {
    /// The transaction is open (and holds the statement, if one was given).
    Open(Box<dyn PaymentWrite>),
    /// A statement with the same digest is stored (this id); nothing written.
    StatementKnown(Uuid),
}

/// An open payment transaction. Dropping it unfinished rolls it back.
#[async_trait]
pub trait PaymentWrite: Send {
    /// Stores payments not stored before, after those given earlier (their
    /// order is the order they are listed in). Returns one that was stored
    /// already, if any: the transaction is then stale and must be dropped.
    async fn insert_payments(&mut self, payments: &[StoredPayment]) -> Result<Option<Uuid>, StoreError>;

    /// Writes the invoices' new paid amounts (`paid`), if every invoice
    /// read still has the paid amount it was read with (`read`). Returns
    /// the first that does not, if any: the transaction is then stale and
    /// must be dropped. Once, after the last payments are inserted; an
    /// import calls it while its flows run.
    async fn pay_invoices(
        &mut self,
        read: &[(Uuid, Decimal)],
        paid: &[InvoicePaid],
    ) -> Result<Option<Uuid>, StoreError>;

    /// Writes the rest and commits, or nothing (see [`CommitOutcome`]).
    async fn finish(self: Box<Self>, settlement: PaymentSettlement<'_>) -> Result<CommitOutcome, StoreError>;
}

/// What `commit_payments` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    Committed,
    /// A statement with the same digest is stored (this id); nothing written.
    StatementKnown(Uuid),
    /// What the commit was computed from changed; nothing written. Read
    /// again and recompute.
    Stale(String),
}

impl CommitOutcome {
    /// Stale: `invoice` no longer has the paid amount it was read with.
    pub fn invoice_paid_meanwhile(invoice: Uuid) -> Self {
        Self::Stale(format!("invoice {invoice} was paid meanwhile"))
    }
}

#[async_trait]
pub trait PaymentLedger: Send + Sync {
    /// Opens a payment transaction and stores `statement` in it, if given.
    /// SQLite takes its write lock here: until the transaction ends, other
    /// writers wait.
    async fn begin_payments(&self, statement: Option<&NewStatement>) -> Result<PaymentsBegun, StoreError>;

    /// Writes the commit in one transaction, or nothing (see [`CommitOutcome`]).
    async fn commit_payments(&self, commit: &PaymentCommit) -> Result<CommitOutcome, StoreError> {
        let mut write = match self.begin_payments(commit.statement.as_ref()).await? {
            PaymentsBegun::Open(write) => write,
            PaymentsBegun::StatementKnown(id) => return Ok(CommitOutcome::StatementKnown(id)),
        };
        if let Some(stored) = write.insert_payments(&commit.new_payments).await? {
            return Ok(CommitOutcome::Stale(format!("payment {stored} is stored already")));
        }
        if let Some(invoice) = write.pay_invoices(&commit.invoices_read, &commit.invoices_paid).await? {
            return Ok(CommitOutcome::invoice_paid_meanwhile(invoice));
        }
        write.finish(commit.settlement()).await
    }

    /// The statement whose file has this SHA-256 digest, if imported.
    async fn statement_by_digest(&self, digest: &str) -> Result<Option<StatementRecord>, StoreError>;

    async fn get_statement(&self, id: Uuid) -> Result<Option<StatementRecord>, StoreError>;

    /// The file of a stored statement, as stored (see [`StoredFile::original`]).
    async fn statement_file(&self, id: Uuid) -> Result<Option<StoredFile>, StoreError>;

    /// Which of these payment ids are stored.
    async fn known_payments(&self, ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError>;

    async fn get_payment(&self, id: Uuid) -> Result<Option<StoredPayment>, StoreError>;

    /// Payments in `state`, oldest first, at most `limit`.
    async fn payments_in_state(&self, state: PaymentState, limit: u32) -> Result<Vec<StoredPayment>, StoreError>;

    /// Payments a statement brought first, in file order, at most `limit`.
    async fn payments_of_statement(&self, statement: Uuid, limit: u32) -> Result<Vec<StoredPayment>, StoreError>;

    /// How the payments a statement brought first stand, counted from
    /// columns (no record is read): the report of a statement imported again.
    async fn statement_tally(&self, statement: Uuid) -> Result<StatementTally, StoreError>;

    /// How many payments are in each state (every state present).
    async fn payment_counts(&self) -> Result<BTreeMap<PaymentState, u64>, StoreError>;

    /// Invoices and orders that are `open` or `partially_paid`, by id.
    async fn open_invoices(&self) -> Result<Vec<OpenInvoice>, StoreError>;

    /// The open invoices with one of these keys, by id, each once: what a
    /// statement's payments can be matched to, read through indexes.
    async fn open_invoices_by_keys(&self, keys: &InvoiceKeys) -> Result<Vec<OpenInvoice>, StoreError>;

    /// The invoices written after generation `since` of the store's invoice
    /// counter (0: every open invoice), or `None` when this store does not
    /// number its invoice writes; then open invoices are looked up by keys.
    async fn invoice_changes(&self, since: u64) -> Result<Option<InvoiceChanges>, StoreError>;

    /// The invoices with these ids, by id; unknown ids are skipped.
    async fn invoices_by_ids(&self, ids: &[Uuid]) -> Result<Vec<Invoice>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::doc::tag;

    /// The queries filter on these literals.
    #[test]
    fn state_names_are_what_the_columns_hold() {
        for state in PaymentState::ALL {
            assert_eq!(tag(&state).unwrap(), state.as_str());
            assert_eq!(PaymentState::parse(state.as_str()), Some(state));
        }
        assert_eq!(tag(&crate::model::InvoiceStatus::PartiallyPaid).unwrap(), "partially_paid");
    }
}
