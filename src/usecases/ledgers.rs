//! What a caller can do with ledgers, whoever the caller is (HTTP today; batches, schedules
//! and a CLI later): create one (idempotently, retrying an id collision), queue it or record
//! why it could not be, read and list them, retry, regenerate or delete one, and open one's
//! file. Inputs are domain values and the caller's identity; every access is checked here,
//! and every outcome is a domain value or a [`LedgerError`].

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::LedgerError;
use crate::auth::{
    AccessError, Authorizer, Caller, MerchantScope, Permission, assert_merchant_access,
};
use crate::crypto::Binding;
use crate::domain::ledger::stage_at;
use crate::domain::{
    Action, FailureReason, FileInfo, Format, InvalidInput, Ledger, LedgerId, LedgerType,
    MerchantId, Period, Snowflake, Status, TimelineItem, Timezone, TransitionError,
};
use crate::notify::Notifier;
use crate::queue::{JobMessage, Queue};
use crate::store::{
    Expected, IdempotencyRecord, InsertOutcome, JobStore, ListQuery, NewLedger, StoredFile,
    UserChange,
};
use crate::vault::{OpenError, Opened, Recorded, Vault};

/// Ids tried before a create gives up on Snowflake collisions with other replicas.
const ID_ATTEMPTS: usize = 8;

/// The ports the ledger use cases work with.
#[derive(Clone)]
pub struct Ledgers {
    /// Job store.
    pub store: Arc<dyn JobStore>,
    /// Queue (producing side).
    pub queue: Arc<dyn Queue>,
    /// Status events.
    pub notifier: Notifier,
    /// Authorization decisions.
    pub authz: Arc<Authorizer>,
    /// Ledger ids.
    pub ids: Arc<Snowflake>,
    /// The stored files.
    pub vault: Vault,
}

/// Proof that a caller may create ledgers of a merchant: only [`Ledgers::authorize_create`]
/// makes one.
pub struct CreateGrant {
    subject: String,
    merchant: MerchantId,
}

/// Proof that a caller may read deleted ledgers (an audit read): only [`Ledgers::audit`]
/// makes one.
#[derive(Debug, Clone, Copy)]
pub struct AuditRead(());

/// A validated request for a new ledger.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    /// The merchant.
    pub merchant_id: MerchantId,
    /// What the document contains.
    pub ledger_type: LedgerType,
    /// The period.
    pub period: Period,
    /// The document format.
    pub format: Format,
    /// The zone asked for; `None`: the merchant's own.
    pub timezone: Option<Timezone>,
}

impl CreateRequest {
    /// A request for a ledger of a period that has started by `now` (in the requested zone;
    /// without one, in the earliest zone on Earth, since the merchant's is not known yet: no
    /// period that has started anywhere is refused).
    pub fn new(
        merchant_id: MerchantId,
        ledger_type: LedgerType,
        period: Period,
        format: Format,
        timezone: Option<Timezone>,
        now: DateTime<Utc>,
    ) -> Result<Self, InvalidInput> {
        let earliest = Timezone(chrono_tz::Pacific::Kiritimati);
        if !period.has_started(timezone.unwrap_or(earliest), now) {
            return Err(InvalidInput::new(
                "period",
                "the period has not started yet",
            ));
        }
        Ok(Self {
            merchant_id,
            ledger_type,
            period,
            format,
            timezone,
        })
    }

    /// A hash of the normalised request: the same request in other whitespace or field
    /// order is the same request.
    pub fn fingerprint(&self) -> String {
        let canonical = format!(
            "{}|{}|{}|{}|{}",
            self.merchant_id,
            self.ledger_type,
            self.period,
            self.format,
            self.timezone.map(|t| t.name()).unwrap_or("")
        );
        hex::encode(Sha256::digest(canonical.as_bytes()))
    }
}

/// How a caller's replies are remembered under an idempotency key, in the caller's own
/// representation, so that a repeated request gets the first reply again.
pub trait Replies: Send + Sync {
    /// The reply (status, body) to a ledger stored and queued.
    fn accepted(&self, ledger: &Ledger) -> Result<(u16, String), LedgerError>;
    /// The reply (status, body) to a ledger stored as REJECTED/ENQUEUE_FAILED.
    fn enqueue_failed(&self, ledger: &Ledger) -> (u16, String);
}

/// An idempotency key and how the caller's replies are remembered under it.
pub struct Idempotency<'a> {
    /// The key, scoped to the caller.
    pub key: String,
    /// The caller's replies.
    pub replies: &'a dyn Replies,
}

/// What a create did.
#[derive(Debug)]
pub enum Created {
    /// Stored and queued: the ledger, PENDING.
    Queued(Box<Ledger>),
    /// The same key and request came before: the first reply, as remembered.
    Replayed {
        /// Its status.
        status: u16,
        /// Its body.
        body: String,
    },
}

/// A user's change that queues the ledger again; each carries the permission it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// A REJECTED ledger back to PENDING.
    Retry,
    /// A new version of a COMPLETED DRAFT ledger.
    Regenerate,
}

impl Requeue {
    /// The permission the caller needs on the ledger's merchant.
    pub fn permission(self) -> Permission {
        match self {
            Requeue::Retry => Permission::Retry,
            Requeue::Regenerate => Permission::Regenerate,
        }
    }

    fn action(self) -> Action {
        match self {
            Requeue::Retry => Action::Retry,
            Requeue::Regenerate => Action::Regenerate,
        }
    }

    fn store_change(self) -> UserChange {
        match self {
            Requeue::Retry => UserChange::Retry,
            Requeue::Regenerate => UserChange::Regenerate,
        }
    }
}

/// What a list asks for.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this merchant's (the caller must may read it); `None`: every merchant the
    /// caller may read.
    pub merchant: Option<MerchantId>,
    /// Only this status.
    pub status: Option<Status>,
    /// Only this type.
    pub ledger_type: Option<LedgerType>,
    /// Only this period.
    pub period: Option<Period>,
    /// Only ledgers older than this one (the previous page's last).
    pub before: Option<LedgerId>,
    /// Page size.
    pub limit: u32,
}

/// A page of ledgers, newest first.
#[derive(Debug)]
pub struct Page {
    /// At most `limit` ledgers.
    pub items: Vec<Ledger>,
    /// The last item, when more follow.
    pub more_after: Option<LedgerId>,
}

/// An opened file of a ledger, ready to stream.
pub struct Download {
    /// What the file is.
    pub info: FileInfo,
    /// Its plaintext.
    pub content: Opened,
}

impl Ledgers {
    /// Checks that `caller` may create ledgers of `merchant`.
    pub async fn authorize_create(
        &self,
        caller: &Caller,
        merchant: &MerchantId,
    ) -> Result<CreateGrant, LedgerError> {
        assert_merchant_access(&self.authz, caller, merchant, Permission::Create).await?;
        Ok(CreateGrant {
            subject: caller.subject.clone(),
            merchant: merchant.clone(),
        })
    }

    /// Creates a ledger and queues it. At most one non-deleted ledger exists per merchant,
    /// type, period, requested timezone and format; with an idempotency key, the same key
    /// and request replay the first reply, the same key with another request is refused.
    pub async fn create(
        &self,
        grant: CreateGrant,
        request: CreateRequest,
        idempotency: Option<Idempotency<'_>>,
    ) -> Result<Created, LedgerError> {
        if grant.merchant != request.merchant_id {
            return Err(LedgerError::Internal(
                "the create grant is for another merchant".into(),
            ));
        }
        let now = Utc::now();
        for _ in 0..ID_ATTEMPTS {
            let new = NewLedger {
                id: self.ids.next_id(),
                merchant_id: request.merchant_id.clone(),
                ledger_type: request.ledger_type,
                period: request.period,
                requested_timezone: request.timezone,
                format: request.format,
                stage: stage_at(
                    &request.period,
                    request.timezone.unwrap_or(Timezone::UTC),
                    now,
                ),
                created_by: grant.subject.clone(),
                created_at: now,
            };
            let record = match &idempotency {
                Some(i) => {
                    let (status_code, body) = i.replies.accepted(&pending(&new))?;
                    Some(IdempotencyRecord {
                        subject: grant.subject.clone(),
                        key: i.key.clone(),
                        request_hash: request.fingerprint(),
                        ledger_id: new.id,
                        status_code,
                        body,
                    })
                }
                None => None,
            };
            match self.store.insert_ledger(&new, record.as_ref()).await? {
                InsertOutcome::Created(ledger) => {
                    let remembered = idempotency.as_ref().map(|i| (&grant.subject, i));
                    return self
                        .enqueue_or_reject(ledger, remembered)
                        .await
                        .map(|l| Created::Queued(Box::new(l)));
                }
                InsertOutcome::Exists(id) => return Err(LedgerError::Exists(id)),
                InsertOutcome::Replay(found) => {
                    if found.request_hash != request.fingerprint() {
                        return Err(LedgerError::IdempotencyMismatch);
                    }
                    return Ok(Created::Replayed {
                        status: found.status_code,
                        body: found.body,
                    });
                }
                // A Snowflake collision with another replica: take a fresh id.
                InsertOutcome::IdTaken => continue,
            }
        }
        Err(LedgerError::Internal(
            "could not allocate a unique ledger id".into(),
        ))
    }

    /// Queues a PENDING ledger. A refused enqueue leaves it REJECTED/ENQUEUE_FAILED (so a
    /// retry works), remembers that reply under the idempotency key if any, and is
    /// [`LedgerError::EnqueueFailed`].
    async fn enqueue_or_reject(
        &self,
        ledger: Ledger,
        idempotency: Option<(&String, &Idempotency<'_>)>,
    ) -> Result<Ledger, LedgerError> {
        self.notifier.status(&ledger).await;
        let message = JobMessage {
            ledger_id: ledger.id,
            merchant_id: ledger.merchant_id.clone(),
            redelivery: false,
        };
        let Err(e) = self.queue.enqueue(&message).await else {
            return Ok(ledger);
        };
        tracing::error!(target: "ledger::api::ledgers", ledgerId = %ledger.id, merchantId = %ledger.merchant_id, errorCode = "ENQUEUE_FAILED", error = %e, "enqueue failed");
        metrics::counter!("ledger_jobs_total", "status" => "REJECTED", "error_code" => "ENQUEUE_FAILED")
            .increment(1);
        let reason = FailureReason {
            error_code: "ENQUEUE_FAILED".into(),
            message: "the queue did not accept the job; retry it".into(),
            retryable: true,
            at: Utc::now(),
        };
        let rejected = match self.store.reject_pending(ledger.id, &reason).await {
            Ok(Some(l)) => l,
            Ok(None) | Err(_) => ledger,
        };
        self.notifier.status(&rejected).await;
        if let Some((subject, i)) = idempotency {
            let (status, body) = i.replies.enqueue_failed(&rejected);
            if let Err(e) = self
                .store
                .update_idempotency(subject, &i.key, status, &body)
                .await
            {
                tracing::warn!(target: "ledger::api::ledgers", error = %e, "could not record the idempotent response");
            }
        }
        Err(LedgerError::EnqueueFailed(Box::new(rejected)))
    }

    /// Checks that `caller` may read deleted ledgers: only one who may delete every
    /// merchant's ledgers (platform_admin).
    pub async fn audit(&self, caller: &Caller) -> Result<AuditRead, LedgerError> {
        match self.scope(caller, Permission::Delete).await? {
            MerchantScope::All => Ok(AuditRead(())),
            MerchantScope::Only(_) => Err(LedgerError::AuditOnly),
        }
    }

    async fn scope(&self, caller: &Caller, perm: Permission) -> Result<MerchantScope, LedgerError> {
        self.authz
            .scope(&caller.subject, perm)
            .await
            .map_err(|e| LedgerError::Unavailable(e.to_string()))
    }

    /// The ledger `id` if the caller may use it with `perm`; anything else — a deleted
    /// ledger too, unless `audit` — is the same [`LedgerError::NotFound`], so existence is
    /// not leaked.
    pub async fn load(
        &self,
        caller: &Caller,
        id: LedgerId,
        perm: Permission,
        audit: Option<AuditRead>,
    ) -> Result<Ledger, LedgerError> {
        const MISSING: LedgerError = LedgerError::NotFound("no such ledger");
        let ledger = self.store.get_ledger(id).await?.ok_or(MISSING)?;
        match assert_merchant_access(&self.authz, caller, &ledger.merchant_id, perm).await {
            Ok(()) if ledger.deleted_at.is_some() && audit.is_none() => Err(MISSING),
            Ok(()) => Ok(ledger),
            Err(AccessError::Denied { .. }) => Err(MISSING),
            Err(e) => Err(e.into()),
        }
    }

    /// A ledger's timeline, oldest first.
    pub async fn timeline(
        &self,
        caller: &Caller,
        id: LedgerId,
        audit: Option<AuditRead>,
    ) -> Result<Vec<TimelineItem>, LedgerError> {
        let ledger = self.load(caller, id, Permission::Read, audit).await?;
        Ok(self.store.list_events(ledger.id).await?)
    }

    /// A page of the ledgers the caller may read, newest first; naming a merchant the caller
    /// may not read is [`LedgerError::Forbidden`].
    pub async fn list(
        &self,
        caller: &Caller,
        filter: ListFilter,
        audit: Option<AuditRead>,
    ) -> Result<Page, LedgerError> {
        let merchants = match filter.merchant {
            Some(merchant) => {
                assert_merchant_access(&self.authz, caller, &merchant, Permission::Read).await?;
                Some(vec![merchant])
            }
            None => match self.scope(caller, Permission::Read).await? {
                MerchantScope::All => None,
                MerchantScope::Only(list) => Some(list),
            },
        };
        let limit = filter.limit as usize;
        let query = ListQuery {
            merchants,
            status: filter.status,
            ledger_type: filter.ledger_type,
            period: filter.period.map(|p| p.to_string()),
            before: filter.before,
            limit: filter.limit + 1,
            include_deleted: audit.is_some(),
        };
        let mut items = self.store.list_ledgers(&query).await?;
        let more_after = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|l| l.id)
        } else {
            None
        };
        Ok(Page { items, more_after })
    }

    /// Retries or regenerates the ledger `id`: judged by the state machine, stored, queued.
    pub async fn requeue(
        &self,
        caller: &Caller,
        id: LedgerId,
        requeue: Requeue,
    ) -> Result<Ledger, LedgerError> {
        let ledger = self
            .change(
                caller,
                id,
                requeue.permission(),
                requeue.action(),
                requeue.store_change(),
            )
            .await?;
        // Queued again: a finished batch it belongs to runs again (SPEC §11). The ledger's
        // change is made; a batch left showing finished is reported, not undone.
        if let Err(e) = self.store.reopen_batches(ledger.id, Utc::now()).await {
            tracing::error!(target: "ledger::api::ledgers", ledgerId = %ledger.id, error = %e, "re-opening the batches of a requeued ledger failed");
        }
        self.enqueue_or_reject(ledger, None).await
    }

    /// Deletes the ledger `id` (softly: its files stay).
    pub async fn delete(&self, caller: &Caller, id: LedgerId) -> Result<Ledger, LedgerError> {
        let deleted = self
            .change(
                caller,
                id,
                Permission::Delete,
                Action::Delete,
                UserChange::Delete,
            )
            .await?;
        tracing::info!(target: "ledger::api::ledgers", ledgerId = %deleted.id, merchantId = %deleted.merchant_id, subject = %caller.subject, "ledger deleted (soft)");
        Ok(deleted)
    }

    /// Applies a user's change through the state machine, then the store.
    async fn change(
        &self,
        caller: &Caller,
        id: LedgerId,
        perm: Permission,
        action: Action,
        store_change: UserChange,
    ) -> Result<Ledger, LedgerError> {
        // A deleted ledger is a 404 for every change, a second DELETE included.
        let ledger = self.load(caller, id, perm, None).await?;
        ledger.status.apply(action, ledger.stage)?;
        if let Some(changed) = self
            .store
            .user_change(ledger.id, Expected::of(&ledger), store_change, Utc::now())
            .await?
        {
            return Ok(changed);
        }
        // Changed under us: report against the fresh state.
        let fresh = self
            .store
            .get_ledger(ledger.id)
            .await?
            .ok_or(LedgerError::NotFound("no such ledger"))?;
        if fresh.deleted_at.is_some() {
            // Deleted meanwhile: gone for every action, a racing second DELETE too.
            return Err(LedgerError::NotFound("no such ledger"));
        }
        fresh.status.apply(action, fresh.stage)?;
        Err(LedgerError::Conflict(TransitionError {
            code: "JOB_IN_PROGRESS",
            message: "the ledger changed meanwhile; read it and try again",
        }))
    }

    /// Opens the file of `version` (default: the newest completed one) of `ledger`, which
    /// [`Ledgers::load`] gave with [`Permission::Download`]. The first chunk is read and
    /// verified before this returns.
    pub async fn open_file(
        &self,
        ledger: &Ledger,
        version: Option<u32>,
    ) -> Result<Download, LedgerError> {
        let mut file = self.stored_file(ledger, version).await?;
        let mut moved = false;
        loop {
            shredded(&file)?;
            let binding = Binding {
                ledger_id: ledger.id.as_i64(),
                version: file.info.version,
            };
            let opened = self
                .vault
                .open(
                    &file.object_key,
                    binding,
                    recorded(&file),
                    &ledger.merchant_id,
                    file.key_id.as_deref(),
                )
                .await;
            match opened {
                Ok(content) => {
                    return Ok(Download {
                        info: file.info,
                        content,
                    });
                }
                // `ledger keys rewrap` re-sealed the file and removed the object read from
                // the record: read the record again, once.
                Err(OpenError::Storage(crate::storage::StorageError::NotFound(_))) if !moved => {
                    moved = true;
                    let again = self.stored_file(ledger, Some(file.info.version)).await?;
                    if again.object_key == file.object_key {
                        return Err(open_error(
                            ledger,
                            &file,
                            OpenError::Storage(crate::storage::StorageError::NotFound(
                                file.object_key.clone(),
                            )),
                        ));
                    }
                    file = again;
                }
                Err(e) => return Err(open_error(ledger, &file, e)),
            }
        }
    }

    /// The manifest (compact JWS, SPEC §13) of `version` (default: the newest completed
    /// one) of `ledger`, which [`Ledgers::load`] gave with [`Permission::Download`].
    pub async fn manifest(
        &self,
        ledger: &Ledger,
        version: Option<u32>,
    ) -> Result<String, LedgerError> {
        let file = self.stored_file(ledger, version).await?;
        shredded(&file)?;
        file.manifest.ok_or(LedgerError::NotFound(
            "this version was completed before manifests existed and has none",
        ))
    }

    /// The stored file of `version` (default: the newest completed one) of `ledger`.
    async fn stored_file(
        &self,
        ledger: &Ledger,
        version: Option<u32>,
    ) -> Result<StoredFile, LedgerError> {
        let version = match (version, &ledger.file) {
            (Some(v), _) => v,
            (None, Some(f)) => f.version,
            (None, None) => return Err(not_ready(ledger)),
        };
        self.store
            .get_file(ledger.id, version)
            .await?
            .ok_or_else(|| {
                if version == ledger.version {
                    not_ready(ledger)
                } else {
                    LedgerError::NotFound("no such version")
                }
            })
    }
}

/// What the store recorded of `file` to check the object against: its header's digest,
/// or for files stored before that was recorded, its plaintext's.
fn recorded(file: &StoredFile) -> Recorded<'_> {
    match &file.header_sha256 {
        Some(header) => Recorded::Header(header),
        None => Recorded::Content(&file.info.sha256),
    }
}

/// The ledger a successful insert of `new` stores (for the idempotency record).
fn pending(new: &NewLedger) -> Ledger {
    Ledger {
        id: new.id,
        merchant_id: new.merchant_id.clone(),
        ledger_type: new.ledger_type,
        period: new.period,
        requested_timezone: new.requested_timezone,
        timezone: None,
        format: new.format,
        stage: new.stage,
        status: Status::Pending,
        version: 1,
        attempt_count: 0,
        failure_reason: None,
        file: None,
        created_by: new.created_by.clone(),
        created_at: new.created_at,
        updated_at: new.created_at,
        started_at: None,
        completed_at: None,
        deleted_at: None,
        lease_until: None,
    }
}

/// Why `ledger`'s current version has no file to download, and what the caller can do.
fn not_ready(ledger: &Ledger) -> LedgerError {
    LedgerError::NotReady(match (&ledger.status, &ledger.failure_reason) {
        (Status::Rejected, reason) => format!(
            "version {} was rejected{} and has no file (see the ledger's failureReason); \
             POST /ledgers/{}/retry generates it again",
            ledger.version,
            reason
                .as_ref()
                .map(|r| format!(" with {}", r.error_code))
                .unwrap_or_default(),
            ledger.id
        ),
        _ => format!(
            "version {} is {}: its file can be downloaded once the ledger is COMPLETED",
            ledger.version, ledger.status
        ),
    })
}

/// 410 for a file destroyed on purpose (its key shredded, or retention).
fn shredded(file: &StoredFile) -> Result<(), LedgerError> {
    match file.info.shredded_at {
        Some(at) => Err(LedgerError::Shredded(format!(
            "version {}'s file was {} on {}: it can never be downloaded again",
            file.info.version,
            match file.shred_reason.as_deref() {
                Some("RETENTION") => "removed by the retention policy",
                _ => "destroyed (its merchant's key was shredded)",
            },
            at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        ))),
        None => Ok(()),
    }
}

/// A file that could not be opened: an unreachable storage backend is unavailable (worth
/// retrying); a key that cannot be had is an operator's problem, answered 503
/// `KEY_UNAVAILABLE` and logged with the key and the ledger; a shredded key is 410; a
/// recorded file that is missing or does not decrypt to what was recorded is lost data, an
/// internal error naming the object key.
fn open_error(ledger: &Ledger, file: &StoredFile, e: OpenError) -> LedgerError {
    use crate::crypto::CryptoError;
    use crate::keys::KeyError;
    use crate::storage::StorageError;
    let object_key = &file.object_key;
    let unavailable = |key_id: &str, reason: &dyn std::fmt::Display| {
        crate::keys::count_unavailable();
        tracing::error!(target: "ledger::keys", ledger_id = %ledger.id, merchantId = %ledger.merchant_id,
            version = file.info.version, keyId = %key_id, objectKey = %object_key, reason = %reason,
            "a download's key is unavailable");
        LedgerError::KeyUnavailable(format!("key {key_id} of ledger {}: {reason}", ledger.id))
    };
    match e {
        OpenError::Storage(StorageError::Backend(cause)) => {
            LedgerError::Unavailable(format!("object storage reading {object_key}: {cause}"))
        }
        OpenError::Key(KeyError::Unavailable { key_id, reason }) => unavailable(&key_id, &reason),
        // A format-1 file whose local master key is no longer configured (for a format-2
        // file, a header naming another key than the recorded one is no missing key).
        OpenError::Crypto(CryptoError::UnknownKeyId(key_id)) if file.key_id.is_none() => {
            unavailable(
                &format!("{}{key_id}", crate::keys::LOCAL_PREFIX),
                &"the master key is in neither APP_ENV_LEDGER_ENCRYPTION_KEY nor APP_ENV_LEDGER_ENCRYPTION_KEYS_OLD",
            )
        }
        OpenError::Key(KeyError::Shredded(_)) => LedgerError::Shredded(format!(
            "version {}'s file was destroyed (its merchant's key was shredded): it can never be \
             downloaded again",
            file.info.version
        )),
        OpenError::Key(KeyError::Store(e)) => e.into(),
        other => LedgerError::Internal(format!("{object_key}: {other}")),
    }
}
