//! The worker role: consumes the queue, claims jobs, runs the pipeline, and runs the
//! recovery sweep. Owns no state of its own: the store's claim and the attempt number
//! (the fencing token) decide who may write what.

pub mod batches;
pub mod pipeline;
pub mod sweep;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::domain::{Ledger, LedgerId};
use crate::keys::Keys;
use crate::notify::Notifier;
use crate::queue::Queue;
use crate::source::Source;
use crate::storage::ObjectStorage;
use crate::store::JobStore;
use crate::vault::Vault;

/// Tunables of the worker role.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Lease length; renewed every third of it while a job runs.
    pub job_timeout: Duration,
    /// Recovery sweep period.
    pub sweep_interval: Duration,
    /// Attempts after which a stalled job is abandoned.
    pub max_attempts: u32,
    /// Jobs run at once.
    pub concurrency: usize,
    /// How long running jobs may go on after shutdown was asked.
    pub shutdown_timeout: Duration,
    /// How long one attempt may run at most, lease renewals or not.
    pub job_deadline: Duration,
}

/// What the worker needs.
#[derive(Clone)]
pub struct Worker {
    /// Job store.
    pub store: Arc<dyn JobStore>,
    /// Queue.
    pub queue: Arc<dyn Queue>,
    /// Object storage.
    pub storage: Arc<dyn ObjectStorage>,
    /// Entry source.
    pub source: Arc<dyn Source>,
    /// Status events.
    pub notifier: Notifier,
    /// Encryption keys: the root and the merchant keys.
    pub keys: Keys,
    /// Signs the manifest of every completed file.
    pub signer: Arc<crate::manifest::ManifestSigner>,
    /// Tunables.
    pub settings: WorkerSettings,
}

/// What happened to one delivered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskOutcome {
    /// The job was not PENDING (a duplicate or stale message): dropped.
    Dropped,
    /// The job ran to a terminal state (or was fenced off / released).
    Ran(Option<Box<Ledger>>),
}

impl Worker {
    /// Where the worker seals the files it makes.
    pub fn vault(&self) -> Vault {
        Vault::new(self.storage.clone(), self.keys.clone())
    }

    /// Claims and runs one job; the unit tests and the consume loop share it.
    pub async fn try_execute_task(
        &self,
        id: LedgerId,
        stop: &CancellationToken,
    ) -> Result<TaskOutcome, crate::store::StoreError> {
        let claimed = std::time::Instant::now();
        let now = Utc::now();
        let lease = now + chrono::Duration::from_std(self.settings.job_timeout).unwrap_or_default();
        let Some(ledger) = self.store.claim(id, now, lease).await? else {
            tracing::debug!(ledgerId = %id, "message dropped: job is not PENDING");
            return Ok(TaskOutcome::Dropped);
        };
        self.notifier.status(&ledger).await;
        Ok(TaskOutcome::Ran(
            pipeline::run(self, ledger, claimed, stop)
                .await
                .map(Box::new),
        ))
    }

    /// Runs the consumers and the sweep until `shutdown`; running jobs then get
    /// `shutdown_timeout` to finish before they are released back to PENDING.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        // Jobs stop on their own token, which fires only after the grace period.
        let job_stop = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        for slot in 0..self.settings.concurrency.max(1) {
            let consumer = self.queue.consumer().await?;
            let me = self.clone();
            let (shutdown, job_stop) = (shutdown.clone(), job_stop.clone());
            tasks.spawn(async move { me.consume(slot, consumer, shutdown, job_stop).await });
        }
        {
            let me = self.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move { sweep::run(&me, shutdown).await });
        }
        let grace = self.settings.shutdown_timeout;
        let timer = {
            let (shutdown, job_stop) = (shutdown.clone(), job_stop.clone());
            tokio::spawn(async move {
                shutdown.cancelled().await;
                tokio::time::sleep(grace).await;
                job_stop.cancel();
            })
        };
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = done {
                tracing::error!(error = %e, "a worker task panicked");
            }
        }
        timer.abort();
        Ok(())
    }

    async fn consume(
        &self,
        slot: usize,
        mut consumer: Box<dyn crate::queue::Consumer>,
        shutdown: CancellationToken,
        job_stop: CancellationToken,
    ) {
        let mut backoff = Duration::from_millis(100);
        loop {
            // Shutdown wins over a ready message: no new claim after SIGTERM.
            let delivery = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                d = consumer.next() => d,
            };
            let delivery = match delivery {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(slot, error = %e, "queue receive failed; backing off");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            let Some(id) = delivery.ledger_id else {
                // Not a job message: acknowledge it so it never blocks the partition.
                tracing::warn!(slot, position = ?delivery.position, "dropping a malformed queue message");
                if let Err(e) = consumer.ack(delivery).await {
                    tracing::error!(error = %e, "acknowledging a message failed");
                }
                continue;
            };
            match self.try_execute_task(id, &job_stop).await {
                Ok(_) => {
                    if let Err(e) = consumer.ack(delivery).await {
                        tracing::error!(ledgerId = %id, error = %e, "acknowledging a message failed");
                    }
                }
                Err(e) => {
                    // Not acknowledged: the message (or the sweep) brings the job back.
                    tracing::error!(ledgerId = %id, error = %e, "claiming a job failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                }
            }
        }
        consumer.close().await;
    }
}
