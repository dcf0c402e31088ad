//! The SUMMARY PDF: the same header and footer as the statement, then per currency its
//! opening balance, a table of totals per local day, a table per entry type, the currency's
//! total and its closing balance. No single entries. The total, the closing balance and the
//! control totals reported are summed from the day rows as they are drawn.

use std::io::Write;

use chrono::NaiveDate;

use super::document;
use super::font::fonts;
use super::layout::{
    self, Align, BASELINE, Canvas, Column, LINE_HEIGHT, ROW_HEIGHT, TABLE_HEAD_HEIGHT, TEXT_SIZE,
};
use super::plan::{Block, Flow, Sections, draw_heading, draw_no_entries, draw_opening, plan};
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

const TYPES_GAP: f32 = 6.0;

/// A currency's closing blocks in the summary.
pub(super) enum Closing {
    TypeHead,
    Types(usize),
    Total(usize),
    Balance(usize),
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
    let pages = plan(summary);
    let bytes = document::render(header, fonts, &pages, |canvas, top, block| {
        painter.draw(canvas, top, block);
        Ok(())
    })?;
    out.write_all(&bytes)?;
    Ok((control_totals(painter.drawn), out))
}

/// The summary as the page planner sees it: the rows are the day rows; a currency's
/// closing blocks (the type table, the total and the closing balance) stay together.
impl Sections for Summary {
    type Closing = Closing;
    const HEAD_ABOVE_CLOSING: bool = false;

    fn sections(&self) -> usize {
        self.currencies.len()
    }

    fn rows(&self, section: usize) -> usize {
        self.currencies[section].days.len()
    }

    fn row_height(&self, _section: usize, _row: usize) -> f32 {
        ROW_HEIGHT
    }

    fn closing_height(&self, section: usize) -> f32 {
        let types = self.currencies[section].types.len();
        let table = if types == 0 {
            0.0
        } else {
            TYPES_GAP + TABLE_HEAD_HEIGHT + types as f32 * ROW_HEIGHT
        };
        table + 2.0 * LINE_HEIGHT + 4.0
    }

    fn place_closing(&self, flow: &mut Flow<Block<Closing>>, section: usize) {
        let types = self.currencies[section].types.len();
        if types > 0 {
            flow.skip(TYPES_GAP);
            flow.place(TABLE_HEAD_HEIGHT, Block::Closing(Closing::TypeHead));
            flow.place(
                types as f32 * ROW_HEIGHT,
                Block::Closing(Closing::Types(section)),
            );
        }
        flow.place(LINE_HEIGHT + 4.0, Block::Closing(Closing::Total(section)));
        flow.place(LINE_HEIGHT, Block::Closing(Closing::Balance(section)));
    }
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
    fn draw(&mut self, canvas: &mut Canvas<'_, '_>, top: f32, block: &Block<Closing>) {
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
            Block::Header => document::document_header(canvas, top, header, conv),
            Block::NoEntries | Block::NoRows => {
                draw_no_entries(canvas, top, &day_columns[0], balance_column);
            }
            Block::Heading { section, continued } => {
                draw_heading(
                    canvas,
                    top,
                    summary.currencies[*section].currency,
                    *continued,
                );
            }
            Block::Opening(i) => {
                let c = &summary.currencies[*i];
                drawn[*i] = draw_opening(
                    canvas,
                    top,
                    (header, conv),
                    balance_column,
                    c.currency,
                    c.opening,
                );
            }
            Block::TableHead => canvas.table_head(day_columns, top),
            Block::Closing(Closing::TypeHead) => canvas.table_head(type_columns, top),
            Block::Rows { section, rows } => {
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
            Block::Closing(Closing::Types(i)) => {
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
            Block::Closing(Closing::Total(i)) => {
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
            Block::Closing(Closing::Balance(i)) => {
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
