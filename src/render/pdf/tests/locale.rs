//! Locale tests: separators in the font, and amounts, dates and headers as each locale writes them.

use super::*;

#[test]
fn every_locale_s_separators_are_in_the_font() {
    let fonts = super::super::font::fonts().unwrap();
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
        header(LedgerType::Statement, "2026-10", &[("EUR", 24_997_881)]),
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
        let h = with_locale(header(LedgerType::Statement, "2026-10", &[]), tag);
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
    let h = with_locale(header(LedgerType::Statement, "2026-10", &[]), "ja-JP");
    let list = vec![entry("tx_yen", "2026-10-05T10:00:00Z", 1_234_567, "JPY")];
    let tokens = read_back(&statement(&h, &list).1).tokens("tx_yen");
    assert_eq!(tokens[tokens.len() - 2..], ["1,234,567", "1,234,567"]);
}

#[test]
fn a_localized_summary_groups_its_sums_and_writes_its_days() {
    let h = with_locale(
        header(LedgerType::Summary, "2026-10", &[("EUR", 100_000_000)]),
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
