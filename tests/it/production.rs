//! The end-to-end suite on the production backends: PostgreSQL, Kafka (tansu), S3 (moto)
//! and Redis, in the deployment shapes of the operations sheet.

use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::helpers::{Options, assert_error, open_statement, production, spawn_with, statement};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_lives_its_whole_life_on_the_production_backends() {
    let backends = production().await;
    let app = backends.spawn(&[]).await;
    let token = app.user("alice", "merchant_admin", "m_global").await;
    let id = app
        .create_id(&token, statement("m_global", "2026-Q2"))
        .await;
    let done = app.wait_for(&token, &id, "COMPLETED", 90).await;
    let r = app.download(&token, &id).await;
    assert_eq!(r.status(), 200);
    let body = r.bytes().await.unwrap();
    assert_eq!(
        hex::encode(Sha256::digest(&body)),
        done["file"]["sha256"].as_str().unwrap()
    );
    // A draft regenerates into version 2 through Kafka again; both versions stay readable.
    let (draft_id, _) = app.completed(&token, open_statement("m_global"), 90).await;
    assert_eq!(app.regenerate(&token, &draft_id).await.status(), 202);
    let v2 = app.wait_for(&token, &draft_id, "COMPLETED", 90).await;
    assert_eq!(v2["version"], 2);
    for v in [1, 2] {
        let r = app
            .get(&token, &format!("/ledgers/{draft_id}/download?version={v}"))
            .await;
        assert_eq!(r.status(), 200, "version {v}");
    }
    let ready = app
        .client
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let checks: Value = ready.json().await.unwrap();
    for backend in ["store", "queue", "storage", "events", "source", "auth"] {
        assert_eq!(checks["checks"][backend]["status"], "ok", "{checks}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_events_cross_from_a_worker_process_to_a_client_of_an_api_process() {
    use crate::live::{assert_each_completes_in_order, connect};
    let backends = production().await;
    let api = backends.api(&[]).await;
    let data = tempfile::tempdir().unwrap();
    let _worker = worker_process(&backends.vars, data.path());
    let token = api.user("ops", "merchant_operator", "m_global").await;
    let mut socket = connect(&api, &token).await;
    let day0 = chrono::NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
    let mut ids = Vec::new();
    for d in 0..40u64 {
        let period = (day0 + chrono::Days::new(d)).to_string();
        let l = api.create_ok(&token, statement("m_global", &period)).await;
        ids.push(l["id"].as_str().unwrap().to_owned());
    }
    // COMPLETED is emitted by the worker process only: it can reach this client only
    // through Redis.
    assert_each_completes_in_order(&mut socket, &ids, Duration::from_secs(120)).await;
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_only_and_worker_only_processes_share_the_work() {
    let backends = production().await;
    let (api, worker) = backends.api_and_worker().await;
    // The worker process serves no API.
    let r = worker
        .client
        .get(worker.url("/ledgers"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let token = api.user("ops", "platform_admin", "*").await;
    let mut ids = Vec::new();
    for period in ["2026-09", "2026-10", "2026-W40", "2026-10-01"] {
        let created = api.create_ok(&token, statement("m_acme", period)).await;
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        let done = api.wait_for(&token, id, "COMPLETED", 90).await;
        assert_eq!(done["attemptCount"], 1, "each job ran exactly once: {done}");
    }
    worker.stop().await;
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_enqueue_keeps_the_job_and_retry_requeues_it() {
    let backends = production().await;
    // This api process cannot reach its broker.
    let cut_off = backends
        .api(&[("APP_ENV_KAFKA_BROKERS", "127.0.0.1:9")])
        .await;
    let token = cut_off.user("alice", "merchant_operator", "m_acme").await;
    let r = cut_off.create(&token, statement("m_acme", "2026-10")).await;
    let body = assert_error(r, 503, "ENQUEUE_FAILED").await;
    let id = body["error"]["ledger"]["id"].as_str().unwrap().to_owned();
    let kept = cut_off.ledger(&token, &id).await;
    assert_eq!(kept["status"], "REJECTED");
    assert_eq!(kept["failureReason"]["errorCode"], "ENQUEUE_FAILED");
    cut_off.stop().await;

    // The broker is back (a process that reaches it): retry publishes, a worker completes.
    let app = backends.spawn(&[]).await;
    // Each test process signs with its own dev key; the grant lives in the shared database.
    let token = app.user("alice", "merchant_operator", "m_acme").await;
    assert_eq!(app.retry(&token, &id).await.status(), 202);
    let done = app.wait_for(&token, &id, "COMPLETED", 90).await;
    assert_eq!(done["attemptCount"], 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_never_collide_on_ids() {
    let backends = production().await;
    let periods: Vec<String> = (1..=120)
        .map(|d| {
            let day = chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() + chrono::Days::new(d);
            day.to_string()
        })
        .collect();
    // As on the operations sheet: every replica configured with the same node id.
    let same = [("APP_ENV_NODE_ID", "6")];
    let a = backends.api(&same).await;
    let b = backends.api(&same).await;
    let (ta, tb) = (
        a.user("ops", "platform_admin", "*").await,
        b.user("ops", "platform_admin", "*").await,
    );
    let creates = periods.iter().enumerate().map(|(i, p)| {
        let (app, token) = if i % 2 == 0 { (&a, &ta) } else { (&b, &tb) };
        app.create(token, statement("m_acme", p))
    });
    let mut ids = std::collections::HashSet::new();
    for r in futures::future::join_all(creates).await {
        assert_eq!(r.status(), 202, "a collision must never fail a request");
        let body: Value = r.json().await.unwrap();
        assert!(
            ids.insert(body["id"].as_str().unwrap().to_owned()),
            "duplicate id"
        );
    }
    assert_eq!(ids.len(), periods.len());
    a.stop().await;
    b.stop().await;

    // Without a configured node id each process leases its own.
    let c = backends.api(&[]).await;
    let d = backends.api(&[]).await;
    let node = |body: Value| {
        body["id"]
            .as_str()
            .unwrap()
            .parse::<ledger::domain::LedgerId>()
            .unwrap()
            .node_id()
    };
    let tc = c.user("ops", "platform_admin", "*").await;
    let td = d.user("ops", "platform_admin", "*").await;
    let nc = node(c.create_ok(&tc, statement("m_tokyo", "2026-01")).await);
    let nd = node(d.create_ok(&td, statement("m_tokyo", "2026-02")).await);
    assert_ne!(nc, nd, "two live processes lease different node ids");
    c.stop().await;
    d.stop().await;
}

struct WorkerProcess(std::process::Child);

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn worker_process(vars: &[(&'static str, String)], data_dir: &std::path::Path) -> WorkerProcess {
    worker_process_in(vars, data_dir, &crate::helpers::examples_dir())
}

fn worker_process_in(
    vars: &[(&'static str, String)],
    data_dir: &std::path::Path,
    source_dir: &std::path::Path,
) -> WorkerProcess {
    let mut cmd = crate::helpers::ledger_command();
    cmd.arg("serve")
        .env("APP_ENV_APPLICATION_ROLES", "worker")
        .env("APP_ENV_HOST", "127.0.0.1")
        .env("APP_ENV_PORT", "0")
        .env("APP_ENV_DATA_DIR", data_dir)
        .env("APP_ENV_SOURCE_DIR", source_dir)
        .env("APP_ENV_JOB_TIMEOUT_MS", "3000")
        .env("APP_ENV_SWEEP_INTERVAL_MS", "500")
        .env("APP_ENV_LOG_LEVEL", "warn");
    // LEDGER_TEST_LOG_DIR keeps each worker's log for a failure's post-mortem, at
    // LEDGER_TEST_LOG_LEVEL (default info; `info,librdkafka=debug` with a librdkafka `debug`
    // context shows the consumer group's moves).
    match std::env::var_os("LEDGER_TEST_LOG_DIR") {
        Some(dir) => {
            let path = std::path::Path::new(&dir)
                .join(format!("worker-{}.log", uuid::Uuid::new_v4().simple()));
            let log = std::fs::File::create(&path).expect("worker log file");
            let level = std::env::var("LEDGER_TEST_LOG_LEVEL").unwrap_or_else(|_| "info".into());
            cmd.env("APP_ENV_LOG_LEVEL", level)
                .stdout(log.try_clone().expect("log handle"))
                .stderr(log);
        }
        None => {
            cmd.stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
        }
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    WorkerProcess(cmd.spawn().expect("start a worker process"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_survives_a_killed_worker_and_completes_every_ledger_once() {
    let backends = production().await;
    let api = backends.api(&[]).await;
    let token = api.user("ops", "platform_admin", "*").await;
    let data = tempfile::tempdir().unwrap();
    let mut first = worker_process(&backends.vars, data.path());
    let _second = worker_process(&backends.vars, data.path());

    let day0 = chrono::NaiveDate::from_ymd_opt(2025, 12, 1).unwrap();
    let mut ids = Vec::new();
    for chunk in (0..200u64).collect::<Vec<_>>().chunks(25) {
        let creates = chunk.iter().map(|d| {
            let period = (day0 + chrono::Days::new(*d)).to_string();
            api.create(&token, statement("m_global", &period))
        });
        for r in futures::future::join_all(creates).await {
            assert_eq!(r.status(), 202);
            let body: Value = r.json().await.unwrap();
            ids.push(body["id"].as_str().unwrap().to_owned());
        }
    }
    // Kill one worker in the middle of the work.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let done = api
            .get_json(&token, "/ledgers?status=COMPLETED&limit=200")
            .await;
        if done["items"].as_array().unwrap().len() >= 20 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no progress");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    first.0.kill().unwrap();
    first.0.wait().unwrap();

    for id in &ids {
        api.wait_for(&token, id, "COMPLETED", 180).await;
        let events = api.get_json(&token, &format!("/ledgers/{id}/events")).await;
        let completed = events["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["status"] == "COMPLETED")
            .count();
        assert_eq!(completed, 1, "ledger {id} completed exactly once: {events}");
    }
    // One object per ledger version in the bucket.
    let storage_url = &backends
        .vars
        .iter()
        .find(|(k, _)| *k == "APP_ENV_STORAGE_URL")
        .unwrap()
        .1;
    let (bucket, prefix) = storage_url
        .trim_start_matches("s3://")
        .split_once('/')
        .unwrap();
    let endpoint = &backends
        .vars
        .iter()
        .find(|(k, _)| *k == "APP_ENV_S3_ENDPOINT")
        .unwrap()
        .1;
    let listing = reqwest::Client::new()
        .get(format!(
            "{endpoint}/{bucket}?list-type=2&prefix={prefix}/&max-keys=1000"
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // One object per attempt that reached the end of its upload: every recorded file is
    // there, and the only others are attempts of the killed worker that never completed.
    let keys: Vec<&str> = listing
        .split("<Key>")
        .skip(1)
        .filter_map(|k| k.split("</Key>").next())
        .collect();
    let mut retried = 0;
    for id in &ids {
        let ledger_id: ledger::domain::LedgerId = id.parse().unwrap();
        let recorded = api.store.get_file(ledger_id, 1).await.unwrap().unwrap();
        assert!(
            keys.iter().any(|k| k.ends_with(&recorded.object_key)),
            "{} is not in the bucket",
            recorded.object_key
        );
        let attempts = api
            .store
            .get_ledger(ledger_id)
            .await
            .unwrap()
            .unwrap()
            .attempt_count;
        retried += usize::try_from(attempts - 1).unwrap();
    }
    assert!(
        keys.len() >= ids.len() && keys.len() <= ids.len() + retried,
        "{} objects for {} ledgers and {retried} extra attempts",
        keys.len(),
        ids.len()
    );
    drop(first);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_worker_stops_gracefully_every_ledger_still_completes() {
    // A broker of its own, so no other test's groups share its coordinator. Under full-suite
    // load the remaining member was sometimes not given the leaver's partition for over a
    // minute (with both the cooperative-sticky and the range assignor); the consumer's
    // 60 s rebalance timeout and the sweep's redelivery bound that wait.
    let broker = crate::outages::Private::start(crate::outages::Kind::Kafka).await;
    let mut backends = production().await;
    backends.vars = backends.with(&[("APP_ENV_KAFKA_BROKERS", &broker.address())]);
    let api = backends.api(&[]).await;
    let token = api.user("ops", "platform_admin", "*").await;
    let data = tempfile::tempdir().unwrap();
    let mut leaving = worker_process(&backends.vars, data.path());
    let _staying = worker_process(&backends.vars, data.path());
    // Three merchants are three message keys, spread over the topic's three partitions.
    let merchants = ["m_acme", "m_global", "m_tokyo"];
    let create_batch = |month: u32| {
        let api = &api;
        let token = &token;
        async move {
            let mut ids = Vec::new();
            for m in merchants {
                for day in 1..=4 {
                    let period = format!("2025-{month:02}-{day:02}");
                    ids.push(
                        api.create_ok(token, statement(m, &period)).await["id"]
                            .as_str()
                            .unwrap()
                            .to_owned(),
                    );
                }
            }
            ids
        }
    };
    for id in create_batch(1).await {
        api.wait_for(&token, &id, "COMPLETED", 120).await;
    }

    // A rolling restart: SIGTERM, a clean exit, and the other worker takes over at once
    // (the leaving consumer leaves the group instead of waiting out its session).
    signal(&leaving.0, "-TERM");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = leaving.0.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "SIGTERM ignored");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(status.success(), "graceful exit: {status}");
    let t0 = std::time::Instant::now();
    // What a user sees is asserted: every ledger completes. Whether the partition moved at
    // once or the sweep's redelivery (after APP_ENV_JOB_TIMEOUT_MS, 3 s here) carried it is
    // not: on tansu under load the hand-over itself sometimes stalls (see the note above);
    // the elapsed time is printed to tell the two apart.
    for id in create_batch(2).await {
        api.wait_for(&token, &id, "COMPLETED", 120).await;
    }
    eprintln!(
        "after the graceful leave, 12 ledgers on 3 keys completed in {:?}",
        t0.elapsed()
    );
    api.stop().await;
}

fn signal(child: &std::process::Child, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_worker_that_resumes_cannot_overwrite_the_newer_attempt() {
    let backends = production().await;
    let source = crate::helpers::source_with("m_big", 400_000, Some("UTC"));
    let api = spawn_with(Options {
        vars: backends.with(&[("APP_ENV_APPLICATION_ROLES", "api")]),
        source_dir: Some(source.path().to_path_buf()),
        ..Options::default()
    })
    .await;
    let token = api.user("ops", "merchant_operator", "m_big").await;
    let data = tempfile::tempdir().unwrap();
    let zombie = worker_process_in(&backends.vars, data.path(), source.path());
    let id = api.create_id(&token, statement("m_big", "2026")).await;
    api.wait_for(&token, &id, "PROCESSING", 60).await;
    // Freeze it mid-job, well past its 3 s lease.
    signal(&zombie.0, "-STOP");
    let rescuer = worker_process_in(&backends.vars, data.path(), source.path());
    let done = api.wait_for(&token, &id, "COMPLETED", 180).await;
    assert_eq!(done["attemptCount"], 2, "{done}");
    // The zombie wakes up and runs on: whatever it does is fenced off.
    signal(&zombie.0, "-CONT");
    tokio::time::sleep(std::time::Duration::from_secs(8)).await;
    let after = api.ledger(&token, &id).await;
    assert_eq!(after["status"], "COMPLETED");
    assert_eq!(after["attemptCount"], 2);
    assert_eq!(after["file"], done["file"]);
    let r = api.download(&token, &id).await;
    assert_eq!(r.status(), 200);
    let body = r.bytes().await.unwrap();
    assert_eq!(
        hex::encode(Sha256::digest(&body)),
        done["file"]["sha256"].as_str().unwrap()
    );
    drop(rescuer);
    drop(zombie);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_from_the_cli_reaches_every_api_process_at_once() {
    let backends = production().await;
    let redis =
        std::env::var("LEDGER_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let vars = backends.with(&[
        ("APP_ENV_APPLICATION_ROLES", "api"),
        ("APP_ENV_POLICY_CACHE_TTL_MS", "600000"),
        ("APP_ENV_REDIS_URL", &redis),
    ]);
    let a = spawn_with(Options {
        vars: vars.clone(),
        ..Options::default()
    })
    .await;
    let b = spawn_with(Options {
        vars: vars.clone(),
        ..Options::default()
    })
    .await;
    let (ta, tb) = (
        a.user("vera", "merchant_viewer", "m_acme").await,
        b.token("vera"),
    );
    for (app, token) in [(&a, &ta), (&b, &tb)] {
        let r = app.get(token, "/ledgers?merchantId=m_acme").await;
        assert_eq!(r.status(), 200, "cached as allowed");
    }
    let cli = crate::helpers::ledger_command()
        .args(["policy", "revoke", "vera", "merchant_viewer", "m_acme"])
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("ledger policy revoke");
    assert!(cli.status.success(), "{cli:?}");
    // Well inside the 10-minute cache TTL, both processes refuse.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    for (app, token) in [(&a, &ta), (&b, &tb)] {
        loop {
            let status = app.get(token, "/ledgers?merchantId=m_acme").await.status();
            if status == 403 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "revocation not seen: {status}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_down_during_upload_rejects_after_bounded_retries_and_retry_completes() {
    let backends = production().await;
    let api = backends.api(&[]).await;
    let token = api.user("ops", "merchant_operator", "m_acme").await;
    // A worker whose S3 endpoint does not answer.
    let broken = backends
        .worker(&[("APP_ENV_S3_ENDPOINT", "http://127.0.0.1:9")])
        .await;
    let id = api.create_id(&token, statement("m_acme", "2026-10")).await;
    let rejected = api.wait_for(&token, &id, "REJECTED", 120).await;
    assert_eq!(
        rejected["failureReason"]["errorCode"], "JOB_EXECUTION_FAILED",
        "{rejected}"
    );
    assert_eq!(rejected["failureReason"]["retryable"], true);
    // What the owner sees names no internal host, port, bucket or key: the log has those.
    let message = rejected["failureReason"]["message"].as_str().unwrap();
    let bucket = backends
        .vars
        .iter()
        .find(|(k, _)| *k == "APP_ENV_STORAGE_URL")
        .map(|(_, v)| {
            v.trim_start_matches("s3://")
                .split('/')
                .next()
                .unwrap()
                .to_owned()
        })
        .unwrap();
    for internal in ["127.0.0.1", ":9", "http", &bucket, "ledgers/"] {
        assert!(!message.contains(internal), "{internal:?} in {message:?}");
    }
    assert!(
        message.starts_with("storing the document failed; retry the ledger")
            && message.contains(&id),
        "{message}"
    );
    let timeline = api
        .get(&token, &format!("/ledgers/{id}/events"))
        .await
        .text()
        .await
        .unwrap();
    for internal in ["127.0.0.1", &bucket] {
        assert!(
            !timeline.contains(internal),
            "{internal:?} in the timeline: {timeline}"
        );
    }
    broken.stop().await;

    // Storage is back (a redeployed worker that reaches it): a retry completes the ledger.
    // Its own consumer group keeps this test about storage, not about Kafka rebalancing
    // (which the scale-out and graceful hand-over tests cover).
    let group = format!("{}-redeployed", uuid::Uuid::new_v4().simple());
    let worker = backends.worker(&[("APP_ENV_KAFKA_GROUP_ID", &group)]).await;
    assert_eq!(api.retry(&token, &id).await.status(), 202);
    let done = api.wait_for(&token, &id, "COMPLETED", 120).await;
    assert_eq!(done["attemptCount"], 2);
    assert_eq!(api.download(&token, &id).await.status(), 200);
    worker.stop().await;
    api.stop().await;
}
