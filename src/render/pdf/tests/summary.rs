//! Summary tests: days, types, balances and pages.

use super::*;

#[test]
fn a_summary_shows_days_types_and_balances_but_no_entries() {
    let mut h = header(LedgerType::Summary, "2026-10", &[("EUR", 1000)]);
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
    assert!(text.contains(&format!("Summary — {MERCHANT_NAME}")) && text.contains("DRAFT"));
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
    let h = header(LedgerType::Summary, "2026", &[("EUR", 0)]);
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

    let h = header(LedgerType::Summary, "2026-10", &[]);
    let (totals, pdf) = summary(&h, &[]);
    assert_eq!(totals, ControlTotals::default());
    let doc = read_back(&pdf);
    assert!(doc.text().contains("No entries in this period"));
}
