//! The CSV summary: per currency its opening balance, a row per local day and per entry
//! type, the total and the closing balance.

use std::io::Write;

use super::{into_inner, writer};
use crate::domain::{ControlTotals, CurrencyTotals};
use crate::render::summary::Summary;
use crate::render::{DocumentHeader, RenderError, text};

/// The columns of a CSV summary.
pub const SUMMARY_COLUMNS: [&str; 7] = [
    "currency", "section", "key", "count", "credits", "debits", "net",
];

/// Writes `summary` as CSV: per currency an `OPENING_BALANCE` row (key: the period's local
/// start, net: the balance), `DAY` rows (key: the local date), `TYPE` rows (key: the entry
/// type), a `TOTAL` row and a `CLOSING_BALANCE` row (key: the period's local end). Debits
/// are the sum of the negative amounts, so they are zero or negative. The totals reported
/// are summed from the day rows written.
pub fn write_summary<W: Write>(
    header: &DocumentHeader,
    summary: &Summary,
    out: W,
) -> Result<(ControlTotals, W), RenderError> {
    let mut out = writer(out);
    out.write_record(SUMMARY_COLUMNS)?;
    let start = text::local_instant(header.bounds.0, header.timezone);
    let end = text::local_instant(header.bounds.1, header.timezone);
    let mut written = ControlTotals::default();
    for c in &summary.currencies {
        let code = c.currency.code();
        let amount = |v: i128| text::wide_amount(c.currency, v);
        let mut totals = CurrencyTotals {
            opening: c.opening,
            ..CurrencyTotals::default()
        };
        let opening = amount(i128::from(c.opening));
        out.write_record([code, "OPENING_BALANCE", &start, "", "", "", &opening])?;
        for (day, b) in &c.days {
            let key = day.format("%Y-%m-%d").to_string();
            out.write_record([
                code,
                "DAY",
                &key,
                &b.count.to_string(),
                &amount(b.credits),
                &amount(b.debits),
                &amount(b.net()),
            ])?;
            totals.count += b.count;
            totals.credits += b.credits;
            totals.debits += b.debits;
        }
        for (entry_type, b) in &c.types {
            out.write_record([
                code,
                "TYPE",
                entry_type.as_str(),
                &b.count.to_string(),
                &amount(b.credits),
                &amount(b.debits),
                &amount(b.net()),
            ])?;
        }
        // The total and the closing balance are what the day rows written add up to, so
        // the totals reported (and self-checked) are exactly the ones shown.
        totals.closing = i128::from(totals.opening) + totals.credits + totals.debits;
        out.write_record([
            code,
            "TOTAL",
            "",
            &totals.count.to_string(),
            &amount(totals.credits),
            &amount(totals.debits),
            &amount(totals.credits + totals.debits),
        ])?;
        out.write_record([
            code,
            "CLOSING_BALANCE",
            &end,
            "",
            "",
            "",
            &amount(totals.closing),
        ])?;
        written.entry_count += totals.count;
        written.currencies.insert(c.currency, totals);
    }
    Ok((written, into_inner(out)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Currency, LedgerType};
    use crate::render::testing::{self, described_entry as entry, header};

    #[test]
    fn a_summary_parses_back_per_currency_with_day_and_type_rows() {
        let eur = Currency::parse("EUR").unwrap();
        let h = header(LedgerType::Summary, "2026-10", &[("EUR", 1000)]);
        let entries = [
            entry("tx_1", "2026-10-01T08:15:00Z", 1999, "EUR", "a"),
            entry("tx_2", "2026-10-01T09:15:00Z", -999, "EUR", "b"),
            entry("tx_3", "2026-10-03T09:15:00Z", 500, "JPY", "c"),
        ];
        let (totals, bytes) = testing::summary(&h, &entries, write_summary);
        let mut reader = ::csv::Reader::from_reader(bytes.as_slice());
        assert_eq!(reader.headers().unwrap(), SUMMARY_COLUMNS.as_slice());
        let rows: Vec<Vec<String>> = reader
            .records()
            .map(|r| r.unwrap().iter().map(str::to_owned).collect())
            .collect();
        let find = |currency: &str, section: &str, key: &str| {
            rows.iter()
                .find(|r| r[0] == currency && r[1] == section && r[2] == key)
                .unwrap_or_else(|| panic!("no {currency} {section} {key} row in {rows:?}"))
                .clone()
        };
        assert_eq!(
            find("EUR", "OPENING_BALANCE", "2026-10-01T00:00:00+02:00")[6],
            "10.00"
        );
        assert_eq!(
            find("EUR", "DAY", "2026-10-01")[3..],
            ["2", "19.99", "-9.99", "10.00"]
        );
        assert_eq!(
            find("EUR", "TYPE", "REFUND")[3..],
            ["1", "0.00", "-9.99", "-9.99"]
        );
        assert_eq!(find("EUR", "TOTAL", "")[3], "2");
        assert_eq!(
            find("EUR", "CLOSING_BALANCE", "2026-11-01T00:00:00+01:00")[6],
            "20.00"
        );
        assert_eq!(
            find("JPY", "OPENING_BALANCE", "2026-10-01T00:00:00+02:00")[6],
            "0"
        );
        assert_eq!(
            find("JPY", "CLOSING_BALANCE", "2026-11-01T00:00:00+01:00")[6],
            "500"
        );
        assert!(!rows.iter().any(|r| r.iter().any(|c| c.starts_with("tx_"))));
        assert_eq!(totals.entry_count, 3);
        assert_eq!(totals.currencies[&eur].closing, 2000);
    }
}
