//! The production job store: PostgreSQL through a connection pool. The statements are
//! [`SqlStore`]'s; this file holds the connection set-up and the [`Dialect`]: every status
//! change is one conditional `UPDATE … RETURNING` in a data-modifying CTE, which under READ
//! COMMITTED re-checks its `WHERE` on the newest row version after waiting for a concurrent
//! writer, so two workers or sweepers never both win.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, Postgres};

use super::StoreError;
use super::sql::{Changed, Dialect, SqlStore, Taken};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// Enough for the api's request concurrency plus a worker's jobs; with the relaxed pool's,
/// 14 a replica at most: PostgreSQL's default of 100 server connections still leaves room
/// for several replicas.
const MAX_CONNECTIONS: u32 = 10;
/// Connections of the relaxed commits (a worker's claims, lease renewals and phases).
const RELAXED_CONNECTIONS: u32 = 4;
/// A request waits this long for a free connection before it fails instead of hanging.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle connections are closed so a quiet replica does not pin server slots.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Connections are recycled so server-side memory and a failover are picked up.
const MAX_LIFETIME: Duration = Duration::from_secs(1800);

/// Constraint names from the migration; a unique violation is told apart by them.
const LEDGERS_PKEY: &str = "ledgers_pkey";
const LEDGERS_IDENTITY_KEY: &str = "ledgers_identity_key";

/// What PostgreSQL does its own way.
pub struct PgDialect;

/// The PostgreSQL adapter.
pub type PostgresStore = SqlStore<PgDialect>;

impl SqlStore<PgDialect> {
    /// Connects a pool to the database at `url` (objects in the server's default
    /// `search_path`). Errors never carry the URL: it may hold a password.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        open(connect_options(url)?, None).await
    }

    /// Connects a pool whose every connection works inside `schema`, creating it when
    /// missing. Tests give each store its own schema so they run in parallel on one server.
    pub async fn connect_in_schema(url: &str, schema: &str) -> Result<Self, StoreError> {
        let quoted = quote_schema(schema)?;
        let options = connect_options(url)?;
        // One short-lived connection creates the schema before any pooled connection
        // points its search_path at it.
        let mut conn = PgConnection::connect_with(&options).await?;
        let created = conn
            .execute(format!("CREATE SCHEMA IF NOT EXISTS {quoted}").as_str())
            .await;
        conn.close().await?;
        match created {
            Ok(_) => {}
            // Two processes creating the same schema at once: the loser finds it there.
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {}
            Err(e) => return Err(e.into()),
        }
        open(options, Some(format!("SET search_path TO {quoted}"))).await
    }
}

/// The store over `options`: its main pool, and the pool of relaxed commits
/// (`SqlStore::relaxed`: claims, lease renewals and phase records, committed with
/// `synchronous_commit = off`, which the job's durable completion then covers). Every
/// connection runs `setup` first.
async fn open(
    options: PgConnectOptions,
    setup: Option<String>,
) -> Result<PostgresStore, StoreError> {
    let main = pool(MAX_CONNECTIONS, options.clone(), setup.clone()).await?;
    let relaxed = pool(
        RELAXED_CONNECTIONS,
        options.options([("synchronous_commit", "off")]),
        setup,
    )
    .await?;
    Ok(SqlStore::new(main).with_relaxed_commits(relaxed))
}

async fn pool(
    max: u32,
    options: PgConnectOptions,
    setup: Option<String>,
) -> Result<sqlx::PgPool, StoreError> {
    let mut pool = pool_options().max_connections(max);
    if let Some(setup) = setup {
        pool = pool.after_connect(move |conn, _meta| {
            let setup = setup.clone();
            Box::pin(async move {
                conn.execute(setup.as_str()).await?;
                Ok(())
            })
        });
    }
    Ok(pool.connect_with(options).await?)
}

fn connect_options(url: &str) -> Result<PgConnectOptions, StoreError> {
    // The parse error names the bad component, never the URL itself.
    Ok(PgConnectOptions::from_str(url)?.application_name("ledger"))
}

fn pool_options() -> PgPoolOptions {
    PgPoolOptions::new()
        .min_connections(0)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .idle_timeout(IDLE_TIMEOUT)
        .max_lifetime(MAX_LIFETIME)
}

/// Quotes a schema name after checking it is a plain identifier: it is spliced into SQL
/// (`SET search_path` takes no bind parameters).
fn quote_schema(schema: &str) -> Result<String, StoreError> {
    let plain = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !schema.starts_with(|c: char| c.is_ascii_digit());
    if plain {
        Ok(format!("\"{schema}\""))
    } else {
        Err(StoreError::Backend(sqlx::Error::Configuration(
            format!("schema name {schema:?} is not a lower-case identifier").into(),
        )))
    }
}

#[async_trait]
impl Dialect for PgDialect {
    type Db = Postgres;
    const CHANGED: Changed = Changed::Returning;
    const GROUP_COMMIT: bool = false;
    const ONE_WRITER: bool = false;
    // to_regclass resolves through the search_path, like the migrator's own queries.
    const MIGRATIONS_TABLE_EXISTS: &'static str =
        "SELECT to_regclass('_sqlx_migrations') IS NOT NULL";
    const LOCK_POLICY: &'static str =
        "SELECT revision FROM policy_revision WHERE id = 1 FOR UPDATE";
    const RANDOM_REVISION: &'static str = "floor(random() * 9e18)::BIGINT";
    const LOCK_ROWS: &'static str = " FOR NO KEY UPDATE";
    const SKIP_LOCKED: &'static str = " FOR NO KEY UPDATE SKIP LOCKED";
    const UNINDEXED: &'static str = "";
    const SHARE_ROW: &'static str = " FOR SHARE";

    fn migrator() -> &'static Migrator {
        &MIGRATOR
    }

    fn json_texts(param: &str) -> String {
        format!("SELECT jsonb_array_elements_text({param}::jsonb)")
    }

    fn merchant_rows(param: &str) -> Option<String> {
        Some(format!(
            "jsonb_array_elements_text({param}::jsonb) AS s(merchant_id)"
        ))
    }

    /// Told apart by the constraint names of the migration.
    fn taken(e: &sqlx::Error) -> Option<Taken> {
        match e {
            sqlx::Error::Database(db) if db.is_unique_violation() => match db.constraint()? {
                LEDGERS_PKEY => Some(Taken::Id),
                LEDGERS_IDENTITY_KEY => Some(Taken::Identity),
                _ => None,
            },
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use crate::domain::Status;

    use chrono::Duration as ChronoDuration;
    use tokio::sync::Barrier;

    use super::super::contract;
    use super::*;
    use crate::domain::LedgerId;
    use crate::store::{InsertOutcome, JobStore};
    use chrono::Utc;

    const DEFAULT_TEST_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

    fn test_url() -> String {
        std::env::var("LEDGER_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_TEST_URL.into())
    }

    /// The URL for a failure message, with any password masked.
    fn shown(url: &str) -> String {
        match url::Url::parse(url) {
            Ok(mut u) => {
                if u.password().is_some() {
                    let _ = u.set_password(Some("***"));
                }
                u.to_string()
            }
            Err(_) => "<unparsable LEDGER_TEST_DATABASE_URL>".into(),
        }
    }

    /// A store in a fresh schema of its own, and the guard that drops the schema when the
    /// test ends, passed or failed. Fails (never skips) when the server is away.
    async fn fresh_store() -> (PostgresStore, DroppedSchema) {
        let url = test_url();
        let schema = format!("ledger_test_{}", uuid::Uuid::new_v4().simple());
        match PostgresStore::connect_in_schema(&url, &schema).await {
            Ok(store) => (store, DroppedSchema { url, schema }),
            Err(e) => panic!(
                "cannot reach PostgreSQL at {} ({e}); scripts/run-tests.sh starts PostgreSQL, \
                 or set LEDGER_TEST_DATABASE_URL to a running server",
                shown(&url)
            ),
        }
    }

    /// Drops its schema on drop (a panicking test included), from a thread and runtime of
    /// its own, since a drop may run inside the test's runtime.
    struct DroppedSchema {
        url: String,
        schema: String,
    }

    impl Drop for DroppedSchema {
        fn drop(&mut self) {
            use sqlx::Connection;
            let (url, schema) = (self.url.clone(), self.schema.clone());
            let dropped = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                runtime.block_on(async {
                    let mut conn = sqlx::PgConnection::connect(&url)
                        .await
                        .map_err(|e| e.to_string())?;
                    // A failed test may still hold the schema's tables: wait a while, never
                    // forever.
                    sqlx::query("SET lock_timeout = '10s'")
                        .execute(&mut conn)
                        .await
                        .map_err(|e| e.to_string())?;
                    sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                        .execute(&mut conn)
                        .await
                        .map_err(|e| e.to_string())?;
                    conn.close().await.map_err(|e| e.to_string())
                })
            })
            .join();
            match dropped {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("could not drop test schema {}: {e}", self.schema),
                Err(_) => eprintln!("could not drop test schema {}", self.schema),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_postgres_store_meets_the_contract() {
        let (store, schema) = fresh_store().await;
        let pending = store.pending_migrations().await.unwrap();
        assert_eq!(
            pending,
            [
                "1_init",
                "2_status events by time",
                "3_policy digest",
                "4_idempotency expiry",
                "5_file header digest",
                "6_batches",
                "7_schedules",
                "8_file manifest",
                "9_webhooks",
                "10_list indexes",
                "11_events by merchant",
                "12_batch member bucket",
                "13_key hierarchy",
                "14_live files by key",
            ],
            "a fresh schema has every migration pending"
        );
        store.migrate().await.unwrap();
        store.migrate().await.unwrap();
        assert!(store.pending_migrations().await.unwrap().is_empty());
        let (pool, relaxed) = (store.pool.clone(), store.relaxed().clone());
        contract::keys::run(&store).await;
        contract::run_all(Arc::new(store)).await;
        pool.close().await;
        relaxed.close().await;
        drop(schema);
    }

    /// Migrations 0011 and 0012 fill in what a store that lived under 0010 holds.
    #[tokio::test]
    async fn an_older_store_gains_the_event_merchants_and_member_buckets() {
        let (store, schema) = fresh_store().await;
        let before = sqlx::migrate::Migrator {
            migrations: std::borrow::Cow::Owned(MIGRATOR.migrations[..10].to_vec()),
            ..sqlx::migrate::Migrator::DEFAULT
        };
        before.run(&store.pool).await.unwrap();
        crate::store::sql::seed::plans::check_upgrade(&store).await;
        // A worker of the previous version, during a rolling upgrade, inserts members
        // without a bucket: the database fills it in.
        crate::store::sql::seed::plans::check_member_without_bucket(&store).await;
        store.pool.close().await;
        store.relaxed().close().await;
        drop(schema);
    }

    /// Every shape of `GET /ledgers` uses an index on PostgreSQL too (never a sequential
    /// scan of the ledgers) and pages exactly as a plain query would, over seeded and
    /// analysed ledgers; so do a batch's member pages, timelines and replays.
    #[tokio::test]
    async fn every_list_and_event_read_goes_through_its_index() {
        let (store, schema) = fresh_store().await;
        store.migrate().await.unwrap();
        crate::store::sql::seed::plans::check_reads(&store, 200_000).await;
        store.pool.close().await;
        store.relaxed().close().await;
        drop(schema);
    }

    /// Claims, lease renewals and phase records are committed asynchronously, in the test's
    /// schema like everything else; every other write waits for the WAL flush.
    #[tokio::test]
    async fn only_the_records_recovery_covers_are_committed_asynchronously() {
        let (store, schema) = fresh_store().await;
        let show = |pool: &sqlx::PgPool, setting: &'static str| {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, String>(&format!("SHOW {setting}"))
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(show(&store.pool, "synchronous_commit").await, "on");
        assert_eq!(show(store.relaxed(), "synchronous_commit").await, "off");
        assert_eq!(
            show(store.relaxed(), "search_path").await,
            show(&store.pool, "search_path").await
        );
        store.pool.close().await;
        store.relaxed().close().await;
        drop(schema);
    }

    #[tokio::test]
    async fn a_bad_schema_name_is_refused_before_any_sql() {
        let err = PostgresStore::connect_in_schema(&test_url(), "x\"; DROP TABLE y; --")
            .await
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("not a lower-case identifier"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn errors_do_not_carry_the_url() {
        let bad_port = PostgresStore::connect("postgres://user:s3cret@127.0.0.1:notaport/db")
            .await
            .err()
            .unwrap();
        assert!(!format!("{bad_port} {bad_port:?}").contains("s3cret"));
        // A server-side refusal (no such database) comes back at once, password-free.
        let mut url = url::Url::parse(&test_url()).unwrap();
        url.set_password(Some("s3cret")).unwrap();
        url.set_path("ledger_no_such_database");
        let refused = PostgresStore::connect(url.as_str()).await.err().unwrap();
        let shown = format!("{refused} {refused:?}");
        assert!(shown.contains("does not exist"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    /// Many tasks on several pooled connections race for the same rows: every claim and
    /// every sweep reset has exactly one winner.
    #[tokio::test(flavor = "multi_thread", worker_threads = 8)]
    async fn many_claimers_and_sweepers_have_one_winner_per_row() {
        const ROWS: i64 = 24;
        const TASKS: usize = 16;
        let (store, schema) = fresh_store().await;
        store.migrate().await.unwrap();
        let pool = store.pool.clone();
        let store: Arc<PostgresStore> = Arc::new(store);
        let mut ids = Vec::new();
        for i in 0..ROWS {
            let day = format!("2025-01-{:02}", i + 1);
            let new = contract::new_ledger(9000 + i, "m_conc", &day, None);
            assert!(matches!(
                store.insert_ledger(&new, None).await.unwrap(),
                InsertOutcome::Created(_)
            ));
            ids.push(new.id);
        }

        // Each task tries every row, starting at a different one, with an expired lease so
        // the sweep below finds them all stalled.
        let claim_race = |store: Arc<PostgresStore>, ids: Vec<LedgerId>| async move {
            let barrier = Arc::new(Barrier::new(TASKS));
            let mut tasks = Vec::new();
            for t in 0..TASKS {
                let (s, ids, barrier) = (store.clone(), ids.clone(), barrier.clone());
                tasks.push(tokio::spawn(async move {
                    barrier.wait().await;
                    let mut won = Vec::new();
                    for k in 0..ids.len() {
                        let id = ids[(k + t) % ids.len()];
                        let now = Utc::now();
                        if s.claim(id, now, now - ChronoDuration::seconds(1))
                            .await
                            .unwrap()
                            .is_some()
                        {
                            won.push(id);
                        }
                    }
                    won
                }));
            }
            let mut wins: BTreeMap<LedgerId, usize> = BTreeMap::new();
            for t in tasks {
                for id in t.await.unwrap() {
                    *wins.entry(id).or_default() += 1;
                }
            }
            wins
        };
        let sweep_race = |store: Arc<PostgresStore>, max_attempts: u32| async move {
            let barrier = Arc::new(Barrier::new(TASKS));
            let mut tasks = Vec::new();
            for _ in 0..TASKS {
                let (s, barrier) = (store.clone(), barrier.clone());
                tasks.push(tokio::spawn(async move {
                    barrier.wait().await;
                    s.sweep(
                        Utc::now(),
                        Utc::now() - ChronoDuration::hours(1),
                        max_attempts,
                    )
                    .await
                    .unwrap()
                }));
            }
            let (mut requeued, mut abandoned) = (BTreeMap::new(), BTreeMap::new());
            for t in tasks {
                let o = t.await.unwrap();
                for l in o.requeued {
                    *requeued.entry(l.id).or_insert(0usize) += 1;
                }
                for l in o.abandoned {
                    *abandoned.entry(l.id).or_insert(0usize) += 1;
                }
            }
            (requeued, abandoned)
        };
        let once_each =
            |m: &BTreeMap<LedgerId, usize>| m.len() == ids.len() && m.values().all(|&n| n == 1);

        let wins = claim_race(store.clone(), ids.clone()).await;
        assert!(once_each(&wins), "one claim winner per row: {wins:?}");
        assert!(
            pool.size() > 1,
            "the race ran on one connection only: it proves nothing"
        );
        let (requeued, abandoned) = sweep_race(store.clone(), 5).await;
        assert!(once_each(&requeued), "one reset per row: {requeued:?}");
        assert!(abandoned.is_empty(), "{abandoned:?}");

        let wins = claim_race(store.clone(), ids.clone()).await;
        assert!(once_each(&wins), "one claim winner per row: {wins:?}");
        let (requeued, abandoned) = sweep_race(store.clone(), 2).await;
        assert!(requeued.is_empty(), "{requeued:?}");
        assert!(once_each(&abandoned), "one abandon per row: {abandoned:?}");

        for id in &ids {
            let l = store.get_ledger(*id).await.unwrap().unwrap();
            assert_eq!((l.status, l.attempt_count), (Status::Rejected, 2));
            let steps: Vec<Status> = store
                .list_events(*id)
                .await
                .unwrap()
                .iter()
                .filter_map(|e| e.status)
                .collect();
            assert_eq!(
                steps,
                [
                    Status::Pending,
                    Status::Processing,
                    Status::Pending,
                    Status::Processing,
                    Status::Rejected
                ],
                "the timeline shows each change once"
            );
        }
        drop(store);
        pool.close().await;
        drop(schema);
    }
}
