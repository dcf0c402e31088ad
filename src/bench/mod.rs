//! `ledger bench …`: measurements printed as figures. `large` and `small` go end to end
//! through the real service (HTTP create → COMPLETED): the service runs in this process on
//! a temporary data dir with the embedded defaults, the source is a generated NDJSON file.
//! `render` times one renderer alone over generated entries. Peak RSS is the process's
//! high-water mark (`VmHWM`), reset before each run. `logs` measures requests per second of
//! a served process by where its log lines go.

mod live;
mod logs;

pub use live::live;
pub use logs::logs;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::domain::{
    Balance, Currency, Format, Grant, LedgerId, LedgerType, Merchant, MerchantId, Period, Stage,
    Timezone,
};
use crate::outln;
use crate::render::{self, DocumentHeader};
use crate::source::fixture::{self, FixtureSpec};

/// A service started for a benchmark.
struct Bench {
    base: String,
    client: reqwest::Client,
    token: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

async fn start(dir: tempfile::TempDir, concurrency: usize) -> anyhow::Result<Bench> {
    start_with(dir, concurrency, HashMap::new()).await
}

/// The `APP_ENV_*` variables of this process (the production backends of a bench run).
fn env_vars() -> HashMap<String, String> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("APP_ENV_"))
        .collect()
}

async fn start_with(
    dir: tempfile::TempDir,
    concurrency: usize,
    base: HashMap<String, String>,
) -> anyhow::Result<Bench> {
    let mut vars = base;
    vars.insert(
        "APP_ENV_DATA_DIR".to_owned(),
        dir.path().join("data").display().to_string(),
    );
    vars.insert(
        "APP_ENV_SOURCE_DIR".to_owned(),
        dir.path().join("source").display().to_string(),
    );
    vars.insert(
        "APP_ENV_WORKER_CONCURRENCY".to_owned(),
        concurrency.to_string(),
    );
    vars.insert("APP_ENV_POLICY_CACHE_TTL_MS".to_owned(), "60000".to_owned());
    let mut config = Config::from_vars(&vars).map_err(|e| anyhow::anyhow!("{e}"))?;
    if config.has_production_backend() && config.auth_jwks_file.is_none() {
        // Production backends refuse the dev key: the bench is its own identity provider,
        // publishing the dev key of its data dir as a JWKS file.
        let key = crate::app::dev_key(&config)?;
        let jwks = dir.path().join("jwks.json");
        std::fs::write(&jwks, serde_json::to_vec(&key.jwks())?)?;
        vars.insert(
            "APP_ENV_AUTH_JWKS_FILE".to_owned(),
            jwks.display().to_string(),
        );
        vars.insert(
            "APP_ENV_AUTH_AUDIENCE".to_owned(),
            "ledger-bench".to_owned(),
        );
        config = Config::from_vars(&vars).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let key = crate::app::dev_key(&config)?;
    let token = key.sign(
        "bench",
        Duration::from_secs(3600),
        config.auth_issuer.as_deref(),
        config.auth_audience.as_deref(),
    )?;
    crate::app::migrate(&config).await?;
    let store = crate::app::open_store(&config).await?;
    store
        .add_grant(&Grant {
            subject: "bench".into(),
            role: "platform_admin".into(),
            domain: "*".into(),
        })
        .await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}/v1/api/ledger", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(crate::run(config, listener, shutdown.clone()));
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            bail!("the service did not start");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Bench {
        base,
        client,
        token,
        shutdown,
        task,
        _dir: dir,
    })
}

impl Bench {
    async fn create(&self, body: &Value) -> anyhow::Result<String> {
        let r = self
            .client
            .post(format!("{}/ledgers", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await?;
        let status = r.status();
        let body: Value = r.json().await?;
        if status != 202 {
            bail!("create answered {status}: {body}");
        }
        body["id"].as_str().map(str::to_owned).context("no id")
    }

    async fn ledger(&self, id: &str) -> anyhow::Result<Value> {
        Ok(self
            .client
            .get(format!("{}/ledgers/{id}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?
            .json()
            .await?)
    }

    async fn wait_completed(&self, id: &str, poll: Duration) -> anyhow::Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            if Instant::now() > deadline {
                bail!("ledger {id} did not complete within 300 s");
            }
            let l = self.ledger(id).await?;
            match l["status"].as_str() {
                Some("COMPLETED") => return Ok(l),
                Some("REJECTED") => bail!("ledger {id} was rejected: {}", l["failureReason"]),
                _ => tokio::time::sleep(poll).await,
            }
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// Resets the process's peak RSS so the next reading covers one run only.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The process's peak RSS in MiB since the last reset.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn write_source(
    dir: &Path,
    merchant: &str,
    entries: u64,
    currencies: Vec<(&str, i64)>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut spec = FixtureSpec::new(merchant, entries);
    spec.currencies = currencies;
    spec.start = "2025-01-01T00:00:00Z".parse()?;
    let spec = spec.spread_until("2025-12-31T00:00:00Z".parse()?);
    fixture::write_ndjson(&dir.join(format!("{merchant}.ndjson")), &spec)?;
    Ok(())
}

/// One large ledger (`STATEMENT` in `CSV` unless told otherwise), `runs` times: wall time
/// create → COMPLETED and peak RSS.
pub async fn large(
    entries: u64,
    runs: usize,
    ledger_type: LedgerType,
    format: Format,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let started = Instant::now();
    write_source(
        &dir.path().join("source"),
        "m_bench",
        entries,
        vec![("EUR", 1_000_000), ("USD", 0), ("JPY", 0)],
    )?;
    outln!(
        "source: {entries} entries written in {:.2}s",
        started.elapsed().as_secs_f64()
    )?;
    let bench = start(dir, 1).await?;
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
        "large {ledger_type} in {format}, {entries} entries, {} runs: median wall {:.3}s, median peak RSS {:.1}MiB",
        walls.len(),
        median(&mut walls),
        median(&mut rss)
    )?;
    bench.stop().await;
    Ok(())
}

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

/// Worker processes started for a bench run; killed when dropped.
struct Workers(Vec<std::process::Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Workers {
    /// Fails when a worker process exited (a bench would otherwise wait forever).
    fn check(&mut self) -> anyhow::Result<()> {
        for child in &mut self.0 {
            if let Some(status) = child.try_wait()? {
                bail!("worker process {} exited ({status})", child.id());
            }
        }
        Ok(())
    }
}

fn spawn_workers(count: usize, dir: &Path, concurrency: usize) -> anyhow::Result<Workers> {
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for i in 0..count {
        let data = dir.join(format!("worker-{i}"));
        std::fs::create_dir_all(&data)?;
        let child = std::process::Command::new(&exe)
            .arg("serve")
            .env("APP_ENV_APPLICATION_ROLES", "worker")
            .env("APP_ENV_HOST", "127.0.0.1")
            .env("APP_ENV_PORT", "0")
            .env("APP_ENV_DATA_DIR", &data)
            .env("APP_ENV_SOURCE_DIR", dir.join("source"))
            .env("APP_ENV_WORKER_CONCURRENCY", concurrency.to_string())
            .env("APP_ENV_KAFKA_CONSUMER_COUNT", concurrency.to_string())
            .env("APP_ENV_LOG_LEVEL", "error")
            .stdout(std::process::Stdio::null())
            .spawn()
            .context("starting a worker process")?;
        children.push(child);
    }
    Ok(Workers(children))
}

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
    // Fresh merchants per run, so a shared database never holds these identities already.
    let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let merchants: Vec<String> = (0..count.div_ceil(365).max(1))
        .map(|i| format!("m_small_{run}_{i}"))
        .collect();
    for m in &merchants {
        write_source(&dir.path().join("source"), m, entries, vec![("EUR", 0)])?;
    }
    let mut base = env_vars();
    if worker_processes > 0 {
        // Worker processes refuse a database with pending migrations: migrate first, as a
        // deployment's migration job would.
        let config = Config::from_vars(&base).map_err(|e| anyhow::anyhow!("{e}"))?;
        crate::app::migrate(&config).await?;
    }
    let mut workers = if worker_processes > 0 {
        base.insert("APP_ENV_APPLICATION_ROLES".into(), "api".into());
        Some(spawn_workers(worker_processes, dir.path(), concurrency)?)
    } else {
        None
    };
    let bench = start_with(dir, concurrency, base).await?;
    let day0: chrono::NaiveDate = "2025-01-01".parse()?;
    let bodies: Vec<Value> = (0..count)
        .map(|i| {
            let day = day0 + chrono::Duration::days((i % 365) as i64);
            json!({"merchantId": merchants[i / 365], "type": "STATEMENT", "period": day.to_string(), "format": "CSV"})
        })
        .collect();
    let t0 = Instant::now();
    let mut ids = Vec::with_capacity(count);
    for chunk in bodies.chunks(32) {
        let created = futures::future::join_all(chunk.iter().map(|b| bench.create(b))).await;
        for id in created {
            ids.push(id?);
        }
    }
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
