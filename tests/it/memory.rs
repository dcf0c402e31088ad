//! Memory stays flat whatever the source: a one-page JSON file of millions of entries is
//! read as it streams, never held (issue 15). Measured as the `ledger serve` process's own
//! high-water mark (`VmHWM`), which covers everything it ever held.

use std::time::Duration;

use ledger::source::fixture::{self, FixtureSpec};

use crate::helpers::{Served, data_dir, operator_on, statement};

/// The process's peak resident memory in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM");
    kib / 1024.0
}

/// The bound on the whole process: the service itself, the worker's buffers and the
/// document of one day, in a debug build.
const BOUND_MIB: f64 = 128.0;

#[tokio::test]
async fn a_json_page_of_two_million_entries_is_read_in_bounded_memory() {
    let source = tempfile::tempdir().unwrap();
    let mut spec = FixtureSpec::new("m_huge", 2_000_000);
    spec.currencies = vec![("EUR", 100_000), ("USD", 0)];
    spec.start = "2025-01-01T00:00:00Z".parse().unwrap();
    let spec = spec.spread_until("2026-01-01T00:00:00Z".parse().unwrap());
    let file = source.path().join("m_huge.json");
    fixture::write_json(&file, &spec).unwrap();
    let size_mib = std::fs::metadata(&file).unwrap().len() as f64 / (1 << 20) as f64;
    assert!(
        size_mib > 2.0 * BOUND_MIB,
        "the page ({size_mib:.0} MiB) dwarfs the bound"
    );

    let data = data_dir();
    let (backends, token) = operator_on(data.path(), "m_huge").await;
    let client = reqwest::Client::new();
    let mut served = Served::start(data.path(), source.path(), &backends, &[]);
    served.ready(&client).await;
    // A day near the page's end (one entry every 15 s on average, so up to mid-December):
    // the 1.9 million entries before it are read, validated and carried into the opening
    // balances; the day's ~5,800 entries are printed.
    let id = served
        .create(&client, &token, &statement("m_huge", "2025-12-01"))
        .await;
    let done = served
        .wait_for(&client, &token, &id, "COMPLETED", 240)
        .await;
    let peak = peak_rss_mib(served.child.id());
    println!("peak RSS {peak:.1} MiB reading a {size_mib:.0} MiB page");
    assert!(
        peak < BOUND_MIB,
        "peak RSS {peak:.1} MiB reading a {size_mib:.0} MiB page: {done}"
    );
    // And the day's statement carried the year before it.
    let csv = client
        .get(format!(
            "{}/v1/api/ledger/ledgers/{id}/download",
            served.base
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let rows = csv.lines().filter(|l| l.contains("tx_")).count();
    assert!(
        (4_000..8_000).contains(&rows),
        "{rows} entries on the last day:\n{}",
        &csv[..csv.len().min(600)]
    );
    served.terminate(Duration::from_secs(20)).await;
}
