//! Bearer-token verification: ES256 JWTs checked against a JWKS (URL, file or a static
//! set such as the embedded dev key).
//!
//! Owns the algorithm allow-list, claim checks and the JWKS cache. It must never accept
//! another algorithm (`none`, HMAC, RSA…), never trust a key the token carries itself,
//! and never put a token, a key or a JWKS URL's credentials into a log line or an error.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use super::AuthError;

/// Clock skew tolerated on `exp` and `nbf` unless configured (`APP_ENV_AUTH_LEEWAY_SECS`).
/// The library's own default (60 s) is never used.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// Timeout of one JWKS request, connection included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Keys fetched from a URL are refreshed once they are this old, so a key the issuer
/// withdrew stops being accepted even if no unknown `kid` ever shows up.
pub const MAX_KEY_AGE: Duration = Duration::from_secs(15 * 60);
/// Longer tokens are refused before any parsing: no legitimate bearer token is this big.
const MAX_TOKEN_LEN: usize = 16 * 1024;
/// A JWKS larger than this is refused rather than parsed.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// What a verifier checks beyond the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierOptions {
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud` (one of the token's audiences), when set.
    pub audience: Option<String>,
    /// Minimum time between two JWKS fetches (unknown `kid`, stale keys, readiness).
    pub min_refetch_interval: Duration,
    /// Clock skew tolerated on `exp` and `nbf`: a token is accepted until `exp` + this.
    pub leeway: Duration,
}

impl Default for VerifierOptions {
    fn default() -> Self {
        Self {
            issuer: None,
            audience: None,
            min_refetch_interval: Duration::from_secs(30),
            leeway: DEFAULT_LEEWAY,
        }
    }
}

impl VerifierOptions {
    /// Options checking `iss` / `aud` only when given, with the default refetch interval.
    pub fn new(issuer: Option<String>, audience: Option<String>) -> Self {
        Self {
            issuer,
            audience,
            ..Self::default()
        }
    }
}

/// The verified claims of a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The subject: who every authorization decision is made for. Never empty.
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued-at, seconds since the epoch, when present.
    pub iat: Option<i64>,
    /// Issuer, when present.
    pub iss: Option<String>,
}

type KeyMap = HashMap<String, DecodingKey>;

struct KeyCache {
    keys: Arc<KeyMap>,
    /// When the keys were last replaced by a successful fetch (URL source only).
    fetched_at: Option<Instant>,
}

struct Remote {
    url: reqwest::Url,
    client: reqwest::Client,
    /// Serialises fetches; holds when the last one was attempted, for rate limiting.
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
}

impl Remote {
    /// Only the host goes to logs: the path or query of a JWKS URL may carry a credential.
    fn host(&self) -> &str {
        self.url.host_str().unwrap_or("?")
    }
}

/// Verifies `Authorization: Bearer` tokens. Cheap to share behind an `Arc`.
pub struct Verifier {
    validation: Validation,
    min_refetch_interval: Duration,
    cache: RwLock<KeyCache>,
    remote: Option<Remote>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.current_keys().len())
            .field("remote_host", &self.remote.as_ref().map(Remote::host))
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier over a fixed key set (e.g. the embedded dev key). Fails when the set
    /// holds no usable ES256 key.
    pub fn from_jwks(set: &JwkSet, opts: VerifierOptions) -> Result<Self, AuthError> {
        let (keys, skipped) = keys_from_jwks(set.keys.iter().map(|jwk| key_from_jwk(jwk)));
        if keys.is_empty() {
            return Err(AuthError::Keys(format!(
                "the JWKS holds no usable ES256 (P-256) key with a kid ({skipped} skipped)"
            )));
        }
        Ok(Self::build(keys, None, None, opts))
    }

    /// A verifier over a JWKS file read once, now.
    pub fn from_file(path: &Path, opts: VerifierOptions) -> Result<Self, AuthError> {
        let bytes = std::fs::read(path).map_err(|e| {
            AuthError::Keys(format!(
                "cannot read JWKS file {}: {}",
                path.display(),
                e.kind()
            ))
        })?;
        let (keys, skipped) = parse_jwks(&bytes)
            .map_err(|e| AuthError::Keys(format!("JWKS file {}: {e}", path.display())))?;
        if keys.is_empty() {
            return Err(AuthError::Keys(format!(
                "JWKS file {} holds no usable ES256 (P-256) key with a kid ({skipped} skipped)",
                path.display()
            )));
        }
        Ok(Self::build(keys, None, None, opts))
    }

    /// A verifier over a JWKS URL. The first fetch happens now; when it fails the
    /// verifier still starts (and logs why), `ready()` reports the missing keys, and the
    /// next token or readiness probe retries after the refetch interval.
    pub async fn from_url(url: &str, opts: VerifierOptions) -> Result<Self, AuthError> {
        let url = reqwest::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| AuthError::Keys("the JWKS URL is not a valid http(s) URL".into()))?;
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|e| AuthError::Keys(format!("cannot build the JWKS HTTP client: {e}")))?;
        let remote = Remote {
            url,
            client,
            last_attempt: tokio::sync::Mutex::new(None),
        };
        let verifier = Self::build(KeyMap::new(), None, Some(remote), opts);
        verifier.refresh(true).await;
        Ok(verifier)
    }

    fn build(
        keys: KeyMap,
        fetched_at: Option<Instant>,
        remote: Option<Remote>,
        opts: VerifierOptions,
    ) -> Self {
        let mut validation = Validation::new(Algorithm::ES256);
        validation.leeway = opts.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // The library compares `iss` / `aud` only when present, so a configured one must
        // also be required or a token without it would pass.
        let mut required = vec!["exp"];
        if let Some(issuer) = &opts.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        match &opts.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            // The library otherwise refuses every token that carries an `aud`.
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Self {
            validation,
            min_refetch_interval: opts.min_refetch_interval,
            cache: RwLock::new(KeyCache {
                keys: Arc::new(keys),
                fetched_at,
            }),
            remote,
        }
    }

    /// Checks the signature and claims of `token` (without the `Bearer ` prefix).
    pub async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::MissingToken);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(invalid("token too long"));
        }
        let header = parse_header(token)?;

        if self.keys_are_stale() {
            self.refresh(false).await;
        }
        let key = match self.current_keys().get(&header.kid) {
            Some(key) => key.clone(),
            None => {
                // A rotation at the issuer shows up as a kid we have not seen yet.
                self.refresh(false).await;
                self.current_keys()
                    .get(&header.kid)
                    .cloned()
                    .ok_or_else(|| invalid("unknown key id"))?
            }
        };

        let data = jsonwebtoken::decode::<RawClaims>(token, &key, &self.validation)
            .map_err(|e| invalid(describe(e.kind())))?;
        let raw = data.claims;
        let sub = match raw.sub {
            Some(serde_json::Value::String(sub)) if !sub.trim().is_empty() => sub,
            None | Some(serde_json::Value::Null) | Some(serde_json::Value::String(_)) => {
                return Err(invalid("missing sub"));
            }
            Some(_) => return Err(invalid("malformed sub (expected a string)")),
        };
        let exp = raw
            .exp
            .as_ref()
            .and_then(seconds)
            .ok_or_else(|| invalid("malformed exp"))?;
        let iss = match raw.iss {
            Some(serde_json::Value::String(iss)) => Some(iss),
            _ => None,
        };
        Ok(Claims {
            sub,
            exp,
            iat: raw.iat.as_ref().and_then(seconds),
            iss,
        })
    }

    /// Ok when at least one verification key is loaded; with a URL source an empty
    /// cache triggers a (rate-limited) fetch first.
    pub async fn ready(&self) -> Result<(), AuthError> {
        if self.current_keys().is_empty() {
            self.refresh(false).await;
        }
        if self.current_keys().is_empty() {
            return Err(AuthError::Keys(
                "no verification keys loaded (JWKS not fetched yet)".into(),
            ));
        }
        Ok(())
    }

    /// How many verification keys are loaded.
    pub fn key_count(&self) -> usize {
        self.current_keys().len()
    }

    fn current_keys(&self) -> Arc<KeyMap> {
        // A poisoned lock still holds a consistent map: it is only ever swapped whole.
        self.cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys
            .clone()
    }

    fn keys_are_stale(&self) -> bool {
        self.remote.is_some()
            && self
                .cache
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .fetched_at
                .is_none_or(|at| at.elapsed() >= MAX_KEY_AGE)
    }

    /// Fetches the JWKS unless one was attempted within the refetch interval. A failure
    /// keeps the cached keys. Concurrent callers wait for the running fetch.
    async fn refresh(&self, initial: bool) {
        let Some(remote) = &self.remote else { return };
        let mut last_attempt = remote.last_attempt.lock().await;
        if !initial && last_attempt.is_some_and(|at| at.elapsed() < self.min_refetch_interval) {
            return;
        }
        *last_attempt = Some(Instant::now());
        match fetch(remote).await {
            Ok((keys, skipped)) if !keys.is_empty() => {
                tracing::info!(
                    host = remote.host(),
                    keys = keys.len(),
                    skipped,
                    "JWKS fetched"
                );
                let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
                cache.keys = Arc::new(keys);
                cache.fetched_at = Some(Instant::now());
            }
            Ok((_, skipped)) => tracing::warn!(
                host = remote.host(),
                skipped,
                "JWKS fetched but holds no usable ES256 key; keeping the cached keys"
            ),
            Err(error) => tracing::warn!(
                host = remote.host(),
                %error,
                "JWKS fetch failed; keeping the cached keys"
            ),
        }
    }
}

/// The claims as sent, loosely typed: a claim of the wrong type must reach the checks
/// that name it instead of failing as an anonymous parse error.
#[derive(Deserialize)]
struct RawClaims {
    sub: Option<serde_json::Value>,
    exp: Option<serde_json::Value>,
    iat: Option<serde_json::Value>,
    iss: Option<serde_json::Value>,
}

fn seconds(value: &serde_json::Value) -> Option<i64> {
    let n = value.as_number()?;
    // Fractional NumericDates are legal (RFC 7519 §2); the fraction does not matter here.
    n.as_i64()
        .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
}

struct Header {
    kid: String,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: Option<String>,
    kid: Option<String>,
    crit: Option<serde_json::Value>,
}

/// Reads `alg` and `kid` before any key is chosen, so that a foreign algorithm is named
/// as such instead of surfacing as a parse or signature error.
fn parse_header(token: &str) -> Result<Header, AuthError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid(
            "malformed token (expected three dot-separated parts)",
        ));
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| invalid("malformed token header"))?;
    let raw: RawHeader =
        serde_json::from_slice(&bytes).map_err(|_| invalid("malformed token header"))?;
    if raw.alg.as_deref() != Some("ES256") {
        return Err(invalid("unsupported alg (only ES256 is accepted)"));
    }
    if raw.crit.is_some() {
        return Err(invalid("unsupported critical header parameters"));
    }
    let kid = raw
        .kid
        .filter(|k| !k.is_empty())
        .ok_or_else(|| invalid("missing kid"))?;
    Ok(Header { kid })
}

fn invalid(what: &str) -> AuthError {
    AuthError::InvalidToken(what.to_owned())
}

/// A fixed description per failure: library messages are not passed on, so nothing from
/// the token can reach a response or a log through them.
fn describe(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "token expired",
        ErrorKind::ImmatureSignature => "token not valid yet (nbf)",
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::InvalidIssuer => "wrong issuer",
        ErrorKind::InvalidAudience => "wrong audience",
        ErrorKind::InvalidSubject => "wrong subject",
        // The library reports a claim of the wrong type as missing, too.
        ErrorKind::MissingRequiredClaim(claim) if claim == "exp" => "missing or malformed exp",
        ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => "missing or malformed iss",
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => "missing or malformed aud",
        ErrorKind::MissingRequiredClaim(_) => "missing required claim",
        ErrorKind::InvalidClaimFormat(claim) if claim == "exp" => "malformed exp",
        ErrorKind::InvalidClaimFormat(_) => "malformed claim",
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::InvalidAlgorithmName => "unsupported alg (only ES256 is accepted)",
        ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidKeyFormat => "unusable verification key",
        ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_)
        | ErrorKind::InvalidToken => "malformed token",
        _ => "token rejected",
    }
}

/// Parses a JWKS document key by key: one key of a type this library cannot read must
/// not make the issuer's whole set unusable.
fn parse_jwks(bytes: &[u8]) -> Result<(KeyMap, usize), String> {
    #[derive(Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(format!("JWKS larger than {MAX_JWKS_BYTES} bytes"));
    }
    let set: RawSet =
        serde_json::from_slice(bytes).map_err(|e| format!("not a JWKS document: {e}"))?;
    Ok(keys_from_jwks(set.keys.into_iter().map(|value| {
        serde_json::from_value::<Jwk>(value)
            .map_err(|_| "unreadable JWK")
            .and_then(|jwk| key_from_jwk(&jwk))
    })))
}

fn keys_from_jwks(
    candidates: impl Iterator<Item = Result<(String, DecodingKey), &'static str>>,
) -> (KeyMap, usize) {
    let mut keys = KeyMap::new();
    let mut skipped = 0;
    for candidate in candidates {
        match candidate {
            Ok((kid, key)) => {
                keys.insert(kid, key);
            }
            Err(reason) => {
                skipped += 1;
                tracing::debug!(reason, "JWK skipped");
            }
        }
    }
    (keys, skipped)
}

/// Accepts only P-256 signature keys with a kid whose point is on the curve.
fn key_from_jwk(jwk: &Jwk) -> Result<(String, DecodingKey), &'static str> {
    let kid = jwk
        .common
        .key_id
        .clone()
        .filter(|k| !k.is_empty())
        .ok_or("no kid")?;
    if jwk
        .common
        .key_algorithm
        .is_some_and(|alg| alg != KeyAlgorithm::ES256)
    {
        return Err("alg is not ES256");
    }
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return Err("use is not sig");
    }
    let AlgorithmParameters::EllipticCurve(ec) = &jwk.algorithm else {
        return Err("not an EC key");
    };
    if ec.curve != EllipticCurve::P256 {
        return Err("not a P-256 key");
    }
    let key = DecodingKey::from_ec_components(&ec.x, &ec.y).map_err(|_| "bad coordinates")?;
    p256::PublicKey::from_sec1_bytes(key.as_bytes()).map_err(|_| "point not on P-256")?;
    Ok((kid, key))
}

async fn fetch(remote: &Remote) -> Result<(KeyMap, usize), String> {
    let response = remote
        .client
        .get(remote.url.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| e.without_url().to_string())?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    if response
        .content_length()
        .is_some_and(|len| len > MAX_JWKS_BYTES as u64)
    {
        return Err(format!("JWKS larger than {MAX_JWKS_BYTES} bytes"));
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| e.without_url().to_string())?;
    parse_jwks(&body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::DevKey;
    use jsonwebtoken::{EncodingKey, Header as JwtHeader};
    use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(der.as_bytes()))
            .expect("sign")
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
        let header =
            b64(format!(r#"{{"alg":"none","typ":"JWT","kid":"{}"}}"#, key.kid()).as_bytes());
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
            Verifier::from_file(&dir.path().join("missing.json"), VerifierOptions::default())
                .is_err()
        );
    }

    /// A one-route HTTP server answering every request with the current body.
    struct JwksServer {
        url: String,
        body: Arc<Mutex<String>>,
        hits: Arc<AtomicUsize>,
    }

    async fn serve(body: String) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().expect("addr")
        );
        let body = Arc::new(Mutex::new(body));
        let hits = Arc::new(AtomicUsize::new(0));
        let (shared, counter) = (body.clone(), hits.clone());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let body = shared.lock().expect("body").clone();
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            }
        });
        JwksServer { url, body, hits }
    }

    #[tokio::test]
    async fn jwks_url_source_refetches_on_unknown_kid_after_rotation() {
        let (_d1, old, _) = dev_key();
        let (_d2, new, _) = dev_key();
        let server = serve(serde_json::to_string(&old.jwks()).expect("json")).await;
        let opts = VerifierOptions {
            min_refetch_interval: Duration::ZERO,
            ..VerifierOptions::default()
        };
        let v = Verifier::from_url(&server.url, opts)
            .await
            .expect("from url");
        assert!(v.ready().await.is_ok());
        assert_eq!(server.hits.load(Ordering::SeqCst), 1);

        let old_token = old.sign("a", HOUR, None, None).expect("sign");
        assert!(v.verify(&old_token).await.is_ok());
        assert_eq!(server.hits.load(Ordering::SeqCst), 1, "known kid: no fetch");

        *server.body.lock().expect("body") = serde_json::to_string(&new.jwks()).expect("json");
        let new_token = new.sign("b", HOUR, None, None).expect("sign");
        assert_eq!(v.verify(&new_token).await.expect("rotated key").sub, "b");
        assert_eq!(server.hits.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn jwks_url_refetch_is_rate_limited_and_failures_keep_keys() {
        let (_d1, old, _) = dev_key();
        let (_d2, new, _) = dev_key();
        let server = serve(serde_json::to_string(&old.jwks()).expect("json")).await;
        let v = Verifier::from_url(&server.url, VerifierOptions::default())
            .await
            .expect("from url");
        *server.body.lock().expect("body") = "not json".into();

        let new_token = new.sign("b", HOUR, None, None).expect("sign");
        for _ in 0..5 {
            expect_invalid(v.verify(&new_token).await, "unknown key id");
        }
        assert_eq!(
            server.hits.load(Ordering::SeqCst),
            1,
            "within 30 s: no refetch"
        );

        let fast = Verifier::from_url(
            &server.url,
            VerifierOptions {
                min_refetch_interval: Duration::ZERO,
                ..VerifierOptions::default()
            },
        )
        .await
        .expect("from url");
        assert!(fast.ready().await.is_err(), "no keys were ever fetched");
        *server.body.lock().expect("body") = serde_json::to_string(&old.jwks()).expect("json");
        assert!(fast.ready().await.is_ok());
        *server.body.lock().expect("body") = "not json".into();
        expect_invalid(fast.verify(&new_token).await, "unknown key id");
        let old_token = old.sign("a", HOUR, None, None).expect("sign");
        assert!(
            fast.verify(&old_token).await.is_ok(),
            "a failed fetch keeps the cached keys"
        );
    }

    #[tokio::test]
    async fn jwks_url_down_at_start_is_not_ready() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/jwks", listener.local_addr().expect("addr"));
        drop(listener);
        let v = Verifier::from_url(&url, VerifierOptions::default())
            .await
            .expect("from url");
        assert!(matches!(v.ready().await, Err(AuthError::Keys(_))));
        assert!(
            Verifier::from_url("ftp://x/jwks", VerifierOptions::default())
                .await
                .is_err()
        );
        assert!(
            Verifier::from_url("not a url", VerifierOptions::default())
                .await
                .is_err()
        );
    }
}
