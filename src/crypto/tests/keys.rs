//! Master keys and the keyring: parsing never echoes the input, ids are stable, `Debug` shows
//! ids only, and the key file is created private, refused when others may read it, and
//! agreed on by racing processes.

use std::fs;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

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
    let results: Vec<(Keyring, bool)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(results.iter().filter(|(_, created)| *created).count(), 1);
    assert!(
        results
            .iter()
            .all(|(k, _)| k.current_id() == results[0].0.current_id())
    );
}

/// A merchant key's keyring (format 2) seals objects only it opens; a root keyring (format 1)
/// neither opens them nor has its own objects opened by a merchant key, whatever the key
/// bytes; relabelling the version byte breaks the wrapped key.
#[test]
fn format_2_objects_open_with_their_merchant_key_only() {
    let binding = Binding {
        ledger_id: 7,
        version: 1,
    };
    let merchant = MasterKey::generate("0123456789abcdef0123456789abcdef").unwrap();
    let same_bytes_as_root = MasterKey::with_id("0badc0de", merchant.expose_bytes()).unwrap();
    let merchant = Keyring::merchant(merchant);
    let plain = b"statement of m_1".repeat(5000);
    let sealed = encrypt_to_vec(&merchant, binding, &plain).unwrap();
    assert_eq!(sealed[4], FORMAT_MERCHANT);
    assert_eq!(
        peek_header(&sealed),
        Some((FORMAT_MERCHANT, merchant.current_id().to_owned()))
    );
    assert_eq!(decrypt_to_vec(&merchant, binding, &sealed).unwrap(), plain);

    // A root keyring holding the very same bytes refuses the object for its format.
    let root = Keyring::new(same_bytes_as_root, Vec::new());
    assert!(matches!(
        decrypt_to_vec(&root, binding, &sealed),
        Err(CryptoError::Malformed(_))
    ));
    // And a format-1 object does not open with a merchant keyring.
    let old = encrypt_to_vec(&root, binding, &plain).unwrap();
    assert_eq!(peek_header(&old).map(|(f, _)| f), Some(FORMAT_ROOT));
    assert!(decrypt_to_vec(&merchant, binding, &old).is_err());

    // The version byte is authenticated: a format-2 header relabelled 1 (opened by a root
    // keyring of the same key and id) fails to unwrap.
    let mut relabelled = sealed.clone();
    relabelled[4] = FORMAT_ROOT;
    let root_same_id = Keyring::new(
        MasterKey::with_id(merchant.current_id(), merchant.current_key().expose_bytes()).unwrap(),
        Vec::new(),
    );
    assert!(matches!(
        decrypt_to_vec(&root_same_id, binding, &relabelled),
        Err(CryptoError::KeyUnwrap)
    ));
    // Another merchant's key does not open it.
    let other = Keyring::merchant(MasterKey::generate("ffffffffffffffffffffffffffffffff").unwrap());
    assert!(decrypt_to_vec(&other, binding, &sealed).is_err());
}

/// A key wrapped under a root key unwraps with that key and context only; the keyring finds
/// it by id among old keys, and says which id it lacks.
#[test]
fn wrapped_keys_open_under_their_root_and_context_only() {
    let a = MasterKey::from_base64(&generate_key_base64()).unwrap();
    let b = MasterKey::from_base64(&generate_key_base64()).unwrap();
    let secret = [7u8; 32];
    let wrapped = a.wrap_key(&secret, b"ctx-m_1").unwrap();
    assert_ne!(&wrapped[12..44], &secret[..], "wrapped, not copied");
    assert_eq!(&a.unwrap_key(&wrapped, b"ctx-m_1").unwrap()[..], &secret);
    assert!(matches!(
        a.unwrap_key(&wrapped, b"ctx-m_2"),
        Err(CryptoError::KeyUnwrap)
    ));
    assert!(b.unwrap_key(&wrapped, b"ctx-m_1").is_err());
    let mut flipped = wrapped.clone();
    flipped[20] ^= 1;
    assert!(a.unwrap_key(&flipped, b"ctx-m_1").is_err());
    assert!(a.unwrap_key(&wrapped[..10], b"ctx-m_1").is_err());

    let rotated = Keyring::new(b.clone(), vec![a.clone()]);
    assert_eq!(
        &rotated.unwrap_key(a.id(), &wrapped, b"ctx-m_1").unwrap()[..],
        &secret
    );
    let without_a = Keyring::new(b.clone(), Vec::new());
    match without_a.unwrap_key(a.id(), &wrapped, b"ctx-m_1") {
        Err(CryptoError::UnknownKeyId(id)) => assert_eq!(id, a.id()),
        other => panic!("expected UnknownKeyId, got {other:?}"),
    }
    assert_eq!(rotated.ids(), vec![b.id().to_owned(), a.id().to_owned()]);
}

#[test]
fn merchant_key_ids_are_checked_and_headers_peeked_safely() {
    assert!(MasterKey::generate("").is_err());
    assert!(MasterKey::generate(&"a".repeat(65)).is_err());
    assert!(MasterKey::generate("has space").is_err());
    assert!(MasterKey::with_id("ok", &[0u8; 31]).is_err());
    assert_eq!(peek_header(b"LDG"), None);
    assert_eq!(peek_header(b"XXXX\x01\x02ab"), None);
    assert_eq!(peek_header(b"LDGR\x03\x02ab"), None, "unknown format");
    assert_eq!(peek_header(b"LDGR\x01\x04ab"), None, "id cut short");
    assert_eq!(
        peek_header(b"LDGR\x01\x02ab"),
        Some((FORMAT_ROOT, "ab".to_owned()))
    );
}
