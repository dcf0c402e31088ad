//! Status and progress events: the bus workers publish to and clients (WebSocket, later)
//! subscribe to. Best effort by design: the store is the truth, an event is a hint.
//! Adapters: [`InProcessBus`] (tokio broadcast), [`redis::RedisBus`] (Redis pub/sub).

pub mod redis;

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::domain::Event;

/// Errors of an event bus.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The emitter cannot publish now.
    #[error("emitter not ready: {0}")]
    NotReady(String),
}

/// The event bus port.
#[async_trait]
pub trait EventBus: Send + Sync {
    /// Publishes one event to every subscriber of every process.
    async fn publish(&self, event: &Event) -> Result<(), NotifyError>;
    /// Receives the events published from now on.
    fn subscribe(&self) -> broadcast::Receiver<Event>;
    /// Answers when the bus can publish.
    async fn ready(&self) -> Result<(), NotifyError>;
}

/// Slots per subscriber before the slowest one starts losing the oldest events.
pub(crate) const CAPACITY: usize = 4096;

/// The embedded bus: one process, one broadcast channel.
pub struct InProcessBus {
    tx: broadcast::Sender<Event>,
}

impl Default for InProcessBus {
    fn default() -> Self {
        let (tx, _) = broadcast::channel(CAPACITY);
        Self { tx }
    }
}

#[async_trait]
impl EventBus for InProcessBus {
    async fn publish(&self, event: &Event) -> Result<(), NotifyError> {
        // No subscriber is not an error: nobody is listening right now.
        let _ = self.tx.send(event.clone());
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    async fn ready(&self) -> Result<(), NotifyError> {
        Ok(())
    }
}

/// Publishes events on behalf of the api and the worker: best effort, never failing the
/// caller. A failure is logged as the operations sheet's `[notifyJobStatus]` warning and
/// counted in `ledger_ws_emit_failures_total`.
#[derive(Clone)]
pub struct Notifier {
    bus: std::sync::Arc<dyn EventBus>,
}

impl Notifier {
    /// A notifier over `bus`.
    pub fn new(bus: std::sync::Arc<dyn EventBus>) -> Self {
        Self { bus }
    }

    /// The bus (subscribers read it).
    pub fn bus(&self) -> &std::sync::Arc<dyn EventBus> {
        &self.bus
    }

    /// Publishes the current status of `ledger`.
    pub async fn status(&self, ledger: &crate::domain::Ledger) {
        let event = Event::Status(crate::domain::StatusEvent {
            ledger_id: ledger.id,
            merchant_id: ledger.merchant_id.clone(),
            status: ledger.status,
            stage: ledger.stage,
            version: ledger.version,
            attempt_count: ledger.attempt_count,
            error_code: match ledger.status {
                crate::domain::Status::Rejected => {
                    ledger.failure_reason.as_ref().map(|f| f.error_code.clone())
                }
                _ => None,
            },
            at: ledger.updated_at,
        });
        self.publish(&event).await;
    }

    /// Publishes any event.
    pub async fn publish(&self, event: &Event) {
        if let Err(e) = self.bus.publish(event).await {
            metrics::counter!("ledger_ws_emit_failures_total").increment(1);
            let (ledger, merchant) = match event {
                Event::Status(e) => (e.ledger_id, &e.merchant_id),
                Event::Progress(e) => (e.ledger_id, &e.merchant_id),
                Event::BatchProgress(b) => {
                    tracing::warn!(batchId = %b.batch_id, error = %e, "[notifyBatchProgress] emitter not ready");
                    return;
                }
            };
            tracing::warn!(
                ledgerId = %ledger,
                merchantId = %merchant,
                error = %e,
                "[notifyJobStatus] emitter not ready"
            );
        }
    }
}

/// Opens the event bus `events` names: Redis pub/sub, or this process alone when unset.
pub fn open(
    events: &crate::config::EventSettings,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<std::sync::Arc<dyn EventBus>> {
    Ok(match &events.redis {
        None => std::sync::Arc::new(InProcessBus::default()),
        Some(server) => std::sync::Arc::new(
            redis::RedisBus::start(server, &events.channel, shutdown)
                .map_err(|e| anyhow::anyhow!("APP_ENV_WEBSOCKET_REDIS_URL: {e}"))?,
        ),
    })
}

#[async_trait]
impl crate::ready::Ready for dyn EventBus {
    async fn ready(&self) -> Result<(), String> {
        EventBus::ready(self).await.map_err(|e| e.to_string())
    }
}

/// The event bus contract, written against the trait; every adapter runs it.
#[cfg(test)]
pub mod contract {
    use std::time::Duration;

    use chrono::Utc;
    use serde_json::json;

    use super::EventBus;
    use crate::domain::{Event, LedgerId, MerchantId, ProgressEvent, Stage, Status, StatusEvent};

    fn status() -> Event {
        Event::Status(status_event())
    }

    fn status_event() -> StatusEvent {
        StatusEvent {
            ledger_id: LedgerId::from_i64(42),
            merchant_id: MerchantId::parse("m_1").unwrap(),
            status: Status::Rejected,
            stage: Stage::Draft,
            version: 2,
            attempt_count: 3,
            error_code: Some("FETCH_DATA_ERROR".into()),
            at: "2026-10-01T00:00:00Z".parse().unwrap(),
        }
    }

    /// Publishing reaches every subscriber, in order, in the wire format of SPEC §5.
    pub async fn run_all(bus: &dyn EventBus) {
        bus.ready().await.unwrap();
        // Nobody listens yet: not an error. (Over a network bus it may still arrive after
        // the subscriptions below, so it carries another ledger id and is skipped there.)
        let unheard = Event::Status(StatusEvent {
            ledger_id: LedgerId::from_i64(41),
            ..status_event()
        });
        bus.publish(&unheard).await.unwrap();
        let mut a = bus.subscribe();
        let mut b = bus.subscribe();
        let progress = Event::Progress(ProgressEvent {
            ledger_id: LedgerId::from_i64(42),
            merchant_id: MerchantId::parse("m_1").unwrap(),
            phase: "GENERATE".into(),
            rows_done: 10,
            rows_total: None,
            at: Utc::now(),
        });
        bus.publish(&status()).await.unwrap();
        bus.publish(&progress).await.unwrap();
        for rx in [&mut a, &mut b] {
            let mut heard = Vec::new();
            while heard.len() < 2 {
                let event = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                    .await
                    .unwrap()
                    .unwrap();
                if event.ledger_id() != Some(LedgerId::from_i64(41)) {
                    heard.push(event);
                }
            }
            assert_eq!(
                heard,
                [status(), progress.clone()],
                "in order, to every subscriber"
            );
        }
        assert_eq!(
            serde_json::to_value(status()).unwrap(),
            json!({"event": "ledger.status", "ledgerId": "42", "merchantId": "m_1",
                   "status": "REJECTED", "stage": "DRAFT", "version": 2, "attemptCount": 3,
                   "errorCode": "FETCH_DATA_ERROR", "at": "2026-10-01T00:00:00Z"})
        );
        let wire = serde_json::to_value(&progress).unwrap();
        assert_eq!(wire["event"], "ledger.progress");
        assert_eq!(wire["rowsDone"], 10);
        assert!(wire["rowsTotal"].is_null());
    }

    #[tokio::test]
    async fn the_in_process_bus_meets_the_contract() {
        run_all(&super::InProcessBus::default()).await;
    }
}
