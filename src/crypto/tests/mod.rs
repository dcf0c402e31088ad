//! Tests of the envelope format: round trips at every boundary and chunking, and every kind
//! of damage (truncation, reordering, flipped bits, wrong key or binding) detected. The
//! keys and the keyring are tested in [`keys`].

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

use super::*;

mod keys;

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

/// Pushes `piece`; the plaintext of the segments it completed.
fn push(d: &mut Decryptor, piece: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut out = std::collections::VecDeque::new();
    d.push(bytes::Bytes::copy_from_slice(piece), &mut out)?;
    Ok(out.into_iter().flatten().collect())
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
        out.extend(push(&mut decryptor, &rest[..n])?);
        rest = &rest[n..];
    }
    out.extend(decryptor.end()?);
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

/// A reader that reads what the decryptor wants gets every segment's plaintext in the
/// buffer that segment was read into: opened in place, never copied.
#[test]
fn pieces_of_the_wanted_size_are_opened_in_place() {
    let keyring = keyring();
    for len in [0, 10, SEGMENT_SIZE - 1, SEGMENT_SIZE, 2 * SEGMENT_SIZE + 77] {
        let plaintext = data(len, 10);
        let ct = encrypt_to_vec(&keyring, BINDING, &plaintext).unwrap();
        let mut d = Decryptor::new(&keyring, BINDING);
        let (mut rest, mut out, mut in_place) = (&ct[..], Vec::new(), 0);
        while !rest.is_empty() {
            let piece = bytes::Bytes::copy_from_slice(&rest[..d.wanted().min(rest.len())]);
            rest = &rest[piece.len()..];
            let read_into = piece.as_ptr_range();
            let mut opened = std::collections::VecDeque::new();
            d.push(piece, &mut opened).unwrap();
            for segment in opened {
                assert!(read_into.contains(&segment.as_ptr()), "len {len}: copied");
                in_place += 1;
                out.extend_from_slice(&segment);
            }
        }
        assert_eq!(
            d.wanted(),
            SEGMENT_CIPHERTEXT_LEN - (len % SEGMENT_SIZE + TAG_LEN)
        );
        out.extend(d.end().unwrap());
        assert_eq!(out, plaintext, "len {len}");
        assert_eq!(in_place, len / SEGMENT_SIZE, "len {len}");
        assert_eq!(d.wanted(), 0);
    }
}

/// The buffered rest is opened as the last segment only when the object is said to end.
#[test]
fn the_last_segment_is_opened_at_the_end_only() {
    let keyring = keyring();
    for len in [0, 10, SEGMENT_SIZE] {
        let plaintext = data(len, 12);
        let ct = encrypt_to_vec(&keyring, BINDING, &plaintext).unwrap();
        let mut d = Decryptor::new(&keyring, BINDING);
        let mut out = push(&mut d, &ct).unwrap();
        assert_eq!(out.len(), len / SEGMENT_SIZE * SEGMENT_SIZE, "len {len}");
        out.extend(d.end().unwrap());
        assert_eq!(out, plaintext);
        // Ended twice: nothing more; pushed after the end: refused.
        assert!(d.end().unwrap().is_empty());
        assert!(matches!(push(&mut d, b"x"), Err(CryptoError::TrailingData)));
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
            out.extend(push(&mut decryptor, std::slice::from_ref(b)).unwrap());
        }
        out.extend(decryptor.end().unwrap());
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
        push(&mut d, &ct[..h + SEGMENT_CIPHERTEXT_LEN - 1])
            .unwrap()
            .is_empty()
    );
    assert!(d.header_verified());
    assert_eq!(
        push(
            &mut d,
            &ct[h + SEGMENT_CIPHERTEXT_LEN - 1..h + SEGMENT_CIPHERTEXT_LEN]
        )
        .unwrap(),
        plaintext[..SEGMENT_SIZE]
    );
    assert_eq!(
        push(&mut d, &ct[h + SEGMENT_CIPHERTEXT_LEN..ct.len() - 1]).unwrap(),
        plaintext[SEGMENT_SIZE..2 * SEGMENT_SIZE]
    );
    assert!(push(&mut d, &ct[ct.len() - 1..]).unwrap().is_empty());
    assert_eq!(d.end().unwrap(), plaintext[2 * SEGMENT_SIZE..]);
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
    assert!(matches!(push(&mut d, &ct), Err(CryptoError::KeyUnwrap)));
    assert!(!d.header_verified());
    assert!(matches!(push(&mut d, b""), Err(CryptoError::Poisoned)));
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
    assert!(push(&mut d, &ct[..h - 1]).unwrap().is_empty());
    assert!(matches!(
        push(&mut d, &ct[h - 1..h]),
        Err(CryptoError::UnknownKeyId(_))
    ));
    // Bad magic fails on the first byte.
    let mut d = Decryptor::new(&keyring, BINDING);
    assert!(matches!(push(&mut d, b"X"), Err(CryptoError::Malformed(_))));
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
    // The last segment duplicated: it is authentic, but something trails it, so what
    // ends the object is not a last segment.
    let mut d = Decryptor::new(&keyring, BINDING);
    push(&mut d, &ct).unwrap();
    push(&mut d, &segs[3]).unwrap();
    assert!(matches!(d.end(), Err(CryptoError::Truncated)));
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
        push(&mut d, &ct).unwrap();
        d.end().unwrap();
        assert!(matches!(
            push(&mut d, b"garbage"),
            Err(CryptoError::TrailingData)
        ));
        // Before the end is known, the last segment cannot be told apart from a longer one:
        // what ends the object does not authenticate as its last segment.
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
