//! Authorization policy values: role grants of a subject on a merchant (or on every merchant).

/// A role grant: `subject` has `role` on `domain` (a merchant id or `*`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Grant {
    /// The JWT `sub`.
    pub subject: String,
    /// One of the built-in roles.
    pub role: String,
    /// A merchant id or `*` for every merchant.
    pub domain: String,
}

/// The state of the grants in the job store: `revision` changes with every grant change;
/// `digest` is [`grant_digest`] of the grants in force at that revision. A copy of the grants
/// kept anywhere else (a Redis snapshot) is only used if it hashes to `digest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRevision {
    /// A random number, new at every change (it also tells one database from another).
    pub revision: i64,
    /// Lower-case hex SHA-256 of the canonical grant set.
    pub digest: String,
}

/// SHA-256 (lower-case hex) of a grant set in canonical form: the grants sorted by
/// (subject, role, domain) byte-wise, duplicates dropped, encoded as a JSON array of
/// `[subject, role, domain]` arrays. The order of `grants` does not matter.
pub fn grant_digest(grants: &[Grant]) -> String {
    use sha2::{Digest, Sha256};
    let mut canonical: Vec<(&str, &str, &str)> = grants
        .iter()
        .map(|g| (g.subject.as_str(), g.role.as_str(), g.domain.as_str()))
        .collect();
    canonical.sort_unstable();
    canonical.dedup();
    // Serialising strings and arrays of strings cannot fail.
    let json = serde_json::to_vec(&canonical).unwrap_or_default();
    hex::encode(Sha256::digest(json))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(subject: &str, role: &str, domain: &str) -> Grant {
        Grant {
            subject: subject.into(),
            role: role.into(),
            domain: domain.into(),
        }
    }

    #[test]
    fn the_digest_is_of_the_set_not_of_its_order() {
        let a = g("alice", "merchant_viewer", "m_1");
        let b = g("bob", "platform_admin", "*");
        let digest = grant_digest(&[a.clone(), b.clone()]);
        assert_eq!(digest, grant_digest(&[b.clone(), a.clone(), a.clone()]));
        assert_eq!(digest.len(), 64);
        assert_ne!(digest, grant_digest(std::slice::from_ref(&a)));
        assert_ne!(
            digest,
            grant_digest(&[a, g("bob", "platform_admin", "m_1")])
        );
        // Field boundaries are part of the encoding: no two sets share a digest by
        // moving characters between fields.
        assert_ne!(
            grant_digest(&[g("ab", "c", "d")]),
            grant_digest(&[g("a", "bc", "d")])
        );
        assert_eq!(
            grant_digest(&[]),
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"[]"))
        );
    }
}
