//! Opening: [`Decryptor`] takes ciphertext in pieces of any size, checks the header, and
//! releases whole authenticated segments only, holding at most one partial segment.
//!
//! A segment that arrives whole in a piece of its own (the reader asked for
//! [`Decryptor::wanted`] bytes and got them) is opened in place: its plaintext is handed
//! out in the very buffer it was read into. Segments cut across pieces are gathered into
//! one buffer first, a copy of those bytes only.

use std::collections::VecDeque;
use std::fmt;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Nonce, Tag};
use bytes::{Buf, Bytes, BytesMut};
use zeroize::Zeroizing;

use super::key::Keyring;
use super::segment::SegmentCipher;
use super::*;

/// Streaming decryption fed by pieces of ciphertext (as they arrive from object storage).
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
    partial: BytesMut,
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

    /// The bytes that complete what is being read: the rest of the header's next field, or
    /// of the current segment. A reader that reads exactly this much, then whole segments,
    /// has every segment opened in place. 0 once the object ended or failed.
    pub fn wanted(&self) -> usize {
        match &self.state {
            DecryptState::Header(header) if header.len() < FIXED_HEADER_LEN => {
                FIXED_HEADER_LEN - header.len()
            }
            DecryptState::Header(header) => {
                header_len(usize::from(header[FIXED_HEADER_LEN - 1])) - header.len()
            }
            DecryptState::Body(body) => SEGMENT_CIPHERTEXT_LEN - body.partial.len(),
            DecryptState::Done | DecryptState::Failed => 0,
        }
    }

    /// Feeds the next piece of ciphertext and appends to `out` the plaintext of every
    /// segment it completed: whole authenticated segments only, never unauthenticated
    /// bytes. A full segment is never the last one, so what is left buffered waits for
    /// more, or for [`Decryptor::end`]. Header errors (bad magic, unknown key id, wrong
    /// key or binding) surface on the push that completes the header. After any error the
    /// decryptor only returns [`CryptoError::Poisoned`].
    pub fn push(&mut self, piece: Bytes, out: &mut VecDeque<Bytes>) -> Result<(), CryptoError> {
        let result = self.push_inner(piece, out);
        if result.is_err() {
            self.state = DecryptState::Failed;
        }
        result
    }

    /// The object ended: what is buffered must be its last segment. Returns that segment's
    /// plaintext (possibly empty). An object cut anywhere, even at a segment boundary, is
    /// [`CryptoError::Truncated`] or fails authentication; anything after the real last
    /// segment makes it fail authentication.
    pub fn end(&mut self) -> Result<Bytes, CryptoError> {
        let result = match &mut self.state {
            DecryptState::Body(body) => body.open_last(),
            DecryptState::Header(_) => Err(CryptoError::Truncated),
            DecryptState::Done => Ok(Bytes::new()),
            DecryptState::Failed => Err(CryptoError::Poisoned),
        };
        self.state = match result {
            Ok(_) => DecryptState::Done,
            Err(_) => DecryptState::Failed,
        };
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

    fn push_inner(
        &mut self,
        mut piece: Bytes,
        out: &mut VecDeque<Bytes>,
    ) -> Result<(), CryptoError> {
        if let DecryptState::Header(header) = &mut self.state {
            let mut input = &piece[..];
            let Some(complete) = take_header_bytes(header, &mut input)? else {
                return Ok(());
            };
            let consumed = piece.len() - input.len();
            let header = std::mem::take(header);
            debug_assert!(complete == header.len());
            let body = open_header(&self.keyring, self.binding, &header)?;
            self.header_verified = true;
            self.header_sha256 = Some(header_digest(&header));
            self.state = DecryptState::Body(Box::new(body));
            piece.advance(consumed);
        }
        match &mut self.state {
            DecryptState::Body(body) => body.push(piece, out),
            DecryptState::Done if piece.is_empty() => Ok(()),
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
            if !matches!(header[MAGIC.len()], FORMAT_ROOT | FORMAT_MERCHANT) {
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
    if header[MAGIC.len()] != keyring.format() {
        // The store said which kind of key seals this object; the object says otherwise.
        return Err(CryptoError::Malformed(
            "format version does not match the key recorded for the file",
        ));
    }
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
                partial: BytesMut::new(),
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
    /// Opens every segment `piece` completes, appending their plaintext to `out`; keeps
    /// the rest as the partial segment.
    fn push(&mut self, mut piece: Bytes, out: &mut VecDeque<Bytes>) -> Result<(), CryptoError> {
        // Complete a segment begun by an earlier piece.
        if !self.partial.is_empty() {
            let take = (SEGMENT_CIPHERTEXT_LEN - self.partial.len()).min(piece.len());
            self.partial.extend_from_slice(&piece[..take]);
            piece.advance(take);
            if self.partial.len() < SEGMENT_CIPHERTEXT_LEN {
                return Ok(());
            }
            let segment = std::mem::take(&mut self.partial);
            out.push_back(self.open(segment, false)?);
        }
        let whole = piece.len() / SEGMENT_CIPHERTEXT_LEN * SEGMENT_CIPHERTEXT_LEN;
        if whole < piece.len() {
            // The start of a segment still arriving (or the last one): copied, so that the
            // whole segments before it are the piece's only users.
            let rest = piece.split_off(whole);
            self.partial.reserve(SEGMENT_CIPHERTEXT_LEN);
            self.partial.extend_from_slice(&rest);
        }
        if piece.is_empty() {
            return Ok(());
        }
        // Whole segments, opened where they lie when this piece is theirs alone (a buffer
        // shared with other pieces is copied first: its other users must not see it change).
        let mut segments = piece
            .try_into_mut()
            .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
        while !segments.is_empty() {
            let segment = segments.split_to(SEGMENT_CIPHERTEXT_LEN);
            out.push_back(self.open(segment, false)?);
        }
        Ok(())
    }

    /// Opens what is buffered as the last segment, at the end of the object.
    fn open_last(&mut self) -> Result<Bytes, CryptoError> {
        if self.partial.len() < TAG_LEN {
            return Err(CryptoError::Truncated);
        }
        let segment = std::mem::take(&mut self.partial);
        // What ends the object must authenticate as its last segment: when it does not, the
        // object was cut (or its end rewritten).
        self.open(segment, true).map_err(|e| match e {
            CryptoError::Authentication => CryptoError::Truncated,
            other => other,
        })
    }

    /// Opens one sealed `segment` (tag included) in place: its plaintext, in its buffer.
    fn open(&mut self, mut segment: BytesMut, last: bool) -> Result<Bytes, CryptoError> {
        let split = segment.len() - TAG_LEN;
        let (ciphertext, tag) = segment.split_at_mut(split);
        let nonce = segment_nonce(&self.nonce_prefix, self.counter, last);
        self.cipher.open(nonce, &self.aad, ciphertext, tag)?;
        self.counter = self.counter.checked_add(1).ok_or(CryptoError::TooLarge)?;
        segment.truncate(split);
        Ok(segment.freeze())
    }
}
