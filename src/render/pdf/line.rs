//! [`Line`]: cells in one face and size, one row or several below each other, drawn as a
//! single glyph run from the font's glyph table.

use std::ops::Range;

use krilla::geom::Point;
use krilla::surface::Surface;
use krilla::text::{Glyph, GlyphId};

use super::font::{Face, GlyphInfo};
use super::layout::{Align, Column};

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
