//! `GET /v1/api/ledger/ws`: live `ledger.status` and `ledger.progress` events (SPEC §5) of
//! every merchant the caller may read, as JSON text frames.
//!
//! - A token in `Authorization: Bearer …` or `?access_token=…` is verified before the
//!   upgrade: an invalid one is a 401 and no socket. Without either (browsers cannot set
//!   headers, and a query string ends up in logs), the upgrade goes ahead and the first
//!   frame must be `{"auth":"<JWT>"}` within 5 s; nothing is sent before it is verified. No
//!   frame in time or an invalid token closes with 4001, another first frame with 1008.
//! - A socket lives no longer than its token: it is closed with 4001 at `exp` + the
//!   configured leeway; the client reconnects with a fresh token and `?since=`.
//! - At most `APP_ENV_WS_MAX_SOCKETS_PER_SUBJECT` sockets per subject (per api process):
//!   beyond, 429 before the upgrade (4029 for a socket authenticated by its first frame).
//! - A client narrows the flow with `{"subscribe":["m_1",…]}` / `{"unsubscribe":[…]}`; a
//!   merchant it may not read gets an error frame `{"error":{"code":"FORBIDDEN",…}}`. Each
//!   list a client builds holds at most 1,000 merchants (only readable ones are kept as
//!   unsubscribed). What it may read is looked up again every second (through the policy
//!   cache), so a revoked grant stops the flow within the cache's TTL.
//! - Each client has a bounded queue between the event bus and its socket. A progress
//!   frame that does not fit is dropped (the next one carries newer counts); a status frame
//!   that does not fit closes the socket with code 4008 and a reason, so the client
//!   reconnects instead of silently missing a state change. A slow client never slows a
//!   worker or another client: the bus never waits for a socket.
//! - `?since=<RFC 3339>` first replays the status changes recorded on the timelines after
//!   that time — at most `APP_ENV_WS_REPLAY_MAX_AGE_MS` (24 h) back, of the merchants the
//!   client may see (filtered in the store's query; none read for an empty scope), at most
//!   10,000, oldest first — then a `{"replay":{"events":N,"complete":…,"from":…}}` frame,
//!   then live events: a reconnecting client misses no state change (it may see one
//!   twice), or learns from `complete: false` that it must re-read the ledgers.
//! - Pings every `APP_ENV_WS_PING_INTERVAL_MS` (20 s); a client silent for two intervals
//!   (no pong, no message) is closed; on shutdown every socket is closed with 1001.
//!
//! Metrics: `ledger_ws_clients`, `ledger_ws_frames_sent_total`,
//! `ledger_ws_frames_dropped_total`, `ledger_ws_slow_client_closes_total`.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
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
use super::extract::bearer_token;
use super::openapi::error_responses;
use crate::auth::{Caller, Claims, MerchantScope, Permission};
use crate::domain::{Event, InvalidInput, MerchantId};

/// Frames waiting for one client's socket.
const CLIENT_QUEUE: usize = 256;
/// How often what the caller may read is looked up again.
const SCOPE_EVERY: Duration = Duration::from_secs(1);
/// Close code for a client that fell too far behind (application range 4000–4999).
pub const CLOSE_TOO_SLOW: u16 = 4008;
/// Close code for a missing, invalid or expired token (as HTTP 401).
pub const CLOSE_UNAUTHORIZED: u16 = 4001;
/// Close code for a socket over the per-subject limit that authenticated with its first
/// frame, after the upgrade (as HTTP 429; the others get a 429 instead of the upgrade).
pub const CLOSE_TOO_MANY: u16 = 4029;
/// Close code for a first frame that is not `{"auth":"<JWT>"}` (RFC 6455 policy violation).
pub const CLOSE_POLICY: u16 = 1008;
/// Close code for a failure of the service itself (RFC 6455 internal error).
const CLOSE_INTERNAL: u16 = 1011;
/// How long an upgrade without a token may take to send `{"auth":"<JWT>"}` (SPEC §4).
pub const AUTH_FRAME_WITHIN: Duration = Duration::from_secs(5);
/// A client message larger than this is refused.
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;
/// Merchants one client's subscription, or its unsubscriptions, may hold: without a cap a
/// client of a platform admin (every merchant readable) could grow them without bound, one
/// message at a time. Far above any screen's worth of merchants.
const MAX_FILTER_MERCHANTS: usize = 1_000;
/// A token valid for longer than this keeps its socket for this long at most; it also keeps
/// the deadline arithmetic in range for an absurd `exp`.
const MAX_SOCKET_LIFE: Duration = Duration::from_secs(365 * 86_400);

/// What `/ws` is configured with.
#[derive(Debug, Clone, Copy)]
pub struct WsSettings {
    /// Keep-alive ping interval (`APP_ENV_WS_PING_INTERVAL_MS`).
    pub ping_interval: Duration,
    /// Tolerated clock skew after a token's `exp` (`APP_ENV_AUTH_LEEWAY_SECS`): a socket is
    /// closed at `exp` + this.
    pub token_leeway: Duration,
    /// How far back `?since=` replays (`APP_ENV_WS_REPLAY_MAX_AGE_MS`).
    pub replay_max_age: Duration,
    /// Sockets one subject may hold open on this process
    /// (`APP_ENV_WS_MAX_SOCKETS_PER_SUBJECT`).
    pub max_sockets_per_subject: usize,
}

/// Open sockets per subject on this process.
#[derive(Debug, Clone, Default)]
pub struct SocketCounts(Arc<Mutex<HashMap<String, usize>>>);

impl SocketCounts {
    /// A place for one more socket of `subject`, unless it holds `max` already.
    fn reserve(&self, subject: &str, max: usize) -> Option<SocketSlot> {
        // Plain counters updated in one step: a poisoned lock is still consistent.
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(subject.to_owned()).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(SocketSlot {
            counts: self.clone(),
            subject: subject.to_owned(),
        })
    }

    /// Sockets `subject` holds now.
    pub fn count(&self, subject: &str) -> usize {
        let counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        counts.get(subject).copied().unwrap_or(0)
    }
}

/// One socket's place in [`SocketCounts`], given back when dropped (so however the socket
/// or the upgrade ends). A subject without sockets leaves no entry behind.
#[derive(Debug)]
struct SocketSlot {
    counts: SocketCounts,
    subject: String,
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.subject) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.subject);
            }
        }
    }
}

/// An authenticated socket's caller, until when its token holds, and its place in the
/// per-subject count.
struct Session {
    caller: Caller,
    expires: tokio::time::Instant,
    _slot: SocketSlot,
}

impl Session {
    /// Takes a place for `claims.sub`; `None` when it holds as many sockets as allowed.
    fn open(state: &AppState, claims: Claims) -> Option<Self> {
        let slot = state
            .ws_sockets
            .reserve(&claims.sub, state.ws.max_sockets_per_subject)?;
        Some(Self {
            expires: token_deadline(claims.exp, state.ws.token_leeway),
            caller: Caller::from(claims),
            _slot: slot,
        })
    }
}

/// When a socket authenticated by a token expiring at `exp` (seconds since the epoch)
/// must be closed: `exp` + `leeway`, when the verifier starts refusing it (that one counts
/// whole seconds, so it may still accept the token for under a second).
fn token_deadline(exp: i64, leeway: Duration) -> tokio::time::Instant {
    let end_ms = exp
        .saturating_mul(1000)
        .saturating_add(i64::try_from(leeway.as_millis()).unwrap_or(i64::MAX));
    let left_ms = end_ms.saturating_sub(chrono::Utc::now().timestamp_millis());
    let left = Duration::from_millis(u64::try_from(left_ms).unwrap_or(0)).min(MAX_SOCKET_LIFE);
    tokio::time::Instant::now() + left
}

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
    /// False when the replay stopped early (over 10,000 events, or the store failed) or
    /// started later than `since` (older than `APP_ENV_WS_REPLAY_MAX_AGE_MS`): read the
    /// ledgers with `GET /ledgers` instead.
    pub complete: bool,
    /// Where the replay started: `since`, or now − `APP_ENV_WS_REPLAY_MAX_AGE_MS` when
    /// `since` is older.
    pub from: chrono::DateTime<chrono::Utc>,
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
    /// `VALIDATION_ERROR` (not a subscribe/unsubscribe message, a bad merchant id, or a
    /// list over 1,000 merchants) or `FORBIDDEN` (a merchant the caller may not read).
    #[schema(pattern = "^(VALIDATION_ERROR|FORBIDDEN)$")]
    pub code: &'static str,
    /// Readable explanation.
    pub message: String,
}

/// What a client may send: one text frame holding one JSON object of one of these shapes
/// (`Auth` only as the first frame of a socket opened without a token, and only then).
#[derive(ToSchema)]
#[serde(untagged)]
#[schema(as = WsClientMessage)]
#[allow(dead_code)] // Documentation only: `command` parses messages by hand for precise errors.
pub enum ClientMessage {
    /// The first frame of a socket opened without a token: the JWT, within 5 s.
    Auth {
        /// The JWT (as in `Authorization: Bearer`).
        auth: String,
    },
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
        429 => ["TOO_MANY_REQUESTS"],
        500 => ["INTERNAL"],
        503 => ["SERVICE_UNAVAILABLE"],
    }
}

/// Live status events over a WebSocket.
///
/// A token in `Authorization: Bearer …` or `?access_token=…` is checked before the upgrade.
/// Browsers, which cannot set headers, upgrade without one and send `{"auth":"<JWT>"}` as the
/// first frame within 5 s; nothing is sent before it is verified. The socket is closed (4001)
/// when the token expires (`exp` + `APP_ENV_AUTH_LEEWAY_SECS`): reconnect with a fresh token
/// and `?since=`. At most `APP_ENV_WS_MAX_SOCKETS_PER_SUBJECT` sockets per subject: beyond,
/// 429.
/// The server sends JSON text frames (`WsServerFrame`): `ledger.status` and `ledger.progress`
/// events (docs/api.md) of every merchant the caller may read; a client narrows the flow with
/// `{"subscribe":["m_1"]}` / `{"unsubscribe":[…]}` (`WsClientMessage`), a merchant it may not
/// read is an error frame with `FORBIDDEN`. `?since=` first replays the status changes after
/// that time (at most `APP_ENV_WS_REPLAY_MAX_AGE_MS`, 24 h, back), then a
/// `{"replay":{"events":N,"complete":true,"from":…}}` frame, then live events.
/// Pings every 20 s; a client silent for two intervals is closed.
///
/// Close codes: `1001` server shutting down or no answer to pings; `1003` a binary frame;
/// `1008` the first frame of a socket opened without a token is not `{"auth":"<JWT>"}`;
/// `1011` authorization could not be looked up; `4001` no valid token (no `auth` frame within
/// 5 s, an invalid one, or the token expired); `4008` the client fell too far behind (events
/// would be lost): reconnect with `?since=`; `4029` too many sockets for this subject.
/// A client message over 64 KiB ends the connection.
#[utoipa::path(
    get,
    path = "/ws",
    tag = "live",
    operation_id = "watchLedgers",
    params(
        ("access_token" = Option<String>, Query, description = "The JWT, for non-browser clients that cannot set `Authorization`; browsers send `{\"auth\":\"<JWT>\"}` as the first frame instead"),
        ("since" = Option<chrono::DateTime<chrono::Utc>>, Query, description = "Replay the status changes recorded after this RFC 3339 time first (at most APP_ENV_WS_REPLAY_MAX_AGE_MS back: an older time replays from now minus that, with `complete: false`)", example = "2026-11-24T10:00:00Z"),
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
    security(("bearer" = []), ("accessToken" = []), ()),
    extensions(("x-websocket" = json!({
        "serverFrames": {"$ref": "#/components/schemas/WsServerFrame"},
        "clientMessages": {"$ref": "#/components/schemas/WsClientMessage"},
        "firstFrameAuth": "without a token in Authorization or ?access_token, send {\"auth\":\"<JWT>\"} within 5 s",
        "closeCodes": {
            "1001": "server shutting down, or no answer to pings",
            "1003": "the client sent a binary frame",
            "1008": "the first frame of a socket opened without a token is not {\"auth\":\"<JWT>\"}",
            "1011": "authorization could not be looked up: reconnect later",
            "4001": "no valid token: no auth frame within 5 s, an invalid token, or the token expired (exp + leeway): reconnect with a fresh token and ?since=",
            "4008": "the client fell too far behind: reconnect with ?since=",
            "4029": "too many sockets for this subject (after first-frame authentication)"
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
    let token = match token {
        Some(token) => Some(token),
        None => bearer_token(&parts.headers)?.map(str::to_owned),
    };
    let ws = WebSocketUpgrade::from_request_parts(&mut parts, &state).await;
    let Some(token) = token else {
        // Only a real upgrade can authenticate with its first frame; a plain request
        // without a token is simply unauthenticated.
        let ws = ws.map_err(|_| {
            ApiError::Unauthorized(
                "missing token: send Authorization: Bearer <token>, or upgrade and send {\"auth\":\"<JWT>\"} as the first frame"
                    .into(),
            )
        })?;
        return Ok(ws
            .max_message_size(MAX_CLIENT_MESSAGE)
            .on_upgrade(move |socket| authenticate_then_serve(socket, state, since)));
    };
    // The token is checked before anything else: a refused caller never gets a socket.
    let claims = state
        .verifier
        .verify(&token)
        .await
        .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
    let max = state.ws.max_sockets_per_subject;
    let session = Session::open(&state, claims).ok_or_else(|| {
        ApiError::TooManyRequests(format!(
            "this subject already holds {max} WebSockets, the most allowed; close one first"
        ))
    })?;
    let scope = scope(&state, &session.caller).await?;
    let ws = ws.map_err(|e| {
        ApiError::Validation(InvalidInput::new(
            "upgrade",
            format!("expected a WebSocket upgrade: {e}"),
        ))
    })?;
    // The session (and its place in the per-subject count) moves into the socket's task,
    // or is dropped with this closure if the upgrade never completes.
    Ok(ws
        .max_message_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| serve(socket, state, session, scope, since)))
}

/// A socket opened without a token: its first frame must be `{"auth":"<JWT>"}` within
/// [`AUTH_FRAME_WITHIN`]; until then it is sent nothing.
async fn authenticate_then_serve(
    mut socket: WebSocket,
    state: AppState,
    since: Option<chrono::DateTime<chrono::Utc>>,
) {
    let claims = match first_frame(&mut socket, &state).await {
        Ok(claims) => claims,
        Err(Some(frame)) => return refuse(socket, frame).await,
        Err(None) => return, // the client went away
    };
    let max = state.ws.max_sockets_per_subject;
    let Some(session) = Session::open(&state, claims) else {
        let reason = format!("at most {max} sockets per subject");
        return refuse(socket, close(CLOSE_TOO_MANY, &reason)).await;
    };
    let scope = match scope(&state, &session.caller).await {
        Ok(scope) => scope,
        Err(e) => {
            tracing::warn!(error = %e, "looking up a WebSocket client's scope failed");
            let frame = close(CLOSE_INTERNAL, "authorization unavailable; reconnect later");
            return refuse(socket, frame).await;
        }
    };
    serve(socket, state, session, scope, since).await
}

/// What a socket opened without a token must send first.
const AUTH_USAGE: &str = "expected {\"auth\":\"<JWT>\"} as the first frame";

/// The verified claims of the first frame; `Err` with the close frame to send, or `None`
/// when the client went away.
async fn first_frame(socket: &mut WebSocket, state: &AppState) -> Result<Claims, Option<Message>> {
    let read = async {
        loop {
            match socket.recv().await {
                Some(Ok(Message::Text(text))) => return Ok(text),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Binary(_))) => return Err(Some(close(CLOSE_POLICY, AUTH_USAGE))),
                Some(Ok(Message::Close(_)) | Err(_)) | None => return Err(None),
            }
        }
    };
    let text = match tokio::time::timeout(AUTH_FRAME_WITHIN, read).await {
        Ok(text) => text?,
        Err(_) => {
            return Err(Some(close(
                CLOSE_UNAUTHORIZED,
                "no {\"auth\":\"<JWT>\"} frame within 5 s",
            )));
        }
    };
    let token = match serde_json::from_str::<serde_json::Value>(text.as_str()) {
        Ok(serde_json::Value::Object(object)) if object.len() == 1 => match object.get("auth") {
            Some(serde_json::Value::String(token)) => token.clone(),
            _ => return Err(Some(close(CLOSE_POLICY, AUTH_USAGE))),
        },
        _ => return Err(Some(close(CLOSE_POLICY, AUTH_USAGE))),
    };
    state
        .verifier
        .verify(&token)
        .await
        .map_err(|e| Some(close(CLOSE_UNAUTHORIZED, &e.to_string())))
}

/// Sends `frame` on a socket that will not be served and lets it go.
async fn refuse(mut socket: WebSocket, frame: Message) {
    let _ = tokio::time::timeout(CLOSE_PATIENCE, async {
        if socket.send(frame).await.is_ok() {
            let _ = socket.close().await;
        }
    })
    .await;
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

/// Why the connection ends, as the close frame says it (cut to the 123 bytes a close
/// frame's reason may hold, RFC 6455 §5.5).
fn close(code: u16, reason: &str) -> Message {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from(reason[..end].to_owned()),
    }))
}

/// Status events replayed at most on a reconnect; older ones need `GET /ledgers/:id`.
const MAX_REPLAY: usize = 10_000;
/// How long a replay may wait for room in a client's queue before the client is too slow.
const REPLAY_PATIENCE: Duration = Duration::from_secs(10);

/// Queues the status changes since `since` (or since now − the maximum replay age, when
/// older) the client may see, then a `{"replay":{"events":N,"complete":bool,"from":…}}`
/// frame marking where live events begin. `Err` when the client does not take them in time.
async fn replay(
    state: &AppState,
    filter: &Filter,
    since: chrono::DateTime<chrono::Utc>,
    frames: &mpsc::Sender<Message>,
) -> Result<(), ()> {
    let oldest = chrono::Duration::from_std(state.ws.replay_max_age)
        .ok()
        .and_then(|age| chrono::Utc::now().checked_sub_signed(age))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
    // An older `since` is not an error: the client gets what is allowed and, through
    // `complete: false`, learns it must re-read the ledgers for the rest.
    let (from, mut complete) = if since < oldest {
        (oldest, false)
    } else {
        (since, true)
    };
    // The scope goes into the store's query: a client never costs reading every
    // merchant's events, and one that may read nothing costs no query at all.
    let merchants = match &filter.scope {
        MerchantScope::All => None,
        MerchantScope::Only(list) => Some(list.as_slice()),
    };
    let (mut after, mut sent) = (0, 0usize);
    'pages: while merchants.is_none_or(|list| !list.is_empty()) {
        let page = match state
            .store
            .status_events_since(merchants, from, after, 500)
            .await
        {
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
            from,
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
    session: Session,
    scope: MerchantScope,
    since: Option<chrono::DateTime<chrono::Utc>>,
) {
    let _connected = Connected::new();
    let caller = &session.caller;
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
    if let Some(since) = since {
        let ending = tokio::select! {
            replayed = replay(&state, &filter, since, &frames) => match replayed {
                Ok(()) => None,
                Err(()) => Some(slow(caller)),
            },
            _ = tokio::time::sleep_until(session.expires) => Some(expired()),
            _ = state.shutdown.cancelled() => Some(close(1001, "server shutting down")),
        };
        if ending.is_some() {
            drop(frames);
            finish(writer, closing, ending).await;
            return;
        }
    }
    // Keep-alive: a ping every interval; a client that has said nothing (not even a pong)
    // for two intervals is gone, and its task must not linger until TCP gives up.
    let mut ping = tokio::time::interval(state.ws.ping_interval);
    ping.reset();
    let mut last_heard = tokio::time::Instant::now();
    let mut rescope = tokio::time::interval(SCOPE_EVERY);
    rescope.reset();
    let ending = loop {
        tokio::select! {
            biased;
            _ = state.shutdown.cancelled() => break Some(close(1001, "server shutting down")),
            // The token was checked once, at the start: the socket must not outlive it.
            _ = tokio::time::sleep_until(session.expires) => break Some(expired()),
            message = incoming.next() => {
                if matches!(message, Some(Ok(_))) {
                    last_heard = tokio::time::Instant::now();
                }
                match message {
                Some(Ok(Message::Text(text))) => {
                    let reply = command(&mut filter, text.as_str());
                    if frames.try_send(Message::Text(reply.into())).is_err()
                    {
                        break Some(slow(caller));
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
                            Event::Status(_) => break Some(slow(caller)),
                        }
                    }
                }
                // This client's share of the bus overflowed: events are lost, say so.
                Err(broadcast::error::RecvError::Lagged(_)) => break Some(slow(caller)),
                Err(broadcast::error::RecvError::Closed) => {
                    break Some(close(1001, "server shutting down"));
                }
            },
            _ = ping.tick() => {
                if last_heard.elapsed() > state.ws.ping_interval * 2 {
                    break Some(close(1001, "no answer to pings"));
                }
                if frames.try_send(Message::Ping(Default::default())).is_err() {
                    break Some(slow(caller));
                }
            }
            _ = rescope.tick() => {
                // A failed lookup keeps the last answer; a revoke shrinks it.
                if let Ok(scope) = scope_of(&state, caller).await {
                    filter.scope = scope;
                }
            }
        }
    };
    drop(frames);
    finish(writer, closing, ending).await;
}

/// The close frame of a socket whose token expired.
fn expired() -> Message {
    close(
        CLOSE_UNAUTHORIZED,
        "token expired; reconnect with a fresh token and ?since=",
    )
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
    let too_many = |what: &str| {
        error(
            "VALIDATION_ERROR",
            format!(
                "{key}: at most {MAX_FILTER_MERCHANTS} merchants may be {what} at once; \
                 subscribe to the ones wanted instead"
            ),
        )
    };
    if key == "unsubscribe" {
        match &mut filter.only {
            Some(only) => {
                for m in &merchants {
                    only.remove(m);
                }
            }
            None => {
                // Only merchants that would be delivered need excluding: the set stays
                // within the scope (and the cap, for a scope of every merchant).
                let new: BTreeSet<&MerchantId> = merchants
                    .iter()
                    .filter(|m| filter.scope.contains(m) && !filter.excluded.contains(*m))
                    .collect();
                if filter.excluded.len() + new.len() > MAX_FILTER_MERCHANTS {
                    return too_many("unsubscribed");
                }
                filter.excluded.extend(new.into_iter().cloned());
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
    let subscribed = filter.only.as_ref().map_or(0, BTreeSet::len);
    let new: BTreeSet<&MerchantId> = merchants
        .iter()
        .filter(|m| filter.only.as_ref().is_none_or(|only| !only.contains(*m)))
        .collect();
    if subscribed + new.len() > MAX_FILTER_MERCHANTS {
        return too_many("subscribed to");
    }
    for m in &merchants {
        filter.excluded.remove(m);
    }
    filter
        .only
        .get_or_insert_with(BTreeSet::new)
        .extend(new.into_iter().cloned());
    frame(&ServerFrame::Subscribed(SubscribedFrame {
        subscribed: names,
    }))
}
