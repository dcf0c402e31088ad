//! The contract of the worker's side: claims, fencing by attempt, the sweep and racing
//! claimers.

use std::sync::Arc;

use chrono::{Duration, Utc};

use super::{created, failure, file, new_ledger};
use crate::domain::{Stage, Status, Timezone};
use crate::store::{Expected, JobStore, PhaseRecord, UserChange};

fn phase(name: &'static str, detail: Option<&str>, at: chrono::DateTime<Utc>) -> PhaseRecord {
    PhaseRecord {
        phase: name,
        detail: detail.map(str::to_owned),
        at,
    }
}

pub(super) async fn claims_and_fencing(store: &dyn JobStore) {
    let l = created(store, &new_ledger(3001, "m_claim", "2026-10", None)).await;
    let now = Utc::now();
    let claimed = store
        .claim(l.id, now, now + Duration::seconds(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (claimed.status, claimed.attempt_count),
        (Status::Processing, 1)
    );
    assert!(claimed.lease_until.is_some() && claimed.started_at.is_some());
    assert!(
        store.claim(l.id, now, now).await.unwrap().is_none(),
        "a claimed job is not PENDING"
    );
    assert!(
        store
            .renew_lease(l.id, 1, now + Duration::seconds(90))
            .await
            .unwrap()
    );
    assert!(
        !store.renew_lease(l.id, 2, now).await.unwrap(),
        "wrong attempt"
    );
    assert!(
        store
            .record_phases(
                l.id,
                1,
                &[
                    phase("FETCH_START", Some("d"), now),
                    phase("GENERATE_START", None, now)
                ]
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_phases(l.id, 7, &[phase("FETCH_START", None, now)])
            .await
            .unwrap()
    );
    let tz = Timezone::parse("Europe/Berlin").unwrap();
    // Phases that ride with the completion: fenced with it, recorded in order before it.
    let later = [
        phase("FETCH_DONE", Some("2 entries"), now),
        phase("GENERATE_DONE", None, now),
        phase("UPLOAD_DONE", None, now),
    ];
    assert!(
        store
            .complete(l.id, 2, &file(1), Stage::Final, tz, now, &later)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store.get_file(l.id, 1).await.unwrap().is_none(),
        "a fenced completion writes nothing"
    );
    let done = store
        .complete(l.id, 1, &file(1), Stage::Draft, tz, now, &later)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (done.status, done.stage, done.timezone),
        (Status::Completed, Stage::Draft, Some(tz))
    );
    assert_eq!(done.file.as_ref().unwrap().version, 1);
    let stored = store.get_file(l.id, 1).await.unwrap().unwrap();
    assert_eq!(
        (
            stored.object_key.as_str(),
            stored.header_sha256,
            stored.manifest.as_deref()
        ),
        ("k/v1", Some("cd".repeat(32)), Some("manifest-of-v1"))
    );
    assert!(
        store.fail(l.id, 1, &failure("X")).await.unwrap().is_none(),
        "terminal stays terminal"
    );
    let timeline = store.list_events(l.id).await.unwrap();
    let steps: Vec<String> = timeline
        .iter()
        .map(|e| e.status.map(|s| s.to_string()).or(e.phase.clone()).unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "PENDING",
            "PROCESSING",
            "FETCH_START",
            "GENERATE_START",
            "FETCH_DONE",
            "GENERATE_DONE",
            "UPLOAD_DONE",
            "COMPLETED"
        ],
        "a fenced-off completion or phase record wrote nothing"
    );
    assert_eq!(timeline[2].detail.as_deref(), Some("d"));
    assert_eq!(timeline[4].detail.as_deref(), Some("2 entries"));
    assert_eq!(timeline[4].attempt, 1);
    assert_eq!(timeline[1].attempt, 1);

    // The status changes since a point in time, across ledgers, paged by position.
    let before = timeline[0].at - chrono::Duration::milliseconds(1);
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page = store
            .status_events_since(None, before, after, 1)
            .await
            .unwrap();
        let Some((seq, event)) = page.into_iter().next() else {
            break;
        };
        assert!(seq > after, "positions grow");
        after = seq;
        if event.ledger_id == l.id {
            seen.push((event.status, event.attempt_count));
            assert_eq!(event.merchant_id, l.merchant_id);
            assert_eq!(event.version, 1);
        }
    }
    assert_eq!(
        seen,
        [
            (Status::Pending, 0),
            (Status::Processing, 1),
            (Status::Completed, 1)
        ],
        "status changes only, no phases"
    );
    let last_at = timeline.last().unwrap().at;
    assert!(
        store
            .status_events_since(None, last_at, 0, 100)
            .await
            .unwrap()
            .iter()
            .all(|(_, e)| e.ledger_id != l.id),
        "nothing of this ledger after its last change"
    );

    // Failing and releasing are fenced the same way.
    let f = created(store, &new_ledger(3002, "m_claim", "2026-09", None)).await;
    store
        .claim(f.id, now, now + Duration::seconds(60))
        .await
        .unwrap()
        .unwrap();
    assert!(store.release(f.id, 9, now).await.unwrap().is_none());
    let released = store.release(f.id, 1, now).await.unwrap().unwrap();
    assert_eq!(released.status, Status::Pending);
    store
        .claim(f.id, now, now + Duration::seconds(60))
        .await
        .unwrap()
        .unwrap();
    let failed = store
        .fail(f.id, 2, &failure("FETCH_DATA_ERROR"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(failed.status, Status::Rejected);
    assert_eq!(
        failed.failure_reason.unwrap().error_code,
        "FETCH_DATA_ERROR"
    );
    let last = store.list_events(f.id).await.unwrap().pop().unwrap();
    assert_eq!(
        (last.status, last.error_code.as_deref()),
        (Some(Status::Rejected), Some("FETCH_DATA_ERROR"))
    );
    // The queue sees only PENDING rows.
    let p = created(store, &new_ledger(3003, "m_claim", "2026-08", None)).await;
    let pending = store.pending_ids(100).await.unwrap();
    assert!(pending.contains(&p.id) && !pending.contains(&f.id));
}

pub(super) async fn sweeps(store: Arc<dyn JobStore>) {
    let now = Utc::now();
    let past = now - Duration::seconds(1);
    let hour_ago = now - Duration::hours(1);
    // A job that stalls on every attempt: two stalls are put back, the third gives up.
    let tired = created(&*store, &new_ledger(5002, "m_sweep", "2026-09", None)).await;
    for _ in 0..2 {
        store.claim(tired.id, now, past).await.unwrap().unwrap();
        let o = store.sweep(now, hour_ago, 3).await.unwrap();
        assert!(o.requeued.iter().any(|l| l.id == tired.id));
    }
    store.claim(tired.id, now, past).await.unwrap().unwrap();
    let stalled = created(&*store, &new_ledger(5001, "m_sweep", "2026-10", None)).await;
    store.claim(stalled.id, now, past).await.unwrap().unwrap();
    // A shutdown release is not a stall.
    let released = created(&*store, &new_ledger(5004, "m_sweep", "2026-07", None)).await;
    for attempt in 1..=3 {
        store
            .claim(released.id, now, now + Duration::seconds(60))
            .await
            .unwrap()
            .unwrap();
        store
            .release(released.id, attempt, now)
            .await
            .unwrap()
            .unwrap();
    }
    let fresh = created(&*store, &new_ledger(5003, "m_sweep", "2026-08", None)).await;
    store
        .claim(fresh.id, now, now + Duration::seconds(60))
        .await
        .unwrap()
        .unwrap();

    // Several sweepers at once: each job is reset by exactly one of them.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.sweep(Utc::now(), Utc::now() - Duration::hours(1), 3)
                .await
                .unwrap()
        }));
    }
    let (mut requeued, mut abandoned) = (Vec::new(), Vec::new());
    for t in tasks {
        let o = t.await.unwrap();
        let mine = |l: &&crate::domain::Ledger| l.merchant_id.as_str() == "m_sweep";
        requeued.extend(o.requeued.iter().filter(mine).map(|l| l.id));
        abandoned.extend(o.abandoned.iter().filter(mine).map(|l| l.id));
    }
    assert_eq!(requeued, [stalled.id]);
    assert_eq!(abandoned, [tired.id]);
    let tired_now = store.get_ledger(tired.id).await.unwrap().unwrap();
    assert_eq!(tired_now.status, Status::Rejected);
    assert_eq!(
        tired_now.failure_reason.clone().unwrap().error_code,
        "JOB_EXECUTION_FAILED"
    );
    assert_eq!(
        store.get_ledger(fresh.id).await.unwrap().unwrap().status,
        Status::Processing
    );
    assert_eq!(
        store.get_ledger(released.id).await.unwrap().unwrap().status,
        Status::Pending
    );

    // A user retry starts the stall count afresh.
    store
        .user_change(tired.id, Expected::of(&tired_now), UserChange::Retry, now)
        .await
        .unwrap()
        .unwrap();
    store.claim(tired.id, now, past).await.unwrap().unwrap();
    let o = store.sweep(now, hour_ago, 3).await.unwrap();
    assert!(o.requeued.iter().any(|l| l.id == tired.id), "{o:?}");

    // Unclaimed PENDING jobs are re-enqueued once per timeout, by one sweeper: a requeued
    // one, a released one and one never claimed since its creation alike.
    let waiting = created(&*store, &new_ledger(5005, "m_sweep", "2026-06", None)).await;
    let later = Utc::now() + Duration::seconds(5);
    let first = store
        .sweep(later, later - Duration::seconds(1), 3)
        .await
        .unwrap();
    for job in [&stalled, &released, &waiting] {
        assert!(first.unclaimed.iter().any(|l| l.id == job.id), "{first:?}");
    }
    let second = store
        .sweep(later, later - Duration::seconds(1), 3)
        .await
        .unwrap();
    assert!(second.unclaimed.iter().all(|l| l.id != stalled.id));
    // The queue order is creation order: a re-enqueue does not push a job to the back.
    let order = store.pending_ids(1000).await.unwrap();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted);
}

pub(super) async fn concurrent_claims(store: Arc<dyn JobStore>) {
    let l = created(&*store, &new_ledger(6001, "m_race", "2026-10", None)).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            let now = Utc::now();
            s.claim(l.id, now, now + Duration::seconds(30))
                .await
                .unwrap()
                .is_some()
        }));
    }
    let mut winners = 0;
    for t in tasks {
        winners += usize::from(t.await.unwrap());
    }
    assert_eq!(winners, 1, "exactly one worker claims a job");
}
