//! The `ledger-bench` command line: a small run prints its figures, and a reader that went
//! away ends it quietly, as with every command of `ledger` (tests/it/cli.rs).

use std::process::Command;

fn render() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ledger-bench"));
    cmd.args([
        "render",
        "--entries",
        "10",
        "--runs",
        "1",
        "--format",
        "CSV",
    ])
    .env("APP_ENV_LOG_LEVEL", "warn");
    cmd
}

#[test]
fn render_prints_its_figures() {
    let o = render().output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{o:?}");
    assert!(out.contains("generating 10 entries alone: "), "{out}");
    assert!(out.contains("run 1: wall="), "{out}");
    assert!(
        out.contains("render STATEMENT in CSV, 10 entries, 1 runs: median wall "),
        "{out}"
    );
}

#[test]
fn ends_quietly_when_its_reader_is_gone() {
    // `ledger-bench … | head -0`: the read end is closed before the command writes a byte.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let o = render().stdout(writer).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!err.contains("Broken pipe"), "{err}");
}

/// Runs `ledger-bench args…` and returns what it printed, failing the test with its output
/// when it fails.
fn succeeds(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_ledger-bench"))
        .args(args)
        .env("APP_ENV_LOG_LEVEL", "warn")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// `ledger-bench live` at a small size: a service process of its own, clients watching it,
/// every figure printed (the full size is BENCHMARKS.md's).
#[test]
fn live_prints_its_figures() {
    let out = succeeds(&[
        "live",
        "--clients",
        "50",
        "--ledgers",
        "4",
        "--entries",
        "50",
        "--rate",
        "20",
    ]);
    assert!(out.contains("50 clients watching every merchant"), "{out}");
    // Every client heard every status change of the four ledgers: PENDING, PROCESSING,
    // COMPLETED each.
    assert!(out.contains("per client 12..12 status frames"), "{out}");
    assert!(out.contains("ledger_ws_clients 50;"), "{out}");
    assert!(out.contains("0 clients closed as too slow"), "{out}");
    assert!(out.contains("KiB per idle socket"), "{out}");
}

/// `ledger-bench list` at a small size: a seeded store, every shape listed and timed, then
/// timelines, replays and a batch's pages.
#[test]
fn list_prints_its_figures() {
    let out = succeeds(&[
        "list",
        "--ledgers",
        "20000",
        "--requests",
        "2",
        "--timelines",
        "--batch",
    ]);
    assert!(
        out.contains("list, SQLite: 20000 ledgers seeded in "),
        "{out}"
    );
    // Six callers × eight filter combinations, each a line, then the summary.
    let shapes = out
        .lines()
        .filter(|l| l.contains(" ms") || l.ends_with(char::is_numeric))
        .count();
    assert!(shapes >= 48, "{out}");
    assert!(out.contains("viewer of the big merchant and 4"), "{out}");
    assert!(out.contains("worst shape p99 "), "{out}");
    assert!(out.contains("timeline of a ledger"), "{out}");
    // Four windows × four scopes, each replay reading at least one event for every merchant.
    let replays: Vec<&str> = out.lines().filter(|l| l.contains("replay of ")).collect();
    assert_eq!(replays.len(), 16, "{out}");
    assert!(
        replays
            .iter()
            .filter(|l| l.contains("every merchant"))
            .all(|l| !l.contains(" 0 events")),
        "{out}"
    );
    // A third of the ledgers: 6,666 or 6,667 as the seed's first id falls.
    assert!(out.contains("a batch of 666"), "{out}");
    assert!(
        out.contains("all ") && out.contains(" member pages: p50 "),
        "{out}"
    );
    assert!(out.contains("batch counts (GET /batches/:id)"), "{out}");
}
