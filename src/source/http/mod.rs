//! The HTTP source adapter: `GET {base}/merchants/{merchantId}/entries?from=&to=&cursor=`
//! against an upstream API that speaks the source schema one page at a time, and
//! `GET {base}/merchants?cursor=&limit=` for the merchants it holds.
//!
//! - **Pages** are followed until `nextCursor` is null, each read as its body arrives
//!   ([`super::page`]): entries are handed to the consumer in batches through a bounded
//!   channel while the rest of the page is still on its way, so memory stays flat however
//!   long a page or the ledger is. [`Source::entries`] returns once the first page's header
//!   is read (it gives the opening balances; an unknown merchant or a refused token surfaces
//!   as an error of that call). A spawned task does the reading and stops as soon as the
//!   consumer drops the stream, aborting a request in flight.
//! - **Validation** uses one [`EntryValidator`] across all pages, so indices
//!   (`entries[1234]`), order and repeated ids span pages. Every page must name the
//!   requested merchant and carry the same merchant header and opening balances as the
//!   first page (a page that disagrees is refused); the opening balances reported are the
//!   first page's. The upstream is asked for exactly `[from, to)`: unlike the file adapter
//!   nothing is folded here, and an entry outside the window is a data error.
//! - **Merchant**: [`Source::merchant`] asks for the empty window `from = to = now` and
//!   reads the header of that single page, so no separate merchant endpoint is needed.
//! - **Merchant list** ([`listing`]): [`Source::list_merchants`] is one
//!   `GET {base}/merchants?[cursor=&]limit=` per page, read whole up to
//!   [`MAX_MERCHANT_PAGE_BYTES`] and validated; the page is returned as the upstream sent it
//!   (the limit is a hint to it), and a `nextCursor` equal to the cursor sent is refused.
//!   There, 404 is a refused request like any other 4xx.
//! - **Errors**: 404 is an unknown merchant; 401/403 mean the configured token was refused
//!   (unavailable: fixing the credentials and retrying the job helps); any other 4xx or a
//!   redirect is a refused request (invalid); 5xx, 408, 429, timeouts and broken
//!   connections are retried `max_retries` times with exponential backoff and jitter
//!   (`Retry-After` seconds honoured up to a cap), then reported unavailable. A body that
//!   breaks off is fetched again and read on after the entries already handed over. Each
//!   wait (connection, answer, every piece of the body) is bounded by the request timeout; a
//!   page as a whole is not, since its consumer sets the pace. A body that is not JSON is
//!   refused as invalid; an entry over [`MAX_ENTRY_BYTES`](super::page::MAX_ENTRY_BYTES) too.
//! - **Secrets**: the bearer token is only ever placed in the `Authorization` header
//!   (marked sensitive); no error or log line carries it, nor a URL (whose query holds
//!   merchant data such as the cursor). Redirects are not followed, so the token never
//!   travels to another host.

mod fetch;
mod listing;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Client;
use reqwest::header::HeaderValue;
use tokio::sync::{mpsc, oneshot};
use url::Url;

pub use self::listing::MAX_MERCHANT_PAGE_BYTES;

use self::fetch::{Failure, Resource, describe};
use super::batches::{Message, receive};
use super::page::{PageParser, PageReads, Progress, Sink};
use super::validate::{EntryValidator, Header};
use super::{EntryStream, MerchantPage, Source, SourceError, Window};
use crate::config::Secret;
use crate::domain::{Balance, Entry, Merchant, MerchantId};

/// Entries per batch handed to the consumer (a batch may be longer by the entries of one
/// piece of a body).
const BATCH: usize = 1024;
/// Batches in flight between the fetching task and the consumer (a page's end also ends a
/// batch: the next page is a round trip away).
const CHANNEL_BATCHES: usize = 2;

/// Tuning of the HTTP source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpSourceOptions {
    /// Limit of each wait on the upstream: for the connection, for the answer's head, and for
    /// each piece of its body (a page is read as it arrives, so the time the consumer takes
    /// with its entries does not count).
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
    /// A source reading `{base_url}/merchants/{merchantId}/entries` and
    /// `{base_url}/merchants`, with `token` sent as a bearer token when given. `base_url` may
    /// carry a path prefix (with or without a trailing slash) but no query.
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
            // No total timeout: a long page streams for as long as its consumer takes. Each
            // wait is bounded instead (fetch.rs).
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

    /// Reads the page at `cursor` into `sink`, fetching it again after a transient failure
    /// (or when its entries came before its header): `Ok(None)` when the sink stopped the
    /// reading, else the page's `nextCursor`.
    async fn read_page(
        &self,
        id: &MerchantId,
        window: Window,
        cursor: Option<&str>,
        validator: &mut EntryValidator,
        sink: &mut impl Flush,
    ) -> Result<Option<Option<String>>, SourceError> {
        let url = self.entries_url(id, window, cursor)?;
        let resource = Resource::Entries(id);
        let mut reads = PageReads::default();
        let mut retries = 0_u32;
        loop {
            match self.read_once(id, &url, &mut reads, validator, sink).await {
                Ok(ReadEnd::Stopped) => return Ok(None),
                Ok(ReadEnd::Ended { next_cursor, again }) => {
                    if !again {
                        return Ok(Some(next_cursor));
                    }
                }
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Transient { reason, after }) => {
                    tokio::select! {
                        // Nobody waits any more: no retry.
                        () = sink.closed() => return Ok(None),
                        waited = self.before_retry(resource, &mut retries, reason, after) => waited?,
                    }
                }
            }
        }
    }

    /// One request of a page, its body parsed as it arrives.
    async fn read_once(
        &self,
        id: &MerchantId,
        url: &Url,
        reads: &mut PageReads,
        validator: &mut EntryValidator,
        sink: &mut impl Flush,
    ) -> Result<ReadEnd, Failure> {
        let mut response = tokio::select! {
            // Nobody waits any more: no request left running.
            () = sink.closed() => return Ok(ReadEnd::Stopped),
            response = self.request(Resource::Entries(id), url) => response?,
        };
        let mut parser = PageParser::new(id.clone());
        reads.begin();
        loop {
            match reads
                .drain(&mut parser, validator, sink)
                .map_err(not_json)?
            {
                Progress::More => {}
                Progress::Stop => return Ok(ReadEnd::Stopped),
                Progress::End { next_cursor, again } => {
                    return Ok(ReadEnd::Ended { next_cursor, again });
                }
            }
            if !sink.flush().await {
                return Ok(ReadEnd::Stopped);
            }
            let chunk = tokio::select! {
                // The consumer went away: drop the request in flight, fetch nothing more.
                () = sink.closed() => return Ok(ReadEnd::Stopped),
                chunk = self.chunk(&mut response) => chunk?,
            };
            match chunk {
                Some(bytes) => parser.feed(&bytes),
                None => parser.finish(),
            }
        }
    }

    /// Reads every page from the first and hands their entries to `tx`; the first page's
    /// opening balances (or why there are none) go to `opening`.
    async fn follow(
        self,
        id: MerchantId,
        window: Window,
        opening: oneshot::Sender<Result<Vec<Balance>, SourceError>>,
        tx: mpsc::Sender<Message>,
    ) {
        let mut sink = Entries {
            window,
            first: None,
            opening: Some(opening),
            page_number: 1,
            batch: Vec::new(),
            tx,
        };
        let mut validator = EntryValidator::new();
        let read = self.pages(&id, window, &mut validator, &mut sink).await;
        // Read to the end: valid once the ids still pending are checked too.
        let read = match read {
            Ok(true) => validator.finish().map(|()| true),
            Ok(false) => Ok(false),
            Err(e) => Err(validator.first_error(e)),
        };
        match read {
            Ok(true) => {
                if sink.flush_all().await {
                    let _ = sink.tx.send(Message::End).await;
                }
            }
            Ok(false) => {}
            Err(e) => match sink.opening.take() {
                Some(opening) => {
                    let _ = opening.send(Err(e));
                }
                None => {
                    // What was read before the failure is handed over first, in order.
                    if sink.flush_all().await {
                        let _ = sink.tx.send(Message::Failed(e)).await;
                    }
                }
            },
        }
    }

    /// The pages, followed by cursor: `Ok(false)` when the consumer went away.
    async fn pages(
        &self,
        id: &MerchantId,
        window: Window,
        validator: &mut EntryValidator,
        sink: &mut Entries,
    ) -> Result<bool, SourceError> {
        let mut cursor: Option<String> = None;
        // Every cursor followed, as a 64-bit hash (8 bytes a page at most, 800 KB at the
        // default page limit): an upstream whose cursors cycle (A → B → A) would otherwise
        // be followed forever.
        let mut seen: HashSet<u64> = HashSet::new();
        loop {
            let Some(next) = self
                .read_page(id, window, cursor.as_deref(), validator, sink)
                .await?
            else {
                return Ok(false);
            };
            let Some(next) = next else {
                return Ok(true);
            };
            if !sink.flush_all().await {
                return Ok(false);
            }
            let page_number = sink.page_number;
            if cursor.as_deref() == Some(next.as_str()) {
                return Err(SourceError::Invalid(format!(
                    "nextCursor: page {page_number} points to itself"
                )));
            }
            if page_number + 1 > self.options.max_pages {
                return Err(SourceError::Invalid(format!(
                    "nextCursor: the source has more than {} pages (APP_ENV_SOURCE_MAX_PAGES)",
                    self.options.max_pages
                )));
            }
            if !seen.insert(cursor_hash(&next)) {
                return Err(SourceError::Invalid(format!(
                    "nextCursor: page {page_number} returns to the cursor of an earlier page (a cycle)"
                )));
            }
            sink.page_number += 1;
            cursor = Some(next);
        }
    }
}

/// How one request of a page ended.
enum ReadEnd {
    /// Nobody waits any more, or only the header was wanted.
    Stopped,
    /// The page ended; `again`: read it once more (its entries came before its header).
    Ended {
        next_cursor: Option<String>,
        again: bool,
    },
}

/// A body that is not JSON at all: say it is the answer that is broken, not a field of it.
fn not_json(e: SourceError) -> SourceError {
    match e {
        SourceError::Invalid(message) if message.starts_with("invalid JSON") => {
            SourceError::Invalid(format!(
                "the source answered with a body that is not JSON: {message}"
            ))
        }
        other => other,
    }
}

/// A [`Sink`] that hands what it gathered over asynchronously, between pieces of a body.
trait Flush: Sink + Send {
    /// Hands full batches over; `false` when nobody waits any more.
    async fn flush(&mut self) -> bool;
    /// Resolves when nobody waits any more.
    async fn closed(&self);
}

/// Entries of a ledger's pages, on their way to the consumer.
struct Entries {
    window: Window,
    /// The first page's header: every later page must agree with it.
    first: Option<Header>,
    opening: Option<oneshot::Sender<Result<Vec<Balance>, SourceError>>>,
    page_number: u64,
    batch: Vec<Entry>,
    tx: mpsc::Sender<Message>,
}

impl Entries {
    /// Hands over everything gathered; `false` when nobody waits any more.
    async fn flush_all(&mut self) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        let batch = std::mem::take(&mut self.batch);
        self.tx.send(Message::Batch(batch)).await.is_ok()
    }
}

impl Sink for Entries {
    fn header(&mut self, header: Header) -> Result<bool, SourceError> {
        match &self.first {
            Some(first) => consistent(first, &header, self.page_number)?,
            None => {
                if let Some(opening) = self.opening.take() {
                    // A receiver gone is noticed at the next hand-over.
                    let _ = opening.send(Ok(header.opening_balances.clone()));
                }
                self.first = Some(header);
            }
        }
        Ok(true)
    }

    fn entry(&mut self, entry: Entry, index: u64) -> Result<bool, SourceError> {
        if entry.booked_at < self.window.from || entry.booked_at >= self.window.to {
            // The value itself is merchant data and stays out of the message.
            return Err(SourceError::Invalid(format!(
                "entries[{index}].bookedAt: outside the requested window"
            )));
        }
        self.batch.push(entry);
        Ok(true)
    }
}

impl Flush for Entries {
    async fn flush(&mut self) -> bool {
        if self.batch.len() < BATCH {
            return true;
        }
        self.flush_all().await
    }

    async fn closed(&self) {
        self.tx.closed().await;
    }
}

/// Only the header of a page is wanted.
#[derive(Default)]
struct HeaderOnly(Option<Header>);

impl Sink for HeaderOnly {
    fn header(&mut self, header: Header) -> Result<bool, SourceError> {
        self.0 = Some(header);
        Ok(false)
    }

    fn entry(&mut self, _: Entry, _: u64) -> Result<bool, SourceError> {
        Ok(false)
    }
}

impl Flush for HeaderOnly {
    async fn flush(&mut self) -> bool {
        true
    }

    async fn closed(&self) {
        std::future::pending().await
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
fn consistent(first: &Header, page: &Header, page_number: u64) -> Result<(), SourceError> {
    if page.merchant != first.merchant {
        return Err(SourceError::Invalid(format!(
            "merchant: page {page_number} differs from the first page"
        )));
    }
    if page.opening_balances != first.opening_balances {
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
        let mut header = HeaderOnly::default();
        self.read_page(id, empty, None, &mut EntryValidator::new(), &mut header)
            .await?;
        match header.0 {
            Some(header) => Ok(header.merchant),
            // The read stops at the header or fails: a page without one is refused.
            None => Err(SourceError::Invalid(
                "merchant: missing, expected object".to_owned(),
            )),
        }
    }

    async fn entries(&self, id: &MerchantId, window: Window) -> Result<EntryStream, SourceError> {
        let (opening_tx, opening_rx) = oneshot::channel();
        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
        // Not awaited: the task feeds the stream and ends on the last page, on an error, or
        // when the consumer drops the stream.
        let _fetcher = tokio::spawn(self.clone().follow(id.clone(), window, opening_tx, tx));
        let opening_balances = opening_rx.await.map_err(|_| {
            SourceError::Unavailable("the page fetcher stopped before the first page".to_owned())
        })??;
        let entries = receive(rx, "the page fetcher stopped unexpectedly");
        Ok(EntryStream {
            opening_balances,
            entries,
        })
    }

    async fn list_merchants(
        &self,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<MerchantPage, SourceError> {
        self.merchant_page(cursor, limit.max(1)).await
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
