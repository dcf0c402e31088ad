//! The key lifecycle as an operator lives it (SPEC §15): rotating the root, `ledger keys
//! rewrap` (also killed and resumed, and racing completions), retiring the old key, a key
//! that is unavailable (503 KEY_UNAVAILABLE), and shredding one merchant.
//!
//! Files from before the key hierarchy (format 1: sealed by the master key directly) are
//! made as an older release left them: the object re-sealed under the master key and the
//! file's merchant key cleared in the database.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use ledger::config::{Config, DatabaseKind};
use ledger::crypto::{Binding, Keyring, MasterKey, encrypt_to_vec};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::helpers::{
    Options, TestApp, assert_error, backends_for, data_dir, open_statement, spawn_with, statement,
};

/// Runs `ledger args…` on `data` with the run's backends and `env` (the test's runtime
/// goes on meanwhile: a service in this process keeps serving).
async fn ledger_on(data: &Path, args: &[&str], env: &[(&'static str, String)]) -> Output {
    command_on(data, args, env)
        .await
        .output()
        .await
        .expect("run ledger")
}

async fn command_on(
    data: &Path,
    args: &[&str],
    env: &[(&'static str, String)],
) -> tokio::process::Command {
    let mut cmd = crate::helpers::ledger_command();
    cmd.args(args)
        .env("APP_ENV_DATA_DIR", data)
        .env("APP_ENV_LOG_LEVEL", "warn");
    for (k, v) in backends_for(data).await {
        cmd.env(k, v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::process::Command::from(cmd)
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

/// A service on `data` with the master key settings `keys`.
async fn serve(data: &Path, keys: &[(&'static str, String)]) -> TestApp {
    let mut vars = vec![("APP_ENV_DATA_DIR", data.display().to_string())];
    vars.extend(keys.iter().cloned());
    spawn_with(Options {
        vars,
        ..Options::default()
    })
    .await
}

fn current(key: &str) -> Vec<(&'static str, String)> {
    vec![("APP_ENV_LEDGER_ENCRYPTION_KEY", key.to_owned())]
}

fn rotated(key: &str, old: &str) -> Vec<(&'static str, String)> {
    vec![
        ("APP_ENV_LEDGER_ENCRYPTION_KEY", key.to_owned()),
        ("APP_ENV_LEDGER_ENCRYPTION_KEYS_OLD", old.to_owned()),
    ]
}

/// Runs `sql` (with `$1` = `id`) on the service's database.
async fn sql(config: &Config, statement: &str, id: i64) {
    match &config.database {
        DatabaseKind::Sqlite(path) => {
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
                .await
                .expect("sqlite");
            sqlx::query(statement)
                .bind(id)
                .execute(&pool)
                .await
                .expect("sql");
            pool.close().await;
        }
        DatabaseKind::Postgres(url) => {
            let pool = sqlx::PgPool::connect(url.expose()).await.expect("postgres");
            sqlx::query(statement)
                .bind(id)
                .execute(&pool)
                .await
                .expect("sql");
            pool.close().await;
        }
    }
}

/// Rewrites ledger `id`'s version-1 file as format 1 under `master`, with `plain` (a new
/// content, or its own) as its plaintext: what an older release stored.
async fn make_format_1(app: &TestApp, id: &str, master: &str, plain: &[u8]) {
    let id: i64 = id.parse().unwrap();
    let file = app
        .store
        .get_file(ledger::domain::LedgerId::from_i64(id), 1)
        .await
        .unwrap()
        .expect("a file");
    let root = Keyring::new(MasterKey::from_base64(master).unwrap(), Vec::new());
    let sealed = encrypt_to_vec(
        &root,
        Binding {
            ledger_id: id,
            version: 1,
        },
        plain,
    )
    .unwrap();
    let storage = ledger::app::open_storage(&app.config).unwrap();
    let mut w = storage.writer(&file.object_key).await.unwrap();
    w.write(sealed.into()).await.unwrap();
    w.finish().await.unwrap();
    let digest = hex::encode(Sha256::digest(plain));
    sql(
        &app.config,
        &format!(
            "UPDATE ledger_files SET key_id = NULL, header_sha256 = NULL, sha256 = '{digest}', \
             size_bytes = {} WHERE ledger_id = $1",
            plain.len()
        ),
        id,
    )
    .await;
}

async fn body(app: &TestApp, token: &str, id: &str) -> Vec<u8> {
    let r = app.download(token, id).await;
    assert_eq!(r.status(), 200, "download of {id}");
    r.bytes().await.unwrap().to_vec()
}

/// Completed ledgers of `merchant`, one per month of 2025 from `from` on.
async fn completed_months(
    app: &TestApp,
    token: &str,
    merchant: &str,
    months: std::ops::Range<u32>,
) -> Vec<String> {
    let mut ids = Vec::new();
    for month in months {
        let (id, _) = app
            .completed(token, statement(merchant, &format!("2025-{month:02}")), 60)
            .await;
        ids.push(id);
    }
    ids
}

/// The value of the counter or gauge `name` (without labels) on `app`'s `/metrics`.
async fn metric(app: &TestApp, name: &str) -> f64 {
    let text = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_root_rotation_rewrap_and_retirement_keep_every_file_readable() {
    let data = data_dir();
    let (a, b) = (
        ledger::crypto::generate_key_base64(),
        ledger::crypto::generate_key_base64(),
    );
    let app = serve(data.path(), &current(&a)).await;
    let ops = app.user("ops", "platform_admin", "*").await;
    let mut ids = completed_months(&app, &ops, "m_acme", 1..4).await;
    ids.extend(completed_months(&app, &ops, "m_global", 1..3).await);
    // One file from before the key hierarchy.
    let legacy_plain = b"date,amount\n2025-01-01,1.00\n".repeat(20_000);
    make_format_1(&app, &ids[0], &a, &legacy_plain).await;
    let mut expected = Vec::new();
    for id in &ids {
        expected.push(body(&app, &ops, id).await);
    }
    assert_eq!(expected[0], legacy_plain);
    app.stop().await;

    // The root moves to B with A forgotten too early: the old files answer 503
    // KEY_UNAVAILABLE (an operator's error), logged with the key and the ledger.
    let app = serve(data.path(), &current(&b)).await;
    let ops = app.token("ops");
    for id in [&ids[0], &ids[1]] {
        let r = app.download(&ops, id).await;
        assert_eq!(r.headers()["retry-after"], "5");
        assert_error(r, 503, "KEY_UNAVAILABLE").await;
    }
    let value = metric(&app, "ledger_key_unavailable_total").await;
    assert!(value >= 2.0, "ledger_key_unavailable_total = {value}");
    app.stop().await;

    // B current, A kept as old: everything reads; new merchants' keys go under B.
    let env = rotated(&b, &a);
    let app = serve(data.path(), &env).await;
    for (id, want) in ids.iter().zip(&expected) {
        assert_eq!(&body(&app, &ops, id).await, want, "{id} under B with A old");
    }
    let status = ledger_on(data.path(), &["keys", "status"], &env).await;
    assert!(status.status.success(), "{}", text(&status.stderr));
    let out = text(&status.stdout);
    let a_id = format!("local:{}", MasterKey::from_base64(&a).unwrap().id());
    let b_id = format!("local:{}", MasterKey::from_base64(&b).unwrap().id());
    assert!(out.contains(&format!("root key: {b_id}")), "{out}");
    // Two merchants' keys and the key of webhook secrets.
    assert!(
        out.contains(&format!("old key {a_id}: still wraps 3 key(s)")),
        "{out}"
    );
    assert!(out.contains("(format 1): 1"), "{out}");

    // Rewrap: both merchant keys, the one format-1 file; then A protects nothing.
    let run = ledger_on(data.path(), &["keys", "rewrap"], &env).await;
    let out = text(&run.stdout);
    assert!(run.status.success(), "{out}{}", text(&run.stderr));
    assert!(
        out.contains(&format!("everything is under {b_id}")),
        "{out}"
    );
    assert!(
        out.contains("keys re-wrapped (merchant and service keys): 3 "),
        "{out}"
    );
    assert!(out.contains("format-1 files re-sealed: 1 "), "{out}");
    let again = ledger_on(data.path(), &["keys", "rewrap"], &env).await;
    let out = text(&again.stdout);
    assert!(
        again.status.success()
            && out.contains("service keys): 0 ")
            && out.contains("re-sealed: 0 "),
        "idempotent: {out}"
    );
    let status = text(
        &ledger_on(data.path(), &["keys", "status"], &env)
            .await
            .stdout,
    );
    assert!(
        status.contains(&format!("old key {a_id}: protects nothing any more")),
        "{status}"
    );
    assert!(status.contains("(format 1): 0"), "{status}");
    let legacy = app
        .store
        .get_file(
            ledger::domain::LedgerId::from_i64(ids[0].parse().unwrap()),
            1,
        )
        .await
        .unwrap()
        .unwrap();
    let merchant_key = legacy.key_id.as_deref().expect("format 2 now");
    assert!(
        legacy
            .object_key
            .contains(&format!(".csv.k{merchant_key}.r"))
            && legacy.object_key.ends_with(".enc"),
        "{legacy:?}"
    );
    let storage = ledger::app::open_storage(&app.config).unwrap();
    let prefix = legacy.object_key.rsplit_once('/').unwrap().0;
    assert_eq!(
        storage.list(prefix).await.unwrap(),
        vec![legacy.object_key.clone()],
        "the replaced object is gone"
    );
    let audit = text(
        &ledger_on(data.path(), &["keys", "audit"], &env)
            .await
            .stdout,
    );
    assert!(
        audit.contains("ROOT_REWRAP") && audit.contains(&b_id),
        "{audit}"
    );
    app.stop().await;

    // A dropped: every file still downloads, byte for byte.
    let app = serve(data.path(), &current(&b)).await;
    for (id, want) in ids.iter().zip(&expected) {
        assert_eq!(&body(&app, &ops, id).await, want, "{id} under B alone");
    }
    app.stop().await;
}

#[tokio::test]
async fn shredding_a_merchant_makes_its_files_gone_and_leaves_the_others_readable() {
    let data = data_dir();
    let key = ledger::crypto::generate_key_base64();
    let env = current(&key);
    let app = serve(data.path(), &env).await;
    let ops = app.user("ops", "platform_admin", "*").await;
    let acme = completed_months(&app, &ops, "m_acme", 1..3).await;
    let global = completed_months(&app, &ops, "m_global", 1..2).await;
    let kept = body(&app, &ops, &global[0]).await;

    let refused = ledger_on(data.path(), &["merchant", "shred", "m_acme"], &env).await;
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("--confirm"),
        "{}",
        text(&refused.stderr)
    );
    assert!(
        !body(&app, &ops, &acme[0]).await.is_empty(),
        "nothing happened"
    );

    // The service seals a file of the merchant just before the shred.
    let (just_before, _) = app
        .completed(&ops, statement("m_acme", "2025-07"), 60)
        .await;
    let shred = ledger_on(
        data.path(),
        &[
            "merchant",
            "shred",
            "m_acme",
            "--confirm",
            "--actor",
            "alice@example.com",
        ],
        &env,
    )
    .await;
    let out = text(&shred.stdout);
    assert!(shred.status.success(), "{out}{}", text(&shred.stderr));
    assert!(
        out.contains("1 key(s) destroyed, 3 file(s) unreadable"),
        "{out}"
    );
    // A ledger of the merchant requested right after the shred (the service has just
    // sealed with the destroyed key, and may reuse its row for a few seconds) completes
    // under a new key and reads: an attempt sealed with the destroyed key is refused at its
    // completion and runs again.
    let (after, _) = app
        .completed(&ops, statement("m_acme", "2025-08"), 60)
        .await;
    let ledger = app.ledger(&ops, &after).await;
    assert!(ledger["file"].get("shreddedAt").is_none(), "{ledger}");
    assert!(!body(&app, &ops, &after).await.is_empty());

    for id in acme.iter().chain([&just_before]) {
        let ledger = app.ledger(&ops, id).await;
        assert_eq!(ledger["status"], "COMPLETED");
        assert!(ledger["file"]["shreddedAt"].is_string(), "{ledger}");
        assert_error(app.download(&ops, id).await, 410, "SHREDDED").await;
        let manifest = app.get(&ops, &format!("/ledgers/{id}/manifest")).await;
        assert_error(manifest, 410, "SHREDDED").await;
    }
    // The other merchant: untouched.
    assert_eq!(body(&app, &ops, &global[0]).await, kept);
    assert!(
        app.ledger(&ops, &global[0]).await["file"]
            .get("shreddedAt")
            .is_none()
    );

    // The record survives; a deleted shredded ledger is a 404 like any deleted one.
    let audit = text(
        &ledger_on(
            data.path(),
            &["keys", "audit", "--merchant", "m_acme"],
            &env,
        )
        .await
        .stdout,
    );
    assert!(
        audit.contains("MERCHANT_SHRED\talice@example.com\tm_acme"),
        "{audit}"
    );
    assert_eq!(
        app.delete(&ops, &format!("/ledgers/{}", acme[1]))
            .await
            .status(),
        204
    );
    assert_error(app.download(&ops, &acme[1]).await, 404, "NOT_FOUND").await;

    // The merchant's new files get a new key and read.
    let (id, _) = app.completed(&ops, open_statement("m_acme"), 60).await;
    assert!(!body(&app, &ops, &id).await.is_empty());
    app.stop().await;
}

/// Waits until `done(count)` of the format-1 files were swapped, polling the store.
async fn swapped(app: &TestApp, ids: &[String]) -> usize {
    let mut n = 0;
    for id in ids {
        let f = app
            .store
            .get_file(ledger::domain::LedgerId::from_i64(id.parse().unwrap()), 1)
            .await
            .unwrap()
            .unwrap();
        n += usize::from(f.key_id.is_some());
    }
    n
}

#[tokio::test]
async fn a_rewrap_killed_midway_resumes_while_jobs_complete() {
    let data = data_dir();
    let (a, b) = (
        ledger::crypto::generate_key_base64(),
        ledger::crypto::generate_key_base64(),
    );
    let app = serve(data.path(), &current(&a)).await;
    let ops = app.user("ops", "platform_admin", "*").await;
    let mut ids = completed_months(&app, &ops, "m_acme", 1..13).await;
    ids.extend(completed_months(&app, &ops, "m_global", 1..13).await);
    // Big format-1 files, so the rewrap is still running when it is killed.
    let mut expected = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let plain: Vec<u8> = format!("row {i}\n").into_bytes().repeat(600_000);
        make_format_1(&app, id, &a, &plain).await;
        expected.push(plain);
    }
    app.stop().await;

    let env = rotated(&b, &a);
    let app = serve(data.path(), &env).await;
    let mut first = command_on(data.path(), &["keys", "rewrap"], &env)
        .await
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("rewrap");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = swapped(&app, &ids).await;
        if n > 0 {
            assert!(
                n < ids.len(),
                "the rewrap finished before it could be killed"
            );
            break;
        }
        assert!(
            first.try_wait().unwrap().is_none(),
            "the rewrap ended early"
        );
        assert!(Instant::now() < deadline, "no file re-sealed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.kill().await.expect("kill -9");
    let partial = swapped(&app, &ids).await;

    // Jobs keep completing while the second run works: new ledgers, and new versions of
    // ledgers whose old version is being re-sealed.
    let racing = {
        let (base, client, ops) = (app.base.clone(), app.client.clone(), ops.clone());
        tokio::spawn(async move {
            let mut made = Vec::new();
            for month in 1..7 {
                let r = client
                    .post(format!("{base}/v1/api/ledger/ledgers"))
                    .bearer_auth(&ops)
                    .json(&statement("m_tokyo", &format!("2025-{month:02}")))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
                made.push(
                    r.json::<Value>().await.unwrap()["id"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                );
            }
            made
        })
    };
    let second = ledger_on(data.path(), &["keys", "rewrap"], &env).await;
    let out = text(&second.stdout);
    assert!(
        second.status.success(),
        "resumed: {out}{}",
        text(&second.stderr)
    );
    let resealed: usize = out
        .split("format-1 files re-sealed: ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(
        partial + resealed,
        ids.len(),
        "the second run did the rest only: {out}"
    );
    let made = racing.await.unwrap();
    for id in &made {
        app.wait_for(&ops, id, "COMPLETED", 60).await;
    }
    let status = text(
        &ledger_on(data.path(), &["keys", "status"], &env)
            .await
            .stdout,
    );
    assert!(status.contains("(format 1): 0"), "{status}");
    app.stop().await;

    // A retired: every file, old and new, reads.
    let app = serve(data.path(), &current(&b)).await;
    for (id, want) in ids.iter().zip(&expected) {
        assert!(&body(&app, &ops, id).await == want, "{id}");
    }
    for id in &made {
        assert!(!body(&app, &ops, id).await.is_empty());
    }
    app.stop().await;
}

/// A TCP proxy to `upstream` that can be switched off: connections are then dropped as
/// they arrive, as a KMS that is down or unreachable drops them.
struct Switch {
    port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Switch {
    async fn to(upstream: String) -> Switch {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let on = up.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !on.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Switch { port, up }
    }

    fn set(&self, up: bool) {
        self.up.store(up, std::sync::atomic::Ordering::SeqCst);
    }
}

/// moto's KMS (the S3 server of the suite serves KMS too).
fn moto() -> String {
    std::env::var("LEDGER_TEST_S3_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "LEDGER_TEST_S3_ENDPOINT is unset: run under scripts/run-tests.sh, which starts moto"
        )
    })
}

/// The settings of a KMS root `key` reached through `switch`, with no local current key.
fn kms_root(key: &str, switch: &Switch) -> Vec<(&'static str, String)> {
    vec![
        ("APP_ENV_LEDGER_ENCRYPTION_KEY", String::new()),
        ("APP_ENV_LEDGER_KMS_KEY_ID", key.to_owned()),
        (
            "APP_ENV_KMS_ENDPOINT",
            format!("http://127.0.0.1:{}", switch.port),
        ),
        ("APP_ENV_KMS_REGION", "us-east-1".into()),
        ("APP_ENV_KMS_ACCESS_KEY_ID", "test".into()),
        ("APP_ENV_KMS_SECRET_ACCESS_KEY", "test".into()),
    ]
}

#[tokio::test]
async fn a_move_to_kms_rewraps_everything_and_a_kms_outage_is_503_until_it_returns() {
    let endpoint = moto();
    let kms = ledger::keys::kms::KmsClient::new(&ledger::keys::kms::KmsSettings {
        endpoint: Some(endpoint.clone()),
        region: "us-east-1".into(),
        access_key_id: Some("test".into()),
        secret_access_key: Some(ledger::config::Secret::new("test")),
        session_token: None,
    })
    .unwrap();
    let key_id = kms.create_key("ledger test root").await.unwrap();
    let switch = Switch::to(endpoint.trim_start_matches("http://").to_owned()).await;

    // Files of two merchants sealed under a local master key first.
    let data = data_dir();
    let local = ledger::crypto::generate_key_base64();
    let app = serve(data.path(), &current(&local)).await;
    let ops = app.user("ops", "platform_admin", "*").await;
    let acme = completed_months(&app, &ops, "m_acme", 1..3).await;
    let global = completed_months(&app, &ops, "m_global", 1..2).await;
    let mut expected = Vec::new();
    for id in &acme {
        expected.push(body(&app, &ops, id).await);
    }
    let global_body = body(&app, &ops, &global[0]).await;
    app.stop().await;

    // KMS becomes the root, the local key kept as old: the files read; the rewrap moves
    // both merchants' keys and the key of webhook secrets onto KMS.
    let mut env = kms_root(&key_id, &switch);
    env.push(("APP_ENV_LEDGER_ENCRYPTION_KEYS_OLD", local.clone()));
    let app = serve(data.path(), &env).await;
    for (id, want) in acme.iter().zip(&expected) {
        assert_eq!(&body(&app, &ops, id).await, want);
    }
    let run = ledger_on(data.path(), &["keys", "rewrap"], &env).await;
    let out = text(&run.stdout);
    assert!(run.status.success(), "{out}{}", text(&run.stderr));
    assert!(
        out.contains("everything is under kms:arn:aws:kms:us-east-1:"),
        "{out}"
    );
    assert!(out.contains("service keys): 3 "), "{out}");
    let status = text(
        &ledger_on(data.path(), &["keys", "status"], &env)
            .await
            .stdout,
    );
    let local_id = MasterKey::from_base64(&local).unwrap().id().to_owned();
    assert!(
        status.contains(&format!(
            "old key local:{local_id}: protects nothing any more"
        )),
        "{status}"
    );
    app.stop().await;

    // KMS alone: everything reads (the local key is gone); m_global's key is now cached.
    let env = kms_root(&key_id, &switch);
    let app = serve(data.path(), &env).await;
    assert_eq!(body(&app, &ops, &global[0]).await, global_body);
    // KMS goes down: a key not unwrapped yet cannot be had — 503 KEY_UNAVAILABLE, every
    // time, until it returns; then the same download works.
    switch.set(false);
    for _ in 0..2 {
        assert_error(app.download(&ops, &acme[0]).await, 503, "KEY_UNAVAILABLE").await;
    }
    // A key unwrapped before the outage keeps serving from the cache.
    assert_eq!(body(&app, &ops, &global[0]).await, global_body);
    switch.set(true);
    for (id, want) in acme.iter().zip(&expected) {
        assert_eq!(&body(&app, &ops, id).await, want, "after the outage");
    }
    app.stop().await;

    // KMS unreachable at start-up: named by its id the key cannot be resolved, and the
    // command says how to start anyway; named by its ARN the service starts, answers 503
    // until KMS is back, then serves.
    let arn = out
        .split("everything is under kms:")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("{out}"))
        .to_owned();
    switch.set(false);
    let refused = ledger_on(data.path(), &["keys", "status"], &env).await;
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("with the key's ARN the service also starts"),
        "{}",
        text(&refused.stderr)
    );
    let app = serve(data.path(), &kms_root(&arn, &switch)).await;
    let readyz = || async {
        let r = app
            .client
            .get(format!("{}/readyz", app.base))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    let (status, ready) = readyz().await;
    assert_eq!(status, 503, "not ready before KMS answered: {ready}");
    assert_eq!(ready["checks"]["kms"]["status"], "failing", "{ready}");
    assert_error(app.download(&ops, &acme[0]).await, 503, "KEY_UNAVAILABLE").await;
    switch.set(true);
    assert_eq!(body(&app, &ops, &acme[0]).await, expected[0]);
    // KMS asked again (every 5 s at first): ready.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, ready) = readyz().await;
        if status == 200 {
            assert_eq!(ready["checks"]["kms"]["status"], "ok", "{ready}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready once KMS is back: {ready}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A KMS outage later on leaves the process ready (what needs a key answers 503).
    switch.set(false);
    assert_eq!(readyz().await.0, 200);
    switch.set(true);
    app.stop().await;
}

#[tokio::test]
async fn retention_removes_the_objects_of_old_final_ledgers_at_a_faked_date() {
    let data = data_dir();
    let key = ledger::crypto::generate_key_base64();
    let app = serve(data.path(), &current(&key)).await;
    let ops = app.user("ops", "platform_admin", "*").await;
    let old = completed_months(&app, &ops, "m_acme", 1..3).await;
    let (draft, _) = app.completed(&ops, open_statement("m_global"), 60).await;
    assert_eq!(app.ledger(&ops, &draft).await["stage"], "DRAFT");
    let draft_body = body(&app, &ops, &draft).await;
    let storage = ledger::app::open_storage(&app.config).unwrap();
    let keep = Duration::from_secs(30 * 86_400);
    let now = chrono::Utc::now();

    // 20 days on: nothing is old enough.
    let early = ledger::keys::retention::pass(
        &*app.store,
        &*storage,
        keep,
        now + chrono::Duration::days(20),
    )
    .await
    .unwrap();
    assert_eq!(early, ledger::keys::retention::Pass::default());
    assert!(!body(&app, &ops, &old[0]).await.is_empty());

    // 40 days on: both FINAL ledgers' objects go; the DRAFT stays.
    let later = now + chrono::Duration::days(40);
    let done = ledger::keys::retention::pass(&*app.store, &*storage, keep, later)
        .await
        .unwrap();
    assert_eq!(
        (done.ledgers, done.files, done.failed),
        (2, 2, 0),
        "{done:?}"
    );
    assert!(done.objects >= 2, "{done:?}");
    for id in &old {
        let ledger = app.ledger(&ops, id).await;
        assert_eq!(ledger["status"], "COMPLETED", "the row stays");
        assert!(ledger["file"]["shreddedAt"].is_string(), "{ledger}");
        let r = assert_error(app.download(&ops, id).await, 410, "SHREDDED").await;
        assert!(
            r["error"]["message"]
                .as_str()
                .unwrap()
                .contains("retention"),
            "{r}"
        );
        assert_error(
            app.get(&ops, &format!("/ledgers/{id}/manifest")).await,
            410,
            "SHREDDED",
        )
        .await;
        let prefix = format!("ledgers/m_acme/{id}/");
        assert!(
            storage.list(&prefix).await.unwrap().is_empty(),
            "every object under {prefix} is gone"
        );
    }
    assert_eq!(body(&app, &ops, &draft).await, draft_body);
    // Counted, recorded, and done once.
    let again = ledger::keys::retention::pass(&*app.store, &*storage, keep, later)
        .await
        .unwrap();
    assert_eq!(again, ledger::keys::retention::Pass::default());
    let env = current(&key);
    let audit = text(
        &ledger_on(data.path(), &["keys", "audit"], &env)
            .await
            .stdout,
    );
    assert!(
        audit.contains("RETENTION\tretention") && audit.contains("2 file(s) marked"),
        "{audit}"
    );
    let value = metric(&app, "ledger_retention_files_total").await;
    assert!(value >= 2.0, "ledger_retention_files_total = {value}");
    app.stop().await;
}
