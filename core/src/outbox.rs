//! The outbox relay: moves commands the engine committed with the state
//! onto the bus.
//!
//! A command row counts as published only after the bus confirmed it
//! (embedded: committed; RabbitMQ: publisher confirm). The relay marks rows
//! published after the confirm, so a crash between the two publishes them
//! again on restart — at least once — and every later stage drops the
//! duplicate by its idempotency key. Rows go out in commit order, so one
//! deal's commands reach its partition in the order the engine made them.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::bus::{Bus, BusError, BusMessage};
use crate::delivery::Share;
use crate::flow::Command;
use crate::store::{Store, StoreError};

/// Why a relay pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bus(#[from] BusError),
}

pub struct OutboxRelay {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    /// Rows per publish.
    pub batch: u32,
    /// Woken when the engine committed commands; the relay also polls.
    pub wake: Arc<Notify>,
    pub poll_interval: Duration,
    /// Only the leading replica relays (see `delivery::sharing`): one
    /// relay per store publishes each command once.
    pub share: watch::Receiver<Share>,
}

/// The bus message that carries a command: keyed by its deal (or its
/// target when it has none), so one deal's commands share a partition.
pub fn message_of(command: &Command) -> Result<BusMessage, serde_json::Error> {
    let key = command.deal.map_or_else(|| format!("{}:{}", command.connector, command.id), |d| d.to_string());
    Ok(BusMessage {
        id: command.id,
        key,
        idempotency_key: command.idempotency_key.clone(),
        payload: serde_json::to_vec(command)?,
    })
}

impl OutboxRelay {
    /// Publishes every pending row once; returns how many went out.
    pub async fn relay_pending(&self) -> Result<usize, RelayError> {
        let mut total = 0;
        loop {
            // Published rows leave the pending set, so each page starts at the head.
            let rows = self.store.pending_commands(0, self.batch).await?;
            if rows.is_empty() {
                return Ok(total);
            }
            let mut messages = Vec::with_capacity(rows.len());
            for (_, command) in &rows {
                messages.push(
                    message_of(command).map_err(|e| StoreError::Corrupt(format!("command {}: {e}", command.id)))?,
                );
            }
            self.bus.publish(&messages).await?;
            let ids: Vec<_> = rows.iter().map(|(_, c)| c.id).collect();
            self.store.mark_commands_published(&ids).await?;
            metrics::counter!("dealbridge_outbox_published_total").increment(ids.len() as u64);
            total += ids.len();
        }
    }

    /// Relays until cancelled, backing off while the bus or store is down.
    pub async fn run(self, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(200);
        while !stop.is_cancelled() {
            let leads = self.share.borrow().leads();
            let outcome = if leads { self.relay_pending().await } else { Ok(0) };
            let wait = match outcome {
                Ok(_) => {
                    backoff = Duration::from_millis(200);
                    self.poll_interval
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "Outbox relay paused.");
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    backoff
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Commands the engine committed reach the embedded bus in commit
    //! order, each marked published once.

    use uuid::Uuid;

    use super::*;
    use crate::bus::{EmbeddedBus, partition_of};
    use crate::flow::CommandOp;
    use crate::store::{ChangeSet, SqliteStore};

    fn command(deal: Uuid, n: u32) -> Command {
        Command {
            id: Uuid::now_v7(),
            idempotency_key: format!("cause/{n}"),
            connector: "bitrix24".into(),
            system: "bitrix24".into(),
            deal: Some(deal),
            cause_event: Uuid::now_v7(),
            flow: "f".into(),
            op: CommandOp::UpdateDeal {
                external_id: "1".into(),
                stage: Some(format!("S{n}")),
                fields: Default::default(),
            },
        }
    }

    #[tokio::test]
    async fn committed_commands_are_published_in_order_once() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&format!("sqlite://{}/hub.db", dir.path().display()), 2).await.unwrap());
        store.migrate().await.unwrap();
        let deal = Uuid::now_v7();
        let commands: Vec<Command> = (0..25).map(|n| command(deal, n)).collect();
        store.apply(&ChangeSet { commands: commands.clone(), ..Default::default() }).await.unwrap();

        let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::new(store.clone(), 4));
        let relay = OutboxRelay {
            store: store.clone(),
            bus: bus.clone(),
            batch: 10,
            wake: Arc::new(Notify::new()),
            poll_interval: Duration::from_millis(50),
            share: watch::channel(Share::ALONE).1,
        };
        assert_eq!(relay.relay_pending().await.unwrap(), 25);
        assert_eq!(relay.relay_pending().await.unwrap(), 0, "published rows are not sent again");

        let mut consumer = bus.consume(partition_of(&deal.to_string(), 4)).await.unwrap();
        let mut seen = Vec::new();
        while let Some(delivery) = consumer.next(Duration::from_millis(200)).await.unwrap() {
            let got: Command = serde_json::from_slice(&delivery.message.payload).unwrap();
            assert_eq!(delivery.message.idempotency_key, got.idempotency_key);
            seen.push(got.id);
            consumer.ack(&delivery).await.unwrap();
        }
        assert_eq!(seen, commands.iter().map(|c| c.id).collect::<Vec<_>>(), "commit order kept");
    }
}
