//! The RabbitMQ bus, through `lapin`.
//!
//! lapin 4 runs on the runtime its `tokio` feature selects (its default
//! runtime feature) through the `async-rs` abstraction, so it lives on the
//! hub's tokio runtime with no second executor; the default `rustls`
//! feature uses aws-lc-rs like sqlx here.
//!
//! Publishing: persistent messages (delivery mode 2) to `<p>.commands` with
//! the partition as routing key, `mandatory` set, on a channel in confirm
//! mode; `publish` returns only after every confirm, and a nack or a
//! returned (unroutable) message is an error. Consuming: one channel per
//! partition consumer with manual acks on a single-active-consumer quorum
//! queue; a dropped consumer closes its channel, so the broker requeues its
//! unacked deliveries (in order) and hands the partition to the next
//! waiting consumer. The prefetch (`with_prefetch`, default 128) lets the
//! broker stream the next batch while the consumer works on this one; the
//! consumer still hands out one batch at a time and acks a whole batch with
//! one `multiple` ack.
//!
//! Reconnecting: when the broker restarts or the network drops, the
//! connection closes; the next `publish`, `consume` or `ping` opens a new
//! one and declares (and checks) the topology again. Consumers of the old
//! connection fail, and their owners consume again; what they had not
//! acked is redelivered by the broker.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, PublisherConfirm};
use tokio::sync::{Mutex, RwLock};
use uuid::Uuid;

use super::topology::RETRY_HEADER;
use super::{Bus, BusError, BusMessage, Delivery, PartitionConsumer, Topology, partition_of};

const KEY_HEADER: &str = "dealbridge-key";
const IDEMPOTENCY_HEADER: &str = "dealbridge-idempotency-key";

/// Where the broker is and how the topology is named.
#[derive(Debug, Clone)]
pub struct RabbitConfig {
    /// `amqp://user:pass@host:5672/%2f`
    pub url: String,
    /// Prefix of every exchange and queue name, e.g. `dealbridge`.
    pub prefix: String,
    pub partitions: u32,
    /// Delay buckets for `retry_later`; empty = the default set.
    pub retry_buckets: Vec<Duration>,
}

/// RabbitMQ-backed `Bus`.
pub struct RabbitBus {
    url: String,
    conn: RwLock<Arc<Connection>>,
    topology: Arc<Topology>,
    publisher: Mutex<Option<Channel>>,
    prefetch: u16,
}

/// Unacked deliveries the broker may push to one partition consumer.
const DEFAULT_PREFETCH: u16 = 128;

impl RabbitBus {
    /// Connects, declares the topology and runs the start-up check; refuses
    /// (with the reason) a topology that could lose messages.
    pub async fn connect(config: &RabbitConfig) -> Result<Self, BusError> {
        let topology = Topology::new(&config.prefix, config.partitions, config.retry_buckets.clone());
        Topology::check(&topology.queues())?;
        let conn = Self::open(&config.url, &topology).await?;
        Ok(Self {
            url: config.url.clone(),
            conn: RwLock::new(Arc::new(conn)),
            topology: Arc::new(topology),
            publisher: Mutex::new(None),
            prefetch: DEFAULT_PREFETCH,
        })
    }

    /// How many unacked deliveries the broker pushes to a partition
    /// consumer (at least 1): twice the dispatcher's batch keeps the next
    /// batch on its way while one is worked on.
    pub fn with_prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch.max(1);
        self
    }

    /// A new connection with the topology declared and checked.
    async fn open(url: &str, topology: &Topology) -> Result<Connection, BusError> {
        let conn = Connection::connect(url, ConnectionProperties::default())
            .await
            .map_err(|e| BusError::Unavailable(format!("cannot connect to RabbitMQ: {e}")))?;
        topology.declare(&conn).await?;
        topology.verify(&conn).await?;
        Ok(conn)
    }

    /// The open connection, reconnecting first if the last one closed.
    async fn connection(&self) -> Result<Arc<Connection>, BusError> {
        {
            let conn = self.conn.read().await;
            if conn.status().connected() {
                return Ok(conn.clone());
            }
        }
        let mut conn = self.conn.write().await;
        if !conn.status().connected() {
            tracing::warn!("RabbitMQ connection lost; reconnecting.");
            *conn = Arc::new(Self::open(&self.url, &self.topology).await?);
            tracing::info!("RabbitMQ connection re-established.");
        }
        Ok(conn.clone())
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Takes up to `limit` messages out of the dead-letter queue (acked:
    /// the caller owns them now), oldest first.
    pub async fn take_dead_letters(&self, limit: usize) -> Result<Vec<BusMessage>, BusError> {
        let ch = self.connection().await?.create_channel().await?;
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(got) =
                ch.basic_get(self.topology.dead_queue().as_str().into(), BasicGetOptions::default()).await?
            else {
                break;
            };
            out.push(message_of(&got.delivery)?);
            got.delivery.ack(BasicAckOptions::default()).await?;
        }
        let _ = ch.close(200, "OK".into()).await;
        Ok(out)
    }

    /// Deletes this bus's queues and exchanges (tests, teardown).
    pub async fn delete_topology(&self) -> Result<(), BusError> {
        let ch = self.connection().await?.create_channel().await?;
        self.topology.delete(&ch).await?;
        let _ = ch.close(200, "OK".into()).await;
        Ok(())
    }

    /// Closes the connection.
    pub async fn close(&self) {
        let _ = self.conn.read().await.close(200, "OK".into()).await;
    }

    async fn confirm_channel(conn: &Connection) -> Result<Channel, BusError> {
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| BusError::Topology(format!("publisher confirms cannot be enabled: {e}")))?;
        Ok(ch)
    }
}

fn properties(m: &BusMessage, extra: Option<(&str, String)>) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(KEY_HEADER.into(), AMQPValue::LongString(m.key.as_str().into()));
    headers.insert(IDEMPOTENCY_HEADER.into(), AMQPValue::LongString(m.idempotency_key.as_str().into()));
    if let Some((k, v)) = extra {
        headers.insert(k.into(), AMQPValue::LongString(v.into()));
    }
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_message_id(m.id.to_string().into())
        .with_content_type("application/json".into())
        .with_headers(headers)
}

/// Waits for a publisher confirm: anything but a plain ack is an error.
async fn confirmed(confirm: PublisherConfirm, id: Uuid) -> Result<(), BusError> {
    match confirm.await? {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(returned)) => Err(BusError::NotAccepted(format!(
            "message {id} could not be routed ({} {})",
            returned.reply_code, returned.reply_text
        ))),
        Confirmation::Nack(_) => Err(BusError::NotAccepted(format!("message {id} was nacked by the broker"))),
        Confirmation::NotRequested => Err(BusError::Topology("publisher confirms are off on the channel".into())),
    }
}

fn header(d: &lapin::message::Delivery, name: &str) -> Result<String, BusError> {
    let value = d.properties.headers().as_ref().and_then(|h| h.inner().get(name).cloned());
    match value {
        Some(AMQPValue::LongString(s)) => Ok(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        Some(AMQPValue::ShortString(s)) => Ok(s.as_str().to_owned()),
        _ => Err(BusError::NotAccepted(format!("delivery without the `{name}` header"))),
    }
}

fn message_of(d: &lapin::message::Delivery) -> Result<BusMessage, BusError> {
    let id = d
        .properties
        .message_id()
        .as_ref()
        .and_then(|s| Uuid::parse_str(s.as_str()).ok())
        .ok_or_else(|| BusError::NotAccepted("delivery without a UUID message id".into()))?;
    Ok(BusMessage {
        id,
        key: header(d, KEY_HEADER)?,
        idempotency_key: header(d, IDEMPOTENCY_HEADER)?,
        payload: d.data.clone(),
    })
}

#[async_trait]
impl Bus for RabbitBus {
    fn partitions(&self) -> u32 {
        self.topology.partitions()
    }

    async fn publish(&self, messages: &[BusMessage]) -> Result<(), BusError> {
        let mut slot = self.publisher.lock().await;
        let ch = match slot.as_ref() {
            Some(ch) if ch.status().connected() => ch.clone(),
            _ => {
                let ch = Self::confirm_channel(&*self.connection().await?).await?;
                *slot = Some(ch.clone());
                ch
            }
        };
        let exchange = self.topology.commands_exchange();
        let mandatory = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
        let mut pending = Vec::with_capacity(messages.len());
        for m in messages {
            let partition = partition_of(&m.key, self.topology.partitions()).to_string();
            let confirm = ch
                .basic_publish(
                    exchange.as_str().into(),
                    partition.as_str().into(),
                    mandatory,
                    &m.payload,
                    properties(m, None),
                )
                .await?;
            pending.push((confirm, m.id));
        }
        for (confirm, id) in pending {
            confirmed(confirm, id).await?;
        }
        Ok(())
    }

    async fn consume(&self, partition: u32) -> Result<Box<dyn PartitionConsumer>, BusError> {
        if partition >= self.topology.partitions() {
            return Err(BusError::Invalid(format!("partition {partition} of {}", self.topology.partitions())));
        }
        let channel = Self::confirm_channel(&*self.connection().await?).await?;
        channel.basic_qos(self.prefetch, BasicQosOptions::default()).await?;
        let tag = format!("dealbridge-{}", Uuid::new_v4().simple());
        let consumer = channel
            .basic_consume(
                self.topology.partition_queue(partition).as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Box::new(RabbitConsumer {
            channel,
            consumer: Some(consumer),
            partition,
            topology: self.topology.clone(),
            unsettled: BTreeSet::new(),
        }))
    }

    async fn ping(&self) -> Result<(), BusError> {
        self.connection().await.map(|_| ())
    }

    async fn depth(&self) -> Result<u64, BusError> {
        let ch = self.connection().await?.create_channel().await?;
        let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        let mut total = 0u64;
        for partition in 0..self.topology.partitions() {
            let name = self.topology.partition_queue(partition);
            let queue = ch.queue_declare(name.as_str().into(), passive, FieldTable::default()).await?;
            total += u64::from(queue.message_count());
        }
        let _ = ch.close(200, "OK".into()).await;
        Ok(total)
    }
}

/// Owns its channel: dropping it closes the channel, which requeues an
/// unacked delivery and hands the partition to the next waiting consumer.
struct RabbitConsumer {
    channel: Channel,
    /// Always `Some` until dropped (see `Drop`).
    consumer: Option<lapin::Consumer>,
    partition: u32,
    topology: Arc<Topology>,
    /// Delivery tags handed out and not yet settled.
    unsettled: BTreeSet<u64>,
}

impl RabbitConsumer {
    fn delivery_of(&self, d: &lapin::message::Delivery) -> Result<Delivery, BusError> {
        Ok(Delivery {
            message: message_of(d)?,
            partition: self.partition,
            redelivered: d.redelivered,
            tag: d.delivery_tag,
        })
    }

    /// Settling works only on this consumer's unsettled deliveries.
    fn ensure_open(&self, d: &Delivery) -> Result<(), BusError> {
        if self.unsettled.contains(&d.tag) {
            Ok(())
        } else {
            Err(BusError::Invalid(format!("message {} is not an open delivery of this consumer", d.message.id)))
        }
    }
}

#[async_trait]
impl PartitionConsumer for RabbitConsumer {
    async fn next_batch(&mut self, wait: Duration, max: usize) -> Result<Vec<Delivery>, BusError> {
        if !self.unsettled.is_empty() {
            tokio::time::sleep(wait).await;
            return Ok(Vec::new());
        }
        let Some(consumer) = self.consumer.as_mut() else {
            return Err(BusError::Unavailable("consumer already closed".into()));
        };
        let first = match tokio::time::timeout(wait, consumer.next()).await {
            Err(_) => return Ok(Vec::new()),
            Ok(None) => {
                return Err(BusError::Unavailable(format!("consumer of partition {} was cancelled", self.partition)));
            }
            Ok(Some(delivery)) => delivery?,
        };
        let mut raw = vec![first];
        // Whatever the broker has already pushed joins the batch; nothing
        // waits for more.
        while raw.len() < max.max(1) {
            match consumer.next().now_or_never() {
                Some(Some(delivery)) => raw.push(delivery?),
                Some(None) | None => break,
            }
        }
        let batch = raw.iter().map(|d| self.delivery_of(d)).collect::<Result<Vec<_>, _>>()?;
        self.unsettled.extend(batch.iter().map(|d| d.tag));
        Ok(batch)
    }

    async fn ack_all(&mut self, deliveries: &[Delivery]) -> Result<(), BusError> {
        for d in deliveries {
            self.ensure_open(d)?;
        }
        let Some(last) = deliveries.iter().map(|d| d.tag).max() else { return Ok(()) };
        let tags: BTreeSet<u64> = deliveries.iter().map(|d| d.tag).collect();
        // One `multiple` ack settles every unsettled tag up to `last`; use
        // it only when those are exactly the ones to ack.
        if self.unsettled.range(..=last).all(|t| tags.contains(t)) {
            self.channel.basic_ack(last, BasicAckOptions { multiple: true }).await?;
        } else {
            for tag in &tags {
                self.channel.basic_ack(*tag, BasicAckOptions::default()).await?;
            }
        }
        for tag in &tags {
            self.unsettled.remove(tag);
        }
        Ok(())
    }

    async fn dead_letter(&mut self, d: &Delivery, reason: &str) -> Result<(), BusError> {
        // A reject carries no text: the broker records `rejected` in x-death,
        // and the reason goes to the log with the message id.
        self.ensure_open(d)?;
        tracing::warn!(message_id = %d.message.id, partition = self.partition, reason, "dead-lettering bus message");
        self.channel.basic_reject(d.tag, BasicRejectOptions { requeue: false }).await?;
        self.unsettled.remove(&d.tag);
        Ok(())
    }

    async fn retry_later(&mut self, d: &Delivery, delay: Duration) -> Result<(), BusError> {
        self.ensure_open(d)?;
        let bucket = self.topology.bucket_for(delay);
        let routing_key = self.partition.to_string();
        let bucket_ms = bucket.as_millis().to_string();
        let confirm = self
            .channel
            .basic_publish(
                self.topology.retry_exchange().as_str().into(),
                routing_key.as_str().into(),
                BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() },
                &d.message.payload,
                properties(&d.message, Some((RETRY_HEADER, bucket_ms))),
            )
            .await?;
        confirmed(confirm, d.message.id).await?;
        // Acked only after the copy is safe: a crash in between duplicates
        // (idempotency keys absorb that), never loses.
        self.channel.basic_ack(d.tag, BasicAckOptions::default()).await?;
        self.unsettled.remove(&d.tag);
        Ok(())
    }
}

impl Drop for RabbitConsumer {
    /// Closes the channel *before* the lapin consumer goes: dropping a lapin
    /// consumer first sends `basic.cancel`, and a quorum queue then activates
    /// the standby consumer while the unacked delivery is still checked out,
    /// so the standby would get the next message before the requeued one
    /// (per-deal order broken on fail-over). Closing the channel returns the
    /// unacked delivery before the standby is activated.
    fn drop(&mut self) {
        let consumer = self.consumer.take();
        let channel = self.channel.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = channel.close(200, "consumer dropped".into()).await;
                drop(consumer);
            });
        }
    }
}
