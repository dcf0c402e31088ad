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

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

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

type KeyMap = HashMap<String, DecodingKey>;

struct KeyCache {
    keys: Arc<KeyMap>,
    /// When the keys were last replaced by a successful fetch (URL source only).
    fetched_at: Option<Instant>,
}

/// Where a JWKS URL's fetches stand. Locked only to read or flip these fields, never
/// across a fetch.
#[derive(Default)]
struct FetchState {
    /// When the last fetch started, for rate limiting.
    last_attempt: Option<Instant>,
    /// Whether the last finished fetch installed keys.
    last_ok: bool,
    /// A fetch is under way: others wait for its end instead of starting another.
    running: bool,
}

struct Remote {
    url: reqwest::Url,
    client: reqwest::Client,
    state: Mutex<FetchState>,
    /// Counts finished fetches; a request waiting for new keys watches it.
    finished: watch::Sender<u64>,
}

impl Remote {
    /// Only the host goes to logs: the path or query of a JWKS URL may carry a credential.
    fn host(&self) -> &str {
        self.url.host_str().unwrap_or("?")
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FetchState> {
        // The fields are plain values written one at a time: a poisoned lock is consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What [`Inner::claim_fetch`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// The caller runs the fetch.
    Started,
    /// One is under way: wait for it.
    Running,
    /// One was attempted within the refetch interval.
    RateLimited,
}

/// Verifies `Authorization: Bearer` tokens. Cheap to share behind an `Arc`.
pub struct Verifier {
    inner: Arc<Inner>,
    /// Stops the background refresher when the verifier goes away.
    _refresher: Option<DropGuard>,
}

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
        let remote = Remote {
            url,
            client,
            state: Mutex::new(FetchState::default()),
            finished: watch::Sender::new(0),
        };
        let inner = Arc::new(Inner::build(KeyMap::new(), Some(remote), opts));
        if inner.claim_fetch(true) == Claim::Started {
            inner.fetch_claimed().await;
        }
        let stop = shutdown.child_token();
        tokio::spawn(refresh_in_background(Arc::downgrade(&inner), stop.clone()));
        Ok(Self {
            inner,
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

impl Inner {
    fn build(keys: KeyMap, remote: Option<Remote>, opts: VerifierOptions) -> Self {
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
            // One failed refresh must not let the keys expire.
            refresh_interval: opts.refresh_interval.min(opts.max_key_age / 2),
            max_key_age: opts.max_key_age,
            cache: RwLock::new(KeyCache {
                keys: Arc::new(keys),
                fetched_at: None,
            }),
            remote,
        }
    }

    fn current_keys(&self) -> Arc<KeyMap> {
        // A poisoned lock still holds a consistent map: it is only ever swapped whole.
        self.cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys
            .clone()
    }

    /// The key of `kid`, `None` when unknown; an error when the keys of a URL are past
    /// their maximum age.
    fn key(&self, kid: &str) -> Result<Option<DecodingKey>, AuthError> {
        let cache = self.cache.read().unwrap_or_else(PoisonError::into_inner);
        if self.remote.is_some()
            && cache
                .fetched_at
                .is_some_and(|at| at.elapsed() > self.max_key_age)
        {
            return Err(AuthError::Keys(format!(
                "verification keys not refreshed for over {} s (the JWKS cannot be fetched): tokens are refused until it can",
                self.max_key_age.as_secs()
            )));
        }
        Ok(cache.keys.get(kid).cloned())
    }

    /// Why tokens cannot be verified now, if they cannot.
    fn keys_problem(&self) -> Option<String> {
        let cache = self.cache.read().unwrap_or_else(PoisonError::into_inner);
        if cache.keys.is_empty() {
            return Some("no verification keys loaded (JWKS not fetched yet)".into());
        }
        match cache.fetched_at {
            Some(at) if self.remote.is_some() && at.elapsed() > self.max_key_age => Some(format!(
                "JWKS not refreshed for {} s (maximum {} s): keys expired, tokens refused",
                at.elapsed().as_secs(),
                self.max_key_age.as_secs()
            )),
            _ => None,
        }
    }

    /// Takes the right to fetch: refused while one runs or, unless `force`d, within the
    /// refetch interval of the last attempt.
    fn claim_fetch(&self, force: bool) -> Claim {
        let Some(remote) = &self.remote else {
            return Claim::RateLimited;
        };
        let mut state = remote.state();
        if state.running {
            return Claim::Running;
        }
        if !force
            && state
                .last_attempt
                .is_some_and(|at| at.elapsed() < self.min_refetch_interval)
        {
            return Claim::RateLimited;
        }
        state.running = true;
        state.last_attempt = Some(Instant::now());
        Claim::Started
    }

    /// Runs the fetch claimed with [`Inner::claim_fetch`]. A failure keeps the cached keys
    /// (until they reach their maximum age).
    async fn fetch_claimed(&self) {
        let Some(remote) = &self.remote else { return };
        /// Gives the claim back and wakes the waiters however the fetch ends (cancelled
        /// included).
        struct Release<'a>(&'a Remote, bool);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                {
                    let mut state = self.0.state();
                    state.running = false;
                    state.last_ok = self.1;
                }
                self.0.finished.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
        let mut release = Release(remote, false);
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
                release.1 = true;
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

    /// How long the background refresher sleeps before its next fetch.
    fn next_refresh(&self) -> Duration {
        let Some(remote) = &self.remote else {
            return self.refresh_interval;
        };
        let (last_attempt, last_ok) = {
            let state = remote.state();
            (state.last_attempt, state.last_ok)
        };
        let since_attempt = last_attempt.map_or(Duration::MAX, |at| at.elapsed());
        if last_ok {
            self.refresh_interval.saturating_sub(since_attempt)
        } else {
            self.min_refetch_interval
                .max(RETRY_FLOOR)
                .saturating_sub(since_attempt)
        }
    }
}

/// Keeps the keys of a JWKS URL fresh until `stop` fires or the verifier is gone (it holds
/// only a weak reference, so it never keeps one alive).
async fn refresh_in_background(inner: Weak<Inner>, stop: CancellationToken) {
    loop {
        let wait = match inner.upgrade() {
            Some(inner) => inner.next_refresh(),
            None => return,
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let Some(inner) = inner.upgrade() else { return };
        if inner.claim_fetch(true) == Claim::Started {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = inner.fetch_claimed() => {}
            }
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
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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

    /// A one-route HTTP server answering every request with the current body, after the
    /// current delay: a JWKS endpoint the test makes slow or unresponsive at will.
    struct JwksServer {
        url: String,
        body: Arc<Mutex<String>>,
        hits: Arc<AtomicUsize>,
        delay_ms: Arc<AtomicU64>,
    }

    impl JwksServer {
        fn set_body(&self, body: String) {
            *self.body.lock().expect("body") = body;
        }
        fn set_delay(&self, delay: Duration) {
            self.delay_ms
                .store(delay.as_millis() as u64, Ordering::SeqCst);
        }
        fn hits(&self) -> usize {
            self.hits.load(Ordering::SeqCst)
        }
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
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (shared, counter, delay) = (body.clone(), hits.clone(), delay_ms.clone());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (shared, counter, delay) = (shared.clone(), counter.clone(), delay.clone());
                // One task per connection: a slow answer must not hold up the next request.
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                    let wait = Duration::from_millis(delay.load(Ordering::SeqCst));
                    tokio::time::sleep(wait).await;
                    let body = shared.lock().expect("body").clone();
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        JwksServer {
            url,
            body,
            hits,
            delay_ms,
        }
    }

    fn jwks_json(key: &DevKey) -> String {
        serde_json::to_string(&key.jwks()).expect("json")
    }

    /// A verifier over `url` whose refresher runs until the test ends.
    async fn from_url(url: &str, opts: VerifierOptions) -> Verifier {
        Verifier::from_url(url, opts, &CancellationToken::new())
            .await
            .expect("from url")
    }

    #[tokio::test]
    async fn jwks_url_source_refetches_on_unknown_kid_after_rotation() {
        let (_d1, old, _) = dev_key();
        let (_d2, new, _) = dev_key();
        let server = serve(jwks_json(&old)).await;
        let opts = VerifierOptions {
            min_refetch_interval: Duration::ZERO,
            ..VerifierOptions::default()
        };
        let v = from_url(&server.url, opts).await;
        assert!(v.ready().await.is_ok());
        assert_eq!(server.hits(), 1);

        let old_token = old.sign("a", HOUR, None, None).expect("sign");
        assert!(v.verify(&old_token).await.is_ok());
        assert_eq!(server.hits(), 1, "known kid: no fetch");

        server.set_body(jwks_json(&new));
        let new_token = new.sign("b", HOUR, None, None).expect("sign");
        assert_eq!(v.verify(&new_token).await.expect("rotated key").sub, "b");
        assert_eq!(server.hits(), 2);
    }

    #[tokio::test]
    async fn jwks_url_refetch_is_rate_limited_and_failures_keep_keys() {
        let (_d1, old, _) = dev_key();
        let (_d2, new, _) = dev_key();
        let server = serve(jwks_json(&old)).await;
        let v = from_url(&server.url, VerifierOptions::default()).await;
        server.set_body("not json".into());

        let new_token = new.sign("b", HOUR, None, None).expect("sign");
        for _ in 0..5 {
            expect_invalid(v.verify(&new_token).await, "unknown key id");
        }
        assert_eq!(server.hits(), 1, "within 30 s: no refetch");

        let fast = from_url(
            &server.url,
            VerifierOptions {
                min_refetch_interval: Duration::ZERO,
                ..VerifierOptions::default()
            },
        )
        .await;
        assert!(fast.ready().await.is_err(), "no keys were ever fetched");
        server.set_body(jwks_json(&old));
        // Readiness never waits for a fetch; the one it started (or the refresher's retry)
        // brings the keys in shortly.
        let deadline = Instant::now() + Duration::from_secs(5);
        while fast.ready().await.is_err() {
            assert!(Instant::now() < deadline, "keys never arrived");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.set_body("not json".into());
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
        let v = from_url(&url, VerifierOptions::default()).await;
        assert!(matches!(v.ready().await, Err(AuthError::Keys(_))));
        let shutdown = CancellationToken::new();
        for bad in ["ftp://x/jwks", "not a url"] {
            assert!(
                Verifier::from_url(bad, VerifierOptions::default(), &shutdown)
                    .await
                    .is_err()
            );
        }
    }

    /// Waits until `server` has seen more than `hits` requests.
    async fn wait_for_hit(server: &JwksServer, hits: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while server.hits() <= hits {
            assert!(Instant::now() < deadline, "no JWKS request arrived");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_slow_jwks_never_delays_a_token_whose_kid_is_known() {
        let (_d1, known, _) = dev_key();
        let (_d2, rotated, _) = dev_key();
        let server = serve(jwks_json(&known)).await;
        let v = Arc::new(
            from_url(
                &server.url,
                VerifierOptions {
                    min_refetch_interval: Duration::ZERO,
                    refresh_interval: Duration::from_millis(300),
                    ..VerifierOptions::default()
                },
            )
            .await,
        );
        let token = known.sign("a", HOUR, None, None).expect("sign");
        assert!(v.verify(&token).await.is_ok());

        // The identity provider now takes 10 s per answer (the client gives up after 5 s),
        // and the keys are due for a refresh.
        server.set_delay(Duration::from_secs(10));
        let hits = server.hits();
        tokio::time::sleep(Duration::from_millis(400)).await;
        // Unknown kids join one fetch and wait for it; nothing else does.
        let before_unknown = server.hits();
        let unknown = rotated.sign("b", HOUR, None, None).expect("sign");
        let waiting: Vec<_> = (0..3)
            .map(|_| {
                let (v, unknown) = (v.clone(), unknown.clone());
                tokio::spawn(async move { v.verify(&unknown).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        for _ in 0..20 {
            let t0 = Instant::now();
            assert_eq!(v.verify(&token).await.expect("known kid").sub, "a");
            assert!(v.ready().await.is_ok());
            assert!(
                t0.elapsed() < Duration::from_millis(100),
                "a known kid waited {:?} for the JWKS",
                t0.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(server.hits() > hits, "a refresh was under way meanwhile");
        for handle in waiting {
            expect_invalid(handle.await.expect("join"), "unknown key id");
        }
        assert!(
            server.hits() <= before_unknown + 1,
            "three unknown kids, at most one more fetch: {} then {}",
            before_unknown,
            server.hits()
        );
    }

    #[tokio::test]
    async fn keys_past_their_maximum_age_are_refused_while_the_jwks_does_not_answer() {
        let (_d, key, _) = dev_key();
        let server = serve(jwks_json(&key)).await;
        let max_key_age = Duration::from_secs(3);
        let v = from_url(
            &server.url,
            VerifierOptions {
                min_refetch_interval: Duration::from_millis(500),
                refresh_interval: Duration::from_millis(500),
                max_key_age,
                ..VerifierOptions::default()
            },
        )
        .await;
        let token = key.sign("a", HOUR, None, None).expect("sign");
        // Refreshed in the background, the keys stay valid past their maximum age.
        tokio::time::sleep(max_key_age + Duration::from_secs(1)).await;
        assert!(v.verify(&token).await.is_ok());
        assert!(server.hits() >= 2, "refreshed: {}", server.hits());

        // The identity provider stops answering (the key may have been withdrawn there).
        server.set_delay(Duration::from_secs(3600));
        let down = Instant::now();
        let refused_after = loop {
            match v.verify(&token).await {
                Ok(_) => {}
                Err(AuthError::Keys(message)) => {
                    assert!(message.contains("not refreshed"), "{message}");
                    break down.elapsed();
                }
                Err(other) => panic!("unexpected {other:?}"),
            }
            assert!(
                down.elapsed() < max_key_age + Duration::from_secs(3),
                "keys still trusted {:?} after the JWKS went silent",
                down.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(
            refused_after > max_key_age - Duration::from_millis(600),
            "refused too early: {refused_after:?}"
        );
        match v.ready().await {
            Err(AuthError::Keys(message)) => assert!(message.contains("expired"), "{message}"),
            other => panic!("readiness must fail: {other:?}"),
        }

        // Back: the next retry brings fresh keys and the token is accepted again.
        server.set_delay(Duration::ZERO);
        let deadline = Instant::now() + Duration::from_secs(10);
        while v.verify(&token).await.is_err() {
            assert!(Instant::now() < deadline, "keys never came back");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(v.ready().await.is_ok());
    }

    #[tokio::test]
    async fn the_refresher_stops_on_shutdown_and_when_the_verifier_is_dropped() {
        let (_d, key, _) = dev_key();
        let server = serve(jwks_json(&key)).await;
        let opts = VerifierOptions {
            refresh_interval: Duration::from_millis(100),
            ..VerifierOptions::default()
        };
        let shutdown = CancellationToken::new();
        let stopped = Verifier::from_url(&server.url, opts.clone(), &shutdown)
            .await
            .expect("from url");
        let dropped = from_url(&server.url, opts).await;
        wait_for_hit(&server, 4, Duration::from_secs(3)).await;

        shutdown.cancel();
        drop(dropped);
        tokio::time::sleep(Duration::from_millis(150)).await;
        let hits = server.hits();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(server.hits(), hits, "no fetch after shutdown and drop");
        // The cancelled one still verifies with the keys it has.
        let token = key.sign("a", HOUR, None, None).expect("sign");
        assert!(stopped.verify(&token).await.is_ok());
    }
}
