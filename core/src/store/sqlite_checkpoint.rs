//! Checkpoints of the SQLite write-ahead log, off the writers' path.
//!
//! By default SQLite checkpoints inside the commit that makes the WAL pass
//! 1,000 pages: that commit then also copies every page of the WAL into
//! the database file and syncs it. For a statement import that writes
//! hundreds of megabytes in one transaction this doubles the commit. The
//! store's connections therefore run with `wal_autocheckpoint = 0`, and
//! this task checkpoints (`PASSIVE`: it never blocks readers or the writer)
//! on a connection of its own, shortly after the WAL grew. Durability does
//! not change: a commit is durable once its WAL frames are synced
//! (`synchronous = FULL`); the checkpoint only moves them into the main
//! file. When the last connection closes, SQLite checkpoints anyway.

use std::time::Duration;

use sqlx::SqlitePool;
use tokio::sync::oneshot;

/// How often the task looks at the WAL.
const PERIOD: Duration = Duration::from_millis(500);

/// Stops the checkpoint task when dropped (with the store).
pub(super) struct Checkpointer {
    _stop: oneshot::Sender<()>,
}

impl Checkpointer {
    /// Starts checkpointing through `pool` (one connection) every `PERIOD`.
    pub(super) fn start(pool: SqlitePool) -> Self {
        let (stop, mut stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(PERIOD);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = ticks.tick() => {
                        // A failed checkpoint is retried on the next tick; the
                        // WAL only grows meanwhile.
                        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
                            tracing::debug!(error = %e, "WAL checkpoint failed; retrying");
                        }
                    }
                }
            }
            pool.close().await;
        });
        Self { _stop: stop }
    }
}
