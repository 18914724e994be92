//! Storing an import's payments while the rest are still being matched.
//!
//! An import opens its transaction ([`PaymentLedger::begin_payments`]) when
//! matching starts and hands each chunk of decided payments to a
//! `PaymentWriter`: a task of its own that serialises the chunk and has the
//! store insert it, while the import matches the next chunk and runs the
//! flows. For a statement of 100,000 payments that moves most of the
//! store's work out from behind matching (see docs/benchmarks.md).
//!
//! The invoices' paid amounts are written once, after the last chunk and
//! while the import runs the flows: per chunk, SQLite took twice as long
//! over them (each chunk's invoices lie all over the index), and
//! PostgreSQL must lock them in one pass.
//!
//! [`PaymentLedger::begin_payments`]: dealbridge_core::store::PaymentLedger::begin_payments

use dealbridge_core::store::{CommitOutcome, PaymentWrite, StoreError, StoredPayment};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::apply::PaidAmounts;

/// The task writing an import's payments into its open transaction.
/// Dropped before [`Self::finish`] (the import failed or was cancelled),
/// it stops the task, which rolls the transaction back.
pub struct PaymentWriter {
    work: mpsc::UnboundedSender<Work>,
    task: Option<JoinHandle<Result<Inserted, StoreError>>>,
}

/// What the writer is handed, in order.
enum Work {
    Payments(Vec<StoredPayment>),
    /// Handed last: nothing after it is written.
    PaidAmounts(PaidAmounts),
}

/// What the writer did, once everything was handed over.
pub struct Inserted {
    /// The transaction, to finish (or drop, which rolls it back).
    pub write: Box<dyn PaymentWrite>,
    /// The payments inserted, in chunks as handed over.
    pub chunks: Vec<Vec<StoredPayment>>,
    /// Why the import is stale, if it is (the transaction must be dropped).
    pub stale: Option<Stale>,
}

/// What the writer found changed by someone else since the import read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stale {
    /// A payment another statement stored already (later chunks were not
    /// inserted).
    PaymentStored(Uuid),
    /// An invoice whose paid amount is no longer the one read.
    InvoicePaid(Uuid),
}

impl Stale {
    /// The import's outcome: nothing written, to be read and matched again.
    pub fn outcome(self) -> CommitOutcome {
        match self {
            Stale::PaymentStored(id) => CommitOutcome::Stale(format!("payment {id} is stored already")),
            Stale::InvoicePaid(id) => CommitOutcome::invoice_paid_meanwhile(id),
        }
    }
}

impl PaymentWriter {
    /// Starts the task on `write`.
    pub fn start(write: Box<dyn PaymentWrite>) -> Self {
        let (work, handed) = mpsc::unbounded_channel::<Work>();
        let task = tokio::spawn(write_all(write, handed));
        Self { work, task: Some(task) }
    }

    /// Hands the next chunk over. Returns false once the writer has
    /// stopped (the import is stale, or a store error): [`Self::finish`]
    /// then says which, and the import stops handing chunks over.
    pub fn hand_over(&self, chunk: Vec<StoredPayment>) -> bool {
        self.work.send(Work::Payments(chunk)).is_ok()
    }

    /// Hands the invoices' paid amounts over, once every chunk is.
    pub fn pay_invoices(&self, paid: PaidAmounts) {
        // A writer that stopped says why in `finish`.
        let _ = self.work.send(Work::PaidAmounts(paid));
    }

    /// Waits for everything handed over to be written.
    pub async fn finish(mut self) -> Result<Inserted, StoreError> {
        let task = self.task.take().expect("only `finish` takes the task, and only once");
        // Closes the channel: the task ends once what is queued is in.
        drop(self);
        match task.await {
            Ok(inserted) => inserted,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(StoreError::Database(format!("the payment writer stopped: {e}"))),
        }
    }
}

/// The task: writes what it is handed until the channel closes or the
/// import turns out stale.
async fn write_all(
    mut write: Box<dyn PaymentWrite>,
    mut handed: mpsc::UnboundedReceiver<Work>,
) -> Result<Inserted, StoreError> {
    let mut chunks = Vec::new();
    let mut stale = None;
    while let Some(work) = handed.recv().await {
        match work {
            Work::Payments(chunk) => match write.insert_payments(&chunk).await? {
                Some(id) => stale = Some(Stale::PaymentStored(id)),
                None => chunks.push(chunk),
            },
            Work::PaidAmounts(paid) => {
                stale = write.pay_invoices(&paid.read, &paid.paid).await?.map(Stale::InvoicePaid);
            }
        }
        if stale.is_some() {
            break;
        }
    }
    Ok(Inserted { write, chunks, stale })
}

impl Drop for PaymentWriter {
    /// Without `finish`, what is still queued would only be inserted to be
    /// rolled back, while SQLite's write lock stays held: stop at once.
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
