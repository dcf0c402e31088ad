//! `ledger keys rewrap`: everything under the current root.
//!
//! Two passes, each resumable and idempotent (a pass finds its work in the store afresh,
//! and every change is a conditional update of what it read):
//!
//! 1. **Merchant keys** not wrapped by the current root are unwrapped with their root and
//!    wrapped with the current one, each row swapped only if it is still as read. No file
//!    is touched: format-2 objects name their merchant key, not the root.
//! 2. **Files sealed by a local master key directly** (format 1, from before the key
//!    hierarchy) are re-sealed, streaming, under their merchant's key into a new object
//!    beside the old one (`….k<key id>.enc`, the same name on every run, so an interrupted
//!    run's leftover is overwritten); the file's record is swapped to it only if it still
//!    names the old object, then the old object is removed. A file re-sealed by a racing
//!    run, or shredded meanwhile, keeps its record, and the new object is removed.
//!
//! Meanwhile the service serves: a download reads whichever object is recorded when it
//! starts (a local object removed under an open read stays readable to it), and workers
//! seal new files under merchant keys only.

use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::{KeyError, Keys};
use crate::crypto::Binding;
use crate::store::StoreError;
use crate::store::keys::{AuditRecord, KeyStore, Resealed, RootSealedFile, SealedSecrets};
use crate::vault::{Recorded, Vault};

/// Rows read a page.
const PAGE: u32 = 500;

/// Which pass a progress report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Re-wrapping merchant keys.
    Keys,
    /// Re-sealing format-1 files.
    Files,
}

/// Where a rewrap is.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// The pass.
    pub pass: Pass,
    /// Items of the pass handled (done, raced or failed).
    pub handled: u64,
    /// Items the pass had to do when it started.
    pub total: u64,
}

/// What a rewrap did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// The root everything is now under.
    pub root: String,
    /// Merchant keys re-wrapped.
    pub keys_rewrapped: u64,
    /// Merchant keys another process re-wrapped or shredded meanwhile.
    pub keys_raced: u64,
    /// Files re-sealed under their merchant key.
    pub files_resealed: u64,
    /// Files re-sealed by another run, or shredded, meanwhile.
    pub files_raced: u64,
    /// Plaintext bytes re-sealed.
    pub bytes_resealed: u64,
    /// Webhook secrets re-sealed under the service key.
    pub secrets_resealed: u64,
    /// Items that failed, with why (the run goes on; a later run retries them).
    pub failures: Vec<String>,
    /// How long it took.
    pub elapsed: Duration,
}

impl Summary {
    /// Whether everything that was to do is done.
    pub fn complete(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The lease one rewrap holds while it runs.
const LEASE: &str = "rewrap";
/// How long the lease lasts unless renewed (a run that died holds it up to this long).
pub const LEASE_TTL: Duration = Duration::from_secs(15);

/// Why a rewrap did not run, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RewrapError {
    /// Another rewrap runs (or died less than [`LEASE_TTL`] ago).
    #[error(
        "another `ledger keys rewrap` is running ({holder}); its lease ends at {until} if it \
         stopped: run again after that"
    )]
    Busy {
        /// Who holds the lease.
        holder: String,
        /// Until when.
        until: chrono::DateTime<Utc>,
    },
    /// The lease was lost while running (the store was unreachable too long).
    #[error("the rewrap lease was lost while running; run again")]
    LeaseLost,
    /// A key or the store failed.
    #[error(transparent)]
    Key(#[from] KeyError),
}

impl From<StoreError> for RewrapError {
    fn from(e: StoreError) -> Self {
        RewrapError::Key(KeyError::Store(e))
    }
}

/// Re-wraps every merchant key and re-seals every format-1 file under the current root,
/// `concurrency` files at a time, reporting progress to `progress`. One run at a time:
/// it holds a lease in the job store, renewed while it runs.
pub async fn rewrap(
    vault: &Vault,
    concurrency: usize,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Summary, RewrapError> {
    let store = vault.keys().store().clone();
    let holder = format!(
        "{} pid={} {}",
        actor(),
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    );
    let lease_end = || Utc::now() + chrono::Duration::from_std(LEASE_TTL).unwrap_or_default();
    if let Err((other, until)) = store
        .take_lease(LEASE, &holder, lease_end(), Utc::now())
        .await?
    {
        // A run on this machine whose process is gone (killed) holds it: taken over at once,
        // if its lease is still the one read, instead of waiting for it to end.
        let taken = died_here(&other)
            && store
                .take_lease(
                    LEASE,
                    &holder,
                    lease_end(),
                    until + chrono::Duration::milliseconds(1),
                )
                .await?
                .is_ok();
        if !taken {
            return Err(RewrapError::Busy {
                holder: other,
                until,
            });
        }
        tracing::warn!(target: "ledger::keys", previous = %other,
            "took over the rewrap lease of a run on this machine whose process is gone");
    }
    // Renewed every third of its time; a renewal refused means another run took it over
    // (this one stalled longer than the lease): this one stops.
    let lost = tokio_util::sync::CancellationToken::new();
    let renewal = {
        let store = store.clone();
        let holder = holder.clone();
        let lost = lost.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(LEASE_TTL / 3).await;
                match store
                    .take_lease(LEASE, &holder, lease_end(), Utc::now())
                    .await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => {
                        lost.cancel();
                        return;
                    }
                    Err(e) => tracing::warn!(target: "ledger::keys", error = %e,
                        "renewing the rewrap lease failed; trying again"),
                }
            }
        })
    };
    let result = tokio::select! {
        r = run(vault, &*store, concurrency, progress) => r,
        () = lost.cancelled() => Err(RewrapError::LeaseLost),
    };
    renewal.abort();
    if let Err(e) = store.release_lease(LEASE, &holder).await {
        tracing::warn!(target: "ledger::keys", error = %e, "releasing the rewrap lease failed; it ends by itself");
    }
    result
}

async fn run(
    vault: &Vault,
    store: &dyn KeyStore,
    concurrency: usize,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Summary, RewrapError> {
    let started = Instant::now();
    let keys = vault.keys();
    let root = keys.root().current_id();
    let mut summary = Summary {
        root: root.clone(),
        ..Summary::default()
    };
    let counts = store.key_counts().await?;

    // Pass 1: the service's keys, then merchant keys.
    for row in store.service_keys_not_under(&root).await? {
        let (to, wrapped) = keys
            .rewrapped_service(&row)
            .await
            .map_err(RewrapError::Key)?;
        if store
            .rewrap_service_key(&row.name, &row.root_key_id, &to, &wrapped, Utc::now())
            .await?
        {
            summary.keys_rewrapped += 1;
        } else {
            summary.keys_raced += 1;
        }
    }
    let total = counts
        .roots
        .iter()
        .filter(|r| r.root_key_id != root)
        .map(|r| r.merchant_keys)
        .sum();
    let mut handled = 0;
    progress(Progress {
        pass: Pass::Keys,
        handled,
        total,
    });
    let mut after: Option<String> = None;
    loop {
        let page = store.keys_not_under(&root, after.as_deref(), PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.key_id.clone());
        for row in page {
            match keys.rewrapped(&row).await {
                Ok((to, wrapped)) => {
                    if store
                        .rewrap_merchant_key(
                            &row.key_id,
                            &row.root_key_id,
                            &to,
                            &wrapped,
                            Utc::now(),
                        )
                        .await?
                    {
                        summary.keys_rewrapped += 1;
                    } else {
                        summary.keys_raced += 1;
                    }
                }
                Err(KeyError::Store(e)) => return Err(e.into()),
                Err(e) => summary.failures.push(format!(
                    "merchant key {} ({}): {e}",
                    row.key_id, row.merchant_id
                )),
            }
            handled += 1;
            progress(Progress {
                pass: Pass::Keys,
                handled,
                total,
            });
        }
    }

    // Pass 2: format-1 files; first the removals an earlier run did not finish.
    loop {
        let page = store.replaced_objects(PAGE).await?;
        if page.is_empty() {
            break;
        }
        let mut removed = 0;
        for (ledger, version, key) in page {
            match vault.storage().delete(&key).await {
                Ok(()) => {
                    store.forget_replaced(ledger, version, &key).await?;
                    removed += 1;
                }
                Err(e) => summary
                    .failures
                    .push(format!("removing the replaced {key}: {e}")),
            }
        }
        if removed == 0 {
            break;
        }
    }
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let run: &str = &run_id[..8];
    let total = counts.root_sealed_files;
    let mut handled = 0;
    progress(Progress {
        pass: Pass::Files,
        handled,
        total,
    });
    let mut after = None;
    loop {
        let page = store.root_sealed_files(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some((last.ledger_id, last.version));
        let mut results = futures::stream::iter(page.into_iter().map(|file| async move {
            let outcome = reseal(vault, store, &file, run).await;
            (file, outcome)
        }))
        .buffer_unordered(concurrency.max(1));
        while let Some((file, outcome)) = results.next().await {
            match outcome {
                Ok(Some(bytes)) => {
                    summary.files_resealed += 1;
                    summary.bytes_resealed += bytes;
                }
                Ok(None) => summary.files_raced += 1,
                Err(e) => summary.failures.push(format!(
                    "ledger {} version {} ({}): {e}",
                    file.ledger_id, file.version, file.object_key
                )),
            }
            handled += 1;
            progress(Progress {
                pass: Pass::Files,
                handled,
                total,
            });
        }
    }
    // Pass 3: webhook secrets sealed by a local master key directly, under the service key.
    let secrets = keys.secrets().await.map_err(RewrapError::Key)?;
    let mut after = None;
    loop {
        let page = store.sealed_secrets(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.webhook_id);
        for old in page {
            match resealed_secrets(&secrets, &old) {
                Ok(None) => {}
                Ok(Some(new)) => {
                    if store.reseal_secrets(&old, &new).await? {
                        summary.secrets_resealed += 1;
                    } else {
                        summary.keys_raced += 1;
                    }
                }
                Err(e) => summary
                    .failures
                    .push(format!("webhook {}'s secret: {e}", old.webhook_id)),
            }
        }
    }

    summary.elapsed = started.elapsed();
    store
        .record_audit(&AuditRecord {
            at: Utc::now(),
            actor: actor(),
            action: "ROOT_REWRAP".into(),
            merchant_id: None,
            key_id: Some(root),
            detail: format!(
                "{} key(s) re-wrapped, {} file(s) and {} webhook secret(s) re-sealed, {} raced, \
                 {} failed",
                summary.keys_rewrapped,
                summary.files_resealed,
                summary.secrets_resealed,
                summary.keys_raced + summary.files_raced,
                summary.failures.len()
            ),
        })
        .await?;
    Ok(summary)
}

/// Whether a lease `holder` (`user@host pid=N id`) is a process of this machine that no
/// longer runs.
fn died_here(holder: &str) -> bool {
    let mut parts = holder.split(' ');
    let (Some(who), Some(pid)) = (parts.next(), parts.next()) else {
        return false;
    };
    let Some(pid) = pid.strip_prefix("pid=").and_then(|p| p.parse::<u32>().ok()) else {
        return false;
    };
    let host = who.rsplit_once('@').map(|(_, h)| h).unwrap_or("");
    let here = actor();
    let here_host = here.rsplit_once('@').map(|(_, h)| h).unwrap_or("");
    !host.is_empty()
        && host == here_host
        && pid != std::process::id()
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Who runs an operator command: `$USER@host` as the process sees it.
pub fn actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    if host.is_empty() {
        user
    } else {
        format!("{user}@{host}")
    }
}

/// `old`'s secrets sealed under `secrets`' current key, or `None` when they are already.
fn resealed_secrets(
    secrets: &crate::crypto::Keyring,
    old: &SealedSecrets,
) -> Result<Option<SealedSecrets>, crate::crypto::CryptoError> {
    use crate::webhooks::signature::WebhookSecret;
    use base64::Engine as _;
    let sealed_by = |text: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()
            .and_then(|b| crate::crypto::peek_header(&b))
            .map(|(_, id)| id)
    };
    let current = secrets.current_id();
    let done = |text: &str| sealed_by(text).as_deref() == Some(current);
    if done(&old.secret) && old.previous.as_deref().is_none_or(done) {
        return Ok(None);
    }
    let reseal = |text: &str| {
        WebhookSecret::unseal(secrets, old.webhook_id, text)?.seal(secrets, old.webhook_id)
    };
    Ok(Some(SealedSecrets {
        webhook_id: old.webhook_id,
        secret: reseal(&old.secret)?,
        previous: old.previous.as_deref().map(reseal).transpose()?,
    }))
}

/// Where the re-sealed object of `file` under merchant key `key_id` goes: a name of this
/// run's own, so that two runs (one that lost its lease, say) never write, or remove, each
/// other's object. (A run killed between its upload and its swap leaves its object behind,
/// unrecorded, under the ledger's prefix.)
fn resealed_key(object_key: &str, key_id: &str, run: &str) -> String {
    let stem = object_key.strip_suffix(".enc").unwrap_or(object_key);
    format!("{stem}.k{key_id}.r{run}.enc")
}

/// Re-seals one file: the plaintext bytes re-sealed, or `None` when another process got
/// there first (or the file was shredded).
async fn reseal(
    vault: &Vault,
    store: &dyn KeyStore,
    file: &RootSealedFile,
    run: &str,
) -> Result<Option<u64>, String> {
    let keys: &Keys = vault.keys();
    let key = keys
        .sealing(&file.merchant_id, false)
        .await
        .map_err(|e| e.to_string())?;
    let key_id = key.current_id().to_owned();
    let binding = Binding {
        ledger_id: file.ledger_id.as_i64(),
        version: file.version,
    };
    let recorded = match &file.header_sha256 {
        Some(h) => Recorded::Header(h),
        None => Recorded::Content(&file.sha256),
    };
    let opened = vault
        .open(&file.object_key, binding, recorded, &file.merchant_id, None)
        .await
        .map_err(|e| format!("opening: {e}"))?;
    let new_key = resealed_key(&file.object_key, &key_id, run);
    let mut writer = vault
        .upload(&new_key)
        .await
        .map_err(|e| format!("starting {new_key}: {e}"))?;

    // Plaintext flows from the opened object to a sealer on a blocking thread, ciphertext
    // from the sealer to the upload: two bounded channels, so memory stays flat.
    let (plain_tx, mut plain_rx) = mpsc::channel::<Bytes>(4);
    let (cipher_tx, mut cipher_rx) = mpsc::channel::<Bytes>(4);
    let sealer = vault
        .sealer(&key, binding, cipher_tx)
        .map_err(|e| format!("sealing: {e}"))?;
    let seal = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut sealer = sealer;
        while let Some(chunk) = plain_rx.blocking_recv() {
            sealer.write_all(&chunk).map_err(|e| e.to_string())?;
        }
        sealer.finish().map_err(|e| e.to_string())
    });
    let pump = tokio::spawn(async move {
        let mut stream = opened.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| format!("reading: {e}"))?;
            if plain_tx.send(chunk).await.is_err() {
                return Err("the sealer stopped".to_owned());
            }
        }
        Ok::<(), String>(())
    });
    let mut upload = Ok(());
    while let Some(chunk) = cipher_rx.recv().await {
        if let Err(e) = writer.write(chunk).await {
            upload = Err(format!("uploading {new_key}: {e}"));
            break;
        }
    }
    drop(cipher_rx);
    let pumped = pump.await.map_err(|e| e.to_string()).and_then(|r| r);
    let sealed = seal.await.map_err(|e| e.to_string()).and_then(|r| r);
    let sealed = match (upload, pumped, sealed) {
        (Ok(()), Ok(()), Ok(sealed)) => sealed,
        (upload, pumped, sealed) => {
            writer.abort().await;
            return Err(upload
                .err()
                .or(pumped.err())
                .or(sealed.err())
                .unwrap_or_default());
        }
    };
    if sealed.sha256 != file.sha256 {
        writer.abort().await;
        return Err("the re-sealed plaintext does not match the recorded SHA-256".into());
    }
    writer
        .finish()
        .await
        .map_err(|e| format!("finishing {new_key}: {e}"))?;
    let swapped = store
        .swap_file_object(&Resealed {
            ledger_id: file.ledger_id,
            version: file.version,
            old_object_key: file.object_key.clone(),
            object_key: new_key.clone(),
            header_sha256: sealed.header_sha256,
            key_id,
        })
        .await
        .map_err(|e: StoreError| e.to_string())?;
    let storage = vault.storage();
    if swapped {
        // The old object is sealed by a root key about to be retired: removed now (a
        // download that read the old record meanwhile opens the new object instead), or
        // by the next run if this removal fails.
        storage
            .delete(&file.object_key)
            .await
            .map_err(|e| format!("removing the replaced {}: {e}", file.object_key))?;
        store
            .forget_replaced(file.ledger_id, file.version, &file.object_key)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Some(sealed.size))
    } else {
        storage
            .delete(&new_key)
            .await
            .map_err(|e| format!("removing the unused {new_key}: {e}"))?;
        Ok(None)
    }
}
