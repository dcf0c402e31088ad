//! The job store contract: what every adapter must do, written against the trait. Each
//! adapter's tests call [`run_all`] with a fresh, migrated store.

mod batches;
mod grants;
mod jobs;
pub mod keys;
mod ledgers;
mod schedules;
mod webhooks;

use std::sync::Arc;

use chrono::Utc;

use super::{CompletedFile, InsertOutcome, JobStore, NewLedger};
use crate::domain::{
    FailureReason, FileInfo, Format, LedgerId, LedgerType, MerchantId, Period, Stage, Timezone,
};

/// A STATEMENT/CSV ledger to insert (shared by the contract suites and pipeline tests).
pub fn new_ledger(id: i64, merchant: &str, period: &str, tz: Option<&str>) -> NewLedger {
    NewLedger {
        id: LedgerId::from_i64(id),
        merchant_id: MerchantId::parse(merchant).unwrap(),
        ledger_type: LedgerType::Statement,
        period: Period::parse(period).unwrap(),
        requested_timezone: tz.map(|t| Timezone::parse(t).unwrap()),
        format: Format::Csv,
        stage: Stage::Final,
        created_by: "tester".into(),
        created_at: Utc::now(),
    }
}

pub(super) async fn created(store: &dyn JobStore, new: &NewLedger) -> crate::domain::Ledger {
    match store.insert_ledger(new, None).await.unwrap() {
        InsertOutcome::Created(l) => l,
        other => panic!("expected Created, got {other:?}"),
    }
}

pub(super) fn file(version: u32) -> CompletedFile {
    CompletedFile {
        info: FileInfo {
            version,
            content_type: "text/csv".into(),
            size_bytes: 42,
            sha256: "ab".repeat(32),
            file_name: format!("f-v{version}.csv"),
            shredded_at: None,
        },
        object_key: format!("k/v{version}"),
        header_sha256: "cd".repeat(32),
        manifest: format!("manifest-of-v{version}"),
        key_id: CONTRACT_KEY.into(),
    }
}

/// The merchant key every contract file names (stored by [`contract_key`]).
pub(super) const CONTRACT_KEY: &str = "0123456789abcdef0123456789abcdef";

/// Stores [`CONTRACT_KEY`] (once; a store that has it keeps it).
pub(super) async fn contract_key(store: &dyn JobStore) {
    let row = crate::store::keys::MerchantKeyRow {
        key_id: CONTRACT_KEY.into(),
        merchant_id: crate::domain::MerchantId::parse("m_contract_keys").unwrap(),
        root_key_id: "local:00000000".into(),
        wrapped: "AAAA".into(),
        created_at: Utc::now(),
        shredded_at: None,
    };
    let _ = store.merchant_key(CONTRACT_KEY).await.unwrap().is_some()
        || store.insert_merchant_key(&row).await.unwrap();
}

pub(super) fn failure(code: &str) -> FailureReason {
    FailureReason {
        error_code: code.into(),
        message: "m".into(),
        retryable: true,
        at: Utc::now(),
    }
}

/// Runs every contract check against `store` (fresh and migrated).
pub async fn run_all(store: Arc<dyn JobStore>) {
    contract_key(&*store).await;
    ledgers::identity_and_lists(&*store).await;
    ledgers::idempotency(&*store).await;
    ledgers::concurrent_creates(store.clone()).await;
    jobs::claims_and_fencing(&*store).await;
    ledgers::user_changes(&*store).await;
    jobs::sweeps(store.clone()).await;
    jobs::concurrent_claims(store.clone()).await;
    grants::grants(&*store).await;
    grants::node_leases(&*store).await;
    ledgers::replay_scope(&*store).await;
    batches::batches(&*store).await;
    batches::racing_expansions(store.clone()).await;
    schedules::schedules(store.clone()).await;
    webhooks::webhooks(&*store).await;
    assert!(store.pending_migrations().await.unwrap().is_empty());
    store.ping().await.unwrap();
}
