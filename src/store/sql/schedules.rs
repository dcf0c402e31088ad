//! Schedules in SQL: their rows, and the opening of a run — its batch, its row and the
//! schedule's next period in one transaction, conditional on the period it moves from.

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};

use super::{Arg, Dialect, Driver, SqlStore, args};
use crate::domain::batch::formats_to_stored;
use crate::domain::{BatchId, BatchStatus, Period, Schedule, Selection, Timezone};
use crate::store::StoreError;
use crate::store::rows::{SCHEDULE_COLUMNS, ScheduleRow};
use crate::store::schedules::{OpenRun, RunRecord, ScheduleStore};

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl<D: Dialect> SqlStore<D> {
    async fn schedules_where(
        &self,
        filter: &str,
        args: super::Args,
    ) -> Result<Vec<Schedule>, StoreError> {
        let rows: Vec<ScheduleRow> = self
            .fetch_all(
                &format!("SELECT {SCHEDULE_COLUMNS} FROM schedules s WHERE {filter}"),
                args,
            )
            .await?;
        rows.into_iter().map(Schedule::try_from).collect()
    }
}

#[async_trait]
impl<D: Dialect> ScheduleStore for SqlStore<D> {
    async fn insert_schedule(&self, s: &Schedule) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO schedules (id, created_by, merchants, type, formats, cadence, delay_ms, \
             from_period, paused, next_period, zones, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL, $11, $11)",
            vec![
                Arg::Int(s.id),
                Arg::Text(s.created_by.clone()),
                Arg::Text(s.merchants.to_stored()),
                Arg::Text(s.ledger_type.as_str().to_owned()),
                Arg::Text(formats_to_stored(&s.formats)),
                Arg::Text(s.cadence.as_str().to_owned()),
                Arg::Int(millis(s.delay)),
                Arg::OptText(s.from.map(|p| p.to_string())),
                Arg::Bool(s.paused),
                Arg::Text(s.next_period.to_string()),
                s.created_at.into(),
            ],
        )
        .await?;
        Ok(())
    }

    async fn get_schedule(&self, id: i64) -> Result<Option<Schedule>, StoreError> {
        Ok(self
            .schedules_where("s.id = $1", args![id])
            .await?
            .into_iter()
            .next())
    }

    async fn list_schedules(
        &self,
        created_by: Option<&str>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Schedule>, StoreError> {
        self.schedules_where(
            "s.deleted_at IS NULL AND ($1 IS NULL OR s.created_by = $1) AND s.id < $2 \
             ORDER BY s.id DESC LIMIT $3",
            vec![
                Arg::OptText(created_by.map(str::to_owned)),
                Arg::Int(before.unwrap_or(i64::MAX)),
                Arg::Int(i64::from(limit)),
            ],
        )
        .await
    }

    async fn set_schedule_paused(
        &self,
        id: i64,
        paused: bool,
        now: DateTime<Utc>,
    ) -> Result<Option<Schedule>, StoreError> {
        self.execute(
            "UPDATE schedules SET paused = $1, updated_at = $2 \
             WHERE id = $3 AND deleted_at IS NULL",
            args![paused, now, id],
        )
        .await?;
        Ok(self
            .schedules_where("s.id = $1 AND s.deleted_at IS NULL", args![id])
            .await?
            .into_iter()
            .next())
    }

    async fn delete_schedule(&self, id: i64, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let _gate = self.write_gate().await;
        let mut tx = self.pool.begin().await?;
        let n = D::Db::execute(
            &mut *tx,
            "UPDATE schedules SET deleted_at = $1, updated_at = $1 \
             WHERE id = $2 AND deleted_at IS NULL",
            args![now, id],
        )
        .await?;
        // Its open runs add no more members: each ends with the ledgers it has (a holder's
        // next chunk finds the expansion over and writes nothing).
        D::Db::execute(
            &mut *tx,
            "UPDATE batches SET expanding = FALSE, expand_cursor = NULL, pass_to = NULL, \
             pass_at = NULL, updated_at = $1 WHERE schedule_id = $2 AND expanding = TRUE",
            args![now, id],
        )
        .await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn active_schedules(
        &self,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Schedule>, StoreError> {
        self.schedules_where(
            "s.deleted_at IS NULL AND s.paused = FALSE AND s.id > $1 ORDER BY s.id LIMIT $2",
            args![after.unwrap_or(0), i64::from(limit)],
        )
        .await
    }

    async fn open_run(&self, run: &OpenRun) -> Result<bool, StoreError> {
        let _gate = self.write_gate().await;
        let mut tx = self.pool.begin().await?;
        let moved = D::Db::execute(
            &mut *tx,
            "UPDATE schedules SET next_period = $1, updated_at = $2 \
             WHERE id = $3 AND next_period = $4 AND deleted_at IS NULL",
            args![
                run.next_period.to_string(),
                run.batch.created_at,
                run.schedule_id,
                run.batch.period.to_string()
            ],
        )
        .await?;
        if moved == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        let b = &run.batch;
        D::Db::execute(
            &mut *tx,
            "INSERT INTO batches (id, created_by, merchants, type, period, formats, timezone, \
             expanding, status, created_at, updated_at, schedule_id, delay_ms, pass_at) \
             VALUES ($1, $2, $3, $4, $5, $6, NULL, TRUE, 'RUNNING', $7, $7, $8, $9, $10)",
            args![
                b.id.as_i64(),
                b.created_by.as_str(),
                b.merchants.to_stored(),
                b.ledger_type.as_str(),
                b.period.to_string(),
                formats_to_stored(&b.formats),
                b.created_at,
                run.schedule_id,
                millis(run.delay),
                run.pass_at
            ],
        )
        .await?;
        D::Db::execute(
            &mut *tx,
            "INSERT INTO schedule_runs (schedule_id, period, batch_id, started_at) \
             VALUES ($1, $2, $3, $4)",
            args![
                run.schedule_id,
                b.period.to_string(),
                b.id.as_i64(),
                b.created_at
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn schedule_runs(&self, id: i64, limit: u32) -> Result<Vec<RunRecord>, StoreError> {
        let rows: Vec<(String, i64, String, i64, i64, Option<String>)> = self
            .fetch_all(
                "SELECT r.period, r.batch_id, b.status, r.started_at, b.skipped, b.skipped_ids \
                 FROM schedule_runs r \
                 JOIN batches b ON b.id = r.batch_id WHERE r.schedule_id = $1 \
                 ORDER BY r.started_at DESC, r.batch_id DESC LIMIT $2",
                args![id, i64::from(limit)],
            )
            .await?;
        rows.into_iter()
            .map(|(period, batch, status, started, skipped, skipped_ids)| {
                Ok(RunRecord {
                    period: Period::parse(&period)
                        .map_err(|_| StoreError::Corrupt(format!("run period {period:?}")))?,
                    batch_id: BatchId::from_i64(batch),
                    status: status
                        .parse::<BatchStatus>()
                        .map_err(|_| StoreError::Corrupt(format!("batch status {status:?}")))?,
                    started_at: Utc.timestamp_millis_opt(started).single().ok_or_else(|| {
                        StoreError::Corrupt(format!("timestamp {started} out of range"))
                    })?,
                    skipped: u64::try_from(skipped).unwrap_or(0),
                    skipped_ids: match skipped_ids.as_deref().map(Selection::from_stored) {
                        None => Vec::new(),
                        Some(Ok(Selection::Only(ids))) => ids,
                        Some(_) => {
                            return Err(StoreError::Corrupt("a run's skipped merchants".into()));
                        }
                    },
                })
            })
            .collect()
    }

    async fn next_pass_at(&self, id: i64) -> Result<Option<DateTime<Utc>>, StoreError> {
        let rows: Vec<(Option<i64>,)> = self
            .fetch_all(
                "SELECT MIN(pass_at) FROM batches WHERE schedule_id = $1 AND expanding = TRUE",
                args![id],
            )
            .await?;
        Ok(rows
            .into_iter()
            .next()
            .and_then(|(at,)| at)
            .and_then(|ms| Utc.timestamp_millis_opt(ms).single()))
    }

    async fn record_schedule_zones(&self, id: i64, zones: &[Timezone]) -> Result<(), StoreError> {
        let names: Vec<&str> = zones.iter().map(|z| z.name()).collect();
        let json = serde_json::Value::from(names).to_string();
        self.execute_relaxed(
            "UPDATE schedules SET zones = $1 WHERE id = $2",
            args![json, id],
        )
        .await?;
        Ok(())
    }
}
