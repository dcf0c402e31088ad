//! The contract of ledgers as users see them: identity, lists, idempotency keys, user
//! changes and the replay of status changes.

use std::sync::Arc;

use chrono::{Duration, Utc};

use super::{created, failure, file, new_ledger};
use crate::domain::{LedgerId, MerchantId, Stage, Status, Timezone};
use crate::store::{Expected, IdempotencyRecord, InsertOutcome, JobStore, ListQuery, UserChange};

pub(super) async fn identity_and_lists(store: &dyn JobStore) {
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

pub(super) async fn idempotency(store: &dyn JobStore) {
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
        .purge_idempotency_keys(crate::store::idempotency_cutoff(Utc::now()))
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

pub(super) async fn user_changes(store: &dyn JobStore) {
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
        .complete(l.id, 1, &file(1), Stage::Draft, Timezone::UTC, now, &[])
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
        .complete(l.id, 2, &file(2), Stage::Final, Timezone::UTC, now, &[])
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

/// The replay of status changes reads only the merchants asked for, in the query.
pub(super) async fn replay_scope(store: &dyn JobStore) {
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

/// Creates arriving together (which the embedded store commits as one group) each get the
/// outcome they would get one after the other: distinct ledgers are all stored, one
/// identity is stored once and the others hear `Exists`, one idempotency key is stored
/// once and the others replay it, one id is stored once.
pub(super) async fn concurrent_creates(store: Arc<dyn JobStore>) {
    let key = |name: &str, hash: &str, id: i64| IdempotencyRecord {
        subject: "sub-many".into(),
        key: name.into(),
        request_hash: hash.into(),
        ledger_id: LedgerId::from_i64(id),
        status_code: 202,
        body: format!("{{\"id\":{id}}}"),
    };
    let mut requests = Vec::new();
    for i in 0..30 {
        let period = format!("20{:02}-{:02}", 10 + i / 12, 1 + i % 12);
        requests.push((new_ledger(40000 + i, "m_many", &period, None), None));
    }
    for i in 0..4 {
        requests.push((new_ledger(40100 + i, "m_many_same", "2026-01", None), None));
    }
    for i in 0..3 {
        let new = new_ledger(40200 + i, "m_many_key", "2026-01", None);
        requests.push((new, Some(key("k-same", "h-same", 40200 + i))));
    }
    for i in 0..2 {
        let period = format!("2026-0{}", i + 1);
        let new = new_ledger(40300 + i, "m_many_other", &period, None);
        requests.push((new, Some(key("k-other", "h-other", 40300 + i))));
    }
    for period in ["2026-01", "2026-02"] {
        requests.push((new_ledger(40400, "m_many_id", period, None), None));
    }
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|(new, record)| {
            let store = store.clone();
            tokio::spawn(async move {
                let outcome = store.insert_ledger(&new, record.as_ref()).await.unwrap();
                (new, outcome)
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    let of = |merchant: &str| {
        outcomes
            .iter()
            .filter(|(new, _)| new.merchant_id.as_str() == merchant)
            .map(|(_, outcome)| outcome)
            .collect::<Vec<_>>()
    };
    let stored = |merchant: &str| {
        of(merchant)
            .into_iter()
            .filter_map(|o| match o {
                InsertOutcome::Created(l) => Some(l.id),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(stored("m_many").len(), 30, "{:?}", of("m_many"));

    let same = stored("m_many_same");
    assert_eq!(same.len(), 1, "{:?}", of("m_many_same"));
    for outcome in of("m_many_same") {
        assert!(
            matches!(outcome, InsertOutcome::Created(_))
                || matches!(outcome, InsertOutcome::Exists(id) if *id == same[0]),
            "{outcome:?}"
        );
    }
    for merchant in ["m_many_key", "m_many_other"] {
        let winner = stored(merchant);
        assert_eq!(winner.len(), 1, "{:?}", of(merchant));
        for outcome in of(merchant) {
            assert!(
                matches!(outcome, InsertOutcome::Created(_))
                    || matches!(outcome, InsertOutcome::Replay(r) if r.ledger_id == winner[0]),
                "{outcome:?}"
            );
        }
    }
    let ids = of("m_many_id");
    assert_eq!(stored("m_many_id").len(), 1, "{ids:?}");
    assert!(
        ids.iter().any(|o| matches!(o, InsertOutcome::IdTaken)),
        "{ids:?}"
    );

    // A second wave meets the first one's rows: a key already stored replays, an identity
    // already taken is `Exists`, and the key of a create refused for its identity is not
    // kept (the next create with that key is a create of its own).
    let winner = stored("m_many_key")[0];
    let existing = stored("m_many_same")[0];
    let second = vec![
        (
            new_ledger(40500, "m_many_key", "2026-01", None),
            Some(key("k-same", "h-same", 40500)),
        ),
        (
            new_ledger(40502, "m_many_same", "2026-01", None),
            Some(key("k-fresh", "h-fresh", 40502)),
        ),
        (new_ledger(40503, "m_many", "2026-01", None), None),
    ];
    let tasks: Vec<_> = second
        .into_iter()
        .map(|(new, record)| {
            let store = store.clone();
            tokio::spawn(async move { store.insert_ledger(&new, record.as_ref()).await.unwrap() })
        })
        .collect();
    let mut again = Vec::new();
    for task in tasks {
        again.push(task.await.unwrap());
    }
    assert!(
        matches!(&again[0], InsertOutcome::Replay(r) if r.ledger_id == winner),
        "{again:?}"
    );
    assert!(
        matches!(&again[1], InsertOutcome::Exists(id) if *id == existing),
        "{again:?}"
    );
    assert!(matches!(&again[2], InsertOutcome::Created(_)), "{again:?}");
    let fresh = store
        .insert_ledger(
            &new_ledger(40504, "m_many_same", "2026-02", None),
            Some(&key("k-fresh", "h-fresh-2", 40504)),
        )
        .await
        .unwrap();
    assert!(matches!(fresh, InsertOutcome::Created(_)), "{fresh:?}");
    for id in [40500, 40502] {
        let id = LedgerId::from_i64(id);
        assert!(store.get_ledger(id).await.unwrap().is_none(), "{id}");
    }

    // What was answered is what is stored, and nothing else.
    for merchant in [
        "m_many",
        "m_many_same",
        "m_many_key",
        "m_many_other",
        "m_many_id",
    ] {
        let listed = store
            .list_ledgers(&ListQuery {
                merchants: Some(vec![MerchantId::parse(merchant).unwrap()]),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut listed: Vec<LedgerId> = listed.into_iter().map(|l| l.id).collect();
        let mut answered = stored(merchant);
        answered.extend(match merchant {
            "m_many" => vec![LedgerId::from_i64(40503)],
            "m_many_same" => vec![LedgerId::from_i64(40504)],
            _ => vec![],
        });
        listed.sort_unstable_by_key(|id| id.as_i64());
        answered.sort_unstable_by_key(|id| id.as_i64());
        assert_eq!(listed, answered, "{merchant}");
    }
}
