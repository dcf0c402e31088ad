//! The embedded default's local ES256 signing key: created once in the data dir (PKCS#8
//! PEM, mode 0600), published as a one-key JWKS, and used by `ledger token` to sign.
//!
//! Owns creating, loading and using that key. It must never overwrite an existing key
//! file (racing processes re-read the winner's), never print or log the private key, and
//! never be the key source of a deployment that configures a JWKS.

use std::fs::{DirBuilder, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, EllipticCurveKeyParameters,
    EllipticCurveKeyType, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::SecretKey;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::AuthError;

/// How long a process that lost the creation race waits for the winner's file to be
/// complete before giving up.
const REREAD_ATTEMPTS: u32 = 40;
const REREAD_PAUSE: Duration = Duration::from_millis(25);

/// The local ES256 key pair of the embedded default.
pub struct DevKey {
    encoding: EncodingKey,
    kid: String,
    jwk: Jwk,
}

impl std::fmt::Debug for DevKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct TokenClaims<'a> {
    sub: &'a str,
    iat: i64,
    exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

impl DevKey {
    /// Loads the key at `path`, creating it (and its directory, mode 0700) when absent.
    /// The flag is true when this call created the key; the caller logs the WARN.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), AuthError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| {
                    AuthError::Keys(format!("cannot create {}: {}", parent.display(), e.kind()))
                })?;
        }
        if path.exists() {
            return Ok((read_settled(path)?, false));
        }

        let secret = SecretKey::random(&mut rand::rngs::OsRng);
        let pem = secret
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|_| AuthError::Keys("cannot encode the new dev key".into()))?;
        // `create_new` is the lock: exactly one racing process writes, the others read.
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        match file {
            Ok(mut file) => {
                let written = file
                    .write_all(pem.as_bytes())
                    .and_then(|()| file.sync_all());
                if let Err(e) = written {
                    // A half-written key would block every later start; nobody can have
                    // used it yet.
                    let _ = std::fs::remove_file(path);
                    return Err(AuthError::Keys(format!(
                        "cannot write dev key {}: {}",
                        path.display(),
                        e.kind()
                    )));
                }
                Ok((Self::from_secret(&secret)?, true))
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok((read_settled(path)?, false)),
            Err(e) => Err(AuthError::Keys(format!(
                "cannot create dev key {}: {}",
                path.display(),
                e.kind()
            ))),
        }
    }

    fn from_secret(secret: &SecretKey) -> Result<Self, AuthError> {
        let der = secret
            .to_pkcs8_der()
            .map_err(|_| AuthError::Keys("cannot encode the dev key".into()))?;
        let encoding = EncodingKey::from_ec_der(der.as_bytes());
        let point = secret.public_key().to_encoded_point(false);
        let (Some(x), Some(y)) = (point.x(), point.y()) else {
            return Err(AuthError::Keys("dev key has no affine public point".into()));
        };
        let (x, y) = (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y));
        let kid = thumbprint(&x, &y);
        let jwk = Jwk {
            common: CommonParameters {
                public_key_use: Some(PublicKeyUse::Signature),
                key_algorithm: Some(KeyAlgorithm::ES256),
                key_id: Some(kid.clone()),
                ..CommonParameters::default()
            },
            algorithm: AlgorithmParameters::EllipticCurve(EllipticCurveKeyParameters {
                key_type: EllipticCurveKeyType::EC,
                curve: EllipticCurve::P256,
                x,
                y,
            }),
        };
        Ok(Self { encoding, kid, jwk })
    }

    /// The key id: the RFC 7638 SHA-256 thumbprint of the public key, base64url.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a one-key JWKS, for the verifier.
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: vec![self.jwk.clone()],
        }
    }

    /// Signs an ES256 token for `sub` valid for `ttl`, with `kid`, `iat` and `exp`, plus
    /// `iss` / `aud` when given.
    pub fn sign(
        &self,
        sub: &str,
        ttl: Duration,
        issuer: Option<&str>,
        audience: Option<&str>,
    ) -> Result<String, AuthError> {
        if sub.trim().is_empty() {
            return Err(AuthError::InvalidToken("missing sub".into()));
        }
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_secs()).ok())
            .ok_or_else(|| AuthError::Keys("system clock is before 1970".into()))?;
        let exp = i64::try_from(ttl.as_secs())
            .ok()
            .and_then(|ttl| iat.checked_add(ttl))
            .ok_or_else(|| AuthError::InvalidToken("ttl too large".into()))?;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let claims = TokenClaims {
            sub,
            iat,
            exp,
            iss: issuer,
            aud: audience,
        };
        jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|_| AuthError::Keys("signing with the dev key failed".into()))
    }
}

/// RFC 7638: SHA-256 over the required members in lexicographic order, no whitespace.
fn thumbprint(x: &str, y: &str) -> String {
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// Reads an existing key, waiting briefly when it is still being written by the process
/// that won the creation race.
fn read_settled(path: &Path) -> Result<DevKey, AuthError> {
    for attempt in 0..REREAD_ATTEMPTS {
        match std::fs::read_to_string(path) {
            Ok(pem) => {
                if let Ok(secret) = SecretKey::from_pkcs8_pem(&pem) {
                    warn_if_exposed(path);
                    return DevKey::from_secret(&secret);
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound && attempt > 0 => {
                return Err(AuthError::Keys(format!(
                    "dev key {} disappeared while being created",
                    path.display()
                )));
            }
            Err(e) if e.kind() != ErrorKind::NotFound => {
                return Err(AuthError::Keys(format!(
                    "cannot read dev key {}: {}",
                    path.display(),
                    e.kind()
                )));
            }
            Err(_) => {}
        }
        std::thread::sleep(REREAD_PAUSE);
    }
    Err(AuthError::Keys(format!(
        "dev key {} is not a PKCS#8 P-256 private key (left untouched)",
        path.display()
    )))
}

fn warn_if_exposed(path: &Path) {
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "dev key file is accessible to group or others; expected mode 0600");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::jwk::ThumbprintHash;

    #[test]
    fn creates_once_then_loads_the_same_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested/dev-key.pem");
        let (first, created) = DevKey::load_or_create(&path).expect("create");
        assert!(created);
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let pem = std::fs::read_to_string(&path).expect("read");
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));

        let (second, created) = DevKey::load_or_create(&path).expect("load");
        assert!(!created);
        assert_eq!(first.kid(), second.kid());
        assert_eq!(first.jwks(), second.jwks());
        assert!(!format!("{first:?}").contains(&pem[30..60]));
    }

    #[test]
    fn kid_is_the_rfc7638_thumbprint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (key, _) = DevKey::load_or_create(&dir.path().join("k.pem")).expect("create");
        let jwk = &key.jwks().keys[0];
        assert_eq!(jwk.thumbprint(ThumbprintHash::SHA256), key.kid());
        assert_eq!(jwk.common.key_id.as_deref(), Some(key.kid()));
    }

    #[test]
    fn racing_creators_agree_on_one_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("race.pem");
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || DevKey::load_or_create(&path).expect("load_or_create"))
            })
            .collect();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect();
        assert_eq!(results.iter().filter(|(_, created)| *created).count(), 1);
        let kids: std::collections::HashSet<_> =
            results.iter().map(|(k, _)| k.kid().to_owned()).collect();
        assert_eq!(kids.len(), 1);
    }

    #[test]
    fn refuses_a_corrupt_file_without_overwriting_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.pem");
        std::fs::write(&path, "not a key").expect("write");
        assert!(matches!(
            DevKey::load_or_create(&path),
            Err(AuthError::Keys(_))
        ));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "not a key");
    }

    #[test]
    fn sign_sets_kid_iat_exp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (key, _) = DevKey::load_or_create(&dir.path().join("k.pem")).expect("create");
        let token = key
            .sign("carol", Duration::from_secs(90), Some("i"), Some("a"))
            .expect("sign");
        let header = jsonwebtoken::decode_header(&token).expect("header");
        assert_eq!(header.alg, Algorithm::ES256);
        assert_eq!(header.kid.as_deref(), Some(key.kid()));
        let payload = token.split('.').nth(1).expect("payload");
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("json");
        assert_eq!(claims["sub"], "carol");
        assert_eq!(claims["iss"], "i");
        assert_eq!(claims["aud"], "a");
        let (iat, exp) = (
            claims["iat"].as_i64().expect("iat"),
            claims["exp"].as_i64().expect("exp"),
        );
        assert_eq!(exp - iat, 90);
        assert!(key.sign("", Duration::from_secs(1), None, None).is_err());
        assert!(key.sign("x", Duration::MAX, None, None).is_err());
    }
}
