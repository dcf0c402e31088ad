//! The job store contract: what every adapter must do, written against the trait. Each
//! adapter's tests call [`run_all`] with a fresh, migrated store.

use std::sync::Arc;

use chrono::{Duration, Utc};

use super::{
    CompletedFile, Expected, IdempotencyRecord, InsertOutcome, JobStore, ListQuery, NewLedger,
    UserChange,
};
use crate::domain::{
    FailureReason, FileInfo, Format, Grant, LedgerId, LedgerType, MerchantId, Period, Stage,
    Status, Timezone, grant_digest,
};

/// A STATEMENT/CSV ledger to insert (shared by the contract suites and pipeline tests).
pub fn new_ledger(id: i64, merchant: &str, period: &str, tz: Option<&str>) -> NewLedger {
    NewLedger {
        id: LedgerId::from_i64(id),
        merchant_id: MerchantId::parse(merchant).unwrap(),
        ledger_type: LedgerType::Statement,
        period: Period::parse(period).unwrap(),
        requested_timezone: tz.map(|t| Timezone::parse(t).unwrap()),
        format: Format::Csv,
        stage: Stage::Final,
        created_by: "tester".into(),
        created_at: Utc::now(),
    }
}

async fn created(store: &dyn JobStore, new: &NewLedger) -> crate::domain::Ledger {
    match store.insert_ledger(new, None).await.unwrap() {
        InsertOutcome::Created(l) => l,
        other => panic!("expected Created, got {other:?}"),
    }
}

fn file(version: u32) -> CompletedFile {
    CompletedFile {
        info: FileInfo {
            version,
            content_type: "text/csv".into(),
            size_bytes: 42,
            sha256: "ab".repeat(32),
            file_name: format!("f-v{version}.csv"),
        },
        object_key: format!("k/v{version}"),
    }
}

fn failure(code: &str) -> FailureReason {
    FailureReason {
        error_code: code.into(),
        message: "m".into(),
        retryable: true,
        at: Utc::now(),
    }
}

/// Runs every contract check against `store` (fresh and migrated).
pub async fn run_all(store: Arc<dyn JobStore>) {
    identity_and_lists(&*store).await;
    idempotency(&*store).await;
    claims_and_fencing(&*store).await;
    user_changes(&*store).await;
    sweeps(store.clone()).await;
    concurrent_claims(store.clone()).await;
    grants(&*store).await;
    node_leases(&*store).await;
    replay_scope(&*store).await;
    assert!(store.pending_migrations().await.unwrap().is_empty());
    store.ping().await.unwrap();
}

async fn identity_and_lists(store: &dyn JobStore) {
    let a = created(store, &new_ledger(1001, "m_list", "2026-10", None)).await;
    assert_eq!(
        (a.status, a.version, a.attempt_count),
        (Status::Pending, 1, 0)
    );
    let same = store
        .insert_ledger(&new_ledger(1002, "m_list", "2026-10", None), None)
        .await
        .unwrap();
    assert!(
        matches!(same, InsertOutcome::Exists(id) if id == a.id),
        "{same:?}"
    );
    // An explicit zone is another identity than "the merchant's own".
    created(store, &new_ledger(1003, "m_list", "2026-10", Some("UTC"))).await;
    created(store, &new_ledger(1004, "m_list", "2026-09", None)).await;
    created(store, &new_ledger(1005, "m_other", "2026-10", None)).await;
    let taken = store
        .insert_ledger(&new_ledger(1001, "m_list", "2025-01", None), None)
        .await
        .unwrap();
    assert!(matches!(taken, InsertOutcome::IdTaken), "{taken:?}");

    let only = |m: &str| Some(vec![MerchantId::parse(m).unwrap()]);
    let all = store
        .list_ledgers(&ListQuery {
            merchants: only("m_list"),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<i64> = all.iter().map(|l| l.id.as_i64()).collect();
    assert_eq!(ids, [1004, 1003, 1001], "newest first, one merchant");
    let page = store
        .list_ledgers(&ListQuery {
            merchants: only("m_list"),
            before: Some(LedgerId::from_i64(1004)),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page[0].id.as_i64(), 1003);
    let by_period = store
        .list_ledgers(&ListQuery {
            period: Some("2026-10".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_period.len(), 3);
    let none = store
        .list_ledgers(&ListQuery {
            merchants: Some(vec![]),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());

    // Soft delete frees the identity and hides the row from lists, not from reads.
    let deleted = store
        .user_change(a.id, Expected::of(&a), UserChange::Delete, Utc::now())
        .await;
    assert!(deleted.unwrap().unwrap().deleted_at.is_some());
    created(store, &new_ledger(1006, "m_list", "2026-10", None)).await;
    assert!(
        store
            .get_ledger(a.id)
            .await
            .unwrap()
            .unwrap()
            .deleted_at
            .is_some()
    );
    let listed = store
        .list_ledgers(&ListQuery {
            merchants: only("m_list"),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(listed.iter().all(|l| l.id != a.id));
    // An audit read lists it, with deletedAt.
    let audit = store
        .list_ledgers(&ListQuery {
            merchants: only("m_list"),
            limit: 10,
            include_deleted: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        audit.iter().any(|l| l.id == a.id && l.deleted_at.is_some()),
        "{audit:?}"
    );
}

async fn idempotency(store: &dyn JobStore) {
    let record = |id: i64, hash: &str| IdempotencyRecord {
        subject: "sub".into(),
        key: "key-1".into(),
        request_hash: hash.into(),
        ledger_id: LedgerId::from_i64(id),
        status_code: 202,
        body: "{\"first\":true}".into(),
    };
    let first = store
        .insert_ledger(
            &new_ledger(2001, "m_idem", "2026-10", None),
            Some(&record(2001, "h1")),
        )
        .await
        .unwrap();
    assert!(matches!(first, InsertOutcome::Created(_)));
    // Same key, same identity: a replay of the first response, not "exists".
    let again = store
        .insert_ledger(
            &new_ledger(2002, "m_idem", "2026-10", None),
            Some(&record(2002, "h1")),
        )
        .await
        .unwrap();
    let InsertOutcome::Replay(found) = again else {
        panic!("expected Replay: {again:?}")
    };
    assert_eq!(
        (found.ledger_id.as_i64(), found.request_hash.as_str()),
        (2001, "h1")
    );
    // Same key, another request: the record comes back, and nothing was stored.
    let other = store
        .insert_ledger(
            &new_ledger(2003, "m_idem", "2026-09", None),
            Some(&record(2003, "h2")),
        )
        .await
        .unwrap();
    assert!(
        matches!(other, InsertOutcome::Replay(ref f) if f.request_hash == "h1"),
        "{other:?}"
    );
    assert!(
        store
            .get_ledger(LedgerId::from_i64(2003))
            .await
            .unwrap()
            .is_none()
    );
    store
        .update_idempotency("sub", "key-1", 503, "{}")
        .await
        .unwrap();
    let replay = store
        .insert_ledger(
            &new_ledger(2004, "m_idem", "2026-10", None),
            Some(&record(2004, "h1")),
        )
        .await
        .unwrap();
    assert!(
        matches!(replay, InsertOutcome::Replay(ref f) if f.status_code == 503 && f.body == "{}")
    );

    // Keys are remembered for 24 h: a day later the same key creates again...
    let old_key = |id: i64| IdempotencyRecord {
        key: "key-old".into(),
        ..record(id, "h-old")
    };
    let mut day_old = new_ledger(2005, "m_idem", "2026-08", None);
    day_old.created_at = Utc::now() - Duration::hours(25);
    assert!(matches!(
        store
            .insert_ledger(&day_old, Some(&old_key(2005)))
            .await
            .unwrap(),
        InsertOutcome::Created(_)
    ));
    let fresh = store
        .insert_ledger(
            &new_ledger(2006, "m_idem", "2026-07", None),
            Some(&IdempotencyRecord {
                request_hash: "h-new".into(),
                ..old_key(2006)
            }),
        )
        .await
        .unwrap();
    assert!(matches!(fresh, InsertOutcome::Created(_)), "{fresh:?}");
    // ...and from then on that key replays the new request.
    let replayed = store
        .insert_ledger(
            &new_ledger(2007, "m_idem", "2026-06", None),
            Some(&old_key(2007)),
        )
        .await
        .unwrap();
    assert!(
        matches!(replayed, InsertOutcome::Replay(ref f) if f.request_hash == "h-new" && f.ledger_id.as_i64() == 2006),
        "{replayed:?}"
    );
    // The sweep's purge removes expired keys only.
    let mut stale = new_ledger(2008, "m_idem", "2026-05", None);
    stale.created_at = Utc::now() - Duration::hours(30);
    let stale_key = IdempotencyRecord {
        key: "key-stale".into(),
        ..record(2008, "h-stale")
    };
    store.insert_ledger(&stale, Some(&stale_key)).await.unwrap();
    let purged = store
        .purge_idempotency_keys(super::idempotency_cutoff(Utc::now()))
        .await
        .unwrap();
    assert!(purged >= 1, "{purged}");
    let again = store
        .insert_ledger(
            &new_ledger(2009, "m_idem", "2026-06", None),
            Some(&old_key(2009)),
        )
        .await
        .unwrap();
    assert!(
        matches!(again, InsertOutcome::Replay(ref f) if f.ledger_id.as_i64() == 2006),
        "a live key survives the purge: {again:?}"
    );
}

async fn claims_and_fencing(store: &dyn JobStore) {
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
            .record_phase(l.id, 1, "FETCH_START", Some("d"), now)
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_phase(l.id, 7, "FETCH_START", None, now)
            .await
            .unwrap()
    );
    let tz = Timezone::parse("Europe/Berlin").unwrap();
    assert!(
        store
            .complete(l.id, 2, &file(1), Stage::Final, tz, now)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store.get_file(l.id, 1).await.unwrap().is_none(),
        "a fenced completion writes nothing"
    );
    let done = store
        .complete(l.id, 1, &file(1), Stage::Draft, tz, now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (done.status, done.stage, done.timezone),
        (Status::Completed, Stage::Draft, Some(tz))
    );
    assert_eq!(done.file.as_ref().unwrap().version, 1);
    assert_eq!(
        store.get_file(l.id, 1).await.unwrap().unwrap().object_key,
        "k/v1"
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
    assert_eq!(steps, ["PENDING", "PROCESSING", "FETCH_START", "COMPLETED"]);
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

async fn user_changes(store: &dyn JobStore) {
    let l = created(store, &new_ledger(4001, "m_user", "2026-10", None)).await;
    let now = Utc::now();
    // Wrong expected status: nothing changes.
    let as_if_rejected = Expected {
        status: Status::Rejected,
        ..Expected::of(&l)
    };
    assert!(
        store
            .user_change(l.id, as_if_rejected, UserChange::Retry, now)
            .await
            .unwrap()
            .is_none()
    );
    let rejected = store
        .reject_pending(l.id, &failure("ENQUEUE_FAILED"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rejected.status, Status::Rejected);
    let retried = store
        .user_change(l.id, Expected::of(&rejected), UserChange::Retry, now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((retried.status, retried.version), (Status::Pending, 1));
    store
        .claim(l.id, now, now + Duration::seconds(60))
        .await
        .unwrap()
        .unwrap();
    let draft = store
        .complete(l.id, 1, &file(1), Stage::Draft, Timezone::UTC, now)
        .await
        .unwrap()
        .unwrap();
    let regen = store
        .user_change(l.id, Expected::of(&draft), UserChange::Regenerate, now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((regen.status, regen.version), (Status::Pending, 2));
    assert_eq!(
        regen.file.unwrap().version,
        1,
        "the previous file stays the newest completed"
    );

    // Two regenerates judged on the same DRAFT v1: the first one's v2 completes FINAL (the
    // period ended meanwhile); the second, still judging v1 DRAFT COMPLETED, changes nothing.
    store
        .claim(l.id, now, now + Duration::seconds(60))
        .await
        .unwrap()
        .unwrap();
    let fin = store
        .complete(l.id, 2, &file(2), Stage::Final, Timezone::UTC, now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (fin.status, fin.stage, fin.version),
        (Status::Completed, Stage::Final, 2)
    );
    assert!(
        store
            .user_change(l.id, Expected::of(&draft), UserChange::Regenerate, now)
            .await
            .unwrap()
            .is_none(),
        "a FINAL ledger got a new version"
    );
    // Judged on an older version of the same stage: nothing either.
    let v1_final = Expected {
        version: 1,
        ..Expected::of(&fin)
    };
    assert!(
        store
            .user_change(l.id, v1_final, UserChange::Delete, now)
            .await
            .unwrap()
            .is_none()
    );
    let after = store.get_ledger(l.id).await.unwrap().unwrap();
    assert_eq!((after.stage, after.version), (Stage::Final, 2));
    assert!(after.deleted_at.is_none());
}

async fn sweeps(store: Arc<dyn JobStore>) {
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

    // Unclaimed PENDING jobs are re-enqueued once per timeout, by one sweeper.
    let later = Utc::now() + Duration::seconds(5);
    let first = store
        .sweep(later, later - Duration::seconds(1), 3)
        .await
        .unwrap();
    assert!(first.unclaimed.iter().any(|l| l.id == stalled.id));
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

async fn concurrent_claims(store: Arc<dyn JobStore>) {
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

async fn grants(store: &dyn JobStore) {
    let g = Grant {
        subject: "alice".into(),
        role: "merchant_viewer".into(),
        domain: "m_1".into(),
    };
    let r0 = store.policy_revision().await.unwrap();
    assert_eq!(r0.digest, grant_digest(&[]), "the digest of no grants");
    assert!(store.add_grant(&g).await.unwrap());
    assert!(
        !store.add_grant(&g).await.unwrap(),
        "granting twice is a no-op"
    );
    let r1 = store.policy_revision().await.unwrap();
    assert_ne!(r0.revision, r1.revision, "a change moves the revision");
    assert_eq!(store.list_grants().await.unwrap(), vec![g.clone()]);
    assert_eq!(r1.digest, grant_digest(std::slice::from_ref(&g)));
    assert!(store.remove_grant(&g).await.unwrap());
    assert!(!store.remove_grant(&g).await.unwrap());
    let r2 = store.policy_revision().await.unwrap();
    assert_ne!(r2.revision, r1.revision);
    assert_eq!(r2.digest, grant_digest(&[]));
    assert!(store.list_grants().await.unwrap().is_empty());

    // Concurrent changes each record the digest of the set they leave behind: the last
    // digest is that of every grant.
    let many: Vec<Grant> = (0..12)
        .map(|i| Grant {
            subject: format!("user{i}"),
            role: "merchant_viewer".into(),
            domain: format!("m_{}", i % 3),
        })
        .collect();
    let adds = many.iter().map(|g| store.add_grant(g));
    for added in futures::future::join_all(adds).await {
        assert!(added.unwrap());
    }
    let state = store.policy_revision().await.unwrap();
    assert_eq!(
        state.digest,
        grant_digest(&store.list_grants().await.unwrap())
    );
    assert_eq!(state.digest, grant_digest(&many));
    for g in &many {
        assert!(store.remove_grant(g).await.unwrap());
    }
}

async fn node_leases(store: &dyn JobStore) {
    let now = Utc::now();
    let until = now + Duration::seconds(30);
    let a = store
        .lease_node_id("proc-a", now, until)
        .await
        .unwrap()
        .unwrap();
    let b = store
        .lease_node_id("proc-b", now, until)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(a, b, "two live processes never share a node id");
    assert!(store.renew_node_id(a, "proc-a", until).await.unwrap());
    assert!(
        !store.renew_node_id(a, "proc-b", until).await.unwrap(),
        "only the holder renews"
    );
    // An expired lease is taken over; the old holder learns it lost the id.
    let later = until + Duration::seconds(1);
    let c = store
        .lease_node_id("proc-c", later, later + Duration::seconds(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c, a.min(b), "the lowest expired id is reused");
    let loser = if c == a { "proc-a" } else { "proc-b" };
    assert!(!store.renew_node_id(c, loser, later).await.unwrap());
    store.release_node_id(c, "proc-c").await.unwrap();
    let d = store
        .lease_node_id("proc-d", later, later + Duration::seconds(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d, c, "a released id is free again");
}

/// The replay of status changes reads only the merchants asked for, in the query.
async fn replay_scope(store: &dyn JobStore) {
    let before = Utc::now() - Duration::seconds(1);
    for (id, merchant) in [
        (7001, "m_replay_a"),
        (7002, "m_replay_b"),
        (7003, "m_replay_c"),
    ] {
        created(store, &new_ledger(id, merchant, "2026-10", None)).await;
    }
    let merchant = |m: &str| MerchantId::parse(m).unwrap();
    // Every merchant of `scope` whose events the replay returns, paging one by one.
    let replayed = |scope: Option<Vec<MerchantId>>| async move {
        let mut seen = std::collections::BTreeSet::new();
        let mut after = 0;
        loop {
            let page = store
                .status_events_since(scope.as_deref(), before, after, 1)
                .await
                .unwrap();
            let Some((seq, event)) = page.into_iter().next() else {
                break;
            };
            after = seq;
            seen.insert(event.merchant_id.as_str().to_owned());
        }
        seen.retain(|m| m.starts_with("m_replay_"));
        seen.into_iter().collect::<Vec<_>>()
    };
    assert_eq!(
        replayed(None).await,
        ["m_replay_a", "m_replay_b", "m_replay_c"]
    );
    assert_eq!(
        replayed(Some(vec![merchant("m_replay_b")])).await,
        ["m_replay_b"]
    );
    assert_eq!(
        replayed(Some(vec![merchant("m_replay_c"), merchant("m_replay_a")])).await,
        ["m_replay_a", "m_replay_c"]
    );
    assert!(
        store
            .status_events_since(Some(&[]), before, 0, 100)
            .await
            .unwrap()
            .is_empty(),
        "an empty scope sees nothing"
    );
    assert!(
        replayed(Some(vec![merchant("m_nobody")])).await.is_empty(),
        "a merchant without ledgers"
    );
}
