//! Every (type × format) pair through the API, read back as a user's program would: the
//! same ledger's entries must be in every format, with the same totals.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;

use calamine::{Data, Reader, Xlsx};
use serde_json::{Value, json};

use crate::helpers::{Options, TestApp, spawn_app, spawn_with};

async fn generate(app: &TestApp, token: &str, ledger_type: &str, format: &str) -> (Value, Vec<u8>) {
    generate_for(app, token, "m_global", "2026-03", ledger_type, format).await
}

async fn generate_for(
    app: &TestApp,
    token: &str,
    merchant: &str,
    period: &str,
    ledger_type: &str,
    format: &str,
) -> (Value, Vec<u8>) {
    let body =
        json!({"merchantId": merchant, "type": ledger_type, "period": period, "format": format});
    let (id, done) = app.completed(token, body, 60).await;
    let r = app.get(token, &format!("/ledgers/{id}/download")).await;
    assert_eq!(r.status(), 200, "{ledger_type} {format}");
    let content_type = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert_eq!(content_type, done["file"]["contentType"], "{done}");
    let bytes = r.bytes().await.unwrap().to_vec();
    assert_eq!(
        bytes.len() as u64,
        done["file"]["sizeBytes"].as_u64().unwrap()
    );
    (done, bytes)
}

/// `pdftotext -layout` of a PDF (poppler-utils, installed by scripts/services.sh).
fn pdf_text(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.pdf");
    std::fs::write(&path, bytes).unwrap();
    let out = std::process::Command::new("pdftotext")
        .args(["-layout", path.to_str().unwrap(), "-"])
        .output()
        .expect("pdftotext (Debian package poppler-utils; scripts/services.sh installs it)");
    assert!(out.status.success(), "{out:?}");
    let qpdf = std::process::Command::new("qpdf")
        .args(["--check", path.to_str().unwrap()])
        .output()
        .expect("qpdf (Debian package qpdf; scripts/services.sh installs it)");
    assert!(qpdf.status.success(), "qpdf --check: {qpdf:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// A CSV amount (`-1234567.89`) as the PDF shows it by default: thousands grouped with `,`.
fn grouped(plain: &str) -> String {
    let (sign, digits) = match plain.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", plain),
    };
    let (whole, fraction) = match digits.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (digits, None),
    };
    let mut out = sign.to_owned();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if let Some(f) = fraction {
        out.push('.');
        out.push_str(f);
    }
    out
}

/// A CSV decimal in minor units: the digits without the point.
fn minor(plain: &str) -> i128 {
    plain.replace('.', "").parse().unwrap()
}

fn xlsx_cells(bytes: &[u8]) -> Vec<(String, Vec<Vec<Data>>)> {
    let mut book: Xlsx<_> = Xlsx::new(Cursor::new(bytes.to_vec())).expect("an XLSX workbook");
    let names = book.sheet_names().to_vec();
    names
        .into_iter()
        .map(|name| {
            let range = book.worksheet_range(&name).unwrap();
            let rows = range.rows().map(|r| r.to_vec()).collect();
            (name, rows)
        })
        .collect()
}

#[tokio::test]
async fn every_type_and_format_carries_the_same_entries_and_totals_per_currency() {
    let app = spawn_app().await;
    let token = app.user("ops", "merchant_operator", "m_global").await;
    // m_global: EUR, USD, GBP, JPY and KWD; March 2026 in UTC.
    let (csv_done, csv) = generate(&app, &token, "STATEMENT", "CSV").await;
    assert!(
        csv_done["file"]["fileName"]
            .as_str()
            .unwrap()
            .ends_with(".csv")
    );
    let mut reader = csv::Reader::from_reader(csv.as_slice());
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let ids: BTreeSet<String> = rows
        .iter()
        .filter(|r| !r[1].is_empty())
        .map(|r| r[1].to_owned())
        .collect();
    assert!(
        ids.len() > 100,
        "a month of m_global has entries: {}",
        ids.len()
    );
    let closing: Vec<(String, String)> = rows
        .iter()
        .filter(|r| &r[2] == "CLOSING_BALANCE")
        .map(|r| (r[5].to_owned(), r[7].to_owned()))
        .collect();
    assert_eq!(closing.len(), 5, "five currencies: {closing:?}");
    // Per currency the CSV totals rows, which must be the sums of its entry rows.
    let mut totals: BTreeMap<String, (String, String)> = BTreeMap::new();
    for r in &rows {
        let slot = totals.entry(r[5].to_owned()).or_default();
        match &r[2] {
            "TOTAL_CREDITS" => slot.0 = r[6].to_owned(),
            "TOTAL_DEBITS" => slot.1 = r[6].to_owned(),
            _ => {}
        }
    }
    assert_eq!(totals.len(), 5, "{totals:?}");
    for (currency, (credits, debits)) in &totals {
        let amounts = rows
            .iter()
            .filter(|r| &r[5] == currency && !r[1].is_empty())
            .map(|r| minor(&r[6]));
        let (c, d) = amounts.fold(
            (0, 0),
            |(c, d), a| {
                if a >= 0 { (c + a, d) } else { (c, d + a) }
            },
        );
        assert_eq!((minor(credits), minor(debits)), (c, d), "{currency}");
        assert!(c > 0 && d < 0, "{currency} has credits and debits");
    }

    // The CSV summary counts the same entries and closes on the same balances.
    let (_, summary) = generate(&app, &token, "SUMMARY", "CSV").await;
    let mut reader = csv::Reader::from_reader(summary.as_slice());
    let srows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let counted: usize = srows
        .iter()
        .filter(|r| &r[1] == "TOTAL")
        .map(|r| r[3].parse::<usize>().unwrap())
        .sum();
    assert_eq!(counted, ids.len());
    for (currency, balance) in &closing {
        assert!(
            srows
                .iter()
                .any(|r| &r[0] == currency && &r[1] == "CLOSING_BALANCE" && &r[6] == balance),
            "{currency} closes on {balance} in the summary too"
        );
    }

    // XLSX: every entry id on the currency sheets, amounts as numbers.
    let (done, xlsx) = generate(&app, &token, "STATEMENT", "XLSX").await;
    assert!(
        done["file"]["fileName"]
            .as_str()
            .unwrap()
            .ends_with(".xlsx")
    );
    let sheets = xlsx_cells(&xlsx);
    let mut xlsx_ids = BTreeSet::new();
    let mut numbers = 0;
    for (name, rows) in &sheets {
        for row in rows {
            for cell in row {
                match cell {
                    Data::String(s) if ids.contains(s) => {
                        xlsx_ids.insert(s.clone());
                    }
                    Data::Float(_) | Data::Int(_) => numbers += 1,
                    _ => {}
                }
            }
        }
        assert!(!name.is_empty());
    }
    assert_eq!(xlsx_ids, ids, "every entry id is in the workbook");
    // The first sheet's totals per currency are the CSV's, as numbers.
    let front = &sheets[0].1;
    for (currency, (credits, debits)) in &totals {
        let row = front
            .iter()
            .find(|r| matches!(r.first(), Some(Data::String(c)) if c == currency))
            .unwrap_or_else(|| panic!("no {currency} line on the first sheet"));
        let number = |cell: &Data| match cell {
            Data::Float(v) => *v,
            other => panic!("{currency}: {other:?} is not a number cell"),
        };
        assert_eq!(
            (number(&row[4]), number(&row[5])),
            (credits.parse().unwrap(), debits.parse().unwrap()),
            "{currency} credits and debits in the XLSX"
        );
    }
    assert!(
        numbers >= 2 * ids.len(),
        "amounts and balances are numeric cells"
    );
    let (_, xlsx_summary) = generate(&app, &token, "SUMMARY", "XLSX").await;
    let summary_sheets = xlsx_cells(&xlsx_summary);
    assert!(
        summary_sheets.len() >= 5,
        "a sheet per currency: {:?}",
        summary_sheets.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    let listed = summary_sheets
        .iter()
        .flat_map(|(_, rows)| rows.iter().flatten())
        .any(|c| matches!(c, Data::String(s) if ids.contains(s)));
    assert!(!listed, "a summary lists no single entries");

    // PDF: real text with every entry id, every page numbered, qpdf-clean.
    let (done, pdf) = generate(&app, &token, "STATEMENT", "PDF").await;
    assert!(done["file"]["fileName"].as_str().unwrap().ends_with(".pdf"));
    assert!(pdf.starts_with(b"%PDF-"));
    let text = pdf_text(&pdf);
    let missing: Vec<&String> = ids
        .iter()
        .filter(|id| !text.contains(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "entry ids missing from the PDF: {missing:?}"
    );
    let pages = text.matches('\u{c}').count().max(1);
    assert!(
        text.contains(&format!("Page {pages} of {pages}")),
        "the last page says Page {pages} of {pages}"
    );
    for (_, balance) in &closing {
        let shown = grouped(balance);
        assert!(
            text.contains(&shown),
            "closing balance {balance} in the PDF as {shown}"
        );
    }
    // Each currency's part ends with its credits and debits: the CSV's, grouped.
    let last_value = |label: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.trim_start().starts_with(label))
            .map(|l| l.split_whitespace().last().unwrap().to_owned())
            .collect()
    };
    let expected: (Vec<String>, Vec<String>) = totals
        .values()
        .map(|(c, d)| (grouped(c), grouped(d)))
        .unzip();
    assert_eq!((last_value("Credits"), last_value("Debits")), expected);
    let (_, pdf_summary) = generate(&app, &token, "SUMMARY", "PDF").await;
    let text = pdf_text(&pdf_summary);
    assert!(text.contains("Page 1 of"), "{text}");
    assert!(
        !ids.iter().any(|id| text.contains(id.as_str())),
        "a summary lists no single entries"
    );
    app.stop().await;
}

/// A one-page source file of a merchant whose `merchant.locale` is `locale` (raw JSON).
fn localized_merchant(dir: &std::path::Path, id: &str, locale: &str) {
    let entries = [
        r#"{"id":"tx_1","bookedAt":"2026-10-01T08:15:00Z","type":"PAYMENT","amount":123456,"currency":"EUR","description":"Order 1001","reference":"ord_1001"}"#,
        r#"{"id":"tx_2","bookedAt":"2026-10-15T12:00:00Z","type":"CHARGEBACK","amount":-4999,"currency":"EUR","description":"Chargeback, dispute dp_9f8e7d6c5b4a39281706","reference":"ord_1001"}"#,
    ];
    let doc = format!(
        r#"{{"merchant":{{"id":"{id}","name":"Beispiel GmbH","timezone":"Europe/Berlin","locale":{locale}}},"openingBalances":[{{"currency":"EUR","amount":24997881}}],"entries":[{}],"nextCursor":null}}"#,
        entries.join(",")
    );
    std::fs::write(dir.join(format!("{id}.json")), doc).unwrap();
}

#[tokio::test]
async fn a_merchant_s_locale_shapes_its_pdf_but_never_its_csv_and_a_malformed_one_is_rejected() {
    let source = tempfile::tempdir().unwrap();
    localized_merchant(source.path(), "m_de", r#""de-de""#);
    localized_merchant(source.path(), "m_bad", r#""de_DE""#);
    let app = spawn_with(Options {
        source_dir: Some(source.path().to_path_buf()),
        ..Options::default()
    })
    .await;
    let token = app.user("ops", "merchant_operator", "*").await;

    // The PDF: German dates and amounts, and the whole dispute id in the wrapped cell.
    let (_, pdf) = generate_for(&app, &token, "m_de", "2026-10", "STATEMENT", "PDF").await;
    let text = pdf_text(&pdf);
    let line = |needle: &str| -> Vec<String> {
        let found: Vec<&str> = text.lines().filter(|l| l.contains(needle)).collect();
        assert_eq!(found.len(), 1, "{needle}: {found:?}");
        found[0].split_whitespace().map(str::to_owned).collect()
    };
    let first = line("tx_1");
    assert_eq!(
        first[..3],
        ["01.10.2026", "10:15:00", "+02:00"],
        "{first:?}"
    );
    assert_eq!(first[first.len() - 2..], ["1.234,56", "251.213,37"]);
    let second = line("tx_2");
    assert_eq!(second[second.len() - 2..], ["-49,99", "251.163,38"]);
    assert_eq!(line("Opening balance").last().unwrap(), "249.978,81");
    assert_eq!(line("Credits").last().unwrap(), "1.234,56");
    assert_eq!(line("Debits").last().unwrap(), "-49,99");
    assert_eq!(line("Locale")[1], "de-DE");
    let squeezed: String = text.split_whitespace().collect();
    assert!(
        squeezed.contains("dp_9f8e7d6c5b4a39281706") && !text.contains('…'),
        "the dispute id is shown, not cut:\n{text}"
    );

    // The CSV of the same merchant stays machine-readable.
    let (_, csv) = generate_for(&app, &token, "m_de", "2026-10", "STATEMENT", "CSV").await;
    let mut reader = csv::Reader::from_reader(csv.as_slice());
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let tx1 = rows.iter().find(|r| &r[1] == "tx_1").unwrap();
    assert_eq!(
        (&tx1[0], &tx1[6], &tx1[7]),
        ("2026-10-01T10:15:00+02:00", "1234.56", "251213.37")
    );
    let total = |kind: &str| rows.iter().find(|r| &r[2] == kind).unwrap()[6].to_owned();
    assert_eq!(
        (total("TOTAL_CREDITS"), total("TOTAL_DEBITS")),
        ("1234.56".to_owned(), "-49.99".to_owned())
    );

    // A malformed tag is the source's error, named by its path.
    let body =
        json!({"merchantId": "m_bad", "type": "STATEMENT", "period": "2026-10", "format": "PDF"});
    let created = app.create_ok(&token, body).await;
    let rejected = app
        .wait_for(&token, created["id"].as_str().unwrap(), "REJECTED", 60)
        .await;
    let reason = &rejected["failureReason"];
    assert_eq!(reason["errorCode"], "FETCH_DATA_ERROR", "{reason}");
    assert!(
        reason["message"]
            .as_str()
            .unwrap()
            .starts_with("merchant.locale: "),
        "{reason}"
    );
    app.stop().await;
}
