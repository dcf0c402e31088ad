//! The table of settings: every variable the service reads, one row each, with its default,
//! what it accepts, its `--help` note and its documentation. Parsing ([`super::read`]), the
//! unknown-name check, `ledger --help` and the tables in README.md and
//! docs/configuration.md all come from these rows; a test fails when the documents drift.

use super::settings::{Accepts, Default, Group, Setting};

/// The largest duration in milliseconds a `…_MS` setting takes: one day.
const DAY_MS: u64 = 86_400_000;

/// Every row, in the order of the documentation: `RUN_MODE`, then the `APP_ENV_*` variables.
pub const TABLE: &[Setting] = &[
    RUN_MODE,
    APPLICATION_ROLES,
    HOST,
    PORT,
    DATA_DIR,
    NODE_ID,
    SHUTDOWN_TIMEOUT_MS,
    DATABASE_URL,
    QUEUE,
    KAFKA_BROKERS,
    KAFKA_TOPIC,
    KAFKA_GROUP_ID,
    KAFKA_CONSUMER_COUNT,
    KAFKA_PARTITIONS,
    KAFKA_SECURITY_PROTOCOL,
    KAFKA_SASL_MECHANISM,
    KAFKA_SASL_USERNAME,
    KAFKA_SASL_PASSWORD,
    STORAGE_URL,
    S3_ENDPOINT,
    S3_REGION,
    S3_ACCESS_KEY_ID,
    S3_SECRET_ACCESS_KEY,
    LEDGER_ENCRYPTION_KEY,
    LEDGER_ENCRYPTION_KEYS_OLD,
    LEDGER_KMS_KEY_ID,
    KMS_ENDPOINT,
    KMS_REGION,
    KMS_ACCESS_KEY_ID,
    KMS_SECRET_ACCESS_KEY,
    RETENTION_DAYS,
    SIGNING_KEY,
    SIGNING_KEYS_OLD,
    SIGNING_ISSUER,
    SOURCE_DIR,
    SOURCE_URL,
    SOURCE_TOKEN,
    SOURCE_MAX_PAGES,
    JOB_DEADLINE_MS,
    JOB_TIMEOUT_MS,
    SWEEP_INTERVAL_MS,
    MAX_ATTEMPTS,
    WORKER_CONCURRENCY,
    AUTH_JWKS_URL,
    AUTH_JWKS_MAX_AGE_SECS,
    AUTH_JWKS_FILE,
    AUTH_ISSUER,
    AUTH_AUDIENCE,
    AUTH_LEEWAY_SECS,
    POLICY_CACHE_TTL_MS,
    REDIS_URL,
    REDIS_TLS_CA_FILE,
    WEBSOCKET_REDIS_URL,
    WEBSOCKET_REDIS_CHANNEL,
    WS_PING_INTERVAL_MS,
    WS_REPLAY_MAX_AGE_MS,
    WS_MAX_SOCKETS_PER_SUBJECT,
    WEBHOOK_ALLOW_PRIVATE_NETWORKS,
    WEBHOOK_RETRY_SCHEDULE,
    WEBHOOK_CONCURRENCY,
    LOG_FORMAT,
    LOG_LEVEL,
];

pub const RUN_MODE: Setting = Setting {
    name: "RUN_MODE",
    group: Group::Process,
    accepts: Accepts::OneOf(&["serve", "migrate"]),
    default: Default::Text("serve"),
    help: "(serve|migrate)",
    summary: "`migrate` applies migrations and exits",
    doc: "`serve` or `migrate`. `migrate` applies the job store's migrations and exits, as `ledger migrate` does. Only used when no command is given on the command line (`ledger serve` serves whatever `RUN_MODE` says).",
};

pub const APPLICATION_ROLES: Setting = Setting {
    name: "APP_ENV_APPLICATION_ROLES",
    group: Group::Process,
    accepts: Accepts::Text,
    default: Default::Text("api,worker"),
    help: "(api,worker)",
    summary: "`api`, `worker` or both",
    doc: "`api`, `worker` or `api,worker`. `api` serves `/v1/api/ledger`; `worker` consumes the queue and runs the recovery sweep. Every process serves `/healthz`, `/readyz`, `/metrics`.",
};

pub const HOST: Setting = Setting {
    name: "APP_ENV_HOST",
    group: Group::Process,
    accepts: Accepts::Text,
    default: Default::Text("0.0.0.0"),
    help: "",
    summary: "address to bind",
    doc: "Address to bind.",
};

pub const PORT: Setting = Setting {
    name: "APP_ENV_PORT",
    group: Group::Process,
    accepts: Accepts::Integer {
        min: 0,
        max: 65_535,
    },
    default: Default::Integer(3000),
    help: "(3000)",
    summary: "HTTP port (`0` = ephemeral)",
    doc: "HTTP port, 0–65535 (`0`: an ephemeral port).",
};

pub const DATA_DIR: Setting = Setting {
    name: "APP_ENV_DATA_DIR",
    group: Group::Process,
    accepts: Accepts::Text,
    default: Default::Text("./data"),
    help: "(./data)",
    summary: "SQLite file, local objects, dev keys",
    doc: "Holds the SQLite file, the local objects, the generated encryption key and the dev signing key (by default).",
};

pub const RETENTION_DAYS: Setting = Setting {
    name: "APP_ENV_RETENTION_DAYS",
    group: Group::Storage,
    accepts: Accepts::Integer {
        min: 1,
        max: 36_500,
    },
    default: Default::Described("never"),
    help: "",
    summary: "days after which a FINAL ledger's files are removed (opt-in; unset: never)",
    doc: "Opt-in retention: once a FINAL ledger's completion is this many days old, workers remove every object under `ledgers/{merchantId}/{ledgerId}/` (all versions and attempts) and mark its files shredded (`file.shreddedAt`, downloads 410 `SHREDDED`); the ledger rows and manifests stay. Checked hourly. Unset: nothing is ever removed.",
};

pub const NODE_ID: Setting = Setting {
    name: "APP_ENV_NODE_ID",
    group: Group::Process,
    accepts: Accepts::Integer { min: 0, max: 1023 },
    default: Default::Described("leased"),
    help: "",
    summary: "Snowflake node id, 0–1023; unset, each process leases a free one from the job store",
    doc: "Snowflake node id, 0–1023. Unset: each process leases a free id from the job store (renewed while it runs, released on shutdown). Set it only if you assign ids yourself; two processes must never share one.",
};

pub const SHUTDOWN_TIMEOUT_MS: Setting = Setting {
    name: "APP_ENV_SHUTDOWN_TIMEOUT_MS",
    group: Group::Process,
    accepts: Accepts::Integer {
        min: 0,
        max: DAY_MS,
    },
    default: Default::Integer(30_000),
    help: "",
    summary: "grace for running jobs on SIGTERM; then they go back to PENDING",
    doc: "On SIGTERM/SIGINT, how long running jobs may finish before they are put back to PENDING and re-enqueued.",
};

pub const DATABASE_URL: Setting = Setting {
    name: "APP_ENV_DATABASE_URL",
    group: Group::JobStore,
    accepts: Accepts::Secret,
    default: Default::Described("`sqlite://{APP_ENV_DATA_DIR}/ledger.db`"),
    help: "(postgres://…; SQLite in the data dir when unset)",
    summary: "job store: `sqlite://path` or `postgres://…` (PostgreSQL must be migrated with `ledger migrate` first; TLS with `?sslmode=verify-full&sslrootcert=ca.pem`)",
    doc: "`sqlite://path` (or `sqlite:path`; a `?…` suffix is ignored) or `postgres://…` / `postgresql://…`. SQLite migrates itself at start-up; PostgreSQL must be migrated with `ledger migrate` (or `RUN_MODE=migrate`) first, and `serve` and `ledger policy` refuse to start while migrations are pending. May hold a password: treated as a secret. TLS with `?sslmode=require`, `verify-ca` or `verify-full` (`prefer`, the default, uses TLS when the server offers it but verifies nothing); `&sslrootcert=/path/ca.pem` trusts a private CA (RDS, Cloud SQL) besides the system's roots. See [Running with TLS](runbook.md#running-with-tls).",
};

pub const QUEUE: Setting = Setting {
    name: "APP_ENV_QUEUE",
    group: Group::Queue,
    accepts: Accepts::OneOf(&["db", "kafka"]),
    default: Default::Text("db"),
    help: "(db|kafka)",
    summary: "`db` (the job table is the queue) or `kafka`",
    doc: "`db`: the job table is the queue. `kafka`: Apache Kafka.",
};

pub const KAFKA_BROKERS: Setting = Setting {
    name: "APP_ENV_KAFKA_BROKERS",
    group: Group::Queue,
    accepts: Accepts::Text,
    default: Default::None,
    help: "",
    summary: "`host:port,…` (required with `kafka`)",
    doc: "`host:port,…`; required with `kafka`.",
};

pub const KAFKA_TOPIC: Setting = Setting {
    name: "APP_ENV_KAFKA_TOPIC",
    group: Group::Queue,
    accepts: Accepts::Text,
    default: Default::Text("ledger.generate"),
    help: "",
    summary: "topic of generation jobs (created when missing)",
    doc: "Topic of generation jobs; created when missing.",
};

pub const KAFKA_GROUP_ID: Setting = Setting {
    name: "APP_ENV_KAFKA_GROUP_ID",
    group: Group::Queue,
    accepts: Accepts::Text,
    default: Default::Text("ledger-workers"),
    help: "",
    summary: "consumer group of the workers",
    doc: "Consumer group of the workers.",
};

pub const KAFKA_CONSUMER_COUNT: Setting = Setting {
    name: "APP_ENV_KAFKA_CONSUMER_COUNT",
    group: Group::Queue,
    accepts: Accepts::Integer { min: 1, max: 64 },
    default: Default::Integer(2),
    help: "",
    summary: "consumers (jobs at once) per worker process",
    doc: "Consumers per worker process, 1–64; each runs one job at a time. Replaces `APP_ENV_WORKER_CONCURRENCY` with Kafka.",
};

pub const KAFKA_PARTITIONS: Setting = Setting {
    name: "APP_ENV_KAFKA_PARTITIONS",
    group: Group::Queue,
    accepts: Accepts::Integer {
        min: 1,
        max: 10_000,
    },
    default: Default::Integer(6),
    help: "",
    summary: "partitions of a topic this service creates",
    doc: "Partitions of the topic when this service creates it, 1–10000. They bound how many consumers of the group get work.",
};

pub const KAFKA_SECURITY_PROTOCOL: Setting = Setting {
    name: "APP_ENV_KAFKA_SECURITY_PROTOCOL",
    group: Group::Queue,
    accepts: Accepts::Text,
    default: Default::Described("unset (Kafka client default: plaintext)"),
    help: "",
    summary: "`plaintext`, `ssl`, `sasl_plaintext`, `sasl_ssl`",
    doc: "`plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.",
};

pub const KAFKA_SASL_MECHANISM: Setting = Setting {
    name: "APP_ENV_KAFKA_SASL_MECHANISM",
    group: Group::Queue,
    accepts: Accepts::Text,
    default: Default::None,
    help: "",
    summary: "`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`",
    doc: "Passed to the Kafka client as `sasl.mechanism` (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`).",
};

pub const KAFKA_SASL_USERNAME: Setting = Setting {
    name: "APP_ENV_KAFKA_SASL_USERNAME",
    group: Group::Queue,
    accepts: Accepts::Text,
    default: Default::None,
    help: "",
    summary: "SASL user",
    doc: "SASL user.",
};

pub const KAFKA_SASL_PASSWORD: Setting = Setting {
    name: "APP_ENV_KAFKA_SASL_PASSWORD",
    group: Group::Queue,
    accepts: Accepts::Secret,
    default: Default::None,
    help: "",
    summary: "SASL password",
    doc: "SASL password (secret).",
};

pub const STORAGE_URL: Setting = Setting {
    name: "APP_ENV_STORAGE_URL",
    group: Group::Storage,
    accepts: Accepts::Text,
    default: Default::Described("`file://{APP_ENV_DATA_DIR}/objects`"),
    help: "(file://…|s3://bucket/prefix)",
    summary: "object storage: `file:///dir` or `s3://bucket/prefix`",
    doc: "`file:///dir` (created when missing) or `s3://bucket/prefix` (prefix optional). Only ciphertext is stored.",
};

pub const S3_ENDPOINT: Setting = Setting {
    name: "APP_ENV_S3_ENDPOINT",
    group: Group::Storage,
    accepts: Accepts::HttpUrl,
    default: Default::Described("AWS"),
    help: "",
    summary: "endpoint of an S3-compatible server (`http://` allowed)",
    doc: "Endpoint of an S3-compatible server, `http(s)://…`; when set, requests are path-style and `http://` is allowed.",
};

pub const S3_REGION: Setting = Setting {
    name: "APP_ENV_S3_REGION",
    group: Group::Storage,
    accepts: Accepts::Text,
    default: Default::Text("us-east-1"),
    help: "",
    summary: "S3 region",
    doc: "S3 region.",
};

pub const S3_ACCESS_KEY_ID: Setting = Setting {
    name: "APP_ENV_S3_ACCESS_KEY_ID",
    group: Group::Storage,
    accepts: Accepts::Text,
    default: Default::None,
    help: "",
    summary: "S3 access key id (with the secret)",
    doc: "Static access key id; set together with the secret or neither.",
};

pub const S3_SECRET_ACCESS_KEY: Setting = Setting {
    name: "APP_ENV_S3_SECRET_ACCESS_KEY",
    group: Group::Storage,
    accepts: Accepts::Secret,
    default: Default::None,
    help: "",
    summary: "S3 secret access key",
    doc: "Static secret access key (secret).",
};

pub const LEDGER_ENCRYPTION_KEY: Setting = Setting {
    name: "APP_ENV_LEDGER_ENCRYPTION_KEY",
    group: Group::Storage,
    accepts: Accepts::Secret,
    default: Default::Described("generated into `{APP_ENV_DATA_DIR}/encryption.key`"),
    help: "",
    summary: "base64 of the 32-byte master key (with S3: this or `APP_ENV_LEDGER_KMS_KEY_ID`)",
    doc: "Base64 of the 32-byte master key (`ledger keygen` prints one). With `s3://` storage exactly one of this and `APP_ENV_LEDGER_KMS_KEY_ID` is **required**; with local storage, when neither is set, a key is generated into the data dir. Secret.",
};

pub const LEDGER_ENCRYPTION_KEYS_OLD: Setting = Setting {
    name: "APP_ENV_LEDGER_ENCRYPTION_KEYS_OLD",
    group: Group::Storage,
    accepts: Accepts::Secret,
    default: Default::None,
    help: "",
    summary: "comma-separated older keys that still decrypt",
    doc: "Comma-separated older master keys (same form) that still decrypt files sealed with them, whatever the current root: also after a move to a KMS key (`APP_ENV_LEDGER_KMS_KEY_ID`). Secret.",
};

pub const LEDGER_KMS_KEY_ID: Setting = Setting {
    name: "APP_ENV_LEDGER_KMS_KEY_ID",
    group: Group::Storage,
    accepts: Accepts::Text,
    default: Default::None,
    help: "",
    summary: "the root key in AWS KMS: key id, key ARN, `alias/…` or alias ARN (instead of a local master key)",
    doc: "The root key in AWS KMS (or a KMS-compatible server): a key id, key ARN, alias name (`alias/…`) or alias ARN. Instead of `APP_ENV_LEDGER_ENCRYPTION_KEY`: with `s3://` storage exactly one of the two is **required**; with local storage it may be set alone, and then no local key is generated. Never together with `APP_ENV_LEDGER_ENCRYPTION_KEY` (a former local key goes in `APP_ENV_LEDGER_ENCRYPTION_KEYS_OLD`). The `APP_ENV_KMS_*` settings are used only with it. At start-up KMS describes the key: a key that is missing, disabled or not allowed stops the start; a KMS that cannot be reached stops it too unless this is a key ARN (`arn:aws:kms:<region>:<account>:key/<id>`), with which the process starts not ready (`/readyz` check `kms`) until KMS answers.",
};

pub const KMS_ENDPOINT: Setting = Setting {
    name: "APP_ENV_KMS_ENDPOINT",
    group: Group::Storage,
    accepts: Accepts::HttpUrl,
    default: Default::Described("AWS (`https://kms.{region}.amazonaws.com`)"),
    help: "",
    summary: "endpoint of a KMS-compatible server (`http://` allowed)",
    doc: "Endpoint of a KMS-compatible server, `http(s)://host[:port]`; `http://` is allowed. Only with `APP_ENV_LEDGER_KMS_KEY_ID`.",
};

pub const KMS_REGION: Setting = Setting {
    name: "APP_ENV_KMS_REGION",
    group: Group::Storage,
    accepts: Accepts::Text,
    default: Default::Text("us-east-1"),
    help: "",
    summary: "KMS region",
    doc: "The region of the KMS key (part of every request's signature). Only with `APP_ENV_LEDGER_KMS_KEY_ID`.",
};

pub const KMS_ACCESS_KEY_ID: Setting = Setting {
    name: "APP_ENV_KMS_ACCESS_KEY_ID",
    group: Group::Storage,
    accepts: Accepts::Text,
    default: Default::Described("`AWS_ACCESS_KEY_ID`"),
    help: "",
    summary: "KMS access key id (with the secret)",
    doc: "Static access key id for KMS; set together with the secret or neither. Neither: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN` from the environment. Only with `APP_ENV_LEDGER_KMS_KEY_ID`.",
};

pub const KMS_SECRET_ACCESS_KEY: Setting = Setting {
    name: "APP_ENV_KMS_SECRET_ACCESS_KEY",
    group: Group::Storage,
    accepts: Accepts::Secret,
    default: Default::Described("`AWS_SECRET_ACCESS_KEY`"),
    help: "",
    summary: "KMS secret access key",
    doc: "Static secret access key for KMS (secret).",
};

pub const SIGNING_KEY: Setting = Setting {
    name: "APP_ENV_SIGNING_KEY",
    group: Group::Storage,
    accepts: Accepts::Secret,
    default: Default::Described("generated into `{APP_ENV_DATA_DIR}/manifest-signing-key.pem`"),
    help: "",
    summary: "PKCS#8 PEM of the P-256 key that signs manifests (required with S3)",
    doc: "PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`) of the P-256 key every replica signs the manifests of completed files with (ES256; `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256` makes one). Line breaks may be written as `\\n`. Its public key is published at `/v1/api/ledger/.well-known/jwks.json`. **Required** with `s3://` storage. Secret.",
};

pub const SIGNING_KEYS_OLD: Setting = Setting {
    name: "APP_ENV_SIGNING_KEYS_OLD",
    group: Group::Storage,
    accepts: Accepts::Text,
    default: Default::None,
    help: "",
    summary: "PEM of retired signing keys, still published",
    doc: "One or more PEM blocks, one after the other: the public keys (`-----BEGIN PUBLIC KEY-----`; `openssl pkey -in old.pem -pubout` gives one) of signing keys no longer in use. They stay in the JWKS so manifests signed with them still verify. A private key is refused: a retired key's private part should be destroyed.",
};

pub const SIGNING_ISSUER: Setting = Setting {
    name: "APP_ENV_SIGNING_ISSUER",
    group: Group::Storage,
    accepts: Accepts::Text,
    default: Default::Text("ledger"),
    help: "(ledger)",
    summary: "`iss` of every manifest",
    doc: "The `iss` claim of every manifest: who vouches for the statements (e.g. `https://ledger.example.com`).",
};

pub const SOURCE_DIR: Setting = Setting {
    name: "APP_ENV_SOURCE_DIR",
    group: Group::Source,
    accepts: Accepts::Text,
    default: Default::Text("examples/source"),
    help: "(examples/source)",
    summary: "`{merchantId}.json` / `.ndjson` files",
    doc: "Directory of `{merchantId}.json` / `{merchantId}.ndjson` files (file adapter).",
};

pub const SOURCE_URL: Setting = Setting {
    name: "APP_ENV_SOURCE_URL",
    group: Group::Source,
    accepts: Accepts::HttpUrl,
    default: Default::None,
    help: "",
    summary: "upstream HTTP API of entries (instead of the source dir)",
    doc: "Base URL (`http(s)://`, no query) of an upstream HTTP API of entries; when set it replaces the source directory.",
};

pub const SOURCE_TOKEN: Setting = Setting {
    name: "APP_ENV_SOURCE_TOKEN",
    group: Group::Source,
    accepts: Accepts::Secret,
    default: Default::None,
    help: "",
    summary: "bearer token for the upstream",
    doc: "Bearer token sent to `APP_ENV_SOURCE_URL` (secret).",
};

pub const SOURCE_MAX_PAGES: Setting = Setting {
    name: "APP_ENV_SOURCE_MAX_PAGES",
    group: Group::Source,
    accepts: Accepts::Integer {
        min: 1,
        max: 100_000_000,
    },
    default: Default::Integer(100_000),
    help: "(100000)",
    summary: "the most pages the HTTP source follows for one ledger (it also refuses a cursor it has seen)",
    doc: "The most pages the HTTP source follows for one ledger (1–100,000,000); more is a `FETCH_DATA_ERROR`. A `nextCursor` that returns to an earlier page's cursor (a cycle) is refused as well.",
};

pub const JOB_DEADLINE_MS: Setting = Setting {
    name: "APP_ENV_JOB_DEADLINE_MS",
    group: Group::Worker,
    accepts: Accepts::Integer {
        min: 100,
        max: DAY_MS,
    },
    default: Default::Integer(1_800_000),
    help: "(30 min)",
    summary: "the longest one attempt may run, lease renewals or not; then REJECTED / JOB_EXECUTION_FAILED (retryable)",
    doc: "The longest one attempt may run, however often its lease is renewed (30 min; a 10M-entry ledger takes well under it). Past it the attempt is cancelled and the ledger is REJECTED with `JOB_EXECUTION_FAILED` (retryable).",
};

pub const JOB_TIMEOUT_MS: Setting = Setting {
    name: "APP_ENV_JOB_TIMEOUT_MS",
    group: Group::Worker,
    accepts: Accepts::Integer {
        min: 100,
        max: DAY_MS,
    },
    default: Default::Integer(120_000),
    help: "",
    summary: "lease of a running job; age at which an unclaimed job is re-enqueued",
    doc: "Lease of a running job (renewed every third of it), and the age at which an unclaimed PENDING job is re-enqueued by the sweep. Minimum 100.",
};

pub const SWEEP_INTERVAL_MS: Setting = Setting {
    name: "APP_ENV_SWEEP_INTERVAL_MS",
    group: Group::Worker,
    accepts: Accepts::Integer {
        min: 50,
        max: DAY_MS,
    },
    default: Default::Integer(60_000),
    help: "",
    summary: "recovery sweep period",
    doc: "Period of the recovery sweep (which also runs at start-up). Minimum 50.",
};

pub const MAX_ATTEMPTS: Setting = Setting {
    name: "APP_ENV_MAX_ATTEMPTS",
    group: Group::Worker,
    accepts: Accepts::Integer { min: 1, max: 1000 },
    default: Default::Integer(5),
    help: "",
    summary: "attempts after which a stalled job is REJECTED",
    doc: "1–1000. Lease expiries (stalls) since the last retry or regenerate after which the sweep marks a job REJECTED / `JOB_EXECUTION_FAILED` instead of re-enqueuing it.",
};

pub const WORKER_CONCURRENCY: Setting = Setting {
    name: "APP_ENV_WORKER_CONCURRENCY",
    group: Group::Worker,
    accepts: Accepts::Integer { min: 1, max: 256 },
    default: Default::Integer(2),
    help: "",
    summary: "jobs a worker process runs at once",
    doc: "Jobs a worker process runs at once with the in-database queue, 1–256.",
};

pub const AUTH_JWKS_URL: Setting = Setting {
    name: "APP_ENV_AUTH_JWKS_URL",
    group: Group::Auth,
    accepts: Accepts::HttpUrl,
    default: Default::None,
    help: "",
    summary: "JWKS of the identity service",
    doc: "`http(s)://` URL of the identity service's JWKS.",
};

pub const AUTH_JWKS_MAX_AGE_SECS: Setting = Setting {
    name: "APP_ENV_AUTH_JWKS_MAX_AGE_SECS",
    group: Group::Auth,
    accepts: Accepts::Integer {
        min: 1,
        max: 86_400,
    },
    default: Default::Integer(3600),
    help: "(3600)",
    summary: "keys from the JWKS URL not refreshed for this long are refused (1–86400)",
    doc: "Keys from `APP_ENV_AUTH_JWKS_URL` not refreshed successfully for this long, in seconds, 1–86400, are refused (401) and `/readyz` fails on `auth` until a fetch succeeds: how long a key the issuer withdrew stays usable while the JWKS cannot be fetched. The keys are refreshed every 5 minutes (or every half of this, when shorter).",
};

pub const AUTH_JWKS_FILE: Setting = Setting {
    name: "APP_ENV_AUTH_JWKS_FILE",
    group: Group::Auth,
    accepts: Accepts::Text,
    default: Default::None,
    help: "",
    summary: "a JWKS file instead",
    doc: "A JWKS file instead (used when no URL is set). Neither set: the local dev key in the data dir.",
};

pub const AUTH_ISSUER: Setting = Setting {
    name: "APP_ENV_AUTH_ISSUER",
    group: Group::Auth,
    accepts: Accepts::Text,
    default: Default::None,
    help: "",
    summary: "required `iss`",
    doc: "When set, tokens must carry this `iss`.",
};

pub const AUTH_AUDIENCE: Setting = Setting {
    name: "APP_ENV_AUTH_AUDIENCE",
    group: Group::Auth,
    accepts: Accepts::Text,
    default: Default::None,
    help: "",
    summary: "required `aud`",
    doc: "When set, tokens must carry this `aud`.",
};

pub const AUTH_LEEWAY_SECS: Setting = Setting {
    name: "APP_ENV_AUTH_LEEWAY_SECS",
    group: Group::Auth,
    accepts: Accepts::Integer { min: 0, max: 300 },
    default: Default::Integer(30),
    help: "(30)",
    summary: "clock skew tolerated on `exp`/`nbf` (0–300): a token is accepted until `exp` + this",
    doc: "Clock skew tolerated on `exp` and `nbf`, in seconds, 0–300: a token is accepted until `exp` + this, and a WebSocket is closed (4001) then.",
};

pub const POLICY_CACHE_TTL_MS: Setting = Setting {
    name: "APP_ENV_POLICY_CACHE_TTL_MS",
    group: Group::Auth,
    accepts: Accepts::Integer {
        min: 0,
        max: DAY_MS,
    },
    default: Default::Integer(5000),
    help: "",
    summary: "how long authorization decisions are cached",
    doc: "How often (at most) an api process checks the store for changed grants; a grant or revoke applies within this time. `0` checks on every decision.",
};

pub const REDIS_URL: Setting = Setting {
    name: "APP_ENV_REDIS_URL",
    group: Group::Auth,
    accepts: Accepts::RedisUrl,
    default: Default::None,
    help: "",
    summary: "Redis for the shared policy cache; grants and revokes reach every api process at once (`rediss://` for TLS)",
    doc: "`redis://` or `rediss://` (TLS, the certificate verified against the host name). Shared policy cache: api processes share the grant snapshot and `ledger policy` changes reach every process at once. Secret.",
};

pub const REDIS_TLS_CA_FILE: Setting = Setting {
    name: "APP_ENV_REDIS_TLS_CA_FILE",
    group: Group::Auth,
    accepts: Accepts::Text,
    default: Default::Described("system roots"),
    help: "",
    summary: "PEM CA file a `rediss://` server must chain to (a private CA); both Redis URLs",
    doc: "PEM file of the CA certificate(s) that the `rediss://` servers of `APP_ENV_REDIS_URL` and `APP_ENV_WEBSOCKET_REDIS_URL` must chain to, for a private CA (ElastiCache, Memorystore); replaces the system's roots for Redis only. A configuration error when unreadable, holding no certificate, or set with no `rediss://` URL.",
};

pub const WEBSOCKET_REDIS_URL: Setting = Setting {
    name: "APP_ENV_WEBSOCKET_REDIS_URL",
    group: Group::Events,
    accepts: Accepts::RedisUrl,
    default: Default::None,
    help: "",
    summary: "Redis for status events across processes (in-process when unset)",
    doc: "`redis://` or `rediss://` (TLS; a private CA via `APP_ENV_REDIS_TLS_CA_FILE`). Status and progress events cross processes through Redis pub/sub (needed when workers and api processes are separate). Unset: in-process only. Secret.",
};

pub const WEBSOCKET_REDIS_CHANNEL: Setting = Setting {
    name: "APP_ENV_WEBSOCKET_REDIS_CHANNEL",
    group: Group::Events,
    accepts: Accepts::Text,
    default: Default::Text("ledger.events"),
    help: "",
    summary: "the pub/sub channel of those events: one per deployment sharing a Redis",
    doc: "The pub/sub channel of those events: the same for every process of one deployment, a different one per deployment sharing a Redis (pub/sub ignores Redis database numbers).",
};

pub const WS_PING_INTERVAL_MS: Setting = Setting {
    name: "APP_ENV_WS_PING_INTERVAL_MS",
    group: Group::Events,
    accepts: Accepts::Integer {
        min: 50,
        max: DAY_MS,
    },
    default: Default::Integer(20_000),
    help: "",
    summary: "WebSocket keep-alive pings; a client silent for two intervals is closed",
    doc: "WebSocket keep-alive ping interval; a client silent for two intervals is closed. Minimum 50.",
};

pub const WS_REPLAY_MAX_AGE_MS: Setting = Setting {
    name: "APP_ENV_WS_REPLAY_MAX_AGE_MS",
    group: Group::Events,
    accepts: Accepts::Integer {
        min: 1000,
        max: 7 * DAY_MS,
    },
    default: Default::Integer(86_400_000),
    help: "(24 h)",
    summary: "how far back `?since=` replays (1 s – 7 days); older: from now minus this, `complete: false`",
    doc: "How far back a WebSocket's `?since=` replays (24 h), 1000 to 604800000 (7 days). An older `since` replays from now minus this and the replay marker says `complete: false`.",
};

pub const WS_MAX_SOCKETS_PER_SUBJECT: Setting = Setting {
    name: "APP_ENV_WS_MAX_SOCKETS_PER_SUBJECT",
    group: Group::Events,
    accepts: Accepts::Integer {
        min: 1,
        max: 100_000,
    },
    default: Default::Integer(100),
    help: "(100)",
    summary: "WebSockets one subject may hold per api process (1–100000); beyond, 429",
    doc: "WebSockets one subject (`sub`) may hold open on one api process, 1–100000; one more is a 429 `TOO_MANY_REQUESTS` (4029 after a first-frame authentication). Per process: N replicas allow up to N times this.",
};

pub const WEBHOOK_ALLOW_PRIVATE_NETWORKS: Setting = Setting {
    name: "APP_ENV_WEBHOOK_ALLOW_PRIVATE_NETWORKS",
    group: Group::Webhooks,
    accepts: Accepts::OneOf(&["true", "false"]),
    default: Default::Text("false"),
    help: "(false)",
    summary: "`true`: webhook URLs may be `http` and reach private, loopback and link-local addresses",
    doc: "`true` or `false`. By default a webhook URL must be `https` and its host must not be (or resolve to, at every connection) a private, loopback, link-local or otherwise special address, so a webhook cannot reach into the service's own network. `true` allows both, for receivers inside the network (on premise, tests).",
};

pub const WEBHOOK_RETRY_SCHEDULE: Setting = Setting {
    name: "APP_ENV_WEBHOOK_RETRY_SCHEDULE",
    group: Group::Webhooks,
    accepts: Accepts::Text,
    default: Default::Text("5s,5m,30m,2h,5h,10h,10h"),
    help: "(5s,5m,30m,2h,5h,10h,10h)",
    summary: "delays after each failed delivery attempt (±20% jitter); after the last, FAILED",
    doc: "The delays after the 1st, 2nd, … failed attempt of a delivery, comma-separated, each a number with a unit (`ms`, `s`, `m`, `h`, `d`), 1 to 20 delays of 100 ms to 1 d. Each is drawn within ±20% (jitter). After the last the delivery is FAILED (redeliver it by hand). The default spans about a day and a half.",
};

pub const WEBHOOK_CONCURRENCY: Setting = Setting {
    name: "APP_ENV_WEBHOOK_CONCURRENCY",
    group: Group::Webhooks,
    accepts: Accepts::Integer { min: 1, max: 1_000 },
    default: Default::Integer(16),
    help: "(16)",
    summary: "webhook deliveries in flight per worker process (a quarter at most to one endpoint, half to one subject's)",
    doc: "Webhook deliveries one worker process makes at once, 1–1000. One endpoint gets at most a quarter of them and the endpoints of one subject at most half (each at least 1), taken in turn, so a slow or dead receiver — or one subject's many — never holds up the others.",
};

pub const LOG_FORMAT: Setting = Setting {
    name: "APP_ENV_LOG_FORMAT",
    group: Group::Logging,
    accepts: Accepts::OneOf(&["logfmt", "json"]),
    default: Default::Text("logfmt"),
    help: "(logfmt|json)",
    summary: "`logfmt` or `json`",
    doc: "`logfmt` (`ts=… level=… target=… msg=… key=value…`) or `json` (one object per line).",
};

pub const LOG_LEVEL: Setting = Setting {
    name: "APP_ENV_LOG_LEVEL",
    group: Group::Logging,
    accepts: Accepts::Text,
    default: Default::Text("info"),
    help: "",
    summary: "a tracing filter",
    doc: "A tracing filter: `info`, `debug`, `ledger=debug,info` … An invalid filter is a configuration error. At `debug`, successful `/healthz`, `/readyz` and `/metrics` requests are logged too.",
};
