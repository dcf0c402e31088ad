//! Master keys and the keyring: parsing keys and deriving their public ids, the current key
//! and the old ones kept for objects sealed before a rotation, and the embedded-default key
//! file (mode 0600, never clobbering a racing writer). Nothing here prints a key byte.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::KeyInit;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use aes_gcm::Nonce;
use aes_gcm::aead::AeadInPlace;

use super::{
    CryptoError, FIXED_HEADER_LEN, FORMAT_MERCHANT, FORMAT_ROOT, KEY_ID_LABEL, KEY_LEN, MAGIC,
    MAX_KEY_ID_LEN, NONCE_LEN, TAG_LEN, valid_key_id_byte,
};

/// The format version and key id of an object, from its first bytes (at least the fixed
/// header and the key id); `None` when they are not an object header.
pub fn peek_header(bytes: &[u8]) -> Option<(u8, String)> {
    if bytes.len() < FIXED_HEADER_LEN || &bytes[..MAGIC.len()] != MAGIC {
        return None;
    }
    let format = bytes[MAGIC.len()];
    let len = usize::from(bytes[FIXED_HEADER_LEN - 1]);
    let id = bytes.get(FIXED_HEADER_LEN..FIXED_HEADER_LEN + len)?;
    let known = matches!(format, FORMAT_ROOT | FORMAT_MERCHANT);
    (known && len > 0 && id.iter().copied().all(valid_key_id_byte))
        .then(|| (format, String::from_utf8_lossy(id).into_owned()))
}

/// A 32-byte master key, wiped from memory on drop.
#[derive(Clone)]
pub struct MasterKey {
    pub(super) id: String,
    pub(super) key: Zeroizing<[u8; KEY_LEN]>,
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

    pub(super) fn from_bytes(key: Zeroizing<[u8; KEY_LEN]>) -> Self {
        // A labelled hash truncated to 32 bits: stable across restarts, tells operators which
        // key sealed an object, and is useless for recovering the key.
        let digest = Sha256::new()
            .chain_update(KEY_ID_LABEL)
            .chain_update(&key[..])
            .finalize();
        let id = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        Self { id, key }
    }

    pub(super) fn random() -> Result<Self, CryptoError> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        fill_random(&mut key[..])?;
        Ok(Self::from_bytes(key))
    }

    /// A fresh random key named by its digest, like a master key (a service key).
    pub fn generate_derived() -> Result<Self, CryptoError> {
        Self::random()
    }

    /// The key `bytes` (32 of them), named by its digest like a master key.
    pub fn from_raw(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != KEY_LEN {
            return Err(CryptoError::BadKey);
        }
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(bytes);
        Ok(Self::from_bytes(key))
    }

    /// A fresh random key named `id` (a merchant key: its id is chosen by the caller, as
    /// a 32-bit digest would collide among many merchants). `id` must be 1..=64 ASCII
    /// characters of `[A-Za-z0-9_-]`.
    pub fn generate(id: &str) -> Result<Self, CryptoError> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        fill_random(&mut key[..])?;
        Self::with_id(id, &key[..])
    }

    /// The key `bytes` (32 of them) named `id` (see [`MasterKey::generate`]).
    pub fn with_id(id: &str, bytes: &[u8]) -> Result<Self, CryptoError> {
        if id.is_empty() || id.len() > MAX_KEY_ID_LEN || !id.bytes().all(valid_key_id_byte) {
            return Err(CryptoError::Malformed("bad key id"));
        }
        if bytes.len() != KEY_LEN {
            return Err(CryptoError::BadKey);
        }
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(bytes);
        Ok(Self {
            id: id.to_owned(),
            key,
        })
    }

    /// The raw key bytes, for wrapping this key under another (a root key or a KMS).
    pub fn expose_bytes(&self) -> &[u8] {
        &self.key[..]
    }

    /// Seals `key` (another key's bytes) under this one: `nonce (12) ‖ ciphertext ‖ tag`,
    /// bound to `context` (e.g. the merchant and key id it belongs to).
    pub fn wrap_key(&self, key: &[u8], context: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)?;
        let mut out = Vec::with_capacity(NONCE_LEN + key.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(key);
        let tag = self
            .cipher()
            .encrypt_in_place_detached(&Nonce::from(nonce), context, &mut out[NONCE_LEN..])
            .map_err(|_| CryptoError::TooLarge)?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Opens what [`MasterKey::wrap_key`] sealed under this key for `context`.
    pub fn unwrap_key(
        &self,
        wrapped: &[u8],
        context: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if wrapped.len() < NONCE_LEN + TAG_LEN {
            return Err(CryptoError::KeyUnwrap);
        }
        let (nonce, rest) = wrapped.split_at(NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let mut plain = Zeroizing::new(ciphertext.to_vec());
        self.cipher()
            .decrypt_in_place_detached(nonce.into(), context, &mut plain[..], tag.into())
            .map_err(|_| CryptoError::KeyUnwrap)?;
        Ok(plain)
    }

    /// The key id written into object headers: 8 lowercase hex characters.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(super) fn cipher(&self) -> Aes256Gcm {
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
    /// The object format these keys seal and open ([`FORMAT_ROOT`] or [`FORMAT_MERCHANT`]).
    format: u8,
}

impl Keyring {
    /// Root keys: `current` seals new objects (format 1); `old` keys only open objects
    /// sealed before a rotation.
    pub fn new(current: MasterKey, old: Vec<MasterKey>) -> Self {
        Self {
            inner: Arc::new(KeyringInner {
                current,
                old,
                format: FORMAT_ROOT,
            }),
        }
    }

    /// One merchant key, sealing and opening format-2 objects.
    pub fn merchant(key: MasterKey) -> Self {
        Self {
            inner: Arc::new(KeyringInner {
                current: key,
                old: Vec::new(),
                format: FORMAT_MERCHANT,
            }),
        }
    }

    /// The object format these keys seal and open.
    pub fn format(&self) -> u8 {
        self.inner.format
    }

    /// Every key, current first.
    pub fn all_keys(&self) -> Vec<MasterKey> {
        std::iter::once(&self.inner.current)
            .chain(self.inner.old.iter())
            .cloned()
            .collect()
    }

    /// Every key's id, current first.
    pub fn ids(&self) -> Vec<String> {
        std::iter::once(&self.inner.current)
            .chain(self.inner.old.iter())
            .map(|k| k.id.clone())
            .collect()
    }

    /// The key with this id that opens `wrapped` for `context` (see
    /// [`MasterKey::unwrap_key`]); `UnknownKeyId` when no key has the id.
    pub fn unwrap_key(
        &self,
        id: &str,
        wrapped: &[u8],
        context: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let mut found = false;
        for key in self.candidates(id) {
            found = true;
            if let Ok(plain) = key.unwrap_key(wrapped, context) {
                return Ok(plain);
            }
        }
        if found {
            Err(CryptoError::KeyUnwrap)
        } else {
            Err(CryptoError::UnknownKeyId(id.to_owned()))
        }
    }

    /// The key that seals new objects.
    pub fn current_key(&self) -> &MasterKey {
        &self.inner.current
    }

    /// Id of the key that seals new objects.
    pub fn current_id(&self) -> &str {
        self.inner.current.id()
    }

    pub(super) fn current(&self) -> &MasterKey {
        &self.inner.current
    }

    /// Every key with this id, current first. More than one only if the same key was
    /// configured twice or two keys collide on their 32-bit id; unwrapping tries each.
    pub(super) fn candidates<'a>(
        &'a self,
        id: &'a str,
    ) -> impl Iterator<Item = &'a MasterKey> + 'a {
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

pub(super) fn fill_random(buf: &mut [u8]) -> Result<(), CryptoError> {
    OsRng.try_fill_bytes(buf).map_err(|_| CryptoError::Random)
}
