//! Configuration: every `APP_ENV_*` variable (and `RUN_MODE`) read once at start-up into one
//! typed [`Config`], validated as a whole so a bad deployment learns every problem at once.
//! The variables are rows of one table ([`table`]): name, default, what each accepts and its
//! documentation; parsing, the unknown-name check, `ledger --help` and the documentation's
//! tables are all made from it. Secrets are wrapped in [`Secret`], whose `Debug` prints
//! `***`; no error names a value. The settings of each port are plain data here; each port
//! opens itself from them (`store::open`, `queue::open`, …), so nothing here knows an adapter.

use std::path::PathBuf;
use std::time::Duration;

mod read;
pub mod redis;
mod secret;
pub mod settings;
pub mod table;
#[cfg(test)]
mod tests;

pub use self::redis::RedisServer;
pub use self::secret::{Secret, SensitiveUrl};
pub use self::settings::{SETTINGS, Setting, help};

/// The roles this process plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// Serves `/v1/api/ledger/…` and enqueues.
    pub api: bool,
    /// Consumes the queue, runs the pipeline and the recovery sweep.
    pub worker: bool,
}

/// The job store backend.
#[derive(Debug, Clone)]
pub enum DatabaseKind {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL server (the URL may carry a password).
    Postgres(Secret),
}

/// The queue backend.
#[derive(Debug, Clone)]
pub enum QueueKind {
    /// The job table itself.
    Db,
    /// Apache Kafka.
    Kafka(KafkaSettings),
}

/// How to reach Kafka (from `APP_ENV_KAFKA_*`).
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// `host:port,…`.
    pub brokers: String,
    /// Topic of generation jobs.
    pub topic: String,
    /// Consumer group of the workers.
    pub group_id: String,
    /// Consumers per worker process.
    pub consumer_count: usize,
    /// Partitions of the topic when this service creates it.
    pub partitions: i32,
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub security_protocol: Option<String>,
    /// `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`.
    pub sasl_mechanism: Option<String>,
    /// SASL user.
    pub sasl_username: Option<String>,
    /// SASL password.
    pub sasl_password: Option<Secret>,
}

/// Where ledger files are stored.
#[derive(Debug, Clone)]
pub enum StorageKind {
    /// A local directory (`file://…`).
    Local(PathBuf),
    /// An S3 bucket (`s3://bucket/prefix`).
    S3(S3Settings),
}

/// Where an S3 storage lives (from `APP_ENV_STORAGE_URL=s3://bucket/prefix` and `APP_ENV_S3_*`).
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix inside the bucket (may be empty).
    pub prefix: String,
    /// Endpoint of an S3-compatible server; `None` for AWS.
    pub endpoint: Option<String>,
    /// Region (`us-east-1` by default).
    pub region: String,
    /// Access key id; with the secret, static credentials.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<Secret>,
}

/// The root key in AWS KMS (from `APP_ENV_LEDGER_KMS_KEY_ID` and `APP_ENV_KMS_*`), instead of
/// a local master key.
#[derive(Debug, Clone)]
pub struct KmsConfig {
    /// The root key: a key id, key ARN, alias name (`alias/…`) or alias ARN.
    pub key_id: String,
    /// Where KMS is and the credentials to call it with.
    pub settings: crate::keys::kms::KmsSettings,
}

/// Where entries come from: a directory of files, or an upstream HTTP API when `url` is set.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    /// `APP_ENV_SOURCE_DIR`: directory of `{merchantId}.json|ndjson`.
    pub dir: PathBuf,
    /// `APP_ENV_SOURCE_URL`: the upstream HTTP API of entries, instead of the directory.
    pub url: Option<SensitiveUrl>,
    /// `APP_ENV_SOURCE_TOKEN`: bearer token for the upstream.
    pub token: Option<Secret>,
    /// `APP_ENV_SOURCE_MAX_PAGES`: the most pages the HTTP source follows for one ledger.
    pub max_pages: u64,
}

/// How status events travel between processes.
#[derive(Debug, Clone)]
pub struct EventSettings {
    /// `APP_ENV_WEBSOCKET_REDIS_URL`: Redis pub/sub; in-process only when unset.
    pub redis: Option<RedisServer>,
    /// `APP_ENV_WEBSOCKET_REDIS_CHANNEL`: the pub/sub channel, one per deployment.
    pub channel: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `key=value` pairs.
    Logfmt,
    /// One JSON object per line.
    Json,
}

/// The whole configuration. Each field's variable, default and meaning are in [`table`].
#[derive(Debug, Clone)]
pub struct Config {
    /// `RUN_MODE=migrate`: apply migrations and exit.
    pub run_mode_migrate: bool,
    /// `APP_ENV_APPLICATION_ROLES`.
    pub roles: Roles,
    /// `APP_ENV_HOST`: the address to bind.
    pub host: String,
    /// `APP_ENV_PORT`: the HTTP port (0: an ephemeral one).
    pub port: u16,
    /// `APP_ENV_DATA_DIR`: the SQLite file, local objects and dev keys.
    pub data_dir: PathBuf,
    /// `APP_ENV_DATABASE_URL`: the job store.
    pub database: DatabaseKind,
    /// `APP_ENV_QUEUE` and `APP_ENV_KAFKA_*`.
    pub queue: QueueKind,
    /// `APP_ENV_SOURCE_*`.
    pub source: SourceSettings,
    /// `APP_ENV_WEBSOCKET_REDIS_*`.
    pub events: EventSettings,
    /// `APP_ENV_REDIS_URL`: Redis for the shared policy cache (in-process when unset).
    pub redis: Option<RedisServer>,
    /// `APP_ENV_REDIS_TLS_CA_FILE`: the private CA of both Redis URLs (read at start-up).
    pub redis_tls_ca_file: Option<PathBuf>,
    /// `APP_ENV_STORAGE_URL` and `APP_ENV_S3_*`.
    pub storage: StorageKind,
    /// `APP_ENV_NODE_ID`: the Snowflake node id; leased from the job store when unset.
    pub node_id: Option<u16>,
    /// `APP_ENV_JOB_TIMEOUT_MS`: lease of a running job, age of a stale PENDING one.
    pub job_timeout: Duration,
    /// `APP_ENV_SWEEP_INTERVAL_MS`: recovery sweep period.
    pub sweep_interval: Duration,
    /// `APP_ENV_JOB_DEADLINE_MS`: the longest one attempt may run.
    pub job_deadline: Duration,
    /// `APP_ENV_MAX_ATTEMPTS`: stalls after which a job is REJECTED.
    pub max_attempts: u32,
    /// `APP_ENV_WORKER_CONCURRENCY`: jobs at once with the in-database queue.
    pub worker_concurrency: usize,
    /// `APP_ENV_LEDGER_ENCRYPTION_KEY`: base64 master key; generated when neither it nor
    /// `kms` is set. Never set together with `kms`.
    pub encryption_key: Option<Secret>,
    /// `APP_ENV_LEDGER_ENCRYPTION_KEYS_OLD`: older keys that still decrypt.
    pub encryption_keys_old: Vec<Secret>,
    /// `APP_ENV_LEDGER_KMS_KEY_ID` and `APP_ENV_KMS_*`: the root key in KMS, when set.
    pub kms: Option<KmsConfig>,
    /// `APP_ENV_RETENTION_DAYS`: how long a FINAL ledger's files are kept (`None`: for ever).
    pub retention: Option<Duration>,
    /// `APP_ENV_SIGNING_KEY`: PEM of the manifest signing key; generated when unset.
    pub signing_key: Option<Secret>,
    /// `APP_ENV_SIGNING_KEYS_OLD`: PEM of retired signing keys, still published.
    pub signing_keys_old: Option<String>,
    /// `APP_ENV_SIGNING_ISSUER`: the `iss` of manifests.
    pub signing_issuer: String,
    /// `APP_ENV_AUTH_JWKS_URL`: JWKS of the identity service.
    pub auth_jwks_url: Option<SensitiveUrl>,
    /// `APP_ENV_AUTH_JWKS_MAX_AGE_SECS`: keys not refreshed for this long are refused.
    pub auth_jwks_max_age: Duration,
    /// `APP_ENV_AUTH_JWKS_FILE`: a JWKS file (when no URL is set).
    pub auth_jwks_file: Option<PathBuf>,
    /// `APP_ENV_AUTH_ISSUER`: required `iss`, when set.
    pub auth_issuer: Option<String>,
    /// `APP_ENV_AUTH_AUDIENCE`: required `aud`, when set.
    pub auth_audience: Option<String>,
    /// `APP_ENV_AUTH_LEEWAY_SECS`: clock skew tolerated on `exp` and `nbf`.
    pub auth_leeway: Duration,
    /// `APP_ENV_POLICY_CACHE_TTL_MS`: how long authorization decisions are cached.
    pub policy_cache_ttl: Duration,
    /// `APP_ENV_WS_PING_INTERVAL_MS`: WebSocket keep-alive ping interval.
    pub ws_ping_interval: Duration,
    /// `APP_ENV_WS_REPLAY_MAX_AGE_MS`: how far back `?since=` replays.
    pub ws_replay_max_age: Duration,
    /// `APP_ENV_WS_MAX_SOCKETS_PER_SUBJECT`: WebSockets per subject per api process.
    pub ws_max_sockets_per_subject: usize,
    /// `APP_ENV_WEBHOOK_ALLOW_PRIVATE_NETWORKS`: webhook URLs may be `http` and private.
    pub webhook_allow_private: bool,
    /// `APP_ENV_WEBHOOK_RETRY_SCHEDULE`: the delays after each failed delivery attempt.
    pub webhook_retry_schedule: Vec<Duration>,
    /// `APP_ENV_WEBHOOK_CONCURRENCY`: deliveries in flight per worker process.
    pub webhook_concurrency: usize,
    /// `APP_ENV_LOG_FORMAT`.
    pub log_format: LogFormat,
    /// `APP_ENV_LOG_LEVEL`: a tracing filter.
    pub log_level: String,
    /// `APP_ENV_SHUTDOWN_TIMEOUT_MS`: how long running jobs may finish on SIGTERM.
    pub shutdown_timeout: Duration,
}

/// Every problem found in the environment, one line each, naming the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration:\n  {}", .0.join("\n  "))]
pub struct ConfigErrors(pub Vec<String>);

impl Config {
    /// Whether any production backend is configured: a PostgreSQL job store, the Kafka queue
    /// or S3 storage. Such a deployment runs several processes on several machines.
    pub fn has_production_backend(&self) -> bool {
        matches!(self.database, DatabaseKind::Postgres(_))
            || matches!(self.queue, QueueKind::Kafka(_))
            || matches!(self.storage, StorageKind::S3(_))
    }

    /// Jobs one worker process runs at once: a Kafka consumer each, or
    /// `APP_ENV_WORKER_CONCURRENCY` with the in-database queue.
    pub fn worker_consumers(&self) -> usize {
        match &self.queue {
            QueueKind::Kafka(kafka) => kafka.consumer_count,
            QueueKind::Db => self.worker_concurrency,
        }
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
}

/// Whether `url` names this machine: `localhost`, 127.0.0.0/8 or `::1`.
fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}
