//! The page plan both PDF documents share. A document is a header, then per currency a
//! heading, its opening balance, a table of rows and its own closing blocks (the statement's
//! totals; the summary's type table, total and closing balance). [`plan`] cuts it into
//! pages before anything is drawn: a currency's heading, opening balance, column header and
//! first row stay together; a row (with all its wrapped lines) is never split; the column
//! header repeats under a "continued" heading on every page the rows continue on; the
//! closing blocks are never split. The blocks both documents draw the same way are drawn
//! here too.

use std::ops::Range;

use super::Tally;
use super::layout::{
    Align, BASELINE, BODY_BOTTOM, BODY_TOP, Canvas, Column, HEADER_HEIGHT, HEADING_HEIGHT,
    LINE_HEIGHT, NO_ENTRIES, SECTION_GAP, TABLE_HEAD_HEIGHT,
};
use crate::domain::Currency;
use crate::render::DocumentHeader;
use crate::render::locale::Conventions;

/// Height of a currency's opening balance line.
const OPENING_HEIGHT: f32 = LINE_HEIGHT + 2.0;

/// Blocks placed on pages: each page a list of (top, block).
pub(super) type Pages<B> = Vec<Vec<(f32, B)>>;

/// Cuts a sequence of fixed-height blocks into pages.
pub(super) struct Flow<B> {
    pages: Pages<B>,
    y: f32,
}

impl<B> Flow<B> {
    /// An empty first page.
    pub fn new() -> Flow<B> {
        Flow {
            pages: vec![Vec::new()],
            y: BODY_TOP,
        }
    }

    /// Points left on the current page.
    pub fn room(&self) -> f32 {
        BODY_BOTTOM - self.y
    }

    /// True when `height` points still fit on the current page.
    pub fn fits(&self, height: f32) -> bool {
        self.room() + 0.001 >= height
    }

    /// Continues on a new page.
    pub fn page_break(&mut self) {
        self.pages.push(Vec::new());
        self.y = BODY_TOP;
    }

    /// Places `block`, `height` points high, at the current position.
    pub fn place(&mut self, height: f32, block: B) {
        if let Some(page) = self.pages.last_mut() {
            page.push((self.y, block));
        }
        self.y += height;
    }

    /// Leaves `height` points empty (never past the page's end).
    pub fn skip(&mut self, height: f32) {
        self.y = (self.y + height).min(BODY_BOTTOM);
    }

    /// The pages.
    pub fn finish(self) -> Pages<B> {
        self.pages
    }
}

/// What a document draws, in order: the blocks of every document, and a currency's
/// closing blocks `T`, which each document defines.
pub(super) enum Block<T> {
    Header,
    NoEntries,
    Heading { section: usize, continued: bool },
    Opening(usize),
    TableHead,
    Rows { section: usize, rows: Range<usize> },
    NoRows,
    Closing(T),
}

/// A document as the planner sees it: its currencies (sections), their rows and their
/// closing blocks.
pub(super) trait Sections {
    /// The document's own closing blocks of a currency.
    type Closing;
    /// Whether the column header repeats above closing blocks pushed to a page of their own
    /// (when the currency has rows).
    const HEAD_ABOVE_CLOSING: bool;

    /// Number of currencies.
    fn sections(&self) -> usize;
    /// Number of table rows of currency `section`.
    fn rows(&self, section: usize) -> usize;
    /// Height of row `row` of currency `section`.
    fn row_height(&self, section: usize, row: usize) -> f32;
    /// Height of the closing blocks of currency `section`, which are never split.
    fn closing_height(&self, section: usize) -> f32;
    /// Places the closing blocks of currency `section`.
    fn place_closing(&self, flow: &mut Flow<Block<Self::Closing>>, section: usize);
}

/// Cuts `doc` into pages (see the module documentation).
pub(super) fn plan<S: Sections + ?Sized>(doc: &S) -> Pages<Block<S::Closing>> {
    let mut flow = Flow::new();
    flow.place(HEADER_HEIGHT, Block::Header);
    let sections = doc.sections();
    if sections == 0 {
        flow.place(LINE_HEIGHT, Block::NoEntries);
    }
    for i in 0..sections {
        let rows = doc.rows(i);
        let continued = |flow: &mut Flow<Block<S::Closing>>| {
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
            TABLE_HEAD_HEIGHT + doc.row_height(i, 0)
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
            if !flow.fits(TABLE_HEAD_HEIGHT + doc.row_height(i, next)) {
                continued(&mut flow);
            }
            flow.place(TABLE_HEAD_HEIGHT, Block::TableHead);
            // As many whole rows as the page still holds (at least one, so a page always
            // advances; any row fits an empty page).
            let mut end = next;
            let mut height = 0.0;
            while end < rows {
                let row = doc.row_height(i, end);
                if end > next && !flow.fits(height + row) {
                    break;
                }
                height += row;
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
        if !flow.fits(doc.closing_height(i)) {
            continued(&mut flow);
            if S::HEAD_ABOVE_CLOSING && rows > 0 {
                flow.place(TABLE_HEAD_HEIGHT, Block::TableHead);
            }
        }
        doc.place_closing(&mut flow, i);
        flow.skip(SECTION_GAP);
    }
    flow.finish()
}

/// Says that there are no entries, between the left edge of `first` and that of `last`.
pub(super) fn draw_no_entries(
    canvas: &mut Canvas<'_, '_>,
    top: f32,
    first: &Column,
    last: &Column,
) {
    let column = Column {
        title: "",
        x: first.x,
        width: last.x - first.x,
        align: Align::Left,
    };
    let fonts = canvas.fonts;
    canvas.text(
        &fonts.regular,
        8.0,
        &column,
        top + BASELINE + 1.0,
        NO_ENTRIES,
    );
}

/// A currency's heading: `EUR`, or `EUR (continued)`.
pub(super) fn draw_heading(
    canvas: &mut Canvas<'_, '_>,
    top: f32,
    currency: Currency,
    continued: bool,
) {
    let code = currency.code();
    let title = if continued {
        format!("{code} (continued)")
    } else {
        code.to_owned()
    };
    canvas.heading(top, &title);
}

/// A currency's opening balance at the period's start, the amount in `column`; returns
/// the fresh tally of what the currency's part draws.
pub(super) fn draw_opening(
    canvas: &mut Canvas<'_, '_>,
    top: f32,
    (header, conv): (&DocumentHeader, &Conventions),
    column: &Column,
    currency: Currency,
    opening: i64,
) -> Tally {
    let label = format!(
        "Opening balance at {}",
        conv.instant(header.bounds.0, header.timezone)
    );
    canvas.label_value(
        top,
        &label,
        column,
        &conv.amount(currency, i128::from(opening)),
    );
    Tally {
        currency: Some(currency),
        opening,
        ..Tally::default()
    }
}
