//! `ledger-bench large`: one large ledger end to end through the service (HTTP create →
//! COMPLETED) in this process, with its wall time and peak RSS.

use std::time::{Duration, Instant};

use ledger::domain::{Format, LedgerType};
use ledger::outln;
use serde_json::json;

use crate::harness::{
    SourceForm, median, peak_rss_mib, reset_peak_rss, start_with, write_source_as,
};
use crate::upstream;

/// One large ledger (`STATEMENT` in `CSV` unless told otherwise) read from `form`, `runs`
/// times: wall time create → COMPLETED and peak RSS (an HTTP upstream runs in this process
/// too, streaming its file).
pub async fn large(
    entries: u64,
    runs: usize,
    ledger_type: LedgerType,
    format: Format,
    form: SourceForm,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let started = Instant::now();
    let source = dir.path().join("source");
    write_source_as(
        &source,
        "m_bench",
        entries,
        vec![("EUR", 1_000_000), ("USD", 0), ("JPY", 0)],
        form,
    )?;
    outln!(
        "source: {entries} entries written as {form} in {:.2}s",
        started.elapsed().as_secs_f64()
    )?;
    let mut vars = std::collections::HashMap::new();
    let _upstream = match form {
        SourceForm::Http => {
            let upstream = upstream::serve(source).await?;
            vars.insert("APP_ENV_SOURCE_URL".to_owned(), upstream.url.clone());
            Some(upstream)
        }
        SourceForm::Ndjson | SourceForm::Json | SourceForm::JsonEntriesFirst => None,
    };
    let bench = start_with(dir, 1, vars).await?;
    let (mut walls, mut rss) = (Vec::new(), Vec::new());
    for run in 1..=runs.max(1) {
        reset_peak_rss();
        let t0 = Instant::now();
        let id = bench
            .create(&json!({"merchantId": "m_bench", "type": ledger_type.as_str(), "period": "2025", "format": format.as_str()}))
            .await?;
        let done = bench.wait_completed(&id, Duration::from_millis(5)).await?;
        let wall = t0.elapsed().as_secs_f64();
        let peak = peak_rss_mib();
        outln!(
            "run {run}: entries={entries} wall={wall:.3}s peak_rss={peak:.1}MiB size={}B ({:.0} entries/s)",
            done["file"]["sizeBytes"],
            entries as f64 / wall
        )?;
        walls.push(wall);
        rss.push(peak);
        // Soft delete frees the identity for the next run.
        bench
            .client
            .delete(format!("{}/ledgers/{id}", bench.base))
            .bearer_auth(&bench.token)
            .send()
            .await?;
    }
    outln!(
        "large {ledger_type} in {format} from {form}, {entries} entries, {} runs: median wall {:.3}s, median peak RSS {:.1}MiB",
        walls.len(),
        median(&mut walls),
        median(&mut rss)
    )?;
    bench.stop().await;
    Ok(())
}
