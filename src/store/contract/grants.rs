//! The contract of grants, the policy revision and node-id leases.

use chrono::{Duration, Utc};

use crate::domain::{Grant, grant_digest};
use crate::store::JobStore;

pub(super) async fn grants(store: &dyn JobStore) {
    let g = Grant {
        subject: "alice".into(),
        role: "merchant_viewer".into(),
        domain: "m_1".into(),
    };
    let r0 = store.policy_revision().await.unwrap();
    assert_eq!(r0.digest, grant_digest(&[]), "the digest of no grants");
    assert!(store.add_grant(&g).await.unwrap());
    assert!(
        !store.add_grant(&g).await.unwrap(),
        "granting twice is a no-op"
    );
    let r1 = store.policy_revision().await.unwrap();
    assert_ne!(r0.revision, r1.revision, "a change moves the revision");
    assert_eq!(store.list_grants().await.unwrap(), vec![g.clone()]);
    assert_eq!(r1.digest, grant_digest(std::slice::from_ref(&g)));
    assert!(store.remove_grant(&g).await.unwrap());
    assert!(!store.remove_grant(&g).await.unwrap());
    let r2 = store.policy_revision().await.unwrap();
    assert_ne!(r2.revision, r1.revision);
    assert_eq!(r2.digest, grant_digest(&[]));
    assert!(store.list_grants().await.unwrap().is_empty());

    // Concurrent changes each record the digest of the set they leave behind: the last
    // digest is that of every grant.
    let many: Vec<Grant> = (0..12)
        .map(|i| Grant {
            subject: format!("user{i}"),
            role: "merchant_viewer".into(),
            domain: format!("m_{}", i % 3),
        })
        .collect();
    let adds = many.iter().map(|g| store.add_grant(g));
    for added in futures::future::join_all(adds).await {
        assert!(added.unwrap());
    }
    let state = store.policy_revision().await.unwrap();
    assert_eq!(
        state.digest,
        grant_digest(&store.list_grants().await.unwrap())
    );
    assert_eq!(state.digest, grant_digest(&many));
    for g in &many {
        assert!(store.remove_grant(g).await.unwrap());
    }
}

pub(super) async fn node_leases(store: &dyn JobStore) {
    let now = Utc::now();
    let until = now + Duration::seconds(30);
    let a = store
        .lease_node_id("proc-a", now, until)
        .await
        .unwrap()
        .unwrap();
    let b = store
        .lease_node_id("proc-b", now, until)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(a, b, "two live processes never share a node id");
    assert!(store.renew_node_id(a, "proc-a", until).await.unwrap());
    assert!(
        !store.renew_node_id(a, "proc-b", until).await.unwrap(),
        "only the holder renews"
    );
    // An expired lease is taken over; the old holder learns it lost the id.
    let later = until + Duration::seconds(1);
    let c = store
        .lease_node_id("proc-c", later, later + Duration::seconds(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c, a.min(b), "the lowest expired id is reused");
    let loser = if c == a { "proc-a" } else { "proc-b" };
    assert!(!store.renew_node_id(c, loser, later).await.unwrap());
    store.release_node_id(c, "proc-c").await.unwrap();
    let d = store
        .lease_node_id("proc-d", later, later + Duration::seconds(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d, c, "a released id is free again");
}
