//! `GET /v1/api/ledger/ws`: live `ledger.status` and `ledger.progress` events (SPEC §5) of
//! every merchant the caller may read, as JSON text frames.
//!
//! - The token (`Authorization: Bearer …` or `?access_token=…`) is verified before the
//!   upgrade: no valid token, a 401 and no socket.
//! - A client narrows the flow with `{"subscribe":["m_1",…]}` / `{"unsubscribe":[…]}`; a
//!   merchant it may not read gets an error frame `{"error":{"code":"FORBIDDEN",…}}`.
//!   What it may read is looked up again every second (through the policy cache), so a
//!   revoked grant stops the flow within the cache's TTL.
//! - Each client has a bounded queue between the event bus and its socket. A progress
//!   frame that does not fit is dropped (the next one carries newer counts); a status frame
//!   that does not fit closes the socket with code 4008 and a reason, so the client
//!   reconnects instead of silently missing a state change. A slow client never slows a
//!   worker or another client: the bus never waits for a socket.
//! - `?since=<RFC 3339>` first replays the status changes recorded on the timelines after
//!   that time (of the merchants the client may see, at most 10,000, oldest first), then a
//!   `{"replay":{"events":N,"complete":true}}` frame, then live events — a reconnecting
//!   client misses no state change (it may see one twice).
//! - Pings every `APP_ENV_WS_PING_INTERVAL_MS` (20 s); a client silent for two intervals
//!   (no pong, no message) is closed; on shutdown every socket is closed with 1001.
//!
//! Metrics: `ledger_ws_clients`, `ledger_ws_frames_sent_total`,
//! `ledger_ws_frames_dropped_total`, `ledger_ws_slow_client_closes_total`.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, RawQuery, State};
use axum::http::request::Parts;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::ApiError;
use super::openapi::error_responses;
use crate::auth::{Caller, MerchantScope, Permission};
use crate::domain::{Event, InvalidInput, MerchantId};

/// Frames waiting for one client's socket.
const CLIENT_QUEUE: usize = 256;
/// How often what the caller may read is looked up again.
const SCOPE_EVERY: Duration = Duration::from_secs(1);
/// Close code for a client that fell too far behind (application range 4000–4999).
pub const CLOSE_TOO_SLOW: u16 = 4008;
/// A client message larger than this is refused.
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

/// The WebSocket route, relative to the API's base path.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(upgrade))
}

/// Every text frame the server sends: a JSON object of one of these shapes.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
#[schema(as = WsServerFrame)]
pub enum ServerFrame {
    /// A status change or progress of a ledger the client may read (`event` says which).
    Event(Event),
    /// After a `?since=` replay, before live events.
    Replay(ReplayFrame),
    /// The answer to a `subscribe`.
    Subscribed(SubscribedFrame),
    /// The answer to an `unsubscribe`.
    Unsubscribed(UnsubscribedFrame),
    /// A refused client message; the connection stays open.
    Error(ErrorFrame),
}

/// The end of a `?since=` replay: live events follow.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayFrame {
    /// What was replayed.
    pub replay: ReplaySummary,
}

/// How many status events a replay sent.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplaySummary {
    /// Status events replayed.
    pub events: usize,
    /// False when the replay stopped early (over 10,000 events, or the store failed): read
    /// the ledgers with `GET /ledgers` instead.
    pub complete: bool,
}

/// The answer to `{"subscribe":[…]}`: the flow is narrowed to these merchants (added to any
/// earlier subscription).
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscribedFrame {
    /// The merchants added.
    pub subscribed: Vec<String>,
}

/// The answer to `{"unsubscribe":[…]}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct UnsubscribedFrame {
    /// The merchants removed from the flow.
    pub unsubscribed: Vec<String>,
}

/// A refused client message.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorFrame {
    /// What was wrong.
    pub error: ErrorFrameDetail,
}

/// Why a client message was refused.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorFrameDetail {
    /// `VALIDATION_ERROR` (not a subscribe/unsubscribe message, or a bad merchant id) or
    /// `FORBIDDEN` (a merchant the caller may not read).
    #[schema(pattern = "^(VALIDATION_ERROR|FORBIDDEN)$")]
    pub code: &'static str,
    /// Readable explanation.
    pub message: String,
}

/// What a client may send: one text frame holding one JSON object of one of these shapes.
#[derive(ToSchema)]
#[serde(untagged)]
#[schema(as = WsClientMessage)]
#[allow(dead_code)] // Documentation only: `command` parses messages by hand for precise errors.
pub enum ClientMessage {
    /// Receive only these merchants' events (added to any earlier subscription).
    Subscribe {
        /// Merchant ids the caller may read.
        subscribe: Vec<String>,
    },
    /// Stop receiving these merchants' events.
    Unsubscribe {
        /// Merchant ids.
        unsubscribe: Vec<String>,
    },
}

fn frame(f: &ServerFrame) -> String {
    serde_json::to_string(f).unwrap_or_default()
}

error_responses! {
    /// What the upgrade can answer instead of 101.
    UpgradeErrors {
        400 => ["VALIDATION_ERROR"],
        401 => ["UNAUTHORIZED"],
        500 => ["INTERNAL"],
        503 => ["SERVICE_UNAVAILABLE"],
    }
}

/// Live status events over a WebSocket.
///
/// The token (`Authorization: Bearer …` or `?access_token=…`) is checked before the upgrade.
/// The server sends JSON text frames (`WsServerFrame`): `ledger.status` and `ledger.progress`
/// events (docs/api.md) of every merchant the caller may read; a client narrows the flow with
/// `{"subscribe":["m_1"]}` / `{"unsubscribe":[…]}` (`WsClientMessage`), a merchant it may not
/// read is an error frame with `FORBIDDEN`. `?since=` first replays the status changes after
/// that time, then a `{"replay":{"events":N,"complete":true}}` frame, then live events.
/// Pings every 20 s; a client silent for two intervals is closed.
///
/// Close codes: `1001` server shutting down or no answer to pings; `1003` a binary frame;
/// `4008` the client fell too far behind (events would be lost): reconnect with `?since=`.
/// A client message over 64 KiB ends the connection.
#[utoipa::path(
    get,
    path = "/ws",
    tag = "live",
    operation_id = "watchLedgers",
    params(
        ("access_token" = Option<String>, Query, description = "The JWT, for clients that cannot set `Authorization` (browsers)"),
        ("since" = Option<chrono::DateTime<chrono::Utc>>, Query, description = "Replay the status changes recorded after this RFC 3339 time first", example = "2026-11-24T10:00:00Z"),
        ("Connection" = String, Header, description = "`Upgrade`"),
        ("Upgrade" = String, Header, description = "`websocket`"),
        ("Sec-WebSocket-Version" = String, Header, description = "`13`"),
        ("Sec-WebSocket-Key" = String, Header, description = "The client's handshake nonce (RFC 6455)"),
    ),
    responses(
        (
            status = 101,
            description = "Switching to the WebSocket protocol; the frames are described by `WsServerFrame` (server to client) and `WsClientMessage` (client to server)",
            headers(
                ("Upgrade" = String, description = "`websocket`"),
                ("Sec-WebSocket-Accept" = String, description = "The handshake answer (RFC 6455)"),
            ),
        ),
        UpgradeErrors,
    ),
    security(("bearer" = []), ("accessToken" = [])),
    extensions(("x-websocket" = json!({
        "serverFrames": {"$ref": "#/components/schemas/WsServerFrame"},
        "clientMessages": {"$ref": "#/components/schemas/WsClientMessage"},
        "closeCodes": {
            "1001": "server shutting down, or no answer to pings",
            "1003": "the client sent a binary frame",
            "4008": "the client fell too far behind: reconnect with ?since="
        }
    }))),
)]
async fn upgrade(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    mut parts: Parts,
) -> Result<Response, ApiError> {
    let (mut token, mut since) = (None, None);
    for (key, value) in url::form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "access_token" => token = Some(value.into_owned()),
            "since" => {
                let at = chrono::DateTime::parse_from_rfc3339(&value).map_err(|_| {
                    InvalidInput::new(
                        "since",
                        "expected an RFC 3339 time, e.g. 2026-11-24T10:00:00Z",
                    )
                })?;
                since = Some(at.with_timezone(&chrono::Utc));
            }
            other => {
                return Err(InvalidInput::new(other.to_owned(), "unknown query parameter").into());
            }
        }
    }
    // The token is checked before anything else: a refused caller never gets a socket.
    let caller = match token {
        Some(token) => state
            .verifier
            .verify(&token)
            .await
            .map(Caller::from)
            .map_err(|e| ApiError::Unauthorized(e.to_string()))?,
        None => Caller::from_request_parts(&mut parts, &state).await?,
    };
    let scope = scope(&state, &caller).await?;
    let ws = WebSocketUpgrade::from_request_parts(&mut parts, &state)
        .await
        .map_err(|e| {
            ApiError::Validation(InvalidInput::new(
                "upgrade",
                format!("expected a WebSocket upgrade: {e}"),
            ))
        })?;
    Ok(ws
        .max_message_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| serve(socket, state, caller, scope, since)))
}

async fn scope(state: &AppState, caller: &Caller) -> Result<MerchantScope, ApiError> {
    state
        .authz
        .scope(&caller.subject, Permission::Read)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))
}

/// Counts a connected client for as long as it lives.
struct Connected;

impl Connected {
    fn new() -> Self {
        metrics::gauge!("ledger_ws_clients").increment(1.0);
        Connected
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        metrics::gauge!("ledger_ws_clients").decrement(1.0);
    }
}

/// What one client receives: merchants in its read scope, narrowed by its messages.
struct Filter {
    scope: MerchantScope,
    /// `None` until the first `subscribe`: every merchant in scope; then only these.
    only: Option<BTreeSet<MerchantId>>,
    /// Unsubscribed while not narrowed.
    excluded: BTreeSet<MerchantId>,
}

impl Filter {
    fn wants(&self, merchant: &MerchantId) -> bool {
        self.scope.contains(merchant)
            && !self.excluded.contains(merchant)
            && self
                .only
                .as_ref()
                .is_none_or(|only| only.contains(merchant))
    }
}

/// Why the connection ends, as the close frame says it.
fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from(reason.to_owned()),
    }))
}

/// Status events replayed at most on a reconnect; older ones need `GET /ledgers/:id`.
const MAX_REPLAY: usize = 10_000;
/// How long a replay may wait for room in a client's queue before the client is too slow.
const REPLAY_PATIENCE: Duration = Duration::from_secs(10);

/// Queues the status changes since `since` the client may see, then a
/// `{"replay":{"events":N,"complete":bool}}` frame marking where live events begin.
/// `Err` when the client does not take them in time.
async fn replay(
    state: &AppState,
    filter: &Filter,
    since: chrono::DateTime<chrono::Utc>,
    frames: &mpsc::Sender<Message>,
) -> Result<(), ()> {
    let (mut after, mut sent, mut complete) = (0, 0usize, true);
    'pages: loop {
        let page = match state.store.status_events_since(since, after, 500).await {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(error = %e, "replaying status events failed");
                complete = false;
                break;
            }
        };
        let last_page = page.len() < 500;
        for (seq, event) in page {
            after = seq;
            if !filter.wants(&event.merchant_id) {
                continue;
            }
            if sent == MAX_REPLAY {
                complete = false;
                break 'pages;
            }
            let Ok(text) = serde_json::to_string(&Event::Status(event)) else {
                continue;
            };
            frames
                .send_timeout(Message::Text(text.into()), REPLAY_PATIENCE)
                .await
                .map_err(|_| ())?;
            sent += 1;
        }
        if last_page {
            break;
        }
    }
    let marker = frame(&ServerFrame::Replay(ReplayFrame {
        replay: ReplaySummary {
            events: sent,
            complete,
        },
    }));
    frames
        .send_timeout(Message::Text(marker.into()), REPLAY_PATIENCE)
        .await
        .map_err(|_| ())
}

async fn serve(
    socket: WebSocket,
    state: AppState,
    caller: Caller,
    scope: MerchantScope,
    since: Option<chrono::DateTime<chrono::Utc>>,
) {
    let _connected = Connected::new();
    let (mut sink, mut incoming) = socket.split();
    let (frames, mut queued) = mpsc::channel::<Message>(CLIENT_QUEUE);
    // The writer owns the socket's sending half; everything else only queues frames.
    // The close frame has its own way to the writer: it must get through when the queue is
    // full (that is when a slow client is closed), ahead of what is still queued.
    let (closing, mut close_with) = oneshot::channel::<Message>();
    let writer = tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                frame = &mut close_with => {
                    if let Ok(frame) = frame {
                        let _ = sink.send(frame).await;
                    }
                    break;
                }
                frame = queued.recv() => {
                    let Some(frame) = frame else { break };
                    if sink.send(frame).await.is_err() {
                        break;
                    }
                    metrics::counter!("ledger_ws_frames_sent_total").increment(1);
                }
            }
        }
        let _ = sink.close().await;
    });

    let mut events = state.notifier.bus().subscribe();
    let mut filter = Filter {
        scope,
        only: None,
        excluded: BTreeSet::new(),
    };
    // Subscribed before the replay is read, so nothing falls between the two (an event may
    // come twice: replayed, then live).
    if let Some(since) = since
        && replay(&state, &filter, since, &frames).await.is_err()
    {
        finish(writer, closing, Some(slow(&caller))).await;
        return;
    }
    // Keep-alive: a ping every interval; a client that has said nothing (not even a pong)
    // for two intervals is gone, and its task must not linger until TCP gives up.
    let mut ping = tokio::time::interval(state.ws_ping_interval);
    ping.reset();
    let mut last_heard = tokio::time::Instant::now();
    let mut rescope = tokio::time::interval(SCOPE_EVERY);
    rescope.reset();
    let ending = loop {
        tokio::select! {
            biased;
            _ = state.shutdown.cancelled() => break Some(close(1001, "server shutting down")),
            message = incoming.next() => {
                if matches!(message, Some(Ok(_))) {
                    last_heard = tokio::time::Instant::now();
                }
                match message {
                Some(Ok(Message::Text(text))) => {
                    let reply = command(&mut filter, text.as_str());
                    if frames.try_send(Message::Text(reply.into())).is_err()
                    {
                        break Some(slow(&caller));
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    break Some(close(1003, "text frames with JSON only"));
                }
                Some(Ok(_)) => {} // ping/pong are answered by the library
                Some(Err(_)) | None => break None,
                }
            },
            event = events.recv() => match event {
                Ok(event) => {
                    if !filter.wants(event.merchant_id()) {
                        continue;
                    }
                    let text = match serde_json::to_string(&event) {
                        Ok(t) => t,
                        Err(e) => {
                            tracing::error!(error = %e, "serialising an event failed");
                            continue;
                        }
                    };
                    if frames.try_send(Message::Text(text.into())).is_err() {
                        match event {
                            Event::Progress(_) => {
                                // The next progress frame carries newer counts.
                                metrics::counter!("ledger_ws_frames_dropped_total").increment(1);
                            }
                            Event::Status(_) => break Some(slow(&caller)),
                        }
                    }
                }
                // This client's share of the bus overflowed: events are lost, say so.
                Err(broadcast::error::RecvError::Lagged(_)) => break Some(slow(&caller)),
                Err(broadcast::error::RecvError::Closed) => {
                    break Some(close(1001, "server shutting down"));
                }
            },
            _ = ping.tick() => {
                if last_heard.elapsed() > state.ws_ping_interval * 2 {
                    break Some(close(1001, "no answer to pings"));
                }
                if frames.try_send(Message::Ping(Default::default())).is_err() {
                    break Some(slow(&caller));
                }
            }
            _ = rescope.tick() => {
                // A failed lookup keeps the last answer; a revoke shrinks it.
                if let Ok(scope) = scope_of(&state, &caller).await {
                    filter.scope = scope;
                }
            }
        }
    };
    drop(frames);
    finish(writer, closing, ending).await;
}

/// How long a closing socket may take to flush its close frame before it is dropped.
const CLOSE_PATIENCE: Duration = Duration::from_secs(10);

/// Hands `frame` (if any) to the writer as the last frame and waits for it; a client that
/// reads nothing at all is cut off after [`CLOSE_PATIENCE`], so no task outlives it.
async fn finish(
    mut writer: tokio::task::JoinHandle<()>,
    closing: oneshot::Sender<Message>,
    frame: Option<Message>,
) {
    match frame {
        Some(frame) => {
            let _ = closing.send(frame);
        }
        None => drop(closing),
    }
    if tokio::time::timeout(CLOSE_PATIENCE, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
}

async fn scope_of(state: &AppState, caller: &Caller) -> Result<MerchantScope, ApiError> {
    scope(state, caller).await
}

fn slow(caller: &Caller) -> Message {
    metrics::counter!("ledger_ws_slow_client_closes_total").increment(1);
    tracing::warn!(subject = %caller.subject, "closing a WebSocket client that fell too far behind");
    close(
        CLOSE_TOO_SLOW,
        "client too slow: events would be lost; reconnect",
    )
}

/// Handles one client message and returns the answer frame.
fn command(filter: &mut Filter, text: &str) -> String {
    let error = |code: &'static str, message: String| {
        frame(&ServerFrame::Error(ErrorFrame {
            error: ErrorFrameDetail { code, message },
        }))
    };
    let usage = || {
        error(
            "VALIDATION_ERROR",
            "expected {\"subscribe\":[merchant ids]} or {\"unsubscribe\":[merchant ids]}".into(),
        )
    };
    let Ok(serde_json::Value::Object(object)) = serde_json::from_str::<serde_json::Value>(text)
    else {
        return usage();
    };
    let (key, list) = match object.iter().next() {
        Some((key, serde_json::Value::Array(list)))
            if object.len() == 1 && (key == "subscribe" || key == "unsubscribe") =>
        {
            (key.as_str(), list)
        }
        _ => return usage(),
    };
    let mut merchants = Vec::new();
    for (i, item) in list.iter().enumerate() {
        match item.as_str().map(MerchantId::parse) {
            Some(Ok(m)) => merchants.push(m),
            _ => {
                return error(
                    "VALIDATION_ERROR",
                    format!("{key}[{i}]: expected a merchant id"),
                );
            }
        }
    }
    let names: Vec<String> = merchants.iter().map(|m| m.as_str().to_owned()).collect();
    if key == "unsubscribe" {
        for m in &merchants {
            match &mut filter.only {
                Some(only) => {
                    only.remove(m);
                }
                None => {
                    filter.excluded.insert(m.clone());
                }
            }
        }
        return frame(&ServerFrame::Unsubscribed(UnsubscribedFrame {
            unsubscribed: names,
        }));
    }
    let forbidden: Vec<&str> = merchants
        .iter()
        .filter(|m| !filter.scope.contains(m))
        .map(MerchantId::as_str)
        .collect();
    if !forbidden.is_empty() {
        return error(
            "FORBIDDEN",
            format!("not allowed to read {}", forbidden.join(", ")),
        );
    }
    for m in &merchants {
        filter.excluded.remove(m);
    }
    filter
        .only
        .get_or_insert_with(BTreeSet::new)
        .extend(merchants.iter().cloned());
    frame(&ServerFrame::Subscribed(SubscribedFrame {
        subscribed: names,
    }))
}
