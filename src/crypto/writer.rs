//! Sealing: [`EncryptingWriter`] writes the header, then the plaintext as sealed segments,
//! and hands the inner writer nothing else.

use std::fmt;
use std::io::{self, Write};

use aes_gcm::Nonce;
use aes_gcm::aead::AeadInPlace;
use zeroize::Zeroizing;

use super::key::{Keyring, MasterKey, fill_random};
use super::segment::SegmentCipher;
use super::*;

/// Streaming encryption: an `io::Write` that writes the header on construction, buffers up
/// to one segment, and writes sealed segments to the inner writer.
///
/// `flush` flushes the inner writer but cannot push out a partial segment: only
/// [`EncryptingWriter::finish`] does, as the last one.
pub struct EncryptingWriter<W: Write> {
    inner: W,
    cipher: SegmentCipher,
    aad: Vec<u8>,
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
    counter: u32,
    /// Plaintext of the current segment, sealed in place; capacity for the tag too.
    buf: Zeroizing<Vec<u8>>,
    /// [`header_digest`] of the header written.
    header_sha256: String,
    poisoned: bool,
}

impl<W: Write> EncryptingWriter<W> {
    /// Writes the header for a fresh data key, wrapped with the keyring's current key.
    pub fn new(mut inner: W, keyring: &Keyring, binding: Binding) -> Result<Self, CryptoError> {
        let master = keyring.current();
        let key_id = master.id().as_bytes();
        let data_key = MasterKey::random()?;
        let mut wrap_nonce = [0u8; NONCE_LEN];
        fill_random(&mut wrap_nonce)?;
        let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
        fill_random(&mut nonce_prefix)?;

        let mut header = Vec::with_capacity(header_len(key_id.len()));
        header.extend_from_slice(MAGIC);
        header.push(keyring.format());
        header.push(u8::try_from(key_id.len()).map_err(|_| CryptoError::BadKey)?);
        header.extend_from_slice(key_id);
        header.extend_from_slice(&wrap_nonce);

        let aad = wrap_aad(binding, &header);
        // Zeroizing only matters on the (unreachable) error path, where it would still hold
        // the plaintext data key.
        let mut wrapped = Zeroizing::new(*data_key.key);
        let tag = master
            .cipher()
            .encrypt_in_place_detached(&Nonce::from(wrap_nonce), &aad, &mut wrapped[..])
            .map_err(|_| CryptoError::TooLarge)?;
        header.extend_from_slice(&wrapped[..]);
        header.extend_from_slice(&tag);
        header.extend_from_slice(&nonce_prefix);
        header.extend_from_slice(&(SEGMENT_SIZE as u32).to_be_bytes());

        inner.write_all(&header)?;
        Ok(Self {
            inner,
            cipher: SegmentCipher::new(&data_key.key)?,
            aad: segment_aad(binding, &header),
            header_sha256: header_digest(&header),
            nonce_prefix,
            counter: 0,
            buf: Zeroizing::new(Vec::with_capacity(SEGMENT_CIPHERTEXT_LEN)),
            poisoned: false,
        })
    }

    /// The SHA-256 (hex) of the header this writer wrote, which names this object among
    /// all those sealed for the same ledger id and version.
    pub fn header_sha256(&self) -> &str {
        &self.header_sha256
    }

    /// Seals the final segment (with the last flag) and returns the inner writer. Dropping
    /// without finish leaves a truncated (undecryptable) object, which is the point.
    pub fn finish(mut self) -> Result<W, CryptoError> {
        if self.poisoned {
            return Err(CryptoError::Poisoned);
        }
        self.seal(true)?;
        self.inner.flush()?;
        Ok(self.inner)
    }

    fn seal(&mut self, last: bool) -> Result<(), CryptoError> {
        // Poisoned until proven otherwise: on any error below, the buffer holds neither the
        // plaintext nor a complete write, so the stream cannot continue.
        self.poisoned = true;
        let nonce = segment_nonce(&self.nonce_prefix, self.counter, last);
        let tag = self.cipher.seal(nonce, &self.aad, &mut self.buf)?;
        self.buf.extend_from_slice(&tag);
        self.inner.write_all(&self.buf)?;
        self.buf.clear();
        if !last {
            self.counter = self.counter.checked_add(1).ok_or(CryptoError::TooLarge)?;
        }
        self.poisoned = false;
        Ok(())
    }
}

impl<W: Write> Write for EncryptingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.poisoned {
            return Err(io::Error::other(CryptoError::Poisoned));
        }
        let mut rest = data;
        while !rest.is_empty() {
            let take = (SEGMENT_SIZE - self.buf.len()).min(rest.len());
            self.buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            // Sealed as soon as full, so that the last segment is always short: that is what
            // lets the decryptor know a full segment is never the last.
            if self.buf.len() == SEGMENT_SIZE {
                self.seal(false).map_err(into_io_error)?;
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> fmt::Debug for EncryptingWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptingWriter")
            .field("segments_sealed", &self.counter)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

pub(super) fn into_io_error(e: CryptoError) -> io::Error {
    match e {
        CryptoError::Io(e) => e,
        other => io::Error::other(other),
    }
}
