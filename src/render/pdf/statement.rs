//! The STATEMENT PDF. Entries arrive interleaved across currencies but the document shows
//! one currency after another, so rows are held until `finish`: per currency an arena of
//! cell text already cleaned and wrapped to its column (never an `Entry` clone) plus the
//! booking time, type, amount and line count of each row. Reference and description wrap
//! onto at most [`MAX_CELL_LINES`] lines (an accountant looks for the ids at their ends),
//! so a row's height is known when it arrives and the page plan still counts every page
//! before drawing. The arena therefore holds at most three lines of those two cells per row
//! — bounded per row like before, never the whole entry. Nothing is ever spilled to disk.
//! Dates and amounts are formatted while drawing; running balances and the control totals
//! are summed from the rows as they are drawn.

use std::collections::BTreeMap;
use std::io::Write;

use chrono::{DateTime, Utc};

use super::document;
use super::font::{Face, Fonts, fonts};
use super::layout::{
    self, Align, BASELINE, Canvas, Column, LINE_HEIGHT, MAX_CELL_LINES, TEXT_SIZE, WRAP_LEADING,
    row_height,
};
use super::plan::{Block, Flow, Sections, draw_heading, draw_no_entries, draw_opening, plan};
use super::{Tally, control_totals};
use crate::domain::{ControlTotals, Currency, Entry, EntryType};
use crate::render::locale::{self, Conventions};
use crate::render::{DocumentHeader, RenderError, Renderer, opening_balances};

/// The statement's columns, left to right.
const DATE: usize = 0;
const ID: usize = 1;
pub(super) const REFERENCE: usize = 2;
pub(super) const DESCRIPTION: usize = 3;
const TYPE: usize = 4;
const AMOUNT: usize = 5;
const BALANCE: usize = 6;

pub(super) fn table(face: &Face, conv: &Conventions) -> [Column; 7] {
    // Wide enough for any local time the locale writes (DejaVu's digits share one width).
    let date = face.width(conv.widest_instant(), TEXT_SIZE).ceil() + 1.0;
    let kind = EntryType::ALL
        .iter()
        .map(|t| face.width(t.as_str(), TEXT_SIZE))
        .fold(0.0, f32::max)
        .ceil()
        + 1.0;
    layout::columns(
        [
            ("Date (local)", date, Align::Left),
            ("Entry id", 66.0, Align::Left),
            ("Reference", 58.0, Align::Left),
            ("Description", 0.0, Align::Left),
            ("Type", kind, Align::Left),
            ("Amount", 62.0, Align::Right),
            ("Balance", 68.0, Align::Right),
        ],
        5.0,
    )
}

const TOTALS_HEIGHT: f32 = 6.0 + 4.0 * LINE_HEIGHT;

/// One entry as the statement keeps it until drawn.
struct Row {
    booked_at: DateTime<Utc>,
    amount: i64,
    /// Start of the row's text in the arena.
    start: u32,
    /// Ends of the id, reference and description in the arena; the last two hold their
    /// lines separated by `\n`.
    ends: [u32; 3],
    entry_type: EntryType,
    /// Lines of the tallest cell (1 to [`MAX_CELL_LINES`]).
    lines: u8,
}

impl Row {
    fn height(&self) -> f32 {
        row_height(self.lines)
    }
}

/// One currency's part of the statement.
struct Section {
    currency: Currency,
    opening: i64,
    /// Running balance while entries arrive, only to fail early on overflow.
    balance: i64,
    /// Cleaned, wrapped cell text of every row, back to back.
    text: String,
    rows: Vec<Row>,
}

impl Section {
    fn new(currency: Currency, opening: i64) -> Section {
        Section {
            currency,
            opening,
            balance: opening,
            text: String::new(),
            rows: Vec::new(),
        }
    }

    fn push(
        &mut self,
        entry: &Entry,
        face: &Face,
        columns: &[Column; 7],
        scratch: &mut Vec<(char, u16)>,
    ) -> Result<(), RenderError> {
        let offset = |len: usize| {
            u32::try_from(len).map_err(|_| {
                RenderError::Io(std::io::Error::other(
                    "the statement's text exceeds what one document holds",
                ))
            })
        };
        let start = offset(self.text.len())?;
        let mut ends = [0u32; 3];
        let mut lines = 1;
        for (end, (value, column)) in ends.iter_mut().zip([
            (&entry.id, ID),
            (&entry.reference, REFERENCE),
            (&entry.description, DESCRIPTION),
        ]) {
            // An entry id identifies the entry: kept whole on one line (drawn smaller when
            // too wide, like a number); reference and description wrap in their column.
            if column == ID {
                face.fit_into(&mut self.text, value, TEXT_SIZE, f32::INFINITY);
            } else {
                let n = face.wrap_into(
                    &mut self.text,
                    scratch,
                    value,
                    TEXT_SIZE,
                    columns[column].width,
                    MAX_CELL_LINES,
                );
                lines = lines.max(n);
            }
            *end = offset(self.text.len())?;
        }
        self.rows.push(Row {
            booked_at: entry.booked_at,
            amount: entry.amount,
            start,
            ends,
            entry_type: entry.entry_type,
            lines: u8::try_from(lines.min(MAX_CELL_LINES)).unwrap_or(1),
        });
        Ok(())
    }

    fn cell(&self, row: &Row, index: usize) -> &str {
        let start = if index == 0 {
            row.start
        } else {
            row.ends[index - 1]
        };
        self.text
            .get(start as usize..row.ends[index] as usize)
            .unwrap_or("")
    }
}

/// A streaming PDF statement (A4 portrait): document header, per currency its opening
/// balance, the entries with running balances and the totals; `Page X of Y` and the ledger
/// id on every page.
pub struct PdfStatement<W: Write> {
    header: DocumentHeader,
    out: W,
    fonts: &'static Fonts,
    /// How numbers and dates are written (the merchant's locale).
    conv: &'static Conventions,
    columns: [Column; 7],
    sections: BTreeMap<Currency, Section>,
    entries: usize,
    /// Reused by every row's wrapping.
    scratch: Vec<(char, u16)>,
}

/// The most entries a PDF statement holds. Its rows wait in memory until the page count is
/// known (~0.2 KiB each) and the finished document is assembled in memory, so the size
/// must be bounded; 250,000 rows are ~5,000 pages and ~90 MiB for the whole process. A
/// longer period is refused with a message naming the formats without a limit. Wrapping
/// keeps at most three lines of reference and description a row (a few hundred bytes more
/// at worst): with the generated sample year (~15% of rows wrap) the renderer's peak RSS
/// at this limit went from 72.6 to 78.7 MiB.
pub const MAX_PDF_STATEMENT_ENTRIES: usize = 250_000;

impl<W: Write> PdfStatement<W> {
    /// A statement of `header`'s ledger, written to `out` when finished.
    pub fn new(header: &DocumentHeader, out: W) -> Result<Self, RenderError> {
        let sections = opening_balances(&header.opening_balances)?
            .into_iter()
            .map(|(currency, opening)| (currency, Section::new(currency, opening)))
            .collect();
        let fonts = fonts()?;
        let conv = locale::conventions(header.merchant.locale.as_ref());
        Ok(Self {
            header: header.clone(),
            out,
            fonts,
            conv,
            columns: table(&fonts.regular, conv),
            sections,
            entries: 0,
            scratch: Vec::new(),
        })
    }
}

impl<W: Write + Send> Renderer<W> for PdfStatement<W> {
    fn entry(&mut self, entry: &Entry) -> Result<(), RenderError> {
        self.entries += 1;
        if self.entries > MAX_PDF_STATEMENT_ENTRIES {
            return Err(RenderError::TooLarge(format!(
                "a PDF statement holds at most {MAX_PDF_STATEMENT_ENTRIES} entries and this period has more; request CSV or XLSX, a SUMMARY, or a shorter period"
            )));
        }
        // A currency first seen inside the period opens at zero, visibly.
        let section = self
            .sections
            .entry(entry.currency)
            .or_insert_with(|| Section::new(entry.currency, 0));
        section.balance = section
            .balance
            .checked_add(entry.amount)
            .ok_or_else(|| RenderError::Overflow(entry.currency.to_string()))?;
        section.push(entry, &self.fonts.regular, &self.columns, &mut self.scratch)
    }

    fn finish(self: Box<Self>) -> Result<(ControlTotals, W), RenderError> {
        let Self {
            header,
            mut out,
            fonts,
            conv,
            columns,
            sections,
            entries: _,
            scratch: _,
        } = *self;
        let sections: Vec<Section> = sections.into_values().collect();
        let pages = plan(sections.as_slice());
        let mut painter = Painter {
            header: &header,
            conv,
            columns: &columns,
            sections: &sections,
            drawn: sections.iter().map(|_| Tally::default()).collect(),
            balances: vec![0; sections.len()],
        };
        let bytes = document::render(&header, fonts, &pages, |canvas, top, block| {
            painter.draw(canvas, top, block)
        })?;
        let totals = control_totals(painter.drawn);
        drop(pages);
        drop(sections);
        out.write_all(&bytes)?;
        Ok((totals, out))
    }
}

/// The statement as the page planner sees it: a currency's closing block is its totals,
/// and its column header repeats above totals pushed to a page of their own.
impl Sections for [Section] {
    /// The currency's index.
    type Closing = usize;
    const HEAD_ABOVE_CLOSING: bool = true;

    fn sections(&self) -> usize {
        self.len()
    }

    fn rows(&self, section: usize) -> usize {
        self[section].rows.len()
    }

    fn row_height(&self, section: usize, row: usize) -> f32 {
        self[section].rows[row].height()
    }

    fn closing_height(&self, _section: usize) -> f32 {
        TOTALS_HEIGHT
    }

    fn place_closing(&self, flow: &mut Flow<Block<usize>>, section: usize) {
        flow.place(TOTALS_HEIGHT, Block::Closing(section));
    }
}

fn overflow(currency: Currency) -> RenderError {
    RenderError::Overflow(currency.to_string())
}

/// Draws the statement's blocks; running balances and tallies grow with the rows drawn.
struct Painter<'a> {
    header: &'a DocumentHeader,
    conv: &'static Conventions,
    columns: &'a [Column; 7],
    sections: &'a [Section],
    drawn: Vec<Tally>,
    balances: Vec<i64>,
}

impl Painter<'_> {
    fn draw(
        &mut self,
        canvas: &mut Canvas<'_, '_>,
        top: f32,
        block: &Block<usize>,
    ) -> Result<(), RenderError> {
        let (header, conv, columns, sections) =
            (self.header, self.conv, self.columns, self.sections);
        let (drawn, balances) = (&mut self.drawn, &mut self.balances);
        let fonts = canvas.fonts;
        match block {
            Block::Header => document::document_header(canvas, top, header, conv),
            Block::NoEntries | Block::NoRows => {
                draw_no_entries(canvas, top, &columns[0], &columns[BALANCE]);
            }
            Block::Heading { section, continued } => {
                draw_heading(canvas, top, sections[*section].currency, *continued);
            }
            Block::Opening(i) => {
                let s = &sections[*i];
                drawn[*i] = draw_opening(
                    canvas,
                    top,
                    (header, conv),
                    &columns[BALANCE],
                    s.currency,
                    s.opening,
                );
                balances[*i] = s.opening;
            }
            Block::TableHead => canvas.table_head(columns, top),
            Block::Rows { section, rows } => {
                let s = &sections[*section];
                let d = &mut drawn[*section];
                let balance = &mut balances[*section];
                let currency = s.currency;
                // One glyph run for the whole block of rows.
                let line = &mut canvas.line;
                line.reset(&fonts.regular, TEXT_SIZE);
                // Cell text is formatted into reused buffers: no allocation per cell.
                let (mut date, mut amount_text, mut balance_text) =
                    (String::new(), String::new(), String::new());
                let mut y = 0.0;
                for row in &s.rows[rows.clone()] {
                    *balance = balance
                        .checked_add(row.amount)
                        .ok_or_else(|| overflow(currency))?;
                    let amount = i128::from(row.amount);
                    d.add(1, amount.max(0), amount.min(0));
                    line.row(y);
                    date.clear();
                    conv.push_instant(&mut date, row.booked_at, header.timezone);
                    line.cell(&columns[DATE], &date);
                    line.number(&columns[ID], s.cell(row, 0));
                    let mut reference = s.cell(row, 1).split('\n');
                    let mut description = s.cell(row, 2).split('\n');
                    line.cell(&columns[REFERENCE], reference.next().unwrap_or(""));
                    line.cell(&columns[DESCRIPTION], description.next().unwrap_or(""));
                    line.cell(&columns[TYPE], row.entry_type.as_str());
                    amount_text.clear();
                    conv.push_amount(&mut amount_text, currency, amount);
                    line.number(&columns[AMOUNT], &amount_text);
                    balance_text.clear();
                    conv.push_amount(&mut balance_text, currency, i128::from(*balance));
                    line.number(&columns[BALANCE], &balance_text);
                    // The wrapped lines below the row's first, in the same glyph run.
                    for (column, rest) in [(REFERENCE, reference), (DESCRIPTION, description)] {
                        for (k, text) in rest.enumerate() {
                            line.row(y + (k + 1) as f32 * WRAP_LEADING);
                            line.cell(&columns[column], text);
                        }
                    }
                    y += row.height();
                }
                line.draw(canvas.surface, top + BASELINE);
            }
            Block::Closing(i) => {
                let s = &sections[*i];
                let d = &drawn[*i];
                let amount = |v: i128| conv.amount(s.currency, v);
                canvas.rule(top + 2.0);
                let top = top + 4.0;
                let closing = d.closing();
                let end = format!(
                    "Closing balance at {}",
                    conv.instant(header.bounds.1, header.timezone)
                );
                let lines: [(&str, String); 4] = [
                    ("Entries", conv.count(d.count)),
                    ("Credits", amount(d.credits)),
                    ("Debits", amount(d.debits)),
                    (end.as_str(), amount(closing)),
                ];
                for (k, (label, value)) in lines.iter().enumerate() {
                    canvas.label_value(
                        top + k as f32 * LINE_HEIGHT,
                        label,
                        &columns[BALANCE],
                        value,
                    );
                }
            }
        }
        Ok(())
    }
}
