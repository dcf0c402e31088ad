//! What every measurement shares: the service started in this process on a temporary data
//! dir ([`start_with`]), worker-only `ledger serve` processes beside it
//! ([`spawn_workers`]), the generated source ([`write_source_as`]), peak RSS readings and
//! percentiles.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ledger::config::Config;
use ledger::domain::Grant;
use ledger::source::fixture::{self, FixtureSpec};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// How a benchmark talks to a service: its base URL and a platform admin's token.
pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
    pub token: String,
}

/// A service started in this process for a benchmark.
pub struct Bench {
    api: Api,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Bench {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

/// The `APP_ENV_*` variables of this process (the production backends of a bench run).
pub fn env_vars() -> HashMap<String, String> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("APP_ENV_"))
        .collect()
}

/// A service's settings on the data dir `dir`, its store migrated, and a platform admin's
/// token (subject `bench`) it accepts.
pub struct Prepared {
    pub vars: HashMap<String, String>,
    pub config: Config,
    pub token: String,
}

/// Prepares a service on `dir` (data in `dir/data`, the source in `dir/source`) with
/// `base`'s variables: production backends get a JWKS file of the dev key, since they
/// refuse the dev key itself.
pub async fn prepare(
    dir: &Path,
    concurrency: usize,
    base: HashMap<String, String>,
) -> anyhow::Result<Prepared> {
    let mut vars = base;
    vars.insert(
        "APP_ENV_DATA_DIR".to_owned(),
        dir.join("data").display().to_string(),
    );
    vars.insert(
        "APP_ENV_SOURCE_DIR".to_owned(),
        dir.join("source").display().to_string(),
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
        let key = ledger::app::dev_key(&config)?;
        let jwks = dir.join("jwks.json");
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
    let key = ledger::app::dev_key(&config)?;
    let token = key.sign(
        "bench",
        Duration::from_secs(3600),
        config.auth_issuer.as_deref(),
        config.auth_audience.as_deref(),
    )?;
    ledger::app::migrate(&config).await?;
    let store = ledger::app::open_store(&config).await?;
    store
        .add_grant(&Grant {
            subject: "bench".into(),
            role: "platform_admin".into(),
            domain: "*".into(),
        })
        .await?;
    Ok(Prepared {
        vars,
        config,
        token,
    })
}

/// Waits until the service at `base` answers.
async fn wait_up(client: &reqwest::Client, base: &str) -> anyhow::Result<()> {
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
    Ok(())
}

pub async fn start_with(
    dir: tempfile::TempDir,
    concurrency: usize,
    base: HashMap<String, String>,
) -> anyhow::Result<Bench> {
    let prepared = prepare(dir.path(), concurrency, base).await?;
    start_prepared(dir, prepared).await
}

/// Starts the service [`prepare`] made ready on `dir`, in this process.
pub async fn start_prepared(dir: tempfile::TempDir, prepared: Prepared) -> anyhow::Result<Bench> {
    let Prepared { config, token, .. } = prepared;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}/v1/api/ledger", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(ledger::run(config, listener, shutdown.clone()));
    let client = reqwest::Client::new();
    wait_up(&client, &base).await?;
    Ok(Bench {
        api: Api {
            base,
            client,
            token,
        },
        shutdown,
        task,
        _dir: dir,
    })
}

/// A `ledger serve` process started for a benchmark (killed when dropped), with the
/// platform admin's token it accepts.
pub struct Service {
    api: Api,
    child: std::process::Child,
}

impl std::ops::Deref for Service {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    /// Starts `ledger serve` in its own process with `prepared`'s variables and `extra`.
    pub async fn spawn(prepared: &Prepared, extra: &[(&str, String)]) -> anyhow::Result<Self> {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
            probe.local_addr()?.port()
        };
        let mut command = std::process::Command::new(ledger_binary()?);
        command
            .arg("serve")
            .envs(&prepared.vars)
            .env("APP_ENV_HOST", "127.0.0.1")
            .env("APP_ENV_PORT", port.to_string())
            .stdout(std::process::Stdio::null());
        for (key, value) in extra {
            command.env(key, value);
        }
        let child = command.spawn().context("starting the service process")?;
        let mut service = Self {
            api: Api {
                base: format!("http://127.0.0.1:{port}/v1/api/ledger"),
                client: reqwest::Client::new(),
                token: prepared.token.clone(),
            },
            child,
        };
        if let Err(e) = wait_up(&service.api.client, &service.api.base).await {
            if let Some(status) = service.child.try_wait()? {
                bail!("the service process exited ({status})");
            }
            return Err(e);
        }
        Ok(service)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails when the process exited.
    pub fn check(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the service process exited ({status})");
        }
        Ok(())
    }
}

/// A field of `/proc/<pid>/status` in MiB (`VmRSS`, `VmHWM`).
pub fn proc_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// CPU seconds (user + system) process `pid` has used.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // Fields after the command name (which may hold spaces), from field 3 on.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return f64::NAN;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    // utime and stime are fields 14 and 15: indexes 11 and 12 here.
    match (ticks(11), ticks(12)) {
        // Linux reports in USER_HZ, 100 on every platform this runs on.
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}

impl Api {
    pub async fn create(&self, body: &Value) -> anyhow::Result<String> {
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

    pub async fn ledger(&self, id: &str) -> anyhow::Result<Value> {
        Ok(self
            .client
            .get(format!("{}/ledgers/{id}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?
            .json()
            .await?)
    }

    pub async fn wait_completed(&self, id: &str, poll: Duration) -> anyhow::Result<Value> {
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
}

impl Bench {
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// Resets the process's peak RSS so the next reading covers one run only.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The process's peak RSS in MiB since the last reset.
pub fn peak_rss_mib() -> f64 {
    proc_mib(std::process::id(), "VmHWM")
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Which form of the source schema a bench reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceForm {
    /// `{merchant}.ndjson` in the source directory: a header line, one entry per line.
    Ndjson,
    /// `{merchant}.json` in the source directory: one page.
    Json,
    /// The same page with `entries` before `merchant` and `openingBalances` (read twice).
    JsonEntriesFirst,
    /// The same page answered by a local upstream over HTTP (`APP_ENV_SOURCE_URL`).
    Http,
}

impl std::fmt::Display for SourceForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Ndjson => "NDJSON file",
            Self::Json => "JSON file",
            Self::JsonEntriesFirst => "JSON file, entries first",
            Self::Http => "HTTP page",
        })
    }
}

/// Writes the generated NDJSON source of `merchant`.
pub fn write_source(
    dir: &Path,
    merchant: &str,
    entries: u64,
    currencies: Vec<(&str, i64)>,
) -> anyhow::Result<()> {
    write_source_as(dir, merchant, entries, currencies, SourceForm::Ndjson)
}

/// Writes the generated source of `merchant` in `form` (an HTTP page is a `.json` file the
/// upstream serves).
pub fn write_source_as(
    dir: &Path,
    merchant: &str,
    entries: u64,
    currencies: Vec<(&str, i64)>,
    form: SourceForm,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut spec = FixtureSpec::new(merchant, entries);
    spec.currencies = currencies;
    spec.start = "2025-01-01T00:00:00Z".parse()?;
    let spec = spec.spread_until("2025-12-31T00:00:00Z".parse()?);
    match form {
        SourceForm::Ndjson => {
            fixture::write_ndjson(&dir.join(format!("{merchant}.ndjson")), &spec)?
        }
        SourceForm::Json | SourceForm::Http => {
            fixture::write_json(&dir.join(format!("{merchant}.json")), &spec)?;
        }
        SourceForm::JsonEntriesFirst => {
            fixture::write_json_entries_first(&dir.join(format!("{merchant}.json")), &spec)?;
        }
    }
    Ok(())
}

/// Worker processes started for a bench run; killed when dropped.
pub struct Workers(Vec<std::process::Child>);

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
    pub fn check(&mut self) -> anyhow::Result<()> {
        for child in &mut self.0 {
            if let Some(status) = child.try_wait()? {
                bail!("worker process {} exited ({status})", child.id());
            }
        }
        Ok(())
    }
}

pub fn spawn_workers(count: usize, dir: &Path, concurrency: usize) -> anyhow::Result<Workers> {
    let exe = ledger_binary()?;
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

/// The `ledger` binary built beside this one (`target/<profile>/ledger`): worker processes
/// and `logs` serve the product binary, not this one.
pub fn ledger_binary() -> anyhow::Result<PathBuf> {
    let this = std::env::current_exe().context("locating this binary")?;
    let ledger = this.with_file_name(format!("ledger{}", std::env::consts::EXE_SUFFIX));
    if !ledger.is_file() {
        bail!(
            "no ledger binary beside {}: build it with the same profile (cargo build --release)",
            this.display()
        );
    }
    Ok(ledger)
}

/// Fresh merchants for `count` day statements (365 a merchant), each with a year of
/// `entries` entries written to `dir/source`: new names per run, so a shared database never
/// holds these identities already.
pub fn day_merchants(
    dir: &Path,
    prefix: &str,
    count: usize,
    entries: u64,
) -> anyhow::Result<Vec<String>> {
    let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let merchants: Vec<String> = (0..count.div_ceil(365).max(1))
        .map(|i| format!("{prefix}_{run}_{i}"))
        .collect();
    for m in &merchants {
        write_source(&dir.join("source"), m, entries, vec![("EUR", 0)])?;
    }
    Ok(merchants)
}

/// The bodies of `count` CSV day statements of 2025 over `merchants` (365 each).
pub fn day_statements(merchants: &[String], count: usize) -> Vec<Value> {
    let day0 = chrono::NaiveDate::from_ymd_opt(2025, 1, 1).expect("a date");
    (0..count)
        .map(|i| {
            let day = day0 + chrono::Duration::days((i % 365) as i64);
            serde_json::json!({"merchantId": merchants[i / 365], "type": "STATEMENT",
                               "period": day.to_string(), "format": "CSV"})
        })
        .collect()
}

impl Bench {
    /// Creates every ledger of `bodies`, 32 requests at a time; their ids in order.
    pub async fn create_all(&self, bodies: &[Value]) -> anyhow::Result<Vec<String>> {
        let mut ids = Vec::with_capacity(bodies.len());
        for chunk in bodies.chunks(32) {
            for id in futures::future::join_all(chunk.iter().map(|b| self.create(b))).await {
                ids.push(id?);
            }
        }
        Ok(ids)
    }
}
