//! The production job store: PostgreSQL through a connection pool. The twin of the SQLite
//! adapter (same schema, same millisecond integers): every status change is one conditional
//! `UPDATE … RETURNING`, which under READ COMMITTED re-checks its `WHERE` on the newest row
//! version after waiting for a concurrent writer, so two workers or sweepers never both win.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgExecutor, Postgres};

use super::rows::{EventRow, FileRow, IdempotencyRow, LedgerRow};
use super::{
    CompletedFile, Expected, IdempotencyRecord, InsertOutcome, JobStore, ListQuery, NewLedger,
    StoreError, StoredFile, SweepOutcome, UserChange,
};
use crate::domain::{
    FailureReason, Grant, Ledger, LedgerId, PolicyRevision, Stage, TimelineItem, Timezone,
    grant_digest,
};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// Enough for the api's request concurrency plus a worker's jobs; PostgreSQL's default of
/// 100 server connections still leaves room for several replicas.
const MAX_CONNECTIONS: u32 = 10;
/// A request waits this long for a free connection before it fails instead of hanging.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle connections are closed so a quiet replica does not pin server slots.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Connections are recycled so server-side memory and a failover are picked up.
const MAX_LIFETIME: Duration = Duration::from_secs(1800);

/// Constraint names from the migration; a unique violation is told apart by them.
const LEDGERS_PKEY: &str = "ledgers_pkey";
const LEDGERS_IDENTITY_KEY: &str = "ledgers_identity_key";

/// The PostgreSQL adapter.
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects a pool to the database at `url` (objects in the server's default
    /// `search_path`). Errors never carry the URL: it may hold a password.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = connect_options(url)?;
        Ok(Self {
            pool: pool_options().connect_with(options).await?,
        })
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
        let set_path = format!("SET search_path TO {quoted}");
        let pool = pool_options()
            .after_connect(move |conn, _meta| {
                let set_path = set_path.clone();
                Box::pin(async move {
                    conn.execute(set_path.as_str()).await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }
}

fn connect_options(url: &str) -> Result<PgConnectOptions, StoreError> {
    // The parse error names the bad component, never the URL itself.
    Ok(PgConnectOptions::from_str(url)?.application_name("ledger"))
}

fn pool_options() -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
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

const LEDGER_COLUMNS: &str = "l.id, l.merchant_id, l.type, l.period, l.requested_timezone, \
    l.timezone, l.format, l.stage, l.status, l.version, l.attempt_count, l.lease_until, \
    l.failure_code, l.failure_message, l.failure_retryable, l.failure_at, l.created_by, \
    l.created_at, l.updated_at, l.started_at, l.completed_at, l.deleted_at, \
    f.version AS f_version, f.content_type AS f_content_type, f.size_bytes AS f_size_bytes, \
    f.sha256 AS f_sha256, f.file_name AS f_file_name";

/// `SELECT` of full ledgers from `source` (the table, or a CTE of changed rows) with the
/// newest completed file joined in; `l` is the ledger row.
fn select_ledgers(source: &str) -> String {
    format!(
        "SELECT {LEDGER_COLUMNS} FROM {source} l LEFT JOIN ledger_files f \
         ON f.ledger_id = l.id \
         AND f.version = (SELECT MAX(version) FROM ledger_files WHERE ledger_id = l.id)"
    )
}

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// The constraint (or unique index) a unique violation hit, if `e` is one.
fn violated_unique(e: &sqlx::Error) -> Option<&str> {
    match e {
        sqlx::Error::Database(db) if db.is_unique_violation() => db.constraint(),
        _ => None,
    }
}

async fn fetch_ledger<'e, E: PgExecutor<'e>>(ex: E, id: i64) -> Result<Option<Ledger>, StoreError> {
    let sql = format!("{} WHERE l.id = $1", select_ledgers("ledgers"));
    let row = sqlx::query_as::<_, LedgerRow>(&sql)
        .bind(id)
        .fetch_optional(ex)
        .await?;
    row.map(Ledger::try_from).transpose()
}

/// The record of a key that has not expired at `now`.
async fn find_idempotency<'e, E: PgExecutor<'e>>(
    ex: E,
    subject: &str,
    key: &str,
    now: DateTime<Utc>,
) -> Result<Option<IdempotencyRecord>, StoreError> {
    let row = sqlx::query_as::<_, IdempotencyRow>(
        "SELECT request_hash, ledger_id, status_code, body FROM idempotency_keys \
         WHERE subject = $1 AND key = $2 AND created_at > $3",
    )
    .bind(subject)
    .bind(key)
    .bind(millis(super::idempotency_cutoff(now)))
    .fetch_optional(ex)
    .await?;
    Ok(row.map(|row| row.into_record(subject, key)))
}

/// A bind value of a dynamically built statement.
enum Bind {
    I(i64),
    T(String),
    B(bool),
    Texts(Vec<String>),
}

impl Bind {
    fn apply<'q>(
        self,
        q: sqlx::query::Query<'q, Postgres, PgArguments>,
    ) -> sqlx::query::Query<'q, Postgres, PgArguments> {
        match self {
            Bind::I(v) => q.bind(v),
            Bind::T(v) => q.bind(v),
            Bind::B(v) => q.bind(v),
            Bind::Texts(v) => q.bind(v),
        }
    }
}

impl PostgresStore {
    /// Runs `UPDATE ledgers SET <set_and_where>` and returns the changed rows as ledgers in
    /// the same statement (a data-modifying CTE), so the result is exactly what this update
    /// wrote, not a later re-read.
    async fn update_returning(
        &self,
        set_and_where: &str,
        binds: Vec<Bind>,
    ) -> Result<Vec<Ledger>, StoreError> {
        let sql = format!(
            "WITH changed AS (UPDATE ledgers SET {set_and_where} RETURNING ledgers.*) {} \
             ORDER BY l.id",
            select_ledgers("changed")
        );
        let mut q = sqlx::query(&sql);
        for b in binds {
            q = b.apply(q);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(LedgerRow::decode).collect()
    }

    async fn update_one(
        &self,
        set_and_where: &str,
        binds: Vec<Bind>,
    ) -> Result<Option<Ledger>, StoreError> {
        Ok(self
            .update_returning(set_and_where, binds)
            .await?
            .into_iter()
            .next())
    }

    /// A bulk sweep step: locks the rows matching `due_where` in id order (so concurrent
    /// sweepers queue up instead of deadlocking), then applies `set` to them. A sweeper that
    /// waited re-checks `due_where` on the newest row version and skips rows another sweeper
    /// already reset.
    async fn sweep_step(
        &self,
        set: &str,
        due_where: &str,
        binds: Vec<Bind>,
    ) -> Result<Vec<Ledger>, StoreError> {
        let sql = format!(
            "WITH due AS (SELECT id FROM ledgers WHERE {due_where} ORDER BY id FOR UPDATE), \
             changed AS (UPDATE ledgers SET {set} FROM due WHERE ledgers.id = due.id \
             RETURNING ledgers.*) {} ORDER BY l.id",
            select_ledgers("changed")
        );
        let mut q = sqlx::query(&sql);
        for b in binds {
            q = b.apply(q);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(LedgerRow::decode).collect()
    }
}

#[async_trait]
impl JobStore for PostgresStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    async fn pending_migrations(&self) -> Result<Vec<String>, StoreError> {
        // to_regclass resolves through the search_path, like the migrator's own queries.
        let (exists,): (bool,) =
            sqlx::query_as("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
                .fetch_one(&self.pool)
                .await?;
        let applied: Vec<(i64,)> = if exists {
            sqlx::query_as("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await?
        } else {
            Vec::new()
        };
        Ok(MIGRATOR
            .iter()
            .filter(|m| !applied.iter().any(|(v,)| *v == m.version))
            .map(|m| format!("{}_{}", m.version, m.description))
            .collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn insert_ledger(
        &self,
        new: &NewLedger,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<InsertOutcome, StoreError> {
        let requested = new.requested_timezone.map(|t| t.name()).unwrap_or("");
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO ledgers (id, merchant_id, type, period, requested_timezone, format, \
             stage, status, version, attempt_count, created_by, created_at, updated_at, \
             enqueued_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'PENDING', 1, 0, $8, $9, $9, $9)",
        )
        .bind(new.id.as_i64())
        .bind(new.merchant_id.as_str())
        .bind(new.ledger_type.as_str())
        .bind(new.period.to_string())
        .bind(requested)
        .bind(new.format.as_str())
        .bind(new.stage.as_str())
        .bind(&new.created_by)
        .bind(millis(new.created_at))
        .execute(&mut *tx)
        .await;
        if let Err(e) = inserted {
            // A failed statement aborts a PostgreSQL transaction: end it before reading.
            tx.rollback().await?;
            match violated_unique(&e) {
                Some(LEDGERS_PKEY) => return Ok(InsertOutcome::IdTaken),
                Some(LEDGERS_IDENTITY_KEY) => {}
                _ => return Err(e.into()),
            }
            // Replays win over "exists": the same key resent after success must replay.
            if let Some(rec) = idempotency
                && let Some(found) =
                    find_idempotency(&self.pool, &rec.subject, &rec.key, new.created_at).await?
            {
                return Ok(InsertOutcome::Replay(found));
            }
            let existing: Option<(i64,)> = sqlx::query_as(
                "SELECT id FROM ledgers WHERE merchant_id = $1 AND type = $2 AND period = $3 \
                 AND requested_timezone = $4 AND format = $5 AND deleted_at IS NULL",
            )
            .bind(new.merchant_id.as_str())
            .bind(new.ledger_type.as_str())
            .bind(new.period.to_string())
            .bind(requested)
            .bind(new.format.as_str())
            .fetch_optional(&self.pool)
            .await?;
            return match existing {
                Some((id,)) => Ok(InsertOutcome::Exists(LedgerId::from_i64(id))),
                // Deleted in between: the caller may simply try again.
                None => Ok(InsertOutcome::IdTaken),
            };
        }
        if let Some(rec) = idempotency {
            // DO NOTHING instead of an error keeps the transaction usable; a concurrent
            // insert of the same key is waited for, so the loser sees the winner's record.
            let stored = sqlx::query(
                "INSERT INTO idempotency_keys (subject, key, request_hash, ledger_id, \
                 status_code, body, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (subject, key) DO UPDATE SET request_hash = excluded.request_hash, \
                 ledger_id = excluded.ledger_id, status_code = excluded.status_code, \
                 body = excluded.body, created_at = excluded.created_at \
                 WHERE idempotency_keys.created_at <= $8",
            )
            .bind(&rec.subject)
            .bind(&rec.key)
            .bind(&rec.request_hash)
            .bind(new.id.as_i64())
            .bind(i64::from(rec.status_code))
            .bind(&rec.body)
            .bind(millis(new.created_at))
            .bind(millis(super::idempotency_cutoff(new.created_at)))
            .execute(&mut *tx)
            .await?;
            if stored.rows_affected() == 0 {
                tx.rollback().await?;
                return match find_idempotency(&self.pool, &rec.subject, &rec.key, new.created_at)
                    .await?
                {
                    Some(found) => Ok(InsertOutcome::Replay(found)),
                    None => Ok(InsertOutcome::IdTaken),
                };
            }
        }
        let created = fetch_ledger(&mut *tx, new.id.as_i64()).await?;
        tx.commit().await?;
        match created {
            Some(l) => Ok(InsertOutcome::Created(l)),
            None => Err(StoreError::Corrupt("inserted ledger vanished".into())),
        }
    }

    async fn update_idempotency(
        &self,
        subject: &str,
        key: &str,
        status_code: u16,
        body: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE idempotency_keys SET status_code = $1, body = $2 \
             WHERE subject = $3 AND key = $4",
        )
        .bind(i64::from(status_code))
        .bind(body)
        .bind(subject)
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_ledger(&self, id: LedgerId) -> Result<Option<Ledger>, StoreError> {
        fetch_ledger(&self.pool, id.as_i64()).await
    }

    async fn purge_idempotency_keys(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let r = sqlx::query("DELETE FROM idempotency_keys WHERE created_at <= $1")
            .bind(millis(before))
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    async fn list_ledgers(&self, query: &ListQuery) -> Result<Vec<Ledger>, StoreError> {
        let live = if query.include_deleted {
            "TRUE"
        } else {
            "l.deleted_at IS NULL"
        };
        let mut sql = format!("{} WHERE {live}", select_ledgers("ledgers"));
        let mut binds: Vec<Bind> = Vec::new();
        // Appends a condition whose `$` is the next parameter number.
        let mut push = |sql: &mut String, cond: &str, bind: Bind| {
            binds.push(bind);
            sql.push_str(&cond.replace('$', &format!("${}", binds.len())));
        };
        if let Some(merchants) = &query.merchants {
            if merchants.is_empty() {
                return Ok(Vec::new());
            }
            let names = merchants.iter().map(|m| m.as_str().to_owned()).collect();
            push(&mut sql, " AND l.merchant_id = ANY($)", Bind::Texts(names));
        }
        if let Some(s) = query.status {
            push(
                &mut sql,
                " AND l.status = $",
                Bind::T(s.as_str().to_owned()),
            );
        }
        if let Some(t) = query.ledger_type {
            push(&mut sql, " AND l.type = $", Bind::T(t.as_str().to_owned()));
        }
        if let Some(p) = &query.period {
            push(&mut sql, " AND l.period = $", Bind::T(p.clone()));
        }
        if let Some(before) = query.before {
            push(&mut sql, " AND l.id < $", Bind::I(before.as_i64()));
        }
        push(
            &mut sql,
            " ORDER BY l.id DESC LIMIT $",
            Bind::I(i64::from(query.limit)),
        );
        let mut q = sqlx::query(&sql);
        for b in binds {
            q = b.apply(q);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(LedgerRow::decode).collect()
    }

    async fn list_events(&self, id: LedgerId) -> Result<Vec<TimelineItem>, StoreError> {
        let rows = sqlx::query_as::<_, EventRow>(
            "SELECT at, attempt, status, error_code, phase, detail FROM ledger_events \
             WHERE ledger_id = $1 ORDER BY seq",
        )
        .bind(id.as_i64())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(TimelineItem::try_from).collect()
    }

    async fn status_events_since(
        &self,
        merchants: Option<&[crate::domain::MerchantId]>,
        since: chrono::DateTime<chrono::Utc>,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, crate::domain::StatusEvent)>, StoreError> {
        // `NULL` means every merchant; a list is one array parameter whatever its size.
        let scope: Option<Vec<String>> = match merchants {
            Some([]) => return Ok(Vec::new()),
            Some(list) => Some(list.iter().map(|m| m.as_str().to_owned()).collect()),
            None => None,
        };
        let sql = format!(
            "{} WHERE e.status IS NOT NULL AND e.at > $1 AND e.seq > $2 \
             AND ($4::text[] IS NULL OR l.merchant_id = ANY($4)) \
             ORDER BY e.seq LIMIT $3",
            super::rows::STATUS_EVENT_SELECT
        );
        let rows = sqlx::query_as::<_, super::rows::StatusEventRow>(&sql)
            .bind(since.timestamp_millis())
            .bind(after)
            .bind(i64::from(limit))
            .bind(scope)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(TryFrom::try_from).collect()
    }

    async fn get_file(&self, id: LedgerId, version: u32) -> Result<Option<StoredFile>, StoreError> {
        let row = sqlx::query_as::<_, FileRow>(
            "SELECT version, content_type, size_bytes, sha256, file_name, object_key \
             FROM ledger_files WHERE ledger_id = $1 AND version = $2",
        )
        .bind(id.as_i64())
        .bind(i64::from(version))
        .fetch_optional(&self.pool)
        .await?;
        row.map(StoredFile::try_from).transpose()
    }

    async fn user_change(
        &self,
        id: LedgerId,
        expected: Expected,
        change: UserChange,
        now: DateTime<Utc>,
    ) -> Result<Option<Ledger>, StoreError> {
        let set = match change {
            // A user's action starts the stall count afresh: the sweep judges this run only.
            UserChange::Retry => {
                "status = 'PENDING', lease_until = NULL, stall_count = 0, enqueued_at = $1, \
                 updated_at = $1"
            }
            UserChange::Regenerate => {
                "status = 'PENDING', version = version + 1, lease_until = NULL, stall_count = 0, \
                 enqueued_at = $1, updated_at = $1"
            }
            UserChange::Delete => "deleted_at = $1, updated_at = $1",
        };
        let sql = format!(
            "{set} WHERE id = $2 AND status = $3 AND stage = $4 AND version = $5 \
             AND deleted_at IS NULL"
        );
        self.update_one(
            &sql,
            vec![
                Bind::I(millis(now)),
                Bind::I(id.as_i64()),
                Bind::T(expected.status.as_str().into()),
                Bind::T(expected.stage.as_str().into()),
                Bind::I(i64::from(expected.version)),
            ],
        )
        .await
    }

    async fn reject_pending(
        &self,
        id: LedgerId,
        reason: &FailureReason,
    ) -> Result<Option<Ledger>, StoreError> {
        self.update_one(
            "status = 'REJECTED', failure_code = $1, failure_message = $2, \
             failure_retryable = $3, failure_at = $4, updated_at = $4 \
             WHERE id = $5 AND status = 'PENDING'",
            vec![
                Bind::T(reason.error_code.clone()),
                Bind::T(reason.message.clone()),
                Bind::B(reason.retryable),
                Bind::I(millis(reason.at)),
                Bind::I(id.as_i64()),
            ],
        )
        .await
    }

    async fn claim(
        &self,
        id: LedgerId,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<Ledger>, StoreError> {
        // A second claimer blocks on the row lock, then re-checks `status = 'PENDING'` on
        // the row the first one wrote, and so updates nothing.
        self.update_one(
            "status = 'PROCESSING', attempt_count = attempt_count + 1, lease_until = $1, \
             started_at = $2, updated_at = $2 \
             WHERE id = $3 AND status = 'PENDING' AND deleted_at IS NULL",
            vec![
                Bind::I(millis(lease_until)),
                Bind::I(millis(now)),
                Bind::I(id.as_i64()),
            ],
        )
        .await
    }

    async fn renew_lease(
        &self,
        id: LedgerId,
        attempt: u32,
        lease_until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE ledgers SET lease_until = $1 \
             WHERE id = $2 AND status = 'PROCESSING' AND attempt_count = $3",
        )
        .bind(millis(lease_until))
        .bind(id.as_i64())
        .bind(i64::from(attempt))
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn record_phase(
        &self,
        id: LedgerId,
        attempt: u32,
        phase: &str,
        detail: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "INSERT INTO ledger_events (ledger_id, at, attempt, phase, detail) \
             SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM ledgers \
             WHERE id = $1 AND status = 'PROCESSING' AND attempt_count = $3)",
        )
        .bind(id.as_i64())
        .bind(millis(at))
        .bind(i64::from(attempt))
        .bind(phase)
        .bind(detail)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn complete(
        &self,
        id: LedgerId,
        attempt: u32,
        file: &CompletedFile,
        stage: Stage,
        timezone: Timezone,
        now: DateTime<Utc>,
    ) -> Result<Option<Ledger>, StoreError> {
        let mut tx = self.pool.begin().await?;
        // The fenced file insert reads without locking; the conditional UPDATE below takes
        // the row lock and re-checks the attempt, so a lost lease still rolls the file back.
        // No ON CONFLICT: a version's file is never rewritten, a second one is an error.
        let inserted = sqlx::query(
            "INSERT INTO ledger_files (ledger_id, version, content_type, size_bytes, sha256, \
             file_name, object_key, attempt, created_at) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 WHERE EXISTS (SELECT 1 FROM ledgers \
             WHERE id = $1 AND status = 'PROCESSING' AND attempt_count = $8 AND version = $2)",
        )
        .bind(id.as_i64())
        .bind(i64::from(file.info.version))
        .bind(&file.info.content_type)
        .bind(i64::try_from(file.info.size_bytes).unwrap_or(i64::MAX))
        .bind(&file.info.sha256)
        .bind(&file.info.file_name)
        .bind(&file.object_key)
        .bind(i64::from(attempt))
        .bind(millis(now))
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        let updated = sqlx::query(
            "UPDATE ledgers SET status = 'COMPLETED', stage = $1, timezone = $2, \
             lease_until = NULL, completed_at = $3, updated_at = $3 \
             WHERE id = $4 AND status = 'PROCESSING' AND attempt_count = $5",
        )
        .bind(stage.as_str())
        .bind(timezone.name())
        .bind(millis(now))
        .bind(id.as_i64())
        .bind(i64::from(attempt))
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        // Read inside the transaction: it still holds the row lock, so this is exactly
        // what the completion wrote.
        let done = fetch_ledger(&mut *tx, id.as_i64()).await?;
        tx.commit().await?;
        Ok(done)
    }

    async fn fail(
        &self,
        id: LedgerId,
        attempt: u32,
        reason: &FailureReason,
    ) -> Result<Option<Ledger>, StoreError> {
        self.update_one(
            "status = 'REJECTED', failure_code = $1, failure_message = $2, \
             failure_retryable = $3, failure_at = $4, lease_until = NULL, updated_at = $4 \
             WHERE id = $5 AND status = 'PROCESSING' AND attempt_count = $6",
            vec![
                Bind::T(reason.error_code.clone()),
                Bind::T(reason.message.clone()),
                Bind::B(reason.retryable),
                Bind::I(millis(reason.at)),
                Bind::I(id.as_i64()),
                Bind::I(i64::from(attempt)),
            ],
        )
        .await
    }

    async fn release(
        &self,
        id: LedgerId,
        attempt: u32,
        now: DateTime<Utc>,
    ) -> Result<Option<Ledger>, StoreError> {
        self.update_one(
            "status = 'PENDING', lease_until = NULL, updated_at = $1 \
             WHERE id = $2 AND status = 'PROCESSING' AND attempt_count = $3",
            vec![
                Bind::I(millis(now)),
                Bind::I(id.as_i64()),
                Bind::I(i64::from(attempt)),
            ],
        )
        .await
    }

    async fn pending_ids(&self, limit: u32) -> Result<Vec<LedgerId>, StoreError> {
        let rows: Vec<(i64,)> = sqlx::query_as(
            "SELECT id FROM ledgers WHERE status = 'PENDING' AND deleted_at IS NULL \
             ORDER BY id LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id,)| LedgerId::from_i64(id))
            .collect())
    }

    async fn sweep(
        &self,
        now: DateTime<Utc>,
        pending_before: DateTime<Utc>,
        max_attempts: u32,
    ) -> Result<SweepOutcome, StoreError> {
        let now_ms = millis(now);
        let max = i64::from(max_attempts);
        let abandoned = self
            .sweep_step(
                "status = 'REJECTED', stall_count = stall_count + 1, \
                 failure_code = 'JOB_EXECUTION_FAILED', \
                 failure_message = 'the job stalled ' || (stall_count + 1) || \
                 ' time(s): no worker finished it within its lease', \
                 failure_retryable = TRUE, failure_at = $1, lease_until = NULL, updated_at = $1",
                "status = 'PROCESSING' AND lease_until < $1 AND stall_count + 1 >= $2",
                vec![Bind::I(now_ms), Bind::I(max)],
            )
            .await?;
        // The stall bound keeps the two steps disjoint even when a row changed between them:
        // a job due for abandoning is never requeued instead.
        let requeued = self
            .sweep_step(
                "status = 'PENDING', stall_count = stall_count + 1, lease_until = NULL, \
                 enqueued_at = $1, updated_at = $1",
                "status = 'PROCESSING' AND lease_until < $1 AND stall_count + 1 < $2",
                vec![Bind::I(now_ms), Bind::I(max)],
            )
            .await?;
        // Moving enqueued_at makes the re-enqueue happen once per timeout, by one sweeper.
        let unclaimed = self
            .sweep_step(
                "enqueued_at = $1",
                "status = 'PENDING' AND deleted_at IS NULL AND enqueued_at < $2",
                vec![Bind::I(now_ms), Bind::I(millis(pending_before))],
            )
            .await?;
        Ok(SweepOutcome {
            requeued,
            unclaimed,
            abandoned,
        })
    }

    async fn lease_node_id(
        &self,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<u16>, StoreError> {
        let taken: Vec<(i64,)> =
            sqlx::query_as("SELECT node_id::BIGINT FROM node_leases WHERE expires_at >= $1")
                .bind(millis(now))
                .fetch_all(&self.pool)
                .await?;
        let taken: std::collections::HashSet<i64> = taken.into_iter().map(|(n,)| n).collect();
        for candidate in (0..1024i64).filter(|n| !taken.contains(n)) {
            // Conditional upsert: only a free or expired row is taken, so racing processes
            // never end up with the same id.
            let won = sqlx::query(
                "INSERT INTO node_leases (node_id, holder, expires_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (node_id) DO UPDATE SET holder = excluded.holder, \
                 expires_at = excluded.expires_at WHERE node_leases.expires_at < $4",
            )
            .bind(candidate as i32)
            .bind(holder)
            .bind(millis(until))
            .bind(millis(now))
            .execute(&self.pool)
            .await?;
            if won.rows_affected() == 1 {
                return Ok(u16::try_from(candidate).ok());
            }
        }
        Ok(None)
    }

    async fn renew_node_id(
        &self,
        node_id: u16,
        holder: &str,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE node_leases SET expires_at = $1 WHERE node_id = $2 AND holder = $3",
        )
        .bind(millis(until))
        .bind(i32::from(node_id))
        .bind(holder)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn release_node_id(&self, node_id: u16, holder: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM node_leases WHERE node_id = $1 AND holder = $2")
            .bind(i32::from(node_id))
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn list_grants(&self) -> Result<Vec<Grant>, StoreError> {
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT subject, role, domain FROM policy_grants ORDER BY subject, domain, role",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(subject, role, domain)| Grant {
                subject,
                role,
                domain,
            })
            .collect())
    }

    async fn add_grant(&self, grant: &Grant) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        lock_revision(&mut tx).await?;
        let r = sqlx::query(
            "INSERT INTO policy_grants (subject, role, domain, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(&grant.subject)
        .bind(&grant.role)
        .bind(&grant.domain)
        .bind(millis(Utc::now()))
        .execute(&mut *tx)
        .await?;
        let added = r.rows_affected() == 1;
        if added {
            bump_revision(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(added)
    }

    async fn remove_grant(&self, grant: &Grant) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        lock_revision(&mut tx).await?;
        let r = sqlx::query(
            "DELETE FROM policy_grants WHERE subject = $1 AND role = $2 AND domain = $3",
        )
        .bind(&grant.subject)
        .bind(&grant.role)
        .bind(&grant.domain)
        .execute(&mut *tx)
        .await?;
        let removed = r.rows_affected() == 1;
        if removed {
            bump_revision(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(removed)
    }

    async fn policy_revision(&self) -> Result<PolicyRevision, StoreError> {
        let (revision, digest): (i64, Option<String>) =
            sqlx::query_as("SELECT revision, digest FROM policy_revision WHERE id = 1")
                .fetch_one(&self.pool)
                .await?;
        if let Some(digest) = digest {
            return Ok(PolicyRevision { revision, digest });
        }
        // A database from before digests: compute it once, under the same lock as changes.
        let mut tx = self.pool.begin().await?;
        let revision = lock_revision(&mut tx).await?;
        let digest = grant_digest(&grants_in(&mut tx).await?);
        sqlx::query("UPDATE policy_revision SET digest = $1 WHERE id = 1")
            .bind(&digest)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(PolicyRevision { revision, digest })
    }
}

/// Takes the policy row's lock for the rest of the transaction, so grant changes (and the
/// digest each one records) are serialised: two concurrent changes would otherwise each
/// hash a grant set without the other's change. Returns the current revision.
async fn lock_revision(tx: &mut sqlx::Transaction<'_, Postgres>) -> Result<i64, StoreError> {
    let (revision,): (i64,) =
        sqlx::query_as("SELECT revision FROM policy_revision WHERE id = 1 FOR UPDATE")
            .fetch_one(&mut **tx)
            .await?;
    Ok(revision)
}

async fn grants_in(tx: &mut sqlx::Transaction<'_, Postgres>) -> Result<Vec<Grant>, StoreError> {
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT subject, role, domain FROM policy_grants")
            .fetch_all(&mut **tx)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(subject, role, domain)| Grant {
            subject,
            role,
            domain,
        })
        .collect())
}

/// Moves the policy revision and records the digest of the grants as they now are, inside
/// the grant's transaction, so a cache that sees the new revision also sees the new grants.
async fn bump_revision(tx: &mut sqlx::Transaction<'_, Postgres>) -> Result<(), StoreError> {
    let digest = grant_digest(&grants_in(tx).await?);
    sqlx::query(
        "UPDATE policy_revision SET revision = floor(random() * 9e18)::BIGINT, digest = $1 \
         WHERE id = 1",
    )
    .bind(digest)
    .execute(&mut **tx)
    .await?;
    Ok(())
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

    /// A store in a fresh schema of its own. Fails (never skips) when the server is away.
    async fn fresh_store() -> (PostgresStore, String) {
        let url = test_url();
        let schema = format!("ledger_test_{}", uuid::Uuid::new_v4().simple());
        match PostgresStore::connect_in_schema(&url, &schema).await {
            Ok(store) => (store, schema),
            Err(e) => panic!(
                "cannot reach PostgreSQL at {} ({e}); scripts/run-tests.sh starts PostgreSQL, \
                 or set LEDGER_TEST_DATABASE_URL to a running server",
                shown(&url)
            ),
        }
    }

    async fn drop_schema(pool: &PgPool, schema: &str) {
        sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
            .execute(pool)
            .await
            .unwrap();
        pool.close().await;
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
                "4_idempotency expiry"
            ],
            "a fresh schema has every migration pending"
        );
        store.migrate().await.unwrap();
        store.migrate().await.unwrap();
        assert!(store.pending_migrations().await.unwrap().is_empty());
        let pool = store.pool.clone();
        contract::run_all(Arc::new(store)).await;
        drop_schema(&pool, &schema).await;
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
        drop_schema(&pool, &schema).await;
    }
}
