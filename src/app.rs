//! The composition root: opens each port from its settings (`store::open`, `queue::open`,
//! `storage::open`, `notify::open`, `source::open`), adds the keys and the token verifier,
//! wires them into the api and worker roles with one readiness check per port, and runs
//! until shutdown. Which adapter stands behind a port is the port's own `open`'s business.

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::health::Check;
use crate::api::{self, AppState, OpsState};
use crate::auth::{Authorizer, DevKey, PolicyCacheConfig, StoreGrants, Verifier, VerifierOptions};
use crate::config::{Config, DatabaseKind};
use crate::crypto::{Keyring, MasterKey};
use crate::domain::Snowflake;
use crate::keys::{Keys, Root};
use crate::manifest::ManifestSigner;
use crate::notify::Notifier;
use crate::storage::ObjectStorage;
use crate::store::JobStore;
use crate::store::node_ids::NodeId;
use crate::webhooks::network::{DeliveryClient, Reach};
use crate::worker::batches::{BatchRunner, BatchSettings};
use crate::worker::webhooks::{Deliverer, DeliverySettings};
use crate::worker::{Worker, WorkerSettings};

/// Where the embedded dev signing key lives inside the data dir.
pub const DEV_KEY_FILE: &str = "dev-signing-key.pem";
/// Where the embedded master key lives inside the data dir.
pub const MASTER_KEY_FILE: &str = "encryption.key";
/// Where the embedded manifest signing key lives inside the data dir.
pub const MANIFEST_KEY_FILE: &str = "manifest-signing-key.pem";

/// Opens the job store the configuration names.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn JobStore>> {
    crate::store::open(&config.database).await
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
    crate::storage::open(&config.storage)
}

/// The local master keys: the configured ones, or (embedded default) a key in the data dir;
/// with a KMS root, the old local keys only (none: `None`).
pub fn keyring(config: &Config) -> anyhow::Result<Option<Keyring>> {
    if config.kms.is_some() {
        let mut old = config
            .encryption_keys_old
            .iter()
            .enumerate()
            .map(|(i, k)| {
                MasterKey::from_base64(k.expose()).map_err(|e| {
                    anyhow::anyhow!("APP_ENV_LEDGER_ENCRYPTION_KEYS_OLD (key {}): {e}", i + 1)
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if old.is_empty() {
            return Ok(None);
        }
        let first = old.remove(0);
        return Ok(Some(Keyring::new(first, old)));
    }
    local_keyring(config).map(Some)
}

fn local_keyring(config: &Config) -> anyhow::Result<Keyring> {
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

/// The job store, keys and object storage of an operator command (`ledger keys …`,
/// `ledger merchant shred`).
pub async fn operator_vault(config: &Config) -> anyhow::Result<crate::vault::Vault> {
    let store = open_store(config).await?;
    prepare_store(config, &*store).await?;
    let keys = keys(config, keyring(config)?, store).await?;
    let storage = open_storage(config)?;
    Ok(crate::vault::Vault::new(storage, keys))
}

/// The key hierarchy's root and the merchant keys in `store` (SPEC §15): a KMS key
/// (checked to exist and be enabled), or the local master keys.
pub async fn keys(
    config: &Config,
    local: Option<Keyring>,
    store: Arc<dyn JobStore>,
) -> anyhow::Result<Keys> {
    let root = match (&config.kms, local) {
        (Some(kms), local) => {
            let client = crate::keys::kms::KmsClient::new(&kms.settings)
                .map_err(|e| anyhow::anyhow!("APP_ENV_KMS_*: {e}"))?;
            let arn = match client.describe_key(&kms.key_id).await {
                Ok(arn) => arn,
                // A key ARN is the root's id as it is: a KMS that cannot be reached now
                // makes what needs it wait (503 KEY_UNAVAILABLE, postponed webhooks), as
                // when it goes down later, instead of keeping the service down; the
                // process is not ready until KMS answers ([`Keys::reach_root`]).
                Err(crate::keys::kms::KmsError::Unavailable(e)) if is_key_arn(&kms.key_id) => {
                    tracing::warn!(target: "ledger::keys", keyId = %kms.key_id, error = %e,
                        "KMS is unreachable at start-up; starting with the configured key ARN, \
                         not ready until KMS answers, and what needs the key waits for it");
                    let root = Root::Kms {
                        client,
                        arn: kms.key_id.clone(),
                        local,
                    };
                    return Ok(Keys::unreached(
                        root,
                        store,
                        format!("KMS unreachable at start-up: {e}"),
                    ));
                }
                Err(e) => anyhow::bail!(
                    "APP_ENV_LEDGER_KMS_KEY_ID ({}): {e}{}",
                    kms.key_id,
                    if is_key_arn(&kms.key_id) {
                        ""
                    } else {
                        " (with the key's ARN the service also starts while KMS is unreachable)"
                    }
                ),
            };
            Root::Kms { client, arn, local }
        }
        (None, Some(local)) => Root::Local(local),
        (None, None) => {
            anyhow::bail!("no root key: APP_ENV_LEDGER_ENCRYPTION_KEY or APP_ENV_LEDGER_KMS_KEY_ID")
        }
    };
    Ok(Keys::new(root, store))
}

/// `arn:<partition>:kms:<region>:<account>:key/<id>`: a key's own ARN, which names the
/// root without asking KMS (an alias ARN names whatever key the alias points to).
fn is_key_arn(id: &str) -> bool {
    let parts: Vec<&str> = id.splitn(6, ':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && !parts[1].is_empty()
        && parts[2] == "kms"
        && !parts[3].is_empty()
        && parts[4].len() == 12
        && parts[4].bytes().all(|b| b.is_ascii_digit())
        && parts[5].strip_prefix("key/").is_some_and(|k| !k.is_empty())
}

/// The manifest signer: the configured key, or (embedded default) a key in the data dir.
pub fn manifest_signer(config: &Config) -> anyhow::Result<Arc<ManifestSigner>> {
    let retired = config.signing_keys_old.as_deref().unwrap_or("");
    let issuer = &config.signing_issuer;
    let signer = match &config.signing_key {
        Some(key) => ManifestSigner::from_pem(key.expose(), retired, issuer)
            .map_err(|e| anyhow::anyhow!("APP_ENV_SIGNING_KEY: {e}"))?,
        None => {
            let path = config.data_dir.join(MANIFEST_KEY_FILE);
            let (secret, created) = crate::crypto::ec::load_or_create(
                &path,
                "manifest signing key",
                crate::crypto::ec::Exposed::Refuse,
            )
            .map_err(|e| anyhow::anyhow!(e))?;
            let retired = crate::manifest::parse_retired(retired)
                .map_err(|e| anyhow::anyhow!("APP_ENV_SIGNING_KEYS_OLD: {e}"))?;
            let signer = ManifestSigner::new(&secret, issuer, &retired);
            if created {
                tracing::warn!(path = %path.display(), kid = signer.kid(),
                    "APP_ENV_SIGNING_KEY is unset: generated a manifest signing key in the data dir; manifests verify only against this key");
            }
            signer
        }
    };
    Ok(Arc::new(signer))
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
    let keys = keys(&config, keyring(&config)?, store.clone()).await?;
    // The webhook secrets' key is made (or unwrapped) now when it can be; when its root is
    // unavailable the service still starts: what needs it answers 503 KEY_UNAVAILABLE (or
    // postpones a delivery) and it is tried again on the next use.
    if let Err(e) = keys.secrets().await {
        tracing::error!(target: "ledger::keys", error = %e, "the key of webhook secrets is unavailable; webhooks wait for it");
    }
    let signer = manifest_signer(&config)?;
    let storage = open_storage(&config)?;
    let queue = crate::queue::open(&config.queue, store.clone(), shutdown.clone()).await?;
    let bus = crate::notify::open(&config.events, shutdown.clone())?;
    let notifier = Notifier::new(bus.clone());
    let mut checks = vec![
        Check::new("store", store.clone()),
        Check::new("queue", queue.clone()),
        Check::new("storage", storage.clone()),
        Check::new("events", bus),
    ];
    if matches!(keys.root(), Root::Kms { .. }) {
        // Fails only until KMS first answered (a process started while it was down).
        checks.push(Check::new("kms", Arc::new(keys.clone())));
        if !keys.root_reached() {
            tokio::spawn(keys.clone().reach_root(shutdown.clone()));
        }
    }
    // Expired unwrapped keys and key rows leave memory even when nothing looks them up.
    tokio::spawn(crate::keys::purge(keys.clone(), shutdown.clone()));

    let node = NodeId::acquire(config.node_id, store.clone(), shutdown.clone()).await?;
    // One generator per process: the api's ledgers and batches and the worker's batch
    // members take ids from it, so they never collide.
    let ids = Arc::new(Snowflake::new(node.id)?);
    let authz = if config.roles.api || config.roles.worker {
        let grants = Arc::new(StoreGrants(store.clone()));
        Some(Arc::new(match &config.redis {
            None => Authorizer::new(grants, config.policy_cache_ttl),
            Some(server) => Authorizer::with_redis_config(
                grants,
                config.policy_cache_ttl,
                server,
                &PolicyCacheConfig::default(),
                shutdown.clone(),
            )
            .map_err(|e| anyhow::anyhow!("APP_ENV_REDIS_URL: {e}"))?,
        }))
    } else {
        None
    };
    let api_state = match (&authz, config.roles.api) {
        (Some(authz), true) => {
            let verifier = Arc::new(verifier(&config, &shutdown).await?);
            checks.push(Check::new("auth", verifier.clone()));
            Some(AppState {
                store: store.clone(),
                queue: queue.clone(),
                storage: storage.clone(),
                notifier: notifier.clone(),
                keys: keys.clone(),
                manifest_keys: Arc::new(signer.jwks().clone()),
                verifier,
                authz: authz.clone(),
                ids: ids.clone(),
                shutdown: shutdown.clone(),
                ws: api::ws::WsSettings {
                    ping_interval: config.ws_ping_interval,
                    token_leeway: config.auth_leeway,
                    replay_max_age: config.ws_replay_max_age,
                    max_sockets_per_subject: config.ws_max_sockets_per_subject,
                },
                ws_sockets: api::ws::SocketCounts::default(),
                ws_hub: api::ws::Hub::start(notifier.bus().as_ref(), shutdown.clone()),
                webhook_reach: Reach {
                    allow_private: config.webhook_allow_private,
                },
                dev_tokens: config.auth_jwks_url.is_none() && config.auth_jwks_file.is_none(),
            })
        }
        _ => None,
    };

    let (worker, batches, deliverer) = match (&authz, config.roles.worker) {
        (Some(authz), true) => {
            let source = crate::source::open(&config.source)?;
            checks.push(Check::new("source", source.clone()));
            let batches = BatchRunner {
                store: store.clone(),
                queue: queue.clone(),
                source: source.clone(),
                notifier: notifier.clone(),
                authz: authz.clone(),
                ids: ids.clone(),
                holder: uuid::Uuid::new_v4().to_string(),
                settings: BatchSettings::default(),
            };
            let deliverer = Deliverer {
                store: store.clone(),
                authz: authz.clone(),
                keys: keys.clone(),
                client: Arc::new(
                    DeliveryClient::new(Reach {
                        allow_private: config.webhook_allow_private,
                    })
                    .context("building the webhook HTTP client")?,
                ),
                settings: Arc::new(DeliverySettings::new(
                    config.webhook_retry_schedule.clone(),
                    config.webhook_concurrency,
                )),
            };
            let worker = Worker {
                store: store.clone(),
                queue,
                storage,
                source,
                notifier,
                keys,
                signer,
                settings: WorkerSettings {
                    job_timeout: config.job_timeout,
                    sweep_interval: config.sweep_interval,
                    max_attempts: config.max_attempts,
                    concurrency: config.worker_consumers(),
                    shutdown_timeout: config.shutdown_timeout,
                    job_deadline: config.job_deadline,
                },
            };
            (Some(worker), Some(batches), Some(deliverer))
        }
        _ => (None, None, None),
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
        sourceDir = %config.source.dir.display(),
        dataDir = %config.data_dir.display(),
        "ledger started"
    );

    let worker_task = worker.map(|w| {
        let stop = shutdown.clone();
        tokio::spawn(async move { w.run(stop).await })
    });
    let batch_task = batches.map(|b| {
        let stop = shutdown.clone();
        tokio::spawn(async move { b.run(stop).await })
    });
    let delivery_task = deliverer.map(|d| {
        let stop = shutdown.clone();
        tokio::spawn(async move { d.run(stop).await })
    });
    // Which root key protects how many files: counted by worker processes (the role every
    // deployment runs), the gauge of each the same.
    if config.roles.worker {
        tokio::spawn(crate::keys::gauges(
            store.clone(),
            crate::keys::GAUGE_EVERY,
            shutdown.clone(),
        ));
        // Opt-in retention (APP_ENV_RETENTION_DAYS): unset, nothing is ever removed.
        if let Some(keep) = config.retention {
            tokio::spawn(crate::keys::retention::run(
                store.clone(),
                open_storage(&config)?,
                keep,
                shutdown.clone(),
            ));
        }
    }
    // Small writes leave at once: a WebSocket frame must not wait for the ACK of the one
    // before it (Nagle's algorithm against delayed ACKs adds up to 40 ms a frame).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "setting TCP_NODELAY on a connection failed");
        }
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
    if let Some(task) = batch_task
        && let Err(e) = task.await
    {
        tracing::error!(error = %e, "the batch runner panicked");
    }
    if let Some(task) = delivery_task
        && let Err(e) = task.await
    {
        tracing::error!(error = %e, "the webhook deliverer panicked");
    }
    node.release().await;
    served.context("serving HTTP")?;
    tracing::info!("ledger stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::is_key_arn;

    #[test]
    fn only_a_key_arn_names_the_root_without_asking_kms() {
        assert!(is_key_arn(
            "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
        ));
        assert!(is_key_arn("arn:aws-cn:kms:cn-north-1:111122223333:key/k"));
        for other in [
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            "alias/ledger-root",
            "arn:aws:kms:us-east-1:111122223333:alias/ledger-root",
            "arn:aws:kms:us-east-1:111122223333:key/",
            "arn:aws:s3:::bucket/key/x",
            "arn:aws:kms:us-east-1",
            "arn:aws:kms:::key/k",
            "arn:aws:kms:us-east-1:12345:key/k",
        ] {
            assert!(!is_key_arn(other), "{other}");
        }
    }
}
