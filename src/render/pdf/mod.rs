//! PDF documents (A4 portrait) drawn with krilla from an embedded font: real text (every id
//! and amount can be extracted), fonts embedded and subset, no system font read. `font`
//! owns the faces and their glyph tables, `layout` the page geometry and drawing, `line`
//! the glyph runs of table rows, `plan` the pagination both document types share,
//! `document` the pages with their footer and the document header, `statement` and
//! `summary` the two document types. The whole document is laid out before it is drawn, so
//! `Page X of Y` needs no second pass; nothing of it ever touches the disk — the output is
//! the (encrypting) writer.

mod document;
mod font;
mod layout;
mod line;
mod plan;
mod statement;
mod summary;
#[cfg(test)]
mod tests;

pub use statement::{MAX_PDF_STATEMENT_ENTRIES, PdfStatement};
pub use summary::write_summary;

use crate::domain::{ControlTotals, Currency, CurrencyTotals};

/// What one currency's part of a document has drawn, so the control totals a document
/// reports are the ones it shows: a renderer that drops a row is caught by the self-check.
#[derive(Debug, Default)]
struct Tally {
    /// Set once the currency's opening balance is drawn.
    currency: Option<Currency>,
    opening: i64,
    count: u64,
    credits: i128,
    debits: i128,
}

impl Tally {
    /// Counts `count` entries summing to `credits` and `debits`.
    fn add(&mut self, count: u64, credits: i128, debits: i128) {
        self.count += count;
        self.credits += credits;
        self.debits += debits;
    }

    /// opening + credits + debits.
    fn closing(&self) -> i128 {
        i128::from(self.opening) + self.credits + self.debits
    }
}

/// The control totals of the currencies drawn.
fn control_totals(tallies: impl IntoIterator<Item = Tally>) -> ControlTotals {
    let mut totals = ControlTotals::default();
    for t in tallies {
        let Some(currency) = t.currency else { continue };
        totals.entry_count += t.count;
        totals.currencies.insert(
            currency,
            CurrencyTotals {
                opening: t.opening,
                count: t.count,
                credits: t.credits,
                debits: t.debits,
                closing: t.closing(),
            },
        );
    }
    totals
}
