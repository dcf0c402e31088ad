//! CSV documents, RFC 4180 and UTF-8, for programs: plain decimals with a `.` and no
//! grouping, RFC 3339 instants, whatever the merchant's locale (only PDF and XLSX follow
//! it). The statement: a header row, opening balance rows, one row per entry with its
//! running balance, then per currency its `TOTAL_CREDITS`, `TOTAL_DEBITS` and
//! `CLOSING_BALANCE` rows — one currency's rows never mix sums with another's. The summary:
//! per currency its opening balance, one row per local day and per entry type, the
//! currency's total and its closing balance.

mod statement;
mod summary;

use std::io::Write;

pub use statement::CsvStatement;
pub use summary::{SUMMARY_COLUMNS, write_summary};

use super::RenderError;

/// A CSV writer over `out` with a 64 KiB buffer.
fn writer<W: Write>(out: W) -> ::csv::Writer<W> {
    ::csv::WriterBuilder::new()
        .buffer_capacity(64 * 1024)
        .from_writer(out)
}

/// Flushes `writer` and hands its output back.
fn into_inner<W: Write>(writer: ::csv::Writer<W>) -> Result<W, RenderError> {
    writer
        .into_inner()
        .map_err(|e| RenderError::Io(std::io::Error::other(e.to_string())))
}
