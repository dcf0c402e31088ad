//! A served socket: authentication by the first frame when the upgrade had no token, the
//! optional `?since=` replay, then live events through the client's bounded queue,
//! keep-alive pings, scope refreshes, and the close.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket};
use futures::StreamExt;

use super::filter::{Filter, command};
use super::frames::{ReplayFrame, ReplaySummary, ServerFrame, close, frame};
use super::hub::{Client, Membership};
use super::session::{self, Session, first_frame, refuse};
use super::{CLOSE_INTERNAL, CLOSE_PATIENCE, CLOSE_TOO_MANY, CLOSE_TOO_SLOW, CLOSE_UNAUTHORIZED};
use crate::api::state::AppState;
use crate::auth::{Caller, MerchantScope};
use crate::domain::Event;

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
    client: &Client,
    since: chrono::DateTime<chrono::Utc>,
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
    let scope = client.filter().scope.clone();
    let merchants = match &scope {
        MerchantScope::All => None,
        MerchantScope::Only(list) => Some(list.as_slice()),
    };
    let queue = async |frame: String| {
        tokio::time::timeout(
            REPLAY_PATIENCE,
            client.outbox.push_replayed(Message::Text(frame.into())),
        )
        .await
        .map_err(|_| ())
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
            if !client.filter().wants(&event.merchant_id) {
                continue;
            }
            if sent == MAX_REPLAY {
                complete = false;
                break 'pages;
            }
            let Ok(text) = serde_json::to_string(&Event::Status(event)) else {
                continue;
            };
            queue(text).await?;
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
    queue(marker).await
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
    let (sink, mut incoming) = socket.split();
    // Joined before the replay is read, so nothing falls between the two (an event may come
    // twice: replayed, then live); live events wait until the replay is queued.
    let member = state
        .ws_hub
        .join(&caller.subject, Filter::new(scope), since.is_some());
    let client = member.client.clone();
    // The writer owns the socket's sending half; everything else only queues frames.
    let mut writer = tokio::spawn({
        let client = client.clone();
        async move { client.outbox.write(sink).await }
    });
    if let Some(since) = since {
        let started = Instant::now();
        let ending = tokio::select! {
            replayed = replay(&state, &client, since) => match replayed {
                Ok(()) => None,
                Err(()) => Some(slow(caller)),
            },
            _ = tokio::time::sleep_until(session.expires) => Some(expired()),
            _ = state.shutdown.cancelled() => Some(close(1001, "server shutting down")),
            // Live events held during the replay overflowed.
            () = client.outbox.too_slow() => Some(slow(caller)),
        };
        metrics::histogram!("ledger_ws_replay_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        if ending.is_some() {
            finish(member, Some(writer), ending).await;
            return;
        }
        client.outbox.end_replay();
    }
    // Keep-alive: a ping every interval; a client that has said nothing (not even a pong)
    // for two intervals is gone, and its task must not linger until TCP gives up.
    let mut ping = tokio::time::interval(state.ws.ping_interval);
    ping.reset();
    let mut last_heard = tokio::time::Instant::now();
    let mut rescope = tokio::time::interval(SCOPE_EVERY);
    rescope.reset();
    // Made once, not at every turn of the loop (ten thousand sockets turn it often).
    let shutdown = state.shutdown.cancelled();
    let expiry = tokio::time::sleep_until(session.expires);
    let too_slow = client.outbox.too_slow();
    tokio::pin!(shutdown, expiry, too_slow);
    let ending = loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break Some(close(1001, "server shutting down")),
            // The token was checked once, at the start: the socket must not outlive it.
            () = &mut expiry => break Some(expired()),
            // The fan-out could not queue a frame this client may not miss.
            () = &mut too_slow => break Some(slow(caller)),
            // A write failed: the client is gone.
            _ = &mut writer => {
                drop(member);
                return;
            }
            message = incoming.next() => {
                if matches!(message, Some(Ok(_))) {
                    last_heard = tokio::time::Instant::now();
                }
                match message {
                Some(Ok(Message::Text(text))) => {
                    let reply = member.refilter(|filter| command(filter, text.as_str()));
                    if !client.outbox.push(Message::Text(reply.into())) {
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
            _ = ping.tick() => {
                if last_heard.elapsed() > state.ws.ping_interval * 2 {
                    break Some(close(1001, "no answer to pings"));
                }
                if !client.outbox.push(Message::Ping(Default::default())) {
                    break Some(slow(caller));
                }
            }
            _ = rescope.tick() => {
                // A failed lookup keeps the last answer; a revoke shrinks it.
                if let Ok(scope) = session::scope(&state, caller).await
                    && client.filter().scope != scope
                {
                    member.refilter(|filter| filter.scope = scope);
                }
            }
        }
    };
    finish(member, Some(writer), ending).await;
}

/// The close frame of a socket whose token expired.
fn expired() -> Message {
    close(
        CLOSE_UNAUTHORIZED,
        "token expired; reconnect with a fresh token and ?since=",
    )
}

/// Leaves the fan-out, hands `frame` (if any) to the writer as the last frame ahead of
/// whatever is still queued, and waits for it; a client that reads nothing at all is cut
/// off after [`CLOSE_PATIENCE`], so no task outlives it.
async fn finish(
    member: Membership,
    writer: Option<tokio::task::JoinHandle<()>>,
    frame: Option<Message>,
) {
    let client: Arc<Client> = member.client.clone();
    client.outbox.close(frame);
    drop(member);
    if let Some(mut writer) = writer
        && tokio::time::timeout(CLOSE_PATIENCE, &mut writer)
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
