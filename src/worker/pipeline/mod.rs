//! One attempt of one job: FETCH → GENERATE → ENCRYPT+UPLOAD → self-check → COMPLETE.
//! Fetch, render, encrypt and upload run concurrently as a stream, so memory is bounded by
//! channel sizes, never by the ledger's size. Every store write carries the attempt number;
//! a worker that lost its lease stops and writes nothing more.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::Worker;
use crate::domain::{Event, FailureReason, Ledger, ProgressEvent};
use crate::queue::JobMessage;
use crate::source::SourceError;
use crate::store::PhaseRecord;

/// Ciphertext chunks buffered between the encryptor and the uploader.
const UPLOAD_QUEUE: usize = 8;
/// Progress events at most this often while a phase runs (and at least once a second).
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// A job's timeline phases are written as they happen once it has run this long; before,
/// they wait for its next write — its completion, for most jobs — and go in with it. A
/// small ledger is then one claim and one completion; live progress goes to the event bus
/// at once either way.
const PHASES_LIVE_AFTER: Duration = Duration::from_secs(1);

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
    /// The merchant key the file was sealed with was shredded before the completion: the
    /// object can never be read; the job is given back to seal under the merchant's next key.
    #[error("merchant key {key_id} was shredded while the file was sealed")]
    KeyShredded {
        /// The shredded key.
        key_id: String,
        /// The attempt's object, sealed with it.
        object_key: String,
    },
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

/// The span fields every phase line carries, under the target of this module wherever
/// the stage that logs them lives (the log lines stay as they were).
macro_rules! phase_log {
    (warn $ledger:expr, $msg:literal $(, $k:ident = $v:expr)*) => {
        tracing::warn!(
            target: "ledger::worker::pipeline",
            ledgerId = %$ledger.id, merchantId = %$ledger.merchant_id, type = %$ledger.ledger_type,
            period = %$ledger.period, attemptCount = $ledger.attempt_count $(, $k = $v)*, $msg
        )
    };
    ($ledger:expr, $msg:literal $(, $k:ident = $v:expr)*) => {
        tracing::info!(
            target: "ledger::worker::pipeline",
            ledgerId = %$ledger.id, merchantId = %$ledger.merchant_id, type = %$ledger.ledger_type,
            period = %$ledger.period, attemptCount = $ledger.attempt_count $(, $k = $v)*, $msg
        )
    };
}

mod execute;
#[cfg(test)]
mod faulty;
mod render;
#[cfg(test)]
mod tests;

use execute::execute;

/// Shared between the async side and the blocking renderer.
struct Progress {
    rows: AtomicU64,
    lost: AtomicBool,
    /// Set when the job ran past its deadline and was cancelled for it.
    overdue: AtomicBool,
    /// When the lease was last known to be this attempt's: the claim was asked for, or a
    /// renewal was granted. The lease runs a job timeout from then.
    confirmed: std::sync::Mutex<Instant>,
}

impl Progress {
    fn confirmed_since(&self) -> Duration {
        self.confirmed
            .lock()
            .map(|at| at.elapsed())
            // A poisoned lock (a panic while it was held) proves nothing: renew.
            .unwrap_or(Duration::MAX)
    }
}

/// The attempt's timeline phases not written yet ([`PHASES_LIVE_AFTER`]).
struct Timeline {
    started: Instant,
    pending: Vec<PhaseRecord>,
}

impl Timeline {
    /// Records `name` on the timeline: now if the job has run for a while, else with the
    /// job's next write.
    async fn phase(
        &mut self,
        worker: &Worker,
        ledger: &Ledger,
        name: &'static str,
        detail: Option<String>,
    ) -> Result<(), JobError> {
        self.pending.push(PhaseRecord {
            phase: name,
            detail,
            at: Utc::now(),
        });
        if self.started.elapsed() < PHASES_LIVE_AFTER {
            return Ok(());
        }
        self.flush(worker, ledger).await
    }

    /// Writes the phases waiting, fenced on the attempt.
    async fn flush(&mut self, worker: &Worker, ledger: &Ledger) -> Result<(), JobError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        match worker
            .store
            .record_phases(ledger.id, ledger.attempt_count, &self.pending)
            .await
        {
            Ok(true) => {
                self.pending.clear();
                Ok(())
            }
            Ok(false) => Err(JobError::LeaseLost),
            Err(e) => Err(JobError::execution(
                "the job store did not answer",
                format_args!(
                    "recording phase {}: {e}",
                    self.pending.last().map_or("", |p| p.phase)
                ),
            )),
        }
    }

    /// Writes the phases waiting before the attempt's failure or release is recorded, so
    /// its timeline shows how far it got; a store that fails here fails that write too,
    /// which reports it.
    async fn flush_before_end(&mut self, worker: &Worker, ledger: &Ledger) {
        if let Err(e) = self.flush(worker, ledger).await {
            tracing::warn!(ledgerId = %ledger.id, attemptCount = ledger.attempt_count,
                error = %e, "the attempt's last phases could not be recorded");
        }
    }
}

/// Gives the attempt's job back (PENDING) and puts it on the queue again, so another
/// attempt takes it now rather than at the sweep after the job timeout (this process
/// acknowledges its message); whether it was released.
async fn release(worker: &Worker, ledger: &Ledger, timeline: &mut Timeline) -> bool {
    timeline.flush_before_end(worker, ledger).await;
    match worker
        .store
        .release(ledger.id, ledger.attempt_count, Utc::now())
        .await
    {
        Ok(Some(released)) => {
            worker.notifier.status(&released).await;
            let message = JobMessage {
                ledger_id: released.id,
                merchant_id: released.merchant_id.clone(),
                redelivery: false,
            };
            if let Err(e) = worker.queue.enqueue(&message).await {
                tracing::error!(ledgerId = %released.id, error = %e,
                    "re-enqueueing a released job failed; the sweep will");
            }
            true
        }
        Ok(None) => false,
        Err(e) => {
            tracing::error!(ledgerId = %ledger.id, error = %e, "releasing the job failed; the sweep will");
            false
        }
    }
}

/// Runs the claimed `ledger` to a terminal state; returns it, or `None` when the attempt
/// was fenced off or released. `claimed` is when the claim was asked for.
pub async fn run(
    worker: &Worker,
    ledger: Ledger,
    claimed: Instant,
    stop: &CancellationToken,
) -> Option<Ledger> {
    let started = Instant::now();
    let attempt = ledger.attempt_count;
    let job = stop.child_token();
    let progress = Arc::new(Progress {
        rows: AtomicU64::new(0),
        lost: AtomicBool::new(false),
        overdue: AtomicBool::new(false),
        confirmed: std::sync::Mutex::new(claimed),
    });
    let mut timeline = Timeline {
        started,
        pending: Vec::new(),
    };
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
    let result = execute(worker, &ledger, &job, &progress, &mut timeline).await;
    lease.abort();
    overdue.abort();
    let result = match result {
        // Whatever else happened meanwhile, the object is unreadable and the row stale (the
        // release below is conditional on the attempt, so a lost lease releases nothing).
        Err(e @ JobError::KeyShredded { .. }) => Err(e),
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
        Err(JobError::Stopped) => {
            if release(worker, &ledger, &mut timeline).await {
                phase_log!(ledger, "RELEASED (shutdown)");
            }
            None
        }
        Err(JobError::KeyShredded { key_id, object_key }) => {
            // The merchant was shredded while this attempt sealed its file: this process
            // reads the merchant's key row again (and makes it a new key), the object that
            // no key opens any more goes, and the job runs again at once.
            worker.vault().keys().forget_live(&ledger.merchant_id);
            if let Err(e) = worker.vault().storage().delete(&object_key).await {
                tracing::warn!(ledgerId = %ledger.id, objectKey = %object_key, error = %e,
                    "removing an object sealed with a shredded key failed (no key opens it)");
            }
            if release(worker, &ledger, &mut timeline).await {
                phase_log!(
                    ledger,
                    "RELEASED (merchant key shredded while sealing; sealed again under its next key)",
                    keyId = key_id.as_str()
                );
            }
            None
        }
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
            timeline.flush_before_end(worker, &ledger).await;
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
        let asked = Instant::now();
        let until = Utc::now() + chrono::Duration::from_std(timeout).unwrap_or_default();
        match worker
            .store
            .renew_lease(ledger.id, ledger.attempt_count, until)
            .await
        {
            Ok(true) => {
                if let Ok(mut at) = progress.confirmed.lock() {
                    *at = asked;
                }
            }
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
