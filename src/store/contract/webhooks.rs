//! The contract of webhooks: endpoints, the outbox written with the state change, and
//! the claim, fencing and finish of deliveries (a 410 and five days of failures disable an
//! endpoint; a deleted endpoint's deliveries are skipped).

use chrono::{Duration, SubsecRound, Utc};

use super::{created, failure, file, new_ledger};
use crate::domain::webhook::{DeliveryStatus, DisabledReason, EventType, message_id};
use crate::domain::{MerchantId, Stage, Timezone};
use crate::store::JobStore;
use crate::store::webhooks::{FailingRule, Finish, NewWebhook, Share};

fn endpoint(id: i64, by: &str, events: &[EventType], merchants: Option<&[&str]>) -> NewWebhook {
    NewWebhook {
        id,
        created_by: by.into(),
        url: format!("https://hooks.example/{id}"),
        events: events.to_vec(),
        merchants: merchants.map(|ms| ms.iter().map(|m| MerchantId::parse(m).unwrap()).collect()),
        sealed_secret: format!("sealed-{id}"),
        created_at: Utc::now().trunc_subsecs(3),
    }
}

/// A claim's share: `per` a endpoint, `inflight` already taken, `full` creators left out.
fn share(per: u32, inflight: &[(i64, u32)], full: &[&str]) -> Share {
    Share {
        per_webhook: per,
        webhooks: inflight.to_vec(),
        full_creators: full.iter().map(|c| (*c).to_owned()).collect(),
    }
}

/// Five days of failures disable; two quiet days begin a new run.
fn rule(now: chrono::DateTime<Utc>) -> FailingRule {
    FailingRule {
        disable_before: now - Duration::days(5),
        restart_before: now - Duration::days(2),
    }
}

/// Completes (or, with `reject`, fails) a new ledger of `merchant`.
async fn finish_ledger(store: &dyn JobStore, id: i64, merchant: &str, reject: bool) {
    // A day of its own, so each ledger has its own identity.
    let day = chrono::NaiveDate::from_ymd_opt(2025, 1, 1).unwrap() + Duration::days(id % 1000);
    let l = created(
        store,
        &new_ledger(id, merchant, &day.to_string(), Some("UTC")),
    )
    .await;
    let now = Utc::now();
    store
        .claim(l.id, now, now + Duration::seconds(60))
        .await
        .unwrap()
        .unwrap();
    if reject {
        store
            .fail(l.id, 1, &failure("FETCH_DATA_ERROR"))
            .await
            .unwrap()
            .unwrap();
    } else {
        let tz = Timezone::parse("UTC").unwrap();
        store
            .complete(l.id, 1, &file(1), Stage::Final, tz, now, &[])
            .await
            .unwrap()
            .unwrap();
    }
}

pub(super) async fn webhooks(store: &dyn JobStore) {
    use EventType::*;
    let all = store
        .insert_webhook(&endpoint(
            7101,
            "ops",
            &[LedgerCompleted, LedgerRejected],
            None,
        ))
        .await
        .unwrap();
    assert_eq!(all.merchants, None);
    let named = store
        .insert_webhook(&endpoint(
            7102,
            "ana",
            &[LedgerCompleted],
            Some(&["m_w1", "m_w1"]),
        ))
        .await
        .unwrap();
    assert_eq!(
        named.merchants,
        Some(vec![MerchantId::parse("m_w1").unwrap()])
    );
    assert_eq!(store.get_webhook(7102).await.unwrap().unwrap(), named);
    let listed = store.list_webhooks(Some("ana"), None, 10).await.unwrap();
    assert_eq!(listed, vec![named.clone()]);
    assert_eq!(
        store.list_webhooks(None, Some(7102), 10).await.unwrap(),
        vec![all.clone()],
        "newest first, below the cursor"
    );

    // Nothing due yet: no event happened.
    let now = Utc::now();
    assert!(
        store
            .claim_deliveries(now, now, 10, &share(10, &[], &[]))
            .await
            .unwrap()
            .is_empty()
    );

    // m_w1 completes: both endpoints; m_w2 completes: the one without a list; a rejection
    // goes to the one that asked for rejections only.
    finish_ledger(store, 997201, "m_w1", false).await;
    finish_ledger(store, 997202, "m_w2", false).await;
    finish_ledger(store, 997203, "m_w1", true).await;
    let backlog = store.delivery_backlog().await.unwrap();
    assert_eq!(backlog.pending, 4);
    assert!(backlog.oldest.is_some());

    let now = Utc::now() + Duration::seconds(1);
    let lease = now + Duration::seconds(30);
    let due = store
        .claim_deliveries(now, lease, 10, &share(10, &[], &[]))
        .await
        .unwrap();
    let mut seen: Vec<(i64, EventType, Option<String>)> = due
        .iter()
        .map(|d| {
            (
                d.webhook.id,
                d.event_type,
                d.merchant.as_ref().map(|m| m.as_str().to_owned()),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (7101, LedgerCompleted, Some("m_w1".into())),
            (7101, LedgerCompleted, Some("m_w2".into())),
            (7101, LedgerRejected, Some("m_w1".into())),
            (7102, LedgerCompleted, Some("m_w1".into())),
        ]
    );
    for d in &due {
        let body: serde_json::Value = serde_json::from_str(&d.payload).unwrap();
        assert_eq!(body["type"], d.event_type.as_str());
        assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
        let status = if d.event_type == LedgerCompleted {
            "COMPLETED"
        } else {
            "REJECTED"
        };
        assert_eq!(body["data"]["status"], status, "{body}");
        assert_eq!(
            body["data"]["merchantId"],
            d.merchant.as_ref().unwrap().as_str()
        );
        assert_eq!(d.sealed_secret, format!("sealed-{}", d.webhook.id));
        assert_eq!(d.attempts, 0);
    }
    // One event, one message: both endpoints' deliveries of m_w1's completion share its id.
    let of = |w: i64, t: EventType, m: &str| {
        due.iter()
            .find(|d| {
                d.webhook.id == w && d.event_type == t && d.merchant.as_ref().unwrap().as_str() == m
            })
            .unwrap()
            .clone()
    };
    let first = of(7101, LedgerCompleted, "m_w1");
    assert_eq!(
        first.message_id,
        of(7102, LedgerCompleted, "m_w1").message_id
    );
    assert!(
        store
            .claim_deliveries(now, lease, 10, &share(10, &[], &[]))
            .await
            .unwrap()
            .is_empty(),
        "claimed deliveries are not due again until their lease ends"
    );

    // Finishing: fenced by the claim's lease.
    assert!(
        !store
            .finish_delivery(
                first.id,
                first.lease + 1,
                &Finish::Delivered { status: 200 },
                now,
                rule(now)
            )
            .await
            .unwrap(),
        "a stale lease finishes nothing"
    );
    assert!(
        store
            .finish_delivery(
                first.id,
                first.lease,
                &Finish::Delivered { status: 204 },
                now,
                rule(now)
            )
            .await
            .unwrap()
    );
    let retry_at = now + Duration::seconds(5);
    let second = of(7101, LedgerCompleted, "m_w2");
    store
        .finish_delivery(
            second.id,
            second.lease,
            &Finish::Retry {
                status: Some(503),
                error: "answered 503".into(),
                next_at: retry_at,
            },
            now,
            rule(now),
        )
        .await
        .unwrap();
    let listed = store.list_deliveries(7101, None, 10).await.unwrap();
    assert_eq!(listed.len(), 3);
    let d1 = listed.iter().find(|d| d.id == first.id).unwrap();
    assert_eq!(
        (d1.status, d1.attempts, d1.last_status),
        (DeliveryStatus::Delivered, 1, Some(204))
    );
    assert_eq!(d1.message_id, message_id(first.message_id));
    assert_eq!(d1.next_attempt_at, None);
    let d2 = listed.iter().find(|d| d.id == second.id).unwrap();
    assert_eq!(
        (d2.status, d2.attempts, d2.last_status),
        (DeliveryStatus::Pending, 1, Some(503))
    );
    assert_eq!(d2.next_attempt_at, Some(retry_at.trunc_subsecs(3)));
    assert_eq!(d2.last_error.as_deref(), Some("answered 503"));
    assert!(listed.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    let failing = store.get_webhook(7101).await.unwrap().unwrap();
    assert!(
        failing.failing_since.is_some(),
        "a failure starts a run of failures"
    );
    // Due again at its next attempt, not before.
    assert!(
        store
            .claim_deliveries(now, lease, 10, &share(10, &[], &[]))
            .await
            .unwrap()
            .is_empty()
    );
    let again = store
        .claim_deliveries(retry_at, lease, 10, &share(10, &[], &[]))
        .await
        .unwrap();
    assert_eq!(
        again.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![second.id]
    );
    assert_eq!(again[0].attempts, 1);
    store
        .finish_delivery(
            second.id,
            again[0].lease,
            &Finish::GiveUp {
                status: None,
                error: "timed out".into(),
            },
            retry_at,
            rule(now),
        )
        .await
        .unwrap();

    // Redelivery: a new PENDING delivery of the same event (same webhook-id).
    let redo = store
        .redeliver(7101, second.id, now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((redo.status, redo.attempts), (DeliveryStatus::Pending, 0));
    assert_eq!(redo.message_id, message_id(second.message_id));
    assert!(
        store
            .redeliver(7102, second.id, now)
            .await
            .unwrap()
            .is_none(),
        "another endpoint's delivery"
    );
    assert!(
        store
            .redeliver(7101, 9_999_999, now)
            .await
            .unwrap()
            .is_none(),
        "no such delivery"
    );

    // Per endpoint and busy endpoints: one endpoint's backlog never fills a round.
    for i in 0..4 {
        finish_ledger(store, 997210 + i, "m_w1", false).await;
    }
    let later = Utc::now() + Duration::seconds(2);
    let round = store
        .claim_deliveries(
            later,
            later + Duration::seconds(30),
            10,
            &share(2, &[(7101, 2)], &[]),
        )
        .await
        .unwrap();
    assert_eq!(
        round.len(),
        2,
        "at most two of 7102's four, none of busy 7101's"
    );
    assert!(round.iter().all(|d| d.webhook.id == 7102));

    // A creator with every slot taken gets nothing more in this round.
    assert!(
        store
            .claim_deliveries(
                later,
                later + Duration::seconds(30),
                10,
                &share(4, &[(7101, 4)], &["ana"])
            )
            .await
            .unwrap()
            .is_empty()
    );

    // 410: the endpoint is disabled, its other deliveries fail, new events skip it.
    store
        .finish_delivery(
            round[0].id,
            round[0].lease,
            &Finish::Gone,
            later,
            rule(later),
        )
        .await
        .unwrap();
    let gone = store.get_webhook(7102).await.unwrap().unwrap();
    assert_eq!(gone.disabled.map(|(_, r)| r), Some(DisabledReason::Gone));
    assert!(
        !store
            .finish_delivery(
                round[1].id,
                round[1].lease,
                &Finish::Delivered { status: 200 },
                later,
                rule(later)
            )
            .await
            .unwrap(),
        "a delivery failed by the disabling is not finished again"
    );
    let of_gone = store.list_deliveries(7102, None, 10).await.unwrap();
    assert!(
        of_gone.iter().all(|d| d.status != DeliveryStatus::Pending),
        "{of_gone:?}"
    );
    finish_ledger(store, 997220, "m_w1", false).await;
    assert_eq!(
        store.list_deliveries(7102, None, 10).await.unwrap().len(),
        of_gone.len()
    );

    // Five days of failures disable an endpoint.
    let before = store.list_deliveries(7101, None, 1).await.unwrap();
    let far = later + Duration::days(6);
    let due = store
        .claim_deliveries(far, far + Duration::seconds(30), 1, &share(1, &[], &[]))
        .await
        .unwrap();
    assert_eq!(due[0].webhook.id, 7101, "{before:?}");
    store
        .finish_delivery(
            due[0].id,
            due[0].lease,
            &Finish::Retry {
                status: Some(500),
                error: "500".into(),
                next_at: far,
            },
            far,
            // Failing without a quiet spell of two days since (as if failing all along).
            FailingRule {
                disable_before: far - Duration::days(5),
                restart_before: now - Duration::days(1),
            },
        )
        .await
        .unwrap();
    let failed = store.get_webhook(7101).await.unwrap().unwrap();
    assert_eq!(
        failed.disabled.map(|(_, r)| r),
        Some(DisabledReason::Failing)
    );
    assert_eq!(store.delivery_backlog().await.unwrap().pending, 0);

    // After two quiet days, a failure begins a new run instead of counting the old one.
    store
        .insert_webhook(&endpoint(7104, "ops", &[LedgerCompleted], Some(&["m_w4"])))
        .await
        .unwrap();
    finish_ledger(store, 997240, "m_w4", false).await;
    let t1 = Utc::now() + Duration::seconds(1);
    let due = store
        .claim_deliveries(t1, t1 + Duration::seconds(30), 10, &share(10, &[], &[]))
        .await
        .unwrap();
    let retry = |next_at| Finish::Retry {
        status: Some(503),
        error: "503".into(),
        next_at,
    };
    store
        .finish_delivery(due[0].id, due[0].lease, &retry(t1), t1, rule(t1))
        .await
        .unwrap();
    let t2 = t1 + Duration::days(6);
    let due = store
        .claim_deliveries(t2, t2 + Duration::seconds(30), 10, &share(10, &[], &[]))
        .await
        .unwrap();
    assert_eq!(due[0].webhook.failing_since, Some(t1.trunc_subsecs(3)));
    store
        .finish_delivery(due[0].id, due[0].lease, &retry(t2), t2, rule(t2))
        .await
        .unwrap();
    let quiet = store.get_webhook(7104).await.unwrap().unwrap();
    assert_eq!(quiet.disabled, None, "a quiet spell is not a failing one");
    assert_eq!(quiet.failing_since, Some(t2.trunc_subsecs(3)));
    // Deleting an endpoint skips what it still had pending.
    finish_ledger(store, 997241, "m_w4", false).await;
    assert!(store.delete_webhook(7104, t2).await.unwrap());
    assert_eq!(
        store.list_deliveries(7104, None, 1).await.unwrap()[0].status,
        DeliveryStatus::Skipped
    );

    // History: finished deliveries and the messages no delivery needs go; pending stay.
    let pending_before = store.delivery_backlog().await.unwrap().pending;
    let far_later = Utc::now() + Duration::days(400);
    let mut removed = 0;
    loop {
        let n = store.purge_webhook_history(far_later, 3).await.unwrap();
        if n == 0 {
            break;
        }
        removed += n;
    }
    assert!(removed > 10, "{removed}");
    assert!(
        store
            .list_deliveries(7101, None, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.delivery_backlog().await.unwrap().pending,
        pending_before
    );

    // Rotation and deletion.
    let batchy = store
        .insert_webhook(&endpoint(
            7103,
            "ops",
            &[BatchCompleted, LedgerCompleted],
            Some(&["m_w3"]),
        ))
        .await
        .unwrap();
    assert!(
        store
            .rotate_webhook_secret(7103, "sealed-new", now + Duration::hours(24), now)
            .await
            .unwrap()
    );
    finish_ledger(store, 997230, "m_w3", false).await;
    let due = store
        .claim_deliveries(
            Utc::now() + Duration::seconds(1),
            far,
            10,
            &share(10, &[], &[]),
        )
        .await
        .unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].sealed_secret, "sealed-new");
    assert_eq!(
        due[0].sealed_previous.as_deref(),
        Some("sealed-7103"),
        "the old secret still signs"
    );
    finish_ledger(store, 997231, "m_w3", false).await;
    assert!(store.delete_webhook(batchy.id, now).await.unwrap());
    assert!(!store.delete_webhook(batchy.id, now).await.unwrap());
    assert!(
        !store
            .rotate_webhook_secret(7103, "x", now, now)
            .await
            .unwrap()
    );
    let skipped = store.list_deliveries(7103, None, 10).await.unwrap();
    assert_eq!(skipped[0].status, DeliveryStatus::Skipped);
    assert!(
        store
            .list_webhooks(Some("ops"), None, 10)
            .await
            .unwrap()
            .iter()
            .all(|w| w.id != 7103)
    );
    assert!(
        store
            .get_webhook(7103)
            .await
            .unwrap()
            .unwrap()
            .deleted_at
            .is_some()
    );
}
