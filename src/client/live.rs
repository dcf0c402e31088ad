//! The WebSocket side of following a batch: a background task that holds a socket to
//! `GET /ws`, passes on the `batch.progress` events of one batch, and says when the socket
//! is lost (it then reconnects, pausing longer each time) or cannot be had at all (a refused
//! token, a proxy without WebSockets). The socket only speeds things up: the follower reads
//! `GET /batches/{id}` when it is lost and at intervals whatever it says, so a dropped frame
//! never leaves it waiting.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use super::api::{Endpoint, transport_reason};
use super::wire::{BatchProgress, ErrorBody};
use crate::domain::BatchId;

/// How long the upgrade may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// After this long without a frame the client pings: the service answers, so a silent
/// connection is a dead one.
const PING_AFTER: Duration = Duration::from_secs(15);
/// A socket silent for this long (a ping unanswered) is given up and replaced.
const SILENT_LIMIT: Duration = Duration::from_secs(45);
/// The first pause before reconnecting; it doubles up to [`LONGEST_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_secs(1);
/// The longest pause between two attempts.
const LONGEST_PAUSE: Duration = Duration::from_secs(30);
/// The largest frame accepted: events are a few hundred bytes.
const MAX_MESSAGE: usize = 1 << 20;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the socket tells the follower.
#[derive(Debug)]
pub enum Live {
    /// A socket is open: changes from now on arrive as [`Live::Progress`] (those before it
    /// must be read).
    Connected,
    /// A `batch.progress` event of the batch followed.
    Progress(BatchProgress),
    /// The socket closed or could not be opened; another attempt follows after a pause.
    Lost(String),
    /// The service gives this client no socket (a 4xx to the upgrade: the token refused, no
    /// WebSocket route behind a proxy); no more attempts are made.
    Unavailable(String),
}

/// A running socket task for one batch; dropping it ends the task and closes the socket.
pub struct Watch {
    events: mpsc::Receiver<Live>,
    task: JoinHandle<()>,
}

impl Watch {
    /// Starts following `batch` on `endpoint`'s WebSocket.
    pub fn start(endpoint: Endpoint, batch: BatchId) -> Self {
        let (tx, events) = mpsc::channel(64);
        let task = tokio::spawn(run(endpoint, batch, tx));
        Self { events, task }
    }

    /// The next thing the socket has to say; `None` once it has given up for good (after
    /// [`Live::Unavailable`]).
    pub async fn next(&mut self) -> Option<Live> {
        self.events.recv().await
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How one socket ended.
enum Ended {
    /// The follower is gone: nothing more to do.
    Unwatched,
    /// The socket is gone, for this reason.
    Lost(String),
}

/// Why no socket could be opened.
enum Refused {
    /// For good (a 4xx other than 429).
    Permanently(String),
    /// For now.
    Transiently(String),
}

/// Opens sockets one after the other until the follower goes away or the service refuses.
async fn run(endpoint: Endpoint, batch: BatchId, tx: mpsc::Sender<Live>) {
    let mut pause = FIRST_PAUSE;
    loop {
        let ended = match connect(&endpoint).await {
            Ok(socket) => {
                let opened = Instant::now();
                let ended = follow(socket, batch, &tx).await;
                if opened.elapsed() >= LONGEST_PAUSE {
                    // It held a while: the next attempt need not wait long.
                    pause = FIRST_PAUSE;
                }
                ended
            }
            Err(Refused::Permanently(why)) => {
                let _ = tx.send(Live::Unavailable(why)).await;
                return;
            }
            Err(Refused::Transiently(why)) => Ended::Lost(why),
        };
        match ended {
            Ended::Unwatched => return,
            Ended::Lost(why) => {
                if tx.send(Live::Lost(why)).await.is_err() {
                    return;
                }
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

/// Upgrades to a WebSocket with the token in `Authorization`.
async fn connect(endpoint: &Endpoint) -> Result<Socket, Refused> {
    let mut request = endpoint
        .ws_url()
        .into_client_request()
        .map_err(|e| Refused::Permanently(format!("bad WebSocket URL: {e}")))?;
    let mut bearer = HeaderValue::from_str(&format!("Bearer {}", endpoint.token().expose()))
        .map_err(|_| Refused::Permanently("the token cannot go in a header".into()))?;
    bearer.set_sensitive(true);
    request.headers_mut().insert(header::AUTHORIZATION, bearer);
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let connector = endpoint.tls().map(Connector::Rustls);
    let upgrade =
        tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, connector);
    match tokio::time::timeout(CONNECT_TIMEOUT, upgrade).await {
        Err(_) => Err(Refused::Transiently(format!(
            "no WebSocket within {}s",
            CONNECT_TIMEOUT.as_secs()
        ))),
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(tungstenite::Error::Http(response))) => {
            let status = response.status();
            let said = response
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice::<ErrorBody>(b).ok())
                .map(|b| format!(": {}", b.error.message))
                .unwrap_or_default();
            let why = format!("the WebSocket upgrade was answered {status}{said}");
            if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
                Err(Refused::Permanently(why))
            } else {
                Err(Refused::Transiently(why))
            }
        }
        Ok(Err(tungstenite::Error::Io(e))) => Err(Refused::Transiently(transport_reason(&e))),
        Ok(Err(e)) => Err(Refused::Transiently(e.to_string())),
    }
}

/// Passes on `batch`'s progress events until the socket ends or the follower goes away.
async fn follow(mut socket: Socket, batch: BatchId, tx: &mpsc::Sender<Live>) -> Ended {
    // An empty subscription narrows the flow to no merchant: the ledgers' own events stop,
    // while a batch's reach its creator whatever it subscribed to (docs/api.md).
    let narrow = Message::Text(r#"{"subscribe":[]}"#.into());
    if let Err(e) = socket.send(narrow).await {
        return Ended::Lost(format!("the WebSocket failed: {e}"));
    }
    if tx.send(Live::Connected).await.is_err() {
        return Ended::Unwatched;
    }
    let mut heard = Instant::now();
    let mut pinged = false;
    loop {
        let wait = if pinged {
            SILENT_LIMIT.saturating_sub(heard.elapsed())
        } else {
            PING_AFTER.saturating_sub(heard.elapsed())
        };
        let frame = match tokio::time::timeout(wait, socket.next()).await {
            Ok(frame) => frame,
            Err(_) if pinged => {
                return Ended::Lost(format!(
                    "the WebSocket was silent for {}s",
                    SILENT_LIMIT.as_secs()
                ));
            }
            Err(_) => {
                pinged = true;
                if let Err(e) = socket.send(Message::Ping(Default::default())).await {
                    return Ended::Lost(format!("the WebSocket failed: {e}"));
                }
                continue;
            }
        };
        heard = Instant::now();
        pinged = false;
        match frame {
            Some(Ok(Message::Text(text))) => {
                if let Some(event) = progress_of(&text, batch)
                    && tx.send(Live::Progress(event)).await.is_err()
                {
                    return Ended::Unwatched;
                }
            }
            Some(Ok(Message::Close(frame))) => {
                let why = match frame {
                    Some(f) => format!(
                        "the service closed the WebSocket ({} {})",
                        u16::from(f.code),
                        f.reason
                    ),
                    None => "the service closed the WebSocket".to_owned(),
                };
                return Ended::Lost(why.trim_end().to_owned());
            }
            // Pings are answered by the library; pongs and binary frames say nothing.
            Some(Ok(_)) => {}
            Some(Err(e)) => return Ended::Lost(format!("the WebSocket failed: {e}")),
            None => return Ended::Lost("the WebSocket ended".to_owned()),
        }
    }
}

/// `text` as a `batch.progress` event of `batch`; `None` for any other frame (another
/// batch's progress reaches a reader of every merchant too).
fn progress_of(text: &str, batch: BatchId) -> Option<BatchProgress> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    if value.get("event")?.as_str()? != "batch.progress" {
        return None;
    }
    let event: BatchProgress = serde_json::from_value(value).ok()?;
    (event.batch_id == batch).then_some(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_batchs_progress_is_passed_on() {
        let ours: BatchId = "42".parse().unwrap();
        let event = |id: &str| {
            format!(
                r#"{{"event":"batch.progress","batchId":"{id}","status":"RUNNING","total":2,"counts":{{"PENDING":1,"PROCESSING":1,"COMPLETED":0,"REJECTED":0,"EXISTING":0}},"createdBy":"ops","at":"2026-11-01T10:00:00Z"}}"#
            )
        };
        assert_eq!(progress_of(&event("42"), ours).unwrap().total, 2);
        assert!(progress_of(&event("43"), ours).is_none());
        assert!(progress_of(r#"{"subscribed":[]}"#, ours).is_none());
        assert!(progress_of(r#"{"event":"ledger.status","ledgerId":"1"}"#, ours).is_none());
        assert!(progress_of("not json", ours).is_none());
    }
}
