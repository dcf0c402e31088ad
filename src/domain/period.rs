//! Periods (`YYYY`, `YYYY-Qn`, `YYYY-MM`, `YYYY-Www`, `YYYY-MM-DD`) and the time zone they
//! are cut in. Bounds are `[start, end)` at local midnight, so DST changes give the right length.

use std::fmt;

use chrono::offset::LocalResult;
use chrono::{
    DateTime, Datelike, Days, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, TimeZone, Utc,
    Weekday,
};

use super::InvalidInput;

/// A ledger period in its canonical form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    /// A calendar year.
    Year(i32),
    /// A calendar quarter, 1–4.
    Quarter { year: i32, quarter: u8 },
    /// A calendar month, 1–12.
    Month { year: i32, month: u8 },
    /// An ISO 8601 week of an ISO week-year.
    Week { year: i32, week: u8 },
    /// One day.
    Day(NaiveDate),
}

/// First year a period may name.
pub const MIN_YEAR: i32 = 1970;
/// Last year a period may name.
pub const MAX_YEAR: i32 = 9999;

const EXPECTED: &str = "expected YYYY, YYYY-Qn, YYYY-MM, YYYY-Www or YYYY-MM-DD";

fn invalid(message: impl Into<String>) -> InvalidInput {
    InvalidInput::new("period", message)
}

/// Exactly `N` ASCII digits as a number; `None` for anything else (signs, spaces, letters).
fn digits<const N: usize>(raw: &[u8]) -> Option<u32> {
    if raw.len() != N || !raw.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(raw.iter().fold(0, |acc, b| acc * 10 + u32::from(b - b'0')))
}

fn parse_year(raw: &[u8]) -> Result<i32, InvalidInput> {
    let year = digits::<4>(raw)
        .and_then(|y| i32::try_from(y).ok())
        .ok_or_else(|| invalid(format!("{EXPECTED}: the year must be four digits")))?;
    if !(MIN_YEAR..=MAX_YEAR).contains(&year) {
        return Err(invalid(format!(
            "the year must be between {MIN_YEAR} and {MAX_YEAR}"
        )));
    }
    Ok(year)
}

fn parse_month(raw: &[u8]) -> Result<u8, InvalidInput> {
    digits::<2>(raw)
        .filter(|m| (1..=12).contains(m))
        .and_then(|m| u8::try_from(m).ok())
        .ok_or_else(|| invalid("the month must be two digits, 01 to 12"))
}

/// Number of ISO weeks (52 or 53) in ISO week-year `year`.
fn iso_weeks_in_year(year: i32) -> u8 {
    // 28 December always lies in the last ISO week of its year.
    NaiveDate::from_ymd_opt(year, 12, 28)
        .and_then(|d| u8::try_from(d.iso_week().week()).ok())
        .unwrap_or(52)
}

/// `year-month-day`, with out-of-range parts clamped. Only reachable with unchecked values
/// when a caller builds a `Period` by hand; parsed periods are always in range.
fn date(year: i32, month: u32, day: u32) -> NaiveDate {
    let year = year.clamp(MIN_YEAR, MAX_YEAR + 1);
    let month = month.clamp(1, 12);
    (1..=day.clamp(1, 31))
        .rev()
        .find_map(|d| NaiveDate::from_ymd_opt(year, month, d))
        .unwrap_or_default()
}

impl Period {
    /// Parses any of the five forms; the error names `period` and says what was expected.
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let b = raw.as_bytes();
        if b.len() < 4 {
            return Err(invalid(EXPECTED));
        }
        let year = parse_year(&b[..4])?;
        let rest = &b[4..];
        if rest.is_empty() {
            return Ok(Period::Year(year));
        }
        if rest[0] != b'-' {
            return Err(invalid(EXPECTED));
        }
        let rest = &rest[1..];
        match rest {
            [b'Q' | b'q', n] => match digits::<1>(std::slice::from_ref(n)) {
                Some(q @ 1..=4) => Ok(Period::Quarter {
                    year,
                    quarter: q as u8,
                }),
                _ => Err(invalid("the quarter must be Q1 to Q4")),
            },
            [b'W' | b'w', w @ ..] => {
                let max = iso_weeks_in_year(year);
                match digits::<2>(w).and_then(|w| u8::try_from(w).ok()) {
                    Some(week) if (1..=max).contains(&week) => Ok(Period::Week { year, week }),
                    _ => Err(invalid(format!(
                        "the ISO week must be two digits, W01 to W{max} for {year}"
                    ))),
                }
            }
            [m1, m2] => Ok(Period::Month {
                year,
                month: parse_month(&[*m1, *m2])?,
            }),
            [m1, m2, b'-', d @ ..] => {
                let month = parse_month(&[*m1, *m2])?;
                digits::<2>(d)
                    .and_then(|day| NaiveDate::from_ymd_opt(year, u32::from(month), day))
                    .map(Period::Day)
                    .ok_or_else(|| {
                        invalid(format!(
                            "{year}-{month:02} has no such day: expected YYYY-MM-DD"
                        ))
                    })
            }
            _ => Err(invalid(EXPECTED)),
        }
    }

    /// First local day of the period and the first local day after it.
    pub fn local_days(&self) -> (NaiveDate, NaiveDate) {
        match *self {
            Period::Year(year) => {
                let year = year.clamp(MIN_YEAR, MAX_YEAR);
                (date(year, 1, 1), date(year + 1, 1, 1))
            }
            Period::Quarter { year, quarter } => {
                let year = year.clamp(MIN_YEAR, MAX_YEAR);
                let first_month = (u32::from(quarter.clamp(1, 4)) - 1) * 3 + 1;
                let start = date(year, first_month, 1);
                let end = if first_month == 10 {
                    date(year + 1, 1, 1)
                } else {
                    date(year, first_month + 3, 1)
                };
                (start, end)
            }
            Period::Month { year, month } => {
                let year = year.clamp(MIN_YEAR, MAX_YEAR);
                let month = u32::from(month.clamp(1, 12));
                let end = if month == 12 {
                    date(year + 1, 1, 1)
                } else {
                    date(year, month + 1, 1)
                };
                (date(year, month, 1), end)
            }
            Period::Week { year, week } => {
                let year = year.clamp(MIN_YEAR, MAX_YEAR);
                let week = week.clamp(1, iso_weeks_in_year(year));
                let start = NaiveDate::from_isoywd_opt(year, u32::from(week), Weekday::Mon)
                    .unwrap_or_default();
                (start, start.checked_add_days(Days::new(7)).unwrap_or(start))
            }
            Period::Day(day) => (day, day.succ_opt().unwrap_or(day)),
        }
    }

    /// `[start, end)` in UTC of the period cut in `tz`.
    pub fn bounds(&self, tz: Timezone) -> (DateTime<Utc>, DateTime<Utc>) {
        let (first, after) = self.local_days();
        (local_midnight(tz.0, first), local_midnight(tz.0, after))
    }

    /// Whether `now` is at or after the period's start in `tz`.
    pub fn has_started(&self, tz: Timezone, now: DateTime<Utc>) -> bool {
        now >= self.bounds(tz).0
    }

    /// Whether `now` is at or after the period's end in `tz` (the end is exclusive).
    pub fn has_ended(&self, tz: Timezone, now: DateTime<Utc>) -> bool {
        now >= self.bounds(tz).1
    }
}

/// The UTC instant at which `day` starts in `tz`.
///
/// Midnight inside a DST gap (Sao Paulo until 2019, Beirut, Havana…) does not exist: the day
/// then starts at the transition, the first instant whose local time is past midnight.
/// Midnight repeated by a fall-back transition starts the day at its first occurrence, so
/// no instant of that day is lost to the previous one.
fn local_midnight(tz: chrono_tz::Tz, day: NaiveDate) -> DateTime<Utc> {
    let midnight = day.and_time(NaiveTime::MIN);
    match tz.from_local_datetime(&midnight) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(a, b) => a.min(b).with_timezone(&Utc),
        LocalResult::None => end_of_gap(tz, midnight),
    }
}

/// The first UTC instant whose local time in `tz` is at or after `local`, where `local` falls
/// in a gap. Binary search over seconds: tzdb transitions are on whole seconds.
fn end_of_gap(tz: chrono_tz::Tz, local: NaiveDateTime) -> DateTime<Utc> {
    use chrono::Offset;
    let as_if_utc = local.and_utc();
    let reaches = |t: i64| {
        DateTime::from_timestamp(t, 0).is_some_and(|t| t.with_timezone(&tz).naive_local() >= local)
    };
    // The offset a day earlier is the one before the gap; `local` read with it is an instant
    // at or after the transition. The longest gap on record is a whole day (Samoa 2011), so
    // a window of one day and an hour before that instant holds the transition and no other.
    let offset_before = tz
        .offset_from_utc_datetime(
            &as_if_utc
                .checked_sub_signed(TimeDelta::days(1))
                .unwrap_or(as_if_utc)
                .naive_utc(),
        )
        .fix()
        .local_minus_utc();
    let mut hi = as_if_utc.timestamp() - i64::from(offset_before);
    let mut lo = hi - 25 * 3600;
    if !reaches(hi) || reaches(lo) {
        // Not the shape of a single forward transition; midnight read as UTC is still a
        // usable, deterministic bound.
        return as_if_utc;
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if reaches(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    DateTime::from_timestamp(hi, 0).unwrap_or(as_if_utc)
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Period::Year(year) => write!(f, "{year:04}"),
            Period::Quarter { year, quarter } => write!(f, "{year:04}-Q{quarter}"),
            Period::Month { year, month } => write!(f, "{year:04}-{month:02}"),
            Period::Week { year, week } => write!(f, "{year:04}-W{week:02}"),
            Period::Day(day) => write!(f, "{}", day.format("%Y-%m-%d")),
        }
    }
}

/// An IANA time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timezone(pub chrono_tz::Tz);

impl Timezone {
    /// UTC.
    pub const UTC: Timezone = Timezone(chrono_tz::UTC);

    /// Parses an IANA name (`Europe/Berlin`); the error names `timezone`.
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        raw.parse::<chrono_tz::Tz>().map(Timezone).map_err(|_| {
            InvalidInput::new(
                "timezone",
                "expected an IANA time zone name such as Europe/Berlin or UTC",
            )
        })
    }

    /// The IANA name.
    pub fn name(&self) -> &'static str {
        self.0.name()
    }
}

impl fmt::Display for Timezone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests;
