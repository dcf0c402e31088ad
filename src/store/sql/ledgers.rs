//! Ledgers as users see them: creation with its idempotency key, reads, lists, the timeline
//! and the replay of status changes, and a user's retry, regenerate or delete.

use chrono::{DateTime, Utc};

use super::{Arg, Args, Dialect, Driver, SqlStore, Taken, args, fetch_ledger, select_ledgers};
use crate::domain::{Ledger, LedgerId, MerchantId, Status, StatusEvent, TimelineItem};
use crate::store::rows::{EventRow, FileRow, IdempotencyRow, LedgerRow, StatusEventRow};
use crate::store::{
    Expected, IdempotencyRecord, InsertOutcome, ListQuery, NewLedger, StoreError, StoredFile,
    UserChange, idempotency_cutoff,
};

/// The merchants of a scope as one JSON array parameter (`NULL`: every merchant): a scope
/// of any size is one parameter, and SQLite caps their number.
fn merchant_scope(merchants: Option<&[MerchantId]>) -> Result<Arg, StoreError> {
    let Some(list) = merchants else {
        return Ok(Arg::OptText(None));
    };
    let names: Vec<&str> = list.iter().map(MerchantId::as_str).collect();
    serde_json::to_string(&names)
        .map(|json| Arg::OptText(Some(json)))
        .map_err(|e| StoreError::Corrupt(format!("merchant list: {e}")))
}

impl<D: Dialect> SqlStore<D> {
    /// The record of a key that has not expired at `now`.
    async fn find_idempotency(
        &self,
        subject: &str,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let row: Option<IdempotencyRow> = self
            .fetch_optional(
                "SELECT request_hash, ledger_id, status_code, body FROM idempotency_keys \
                 WHERE subject = $1 AND key = $2 AND created_at > $3",
                args![subject, key, idempotency_cutoff(now)],
            )
            .await?;
        Ok(row.map(|row| row.into_record(subject, key)))
    }

    /// [`crate::store::JobStore::insert_ledger`].
    pub(super) async fn insert(
        &self,
        new: &NewLedger,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<InsertOutcome, StoreError> {
        let requested = new.requested_timezone.map(|t| t.name()).unwrap_or("");
        let identity = || {
            args![
                new.merchant_id.as_str(),
                new.ledger_type.as_str(),
                new.period.to_string(),
                requested,
                new.format.as_str(),
            ]
        };
        let mut insert = identity();
        insert.extend(args![
            new.id.as_i64(),
            new.stage.as_str(),
            Status::Pending.as_str(),
            new.created_by.as_str(),
            new.created_at,
        ]);
        let mut tx = self.pool.begin().await?;
        // The ledger row first: in SQLite the transaction takes the write lock with it.
        let inserted = D::Db::execute(
            &mut tx,
            "INSERT INTO ledgers (merchant_id, type, period, requested_timezone, format, id, \
             stage, status, version, attempt_count, created_by, created_at, updated_at, \
             enqueued_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, 0, $9, $10, $10, $10)",
            insert,
        )
        .await;
        if let Err(e) = inserted {
            // A failed statement aborts a PostgreSQL transaction: end it before reading.
            tx.rollback().await?;
            match D::taken(&e) {
                Some(Taken::Id) => return Ok(InsertOutcome::IdTaken),
                Some(Taken::Identity) => {}
                None => return Err(e.into()),
            }
            // Replays win over "exists": the same key resent after success must replay.
            if let Some(rec) = idempotency
                && let Some(found) = self
                    .find_idempotency(&rec.subject, &rec.key, new.created_at)
                    .await?
            {
                return Ok(InsertOutcome::Replay(found));
            }
            let existing: Option<(i64,)> = self
                .fetch_optional(
                    "SELECT id FROM ledgers WHERE merchant_id = $1 AND type = $2 \
                     AND period = $3 AND requested_timezone = $4 AND format = $5 \
                     AND deleted_at IS NULL",
                    identity(),
                )
                .await?;
            return match existing {
                Some((id,)) => Ok(InsertOutcome::Exists(LedgerId::from_i64(id))),
                // Deleted in between: the caller may simply try again.
                None => Ok(InsertOutcome::IdTaken),
            };
        }
        if let Some(rec) = idempotency {
            // An upsert that only replaces an expired key, instead of an error, keeps the
            // transaction usable; a concurrent insert of the same key is waited for, so the
            // loser sees the winner's record.
            let stored = D::Db::execute(
                &mut tx,
                "INSERT INTO idempotency_keys (subject, key, request_hash, ledger_id, \
                 status_code, body, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (subject, key) DO UPDATE SET request_hash = excluded.request_hash, \
                 ledger_id = excluded.ledger_id, status_code = excluded.status_code, \
                 body = excluded.body, created_at = excluded.created_at \
                 WHERE idempotency_keys.created_at <= $8",
                args![
                    rec.subject.as_str(),
                    rec.key.as_str(),
                    rec.request_hash.as_str(),
                    new.id.as_i64(),
                    i64::from(rec.status_code),
                    rec.body.as_str(),
                    new.created_at,
                    idempotency_cutoff(new.created_at),
                ],
            )
            .await?;
            if stored == 0 {
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
        let created = fetch_ledger::<D>(&mut tx, new.id.as_i64()).await?;
        tx.commit().await?;
        match created {
            Some(l) => Ok(InsertOutcome::Created(l)),
            None => Err(StoreError::Corrupt("inserted ledger vanished".into())),
        }
    }

    /// [`crate::store::JobStore::update_idempotency`].
    pub(super) async fn set_idempotency_response(
        &self,
        subject: &str,
        key: &str,
        status_code: u16,
        body: &str,
    ) -> Result<(), StoreError> {
        self.execute(
            "UPDATE idempotency_keys SET status_code = $1, body = $2 \
             WHERE subject = $3 AND key = $4",
            args![i64::from(status_code), body, subject, key],
        )
        .await?;
        Ok(())
    }

    /// [`crate::store::JobStore::list_ledgers`].
    pub(super) async fn list(&self, query: &ListQuery) -> Result<Vec<Ledger>, StoreError> {
        if query.merchants.as_ref().is_some_and(Vec::is_empty) {
            return Ok(Vec::new());
        }
        let live = if query.include_deleted {
            "1 = 1"
        } else {
            "l.deleted_at IS NULL"
        };
        let mut sql = format!("{} WHERE {live}", select_ledgers("ledgers"));
        let mut binds: Args = Vec::new();
        // Appends a condition whose `$` is the next parameter number.
        let mut push = |sql: &mut String, cond: &str, bind: Arg| {
            binds.push(bind);
            sql.push_str(&cond.replace('$', &format!("${}", binds.len())));
        };
        if let Some(merchants) = &query.merchants {
            let scope = merchant_scope(Some(merchants.as_slice()))?;
            let cond = format!(" AND l.merchant_id IN ({})", D::json_texts("$"));
            push(&mut sql, &cond, scope);
        }
        if let Some(s) = query.status {
            push(&mut sql, " AND l.status = $", s.as_str().into());
        }
        if let Some(t) = query.ledger_type {
            push(&mut sql, " AND l.type = $", t.as_str().into());
        }
        if let Some(p) = &query.period {
            push(&mut sql, " AND l.period = $", p.as_str().into());
        }
        if let Some(before) = query.before {
            push(&mut sql, " AND l.id < $", before.as_i64().into());
        }
        let limit = i64::from(query.limit);
        push(&mut sql, " ORDER BY l.id DESC LIMIT $", limit.into());
        let rows: Vec<LedgerRow> = self.fetch_all(&sql, binds).await?;
        rows.into_iter().map(Ledger::try_from).collect()
    }

    /// [`crate::store::JobStore::list_events`].
    pub(super) async fn timeline(&self, id: LedgerId) -> Result<Vec<TimelineItem>, StoreError> {
        let rows: Vec<EventRow> = self
            .fetch_all(
                "SELECT at, attempt, status, error_code, phase, detail FROM ledger_events \
                 WHERE ledger_id = $1 ORDER BY seq",
                args![id.as_i64()],
            )
            .await?;
        rows.into_iter().map(TimelineItem::try_from).collect()
    }

    /// [`crate::store::JobStore::status_events_since`].
    pub(super) async fn status_events(
        &self,
        merchants: Option<&[MerchantId]>,
        since: DateTime<Utc>,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, StatusEvent)>, StoreError> {
        if merchants.is_some_and(<[MerchantId]>::is_empty) {
            return Ok(Vec::new());
        }
        let sql = format!(
            "{} WHERE e.status IS NOT NULL AND e.at > $1 AND e.seq > $2 \
             AND ($4 IS NULL OR l.merchant_id IN ({})) \
             ORDER BY e.seq LIMIT $3",
            crate::store::rows::STATUS_EVENT_SELECT,
            D::json_texts("$4"),
        );
        let mut binds = args![since, after, i64::from(limit)];
        binds.push(merchant_scope(merchants)?);
        let rows: Vec<StatusEventRow> = self.fetch_all(&sql, binds).await?;
        rows.into_iter().map(TryFrom::try_from).collect()
    }

    /// [`crate::store::JobStore::get_file`].
    pub(super) async fn file(
        &self,
        id: LedgerId,
        version: u32,
    ) -> Result<Option<StoredFile>, StoreError> {
        let row: Option<FileRow> = self
            .fetch_optional(
                "SELECT version, content_type, size_bytes, sha256, file_name, object_key \
                 FROM ledger_files WHERE ledger_id = $1 AND version = $2",
                args![id.as_i64(), i64::from(version)],
            )
            .await?;
        row.map(StoredFile::try_from).transpose()
    }

    /// [`crate::store::JobStore::user_change`]: the caller asked the state machine with the
    /// status it read; the update applies only if the row is still in that state.
    pub(super) async fn change_by_user(
        &self,
        id: LedgerId,
        expected: Expected,
        change: UserChange,
        now: DateTime<Utc>,
    ) -> Result<Option<Ledger>, StoreError> {
        let set = match change {
            // A user's action starts the stall count afresh: the sweep judges this run only.
            UserChange::Retry => {
                "status = $6, lease_until = NULL, stall_count = 0, enqueued_at = $1, \
                 updated_at = $1"
            }
            UserChange::Regenerate => {
                "status = $6, version = version + 1, lease_until = NULL, stall_count = 0, \
                 enqueued_at = $1, updated_at = $1"
            }
            UserChange::Delete => "deleted_at = $1, updated_at = $1",
        };
        // Retry and regenerate put the job back in the queue; a delete keeps the status (and
        // leaves $6 unused).
        let requeued = Status::Pending;
        self.update_one(
            set,
            "id = $2 AND status = $3 AND stage = $4 AND version = $5 AND deleted_at IS NULL",
            args![
                now,
                id.as_i64(),
                expected.status.as_str(),
                expected.stage.as_str(),
                i64::from(expected.version),
                requeued.as_str(),
            ],
        )
        .await
    }
}
