//! The composition root: builds the adapters the configuration names, wires them into the
//! api and worker roles, and runs until shutdown. The only place that knows which adapter
//! stands behind which port.

use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::health::Check;
use crate::api::{self, AppState, OpsState};
use crate::auth::{Authorizer, DevKey, GrantSource, PolicyCacheConfig, Verifier, VerifierOptions};
use crate::config::{Config, DatabaseKind, QueueKind, StorageKind};
use crate::crypto::{Keyring, MasterKey};
use crate::domain::{Grant, Snowflake};
use crate::notify::redis::RedisBus;
use crate::notify::{EventBus, InProcessBus, Notifier};
use crate::queue::Queue;
use crate::queue::db::DbQueue;
use crate::queue::kafka::KafkaQueue;
use crate::source::Source;
use crate::source::file::FileSource;
use crate::source::http::{HttpSource, HttpSourceOptions};
use crate::storage::{ObjectStorage, ObjectStoreStorage};
use crate::store::JobStore;
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;
use crate::worker::{Worker, WorkerSettings};

/// Where the embedded dev signing key lives inside the data dir.
pub const DEV_KEY_FILE: &str = "dev-signing-key.pem";
/// Where the embedded master key lives inside the data dir.
pub const MASTER_KEY_FILE: &str = "encryption.key";

/// Opens the job store the configuration names.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn JobStore>> {
    Ok(match &config.database {
        DatabaseKind::Sqlite(path) => Arc::new(
            SqliteStore::open(path)
                .await
                .with_context(|| format!("opening the job store at {}", path.display()))?,
        ),
        DatabaseKind::Postgres(url) => Arc::new(
            PostgresStore::connect(url.expose())
                .await
                .context("connecting to APP_ENV_DATABASE_URL")?,
        ),
    })
}

/// Opens the store and applies pending migrations (`ledger migrate`); returns their names.
pub async fn migrate(config: &Config) -> anyhow::Result<Vec<String>> {
    let store = open_store(config).await?;
    let pending = store.pending_migrations().await?;
    store.migrate().await?;
    Ok(pending)
}

/// Makes the store ready for `serve` and `policy`: the embedded SQLite file migrates itself
/// (zero set-up); a shared database with pending migrations is refused, naming them — only
/// `ledger migrate` changes its schema, so replicas (or an operator's newer CLI) of another
/// version never change it behind a rollout.
pub async fn prepare_store(config: &Config, store: &dyn JobStore) -> anyhow::Result<()> {
    match config.database {
        DatabaseKind::Sqlite(_) => store.migrate().await.context("migrating the job store"),
        DatabaseKind::Postgres(_) => {
            let pending = store.pending_migrations().await?;
            if pending.is_empty() {
                Ok(())
            } else {
                anyhow::bail!(
                    "the database has pending migrations ({}); run `ledger migrate` (or RUN_MODE=migrate) first",
                    pending.join(", ")
                )
            }
        }
    }
}

/// Opens the object storage the configuration names.
pub fn open_storage(config: &Config) -> anyhow::Result<Arc<dyn ObjectStorage>> {
    let storage = match &config.storage {
        StorageKind::Local(dir) => ObjectStoreStorage::local(dir),
        StorageKind::S3(settings) => ObjectStoreStorage::s3(settings),
    };
    Ok(Arc::new(storage.context("APP_ENV_STORAGE_URL")?))
}

/// The master keys: the configured ones, or (embedded default) a key in the data dir.
pub fn keyring(config: &Config) -> anyhow::Result<Keyring> {
    match &config.encryption_key {
        Some(current) => {
            let current = MasterKey::from_base64(current.expose())
                .map_err(|e| anyhow::anyhow!("APP_ENV_LEDGER_ENCRYPTION_KEY: {e}"))?;
            let old = config
                .encryption_keys_old
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    MasterKey::from_base64(k.expose()).map_err(|e| {
                        anyhow::anyhow!("APP_ENV_LEDGER_ENCRYPTION_KEYS_OLD (key {}): {e}", i + 1)
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Ok(Keyring::new(current, old))
        }
        None => {
            let path = config.data_dir.join(MASTER_KEY_FILE);
            let (keyring, created) = Keyring::load_or_generate(&path)
                .with_context(|| format!("loading the master key {}", path.display()))?;
            if created {
                tracing::warn!(path = %path.display(), keyId = keyring.current_id(),
                    "APP_ENV_LEDGER_ENCRYPTION_KEY is unset: generated a master key in the data dir; back it up, or files become unreadable");
            }
            Ok(keyring)
        }
    }
}

/// The embedded dev signing key (created on first use).
pub fn dev_key(config: &Config) -> anyhow::Result<DevKey> {
    let path = config.data_dir.join(DEV_KEY_FILE);
    let (key, created) = DevKey::load_or_create(&path)
        .with_context(|| format!("loading the dev signing key {}", path.display()))?;
    if created {
        tracing::warn!(path = %path.display(), kid = key.kid(),
            "created a local ES256 dev signing key: tokens from `ledger token` are accepted; set APP_ENV_AUTH_JWKS_URL in production");
    }
    Ok(key)
}

async fn verifier(config: &Config, shutdown: &CancellationToken) -> anyhow::Result<Verifier> {
    let opts = VerifierOptions {
        leeway: config.auth_leeway,
        max_key_age: config.auth_jwks_max_age,
        ..VerifierOptions::new(config.auth_issuer.clone(), config.auth_audience.clone())
    };
    if let Some(url) = &config.auth_jwks_url {
        return Verifier::from_url(url.as_str(), opts, shutdown)
            .await
            .context("APP_ENV_AUTH_JWKS_URL");
    }
    if let Some(file) = &config.auth_jwks_file {
        return Verifier::from_file(file, opts).context("APP_ENV_AUTH_JWKS_FILE");
    }
    let key = dev_key(config)?;
    tracing::warn!(
        "no APP_ENV_AUTH_JWKS_URL or APP_ENV_AUTH_JWKS_FILE: verifying tokens with the local dev key"
    );
    Verifier::from_jwks(&key.jwks(), opts).context("dev key JWKS")
}

/// Policy grants read from the job store.
pub struct StoreGrants(pub Arc<dyn JobStore>);

#[async_trait]
impl GrantSource for StoreGrants {
    async fn list_grants(&self) -> Result<Vec<Grant>, String> {
        self.0.list_grants().await.map_err(|e| e.to_string())
    }
    async fn policy_revision(&self) -> Result<crate::domain::PolicyRevision, String> {
        self.0.policy_revision().await.map_err(|e| e.to_string())
    }
}

/// Runs the configured roles on `listener` until `shutdown` fires, then drains.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let problems = config.serving_problems();
    if !problems.is_empty() {
        return Err(crate::config::ConfigErrors(problems).into());
    }
    let store = open_store(&config).await?;
    prepare_store(&config, &*store).await?;
    let keyring = keyring(&config)?;
    let storage = open_storage(&config)?;
    let (queue, consumers): (Arc<dyn Queue>, usize) = match &config.queue {
        QueueKind::Db => (
            Arc::new(DbQueue::new(store.clone())),
            config.worker_concurrency,
        ),
        QueueKind::Kafka(settings) => (
            Arc::new(KafkaQueue::connect(settings.clone(), shutdown.clone()).await?),
            settings.consumer_count,
        ),
    };
    let bus: Arc<dyn EventBus> = match &config.websocket_redis {
        None => Arc::new(InProcessBus::default()),
        Some(server) => Arc::new(
            RedisBus::start(server, &config.websocket_redis_channel, shutdown.clone())
                .map_err(|e| anyhow::anyhow!("APP_ENV_WEBSOCKET_REDIS_URL: {e}"))?,
        ),
    };
    let notifier = Notifier::new(bus.clone());

    let mut checks = vec![
        check_store(store.clone()),
        Check::new("queue", {
            let q = queue.clone();
            move || {
                let q = q.clone();
                async move { q.ready().await.map_err(|e| e.to_string()) }
            }
        }),
        Check::new("storage", {
            let s = storage.clone();
            move || {
                let s = s.clone();
                async move { s.ready().await.map_err(|e| e.to_string()) }
            }
        }),
        Check::new("events", {
            let b = bus.clone();
            move || {
                let b = b.clone();
                async move { b.ready().await.map_err(|e| e.to_string()) }
            }
        }),
    ];

    let node = NodeId::acquire(&config, store.clone(), shutdown.clone()).await?;
    let api_state = if config.roles.api {
        let verifier = Arc::new(verifier(&config, &shutdown).await?);
        let grants = Arc::new(StoreGrants(store.clone()));
        let authz = Arc::new(match &config.redis {
            None => Authorizer::new(grants, config.policy_cache_ttl),
            Some(server) => Authorizer::with_redis_config(
                grants,
                config.policy_cache_ttl,
                server,
                &PolicyCacheConfig::default(),
                shutdown.clone(),
            )
            .map_err(|e| anyhow::anyhow!("APP_ENV_REDIS_URL: {e}"))?,
        });
        checks.push(Check::new("auth", {
            let v = verifier.clone();
            move || {
                let v = v.clone();
                async move { v.ready().await.map_err(|e| e.to_string()) }
            }
        }));
        Some(AppState {
            store: store.clone(),
            queue: queue.clone(),
            storage: storage.clone(),
            notifier: notifier.clone(),
            keyring: keyring.clone(),
            verifier,
            authz,
            ids: Arc::new(Snowflake::new(node.id)?),
            shutdown: shutdown.clone(),
            ws: api::ws::WsSettings {
                ping_interval: config.ws_ping_interval,
                token_leeway: config.auth_leeway,
                replay_max_age: config.ws_replay_max_age,
                max_sockets_per_subject: config.ws_max_sockets_per_subject,
            },
            ws_sockets: api::ws::SocketCounts::default(),
        })
    } else {
        None
    };

    let worker = if config.roles.worker {
        let source: Arc<dyn Source> = match &config.source_url {
            None => Arc::new(FileSource::new(config.source_dir.clone())),
            Some(url) => Arc::new(
                HttpSource::new(
                    url.0.clone(),
                    config.source_token.clone(),
                    HttpSourceOptions {
                        max_pages: config.source_max_pages,
                        ..HttpSourceOptions::default()
                    },
                )
                .map_err(|e| anyhow::anyhow!("APP_ENV_SOURCE_URL: {e}"))?,
            ),
        };
        checks.push(Check::new("source", {
            let s = source.clone();
            move || {
                let s = s.clone();
                async move { s.ready().await.map_err(|e| e.to_string()) }
            }
        }));
        Some(Worker {
            store: store.clone(),
            queue: queue.clone(),
            storage: storage.clone(),
            source,
            notifier: notifier.clone(),
            keyring: keyring.clone(),
            settings: WorkerSettings {
                job_timeout: config.job_timeout,
                sweep_interval: config.sweep_interval,
                max_attempts: config.max_attempts,
                concurrency: consumers,
                shutdown_timeout: config.shutdown_timeout,
                job_deadline: config.job_deadline,
            },
        })
    } else {
        None
    };

    let ops = OpsState {
        checks: Arc::new(checks),
        metrics: crate::telemetry::metrics_handle(),
    };
    let app = api::router(api_state, ops);
    let address = listener.local_addr()?;
    tracing::info!(
        address = %address,
        api = config.roles.api,
        worker = config.roles.worker,
        sourceDir = %config.source_dir.display(),
        dataDir = %config.data_dir.display(),
        "ledger started"
    );

    let worker_task = worker.map(|w| {
        let stop = shutdown.clone();
        tokio::spawn(async move { w.run(stop).await })
    });
    let server = axum::serve(listener, app).with_graceful_shutdown({
        let stop = shutdown.clone();
        async move { stop.cancelled().await }
    });
    let served = server.await;
    if let Some(task) = worker_task {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "the worker stopped with an error"),
            Err(e) => tracing::error!(error = %e, "the worker panicked"),
        }
    }
    node.release().await;
    served.context("serving HTTP")?;
    tracing::info!("ledger stopped");
    Ok(())
}

/// How long a leased node id stays ours without renewal.
const NODE_LEASE: std::time::Duration = std::time::Duration::from_secs(60);

/// The Snowflake node id of this process: configured, or leased from the store so replicas
/// never share one. A lease is renewed in the background and given back on shutdown.
struct NodeId {
    id: u16,
    lease: Option<(Arc<dyn JobStore>, String)>,
}

impl NodeId {
    async fn acquire(
        config: &Config,
        store: Arc<dyn JobStore>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        if let Some(id) = config.node_id {
            return Ok(Self { id, lease: None });
        }
        let holder = uuid::Uuid::new_v4().to_string();
        let until = |now: chrono::DateTime<chrono::Utc>| {
            now + chrono::Duration::from_std(NODE_LEASE).unwrap_or_default()
        };
        let now = chrono::Utc::now();
        let id = store
            .lease_node_id(&holder, now, until(now))
            .await?
            .context("all 1024 Snowflake node ids are leased; set APP_ENV_NODE_ID")?;
        tracing::info!(nodeId = id, "leased a Snowflake node id");
        let renewing = (store.clone(), holder.clone());
        tokio::spawn(async move {
            let (store, holder) = renewing;
            let mut tick = tokio::time::interval(NODE_LEASE / 3);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                match store
                    .renew_node_id(id, &holder, until(chrono::Utc::now()))
                    .await
                {
                    Ok(true) => {}
                    // Ids stay unique anyway (a duplicate insert is retried with a fresh id),
                    // but an operator should know the lease was lost.
                    Ok(false) => {
                        tracing::error!(nodeId = id, "the Snowflake node id lease was lost")
                    }
                    Err(e) => {
                        tracing::warn!(nodeId = id, error = %e, "renewing the node id lease failed")
                    }
                }
            }
        });
        Ok(Self {
            id,
            lease: Some((store, holder)),
        })
    }

    async fn release(&self) {
        if let Some((store, holder)) = &self.lease
            && let Err(e) = store.release_node_id(self.id, holder).await
        {
            tracing::warn!(nodeId = self.id, error = %e, "releasing the node id failed; it expires");
        }
    }
}

fn check_store(store: Arc<dyn JobStore>) -> Check {
    Check::new("store", move || {
        let store = store.clone();
        async move { store.ping().await.map_err(|e| e.to_string()) }
    })
}
