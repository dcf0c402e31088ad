//! Opening: [`Decryptor`] takes ciphertext in chunks of any size, checks the header, and
//! releases whole authenticated segments only, holding about two segments at most.

use std::fmt;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Nonce, Tag};
use zeroize::Zeroizing;

use super::key::Keyring;
use super::segment::SegmentCipher;
use super::*;

/// Streaming decryption fed by arbitrary chunks (as they arrive from object storage).
pub struct Decryptor {
    keyring: Keyring,
    binding: Binding,
    state: DecryptState,
    header_verified: bool,
    /// [`header_digest`] of the header, once it is complete.
    header_sha256: Option<String>,
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
    cipher: SegmentCipher,
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
            header_sha256: None,
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

    /// The SHA-256 (hex) of the header, once it was read and its data key unwrapped: what
    /// [`crate::crypto::EncryptingWriter::header_sha256`] gave when this object was sealed.
    pub fn header_sha256(&self) -> Option<&str> {
        self.header_sha256.as_deref()
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
            self.header_sha256 = Some(header_digest(&header));
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
                cipher: SegmentCipher::new(&data_key)?,
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
        // or the start of a segment still arriving: only authentication can tell. A failed
        // open leaves no plaintext behind, so it is tried on a copy, which keeps the
        // ciphertext for the next push.
        if may_be_last && self.partial.len() >= TAG_LEN {
            let nonce = segment_nonce(&self.nonce_prefix, self.counter, true);
            let split = self.partial.len() - TAG_LEN;
            let start = out.len();
            out.extend_from_slice(&self.partial[..split]);
            let opened =
                self.cipher
                    .open(nonce, &self.aad, &mut out[start..], &self.partial[split..]);
            if opened.is_ok() {
                self.partial = Vec::new();
                return Ok((out, true));
            }
            out.truncate(start);
        }
        Ok((out, false))
    }

    /// Opens one full (hence non-last) segment and appends its plaintext to `out`.
    fn open_full(&mut self, segment: &[u8], out: &mut Vec<u8>) -> Result<(), CryptoError> {
        let (ciphertext, tag) = segment.split_at(SEGMENT_SIZE);
        let start = out.len();
        out.extend_from_slice(ciphertext);
        let nonce = segment_nonce(&self.nonce_prefix, self.counter, false);
        if let Err(e) = self.cipher.open(nonce, &self.aad, &mut out[start..], tag) {
            out.truncate(start);
            return Err(e);
        }
        self.counter = self.counter.checked_add(1).ok_or(CryptoError::TooLarge)?;
        Ok(())
    }
}
