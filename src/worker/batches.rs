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
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::auth::{AccessError, Authorizer, Caller, Permission, assert_merchant_access};
use crate::domain::batch::MAX_SKIPPED_NAMED;
use crate::domain::event::BatchProgressEvent;
use crate::domain::ledger::stage_at;
use crate::domain::schedule::close_at;
use crate::domain::{Batch, Event, MerchantId, Selection, Snowflake, Timezone};
use crate::notify::Notifier;
use crate::queue::{JobMessage, Queue};
use crate::source::{Source, SourceError};
use crate::store::batches::{ExpandStep, Expansion, NewBatch};
use crate::store::schedules::OpenRun;
use crate::store::{JobStore, NewLedger};

/// Rows read at once when going over every running batch or active schedule.
const PAGE: u32 = 500;

/// Ledgers of a chunk published and queued at once.
const ENQUEUE_CONCURRENCY: usize = 64;

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
    /// How often schedules are looked at for runs to open.
    pub schedule_every: Duration,
    /// How long an expansion that failed (its source or store) waits before any process
    /// tries its chunk again.
    pub retry_after: Duration,
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(500),
            lease: Duration::from_secs(60),
            chunk: 500,
            progress_every: Duration::from_millis(500),
            schedule_every: Duration::from_secs(2),
            retry_after: Duration::from_secs(10),
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

/// Where an expansion (or a run's pass) is, carried from chunk to chunk.
struct Pass {
    /// Where the next chunk starts.
    cursor: Option<String>,
    /// The first merchants left out so far.
    skipped_ids: Vec<MerchantId>,
    /// A run's earliest close (plus the delay) after this pass, seen so far.
    next_close: Option<chrono::DateTime<Utc>>,
    /// The zones a run's merchants were seen in.
    zones: std::collections::BTreeSet<&'static str>,
    /// Ledgers made so far.
    created: u64,
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
        let scheduling = {
            let me = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move { me.schedule_loop(shutdown).await })
        };
        self.progress_loop(shutdown).await;
        for (task, what) in [(expanding, "expansion"), (scheduling, "schedule")] {
            if let Err(e) = task.await {
                tracing::error!(target: "ledger::worker::batches", error = %e, task = what, "a batch task panicked");
            }
        }
    }

    async fn expand_loop(&self, shutdown: CancellationToken) {
        loop {
            if shutdown.is_cancelled() {
                return;
            }
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

    /// Adds the members of `expansion` chunk by chunk until it is done (a run: until its
    /// pass is), the lease is lost, or shutdown (the lease then expires and any replica goes
    /// on from the last chunk).
    async fn expand(&self, expansion: Expansion, shutdown: &CancellationToken) {
        let Expansion { batch, cursor } = expansion;
        let mut pass = Pass {
            cursor,
            skipped_ids: batch.skipped_ids.clone(),
            next_close: batch
                .run
                .as_ref()
                .and_then(|r| r.pass_at.filter(|_| r.pass_to.is_some())),
            zones: std::collections::BTreeSet::new(),
            created: 0,
        };
        tracing::info!(target: "ledger::worker::batches", batchId = %batch.id, cursor = pass.cursor.as_deref().unwrap_or(""), "expanding a batch");
        loop {
            if shutdown.is_cancelled() {
                // Another process goes on from the last chunk written, without waiting for
                // the lease to run out.
                self.put_back(&batch, Utc::now(), "releasing a batch's expansion")
                    .await;
                return;
            }
            match self.chunk(&batch, &mut pass).await {
                Ok(false) => {}
                Ok(true) => {
                    if let Some(run) = &batch.run {
                        self.learn_zones(run.schedule_id, &pass.zones).await;
                    }
                    tracing::info!(target: "ledger::worker::batches", batchId = %batch.id, ledgersCreated = pass.created, nextPassAt = ?pass.next_close, "batch expanded");
                    return;
                }
                Err(Stalled::LeaseLost) => {
                    tracing::warn!(target: "ledger::worker::batches", batchId = %batch.id, "another process took over the batch's expansion");
                    return;
                }
                Err(Stalled::Backend(cause)) => {
                    // Put aside for a while, so that one batch whose source or store keeps
                    // failing never holds up the others: any process takes it up again from
                    // its last chunk once the pause is over.
                    let retry_at = Utc::now()
                        + chrono::Duration::from_std(self.settings.retry_after).unwrap_or_default();
                    tracing::error!(target: "ledger::worker::batches", batchId = %batch.id, error = %cause, retryAt = %retry_at, "expanding a batch failed; it is retried from its last chunk");
                    self.put_back(&batch, retry_at, "putting a failed expansion aside")
                        .await;
                    return;
                }
            }
        }
    }

    /// Gives the expansion of `batch` back, to be taken again from `at` on.
    async fn put_back(&self, batch: &Batch, at: chrono::DateTime<Utc>, what: &str) {
        if let Err(e) = self
            .store
            .release_expansion(batch.id, &self.holder, at)
            .await
        {
            tracing::warn!(target: "ledger::worker::batches", batchId = %batch.id, error = %e, "{what} failed; it goes on when the lease ends");
        }
    }

    /// Adds `zones` to those the schedule's merchants are known to be in.
    async fn learn_zones(
        &self,
        schedule_id: i64,
        zones: &std::collections::BTreeSet<&'static str>,
    ) {
        let known = match self.store.get_schedule(schedule_id).await {
            Ok(Some(s)) => s.zones,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(target: "ledger::worker::batches", scheduleId = schedule_id, error = %e, "reading a schedule's zones failed");
                return;
            }
        };
        let mut all: std::collections::BTreeSet<&'static str> =
            known.iter().map(|z| z.name()).collect();
        if zones.is_subset(&all) {
            return;
        }
        all.extend(zones.iter().copied());
        let all: Vec<Timezone> = all
            .into_iter()
            .filter_map(|z| Timezone::parse(z).ok())
            .collect();
        if let Err(e) = self.store.record_schedule_zones(schedule_id, &all).await {
            tracing::warn!(target: "ledger::worker::batches", scheduleId = schedule_id, error = %e, "recording a schedule's zones failed");
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

    /// Writes one chunk and moves `pass` past it; true when it was the last.
    async fn chunk(&self, batch: &Batch, pass: &mut Pass) -> Result<bool, Stalled> {
        let (merchants, next, done) = self.merchants(batch, pass.cursor.as_deref()).await?;
        // A run takes the merchants whose period closed (in their zone) in this pass.
        let mut next_close = pass.next_close;
        let mut zones = Vec::new();
        let mut candidates = Vec::with_capacity(merchants.len());
        match &batch.run {
            None => candidates = merchants.into_iter().map(|m| (m, batch.timezone)).collect(),
            Some(run) => {
                for merchant in merchants {
                    let zone = self.zone_of(&merchant).await?;
                    zones.push(zone.name());
                    let close = close_at(&batch.period, zone, run.delay);
                    if run.in_pass(close) {
                        candidates.push((merchant, Some(zone)));
                    } else if run.pass_to.is_some_and(|to| close > to) {
                        next_close = Some(next_close.map_or(close, |n| n.min(close)));
                    }
                }
            }
        }
        // Judged per merchant now, for the merchants this chunk adds only: a grant revoked
        // since the request leaves its merchant out.
        let caller = Caller {
            subject: batch.created_by.clone(),
        };
        let mut due = Vec::with_capacity(candidates.len());
        let mut skipped = 0;
        let mut skipped_ids = pass.skipped_ids.clone();
        for (merchant, zone) in candidates {
            match assert_merchant_access(&self.authz, &caller, &merchant, Permission::Create).await
            {
                Ok(()) => due.push((merchant, zone)),
                Err(AccessError::Denied { .. }) => {
                    skipped += 1;
                    if skipped_ids.len() < MAX_SKIPPED_NAMED && !skipped_ids.contains(&merchant) {
                        skipped_ids.push(merchant);
                    }
                }
                Err(AccessError::Backend(cause)) => {
                    return Err(Stalled::Backend(format!("authorization: {cause}")));
                }
            }
        }
        let now = Utc::now();
        let ledgers: Vec<NewLedger> = due
            .iter()
            .flat_map(|(merchant, zone)| {
                let stage = stage_at(&batch.period, zone.unwrap_or(Timezone::UTC), now);
                batch.formats.iter().map(move |&format| NewLedger {
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
            skipped_ids: &skipped_ids,
            cursor: next.as_deref(),
            done,
            next_pass_at: next_close,
            finalize_drafts: batch.run.is_some(),
            lease_until: now + chrono::Duration::from_std(self.settings.lease).unwrap_or_default(),
            now,
        };
        let created = match self.store.expand_batch(&step).await {
            Ok(Some(created)) => created,
            Ok(None) => return Err(Stalled::LeaseLost),
            Err(e) => return Err(Stalled::Backend(e.to_string())),
        };
        pass.cursor = next;
        pass.skipped_ids = skipped_ids;
        pass.next_close = next_close;
        pass.zones.extend(zones);
        pass.created += created.len() as u64;
        // Published and queued side by side: one by one, a chunk would wait for the broker's
        // round trip of every ledger in turn.
        futures::stream::iter(&created)
            .for_each_concurrent(ENQUEUE_CONCURRENCY, |ledger| async move {
                self.notifier.status(ledger).await;
                let message = JobMessage {
                    ledger_id: ledger.id,
                    merchant_id: ledger.merchant_id.clone(),
                    redelivery: false,
                };
                // Stored PENDING: the recovery sweep re-enqueues a job nobody claimed in
                // time, so a refused enqueue delays the ledger, it does not lose it.
                if let Err(e) = self.queue.enqueue(&message).await {
                    tracing::warn!(target: "ledger::worker::batches", batchId = %batch.id, ledgerId = %ledger.id, error = %e, "enqueueing a batch's ledger failed; the recovery sweep will");
                }
            })
            .await;
        Ok(done)
    }

    /// The zone a merchant's periods close in: its own, else UTC (also for a merchant the
    /// source does not know or cannot read: its ledger is made and REJECTED with the
    /// source's reason, as for one asked for by hand).
    async fn zone_of(&self, merchant: &MerchantId) -> Result<Timezone, Stalled> {
        match self.source.merchant(merchant).await {
            Ok(m) => Ok(m.timezone.unwrap_or(Timezone::UTC)),
            Err(SourceError::UnknownMerchant(_) | SourceError::Invalid(_)) => Ok(Timezone::UTC),
            Err(SourceError::Unavailable(cause)) => Err(Stalled::Backend(format!(
                "reading merchant {merchant} from the source: {cause}"
            ))),
        }
    }

    /// Opens the runs that are due, until `shutdown`.
    async fn schedule_loop(&self, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.open_due_runs(Utc::now()).await {
                tracing::error!(target: "ledger::worker::batches", error = %e, "opening schedule runs failed");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.settings.schedule_every) => {}
            }
        }
    }

    /// Opens a run for every period of every active schedule whose first close (plus the
    /// delay) is at or before `now`: missed periods are caught up, oldest first. Opening
    /// is conditional on the schedule's next period, so concurrent replicas open each run
    /// once.
    pub async fn open_due_runs(
        &self,
        now: chrono::DateTime<Utc>,
    ) -> Result<(), crate::store::StoreError> {
        let mut after = None;
        loop {
            let page = self.store.active_schedules(after, PAGE).await?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = Some(last.id);
            for schedule in page {
                self.open_runs_of(schedule, now).await?;
            }
        }
    }

    /// Opens the due runs of one schedule.
    async fn open_runs_of(
        &self,
        mut schedule: crate::domain::Schedule,
        now: chrono::DateTime<Utc>,
    ) -> Result<(), crate::store::StoreError> {
        // A bounded catch-up per round: the rest follows in the next rounds.
        for _ in 0..100 {
            let opens_at = schedule.next_open_at();
            if opens_at > now {
                break;
            }
            let run = OpenRun {
                schedule_id: schedule.id,
                batch: NewBatch {
                    id: crate::domain::BatchId::from_i64(self.ids.next_id().as_i64()),
                    created_by: schedule.created_by.clone(),
                    merchants: schedule.merchants.clone(),
                    ledger_type: schedule.ledger_type,
                    period: schedule.next_period,
                    formats: schedule.formats.clone(),
                    timezone: None,
                    created_at: now,
                },
                delay: schedule.delay,
                pass_at: opens_at,
                next_period: schedule.cadence.next(&schedule.next_period),
            };
            if !self.store.open_run(&run).await? {
                break;
            }
            tracing::info!(target: "ledger::worker::batches", scheduleId = schedule.id, period = %run.batch.period, batchId = %run.batch.id, "schedule run opened");
            schedule.next_period = run.next_period;
        }
        Ok(())
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
        let mut after = None;
        loop {
            let page = self.store.running_batches(after, PAGE).await?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = Some(last.batch.id);
            for published in page {
                self.publish_progress(published).await?;
            }
        }
    }

    /// Publishes one running batch's progress if it changed and this process wins it.
    async fn publish_progress(
        &self,
        published: crate::store::batches::Published,
    ) -> Result<(), crate::store::StoreError> {
        let batch = &published.batch;
        let tally = self.store.tally_batch(batch.id).await?;
        let status = tally.status(batch.expanding);
        if status == batch.status
            && tally.counts == batch.counts
            && tally.counts.total() == published.total
        {
            return Ok(());
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
            return Ok(());
        }
        if status != batch.status {
            tracing::info!(target: "ledger::worker::batches", batchId = %batch.id, status = %status, total = tally.counts.total(), completed = tally.counts.completed, rejected = tally.counts.rejected, existing = tally.counts.existing, "batch status changed");
        }
        self.notifier
            .publish(&Event::BatchProgress(BatchProgressEvent {
                batch_id: batch.id,
                status,
                total: tally.counts.total(),
                expanding: batch.expanding,
                counts: tally.counts,
                created_by: batch.created_by.clone(),
                at: now,
            }))
            .await;
        Ok(())
    }
}
