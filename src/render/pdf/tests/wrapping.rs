//! Wrapped reference and description cells: what they show and how the page plan counts them.

use super::*;

/// The text of `column` of every page (`pdftotext -layout` cropped to the column, a point
/// of slack either side), each page's lines in order.
fn column_text(pdf: &[u8], column: &super::super::layout::Column) -> String {
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
    let h = header(LedgerType::Statement, "2026-10", &[("EUR", 0)]);
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
    let columns = super::super::statement::table(
        &super::super::font::fonts().unwrap().regular,
        &crate::render::locale::DEFAULT,
    );
    let descriptions = without_whitespace(&column_text(
        &pdf,
        &columns[super::super::statement::DESCRIPTION],
    ));
    let references = without_whitespace(&column_text(
        &pdf,
        &columns[super::super::statement::REFERENCE],
    ));
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
    let h = header(LedgerType::Statement, "2026-10", &[("EUR", 0)]);
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
    let face = &super::super::font::fonts().unwrap().regular;
    let columns = super::super::statement::table(face, &crate::render::locale::DEFAULT);
    for e in &list {
        let mut out = String::new();
        let lines = face.wrap_into(
            &mut out,
            &mut Vec::new(),
            &e.description,
            super::super::layout::TEXT_SIZE,
            columns[super::super::statement::DESCRIPTION].width,
            3,
        );
        assert_eq!(lines, 3, "{out:?}");
        assert!(!out.contains('…'), "{out:?}");
    }
    let (_, pdf) = statement(&h, &list);
    let doc = read_back(&pdf);
    // Independent arithmetic: a three-line row is one row plus two wrapped lines high.
    let row = ROW_HEIGHT + 2.0 * super::super::layout::WRAP_LEADING;
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
