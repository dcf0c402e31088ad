//! `ledger-bench`: measurements of the `ledger` service printed as figures (BENCHMARKS.md).
//! Not shipped: a workspace member of its own, on the library with its `fixtures` feature
//! (the generated source data). `large`, `small` and `live` go end to end through the real
//! service (HTTP create → COMPLETED), run in this process on a temporary data dir with the
//! embedded defaults, or as an api process here plus worker-only processes of the `ledger`
//! binary built beside this one; `render` times one renderer alone; `logs` serves that
//! `ledger` binary as a child process. Peak RSS is this process's high-water mark
//! (`VmHWM`), reset before each run. Use a release build.

mod batch;
mod harness;
mod large;
mod list;
mod live;
mod logs;
mod render;
mod rewrap;
mod serve;
mod small;
mod source;
mod upstream;
mod webhooks;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ledger::config::Config;
use ledger::domain::{Format, LedgerType};
use ledger::errln;
use ledger::output::OutputError;
use ledger::telemetry::LogTarget;

#[derive(Parser)]
#[command(
    name = "ledger-bench",
    version,
    about = "Measure the ledger service end to end (use a release build)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One large ledger through the service: wall time create → COMPLETED and peak RSS.
    Large {
        /// Entries in the ledger.
        #[arg(long, default_value_t = 1_000_000)]
        entries: u64,
        /// Repetitions (the median is printed).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// STATEMENT or SUMMARY.
        #[arg(long = "type", default_value = "STATEMENT", value_parser = ledger_type)]
        ledger_type: LedgerType,
        /// PDF, CSV or XLSX.
        #[arg(long, default_value = "CSV", value_parser = format)]
        format: Format,
        /// Where the entries come from: an NDJSON file, a one-page JSON file, or that page
        /// from a local HTTP upstream.
        #[arg(long, value_enum, default_value = "ndjson")]
        source: harness::SourceForm,
    },
    /// Downloads of one large CSV statement over loopback: plaintext GB/s (decrypt, verify,
    /// stream) with the client in this process.
    Download {
        /// Entries of the statement (about 96 bytes of CSV each: 1,040,000 ≈ 100 MB).
        #[arg(long, default_value_t = 1_040_000)]
        entries: u64,
        /// Downloads (the median is printed).
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Authenticated `GET /ledgers/{id}` from many connections: requests per second.
    Get {
        /// Connections sending requests at once.
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// Seconds a run.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Runs (the median is printed).
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// `POST /ledgers` from many connections, the api role alone: creates per second, each
    /// 202 durable before it is sent.
    Create {
        /// Ledgers to create.
        #[arg(long, default_value_t = 5000)]
        count: usize,
        /// Connections sending requests at once.
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// Send each create with an `Idempotency-Key` of its own.
        #[arg(long)]
        idempotency_keys: bool,
    },
    /// The source alone: every entry of one merchant read and validated, nothing rendered.
    Source {
        /// Entries in the source.
        #[arg(long, default_value_t = 1_000_000)]
        entries: u64,
        /// Repetitions (the median is printed).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// An NDJSON file, a one-page JSON file, or that page from a local HTTP upstream.
        #[arg(long, value_enum, default_value = "json")]
        source: harness::SourceForm,
    },
    /// One renderer alone over generated entries: wall time and peak RSS.
    Render {
        /// Entries in the document.
        #[arg(long, default_value_t = 10_000)]
        entries: u64,
        /// Repetitions (the median is printed).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// STATEMENT or SUMMARY.
        #[arg(long = "type", default_value = "STATEMENT", value_parser = ledger_type)]
        ledger_type: LedgerType,
        /// PDF, CSV or XLSX.
        #[arg(long, default_value = "PDF", value_parser = format)]
        format: Format,
        /// Currencies of the entries, comma-separated.
        #[arg(long, default_value = "EUR", value_delimiter = ',')]
        currencies: Vec<String>,
    },
    /// Many small CSV statements: ledgers per second and latency.
    Small {
        /// Ledgers to create.
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// Entries in each merchant's year (a day ledger holds ~1/365 of them).
        #[arg(long, default_value_t = 18_250)]
        entries: u64,
        /// Jobs each worker runs at once.
        #[arg(long, default_value_t = 2)]
        concurrency: usize,
        /// Worker-only `ledger` processes to start (0: one embedded process does everything).
        /// They and the in-process api use the backends of this process's APP_ENV_* variables.
        #[arg(long, default_value_t = 0)]
        workers: usize,
    },
    /// `ledger keys rewrap` over many small format-1 files (sealed by the master key
    /// directly): files re-sealed per second; then a second rotation, which re-wraps the
    /// merchant keys only. Use TMPDIR=/dev/shm (every object is fsynced).
    Rewrap {
        /// Ledgers to seed (~96% COMPLETED, each with one file).
        #[arg(long, default_value_t = 104_167)]
        ledgers: i64,
        /// Plaintext bytes of each file.
        #[arg(long, default_value_t = 4096)]
        size: usize,
        /// Files re-sealed at once (what `ledger keys rewrap` uses).
        #[arg(long, default_value_t = ledger::keys::commands::REWRAP_CONCURRENCY)]
        concurrency: usize,
    },
    /// One batch of every merchant (`"*"`): POST /batches → COMPLETED, ledgers per second
    /// and peak RSS.
    Batch {
        /// Merchants in the source (one ledger per merchant and format).
        #[arg(long, default_value_t = 1000)]
        merchants: usize,
        /// Entries in each merchant's year (the ledgers are of 2025).
        #[arg(long, default_value_t = 50)]
        entries: u64,
        /// Formats, comma-separated.
        #[arg(long, default_value = "CSV", value_delimiter = ',', value_parser = format)]
        formats: Vec<Format>,
        /// Jobs each worker runs at once.
        #[arg(long, default_value_t = 2)]
        concurrency: usize,
        /// Worker-only `ledger` processes to start (0: one embedded process does everything).
        #[arg(long, default_value_t = 0)]
        workers: usize,
    },
    /// Many WebSocket clients on one api process while ledgers complete at a steady rate:
    /// the api process's RSS per socket, emit → receive latency, fan-out rate and CPU.
    Live {
        /// Ledgers to generate (one merchant each, a year of entries).
        #[arg(long, default_value_t = 300)]
        ledgers: usize,
        /// Entries in each merchant's year.
        #[arg(long, default_value_t = 365)]
        entries: u64,
        /// PDF, CSV or XLSX.
        #[arg(long, default_value = "CSV", value_parser = format)]
        format: Format,
        /// WebSocket clients watching every merchant (in this process; the service runs in
        /// its own).
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// Ledgers created per second (0: all at once).
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        /// Jobs each worker runs at once.
        #[arg(long, default_value_t = 2)]
        concurrency: usize,
        /// Worker-only `ledger` processes to start (0: one embedded process with its
        /// in-process bus). With workers, events cross Redis: set APP_ENV_WEBSOCKET_REDIS_URL
        /// and the other production backends in this process's environment.
        #[arg(long, default_value_t = 0)]
        workers: usize,
    },
    /// `GET /ledgers` over a store seeded straight through SQL: latency of every filter
    /// combination for callers of every reach, first pages and the pages after.
    List {
        /// Ledgers to seed.
        #[arg(long, default_value_t = 1_000_000)]
        ledgers: usize,
        /// Requests per shape (caller × filters), each reading up to three pages.
        #[arg(long, default_value_t = 40)]
        requests: usize,
        /// Also seed the ledgers' timelines (3 status events each) and time timelines and
        /// `?since=` replays' reads.
        #[arg(long)]
        timelines: bool,
        /// Also seed a batch of every third ledger and time its pages
        /// (`GET /batches/:id/ledgers`, every filter) and its counts (`GET /batches/:id`).
        #[arg(long)]
        batch: bool,
    },
    /// Small ledgers with webhook endpoints subscribed to their completion, delivered to a
    /// receiver in this process: ledger rate, delivery rate and completion→delivery lag.
    Webhooks {
        /// Ledgers to create.
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// Entries in each merchant's year (a day ledger holds ~1/365 of them).
        #[arg(long, default_value_t = 18_250)]
        entries: u64,
        /// Endpoints, each told about every ledger.
        #[arg(long, default_value_t = 1)]
        endpoints: usize,
        /// Jobs the worker runs at once.
        #[arg(long, default_value_t = 2)]
        concurrency: usize,
    },
    /// Requests per second of `ledger serve` with its logs going to a file, to a pipe read at
    /// once, and to a pipe nobody reads.
    Logs {
        /// Requests per run (each logs one line).
        #[arg(long, default_value_t = 20_000)]
        requests: usize,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Runs per sink (the median is printed).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// The `ledger` binary to serve (default: the one beside this binary), e.g. an older
        /// build to compare.
        #[arg(long)]
        binary: Option<std::path::PathBuf>,
    },
}

/// The malloc settings of `ledger` itself (see `limit_malloc_arenas` in the root crate's
/// `src/main.rs`), so that the peak RSS measured here is the one the service would have.
/// Must run before any thread starts.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    // SAFETY: mallopt only sets allocator parameters; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            errln!("{e}");
            return ExitCode::from(2);
        }
    };
    // Declared before the runtime, so dropped after it: the flush also waits for the lines
    // of the runtime's last tasks.
    let _logs = match ledger::telemetry::init_logging(
        config.log_format,
        &config.log_level,
        LogTarget::Stderr,
    ) {
        Ok(guard) => guard,
        Err(e) => {
            errln!("cannot start the log writer: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            errln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that went away (`ledger-bench … | head`) took what it wanted.
        Err(e)
            if e.chain()
                .any(|c| matches!(c.downcast_ref(), Some(OutputError::Closed))) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            errln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Large {
            entries,
            runs,
            ledger_type,
            format,
            source,
        } => large::large(entries, runs, ledger_type, format, source).await,
        Command::Source {
            entries,
            runs,
            source,
        } => source::source(entries, runs, source).await,
        Command::Download { entries, runs } => serve::download(entries, runs).await,
        Command::Create {
            count,
            clients,
            idempotency_keys,
        } => serve::create(count, clients, idempotency_keys).await,
        Command::Get {
            clients,
            seconds,
            runs,
        } => serve::get(clients, seconds, runs).await,
        Command::Render {
            entries,
            runs,
            ledger_type,
            format,
            currencies,
        } => render::render(entries, runs, ledger_type, format, &currencies),
        Command::Small {
            count,
            entries,
            concurrency,
            workers,
        } => small::small(count, entries, concurrency, workers).await,
        Command::Rewrap {
            ledgers,
            size,
            concurrency,
        } => rewrap::run(ledgers, size, concurrency).await,
        Command::Batch {
            merchants,
            entries,
            formats,
            concurrency,
            workers,
        } => batch::batch(merchants, entries, formats, concurrency, workers).await,
        Command::Live {
            ledgers,
            entries,
            format,
            clients,
            rate,
            concurrency,
            workers,
        } => {
            live::live(live::Options {
                ledgers,
                entries,
                format,
                clients,
                rate,
                concurrency,
                workers,
            })
            .await
        }
        Command::List {
            ledgers,
            requests,
            timelines,
            batch,
        } => list::list(ledgers, requests, timelines, batch).await,
        Command::Webhooks {
            count,
            entries,
            endpoints,
            concurrency,
        } => webhooks::webhooks(count, entries, endpoints, concurrency).await,
        Command::Logs {
            requests,
            concurrency,
            runs,
            binary,
        } => logs::logs(requests, concurrency, runs, binary).await,
    }
}

/// Parses a ledger type as the API spells it (`STATEMENT`, `SUMMARY`), any case.
fn ledger_type(raw: &str) -> Result<LedgerType, String> {
    LedgerType::parse(&raw.to_ascii_uppercase())
        .ok_or_else(|| "expected STATEMENT or SUMMARY".into())
}

/// Parses a format as the API spells it (`PDF`, `CSV`, `XLSX`), any case.
fn format(raw: &str) -> Result<Format, String> {
    Format::parse(&raw.to_ascii_uppercase()).ok_or_else(|| "expected PDF, CSV or XLSX".into())
}
