//! What a caller can do, whoever the caller is: the HTTP API today, batches, schedules and a
//! CLI later. Use cases take domain values and the caller's identity, check access, call the
//! ports (store, queue, notifier, vault) and answer domain values or a [`LedgerError`];
//! nothing here knows HTTP.

pub mod batches;
pub mod ledgers;
pub mod schedules;
pub mod webhooks;

pub use batches::Batches;
pub use ledgers::Ledgers;
pub use schedules::Schedules;
pub use webhooks::Webhooks;

use crate::auth::{AccessError, Permission};
use crate::domain::{InvalidInput, Ledger, LedgerId, MerchantId, TransitionError};
use crate::store::StoreError;

/// Why a use case on ledgers did not happen.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// An input is invalid.
    #[error("{0}")]
    Invalid(#[from] InvalidInput),
    /// The caller may not do `permission` on `merchant`.
    #[error("not allowed to {} merchant {merchant}", permission.phrase())]
    Forbidden {
        /// The merchant asked for.
        merchant: MerchantId,
        /// The action refused.
        permission: Permission,
    },
    /// An audit read of deleted ledgers by a caller who may not make one.
    #[error("includeDeleted=true is an audit read for platform_admin only")]
    AuditOnly,
    /// Something for `"*"` by a caller whose grants do not allow it (the message says what
    /// it needs).
    #[error("{0}")]
    EveryMerchantOnly(&'static str),
    /// No such ledger or version (also when the caller may not see it).
    #[error("{0}")]
    NotFound(&'static str),
    /// A ledger with the same identity exists.
    #[error("a ledger for this merchant, type, period, timezone and format exists")]
    Exists(LedgerId),
    /// The ledger's status refuses the change.
    #[error("{}", .0.message)]
    Conflict(TransitionError),
    /// The file is not there yet, or the version was rejected (the message says which).
    #[error("{0}")]
    NotReady(String),
    /// The idempotency key was used with another request.
    #[error("this Idempotency-Key was used with a different request body")]
    IdempotencyMismatch,
    /// The ledger is stored, REJECTED/ENQUEUE_FAILED, but was not queued.
    #[error("the ledger was stored but could not be queued; retry it")]
    EnqueueFailed(Box<Ledger>),
    /// A backend did not answer.
    #[error("a backend is unavailable: {0}")]
    Unavailable(String),
    /// The key of a file is unavailable (logged with the key id and the ledger).
    #[error("{0}")]
    KeyUnavailable(String),
    /// The file was destroyed on purpose (shred, retention).
    #[error("{0}")]
    Shredded(String),
    /// A bug or a broken invariant.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for LedgerError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Corrupt(m) => LedgerError::Internal(m),
            other => LedgerError::Unavailable(other.to_string()),
        }
    }
}

impl From<AccessError> for LedgerError {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::Denied {
                merchant,
                permission,
            } => LedgerError::Forbidden {
                merchant,
                permission,
            },
            AccessError::Backend(m) => LedgerError::Unavailable(m),
        }
    }
}

impl From<TransitionError> for LedgerError {
    fn from(e: TransitionError) -> Self {
        LedgerError::Conflict(e)
    }
}
