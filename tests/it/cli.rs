//! The `ledger` command line as an operator uses it.

use std::process::Output;

use base64::Engine;

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
    let s3 = [
        ("APP_ENV_STORAGE_URL", "s3://bucket/ledgers"),
        (
            "APP_ENV_LEDGER_ENCRYPTION_KEY",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ),
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
            "serve", "migrate", "token", "policy", "keygen", "openapi", "help"
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
