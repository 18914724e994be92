//! Splitting the bus partitions between hub replicas.
//!
//! Every replica keeps a heartbeat row in the shared store
//! (`ReplicaRoll`); the live replicas, sorted by id, are numbered 0..n, and
//! replica `i` consumes the partitions `p` with `p % n == i`. Replica 0 also
//! runs the outbox relay, so a command is published once, not once per
//! replica. When a replica joins, leaves or stops renewing its heartbeat,
//! the others see a new roll at their next heartbeat and hand over or pick
//! up partitions.
//!
//! The share only balances the work; it is not what keeps a partition to
//! one consumer. During a handover two replicas may both subscribe to a
//! partition for a moment, and the bus's single-active-consumer rule
//! (RabbitMQ's, or the embedded bus's lease) still lets only one of them
//! take messages — the one leaving finishes its batch and lets go, and its
//! unacked deliveries come back to the other in order.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// This replica's place among the live ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    pub index: usize,
    pub replicas: usize,
}

impl Share {
    /// A replica on its own: every partition, and the relay.
    pub const ALONE: Share = Share { index: 0, replicas: 1 };

    pub fn owns(&self, partition: u32) -> bool {
        partition as usize % self.replicas.max(1) == self.index
    }

    /// Runs the outbox relay.
    pub fn leads(&self) -> bool {
        self.index == 0
    }
}

/// Keeps this replica on the roll and publishes its share.
pub struct ReplicaRoster {
    pub store: Arc<dyn Store>,
    pub replica: String,
    /// A replica whose heartbeat is older than this is taken for gone.
    pub ttl: Duration,
    /// How often the heartbeat is renewed (well under `ttl`).
    pub every: Duration,
}

impl ReplicaRoster {
    /// Renews the heartbeat until `stop`, sending every change of the share;
    /// then leaves the roll so the others take over at once.
    pub async fn run(self, share: watch::Sender<Share>, stop: CancellationToken) {
        loop {
            let now = Utc::now();
            let until = now + chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::MAX);
            match self.store.replica_heartbeat(&self.replica, until, now).await {
                Ok(live) => {
                    let next = Share {
                        index: live.iter().position(|r| *r == self.replica).unwrap_or(0),
                        replicas: live.len().max(1),
                    };
                    share.send_if_modified(|current| {
                        if *current == next {
                            return false;
                        }
                        tracing::info!(replica = %self.replica, index = next.index, replicas = next.replicas, "Replica share changed.");
                        *current = next;
                        true
                    });
                }
                // Keep the last share: the bus still guards each partition.
                Err(e) => tracing::warn!(error = %e, "Cannot renew this replica's heartbeat; keeping its share."),
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                () = tokio::time::sleep(self.every) => {}
            }
        }
        if let Err(e) = self.store.replica_leave(&self.replica).await {
            tracing::warn!(error = %e, "Cannot leave the replica roll; the heartbeat runs out by itself.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Share;

    #[test]
    fn replicas_split_the_partitions_without_overlap_or_gap() {
        for replicas in 1..5 {
            for partition in 0..16 {
                let owners = (0..replicas).filter(|&index| Share { index, replicas }.owns(partition)).count();
                assert_eq!(owners, 1, "partition {partition} among {replicas}");
            }
        }
        assert!(Share::ALONE.owns(7) && Share::ALONE.leads());
    }
}
