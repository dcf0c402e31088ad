//! The source port: a merchant and its booked entries for a window, as a validated stream
//! in ascending (`bookedAt`, `id`) order, and the merchants the source holds, page by page.
//! Adapters: [`file`] (a directory of JSON / NDJSON files) and [`http`] (an upstream API
//! paged by cursor). Every adapter validates with [`validate::EntryValidator`], so error
//! messages (`entries[17].amount: expected integer`) are the same whatever the backend.

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

/// One page of the merchants a source lists, in a stable order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerchantPage {
    /// The merchants of this page (at most the limit asked for, unless an upstream sends
    /// more: see [`Source::list_merchants`]). No merchant appears twice in a page.
    pub merchants: Vec<MerchantId>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// The source port.
#[async_trait]
pub trait Source: Send + Sync {
    /// The merchant's header (name, time zone).
    async fn merchant(&self, id: &MerchantId) -> Result<Merchant, SourceError>;
    /// Opening balances at `window.from` and the entries inside the window.
    async fn entries(&self, id: &MerchantId, window: Window) -> Result<EntryStream, SourceError>;
    /// A page of the merchants the source holds, after `cursor` (`None`: from the start), at
    /// most `limit` (≥ 1) of them. Follow [`MerchantPage::next_cursor`] until it is `None` to
    /// list every merchant once; cursors are opaque and only valid for the source that gave
    /// them. A page may be empty (the last one, or a cursor past the end).
    ///
    /// - The file source lists the merchants of the directory's files, sorted by id, exactly
    ///   `limit` a page but the last (a `limit` of 0 is taken as 1); its cursor is the last id
    ///   of the page, anything that is not a merchant id is refused as
    ///   [`SourceError::Invalid`].
    /// - The HTTP source passes `limit` to the upstream as a hint and returns each page as the
    ///   upstream sent it, longer ones included (cutting one short would lose the merchants
    ///   between its end and the upstream's cursor); the order is the upstream's.
    ///
    /// Memory is bounded by the page, never by the number of merchants.
    async fn list_merchants(
        &self,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<MerchantPage, SourceError>;
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
