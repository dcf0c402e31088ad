//! The XLSX statement: per currency one sheet (or several past the row limit) with a row
//! per entry and its running balance, the first [`IN_MEMORY_ENTRIES`](super::IN_MEMORY_ENTRIES)
//! entries held back so a short statement never touches a file, a longer one streamed
//! through constant-memory sheets (see the module documentation of `xlsx`).

use std::collections::BTreeMap;
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use rust_xlsxwriter::{Workbook, Worksheet};

use super::cells::{
    Styles, amount_format, amount_width, cell_text, text_width, write_amount, write_instant,
};
use super::front::{CurrencyLine, front_sheet};
use super::{
    EXCEL_MAX_ROWS, MIN_ROWS_PER_SHEET, NO_ENTRIES, STATEMENT_COLUMNS, XlsxOptions, new_workbook,
    save,
};
use crate::domain::{ControlTotals, Currency, CurrencyTotals, Entry};
use crate::render::{DocumentHeader, RenderError, Renderer, opening_balances};

/// Widest values seen on a currency's statement sheets, for column widths.
#[derive(Debug, Default, Clone, Copy)]
struct Widths {
    id: usize,
    description: usize,
    reference: usize,
    amount: u128,
    balance: u128,
}

/// The sheets of one currency in a statement.
struct CurrencySheets {
    currency: Currency,
    /// Constant-memory sheets (rows go to a temporary file) rather than in-memory ones.
    streaming: bool,
    /// Full sheets, in order.
    done: Vec<Worksheet>,
    /// The sheet rows go to now.
    sheet: Worksheet,
    /// 1 for the first sheet of the currency.
    sheet_number: u32,
    /// Next free row on `sheet`.
    row: u32,
    balance: i64,
    totals: CurrencyTotals,
    widths: Widths,
    wide: bool,
}

/// An XLSX statement: one sheet (or several, past the row limit) per currency, and a first
/// sheet with the header and the totals, written at the end. The first
/// [`XlsxOptions::in_memory_entries`] entries are held back; a statement that ends by then
/// is laid out in in-memory sheets, a longer one streams through constant-memory sheets.
pub struct XlsxStatement<W: Write + Send> {
    out: W,
    workbook: Workbook,
    header: DocumentHeader,
    styles: Styles,
    rows_per_sheet: u32,
    in_memory_entries: usize,
    temp_dir: Option<PathBuf>,
    /// Opening balances per currency, until the sheets are opened.
    opening: BTreeMap<Currency, i64>,
    /// Entries held back until the sheets are opened.
    pending: Vec<Entry>,
    /// Whether the sheets are open (and `pending` is written).
    started: bool,
    currencies: BTreeMap<Currency, CurrencySheets>,
    entry_count: u64,
    /// What the finished document states, for [`Renderer::finish`].
    totals: ControlTotals,
    /// Set after an error: the workbook is incomplete and takes no more rows.
    failed: bool,
}

impl<W: Write + Send> XlsxStatement<W> {
    /// A statement of `header`'s ledger with the service's settings.
    pub fn new(header: &DocumentHeader, out: W) -> Result<Self, RenderError> {
        Self::with_options(header, out, &XlsxOptions::default())
    }

    /// A statement with explicit settings.
    pub fn with_options(
        header: &DocumentHeader,
        out: W,
        options: &XlsxOptions,
    ) -> Result<Self, RenderError> {
        Ok(Self {
            out,
            workbook: new_workbook(header),
            header: header.clone(),
            styles: Styles::new(header),
            rows_per_sheet: options
                .rows_per_sheet
                .clamp(MIN_ROWS_PER_SHEET, EXCEL_MAX_ROWS),
            in_memory_entries: options.in_memory_entries,
            temp_dir: options.temp_dir.clone(),
            opening: opening_balances(&header.opening_balances)?,
            pending: Vec::new(),
            started: false,
            currencies: BTreeMap::new(),
            entry_count: 0,
            totals: ControlTotals::default(),
            failed: false,
        })
    }

    /// Opens a sheet (with its opening row) for every currency with an opening balance, in
    /// memory or `streaming`, and writes the entries held back.
    fn start(&mut self, streaming: bool) -> Result<(), RenderError> {
        self.started = true;
        if streaming && let Some(dir) = &self.temp_dir {
            self.workbook.set_tempdir(dir)?;
        }
        for (currency, amount) in std::mem::take(&mut self.opening) {
            self.open_currency(currency, amount, streaming)?;
        }
        for entry in std::mem::take(&mut self.pending) {
            self.write_entry(&entry, streaming)?;
        }
        Ok(())
    }

    fn add_entry(&mut self, entry: &Entry) -> Result<(), RenderError> {
        if !self.started {
            if self.pending.len() < self.in_memory_entries {
                self.pending.push(entry.clone());
                return Ok(());
            }
            self.start(true)?;
        }
        self.write_entry(entry, true)
    }

    /// Runs `f`, turning a panic of the writer (a failed temporary-file write) into an
    /// error and refusing further work after any error.
    fn guarded<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, RenderError>,
    ) -> Result<T, RenderError> {
        if self.failed {
            return Err(RenderError::Io(std::io::Error::other(
                "the XLSX workbook failed earlier and is incomplete",
            )));
        }
        let result = catch_unwind(AssertUnwindSafe(|| f(self))).unwrap_or_else(|_| {
            Err(RenderError::Io(std::io::Error::other(
                "the XLSX writer failed (writing its temporary file)",
            )))
        });
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn open_currency(
        &mut self,
        currency: Currency,
        opening: i64,
        streaming: bool,
    ) -> Result<(), RenderError> {
        let sheet = statement_sheet(&mut self.workbook, &self.styles, currency, 1, streaming)?;
        let mut c = CurrencySheets {
            currency,
            streaming,
            done: Vec::new(),
            sheet,
            sheet_number: 1,
            row: 1,
            balance: opening,
            totals: CurrencyTotals {
                opening,
                closing: i128::from(opening),
                ..CurrencyTotals::default()
            },
            widths: Widths::default(),
            wide: false,
        };
        let row = c.row;
        let tz = self.header.timezone;
        write_instant(&mut c.sheet, row, 0, self.header.bounds.0, tz, None)?;
        c.sheet.write_string(row, 2, "OPENING_BALANCE")?;
        c.sheet.write_string(row, 3, "Opening balance")?;
        c.wide |= write_amount(
            &mut c.sheet,
            row,
            6,
            currency,
            i128::from(opening),
            None,
            &self.styles,
        )?;
        c.widths.balance = c.widths.balance.max(u128::from(opening.unsigned_abs()));
        c.row += 1;
        self.currencies.insert(currency, c);
        Ok(())
    }

    /// Writes one entry's row; a currency first seen opens its sheet, in memory or
    /// `streaming` like the others.
    fn write_entry(&mut self, entry: &Entry, streaming: bool) -> Result<(), RenderError> {
        if !self.currencies.contains_key(&entry.currency) {
            // A currency first seen inside the period opens at zero, visibly.
            self.open_currency(entry.currency, 0, streaming)?;
        }
        let Some(c) = self.currencies.get_mut(&entry.currency) else {
            return Err(RenderError::Io(std::io::Error::other(
                "a currency sheet vanished",
            )));
        };
        let balance = c
            .balance
            .checked_add(entry.amount)
            .ok_or_else(|| RenderError::Overflow(entry.currency.to_string()))?;
        c.ensure_room(1, self.rows_per_sheet, &mut self.workbook, &self.styles)?;
        let (sheet, row) = (&mut c.sheet, c.row);
        write_instant(sheet, row, 0, entry.booked_at, self.header.timezone, None)?;
        let id = cell_text(&entry.id);
        let description = cell_text(&entry.description);
        let reference = cell_text(&entry.reference);
        sheet.write_string(row, 1, id.as_ref())?;
        sheet.write_string(row, 2, entry.entry_type.as_str())?;
        sheet.write_string(row, 3, description.as_ref())?;
        sheet.write_string(row, 4, reference.as_ref())?;
        let styles = &self.styles;
        let mut wide = write_amount(
            sheet,
            row,
            5,
            c.currency,
            i128::from(entry.amount),
            None,
            styles,
        )?;
        wide |= write_amount(sheet, row, 6, c.currency, i128::from(balance), None, styles)?;
        // Counted only once the row is written: the totals describe the document.
        c.row += 1;
        c.balance = balance;
        c.wide |= wide;
        c.totals.add(entry.amount);
        self.entry_count += 1;
        let w = &mut c.widths;
        w.id = w.id.max(id.len());
        w.description = w.description.max(description.len());
        w.reference = w.reference.max(reference.len());
        w.amount = w.amount.max(u128::from(entry.amount.unsigned_abs()));
        w.balance = w.balance.max(u128::from(balance.unsigned_abs()));
        Ok(())
    }

    fn write_end(&mut self) -> Result<(), RenderError> {
        if !self.started {
            // Every entry fitted in memory.
            self.start(false)?;
        }
        let rows_per_sheet = self.rows_per_sheet;
        for c in self.currencies.values_mut() {
            c.close(
                &self.header,
                rows_per_sheet,
                &mut self.workbook,
                &self.styles,
            )?;
        }
        let lines: Vec<CurrencyLine> = self
            .currencies
            .values()
            .map(|c| CurrencyLine {
                currency: c.currency,
                sheets: c.sheet_names(),
                totals: c.totals,
            })
            .collect();
        let wide = self.currencies.values().any(|c| c.wide);
        self.totals = self.written_totals();
        let front = front_sheet(&self.header, &self.styles, &lines, self.entry_count, wide)?;
        self.workbook.push_worksheet(front);
        for c in std::mem::take(&mut self.currencies).into_values() {
            for sheet in c.done {
                self.workbook.push_worksheet(sheet);
            }
            self.workbook.push_worksheet(c.sheet);
        }
        save(&mut self.workbook, &mut self.out)
    }

    /// The totals of the rows written.
    fn written_totals(&self) -> ControlTotals {
        let mut totals = ControlTotals {
            entry_count: self.entry_count,
            ..ControlTotals::default()
        };
        for c in self.currencies.values() {
            totals.currencies.insert(c.currency, c.totals);
        }
        totals
    }
}

/// A new sheet for `currency` with its header row: constant-memory when `streaming`.
fn statement_sheet(
    workbook: &mut Workbook,
    styles: &Styles,
    currency: Currency,
    number: u32,
    streaming: bool,
) -> Result<Worksheet, RenderError> {
    let mut sheet = if streaming {
        workbook.new_worksheet_with_constant_memory()?
    } else {
        Worksheet::new()
    };
    if number == 1 {
        sheet.set_name(currency.code())?;
    } else {
        sheet.set_name(format!("{} ({number})", currency.code()))?;
    }
    // Column formats apply to every cell written without one: the hot path then does
    // no format lookup per cell.
    let amount = amount_format(currency);
    sheet.set_column_format(0, &styles.datetime)?;
    sheet.set_column_format(5, &amount)?;
    sheet.set_column_format(6, &amount)?;
    for (col, name) in (0u16..).zip(STATEMENT_COLUMNS) {
        sheet.write_string_with_format(0, col, name, &styles.bold)?;
    }
    sheet.set_freeze_panes(1, 0)?;
    Ok(sheet)
}

impl CurrencySheets {
    /// Makes room for `rows` more rows, continuing on a new sheet when this one is full.
    fn ensure_room(
        &mut self,
        rows: u32,
        rows_per_sheet: u32,
        workbook: &mut Workbook,
        styles: &Styles,
    ) -> Result<(), RenderError> {
        if self.row.saturating_add(rows) <= rows_per_sheet {
            return Ok(());
        }
        self.sheet_number += 1;
        let next = statement_sheet(
            workbook,
            styles,
            self.currency,
            self.sheet_number,
            self.streaming,
        )?;
        let mut full = std::mem::replace(&mut self.sheet, next);
        full.autofilter(0, 0, self.row - 1, 6)?;
        self.done.push(full);
        self.row = 1;
        Ok(())
    }

    /// Writes the closing row and the totals, then the filter and the column widths.
    fn close(
        &mut self,
        header: &DocumentHeader,
        rows_per_sheet: u32,
        workbook: &mut Workbook,
        styles: &Styles,
    ) -> Result<(), RenderError> {
        let empty = self.totals.count == 0;
        self.ensure_room(5 + u32::from(empty), rows_per_sheet, workbook, styles)?;
        let mut row = self.row;
        if empty {
            self.sheet.write_string(row, 3, NO_ENTRIES)?;
            row += 1;
        }
        let c = self.currency;
        write_instant(
            &mut self.sheet,
            row,
            0,
            header.bounds.1,
            header.timezone,
            None,
        )?;
        self.sheet.write_string(row, 2, "CLOSING_BALANCE")?;
        self.sheet.write_string(row, 3, "Closing balance")?;
        self.wide |= write_amount(
            &mut self.sheet,
            row,
            6,
            c,
            i128::from(self.balance),
            None,
            styles,
        )?;
        self.sheet.autofilter(0, 0, row, 6)?;
        row += 2;
        let t = self.totals;
        self.sheet
            .write_string_with_format(row, 3, "Entries", &styles.bold)?;
        self.sheet
            .write_number_with_format(row, 5, t.count as f64, &styles.count)?;
        for (label, value) in [("Total credits", t.credits), ("Total debits", t.debits)] {
            row += 1;
            self.sheet
                .write_string_with_format(row, 3, label, &styles.bold)?;
            self.wide |= write_amount(&mut self.sheet, row, 5, c, value, None, styles)?;
        }
        self.row = row + 1;
        let w = self.widths;
        let amount = amount_width(
            c,
            w.amount
                .max(t.credits.unsigned_abs())
                .max(t.debits.unsigned_abs()),
        );
        let balance = amount_width(c, w.balance);
        for sheet in self.done.iter_mut().chain(std::iter::once(&mut self.sheet)) {
            sheet.set_column_width(0, 20)?;
            sheet.set_column_width(1, text_width(w.id, 12.0, 40.0))?;
            sheet.set_column_width(2, 18)?;
            sheet.set_column_width(3, text_width(w.description, 24.0, 80.0))?;
            sheet.set_column_width(4, text_width(w.reference, 12.0, 40.0))?;
            sheet.set_column_width(5, amount)?;
            sheet.set_column_width(6, balance)?;
        }
        Ok(())
    }

    fn sheet_names(&self) -> Vec<String> {
        self.done
            .iter()
            .chain(std::iter::once(&self.sheet))
            .map(Worksheet::name)
            .collect()
    }
}

impl<W: Write + Send> Renderer<W> for XlsxStatement<W> {
    fn entry(&mut self, entry: &Entry) -> Result<(), RenderError> {
        self.guarded(|me| me.add_entry(entry))
    }

    fn finish(mut self: Box<Self>) -> Result<(ControlTotals, W), RenderError> {
        self.guarded(Self::write_end)?;
        Ok((self.totals, self.out))
    }
}
