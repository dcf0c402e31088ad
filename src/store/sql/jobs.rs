//! The worker's side of a job: claim, lease, phases, completion, failure, release, the
//! in-database queue's read and the recovery sweep. Every status change is one conditional
//! update whose status guard and new status come from the transition table
//! ([`transition`]), and whose attempt number fences off a worker that lost its lease.

use chrono::{DateTime, Utc};

use super::webhooks::{Subject, announce};
use super::{Dialect, Driver, SqlStore, args, fetch_ledger, transition};
use crate::domain::{Action, EventType, FailureReason, Ledger, LedgerId, Stage, Timezone};
use crate::store::{CompletedFile, PhaseRecord, StoreError, SweepOutcome};

impl<D: Dialect> SqlStore<D> {
    /// [`crate::store::JobStore::reject_pending`].
    pub(super) async fn reject_unqueued(
        &self,
        id: LedgerId,
        reason: &FailureReason,
    ) -> Result<Option<Ledger>, StoreError> {
        let t = transition(Action::EnqueueFailed);
        self.update_one_announcing(
            &format!(
                "{}, failure_code = $1, failure_message = $2, failure_retryable = $3, \
                 failure_at = $4, updated_at = $4",
                t.set
            ),
            &format!("id = $5 AND {}", t.guard),
            args![
                reason.error_code.as_str(),
                reason.message.as_str(),
                reason.retryable,
                reason.at,
                id.as_i64(),
            ],
            (EventType::LedgerRejected, reason.at),
        )
        .await
    }

    /// [`crate::store::JobStore::claim`]. A second claimer waits for the first one's row
    /// lock (PostgreSQL) or the write lock (SQLite), then finds the guard false.
    pub(super) async fn claim_job(
        &self,
        id: LedgerId,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<Ledger>, StoreError> {
        let t = transition(Action::Claim);
        let claimed = self
            .update_ledgers(
                self.relaxed(),
                &format!(
                    "{}, attempt_count = attempt_count + 1, lease_until = $1, started_at = $2, \
                     updated_at = $2",
                    t.set
                ),
                &format!("id = $3 AND {} AND deleted_at IS NULL", t.guard),
                args![lease_until, now, id.as_i64()],
                false,
            )
            .await?;
        Ok(claimed.into_iter().next())
    }

    /// [`crate::store::JobStore::renew_lease`].
    pub(super) async fn extend_lease(
        &self,
        id: LedgerId,
        attempt: u32,
        lease_until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE ledgers SET lease_until = $1 WHERE id = $2 AND {} AND attempt_count = $3",
            transition(Action::Renew).guard
        );
        let renewed = self
            .execute_relaxed(&sql, args![lease_until, id.as_i64(), i64::from(attempt)])
            .await?;
        Ok(renewed == 1)
    }

    /// [`crate::store::JobStore::record_phases`].
    pub(super) async fn phases(
        &self,
        id: LedgerId,
        attempt: u32,
        phases: &[PhaseRecord],
    ) -> Result<bool, StoreError> {
        if phases.is_empty() {
            return Ok(true);
        }
        let (sql, binds) = insert_phases(
            id,
            attempt,
            phases,
            &format!(
                " WHERE EXISTS (SELECT 1 FROM ledgers WHERE id = $1 AND {} \
                 AND attempt_count = $2)",
                transition(Action::Renew).guard
            ),
        );
        Ok(self.execute_relaxed(&sql, binds).await? == phases.len() as u64)
    }

    /// [`crate::store::JobStore::complete`]: the file and the status in one transaction.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn complete_job(
        &self,
        id: LedgerId,
        attempt: u32,
        file: &CompletedFile,
        stage: Stage,
        timezone: Timezone,
        now: DateTime<Utc>,
        phases: &[PhaseRecord],
    ) -> Result<Option<Ledger>, StoreError> {
        let t = transition(Action::Complete);
        let _gate = self.write_gate().await;
        let mut tx = self.pool.begin().await?;
        // A shred of the file's merchant key either committed before (the insert below finds
        // the key shredded: the completion is refused, as the file can never be read, and
        // the attempt seals again under the merchant's next key) or waits for this
        // transaction and then marks the file.
        super::keys::order_against_shred::<D>(&mut tx, &file.key_id).await?;
        // The fenced file insert comes first among the writes; in PostgreSQL it reads
        // without locking the ledger, and the conditional UPDATE below takes the row lock
        // and re-checks the attempt, so a lost lease still rolls the file back.
        // No ON CONFLICT: a version's file is never rewritten, a second one is an error.
        let inserted = D::Db::execute(
            &mut tx,
            &format!(
                "INSERT INTO ledger_files (ledger_id, version, content_type, size_bytes, \
                 sha256, file_name, object_key, attempt, created_at, header_sha256, manifest, \
                 key_id) \
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, k.key_id \
                 FROM merchant_keys k WHERE k.key_id = $12 AND k.shredded_at IS NULL \
                 AND EXISTS (SELECT 1 FROM ledgers \
                 WHERE id = $1 AND {} AND attempt_count = $8 AND version = $2)",
                t.guard
            ),
            args![
                id.as_i64(),
                i64::from(file.info.version),
                file.info.content_type.as_str(),
                i64::try_from(file.info.size_bytes).unwrap_or(i64::MAX),
                file.info.sha256.as_str(),
                file.info.file_name.as_str(),
                file.object_key.as_str(),
                i64::from(attempt),
                now,
                file.header_sha256.as_str(),
                file.manifest.as_str(),
                file.key_id.as_str(),
            ],
        )
        .await?;
        if inserted == 0 {
            // Refused: the attempt lost its lease — or its merchant key was shredded — or the
            // file names a merchant key that is not stored, a broken invariant, said as such.
            let key: Vec<(i64,)> = D::Db::fetch_all(
                &mut tx,
                "SELECT CAST(CASE WHEN shredded_at IS NULL THEN 0 ELSE 1 END AS BIGINT) \
                 FROM merchant_keys WHERE key_id = $1",
                args![file.key_id.as_str()],
            )
            .await?;
            tx.rollback().await?;
            return match key.first() {
                None => Err(StoreError::Corrupt(format!(
                    "ledger {id}: its file is sealed by merchant key {}, which is not stored",
                    file.key_id
                ))),
                Some((1,)) => Err(StoreError::KeyShredded {
                    key_id: file.key_id.clone(),
                }),
                Some(_) => Ok(None),
            };
        }
        // The phases the attempt has not recorded yet go on the timeline before the
        // COMPLETED the status change adds; the UPDATE below fences them with the file.
        if !phases.is_empty() {
            let (sql, binds) = insert_phases(id, attempt, phases, "");
            D::Db::execute(&mut tx, &sql, binds).await?;
        }
        let updated = D::Db::execute(
            &mut tx,
            &format!(
                "UPDATE ledgers SET {}, stage = $1, timezone = $2, lease_until = NULL, \
                 completed_at = $3, updated_at = $3 \
                 WHERE id = $4 AND {} AND attempt_count = $5",
                t.set, t.guard
            ),
            args![
                stage.as_str(),
                timezone.name(),
                now,
                id.as_i64(),
                i64::from(attempt),
            ],
        )
        .await?;
        if updated == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        // Read inside the transaction, which still holds the lock: exactly what the
        // completion wrote.
        let done = fetch_ledger::<D>(&mut tx, id.as_i64()).await?;
        if let Some(l) = &done {
            announce::<D>(&mut tx, EventType::LedgerCompleted, Subject::Ledger(l), now).await?;
        }
        tx.commit().await?;
        Ok(done)
    }

    /// [`crate::store::JobStore::fail`].
    pub(super) async fn fail_job(
        &self,
        id: LedgerId,
        attempt: u32,
        reason: &FailureReason,
    ) -> Result<Option<Ledger>, StoreError> {
        let t = transition(Action::Fail);
        self.update_one_announcing(
            &format!(
                "{}, failure_code = $1, failure_message = $2, failure_retryable = $3, \
                 failure_at = $4, lease_until = NULL, updated_at = $4",
                t.set
            ),
            &format!("id = $5 AND {} AND attempt_count = $6", t.guard),
            args![
                reason.error_code.as_str(),
                reason.message.as_str(),
                reason.retryable,
                reason.at,
                id.as_i64(),
                i64::from(attempt),
            ],
            (EventType::LedgerRejected, reason.at),
        )
        .await
    }

    /// [`crate::store::JobStore::release`].
    pub(super) async fn release_job(
        &self,
        id: LedgerId,
        attempt: u32,
        now: DateTime<Utc>,
    ) -> Result<Option<Ledger>, StoreError> {
        let t = transition(Action::Release);
        self.update_one(
            &format!("{}, lease_until = NULL, updated_at = $1", t.set),
            &format!("id = $2 AND {} AND attempt_count = $3", t.guard),
            args![now, id.as_i64(), i64::from(attempt)],
        )
        .await
    }

    /// [`crate::store::JobStore::pending_ids`]: the oldest jobs a worker may claim.
    pub(super) async fn claimable(&self, limit: u32) -> Result<Vec<LedgerId>, StoreError> {
        let sql = format!(
            "SELECT id FROM ledgers WHERE {} AND deleted_at IS NULL ORDER BY id LIMIT $1",
            transition(Action::Claim).guard
        );
        let rows: Vec<(i64,)> = self.fetch_all(&sql, args![i64::from(limit)]).await?;
        Ok(rows
            .into_iter()
            .map(|(id,)| LedgerId::from_i64(id))
            .collect())
    }

    /// [`crate::store::JobStore::sweep`]. Each step is one conditional bulk update, so
    /// concurrent sweepers split the rows and never reset one twice.
    pub(super) async fn sweep_jobs(
        &self,
        now: DateTime<Utc>,
        pending_before: DateTime<Utc>,
        max_attempts: u32,
    ) -> Result<SweepOutcome, StoreError> {
        let max = i64::from(max_attempts);
        let abandon = transition(Action::Abandon);
        let abandoned = self
            .update_announcing(
                &self.pool,
                &format!(
                    "{}, stall_count = stall_count + 1, \
                     failure_code = 'JOB_EXECUTION_FAILED', \
                     failure_message = 'the job stalled ' || (stall_count + 1) || \
                     ' time(s): no worker finished it within its lease', \
                     failure_retryable = TRUE, failure_at = $1, lease_until = NULL, \
                     updated_at = $1",
                    abandon.set
                ),
                &format!(
                    "{} AND lease_until < $1 AND stall_count + 1 >= $2",
                    abandon.guard
                ),
                args![now, max],
                true,
                Some((EventType::LedgerRejected, now)),
            )
            .await?;
        // The stall bound keeps the two steps disjoint even when a row changed between them:
        // a job due for abandoning is never requeued instead.
        let requeue = transition(Action::Requeue);
        let requeued = self
            .update_ledgers(
                &self.pool,
                &format!(
                    "{}, stall_count = stall_count + 1, lease_until = NULL, \
                     enqueued_at = $1, updated_at = $1",
                    requeue.set
                ),
                &format!(
                    "{} AND lease_until < $1 AND stall_count + 1 < $2",
                    requeue.guard
                ),
                args![now, max],
                true,
            )
            .await?;
        // Moving enqueued_at makes the re-enqueue happen once per timeout, by one sweeper.
        let unclaimed = self
            .update_ledgers(
                &self.pool,
                "enqueued_at = $1",
                &format!(
                    "{} AND deleted_at IS NULL AND enqueued_at < $2",
                    transition(Action::Redeliver).guard
                ),
                args![now, pending_before],
                true,
            )
            .await?;
        Ok(SweepOutcome {
            requeued,
            unclaimed,
            abandoned,
        })
    }
}

/// `INSERT` of `phases` on `id`'s timeline for `attempt`, in order, with `condition`
/// (a `WHERE` of `$1` the id and `$2` the attempt, or empty) deciding whether any goes in.
fn insert_phases(
    id: LedgerId,
    attempt: u32,
    phases: &[PhaseRecord],
    condition: &str,
) -> (String, super::Args) {
    let mut binds = args![id.as_i64(), i64::from(attempt)];
    let mut rows = Vec::with_capacity(phases.len());
    for (i, p) in phases.iter().enumerate() {
        let n = binds.len();
        rows.push(format!("(${}, ${}, ${}, ${})", n + 1, n + 2, n + 3, n + 4));
        binds.extend(args![i as i64, p.at, p.phase]);
        binds.push(super::Arg::OptText(p.detail.clone()));
    }
    // VALUES names its columns column1… in both engines; column1 keeps the given order.
    let sql = format!(
        "INSERT INTO ledger_events (ledger_id, at, attempt, phase, detail) \
         SELECT $1, v.column2, $2, v.column3, v.column4 FROM (VALUES {}) v{condition} \
         ORDER BY v.column1",
        rows.join(", ")
    );
    (sql, binds)
}
