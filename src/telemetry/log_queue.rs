//! The way log lines leave the process: a bounded queue in front of stdout or stderr, emptied
//! by one writer thread. A thread that logs only formats its line and hands it over; it never
//! waits for the sink and never sees its errors. When the sink is slow or stalled (a log
//! shipper that stopped reading, Docker's blocking log mode, `| tee` to a slow disk) the queue
//! fills and further lines are dropped and counted (`ledger_log_lines_dropped_total`); once
//! the sink takes writes again a line says how many were lost. A closed sink (EPIPE) only
//! loses lines. Nothing here may block a caller or panic, whatever the sink does.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;

/// Lines the queue holds while the sink is behind: under 1 MiB of ~210-byte request lines,
/// on top of the ~300 lines a pipe buffers itself. At the ~2,000 requests/s this machine
/// serves with full logging (`ledger-bench logs`, BENCHMARKS.md 2026-12-04) that rides out a
/// sink's 2 s hiccup without a loss; a sink that stays behind longer loses lines however
/// large the queue, and a larger one only costs memory.
pub const LOG_QUEUE_LINES: usize = 4096;

/// The most the writer hands to the sink in one write: a pipe's buffer. The lines that
/// queued up during one write go out in one system call instead of one each, so a busy
/// process's writer keeps up with a sink that is only slow per call.
const BATCH_BYTES: usize = 64 * 1024;

/// How long the writer waits, once a line arrived, for others to join it before it writes:
/// a busy process then costs the writer thread one wake-up and one write per this period
/// instead of one per line, and a line reaches the sink at most this much later.
const LINGER: Duration = Duration::from_millis(2);

/// Log lines lost since the process started, for every queue: read by `/metrics`.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Log lines lost since the process started: the queue was full (the sink did not keep up)
/// or the sink refused them (closed).
pub fn dropped_total() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// What the callers and the writer thread share.
struct Shared {
    /// Lines the queue accepted.
    accepted: AtomicU64,
    /// Lines the writer is done with (written or lost); `flush` waits on it.
    done: Mutex<u64>,
    progressed: Condvar,
    /// Lines lost since the last notice.
    unreported: AtomicU64,
}

impl Shared {
    fn lost(&self, lines: u64) {
        DROPPED.fetch_add(lines, Ordering::Relaxed);
        self.unreported.fetch_add(lines, Ordering::Relaxed);
    }

    fn finished(&self, lines: u64) {
        let mut done = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        *done += lines;
        self.progressed.notify_all();
    }
}

/// The sending side of a log queue: the fmt layer's writer. Cloning it shares the queue.
#[derive(Clone)]
pub struct LogQueue {
    tx: SyncSender<Vec<u8>>,
    shared: Arc<Shared>,
}

impl LogQueue {
    /// Starts a writer thread named `name` that writes queued lines to `sink`; the queue holds
    /// `capacity` lines. `notice(n)` runs on the writer thread when the sink took every queued
    /// line again after `n` were lost; the service logs a warning there (which comes back
    /// through this queue, so it is written in the configured format).
    pub fn start<W, N>(name: &str, sink: W, capacity: usize, notice: N) -> io::Result<LogQueue>
    where
        W: Write + Send + 'static,
        N: Fn(u64) + Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel(capacity);
        let shared = Arc::new(Shared {
            accepted: AtomicU64::new(0),
            done: Mutex::new(0),
            progressed: Condvar::new(),
            unreported: AtomicU64::new(0),
        });
        let writer = shared.clone();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || write_lines(&rx, sink, &writer, notice))?;
        Ok(LogQueue { tx, shared })
    }

    /// Queues one line, or drops and counts it when the queue is full.
    fn push(&self, line: &[u8]) {
        match self.tx.try_send(line.to_vec()) {
            Ok(()) => {
                self.shared.accepted.fetch_add(1, Ordering::Release);
            }
            // Disconnected: the writer thread is gone (it never exits while a sender lives,
            // but a lost line must still be counted rather than be an error to the caller).
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self.shared.lost(1),
        }
    }

    /// Waits until every line queued so far was written or lost, at most `timeout`. False
    /// when the sink did not take them in time (they are then left behind, not waited for).
    pub fn flush(&self, timeout: Duration) -> bool {
        let target = self.shared.accepted.load(Ordering::Acquire);
        let deadline = Instant::now() + timeout;
        let mut done = self
            .shared
            .done
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while *done < target {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            done = self
                .shared
                .progressed
                .wait_timeout(done, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }
}

/// tracing-subscriber writes each formatted event with one `write_all`: one call, one line.
impl Write for &LogQueue {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        self.push(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogQueue {
    type Writer = &'a LogQueue;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

/// The writer thread: takes what queued up (up to a batch) and writes it; when a write
/// succeeded and nothing queued behind it, says how many lines were lost since the last
/// notice. Ends when every sender is gone.
fn write_lines<W: Write>(
    rx: &Receiver<Vec<u8>>,
    mut sink: W,
    shared: &Shared,
    notice: impl Fn(u64),
) {
    let mut batch = Vec::with_capacity(BATCH_BYTES);
    let mut next = None;
    loop {
        let first = match next.take() {
            Some(line) => line,
            None => match rx.recv() {
                Ok(line) => {
                    // Asleep, the writer is not woken by the lines that queue meanwhile.
                    std::thread::sleep(LINGER);
                    line
                }
                Err(_) => return,
            },
        };
        batch.clear();
        batch.extend_from_slice(&first);
        let mut lines = 1;
        while batch.len() < BATCH_BYTES {
            match rx.try_recv() {
                Ok(line) => {
                    batch.extend_from_slice(&line);
                    lines += 1;
                }
                Err(_) => break,
            }
        }
        // A write that fails (EPIPE: the reader is gone) loses the batch; the next one is
        // tried all the same, so a sink that recovers (a disk that was full) is used again.
        let written = sink.write_all(&batch).and_then(|()| sink.flush()).is_ok();
        if !written {
            shared.lost(lines);
        }
        shared.finished(lines);
        if !written {
            continue;
        }
        // Lines that queued during the write come first: the notice is for a sink that
        // caught up, and goes after what was kept.
        match rx.try_recv() {
            Ok(line) => next = Some(line),
            Err(TryRecvError::Empty) => {
                let missed = shared.unreported.swap(0, Ordering::Relaxed);
                if missed > 0 {
                    notice(missed);
                }
            }
            Err(TryRecvError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;

    /// A sink that takes nothing while `stalled` is set, then everything.
    #[derive(Clone, Default)]
    struct Valve {
        stalled: Arc<AtomicBool>,
        entered: Arc<AtomicBool>,
        taken: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Valve {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.entered.store(true, Ordering::Release);
            while self.stalled.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(1));
            }
            self.taken.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A sink whose reader went away.
    struct Closed;

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }

        fn flush(&mut self) -> io::Result<()> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
    }

    fn line(queue: &LogQueue, text: &str) {
        let mut writer = queue.make_writer();
        writer.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn a_stalled_sink_drops_lines_without_blocking_and_a_notice_follows_when_it_drains() {
        let sink = Valve::default();
        sink.stalled.store(true, Ordering::Release);
        let notices = Arc::new(Mutex::new(Vec::new()));
        let queue = LogQueue::start("log-test", sink.clone(), 8, {
            let notices = notices.clone();
            move |n| notices.lock().unwrap().push(n)
        })
        .unwrap();
        // The writer takes the first line and hangs in the sink with it.
        line(&queue, "line 0\n");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sink.entered.load(Ordering::Acquire) {
            assert!(Instant::now() < deadline, "the writer never wrote");
            std::thread::sleep(Duration::from_millis(1));
        }
        let before = dropped_total();
        for i in 1..=100 {
            line(&queue, &format!("line {i}\n"));
        }
        // The queue kept 8 of them; the others are counted (other tests may add to the
        // process-wide count, never take from it).
        assert!(
            dropped_total() - before >= 92,
            "{}",
            dropped_total() - before
        );
        assert!(
            !queue.flush(Duration::from_millis(50)),
            "nothing was written"
        );
        assert!(
            notices.lock().unwrap().is_empty(),
            "no notice while stalled"
        );

        sink.stalled.store(false, Ordering::Release);
        assert!(queue.flush(Duration::from_secs(10)));
        let expected: String = (0..=8).map(|i| format!("line {i}\n")).collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        while notices.lock().unwrap().is_empty() {
            assert!(
                Instant::now() < deadline,
                "no notice after the sink drained"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(*notices.lock().unwrap(), [92]);
        assert_eq!(
            String::from_utf8_lossy(&sink.taken.lock().unwrap()),
            expected
        );

        // Accepted again, and no second notice for the same loss.
        line(&queue, "after\n");
        assert!(queue.flush(Duration::from_secs(10)));
        assert!(String::from_utf8_lossy(&sink.taken.lock().unwrap()).ends_with("8\nafter\n"));
        assert_eq!(notices.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_closed_sink_loses_lines_quietly_and_flush_returns() {
        let notices = Arc::new(Mutex::new(0));
        let queue = LogQueue::start("log-test", Closed, 8, {
            let notices = notices.clone();
            move |_| *notices.lock().unwrap() += 1
        })
        .unwrap();
        let before = dropped_total();
        for i in 0..20 {
            line(&queue, &format!("line {i}\n"));
            assert!(queue.flush(Duration::from_secs(10)));
        }
        assert!(dropped_total() - before >= 20);
        assert_eq!(*notices.lock().unwrap(), 0, "nothing was written to say so");
    }
}
