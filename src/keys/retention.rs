//! Opt-in retention (`APP_ENV_RETENTION_DAYS`, SPEC §15): once a FINAL ledger's completion
//! is older than the retention, every object under `ledgers/{merchantId}/{ledgerId}/` (all
//! versions and attempts) is removed and its files are marked shredded (`RETENTION`); the
//! ledger rows and manifests stay. Without the setting nothing is ever removed.
//!
//! A pass marks a ledger's files first (downloads answer 410 from then on), then removes its
//! objects, then records them removed: a pass that stops in between is finished by the next
//! one, which finds the ledger again (its objects not recorded removed).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::domain::LedgerId;
use crate::storage::ObjectStorage;
use crate::store::StoreError;
use crate::store::keys::{AuditRecord, KeyStore};

/// How often workers look for expired ledgers.
pub const EVERY: Duration = Duration::from_secs(3600);
/// Ledgers handled a page.
const PAGE: u32 = 500;

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    /// Ledgers whose objects were removed.
    pub ledgers: u64,
    /// Files newly marked shredded.
    pub files: u64,
    /// Objects removed.
    pub objects: u64,
    /// Ledgers whose objects could not all be removed (the next pass retries them).
    pub failed: u64,
}

/// One pass at `now`: removes the objects of every FINAL ledger completed more than `keep`
/// before it.
pub async fn pass(
    store: &dyn KeyStore,
    storage: &dyn ObjectStorage,
    keep: Duration,
    now: DateTime<Utc>,
) -> Result<Pass, StoreError> {
    let before = now - chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
    let mut done = Pass::default();
    let mut after: Option<LedgerId> = None;
    loop {
        let page = store.expired_ledgers(before, after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.0);
        for (ledger, merchant) in page {
            done.files += store.mark_retained(ledger, now).await?;
            let prefix = format!("ledgers/{merchant}/{ledger}/");
            let removed = async {
                let mut n = 0;
                for key in storage.list(&prefix).await? {
                    storage.delete(&key).await?;
                    n += 1;
                }
                Ok::<u64, crate::storage::StorageError>(n)
            }
            .await;
            match removed {
                Ok(n) => {
                    store.mark_removed(ledger, now).await?;
                    done.objects += n;
                    done.ledgers += 1;
                }
                Err(e) => {
                    done.failed += 1;
                    tracing::warn!(target: "ledger::keys", ledger_id = %ledger, error = %e,
                        "retention could not remove the ledger's objects; the next pass retries");
                }
            }
        }
    }
    if done.ledgers > 0 || done.files > 0 {
        metrics::counter!("ledger_retention_files_total").increment(done.files);
        metrics::counter!("ledger_retention_objects_removed_total").increment(done.objects);
        store
            .record_audit(&AuditRecord {
                at: now,
                actor: "retention".into(),
                action: "RETENTION".into(),
                merchant_id: None,
                key_id: None,
                detail: format!(
                    "{} ledger(s) completed before {} (FINAL): {} file(s) marked, {} object(s) removed",
                    done.ledgers,
                    before.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    done.files,
                    done.objects
                ),
            })
            .await?;
        tracing::info!(target: "ledger::keys", ledgers = done.ledgers, files = done.files,
            objects = done.objects, "retention removed the files of expired ledgers");
    }
    Ok(done)
}

/// Runs a pass every [`EVERY`] until `shutdown` (the first at once).
pub async fn run(
    store: Arc<dyn KeyStore>,
    storage: Arc<dyn ObjectStorage>,
    keep: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        if let Err(e) = pass(&*store, &*storage, keep, Utc::now()).await {
            tracing::warn!(target: "ledger::keys", error = %e, "a retention pass failed; the next one retries");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(EVERY) => {}
        }
    }
}
