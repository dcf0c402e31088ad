//! XLSX tests that read the workbook back with calamine (cells) and the zip's XML parts
//! (panes, filters, styles): `statement` and `summary` per document type.

mod statement;
mod summary;

use std::io::{Cursor, Read};

use calamine::{Data, Range, Reader, Xlsx, open_workbook_from_rs};
use chrono::NaiveDateTime;

use super::cells::cell_text;
use super::*;
use crate::domain::{ControlTotals, Entry, LedgerType, Stage};
use crate::render::summary::SummaryRenderer;
use crate::render::testing::{
    self, GENERATED_AT, LEDGER_ID, MERCHANT_ID, MERCHANT_NAME, currency as c,
    described_entry as entry, header, source_totals,
};
use crate::render::{DocumentHeader, RenderError, Renderer};

/// A statement with `options`.
fn render(
    h: &DocumentHeader,
    entries: &[Entry],
    options: &XlsxOptions,
) -> (ControlTotals, Vec<u8>) {
    testing::render(
        Box::new(XlsxStatement::with_options(h, Vec::new(), options).unwrap()),
        entries,
    )
}

/// A summary.
fn summary(h: &DocumentHeader, entries: &[Entry]) -> (ControlTotals, Vec<u8>) {
    testing::summary(h, entries, write_summary)
}

/// Every sheet's cells as calamine reads them.
fn contents(bytes: &[u8]) -> Vec<(String, Range<Data>)> {
    let mut book = Book::open(bytes.to_vec());
    book.names()
        .into_iter()
        .map(|name| {
            let range = book.sheet(&name);
            (name, range)
        })
        .collect()
}

/// A statement rendered all in memory, all streaming and switching to streaming
/// halfway: the three must read back the same. Returns the streaming one.
fn statement(
    h: &DocumentHeader,
    entries: &[Entry],
    options: &XlsxOptions,
) -> (ControlTotals, Vec<u8>) {
    let with = |in_memory_entries| XlsxOptions {
        in_memory_entries,
        ..options.clone()
    };
    let (streamed_totals, streamed) = render(h, entries, &with(0));
    for in_memory_entries in [usize::MAX, entries.len() / 2] {
        let (totals, bytes) = render(h, entries, &with(in_memory_entries));
        assert_eq!(totals, streamed_totals, "{in_memory_entries} in memory");
        assert!(
            contents(&bytes) == contents(&streamed),
            "{in_memory_entries} entries in memory read back unlike streaming"
        );
    }
    (streamed_totals, streamed)
}

struct Book {
    xlsx: Xlsx<Cursor<Vec<u8>>>,
    bytes: Vec<u8>,
}

impl Book {
    fn open(bytes: Vec<u8>) -> Self {
        let xlsx = open_workbook_from_rs(Cursor::new(bytes.clone())).unwrap();
        Self { xlsx, bytes }
    }

    fn names(&self) -> Vec<String> {
        self.xlsx.sheet_names()
    }

    fn sheet(&mut self, name: &str) -> Range<Data> {
        self.xlsx.worksheet_range(name).unwrap()
    }

    /// One XML part of the zip, as text.
    fn part(&self, name: &str) -> String {
        let mut zip = zip::ZipArchive::new(Cursor::new(self.bytes.as_slice())).unwrap();
        let mut text = String::new();
        zip.by_name(name)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        text
    }
}

fn at(sheet: &Range<Data>, row: u32, col: u32) -> Data {
    sheet.get_value((row, col)).cloned().unwrap_or(Data::Empty)
}

/// A numeric cell's value; panics (failing the test) on anything but a number.
fn num(sheet: &Range<Data>, row: u32, col: u32) -> f64 {
    match at(sheet, row, col) {
        Data::Float(v) => v,
        Data::Int(v) => v as f64,
        other => panic!("({row}, {col}) is not a number: {other:?}"),
    }
}

fn string(sheet: &Range<Data>, row: u32, col: u32) -> String {
    match at(sheet, row, col) {
        Data::String(s) => s,
        other => panic!("({row}, {col}) is not text: {other:?}"),
    }
}

fn datetime(sheet: &Range<Data>, row: u32, col: u32) -> NaiveDateTime {
    match at(sheet, row, col) {
        Data::DateTime(d) if d.is_datetime() => d.as_datetime().unwrap(),
        other => panic!("({row}, {col}) is not a date cell: {other:?}"),
    }
}

fn local(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
}

/// The row whose column `col` holds `text`.
fn find(sheet: &Range<Data>, col: u32, text: &str) -> u32 {
    (0..sheet.height() as u32)
        .find(|&r| at(sheet, r, col) == Data::String(text.into()))
        .unwrap_or_else(|| panic!("no {text:?} in column {col}"))
}
