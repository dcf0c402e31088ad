//! What an operator relies on: the metrics an alert or a dashboard reads, the log lines of a
//! request and of a job, and a graceful stop on SIGTERM.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{Served, spawn_app, statement};

/// Lines of the exposition for `name` (its samples, with or without labels).
fn samples<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .collect()
}

#[tokio::test]
async fn metrics_carry_the_names_and_labels_alerts_and_dashboards_use() {
    let app = spawn_app().await;
    let token = app.user("ops", "merchant_operator", "m_acme").await;
    let (id, _) = app
        .completed(&token, statement("m_acme", "2026-10"), 30)
        .await;
    assert_eq!(
        app.get(&token, &format!("/ledgers/{id}")).await.status(),
        200
    );
    assert_eq!(
        reqwest::get(format!("{}/no/such/route/{id}", app.base))
            .await
            .unwrap()
            .status(),
        404
    );

    let r = reqwest::get(format!("{}/metrics", app.base)).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text().await.unwrap();

    // Jobs by outcome; the failure codes exist at zero before any failure, so `rate()` sees
    // the first one.
    let jobs = samples(&text, "ledger_jobs_total");
    assert!(
        jobs.iter()
            .any(|l| l.contains(r#"status="COMPLETED""#) && !l.ends_with(" 0")),
        "{jobs:?}"
    );
    for code in ["FETCH_DATA_ERROR", "JOB_EXECUTION_FAILED", "ENQUEUE_FAILED"] {
        assert!(
            jobs.iter().any(|l| l.contains(r#"status="REJECTED""#)
                && l.contains(&format!(r#"error_code="{code}""#))),
            "{code} in {jobs:?}"
        );
    }
    // Real histograms (aggregatable across replicas), per phase.
    assert!(text.contains("# TYPE ledger_job_phase_duration_seconds histogram"));
    for phase in ["FETCH", "GENERATE", "TOTAL"] {
        assert!(
            samples(&text, "ledger_job_phase_duration_seconds_bucket")
                .iter()
                .any(|l| l.contains(&format!(r#"phase="{phase}""#)) && l.contains("le=")),
            "phase {phase}"
        );
    }
    for name in [
        "ledger_stalled_jobs_reset_total",
        "ledger_ws_emit_failures_total",
        "ledger_ws_clients",
        "ledger_log_lines_dropped_total",
    ] {
        assert_eq!(samples(&text, name).len(), 1, "{name} in\n{text}");
        assert!(text.contains(&format!("# HELP {name} ")), "{name} has help");
    }
    // HTTP by route template: the ledger id never becomes a label value (bounded series).
    assert!(text.contains("# TYPE ledger_http_request_duration_seconds histogram"));
    let requests = samples(&text, "ledger_http_requests_total");
    assert!(
        requests
            .iter()
            .any(|l| l.contains(r#"route="/v1/api/ledger/ledgers/{id}""#)
                && l.contains(r#"method="GET""#)
                && l.contains(r#"status="200""#)),
        "{requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|l| l.contains(r#"route="unmatched""#) && l.contains(r#"status="404""#)),
        "{requests:?}"
    );
    assert!(
        !text.contains(&id),
        "a ledger id leaked into a label:\n{text}"
    );
    assert!(
        samples(&text, "ledger_http_request_duration_seconds_bucket")
            .iter()
            .any(|l| l.contains(r#"route="/v1/api/ledger/ledgers""#)
                && l.contains(r#"method="POST""#))
    );
    // On Kafka, the lag of each partition held, reported every 10 s once the consumer holds
    // its partitions.
    if std::env::var("LEDGER_TEST_BACKENDS").as_deref() == Ok("production") {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = reqwest::get(format!("{}/metrics", app.base))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let lag = samples(&text, "ledger_kafka_consumer_lag");
            if lag.iter().any(|l| l.contains("partition=\"")) {
                break;
            }
            assert!(Instant::now() < deadline, "no lag reported: {lag:?}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    // The process metrics every Prometheus client exports.
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "process_open_fds",
    ] {
        assert_eq!(samples(&text, name).len(), 1, "{name}");
    }
    app.stop().await;
}

#[tokio::test]
async fn sigterm_mid_job_releases_it_to_pending_exits_zero_and_the_next_process_completes_it() {
    let source = crate::helpers::source_with("m_big", 400_000, Some("UTC"));
    let data = crate::helpers::data_dir();
    let (backends, token) = crate::helpers::operator_on(data.path(), "m_big").await;
    let client = reqwest::Client::new();
    // A grace period far shorter than the job: it cannot finish, so it is released.
    let mut first = Served::start(
        data.path(),
        source.path(),
        &backends,
        &[("APP_ENV_SHUTDOWN_TIMEOUT_MS", "300")],
    );
    first.ready(&client).await;
    let id = first
        .create(&client, &token, &statement("m_big", "2026"))
        .await;
    first.wait_for(&client, &token, &id, "PROCESSING", 30).await;
    let t0 = Instant::now();
    let status = first.terminate(Duration::from_secs(20)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "graceful exit:\n{}",
        first.log_text()
    );
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "the grace period bounds the stop: {:?}",
        t0.elapsed()
    );
    let logs = first.log_text();
    assert!(
        logs.lines()
            .any(|l| l.contains("RELEASED (shutdown)") && l.contains(&format!("ledgerId={id}"))),
        "an operator sees the release:\n{logs}"
    );

    // An api-only process reads the store as the stop left it: PENDING, not PROCESSING.
    let api = Served::start(
        data.path(),
        source.path(),
        &backends,
        &[("APP_ENV_APPLICATION_ROLES", "api")],
    );
    api.ready(&client).await;
    let left = api.ledger(&client, &token, &id).await;
    assert_eq!(left["status"], "PENDING", "{left}");
    assert_eq!(left["attemptCount"], 1, "{left}");
    drop(api);

    // The next worker takes it at once: the released job went back on the queue. (Had it
    // not, on Kafka it would wait for the sweep, a job timeout — 120 s — after its enqueue.)
    let second = Served::start(data.path(), source.path(), &backends, &[]);
    second.ready(&client).await;
    let done = second.wait_for(&client, &token, &id, "COMPLETED", 60).await;
    assert_eq!(done["attemptCount"], 2, "{done}");
}

#[tokio::test]
async fn sigterm_lets_a_running_job_finish_within_the_grace_period_and_logs_say_what_happened() {
    let source = crate::helpers::source_with("m_mid", 400_000, Some("UTC"));
    let data = crate::helpers::data_dir();
    let (backends, token) = crate::helpers::operator_on(data.path(), "m_mid").await;
    let client = reqwest::Client::new();
    let mut served = Served::start(
        data.path(),
        source.path(),
        &backends,
        &[
            ("APP_ENV_SHUTDOWN_TIMEOUT_MS", "60000"),
            ("APP_ENV_LOG_FORMAT", "json"),
        ],
    );
    served.ready(&client).await;
    let r = client
        .post(format!("{}/v1/api/ledger/ledgers", served.base))
        .bearer_auth(&token)
        .header("x-request-id", "req-ops-test-1")
        .json(&statement("m_mid", "2026"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["x-request-id"], "req-ops-test-1");
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    served
        .wait_for(&client, &token, &id, "PROCESSING", 30)
        .await;
    let status = served.terminate(Duration::from_secs(60)).await;
    assert_eq!(status.code(), Some(0), "{}", served.log_text());

    // Every line is one JSON object; the request and each phase have their line.
    let lines: Vec<Value> = served
        .log_text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let request = lines
        .iter()
        .find(|l| l["requestId"] == "req-ops-test-1")
        .expect("a line for the request");
    assert_eq!(request["route"], "/v1/api/ledger/ledgers");
    assert_eq!(request["method"], "POST");
    assert_eq!(request["status"], "202");
    assert!(request["latencyMs"].as_f64().is_some(), "{request}");
    for phase in [
        "FETCH_START",
        "FETCH_DONE",
        "GENERATE_START",
        "GENERATE_DONE",
        "UPLOAD_DONE",
        "COMPLETED",
    ] {
        let line = lines
            .iter()
            .find(|l| l["message"] == phase && l["ledgerId"] == id.as_str())
            .unwrap_or_else(|| panic!("no {phase} line for {id}"));
        assert_eq!(line["merchantId"], "m_mid", "{line}");
        assert_eq!(line["type"], "STATEMENT", "{line}");
        assert_eq!(line["period"], "2026", "{line}");
        assert!(
            line["attemptCount"] == 1 || line["attemptCount"] == "1",
            "{line}"
        );
    }

    // It finished after the stop was asked for, inside the grace period.
    let position = |message: &str| {
        lines
            .iter()
            .position(|l| {
                l["message"] == message && (l["ledgerId"].is_null() || l["ledgerId"] == id.as_str())
            })
            .unwrap_or_else(|| panic!("no {message} line"))
    };
    assert!(position("shutdown requested") < position("COMPLETED"));
    assert!(position("COMPLETED") < position("ledger stopped"));

    // COMPLETED on the first attempt.
    let api = Served::start(
        data.path(),
        source.path(),
        &backends,
        &[("APP_ENV_APPLICATION_ROLES", "api")],
    );
    api.ready(&client).await;
    let done = api.ledger(&client, &token, &id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["attemptCount"], 1, "{done}");
}

/// `ledger_log_lines_dropped_total` of the process at `base`, with its HELP line checked.
async fn log_lines_dropped(client: &reqwest::Client, base: &str) -> u64 {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("# HELP ledger_log_lines_dropped_total "),
        "{text}"
    );
    let samples = samples(&text, "ledger_log_lines_dropped_total");
    assert_eq!(samples.len(), 1, "{samples:?}");
    samples[0]
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("not a count: {}", samples[0]))
}

#[tokio::test]
async fn a_stdout_nobody_reads_drops_log_lines_but_never_a_request_or_a_job() {
    use futures::StreamExt;
    use std::io::BufRead;

    let source = crate::helpers::source_with("m_stall", 2_000, Some("UTC"));
    let data = crate::helpers::data_dir();
    let (backends, token) = crate::helpers::operator_on(data.path(), "m_stall").await;
    // A log shipper that stopped reading: the pipe's read end stays open, nothing reads it.
    let (unread, writer) = std::io::pipe().unwrap();
    let mut served = Served::start_with_output(
        data.path(),
        source.path(),
        &backends,
        &[("APP_ENV_LOG_LEVEL", "info")],
        writer.into(),
        std::process::Stdio::null(),
    );
    // Generous: a stuck service never answers; a slow machine still does within this.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    served.ready(&client).await;

    // Each request logs a line: more than the pipe (~300 lines) and the queue hold together.
    // Without a token, so the debug build's signature checks do not make this slow; the 401
    // is the service's answer all the same.
    let requests = ledger::telemetry::LOG_QUEUE_LINES + 3_000;
    let url = format!("{}/v1/api/ledger/ledgers/1", served.base);
    let answered = futures::stream::iter(0..requests)
        .map(|i| {
            let (client, url) = (&client, &url);
            async move {
                let r = client.get(url).send().await;
                let r = r.unwrap_or_else(|e| panic!("request {i} not answered: {e}"));
                assert_eq!(r.status(), 401, "request {i}");
            }
        })
        .buffer_unordered(16)
        .count()
        .await;
    assert_eq!(answered, requests);
    assert!(log_lines_dropped(&client, &served.base).await > 0);

    // Statements are still made while the logs are stuck.
    let id = served
        .create(&client, &token, &statement("m_stall", "2026-10"))
        .await;
    served.wait_for(&client, &token, &id, "COMPLETED", 60).await;

    // The shipper reads again: once the backlog is through, a line says what was lost.
    let notice = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(unread)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("log lines dropped"))
    });
    let notice = tokio::time::timeout(Duration::from_secs(60), notice)
        .await
        .expect("no notice within 60 s of reading again")
        .unwrap()
        .expect("stdout ended without a notice");
    assert!(notice.contains("level=warn"), "{notice}");
    let dropped: u64 = notice
        .split(' ')
        .find_map(|f| f.strip_prefix("dropped="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {notice}"));
    assert!(dropped > 0, "{notice}");
    assert_eq!(
        served.terminate(Duration::from_secs(20)).await.code(),
        Some(0)
    );
}

#[tokio::test]
async fn sigterm_after_the_log_reader_went_away_exits_zero_and_releases_the_running_job() {
    use std::io::BufRead;

    let source = crate::helpers::source_with("m_gone", 400_000, Some("UTC"));
    let data = crate::helpers::data_dir();
    let (backends, token) = crate::helpers::operator_on(data.path(), "m_gone").await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    // stdout and stderr in one pipe, as a container runtime or a sidecar collects them.
    let (reader, writer) = std::io::pipe().unwrap();
    let mut first = Served::start_with_output(
        data.path(),
        source.path(),
        &backends,
        &[("APP_ENV_SHUTDOWN_TIMEOUT_MS", "300")],
        writer.try_clone().unwrap().into(),
        writer.into(),
    );
    // The reader follows the logs until the job runs, then goes away (a crashed sidecar,
    // `| head`): every later write fails with EPIPE.
    let reading = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(reader)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.contains("FETCH_START"))
    });
    first.ready(&client).await;
    let id = first
        .create(&client, &token, &statement("m_gone", "2026"))
        .await;
    let started = tokio::time::timeout(Duration::from_secs(60), reading).await;
    assert!(
        matches!(started, Ok(Ok(true))),
        "the job never started: {started:?}"
    );

    let t0 = Instant::now();
    let status = first.terminate(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0));
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "the grace period bounds the stop: {:?}",
        t0.elapsed()
    );

    // Released at once, not left PROCESSING for the sweep.
    let api = Served::start(
        data.path(),
        source.path(),
        &backends,
        &[("APP_ENV_APPLICATION_ROLES", "api")],
    );
    api.ready(&client).await;
    let left = api.ledger(&client, &token, &id).await;
    assert_eq!(left["status"], "PENDING", "{left}");
    assert_eq!(left["attemptCount"], 1, "{left}");
}
