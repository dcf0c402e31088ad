//! CSV documents, RFC 4180 and UTF-8, for programs: plain decimals with a `.` and no
//! grouping, RFC 3339 instants, whatever the merchant's locale (only PDF and XLSX follow
//! it). The statement: a header row, opening balance rows, one row per entry with its
//! running balance, then per currency its `TOTAL_CREDITS`, `TOTAL_DEBITS` and
//! `CLOSING_BALANCE` rows — one currency's rows never mix sums with another's. The summary: per currency its opening balance, one row per
//! local day and per entry type, the currency's total and its closing balance.

use std::collections::BTreeMap;
use std::io::Write;

use super::summary::Summary;
use super::{DocumentHeader, RenderError, Renderer, text};
use crate::domain::{ControlTotals, Currency, CurrencyTotals, Entry, Timezone};

const COLUMNS: [&str; 8] = [
    "bookedAt",
    "entryId",
    "type",
    "description",
    "reference",
    "currency",
    "amount",
    "runningBalance",
];

/// A streaming CSV statement.
pub struct CsvStatement<W: Write> {
    out: csv::Writer<W>,
    timezone: Timezone,
    end: String,
    start: String,
    balances: BTreeMap<Currency, i64>,
    totals: ControlTotals,
    /// Reused cell buffers: no allocation per row.
    booked: String,
    amount: String,
    running: String,
}

impl<W: Write> CsvStatement<W> {
    /// Writes the header and opening rows.
    pub fn new(header: &DocumentHeader, out: W) -> Result<Self, RenderError> {
        let mut out = csv::WriterBuilder::new()
            .buffer_capacity(64 * 1024)
            .from_writer(out);
        out.write_record(COLUMNS)?;
        let mut me = Self {
            out,
            timezone: header.timezone,
            start: text::local_instant(header.bounds.0, header.timezone),
            end: text::local_instant(header.bounds.1, header.timezone),
            balances: BTreeMap::new(),
            totals: ControlTotals::with_opening(&header.opening_balances),
            booked: String::with_capacity(32),
            amount: String::with_capacity(24),
            running: String::with_capacity(24),
        };
        let mut opening: BTreeMap<Currency, i64> = BTreeMap::new();
        for b in &header.opening_balances {
            let slot = opening.entry(b.currency).or_default();
            *slot = slot
                .checked_add(b.amount)
                .ok_or_else(|| RenderError::Overflow(b.currency.to_string()))?;
        }
        for (currency, amount) in opening {
            me.opening_row(currency, amount)?;
        }
        Ok(me)
    }

    fn opening_row(&mut self, currency: Currency, amount: i64) -> Result<(), RenderError> {
        self.balances.insert(currency, amount);
        let balance = text::amount(currency, amount);
        self.out.write_record([
            self.start.as_str(),
            "",
            "OPENING_BALANCE",
            "Opening balance",
            "",
            currency.code(),
            "",
            balance.as_str(),
        ])?;
        Ok(())
    }
}

impl<W: Write + Send> Renderer<W> for CsvStatement<W> {
    fn entry(&mut self, entry: &Entry) -> Result<(), RenderError> {
        if !self.balances.contains_key(&entry.currency) {
            // A currency first seen inside the period opens at zero, visibly.
            self.opening_row(entry.currency, 0)?;
        }
        let balance = self.balances.entry(entry.currency).or_default();
        *balance = balance
            .checked_add(entry.amount)
            .ok_or_else(|| RenderError::Overflow(entry.currency.to_string()))?;
        let running = *balance;
        self.running.clear();
        text::push_amount(&mut self.running, entry.currency, running);
        self.amount.clear();
        text::push_amount(&mut self.amount, entry.currency, entry.amount);
        self.booked.clear();
        text::push_local_instant(&mut self.booked, entry.booked_at, self.timezone);
        // Every text that comes from the source is defused, the entry id too: an id such as
        // `=HYPERLINK(…)` is as live a formula as a description.
        let id = text::spreadsheet_safe(&entry.id);
        let description = text::spreadsheet_safe(&entry.description);
        let reference = text::spreadsheet_safe(&entry.reference);
        self.out.write_record([
            self.booked.as_str(),
            id.as_ref(),
            entry.entry_type.as_str(),
            description.as_ref(),
            reference.as_ref(),
            entry.currency.code(),
            self.amount.as_str(),
            self.running.as_str(),
        ])?;
        self.totals.add(entry.currency, entry.amount);
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(ControlTotals, W), RenderError> {
        let balances = std::mem::take(&mut self.balances);
        for (currency, balance) in balances {
            // The sums of the rows written (the totals the self-check compares), in the
            // amount column: credits are the positive amounts, debits the negative ones.
            let totals = self
                .totals
                .currencies
                .get(&currency)
                .copied()
                .unwrap_or_default();
            for (kind, label, sum) in [
                ("TOTAL_CREDITS", "Total credits", totals.credits),
                ("TOTAL_DEBITS", "Total debits", totals.debits),
            ] {
                let sum = text::wide_amount(currency, sum);
                self.out.write_record([
                    self.end.as_str(),
                    "",
                    kind,
                    label,
                    "",
                    currency.code(),
                    sum.as_str(),
                    "",
                ])?;
            }
            let closing = text::amount(currency, balance);
            self.out.write_record([
                self.end.as_str(),
                "",
                "CLOSING_BALANCE",
                "Closing balance",
                "",
                currency.code(),
                "",
                closing.as_str(),
            ])?;
        }
        let out = self
            .out
            .into_inner()
            .map_err(|e| RenderError::Io(std::io::Error::other(e.to_string())))?;
        Ok((self.totals, out))
    }
}

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
    let mut out = csv::WriterBuilder::new()
        .buffer_capacity(64 * 1024)
        .from_writer(out);
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
    let out = out
        .into_inner()
        .map_err(|e| RenderError::Io(std::io::Error::other(e.to_string())))?;
    Ok((written, out))
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::domain::{
        Balance, EntryType, LedgerId, LedgerType, Merchant, MerchantId, Period, Stage,
    };

    fn header(opening: Vec<Balance>) -> DocumentHeader {
        let period = Period::parse("2026-10").unwrap();
        let tz = Timezone::parse("Europe/Berlin").unwrap();
        DocumentHeader {
            ledger_id: LedgerId::from_i64(1),
            merchant: Merchant {
                id: MerchantId::parse("m_1").unwrap(),
                name: "Acme".into(),
                timezone: Some(tz),
                locale: None,
            },
            ledger_type: LedgerType::Statement,
            period,
            timezone: tz,
            bounds: period.bounds(tz),
            stage: Stage::Final,
            version: 1,
            generated_at: Utc::now(),
            opening_balances: opening,
        }
    }

    fn entry(id: &str, at: &str, amount: i64, currency: &str, description: &str) -> Entry {
        Entry {
            id: id.into(),
            booked_at: at.parse::<DateTime<Utc>>().unwrap(),
            entry_type: if amount >= 0 {
                EntryType::Payment
            } else {
                EntryType::Refund
            },
            amount,
            currency: Currency::parse(currency).unwrap(),
            description: description.into(),
            reference: "ref".into(),
        }
    }

    #[test]
    fn formulas_in_ids_descriptions_and_references_are_defused() {
        let h = header(Vec::new());
        let mut r: Box<dyn Renderer<Vec<u8>>> =
            Box::new(CsvStatement::new(&h, Vec::new()).unwrap());
        let mut e = entry(
            "=HYPERLINK(\"https://evil.example\",\"refund\")",
            "2026-10-01T08:15:00Z",
            1999,
            "EUR",
            "@SUM(1+1)",
        );
        e.reference = "+cmd".into();
        r.entry(&e).unwrap();
        let mut tab = entry("-1+1", "2026-10-02T08:15:00Z", 100, "EUR", "\t=1+1");
        tab.reference = "\r@x".into();
        r.entry(&tab).unwrap();
        let (_, bytes) = r.finish().unwrap();
        let rows: Vec<Vec<String>> = csv::Reader::from_reader(bytes.as_slice())
            .records()
            .map(|r| r.unwrap().iter().map(str::to_owned).collect())
            .collect();
        let row = rows
            .iter()
            .find(|r| r[2] == "PAYMENT")
            .expect("the entry row");
        assert_eq!(row[1], "'=HYPERLINK(\"https://evil.example\",\"refund\")");
        assert_eq!(row[3], "'@SUM(1+1)");
        assert_eq!(row[4], "'+cmd");
        let row = rows
            .iter()
            .find(|r| r[1].contains("-1+1"))
            .expect("the second row");
        assert_eq!(
            [&*row[1], &*row[3], &*row[4]],
            ["'-1+1", "'\t=1+1", "'\r@x"]
        );
        // No text cell of the document starts a formula (amounts are numbers).
        for row in &rows {
            for cell in [&row[1], &row[3], &row[4]] {
                assert!(
                    !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                    "{cell:?}"
                );
            }
        }
    }

    #[test]
    fn rows_parse_back_with_running_balances_per_currency() {
        let eur = Currency::parse("EUR").unwrap();
        let h = header(vec![Balance {
            currency: eur,
            amount: 125_000,
        }]);
        let mut r: Box<dyn Renderer<Vec<u8>>> =
            Box::new(CsvStatement::new(&h, Vec::new()).unwrap());
        r.entry(&entry(
            "tx_1",
            "2026-10-01T08:15:00Z",
            1999,
            "EUR",
            "Order, \"1001\"\nline 2",
        ))
        .unwrap();
        r.entry(&entry("tx_2", "2026-10-02T08:15:00Z", 1500, "JPY", "Café"))
            .unwrap();
        r.entry(&entry(
            "tx_3",
            "2026-10-03T08:15:00Z",
            -1999,
            "EUR",
            "Refund",
        ))
        .unwrap();
        let (totals, bytes) = r.finish().unwrap();
        let mut reader = csv::Reader::from_reader(bytes.as_slice());
        assert_eq!(reader.headers().unwrap(), COLUMNS.as_slice());
        let rows: Vec<Vec<String>> = reader
            .records()
            .map(|r| r.unwrap().iter().map(str::to_owned).collect())
            .collect();
        assert_eq!(rows[0][2], "OPENING_BALANCE");
        assert_eq!(rows[0][7], "1250.00");
        assert_eq!(rows[1][0], "2026-10-01T10:15:00+02:00");
        assert_eq!(rows[1][3], "Order, \"1001\"\nline 2");
        assert_eq!(rows[1][7], "1269.99");
        assert_eq!(
            (rows[2][2].as_str(), rows[2][5].as_str()),
            ("OPENING_BALANCE", "JPY")
        );
        assert_eq!(rows[3][6], "1500");
        assert_eq!(rows[4][6], "-19.99");
        assert_eq!(rows[4][7], "1250.00");
        // Per currency, in code order: credits, debits (sums in the amount column), closing.
        let tail: Vec<[&str; 5]> = rows[5..]
            .iter()
            .map(|r| [&*r[0], &*r[2], &*r[5], &*r[6], &*r[7]])
            .collect();
        let end = "2026-11-01T00:00:00+01:00";
        assert_eq!(
            tail,
            [
                [end, "TOTAL_CREDITS", "EUR", "19.99", ""],
                [end, "TOTAL_DEBITS", "EUR", "-19.99", ""],
                [end, "CLOSING_BALANCE", "EUR", "", "1250.00"],
                [end, "TOTAL_CREDITS", "JPY", "1500", ""],
                [end, "TOTAL_DEBITS", "JPY", "0", ""],
                [end, "CLOSING_BALANCE", "JPY", "", "1500"],
            ]
        );
        assert_eq!(totals.entry_count, 3);
        assert_eq!(totals.currencies[&eur].closing, 125_000);
    }

    #[test]
    fn a_summary_parses_back_per_currency_with_day_and_type_rows() {
        let eur = Currency::parse("EUR").unwrap();
        let mut h = header(vec![Balance {
            currency: eur,
            amount: 1000,
        }]);
        h.ledger_type = LedgerType::Summary;
        let mut r: Box<dyn Renderer<Vec<u8>>> = Box::new(
            crate::render::summary::SummaryRenderer::new(&h, Vec::new(), write_summary).unwrap(),
        );
        r.entry(&entry("tx_1", "2026-10-01T08:15:00Z", 1999, "EUR", "a"))
            .unwrap();
        r.entry(&entry("tx_2", "2026-10-01T09:15:00Z", -999, "EUR", "b"))
            .unwrap();
        r.entry(&entry("tx_3", "2026-10-03T09:15:00Z", 500, "JPY", "c"))
            .unwrap();
        let (totals, bytes) = r.finish().unwrap();
        let mut reader = csv::Reader::from_reader(bytes.as_slice());
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
