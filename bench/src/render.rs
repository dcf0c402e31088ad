//! `ledger-bench render`: one renderer alone over generated entries, without the service,
//! the encryption or the upload.

use std::time::Instant;

use anyhow::Context;
use ledger::domain::{
    Balance, Currency, Format, LedgerId, LedgerType, Merchant, MerchantId, Period, Stage, Timezone,
};
use ledger::outln;
use ledger::render::{self, DocumentHeader};
use ledger::source::fixture::{self, FixtureSpec};

use crate::harness::{median, peak_rss_mib, reset_peak_rss};

/// Counts what a renderer writes and drops it.
#[derive(Default)]
struct CountingSink(u64);

impl std::io::Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One renderer alone, `runs` times, over `entries` generated entries of the year 2025 in
/// Europe/Berlin spread over `currencies` (the first gets most): wall time and peak RSS of
/// generate + render, and of generating alone, so the renderer's share is the difference.
/// No encryption, no upload: `large` measures those.
pub fn render(
    entries: u64,
    runs: usize,
    ledger_type: LedgerType,
    format: Format,
    currencies: &[String],
) -> anyhow::Result<()> {
    let tz = Timezone::parse("Europe/Berlin").map_err(|e| anyhow::anyhow!("{e}"))?;
    let period = Period::parse("2025").map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut opening = Vec::new();
    for code in currencies {
        let currency = Currency::parse(code).with_context(|| format!("unknown currency {code}"))?;
        opening.push(Balance {
            currency,
            amount: 1_000_000,
        });
    }
    let header = DocumentHeader {
        ledger_id: LedgerId::from_i64(1),
        merchant: Merchant {
            id: MerchantId::parse("m_bench").map_err(|e| anyhow::anyhow!("{e}"))?,
            name: "Bench Merchant GmbH".into(),
            timezone: Some(tz),
            locale: None,
        },
        ledger_type,
        period,
        timezone: tz,
        bounds: period.bounds(tz),
        stage: Stage::Final,
        version: 1,
        generated_at: chrono::Utc::now(),
        opening_balances: opening,
    };
    let mut spec = FixtureSpec::new("m_bench", entries);
    spec.currencies = currencies.iter().map(|c| (c.as_str(), 1_000_000)).collect();
    spec.start = "2025-01-01T00:00:00Z".parse()?;
    let spec = spec.spread_until("2025-12-31T00:00:00Z".parse()?);

    let t0 = Instant::now();
    let generated = fixture::generate(&spec)?.count();
    let generate_only = t0.elapsed().as_secs_f64();
    outln!("generating {generated} entries alone: {generate_only:.3}s")?;

    let (mut walls, mut rss) = (Vec::new(), Vec::new());
    for run in 1..=runs.max(1) {
        reset_peak_rss();
        let t0 = Instant::now();
        let mut renderer = render::renderer(&header, format, CountingSink::default())?;
        for entry in fixture::generate(&spec)? {
            renderer.entry(&entry)?;
        }
        let (totals, sink) = renderer.finish()?;
        let wall = t0.elapsed().as_secs_f64();
        let peak = peak_rss_mib();
        anyhow::ensure!(
            totals.entry_count == entries,
            "the renderer reported {} entries of {entries}",
            totals.entry_count
        );
        outln!(
            "run {run}: wall={wall:.3}s peak_rss={peak:.1}MiB size={}B ({:.0} entries/s)",
            sink.0,
            entries as f64 / wall
        )?;
        walls.push(wall);
        rss.push(peak);
    }
    outln!(
        "render {ledger_type} in {format}, {entries} entries, {} runs: median wall {:.3}s (generating alone {generate_only:.3}s), median peak RSS {:.1}MiB",
        walls.len(),
        median(&mut walls),
        median(&mut rss)
    )?;
    Ok(())
}
