//! Who is on a socket: the caller authenticated by its token (before the upgrade, or by
//! the first frame), until when the token holds, its place in the per-subject count, and
//! what it may read.

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures::SinkExt;

use super::frames::close;
use super::{AUTH_FRAME_WITHIN, CLOSE_PATIENCE, CLOSE_POLICY, CLOSE_UNAUTHORIZED};
use crate::api::error::ApiError;
use crate::api::state::{AppState, SocketSlot};
use crate::auth::{Caller, Claims, MerchantScope, Permission};

/// A token valid for longer than this keeps its socket for this long at most; it also keeps
/// the deadline arithmetic in range for an absurd `exp`.
const MAX_SOCKET_LIFE: Duration = Duration::from_secs(365 * 86_400);

/// An authenticated socket's caller, until when its token holds, and its place in the
/// per-subject count.
pub(super) struct Session {
    /// The authenticated caller.
    pub(super) caller: Caller,
    /// When its token stops holding.
    pub(super) expires: tokio::time::Instant,
    _slot: SocketSlot,
}

impl Session {
    /// Takes a place for `claims.sub`; `None` when it holds as many sockets as allowed.
    pub(super) fn open(state: &AppState, claims: Claims) -> Option<Self> {
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

/// What a socket opened without a token must send first.
const AUTH_USAGE: &str = "expected {\"auth\":\"<JWT>\"} as the first frame";

/// The verified claims of the first frame; `Err` with the close frame to send, or `None`
/// when the client went away.
pub(super) async fn first_frame(
    socket: &mut WebSocket,
    state: &AppState,
) -> Result<Claims, Option<Message>> {
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
pub(super) async fn refuse(mut socket: WebSocket, frame: Message) {
    let _ = tokio::time::timeout(CLOSE_PATIENCE, async {
        if socket.send(frame).await.is_ok() {
            let _ = socket.close().await;
        }
    })
    .await;
}

pub(super) async fn scope(state: &AppState, caller: &Caller) -> Result<MerchantScope, ApiError> {
    state
        .authz
        .scope(&caller.subject, Permission::Read)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))
}
