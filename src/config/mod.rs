//! Configuration: every `APP_ENV_*` variable (and `RUN_MODE`) read once at start-up into one
//! typed [`Config`], validated as a whole so a bad deployment learns every problem at once.
//! Secrets are wrapped in [`Secret`], whose `Debug` prints `***`; no error names a value.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub mod redis;

pub use self::redis::RedisServer;

/// A secret value: printable only on purpose, and wiped from memory when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(zeroize::Zeroizing<String>);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(zeroize::Zeroizing::new(value.into()))
    }
    /// The value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A URL setting that may carry a credential (user info, a token in its path or query):
/// usable as the URL, while `Debug` (so a logged `Config`) shows its scheme and host only.
#[derive(Clone, PartialEq, Eq)]
pub struct SensitiveUrl(pub url::Url);

impl std::ops::Deref for SensitiveUrl {
    type Target = url::Url;
    fn deref(&self) -> &url::Url {
        &self.0
    }
}

impl fmt::Debug for SensitiveUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}/***",
            self.0.scheme(),
            self.0.host_str().unwrap_or("?")
        )
    }
}

/// The roles this process plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// Serves `/v1/api/ledger/…` and enqueues.
    pub api: bool,
    /// Consumes the queue, runs the pipeline and the recovery sweep.
    pub worker: bool,
}

/// The queue backend.
#[derive(Debug, Clone)]
pub enum QueueKind {
    /// The job table itself.
    Db,
    /// Apache Kafka.
    Kafka(crate::queue::kafka::KafkaSettings),
}

/// The job store backend.
#[derive(Debug, Clone)]
pub enum DatabaseKind {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL server (the URL may carry a password).
    Postgres(Secret),
}

/// Where ledger files are stored.
#[derive(Debug, Clone)]
pub enum StorageKind {
    /// A local directory (`file://…`).
    Local(PathBuf),
    /// An S3 bucket (`s3://bucket/prefix`).
    S3(crate::storage::S3Settings),
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `key=value` pairs.
    Logfmt,
    /// One JSON object per line.
    Json,
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `RUN_MODE`: `migrate` applies migrations and exits; anything else serves.
    pub run_mode_migrate: bool,
    /// `APP_ENV_APPLICATION_ROLES`: `api`, `worker` or `api,worker` (default).
    pub roles: Roles,
    /// `APP_ENV_HOST`: address to bind (default `0.0.0.0`).
    pub host: String,
    /// `APP_ENV_PORT`: HTTP port (default 3000; 0 binds an ephemeral port).
    pub port: u16,
    /// `APP_ENV_DATA_DIR`: the SQLite file, local objects and dev keys (default `./data`).
    pub data_dir: PathBuf,
    /// `APP_ENV_DATABASE_URL`: job store, `sqlite://path` or `postgres://…` (default
    /// `sqlite://{data_dir}/ledger.db`).
    pub database: DatabaseKind,
    /// `APP_ENV_QUEUE`: `db` (default) or `kafka`, with `APP_ENV_KAFKA_BROKERS`,
    /// `APP_ENV_KAFKA_TOPIC` (default `ledger.generate`), `APP_ENV_KAFKA_GROUP_ID` (default
    /// `ledger-workers`), `APP_ENV_KAFKA_CONSUMER_COUNT` (consumers per worker process,
    /// default 2), `APP_ENV_KAFKA_PARTITIONS` (for the topic it creates, default 6),
    /// `APP_ENV_KAFKA_SECURITY_PROTOCOL`, `APP_ENV_KAFKA_SASL_MECHANISM`,
    /// `APP_ENV_KAFKA_SASL_USERNAME`, `APP_ENV_KAFKA_SASL_PASSWORD`.
    pub queue: QueueKind,
    /// `APP_ENV_SOURCE_URL`: an upstream HTTP API of entries (instead of the source dir),
    /// with the bearer token `APP_ENV_SOURCE_TOKEN`.
    pub source_url: Option<SensitiveUrl>,
    /// `APP_ENV_SOURCE_TOKEN`: bearer token for `APP_ENV_SOURCE_URL`.
    pub source_token: Option<Secret>,
    /// `APP_ENV_WEBSOCKET_REDIS_URL`: Redis for status events across processes (in-process
    /// when unset); `rediss://` for TLS.
    pub websocket_redis: Option<RedisServer>,
    /// `APP_ENV_WEBSOCKET_REDIS_CHANNEL`: the pub/sub channel of those events (default
    /// `ledger.events`); every process of one deployment uses the same, deployments sharing
    /// a Redis each their own (pub/sub channels ignore Redis database numbers).
    pub websocket_redis_channel: String,
    /// `APP_ENV_REDIS_URL`: Redis for the shared policy cache and instant revocation across
    /// api processes (in-process cache when unset); `rediss://` for TLS.
    pub redis: Option<RedisServer>,
    /// `APP_ENV_REDIS_TLS_CA_FILE`: a PEM file of the CA certificate(s) that the `rediss://`
    /// servers of both Redis URLs must chain to, for a private CA (ElastiCache, Memorystore,
    /// your own); when unset, the system's trusted roots. Read at start-up.
    pub redis_tls_ca_file: Option<PathBuf>,
    /// `APP_ENV_STORAGE_URL`: object storage, `file://…` or `s3://bucket/prefix` (default
    /// `file://{data_dir}/objects`). With S3: `APP_ENV_S3_ENDPOINT` (S3-compatible server),
    /// `APP_ENV_S3_REGION` (default `us-east-1`), `APP_ENV_S3_ACCESS_KEY_ID`,
    /// `APP_ENV_S3_SECRET_ACCESS_KEY`.
    pub storage: StorageKind,
    /// `APP_ENV_SOURCE_DIR`: directory of `{merchantId}.json|ndjson` (default `examples/source`).
    pub source_dir: PathBuf,
    /// `APP_ENV_NODE_ID`: Snowflake node id, 0–1023; when unset each process leases a free
    /// one from the job store (released on shutdown, expiring if the process dies).
    pub node_id: Option<u16>,
    /// `APP_ENV_JOB_TIMEOUT_MS`: lease length of a running job and the age at which an
    /// unclaimed PENDING job is re-enqueued (default 120000).
    pub job_timeout: Duration,
    /// `APP_ENV_SWEEP_INTERVAL_MS`: recovery sweep period (default 60000).
    pub sweep_interval: Duration,
    /// `APP_ENV_JOB_DEADLINE_MS`: the longest one attempt may run, however its lease is
    /// renewed (default 1800000, 30 min; a 10M-entry ledger takes well under it); then it is
    /// REJECTED with JOB_EXECUTION_FAILED (retryable).
    pub job_deadline: Duration,
    /// `APP_ENV_SOURCE_MAX_PAGES`: the most pages the HTTP source follows for one ledger
    /// (default 100000); a ledger whose source has more is a FETCH_DATA_ERROR.
    pub source_max_pages: u64,
    /// `APP_ENV_MAX_ATTEMPTS`: attempts after which a stalled job is REJECTED (default 5).
    pub max_attempts: u32,
    /// `APP_ENV_WORKER_CONCURRENCY`: jobs one worker process runs at once (default 2).
    pub worker_concurrency: usize,
    /// `APP_ENV_LEDGER_ENCRYPTION_KEY`: base64 of the 32-byte master key; generated into
    /// the data dir when unset (embedded default only).
    pub encryption_key: Option<Secret>,
    /// `APP_ENV_LEDGER_ENCRYPTION_KEYS_OLD`: comma-separated older keys that still decrypt.
    pub encryption_keys_old: Vec<Secret>,
    /// `APP_ENV_AUTH_JWKS_URL`: JWKS of the identity service.
    pub auth_jwks_url: Option<SensitiveUrl>,
    /// `APP_ENV_AUTH_JWKS_MAX_AGE_SECS`: keys from `APP_ENV_AUTH_JWKS_URL` not refreshed
    /// for this long are refused and readiness fails, 1–86400 (default 3600): how long a key
    /// the issuer withdrew can still be used while its JWKS cannot be fetched.
    pub auth_jwks_max_age: Duration,
    /// `APP_ENV_AUTH_JWKS_FILE`: a JWKS file (when no URL is set).
    pub auth_jwks_file: Option<PathBuf>,
    /// `APP_ENV_AUTH_ISSUER`: required `iss` of tokens, when set.
    pub auth_issuer: Option<String>,
    /// `APP_ENV_AUTH_AUDIENCE`: required `aud` of tokens, when set.
    pub auth_audience: Option<String>,
    /// `APP_ENV_AUTH_LEEWAY_SECS`: clock skew tolerated on a token's `exp` and `nbf`, 0–300
    /// (default 30): a token is accepted until `exp` + this.
    pub auth_leeway: Duration,
    /// `APP_ENV_POLICY_CACHE_TTL_MS`: how long authorization decisions are cached (default 5000).
    pub policy_cache_ttl: Duration,
    /// `APP_ENV_WS_PING_INTERVAL_MS`: WebSocket keep-alive ping interval (default 20000); a
    /// client silent for two intervals is closed.
    pub ws_ping_interval: Duration,
    /// `APP_ENV_WS_REPLAY_MAX_AGE_MS`: how far back a WebSocket's `?since=` replays, 1000 ms
    /// to 7 days (default 86400000, 24 h); an older `since` replays from now minus this and
    /// says `complete: false`.
    pub ws_replay_max_age: Duration,
    /// `APP_ENV_WS_MAX_SOCKETS_PER_SUBJECT`: WebSockets one subject may hold open on one api
    /// process, 1–100000 (default 100); beyond, the upgrade is a 429.
    pub ws_max_sockets_per_subject: usize,
    /// `APP_ENV_LOG_FORMAT`: `logfmt` (default) or `json`.
    pub log_format: LogFormat,
    /// `APP_ENV_LOG_LEVEL`: a tracing filter (default `info`).
    pub log_level: String,
    /// `APP_ENV_SHUTDOWN_TIMEOUT_MS`: how long running jobs may finish on SIGTERM (default 30000).
    pub shutdown_timeout: Duration,
}

/// Every `APP_ENV_*` variable the service reads. Any other `APP_ENV_*` name in the
/// environment is a configuration error: a misspelt setting would otherwise be ignored
/// without a word and its default used.
pub const SETTINGS: &[&str] = &[
    "APP_ENV_APPLICATION_ROLES",
    "APP_ENV_AUTH_AUDIENCE",
    "APP_ENV_AUTH_ISSUER",
    "APP_ENV_AUTH_JWKS_FILE",
    "APP_ENV_AUTH_JWKS_MAX_AGE_SECS",
    "APP_ENV_AUTH_JWKS_URL",
    "APP_ENV_AUTH_LEEWAY_SECS",
    "APP_ENV_DATABASE_URL",
    "APP_ENV_DATA_DIR",
    "APP_ENV_HOST",
    "APP_ENV_JOB_DEADLINE_MS",
    "APP_ENV_JOB_TIMEOUT_MS",
    "APP_ENV_KAFKA_BROKERS",
    "APP_ENV_KAFKA_CONSUMER_COUNT",
    "APP_ENV_KAFKA_GROUP_ID",
    "APP_ENV_KAFKA_PARTITIONS",
    "APP_ENV_KAFKA_SASL_MECHANISM",
    "APP_ENV_KAFKA_SASL_PASSWORD",
    "APP_ENV_KAFKA_SASL_USERNAME",
    "APP_ENV_KAFKA_SECURITY_PROTOCOL",
    "APP_ENV_KAFKA_TOPIC",
    "APP_ENV_LEDGER_ENCRYPTION_KEY",
    "APP_ENV_LEDGER_ENCRYPTION_KEYS_OLD",
    "APP_ENV_LOG_FORMAT",
    "APP_ENV_LOG_LEVEL",
    "APP_ENV_MAX_ATTEMPTS",
    "APP_ENV_NODE_ID",
    "APP_ENV_POLICY_CACHE_TTL_MS",
    "APP_ENV_PORT",
    "APP_ENV_QUEUE",
    "APP_ENV_REDIS_TLS_CA_FILE",
    "APP_ENV_REDIS_URL",
    "APP_ENV_S3_ACCESS_KEY_ID",
    "APP_ENV_S3_ENDPOINT",
    "APP_ENV_S3_REGION",
    "APP_ENV_S3_SECRET_ACCESS_KEY",
    "APP_ENV_SHUTDOWN_TIMEOUT_MS",
    "APP_ENV_SOURCE_DIR",
    "APP_ENV_SOURCE_MAX_PAGES",
    "APP_ENV_SOURCE_TOKEN",
    "APP_ENV_SOURCE_URL",
    "APP_ENV_STORAGE_URL",
    "APP_ENV_SWEEP_INTERVAL_MS",
    "APP_ENV_WEBSOCKET_REDIS_CHANNEL",
    "APP_ENV_WEBSOCKET_REDIS_URL",
    "APP_ENV_WORKER_CONCURRENCY",
    "APP_ENV_WS_MAX_SOCKETS_PER_SUBJECT",
    "APP_ENV_WS_PING_INTERVAL_MS",
    "APP_ENV_WS_REPLAY_MAX_AGE_MS",
];

/// Whether `url` names this machine: `localhost`, 127.0.0.0/8 or `::1`.
fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// The setting nearest to a name that is not one (at most three edits away).
fn nearest_setting(name: &str) -> Option<&'static str> {
    fn distance(a: &[u8], b: &[u8]) -> usize {
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, x) in a.iter().enumerate() {
            let mut diagonal = row[0];
            row[0] = i + 1;
            for (j, y) in b.iter().enumerate() {
                let above = row[j + 1];
                row[j + 1] = (above + 1)
                    .min(row[j] + 1)
                    .min(diagonal + usize::from(x != y));
                diagonal = above;
            }
        }
        row[b.len()]
    }
    SETTINGS
        .iter()
        .map(|s| (distance(name.as_bytes(), s.as_bytes()), *s))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, s)| s)
}

/// Every problem found in the environment, one line each, naming the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration:\n  {}", .0.join("\n  "))]
pub struct ConfigErrors(pub Vec<String>);

struct Reader<'a> {
    vars: &'a HashMap<String, String>,
    errors: Vec<String>,
}

impl Reader<'_> {
    fn raw(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
    }

    fn string(&self, name: &str) -> Option<String> {
        self.raw(name).map(str::to_owned)
    }

    fn number<T>(&mut self, name: &str, default: T, range: (T, T)) -> T
    where
        T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
    {
        let Some(raw) = self.string(name) else {
            return default;
        };
        match raw.parse::<T>() {
            Ok(v) if v >= range.0 && v <= range.1 => v,
            _ => {
                self.errors.push(format!(
                    "{name}: expected an integer from {} to {}",
                    range.0, range.1
                ));
                default
            }
        }
    }

    fn millis(&mut self, name: &str, default_ms: u64, min_ms: u64) -> Duration {
        Duration::from_millis(self.number(name, default_ms, (min_ms, 86_400_000)))
    }
}

impl Config {
    /// Whether any production backend is configured: a PostgreSQL job store, the Kafka queue
    /// or S3 storage. Such a deployment runs several processes on several machines.
    pub fn has_production_backend(&self) -> bool {
        matches!(self.database, DatabaseKind::Postgres(_))
            || matches!(self.queue, QueueKind::Kafka(_))
            || matches!(self.storage, StorageKind::S3(_))
    }

    /// What refuses to serve the API on production backends, one line per problem (each
    /// naming its variable): the local dev key (a key generated on one pod, which every
    /// token signed with it would then open), a JWKS fetched over plain http from another
    /// machine (anyone on the path could swap the keys), and tokens not bound to this
    /// service by an audience (a token for any other service of the same identity provider
    /// would do). Only the api role verifies tokens; `migrate`, `policy` and worker-only
    /// processes are not held to it.
    pub fn serving_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.roles.api || !self.has_production_backend() {
            return problems;
        }
        const WHY: &str = "with a production backend (PostgreSQL, Kafka or S3)";
        if self.auth_jwks_url.is_none() && self.auth_jwks_file.is_none() {
            problems.push(format!(
                "APP_ENV_AUTH_JWKS_URL: required {WHY}, or APP_ENV_AUTH_JWKS_FILE; the local dev \
                 signing key is for the embedded default only"
            ));
        }
        if let Some(url) = &self.auth_jwks_url
            && url.scheme() == "http"
            && !is_loopback(url)
        {
            problems.push(format!(
                "APP_ENV_AUTH_JWKS_URL: must be https {WHY} (plain http only to a loopback address)"
            ));
        }
        if self.auth_audience.is_none() {
            problems.push(format!(
                "APP_ENV_AUTH_AUDIENCE: required {WHY}, so that only tokens issued for this \
                 service are accepted"
            ));
        }
        problems
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigErrors> {
        let vars: HashMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("APP_ENV_") || k == "RUN_MODE")
            .collect();
        Self::from_vars(&vars)
    }

    /// Reads a map of variables (tests build one by hand).
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigErrors> {
        let mut r = Reader {
            vars,
            errors: Vec::new(),
        };

        let run_mode_migrate = match r.raw("RUN_MODE") {
            None | Some("serve") => false,
            Some("migrate") => true,
            Some(_) => {
                r.errors
                    .push("RUN_MODE: expected `serve` or `migrate`".into());
                false
            }
        };
        let roles = match r.string("APP_ENV_APPLICATION_ROLES") {
            None => Roles {
                api: true,
                worker: true,
            },
            Some(raw) => {
                let mut roles = Roles {
                    api: false,
                    worker: false,
                };
                for part in raw.split(',').map(str::trim) {
                    match part {
                        "api" => roles.api = true,
                        "worker" => roles.worker = true,
                        _ => {
                            r.errors.push(format!(
                                "APP_ENV_APPLICATION_ROLES: unknown role `{part}` (expected api, worker or api,worker)"
                            ));
                        }
                    }
                }
                roles
            }
        };
        let host = r.string("APP_ENV_HOST").unwrap_or_else(|| "0.0.0.0".into());
        let port = r.number("APP_ENV_PORT", 3000u16, (0, u16::MAX));
        let data_dir = PathBuf::from(
            r.string("APP_ENV_DATA_DIR")
                .unwrap_or_else(|| "./data".into()),
        );
        let database = match r.string("APP_ENV_DATABASE_URL") {
            None => DatabaseKind::Sqlite(data_dir.join("ledger.db")),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                DatabaseKind::Postgres(Secret::new(url))
            }
            Some(url) if url.starts_with("sqlite:") => {
                let path = url
                    .trim_start_matches("sqlite://")
                    .trim_start_matches("sqlite:");
                DatabaseKind::Sqlite(PathBuf::from(path.split('?').next().unwrap_or(path)))
            }
            Some(_) => {
                r.errors
                    .push("APP_ENV_DATABASE_URL: expected sqlite://path or postgres://…".into());
                DatabaseKind::Sqlite(data_dir.join("ledger.db"))
            }
        };
        let queue = match r.string("APP_ENV_QUEUE").as_deref() {
            None | Some("db") => QueueKind::Db,
            Some("kafka") => {
                let brokers = r.string("APP_ENV_KAFKA_BROKERS").unwrap_or_default();
                if brokers.is_empty() {
                    r.errors
                        .push("APP_ENV_KAFKA_BROKERS: required when APP_ENV_QUEUE=kafka".into());
                }
                let security_protocol = r.string("APP_ENV_KAFKA_SECURITY_PROTOCOL");
                if let Some(p) = &security_protocol
                    && !matches!(
                        p.to_ascii_lowercase().as_str(),
                        "plaintext" | "ssl" | "sasl_plaintext" | "sasl_ssl"
                    )
                {
                    r.errors.push(
                        "APP_ENV_KAFKA_SECURITY_PROTOCOL: expected plaintext, ssl, sasl_plaintext or sasl_ssl".into(),
                    );
                }
                QueueKind::Kafka(crate::queue::kafka::KafkaSettings {
                    brokers,
                    topic: r
                        .string("APP_ENV_KAFKA_TOPIC")
                        .unwrap_or_else(|| "ledger.generate".into()),
                    group_id: r
                        .string("APP_ENV_KAFKA_GROUP_ID")
                        .unwrap_or_else(|| "ledger-workers".into()),
                    consumer_count: r.number("APP_ENV_KAFKA_CONSUMER_COUNT", 2usize, (1, 64)),
                    partitions: r.number("APP_ENV_KAFKA_PARTITIONS", 6i32, (1, 10_000)),
                    security_protocol,
                    sasl_mechanism: r.string("APP_ENV_KAFKA_SASL_MECHANISM"),
                    sasl_username: r.string("APP_ENV_KAFKA_SASL_USERNAME"),
                    sasl_password: r.string("APP_ENV_KAFKA_SASL_PASSWORD").map(Secret::new),
                })
            }
            Some(_) => {
                r.errors
                    .push("APP_ENV_QUEUE: expected `db` or `kafka`".into());
                QueueKind::Db
            }
        };
        let source_url =
            r.string("APP_ENV_SOURCE_URL")
                .and_then(|raw| match url::Url::parse(&raw) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") => Some(SensitiveUrl(u)),
                    _ => {
                        r.errors
                            .push("APP_ENV_SOURCE_URL: expected an http(s) URL".into());
                        None
                    }
                });
        let source_token = r.string("APP_ENV_SOURCE_TOKEN").map(Secret::new);
        let websocket_redis_url = r.string("APP_ENV_WEBSOCKET_REDIS_URL");
        let websocket_redis_channel = r
            .string("APP_ENV_WEBSOCKET_REDIS_CHANNEL")
            .unwrap_or_else(|| crate::notify::redis::CHANNEL.to_owned());
        let redis_url = r.string("APP_ENV_REDIS_URL");
        for (name, url) in [
            ("APP_ENV_REDIS_URL", &redis_url),
            ("APP_ENV_WEBSOCKET_REDIS_URL", &websocket_redis_url),
        ] {
            if let Some(u) = url
                && !(u.starts_with("redis://") || u.starts_with("rediss://"))
            {
                r.errors
                    .push(format!("{name}: expected redis:// or rediss://"));
            }
        }
        let redis_tls_ca_file = r.string("APP_ENV_REDIS_TLS_CA_FILE").map(PathBuf::from);
        let redis_root_ca = redis_tls_ca_file.as_ref().and_then(|path| {
            let any_tls = [&redis_url, &websocket_redis_url]
                .iter()
                .any(|u| u.as_deref().is_some_and(|u| u.starts_with("rediss://")));
            if !any_tls {
                // A CA that nothing uses is a deployment that believes it verifies Redis.
                r.errors.push(
                    "APP_ENV_REDIS_TLS_CA_FILE: set, but neither APP_ENV_REDIS_URL nor APP_ENV_WEBSOCKET_REDIS_URL is rediss://".into(),
                );
            }
            match std::fs::read(path) {
                Ok(pem) if pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") => {
                    Some(std::sync::Arc::<[u8]>::from(pem))
                }
                Ok(_) => {
                    r.errors.push(format!(
                        "APP_ENV_REDIS_TLS_CA_FILE: {} holds no PEM certificate",
                        path.display()
                    ));
                    None
                }
                Err(e) => {
                    r.errors.push(format!(
                        "APP_ENV_REDIS_TLS_CA_FILE: cannot read {} ({e})",
                        path.display()
                    ));
                    None
                }
            }
        });
        let server = |url: String| {
            let server = RedisServer::new(url);
            match &redis_root_ca {
                Some(pem) => server.with_root_ca(pem.clone()),
                None => server,
            }
        };
        let websocket_redis = websocket_redis_url.map(server);
        let redis = redis_url.map(server);
        let storage = match r.string("APP_ENV_STORAGE_URL") {
            None => StorageKind::Local(absolute(&data_dir.join("objects"))),
            Some(url) => match url.strip_prefix("file://") {
                Some(path) if !path.is_empty() => StorageKind::Local(PathBuf::from(path)),
                _ => match url.strip_prefix("s3://") {
                    Some(rest) => {
                        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                        if bucket.is_empty() {
                            r.errors
                                .push("APP_ENV_STORAGE_URL: s3:// needs a bucket".into());
                        }
                        let access_key_id = r.string("APP_ENV_S3_ACCESS_KEY_ID");
                        let secret_access_key =
                            r.string("APP_ENV_S3_SECRET_ACCESS_KEY").map(Secret::new);
                        if access_key_id.is_some() != secret_access_key.is_some() {
                            r.errors.push(
                                "APP_ENV_S3_ACCESS_KEY_ID / APP_ENV_S3_SECRET_ACCESS_KEY: set both or neither".into(),
                            );
                        }
                        let endpoint = r.string("APP_ENV_S3_ENDPOINT");
                        if let Some(e) = &endpoint
                            && url::Url::parse(e)
                                .map(|u| !matches!(u.scheme(), "http" | "https"))
                                .unwrap_or(true)
                        {
                            r.errors
                                .push("APP_ENV_S3_ENDPOINT: expected an http(s) URL".into());
                        }
                        StorageKind::S3(crate::storage::S3Settings {
                            bucket: bucket.to_owned(),
                            prefix: prefix.trim_matches('/').to_owned(),
                            endpoint,
                            region: r
                                .string("APP_ENV_S3_REGION")
                                .unwrap_or_else(|| "us-east-1".into()),
                            access_key_id,
                            secret_access_key,
                        })
                    }
                    None => {
                        r.errors.push(
                            "APP_ENV_STORAGE_URL: expected file:///path or s3://bucket/prefix"
                                .into(),
                        );
                        StorageKind::Local(absolute(&data_dir.join("objects")))
                    }
                },
            },
        };
        let source_dir = PathBuf::from(
            r.string("APP_ENV_SOURCE_DIR")
                .unwrap_or_else(|| "examples/source".into()),
        );
        let node_id = r
            .string("APP_ENV_NODE_ID")
            .is_some()
            .then(|| r.number("APP_ENV_NODE_ID", 0u16, (0, 1023)));
        let job_timeout = r.millis("APP_ENV_JOB_TIMEOUT_MS", 120_000, 100);
        let job_deadline = r.millis("APP_ENV_JOB_DEADLINE_MS", 1_800_000, 100);
        let source_max_pages = r.number("APP_ENV_SOURCE_MAX_PAGES", 100_000u64, (1, 100_000_000));
        let sweep_interval = r.millis("APP_ENV_SWEEP_INTERVAL_MS", 60_000, 50);
        let max_attempts = r.number("APP_ENV_MAX_ATTEMPTS", 5u32, (1, 1000));
        let worker_concurrency = r.number("APP_ENV_WORKER_CONCURRENCY", 2usize, (1, 256));
        let encryption_key = r.string("APP_ENV_LEDGER_ENCRYPTION_KEY").map(Secret::new);
        if encryption_key.is_none() && matches!(storage, StorageKind::S3(_)) {
            // A generated key lives on one machine's disk; shared storage needs a shared key.
            r.errors.push(
                "APP_ENV_LEDGER_ENCRYPTION_KEY: required when APP_ENV_STORAGE_URL is s3://".into(),
            );
        }
        let encryption_keys_old: Vec<Secret> = r
            .string("APP_ENV_LEDGER_ENCRYPTION_KEYS_OLD")
            .map(|raw| {
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(Secret::new)
                    .collect()
            })
            .unwrap_or_default();
        // Keys are checked here so a bad one is listed with every other problem; the
        // message never quotes the value.
        if let Some(key) = &encryption_key
            && crate::crypto::MasterKey::from_base64(key.expose()).is_err()
        {
            r.errors.push(
                "APP_ENV_LEDGER_ENCRYPTION_KEY: expected base64 of 32 bytes (`ledger keygen` prints one)"
                    .into(),
            );
        }
        for (i, key) in encryption_keys_old.iter().enumerate() {
            if crate::crypto::MasterKey::from_base64(key.expose()).is_err() {
                r.errors.push(format!(
                    "APP_ENV_LEDGER_ENCRYPTION_KEYS_OLD: key {} is not base64 of 32 bytes",
                    i + 1
                ));
            }
        }
        let auth_jwks_url =
            r.string("APP_ENV_AUTH_JWKS_URL")
                .and_then(|raw| match url::Url::parse(&raw) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
                        Some(SensitiveUrl(u))
                    }
                    _ => {
                        r.errors
                            .push("APP_ENV_AUTH_JWKS_URL: expected an http(s) URL".into());
                        None
                    }
                });
        let auth_jwks_max_age = Duration::from_secs(r.number(
            "APP_ENV_AUTH_JWKS_MAX_AGE_SECS",
            crate::auth::jwt::DEFAULT_MAX_KEY_AGE.as_secs(),
            (1, 86_400),
        ));
        let auth_jwks_file = r.string("APP_ENV_AUTH_JWKS_FILE").map(PathBuf::from);
        let auth_issuer = r.string("APP_ENV_AUTH_ISSUER");
        let auth_audience = r.string("APP_ENV_AUTH_AUDIENCE");
        let auth_leeway = Duration::from_secs(r.number(
            "APP_ENV_AUTH_LEEWAY_SECS",
            crate::auth::jwt::DEFAULT_LEEWAY.as_secs(),
            (0, 300),
        ));
        let policy_cache_ttl = r.millis("APP_ENV_POLICY_CACHE_TTL_MS", 5_000, 0);
        let ws_ping_interval = r.millis("APP_ENV_WS_PING_INTERVAL_MS", 20_000, 50);
        // Up to a week: longer replays read more of the timeline than a reconnect needs;
        // a client away for longer re-reads the ledgers.
        let ws_replay_max_age = Duration::from_millis(r.number(
            "APP_ENV_WS_REPLAY_MAX_AGE_MS",
            86_400_000u64,
            (1_000, 7 * 86_400_000),
        ));
        let ws_max_sockets_per_subject =
            r.number("APP_ENV_WS_MAX_SOCKETS_PER_SUBJECT", 100usize, (1, 100_000));
        let log_format = match r.raw("APP_ENV_LOG_FORMAT") {
            None | Some("logfmt") => LogFormat::Logfmt,
            Some("json") => LogFormat::Json,
            Some(_) => {
                r.errors
                    .push("APP_ENV_LOG_FORMAT: expected `logfmt` or `json`".into());
                LogFormat::Logfmt
            }
        };
        let log_level = r
            .string("APP_ENV_LOG_LEVEL")
            .unwrap_or_else(|| "info".into());
        if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
            r.errors
                .push("APP_ENV_LOG_LEVEL: not a valid filter (e.g. `info`, `ledger=debug`)".into());
        }
        let shutdown_timeout = r.millis("APP_ENV_SHUTDOWN_TIMEOUT_MS", 30_000, 0);

        let mut unknown: Vec<&String> = vars
            .keys()
            .filter(|k| k.starts_with("APP_ENV_") && !SETTINGS.contains(&k.as_str()))
            .collect();
        unknown.sort();
        for name in unknown {
            r.errors.push(match nearest_setting(name) {
                Some(near) => format!("{name}: not a setting of ledger (did you mean {near}?)"),
                None => format!("{name}: not a setting of ledger"),
            });
        }
        if !r.errors.is_empty() {
            return Err(ConfigErrors(r.errors));
        }
        Ok(Config {
            run_mode_migrate,
            roles,
            host,
            port,
            data_dir,
            database,
            source_url,
            source_token,
            websocket_redis,
            websocket_redis_channel,
            redis,
            redis_tls_ca_file,
            queue,
            storage,
            source_dir,
            node_id,
            job_timeout,
            job_deadline,
            source_max_pages,
            sweep_interval,
            max_attempts,
            worker_concurrency,
            encryption_key,
            encryption_keys_old,
            auth_jwks_url,
            auth_jwks_max_age,
            auth_jwks_file,
            auth_issuer,
            auth_audience,
            auth_leeway,
            policy_cache_ttl,
            ws_ping_interval,
            ws_replay_max_age,
            ws_max_sockets_per_subject,
            log_format,
            log_level,
            shutdown_timeout,
        })
    }
}

fn absolute(path: &std::path::Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_the_embedded_deployment() {
        let c = Config::from_vars(&HashMap::new()).unwrap();
        assert_eq!(
            c.roles,
            Roles {
                api: true,
                worker: true
            }
        );
        assert_eq!(c.port, 3000);
        assert!(matches!(c.queue, QueueKind::Db));
        assert!(
            matches!(&c.database, DatabaseKind::Sqlite(p) if p == &PathBuf::from("./data/ledger.db"))
        );
        assert!(matches!(c.storage, StorageKind::Local(_)));
        assert_eq!(c.max_attempts, 5);
    }

    #[test]
    fn every_problem_is_listed_at_once_and_secrets_are_not_echoed() {
        let err = Config::from_vars(&vars(&[
            ("APP_ENV_PORT", "http"),
            ("APP_ENV_NODE_ID", "1024"),
            ("APP_ENV_APPLICATION_ROLES", "api,cron"),
            ("APP_ENV_LOG_FORMAT", "xml"),
            ("APP_ENV_DATABASE_URL", "mysql://user:hunter2@db/x"),
            ("APP_ENV_LEDGER_ENCRYPTION_KEY", "c2VjcmV0LWtleQ=="),
            ("APP_ENV_LEDGER_ENCRYPTION_KEYS_OLD", "b2xkLXNlY3JldA=="),
        ]))
        .unwrap_err();
        let text = err.to_string();
        for name in [
            "APP_ENV_PORT",
            "APP_ENV_NODE_ID",
            "APP_ENV_APPLICATION_ROLES",
            "APP_ENV_LOG_FORMAT",
            "APP_ENV_DATABASE_URL",
            "APP_ENV_LEDGER_ENCRYPTION_KEY:",
            "APP_ENV_LEDGER_ENCRYPTION_KEYS_OLD",
        ] {
            assert!(text.contains(name), "{name} missing from {text}");
        }
        for secret in ["hunter2", "c2VjcmV0LWtleQ", "b2xkLXNlY3JldA"] {
            assert!(!text.contains(secret), "{secret} echoed in {text}");
        }
    }

    #[test]
    fn a_misspelt_setting_is_an_error_that_names_the_likely_one() {
        let e = Config::from_vars(&vars(&[
            ("APP_ENV_KAFKA_BROKER", "k:9092"),
            ("APP_ENV_SHUTDOWN_TIMEOUT", "1000"),
            ("APP_ENV_FROBNICATE", "1"),
        ]))
        .unwrap_err();
        assert_eq!(
            e.0,
            [
                "APP_ENV_FROBNICATE: not a setting of ledger",
                "APP_ENV_KAFKA_BROKER: not a setting of ledger (did you mean APP_ENV_KAFKA_BROKERS?)",
                "APP_ENV_SHUTDOWN_TIMEOUT: not a setting of ledger (did you mean APP_ENV_SHUTDOWN_TIMEOUT_MS?)",
            ]
        );
    }

    #[test]
    fn every_variable_this_module_reads_is_a_listed_setting() {
        // The code above the tests: every quoted APP_ENV_ name in it is one it reads.
        let code = include_str!("mod.rs").split("#[cfg(test)]").next().unwrap();
        let mut rest = code;
        let mut seen = 0;
        while let Some(at) = rest.find("\"APP_ENV_") {
            let name: String = rest[at + 1..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            rest = &rest[at + 1..];
            if name == "APP_ENV_" {
                continue; // the prefix itself
            }
            assert!(
                SETTINGS.contains(&name.as_str()),
                "{name} is read but not listed"
            );
            seen += 1;
        }
        assert!(
            seen > 2 * SETTINGS.len(),
            "listed once and read at least once each"
        );
    }

    #[test]
    fn websocket_limits_have_defaults_and_bounds() {
        let c = Config::from_vars(&HashMap::new()).unwrap();
        assert_eq!(c.ws_replay_max_age, Duration::from_secs(86_400));
        assert_eq!(c.ws_max_sockets_per_subject, 100);
        let c = Config::from_vars(&vars(&[
            ("APP_ENV_WS_REPLAY_MAX_AGE_MS", "604800000"),
            ("APP_ENV_WS_MAX_SOCKETS_PER_SUBJECT", "1"),
        ]))
        .unwrap();
        assert_eq!(c.ws_replay_max_age, Duration::from_secs(7 * 86_400));
        assert_eq!(c.ws_max_sockets_per_subject, 1);
        let e = Config::from_vars(&vars(&[
            ("APP_ENV_WS_REPLAY_MAX_AGE_MS", "604800001"),
            ("APP_ENV_WS_MAX_SOCKETS_PER_SUBJECT", "0"),
        ]))
        .unwrap_err();
        assert_eq!(
            e.0,
            [
                "APP_ENV_WS_REPLAY_MAX_AGE_MS: expected an integer from 1000 to 604800000",
                "APP_ENV_WS_MAX_SOCKETS_PER_SUBJECT: expected an integer from 1 to 100000",
            ]
        );
    }

    #[test]
    fn secrets_debug_as_stars() {
        let key = crate::crypto::generate_key_base64();
        let c = Config::from_vars(&vars(&[("APP_ENV_LEDGER_ENCRYPTION_KEY", &key)])).unwrap();
        assert!(!format!("{c:?}").contains(&key));
    }
}

#[cfg(test)]
mod redis_tls_tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_private_redis_ca_goes_to_every_rediss_server() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let c = Config::from_vars(&vars(&[
            ("APP_ENV_REDIS_URL", "rediss://:pw@cache:6380/1"),
            ("APP_ENV_WEBSOCKET_REDIS_URL", "rediss://:pw@cache:6380/0"),
            ("APP_ENV_REDIS_TLS_CA_FILE", ca.to_str().unwrap()),
        ]))
        .unwrap();
        for server in [c.redis.unwrap(), c.websocket_redis.unwrap()] {
            assert!(server.is_tls());
            assert!(format!("{server:?}").contains("private_ca: true"));
        }
    }

    #[test]
    fn a_redis_ca_that_cannot_be_used_is_a_configuration_error() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let missing = dir.path().join("missing.pem");
        for (url, ca, expected) in [
            (
                "rediss://cache:6380",
                junk.to_str().unwrap(),
                "holds no PEM certificate",
            ),
            (
                "rediss://cache:6380",
                missing.to_str().unwrap(),
                "cannot read",
            ),
            (
                "redis://cache:6379",
                junk.to_str().unwrap(),
                "neither APP_ENV_REDIS_URL",
            ),
        ] {
            let err = Config::from_vars(&vars(&[
                ("APP_ENV_REDIS_URL", url),
                ("APP_ENV_REDIS_TLS_CA_FILE", ca),
            ]))
            .unwrap_err()
            .to_string();
            assert!(err.contains("APP_ENV_REDIS_TLS_CA_FILE"), "{err}");
            assert!(err.contains(expected), "{expected}: {err}");
        }
    }
}

#[cfg(test)]
mod storage_tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn s3_urls_need_a_shared_key_and_both_credentials() {
        let err = Config::from_vars(&vars(&[
            ("APP_ENV_STORAGE_URL", "s3://bucket/ledgers"),
            ("APP_ENV_S3_ACCESS_KEY_ID", "AKIA"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("APP_ENV_LEDGER_ENCRYPTION_KEY"), "{err}");
        assert!(err.contains("APP_ENV_S3_SECRET_ACCESS_KEY"), "{err}");
        let ok = Config::from_vars(&vars(&[
            ("APP_ENV_STORAGE_URL", "s3://bucket/a/b/"),
            (
                "APP_ENV_LEDGER_ENCRYPTION_KEY",
                &crate::crypto::generate_key_base64(),
            ),
            ("APP_ENV_S3_ENDPOINT", "http://127.0.0.1:9000"),
        ]))
        .unwrap();
        let StorageKind::S3(s3) = ok.storage else {
            panic!("expected s3")
        };
        assert_eq!((s3.bucket.as_str(), s3.prefix.as_str()), ("bucket", "a/b"));
        assert_eq!(s3.region, "us-east-1");
        let bad = Config::from_vars(&vars(&[("APP_ENV_STORAGE_URL", "ftp://x")])).unwrap_err();
        assert!(bad.to_string().contains("APP_ENV_STORAGE_URL"));
    }

    #[test]
    fn debug_output_carries_no_credential() {
        let config = Config::from_vars(&vars(&[
            (
                "APP_ENV_AUTH_JWKS_URL",
                "https://svc:jwks-pw@idp.example/t0ken-path/jwks.json?key=q-s3cret",
            ),
            (
                "APP_ENV_SOURCE_URL",
                "https://user:src-pw@entries.example/api?token=src-t0ken",
            ),
            ("APP_ENV_SOURCE_TOKEN", "bearer-s3cret"),
            ("APP_ENV_DATABASE_URL", "postgres://ledger:db-pw@db/ledger"),
            (
                "APP_ENV_LEDGER_ENCRYPTION_KEY",
                &crate::crypto::generate_key_base64(),
            ),
        ]))
        .expect("valid config");
        let debug = format!("{config:?}");
        for secret in [
            "jwks-pw",
            "t0ken-path",
            "q-s3cret",
            "src-pw",
            "src-t0ken",
            "bearer-s3cret",
            "db-pw",
        ] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
        assert!(debug.contains("https://idp.example/***"), "{debug}");
        assert_eq!(
            config.auth_jwks_url.as_ref().map(|u| u.as_str()),
            Some("https://svc:jwks-pw@idp.example/t0ken-path/jwks.json?key=q-s3cret")
        );
    }

    #[test]
    fn serving_on_production_backends_needs_an_identity_provider() {
        let config = |pairs: &[(&str, &str)]| {
            Config::from_vars(
                &pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
            .expect("valid config")
        };
        // The embedded default keeps its dev key.
        assert!(config(&[]).serving_problems().is_empty());
        let pg = ("APP_ENV_DATABASE_URL", "postgres://db/ledger");
        assert_eq!(config(&[pg]).serving_problems().len(), 2);
        // A worker-only process verifies no token.
        assert!(
            config(&[pg, ("APP_ENV_APPLICATION_ROLES", "worker")])
                .serving_problems()
                .is_empty()
        );
        for (url, ok) in [
            ("https://idp.example/jwks.json", true),
            ("http://127.0.0.1:8080/jwks.json", true),
            ("http://127.8.0.1/jwks.json", true),
            ("http://localhost:9/jwks.json", true),
            ("http://[::1]:9/jwks.json", true),
            ("http://idp.example/jwks.json", false),
            ("http://10.0.0.1/jwks.json", false),
            ("http://localhost.evil.example/jwks.json", false),
        ] {
            let problems = config(&[
                pg,
                ("APP_ENV_AUTH_JWKS_URL", url),
                ("APP_ENV_AUTH_AUDIENCE", "ledger"),
            ])
            .serving_problems();
            assert_eq!(problems.is_empty(), ok, "{url}: {problems:?}");
        }
        let file = config(&[
            pg,
            ("APP_ENV_AUTH_JWKS_FILE", "/etc/ledger/jwks.json"),
            ("APP_ENV_AUTH_AUDIENCE", "ledger"),
        ]);
        assert!(file.serving_problems().is_empty());
    }
}

#[cfg(test)]
mod readme_tests {
    /// Every setting is documented in the README's table.
    #[test]
    fn every_variable_is_in_the_readme() {
        let readme = include_str!("../../README.md");
        let mut names = super::SETTINGS.to_vec();
        names.sort();
        names.dedup();
        assert!(names.len() > 20, "{names:?}");
        for name in names {
            assert!(
                readme.contains(&format!("| `{name}` |")),
                "{name} is not in README.md"
            );
        }
    }
}
