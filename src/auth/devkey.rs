//! The embedded default's local ES256 signing key: created once in the data dir (PKCS#8
//! PEM, mode 0600), published as a one-key JWKS, and used by `ledger token` to sign.
//!
//! Owns creating, loading and using that key. It must never overwrite an existing key
//! file (racing processes re-read the winner's), never print or log the private key, and
//! never be the key source of a deployment that configures a JWKS.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::SecretKey;
use p256::pkcs8::EncodePrivateKey;
use serde::Serialize;

use super::AuthError;

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
        let (secret, created) =
            crate::crypto::ec::load_or_create(path, "dev key", crate::crypto::ec::Exposed::Warn)
                .map_err(AuthError::Keys)?;
        Ok((Self::from_secret(&secret)?, created))
    }

    fn from_secret(secret: &SecretKey) -> Result<Self, AuthError> {
        let der = secret
            .to_pkcs8_der()
            .map_err(|_| AuthError::Keys("cannot encode the dev key".into()))?;
        let encoding = EncodingKey::from_ec_der(der.as_bytes());
        let (jwk, kid) = crate::crypto::ec::public_jwk(&secret.public_key());
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

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::jwk::ThumbprintHash;
    use std::os::unix::fs::PermissionsExt;

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
