//! PDF documents (A4 portrait) drawn with krilla from an embedded font: real text (every id
//! and amount can be extracted), fonts embedded and subset, no system font read. `font`
//! owns the faces and their glyph tables, `layout` the page geometry, header, footer and
//! pagination, `statement` and `summary` the two document types. The whole document is laid
//! out before it is drawn, so `Page X of Y` needs no second pass; nothing of it ever
//! touches the disk — the output is the (encrypting) writer.

mod font;
mod layout;
mod statement;
mod summary;
#[cfg(test)]
mod tests;

pub use statement::PdfStatement;
pub use summary::write_summary;
