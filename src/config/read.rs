//! Reading the environment into a [`Config`]: each value through its row of the table (its
//! default, what it accepts, its error message), then the checks that span several settings.
//! Every problem is collected, so one run lists them all.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::settings::{self, Accepts, Setting};
use super::table as t;
use super::{
    Config, ConfigErrors, DatabaseKind, EventSettings, KafkaSettings, KmsConfig, LogFormat,
    QueueKind, RedisServer, Roles, S3Settings, Secret, SensitiveUrl, SourceSettings, StorageKind,
};

/// The environment and the problems found in it so far.
struct Reader<'a> {
    vars: &'a HashMap<String, String>,
    errors: Vec<String>,
    /// The settings read, in order (tests check that every row is read).
    read: Vec<&'static str>,
}

impl Reader<'_> {
    /// The trimmed value of `s`, `None` when unset or empty.
    fn raw(&mut self, s: &Setting) -> Option<&str> {
        self.read.push(s.name);
        self.vars
            .get(s.name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    fn fail(&mut self, s: &Setting, problem: impl std::fmt::Display) {
        self.errors.push(format!("{}: {problem}", s.name));
    }

    /// A text setting, or `None`.
    fn text(&mut self, s: &Setting) -> Option<String> {
        self.raw(s).map(str::to_owned)
    }

    /// A text setting or its default.
    fn text_or_default(&mut self, s: &Setting) -> String {
        let settings::Default::Text(default) = s.default else {
            unreachable!("{}: the table gives no text default", s.name)
        };
        self.text(s).unwrap_or_else(|| default.to_owned())
    }

    /// A secret setting, or `None`.
    fn secret(&mut self, s: &Setting) -> Option<Secret> {
        self.text(s).map(Secret::new)
    }

    /// An integer setting within its range, or `None` when unset (or refused).
    fn optional_integer<T: TryFrom<u64>>(&mut self, s: &Setting) -> Option<T> {
        let Accepts::Integer { min, max } = s.accepts else {
            unreachable!("{}: the table says it is no integer", s.name)
        };
        let raw = self.raw(s)?;
        match raw.parse::<u64>().ok().filter(|v| (min..=max).contains(v)) {
            Some(v) => T::try_from(v).ok(),
            None => {
                self.fail(s, format_args!("expected an integer from {min} to {max}"));
                None
            }
        }
    }

    /// An integer setting within its range, or its default.
    fn integer<T: TryFrom<u64>>(&mut self, s: &Setting) -> T {
        let settings::Default::Integer(default) = s.default else {
            unreachable!("{}: the table gives no integer default", s.name)
        };
        self.optional_integer(s)
            .or_else(|| T::try_from(default).ok())
            .unwrap_or_else(|| unreachable!("{}: the default does not fit its type", s.name))
    }

    fn millis(&mut self, s: &Setting) -> Duration {
        Duration::from_millis(self.integer(s))
    }

    fn secs(&mut self, s: &Setting) -> Duration {
        Duration::from_secs(self.integer(s))
    }

    /// One of the setting's words, or its default.
    fn one_of(&mut self, s: &Setting) -> &'static str {
        let (Accepts::OneOf(words), settings::Default::Text(default)) = (s.accepts, s.default)
        else {
            unreachable!("{}: the table gives no words and default", s.name)
        };
        let Some(raw) = self.raw(s) else {
            return default;
        };
        if let Some(word) = words.iter().find(|w| **w == raw) {
            return word;
        }
        let quoted: Vec<String> = words.iter().map(|w| format!("`{w}`")).collect();
        let expected = match quoted.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => quoted.concat(),
        };
        self.fail(s, format_args!("expected {expected}"));
        default
    }

    /// An `http(s)://` URL setting with a host, as written and parsed, or `None`.
    fn http_url_parsed(&mut self, s: &Setting) -> Option<(String, url::Url)> {
        debug_assert!(matches!(s.accepts, Accepts::HttpUrl), "{}", s.name);
        let raw = self.text(s)?;
        match url::Url::parse(&raw) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
                Some((raw, u))
            }
            _ => {
                self.fail(s, "expected an http(s) URL");
                None
            }
        }
    }

    /// An `http(s)://` URL setting with a host, or `None`.
    fn http_url(&mut self, s: &Setting) -> Option<SensitiveUrl> {
        self.http_url_parsed(s).map(|(_, u)| SensitiveUrl(u))
    }

    /// Reports a Redis URL of `s` that is neither `redis://` nor `rediss://`.
    fn check_redis_url(&mut self, s: &Setting, url: Option<&str>) {
        debug_assert!(matches!(s.accepts, Accepts::RedisUrl), "{}", s.name);
        if let Some(u) = url
            && !(u.starts_with("redis://") || u.starts_with("rediss://"))
        {
            self.fail(s, "expected redis:// or rediss://");
        }
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigErrors> {
        let vars: HashMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("APP_ENV_") || k == t::RUN_MODE.name)
            .collect();
        Self::from_vars(&vars)
    }

    /// Reads a map of variables (tests build one by hand).
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigErrors> {
        read(vars).0
    }
}

/// The configuration in `vars`, and the settings read on the way.
pub(super) fn read(
    vars: &HashMap<String, String>,
) -> (Result<Config, ConfigErrors>, Vec<&'static str>) {
    let mut r = Reader {
        vars,
        errors: Vec::new(),
        read: Vec::new(),
    };
    let config = read_all(&mut r);
    let mut unknown: Vec<&String> = vars.keys().filter(|k| settings::is_unknown(k)).collect();
    unknown.sort();
    for name in unknown {
        r.errors.push(match settings::nearest_setting(name) {
            Some(near) => format!("{name}: not a setting of ledger (did you mean {near}?)"),
            None => format!("{name}: not a setting of ledger"),
        });
    }
    let result = if r.errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(r.errors))
    };
    (result, r.read)
}

/// Every setting, in the order its problems are reported.
fn read_all(r: &mut Reader<'_>) -> Config {
    let run_mode_migrate = r.one_of(&t::RUN_MODE) == "migrate";
    let roles = roles(r);
    let host = r.text_or_default(&t::HOST);
    let port = r.integer(&t::PORT);
    let data_dir = PathBuf::from(r.text_or_default(&t::DATA_DIR));
    let database = database(r, &data_dir);
    let queue = queue(r);
    let source_url = r.http_url(&t::SOURCE_URL);
    let source_token = r.secret(&t::SOURCE_TOKEN);
    let (events, redis, redis_tls_ca_file) = redis(r);
    let storage = storage(r, &data_dir);
    let source_dir = PathBuf::from(r.text_or_default(&t::SOURCE_DIR));
    let node_id = r.optional_integer(&t::NODE_ID);
    let retention_days: Option<u32> = r.optional_integer(&t::RETENTION_DAYS);
    let job_timeout = r.millis(&t::JOB_TIMEOUT_MS);
    let job_deadline = r.millis(&t::JOB_DEADLINE_MS);
    let source = SourceSettings {
        dir: source_dir,
        url: source_url,
        token: source_token,
        max_pages: r.integer(&t::SOURCE_MAX_PAGES),
    };
    let sweep_interval = r.millis(&t::SWEEP_INTERVAL_MS);
    let max_attempts = r.integer(&t::MAX_ATTEMPTS);
    let worker_concurrency = r.integer(&t::WORKER_CONCURRENCY);
    let kms = kms(r);
    let (encryption_key, encryption_keys_old) = keys(r, &storage, kms.is_some());
    let (signing_key, signing_keys_old) = signing_keys(r, &storage);
    let signing_issuer = r.text_or_default(&t::SIGNING_ISSUER);
    let auth_jwks_url = r.http_url(&t::AUTH_JWKS_URL);
    let auth_jwks_max_age = r.secs(&t::AUTH_JWKS_MAX_AGE_SECS);
    let auth_jwks_file = r.text(&t::AUTH_JWKS_FILE).map(PathBuf::from);
    let auth_issuer = r.text(&t::AUTH_ISSUER);
    let auth_audience = r.text(&t::AUTH_AUDIENCE);
    let auth_leeway = r.secs(&t::AUTH_LEEWAY_SECS);
    let policy_cache_ttl = r.millis(&t::POLICY_CACHE_TTL_MS);
    let ws_ping_interval = r.millis(&t::WS_PING_INTERVAL_MS);
    // Up to a week: longer replays read more of the timeline than a reconnect needs;
    // a client away for longer re-reads the ledgers.
    let ws_replay_max_age = r.millis(&t::WS_REPLAY_MAX_AGE_MS);
    let ws_max_sockets_per_subject = r.integer(&t::WS_MAX_SOCKETS_PER_SUBJECT);
    let webhook_allow_private = r.one_of(&t::WEBHOOK_ALLOW_PRIVATE_NETWORKS) == "true";
    let webhook_retry_schedule = {
        let raw = r.text_or_default(&t::WEBHOOK_RETRY_SCHEDULE);
        match crate::webhooks::retry::parse_schedule(&raw) {
            Ok(schedule) => schedule,
            Err(problem) => {
                r.fail(&t::WEBHOOK_RETRY_SCHEDULE, &problem);
                crate::webhooks::retry::DEFAULT_SCHEDULE.to_vec()
            }
        }
    };
    let webhook_concurrency = r.integer(&t::WEBHOOK_CONCURRENCY);
    let log_format = match r.one_of(&t::LOG_FORMAT) {
        "json" => LogFormat::Json,
        _ => LogFormat::Logfmt,
    };
    let log_level = r.text_or_default(&t::LOG_LEVEL);
    if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
        r.fail(
            &t::LOG_LEVEL,
            "not a valid filter (e.g. `info`, `ledger=debug`)",
        );
    }
    let shutdown_timeout = r.millis(&t::SHUTDOWN_TIMEOUT_MS);
    Config {
        run_mode_migrate,
        roles,
        host,
        port,
        data_dir,
        database,
        queue,
        source,
        events,
        redis,
        redis_tls_ca_file,
        storage,
        node_id,
        retention: retention_days.map(|d| Duration::from_secs(u64::from(d) * 86_400)),
        job_timeout,
        sweep_interval,
        job_deadline,
        max_attempts,
        worker_concurrency,
        encryption_key,
        encryption_keys_old,
        kms,
        signing_key,
        signing_keys_old,
        signing_issuer,
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
        webhook_allow_private,
        webhook_retry_schedule,
        webhook_concurrency,
        log_format,
        log_level,
        shutdown_timeout,
    }
}

fn roles(r: &mut Reader<'_>) -> Roles {
    let raw = r.text_or_default(&t::APPLICATION_ROLES);
    let mut roles = Roles {
        api: false,
        worker: false,
    };
    for part in raw.split(',').map(str::trim) {
        match part {
            "api" => roles.api = true,
            "worker" => roles.worker = true,
            _ => r.fail(
                &t::APPLICATION_ROLES,
                format_args!("unknown role `{part}` (expected api, worker or api,worker)"),
            ),
        }
    }
    roles
}

fn database(r: &mut Reader<'_>, data_dir: &Path) -> DatabaseKind {
    let embedded = || DatabaseKind::Sqlite(data_dir.join("ledger.db"));
    match r.text(&t::DATABASE_URL) {
        None => embedded(),
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
            r.fail(&t::DATABASE_URL, "expected sqlite://path or postgres://…");
            embedded()
        }
    }
}

fn queue(r: &mut Reader<'_>) -> QueueKind {
    if r.one_of(&t::QUEUE) != "kafka" {
        return QueueKind::Db;
    }
    let brokers = r.text(&t::KAFKA_BROKERS).unwrap_or_default();
    if brokers.is_empty() {
        r.fail(&t::KAFKA_BROKERS, "required when APP_ENV_QUEUE=kafka");
    }
    let security_protocol = r.text(&t::KAFKA_SECURITY_PROTOCOL);
    if let Some(p) = &security_protocol
        && !matches!(
            p.to_ascii_lowercase().as_str(),
            "plaintext" | "ssl" | "sasl_plaintext" | "sasl_ssl"
        )
    {
        r.fail(
            &t::KAFKA_SECURITY_PROTOCOL,
            "expected plaintext, ssl, sasl_plaintext or sasl_ssl",
        );
    }
    QueueKind::Kafka(KafkaSettings {
        brokers,
        topic: r.text_or_default(&t::KAFKA_TOPIC),
        group_id: r.text_or_default(&t::KAFKA_GROUP_ID),
        consumer_count: r.integer(&t::KAFKA_CONSUMER_COUNT),
        partitions: r.integer(&t::KAFKA_PARTITIONS),
        security_protocol,
        sasl_mechanism: r.text(&t::KAFKA_SASL_MECHANISM),
        sasl_username: r.text(&t::KAFKA_SASL_USERNAME),
        sasl_password: r.secret(&t::KAFKA_SASL_PASSWORD),
    })
}

/// Both Redis servers (events, policy cache) with the private CA they share.
fn redis(r: &mut Reader<'_>) -> (EventSettings, Option<RedisServer>, Option<PathBuf>) {
    let websocket_redis_url = r.text(&t::WEBSOCKET_REDIS_URL);
    let channel = r.text_or_default(&t::WEBSOCKET_REDIS_CHANNEL);
    let redis_url = r.text(&t::REDIS_URL);
    r.check_redis_url(&t::REDIS_URL, redis_url.as_deref());
    r.check_redis_url(&t::WEBSOCKET_REDIS_URL, websocket_redis_url.as_deref());
    let ca_file = r.text(&t::REDIS_TLS_CA_FILE).map(PathBuf::from);
    let root_ca = ca_file.as_ref().and_then(|path| {
        let any_tls = [&redis_url, &websocket_redis_url]
            .iter()
            .any(|u| u.as_deref().is_some_and(|u| u.starts_with("rediss://")));
        if !any_tls {
            // A CA that nothing uses is a deployment that believes it verifies Redis.
            r.fail(
                &t::REDIS_TLS_CA_FILE,
                "set, but neither APP_ENV_REDIS_URL nor APP_ENV_WEBSOCKET_REDIS_URL is rediss://",
            );
        }
        match std::fs::read(path) {
            Ok(pem) if pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") => {
                Some(Arc::<[u8]>::from(pem))
            }
            Ok(_) => {
                r.fail(
                    &t::REDIS_TLS_CA_FILE,
                    format_args!("{} holds no PEM certificate", path.display()),
                );
                None
            }
            Err(e) => {
                r.fail(
                    &t::REDIS_TLS_CA_FILE,
                    format_args!("cannot read {} ({e})", path.display()),
                );
                None
            }
        }
    });
    let server = |url: String| {
        let server = RedisServer::new(url);
        match &root_ca {
            Some(pem) => server.with_root_ca(pem.clone()),
            None => server,
        }
    };
    let events = EventSettings {
        redis: websocket_redis_url.map(server),
        channel,
    };
    (events, redis_url.map(server), ca_file)
}

fn storage(r: &mut Reader<'_>, data_dir: &Path) -> StorageKind {
    let embedded = || StorageKind::Local(absolute(&data_dir.join("objects")));
    let Some(url) = r.text(&t::STORAGE_URL) else {
        return embedded();
    };
    if let Some(path) = url.strip_prefix("file://")
        && !path.is_empty()
    {
        return StorageKind::Local(PathBuf::from(path));
    }
    let Some(rest) = url.strip_prefix("s3://") else {
        r.fail(
            &t::STORAGE_URL,
            "expected file:///path or s3://bucket/prefix",
        );
        return embedded();
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        r.fail(&t::STORAGE_URL, "s3:// needs a bucket");
    }
    let access_key_id = r.text(&t::S3_ACCESS_KEY_ID);
    let secret_access_key = r.secret(&t::S3_SECRET_ACCESS_KEY);
    if access_key_id.is_some() != secret_access_key.is_some() {
        r.errors.push(
            "APP_ENV_S3_ACCESS_KEY_ID / APP_ENV_S3_SECRET_ACCESS_KEY: set both or neither".into(),
        );
    }
    let endpoint = r.http_url_parsed(&t::S3_ENDPOINT).map(|(raw, _)| raw);
    StorageKind::S3(S3Settings {
        bucket: bucket.to_owned(),
        prefix: prefix.trim_matches('/').to_owned(),
        endpoint,
        region: r.text_or_default(&t::S3_REGION),
        access_key_id,
        secret_access_key,
    })
}

/// The root key in KMS, when `APP_ENV_LEDGER_KMS_KEY_ID` is set. The other `APP_ENV_KMS_*`
/// settings are always read: set without the key id, each is an error (a deployment that
/// believes it uses KMS).
fn kms(r: &mut Reader<'_>) -> Option<KmsConfig> {
    let key_id = r.text(&t::LEDGER_KMS_KEY_ID);
    if let Some(id) = &key_id
        && id.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        r.fail(
            &t::LEDGER_KMS_KEY_ID,
            "expected a key id, key ARN, alias name (alias/…) or alias ARN, without spaces",
        );
    }
    let endpoint_set = r.raw(&t::KMS_ENDPOINT).is_some();
    let endpoint = r.http_url_parsed(&t::KMS_ENDPOINT).map(|(raw, _)| raw);
    let region = r.text(&t::KMS_REGION);
    let access_key_id = r.text(&t::KMS_ACCESS_KEY_ID);
    let secret_access_key = r.secret(&t::KMS_SECRET_ACCESS_KEY);
    let Some(key_id) = key_id else {
        for (setting, set) in [
            (&t::KMS_ENDPOINT, endpoint_set),
            (&t::KMS_REGION, region.is_some()),
            (&t::KMS_ACCESS_KEY_ID, access_key_id.is_some()),
            (&t::KMS_SECRET_ACCESS_KEY, secret_access_key.is_some()),
        ] {
            if set {
                r.fail(
                    setting,
                    "set without APP_ENV_LEDGER_KMS_KEY_ID (the KMS settings are used only \
                     with a root key in KMS)",
                );
            }
        }
        return None;
    };
    if access_key_id.is_some() != secret_access_key.is_some() {
        r.errors.push(
            "APP_ENV_KMS_ACCESS_KEY_ID / APP_ENV_KMS_SECRET_ACCESS_KEY: set both or neither".into(),
        );
    }
    let region = region.unwrap_or_else(|| {
        let settings::Default::Text(default) = t::KMS_REGION.default else {
            unreachable!("APP_ENV_KMS_REGION: the table gives no text default")
        };
        default.to_owned()
    });
    Some(KmsConfig {
        key_id,
        settings: crate::keys::kms::KmsSettings {
            endpoint,
            region,
            access_key_id,
            secret_access_key,
            session_token: None,
        },
    })
}

/// The master key and the older ones, checked here so a bad one is listed with every other
/// problem; the message never quotes the value. `kms`: `APP_ENV_LEDGER_KMS_KEY_ID` is set,
/// the other possible root: exactly one of the two with S3, at most one otherwise.
fn keys(r: &mut Reader<'_>, storage: &StorageKind, kms: bool) -> (Option<Secret>, Vec<Secret>) {
    let current = r.secret(&t::LEDGER_ENCRYPTION_KEY);
    let both = "APP_ENV_LEDGER_ENCRYPTION_KEY / APP_ENV_LEDGER_KMS_KEY_ID";
    match (current.is_some(), kms) {
        (true, true) => r.errors.push(format!(
            "{both}: set exactly one (the root key is either a local master key or a KMS key; \
             keep an old local key in APP_ENV_LEDGER_ENCRYPTION_KEYS_OLD)"
        )),
        // A generated key lives on one machine's disk; shared storage needs a shared key.
        (false, false) if matches!(storage, StorageKind::S3(_)) => r.errors.push(format!(
            "{both}: one is required when APP_ENV_STORAGE_URL is s3://"
        )),
        _ => {}
    }
    let old: Vec<Secret> = r
        .text(&t::LEDGER_ENCRYPTION_KEYS_OLD)
        .map(|raw| {
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(Secret::new)
                .collect()
        })
        .unwrap_or_default();
    if let Some(key) = &current
        && crate::crypto::MasterKey::from_base64(key.expose()).is_err()
    {
        r.fail(
            &t::LEDGER_ENCRYPTION_KEY,
            "expected base64 of 32 bytes (`ledger keygen` prints one)",
        );
    }
    for (i, key) in old.iter().enumerate() {
        if crate::crypto::MasterKey::from_base64(key.expose()).is_err() {
            r.fail(
                &t::LEDGER_ENCRYPTION_KEYS_OLD,
                format_args!("key {} is not base64 of 32 bytes", i + 1),
            );
        }
    }
    (current, old)
}

/// The manifest signing key and the retired ones, checked here so a bad one is listed with
/// every other problem; the message never quotes the value.
fn signing_keys(r: &mut Reader<'_>, storage: &StorageKind) -> (Option<Secret>, Option<String>) {
    let current = r.secret(&t::SIGNING_KEY);
    if current.is_none() && matches!(storage, StorageKind::S3(_)) {
        // A generated key lives on one machine's disk; every replica must sign with one key.
        r.fail(
            &t::SIGNING_KEY,
            "required when APP_ENV_STORAGE_URL is s3://",
        );
    }
    let old = r.text(&t::SIGNING_KEYS_OLD);
    if let Some(key) = &current {
        match crate::manifest::ManifestSigner::from_pem(
            key.expose(),
            old.as_deref().unwrap_or(""),
            "",
        ) {
            Ok(_) => {}
            Err(e @ crate::manifest::KeyError::Current) => r.fail(&t::SIGNING_KEY, e),
            Err(
                e @ (crate::manifest::KeyError::Retired(_)
                | crate::manifest::KeyError::RetiredPrivate(_)),
            ) => r.fail(&t::SIGNING_KEYS_OLD, e),
        }
    } else if let Some(old) = &old
        && let Err(e) = crate::manifest::parse_retired(old)
    {
        r.fail(&t::SIGNING_KEYS_OLD, e);
    }
    (current, old)
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
