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
mod tests {
    use super::*;

    fn tz(name: &str) -> Timezone {
        Timezone::parse(name).unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse::<DateTime<Utc>>().unwrap()
    }

    fn ymd(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn hours(p: &str, zone: &str) -> i64 {
        let (start, end) = Period::parse(p).unwrap().bounds(tz(zone));
        (end - start).num_seconds() / 3600
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(Period::parse("2026").unwrap(), Period::Year(2026));
        assert_eq!(
            Period::parse("2026-Q3").unwrap(),
            Period::Quarter {
                year: 2026,
                quarter: 3
            }
        );
        assert_eq!(
            Period::parse("2026-03").unwrap(),
            Period::Month {
                year: 2026,
                month: 3
            }
        );
        assert_eq!(
            Period::parse("2026-W05").unwrap(),
            Period::Week {
                year: 2026,
                week: 5
            }
        );
        assert_eq!(
            Period::parse("2026-03-09").unwrap(),
            Period::Day(ymd(2026, 3, 9))
        );
        assert_eq!(Period::parse("1970").unwrap(), Period::Year(1970));
        assert_eq!(
            Period::parse("9999-12-31").unwrap(),
            Period::Day(ymd(9999, 12, 31))
        );
        assert_eq!(
            Period::parse("2024-02-29").unwrap(),
            Period::Day(ymd(2024, 2, 29))
        );
    }

    #[test]
    fn lowercase_designators_are_accepted_and_displayed_upper_case() {
        assert_eq!(Period::parse("2026-q3").unwrap().to_string(), "2026-Q3");
        assert_eq!(Period::parse("2026-w05").unwrap().to_string(), "2026-W05");
    }

    #[test]
    fn display_round_trips_in_canonical_form() {
        for raw in [
            "2026",
            "2026-Q1",
            "2026-Q4",
            "2026-01",
            "2026-12",
            "2026-W01",
            "2026-W53",
            "2020-W53",
            "2026-03-09",
            "1970-01-01",
            "9999",
        ] {
            let period = Period::parse(raw).unwrap();
            assert_eq!(period.to_string(), raw);
            assert_eq!(Period::parse(&period.to_string()).unwrap(), period);
        }
    }

    #[test]
    fn rejects_malformed_and_impossible_periods() {
        for raw in [
            "",
            " 2026",
            "2026 ",
            "26-01",
            "2026-1",
            "2026-13",
            "2026-00",
            "2026-02-30",
            "2026-02-29",
            "2026-04-31",
            "2026-W54",
            "2026-W00",
            "2021-W53",
            "2026-W5",
            "2026-W005",
            "2026-Q5",
            "2026-Q0",
            "2026-Q",
            "2026-Q12",
            "1969",
            "0999",
            "10000",
            "+2026",
            "-2026",
            "2026-",
            "2026-03-",
            "2026-03-9",
            "2026-3-09",
            "2026/03",
            "2026-03-09T00:00",
            "2026-M03",
            "２０２６",
            "2026-03-0a",
            "2026–03",
            "202a",
        ] {
            let err = Period::parse(raw).unwrap_err();
            assert_eq!(err.field, "period", "{raw:?}");
            assert!(!err.message.is_empty());
        }
    }

    #[test]
    fn error_messages_say_what_was_expected() {
        assert!(
            Period::parse("x")
                .unwrap_err()
                .message
                .contains("YYYY-MM-DD")
        );
        assert!(
            Period::parse("2026-13")
                .unwrap_err()
                .message
                .contains("01 to 12")
        );
        assert!(
            Period::parse("2021-W53")
                .unwrap_err()
                .message
                .contains("W52")
        );
        assert!(
            Period::parse("2026-W54")
                .unwrap_err()
                .message
                .contains("W53")
        );
        assert!(
            Period::parse("2026-Q5")
                .unwrap_err()
                .message
                .contains("Q1 to Q4")
        );
        assert!(Period::parse("1969").unwrap_err().message.contains("1970"));
    }

    #[test]
    fn iso_week_years() {
        assert_eq!(iso_weeks_in_year(2020), 53);
        assert_eq!(iso_weeks_in_year(2021), 52);
        assert_eq!(iso_weeks_in_year(2026), 53);
        assert_eq!(iso_weeks_in_year(2027), 52);
        assert!(Period::parse("2020-W53").is_ok());
        assert!(Period::parse("2015-W53").is_ok());
        assert!(Period::parse("2027-W53").is_err());
    }

    #[test]
    fn local_days_of_each_form() {
        let days = |raw: &str| Period::parse(raw).unwrap().local_days();
        assert_eq!(days("2026"), (ymd(2026, 1, 1), ymd(2027, 1, 1)));
        assert_eq!(days("2026-Q1"), (ymd(2026, 1, 1), ymd(2026, 4, 1)));
        assert_eq!(days("2026-Q3"), (ymd(2026, 7, 1), ymd(2026, 10, 1)));
        assert_eq!(days("2026-Q4"), (ymd(2026, 10, 1), ymd(2027, 1, 1)));
        assert_eq!(days("2026-02"), (ymd(2026, 2, 1), ymd(2026, 3, 1)));
        assert_eq!(days("2026-12"), (ymd(2026, 12, 1), ymd(2027, 1, 1)));
        assert_eq!(days("2026-W01"), (ymd(2025, 12, 29), ymd(2026, 1, 5)));
        assert_eq!(days("2026-W53"), (ymd(2026, 12, 28), ymd(2027, 1, 4)));
        assert_eq!(days("2020-W53"), (ymd(2020, 12, 28), ymd(2021, 1, 4)));
        assert_eq!(days("2026-03-09"), (ymd(2026, 3, 9), ymd(2026, 3, 10)));
        assert_eq!(days("2026-12-31"), (ymd(2026, 12, 31), ymd(2027, 1, 1)));
        assert_eq!(days("9999"), (ymd(9999, 1, 1), ymd(10000, 1, 1)));
    }

    #[test]
    fn hand_built_out_of_range_periods_do_not_panic() {
        let (start, end) = Period::Month {
            year: 2026,
            month: 13,
        }
        .local_days();
        assert!(start < end);
        let (start, end) = Period::Quarter {
            year: 2026,
            quarter: 9,
        }
        .local_days();
        assert!(start < end);
        let (start, end) = Period::Week {
            year: 2021,
            week: 60,
        }
        .local_days();
        assert!(start < end);
        let (start, end) = Period::Year(i32::MAX).local_days();
        assert!(start < end);
        let (start, end) = Period::Day(NaiveDate::MAX).local_days();
        assert!(start <= end);
    }

    #[test]
    fn utc_bounds() {
        let (start, end) = Period::parse("2026-03").unwrap().bounds(Timezone::UTC);
        assert_eq!(start, utc("2026-03-01T00:00:00Z"));
        assert_eq!(end, utc("2026-04-01T00:00:00Z"));
        assert_eq!(hours("2026", "UTC"), 365 * 24);
        assert_eq!(hours("2024", "UTC"), 366 * 24);
    }

    #[test]
    fn dst_months_have_their_real_length() {
        assert_eq!(hours("2026-03", "Europe/Berlin"), 743);
        assert_eq!(hours("2026-10", "Europe/Berlin"), 745);
        assert_eq!(hours("2026-01", "Europe/Berlin"), 744);
        assert_eq!(hours("2026-03", "America/New_York"), 743);
        assert_eq!(hours("2026-11", "America/New_York"), 721);
        assert_eq!(hours("2026-03-29", "Europe/Berlin"), 23);
        assert_eq!(hours("2026-10-25", "Europe/Berlin"), 25);
        assert_eq!(hours("2026", "Europe/Berlin"), 365 * 24);
    }

    #[test]
    fn berlin_bounds() {
        let (start, end) = Period::parse("2026-03")
            .unwrap()
            .bounds(tz("Europe/Berlin"));
        assert_eq!(start, utc("2026-02-28T23:00:00Z"));
        assert_eq!(end, utc("2026-03-31T22:00:00Z"));
        let (start, end) = Period::parse("2026-01-15")
            .unwrap()
            .bounds(tz("Europe/Berlin"));
        assert_eq!(start, utc("2026-01-14T23:00:00Z"));
        assert_eq!(end, utc("2026-01-15T23:00:00Z"));
        let (start, end) = Period::parse("2026-07-15")
            .unwrap()
            .bounds(tz("Europe/Berlin"));
        assert_eq!(start, utc("2026-07-14T22:00:00Z"));
        assert_eq!(end, utc("2026-07-15T22:00:00Z"));
    }

    #[test]
    fn iso_week_bounds() {
        let (start, end) = Period::parse("2026-W01").unwrap().bounds(Timezone::UTC);
        assert_eq!(start, utc("2025-12-29T00:00:00Z"));
        assert_eq!(end, utc("2026-01-05T00:00:00Z"));
        let (start, end) = Period::parse("2026-W01")
            .unwrap()
            .bounds(tz("Europe/Berlin"));
        assert_eq!(start, utc("2025-12-28T23:00:00Z"));
        assert_eq!(end, utc("2026-01-04T23:00:00Z"));
    }

    #[test]
    fn midnight_in_a_dst_gap_starts_at_the_transition() {
        // Sao Paulo sprang forward at midnight until 2019: 00:00 -03 became 01:00 -02.
        let (start, end) = Period::parse("2018-11-04")
            .unwrap()
            .bounds(tz("America/Sao_Paulo"));
        assert_eq!(start, utc("2018-11-04T03:00:00Z"));
        assert_eq!(end, utc("2018-11-05T02:00:00Z"));
        let (start, _) = Period::parse("2018-11")
            .unwrap()
            .bounds(tz("America/Sao_Paulo"));
        assert_eq!(start, utc("2018-11-01T03:00:00Z"));
        // Beirut springs forward at midnight on the last Sunday of March.
        let (start, end) = Period::parse("2026-03-29")
            .unwrap()
            .bounds(tz("Asia/Beirut"));
        assert_eq!(start, utc("2026-03-28T22:00:00Z"));
        assert_eq!(end, utc("2026-03-29T21:00:00Z"));
        let (_, end) = Period::parse("2026-03-28")
            .unwrap()
            .bounds(tz("Asia/Beirut"));
        assert_eq!(end, utc("2026-03-28T22:00:00Z"));
        // Samoa skipped 30 December 2011 entirely: that day is empty, not negative.
        let (start, end) = Period::parse("2011-12-30")
            .unwrap()
            .bounds(tz("Pacific/Apia"));
        assert_eq!(start, utc("2011-12-30T10:00:00Z"));
        assert_eq!(end, start);
        let (start, end) = Period::parse("2011-12").unwrap().bounds(tz("Pacific/Apia"));
        assert_eq!((end - start).num_hours(), 30 * 24);
    }

    #[test]
    fn ambiguous_midnight_starts_at_its_first_occurrence() {
        // Havana falls back from 01:00 CDT to 00:00 CST, so midnight happens twice.
        let (start, end) = Period::parse("2026-11-01")
            .unwrap()
            .bounds(tz("America/Havana"));
        assert_eq!(start, utc("2026-11-01T04:00:00Z"));
        assert_eq!(end, utc("2026-11-02T05:00:00Z"));
        let (_, end) = Period::parse("2026-10")
            .unwrap()
            .bounds(tz("America/Havana"));
        assert_eq!(end, start, "consecutive periods share their boundary");
    }

    #[test]
    fn consecutive_periods_tile_time() {
        for zone in [
            "Europe/Berlin",
            "America/New_York",
            "America/Sao_Paulo",
            "Asia/Beirut",
        ] {
            for year in [2018, 2026] {
                for month in 1..12u8 {
                    let (_, end) = Period::Month { year, month }.bounds(tz(zone));
                    let (start, _) = Period::Month {
                        year,
                        month: month + 1,
                    }
                    .bounds(tz(zone));
                    assert_eq!(end, start, "{zone} {year}-{month}");
                }
            }
        }
    }

    #[test]
    fn started_and_ended() {
        let berlin = tz("Europe/Berlin");
        let march = Period::parse("2026-03").unwrap();
        assert!(!march.has_started(berlin, utc("2026-02-28T22:59:59Z")));
        assert!(march.has_started(berlin, utc("2026-02-28T23:00:00Z")));
        assert!(!march.has_ended(berlin, utc("2026-02-28T23:00:00Z")));
        assert!(!march.has_ended(berlin, utc("2026-03-31T21:59:59Z")));
        assert!(march.has_ended(berlin, utc("2026-03-31T22:00:00Z")));
        // The same instant is inside the day in Berlin but already past it in UTC… and
        // before it has started in New York.
        let day = Period::parse("2026-01-15").unwrap();
        let now = utc("2026-01-16T00:30:00Z");
        assert!(day.has_ended(berlin, now));
        assert!(day.has_ended(Timezone::UTC, now));
        assert!(!day.has_ended(tz("America/New_York"), now));
        let future = Period::parse("2027").unwrap();
        assert!(!future.has_started(Timezone::UTC, now));
        assert!(!future.has_ended(Timezone::UTC, now));
    }

    #[test]
    fn timezone_parsing() {
        assert_eq!(tz("Europe/Berlin").name(), "Europe/Berlin");
        assert_eq!(tz("UTC"), Timezone::UTC);
        assert_eq!(tz("America/New_York").to_string(), "America/New_York");
        assert!(Timezone::parse("Etc/UTC").is_ok());
        for bad in [
            "",
            " Europe/Berlin",
            "Europe/Berlin ",
            "Mars/Olympus",
            "Europe",
            "+01:00",
        ] {
            let err = Timezone::parse(bad).unwrap_err();
            assert_eq!(err.field, "timezone", "{bad:?}");
        }
    }
}
