//! The Redis event bus: events published by any process (workers) reach subscribers in every
//! process (api) through Redis pub/sub. Best effort like every bus: while Redis is down,
//! `publish` reports `NotReady` (the caller logs the sheet's warning and goes on), and both
//! the publishing and the subscribing connection reconnect by themselves.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{RwLock, broadcast};
use tokio_util::sync::CancellationToken;

use super::{CAPACITY, EventBus, NotifyError};
use crate::config::redis::{RedisServer, describe};
use crate::domain::Event;

/// The pub/sub channel every ledger event goes through.
pub const CHANNEL: &str = "ledger.events";

/// How long one Redis command may take before the emitter counts as not ready.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Events over Redis pub/sub.
pub struct RedisBus {
    publisher: Arc<RwLock<Option<ConnectionManager>>>,
    /// Whether the relay is subscribed: events published elsewhere reach this process.
    subscribed: Arc<std::sync::atomic::AtomicBool>,
    local: broadcast::Sender<Event>,
    channel: String,
    /// Why the last connection attempt failed, so that readiness can tell a TLS or auth
    /// problem from an outage.
    last_error: LastError,
}

/// The latest connection failure of either connection, cleared by the next success.
type LastError = Arc<std::sync::Mutex<Option<String>>>;

fn note(last_error: &LastError, error: Option<String>) {
    *last_error
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = error;
}

impl RedisBus {
    /// Connects (in the background, retrying) to `server` and relays `channel` to local
    /// subscribers until `shutdown`.
    pub fn start(
        server: &RedisServer,
        channel: &str,
        shutdown: CancellationToken,
    ) -> Result<Self, NotifyError> {
        // The URL may hold a password: errors say what is wrong, not the URL.
        let client = server.client().map_err(|e| {
            NotifyError::NotReady(format!("invalid Redis URL or CA ({})", describe(&e)))
        })?;
        let (local, _) = broadcast::channel(CAPACITY);
        let publisher = Arc::new(RwLock::new(None));
        let last_error = LastError::default();
        tokio::spawn(connect_publisher(
            client.clone(),
            publisher.clone(),
            last_error.clone(),
            shutdown.clone(),
        ));
        let subscribed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        tokio::spawn(relay(
            client,
            channel.to_owned(),
            local.clone(),
            subscribed.clone(),
            last_error.clone(),
            shutdown,
        ));
        Ok(Self {
            publisher,
            subscribed,
            local,
            channel: channel.to_owned(),
            last_error,
        })
    }
}

async fn connect_publisher(
    client: redis::Client,
    slot: Arc<RwLock<Option<ConnectionManager>>>,
    last_error: LastError,
    shutdown: CancellationToken,
) {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(COMMAND_TIMEOUT))
        .set_response_timeout(Some(COMMAND_TIMEOUT))
        .set_max_delay(Duration::from_secs(5));
    let mut backoff = Duration::from_millis(100);
    loop {
        match client
            .get_connection_manager_with_config(config.clone())
            .await
        {
            Ok(manager) => {
                *slot.write().await = Some(manager);
                note(&last_error, None);
                tracing::info!("[notifyJobStatus] Redis emitter connected");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %describe(&e), "[notifyJobStatus] emitter not ready: cannot connect to Redis; retrying");
                note(&last_error, Some(describe(&e)));
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Subscribes to `channel` and forwards every event to local subscribers, reconnecting on
/// any failure.
async fn relay(
    client: redis::Client,
    channel: String,
    local: broadcast::Sender<Event>,
    subscribed: Arc<std::sync::atomic::AtomicBool>,
    last_error: LastError,
    shutdown: CancellationToken,
) {
    use std::sync::atomic::Ordering;
    let mut backoff = Duration::from_millis(100);
    loop {
        let connected = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = connected => p,
        };
        match pubsub {
            Ok(pubsub) => {
                backoff = Duration::from_millis(100);
                subscribed.store(true, Ordering::SeqCst);
                note(&last_error, None);
                let mut messages = pubsub.into_on_message();
                loop {
                    let message = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        m = messages.next() => m,
                    };
                    let Some(message) = message else { break };
                    match serde_json::from_slice::<Event>(message.get_payload_bytes()) {
                        // Nobody listening locally is fine.
                        Ok(event) => drop(local.send(event)),
                        Err(e) => {
                            tracing::warn!(error = %e, "ignoring a malformed event on {}", channel)
                        }
                    }
                }
                subscribed.store(false, Ordering::SeqCst);
                tracing::warn!("Redis subscription lost; resubscribing");
            }
            Err(e) => {
                tracing::warn!(error = %describe(&e), "cannot subscribe to Redis; retrying");
                note(&last_error, Some(describe(&e)));
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[async_trait]
impl EventBus for RedisBus {
    async fn publish(&self, event: &Event) -> Result<(), NotifyError> {
        let Some(mut manager) = self.publisher.read().await.clone() else {
            return Err(NotifyError::NotReady("not connected to Redis".into()));
        };
        let payload =
            serde_json::to_string(event).map_err(|e| NotifyError::NotReady(e.to_string()))?;
        let sent: Result<redis::RedisResult<i64>, _> =
            tokio::time::timeout(COMMAND_TIMEOUT, manager.publish(&self.channel, payload)).await;
        match sent {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(NotifyError::NotReady(format!(
                "Redis publish failed ({})",
                describe(&e)
            ))),
            Err(_) => Err(NotifyError::NotReady("Redis publish timed out".into())),
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.local.subscribe()
    }

    async fn ready(&self) -> Result<(), NotifyError> {
        let because = || {
            self.last_error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        };
        if !self.subscribed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(NotifyError::NotReady(format!(
                "not subscribed to Redis{}",
                because()
            )));
        }
        let Some(mut manager) = self.publisher.read().await.clone() else {
            return Err(NotifyError::NotReady(format!(
                "not connected to Redis{}",
                because()
            )));
        };
        let pong: Result<redis::RedisResult<String>, _> = tokio::time::timeout(
            COMMAND_TIMEOUT,
            redis::cmd("PING").query_async(&mut manager),
        )
        .await;
        match pong {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(NotifyError::NotReady(format!(
                "Redis PING failed ({})",
                describe(&e)
            ))),
            Err(_) => Err(NotifyError::NotReady("Redis PING timed out".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_url() -> String {
        std::env::var("LEDGER_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
    }

    async fn connected(channel: &str) -> RedisBus {
        let bus = RedisBus::start(
            &RedisServer::new(test_url()),
            channel,
            CancellationToken::new(),
        )
        .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while bus.ready().await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "no Redis at {} (scripts/run-tests.sh starts one)",
                test_url()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Ready means subscribed too: from here on, events from elsewhere arrive.
        bus
    }

    #[tokio::test]
    async fn the_redis_bus_meets_the_contract() {
        let channel = format!("ledger.test.{}", uuid::Uuid::new_v4().simple());
        let bus = connected(&channel).await;
        super::super::contract::run_all(&bus).await;
    }

    #[tokio::test]
    async fn an_event_crosses_from_one_process_bus_to_another() {
        let channel = format!("ledger.test.{}", uuid::Uuid::new_v4().simple());
        let worker_side = connected(&channel).await;
        let api_side = connected(&channel).await;
        let mut rx = api_side.subscribe();
        let event = serde_json::from_value::<Event>(serde_json::json!({
            "event": "ledger.progress", "ledgerId": "1", "merchantId": "m_1", "phase": "GENERATE",
            "rowsDone": 5, "rowsTotal": null, "at": "2026-10-01T00:00:00Z"
        }))
        .unwrap();
        worker_side.publish(&event).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, event);
    }

    #[tokio::test]
    async fn redis_down_is_reported_not_hidden() {
        let bus = RedisBus::start(
            &RedisServer::new("redis://127.0.0.1:9"),
            "ledger.test.down",
            CancellationToken::new(),
        )
        .unwrap();
        assert!(matches!(bus.ready().await, Err(NotifyError::NotReady(_))));
        let event = serde_json::from_value::<Event>(serde_json::json!({
            "event": "ledger.progress", "ledgerId": "1", "merchantId": "m_1", "phase": "FETCH",
            "rowsDone": 0, "rowsTotal": null, "at": "2026-10-01T00:00:00Z"
        }))
        .unwrap();
        assert!(matches!(
            bus.publish(&event).await,
            Err(NotifyError::NotReady(_))
        ));
    }
}
