//! Authorization: Casbin RBAC with domains. Built-in roles are `p` rules, grants from the
//! job store are `g, subject, role, merchant|*` rules; decisions are cached until the
//! store's policy revision changes (checked at most once per TTL) or `invalidate()`.
//! With Redis (`Authorizer::with_redis`) replicas share the grant snapshot through Redis
//! and reload at once when `publish_policy_change` announces a change; Redis trouble only
//! ever sends a reload back to the store.
//!
//! Owns the role model, grant validation and the decision cache. It must never answer
//! "allowed" when the store or Casbin fails (that is an error, which the API turns into
//! 503), and never let a subject's name stand for a role.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use casbin::prelude::{CoreApi, DefaultModel, Enforcer, MemoryAdapter, MgmtApi};
use tokio_util::sync::CancellationToken;

use super::AuthError;
use super::policy_cache::RedisPolicyCache;
pub use super::policy_cache::{
    DEFAULT_CHANNEL, DEFAULT_KEY_PREFIX, PolicyCacheConfig, publish_policy_change,
    publish_policy_change_with,
};
use crate::config::RedisServer;
use crate::domain::{Grant, MerchantId, PolicyRevision, grant_digest};

/// The built-in roles, weakest first.
pub const ROLES: [&str; 4] = [
    "merchant_viewer",
    "merchant_operator",
    "merchant_admin",
    "platform_admin",
];

/// The grant domain meaning "every merchant".
pub const ALL_MERCHANTS: &str = "*";

/// Casbin sees subjects under this prefix so that a `sub` spelled like a role (say
/// `platform_admin`) can never match that role itself.
const SUBJECT_PREFIX: &str = "user:";

/// Longest subject a grant may name.
const MAX_SUBJECT_CHARS: usize = 256;

/// Past this many cached decisions the cache starts over, so callers probing many
/// merchants cannot grow it without bound.
const MAX_CACHED_DECISIONS: usize = 100_000;

/// A role held on a merchant (or on `*`) allows the actions of its `p` rules there; a
/// role held on `*` allows them on every merchant.
const MODEL: &str = r#"
[request_definition]
r = sub, dom, act

[policy_definition]
p = sub, act

[role_definition]
g = _, _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = (g(r.sub, p.sub, r.dom) || g(r.sub, p.sub, "*")) && r.act == p.act
"#;

/// An action on a merchant's ledgers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    /// List and view ledgers and their events.
    Read,
    /// Request a new ledger.
    Create,
    /// Retry a rejected ledger.
    Retry,
    /// Regenerate a draft ledger.
    Regenerate,
    /// Soft-delete a ledger.
    Delete,
    /// Download a ledger's file.
    Download,
}

impl Permission {
    /// Every permission.
    pub const ALL: [Permission; 6] = [
        Permission::Read,
        Permission::Create,
        Permission::Retry,
        Permission::Regenerate,
        Permission::Delete,
        Permission::Download,
    ];

    /// The Casbin action name.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Create => "create",
            Permission::Retry => "retry",
            Permission::Regenerate => "regenerate",
            Permission::Delete => "delete",
            Permission::Download => "download",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Permission {
    /// The built-in roles that allow this action, weakest first.
    pub fn granted_by(self) -> Vec<&'static str> {
        ROLES
            .into_iter()
            .filter(|role| role_permissions(role).contains(&self))
            .collect()
    }
}

/// The actions each built-in role allows.
fn role_permissions(role: &str) -> &'static [Permission] {
    use Permission::*;
    match role {
        "merchant_viewer" => &[Read, Download],
        "merchant_operator" => &[Read, Download, Create, Retry, Regenerate],
        "merchant_admin" | "platform_admin" => &Permission::ALL,
        _ => &[],
    }
}

/// The merchants a subject may use with one permission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MerchantScope {
    /// Every merchant, present and future.
    All,
    /// Exactly these merchants (sorted, possibly none).
    Only(Vec<MerchantId>),
}

impl MerchantScope {
    /// Whether `merchant` is inside the scope.
    pub fn contains(&self, merchant: &MerchantId) -> bool {
        match self {
            MerchantScope::All => true,
            MerchantScope::Only(merchants) => merchants.contains(merchant),
        }
    }
}

/// Where grants live (the job store). Errors are plain text: they become 503s.
#[async_trait]
pub trait GrantSource: Send + Sync {
    /// Every grant currently in force.
    async fn list_grants(&self) -> Result<Vec<Grant>, String>;
    /// A number that changes whenever any grant is added or revoked, with the digest
    /// ([`crate::domain::grant_digest`]) of the grants in force at it.
    async fn policy_revision(&self) -> Result<PolicyRevision, String>;
}

/// Checks a grant before it is stored (and again when loaded): a built-in role, a valid
/// merchant id or `*` (`platform_admin` only on `*`), a printable subject of at most
/// 256 characters.
pub fn validate_grant(subject: &str, role: &str, domain: &str) -> Result<Grant, AuthError> {
    let bad = |message: String| Err(AuthError::InvalidGrant(message));
    if subject.trim().is_empty() {
        return bad("subject must not be empty".into());
    }
    if subject.chars().count() > MAX_SUBJECT_CHARS {
        return bad(format!(
            "subject longer than {MAX_SUBJECT_CHARS} characters"
        ));
    }
    if subject.chars().any(char::is_control) {
        return bad("subject contains control characters".into());
    }
    if !ROLES.contains(&role) {
        return bad(format!(
            "unknown role; expected one of {}",
            ROLES.join(", ")
        ));
    }
    if domain != ALL_MERCHANTS && MerchantId::parse(domain).is_err() {
        return bad("merchant must match [A-Za-z0-9_-]{1,64} or be *".into());
    }
    if role == "platform_admin" && domain != ALL_MERCHANTS {
        return bad("platform_admin is granted on * only".into());
    }
    Ok(Grant {
        subject: subject.to_owned(),
        role: role.to_owned(),
        domain: domain.to_owned(),
    })
}

/// Which of one (subject, domain)'s permissions are decided, and which are allowed.
#[derive(Debug, Clone, Copy, Default)]
struct Bits {
    known: u8,
    allowed: u8,
}

#[derive(Default)]
struct Decisions {
    by_subject: HashMap<String, HashMap<String, Bits>>,
    entries: usize,
}

/// The domains a subject holds any role on.
#[derive(Default)]
struct SubjectDomains {
    everywhere: bool,
    merchants: BTreeSet<String>,
}

/// One loaded policy revision: the enforcer and the decisions made with it.
struct Snapshot {
    revision: i64,
    enforcer: Enforcer,
    domains: HashMap<String, SubjectDomains>,
    decisions: RwLock<Decisions>,
}

impl Snapshot {
    async fn build(revision: i64, grants: Vec<Grant>) -> Result<Self, AuthError> {
        let casbin = |e: casbin::Error| AuthError::Backend(format!("policy model: {e}"));
        let model = DefaultModel::from_str(MODEL).await.map_err(casbin)?;
        let mut enforcer = Enforcer::new(model, MemoryAdapter::default())
            .await
            .map_err(casbin)?;
        let rules: Vec<Vec<String>> = ROLES
            .iter()
            .flat_map(|role| {
                role_permissions(role)
                    .iter()
                    .map(|perm| vec![(*role).to_owned(), perm.as_str().to_owned()])
            })
            .collect();
        enforcer.add_policies(rules).await.map_err(casbin)?;

        let mut domains: HashMap<String, SubjectDomains> = HashMap::new();
        let mut links = Vec::with_capacity(grants.len());
        let mut skipped = 0usize;
        for grant in grants {
            // A row that would not pass validation today (hand-edited, or from an older
            // version) grants nothing rather than something unintended.
            if validate_grant(&grant.subject, &grant.role, &grant.domain).is_err() {
                skipped += 1;
                continue;
            }
            let held = domains.entry(grant.subject.clone()).or_default();
            if grant.domain == ALL_MERCHANTS {
                held.everywhere = true;
            } else {
                held.merchants.insert(grant.domain.clone());
            }
            links.push(vec![
                format!("{SUBJECT_PREFIX}{}", grant.subject),
                grant.role,
                grant.domain,
            ]);
        }
        if skipped > 0 {
            tracing::warn!(
                skipped,
                revision,
                "ignored invalid policy grants from the store"
            );
        }
        if !links.is_empty() {
            enforcer
                .add_grouping_policies(links)
                .await
                .map_err(casbin)?;
        }
        Ok(Self {
            revision,
            enforcer,
            domains,
            decisions: RwLock::new(Decisions::default()),
        })
    }

    /// Decides `(subject, domain, perm)`; `domain` is a merchant id or `*`.
    fn decide(&self, subject: &str, domain: &str, perm: Permission) -> Result<bool, AuthError> {
        // Without a grant on this domain or on `*` no rule of the model can match (roles
        // do not inherit from each other and domains are compared literally), so the
        // answer is known without asking Casbin or growing the cache.
        let Some(held) = self.domains.get(subject) else {
            return Ok(false);
        };
        if !held.everywhere && !held.merchants.contains(domain) {
            return Ok(false);
        }
        if let Some(allowed) = self.cached(subject, domain, perm) {
            return Ok(allowed);
        }
        let allowed = self
            .enforcer
            .enforce((format!("{SUBJECT_PREFIX}{subject}"), domain, perm.as_str()))
            .map_err(|e| AuthError::Backend(format!("policy evaluation failed: {e}")))?;
        self.remember(subject, domain, perm, allowed);
        Ok(allowed)
    }

    fn cached(&self, subject: &str, domain: &str, perm: Permission) -> Option<bool> {
        let decisions = self
            .decisions
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let bits = decisions.by_subject.get(subject)?.get(domain)?;
        (bits.known & perm.bit() != 0).then_some(bits.allowed & perm.bit() != 0)
    }

    fn remember(&self, subject: &str, domain: &str, perm: Permission, allowed: bool) {
        let mut guard = self
            .decisions
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let decisions = &mut *guard;
        if decisions.entries >= MAX_CACHED_DECISIONS {
            *decisions = Decisions::default();
        }
        let per_subject = decisions.by_subject.entry(subject.to_owned()).or_default();
        let bits = per_subject.entry(domain.to_owned()).or_insert_with(|| {
            decisions.entries += 1;
            Bits::default()
        });
        bits.known |= perm.bit();
        if allowed {
            bits.allowed |= perm.bit();
        }
    }
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
        let snapshot = self.snapshot().await?;
        let Some(held) = snapshot.domains.get(subject) else {
            return Ok(MerchantScope::Only(Vec::new()));
        };
        if held.everywhere && snapshot.decide(subject, ALL_MERCHANTS, perm)? {
            return Ok(MerchantScope::All);
        }
        let mut merchants = Vec::new();
        for domain in &held.merchants {
            if snapshot.decide(subject, domain, perm)? {
                // Loaded grants were validated, so every domain here parses.
                merchants.extend(MerchantId::parse(domain).ok());
            }
        }
        Ok(MerchantScope::Only(merchants))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicI64, AtomicUsize};

    #[derive(Default)]
    struct MemorySource {
        grants: Mutex<Vec<Grant>>,
        revision: AtomicI64,
        failing: AtomicBool,
        lists: AtomicUsize,
        revisions: AtomicUsize,
    }

    impl MemorySource {
        fn with(grants: &[(&str, &str, &str)]) -> Arc<Self> {
            let source = Arc::new(Self::default());
            for (subject, role, domain) in grants {
                source.grant(subject, role, domain);
            }
            source
        }

        fn grant(&self, subject: &str, role: &str, domain: &str) {
            let grant = validate_grant(subject, role, domain).expect("valid grant");
            self.grants.lock().expect("grants").push(grant);
            self.revision.fetch_add(1, Ordering::SeqCst);
        }

        fn revoke(&self, subject: &str, role: &str, domain: &str, bump: bool) {
            self.grants
                .lock()
                .expect("grants")
                .retain(|g| !(g.subject == subject && g.role == role && g.domain == domain));
            if bump {
                self.revision.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    #[async_trait]
    impl GrantSource for MemorySource {
        async fn list_grants(&self) -> Result<Vec<Grant>, String> {
            self.lists.fetch_add(1, Ordering::SeqCst);
            if self.failing.load(Ordering::SeqCst) {
                return Err("connection refused".into());
            }
            Ok(self
                .grants
                .lock()
                .map_err(|_| "poisoned".to_owned())?
                .clone())
        }

        async fn policy_revision(&self) -> Result<PolicyRevision, String> {
            self.revisions.fetch_add(1, Ordering::SeqCst);
            if self.failing.load(Ordering::SeqCst) {
                return Err("connection refused".into());
            }
            let grants = self.grants.lock().map_err(|_| "poisoned".to_owned())?;
            Ok(PolicyRevision {
                revision: self.revision.load(Ordering::SeqCst),
                digest: grant_digest(&grants),
            })
        }
    }

    fn m(raw: &str) -> MerchantId {
        MerchantId::parse(raw).expect("merchant id")
    }

    fn authz(source: &Arc<MemorySource>, ttl: Duration) -> Authorizer {
        Authorizer::new(source.clone(), ttl)
    }

    const LONG: Duration = Duration::from_secs(3600);

    async fn allowed_set(a: &Authorizer, subject: &str, merchant: &str) -> Vec<Permission> {
        let mut out = Vec::new();
        for perm in Permission::ALL {
            if a.allowed(subject, &m(merchant), perm)
                .await
                .expect("decision")
            {
                out.push(perm);
            }
        }
        out
    }

    #[tokio::test]
    async fn each_role_allows_its_actions_on_its_merchant_only() {
        use Permission::*;
        let source = MemorySource::with(&[
            ("viewer", "merchant_viewer", "m_1"),
            ("operator", "merchant_operator", "m_1"),
            ("admin", "merchant_admin", "m_1"),
        ]);
        let a = authz(&source, LONG);
        assert_eq!(allowed_set(&a, "viewer", "m_1").await, vec![Read, Download]);
        assert_eq!(
            allowed_set(&a, "operator", "m_1").await,
            vec![Read, Create, Retry, Regenerate, Download]
        );
        assert_eq!(
            allowed_set(&a, "admin", "m_1").await,
            Permission::ALL.to_vec()
        );
        for subject in ["viewer", "operator", "admin", "stranger"] {
            assert!(
                allowed_set(&a, subject, "m_2").await.is_empty(),
                "{subject} on m_2"
            );
        }
        // Asked twice: the cached answers are the same.
        assert_eq!(allowed_set(&a, "viewer", "m_1").await, vec![Read, Download]);
    }

    #[tokio::test]
    async fn star_grants_and_platform_admin_cover_every_merchant() {
        use Permission::*;
        let source = MemorySource::with(&[
            ("auditor", "merchant_viewer", "*"),
            ("auditor", "merchant_admin", "m_9"),
            ("root", "platform_admin", "*"),
        ]);
        let a = authz(&source, LONG);
        for merchant in ["m_1", "m_2", "other-merchant"] {
            assert_eq!(
                allowed_set(&a, "auditor", merchant).await,
                vec![Read, Download]
            );
            assert_eq!(
                allowed_set(&a, "root", merchant).await,
                Permission::ALL.to_vec()
            );
        }
        assert_eq!(
            allowed_set(&a, "auditor", "m_9").await,
            Permission::ALL.to_vec()
        );
    }

    #[tokio::test]
    async fn a_subject_named_like_a_role_gets_nothing_from_the_name() {
        let source = MemorySource::with(&[("alice", "merchant_viewer", "m_1")]);
        let a = authz(&source, LONG);
        for role in ROLES {
            assert!(allowed_set(&a, role, "m_1").await.is_empty(), "{role}");
            assert_eq!(
                a.scope(role, Permission::Read).await.expect("scope"),
                MerchantScope::Only(vec![])
            );
        }
        // Even a subject that does hold a grant is matched as a user, not as its name.
        source.grant("merchant_admin", "merchant_viewer", "m_1");
        a.invalidate();
        assert_eq!(
            allowed_set(&a, "merchant_admin", "m_1").await,
            vec![Permission::Read, Permission::Download]
        );
    }

    #[tokio::test]
    async fn scope_lists_exactly_the_allowed_merchants() {
        let source = MemorySource::with(&[
            ("op", "merchant_operator", "m_2"),
            ("op", "merchant_viewer", "m_1"),
            ("op", "merchant_admin", "m_3"),
            ("all", "merchant_viewer", "*"),
            ("all", "merchant_admin", "m_5"),
            ("root", "platform_admin", "*"),
        ]);
        let a = authz(&source, LONG);
        let only = |ids: &[&str]| MerchantScope::Only(ids.iter().map(|id| m(id)).collect());
        assert_eq!(
            a.scope("op", Permission::Read).await.expect("scope"),
            only(&["m_1", "m_2", "m_3"])
        );
        assert_eq!(
            a.scope("op", Permission::Create).await.expect("scope"),
            only(&["m_2", "m_3"])
        );
        assert_eq!(
            a.scope("op", Permission::Delete).await.expect("scope"),
            only(&["m_3"])
        );
        assert_eq!(
            a.scope("all", Permission::Read).await.expect("scope"),
            MerchantScope::All
        );
        assert_eq!(
            a.scope("all", Permission::Delete).await.expect("scope"),
            only(&["m_5"])
        );
        assert_eq!(
            a.scope("root", Permission::Delete).await.expect("scope"),
            MerchantScope::All
        );
        assert_eq!(
            a.scope("nobody", Permission::Read).await.expect("scope"),
            only(&[])
        );
        assert!(MerchantScope::All.contains(&m("x")));
        assert!(!only(&["m_1"]).contains(&m("m_2")));
    }

    #[tokio::test]
    async fn revocation_is_seen_after_invalidate() {
        let source = MemorySource::with(&[("alice", "merchant_admin", "m_1")]);
        let a = authz(&source, LONG);
        assert!(
            a.allowed("alice", &m("m_1"), Permission::Delete)
                .await
                .expect("decision")
        );
        // Same revision on purpose: invalidate() alone must force the reload.
        source.revoke("alice", "merchant_admin", "m_1", false);
        assert!(
            a.allowed("alice", &m("m_1"), Permission::Delete)
                .await
                .expect("cached")
        );
        a.invalidate();
        assert!(
            !a.allowed("alice", &m("m_1"), Permission::Delete)
                .await
                .expect("decision")
        );
        assert_eq!(
            a.scope("alice", Permission::Read).await.expect("scope"),
            MerchantScope::Only(vec![])
        );
    }

    #[tokio::test]
    async fn another_process_change_is_seen_after_the_ttl_via_the_revision() {
        let source = MemorySource::with(&[("alice", "merchant_admin", "m_1")]);
        let ttl = Duration::from_millis(100);
        let a = authz(&source, ttl);
        assert!(
            a.allowed("alice", &m("m_1"), Permission::Delete)
                .await
                .expect("decision")
        );
        assert_eq!(source.lists.load(Ordering::SeqCst), 1);

        source.revoke("alice", "merchant_admin", "m_1", true);
        source.grant("bob", "merchant_viewer", "m_1");
        assert!(
            a.allowed("alice", &m("m_1"), Permission::Delete)
                .await
                .expect("within ttl")
        );
        tokio::time::sleep(ttl + Duration::from_millis(50)).await;
        assert!(
            !a.allowed("alice", &m("m_1"), Permission::Delete)
                .await
                .expect("after ttl")
        );
        assert!(
            a.allowed("bob", &m("m_1"), Permission::Read)
                .await
                .expect("after ttl")
        );
        assert_eq!(source.lists.load(Ordering::SeqCst), 2);

        // TTL passes with no change: only the revision is read, the grants are not.
        tokio::time::sleep(ttl + Duration::from_millis(50)).await;
        assert!(
            a.allowed("bob", &m("m_1"), Permission::Read)
                .await
                .expect("decision")
        );
        assert_eq!(source.lists.load(Ordering::SeqCst), 2);
        assert_eq!(source.revisions.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_failing_store_is_an_error_never_allowed() {
        let source = MemorySource::with(&[("alice", "merchant_admin", "m_1")]);
        source.failing.store(true, Ordering::SeqCst);
        let a = authz(&source, Duration::from_millis(50));
        assert!(matches!(
            a.allowed("alice", &m("m_1"), Permission::Read).await,
            Err(AuthError::Backend(_))
        ));
        assert!(matches!(
            a.scope("alice", Permission::Read).await,
            Err(AuthError::Backend(_))
        ));
        assert!(a.ready().await.is_err());

        source.failing.store(false, Ordering::SeqCst);
        assert!(
            a.allowed("alice", &m("m_1"), Permission::Read)
                .await
                .expect("recovered")
        );

        // Once the TTL is over, a store that stops answering is an error again.
        source.failing.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(matches!(
            a.allowed("alice", &m("m_1"), Permission::Read).await,
            Err(AuthError::Backend(_))
        ));
        // And a forced reload that fails stays forced.
        a.invalidate();
        assert!(
            a.allowed("alice", &m("m_1"), Permission::Read)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn invalid_rows_from_the_store_grant_nothing() {
        let source = Arc::new(MemorySource::default());
        source.grants.lock().expect("grants").extend([
            Grant {
                subject: "eve".into(),
                role: "god".into(),
                domain: "m_1".into(),
            },
            Grant {
                subject: "eve".into(),
                role: "merchant_admin".into(),
                domain: "../m".into(),
            },
            Grant {
                subject: "eve".into(),
                role: "platform_admin".into(),
                domain: "m_1".into(),
            },
            Grant {
                subject: "ok".into(),
                role: "merchant_viewer".into(),
                domain: "m_1".into(),
            },
        ]);
        let a = authz(&source, LONG);
        assert!(allowed_set(&a, "eve", "m_1").await.is_empty());
        assert!(
            a.allowed("ok", &m("m_1"), Permission::Read)
                .await
                .expect("decision")
        );
    }

    #[test]
    fn validate_grant_rules() {
        assert!(validate_grant("alice", "merchant_viewer", "m_1").is_ok());
        assert!(validate_grant("alice", "merchant_operator", "*").is_ok());
        assert!(validate_grant("svc|client@x", "platform_admin", "*").is_ok());
        assert!(validate_grant(&"x".repeat(256), "merchant_admin", "m_1").is_ok());
        for (subject, role, domain) in [
            ("", "merchant_viewer", "m_1"),
            ("  ", "merchant_viewer", "m_1"),
            (&"x".repeat(257), "merchant_viewer", "m_1"),
            ("a\nb", "merchant_viewer", "m_1"),
            ("a\u{7f}", "merchant_viewer", "m_1"),
            ("alice", "owner", "m_1"),
            ("alice", "Merchant_Viewer", "m_1"),
            ("alice", "merchant_viewer", "m/1"),
            ("alice", "merchant_viewer", ""),
            ("alice", "merchant_viewer", "**"),
            ("alice", "platform_admin", "m_1"),
        ] {
            assert!(
                matches!(
                    validate_grant(subject, role, domain),
                    Err(AuthError::InvalidGrant(_))
                ),
                "{subject:?} {role:?} {domain:?}"
            );
        }
        assert_eq!(
            validate_grant("alice", "merchant_viewer", "*").expect("valid"),
            Grant {
                subject: "alice".into(),
                role: "merchant_viewer".into(),
                domain: "*".into()
            }
        );
        assert_eq!(Permission::Regenerate.as_str(), "regenerate");
    }

    fn redis_url() -> String {
        std::env::var("LEDGER_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
    }

    /// A missing Redis fails the test (it must not pass by falling back to the store).
    async fn require_redis() -> String {
        let url = redis_url();
        let ping = async {
            let client = redis::Client::open(url.as_str())?;
            let mut connection = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
        };
        let pong = tokio::time::timeout(Duration::from_secs(5), ping).await;
        assert!(
            matches!(pong, Ok(Ok(_))),
            "no Redis at {url} (LEDGER_TEST_REDIS_URL); scripts/run-tests.sh starts one"
        );
        url
    }

    /// A key prefix and channel of this test's own.
    fn unique_config() -> PolicyCacheConfig {
        let id = uuid::Uuid::new_v4().simple();
        PolicyCacheConfig::default()
            .key_prefix(format!("ledger:test:{id}:policy"))
            .channel(format!("ledger.test.{id}.policy"))
    }

    async fn until_subscribed(authorizers: &[&Authorizer]) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !authorizers.iter().all(|a| a.redis_subscribed()) {
            assert!(
                Instant::now() < deadline,
                "the policy subscription did not come up at {}",
                redis_url()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls until `subject` may no longer `perm` on `merchant`; fails after `within`.
    async fn until_denied(
        a: &Authorizer,
        subject: &str,
        merchant: &str,
        perm: Permission,
        within: Duration,
    ) {
        let deadline = Instant::now() + within;
        while a
            .allowed(subject, &m(merchant), perm)
            .await
            .expect("decision")
        {
            assert!(
                Instant::now() < deadline,
                "{subject} still allowed to {perm} on {merchant} after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_forged_redis_snapshot_grants_nothing() {
        let url = require_redis().await;
        let config = unique_config();
        let source = MemorySource::with(&[("mallory", "merchant_viewer", "m_2")]);
        let shutdown = CancellationToken::new();
        let a = Authorizer::with_redis_config(
            source.clone(),
            LONG,
            &RedisServer::new(url.clone()),
            &config,
            shutdown.clone(),
        )
        .expect("authorizer with Redis");
        until_subscribed(&[&a]).await;
        assert!(
            !a.allowed("mallory", &m("m_1"), Permission::Read)
                .await
                .expect("decision")
        );
        let lists = source.lists.load(Ordering::SeqCst);

        // Someone with write access to Redis adds a platform_admin grant to the snapshot,
        // keeping its revision (it sits in the same value), and announces a change.
        let mut raw = redis::Client::open(url.as_str())
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("connection");
        let stored: Vec<u8> = redis::cmd("GET")
            .arg(config.grants_key())
            .query_async(&mut raw)
            .await
            .expect("the snapshot was cached");
        let mut forged: serde_json::Value = serde_json::from_slice(&stored).expect("json");
        forged["grants"]
            .as_array_mut()
            .expect("grants")
            .push(serde_json::json!(["mallory", "platform_admin", "*"]));
        let _: () = redis::cmd("SET")
            .arg(config.grants_key())
            .arg(forged.to_string())
            .query_async(&mut raw)
            .await
            .expect("SET");
        let _: i64 = redis::cmd("PUBLISH")
            .arg(config.channel_name())
            .arg("changed")
            .query_async(&mut raw)
            .await
            .expect("PUBLISH");

        // The reload finds the forged snapshot, sees its digest differ from the store's,
        // and reads the store instead.
        let deadline = Instant::now() + Duration::from_secs(5);
        while source.lists.load(Ordering::SeqCst) == lists {
            assert!(
                !a.allowed("mallory", &m("m_1"), Permission::Read)
                    .await
                    .expect("decision"),
                "the forged snapshot was used"
            );
            assert!(
                Instant::now() < deadline,
                "no reload after the announcement"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for merchant in ["m_1", "m_3"] {
            assert!(
                !a.allowed("mallory", &m(merchant), Permission::Read)
                    .await
                    .expect("decision"),
                "mallory on {merchant}"
            );
        }
        assert!(
            a.allowed("mallory", &m("m_2"), Permission::Read)
                .await
                .expect("decision")
        );
        // The honest snapshot was written back over the forged one.
        let stored: Vec<u8> = redis::cmd("GET")
            .arg(config.grants_key())
            .query_async(&mut raw)
            .await
            .expect("snapshot");
        assert!(!String::from_utf8_lossy(&stored).contains("platform_admin"));
        shutdown.cancel();
    }

    #[tokio::test]
    async fn replicas_share_the_snapshot_and_see_a_published_revoke_at_once() {
        let url = require_redis().await;
        let config = unique_config();
        let source = MemorySource::with(&[
            ("alice", "merchant_admin", "m_1"),
            ("bob", "merchant_viewer", "m_1"),
        ]);
        let shutdown = CancellationToken::new();
        let replica = || {
            Authorizer::with_redis_config(
                source.clone(),
                LONG,
                &RedisServer::new(url.clone()),
                &config,
                shutdown.clone(),
            )
            .expect("authorizer with Redis")
        };
        let (a, b) = (replica(), replica());
        until_subscribed(&[&a, &b]).await;

        // The first replica lists the grants from the store and caches them in Redis...
        assert!(
            a.allowed("alice", &m("m_1"), Permission::Delete)
                .await
                .expect("decision")
        );
        assert_eq!(source.lists.load(Ordering::SeqCst), 1);
        // ...the second reads them from Redis.
        assert!(
            b.allowed("alice", &m("m_1"), Permission::Delete)
                .await
                .expect("decision")
        );
        assert_eq!(source.lists.load(Ordering::SeqCst), 1);
        let mut raw = redis::Client::open(url.as_str())
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("connection");
        let ttl_ms: i64 = redis::cmd("PTTL")
            .arg(config.grants_key())
            .query_async(&mut raw)
            .await
            .expect("PTTL");
        assert!(
            ttl_ms > 0 && ttl_ms <= 10 * LONG.as_millis() as i64,
            "snapshot TTL {ttl_ms} ms"
        );

        // A revoke is committed and announced: both replicas see it well within their
        // (hour-long) TTL.
        source.revoke("alice", "merchant_admin", "m_1", true);
        publish_policy_change_with(&RedisServer::new(url.clone()), &config)
            .await
            .expect("announce");
        let started = Instant::now();
        until_denied(
            &a,
            "alice",
            "m_1",
            Permission::Delete,
            Duration::from_secs(1),
        )
        .await;
        until_denied(
            &b,
            "alice",
            "m_1",
            Permission::Delete,
            Duration::from_secs(1),
        )
        .await;
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(
            b.allowed("bob", &m("m_1"), Permission::Read)
                .await
                .expect("decision")
        );
        // The announcement deleted the old snapshot; the first replica to reload listed
        // the store once and the other read its write-back from Redis.
        assert_eq!(source.lists.load(Ordering::SeqCst), 2);

        // A Redis snapshot never hides a store failure: the revision comes from the store.
        source.failing.store(true, Ordering::SeqCst);
        b.invalidate();
        assert!(matches!(
            b.allowed("bob", &m("m_1"), Permission::Read).await,
            Err(AuthError::Backend(_))
        ));
        source.failing.store(false, Ordering::SeqCst);

        // The shutdown token stops the subscribers; decisions go on.
        shutdown.cancel();
        let deadline = Instant::now() + Duration::from_secs(2);
        while a.redis_subscribed() || b.redis_subscribed() {
            assert!(Instant::now() < deadline, "subscribers still running");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            a.allowed("bob", &m("m_1"), Permission::Read)
                .await
                .expect("decision")
        );
        let () = redis::cmd("DEL")
            .arg(config.grants_key())
            .query_async(&mut raw)
            .await
            .expect("DEL");
    }

    #[tokio::test]
    async fn a_snapshot_of_another_revision_or_garbage_is_not_used() {
        let url = require_redis().await;
        let config = unique_config();
        let source = MemorySource::with(&[("alice", "merchant_admin", "m_1")]);
        let mut raw = redis::Client::open(url.as_str())
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("connection");
        // A stale snapshot (an older revision granting more) and then garbage.
        let stale = r#"{"revision":0,"grants":[["mallory","platform_admin","*"]]}"#;
        for value in [stale, "not json"] {
            let () = redis::cmd("SET")
                .arg(config.grants_key())
                .arg(value)
                .query_async(&mut raw)
                .await
                .expect("SET");
            let a = Authorizer::with_redis_config(
                source.clone(),
                LONG,
                &RedisServer::new(url.clone()),
                &config,
                CancellationToken::new(),
            )
            .expect("authorizer");
            assert!(
                !a.allowed("mallory", &m("m_1"), Permission::Read)
                    .await
                    .expect("decision"),
                "{value}"
            );
            assert!(
                a.allowed("alice", &m("m_1"), Permission::Delete)
                    .await
                    .expect("decision")
            );
        }
        assert_eq!(source.lists.load(Ordering::SeqCst), 2);
        // The store's grants were written back at the current revision.
        let cached: String = redis::cmd("GET")
            .arg(config.grants_key())
            .query_async(&mut raw)
            .await
            .expect("GET");
        assert!(
            cached.contains("alice") && !cached.contains("mallory"),
            "{cached}"
        );
        let () = redis::cmd("DEL")
            .arg(config.grants_key())
            .query_async(&mut raw)
            .await
            .expect("DEL");
    }

    #[tokio::test]
    async fn redis_down_falls_back_to_the_store() {
        let source = MemorySource::with(&[("alice", "merchant_admin", "m_1")]);
        let a = Authorizer::with_redis(source.clone(), LONG, "redis://127.0.0.1:9")
            .expect("authorizer (connects in the background)");
        let started = Instant::now();
        assert!(
            a.allowed("alice", &m("m_1"), Permission::Delete)
                .await
                .expect("decision from the store")
        );
        assert!(
            !a.allowed("bob", &m("m_1"), Permission::Read)
                .await
                .expect("decision from the store")
        );
        source.revoke("alice", "merchant_admin", "m_1", true);
        source.grant("bob", "merchant_viewer", "m_1");
        a.invalidate();
        assert!(
            !a.allowed("alice", &m("m_1"), Permission::Delete)
                .await
                .expect("decision from the store")
        );
        assert!(
            a.allowed("bob", &m("m_1"), Permission::Read)
                .await
                .expect("decision from the store")
        );
        assert_eq!(source.lists.load(Ordering::SeqCst), 2);
        assert!(!a.redis_subscribed());
        // Refused connections fail fast, and after one failure Redis is skipped for a
        // while, so a dead Redis does not slow decisions down.
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );

        // A store failure is still an error, never "allowed".
        source.failing.store(true, Ordering::SeqCst);
        a.invalidate();
        assert!(matches!(
            a.allowed("bob", &m("m_1"), Permission::Read).await,
            Err(AuthError::Backend(_))
        ));
    }

    #[tokio::test]
    async fn the_redis_url_never_appears_in_an_error() {
        let source = MemorySource::with(&[]);
        let secret = "s3cret-pw";
        let bad = format!("rediss+nope://user:{secret}@example.invalid:1/0");
        let err = Authorizer::with_redis(source.clone(), LONG, &bad).expect_err("bad URL");
        assert!(!err.to_string().contains(secret), "{err}");
        assert!(!err.to_string().contains("example.invalid"), "{err}");

        let unreachable = format!("redis://user:{secret}@127.0.0.1:9/0");
        let err = publish_policy_change(&unreachable)
            .await
            .expect_err("nobody listens on port 9");
        assert!(matches!(err, AuthError::Backend(_)));
        assert!(!err.to_string().contains(secret), "{err}");
        assert!(!err.to_string().contains("127.0.0.1"), "{err}");
        let err = publish_policy_change(&bad).await.expect_err("bad URL");
        assert!(!err.to_string().contains(secret), "{err}");
    }

    #[test]
    fn redis_outside_a_runtime_is_an_error_not_a_panic() {
        let source = MemorySource::with(&[]);
        let err =
            Authorizer::with_redis(source, LONG, "redis://127.0.0.1:6379").expect_err("no runtime");
        assert!(matches!(err, AuthError::Backend(_)));
    }

    /// Not a benchmark with assertions: it prints what a decision costs in this build.
    #[tokio::test]
    async fn ten_thousand_cached_decisions() {
        let mut grants = vec![("reader", "merchant_viewer", "*")];
        let merchants: Vec<String> = (0..200).map(|i| format!("m_{i}")).collect();
        for merchant in &merchants {
            grants.push(("op", "merchant_operator", merchant.as_str()));
        }
        let source = MemorySource::with(&grants);
        let a = authz(&source, LONG);

        let started = Instant::now();
        a.ready().await.expect("load");
        let load = started.elapsed();

        let sample: Vec<MerchantId> = (0..50).map(|i| m(&format!("x_{i}"))).collect();
        let started = Instant::now();
        for merchant in &sample {
            assert!(
                a.allowed("reader", merchant, Permission::Read)
                    .await
                    .expect("decision")
            );
        }
        let uncached = started.elapsed() / sample.len() as u32;

        let target = m("m_7");
        assert!(
            a.allowed("op", &target, Permission::Retry)
                .await
                .expect("decision")
        );
        let started = Instant::now();
        for _ in 0..10_000 {
            assert!(
                a.allowed("op", &target, Permission::Retry)
                    .await
                    .expect("decision")
            );
        }
        let cached = started.elapsed();
        println!(
            "policy load (200 grants): {load:?}; uncached allowed: {uncached:?} each; \
             10,000 cached allowed: {cached:?} ({:?} each)",
            cached / 10_000
        );
    }
}
