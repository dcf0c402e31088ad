//! The job store written once in SQL, for both engines: [`SqlStore`] holds every statement,
//! a [`Dialect`] only what truly differs between SQLite and PostgreSQL (how an update hands
//! back the rows it changed, row locks, unique-violation detection, a few expressions, the
//! migrations). Both engines take `$n` placeholders and store ids, counters and millisecond
//! times as 64-bit integers, so one statement and one [`Arg`] list serve both.
//!
//! The status guards of conditional updates come from the domain's transition table
//! ([`transition`]); this module never decides which status change is legal.

mod batches;
mod grants;
mod group;
mod jobs;
mod keys;
mod ledgers;
#[cfg(test)]
pub(crate) use batches::members_sql;
#[cfg(test)]
pub(crate) use ledgers::{MERGED_MERCHANTS, list_sql, replay_sql, replay_start_sql};
mod schedules;
#[cfg(any(test, feature = "fixtures"))]
pub mod seed;
mod transition;
pub(super) mod webhooks;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use sqlx::error::BoxDynError;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Arguments, Database, Encode, FromRow, Pool, Type};

use std::path::Path;

use super::inline::{Inline, InlineReads, one_row};
use super::rows::LedgerRow;
use super::{
    CompletedFile, Expected, IdempotencyRecord, InsertOutcome, JobStore, ListQuery, NewLedger,
    PhaseRecord, StoreError, StoredFile, SweepOutcome, UserChange,
};
use crate::domain::{
    EventType, FailureReason, Grant, Ledger, LedgerId, MerchantId, PolicyRevision, Stage,
    StatusEvent, TimelineItem, Timezone,
};

pub(super) use transition::transition;

/// A bind value: the column types both schemas share.
#[derive(Debug, Clone)]
pub enum Arg {
    /// BIGINT / INTEGER.
    Int(i64),
    /// TEXT.
    Text(String),
    /// Nullable TEXT.
    OptText(Option<String>),
    /// Nullable BIGINT / INTEGER.
    OptInt(Option<i64>),
    /// BOOLEAN (an INTEGER 0/1 in SQLite).
    Bool(bool),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}

impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(v.to_owned())
    }
}

impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(v)
    }
}

impl From<bool> for Arg {
    fn from(v: bool) -> Self {
        Arg::Bool(v)
    }
}

impl From<DateTime<Utc>> for Arg {
    fn from(t: DateTime<Utc>) -> Self {
        Arg::Int(t.timestamp_millis())
    }
}

/// The bind values of one statement, `$1` first.
pub type Args = Vec<Arg>;

/// Builds an [`Args`] from values convertible into [`Arg`].
macro_rules! args {
    ($($v:expr),* $(,)?) => { vec![$($crate::store::sql::Arg::from($v)),*] };
}
pub(crate) use args;

/// A row type both engines decode (the structs of `store::rows` and plain tuples).
pub trait Decoded:
    for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin + 'static
{
}

impl<T> Decoded for T where
    T: for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin + 'static
{
}

/// How an `UPDATE` of ledgers hands back the rows it changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changed {
    /// In the same statement: a data-modifying CTE `UPDATE … RETURNING` joined with the
    /// files; bulk updates first lock their rows in id order with `SELECT … FOR UPDATE`, so
    /// concurrent sweepers queue up instead of deadlocking (PostgreSQL).
    Returning,
    /// `UPDATE … RETURNING id`, then a re-read of each row (SQLite: no `UPDATE` inside a
    /// CTE, and its single write lock already serialises writers).
    ReRead,
}

/// Which uniqueness rule of `ledgers` an insert broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// The primary key: a Snowflake id collision.
    Id,
    /// The identity of a live ledger (merchant, type, period, zone, format).
    Identity,
}

/// A connection of engine `D`, pooled or inside a transaction.
pub type Conn<D> = <<D as Dialect>::Db as Database>::Connection;

/// What differs between the SQL engines.
#[async_trait]
pub trait Dialect: Send + Sync + 'static {
    /// The sqlx driver.
    type Db: Driver;
    /// How updates return the changed ledgers.
    const CHANGED: Changed;
    /// Whether new ledgers are committed in groups ([`group`]): where every commit is a
    /// write lock and an `fsync` of its own.
    const GROUP_COMMIT: bool;
    /// Whether the engine has one write lock for the whole database (SQLite): this process's
    /// writers then queue for it in [`SqlStore::write_gate`] instead of in the engine, whose
    /// busy handler polls with sleeps of 1 to 100 ms.
    const ONE_WRITER: bool;
    /// One boolean column: is the `_sqlx_migrations` table there (in the search path)?
    const MIGRATIONS_TABLE_EXISTS: &'static str;
    /// Takes the policy row's write lock for the rest of the transaction and returns the
    /// revision, so grant changes (and the digest each records) are serialised: two
    /// concurrent changes would otherwise each hash a grant set without the other's change.
    const LOCK_POLICY: &'static str;
    /// An expression giving a fresh random non-negative revision.
    const RANDOM_REVISION: &'static str;
    /// Appended to a `SELECT` of rows to update later in the transaction: takes their row
    /// locks now (PostgreSQL `FOR NO KEY UPDATE`, which inserts referencing them do not
    /// wait for); empty where the engine has one write lock (SQLite).
    const LOCK_ROWS: &'static str;
    /// Appended to a `SELECT` of rows to claim: locks them, skipping rows another
    /// transaction holds (PostgreSQL), so claimers never wait for each other; empty on
    /// SQLite.
    const SKIP_LOCKED: &'static str;
    /// Put before a column in a condition the planner must not answer from an index
    /// (SQLite's unary `+`): a list reads newest first through the index of its filters,
    /// not through a partial index whose condition happens to match. Empty where the
    /// planner weighs indexes by statistics (PostgreSQL).
    const UNINDEXED: &'static str;
    /// Appended to a `SELECT` of a row whose change must wait for this transaction (and
    /// which this transaction must read as changed, if it was): PostgreSQL `FOR SHARE`;
    /// empty on SQLite, whose one write lock already orders the two.
    const SHARE_ROW: &'static str;

    /// This engine's migrations (`migrations/<engine>`).
    fn migrator() -> &'static Migrator;
    /// A subquery listing the texts of the JSON array bound at `param` (a list of any size
    /// is one parameter).
    fn json_texts(param: &str) -> String;
    /// A `FROM` item with one row (`s.merchant_id`) per text of the JSON array parameter
    /// `param`, to join `LATERAL`; `None` where the engine has no `LATERAL` (SQLite).
    fn merchant_rows(param: &str) -> Option<String>;
    /// The uniqueness rule of `ledgers` that `e` broke, if it is a unique violation.
    fn taken(e: &sqlx::Error) -> Option<Taken>;
}

/// An engine whose arguments take every [`Arg`] (both sqlx drivers do).
pub trait BindArgs: Database {
    /// The driver's arguments holding `args` in order.
    fn arguments<'q>(args: Args) -> Result<Self::Arguments<'q>, BoxDynError>;
}

impl<DB: Database> BindArgs for DB
where
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
{
    fn arguments<'q>(args: Args) -> Result<Self::Arguments<'q>, BoxDynError> {
        let mut out = <Self::Arguments<'q>>::default();
        for arg in args {
            match arg {
                Arg::Int(v) => out.add(v)?,
                Arg::Text(v) => out.add(v)?,
                Arg::OptText(v) => out.add(v)?,
                Arg::OptInt(v) => out.add(v)?,
                Arg::Bool(v) => out.add(v)?,
            }
        }
        Ok(out)
    }
}

/// The two statement primitives on one connection of an sqlx driver. Implemented for both
/// drivers by [`driver!`], where the types are concrete, so [`SqlStore`] needs no sqlx bounds.
pub trait Driver: Database {
    /// Runs `sql`; returns the number of rows affected.
    fn execute<'a>(
        conn: &'a mut Self::Connection,
        sql: &'a str,
        args: Args,
    ) -> BoxFuture<'a, Result<u64, sqlx::Error>>;
    /// Runs `sql` and decodes every row; the statement stays prepared on the connection
    /// when `keep` is set.
    fn fetch_rows<'a, T: Decoded>(
        conn: &'a mut Self::Connection,
        sql: &'a str,
        args: Args,
        keep: bool,
    ) -> BoxFuture<'a, Result<Vec<T>, sqlx::Error>>;
    /// Runs `sql` and decodes every row.
    fn fetch_all<'a, T: Decoded>(
        conn: &'a mut Self::Connection,
        sql: &'a str,
        args: Args,
    ) -> BoxFuture<'a, Result<Vec<T>, sqlx::Error>> {
        Self::fetch_rows(conn, sql, args, true)
    }
    /// [`Self::fetch_all`] of a statement that is not kept prepared: one whose text varies
    /// from call to call (a multi-row insert), which would only push the statements that
    /// recur out of the connection's cache.
    fn fetch_all_once<'a, T: Decoded>(
        conn: &'a mut Self::Connection,
        sql: &'a str,
        args: Args,
    ) -> BoxFuture<'a, Result<Vec<T>, sqlx::Error>> {
        Self::fetch_rows(conn, sql, args, false)
    }
    /// Applies the migrations of `migrator` not applied on `pool` yet.
    fn migrate<'a>(
        pool: &'a Pool<Self>,
        migrator: &'static Migrator,
    ) -> BoxFuture<'a, Result<(), MigrateError>>;
}

/// Implements [`Driver`] for the sqlx driver `$db`.
macro_rules! driver {
    ($db:ty) => {
        impl Driver for $db {
            fn execute<'a>(
                conn: &'a mut Self::Connection,
                sql: &'a str,
                args: Args,
            ) -> BoxFuture<'a, Result<u64, sqlx::Error>> {
                Box::pin(async move {
                    let arguments = Self::arguments(args).map_err(sqlx::Error::Encode)?;
                    let done = sqlx::query_with(sql, arguments).execute(conn).await?;
                    Ok(done.rows_affected())
                })
            }

            fn fetch_rows<'a, T: Decoded>(
                conn: &'a mut Self::Connection,
                sql: &'a str,
                args: Args,
                keep: bool,
            ) -> BoxFuture<'a, Result<Vec<T>, sqlx::Error>> {
                Box::pin(async move {
                    let arguments = Self::arguments(args).map_err(sqlx::Error::Encode)?;
                    sqlx::query_as_with(sql, arguments)
                        .persistent(keep)
                        .fetch_all(conn)
                        .await
                })
            }

            fn migrate<'a>(
                pool: &'a Pool<Self>,
                migrator: &'static Migrator,
            ) -> BoxFuture<'a, Result<(), MigrateError>> {
                Box::pin(migrator.run(pool))
            }
        }
    };
}

driver!(sqlx::Postgres);
driver!(sqlx::Sqlite);

/// The job store on an SQL engine. `PostgresStore` and `SqliteStore` are its two instances.
pub struct SqlStore<D: Dialect> {
    pub(super) pool: Pool<D::Db>,
    /// Connections whose commits do not wait for the disk, for the records a power loss
    /// may take without harm ([`SqlStore::relaxed`]); `None`: the main pool's.
    relaxed: Option<Pool<D::Db>>,
    /// The writer of new ledgers, where the engine groups them ([`Dialect::GROUP_COMMIT`]).
    group: Option<group::GroupCommit>,
    /// Point reads on the caller's thread (an SQLite file: [`crate::store::inline`]).
    inline: Option<InlineReads>,
    /// This process's writers, one at a time, where the engine has one write lock
    /// ([`Dialect::ONE_WRITER`]).
    gate: Option<WriteGate>,
}

/// The queue of this process's writers for an engine with one write lock. SQLite answers a
/// writer that finds the lock taken with `SQLITE_BUSY`, and its busy handler retries after
/// sleeps of 1, 2, 5, 10 … ms: measured on `ledger-bench small`, about three such sleeps
/// a ledger, which bounded the embedded rate while the cores were half idle. Waiting here
/// instead hands the lock over as soon as the writer before lets it go, in arrival order.
/// Other processes on the same file (a `ledger` command) still meet the busy handler.
pub(super) type WriteGate = std::sync::Arc<tokio::sync::Mutex<()>>;

impl<D: Dialect> SqlStore<D> {
    /// A store over `pool` (on a Tokio runtime: it may start the group-commit writer).
    pub(super) fn new(pool: Pool<D::Db>) -> Self {
        let gate = D::ONE_WRITER.then(WriteGate::default);
        let group =
            D::GROUP_COMMIT.then(|| group::GroupCommit::start::<D>(pool.clone(), gate.clone()));
        Self {
            pool,
            relaxed: None,
            group,
            inline: None,
            gate,
        }
    }

    /// Waits for this process's turn to write, where the engine has one write lock; hold
    /// the guard until the write is committed (declare it before the transaction, so the
    /// transaction is dropped first).
    pub(super) async fn write_gate(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        match &self.gate {
            Some(gate) => Some(gate.clone().lock_owned().await),
            None => None,
        }
    }

    /// Commits claims, lease renewals and phase records through `relaxed`, whose commits
    /// do not wait for the disk (SQLite `synchronous = NORMAL`, PostgreSQL
    /// `synchronous_commit = off`).
    pub(super) fn with_relaxed_commits(mut self, relaxed: Pool<D::Db>) -> Self {
        self.relaxed = Some(relaxed);
        self
    }

    /// Where the records go whose loss in a power failure recovery already handles: a
    /// claim (the job reads PENDING again and the sweep re-enqueues it), a lease renewal
    /// (the lease ends sooner), a phase record (the timeline of an attempt that died with
    /// the machine lacks it). Both engines write one log in commit order, so the job's next
    /// durable commit (its completion or failure) takes every earlier relaxed record to
    /// disk with it: a COMPLETED never survives without its claim and phases. Saves a
    /// job all but one of its fsyncs.
    pub(super) fn relaxed(&self) -> &Pool<D::Db> {
        self.relaxed.as_ref().unwrap_or(&self.pool)
    }

    /// Makes point reads of the database file at `path` on the caller's thread.
    pub(super) fn with_inline_reads(mut self, path: &Path) -> Self {
        self.inline = Some(InlineReads::new(path));
        self
    }

    /// A pooled connection, for statements outside a transaction.
    async fn conn(&self) -> Result<sqlx::pool::PoolConnection<D::Db>, StoreError> {
        Ok(self.pool.acquire().await?)
    }

    /// Runs the write `sql` on a pooled connection; rows affected.
    async fn execute(&self, sql: &str, args: Args) -> Result<u64, StoreError> {
        let _gate = self.write_gate().await;
        Ok(D::Db::execute(&mut *self.conn().await?, sql, args).await?)
    }

    /// [`Self::execute`] on a [`Self::relaxed`] connection.
    async fn execute_relaxed(&self, sql: &str, args: Args) -> Result<u64, StoreError> {
        let _gate = self.write_gate().await;
        Ok(D::Db::execute(&mut *self.relaxed().acquire().await?, sql, args).await?)
    }

    /// Runs `sql` on a pooled connection and decodes every row.
    async fn fetch_all<T: Decoded>(&self, sql: &str, args: Args) -> Result<Vec<T>, StoreError> {
        Ok(D::Db::fetch_all(&mut *self.conn().await?, sql, args).await?)
    }

    /// The first row of `sql`, if any.
    async fn fetch_optional<T: Decoded>(
        &self,
        sql: &str,
        args: Args,
    ) -> Result<Option<T>, StoreError> {
        Ok(self.fetch_all(sql, args).await?.into_iter().next())
    }

    /// The one row of `sql`; none is a corrupt database (a row the migrations create).
    async fn fetch_one<T: Decoded>(&self, sql: &str, args: Args) -> Result<T, StoreError> {
        self.fetch_optional(sql, args)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("no row for {sql:?}")))
    }
}

pub(super) const LEDGER_COLUMNS: &str = "l.id, l.merchant_id, l.type, l.period, l.requested_timezone, \
    l.timezone, l.format, l.stage, l.status, l.version, l.attempt_count, l.lease_until, \
    l.failure_code, l.failure_message, l.failure_retryable, l.failure_at, l.created_by, \
    l.created_at, l.updated_at, l.started_at, l.completed_at, l.deleted_at, \
    f.version AS f_version, f.content_type AS f_content_type, f.size_bytes AS f_size_bytes, \
    f.sha256 AS f_sha256, f.file_name AS f_file_name, f.shredded_at AS f_shredded_at";

/// `SELECT` of full ledgers from `source` (the table, or a CTE of changed rows) with the
/// newest completed file joined in; `l` is the ledger row.
fn select_ledgers(source: &str) -> String {
    format!(
        "SELECT {LEDGER_COLUMNS} FROM {source} l LEFT JOIN ledger_files f \
         ON f.ledger_id = l.id \
         AND f.version = (SELECT MAX(version) FROM ledger_files WHERE ledger_id = l.id)"
    )
}

/// The read of one ledger by id (`$1`), written once: every `GET /ledgers/:id` runs it.
pub(super) static LEDGER_BY_ID: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("{} WHERE l.id = $1", select_ledgers("ledgers")));

/// One ledger read on `conn`.
async fn fetch_ledger<D: Dialect>(
    conn: &mut Conn<D>,
    id: i64,
) -> Result<Option<Ledger>, StoreError> {
    let rows: Vec<LedgerRow> = D::Db::fetch_all(conn, &LEDGER_BY_ID, args![id]).await?;
    rows.into_iter().next().map(Ledger::try_from).transpose()
}

/// Records `announce`'s event (at its time), if any, for each of `ledgers` on `conn`.
async fn announce_each<D: Dialect>(
    conn: &mut Conn<D>,
    announce: Option<(EventType, DateTime<Utc>)>,
    ledgers: &[Ledger],
) -> Result<(), StoreError> {
    if let Some((event, at)) = announce {
        for l in ledgers {
            webhooks::announce::<D>(conn, event, webhooks::Subject::Ledger(l), at).await?;
        }
    }
    Ok(())
}

/// The PostgreSQL form of a conditional update that returns the full ledgers it changed
/// ([`Changed::Returning`]).
fn returning_update(set: &str, filter: &str, bulk: bool) -> String {
    let update = if bulk {
        format!(
            "WITH due AS (SELECT id FROM ledgers WHERE {filter} ORDER BY id \
             FOR UPDATE), changed AS (UPDATE ledgers SET {set} FROM due \
             WHERE ledgers.id = due.id RETURNING ledgers.*)"
        )
    } else {
        format!(
            "WITH changed AS (UPDATE ledgers SET {set} WHERE {filter} \
             RETURNING ledgers.*)"
        )
    };
    format!("{update} {} ORDER BY l.id", select_ledgers("changed"))
}

impl<D: Dialect> SqlStore<D> {
    /// Applies `UPDATE ledgers SET {set} WHERE {filter}` as one conditional statement and
    /// returns the ledgers it changed, as it wrote them. `bulk` updates (the sweep) may touch
    /// many rows, so where the engine locks rows they are locked in id order first; a
    /// waiter re-checks `filter` on the newest row version and skips rows another writer
    /// already changed, so concurrent sweepers never both win a row.
    async fn update_ledgers(
        &self,
        on: &Pool<D::Db>,
        set: &str,
        filter: &str,
        args: Args,
        bulk: bool,
    ) -> Result<Vec<Ledger>, StoreError> {
        self.update_announcing(on, set, filter, args, bulk, None)
            .await
    }

    /// [`Self::update_ledgers`], recording `announce`'s event (at its time) for each ledger
    /// changed, in the same transaction (the webhook outbox).
    async fn update_announcing(
        &self,
        on: &Pool<D::Db>,
        set: &str,
        filter: &str,
        args: Args,
        bulk: bool,
        announce: Option<(EventType, DateTime<Utc>)>,
    ) -> Result<Vec<Ledger>, StoreError> {
        let _gate = self.write_gate().await;
        match D::CHANGED {
            Changed::Returning if announce.is_some() => {
                let mut tx = on.begin().await?;
                let sql = returning_update(set, filter, bulk);
                let rows: Vec<LedgerRow> = D::Db::fetch_all(&mut *tx, &sql, args).await?;
                let changed = rows
                    .into_iter()
                    .map(Ledger::try_from)
                    .collect::<Result<Vec<_>, _>>()?;
                announce_each::<D>(&mut tx, announce, &changed).await?;
                tx.commit().await?;
                Ok(changed)
            }
            Changed::Returning => {
                let mut conn = on.acquire().await?;
                let sql = returning_update(set, filter, bulk);
                let rows: Vec<LedgerRow> = D::Db::fetch_all(&mut *conn, &sql, args).await?;
                rows.into_iter().map(Ledger::try_from).collect()
            }
            Changed::ReRead => {
                // One transaction: the UPDATE takes SQLite's write lock and keeps it until
                // the commit, so the re-read sees the rows as this statement wrote them, not
                // as a later writer (a worker's next claim, say) changed them meanwhile.
                let mut tx = on.begin().await?;
                let sql = format!("UPDATE ledgers SET {set} WHERE {filter} RETURNING id");
                let mut ids: Vec<(i64,)> = D::Db::fetch_all(&mut *tx, &sql, args).await?;
                ids.sort_unstable();
                let mut out = Vec::with_capacity(ids.len());
                for (id,) in ids {
                    if let Some(l) = fetch_ledger::<D>(&mut *tx, id).await? {
                        out.push(l);
                    }
                }
                announce_each::<D>(&mut tx, announce, &out).await?;
                tx.commit().await?;
                Ok(out)
            }
        }
    }

    /// [`Self::update_announcing`] of one row (its `filter` names the id).
    async fn update_one_announcing(
        &self,
        set: &str,
        filter: &str,
        args: Args,
        announce: (EventType, DateTime<Utc>),
    ) -> Result<Option<Ledger>, StoreError> {
        Ok(self
            .update_announcing(&self.pool, set, filter, args, false, Some(announce))
            .await?
            .into_iter()
            .next())
    }

    /// [`Self::update_ledgers`] of one row (its `filter` names the id).
    async fn update_one(
        &self,
        set: &str,
        filter: &str,
        args: Args,
    ) -> Result<Option<Ledger>, StoreError> {
        Ok(self
            .update_ledgers(&self.pool, set, filter, args, false)
            .await?
            .into_iter()
            .next())
    }
}

/// Every method is one statement (or one transaction) of [`ledgers`], [`jobs`] or
/// [`grants`]; this impl only routes the port to them.
#[async_trait]
impl<D: Dialect> JobStore for SqlStore<D> {
    async fn migrate(&self) -> Result<(), StoreError> {
        D::Db::migrate(&self.pool, D::migrator()).await?;
        Ok(())
    }

    async fn pending_migrations(&self) -> Result<Vec<String>, StoreError> {
        self.pending_migration_names().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // A read: it does not queue behind this process's writers.
        let _: Vec<(i64,)> = self.fetch_all("SELECT CAST(1 AS BIGINT)", args![]).await?;
        Ok(())
    }

    async fn insert_ledger(
        &self,
        new: &NewLedger,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<InsertOutcome, StoreError> {
        self.insert(new, idempotency).await
    }

    async fn update_idempotency(
        &self,
        subject: &str,
        key: &str,
        status_code: u16,
        body: &str,
    ) -> Result<(), StoreError> {
        self.set_idempotency_response(subject, key, status_code, body)
            .await
    }

    async fn get_ledger(&self, id: LedgerId) -> Result<Option<Ledger>, StoreError> {
        if let Some(inline) = &self.inline {
            let read = inline
                .read(|conn| one_row(conn, &LEDGER_BY_ID, id.as_i64(), LedgerRow::from_sqlite));
            match read {
                Ok(row) => return row.map(Ledger::try_from).transpose(),
                Err(Inline::Failed(e)) => return Err(e),
                // SQLite would have waited: through the pool, which may.
                Err(Inline::Busy) => {}
            }
        }
        fetch_ledger::<D>(&mut *self.conn().await?, id.as_i64()).await
    }

    async fn list_ledgers(&self, query: &ListQuery) -> Result<Vec<Ledger>, StoreError> {
        self.list(query).await
    }

    async fn list_events(&self, id: LedgerId) -> Result<Vec<TimelineItem>, StoreError> {
        self.timeline(id).await
    }

    async fn status_events_since(
        &self,
        merchants: Option<&[MerchantId]>,
        since: DateTime<Utc>,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, StatusEvent)>, StoreError> {
        self.status_events(merchants, since, after, limit).await
    }

    async fn get_file(&self, id: LedgerId, version: u32) -> Result<Option<StoredFile>, StoreError> {
        self.file(id, version).await
    }

    async fn purge_idempotency_keys(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let ledgers = self
            .execute(
                "DELETE FROM idempotency_keys WHERE created_at <= $1",
                args![before],
            )
            .await?;
        let batches = self
            .execute(
                "DELETE FROM batch_idempotency_keys WHERE created_at <= $1",
                args![before],
            )
            .await?;
        Ok(ledgers + batches)
    }

    async fn user_change(
        &self,
        id: LedgerId,
        expected: Expected,
        change: UserChange,
        now: DateTime<Utc>,
    ) -> Result<Option<Ledger>, StoreError> {
        self.change_by_user(id, expected, change, now).await
    }

    async fn reject_pending(
        &self,
        id: LedgerId,
        reason: &FailureReason,
    ) -> Result<Option<Ledger>, StoreError> {
        self.reject_unqueued(id, reason).await
    }

    async fn claim(
        &self,
        id: LedgerId,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<Ledger>, StoreError> {
        self.claim_job(id, now, lease_until).await
    }

    async fn renew_lease(
        &self,
        id: LedgerId,
        attempt: u32,
        lease_until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.extend_lease(id, attempt, lease_until).await
    }

    async fn record_phases(
        &self,
        id: LedgerId,
        attempt: u32,
        phases: &[PhaseRecord],
    ) -> Result<bool, StoreError> {
        self.phases(id, attempt, phases).await
    }

    async fn complete(
        &self,
        id: LedgerId,
        attempt: u32,
        file: &CompletedFile,
        stage: Stage,
        timezone: Timezone,
        now: DateTime<Utc>,
        phases: &[PhaseRecord],
    ) -> Result<Option<Ledger>, StoreError> {
        self.complete_job(id, attempt, file, stage, timezone, now, phases)
            .await
    }

    async fn fail(
        &self,
        id: LedgerId,
        attempt: u32,
        reason: &FailureReason,
    ) -> Result<Option<Ledger>, StoreError> {
        self.fail_job(id, attempt, reason).await
    }

    async fn release(
        &self,
        id: LedgerId,
        attempt: u32,
        now: DateTime<Utc>,
    ) -> Result<Option<Ledger>, StoreError> {
        self.release_job(id, attempt, now).await
    }

    async fn pending_ids(&self, limit: u32) -> Result<Vec<LedgerId>, StoreError> {
        self.claimable(limit).await
    }

    async fn sweep(
        &self,
        now: DateTime<Utc>,
        pending_before: DateTime<Utc>,
        max_attempts: u32,
    ) -> Result<SweepOutcome, StoreError> {
        self.sweep_jobs(now, pending_before, max_attempts).await
    }

    async fn lease_node_id(
        &self,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<u16>, StoreError> {
        self.take_node_id(holder, now, until).await
    }

    async fn renew_node_id(
        &self,
        node_id: u16,
        holder: &str,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let renewed = self
            .execute(
                "UPDATE node_leases SET expires_at = $1 WHERE node_id = $2 AND holder = $3",
                args![until, i64::from(node_id), holder],
            )
            .await?;
        Ok(renewed == 1)
    }

    async fn release_node_id(&self, node_id: u16, holder: &str) -> Result<(), StoreError> {
        self.execute(
            "DELETE FROM node_leases WHERE node_id = $1 AND holder = $2",
            args![i64::from(node_id), holder],
        )
        .await?;
        Ok(())
    }

    async fn list_grants(&self) -> Result<Vec<Grant>, StoreError> {
        self.grants().await
    }

    async fn add_grant(&self, grant: &Grant) -> Result<bool, StoreError> {
        self.change_grant(grant, grants::GrantChange::Add).await
    }

    async fn remove_grant(&self, grant: &Grant) -> Result<bool, StoreError> {
        self.change_grant(grant, grants::GrantChange::Remove).await
    }

    async fn policy_revision(&self) -> Result<PolicyRevision, StoreError> {
        self.revision().await
    }
}
