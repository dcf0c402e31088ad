//! Authentication (who is calling: a verified ES256 JWT's `sub`) and authorization (may
//! that subject do this action on this merchant: Casbin RBAC with merchant domains).
//!
//! Owns token verification, the embedded dev signing key, the role model and the one
//! access check every endpoint calls before touching data. It never logs or returns a
//! token, a private key or a JWKS URL's credentials, and a failing policy backend is
//! never read as "allowed".

pub mod devkey;
pub mod jwt;
pub mod policy;
mod policy_cache;
mod store_grants;

pub use devkey::DevKey;
pub use jwt::{Claims, Verifier, VerifierOptions};
pub use policy::{
    ALL_MERCHANTS, Authorizer, GrantSource, MerchantScope, Permission, PolicyCacheConfig, ROLES,
    publish_policy_change, publish_policy_change_with, validate_grant,
};
pub use store_grants::StoreGrants;

use crate::domain::MerchantId;

#[async_trait::async_trait]
impl crate::ready::Ready for Verifier {
    /// Ready while the keys are fresh enough to verify tokens.
    async fn ready(&self) -> Result<(), String> {
        Verifier::ready(self).await.map_err(|e| e.to_string())
    }
}

/// Why a request could not be authenticated, or a key, policy or grant could not be used.
///
/// Messages say what is wrong and never contain the token or key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No bearer token came with the request.
    #[error("missing bearer token")]
    MissingToken,
    /// The token is malformed, expired, badly signed or fails a claim check.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// Signing or verification keys could not be loaded, fetched or created.
    #[error("auth keys: {0}")]
    Keys(String),
    /// The policy store (or another backend) did not answer.
    #[error("authorization backend: {0}")]
    Backend(String),
    /// A grant names an unknown role, a bad merchant or a bad subject.
    #[error("invalid grant: {0}")]
    InvalidGrant(String),
}

/// The authenticated caller: the `sub` of a verified token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Caller {
    /// The subject every authorization decision is made for.
    pub subject: String,
}

impl From<Claims> for Caller {
    fn from(claims: Claims) -> Self {
        Self {
            subject: claims.sub,
        }
    }
}

/// The outcome of a refused merchant access check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// The caller holds no role that allows `permission` on `merchant`.
    #[error("not allowed to {} merchant {merchant}", permission.phrase())]
    Denied {
        /// The merchant asked for.
        merchant: MerchantId,
        /// The action refused.
        permission: Permission,
    },
    /// The policy could not be evaluated; the API answers 503, never "allowed".
    #[error("authorization unavailable: {0}")]
    Backend(String),
}

/// The one check every endpoint calls before touching a merchant's data.
pub async fn assert_merchant_access(
    authz: &Authorizer,
    caller: &Caller,
    merchant: &MerchantId,
    perm: Permission,
) -> Result<(), AccessError> {
    match authz.allowed(&caller.subject, merchant, perm).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(AccessError::Denied {
            merchant: merchant.clone(),
            permission: perm,
        }),
        Err(AuthError::Backend(message)) => Err(AccessError::Backend(message)),
        // Any other failure still must not grant access; it is reported as unavailable
        // so that it shows up as a server-side problem rather than a silent 403.
        Err(other) => Err(AccessError::Backend(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Grant;
    use async_trait::async_trait;
    use std::sync::Arc;
    use std::time::Duration;

    struct Fixed(Result<Vec<Grant>, String>);

    #[async_trait]
    impl GrantSource for Fixed {
        async fn list_grants(&self) -> Result<Vec<Grant>, String> {
            self.0.clone()
        }
        async fn policy_revision(&self) -> Result<crate::domain::PolicyRevision, String> {
            self.0
                .as_ref()
                .map(|grants| crate::domain::PolicyRevision {
                    revision: 1,
                    digest: crate::domain::grant_digest(grants),
                })
                .map_err(Clone::clone)
        }
    }

    fn merchant(raw: &str) -> MerchantId {
        MerchantId::parse(raw).expect("valid merchant id")
    }

    #[tokio::test]
    async fn assert_merchant_access_maps_outcomes() {
        let grant = validate_grant("alice", "merchant_viewer", "m_1").expect("valid grant");
        let authz = Authorizer::new(Arc::new(Fixed(Ok(vec![grant]))), Duration::from_secs(5));
        let alice = Caller {
            subject: "alice".into(),
        };
        assert_eq!(
            assert_merchant_access(&authz, &alice, &merchant("m_1"), Permission::Read).await,
            Ok(())
        );
        assert_eq!(
            assert_merchant_access(&authz, &alice, &merchant("m_1"), Permission::Delete).await,
            Err(AccessError::Denied {
                merchant: merchant("m_1"),
                permission: Permission::Delete
            })
        );
        assert_eq!(
            assert_merchant_access(&authz, &alice, &merchant("m_2"), Permission::Read).await,
            Err(AccessError::Denied {
                merchant: merchant("m_2"),
                permission: Permission::Read
            })
        );

        let broken = Authorizer::new(
            Arc::new(Fixed(Err("db down".into()))),
            Duration::from_secs(5),
        );
        assert!(matches!(
            assert_merchant_access(&broken, &alice, &merchant("m_1"), Permission::Read).await,
            Err(AccessError::Backend(_))
        ));
    }

    #[test]
    fn errors_do_not_leak_inputs() {
        assert_eq!(AuthError::MissingToken.to_string(), "missing bearer token");
        let denied = AccessError::Denied {
            merchant: merchant("m_1"),
            permission: Permission::Create,
        };
        assert_eq!(
            denied.to_string(),
            "not allowed to create ledgers of merchant m_1"
        );
    }
}
