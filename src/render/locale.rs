//! How a document written for people (PDF, and the display formats of XLSX) writes numbers
//! and dates for a merchant's locale. A small table instead of ICU: the few conventions a
//! statement needs (digit grouping, decimal mark, date order) for the locales merchants use,
//! each checked against CLDR 46.
//!
//! | locale | 1234567.89 | date | notes |
//! |---|---|---|---|
//! | default (no locale) | `1,234,567.89` | `2026-10-31` | ISO 8601 dates, instants RFC 3339 |
//! | `en-US` | `1,234,567.89` | `10/31/2026` | |
//! | `en-GB` | `1,234,567.89` | `31/10/2026` | |
//! | `de-DE` | `1.234.567,89` | `31.10.2026` | |
//! | `de-AT` | `1 234 567,89` | `31.10.2026` | no-break space |
//! | `de-CH` | `1’234’567.89` | `31.10.2026` | |
//! | `fr-FR` | `1 234 567,89` | `31/10/2026` | narrow no-break space |
//! | `es-ES` | `1.234.567,89` | `31/10/2026` | four-digit numbers ungrouped (`1234,56`) |
//! | `it-IT` | `1.234.567,89` | `31/10/2026` | |
//! | `nl-NL` | `1.234.567,89` | `31-10-2026` | |
//! | `ja-JP` | `1,234,567.89` | `2026/10/31` | |
//!
//! **Matching.** A tag is matched on its language and region (`de-DE`, also `de-Latn-DE` or
//! `de-DE-1996`); failing that on its language alone (`de-LU` → `de-DE`, `en-AU` → `en-US`,
//! `fr-CA` → `fr-FR`: the first row of that language); failing that the default. The
//! source only checks that a tag is well-formed, so an unknown but valid tag (`pt-BR`)
//! is never an error: it gets the default. Absent locale: the default.
//!
//! **What is and is not localized.** Amounts keep their currency's minor digits (`JPY` has
//! none) and a leading `-` on negatives (never parentheses or a trailing sign, which are
//! easy to misread); the currency is named by its code in the section heading. An instant
//! is the local date, the time to the second and the UTC offset (`31.10.2026 14:05:00
//! +01:00`), so the hour repeated at a DST change stays unambiguous. The US order
//! (month/day) is what en-US readers expect; the header still names the period as
//! `2026-10`, which makes the order plain to anyone else. CSV never uses this module.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Offset, TimeZone, Timelike, Utc};

use super::text;
use crate::domain::{Currency, Locale, Timezone};

/// How a date is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateOrder {
    /// ISO 8601 (`2026-10-31`); an instant is RFC 3339 (`2026-10-31T14:05:00+01:00`).
    Iso,
    /// Year, month, day with a separator (`2026/10/31`).
    Ymd(char),
    /// Day, month, year (`31.10.2026`).
    Dmy(char),
    /// Month, day, year (`10/31/2026`).
    Mdy(char),
}

/// The number and date conventions of one row of the table.
#[derive(Debug, PartialEq, Eq)]
pub struct Conventions {
    /// The table row: a tag, or `default`.
    pub name: &'static str,
    /// Between groups of three digits.
    pub group: char,
    /// Before the minor digits.
    pub decimal: char,
    /// Whole digits needed before grouping starts: 4 (`1,234`), or 5 where a lone thousand
    /// stays ungrouped (CLDR's minimum grouping digits of 2, as in Spanish).
    pub group_from: usize,
    /// How dates are written.
    pub date: DateOrder,
}

/// No locale, or none the table knows: grouped amounts, ISO 8601 dates.
pub static DEFAULT: Conventions = Conventions {
    name: "default",
    group: ',',
    decimal: '.',
    group_from: 4,
    date: DateOrder::Iso,
};

const fn row(
    name: &'static str,
    group: char,
    decimal: char,
    group_from: usize,
    date: DateOrder,
) -> Conventions {
    Conventions {
        name,
        group,
        decimal,
        group_from,
        date,
    }
}

/// The supported locales; for a language alone, its first row applies.
pub static TABLE: [Conventions; 10] = [
    row("en-US", ',', '.', 4, DateOrder::Mdy('/')),
    row("en-GB", ',', '.', 4, DateOrder::Dmy('/')),
    row("de-DE", '.', ',', 4, DateOrder::Dmy('.')),
    row("de-AT", '\u{00A0}', ',', 4, DateOrder::Dmy('.')),
    row("de-CH", '\u{2019}', '.', 4, DateOrder::Dmy('.')),
    row("fr-FR", '\u{202F}', ',', 4, DateOrder::Dmy('/')),
    row("es-ES", '.', ',', 5, DateOrder::Dmy('/')),
    row("it-IT", '.', ',', 4, DateOrder::Dmy('/')),
    row("nl-NL", '.', ',', 4, DateOrder::Dmy('-')),
    row("ja-JP", ',', '.', 4, DateOrder::Ymd('/')),
];

/// The conventions for `locale`: by language and region, then by language, then
/// [`DEFAULT`].
pub fn conventions(locale: Option<&Locale>) -> &'static Conventions {
    let Some(language) = locale.and_then(Locale::language) else {
        return &DEFAULT;
    };
    let language_of = |c: &&Conventions| c.name.split('-').next() == Some(language);
    if let Some(region) = locale.and_then(Locale::region)
        && let Some(c) = TABLE
            .iter()
            .filter(language_of)
            .find(|c| c.name.split('-').nth(1) == Some(region))
    {
        return c;
    }
    TABLE.iter().find(language_of).unwrap_or(&DEFAULT)
}

impl Conventions {
    /// `minor` units of `currency` as this locale writes them (`-249.978,81`), appended to
    /// `out` without allocating: renderers call this twice per row.
    pub fn push_amount(&self, out: &mut String, currency: Currency, minor: i128) {
        self.push_number(out, minor, usize::from(currency.exponent()));
    }

    /// A count (`12.345` entries in de-DE), grouped like the whole part of an amount.
    pub fn count(&self, n: u64) -> String {
        let mut out = String::with_capacity(24);
        self.push_number(&mut out, i128::from(n), 0);
        out
    }

    /// `value` with `exponent` of its digits after the decimal mark.
    fn push_number(&self, out: &mut String, value: i128, exponent: usize) {
        // Enough for |i128::MIN| (39 digits) and the padding of a fraction.
        let mut buf = [0u8; 48];
        let mut n = value.unsigned_abs();
        let exponent = exponent.min(8);
        let mut start = buf.len();
        // At least one whole digit: 5 minor units at 2 digits are 0.05.
        while n > 0 || buf.len() - start <= exponent {
            start -= 1;
            buf[start] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        let digits = &buf[start..];
        let (whole, fraction) = digits.split_at(digits.len() - exponent);
        if value < 0 {
            out.push('-');
        }
        let grouped = whole.len() >= self.group_from;
        for (i, d) in whole.iter().enumerate() {
            if grouped && i > 0 && (whole.len() - i) % 3 == 0 {
                out.push(self.group);
            }
            out.push(char::from(*d));
        }
        if !fraction.is_empty() {
            out.push(self.decimal);
            out.extend(fraction.iter().map(|d| char::from(*d)));
        }
    }

    /// [`Conventions::push_amount`] as a new string.
    pub fn amount(&self, currency: Currency, minor: i128) -> String {
        let mut out = String::with_capacity(32);
        self.push_amount(&mut out, currency, minor);
        out
    }

    /// A calendar date (`31.10.2026`), appended to `out`.
    pub fn push_date(&self, out: &mut String, day: NaiveDate) {
        let (year, month, date) = (day.year(), day.month(), day.day());
        if !(0..=9999).contains(&year) {
            out.push_str(&day.format("%Y-%m-%d").to_string());
            return;
        }
        let year = year as u32;
        let four = |out: &mut String| {
            two(out, year / 100);
            two(out, year % 100);
        };
        match self.date {
            DateOrder::Iso => {
                four(out);
                out.push('-');
                two(out, month);
                out.push('-');
                two(out, date);
            }
            DateOrder::Ymd(sep) => {
                four(out);
                out.push(sep);
                two(out, month);
                out.push(sep);
                two(out, date);
            }
            DateOrder::Dmy(sep) => {
                two(out, date);
                out.push(sep);
                two(out, month);
                out.push(sep);
                four(out);
            }
            DateOrder::Mdy(sep) => {
                two(out, month);
                out.push(sep);
                two(out, date);
                out.push(sep);
                four(out);
            }
        }
    }

    /// [`Conventions::push_date`] as a new string.
    pub fn date(&self, day: NaiveDate) -> String {
        let mut out = String::with_capacity(10);
        self.push_date(&mut out, day);
        out
    }

    /// An instant in `tz`: RFC 3339 for the default (`2026-10-31T14:05:00+01:00`), else
    /// the local date, time and offset (`31.10.2026 14:05:00 +01:00`). Appended to `out`
    /// without allocating: the statement writes one per row.
    pub fn push_instant(&self, out: &mut String, at: DateTime<Utc>, tz: Timezone) {
        if self.date == DateOrder::Iso {
            text::push_local_instant(out, at, tz);
            return;
        }
        let offset = tz.0.offset_from_utc_datetime(&at.naive_utc()).fix();
        let seconds = offset.local_minus_utc();
        let local: NaiveDateTime = at.naive_utc() + offset;
        if !(0..=9999).contains(&local.year()) || seconds % 60 != 0 {
            // Outside four-digit years or with a seconds offset (historic LMT): exact.
            text::push_local_instant(out, at, tz);
            return;
        }
        self.push_date(out, local.date());
        out.push(' ');
        two(out, local.hour());
        out.push(':');
        two(out, local.minute());
        out.push(':');
        two(out, local.second());
        out.push(' ');
        out.push(if seconds < 0 { '-' } else { '+' });
        let minutes = seconds.unsigned_abs() / 60;
        two(out, minutes / 60);
        out.push(':');
        two(out, minutes % 60);
    }

    /// [`Conventions::push_instant`] as a new string.
    pub fn instant(&self, at: DateTime<Utc>, tz: Timezone) -> String {
        let mut out = String::with_capacity(32);
        self.push_instant(&mut out, at, tz);
        out
    }

    /// The widest instant this locale writes (digits share one width in the PDF's font).
    pub fn widest_instant(&self) -> &'static str {
        match self.date {
            DateOrder::Iso => "0000-00-00T00:00:00+00:00",
            _ => "00.00.0000 00:00:00 +00:00",
        }
    }

    /// Excel's number format for a local date and time in this locale. The separators are
    /// escaped so every viewer shows them as written (an unescaped `/` may be replaced by
    /// the viewer's own date separator).
    pub fn xlsx_datetime(&self) -> String {
        format!("{} hh:mm:ss", self.xlsx_date())
    }

    /// Excel's number format for a date in this locale.
    pub fn xlsx_date(&self) -> String {
        let (order, sep) = match self.date {
            DateOrder::Iso => return "yyyy-mm-dd".to_owned(),
            DateOrder::Ymd(sep) => (["yyyy", "mm", "dd"], sep),
            DateOrder::Dmy(sep) => (["dd", "mm", "yyyy"], sep),
            DateOrder::Mdy(sep) => (["mm", "dd", "yyyy"], sep),
        };
        order.join(&format!("\\{sep}"))
    }
}

fn two(out: &mut String, v: u32) {
    out.push(char::from(b'0' + (v / 10 % 10) as u8));
    out.push(char::from(b'0' + (v % 10) as u8));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locale(tag: &str) -> &'static Conventions {
        conventions(Some(&Locale::parse(tag).unwrap()))
    }

    fn c(code: &str) -> Currency {
        Currency::parse(code).unwrap()
    }

    #[test]
    fn amounts_are_grouped_and_marked_as_each_locale_writes_them() {
        let eur = c("EUR");
        for (tag, expected) in [
            (None, "249,978.81"),
            (Some("en-US"), "249,978.81"),
            (Some("en-GB"), "249,978.81"),
            (Some("de-DE"), "249.978,81"),
            (Some("de-AT"), "249\u{A0}978,81"),
            (Some("de-CH"), "249\u{2019}978.81"),
            (Some("fr-FR"), "249\u{202F}978,81"),
            (Some("es-ES"), "249.978,81"),
            (Some("it-IT"), "249.978,81"),
            (Some("nl-NL"), "249.978,81"),
            (Some("ja-JP"), "249,978.81"),
        ] {
            let conv = tag.map_or(&DEFAULT, locale);
            assert_eq!(conv.amount(eur, 24_997_881), expected, "{tag:?}");
        }
        let de = locale("de-DE");
        assert_eq!(de.amount(eur, -24_997_881), "-249.978,81");
        assert_eq!(de.amount(eur, 5), "0,05");
        assert_eq!(de.amount(eur, -5), "-0,05");
        assert_eq!(de.amount(eur, 0), "0,00");
        assert_eq!(de.amount(eur, 99_999), "999,99");
        assert_eq!(de.amount(eur, 100_000), "1.000,00");
        // Yen have no minor digits; dinars three.
        assert_eq!(locale("ja-JP").amount(c("JPY"), 1_234_567), "1,234,567");
        assert_eq!(de.amount(c("JPY"), -1_000), "-1.000");
        assert_eq!(de.amount(c("KWD"), 1_234_567), "1.234,567");
        assert_eq!(de.count(12_345), "12.345");
        assert_eq!(DEFAULT.count(0), "0");
        // Spanish leaves a lone thousand ungrouped.
        let es = locale("es-ES");
        assert_eq!(es.amount(eur, 123_456), "1234,56");
        assert_eq!(es.amount(eur, 1_234_567), "12.345,67");
        // The extremes of the sums are exact.
        assert_eq!(
            DEFAULT.amount(eur, i128::MIN),
            "-1,701,411,834,604,692,317,316,873,037,158,841,057.28"
        );
        assert_eq!(
            DEFAULT.amount(c("JPY"), i128::from(i64::MIN)),
            "-9,223,372,036,854,775,808"
        );
    }

    #[test]
    fn dates_and_instants_follow_the_locale_and_keep_the_offset() {
        let day = NaiveDate::from_ymd_opt(2026, 10, 31).unwrap();
        for (tag, expected) in [
            (None, "2026-10-31"),
            (Some("en-US"), "10/31/2026"),
            (Some("en-GB"), "31/10/2026"),
            (Some("de-DE"), "31.10.2026"),
            (Some("fr-FR"), "31/10/2026"),
            (Some("nl-NL"), "31-10-2026"),
            (Some("ja-JP"), "2026/10/31"),
        ] {
            assert_eq!(tag.map_or(&DEFAULT, locale).date(day), expected, "{tag:?}");
        }
        let berlin = Timezone::parse("Europe/Berlin").unwrap();
        let at: DateTime<Utc> = "2026-10-31T13:05:09Z".parse().unwrap();
        assert_eq!(DEFAULT.instant(at, berlin), "2026-10-31T14:05:09+01:00");
        assert_eq!(
            locale("de-DE").instant(at, berlin),
            "31.10.2026 14:05:09 +01:00"
        );
        let new_york = Timezone::parse("America/New_York").unwrap();
        assert_eq!(
            locale("en-US").instant(at, new_york),
            "10/31/2026 09:05:09 -04:00"
        );
        // The hour Berlin repeats on 2026-10-25 stays two different instants.
        let before: DateTime<Utc> = "2026-10-25T00:30:00Z".parse().unwrap();
        let after: DateTime<Utc> = "2026-10-25T01:30:00Z".parse().unwrap();
        assert_eq!(
            locale("de-DE").instant(before, berlin),
            "25.10.2026 02:30:00 +02:00"
        );
        assert_eq!(
            locale("de-DE").instant(after, berlin),
            "25.10.2026 02:30:00 +01:00"
        );
        assert!(
            locale("de-DE").widest_instant().len() >= locale("de-DE").instant(at, berlin).len()
        );
        assert_eq!(locale("de-DE").xlsx_datetime(), "dd\\.mm\\.yyyy hh:mm:ss");
        assert_eq!(locale("en-US").xlsx_date(), "mm\\/dd\\/yyyy");
        assert_eq!(DEFAULT.xlsx_datetime(), "yyyy-mm-dd hh:mm:ss");
    }

    #[test]
    fn tags_match_by_region_then_language_then_the_default() {
        for (tag, row) in [
            ("de-DE", "de-DE"),
            ("de-at", "de-AT"),
            ("de-CH-1996", "de-CH"),
            ("de-Latn-DE", "de-DE"),
            ("de-LU", "de-DE"),
            ("de", "de-DE"),
            ("en-AU", "en-US"),
            ("en-GB", "en-GB"),
            ("fr-CA", "fr-FR"),
            ("es-419", "es-ES"),
            ("ja", "ja-JP"),
            ("nl-BE", "nl-NL"),
            ("pt-BR", "default"),
            ("x-ledger", "default"),
            ("i-klingon", "default"),
        ] {
            assert_eq!(locale(tag).name, row, "{tag}");
        }
        assert_eq!(conventions(None).name, "default");
        // Every row names itself, so the table cannot shadow a row by a typo.
        for c in &TABLE {
            assert_eq!(locale(c.name).name, c.name);
        }
    }
}
