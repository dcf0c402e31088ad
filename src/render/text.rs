//! Text forms shared by every renderer: amounts as exact decimals and instants in the
//! period's time zone. One place, so a CSV and a PDF of the same ledger never disagree.

use chrono::{DateTime, Datelike, Offset, SecondsFormat, TimeZone, Timelike, Utc};

use crate::domain::{Currency, Timezone, format_minor, write_minor};

/// `minor` units of `currency` as plain decimal text (`-19.99`, `1999`, `1.999`).
pub fn amount(currency: Currency, minor: i64) -> String {
    format_minor(minor, currency.exponent())
}

/// A balance that may exceed `i64` (totals are summed in `i128`).
pub fn wide_amount(currency: Currency, minor: i128) -> String {
    match i64::try_from(minor) {
        Ok(v) => amount(currency, v),
        Err(_) => {
            // Outside i64: split into two exact halves instead of losing digits.
            let scale = 10i128.pow(u32::from(currency.exponent()));
            let (whole, frac) = (minor / scale, (minor % scale).abs());
            if currency.exponent() == 0 {
                whole.to_string()
            } else {
                format!(
                    "{whole}.{frac:0width$}",
                    width = usize::from(currency.exponent())
                )
            }
        }
    }
}

/// RFC 3339 with the zone's offset, to the second (`2026-10-01T10:15:00+02:00`).
pub fn local_instant(at: DateTime<Utc>, tz: Timezone) -> String {
    at.with_timezone(&tz.0)
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// [`amount`], appended to `out` without allocating.
pub fn push_amount(out: &mut String, currency: Currency, minor: i64) {
    write_minor(out, minor, currency.exponent());
}

/// [`local_instant`], appended to `out` without allocating: the same text, written by hand
/// because chrono's formatter costs more than the rest of a CSV row.
pub fn push_local_instant(out: &mut String, at: DateTime<Utc>, tz: Timezone) {
    let offset = tz.0.offset_from_utc_datetime(&at.naive_utc()).fix();
    let local = at.naive_utc() + offset;
    if !(0..=9999).contains(&local.year()) || offset.local_minus_utc() % 60 != 0 {
        out.push_str(&local_instant(at, tz));
        return;
    }
    let two = |out: &mut String, v: u32| {
        out.push(char::from(b'0' + (v / 10) as u8));
        out.push(char::from(b'0' + (v % 10) as u8));
    };
    let year = local.year() as u32;
    two(out, year / 100);
    two(out, year % 100);
    out.push('-');
    two(out, local.month());
    out.push('-');
    two(out, local.day());
    out.push('T');
    two(out, local.hour());
    out.push(':');
    two(out, local.minute());
    out.push(':');
    two(out, local.second());
    let seconds = offset.local_minus_utc();
    out.push(if seconds < 0 { '-' } else { '+' });
    let minutes = seconds.unsigned_abs() / 60;
    two(out, minutes / 60);
    out.push(':');
    two(out, minutes % 60);
}

/// Free text as a spreadsheet cell: text that a spreadsheet would run as a formula (starting
/// with `=`, `+`, `-`, `@`, tab or carriage return) gets a leading `'` (OWASP's CSV
/// injection advice). Amounts never go through here.
pub fn spreadsheet_safe(text: &str) -> std::borrow::Cow<'_, str> {
    match text.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => format!("'{text}").into(),
        _ => text.into(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn formulas_in_free_text_are_defused() {
        assert_eq!(spreadsheet_safe("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(spreadsheet_safe("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(spreadsheet_safe("-2+3"), "'-2+3");
        assert_eq!(spreadsheet_safe("Order 1001"), "Order 1001");
        assert_eq!(spreadsheet_safe(""), "");
    }

    use super::*;

    #[test]
    fn amounts_follow_the_currency_exponent() {
        let c = |code| Currency::parse(code).unwrap();
        assert_eq!(amount(c("EUR"), -1999), "-19.99");
        assert_eq!(amount(c("JPY"), 1999), "1999");
        assert_eq!(amount(c("KWD"), 1999), "1.999");
        assert_eq!(
            wide_amount(c("EUR"), i128::from(i64::MAX) * 10),
            "922337203685477580.70"
        );
    }

    #[test]
    fn hand_written_instants_equal_chrono_s() {
        let zones = [
            "UTC",
            "Europe/Berlin",
            "America/New_York",
            "Asia/Kolkata",
            "Asia/Kathmandu",
            "America/St_Johns",
            "Pacific/Chatham",
        ];
        for zone in zones {
            let tz = Timezone::parse(zone).unwrap();
            // Every ~37 hours over four years crosses every DST change, plus the edges.
            let mut t = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
            for _ in 0..1000 {
                let mut mine = String::new();
                push_local_instant(&mut mine, t, tz);
                assert_eq!(mine, local_instant(t, tz), "{zone} {t}");
                t += chrono::Duration::seconds(133_337);
            }
        }
        let mut s = String::from("x");
        push_amount(&mut s, Currency::parse("KWD").unwrap(), -5);
        assert_eq!(s, "x-0.005");
    }

    #[test]
    fn instants_carry_the_local_offset() {
        let at: DateTime<Utc> = "2026-10-01T08:15:00Z".parse().unwrap();
        let berlin = Timezone::parse("Europe/Berlin").unwrap();
        assert_eq!(local_instant(at, berlin), "2026-10-01T10:15:00+02:00");
    }
}
