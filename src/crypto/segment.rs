//! The cipher of a file's body: AES-256-GCM under the file's data key, one call a segment.
//! It is *ring*'s implementation (AES-NI or VAES with carry-less multiplication, several
//! GB/s a core), which a download's speed rests on; the key wrap, one call a file, stays
//! with the `aes-gcm` crate of the master keys.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};

use super::{CryptoError, KEY_LEN, NONCE_LEN, TAG_LEN};

/// A data key, ready to seal or open segments.
pub(super) struct SegmentCipher {
    key: LessSafeKey,
}

impl SegmentCipher {
    /// The cipher of `data_key` (*ring* refuses a key only for its length, which the type
    /// fixes).
    pub(super) fn new(data_key: &[u8; KEY_LEN]) -> Result<Self, CryptoError> {
        let key = UnboundKey::new(&AES_256_GCM, data_key).map_err(|_| CryptoError::BadKey)?;
        Ok(Self {
            key: LessSafeKey::new(key),
        })
    }

    /// Encrypts `data` in place; its tag.
    pub(super) fn seal(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        data: &mut [u8],
    ) -> Result<[u8; TAG_LEN], CryptoError> {
        let tag = self
            .key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), data)
            .map_err(|_| CryptoError::TooLarge)?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Decrypts `data` in place if `tag` authenticates it. On failure `data` holds no
    /// plaintext (it is zeroed), so a caller that may need the ciphertext again opens a
    /// copy.
    pub(super) fn open(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        data: &mut [u8],
        tag: &[u8],
    ) -> Result<(), CryptoError> {
        let tag = Tag::try_from(tag).map_err(|_| CryptoError::Authentication)?;
        self.key
            .open_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                tag,
                data,
                0..,
            )
            .map(|_| ())
            .map_err(|_| CryptoError::Authentication)
    }
}

#[cfg(test)]
mod tests {
    use aes_gcm::aead::{AeadInPlace, KeyInit};

    use super::*;

    /// The format is AES-256-GCM, whoever implements it: what one library seals the other
    /// opens, so files sealed before the change of library still open.
    #[test]
    fn seals_and_opens_like_the_aes_gcm_crate() {
        let key = [7u8; KEY_LEN];
        let nonce = [3u8; NONCE_LEN];
        let aad = b"header and binding";
        let plain: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let other = aes_gcm::Aes256Gcm::new((&key).into());

        let mut sealed = plain.clone();
        let tag = SegmentCipher::new(&key)
            .unwrap()
            .seal(nonce, aad, &mut sealed)
            .unwrap();
        let mut opened = sealed.clone();
        other
            .decrypt_in_place_detached((&nonce).into(), aad, &mut opened, (&tag).into())
            .unwrap();
        assert_eq!(opened, plain);

        let mut theirs = plain.clone();
        let their_tag = other
            .encrypt_in_place_detached((&nonce).into(), aad, &mut theirs)
            .unwrap();
        assert_eq!(
            (theirs.as_slice(), &their_tag[..]),
            (sealed.as_slice(), &tag[..])
        );
        let cipher = SegmentCipher::new(&key).unwrap();
        cipher.open(nonce, aad, &mut theirs, &their_tag).unwrap();
        assert_eq!(theirs, plain);

        let mut tampered = sealed.clone();
        tampered[5] ^= 1;
        assert!(matches!(
            cipher.open(nonce, aad, &mut tampered, &tag),
            Err(CryptoError::Authentication)
        ));
        assert!(
            tampered.iter().all(|&b| b == 0),
            "no plaintext is left after a failure"
        );
        let mut wrong_aad = sealed;
        assert!(
            cipher
                .open(nonce, b"another file", &mut wrong_aad, &tag)
                .is_err()
        );
    }
}
