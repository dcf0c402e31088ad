//! Batches in SQL: their rows, their members (ledgers made by the batch or already there),
//! the leased expansion that adds members chunk by chunk, and the progress last published.

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};

use super::ledgers::{Undone, explain, insert_many};
use super::{Arg, Dialect, Driver, LEDGER_COLUMNS, SqlStore, args, fetch_ledger};
use crate::domain::batch::formats_to_stored;
use crate::domain::{Batch, BatchCounts, BatchId, BatchStatus, Ledger, LedgerId, Status, Tally};
use crate::store::batches::{
    BatchInsert, BatchKey, BatchStore, ExpandStep, Expansion, Member, MemberFilter, NewBatch,
    Published,
};
use crate::store::rows::{BATCH_COLUMNS, BatchRow, MemberRow};
use crate::store::{InsertOutcome, NewLedger, StoreError, idempotency_cutoff};

/// Times a new member whose id another replica took gets a fresh one before the chunk
/// fails.
const ID_ATTEMPTS: usize = 8;

/// New ledgers inserted by one statement.
const INSERT_GROUP: usize = 500;

/// One batch row by id (`$1`).
fn batch_by_id() -> String {
    format!("SELECT {BATCH_COLUMNS} FROM batches b WHERE b.id = $1")
}

/// The batch row as read on `conn`.
async fn fetch_batch<D: Dialect>(
    conn: &mut super::Conn<D>,
    id: i64,
) -> Result<Option<BatchRow>, StoreError> {
    let rows: Vec<BatchRow> = D::Db::fetch_all(conn, &batch_by_id(), args![id]).await?;
    Ok(rows.into_iter().next())
}

/// The statement of one page of `GET /batches/:id/ledgers`: the members newest first,
/// through the primary key (batch_id, ledger_id) or, filtered, through
/// `batch_members_bucket` (batch_id, bucket, ledger_id) — a page reads a page, however many
/// members the batch has and however few are in the bucket asked for.
pub(crate) fn members_sql<D: Dialect>(
    batch: BatchId,
    filter: Option<MemberFilter>,
    before: Option<LedgerId>,
    limit: u32,
) -> (String, super::Args) {
    let mut binds = args![
        batch.as_i64(),
        before.map_or(i64::MAX, LedgerId::as_i64),
        i64::from(limit)
    ];
    let bucket = match filter {
        None => String::new(),
        Some(filter) => {
            binds.push(
                match filter {
                    MemberFilter::Existing => "EXISTING",
                    MemberFilter::Status(s) => s.as_str(),
                }
                .into(),
            );
            " AND m.bucket = $4".to_owned()
        }
    };
    // `deleted_at` is left out of the index choice (SQLite would read the identity index,
    // partial on it, and sort).
    let sql = format!(
        "SELECT {LEDGER_COLUMNS}, m.existing FROM batch_members m \
         JOIN ledgers l ON l.id = m.ledger_id \
         LEFT JOIN ledger_files f ON f.ledger_id = l.id \
         AND f.version = (SELECT MAX(version) FROM ledger_files WHERE ledger_id = l.id) \
         WHERE m.batch_id = $1{bucket} AND m.ledger_id < $2 AND {}l.deleted_at IS NULL \
         ORDER BY m.ledger_id DESC LIMIT $3",
        D::UNINDEXED
    );
    (sql, binds)
}

impl<D: Dialect> SqlStore<D> {
    async fn insert_batch_row(
        &self,
        new: &NewBatch,
        key: Option<&BatchKey>,
    ) -> Result<BatchInsert, StoreError> {
        let _gate = self.write_gate().await;
        let mut tx = self.pool.begin().await?;
        if let Some(key) = key {
            // A live key: replay. An expired one is replaced by the upsert below; a
            // concurrent insert of the same key is waited for, and its record read after.
            let stored = D::Db::execute(
                &mut *tx,
                "INSERT INTO batch_idempotency_keys (subject, key, request_hash, batch_id, \
                 created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (subject, key) DO UPDATE \
                 SET request_hash = excluded.request_hash, batch_id = excluded.batch_id, \
                 created_at = excluded.created_at \
                 WHERE batch_idempotency_keys.created_at <= $6",
                args![
                    key.subject.as_str(),
                    key.key.as_str(),
                    key.request_hash.as_str(),
                    new.id.as_i64(),
                    new.created_at,
                    idempotency_cutoff(new.created_at)
                ],
            )
            .await?;
            if stored == 0 {
                let found: Vec<(String, i64)> = D::Db::fetch_all(
                    &mut *tx,
                    "SELECT request_hash, batch_id FROM batch_idempotency_keys \
                     WHERE subject = $1 AND key = $2",
                    args![key.subject.as_str(), key.key.as_str()],
                )
                .await?;
                let Some((request_hash, batch_id)) = found.into_iter().next() else {
                    return Err(StoreError::Corrupt(
                        "an idempotency key vanished while it was read".into(),
                    ));
                };
                let batch = fetch_batch::<D>(&mut *tx, batch_id).await?.ok_or_else(|| {
                    StoreError::Corrupt(format!("idempotency key of a missing batch {batch_id}"))
                })?;
                tx.commit().await?;
                return Ok(BatchInsert::Replay {
                    request_hash,
                    batch: Batch::try_from(batch)?,
                });
            }
        }
        D::Db::execute(
            &mut *tx,
            "INSERT INTO batches (id, created_by, merchants, type, period, formats, timezone, \
             expanding, status, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, TRUE, 'RUNNING', $8, $8)",
            args![
                new.id.as_i64(),
                new.created_by.as_str(),
                new.merchants.to_stored(),
                new.ledger_type.as_str(),
                new.period.to_string(),
                formats_to_stored(&new.formats),
                Arg::OptText(new.timezone.map(|t| t.name().to_owned())),
                new.created_at
            ],
        )
        .await?;
        let row = fetch_batch::<D>(&mut *tx, new.id.as_i64())
            .await?
            .ok_or_else(|| StoreError::Corrupt("an inserted batch came back empty".into()))?;
        tx.commit().await?;
        Ok(BatchInsert::Created(Batch::try_from(row)?))
    }

    /// One statement (one snapshot): the members by bucket and when each last changed,
    /// from `batch_members_bucket` alone; and the statuses of the EXISTING members — the
    /// only ones whose bucket does not say whether they are still open — through the same
    /// index and their ledgers.
    async fn tally(&self, id: BatchId) -> Result<Tally, StoreError> {
        let rows: Vec<(bool, String, i64, i64)> = self
            .fetch_all(
                "SELECT bucket = 'EXISTING', bucket, COUNT(*), MAX(changed_at) \
                 FROM batch_members WHERE batch_id = $1 AND bucket <> 'EXISTING' \
                 GROUP BY bucket \
                 UNION ALL \
                 SELECT m.bucket = 'EXISTING', l.status, COUNT(*), MAX(m.changed_at) \
                 FROM batch_members m JOIN ledgers l ON l.id = m.ledger_id \
                 WHERE m.batch_id = $1 AND m.bucket = 'EXISTING' GROUP BY m.bucket, l.status",
                args![id.as_i64()],
            )
            .await?;
        let mut tally = Tally::default();
        for (existing, status, n, last) in rows {
            let status = Status::parse(&status)
                .ok_or_else(|| StoreError::Corrupt(format!("status {status:?}")))?;
            tally.add(existing, status, u64::try_from(n).unwrap_or(0));
            if let Some(at) = Utc.timestamp_millis_opt(last).single() {
                tally.changed_at(at);
            }
        }
        Ok(tally)
    }

    async fn members(
        &self,
        id: BatchId,
        filter: Option<MemberFilter>,
        before: Option<LedgerId>,
        limit: u32,
    ) -> Result<Vec<Member>, StoreError> {
        let (sql, binds) = members_sql::<D>(id, filter, before, limit);
        let rows: Vec<MemberRow> = self.fetch_all(&sql, binds).await?;
        rows.into_iter()
            .map(|row| {
                Ok(Member {
                    existing: row.existing,
                    ledger: Ledger::try_from(row.ledger)?,
                })
            })
            .collect()
    }

    async fn take_expansion(
        &self,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<Expansion>, StoreError> {
        let gate = self.write_gate().await;
        let taken: Vec<(i64,)> = self
            .fetch_all(
                "UPDATE batches SET expand_holder = $1, expand_until = $2, \
                 pass_to = CASE WHEN schedule_id IS NULL THEN NULL \
                 ELSE COALESCE(pass_to, $3) END, \
                 pass_at = CASE WHEN pass_to IS NULL THEN NULL ELSE pass_at END \
                 WHERE id = (SELECT b.id FROM batches b WHERE b.expanding = TRUE \
                 AND (b.expand_until IS NULL OR b.expand_until < $3) \
                 AND (b.pass_at IS NULL OR b.pass_at <= $3 OR b.pass_to IS NOT NULL) \
                 AND (b.schedule_id IS NULL OR EXISTS (SELECT 1 FROM schedules s \
                 WHERE s.id = b.schedule_id AND s.paused = FALSE AND s.deleted_at IS NULL)) \
                 ORDER BY b.id LIMIT 1) \
                 AND expanding = TRUE AND (expand_until IS NULL OR expand_until < $3) \
                 RETURNING id",
                args![holder, until, now],
            )
            .await?;
        drop(gate);
        let Some((id,)) = taken.into_iter().next() else {
            return Ok(None);
        };
        let Some(row) = fetch_batch::<D>(&mut *self.conn().await?, id).await? else {
            return Ok(None);
        };
        let cursor = row.expand_cursor.clone();
        Ok(Some(Expansion {
            batch: Batch::try_from(row)?,
            cursor,
        }))
    }

    async fn expand(&self, step: &ExpandStep<'_>) -> Result<Option<Vec<Ledger>>, StoreError> {
        let _gate = self.write_gate().await;
        let mut tx = self.pool.begin().await?;
        let held = D::Db::execute(
            &mut *tx,
            "UPDATE batches SET expand_cursor = $1, expanding = $2, \
             expand_until = CASE WHEN $9 THEN NULL ELSE $3 END, \
             skipped = skipped + $4, updated_at = $5, skipped_ids = $8, \
             pass_from = CASE WHEN $9 THEN pass_to ELSE pass_from END, \
             pass_to = CASE WHEN $9 THEN NULL ELSE pass_to END, pass_at = $10 \
             WHERE id = $6 AND expand_holder = $7 AND expanding = TRUE",
            vec![
                Arg::OptText(if step.done {
                    None
                } else {
                    step.cursor.map(str::to_owned)
                }),
                Arg::Bool(!step.done || step.next_pass_at.is_some()),
                step.lease_until.into(),
                Arg::Int(i64::try_from(step.skipped).unwrap_or(i64::MAX)),
                step.now.into(),
                Arg::Int(step.batch.as_i64()),
                Arg::Text(step.holder.to_owned()),
                Arg::OptText((!step.skipped_ids.is_empty()).then(|| {
                    crate::domain::Selection::Only(step.skipped_ids.to_vec()).to_stored()
                })),
                Arg::Bool(step.done),
                Arg::OptInt(step.next_pass_at.map(|t| t.timestamp_millis())),
            ],
        )
        .await?;
        if held == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        let mut created = Vec::new();
        let mut members: Vec<(i64, bool)> = Vec::with_capacity(step.ledgers.len());
        let mut todo: Vec<NewLedger> = step.ledgers.to_vec();
        for _ in 0..ID_ATTEMPTS {
            if todo.is_empty() {
                break;
            }
            let group: Vec<(&NewLedger, Option<&crate::store::IdempotencyRecord>)> =
                todo.iter().map(|n| (n, None)).collect();
            // Statements of at most INSERT_GROUP rows: engines cap a statement's parameters
            // (SQLite 32,766, PostgreSQL 65,535), and a chunk may be a long page.
            let mut results = Vec::with_capacity(group.len());
            for part in group.chunks(INSERT_GROUP) {
                results.extend(insert_many::<D>(&mut *tx, part).await?);
            }
            let mut again = Vec::new();
            for (new, result) in todo.iter().zip(results) {
                let undone = match result {
                    Ok(ledger) => {
                        members.push((ledger.id.as_i64(), false));
                        created.push(ledger);
                        continue;
                    }
                    Err(undone) => undone,
                };
                let failed = match undone {
                    Undone::Failed(e) => return Err(e),
                    other => other,
                };
                match explain::<D>(&mut *tx, new, None, failed).await?? {
                    InsertOutcome::Exists(id) => members.push((id.as_i64(), true)),
                    InsertOutcome::IdTaken => again.push(NewLedger {
                        id: (step.fresh_id)(),
                        ..new.clone()
                    }),
                    InsertOutcome::Created(ledger) => {
                        members.push((ledger.id.as_i64(), false));
                        created.push(ledger);
                    }
                    InsertOutcome::Replay(_) => {
                        return Err(StoreError::Corrupt(
                            "a batch member replayed an idempotency key it has none of".into(),
                        ));
                    }
                }
            }
            todo = again;
        }
        if !todo.is_empty() {
            return Err(StoreError::Unavailable(
                "could not allocate unique ledger ids for a batch".into(),
            ));
        }
        if step.finalize_drafts {
            // A schedule's run makes the closed period FINAL: a COMPLETED DRAFT made before
            // the close gets a new version now, as a regenerate would give it.
            let existing: Vec<i64> = members
                .iter()
                .filter(|(_, existing)| *existing)
                .map(|(id, _)| *id)
                .collect();
            for chunk in existing.chunks(300) {
                let mut values = args![step.now];
                let marks: Vec<String> = chunk
                    .iter()
                    .map(|id| {
                        values.push(Arg::Int(*id));
                        format!("${}", values.len())
                    })
                    .collect();
                let sql = format!(
                    "UPDATE ledgers SET status = 'PENDING', version = version + 1, \
                     lease_until = NULL, stall_count = 0, enqueued_at = $1, updated_at = $1 \
                     WHERE id IN ({}) AND status = 'COMPLETED' AND stage = 'DRAFT' \
                     AND deleted_at IS NULL RETURNING id",
                    marks.join(", ")
                );
                let mut renewed: Vec<(i64,)> =
                    D::Db::fetch_all_once(&mut *tx, &sql, values).await?;
                renewed.sort_unstable();
                if !renewed.is_empty() {
                    // As a regenerate does: other batches holding these ledgers run again.
                    let mut values = args![step.now, step.batch.as_i64()];
                    let marks: Vec<String> = renewed
                        .iter()
                        .map(|(id,)| {
                            values.push(Arg::Int(*id));
                            format!("${}", values.len())
                        })
                        .collect();
                    let sql = format!(
                        "UPDATE batches SET status = 'RUNNING', finished_at = NULL, \
                         updated_at = $1, progress_seq = progress_seq + 1 \
                         WHERE id <> $2 AND id IN (SELECT batch_id FROM batch_members \
                         WHERE ledger_id IN ({}))",
                        marks.join(", ")
                    );
                    D::Db::execute(&mut *tx, &sql, values).await?;
                }
                for (id,) in renewed {
                    if let Some(ledger) = fetch_ledger::<D>(&mut *tx, id).await? {
                        created.push(ledger);
                    }
                }
            }
        }
        let mut added = 0;
        for chunk in members.chunks(300) {
            // A member's bucket (EXISTING, or its ledger's status) and when that last
            // changed, as of this transaction; the trigger of migration 0012 keeps both
            // from then on.
            let mut sql = "INSERT INTO batch_members \
                 (batch_id, ledger_id, existing, bucket, changed_at) VALUES "
                .to_owned();
            let mut values = args![step.batch.as_i64()];
            for (i, (ledger, existing)) in chunk.iter().enumerate() {
                let n = values.len();
                sql.push_str(if i == 0 { "" } else { ", " });
                sql.push_str(&format!(
                    "($1, ${l}, ${e}, CASE WHEN ${e} THEN 'EXISTING' \
                     ELSE (SELECT status FROM ledgers WHERE id = ${l}) END, \
                     (SELECT updated_at FROM ledgers WHERE id = ${l}))",
                    l = n + 1,
                    e = n + 2
                ));
                values.push(Arg::Int(*ledger));
                values.push(Arg::Bool(*existing));
            }
            sql.push_str(" ON CONFLICT DO NOTHING");
            added += D::Db::execute(&mut *tx, &sql, values).await?;
        }
        D::Db::execute(
            &mut *tx,
            "UPDATE batches SET total = total + $1 WHERE id = $2",
            args![
                i64::try_from(added).unwrap_or(i64::MAX),
                step.batch.as_i64()
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(Some(created))
    }

    async fn running(
        &self,
        after: Option<BatchId>,
        limit: u32,
    ) -> Result<Vec<Published>, StoreError> {
        let rows: Vec<BatchRow> = self
            .fetch_all(
                &format!(
                    "SELECT {BATCH_COLUMNS} FROM batches b WHERE b.status = 'RUNNING' \
                     AND b.id > $1 ORDER BY b.id LIMIT $2"
                ),
                args![after.map_or(0, BatchId::as_i64), i64::from(limit)],
            )
            .await?;
        rows.into_iter()
            .map(|row| {
                let (total, seq) = (row.total, row.progress_seq);
                Ok(Published {
                    batch: Batch::try_from(row)?,
                    total: u64::try_from(total).unwrap_or(0),
                    seq,
                })
            })
            .collect()
    }
}

/// Each method is one statement or one transaction above.
#[async_trait]
impl<D: Dialect> BatchStore for SqlStore<D> {
    async fn insert_batch(
        &self,
        new: &NewBatch,
        key: Option<&BatchKey>,
    ) -> Result<BatchInsert, StoreError> {
        self.insert_batch_row(new, key).await
    }

    async fn get_batch(&self, id: BatchId) -> Result<Option<Batch>, StoreError> {
        fetch_batch::<D>(&mut *self.conn().await?, id.as_i64())
            .await?
            .map(Batch::try_from)
            .transpose()
    }

    async fn tally_batch(&self, id: BatchId) -> Result<Tally, StoreError> {
        self.tally(id).await
    }

    async fn list_batches(
        &self,
        created_by: Option<&str>,
        before: Option<BatchId>,
        limit: u32,
    ) -> Result<Vec<Batch>, StoreError> {
        let rows: Vec<BatchRow> = self
            .fetch_all(
                &format!(
                    "SELECT {BATCH_COLUMNS} FROM batches b \
                     WHERE ($1 IS NULL OR b.created_by = $1) AND b.id < $2 \
                     ORDER BY b.id DESC LIMIT $3"
                ),
                args![
                    Arg::OptText(created_by.map(str::to_owned)),
                    before.map_or(i64::MAX, BatchId::as_i64),
                    i64::from(limit)
                ],
            )
            .await?;
        rows.into_iter().map(Batch::try_from).collect()
    }

    async fn batch_members(
        &self,
        id: BatchId,
        filter: Option<MemberFilter>,
        before: Option<LedgerId>,
        limit: u32,
    ) -> Result<Vec<Member>, StoreError> {
        self.members(id, filter, before, limit).await
    }

    async fn claim_expansion(
        &self,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<Expansion>, StoreError> {
        self.take_expansion(holder, now, until).await
    }

    async fn expand_batch(&self, step: &ExpandStep<'_>) -> Result<Option<Vec<Ledger>>, StoreError> {
        self.expand(step).await
    }

    async fn release_expansion(
        &self,
        id: BatchId,
        holder: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        // The lease ends just before `at`: a claim takes a lease that ended before its now.
        self.execute(
            "UPDATE batches SET expand_until = $3 WHERE id = $1 AND expand_holder = $2",
            args![id.as_i64(), holder, at - chrono::Duration::milliseconds(1)],
        )
        .await?;
        Ok(())
    }

    async fn running_batches(
        &self,
        after: Option<BatchId>,
        limit: u32,
    ) -> Result<Vec<Published>, StoreError> {
        self.running(after, limit).await
    }

    async fn record_batch_progress(
        &self,
        id: BatchId,
        seq: i64,
        status: BatchStatus,
        counts: &BatchCounts,
        finished_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let n = |v: u64| Arg::Int(i64::try_from(v).unwrap_or(i64::MAX));
        let finished = match status {
            BatchStatus::Running => None,
            _ => Some(finished_at.unwrap_or(now)),
        };
        let sql = "UPDATE batches SET status = $1, n_pending = $2, n_processing = $3, \
                   n_completed = $4, n_rejected = $5, n_existing = $6, \
                   progress_seq = progress_seq + 1, updated_at = $7, finished_at = $10 \
                   WHERE id = $8 AND progress_seq = $9";
        let binds = vec![
            Arg::Text(status.as_str().to_owned()),
            n(counts.pending),
            n(counts.processing),
            n(counts.completed),
            n(counts.rejected),
            n(counts.existing),
            Arg::Int(now.timestamp_millis()),
            Arg::Int(id.as_i64()),
            Arg::Int(seq),
            Arg::OptInt(finished.map(|t| t.timestamp_millis())),
        ];
        if status == BatchStatus::Running {
            // Progress only: a power loss may take it, the next round publishes it again.
            return Ok(self.execute_relaxed(sql, binds).await? == 1);
        }
        // The batch finished: its batch.completed is recorded with it, durably.
        let _gate = self.write_gate().await;
        let mut tx = self.pool.begin().await?;
        if D::Db::execute(&mut tx, sql, binds).await? != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        let batch = fetch_batch::<D>(&mut tx, id.as_i64())
            .await?
            .map(Batch::try_from)
            .transpose()?
            .ok_or_else(|| StoreError::Corrupt(format!("batch {id} vanished")))?;
        super::webhooks::announce::<D>(
            &mut tx,
            crate::domain::EventType::BatchCompleted,
            super::webhooks::Subject::Batch(&batch),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn reopen_batches(&self, ledger: LedgerId, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.execute(
            "UPDATE batches SET status = 'RUNNING', finished_at = NULL, updated_at = $2, \
             progress_seq = progress_seq + 1 \
             WHERE id IN (SELECT batch_id FROM batch_members WHERE ledger_id = $1)",
            args![ledger.as_i64(), now],
        )
        .await?;
        Ok(())
    }
}
