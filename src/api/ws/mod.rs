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
//! - One fan-out task per api process ([`hub`]) reads the event bus, serialises each event
//!   once and queues that shared frame on the clients that want it (indexed by merchant).
//!   Each client has a bounded queue between the fan-out and its socket, allocated only
//!   while it holds frames ([`outbox`]). A progress frame that does not fit is dropped
//!   (the next one carries newer counts); a status frame that does not fit closes the
//!   socket with code 4008 and a reason, so the client reconnects instead of silently
//!   missing a state change. A slow client never slows a worker or another client: the
//!   fan-out never waits for a socket. Frames queued together leave in one write.
//! - `?since=<RFC 3339>` first replays the status changes recorded on the timelines after
//!   that time — at most `APP_ENV_WS_REPLAY_MAX_AGE_MS` (24 h) back, of the merchants the
//!   client may see (filtered in the store's query; none read for an empty scope), at most
//!   10,000, oldest first — then a `{"replay":{"events":N,"complete":…,"from":…}}` frame,
//!   then live events: a reconnecting client misses no state change (it may see one
//!   twice), or learns from `complete: false` that it must re-read the ledgers.
//! - Pings every `APP_ENV_WS_PING_INTERVAL_MS` (20 s); a client silent for two intervals
//!   (no pong, no message) is closed; on shutdown every socket is closed with 1001.
//!
//! Metrics: `ledger_ws_clients` (sockets on this process), `ledger_ws_events_total` (events
//! the fan-out read), `ledger_ws_fanout_frames_total` (frames it queued on clients),
//! `ledger_ws_fanout_duration_seconds` (queuing one event on all its clients),
//! `ledger_ws_frames_sent_total`, `ledger_ws_writes_total` (frames leave in batches),
//! `ledger_ws_frames_dropped_total`,
//! `ledger_ws_slow_client_closes_total`, `ledger_ws_replay_duration_seconds`.

pub mod frames;

mod filter;
mod hub;
mod outbox;
mod serve;
mod session;

use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, RawQuery, State};
use axum::http::request::Parts;
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, error_responses};
use super::extract::bearer_token;
use super::state::AppState;
pub use super::state::{SocketCounts, WsSettings};
use crate::domain::InvalidInput;
pub use hub::Hub;
use serve::{authenticate_then_serve, serve};
use session::{Session, scope};

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
/// How long a closing socket may take to flush its close frame before it is dropped.
const CLOSE_PATIENCE: Duration = Duration::from_secs(10);
/// A client message larger than this is refused.
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;
/// What a socket reads at once (the library's default, 128 KiB, is allocated and touched
/// per socket: ten thousand idle sockets would hold 1.3 GB for messages of a few bytes).
/// A larger message grows the buffer up to [`MAX_CLIENT_MESSAGE`].
const READ_BUFFER: usize = 4 * 1024;
/// Frames are gathered up to this size before a write; a flush (after each batch of
/// frames the fan-out queued) writes them whatever the size. Bounds what the write buffer
/// keeps allocated after a burst.
const WRITE_BUFFER: usize = 4 * 1024;
/// A write buffer past this (a socket whose writes keep failing) ends the connection.
const MAX_WRITE_BUFFER: usize = 1024 * 1024;

/// The socket settings of every upgrade.
fn configured(ws: WebSocketUpgrade) -> WebSocketUpgrade {
    ws.max_message_size(MAX_CLIENT_MESSAGE)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
}

/// The WebSocket route, relative to the API's base path.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(upgrade))
}

error_responses! {
    /// What the upgrade can answer instead of 101.
    UpgradeErrors [Validation, Unauthorized, TooManyRequests, Internal, ServiceUnavailable]
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
        return Ok(
            configured(ws).on_upgrade(move |socket| authenticate_then_serve(socket, state, since))
        );
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
    Ok(configured(ws).on_upgrade(move |socket| serve(socket, state, session, scope, since)))
}
