//! Storing an import's payments while the rest are still being matched.
//!
//! An import opens its transaction ([`PaymentLedger::begin_payments`]) when
//! matching starts and hands each chunk of decided payments to a
//! `PaymentWriter`: a task of its own that serialises the chunk and has the
//! store insert it, while the import matches the next chunk and runs the
//! flows. For a statement of 100,000 payments that moves most of the
//! store's work out from behind matching (see docs/benchmarks.md).
//!
//! The invoices' paid amounts are written once, at the end: per chunk,
//! SQLite took twice as long over them (each chunk's invoices lie all over
//! the index), and PostgreSQL must lock them in one pass.
//!
//! [`PaymentLedger::begin_payments`]: dealbridge_core::store::PaymentLedger::begin_payments

use dealbridge_core::store::{PaymentWrite, StoreError, StoredPayment};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// The task writing an import's payments into its open transaction.
/// Dropped before [`Self::finish`] (the import failed or was cancelled),
/// it stops the task, which rolls the transaction back.
pub struct PaymentWriter {
    chunks: mpsc::UnboundedSender<Vec<StoredPayment>>,
    task: Option<JoinHandle<Result<Inserted, StoreError>>>,
}

/// What the writer did, once every chunk was handed over.
pub struct Inserted {
    /// The transaction, to finish (or drop, which rolls it back).
    pub write: Box<dyn PaymentWrite>,
    /// The payments inserted, in chunks as handed over.
    pub chunks: Vec<Vec<StoredPayment>>,
    /// A payment some other statement stored already: the import is stale
    /// (later chunks were not inserted).
    pub stored_already: Option<Uuid>,
}

impl PaymentWriter {
    /// Starts the task on `write`.
    pub fn start(mut write: Box<dyn PaymentWrite>) -> Self {
        let (chunks, mut handed) = mpsc::unbounded_channel::<Vec<StoredPayment>>();
        let task = tokio::spawn(async move {
            let mut inserted = Vec::new();
            while let Some(chunk) = handed.recv().await {
                if let Some(id) = write.insert_payments(&chunk).await? {
                    return Ok(Inserted { write, chunks: inserted, stored_already: Some(id) });
                }
                inserted.push(chunk);
            }
            Ok(Inserted { write, chunks: inserted, stored_already: None })
        });
        Self { chunks, task: Some(task) }
    }

    /// Hands the next chunk over. Returns false once the writer has
    /// stopped (a payment stored already, or a store error): [`Self::finish`]
    /// then says which, and the import stops handing chunks over.
    pub fn hand_over(&self, chunk: Vec<StoredPayment>) -> bool {
        self.chunks.send(chunk).is_ok()
    }

    /// Waits for every chunk handed over to be inserted.
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

impl Drop for PaymentWriter {
    /// Without `finish`, what is still queued would only be inserted to be
    /// rolled back, while SQLite's write lock stays held: stop at once.
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
