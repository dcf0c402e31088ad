//! `ledger-bench download`, `get` and `create`: the api role's hot paths, measured
//! with a client in this same process (so on the same two cores: its share is part of the
//! figure, and the CPU the whole process used is printed beside it).

use std::time::{Duration, Instant};

use futures::StreamExt;
use ledger::outln;
use serde_json::json;

use crate::harness::{median, percentile, start_with, write_source};

/// CPU seconds this process has used (user + system), from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(") ").map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime: fields 14 and 15 of the line, the 12th and 13th after the name, in
    // USER_HZ ticks (100 a second on Linux).
    (ticks(11) + ticks(12)) / 100.0
}

/// Downloads one large CSV statement (`entries` entries, about 96 bytes each) `runs` times
/// over loopback HTTP: decrypt, verify and stream, as a client sees it.
pub async fn download(entries: u64, runs: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    write_source(
        &dir.path().join("source"),
        "m_dl",
        entries,
        vec![("EUR", 0)],
    )?;
    // With this process's APP_ENV_* settings (a KMS root, say).
    let bench = start_with(dir, 1, crate::harness::env_vars()).await?;
    let id = bench
        .create(
            &json!({"merchantId": "m_dl", "type": "STATEMENT", "period": "2025", "format": "CSV"}),
        )
        .await?;
    let done = bench.wait_completed(&id, Duration::from_millis(50)).await?;
    let size = done["file"]["sizeBytes"].as_u64().unwrap_or(0);
    outln!("ledger {id}: {size} bytes of CSV, sealed")?;
    let url = format!("{}/ledgers/{id}/download", bench.base);
    let (mut rates, mut cores) = (Vec::new(), Vec::new());
    for run in 1..=runs.max(1) {
        let (t0, cpu0) = (Instant::now(), cpu_seconds());
        let response = bench
            .client
            .get(&url)
            .bearer_auth(&bench.token)
            .send()
            .await?
            .error_for_status()?;
        let mut body = response.bytes_stream();
        let mut read = 0u64;
        while let Some(chunk) = body.next().await {
            read += chunk?.len() as u64;
        }
        let wall = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu0;
        anyhow::ensure!(read == size, "read {read} of {size} bytes");
        let rate = read as f64 / wall / 1e9;
        outln!(
            "run {run}: {read} bytes in {wall:.3}s = {rate:.2} GB/s, process CPU {cpu:.2}s ({:.2} cores)",
            cpu / wall
        )?;
        rates.push(rate);
        cores.push(cpu / wall);
    }
    outln!(
        "download of {size} bytes, {} runs: median {:.2} GB/s of plaintext, median {:.2} cores busy (server and client)",
        rates.len(),
        median(&mut rates),
        median(&mut cores)
    )?;
    bench.stop().await;
    Ok(())
}

/// `GET /ledgers/{id}` with one bearer token from `clients` connections at once, for
/// `seconds` a run.
pub async fn get(clients: usize, seconds: u64, runs: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    write_source(&dir.path().join("source"), "m_get", 100, vec![("EUR", 0)])?;
    let bench = start_with(dir, 1, Default::default()).await?;
    let id = bench
        .create(
            &json!({"merchantId": "m_get", "type": "STATEMENT", "period": "2025", "format": "CSV"}),
        )
        .await?;
    bench.wait_completed(&id, Duration::from_millis(20)).await?;
    let url = format!("{}/ledgers/{id}", bench.base);
    let (mut rates, mut cores, mut p99s) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=runs.max(1) {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let (t0, cpu0) = (Instant::now(), cpu_seconds());
        let tasks: Vec<_> = (0..clients.max(1))
            .map(|_| {
                // One connection each, as separate clients would have.
                let client = reqwest::Client::new();
                let (url, token) = (url.clone(), bench.token.clone());
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    while Instant::now() < deadline {
                        let sent = Instant::now();
                        let r = client.get(&url).bearer_auth(&token).send().await?;
                        anyhow::ensure!(r.status() == 200, "GET answered {}", r.status());
                        r.bytes().await?;
                        latencies.push(sent.elapsed().as_secs_f64() * 1e3);
                    }
                    Ok(latencies)
                })
            })
            .collect();
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await??);
        }
        let wall = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu0;
        latencies.sort_by(f64::total_cmp);
        let rate = latencies.len() as f64 / wall;
        let (p50, p99) = (percentile(&latencies, 50.0), percentile(&latencies, 99.0));
        outln!(
            "run {run}: {} requests in {wall:.2}s = {rate:.0} req/s, p50 {p50:.2} ms, p99 {p99:.2} ms, process CPU {:.2} cores",
            latencies.len(),
            cpu / wall
        )?;
        rates.push(rate);
        cores.push(cpu / wall);
        p99s.push(p99);
    }
    outln!(
        "GET /ledgers/:id, {clients} clients, {} runs: median {:.0} req/s, median p99 {:.2} ms, median {:.2} cores busy (server and client)",
        rates.len(),
        median(&mut rates),
        median(&mut p99s),
        median(&mut cores)
    )?;
    bench.stop().await;
    Ok(())
}

/// `POST /ledgers` from `clients` connections at once, `count` ledgers in all (each its own
/// day of one merchant's years, so every create is new): creates per second, each 202 sent
/// only once its ledger is durable (SQLite `synchronous=FULL`: fsynced). Only the api role
/// runs, so the figure is the create path alone, not the workers generating the ledgers.
pub async fn create(count: usize, clients: usize, keys: bool) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let merchants = count.div_ceil(3650).max(1);
    for m in 0..merchants {
        write_source(
            &dir.path().join("source"),
            &format!("m_create_{m}"),
            10,
            vec![("EUR", 0)],
        )?;
    }
    let mut vars = std::collections::HashMap::new();
    vars.insert("APP_ENV_APPLICATION_ROLES".to_owned(), "api".to_owned());
    let bench = start_with(dir, 1, vars).await?;
    let day0: chrono::NaiveDate = "2015-01-01".parse()?;
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (t0, cpu0) = (Instant::now(), cpu_seconds());
    let tasks: Vec<_> = (0..clients.max(1))
        .map(|_| {
            let client = reqwest::Client::new();
            let (url, token, next) = (
                format!("{}/ledgers", bench.base),
                bench.token.clone(),
                next.clone(),
            );
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= count {
                        return anyhow::Ok(latencies);
                    }
                    let day = day0 + chrono::Duration::days((i % 3650) as i64);
                    let body = json!({"merchantId": format!("m_create_{}", i / 3650), "type": "STATEMENT", "period": day.to_string(), "format": "CSV"});
                    let sent = Instant::now();
                    let mut request = client.post(&url).bearer_auth(&token).json(&body);
                    if keys {
                        request = request.header("Idempotency-Key", format!("bench-create-{i}"));
                    }
                    let r = request.send().await?;
                    anyhow::ensure!(r.status() == 202, "create answered {}", r.status());
                    r.bytes().await?;
                    latencies.push(sent.elapsed().as_secs_f64() * 1e3);
                }
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    latencies.sort_by(f64::total_cmp);
    outln!(
        "POST /ledgers{}, {} creates from {clients} connections in {wall:.2}s: {:.0} creates/s, p50 {:.2} ms, p99 {:.2} ms, {:.2} cores busy (server and client)",
        if keys { " with Idempotency-Key" } else { "" },
        latencies.len(),
        latencies.len() as f64 / wall,
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        cpu / wall
    )?;
    bench.stop().await;
    Ok(())
}
