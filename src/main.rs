//! The `ledger` binary: parses the command line and calls the library.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ledger::auth::validate_grant;
use ledger::client::batch::BatchCommand;
use ledger::config::Config;
use ledger::output::OutputError;
use ledger::telemetry::LogTarget;
use ledger::{errln, outln};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "ledger",
    version,
    about = "Merchant ledgers: generated asynchronously, encrypted at rest"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the configured roles (the default).
    #[command(after_long_help = ledger::config::help())]
    Serve,
    /// Apply database migrations and exit.
    #[command(
        long_about = "Apply the job store's pending migrations and exit, starting no role \
                      (the same as RUN_MODE=migrate). `serve` refuses a database with pending \
                      migrations and names them; the embedded SQLite file migrates itself.",
        after_long_help = ledger::config::help()
    )]
    Migrate,
    /// Create and follow batches of ledgers on a running service (a month-end close by
    /// hand).
    Batch {
        #[command(subcommand)]
        command: BatchCommand,
    },
    /// Print a token signed with the local dev key.
    Token {
        /// The token's subject (`sub`).
        #[arg(long)]
        sub: String,
        /// Lifetime, e.g. `1h`, `30m`, `7d`.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// Manage authorization policies.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Print a new random base64 AES-256 key (for APP_ENV_LEDGER_ENCRYPTION_KEY).
    Keygen,
    /// The key hierarchy: which root key protects what, rewrap, the audit log (SPEC §15).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Operator acts on a merchant's data.
    Merchant {
        #[command(subcommand)]
        command: MerchantCommand,
    },
    /// Print the OpenAPI 3.1 document of the HTTP API (as served at /v1/api/ledger/openapi.json).
    Openapi,
    /// Check a downloaded ledger document against its manifest (offline with a JWKS file).
    #[command(
        long_about = "Check that FILE is the document MANIFEST vouches for: the manifest's \
                      ES256 signature by a key of the JWKS, then the SHA-256 and size of \
                      FILE. Needs no configuration and no account.",
        after_long_help = "Exit status: 0 verified (what the manifest vouches for is printed); \
                           1 not verified (what does not match is named: signature, hash, \
                           size); 2 the check could not be made (a file or the JWKS unreadable)."
    )]
    Verify {
        /// The document as downloaded (PDF, CSV or XLSX).
        file: std::path::PathBuf,
        /// The manifest, as GET /v1/api/ledger/ledgers/{id}/manifest answered it.
        #[arg(long)]
        manifest: std::path::PathBuf,
        /// The public keys: the service's https://…/v1/api/ledger/.well-known/jwks.json, or a
        /// saved copy of it.
        #[arg(long)]
        jwks: String,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Give SUBJECT the ROLE on MERCHANT (or `*` for every merchant).
    #[command(after_long_help = ROLES_HELP)]
    Grant {
        /// Who: the `sub` claim of the caller's tokens, e.g. `alice`.
        subject: String,
        /// One of merchant_viewer, merchant_operator, merchant_admin, platform_admin.
        role: String,
        /// A merchant id (`[A-Za-z0-9_-]{1,64}`), or `*` for every merchant, present and
        /// future (quote it in a shell: '*').
        merchant: String,
    },
    /// Take a grant away (the same three values it was granted with).
    #[command(after_long_help = ROLES_HELP)]
    Revoke {
        /// Who: the `sub` claim of the caller's tokens.
        subject: String,
        /// The role granted.
        role: String,
        /// The merchant id, or `*`, as granted.
        merchant: String,
    },
    /// List every grant.
    List,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Which root key wraps how many merchant keys and protects how many files, and which
    /// old key may be removed.
    Status,
    /// Put everything under the current root key: re-wrap merchant keys, re-seal files
    /// sealed by a master key directly (from before the key hierarchy). Resumable and
    /// idempotent; safe while the service runs.
    #[command(
        after_long_help = "Rotating the root: set the new key (APP_ENV_LEDGER_ENCRYPTION_KEY, \
                           the old one moved to APP_ENV_LEDGER_ENCRYPTION_KEYS_OLD; or a new \
                           APP_ENV_LEDGER_KMS_KEY_ID), restart, run `ledger keys rewrap`, then \
                           `ledger keys status` says when the old key protects nothing and may \
                           be removed. Exit status 1 when an item failed (a later run retries it)."
    )]
    Rewrap,
    /// The key audit log (shreds, rewraps, retention), newest first.
    Audit {
        /// One merchant's records only.
        #[arg(long)]
        merchant: Option<String>,
        /// At most this many records.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

#[derive(Subcommand)]
enum MerchantCommand {
    /// Destroy MERCHANT's key: every file of the merchant becomes unreadable at once, for
    /// good (downloads answer 410 SHREDDED); its ledgers stay, and the audit log records
    /// who did it.
    Shred {
        /// The merchant id.
        merchant: String,
        /// Required: this cannot be undone.
        #[arg(long)]
        confirm: bool,
        /// Who asks (recorded in the audit log); default `$USER@host`.
        #[arg(long)]
        actor: Option<String>,
    },
}

/// The built-in roles, for `policy grant|revoke --help`.
const ROLES_HELP: &str = "\
Roles (each includes the one above it):
  merchant_viewer    read, download
  merchant_operator  + create, retry, regenerate
  merchant_admin     + delete
  platform_admin     everything; grant it on `*`

api processes see a change within APP_ENV_POLICY_CACHE_TTL_MS, at once with APP_ENV_REDIS_URL.";

/// Two glibc malloc settings that keep a long-running worker's RSS flat, measured with
/// `ledger-bench large`:
/// - glibc gives every thread that allocates its own arena (up to 8 per core), and memory
///   freed in one arena is not reused by another: RSS crept from job to job (53 → 127 MiB
///   over five 1M-entry CSV ledgers). Two arenas keep it at ~60 MiB.
/// - Blocks from 128 KiB up come from mmap and go back to the kernel when freed. glibc's
///   default threshold grows to 32 MiB after the first such free, after which the PDF
///   writer's per-page compressor state (~325 KiB, zlib-rs) was carved out of the heap and
///   fragmented it: 100,000-row PDFs peaked anywhere between 65 and 160 MiB.
///
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
    let command = match Cli::parse().command {
        // A client of a running service: none of the service's configuration applies.
        Some(Command::Batch { command }) => return batch(command),
        // A recipient's check: none of the service's configuration applies.
        Some(Command::Verify {
            file,
            manifest,
            jwks,
        }) => {
            return verify(ledger::client::verify::VerifyArgs {
                file,
                manifest,
                jwks,
            });
        }
        // Needs no configuration: the document comes from the code alone.
        Some(Command::Openapi) => {
            return exit_code(
                ledger::api::openapi::json()
                    .map_err(anyhow::Error::from)
                    .and_then(|json| Ok(outln!("{json}")?)),
            );
        }
        command => command,
    };
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            errln!("{e}");
            return ExitCode::from(2);
        }
    };
    let serving = matches!(command, None | Some(Command::Serve));
    if matches!(command, Some(Command::Serve)) || (command.is_none() && !config.run_mode_migrate) {
        let problems = config.serving_problems();
        if !problems.is_empty() {
            eprintln!("{}", ledger::config::ConfigErrors(problems));
            return ExitCode::from(2);
        }
    }
    let target = if serving {
        LogTarget::Stdout
    } else {
        LogTarget::Stderr
    };
    // Declared before the runtime, so dropped after it: the flush also waits for the lines
    // of the runtime's last tasks.
    let _logs = match ledger::telemetry::init_logging(config.log_format, &config.log_level, target)
    {
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
    exit_code(runtime.block_on(dispatch(command, config)))
}

/// The one-thread runtime of a client command (`ledger batch`, `ledger verify`); the error
/// is on stderr when it cannot start.
fn client_runtime() -> Result<tokio::runtime::Runtime, ()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            errln!("cannot start the runtime: {e}");
        })
}

/// Runs `ledger batch …` and exits with its [`Outcome`](ledger::client::batch::Outcome)'s
/// status, or with the error on stderr and its status (both documented in its `--help`).
fn batch(command: BatchCommand) -> ExitCode {
    let runtime = match client_runtime() {
        Ok(r) => r,
        Err(()) => return ExitCode::FAILURE,
    };
    match runtime.block_on(ledger::client::batch::run(command)) {
        Ok(outcome) => ExitCode::from(outcome.exit_code()),
        Err(e) => {
            errln!("error: {e:#}");
            ExitCode::from(ledger::client::batch::failure_code(&e))
        }
    }
}

/// Runs `ledger verify …`: 0 verified, 1 not verified, 2 when the check could not be made.
fn verify(args: ledger::client::verify::VerifyArgs) -> ExitCode {
    let runtime = match client_runtime() {
        Ok(r) => r,
        Err(()) => return ExitCode::from(2),
    };
    match runtime.block_on(ledger::client::verify::run(&args)) {
        Ok(outcome) => {
            let (lines, code) = ledger::client::verify::report(&outcome);
            for line in lines {
                if outln!("{line}").is_err() {
                    break;
                }
            }
            ExitCode::from(code)
        }
        Err(e) => {
            errln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Success, or the error on stderr and failure. A stdout closed by its reader (`ledger
/// openapi | head`) is a success: the reader took what it wanted, as with any Unix filter;
/// a shell's `pipefail` must not see an error where there is none.
fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
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

async fn dispatch(command: Option<Command>, config: Config) -> anyhow::Result<()> {
    let command = match command {
        None if config.run_mode_migrate => Command::Migrate,
        None => Command::Serve,
        Some(c) => c,
    };
    match command {
        Command::Serve => serve(config).await,
        Command::Migrate => {
            let applied = ledger::app::migrate(&config).await?;
            if applied.is_empty() {
                outln!("migrations: up to date")?;
            } else {
                for m in applied {
                    outln!("migrations: applied {m}")?;
                }
            }
            Ok(())
        }
        Command::Token { sub, ttl } => {
            if config.auth_jwks_url.is_some() || config.auth_jwks_file.is_some() {
                errln!(
                    "warning: the server verifies tokens with APP_ENV_AUTH_JWKS_*; a dev-key token will be refused there"
                );
            }
            let key = ledger::app::dev_key(&config)?;
            let token = key.sign(
                &sub,
                ttl,
                config.auth_issuer.as_deref(),
                config.auth_audience.as_deref(),
            )?;
            outln!("{token}")?;
            Ok(())
        }
        Command::Policy { command } => policy(config, command).await,
        Command::Keygen => {
            outln!("{}", ledger::crypto::generate_key_base64())?;
            Ok(())
        }
        Command::Keys { command } => {
            let vault = ledger::app::operator_vault(&config).await?;
            match command {
                KeysCommand::Status => ledger::keys::commands::status(vault.keys()).await,
                KeysCommand::Rewrap => ledger::keys::commands::run_rewrap(&vault).await,
                KeysCommand::Audit { merchant, limit } => {
                    ledger::keys::commands::audit(vault.keys(), merchant.as_deref(), limit).await
                }
            }
        }
        Command::Merchant {
            command:
                MerchantCommand::Shred {
                    merchant,
                    confirm,
                    actor,
                },
        } => {
            let vault = ledger::app::operator_vault(&config).await?;
            let actor = actor.unwrap_or_else(ledger::keys::rewrap::actor);
            ledger::keys::commands::shred(vault.keys(), &merchant, confirm, &actor).await
        }
        Command::Openapi => {
            outln!("{}", ledger::api::openapi::json()?)?;
            Ok(())
        }
        // `main` runs these before reading the service's configuration, which they do not use.
        Command::Batch { .. } | Command::Verify { .. } => {
            anyhow::bail!("this command runs without the service's configuration")
        }
    }
}

async fn policy(config: Config, command: PolicyCommand) -> anyhow::Result<()> {
    let store = ledger::app::open_store(&config).await?;
    ledger::app::prepare_store(&config, &*store).await?;
    // What a change printed is kept until the change is announced: a reader that went away
    // must not keep the other api processes from hearing of it.
    let (changed, printed) = match command {
        PolicyCommand::Grant {
            subject,
            role,
            merchant,
        } => {
            let grant = validate_grant(&subject, &role, &merchant)?;
            let added = store.add_grant(&grant).await?;
            let printed = outln!(
                "{} {} {} {}",
                if added { "granted" } else { "already granted" },
                grant.subject,
                grant.role,
                grant.domain
            );
            (added, printed)
        }
        PolicyCommand::Revoke {
            subject,
            role,
            merchant,
        } => {
            let grant = validate_grant(&subject, &role, &merchant)?;
            let removed = store.remove_grant(&grant).await?;
            if !removed {
                anyhow::bail!(
                    "no such grant: {} {} {}",
                    grant.subject,
                    grant.role,
                    grant.domain
                );
            }
            let printed = outln!("revoked {} {} {}", grant.subject, grant.role, grant.domain);
            (true, printed)
        }
        PolicyCommand::List => {
            for g in store.list_grants().await? {
                outln!("{}\t{}\t{}", g.subject, g.role, g.domain)?;
            }
            (false, Ok(()))
        }
    };
    if changed && let Some(server) = &config.redis {
        // The store's revision moved already; this only makes every api process see it now
        // instead of after its cache TTL.
        let cache = ledger::auth::PolicyCacheConfig::default();
        if let Err(e) = ledger::auth::publish_policy_change_with(server, &cache).await {
            errln!(
                "warning: api processes will see the change within APP_ENV_POLICY_CACHE_TTL_MS ({e})"
            );
        }
    }
    Ok(printed?)
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let address = format!("{}:{}", config.host, config.port);
    let listener = tokio::net::TcpListener::bind(&address).await.map_err(|e| {
        anyhow::anyhow!("cannot listen on {address} (APP_ENV_HOST/APP_ENV_PORT): {e}")
    })?;
    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        signals.cancel();
    });
    ledger::run(config, listener, shutdown).await
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
