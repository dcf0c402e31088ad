//! What the API's handlers share: the ports, the auth services, the WebSocket settings and
//! the count of open sockets per subject.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::auth::{Authorizer, Verifier};
use crate::domain::Snowflake;
use crate::notify::Notifier;
use crate::queue::Queue;
use crate::storage::ObjectStorage;
use crate::store::JobStore;
use crate::usecases::{Batches, Ledgers, Schedules, Webhooks};
use crate::vault::Vault;
use crate::webhooks::network::Reach;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Job store.
    pub store: Arc<dyn JobStore>,
    /// Queue (producing side).
    pub queue: Arc<dyn Queue>,
    /// Object storage.
    pub storage: Arc<dyn ObjectStorage>,
    /// Status events.
    pub notifier: Notifier,
    /// The key hierarchy: downloads open files with it, webhook secrets are sealed with
    /// its service key.
    pub keys: crate::keys::Keys,
    /// The public keys manifests are signed with (current first, then retired).
    pub manifest_keys: Arc<jsonwebtoken::jwk::JwkSet>,
    /// Token verification.
    pub verifier: Arc<Verifier>,
    /// Authorization decisions.
    pub authz: Arc<Authorizer>,
    /// Ledger ids.
    pub ids: Arc<Snowflake>,
    /// Fires on shutdown: WebSockets close with 1001.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// `/ws` settings: keep-alive, token leeway, replay age, sockets per subject.
    pub ws: WsSettings,
    /// Open WebSockets per subject on this process.
    pub ws_sockets: SocketCounts,
    /// The fan-out of live events to this process's WebSockets.
    pub ws_hub: crate::api::ws::Hub,
    /// Where webhook endpoints may point (`APP_ENV_WEBHOOK_ALLOW_PRIVATE_NETWORKS`).
    pub webhook_reach: Reach,
    /// Tokens are verified with this service's own dev key (no JWKS configured): the
    /// console's sign-in page says how to mint one.
    pub dev_tokens: bool,
}

impl AppState {
    /// The ledger use cases over these ports.
    /// The schedule use cases over this state's ports.
    pub fn schedules(&self) -> Schedules {
        Schedules {
            store: self.store.clone(),
            authz: self.authz.clone(),
            ids: self.ids.clone(),
        }
    }

    /// The webhook use cases over this state's ports.
    pub fn webhooks(&self) -> Webhooks {
        Webhooks {
            store: self.store.clone(),
            authz: self.authz.clone(),
            ids: self.ids.clone(),
            keys: self.keys.clone(),
            reach: self.webhook_reach,
        }
    }

    /// The batch use cases over this state's ports.
    pub fn batches(&self) -> Batches {
        Batches {
            store: self.store.clone(),
            authz: self.authz.clone(),
            ids: self.ids.clone(),
        }
    }

    pub fn ledgers(&self) -> Ledgers {
        Ledgers {
            store: self.store.clone(),
            queue: self.queue.clone(),
            notifier: self.notifier.clone(),
            authz: self.authz.clone(),
            ids: self.ids.clone(),
            vault: Vault::new(self.storage.clone(), self.keys.clone()),
        }
    }
}

/// What `/ws` is configured with.
#[derive(Debug, Clone, Copy)]
pub struct WsSettings {
    /// Keep-alive ping interval (`APP_ENV_WS_PING_INTERVAL_MS`).
    pub ping_interval: Duration,
    /// Tolerated clock skew after a token's `exp` (`APP_ENV_AUTH_LEEWAY_SECS`): a socket is
    /// closed at `exp` + this.
    pub token_leeway: Duration,
    /// How far back `?since=` replays (`APP_ENV_WS_REPLAY_MAX_AGE_MS`).
    pub replay_max_age: Duration,
    /// Sockets one subject may hold open on this process
    /// (`APP_ENV_WS_MAX_SOCKETS_PER_SUBJECT`).
    pub max_sockets_per_subject: usize,
}

/// Open sockets per subject on this process.
#[derive(Debug, Clone, Default)]
pub struct SocketCounts(Arc<Mutex<HashMap<String, usize>>>);

impl SocketCounts {
    /// A place for one more socket of `subject`, unless it holds `max` already.
    pub(super) fn reserve(&self, subject: &str, max: usize) -> Option<SocketSlot> {
        // Plain counters updated in one step: a poisoned lock is still consistent.
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(subject.to_owned()).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(SocketSlot {
            counts: self.clone(),
            subject: subject.to_owned(),
        })
    }

    /// Sockets `subject` holds now.
    pub fn count(&self, subject: &str) -> usize {
        let counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        counts.get(subject).copied().unwrap_or(0)
    }
}

/// One socket's place in [`SocketCounts`], given back when dropped (so however the socket
/// or the upgrade ends). A subject without sockets leaves no entry behind.
#[derive(Debug)]
pub(super) struct SocketSlot {
    counts: SocketCounts,
    subject: String,
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.subject) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.subject);
            }
        }
    }
}
