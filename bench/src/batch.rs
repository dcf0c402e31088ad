//! `ledger-bench batch`: one batch of every merchant (`"*"`) through the service — expansion,
//! generation, completion — in one embedded process or as an api process here plus
//! worker-only `ledger serve` processes.

use std::time::{Duration, Instant};

use anyhow::bail;
use ledger::config::Config;
use ledger::domain::Format;
use ledger::outln;
use serde_json::{Value, json};

use crate::harness::{
    env_vars, peak_rss_mib, reset_peak_rss, spawn_workers, start_with, write_source,
};

/// A batch of `merchants` merchants × `formats`, each a STATEMENT of 2025 with about
/// `entries` entries: wall time POST → COMPLETED, ledgers per second, when the expansion
/// ended, and this process's peak RSS (the api role, and with no worker process the whole
/// service, plus the bench's own polling).
pub async fn batch(
    merchants: usize,
    entries: u64,
    formats: Vec<Format>,
    concurrency: usize,
    worker_processes: usize,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let source = dir.path().join("source");
    for i in 0..merchants {
        write_source(
            &source,
            &format!("m_batch_{run}_{i:06}"),
            entries,
            vec![("EUR", 0)],
        )?;
    }
    let mut base = env_vars();
    if worker_processes > 0 {
        let config = Config::from_vars(&base).map_err(|e| anyhow::anyhow!("{e}"))?;
        ledger::app::migrate(&config).await?;
    }
    let mut workers = if worker_processes > 0 {
        base.insert("APP_ENV_APPLICATION_ROLES".into(), "api".into());
        Some(spawn_workers(worker_processes, dir.path(), concurrency)?)
    } else {
        None
    };
    reset_peak_rss();
    let bench = start_with(dir, concurrency, base).await?;
    let names: Vec<&str> = formats.iter().map(|f| f.as_str()).collect();
    // A period only this run's merchants hold ledgers of is not needed: `"*"` lists the
    // source dir, which holds this run's merchants only.
    let body = json!({"merchantIds": "*", "type": "STATEMENT", "period": "2025", "formats": names});
    let t0 = Instant::now();
    let r = bench
        .client
        .post(format!("{}/batches", bench.base))
        .bearer_auth(&bench.token)
        .json(&body)
        .send()
        .await?;
    let status = r.status();
    let created: Value = r.json().await?;
    if status != 202 {
        bail!("POST /batches answered {status}: {created}");
    }
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    let expected = (merchants * formats.len()) as u64;
    let mut expanded_in = None;
    let mut last_print = Instant::now();
    let done = loop {
        if let Some(workers) = &mut workers {
            workers.check()?;
        }
        if t0.elapsed() > Duration::from_secs(3600) {
            bail!("the batch did not complete within an hour");
        }
        let b: Value = bench
            .client
            .get(format!("{}/batches/{id}", bench.base))
            .bearer_auth(&bench.token)
            .send()
            .await?
            .json()
            .await?;
        if expanded_in.is_none() && b["expanding"] == false {
            expanded_in = Some(t0.elapsed().as_secs_f64());
        }
        if b["status"] != "RUNNING" {
            break b;
        }
        if last_print.elapsed() > Duration::from_secs(5) {
            outln!(
                "  … {:.0}s: {} of {expected} members, {} completed",
                t0.elapsed().as_secs_f64(),
                b["total"],
                b["counts"]["COMPLETED"]
            )?;
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let wall = t0.elapsed().as_secs_f64();
    let total = done["total"].as_u64().unwrap_or(0);
    if done["status"] != "COMPLETED" || total != expected {
        bail!(
            "the batch ended {} with {total} of {expected} members: {done}",
            done["status"]
        );
    }
    outln!(
        "batch of {merchants} merchants × {} ({total} STATEMENTs of ~{entries} entries), \
         {} worker process(es), concurrency {concurrency} each: {wall:.2}s POST→COMPLETED, \
         {:.1} ledgers/s, expanded in {:.2}s, peak RSS of this process {:.1} MiB",
        names.join("+"),
        worker_processes.max(1),
        total as f64 / wall,
        expanded_in.unwrap_or(wall),
        peak_rss_mib()
    )?;
    bench.stop().await;
    drop(workers);
    Ok(())
}
