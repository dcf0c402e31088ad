//! `spawn_app()` and friends: a running service, tokens and grants, and polling helpers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ledger::config::Config;
use ledger::domain::Grant;
use ledger::source::fixture::{self, FixtureSpec};
use ledger::store::JobStore;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// A running service and what a test needs to talk to it.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub data_dir: DataDir,
    pub config: Config,
    pub store: Arc<dyn JobStore>,
    pub shutdown: CancellationToken,
    pub task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Options of [`spawn_with`].
#[derive(Default)]
pub struct Options {
    /// Extra or overriding `APP_ENV_*` variables.
    pub vars: Vec<(&'static str, String)>,
    /// Use this source dir instead of a copy of `examples/source`.
    pub source_dir: Option<PathBuf>,
    /// A fixed kernel send buffer for the server's connections (no autotuning), to make
    /// slow clients observable.
    pub send_buffer: Option<usize>,
}

pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/source")
}

/// A service on the embedded defaults, with the shipped example merchants.
pub async fn spawn_app() -> TestApp {
    spawn_with(Options::default()).await
}

/// Backends of the production run of this suite (`LEDGER_TEST_BACKENDS=production`), by
/// data dir, so processes a test starts on the same data dir share them. An entry leaves
/// (and its database is dropped) with the [`DataDir`] it is keyed by.
fn shared_backends() -> &'static std::sync::Mutex<HashMap<PathBuf, Production>> {
    static SHARED: std::sync::OnceLock<std::sync::Mutex<HashMap<PathBuf, Production>>> =
        std::sync::OnceLock::new();
    SHARED.get_or_init(Default::default)
}

/// The backend variables of processes on `data_dir`: none in the embedded run; in the
/// production run PostgreSQL, Kafka, S3 and Redis, the same for every process (and CLI
/// call) a test starts on that data dir, until its [`DataDir`] is dropped.
pub async fn backends_for(data_dir: &Path) -> Vec<(&'static str, String)> {
    with_backends(data_dir, Vec::new()).await
}

/// [`backends_for`] from synchronous code (CLI tests).
pub fn backends_for_blocking(data_dir: &Path) -> Vec<(&'static str, String)> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(backends_for(data_dir))
}

/// In the production run, every app gets PostgreSQL, Kafka, S3 and Redis unless the test
/// names its backends itself.
async fn with_backends(
    data_dir: &Path,
    vars: Vec<(&'static str, String)>,
) -> Vec<(&'static str, String)> {
    let production_run = std::env::var("LEDGER_TEST_BACKENDS").is_ok_and(|b| b == "production");
    if !production_run || vars.iter().any(|(k, _)| *k == "APP_ENV_DATABASE_URL") {
        return vars;
    }
    let known = shared_backends()
        .lock()
        .expect("backends")
        .get(data_dir)
        .map(|b| b.vars.clone());
    let backends = match known {
        Some(b) => b,
        None => {
            let made = production().await;
            // Another process of the test may have made them meanwhile: the first one
            // stays (the other's database is dropped at once).
            shared_backends()
                .lock()
                .expect("backends")
                .entry(data_dir.to_owned())
                .or_insert(made)
                .vars
                .clone()
        }
    };
    let mut merged = backends;
    for (k, v) in vars {
        merged.retain(|(name, _)| *name != k);
        merged.push((k, v));
    }
    merged
}

/// A test's data dir: a temporary directory that, when dropped, also drops the production
/// run's backends made for it ([`backends_for`]).
pub struct DataDir(tempfile::TempDir);

/// A fresh [`DataDir`].
pub fn data_dir() -> DataDir {
    DataDir(tempfile::tempdir().expect("tempdir"))
}

impl DataDir {
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let backends = shared_backends()
            .lock()
            .map(|mut shared| shared.remove(self.0.path()))
            .unwrap_or_default();
        drop(backends);
    }
}

pub async fn spawn_with(options: Options) -> TestApp {
    let data_dir = data_dir();
    let shared_dir = options
        .vars
        .iter()
        .find(|(k, _)| *k == "APP_ENV_DATA_DIR")
        .map(|(_, v)| PathBuf::from(v))
        .unwrap_or_else(|| data_dir.path().to_owned());
    let own_group = options
        .vars
        .iter()
        .any(|(k, _)| *k == "APP_ENV_KAFKA_GROUP_ID");
    let mut vars = with_backends(&shared_dir, options.vars).await;
    if !own_group {
        // Each service started here gets a consumer group of its own on the data dir's
        // topic (it reads the topic from its start: what earlier services did is dropped
        // as not PENDING). The test broker (tansu) keeps a member that sent LeaveGroup as
        // the group's leader when the leave arrives while the group is forming — as when
        // a stopping process's two consumers leave together — and the next process's
        // consumers then never get partitions. Apache Kafka removes the member, and
        // `queue::kafka`'s tests check that a closed consumer has left its group.
        for (k, v) in vars.iter_mut() {
            if *k == "APP_ENV_KAFKA_GROUP_ID" {
                static SPAWNED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let n = SPAWNED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                *v = format!("{v}-{n}");
            }
        }
    }
    let options = Options { vars, ..options };
    let source_dir = options.source_dir.unwrap_or_else(examples_dir);
    let mut vars: HashMap<String, String> = HashMap::new();
    vars.insert(
        "APP_ENV_DATA_DIR".into(),
        data_dir.path().display().to_string(),
    );
    vars.insert(
        "APP_ENV_SOURCE_DIR".into(),
        source_dir.display().to_string(),
    );
    vars.insert("APP_ENV_HOST".into(), "127.0.0.1".into());
    vars.insert("APP_ENV_PORT".into(), "0".into());
    vars.insert("APP_ENV_POLICY_CACHE_TTL_MS".into(), "0".into());
    vars.insert("APP_ENV_SWEEP_INTERVAL_MS".into(), "60000".into());
    for (k, v) in options.vars {
        vars.insert(k.into(), v);
    }
    let config = Config::from_vars(&vars).expect("test config");
    // Captured logs have no queue: the guard holds nothing to flush.
    let _logs = ledger::telemetry::init_logging(
        config.log_format,
        "warn,ledger=info",
        ledger::telemetry::LogTarget::Captured,
    )
    .expect("test logging");
    // Create the dev key before the server so tokens can be signed at once.
    ledger::app::dev_key(&config).expect("dev key");
    // A shared database is migrated by `ledger migrate` before any process serves.
    ledger::app::migrate(&config).await.expect("migrations");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    if let Some(size) = options.send_buffer {
        // Accepted connections inherit the listener's buffer sizes (Linux).
        socket2::SockRef::from(&listener)
            .set_send_buffer_size(size)
            .expect("SO_SNDBUF");
    }
    let address = listener.local_addr().expect("address");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(ledger::run(config.clone(), listener, shutdown.clone()));
    let client = reqwest::Client::new();
    let base = format!("http://{address}");
    // Serving starts only after every backend was built (and migrations ran).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = client.get(format!("{base}/healthz")).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(Instant::now() < deadline, "service did not become ready");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let store: Arc<dyn JobStore> = ledger::app::open_store(&config)
        .await
        .expect("second store handle");
    TestApp {
        base,
        client,
        data_dir,
        config,
        store,
        shutdown,
        task: Some(task),
    }
}

/// A process of one role (`api` or `worker`) on the run's backends, with `extra` settings.
pub async fn spawn_role(role: &'static str, extra: &[(&'static str, &str)]) -> TestApp {
    let mut vars = vec![("APP_ENV_APPLICATION_ROLES", role.to_owned())];
    vars.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    spawn_with(Options {
        vars,
        ..Options::default()
    })
    .await
}

/// For processes a test starts on `data` itself ([`Served`]): their backends (in the
/// production run PostgreSQL, Kafka, S3, Redis), migrated, and the token of `ops`, an operator
/// of `merchant`, granted through the CLI's own building blocks.
pub async fn operator_on(
    data: &std::path::Path,
    merchant: &str,
) -> (Vec<(&'static str, String)>, String) {
    granted_on(data, "merchant_operator", merchant).await
}

/// [`operator_on`] with another role of `ops`.
pub async fn granted_on(
    data: &std::path::Path,
    role: &str,
    merchant: &str,
) -> (Vec<(&'static str, String)>, String) {
    let backends = backends_for(data).await;
    let mut vars: std::collections::HashMap<String, String> = backends
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    vars.insert("APP_ENV_DATA_DIR".to_owned(), data.display().to_string());
    let config = ledger::config::Config::from_vars(&vars).unwrap();
    ledger::app::migrate(&config).await.unwrap();
    let store = ledger::app::open_store(&config).await.unwrap();
    store
        .add_grant(&ledger::domain::Grant {
            subject: "ops".into(),
            role: role.into(),
            domain: merchant.into(),
        })
        .await
        .unwrap();
    let token = sign_token(&config, "ops");
    (backends, token)
}

/// A fresh source directory with one NDJSON merchant of `entries` entries.
pub fn source_with(merchant: &str, entries: u64, timezone: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    write_merchant(dir.path(), merchant, entries, timezone);
    dir
}

pub fn write_merchant(dir: &Path, merchant: &str, entries: u64, timezone: Option<&str>) {
    let mut spec = FixtureSpec::new(merchant, entries);
    spec.timezone = timezone;
    spec.currencies = vec![("EUR", 100_000), ("USD", 0)];
    let spec = spec.spread_until("2026-11-01T00:00:00Z".parse().expect("end"));
    fixture::write_ndjson(&dir.join(format!("{merchant}.ndjson")), &spec).expect("fixture");
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}/v1/api/ledger{path}", self.base)
    }

    /// A token for `sub` that this app accepts.
    pub fn token(&self, sub: &str) -> String {
        sign_token(&self.config, sub)
    }

    pub async fn grant(&self, sub: &str, role: &str, merchant: &str) {
        let grant = Grant {
            subject: sub.into(),
            role: role.into(),
            domain: merchant.into(),
        };
        self.store.add_grant(&grant).await.expect("grant");
    }

    pub async fn revoke(&self, sub: &str, role: &str, merchant: &str) {
        let grant = Grant {
            subject: sub.into(),
            role: role.into(),
            domain: merchant.into(),
        };
        self.store.remove_grant(&grant).await.expect("revoke");
    }

    /// A subject with `role` on `merchant`, and its token.
    pub async fn user(&self, sub: &str, role: &str, merchant: &str) -> String {
        self.grant(sub, role, merchant).await;
        self.token(sub)
    }

    pub async fn create(&self, token: &str, body: Value) -> reqwest::Response {
        self.client
            .post(self.url("/ledgers"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    pub async fn get(&self, token: &str, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    pub async fn post(&self, token: &str, path: &str) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    pub async fn delete(&self, token: &str, path: &str) -> reqwest::Response {
        self.client
            .delete(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    /// Creates a ledger and returns its JSON (asserting 202).
    pub async fn create_ok(&self, token: &str, body: Value) -> Value {
        let r = self.create(token, body).await;
        let status = r.status();
        let json: Value = r.json().await.expect("json");
        assert_eq!(status, 202, "create failed: {json}");
        json
    }

    /// Creates a ledger (asserting 202) and returns its id.
    pub async fn create_id(&self, token: &str, body: Value) -> String {
        let created = self.create_ok(token, body).await;
        created["id"].as_str().expect("an id").to_owned()
    }

    /// Creates a ledger and waits until it is COMPLETED (or fails the test after `secs`);
    /// returns its id and its JSON then.
    pub async fn completed(&self, token: &str, body: Value, secs: u64) -> (String, Value) {
        let id = self.create_id(token, body).await;
        let done = self.wait_for(token, &id, "COMPLETED", secs).await;
        (id, done)
    }

    /// The JSON body of `GET path`, whatever the status.
    pub async fn get_json(&self, token: &str, path: &str) -> Value {
        self.get(token, path).await.json().await.expect("json")
    }

    /// `GET /ledgers/{id}`'s JSON body, whatever the status.
    pub async fn ledger(&self, token: &str, id: impl std::fmt::Display) -> Value {
        self.get_json(token, &format!("/ledgers/{id}")).await
    }

    /// `GET /ledgers/{id}/download` (the current version).
    pub async fn download(&self, token: &str, id: impl std::fmt::Display) -> reqwest::Response {
        self.get(token, &format!("/ledgers/{id}/download")).await
    }

    /// `POST /ledgers/{id}/retry`.
    pub async fn retry(&self, token: &str, id: impl std::fmt::Display) -> reqwest::Response {
        self.post(token, &format!("/ledgers/{id}/retry")).await
    }

    /// `POST /ledgers/{id}/regenerate`.
    pub async fn regenerate(&self, token: &str, id: impl std::fmt::Display) -> reqwest::Response {
        self.post(token, &format!("/ledgers/{id}/regenerate")).await
    }

    /// Polls until the ledger reaches `status` (or fails the test after `secs`).
    pub async fn wait_for(&self, token: &str, id: &str, status: &str, secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let r = self.get(token, &format!("/ledgers/{id}")).await;
            let json: Value = r.json().await.expect("json");
            if json["status"] == status {
                return json;
            }
            assert!(
                Instant::now() < deadline,
                "ledger {id} did not reach {status} within {secs}s: {json}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A worker-only process on this app's data dir (so on its job store, queue and
    /// storage, whatever the run's backends), with `extra` settings.
    pub async fn worker_beside(&self, extra: &[(&'static str, &str)]) -> TestApp {
        let mut vars = vec![
            ("APP_ENV_APPLICATION_ROLES", "worker".to_owned()),
            (
                "APP_ENV_DATA_DIR",
                self.data_dir.path().display().to_string(),
            ),
        ];
        vars.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        spawn_with(Options {
            vars,
            ..Options::default()
        })
        .await
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// A STATEMENT/CSV request body.
pub fn statement(merchant: &str, period: &str) -> Value {
    json!({ "merchantId": merchant, "type": "STATEMENT", "period": period, "format": "CSV" })
}

/// A month that is still open now and stays open for at least the next hour, with the zone
/// it is cut in, derived from the clock so that a DRAFT stays a DRAFT on any date: the
/// current UTC month, or — in the last hour of a UTC month — the current month at UTC-12,
/// which ends twelve hours later.
pub fn open_month() -> (String, &'static str) {
    open_month_at(chrono::Utc::now())
}

/// [`open_month`] as seen at `now`.
pub fn open_month_at(now: chrono::DateTime<chrono::Utc>) -> (String, &'static str) {
    use chrono::Datelike;
    let soon = now + chrono::Duration::hours(1);
    if (soon.year(), soon.month()) == (now.year(), now.month()) {
        (now.format("%Y-%m").to_string(), "UTC")
    } else {
        // `Etc/GMT+12` is UTC-12 (POSIX signs are inverted).
        let local = now - chrono::Duration::hours(12);
        (local.format("%Y-%m").to_string(), "Etc/GMT+12")
    }
}

/// A STATEMENT/CSV request body for a period that is still open ([`open_month`]): its
/// ledger is a DRAFT whatever the date.
pub fn open_statement(merchant: &str) -> Value {
    let (period, timezone) = open_month();
    json!({ "merchantId": merchant, "type": "STATEMENT", "period": period, "format": "CSV",
            "timezone": timezone })
}

#[test]
fn the_open_month_is_open_for_another_hour_on_any_date() {
    for (now, period, zone) in [
        ("2026-11-20T12:00:00Z", "2026-11", "UTC"),
        ("2026-11-30T22:59:59Z", "2026-11", "UTC"),
        ("2026-11-30T23:00:00Z", "2026-11", "Etc/GMT+12"),
        ("2026-12-31T23:59:59Z", "2026-12", "Etc/GMT+12"),
        ("2027-01-01T00:00:00Z", "2027-01", "UTC"),
    ] {
        let at = now.parse::<chrono::DateTime<chrono::Utc>>().expect("time");
        assert_eq!(open_month_at(at), (period.to_owned(), zone), "at {now}");
        // The month really is open in that zone for at least another hour.
        let tz: chrono_tz::Tz = zone.parse().expect("zone");
        let local = (at + chrono::Duration::hours(1)).with_timezone(&tz);
        assert_eq!(local.format("%Y-%m").to_string(), period, "at {now}");
    }
}

/// Asserts the error body shape and code; returns the body.
pub async fn assert_error(r: reqwest::Response, status: u16, code: &str) -> Value {
    let got = r.status().as_u16();
    let text = r.text().await.expect("body");
    assert_eq!(got, status, "unexpected status, body: {text}");
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    assert!(body["error"]["requestId"].is_string(), "{body}");
    body
}

/// The audience of the tokens of the production run (a production deployment must name one).
pub const TEST_AUDIENCE: &str = "ledger-tests";

/// The identity provider of the production run: a production deployment refuses the local
/// dev key, so the suite signs with one ES256 key of its own, published as a JWKS file.
struct TestIdp {
    pem_file: PathBuf,
    jwks_file: PathBuf,
    _dir: tempfile::TempDir,
}

fn test_idp() -> &'static TestIdp {
    static IDP: std::sync::OnceLock<TestIdp> = std::sync::OnceLock::new();
    IDP.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let pem_file = dir.path().join("idp.pem");
        let (key, _) = ledger::auth::DevKey::load_or_create(&pem_file).expect("idp key");
        let jwks_file = dir.path().join("jwks.json");
        std::fs::write(
            &jwks_file,
            serde_json::to_vec(&key.jwks()).expect("jwks json"),
        )
        .expect("write jwks");
        TestIdp {
            pem_file,
            jwks_file,
            _dir: dir,
        }
    })
}

/// The suite's identity provider as settings (`APP_ENV_AUTH_JWKS_FILE`, `…_AUDIENCE`), for a
/// test that names production backends itself: they refuse the dev key.
pub fn identity() -> Vec<(&'static str, String)> {
    vec![
        (
            "APP_ENV_AUTH_JWKS_FILE",
            test_idp().jwks_file.display().to_string(),
        ),
        ("APP_ENV_AUTH_AUDIENCE", TEST_AUDIENCE.into()),
    ]
}

/// The signing key a service on `config` trusts, and its PKCS#8 PEM: the suite's identity
/// provider's when `config` trusts its JWKS file, else the data dir's dev key.
pub fn trusted_key(config: &Config) -> (ledger::auth::DevKey, String) {
    let idp = test_idp();
    let path = if config.auth_jwks_file.as_deref() == Some(idp.jwks_file.as_path()) {
        idp.pem_file.clone()
    } else {
        ledger::app::dev_key(config).expect("dev key");
        config.data_dir.join("dev-signing-key.pem")
    };
    let (key, _) = ledger::auth::DevKey::load_or_create(&path).expect("signing key");
    let pem = std::fs::read_to_string(&path).expect("signing key pem");
    (key, pem)
}

/// A token for `sub` that a service on `config` accepts (see [`trusted_key`]).
pub fn sign_token(config: &Config, sub: &str) -> String {
    let (key, _) = trusted_key(config);
    key.sign(
        sub,
        Duration::from_secs(3600),
        config.auth_issuer.as_deref(),
        config.auth_audience.as_deref(),
    )
    .expect("sign")
}

/// The production backends of the test suite, each test getting its own database, bucket,
/// topic and consumer group. The servers come from `scripts/run-tests.sh`. The database is
/// dropped with the last clone of these.
#[derive(Clone)]
pub struct Production {
    pub vars: Vec<(&'static str, String)>,
    _database: Arc<TestDatabase>,
}

fn test_env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// A PostgreSQL database made for one test, dropped with this value (its connections
/// closed by force), also when the test fails.
pub struct TestDatabase {
    /// The database's URL (no TLS parameters).
    pub url: String,
    /// A URL of the server to drop it from.
    admin_url: String,
    name: String,
}

impl TestDatabase {
    /// Makes database `name` on the server at `admin_url` (whose last path segment is a
    /// database to connect to); `url` is then the server's URL with `name` for that segment.
    async fn create(admin_url: &str, server_url: &str, name: String) -> TestDatabase {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(admin_url)
            .await
            .unwrap_or_else(|e| {
                panic!("no PostgreSQL at {admin_url} ({e}); scripts/run-tests.sh starts it")
            });
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create database");
        let base = server_url.rsplit_once('/').expect("database URL").0;
        TestDatabase {
            url: format!("{base}/{name}"),
            admin_url: admin_url.to_owned(),
            name,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        use sqlx::Connection;
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // A thread of its own: a drop may run inside a runtime or outside any.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await
                    .map_err(|e| e.to_string())?;
                admin.close().await.map_err(|e| e.to_string())
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("test database {} was not dropped: {e}", self.name);
        }
    }
}

/// A fresh PostgreSQL database, S3 bucket, Kafka topic and group, and the Redis bus.
pub async fn production() -> Production {
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let server = test_env(
        "LEDGER_TEST_DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    );
    let database = TestDatabase::create(&server, &server, format!("ledger_it_{unique}")).await;
    let s3 = test_env("LEDGER_TEST_S3_ENDPOINT", "http://127.0.0.1:19000");
    let bucket = format!("ledger-it-{unique}");
    let created = reqwest::Client::new()
        .put(format!("{s3}/{bucket}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("no S3 server at {s3} ({e}); scripts/run-tests.sh starts moto"));
    assert!(created.status().is_success());
    let key = ledger::crypto::generate_key_base64();
    Production {
        vars: vec![
            ("APP_ENV_DATABASE_URL", database.url.clone()),
            ("APP_ENV_QUEUE", "kafka".into()),
            (
                "APP_ENV_KAFKA_BROKERS",
                test_env("LEDGER_TEST_KAFKA_BROKERS", "127.0.0.1:19092"),
            ),
            ("APP_ENV_KAFKA_TOPIC", format!("ledger.it.{unique}")),
            ("APP_ENV_KAFKA_GROUP_ID", format!("ledger-it-{unique}")),
            ("APP_ENV_KAFKA_PARTITIONS", "3".into()),
            ("APP_ENV_STORAGE_URL", format!("s3://{bucket}/ledgers-it")),
            ("APP_ENV_S3_ENDPOINT", s3),
            ("APP_ENV_S3_ACCESS_KEY_ID", "test".into()),
            ("APP_ENV_S3_SECRET_ACCESS_KEY", "test".into()),
            ("APP_ENV_LEDGER_ENCRYPTION_KEY", key),
            ("APP_ENV_SIGNING_KEY", ledger::manifest::generate_key_pem()),
            (
                "APP_ENV_WEBSOCKET_REDIS_URL",
                test_env("LEDGER_TEST_REDIS_URL", "redis://127.0.0.1:6379"),
            ),
            // Tests run side by side on one Redis: each deployment its own channel, so one
            // test's events never reach another test's clients.
            (
                "APP_ENV_WEBSOCKET_REDIS_CHANNEL",
                format!("ledger.it.{unique}.events"),
            ),
        ]
        .into_iter()
        // Production backends refuse the dev key and want an audience.
        .chain(identity())
        .collect(),
        _database: Arc::new(database),
    }
}

impl Production {
    /// A service in this process on these backends plus `extra`.
    pub async fn spawn(&self, extra: &[(&'static str, &str)]) -> TestApp {
        spawn_with(Options {
            vars: self.with(extra),
            ..Options::default()
        })
        .await
    }

    /// An api-only process on these backends plus `extra`.
    pub async fn api(&self, extra: &[(&'static str, &str)]) -> TestApp {
        let mut vars = vec![("APP_ENV_APPLICATION_ROLES", "api")];
        vars.extend_from_slice(extra);
        self.spawn(&vars).await
    }

    /// A worker-only process on these backends plus `extra`.
    pub async fn worker(&self, extra: &[(&'static str, &str)]) -> TestApp {
        let mut vars = vec![("APP_ENV_APPLICATION_ROLES", "worker")];
        vars.extend_from_slice(extra);
        self.spawn(&vars).await
    }

    /// The production shape in two processes (of this test): an api-only one and a
    /// worker-only one on these backends.
    pub async fn api_and_worker(&self) -> (TestApp, TestApp) {
        (self.api(&[]).await, self.worker(&[]).await)
    }

    /// These backends plus `extra`.
    pub fn with(&self, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        let mut vars = self.vars.clone();
        for (k, v) in extra {
            vars.retain(|(name, _)| name != k);
            vars.push((k, (*v).to_owned()));
        }
        vars
    }
}

/// The `ledger` binary with a clean environment: only `PATH` and what the caller sets, so
/// nothing from the developer's shell changes what a test sees.
pub fn ledger_command() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ledger"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    // A run at another date (scripts/at-date.sh) moves the clock of every process it
    // starts, or tokens signed here would look expired (or not yet valid) there.
    for name in ["LD_PRELOAD", "FAKETIME", "FAKETIME_DONT_FAKE_MONOTONIC"] {
        if let Ok(value) = std::env::var(name) {
            cmd.env(name, value);
        }
    }
    cmd
}

/// A `ledger serve` process on its own port, its stdout (the logs) going to a file.
pub struct Served {
    pub child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    logs: tempfile::NamedTempFile,
}

impl Served {
    pub fn start(
        data: &std::path::Path,
        source: &std::path::Path,
        backends: &[(&'static str, String)],
        env: &[(&str, &str)],
    ) -> Served {
        let logs = tempfile::NamedTempFile::new().unwrap();
        let stdout = Stdio::from(logs.reopen().unwrap());
        Served::spawn(data, source, backends, env, logs, stdout, Stdio::null())
    }

    /// Like [`Served::start`], with stdout and stderr where the test says (a pipe it never
    /// reads, or one whose reader is gone) instead of the log file: `log_text` is then empty.
    pub fn start_with_output(
        data: &std::path::Path,
        source: &std::path::Path,
        backends: &[(&'static str, String)],
        env: &[(&str, &str)],
        stdout: Stdio,
        stderr: Stdio,
    ) -> Served {
        let logs = tempfile::NamedTempFile::new().unwrap();
        Served::spawn(data, source, backends, env, logs, stdout, stderr)
    }

    fn spawn(
        data: &std::path::Path,
        source: &std::path::Path,
        backends: &[(&'static str, String)],
        env: &[(&str, &str)],
        logs: tempfile::NamedTempFile,
        stdout: Stdio,
        stderr: Stdio,
    ) -> Served {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = crate::helpers::ledger_command()
            .arg("serve")
            .envs(backends.iter().map(|(k, v)| (*k, v.as_str())))
            .env("APP_ENV_DATA_DIR", data)
            .env("APP_ENV_SOURCE_DIR", source)
            .env("APP_ENV_HOST", "127.0.0.1")
            .env("APP_ENV_PORT", port.to_string())
            .env("APP_ENV_WORKER_CONCURRENCY", "1")
            .env("APP_ENV_KAFKA_CONSUMER_COUNT", "1")
            .env("APP_ENV_POLICY_CACHE_TTL_MS", "0")
            .envs(env.iter().copied())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("start ledger");
        Served {
            child,
            base: format!("http://127.0.0.1:{port}"),
            logs,
        }
    }

    pub async fn ready(&self, client: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = client.get(format!("{}/readyz", self.base)).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{} did not become ready:\n{}", self.base, self.log_text());
    }

    pub async fn ledger(&self, client: &reqwest::Client, token: &str, id: &str) -> Value {
        client
            .get(format!("{}/v1/api/ledger/ledgers/{id}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Creates a ledger (asserting 202) and returns its id.
    pub async fn create(&self, client: &reqwest::Client, token: &str, body: &Value) -> String {
        let r = client
            .post(format!("{}/v1/api/ledger/ledgers", self.base))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Polls until the ledger reaches `status` (or fails the test after `secs`, with the
    /// process's logs).
    pub async fn wait_for(
        &self,
        client: &reqwest::Client,
        token: &str,
        id: &str,
        status: &str,
        secs: u64,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let l = self.ledger(client, token, id).await;
            if l["status"] == status {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "ledger {id} not {status} within {secs}s: {l}\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "no exit within {within:?} of SIGTERM:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.logs.path()).unwrap_or_default()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The TLS-only PostgreSQL and Redis that `scripts/services.sh` starts, and the CAs: the one
/// that signed their certificate and another that signed nothing.
pub struct TlsServers {
    /// `postgres://postgres@localhost:PORT/postgres`, without TLS parameters.
    pub database_url: String,
    /// `rediss://localhost:PORT`.
    pub redis_url: String,
    pub ca_file: PathBuf,
    pub other_ca_file: PathBuf,
}

/// The TLS servers of this run; a missing one fails the test (never a skip).
pub fn tls_servers() -> TlsServers {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is unset: scripts/services.sh starts the TLS-only servers and sets it")
        })
    };
    TlsServers {
        database_url: var("LEDGER_TEST_TLS_DATABASE_URL"),
        redis_url: var("LEDGER_TEST_TLS_REDIS_URL"),
        ca_file: var("LEDGER_TEST_TLS_CA_FILE").into(),
        other_ca_file: var("LEDGER_TEST_TLS_OTHER_CA_FILE").into(),
    }
}

impl TlsServers {
    /// `url` with `sslmode` and, when given, `sslrootcert`.
    pub fn with_sslmode(url: &str, mode: &str, root_cert: Option<&Path>) -> String {
        match root_cert {
            Some(ca) => format!("{url}?sslmode={mode}&sslrootcert={}", ca.display()),
            None => format!("{url}?sslmode={mode}"),
        }
    }

    /// A fresh database on the TLS-only server (made over `verify-full`), dropped with the
    /// value returned; its `url` has no TLS parameters.
    pub async fn database(&self) -> TestDatabase {
        let admin_url = Self::with_sslmode(&self.database_url, "verify-full", Some(&self.ca_file));
        let name = format!("ledger_tls_{}", uuid::Uuid::new_v4().simple());
        TestDatabase::create(&admin_url, &self.database_url, name).await
    }
}

/// The claims of a JWT, read without verifying it (the test made it).
pub fn claims(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}
