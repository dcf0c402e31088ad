//! Readiness: the one question `/readyz` asks each backend of this process. Every port
//! answers it (the store by a ping, the queue, storage, event bus and source by their own
//! check, the token verifier by the age of its keys); `/readyz` only runs the answers.

use async_trait::async_trait;

/// A backend that can say whether it serves now.
#[async_trait]
pub trait Ready: Send + Sync {
    /// `Ok` when the backend answers; otherwise why not (logged, never served).
    async fn ready(&self) -> Result<(), String>;
}
