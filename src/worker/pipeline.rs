//! One attempt of one job: FETCH → GENERATE → ENCRYPT+UPLOAD → self-check → COMPLETE.
//! Fetch, render, encrypt and upload run concurrently as a stream, so memory is bounded by
//! channel sizes, never by the ledger's size. Every store write carries the attempt number;
//! a worker that lost its lease stops and writes nothing more.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Worker;
use super::sink::{ChannelWriter, HashingWriter};
use crate::crypto::{Binding, EncryptingWriter};
use crate::domain::ledger::stage_at;
use crate::domain::{
    ControlTotals, Event, FailureReason, FileInfo, Ledger, ProgressEvent, Timezone,
};
use crate::queue::JobMessage;
use crate::render::{self, DocumentHeader};
use crate::source::{EntryBatches, SourceError, Window};
use crate::store::CompletedFile;

/// Ciphertext chunks buffered between the encryptor and the uploader.
const UPLOAD_QUEUE: usize = 8;
/// Progress events at most this often while a phase runs (and at least once a second).
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Why an attempt stopped without completing. `Display` is the whole story, for the log;
/// [`JobError::reason`] is what the ledger's owner sees, which names no internal host, port,
/// bucket, path or URL.
#[derive(Debug, thiserror::Error)]
enum JobError {
    /// The source data is bad or the source is unreachable.
    #[error("{0}")]
    Fetch(SourceError),
    /// A step of the service failed: `public` says which, in words for the ledger's owner;
    /// `detail` (the backend's error, which may name hosts, buckets and keys) goes to the log.
    #[error("{public}: {detail}")]
    Execution {
        /// What failed, for the user.
        public: &'static str,
        /// Why, for the operator.
        detail: String,
    },
    /// The rendered document's control totals differ from the source's: the message shows
    /// totals only, which are the owner's own data.
    #[error("{0}")]
    SelfCheck(String),
    /// The document cannot be made in the requested format (too large): not retryable.
    #[error("{0}")]
    Unrenderable(String),
    /// The lease was lost: another attempt owns the job now.
    #[error("lease lost")]
    LeaseLost,
    /// Shutdown: give the job back.
    #[error("stopped by shutdown")]
    Stopped,
}

impl JobError {
    fn execution(public: &'static str, detail: impl std::fmt::Display) -> Self {
        JobError::Execution {
            public,
            detail: detail.to_string(),
        }
    }

    /// The failure as the ledger's owner sees it (`failureReason`, the timeline, events).
    fn reason(&self, ledger: crate::domain::LedgerId) -> FailureReason {
        let (code, retryable) = match self {
            JobError::Fetch(SourceError::Unavailable(_)) => ("FETCH_DATA_ERROR", true),
            JobError::Fetch(_) => ("FETCH_DATA_ERROR", false),
            JobError::Unrenderable(_) => ("JOB_EXECUTION_FAILED", false),
            _ => ("JOB_EXECUTION_FAILED", true),
        };
        let message = match self {
            // Backend errors name hosts, ports, buckets, files and URLs: the log has them.
            JobError::Fetch(SourceError::Unavailable(_)) => format!(
                "the source of entries could not be read; retry the ledger later \
                 (ledger {ledger}: the service log has the details)"
            ),
            JobError::Execution { public, .. } => format!(
                "{public}; retry the ledger (ledger {ledger}: the service log has the details)"
            ),
            // Data errors (the field path of the bad entry), the self-check's totals and the
            // renderer's limits are about the owner's own data.
            other => other.to_string(),
        };
        FailureReason {
            error_code: code.into(),
            message,
            retryable,
            at: Utc::now(),
        }
    }
}

/// The span fields every phase line carries.
macro_rules! phase_log {
    (warn $ledger:expr, $msg:literal $(, $k:ident = $v:expr)*) => {
        tracing::warn!(
            ledgerId = %$ledger.id, merchantId = %$ledger.merchant_id, type = %$ledger.ledger_type,
            period = %$ledger.period, attemptCount = $ledger.attempt_count $(, $k = $v)*, $msg
        )
    };
    ($ledger:expr, $msg:literal $(, $k:ident = $v:expr)*) => {
        tracing::info!(
            ledgerId = %$ledger.id, merchantId = %$ledger.merchant_id, type = %$ledger.ledger_type,
            period = %$ledger.period, attemptCount = $ledger.attempt_count $(, $k = $v)*, $msg
        )
    };
}

/// Shared between the async side and the blocking renderer.
struct Progress {
    rows: AtomicU64,
    lost: AtomicBool,
    /// Set when the job ran past its deadline and was cancelled for it.
    overdue: AtomicBool,
}

/// Runs the claimed `ledger` to a terminal state; returns it, or `None` when the attempt
/// was fenced off or released.
pub async fn run(worker: &Worker, ledger: Ledger, stop: &CancellationToken) -> Option<Ledger> {
    let started = Instant::now();
    let attempt = ledger.attempt_count;
    let job = stop.child_token();
    let progress = Arc::new(Progress {
        rows: AtomicU64::new(0),
        lost: AtomicBool::new(false),
        overdue: AtomicBool::new(false),
    });
    let lease = tokio::spawn(keep_lease(
        worker.clone(),
        ledger.clone(),
        job.clone(),
        progress.clone(),
    ));
    // The lease is renewed as long as the job makes progress, so without a deadline an
    // upstream that answers slowly forever would hold the job PROCESSING forever.
    let deadline = worker.settings.job_deadline;
    let overdue = {
        let (job, progress) = (job.clone(), progress.clone());
        tokio::spawn(async move {
            tokio::time::sleep(deadline).await;
            progress.overdue.store(true, Ordering::Relaxed);
            job.cancel();
        })
    };
    let result = execute(worker, &ledger, &job, &progress).await;
    lease.abort();
    overdue.abort();
    let result = match result {
        Err(_) if progress.lost.load(Ordering::Relaxed) => Err(JobError::LeaseLost),
        Err(_) if stop.is_cancelled() => Err(JobError::Stopped),
        // A failure of the data or of the document itself keeps its own reason (and its
        // field path), even if the deadline passed while it was being reported.
        Err(e @ (JobError::Fetch(SourceError::Invalid(_)) | JobError::Unrenderable(_))) => Err(e),
        Err(_) if progress.overdue.load(Ordering::Relaxed) => Err(JobError::execution(
            "the job ran past its deadline",
            format_args!(
                "cancelled after {} ms (APP_ENV_JOB_DEADLINE_MS)",
                deadline.as_millis()
            ),
        )),
        other => other,
    };
    let store = &worker.store;
    match result {
        Ok(done) => {
            metrics::counter!("ledger_jobs_total", "status" => "COMPLETED", "error_code" => "")
                .increment(1);
            metrics::histogram!("ledger_job_phase_duration_seconds", "phase" => "TOTAL")
                .record(started.elapsed().as_secs_f64());
            phase_log!(
                done,
                "COMPLETED",
                version = done.version,
                stage = done.stage.as_str(),
                durationMs = started.elapsed().as_millis() as u64
            );
            worker.notifier.status(&done).await;
            Some(done)
        }
        Err(JobError::LeaseLost) => {
            tracing::warn!(ledgerId = %ledger.id, attemptCount = attempt,
                "lease lost: another attempt owns the job; this attempt writes nothing more");
            None
        }
        Err(JobError::Stopped) => match store.release(ledger.id, attempt, Utc::now()).await {
            Ok(Some(released)) => {
                phase_log!(ledger, "RELEASED (shutdown)");
                worker.notifier.status(&released).await;
                // Back on the queue at once, so another worker takes it now rather than at
                // the sweep after the job timeout (this process acknowledges its message).
                let message = JobMessage {
                    ledger_id: released.id,
                    merchant_id: released.merchant_id.clone(),
                    redelivery: false,
                };
                if let Err(e) = worker.queue.enqueue(&message).await {
                    tracing::error!(ledgerId = %released.id, error = %e,
                        "re-enqueueing a released job failed; the sweep will");
                }
                None
            }
            Ok(None) => None,
            Err(e) => {
                tracing::error!(ledgerId = %ledger.id, error = %e, "releasing the job failed; the sweep will");
                None
            }
        },
        Err(err) => {
            let reason = err.reason(ledger.id);
            let detail = err.to_string();
            metrics::counter!("ledger_jobs_total", "status" => "REJECTED",
                "error_code" => reason.error_code.clone())
            .increment(1);
            // A warning: an operator filtering on level sees every rejected ledger.
            phase_log!(
                warn ledger,
                "FAILED",
                errorCode = reason.error_code.as_str(),
                error = detail.as_str()
            );
            match store.fail(ledger.id, attempt, &reason).await {
                Ok(Some(failed)) => {
                    worker.notifier.status(&failed).await;
                    Some(failed)
                }
                Ok(None) => None,
                Err(e) => {
                    tracing::error!(ledgerId = %ledger.id, error = %e,
                        "recording the failure failed; the sweep will retry the job");
                    None
                }
            }
        }
    }
}

/// Renews the lease every third of the timeout; cancels the job when the lease is lost.
async fn keep_lease(
    worker: Worker,
    ledger: Ledger,
    job: CancellationToken,
    progress: Arc<Progress>,
) {
    let timeout = worker.settings.job_timeout;
    let mut tick = tokio::time::interval(timeout / 3);
    tick.tick().await;
    loop {
        tick.tick().await;
        let until = Utc::now() + chrono::Duration::from_std(timeout).unwrap_or_default();
        match worker
            .store
            .renew_lease(ledger.id, ledger.attempt_count, until)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                progress.lost.store(true, Ordering::Relaxed);
                job.cancel();
                return;
            }
            // A store hiccup is not a lost lease; the next tick tries again.
            Err(e) => tracing::warn!(ledgerId = %ledger.id, error = %e, "lease renewal failed"),
        }
    }
}

async fn phase(
    worker: &Worker,
    ledger: &Ledger,
    name: &str,
    detail: Option<String>,
) -> Result<(), JobError> {
    match worker
        .store
        .record_phase(
            ledger.id,
            ledger.attempt_count,
            name,
            detail.as_deref(),
            Utc::now(),
        )
        .await
    {
        Ok(true) => Ok(()),
        Ok(false) => Err(JobError::LeaseLost),
        Err(e) => Err(JobError::execution(
            "the job store did not answer",
            format_args!("recording phase {name}: {e}"),
        )),
    }
}

async fn progress_event(
    worker: &Worker,
    ledger: &Ledger,
    phase: &str,
    rows_done: u64,
    rows_total: Option<u64>,
) {
    let event = Event::Progress(ProgressEvent {
        ledger_id: ledger.id,
        merchant_id: ledger.merchant_id.clone(),
        phase: phase.into(),
        rows_done,
        rows_total,
        at: Utc::now(),
    });
    worker.notifier.publish(&event).await;
}

/// What the blocking render thread hands back.
struct Rendered {
    source: ControlTotals,
    written: ControlTotals,
    sha256: String,
    size: u64,
}

async fn execute(
    worker: &Worker,
    ledger: &Ledger,
    job: &CancellationToken,
    progress: &Arc<Progress>,
) -> Result<Ledger, JobError> {
    // FETCH
    let fetch_started = Instant::now();
    phase_log!(ledger, "FETCH_START");
    phase(worker, ledger, "FETCH_START", None).await?;
    progress_event(worker, ledger, "FETCH", 0, None).await;
    let merchant = worker
        .source
        .merchant(&ledger.merchant_id)
        .await
        .map_err(JobError::Fetch)?;
    let timezone: Timezone = ledger
        .requested_timezone
        .or(merchant.timezone)
        .unwrap_or(Timezone::UTC);
    let (from, to) = ledger.period.bounds(timezone);
    let stream = worker
        .source
        .entries(&ledger.merchant_id, Window { from, to })
        .await
        .map_err(JobError::Fetch)?;
    let now = Utc::now();
    let header = DocumentHeader {
        ledger_id: ledger.id,
        merchant,
        ledger_type: ledger.ledger_type,
        period: ledger.period,
        timezone,
        bounds: (from, to),
        stage: stage_at(&ledger.period, timezone, now),
        version: ledger.version,
        generated_at: now,
        opening_balances: stream.opening_balances,
    };

    // GENERATE + ENCRYPT + UPLOAD, streaming
    phase_log!(ledger, "GENERATE_START", timezone = timezone.name());
    phase(
        worker,
        ledger,
        "GENERATE_START",
        Some(format!("timezone {timezone}")),
    )
    .await?;
    progress_event(worker, ledger, "GENERATE", 0, None).await;
    let generate_started = Instant::now();
    let key = ledger.object_key(ledger.version, ledger.attempt_count);
    let mut writer = worker.storage.writer(&key).await.map_err(|e| {
        JobError::execution(
            "storing the document failed",
            format_args!("starting the upload of {key}: {e}"),
        )
    })?;
    let (tx, mut rx) = mpsc::channel::<Bytes>(UPLOAD_QUEUE);
    let render_task = {
        let keyring = worker.keyring.clone();
        let binding = Binding {
            ledger_id: ledger.id.as_i64(),
            version: ledger.version,
        };
        let format = ledger.format;
        let header = header.clone();
        let progress = progress.clone();
        let job = job.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            render_blocking(
                &header,
                format,
                &keyring,
                binding,
                stream.entries,
                tx,
                &progress,
                &job,
            )
        })
    };
    // Upload what the renderer produces while it runs; report progress meanwhile.
    let mut last_report = Instant::now();
    let mut last_rows = 0;
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    let upload: Result<(), JobError> = loop {
        tokio::select! {
            chunk = rx.recv() => match chunk {
                Some(bytes) => {
                    if let Err(e) = writer.write(bytes).await {
                        break Err(JobError::execution("storing the document failed", format_args!("uploading {key}: {e}")));
                    }
                }
                None => break Ok(()),
            },
            _ = tick.tick() => {
                let rows = progress.rows.load(Ordering::Relaxed);
                if rows != last_rows || last_report.elapsed() >= Duration::from_secs(1) {
                    progress_event(worker, ledger, "GENERATE", rows, None).await;
                    last_rows = rows;
                    last_report = Instant::now();
                }
            }
        }
    };
    drop(rx);
    let rendered = render_task.await.unwrap_or_else(|e| {
        Err(JobError::execution(
            "rendering the document failed",
            format_args!("the renderer crashed: {e}"),
        ))
    });
    let rendered = match (upload, rendered) {
        (Ok(()), Ok(r)) => r,
        (Err(e), _) | (Ok(()), Err(e)) => {
            writer.abort().await;
            return Err(e);
        }
    };
    metrics::histogram!("ledger_job_phase_duration_seconds", "phase" => "FETCH")
        .record(fetch_started.elapsed().as_secs_f64());
    metrics::histogram!("ledger_job_phase_duration_seconds", "phase" => "GENERATE")
        .record(generate_started.elapsed().as_secs_f64());
    let rows = rendered.source.entry_count;
    let checked: Result<(), JobError> = async {
        phase_log!(ledger, "FETCH_DONE", entries = rows);
        phase(
            worker,
            ledger,
            "FETCH_DONE",
            Some(format!("{rows} entries")),
        )
        .await?;
        phase_log!(
            ledger,
            "GENERATE_DONE",
            entries = rows,
            sizeBytes = rendered.size
        );
        phase(
            worker,
            ledger,
            "GENERATE_DONE",
            Some(format!("{} bytes", rendered.size)),
        )
        .await?;
        // Self-check before anything becomes visible: a wrong document is never stored.
        match rendered.source.difference(&rendered.written) {
            Some(diff) => Err(JobError::SelfCheck(format!(
                "self-check failed: rendered totals differ from the source ({diff})"
            ))),
            None => Ok(()),
        }
    }
    .await;
    if let Err(e) = checked {
        // Nothing of this attempt becomes visible: the upload is abandoned, not completed.
        writer.abort().await;
        return Err(e);
    }
    // Last fenced check before the upload is finished: an attempt that lost its lease (a
    // long pause) stops here. One that pauses right after it still cannot hurt: it writes
    // its own object (the key names the attempt) and its completion is refused.
    let until =
        Utc::now() + chrono::Duration::from_std(worker.settings.job_timeout).unwrap_or_default();
    match worker
        .store
        .renew_lease(ledger.id, ledger.attempt_count, until)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            writer.abort().await;
            return Err(JobError::LeaseLost);
        }
        Err(e) => {
            writer.abort().await;
            return Err(JobError::execution(
                "the job store did not answer",
                format_args!("renewing the lease: {e}"),
            ));
        }
    }
    progress_event(worker, ledger, "UPLOAD", rows, Some(rows)).await;
    let upload_started = Instant::now();
    writer.finish().await.map_err(|e| {
        JobError::execution(
            "storing the document failed",
            format_args!("completing the upload of {key}: {e}"),
        )
    })?;
    metrics::histogram!("ledger_job_phase_duration_seconds", "phase" => "UPLOAD")
        .record(upload_started.elapsed().as_secs_f64());
    phase_log!(ledger, "UPLOAD_DONE", objectKey = key.as_str());
    phase(worker, ledger, "UPLOAD_DONE", None).await?;

    // COMPLETE, fenced on the attempt.
    let file = CompletedFile {
        info: FileInfo {
            version: ledger.version,
            content_type: ledger.format.content_type().into(),
            size_bytes: rendered.size,
            sha256: rendered.sha256,
            file_name: ledger.file_name(ledger.version),
        },
        object_key: key,
    };
    match worker
        .store
        .complete(
            ledger.id,
            ledger.attempt_count,
            &file,
            header.stage,
            timezone,
            Utc::now(),
        )
        .await
    {
        Ok(Some(done)) => Ok(done),
        Ok(None) => Err(JobError::LeaseLost),
        Err(e) => Err(JobError::execution(
            "the job store did not answer",
            format_args!("recording completion: {e}"),
        )),
    }
}

#[allow(clippy::too_many_arguments)]
fn render_blocking(
    header: &DocumentHeader,
    format: crate::domain::Format,
    keyring: &crate::crypto::Keyring,
    binding: Binding,
    mut entries: EntryBatches,
    tx: mpsc::Sender<Bytes>,
    progress: &Progress,
    job: &CancellationToken,
) -> Result<Rendered, JobError> {
    let exec = |e: &dyn std::fmt::Display| JobError::execution("rendering the document failed", e);
    let encrypting =
        EncryptingWriter::new(ChannelWriter::new(tx), keyring, binding).map_err(|e| exec(&e))?;
    let renderer =
        render::renderer(header, format, HashingWriter::new(encrypting)).map_err(|e| exec(&e))?;
    #[cfg(test)]
    let renderer = faulty::wrap(header.ledger_id, renderer);
    let mut renderer = renderer;
    let mut source = ControlTotals::with_opening(&header.opening_balances);
    let handle = tokio::runtime::Handle::current();
    while let Some(batch) = handle.block_on(entries.next()) {
        if job.is_cancelled() {
            return Err(JobError::Stopped);
        }
        let batch = match batch {
            Ok(b) => b,
            Err(e) => return Err(JobError::Fetch(e)),
        };
        for entry in &batch {
            source.add(entry.currency, entry.amount);
            renderer.entry(entry).map_err(|e| match e {
                render::RenderError::TooLarge(m) => JobError::Unrenderable(m),
                other => exec(&other),
            })?;
        }
        progress
            .rows
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
    }
    let (written, hashing) = renderer.finish().map_err(|e| exec(&e))?;
    let (sha256, size, encrypting) = hashing.finish();
    let mut channel = encrypting.finish().map_err(|e| exec(&e))?;
    std::io::Write::flush(&mut channel).map_err(|e| exec(&e))?;
    Ok(Rendered {
        source,
        written,
        sha256,
        size,
    })
}

/// A renderer that loses a row, for the self-check's test: armed per ledger id, so tests
/// running in parallel never see it.
#[cfg(test)]
pub(crate) mod faulty {
    use std::collections::HashSet;
    use std::io::Write;
    use std::sync::Mutex;

    use crate::domain::{ControlTotals, Entry, LedgerId};
    use crate::render::{RenderError, Renderer};

    static ARMED: Mutex<Option<HashSet<LedgerId>>> = Mutex::new(None);

    /// The next render of `id` silently skips its second entry.
    pub fn arm(id: LedgerId) {
        ARMED
            .lock()
            .unwrap()
            .get_or_insert_with(HashSet::new)
            .insert(id);
    }

    pub fn wrap<W: Write + Send + 'static>(
        id: LedgerId,
        inner: Box<dyn Renderer<W>>,
    ) -> Box<dyn Renderer<W>> {
        let armed = ARMED
            .lock()
            .unwrap()
            .as_mut()
            .is_some_and(|set| set.remove(&id));
        if armed {
            Box::new(DropsARow { inner, seen: 0 })
        } else {
            inner
        }
    }

    struct DropsARow<W> {
        inner: Box<dyn Renderer<W>>,
        seen: u64,
    }

    impl<W: Write + Send> Renderer<W> for DropsARow<W> {
        fn entry(&mut self, entry: &Entry) -> Result<(), RenderError> {
            self.seen += 1;
            if self.seen == 2 {
                return Ok(());
            }
            self.inner.entry(entry)
        }

        fn finish(self: Box<Self>) -> Result<(ControlTotals, W), RenderError> {
            self.inner.finish()
        }
    }
}

#[cfg(test)]
mod tests {
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
        ) -> Result<crate::storage::ByteStream, crate::storage::StorageError> {
            self.inner.read(key).await
        }
        async fn size(&self, key: &str) -> Result<Option<u64>, crate::storage::StorageError> {
            self.inner.size(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<String>, crate::storage::StorageError> {
            self.inner.list(prefix).await
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
            keyring: Keyring::new(key, Vec::new()),
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

    async fn pending(store: &dyn JobStore, id: i64, period: &str) -> LedgerId {
        let new = crate::store::contract::new_ledger(id, "m_1", period, None);
        assert!(matches!(
            store.insert_ledger(&new, None).await.unwrap(),
            InsertOutcome::Created(_)
        ));
        new.id
    }

    #[tokio::test]
    async fn a_job_emits_status_and_monotonic_progress_per_phase() {
        let rig = rig(50_000, Duration::from_secs(60)).await;
        let mut events = rig.bus.subscribe();
        let id = pending(&*rig.worker.store, 1, "2026").await;
        let outcome = rig
            .worker
            .try_execute_task(id, &CancellationToken::new())
            .await
            .unwrap();
        let TaskOutcome::Ran(Some(done)) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(done.status, Status::Completed);
        // A duplicate message for a job that is no longer PENDING is dropped.
        let again = rig
            .worker
            .try_execute_task(id, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(again, TaskOutcome::Dropped);

        let mut statuses = Vec::new();
        let mut phases: Vec<(String, u64)> = Vec::new();
        while let Ok(event) = events.try_recv() {
            match event {
                Event::Status(s) => statuses.push(s.status),
                Event::Progress(p) => phases.push((p.phase, p.rows_done)),
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
        let id = pending(&*store, 2, "2026").await;
        let worker = rig.worker.clone();
        let first = tokio::spawn(async move {
            worker
                .try_execute_task(id, &CancellationToken::new())
                .await
                .unwrap()
        });
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
        let id = pending(&*store, 4, "2026").await;
        let worker = rig.worker.clone();
        let first = tokio::spawn(async move {
            worker
                .try_execute_task(id, &CancellationToken::new())
                .await
                .unwrap()
        });
        // Attempt 1 passed its last lease check and stalls before its upload is finished.
        tokio::time::timeout(Duration::from_secs(30), gate.stalled.notified())
            .await
            .expect("attempt 1 reached the end of its upload");
        // Meanwhile the entries change (a late correction upstream), the lease is taken over
        // and attempt 2 completes with the new entries.
        let source = rig._dir.path().join("source/m_1.ndjson");
        let spec =
            FixtureSpec::new("m_1", 2_500).spread_until("2026-06-01T00:00:00Z".parse().unwrap());
        fixture::write_ndjson(&source, &spec).unwrap();
        store.release(id, 1, Utc::now()).await.unwrap().unwrap();
        let second = rig
            .worker
            .try_execute_task(id, &CancellationToken::new())
            .await
            .unwrap();
        let TaskOutcome::Ran(Some(done)) = second else {
            panic!("{second:?}")
        };
        assert_eq!((done.status, done.attempt_count), (Status::Completed, 2));
        // Attempt 1 wakes up and finishes its upload; its completion is refused.
        gate.release.notify_one();
        assert_eq!(first.await.unwrap(), TaskOutcome::Ran(None));

        // The recorded file is attempt 2's, intact: it decrypts to what was recorded.
        let file = store.get_file(id, 1).await.unwrap().expect("a file");
        let mut stream = rig.worker.storage.read(&file.object_key).await.unwrap();
        let mut sealed = Vec::new();
        while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
            sealed.extend_from_slice(&chunk.unwrap());
        }
        let binding = crate::crypto::Binding {
            ledger_id: id.as_i64(),
            version: 1,
        };
        let plain = crate::crypto::decrypt_to_vec(&rig.worker.keyring, binding, &sealed).unwrap();
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
        let id = pending(&*store, 5, "2026").await;
        let started = std::time::Instant::now();
        let outcome = rig
            .worker
            .try_execute_task(id, &CancellationToken::new())
            .await
            .unwrap();
        let TaskOutcome::Ran(Some(done)) = outcome else {
            panic!("{outcome:?}")
        };
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
                assert!(matches!(
                    store.insert_ledger(&new, None).await.unwrap(),
                    InsertOutcome::Created(_)
                ));
                super::faulty::arm(new.id);
                let outcome = rig
                    .worker
                    .try_execute_task(new.id, &CancellationToken::new())
                    .await
                    .unwrap();
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
}
