//! The byte path from renderer to upload: plaintext is hashed and counted, then encrypted,
//! then handed in chunks to the async uploader through a bounded channel. The bound is what
//! keeps memory flat for any document size; plaintext never leaves this chain unencrypted.

use std::io::{self, Write};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::crypto::{Binding, CryptoError, EncryptingWriter, Keyring};

/// Size of the chunks handed to the uploader.
const CHUNK: usize = 256 * 1024;

/// Sends what is written, in chunks, to the uploader. Blocks when the uploader is behind.
struct ChannelWriter {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    /// A writer sending to `tx`.
    fn new(tx: mpsc::Sender<Bytes>) -> Self {
        Self {
            tx,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Bytes::from(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Hashes and counts the plaintext on its way to `inner`.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    /// Hex SHA-256, size in bytes, and the inner writer.
    fn finish(self) -> (String, u64, W) {
        (hex::encode(self.hasher.finalize()), self.size, self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        self.hasher.update(&data[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Why the end of a file could not be sealed or sent.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The envelope could not be ended.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The uploader stopped taking ciphertext.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// What a sealed file is recorded with: its plaintext's hex SHA-256 and size, and the
/// digest of its encryption header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Hex SHA-256 of the plaintext: the file's `sha256` and `ETag`.
    pub sha256: String,
    /// Size of the plaintext in bytes.
    pub size: u64,
    /// Hex SHA-256 of the object's encryption header: a download checks it opens this
    /// very object before it sends a byte (see `vault::open`).
    pub header_sha256: String,
}

/// The plaintext end of the chain: hashes and counts what is written, encrypts it for one
/// ledger version and sends the ciphertext to the uploader.
pub struct Sealer(HashingWriter<EncryptingWriter<ChannelWriter>>);

impl Sealer {
    /// A sealer for the file of `binding`, sending ciphertext to `tx`. Writes the envelope's
    /// header at once (blocking if the uploader is behind).
    pub fn new(
        keyring: &Keyring,
        binding: Binding,
        tx: mpsc::Sender<Bytes>,
    ) -> Result<Self, CryptoError> {
        let encrypting = EncryptingWriter::new(ChannelWriter::new(tx), keyring, binding)?;
        Ok(Self(HashingWriter::new(encrypting)))
    }

    /// Ends the envelope and sends the last ciphertext; the plaintext's digest and size.
    pub fn finish(self) -> Result<Sealed, SealError> {
        let (sha256, size, encrypting) = self.0.finish();
        let header_sha256 = encrypting.header_sha256().to_owned();
        let mut channel = encrypting.finish()?;
        channel.flush()?;
        Ok(Sealed {
            sha256,
            size,
            header_sha256,
        })
    }
}

impl Write for Sealer {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0.write(data)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}
