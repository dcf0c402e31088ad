//! Text forms shared by every renderer: amounts as exact decimals and instants in the
//! period's time zone. One place, so a CSV and a PDF of the same ledger never disagree.

use chrono::{DateTime, SecondsFormat, Utc};

use crate::domain::{Currency, Timezone, format_minor};

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
    fn instants_carry_the_local_offset() {
        let at: DateTime<Utc> = "2026-10-01T08:15:00Z".parse().unwrap();
        let berlin = Timezone::parse("Europe/Berlin").unwrap();
        assert_eq!(local_instant(at, berlin), "2026-10-01T10:15:00+02:00");
    }
}
