//! Bearer-token verification: ES256 JWTs checked against a JWKS (URL, file or a static
//! set such as the embedded dev key).
//!
//! Owns the algorithm allow-list, claim checks and the JWKS cache. It must never accept
//! another algorithm (`none`, HMAC, RSA…), never trust a key the token carries itself,
//! never put a token, a key or a JWKS URL's credentials into a log line or an error, and
//! never make a request wait on the identity provider for a key it already holds.
//!
//! Keys from a URL are refreshed by a background task (every
//! [`VerifierOptions::refresh_interval`], retried after the refetch interval while it fails)
//! that stops with the service's shutdown token or when the verifier is dropped. An unknown
//! `kid` starts at most one rate-limited fetch, run apart from the request so that nothing
//! else waits behind it. Keys not refreshed for [`VerifierOptions::max_key_age`] are
//! refused, and readiness fails, so a key the issuer withdrew cannot be used for ever while
//! its JWKS cannot be fetched.

mod jwks;
#[cfg(test)]
mod tests;
mod verified;

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Validation;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use serde::{Deserialize, Serialize};
use tokio_util::sync::{CancellationToken, DropGuard};

use self::jwks::{
    Claim, KeyCache, KeyMap, Remote, key_from_jwk, keys_from_jwks, parse_jwks,
    refresh_in_background,
};
use super::AuthError;

/// Clock skew tolerated on `exp` and `nbf` unless configured (`APP_ENV_AUTH_LEEWAY_SECS`).
/// The library's own default (60 s) is never used.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// Timeout of one JWKS request, connection included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the keys of a JWKS URL are fetched again when nothing else asks for it: a
/// rotation that keeps the old `kid`s, or a withdrawn key, is seen within this time.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// Keys of a JWKS URL not refreshed for this long are refused (the default of
/// `APP_ENV_AUTH_JWKS_MAX_AGE_SECS`). An hour rides out an
/// identity-provider outage of that length (the refresher retries every refetch interval,
/// so about 120 attempts fail first) while bounding how long a key the issuer withdrew —
/// e.g. after a leak — stays usable when its JWKS cannot be fetched: before, for ever.
/// Access tokens live 5–60 min, so an outage longer than this would leave few valid ones
/// anyway.
pub const DEFAULT_MAX_KEY_AGE: Duration = Duration::from_secs(60 * 60);
/// The background refresher never retries a failing JWKS more often than this, whatever
/// the refetch interval (tests set that to zero).
const RETRY_FLOOR: Duration = Duration::from_secs(1);
/// Longer tokens are refused before any parsing: no legitimate bearer token is this big.
const MAX_TOKEN_LEN: usize = 16 * 1024;
/// A JWKS larger than this is refused rather than parsed.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// What a verifier checks beyond the signature, and how it keeps the keys of a JWKS URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierOptions {
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud` (one of the token's audiences), when set.
    pub audience: Option<String>,
    /// Minimum time between two JWKS fetches for an unknown `kid` or a readiness probe, and
    /// the delay before the background refresher retries a failed fetch.
    pub min_refetch_interval: Duration,
    /// Clock skew tolerated on `exp` and `nbf`: a token is accepted until `exp` + this.
    pub leeway: Duration,
    /// How often the background task fetches the JWKS of a URL (at most half of
    /// `max_key_age`, so a single failure never lets the keys expire).
    pub refresh_interval: Duration,
    /// Keys of a URL not refreshed successfully for this long are refused (401) and
    /// readiness fails, until a fetch succeeds again.
    pub max_key_age: Duration,
}

impl Default for VerifierOptions {
    fn default() -> Self {
        Self {
            issuer: None,
            audience: None,
            min_refetch_interval: Duration::from_secs(30),
            leeway: DEFAULT_LEEWAY,
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
            max_key_age: DEFAULT_MAX_KEY_AGE,
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

/// Verifies `Authorization: Bearer` tokens. Cheap to share behind an `Arc`.
pub struct Verifier {
    inner: Arc<Inner>,
    /// Tokens already verified ([`verified`]).
    verified: verified::Verified,
    /// Stops the background refresher when the verifier goes away.
    _refresher: Option<DropGuard>,
}

/// The verifier's state, shared with its background refresher; its key handling lives in
/// [`jwks`].
struct Inner {
    validation: Validation,
    min_refetch_interval: Duration,
    refresh_interval: Duration,
    max_key_age: Duration,
    cache: RwLock<KeyCache>,
    remote: Option<Remote>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.inner.current_keys().len())
            .field("remote_host", &self.inner.remote.as_ref().map(Remote::host))
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
        Ok(Self {
            inner: Arc::new(Inner::build(keys, None, opts)),
            verified: verified::Verified::default(),
            _refresher: None,
        })
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
        Ok(Self {
            inner: Arc::new(Inner::build(keys, None, opts)),
            verified: verified::Verified::default(),
            _refresher: None,
        })
    }

    /// A verifier over a JWKS URL. The first fetch happens now; when it fails the
    /// verifier still starts (and logs why), `ready()` reports the missing keys, and the
    /// background refresher retries after the refetch interval. The refresher stops when
    /// `shutdown` fires or the verifier is dropped.
    pub async fn from_url(
        url: &str,
        opts: VerifierOptions,
        shutdown: &CancellationToken,
    ) -> Result<Self, AuthError> {
        let url = reqwest::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| AuthError::Keys("the JWKS URL is not a valid http(s) URL".into()))?;
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|e| AuthError::Keys(format!("cannot build the JWKS HTTP client: {e}")))?;
        let remote = Remote::new(url, client);
        let inner = Arc::new(Inner::build(KeyMap::new(), Some(remote), opts));
        if inner.claim_fetch(true) == Claim::Started {
            inner.fetch_claimed().await;
        }
        let stop = shutdown.child_token();
        tokio::spawn(refresh_in_background(Arc::downgrade(&inner), stop.clone()));
        Ok(Self {
            inner,
            verified: verified::Verified::default(),
            _refresher: Some(stop.drop_guard()),
        })
    }

    /// Checks the signature and claims of `token` (without the `Bearer ` prefix). Never
    /// waits on the identity provider for a `kid` it holds; an unknown one waits for at
    /// most one (rate-limited) fetch.
    pub async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::MissingToken);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(invalid("token too long"));
        }
        let digest = verified::digest(token);
        // Keys past their maximum age are no keys: then the full check says so.
        let keys = self.inner.fresh_keys().ok();
        if let Some(keys) = &keys {
            let now = jsonwebtoken::get_current_timestamp() as i64;
            let leeway = self.inner.validation.leeway as i64;
            if let Some(claims) = self.verified.get(&digest, keys, now, leeway) {
                return Ok(claims);
            }
        }
        let claims = self.verify_signed(token).await?;
        // Remembered under the keys it was checked against, known for sure only when no
        // refresh came in between (else the next use verifies again).
        if let (Some(before), Ok(after)) = (keys, self.inner.fresh_keys())
            && Arc::ptr_eq(&before, &after)
        {
            self.verified.insert(digest, claims.clone(), after);
        }
        Ok(claims)
    }

    /// The full check: header, key, signature, claims.
    async fn verify_signed(&self, token: &str) -> Result<Claims, AuthError> {
        let header = parse_header(token)?;

        let key = match self.inner.key(&header.kid)? {
            Some(key) => key,
            None => {
                // A rotation at the issuer shows up as a kid we have not seen yet.
                self.refetch_and_wait().await;
                self.inner
                    .key(&header.kid)?
                    .ok_or_else(|| invalid("unknown key id"))?
            }
        };

        let data = jsonwebtoken::decode::<RawClaims>(token, &key, &self.inner.validation)
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

    /// Ok when verification keys are loaded and, for a URL, not older than the maximum
    /// age. Never waits for a fetch (a probe has seconds): a missing or expired set starts
    /// a rate-limited one in the background and is reported as it is now.
    pub async fn ready(&self) -> Result<(), AuthError> {
        let problem = self.inner.keys_problem();
        if problem.is_some() {
            self.refetch_in_background();
        }
        match problem {
            Some(problem) => Err(AuthError::Keys(problem)),
            None => Ok(()),
        }
    }

    /// How many verification keys are loaded.
    pub fn key_count(&self) -> usize {
        self.inner.current_keys().len()
    }

    /// Starts a fetch unless one runs or the last was too recent; `false` when none will
    /// finish soon.
    fn refetch_in_background(&self) -> bool {
        match self.inner.claim_fetch(false) {
            Claim::RateLimited => false,
            Claim::Running => true,
            Claim::Started => {
                // Spawned, not awaited here: a request that gives up (its client went away)
                // must not cancel the fetch others are waiting for.
                let inner = self.inner.clone();
                tokio::spawn(async move { inner.fetch_claimed().await });
                true
            }
        }
    }

    /// Waits (bounded) for the fetch an unknown `kid` asks for, when one is allowed.
    async fn refetch_and_wait(&self) {
        let Some(remote) = &self.inner.remote else {
            return;
        };
        // Subscribed before the fetch is claimed, so its end cannot be missed.
        let mut finished = remote.finished.subscribe();
        if self.refetch_in_background() {
            // A fetch ends within its client timeout; the margin covers scheduling.
            let _ =
                tokio::time::timeout(FETCH_TIMEOUT + Duration::from_secs(1), finished.changed())
                    .await;
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
