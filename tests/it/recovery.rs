//! Worker death and recovery: expired leases are swept back into the queue, a late write
//! of a dead attempt is fenced off, and a killed process loses nothing.

use std::time::{Duration, Instant};

use crate::helpers::{Served, source_with, spawn_role, statement};
use chrono::Utc;
use ledger::domain::{FailureReason, FileInfo, LedgerId, Stage, Timezone};
use ledger::store::{CompletedFile, PhaseRecord};

#[tokio::test]
async fn an_expired_lease_is_swept_and_the_dead_attempt_is_fenced_off() {
    // The api process stores the job; nobody consumes yet.
    let api = spawn_role("api", &[]).await;
    let token = api.user("alice", "merchant_operator", "m_acme").await;
    let created = api.create_ok(&token, statement("m_acme", "2026-10")).await;
    let id: LedgerId = created["id"].as_str().unwrap().parse().unwrap();

    // A worker claims it and dies: its lease runs out.
    let now = Utc::now();
    let dead = api
        .store
        .claim(id, now, now + chrono::Duration::milliseconds(200))
        .await
        .unwrap();
    assert_eq!(dead.unwrap().attempt_count, 1);

    // A worker process on the same data dir sweeps, re-claims and completes it as attempt 2.
    let worker = api
        .worker_beside(&[
            ("APP_ENV_JOB_TIMEOUT_MS", "300"),
            ("APP_ENV_SWEEP_INTERVAL_MS", "100"),
        ])
        .await;
    let done = api.wait_for(&token, &id.to_string(), "COMPLETED", 30).await;
    assert_eq!(done["attemptCount"], 2);

    // The dead attempt wakes up: every write it tries is refused.
    let store = &api.store;
    let reason = FailureReason {
        error_code: "JOB_EXECUTION_FAILED".into(),
        message: "late".into(),
        retryable: true,
        at: Utc::now(),
    };
    assert!(store.fail(id, 1, &reason).await.unwrap().is_none());
    assert!(!store.renew_lease(id, 1, Utc::now()).await.unwrap());
    assert!(
        !store
            .record_phases(
                id,
                1,
                &[PhaseRecord {
                    phase: "UPLOAD_DONE",
                    detail: None,
                    at: Utc::now()
                }]
            )
            .await
            .unwrap()
    );
    // Sealed with the merchant's real key: refused for the lease alone.
    let real = store.get_file(id, 1).await.unwrap().expect("the file");
    let forged = CompletedFile {
        info: FileInfo {
            version: 1,
            content_type: "text/csv".into(),
            size_bytes: 1,
            sha256: "00".repeat(32),
            file_name: "x.csv".into(),
            shredded_at: None,
        },
        object_key: "elsewhere".into(),
        header_sha256: "00".repeat(32),
        manifest: "forged".into(),
        key_id: real.key_id.expect("a format-2 file names its merchant key"),
    };
    let late = store
        .complete(id, 1, &forged, Stage::Final, Timezone::UTC, Utc::now(), &[])
        .await;
    assert!(late.unwrap().is_none());
    let after = api.ledger(&token, &id).await;
    assert_eq!(after["status"], "COMPLETED");
    assert_eq!(after["file"]["sha256"], done["file"]["sha256"]);
    let events = api.get_json(&token, &format!("/ledgers/{id}/events")).await;
    let attempts: Vec<u64> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["status"] == "PROCESSING")
        .map(|e| e["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, [1, 2]);
    let pendings = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["status"] == "PENDING")
        .count();
    assert_eq!(pendings, 2, "created, then put back by the sweep");
    worker.stop().await;
    api.stop().await;
}

#[tokio::test]
async fn a_job_that_stalls_too_often_is_rejected() {
    let app = spawn_role("api", &[("APP_ENV_MAX_ATTEMPTS", "1")]).await;
    let token = app.user("alice", "merchant_operator", "m_acme").await;
    let created = app.create_ok(&token, statement("m_acme", "2026-10")).await;
    let id: LedgerId = created["id"].as_str().unwrap().parse().unwrap();
    let now = Utc::now();
    app.store.claim(id, now, now).await.unwrap().unwrap();
    let worker = app
        .worker_beside(&[
            ("APP_ENV_MAX_ATTEMPTS", "1"),
            ("APP_ENV_SWEEP_INTERVAL_MS", "100"),
        ])
        .await;
    let rejected = app.wait_for(&token, &id.to_string(), "REJECTED", 30).await;
    assert_eq!(
        rejected["failureReason"]["errorCode"],
        "JOB_EXECUTION_FAILED"
    );
    assert_eq!(rejected["attemptCount"], 1);
    // A user retry brings it back, and this time it completes.
    assert_eq!(app.retry(&token, &id).await.status(), 202);
    let done = app.wait_for(&token, &id.to_string(), "COMPLETED", 30).await;
    assert_eq!(done["attemptCount"], 2);
    worker.stop().await;
    app.stop().await;
}

/// Short leases and sweeps, so a killed attempt is found quickly.
const FAST_RECOVERY: [(&str, &str); 2] = [
    ("APP_ENV_JOB_TIMEOUT_MS", "1500"),
    ("APP_ENV_SWEEP_INTERVAL_MS", "200"),
];

#[tokio::test]
async fn kill_dash_nine_mid_job_loses_nothing() {
    let source = source_with("m_big", 400_000, Some("UTC"));
    let data = crate::helpers::data_dir();
    let client = reqwest::Client::new();
    // In the production run: PostgreSQL, Kafka, S3 and Redis shared by both processes.
    let (backends, token) = crate::helpers::operator_on(data.path(), "m_big").await;
    let mut first = Served::start(data.path(), source.path(), &backends, &FAST_RECOVERY);
    first.ready(&client).await;
    let mut ids = Vec::new();
    for period in ["2026", "2026-Q2", "2026-03", "2026-W10"] {
        ids.push(
            first
                .create(&client, &token, &statement("m_big", period))
                .await,
        );
    }
    // Kill the process while the big first job is PROCESSING. (60 s: in the production
    // run the process's consumers form a new group first, and on the test broker every
    // member that joins restarts the rebalance, 5 s or more a round.)
    first
        .wait_for(&client, &token, &ids[0], "PROCESSING", 60)
        .await;
    first.child.kill().unwrap(); // SIGKILL
    first.child.wait().unwrap();

    let second = Served::start(data.path(), source.path(), &backends, &FAST_RECOVERY);
    second.ready(&client).await;
    for id in &ids {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let l = second.ledger(&client, &token, id).await;
            if l["status"] == "COMPLETED" {
                if id == &ids[0] {
                    assert_eq!(l["attemptCount"], 2, "the killed attempt was 1: {l}");
                }
                break;
            }
            assert_ne!(l["status"], "REJECTED", "{l}");
            assert!(Instant::now() < deadline, "ledger {id} not completed: {l}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    drop(second);
}
