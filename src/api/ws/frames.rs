//! The frames of `/ws`: what the server sends (documented as `WsServerFrame`), what a
//! client may send (`WsClientMessage`), and close frames.

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::Event;

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

pub(super) fn frame(f: &ServerFrame) -> String {
    serde_json::to_string(f).unwrap_or_default()
}

/// Why the connection ends, as the close frame says it (cut to the 123 bytes a close
/// frame's reason may hold, RFC 6455 §5.5).
pub(super) fn close(code: u16, reason: &str) -> Message {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from(reason[..end].to_owned()),
    }))
}
