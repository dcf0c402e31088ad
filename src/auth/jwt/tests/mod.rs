//! Tests of token verification over a fixed key set or a JWKS file: the algorithm
//! allow-list, claims, leeway, and garbage refused without being echoed. Keys from a JWKS URL
//! are tested in [`jwks`].

use jsonwebtoken::{Algorithm, EncodingKey, Header as JwtHeader};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};

use super::*;
use crate::auth::DevKey;

mod jwks;

const HOUR: Duration = Duration::from_secs(3600);

/// A fresh dev key plus its private half, read back from the file it was saved to.
fn dev_key() -> (tempfile::TempDir, DevKey, p256::SecretKey) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("dev.pem");
    let (key, created) = DevKey::load_or_create(&path).expect("dev key");
    assert!(created);
    let pem = std::fs::read_to_string(&path).expect("read pem");
    let secret = p256::SecretKey::from_pkcs8_pem(&pem).expect("pkcs8 pem");
    (dir, key, secret)
}

fn verifier(key: &DevKey, opts: VerifierOptions) -> Verifier {
    Verifier::from_jwks(&key.jwks(), opts).expect("verifier")
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Signs arbitrary claims with an arbitrary P-256 key under `kid`.
fn sign_with(secret: &p256::SecretKey, kid: &str, claims: &serde_json::Value) -> String {
    let der = secret.to_pkcs8_der().expect("pkcs8");
    let mut header = JwtHeader::new(Algorithm::ES256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(der.as_bytes())).expect("sign")
}

fn expect_invalid(result: Result<Claims, AuthError>, needle: &str) {
    match result {
        Err(AuthError::InvalidToken(message)) => {
            assert!(
                message.contains(needle),
                "{message:?} should mention {needle:?}"
            )
        }
        other => panic!("expected InvalidToken({needle}), got {other:?}"),
    }
}

#[tokio::test]
async fn accepts_a_dev_key_token() {
    let (_dir, key, _) = dev_key();
    let v = verifier(&key, VerifierOptions::default());
    let token = key.sign("alice", HOUR, None, None).expect("sign");
    let claims = v.verify(&token).await.expect("valid token");
    assert_eq!(claims.sub, "alice");
    assert!(claims.exp > now());
    assert!(v.ready().await.is_ok());
}

#[tokio::test]
async fn rejects_expired_beyond_leeway_but_tolerates_skew() {
    let (_dir, key, secret) = dev_key();
    let v = verifier(&key, VerifierOptions::default());
    let expired = sign_with(
        &secret,
        key.kid(),
        &serde_json::json!({"sub": "a", "exp": now() - 120}),
    );
    expect_invalid(v.verify(&expired).await, "expired");
    let skewed = sign_with(
        &secret,
        key.kid(),
        &serde_json::json!({"sub": "a", "exp": now() - 5}),
    );
    assert!(v.verify(&skewed).await.is_ok());
    // 30 s, not the library's default of 60 s.
    let past_leeway = sign_with(
        &secret,
        key.kid(),
        &serde_json::json!({"sub": "a", "exp": now() - 45}),
    );
    expect_invalid(v.verify(&past_leeway).await, "expired");
}

#[tokio::test]
async fn the_leeway_is_configurable() {
    let (_dir, key, secret) = dev_key();
    let strict = verifier(
        &key,
        VerifierOptions {
            leeway: Duration::ZERO,
            ..VerifierOptions::default()
        },
    );
    let lenient = verifier(
        &key,
        VerifierOptions {
            leeway: Duration::from_secs(120),
            ..VerifierOptions::default()
        },
    );
    let token = |exp| {
        sign_with(
            &secret,
            key.kid(),
            &serde_json::json!({"sub": "a", "exp": exp}),
        )
    };
    expect_invalid(strict.verify(&token(now() - 5)).await, "expired");
    assert!(strict.verify(&token(now() + 5)).await.is_ok());
    assert!(lenient.verify(&token(now() - 90)).await.is_ok());
    expect_invalid(lenient.verify(&token(now() - 150)).await, "expired");
}

#[tokio::test]
async fn rejects_alg_none() {
    let (_dir, key, _) = dev_key();
    let v = verifier(&key, VerifierOptions::default());
    let header = b64(format!(r#"{{"alg":"none","typ":"JWT","kid":"{}"}}"#, key.kid()).as_bytes());
    let payload = b64(format!(r#"{{"sub":"root","exp":{}}}"#, now() + 3600).as_bytes());
    expect_invalid(
        v.verify(&format!("{header}.{payload}.")).await,
        "unsupported alg",
    );
    let upper = b64(format!(r#"{{"alg":"NONE","kid":"{}"}}"#, key.kid()).as_bytes());
    expect_invalid(
        v.verify(&format!("{upper}.{payload}.")).await,
        "unsupported alg",
    );
}

#[tokio::test]
async fn rejects_hs256_signed_with_the_public_key() {
    let (_dir, key, secret) = dev_key();
    let v = verifier(&key, VerifierOptions::default());
    let claims = serde_json::json!({"sub": "root", "exp": now() + 3600});
    let jwk_json = serde_json::to_vec(&key.jwks().keys[0]).expect("jwk json");
    let sec1 = secret.public_key().to_sec1_bytes();
    for secret in [jwk_json.as_slice(), &sec1[..]] {
        let mut header = JwtHeader::new(Algorithm::HS256);
        header.kid = Some(key.kid().to_owned());
        let token = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret))
            .expect("hs256");
        expect_invalid(v.verify(&token).await, "unsupported alg");
    }
}

#[tokio::test]
async fn rejects_rs256_header() {
    let (_dir, key, _) = dev_key();
    let v = verifier(&key, VerifierOptions::default());
    // The signature part is irrelevant: the header alone must end it.
    let header = b64(format!(r#"{{"alg":"RS256","kid":"{}"}}"#, key.kid()).as_bytes());
    let payload = b64(format!(r#"{{"sub":"root","exp":{}}}"#, now() + 3600).as_bytes());
    let token = format!("{header}.{payload}.{}", b64(&[7u8; 256]));
    expect_invalid(v.verify(&token).await, "unsupported alg");
}

#[tokio::test]
async fn rejects_another_key_with_the_same_kid() {
    let (_dir, key, _) = dev_key();
    let v = verifier(&key, VerifierOptions::default());
    let other = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let token = sign_with(
        &other,
        key.kid(),
        &serde_json::json!({"sub": "a", "exp": now() + 60}),
    );
    expect_invalid(v.verify(&token).await, "bad signature");
}

#[tokio::test]
async fn rejects_unknown_kid_and_missing_kid() {
    let (_dir, key, secret) = dev_key();
    let v = verifier(&key, VerifierOptions::default());
    let claims = serde_json::json!({"sub": "a", "exp": now() + 60});
    let token = sign_with(&secret, "nope", &claims);
    expect_invalid(v.verify(&token).await, "unknown key id");

    let der = &secret.to_pkcs8_der().expect("pkcs8");
    let no_kid = jsonwebtoken::encode(
        &JwtHeader::new(Algorithm::ES256),
        &claims,
        &EncodingKey::from_ec_der(der.as_bytes()),
    )
    .expect("sign");
    expect_invalid(v.verify(&no_kid).await, "missing kid");
}

#[tokio::test]
async fn rejects_missing_or_empty_sub_and_missing_exp() {
    let (_dir, key, secret) = dev_key();
    let v = verifier(&key, VerifierOptions::default());
    let no_sub = sign_with(&secret, key.kid(), &serde_json::json!({"exp": now() + 60}));
    expect_invalid(v.verify(&no_sub).await, "missing sub");
    let empty_sub = sign_with(
        &secret,
        key.kid(),
        &serde_json::json!({"sub": " ", "exp": now() + 60}),
    );
    expect_invalid(v.verify(&empty_sub).await, "missing sub");
    let no_exp = sign_with(&secret, key.kid(), &serde_json::json!({"sub": "a"}));
    expect_invalid(v.verify(&no_exp).await, "missing or malformed exp");
    let bad_exp = sign_with(
        &secret,
        key.kid(),
        &serde_json::json!({"sub": "a", "exp": "soon"}),
    );
    expect_invalid(v.verify(&bad_exp).await, "malformed exp");
    let null_exp = sign_with(
        &secret,
        key.kid(),
        &serde_json::json!({"sub": "a", "exp": null}),
    );
    expect_invalid(v.verify(&null_exp).await, "exp");
    let numeric_sub = sign_with(
        &secret,
        key.kid(),
        &serde_json::json!({"sub": 7, "exp": now() + 60}),
    );
    expect_invalid(v.verify(&numeric_sub).await, "malformed sub");
    let fractional = sign_with(
        &secret,
        key.kid(),
        &serde_json::json!({"sub": "a", "exp": now() as f64 + 60.5}),
    );
    assert!(v.verify(&fractional).await.is_ok());
}

#[tokio::test]
async fn checks_iss_and_aud_only_when_configured() {
    let (_dir, key, secret) = dev_key();
    let strict = verifier(
        &key,
        VerifierOptions::new(Some("idp".into()), Some("ledger".into())),
    );
    let lax = verifier(&key, VerifierOptions::default());

    let good = key
        .sign("a", HOUR, Some("idp"), Some("ledger"))
        .expect("sign");
    assert_eq!(
        strict.verify(&good).await.expect("good").iss.as_deref(),
        Some("idp")
    );
    assert!(
        lax.verify(&good).await.is_ok(),
        "aud must not be checked when not configured"
    );

    let wrong_iss = key
        .sign("a", HOUR, Some("evil"), Some("ledger"))
        .expect("sign");
    expect_invalid(strict.verify(&wrong_iss).await, "wrong issuer");
    let wrong_aud = key
        .sign("a", HOUR, Some("idp"), Some("other"))
        .expect("sign");
    expect_invalid(strict.verify(&wrong_aud).await, "wrong audience");
    let neither = key.sign("a", HOUR, None, None).expect("sign");
    // Both are missing; the library checks required claims in no fixed order.
    expect_invalid(strict.verify(&neither).await, "missing or malformed");
    let no_aud = key.sign("a", HOUR, Some("idp"), None).expect("sign");
    expect_invalid(strict.verify(&no_aud).await, "missing or malformed aud");
    assert!(lax.verify(&neither).await.is_ok());

    let multi = sign_with(
        &secret,
        key.kid(),
        &serde_json::json!({"sub": "a", "exp": now() + 60, "iss": "idp", "aud": ["x", "ledger"]}),
    );
    assert!(strict.verify(&multi).await.is_ok());
}

#[tokio::test]
async fn rejects_garbage_without_echoing_it() {
    let (_dir, key, _) = dev_key();
    let v = verifier(&key, VerifierOptions::default());
    let secret_looking = "s3cr3t-looking-garbage";
    for garbage in [
        "x",
        "a.b",
        "a.b.c",
        "a.b.c.d",
        "...",
        secret_looking,
        "eyJhbGciOiJFUzI1NiJ9.e30.",
        "\u{0}\u{1}.\u{2}.\u{3}",
        &"A".repeat(MAX_TOKEN_LEN + 1),
    ] {
        match v.verify(garbage).await {
            Err(AuthError::InvalidToken(message)) => {
                assert!(!message.contains(secret_looking));
            }
            other => panic!("{garbage:?}: {other:?}"),
        }
    }
    assert_eq!(v.verify("  ").await, Err(AuthError::MissingToken));
}

#[tokio::test]
async fn jwks_file_source() {
    let (dir, key, _secret) = dev_key();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, serde_json::to_vec(&key.jwks()).expect("json")).expect("write");
    let v = Verifier::from_file(&path, VerifierOptions::default()).expect("from file");
    let token = key.sign("bob", HOUR, None, None).expect("sign");
    assert_eq!(v.verify(&token).await.expect("valid").sub, "bob");

    // One unreadable or foreign key must not spoil the set.
    let mut doc = serde_json::to_value(key.jwks()).expect("json");
    if let Some(keys) = doc["keys"].as_array_mut() {
        keys.push(serde_json::json!({"kty": "RSA", "kid": "r", "n": "AQAB", "e": "AQAB"}));
        keys.push(serde_json::json!({"kty": "weird"}));
    }
    std::fs::write(&path, serde_json::to_vec(&doc).expect("json")).expect("write");
    let v = Verifier::from_file(&path, VerifierOptions::default()).expect("from file");
    assert_eq!(v.key_count(), 1);

    std::fs::write(&path, br#"{"keys":[]}"#).expect("write");
    assert!(matches!(
        Verifier::from_file(&path, VerifierOptions::default()),
        Err(AuthError::Keys(_))
    ));
    assert!(
        Verifier::from_file(&dir.path().join("missing.json"), VerifierOptions::default()).is_err()
    );
}

#[tokio::test]
async fn a_verified_token_is_remembered_until_it_expires_and_no_other_token_shares_it() {
    let (_dir, key, _) = dev_key();
    let v = verifier(
        &key,
        VerifierOptions {
            leeway: Duration::ZERO,
            ..VerifierOptions::default()
        },
    );
    let token = key
        .sign("alice", Duration::from_secs(2), None, None)
        .expect("sign");
    assert_eq!(v.verify(&token).await.expect("valid").sub, "alice");
    assert_eq!(v.verified.len(), 1);
    assert_eq!(v.verify(&token).await.expect("remembered").sub, "alice");
    assert_eq!(v.verified.len(), 1);
    // The same token with another signature is another token: checked in full, refused.
    let (head, signature) = token.rsplit_once('.').expect("three parts");
    let flipped = if signature.starts_with('A') { "B" } else { "A" };
    let forged = format!("{head}.{flipped}{}", &signature[1..]);
    expect_invalid(v.verify(&forged).await, "signature");
    // Remembered or not, an expired token is refused, with the usual message.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    expect_invalid(v.verify(&token).await, "expired");
    assert_eq!(v.verified.len(), 0);
}
