//! The `ledger` command line as an operator uses it.

use std::process::Output;
use std::time::Duration;

use base64::Engine;
use serde_json::Value;

use crate::helpers::{TestApp, spawn_app};

/// Runs `ledger args…` on `data_dir` with the run's backends (in the production run the
/// data dir's PostgreSQL database, Kafka topic, bucket and Redis), then `env`.
fn ledger(data_dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    command(data_dir, args, env).output().expect("run ledger")
}

/// The command [`ledger`] runs, for a test that sets its stdio itself.
fn command(
    data_dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> std::process::Command {
    let mut cmd = crate::helpers::ledger_command();
    cmd.args(args)
        .env("APP_ENV_DATA_DIR", data_dir)
        .env("APP_ENV_LOG_LEVEL", "warn");
    for (k, v) in crate::helpers::backends_for_blocking(data_dir) {
        cmd.env(k, v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn policy_grant_list_revoke() {
    let dir = crate::helpers::data_dir();
    let d = dir.path();
    if std::env::var("LEDGER_TEST_BACKENDS").as_deref() == Ok("production") {
        // A shared database changes schema through `ledger migrate` only, never as a side
        // effect of another command (the embedded SQLite file migrates itself).
        let refused = ledger(d, &["policy", "list"], &[]);
        assert!(!refused.status.success(), "{refused:?}");
        let err = String::from_utf8_lossy(&refused.stderr);
        assert!(err.contains("pending migrations"), "{err}");
        assert!(err.contains("ledger migrate"), "{err}");
        let migrated = ledger(d, &["migrate"], &[]);
        assert!(migrated.status.success(), "{migrated:?}");
    }
    let granted = ledger(
        d,
        &["policy", "grant", "alice", "merchant_viewer", "m_1"],
        &[],
    );
    assert!(granted.status.success(), "{granted:?}");
    assert!(
        ledger(d, &["policy", "grant", "ops", "platform_admin", "*"], &[])
            .status
            .success()
    );
    let list = stdout(&ledger(d, &["policy", "list"], &[]));
    assert!(list.contains("alice\tmerchant_viewer\tm_1"), "{list}");
    assert!(list.contains("ops\tplatform_admin\t*"), "{list}");
    for bad in [
        vec!["policy", "grant", "alice", "superuser", "m_1"],
        vec!["policy", "grant", "alice", "merchant_viewer", "../m"],
    ] {
        let o = ledger(d, &bad, &[]);
        assert!(!o.status.success(), "{bad:?} must fail");
        assert!(!String::from_utf8_lossy(&o.stderr).is_empty());
    }
    assert!(
        ledger(
            d,
            &["policy", "revoke", "alice", "merchant_viewer", "m_1"],
            &[]
        )
        .status
        .success()
    );
    let again = ledger(
        d,
        &["policy", "revoke", "alice", "merchant_viewer", "m_1"],
        &[],
    );
    assert!(!again.status.success(), "revoking a missing grant says so");
    assert!(!stdout(&ledger(d, &["policy", "list"], &[])).contains("alice"));
}

#[test]
fn token_prints_only_a_jwt_and_keygen_a_key() {
    let dir = crate::helpers::data_dir();
    let o = ledger(
        dir.path(),
        &["token", "--sub", "alice", "--ttl", "10m"],
        &[],
    );
    assert!(o.status.success(), "{o:?}");
    let out = stdout(&o);
    let token = out.trim();
    assert_eq!(out.lines().count(), 1, "only the token: {out}");
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.split('.').next().unwrap())
        .unwrap();
    assert!(String::from_utf8(header).unwrap().contains("ES256"));
    assert!(
        ledger(dir.path(), &["token", "--sub", "x", "--ttl", "soon"], &[])
            .status
            .code()
            != Some(0)
    );

    let key = stdout(&ledger(dir.path(), &["keygen"], &[]));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .unwrap();
    assert_eq!(bytes.len(), 32);
}

#[test]
fn migrate_by_command_and_by_run_mode() {
    let dir = crate::helpers::data_dir();
    let first = ledger(dir.path(), &["migrate"], &[]);
    assert!(first.status.success(), "{first:?}");
    assert!(stdout(&first).contains("applied"), "{}", stdout(&first));
    let second = ledger(dir.path(), &[], &[("RUN_MODE", "migrate")]);
    assert!(second.status.success(), "{second:?}");
    assert!(
        stdout(&second).contains("up to date"),
        "{}",
        stdout(&second)
    );
}

#[test]
fn a_bad_configuration_lists_every_problem_and_no_secret() {
    let dir = crate::helpers::data_dir();
    let o = ledger(
        dir.path(),
        &["serve"],
        &[
            ("APP_ENV_PORT", "eighty"),
            ("APP_ENV_NODE_ID", "4096"),
            ("APP_ENV_LOG_FORMAT", "yaml"),
            ("APP_ENV_DATABASE_URL", "mysql://root:s3cr3t-pw@db/ledger"),
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    for name in [
        "APP_ENV_PORT",
        "APP_ENV_NODE_ID",
        "APP_ENV_LOG_FORMAT",
        "APP_ENV_DATABASE_URL",
    ] {
        assert!(err.contains(name), "{name} missing: {err}");
    }
    assert!(!err.contains("s3cr3t-pw"), "{err}");

    let bad_key = ledger(
        dir.path(),
        &["serve"],
        &[("APP_ENV_LEDGER_ENCRYPTION_KEY", "bm90LWEta2V5")],
    );
    assert_eq!(bad_key.status.code(), Some(2), "a configuration error");
    let err = String::from_utf8_lossy(&bad_key.stderr);
    assert!(err.contains("APP_ENV_LEDGER_ENCRYPTION_KEY"), "{err}");
    assert!(!err.contains("bm90LWEta2V5"), "{err}");
}

#[test]
fn help_names_every_setting_every_role_and_every_argument() {
    let dir = crate::helpers::data_dir();
    for command in ["serve", "migrate"] {
        let out = ledger(dir.path(), &[command, "--help"], &[]);
        assert!(out.status.success(), "{command} --help: {out:?}");
        let help = stdout(&out);
        for setting in ledger::config::SETTINGS {
            assert!(
                help.contains(setting),
                "`ledger {command} --help` does not name {setting}:\n{help}"
            );
        }
        assert!(help.contains("docs/configuration.md"), "{help}");
    }
    for command in ["grant", "revoke"] {
        let out = ledger(dir.path(), &["policy", command, "--help"], &[]);
        assert!(out.status.success(), "policy {command} --help: {out:?}");
        let help = stdout(&out);
        for role in ledger::auth::ROLES {
            assert!(
                help.contains(role),
                "policy {command} --help: {role}\n{help}"
            );
        }
        // Every argument has a description: no bare `<SUBJECT>` line.
        for arg in ["<SUBJECT>", "<ROLE>", "<MERCHANT>"] {
            let line = help
                .lines()
                .find(|l| l.trim_start().starts_with(arg))
                .unwrap_or_else(|| panic!("{arg} missing:\n{help}"));
            let described = line.trim() != arg
                || help
                    .lines()
                    .skip_while(|l| !l.trim_start().starts_with(arg))
                    .nth(1)
                    .is_some_and(|next| !next.trim().is_empty() && !next.trim().starts_with('<'));
            assert!(described, "{arg} has no description:\n{help}");
        }
    }
}

#[test]
fn production_backends_refuse_the_dev_key_a_plain_http_jwks_and_a_missing_audience() {
    let dir = crate::helpers::data_dir();
    let serve = |env: &[(&str, &str)]| {
        crate::helpers::ledger_command()
            .arg("serve")
            .env("APP_ENV_DATA_DIR", dir.path())
            .env("APP_ENV_PORT", "0")
            .env("APP_ENV_LOG_LEVEL", "warn")
            .envs(env.iter().copied())
            .output()
            .expect("run ledger")
    };
    let signing_key = ledger::manifest::generate_key_pem();
    let s3 = [
        ("APP_ENV_STORAGE_URL", "s3://bucket/ledgers"),
        (
            "APP_ENV_LEDGER_ENCRYPTION_KEY",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ),
        ("APP_ENV_SIGNING_KEY", signing_key.as_str()),
    ];
    for backend in [
        &[(
            "APP_ENV_DATABASE_URL",
            "postgres://ledger:pw@db.internal/ledger",
        )][..],
        &[
            ("APP_ENV_QUEUE", "kafka"),
            ("APP_ENV_KAFKA_BROKERS", "kafka:9092"),
        ][..],
        &s3[..],
    ] {
        // No JWKS at all: the dev key would be trusted.
        let o = serve(backend);
        assert_eq!(o.status.code(), Some(2), "{backend:?}: {o:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("APP_ENV_AUTH_JWKS_URL: required"), "{err}");
        assert!(err.contains("APP_ENV_AUTH_AUDIENCE: required"), "{err}");
        assert!(!err.contains("pw@"), "{err}");

        // A JWKS over plain http from another host.
        let mut env = backend.to_vec();
        env.push(("APP_ENV_AUTH_JWKS_URL", "http://idp.internal/jwks.json"));
        env.push(("APP_ENV_AUTH_AUDIENCE", "ledger"));
        let o = serve(&env);
        assert_eq!(o.status.code(), Some(2), "{env:?}: {o:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("APP_ENV_AUTH_JWKS_URL: must be https"),
            "{err}"
        );
        assert!(!err.contains("AUDIENCE"), "{err}");
    }
    // Migrations and grants are not the API: they run without an identity provider.
    let o = crate::helpers::ledger_command()
        .args(["migrate", "--help"])
        .env(
            "APP_ENV_DATABASE_URL",
            "postgres://ledger:pw@db.internal/ledger",
        )
        .output()
        .expect("run ledger");
    assert!(o.status.success(), "{o:?}");
}

/// The shipped binary's commands: the measurements are `ledger-bench` (bench/), not `ledger
/// bench` (issue 14), whose own tests check that it ends quietly on a closed stdout.
#[test]
fn help_lists_the_product_commands_and_no_bench() {
    let dir = crate::helpers::data_dir();
    let out = ledger(dir.path(), &["--help"], &[]);
    assert!(out.status.success(), "{out:?}");
    let help = stdout(&out);
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        commands,
        [
            "serve", "migrate", "batch", "token", "policy", "keygen", "keys", "merchant",
            "openapi", "verify", "help"
        ],
        "{help}"
    );
    let out = ledger(dir.path(), &["bench", "render"], &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn every_command_that_prints_ends_quietly_when_its_reader_is_gone() {
    let dir = crate::helpers::data_dir();
    let d = dir.path();
    for args in [
        &["migrate"][..],
        &["openapi"],
        &["keygen"],
        &["token", "--sub", "alice"],
        &["policy", "grant", "alice", "merchant_viewer", "m_1"],
        &["policy", "list"],
        &["--help"],
        &["--version"],
    ] {
        // `ledger … | head -0`: the read end is closed before the command writes a byte.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let o = command(d, args, &[]).stdout(writer).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(!err.contains("Broken pipe"), "{args:?}: {err}");
    }
}

/// Runs `ledger batch args…` against `app` (`LEDGER_URL`) with `token` in `LEDGER_TOKEN`,
/// stdout and stderr captured (so neither is a terminal), killed after 120 s.
async fn batch_cli(app: &TestApp, token: &str, args: &[&str]) -> Output {
    batch_cli_at(&app.base, token, args).await
}

/// [`batch_cli`] against the service at `url`.
async fn batch_cli_at(url: &str, token: &str, args: &[&str]) -> Output {
    let mut cmd = crate::helpers::ledger_command();
    cmd.arg("batch")
        .args(args)
        .env("LEDGER_URL", url)
        .env("LEDGER_TOKEN", token);
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("`ledger batch {args:?}` did not end within 120 s"))
        .expect("run ledger batch")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Stdout and stderr of `o` hold no trace of `token` (nor of its signature, the part that
/// makes it a credential) and no terminal escape (neither is a terminal: no animation).
fn assert_clean(o: &Output, token: &str) {
    let signature = token.rsplit('.').next().unwrap_or(token);
    for (name, text) in [("stdout", stdout(o)), ("stderr", stderr(o))] {
        assert!(!text.contains(signature), "the token is in {name}: {text}");
        assert!(
            !text.contains('\u{1b}'),
            "an escape sequence in {name}: {text:?}"
        );
    }
}

/// The id on the first line of the summary (`batch     ID`).
fn summary_id(out: &str) -> String {
    let first = out.lines().next().unwrap_or_default();
    let id = first
        .strip_prefix("batch")
        .map(str::trim)
        .unwrap_or_default();
    assert!(
        !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()),
        "no batch id on the first line:\n{out}"
    );
    id.to_owned()
}

/// The value of the table row `name` (`COMPLETED         2`).
fn row(out: &str, name: &str) -> u64 {
    out.lines()
        .find_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some(name))
                .then(|| words.next().and_then(|n| n.parse().ok()))
                .flatten()
        })
        .unwrap_or_else(|| panic!("no row {name}:\n{out}"))
}

const CSV_2026_10: [&str; 6] = [
    "--type",
    "STATEMENT",
    "--period",
    "2026-10",
    "--formats",
    "CSV",
];

#[tokio::test]
async fn batch_create_follows_a_batch_to_completed_and_shows_it_again() {
    let app = spawn_app().await;
    app.grant("ops", "merchant_operator", "m_acme").await;
    let token = app.user("ops", "merchant_operator", "m_global").await;
    let mut args = vec!["create", "--merchants", "m_acme,m_global"];
    args.extend(CSV_2026_10);
    let o = batch_cli(&app, &token, &args).await;
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert_clean(&o, &token);
    let id = summary_id(&out);
    assert!(out.contains("status    COMPLETED\n"), "{out}");
    assert!(
        out.contains("STATEMENT 2026-10 · CSV · named merchants"),
        "{out}"
    );
    assert_eq!(row(&out, "COMPLETED"), 2, "{out}");
    assert_eq!(row(&out, "REJECTED"), 0, "{out}");
    assert_eq!(row(&out, "total"), 2, "{out}");
    assert_eq!(row(&out, "skipped"), 0, "{out}");
    assert!(out.contains("\nelapsed   "), "{out}");
    assert!(!out.contains("rejected ledgers"), "{out}");
    assert!(err.contains(&format!("batch {id} created")), "{err}");
    assert!(err.contains("every ledger completed"), "{err}");

    // The service agrees.
    let b = app.get_json(&token, &format!("/batches/{id}")).await;
    assert_eq!(b["status"], "COMPLETED", "{b}");

    // `show` prints the same table, and its JSON parses.
    let shown = batch_cli(&app, &token, &["show", &id]).await;
    assert_eq!(shown.status.code(), Some(0), "{}", stderr(&shown));
    assert_clean(&shown, &token);
    assert_eq!(summary_id(&stdout(&shown)), id);
    assert_eq!(row(&stdout(&shown), "COMPLETED"), 2);
    let json = batch_cli(&app, &token, &["show", &id, "--json"]).await;
    assert_eq!(json.status.code(), Some(0), "{}", stderr(&json));
    let parsed: Value = serde_json::from_str(&stdout(&json)).expect("--json prints JSON");
    assert_eq!(parsed["id"], id.as_str());
    assert_eq!(parsed["counts"]["COMPLETED"], 2);

    // A reader that went away (`| head -0`) changes nothing about the exit status.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut cmd = crate::helpers::ledger_command();
    cmd.args(["batch", "show", &id])
        .env("LEDGER_URL", &app.base)
        .env("LEDGER_TOKEN", &token)
        .stdout(writer);
    let closed = tokio::process::Command::from(cmd).output().await.unwrap();
    assert_eq!(closed.status.code(), Some(0), "{}", stderr(&closed));
    assert!(!stderr(&closed).contains("panicked"), "{}", stderr(&closed));

    // Another caller's batch is a 404 to this one.
    let other = app.user("eve", "merchant_operator", "m_acme").await;
    let hidden = batch_cli(&app, &other, &["show", &id]).await;
    assert_eq!(hidden.status.code(), Some(1));
    assert!(
        stderr(&hidden).contains("404 NOT_FOUND"),
        "{}",
        stderr(&hidden)
    );
}

#[tokio::test]
async fn a_rejected_ledger_makes_batch_create_exit_1_and_is_listed() {
    let app = spawn_app().await;
    app.grant("ops", "merchant_operator", "m_acme").await;
    let token = app.user("ops", "merchant_operator", "m_broken").await;
    let mut args = vec!["create", "--merchants", "m_acme,m_broken"];
    args.extend(CSV_2026_10);
    let o = batch_cli(&app, &token, &args).await;
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    assert_clean(&o, &token);
    let id = summary_id(&out);
    assert!(out.contains("status    COMPLETED_WITH_ERRORS\n"), "{out}");
    assert_eq!(row(&out, "COMPLETED"), 1, "{out}");
    assert_eq!(row(&out, "REJECTED"), 1, "{out}");
    assert_eq!(row(&out, "total"), 2, "{out}");

    // The rejected ledger is listed with its id, merchant, format and code.
    let page = app
        .get_json(&token, &format!("/batches/{id}/ledgers?status=REJECTED"))
        .await;
    let rejected = page["items"][0]["id"].as_str().expect("a rejected ledger");
    assert!(out.contains("rejected ledgers (1)"), "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with(rejected))
        .unwrap_or_else(|| panic!("{rejected} is not listed:\n{out}"));
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        cells[..4],
        [rejected, "m_broken", "CSV", "FETCH_DATA_ERROR"],
        "{line}"
    );
    assert!(line.contains("entries[2].amount"), "the reason: {line}");
    assert!(!out.contains("more"), "{out}");

    // `show` ends the same way, and `--json` carries the counts for scripts.
    let shown = batch_cli(&app, &token, &["show", &id]).await;
    assert_eq!(shown.status.code(), Some(1));
    assert!(stdout(&shown).contains(rejected), "{}", stdout(&shown));
    let json = batch_cli(&app, &token, &["show", &id, "--json"]).await;
    assert_eq!(json.status.code(), Some(1));
    let parsed: Value = serde_json::from_str(&stdout(&json)).expect("--json prints JSON");
    assert_eq!(parsed["status"], "COMPLETED_WITH_ERRORS");
    assert_eq!(parsed["counts"]["REJECTED"], 1);
}

#[tokio::test]
async fn batch_create_prints_the_apis_error_for_a_forbidden_merchant_a_refused_token_and_no_service()
 {
    let app = spawn_app().await;
    app.grant("vic", "merchant_viewer", "m_global").await;
    let token = app.user("vic", "merchant_operator", "m_acme").await;
    let mut args = vec!["create", "--merchants", "m_acme,m_global"];
    args.extend(CSV_2026_10);
    let o = batch_cli(&app, &token, &args).await;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_clean(&o, &token);
    assert!(err.contains("403 FORBIDDEN"), "{err}");
    assert!(err.contains("m_global"), "names the merchant: {err}");
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
    let page = app.get_json(&token, "/batches").await;
    assert_eq!(page["items"], serde_json::json!([]), "nothing was created");

    // A token the service does not accept.
    let forged = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ2aWMifQ.c2lnbmF0dXJl";
    let o = batch_cli(&app, forged, &args).await;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("the token was refused: "),
        "{}",
        stderr(&o)
    );
    assert_clean(&o, forged);

    // No service at that URL.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let o = batch_cli_at(&closed, &token, &args).await;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot reach the ledger service at {closed}")),
        "{err}"
    );
    assert!(err.contains("connection refused"), "{err}");
    assert_clean(&o, &token);

    // Neither the help nor a usage error shows the token of the environment.
    for args in [&["create", "--help"][..], &["create", "--all"]] {
        let o = batch_cli(&app, &token, args).await;
        assert_clean(&o, &token);
        assert!(
            stdout(&o).contains("LEDGER_TOKEN") || stderr(&o).contains("--type"),
            "{o:?}"
        );
    }
    let o = batch_cli(&app, &token, &["create", "--help"]).await;
    assert!(stdout(&o).contains("[env: LEDGER_TOKEN]"), "{}", stdout(&o));
    assert!(stdout(&o).contains("Exit status:"), "{}", stdout(&o));
}

#[tokio::test]
async fn batch_create_no_wait_json_and_an_idempotency_key() {
    let app = spawn_app().await;
    let token = app.user("ops", "platform_admin", "*").await;
    let args = [
        "create",
        "--all",
        "--type",
        "SUMMARY",
        "--period",
        "2026-10",
        "--formats",
        "CSV",
        "--idempotency-key",
        "close-2026-10",
        "--no-wait",
        "--json",
    ];
    let first = batch_cli(&app, &token, &args).await;
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert_clean(&first, &token);
    let created: Value = serde_json::from_str(&stdout(&first)).expect("JSON");
    assert_eq!(created["merchants"], "*");
    let id = created["id"].as_str().expect("an id").to_owned();

    // The same key follows the same batch to its end (m_broken makes it fail).
    let again = batch_cli(&app, &token, &args[..args.len() - 2]).await;
    let err = stderr(&again);
    assert_eq!(again.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("batch {id} answered for this idempotency key")),
        "{err}"
    );
    assert_eq!(summary_id(&stdout(&again)), id);
    assert_eq!(row(&stdout(&again), "total"), 4, "{}", stdout(&again));

    // --json of a followed batch is the final batch.
    let mut json_args = args[..args.len() - 2].to_vec();
    json_args.push("--json");
    let followed = batch_cli(&app, &token, &json_args).await;
    assert_eq!(followed.status.code(), Some(1), "{}", stderr(&followed));
    let done: Value = serde_json::from_str(&stdout(&followed)).expect("JSON");
    assert_eq!(done["id"], id.as_str());
    assert_eq!(done["status"], "COMPLETED_WITH_ERRORS");
    assert!(done["finishedAt"].is_string(), "{done}");
}

/// A proxy in front of `upstream` that passes every request on except the WebSocket's,
/// which it answers 404 (as a gateway without WebSocket support does).
async fn proxy_without_websockets(upstream: String) -> String {
    use axum::response::IntoResponse;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let client = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let (client, upstream) = (client.clone(), upstream.clone());
        async move {
            if request.uri().path().ends_with("/ws") {
                return (axum::http::StatusCode::NOT_FOUND, "no WebSockets here").into_response();
            }
            let target = format!(
                "{upstream}{}",
                request.uri().path_and_query().map_or("/", |p| p.as_str())
            );
            let method = request.method().clone();
            let mut headers = request.headers().clone();
            headers.remove(axum::http::header::HOST);
            let body = axum::body::to_bytes(request.into_body(), 1 << 20)
                .await
                .unwrap();
            let answer = client
                .request(method, target)
                .headers(headers)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = answer.status();
            let mut headers = answer.headers().clone();
            headers.remove(axum::http::header::CONTENT_LENGTH);
            headers.remove(axum::http::header::TRANSFER_ENCODING);
            (status, headers, answer.bytes().await.unwrap()).into_response()
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

#[tokio::test]
async fn without_websockets_batch_create_follows_the_batch_by_reading_it() {
    let app = spawn_app().await;
    app.grant("ops", "merchant_operator", "m_acme").await;
    let token = app.user("ops", "merchant_operator", "m_tokyo").await;
    let proxy = proxy_without_websockets(app.base.clone()).await;
    let mut args = vec!["create", "--merchants", "m_acme,m_tokyo"];
    args.extend(CSV_2026_10);
    let o = batch_cli_at(&proxy, &token, &args).await;
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(err.contains("no live updates"), "{err}");
    assert!(err.contains("404"), "{err}");
    assert_eq!(row(&out, "COMPLETED"), 2, "{out}");
    assert_clean(&o, &token);
}

#[tokio::test]
async fn batch_show_exits_3_while_running_and_ctrl_c_stops_following_not_the_batch() {
    // No worker: the batch stays RUNNING (nobody adds its members).
    let app = crate::helpers::spawn_role("api", &[]).await;
    let token = app.user("ops", "merchant_operator", "m_acme").await;
    let mut args = vec!["create", "--merchants", "m_acme"];
    args.extend(CSV_2026_10);
    let mut cmd = crate::helpers::ledger_command();
    cmd.arg("batch")
        .args(&args)
        .env("LEDGER_URL", &app.base)
        .env("LEDGER_TOKEN", &token)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let mut child = cmd.spawn().expect("start ledger batch create");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
        child.stderr.take().expect("stderr"),
    ));
    let mut said = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !said.contains("following it") {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .expect("`following it` within 30 s")
            .expect("stderr")
            .unwrap_or_else(|| panic!("stderr ended: {said}"));
        said.push_str(&line);
        said.push('\n');
    }
    let id = said
        .split_whitespace()
        .nth(1)
        .expect("batch ID created")
        .to_owned();

    let running = batch_cli(&app, &token, &["show", &id]).await;
    assert_eq!(running.status.code(), Some(3), "{}", stderr(&running));
    let out = stdout(&running);
    assert!(out.contains("status    RUNNING\n"), "{out}");
    assert!(out.contains(" so far"), "{out}");

    // Ctrl-C: the command ends with 130 and says where the batch can be followed.
    let interrupted = std::process::Command::new("kill")
        .args(["-INT", &child.id().expect("running").to_string()])
        .status()
        .expect("kill");
    assert!(interrupted.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("ends within 10 s of Ctrl-C")
        .expect("exit status");
    while let Ok(Some(line)) = lines.next_line().await {
        said.push_str(&line);
        said.push('\n');
    }
    assert_eq!(status.code(), Some(130), "{said}");
    assert!(
        said.contains(&format!(
            "stopped following batch {id}; it goes on in the service: ledger batch show {id}"
        )),
        "{said}"
    );
    assert!(!said.contains(token.rsplit('.').next().unwrap()), "{said}");
    let b = app.get_json(&token, &format!("/batches/{id}")).await;
    assert_eq!(b["status"], "RUNNING", "{b}");
}
