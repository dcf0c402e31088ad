//! The contract of batches: creation with an idempotency key, a leased expansion that adds
//! members chunk by chunk (existing ledgers joining as such), counts from the members, the
//! progress publication that one process wins, and re-opening.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{Duration, Utc};

use super::{created, failure, file, new_ledger};
use crate::domain::{
    BatchCounts, BatchId, BatchStatus, Format, LedgerId, LedgerType, MerchantId, Period, Selection,
    Stage, Status, Timezone,
};
use crate::store::batches::{BatchInsert, BatchKey, ExpandStep, MemberFilter, NewBatch};
use crate::store::{JobStore, NewLedger};

fn new_batch(id: i64, by: &str) -> NewBatch {
    NewBatch {
        id: BatchId::from_i64(id),
        created_by: by.into(),
        merchants: Selection::Only(vec![
            MerchantId::parse("m_b1").unwrap(),
            MerchantId::parse("m_b2").unwrap(),
        ]),
        ledger_type: LedgerType::Statement,
        period: Period::parse("2026-10").unwrap(),
        formats: vec![Format::Csv, Format::Pdf],
        timezone: None,
        created_at: Utc::now(),
    }
}

fn member(id: i64, merchant: &str, format: Format) -> NewLedger {
    NewLedger {
        format,
        ..new_ledger(id, merchant, "2026-10", None)
    }
}

fn stored(outcome: BatchInsert) -> crate::domain::Batch {
    match outcome {
        BatchInsert::Created(b) => b,
        other => panic!("expected Created, got {other:?}"),
    }
}

pub(super) async fn batches(store: &dyn JobStore) {
    let key = BatchKey {
        subject: "ops".into(),
        key: "close-2026-10".into(),
        request_hash: "h1".into(),
    };
    let b = stored(
        store
            .insert_batch(&new_batch(7001, "ops"), Some(&key))
            .await
            .unwrap(),
    );
    assert_eq!(
        (b.status, b.expanding, b.counts),
        (BatchStatus::Running, true, BatchCounts::default())
    );
    assert_eq!(b.formats, [Format::Csv, Format::Pdf]);
    // The same key replays the first batch, whatever the new request is.
    match store
        .insert_batch(&new_batch(7002, "ops"), Some(&key))
        .await
        .unwrap()
    {
        BatchInsert::Replay {
            request_hash,
            batch,
        } => assert_eq!((request_hash.as_str(), batch.id), ("h1", b.id)),
        other => panic!("expected a replay, got {other:?}"),
    }
    assert!(
        store
            .get_batch(BatchId::from_i64(7002))
            .await
            .unwrap()
            .is_none()
    );
    // Keys are per subject.
    let theirs = BatchKey {
        subject: "other".into(),
        ..key.clone()
    };
    stored(
        store
            .insert_batch(&new_batch(7003, "other"), Some(&theirs))
            .await
            .unwrap(),
    );
    let mine = store.list_batches(Some("ops"), None, 10).await.unwrap();
    assert_eq!(
        mine.iter().map(|b| b.id.as_i64()).collect::<Vec<_>>(),
        [7001]
    );
    let all = store.list_batches(None, None, 10).await.unwrap();
    assert_eq!(
        all.iter().map(|b| b.id.as_i64()).collect::<Vec<_>>(),
        [7003, 7001]
    );
    let older = store
        .list_batches(None, Some(BatchId::from_i64(7003)), 10)
        .await
        .unwrap();
    assert_eq!(older.len(), 1);

    // A ledger of m_b2/CSV exists before the batch reaches it; it is COMPLETED.
    let before = created(store, &member(7100, "m_b2", Format::Csv)).await;
    let now = Utc::now();
    let claimed = store
        .claim(before.id, now, now + Duration::seconds(30))
        .await
        .unwrap()
        .unwrap();
    store
        .complete(
            before.id,
            claimed.attempt_count,
            &file(1),
            Stage::Final,
            Timezone::UTC,
            now,
            &[],
        )
        .await
        .unwrap()
        .unwrap();

    // Expansion: one holder at a time; the oldest batch first.
    let now = Utc::now();
    let lease = now + Duration::seconds(30);
    let taken = store
        .claim_expansion("p1", now, lease)
        .await
        .unwrap()
        .expect("an expanding batch");
    assert_eq!((taken.batch.id.as_i64(), taken.cursor), (7001, None));
    let second = store
        .claim_expansion("p2", now, lease)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.batch.id.as_i64(), 7003, "7001 is held");
    assert!(
        store
            .claim_expansion("p3", now, lease)
            .await
            .unwrap()
            .is_none()
    );

    let next = AtomicI64::new(7300);
    let fresh = move || LedgerId::from_i64(next.fetch_add(1, Ordering::Relaxed));
    let chunk1 = [
        member(7201, "m_b1", Format::Csv),
        member(7202, "m_b1", Format::Pdf),
    ];
    let step = |ledgers, cursor, done, holder| ExpandStep {
        batch: BatchId::from_i64(7001),
        holder,
        ledgers,
        fresh_id: &fresh,
        skipped: 0,
        skipped_ids: &[],
        cursor,
        done,
        next_pass_at: None,
        finalize_drafts: false,
        lease_until: lease,
        now,
    };
    // Another process's step writes nothing.
    assert!(
        store
            .expand_batch(&step(&chunk1, Some("1"), false, "p2"))
            .await
            .unwrap()
            .is_none()
    );
    let made = store
        .expand_batch(&step(&chunk1, Some("1"), false, "p1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        made.iter().map(|l| l.id.as_i64()).collect::<Vec<_>>(),
        [7201, 7202]
    );
    assert!(made.iter().all(|l| l.status == Status::Pending));
    // 7201's id is taken by now: the next chunk's new member gets a fresh one; m_b2/CSV
    // exists and joins as existing.
    let chunk2 = [
        member(7201, "m_b2", Format::Pdf),
        member(7204, "m_b2", Format::Csv),
    ];
    let made = store
        .expand_batch(&step(&chunk2, None, true, "p1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(made.len(), 1);
    assert_eq!(made[0].id.as_i64(), 7300, "a fresh id for a taken one");
    assert_eq!(made[0].format, Format::Pdf);
    // Expansion over: the lease holder can write no more, and no one claims it again.
    assert!(
        store
            .expand_batch(&step(&chunk2, None, true, "p1"))
            .await
            .unwrap()
            .is_none()
    );
    let b = store
        .get_batch(BatchId::from_i64(7001))
        .await
        .unwrap()
        .unwrap();
    assert!(!b.expanding);
    let later = now + Duration::minutes(5);
    let again = store
        .claim_expansion("p3", later, later + Duration::seconds(30))
        .await
        .unwrap()
        .expect("7003's lease expired");
    assert_eq!(again.batch.id.as_i64(), 7003);

    // Counts from the members: three made (PENDING), one existing (COMPLETED).
    let tally = store.tally_batch(BatchId::from_i64(7001)).await.unwrap();
    assert_eq!(
        tally.counts,
        BatchCounts {
            pending: 3,
            existing: 1,
            ..Default::default()
        }
    );
    assert_eq!(tally.status(false), BatchStatus::Running);

    // Pages of members, newest ledger first, by state.
    let all = store
        .batch_members(BatchId::from_i64(7001), None, None, 10)
        .await
        .unwrap();
    let ids: Vec<i64> = all.iter().map(|m| m.ledger.id.as_i64()).collect();
    assert_eq!(ids, [7300, 7202, 7201, 7100]);
    assert!(all[3].existing && !all[0].existing);
    assert_eq!(all[3].ledger.file.as_ref().map(|f| f.version), Some(1));
    let page = store
        .batch_members(
            BatchId::from_i64(7001),
            None,
            Some(LedgerId::from_i64(7202)),
            1,
        )
        .await
        .unwrap();
    assert_eq!(page[0].ledger.id.as_i64(), 7201);
    let existing = store
        .batch_members(
            BatchId::from_i64(7001),
            Some(MemberFilter::Existing),
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(existing.len(), 1);
    let completed = store
        .batch_members(
            BatchId::from_i64(7001),
            Some(MemberFilter::Status(Status::Completed)),
            None,
            10,
        )
        .await
        .unwrap();
    assert!(
        completed.is_empty(),
        "the completed one is counted as existing"
    );
    let pending = store
        .batch_members(
            BatchId::from_i64(7001),
            Some(MemberFilter::Status(Status::Pending)),
            None,
            10,
        )
        .await
        .unwrap();
    let ids: Vec<i64> = pending.iter().map(|m| m.ledger.id.as_i64()).collect();
    assert_eq!(ids, [7300, 7202, 7201], "the made members are PENDING");

    // Every made member ends: one REJECTED.
    for (id, ok) in [(7201, true), (7202, true), (7300, false)] {
        let id = LedgerId::from_i64(id);
        let l = store.claim(id, now, lease).await.unwrap().unwrap();
        if ok {
            store
                .complete(
                    id,
                    l.attempt_count,
                    &file(1),
                    Stage::Final,
                    Timezone::UTC,
                    now,
                    &[],
                )
                .await
                .unwrap()
                .unwrap();
        } else {
            store
                .fail(id, l.attempt_count, &failure("FETCH_DATA_ERROR"))
                .await
                .unwrap()
                .unwrap();
        }
    }
    let tally = store.tally_batch(BatchId::from_i64(7001)).await.unwrap();
    assert_eq!(tally.status(false), BatchStatus::CompletedWithErrors);
    assert_eq!(
        tally.counts,
        BatchCounts {
            completed: 2,
            rejected: 1,
            existing: 1,
            ..Default::default()
        }
    );
    // Each status change moved its member to its bucket.
    let bucket = async |status: Status| -> Vec<i64> {
        store
            .batch_members(
                BatchId::from_i64(7001),
                Some(MemberFilter::Status(status)),
                None,
                10,
            )
            .await
            .unwrap()
            .iter()
            .map(|m| m.ledger.id.as_i64())
            .collect()
    };
    assert_eq!(bucket(Status::Rejected).await, [7300]);
    assert_eq!(bucket(Status::Completed).await, [7202, 7201]);
    assert!(bucket(Status::Pending).await.is_empty());

    // Publication: one process wins each change.
    let running = store.running_batches(None, 10).await.unwrap();
    let mine = running
        .iter()
        .find(|p| p.batch.id.as_i64() == 7001)
        .expect("7001 is running as last published");
    assert_eq!(mine.total, 4);
    let status = tally.status(false);
    assert!(
        store
            .record_batch_progress(mine.batch.id, mine.seq, status, &tally.counts, None, now)
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_batch_progress(mine.batch.id, mine.seq, status, &tally.counts, None, now)
            .await
            .unwrap(),
        "a second publication over the same one loses"
    );
    let b = store.get_batch(mine.batch.id).await.unwrap().unwrap();
    assert_eq!((b.status, b.counts), (status, tally.counts));
    assert!(b.finished_at.is_some());
    assert!(
        store
            .running_batches(None, 10)
            .await
            .unwrap()
            .iter()
            .all(|p| p.batch.id != b.id)
    );

    // A member queued again re-opens the batch.
    store
        .reopen_batches(LedgerId::from_i64(7300), Utc::now())
        .await
        .unwrap();
    let b = store.get_batch(b.id).await.unwrap().unwrap();
    assert_eq!((b.status, b.finished_at), (BatchStatus::Running, None));
    // A round that counted before the re-opening cannot record it finished over it.
    assert!(
        !store
            .record_batch_progress(b.id, mine.seq + 1, status, &tally.counts, None, now)
            .await
            .unwrap()
    );

    // Expired keys are purged with the ledgers' ones.
    assert!(
        store
            .purge_idempotency_keys(Utc::now() + Duration::seconds(1))
            .await
            .unwrap()
            >= 2
    );
}

/// Two processes racing on one expansion: each step lands once, whoever wins.
pub(super) async fn racing_expansions(store: Arc<dyn JobStore>) {
    stored(
        store
            .insert_batch(&new_batch(7501, "ops"), None)
            .await
            .unwrap(),
    );
    let now = Utc::now();
    let lease = now + Duration::seconds(30);
    let (a, b) = tokio::join!(
        store.claim_expansion("pa", now, lease),
        store.claim_expansion("pb", now, lease)
    );
    let won: Vec<_> = [a.unwrap(), b.unwrap()]
        .into_iter()
        .flatten()
        .filter(|e| e.batch.id.as_i64() == 7501)
        .collect();
    assert_eq!(won.len(), 1, "one process holds an expansion");
    // Released (put aside after a failure): any process takes it from then on.
    let id = won[0].batch.id;
    let later_on = now + Duration::seconds(10);
    store
        .release_expansion(id, "someone else", later_on)
        .await
        .unwrap();
    store.release_expansion(id, "pa", later_on).await.unwrap();
    store.release_expansion(id, "pb", later_on).await.unwrap();
    // Put aside until `later_on`: not before.
    let mut early = false;
    while let Some(e) = store.claim_expansion("pc", now, lease).await.unwrap() {
        early |= e.batch.id == id;
    }
    assert!(!early, "a batch put aside waits");
    let (now, lease) = (later_on, later_on + Duration::seconds(30));
    let mut taken = false;
    while let Some(e) = store.claim_expansion("pc", now, lease).await.unwrap() {
        taken |= e.batch.id == id;
    }
    assert!(taken, "a released expansion is free");
}
