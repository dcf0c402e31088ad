use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::ThumbprintHash;
use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};

use super::*;

fn manifest() -> Manifest {
    Manifest {
        iss: "ledger".into(),
        ledger_id: "7400000000000000001".into(),
        merchant_id: "m_1".into(),
        ledger_type: "STATEMENT".into(),
        period: "2026-10".into(),
        timezone: "Europe/Paris".into(),
        format: "CSV".into(),
        stage: "FINAL".into(),
        version: 2,
        sha256: "ab".repeat(32),
        size_bytes: 1234,
        control_totals: vec![ManifestTotals {
            currency: "EUR".into(),
            entries: 3,
            credits: i128::from(i64::MAX) * 4,
            debits: -5,
            opening: 10,
            closing: i128::from(i64::MAX) * 4 + 5,
        }],
        generated_at: "2026-11-01T00:00:03Z".into(),
    }
}

fn key() -> SecretKey {
    SecretKey::random(&mut rand::rngs::OsRng)
}

#[test]
fn a_signed_manifest_verifies_with_the_published_keys() {
    let signer = ManifestSigner::new(&key(), "ledger", &[]);
    let jws = signer.sign(&manifest());
    let (back, kid) = verify(&jws, signer.jwks()).unwrap();
    assert_eq!(
        back,
        manifest(),
        "claims survive, totals past 2^63 included"
    );
    assert_eq!(kid, signer.kid());
    let jwk = &signer.jwks().keys[0];
    assert_eq!(jwk.thumbprint(ThumbprintHash::SHA256), signer.kid());
    // The header is exactly what RFC 7515 verifiers expect.
    let header = URL_SAFE_NO_PAD
        .decode(jws.split('.').next().unwrap())
        .unwrap();
    assert_eq!(
        String::from_utf8(header).unwrap(),
        format!(r#"{{"alg":"ES256","kid":"{}"}}"#, signer.kid())
    );
    // The payload names the fields of SPEC §13.
    let payload: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(jws.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    let mut names: Vec<_> = payload.as_object().unwrap().keys().cloned().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "controlTotals",
            "format",
            "generatedAt",
            "iss",
            "ledgerId",
            "merchantId",
            "period",
            "sha256",
            "sizeBytes",
            "stage",
            "timezone",
            "type",
            "version"
        ]
    );
}

#[test]
fn both_signers_make_signatures_that_verify() {
    let secret = key();
    let signer = ManifestSigner::new(&secret, "ledger", &[]);
    assert!(signer.fast.is_some(), "ring takes the key");
    let fast = signer.sign(&manifest());
    let slow = ManifestSigner {
        fast: None,
        ..ManifestSigner::new(&secret, "ledger", &[])
    }
    .sign(&manifest());
    for jws in [fast, slow] {
        assert_eq!(verify(&jws, signer.jwks()).unwrap().0, manifest());
    }
}

#[test]
fn an_altered_manifest_or_another_key_is_refused() {
    let signer = ManifestSigner::new(&key(), "ledger", &[]);
    let jws = signer.sign(&manifest());
    let parts: Vec<&str> = jws.split('.').collect();
    let mut altered = manifest();
    altered.sha256 = "cd".repeat(32);
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&altered).unwrap()),
        parts[2]
    );
    assert_eq!(
        verify(&forged, signer.jwks()).unwrap_err(),
        VerifyError::Signature
    );

    let other = ManifestSigner::new(&key(), "ledger", &[]);
    assert!(matches!(
        verify(&jws, other.jwks()),
        Err(VerifyError::UnknownKey(_))
    ));
    // Another key published under the signer's kid still does not verify it.
    let mut impostor = other.jwks().clone();
    impostor.keys[0].common.key_id = Some(signer.kid().to_owned());
    assert_eq!(verify(&jws, &impostor).unwrap_err(), VerifyError::Signature);

    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"x"}"#),
        parts[1]
    );
    assert!(matches!(
        verify(&none, signer.jwks()),
        Err(VerifyError::Algorithm(a)) if a == "none"
    ));
    assert!(matches!(
        verify("a.b", signer.jwks()),
        Err(VerifyError::Malformed(_))
    ));
    let critical = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(format!(
            r#"{{"alg":"ES256","kid":"{}","crit":["b64"],"b64":false}}"#,
            signer.kid()
        )),
        parts[1],
        parts[2]
    );
    assert!(matches!(
        verify(&critical, signer.jwks()),
        Err(VerifyError::Malformed(m)) if m.contains("crit")
    ));
}

#[test]
fn retired_keys_stay_published_and_verify_their_manifests() {
    let old = key();
    let old_signer = ManifestSigner::new(&old, "ledger", &[]);
    let old_jws = old_signer.sign(&manifest());

    let current = key();
    let current_pem = current.to_pkcs8_pem(LineEnding::LF).unwrap();
    // Two retired public keys, one PEM after the other.
    let another = key();
    let retired = format!(
        "{}\n{}",
        old.public_key().to_public_key_pem(LineEnding::LF).unwrap(),
        another
            .public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap()
    );
    let signer = ManifestSigner::from_pem(&current_pem, &retired, "ledger").unwrap();
    assert_eq!(signer.jwks().keys.len(), 3);
    assert_eq!(
        signer.jwks().keys[0].common.key_id.as_deref(),
        Some(signer.kid())
    );
    assert!(verify(&old_jws, signer.jwks()).is_ok());
    // A PEM squeezed onto one line with literal \n reads the same.
    let one_line = current_pem.as_str().replace('\n', "\\n");
    let again = ManifestSigner::from_pem(&one_line, "", "ledger").unwrap();
    assert_eq!(again.kid(), signer.kid());
}

#[test]
fn bad_keys_are_named_without_their_content() {
    let err = ManifestSigner::from_pem(
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----",
        "",
        "ledger",
    )
    .unwrap_err();
    assert!(matches!(err, KeyError::Current));
    assert!(!err.to_string().contains("c2VjcmV0"));
    let good = key().to_pkcs8_pem(LineEnding::LF).unwrap();
    let err = ManifestSigner::from_pem(&good, "not a pem", "ledger").unwrap_err();
    assert!(matches!(err, KeyError::Retired(1)));
    // A retired key's private part is refused, and not quoted.
    let err = ManifestSigner::from_pem(&good, &good, "ledger").unwrap_err();
    assert!(matches!(err, KeyError::RetiredPrivate(1)));
    assert!(!err.to_string().contains(&good[30..60]));
    let pub_pem = key()
        .public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let err = ManifestSigner::from_pem(
        &good,
        &format!("{pub_pem}-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"),
        "ledger",
    )
    .unwrap_err();
    assert!(matches!(err, KeyError::Retired(2)));
    let signer = ManifestSigner::from_pem(&good, "", "ledger").unwrap();
    assert!(!format!("{signer:?}").contains("PRIVATE"));
}

#[test]
fn a_document_is_checked_against_its_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("statement.csv");
    std::fs::write(&file, b"date,amount\n2026-10-01,5\n").unwrap();
    let (sha, size) = {
        use sha2::Digest as _;
        let bytes = std::fs::read(&file).unwrap();
        (
            hex::encode(sha2::Sha256::digest(&bytes)),
            bytes.len() as u64,
        )
    };
    let signer = ManifestSigner::new(&key(), "ledger", &[]);
    let jws = signer.sign(&Manifest {
        sha256: sha,
        size_bytes: size,
        ..manifest()
    });
    match check::check_file(&file, &jws, signer.jwks()).unwrap() {
        check::Outcome::Verified { manifest, kid } => {
            assert_eq!(kid, signer.kid());
            let lines = check::describe(&manifest, &kid);
            assert!(
                lines[0].contains("ledger 7400000000000000001 version 2"),
                "{lines:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    std::fs::write(&file, b"date,amount\n2026-10-01,6\n").unwrap();
    match check::check_file(&file, &jws, signer.jwks()).unwrap() {
        check::Outcome::Mismatch(problems) => {
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(problems[0].starts_with("hash:"), "{problems:?}");
        }
        other => panic!("{other:?}"),
    }
    std::fs::write(&file, b"short").unwrap();
    match check::check_file(&file, &jws, ManifestSigner::new(&key(), "x", &[]).jwks()).unwrap() {
        check::Outcome::Mismatch(problems) => assert!(problems[0].starts_with("signature:")),
        other => panic!("{other:?}"),
    }
}
