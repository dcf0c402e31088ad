//! The first sheet of every workbook (`Statement` or `Summary`): the document header and
//! one row of totals per currency, and the workbook's document properties.

use rust_xlsxwriter::{DocProperties, Worksheet};

use super::cells::{Styles, amount_format, cell_text, utc_text, write_amount};
use super::{EXACT_LIMIT, NO_ENTRIES};
use crate::domain::{Currency, CurrencyTotals, LedgerType, Stage};
use crate::render::{DocumentHeader, RenderError, text};

/// One currency's line on the first sheet.
pub(super) struct CurrencyLine {
    pub(super) currency: Currency,
    pub(super) sheets: Vec<String>,
    pub(super) totals: CurrencyTotals,
}

/// The first sheet: the document header and the totals per currency.
pub(super) fn front_sheet(
    header: &DocumentHeader,
    styles: &Styles,
    lines: &[CurrencyLine],
    entry_count: u64,
    wide: bool,
) -> Result<Worksheet, RenderError> {
    let mut sheet = Worksheet::new();
    let (title, name) = match header.ledger_type {
        LedgerType::Statement => ("Merchant statement", "Statement"),
        LedgerType::Summary => ("Merchant summary", "Summary"),
    };
    sheet.set_name(name)?;
    sheet.set_column_width(0, 30)?;
    sheet.set_column_width(1, 32)?;
    for col in 2..=6 {
        sheet.set_column_width(col, 20)?;
    }
    sheet.write_string_with_format(0, 0, title, &styles.title)?;
    let tz = header.timezone;
    let fields: [(&str, String); 13] = [
        ("Merchant", cell_text(&header.merchant.name).into_owned()),
        ("Merchant ID", header.merchant.id.to_string()),
        ("Ledger type", header.ledger_type.to_string()),
        ("Period", header.period.to_string()),
        ("Time zone", tz.to_string()),
        (
            "Period start (local)",
            text::local_instant(header.bounds.0, tz),
        ),
        (
            "Period end, exclusive (local)",
            text::local_instant(header.bounds.1, tz),
        ),
        ("Period start (UTC)", utc_text(header.bounds.0)),
        ("Period end, exclusive (UTC)", utc_text(header.bounds.1)),
        ("Stage", header.stage.to_string()),
        ("Version", header.version.to_string()),
        ("Generated at (UTC)", utc_text(header.generated_at)),
        ("Ledger ID", header.ledger_id.to_string()),
    ];
    let mut row = 2;
    for (label, value) in fields {
        sheet.write_string_with_format(row, 0, label, &styles.bold)?;
        if label == "Version" {
            sheet.write_number(row, 1, header.version)?;
        } else if label == "Stage" && header.stage == Stage::Draft {
            sheet.write_string_with_format(row, 1, value, &styles.warning)?;
            sheet.write_string_with_format(
                row,
                2,
                "The period had not ended when this was generated: entries may still change.",
                &styles.warning,
            )?;
        } else {
            // Ids stay text: a Snowflake id has more digits than a number cell shows.
            sheet.write_string(row, 1, value)?;
        }
        row += 1;
    }
    row += 1;
    let columns = [
        "Currency",
        "Sheets",
        "Opening balance",
        "Entries",
        "Credits",
        "Debits",
        "Closing balance",
    ];
    for (col, name) in (0u16..).zip(columns) {
        sheet.write_string_with_format(row, col, name, &styles.bold)?;
    }
    for line in lines {
        row += 1;
        let c = line.currency;
        let format = amount_format(c);
        let t = &line.totals;
        sheet.write_string(row, 0, c.code())?;
        sheet.write_string(row, 1, line.sheets.join(", "))?;
        write_amount(
            &mut sheet,
            row,
            2,
            c,
            i128::from(t.opening),
            Some(&format),
            styles,
        )?;
        sheet.write_number_with_format(row, 3, t.count as f64, &styles.count)?;
        write_amount(&mut sheet, row, 4, c, t.credits, Some(&format), styles)?;
        write_amount(&mut sheet, row, 5, c, t.debits, Some(&format), styles)?;
        write_amount(&mut sheet, row, 6, c, t.closing, Some(&format), styles)?;
    }
    row += 2;
    if entry_count == 0 {
        sheet.write_string_with_format(row, 0, NO_ENTRIES, &styles.bold)?;
        row += 1;
    }
    if wide || lines.iter().any(|l| too_wide(&l.totals)) {
        sheet.write_string_with_format(
            row,
            0,
            "Amounts in red text exceed the 15 digits a number cell shows exactly; they are exact decimal text.",
            &styles.warning,
        )?;
    }
    Ok(sheet)
}

fn too_wide(t: &CurrencyTotals) -> bool {
    [i128::from(t.opening), t.credits, t.debits, t.closing]
        .iter()
        .any(|v| v.unsigned_abs() >= EXACT_LIMIT)
}

pub(super) fn properties(header: &DocumentHeader) -> DocProperties {
    DocProperties::new()
        .set_title(format!(
            "{} {} {} ({})",
            header.ledger_type, header.merchant.id, header.period, header.stage
        ))
        .set_subject("Merchant ledger")
        .set_comment(format!(
            "Ledger {} version {}",
            header.ledger_id, header.version
        ))
}
