//! Logs and metrics: structured key-value logs on stdout (logfmt or JSON) and the
//! process-wide Prometheus recorder. Never formats a secret: callers pass ids, not tokens.

pub mod process;

use std::fmt;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;

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

/// Installs the global log subscriber (once; later calls are ignored, as in tests).
pub fn init_logging(format: LogFormat, level: &str, target: LogTarget) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let writer =
        tracing_subscriber::fmt::writer::BoxMakeWriter::new(move || -> Box<dyn std::io::Write> {
            match target {
                LogTarget::Stdout => Box::new(std::io::stdout()),
                LogTarget::Stderr => Box::new(std::io::stderr()),
                LogTarget::Captured => Box::new(tracing_subscriber::fmt::TestWriter::new()),
            }
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Logfmt => builder.event_format(Logfmt).try_init(),
    };
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
    let b = with(
        PrometheusBuilder::new(),
        "ledger_http_request_duration_seconds",
        &HTTP,
    );
    with(b, "ledger_job_phase_duration_seconds", &PHASES)
}

/// The `/metrics` exposition: the service's metrics, then the process metrics.
pub fn render_metrics(handle: &PrometheusHandle) -> String {
    let mut out = handle.render();
    process::render(&mut out);
    out
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
        "Event frames written to WebSocket clients."
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
    metrics::counter!("ledger_jobs_total", "status" => "COMPLETED", "error_code" => "").absolute(0);
    for code in JOB_ERROR_CODES {
        metrics::counter!("ledger_jobs_total", "status" => "REJECTED", "error_code" => code)
            .absolute(0);
    }
    metrics::counter!("ledger_stalled_jobs_reset_total").absolute(0);
    metrics::counter!("ledger_ws_emit_failures_total").absolute(0);
    metrics::counter!("ledger_policy_snapshots_rejected_total").absolute(0);
    metrics::gauge!("ledger_ws_clients").increment(0.0);
}

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
