//! The key service over a real (in-memory SQLite) store: merchant keys are made once, even
//! by racing processes; a root rotation keeps every key reachable until its old root goes;
//! a missing root is `Unavailable` naming it; a shredded key is not handed out once its row
//! is read again (the live row is reused for [`LIVE_KEY_TTL`]; a completion under a
//! shredded key is refused, see the pipeline's tests).

use std::sync::Arc;

use chrono::Utc;

use super::*;
use crate::crypto::{Binding, decrypt_to_vec, encrypt_to_vec, generate_key_base64};
use crate::store::JobStore;
use crate::store::sqlite::SqliteStore;

fn master() -> MasterKey {
    MasterKey::from_base64(&generate_key_base64()).unwrap()
}

fn keys_with(store: &Arc<dyn JobStore>, current: &MasterKey, old: &[&MasterKey]) -> Keys {
    let local = Keyring::new(current.clone(), old.iter().map(|k| (*k).clone()).collect());
    Keys::new(Root::Local(local), store.clone())
}

async fn store() -> Arc<dyn JobStore> {
    let store = SqliteStore::in_memory().await.unwrap();
    store.migrate().await.unwrap();
    Arc::new(store)
}

fn m(id: &str) -> MerchantId {
    MerchantId::parse(id).unwrap()
}

const BINDING: Binding = Binding {
    ledger_id: 42,
    version: 1,
};

#[tokio::test]
async fn a_merchant_gets_one_key_even_from_racing_processes() {
    let store = store().await;
    let a = master();
    let (one, two) = (keys_with(&store, &a, &[]), keys_with(&store, &a, &[]));
    let m1 = m("m_1");
    let (x, y) = tokio::join!(one.sealing(&m1, false), two.sealing(&m1, false));
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x.current_id(), y.current_id(), "one key for the merchant");
    assert_eq!(x.format(), crate::crypto::FORMAT_MERCHANT);
    assert_eq!(x.current_id().len(), 32);
    let other = one.sealing(&m("m_2"), false).await.unwrap();
    assert_ne!(other.current_id(), x.current_id());

    // What one process sealed, the other opens, from the store.
    let sealed = encrypt_to_vec(&x, BINDING, b"rows").unwrap();
    let opened = two.opening(&m("m_1"), x.current_id()).await.unwrap();
    assert_eq!(decrypt_to_vec(&opened, BINDING, &sealed).unwrap(), b"rows");
    // The row holds the key wrapped, never in clear.
    let row = store.merchant_key(x.current_id()).await.unwrap().unwrap();
    assert_eq!(row.root_key_id, format!("local:{}", a.id()));
    let raw = BASE64.decode(&row.wrapped).unwrap();
    assert!(!raw.windows(32).any(|w| w == x.current_key().expose_bytes()));
    // Another merchant's id for the key is refused.
    assert!(matches!(
        two.opening(&m("m_2"), x.current_id()).await,
        Err(KeyError::Store(StoreError::Corrupt(_)))
    ));
    match two
        .opening(&m("m_1"), "ffffffffffffffffffffffffffffffff")
        .await
    {
        Err(KeyError::Unavailable { key_id, .. }) => {
            assert_eq!(key_id, "ffffffffffffffffffffffffffffffff")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_root_rotation_keeps_keys_reachable_until_the_old_root_goes() {
    let store = store().await;
    let (a, b) = (master(), master());
    let under_a = keys_with(&store, &a, &[]);
    let key = under_a.sealing(&m("m_1"), false).await.unwrap();
    let sealed = encrypt_to_vec(&key, BINDING, b"statement").unwrap();

    // B current, A old: the key opens (unwrapped with A), new merchants' keys go under B.
    let rotated = keys_with(&store, &b, &[&a]);
    let opened = rotated.opening(&m("m_1"), key.current_id()).await.unwrap();
    assert_eq!(
        decrypt_to_vec(&opened, BINDING, &sealed).unwrap(),
        b"statement"
    );
    let newer = rotated.sealing(&m("m_2"), false).await.unwrap();
    let row = store
        .merchant_key(newer.current_id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.root_key_id, format!("local:{}", b.id()));

    // Without A, before a rewrap: unavailable, naming A.
    let only_b = keys_with(&store, &b, &[]);
    match only_b.opening(&m("m_1"), key.current_id()).await {
        Err(KeyError::Unavailable { key_id, reason }) => {
            assert_eq!(key_id, format!("local:{}", a.id()));
            assert!(
                reason.contains("APP_ENV_LEDGER_ENCRYPTION_KEYS_OLD"),
                "{reason}"
            );
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }

    // Re-wrapped under B (what `ledger keys rewrap` does per key): B alone opens it, and
    // the object itself was never touched.
    let row = store.merchant_key(key.current_id()).await.unwrap().unwrap();
    let (to, wrapped) = rotated.rewrapped(&row).await.unwrap();
    assert_eq!(to, format!("local:{}", b.id()));
    assert!(
        store
            .rewrap_merchant_key(&row.key_id, &row.root_key_id, &to, &wrapped, Utc::now())
            .await
            .unwrap()
    );
    let fresh = keys_with(&store, &b, &[]);
    let opened = fresh.opening(&m("m_1"), key.current_id()).await.unwrap();
    assert_eq!(
        decrypt_to_vec(&opened, BINDING, &sealed).unwrap(),
        b"statement"
    );
}

#[tokio::test]
async fn a_shredded_key_is_never_handed_out_and_the_merchant_gets_a_new_one() {
    let store = store().await;
    let a = master();
    let keys = keys_with(&store, &a, &[]);
    let key = keys.sealing(&m("m_1"), false).await.unwrap();
    let done = store
        .shred_merchant(&m("m_1"), "ops", Utc::now())
        .await
        .unwrap();
    assert_eq!(done.keys, 1);
    // Within its reuse this process still seals with the row it read (the completion of
    // such a file is refused); an attempt that reads the row again gets a new key.
    assert_eq!(
        keys.sealing(&m("m_1"), false).await.unwrap().current_id(),
        key.current_id()
    );
    let fresh = keys.sealing(&m("m_1"), true).await.unwrap();
    assert_ne!(fresh.current_id(), key.current_id());
    // A process that never cached it, and this one once it forgets.
    let other = keys_with(&store, &a, &[]);
    assert!(matches!(
        other.opening(&m("m_1"), key.current_id()).await,
        Err(KeyError::Shredded(_))
    ));
    keys.forget();
    assert!(matches!(
        keys.opening(&m("m_1"), key.current_id()).await,
        Err(KeyError::Shredded(_))
    ));
    // New files of the merchant get the new key, in every process.
    let next = other.sealing(&m("m_1"), false).await.unwrap();
    assert_eq!(next.current_id(), fresh.current_id());
    assert_eq!(
        keys.sealing(&m("m_1"), false).await.unwrap().current_id(),
        fresh.current_id()
    );
}
