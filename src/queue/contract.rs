//! The queue contract, written against the trait. A queue carries ledger ids to consumers;
//! the store's claim makes duplicates harmless, so the contract is "at least once".

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::{JobMessage, Queue};
use crate::store::{InsertOutcome, JobStore};

/// Stores a PENDING ledger (the in-database queue reads the store) and returns its message.
pub async fn pending(store: &dyn JobStore, id: i64) -> JobMessage {
    let period = format!("2025-{:02}-{:02}", 1 + id % 12, 1 + id % 28);
    let new = crate::store::contract::new_ledger(id, "m_queue", &period, None);
    assert!(matches!(
        store.insert_ledger(&new, None).await.unwrap(),
        InsertOutcome::Created(_)
    ));
    JobMessage {
        ledger_id: new.id,
        merchant_id: new.merchant_id,
        redelivery: false,
    }
}

/// Runs every check: `store` backs the ledgers the messages name.
pub async fn run_all(queue: Arc<dyn Queue>, store: Arc<dyn JobStore>) {
    queue.ready().await.unwrap();
    let mut consumer = queue.consumer().await.unwrap();

    // Every enqueued job reaches a consumer, redeliveries by the sweep too.
    let mut sent = HashSet::new();
    for id in 1..=5 {
        let mut m = pending(&*store, id).await;
        m.redelivery = id % 2 == 0;
        queue.enqueue(&m).await.unwrap();
        sent.insert(m.ledger_id);
    }
    let mut seen = HashSet::new();
    while seen.len() < sent.len() {
        let d = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .expect("a message within 30 s")
            .unwrap();
        // Claiming is what takes a job off the in-database queue; do it as a worker would.
        let now = Utc::now();
        store
            .claim(
                d.ledger_id.unwrap(),
                now,
                now + chrono::Duration::seconds(60),
            )
            .await
            .unwrap();
        seen.insert(d.ledger_id.unwrap());
        consumer.ack(d).await.unwrap();
    }
    assert_eq!(seen, sent);

    // `next` is cancel-safe: a wait cut short loses nothing.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), consumer.next())
            .await
            .is_err()
    );
    let m = pending(&*store, 6).await;
    queue.enqueue(&m).await.unwrap();
    let d = tokio::time::timeout(Duration::from_secs(30), consumer.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.ledger_id, Some(m.ledger_id));
    let now = Utc::now();
    store
        .claim(
            d.ledger_id.unwrap(),
            now,
            now + chrono::Duration::seconds(60),
        )
        .await
        .unwrap();
    consumer.ack(d).await.unwrap();

    // Two consumers share the work; together they see every job.
    let mut second = queue.consumer().await.unwrap();
    let mut sent = HashSet::new();
    for id in 10..16 {
        let m = pending(&*store, id).await;
        queue.enqueue(&m).await.unwrap();
        sent.insert(m.ledger_id);
    }
    let mut seen = HashSet::new();
    while !sent.is_subset(&seen) {
        let d = tokio::select! {
            d = consumer.next() => d.unwrap(),
            d = second.next() => d.unwrap(),
            _ = tokio::time::sleep(Duration::from_secs(10)) => panic!("stalled with {seen:?}"),
        };
        let now = Utc::now();
        store
            .claim(
                d.ledger_id.unwrap(),
                now,
                now + chrono::Duration::seconds(60),
            )
            .await
            .unwrap();
        seen.insert(d.ledger_id.unwrap());
    }
    assert_eq!(seen, sent, "only enqueued jobs are delivered");
}
