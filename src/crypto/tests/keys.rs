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
