//! The batch half of the job store port (SPEC §11): batches, their members, their
//! expansion by the worker role (leased, in chunks that each commit with the cursor they
//! reached) and the progress last published for them.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{NewLedger, StoreError};
use crate::domain::{
    Batch, BatchCounts, BatchId, BatchStatus, Format, Ledger, LedgerId, LedgerType, Period,
    Selection, Status, Tally, Timezone,
};

/// What a new batch is made of.
#[derive(Debug, Clone)]
pub struct NewBatch {
    /// Snowflake id.
    pub id: BatchId,
    /// The `sub` of the caller.
    pub created_by: String,
    /// The merchants asked for.
    pub merchants: Selection,
    /// STATEMENT or SUMMARY.
    pub ledger_type: LedgerType,
    /// The period.
    pub period: Period,
    /// The formats, each once.
    pub formats: Vec<Format>,
    /// The zone asked for; `None`: each merchant's own.
    pub timezone: Option<Timezone>,
    /// Now.
    pub created_at: DateTime<Utc>,
}

/// An `Idempotency-Key` of a batch request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchKey {
    /// The caller the key belongs to.
    pub subject: String,
    /// The header's value.
    pub key: String,
    /// SHA-256 of the normalised request.
    pub request_hash: String,
}

/// The result of [`BatchStore::insert_batch`].
#[derive(Debug)]
pub enum BatchInsert {
    /// Stored.
    Created(Batch),
    /// The key was used before (and has not expired) for this batch, by a request with
    /// this hash.
    Replay {
        /// The hash of the first request.
        request_hash: String,
        /// The batch it created, as it is now.
        batch: Batch,
    },
}

/// Which members a page of a batch's ledgers holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberFilter {
    /// Members the batch made that are in this status.
    Status(Status),
    /// Members that existed before the batch reached them.
    Existing,
}

/// A member of a batch.
#[derive(Debug, Clone)]
pub struct Member {
    /// The ledger.
    pub ledger: Ledger,
    /// Whether it existed before the batch reached it.
    pub existing: bool,
}

/// A batch whose expansion a process holds, and where it goes on.
#[derive(Debug, Clone)]
pub struct Expansion {
    /// The batch.
    pub batch: Batch,
    /// Where the expansion stopped (`None`: at the start).
    pub cursor: Option<String>,
}

/// One chunk of an expansion: its ledgers, and where the expansion goes on after it.
pub struct ExpandStep<'a> {
    /// The batch.
    pub batch: BatchId,
    /// The process holding the expansion's lease.
    pub holder: &'a str,
    /// The ledgers of this chunk's merchants (each identity once).
    pub ledgers: &'a [NewLedger],
    /// A fresh ledger id, for a new ledger whose id another replica took.
    pub fresh_id: &'a (dyn Fn() -> LedgerId + Send + Sync),
    /// Merchants of this chunk left out (not allowed).
    pub skipped: u64,
    /// The first merchants the batch left out so far, this chunk's included (at most
    /// [`crate::domain::batch::MAX_SKIPPED_NAMED`]).
    pub skipped_ids: &'a [crate::domain::MerchantId],
    /// Where the next chunk starts; ignored when `done`.
    pub cursor: Option<&'a str>,
    /// Whether this is the last chunk (of the expansion, or of a run's pass).
    pub done: bool,
    /// For a run: the earliest close (plus the delay) after the pass seen so far, which on
    /// the pass's last chunk is when the next pass is due (`None` then: the run has every
    /// member). `None` for other batches.
    pub next_pass_at: Option<DateTime<Utc>>,
    /// Whether members that exist as a COMPLETED DRAFT get a new version (a schedule's run
    /// makes a closed period's ledgers FINAL: one made before the close is regenerated).
    pub finalize_drafts: bool,
    /// The lease's new end.
    pub lease_until: DateTime<Utc>,
    /// Now.
    pub now: DateTime<Utc>,
}

/// A running batch and the progress last published for it.
#[derive(Debug, Clone)]
pub struct Published {
    /// The batch, with the counts and status last published.
    pub batch: Batch,
    /// Total members when last published.
    pub total: u64,
    /// Changes on every publication: a publication applies only over the one it read.
    pub seq: i64,
}

/// The batch half of the job store port.
#[async_trait]
pub trait BatchStore: Send + Sync {
    /// Stores a new RUNNING, expanding batch (and its idempotency key, in the same
    /// transaction); a live key replays instead.
    async fn insert_batch(
        &self,
        new: &NewBatch,
        key: Option<&BatchKey>,
    ) -> Result<BatchInsert, StoreError>;
    /// One batch, with the counts last published.
    async fn get_batch(&self, id: BatchId) -> Result<Option<Batch>, StoreError>;
    /// The batch's members by state, counted from the ledgers now, and how many it has.
    async fn tally_batch(&self, id: BatchId) -> Result<Tally, StoreError>;
    /// Batches, newest first (`created_by = None`: everyone's), below `before`.
    async fn list_batches(
        &self,
        created_by: Option<&str>,
        before: Option<BatchId>,
        limit: u32,
    ) -> Result<Vec<Batch>, StoreError>;
    /// A page of a batch's members not deleted, newest ledger first, below `before`.
    async fn batch_members(
        &self,
        id: BatchId,
        filter: Option<MemberFilter>,
        before: Option<LedgerId>,
        limit: u32,
    ) -> Result<Vec<Member>, StoreError>;
    /// Takes the expansion of the oldest expanding batch whose lease is free or expired
    /// (a run: whose next pass is due, of a schedule neither paused nor deleted), for
    /// `holder` until `until`. A run's pass starts at its first claim: it covers the closes
    /// up to `now`.
    async fn claim_expansion(
        &self,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<Expansion>, StoreError>;
    /// Adds one chunk of members in one transaction with the cursor it reached (and the
    /// end of the expansion, on the last); returns the ledgers to enqueue, PENDING: those it
    /// created, and the DRAFTs it gave a new version ([`ExpandStep::finalize_drafts`]).
    /// `None` when `holder` lost the lease: nothing was written.
    async fn expand_batch(&self, step: &ExpandStep<'_>) -> Result<Option<Vec<Ledger>>, StoreError>;
    /// Gives up `holder`'s lease of the expansion of `id`, so that any process goes on from
    /// the last chunk written from `at` on (now, on shutdown; later, after a failure).
    async fn release_expansion(
        &self,
        id: BatchId,
        holder: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Batches whose last published status is RUNNING, oldest first, after `after`.
    async fn running_batches(
        &self,
        after: Option<BatchId>,
        limit: u32,
    ) -> Result<Vec<Published>, StoreError>;
    /// Records a new publication of `id` if the last is still `seq`; false when another
    /// process published in between (it publishes, not this one). `finished_at` is kept
    /// unless `status` is RUNNING (`None`: now).
    async fn record_batch_progress(
        &self,
        id: BatchId,
        seq: i64,
        status: BatchStatus,
        counts: &BatchCounts,
        finished_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Re-opens (RUNNING) the batches `ledger` is a member of: it was queued again. Also a
    /// new publication, so a progress round that counted before the change cannot record
    /// the batch as finished over it.
    async fn reopen_batches(&self, ledger: LedgerId, now: DateTime<Utc>) -> Result<(), StoreError>;
}
