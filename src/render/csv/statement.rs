//! The CSV statement: a header row, opening balance rows, one row per entry with its
//! running balance, then per currency its totals and closing balance.

use std::collections::BTreeMap;
use std::io::Write;

use super::{into_inner, writer};
use crate::domain::{ControlTotals, Currency, Entry, Timezone};
use crate::render::{DocumentHeader, RenderError, Renderer, opening_balances, text};

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
    out: ::csv::Writer<W>,
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
        let mut out = writer(out);
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
        for (currency, amount) in opening_balances(&header.opening_balances)? {
            me.opening_row(currency, amount)?;
        }
        Ok(me)
    }

    fn opening_row(&mut self, currency: Currency, amount: i64) -> Result<(), RenderError> {
        self.balances.insert(currency, amount);
        let balance = text::amount(currency, amount);
        labelled_row(
            &mut self.out,
            &self.start,
            ("OPENING_BALANCE", "Opening balance"),
            currency,
            ("", &balance),
        )
    }
}

/// A row that is not an entry: no id and no reference; `kind` and its label in the type
/// and description columns, then the amount and running balance columns.
fn labelled_row<W: Write>(
    out: &mut ::csv::Writer<W>,
    at: &str,
    (kind, label): (&str, &str),
    currency: Currency,
    (amount, balance): (&str, &str),
) -> Result<(), RenderError> {
    out.write_record([at, "", kind, label, "", currency.code(), amount, balance])?;
    Ok(())
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
                labelled_row(
                    &mut self.out,
                    &self.end,
                    (kind, label),
                    currency,
                    (&sum, ""),
                )?;
            }
            let closing = text::amount(currency, balance);
            labelled_row(
                &mut self.out,
                &self.end,
                ("CLOSING_BALANCE", "Closing balance"),
                currency,
                ("", &closing),
            )?;
        }
        Ok((self.totals, into_inner(self.out)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::LedgerType;
    use crate::render::testing::{described_entry as entry, header};

    #[test]
    fn formulas_in_ids_descriptions_and_references_are_defused() {
        let h = header(LedgerType::Statement, "2026-10", &[]);
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
        let rows: Vec<Vec<String>> = ::csv::Reader::from_reader(bytes.as_slice())
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
        let h = header(LedgerType::Statement, "2026-10", &[("EUR", 125_000)]);
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
        let mut reader = ::csv::Reader::from_reader(bytes.as_slice());
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
}
