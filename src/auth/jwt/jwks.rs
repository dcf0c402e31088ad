//! The verification keys: a JWKS parsed key by key (P-256 signature keys only), the cache
//! of keys in use, and for a JWKS URL the rate-limited fetches and the background refresher
//! that keep it fresh. Only the URL's host is ever logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::*;

pub(super) type KeyMap = HashMap<String, DecodingKey>;

pub(super) struct KeyCache {
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

pub(super) struct Remote {
    url: reqwest::Url,
    client: reqwest::Client,
    state: Mutex<FetchState>,
    /// Counts finished fetches; a request waiting for new keys watches it.
    pub(super) finished: watch::Sender<u64>,
}

impl Remote {
    pub(super) fn new(url: reqwest::Url, client: reqwest::Client) -> Self {
        Self {
            url,
            client,
            state: Mutex::new(FetchState::default()),
            finished: watch::Sender::new(0),
        }
    }

    /// Only the host goes to logs: the path or query of a JWKS URL may carry a credential.
    pub(super) fn host(&self) -> &str {
        self.url.host_str().unwrap_or("?")
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FetchState> {
        // The fields are plain values written one at a time: a poisoned lock is consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What [`Inner::claim_fetch`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Claim {
    /// The caller runs the fetch.
    Started,
    /// One is under way: wait for it.
    Running,
    /// One was attempted within the refetch interval.
    RateLimited,
}

impl Inner {
    pub(super) fn build(keys: KeyMap, remote: Option<Remote>, opts: VerifierOptions) -> Self {
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

    pub(super) fn current_keys(&self) -> Arc<KeyMap> {
        // A poisoned lock still holds a consistent map: it is only ever swapped whole.
        self.cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys
            .clone()
    }

    /// The key of `kid`, `None` when unknown; an error when the keys of a URL are past
    /// their maximum age.
    pub(super) fn key(&self, kid: &str) -> Result<Option<DecodingKey>, AuthError> {
        Ok(self.fresh_keys()?.get(kid).cloned())
    }

    /// The keys now, unless they are past their maximum age.
    pub(super) fn fresh_keys(&self) -> Result<Arc<KeyMap>, AuthError> {
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
        Ok(cache.keys.clone())
    }

    /// Why tokens cannot be verified now, if they cannot.
    pub(super) fn keys_problem(&self) -> Option<String> {
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
    pub(super) fn claim_fetch(&self, force: bool) -> Claim {
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
    pub(super) async fn fetch_claimed(&self) {
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
pub(super) async fn refresh_in_background(inner: Weak<Inner>, stop: CancellationToken) {
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

/// Parses a JWKS document key by key: one key of a type this library cannot read must
/// not make the issuer's whole set unusable.
pub(super) fn parse_jwks(bytes: &[u8]) -> Result<(KeyMap, usize), String> {
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

pub(super) fn keys_from_jwks(
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
pub(super) fn key_from_jwk(jwk: &Jwk) -> Result<(String, DecodingKey), &'static str> {
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
