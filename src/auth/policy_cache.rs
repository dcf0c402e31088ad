//! The shared policy cache in Redis: many api replicas keep one grant snapshot (the grants
//! at a policy revision) in Redis instead of each listing them from the job store, and a
//! policy change is broadcast on a pub/sub channel so that every replica reloads at once
//! instead of after its TTL.
//!
//! Redis is only ever an optimisation here: when it is down, slow or holds garbage the
//! authorizer reads the store, a WARN is logged at most every few seconds, and both the
//! command connection and the subscription reconnect by themselves. Nothing in this file
//! may turn a Redis failure into a decision. The Redis URL may hold a password, so no
//! error or log line contains it (only the error kind).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::AuthError;
use crate::config::redis::{RedisServer, describe};
use crate::domain::Grant;

/// The default key prefix; the snapshot lives at `{prefix}:grants`.
pub const DEFAULT_KEY_PREFIX: &str = "ledger:policy";

/// The default pub/sub channel announcing a policy change.
pub const DEFAULT_CHANNEL: &str = "ledger.policy";

/// How long one Redis command (or a connection attempt) may take. Short: a reload waits
/// for it, and the store is always there to fall back to.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);

/// After a failed command Redis is skipped for this long, so that a dead Redis costs one
/// timeout per period rather than one per reload.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// At most one "Redis unavailable" WARN per this period.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// The subscription is pinged this often: a connection that died silently (no RST) would
/// otherwise leave a replica deaf to invalidations until the TTL.
const PING_EVERY: Duration = Duration::from_secs(10);

/// The snapshot lives in Redis for this many cache TTLs, so that a key nobody refreshes
/// (every replica gone) does not stay forever.
const SNAPSHOT_TTL_FACTOR: u32 = 10;
const MIN_SNAPSHOT_TTL: Duration = Duration::from_secs(1);
const MAX_SNAPSHOT_TTL: Duration = Duration::from_secs(24 * 3600);

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Where in Redis the policy cache lives. Replicas that should share a cache (and a
/// `ledger policy` CLI that should reach them) use the same values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyCacheConfig {
    key_prefix: String,
    channel: String,
}

impl Default for PolicyCacheConfig {
    fn default() -> Self {
        Self {
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            channel: DEFAULT_CHANNEL.to_owned(),
        }
    }
}

impl PolicyCacheConfig {
    /// Uses `prefix` instead of `ledger:policy` (the snapshot key is `{prefix}:grants`).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Uses `channel` instead of `ledger.policy` for change announcements.
    pub fn channel(mut self, channel: impl Into<String>) -> Self {
        self.channel = channel.into();
        self
    }

    /// The key holding the grant snapshot.
    pub fn grants_key(&self) -> String {
        format!("{}:grants", self.key_prefix)
    }

    /// The change-announcement channel.
    pub fn channel_name(&self) -> &str {
        &self.channel
    }
}

/// Announces a policy change to every authorizer sharing `redis_url` with the default
/// key prefix and channel: the cached snapshot is deleted and a message is published on
/// `ledger.policy`, so each replica reloads on its next decision. Call it after the change
/// is committed to the store.
pub async fn publish_policy_change(redis_url: &str) -> Result<(), AuthError> {
    publish_policy_change_with(&RedisServer::new(redis_url), &PolicyCacheConfig::default()).await
}

/// [`publish_policy_change`] for a non-default key prefix or channel.
///
/// An error means the replicas were not told; they still see the change once their TTL
/// runs out (the store's revision changed), so a caller may report it as a warning.
pub async fn publish_policy_change_with(
    redis: &RedisServer,
    config: &PolicyCacheConfig,
) -> Result<(), AuthError> {
    let client = open(redis)?;
    let announce = async {
        let mut connection = client.get_multiplexed_async_connection().await?;
        // DEL first: a replica woken by the message must not find the old snapshot.
        redis::pipe()
            .del(config.grants_key())
            .ignore()
            .publish(&config.channel, "changed")
            .ignore()
            .exec_async(&mut connection)
            .await
    };
    match tokio::time::timeout(COMMAND_TIMEOUT * 4, announce).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(AuthError::Backend(format!(
            "policy cache: cannot announce the policy change to Redis ({})",
            kind(&e)
        ))),
        Err(_) => Err(AuthError::Backend(
            "policy cache: announcing the policy change to Redis timed out".into(),
        )),
    }
}

fn open(redis: &RedisServer) -> Result<redis::Client, AuthError> {
    // The URL may hold a password: the error names what is wrong, not the URL.
    redis.client().map_err(|e| {
        AuthError::Backend(format!(
            "policy cache: invalid Redis URL or CA ({})",
            kind(&e)
        ))
    })
}

fn kind(e: &redis::RedisError) -> String {
    describe(e)
}

/// The snapshot as stored in Redis.
#[derive(Serialize, Deserialize)]
struct Stored {
    revision: i64,
    /// `(subject, role, domain)`; validated again when the enforcer is built.
    grants: Vec<(String, String, String)>,
}

/// Rate-limited WARNs shared by the command path and the subscriber.
#[derive(Default)]
struct Warnings {
    last: Mutex<Option<Instant>>,
    /// Set once something failed, so that recovery is logged once.
    degraded: AtomicBool,
}

impl Warnings {
    fn failed(&self, what: &str, error: &str) {
        self.degraded.store(true, Ordering::SeqCst);
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if last.is_some_and(|at| at.elapsed() < WARN_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        tracing::warn!(
            error,
            "policy cache: Redis unavailable ({what}); using the job store and retrying"
        );
    }

    fn recovered(&self) {
        if self.degraded.swap(false, Ordering::SeqCst) {
            tracing::info!("policy cache: Redis available again");
        }
    }
}

/// The command connection: created lazily, dropped after a failure and recreated once
/// `retry_at` has passed.
struct Connection {
    manager: Option<ConnectionManager>,
    retry_at: Option<Instant>,
}

/// One authorizer's handle on the shared cache. Dropping it stops its subscriber.
pub(super) struct RedisPolicyCache {
    client: redis::Client,
    key: String,
    snapshot_ttl: Duration,
    connection: Mutex<Connection>,
    warnings: Arc<Warnings>,
    subscribed: Arc<AtomicBool>,
    _stop: DropGuard,
}

impl RedisPolicyCache {
    /// Starts the subscriber on `config`'s channel, which sets `stale` on every change
    /// announcement (and after every (re)subscription, since announcements sent while
    /// unsubscribed were missed). It runs until `shutdown` or until this is dropped.
    /// Connecting happens in the background; this only fails on a bad URL or outside a
    /// Tokio runtime.
    pub(super) fn start(
        redis: &RedisServer,
        config: &PolicyCacheConfig,
        cache_ttl: Duration,
        stale: Weak<AtomicBool>,
        shutdown: CancellationToken,
    ) -> Result<Self, AuthError> {
        let client = open(redis)?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| AuthError::Backend("policy cache: Redis needs a Tokio runtime".into()))?;
        let stop = shutdown.child_token();
        let warnings = Arc::new(Warnings::default());
        let subscribed = Arc::new(AtomicBool::new(false));
        runtime.spawn(subscribe(
            client.clone(),
            config.channel.clone(),
            stale,
            subscribed.clone(),
            warnings.clone(),
            stop.clone(),
        ));
        let snapshot_ttl = cache_ttl
            .saturating_mul(SNAPSHOT_TTL_FACTOR)
            .clamp(MIN_SNAPSHOT_TTL, MAX_SNAPSHOT_TTL);
        Ok(Self {
            client,
            key: config.grants_key(),
            snapshot_ttl,
            connection: Mutex::new(Connection {
                manager: None,
                retry_at: None,
            }),
            warnings,
            subscribed,
            _stop: stop.drop_guard(),
        })
    }

    /// Whether the invalidation subscription is currently live.
    pub(super) fn subscribed(&self) -> bool {
        self.subscribed.load(Ordering::SeqCst)
    }

    /// The cached grants if Redis holds a snapshot of exactly `revision`; `None` on a miss,
    /// another revision, garbage or any Redis trouble (the caller then reads the store).
    pub(super) async fn load(&self, revision: i64) -> Option<Vec<Grant>> {
        let mut manager = self.manager()?;
        let read = tokio::time::timeout(
            COMMAND_TIMEOUT,
            redis::cmd("GET")
                .arg(&self.key)
                .query_async::<Option<Vec<u8>>>(&mut manager),
        )
        .await;
        let raw = self.outcome("read", read)??;
        let stored = match serde_json::from_slice::<Stored>(&raw) {
            Ok(stored) => stored,
            Err(e) => {
                // Someone else's value or an older format: the store has the truth, and
                // the write-back that follows replaces it.
                tracing::warn!(error = %e, "policy cache: ignoring a malformed snapshot in Redis");
                return None;
            }
        };
        (stored.revision == revision).then(|| {
            stored
                .grants
                .into_iter()
                .map(|(subject, role, domain)| Grant {
                    subject,
                    role,
                    domain,
                })
                .collect()
        })
    }

    /// Caches `grants` as the snapshot of `revision` for the other replicas. Best effort.
    pub(super) async fn save(&self, revision: i64, grants: &[Grant]) {
        let Some(mut manager) = self.manager() else {
            return;
        };
        let stored = Stored {
            revision,
            grants: grants
                .iter()
                .map(|g| (g.subject.clone(), g.role.clone(), g.domain.clone()))
                .collect(),
        };
        let payload = match serde_json::to_vec(&stored) {
            Ok(payload) => payload,
            Err(e) => {
                tracing::warn!(error = %e, "policy cache: cannot encode the grant snapshot");
                return;
            }
        };
        let millis = u64::try_from(self.snapshot_ttl.as_millis()).unwrap_or(u64::MAX);
        let written = tokio::time::timeout(
            COMMAND_TIMEOUT,
            redis::cmd("SET")
                .arg(&self.key)
                .arg(payload)
                .arg("PX")
                .arg(millis)
                .query_async::<()>(&mut manager),
        )
        .await;
        self.outcome("write", written);
    }

    /// The command connection, or `None` while Redis is being skipped after a failure.
    fn manager(&self) -> Option<ConnectionManager> {
        let mut connection = self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(manager) = &connection.manager {
            return Some(manager.clone());
        }
        if connection.retry_at.is_some_and(|at| Instant::now() < at) {
            return None;
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            // One attempt per command: the retry pacing is RETRY_AFTER's job, and a reload
            // must not sit through the manager's default six attempts.
            .set_number_of_retries(0)
            .set_max_delay(MAX_BACKOFF);
        // Lazy: connects on the first command, inside that command's timeout.
        match ConnectionManager::new_lazy_with_config(self.client.clone(), config) {
            Ok(manager) => {
                connection.manager = Some(manager.clone());
                Some(manager)
            }
            Err(e) => {
                connection.retry_at = Some(Instant::now() + RETRY_AFTER);
                self.warnings.failed("connect", &kind(&e));
                None
            }
        }
    }

    /// Unwraps a timed command; on failure drops the connection (a fresh one is made after
    /// `RETRY_AFTER`, whatever state the old one was stuck in) and warns.
    fn outcome<T>(
        &self,
        what: &str,
        result: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Option<T> {
        let error = match result {
            Ok(Ok(value)) => {
                self.warnings.recovered();
                return Some(value);
            }
            Ok(Err(e)) => kind(&e),
            Err(_) => "timed out".to_owned(),
        };
        {
            let mut connection = self
                .connection
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            connection.manager = None;
            connection.retry_at = Some(Instant::now() + RETRY_AFTER);
        }
        self.warnings.failed(what, &error);
        None
    }
}

/// Sets the authorizer's stale flag; false once the authorizer is gone.
fn invalidate(stale: &Weak<AtomicBool>) -> bool {
    match stale.upgrade() {
        Some(flag) => {
            flag.store(true, Ordering::SeqCst);
            true
        }
        None => false,
    }
}

/// Subscribes to `channel` and invalidates on every message, resubscribing with backoff
/// after any failure, until `stop` or until the authorizer is dropped.
async fn subscribe(
    client: redis::Client,
    channel: String,
    stale: Weak<AtomicBool>,
    subscribed: Arc<AtomicBool>,
    warnings: Arc<Warnings>,
    stop: CancellationToken,
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let connect = async {
            let (mut sink, stream) = client.get_async_pubsub().await?.split();
            sink.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>((sink, stream))
        };
        let connected = tokio::select! {
            _ = stop.cancelled() => break,
            connected = tokio::time::timeout(COMMAND_TIMEOUT * 4, connect) => connected,
        };
        match connected {
            Ok(Ok((mut sink, mut stream))) => {
                backoff = MIN_BACKOFF;
                subscribed.store(true, Ordering::SeqCst);
                warnings.recovered();
                tracing::debug!("policy cache: subscribed to policy changes");
                // Announcements sent while we were not subscribed are lost; reloading once
                // (which only reads the revision and the Redis snapshot) covers them.
                if !invalidate(&stale) {
                    break;
                }
                let mut health = tokio::time::interval(PING_EVERY);
                health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                // The first tick is immediate; the connection was just proven.
                health.tick().await;
                let lost = loop {
                    tokio::select! {
                        _ = stop.cancelled() => break None,
                        message = stream.next() => match message {
                            Some(_) => {
                                if !invalidate(&stale) {
                                    break None;
                                }
                            }
                            None => break Some("subscription closed"),
                        },
                        _ = health.tick() => {
                            let pong = tokio::time::timeout(
                                COMMAND_TIMEOUT * 4,
                                sink.ping::<redis::Value>(),
                            )
                            .await;
                            if !matches!(pong, Ok(Ok(_))) {
                                break Some("subscription ping failed");
                            }
                        }
                    }
                };
                subscribed.store(false, Ordering::SeqCst);
                match lost {
                    Some(reason) => warnings.failed("subscribe", reason),
                    None => break,
                }
            }
            Ok(Err(e)) => warnings.failed("subscribe", &kind(&e)),
            Err(_) => warnings.failed("subscribe", "timed out"),
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    subscribed.store(false, Ordering::SeqCst);
}
