//! Cell writing shared by the statement, the summary and the first sheet: the workbook's
//! formats, amounts as exact numbers (or red text past 15 digits), instants and days as
//! date cells, free text cut to Excel's cell limit, and column widths.

use std::borrow::Cow;

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use rust_xlsxwriter::{Color, Format, FormatAlign, Worksheet, XlsxError};

use super::{EXACT_LIMIT, EXCEL_MAX_CELL_CHARS};
use crate::domain::{Currency, Timezone};
use crate::render::{DocumentHeader, locale, text};

/// The formats every workbook uses; built once, reused for every cell.
pub(super) struct Styles {
    pub(super) bold: Format,
    pub(super) title: Format,
    pub(super) datetime: Format,
    pub(super) date: Format,
    pub(super) count: Format,
    /// An amount too large for an exact number cell, as text.
    pub(super) wide: Format,
    /// DRAFT.
    pub(super) warning: Format,
}

impl Styles {
    /// The formats of a document for the merchant's locale (its dates; see the module docs).
    pub(super) fn new(header: &DocumentHeader) -> Self {
        let conv = locale::conventions(header.merchant.locale.as_ref());
        Self {
            bold: Format::new().set_bold(),
            title: Format::new().set_bold().set_font_size(14),
            datetime: Format::new().set_num_format(conv.xlsx_datetime()),
            date: Format::new().set_num_format(conv.xlsx_date()),
            count: Format::new().set_num_format("#,##0"),
            wide: Format::new()
                .set_font_color(Color::Red)
                .set_bold()
                .set_align(FormatAlign::Right),
            warning: Format::new().set_font_color(Color::Red).set_bold(),
        }
    }
}

/// `#,##0.00 "EUR"`: thousands separators, the currency's minor digits, its code.
pub(super) fn amount_format(currency: Currency) -> Format {
    let decimals = usize::from(currency.exponent());
    let pattern = if decimals == 0 {
        format!("#,##0 \"{}\"", currency.code())
    } else {
        format!("#,##0.{:0<decimals$} \"{}\"", "", currency.code())
    };
    Format::new().set_num_format(pattern)
}

/// `10^exponent` as an exact `f64` (exponents are 0–4).
pub(super) fn scale(currency: Currency) -> f64 {
    10f64.powi(i32::from(currency.exponent()))
}

/// Writes `minor` units as a number cell, or as exact text flagged by `styles.wide` when
/// a number cell could not show it exactly. Returns whether it fell back to text.
pub(super) fn write_amount(
    sheet: &mut Worksheet,
    row: u32,
    col: u16,
    currency: Currency,
    minor: i128,
    format: Option<&Format>,
    styles: &Styles,
) -> Result<bool, XlsxError> {
    if minor.unsigned_abs() < EXACT_LIMIT {
        // Exact: |minor| < 10^15 < 2^53, and the division is correctly rounded.
        let value = minor as f64 / scale(currency);
        match format {
            Some(f) => sheet.write_number_with_format(row, col, value, f)?,
            None => sheet.write_number(row, col, value)?,
        };
        Ok(false)
    } else {
        sheet.write_string_with_format(
            row,
            col,
            text::wide_amount(currency, minor),
            &styles.wide,
        )?;
        Ok(true)
    }
}

/// Days since 1899-12-30 (Excel's serial date), if Excel can show the instant: from
/// 1900-03-01 (before it Excel's 1900 leap-year bug shifts dates) to 9999-12-31.
pub(super) fn excel_serial(local: NaiveDateTime) -> Option<f64> {
    const UNIX_EPOCH_SERIAL: f64 = 25_569.0;
    const MS_PER_DAY: f64 = 86_400_000.0;
    let serial = UNIX_EPOCH_SERIAL + local.and_utc().timestamp_millis() as f64 / MS_PER_DAY;
    (61.0..2_958_466.0).contains(&serial).then_some(serial)
}

/// An instant as a date cell in local time of `tz`; as RFC 3339 text when Excel has no
/// date for it (the exclusive end of the year 9999).
pub(super) fn write_instant(
    sheet: &mut Worksheet,
    row: u32,
    col: u16,
    at: DateTime<Utc>,
    tz: Timezone,
    format: Option<&Format>,
) -> Result<(), XlsxError> {
    match excel_serial(at.with_timezone(&tz.0).naive_local()) {
        Some(serial) => match format {
            Some(f) => sheet.write_number_with_format(row, col, serial, f)?,
            None => sheet.write_number(row, col, serial)?,
        },
        None => sheet.write_string(row, col, text::local_instant(at, tz))?,
    };
    Ok(())
}

/// A local day as a date cell.
pub(super) fn write_day(
    sheet: &mut Worksheet,
    row: u32,
    col: u16,
    day: NaiveDate,
    styles: &Styles,
) -> Result<(), XlsxError> {
    match excel_serial(day.and_time(chrono::NaiveTime::MIN)) {
        Some(serial) => sheet.write_number_with_format(row, col, serial, &styles.date)?,
        None => sheet.write_string(row, col, day.format("%Y-%m-%d").to_string())?,
    };
    Ok(())
}

/// Free text as a cell value: cut to Excel's limit (counted in UTF-16 units, as Excel
/// counts) with a trailing `…` so the cut is visible.
pub(super) fn cell_text(text: &str) -> Cow<'_, str> {
    // UTF-8 is never shorter than UTF-16, so short strings need no counting.
    if text.len() <= EXCEL_MAX_CELL_CHARS {
        return Cow::Borrowed(text);
    }
    let mut units = 0;
    for (i, c) in text.char_indices() {
        units += c.len_utf16();
        if units > EXCEL_MAX_CELL_CHARS {
            // Keep what fits with room for the one-unit ellipsis.
            let mut keep = i;
            let mut kept_units = units - c.len_utf16();
            while kept_units + 1 > EXCEL_MAX_CELL_CHARS {
                let Some(last) = text[..keep].chars().next_back() else {
                    break;
                };
                keep -= last.len_utf8();
                kept_units -= last.len_utf16();
            }
            return Cow::Owned(format!("{}…", &text[..keep]));
        }
    }
    Cow::Borrowed(text)
}

pub(super) fn utc_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A column width (in characters) for amounts up to `max` minor units of `currency`.
pub(super) fn amount_width(currency: Currency, max: u128) -> f64 {
    let whole = max / 10u128.pow(u32::from(currency.exponent()));
    let digits = whole.checked_ilog10().map_or(1, |d| d + 1);
    let separators = (digits - 1) / 3;
    let fraction = match currency.exponent() {
        0 => 0,
        e => u32::from(e) + 1,
    };
    // Sign, a space and the code, and a little air.
    f64::from(digits + separators + fraction + 7).clamp(14.0, 40.0)
}

/// Byte length as a width in characters, between `min` and `max`.
pub(super) fn text_width(len: usize, min: f64, max: f64) -> f64 {
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    (f64::from(len) + 2.0).clamp(min, max)
}
