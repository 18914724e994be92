//! Group commit of raw events.
//!
//! Callers send `(event, reply)` pairs into a bounded channel. Each writer
//! task takes the first waiting event, drains whatever else is already
//! queued (up to `max_batch`), commits the lot with one `append_events`, and
//! answers every caller. Under light load a batch is one event and latency
//! is one commit; under heavy load batches grow by themselves, so throughput
//! rises without a timer that would add latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::{Mutex, Notify, mpsc, oneshot};
use tokio::task::JoinSet;

use crate::store::{Appended, NewRawEvent, Store, StoreError};

/// Tuning of the group committer.
#[derive(Debug, Clone, Copy)]
pub struct InboxOptions {
    /// Most events committed in one transaction.
    pub max_batch: usize,
    /// Concurrent writer tasks. SQLite has one writer anyway, so 1 suits it;
    /// PostgreSQL overlaps round trips with 2–4.
    pub writers: usize,
    /// Events that may wait for a writer before callers are told the store
    /// is overloaded.
    pub queue_capacity: usize,
}

impl Default for InboxOptions {
    fn default() -> Self {
        Self { max_batch: 512, writers: 1, queue_capacity: 16_384 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    /// The store did not commit: the event is not durable.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The queue in front of the writers is full.
    #[error("inbox overloaded: too many events waiting to be committed")]
    Overloaded,
    /// The hub is shutting down and no longer accepts events.
    #[error("inbox closed")]
    Closed,
}

type Reply = oneshot::Sender<Result<Appended, InboxError>>;

/// Handle for appending events; cheap to clone.
#[derive(Clone)]
pub struct GroupCommitter {
    queue: mpsc::Sender<(NewRawEvent, Reply)>,
    committed: Arc<Notify>,
    load: InboxLoad,
}

/// How busy the inbox writers are, for work that should give way to
/// acceptance (the event processor). Holding one does not keep the inbox
/// open, unlike a `GroupCommitter` clone.
#[derive(Clone, Debug, Default)]
pub struct InboxLoad {
    queued: Arc<AtomicUsize>,
}

impl InboxLoad {
    /// Events accepted into the queue that no writer has taken yet. More
    /// than zero means every writer is busy committing and requests wait:
    /// the store's write path is the bottleneck right now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}

impl GroupCommitter {
    /// Starts the writer tasks. They finish once every `GroupCommitter`
    /// clone is dropped and the queue is drained, so awaiting the returned
    /// set after the server stopped guarantees no accepted event is left
    /// uncommitted.
    pub fn start(store: Arc<dyn Store>, options: InboxOptions) -> (Self, JoinSet<()>) {
        let (queue, rx) = mpsc::channel(options.queue_capacity.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let committed = Arc::new(Notify::new());
        let load = InboxLoad::default();
        let mut writers = JoinSet::new();
        for _ in 0..options.writers.max(1) {
            let writer = WriteLoop {
                store: store.clone(),
                rx: rx.clone(),
                max_batch: options.max_batch.max(1),
                committed: committed.clone(),
                load: load.clone(),
            };
            writers.spawn(writer.run());
        }
        (Self { queue, committed, load }, writers)
    }

    /// A probe of how busy the writers are.
    pub fn load(&self) -> InboxLoad {
        self.load.clone()
    }

    /// Notified after every successful commit, so the event processor can
    /// start on new events at once instead of polling.
    pub fn committed(&self) -> Arc<Notify> {
        self.committed.clone()
    }

    /// Appends one event and waits until it is committed.
    pub async fn append(&self, event: NewRawEvent) -> Result<Appended, InboxError> {
        let (reply, answer) = oneshot::channel();
        // Counted before it is sent so a writer never takes more than was counted.
        self.load.queued.fetch_add(1, Ordering::Relaxed);
        self.queue.try_send((event, reply)).map_err(|e| {
            self.load.queued.fetch_sub(1, Ordering::Relaxed);
            match e {
                mpsc::error::TrySendError::Full(_) => InboxError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => InboxError::Closed,
            }
        })?;
        answer.await.map_err(|_| InboxError::Closed)?
    }
}

/// One writer task: collect what is waiting, commit it, answer, repeat.
struct WriteLoop {
    store: Arc<dyn Store>,
    rx: Arc<Mutex<mpsc::Receiver<(NewRawEvent, Reply)>>>,
    max_batch: usize,
    committed: Arc<Notify>,
    load: InboxLoad,
}

impl WriteLoop {
    async fn run(self) {
        let mut batch = Vec::with_capacity(self.max_batch);
        loop {
            // Hold the receiver only while collecting, so another writer can
            // collect the next batch while this one commits.
            {
                let mut rx = self.rx.lock().await;
                if rx.recv_many(&mut batch, self.max_batch).await == 0 {
                    return;
                }
            }
            self.load.queued.fetch_sub(batch.len(), Ordering::Relaxed);
            if commit(&*self.store, &mut batch).await {
                self.committed.notify_one();
            }
        }
    }
}

/// Commits one batch and answers its callers; true when it committed.
async fn commit(store: &dyn Store, batch: &mut Vec<(NewRawEvent, Reply)>) -> bool {
    let (events, replies): (Vec<NewRawEvent>, Vec<Reply>) = batch.drain(..).unzip();
    let started = Instant::now();
    let outcome = store.append_events(&events).await;
    metrics::histogram!("dealbridge_inbox_commit_seconds").record(started.elapsed().as_secs_f64());
    metrics::histogram!("dealbridge_inbox_batch_size").record(events.len() as f64);
    match outcome {
        Ok(results) => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(Ok(result));
            }
            true
        }
        Err(e) => {
            metrics::counter!("dealbridge_store_errors_total", "operation" => "append_events").increment(1);
            // The writer runs outside the requests' spans: name them, so each
            // request's log lines lead to the reason it got a 503.
            let request_ids = request_ids(&events);
            tracing::error!(error = %e, events = events.len(), request_ids = %request_ids, "Inbox commit failed; callers are told the events are not stored.");
            let message = e.to_string();
            for reply in replies {
                let _ = reply.send(Err(InboxError::Store(StoreError::Unavailable(message.clone()))));
            }
            false
        }
    }
}

/// The `x-request-id`s the events were received with, comma-separated.
fn request_ids(events: &[NewRawEvent]) -> String {
    let ids = events.iter().filter_map(|e| e.headers.iter().find(|(name, _)| name == "x-request-id"));
    ids.map(|(_, id)| id.as_str()).collect::<Vec<_>>().join(",")
}
