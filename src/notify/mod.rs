//! Status and progress events: the bus workers publish to and clients (WebSocket, later)
//! subscribe to. Best effort by design: the store is the truth, an event is a hint.
//! Adapters: [`InProcessBus`] (tokio broadcast).

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
const CAPACITY: usize = 4096;

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
            tracing::warn!(
                ledgerId = %event.ledger_id(),
                merchantId = %event.merchant_id(),
                error = %e,
                "[notifyJobStatus] emitter not ready"
            );
        }
    }
}
