//! Statement tests: entries, balances, pages, header, footer, free text and limits.

use super::*;

#[test]
fn a_statement_reads_back_every_entry_with_amount_and_running_balance() {
    let h = header(LedgerType::Statement, "2026-10", &[("EUR", 125_000)]);
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
    let h = header(LedgerType::Statement, "2026-10", &[("EUR", 0)]);
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
    let mut h = header(LedgerType::Statement, "2026-10", &[]);
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
    let h = header(LedgerType::Statement, "2026-10", &[("EUR", 1)]);
    let doc = read_back(&statement(&h, &[]).1);
    let first = &doc.pages[0];
    for expected in [
        format!("Statement — {MERCHANT_NAME}").as_str(),
        MERCHANT_ID,
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
        LedgerType::Statement,
        "2026-10",
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
    let h = header(LedgerType::Statement, "2026-10", &[("EUR", 0)]);
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
    let h = header(LedgerType::Statement, "2026-10", &[]);
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
    let h = header(LedgerType::Statement, "2026-03", &[]);
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
    let h = header(LedgerType::Statement, "2026-10", &[]);
    let (totals, pdf) = statement(&h, &[]);
    assert_eq!(totals, ControlTotals::default());
    let doc = read_back(&pdf);
    assert_pages(&doc, 1);
    assert!(doc.text().contains("No entries in this period"));

    let h = header(LedgerType::Statement, "2026-10", &[("EUR", -5), ("USD", 7)]);
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
    let h = header(LedgerType::Statement, "2026-10", &[("EUR", i64::MAX - 10)]);
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
    let h = header(LedgerType::Statement, "2026-10", &[("EUR", 1)]);
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
fn any_text_renders_without_panic_and_the_file_stays_valid() {
    let mut h = header(LedgerType::Statement, "2026-10", &[("EUR", 0)]);
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
    let h = header(LedgerType::Statement, "2026-03", &[("EUR", 0)]);
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
    let h = header(LedgerType::Statement, "2026-03", &[("EUR", 0)]);
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
