//! The contract of schedules: rows, pause and delete, runs opened exactly once under a
//! race, and a run's passes (a paused schedule's runs do not grow).

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{Duration, SubsecRound, Utc};

use crate::domain::{
    BatchId, BatchStatus, Cadence, Format, LedgerId, LedgerType, MerchantId, Period, Schedule,
    Selection, Stage, Status, Timezone,
};
use crate::store::JobStore;
use crate::store::batches::{BatchInsert, ExpandStep, NewBatch};
use crate::store::schedules::OpenRun;

fn schedule(id: i64, by: &str) -> Schedule {
    Schedule {
        id,
        created_by: by.into(),
        merchants: Selection::Only(vec![MerchantId::parse("m_s1").unwrap()]),
        ledger_type: LedgerType::Statement,
        formats: vec![Format::Csv],
        cadence: Cadence::Monthly,
        delay: StdDuration::from_secs(3600),
        from: Some(Period::parse("2026-09").unwrap()),
        paused: false,
        next_period: Period::parse("2026-09").unwrap(),
        zones: Vec::new(),
        created_at: Utc::now().trunc_subsecs(3),
        deleted_at: None,
    }
}

fn run(s: &Schedule, batch: i64) -> OpenRun {
    OpenRun {
        schedule_id: s.id,
        batch: NewBatch {
            id: BatchId::from_i64(batch),
            created_by: s.created_by.clone(),
            merchants: s.merchants.clone(),
            ledger_type: s.ledger_type,
            period: s.next_period,
            formats: s.formats.clone(),
            timezone: None,
            created_at: Utc::now(),
        },
        delay: s.delay,
        pass_at: Utc::now() - Duration::minutes(1),
        next_period: s.cadence.next(&s.next_period),
    }
}

pub(super) async fn schedules(store: Arc<dyn JobStore>) {
    let s = schedule(8001, "ops");
    store.insert_schedule(&s).await.unwrap();
    store
        .insert_schedule(&schedule(8002, "other"))
        .await
        .unwrap();
    assert_eq!(store.get_schedule(8001).await.unwrap().unwrap(), s);
    let mine = store.list_schedules(Some("ops"), None, 10).await.unwrap();
    assert_eq!(mine.iter().map(|s| s.id).collect::<Vec<_>>(), [8001]);
    assert_eq!(store.list_schedules(None, None, 10).await.unwrap().len(), 2);

    // Two processes open the same run: exactly one does.
    let (first, second) = (run(&s, 8101), run(&s, 8102));
    let (a, b) = tokio::join!(store.open_run(&first), store.open_run(&second));
    assert_eq!(
        [a.unwrap(), b.unwrap()].iter().filter(|won| **won).count(),
        1,
        "one run per (schedule, period)"
    );
    let after = store.get_schedule(8001).await.unwrap().unwrap();
    assert_eq!(after.next_period, Period::parse("2026-10").unwrap());
    let runs = store.schedule_runs(8001, 10).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].period, Period::parse("2026-09").unwrap());
    // A stale opener (it read 2026-09 as next) changes nothing.
    assert!(!store.open_run(&run(&s, 8103)).await.unwrap());
    let batch = runs[0].batch_id;
    let b = store.get_batch(batch).await.unwrap().unwrap();
    let r = b.run.as_ref().expect("a run's batch");
    assert_eq!(
        (r.schedule_id, r.delay, r.pass_from, r.pass_to),
        (8001, s.delay, None, None)
    );

    // Its first pass: claimed, the pass covers closes up to the claim.
    let now = Utc::now();
    let lease = now + Duration::seconds(30);
    let claimed = store
        .claim_expansion("p1", now, lease)
        .await
        .unwrap()
        .expect("the due run");
    assert_eq!(claimed.batch.id, batch);
    let r = claimed.batch.run.clone().unwrap();
    assert_eq!(
        r.pass_to.map(|t| t.timestamp_millis()),
        Some(now.timestamp_millis())
    );
    assert_eq!(
        r.pass_at, None,
        "a new pass starts with no later close seen"
    );
    // The pass ends with a merchant closing later: the run stays open, due then.
    let later = now + Duration::hours(20);
    let fresh = || LedgerId::from_i64(9999);
    // m_s2's September exists as a COMPLETED DRAFT (made before its close), m_s3's as a
    // FINAL: the run gives the DRAFT a new version and leaves the FINAL alone.
    for (id, merchant, stage) in [(8150, "m_s2", Stage::Draft), (8160, "m_s3", Stage::Final)] {
        let l = super::created(
            store.as_ref(),
            &super::new_ledger(id, merchant, "2026-09", None),
        )
        .await;
        let l = store.claim(l.id, now, lease).await.unwrap().unwrap();
        store
            .complete(l.id, 1, &super::file(1), stage, Timezone::UTC, now, &[])
            .await
            .unwrap()
            .unwrap();
    }
    // A manual batch of m_s2's September, finished with the DRAFT as its member.
    let manual = BatchId::from_i64(8170);
    let inserted = store
        .insert_batch(
            &NewBatch {
                id: manual,
                created_by: "ops".into(),
                merchants: Selection::Only(vec![MerchantId::parse("m_s2").unwrap()]),
                ledger_type: LedgerType::Statement,
                period: Period::parse("2026-09").unwrap(),
                formats: vec![Format::Csv],
                timezone: None,
                created_at: now,
            },
            None,
        )
        .await
        .unwrap();
    assert!(matches!(inserted, BatchInsert::Created(_)), "{inserted:?}");
    while store
        .claim_expansion("p9", now, lease)
        .await
        .unwrap()
        .expect("the manual batch is claimable")
        .batch
        .id
        != manual
    {}
    let same = [super::new_ledger(8171, "m_s2", "2026-09", None)];
    let joined = store
        .expand_batch(&ExpandStep {
            batch: manual,
            holder: "p9",
            ledgers: &same,
            fresh_id: &fresh,
            skipped: 0,
            skipped_ids: &[],
            cursor: None,
            done: true,
            next_pass_at: None,
            finalize_drafts: false,
            lease_until: lease,
            now,
        })
        .await
        .unwrap()
        .unwrap();
    assert!(
        joined.is_empty(),
        "a batch that is not a run leaves the DRAFT as it is"
    );
    let published = store
        .running_batches(None, 100)
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.batch.id == manual)
        .unwrap();
    let tally = store.tally_batch(manual).await.unwrap();
    assert_eq!(tally.status(false), BatchStatus::Completed);
    assert!(
        store
            .record_batch_progress(
                manual,
                published.seq,
                BatchStatus::Completed,
                &tally.counts,
                Some(now),
                now
            )
            .await
            .unwrap()
    );
    let ledgers = [
        crate::store::NewLedger {
            id: LedgerId::from_i64(8201),
            ..super::new_ledger(8201, "m_s1", "2026-09", None)
        },
        super::new_ledger(8202, "m_s2", "2026-09", None),
        super::new_ledger(8203, "m_s3", "2026-09", None),
    ];
    let step = ExpandStep {
        batch,
        holder: "p1",
        ledgers: &ledgers,
        fresh_id: &fresh,
        skipped: 1,
        skipped_ids: &[MerchantId::parse("m_gone").unwrap()],
        cursor: None,
        done: true,
        next_pass_at: Some(later),
        finalize_drafts: true,
        lease_until: lease,
        now,
    };
    let queued = store.expand_batch(&step).await.unwrap().unwrap();
    assert_eq!(
        queued
            .iter()
            .map(|l| (l.id.as_i64(), l.status, l.version))
            .collect::<Vec<_>>(),
        [(8201, Status::Pending, 1), (8150, Status::Pending, 2)],
        "made, and the DRAFT regenerated"
    );
    let tally = store.tally_batch(batch).await.unwrap();
    assert_eq!(
        (tally.counts.pending, tally.counts.existing),
        (1, 2),
        "existing members count as EXISTING whatever their status"
    );
    assert_eq!(
        store.get_batch(manual).await.unwrap().unwrap().status,
        BatchStatus::Running,
        "the manual batch holding the regenerated DRAFT runs again"
    );
    let final_one = store
        .get_ledger(LedgerId::from_i64(8160))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (final_one.status, final_one.version),
        (Status::Completed, 1)
    );
    let b = store.get_batch(batch).await.unwrap().unwrap();
    assert!(b.expanding, "merchants close later");
    let r = b.run.clone().unwrap();
    assert_eq!(
        r.pass_from.map(|t| t.timestamp_millis()),
        Some(now.timestamp_millis())
    );
    assert_eq!(r.pass_to, None);
    assert_eq!(b.skipped_ids, [MerchantId::parse("m_gone").unwrap()]);
    assert_eq!(
        store
            .next_pass_at(8001)
            .await
            .unwrap()
            .map(|t| t.timestamp_millis()),
        Some(later.timestamp_millis())
    );
    // Not due before then, even for another process; due after. (Other batches of the
    // contract may be claimable: only this one matters.)
    let claims_ours = async |at: chrono::DateTime<Utc>| {
        while let Some(e) = store
            .claim_expansion("p2", at, at + Duration::seconds(30))
            .await
            .unwrap()
        {
            if e.batch.id == batch {
                return true;
            }
        }
        false
    };
    assert!(!claims_ours(now).await);
    let then = later + Duration::seconds(1);
    // Paused: its runs do not grow, and it opens none.
    store
        .set_schedule_paused(8001, true, then)
        .await
        .unwrap()
        .unwrap();
    assert!(!claims_ours(then).await);
    assert!(
        store
            .active_schedules(None, 10)
            .await
            .unwrap()
            .iter()
            .all(|s| s.id != 8001)
    );
    let resumed = store
        .set_schedule_paused(8001, false, then)
        .await
        .unwrap()
        .unwrap();
    assert!(!resumed.paused);
    assert!(claims_ours(then).await, "due again once resumed");

    store
        .record_schedule_zones(8001, &[Timezone::parse("Asia/Tokyo").unwrap()])
        .await
        .unwrap();
    let zoned = store.get_schedule(8001).await.unwrap().unwrap();
    assert_eq!(zoned.zones, [Timezone::parse("Asia/Tokyo").unwrap()]);

    // Deleted: gone from lists, its runs stay and add no more members (they can end).
    assert!(store.delete_schedule(8002, Utc::now()).await.unwrap());
    assert!(!store.delete_schedule(8002, Utc::now()).await.unwrap());
    assert!(
        store
            .set_schedule_paused(8002, true, Utc::now())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.list_schedules(None, None, 10).await.unwrap().len(), 1);
    assert!(
        store
            .get_schedule(8002)
            .await
            .unwrap()
            .unwrap()
            .deleted_at
            .is_some()
    );
    assert_eq!(store.schedule_runs(8001, 10).await.unwrap().len(), 1);
    assert!(store.get_batch(batch).await.unwrap().unwrap().expanding);
    assert!(store.delete_schedule(8001, Utc::now()).await.unwrap());
    assert!(
        !store.get_batch(batch).await.unwrap().unwrap().expanding,
        "the run ends"
    );
}
