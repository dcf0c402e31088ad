//! The pipeline's unit tests: one rig (SQLite store, local object storage, a fixture
//! source, an in-process bus) runs real jobs.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::crypto::{Keyring, MasterKey};
use crate::domain::{Event, LedgerId, Status};
use crate::notify::{EventBus, InProcessBus, Notifier};
use crate::queue::db::DbQueue;
use crate::source::file::FileSource;
use crate::source::fixture::{self, FixtureSpec};
use crate::storage::{ObjectStorage, ObjectStoreStorage};
use crate::store::sqlite::SqliteStore;
use crate::store::{InsertOutcome, JobStore};
use crate::worker::{TaskOutcome, Worker, WorkerSettings};

struct Rig {
    worker: Worker,
    bus: Arc<InProcessBus>,
    _dir: tempfile::TempDir,
}

/// Storage whose first upload stops in `finish` until released: an attempt that passed
/// its last lease check and then stalled (a GC pause, a frozen VM).
struct StallFirstFinish {
    inner: Arc<dyn ObjectStorage>,
    armed: std::sync::atomic::AtomicBool,
    stalled: Arc<tokio::sync::Notify>,
    release: Arc<tokio::sync::Notify>,
}

struct StalledWriter {
    inner: Box<dyn crate::storage::ObjectWriter>,
    stalled: Arc<tokio::sync::Notify>,
    release: Arc<tokio::sync::Notify>,
}

#[async_trait::async_trait]
impl crate::storage::ObjectWriter for StalledWriter {
    async fn write(&mut self, bytes: bytes::Bytes) -> Result<(), crate::storage::StorageError> {
        self.inner.write(bytes).await
    }
    async fn finish(self: Box<Self>) -> Result<(), crate::storage::StorageError> {
        self.stalled.notify_one();
        self.release.notified().await;
        self.inner.finish().await
    }
    async fn abort(self: Box<Self>) {
        self.inner.abort().await
    }
}

#[async_trait::async_trait]
impl ObjectStorage for StallFirstFinish {
    async fn writer(
        &self,
        key: &str,
    ) -> Result<Box<dyn crate::storage::ObjectWriter>, crate::storage::StorageError> {
        let inner = self.inner.writer(key).await?;
        if self.armed.swap(false, Ordering::SeqCst) {
            return Ok(Box::new(StalledWriter {
                inner,
                stalled: self.stalled.clone(),
                release: self.release.clone(),
            }));
        }
        Ok(inner)
    }
    async fn read(
        &self,
        key: &str,
    ) -> Result<Box<dyn crate::storage::ObjectReader>, crate::storage::StorageError> {
        self.inner.read(key).await
    }
    async fn size(&self, key: &str) -> Result<Option<u64>, crate::storage::StorageError> {
        self.inner.size(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, crate::storage::StorageError> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), crate::storage::StorageError> {
        self.inner.delete(key).await
    }
    async fn ready(&self) -> Result<(), crate::storage::StorageError> {
        self.inner.ready().await
    }
}

async fn rig(entries: u64, job_timeout: Duration) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let source_dir = dir.path().join("source");
    std::fs::create_dir_all(&source_dir).unwrap();
    let spec =
        FixtureSpec::new("m_1", entries).spread_until("2026-06-01T00:00:00Z".parse().unwrap());
    fixture::write_ndjson(&source_dir.join("m_1.ndjson"), &spec).unwrap();
    let store = SqliteStore::open(&dir.path().join("db.sqlite"))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let store: Arc<dyn JobStore> = Arc::new(store);
    let storage: Arc<dyn ObjectStorage> =
        Arc::new(ObjectStoreStorage::local(&dir.path().join("objects")).unwrap());
    let bus = Arc::new(InProcessBus::default());
    let key = MasterKey::from_base64(&crate::crypto::generate_key_base64()).unwrap();
    let worker = Worker {
        store: store.clone(),
        queue: Arc::new(DbQueue::new(store.clone())),
        storage,
        source: Arc::new(FileSource::new(source_dir)),
        notifier: Notifier::new(bus.clone() as Arc<dyn EventBus>),
        keys: {
            let local = Keyring::new(key, Vec::new());
            crate::keys::Keys::new(crate::keys::Root::Local(local), store.clone())
        },
        signer: Arc::new(crate::manifest::ManifestSigner::new(
            &p256::SecretKey::random(&mut rand::rngs::OsRng),
            "ledger",
            &[],
        )),
        settings: WorkerSettings {
            job_timeout,
            sweep_interval: Duration::from_secs(60),
            max_attempts: 5,
            concurrency: 1,
            shutdown_timeout: Duration::from_secs(1),
            job_deadline: Duration::from_secs(600),
        },
    };
    Rig {
        worker,
        bus,
        _dir: dir,
    }
}

impl Rig {
    /// Stores `new`, PENDING.
    async fn insert(&self, new: &crate::store::NewLedger) -> LedgerId {
        assert!(matches!(
            self.worker.store.insert_ledger(new, None).await.unwrap(),
            InsertOutcome::Created(_)
        ));
        new.id
    }

    /// Stores a PENDING statement of `m_1` for `period`.
    async fn pending(&self, id: i64, period: &str) -> LedgerId {
        self.insert(&crate::store::contract::new_ledger(id, "m_1", period, None))
            .await
    }

    /// Claims and runs job `id` once, on this task.
    async fn run(&self, id: LedgerId) -> TaskOutcome {
        self.worker
            .try_execute_task(id, &CancellationToken::new())
            .await
            .unwrap()
    }

    /// Claims and runs job `id` once, on a task of its own.
    fn spawn(&self, id: LedgerId) -> tokio::task::JoinHandle<TaskOutcome> {
        let worker = self.worker.clone();
        tokio::spawn(async move {
            worker
                .try_execute_task(id, &CancellationToken::new())
                .await
                .unwrap()
        })
    }
}

/// The ledger a run left in a terminal state.
fn ran(outcome: TaskOutcome) -> crate::domain::Ledger {
    match outcome {
        TaskOutcome::Ran(Some(done)) => *done,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_job_emits_status_and_monotonic_progress_per_phase() {
    let rig = rig(50_000, Duration::from_secs(60)).await;
    let mut events = rig.bus.subscribe();
    let id = rig.pending(1, "2026").await;
    let done = ran(rig.run(id).await);
    assert_eq!(done.status, Status::Completed);
    // A duplicate message for a job that is no longer PENDING is dropped.
    assert_eq!(rig.run(id).await, TaskOutcome::Dropped);

    let mut statuses = Vec::new();
    let mut phases: Vec<(String, u64)> = Vec::new();
    while let Ok(event) = events.try_recv() {
        match event {
            Event::Status(s) => statuses.push(s.status),
            Event::Progress(p) => phases.push((p.phase, p.rows_done)),
            Event::BatchProgress(b) => panic!("a ledger's pipeline published {b:?}"),
        }
    }
    assert_eq!(statuses, [Status::Processing, Status::Completed]);
    let names: Vec<&str> = phases.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(names.first(), Some(&"FETCH"));
    assert_eq!(names.last(), Some(&"UPLOAD"));
    assert!(names.contains(&"GENERATE"));
    let generate: Vec<u64> = phases
        .iter()
        .filter(|(p, _)| p == "GENERATE")
        .map(|(_, n)| *n)
        .collect();
    assert!(
        generate.windows(2).all(|w| w[0] <= w[1]),
        "rowsDone never goes down: {generate:?}"
    );
    assert_eq!(phases.last().unwrap().1, 50_000);
}

#[tokio::test]
async fn an_attempt_that_loses_its_lease_stops_and_writes_nothing() {
    let rig = rig(400_000, Duration::from_millis(300)).await;
    let store = rig.worker.store.clone();
    let id = rig.pending(2, "2026").await;
    let first = rig.spawn(id);
    // Wait until attempt 1 runs, then let another worker take the job over (as the sweep
    // would after a long pause): attempt 1 must notice at its next renewal and stop.
    loop {
        let l = store.get_ledger(id).await.unwrap().unwrap();
        if l.status == Status::Processing {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    store.release(id, 1, Utc::now()).await.unwrap().unwrap();
    let now = Utc::now();
    let second = store
        .claim(id, now, now + chrono::Duration::seconds(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.attempt_count, 2);
    assert_eq!(first.await.unwrap(), TaskOutcome::Ran(None));
    let l = store.get_ledger(id).await.unwrap().unwrap();
    assert_eq!(
        (l.status, l.attempt_count),
        (Status::Processing, 2),
        "attempt 1 wrote nothing"
    );
    assert!(store.get_file(id, 1).await.unwrap().is_none());
}

#[tokio::test]
async fn a_stalled_attempt_that_resumes_after_a_newer_one_completed_leaves_its_file_alone() {
    let mut rig = rig(2_000, Duration::from_secs(60)).await;
    let gate = Arc::new(StallFirstFinish {
        inner: rig.worker.storage.clone(),
        armed: std::sync::atomic::AtomicBool::new(true),
        stalled: Arc::new(tokio::sync::Notify::new()),
        release: Arc::new(tokio::sync::Notify::new()),
    });
    rig.worker.storage = gate.clone();
    let store = rig.worker.store.clone();
    let id = rig.pending(4, "2026").await;
    let first = rig.spawn(id);
    // Attempt 1 passed its last lease check and stalls before its upload is finished.
    tokio::time::timeout(Duration::from_secs(30), gate.stalled.notified())
        .await
        .expect("attempt 1 reached the end of its upload");
    // Meanwhile the entries change (a late correction upstream), the lease is taken over
    // and attempt 2 completes with the new entries.
    let source = rig._dir.path().join("source/m_1.ndjson");
    let spec = FixtureSpec::new("m_1", 2_500).spread_until("2026-06-01T00:00:00Z".parse().unwrap());
    fixture::write_ndjson(&source, &spec).unwrap();
    store.release(id, 1, Utc::now()).await.unwrap().unwrap();
    let done = ran(rig.run(id).await);
    assert_eq!((done.status, done.attempt_count), (Status::Completed, 2));
    // Attempt 1 wakes up and finishes its upload; its completion is refused.
    gate.release.notify_one();
    assert_eq!(first.await.unwrap(), TaskOutcome::Ran(None));

    // The recorded file is attempt 2's, intact: it decrypts to what was recorded.
    let file = store.get_file(id, 1).await.unwrap().expect("a file");
    let mut object = rig.worker.storage.read(&file.object_key).await.unwrap();
    let sealed = object.read_to_end().await.unwrap();
    let binding = crate::crypto::Binding {
        ledger_id: id.as_i64(),
        version: 1,
    };
    let key = rig
        .worker
        .keys
        .opening(
            &crate::domain::MerchantId::parse("m_1").unwrap(),
            file.key_id.as_deref().unwrap(),
        )
        .await
        .unwrap();
    let plain = crate::crypto::decrypt_to_vec(&key, binding, &sealed).unwrap();
    assert_eq!(
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&plain)),
        file.info.sha256,
        "the object recorded by attempt 2 was replaced"
    );
    assert!(
        file.object_key.ends_with("/v1.a2.csv.enc"),
        "{}",
        file.object_key
    );
    // Attempt 1's object sits beside it, unrecorded.
    let keys = rig.worker.storage.list("ledgers/").await.unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
}

#[tokio::test]
async fn a_job_past_its_deadline_is_rejected_retryably_however_its_lease_is_renewed() {
    let mut rig = rig(400_000, Duration::from_millis(300)).await;
    // The lease (renewed every 100 ms) would keep it alive; the deadline does not.
    rig.worker.settings.job_deadline = Duration::from_millis(400);
    let store = rig.worker.store.clone();
    let id = rig.pending(5, "2026").await;
    let started = std::time::Instant::now();
    let done = ran(rig.run(id).await);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(done.status, Status::Rejected);
    let reason = done.failure_reason.expect("a failure reason");
    assert_eq!(reason.error_code, "JOB_EXECUTION_FAILED");
    assert!(reason.retryable);
    assert!(
        reason.message.starts_with("the job ran past its deadline"),
        "{}",
        reason.message
    );
    assert!(store.get_file(id, 1).await.unwrap().is_none());
}

#[tokio::test]
async fn the_self_check_rejects_a_renderer_that_drops_a_row_in_every_format() {
    use crate::domain::{Format, LedgerType};
    let rig = rig(2_000, Duration::from_secs(60)).await;
    let store = rig.worker.store.clone();
    let mut n = 10;
    for ledger_type in [LedgerType::Statement, LedgerType::Summary] {
        for format in [Format::Csv, Format::Xlsx, Format::Pdf] {
            n += 1;
            let mut new = crate::store::contract::new_ledger(n, "m_1", "2026", None);
            new.ledger_type = ledger_type;
            new.format = format;
            let id = rig.insert(&new).await;
            super::faulty::arm(id);
            let outcome = rig.run(id).await;
            let TaskOutcome::Ran(Some(done)) = outcome else {
                panic!("{ledger_type} {format}: {outcome:?}")
            };
            assert_eq!(done.status, Status::Rejected, "{ledger_type} {format}");
            let reason = done.failure_reason.expect("a failure reason");
            assert!(
                reason.message.contains("self-check failed"),
                "{ledger_type} {format}: {}",
                reason.message
            );
            assert!(
                store.get_file(new.id, 1).await.unwrap().is_none(),
                "{ledger_type} {format}: no file recorded"
            );
        }
    }
    assert!(
        n >= 12,
        "at least CSV statements and summaries were checked"
    );
}

/// The timeline's entries as `status` or `phase` names, oldest first.
async fn steps(store: &dyn JobStore, id: LedgerId) -> Vec<String> {
    store
        .list_events(id)
        .await
        .unwrap()
        .iter()
        .map(|e| e.status.map(|s| s.to_string()).or(e.phase.clone()).unwrap())
        .collect()
}

#[tokio::test]
async fn a_short_job_records_its_phases_with_its_completion_and_a_failed_one_with_its_failure() {
    let rig = rig(200, Duration::from_secs(60)).await;
    let store = rig.worker.store.as_ref();
    let id = rig.pending(11, "2026").await;
    assert_eq!(ran(rig.run(id).await).status, Status::Completed);
    assert_eq!(
        steps(store, id).await,
        [
            "PENDING",
            "PROCESSING",
            "FETCH_START",
            "GENERATE_START",
            "FETCH_DONE",
            "GENERATE_DONE",
            "UPLOAD_DONE",
            "COMPLETED"
        ]
    );
    let events = store.list_events(id).await.unwrap();
    assert!(events.windows(2).all(|w| w[0].at <= w[1].at), "{events:?}");
    assert_eq!(events[4].detail.as_deref(), Some("200 entries"));

    // A merchant the source does not have: rejected after FETCH_START, which is recorded.
    let missing = rig
        .insert(&crate::store::contract::new_ledger(
            12, "m_nobody", "2026", None,
        ))
        .await;
    assert_eq!(ran(rig.run(missing).await).status, Status::Rejected);
    assert_eq!(
        steps(store, missing).await,
        ["PENDING", "PROCESSING", "FETCH_START", "REJECTED"]
    );
}

/// A merchant shredded while a job sealed its file: the completion is refused, the object
/// no key opens any more is removed and the job is given back; run again, it seals under
/// the merchant's next key (the worker had reused the destroyed key's row).
#[tokio::test]
async fn a_job_sealed_with_a_key_shredded_meanwhile_runs_again_under_the_next_key() {
    let rig = rig(1_000, Duration::from_secs(60)).await;
    let store = rig.worker.store.clone();
    let merchant = crate::domain::MerchantId::parse("m_1").unwrap();
    let first = ran(rig.run(rig.pending(1, "2026-01").await).await);
    let destroyed = store.get_file(first.id, 1).await.unwrap().unwrap().key_id;
    assert!(destroyed.is_some());
    store
        .shred_merchant(&merchant, "test", Utc::now())
        .await
        .unwrap();

    let id = rig.pending(2, "2026-02").await;
    assert_eq!(rig.run(id).await, TaskOutcome::Ran(None), "given back");
    let l = store.get_ledger(id).await.unwrap().unwrap();
    assert_eq!((l.status, l.attempt_count), (Status::Pending, 1));
    assert!(store.get_file(id, 1).await.unwrap().is_none());
    let prefix = format!("ledgers/m_1/{id}/");
    assert!(
        rig.worker.storage.list(&prefix).await.unwrap().is_empty(),
        "the refused attempt's object is removed"
    );

    let done = ran(rig.run(id).await);
    assert_eq!((done.status, done.attempt_count), (Status::Completed, 2));
    let file = store.get_file(id, 1).await.unwrap().unwrap();
    assert!(file.info.shredded_at.is_none());
    assert!(
        file.key_id.is_some() && file.key_id != destroyed,
        "{file:?}"
    );
    assert_eq!(rig.worker.storage.list(&prefix).await.unwrap().len(), 1);
}
