//! Tests of periods: parsing and display, bounds in time zones (DST gaps included), time
//! zones.

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

/// The bounds of period `p` in time zone `zone`.
fn bounds(p: &str, zone: &str) -> (DateTime<Utc>, DateTime<Utc>) {
    Period::parse(p).unwrap().bounds(tz(zone))
}

fn hours(p: &str, zone: &str) -> i64 {
    let (start, end) = bounds(p, zone);
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
    for (raw, expected) in [
        ("x", "YYYY-MM-DD"),
        ("2026-13", "01 to 12"),
        ("2021-W53", "W52"),
        ("2026-W54", "W53"),
        ("2026-Q5", "Q1 to Q4"),
        ("1969", "1970"),
    ] {
        let message = Period::parse(raw).unwrap_err().message;
        assert!(message.contains(expected), "{raw}: {message}");
    }
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
    let (start, end) = bounds("2026-03", "UTC");
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
    let (start, end) = bounds("2026-03", "Europe/Berlin");
    assert_eq!(start, utc("2026-02-28T23:00:00Z"));
    assert_eq!(end, utc("2026-03-31T22:00:00Z"));
    let (start, end) = bounds("2026-01-15", "Europe/Berlin");
    assert_eq!(start, utc("2026-01-14T23:00:00Z"));
    assert_eq!(end, utc("2026-01-15T23:00:00Z"));
    let (start, end) = bounds("2026-07-15", "Europe/Berlin");
    assert_eq!(start, utc("2026-07-14T22:00:00Z"));
    assert_eq!(end, utc("2026-07-15T22:00:00Z"));
}

#[test]
fn iso_week_bounds() {
    let (start, end) = bounds("2026-W01", "UTC");
    assert_eq!(start, utc("2025-12-29T00:00:00Z"));
    assert_eq!(end, utc("2026-01-05T00:00:00Z"));
    let (start, end) = bounds("2026-W01", "Europe/Berlin");
    assert_eq!(start, utc("2025-12-28T23:00:00Z"));
    assert_eq!(end, utc("2026-01-04T23:00:00Z"));
}

#[test]
fn midnight_in_a_dst_gap_starts_at_the_transition() {
    // Sao Paulo sprang forward at midnight until 2019: 00:00 -03 became 01:00 -02.
    let (start, end) = bounds("2018-11-04", "America/Sao_Paulo");
    assert_eq!(start, utc("2018-11-04T03:00:00Z"));
    assert_eq!(end, utc("2018-11-05T02:00:00Z"));
    let (start, _) = bounds("2018-11", "America/Sao_Paulo");
    assert_eq!(start, utc("2018-11-01T03:00:00Z"));
    // Beirut springs forward at midnight on the last Sunday of March.
    let (start, end) = bounds("2026-03-29", "Asia/Beirut");
    assert_eq!(start, utc("2026-03-28T22:00:00Z"));
    assert_eq!(end, utc("2026-03-29T21:00:00Z"));
    let (_, end) = bounds("2026-03-28", "Asia/Beirut");
    assert_eq!(end, utc("2026-03-28T22:00:00Z"));
    // Samoa skipped 30 December 2011 entirely: that day is empty, not negative.
    let (start, end) = bounds("2011-12-30", "Pacific/Apia");
    assert_eq!(start, utc("2011-12-30T10:00:00Z"));
    assert_eq!(end, start);
    let (start, end) = bounds("2011-12", "Pacific/Apia");
    assert_eq!((end - start).num_hours(), 30 * 24);
}

#[test]
fn ambiguous_midnight_starts_at_its_first_occurrence() {
    // Havana falls back from 01:00 CDT to 00:00 CST, so midnight happens twice.
    let (start, end) = bounds("2026-11-01", "America/Havana");
    assert_eq!(start, utc("2026-11-01T04:00:00Z"));
    assert_eq!(end, utc("2026-11-02T05:00:00Z"));
    let (_, end) = bounds("2026-10", "America/Havana");
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
