//! The recovery sweep: puts jobs whose worker died back in the queue, re-enqueues PENDING
//! jobs nobody claimed, abandons jobs that stalled too often. Runs at start-up, then on its
//! interval; every reset is a conditional update, so concurrent sweepers never double-reset.

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::Worker;
use crate::queue::JobMessage;
use crate::store::SweepOutcome;

/// Sweeps now and then every `sweep_interval` until `shutdown`.
pub async fn run(worker: &Worker, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(worker.settings.sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = sweep_once(worker).await {
            tracing::error!(error = %e, "[RecoveryComponent] sweep failed");
        }
        // Idempotency keys are remembered for 24 h; older ones only take room.
        let cutoff = crate::store::idempotency_cutoff(Utc::now());
        match worker.store.purge_idempotency_keys(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "expired idempotency keys removed"),
            Err(e) => tracing::warn!(error = %e, "purging expired idempotency keys failed"),
        }
    }
}

/// One sweep; returns what it did.
pub async fn sweep_once(worker: &Worker) -> anyhow::Result<SweepOutcome> {
    let now = Utc::now();
    let timeout = chrono::Duration::from_std(worker.settings.job_timeout)?;
    let outcome = worker
        .store
        .sweep(now, now - timeout, worker.settings.max_attempts)
        .await?;
    let stalled = outcome.requeued.len() + outcome.abandoned.len();
    if stalled > 0 {
        tracing::warn!(
            requeued = outcome.requeued.len(),
            abandoned = outcome.abandoned.len(),
            "[RecoveryComponent] Found {stalled} stalled job(s)"
        );
    }
    if !outcome.unclaimed.is_empty() {
        tracing::warn!(
            unclaimed = outcome.unclaimed.len(),
            "[RecoveryComponent] re-enqueuing {} job(s) no worker claimed in time",
            outcome.unclaimed.len()
        );
    }
    metrics::counter!("ledger_stalled_jobs_reset_total").increment(outcome.requeued.len() as u64);
    for ledger in &outcome.abandoned {
        metrics::counter!("ledger_jobs_total", "status" => "REJECTED", "error_code" => "JOB_EXECUTION_FAILED")
            .increment(1);
        tracing::warn!(
            ledgerId = %ledger.id, merchantId = %ledger.merchant_id, type = %ledger.ledger_type,
            period = %ledger.period, attemptCount = ledger.attempt_count,
            errorCode = "JOB_EXECUTION_FAILED", "FAILED (stalled too often)"
        );
        worker.notifier.status(ledger).await;
    }
    for ledger in outcome.requeued.iter().chain(&outcome.unclaimed) {
        if outcome.requeued.iter().any(|l| l.id == ledger.id) {
            worker.notifier.status(ledger).await;
        }
        let message = JobMessage {
            ledger_id: ledger.id,
            merchant_id: ledger.merchant_id.clone(),
            redelivery: outcome.unclaimed.iter().any(|l| l.id == ledger.id),
        };
        if let Err(e) = worker.queue.enqueue(&message).await {
            // The job stays PENDING; the next sweep tries again.
            tracing::error!(ledgerId = %ledger.id, error = %e, "[RecoveryComponent] re-enqueue failed");
        }
    }
    Ok(outcome)
}
