//! The in-database queue: PENDING rows of the job table are the queue. Enqueue only wakes
//! local consumers; consumers poll the store for the oldest PENDING ids. Claims are atomic in
//! the store, so consumers racing for one id are harmless; the consumers of one process
//! share what they read, so they do not race each other: every id read is offered to one
//! of them (each offer a claim attempt, a write, saved).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{Mutex, Notify};

use super::{Consumer, Delivery, JobMessage, Queue, QueueError};
use crate::domain::LedgerId;
use crate::store::JobStore;

/// How often an idle consumer looks for work enqueued by another process.
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// PENDING ids read at a time, beyond those offered already.
const READ_AHEAD: usize = 16;
/// How long an id offered to a consumer is not offered again unless acknowledged first:
/// the consumer claims it at once, so an id still PENDING after this is offered again (a
/// claim that failed on a store error, which the consumer does not acknowledge).
const OFFERED_FOR: Duration = Duration::from_secs(10);

/// The job table as a queue.
pub struct DbQueue {
    store: Arc<dyn JobStore>,
    wake: Arc<Notify>,
    offers: Arc<Mutex<Offers>>,
}

impl DbQueue {
    /// A queue over `store`.
    pub fn new(store: Arc<dyn JobStore>) -> Self {
        Self {
            store,
            wake: Arc::new(Notify::new()),
            offers: Arc::new(Mutex::new(Offers::default())),
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
            offers: self.offers.clone(),
        }))
    }
}

/// The PENDING ids this process's consumers share.
#[derive(Default)]
struct Offers {
    /// Read and not offered yet, oldest first.
    ready: VecDeque<LedgerId>,
    /// Offered to a consumer and not acknowledged yet, with when.
    offered: HashMap<LedgerId, Instant>,
}

impl Offers {
    /// The oldest id read and not offered yet, now offered.
    fn take(&mut self) -> Option<LedgerId> {
        let id = self.ready.pop_front()?;
        self.offered.insert(id, Instant::now());
        Some(id)
    }

    /// How many ids to read so that [`READ_AHEAD`] of them may be new: the ones offered
    /// and still PENDING come first (oldest first), forgotten once [`OFFERED_FOR`] passed.
    fn read_limit(&mut self) -> usize {
        self.offered.retain(|_, at| at.elapsed() < OFFERED_FOR);
        READ_AHEAD + self.offered.len()
    }

    /// Keeps the ids of `pending` not offered yet.
    fn read(&mut self, pending: Vec<LedgerId>) {
        let offered = &self.offered;
        self.ready = pending
            .into_iter()
            .filter(|id| !offered.contains_key(id))
            .collect();
    }
}

struct DbConsumer {
    store: Arc<dyn JobStore>,
    wake: Arc<Notify>,
    offers: Arc<Mutex<Offers>>,
}

#[async_trait]
impl Consumer for DbConsumer {
    async fn next(&mut self) -> Result<Delivery, QueueError> {
        loop {
            // Register interest before reading, so an enqueue between the read and the wait
            // is not missed.
            let notified = self.wake.notified();
            {
                // Held across the read: one consumer reads for all, the others wait for its
                // result instead of reading (and then claiming) the same ids.
                let mut offers = self.offers.lock().await;
                if offers.ready.is_empty() {
                    let limit = u32::try_from(offers.read_limit()).unwrap_or(u32::MAX);
                    let pending = self
                        .store
                        .pending_ids(limit)
                        .await
                        .map_err(|e| QueueError::Backend(e.to_string()))?;
                    offers.read(pending);
                }
                if let Some(ledger_id) = offers.take() {
                    return Ok(Delivery {
                        ledger_id: Some(ledger_id),
                        position: None,
                    });
                }
            }
            let _ = tokio::time::timeout(POLL_INTERVAL, notified).await;
        }
    }

    async fn ack(&mut self, delivery: Delivery) -> Result<(), QueueError> {
        // Claiming moved the row out of PENDING; the offer is settled.
        if let Some(id) = delivery.ledger_id {
            self.offers.lock().await.offered.remove(&id);
        }
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

    /// The consumers of one process are offered distinct ids; an id acknowledged while
    /// still PENDING is offered again.
    #[tokio::test]
    async fn consumers_of_one_process_are_never_offered_the_same_id() {
        let store = SqliteStore::in_memory().await.unwrap();
        store.migrate().await.unwrap();
        let store: Arc<dyn JobStore> = Arc::new(store);
        let mut pending = std::collections::HashSet::new();
        for id in 1..=40 {
            pending.insert(super::super::contract::pending(&*store, id).await.ledger_id);
        }
        let queue = DbQueue::new(store.clone());
        let mut consumers = Vec::new();
        for _ in 0..3 {
            consumers.push(queue.consumer().await.unwrap());
        }
        let mut offered = std::collections::HashSet::new();
        for round in 0..pending.len() {
            let consumer = &mut consumers[round % 3];
            let delivery = consumer.next().await.unwrap();
            assert!(
                offered.insert(delivery.ledger_id.unwrap()),
                "offered twice: {delivery:?}"
            );
        }
        assert_eq!(offered, pending);
        // Every PENDING id is on offer: nothing more, however many consumers ask.
        let more = tokio::time::timeout(Duration::from_millis(600), consumers[0].next()).await;
        assert!(more.is_err(), "offered again: {more:?}");
        // Acknowledged without a claim (the job stayed PENDING): offered again.
        let again = *offered.iter().next().unwrap();
        consumers[1]
            .ack(Delivery {
                ledger_id: Some(again),
                position: None,
            })
            .await
            .unwrap();
        let delivery = consumers[2].next().await.unwrap();
        assert_eq!(delivery.ledger_id, Some(again));
    }
}
