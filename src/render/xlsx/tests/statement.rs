//! XLSX statement tests: cells, sheets, limits, temporary files and errors.

use super::*;

#[test]
fn a_statement_reads_back_with_typed_cells_and_running_balances_per_currency() {
    // March 2026 in Berlin: clocks go from 02:00 CET to 03:00 CEST on the 29th.
    let mut h = header(LedgerType::Statement, "2026-03", &[("EUR", 125_000)]);
    h.stage = Stage::Draft;
    let entries = [
        entry("tx_1", "2026-03-28T23:30:00Z", 1999, "EUR", "Order 1001"),
        entry("tx_2", "2026-03-29T00:45:00Z", 1500, "JPY", "Yen"),
        entry("tx_3", "2026-03-29T01:30:00Z", -1999, "EUR", "Refund 1001"),
        entry("tx_4", "2026-03-30T08:00:00Z", 1999, "KWD", "Dinar"),
        entry("tx_5", "2026-03-31T21:59:59Z", -250, "JPY", "Fee"),
    ];
    let (totals, bytes) = statement(&h, &entries, &XlsxOptions::default());
    assert_eq!(totals, source_totals(&h, &entries));
    let mut book = Book::open(bytes);
    assert_eq!(book.names(), ["Statement", "EUR", "JPY", "KWD"]);

    let eur = book.sheet("EUR");
    let headers: Vec<String> = (0..7).map(|col| string(&eur, 0, col)).collect();
    assert_eq!(headers, STATEMENT_COLUMNS);
    assert_eq!(datetime(&eur, 1, 0), local("2026-03-01 00:00:00"));
    assert_eq!(string(&eur, 1, 2), "OPENING_BALANCE");
    assert_eq!(num(&eur, 1, 6), 1250.0);
    // 23:30 UTC is 00:30 CET, before the change; 01:30 UTC is 03:30 CEST, after it.
    assert_eq!(datetime(&eur, 2, 0), local("2026-03-29 00:30:00"));
    assert_eq!(
        (string(&eur, 2, 1), string(&eur, 2, 2)),
        ("tx_1".into(), "PAYMENT".into())
    );
    assert_eq!(string(&eur, 2, 3), "Order 1001");
    assert_eq!(string(&eur, 2, 4), "ord_tx_1");
    assert_eq!(num(&eur, 2, 5), 19.99);
    assert_eq!(num(&eur, 2, 6), 1269.99);
    assert_eq!(datetime(&eur, 3, 0), local("2026-03-29 03:30:00"));
    assert_eq!(num(&eur, 3, 5), -19.99);
    assert_eq!(num(&eur, 3, 6), 1250.0);
    assert_eq!(string(&eur, 4, 2), "CLOSING_BALANCE");
    assert_eq!(datetime(&eur, 4, 0), local("2026-04-01 00:00:00"));
    assert_eq!(num(&eur, 4, 6), 1250.0);
    let entries_row = find(&eur, 3, "Entries");
    assert_eq!(num(&eur, entries_row, 5), 2.0);
    assert_eq!(num(&eur, find(&eur, 3, "Total credits"), 5), 19.99);
    assert_eq!(num(&eur, find(&eur, 3, "Total debits"), 5), -19.99);

    let jpy = book.sheet("JPY");
    assert_eq!(string(&jpy, 1, 2), "OPENING_BALANCE");
    assert_eq!(num(&jpy, 1, 6), 0.0);
    assert_eq!(datetime(&jpy, 2, 0), local("2026-03-29 01:45:00"));
    assert_eq!(num(&jpy, 2, 5), 1500.0);
    assert_eq!(datetime(&jpy, 3, 0), local("2026-03-31 23:59:59"));
    assert_eq!(num(&jpy, 3, 6), 1250.0);
    assert_eq!(num(&jpy, 4, 6), 1250.0);
    let kwd = book.sheet("KWD");
    assert_eq!(num(&kwd, 2, 5), 1.999);

    // Formats follow the exponent and name the currency.
    let styles = book.part("xl/styles.xml");
    for pattern in [
        "#,##0.00 &quot;EUR&quot;",
        "#,##0 &quot;JPY&quot;",
        "#,##0.000 &quot;KWD&quot;",
        "yyyy-mm-dd hh:mm:ss",
    ] {
        assert!(styles.contains(pattern), "{pattern} missing in {styles}");
    }

    let front = book.sheet("Statement");
    let value = |label: &str| at(&front, find(&front, 0, label), 1);
    assert_eq!(value("Merchant"), Data::String(MERCHANT_NAME.into()));
    assert_eq!(value("Merchant ID"), Data::String(MERCHANT_ID.into()));
    assert_eq!(value("Ledger type"), Data::String("STATEMENT".into()));
    assert_eq!(value("Period"), Data::String("2026-03".into()));
    assert_eq!(value("Time zone"), Data::String("Europe/Berlin".into()));
    assert_eq!(
        value("Period start (local)"),
        Data::String("2026-03-01T00:00:00+01:00".into())
    );
    assert_eq!(
        value("Period end, exclusive (local)"),
        Data::String("2026-04-01T00:00:00+02:00".into())
    );
    assert_eq!(
        value("Period start (UTC)"),
        Data::String("2026-02-28T23:00:00Z".into())
    );
    assert_eq!(
        value("Period end, exclusive (UTC)"),
        Data::String("2026-03-31T22:00:00Z".into())
    );
    assert_eq!(value("Stage"), Data::String("DRAFT".into()));
    assert_eq!(value("Version"), Data::Float(3.0));
    assert_eq!(
        value("Generated at (UTC)"),
        Data::String(GENERATED_AT.into())
    );
    assert_eq!(value("Ledger ID"), Data::String(LEDGER_ID.to_string()));
    let eur_line = find(&front, 0, "EUR");
    assert_eq!(string(&front, eur_line, 1), "EUR");
    assert_eq!(num(&front, eur_line, 2), 1250.0);
    assert_eq!(num(&front, eur_line, 3), 2.0);
    assert_eq!(num(&front, eur_line, 4), 19.99);
    assert_eq!(num(&front, eur_line, 5), -19.99);
    assert_eq!(num(&front, eur_line, 6), 1250.0);
    let jpy_line = find(&front, 0, "JPY");
    assert_eq!(num(&front, jpy_line, 6), 1250.0);
}

#[test]
fn dates_follow_the_merchant_s_locale_and_amounts_stay_grouped_numbers() {
    for (tag, datetime_format, date_format) in [
        ("de-DE", "dd\\.mm\\.yyyy hh:mm:ss", "dd\\.mm\\.yyyy"),
        ("en-US", "mm\\/dd\\/yyyy hh:mm:ss", "mm\\/dd\\/yyyy"),
        ("ja-JP", "yyyy\\/mm\\/dd hh:mm:ss", "yyyy\\/mm\\/dd"),
    ] {
        let mut h = header(LedgerType::Statement, "2026-03", &[("EUR", 24_997_881)]);
        h.merchant.locale = Some(crate::domain::Locale::parse(tag).unwrap());
        let entries = [entry("tx_1", "2026-03-02T10:00:00Z", -1999, "EUR", "a")];
        let (_, bytes) = statement(&h, &entries, &XlsxOptions::default());
        let mut book = Book::open(bytes);
        let styles = book.part("xl/styles.xml");
        assert!(
            styles.contains(datetime_format),
            "{tag}: {datetime_format} missing in {styles}"
        );
        assert!(styles.contains("#,##0.00 &quot;EUR&quot;"), "{tag}");
        assert!(!styles.contains("yyyy-mm-dd"), "{tag}: {styles}");
        // Still date cells and number cells, whatever the display.
        let eur = book.sheet("EUR");
        assert_eq!(datetime(&eur, 2, 0), local("2026-03-02 11:00:00"));
        assert_eq!(num(&eur, 1, 6), 249_978.81);
        assert_eq!(num(&eur, 2, 5), -19.99);

        h.ledger_type = LedgerType::Summary;
        let (_, bytes) = summary(&h, &entries);
        let styles = Book::open(bytes).part("xl/styles.xml");
        assert!(
            styles.contains(date_format),
            "{tag}: {date_format} missing in {styles}"
        );
    }
}

#[test]
fn the_header_row_is_frozen_and_filtered_and_columns_have_widths() {
    let h = header(LedgerType::Statement, "2026-03", &[("EUR", 0)]);
    let entries = [entry("tx_1", "2026-03-02T10:00:00Z", 100, "EUR", "a")];
    for in_memory_entries in [0, usize::MAX] {
        let options = XlsxOptions {
            in_memory_entries,
            ..XlsxOptions::default()
        };
        let (_, bytes) = render(&h, &entries, &options);
        let book = Book::open(bytes);
        // calamine does not read panes or filters; the sheet XML says it.
        let xml = book.part("xl/worksheets/sheet2.xml");
        assert!(
            xml.contains(
                r#"<pane ySplit="1" topLeftCell="A2" activePane="bottomLeft" state="frozen"/>"#
            ),
            "{xml}"
        );
        // Header, opening, the entry and the closing row.
        assert!(xml.contains(r#"<autoFilter ref="A1:G4"/>"#), "{xml}");
        assert!(xml.contains("<cols>"), "{xml}");
        assert!(!xml.contains("<f>"), "no formulas: {xml}");
        let workbook = book.part("xl/workbook.xml");
        assert!(workbook.contains("_xlnm._FilterDatabase"), "{workbook}");
    }
}

#[test]
fn free_text_is_kept_as_text_whatever_it_holds() {
    let h = header(LedgerType::Statement, "2026-03", &[]);
    let long = "é".repeat(40_000);
    // A character outside the BMP is two UTF-16 units: the cut must not split it.
    let astral = format!("{}{}", "a".repeat(EXCEL_MAX_CELL_CHARS - 2), "😀😀");
    let texts = [
        "=HYPERLINK(\"http://evil\",\"x\")",
        "+1+2",
        "-3",
        "@SUM(A1)",
        "Order, \"1001\"\nline 2\ttab",
        "Café Zoë ñ ß 漢字",
        "bell\u{7} nul\u{0} esc\u{1b} cr\r unit\u{1f} nonchar\u{fffe}",
        "_x0041_ stays literal",
        "<b>&amp;</b>",
        "  padded  ",
        long.as_str(),
        astral.as_str(),
    ];
    let entries: Vec<Entry> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            entry(
                &format!("tx_{i}"),
                &format!("2026-03-02T10:00:{i:02}Z"),
                1,
                "EUR",
                t,
            )
        })
        .collect();
    let (totals, bytes) = statement(&h, &entries, &XlsxOptions::default());
    assert_eq!(totals, source_totals(&h, &entries));
    let mut book = Book::open(bytes);
    let eur = book.sheet("EUR");
    for (i, t) in texts.iter().enumerate() {
        let row = 2 + i as u32;
        let got = string(&eur, row, 3);
        if t.len() > EXCEL_MAX_CELL_CHARS {
            // At the limit, or one short where the cut would split a surrogate pair.
            let units = got.encode_utf16().count();
            assert!(units == EXCEL_MAX_CELL_CHARS || units == EXCEL_MAX_CELL_CHARS - 1);
            assert!(got.ends_with('…'));
            assert!(t.starts_with(got.trim_end_matches('…')));
        } else {
            assert_eq!(got, *t, "row {row}");
        }
    }
    let xml = book.part("xl/worksheets/sheet2.xml");
    assert!(!xml.contains("<f>"), "free text never becomes a formula");
}

#[test]
fn cell_text_cuts_at_the_limit_on_a_character_boundary() {
    assert_eq!(cell_text("short"), "short");
    let exact = "x".repeat(EXCEL_MAX_CELL_CHARS);
    assert_eq!(cell_text(&exact), exact);
    let over = "x".repeat(EXCEL_MAX_CELL_CHARS + 1);
    let cut = cell_text(&over);
    assert_eq!(cut.chars().count(), EXCEL_MAX_CELL_CHARS);
    assert!(cut.ends_with('…'));
    let astral = "😀".repeat(EXCEL_MAX_CELL_CHARS);
    let cut = cell_text(&astral);
    assert!(cut.encode_utf16().count() <= EXCEL_MAX_CELL_CHARS);
    assert!(cut.ends_with('…'));
}

#[test]
fn an_empty_period_is_a_valid_workbook_that_says_so() {
    // No currency at all.
    let h = header(LedgerType::Statement, "2026-03", &[]);
    let (totals, bytes) = statement(&h, &[], &XlsxOptions::default());
    assert_eq!(totals, source_totals(&h, &[]));
    let mut book = Book::open(bytes);
    assert_eq!(book.names(), ["Statement"]);
    let front = book.sheet("Statement");
    find(&front, 0, NO_ENTRIES);

    // Opening balances only: the balances still show.
    let h = header(
        LedgerType::Statement,
        "2026-03",
        &[("EUR", 500), ("EUR", -200), ("USD", 7)],
    );
    let (totals, bytes) = statement(&h, &[], &XlsxOptions::default());
    assert_eq!(totals, source_totals(&h, &[]));
    let mut book = Book::open(bytes);
    assert_eq!(book.names(), ["Statement", "EUR", "USD"]);
    let eur = book.sheet("EUR");
    assert_eq!(num(&eur, 1, 6), 3.0);
    assert_eq!(string(&eur, 2, 3), NO_ENTRIES);
    assert_eq!(string(&eur, 3, 2), "CLOSING_BALANCE");
    assert_eq!(num(&eur, 3, 6), 3.0);
    let front = book.sheet("Statement");
    find(&front, 0, NO_ENTRIES);
    assert_eq!(num(&front, find(&front, 0, "USD"), 6), 0.07);
}

#[test]
fn a_currency_continues_on_a_next_sheet_past_the_row_limit() {
    let h = header(LedgerType::Statement, "2026-03", &[("EUR", 1000)]);
    let mut entries = Vec::new();
    for i in 0..40 {
        let currency = if i % 5 == 4 { "USD" } else { "EUR" };
        entries.push(entry(
            &format!("tx_{i:02}"),
            &format!("2026-03-02T10:{i:02}:00Z"),
            i + 1,
            currency,
            "x",
        ));
    }
    let options = XlsxOptions {
        rows_per_sheet: 10,
        ..XlsxOptions::default()
    };
    let (totals, bytes) = statement(&h, &entries, &options);
    assert_eq!(totals, source_totals(&h, &entries));
    let mut book = Book::open(bytes);
    // 32 EUR entries + opening + closing block over sheets of 9 rows below a header.
    assert_eq!(
        book.names(),
        [
            "Statement",
            "EUR",
            "EUR (2)",
            "EUR (3)",
            "EUR (4)",
            "EUR (5)",
            "USD",
            // 8 USD entries fill the first sheet; the closing block goes on.
            "USD (2)"
        ]
    );
    let mut seen = Vec::new();
    let mut balance = 1000;
    for name in ["EUR", "EUR (2)", "EUR (3)", "EUR (4)", "EUR (5)"] {
        let sheet = book.sheet(name);
        assert!(sheet.height() <= 10, "{name} has {} rows", sheet.height());
        let headers: Vec<String> = (0..7).map(|col| string(&sheet, 0, col)).collect();
        assert_eq!(headers, STATEMENT_COLUMNS, "{name} repeats the header");
        for row in 1..sheet.height() as u32 {
            if let Data::String(id) = at(&sheet, row, 1) {
                let amount = entries.iter().find(|e| e.id == id).unwrap().amount;
                balance += amount;
                assert_eq!(num(&sheet, row, 6), balance as f64 / 100.0, "{id}");
                seen.push(id);
            }
        }
    }
    let expected: Vec<String> = entries
        .iter()
        .filter(|e| e.currency == c("EUR"))
        .map(|e| e.id.clone())
        .collect();
    assert_eq!(seen, expected, "every EUR entry once, in order");
    let last = book.sheet("EUR (5)");
    let closing = find(&last, 2, "CLOSING_BALANCE");
    assert_eq!(num(&last, closing, 6), balance as f64 / 100.0);
    let front = book.sheet("Statement");
    assert_eq!(
        string(&front, find(&front, 0, "EUR"), 1),
        "EUR, EUR (2), EUR (3), EUR (4), EUR (5)"
    );
}

#[test]
fn amounts_beyond_fifteen_digits_are_exact_text_and_flagged() {
    let h = header(LedgerType::Statement, "2026-03", &[]);
    let limit = 1_000_000_000_000_000_i64;
    let entries = [
        entry(
            "tx_1",
            "2026-03-02T10:00:00Z",
            limit - 1,
            "EUR",
            "largest exact",
        ),
        entry("tx_2", "2026-03-02T11:00:00Z", -(limit - 1), "EUR", "back"),
        entry("tx_3", "2026-03-02T12:00:00Z", limit, "EUR", "too large"),
    ];
    let (totals, bytes) = statement(&h, &entries, &XlsxOptions::default());
    assert_eq!(totals, source_totals(&h, &entries));
    let mut book = Book::open(bytes);
    let eur = book.sheet("EUR");
    assert_eq!(num(&eur, 2, 5), 9_999_999_999_999.99);
    assert_eq!(num(&eur, 3, 6), 0.0);
    assert_eq!(string(&eur, 4, 5), "10000000000000.00");
    assert_eq!(string(&eur, 4, 6), "10000000000000.00");
    let front = book.sheet("Statement");
    let flagged = (0..front.height() as u32)
        .any(|r| matches!(at(&front, r, 0), Data::String(s) if s.starts_with("Amounts in red")));
    assert!(flagged, "the first sheet explains the red amounts");
}

#[test]
fn a_running_balance_that_overflows_is_an_error_not_a_panic() {
    let h = header(LedgerType::Statement, "2026-03", &[("EUR", i64::MAX)]);
    let e = entry("tx_1", "2026-03-02T10:00:00Z", 1, "EUR", "");
    let ok = entry("tx_2", "2026-03-02T11:00:00Z", -1, "EUR", "");
    let streaming = XlsxOptions {
        in_memory_entries: 0,
        ..XlsxOptions::default()
    };
    let mut r = XlsxStatement::with_options(&h, Vec::new(), &streaming).unwrap();
    assert!(matches!(r.entry(&e), Err(RenderError::Overflow(_))));
    // The workbook is incomplete from then on.
    assert!(r.entry(&ok).is_err());
    assert!(Box::new(r).finish().is_err());
    // Held back in memory, the entry fails when it is laid out.
    let mut r = XlsxStatement::new(&h, Vec::new()).unwrap();
    r.entry(&e).unwrap();
    assert!(matches!(
        Box::new(r).finish(),
        Err(RenderError::Overflow(_))
    ));
    let h = header(
        LedgerType::Statement,
        "2026-03",
        &[("EUR", i64::MAX), ("EUR", 1)],
    );
    assert!(matches!(
        XlsxStatement::new(&h, Vec::new()),
        Err(RenderError::Overflow(_))
    ));
}

#[test]
fn temporary_files_are_anonymous_and_only_for_large_statements() {
    /// Open files of this process inside `dir` (an unlinked file's link reads
    /// `dir/#123 (deleted)` or `dir/.tmpXXXX (deleted)`).
    fn open_in(dir: &std::path::Path) -> usize {
        std::fs::read_dir("/proc/self/fd")
            .map(|fds| {
                fds.flatten()
                    .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                    .filter(|target| target.starts_with(dir))
                    .count()
            })
            .unwrap_or(0)
    }
    let dir = tempfile::tempdir().unwrap();
    let names = || std::fs::read_dir(dir.path()).unwrap().count();
    let h = header(LedgerType::Statement, "2026-03", &[("EUR", 1)]);
    let entries: Vec<Entry> = (0..2000)
        .map(|i| {
            let currency = if i % 2 == 0 { "EUR" } else { "USD" };
            entry(
                &format!("tx_{i}"),
                "2026-03-02T10:00:00Z",
                1,
                currency,
                "secret",
            )
        })
        .collect();
    for in_memory_entries in [1000, 2000] {
        let options = XlsxOptions {
            in_memory_entries,
            temp_dir: Some(dir.path().to_owned()),
            ..XlsxOptions::default()
        };
        let mut r = XlsxStatement::with_options(&h, Vec::new(), &options).unwrap();
        for e in &entries {
            r.entry(e).unwrap();
        }
        assert_eq!(names(), 0, "sheet data never has a name on disk");
        if cfg!(target_os = "linux") {
            let streaming = in_memory_entries < entries.len();
            // One file per currency sheet while streaming; none for a small statement.
            assert_eq!(open_in(dir.path()), if streaming { 2 } else { 0 });
        }
        let (_, bytes) = Box::new(r).finish().unwrap();
        assert_eq!((names(), open_in(dir.path())), (0, 0));
        assert_eq!(Book::open(bytes).names(), ["Statement", "EUR", "USD"]);
    }

    let missing = XlsxOptions {
        in_memory_entries: 0,
        temp_dir: Some(dir.path().join("missing")),
        ..XlsxOptions::default()
    };
    let mut r = XlsxStatement::with_options(&h, Vec::new(), &missing).unwrap();
    assert!(matches!(r.entry(&entries[0]), Err(RenderError::Io(_))));
}

/// A writer that fails after `left` bytes.
struct Failing {
    left: usize,
}

impl Write for Failing {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.left < buf.len() {
            return Err(std::io::Error::other("upload failed"));
        }
        self.left -= buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_failing_output_is_an_error() {
    let h = header(LedgerType::Statement, "2026-03", &[("EUR", 1)]);
    let mut r: Box<dyn Renderer<Failing>> =
        Box::new(XlsxStatement::new(&h, Failing { left: 1000 }).unwrap());
    r.entry(&entry("tx_1", "2026-03-02T10:00:00Z", 1, "EUR", "a"))
        .unwrap();
    assert!(matches!(r.finish(), Err(RenderError::Io(_))));
    let mut h = h;
    h.ledger_type = LedgerType::Summary;
    let mut r: Box<dyn Renderer<Failing>> =
        Box::new(SummaryRenderer::new(&h, Failing { left: 1000 }, write_summary).unwrap());
    r.entry(&entry("tx_1", "2026-03-02T10:00:00Z", 1, "EUR", "a"))
        .unwrap();
    assert!(matches!(r.finish(), Err(RenderError::Io(_))));
}

#[test]
fn instants_excel_cannot_show_become_text() {
    // The end of the year 9999 is 10000-01-01, past Excel's last date.
    let h = header(LedgerType::Statement, "9999-12", &[("EUR", 1)]);
    let (_, bytes) = statement(&h, &[], &XlsxOptions::default());
    let mut book = Book::open(bytes);
    let eur = book.sheet("EUR");
    assert_eq!(datetime(&eur, 1, 0), local("9999-12-01 00:00:00"));
    let closing = find(&eur, 2, "CLOSING_BALANCE");
    assert_eq!(string(&eur, closing, 0), "+10000-01-01T00:00:00+01:00");
}

#[test]
fn the_repeated_hour_of_a_fall_back_shows_its_local_time_twice() {
    // 25 October 2026 in Berlin: 03:00 CEST becomes 02:00 CET.
    let h = header(LedgerType::Statement, "2026-10", &[]);
    let entries = [
        entry("tx_1", "2026-10-25T00:30:00Z", 1, "EUR", "02:30 CEST"),
        entry("tx_2", "2026-10-25T01:30:00Z", 2, "EUR", "02:30 CET"),
        entry("tx_3", "2026-10-25T02:30:00Z", 3, "EUR", "03:30 CET"),
    ];
    let (_, bytes) = statement(&h, &entries, &XlsxOptions::default());
    let eur = Book::open(bytes).sheet("EUR");
    assert_eq!(datetime(&eur, 2, 0), local("2026-10-25 02:30:00"));
    assert_eq!(datetime(&eur, 3, 0), local("2026-10-25 02:30:00"));
    assert_eq!(datetime(&eur, 4, 0), local("2026-10-25 03:30:00"));
    // The sheet keeps the booking order, so the running balance tells them apart.
    assert_eq!([num(&eur, 2, 6), num(&eur, 3, 6)], [0.01, 0.03]);
}
