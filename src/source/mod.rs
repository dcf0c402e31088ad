//! The source port: a merchant and its booked entries for a window, as a validated stream
//! in ascending (`bookedAt`, `id`) order. Adapters: [`file`] (a directory of JSON / NDJSON
//! files) and [`http`] (an upstream API paged by cursor). Every adapter validates with
//! [`validate::EntryValidator`], so error messages (`entries[17].amount: expected integer`)
//! are the same whatever the backend.

#[cfg(test)]
pub mod contract;
pub mod file;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixture;
pub mod http;
pub mod validate;

mod batches;
mod page;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;

use crate::domain::{Balance, Entry, Merchant, MerchantId};

/// Errors of a source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// The source has no such merchant.
    #[error("unknown merchant {0}")]
    UnknownMerchant(String),
    /// The data violates the schema; the message names the field path.
    #[error("{0}")]
    Invalid(String),
    /// The backend failed (I/O, HTTP, timeout): a retry may succeed.
    #[error("source unavailable: {0}")]
    Unavailable(String),
}

/// The half-open window `[from, to)` of booked entries wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Inclusive start.
    pub from: DateTime<Utc>,
    /// Exclusive end.
    pub to: DateTime<Utc>,
}

/// Batches of validated entries; a batch bounds channel overhead on large ledgers.
pub type EntryBatches = BoxStream<'static, Result<Vec<Entry>, SourceError>>;

/// Entries of a window, after their opening balances.
pub struct EntryStream {
    /// Balances at `window.from`, one per currency that has one.
    pub opening_balances: Vec<Balance>,
    /// The entries inside the window, ascending.
    pub entries: EntryBatches,
}

/// The source port.
#[async_trait]
pub trait Source: Send + Sync {
    /// The merchant's header (name, time zone).
    async fn merchant(&self, id: &MerchantId) -> Result<Merchant, SourceError>;
    /// Opening balances at `window.from` and the entries inside the window.
    async fn entries(&self, id: &MerchantId, window: Window) -> Result<EntryStream, SourceError>;
    /// Answers when the backend answers.
    async fn ready(&self) -> Result<(), SourceError>;
}

/// Opens the source `settings` name: the upstream HTTP API when a URL is set, else the
/// directory of files.
pub fn open(
    settings: &crate::config::SourceSettings,
) -> anyhow::Result<std::sync::Arc<dyn Source>> {
    Ok(match &settings.url {
        None => std::sync::Arc::new(file::FileSource::new(settings.dir.clone())),
        Some(url) => std::sync::Arc::new(
            http::HttpSource::new(
                url.0.clone(),
                settings.token.clone(),
                http::HttpSourceOptions {
                    max_pages: settings.max_pages,
                    ..http::HttpSourceOptions::default()
                },
            )
            .map_err(|e| anyhow::anyhow!("APP_ENV_SOURCE_URL: {e}"))?,
        ),
    })
}

#[async_trait]
impl crate::ready::Ready for dyn Source {
    async fn ready(&self) -> Result<(), String> {
        Source::ready(self).await.map_err(|e| e.to_string())
    }
}
