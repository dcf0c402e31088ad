//! `ledger-bench rewrap`: `ledger keys rewrap` over many small files from before the key
//! hierarchy (format 1, sealed by the master key directly), then a second root rotation,
//! which re-wraps the merchant keys only: files per second, and what a rotation costs once
//! every file is format 2.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use ledger::crypto::{Binding, Keyring, MasterKey, encrypt_to_vec, generate_key_base64};
use ledger::keys::rewrap::rewrap;
use ledger::keys::{Keys, Root};
use ledger::outln;
use ledger::storage::{ObjectStorage, ObjectStoreStorage};
use ledger::store::JobStore;
use ledger::vault::Vault;

/// Seeds `ledgers` ledgers (about 96% of them COMPLETED, each with a format-1 file of
/// `size` bytes across ~2,000 merchants), then times the rewraps.
pub async fn run(ledgers: i64, size: usize, concurrency: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("ledger.db");
    let database = ledger::config::DatabaseKind::Sqlite(db.clone());
    let store = ledger::store::sqlite::SqliteStore::open(&db).await?;
    store.migrate().await?;
    drop(store);
    ledger::store::sql::seed::seed_database(
        &database,
        ledgers,
        chrono::Utc::now().timestamp_millis(),
    )
    .await?;
    let plain: Vec<u8> = b"bookedAt,entryId,description,amount,currency\n"
        .iter()
        .copied()
        .cycle()
        .take(size)
        .collect();
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&plain))
    };
    ledger::store::sql::seed::set_seeded_contents(&database, &digest, plain.len() as i64).await?;

    let store: Arc<dyn JobStore> = Arc::new(ledger::store::sqlite::SqliteStore::open(&db).await?);
    let storage: Arc<dyn ObjectStorage> =
        Arc::new(ObjectStoreStorage::local(&dir.path().join("objects"))?);
    let a = MasterKey::from_base64(&generate_key_base64())?;
    let under_a = Keyring::new(a.clone(), Vec::new());

    // The objects an older release stored: sealed by A directly.
    let t = Instant::now();
    let mut files = Vec::new();
    let mut after = None;
    loop {
        let page = store.root_sealed_files(after, 5000).await?;
        let Some(last) = page.last() else { break };
        after = Some((last.ledger_id, last.version));
        files.extend(page);
    }
    let written: Vec<anyhow::Result<()>> = futures::stream::iter(files.iter().map(|f| {
        let storage = storage.clone();
        let sealed = encrypt_to_vec(
            &under_a,
            Binding {
                ledger_id: f.ledger_id.as_i64(),
                version: f.version,
            },
            &plain,
        );
        let key = f.object_key.clone();
        async move {
            let mut w = storage.writer(&key).await?;
            w.write(sealed?.into()).await?;
            w.finish().await?;
            Ok(())
        }
    }))
    .buffer_unordered(16)
    .collect()
    .await;
    written.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    let seeded_in = t.elapsed().as_secs_f64();

    // Rotation 1: B current, A old — every merchant key made, every file re-sealed.
    let b = MasterKey::from_base64(&generate_key_base64())?;
    let keys = Keys::new(Root::Local(Keyring::new(b.clone(), vec![a])), store.clone());
    let vault = Vault::new(storage.clone(), keys);
    let t = Instant::now();
    let first = rewrap(&vault, concurrency, &|_| {}).await?;
    let first_s = t.elapsed().as_secs_f64();
    anyhow::ensure!(first.complete(), "rewrap failed: {:?}", first.failures);

    // Rotation 2: C current, B old — format 2 everywhere: merchant keys only.
    let c = MasterKey::from_base64(&generate_key_base64())?;
    let keys = Keys::new(Root::Local(Keyring::new(c, vec![b])), store.clone());
    let vault = Vault::new(storage, keys);
    let t = Instant::now();
    let second = rewrap(&vault, concurrency, &|_| {}).await?;
    let second_s = t.elapsed().as_secs_f64();
    anyhow::ensure!(second.complete(), "rewrap failed: {:?}", second.failures);
    let counts = vault.keys().store().key_counts().await?;

    outln!(
        "rewrap: {} format-1 files of {size} B ({} merchants) written in {seeded_in:.1}s; \
         first rotation: {} files re-sealed + {} keys re-wrapped in {first_s:.2}s = {:.0} files/s \
         (concurrency {concurrency}); second rotation (format 2 everywhere): {} keys re-wrapped, \
         {} files touched, in {second_s:.3}s; format-1 files left: {}",
        files.len(),
        counts.roots.iter().map(|r| r.merchant_keys).sum::<u64>(),
        first.files_resealed,
        first.keys_rewrapped,
        first.files_resealed as f64 / first_s,
        second.keys_rewrapped,
        second.files_resealed,
        counts.root_sealed_files,
    )?;
    Ok(())
}
