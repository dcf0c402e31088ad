//! Fan-out: one task per api process reads the event bus, serialises each event once, and
//! queues that one shared frame on the clients that want it.
//!
//! Clients are indexed by what they want: those that see every merchant (a platform
//! admin's socket, not narrowed) and, for the others, each merchant they see. An event of
//! merchant `m` costs a look at the broad clients and at `m`'s, not at every socket; each
//! candidate's filter (exclusions, the scope as of its last refresh) has the last word. A
//! batch's event, rarer, is offered to every client (its creator's and the broad ones take
//! it). A client whose queue is full loses a progress frame (counted) or, for a frame it may
//! not miss, is closed as too slow by its own task; the hub never waits for a socket.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, Utf8Bytes};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::filter::{Filter, Interest};
use super::outbox::{Outbox, Pushed};
use crate::domain::{BatchStatus, Event, MerchantId};
use crate::notify::EventBus;

/// How long a frame queued by the fan-out may wait for its socket's writer: the frames of
/// the events that arrive meanwhile (a ledger's RUNNING, progress and COMPLETED come within
/// milliseconds) leave with it in one write. A write is the dearest part of fan-out (the
/// kernel's TCP path); ten thousand sockets writing each frame alone saturate two cores.
const FLUSH_EVERY: Duration = Duration::from_millis(20);

/// The fan-out of one api process (cheap to clone); made by [`Hub::start`] (tests make
/// one without its task, to drive [`Inner::fan_out`] by hand).
#[derive(Clone)]
#[cfg_attr(test, derive(Default))]
pub struct Hub {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    registry: RwLock<Registry>,
    next_id: AtomicU64,
}

#[derive(Default)]
struct Registry {
    clients: HashMap<u64, Entry>,
    /// Clients that want every merchant's events.
    broad: HashMap<u64, Arc<Client>>,
    /// The other clients, by merchant they want.
    by_merchant: HashMap<MerchantId, HashMap<u64, Arc<Client>>>,
}

struct Entry {
    client: Arc<Client>,
    interest: Interest,
}

/// One socket's side of the fan-out: who it serves, what it wants, its outbox.
pub(super) struct Client {
    subject: String,
    filter: Mutex<Filter>,
    /// The frames on their way to the socket.
    pub(super) outbox: Outbox,
}

impl Client {
    /// The client's filter (the hub reads it for every event offered to the client).
    pub(super) fn filter(&self) -> MutexGuard<'_, Filter> {
        self.filter.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A client's place in the hub, given up when dropped.
pub(super) struct Membership {
    hub: Arc<Inner>,
    id: u64,
    /// The client.
    pub(super) client: Arc<Client>,
}

impl Hub {
    /// A hub fed by `bus` until `shutdown` (or the bus closes).
    pub fn start(bus: &dyn EventBus, shutdown: CancellationToken) -> Self {
        let hub = Self {
            inner: Arc::default(),
        };
        let mut events = bus.subscribe();
        let inner = hub.inner.clone();
        tokio::spawn(async move {
            // Clients with frames queued since the last flush, and when that flush is due.
            let mut due: Vec<Arc<Client>> = Vec::new();
            let flush = tokio::time::sleep(FLUSH_EVERY);
            tokio::pin!(flush);
            loop {
                let event = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    () = &mut flush, if !due.is_empty() => {
                        for client in due.drain(..) {
                            client.outbox.wake();
                        }
                        continue;
                    }
                    event = events.recv() => event,
                };
                let waiting = !due.is_empty();
                match event {
                    Ok(event) => inner.fan_out(&event, &mut due),
                    Err(broadcast::error::RecvError::Lagged(lost)) => inner.lost(lost),
                    Err(broadcast::error::RecvError::Closed) => break,
                }
                if !waiting && !due.is_empty() {
                    flush
                        .as_mut()
                        .reset(tokio::time::Instant::now() + FLUSH_EVERY);
                }
            }
            for client in due {
                client.outbox.wake();
            }
        });
        hub
    }

    /// Registers a client of `subject` with `filter`; with `replaying`, its live events are
    /// held until its replay ends ([`Outbox::end_replay`]).
    pub(super) fn join(&self, subject: &str, filter: Filter, replaying: bool) -> Membership {
        let interest = filter.interest();
        let client = Arc::new(Client {
            subject: subject.to_owned(),
            filter: Mutex::new(filter),
            outbox: Outbox::default(),
        });
        if replaying {
            client.outbox.start_replay();
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let mut registry = self.inner.write();
        registry.index(id, &client, &interest);
        registry.clients.insert(
            id,
            Entry {
                client: client.clone(),
                interest,
            },
        );
        Membership {
            hub: self.inner.clone(),
            id,
            client,
        }
    }
}

impl Membership {
    /// Changes the client's filter with `change` and re-indexes it when what it wants
    /// changed. Only the client's own task calls this, so changes never race each other.
    /// The filter and the index change together (the registry, then the filter, locked in
    /// the fan-out's order): no event falls between them.
    pub(super) fn refilter<R>(&self, change: impl FnOnce(&mut Filter) -> R) -> R {
        let mut registry = self.hub.write();
        let mut filter = self.client.filter();
        let result = change(&mut filter);
        let interest = filter.interest();
        if let Some(old) = registry.clients.get(&self.id).map(|e| e.interest.clone())
            && old != interest
        {
            registry.unindex(self.id, &old);
            registry.index(self.id, &self.client, &interest);
            if let Some(entry) = registry.clients.get_mut(&self.id) {
                entry.interest = interest;
            }
        }
        drop(filter);
        result
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        let mut registry = self.hub.write();
        if let Some(entry) = registry.clients.remove(&self.id) {
            registry.unindex(self.id, &entry.interest);
        }
        drop(registry);
        // However the socket's task ended (even by a panic), its writer ends too.
        self.client.outbox.close(None);
    }
}

impl Registry {
    fn index(&mut self, id: u64, client: &Arc<Client>, interest: &Interest) {
        match interest {
            Interest::Every => {
                self.broad.insert(id, client.clone());
            }
            Interest::Merchants(list) => {
                for m in list {
                    self.by_merchant
                        .entry(m.clone())
                        .or_default()
                        .insert(id, client.clone());
                }
            }
        }
    }

    fn unindex(&mut self, id: u64, interest: &Interest) {
        match interest {
            Interest::Every => {
                self.broad.remove(&id);
            }
            Interest::Merchants(list) => {
                for m in list {
                    if let Some(ids) = self.by_merchant.get_mut(m) {
                        ids.remove(&id);
                        if ids.is_empty() {
                            self.by_merchant.remove(m);
                        }
                    }
                }
            }
        }
    }
}

impl Inner {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        self.registry
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `event` on every client that wants it, serialised once; the clients whose
    /// writer needs waking are added to `due`.
    fn fan_out(&self, event: &Event, due: &mut Vec<Arc<Client>>) {
        let started = Instant::now();
        metrics::counter!("ledger_ws_events_total").increment(1);
        let registry = self.read();
        if registry.clients.is_empty() {
            return;
        }
        let text = match serde_json::to_string(event) {
            Ok(text) => text,
            Err(e) => {
                tracing::error!(target: "ledger::api::ws", error = %e, "serialising an event failed");
                return;
            }
        };
        let frame = Message::Text(Utf8Bytes::from(text));
        // A later progress frame carries newer counts; so does a running batch's.
        let droppable = match event {
            Event::Progress(_) => true,
            Event::BatchProgress(b) => b.status == BatchStatus::Running,
            Event::Status(_) => false,
        };
        let (mut queued, mut dropped) = (0u64, 0u64);
        let mut offer = |client: &Arc<Client>| {
            // Held while queuing: an `unsubscribed` answer (queued under this lock) is never
            // followed by a frame of the merchant it removed.
            let filter = client.filter();
            if !filter.wants_event(event, &client.subject) {
                return;
            }
            match client.outbox.push_event(&frame, droppable) {
                Pushed::Queued { first, urgent } => {
                    queued += 1;
                    if urgent {
                        client.outbox.wake();
                    } else if first {
                        due.push(client.clone());
                    }
                }
                Pushed::Dropped => dropped += 1,
                Pushed::TooSlow | Pushed::Ending => {}
            }
        };
        match event.merchant_id() {
            Some(merchant) => {
                let narrow = registry.by_merchant.get(merchant).into_iter().flatten();
                registry
                    .broad
                    .values()
                    .chain(narrow.map(|(_, client)| client))
                    .for_each(offer);
            }
            None => registry.clients.values().for_each(|e| offer(&e.client)),
        }
        drop(registry);
        metrics::counter!("ledger_ws_fanout_frames_total").increment(queued);
        if dropped > 0 {
            metrics::counter!("ledger_ws_frames_dropped_total").increment(dropped);
        }
        metrics::histogram!("ledger_ws_fanout_duration_seconds")
            .record(started.elapsed().as_secs_f64());
    }

    /// The hub itself fell behind the bus: `lost` events reached no client, so every
    /// client must learn it (closed as too slow, it reconnects with `?since=`).
    fn lost(&self, lost: u64) {
        tracing::warn!(target: "ledger::api::ws", lost, "the WebSocket fan-out fell behind the event bus; closing its clients");
        for entry in self.read().clients.values() {
            entry.client.outbox.lost_events();
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::auth::MerchantScope;
    use crate::domain::{LedgerId, ProgressEvent, Stage, Status, StatusEvent};
    use crate::notify::InProcessBus;

    fn m(id: &str) -> MerchantId {
        MerchantId::parse(id).unwrap()
    }

    fn status(merchant: &str) -> Event {
        Event::Status(StatusEvent {
            ledger_id: LedgerId::from_i64(7),
            merchant_id: m(merchant),
            status: Status::Completed,
            stage: Stage::Final,
            version: 1,
            attempt_count: 1,
            error_code: None,
            at: Utc::now(),
        })
    }

    fn progress(merchant: &str) -> Event {
        Event::Progress(ProgressEvent {
            ledger_id: LedgerId::from_i64(7),
            merchant_id: m(merchant),
            phase: "GENERATE".into(),
            rows_done: 1,
            rows_total: None,
            at: Utc::now(),
        })
    }

    fn queued(client: &Client) -> usize {
        client.outbox.len()
    }

    #[test]
    fn an_event_reaches_the_clients_that_want_it_and_no_other() {
        let hub = Hub::default();
        let admin = hub.join("admin", Filter::new(MerchantScope::All), false);
        let tokyo = hub.join(
            "op",
            Filter::new(MerchantScope::Only(vec![m("m_tokyo")])),
            false,
        );
        let paris = hub.join(
            "op2",
            Filter::new(MerchantScope::Only(vec![m("m_paris")])),
            false,
        );
        hub.inner.fan_out(&status("m_tokyo"), &mut Vec::new());
        assert_eq!(queued(&admin.client), 1);
        assert_eq!(queued(&tokyo.client), 1);
        assert_eq!(queued(&paris.client), 0);
    }

    #[test]
    fn narrowing_and_widening_move_a_client_in_the_index() {
        let hub = Hub::default();
        let admin = hub.join("admin", Filter::new(MerchantScope::All), false);
        let reply =
            admin.refilter(|f| super::super::filter::command(f, r#"{"subscribe":["m_a"]}"#));
        assert!(reply.contains("subscribed"), "{reply}");
        {
            let registry = hub.inner.read();
            assert!(registry.broad.is_empty());
            assert_eq!(registry.by_merchant[&m("m_a")].len(), 1);
        }
        hub.inner.fan_out(&status("m_b"), &mut Vec::new());
        hub.inner.fan_out(&status("m_a"), &mut Vec::new());
        assert_eq!(queued(&admin.client), 1);
        drop(admin);
        let registry = hub.inner.read();
        assert!(registry.clients.is_empty() && registry.by_merchant.is_empty());
    }

    #[test]
    fn a_full_client_loses_progress_but_is_closed_for_a_status() {
        let hub = Hub::default();
        let c = hub.join("admin", Filter::new(MerchantScope::All), false);
        for _ in 0..super::super::outbox::CLIENT_QUEUE {
            hub.inner.fan_out(&progress("m_a"), &mut Vec::new());
        }
        hub.inner.fan_out(&progress("m_a"), &mut Vec::new());
        assert!(futures::FutureExt::now_or_never(c.client.outbox.too_slow()).is_none());
        hub.inner.fan_out(&status("m_a"), &mut Vec::new());
        assert!(futures::FutureExt::now_or_never(c.client.outbox.too_slow()).is_some());
    }

    #[tokio::test]
    async fn the_hub_task_fans_out_what_the_bus_carries() {
        let bus = InProcessBus::default();
        let shutdown = CancellationToken::new();
        let hub = Hub::start(&bus, shutdown.clone());
        let c = hub.join("admin", Filter::new(MerchantScope::All), false);
        bus.publish(&status("m_a")).await.unwrap();
        bus.publish(&progress("m_a")).await.unwrap();
        // The writer is woken at the flush (usually once for both frames).
        let mut frames = 0;
        while frames < 2 {
            let taken = tokio::time::timeout(Duration::from_secs(5), c.client.outbox.next())
                .await
                .expect("the writer was never woken");
            match taken {
                super::super::outbox::Next::Send(f) => frames += f.len(),
                super::super::outbox::Next::Close(_) => panic!("closed"),
            }
        }
        assert_eq!(frames, 2);
        shutdown.cancel();
    }
}
