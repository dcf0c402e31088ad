//! Page geometry and drawing shared by the statement and the summary: A4 portrait, a flow
//! of blocks of known height cut into pages before anything is drawn (so `Page X of Y` is
//! known while drawing and needs no second pass; a wrapped row's height is known from its
//! line count when it arrives), the first page's document header, the footer of
//! every page, and [`Line`]: a row of cells drawn as one glyph run from the glyph table.

use std::ops::Range;

use krilla::color::rgb;
use krilla::geom::{PathBuilder, Point, Rect};
use krilla::num::NormalizedF32;
use krilla::page::PageSettings;
use krilla::paint::{Fill, Stroke};
use krilla::surface::Surface;
use krilla::text::{Glyph, GlyphId};
use krilla::{Document, SerializeSettings};

use super::font::{Face, Fonts, GlyphInfo};
use crate::domain::{Stage, Timezone};
use crate::render::locale::{Conventions, DEFAULT};
use crate::render::{DocumentHeader, RenderError, text};

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

const GREY: (u8, u8, u8) = (110, 110, 110);
const RULE_GREY: (u8, u8, u8) = (170, 170, 170);
const SHADE: (u8, u8, u8) = (235, 235, 235);
const DRAFT_RED: (u8, u8, u8) = (200, 30, 30);

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

/// A glyph placed by [`Line`]: id, the bytes of the line's text it shows, its advance in
/// em (the last glyph of a cell also carries the gap to the next cell) and its row's offset
/// below the first row, in em.
#[derive(Debug, Clone)]
struct Placed {
    id: u16,
    text: Range<u32>,
    advance: f32,
    down: f32,
}

impl Glyph for Placed {
    fn glyph_id(&self) -> GlyphId {
        GlyphId::new(u32::from(self.id))
    }

    fn text_range(&self) -> Range<usize> {
        self.text.start as usize..self.text.end as usize
    }

    fn x_advance(&self, size: f32) -> f32 {
        self.advance * size
    }

    fn x_offset(&self, _size: f32) -> f32 {
        0.0
    }

    fn y_offset(&self, size: f32) -> f32 {
        // krilla moves a glyph run up by its y offset; rows go down.
        -self.down * size
    }

    fn y_advance(&self, _size: f32) -> f32 {
        0.0
    }

    fn location(&self) -> Option<krilla::surface::Location> {
        None
    }
}

/// Gaps between cells are rounded to this many font units (0.23 pt at 7.5 pt with DejaVu's
/// 2048 units per em), so the positioning numbers krilla writes stay short (`-836.25`, not
/// `-836.91406`): less to write and to compress, and no visible difference.
const GAP_QUANTUM: f32 = 64.0;

/// Cells in one face and size — one row, or several rows below each other — drawn with a
/// single `draw_glyphs` call: one text object per call instead of one per cell. Positions
/// are kept in font units from the first glyph, so the numbers krilla writes are exact.
/// Reused across rows to avoid allocation.
pub(super) struct Line {
    face: &'static Face,
    size: f32,
    /// Points per font unit at `size`.
    unit: f32,
    text: String,
    glyphs: Vec<Placed>,
    /// Where the first glyph sits, in points.
    start: Option<f32>,
    /// Pen position in font units from `start`.
    pen: f32,
    /// Offset of the current row below the first, in points.
    row: f32,
    /// Numbers too wide for their column at `size`: drawn afterwards, scaled down.
    shrunk: Vec<(Column, f32, String)>,
}

impl Line {
    /// An empty line in `face` at `size` points, with room for `glyphs` glyphs.
    pub fn new(face: &'static Face, size: f32, glyphs: usize) -> Line {
        Line {
            face,
            size,
            unit: size / face.units_per_em(),
            text: String::with_capacity(glyphs),
            glyphs: Vec::with_capacity(glyphs),
            start: None,
            pen: 0.0,
            row: 0.0,
            shrunk: Vec::new(),
        }
    }

    /// Starts over in `face` at `size`.
    pub fn reset(&mut self, face: &'static Face, size: f32) {
        self.face = face;
        self.size = size;
        self.unit = size / face.units_per_em();
        self.clear();
    }

    fn clear(&mut self) {
        self.text.clear();
        self.glyphs.clear();
        self.start = None;
        self.pen = 0.0;
        self.row = 0.0;
        self.shrunk.clear();
    }

    /// Puts the following cells `offset` points below the first row.
    pub fn row(&mut self, offset: f32) {
        self.row = offset;
    }

    /// Adds `text` in `column`, clipped with an ellipsis where it is too wide.
    pub fn cell(&mut self, column: &Column, text: &str) {
        let first = self.glyphs.len();
        let units = match self.push(text, column.width) {
            Some(units) => units,
            None => {
                let from = self.text.len();
                self.face
                    .fit_into(&mut self.text, text, self.size, column.width);
                self.glyphs_from(from)
            }
        };
        self.position(column, first, units);
    }

    /// Adds a number (or an entry id) in `column`: never clipped; one too wide for the column is drawn
    /// smaller instead, so every digit stays readable and inside the column.
    pub fn number(&mut self, column: &Column, text: &str) {
        let first = self.glyphs.len();
        match self.push(text, column.width) {
            Some(units) => self.position(column, first, units),
            None => self.shrunk.push((*column, self.row, text.to_owned())),
        }
    }

    /// Appends `text` and its glyphs when it fits `width` points and returns its width in
    /// font units; otherwise appends nothing. [`Line::position`] places the glyphs.
    fn push(&mut self, text: &str, width: f32) -> Option<f32> {
        let (text_mark, glyph_mark) = (self.text.len(), self.glyphs.len());
        let limit = width / self.unit;
        let mut units = 0.0;
        for c in text.chars() {
            let (shown, glyph) = self.face.resolve(c);
            units += f32::from(glyph.advance);
            if units > limit {
                self.text.truncate(text_mark);
                self.glyphs.truncate(glyph_mark);
                return None;
            }
            self.add(shown, glyph);
        }
        Some(units)
    }

    /// Adds glyphs for the (already resolved) text appended since byte `from`; returns
    /// their width in font units.
    fn glyphs_from(&mut self, from: usize) -> f32 {
        let appended = self.text.split_off(from);
        let mut units = 0.0;
        for c in appended.chars() {
            let glyph = self.face.resolve(c).1;
            units += f32::from(glyph.advance);
            self.add(c, glyph);
        }
        units
    }

    fn add(&mut self, c: char, glyph: GlyphInfo) {
        let at = self.text.len();
        self.text.push(c);
        self.glyphs.push(Placed {
            id: glyph.id,
            text: at as u32..self.text.len() as u32,
            // Font units while the line is built; em once drawn.
            advance: f32::from(glyph.advance),
            down: self.row / self.size,
        });
    }

    /// Places the glyphs from index `first` on (a cell `units` wide) in `column`: the
    /// glyph before them gets the gap as extra advance.
    fn position(&mut self, column: &Column, first: usize, units: f32) {
        if first == self.glyphs.len() {
            return;
        }
        let x = match column.align {
            Align::Left => column.x,
            Align::Right => column.x + column.width - units * self.unit,
        };
        let start = *self.start.get_or_insert(x);
        if let Some(before) = first.checked_sub(1) {
            let mut gap = (x - start) / self.unit - self.pen;
            // Only gaps inside a row are written; a jump back to the next row's start is
            // not, and stays exact.
            if gap >= 0.0 {
                gap = (gap / GAP_QUANTUM).round() * GAP_QUANTUM;
            }
            self.glyphs[before].advance += gap;
            self.pen += gap;
        }
        self.pen += units;
    }

    /// Draws the line with its (first row's) baseline at `y` and empties it.
    pub fn draw(&mut self, surface: &mut Surface<'_>, y: f32) {
        if let Some(x) = self.start
            && !self.glyphs.is_empty()
        {
            let em = 1.0 / self.face.units_per_em();
            for g in &mut self.glyphs {
                g.advance *= em;
            }
            surface.draw_glyphs(
                Point::from_xy(x, y),
                &self.glyphs,
                self.face.font.clone(),
                &self.text,
                self.size,
                false,
            );
        }
        let shrunk = std::mem::take(&mut self.shrunk);
        for (column, row, number) in &shrunk {
            let width = self.face.width(number, self.size);
            // A hair smaller than exact, so rounding never pushes it past the column.
            let scale = column.width / width.max(f32::MIN_POSITIVE) * 0.99;
            let mut line = Line::new(self.face, self.size * scale, number.len());
            if let Some(units) = line.push(number, f32::INFINITY) {
                line.position(column, 0, units);
            }
            line.draw(surface, y + row);
        }
        self.shrunk = shrunk;
        self.clear();
    }
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

fn fill(color: (u8, u8, u8)) -> Fill {
    Fill {
        paint: rgb::Color::new(color.0, color.1, color.2).into(),
        opacity: NormalizedF32::ONE,
        rule: Default::default(),
    }
}

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

    /// How many rows of `height` still fit on the current page.
    pub fn rows_left(&self, height: f32) -> usize {
        ((self.room() + 0.001) / height).floor().max(0.0) as usize
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

/// Draws `pages` into a PDF: every page gets the footer, and each block is drawn by `draw`
/// at its top. Returns the PDF's bytes.
pub(super) fn render<B>(
    header: &DocumentHeader,
    fonts: &'static Fonts,
    pages: &Pages<B>,
    mut draw: impl FnMut(&mut Canvas<'_, '_>, f32, &B) -> Result<(), RenderError>,
) -> Result<Vec<u8>, RenderError> {
    let settings = SerializeSettings {
        enable_tagging: false,
        ..SerializeSettings::default()
    };
    let mut document = Document::new_with(settings);
    let utc = |at| text::local_instant(at, Timezone::UTC);
    document.set_metadata(
        krilla::metadata::Metadata::new()
            .title(format!(
                "{} {} {}",
                title(header),
                header.merchant.id,
                header.period
            ))
            .creator("ledger".to_owned())
            .keywords(vec![
                format!("ledger {}", header.ledger_id),
                format!("generated {}", utc(header.generated_at)),
            ]),
    );
    let total = pages.len();
    // A page's rows are one glyph run: room for a full page of them.
    let mut line = Line::new(&fonts.regular, TEXT_SIZE, 8192);
    for (index, blocks) in pages.iter().enumerate() {
        let Some(settings) = PageSettings::from_wh(PAGE_WIDTH, PAGE_HEIGHT) else {
            return Err(pdf_error("invalid page size"));
        };
        let mut page = document.start_page_with(settings);
        let mut surface = page.surface();
        let mut canvas = Canvas {
            surface: &mut surface,
            fonts,
            line: &mut line,
        };
        footer(&mut canvas, header, index + 1, total);
        let drawn = blocks
            .iter()
            .try_for_each(|(top, block)| draw(&mut canvas, *top, block));
        surface.finish();
        page.finish();
        drawn?;
    }
    document.finish().map_err(|e| pdf_error(&format!("{e:?}")))
}

fn pdf_error(what: &str) -> RenderError {
    RenderError::Io(std::io::Error::other(format!("writing the PDF: {what}")))
}

/// `Statement` or `Summary`.
fn title(header: &DocumentHeader) -> &'static str {
    match header.ledger_type {
        crate::domain::LedgerType::Statement => "Statement",
        crate::domain::LedgerType::Summary => "Summary",
    }
}

/// The footer: the ledger id, a DRAFT mark on drafts, `Page X of Y`.
fn footer(canvas: &mut Canvas<'_, '_>, header: &DocumentHeader, page: usize, total: usize) {
    let y = PAGE_HEIGHT - 28.0;
    canvas.rule(y - 10.0);
    let size = 7.0;
    let half = (RIGHT - LEFT) / 2.0;
    let left = Column {
        title: "",
        x: LEFT,
        width: half - 40.0,
        align: Align::Left,
    };
    let right = Column {
        title: "",
        x: LEFT + half + 40.0,
        width: half - 40.0,
        align: Align::Right,
    };
    let center = Column {
        title: "",
        x: LEFT + half - 40.0,
        width: 80.0,
        align: Align::Left,
    };
    let fonts = canvas.fonts;
    canvas.surface.set_fill(Some(fill(GREY)));
    canvas.line.reset(&fonts.regular, size);
    canvas.line.cell(
        &left,
        &format!("Ledger {} · {}", header.ledger_id, header.merchant.id),
    );
    canvas.line.cell(&right, &format!("Page {page} of {total}"));
    canvas.line.draw(canvas.surface, y);
    canvas.surface.set_fill(None);
    if header.stage == Stage::Draft {
        let width = fonts.bold.width("DRAFT", size);
        let center = Column {
            x: center.x + (center.width - width) / 2.0,
            ..center
        };
        canvas.colored_text(&fonts.bold, size, &center, y, "DRAFT", DRAFT_RED);
    }
}

/// How the header names the number and date format: the merchant's tag, and the table row
/// used when that is not the tag itself (`de-LU (as de-DE)`).
fn locale_label(header: &DocumentHeader, conv: &Conventions) -> String {
    match &header.merchant.locale {
        None => format!("{} (ISO 8601 dates)", DEFAULT.name),
        Some(tag) if tag.as_str() == conv.name => conv.name.to_owned(),
        Some(tag) => format!("{tag} (as {})", conv.name),
    }
}

/// The document header on the first page, [`HEADER_HEIGHT`] points from `top`: title, DRAFT
/// mark, merchant, ledger, period, zone, local and UTC bounds, stage, version, generation,
/// and the locale its numbers and dates are written in (`conv`).
pub(super) fn document_header(
    canvas: &mut Canvas<'_, '_>,
    top: f32,
    header: &DocumentHeader,
    conv: &Conventions,
) {
    let fonts = canvas.fonts;
    let full = Column {
        title: "",
        x: LEFT,
        width: RIGHT - LEFT - 120.0,
        align: Align::Left,
    };
    canvas.text(
        &fonts.bold,
        16.0,
        &full,
        top + 16.0,
        &format!("{} — {}", title(header), header.merchant.name),
    );
    if header.stage == Stage::Draft {
        let mark = Column {
            title: "",
            x: RIGHT - 110.0,
            width: 110.0,
            align: Align::Right,
        };
        canvas.colored_text(&fonts.bold, 18.0, &mark, top + 17.0, "DRAFT", DRAFT_RED);
    }
    canvas.rule(top + 24.0);
    let tz = header.timezone;
    let local = |at| conv.instant(at, tz);
    let utc = |at| conv.instant(at, Timezone::UTC);
    let (first, after) = header.period.local_days();
    let left: [(&str, String); 7] = [
        ("Merchant", header.merchant.name.clone()),
        ("Merchant id", header.merchant.id.to_string()),
        ("Ledger id", header.ledger_id.to_string()),
        ("Ledger type", header.ledger_type.as_str().to_owned()),
        ("Stage", header.stage.as_str().to_owned()),
        ("Version", header.version.to_string()),
        ("Locale", locale_label(header, conv)),
    ];
    let right: [(&str, String); 7] = [
        (
            "Period",
            format!(
                "{} ({} to {}, local days)",
                header.period,
                conv.date(first),
                conv.date(after.pred_opt().unwrap_or(after))
            ),
        ),
        ("Time zone", tz.name().to_owned()),
        ("Start (local)", local(header.bounds.0)),
        ("Start (UTC)", utc(header.bounds.0)),
        ("End, excl. (local)", local(header.bounds.1)),
        ("End, excl. (UTC)", utc(header.bounds.1)),
        ("Generated (UTC)", utc(header.generated_at)),
    ];
    let size = 8.0;
    let pairs = |x: f32, label_width: f32, value_width: f32| {
        (
            Column {
                title: "",
                x,
                width: label_width,
                align: Align::Left,
            },
            Column {
                title: "",
                x: x + label_width + 4.0,
                width: value_width,
                align: Align::Left,
            },
        )
    };
    let middle = LEFT + (RIGHT - LEFT) * 0.42;
    for (items, (label, value)) in [
        (&left[..], pairs(LEFT, 58.0, middle - LEFT - 72.0)),
        (&right[..], pairs(middle, 78.0, RIGHT - middle - 82.0)),
    ] {
        for (i, (name, text)) in items.iter().enumerate() {
            let y = top + 38.0 + i as f32 * 11.5;
            canvas.line.reset(&fonts.bold, size);
            canvas.line.cell(&label, name);
            canvas.line.draw(canvas.surface, y);
            canvas.line.reset(&fonts.regular, size);
            canvas.line.cell(&value, text);
            canvas.line.draw(canvas.surface, y);
        }
    }
    canvas.rule(top + HEADER_HEIGHT - 10.0);
}
