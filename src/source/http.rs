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

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use rand::Rng;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue, RETRY_AFTER};
use reqwest::{Client, Response, StatusCode};
use tokio::sync::mpsc;
use url::Url;

use super::batches::{Message, receive};
use super::validate::{EntryValidator, Header, Page, parse_page};
use super::{EntryStream, Source, SourceError, Window};
use crate::config::Secret;
use crate::domain::{Merchant, MerchantId};

/// Largest page body accepted: one bad (or hostile) page must not exhaust memory.
pub const MAX_PAGE_BYTES: usize = 64 << 20;
/// Upper bound of one computed backoff delay, whatever the attempt number.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Upper bound of a `Retry-After` delay: an upstream asking for an hour must not park a job.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
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

/// The outcome of one request that did not yield a body.
enum Failure {
    /// Worth another attempt; `after` is the upstream's `Retry-After`.
    Transient {
        reason: String,
        after: Option<Duration>,
    },
    /// Final.
    Fatal(SourceError),
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

    /// The body of a successful answer to `url`, retrying transient failures.
    async fn fetch(&self, id: &MerchantId, url: &Url) -> Result<Vec<u8>, SourceError> {
        let mut retries = 0_u32;
        loop {
            // The client's timeout covers the body as well; this outer one also bounds the
            // chunked body loop below against an upstream trickling bytes forever.
            let outcome =
                match tokio::time::timeout(self.options.request_timeout, self.attempt(id, url))
                    .await
                {
                    Ok(outcome) => outcome,
                    Err(_) => Err(Failure::Transient {
                        reason: format!(
                            "no complete answer within {} ms",
                            self.options.request_timeout.as_millis()
                        ),
                        after: None,
                    }),
                };
            let (reason, after) = match outcome {
                Ok(body) => return Ok(body),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Transient { reason, after }) => (reason, after),
            };
            if retries >= self.options.max_retries {
                return Err(SourceError::Unavailable(format!(
                    "{reason} (gave up after {} attempts)",
                    retries + 1
                )));
            }
            let delay = match after {
                Some(after) => after.min(MAX_RETRY_AFTER),
                None => backoff(self.options.initial_backoff, retries),
            };
            retries += 1;
            tracing::warn!(
                merchantId = %id,
                retry = retries,
                of = self.options.max_retries,
                delay_ms = delay.as_millis() as u64,
                reason = %reason,
                "[HttpSource] transient failure, retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// One request: the body of a 2xx answer, or why there is none.
    async fn attempt(&self, id: &MerchantId, url: &Url) -> Result<Vec<u8>, Failure> {
        let mut request = self
            .client
            .get(url.clone())
            .header(ACCEPT, "application/json");
        if let Some(auth) = &self.auth {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        let response = request.send().await.map_err(|e| Failure::Transient {
            reason: describe(&e),
            after: None,
        })?;
        let status = response.status();
        let code = status.as_u16();
        if status.is_success() {
            return self.read_body(response).await;
        }
        Err(match status {
            StatusCode::NOT_FOUND => Failure::Fatal(SourceError::UnknownMerchant(id.to_string())),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Failure::Fatal(SourceError::Unavailable(format!(
                    "the source refused the credentials (HTTP {code})"
                )))
            }
            StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT => Failure::Transient {
                reason: format!("the source answered HTTP {code}"),
                after: retry_after(&response),
            },
            s if s.is_server_error() => Failure::Transient {
                reason: format!("the source answered HTTP {code}"),
                after: retry_after(&response),
            },
            s if s.is_redirection() => Failure::Fatal(SourceError::Invalid(format!(
                "the source answered with a redirect (HTTP {code}), which is not followed"
            ))),
            _ => Failure::Fatal(SourceError::Invalid(format!(
                "the source refused the request (HTTP {code})"
            ))),
        })
    }

    /// The body, at most `max_page_bytes`, read chunk by chunk so an oversized one is
    /// refused before it is held.
    async fn read_body(&self, mut response: Response) -> Result<Vec<u8>, Failure> {
        let max = self.max_page_bytes;
        let too_large = || {
            Failure::Fatal(SourceError::Invalid(format!(
                "the source answered with a page larger than {max} bytes"
            )))
        };
        let announced = response.content_length().unwrap_or(0);
        if announced > max as u64 {
            return Err(too_large());
        }
        let mut body = Vec::with_capacity(announced as usize);
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > max {
                        return Err(too_large());
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body),
                Err(e) => {
                    return Err(Failure::Transient {
                        reason: format!("the answer broke off: {}", describe(&e)),
                        after: None,
                    });
                }
            }
        }
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

/// `initial * 2^retry`, capped, with "equal jitter" (a random point in the upper half) so
/// many workers failing together do not retry in lockstep.
fn backoff(initial: Duration, retry: u32) -> Duration {
    let full = initial
        .saturating_mul(1_u32.checked_shl(retry).unwrap_or(u32::MAX))
        .min(MAX_BACKOFF);
    let half = full / 2;
    let jitter_ms = rand::thread_rng().gen_range(0..=half.as_millis() as u64);
    half + Duration::from_millis(jitter_ms)
}

/// `Retry-After` in seconds; the HTTP-date form is rare from APIs and falls back to backoff.
fn retry_after(response: &Response) -> Option<Duration> {
    let value = response.headers().get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// A reqwest error without its URL (whose query holds the cursor and window), as the kind of
/// failure and its causes.
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the body could not be read"
    } else {
        "the request failed"
    };
    let mut message = kind.to_owned();
    let mut cause = std::error::Error::source(e);
    while let Some(inner) = cause {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        cause = inner.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    use async_trait::async_trait;
    use axum::Router;
    use axum::extract::{Path, RawQuery, State};
    use axum::http::{HeaderMap, StatusCode as AxumStatus, header};
    use axum::response::{IntoResponse, Response as AxumResponse};
    use axum::routing::get;
    use futures::StreamExt;

    use super::*;
    use crate::source::contract::{
        self, Dataset, Harness, collect, entry_json, mid, window,
    };

    /// A scripted answer that replaces (or delays) the normal one for one request.
    #[derive(Clone)]
    enum Reply {
        /// This status, with this `Retry-After`, and an empty body.
        Status(u16, Option<&'static str>),
        /// Wait, then answer normally.
        Sleep(Duration),
        /// This 200 body verbatim.
        Body(String),
    }

    /// The fake upstream's state: datasets from memory, served in pages of `page_size`.
    ///
    /// Where the file and HTTP adapters legitimately differ: the file adapter folds entries
    /// before the window into the opening balances itself, while the HTTP adapter asks the
    /// upstream for exactly `[from, to)`. This fake does that folding server-side (as a real
    /// upstream would), so the very same contract suite holds for both adapters.
    struct Upstream {
        page_size: usize,
        sets: Mutex<Vec<Dataset>>,
        /// Required `Authorization` value; a request without it gets 401.
        token: Option<String>,
        /// Answers of the next requests, in order; then `forever`, then normal service.
        script: Mutex<VecDeque<Reply>>,
        forever: Option<Reply>,
        /// Serve every entry whatever the window (a misbehaving upstream).
        no_cut: bool,
        /// `entries` requests received.
        requests: AtomicUsize,
        /// Raw query strings received, in order.
        queries: Mutex<Vec<String>>,
        /// Pages numbered from 2 on get this opening balance instead (a torn snapshot).
        later_opening: Option<String>,
    }

    impl Upstream {
        fn new(page_size: usize) -> Self {
            Self {
                page_size,
                sets: Mutex::new(Vec::new()),
                token: None,
                script: Mutex::new(VecDeque::new()),
                forever: None,
                no_cut: false,
                requests: AtomicUsize::new(0),
                queries: Mutex::new(Vec::new()),
                later_opening: None,
            }
        }

        fn script(self, replies: impl IntoIterator<Item = Reply>) -> Self {
            self.script.lock().unwrap().extend(replies);
            self
        }

        async fn start(self) -> Fake {
            let state = Arc::new(self);
            let app = Router::new()
                .route("/", get(|| async { "fake upstream" }))
                .route("/{set}/merchants/{id}/entries", get(serve))
                .with_state(state.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = tokio::spawn(async move {
                axum::serve(listener, app).await.unwrap();
            });
            Fake {
                addr,
                state,
                server,
            }
        }
    }

    struct Fake {
        addr: SocketAddr,
        state: Arc<Upstream>,
        server: tokio::task::JoinHandle<()>,
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            self.server.abort();
        }
    }

    impl Fake {
        /// Registers `data`; the base URL serving it (alternately with a trailing slash, so
        /// both spellings of a base path are exercised).
        fn add(&self, data: &Dataset) -> Url {
            let mut sets = self.state.sets.lock().unwrap();
            sets.push(data.clone());
            let n = sets.len() - 1;
            let slash = if n.is_multiple_of(2) { "" } else { "/" };
            Url::parse(&format!("http://{}/{n}{slash}", self.addr)).unwrap()
        }

        fn source(
            &self,
            data: &Dataset,
            token: Option<&str>,
            options: HttpSourceOptions,
        ) -> HttpSource {
            HttpSource::new(self.add(data), token.map(Secret::new), options).unwrap()
        }

        fn requests(&self) -> usize {
            self.state.requests.load(Ordering::SeqCst)
        }
    }

    fn fast() -> HttpSourceOptions {
        HttpSourceOptions {
            request_timeout: Duration::from_secs(5),
            max_retries: 3,
            initial_backoff: Duration::from_millis(1),
            max_pages: 100_000,
        }
    }

    async fn serve(
        State(up): State<Arc<Upstream>>,
        Path((set, id)): Path<(usize, String)>,
        RawQuery(query): RawQuery,
        headers: HeaderMap,
    ) -> AxumResponse {
        up.requests.fetch_add(1, Ordering::SeqCst);
        let query = query.unwrap_or_default();
        up.queries.lock().unwrap().push(query.clone());
        let scripted = up.script.lock().unwrap().pop_front();
        match scripted.or_else(|| up.forever.clone()) {
            Some(Reply::Status(code, retry_after)) => {
                let mut response = AxumStatus::from_u16(code).unwrap().into_response();
                if let Some(after) = retry_after {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, after.parse().unwrap());
                }
                return response;
            }
            Some(Reply::Sleep(pause)) => tokio::time::sleep(pause).await,
            Some(Reply::Body(body)) => return body.into_response(),
            None => {}
        }
        if let Some(token) = &up.token {
            let sent = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            if sent != Some(token.as_str()) {
                return AxumStatus::UNAUTHORIZED.into_response();
            }
        }
        let data = match up.sets.lock().unwrap().get(set) {
            Some(data) if data.merchant_id == id => data.clone(),
            _ => return AxumStatus::NOT_FOUND.into_response(),
        };
        let mut from = None;
        let mut to = None;
        let mut cursor = None;
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "from" => from = Some(value.parse::<DateTime<Utc>>().unwrap()),
                "to" => to = Some(value.parse::<DateTime<Utc>>().unwrap()),
                "cursor" => cursor = Some(value.into_owned()),
                _ => return AxumStatus::BAD_REQUEST.into_response(),
            }
        }
        let (Some(from), Some(to)) = (from, to) else {
            return AxumStatus::BAD_REQUEST.into_response();
        };
        let (mut data, entries) = cut(data, from, to, up.no_cut);
        let offset = match cursor {
            None => 0,
            Some(c) => match c.strip_prefix("c").and_then(|n| n.parse::<usize>().ok()) {
                Some(n) => n,
                None => return AxumStatus::BAD_REQUEST.into_response(),
            },
        };
        if let Some(other) = up.later_opening.as_ref().filter(|_| offset > 0) {
            data.opening = vec![other.clone()];
        }
        let end = (offset + up.page_size).min(entries.len());
        let next = if end < entries.len() {
            format!("\"c{end}\"")
        } else {
            "null".to_owned()
        };
        let header = data.header_json();
        let head = header.strip_suffix('}').unwrap();
        let body = format!(
            "{head},\"entries\":[{}],\"nextCursor\":{next}}}",
            entries[offset.min(end)..end].join(",")
        );
        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
    }

    /// The entries of `[from, to)`, with the ones before `from` folded into the opening
    /// balances (server-side, see [`Upstream`]). An entry whose `bookedAt` cannot be read is
    /// passed through for the client to refuse.
    fn cut(
        mut data: Dataset,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        no_cut: bool,
    ) -> (Dataset, Vec<String>) {
        if no_cut {
            let entries = std::mem::take(&mut data.entries);
            return (data, entries);
        }
        let mut opening: Option<Vec<(String, i64)>> = None;
        let mut kept = Vec::new();
        for raw in &data.entries {
            let value = serde_json::from_str::<serde_json::Value>(raw).ok();
            let at = value
                .as_ref()
                .and_then(|v| v.get("bookedAt")?.as_str()?.parse::<DateTime<Utc>>().ok());
            match at {
                Some(at) if at < from => {
                    let value = value.unwrap();
                    let currency = value["currency"].as_str().unwrap().to_owned();
                    let amount = value["amount"].as_i64().unwrap();
                    let balances = opening.get_or_insert_with(|| {
                        data.opening
                            .iter()
                            .map(|raw| {
                                let b: serde_json::Value = serde_json::from_str(raw).unwrap();
                                (
                                    b["currency"].as_str().unwrap().to_owned(),
                                    b["amount"].as_i64().unwrap(),
                                )
                            })
                            .collect()
                    });
                    match balances.iter_mut().find(|(c, _)| *c == currency) {
                        Some((_, sum)) => *sum += amount,
                        None => balances.push((currency, amount)),
                    }
                }
                Some(at) if at >= to => break,
                _ => kept.push(raw.clone()),
            }
        }
        if let Some(balances) = opening {
            data.opening = balances
                .into_iter()
                .map(|(c, a)| format!(r#"{{"currency":"{c}","amount":{a}}}"#))
                .collect();
        }
        (data, kept)
    }

    /// One fake upstream serving every dataset the contract asks for.
    struct HttpHarness {
        fake: Fake,
    }

    #[async_trait]
    impl Harness for HttpHarness {
        async fn source_with(&self, data: &Dataset) -> Box<dyn Source> {
            Box::new(self.fake.source(data, None, fast()))
        }
    }

    #[tokio::test]
    async fn contract_one_entry_per_page() {
        let h = HttpHarness {
            fake: Upstream::new(1).start().await,
        };
        contract::run_all(&h).await;
    }

    #[tokio::test]
    async fn contract_two_entries_per_page() {
        // The validation cases hold three entries: the bad one sits on page 1 or 2.
        let h = HttpHarness {
            fake: Upstream::new(2).start().await,
        };
        contract::run_all(&h).await;
    }

    #[tokio::test]
    async fn contract_single_page() {
        let h = HttpHarness {
            fake: Upstream::new(1000).start().await,
        };
        contract::run_all(&h).await;
    }

    fn days(n: usize) -> Dataset {
        let mut data = Dataset::new("m_pages").opening("EUR", 1_000);
        for i in 0..n {
            data = data.entry(
                &format!("tx_{i:02}"),
                &format!("2026-10-{:02}T12:00:00Z", i + 1),
                "PAYMENT",
                100 + i as i64,
                "EUR",
            );
        }
        data
    }

    fn october() -> Window {
        window("2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z")
    }

    #[tokio::test]
    async fn pages_are_followed_and_indices_continue() {
        let fake = Upstream::new(2).start().await;
        let data = days(7);
        let source = fake.source(&data, None, fast());
        let stream = source.entries(&mid("m_pages"), october()).await.unwrap();
        assert_eq!(stream.opening_balances.len(), 1);
        assert_eq!(stream.opening_balances[0].amount, 1_000);
        let batches: Vec<Vec<Entry>> = stream.entries.map(|b| b.unwrap()).collect::<Vec<_>>().await;
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, [2, 2, 2, 1]);
        let ids: Vec<String> = batches.into_iter().flatten().map(|e| e.id).collect();
        assert_eq!(
            ids,
            (0..7).map(|i| format!("tx_{i:02}")).collect::<Vec<_>>()
        );
        assert_eq!(fake.requests(), 4);
        let queries = fake.state.queries.lock().unwrap().clone();
        assert_eq!(
            queries,
            [
                "from=2026-10-01T00%3A00%3A00Z&to=2026-11-01T00%3A00%3A00Z",
                "from=2026-10-01T00%3A00%3A00Z&to=2026-11-01T00%3A00%3A00Z&cursor=c2",
                "from=2026-10-01T00%3A00%3A00Z&to=2026-11-01T00%3A00%3A00Z&cursor=c4",
                "from=2026-10-01T00%3A00%3A00Z&to=2026-11-01T00%3A00%3A00Z&cursor=c6",
            ]
        );

        // A bad entry on the third page is named by its index in the whole stream, and a
        // repeated id is caught across pages.
        let mut bad = days(7);
        bad.entries[5] = entry_json("tx_05", "2026-10-06T12:00:00Z", "PAYMENT", "1.5", "EUR");
        let source = fake.source(&bad, None, fast());
        assert_eq!(
            collect(&source, &mid("m_pages"), october()).await.err(),
            Some(SourceError::Invalid(
                "entries[5].amount: expected integer, found a decimal number".into()
            ))
        );
        let mut repeated = days(7);
        repeated.entries[4] = entry_json("tx_00", "2026-10-05T12:00:00Z", "PAYMENT", "1", "EUR");
        let source = fake.source(&repeated, None, fast());
        assert_eq!(
            collect(&source, &mid("m_pages"), october()).await.err(),
            Some(SourceError::Invalid(
                "entries[4].id: repeated entry id".into()
            ))
        );
    }

    /// A page of no entries (legal) whose `nextCursor` is `next`.
    fn empty_page(next: &str) -> Reply {
        let header = days(1).header_json();
        let head = header.strip_suffix('}').unwrap();
        Reply::Body(format!("{head},\"entries\":[],\"nextCursor\":{next}}}"))
    }

    #[tokio::test]
    async fn cursors_that_cycle_are_refused_instead_of_followed_forever() {
        // A → B → C → A → B → …: every page empty, so nothing else would ever stop it.
        let mut up = Upstream::new(2).script([
            empty_page("\"A\""),
            empty_page("\"B\""),
            empty_page("\"C\""),
        ]);
        up.forever = Some(empty_page("\"A\""));
        let fake = up.start().await;
        let source = fake.source(&days(1), None, fast());
        let outcome = tokio::time::timeout(
            Duration::from_secs(10),
            collect(&source, &mid("m_pages"), october()),
        )
        .await
        .expect("a cycling upstream is not followed forever");
        assert_eq!(
            outcome.err(),
            Some(SourceError::Invalid(
                "nextCursor: page 4 returns to the cursor of an earlier page (a cycle)".into()
            ))
        );
        assert_eq!(
            fake.requests(),
            4,
            "A, B and C once each, after the first page"
        );
    }

    #[tokio::test]
    async fn no_more_pages_than_the_limit_are_followed() {
        let fake = Upstream::new(1).start().await;
        let limited = HttpSourceOptions {
            max_pages: 3,
            ..fast()
        };
        let source = fake.source(&days(5), None, limited);
        assert_eq!(
            collect(&source, &mid("m_pages"), october()).await.err(),
            Some(SourceError::Invalid(
                "nextCursor: the source has more than 3 pages (APP_ENV_SOURCE_MAX_PAGES)".into()
            ))
        );
        assert_eq!(fake.requests(), 3);
        // Exactly at the limit is fine.
        let source = fake.source(&days(3), None, limited);
        let (_, entries) = collect(&source, &mid("m_pages"), october()).await.unwrap();
        assert_eq!(entries.len(), 3);
    }

    #[tokio::test]
    async fn a_later_page_with_other_opening_balances_is_refused() {
        let mut up = Upstream::new(2);
        up.later_opening = Some(r#"{"currency":"EUR","amount":999}"#.to_owned());
        let fake = up.start().await;
        let source = fake.source(&days(5), None, fast());
        assert_eq!(
            collect(&source, &mid("m_pages"), october()).await.err(),
            Some(SourceError::Invalid(
                "openingBalances: page 2 differs from the first page".into()
            ))
        );
    }

    #[tokio::test]
    async fn bearer_token_is_sent_and_a_refusal_is_unavailable() {
        let mut up = Upstream::new(2);
        up.token = Some("Bearer s3cr3t-t0ken".to_owned());
        let fake = up.start().await;
        let data = days(3);
        let good = fake.source(&data, Some("s3cr3t-t0ken"), fast());
        let (_, entries) = collect(&good, &mid("m_pages"), october()).await.unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(
            good.merchant(&mid("m_pages")).await.unwrap().name,
            "Contract GmbH"
        );
        assert!(!format!("{good:?}").contains("s3cr3t"), "{good:?}");

        let before = fake.requests();
        let anonymous = fake.source(&data, None, fast());
        let refused =
            SourceError::Unavailable("the source refused the credentials (HTTP 401)".into());
        assert_eq!(
            collect(&anonymous, &mid("m_pages"), october()).await.err(),
            Some(refused.clone())
        );
        // A refusal is not transient: exactly one request.
        assert_eq!(fake.requests(), before + 1);
        let wrong = fake.source(&data, Some("wr0ng-t0ken"), fast());
        let err = wrong.merchant(&mid("m_pages")).await.unwrap_err();
        assert_eq!(err, refused);
        assert!(!err.to_string().contains("wr0ng"));
        assert!(!format!("{wrong:?}").contains("wr0ng"));
    }

    #[tokio::test]
    async fn not_found_is_an_unknown_merchant() {
        let fake = Upstream::new(2).start().await;
        let source = fake.source(&days(1), None, fast());
        assert_eq!(
            collect(&source, &mid("m_nobody"), october()).await.err(),
            Some(SourceError::UnknownMerchant("m_nobody".into()))
        );
        assert_eq!(
            source.merchant(&mid("m_nobody")).await,
            Err(SourceError::UnknownMerchant("m_nobody".into()))
        );
        assert_eq!(fake.requests(), 2);
    }

    #[tokio::test]
    async fn transient_failures_are_retried() {
        let fake = Upstream::new(2)
            .script([Reply::Status(503, None), Reply::Status(503, None)])
            .start()
            .await;
        let source = fake.source(&days(3), None, fast());
        let (_, entries) = collect(&source, &mid("m_pages"), october()).await.unwrap();
        assert_eq!(entries.len(), 3);
        // Two failures, the first page, the second page.
        assert_eq!(fake.requests(), 4);

        // A failure on a later page is retried too, and 429 / 502 count as transient.
        let fake = Upstream::new(1)
            .script([
                Reply::Sleep(Duration::ZERO),
                Reply::Status(429, Some("0")),
                Reply::Status(502, None),
            ])
            .start()
            .await;
        let source = fake.source(&days(3), None, fast());
        let (_, entries) = collect(&source, &mid("m_pages"), october()).await.unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(fake.requests(), 5);
    }

    #[tokio::test]
    async fn retry_after_is_honoured() {
        let fake = Upstream::new(10)
            .script([Reply::Status(503, Some("1"))])
            .start()
            .await;
        let source = fake.source(&days(1), None, fast());
        let started = Instant::now();
        collect(&source, &mid("m_pages"), october()).await.unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(950),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(fake.requests(), 2);
    }

    #[tokio::test]
    async fn persistent_failure_gives_up_after_max_retries() {
        let mut up = Upstream::new(2);
        up.forever = Some(Reply::Status(503, None));
        let fake = up.start().await;
        let options = HttpSourceOptions {
            max_retries: 2,
            ..fast()
        };
        let source = fake.source(&days(3), None, options);
        assert_eq!(
            collect(&source, &mid("m_pages"), october()).await.err(),
            Some(SourceError::Unavailable(
                "the source answered HTTP 503 (gave up after 3 attempts)".into()
            ))
        );
        assert_eq!(fake.requests(), 3);
        let source = fake.source(
            &days(3),
            None,
            HttpSourceOptions {
                max_retries: 0,
                ..fast()
            },
        );
        assert!(matches!(
            source.merchant(&mid("m_pages")).await,
            Err(SourceError::Unavailable(_))
        ));
        assert_eq!(fake.requests(), 4);
    }

    #[tokio::test]
    async fn a_slow_upstream_times_out() {
        let mut up = Upstream::new(2);
        up.forever = Some(Reply::Sleep(Duration::from_secs(5)));
        let fake = up.start().await;
        let options = HttpSourceOptions {
            request_timeout: Duration::from_millis(200),
            max_retries: 1,
            initial_backoff: Duration::from_millis(1),
            ..fast()
        };
        let source = fake.source(&days(1), None, options);
        let started = Instant::now();
        let err = collect(&source, &mid("m_pages"), october()).await.err();
        assert!(
            matches!(&err, Some(SourceError::Unavailable(m)) if m.ends_with("(gave up after 2 attempts)")),
            "{err:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(fake.requests(), 2);
    }

    #[tokio::test]
    async fn an_entry_outside_the_window_is_refused() {
        let mut up = Upstream::new(2);
        up.no_cut = true;
        let fake = up.start().await;
        let data = Dataset::new("m_win")
            .entry("a", "2026-10-01T00:00:00Z", "PAYMENT", 1, "EUR")
            .entry("b", "2026-10-15T00:00:00Z", "PAYMENT", 1, "EUR")
            .entry("c", "2026-11-01T00:00:00Z", "PAYMENT", 1, "EUR");
        let source = fake.source(&data, None, fast());
        let err = collect(&source, &mid("m_win"), october())
            .await
            .unwrap_err();
        assert_eq!(
            err,
            SourceError::Invalid("entries[2].bookedAt: outside the requested window".into())
        );
        let early = window("2026-10-02T00:00:00Z", "2026-11-02T00:00:00Z");
        assert_eq!(
            collect(&source, &mid("m_win"), early).await.err(),
            Some(SourceError::Invalid(
                "entries[0].bookedAt: outside the requested window".into()
            ))
        );
    }

    #[tokio::test]
    async fn dropping_the_stream_stops_the_requests() {
        let fake = Upstream::new(1).start().await;
        let source = fake.source(&days(30), None, fast());
        let mut stream = source.entries(&mid("m_pages"), october()).await.unwrap();
        assert_eq!(stream.entries.next().await.unwrap().unwrap().len(), 1);
        drop(stream);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after_drop = fake.requests();
        // The page handed out, one buffered, one in flight at most.
        assert!(after_drop <= 3, "{after_drop}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(fake.requests(), after_drop);
    }

    #[tokio::test]
    async fn other_refusals_and_bad_bodies_are_invalid() {
        let fake = Upstream::new(10)
            .script([
                Reply::Status(400, None),
                Reply::Status(302, None),
                Reply::Body("<html>maintenance</html>".to_owned()),
            ])
            .start()
            .await;
        let source = fake.source(&days(2), None, fast());
        let id = mid("m_pages");
        assert_eq!(
            collect(&source, &id, october()).await.err(),
            Some(SourceError::Invalid(
                "the source refused the request (HTTP 400)".into()
            ))
        );
        assert_eq!(
            collect(&source, &id, october()).await.err(),
            Some(SourceError::Invalid(
                "the source answered with a redirect (HTTP 302), which is not followed".into()
            ))
        );
        assert_eq!(
            collect(&source, &id, october()).await.err(),
            Some(SourceError::Invalid(
                "the source answered with a body that is not JSON: invalid JSON (expected value at line 1 column 1)".into()
            ))
        );
        // None of them was retried.
        assert_eq!(fake.requests(), 3);

        let mut small = fake.source(&days(2), None, fast());
        small.max_page_bytes = 100;
        assert_eq!(
            collect(&small, &id, october()).await.err(),
            Some(SourceError::Invalid(
                "the source answered with a page larger than 100 bytes".into()
            ))
        );
    }

    #[tokio::test]
    async fn readiness_and_configuration() {
        let fake = Upstream::new(10).start().await;
        let source = fake.source(&days(1), None, fast());
        source.ready().await.unwrap();

        // A port nobody listens on.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let url = Url::parse(&format!("http://{addr}/")).unwrap();
        let gone = HttpSource::new(
            url,
            None,
            HttpSourceOptions {
                max_retries: 1,
                ..fast()
            },
        )
        .unwrap();
        assert!(matches!(
            gone.ready().await,
            Err(SourceError::Unavailable(_))
        ));
        let err = collect(&gone, &mid("m_pages"), october())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, SourceError::Unavailable(m) if m.starts_with("could not connect") && !m.contains("m_pages")),
            "{err:?}"
        );

        for bad in ["ftp://example.com/", "http://example.com/?a=1"] {
            assert!(matches!(
                HttpSource::new(Url::parse(bad).unwrap(), None, fast()),
                Err(SourceError::Invalid(_))
            ));
        }
        assert!(matches!(
            HttpSource::new(
                Url::parse("http://example.com/").unwrap(),
                Some(Secret::new("bad\ntoken")),
                fast()
            ),
            Err(SourceError::Invalid(m)) if !m.contains("bad")
        ));
        let d = HttpSourceOptions::default();
        assert_eq!(
            (d.request_timeout, d.max_retries, d.initial_backoff),
            (Duration::from_secs(10), 3, Duration::from_millis(200))
        );
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        for retry in 0..40 {
            let full = Duration::from_millis(200)
                .saturating_mul(1_u32.checked_shl(retry).unwrap_or(u32::MAX))
                .min(MAX_BACKOFF);
            let got = backoff(Duration::from_millis(200), retry);
            assert!(got >= full / 2 && got <= full, "{retry}: {got:?}");
        }
    }
}
