//! `ledger-bench live`: many WebSocket clients on one api process while ledgers complete at
//! a steady rate — the api process's memory per socket, and how long a live event takes
//! from the worker's emit to every client.
//!
//! The service runs as its own `ledger serve` process (one embedded process, or with
//! `--workers N` an api-only process fed through Redis by N worker processes), so its RSS
//! and CPU are its own; the clients all run in this process. A progress event's `at` is read
//! from the clock right before the worker publishes it, so `receive − at` is the emit →
//! receive latency: the bus, the api's fan-out and each client's queue, the socket, and
//! this process's turn to read it. A status event's `at` is the state change, taken before
//! the store commits it, so its latency also holds the commit. Both processes read the same
//! wall clock (one machine): no clock skew enters the figures.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::harness::{
    Service, Workers, cpu_seconds, env_vars, percentile, prepare, proc_mib, spawn_workers,
    write_source,
};
use ledger::domain::Format;
use ledger::outln;

/// What `ledger-bench live` runs.
pub struct Options {
    /// Ledgers to generate (one merchant each).
    pub ledgers: usize,
    /// Entries in each merchant's year.
    pub entries: u64,
    pub format: Format,
    /// WebSocket clients, each watching every merchant.
    pub clients: usize,
    /// Ledgers created per second (0: all at once).
    pub rate: f64,
    /// Jobs each worker runs at once.
    pub concurrency: usize,
    /// Worker-only processes (0: one embedded process).
    pub workers: usize,
}

/// What one client heard: latencies in milliseconds, by kind.
#[derive(Default)]
struct Heard {
    progress: Vec<f64>,
    status: Vec<f64>,
    /// The COMPLETED status events alone (also in `status`).
    completed_ms: Vec<f64>,
    completed: HashSet<String>,
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Clients connecting at once.
const CONNECTING: usize = 64;

pub async fn live(o: Options) -> anyhow::Result<()> {
    if o.clients == 0 || o.ledgers == 0 {
        bail!("--clients and --ledgers must be at least 1");
    }
    if !o.rate.is_finite() || o.rate < 0.0 {
        bail!("--rate must be a number of ledgers per second, 0 for all at once");
    }
    let dir = tempfile::tempdir()?;
    let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let merchants: Vec<String> = (0..o.ledgers)
        .map(|i| format!("m_live_{run}_{i}"))
        .collect();
    for m in &merchants {
        write_source(&dir.path().join("source"), m, o.entries, vec![("EUR", 0)])?;
    }
    let mut base = env_vars();
    let production = o.workers > 0;
    if production {
        if !base.contains_key("APP_ENV_WEBSOCKET_REDIS_URL") {
            bail!("worker processes publish through Redis: set APP_ENV_WEBSOCKET_REDIS_URL");
        }
        base.insert("APP_ENV_APPLICATION_ROLES".into(), "api".into());
    }
    let prepared = prepare(dir.path(), o.concurrency, base).await?;
    let mut workers: Option<Workers> = if production {
        Some(spawn_workers(o.workers, dir.path(), o.concurrency)?)
    } else {
        None
    };
    let mut service = Service::spawn(
        &prepared,
        &[
            ("APP_ENV_WS_MAX_SOCKETS_PER_SUBJECT", o.clients.to_string()),
            ("APP_ENV_LOG_LEVEL", "error".to_owned()),
        ],
    )
    .await?;
    let pid = service.pid();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_mib = proc_mib(pid, "VmRSS");

    // The clients connect, a few at a time, and each starts listening at once.
    let ws_url = format!("{}/ws", service.base.replacen("http", "ws", 1));
    let connecting = Instant::now();
    let listeners: Vec<tokio::task::JoinHandle<anyhow::Result<(Heard, Socket)>>> =
        futures::stream::iter(0..o.clients)
            .map(|_| connect(&ws_url, &service.token))
            .buffer_unordered(CONNECTING)
            .map_ok(|socket| tokio::spawn(listen(socket, o.ledgers)))
            .try_collect()
            .await?;
    let connect_secs = connecting.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sockets_mib = proc_mib(pid, "VmRSS");
    let per_socket_kib = (sockets_mib - idle_mib) * 1024.0 / o.clients as f64;
    let seen = metric(&service, "ledger_ws_clients").await?;
    // The peak under load, from here on.
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    let (cpu_before, own_before) = (cpu_seconds(pid), cpu_seconds(std::process::id()));

    let bodies: Vec<Value> = merchants
        .iter()
        .map(|m| json!({"merchantId": m, "type": "STATEMENT", "period": "2025", "format": o.format.as_str()}))
        .collect();
    let t0 = Instant::now();
    let mut ids = Vec::with_capacity(o.ledgers);
    for (i, body) in bodies.iter().enumerate() {
        if o.rate > 0.0 {
            tokio::time::sleep_until((t0 + Duration::from_secs_f64(i as f64 / o.rate)).into())
                .await;
        }
        ids.push(service.create(body).await?);
    }
    let created = t0.elapsed().as_secs_f64();
    for id in &ids {
        service.check()?;
        if let Some(w) = &mut workers {
            w.check()?;
        }
        service
            .wait_completed(id, Duration::from_millis(100))
            .await?;
    }
    let wall = t0.elapsed().as_secs_f64();

    let (mut progress, mut status, mut completed) = (Vec::new(), Vec::new(), Vec::new());
    let (mut fewest, mut most) = (usize::MAX, 0);
    // The sockets stay open, idle again, for the memory reading after the load.
    let mut sockets = Vec::with_capacity(o.clients);
    for listener in listeners {
        let (heard, socket) = tokio::time::timeout(Duration::from_secs(60), listener)
            .await
            .context("a client did not hear every COMPLETED within 60 s of the last one")??
            .context("a client failed")?;
        sockets.push(socket);
        fewest = fewest.min(heard.status.len());
        most = most.max(heard.status.len());
        progress.extend(heard.progress);
        status.extend(heard.status);
        completed.extend(heard.completed_ms);
    }
    let load_secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu_before;
    let own_cpu = cpu_seconds(std::process::id()) - own_before;
    let peak_mib = proc_mib(pid, "VmHWM");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_mib = proc_mib(pid, "VmRSS");
    let after_kib = (after_mib - idle_mib) * 1024.0 / o.clients as f64;
    drop(sockets);
    let fanned = metric(&service, "ledger_ws_fanout_frames_total").await?;
    let writes = metric(&service, "ledger_ws_writes_total").await?;
    let sent = metric(&service, "ledger_ws_frames_sent_total").await?;
    let dropped = metric(&service, "ledger_ws_frames_dropped_total").await?;
    let slow = metric(&service, "ledger_ws_slow_client_closes_total").await?;
    for v in [&mut progress, &mut status, &mut completed] {
        v.sort_by(|a, b| a.total_cmp(b));
    }
    let shape = if production {
        format!(
            "production ({} worker process(es) → Redis → one api process)",
            o.workers
        )
    } else {
        "embedded (one service process, in-process bus)".to_owned()
    };
    outln!(
        "live events, {shape}: {} clients watching every merchant; {} {} statements of {} entries \
         created at {} (in {created:.1}s), all COMPLETED after {wall:.1}s",
        o.clients,
        o.ledgers,
        o.format.as_str(),
        o.entries,
        if o.rate > 0.0 {
            format!("{}/s", o.rate)
        } else {
            "once".to_owned()
        },
    )?;
    outln!(
        "  api process RSS: {idle_mib:.1} MiB before the clients, {sockets_mib:.1} MiB with \
         {} sockets ({per_socket_kib:.1} KiB per idle socket; ledger_ws_clients {seen}; \
         connected in {connect_secs:.1}s), peak {peak_mib:.1} MiB under load, \
         {after_mib:.1} MiB idle again after it ({after_kib:.1} KiB per socket)",
        o.clients
    )?;
    outln!(
        "  status, state change (before the commit) → client receive: {} frames, p50 {:.1}ms \
         p99 {:.1}ms max {:.1}ms; per client {fewest}..{most} status frames",
        status.len(),
        percentile(&status, 50.0),
        percentile(&status, 99.0),
        status.last().copied().unwrap_or(f64::NAN)
    )?;
    outln!(
        "  of which COMPLETED: {} frames, p50 {:.1}ms p99 {:.1}ms max {:.1}ms",
        completed.len(),
        percentile(&completed, 50.0),
        percentile(&completed, 99.0),
        completed.last().copied().unwrap_or(f64::NAN)
    )?;
    outln!(
        "  progress, worker emit → client receive: {} frames, p50 {:.1}ms p99 {:.1}ms max {:.1}ms \
         ({dropped} dropped for clients whose queue was full)",
        progress.len(),
        percentile(&progress, 50.0),
        percentile(&progress, 99.0),
        progress.last().copied().unwrap_or(f64::NAN)
    )?;
    outln!(
        "  fan-out: {fanned} frames queued in {load_secs:.1}s ({:.0} frames/s); {sent} frames \
         sent in {writes} writes ({:.1} frames a write); {slow} clients closed as too slow; api \
         process CPU {cpu:.1}s ({:.2} cores, generation included), clients' (this process) \
         {own_cpu:.1}s",
        fanned / load_secs,
        sent / writes,
        cpu / load_secs,
    )?;
    drop(service);
    drop(workers);
    Ok(())
}

async fn connect(url: &str, token: &str) -> anyhow::Result<Socket> {
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let config = WebSocketConfig::default()
        // Zeroed at every read by the library: kept near a batch of frames' size.
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0);
    let (socket, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
        .await
        .context("connecting a WebSocket client")?;
    Ok(socket)
}

/// A counter or gauge of the service's `/metrics`.
async fn metric(service: &Service, name: &str) -> anyhow::Result<f64> {
    // `/metrics` is served at the root, beside the API's base path.
    let root = service
        .base
        .split_once("/v1/")
        .map_or(service.base.as_str(), |(root, _)| root);
    let text = service
        .client
        .get(format!("{root}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    // NaN for a metric this build of the service does not have (a comparison with an
    // older one).
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN))
}

/// Reads frames until every one of `ledgers` ledgers was heard COMPLETED; gives the socket
/// back open.
async fn listen(mut socket: Socket, ledgers: usize) -> anyhow::Result<(Heard, Socket)> {
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
        // Read by hand, not parsed: ten thousand clients read every frame in this process,
        // beside the service on the same cores. The server writes these fields in this
        // order (its own tests hold the JSON to the documented shape).
        let Some(at) = field(&text, r#""at":""#).and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        else {
            continue;
        };
        let ms = (received - at.with_timezone(&Utc))
            .num_microseconds()
            .unwrap_or(i64::MAX) as f64
            / 1000.0;
        if text.starts_with(r#"{"event":"ledger.progress""#) {
            heard.progress.push(ms);
        } else if text.starts_with(r#"{"event":"ledger.status""#) {
            heard.status.push(ms);
            if field(&text, r#""status":""#) == Some("COMPLETED")
                && let Some(id) = field(&text, r#""ledgerId":""#)
                && heard.completed.insert(id.to_owned())
            {
                heard.completed_ms.push(ms);
            }
        }
    }
    Ok((heard, socket))
}

/// The text of the string field `name` of a flat JSON object, without unescaping (ids,
/// statuses and times hold no escapes).
/// `key` is the name with its quotes, colon and opening quote: `"at":"`.
fn field<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let start = json.find(key)? + key.len();
    let len = json[start..].find('"')?;
    Some(&json[start..start + len])
}
