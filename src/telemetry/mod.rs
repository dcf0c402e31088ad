//! Logs and metrics: structured key-value logs on stdout (logfmt or JSON), written through a
//! bounded queue so a stalled or closed stdout never holds up or stops the service, and the
//! process-wide Prometheus recorder. Never formats a secret: callers pass ids, not tokens.

pub mod log_queue;
pub mod process;

use std::fmt;
use std::io;
use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;

pub use log_queue::{LOG_QUEUE_LINES, LogQueue, dropped_total as log_lines_dropped};

/// Where log lines go: the service logs to stdout; one-shot commands (`token`, `policy`,
/// …) log to stderr so their stdout stays machine-readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// `print!`, which the test harness captures and shows only for failing tests.
    Captured,
}

/// How long the end of the process waits for queued log lines. A healthy sink takes the last
/// lines (`ledger stopped`, a command's warnings) in milliseconds; a stalled one must not hold
/// up an exit an orchestrator is timing: 2 s stays well inside the 15 s between
/// APP_ENV_SHUTDOWN_TIMEOUT_MS (30 s) and terminationGracePeriodSeconds (45 s) in deploy/k8s.
pub const EXIT_FLUSH: Duration = Duration::from_secs(2);

/// Holds the log queue of the process; dropping it (at the end of `main`) waits up to
/// [`EXIT_FLUSH`] for the queued lines to be written.
#[must_use = "dropping the guard is what writes the last queued lines"]
pub struct LogGuard(Option<LogQueue>);

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some(queue) = &self.0 {
            queue.flush(EXIT_FLUSH);
        }
    }
}

/// Installs the global log subscriber (once; later calls are ignored, as in tests). Stdout and
/// stderr are written by a writer thread behind a [`LogQueue`]; fails only when that thread
/// cannot be started.
pub fn init_logging(format: LogFormat, level: &str, target: LogTarget) -> io::Result<LogGuard> {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let queue = match target {
        LogTarget::Stdout => Some(LogQueue::start(
            "log-stdout",
            io::stdout(),
            LOG_QUEUE_LINES,
            |n| dropped_notice(n, "stdout"),
        )?),
        LogTarget::Stderr => Some(LogQueue::start(
            "log-stderr",
            io::stderr(),
            LOG_QUEUE_LINES,
            |n| dropped_notice(n, "stderr"),
        )?),
        LogTarget::Captured => None,
    };
    let writer = match &queue {
        Some(q) => BoxMakeWriter::new(q.clone()),
        None => BoxMakeWriter::new(tracing_subscriber::fmt::TestWriter::new()),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let installed = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Logfmt => builder.event_format(Logfmt).try_init(),
    };
    // Not installed (a subscriber exists): this queue has no sender left and its thread ends.
    Ok(LogGuard(queue.filter(|_| installed.is_ok())))
}

/// The line that says, once the sink takes writes again, how many lines it missed. Logged
/// from the writer thread, so it comes through the queue in the configured format.
fn dropped_notice(dropped: u64, sink: &'static str) {
    tracing::warn!(
        dropped,
        sink,
        "log lines dropped: the sink did not keep up or was closed (ledger_log_lines_dropped_total)"
    );
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = builder().build_recorder();
            let handle = recorder.handle();
            // Another recorder may exist (a test harness); this handle then renders ours only.
            if metrics::set_global_recorder(recorder).is_ok() {
                describe_metrics();
            }
            handle
        })
        .clone()
}

/// Real Prometheus histograms (`_bucket` series, aggregatable across replicas with
/// `histogram_quantile`) for the two latency metrics; the exporter would otherwise render
/// summaries with per-process quantiles.
fn builder() -> PrometheusBuilder {
    // Requests: from a cached GET (~1 ms) to a large download streaming for a minute.
    const HTTP: [f64; 14] = [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
    ];
    // Job phases: a small ledger's few milliseconds to a million-row PDF's minutes.
    const PHASES: [f64; 14] = [
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
    ];
    let with = |b: PrometheusBuilder, name: &str, buckets: &[f64]| {
        b.set_buckets_for_metric(Matcher::Full(name.to_owned()), buckets)
            .expect("bucket lists are constant and non-empty")
    };
    // Queuing one event on every socket that wants it: microseconds for a few, milliseconds
    // for ten thousand.
    const FANOUT: [f64; 12] = [
        0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    ];
    // A `?since=` replay: an empty one's single query to ten thousand events.
    const REPLAY: [f64; 11] = [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0,
    ];
    let b = with(
        PrometheusBuilder::new(),
        "ledger_http_request_duration_seconds",
        &HTTP,
    );
    let b = with(b, "ledger_ws_fanout_duration_seconds", &FANOUT);
    let b = with(b, "ledger_ws_replay_duration_seconds", &REPLAY);
    with(b, "ledger_job_phase_duration_seconds", &PHASES)
}

/// The `/metrics` exposition: the service's metrics, the log drop counter, then the process
/// metrics.
pub fn render_metrics(handle: &PrometheusHandle) -> String {
    let mut out = handle.render();
    render_log_drops(&mut out);
    process::render(&mut out);
    out
}

/// `ledger_log_lines_dropped_total`, read from the log queue's own count at each scrape rather
/// than kept in the recorder: a drop is counted on the thread that logs, which must never wait,
/// and from the first line on, before the recorder exists. Always present, from 0.
fn render_log_drops(out: &mut String) {
    use std::fmt::Write as _;
    let name = "ledger_log_lines_dropped_total";
    let _ = writeln!(
        out,
        "# HELP {name} Log lines lost: stdout (or stderr) did not keep up, so the queue in \
         front of it was full, or it was closed.\n# TYPE {name} counter\n{name} {}",
        log_lines_dropped()
    );
}

/// The failure codes a job can end REJECTED with (`ledger_jobs_total{error_code}`).
pub const JOB_ERROR_CODES: [&str; 3] =
    ["FETCH_DATA_ERROR", "JOB_EXECUTION_FAILED", "ENQUEUE_FAILED"];

/// HELP lines for every metric of the service, and a zero for the counters the alert rules
/// take a rate of: a series that only appears with its first increment makes `rate()` and
/// `increase()` blind to that first event.
fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "ledger_jobs_total",
        "Jobs that reached a terminal state, by status and failure code."
    );
    describe_histogram!(
        "ledger_job_phase_duration_seconds",
        Unit::Seconds,
        "Time a job spent in a pipeline phase (FETCH, GENERATE, UPLOAD, TOTAL)."
    );
    describe_counter!(
        "ledger_stalled_jobs_reset_total",
        "Jobs the recovery sweep found stalled and put back in the queue."
    );
    describe_gauge!(
        "ledger_kafka_consumer_lag",
        "Messages of ledger.generate not yet consumed, per partition held by this process."
    );
    describe_counter!(
        "ledger_ws_emit_failures_total",
        "Status or progress events that could not be published (emitter not ready)."
    );
    describe_gauge!("ledger_ws_clients", "WebSocket clients connected now.");
    describe_counter!(
        "ledger_ws_frames_sent_total",
        "Frames written to WebSocket clients (events, replies, pings)."
    );
    describe_counter!(
        "ledger_ws_writes_total",
        "Writes to WebSocket clients' sockets: frames queued together leave in one write."
    );
    describe_counter!(
        "ledger_ws_events_total",
        "Live events the WebSocket fan-out of this process read from the event bus."
    );
    describe_counter!(
        "ledger_ws_fanout_frames_total",
        "Event frames the fan-out queued on WebSocket clients (one event, many clients)."
    );
    describe_histogram!(
        "ledger_ws_fanout_duration_seconds",
        Unit::Seconds,
        "Time to queue one live event on every WebSocket client that wants it."
    );
    describe_histogram!(
        "ledger_ws_replay_duration_seconds",
        Unit::Seconds,
        "Time a `?since=` replay took, from the first query to the marker queued."
    );
    describe_counter!(
        "ledger_ws_frames_dropped_total",
        "Progress frames dropped for a client whose queue was full."
    );
    describe_counter!(
        "ledger_ws_slow_client_closes_total",
        "WebSocket clients closed (4008) for falling too far behind."
    );
    describe_counter!(
        "ledger_http_requests_total",
        "HTTP requests answered, by route template, method and status."
    );
    describe_histogram!(
        "ledger_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency, by route template, method and status."
    );
    describe_counter!(
        "ledger_policy_snapshots_rejected_total",
        "Policy snapshots found in Redis whose grants did not match the job store's digest \
         (ignored; someone other than ledger wrote to the policy cache)."
    );
    describe_counter!(
        "ledger_webhook_deliveries_total",
        "Webhook delivery attempts by outcome: delivered (2xx), retrying (failed, tried again), \
         failed (failed for good), gone (410: endpoint disabled), skipped (creator may no longer \
         see the event, or the endpoint was deleted), cancelled (the endpoint was disabled), \
         postponed (not attempted: grants or keys unavailable; tried again a minute later)."
    );
    describe_counter!(
        "ledger_key_unavailable_total",
        "Files that could not be opened or sealed because their key was unavailable (a root \
         key no longer configured, a KMS down or refusing): each answered 503 KEY_UNAVAILABLE \
         or failed its attempt as retryable."
    );
    describe_gauge!(
        "ledger_files_by_master_key",
        "Readable files by the root key that protects them (keyId: `local:<id>` or \
         `kms:<key id>`, through their merchant key); a root key at 0 here, with no merchant \
         key under it (`ledger keys status`), may be retired."
    );
    describe_counter!(
        "ledger_retention_files_total",
        "Files marked shredded by retention (APP_ENV_RETENTION_DAYS): their FINAL ledger's \
         completion was older than the retention."
    );
    describe_counter!(
        "ledger_retention_objects_removed_total",
        "Objects retention removed (every version and attempt of an expired FINAL ledger)."
    );
    describe_gauge!(
        "ledger_files_root_sealed",
        "Readable files still sealed by a local master key directly (format 1, from before the \
         key hierarchy): until `ledger keys rewrap` re-seals them, no local key may be retired."
    );
    describe_gauge!(
        "ledger_webhook_deliveries_pending",
        "Webhook deliveries waiting for an attempt (the whole store, seen by each worker)."
    );
    describe_gauge!(
        "ledger_webhook_oldest_pending_seconds",
        Unit::Seconds,
        "Age of the oldest webhook delivery still waiting (0 when none waits)."
    );
    metrics::counter!("ledger_jobs_total", "status" => "COMPLETED", "error_code" => "").absolute(0);
    for code in JOB_ERROR_CODES {
        metrics::counter!("ledger_jobs_total", "status" => "REJECTED", "error_code" => code)
            .absolute(0);
    }
    metrics::counter!("ledger_stalled_jobs_reset_total").absolute(0);
    metrics::counter!("ledger_ws_emit_failures_total").absolute(0);
    metrics::counter!("ledger_policy_snapshots_rejected_total").absolute(0);
    metrics::counter!("ledger_key_unavailable_total").absolute(0);
    metrics::gauge!("ledger_ws_clients").increment(0.0);
    metrics::counter!("ledger_ws_events_total").absolute(0);
    metrics::counter!("ledger_ws_fanout_frames_total").absolute(0);
    metrics::counter!("ledger_ws_frames_sent_total").absolute(0);
    metrics::counter!("ledger_ws_writes_total").absolute(0);
    metrics::counter!("ledger_ws_frames_dropped_total").absolute(0);
    metrics::counter!("ledger_ws_slow_client_closes_total").absolute(0);
    for outcome in WEBHOOK_OUTCOMES {
        metrics::counter!("ledger_webhook_deliveries_total", "outcome" => outcome).absolute(0);
    }
}

/// The `outcome` label values of `ledger_webhook_deliveries_total`.
const WEBHOOK_OUTCOMES: [&str; 7] = [
    "delivered",
    "retrying",
    "failed",
    "gone",
    "skipped",
    "cancelled",
    "postponed",
];

/// `ts=… level=info target=… msg="…" key=value …`, one line per event.
struct Logfmt;

impl<S, N> FormatEvent<S, N> for Logfmt
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        write!(
            writer,
            "ts={} level={} target={}",
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            meta.level().as_str().to_ascii_lowercase(),
            meta.target()
        )?;
        let mut visitor = LogfmtVisitor { out: String::new() };
        event.record(&mut visitor);
        writeln!(writer, "{}", visitor.out)
    }
}

struct LogfmtVisitor {
    out: String,
}

fn quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'=' && b != b'\\');
    if plain {
        value.to_owned()
    } else {
        format!("{value:?}")
    }
}

impl Visit for LogfmtVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        let key = if field.name() == "message" {
            "msg"
        } else {
            field.name()
        };
        self.out.push_str(&format!(" {key}={}", quote(value)));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.out.push_str(&format!(" {}={value}", field.name()));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.out.push_str(&format!(" {}={value}", field.name()));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.out.push_str(&format!(" {}={value:.3}", field.name()));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.out.push_str(&format!(" {}={value}", field.name()));
    }
}
