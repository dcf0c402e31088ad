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
use crate::storage::{ObjectStorage, ObjectWriter, StorageError};

/// Object storage and the keys of its files.
#[derive(Clone)]
pub struct Vault {
    storage: Arc<dyn ObjectStorage>,
    keyring: Keyring,
}

impl Vault {
    /// Files in `storage`, sealed with `keyring`'s current key, opened with any of its keys.
    pub fn new(storage: Arc<dyn ObjectStorage>, keyring: Keyring) -> Self {
        Self { storage, keyring }
    }

    /// Starts the upload of a sealed file to `object_key`: the ciphertext a [`Sealer`]
    /// produces is written to it, then it is finished (or aborted, and nothing is stored).
    pub async fn upload(&self, object_key: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
        self.storage.writer(object_key).await
    }

    /// A plaintext writer for the file of `binding`: what is written is hashed, counted,
    /// encrypted and sent to `ciphertext` in chunks (blocking when the uploader is behind,
    /// so call it on a blocking thread).
    pub fn sealer(
        &self,
        binding: Binding,
        ciphertext: mpsc::Sender<Bytes>,
    ) -> Result<Sealer, CryptoError> {
        Sealer::new(&self.keyring, binding, ciphertext)
    }

    /// Opens the file stored at `object_key` for `binding`, which must be the object
    /// `recorded` describes. The first chunk is read and decrypted before this returns,
    /// which proves the header (key id, wrapped key, binding, and its digest where one was
    /// recorded); the rest is verified as it streams.
    pub async fn open(
        &self,
        object_key: &str,
        binding: Binding,
        recorded: Recorded<'_>,
    ) -> Result<Opened, OpenError> {
        let ciphertext = self.storage.read(object_key).await?;
        let decryptor = Decryptor::new(&self.keyring, binding);
        let mut plain = Decrypting::new(decryptor, ciphertext, recorded);
        let first = plain.next_chunk().await?;
        Ok(Opened::new(first, plain, object_key.to_owned()))
    }
}
