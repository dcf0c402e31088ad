//! XLSX summary tests, and what both document types share: control totals, the service's renderer.

use super::*;

#[test]
fn a_summary_reads_back_per_currency_with_day_and_type_rows() {
    let h = header(LedgerType::Summary, "2026-03", &[("EUR", 1000)]);
    let entries = [
        // 23:30 UTC on the 28th is the 29th in Berlin.
        entry("tx_1", "2026-03-28T23:30:00Z", 1999, "EUR", "a"),
        entry("tx_2", "2026-03-29T09:15:00Z", -999, "EUR", "b"),
        entry("tx_3", "2026-03-30T09:15:00Z", 500, "JPY", "c"),
        entry("tx_4", "2026-03-31T09:15:00Z", 1, "EUR", "d"),
    ];
    let (totals, bytes) = summary(&h, &entries);
    assert_eq!(totals, source_totals(&h, &entries));
    let mut book = Book::open(bytes);
    assert_eq!(book.names(), ["Summary", "EUR", "JPY"]);
    let eur = book.sheet("EUR");
    let headers: Vec<String> = (0..7).map(|col| string(&eur, 0, col)).collect();
    assert_eq!(headers, SUMMARY_COLUMNS);
    assert_eq!(string(&eur, 1, 0), "OPENING_BALANCE");
    assert_eq!(datetime(&eur, 1, 1), local("2026-03-01 00:00:00"));
    assert_eq!(num(&eur, 1, 6), 10.0);
    assert_eq!(string(&eur, 2, 0), "DAY");
    assert_eq!(datetime(&eur, 2, 1), local("2026-03-29 00:00:00"));
    assert_eq!(
        [2, 3, 4, 5, 6].map(|col| num(&eur, 2, col)),
        [2.0, 19.99, -9.99, 10.0, 20.0]
    );
    assert_eq!(datetime(&eur, 3, 1), local("2026-03-31 00:00:00"));
    assert_eq!(num(&eur, 3, 6), 20.01);
    let refund = find(&eur, 1, "REFUND");
    assert_eq!(string(&eur, refund, 0), "TYPE");
    assert_eq!(
        [2, 3, 4, 5].map(|col| num(&eur, refund, col)),
        [1.0, 0.0, -9.99, -9.99]
    );
    let total = find(&eur, 0, "TOTAL");
    assert_eq!(
        [2, 3, 4, 5].map(|col| num(&eur, total, col)),
        [3.0, 20.0, -9.99, 10.01]
    );
    let closing = find(&eur, 0, "CLOSING_BALANCE");
    assert_eq!(datetime(&eur, closing, 1), local("2026-04-01 00:00:00"));
    assert_eq!(num(&eur, closing, 6), 20.01);
    let jpy = book.sheet("JPY");
    assert_eq!(num(&jpy, 1, 6), 0.0);
    assert_eq!(num(&jpy, find(&jpy, 0, "CLOSING_BALANCE"), 6), 500.0);
    // No entry ids, descriptions or references in a summary.
    for name in ["Summary", "EUR", "JPY"] {
        let sheet = book.sheet(name);
        assert!(
            !sheet.used_cells().any(|(_, _, v)| matches!(v, Data::String(s) if s.starts_with("tx_") || s.starts_with("ord_"))),
            "{name}"
        );
    }
    let front = book.sheet("Summary");
    assert_eq!(
        at(&front, find(&front, 0, "Ledger type"), 1),
        Data::String("SUMMARY".into())
    );
    assert_eq!(num(&front, find(&front, 0, "EUR"), 3), 3.0);
    let xml = book.part("xl/worksheets/sheet2.xml");
    assert!(xml.contains(r#"state="frozen""#));
    assert!(xml.contains("<autoFilter"));
}

#[test]
fn an_empty_summary_still_shows_its_balances() {
    let h = header(LedgerType::Summary, "2026-03", &[("EUR", -5)]);
    let (totals, bytes) = summary(&h, &[]);
    assert_eq!(totals, source_totals(&h, &[]));
    let mut book = Book::open(bytes);
    let eur = book.sheet("EUR");
    assert_eq!(num(&eur, 1, 6), -0.05);
    find(&eur, 1, NO_ENTRIES);
    assert_eq!(num(&eur, find(&eur, 0, "CLOSING_BALANCE"), 6), -0.05);
    let front = book.sheet("Summary");
    find(&front, 0, NO_ENTRIES);

    let h = header(LedgerType::Summary, "2026-03", &[]);
    let (_, bytes) = summary(&h, &[]);
    let mut book = Book::open(bytes);
    assert_eq!(book.names(), ["Summary"]);
    find(&book.sheet("Summary"), 0, NO_ENTRIES);
}

#[test]
fn control_totals_match_the_source_for_interleaved_currencies() {
    let h = header(
        LedgerType::Statement,
        "2026-03",
        &[("EUR", 10), ("CHF", -3), ("KWD", 1)],
    );
    let codes = ["EUR", "USD", "JPY", "CHF", "GBP"];
    let entries: Vec<Entry> = (0..500)
        .map(|i| {
            entry(
                &format!("tx_{i:04}"),
                &format!("2026-03-{:02}T10:00:00Z", 1 + i % 28),
                (i as i64 * 7919) % 10_000 - 5000,
                codes[i % codes.len()],
                "",
            )
        })
        .collect();
    let mut sorted = entries;
    sorted.sort_by(|a, b| (a.booked_at, &a.id).cmp(&(b.booked_at, &b.id)));
    let source = source_totals(&h, &sorted);
    let (totals, _) = statement(&h, &sorted, &XlsxOptions::default());
    assert_eq!(totals, source);
    let mut s = h.clone();
    s.ledger_type = LedgerType::Summary;
    let (totals, _) = summary(&s, &sorted);
    assert_eq!(totals, source);
}

#[test]
fn the_service_renders_xlsx() {
    use crate::domain::Format as DocumentFormat;
    use crate::render::renderer;
    for t in [LedgerType::Statement, LedgerType::Summary] {
        let h = header(t, "2026-03", &[("EUR", 1)]);
        let mut r = renderer(&h, DocumentFormat::Xlsx, Vec::new()).unwrap();
        r.entry(&entry("tx_1", "2026-03-02T10:00:00Z", 1, "EUR", "a"))
            .unwrap();
        let (totals, bytes) = r.finish().unwrap();
        assert_eq!(totals.entry_count, 1);
        let first = match t {
            LedgerType::Statement => "Statement",
            LedgerType::Summary => "Summary",
        };
        assert_eq!(Book::open(bytes).names()[0], first);
    }
}
