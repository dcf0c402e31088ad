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
use std::ops::Range;

use chrono::{DateTime, Utc};

use super::font::{Face, Fonts, fonts};
use super::layout::{
    self, Align, BASELINE, Canvas, Column, Flow, HEADER_HEIGHT, HEADING_HEIGHT, LINE_HEIGHT,
    MAX_CELL_LINES, NO_ENTRIES, Pages, SECTION_GAP, TABLE_HEAD_HEIGHT, TEXT_SIZE, WRAP_LEADING,
    row_height,
};
use super::{Tally, control_totals};
use crate::domain::{ControlTotals, Currency, Entry, EntryType};
use crate::render::locale::{self, Conventions};
use crate::render::{DocumentHeader, RenderError, Renderer};

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

const OPENING_HEIGHT: f32 = LINE_HEIGHT + 2.0;
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
        let mut sections: BTreeMap<Currency, Section> = BTreeMap::new();
        for b in &header.opening_balances {
            let s = sections
                .entry(b.currency)
                .or_insert_with(|| Section::new(b.currency, 0));
            s.opening = s
                .opening
                .checked_add(b.amount)
                .ok_or_else(|| RenderError::Overflow(b.currency.to_string()))?;
            s.balance = s.opening;
        }
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
        let pages = plan(&sections);
        let mut painter = Painter {
            header: &header,
            conv,
            columns: &columns,
            sections: &sections,
            drawn: sections.iter().map(|_| Tally::default()).collect(),
            balances: vec![0; sections.len()],
        };
        let bytes = layout::render(&header, fonts, &pages, |canvas, top, block| {
            painter.draw(canvas, top, block)
        })?;
        let totals = control_totals(painter.drawn);
        drop(pages);
        drop(sections);
        out.write_all(&bytes)?;
        Ok((totals, out))
    }
}

/// What the statement draws, in order.
enum Block {
    Header,
    NoEntries,
    Heading { section: usize, continued: bool },
    Opening(usize),
    TableHead,
    Rows { section: usize, rows: Range<usize> },
    NoRows,
    Totals(usize),
}

/// Cuts the statement into pages: a currency's heading, opening balance, column header and
/// first row stay together; a row (with all its wrapped lines) is never split; the column
/// header (under a "continued" heading) repeats on every page the rows continue on (and
/// above totals pushed to a page of their own); the totals block is never split.
fn plan(sections: &[Section]) -> Pages<Block> {
    let mut flow = Flow::new();
    flow.place(HEADER_HEIGHT, Block::Header);
    if sections.is_empty() {
        flow.place(LINE_HEIGHT, Block::NoEntries);
    }
    for (i, s) in sections.iter().enumerate() {
        let rows = s.rows.len();
        let first = match s.rows.first() {
            None => LINE_HEIGHT,
            Some(row) => TABLE_HEAD_HEIGHT + row.height(),
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
            if !flow.fits(TABLE_HEAD_HEIGHT + s.rows[next].height()) {
                flow.page_break();
                flow.place(
                    HEADING_HEIGHT,
                    Block::Heading {
                        section: i,
                        continued: true,
                    },
                );
            }
            flow.place(TABLE_HEAD_HEIGHT, Block::TableHead);
            // As many whole rows as the page still holds (at least one, so a page always
            // advances; any row fits an empty page).
            let mut end = next;
            let mut height = 0.0;
            while let Some(row) = s.rows.get(end) {
                if end > next && !flow.fits(height + row.height()) {
                    break;
                }
                height += row.height();
                end += 1;
            }
            flow.place(
                height,
                Block::Rows {
                    section: i,
                    rows: next..end,
                },
            );
            next = end;
        }
        if !flow.fits(TOTALS_HEIGHT) {
            flow.page_break();
            flow.place(
                HEADING_HEIGHT,
                Block::Heading {
                    section: i,
                    continued: true,
                },
            );
            if rows > 0 {
                flow.place(TABLE_HEAD_HEIGHT, Block::TableHead);
            }
        }
        flow.place(TOTALS_HEIGHT, Block::Totals(i));
        flow.skip(SECTION_GAP);
    }
    flow.finish()
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
        block: &Block,
    ) -> Result<(), RenderError> {
        let (header, conv, columns, sections) =
            (self.header, self.conv, self.columns, self.sections);
        let (drawn, balances) = (&mut self.drawn, &mut self.balances);
        let fonts = canvas.fonts;
        match block {
            Block::Header => layout::document_header(canvas, top, header, conv),
            Block::NoEntries | Block::NoRows => {
                let column = Column {
                    title: "",
                    x: columns[0].x,
                    width: columns[BALANCE].x - columns[0].x,
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
                let code = sections[*section].currency.code();
                let title = if *continued {
                    format!("{code} (continued)")
                } else {
                    code.to_owned()
                };
                canvas.heading(top, &title);
            }
            Block::Opening(i) => {
                let s = &sections[*i];
                drawn[*i] = Tally {
                    currency: Some(s.currency),
                    opening: s.opening,
                    ..Tally::default()
                };
                balances[*i] = s.opening;
                let label = format!(
                    "Opening balance at {}",
                    conv.instant(header.bounds.0, header.timezone)
                );
                canvas.label_value(
                    top,
                    &label,
                    &columns[BALANCE],
                    &conv.amount(s.currency, i128::from(s.opening)),
                );
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
            Block::Totals(i) => {
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
