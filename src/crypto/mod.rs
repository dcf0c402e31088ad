//! Encryption at rest: master keys, the keyring, and the streaming envelope format every
//! ledger file is stored in (SPEC §7 "Encryption at rest").
//!
//! # What this module owns
//!
//! - Parsing master keys (base64 of 32 bytes) and deriving their public key ids.
//! - The keyring: the current master key, which seals every new object, and the old keys,
//!   which only open objects sealed before a rotation.
//! - Generating the embedded-default key file (mode 0600, never clobbering a racing writer).
//! - The on-disk/object-storage format below, in both directions, streaming.
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
//! # Format (version 1)
//!
//! All integers are big-endian.
//!
//! | field            | size          | content                                                |
//! |------------------|---------------|--------------------------------------------------------|
//! | magic            | 4             | `LDGR`                                                 |
//! | format version   | 1             | `1`                                                    |
//! | key id length    | 1             | `n`, 1..=64                                            |
//! | key id           | n             | ASCII `[A-Za-z0-9_-]`, id of the wrapping master key   |
//! | wrap nonce       | 12            | random                                                 |
//! | wrapped data key | 48            | AES-256-GCM(master key, wrap nonce, data key) ‖ tag    |
//! | nonce prefix     | 7             | random                                                 |
//! | segment size     | 4 (u32)       | plaintext bytes per segment, 65536                     |
//! | body             | …             | segments                                               |
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
//! Because a ciphertext chunk boundary may fall anywhere, [`Decryptor`] cannot tell a short
//! last segment from a partly received full one; it tries to open the buffered partial
//! segment as the last one after every push. That costs a GHASH pass over the partial
//! segment per push, so callers should push large chunks (hundreds of KiB), or look one
//! chunk ahead and use [`Decryptor::push_not_last`] for every chunk but the final one.
//!
//! Which error a damaged object yields can depend on where the chunk boundaries fall
//! (garbage appended in the same chunk as a short last segment reads as [`CryptoError::Truncated`],
//! in a later chunk as [`CryptoError::TrailingData`]); every damage yields *an* error.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Plaintext bytes per sealed segment.
pub const SEGMENT_SIZE: usize = 64 * 1024;

const MAGIC: &[u8; 4] = b"LDGR";
const FORMAT_VERSION: u8 = 1;
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
const WRAP_LABEL: &[u8] = b"ledger-dek-wrap-v1";
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

/// A 32-byte master key, wiped from memory on drop.
#[derive(Clone)]
pub struct MasterKey {
    id: String,
    key: Zeroizing<[u8; KEY_LEN]>,
}

impl MasterKey {
    /// Parses the base64 (standard alphabet, padded) of 32 bytes; surrounding whitespace is
    /// ignored so a key file may end with a newline.
    pub fn from_base64(b64: &str) -> Result<Self, CryptoError> {
        // The error is deliberately a unit variant: base64's own errors quote offending
        // bytes, which would be bytes of the secret.
        let decoded = Zeroizing::new(BASE64.decode(b64.trim()).map_err(|_| CryptoError::BadKey)?);
        if decoded.len() != KEY_LEN {
            return Err(CryptoError::BadKey);
        }
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(&decoded);
        Ok(Self::from_bytes(key))
    }

    fn from_bytes(key: Zeroizing<[u8; KEY_LEN]>) -> Self {
        // A labelled hash truncated to 32 bits: stable across restarts, tells operators which
        // key sealed an object, and is useless for recovering the key.
        let digest = Sha256::new()
            .chain_update(KEY_ID_LABEL)
            .chain_update(&key[..])
            .finalize();
        let id = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        Self { id, key }
    }

    fn random() -> Result<Self, CryptoError> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        fill_random(&mut key[..])?;
        Ok(Self::from_bytes(key))
    }

    /// The key id written into object headers: 8 lowercase hex characters.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new((&self.key[..]).into())
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The master keys this process can use: the current one seals, all of them open.
#[derive(Clone)]
pub struct Keyring {
    // Shared so that every stream can hold the keyring without copying key bytes around.
    inner: Arc<KeyringInner>,
}

struct KeyringInner {
    current: MasterKey,
    old: Vec<MasterKey>,
}

impl Keyring {
    /// `current` seals new objects; `old` keys only open objects sealed before a rotation.
    pub fn new(current: MasterKey, old: Vec<MasterKey>) -> Self {
        Self {
            inner: Arc::new(KeyringInner { current, old }),
        }
    }

    /// Id of the key that seals new objects.
    pub fn current_id(&self) -> &str {
        self.inner.current.id()
    }

    fn current(&self) -> &MasterKey {
        &self.inner.current
    }

    /// Every key with this id, current first. More than one only if the same key was
    /// configured twice or two keys collide on their 32-bit id; unwrapping tries each.
    fn candidates<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a MasterKey> + 'a {
        std::iter::once(&self.inner.current)
            .chain(self.inner.old.iter())
            .filter(move |k| k.id() == id)
    }

    /// Loads `path` (base64 text) or, when it does not exist, generates a key, writes it with
    /// mode 0600 (create_new, so two processes racing do not clobber) and returns
    /// (keyring, true).
    pub fn load_or_generate(path: &Path) -> Result<(Self, bool), CryptoError> {
        if let Some(key) = read_key_file(path)? {
            return Ok((Self::new(key, Vec::new()), false));
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent)?;
        }
        let key = MasterKey::random()?;
        let text = Zeroizing::new(format!("{}\n", BASE64.encode(&key.key[..])));
        // Written in full to a private temporary name, then hard-linked into place: the link
        // fails if the name exists, so a racing process never sees a half-written key file
        // and neither process overwrites the other's key.
        let mut suffix = [0u8; 8];
        fill_random(&mut suffix)?;
        let tmp = path.with_file_name(format!(
            ".{}.{:016x}.tmp",
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            u64::from_be_bytes(suffix)
        ));
        let result =
            write_new_private_file(&tmp, text.as_bytes()).and_then(|()| {
                match fs::hard_link(&tmp, path) {
                    Ok(()) => Ok(true),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                    Err(e) => Err(e),
                }
            });
        // The temporary name is only ever a second link (or a failed write): always remove it.
        let _ = fs::remove_file(&tmp);
        if !result? {
            return match read_key_file(path)? {
                Some(key) => Ok((Self::new(key, Vec::new()), false)),
                None => Err(CryptoError::Io(io::Error::new(
                    io::ErrorKind::NotFound,
                    "key file vanished while loading it",
                ))),
            };
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            // Makes the new directory entry durable: losing it after objects were sealed
            // with the key would make them unreadable.
            fs::File::open(parent)?.sync_all()?;
        }
        Ok((Self::new(key, Vec::new()), true))
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let old: Vec<&str> = self.inner.old.iter().map(MasterKey::id).collect();
        f.debug_struct("Keyring")
            .field("current", &self.current_id())
            .field("old", &old)
            .finish()
    }
}

fn read_key_file(path: &Path) -> Result<Option<MasterKey>, CryptoError> {
    let mut text = Zeroizing::new(String::new());
    match fs::File::open(path) {
        Ok(mut file) => {
            refuse_shared_key_file(path, &file)?;
            file.read_to_string(&mut text)?;
            MasterKey::from_base64(&text).map(Some)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A master key file that group or others may read is refused: whoever can read it can
/// decrypt every file. (This process writes it with mode 0600; a copy or a restore may not.)
fn refuse_shared_key_file(path: &Path, file: &fs::File) -> Result<(), CryptoError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file.metadata()?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(CryptoError::Io(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "the master key file {} may be read by others (mode {mode:03o}): \
                     refusing it; `chmod 600` it",
                    path.display()
                ),
            )));
        }
    }
    #[cfg(not(unix))]
    let _ = (path, file);
    Ok(())
}

fn write_new_private_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// A fresh random master key as base64, for operators to put into
/// `APP_ENV_LEDGER_ENCRYPTION_KEY`.
pub fn generate_key_base64() -> String {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    OsRng.fill_bytes(&mut key[..]);
    BASE64.encode(&key[..])
}

fn fill_random(buf: &mut [u8]) -> Result<(), CryptoError> {
    OsRng.try_fill_bytes(buf).map_err(|_| CryptoError::Random)
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
    let mut aad = Vec::with_capacity(WRAP_LABEL.len() + 12 + header_before_wrapped_key.len());
    aad.extend_from_slice(WRAP_LABEL);
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

/// Streaming encryption: an `io::Write` that writes the header on construction, buffers up
/// to one segment, and writes sealed segments to the inner writer.
///
/// `flush` flushes the inner writer but cannot push out a partial segment: only
/// [`EncryptingWriter::finish`] does, as the last one.
pub struct EncryptingWriter<W: Write> {
    inner: W,
    cipher: Aes256Gcm,
    aad: Vec<u8>,
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
    counter: u32,
    /// Plaintext of the current segment, sealed in place; capacity for the tag too.
    buf: Zeroizing<Vec<u8>>,
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
        header.push(FORMAT_VERSION);
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
            cipher: data_key.cipher(),
            aad: segment_aad(binding, &header),
            nonce_prefix,
            counter: 0,
            buf: Zeroizing::new(Vec::with_capacity(SEGMENT_CIPHERTEXT_LEN)),
            poisoned: false,
        })
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
        let tag = self
            .cipher
            .encrypt_in_place_detached(&Nonce::from(nonce), &self.aad, &mut self.buf)
            .map_err(|_| CryptoError::TooLarge)?;
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

fn into_io_error(e: CryptoError) -> io::Error {
    match e {
        CryptoError::Io(e) => e,
        other => io::Error::other(other),
    }
}

/// Streaming decryption fed by arbitrary chunks (as they arrive from object storage).
pub struct Decryptor {
    keyring: Keyring,
    binding: Binding,
    state: DecryptState,
    header_verified: bool,
}

enum DecryptState {
    /// Header bytes received so far.
    Header(Vec<u8>),
    Body(Box<BodyState>),
    /// The last segment was authenticated.
    Done,
    Failed,
}

struct BodyState {
    cipher: Aes256Gcm,
    aad: Vec<u8>,
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
    counter: u32,
    /// Ciphertext of the current segment received so far, always shorter than a full one.
    partial: Vec<u8>,
}

impl Decryptor {
    pub fn new(keyring: &Keyring, binding: Binding) -> Self {
        Self {
            keyring: keyring.clone(),
            binding,
            state: DecryptState::Header(Vec::with_capacity(header_len(8))),
            header_verified: false,
        }
    }

    /// Feeds ciphertext; returns the plaintext that became available (whole authenticated
    /// segments only: never release unauthenticated bytes). Header errors (bad magic,
    /// unknown key id, wrong key/binding) surface on the first push that completes the
    /// header. After any error the decryptor only returns [`CryptoError::Poisoned`].
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.push_chunk(chunk, true)
    }

    /// Like [`Decryptor::push`] for a caller that knows more ciphertext follows (for
    /// instance by looking one chunk ahead in a stream): the buffered partial segment is not
    /// tried as the last one, which saves a GHASH pass over it. The stream's final chunk
    /// must go through [`Decryptor::push`]; if it does not, [`Decryptor::finish`] reports
    /// [`CryptoError::Truncated`].
    pub fn push_not_last(&mut self, chunk: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.push_chunk(chunk, false)
    }

    fn push_chunk(&mut self, chunk: &[u8], may_be_last: bool) -> Result<Vec<u8>, CryptoError> {
        let result = self.push_inner(chunk, may_be_last);
        if result.is_err() {
            self.state = DecryptState::Failed;
        }
        result
    }

    /// true once the header was read and the data key unwrapped.
    pub fn header_verified(&self) -> bool {
        self.header_verified
    }

    /// Ends the stream: an error unless the last segment was seen and nothing trails it.
    pub fn finish(self) -> Result<(), CryptoError> {
        match self.state {
            DecryptState::Done => Ok(()),
            DecryptState::Failed => Err(CryptoError::Poisoned),
            DecryptState::Header(_) | DecryptState::Body(_) => Err(CryptoError::Truncated),
        }
    }

    fn push_inner(&mut self, chunk: &[u8], may_be_last: bool) -> Result<Vec<u8>, CryptoError> {
        let mut input = chunk;
        if let DecryptState::Header(header) = &mut self.state {
            let Some(complete) = take_header_bytes(header, &mut input)? else {
                return Ok(Vec::new());
            };
            let header = std::mem::take(header);
            debug_assert!(complete == header.len());
            let body = open_header(&self.keyring, self.binding, &header)?;
            self.header_verified = true;
            self.state = DecryptState::Body(Box::new(body));
        }
        match &mut self.state {
            DecryptState::Body(body) => {
                let (out, done) = body.push(input, may_be_last)?;
                if done {
                    self.state = DecryptState::Done;
                }
                Ok(out)
            }
            DecryptState::Done if input.is_empty() => Ok(Vec::new()),
            DecryptState::Done => Err(CryptoError::TrailingData),
            DecryptState::Failed => Err(CryptoError::Poisoned),
            // Unreachable: a complete header always moves on to Body above.
            DecryptState::Header(_) => Err(CryptoError::Malformed("incomplete header")),
        }
    }
}

impl fmt::Debug for Decryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decryptor")
            .field("binding", &self.binding)
            .field("header_verified", &self.header_verified)
            .finish_non_exhaustive()
    }
}

/// Moves header bytes from `input` into `header`, validating each fixed field as soon as it
/// is complete so that garbage fails on its first bytes. Returns the header length once
/// complete.
fn take_header_bytes(
    header: &mut Vec<u8>,
    input: &mut &[u8],
) -> Result<Option<usize>, CryptoError> {
    loop {
        let target = if header.len() < FIXED_HEADER_LEN {
            FIXED_HEADER_LEN
        } else {
            header_len(usize::from(header[FIXED_HEADER_LEN - 1]))
        };
        let take = (target - header.len()).min(input.len());
        header.extend_from_slice(&input[..take]);
        *input = &input[take..];

        let magic_seen = header.len().min(MAGIC.len());
        if header[..magic_seen] != MAGIC[..magic_seen] {
            return Err(CryptoError::Malformed(
                "not an encrypted ledger object (bad magic)",
            ));
        }
        if header.len() < target {
            return Ok(None);
        }
        if target == FIXED_HEADER_LEN {
            if header[MAGIC.len()] != FORMAT_VERSION {
                return Err(CryptoError::Malformed("unsupported format version"));
            }
            let id_len = usize::from(header[FIXED_HEADER_LEN - 1]);
            if id_len == 0 || id_len > MAX_KEY_ID_LEN {
                return Err(CryptoError::Malformed("bad key id length"));
            }
            continue;
        }
        return Ok(Some(target));
    }
}

/// Parses a complete header and unwraps its data key.
fn open_header(
    keyring: &Keyring,
    binding: Binding,
    header: &[u8],
) -> Result<BodyState, CryptoError> {
    let id_len = usize::from(header[FIXED_HEADER_LEN - 1]);
    let id_bytes = &header[FIXED_HEADER_LEN..FIXED_HEADER_LEN + id_len];
    if !id_bytes.iter().copied().all(valid_key_id_byte) {
        return Err(CryptoError::Malformed("bad key id"));
    }
    // Checked above to be ASCII: the id is safe to show in errors and logs.
    let key_id = String::from_utf8_lossy(id_bytes).into_owned();

    let nonce_at = FIXED_HEADER_LEN + id_len;
    let wrapped_at = nonce_at + NONCE_LEN;
    let prefix_at = wrapped_at + WRAPPED_KEY_LEN;
    let size_at = prefix_at + NONCE_PREFIX_LEN;
    let mut size = [0u8; 4];
    size.copy_from_slice(&header[size_at..size_at + 4]);
    // Only one size is ever written; accepting others would let a forged header make the
    // decryptor buffer arbitrarily large segments before any authentication.
    if u32::from_be_bytes(size) as usize != SEGMENT_SIZE {
        return Err(CryptoError::Malformed("unsupported segment size"));
    }

    let aad = wrap_aad(binding, &header[..wrapped_at]);
    let nonce: &Nonce<_> = header[nonce_at..wrapped_at].into();
    let tag: &Tag = header[wrapped_at + KEY_LEN..prefix_at].into();
    let mut found_id = false;
    for master in keyring.candidates(&key_id) {
        found_id = true;
        let mut data_key = Zeroizing::new([0u8; KEY_LEN]);
        data_key.copy_from_slice(&header[wrapped_at..wrapped_at + KEY_LEN]);
        if master
            .cipher()
            .decrypt_in_place_detached(nonce, &aad, &mut data_key[..], tag)
            .is_ok()
        {
            let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
            nonce_prefix.copy_from_slice(&header[prefix_at..size_at]);
            return Ok(BodyState {
                cipher: Aes256Gcm::new((&data_key[..]).into()),
                aad: segment_aad(binding, header),
                nonce_prefix,
                counter: 0,
                partial: Vec::new(),
            });
        }
    }
    if found_id {
        Err(CryptoError::KeyUnwrap)
    } else {
        Err(CryptoError::UnknownKeyId(key_id))
    }
}

impl BodyState {
    /// Returns the plaintext of every segment completed by `input` and whether the last
    /// segment was among them.
    fn push(
        &mut self,
        mut input: &[u8],
        may_be_last: bool,
    ) -> Result<(Vec<u8>, bool), CryptoError> {
        // Plaintext is never longer than the ciphertext, so this never reallocates.
        let mut out = Vec::with_capacity(self.partial.len() + input.len());

        // Complete a segment begun by an earlier push.
        if !self.partial.is_empty() {
            let take = (SEGMENT_CIPHERTEXT_LEN - self.partial.len()).min(input.len());
            if take == SEGMENT_CIPHERTEXT_LEN - self.partial.len() {
                let mut segment = std::mem::take(&mut self.partial);
                segment.extend_from_slice(&input[..take]);
                input = &input[take..];
                self.open_full(&segment, &mut out)?;
                // Reuse the allocation for the next partial segment.
                segment.clear();
                self.partial = segment;
            }
        }
        // Whole segments straight from the input: decrypted in the output buffer, so each
        // byte is copied once.
        if self.partial.is_empty() {
            while input.len() >= SEGMENT_CIPHERTEXT_LEN {
                let (segment, rest) = input.split_at(SEGMENT_CIPHERTEXT_LEN);
                self.open_full(segment, &mut out)?;
                input = rest;
            }
        }
        if self.partial.capacity() == 0 && !input.is_empty() {
            self.partial.reserve_exact(SEGMENT_CIPHERTEXT_LEN);
        }
        self.partial.extend_from_slice(input);

        // A full segment is never the last one, so the buffered rest may be the last one,
        // or the start of a segment still arriving: only authentication can tell.
        if may_be_last && self.partial.len() >= TAG_LEN {
            let nonce = segment_nonce(&self.nonce_prefix, self.counter, true);
            let split = self.partial.len() - TAG_LEN;
            let (data, tag) = self.partial.split_at_mut(split);
            // aes-gcm checks the tag before decrypting and leaves the buffer untouched on
            // failure, so a failed attempt costs one GHASH and loses nothing.
            if self
                .cipher
                .decrypt_in_place_detached(&Nonce::from(nonce), &self.aad, data, (&*tag).into())
                .is_ok()
            {
                out.extend_from_slice(data);
                self.partial = Vec::new();
                return Ok((out, true));
            }
        }
        Ok((out, false))
    }

    /// Opens one full (hence non-last) segment and appends its plaintext to `out`.
    fn open_full(&mut self, segment: &[u8], out: &mut Vec<u8>) -> Result<(), CryptoError> {
        let (ciphertext, tag) = segment.split_at(SEGMENT_SIZE);
        let start = out.len();
        out.extend_from_slice(ciphertext);
        let nonce = segment_nonce(&self.nonce_prefix, self.counter, false);
        if self
            .cipher
            .decrypt_in_place_detached(
                &Nonce::from(nonce),
                &self.aad,
                &mut out[start..],
                tag.into(),
            )
            .is_err()
        {
            out.truncate(start);
            return Err(CryptoError::Authentication);
        }
        self.counter = self.counter.checked_add(1).ok_or(CryptoError::TooLarge)?;
        Ok(())
    }
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
    let plaintext = decryptor.push(ciphertext)?;
    decryptor.finish()?;
    Ok(plaintext)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_master_key_file_others_may_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("encryption.key");
        let (_, created) = Keyring::load_or_generate(&path).unwrap();
        assert!(created);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(
            !Keyring::load_or_generate(&path).unwrap().1,
            "loads its own"
        );
        for mode in [0o644, 0o640, 0o604] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let err = Keyring::load_or_generate(&path).unwrap_err().to_string();
            assert!(
                err.contains("may be read by others") && err.contains("chmod 600"),
                "{mode:o}: {err}"
            );
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert!(Keyring::load_or_generate(&path).is_ok());
    }
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const BINDING: Binding = Binding {
        ledger_id: 7_000_000_000_123,
        version: 3,
    };

    fn keyring() -> Keyring {
        Keyring::new(MasterKey::random().unwrap(), Vec::new())
    }

    fn data(len: usize, seed: u64) -> Vec<u8> {
        let mut v = vec![0u8; len];
        StdRng::seed_from_u64(seed).fill_bytes(&mut v);
        v
    }

    fn encrypt_chunked(
        keyring: &Keyring,
        plaintext: &[u8],
        rng: &mut StdRng,
        max_chunk: usize,
    ) -> Vec<u8> {
        let mut writer = EncryptingWriter::new(Vec::new(), keyring, BINDING).unwrap();
        let mut rest = plaintext;
        while !rest.is_empty() {
            let n = rng.gen_range(0..=max_chunk.min(rest.len()));
            writer.write_all(&rest[..n]).unwrap();
            rest = &rest[n..];
        }
        writer.finish().unwrap()
    }

    fn decrypt_chunked(
        keyring: &Keyring,
        binding: Binding,
        ciphertext: &[u8],
        rng: &mut StdRng,
        max_chunk: usize,
    ) -> Result<Vec<u8>, CryptoError> {
        let mut decryptor = Decryptor::new(keyring, binding);
        let mut out = Vec::new();
        let mut rest = ciphertext;
        while !rest.is_empty() {
            let n = rng.gen_range(1..=max_chunk.min(rest.len()));
            out.extend(decryptor.push(&rest[..n])?);
            rest = &rest[n..];
        }
        decryptor.finish()?;
        Ok(out)
    }

    fn header_len_of(ct: &[u8]) -> usize {
        header_len(usize::from(ct[FIXED_HEADER_LEN - 1]))
    }

    /// Ciphertext segments (tag included) after the header.
    fn segments(ct: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
        let h = header_len_of(ct);
        let segs = ct[h..]
            .chunks(SEGMENT_CIPHERTEXT_LEN)
            .map(<[u8]>::to_vec)
            .collect();
        (ct[..h].to_vec(), segs)
    }

    fn join(header: &[u8], segs: &[Vec<u8>]) -> Vec<u8> {
        let mut v = header.to_vec();
        for s in segs {
            v.extend_from_slice(s);
        }
        v
    }

    #[test]
    fn round_trips_at_boundary_sizes_with_random_chunking() {
        let keyring = keyring();
        let mut rng = StdRng::seed_from_u64(1);
        for (i, len) in [0, 1, 15, 16, 17, 65535, 65536, 65537, 3 * 65536, 1_000_003]
            .into_iter()
            .enumerate()
        {
            let plaintext = data(len, i as u64);
            let whole = encrypt_to_vec(&keyring, BINDING, &plaintext).unwrap();
            assert_eq!(
                decrypt_to_vec(&keyring, BINDING, &whole).unwrap(),
                plaintext,
                "len {len}"
            );
            let expected_len = header_len(8) + len + (len / SEGMENT_SIZE + 1) * TAG_LEN;
            assert_eq!(whole.len(), expected_len, "len {len}");
            for max_chunk in [7, 4096, 70_000, 300_000] {
                // Debug-build AES is slow: the large input gets one write and two push
                // chunkings; the boundary sizes get them all.
                if len > 200_000 && max_chunk != 70_000 {
                    continue;
                }
                let ct = encrypt_chunked(&keyring, &plaintext, &mut rng, max_chunk);
                assert_eq!(ct.len(), expected_len);
                for max_push in [100, 8192, 65552, 200_000] {
                    // Every push tries to open the partial segment: tiny pushes over a big
                    // input are quadratic, and slow in debug builds.
                    if (max_push < 8192 && len > 20_000) || (len > 200_000 && max_push == 65552) {
                        continue;
                    }
                    let pt = decrypt_chunked(&keyring, BINDING, &ct, &mut rng, max_push).unwrap();
                    assert_eq!(pt, plaintext, "len {len} write {max_chunk} push {max_push}");
                }
            }
        }
    }

    #[test]
    fn push_not_last_with_lookahead() {
        let keyring = keyring();
        let mut rng = StdRng::seed_from_u64(11);
        for len in [0, 10, SEGMENT_SIZE - 1, SEGMENT_SIZE, 2 * SEGMENT_SIZE + 77] {
            let plaintext = data(len, 10);
            let ct = encrypt_to_vec(&keyring, BINDING, &plaintext).unwrap();
            let mut chunks = Vec::new();
            let mut rest = &ct[..];
            while !rest.is_empty() {
                let n = rng.gen_range(1..=rest.len().min(40_000));
                chunks.push(&rest[..n]);
                rest = &rest[n..];
            }
            let (last, init) = chunks.split_last().unwrap();
            let mut d = Decryptor::new(&keyring, BINDING);
            let mut out = Vec::new();
            for c in init {
                out.extend(d.push_not_last(c).unwrap());
            }
            out.extend(d.push(last).unwrap());
            d.finish().unwrap();
            assert_eq!(out, plaintext, "len {len}");

            // A caller that never says "this may be the last chunk" gets no final segment.
            let mut d = Decryptor::new(&keyring, BINDING);
            d.push_not_last(&ct).unwrap();
            assert!(matches!(d.finish(), Err(CryptoError::Truncated)));
        }
    }

    #[test]
    fn one_byte_pushes_on_a_small_input() {
        let keyring = keyring();
        for len in [0, 1, 100, 3000] {
            let plaintext = data(len, 9);
            let ct = encrypt_to_vec(&keyring, BINDING, &plaintext).unwrap();
            let mut decryptor = Decryptor::new(&keyring, BINDING);
            let mut out = Vec::new();
            for (i, b) in ct.iter().enumerate() {
                assert_eq!(decryptor.header_verified(), i >= header_len_of(&ct));
                out.extend(decryptor.push(std::slice::from_ref(b)).unwrap());
            }
            decryptor.finish().unwrap();
            assert_eq!(out, plaintext);
        }
    }

    #[test]
    fn push_releases_only_whole_authenticated_segments() {
        let keyring = keyring();
        let plaintext = data(2 * SEGMENT_SIZE + 10, 2);
        let ct = encrypt_to_vec(&keyring, BINDING, &plaintext).unwrap();
        let h = header_len_of(&ct);
        let mut d = Decryptor::new(&keyring, BINDING);
        assert!(
            d.push(&ct[..h + SEGMENT_CIPHERTEXT_LEN - 1])
                .unwrap()
                .is_empty()
        );
        assert!(d.header_verified());
        assert_eq!(
            d.push(&ct[h + SEGMENT_CIPHERTEXT_LEN - 1..h + SEGMENT_CIPHERTEXT_LEN])
                .unwrap(),
            plaintext[..SEGMENT_SIZE]
        );
        assert_eq!(
            d.push(&ct[h + SEGMENT_CIPHERTEXT_LEN..ct.len() - 1])
                .unwrap(),
            plaintext[SEGMENT_SIZE..2 * SEGMENT_SIZE]
        );
        assert_eq!(
            d.push(&ct[ct.len() - 1..]).unwrap(),
            plaintext[2 * SEGMENT_SIZE..]
        );
        d.finish().unwrap();
    }

    #[test]
    fn old_key_still_decrypts_and_new_files_use_the_current_key() {
        let old = MasterKey::random().unwrap();
        let old_ring = Keyring::new(old.clone(), Vec::new());
        let made_with_old = encrypt_to_vec(&old_ring, BINDING, b"before rotation").unwrap();

        let current = MasterKey::random().unwrap();
        let rotated = Keyring::new(current.clone(), vec![old.clone()]);
        assert_eq!(
            decrypt_to_vec(&rotated, BINDING, &made_with_old).unwrap(),
            b"before rotation"
        );

        let made_with_new = encrypt_to_vec(&rotated, BINDING, b"after rotation").unwrap();
        assert_eq!(
            &made_with_new[FIXED_HEADER_LEN..FIXED_HEADER_LEN + 8],
            current.id().as_bytes()
        );
        assert_eq!(
            decrypt_to_vec(&rotated, BINDING, &made_with_new).unwrap(),
            b"after rotation"
        );
        // The old key alone cannot open it.
        assert!(
            matches!(decrypt_to_vec(&old_ring, BINDING, &made_with_new), Err(CryptoError::UnknownKeyId(id)) if id == current.id())
        );
    }

    #[test]
    fn wrong_key_and_unknown_key_id() {
        let keyring = keyring();
        let ct = encrypt_to_vec(&keyring, BINDING, b"secret").unwrap();
        let other = Keyring::new(MasterKey::random().unwrap(), Vec::new());
        assert!(matches!(
            decrypt_to_vec(&other, BINDING, &ct),
            Err(CryptoError::UnknownKeyId(_))
        ));
        // A different key that claims the same id (a 32-bit id collision) fails to unwrap.
        let impostor = MasterKey {
            id: keyring.current_id().to_owned(),
            key: MasterKey::random().unwrap().key,
        };
        let impostor_ring = Keyring::new(impostor, Vec::new());
        let mut d = Decryptor::new(&impostor_ring, BINDING);
        assert!(matches!(d.push(&ct), Err(CryptoError::KeyUnwrap)));
        assert!(!d.header_verified());
        assert!(matches!(d.push(b""), Err(CryptoError::Poisoned)));
        // With the impostor and the right key under the same id, the right one is found.
        let both = Keyring::new(
            MasterKey {
                id: keyring.current_id().to_owned(),
                key: MasterKey::random().unwrap().key,
            },
            vec![keyring.current().clone()],
        );
        assert_eq!(decrypt_to_vec(&both, BINDING, &ct).unwrap(), b"secret");
    }

    #[test]
    fn header_errors_surface_on_the_push_that_completes_the_header() {
        let keyring = keyring();
        let ct = encrypt_to_vec(
            &Keyring::new(MasterKey::random().unwrap(), Vec::new()),
            BINDING,
            b"x",
        )
        .unwrap();
        let h = header_len_of(&ct);
        let mut d = Decryptor::new(&keyring, BINDING);
        assert!(d.push(&ct[..h - 1]).unwrap().is_empty());
        assert!(matches!(
            d.push(&ct[h - 1..h]),
            Err(CryptoError::UnknownKeyId(_))
        ));
        // Bad magic fails on the first byte.
        let mut d = Decryptor::new(&keyring, BINDING);
        assert!(matches!(d.push(b"X"), Err(CryptoError::Malformed(_))));
    }

    #[test]
    fn truncation_is_detected() {
        let keyring = keyring();
        for len in [
            0,
            100,
            SEGMENT_SIZE,
            3 * SEGMENT_SIZE,
            3 * SEGMENT_SIZE + 100,
        ] {
            let ct = encrypt_to_vec(&keyring, BINDING, &data(len, 3)).unwrap();
            let (header, segs) = segments(&ct);
            // Last segment dropped.
            let dropped = join(&header, &segs[..segs.len() - 1]);
            assert!(
                matches!(
                    decrypt_to_vec(&keyring, BINDING, &dropped),
                    Err(CryptoError::Truncated)
                ),
                "len {len}"
            );
            // Cut in the middle of a segment and at every tail byte of the last one.
            for cut in [
                ct.len() - 1,
                ct.len() - TAG_LEN,
                ct.len() - TAG_LEN - 1,
                header.len() + 1,
                header.len() + SEGMENT_CIPHERTEXT_LEN / 2,
            ] {
                if cut < ct.len() && cut > header.len() {
                    assert!(
                        decrypt_to_vec(&keyring, BINDING, &ct[..cut]).is_err(),
                        "len {len} cut {cut}"
                    );
                }
            }
            // Cut inside the header, and nothing at all.
            for cut in [0, 1, 5, header.len() - 1, header.len()] {
                assert!(
                    matches!(
                        decrypt_to_vec(&keyring, BINDING, &ct[..cut]),
                        Err(CryptoError::Truncated)
                    ),
                    "len {len} cut {cut}"
                );
            }
        }
    }

    #[test]
    fn reordered_or_duplicated_segments_are_detected() {
        let keyring = keyring();
        let ct = encrypt_to_vec(&keyring, BINDING, &data(3 * SEGMENT_SIZE + 5, 4)).unwrap();
        let (header, segs) = segments(&ct);
        assert_eq!(segs.len(), 4);
        let swapped = join(
            &header,
            &[
                segs[1].clone(),
                segs[0].clone(),
                segs[2].clone(),
                segs[3].clone(),
            ],
        );
        assert!(matches!(
            decrypt_to_vec(&keyring, BINDING, &swapped),
            Err(CryptoError::Authentication)
        ));
        let duplicated = join(
            &header,
            &[
                segs[0].clone(),
                segs[0].clone(),
                segs[1].clone(),
                segs[2].clone(),
                segs[3].clone(),
            ],
        );
        assert!(matches!(
            decrypt_to_vec(&keyring, BINDING, &duplicated),
            Err(CryptoError::Authentication)
        ));
        let dropped_middle = join(
            &header,
            &[segs[0].clone(), segs[2].clone(), segs[3].clone()],
        );
        assert!(matches!(
            decrypt_to_vec(&keyring, BINDING, &dropped_middle),
            Err(CryptoError::Authentication)
        ));
        // The last segment duplicated: it is authentic but something trails it.
        let mut d = Decryptor::new(&keyring, BINDING);
        d.push(&ct).unwrap();
        assert!(matches!(d.push(&segs[3]), Err(CryptoError::TrailingData)));
        // Segments spliced in from another object with the same key and binding.
        let other = encrypt_to_vec(&keyring, BINDING, &data(3 * SEGMENT_SIZE + 5, 4)).unwrap();
        let (_, other_segs) = segments(&other);
        let spliced = join(
            &header,
            &[
                segs[0].clone(),
                other_segs[1].clone(),
                segs[2].clone(),
                segs[3].clone(),
            ],
        );
        assert!(matches!(
            decrypt_to_vec(&keyring, BINDING, &spliced),
            Err(CryptoError::Authentication)
        ));
    }

    #[test]
    fn trailing_garbage_is_detected() {
        let keyring = keyring();
        for len in [0, 10, SEGMENT_SIZE] {
            let ct = encrypt_to_vec(&keyring, BINDING, &data(len, 5)).unwrap();
            let mut d = Decryptor::new(&keyring, BINDING);
            d.push(&ct).unwrap();
            assert!(matches!(d.push(b"garbage"), Err(CryptoError::TrailingData)));
            // In the same chunk the last segment cannot be told apart from a longer one.
            let mut with_garbage = ct.clone();
            with_garbage.extend_from_slice(b"garbage");
            assert!(decrypt_to_vec(&keyring, BINDING, &with_garbage).is_err());
            with_garbage.extend_from_slice(&[0u8; 2 * SEGMENT_CIPHERTEXT_LEN]);
            assert!(decrypt_to_vec(&keyring, BINDING, &with_garbage).is_err());
        }
    }

    #[test]
    fn binding_is_authenticated() {
        let keyring = keyring();
        let ct = encrypt_to_vec(&keyring, BINDING, &data(100_000, 6)).unwrap();
        let other_ledger = Binding {
            ledger_id: BINDING.ledger_id + 1,
            ..BINDING
        };
        let other_version = Binding {
            version: BINDING.version + 1,
            ..BINDING
        };
        let swapped = Binding {
            ledger_id: i64::from(BINDING.version),
            version: 0,
        };
        for binding in [other_ledger, other_version, swapped] {
            assert!(
                matches!(
                    decrypt_to_vec(&keyring, binding, &ct),
                    Err(CryptoError::KeyUnwrap)
                ),
                "{binding:?}"
            );
        }
        // A file made for another ledger id with the same key, served for this one.
        let for_other = encrypt_to_vec(&keyring, other_ledger, &data(100_000, 6)).unwrap();
        assert!(matches!(
            decrypt_to_vec(&keyring, BINDING, &for_other),
            Err(CryptoError::KeyUnwrap)
        ));
        // Its header grafted onto our body: the header unwraps but the body is bound to ours.
        let (other_header, _) = segments(&for_other);
        let (_, segs) = segments(&ct);
        assert!(decrypt_to_vec(&keyring, other_ledger, &join(&other_header, &segs)).is_err());
    }

    #[test]
    fn flipped_bits_are_detected_everywhere() {
        let keyring = keyring();
        for len in [0, 1000, SEGMENT_SIZE + 1000] {
            let ct = encrypt_to_vec(&keyring, BINDING, &data(len, 7)).unwrap();
            let h = header_len_of(&ct);
            let mut positions: Vec<usize> = (0..h).collect();
            positions.extend([
                h,
                h + 1,
                ct.len() / 2,
                ct.len() - TAG_LEN - 1,
                ct.len() - TAG_LEN,
                ct.len() - 1,
            ]);
            if len > SEGMENT_SIZE {
                positions.extend([
                    h + SEGMENT_SIZE - 1,
                    h + SEGMENT_SIZE,
                    h + SEGMENT_CIPHERTEXT_LEN - 1,
                ]);
            }
            for pos in positions {
                for bit in [0, 7] {
                    let mut bad = ct.clone();
                    bad[pos] ^= 1 << bit;
                    assert!(
                        decrypt_to_vec(&keyring, BINDING, &bad).is_err(),
                        "len {len} pos {pos} bit {bit}"
                    );
                }
            }
        }
    }

    #[test]
    fn master_key_parsing_never_echoes_input() {
        let good = generate_key_base64();
        let key = MasterKey::from_base64(&good).unwrap();
        assert_eq!(key.id().len(), 8);
        assert!(key.id().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            MasterKey::from_base64(&format!("  {good}\n")).unwrap().id(),
            key.id()
        );

        let short = BASE64.encode([0x41u8; 31]);
        let long = BASE64.encode([0x41u8; 33]);
        let invalid = format!("{}!!", &good[..good.len() - 2]);
        for input in [
            short.as_str(),
            long.as_str(),
            invalid.as_str(),
            "",
            "c2VjcmV0LXNlY3JldA==",
            "not base64 at all %%%",
        ] {
            let err = MasterKey::from_base64(input).unwrap_err();
            assert!(matches!(err, CryptoError::BadKey));
            let shown = format!("{err} {err:?}");
            assert!(input.is_empty() || !shown.contains(input), "{shown}");
            assert!(!shown.contains("QUFB"), "{shown}");
        }
    }

    #[test]
    fn key_id_is_stable_and_distinct() {
        let b64 = BASE64.encode([0u8; 32]);
        let a = MasterKey::from_base64(&b64).unwrap();
        let b = MasterKey::from_base64(&b64).unwrap();
        assert_eq!(a.id(), b.id());
        let c = MasterKey::from_base64(&BASE64.encode([1u8; 32])).unwrap();
        assert_ne!(a.id(), c.id());
    }

    #[test]
    fn debug_shows_ids_only() {
        let b64 = generate_key_base64();
        let key = MasterKey::from_base64(&b64).unwrap();
        let old = MasterKey::random().unwrap();
        let keyring = Keyring::new(key.clone(), vec![old.clone()]);
        let hex: String = key.key.iter().map(|b| format!("{b:02x}")).collect();
        for shown in [
            format!("{key:?}"),
            format!("{keyring:?}"),
            format!("{keyring:#?}"),
            format!("{:?}", Decryptor::new(&keyring, BINDING)),
        ] {
            assert!(!shown.contains(&b64), "{shown}");
            assert!(!shown.contains(&b64[..12]), "{shown}");
            assert!(!shown.contains(&hex[..16]), "{shown}");
            assert!(!shown.contains(&format!("{:?}", &key.key[..4])), "{shown}");
        }
        assert!(format!("{keyring:?}").contains(key.id()));
        assert!(format!("{keyring:?}").contains(old.id()));
        assert_eq!(keyring.current_id(), key.id());
    }

    #[cfg(unix)]
    #[test]
    fn load_or_generate_creates_a_private_file_and_reloads_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("master.key");
        let (first, created) = Keyring::load_or_generate(&path).unwrap();
        assert!(created);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (second, created) = Keyring::load_or_generate(&path).unwrap();
        assert!(!created);
        assert_eq!(first.current_id(), second.current_id());
        let ct = encrypt_to_vec(&first, BINDING, b"persisted").unwrap();
        assert_eq!(decrypt_to_vec(&second, BINDING, &ct).unwrap(), b"persisted");
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);

        // A corrupt key file is an error, not a silent regeneration.
        fs::write(&path, "garbage").unwrap();
        assert!(matches!(
            Keyring::load_or_generate(&path),
            Err(CryptoError::BadKey)
        ));
    }

    #[test]
    fn load_or_generate_races_agree_on_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || Keyring::load_or_generate(&path).unwrap())
            })
            .collect();
        let results: Vec<(Keyring, bool)> =
            handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(results.iter().filter(|(_, created)| *created).count(), 1);
        assert!(
            results
                .iter()
                .all(|(k, _)| k.current_id() == results[0].0.current_id())
        );
    }

    #[test]
    fn writer_dropped_without_finish_is_undecryptable() {
        let keyring = keyring();
        let mut out = Vec::new();
        {
            let mut writer = EncryptingWriter::new(&mut out, &keyring, BINDING).unwrap();
            writer.write_all(&data(SEGMENT_SIZE * 2 + 3, 8)).unwrap();
        }
        assert!(matches!(
            decrypt_to_vec(&keyring, BINDING, &out),
            Err(CryptoError::Truncated)
        ));
    }

    #[test]
    fn writer_is_poisoned_by_inner_errors() {
        struct Failing(usize);
        impl Write for Failing {
            fn write(&mut self, data: &[u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("disk full"));
                }
                self.0 -= 1;
                Ok(data.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let keyring = keyring();
        let mut writer = EncryptingWriter::new(Failing(1), &keyring, BINDING).unwrap();
        assert!(writer.write_all(&data(SEGMENT_SIZE, 1)).is_err());
        assert!(writer.write_all(b"more").is_err());
        assert!(matches!(writer.finish(), Err(CryptoError::Poisoned)));
        assert!(matches!(
            EncryptingWriter::new(Failing(0), &keyring, BINDING),
            Err(CryptoError::Io(_))
        ));
    }
}
