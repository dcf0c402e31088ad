//! TLS to the backends: the service on a PostgreSQL and a Redis that accept nothing but TLS,
//! with certificates from a private CA (`scripts/services.sh` makes both), verified the way
//! a production deployment verifies them — and refused when the CA is the wrong one or the
//! client does not speak TLS.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{
    Options, Served, TlsServers, ledger_command, spawn_with, statement, tls_servers,
};
use crate::live::{connect, next_json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_lives_its_whole_life_on_a_tls_only_postgresql_verified_with_verify_full() {
    let tls = tls_servers();
    let database = tls.database().await;
    let url = TlsServers::with_sslmode(&database.url, "verify-full", Some(&tls.ca_file));
    // spawn_with migrates the database first, as `ledger migrate` does.
    let mut vars = vec![("APP_ENV_DATABASE_URL", url)];
    vars.extend(crate::helpers::identity());
    let app = spawn_with(Options {
        vars,
        ..Options::default()
    })
    .await;
    let token = app.user("alice", "merchant_admin", "m_global").await;
    let id = app
        .create_id(&token, statement("m_global", "2026-Q2"))
        .await;
    app.wait_for(&token, &id, "COMPLETED", 60).await;
    let r = app.download(&token, &id).await;
    assert_eq!(r.status(), 200);
    let ready: Value = app
        .client
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["store"]["status"], "ok", "{ready}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_policy_changes_cross_a_tls_only_redis_with_a_private_ca() {
    let tls = tls_servers();
    let made = tls.database().await;
    let database = TlsServers::with_sslmode(&made.url, "verify-full", Some(&tls.ca_file));
    let ca = tls.ca_file.display().to_string();
    let channel = format!("ledger.tls.{}.events", uuid::Uuid::new_v4().simple());
    // No snapshot of an earlier run may answer for this database's revisions.
    let pem = std::fs::read(&tls.ca_file).unwrap();
    let client = ledger::config::RedisServer::new(tls.redis_url.clone())
        .with_root_ca(pem)
        .client()
        .unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let () = redis::cmd("DEL")
        .arg(ledger::auth::PolicyCacheConfig::default().grants_key())
        .query_async(&mut raw)
        .await
        .unwrap();

    let backends = vec![
        ("APP_ENV_DATABASE_URL", database.clone()),
        ("APP_ENV_WEBSOCKET_REDIS_URL", tls.redis_url.clone()),
        ("APP_ENV_WEBSOCKET_REDIS_CHANNEL", channel),
        ("APP_ENV_REDIS_URL", tls.redis_url.clone()),
        ("APP_ENV_REDIS_TLS_CA_FILE", ca.clone()),
    ]
    .into_iter()
    .chain(crate::helpers::identity())
    .collect::<Vec<_>>();
    // An hour-long policy cache: a grant shows at once only if its announcement crossed
    // Redis.
    let mut vars = backends.clone();
    vars.push(("APP_ENV_POLICY_CACHE_TTL_MS", "3600000".into()));
    let app = spawn_with(Options {
        vars,
        ..Options::default()
    })
    .await;
    let ready = wait_ready(&app.client, &app.base).await;
    assert_eq!(ready["checks"]["events"]["status"], "ok", "{ready}");

    // A status event goes out to Redis and comes back to this client through the
    // subscription.
    let alice = app.user("alice", "merchant_admin", "m_global").await;
    let mut socket = connect(&app, &alice).await;
    let id = app
        .create_id(&alice, statement("m_global", "2026-Q2"))
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "no COMPLETED event for {id}");
        let Some(event) = next_json(&mut socket, Duration::from_secs(1)).await else {
            continue;
        };
        if event["event"] == "ledger.status"
            && event["ledgerId"] == id.as_str()
            && event["status"] == "COMPLETED"
        {
            break;
        }
    }

    // A grant made with the CLI reaches the api process at once, through rediss://.
    let bob = app.token("bob");
    let path = format!("/ledgers/{id}");
    assert_ne!(
        app.get(&bob, &path).await.status(),
        200,
        "bob has no grant yet"
    );
    let granted = ledger_command()
        .args(["policy", "grant", "bob", "merchant_viewer", "m_global"])
        .envs(backends.iter().map(|(k, v)| (*k, v.as_str())))
        .env("APP_ENV_DATA_DIR", app.data_dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&granted.stderr);
    assert!(granted.status.success(), "{stderr}");
    assert!(
        !stderr.contains("warning"),
        "the announcement failed: {stderr}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.get(&bob, &path).await.status() != 200 {
        assert!(
            Instant::now() < deadline,
            "the grant did not arrive through Redis"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}

/// `ledger` run with `vars` (and a throw-away data dir), killed if it outlives `within`.
fn run_ledger(args: &[&str], vars: &[(&str, String)], within: Duration) -> (bool, String) {
    let data = tempfile::tempdir().unwrap();
    let mut child = ledger_command()
        .args(args)
        .envs(crate::helpers::identity())
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .env("APP_ENV_DATA_DIR", data.path())
        .env("APP_ENV_HOST", "127.0.0.1")
        .env("APP_ENV_PORT", "0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + within;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn verify_full_against_the_wrong_ca_stops_the_process_naming_the_database() {
    let tls = tls_servers();
    let url = TlsServers::with_sslmode(&tls.database_url, "verify-full", Some(&tls.other_ca_file));
    let (ok, output) = run_ledger(
        &["serve"],
        &[("APP_ENV_DATABASE_URL", url)],
        Duration::from_secs(30),
    );
    assert!(!ok, "served on an unverified database: {output}");
    assert!(output.contains("APP_ENV_DATABASE_URL"), "{output}");
    assert!(output.contains("certificate"), "{output}");
    assert!(!output.contains("built without TLS"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_text_to_the_tls_only_postgresql_is_refused() {
    let tls = tls_servers();
    // A database of its own: the server outlives the run, and an earlier run's migrations
    // must not decide this one.
    let database = tls.database().await;
    let url = TlsServers::with_sslmode(&database.url, "disable", None);
    let (ok, output) = run_ledger(
        &["migrate"],
        &[("APP_ENV_DATABASE_URL", url)],
        Duration::from_secs(30),
    );
    assert!(!ok, "{output}");
    assert!(output.contains("APP_ENV_DATABASE_URL"), "{output}");
    // The server's own refusal: it accepts TLS connections only.
    assert!(output.contains("no encryption"), "{output}");

    // The same server, the right CA: a verified connection migrates.
    let url = TlsServers::with_sslmode(&database.url, "verify-full", Some(&tls.ca_file));
    let (ok, output) = run_ledger(
        &["migrate"],
        &[("APP_ENV_DATABASE_URL", url)],
        Duration::from_secs(30),
    );
    assert!(ok, "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_certificate_from_another_ca_is_not_trusted_and_readyz_names_events() {
    let tls = tls_servers();
    let client = reqwest::Client::new();
    for ca in [Some(&tls.other_ca_file), None] {
        let data = tempfile::tempdir().unwrap();
        let mut env = vec![("APP_ENV_WEBSOCKET_REDIS_URL", tls.redis_url.clone())];
        if let Some(ca) = ca {
            env.push(("APP_ENV_REDIS_TLS_CA_FILE", ca.display().to_string()));
        }
        let served = Served::start(data.path(), &crate::helpers::examples_dir(), &env, &[]);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let logs = served.log_text();
            let r = client.get(format!("{}/readyz", served.base)).send().await;
            if let Ok(r) = r {
                assert_ne!(
                    r.status(),
                    200,
                    "ready on an untrusted Redis ({ca:?}):\n{logs}"
                );
                let body: Value = r.json().await.unwrap();
                if body["failing"] == serde_json::json!(["events"])
                    && logs.contains("invalid peer certificate")
                {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no certificate error for {ca:?}:\n{logs}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn wait_ready(client: &reqwest::Client, base: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = client.get(format!("{base}/readyz")).send().await.unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        if status == 200 {
            return body;
        }
        assert!(Instant::now() < deadline, "not ready: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
