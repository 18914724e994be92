//! Group commit for settlements: the batches that partition workers finish
//! at about the same time are written in one transaction.
//!
//! On SQLite every write waits for the one writer and its fsync; eight
//! partitions settling one by one would pay eight of them where one does.
//! Workers hand their settlements to `SettlementCommitter::settle` and wait;
//! a single task takes everything queued, writes it with one
//! `delivery_settle_all`, and answers each. Partitions never share a lane,
//! so writing their batches together changes no order. If the shared write
//! fails, each batch is tried on its own, so one bad batch fails only its
//! own worker.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::store::{Settlement, Store, StoreError};

struct Request {
    settlements: Vec<Settlement>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// The workers' handle on the group commit.
#[derive(Clone)]
pub(super) struct SettlementCommitter {
    queue: mpsc::Sender<Request>,
}

impl SettlementCommitter {
    /// Starts the committing task; it ends when every handle is dropped.
    pub(super) fn start(store: Arc<dyn Store>) -> Self {
        let (queue, requests) = mpsc::channel(64);
        tokio::spawn(commit_loop(store, requests));
        Self { queue }
    }

    /// Writes `settlements` (in their order) with whatever else is queued.
    pub(super) async fn settle(&self, settlements: Vec<Settlement>) -> Result<(), StoreError> {
        let (done, answer) = oneshot::channel();
        let closed = || StoreError::Unavailable("the settlement committer stopped".into());
        self.queue.send(Request { settlements, done }).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

async fn commit_loop(store: Arc<dyn Store>, mut requests: mpsc::Receiver<Request>) {
    while let Some(first) = requests.recv().await {
        let mut group = vec![first];
        while let Ok(more) = requests.try_recv() {
            group.push(more);
        }
        if group.len() == 1 {
            let request = group.pop().expect("one request");
            let result = store.delivery_settle_all(&request.settlements).await;
            let _ = request.done.send(result);
            continue;
        }
        let all: Vec<Settlement> = group.iter().flat_map(|r| r.settlements.iter().cloned()).collect();
        match store.delivery_settle_all(&all).await {
            Ok(()) => group.into_iter().for_each(|r| drop(r.done.send(Ok(())))),
            Err(e) => {
                tracing::warn!(error = %e, batches = group.len(), "A grouped settlement failed; settling its batches one by one.");
                for request in group {
                    let result = store.delivery_settle_all(&request.settlements).await;
                    let _ = request.done.send(result);
                }
            }
        }
    }
}
