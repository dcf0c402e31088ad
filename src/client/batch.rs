//! `ledger batch create|show`: the operator's month-end close by hand (SPEC §11). `create`
//! asks a running service for a batch, follows it live — `batch.progress` events on the
//! WebSocket, with `GET /batches/{id}` when the socket is lost and at intervals whatever it
//! says, so a lost frame or a proxy without WebSockets never leaves it hanging — and ends
//! with the summary table and the rejected ledgers. `show` prints the same for a batch by
//! id. The exit code says how the batch ended ([`Outcome`]).

use std::cell::Cell;
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use clap::{ArgGroup, Args, Subcommand};
use serde_json::json;
use tokio::time::Instant;

use super::api::{Api, ClientError, Endpoint};
use super::live::{Live, Watch};
use super::progress::Progress;
use super::summary::{self, Rejected};
use super::wire::Batch;
use crate::config::Secret;
use crate::domain::{BatchId, BatchStatus, Format, LedgerType, MerchantId, Period, Timezone};
use crate::errln;
use crate::output::{self, OutputError};

/// The service's URL when neither `--url` nor `LEDGER_URL` names one: a service on this
/// machine on its default port (`APP_ENV_PORT`).
pub const DEFAULT_URL: &str = "http://127.0.0.1:3000";
/// How often the batch is read while a WebSocket is open (in case a frame was lost).
const READ_EVERY_LIVE: Duration = Duration::from_secs(5);
/// How often the batch is read while no WebSocket is open.
const READ_EVERY_OFFLINE: Duration = Duration::from_secs(2);
/// How long the service may stay unreachable (or answer 502–504) while a batch is followed
/// before the command gives up.
const OUTAGE_PATIENCE: Duration = Duration::from_secs(120);
/// Rejected ledgers listed at most; the rest are counted.
const MAX_LISTED: usize = 20;
/// Page size when reading a batch's ledgers (the API's largest).
const PAGE: u32 = 200;

/// Exit codes of `batch create`, for `--help`.
const CREATE_HELP: &str = "\
Exit status:
  0    every ledger of the batch COMPLETED (or, with --no-wait, the batch was created)
  1    the batch ended COMPLETED_WITH_ERRORS (the rejected ledgers are listed), or the
       request failed: the API's code and message are printed on stderr
  2    the command line or environment is wrong (a missing token, a bad --url)
  130  interrupted (Ctrl-C): the batch goes on in the service; `ledger batch show ID`

Progress goes to stderr: a live bar on a terminal, otherwise a line every few seconds while
the counts change. The summary (or, with --json, the batch's JSON) goes to stdout.
Example:
  export LEDGER_URL=https://gateway.example LEDGER_TOKEN=…
  ledger batch create --all --type STATEMENT --period 2026-10 --formats CSV,PDF \\
    --idempotency-key close-2026-10";

/// Exit codes of `batch show`, for `--help`.
const SHOW_HELP: &str = "\
Exit status:
  0  the batch is COMPLETED: every ledger completed
  1  the batch is COMPLETED_WITH_ERRORS (the rejected ledgers are listed), or the request
     failed (404 NOT_FOUND for a batch the token may not see)
  2  the command line or environment is wrong (a missing token, a bad --url)
  3  the batch is still RUNNING
  130  interrupted (Ctrl-C)";

/// `ledger batch …`.
#[derive(Debug, Subcommand)]
pub enum BatchCommand {
    /// Ask a running service for the ledgers of many merchants at once, follow them live
    /// and print a summary.
    #[command(after_long_help = CREATE_HELP)]
    Create(CreateArgs),
    /// Print a batch and its ledgers counted by state.
    #[command(after_long_help = SHOW_HELP)]
    Show(ShowArgs),
}

/// Where the service is and the caller's token.
#[derive(Debug, Args)]
pub struct Connection {
    /// The service's URL; the API's base path (/v1/api/ledger) is appended unless the URL
    /// ends with it.
    #[arg(long, env = "LEDGER_URL", default_value = DEFAULT_URL)]
    url: String,
    /// The caller's bearer token (a JWT). Prefer LEDGER_TOKEN: a command line is visible
    /// to other users of the machine. Never printed.
    #[arg(long, env = "LEDGER_TOKEN", hide_env_values = true, value_parser = secret)]
    token: Secret,
}

/// `ledger batch create`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("merchant_selection").required(true).args(["merchants", "all"])))]
pub struct CreateArgs {
    #[command(flatten)]
    connection: Connection,
    /// The merchants, comma-separated (at most 10,000).
    #[arg(long, value_name = "IDS", value_delimiter = ',', value_parser = merchant_id)]
    merchants: Vec<String>,
    /// Every merchant the source lists that the token may create for; the others are
    /// counted as skipped.
    #[arg(long)]
    all: bool,
    /// What the documents contain: STATEMENT or SUMMARY.
    #[arg(long = "type", value_name = "TYPE", value_parser = ledger_type)]
    ledger_type: LedgerType,
    /// The period: 2026, 2026-Q4, 2026-10, 2026-W44 or 2026-10-15.
    #[arg(long, value_parser = period)]
    period: String,
    /// The formats, comma-separated: CSV, PDF, XLSX. One ledger per merchant and format.
    #[arg(long, value_name = "FORMATS", value_delimiter = ',', required = true, value_parser = format)]
    formats: Vec<Format>,
    /// The IANA time zone to cut the period in, e.g. Europe/Berlin (default: each
    /// merchant's own).
    #[arg(long, value_name = "ZONE", value_parser = timezone)]
    timezone: Option<String>,
    /// Makes the request safe to repeat: the same key and arguments answer the same batch
    /// for 24 hours instead of creating another.
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    /// Print the created batch and exit without following it.
    #[arg(long)]
    no_wait: bool,
    /// Print the batch's JSON on stdout instead of the summary table (for scripts).
    #[arg(long)]
    json: bool,
}

/// `ledger batch show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    connection: Connection,
    /// The batch id.
    #[arg(value_name = "ID", value_parser = batch_id)]
    id: BatchId,
    /// Print the batch's JSON on stdout instead of the summary table (for scripts).
    #[arg(long)]
    json: bool,
}

/// How a batch command ended; [`Outcome::exit_code`] is the process's exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every ledger completed.
    Completed,
    /// Finished, with rejected ledgers.
    CompletedWithErrors,
    /// Still running (`show`).
    Running,
    /// Created and not followed (`--no-wait`).
    Created,
    /// The operator stopped following it (Ctrl-C); it goes on in the service.
    Interrupted,
}

impl Outcome {
    /// The exit status documented in `--help`.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Completed | Outcome::Created => 0,
            Outcome::CompletedWithErrors => 1,
            Outcome::Running => 3,
            Outcome::Interrupted => 130,
        }
    }

    fn of(status: BatchStatus) -> Self {
        match status {
            BatchStatus::Completed => Outcome::Completed,
            BatchStatus::CompletedWithErrors => Outcome::CompletedWithErrors,
            BatchStatus::Running => Outcome::Running,
        }
    }
}

/// Runs `command` against the service it names. Ctrl-C stops the command, not what it
/// asked the service for: it says which batch goes on.
pub async fn run(command: BatchCommand) -> anyhow::Result<Outcome> {
    let created = Cell::new(None);
    tokio::select! {
        result = execute(command, &created) => result,
        // An `Err` (no signal handler) leaves the command alone.
        Ok(()) = tokio::signal::ctrl_c() => {
            match created.get() {
                Some(id) => errln!(
                    "\nstopped following batch {id}; it goes on in the service: ledger batch show {id}"
                ),
                None => errln!("\ninterrupted"),
            }
            Ok(Outcome::Interrupted)
        }
    }
}

/// The exit status of a command that failed with `error`: 2 for a command line or
/// environment that cannot work (a bad `--url`, an unusable token), as for clap's own
/// usage errors; 1 for everything else.
pub fn failure_code(error: &anyhow::Error) -> u8 {
    match error.downcast_ref::<ClientError>() {
        Some(ClientError::Usage(_)) => 2,
        _ => 1,
    }
}

/// Runs `command`, noting in `created` the batch it created once the service answered.
async fn execute(
    command: BatchCommand,
    created: &Cell<Option<BatchId>>,
) -> anyhow::Result<Outcome> {
    match command {
        BatchCommand::Create(args) => create(args, created).await,
        BatchCommand::Show(args) => show(args).await,
    }
}

fn api(connection: Connection) -> Result<Api, ClientError> {
    Api::new(Endpoint::new(&connection.url, connection.token)?)
}

async fn create(args: CreateArgs, created: &Cell<Option<BatchId>>) -> anyhow::Result<Outcome> {
    let api = api(args.connection)?;
    let merchants = if args.all {
        json!("*")
    } else {
        json!(args.merchants)
    };
    let mut body = json!({
        "merchantIds": merchants,
        "type": args.ledger_type.as_str(),
        "period": args.period,
        "formats": args.formats.iter().map(|f| f.as_str()).collect::<Vec<_>>(),
    });
    if let Some(zone) = &args.timezone {
        body["timezone"] = json!(zone);
    }
    let answer = api
        .create_batch(&body, args.idempotency_key.as_deref())
        .await?;
    let batch = answer.batch;
    created.set(Some(batch.id));
    if args.no_wait {
        print_result(&api, &batch, args.json).await?;
        return Ok(Outcome::Created);
    }
    let how = if answer.replayed {
        "answered for this idempotency key (created earlier)"
    } else {
        "created"
    };
    errln!(
        "batch {} {how}: {} {} in {}; following it (Ctrl-C stops following, not the batch)",
        batch.id,
        batch.ledger_type,
        batch.period,
        batch.formats.join(", ")
    );
    let id = batch.id;
    let batch = follow(&api, batch).await.with_context(|| {
        format!("following batch {id} (it goes on in the service: ledger batch show {id})")
    })?;
    errln!("batch {id}: {}", summary::verdict(batch.status));
    print_result(&api, &batch, args.json).await?;
    Ok(Outcome::of(batch.status))
}

async fn show(args: ShowArgs) -> anyhow::Result<Outcome> {
    let api = api(args.connection)?;
    let batch = api.batch(args.id).await?;
    print_result(&api, &batch, args.json).await?;
    Ok(Outcome::of(batch.status))
}

/// Prints `batch` on stdout: its JSON, or the summary table and its rejected ledgers. A
/// reader that went away (`| head`) loses the rest, which changes nothing about the batch:
/// the exit status still says how it ended.
async fn print_result(api: &Api, batch: &Batch, json: bool) -> anyhow::Result<()> {
    let text = if json {
        batch.raw.clone()
    } else {
        let rejected = rejected(api, batch)
            .await
            .context("listing the rejected ledgers")?;
        let mut text = summary::summary(batch, Utc::now());
        text.push_str(&summary::rejected(&rejected));
        text.trim_end().to_owned()
    };
    match output::line(format_args!("{text}")) {
        Ok(()) | Err(OutputError::Closed) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Follows `batch` until it is no longer RUNNING.
async fn follow(api: &Api, mut batch: Batch) -> Result<Batch, ClientError> {
    let mut progress = Progress::start(&batch);
    let mut watch = Some(Watch::start(api.endpoint().clone(), batch.id));
    let mut live = false;
    let mut next_read = Instant::now() + READ_EVERY_OFFLINE;
    let mut failing_since: Option<Instant> = None;
    while batch.status == BatchStatus::Running {
        let read_now = tokio::select! {
            () = tokio::time::sleep_until(next_read) => true,
            event = next_event(&mut watch) => match event {
                // What changed before the socket opened is read once.
                Some(Live::Connected) => {
                    live = true;
                    true
                }
                Some(Live::Progress(event)) if event.status == BatchStatus::Running => {
                    batch.apply(&event);
                    progress.show(&batch);
                    false
                }
                // The end: the whole batch is read (finishedAt, and the body --json prints).
                Some(Live::Progress(_)) => true,
                Some(Live::Lost(_)) => {
                    live = false;
                    true
                }
                Some(Live::Unavailable(why)) => {
                    progress.note(&format!(
                        "no live updates ({why}); reading the batch every {}s",
                        READ_EVERY_OFFLINE.as_secs()
                    ));
                    live = false;
                    watch = None;
                    false
                }
                None => {
                    live = false;
                    watch = None;
                    false
                }
            },
        };
        if !read_now {
            continue;
        }
        match api.batch(batch.id).await {
            Ok(read) => {
                batch = read;
                if failing_since.take().is_some() {
                    progress.note("the service answers again");
                }
                progress.show(&batch);
            }
            Err(e) if e.is_transient() => {
                let first = failing_since.is_none();
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= OUTAGE_PATIENCE {
                    progress.finish();
                    return Err(e);
                }
                if first {
                    progress.note(&format!(
                        "{e}; trying again for up to {}s",
                        OUTAGE_PATIENCE.as_secs()
                    ));
                }
            }
            Err(e) => {
                progress.finish();
                return Err(e);
            }
        }
        next_read = Instant::now()
            + if live {
                READ_EVERY_LIVE
            } else {
                READ_EVERY_OFFLINE
            };
    }
    progress.finish();
    Ok(batch)
}

/// The socket's next word, or never once it has none.
async fn next_event(watch: &mut Option<Watch>) -> Option<Live> {
    match watch {
        Some(watch) => watch.next().await,
        None => std::future::pending().await,
    }
}

/// The rejected ledgers of `batch`: up to [`MAX_LISTED`] listed, the rest counted. Those
/// the batch made are counted under REJECTED; a ledger that existed before it and is
/// REJECTED counts under EXISTING but still makes it COMPLETED_WITH_ERRORS, so a finished
/// batch with errors has its existing ledgers looked through too.
async fn rejected(api: &Api, batch: &Batch) -> Result<Rejected, ClientError> {
    let mut list = Rejected::default();
    let mut cursor: Option<String> = None;
    while batch.counts.rejected > 0 && list.shown.len() < MAX_LISTED {
        let page = api
            .batch_ledgers(
                batch.id,
                "REJECTED",
                PAGE.min(MAX_LISTED as u32),
                cursor.as_deref(),
            )
            .await?;
        let room = MAX_LISTED - list.shown.len();
        list.shown.extend(page.items.into_iter().take(room));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    list.more = batch
        .counts
        .rejected
        .saturating_sub(list.shown.len() as u64);
    if batch.status == BatchStatus::CompletedWithErrors && batch.counts.existing > 0 {
        let mut cursor: Option<String> = None;
        loop {
            let page = api
                .batch_ledgers(batch.id, "EXISTING", PAGE, cursor.as_deref())
                .await?;
            for ledger in page.items.into_iter().filter(|l| l.status == "REJECTED") {
                if list.shown.len() < MAX_LISTED {
                    list.shown.push(ledger);
                } else {
                    list.more += 1;
                }
            }
            cursor = page.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
    }
    Ok(list)
}

fn secret(raw: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret::new(raw.trim()))
}

fn merchant_id(raw: &str) -> Result<String, String> {
    MerchantId::parse(raw.trim())
        .map(|m| m.as_str().to_owned())
        .map_err(|e| e.message)
}

fn ledger_type(raw: &str) -> Result<LedgerType, String> {
    LedgerType::parse(&raw.to_ascii_uppercase()).ok_or_else(|| {
        let names: Vec<&str> = LedgerType::ALL.iter().map(|t| t.as_str()).collect();
        format!("expected {}", names.join(" or "))
    })
}

fn format(raw: &str) -> Result<Format, String> {
    Format::parse(&raw.trim().to_ascii_uppercase()).ok_or_else(|| {
        let names: Vec<&str> = Format::ALL.iter().map(|f| f.as_str()).collect();
        format!("expected {}", names.join(", "))
    })
}

fn period(raw: &str) -> Result<String, String> {
    Period::parse(raw)
        .map(|_| raw.to_owned())
        .map_err(|e| e.message)
}

fn timezone(raw: &str) -> Result<String, String> {
    Timezone::parse(raw)
        .map(|_| raw.to_owned())
        .map_err(|e| e.message)
}

fn batch_id(raw: &str) -> Result<BatchId, String> {
    raw.parse()
        .map_err(|e: crate::domain::InvalidInput| e.message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: BatchCommand,
    }

    fn parse(args: &[&str]) -> Result<BatchCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("batch").chain(args.iter().copied())).map(|c| c.command)
    }

    #[test]
    fn create_takes_named_merchants_or_all_and_checks_its_values() {
        let ok = parse(&[
            "create",
            "--token",
            "t",
            "--merchants",
            "m_a,m_b",
            "--type",
            "statement",
            "--period",
            "2026-10",
            "--formats",
            "csv,PDF",
        ])
        .unwrap();
        let BatchCommand::Create(args) = ok else {
            panic!("{ok:?}")
        };
        assert_eq!(args.merchants, ["m_a", "m_b"]);
        assert_eq!(args.ledger_type, LedgerType::Statement);
        assert_eq!(args.formats, [Format::Csv, Format::Pdf]);
        assert!(!format!("{args:?}").contains("token: \"t\""), "{args:?}");
        let base = [
            "create",
            "--token",
            "t",
            "--type",
            "SUMMARY",
            "--formats",
            "CSV",
        ];
        for bad in [
            &["--merchants", "m_a", "--all", "--period", "2026-10"][..],
            &["--period", "2026-10"],
            &["--all", "--period", "2026-13"],
            &["--merchants", "../m", "--period", "2026-10"],
            &["--all", "--period", "2026-10", "--timezone", "Mars/Olympus"],
        ] {
            let args: Vec<&str> = base.iter().chain(bad).copied().collect();
            assert!(parse(&args).is_err(), "{args:?}");
        }
        assert!(parse(&["show", "--token", "t", "0"]).is_err());
        assert!(parse(&["show", "--token", "t", "42"]).is_ok());
    }

    #[test]
    fn exit_codes_say_how_the_batch_ended() {
        assert_eq!(Outcome::of(BatchStatus::Completed).exit_code(), 0);
        assert_eq!(Outcome::of(BatchStatus::CompletedWithErrors).exit_code(), 1);
        assert_eq!(Outcome::of(BatchStatus::Running).exit_code(), 3);
        assert_eq!(Outcome::Created.exit_code(), 0);
        assert_eq!(Outcome::Interrupted.exit_code(), 130);
    }
}
