//! Opening a sealed file: ciphertext chunks in, verified plaintext chunks out, holding about
//! two segments at a time. One chunk of lookahead tells the decryptor which chunk is the
//! last, so it authenticates each segment once; the plaintext's SHA-256 is checked at the
//! end.

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;

use sha2::{Digest, Sha256};

use crate::crypto::{CryptoError, Decryptor};
use crate::storage::{ByteStream, StorageError};

/// Why opening or streaming a file stopped.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Reading the object failed.
    #[error("reading the object: {0}")]
    Storage(#[from] StorageError),
    /// The object does not decrypt (wrong key, tampered, truncated, another ledger's).
    #[error("decrypting the object: {0}")]
    Crypto(#[from] CryptoError),
    /// It decrypts, but is not the file the store recorded (e.g. rewritten by an attempt
    /// that had lost its lease): never served as if it were.
    #[error("the object's content does not match the recorded SHA-256")]
    Integrity,
}

/// A decrypting reader over an object's chunks.
pub struct Decrypting {
    decryptor: Option<Decryptor>,
    objects: ByteStream,
    held: Option<Bytes>,
    hasher: Sha256,
    expected_sha256: String,
}

impl Decrypting {
    /// Decrypts `objects` with `decryptor`; the plaintext must hash to `expected_sha256`.
    pub fn new(decryptor: Decryptor, objects: ByteStream, expected_sha256: &str) -> Self {
        Self {
            decryptor: Some(decryptor),
            objects,
            held: None,
            hasher: Sha256::new(),
            expected_sha256: expected_sha256.to_ascii_lowercase(),
        }
    }

    /// Ends the stream: the decryptor must have seen the last segment, the hash must match.
    fn finish(&mut self) -> Result<(), OpenError> {
        if let Some(decryptor) = self.decryptor.take() {
            decryptor.finish()?;
            let digest = hex::encode(std::mem::take(&mut self.hasher).finalize());
            if digest != self.expected_sha256 {
                return Err(OpenError::Integrity);
            }
        }
        Ok(())
    }

    /// The next non-empty plaintext chunk; `None` once the whole object was verified.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, OpenError> {
        loop {
            let Some(decryptor) = self.decryptor.as_mut() else {
                return Ok(None);
            };
            let current = match self.held.take() {
                Some(chunk) => Some(chunk),
                None => self.objects.next().await.transpose()?,
            };
            let Some(current) = current else {
                // An empty object: finish reports it as truncated.
                self.finish()?;
                return Ok(None);
            };
            let plain = match self.objects.next().await.transpose()? {
                Some(next) => {
                    self.held = Some(next);
                    decryptor.push_not_last(&current)?
                }
                None => {
                    let plain = decryptor.push(&current)?;
                    self.hasher.update(&plain);
                    self.finish()?;
                    if plain.is_empty() {
                        return Ok(None);
                    }
                    return Ok(Some(Bytes::from(plain)));
                }
            };
            self.hasher.update(&plain);
            if !plain.is_empty() {
                return Ok(Some(Bytes::from(plain)));
            }
        }
    }
}

/// A file whose first chunk was read and verified: the rest streams on demand.
pub struct Opened {
    first: Option<Bytes>,
    rest: Decrypting,
    object_key: String,
}

impl Opened {
    pub(super) fn new(first: Option<Bytes>, rest: Decrypting, object_key: String) -> Self {
        Self {
            first,
            rest,
            object_key,
        }
    }

    /// The whole plaintext as a stream. A failure after the first chunk is logged with the
    /// object key and ends the stream with an error, never with wrong bytes.
    pub fn into_stream(self) -> BoxStream<'static, Result<Bytes, std::io::Error>> {
        let Self {
            first,
            rest,
            object_key,
        } = self;
        let head = futures::stream::iter(first.map(Ok));
        let rest = futures::stream::unfold(Some(rest), move |state| {
            let key = object_key.clone();
            async move {
                let mut me = state?;
                match me.next_chunk().await {
                    Ok(Some(chunk)) => Some((Ok(chunk), Some(me))),
                    Ok(None) => None,
                    Err(e) => {
                        // After the 200: the connection is cut, so the client sees a body
                        // shorter than its Content-Length, never wrong bytes.
                        tracing::error!(target: "ledger::api::download", objectKey = %key, error = %e, "download aborted mid-stream");
                        Some((Err(std::io::Error::other("download aborted")), None))
                    }
                }
            }
        });
        head.chain(rest).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Binding, Keyring, MasterKey, encrypt_to_vec, generate_key_base64};

    fn keyring() -> Keyring {
        Keyring::new(
            MasterKey::from_base64(&generate_key_base64()).unwrap(),
            Vec::new(),
        )
    }

    fn chunks(data: Vec<u8>, size: usize) -> ByteStream {
        let parts: Vec<Result<Bytes, StorageError>> = data
            .chunks(size)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        futures::stream::iter(parts).boxed()
    }

    async fn collect(mut d: Decrypting) -> Result<Vec<u8>, OpenError> {
        let mut out = Vec::new();
        while let Some(c) = d.next_chunk().await? {
            out.extend_from_slice(&c);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn round_trips_at_any_chunking() {
        let keys = keyring();
        let binding = Binding {
            ledger_id: 7,
            version: 1,
        };
        for len in [0usize, 1, 65_536, 200_000] {
            let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let sealed = encrypt_to_vec(&keys, binding, &plain).unwrap();
            for size in [1_000, 65_552, 1 << 20] {
                let sha = hex::encode(Sha256::digest(&plain));
                let open = |sha: &str| {
                    Decrypting::new(
                        Decryptor::new(&keys, binding),
                        chunks(sealed.clone(), size),
                        sha,
                    )
                };
                assert_eq!(
                    collect(open(&sha)).await.unwrap(),
                    plain,
                    "len {len} chunk {size}"
                );
                // The same object under another recorded hash is refused at its end.
                let wrong = collect(open(&"00".repeat(32))).await;
                assert!(matches!(wrong, Err(OpenError::Integrity)), "{wrong:?}");
            }
        }
    }

    #[tokio::test]
    async fn truncation_and_another_ledgers_object_fail() {
        let keys = keyring();
        let binding = Binding {
            ledger_id: 7,
            version: 1,
        };
        let plain = vec![9u8; 150_000];
        let sealed = encrypt_to_vec(&keys, binding, &plain).unwrap();
        let cut = sealed[..sealed.len() - 10].to_vec();
        let sha = hex::encode(Sha256::digest(&plain));
        let d = Decrypting::new(Decryptor::new(&keys, binding), chunks(cut, 4096), &sha);
        assert!(collect(d).await.is_err());
        let other = Binding {
            ledger_id: 8,
            version: 1,
        };
        let d = Decrypting::new(Decryptor::new(&keys, other), chunks(sealed, 4096), &sha);
        assert!(collect(d).await.is_err());
        let empty = Decrypting::new(Decryptor::new(&keys, binding), chunks(Vec::new(), 1), &sha);
        assert!(collect(empty).await.is_err());
    }
}
