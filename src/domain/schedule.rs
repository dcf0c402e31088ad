//! Schedules (SPEC §11): every period of a cadence, once it has closed in each merchant's
//! zone and a delay has passed, becomes that period's ledgers — one run (a batch) per
//! schedule and period.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::{Format, InvalidInput, LedgerType, Period, Selection, Timezone};

/// How often a schedule's periods come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Cadence {
    /// Every day (`YYYY-MM-DD`).
    Daily,
    /// Every ISO week (`YYYY-Www`).
    Weekly,
    /// Every month (`YYYY-MM`).
    Monthly,
    /// Every quarter (`YYYY-Qn`).
    Quarterly,
    /// Every year (`YYYY`).
    Yearly,
}

impl Cadence {
    /// Every cadence.
    pub const ALL: &'static [Cadence] = &[
        Cadence::Daily,
        Cadence::Weekly,
        Cadence::Monthly,
        Cadence::Quarterly,
        Cadence::Yearly,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Cadence::Daily => "DAILY",
            Cadence::Weekly => "WEEKLY",
            Cadence::Monthly => "MONTHLY",
            Cadence::Quarterly => "QUARTERLY",
            Cadence::Yearly => "YEARLY",
        }
    }

    /// Parses the wire name exactly.
    pub fn parse(raw: &str) -> Option<Self> {
        Cadence::ALL.iter().copied().find(|c| c.as_str() == raw)
    }

    /// Whether `period` is one of this cadence's.
    pub fn fits(self, period: &Period) -> bool {
        matches!(
            (self, period),
            (Cadence::Daily, Period::Day(_))
                | (Cadence::Weekly, Period::Week { .. })
                | (Cadence::Monthly, Period::Month { .. })
                | (Cadence::Quarterly, Period::Quarter { .. })
                | (Cadence::Yearly, Period::Year(_))
        )
    }

    /// The period of this cadence that holds the local day `day`.
    pub fn period_of(self, day: NaiveDate) -> Period {
        match self {
            Cadence::Daily => Period::Day(day),
            Cadence::Weekly => {
                let week = day.iso_week();
                Period::Week {
                    year: week.year(),
                    week: u8::try_from(week.week()).unwrap_or(1),
                }
            }
            Cadence::Monthly => Period::Month {
                year: day.year(),
                month: u8::try_from(day.month()).unwrap_or(1),
            },
            Cadence::Quarterly => Period::Quarter {
                year: day.year(),
                quarter: u8::try_from(day.month0() / 3 + 1).unwrap_or(1),
            },
            Cadence::Yearly => Period::Year(day.year()),
        }
    }

    /// The period of this cadence after `period` (which must be one of its own).
    pub fn next(self, period: &Period) -> Period {
        let (_, after) = period.local_days();
        self.period_of(after)
    }
}

impl fmt::Display for Cadence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The longest delay a schedule may wait after a close.
pub const MAX_DELAY: Duration = Duration::from_secs(31 * 24 * 3600);

/// Parses an ISO 8601 duration of weeks, days, hours, minutes and seconds (`PT1H`, `P1D`,
/// `P1DT12H`, `PT30M`, `P2W`); years and months are refused (their length varies), as is a
/// delay above [`MAX_DELAY`].
pub fn parse_delay(raw: &str) -> Result<Duration, InvalidInput> {
    let bad = || {
        InvalidInput::new(
            "delay",
            "expected an ISO 8601 duration of weeks, days, hours, minutes or seconds, e.g. PT1H or P1DT6H",
        )
    };
    let rest = raw.strip_prefix('P').ok_or_else(bad)?;
    if rest.is_empty() {
        return Err(bad());
    }
    let mut seconds: u64 = 0;
    let mut in_time = false;
    let mut number = String::new();
    let mut units = 0;
    let mut time_units = 0;
    for c in rest.chars() {
        match c {
            '0'..='9' => number.push(c),
            'T' if !in_time && number.is_empty() => in_time = true,
            unit => {
                let n: u64 = number.parse().map_err(|_| bad())?;
                number.clear();
                let scale = match (in_time, unit) {
                    (false, 'W') => 7 * 86_400,
                    (false, 'D') => 86_400,
                    (true, 'H') => 3_600,
                    (true, 'M') => 60,
                    (true, 'S') => 1,
                    _ => return Err(bad()),
                };
                seconds = n
                    .checked_mul(scale)
                    .and_then(|s| seconds.checked_add(s))
                    .ok_or_else(bad)?;
                units += 1;
                time_units += usize::from(in_time);
            }
        }
    }
    if !number.is_empty() || units == 0 || (in_time && time_units == 0) {
        return Err(bad());
    }
    let delay = Duration::from_secs(seconds);
    if delay > MAX_DELAY {
        return Err(InvalidInput::new("delay", "at most 31 days (P31D)"));
    }
    Ok(delay)
}

/// Writes `delay` as an ISO 8601 duration (`PT1H`, `P1DT6H`, `PT0S`).
pub fn format_delay(delay: Duration) -> String {
    let total = delay.as_secs();
    let (days, rest) = (total / 86_400, total % 86_400);
    let (hours, rest) = (rest / 3_600, rest % 3_600);
    let (minutes, seconds) = (rest / 60, rest % 60);
    let mut out = String::from("P");
    if days > 0 {
        out.push_str(&format!("{days}D"));
    }
    if hours > 0 || minutes > 0 || seconds > 0 || days == 0 {
        out.push('T');
        if hours > 0 {
            out.push_str(&format!("{hours}H"));
        }
        if minutes > 0 {
            out.push_str(&format!("{minutes}M"));
        }
        if seconds > 0 || (hours == 0 && minutes == 0) {
            out.push_str(&format!("{seconds}S"));
        }
    }
    out
}

/// The zone in which a period closes first anywhere (UTC+14).
pub fn earliest_zone() -> Timezone {
    Timezone(chrono_tz::Pacific::Kiritimati)
}

/// When `period` has closed in `zone` and `delay` has passed.
pub fn close_at(period: &Period, zone: Timezone, delay: Duration) -> DateTime<Utc> {
    let (_, end) = period.bounds(zone);
    end + chrono::Duration::from_std(delay).unwrap_or_default()
}

/// When the first of `zones` closes `period` (plus `delay`); with no zone known yet, the
/// earliest zone on Earth.
pub fn first_close(period: &Period, zones: &[Timezone], delay: Duration) -> DateTime<Utc> {
    zones
        .iter()
        .map(|z| close_at(period, *z, delay))
        .min()
        .unwrap_or_else(|| close_at(period, earliest_zone(), delay))
}

/// A schedule as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Its id (a Snowflake).
    pub id: i64,
    /// The `sub` of its creator; each run acts for them.
    pub created_by: String,
    /// The merchants.
    pub merchants: Selection,
    /// STATEMENT or SUMMARY.
    pub ledger_type: LedgerType,
    /// One ledger per merchant and format.
    pub formats: Vec<Format>,
    /// How often.
    pub cadence: Cadence,
    /// How long after a merchant's close its ledgers are made.
    pub delay: Duration,
    /// The first period asked for (catch-up), if any.
    pub from: Option<Period>,
    /// Paused: no run opens or grows.
    pub paused: bool,
    /// The first period no run was opened for yet.
    pub next_period: Period,
    /// The zones of its merchants at the last pass (empty until one ran).
    pub zones: Vec<Timezone>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it was deleted, if it was.
    pub deleted_at: Option<DateTime<Utc>>,
}

impl Schedule {
    /// The first period a new schedule opens a run for: `from`, or else the period of the
    /// cadence that holds `now`'s day in UTC.
    pub fn first_period(cadence: Cadence, from: Option<Period>, now: DateTime<Utc>) -> Period {
        from.unwrap_or_else(|| cadence.period_of(now.date_naive()))
    }

    /// When the next run opens: the first close (plus the delay) of its next period.
    pub fn next_open_at(&self) -> DateTime<Utc> {
        first_close(&self.next_period, &self.zones, self.delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(raw: &str) -> DateTime<Utc> {
        raw.parse().unwrap()
    }

    #[test]
    fn periods_follow_each_other_per_cadence() {
        let p = |raw: &str| Period::parse(raw).unwrap();
        assert_eq!(Cadence::Monthly.next(&p("2026-12")), p("2027-01"));
        assert_eq!(Cadence::Daily.next(&p("2026-02-28")), p("2026-03-01"));
        assert_eq!(Cadence::Weekly.next(&p("2026-W53")), p("2027-W01"));
        assert_eq!(Cadence::Quarterly.next(&p("2026-Q4")), p("2027-Q1"));
        assert_eq!(Cadence::Yearly.next(&p("2026")), p("2027"));
        let day = NaiveDate::from_ymd_opt(2027, 1, 1).unwrap();
        assert_eq!(Cadence::Weekly.period_of(day), p("2026-W53"), "ISO weeks");
        assert!(Cadence::Monthly.fits(&p("2026-10")));
        assert!(!Cadence::Monthly.fits(&p("2026-Q4")));
    }

    #[test]
    fn kiritimati_closes_a_month_a_day_before_pago_pago() {
        let october = Period::parse("2026-10").unwrap();
        let kiritimati = close_at(&october, earliest_zone(), Duration::ZERO);
        let pago = close_at(
            &october,
            Timezone::parse("Pacific/Pago_Pago").unwrap(),
            Duration::from_secs(3600),
        );
        assert_eq!(kiritimati, at("2026-10-31T10:00:00Z"));
        assert_eq!(pago, at("2026-11-01T12:00:00Z"), "UTC-11, plus an hour");
        let tokyo = Timezone::parse("Asia/Tokyo").unwrap();
        let london = Timezone::parse("Europe/London").unwrap();
        assert_eq!(
            close_at(&october, london, Duration::ZERO) - close_at(&october, tokyo, Duration::ZERO),
            chrono::Duration::hours(9),
            "Tokyo's October ends 9 hours before London's"
        );
        assert_eq!(
            first_close(&october, &[london, tokyo], Duration::ZERO),
            close_at(&october, tokyo, Duration::ZERO)
        );
        assert_eq!(first_close(&october, &[], Duration::ZERO), kiritimati);
    }

    #[test]
    fn delays_are_iso_8601_durations_without_calendar_units() {
        assert_eq!(parse_delay("PT1H").unwrap(), Duration::from_secs(3600));
        assert_eq!(
            parse_delay("P1DT6H30M").unwrap(),
            Duration::from_secs(86_400 + 6 * 3600 + 1800)
        );
        assert_eq!(
            parse_delay("P2W").unwrap(),
            Duration::from_secs(14 * 86_400)
        );
        assert_eq!(parse_delay("PT0S").unwrap(), Duration::ZERO);
        for bad in [
            "", "P", "PT", "1H", "P1M", "P1Y", "PT1D", "P1H", "PT1.5H", "P32D", "PT-1H", "P1DT",
        ] {
            assert!(parse_delay(bad).is_err(), "{bad}");
        }
        for d in ["PT1H", "P1DT6H30M", "PT0S", "P3D", "PT45S", "P1DT1S"] {
            assert_eq!(format_delay(parse_delay(d).unwrap()), d);
        }
    }
}
