//! PDF tests that read the document back with poppler (`pdftotext`, `pdfinfo`, `pdffonts`)
//! and check it with `qpdf --check`. A missing tool fails the test naming its Debian
//! package; nothing is skipped. `statement`, `wrapping`, `summary` and `locale` hold the
//! tests; this module the read-back helpers.

mod locale;
mod statement;
mod summary;
mod wrapping;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::process::Command;

use chrono::{DateTime, Utc};

use super::layout::{
    BODY_BOTTOM, BODY_TOP, HEADER_HEIGHT, HEADING_HEIGHT, LINE_HEIGHT, ROW_HEIGHT,
    TABLE_HEAD_HEIGHT,
};
use super::*;
use crate::domain::{ControlTotals, Entry, EntryType, LedgerType, Stage};
use crate::render::testing::{
    self, LEDGER_ID, MERCHANT_ID, MERCHANT_NAME, currency, entry, header, source_totals,
};
use crate::render::{DocumentHeader, RenderError, Renderer, text};

/// `n` entries in October 2026, cycling through currencies, with varied amounts.
fn entries(n: usize, currencies: &[&str]) -> Vec<Entry> {
    let start: DateTime<Utc> = "2026-10-01T00:00:00Z".parse().unwrap();
    let step = (30 * 24 * 3600) / n.max(1) as i64;
    (0..n)
        .map(|i| {
            let amount = match i % 5 {
                0 => 199_999,
                1 => -2_550,
                2 => 5,
                3 => -120_000,
                _ => 31_415,
            } + i as i64;
            let mut e = entry(
                &format!("tx_{i:06}"),
                "2026-10-01T00:00:00Z",
                amount,
                currencies[i % currencies.len()],
            );
            e.booked_at = start + chrono::Duration::seconds(step * i as i64);
            e.entry_type = EntryType::ALL[i % EntryType::ALL.len()];
            e
        })
        .collect()
}

fn statement(h: &DocumentHeader, entries: &[Entry]) -> (ControlTotals, Vec<u8>) {
    testing::render(Box::new(PdfStatement::new(h, Vec::new()).unwrap()), entries)
}

fn summary(h: &DocumentHeader, entries: &[Entry]) -> (ControlTotals, Vec<u8>) {
    testing::summary(h, entries, write_summary)
}

/// Runs a poppler/qpdf tool; a missing one fails naming the Debian package.
fn tool(name: &str, package: &str, args: &[&str]) -> String {
    let out = Command::new(name).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run {name} ({e}): install the Debian package {package} (apt-get install -y {package})")
    });
    assert!(
        out.status.success(),
        "{name} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A PDF read back: its text per page (pdftotext -layout), page count and font list.
struct ReadBack {
    pages: Vec<String>,
    page_count: usize,
    fonts: String,
}

impl ReadBack {
    fn text(&self) -> String {
        self.pages.join("\n")
    }

    /// The one text line that holds `needle`.
    fn line_with(&self, needle: &str) -> String {
        let lines: Vec<&str> = self
            .pages
            .iter()
            .flat_map(|p| p.lines())
            .filter(|l| l.contains(needle))
            .collect();
        assert_eq!(lines.len(), 1, "lines with {needle:?}: {lines:?}");
        lines[0].to_owned()
    }

    /// The whitespace-separated tokens of the one line that holds `needle`.
    fn tokens(&self, needle: &str) -> Vec<String> {
        self.line_with(needle)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }
}

fn read_back(pdf: &[u8]) -> ReadBack {
    assert!(pdf.starts_with(b"%PDF-"), "not a PDF");
    let mut file = tempfile::Builder::new().suffix(".pdf").tempfile().unwrap();
    file.write_all(pdf).unwrap();
    file.flush().unwrap();
    let path = file.path().to_str().unwrap();
    let check = tool("qpdf", "qpdf", &["--check", path]);
    assert!(
        check.contains("No syntax or stream encoding errors"),
        "qpdf --check: {check}"
    );
    let info = tool("pdfinfo", "poppler-utils", &[path]);
    let page_count = info
        .lines()
        .find_map(|l| l.strip_prefix("Pages:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("pdfinfo names the page count");
    let text = tool(
        "pdftotext",
        "poppler-utils",
        &["-layout", "-enc", "UTF-8", path, "-"],
    );
    let mut pages: Vec<String> = text.split('\x0c').map(str::to_owned).collect();
    if pages.last().is_some_and(|p| p.trim().is_empty()) {
        pages.pop();
    }
    let fonts = tool("pdffonts", "poppler-utils", &[path]);
    ReadBack {
        pages,
        page_count,
        fonts,
    }
}

/// An amount as the default locale shows it: the plain decimal with its whole digits
/// grouped by `,` (written here without the renderer's code).
fn amount(code: &str, minor: i64) -> String {
    let plain = text::amount(currency(code), minor);
    let (sign, digits) = match plain.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", plain.as_str()),
    };
    let (whole, fraction) = digits.split_at(digits.find('.').unwrap_or(digits.len()));
    let mut groups: Vec<&str> = Vec::new();
    let mut end = whole.len();
    while end > 3 {
        groups.push(&whole[end - 3..end]);
        end -= 3;
    }
    groups.push(&whole[..end]);
    groups.reverse();
    format!("{sign}{}{fraction}", groups.join(","))
}

/// Every page has its footer, and every page count agrees.
fn assert_pages(doc: &ReadBack, expected: usize) {
    assert_eq!(doc.page_count, expected, "pdfinfo page count");
    assert_eq!(doc.pages.len(), expected, "pages in the text");
    for (i, page) in doc.pages.iter().enumerate() {
        let footer = format!("Page {} of {expected}", i + 1);
        assert!(page.contains(&footer), "page {} lacks {footer:?}", i + 1);
        assert!(
            page.contains(&format!("Ledger {LEDGER_ID} version 3")),
            "page {} lacks the ledger id and version the manifest names",
            i + 1
        );
    }
}

fn with_locale(mut h: DocumentHeader, tag: &str) -> DocumentHeader {
    h.merchant.locale = Some(crate::domain::Locale::parse(tag).unwrap());
    h
}
