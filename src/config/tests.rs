//! The configuration's tests: parsing and its messages, Redis TLS, storage and the checks
//! of a production deployment, and the table against what is made from it (the documents,
//! `--help`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use super::*;

/// A map of variables, as `Config::from_vars` takes it.
fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

mod parsing {
    use super::*;

    #[test]
    fn defaults_are_the_embedded_deployment() {
        let c = Config::from_vars(&HashMap::new()).unwrap();
        assert_eq!(
            c.roles,
            Roles {
                api: true,
                worker: true
            }
        );
        assert_eq!(c.port, 3000);
        assert!(matches!(c.queue, QueueKind::Db));
        assert!(
            matches!(&c.database, DatabaseKind::Sqlite(p) if p == &PathBuf::from("./data/ledger.db"))
        );
        assert!(matches!(c.storage, StorageKind::Local(_)));
        assert_eq!(c.max_attempts, 5);
        assert_eq!(c.retention, None, "nothing is ever removed unless asked");
    }

    #[test]
    fn retention_is_opt_in_and_counted_in_days() {
        let c = Config::from_vars(&vars(&[("APP_ENV_RETENTION_DAYS", "400")])).unwrap();
        assert_eq!(c.retention, Some(Duration::from_secs(400 * 86_400)));
        for bad in ["0", "-1", "1y", "36501"] {
            let err = Config::from_vars(&vars(&[("APP_ENV_RETENTION_DAYS", bad)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("APP_ENV_RETENTION_DAYS"), "{bad}: {err}");
        }
    }

    #[test]
    fn every_problem_is_listed_at_once_and_secrets_are_not_echoed() {
        let err = Config::from_vars(&vars(&[
            ("APP_ENV_PORT", "http"),
            ("APP_ENV_NODE_ID", "1024"),
            ("APP_ENV_APPLICATION_ROLES", "api,cron"),
            ("APP_ENV_LOG_FORMAT", "xml"),
            ("APP_ENV_DATABASE_URL", "mysql://user:hunter2@db/x"),
            ("APP_ENV_LEDGER_ENCRYPTION_KEY", "c2VjcmV0LWtleQ=="),
            ("APP_ENV_LEDGER_ENCRYPTION_KEYS_OLD", "b2xkLXNlY3JldA=="),
        ]))
        .unwrap_err();
        let text = err.to_string();
        for name in [
            "APP_ENV_PORT",
            "APP_ENV_NODE_ID",
            "APP_ENV_APPLICATION_ROLES",
            "APP_ENV_LOG_FORMAT",
            "APP_ENV_DATABASE_URL",
            "APP_ENV_LEDGER_ENCRYPTION_KEY:",
            "APP_ENV_LEDGER_ENCRYPTION_KEYS_OLD",
        ] {
            assert!(text.contains(name), "{name} missing from {text}");
        }
        for secret in ["hunter2", "c2VjcmV0LWtleQ", "b2xkLXNlY3JldA"] {
            assert!(!text.contains(secret), "{secret} echoed in {text}");
        }
    }

    #[test]
    fn a_misspelt_setting_is_an_error_that_names_the_likely_one() {
        let e = Config::from_vars(&vars(&[
            ("APP_ENV_KAFKA_BROKER", "k:9092"),
            ("APP_ENV_SHUTDOWN_TIMEOUT", "1000"),
            ("APP_ENV_FROBNICATE", "1"),
        ]))
        .unwrap_err();
        assert_eq!(
            e.0,
            [
                "APP_ENV_FROBNICATE: not a setting of ledger",
                "APP_ENV_KAFKA_BROKER: not a setting of ledger (did you mean APP_ENV_KAFKA_BROKERS?)",
                "APP_ENV_SHUTDOWN_TIMEOUT: not a setting of ledger (did you mean APP_ENV_SHUTDOWN_TIMEOUT_MS?)",
            ]
        );
    }

    #[test]
    fn websocket_limits_have_defaults_and_bounds() {
        let c = Config::from_vars(&HashMap::new()).unwrap();
        assert_eq!(c.ws_replay_max_age, Duration::from_secs(86_400));
        assert_eq!(c.ws_max_sockets_per_subject, 100);
        let c = Config::from_vars(&vars(&[
            ("APP_ENV_WS_REPLAY_MAX_AGE_MS", "604800000"),
            ("APP_ENV_WS_MAX_SOCKETS_PER_SUBJECT", "1"),
        ]))
        .unwrap();
        assert_eq!(c.ws_replay_max_age, Duration::from_secs(7 * 86_400));
        assert_eq!(c.ws_max_sockets_per_subject, 1);
        let e = Config::from_vars(&vars(&[
            ("APP_ENV_WS_REPLAY_MAX_AGE_MS", "604800001"),
            ("APP_ENV_WS_MAX_SOCKETS_PER_SUBJECT", "0"),
        ]))
        .unwrap_err();
        assert_eq!(
            e.0,
            [
                "APP_ENV_WS_REPLAY_MAX_AGE_MS: expected an integer from 1000 to 604800000",
                "APP_ENV_WS_MAX_SOCKETS_PER_SUBJECT: expected an integer from 1 to 100000",
            ]
        );
    }

    #[test]
    fn secrets_debug_as_stars() {
        let key = crate::crypto::generate_key_base64();
        let c = Config::from_vars(&vars(&[("APP_ENV_LEDGER_ENCRYPTION_KEY", &key)])).unwrap();
        assert!(!format!("{c:?}").contains(&key));
    }
}

mod redis_tls {
    use super::*;

    #[test]
    fn a_private_redis_ca_goes_to_every_rediss_server() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let c = Config::from_vars(&vars(&[
            ("APP_ENV_REDIS_URL", "rediss://:pw@cache:6380/1"),
            ("APP_ENV_WEBSOCKET_REDIS_URL", "rediss://:pw@cache:6380/0"),
            ("APP_ENV_REDIS_TLS_CA_FILE", ca.to_str().unwrap()),
        ]))
        .unwrap();
        for server in [c.redis.unwrap(), c.events.redis.unwrap()] {
            assert!(server.is_tls());
            assert!(format!("{server:?}").contains("private_ca: true"));
        }
    }

    #[test]
    fn a_redis_ca_that_cannot_be_used_is_a_configuration_error() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let missing = dir.path().join("missing.pem");
        for (url, ca, expected) in [
            (
                "rediss://cache:6380",
                junk.to_str().unwrap(),
                "holds no PEM certificate",
            ),
            (
                "rediss://cache:6380",
                missing.to_str().unwrap(),
                "cannot read",
            ),
            (
                "redis://cache:6379",
                junk.to_str().unwrap(),
                "neither APP_ENV_REDIS_URL",
            ),
        ] {
            let err = Config::from_vars(&vars(&[
                ("APP_ENV_REDIS_URL", url),
                ("APP_ENV_REDIS_TLS_CA_FILE", ca),
            ]))
            .unwrap_err()
            .to_string();
            assert!(err.contains("APP_ENV_REDIS_TLS_CA_FILE"), "{err}");
            assert!(err.contains(expected), "{expected}: {err}");
        }
    }
}

mod storage {
    use super::*;

    fn test_signing_key() -> String {
        crate::manifest::generate_key_pem()
    }

    #[test]
    fn a_signing_key_is_checked_and_never_quoted() {
        let bad = Config::from_vars(&vars(&[
            (
                "APP_ENV_SIGNING_KEY",
                "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LXZhbHVl\n-----END PRIVATE KEY-----",
            ),
            ("APP_ENV_SIGNING_KEYS_OLD", "garbage"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            bad.contains("APP_ENV_SIGNING_KEY: expected the PKCS#8 PEM"),
            "{bad}"
        );
        assert!(!bad.contains("c2VjcmV0LXZhbHVl"), "{bad}");
        let bad_old = Config::from_vars(&vars(&[
            ("APP_ENV_SIGNING_KEY", &test_signing_key()),
            ("APP_ENV_SIGNING_KEYS_OLD", "garbage"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            bad_old.contains("APP_ENV_SIGNING_KEYS_OLD: key 1"),
            "{bad_old}"
        );
        let key = test_signing_key();
        let ok = Config::from_vars(&vars(&[
            ("APP_ENV_SIGNING_KEY", &key),
            ("APP_ENV_SIGNING_ISSUER", "https://ledger.example.com"),
        ]))
        .unwrap();
        assert_eq!(ok.signing_issuer, "https://ledger.example.com");
        assert!(
            !format!("{ok:?}").contains(&key[40..80]),
            "the key is a secret"
        );
        let embedded = Config::from_vars(&vars(&[])).unwrap();
        assert_eq!(
            (
                embedded.signing_key.is_none(),
                embedded.signing_issuer.as_str()
            ),
            (true, "ledger")
        );
    }

    #[test]
    fn s3_urls_need_a_shared_key_and_both_credentials() {
        let err = Config::from_vars(&vars(&[
            ("APP_ENV_STORAGE_URL", "s3://bucket/ledgers"),
            ("APP_ENV_S3_ACCESS_KEY_ID", "AKIA"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("APP_ENV_LEDGER_ENCRYPTION_KEY"), "{err}");
        assert!(err.contains("APP_ENV_S3_SECRET_ACCESS_KEY"), "{err}");
        assert!(
            err.contains("APP_ENV_SIGNING_KEY: required when APP_ENV_STORAGE_URL is s3://"),
            "{err}"
        );
        let signing_key = test_signing_key();
        let ok = Config::from_vars(&vars(&[
            ("APP_ENV_STORAGE_URL", "s3://bucket/a/b/"),
            (
                "APP_ENV_LEDGER_ENCRYPTION_KEY",
                &crate::crypto::generate_key_base64(),
            ),
            ("APP_ENV_SIGNING_KEY", &signing_key),
            ("APP_ENV_S3_ENDPOINT", "http://127.0.0.1:9000"),
        ]))
        .unwrap();
        let StorageKind::S3(s3) = ok.storage else {
            panic!("expected s3")
        };
        assert_eq!((s3.bucket.as_str(), s3.prefix.as_str()), ("bucket", "a/b"));
        assert_eq!(s3.region, "us-east-1");
        let bad = Config::from_vars(&vars(&[("APP_ENV_STORAGE_URL", "ftp://x")])).unwrap_err();
        assert!(bad.to_string().contains("APP_ENV_STORAGE_URL"));
    }

    #[test]
    fn debug_output_carries_no_credential() {
        let config = Config::from_vars(&vars(&[
            (
                "APP_ENV_AUTH_JWKS_URL",
                "https://svc:jwks-pw@idp.example/t0ken-path/jwks.json?key=q-s3cret",
            ),
            (
                "APP_ENV_SOURCE_URL",
                "https://user:src-pw@entries.example/api?token=src-t0ken",
            ),
            ("APP_ENV_SOURCE_TOKEN", "bearer-s3cret"),
            ("APP_ENV_DATABASE_URL", "postgres://ledger:db-pw@db/ledger"),
            (
                "APP_ENV_LEDGER_ENCRYPTION_KEY",
                &crate::crypto::generate_key_base64(),
            ),
        ]))
        .expect("valid config");
        let debug = format!("{config:?}");
        for secret in [
            "jwks-pw",
            "t0ken-path",
            "q-s3cret",
            "src-pw",
            "src-t0ken",
            "bearer-s3cret",
            "db-pw",
        ] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
        assert!(debug.contains("https://idp.example/***"), "{debug}");
        assert_eq!(
            config.auth_jwks_url.as_ref().map(|u| u.as_str()),
            Some("https://svc:jwks-pw@idp.example/t0ken-path/jwks.json?key=q-s3cret")
        );
    }

    #[test]
    fn serving_on_production_backends_needs_an_identity_provider() {
        let config = |pairs: &[(&str, &str)]| {
            Config::from_vars(
                &pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
            .expect("valid config")
        };
        // The embedded default keeps its dev key.
        assert!(config(&[]).serving_problems().is_empty());
        let pg = ("APP_ENV_DATABASE_URL", "postgres://db/ledger");
        assert_eq!(config(&[pg]).serving_problems().len(), 2);
        // A worker-only process verifies no token.
        assert!(
            config(&[pg, ("APP_ENV_APPLICATION_ROLES", "worker")])
                .serving_problems()
                .is_empty()
        );
        for (url, ok) in [
            ("https://idp.example/jwks.json", true),
            ("http://127.0.0.1:8080/jwks.json", true),
            ("http://127.8.0.1/jwks.json", true),
            ("http://localhost:9/jwks.json", true),
            ("http://[::1]:9/jwks.json", true),
            ("http://idp.example/jwks.json", false),
            ("http://10.0.0.1/jwks.json", false),
            ("http://localhost.evil.example/jwks.json", false),
        ] {
            let problems = config(&[
                pg,
                ("APP_ENV_AUTH_JWKS_URL", url),
                ("APP_ENV_AUTH_AUDIENCE", "ledger"),
            ])
            .serving_problems();
            assert_eq!(problems.is_empty(), ok, "{url}: {problems:?}");
        }
        let file = config(&[
            pg,
            ("APP_ENV_AUTH_JWKS_FILE", "/etc/ledger/jwks.json"),
            ("APP_ENV_AUTH_AUDIENCE", "ledger"),
        ]);
        assert!(file.serving_problems().is_empty());
    }
}

mod kms {
    use super::*;

    const S3: (&str, &str) = ("APP_ENV_STORAGE_URL", "s3://bucket/ledgers");
    const KMS_KEY: (&str, &str) = ("APP_ENV_LEDGER_KMS_KEY_ID", "alias/ledger-root");

    /// With S3, everything but the root key (the signing key is required as well).
    fn s3_with(pairs: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
        let signing_key = crate::manifest::generate_key_pem();
        let mut all = vec![S3, ("APP_ENV_SIGNING_KEY", signing_key.as_str())];
        all.extend_from_slice(pairs);
        Config::from_vars(&vars(&all))
    }

    #[test]
    fn s3_needs_exactly_one_root_key() {
        let local = crate::crypto::generate_key_base64();
        let local_key = ("APP_ENV_LEDGER_ENCRYPTION_KEY", local.as_str());
        let neither = s3_with(&[]).unwrap_err();
        assert_eq!(
            neither.0,
            [
                "APP_ENV_LEDGER_ENCRYPTION_KEY / APP_ENV_LEDGER_KMS_KEY_ID: one is required when \
              APP_ENV_STORAGE_URL is s3://"
            ]
        );
        let both = s3_with(&[local_key, KMS_KEY]).unwrap_err();
        assert_eq!(both.0.len(), 1, "{both}");
        assert!(
            both.0[0].starts_with(
                "APP_ENV_LEDGER_ENCRYPTION_KEY / APP_ENV_LEDGER_KMS_KEY_ID: set exactly one"
            ),
            "{both}"
        );
        assert!(!both.to_string().contains(&local), "{both}");
        let with_local = s3_with(&[local_key]).unwrap();
        assert!(with_local.kms.is_none() && with_local.encryption_key.is_some());
        let with_kms = s3_with(&[KMS_KEY]).unwrap();
        assert!(with_kms.encryption_key.is_none());
        let kms = with_kms.kms.expect("the KMS root");
        assert_eq!(kms.key_id, "alias/ledger-root");
        assert_eq!(
            kms.settings,
            crate::keys::kms::KmsSettings {
                endpoint: None,
                region: "us-east-1".into(),
                access_key_id: None,
                secret_access_key: None,
                session_token: None,
            }
        );
    }

    #[test]
    fn local_storage_takes_either_root_or_none_but_not_both() {
        let local = crate::crypto::generate_key_base64();
        let local_key = ("APP_ENV_LEDGER_ENCRYPTION_KEY", local.as_str());
        let embedded = Config::from_vars(&vars(&[])).unwrap();
        assert!(embedded.kms.is_none() && embedded.encryption_key.is_none());
        let kms_alone = Config::from_vars(&vars(&[KMS_KEY])).unwrap();
        assert!(kms_alone.encryption_key.is_none());
        assert_eq!(kms_alone.kms.unwrap().key_id, "alias/ledger-root");
        let both = Config::from_vars(&vars(&[local_key, KMS_KEY])).unwrap_err();
        assert!(both.to_string().contains("set exactly one"), "{both}");
    }

    #[test]
    fn old_local_keys_stay_allowed_with_every_root() {
        let old = crate::crypto::generate_key_base64();
        let old_keys = ("APP_ENV_LEDGER_ENCRYPTION_KEYS_OLD", old.as_str());
        let current = crate::crypto::generate_key_base64();
        let local_key = ("APP_ENV_LEDGER_ENCRYPTION_KEY", current.as_str());
        for config in [
            s3_with(&[KMS_KEY, old_keys]),
            s3_with(&[local_key, old_keys]),
            Config::from_vars(&vars(&[KMS_KEY, old_keys])),
            Config::from_vars(&vars(&[old_keys])),
        ] {
            let config = config.unwrap();
            assert_eq!(config.encryption_keys_old.len(), 1);
        }
    }

    #[test]
    fn the_kms_settings_are_read_with_the_key_id() {
        let c = s3_with(&[
            (
                "APP_ENV_LEDGER_KMS_KEY_ID",
                "arn:aws:kms:eu-west-3:123456789012:key/k-1",
            ),
            ("APP_ENV_KMS_ENDPOINT", "http://127.0.0.1:19000"),
            ("APP_ENV_KMS_REGION", "eu-west-3"),
            ("APP_ENV_KMS_ACCESS_KEY_ID", "AKIAKMS"),
            ("APP_ENV_KMS_SECRET_ACCESS_KEY", "kms-s3cret"),
        ])
        .unwrap();
        let kms = c.kms.as_ref().unwrap();
        assert_eq!(kms.key_id, "arn:aws:kms:eu-west-3:123456789012:key/k-1");
        let s = &kms.settings;
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:19000"));
        assert_eq!(s.region, "eu-west-3");
        assert_eq!(s.access_key_id.as_deref(), Some("AKIAKMS"));
        assert_eq!(
            s.secret_access_key.as_ref().map(Secret::expose),
            Some("kms-s3cret")
        );
        let debug = format!("{c:?}");
        assert!(!debug.contains("kms-s3cret"), "{debug}");
    }

    #[test]
    fn kms_settings_without_the_key_id_name_it() {
        for (name, value) in [
            ("APP_ENV_KMS_ENDPOINT", "https://kms.example"),
            ("APP_ENV_KMS_REGION", "eu-west-3"),
            ("APP_ENV_KMS_ACCESS_KEY_ID", "AKIAKMS"),
            ("APP_ENV_KMS_SECRET_ACCESS_KEY", "kms-s3cret"),
        ] {
            let err = Config::from_vars(&vars(&[(name, value)])).unwrap_err();
            assert_eq!(err.0.len(), 1, "{err}");
            assert!(
                err.0[0].starts_with(&format!("{name}: set without APP_ENV_LEDGER_KMS_KEY_ID")),
                "{err}"
            );
            assert!(!err.to_string().contains("kms-s3cret"), "{err}");
        }
    }

    #[test]
    fn kms_credentials_come_in_pairs_and_the_endpoint_is_http() {
        for half in [
            ("APP_ENV_KMS_ACCESS_KEY_ID", "AKIAKMS"),
            ("APP_ENV_KMS_SECRET_ACCESS_KEY", "kms-s3cret"),
        ] {
            let err = Config::from_vars(&vars(&[KMS_KEY, half])).unwrap_err();
            assert_eq!(
                err.0,
                ["APP_ENV_KMS_ACCESS_KEY_ID / APP_ENV_KMS_SECRET_ACCESS_KEY: set both or neither"]
            );
        }
        let err = Config::from_vars(&vars(&[KMS_KEY, ("APP_ENV_KMS_ENDPOINT", "ftp://kms")]))
            .unwrap_err();
        assert_eq!(err.0, ["APP_ENV_KMS_ENDPOINT: expected an http(s) URL"]);
        let spaced =
            Config::from_vars(&vars(&[("APP_ENV_LEDGER_KMS_KEY_ID", "alias/a b")])).unwrap_err();
        assert!(
            spaced.0[0].starts_with("APP_ENV_LEDGER_KMS_KEY_ID: expected"),
            "{spaced}"
        );
    }
}

mod table {
    use std::collections::BTreeSet;

    use super::vars;

    use crate::config::settings::{self, Accepts, Default, Group};
    use crate::config::table::{self, TABLE};

    #[test]
    fn every_row_is_read_and_nothing_else_is() {
        // Kafka and S3 settings are read only with those backends: select both.
        let (_, read) = crate::config::read::read(&vars(&[
            ("APP_ENV_QUEUE", "kafka"),
            ("APP_ENV_STORAGE_URL", "s3://bucket/prefix"),
        ]));
        let read: BTreeSet<&str> = read.into_iter().collect();
        let rows: BTreeSet<&str> = TABLE.iter().map(|s| s.name).collect();
        assert_eq!(read, rows);
        assert_eq!(rows.len(), TABLE.len(), "a name is in the table twice");
        assert_eq!(
            settings::SETTINGS.len() + 1,
            TABLE.len(),
            "RUN_MODE and APP_ENV_*"
        );
        assert!(settings::SETTINGS.iter().all(|s| s.starts_with("APP_ENV_")));
    }

    #[test]
    fn every_default_is_a_value_the_setting_accepts() {
        for s in TABLE {
            match (s.accepts, s.default) {
                (Accepts::Integer { min, max }, Default::Integer(d)) => {
                    assert!((min..=max).contains(&d), "{}", s.name)
                }
                (Accepts::Integer { .. }, Default::Described(_) | Default::None) => {}
                (Accepts::OneOf(words), Default::Text(d)) => {
                    assert!(words.contains(&d), "{}", s.name)
                }
                (Accepts::Text, Default::Text(_)) => {}
                (Accepts::Integer { .. } | Accepts::OneOf(_), _) | (_, Default::Integer(_)) => {
                    panic!("{}: default {:?} for {:?}", s.name, s.default, s.accepts)
                }
                _ => {}
            }
            assert!(!s.summary.is_empty() && !s.doc.is_empty(), "{}", s.name);
        }
    }

    #[test]
    fn defaults_agree_with_the_modules_that_use_them() {
        let secs = |s: &settings::Setting| match s.default {
            Default::Integer(n) => n,
            _ => panic!("{}", s.name),
        };
        assert_eq!(
            secs(&table::AUTH_JWKS_MAX_AGE_SECS),
            crate::auth::jwt::DEFAULT_MAX_KEY_AGE.as_secs()
        );
        assert_eq!(
            secs(&table::AUTH_LEEWAY_SECS),
            crate::auth::jwt::DEFAULT_LEEWAY.as_secs()
        );
        assert!(matches!(
            table::WEBSOCKET_REDIS_CHANNEL.default,
            Default::Text(c) if c == crate::notify::redis::CHANNEL
        ));
    }

    #[test]
    fn help_names_every_setting_within_the_width() {
        let help = settings::help();
        for s in TABLE {
            assert!(help.contains(s.name), "{} not in:\n{help}", s.name);
        }
        for line in help.lines() {
            assert!(line.chars().count() <= 93, "too wide: {line}");
        }
        assert!(help.contains("docs/configuration.md"));
    }

    const END: &str = "<!-- END settings table -->";

    fn begin(key: &str) -> String {
        format!("<!-- BEGIN settings table: {key} (generated from src/config/table.rs) -->")
    }

    /// `text` with the table after the `key` marker replaced by `table`.
    fn splice(text: &str, key: &str, table: &str) -> String {
        let begin = begin(key);
        let at = text
            .find(&begin)
            .unwrap_or_else(|| panic!("no marker {begin}"))
            + begin.len();
        let end = at
            + text[at..]
                .find(END)
                .unwrap_or_else(|| panic!("no {END} after {begin}"));
        format!("{}\n{table}{}", &text[..at], &text[end..])
    }

    /// README.md's and docs/configuration.md's tables are made from the table. After a
    /// change to it, `LEDGER_WRITE_DOCS=1 cargo test --lib config::` rewrites them.
    #[test]
    fn the_documents_show_the_table() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let write = std::env::var_os("LEDGER_WRITE_DOCS").is_some();
        let readme = root.join("README.md");
        let docs = root.join("docs/configuration.md");
        for (path, tables) in [
            (&readme, vec![("all", settings::readme_table())]),
            (
                &docs,
                Group::ALL
                    .iter()
                    .map(|g| (g.title(), settings::docs_table(*g)))
                    .collect(),
            ),
        ] {
            let text = std::fs::read_to_string(path).expect("read the document");
            let expected = tables
                .iter()
                .fold(text.clone(), |t, (key, table)| splice(&t, key, table));
            if write {
                std::fs::write(path, &expected).expect("write the document");
            } else {
                assert!(
                    text == expected,
                    "{} differs from src/config/table.rs: run LEDGER_WRITE_DOCS=1 cargo test --lib config::",
                    path.display()
                );
            }
        }
    }
}
