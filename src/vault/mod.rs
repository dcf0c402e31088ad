//! An encrypted file: the one home of how a ledger's document is stored. Sealing hashes and
//! counts the plaintext, encrypts it (the envelope of [`crate::crypto`], bound to the
//! ledger and version) and hands the ciphertext to object storage; opening reads the
//! object back, decrypts it as it streams and checks it against the recorded SHA-256. The
//! worker's pipeline seals, a download opens; neither touches keys or digests itself.

pub mod open;
pub mod seal;

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

pub use open::{Decrypting, OpenError, Opened, Recorded};
pub use seal::Sealer;

use crate::crypto::{Binding, CryptoError, Decryptor, Keyring};
use crate::domain::MerchantId;
use crate::keys::Keys;
use crate::storage::{ObjectStorage, ObjectWriter, StorageError};

/// Object storage and the keys of its files.
#[derive(Clone)]
pub struct Vault {
    storage: Arc<dyn ObjectStorage>,
    keys: Keys,
}

impl Vault {
    /// Files in `storage`, sealed with merchant keys of `keys` (format 2); files sealed
    /// before the key hierarchy (format 1) opened with its local master keys.
    pub fn new(storage: Arc<dyn ObjectStorage>, keys: Keys) -> Self {
        Self { storage, keys }
    }

    /// The keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The object storage.
    pub fn storage(&self) -> &Arc<dyn ObjectStorage> {
        &self.storage
    }

    /// Starts the upload of a sealed file to `object_key`: the ciphertext a [`Sealer`]
    /// produces is written to it, then it is finished (or aborted, and nothing is stored).
    pub async fn upload(&self, object_key: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
        self.storage.writer(object_key).await
    }

    /// A plaintext writer for the file of `binding`, sealed with `key` (the merchant's, from
    /// [`Keys::sealing`]): what is written is hashed, counted, encrypted and sent to
    /// `ciphertext` in chunks (blocking when the uploader is behind, so call it on a
    /// blocking thread).
    pub fn sealer(
        &self,
        key: &Keyring,
        binding: Binding,
        ciphertext: mpsc::Sender<Bytes>,
    ) -> Result<Sealer, CryptoError> {
        Sealer::new(key, binding, ciphertext)
    }

    /// Opens the file stored at `object_key` for `binding`, which must be the object
    /// `recorded` describes. The first chunk is read and decrypted before this returns,
    /// which proves the header (key id, wrapped key, binding, and its digest where one was
    /// recorded); the rest is verified as it streams.
    ///
    /// `key_id` is the merchant key the store recorded for the file (`None`: a format-1
    /// file, sealed by a local master key); the key is had before the object is read.
    pub async fn open(
        &self,
        object_key: &str,
        binding: Binding,
        recorded: Recorded<'_>,
        merchant: &MerchantId,
        key_id: Option<&str>,
    ) -> Result<Opened, OpenError> {
        let keyring =
            match key_id {
                Some(id) => self.keys.opening(merchant, id).await?,
                None => self.keys.local().cloned().ok_or_else(|| {
                    crate::keys::KeyError::Unavailable {
                        key_id: "local master keys".into(),
                        reason: "the file is sealed by a local master key (format 1) and none is \
                             configured: set the old key in APP_ENV_LEDGER_ENCRYPTION_KEYS_OLD \
                             and run `ledger keys rewrap`"
                            .into(),
                    }
                })?,
            };
        let ciphertext = self.storage.read(object_key).await?;
        let decryptor = Decryptor::new(&keyring, binding);
        let mut plain = Decrypting::new(decryptor, ciphertext, recorded);
        let first = plain.next_chunk().await?;
        Ok(Opened::new(first, plain, object_key.to_owned()))
    }
}
