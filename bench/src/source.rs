//! `ledger-bench source`: the source adapter alone — every entry of one merchant read,
//! parsed and validated, nothing rendered — from an NDJSON file, a one-page JSON file, or
//! that page over HTTP from a local upstream: what reading costs on its own.

use std::time::Instant;

use futures::StreamExt;
use ledger::domain::MerchantId;
use ledger::outln;
use ledger::source::file::FileSource;
use ledger::source::http::{HttpSource, HttpSourceOptions};
use ledger::source::{Source, Window};

use crate::harness::{SourceForm, median, peak_rss_mib, reset_peak_rss, write_source_as};
use crate::upstream;

pub async fn source(entries: u64, runs: usize, form: SourceForm) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("source");
    write_source_as(&path, "m_bench", entries, vec![("EUR", 0)], form)?;
    let upstream = match form {
        SourceForm::Http => Some(upstream::serve(path.clone()).await?),
        SourceForm::Ndjson | SourceForm::Json | SourceForm::JsonEntriesFirst => None,
    };
    let source: Box<dyn Source> = match &upstream {
        Some(upstream) => Box::new(HttpSource::new(
            upstream.url.parse()?,
            None,
            HttpSourceOptions::default(),
        )?),
        None => Box::new(FileSource::new(&path)),
    };
    let id = MerchantId::parse("m_bench").map_err(|e| anyhow::anyhow!("{e}"))?;
    let window = Window {
        from: "2025-01-01T00:00:00Z".parse()?,
        to: "2026-01-01T00:00:00Z".parse()?,
    };
    let (mut walls, mut rss) = (Vec::new(), Vec::new());
    for run in 1..=runs.max(1) {
        reset_peak_rss();
        let t0 = Instant::now();
        let stream = source.entries(&id, window).await?;
        let mut batches = stream.entries;
        let mut read = 0u64;
        while let Some(batch) = batches.next().await {
            read += batch?.len() as u64;
        }
        let wall = t0.elapsed().as_secs_f64();
        anyhow::ensure!(read == entries, "read {read} of {entries} entries");
        let peak = peak_rss_mib();
        outln!(
            "run {run}: entries={read} wall={wall:.3}s peak_rss={peak:.1}MiB ({:.0} entries/s)",
            read as f64 / wall
        )?;
        walls.push(wall);
        rss.push(peak);
    }
    outln!(
        "source from {form}, {entries} entries, {} runs: median wall {:.3}s, median peak RSS {:.1}MiB",
        walls.len(),
        median(&mut walls),
        median(&mut rss)
    )?;
    Ok(())
}
