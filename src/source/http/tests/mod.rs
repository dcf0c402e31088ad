//! Tests of the HTTP source against a fake upstream ([`Upstream`]) served by axum on a
//! local port: [`paging`] (the contract, cursors, windows, cancellation, configuration),
//! [`requests`] (credentials, status codes, retries, timeouts, bodies) and [`listing`] (the
//! merchant list).

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
use crate::domain::Entry;
use crate::source::contract::{self, Dataset, Harness, collect, entry_json, mid, window};

mod listing;
mod paging;
mod requests;

/// A scripted answer that replaces (or delays) the normal one for one request.
#[derive(Clone)]
enum Reply {
    /// This status, with this `Retry-After`, and an empty body.
    Status(u16, Option<&'static str>),
    /// Wait, then answer normally.
    Sleep(Duration),
    /// This 200 body verbatim.
    Body(String),
    /// The normal answer, its body broken off after this many bytes.
    BreakAfter(usize),
    /// The normal answer with `entries` before the header members.
    EntriesFirst,
    /// This 200 body verbatim, sent in pieces without a `Content-Length`.
    Chunked(String),
}

/// The fake upstream's state: sets of datasets from memory, each set under its own base path
/// (`/{set}/`), entries served in pages of `page_size`, the merchant list in pages of the
/// `limit` asked for, sorted by id, with the last id listed as the cursor.
///
/// Where the file and HTTP adapters legitimately differ: the file adapter folds entries
/// before the window into the opening balances itself, while the HTTP adapter asks the
/// upstream for exactly `[from, to)`. This fake does that folding server-side (as a real
/// upstream would), so the very same contract suite holds for both adapters.
struct Upstream {
    page_size: usize,
    sets: Mutex<Vec<Vec<Dataset>>>,
    /// Required `Authorization` value; a request without it gets 401.
    token: Option<String>,
    /// Answers of the next requests, in order; then `forever`, then normal service.
    script: Mutex<VecDeque<Reply>>,
    forever: Option<Reply>,
    /// Serve every entry whatever the window (a misbehaving upstream).
    no_cut: bool,
    /// Requests received (entries and merchant list pages).
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
            .route("/{set}/merchants", get(serve_merchants))
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
    /// Registers a set of `data`; the base URL serving it (alternately with a trailing
    /// slash, so both spellings of a base path are exercised).
    fn add(&self, data: &[Dataset]) -> Url {
        let mut sets = self.state.sets.lock().unwrap();
        sets.push(data.to_vec());
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
        self.source_all(std::slice::from_ref(data), token, options)
    }

    fn source_all(
        &self,
        data: &[Dataset],
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

/// What every route does first: counts and records the request, answers with the scripted
/// reply when it replaces the answer, and refuses a missing or wrong token. `Ok`: the scripted
/// reply that shapes the normal answer, if any.
async fn preamble(
    up: &Upstream,
    query: &str,
    headers: &HeaderMap,
) -> Result<Option<Reply>, AxumResponse> {
    up.requests.fetch_add(1, Ordering::SeqCst);
    up.queries.lock().unwrap().push(query.to_owned());
    let scripted = up.script.lock().unwrap().pop_front();
    let scripted = scripted.or_else(|| up.forever.clone());
    match scripted.clone() {
        Some(Reply::Status(code, retry_after)) => {
            let mut response = AxumStatus::from_u16(code).unwrap().into_response();
            if let Some(after) = retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, after.parse().unwrap());
            }
            return Err(response);
        }
        Some(Reply::Sleep(pause)) => tokio::time::sleep(pause).await,
        Some(Reply::Body(body)) => return Err(body.into_response()),
        Some(Reply::Chunked(body)) => {
            let pieces = body
                .into_bytes()
                .chunks(1 << 16)
                .map(|piece| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(piece)))
                .collect::<Vec<_>>();
            return Err(
                axum::body::Body::from_stream(futures::stream::iter(pieces)).into_response()
            );
        }
        Some(Reply::BreakAfter(_) | Reply::EntriesFirst) | None => {}
    }
    if let Some(token) = &up.token {
        let sent = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if sent != Some(token.as_str()) {
            return Err(AxumStatus::UNAUTHORIZED.into_response());
        }
    }
    Ok(scripted)
}

/// `body` as a 200 that announces its whole length and breaks off after `n` bytes.
fn broken_off(body: String, n: usize) -> AxumResponse {
    let length = body.len();
    let prefix = bytes::Bytes::from(body.into_bytes()).slice(..n);
    let pieces = futures::stream::iter([
        Ok(prefix),
        Err(std::io::Error::other("the upstream broke off")),
    ]);
    (
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (header::CONTENT_LENGTH, length.to_string()),
        ],
        axum::body::Body::from_stream(pieces),
    )
        .into_response()
}

async fn serve(
    State(up): State<Arc<Upstream>>,
    Path((set, id)): Path<(usize, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> AxumResponse {
    let query = query.unwrap_or_default();
    let scripted = match preamble(&up, &query, &headers).await {
        Ok(scripted) => scripted,
        Err(response) => return response,
    };
    let found = up
        .sets
        .lock()
        .unwrap()
        .get(set)
        .and_then(|set| set.iter().find(|data| data.merchant_id == id).cloned());
    let Some(data) = found else {
        return AxumStatus::NOT_FOUND.into_response();
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
    let page = entries[offset.min(end)..end].join(",");
    let body = match scripted {
        Some(Reply::EntriesFirst) => {
            let members = header.strip_prefix('{').unwrap();
            format!("{{\"entries\":[{page}],\"nextCursor\":{next},{members}")
        }
        _ => format!("{head},\"entries\":[{page}],\"nextCursor\":{next}}}"),
    };
    if let Some(Reply::BreakAfter(n)) = scripted {
        return broken_off(body, n);
    }
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `GET /{set}/merchants?[cursor=]&limit=`: the set's merchants sorted by id, after the
/// cursor (the last id of the previous page), `limit` of them.
async fn serve_merchants(
    State(up): State<Arc<Upstream>>,
    Path(set): Path<usize>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> AxumResponse {
    let query = query.unwrap_or_default();
    let scripted = match preamble(&up, &query, &headers).await {
        Ok(scripted) => scripted,
        Err(response) => return response,
    };
    let Some(mut data) = up.sets.lock().unwrap().get(set).cloned() else {
        return AxumStatus::NOT_FOUND.into_response();
    };
    let mut cursor = None;
    let mut limit = None;
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "cursor" => cursor = Some(value.into_owned()),
            "limit" => match value.parse::<u32>() {
                Ok(n) if n >= 1 => limit = Some(n),
                _ => return AxumStatus::BAD_REQUEST.into_response(),
            },
            _ => return AxumStatus::BAD_REQUEST.into_response(),
        }
    }
    let Some(limit) = limit else {
        return AxumStatus::BAD_REQUEST.into_response();
    };
    data.sort_by(|a, b| a.merchant_id.cmp(&b.merchant_id));
    let rest: Vec<&Dataset> = data
        .iter()
        .filter(|d| cursor.as_deref().is_none_or(|c| d.merchant_id.as_str() > c))
        .collect();
    let page = &rest[..rest.len().min(limit as usize)];
    let next = if rest.len() > page.len() {
        page.last().map(|d| d.merchant_id.clone())
    } else {
        None
    };
    let merchants: Vec<serde_json::Value> = page
        .iter()
        .map(|d| serde_json::json!({"id": d.merchant_id, "name": d.name, "timezone": d.timezone}))
        .collect();
    let body = serde_json::json!({"merchants": merchants, "nextCursor": next}).to_string();
    if let Some(Reply::BreakAfter(n)) = scripted {
        return broken_off(body, n);
    }
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

    async fn source_with_all(&self, data: &[Dataset]) -> Box<dyn Source> {
        Box::new(self.fake.source_all(data, None, fast()))
    }
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
