//! PDF tests that read the document back with poppler (`pdftotext`, `pdfinfo`, `pdffonts`)
//! and check it with `qpdf --check`. A missing tool fails the test naming its Debian
//! package; nothing is skipped.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::process::Command;

use chrono::{DateTime, Utc};

use super::layout::{
    BODY_BOTTOM, BODY_TOP, HEADER_HEIGHT, HEADING_HEIGHT, LINE_HEIGHT, ROW_HEIGHT,
    TABLE_HEAD_HEIGHT,
};
use super::*;
use crate::domain::{
    Balance, ControlTotals, Currency, Entry, EntryType, LedgerId, LedgerType, Merchant, MerchantId,
    Period, Stage, Timezone,
};
use crate::render::summary::SummaryRenderer;
use crate::render::{DocumentHeader, RenderError, Renderer, text};

const LEDGER_ID: i64 = 7_345_678_901_234;

fn header(period: &str, ledger_type: LedgerType, opening: &[(&str, i64)]) -> DocumentHeader {
    let period = Period::parse(period).unwrap();
    let tz = Timezone::parse("Europe/Berlin").unwrap();
    DocumentHeader {
        ledger_id: LedgerId::from_i64(LEDGER_ID),
        merchant: Merchant {
            id: MerchantId::parse("m_acme").unwrap(),
            name: "Acme Café GmbH".into(),
            timezone: Some(tz),
            locale: None,
        },
        ledger_type,
        period,
        timezone: tz,
        bounds: period.bounds(tz),
        stage: Stage::Final,
        version: 3,
        generated_at: "2026-11-02T09:00:00Z".parse().unwrap(),
        opening_balances: opening
            .iter()
            .map(|(c, amount)| Balance {
                currency: eur_or(c),
                amount: *amount,
            })
            .collect(),
    }
}

fn eur_or(code: &str) -> Currency {
    Currency::parse(code).unwrap()
}

fn entry(id: &str, at: &str, amount: i64, currency: &str) -> Entry {
    Entry {
        id: id.into(),
        booked_at: at.parse::<DateTime<Utc>>().unwrap(),
        entry_type: if amount >= 0 {
            EntryType::Payment
        } else {
            EntryType::Refund
        },
        amount,
        currency: eur_or(currency),
        description: format!("Order {id}"),
        reference: format!("ord_{id}"),
    }
}

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
    let mut r: Box<dyn Renderer<Vec<u8>>> = Box::new(PdfStatement::new(h, Vec::new()).unwrap());
    for e in entries {
        r.entry(e).unwrap();
    }
    r.finish().unwrap()
}

fn summary(h: &DocumentHeader, entries: &[Entry]) -> (ControlTotals, Vec<u8>) {
    let mut r: Box<dyn Renderer<Vec<u8>>> =
        Box::new(SummaryRenderer::new(h, Vec::new(), write_summary).unwrap());
    for e in entries {
        r.entry(e).unwrap();
    }
    r.finish().unwrap()
}

fn source_totals(h: &DocumentHeader, entries: &[Entry]) -> ControlTotals {
    let mut t = ControlTotals::with_opening(&h.opening_balances);
    for e in entries {
        t.add(e.currency, e.amount);
    }
    t
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
    let plain = text::amount(eur_or(code), minor);
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
            page.contains(&format!("Ledger {LEDGER_ID}")),
            "page {} lacks the ledger id",
            i + 1
        );
    }
}

#[test]
fn a_statement_reads_back_every_entry_with_amount_and_running_balance() {
    let h = header("2026-10", LedgerType::Statement, &[("EUR", 125_000)]);
    let entries = entries(400, &["EUR"]);
    let (totals, pdf) = statement(&h, &entries);
    let doc = read_back(&pdf);
    let tz = h.timezone;
    let mut balance = 125_000i64;
    for e in &entries {
        balance += e.amount;
        let tokens = doc.tokens(&e.id);
        assert_eq!(
            tokens[0],
            text::local_instant(e.booked_at, tz),
            "{tokens:?}"
        );
        assert_eq!(tokens[1], e.id);
        assert_eq!(tokens[2], e.reference);
        assert!(
            tokens.contains(&e.entry_type.as_str().to_owned()),
            "{tokens:?}"
        );
        let n = tokens.len();
        assert_eq!(tokens[n - 2], amount("EUR", e.amount), "{tokens:?}");
        assert_eq!(tokens[n - 1], amount("EUR", balance), "{tokens:?}");
    }
    let opening = doc.tokens("Opening balance at");
    assert_eq!(opening[3], "2026-10-01T00:00:00+02:00");
    assert_eq!(opening.last().unwrap(), "1,250.00");
    let credits: i64 = entries.iter().map(|e| e.amount.max(0)).sum();
    let debits: i64 = entries.iter().map(|e| e.amount.min(0)).sum();
    assert_eq!(doc.tokens("Entries ").last().unwrap(), "400");
    assert_eq!(
        doc.tokens("Credits").last().unwrap(),
        &amount("EUR", credits)
    );
    assert_eq!(doc.tokens("Debits").last().unwrap(), &amount("EUR", debits));
    let closing = doc.tokens("Closing balance at");
    assert_eq!(closing[3], "2026-11-01T00:00:00+01:00");
    assert_eq!(closing.last().unwrap(), &amount("EUR", balance));
    assert_eq!(totals, source_totals(&h, &entries));
}

#[test]
fn pages_are_counted_up_front_and_every_page_has_footer_and_column_header() {
    let h = header("2026-10", LedgerType::Statement, &[("EUR", 0)]);
    let n = 1000;
    let (_, pdf) = statement(&h, &entries(n, &["EUR"]));
    let doc = read_back(&pdf);
    // Independent arithmetic over the layout's constants.
    let body = BODY_BOTTOM - BODY_TOP;
    let first = ((body - HEADER_HEIGHT - HEADING_HEIGHT - (LINE_HEIGHT + 2.0) - TABLE_HEAD_HEIGHT)
        / ROW_HEIGHT)
        .floor() as usize;
    let later = ((body - HEADING_HEIGHT - TABLE_HEAD_HEIGHT) / ROW_HEIGHT).floor() as usize;
    let row_pages = 1 + (n - first).div_ceil(later);
    let last_rows = (n - first) - (row_pages - 2) * later;
    let totals_height = 6.0 + 4.0 * LINE_HEIGHT;
    let last_used = HEADING_HEIGHT + TABLE_HEAD_HEIGHT + last_rows as f32 * ROW_HEIGHT;
    let expected = row_pages + usize::from(last_used + totals_height > body);
    assert_pages(&doc, expected);
    for (i, page) in doc.pages.iter().enumerate() {
        let head = page
            .lines()
            .find(|l| l.contains("Entry id"))
            .unwrap_or_else(|| panic!("page {} has no column header", i + 1));
        let titles: Vec<&str> = head.split_whitespace().collect();
        assert_eq!(
            titles,
            [
                "Date",
                "(local)",
                "Entry",
                "id",
                "Reference",
                "Description",
                "Type",
                "Amount",
                "Balance"
            ]
        );
        if i > 0 {
            assert!(page.contains("EUR (continued)"), "page {}", i + 1);
        }
    }
    assert!(!doc.text().contains("DRAFT"));
    assert!(doc.pages[0].contains("FINAL"));
}

#[test]
fn a_draft_is_marked_on_every_page() {
    let mut h = header("2026-10", LedgerType::Statement, &[]);
    h.stage = Stage::Draft;
    let (_, pdf) = statement(&h, &entries(150, &["EUR"]));
    let doc = read_back(&pdf);
    assert!(doc.page_count >= 2);
    for page in &doc.pages {
        assert!(page.contains("DRAFT"));
    }
}

#[test]
fn the_header_names_merchant_period_zone_bounds_stage_version_and_generation() {
    let h = header("2026-10", LedgerType::Statement, &[("EUR", 1)]);
    let doc = read_back(&statement(&h, &[]).1);
    let first = &doc.pages[0];
    for expected in [
        "Statement — Acme Café GmbH",
        "m_acme",
        &LEDGER_ID.to_string(),
        "STATEMENT",
        "2026-10 (2026-10-01 to 2026-10-31, local days)",
        "Europe/Berlin",
        "2026-10-01T00:00:00+02:00",
        "2026-09-30T22:00:00+00:00",
        "2026-11-01T00:00:00+01:00",
        "2026-10-31T23:00:00+00:00",
        "FINAL",
        "2026-11-02T09:00:00+00:00",
    ] {
        assert!(first.contains(expected), "no {expected:?} in\n{first}");
    }
    assert!(doc.tokens("Version").contains(&"3".to_owned()));
}

#[test]
fn a_multi_currency_statement_has_a_part_per_currency_with_its_own_balances() {
    let h = header(
        "2026-10",
        LedgerType::Statement,
        &[("EUR", 10_000), ("JPY", 500), ("EUR", 5)],
    );
    let entries = entries(300, &["EUR", "USD", "JPY"]);
    let (totals, pdf) = statement(&h, &entries);
    assert_eq!(totals, source_totals(&h, &entries));
    let doc = read_back(&pdf);
    let text = doc.text();
    let (eur, jpy, usd) = (
        text.find("\nEUR").unwrap(),
        text.find("\nJPY").unwrap(),
        text.find("\nUSD").unwrap(),
    );
    assert!(eur < jpy && jpy < usd, "parts in currency order");
    let mut balances =
        std::collections::BTreeMap::from([("EUR", 10_005i64), ("JPY", 500), ("USD", 0)]);
    for e in &entries {
        let code = e.currency.code();
        let b = balances.get_mut(code).unwrap();
        *b += e.amount;
        let tokens = doc.tokens(&e.id);
        assert_eq!(tokens.last().unwrap(), &amount(code, *b), "{tokens:?}");
    }
    let openings: Vec<String> = text
        .lines()
        .filter(|l| l.contains("Opening balance"))
        .map(|l| l.split_whitespace().last().unwrap().to_owned())
        .collect();
    assert_eq!(openings, ["100.05", "500", "0.00"]);
    let closings: Vec<String> = text
        .lines()
        .filter(|l| l.contains("Closing balance"))
        .map(|l| l.split_whitespace().last().unwrap().to_owned())
        .collect();
    assert_eq!(
        closings,
        [
            amount("EUR", balances["EUR"]),
            amount("JPY", balances["JPY"]),
            amount("USD", balances["USD"])
        ]
    );
}

#[test]
fn free_text_is_cleaned_wrapped_and_clipped_never_overflowing() {
    let h = header("2026-10", LedgerType::Statement, &[("EUR", 0)]);
    let texts = [
        "Café \"Müller\", Straße 5",
        "Gift card\nmessage: \"Happy birthday!\"",
        "Tab\there\r\nand\u{0} nul",
        &format!("{} TAILMARK", "very long description ".repeat(40)),
        "Crab \u{1F980} 中文",
        "\u{202E}evil override",
        "שלום עולם",
        "",
    ];
    let list: Vec<Entry> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut e = entry(&format!("tx_t{i}"), "2026-10-05T10:00:00Z", 100, "EUR");
            e.description = (*t).to_owned();
            e.reference = if i == 2 {
                String::new()
            } else {
                "ref,\"q\"".to_owned()
            };
            e
        })
        .collect();
    let mut long_id = entry(&"tx_long".repeat(40), "2026-10-06T10:00:00Z", 1, "EUR");
    long_id.reference = "R".repeat(300);
    let mut all = list.clone();
    all.push(long_id);
    let (totals, pdf) = statement(&h, &all);
    assert_eq!(totals, source_totals(&h, &all));
    let doc = read_back(&pdf);
    assert!(doc.line_with("tx_t0").contains("Café \"Müller\", Straße 5"));
    assert!(doc.line_with("tx_t1").contains("Gift card message:"));
    let controls = doc.line_with("tx_t2");
    // (pdftotext folds runs of spaces into one.)
    assert!(controls.contains("Tab here and nul"), "{controls}");
    // Wrapped onto three lines, the last one clipped.
    let long = doc.line_with("tx_t3");
    assert!(long.contains("very long"), "{long}");
    assert!(doc.text().contains('…'));
    assert!(!doc.text().contains("TAILMARK"));
    assert!(
        doc.line_with("tx_t4")
            .contains("Crab \u{FFFD} \u{FFFD}\u{FFFD}")
    );
    assert!(doc.line_with("tx_t5").contains("\u{FFFD}evil override"));
    assert!(doc.line_with("tx_t7").contains("1.00"));
    // The long id is kept whole (drawn smaller inside its column) and the rest of the row
    // still reads back.
    let tokens = doc.tokens(&"tx_long".repeat(40));
    assert_eq!(tokens[1], "tx_long".repeat(40), "{tokens:?}");
    assert!(tokens[2].starts_with("RRR"), "{tokens:?}");
    assert_eq!(tokens.last().unwrap(), "8.01");
}

#[test]
fn local_times_follow_daylight_saving_changes() {
    let h = header("2026-10", LedgerType::Statement, &[]);
    // Berlin leaves summer time on 2026-10-25 at 01:00 UTC (03:00 CEST → 02:00 CET).
    let list = vec![
        entry("tx_before", "2026-10-25T00:30:00Z", 100, "EUR"),
        entry("tx_after", "2026-10-25T01:30:00Z", 100, "EUR"),
        entry("tx_late", "2026-10-31T23:30:00Z", 100, "EUR"),
    ];
    let doc = read_back(&statement(&h, &list).1);
    assert_eq!(doc.tokens("tx_before")[0], "2026-10-25T02:30:00+02:00");
    assert_eq!(doc.tokens("tx_after")[0], "2026-10-25T02:30:00+01:00");
    assert_eq!(doc.tokens("tx_late")[0], "2026-11-01T00:30:00+01:00");
    let h = header("2026-03", LedgerType::Statement, &[]);
    let list = vec![
        entry("tx_winter", "2026-03-29T00:59:00Z", 100, "EUR"),
        entry("tx_summer", "2026-03-29T01:00:00Z", 100, "EUR"),
    ];
    let doc = read_back(&statement(&h, &list).1);
    assert_eq!(doc.tokens("tx_winter")[0], "2026-03-29T01:59:00+01:00");
    assert_eq!(doc.tokens("tx_summer")[0], "2026-03-29T03:00:00+02:00");
    assert!(doc.pages[0].contains("2026-03-01T00:00:00+01:00"));
    assert!(doc.pages[0].contains("2026-04-01T00:00:00+02:00"));
}

#[test]
fn an_empty_period_says_so_and_still_shows_balances() {
    let h = header("2026-10", LedgerType::Statement, &[]);
    let (totals, pdf) = statement(&h, &[]);
    assert_eq!(totals, ControlTotals::default());
    let doc = read_back(&pdf);
    assert_pages(&doc, 1);
    assert!(doc.text().contains("No entries in this period"));

    let h = header("2026-10", LedgerType::Statement, &[("EUR", -5), ("USD", 7)]);
    let (totals, pdf) = statement(&h, &[]);
    assert_eq!(totals, source_totals(&h, &[]));
    let doc = read_back(&pdf);
    assert_pages(&doc, 1);
    let text = doc.text();
    assert_eq!(text.matches("No entries in this period").count(), 2);
    let closings: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Closing balance"))
        .map(|l| l.split_whitespace().last().unwrap())
        .collect();
    assert_eq!(closings, ["-0.05", "0.07"]);
}

#[test]
fn extreme_amounts_stay_readable_and_overflow_is_an_error() {
    let h = header("2026-10", LedgerType::Statement, &[("EUR", i64::MAX - 10)]);
    let list = vec![
        entry("tx_big", "2026-10-02T10:00:00Z", 5, "EUR"),
        entry("tx_min", "2026-10-02T11:00:00Z", i64::MIN + 10, "EUR"),
    ];
    let (totals, pdf) = statement(&h, &list);
    assert_eq!(totals, source_totals(&h, &list));
    let doc = read_back(&pdf);
    assert_eq!(
        doc.tokens("tx_big").last().unwrap(),
        &amount("EUR", i64::MAX - 5)
    );
    let tokens = doc.tokens("tx_min");
    assert_eq!(
        tokens[tokens.len() - 2..],
        [amount("EUR", i64::MIN + 10), amount("EUR", 4)]
    );

    let mut r = PdfStatement::new(&h, Vec::new()).unwrap();
    let e = entry("tx_over", "2026-10-02T10:00:00Z", 11, "EUR");
    assert!(matches!(
        Renderer::entry(&mut r, &e),
        Err(RenderError::Overflow(_))
    ));
}

#[test]
fn fonts_are_embedded_and_subset() {
    let h = header("2026-10", LedgerType::Statement, &[("EUR", 1)]);
    let doc = read_back(&statement(&h, &entries(20, &["EUR"])).1);
    let rows: Vec<&str> = doc.fonts.lines().skip(2).collect();
    assert!(rows.len() >= 2, "{}", doc.fonts);
    for row in rows {
        assert!(row.contains("DejaVuSansCondensed"), "{row}");
        let cols: Vec<&str> = row.split_whitespace().collect();
        // name type... emb sub uni object id
        let n = cols.len();
        assert_eq!(
            cols[n - 5..n - 2],
            ["yes", "yes", "yes"],
            "emb/sub/uni: {row}"
        );
    }
}

#[test]
fn a_summary_shows_days_types_and_balances_but_no_entries() {
    let mut h = header("2026-10", LedgerType::Summary, &[("EUR", 1000)]);
    h.stage = Stage::Draft;
    let list = vec![
        entry("tx_1", "2026-10-01T08:15:00Z", 1999, "EUR"),
        entry("tx_2", "2026-10-01T09:15:00Z", -999, "EUR"),
        // 22:30 UTC on Oct 2 is Oct 3 in Berlin.
        entry("tx_3", "2026-10-02T22:30:00Z", 250, "EUR"),
        entry("tx_4", "2026-10-03T09:15:00Z", 500, "JPY"),
    ];
    let (totals, pdf) = summary(&h, &list);
    assert_eq!(totals, source_totals(&h, &list));
    let doc = read_back(&pdf);
    assert_pages(&doc, 1);
    let text = doc.text();
    assert!(!text.contains("tx_"), "no single entries");
    assert!(text.contains("Summary — Acme Café GmbH") && text.contains("DRAFT"));
    let rows: Vec<Vec<String>> = text
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect();
    let find = |key: &str, nth: usize| -> Vec<String> {
        rows.iter()
            .filter(|r| r.first().is_some_and(|k| k == key))
            .nth(nth)
            .unwrap_or_else(|| panic!("no row {key} #{nth}\n{text}"))
            .clone()
    };
    assert_eq!(find("2026-10-01", 0)[1..], ["2", "19.99", "-9.99", "10.00"]);
    assert_eq!(find("2026-10-03", 0)[1..], ["1", "2.50", "0.00", "2.50"]);
    assert_eq!(find("2026-10-03", 1)[1..], ["1", "500", "0", "500"]);
    assert_eq!(find("PAYMENT", 0)[1..], ["2", "22.49", "0.00", "22.49"]);
    assert_eq!(find("REFUND", 0)[1..], ["1", "0.00", "-9.99", "-9.99"]);
    assert_eq!(find("Total", 0)[1..], ["3", "22.49", "-9.99", "12.50"]);
    assert_eq!(find("Total", 1)[1..], ["1", "500", "0", "500"]);
    let balances: Vec<String> = rows
        .iter()
        .filter(|r| r.first().is_some_and(|k| k == "Opening" || k == "Closing"))
        .map(|r| format!("{} {}", r[0], r.last().unwrap()))
        .collect();
    assert_eq!(
        balances,
        ["Opening 10.00", "Closing 22.50", "Opening 0", "Closing 500"]
    );
    for page in &doc.pages {
        assert!(page.contains("Day (local)"));
    }
}

#[test]
fn a_long_summary_repeats_its_column_header_and_an_empty_one_says_so() {
    let h = header("2026", LedgerType::Summary, &[("EUR", 0)]);
    let start: DateTime<Utc> = "2026-01-01T12:00:00Z".parse().unwrap();
    let list: Vec<Entry> = (0..365)
        .map(|d| {
            let mut e = entry(&format!("tx_{d}"), "2026-01-01T12:00:00Z", 100 + d, "EUR");
            e.booked_at = start + chrono::Duration::days(d);
            e
        })
        .collect();
    let (totals, pdf) = summary(&h, &list);
    assert_eq!(totals, source_totals(&h, &list));
    let doc = read_back(&pdf);
    assert!(doc.page_count >= 5);
    assert_pages(&doc, doc.page_count);
    for page in &doc.pages {
        assert!(page.contains("Day (local)") || page.contains("Entry type"));
    }
    assert!(doc.text().contains("2026-12-31"));

    let h = header("2026-10", LedgerType::Summary, &[]);
    let (totals, pdf) = summary(&h, &[]);
    assert_eq!(totals, ControlTotals::default());
    let doc = read_back(&pdf);
    assert!(doc.text().contains("No entries in this period"));
}

#[test]
fn any_text_renders_without_panic_and_the_file_stays_valid() {
    let mut h = header("2026-10", LedgerType::Statement, &[("EUR", 0)]);
    h.merchant.name = "\u{0}\n\u{202E}\u{1F980}".repeat(200);
    let every: String = (0u32..0x3000).filter_map(char::from_u32).collect();
    let texts = [
        every.clone(),
        "A\u{00A0}B \u{2126} \u{03A9} e\u{0301} \u{200B}x\u{FEFF}".to_owned(),
        "\u{2028}\u{2029}\u{85}".to_owned(),
        "مرحبا بالعالم".to_owned(),
        "(unbalanced \\ parens))".to_owned(),
    ];
    let list: Vec<Entry> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut e = entry(&format!("tx_w{i}"), "2026-10-07T10:00:00Z", -3, "EUR");
            e.description = t.clone();
            e.reference = t.chars().rev().collect();
            e
        })
        .collect();
    let (totals, pdf) = statement(&h, &list);
    assert_eq!(totals, source_totals(&h, &list));
    let doc = read_back(&pdf);
    for e in &list {
        assert_eq!(
            doc.tokens(&e.id).last().unwrap(),
            &amount("EUR", -3 * (1 + e.id[4..].parse::<i64>().unwrap()))
        );
    }
    assert!(doc.line_with("tx_w4").contains("(unbalanced \\ parens))"));
}

#[test]
fn long_entry_ids_are_kept_whole() {
    let h = header("2026-03", LedgerType::Statement, &[("EUR", 0)]);
    let long = "txn_1Ns2Kj2eZvKYlo2C0x8x8x8x_refund_2026_03_batch_0042";
    let entries = vec![
        entry(long, "2026-03-02T10:00:00Z", 1999, "EUR"),
        entry("tx_short", "2026-03-03T10:00:00Z", -500, "EUR"),
    ];
    let (_, pdf) = statement(&h, &entries);
    let text = read_back(&pdf)
        .text()
        .split_whitespace()
        .collect::<String>();
    // pdftotext may space a shrunk run differently: compare without whitespace.
    assert!(text.contains(long), "the whole id is in the text");
    assert!(text.contains("tx_short"));
}

#[test]
fn a_statement_past_the_pdf_limit_is_refused_not_attempted() {
    let h = header("2026-03", LedgerType::Statement, &[("EUR", 0)]);
    let mut r = PdfStatement::new(&h, Vec::new()).unwrap();
    let e = entry("tx_1", "2026-03-02T10:00:00Z", 1, "EUR");
    for _ in 0..MAX_PDF_STATEMENT_ENTRIES {
        r.entry(&e).unwrap();
    }
    let refused = r.entry(&e).unwrap_err();
    assert!(
        matches!(&refused, RenderError::TooLarge(m) if m.contains("CSV or XLSX")),
        "{refused}"
    );
}

/// The text of `column` of every page (`pdftotext -layout` cropped to the column, a point
/// of slack either side), each page's lines in order.
fn column_text(pdf: &[u8], column: &super::layout::Column) -> String {
    let mut file = tempfile::Builder::new().suffix(".pdf").tempfile().unwrap();
    file.write_all(pdf).unwrap();
    file.flush().unwrap();
    let path = file.path().to_str().unwrap();
    let x = (column.x - 1.0).floor() as i64;
    let w = (column.width + 2.0).ceil() as i64;
    tool(
        "pdftotext",
        "poppler-utils",
        &[
            "-layout",
            "-enc",
            "UTF-8",
            "-r",
            "72",
            "-x",
            &x.to_string(),
            "-y",
            "0",
            "-W",
            &w.to_string(),
            "-H",
            "842",
            path,
            "-",
        ],
    )
}

fn without_whitespace(text: &str) -> String {
    text.split_whitespace().collect()
}

#[test]
fn descriptions_and_references_wrap_instead_of_hiding_their_ids() {
    let h = header("2026-10", LedgerType::Statement, &[("EUR", 0)]);
    let cases = [
        (
            "Chargeback, dispute dp_9f8e7d6c5b4a39281706",
            "ord_2026_10_000123_retry_42",
        ),
        (
            "Payout to bank account DE89370400440532013000 (batch 31)",
            "po_2026_10_31_DE8937040044_0532013000",
        ),
        ("Order 1001", "ord_1001"),
    ];
    let mut list: Vec<Entry> = cases
        .iter()
        .enumerate()
        .map(|(i, (description, reference))| {
            let mut e = entry(&format!("tx_w{i}"), "2026-10-05T10:00:00Z", -250, "EUR");
            e.description = (*description).to_owned();
            e.reference = (*reference).to_owned();
            e
        })
        .collect();
    let mut runaway = entry("tx_runaway", "2026-10-06T10:00:00Z", 100, "EUR");
    runaway.description = format!("{}TAILMARK", "word ".repeat(100));
    runaway.reference = "ref_runaway".to_owned();
    list.push(runaway);
    let (totals, pdf) = statement(&h, &list);
    assert_eq!(totals, source_totals(&h, &list));
    let doc = read_back(&pdf);
    let columns = super::statement::table(
        &super::font::fonts().unwrap().regular,
        &crate::render::locale::DEFAULT,
    );
    let descriptions =
        without_whitespace(&column_text(&pdf, &columns[super::statement::DESCRIPTION]));
    let references = without_whitespace(&column_text(&pdf, &columns[super::statement::REFERENCE]));
    for (description, reference) in cases {
        assert!(
            descriptions.contains(&without_whitespace(description)),
            "{description:?} is not whole in the description column: {descriptions}"
        );
        assert!(
            references.contains(&without_whitespace(reference)),
            "{reference:?} is not whole in the reference column: {references}"
        );
    }
    // No cell needed an ellipsis but the runaway one, which stops after three lines.
    let text = doc.text();
    assert_eq!(descriptions.matches('…').count(), 1, "{descriptions}");
    assert!(!references.contains('…'), "{references}");
    assert!(!text.contains("TAILMARK"));
    let runaway_lines = text.lines().filter(|l| l.contains("word")).count();
    assert_eq!(
        runaway_lines, 3,
        "a runaway text takes three lines:\n{text}"
    );
    // The row's first line still carries date, id, type, amount and running balance.
    let tokens = doc.tokens("tx_w1");
    assert_eq!(tokens[0], "2026-10-05T12:00:00+02:00");
    assert!(tokens.contains(&"REFUND".to_owned()), "{tokens:?}");
    assert_eq!(tokens[tokens.len() - 2..], ["-2.50", "-5.00"], "{tokens:?}");
}

#[test]
fn wrapped_rows_are_counted_in_the_page_plan_and_never_split_across_pages() {
    let h = header("2026-10", LedgerType::Statement, &[("EUR", 0)]);
    let n = 600;
    let start: DateTime<Utc> = "2026-10-01T00:00:00Z".parse().unwrap();
    let list: Vec<Entry> = (0..n)
        .map(|i| {
            let mut e = entry(&format!("tx_{i:06}"), "2026-10-01T00:00:00Z", 100, "EUR");
            e.booked_at = start + chrono::Duration::minutes(i as i64);
            e.description = format!("Chargeback, dispute dp_{i:06} opened by issuer, END{i:06}");
            e
        })
        .collect();
    // Precondition: every description takes exactly three lines, none clipped.
    let face = &super::font::fonts().unwrap().regular;
    let columns = super::statement::table(face, &crate::render::locale::DEFAULT);
    for e in &list {
        let mut out = String::new();
        let lines = face.wrap_into(
            &mut out,
            &mut Vec::new(),
            &e.description,
            super::layout::TEXT_SIZE,
            columns[super::statement::DESCRIPTION].width,
            3,
        );
        assert_eq!(lines, 3, "{out:?}");
        assert!(!out.contains('…'), "{out:?}");
    }
    let (_, pdf) = statement(&h, &list);
    let doc = read_back(&pdf);
    // Independent arithmetic: a three-line row is one row plus two wrapped lines high.
    let row = ROW_HEIGHT + 2.0 * super::layout::WRAP_LEADING;
    let body = BODY_BOTTOM - BODY_TOP;
    let fit = |room: f32| ((room + 0.001) / row).floor() as usize;
    let first =
        fit(body - HEADER_HEIGHT - HEADING_HEIGHT - (LINE_HEIGHT + 2.0) - TABLE_HEAD_HEIGHT);
    let later = fit(body - HEADING_HEIGHT - TABLE_HEAD_HEIGHT);
    let row_pages = 1 + (n - first).div_ceil(later);
    let last_rows = (n - first) - (row_pages - 2) * later;
    let last_used = HEADING_HEIGHT + TABLE_HEAD_HEIGHT + last_rows as f32 * row;
    let expected = row_pages + usize::from(last_used + 6.0 + 4.0 * LINE_HEIGHT > body);
    assert!(expected >= 10, "{expected}");
    assert_pages(&doc, expected);
    // Each row's last line (its END marker) is on the page of its first line (its id).
    for (p, page) in doc.pages.iter().enumerate() {
        let marked = |prefix: &str| -> BTreeSet<String> {
            page.split_whitespace()
                .filter_map(|t| t.strip_prefix(prefix))
                .map(|t| t.trim_end_matches(|c: char| !c.is_ascii_digit()).to_owned())
                .collect()
        };
        let ids = marked("tx_");
        assert!(!ids.is_empty(), "page {} has rows", p + 1);
        assert_eq!(ids, marked("END"), "page {}", p + 1);
    }
}

fn with_locale(mut h: DocumentHeader, tag: &str) -> DocumentHeader {
    h.merchant.locale = Some(crate::domain::Locale::parse(tag).unwrap());
    h
}

#[test]
fn every_locale_s_separators_are_in_the_font() {
    let fonts = super::font::fonts().unwrap();
    for conv in crate::render::locale::TABLE
        .iter()
        .chain([&crate::render::locale::DEFAULT])
    {
        for c in [conv.group, conv.decimal] {
            for face in [&fonts.regular, &fonts.bold] {
                assert_eq!(face.resolve(c).0, c, "{} {c:?}", conv.name);
            }
        }
    }
}

#[test]
fn a_german_statement_writes_amounts_and_dates_as_a_german_reader_expects() {
    let h = with_locale(
        header("2026-10", LedgerType::Statement, &[("EUR", 24_997_881)]),
        "de-DE",
    );
    let list = vec![
        entry("tx_big", "2026-10-05T10:00:00Z", -123_456_789, "EUR"),
        entry("tx_small", "2026-10-31T22:30:00Z", 5, "EUR"),
    ];
    let (totals, pdf) = statement(&h, &list);
    assert_eq!(totals, source_totals(&h, &list));
    let doc = read_back(&pdf);
    // Date, time and offset; amount and running balance with `.` groups and `,` decimals.
    let big = doc.tokens("tx_big");
    assert_eq!(big[..3], ["05.10.2026", "12:00:00", "+02:00"], "{big:?}");
    assert_eq!(big[big.len() - 2..], ["-1.234.567,89", "-984.589,08"]);
    // After the DST change: +01:00.
    let small = doc.tokens("tx_small");
    assert_eq!(
        small[..3],
        ["31.10.2026", "23:30:00", "+01:00"],
        "{small:?}"
    );
    assert_eq!(small[small.len() - 2..], ["0,05", "-984.589,03"]);
    assert_eq!(
        doc.tokens("Opening balance at").last().unwrap(),
        "249.978,81"
    );
    assert_eq!(doc.tokens("Credits").last().unwrap(), "0,05");
    assert_eq!(doc.tokens("Debits").last().unwrap(), "-1.234.567,89");
    let closing = doc.tokens("Closing balance at");
    assert_eq!(
        closing[3..],
        ["01.11.2026", "00:00:00", "+01:00", "-984.589,03"]
    );
    let first = &doc.pages[0];
    for expected in [
        "2026-10 (01.10.2026 to 31.10.2026, local days)",
        "01.10.2026 00:00:00 +02:00",
        "30.09.2026 22:00:00 +00:00",
    ] {
        assert!(first.contains(expected), "no {expected:?} in\n{first}");
    }
    assert_eq!(doc.tokens("Locale")[..2], ["Locale", "de-DE"]);
}

#[test]
fn each_supported_locale_and_the_fallbacks_show_their_own_forms() {
    // (tag, date of 2026-10-05 12:00 Berlin, -2,499.78 EUR, what the header says)
    let cases = [
        ("en-US", "10/05/2026", "-2,499.78", "en-US"),
        ("en-GB", "05/10/2026", "-2,499.78", "en-GB"),
        ("de-AT", "05.10.2026", "-2\u{A0}499,78", "de-AT"),
        ("de-CH", "05.10.2026", "-2\u{2019}499.78", "de-CH"),
        ("fr-FR", "05/10/2026", "-2\u{202F}499,78", "fr-FR"),
        ("es-ES", "05/10/2026", "-2499,78", "es-ES"),
        ("it-IT", "05/10/2026", "-2.499,78", "it-IT"),
        ("nl-NL", "05-10-2026", "-2.499,78", "nl-NL"),
        ("ja-JP", "2026/10/05", "-2,499.78", "ja-JP"),
        ("de-LU", "05.10.2026", "-2.499,78", "de-LU (as de-DE)"),
        (
            "pt-BR",
            "2026-10-05T12:00:00+02:00",
            "-2,499.78",
            "pt-BR (as default)",
        ),
    ];
    for (tag, date, amount, label) in cases {
        let h = with_locale(header("2026-10", LedgerType::Statement, &[]), tag);
        let list = vec![entry("tx_1", "2026-10-05T10:00:00Z", -249_978, "EUR")];
        let doc = read_back(&statement(&h, &list).1);
        let line = doc.line_with("tx_1");
        assert!(line.starts_with(date), "{tag}: {line}");
        // The amount and the balance, each once. (A no-break space shares the space's
        // glyph, so the text layer gives it back as a space; the locale tests check the
        // character itself.)
        let amount = amount.replace(['\u{A0}', '\u{202F}'], " ");
        assert_eq!(line.matches(&amount).count(), 2, "{tag}: {line}");
        let locale = doc.line_with("Locale");
        assert!(locale.contains(label), "{tag}: {locale}");
    }
    // Yen have no minor digits, whatever the locale.
    let h = with_locale(header("2026-10", LedgerType::Statement, &[]), "ja-JP");
    let list = vec![entry("tx_yen", "2026-10-05T10:00:00Z", 1_234_567, "JPY")];
    let tokens = read_back(&statement(&h, &list).1).tokens("tx_yen");
    assert_eq!(tokens[tokens.len() - 2..], ["1,234,567", "1,234,567"]);
}

#[test]
fn a_localized_summary_groups_its_sums_and_writes_its_days() {
    let h = with_locale(
        header("2026-10", LedgerType::Summary, &[("EUR", 100_000_000)]),
        "de-DE",
    );
    let list = vec![
        entry("tx_1", "2026-10-01T08:15:00Z", 123_456_789, "EUR"),
        entry("tx_2", "2026-10-01T09:15:00Z", -99, "EUR"),
    ];
    let (totals, pdf) = summary(&h, &list);
    assert_eq!(totals, source_totals(&h, &list));
    let doc = read_back(&pdf);
    let text = doc.text();
    let day: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("01.10.2026"))
        .expect("a row for the local day 01.10.2026")
        .split_whitespace()
        .collect();
    assert_eq!(day[1..], ["2", "1.234.567,89", "-0,99", "1.234.566,90"]);
    assert_eq!(
        doc.tokens("Closing balance at").last().unwrap(),
        "2.234.566,90"
    );
}
