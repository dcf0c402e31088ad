//! The worker role's share of batches (SPEC §11): it expands them — any replica, one at a
//! time per batch under a lease, chunk by chunk, each chunk committed with the cursor it
//! reached so an expansion resumes where it stopped — and publishes their progress, one
//! replica per change.
//!
//! Memory stays bounded whatever the batch: an expansion holds one chunk of merchants (an
//! explicit list is at most 10,000 ids); `"*"` reads the source's listing page by page.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::auth::{AccessError, Authorizer, Caller, Permission, assert_merchant_access};
use crate::domain::event::BatchProgressEvent;
use crate::domain::ledger::stage_at;
use crate::domain::{Batch, Event, MerchantId, Selection, Snowflake, Timezone};
use crate::notify::Notifier;
use crate::queue::{JobMessage, Queue};
use crate::source::Source;
use crate::store::batches::{ExpandStep, Expansion};
use crate::store::{JobStore, NewLedger};

/// Tunables of the batch runner.
#[derive(Debug, Clone)]
pub struct BatchSettings {
    /// How often an idle runner looks for a batch to expand.
    pub poll: Duration,
    /// How long an expansion's lease lasts; renewed by every chunk.
    pub lease: Duration,
    /// Merchants per chunk (and per page of the source's listing).
    pub chunk: u32,
    /// The shortest time between two progress rounds.
    pub progress_every: Duration,
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(500),
            lease: Duration::from_secs(60),
            chunk: 500,
            progress_every: Duration::from_millis(500),
        }
    }
}

/// Expands batches and publishes their progress.
#[derive(Clone)]
pub struct BatchRunner {
    /// Job store.
    pub store: Arc<dyn JobStore>,
    /// Where new members are queued.
    pub queue: Arc<dyn Queue>,
    /// Lists the merchants of `"*"`.
    pub source: Arc<dyn Source>,
    /// Status and progress events.
    pub notifier: Notifier,
    /// Whether the creator may (still) create for a merchant.
    pub authz: Arc<Authorizer>,
    /// Ids of new ledgers.
    pub ids: Arc<Snowflake>,
    /// This process, as the holder of expansion leases.
    pub holder: String,
    /// Tunables.
    pub settings: BatchSettings,
}

/// Why a chunk was not written.
enum Stalled {
    /// Another process holds the expansion now.
    LeaseLost,
    /// A backend failed; try the same chunk again later.
    Backend(String),
}

impl BatchRunner {
    /// Expands and publishes until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let expanding = {
            let me = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move { me.expand_loop(shutdown).await })
        };
        self.progress_loop(shutdown).await;
        if let Err(e) = expanding.await {
            tracing::error!(target: "ledger::worker::batches", error = %e, "the batch expansion task panicked");
        }
    }

    async fn expand_loop(&self, shutdown: CancellationToken) {
        loop {
            let now = Utc::now();
            let until = now + chrono::Duration::from_std(self.settings.lease).unwrap_or_default();
            match self.store.claim_expansion(&self.holder, now, until).await {
                Ok(Some(expansion)) => {
                    self.expand(expansion, &shutdown).await;
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(target: "ledger::worker::batches", error = %e, "looking for a batch to expand failed");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.settings.poll) => {}
            }
        }
    }

    /// Adds the members of `expansion` chunk by chunk until it is done, the lease is lost,
    /// or shutdown (the lease then expires and any replica goes on from the last chunk).
    async fn expand(&self, expansion: Expansion, shutdown: &CancellationToken) {
        let Expansion { batch, mut cursor } = expansion;
        let mut backoff = Duration::from_millis(200);
        tracing::info!(target: "ledger::worker::batches", batchId = %batch.id, cursor = cursor.as_deref().unwrap_or(""), "expanding a batch");
        let mut added = 0u64;
        while !shutdown.is_cancelled() {
            match self.chunk(&batch, cursor.as_deref()).await {
                Ok((n, _, true)) => {
                    added += n;
                    tracing::info!(target: "ledger::worker::batches", batchId = %batch.id, ledgersCreated = added, "batch expanded");
                    return;
                }
                Ok((n, next, false)) => {
                    added += n;
                    cursor = next;
                    backoff = Duration::from_millis(200);
                }
                Err(Stalled::LeaseLost) => {
                    tracing::warn!(target: "ledger::worker::batches", batchId = %batch.id, "another process took over the batch's expansion");
                    return;
                }
                Err(Stalled::Backend(cause)) => {
                    tracing::error!(target: "ledger::worker::batches", batchId = %batch.id, error = %cause, "expanding a batch failed; trying the chunk again");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// The merchants of the chunk at `cursor`, where the next starts, and whether it is the
    /// last.
    async fn merchants(
        &self,
        batch: &Batch,
        cursor: Option<&str>,
    ) -> Result<(Vec<MerchantId>, Option<String>, bool), Stalled> {
        match &batch.merchants {
            Selection::Only(ids) => {
                let start = match cursor {
                    None => 0,
                    Some(raw) => raw.parse::<usize>().map_err(|_| {
                        Stalled::Backend(format!("the stored cursor {raw:?} is not an index"))
                    })?,
                };
                let start = start.min(ids.len());
                let end = (start + self.settings.chunk as usize).min(ids.len());
                Ok((
                    ids[start..end].to_vec(),
                    Some(end.to_string()),
                    end == ids.len(),
                ))
            }
            Selection::All => {
                let page = self
                    .source
                    .list_merchants(cursor, self.settings.chunk)
                    .await
                    .map_err(|e| {
                        Stalled::Backend(format!("listing the source's merchants: {e}"))
                    })?;
                let done = page.next_cursor.is_none();
                Ok((page.merchants, page.next_cursor, done))
            }
        }
    }

    /// Writes one chunk: how many ledgers it created, where the next starts, and whether it
    /// was the last.
    async fn chunk(
        &self,
        batch: &Batch,
        cursor: Option<&str>,
    ) -> Result<(u64, Option<String>, bool), Stalled> {
        let (merchants, next, done) = self.merchants(batch, cursor).await?;
        // Judged per merchant now: a grant revoked since the request leaves its merchant out.
        let caller = Caller {
            subject: batch.created_by.clone(),
        };
        let mut allowed = Vec::with_capacity(merchants.len());
        let mut skipped = 0;
        for merchant in merchants {
            match assert_merchant_access(&self.authz, &caller, &merchant, Permission::Create).await
            {
                Ok(()) => allowed.push(merchant),
                Err(AccessError::Denied { .. }) => skipped += 1,
                Err(AccessError::Backend(cause)) => {
                    return Err(Stalled::Backend(format!("authorization: {cause}")));
                }
            }
        }
        let now = Utc::now();
        let stage = stage_at(&batch.period, batch.timezone.unwrap_or(Timezone::UTC), now);
        let ledgers: Vec<NewLedger> = allowed
            .iter()
            .flat_map(|merchant| {
                batch.formats.iter().map(|&format| NewLedger {
                    id: self.ids.next_id(),
                    merchant_id: merchant.clone(),
                    ledger_type: batch.ledger_type,
                    period: batch.period,
                    requested_timezone: batch.timezone,
                    format,
                    stage,
                    created_by: batch.created_by.clone(),
                    created_at: now,
                })
            })
            .collect();
        let ids = self.ids.clone();
        let fresh = move || ids.next_id();
        let step = ExpandStep {
            batch: batch.id,
            holder: &self.holder,
            ledgers: &ledgers,
            fresh_id: &fresh,
            skipped,
            cursor: next.as_deref(),
            done,
            lease_until: now + chrono::Duration::from_std(self.settings.lease).unwrap_or_default(),
            now,
        };
        let created = match self.store.expand_batch(&step).await {
            Ok(Some(created)) => created,
            Ok(None) => return Err(Stalled::LeaseLost),
            Err(e) => return Err(Stalled::Backend(e.to_string())),
        };
        for ledger in &created {
            self.notifier.status(ledger).await;
            let message = JobMessage {
                ledger_id: ledger.id,
                merchant_id: ledger.merchant_id.clone(),
                redelivery: false,
            };
            // Stored PENDING: the recovery sweep re-enqueues a job nobody claimed in time,
            // so a refused enqueue delays the ledger, it does not lose it.
            if let Err(e) = self.queue.enqueue(&message).await {
                tracing::warn!(target: "ledger::worker::batches", batchId = %batch.id, ledgerId = %ledger.id, error = %e, "enqueueing a batch's ledger failed; the recovery sweep will");
            }
        }
        Ok((created.len() as u64, next, done))
    }

    /// Publishes each running batch's progress when it changed, at most every
    /// `progress_every` (longer when counting takes long, so counting never takes more than
    /// a fifth of the time).
    async fn progress_loop(&self, shutdown: CancellationToken) {
        loop {
            let started = tokio::time::Instant::now();
            if let Err(e) = self.progress_round().await {
                tracing::error!(target: "ledger::worker::batches", error = %e, "publishing batch progress failed");
            }
            let pause = self.settings.progress_every.max(started.elapsed() * 4);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// One round over the running batches.
    pub async fn progress_round(&self) -> Result<(), crate::store::StoreError> {
        for published in self.store.running_batches(1000).await? {
            let batch = &published.batch;
            let tally = self.store.tally_batch(batch.id).await?;
            let status = tally.status(batch.expanding);
            if status == batch.status
                && tally.counts == batch.counts
                && tally.counts.total() == published.total
            {
                continue;
            }
            let now = Utc::now();
            let won = self
                .store
                .record_batch_progress(
                    batch.id,
                    published.seq,
                    status,
                    &tally.counts,
                    tally.finished_at(batch.expanding, batch.created_at),
                    now,
                )
                .await?;
            if !won {
                continue;
            }
            if status != batch.status {
                tracing::info!(target: "ledger::worker::batches", batchId = %batch.id, status = %status, total = tally.counts.total(), completed = tally.counts.completed, rejected = tally.counts.rejected, existing = tally.counts.existing, "batch status changed");
            }
            self.notifier
                .publish(&Event::BatchProgress(BatchProgressEvent {
                    batch_id: batch.id,
                    status,
                    total: tally.counts.total(),
                    counts: tally.counts,
                    created_by: batch.created_by.clone(),
                    at: now,
                }))
                .await;
        }
        Ok(())
    }
}
