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
