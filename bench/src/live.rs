//! `ledger-bench live`: how long a live event takes from the worker's emit to a WebSocket
//! client, measured on real ledgers.
//!
//! A progress event's `at` is read from the clock right before the worker publishes it, so
//! `receive − at` is the emit → receive latency: the bus (in-process broadcast, or Redis
//! pub/sub across processes), the api's WebSocket task with its per-client queue, and the
//! socket. A status event's `at` is the state change, taken before the store commits it, so
//! its latency also holds the commit; both are reported, each for what it is. Every client
//! runs in this process and reads the same wall clock as the workers (one machine), so
//! no clock skew enters the figures. The COMPLETED events are also reported alone: the
//! state change → receive figure the end-to-end tests printed before issue 14.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{Workers, env_vars, percentile, spawn_workers, start_with, write_source};
use ledger::config::Config;
use ledger::domain::Format;
use ledger::outln;

/// What one client heard: latencies in milliseconds, by kind.
#[derive(Default)]
struct Heard {
    progress: Vec<f64>,
    status: Vec<f64>,
    /// The COMPLETED status events alone (also in `status`).
    completed_ms: Vec<f64>,
    completed: HashSet<String>,
}

/// Runs `ledgers` statements of `entries` entries each in `format` while `clients` WebSocket
/// clients watch every merchant, and prints the emit → receive latencies. With
/// `worker_processes` > 0 the workers are separate processes and events cross Redis (the
/// production shape: set `APP_ENV_WEBSOCKET_REDIS_URL` and the other production backends);
/// otherwise one embedded process does everything with its in-process bus.
pub async fn live(
    ledgers: usize,
    entries: u64,
    format: Format,
    clients: usize,
    concurrency: usize,
    worker_processes: usize,
) -> anyhow::Result<()> {
    if clients == 0 || ledgers == 0 {
        bail!("--clients and --ledgers must be at least 1");
    }
    let dir = tempfile::tempdir()?;
    let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let merchants: Vec<String> = (0..ledgers).map(|i| format!("m_live_{run}_{i}")).collect();
    for m in &merchants {
        write_source(&dir.path().join("source"), m, entries, vec![("EUR", 0)])?;
    }
    let mut base = env_vars();
    let production = worker_processes > 0;
    if production {
        if !base.contains_key("APP_ENV_WEBSOCKET_REDIS_URL") {
            bail!("worker processes publish through Redis: set APP_ENV_WEBSOCKET_REDIS_URL");
        }
        let config = Config::from_vars(&base).map_err(|e| anyhow::anyhow!("{e}"))?;
        ledger::app::migrate(&config).await?;
        base.insert("APP_ENV_APPLICATION_ROLES".into(), "api".into());
    }
    let mut workers: Option<Workers> = if production {
        Some(spawn_workers(worker_processes, dir.path(), concurrency)?)
    } else {
        None
    };
    let bench = start_with(dir, concurrency, base).await?;

    let ws_url = format!("{}/ws", bench.base.replacen("http", "ws", 1));
    let mut listeners = Vec::with_capacity(clients);
    for _ in 0..clients {
        let mut request =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                ws_url.as_str(),
            )?;
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {}", bench.token).parse()?);
        let (socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .context("connecting a WebSocket client")?;
        listeners.push(tokio::spawn(listen(socket, ledgers)));
    }
    // A worker process needs a moment to join the bus; the bench waits for its readiness
    // through the ledgers themselves (they complete only once workers run).
    let bodies: Vec<Value> = merchants
        .iter()
        .map(|m| json!({"merchantId": m, "type": "STATEMENT", "period": "2025", "format": format.as_str()}))
        .collect();
    let t0 = Instant::now();
    let mut ids = Vec::with_capacity(ledgers);
    for body in &bodies {
        ids.push(bench.create(body).await?);
    }
    for id in &ids {
        if let Some(w) = &mut workers {
            w.check()?;
        }
        bench.wait_completed(id, Duration::from_millis(50)).await?;
    }
    let wall = t0.elapsed().as_secs_f64();

    let mut progress = Vec::new();
    let mut status = Vec::new();
    let mut completed = Vec::new();
    for listener in listeners {
        let heard = tokio::time::timeout(Duration::from_secs(30), listener)
            .await
            .context("a client did not hear every COMPLETED within 30 s")??
            .context("a client failed")?;
        progress.extend(heard.progress);
        status.extend(heard.status);
        completed.extend(heard.completed_ms);
    }
    progress.sort_by(|a, b| a.total_cmp(b));
    status.sort_by(|a, b| a.total_cmp(b));
    completed.sort_by(|a, b| a.total_cmp(b));
    let shape = if production {
        format!("production ({worker_processes} worker process(es) → Redis → api process)")
    } else {
        "embedded (one process, in-process bus)".to_owned()
    };
    // The api runs in this process: its counters are this process's.
    let exposition = ledger::telemetry::metrics_handle().render();
    let dropped = exposition
        .lines()
        .find_map(|l| l.strip_prefix("ledger_ws_frames_dropped_total "))
        .unwrap_or("0");
    outln!(
        "live events, {shape}: {ledgers} {} statements of {entries} entries in {wall:.2}s, \
         {clients} client(s), {dropped} progress frame(s) dropped for slow clients",
        format.as_str()
    )?;
    outln!(
        "  progress, worker emit → client receive: {} frames, p50 {:.2}ms p99 {:.2}ms max {:.2}ms",
        progress.len(),
        percentile(&progress, 50.0),
        percentile(&progress, 99.0),
        progress.last().copied().unwrap_or(f64::NAN)
    )?;
    outln!(
        "  status, state change (before the commit) → client receive: {} frames, p50 {:.2}ms p99 {:.2}ms max {:.2}ms",
        status.len(),
        percentile(&status, 50.0),
        percentile(&status, 99.0),
        status.last().copied().unwrap_or(f64::NAN)
    )?;
    outln!(
        "  of which COMPLETED, state change (before the commit) → client receive: {} frames, p50 {:.2}ms p99 {:.2}ms max {:.2}ms",
        completed.len(),
        percentile(&completed, 50.0),
        percentile(&completed, 99.0),
        completed.last().copied().unwrap_or(f64::NAN)
    )?;
    bench.stop().await;
    drop(workers);
    Ok(())
}

/// Reads frames until every one of `ledgers` ledgers was heard COMPLETED.
async fn listen(
    mut socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    ledgers: usize,
) -> anyhow::Result<Heard> {
    let mut heard = Heard::default();
    while heard.completed.len() < ledgers {
        let Some(frame) = socket.next().await else {
            bail!("the server closed the socket");
        };
        let received = Utc::now();
        let text = match frame? {
            Message::Text(text) => text,
            Message::Close(close) => bail!("the server closed the socket: {close:?}"),
            _ => continue,
        };
        let event: Value = serde_json::from_str(&text)?;
        let Some(at) = event["at"]
            .as_str()
            .and_then(|s| s.parse::<DateTime<Utc>>().ok())
        else {
            continue;
        };
        let ms = (received - at).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0;
        match event["event"].as_str() {
            Some("ledger.progress") => heard.progress.push(ms),
            Some("ledger.status") => {
                heard.status.push(ms);
                if let (Some("COMPLETED"), Some(id)) =
                    (event["status"].as_str(), event["ledgerId"].as_str())
                    && heard.completed.insert(id.to_owned())
                {
                    heard.completed_ms.push(ms);
                }
            }
            _ => {}
        }
    }
    let _ = socket.close(None).await;
    Ok(heard)
}
