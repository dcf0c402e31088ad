//! Page geometry and drawing shared by the statement and the summary: A4 portrait, the
//! text area, table sizes, fixed [`Column`]s, and [`Canvas`], a page's drawing context
//! (text in a column, rules, shaded table heads, label/value lines, headings).

use krilla::color::rgb;
use krilla::geom::{PathBuilder, Rect};
use krilla::num::NormalizedF32;
use krilla::paint::{Fill, Stroke};
use krilla::surface::Surface;

use super::font::{Face, Fonts};
use super::line::Line;

/// A4 width in points.
pub(super) const PAGE_WIDTH: f32 = 595.276;
/// A4 height in points.
pub(super) const PAGE_HEIGHT: f32 = 841.89;
/// Left edge of the text area.
pub(super) const LEFT: f32 = 36.0;
/// Right edge of the text area.
pub(super) const RIGHT: f32 = PAGE_WIDTH - 36.0;
/// Top of the body on every page.
pub(super) const BODY_TOP: f32 = 36.0;
/// Bottom of the body; the footer sits below it.
pub(super) const BODY_BOTTOM: f32 = PAGE_HEIGHT - 46.0;

/// Size of table text.
pub(super) const TEXT_SIZE: f32 = 7.5;
/// Height of one table row.
pub(super) const ROW_HEIGHT: f32 = 10.0;
/// Distance between the lines of a wrapped cell: 1.2 × the text size, so a descender never
/// touches the line below.
pub(super) const WRAP_LEADING: f32 = 9.0;
/// The most lines a wrapped cell takes; only text beyond them is clipped with an ellipsis.
/// Three lines hold ~80 characters of description and ~45 of reference, which keeps every
/// id of the sample data whole while a runaway text cannot take over a page.
pub(super) const MAX_CELL_LINES: usize = 3;

/// Height of a table row whose tallest cell has `lines` lines.
pub(super) fn row_height(lines: u8) -> f32 {
    ROW_HEIGHT + f32::from(lines.max(1) - 1) * WRAP_LEADING
}
/// Where a row's baseline sits below its top.
pub(super) const BASELINE: f32 = 7.5;
/// Height of a table's column header.
pub(super) const TABLE_HEAD_HEIGHT: f32 = 14.0;
/// Height of a currency heading.
pub(super) const HEADING_HEIGHT: f32 = 20.0;
/// Height of a label/value line (balances, totals).
pub(super) const LINE_HEIGHT: f32 = 12.0;
/// Space after a currency's part.
pub(super) const SECTION_GAP: f32 = 14.0;
/// Height of the document header on the first page.
pub(super) const HEADER_HEIGHT: f32 = 128.0;

/// What a document says when it has no entry at all.
pub(super) const NO_ENTRIES: &str = "No entries in this period";

const RULE_GREY: (u8, u8, u8) = (170, 170, 170);
const SHADE: (u8, u8, u8) = (235, 235, 235);

/// How a cell's text sits in its column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Align {
    /// From the left edge.
    Left,
    /// Against the right edge (numbers).
    Right,
}

/// A fixed column of a table.
#[derive(Debug, Clone, Copy)]
pub(super) struct Column {
    /// Header text.
    pub title: &'static str,
    /// Left edge in points.
    pub x: f32,
    /// Width in points; text never leaves it.
    pub width: f32,
    /// Alignment of header and cells.
    pub align: Align,
}

/// Lays out columns left to right from [`LEFT`] with `gap` points between them; a width of
/// 0 takes what the others leave to [`RIGHT`].
pub(super) fn columns<const N: usize>(
    spec: [(&'static str, f32, Align); N],
    gap: f32,
) -> [Column; N] {
    let fixed: f32 = spec.iter().map(|s| s.1).sum();
    let flexible = spec.iter().filter(|s| s.1 == 0.0).count().max(1) as f32;
    let rest = ((RIGHT - LEFT) - fixed - gap * (N.saturating_sub(1)) as f32) / flexible;
    let mut x = LEFT;
    spec.map(|(title, width, align)| {
        let width = if width == 0.0 { rest.max(0.0) } else { width };
        let c = Column {
            title,
            x,
            width,
            align,
        };
        x += width + gap;
        c
    })
}

/// A drawing context for one page: the surface, the fonts and a reusable line.
pub(super) struct Canvas<'a, 'b> {
    /// The page's surface.
    pub surface: &'a mut Surface<'b>,
    /// The document's fonts.
    pub fonts: &'static Fonts,
    /// A line buffer for callers, shared by all pages.
    pub line: &'a mut Line,
}

impl Canvas<'_, '_> {
    /// Draws `text` in `column` at baseline `y`.
    pub fn text(&mut self, face: &'static Face, size: f32, column: &Column, y: f32, text: &str) {
        self.line.reset(face, size);
        self.line.cell(column, text);
        self.line.draw(self.surface, y);
    }

    /// Draws a coloured `text`.
    pub fn colored_text(
        &mut self,
        face: &'static Face,
        size: f32,
        column: &Column,
        y: f32,
        text: &str,
        color: (u8, u8, u8),
    ) {
        self.surface.set_fill(Some(fill(color)));
        self.text(face, size, column, y, text);
        self.surface.set_fill(None);
    }

    /// A thin horizontal rule across the text area at `y`.
    pub fn rule(&mut self, y: f32) {
        let mut path = PathBuilder::new();
        path.move_to(LEFT, y);
        path.line_to(RIGHT, y);
        if let Some(path) = path.finish() {
            self.surface.set_stroke(Some(Stroke {
                paint: rgb::Color::new(RULE_GREY.0, RULE_GREY.1, RULE_GREY.2).into(),
                width: 0.5,
                ..Stroke::default()
            }));
            self.surface.draw_path(&path);
            self.surface.set_stroke(None);
        }
    }

    /// A shaded band across the text area from `top`, `height` points high.
    pub fn shade(&mut self, top: f32, height: f32) {
        let mut path = PathBuilder::new();
        if let Some(rect) = Rect::from_xywh(LEFT, top, RIGHT - LEFT, height) {
            path.push_rect(rect);
        }
        if let Some(path) = path.finish() {
            self.surface.set_fill(Some(fill(SHADE)));
            self.surface.draw_path(&path);
            self.surface.set_fill(None);
        }
    }

    /// A table's column header on a shaded band, `top` being the band's top.
    pub fn table_head(&mut self, columns: &[Column], top: f32) {
        self.shade(top + 1.0, TABLE_HEAD_HEIGHT - 3.0);
        self.line.reset(&self.fonts.bold, TEXT_SIZE);
        for c in columns {
            self.line.cell(c, c.title);
        }
        self.line.draw(self.surface, top + 1.0 + BASELINE + 0.5);
    }

    /// A bold label on the left and a number right-aligned in `column`.
    pub fn label_value(&mut self, top: f32, label: &str, column: &Column, value: &str) {
        let label_column = Column {
            title: "",
            x: LEFT,
            width: column.x - LEFT - 6.0,
            align: Align::Left,
        };
        let y = top + BASELINE + 1.0;
        self.line.reset(&self.fonts.bold, TEXT_SIZE + 0.5);
        self.line.cell(&label_column, label);
        self.line.number(column, value);
        self.line.draw(self.surface, y);
    }

    /// A currency's heading (`EUR`, or `EUR (continued)` on a later page).
    pub fn heading(&mut self, top: f32, text: &str) {
        let column = Column {
            title: "",
            x: LEFT,
            width: RIGHT - LEFT,
            align: Align::Left,
        };
        let fonts = self.fonts;
        self.text(&fonts.bold, 10.0, &column, top + 13.0, text);
    }
}

pub(super) fn fill(color: (u8, u8, u8)) -> Fill {
    Fill {
        paint: rgb::Color::new(color.0, color.1, color.2).into(),
        opacity: NormalizedF32::ONE,
        rule: Default::default(),
    }
}
