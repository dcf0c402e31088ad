//! The HTTP source adapter: `GET {base}/merchants/{merchantId}/entries?from=&to=&cursor=`
//! against an upstream API that speaks the source schema one page at a time.
//!
//! - **Pages** are followed until `nextCursor` is null. The first page is fetched inside
//!   [`Source::entries`] (its header gives the opening balances and an unknown merchant or
//!   a refused token surfaces as an error of that call); the rest are fetched by a spawned
//!   task that hands each page's entries to the consumer through a bounded channel, so at
//!   most a page or two are in memory however long the ledger. The task stops as soon as
//!   the consumer drops the stream, aborting a request in flight.
//! - **Validation** uses one [`EntryValidator`] across all pages, so indices
//!   (`entries[1234]`), order and repeated ids span pages. Every page must name the
//!   requested merchant and carry the same merchant header and opening balances as the
//!   first page (a page that disagrees is refused); the opening balances reported are the
//!   first page's. The upstream is asked for exactly `[from, to)`: unlike the file adapter
//!   nothing is folded here, and an entry outside the window is a data error.
//! - **Merchant**: [`Source::merchant`] asks for the empty window `from = to = now` and
//!   reads the header of that single page, so no separate merchant endpoint is needed.
//! - **Errors**: 404 is an unknown merchant; 401/403 mean the configured token was refused
//!   (unavailable: fixing the credentials and retrying the job helps); any other 4xx or a
//!   redirect is a refused request (invalid); 5xx, 408, 429, timeouts and broken
//!   connections are retried `max_retries` times with exponential backoff and jitter
//!   (`Retry-After` seconds honoured up to a cap), then reported unavailable. A body over
//!   [`MAX_PAGE_BYTES`] or one that is not JSON is refused as invalid.
//! - **Secrets**: the bearer token is only ever placed in the `Authorization` header
//!   (marked sensitive); no error or log line carries it, nor a URL (whose query holds
//!   merchant data such as the cursor). Redirects are not followed, so the token never
//!   travels to another host.

mod fetch;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Client;
use reqwest::header::HeaderValue;
use tokio::sync::mpsc;
use url::Url;

use self::fetch::describe;
use super::batches::{Message, receive};
use super::validate::{EntryValidator, Header, Page, parse_page};
use super::{EntryStream, Source, SourceError, Window};
use crate::config::Secret;
use crate::domain::{Merchant, MerchantId};

/// Largest page body accepted: one bad (or hostile) page must not exhaust memory.
pub const MAX_PAGE_BYTES: usize = 64 << 20;
/// Pages buffered between the fetching task and the consumer. With the page being fetched
/// this keeps memory at about two pages.
const CHANNEL_PAGES: usize = 1;

/// Tuning of the HTTP source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpSourceOptions {
    /// Limit of one request, from sending it to the last byte of the body.
    pub request_timeout: Duration,
    /// Retries of a transient failure (5xx, 408, 429, timeout, broken connection) per page;
    /// a page is requested at most `max_retries + 1` times.
    pub max_retries: u32,
    /// Delay before the first retry; doubled on each further one (plus jitter), capped.
    pub initial_backoff: Duration,
    /// Most pages followed for one ledger (`APP_ENV_SOURCE_MAX_PAGES`): an upstream that
    /// never stops paging must not hold a job forever.
    pub max_pages: u64,
}

impl Default for HttpSourceOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            max_retries: 3,
            initial_backoff: Duration::from_millis(200),
            max_pages: 100_000,
        }
    }
}

/// Reads merchants from an upstream HTTP API.
#[derive(Clone)]
pub struct HttpSource {
    /// Shares its connection pool between clones.
    client: Client,
    base: Url,
    /// `Bearer …`, marked sensitive.
    auth: Option<HeaderValue>,
    options: HttpSourceOptions,
    /// [`MAX_PAGE_BYTES`] except in tests, which cannot afford 64 MiB bodies.
    max_page_bytes: usize,
}

impl fmt::Debug for HttpSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hand-written so the token can never appear, whatever `HeaderValue` prints.
        f.debug_struct("HttpSource")
            .field("base", &self.base.as_str())
            .field("token", &self.auth.as_ref().map(|_| "***"))
            .field("options", &self.options)
            .finish()
    }
}

impl HttpSource {
    /// A source reading `{base_url}/merchants/{merchantId}/entries`, with `token` sent as a
    /// bearer token when given. `base_url` may carry a path prefix (with or without a
    /// trailing slash) but no query.
    pub fn new(
        base_url: Url,
        token: Option<Secret>,
        options: HttpSourceOptions,
    ) -> Result<Self, SourceError> {
        if !matches!(base_url.scheme(), "http" | "https") || base_url.cannot_be_a_base() {
            return Err(SourceError::Invalid(format!(
                "the source URL must be an http:// or https:// URL (scheme {})",
                base_url.scheme()
            )));
        }
        if base_url.query().is_some() {
            return Err(SourceError::Invalid(
                "the source URL must not carry a query (from, to and cursor are added per request)"
                    .to_owned(),
            ));
        }
        if options.request_timeout.is_zero() {
            return Err(SourceError::Invalid(
                "the source request timeout must be positive".to_owned(),
            ));
        }
        let auth = match token {
            Some(token) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                    .map_err(|_| {
                        SourceError::Invalid(
                            "the source token is not a valid HTTP header value".to_owned(),
                        )
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let client = Client::builder()
            .timeout(options.request_timeout)
            .connect_timeout(options.request_timeout)
            // A redirect would carry the request (and, to the same host, the token) to a
            // place nobody configured; the upstream is expected to answer directly.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ledger/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                SourceError::Unavailable(format!("cannot build the HTTP client: {}", describe(&e)))
            })?;
        Ok(Self {
            client,
            base: base_url,
            auth,
            options,
            max_page_bytes: MAX_PAGE_BYTES,
        })
    }

    /// `{base}/merchants/{id}/entries?from=&to=[&cursor=]`, every part encoded.
    fn entries_url(
        &self,
        id: &MerchantId,
        window: Window,
        cursor: Option<&str>,
    ) -> Result<Url, SourceError> {
        let mut url = self.base.clone();
        url.set_fragment(None);
        url.path_segments_mut()
            .map_err(|()| SourceError::Invalid("the source URL cannot take a path".to_owned()))?
            // `pop_if_empty` drops the empty segment of a trailing slash, so `…/v1` and
            // `…/v1/` both lead to `…/v1/merchants/…`.
            .pop_if_empty()
            .extend(["merchants", id.as_str(), "entries"]);
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("from", &rfc3339(window.from))
                .append_pair("to", &rfc3339(window.to));
            if let Some(cursor) = cursor {
                query.append_pair("cursor", cursor);
            }
        }
        Ok(url)
    }

    /// One page, fetched (with retries), parsed, and checked against the window.
    async fn page(
        &self,
        id: &MerchantId,
        window: Window,
        cursor: Option<&str>,
        validator: &mut EntryValidator,
    ) -> Result<Page, SourceError> {
        let url = self.entries_url(id, window, cursor)?;
        let body = self.fetch(id, &url).await?;
        let first_index = validator.count();
        let page = parse_page(&body, id, validator).map_err(|e| match e {
            // The whole body failed to parse: say it is the answer that is broken, not a
            // field of it.
            SourceError::Invalid(message) if message.starts_with("invalid JSON") => {
                SourceError::Invalid(format!(
                    "the source answered with a body that is not JSON: {message}"
                ))
            }
            other => other,
        })?;
        for (offset, entry) in page.entries.iter().enumerate() {
            if entry.booked_at < window.from || entry.booked_at >= window.to {
                // The value itself is merchant data and stays out of the message.
                return Err(SourceError::Invalid(format!(
                    "entries[{}].bookedAt: outside the requested window",
                    first_index + offset as u64
                )));
            }
        }
        Ok(page)
    }

    /// Fetches the pages after the first and sends each page's entries to `tx`.
    async fn follow(
        self,
        id: MerchantId,
        window: Window,
        first: Page,
        mut validator: EntryValidator,
        tx: mpsc::Sender<Message>,
    ) {
        let header = first.header;
        let mut cursor = first.next_cursor;
        let mut entries = first.entries;
        let mut page_number = 1_u64;
        // Every cursor followed, as a 64-bit hash (8 bytes a page at most, 800 KB at the
        // default page limit): an upstream whose cursors cycle (A → B → A) would otherwise
        // be followed forever.
        let mut seen: HashSet<u64> = HashSet::new();
        loop {
            // An empty page is legal (a filtered upstream may have one); it is just not sent.
            if !entries.is_empty() && tx.send(Message::Batch(entries)).await.is_err() {
                return;
            }
            let Some(current) = cursor else {
                let _ = tx.send(Message::End).await;
                return;
            };
            page_number += 1;
            let refused = if page_number > self.options.max_pages {
                Some(format!(
                    "nextCursor: the source has more than {} pages (APP_ENV_SOURCE_MAX_PAGES)",
                    self.options.max_pages
                ))
            } else if !seen.insert(cursor_hash(&current)) {
                Some(format!(
                    "nextCursor: page {} returns to the cursor of an earlier page (a cycle)",
                    page_number - 1
                ))
            } else {
                None
            };
            if let Some(message) = refused {
                let _ = tx
                    .send(Message::Failed(SourceError::Invalid(message)))
                    .await;
                return;
            }
            let next = tokio::select! {
                // The consumer went away: drop the request in flight, fetch nothing more.
                () = tx.closed() => return,
                page = self.page(&id, window, Some(&current), &mut validator) => page,
            };
            let checked = next.and_then(|page| {
                consistent(&header, &page, page_number)?;
                if page.next_cursor.as_deref() == Some(current.as_str()) {
                    return Err(SourceError::Invalid(format!(
                        "nextCursor: page {page_number} points to itself"
                    )));
                }
                Ok(page)
            });
            match checked {
                Ok(page) => {
                    cursor = page.next_cursor;
                    entries = page.entries;
                }
                Err(e) => {
                    let _ = tx.send(Message::Failed(e)).await;
                    return;
                }
            }
        }
    }
}

fn cursor_hash(cursor: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    cursor.hash(&mut hasher);
    hasher.finish()
}

/// A later page must describe the same merchant with the same opening balances as the
/// first: a mix of two snapshots would print a statement no upstream state ever had.
fn consistent(first: &Header, page: &Page, page_number: u64) -> Result<(), SourceError> {
    if page.header.merchant != first.merchant {
        return Err(SourceError::Invalid(format!(
            "merchant: page {page_number} differs from the first page"
        )));
    }
    if page.header.opening_balances != first.opening_balances {
        return Err(SourceError::Invalid(format!(
            "openingBalances: page {page_number} differs from the first page"
        )));
    }
    Ok(())
}

#[async_trait]
impl Source for HttpSource {
    async fn merchant(&self, id: &MerchantId) -> Result<Merchant, SourceError> {
        let now = Utc::now();
        let empty = Window { from: now, to: now };
        let page = self
            .page(id, empty, None, &mut EntryValidator::new())
            .await?;
        Ok(page.header.merchant)
    }

    async fn entries(&self, id: &MerchantId, window: Window) -> Result<EntryStream, SourceError> {
        let mut validator = EntryValidator::new();
        let first = self.page(id, window, None, &mut validator).await?;
        let opening_balances = first.header.opening_balances.clone();
        let (tx, rx) = mpsc::channel(CHANNEL_PAGES);
        // Not awaited: the task feeds the stream and ends on the last page, on an error, or
        // when the consumer drops the stream.
        let _fetcher = tokio::spawn(
            self.clone()
                .follow(id.clone(), window, first, validator, tx),
        );
        let entries = receive(rx, "the page fetcher stopped unexpectedly");
        Ok(EntryStream {
            opening_balances,
            entries,
        })
    }

    async fn ready(&self) -> Result<(), SourceError> {
        // Reachability only: any answer below 500 (a 401 or 404 of the bare base URL
        // included) proves the upstream is up; entries() reports what it thinks of us.
        let response = self
            .client
            .head(self.base.clone())
            .send()
            .await
            .map_err(|e| SourceError::Unavailable(describe(&e)))?;
        if response.status().is_server_error() {
            return Err(SourceError::Unavailable(format!(
                "the source answered HTTP {}",
                response.status().as_u16()
            )));
        }
        Ok(())
    }
}

/// RFC 3339 in UTC with `Z`, fractions only when present.
fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}
