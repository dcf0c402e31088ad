//! Every (type × format) pair through the API, read back as a user's program would: the
//! same ledger's entries must be in every format, with the same totals.

use std::collections::BTreeSet;
use std::io::Cursor;

use calamine::{Data, Reader, Xlsx};
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

async fn generate(app: &TestApp, token: &str, ledger_type: &str, format: &str) -> (Value, Vec<u8>) {
    let body = json!({"merchantId": "m_global", "type": ledger_type, "period": "2026-03", "format": format});
    let created = app.create_ok(token, body).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let done = app.wait_for(token, &id, "COMPLETED", 60).await;
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
async fn every_type_and_format_carries_the_same_entries_and_totals() {
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
        assert!(
            text.contains(balance.as_str()),
            "closing balance {balance} in the PDF"
        );
    }
    let (_, pdf_summary) = generate(&app, &token, "SUMMARY", "PDF").await;
    let text = pdf_text(&pdf_summary);
    assert!(text.contains("Page 1 of"), "{text}");
    assert!(
        !ids.iter().any(|id| text.contains(id.as_str())),
        "a summary lists no single entries"
    );
    app.stop().await;
}
