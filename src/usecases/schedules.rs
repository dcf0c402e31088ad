//! What a caller can do with schedules (SPEC §11): make one, read one with its runs, list
//! their own, pause or resume one, delete one. The worker role opens and grows the runs
//! (`worker::batches`).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};

use super::LedgerError;
use crate::auth::{Authorizer, Caller, MerchantScope, Permission, assert_merchant_access};
use crate::domain::batch::check_formats;
use crate::domain::schedule::first_close;
use crate::domain::{
    Cadence, Format, InvalidInput, LedgerType, Period, Schedule, Selection, Snowflake, Timezone,
};
use crate::store::JobStore;
use crate::store::schedules::RunRecord;

/// The ports the schedule use cases work with.
#[derive(Clone)]
pub struct Schedules {
    /// Job store.
    pub store: Arc<dyn JobStore>,
    /// Authorization decisions.
    pub authz: Arc<Authorizer>,
    /// Schedule ids.
    pub ids: Arc<Snowflake>,
}

/// A validated request for a schedule.
#[derive(Debug, Clone)]
pub struct ScheduleRequest {
    /// The merchants.
    pub merchants: Selection,
    /// What the documents contain.
    pub ledger_type: LedgerType,
    /// One ledger per merchant and format.
    pub formats: Vec<Format>,
    /// How often.
    pub cadence: Cadence,
    /// How long after each merchant's close.
    pub delay: Duration,
    /// Catch up from this period (one of the cadence's, started already).
    pub from: Option<Period>,
}

impl ScheduleRequest {
    /// Checks the parts that depend on each other.
    pub fn new(
        merchants: Selection,
        ledger_type: LedgerType,
        formats: Vec<Format>,
        cadence: Cadence,
        delay: Duration,
        from: Option<Period>,
        now: DateTime<Utc>,
    ) -> Result<Self, InvalidInput> {
        let merchants = merchants.checked()?;
        check_formats(&formats)?;
        if let Some(from) = &from {
            if !cadence.fits(from) {
                return Err(InvalidInput::new(
                    "from",
                    format!("must be a period of the cadence {cadence}"),
                ));
            }
            let earliest = Timezone(chrono_tz::Pacific::Kiritimati);
            if !from.has_started(earliest, now) {
                return Err(InvalidInput::new("from", "the period has not started yet"));
            }
            // A catch-up opens one run a period: bounded, so `from` cannot ask for tens of
            // thousands at once.
            let mut period = *from;
            for _ in 0..MAX_CATCH_UP {
                if !period.has_started(earliest, now) {
                    break;
                }
                period = cadence.next(&period);
            }
            if period.has_started(earliest, now) {
                return Err(InvalidInput::new(
                    "from",
                    format!("at most {MAX_CATCH_UP} periods back"),
                ));
            }
        }
        Ok(Self {
            merchants,
            ledger_type,
            formats,
            cadence,
            delay,
            from,
        })
    }
}

/// A schedule with when it runs next.
#[derive(Debug, Clone)]
pub struct ScheduleView {
    /// The schedule.
    pub schedule: Schedule,
    /// The earliest upcoming close (plus the delay) over its merchants: the next pass of an
    /// open run, or the opening of the next period's run, whichever comes first; `None`
    /// when paused.
    pub next_run_at: Option<DateTime<Utc>>,
}

const MISSING: LedgerError = LedgerError::NotFound("no such schedule");

/// How many periods back `from` may be.
pub const MAX_CATCH_UP: usize = 400;

impl Schedules {
    /// Makes a schedule. Every named merchant must allow the caller `create` (else a
    /// [`LedgerError::Forbidden`] naming the first that does not); `"*"` needs
    /// `create` on every merchant (platform_admin).
    pub async fn create(
        &self,
        caller: &Caller,
        request: ScheduleRequest,
    ) -> Result<ScheduleView, LedgerError> {
        match &request.merchants {
            Selection::Only(ids) => {
                for merchant in ids {
                    assert_merchant_access(&self.authz, caller, merchant, Permission::Create)
                        .await?;
                }
            }
            Selection::All => {
                if !matches!(
                    self.scope(caller, Permission::Create).await?,
                    MerchantScope::All
                ) {
                    return Err(LedgerError::EveryMerchantOnly(
                        "a schedule of \"*\" needs create on every merchant (platform_admin)",
                    ));
                }
            }
        }
        // As stored: the store keeps milliseconds.
        let now = Utc::now().trunc_subsecs(3);
        let schedule = Schedule {
            id: self.ids.next_id().as_i64(),
            created_by: caller.subject.clone(),
            merchants: request.merchants,
            ledger_type: request.ledger_type,
            formats: request.formats,
            cadence: request.cadence,
            delay: request.delay,
            from: request.from,
            paused: false,
            next_period: Schedule::first_period(request.cadence, request.from, now),
            zones: Vec::new(),
            created_at: now,
            deleted_at: None,
        };
        self.store.insert_schedule(&schedule).await?;
        tracing::info!(target: "ledger::api::schedules", scheduleId = schedule.id, subject = %caller.subject, cadence = %schedule.cadence, nextPeriod = %schedule.next_period, "schedule created");
        self.view(schedule).await
    }

    /// A schedule the caller created (or any, for one who may read every merchant), with
    /// its newest runs.
    pub async fn get(
        &self,
        caller: &Caller,
        id: i64,
        runs: u32,
    ) -> Result<(ScheduleView, Vec<RunRecord>), LedgerError> {
        let schedule = self.visible(caller, id, Permission::Read).await?;
        let runs = self.store.schedule_runs(schedule.id, runs).await?;
        Ok((self.view(schedule).await?, runs))
    }

    /// The caller's schedules, newest first.
    pub async fn list(
        &self,
        caller: &Caller,
        before: Option<i64>,
        limit: u32,
    ) -> Result<(Vec<ScheduleView>, Option<i64>), LedgerError> {
        let mut items = self
            .store
            .list_schedules(Some(&caller.subject), before, limit + 1)
            .await?;
        let more = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|s| s.id)
        } else {
            None
        };
        let mut views = Vec::with_capacity(items.len());
        for s in items {
            views.push(self.view(s).await?);
        }
        Ok((views, more))
    }

    /// Pauses or resumes a schedule (its creator, or one who may create for every
    /// merchant). A resumed schedule catches up on the periods that closed meanwhile.
    pub async fn set_paused(
        &self,
        caller: &Caller,
        id: i64,
        paused: bool,
    ) -> Result<ScheduleView, LedgerError> {
        let schedule = self.visible(caller, id, Permission::Create).await?;
        let changed = self
            .store
            .set_schedule_paused(schedule.id, paused, Utc::now())
            .await?
            .ok_or(MISSING)?;
        tracing::info!(target: "ledger::api::schedules", scheduleId = id, subject = %caller.subject, paused, "schedule paused or resumed");
        self.view(changed).await
    }

    /// Deletes a schedule (its creator, or one who may create for every merchant): no run
    /// opens or grows any more; its runs and ledgers stay.
    pub async fn delete(&self, caller: &Caller, id: i64) -> Result<(), LedgerError> {
        let schedule = self.visible(caller, id, Permission::Create).await?;
        if !self.store.delete_schedule(schedule.id, Utc::now()).await? {
            return Err(MISSING);
        }
        tracing::info!(target: "ledger::api::schedules", scheduleId = id, subject = %caller.subject, "schedule deleted");
        Ok(())
    }

    async fn view(&self, schedule: Schedule) -> Result<ScheduleView, LedgerError> {
        let next_run_at = if schedule.paused {
            None
        } else {
            let opens = first_close(&schedule.next_period, &schedule.zones, schedule.delay);
            let pass = self.store.next_pass_at(schedule.id).await?;
            Some(pass.map_or(opens, |p| p.min(opens)))
        };
        Ok(ScheduleView {
            schedule,
            next_run_at,
        })
    }

    /// The schedule `id` if not deleted and `caller` created it or holds `perm` on every
    /// merchant; anything else is the same [`LedgerError::NotFound`].
    async fn visible(
        &self,
        caller: &Caller,
        id: i64,
        perm: Permission,
    ) -> Result<Schedule, LedgerError> {
        let schedule = self.store.get_schedule(id).await?.ok_or(MISSING)?;
        if schedule.deleted_at.is_some() {
            return Err(MISSING);
        }
        if schedule.created_by == caller.subject {
            return Ok(schedule);
        }
        match self.scope(caller, perm).await? {
            MerchantScope::All => Ok(schedule),
            MerchantScope::Only(_) => Err(MISSING),
        }
    }

    async fn scope(&self, caller: &Caller, perm: Permission) -> Result<MerchantScope, LedgerError> {
        self.authz
            .scope(&caller.subject, perm)
            .await
            .map_err(|e| LedgerError::Unavailable(e.to_string()))
    }
}
