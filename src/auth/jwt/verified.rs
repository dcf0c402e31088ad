//! Tokens already verified, so a client sending the same bearer token on every request pays
//! for the ES256 signature check once, not once a request (a P-256 verification costs
//! about 100 µs; a look-up here well under 1 µs).
//!
//! Only what cannot change is remembered: a token string that verified under a key set
//! verifies again under the same set. What can change is checked on every use: the token's
//! expiry (with the leeway), and that the key set is the very one it was verified under
//! (any JWKS refresh installs a new set, so a rotated or withdrawn key ends every entry it
//! covered) and is not past its maximum age. A miss on any of these goes the full way,
//! which also gives the usual error. Entries are keyed by the token's SHA-256, so no bearer
//! token is held here and no crafted token can take another's entry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest, Sha256};

use super::Claims;
use super::jwks::KeyMap;

/// Most tokens remembered; when full the memory starts over (a burst of distinct tokens
/// costs verifications, never unbounded memory).
const CAPACITY: usize = 8192;

/// What a token verified to, and under which keys.
struct Entry {
    claims: Claims,
    keys: Arc<KeyMap>,
}

/// The verified tokens of one verifier.
#[derive(Default)]
pub(super) struct Verified {
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

/// A token's key in the memory.
pub(super) fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Verified {
    /// The claims of a token verified before under `keys`, while it has not expired
    /// (`now` and `leeway` in seconds).
    pub(super) fn get(
        &self,
        token: &[u8; 32],
        keys: &Arc<KeyMap>,
        now: i64,
        leeway: i64,
    ) -> Option<Claims> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = entries.get(token)?;
        if Arc::ptr_eq(&entry.keys, keys) && entry.claims.exp.saturating_add(leeway) >= now {
            return Some(entry.claims.clone());
        }
        entries.remove(token);
        None
    }

    /// Remembers that `token` verified to `claims` under `keys`.
    pub(super) fn insert(&self, token: [u8; 32], claims: Claims, keys: Arc<KeyMap>) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(token, Entry { claims, keys });
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}
