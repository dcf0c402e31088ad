//! Encryption at rest: master keys, the keyring, and the streaming envelope format every
//! ledger file is stored in (SPEC §7 "Encryption at rest").
//!
//! # What this module owns
//!
//! - Parsing master keys (base64 of 32 bytes) and deriving their public key ids ([`key`]).
//! - The keyring: the current master key, which seals every new object, and the old keys,
//!   which only open objects sealed before a rotation ([`key`]).
//! - Generating the embedded-default key file (mode 0600, never clobbering a racing writer).
//! - The on-disk/object-storage format below (its constants, AADs and nonces here), in both
//!   directions, streaming: sealing in [`writer`], opening in [`reader`].
//!
//! # What it must never do
//!
//! - Log, `Debug`-print, `Display` or put into an error message any key byte, the base64
//!   text of a key, or a data key. `Debug` of [`MasterKey`] and [`Keyring`] shows ids only,
//!   and [`CryptoError`] never carries caller-supplied secret text.
//! - Release plaintext that has not been authenticated: [`Decryptor::push`] returns whole
//!   authenticated segments only.
//! - Write plaintext anywhere: [`EncryptingWriter`] hands the inner writer the header and
//!   sealed segments, nothing else.
//! - Hold more than about two segments of a stream in memory.
//!
//! # Format (versions 1 and 2)
//!
//! All integers are big-endian.
//!
//! | field            | size          | content                                                |
//! |------------------|---------------|--------------------------------------------------------|
//! | magic            | 4             | `LDGR`                                                 |
//! | format version   | 1             | `1` (root-wrapped) or `2` (merchant-key-wrapped)       |
//! | key id length    | 1             | `n`, 1..=64                                            |
//! | key id           | n             | ASCII `[A-Za-z0-9_-]`, id of the wrapping key          |
//! | wrap nonce       | 12            | random                                                 |
//! | wrapped data key | 48            | AES-256-GCM(master key, wrap nonce, data key) ‖ tag    |
//! | nonce prefix     | 7             | random                                                 |
//! | segment size     | 4 (u32)       | plaintext bytes per segment, 65536                     |
//! | body             | …             | segments                                               |
//!
//! Format 2 (every object sealed since the key hierarchy) differs from format 1 only in
//! what wraps the data key: the merchant's key (`keys`: root → merchant key → data key),
//! whose id is the key id, and in the wrapping label, `"ledger-dek-wrap-v2"`. Which format
//! an object has is also recorded with its file, so a download knows which key to fetch
//! before it reads a byte.
//!
//! The data key is 32 random bytes, fresh for every object. Its wrapping AAD is
//! `"ledger-dek-wrap-v1" ‖ ledger id (i64) ‖ version (u32) ‖ header bytes before the wrapped
//! key`, so an object copied under another ledger id or version, or with an edited key id,
//! fails to unwrap. The nonce prefix and segment size come after the wrapped key and are
//! covered by the segment AAD instead: `whole header ‖ ledger id (i64) ‖ version (u32)`.
//!
//! The body is the STREAM construction: segment `i` is `segment size` plaintext bytes
//! sealed with the data key under nonce `prefix (7) ‖ i (u32) ‖ last flag (1 byte)`, its
//! 16-byte tag appended. Every segment but the last is exactly full; the last one, flagged
//! `1`, is always shorter than a full segment, possibly empty (an object whose plaintext is
//! an exact multiple of the segment size ends with an empty sealed segment). Hence the
//! position of each segment is authenticated (reordering, dropping or duplicating fails),
//! the end is authenticated (truncation at a segment boundary fails), and anything after
//! the last segment is rejected.
//!
//! A piece of ciphertext may end anywhere, so [`Decryptor`] cannot tell a short last
//! segment from the start of a full one still arriving: it opens full segments as they
//! complete (never the last one) and the buffered rest as the last segment only when told
//! the object ended ([`Decryptor::end`]). Appending anything to an object, or cutting it
//! anywhere, makes the end fail to authenticate or read as [`CryptoError::Truncated`].
//!
//! A reader that reads [`Decryptor::wanted`] bytes at a time has every segment arrive in a
//! buffer of its own, and the segment is opened where it lies: the plaintext is handed out
//! without a copy.

pub mod ec;
mod key;
mod reader;
mod segment;
#[cfg(test)]
mod tests;
mod writer;

use std::io::{self, Write};

pub use self::key::{Keyring, MasterKey, generate_key_base64, peek_header};
pub use self::reader::Decryptor;
pub use self::writer::EncryptingWriter;

/// Plaintext bytes per sealed segment.
pub const SEGMENT_SIZE: usize = 64 * 1024;

const MAGIC: &[u8; 4] = b"LDGR";
/// Format 1: the data key is wrapped by a root (master) key, named by its 8-hex id.
pub const FORMAT_ROOT: u8 = 1;
/// Format 2: the data key is wrapped by a merchant key (itself wrapped by the root, in the
/// job store), named by the merchant key's id. Same layout as format 1; a root rotation
/// re-wraps the merchant keys and never touches these objects.
pub const FORMAT_MERCHANT: u8 = 2;
const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const WRAPPED_KEY_LEN: usize = KEY_LEN + TAG_LEN;
const NONCE_PREFIX_LEN: usize = 7;
const MAX_KEY_ID_LEN: usize = 64;
/// Magic, format version and key id length: enough to know the whole header's length.
const FIXED_HEADER_LEN: usize = MAGIC.len() + 2;
/// Everything in the header after the key id.
const HEADER_TAIL_LEN: usize = NONCE_LEN + WRAPPED_KEY_LEN + NONCE_PREFIX_LEN + 4;
const SEGMENT_CIPHERTEXT_LEN: usize = SEGMENT_SIZE + TAG_LEN;
const WRAP_LABEL_V1: &[u8] = b"ledger-dek-wrap-v1";
const WRAP_LABEL_V2: &[u8] = b"ledger-dek-wrap-v2";
const KEY_ID_LABEL: &[u8] = b"ledger-key-id";

/// Everything that can go wrong in this module. No variant carries key material.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// A master key is not the base64 encoding of exactly 32 bytes.
    #[error("invalid master key: expected the base64 encoding of 32 bytes")]
    BadKey,
    /// The object was sealed with a master key that is not in the keyring.
    #[error("object was encrypted with unknown master key id {0:?}")]
    UnknownKeyId(String),
    /// The header is not a version-1 envelope header.
    #[error("malformed encrypted object: {0}")]
    Malformed(&'static str),
    /// The data key did not unwrap: wrong master key, wrong ledger id or version, or a
    /// tampered header.
    #[error("data key did not unwrap (wrong key, wrong ledger id/version, or tampered header)")]
    KeyUnwrap,
    /// A segment failed authentication: tampered, reordered, duplicated, or from another
    /// object.
    #[error("encrypted segment failed authentication")]
    Authentication,
    /// The stream ended before its last segment was authenticated (truncated, or its last
    /// segment was tampered with).
    #[error("encrypted object is truncated")]
    Truncated,
    /// Bytes follow the last segment.
    #[error("data after the end of the encrypted object")]
    TrailingData,
    /// The object has more segments than the 32-bit segment counter can number.
    #[error("encrypted object too large")]
    TooLarge,
    /// The operating system's random number generator failed.
    #[error("operating system random number generator failed")]
    Random,
    /// An earlier error left this stream in an unknown state; it cannot be used further.
    #[error("stream unusable after an earlier error")]
    Poisoned,
    /// Reading or writing the underlying stream or key file failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

/// What an object is bound to: opening it under any other ledger id or version fails.
#[derive(Clone, Copy, Debug)]
pub struct Binding {
    pub ledger_id: i64,
    pub version: u32,
}

impl Binding {
    fn to_bytes(self) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[..8].copy_from_slice(&self.ledger_id.to_be_bytes());
        out[8..].copy_from_slice(&self.version.to_be_bytes());
        out
    }
}

fn wrap_aad(binding: Binding, header_before_wrapped_key: &[u8]) -> Vec<u8> {
    // The header's version byte picks the label: a format-2 header relabelled as format 1
    // (or back) fails to unwrap.
    let label = match header_before_wrapped_key.get(MAGIC.len()) {
        Some(&FORMAT_MERCHANT) => WRAP_LABEL_V2,
        _ => WRAP_LABEL_V1,
    };
    let mut aad = Vec::with_capacity(label.len() + 12 + header_before_wrapped_key.len());
    aad.extend_from_slice(label);
    aad.extend_from_slice(&binding.to_bytes());
    aad.extend_from_slice(header_before_wrapped_key);
    aad
}

fn segment_aad(binding: Binding, header: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + 12);
    aad.extend_from_slice(header);
    aad.extend_from_slice(&binding.to_bytes());
    aad
}

/// The SHA-256 of a complete header, in lower-case hex: it names one sealed object (the
/// header holds the object's random nonces and its wrapped data key, fresh for every
/// object), so a store that records it can tell that object from any other sealed under
/// the same ledger id and version.
fn header_digest(header: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(header))
}

fn segment_nonce(prefix: &[u8; NONCE_PREFIX_LEN], counter: u32, last: bool) -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    nonce[..NONCE_PREFIX_LEN].copy_from_slice(prefix);
    nonce[NONCE_PREFIX_LEN..NONCE_LEN - 1].copy_from_slice(&counter.to_be_bytes());
    nonce[NONCE_LEN - 1] = u8::from(last);
    nonce
}

/// Length of the header, given the key id length.
fn header_len(key_id_len: usize) -> usize {
    FIXED_HEADER_LEN + key_id_len + HEADER_TAIL_LEN
}

fn valid_key_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Convenience for tests and small objects.
pub fn encrypt_to_vec(
    keyring: &Keyring,
    binding: Binding,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let segments = plaintext.len() / SEGMENT_SIZE + 1;
    let capacity = header_len(keyring.current_id().len()) + plaintext.len() + segments * TAG_LEN;
    let mut writer = EncryptingWriter::new(Vec::with_capacity(capacity), keyring, binding)?;
    writer.write_all(plaintext)?;
    writer.finish()
}

/// Convenience for tests and small objects.
pub fn decrypt_to_vec(
    keyring: &Keyring,
    binding: Binding,
    ciphertext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut decryptor = Decryptor::new(keyring, binding);
    let mut segments = std::collections::VecDeque::new();
    decryptor.push(bytes::Bytes::copy_from_slice(ciphertext), &mut segments)?;
    segments.push_back(decryptor.end()?);
    Ok(segments.into_iter().flatten().collect())
}
