//! Opening a sealed file: ciphertext in, verified plaintext out, one segment at a time. The
//! object is read a segment a read, so that each segment lands in a buffer of its own and
//! is decrypted where it lies: its plaintext goes to the client in the buffer the
//! ciphertext was read into.
//!
//! The object must also be the very one the store recorded, not another valid object of
//! the same ledger and version (another attempt's, copied over it). A file recorded with
//! the digest of its encryption header is checked on that header, before any plaintext is
//! handed out: the header holds the object's wrapped data key, fresh for every object, and
//! each segment is authenticated under that key, at its position, with the end marked, so
//! a matching header and segments that all authenticate are exactly the sealed object, and
//! so exactly the plaintext whose SHA-256 was recorded. Files recorded before the header
//! digest are hashed as they stream (on a task of their own, which another core can run)
//! and checked against their plaintext SHA-256 at the end.

use std::collections::VecDeque;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::crypto::{CryptoError, Decryptor};
use crate::storage::{ObjectReader, StorageError};

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
    /// The key that opens it could not be had (unavailable, or shredded).
    #[error(transparent)]
    Key(#[from] crate::keys::KeyError),
}

/// Plaintext chunks the hashing task may be behind by: what a download holds beyond its
/// two segments, a few hundred KiB.
const HASH_BACKLOG: usize = 4;

/// The SHA-256 of a stream's chunks, computed on a task of its own. It waits for chunks
/// without holding a thread, so a stalled download costs nothing but its buffers, and it
/// ends when the stream is dropped.
struct Hashing {
    chunks: mpsc::Sender<Bytes>,
    digest: JoinHandle<[u8; 32]>,
}

impl Hashing {
    /// Starts the task (on the current Tokio runtime).
    fn start() -> Self {
        let (chunks, mut arriving) = mpsc::channel::<Bytes>(HASH_BACKLOG);
        let digest = tokio::spawn(async move {
            let mut hasher = Sha256::new();
            while let Some(chunk) = arriving.recv().await {
                hasher.update(&chunk);
            }
            hasher.finalize().into()
        });
        Self { chunks, digest }
    }

    /// Hands `chunk` to the task (waiting while it is [`HASH_BACKLOG`] chunks behind).
    async fn update(&self, chunk: Bytes) -> Result<(), OpenError> {
        if chunk.is_empty() {
            return Ok(());
        }
        // The task only ends once this sender is gone: a refused chunk means it died.
        self.chunks
            .send(chunk)
            .await
            .map_err(|_| OpenError::Integrity)
    }

    /// The digest of every chunk handed over, in lower-case hex.
    async fn finish(self) -> Result<String, OpenError> {
        let Self { chunks, digest } = self;
        drop(chunks);
        // A task that did not finish proves nothing: the file is not served as verified.
        let digest = digest.await.map_err(|_| OpenError::Integrity)?;
        Ok(hex::encode(digest))
    }
}

/// What the store recorded of a file, which the object opened must match.
#[derive(Debug, Clone, Copy)]
pub enum Recorded<'a> {
    /// The hex SHA-256 of the sealed object's header: checked as soon as the header is
    /// read, before any plaintext is handed out.
    Header(&'a str),
    /// The hex SHA-256 of the plaintext (files recorded before the header digest): checked
    /// once the whole plaintext was hashed, at the end of the stream.
    Content(&'a str),
}

/// How the object is being checked.
enum Check {
    /// Against the header digest; `seen` once it matched.
    Header { expected: String, seen: bool },
    /// Against the plaintext's digest, hashed on the side (taken at the end).
    Content {
        expected: String,
        hashing: Option<Hashing>,
    },
}

/// A decrypting reader over an object.
pub struct Decrypting {
    decryptor: Decryptor,
    object: Box<dyn ObjectReader>,
    /// Plaintext of segments opened and not handed out yet.
    opened: VecDeque<Bytes>,
    /// The object was read to its end and verified.
    ended: bool,
    check: Check,
}

impl Decrypting {
    /// Decrypts `object` with `decryptor`, checking it is the object `recorded` describes.
    /// A check on the plaintext starts its hashing task, so this is called on a Tokio
    /// runtime.
    pub fn new(
        decryptor: Decryptor,
        object: Box<dyn ObjectReader>,
        recorded: Recorded<'_>,
    ) -> Self {
        let check = match recorded {
            Recorded::Header(digest) => Check::Header {
                expected: digest.to_ascii_lowercase(),
                seen: false,
            },
            Recorded::Content(digest) => Check::Content {
                expected: digest.to_ascii_lowercase(),
                hashing: Some(Hashing::start()),
            },
        };
        Self {
            decryptor,
            object,
            opened: VecDeque::new(),
            ended: false,
            check,
        }
    }

    /// Checks the header as soon as it was read: before any plaintext is handed out.
    fn check_header(&mut self) -> Result<(), OpenError> {
        if let Check::Header { expected, seen } = &mut self.check
            && !*seen
        {
            match self.decryptor.header_sha256() {
                Some(digest) if digest == expected.as_str() => *seen = true,
                Some(_) => return Err(OpenError::Integrity),
                None => {}
            }
        }
        Ok(())
    }

    /// Hands `plain` to the plaintext check, if that is the check.
    async fn hash(&mut self, plain: &Bytes) -> Result<(), OpenError> {
        match &mut self.check {
            Check::Header { .. } => Ok(()),
            Check::Content { hashing, .. } => match hashing {
                Some(hashing) => hashing.update(plain.clone()).await,
                None => Err(OpenError::Integrity),
            },
        }
    }

    /// At the end of the object: it must be the recorded one.
    async fn verify(&mut self) -> Result<(), OpenError> {
        let matches = match &mut self.check {
            Check::Header { seen, .. } => *seen,
            Check::Content { expected, hashing } => match hashing.take() {
                Some(hashing) => hashing.finish().await? == *expected,
                None => false,
            },
        };
        if matches {
            Ok(())
        } else {
            Err(OpenError::Integrity)
        }
    }

    /// The next non-empty plaintext chunk; `None` once the whole object was verified. The
    /// last chunk is handed out only once the whole object is known to be the recorded
    /// one, so a failed check always leaves the body short.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, OpenError> {
        loop {
            if let Some(plain) = self.opened.pop_front() {
                self.hash(&plain).await?;
                return Ok(Some(plain));
            }
            if self.ended {
                return Ok(None);
            }
            // One segment (or header field) a read: each segment in a buffer of its own,
            // opened where it lies.
            match self.object.read(self.decryptor.wanted()).await? {
                Some(piece) => {
                    self.decryptor.push(piece, &mut self.opened)?;
                    self.check_header()?;
                }
                None => {
                    let last = self.decryptor.end()?;
                    self.ended = true;
                    self.hash(&last).await?;
                    self.verify().await?;
                    return Ok((!last.is_empty()).then_some(last));
                }
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
    use crate::crypto::{Binding, Keyring, MasterKey, generate_key_base64};

    fn keyring() -> Keyring {
        Keyring::new(
            MasterKey::from_base64(&generate_key_base64()).unwrap(),
            Vec::new(),
        )
    }

    fn chunks(data: Vec<u8>, size: usize) -> Box<dyn ObjectReader> {
        let parts: Vec<Result<Bytes, StorageError>> = data
            .chunks(size)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Box::new(crate::storage::StreamReader::new(
            futures::stream::iter(parts).boxed(),
        ))
    }

    async fn collect(mut d: Decrypting) -> Result<Vec<u8>, OpenError> {
        let mut out = Vec::new();
        while let Some(c) = d.next_chunk().await? {
            out.extend_from_slice(&c);
        }
        Ok(out)
    }

    /// `plain` sealed for `binding`, and the digest of its header.
    fn seal(keys: &Keyring, binding: Binding, plain: &[u8]) -> (Vec<u8>, String) {
        use std::io::Write;
        let mut writer = crate::crypto::EncryptingWriter::new(Vec::new(), keys, binding).unwrap();
        writer.write_all(plain).unwrap();
        let header = writer.header_sha256().to_owned();
        (writer.finish().unwrap(), header)
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
            let (sealed, header) = seal(&keys, binding, &plain);
            for size in [1_000, 65_552, 1 << 20] {
                let sha = hex::encode(Sha256::digest(&plain));
                let open = |recorded: Recorded<'_>| {
                    Decrypting::new(
                        Decryptor::new(&keys, binding),
                        chunks(sealed.clone(), size),
                        recorded,
                    )
                };
                for recorded in [Recorded::Content(&sha), Recorded::Header(&header)] {
                    assert_eq!(
                        collect(open(recorded)).await.unwrap(),
                        plain,
                        "len {len} chunk {size} {recorded:?}"
                    );
                }
                // The same object under another recorded digest is refused.
                let other = "00".repeat(32);
                for recorded in [Recorded::Content(&other), Recorded::Header(&other)] {
                    let wrong = collect(open(recorded)).await;
                    assert!(matches!(wrong, Err(OpenError::Integrity)), "{wrong:?}");
                }
            }
        }
    }

    /// Another object of the same ledger and version (another attempt's, say), even of the
    /// same plaintext, is refused on its header: before any plaintext is handed out.
    #[tokio::test]
    async fn another_object_of_the_same_file_is_refused_before_any_byte() {
        let keys = keyring();
        let binding = Binding {
            ledger_id: 7,
            version: 1,
        };
        let plain = vec![5u8; 300_000];
        let (_, recorded) = seal(&keys, binding, &plain);
        let (other, _) = seal(&keys, binding, &plain);
        let mut d = Decrypting::new(
            Decryptor::new(&keys, binding),
            chunks(other, 120 << 10),
            Recorded::Header(&recorded),
        );
        let first = d.next_chunk().await;
        assert!(matches!(first, Err(OpenError::Integrity)), "{first:?}");
    }

    #[tokio::test]
    async fn truncation_and_another_ledgers_object_fail() {
        let keys = keyring();
        let binding = Binding {
            ledger_id: 7,
            version: 1,
        };
        let plain = vec![9u8; 150_000];
        let (sealed, header) = seal(&keys, binding, &plain);
        let sha = hex::encode(Sha256::digest(&plain));
        for recorded in [Recorded::Content(&sha), Recorded::Header(&header)] {
            let cut = sealed[..sealed.len() - 10].to_vec();
            let d = Decrypting::new(Decryptor::new(&keys, binding), chunks(cut, 4096), recorded);
            assert!(collect(d).await.is_err());
            let other = Binding {
                ledger_id: 8,
                version: 1,
            };
            let d = Decrypting::new(
                Decryptor::new(&keys, other),
                chunks(sealed.clone(), 4096),
                recorded,
            );
            assert!(collect(d).await.is_err());
            let empty = Decrypting::new(
                Decryptor::new(&keys, binding),
                chunks(Vec::new(), 1),
                recorded,
            );
            assert!(collect(empty).await.is_err());
        }
    }
}
