//! The job store port: ledgers, their files and timelines, idempotency keys and
//! authorization policies. Every status change goes through a conditional update here, so
//! the attempt number fences late writes of a worker that lost its lease.
//! One adapter, [`sql::SqlStore`], writes every statement once for both engines; its
//! dialects [`sqlite`] (embedded default) and [`postgres`] (production, scales out) hold what
//! differs. Never decides a transition itself: callers ask [`crate::domain::Status::apply`]
//! and pass the expected status, and the worker-side guards are built from the same table.

pub mod batches;
#[cfg(test)]
pub mod contract;
mod inline;
pub mod keys;
pub mod node_ids;
pub mod postgres;
mod rows;
pub mod schedules;
pub mod sql;
pub mod sqlite;
pub mod webhooks;

pub use batches::BatchStore;
pub use keys::KeyStore;
pub use schedules::ScheduleStore;
pub use webhooks::WebhookStore;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{
    FailureReason, FileInfo, Grant, Ledger, LedgerId, LedgerType, MerchantId, PolicyRevision,
    Stage, Status, TimelineItem, Timezone,
};

/// Errors of a store backend.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed or could not be reached.
    #[error("job store backend error: {0}")]
    Backend(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("job store migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored row does not decode into the domain (a bug or a manual edit).
    #[error("job store holds an unreadable row: {0}")]
    Corrupt(String),
    /// The backend failed for a group of requests (a group commit), or the store is
    /// shutting down.
    #[error("job store backend error: {0}")]
    Unavailable(String),
    /// A completion was refused because the merchant key its file is sealed with was
    /// shredded meanwhile: that file can never be read, and the attempt must seal again
    /// under the merchant's next key.
    #[error("merchant key {key_id} was shredded before the file it sealed was recorded")]
    KeyShredded {
        /// The shredded key.
        key_id: String,
    },
}

/// What a new ledger is made of; the id comes from the Snowflake generator.
#[derive(Debug, Clone)]
pub struct NewLedger {
    /// Snowflake id.
    pub id: LedgerId,
    /// Whose.
    pub merchant_id: MerchantId,
    /// STATEMENT or SUMMARY.
    pub ledger_type: LedgerType,
    /// Canonical period.
    pub period: crate::domain::Period,
    /// `None` = the merchant's own zone.
    pub requested_timezone: Option<Timezone>,
    /// Format.
    pub format: crate::domain::Format,
    /// Stage at creation.
    pub stage: Stage,
    /// The `sub` of the caller.
    pub created_by: String,
    /// Now.
    pub created_at: DateTime<Utc>,
}

/// How long an `Idempotency-Key` is remembered: a key older than this is as new (its request
/// creates again) and is purged by the recovery sweep.
pub const IDEMPOTENCY_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The creation time before which a key has expired, at `now`.
pub fn idempotency_cutoff(now: DateTime<Utc>) -> DateTime<Utc> {
    now - chrono::Duration::from_std(IDEMPOTENCY_TTL).unwrap_or_else(|_| chrono::Duration::days(1))
}

/// An `Idempotency-Key` and the response it produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// The caller the key belongs to (keys are per subject).
    pub subject: String,
    /// The header's value.
    pub key: String,
    /// SHA-256 of the normalised request.
    pub request_hash: String,
    /// The ledger it created.
    pub ledger_id: LedgerId,
    /// Status of the first response.
    pub status_code: u16,
    /// Body of the first response.
    pub body: String,
}

/// The result of [`JobStore::insert_ledger`].
#[derive(Debug)]
pub enum InsertOutcome {
    /// Stored.
    Created(Ledger),
    /// A non-deleted ledger with the same identity exists.
    Exists(LedgerId),
    /// The id is taken (a Snowflake collision across replicas): take a fresh id and retry.
    IdTaken,
    /// The idempotency key was used before: here is its record.
    Replay(IdempotencyRecord),
}

/// Filters of a list request. `merchants = None` means every merchant.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Restrict to these merchants (`Some(vec![])` yields nothing).
    pub merchants: Option<Vec<MerchantId>>,
    /// Status filter.
    pub status: Option<Status>,
    /// Type filter.
    pub ledger_type: Option<LedgerType>,
    /// Period filter (canonical text).
    pub period: Option<String>,
    /// Only ids below this one (the cursor).
    pub before: Option<LedgerId>,
    /// Page size.
    pub limit: u32,
    /// Deleted ledgers too (an audit read); by default they are left out.
    pub include_deleted: bool,
}

/// One pipeline phase of an attempt, for its timeline (`{at, attempt, phase, detail?}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseRecord {
    /// The phase's name (`FETCH_START`, …).
    pub phase: &'static str,
    /// What it found or made, in words.
    pub detail: Option<String>,
    /// When it happened.
    pub at: DateTime<Utc>,
}

/// A completed file, written together with the COMPLETED status.
#[derive(Debug, Clone)]
pub struct CompletedFile {
    /// File metadata shown to users.
    pub info: FileInfo,
    /// Where the encrypted object lives.
    pub object_key: String,
    /// The SHA-256 (hex) of the object's encryption header, which pins the sealed object.
    pub header_sha256: String,
    /// The version's manifest: a compact JWS (SPEC §13).
    pub manifest: String,
    /// The merchant key that seals the object (format 2).
    pub key_id: String,
}

/// A stored file of one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    /// File metadata.
    pub info: FileInfo,
    /// Object key.
    pub object_key: String,
    /// The SHA-256 (hex) of the object's encryption header; `None` for files stored before
    /// it was recorded.
    pub header_sha256: Option<String>,
    /// The version's manifest (compact JWS); `None` for files stored before manifests.
    pub manifest: Option<String>,
    /// The merchant key that seals the object (format 2); `None`: sealed by a root key
    /// directly (format 1, files stored before the key hierarchy).
    pub key_id: Option<String>,
    /// Why the file can no longer be read (`MERCHANT_SHRED`, `RETENTION`), with
    /// `info.shredded_at`.
    pub shred_reason: Option<String>,
}

/// A user's change to a ledger: the status it must have and what to set.
#[derive(Debug, Clone, Copy)]
pub enum UserChange {
    /// REJECTED → PENDING.
    Retry,
    /// COMPLETED → PENDING, version + 1.
    Regenerate,
    /// Soft delete.
    Delete,
}

/// The state a user's change was judged in: it applies only if the ledger is still so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    /// The status the state machine allowed the change from.
    pub status: Status,
    /// The stage it was judged with (regenerate is for DRAFT only).
    pub stage: Stage,
    /// The version it was judged on.
    pub version: u32,
}

impl Expected {
    /// The state of `ledger` as read.
    pub fn of(ledger: &Ledger) -> Self {
        Self {
            status: ledger.status,
            stage: ledger.stage,
            version: ledger.version,
        }
    }
}

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepOutcome {
    /// Expired leases put back to PENDING (re-enqueue them).
    pub requeued: Vec<Ledger>,
    /// PENDING jobs nobody claimed within the timeout (re-enqueue them).
    pub unclaimed: Vec<Ledger>,
    /// Jobs that reached the attempt limit and were REJECTED.
    pub abandoned: Vec<Ledger>,
}

/// The job store port; batches, schedules and webhooks are its [`BatchStore`],
/// [`ScheduleStore`] and [`WebhookStore`] parts.
#[async_trait]
pub trait JobStore: BatchStore + KeyStore + ScheduleStore + WebhookStore + Send + Sync {
    /// Applies pending migrations.
    async fn migrate(&self) -> Result<(), StoreError>;
    /// Names the migrations not applied yet (empty when up to date).
    async fn pending_migrations(&self) -> Result<Vec<String>, StoreError>;
    /// Answers when the backend answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Stores a new PENDING ledger (and its idempotency record, in the same transaction).
    /// `idempotency.status_code/body` are the response the creation will give.
    async fn insert_ledger(
        &self,
        new: &NewLedger,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<InsertOutcome, StoreError>;
    /// Replaces the stored response of an idempotency key (e.g. after an enqueue failure).
    async fn update_idempotency(
        &self,
        subject: &str,
        key: &str,
        status_code: u16,
        body: &str,
    ) -> Result<(), StoreError>;
    /// One ledger, deleted or not.
    async fn get_ledger(&self, id: LedgerId) -> Result<Option<Ledger>, StoreError>;
    /// Non-deleted ledgers, newest first.
    async fn list_ledgers(&self, query: &ListQuery) -> Result<Vec<Ledger>, StoreError>;
    /// The timeline, oldest first.
    async fn list_events(&self, id: LedgerId) -> Result<Vec<TimelineItem>, StoreError>;
    /// Status changes of the ledgers of `merchants` (`None`: every merchant; an empty list
    /// yields nothing without a query) recorded after `since` (exclusive) and after the
    /// timeline position `after` (0 to start), in recording order, at most `limit`: each
    /// with its position, to page on. For live clients catching up on what they missed;
    /// the merchant filter is in the query so a client never costs reading other
    /// merchants' events.
    async fn status_events_since(
        &self,
        merchants: Option<&[MerchantId]>,
        since: chrono::DateTime<chrono::Utc>,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, crate::domain::StatusEvent)>, StoreError>;
    /// The file of one version.
    async fn get_file(&self, id: LedgerId, version: u32) -> Result<Option<StoredFile>, StoreError>;

    /// Removes the idempotency keys created before `before` (expired); returns how many.
    async fn purge_idempotency_keys(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Applies a user's change if the ledger is still exactly as the caller judged it
    /// (status, stage and version); `None` when it changed meanwhile (the caller re-reads
    /// and reports). Checking the status alone would let a regenerate judged on a DRAFT
    /// land on the FINAL version another regenerate produced in between.
    async fn user_change(
        &self,
        id: LedgerId,
        expected: Expected,
        change: UserChange,
        now: DateTime<Utc>,
    ) -> Result<Option<Ledger>, StoreError>;
    /// PENDING → REJECTED with `reason` (the queue refused the job).
    async fn reject_pending(
        &self,
        id: LedgerId,
        reason: &FailureReason,
    ) -> Result<Option<Ledger>, StoreError>;

    /// Atomically PENDING → PROCESSING, attempt + 1, lease until `lease_until`.
    /// `None` when the job is not PENDING (or deleted): the message is a harmless duplicate.
    async fn claim(
        &self,
        id: LedgerId,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<Ledger>, StoreError>;
    /// Extends the lease of `attempt`; false when the attempt lost the job.
    async fn renew_lease(
        &self,
        id: LedgerId,
        attempt: u32,
        lease_until: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Records phases of `attempt` on the timeline, in order, in one statement; false (and
    /// nothing recorded) when the attempt lost the job.
    async fn record_phases(
        &self,
        id: LedgerId,
        attempt: u32,
        phases: &[PhaseRecord],
    ) -> Result<bool, StoreError>;
    /// PROCESSING → COMPLETED for `attempt` with the file, and the attempt's `phases` not
    /// recorded yet, on the timeline before the COMPLETED, in the same transaction; `None`
    /// (and nothing written) when fenced off.
    #[allow(clippy::too_many_arguments)]
    async fn complete(
        &self,
        id: LedgerId,
        attempt: u32,
        file: &CompletedFile,
        stage: Stage,
        timezone: Timezone,
        now: DateTime<Utc>,
        phases: &[PhaseRecord],
    ) -> Result<Option<Ledger>, StoreError>;
    /// PROCESSING → REJECTED for `attempt`; `None` when fenced off.
    async fn fail(
        &self,
        id: LedgerId,
        attempt: u32,
        reason: &FailureReason,
    ) -> Result<Option<Ledger>, StoreError>;
    /// PROCESSING → PENDING for `attempt` (a worker shutting down gives its job back).
    async fn release(
        &self,
        id: LedgerId,
        attempt: u32,
        now: DateTime<Utc>,
    ) -> Result<Option<Ledger>, StoreError>;
    /// The oldest PENDING, non-deleted ledger ids (the in-database queue reads this).
    async fn pending_ids(&self, limit: u32) -> Result<Vec<LedgerId>, StoreError>;
    /// Resets expired leases (counting a stall), finds PENDING jobs enqueued before
    /// `pending_before` that nobody claimed, abandons jobs whose stalls since the last user
    /// action reach `max_attempts`. Each reset is conditional, so several
    /// sweepers never reset one job twice.
    async fn sweep(
        &self,
        now: DateTime<Utc>,
        pending_before: DateTime<Utc>,
        max_attempts: u32,
    ) -> Result<SweepOutcome, StoreError>;

    /// Leases a Snowflake node id (0–1023) no live process holds, to `holder` until
    /// `until`; `None` when all 1024 are taken. Expired leases are taken over.
    async fn lease_node_id(
        &self,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<u16>, StoreError>;
    /// Extends `holder`'s lease of `node_id`; false when it was lost.
    async fn renew_node_id(
        &self,
        node_id: u16,
        holder: &str,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Gives the node id back (on shutdown).
    async fn release_node_id(&self, node_id: u16, holder: &str) -> Result<(), StoreError>;

    /// Every grant.
    async fn list_grants(&self) -> Result<Vec<Grant>, StoreError>;
    /// Adds a grant; false when it existed.
    async fn add_grant(&self, grant: &Grant) -> Result<bool, StoreError>;
    /// Removes a grant; false when it did not exist.
    async fn remove_grant(&self, grant: &Grant) -> Result<bool, StoreError>;
    /// The grants' revision — a random number that changes whenever grants change (cache
    /// invalidation across processes; random, so it also tells databases apart) — and the
    /// digest of the grant set in force at it, which a cached copy must match to be used.
    async fn policy_revision(&self) -> Result<PolicyRevision, StoreError>;
}

/// Opens the job store `database` names (it may still need migrating).
pub async fn open(
    database: &crate::config::DatabaseKind,
) -> anyhow::Result<std::sync::Arc<dyn JobStore>> {
    use crate::config::DatabaseKind;
    use anyhow::Context as _;
    Ok(match database {
        DatabaseKind::Sqlite(path) => std::sync::Arc::new(
            sqlite::SqliteStore::open(path)
                .await
                .with_context(|| format!("opening the job store at {}", path.display()))?,
        ),
        DatabaseKind::Postgres(url) => std::sync::Arc::new(
            postgres::PostgresStore::connect(url.expose())
                .await
                .context("connecting to APP_ENV_DATABASE_URL")?,
        ),
    })
}

#[async_trait]
impl crate::ready::Ready for dyn JobStore {
    async fn ready(&self) -> Result<(), String> {
        self.ping().await.map_err(|e| e.to_string())
    }
}
