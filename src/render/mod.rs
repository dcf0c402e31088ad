//! Rendering: turns a validated entry stream into a document, streaming, and reports the
//! control totals of what it actually wrote for the pipeline's self-check. Renderers are CPU
//! work and run on the blocking pool; they never read the source or touch storage.
//!
//! One layout for every format: `csv/`, `xlsx/` and `pdf/` each hold a `statement` (a
//! [`Renderer`] fed entry by entry) and a `summary` (a [`summary::WriteSummary`] of the
//! finished [`summary::Summary`]). What every format shares sits here: [`summary`] folds
//! entries into per-day and per-type totals, `text` writes plain amounts and instants,
//! `locale` the merchant's number and date conventions.

pub mod csv;
pub mod locale;
pub mod pdf;
pub mod summary;
#[cfg(test)]
pub(crate) mod testing;
pub mod text;
pub mod xlsx;

use std::collections::BTreeMap;
use std::io::Write;

use chrono::{DateTime, Utc};

use crate::domain::{
    Balance, ControlTotals, Currency, Entry, Format, LedgerId, LedgerType, Merchant, Period, Stage,
    Timezone,
};

/// Errors while rendering.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// Writing the output failed (encryption or upload behind it).
    #[error("writing the document failed: {0}")]
    Io(#[from] std::io::Error),
    /// The document would exceed what its format holds; retrying cannot help.
    #[error("{0}")]
    TooLarge(String),
    /// A running balance left the representable range.
    #[error("balance of {0} overflows")]
    Overflow(String),
}

impl From<::csv::Error> for RenderError {
    fn from(e: ::csv::Error) -> Self {
        RenderError::Io(std::io::Error::other(e))
    }
}

/// Everything a document shows before its first entry.
#[derive(Debug, Clone)]
pub struct DocumentHeader {
    /// The ledger.
    pub ledger_id: LedgerId,
    /// The merchant as the source describes it.
    pub merchant: Merchant,
    /// STATEMENT or SUMMARY.
    pub ledger_type: LedgerType,
    /// The period.
    pub period: Period,
    /// The zone the period is cut in.
    pub timezone: Timezone,
    /// `[start, end)` in UTC.
    pub bounds: (DateTime<Utc>, DateTime<Utc>),
    /// DRAFT or FINAL.
    pub stage: Stage,
    /// Version being generated.
    pub version: u32,
    /// Generation time.
    pub generated_at: DateTime<Utc>,
    /// Balances at the period's start.
    pub opening_balances: Vec<Balance>,
}

/// The opening balance per currency, in code order (several for one currency are added).
fn opening_balances(balances: &[Balance]) -> Result<BTreeMap<Currency, i64>, RenderError> {
    let mut opening: BTreeMap<Currency, i64> = BTreeMap::new();
    for b in balances {
        let slot = opening.entry(b.currency).or_default();
        *slot = slot
            .checked_add(b.amount)
            .ok_or_else(|| RenderError::Overflow(b.currency.to_string()))?;
    }
    Ok(opening)
}

/// A streaming document writer over `W`.
pub trait Renderer<W: Write>: Send {
    /// Writes one entry (entries arrive in ascending order).
    fn entry(&mut self, entry: &Entry) -> Result<(), RenderError>;
    /// Writes the closing part and returns the totals written and the output.
    fn finish(self: Box<Self>) -> Result<(ControlTotals, W), RenderError>;
}

/// The renderer for the pair, writing to `out`.
pub fn renderer<W: Write + Send + 'static>(
    header: &DocumentHeader,
    format: Format,
    out: W,
) -> Result<Box<dyn Renderer<W>>, RenderError> {
    match (header.ledger_type, format) {
        (LedgerType::Statement, Format::Csv) => Ok(Box::new(csv::CsvStatement::new(header, out)?)),
        (LedgerType::Summary, Format::Csv) => Ok(Box::new(summary::SummaryRenderer::new(
            header,
            out,
            csv::write_summary,
        )?)),
        (LedgerType::Statement, Format::Xlsx) => {
            Ok(Box::new(xlsx::XlsxStatement::new(header, out)?))
        }
        (LedgerType::Summary, Format::Xlsx) => Ok(Box::new(summary::SummaryRenderer::new(
            header,
            out,
            xlsx::write_summary,
        )?)),
        (LedgerType::Statement, Format::Pdf) => Ok(Box::new(pdf::PdfStatement::new(header, out)?)),
        (LedgerType::Summary, Format::Pdf) => Ok(Box::new(summary::SummaryRenderer::new(
            header,
            out,
            pdf::write_summary,
        )?)),
    }
}
