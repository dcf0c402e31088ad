//! Tests of the authorizer over an in-memory grant source: what each role allows where,
//! scopes, reloads after `invalidate()` or a revision change, and a failing store. Sharing
//! the snapshot through Redis is tested in [`replicas`].

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicUsize};

use super::*;

mod replicas;

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

/// Whether `subject` may use `perm` on `merchant`; `when` names the moment in a failure.
async fn may(a: &Authorizer, subject: &str, merchant: &str, perm: Permission, when: &str) -> bool {
    a.allowed(subject, &m(merchant), perm).await.expect(when)
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
    assert!(may(&a, "alice", "m_1", Permission::Delete, "decision").await);
    // Same revision on purpose: invalidate() alone must force the reload.
    source.revoke("alice", "merchant_admin", "m_1", false);
    assert!(may(&a, "alice", "m_1", Permission::Delete, "cached").await);
    a.invalidate();
    assert!(!may(&a, "alice", "m_1", Permission::Delete, "decision").await);
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
    assert!(may(&a, "alice", "m_1", Permission::Delete, "decision").await);
    assert_eq!(source.lists.load(Ordering::SeqCst), 1);

    source.revoke("alice", "merchant_admin", "m_1", true);
    source.grant("bob", "merchant_viewer", "m_1");
    assert!(may(&a, "alice", "m_1", Permission::Delete, "within ttl").await);
    tokio::time::sleep(ttl + Duration::from_millis(50)).await;
    assert!(!may(&a, "alice", "m_1", Permission::Delete, "after ttl").await);
    assert!(may(&a, "bob", "m_1", Permission::Read, "after ttl").await);
    assert_eq!(source.lists.load(Ordering::SeqCst), 2);

    // TTL passes with no change: only the revision is read, the grants are not.
    tokio::time::sleep(ttl + Duration::from_millis(50)).await;
    assert!(may(&a, "bob", "m_1", Permission::Read, "decision").await);
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
    assert!(may(&a, "alice", "m_1", Permission::Read, "recovered").await);

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
    assert!(may(&a, "ok", "m_1", Permission::Read, "decision").await);
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
