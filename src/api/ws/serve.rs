//! A served socket: authentication by the first frame when the upgrade had no token, the
//! optional `?since=` replay, then live events through the client's bounded queue,
//! keep-alive pings, scope refreshes, and the close.

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures::{SinkExt, StreamExt};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::filter::{Filter, command};
use super::frames::{ReplayFrame, ReplaySummary, ServerFrame, close, frame};
use super::session::{self, Session, first_frame, refuse};
use super::{CLOSE_INTERNAL, CLOSE_PATIENCE, CLOSE_TOO_MANY, CLOSE_TOO_SLOW, CLOSE_UNAUTHORIZED};
use crate::api::state::AppState;
use crate::auth::{Caller, MerchantScope};
use crate::domain::{BatchStatus, Event};

/// Frames waiting for one client's socket.
const CLIENT_QUEUE: usize = 256;
/// How often what the caller may read is looked up again.
const SCOPE_EVERY: Duration = Duration::from_secs(1);

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
                tracing::warn!(target: "ledger::api::ws", error = %e, "replaying status events failed");
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

/// A socket opened without a token: its first frame must be `{"auth":"<JWT>"}` within
/// [`AUTH_FRAME_WITHIN`]; until then it is sent nothing.
pub(super) async fn authenticate_then_serve(
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
    let scope = match session::scope(&state, &session.caller).await {
        Ok(scope) => scope,
        Err(e) => {
            tracing::warn!(target: "ledger::api::ws", error = %e, "looking up a WebSocket client's scope failed");
            let frame = close(CLOSE_INTERNAL, "authorization unavailable; reconnect later");
            return refuse(socket, frame).await;
        }
    };
    serve(socket, state, session, scope, since).await
}

/// Serves an authenticated socket until it ends.
pub(super) async fn serve(
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
    let mut filter = Filter::new(scope);
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
                    if !filter.wants_event(&event, &caller.subject) {
                        continue;
                    }
                    let text = match serde_json::to_string(&event) {
                        Ok(t) => t,
                        Err(e) => {
                            tracing::error!(target: "ledger::api::ws", error = %e, "serialising an event failed");
                            continue;
                        }
                    };
                    if frames.try_send(Message::Text(text.into())).is_err() {
                        match event {
                            Event::Progress(_) => {
                                // The next progress frame carries newer counts.
                                metrics::counter!("ledger_ws_frames_dropped_total").increment(1);
                            }
                            Event::BatchProgress(b) if b.status == BatchStatus::Running => {
                                // Likewise, until the batch's last one.
                                metrics::counter!("ledger_ws_frames_dropped_total").increment(1);
                            }
                            Event::Status(_) | Event::BatchProgress(_) => break Some(slow(caller)),
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
                if let Ok(scope) = session::scope(&state, caller).await {
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

fn slow(caller: &Caller) -> Message {
    metrics::counter!("ledger_ws_slow_client_closes_total").increment(1);
    tracing::warn!(target: "ledger::api::ws", subject = %caller.subject, "closing a WebSocket client that fell too far behind");
    close(
        CLOSE_TOO_SLOW,
        "client too slow: events would be lost; reconnect",
    )
}
