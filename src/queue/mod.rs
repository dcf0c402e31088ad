//! The job queue port: carries ledger ids from the api role to workers. A message is a hint
//! ("this ledger wants processing"); the store's atomic claim decides who works on it, so a
//! duplicate or stale message is harmless. Adapters: [`db`] (the job table itself) and
//! [`kafka`] (topic `ledger.generate`, consumer groups).

#[cfg(test)]
pub mod contract;
pub mod db;
pub mod kafka;

use async_trait::async_trait;

use crate::domain::{LedgerId, MerchantId};

/// Errors of a queue backend.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The backend refused or could not be reached.
    #[error("queue backend error: {0}")]
    Backend(String),
}

/// One message: which ledger to process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobMessage {
    /// The ledger.
    pub ledger_id: LedgerId,
    /// Its merchant (the partition key where the backend has partitions).
    pub merchant_id: MerchantId,
    /// Set by the recovery sweep for a job nobody claimed in time: a partitioned backend
    /// then routes it by another key, so a job is not held forever on a partition whose
    /// consumer is gone (per-merchant order does not matter to correctness; claims do).
    pub redelivery: bool,
}

/// Where a message sits in a partitioned log (what acknowledging it commits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Partition.
    pub partition: i32,
    /// Offset of the message.
    pub offset: i64,
}

/// A received message and what the consumer needs to acknowledge it.
#[derive(Debug)]
pub struct Delivery {
    /// The ledger to process; `None` for a message that is not ours to read (malformed):
    /// it is acknowledged and dropped.
    pub ledger_id: Option<LedgerId>,
    /// Where the message sits, for backends that commit positions.
    pub position: Option<Position>,
}

/// The producing side.
#[async_trait]
pub trait Queue: Send + Sync {
    /// Publishes one message; an error means the job was not queued.
    async fn enqueue(&self, message: &JobMessage) -> Result<(), QueueError>;
    /// Answers when the backend answers.
    async fn ready(&self) -> Result<(), QueueError>;
    /// A new consumer of this queue (one per worker slot).
    async fn consumer(&self) -> Result<Box<dyn Consumer>, QueueError>;
}

/// The consuming side. `next` must be cancel-safe: the worker selects it against shutdown.
#[async_trait]
pub trait Consumer: Send {
    /// Waits for the next message.
    async fn next(&mut self) -> Result<Delivery, QueueError>;
    /// Acknowledges a message whose job reached a terminal state or was dropped.
    async fn ack(&mut self, delivery: Delivery) -> Result<(), QueueError>;
    /// Leaves the queue on shutdown, so its share of the work moves to others at once.
    async fn close(&mut self) {}
}

/// Opens the queue `kind` names: the job table of `store`, or Kafka.
pub async fn open(
    kind: &crate::config::QueueKind,
    store: std::sync::Arc<dyn crate::store::JobStore>,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<std::sync::Arc<dyn Queue>> {
    use crate::config::QueueKind;
    Ok(match kind {
        QueueKind::Db => std::sync::Arc::new(db::DbQueue::new(store)),
        QueueKind::Kafka(settings) => {
            std::sync::Arc::new(kafka::KafkaQueue::connect(settings.clone(), shutdown).await?)
        }
    })
}

#[async_trait]
impl crate::ready::Ready for dyn Queue {
    async fn ready(&self) -> Result<(), String> {
        Queue::ready(self).await.map_err(|e| e.to_string())
    }
}
