//! Authorization: Casbin RBAC with domains. Built-in roles are `p` rules, grants from the
//! job store are `g, subject, role, merchant|*` rules; decisions are cached until the
//! store's policy revision changes (checked at most once per TTL) or `invalidate()`.
//! With Redis (`Authorizer::with_redis`) replicas share the grant snapshot through Redis
//! and reload at once when `publish_policy_change` announces a change; Redis trouble only
//! ever sends a reload back to the store.
//!
//! Owns loading the grants (from the store, or the snapshot shared through Redis) and when
//! to reload them; the role model, grant validation and the decision cache are in [`model`].
//! It must never answer "allowed" when the store or Casbin fails (that is an error, which
//! the API turns into 503), and never let a subject's name stand for a role.

mod model;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use self::model::Snapshot;
pub use self::model::{ALL_MERCHANTS, MerchantScope, Permission, ROLES, validate_grant};
use super::AuthError;
use super::policy_cache::RedisPolicyCache;
pub use super::policy_cache::{
    DEFAULT_CHANNEL, DEFAULT_KEY_PREFIX, PolicyCacheConfig, publish_policy_change,
    publish_policy_change_with,
};
use crate::config::RedisServer;
use crate::domain::{Grant, MerchantId, PolicyRevision, grant_digest};

/// Where grants live (the job store). Errors are plain text: they become 503s.
#[async_trait]
pub trait GrantSource: Send + Sync {
    /// Every grant currently in force.
    async fn list_grants(&self) -> Result<Vec<Grant>, String>;
    /// A number that changes whenever any grant is added or revoked, with the digest
    /// ([`crate::domain::grant_digest`]) of the grants in force at it.
    async fn policy_revision(&self) -> Result<PolicyRevision, String>;
}

struct Current {
    snapshot: Option<Arc<Snapshot>>,
    /// When the store's revision was last confirmed equal to the snapshot's.
    checked_at: Instant,
}

/// Answers "may this subject do this on this merchant" from the store's grants.
pub struct Authorizer {
    source: Arc<dyn GrantSource>,
    ttl: Duration,
    current: RwLock<Current>,
    /// Set by `invalidate()` (and by the Redis subscriber, which holds a weak reference):
    /// the next call reloads whatever the revision says.
    stale: Arc<AtomicBool>,
    /// One reload at a time; the others wait for its result instead of hitting the store.
    reload: tokio::sync::Mutex<()>,
    /// The snapshot shared with other replicas, when Redis is configured.
    redis: Option<RedisPolicyCache>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("Authorizer")
            .field("ttl", &self.ttl)
            .field("revision", &current.snapshot.as_ref().map(|s| s.revision))
            .field("redis", &self.redis.is_some())
            .finish_non_exhaustive()
    }
}

impl Authorizer {
    /// An authorizer over `source` that checks the policy revision at most once per `ttl`.
    /// Nothing is loaded until the first decision.
    pub fn new(source: Arc<dyn GrantSource>, ttl: Duration) -> Self {
        Self {
            source,
            ttl,
            current: RwLock::new(Current {
                snapshot: None,
                checked_at: Instant::now(),
            }),
            stale: Arc::new(AtomicBool::new(false)),
            reload: tokio::sync::Mutex::new(()),
            redis: None,
        }
    }

    /// Like [`Authorizer::new`], sharing the grant snapshot with other replicas through
    /// Redis at `redis_url` (key `ledger:policy:grants`, channel `ledger.policy`) and
    /// reloading as soon as [`publish_policy_change`] announces a change. Connects in the
    /// background and keeps reconnecting; while Redis is unavailable decisions come from
    /// the store as without it. Fails only on an unparsable URL (the error does not
    /// contain it) or outside a Tokio runtime. The subscriber stops when this is dropped.
    pub fn with_redis(
        source: Arc<dyn GrantSource>,
        ttl: Duration,
        redis_url: &str,
    ) -> Result<Self, AuthError> {
        Self::with_redis_config(
            source,
            ttl,
            &RedisServer::new(redis_url),
            &PolicyCacheConfig::default(),
            CancellationToken::new(),
        )
    }

    /// [`Authorizer::with_redis`] with a key prefix and channel of choice, a Redis server
    /// that may carry a private CA for `rediss://`, and a `shutdown`
    /// token that also stops the subscriber (dropping the authorizer still does).
    pub fn with_redis_config(
        source: Arc<dyn GrantSource>,
        ttl: Duration,
        redis: &RedisServer,
        config: &PolicyCacheConfig,
        shutdown: CancellationToken,
    ) -> Result<Self, AuthError> {
        let mut authorizer = Self::new(source, ttl);
        authorizer.redis = Some(RedisPolicyCache::start(
            redis,
            config,
            ttl,
            Arc::downgrade(&authorizer.stale),
            shutdown,
        )?);
        Ok(authorizer)
    }

    /// Whether change announcements from Redis are being received right now (always
    /// `false` without Redis). For diagnostics and tests; decisions never depend on it.
    pub fn redis_subscribed(&self) -> bool {
        self.redis
            .as_ref()
            .is_some_and(RedisPolicyCache::subscribed)
    }

    /// Whether `subject` may use `perm` on `merchant`. A store or policy failure is an
    /// error, never `true`.
    pub async fn allowed(
        &self,
        subject: &str,
        merchant: &MerchantId,
        perm: Permission,
    ) -> Result<bool, AuthError> {
        self.snapshot()
            .await?
            .decide(subject, merchant.as_str(), perm)
    }

    /// Every merchant `subject` may use with `perm`, from the subject's grants, each
    /// decided by Casbin.
    pub async fn scope(&self, subject: &str, perm: Permission) -> Result<MerchantScope, AuthError> {
        self.snapshot().await?.scope(subject, perm)
    }

    /// Forces the next decision to reload the grants (after a grant or revoke made by
    /// this process).
    pub fn invalidate(&self) {
        self.stale.store(true, Ordering::SeqCst);
    }

    /// Loads the policy now; for readiness probes and start-up.
    pub async fn ready(&self) -> Result<(), AuthError> {
        self.snapshot().await.map(|_| ())
    }

    fn fresh(&self) -> Option<Arc<Snapshot>> {
        if self.stale.load(Ordering::SeqCst) {
            return None;
        }
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        if current.checked_at.elapsed() >= self.ttl {
            return None;
        }
        current.snapshot.clone()
    }

    async fn snapshot(&self) -> Result<Arc<Snapshot>, AuthError> {
        if let Some(snapshot) = self.fresh() {
            return Ok(snapshot);
        }
        let _reloading = self.reload.lock().await;
        if let Some(snapshot) = self.fresh() {
            return Ok(snapshot);
        }
        let forced = self.stale.swap(false, Ordering::SeqCst);
        let result = self.refresh(forced).await;
        if result.is_err() && forced {
            self.stale.store(true, Ordering::SeqCst);
        }
        result
    }

    async fn refresh(&self, forced: bool) -> Result<Arc<Snapshot>, AuthError> {
        let store = |e: String| AuthError::Backend(format!("policy store: {e}"));
        // The revision is read before the grants: a change racing with the listing then
        // shows up as a newer revision at the next check instead of being missed.
        let PolicyRevision { revision, digest } =
            self.source.policy_revision().await.map_err(store)?;
        let previous = self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .snapshot
            .clone();
        let snapshot = match previous {
            Some(previous) if !forced && previous.revision == revision => previous,
            _ => {
                let grants = self.grants(revision, &digest).await?;
                let count = grants.len();
                let snapshot = Arc::new(Snapshot::build(revision, grants).await?);
                tracing::debug!(revision, grants = count, "authorization policy loaded");
                snapshot
            }
        };
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        current.snapshot = Some(snapshot.clone());
        current.checked_at = Instant::now();
        Ok(snapshot)
    }

    /// The grants at `revision`: from the Redis snapshot when it is of exactly that
    /// revision and its grants hash to `digest`, else from the store (and then cached in
    /// Redis for the other replicas). Anyone who can write to Redis can write a snapshot, so
    /// its revision proves nothing (it sits in the same value); only the digest, which comes
    /// from the store, does. A snapshot that does not match is logged and replaced.
    async fn grants(&self, revision: i64, digest: &str) -> Result<Vec<Grant>, AuthError> {
        if let Some(redis) = &self.redis
            && let Some(grants) = redis.load(revision).await
        {
            if grant_digest(&grants) == digest {
                return Ok(grants);
            }
            metrics::counter!("ledger_policy_snapshots_rejected_total").increment(1);
            tracing::warn!(
                revision,
                grants = grants.len(),
                "policy cache: ignoring a Redis snapshot whose grants do not match the job \
                 store's digest for this revision (written by something other than ledger?); \
                 using the job store"
            );
        }
        let grants = self
            .source
            .list_grants()
            .await
            .map_err(|e| AuthError::Backend(format!("policy store: {e}")))?;
        if let Some(redis) = &self.redis {
            redis.save(revision, &grants).await;
        }
        Ok(grants)
    }
}
