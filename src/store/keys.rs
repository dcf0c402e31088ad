//! The key half of the job store port (SPEC §15): merchant keys (stored wrapped by the
//! root), the files each key seals, the operator acts on them (rewrap, shred, retention)
//! and their audit log.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreError;
use crate::domain::{LedgerId, MerchantId};

/// A merchant key as stored: wrapped by a root key. `Debug` leaves the wrapped key out.
#[derive(Clone, PartialEq, Eq)]
pub struct MerchantKeyRow {
    /// Random, 32 hex characters; named in the header of every object it seals.
    pub key_id: String,
    /// Whose key.
    pub merchant_id: MerchantId,
    /// The root key that wraps it (`local:<id>` or `kms:<key id>`).
    pub root_key_id: String,
    /// The wrapped key (base64); empty once shredded.
    pub wrapped: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it was shredded (destroyed), if it was.
    pub shredded_at: Option<DateTime<Utc>>,
}

/// A key of the service itself (e.g. the one sealing webhook secrets), wrapped by the root.
/// `Debug` leaves the wrapped key out.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceKeyRow {
    /// What it is for.
    pub name: String,
    /// The root key that wraps it.
    pub root_key_id: String,
    /// The wrapped key (base64).
    pub wrapped: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

/// A webhook endpoint's sealed secrets, as stored (deleted endpoints included: their
/// deliveries may still be attempted). `Debug` shows the id only.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedSecrets {
    /// The endpoint.
    pub webhook_id: i64,
    /// Its secret, sealed.
    pub secret: String,
    /// The secret a rotation replaced, sealed, if it is kept.
    pub previous: Option<String>,
}

impl std::fmt::Debug for MerchantKeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MerchantKeyRow")
            .field("key_id", &self.key_id)
            .field("merchant_id", &self.merchant_id)
            .field("root_key_id", &self.root_key_id)
            .field("created_at", &self.created_at)
            .field("shredded_at", &self.shredded_at)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ServiceKeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceKeyRow")
            .field("name", &self.name)
            .field("root_key_id", &self.root_key_id)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for SealedSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedSecrets")
            .field("webhook_id", &self.webhook_id)
            .finish_non_exhaustive()
    }
}

/// A file still sealed by a root key directly (format 1), which a rewrap re-seals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootSealedFile {
    /// Its ledger.
    pub ledger_id: LedgerId,
    /// The ledger's merchant.
    pub merchant_id: MerchantId,
    /// Its version.
    pub version: u32,
    /// The attempt that made it.
    pub attempt: u32,
    /// Where the object is.
    pub object_key: String,
    /// The digest of its encryption header, if recorded.
    pub header_sha256: Option<String>,
    /// The plaintext's SHA-256.
    pub sha256: String,
}

/// A re-sealed object that replaces a file's object, if the file is still the one read.
#[derive(Debug, Clone)]
pub struct Resealed {
    /// Its ledger.
    pub ledger_id: LedgerId,
    /// Its version.
    pub version: u32,
    /// The object it replaces (the swap only happens if it is still recorded).
    pub old_object_key: String,
    /// The new object.
    pub object_key: String,
    /// The new object's header digest.
    pub header_sha256: String,
    /// The merchant key that seals it.
    pub key_id: String,
}

/// How many keys and files each root key protects (`ledger keys status`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyCounts {
    /// Per root key id: live merchant keys wrapped by it, and the readable files they seal.
    pub roots: Vec<RootCount>,
    /// Readable files sealed by a root key directly (format 1): until a rewrap re-seals
    /// them, any root key may still be needed.
    pub root_sealed_files: u64,
    /// Files no longer readable (shredded or removed by retention).
    pub shredded_files: u64,
    /// Shredded merchant keys.
    pub shredded_keys: u64,
}

/// One root key's share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootCount {
    /// `local:<id>` or `kms:<key id>`.
    pub root_key_id: String,
    /// Live merchant keys it wraps.
    pub merchant_keys: u64,
    /// Service keys it wraps.
    pub service_keys: u64,
    /// Readable files those keys seal.
    pub files: u64,
}

/// What a shred did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shredded {
    /// Keys destroyed (0: the merchant had no live key).
    pub keys: u64,
    /// Files made unreadable.
    pub files: u64,
}

/// One line of the key audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// When.
    pub at: DateTime<Utc>,
    /// Who (the operator as the command was told, or the service's own task).
    pub actor: String,
    /// `MERCHANT_SHRED`, `ROOT_REWRAP`, `RETENTION`.
    pub action: String,
    /// The merchant concerned, if one.
    pub merchant_id: Option<String>,
    /// The key concerned, if one.
    pub key_id: Option<String>,
    /// What was done, in words.
    pub detail: String,
}

/// Why a shred was refused.
#[derive(Debug, thiserror::Error)]
pub enum ShredError {
    /// Some of the merchant's files are sealed by the root key directly, or a rewrap has
    /// not removed the root-sealed object it replaced: destroying the merchant key would
    /// leave them readable.
    #[error(
        "{0} file(s) of this merchant are still sealed by the root key directly (format 1), \
         or their root-sealed object is not removed yet; destroying the merchant key would \
         not make them unreadable: run `ledger keys rewrap` first"
    )]
    RootSealed(u64),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The key half of the job store port.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// The merchant's live key, if it has one.
    async fn live_merchant_key(
        &self,
        merchant: &MerchantId,
    ) -> Result<Option<MerchantKeyRow>, StoreError>;
    /// One merchant key, live or shredded.
    async fn merchant_key(&self, key_id: &str) -> Result<Option<MerchantKeyRow>, StoreError>;
    /// Stores a new live key; false when the merchant has one already (another process
    /// made it first: use that one).
    async fn insert_merchant_key(&self, key: &MerchantKeyRow) -> Result<bool, StoreError>;
    /// A service key.
    async fn service_key(&self, name: &str) -> Result<Option<ServiceKeyRow>, StoreError>;
    /// Stores a service key; false when it exists already (another process made it).
    async fn insert_service_key(&self, key: &ServiceKeyRow) -> Result<bool, StoreError>;
    /// Service keys not wrapped by `root_key_id`.
    async fn service_keys_not_under(
        &self,
        root_key_id: &str,
    ) -> Result<Vec<ServiceKeyRow>, StoreError>;
    /// Replaces a service key's wrapping, if it is still wrapped by `from_root`.
    async fn rewrap_service_key(
        &self,
        name: &str,
        from_root: &str,
        to_root: &str,
        wrapped: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Webhook endpoints' sealed secrets, by id after `after`.
    async fn sealed_secrets(
        &self,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<SealedSecrets>, StoreError>;
    /// Replaces an endpoint's sealed secrets with `new`, if they are still `old`.
    async fn reseal_secrets(
        &self,
        old: &SealedSecrets,
        new: &SealedSecrets,
    ) -> Result<bool, StoreError>;
    /// Live merchant keys not wrapped by `root_key_id`, by key id after `after`.
    async fn keys_not_under(
        &self,
        root_key_id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<MerchantKeyRow>, StoreError>;
    /// Replaces a live key's wrapping, if it is still wrapped by `from_root` as read;
    /// false otherwise (shredded, or re-wrapped by someone else).
    async fn rewrap_merchant_key(
        &self,
        key_id: &str,
        from_root: &str,
        to_root: &str,
        wrapped: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Readable files sealed by a root key directly, in (ledger, version) order after
    /// `after`.
    async fn root_sealed_files(
        &self,
        after: Option<(LedgerId, u32)>,
        limit: u32,
    ) -> Result<Vec<RootSealedFile>, StoreError>;
    /// Records a re-sealed object for its file, if the file still has the object it was
    /// read with and is still root-sealed and readable; false otherwise. The object it
    /// replaces is recorded as to be removed ([`KeyStore::replaced_objects`]).
    async fn swap_file_object(&self, resealed: &Resealed) -> Result<bool, StoreError>;
    /// Objects a rewrap replaced and has not removed yet: (ledger, version, object key).
    async fn replaced_objects(
        &self,
        limit: u32,
    ) -> Result<Vec<(LedgerId, u32, String)>, StoreError>;
    /// Forgets a replaced object once it was removed.
    async fn forget_replaced(
        &self,
        ledger: LedgerId,
        version: u32,
        object_key: &str,
    ) -> Result<(), StoreError>;
    /// The counts of `ledger keys status` and `ledger_files_by_master_key`.
    async fn key_counts(&self) -> Result<KeyCounts, StoreError>;
    /// Destroys the merchant's live key (its wrapped bytes erased), marks every file it
    /// sealed as shredded and records who did it, in one transaction. Refused while any
    /// readable file of the merchant is still sealed by a root key directly.
    async fn shred_merchant(
        &self,
        merchant: &MerchantId,
        actor: &str,
        at: DateTime<Utc>,
    ) -> Result<Shredded, ShredError>;
    /// Takes (or renews) the lease `name` for `holder` until `until`, if it is free, expired
    /// at `now`, or `holder`'s already; the holder and end of the lease that is in the way
    /// otherwise.
    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Result<(), (String, DateTime<Utc>)>, StoreError>;
    /// Gives the lease up, if `holder` still has it.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError>;
    /// FINAL ledgers completed before `before` whose objects retention has not removed yet
    /// (also those a pass marked and did not finish), by id after `after`.
    async fn expired_ledgers(
        &self,
        before: DateTime<Utc>,
        after: Option<LedgerId>,
        limit: u32,
    ) -> Result<Vec<(LedgerId, MerchantId)>, StoreError>;
    /// Marks the ledger's files as removed by retention (`shredded_at`, `RETENTION`), before
    /// their objects are removed; the number of files newly marked.
    async fn mark_retained(&self, ledger: LedgerId, at: DateTime<Utc>) -> Result<u64, StoreError>;
    /// Records that the ledger's objects are gone.
    async fn mark_removed(&self, ledger: LedgerId, at: DateTime<Utc>) -> Result<(), StoreError>;
    /// Appends to the key audit log.
    async fn record_audit(&self, record: &AuditRecord) -> Result<(), StoreError>;
    /// The audit log, newest first (one merchant's or everyone's).
    async fn audit_log(
        &self,
        merchant: Option<&MerchantId>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError>;
}
