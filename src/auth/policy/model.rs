//! The role model: the built-in roles and their permissions as Casbin rules, grant
//! validation, and one loaded policy revision ([`Snapshot`]) that decides requests and caches
//! the decisions. A subject's name never stands for a role.

use std::collections::{BTreeSet, HashMap};
use std::sync::{PoisonError, RwLock};

use casbin::prelude::{CoreApi, DefaultModel, Enforcer, MemoryAdapter, MgmtApi};

use crate::auth::AuthError;
use crate::domain::{Grant, MerchantId};

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
    /// Make, rotate and delete webhook endpoints for a merchant's events.
    ManageWebhooks,
}

impl Permission {
    /// Every permission.
    pub const ALL: [Permission; 7] = [
        Permission::Read,
        Permission::Create,
        Permission::Retry,
        Permission::Regenerate,
        Permission::Delete,
        Permission::Download,
        Permission::ManageWebhooks,
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
            Permission::ManageWebhooks => "manage_webhooks",
        }
    }

    /// What it allows on a merchant, as an error message says it ("create ledgers of").
    pub fn phrase(self) -> &'static str {
        match self {
            Permission::Read => "read ledgers of",
            Permission::Create => "create ledgers of",
            Permission::Retry => "retry ledgers of",
            Permission::Regenerate => "regenerate ledgers of",
            Permission::Delete => "delete ledgers of",
            Permission::Download => "download ledgers of",
            Permission::ManageWebhooks => "manage webhooks for",
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
pub(super) struct Snapshot {
    pub(super) revision: i64,
    enforcer: Enforcer,
    domains: HashMap<String, SubjectDomains>,
    decisions: RwLock<Decisions>,
}

impl Snapshot {
    pub(super) async fn build(revision: i64, grants: Vec<Grant>) -> Result<Self, AuthError> {
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
    pub(super) fn decide(
        &self,
        subject: &str,
        domain: &str,
        perm: Permission,
    ) -> Result<bool, AuthError> {
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

    /// Every merchant `subject` may use with `perm`, from the subject's grants, each
    /// decided by Casbin.
    pub(super) fn scope(
        &self,
        subject: &str,
        perm: Permission,
    ) -> Result<MerchantScope, AuthError> {
        let Some(held) = self.domains.get(subject) else {
            return Ok(MerchantScope::Only(Vec::new()));
        };
        if held.everywhere && self.decide(subject, ALL_MERCHANTS, perm)? {
            return Ok(MerchantScope::All);
        }
        let mut merchants = Vec::new();
        for domain in &held.merchants {
            if self.decide(subject, domain, perm)? {
                // Loaded grants were validated, so every domain here parses.
                merchants.extend(MerchantId::parse(domain).ok());
            }
        }
        Ok(MerchantScope::Only(merchants))
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
