//! The schedule half of the job store port (SPEC §11): schedules, and the runs they open —
//! one per (schedule, period), exactly once, whoever opens it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreError;
use super::batches::NewBatch;
use crate::domain::{BatchId, BatchStatus, Period, Schedule, Timezone};

/// A schedule's run as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    /// Its period.
    pub period: Period,
    /// Its batch.
    pub batch_id: BatchId,
    /// Its batch's status as last published.
    pub status: BatchStatus,
    /// When it was opened.
    pub started_at: DateTime<Utc>,
    /// Merchants it left out because the creator may not create for them (any more).
    pub skipped: u64,
    /// The first of them.
    pub skipped_ids: Vec<crate::domain::MerchantId>,
}

/// Opens the run of `batch.period` of `schedule_id`: its batch, due for a first pass at
/// `pass_at`, and the schedule's next period moved from `period` to `next_period`.
#[derive(Debug, Clone)]
pub struct OpenRun {
    /// The schedule.
    pub schedule_id: i64,
    /// The run's batch (its period is the run's).
    pub batch: NewBatch,
    /// How long after a merchant's close its ledgers are made.
    pub delay: std::time::Duration,
    /// When its first pass is due.
    pub pass_at: DateTime<Utc>,
    /// The period after it.
    pub next_period: Period,
}

/// The schedule half of the job store port.
#[async_trait]
pub trait ScheduleStore: Send + Sync {
    /// Stores a new schedule.
    async fn insert_schedule(&self, schedule: &Schedule) -> Result<(), StoreError>;
    /// One schedule, deleted or not.
    async fn get_schedule(&self, id: i64) -> Result<Option<Schedule>, StoreError>;
    /// Schedules not deleted, newest first (`created_by = None`: everyone's), below
    /// `before`.
    async fn list_schedules(
        &self,
        created_by: Option<&str>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Schedule>, StoreError>;
    /// Pauses or resumes a schedule not deleted; the schedule as it is now, `None` when
    /// there is none.
    async fn set_schedule_paused(
        &self,
        id: i64,
        paused: bool,
        now: DateTime<Utc>,
    ) -> Result<Option<Schedule>, StoreError>;
    /// Deletes a schedule (softly: its runs and their ledgers stay); false when there was
    /// none.
    async fn delete_schedule(&self, id: i64, now: DateTime<Utc>) -> Result<bool, StoreError>;
    /// Schedules neither paused nor deleted, oldest first, after the id `after`.
    async fn active_schedules(
        &self,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Schedule>, StoreError>;
    /// Opens a run in one transaction — its batch, its row, the schedule's next period —
    /// if the schedule's next period is still the run's; false when another process
    /// opened it first.
    async fn open_run(&self, run: &OpenRun) -> Result<bool, StoreError>;
    /// A schedule's runs, newest period first.
    async fn schedule_runs(&self, id: i64, limit: u32) -> Result<Vec<RunRecord>, StoreError>;
    /// When the next pass of one of the schedule's open runs is due, if any is.
    async fn next_pass_at(&self, id: i64) -> Result<Option<DateTime<Utc>>, StoreError>;
    /// Records the zones the schedule's merchants were seen in (they say when its next
    /// runs open).
    async fn record_schedule_zones(&self, id: i64, zones: &[Timezone]) -> Result<(), StoreError>;
}
