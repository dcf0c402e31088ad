//! The SUMMARY PDF: the same header and footer as the statement, then per currency its
//! opening balance, a table of totals per local day, a table per entry type, the currency's
//! total and its closing balance. No single entries. The total, the closing balance and the
//! control totals reported are summed from the day rows as they are drawn.

use std::io::Write;
use std::ops::Range;

use chrono::NaiveDate;

use super::font::fonts;
use super::layout::{
    self, Align, BASELINE, Canvas, Column, Flow, HEADER_HEIGHT, HEADING_HEIGHT, LINE_HEIGHT,
    NO_ENTRIES, Pages, ROW_HEIGHT, SECTION_GAP, TABLE_HEAD_HEIGHT, TEXT_SIZE,
};
use super::{Tally, control_totals};
use crate::domain::{ControlTotals, Currency};
use crate::render::locale::{self, Conventions};
use crate::render::summary::{Bucket, Summary};
use crate::render::{DocumentHeader, RenderError};

fn table(key: &'static str) -> [Column; 5] {
    layout::columns(
        [
            (key, 130.0, Align::Left),
            ("Entries", 60.0, Align::Right),
            ("Credits", 0.0, Align::Right),
            ("Debits", 0.0, Align::Right),
            ("Net", 0.0, Align::Right),
        ],
        5.0,
    )
}

const OPENING_HEIGHT: f32 = LINE_HEIGHT + 2.0;
const TYPES_GAP: f32 = 6.0;

/// What the summary draws, in order.
enum Block {
    Header,
    NoEntries,
    Heading { section: usize, continued: bool },
    Opening(usize),
    DayHead,
    Days { section: usize, rows: Range<usize> },
    TypeHead,
    Types(usize),
    NoRows,
    Total(usize),
    Closing(usize),
}

/// Writes `summary` as a PDF (the [`WriteSummary`](crate::render::summary::WriteSummary)
/// of the PDF format) and returns the control totals summed from the day rows drawn.
pub fn write_summary<W: Write>(
    header: &DocumentHeader,
    summary: &Summary,
    mut out: W,
) -> Result<(ControlTotals, W), RenderError> {
    let fonts = fonts()?;
    let conv = locale::conventions(header.merchant.locale.as_ref());
    let mut painter = Painter {
        header,
        conv,
        summary,
        days: summary
            .currencies
            .iter()
            .map(|c| c.days.iter().map(|(d, b)| (*d, *b)).collect())
            .collect(),
        day_columns: table("Day (local)"),
        type_columns: table("Entry type"),
        drawn: summary
            .currencies
            .iter()
            .map(|_| Tally::default())
            .collect(),
    };
    let pages = plan(summary, &painter.days);
    let bytes = layout::render(header, fonts, &pages, |canvas, top, block| {
        painter.draw(canvas, top, block);
        Ok(())
    })?;
    out.write_all(&bytes)?;
    Ok((control_totals(painter.drawn), out))
}

/// Cuts the summary into pages; the day table's column header repeats on every page it
/// continues on, the type table with the total and closing balance is never split.
fn plan(summary: &Summary, days: &[Vec<(NaiveDate, Bucket)>]) -> Pages<Block> {
    let mut flow = Flow::new();
    flow.place(HEADER_HEIGHT, Block::Header);
    if summary.currencies.is_empty() {
        flow.place(LINE_HEIGHT, Block::NoEntries);
    }
    for (i, c) in summary.currencies.iter().enumerate() {
        let rows = days[i].len();
        let continued = |flow: &mut Flow<Block>| {
            flow.page_break();
            flow.place(
                HEADING_HEIGHT,
                Block::Heading {
                    section: i,
                    continued: true,
                },
            );
        };
        let first = if rows == 0 {
            LINE_HEIGHT
        } else {
            TABLE_HEAD_HEIGHT + ROW_HEIGHT
        };
        if !flow.fits(HEADING_HEIGHT + OPENING_HEIGHT + first) {
            flow.page_break();
        }
        flow.place(
            HEADING_HEIGHT,
            Block::Heading {
                section: i,
                continued: false,
            },
        );
        flow.place(OPENING_HEIGHT, Block::Opening(i));
        if rows == 0 {
            flow.place(LINE_HEIGHT, Block::NoRows);
        }
        let mut next = 0;
        while next < rows {
            if !flow.fits(TABLE_HEAD_HEIGHT + ROW_HEIGHT) {
                continued(&mut flow);
            }
            flow.place(TABLE_HEAD_HEIGHT, Block::DayHead);
            let n = flow.rows_left(ROW_HEIGHT).min(rows - next).max(1);
            flow.place(
                n as f32 * ROW_HEIGHT,
                Block::Days {
                    section: i,
                    rows: next..next + n,
                },
            );
            next += n;
        }
        let types = if c.types.is_empty() {
            0.0
        } else {
            TYPES_GAP + TABLE_HEAD_HEIGHT + c.types.len() as f32 * ROW_HEIGHT
        };
        if !flow.fits(types + 2.0 * LINE_HEIGHT + 4.0) {
            continued(&mut flow);
        }
        if !c.types.is_empty() {
            flow.skip(TYPES_GAP);
            flow.place(TABLE_HEAD_HEIGHT, Block::TypeHead);
            flow.place(c.types.len() as f32 * ROW_HEIGHT, Block::Types(i));
        }
        flow.place(LINE_HEIGHT + 4.0, Block::Total(i));
        flow.place(LINE_HEIGHT, Block::Closing(i));
        flow.skip(SECTION_GAP);
    }
    flow.finish()
}

/// One table row: key, count, credits, debits, net.
fn bucket_row(
    canvas: &mut Canvas<'_, '_>,
    conv: &Conventions,
    columns: &[Column; 5],
    currency: Currency,
    y: f32,
    key: &str,
    (count, credits, debits): (u64, i128, i128),
) {
    let line = &mut canvas.line;
    line.cell(&columns[0], key);
    line.number(&columns[1], &conv.count(count));
    line.number(&columns[2], &conv.amount(currency, credits));
    line.number(&columns[3], &conv.amount(currency, debits));
    line.number(&columns[4], &conv.amount(currency, credits + debits));
    line.draw(canvas.surface, y);
}

/// Draws the summary's blocks and tallies what it drew.
struct Painter<'a> {
    header: &'a DocumentHeader,
    conv: &'static Conventions,
    summary: &'a Summary,
    /// Each currency's day rows, in date order.
    days: Vec<Vec<(NaiveDate, Bucket)>>,
    day_columns: [Column; 5],
    type_columns: [Column; 5],
    drawn: Vec<Tally>,
}

impl Painter<'_> {
    fn draw(&mut self, canvas: &mut Canvas<'_, '_>, top: f32, block: &Block) {
        let Painter {
            header,
            conv,
            summary,
            days,
            day_columns,
            type_columns,
            drawn,
        } = self;
        let fonts = canvas.fonts;
        let balance_column = &day_columns[4];
        match block {
            Block::Header => layout::document_header(canvas, top, header, conv),
            Block::NoEntries | Block::NoRows => {
                let column = Column {
                    title: "",
                    x: day_columns[0].x,
                    width: balance_column.x - day_columns[0].x,
                    align: Align::Left,
                };
                canvas.text(
                    &fonts.regular,
                    8.0,
                    &column,
                    top + BASELINE + 1.0,
                    NO_ENTRIES,
                );
            }
            Block::Heading { section, continued } => {
                let code = summary.currencies[*section].currency.code();
                let title = if *continued {
                    format!("{code} (continued)")
                } else {
                    code.to_owned()
                };
                canvas.heading(top, &title);
            }
            Block::Opening(i) => {
                let c = &summary.currencies[*i];
                drawn[*i] = Tally {
                    currency: Some(c.currency),
                    opening: c.opening,
                    ..Tally::default()
                };
                let label = format!(
                    "Opening balance at {}",
                    conv.instant(header.bounds.0, header.timezone)
                );
                canvas.label_value(
                    top,
                    &label,
                    balance_column,
                    &conv.amount(c.currency, i128::from(c.opening)),
                );
            }
            Block::DayHead => canvas.table_head(day_columns, top),
            Block::TypeHead => canvas.table_head(type_columns, top),
            Block::Days { section, rows } => {
                let currency = summary.currencies[*section].currency;
                let d = &mut drawn[*section];
                for (k, (day, b)) in days[*section][rows.clone()].iter().enumerate() {
                    d.add(b.count, b.credits, b.debits);
                    canvas.line.reset(&fonts.regular, TEXT_SIZE);
                    bucket_row(
                        canvas,
                        conv,
                        day_columns,
                        currency,
                        top + k as f32 * ROW_HEIGHT + BASELINE,
                        &conv.date(*day),
                        (b.count, b.credits, b.debits),
                    );
                }
            }
            Block::Types(i) => {
                let c = &summary.currencies[*i];
                for (k, (entry_type, b)) in c.types.iter().enumerate() {
                    canvas.line.reset(&fonts.regular, TEXT_SIZE);
                    bucket_row(
                        canvas,
                        conv,
                        type_columns,
                        c.currency,
                        top + k as f32 * ROW_HEIGHT + BASELINE,
                        entry_type.as_str(),
                        (b.count, b.credits, b.debits),
                    );
                }
            }
            Block::Total(i) => {
                let d = &drawn[*i];
                let currency = summary.currencies[*i].currency;
                canvas.rule(top + 1.0);
                canvas.line.reset(&fonts.bold, TEXT_SIZE + 0.5);
                bucket_row(
                    canvas,
                    conv,
                    day_columns,
                    currency,
                    top + 4.0 + BASELINE + 1.0,
                    "Total",
                    (d.count, d.credits, d.debits),
                );
            }
            Block::Closing(i) => {
                let d = &drawn[*i];
                let currency = summary.currencies[*i].currency;
                let label = format!(
                    "Closing balance at {}",
                    conv.instant(header.bounds.1, header.timezone)
                );
                canvas.label_value(
                    top,
                    &label,
                    balance_column,
                    &conv.amount(currency, d.closing()),
                );
            }
        }
    }
}
