//! The in-database queue: PENDING rows of the job table are the queue. Enqueue only wakes
//! local consumers; consumers poll the store for the oldest PENDING ids. Claims are atomic in
//! the store, so consumers racing for one id are harmless.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use super::{Consumer, Delivery, JobMessage, Queue, QueueError};
use crate::domain::LedgerId;
use crate::store::JobStore;

/// How often an idle consumer looks for work enqueued by another process.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// The job table as a queue.
pub struct DbQueue {
    store: Arc<dyn JobStore>,
    wake: Arc<Notify>,
}

impl DbQueue {
    /// A queue over `store`.
    pub fn new(store: Arc<dyn JobStore>) -> Self {
        Self {
            store,
            wake: Arc::new(Notify::new()),
        }
    }
}

#[async_trait]
impl Queue for DbQueue {
    async fn enqueue(&self, _message: &JobMessage) -> Result<(), QueueError> {
        // The row is already PENDING in the store, which is the queue.
        self.wake.notify_waiters();
        Ok(())
    }

    async fn ready(&self) -> Result<(), QueueError> {
        self.store
            .ping()
            .await
            .map_err(|e| QueueError::Backend(e.to_string()))
    }

    async fn consumer(&self) -> Result<Box<dyn Consumer>, QueueError> {
        Ok(Box::new(DbConsumer {
            store: self.store.clone(),
            wake: self.wake.clone(),
            batch: Vec::new(),
        }))
    }
}

struct DbConsumer {
    store: Arc<dyn JobStore>,
    wake: Arc<Notify>,
    /// Ids read but not handed out yet, oldest last.
    batch: Vec<LedgerId>,
}

#[async_trait]
impl Consumer for DbConsumer {
    async fn next(&mut self) -> Result<Delivery, QueueError> {
        loop {
            if let Some(ledger_id) = self.batch.pop() {
                return Ok(Delivery {
                    ledger_id: Some(ledger_id),
                    position: None,
                });
            }
            // Register interest before reading, so an enqueue between the read and the wait
            // is not missed.
            let notified = self.wake.notified();
            let mut ids = self
                .store
                .pending_ids(16)
                .await
                .map_err(|e| QueueError::Backend(e.to_string()))?;
            if ids.is_empty() {
                let _ = tokio::time::timeout(POLL_INTERVAL, notified).await;
                continue;
            }
            ids.reverse();
            self.batch = ids;
        }
    }

    async fn ack(&mut self, _delivery: Delivery) -> Result<(), QueueError> {
        // Claiming moved the row out of PENDING; nothing else to acknowledge.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    #[tokio::test]
    async fn the_database_queue_meets_the_contract() {
        let store = SqliteStore::in_memory().await.unwrap();
        store.migrate().await.unwrap();
        let store: Arc<dyn JobStore> = Arc::new(store);
        let queue: Arc<dyn Queue> = Arc::new(DbQueue::new(store.clone()));
        super::super::contract::run_all(queue, store).await;
    }
}
