//! The key hierarchy (SPEC §15): root key → merchant key → file data key.
//!
//! # What this module owns
//!
//! - The root: the local master keys (the environment's, or the embedded default's key
//!   file) or a KMS key ([`Root`]). The root only ever wraps merchant keys (and, before the
//!   hierarchy, files' data keys: format-1 objects, still opened with the local keys).
//! - Merchant keys: made on a merchant's first file, stored wrapped by the root in the job
//!   store, unwrapped on use through a bounded cache ([`cache`]), and re-wrapped when the
//!   root changes ([`rewrap`]), which never touches a file.
//! - What a missing key is: [`KeyError::Unavailable`] (an operator's problem: a dropped
//!   root key, a KMS that is down or refuses) or [`KeyError::Shredded`] (destroyed on
//!   purpose), never a generic failure.
//!
//! # What it must never do
//!
//! - Log or put into an error any key byte or wrapped key: errors name key ids only.
//! - Hand out a shredded merchant key, or keep an unwrapped key longer than the cache's
//!   time to live.

pub mod cache;
pub mod commands;
pub mod kms;
pub mod retention;
pub mod rewrap;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::Utc;
use zeroize::Zeroizing;

use crate::crypto::{CryptoError, Keyring, MasterKey};
use crate::domain::MerchantId;
use crate::store::StoreError;
use crate::store::keys::{KeyStore, MerchantKeyRow, ServiceKeyRow};

use self::cache::KeyCache;

/// Prefix of a local master key's root id (`local:<8 hex>`).
pub const LOCAL_PREFIX: &str = "local:";
/// Prefix of a KMS key's root id (`kms:<key id>`).
pub const KMS_PREFIX: &str = "kms:";
/// Unwrapped merchant keys kept in memory at most.
pub const CACHE_CAPACITY: usize = 10_000;
/// How long an unwrapped merchant key stays in memory.
pub const CACHE_TTL: Duration = Duration::from_secs(300);
/// How long a merchant's live key row is reused for new files before it is read again. A
/// job that seals with a key shredded meanwhile is refused at its completion
/// ([`crate::store::StoreError::KeyShredded`]) and runs again under the merchant's next
/// key, its process having forgotten the row ([`Keys::forget_live`]).
pub const LIVE_KEY_TTL: Duration = Duration::from_secs(5);
/// Label of the authenticated context a key is wrapped under by a local root.
const WRAP_CONTEXT: &[u8] = b"ledger-key-wrap-v1";

/// Why a key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key that is needed is not available: a root key not configured any more, a KMS
    /// that is unreachable or refuses. Answered 503 `KEY_UNAVAILABLE`.
    #[error("key {key_id} is unavailable: {reason}")]
    Unavailable {
        /// The key that is missing (a root key id, or a merchant key's id).
        key_id: String,
        /// Why, in words (no key material).
        reason: String,
    },
    /// The merchant key was shredded: what it sealed is gone for good. Answered 410.
    #[error("merchant key {0} was shredded")]
    Shredded(String),
    /// The job store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Generating or wrapping a key failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// Counts a file that could not be sealed or opened for want of its key
/// (`ledger_key_unavailable_total`, which the `LedgerKeyUnavailable` alert watches).
pub fn count_unavailable() {
    metrics::counter!("ledger_key_unavailable_total").increment(1);
}

/// Drops the expired keys of `keys` every minute until `shutdown`
/// ([`Keys::purge_expired`]).
pub async fn purge(keys: Keys, shutdown: tokio_util::sync::CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
        keys.purge_expired();
    }
}

#[async_trait::async_trait]
impl crate::ready::Ready for Keys {
    async fn ready(&self) -> Result<(), String> {
        self.inner
            .reached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// How often [`gauges`] counts the files each root key protects.
pub const GAUGE_EVERY: Duration = Duration::from_secs(60);

/// Keeps `ledger_files_by_master_key{keyId}` and `ledger_files_root_sealed` current until
/// `shutdown`: one count of the store every `every` (a root that protects nothing any more
/// is shown at 0, then dropped from the next counts).
pub async fn gauges(
    store: Arc<dyn KeyStore>,
    every: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut shown: Vec<String> = Vec::new();
    loop {
        match store.key_counts().await {
            Ok(counts) => {
                let now: Vec<String> = counts.roots.iter().map(|r| r.root_key_id.clone()).collect();
                for gone in shown.iter().filter(|id| !now.contains(id)) {
                    metrics::gauge!("ledger_files_by_master_key", "keyId" => gone.clone()).set(0.0);
                }
                for r in &counts.roots {
                    metrics::gauge!("ledger_files_by_master_key", "keyId" => r.root_key_id.clone())
                        .set(r.files as f64);
                }
                metrics::gauge!("ledger_files_root_sealed").set(counts.root_sealed_files as f64);
                shown = now;
            }
            Err(e) => {
                tracing::warn!(target: "ledger::keys", error = %e, "counting the files by root key failed");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// The root key: what wraps merchant keys and the service's own keys.
#[derive(Clone, Debug)]
pub enum Root {
    /// Local master keys: the current one wraps, all of them unwrap.
    Local(Keyring),
    /// A KMS key wraps (`arn`, as KMS named the configured key at start-up); KMS unwraps
    /// what any KMS key it still has wrapped. Local keys, if any, unwrap what they wrapped
    /// before the move to KMS.
    Kms {
        /// The client.
        client: self::kms::KmsClient,
        /// The ARN of the configured key.
        arn: String,
        /// Old local master keys, if any.
        local: Option<Keyring>,
    },
}

/// What a wrapped key is bound to (its owner and id): the local wrapping's authenticated
/// data, and the KMS encryption context.
struct Context(Vec<(&'static str, String)>);

impl Context {
    fn bytes(&self) -> Vec<u8> {
        let mut out = WRAP_CONTEXT.to_vec();
        for (k, v) in &self.0 {
            out.push(0);
            out.extend_from_slice(k.as_bytes());
            out.push(b'=');
            out.extend_from_slice(v.as_bytes());
        }
        out
    }

    fn pairs(&self) -> Vec<(&str, &str)> {
        self.0.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }
}

impl Root {
    /// The id new keys are wrapped under: `local:<id>` or `kms:<arn>`.
    pub fn current_id(&self) -> String {
        match self {
            Root::Local(keyring) => format!("{LOCAL_PREFIX}{}", keyring.current_id()),
            Root::Kms { arn, .. } => format!("{KMS_PREFIX}{arn}"),
        }
    }

    /// The local master keys this root can unwrap with (all of them for a local root, the
    /// old ones under KMS).
    pub fn local(&self) -> Option<&Keyring> {
        match self {
            Root::Local(keyring) => Some(keyring),
            Root::Kms { local, .. } => local.as_ref(),
        }
    }

    /// Wraps `plain` (a key's bytes) under the current root: the root id and the bytes.
    async fn wrap(&self, plain: &[u8], context: &Context) -> Result<(String, Vec<u8>), KeyError> {
        let wrapped = match self {
            Root::Local(keyring) => keyring.current_key().wrap_key(plain, &context.bytes())?,
            Root::Kms { client, arn, .. } => client
                .encrypt(arn, plain, &context.pairs())
                .await
                .map_err(|e| kms_error(arn, e))?,
        };
        Ok((self.current_id(), wrapped))
    }

    /// Unwraps what [`Root::wrap`] wrapped under `root_id`.
    async fn unwrap(
        &self,
        root_id: &str,
        wrapped: &[u8],
        context: &Context,
    ) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let unavailable = |reason: String| KeyError::Unavailable {
            key_id: root_id.to_owned(),
            reason,
        };
        if let Some(id) = root_id.strip_prefix(LOCAL_PREFIX) {
            let Some(keyring) = self.local() else {
                return Err(unavailable(format!(
                    "local master key {id} is not configured (APP_ENV_LEDGER_ENCRYPTION_KEYS_OLD \
                     holds none)"
                )));
            };
            return match keyring.unwrap_key(id, wrapped, &context.bytes()) {
                Ok(plain) => Ok(plain),
                Err(CryptoError::UnknownKeyId(_)) => Err(unavailable(format!(
                    "local master key {id} is not configured (neither \
                     APP_ENV_LEDGER_ENCRYPTION_KEY nor APP_ENV_LEDGER_ENCRYPTION_KEYS_OLD holds it)"
                ))),
                Err(e) => Err(unavailable(format!("local master key {id}: {e}"))),
            };
        }
        if let Some(arn) = root_id.strip_prefix(KMS_PREFIX) {
            let Root::Kms { client, .. } = self else {
                return Err(unavailable(
                    "wrapped by KMS, and APP_ENV_LEDGER_KMS_KEY_ID is not set".into(),
                ));
            };
            return client
                .decrypt(arn, wrapped, &context.pairs())
                .await
                .map_err(|e| kms_error(arn, e));
        }
        Err(unavailable(format!(
            "{root_id} is not a root this release knows"
        )))
    }
}

/// A KMS failure as a key that is unavailable (naming the KMS key, never key material).
fn kms_error(arn: &str, e: self::kms::KmsError) -> KeyError {
    KeyError::Unavailable {
        key_id: format!("{KMS_PREFIX}{arn}"),
        reason: e.to_string(),
    }
}

/// The context a merchant key is wrapped under.
fn merchant_context(merchant: &MerchantId, key_id: &str) -> Context {
    Context(vec![
        ("merchant", merchant.as_str().to_owned()),
        ("keyId", key_id.to_owned()),
    ])
}

/// A merchant key's name in the cache: its merchant and id, so a key is only ever handed
/// out for the merchant it belongs to.
fn cache_key(merchant: &MerchantId, key_id: &str) -> String {
    format!("{merchant}/{key_id}")
}

/// The context a service key is wrapped under.
fn service_context(name: &str) -> Context {
    Context(vec![("service", name.to_owned())])
}

/// The keys of this process: the root, the merchant keys in the store, their cache.
#[derive(Clone)]
pub struct Keys {
    inner: Arc<Inner>,
}

struct Inner {
    root: Root,
    store: Arc<dyn KeyStore>,
    cache: KeyCache<Keyring>,
    /// Each merchant's live key row, read at most every [`LIVE_KEY_TTL`].
    live: KeyCache<MerchantKeyRow>,
    /// How many times live rows were forgotten: a row read before a forget is not kept
    /// after it (held while a read row is put in `live`).
    forgets: std::sync::Mutex<u64>,
    /// Whether the root answered since start-up (always, for a local root; for KMS once
    /// it described the key), and why not.
    reached: std::sync::Mutex<Result<(), String>>,
    /// The key that seals webhook secrets, once unwrapped (with the local keys, which
    /// open secrets sealed before it).
    secrets: tokio::sync::OnceCell<Keyring>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("root", &self.inner.root.current_id())
            .finish_non_exhaustive()
    }
}

/// The service key that seals webhook endpoints' signing secrets.
pub const SECRETS_KEY: &str = "webhook-secrets";

impl Keys {
    /// Keys under `root`, merchant keys in `store`.
    pub fn new(root: Root, store: Arc<dyn KeyStore>) -> Self {
        Self {
            inner: Arc::new(Inner {
                root,
                store,
                cache: KeyCache::new(CACHE_CAPACITY, CACHE_TTL),
                live: KeyCache::new(CACHE_CAPACITY, LIVE_KEY_TTL),
                forgets: std::sync::Mutex::new(0),
                reached: std::sync::Mutex::new(Ok(())),
                secrets: tokio::sync::OnceCell::new(),
            }),
        }
    }

    /// Keys whose KMS root could not be described at start-up (`why`): not ready
    /// ([`crate::ready::Ready`]) until [`Keys::reach_root`] gets an answer.
    pub fn unreached(root: Root, store: Arc<dyn KeyStore>, why: String) -> Self {
        let keys = Self::new(root, store);
        *keys.inner.reached.lock().unwrap_or_else(|e| e.into_inner()) = Err(why);
        keys
    }

    /// Whether the root has answered since start-up.
    pub fn root_reached(&self) -> bool {
        self.inner
            .reached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_ok()
    }

    /// Asks KMS to describe the root key until it answers (every 5 s at first, then every
    /// 30 s), or until `shutdown`; a key that is missing, disabled or not allowed is logged
    /// as an error each time. Until then the process is not ready, so a rollout with a
    /// wrong KMS setting stops at its first pod, while a KMS outage later on leaves
    /// serving pods ready (what needs a key answers 503 meanwhile).
    pub async fn reach_root(self, shutdown: tokio_util::sync::CancellationToken) {
        let Root::Kms { client, arn, .. } = &self.inner.root else {
            return;
        };
        let mut wait = Duration::from_secs(5);
        while !self.root_reached() {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            let outcome = client.describe_key(arn).await;
            let mut reached = self.inner.reached.lock().unwrap_or_else(|e| e.into_inner());
            match outcome {
                Ok(_) => {
                    tracing::info!(target: "ledger::keys", keyId = %arn, "KMS answered: the root key is reachable");
                    *reached = Ok(());
                }
                Err(e @ self::kms::KmsError::Unavailable(_)) => {
                    tracing::warn!(target: "ledger::keys", keyId = %arn, error = %e, "KMS is still unreachable");
                    *reached = Err(format!("KMS unreachable: {e}"));
                }
                Err(e) => {
                    tracing::error!(target: "ledger::keys", keyId = %arn, error = %e,
                        "the KMS root key cannot be used (APP_ENV_LEDGER_KMS_KEY_ID)");
                    *reached = Err(format!("the KMS root key cannot be used: {e}"));
                }
            }
            wait = Duration::from_secs(30);
        }
    }

    /// Drops the expired unwrapped keys and live key rows (a shredded merchant's, which
    /// nothing looks up again, included), so none stays in memory past its time to live.
    pub fn purge_expired(&self) {
        self.inner.cache.purge_expired();
        self.inner.live.purge_expired();
    }

    /// The root.
    pub fn root(&self) -> &Root {
        &self.inner.root
    }

    /// The local master keys, if any: they open format-1 objects (sealed before the key
    /// hierarchy) and webhook secrets sealed before the service key.
    pub fn local(&self) -> Option<&Keyring> {
        self.inner.root.local()
    }

    /// The store of merchant keys.
    pub fn store(&self) -> &Arc<dyn KeyStore> {
        &self.inner.store
    }

    /// The keyring of webhook secrets: the service key [`SECRETS_KEY`] (made and stored,
    /// wrapped by the root, on first use) seals; it and the local master keys open.
    pub async fn secrets(&self) -> Result<Keyring, KeyError> {
        self.inner
            .secrets
            .get_or_try_init(|| async {
                let store = &self.inner.store;
                let row = match store.service_key(SECRETS_KEY).await? {
                    Some(row) => row,
                    None => {
                        let key = MasterKey::generate_derived()?;
                        let (root_key_id, wrapped) = self
                            .inner
                            .root
                            .wrap(key.expose_bytes(), &service_context(SECRETS_KEY))
                            .await?;
                        let row = ServiceKeyRow {
                            name: SECRETS_KEY.into(),
                            root_key_id,
                            wrapped: BASE64.encode(wrapped),
                            created_at: Utc::now(),
                        };
                        store.insert_service_key(&row).await?;
                        // The winner of a race between processes.
                        store.service_key(SECRETS_KEY).await?.ok_or_else(|| {
                            KeyError::Store(StoreError::Corrupt(
                                "the webhook secrets key was neither inserted nor found".into(),
                            ))
                        })?
                    }
                };
                let plain = self.unwrap_service(&row).await?;
                let key = MasterKey::from_raw(&plain)?;
                let old = self.local().map(|k| k.all_keys()).unwrap_or_default();
                Ok(Keyring::new(key, old))
            })
            .await
            .cloned()
    }

    async fn unwrap_service(&self, row: &ServiceKeyRow) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let wrapped = BASE64.decode(&row.wrapped).map_err(|_| {
            KeyError::Store(StoreError::Corrupt(format!(
                "service key {}: its wrapped key is not base64",
                row.name
            )))
        })?;
        self.inner
            .root
            .unwrap(&row.root_key_id, &wrapped, &service_context(&row.name))
            .await
    }

    /// `row` (a service key) wrapped under the current root: the root id and stored text.
    pub async fn rewrapped_service(
        &self,
        row: &ServiceKeyRow,
    ) -> Result<(String, String), KeyError> {
        let plain = self.unwrap_service(row).await?;
        let (root, wrapped) = self
            .inner
            .root
            .wrap(&plain, &service_context(&row.name))
            .await?;
        Ok((root, BASE64.encode(wrapped)))
    }

    /// The merchant's live key, to seal a new file with (made and stored on the merchant's
    /// first file). Its row is reused for [`LIVE_KEY_TTL`] and its unwrapping is cached; a
    /// file sealed with a key shredded meanwhile is refused at its completion.
    ///
    /// `reread` skips the reuse: an attempt after the first may follow one refused for a
    /// key shredded meanwhile, in this process or another.
    pub async fn sealing(&self, merchant: &MerchantId, reread: bool) -> Result<Keyring, KeyError> {
        if !reread && let Some(row) = self.inner.live.get(merchant.as_str()) {
            return self.unwrapped(&row).await;
        }
        let forgets = *self.forgets();
        let read_at = std::time::Instant::now();
        let row = self.live_row(merchant).await?;
        {
            let forgotten = self.forgets();
            // A row read before a forget may be the forgotten one: used once, not kept.
            if *forgotten == forgets {
                self.inner
                    .live
                    .put_at(merchant.as_str(), row.clone(), read_at);
            }
        }
        self.unwrapped(&row).await
    }

    fn forgets(&self) -> std::sync::MutexGuard<'_, u64> {
        self.inner.forgets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The merchant's live key row, made and stored when it has none.
    async fn live_row(&self, merchant: &MerchantId) -> Result<MerchantKeyRow, KeyError> {
        let store = &self.inner.store;
        Ok(match store.live_merchant_key(merchant).await? {
            Some(row) => row,
            None => {
                let made = self.make(merchant).await?;
                if store.insert_merchant_key(&made).await? {
                    made
                } else {
                    // Another process made the merchant's key first: use that one.
                    store.live_merchant_key(merchant).await?.ok_or_else(|| {
                        KeyError::Store(StoreError::Corrupt(format!(
                            "merchant {merchant}: its key was neither inserted nor found"
                        )))
                    })?
                }
            }
        })
    }

    /// The key `key_id` of `merchant`, to open a file it sealed.
    pub async fn opening(&self, merchant: &MerchantId, key_id: &str) -> Result<Keyring, KeyError> {
        if let Some(keyring) = self.inner.cache.get(&cache_key(merchant, key_id)) {
            return Ok(keyring);
        }
        let row = self
            .inner
            .store
            .merchant_key(key_id)
            .await?
            .ok_or_else(|| KeyError::Unavailable {
                key_id: key_id.to_owned(),
                reason: "no such merchant key in the job store".into(),
            })?;
        if &row.merchant_id != merchant {
            return Err(KeyError::Store(StoreError::Corrupt(format!(
                "merchant key {key_id} belongs to {}, not {merchant}",
                row.merchant_id
            ))));
        }
        self.unwrapped(&row).await
    }

    /// Forgets every unwrapped merchant key and live key row of this process (after a
    /// shred).
    pub fn forget(&self) {
        let mut forgets = self.forgets();
        self.inner.cache.clear();
        self.inner.live.clear();
        *forgets += 1;
    }

    /// Forgets `merchant`'s live key row, found shredded: its next file reads the row again
    /// (and makes the merchant a new key).
    pub fn forget_live(&self, merchant: &MerchantId) {
        let mut forgets = self.forgets();
        self.inner.live.remove(merchant.as_str());
        *forgets += 1;
    }

    /// Unwraps `row` (from the cache when it is there).
    pub async fn unwrapped(&self, row: &MerchantKeyRow) -> Result<Keyring, KeyError> {
        if row.shredded_at.is_some() {
            return Err(KeyError::Shredded(row.key_id.clone()));
        }
        let cached = cache_key(&row.merchant_id, &row.key_id);
        if let Some(keyring) = self.inner.cache.get(&cached) {
            return Ok(keyring);
        }
        let plain = self.unwrap_merchant(row).await?;
        let keyring = Keyring::merchant(MasterKey::with_id(&row.key_id, &plain)?);
        self.inner.cache.put(&cached, keyring.clone());
        Ok(keyring)
    }

    async fn unwrap_merchant(&self, row: &MerchantKeyRow) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let wrapped = BASE64.decode(&row.wrapped).map_err(|_| {
            KeyError::Store(StoreError::Corrupt(format!(
                "merchant key {}: its wrapped key is not base64",
                row.key_id
            )))
        })?;
        self.inner
            .root
            .unwrap(
                &row.root_key_id,
                &wrapped,
                &merchant_context(&row.merchant_id, &row.key_id),
            )
            .await
    }

    /// A new merchant key for `merchant`, wrapped under the current root.
    async fn make(&self, merchant: &MerchantId) -> Result<MerchantKeyRow, KeyError> {
        let key_id = uuid::Uuid::new_v4().simple().to_string();
        let key = MasterKey::generate(&key_id)?;
        let (root_key_id, wrapped) = self
            .inner
            .root
            .wrap(key.expose_bytes(), &merchant_context(merchant, &key_id))
            .await?;
        Ok(MerchantKeyRow {
            key_id,
            merchant_id: merchant.clone(),
            root_key_id,
            wrapped: BASE64.encode(wrapped),
            created_at: Utc::now(),
            shredded_at: None,
        })
    }

    /// `row`'s key wrapped under the current root: the root id and the stored text.
    pub async fn rewrapped(&self, row: &MerchantKeyRow) -> Result<(String, String), KeyError> {
        let plain = self.unwrap_merchant(row).await?;
        let (root, wrapped) = self
            .inner
            .root
            .wrap(&plain, &merchant_context(&row.merchant_id, &row.key_id))
            .await?;
        Ok((root, BASE64.encode(wrapped)))
    }
}
