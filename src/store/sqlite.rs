//! The embedded job store: one SQLite file in WAL mode. The statements are [`SqlStore`]'s;
//! this file holds the connection set-up and the [`Dialect`]. Every status change is a
//! single conditional `UPDATE … RETURNING` (or a transaction that starts with a write), so
//! the write lock is taken first and concurrent workers and sweepers never act on a stale
//! read.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Sqlite;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::StoreError;
use super::sql::{Changed, Dialect, SqlStore, Taken};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// What SQLite does its own way.
pub struct SqliteDialect;

/// The SQLite adapter.
pub type SqliteStore = SqlStore<SqliteDialect>;

impl SqlStore<SqliteDialect> {
    /// Opens (creating when missing) the database file at `path`.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Corrupt(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await?;
        // Claims, lease renewals and phase records: committed to the WAL without an fsync,
        // which the job's durable completion then covers (SqlStore::relaxed).
        let relaxed = SqlitePoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.synchronous(SqliteSynchronous::Normal))
            .await?;
        Ok(Self::new(pool)
            .with_relaxed_commits(relaxed)
            .with_inline_reads(path))
    }

    /// An in-memory database (tests): one connection, so every query sees the same data.
    pub async fn in_memory() -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        Ok(Self::new(pool))
    }
}

/// A unique violation names the first column of the index it broke.
fn is_unique_violation(e: &sqlx::Error, index_hint: &str) -> bool {
    match e {
        sqlx::Error::Database(db) => db.is_unique_violation() && db.message().contains(index_hint),
        _ => false,
    }
}

#[async_trait]
impl Dialect for SqliteDialect {
    type Db = Sqlite;
    const CHANGED: Changed = Changed::ReRead;
    const GROUP_COMMIT: bool = true;
    const ONE_WRITER: bool = true;
    const MIGRATIONS_TABLE_EXISTS: &'static str = "SELECT EXISTS (SELECT 1 FROM sqlite_master \
        WHERE type = 'table' AND name = '_sqlx_migrations')";
    // A write first: the transaction takes SQLite's single write lock before it reads.
    const LOCK_POLICY: &'static str =
        "UPDATE policy_revision SET revision = revision WHERE id = 1 RETURNING revision";
    const RANDOM_REVISION: &'static str = "abs(random())";
    const LOCK_ROWS: &'static str = "";
    const SKIP_LOCKED: &'static str = "";
    const UNINDEXED: &'static str = "+";
    const SHARE_ROW: &'static str = "";

    fn migrator() -> &'static Migrator {
        &MIGRATOR
    }

    fn json_texts(param: &str) -> String {
        format!("SELECT value FROM json_each({param})")
    }

    fn merchant_rows(_param: &str) -> Option<String> {
        None
    }

    fn taken(e: &sqlx::Error) -> Option<Taken> {
        if is_unique_violation(e, "ledgers.id") {
            Some(Taken::Id)
        } else if is_unique_violation(e, "ledgers.merchant_id") {
            Some(Taken::Identity)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::JobStore;

    /// Every shape of `GET /ledgers` reads newest first through an index made for it (or
    /// the primary key, when nothing indexed narrows it) and pages exactly as a plain query
    /// would; so does every page of a batch's members; timelines and every replay scope read the event log through its indexes and
    /// replay what a plain query gives: checked on the plans SQLite chooses over seeded
    /// ledgers and their timelines.
    #[tokio::test]
    async fn every_list_and_event_read_goes_through_its_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("ledger.db"))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        crate::store::sql::seed::plans::check_reads(&store, 20_000).await;
    }

    /// Migrations 0011 and 0012 fill in what a store that lived under 0010 holds.
    #[tokio::test]
    async fn an_older_store_gains_the_event_merchants_and_member_buckets() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("ledger.db"))
            .await
            .unwrap();
        let before = sqlx::migrate::Migrator {
            migrations: std::borrow::Cow::Owned(MIGRATOR.migrations[..10].to_vec()),
            ..sqlx::migrate::Migrator::DEFAULT
        };
        before.run(&store.pool).await.unwrap();
        crate::store::sql::seed::plans::check_upgrade(&store).await;
    }

    #[tokio::test]
    async fn the_sqlite_store_meets_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("ledger.db"))
            .await
            .unwrap();
        assert_eq!(store.pending_migrations().await.unwrap().len(), 14);
        store.migrate().await.unwrap();
        store.migrate().await.unwrap();
        super::super::contract::keys::run(&store).await;
        super::super::contract::run_all(Arc::new(store)).await;
    }

    /// Claims, lease renewals and phase records are committed without an fsync of their
    /// own; every other write (creates, completions, failures) waits for the disk.
    #[tokio::test]
    async fn only_the_records_recovery_covers_are_committed_without_an_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("ledger.db"))
            .await
            .unwrap();
        let synchronous = |pool: &sqlx::SqlitePool| {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>("PRAGMA synchronous")
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            }
        };
        // 2 = FULL (the WAL is synced at every commit), 1 = NORMAL (at checkpoints only).
        assert_eq!(synchronous(&store.pool).await, 2);
        assert_eq!(synchronous(store.relaxed()).await, 1);
        // An in-memory database has no disk to wait for, nor a second connection to it.
        let memory = SqliteStore::in_memory().await.unwrap();
        assert!(std::ptr::eq(memory.relaxed(), &memory.pool));
    }

    #[tokio::test]
    async fn the_in_memory_store_meets_the_contract() {
        let store = SqliteStore::in_memory().await.unwrap();
        store.migrate().await.unwrap();
        super::super::contract::run_all(Arc::new(store)).await;
    }
}
