//! The embedded job store: one SQLite file in WAL mode. Every status change is a single
//! conditional `UPDATE … RETURNING` (or a transaction that starts with one), so the write
//! lock is taken first and concurrent workers and sweepers never act on a stale read.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, Sqlite};

use super::rows::{EventRow, FileRow, IdempotencyRow, LedgerRow};
use super::{
    CompletedFile, Expected, IdempotencyRecord, InsertOutcome, JobStore, ListQuery, NewLedger,
    StoreError, StoredFile, SweepOutcome, UserChange,
};
use crate::domain::{
    FailureReason, Grant, Ledger, LedgerId, PolicyRevision, Stage, TimelineItem, Timezone,
    grant_digest,
};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// The SQLite adapter.
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
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
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    /// An in-memory database (tests): one connection, so every query sees the same data.
    pub async fn in_memory() -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }
}

const LEDGER_COLUMNS: &str = "l.id, l.merchant_id, l.type, l.period, l.requested_timezone, \
    l.timezone, l.format, l.stage, l.status, l.version, l.attempt_count, l.lease_until, \
    l.failure_code, l.failure_message, l.failure_retryable, l.failure_at, l.created_by, \
    l.created_at, l.updated_at, l.started_at, l.completed_at, l.deleted_at, \
    f.version AS f_version, f.content_type AS f_content_type, f.size_bytes AS f_size_bytes, \
    f.sha256 AS f_sha256, f.file_name AS f_file_name";

/// The newest completed file is joined in; `l` is the ledger row.
const LEDGER_FROM: &str = "FROM ledgers l LEFT JOIN ledger_files f ON f.ledger_id = l.id \
    AND f.version = (SELECT MAX(version) FROM ledger_files WHERE ledger_id = l.id)";

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn is_unique_violation(e: &sqlx::Error, index_hint: &str) -> bool {
    match e {
        sqlx::Error::Database(db) => db.is_unique_violation() && db.message().contains(index_hint),
        _ => false,
    }
}

impl SqliteStore {
    async fn fetch_ledger(&self, id: i64) -> Result<Option<Ledger>, StoreError> {
        let sql = format!("SELECT {LEDGER_COLUMNS} {LEDGER_FROM} WHERE l.id = ?");
        let row = sqlx::query_as::<_, LedgerRow>(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(Ledger::try_from).transpose()
    }

    /// Runs a conditional `UPDATE ledgers … WHERE id = ? AND <cond> RETURNING id` and
    /// re-reads the ledger when a row changed.
    async fn update_one(
        &self,
        set_and_where: &str,
        binds: Vec<Bind>,
        id: LedgerId,
    ) -> Result<Option<Ledger>, StoreError> {
        let sql = format!("UPDATE ledgers SET {set_and_where} RETURNING id");
        let mut q = sqlx::query(&sql);
        for b in binds {
            q = b.apply(q);
        }
        let changed = q.fetch_optional(&self.pool).await?;
        match changed {
            Some(_) => self.fetch_ledger(id.as_i64()).await,
            None => Ok(None),
        }
    }

    async fn update_many(
        &self,
        set_and_where: &str,
        binds: Vec<Bind>,
    ) -> Result<Vec<Ledger>, StoreError> {
        let sql = format!("UPDATE ledgers SET {set_and_where} RETURNING id");
        let mut q = sqlx::query(&sql);
        for b in binds {
            q = b.apply(q);
        }
        let rows = q.fetch_all(&self.pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            if let Some(l) = self.fetch_ledger(row.try_get("id")?).await? {
                out.push(l);
            }
        }
        Ok(out)
    }
}

/// A bind value of a dynamically built statement.
enum Bind {
    I(i64),
    T(String),
    B(bool),
}

impl Bind {
    fn apply<'q>(
        self,
        q: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    ) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
        match self {
            Bind::I(v) => q.bind(v),
            Bind::T(v) => q.bind(v),
            Bind::B(v) => q.bind(v),
        }
    }
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    async fn pending_migrations(&self) -> Result<Vec<String>, StoreError> {
        let exists: Option<(String,)> = sqlx::query_as(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_optional(&self.pool)
        .await?;
        let applied: Vec<(i64,)> = if exists.is_some() {
            sqlx::query_as("SELECT version FROM _sqlx_migrations WHERE success = 1")
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
        let mut tx = self.pool.begin().await?;
        // The ledger row first: the transaction takes the write lock with its first statement.
        let inserted = sqlx::query(
            "INSERT INTO ledgers (id, merchant_id, type, period, requested_timezone, format, \
             stage, status, version, attempt_count, created_by, created_at, updated_at, \
             enqueued_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'PENDING', 1, 0, ?, ?, ?, ?)",
        )
        .bind(new.id.as_i64())
        .bind(new.merchant_id.as_str())
        .bind(new.ledger_type.as_str())
        .bind(new.period.to_string())
        .bind(new.requested_timezone.map(|t| t.name()).unwrap_or(""))
        .bind(new.format.as_str())
        .bind(new.stage.as_str())
        .bind(&new.created_by)
        .bind(millis(new.created_at))
        .bind(millis(new.created_at))
        .execute(&mut *tx)
        .await;
        if let Err(e) = inserted {
            drop(tx);
            if is_unique_violation(&e, "ledgers.id") {
                return Ok(InsertOutcome::IdTaken);
            }
            if is_unique_violation(&e, "ledgers.merchant_id") {
                // Replays win over "exists": the same key resent after success must replay.
                if let Some(rec) = idempotency
                    && let Some(found) = self
                        .find_idempotency(&rec.subject, &rec.key, new.created_at)
                        .await?
                {
                    return Ok(InsertOutcome::Replay(found));
                }
                let existing: Option<(i64,)> = sqlx::query_as(
                    "SELECT id FROM ledgers WHERE merchant_id = ? AND type = ? AND period = ? \
                     AND requested_timezone = ? AND format = ? AND deleted_at IS NULL",
                )
                .bind(new.merchant_id.as_str())
                .bind(new.ledger_type.as_str())
                .bind(new.period.to_string())
                .bind(new.requested_timezone.map(|t| t.name()).unwrap_or(""))
                .bind(new.format.as_str())
                .fetch_optional(&self.pool)
                .await?;
                return match existing {
                    Some((id,)) => Ok(InsertOutcome::Exists(LedgerId::from_i64(id))),
                    // Deleted in between: the caller may simply try again.
                    None => Ok(InsertOutcome::IdTaken),
                };
            }
            return Err(e.into());
        }
        if let Some(rec) = idempotency {
            let stored = sqlx::query(
                "INSERT INTO idempotency_keys (subject, key, request_hash, ledger_id, \
                 status_code, body, created_at) VALUES (?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (subject, key) DO UPDATE SET request_hash = excluded.request_hash, \
                 ledger_id = excluded.ledger_id, status_code = excluded.status_code, \
                 body = excluded.body, created_at = excluded.created_at \
                 WHERE idempotency_keys.created_at <= ?",
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
                return match self
                    .find_idempotency(&rec.subject, &rec.key, new.created_at)
                    .await?
                {
                    Some(found) => Ok(InsertOutcome::Replay(found)),
                    None => Ok(InsertOutcome::IdTaken),
                };
            }
        }
        tx.commit().await?;
        match self.fetch_ledger(new.id.as_i64()).await? {
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
            "UPDATE idempotency_keys SET status_code = ?, body = ? WHERE subject = ? AND key = ?",
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
        self.fetch_ledger(id.as_i64()).await
    }

    async fn purge_idempotency_keys(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let r = sqlx::query("DELETE FROM idempotency_keys WHERE created_at <= ?")
            .bind(millis(before))
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    async fn list_ledgers(&self, query: &ListQuery) -> Result<Vec<Ledger>, StoreError> {
        let live = if query.include_deleted {
            "1 = 1"
        } else {
            "l.deleted_at IS NULL"
        };
        let mut sql = format!("SELECT {LEDGER_COLUMNS} {LEDGER_FROM} WHERE {live}");
        let mut binds: Vec<Bind> = Vec::new();
        if let Some(merchants) = &query.merchants {
            if merchants.is_empty() {
                return Ok(Vec::new());
            }
            sql.push_str(" AND l.merchant_id IN (");
            for (i, m) in merchants.iter().enumerate() {
                sql.push_str(if i == 0 { "?" } else { ", ?" });
                binds.push(Bind::T(m.as_str().to_owned()));
            }
            sql.push(')');
        }
        if let Some(s) = query.status {
            sql.push_str(" AND l.status = ?");
            binds.push(Bind::T(s.as_str().to_owned()));
        }
        if let Some(t) = query.ledger_type {
            sql.push_str(" AND l.type = ?");
            binds.push(Bind::T(t.as_str().to_owned()));
        }
        if let Some(p) = &query.period {
            sql.push_str(" AND l.period = ?");
            binds.push(Bind::T(p.clone()));
        }
        if let Some(before) = query.before {
            sql.push_str(" AND l.id < ?");
            binds.push(Bind::I(before.as_i64()));
        }
        sql.push_str(" ORDER BY l.id DESC LIMIT ?");
        binds.push(Bind::I(i64::from(query.limit)));
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
             WHERE ledger_id = ? ORDER BY seq",
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
        // The merchants go in as one JSON array: a scope of any size is one parameter
        // (SQLite caps the number of parameters), and `NULL` means every merchant.
        let scope = match merchants {
            Some([]) => return Ok(Vec::new()),
            Some(list) => Some(
                serde_json::to_string(
                    &list
                        .iter()
                        .map(crate::domain::MerchantId::as_str)
                        .collect::<Vec<_>>(),
                )
                .map_err(|e| StoreError::Corrupt(format!("merchant list: {e}")))?,
            ),
            None => None,
        };
        let sql = format!(
            "{} WHERE e.status IS NOT NULL AND e.at > ?1 AND e.seq > ?2 \
             AND (?4 IS NULL OR l.merchant_id IN (SELECT value FROM json_each(?4))) \
             ORDER BY e.seq LIMIT ?3",
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
             FROM ledger_files WHERE ledger_id = ? AND version = ?",
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
            UserChange::Retry => {
                "status = 'PENDING', lease_until = NULL, stall_count = 0, enqueued_at = ?1, \
                 updated_at = ?1"
            }
            UserChange::Regenerate => {
                "status = 'PENDING', version = version + 1, lease_until = NULL, stall_count = 0, \
                 enqueued_at = ?1, updated_at = ?1"
            }
            UserChange::Delete => "deleted_at = ?1, updated_at = ?1",
        };
        let sql = format!(
            "{set} WHERE id = ?2 AND status = ?3 AND stage = ?4 AND version = ?5 \
             AND deleted_at IS NULL"
        );
        let binds = vec![
            Bind::I(millis(now)),
            Bind::I(id.as_i64()),
            Bind::T(expected.status.as_str().into()),
            Bind::T(expected.stage.as_str().into()),
            Bind::I(i64::from(expected.version)),
        ];
        self.update_one(&sql, binds, id).await
    }

    async fn reject_pending(
        &self,
        id: LedgerId,
        reason: &FailureReason,
    ) -> Result<Option<Ledger>, StoreError> {
        self.update_one(
            "status = 'REJECTED', failure_code = ?, failure_message = ?, failure_retryable = ?, \
             failure_at = ?, updated_at = ? WHERE id = ? AND status = 'PENDING'",
            vec![
                Bind::T(reason.error_code.clone()),
                Bind::T(reason.message.clone()),
                Bind::B(reason.retryable),
                Bind::I(millis(reason.at)),
                Bind::I(millis(reason.at)),
                Bind::I(id.as_i64()),
            ],
            id,
        )
        .await
    }

    async fn claim(
        &self,
        id: LedgerId,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<Ledger>, StoreError> {
        self.update_one(
            "status = 'PROCESSING', attempt_count = attempt_count + 1, lease_until = ?, \
             started_at = ?, updated_at = ? \
             WHERE id = ? AND status = 'PENDING' AND deleted_at IS NULL",
            vec![
                Bind::I(millis(lease_until)),
                Bind::I(millis(now)),
                Bind::I(millis(now)),
                Bind::I(id.as_i64()),
            ],
            id,
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
            "UPDATE ledgers SET lease_until = ? \
             WHERE id = ? AND status = 'PROCESSING' AND attempt_count = ?",
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
             SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS (SELECT 1 FROM ledgers \
             WHERE id = ?1 AND status = 'PROCESSING' AND attempt_count = ?3)",
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
        // The fenced file insert comes first so the transaction starts by writing.
        let inserted = sqlx::query(
            "INSERT INTO ledger_files (ledger_id, version, content_type, size_bytes, sha256, \
             file_name, object_key, attempt, created_at) \
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9 WHERE EXISTS (SELECT 1 FROM ledgers \
             WHERE id = ?1 AND status = 'PROCESSING' AND attempt_count = ?8 AND version = ?2)",
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
            "UPDATE ledgers SET status = 'COMPLETED', stage = ?, timezone = ?, lease_until = NULL, \
             completed_at = ?, updated_at = ? \
             WHERE id = ? AND status = 'PROCESSING' AND attempt_count = ?",
        )
        .bind(stage.as_str())
        .bind(timezone.name())
        .bind(millis(now))
        .bind(millis(now))
        .bind(id.as_i64())
        .bind(i64::from(attempt))
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        tx.commit().await?;
        self.fetch_ledger(id.as_i64()).await
    }

    async fn fail(
        &self,
        id: LedgerId,
        attempt: u32,
        reason: &FailureReason,
    ) -> Result<Option<Ledger>, StoreError> {
        self.update_one(
            "status = 'REJECTED', failure_code = ?, failure_message = ?, failure_retryable = ?, \
             failure_at = ?, lease_until = NULL, updated_at = ? \
             WHERE id = ? AND status = 'PROCESSING' AND attempt_count = ?",
            vec![
                Bind::T(reason.error_code.clone()),
                Bind::T(reason.message.clone()),
                Bind::B(reason.retryable),
                Bind::I(millis(reason.at)),
                Bind::I(millis(reason.at)),
                Bind::I(id.as_i64()),
                Bind::I(i64::from(attempt)),
            ],
            id,
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
            "status = 'PENDING', lease_until = NULL, updated_at = ? \
             WHERE id = ? AND status = 'PROCESSING' AND attempt_count = ?",
            vec![
                Bind::I(millis(now)),
                Bind::I(id.as_i64()),
                Bind::I(i64::from(attempt)),
            ],
            id,
        )
        .await
    }

    async fn pending_ids(&self, limit: u32) -> Result<Vec<LedgerId>, StoreError> {
        let rows: Vec<(i64,)> = sqlx::query_as(
            "SELECT id FROM ledgers WHERE status = 'PENDING' AND deleted_at IS NULL \
             ORDER BY id LIMIT ?",
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
        // Each statement is one atomic conditional update: concurrent sweepers split the rows.
        let abandoned = self
            .update_many(
                "status = 'REJECTED', stall_count = stall_count + 1, \
                 failure_code = 'JOB_EXECUTION_FAILED', \
                 failure_message = 'the job stalled ' || (stall_count + 1) || ' time(s): no worker finished it within its lease', \
                 failure_retryable = 1, failure_at = ?1, lease_until = NULL, updated_at = ?1 \
                 WHERE status = 'PROCESSING' AND lease_until < ?1 AND stall_count + 1 >= ?2",
                vec![Bind::I(now_ms), Bind::I(i64::from(max_attempts))],
            )
            .await?;
        let requeued = self
            .update_many(
                "status = 'PENDING', stall_count = stall_count + 1, lease_until = NULL, \
                 enqueued_at = ?1, updated_at = ?1 \
                 WHERE status = 'PROCESSING' AND lease_until < ?1",
                vec![Bind::I(now_ms)],
            )
            .await?;
        // Moving enqueued_at makes the re-enqueue happen once per timeout, by one sweeper.
        let unclaimed = self
            .update_many(
                "enqueued_at = ?1 WHERE status = 'PENDING' AND deleted_at IS NULL \
                 AND enqueued_at < ?2",
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
            sqlx::query_as("SELECT node_id FROM node_leases WHERE expires_at >= ?")
                .bind(millis(now))
                .fetch_all(&self.pool)
                .await?;
        let taken: std::collections::HashSet<i64> = taken.into_iter().map(|(n,)| n).collect();
        for candidate in (0..1024i64).filter(|n| !taken.contains(n)) {
            // Conditional upsert: only a free or expired row is taken, so racing processes
            // never end up with the same id.
            let won = sqlx::query(
                "INSERT INTO node_leases (node_id, holder, expires_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (node_id) DO UPDATE SET holder = excluded.holder, \
                 expires_at = excluded.expires_at WHERE node_leases.expires_at < ?4",
            )
            .bind(candidate)
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
        let r =
            sqlx::query("UPDATE node_leases SET expires_at = ? WHERE node_id = ? AND holder = ?")
                .bind(millis(until))
                .bind(i64::from(node_id))
                .bind(holder)
                .execute(&self.pool)
                .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn release_node_id(&self, node_id: u16, holder: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM node_leases WHERE node_id = ? AND holder = ?")
            .bind(i64::from(node_id))
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
        let r = sqlx::query(
            "INSERT INTO policy_grants (subject, role, domain, created_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&grant.subject)
        .bind(&grant.role)
        .bind(&grant.domain)
        .bind(millis(Utc::now()))
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 1 {
            bump_revision(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(r.rows_affected() == 1)
    }

    async fn remove_grant(&self, grant: &Grant) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let r =
            sqlx::query("DELETE FROM policy_grants WHERE subject = ? AND role = ? AND domain = ?")
                .bind(&grant.subject)
                .bind(&grant.role)
                .bind(&grant.domain)
                .execute(&mut *tx)
                .await?;
        if r.rows_affected() == 1 {
            bump_revision(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(r.rows_affected() == 1)
    }

    async fn policy_revision(&self) -> Result<PolicyRevision, StoreError> {
        let (revision, digest): (i64, Option<String>) =
            sqlx::query_as("SELECT revision, digest FROM policy_revision WHERE id = 1")
                .fetch_one(&self.pool)
                .await?;
        if let Some(digest) = digest {
            return Ok(PolicyRevision { revision, digest });
        }
        // A database from before digests: compute it once. The UPDATE comes first so the
        // transaction holds SQLite's write lock before it reads the grants it hashes.
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE policy_revision SET digest = NULL WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        let digest = grant_digest(&grants_in(&mut tx).await?);
        let (revision,): (i64,) =
            sqlx::query_as("UPDATE policy_revision SET digest = ? WHERE id = 1 RETURNING revision")
                .bind(&digest)
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(PolicyRevision { revision, digest })
    }
}

async fn grants_in(tx: &mut sqlx::Transaction<'_, Sqlite>) -> Result<Vec<Grant>, StoreError> {
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
/// the grant's transaction (which already holds SQLite's single write lock, so concurrent
/// changes are serialised), so a cache that sees the new revision also sees the new grants.
async fn bump_revision(tx: &mut sqlx::Transaction<'_, Sqlite>) -> Result<(), StoreError> {
    let digest = grant_digest(&grants_in(tx).await?);
    sqlx::query("UPDATE policy_revision SET revision = abs(random()), digest = ? WHERE id = 1")
        .bind(digest)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl SqliteStore {
    /// The record of a key that has not expired at `now`.
    async fn find_idempotency(
        &self,
        subject: &str,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let row = sqlx::query_as::<_, IdempotencyRow>(
            "SELECT request_hash, ledger_id, status_code, body FROM idempotency_keys \
             WHERE subject = ? AND key = ? AND created_at > ?",
        )
        .bind(subject)
        .bind(key)
        .bind(millis(super::idempotency_cutoff(now)))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| row.into_record(subject, key)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn the_sqlite_store_meets_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("ledger.db"))
            .await
            .unwrap();
        assert_eq!(store.pending_migrations().await.unwrap().len(), 4);
        store.migrate().await.unwrap();
        store.migrate().await.unwrap();
        super::super::contract::run_all(Arc::new(store)).await;
    }

    #[tokio::test]
    async fn the_in_memory_store_meets_the_contract() {
        let store = SqliteStore::in_memory().await.unwrap();
        store.migrate().await.unwrap();
        super::super::contract::run_all(Arc::new(store)).await;
    }
}
