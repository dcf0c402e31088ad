//! `ledger-bench small`: many small CSV statements end to end, in one embedded process or
//! as an api process here plus worker-only `ledger serve` processes.

use std::time::{Duration, Instant};

use ledger::config::Config;
use ledger::outln;

use crate::harness::{
    day_merchants, day_statements, env_vars, percentile, spawn_workers, start_with,
};

/// Many small CSV statements: ledgers per second end to end and create → COMPLETED latency.
/// With `worker_processes` > 0 the service runs as an api-only process plus that many
/// worker-only processes, on the backends named by this process's `APP_ENV_*` variables
/// (e.g. PostgreSQL, Kafka, S3, Redis); otherwise one embedded process does everything.
pub async fn small(
    count: usize,
    entries: u64,
    concurrency: usize,
    worker_processes: usize,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let merchants = day_merchants(dir.path(), "m_small", count, entries)?;
    let mut base = env_vars();
    if worker_processes > 0 {
        // Worker processes refuse a database with pending migrations: migrate first, as a
        // deployment's migration job would.
        let config = Config::from_vars(&base).map_err(|e| anyhow::anyhow!("{e}"))?;
        ledger::app::migrate(&config).await?;
    }
    let mut workers = if worker_processes > 0 {
        base.insert("APP_ENV_APPLICATION_ROLES".into(), "api".into());
        Some(spawn_workers(worker_processes, dir.path(), concurrency)?)
    } else {
        None
    };
    let bench = start_with(dir, concurrency, base).await?;
    let bodies = day_statements(&merchants, count);
    let t0 = Instant::now();
    let ids = bench.create_all(&bodies).await?;
    let created_in = t0.elapsed().as_secs_f64();
    let mut latencies = Vec::with_capacity(count);
    for id in &ids {
        if let Some(workers) = &mut workers {
            workers.check()?;
        }
        let l = bench.wait_completed(id, Duration::from_millis(20)).await?;
        let parse =
            |k: &str| chrono::DateTime::parse_from_rfc3339(l[k].as_str().unwrap_or_default());
        if let (Ok(c), Ok(d)) = (parse("createdAt"), parse("completedAt")) {
            latencies.push((d - c).num_milliseconds() as f64);
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    latencies.sort_by(|a, b| a.total_cmp(b));
    outln!(
        "small CSV statements: {count} ledgers of ~{} entries, {} worker process(es), \
         concurrency {concurrency} each: \
         {wall:.2}s wall ({created_in:.2}s to create all), {:.1} ledgers/s, \
         create→COMPLETED p50 {:.0}ms p99 {:.0}ms",
        entries / 365,
        worker_processes.max(1),
        count as f64 / wall,
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0)
    )?;
    bench.stop().await;
    drop(workers);
    Ok(())
}
