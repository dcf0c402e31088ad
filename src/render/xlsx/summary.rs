//! The XLSX summary: the first sheet, then per currency one sheet with the rows of the CSV
//! summary (opening balance, a row per local day and per entry type, total, closing).

use std::io::Write;

use rust_xlsxwriter::{Worksheet, XlsxError};

use super::cells::{Styles, amount_format, amount_width, write_amount, write_day, write_instant};
use super::front::{CurrencyLine, front_sheet};
use super::{NO_ENTRIES, SUMMARY_COLUMNS, new_workbook, save};
use crate::domain::{ControlTotals, Currency, CurrencyTotals};
use crate::render::summary::{Bucket, CurrencySummary, Summary};
use crate::render::{DocumentHeader, RenderError};

/// Writes `summary` as a workbook: the first sheet with the header and the totals per
/// currency, then per currency a sheet with an `OPENING_BALANCE` row (the period's local
/// start and the balance), one `DAY` row per local day with entries (date cell, count,
/// credits, debits, net, balance at the day's end), one `TYPE` row per entry type, a
/// `TOTAL` row and a `CLOSING_BALANCE` row. Debits are the sum of the negative amounts. The
/// totals reported, and the totals and closing balances shown, are summed from the day rows
/// written.
pub fn write_summary<W: Write + Send>(
    header: &DocumentHeader,
    summary: &Summary,
    mut out: W,
) -> Result<(ControlTotals, W), RenderError> {
    let styles = Styles::new(header);
    let mut workbook = new_workbook(header);
    let mut written = ControlTotals::default();
    let mut lines = Vec::new();
    let mut sheets = Vec::new();
    let mut wide = false;
    for c in &summary.currencies {
        let (sheet, totals, sheet_wide) = summary_sheet(header, &styles, c)?;
        wide |= sheet_wide;
        written.entry_count += totals.count;
        written.currencies.insert(c.currency, totals);
        lines.push(CurrencyLine {
            currency: c.currency,
            sheets: vec![sheet.name()],
            totals,
        });
        sheets.push(sheet);
    }
    let front = front_sheet(header, &styles, &lines, written.entry_count, wide)?;
    workbook.push_worksheet(front);
    for sheet in sheets {
        workbook.push_worksheet(sheet);
    }
    save(&mut workbook, &mut out)?;
    Ok((written, out))
}

/// One currency's summary sheet, the totals summed from its day rows, and whether an
/// amount had to be written as text.
fn summary_sheet(
    header: &DocumentHeader,
    styles: &Styles,
    c: &CurrencySummary,
) -> Result<(Worksheet, CurrencyTotals, bool), RenderError> {
    let currency = c.currency;
    let format = amount_format(currency);
    let tz = header.timezone;
    let mut sheet = Worksheet::new();
    sheet.set_name(currency.code())?;
    for col in 3..=6 {
        sheet.set_column_format(col, &format)?;
    }
    for (col, name) in (0u16..).zip(SUMMARY_COLUMNS) {
        sheet.write_string_with_format(0, col, name, &styles.bold)?;
    }
    sheet.set_freeze_panes(1, 0)?;
    let mut wide = false;
    let mut totals = CurrencyTotals {
        opening: c.opening,
        ..CurrencyTotals::default()
    };
    let mut row = 1;
    sheet.write_string(row, 0, "OPENING_BALANCE")?;
    write_instant(
        &mut sheet,
        row,
        1,
        header.bounds.0,
        tz,
        Some(&styles.datetime),
    )?;
    wide |= write_amount(
        &mut sheet,
        row,
        6,
        currency,
        i128::from(c.opening),
        None,
        styles,
    )?;
    let mut balance = i128::from(c.opening);
    let mut widest = balance.unsigned_abs();
    for (day, b) in &c.days {
        row += 1;
        sheet.write_string(row, 0, "DAY")?;
        write_day(&mut sheet, row, 1, *day, styles)?;
        balance += b.net();
        wide |= bucket_row(&mut sheet, row, currency, b, styles)?;
        wide |= write_amount(&mut sheet, row, 6, currency, balance, None, styles)?;
        totals.count += b.count;
        totals.credits += b.credits;
        totals.debits += b.debits;
        widest = widest.max(balance.unsigned_abs());
    }
    if c.days.is_empty() {
        row += 1;
        sheet.write_string(row, 1, NO_ENTRIES)?;
    }
    for (entry_type, b) in &c.types {
        row += 1;
        sheet.write_string(row, 0, "TYPE")?;
        sheet.write_string(row, 1, entry_type.as_str())?;
        wide |= bucket_row(&mut sheet, row, currency, b, styles)?;
    }
    totals.closing = i128::from(totals.opening) + totals.credits + totals.debits;
    row += 1;
    sheet.write_string(row, 0, "TOTAL")?;
    let total = Bucket {
        count: totals.count,
        credits: totals.credits,
        debits: totals.debits,
    };
    wide |= bucket_row(&mut sheet, row, currency, &total, styles)?;
    row += 1;
    sheet.write_string(row, 0, "CLOSING_BALANCE")?;
    write_instant(
        &mut sheet,
        row,
        1,
        header.bounds.1,
        tz,
        Some(&styles.datetime),
    )?;
    wide |= write_amount(&mut sheet, row, 6, currency, totals.closing, None, styles)?;
    sheet.autofilter(0, 0, row, 6)?;
    widest = widest
        .max(totals.credits.unsigned_abs())
        .max(totals.debits.unsigned_abs())
        .max(totals.closing.unsigned_abs());
    sheet.set_column_width(0, 18)?;
    sheet.set_column_width(1, 20)?;
    sheet.set_column_width(2, 10)?;
    let width = amount_width(currency, widest);
    for col in 3..=6 {
        sheet.set_column_width(col, width)?;
    }
    Ok((sheet, totals, wide))
}

/// Count, credits, debits and net of a bucket in columns C–F.
fn bucket_row(
    sheet: &mut Worksheet,
    row: u32,
    currency: Currency,
    b: &Bucket,
    styles: &Styles,
) -> Result<bool, XlsxError> {
    sheet.write_number_with_format(row, 2, b.count as f64, &styles.count)?;
    let mut wide = write_amount(sheet, row, 3, currency, b.credits, None, styles)?;
    wide |= write_amount(sheet, row, 4, currency, b.debits, None, styles)?;
    wide |= write_amount(sheet, row, 5, currency, b.net(), None, styles)?;
    Ok(wide)
}
