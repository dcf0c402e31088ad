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
pub mod rewrap;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::Utc;

use crate::crypto::{CryptoError, Keyring, MasterKey};
use crate::domain::MerchantId;
use crate::store::StoreError;
use crate::store::keys::{KeyStore, MerchantKeyRow};

use self::cache::KeyCache;

/// Prefix of a local master key's root id (`local:<8 hex>`).
pub const LOCAL_PREFIX: &str = "local:";
/// Prefix of a KMS key's root id (`kms:<key id>`).
pub const KMS_PREFIX: &str = "kms:";
/// Unwrapped merchant keys kept in memory at most.
pub const CACHE_CAPACITY: usize = 10_000;
/// How long an unwrapped merchant key stays in memory.
pub const CACHE_TTL: Duration = Duration::from_secs(300);
/// Label of the authenticated context a merchant key is wrapped under.
const WRAP_CONTEXT: &[u8] = b"ledger-merchant-key-v1";

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

/// The root key: what wraps merchant keys.
#[derive(Clone, Debug)]
pub enum Root {
    /// Local master keys: the current one wraps, all of them unwrap.
    Local(Keyring),
}

impl Root {
    /// The id new merchant keys are wrapped under.
    pub fn current_id(&self) -> String {
        match self {
            Root::Local(keyring) => format!("{LOCAL_PREFIX}{}", keyring.current_id()),
        }
    }

    /// Wraps `key` (a merchant key) under the current root: the root id and the wrapped
    /// bytes.
    async fn wrap(&self, key: &MasterKey, merchant: &MerchantId) -> Result<(String, Vec<u8>), KeyError> {
        let context = wrap_context(merchant, key.id());
        match self {
            Root::Local(keyring) => {
                let wrapped = keyring.current_key().wrap_key(key.expose_bytes(), &context)?;
                Ok((self.current_id(), wrapped))
            }
        }
    }

    /// Unwraps a stored merchant key.
    async fn unwrap(&self, row: &MerchantKeyRow) -> Result<MasterKey, KeyError> {
        let wrapped = BASE64.decode(&row.wrapped).map_err(|_| {
            KeyError::Store(StoreError::Corrupt(format!(
                "merchant key {}: its wrapped key is not base64",
                row.key_id
            )))
        })?;
        let context = wrap_context(&row.merchant_id, &row.key_id);
        let unavailable = |reason: String| KeyError::Unavailable {
            key_id: row.root_key_id.clone(),
            reason,
        };
        let plain = if let Some(id) = row.root_key_id.strip_prefix(LOCAL_PREFIX) {
            match self {
                Root::Local(keyring) => match keyring.unwrap_key(id, &wrapped, &context) {
                    Ok(plain) => plain,
                    Err(CryptoError::UnknownKeyId(_)) => {
                        return Err(unavailable(format!(
                            "root key {id} is not configured (neither \
                             APP_ENV_LEDGER_ENCRYPTION_KEY nor \
                             APP_ENV_LEDGER_ENCRYPTION_KEYS_OLD holds it)"
                        )));
                    }
                    Err(e) => return Err(unavailable(format!("root key {id}: {e}"))),
                },
            }
        } else {
            return Err(unavailable(format!(
                "root {} is not a root this process knows",
                row.root_key_id
            )));
        };
        Ok(MasterKey::with_id(&row.key_id, &plain)?)
    }
}

/// What a merchant key's wrapping is bound to: a wrapped key moved to another merchant's
/// row, or renamed, does not unwrap.
fn wrap_context(merchant: &MerchantId, key_id: &str) -> Vec<u8> {
    let mut context = WRAP_CONTEXT.to_vec();
    context.push(0);
    context.extend_from_slice(merchant.as_str().as_bytes());
    context.push(0);
    context.extend_from_slice(key_id.as_bytes());
    context
}

/// The keys of this process: the root, the merchant keys in the store, their cache.
#[derive(Clone)]
pub struct Keys {
    inner: Arc<Inner>,
}

struct Inner {
    root: Root,
    /// The local master keys, which open format-1 objects and webhook secrets.
    local: Keyring,
    store: Arc<dyn KeyStore>,
    cache: KeyCache,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("root", &self.inner.root.current_id())
            .finish_non_exhaustive()
    }
}

impl Keys {
    /// Keys under `root`, with `local` opening what local keys sealed directly, merchant
    /// keys in `store`.
    pub fn new(root: Root, local: Keyring, store: Arc<dyn KeyStore>) -> Self {
        Self {
            inner: Arc::new(Inner {
                root,
                local,
                store,
                cache: KeyCache::new(CACHE_CAPACITY, CACHE_TTL),
            }),
        }
    }

    /// The root.
    pub fn root(&self) -> &Root {
        &self.inner.root
    }

    /// The local master keys: they open format-1 objects and seal webhook secrets.
    pub fn local(&self) -> &Keyring {
        &self.inner.local
    }

    /// The store of merchant keys.
    pub fn store(&self) -> &Arc<dyn KeyStore> {
        &self.inner.store
    }

    /// The merchant's live key, to seal a new file with (made and stored on the merchant's
    /// first file). Its row is read every time, so a shredded key is never used for a new
    /// file; the unwrapping is cached.
    pub async fn sealing(&self, merchant: &MerchantId) -> Result<Keyring, KeyError> {
        let store = &self.inner.store;
        let row = match store.live_merchant_key(merchant).await? {
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
        };
        self.unwrapped(&row).await
    }

    /// The key `key_id` of `merchant`, to open a file it sealed.
    pub async fn opening(&self, merchant: &MerchantId, key_id: &str) -> Result<Keyring, KeyError> {
        if let Some(keyring) = self.inner.cache.get(key_id) {
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

    /// Forgets every unwrapped key of this process (after a shred).
    pub fn forget(&self) {
        self.inner.cache.clear();
    }

    /// Unwraps `row` (from the cache when it is there).
    pub async fn unwrapped(&self, row: &MerchantKeyRow) -> Result<Keyring, KeyError> {
        if row.shredded_at.is_some() {
            return Err(KeyError::Shredded(row.key_id.clone()));
        }
        if let Some(keyring) = self.inner.cache.get(&row.key_id) {
            return Ok(keyring);
        }
        let key = self.inner.root.unwrap(row).await?;
        let keyring = Keyring::merchant(key);
        self.inner.cache.put(&row.key_id, keyring.clone());
        Ok(keyring)
    }

    /// A new merchant key for `merchant`, wrapped under the current root.
    async fn make(&self, merchant: &MerchantId) -> Result<MerchantKeyRow, KeyError> {
        let key_id = uuid::Uuid::new_v4().simple().to_string();
        let key = MasterKey::generate(&key_id)?;
        let (root_key_id, wrapped) = self.inner.root.wrap(&key, merchant).await?;
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
        let key = self.inner.root.unwrap(row).await?;
        let (root, wrapped) = self.inner.root.wrap(&key, &row.merchant_id).await?;
        Ok((root, BASE64.encode(wrapped)))
    }
}
