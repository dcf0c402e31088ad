//! One client's outbox: the frames waiting for its socket, and the writer task that sends
//! them.
//!
//! The queue is a `VecDeque` behind a mutex that the writer empties in one move: a client
//! with nothing waiting holds no allocation at all (ten thousand idle sockets cost nothing
//! here), and a writer that wakes finds every frame queued since its last wake and sends
//! them with one flush — under load, frames share system calls instead of each paying
//! one. Event frames are shared: queuing one on a client clones a reference, not the text.
//!
//! While a `?since=` replay runs, live events are held aside and released after the replay
//! marker, so a client sees replayed events, then the marker, then live ones.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use axum::extract::ws::{Message, WebSocket};
use futures::SinkExt;
use futures::stream::SplitSink;
use tokio::sync::Notify;

/// Frames waiting for one client's socket before a status frame cannot be queued (the
/// client is too slow) or a progress frame is dropped.
pub(super) const CLIENT_QUEUE: usize = 256;
/// Live events held while a replay runs, at most (the replay itself takes its time).
const MAX_HELD: usize = 4096;

/// What became of a frame handed to [`Outbox::push_event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pushed {
    /// Queued (or held during a replay); the writer is not woken: the fan-out does, at its
    /// next flush ([`Outbox::wake`]), so that what arrives meanwhile shares one write.
    Queued {
        /// The queue was empty: this client's writer needs waking at the next flush.
        first: bool,
        /// The queue is half full: wake the writer now, not at the flush (a burst of
        /// events must not fill it before the writer even starts).
        urgent: bool,
    },
    /// Not queued: a droppable frame that did not fit.
    Dropped,
    /// Not queued: the client is ending.
    Ending,
    /// Not queued, and the client must be closed: a frame it may not miss did not fit.
    TooSlow,
}

#[derive(Default)]
struct State {
    frames: VecDeque<Message>,
    /// Live events that arrived during a replay, in order.
    held: VecDeque<Message>,
    replaying: bool,
    /// The writer's last frame (a close frame) or, as `Some(None)`, the end without one.
    close: Option<Option<Message>>,
    /// A frame the client may not miss was refused: nothing more is queued.
    too_slow: bool,
}

/// One client's frames on their way to its socket.
#[derive(Default)]
pub(super) struct Outbox {
    state: Mutex<State>,
    /// The writer has frames to send (or must close).
    wake: Notify,
    /// The writer took frames: there is room again (for a replay waiting on it).
    room: Notify,
    /// A frame the client may not miss was refused: its serving task must close it.
    slow: Notify,
}

/// What the writer does next.
pub(super) enum Next {
    Send(VecDeque<Message>),
    Close(Option<Message>),
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it; a poisoned queue is still a consistent queue.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues an event frame (a shared text). A `droppable` one (progress: a later one
    /// carries newer counts) is dropped when the queue is full; any other then marks the
    /// client too slow, and its serving task closes it.
    pub(super) fn push_event(&self, frame: &Message, droppable: bool) -> Pushed {
        let mut s = self.lock();
        if s.too_slow || s.close.is_some() {
            return Pushed::Ending;
        }
        let (len, cap) = if s.replaying {
            (s.held.len(), MAX_HELD)
        } else {
            (s.frames.len(), CLIENT_QUEUE)
        };
        if droppable && len >= CLIENT_QUEUE {
            return Pushed::Dropped;
        }
        if len >= cap {
            s.too_slow = true;
            drop(s);
            self.slow.notify_one();
            return Pushed::TooSlow;
        }
        if s.replaying {
            s.held.push_back(frame.clone());
            return Pushed::Queued {
                first: false,
                urgent: false,
            };
        }
        let first = s.frames.is_empty();
        s.frames.push_back(frame.clone());
        Pushed::Queued {
            first,
            urgent: s.frames.len() == CLIENT_QUEUE / 2,
        }
    }

    /// Wakes the writer for the frames [`Outbox::push_event`] queued.
    pub(super) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Queues a frame of this client's own (an answer, a ping) and wakes the writer: `false`
    /// when the queue is full (the client is too slow).
    pub(super) fn push(&self, frame: Message) -> bool {
        let mut s = self.lock();
        if s.too_slow || s.close.is_some() {
            return false;
        }
        if s.frames.len() >= CLIENT_QUEUE {
            return false;
        }
        s.frames.push_back(frame);
        drop(s);
        self.wake.notify_one();
        true
    }

    /// Holds live events aside until [`Outbox::end_replay`].
    pub(super) fn start_replay(&self) {
        self.lock().replaying = true;
    }

    /// Queues a replayed frame, waiting for room when the queue is full.
    pub(super) async fn push_replayed(&self, frame: Message) {
        let mut frame = Some(frame);
        loop {
            let room = self.room.notified();
            {
                let mut s = self.lock();
                if s.close.is_some() {
                    return;
                }
                if s.frames.len() < CLIENT_QUEUE {
                    if let Some(frame) = frame.take() {
                        s.frames.push_back(frame);
                    }
                    drop(s);
                    self.wake.notify_one();
                    return;
                }
            }
            room.await;
        }
    }

    /// Queues the live events held during the replay, after what the replay queued.
    pub(super) fn end_replay(&self) {
        let mut s = self.lock();
        s.replaying = false;
        let held = std::mem::take(&mut s.held);
        s.frames.extend(held);
        drop(s);
        self.wake.notify_one();
    }

    /// Marks the client too slow: events it may not miss were lost before reaching it.
    pub(super) fn lost_events(&self) {
        self.lock().too_slow = true;
        self.slow.notify_one();
    }

    /// Resolves once a frame the client may not miss was refused.
    pub(super) async fn too_slow(&self) {
        loop {
            let slow = self.slow.notified();
            if self.lock().too_slow {
                return;
            }
            slow.await;
        }
    }

    /// Tells the writer to send `frame` (if any) ahead of whatever is still queued, and end.
    /// The first call decides the last frame; later ones change nothing.
    pub(super) fn close(&self, frame: Option<Message>) {
        let mut s = self.lock();
        s.frames = VecDeque::new();
        s.held = VecDeque::new();
        if s.close.is_none() {
            s.close = Some(frame);
        }
        drop(s);
        self.wake.notify_one();
    }

    /// Frames queued now.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().frames.len()
    }

    pub(super) async fn next(&self) -> Next {
        loop {
            let wake = self.wake.notified();
            {
                let mut s = self.lock();
                if let Some(frame) = s.close.take() {
                    // Stays set: nothing more is queued.
                    s.close = Some(None);
                    return Next::Close(frame);
                }
                if !s.frames.is_empty() {
                    let frames = std::mem::take(&mut s.frames);
                    drop(s);
                    self.room.notify_one();
                    return Next::Send(frames);
                }
            }
            wake.await;
        }
    }

    /// Sends the queued frames to `sink` until [`Outbox::close`] or a failed write, then
    /// closes the socket. The writer task's body.
    pub(super) async fn write(&self, mut sink: SplitSink<WebSocket, Message>) {
        let (sent_frames, writes) = (
            metrics::counter!("ledger_ws_frames_sent_total"),
            metrics::counter!("ledger_ws_writes_total"),
        );
        loop {
            match self.next().await {
                Next::Send(frames) => {
                    let count = frames.len() as u64;
                    let mut sent = true;
                    for frame in frames {
                        // Buffered, not written: the flush below writes them together.
                        if sink.feed(frame).await.is_err() {
                            sent = false;
                            break;
                        }
                    }
                    if !sent || sink.flush().await.is_err() {
                        break;
                    }
                    sent_frames.increment(count);
                    writes.increment(1);
                }
                Next::Close(frame) => {
                    if let Some(frame) = frame {
                        let _ = sink.send(frame).await;
                    }
                    break;
                }
            }
        }
        let _ = sink.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Message {
        Message::Text(s.to_owned().into())
    }

    fn queued(outbox: &Outbox) -> Vec<String> {
        outbox
            .lock()
            .frames
            .iter()
            .map(|m| match m {
                Message::Text(t) => t.as_str().to_owned(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn an_idle_outbox_holds_no_allocation_and_gives_its_memory_back_once_sent() {
        let outbox = Outbox::default();
        assert_eq!(outbox.lock().frames.capacity(), 0);
        assert_eq!(
            outbox.push_event(&text("a"), false),
            Pushed::Queued {
                first: true,
                urgent: false
            }
        );
        assert_eq!(
            outbox.push_event(&text("b"), false),
            Pushed::Queued {
                first: false,
                urgent: false
            }
        );
        let taken = std::mem::take(&mut outbox.lock().frames);
        assert_eq!(taken.len(), 2);
        assert_eq!(outbox.lock().frames.capacity(), 0);
    }

    #[test]
    fn a_full_queue_drops_progress_and_refuses_status_as_too_slow() {
        let outbox = Outbox::default();
        for i in 0..CLIENT_QUEUE {
            let pushed = outbox.push_event(&text(&i.to_string()), false);
            // Half full: the writer is woken at once, not at the next flush.
            let urgent = i + 1 == CLIENT_QUEUE / 2;
            assert!(
                matches!(pushed, Pushed::Queued { urgent: u, .. } if u == urgent),
                "{i}: {pushed:?}"
            );
        }
        assert_eq!(outbox.push_event(&text("p"), true), Pushed::Dropped);
        assert!(!outbox.lock().too_slow);
        assert_eq!(outbox.push_event(&text("s"), false), Pushed::TooSlow);
        assert!(outbox.lock().too_slow);
        // Nothing more is queued once the client is too slow.
        assert_eq!(outbox.push_event(&text("s2"), false), Pushed::Ending);
        assert!(!outbox.push(text("answer")));
    }

    #[test]
    fn live_events_during_a_replay_come_after_it_in_order() {
        let outbox = Outbox::default();
        outbox.start_replay();
        outbox.push_event(&text("live 1"), false);
        futures::executor::block_on(outbox.push_replayed(text("old 1")));
        outbox.push_event(&text("live 2"), true);
        futures::executor::block_on(outbox.push_replayed(text("marker")));
        assert_eq!(queued(&outbox), ["old 1", "marker"]);
        outbox.end_replay();
        assert_eq!(queued(&outbox), ["old 1", "marker", "live 1", "live 2"]);
        outbox.push_event(&text("live 3"), false);
        assert_eq!(queued(&outbox).last().unwrap(), "live 3");
    }

    #[test]
    fn a_close_goes_ahead_of_what_is_queued() {
        let outbox = Outbox::default();
        outbox.push_event(&text("a"), false);
        outbox.close(Some(text("bye")));
        match futures::executor::block_on(outbox.next()) {
            Next::Close(Some(Message::Text(t))) => assert_eq!(t.as_str(), "bye"),
            _ => panic!("expected the close frame first"),
        }
        assert_eq!(outbox.push_event(&text("b"), false), Pushed::Ending);
        // A later close (the membership's drop) does not replace the first one.
        outbox.close(None);
        assert!(matches!(
            futures::executor::block_on(outbox.next()),
            Next::Close(None)
        ));
    }
}
