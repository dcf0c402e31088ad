//! The key contract (SPEC §15): merchant keys, rewrap swaps, shreds (also racing a
//! completion), leases and the audit log. Run by both engines' tests on a migrated store;
//! format-1 files (from before the key hierarchy) are made by clearing a file's key in SQL.

use chrono::{Duration, Utc};

use super::{created, file, new_ledger};
use crate::domain::{LedgerId, MerchantId, Stage, Status, Timezone};
use crate::store::keys::{MerchantKeyRow, Resealed, ShredError};
use crate::store::sql::{Dialect, Driver, SqlStore, args};
use crate::store::{JobStore, StoreError};

fn key(id: &str, merchant: &str, root: &str) -> MerchantKeyRow {
    MerchantKeyRow {
        key_id: id.into(),
        merchant_id: MerchantId::parse(merchant).unwrap(),
        root_key_id: root.into(),
        wrapped: format!("wrapped-{id}"),
        created_at: Utc::now(),
        shredded_at: None,
    }
}

/// A completed ledger of `merchant` whose file is sealed by `key_id`.
async fn completed(store: &dyn JobStore, id: i64, merchant: &str, key_id: &str) -> LedgerId {
    let period = format!("20{:02}-03", id % 100);
    let l = created(store, &new_ledger(id, merchant, &period, None)).await;
    let now = Utc::now();
    store
        .claim(l.id, now, now + Duration::seconds(60))
        .await
        .unwrap()
        .unwrap();
    let mut f = file(1);
    f.key_id = key_id.into();
    f.object_key = format!("ledgers/{merchant}/{id}/v1.a1.csv.enc");
    store
        .complete(l.id, 1, &f, Stage::Final, Timezone::UTC, now, &[])
        .await
        .unwrap()
        .expect("completed");
    l.id
}

/// Makes a file format 1, as files stored before the key hierarchy are.
async fn root_sealed<D: Dialect>(store: &SqlStore<D>, id: LedgerId) {
    let mut conn = store.pool.acquire().await.unwrap();
    D::Db::execute(
        &mut conn,
        "UPDATE ledger_files SET key_id = NULL WHERE ledger_id = $1",
        args![id.as_i64()],
    )
    .await
    .unwrap();
}

pub async fn run<D: Dialect>(store: &SqlStore<D>) {
    let s: &dyn JobStore = store;
    let m1 = MerchantId::parse("m_keys_1").unwrap();

    // One live key per merchant: a second insert loses, the first stays.
    assert!(s.live_merchant_key(&m1).await.unwrap().is_none());
    assert!(
        s.insert_merchant_key(&key("k1a", "m_keys_1", "local:aaaaaaaa"))
            .await
            .unwrap()
    );
    assert!(
        !s.insert_merchant_key(&key("k1b", "m_keys_1", "local:aaaaaaaa"))
            .await
            .unwrap()
    );
    assert_eq!(
        s.live_merchant_key(&m1).await.unwrap().unwrap().key_id,
        "k1a"
    );
    assert!(s.merchant_key("k1b").await.unwrap().is_none());
    assert!(
        s.insert_merchant_key(&key("k2a", "m_keys_2", "local:aaaaaaaa"))
            .await
            .unwrap()
    );

    // Files sealed by each; one file still format 1.
    let a = completed(s, 91_000_000, "m_keys_1", "k1a").await;
    let b = completed(s, 91_000_001, "m_keys_2", "k2a").await;
    let legacy = completed(s, 91_000_002, "m_keys_2", "k2a").await;
    root_sealed(store, legacy).await;
    assert_eq!(
        s.get_file(a, 1).await.unwrap().unwrap().key_id.as_deref(),
        Some("k1a")
    );
    assert_eq!(s.get_file(legacy, 1).await.unwrap().unwrap().key_id, None);
    let counts = s.key_counts().await.unwrap();
    let under_a = counts
        .roots
        .iter()
        .find(|r| r.root_key_id == "local:aaaaaaaa")
        .unwrap();
    assert!(
        under_a.merchant_keys >= 2 && under_a.files >= 2,
        "{counts:?}"
    );
    assert!(counts.root_sealed_files >= 1);

    // Rewrap: a key moves from root A to B only from the root it was read under.
    let todo = s.keys_not_under("local:bbbbbbbb", None, 100).await.unwrap();
    assert!(todo.iter().any(|k| k.key_id == "k1a") && todo.iter().any(|k| k.key_id == "k2a"));
    let now = Utc::now();
    assert!(
        !s.rewrap_merchant_key("k1a", "local:cccccccc", "local:bbbbbbbb", "w", now)
            .await
            .unwrap()
    );
    assert!(
        s.rewrap_merchant_key("k1a", "local:aaaaaaaa", "local:bbbbbbbb", "w2", now)
            .await
            .unwrap()
    );
    assert!(
        !s.rewrap_merchant_key("k1a", "local:aaaaaaaa", "local:bbbbbbbb", "w3", now)
            .await
            .unwrap()
    );
    let k1 = s.merchant_key("k1a").await.unwrap().unwrap();
    assert_eq!(
        (k1.root_key_id.as_str(), k1.wrapped.as_str()),
        ("local:bbbbbbbb", "w2")
    );
    let paged = s
        .keys_not_under("local:bbbbbbbb", Some("k1a"), 100)
        .await
        .unwrap();
    assert!(
        paged
            .iter()
            .all(|k| k.key_id.as_str() > "k1a" && k.key_id != "k1a")
    );

    // The format-1 file is listed, and swapped once, only from the object it was read with.
    let listed = s.root_sealed_files(None, 1000).await.unwrap();
    let f = listed
        .iter()
        .find(|f| f.ledger_id == legacy)
        .expect("listed");
    assert_eq!(f.merchant_id.as_str(), "m_keys_2");
    let swap = |from: &str| Resealed {
        ledger_id: legacy,
        version: 1,
        old_object_key: from.into(),
        object_key: format!("{}.k2a.enc", f.object_key),
        header_sha256: "ef".repeat(32),
        key_id: "k2a".into(),
    };
    assert!(!s.swap_file_object(&swap("not-the-object")).await.unwrap());
    assert!(s.swap_file_object(&swap(&f.object_key)).await.unwrap());
    assert!(
        !s.swap_file_object(&swap(&f.object_key)).await.unwrap(),
        "swapped once"
    );
    // The replaced object is recorded until it is removed.
    let replaced = s.replaced_objects(100).await.unwrap();
    assert_eq!(replaced, vec![(legacy, 1, f.object_key.clone())]);
    s.forget_replaced(legacy, 1, "another-object")
        .await
        .unwrap();
    assert_eq!(
        s.replaced_objects(100).await.unwrap().len(),
        1,
        "only the one recorded"
    );
    s.forget_replaced(legacy, 1, &f.object_key).await.unwrap();
    assert!(s.replaced_objects(100).await.unwrap().is_empty());
    let now_sealed = s.get_file(legacy, 1).await.unwrap().unwrap();
    assert_eq!(now_sealed.key_id.as_deref(), Some("k2a"));
    assert_eq!(now_sealed.header_sha256, Some("ef".repeat(32)));
    assert!(
        s.root_sealed_files(None, 1000)
            .await
            .unwrap()
            .iter()
            .all(|f| f.ledger_id != legacy)
    );

    // Shred: refused while a format-1 file of the merchant is readable.
    let legacy2 = completed(s, 91_000_003, "m_keys_1", "k1a").await;
    root_sealed(store, legacy2).await;
    let at = Utc::now();
    match s.shred_merchant(&m1, "ops@host", at).await {
        Err(ShredError::RootSealed(1)) => {}
        other => panic!("expected RootSealed(1), got {other:?}"),
    }
    assert!(
        s.live_merchant_key(&m1).await.unwrap().is_some(),
        "nothing shredded"
    );
    let f2 = s
        .root_sealed_files(None, 1000)
        .await
        .unwrap()
        .into_iter()
        .find(|f| f.ledger_id == legacy2)
        .unwrap();
    assert!(
        s.swap_file_object(&Resealed {
            ledger_id: legacy2,
            version: 1,
            old_object_key: f2.object_key.clone(),
            object_key: "x".into(),
            header_sha256: "ab".repeat(32),
            key_id: "k1a".into(),
        })
        .await
        .unwrap()
    );
    // Still refused while the replaced root-sealed object is not removed.
    assert!(matches!(
        s.shred_merchant(&m1, "ops@host", at).await,
        Err(ShredError::RootSealed(1))
    ));
    s.forget_replaced(legacy2, 1, &f2.object_key).await.unwrap();

    // Then it destroys the key, marks its files, and records who did it.
    let done = s.shred_merchant(&m1, "ops@host", at).await.unwrap();
    assert_eq!((done.keys, done.files), (1, 2));
    let k1 = s.merchant_key("k1a").await.unwrap().unwrap();
    assert_eq!(k1.wrapped, "", "the wrapped key is erased");
    assert!(k1.shredded_at.is_some());
    assert!(s.live_merchant_key(&m1).await.unwrap().is_none());
    let gone = s.get_file(a, 1).await.unwrap().unwrap();
    assert_eq!(gone.shred_reason.as_deref(), Some("MERCHANT_SHRED"));
    assert!(gone.info.shredded_at.is_some());
    let ledger = s.get_ledger(a).await.unwrap().unwrap();
    assert!(
        ledger.file.unwrap().shredded_at.is_some(),
        "the ledger shows it"
    );
    // The other merchant is untouched.
    assert!(
        s.get_file(b, 1)
            .await
            .unwrap()
            .unwrap()
            .info
            .shredded_at
            .is_none()
    );
    assert!(
        s.live_merchant_key(&MerchantId::parse("m_keys_2").unwrap())
            .await
            .unwrap()
            .is_some()
    );
    // A second shred finds nothing; the log keeps both, newest first.
    assert_eq!(
        s.shred_merchant(&m1, "other", Utc::now())
            .await
            .unwrap()
            .keys,
        0
    );
    let log = s.audit_log(Some(&m1), 10).await.unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(
        (log[1].action.as_str(), log[1].actor.as_str()),
        ("MERCHANT_SHRED", "ops@host")
    );
    assert_eq!(
        log[1].key_id.as_deref(),
        Some("k1a"),
        "the destroyed key is named"
    );
    assert_eq!(log[0].key_id, None, "the second shred destroyed none");
    assert!(
        log[1]
            .detail
            .contains("1 merchant key(s) destroyed, 2 file(s)"),
        "{}",
        log[1].detail
    );
    assert!(
        s.audit_log(Some(&MerchantId::parse("m_keys_2").unwrap()), 10)
            .await
            .unwrap()
            .is_empty()
    );

    // A completion sealed with the destroyed key (its job ran across the shred) is refused
    // as such, and records nothing: the attempt still owns the job, to seal it again.
    let late = created(s, &new_ledger(91_000_004, "m_keys_1", "2026-05", None)).await;
    let now = Utc::now();
    s.claim(late.id, now, now + Duration::seconds(60))
        .await
        .unwrap()
        .unwrap();
    let mut f = file(1);
    f.key_id = "k1a".into();
    f.object_key = "ledgers/m_keys_1/91000004/v1.a1.csv.enc".into();
    match s
        .complete(late.id, 1, &f, Stage::Final, Timezone::UTC, now, &[])
        .await
    {
        Err(StoreError::KeyShredded { key_id }) => assert_eq!(key_id, "k1a"),
        other => panic!("a completion under a shredded key: {other:?}"),
    }
    assert!(s.get_file(late.id, 1).await.unwrap().is_none());
    assert_eq!(
        s.get_ledger(late.id).await.unwrap().unwrap().status,
        Status::Processing
    );
    // The merchant may have a new key; its files are readable.
    assert!(
        s.insert_merchant_key(&key("k1c", "m_keys_1", "local:bbbbbbbb"))
            .await
            .unwrap()
    );
    let fresh = completed(s, 91_000_005, "m_keys_1", "k1c").await;
    assert!(
        s.get_file(fresh, 1)
            .await
            .unwrap()
            .unwrap()
            .info
            .shredded_at
            .is_none()
    );
    // A completion naming a key that is not stored is a broken invariant, said so.
    let l = created(s, &new_ledger(91_000_006, "m_keys_1", "2026-04", None)).await;
    let now = Utc::now();
    s.claim(l.id, now, now + Duration::seconds(60))
        .await
        .unwrap()
        .unwrap();
    let mut f = file(1);
    f.key_id = "no-such-key".into();
    let err = s
        .complete(l.id, 1, &f, Stage::Final, Timezone::UTC, now, &[])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no-such-key"), "{err}");
    assert!(s.get_file(l.id, 1).await.unwrap().is_none());

    let counts = s.key_counts().await.unwrap();
    assert!(
        counts.shredded_keys >= 1 && counts.shredded_files >= 2,
        "{counts:?}"
    );

    // Leases: one holder at a time; renewable by its holder; free once expired or released.
    let now = Utc::now();
    let later = now + Duration::seconds(15);
    assert!(
        s.take_lease("rewrap-contract", "a", later, now)
            .await
            .unwrap()
            .is_ok()
    );
    assert!(
        s.take_lease("rewrap-contract", "a", later, now)
            .await
            .unwrap()
            .is_ok(),
        "renewed"
    );
    match s
        .take_lease("rewrap-contract", "b", later, now)
        .await
        .unwrap()
    {
        Err((holder, until)) => assert_eq!(
            (holder.as_str(), until.timestamp_millis()),
            ("a", later.timestamp_millis())
        ),
        Ok(()) => panic!("two holders"),
    }
    let after = later + Duration::seconds(1);
    assert!(
        s.take_lease("rewrap-contract", "b", after + Duration::seconds(15), after)
            .await
            .unwrap()
            .is_ok(),
        "expired: taken over"
    );
    s.release_lease("rewrap-contract", "a").await.unwrap();
    assert!(
        s.take_lease("rewrap-contract", "c", later, now)
            .await
            .unwrap()
            .is_err(),
        "a's release is no release of b's"
    );
    s.release_lease("rewrap-contract", "b").await.unwrap();
    assert!(
        s.take_lease("rewrap-contract", "c", later, now)
            .await
            .unwrap()
            .is_ok()
    );
}
