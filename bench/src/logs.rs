//! `ledger-bench logs`: requests per second of a `ledger serve` process whose log lines go to
//! a file, to a pipe read as fast as it is written, and to a pipe nobody reads (a stalled log
//! shipper). The service is a child process (logging is process-wide) with the embedded
//! defaults on a temporary data dir; every request is an authenticated `GET /ledgers/{id}`,
//! the status poll clients make most, and logs one line. The sinks take turns run by run so
//! that a change in the machine's load spreads over all three.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::harness::{ledger_binary, median, percentile, write_source};
use ledger::config::Config;
use ledger::domain::Grant;
use ledger::outln;

/// Where the served process's stdout goes.
#[derive(Debug, Clone, Copy)]
enum Sink {
    File,
    Pipe,
    Stalled,
}

impl Sink {
    const ALL: [Sink; 3] = [Sink::File, Sink::Pipe, Sink::Stalled];

    fn name(self) -> &'static str {
        match self {
            Sink::File => "file",
            Sink::Pipe => "fast pipe",
            Sink::Stalled => "stalled pipe",
        }
    }
}

/// A request that takes longer than this counts as not answered: the service is stuck (the
/// failure this benchmark exists to show), not slow.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Requests before each measured run, so connections, caches and the allocator are warm.
const WARM_UP: usize = 200;

/// One measured run.
struct Run {
    answered: usize,
    seconds: f64,
    /// Latencies in milliseconds, sorted.
    latencies: Vec<f64>,
    /// `ledger_log_lines_dropped_total` at the end (None: the binary has no such counter).
    dropped: Option<u64>,
    /// Why the run stopped before all its requests were answered.
    stuck: Option<String>,
}

/// A `ledger serve` child process; killed when dropped.
struct Served {
    child: Child,
    base: String,
    /// The stalled pipe's read end, held open and never read.
    _unread: Option<ChildStdout>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        // SIGKILL: a process stuck on its stdout does not stop on SIGTERM (issue 13), and the
        // figures are taken before this.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// Runs `requests` requests, `concurrency` at once, against `ledger serve` processes (the
/// `ledger` binary beside this one, or `binary`, e.g. an older build) logging to each kind
/// of sink, `runs` times, and prints requests per second and latency for each.
pub async fn logs(
    requests: usize,
    concurrency: usize,
    runs: usize,
    binary: Option<PathBuf>,
) -> anyhow::Result<()> {
    let binary = match binary {
        Some(b) => b,
        None => ledger_binary()?,
    };
    let dir = tempfile::tempdir()?;
    let vars = [
        ("APP_ENV_DATA_DIR", dir.path().join("data")),
        ("APP_ENV_SOURCE_DIR", dir.path().join("source")),
    ];
    write_source(&dir.path().join("source"), "m_logs", 100, vec![("EUR", 0)])?;
    let config = Config::from_vars(
        &vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.display().to_string()))
            .collect(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    ledger::app::migrate(&config).await?;
    ledger::app::open_store(&config)
        .await?
        .add_grant(&Grant {
            subject: "bench".into(),
            role: "platform_admin".into(),
            domain: "*".into(),
        })
        .await?;
    let token =
        ledger::app::dev_key(&config)?.sign("bench", Duration::from_secs(3600), None, None)?;
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .pool_max_idle_per_host(concurrency)
        .build()?;
    outln!(
        "bench logs: {} × {requests} GET /ledgers/{{id}}, {concurrency} at once, against {}",
        runs.max(1),
        binary.display()
    )?;

    let mut results: Vec<(Sink, Vec<Run>)> = Sink::ALL.iter().map(|s| (*s, Vec::new())).collect();
    // Created by the first process; every later one reads the same data dir.
    let mut ledger = None;
    for run in 1..=runs.max(1) {
        for (sink, done) in &mut results {
            let served = serve(&binary, &vars, dir.path(), *sink)?;
            ready(&client, &served).await?;
            let id = match &ledger {
                Some(id) => String::clone(id),
                None => ledger
                    .insert(create(&client, &served, &token).await?)
                    .clone(),
            };
            let url = format!("{}/v1/api/ledger/ledgers/{id}", served.base);
            let r = measure(&client, &served, &token, &url, requests, concurrency).await?;
            outln!("run {run}, {}: {}", sink.name(), describe(&r, requests))?;
            done.push(r);
        }
    }
    for (sink, done) in &results {
        let stuck: Vec<&Run> = done.iter().filter(|r| r.stuck.is_some()).collect();
        if let Some(first) = stuck.first() {
            outln!(
                "{:<13} STUCK in {} of {} runs: no answer within {}s after {} requests (warm-up included)",
                sink.name(),
                stuck.len(),
                done.len(),
                REQUEST_TIMEOUT.as_secs(),
                WARM_UP + first.answered
            )?;
            continue;
        }
        let rate_of = |r: &Run| r.answered as f64 / r.seconds;
        let mut rates: Vec<f64> = done.iter().map(rate_of).collect();
        let rate = median(&mut rates);
        let Some(mid) = done.iter().find(|r| rate_of(r) == rate) else {
            continue;
        };
        outln!(
            "{:<13} median {rate:.0} req/s (runs: {}); that run: p50 {:.2}ms p99 {:.2}ms, {} log lines dropped",
            sink.name(),
            done.iter()
                .map(|r| format!("{:.0}", rate_of(r)))
                .collect::<Vec<_>>()
                .join(", "),
            percentile(&mid.latencies, 50.0),
            percentile(&mid.latencies, 99.0),
            mid.dropped
                .map_or_else(|| "n/a".to_owned(), |d| d.to_string()),
        )?;
    }
    Ok(())
}

fn describe(r: &Run, requests: usize) -> String {
    let mut s = format!(
        "{} of {requests} answered in {:.2}s: {:.0} req/s, p50 {:.2}ms p99 {:.2}ms, {} log lines dropped",
        r.answered,
        r.seconds,
        r.answered as f64 / r.seconds,
        percentile(&r.latencies, 50.0),
        percentile(&r.latencies, 99.0),
        r.dropped
            .map_or_else(|| "n/a".to_owned(), |d| d.to_string()),
    );
    if let Some(why) = &r.stuck {
        s.push_str(&format!(
            "; then STUCK after {} requests (warm-up included): {why}",
            WARM_UP + r.answered
        ));
    }
    s
}

/// Starts `binary serve` on a free port with its stdout going to `sink`, and waits until it
/// is ready.
fn serve(
    binary: &Path,
    vars: &[(&str, PathBuf)],
    dir: &Path,
    sink: Sink,
) -> anyhow::Result<Served> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut cmd = Command::new(binary);
    cmd.arg("serve")
        .env_clear()
        .envs(vars.iter().map(|(k, v)| (*k, v.as_os_str())))
        .env("APP_ENV_HOST", "127.0.0.1")
        .env("APP_ENV_PORT", port.to_string())
        .env("APP_ENV_LOG_LEVEL", "info")
        .env("APP_ENV_POLICY_CACHE_TTL_MS", "60000")
        .stderr(Stdio::null());
    match sink {
        Sink::File => {
            let file = std::fs::File::create(dir.join("serve.log"))?;
            cmd.stdout(file);
        }
        Sink::Pipe | Sink::Stalled => {
            cmd.stdout(Stdio::piped());
        }
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {} serve", binary.display()))?;
    let stdout = child.stdout.take();
    let (unread, reader) = match (sink, stdout) {
        (Sink::Pipe, Some(mut out)) => {
            let reader = std::thread::spawn(move || {
                let mut buf = vec![0; 64 * 1024];
                while matches!(out.read(&mut buf), Ok(n) if n > 0) {}
            });
            (None, Some(reader))
        }
        (_, out) => (out, None),
    };
    Ok(Served {
        child,
        base: format!("http://127.0.0.1:{port}"),
        _unread: unread,
        reader,
    })
}

/// Creates the ledger every request reads.
async fn create(client: &reqwest::Client, served: &Served, token: &str) -> anyhow::Result<String> {
    let created: Value = client
        .post(format!("{}/v1/api/ledger/ledgers", served.base))
        .bearer_auth(token)
        .json(&json!({"merchantId": "m_logs", "type": "STATEMENT", "period": "2025", "format": "CSV"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(created["id"].as_str().context("no ledger id")?.to_owned())
}

/// Warms up, then GETs `url` `requests` times, `concurrency` at once; stops at the first
/// request that is not answered.
async fn measure(
    client: &reqwest::Client,
    served: &Served,
    token: &str,
    url: &str,
    requests: usize,
    concurrency: usize,
) -> anyhow::Result<Run> {
    let get = |url: String| async move {
        let t0 = Instant::now();
        let r = client.get(&url).bearer_auth(token).send().await?;
        let status = r.status();
        r.bytes().await?;
        if !status.is_success() {
            bail!("GET answered {status}");
        }
        Ok::<f64, anyhow::Error>(t0.elapsed().as_secs_f64() * 1000.0)
    };
    let mut stuck = None;
    let mut warm = futures::stream::iter((0..WARM_UP).map(|_| get(url.to_owned())))
        .buffer_unordered(concurrency);
    while let Some(r) = warm.next().await {
        if let Err(e) = r {
            stuck = Some(format!("{e:#} (warming up)"));
            break;
        }
    }
    drop(warm);
    let mut latencies = Vec::with_capacity(requests);
    let t0 = Instant::now();
    if stuck.is_none() {
        let mut all = futures::stream::iter((0..requests).map(|_| get(url.to_owned())))
            .buffer_unordered(concurrency);
        while let Some(r) = all.next().await {
            match r {
                Ok(ms) => latencies.push(ms),
                Err(e) => {
                    stuck = Some(format!("{e:#}"));
                    break;
                }
            }
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let dropped = if stuck.is_none() {
        dropped_lines(client, served).await?
    } else {
        None
    };
    Ok(Run {
        answered: latencies.len(),
        seconds,
        latencies,
        dropped,
        stuck,
    })
}

async fn ready(client: &reqwest::Client, served: &Served) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{}/readyz", served.base)).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} serve did not become ready within 30 s", served.base);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `ledger_log_lines_dropped_total` of the served process.
async fn dropped_lines(client: &reqwest::Client, served: &Served) -> anyhow::Result<Option<u64>> {
    let text = client
        .get(format!("{}/metrics", served.base))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("ledger_log_lines_dropped_total "))
        .and_then(|v| v.trim().parse().ok()))
}
