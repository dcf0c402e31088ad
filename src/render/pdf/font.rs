//! The embedded fonts and their glyph tables. DejaVu Sans Condensed (regular and bold) ships
//! inside the binary through the `dejavu` crate (the DejaVu fonts licence allows embedding
//! and redistribution); no system font is ever read. Each face gets a glyph table built once
//! per process from its `cmap` and `hmtx`: character → glyph id and advance. Cells are laid
//! out from that table instead of being shaped, which is what keeps a 100,000-row statement
//! fast, and the same table measures text for right alignment and clipping.
//!
//! Text reaches the page only through [`Face::fit_into`]: control characters and line or
//! paragraph separators become spaces, characters the font lacks (and bidirectional
//! controls, which would reorder what a reader sees) become U+FFFD, so drawing never meets a
//! glyph it cannot show and never panics.

use std::collections::HashMap;
use std::sync::OnceLock;

use krilla::text::Font;
use skrifa::instance::{LocationRef, Size};
use skrifa::{FontRef, MetadataProvider};

use crate::render::RenderError;

/// Code points below this are looked up in a flat table (Latin-1 and Latin Extended-A/B).
const FLAT: usize = 0x300;

/// What a character not in the font is drawn as.
pub(super) const REPLACEMENT: char = '\u{FFFD}';

/// What a clipped cell ends with.
pub(super) const ELLIPSIS: char = '\u{2026}';

/// A glyph of a face: its id and advance in font units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct GlyphInfo {
    /// Glyph id; 0 (`.notdef`) means the font has no glyph.
    pub id: u16,
    /// Horizontal advance in font units.
    pub advance: u16,
}

/// One font face with its glyph table.
pub(super) struct Face {
    /// The face as krilla embeds it (subset on export).
    pub font: Font,
    /// Font units per em.
    units_per_em: f32,
    flat: Vec<GlyphInfo>,
    other: HashMap<u32, GlyphInfo>,
    replacement: GlyphInfo,
    ellipsis: (char, GlyphInfo),
}

/// The faces a document uses.
pub(super) struct Fonts {
    /// Body text.
    pub regular: Face,
    /// Headings, labels and totals.
    pub bold: Face,
}

/// The process-wide fonts, loaded on first use.
pub(super) fn fonts() -> Result<&'static Fonts, RenderError> {
    static FONTS: OnceLock<Option<Fonts>> = OnceLock::new();
    FONTS
        .get_or_init(|| {
            Some(Fonts {
                regular: Face::load(dejavu::sans_condensed::regular())?,
                bold: Face::load(dejavu::sans_condensed::bold())?,
            })
        })
        .as_ref()
        .ok_or_else(|| RenderError::Io(std::io::Error::other("the embedded font is unreadable")))
}

impl Face {
    fn load(data: &'static [u8]) -> Option<Face> {
        let font_ref = FontRef::new(data).ok()?;
        let metrics = font_ref.metrics(Size::unscaled(), LocationRef::default());
        let units_per_em = f32::from(metrics.units_per_em);
        let glyph_metrics = font_ref.glyph_metrics(Size::unscaled(), LocationRef::default());
        let info = |gid: skrifa::GlyphId| {
            let id = u16::try_from(gid.to_u32()).ok()?;
            let advance = glyph_metrics.advance_width(gid)?;
            Some(GlyphInfo {
                id,
                advance: advance.round().clamp(0.0, f32::from(u16::MAX)) as u16,
            })
        };
        let mut flat = vec![GlyphInfo::default(); FLAT];
        let mut other = HashMap::new();
        for (code, gid) in font_ref.charmap().mappings() {
            if gid.to_u32() == 0 {
                continue;
            }
            let Some(g) = info(gid) else { continue };
            match usize::try_from(code) {
                Ok(i) if i < FLAT => flat[i] = g,
                _ => {
                    other.insert(code, g);
                }
            }
        }
        let lookup = |c: char| -> Option<GlyphInfo> {
            let code = u32::from(c);
            match usize::try_from(code) {
                Ok(i) if i < FLAT => Some(flat[i]).filter(|g| g.id != 0),
                _ => other.get(&code).copied(),
            }
        };
        let replacement = lookup(REPLACEMENT).or_else(|| lookup('?'))?;
        let ellipsis = match lookup(ELLIPSIS) {
            Some(g) => (ELLIPSIS, g),
            None => ('.', lookup('.')?),
        };
        Some(Face {
            font: krilla::text::Font::new(data.into(), 0)?,
            units_per_em,
            flat,
            other,
            replacement,
            ellipsis,
        })
    }

    /// The glyph `c` is drawn with and the character it stands for in the text layer: `c`
    /// itself, a space for a control character, or U+FFFD for one the font lacks.
    #[inline]
    pub fn resolve(&self, c: char) -> (char, GlyphInfo) {
        let code = u32::from(c);
        let found = if (code as usize) < FLAT {
            self.flat[code as usize]
        } else {
            self.other.get(&code).copied().unwrap_or_default()
        };
        if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
            return (' ', self.flat[usize::from(b' ')]);
        }
        if found.id == 0 || is_bidi_control(c) {
            return (REPLACEMENT, self.replacement);
        }
        (c, found)
    }

    /// Font units per em.
    pub fn units_per_em(&self) -> f32 {
        self.units_per_em
    }

    /// Width in points of `text` at `size` as it would be drawn (after [`Face::resolve`]).
    pub fn width(&self, text: &str, size: f32) -> f32 {
        let units: u64 = text
            .chars()
            .map(|c| u64::from(self.resolve(c).1.advance))
            .sum();
        units as f32 * size / self.units_per_em
    }

    /// Appends `text` to `out` as it is drawn — control characters as spaces, missing ones as
    /// U+FFFD — cut with an ellipsis where it would exceed `max_width` points at `size`, so
    /// nothing after the cut is kept. Returns the width in points of what was appended.
    pub fn fit_into(&self, out: &mut String, text: &str, size: f32, max_width: f32) -> f32 {
        let limit = (max_width.max(0.0) * self.units_per_em / size) as u64;
        let (mark, ellipsis) = (self.ellipsis.0, u64::from(self.ellipsis.1.advance));
        let start = out.len();
        let mut width = 0u64;
        // Where the text would be cut (and the width there) if it turns out not to fit.
        let mut cut: Option<(usize, u64)> = None;
        for c in text.chars() {
            let (shown, glyph) = self.resolve(c);
            let advance = u64::from(glyph.advance);
            if cut.is_none() && width + advance + ellipsis > limit {
                cut = Some((out.len(), width));
            }
            width += advance;
            if width > limit {
                let (at, kept) = cut.unwrap_or((start, 0));
                out.truncate(at);
                // A column narrower than the ellipsis keeps nothing at all.
                if kept + ellipsis <= limit {
                    out.push(mark);
                    return (kept + ellipsis) as f32 * size / self.units_per_em;
                }
                return kept as f32 * size / self.units_per_em;
            }
            out.push(shown);
        }
        width as f32 * size / self.units_per_em
    }

    /// Appends `text` to `out` as it is drawn (cleaned like [`Face::fit_into`]), broken into
    /// lines of at most `max_width` points at `size`, separated by `\n` (which cleaned text
    /// never contains). A line breaks at the last space that fits, or inside a token (an id,
    /// a URL) that is wider than the line by itself; the spaces at a break are dropped. Only
    /// the `max_lines`-th line is clipped with an ellipsis, so nothing is hidden while there
    /// is a line left. Returns the number of lines appended (at least 1, even for empty
    /// text). `scratch` is a reusable buffer, so wrapping allocates nothing per cell.
    pub fn wrap_into(
        &self,
        out: &mut String,
        scratch: &mut Vec<(char, u16)>,
        text: &str,
        size: f32,
        max_width: f32,
        max_lines: usize,
    ) -> usize {
        let limit = (max_width.max(0.0) * self.units_per_em / size) as u64;
        // Most cells fit on one line: appended in one pass, like `fit_into`.
        let start = out.len();
        let mut width = 0u64;
        let mut fits = true;
        for c in text.chars() {
            let (shown, glyph) = self.resolve(c);
            width += u64::from(glyph.advance);
            if width > limit {
                fits = false;
                break;
            }
            out.push(shown);
        }
        if fits {
            return 1;
        }
        out.truncate(start);
        scratch.clear();
        scratch.extend(text.chars().map(|c| {
            let (shown, glyph) = self.resolve(c);
            (shown, glyph.advance)
        }));
        let glyphs = scratch.as_slice();
        let n = glyphs.len();
        let mut pos = 0;
        let mut lines = 0;
        while pos < n || lines == 0 {
            if lines > 0 {
                // A continuation line never starts with the spaces of the break.
                while pos < n && glyphs[pos].0 == ' ' {
                    pos += 1;
                }
                if pos == n {
                    break;
                }
                out.push('\n');
            }
            lines += 1;
            // The longest run from `pos` that fits.
            let mut width = 0u64;
            let mut end = pos;
            while end < n && width + u64::from(glyphs[end].1) <= limit {
                width += u64::from(glyphs[end].1);
                end += 1;
            }
            if end == n {
                out.extend(glyphs[pos..end].iter().map(|g| g.0));
                break;
            }
            // On the last line, or in a column narrower than one glyph (where more lines
            // would not help), the rest is clipped.
            if lines >= max_lines.max(1) || end == pos {
                self.clip(out, &glyphs[pos..], limit);
                break;
            }
            // Break at the last space inside the run (or right after it); else inside the
            // token, after the glyphs that fit (at least one, so the loop advances).
            let space = glyphs[pos..=end]
                .iter()
                .rposition(|g| g.0 == ' ')
                .map(|i| pos + i)
                .filter(|&i| glyphs[pos..i].iter().any(|g| g.0 != ' '));
            let (line_end, next) = match space {
                Some(i) => (i, i + 1),
                None => (end, end),
            };
            let kept = glyphs[pos..line_end]
                .iter()
                .rposition(|g| g.0 != ' ')
                .map_or(pos, |i| pos + i + 1);
            out.extend(glyphs[pos..kept].iter().map(|g| g.0));
            pos = next;
        }
        lines
    }

    /// Appends as much of `glyphs` as fits `limit` font units with the ellipsis after it (or
    /// nothing when not even the ellipsis fits) — the last line of a wrapped cell.
    fn clip(&self, out: &mut String, glyphs: &[(char, u16)], limit: u64) {
        let (mark, ellipsis) = (self.ellipsis.0, u64::from(self.ellipsis.1.advance));
        if ellipsis > limit {
            return;
        }
        let start = out.len();
        let mut width = ellipsis;
        for &(c, advance) in glyphs {
            width += u64::from(advance);
            if width > limit {
                break;
            }
            out.push(c);
        }
        // `word …` reads as if the word were whole; `word…` does not.
        let trimmed = out[start..].trim_end_matches(' ').len();
        out.truncate(start + trimmed);
        out.push(mark);
    }
}

/// Bidirectional formatting characters: shown as U+FFFD so text cannot be visually reordered.
fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin1_maps_and_missing_characters_are_replaced() {
        let f = &fonts().unwrap().regular;
        for c in ['a', 'é', 'ü', 'ß', '€', '"', ',', ELLIPSIS, REPLACEMENT] {
            assert_eq!(f.resolve(c).0, c, "{c:?}");
            assert_ne!(f.resolve(c).1.id, 0, "{c:?}");
        }
        assert_eq!(f.resolve('\n').0, ' ');
        assert_eq!(f.resolve('\u{2028}').0, ' ');
        assert_eq!(f.resolve('\u{1F980}').0, REPLACEMENT);
        assert_eq!(f.resolve('中').0, REPLACEMENT);
        assert_eq!(f.resolve('\u{202E}').0, REPLACEMENT);
    }

    #[test]
    fn fitting_clips_with_an_ellipsis_and_cleans_text() {
        let f = &fonts().unwrap().regular;
        let mut out = String::new();
        let w = f.fit_into(&mut out, "line\nbreak", 8.0, 1000.0);
        assert_eq!(out, "line break");
        assert!((w - f.width("line break", 8.0)).abs() < 0.01);
        out.clear();
        let w = f.fit_into(&mut out, &"x".repeat(1000), 8.0, 50.0);
        assert!(out.ends_with(ELLIPSIS) && out.len() < 100, "{out}");
        assert!(w <= 50.0);
        out.clear();
        assert_eq!(f.fit_into(&mut out, "wide", 8.0, 0.5), 0.0);
        assert_eq!(out, "");
    }

    /// Wraps `text` into a column `width` points wide at 8 pt.
    fn wrap(text: &str, width: f32, max_lines: usize) -> (usize, Vec<String>) {
        let f = &fonts().unwrap().regular;
        let mut out = String::from("before|");
        let n = f.wrap_into(&mut out, &mut Vec::new(), text, 8.0, width, max_lines);
        let text = out.strip_prefix("before|").expect("earlier text is kept");
        (n, text.split('\n').map(str::to_owned).collect())
    }

    #[test]
    fn wrapping_breaks_at_spaces_then_inside_long_tokens() {
        let f = &fonts().unwrap().regular;
        let width = f.width("Chargeback, dispute", 8.0) + 0.5;
        let (n, lines) = wrap("Chargeback, dispute dp_1042", width, 3);
        assert_eq!(n, 2);
        assert_eq!(lines, ["Chargeback, dispute", "dp_1042"]);
        // A token wider than the column breaks inside it, and nothing of it is lost.
        let id = "dp_0123456789abcdef0123456789abcdef";
        let (n, lines) = wrap(&format!("dispute {id}"), width, 5);
        assert!(n >= 2, "{lines:?}");
        assert_eq!(lines[0], "dispute");
        assert_eq!(lines[1..].concat(), id);
        for line in &lines {
            assert!(
                f.width(line, 8.0) <= width,
                "{line:?} is wider than {width}"
            );
            assert!(!line.starts_with(' ') && !line.ends_with(' '), "{line:?}");
        }
        // Short text, empty text and cleaned control characters stay on one line.
        assert_eq!(
            wrap("Order 1001", width, 3),
            (1, vec!["Order 1001".to_owned()])
        );
        assert_eq!(wrap("", width, 3), (1, vec![String::new()]));
        assert_eq!(wrap("a\nb", width, 3), (1, vec!["a b".to_owned()]));
    }

    #[test]
    fn wrapping_clips_only_the_last_allowed_line() {
        let f = &fonts().unwrap().regular;
        let width = f.width("word word", 8.0) + 0.5;
        let (n, lines) = wrap(&"word ".repeat(20), width, 3);
        assert_eq!(n, 3);
        assert_eq!(&lines[..2], ["word word", "word word"]);
        // The last line is cut like a single-line cell: as much as fits, then the mark.
        let last = lines[2]
            .strip_suffix(ELLIPSIS)
            .expect("ends with an ellipsis");
        assert!(
            "word word".starts_with(last) && last.len() >= 4,
            "{lines:?}"
        );
        assert!(f.width(&lines[2], 8.0) <= width, "{lines:?}");
        // Exactly three full lines need no ellipsis.
        let (n, lines) = wrap("word word word word word word", width, 3);
        assert_eq!(
            (n, lines.concat().contains(ELLIPSIS)),
            (3, false),
            "{lines:?}"
        );
        // One line allowed: the old clipping.
        let (n, lines) = wrap("word word word", width, 1);
        assert_eq!(n, 1);
        assert!(lines[0].ends_with(ELLIPSIS), "{lines:?}");
        // A column narrower than one glyph keeps nothing rather than overflowing.
        assert_eq!(wrap("wide", 0.5, 3), (1, vec![String::new()]));
    }
}
