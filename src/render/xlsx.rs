//! XLSX documents (Office Open XML workbooks) written with `rust_xlsxwriter`.
//!
//! **Layout.** The first sheet (`Statement` or `Summary`) carries the document header —
//! merchant, ledger type, period, time zone, local and UTC bounds, stage (a DRAFT is
//! flagged in red), version, generation time, ledger id — and one row of totals per
//! currency. Then one sheet per currency, in code order, named by its code. A statement
//! sheet has the columns of the CSV statement (booked at, entry id, type, description,
//! reference, amount, running balance), a frozen header row and an autofilter; it opens with
//! an `OPENING_BALANCE` row, closes with a `CLOSING_BALANCE` row and ends with the entry
//! count, credits and debits. A summary sheet has the rows of the CSV summary (opening
//! balance, one row per local day, one per entry type, the total and the closing balance).
//!
//! **Cells.** Amounts are numeric cells with a number format of the currency (`#,##0.00
//! "EUR"`, `#,##0 "JPY"`, `#,##0.000 "KWD"`), instants are date cells (local time in the
//! period's zone), counts are numbers.
//!
//! **Locale.** Dates are displayed in the merchant's locale (`render::locale`): `yyyy-mm-dd
//! hh:mm:ss` by default, `dd.mm.yyyy hh:mm:ss` for de-DE, `mm/dd/yyyy hh:mm:ss` for en-US,
//! `yyyy/mm/dd hh:mm:ss` for ja-JP (separators escaped, so they show as written). Numbers
//! cannot be forced the same way: a format code always says `,` for the grouping and `.`
//! for the decimal mark, and Excel, LibreOffice and Numbers replace them with the separators
//! of the *viewer's* settings — a German Excel shows `249.978,81 EUR`, an American one
//! `249,978.81 EUR`, from the same file. Forcing the merchant's separators would take text
//! cells, and the cells stay numbers so they can be summed. What the file does control:
//! grouping is on, and the number of minor digits is the currency's. The first sheet's
//! period bounds are text in RFC 3339, the unambiguous form for copying elsewhere. Free text is always a string
//! cell, never a formula, so `=HYPERLINK(…)` in a description stays text; the writer escapes
//! XML specials and control characters (`_x0001_`), and text beyond Excel's 32,767
//! characters a cell is cut and ends in `…`. An amount becomes `minor / 10^exponent` as an
//! `f64`: every integer below 2^53 is exact in an `f64`, the division is correctly rounded,
//! and a decimal of at most 15 significant digits survives the round trip to the cell's
//! shortest decimal text, which is also all Excel displays. So every amount with
//! |minor| < 10^15 (ten trillion euros) is shown exactly; a larger one (it can only come
//! from sums or an absurd entry) is written as exact decimal text in red, right-aligned,
//! and the first sheet says why, rather than as a number that is silently rounded.
//!
//! **Limits.** A sheet holds at most 1,048,576 rows: a currency with more rows continues
//! on `EUR (2)`, `EUR (3)`… with the header row repeated and the running balance carried
//! on; nothing is dropped. The control totals a statement reports are counted from the
//! rows it wrote, the summary's from the day rows it wrote, so the pipeline's self-check
//! catches a row that went missing.
//!
//! **Memory and temporary files.** The service promises that no plaintext reaches a disk,
//! and the output `W` is already the encrypting writer, so where the workbook waits before
//! it is zipped matters. The writer offers three layouts; measured for 100,000 entries
//! (release build, this 2-core machine; time to rows + zip at deflate level 1):
//!
//! | layout | time | peak RSS | temporary file |
//! |---|---|---|---|
//! | standard (every cell an object in memory) | 0.52 s | 136 MiB | none |
//! | "low memory" (rows to a file, strings shared in memory) | 0.41 s | 31 MiB | 28 MB |
//! | constant memory (rows to a file, strings inline) | 0.25 s | 4 MiB | 39 MB |
//!
//! The standard layout grows by ~1.3 KiB an entry (1.3 GiB for a million) and is the
//! slowest; it is used only while that cost is small. A statement holds its first
//! [`IN_MEMORY_ENTRIES`] (5,000) entries back: one that ends by then is laid out in
//! standard sheets (≤ ~7 MiB) and never touches a file — most ledgers. A longer one opens
//! constant-memory sheets, writes the held entries and streams the rest: each row becomes
//! XML when the next one starts and is appended to a temporary file per sheet, so memory
//! stays flat (15 MiB for the renderer at 100,000 and at 1,000,000 entries) while the
//! currencies interleave freely (each sheet keeps its own row order). Those files are made
//! by `tempfile::tempfile_in`: on Linux `O_TMPFILE`, an inode that never has a name, mode
//! 0600, freed by the kernel when the sheet is dropped or the process dies (elsewhere
//! created and unlinked at once); in [`XlsxOptions::temp_dir`], by default `/dev/shm`
//! (Linux's memory-backed tmpfs) where it is writable, else `TMPDIR`. They hold the sheet
//! XML in plaintext, about 390 bytes an entry, for the seconds a render takes — in memory,
//! not on a disk: tmpfs pages count against the container's memory (~390 MB for a million
//! entries; Kubernetes sizes `/dev/shm` with an `emptyDir` of `medium: Memory`). Where no
//! `/dev/shm` is writable, `TMPDIR` must be memory-backed or an encrypted volume for the
//! promise to hold. A summary has at most days × types rows per
//! currency, so its sheets are always in memory and it never uses a file.
//!
//! At [`Renderer::finish`] the workbook is zipped straight into `W` (`save_to_writer`, a
//! streaming zip with data descriptors that needs no `Seek`), reading each temporary file
//! back once: the compressed workbook is never held in memory either. Deflate level 1 is
//! used: for 100,000 entries it zips in 65 ms to 8.2 MB, where level 3 takes 140 ms for
//! 5.7 MB and the default level 6 460 ms for 5.3 MB.
//!
//! The writer `expect`s on a failed write to its temporary file (a full disk); that panic
//! is caught at this boundary and reported as [`RenderError::Io`], and the renderer refuses
//! further calls.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use rust_xlsxwriter::{Color, DocProperties, Format, FormatAlign, Workbook, Worksheet, XlsxError};

use super::summary::{Bucket, Summary};
use super::{DocumentHeader, RenderError, Renderer, locale, text};
use crate::domain::{
    Balance, ControlTotals, Currency, CurrencyTotals, Entry, LedgerType, Stage, Timezone,
};

/// Rows of one worksheet in Excel (and LibreOffice).
pub const EXCEL_MAX_ROWS: u32 = 1_048_576;

/// Characters (UTF-16 code units) one cell holds in Excel.
pub const EXCEL_MAX_CELL_CHARS: usize = 32_767;

/// Magnitudes of minor units from here on are written as exact text, not as numbers: a
/// number cell shows at most 15 significant digits.
const EXACT_LIMIT: u128 = 1_000_000_000_000_000;

/// Deflate level of the zip container: the fastest (see the module documentation).
const ZIP_LEVEL: u8 = 1;

/// Statements with at most this many entries are built in memory: no temporary file.
pub const IN_MEMORY_ENTRIES: usize = 5_000;

/// The smallest `rows_per_sheet` that leaves room for a header, an opening row, an entry and
/// the closing block on one sheet.
const MIN_ROWS_PER_SHEET: u32 = 10;

const STATEMENT_COLUMNS: [&str; 7] = [
    "Booked at",
    "Entry ID",
    "Type",
    "Description",
    "Reference",
    "Amount",
    "Running balance",
];

const SUMMARY_COLUMNS: [&str; 7] = [
    "Section",
    "Date / type",
    "Entries",
    "Credits",
    "Debits",
    "Net",
    "Balance",
];

const NO_ENTRIES: &str = "No entries in this period";

impl From<XlsxError> for RenderError {
    fn from(e: XlsxError) -> Self {
        match e {
            XlsxError::IoError(e) => RenderError::Io(e),
            other => RenderError::Io(std::io::Error::other(other)),
        }
    }
}

/// Settings of the XLSX statement; [`Default`] is what the service uses.
#[derive(Debug, Clone)]
pub struct XlsxOptions {
    /// Rows per worksheet before a currency continues on its next sheet: Excel's limit,
    /// lowered only by tests (at least 10).
    pub rows_per_sheet: u32,
    /// Statements with at most this many entries are built in memory and never touch a
    /// file; from the next entry on the sheets stream through temporary files.
    pub in_memory_entries: usize,
    /// Directory of the anonymous temporary files of the constant-memory sheets; `None` is
    /// `std::env::temp_dir()`. The default is [`memory_backed_temp_dir`].
    pub temp_dir: Option<PathBuf>,
}

impl Default for XlsxOptions {
    fn default() -> Self {
        Self {
            rows_per_sheet: EXCEL_MAX_ROWS,
            in_memory_entries: IN_MEMORY_ENTRIES,
            temp_dir: memory_backed_temp_dir(),
        }
    }
}

/// `/dev/shm` where it is a writable directory (Linux's memory-backed tmpfs, present in
/// every Linux container), so sheet rows in plaintext never reach a disk; else `None`
/// (`TMPDIR`, which must then be memory-backed or encrypted — see the module docs).
pub fn memory_backed_temp_dir() -> Option<PathBuf> {
    static DIR: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let shm = PathBuf::from("/dev/shm");
        // Proven writable by making (and at once dropping) an anonymous file there.
        match tempfile::tempfile_in(&shm) {
            Ok(_) => Some(shm),
            Err(e) => {
                // Said once, where an operator looks: large workbooks now stage on TMPDIR.
                tracing::warn!(error = %e, tmpdir = %std::env::temp_dir().display(),
                    "/dev/shm is not writable: XLSX statements over 5,000 entries stage their rows in TMPDIR, which must be memory-backed or encrypted");
                None
            }
        }
    })
    .clone()
}

/// The formats every workbook uses; built once, reused for every cell.
struct Styles {
    bold: Format,
    title: Format,
    datetime: Format,
    date: Format,
    count: Format,
    /// An amount too large for an exact number cell, as text.
    wide: Format,
    /// DRAFT.
    warning: Format,
}

impl Styles {
    /// The formats of a document for the merchant's locale (its dates; see the module docs).
    fn new(header: &DocumentHeader) -> Self {
        let conv = locale::conventions(header.merchant.locale.as_ref());
        Self {
            bold: Format::new().set_bold(),
            title: Format::new().set_bold().set_font_size(14),
            datetime: Format::new().set_num_format(conv.xlsx_datetime()),
            date: Format::new().set_num_format(conv.xlsx_date()),
            count: Format::new().set_num_format("#,##0"),
            wide: Format::new()
                .set_font_color(Color::Red)
                .set_bold()
                .set_align(FormatAlign::Right),
            warning: Format::new().set_font_color(Color::Red).set_bold(),
        }
    }
}

/// `#,##0.00 "EUR"`: thousands separators, the currency's minor digits, its code.
fn amount_format(currency: Currency) -> Format {
    let decimals = usize::from(currency.exponent());
    let pattern = if decimals == 0 {
        format!("#,##0 \"{}\"", currency.code())
    } else {
        format!("#,##0.{:0<decimals$} \"{}\"", "", currency.code())
    };
    Format::new().set_num_format(pattern)
}

/// `10^exponent` as an exact `f64` (exponents are 0–4).
fn scale(currency: Currency) -> f64 {
    10f64.powi(i32::from(currency.exponent()))
}

/// Writes `minor` units as a number cell, or as exact text flagged by `styles.wide` when
/// a number cell could not show it exactly. Returns whether it fell back to text.
fn write_amount(
    sheet: &mut Worksheet,
    row: u32,
    col: u16,
    currency: Currency,
    minor: i128,
    format: Option<&Format>,
    styles: &Styles,
) -> Result<bool, XlsxError> {
    if minor.unsigned_abs() < EXACT_LIMIT {
        // Exact: |minor| < 10^15 < 2^53, and the division is correctly rounded.
        let value = minor as f64 / scale(currency);
        match format {
            Some(f) => sheet.write_number_with_format(row, col, value, f)?,
            None => sheet.write_number(row, col, value)?,
        };
        Ok(false)
    } else {
        sheet.write_string_with_format(
            row,
            col,
            text::wide_amount(currency, minor),
            &styles.wide,
        )?;
        Ok(true)
    }
}

/// Days since 1899-12-30 (Excel's serial date), if Excel can show the instant: from
/// 1900-03-01 (before it Excel's 1900 leap-year bug shifts dates) to 9999-12-31.
fn excel_serial(local: NaiveDateTime) -> Option<f64> {
    const UNIX_EPOCH_SERIAL: f64 = 25_569.0;
    const MS_PER_DAY: f64 = 86_400_000.0;
    let serial = UNIX_EPOCH_SERIAL + local.and_utc().timestamp_millis() as f64 / MS_PER_DAY;
    (61.0..2_958_466.0).contains(&serial).then_some(serial)
}

/// An instant as a date cell in local time of `tz`; as RFC 3339 text when Excel has no
/// date for it (the exclusive end of the year 9999).
fn write_instant(
    sheet: &mut Worksheet,
    row: u32,
    col: u16,
    at: DateTime<Utc>,
    tz: Timezone,
    format: Option<&Format>,
) -> Result<(), XlsxError> {
    match excel_serial(at.with_timezone(&tz.0).naive_local()) {
        Some(serial) => match format {
            Some(f) => sheet.write_number_with_format(row, col, serial, f)?,
            None => sheet.write_number(row, col, serial)?,
        },
        None => sheet.write_string(row, col, text::local_instant(at, tz))?,
    };
    Ok(())
}

/// A local day as a date cell.
fn write_day(
    sheet: &mut Worksheet,
    row: u32,
    col: u16,
    day: NaiveDate,
    styles: &Styles,
) -> Result<(), XlsxError> {
    match excel_serial(day.and_time(chrono::NaiveTime::MIN)) {
        Some(serial) => sheet.write_number_with_format(row, col, serial, &styles.date)?,
        None => sheet.write_string(row, col, day.format("%Y-%m-%d").to_string())?,
    };
    Ok(())
}

/// Free text as a cell value: cut to Excel's limit (counted in UTF-16 units, as Excel
/// counts) with a trailing `…` so the cut is visible.
fn cell_text(text: &str) -> Cow<'_, str> {
    // UTF-8 is never shorter than UTF-16, so short strings need no counting.
    if text.len() <= EXCEL_MAX_CELL_CHARS {
        return Cow::Borrowed(text);
    }
    let mut units = 0;
    for (i, c) in text.char_indices() {
        units += c.len_utf16();
        if units > EXCEL_MAX_CELL_CHARS {
            // Keep what fits with room for the one-unit ellipsis.
            let mut keep = i;
            let mut kept_units = units - c.len_utf16();
            while kept_units + 1 > EXCEL_MAX_CELL_CHARS {
                let Some(last) = text[..keep].chars().next_back() else {
                    break;
                };
                keep -= last.len_utf8();
                kept_units -= last.len_utf16();
            }
            return Cow::Owned(format!("{}…", &text[..keep]));
        }
    }
    Cow::Borrowed(text)
}

fn utc_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A column width (in characters) for amounts up to `max` minor units of `currency`.
fn amount_width(currency: Currency, max: u128) -> f64 {
    let whole = max / 10u128.pow(u32::from(currency.exponent()));
    let digits = whole.checked_ilog10().map_or(1, |d| d + 1);
    let separators = (digits - 1) / 3;
    let fraction = match currency.exponent() {
        0 => 0,
        e => u32::from(e) + 1,
    };
    // Sign, a space and the code, and a little air.
    f64::from(digits + separators + fraction + 7).clamp(14.0, 40.0)
}

/// Byte length as a width in characters, between `min` and `max`.
fn text_width(len: usize, min: f64, max: f64) -> f64 {
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    (f64::from(len) + 2.0).clamp(min, max)
}

/// Sums opening balances per currency (several for one currency are added).
fn opening_balances(balances: &[Balance]) -> Result<BTreeMap<Currency, i64>, RenderError> {
    let mut opening: BTreeMap<Currency, i64> = BTreeMap::new();
    for b in balances {
        let slot = opening.entry(b.currency).or_default();
        *slot = slot
            .checked_add(b.amount)
            .ok_or_else(|| RenderError::Overflow(b.currency.to_string()))?;
    }
    Ok(opening)
}

/// One currency's line on the first sheet.
struct CurrencyLine {
    currency: Currency,
    sheets: Vec<String>,
    totals: CurrencyTotals,
}

/// The first sheet: the document header and the totals per currency.
fn front_sheet(
    header: &DocumentHeader,
    styles: &Styles,
    lines: &[CurrencyLine],
    entry_count: u64,
    wide: bool,
) -> Result<Worksheet, RenderError> {
    let mut sheet = Worksheet::new();
    let (title, name) = match header.ledger_type {
        LedgerType::Statement => ("Merchant statement", "Statement"),
        LedgerType::Summary => ("Merchant summary", "Summary"),
    };
    sheet.set_name(name)?;
    sheet.set_column_width(0, 30)?;
    sheet.set_column_width(1, 32)?;
    for col in 2..=6 {
        sheet.set_column_width(col, 20)?;
    }
    sheet.write_string_with_format(0, 0, title, &styles.title)?;
    let tz = header.timezone;
    let fields: [(&str, String); 13] = [
        ("Merchant", cell_text(&header.merchant.name).into_owned()),
        ("Merchant ID", header.merchant.id.to_string()),
        ("Ledger type", header.ledger_type.to_string()),
        ("Period", header.period.to_string()),
        ("Time zone", tz.to_string()),
        (
            "Period start (local)",
            text::local_instant(header.bounds.0, tz),
        ),
        (
            "Period end, exclusive (local)",
            text::local_instant(header.bounds.1, tz),
        ),
        ("Period start (UTC)", utc_text(header.bounds.0)),
        ("Period end, exclusive (UTC)", utc_text(header.bounds.1)),
        ("Stage", header.stage.to_string()),
        ("Version", header.version.to_string()),
        ("Generated at (UTC)", utc_text(header.generated_at)),
        ("Ledger ID", header.ledger_id.to_string()),
    ];
    let mut row = 2;
    for (label, value) in fields {
        sheet.write_string_with_format(row, 0, label, &styles.bold)?;
        if label == "Version" {
            sheet.write_number(row, 1, header.version)?;
        } else if label == "Stage" && header.stage == Stage::Draft {
            sheet.write_string_with_format(row, 1, value, &styles.warning)?;
            sheet.write_string_with_format(
                row,
                2,
                "The period had not ended when this was generated: entries may still change.",
                &styles.warning,
            )?;
        } else {
            // Ids stay text: a Snowflake id has more digits than a number cell shows.
            sheet.write_string(row, 1, value)?;
        }
        row += 1;
    }
    row += 1;
    let columns = [
        "Currency",
        "Sheets",
        "Opening balance",
        "Entries",
        "Credits",
        "Debits",
        "Closing balance",
    ];
    for (col, name) in (0u16..).zip(columns) {
        sheet.write_string_with_format(row, col, name, &styles.bold)?;
    }
    for line in lines {
        row += 1;
        let c = line.currency;
        let format = amount_format(c);
        let t = &line.totals;
        sheet.write_string(row, 0, c.code())?;
        sheet.write_string(row, 1, line.sheets.join(", "))?;
        write_amount(
            &mut sheet,
            row,
            2,
            c,
            i128::from(t.opening),
            Some(&format),
            styles,
        )?;
        sheet.write_number_with_format(row, 3, t.count as f64, &styles.count)?;
        write_amount(&mut sheet, row, 4, c, t.credits, Some(&format), styles)?;
        write_amount(&mut sheet, row, 5, c, t.debits, Some(&format), styles)?;
        write_amount(&mut sheet, row, 6, c, t.closing, Some(&format), styles)?;
    }
    row += 2;
    if entry_count == 0 {
        sheet.write_string_with_format(row, 0, NO_ENTRIES, &styles.bold)?;
        row += 1;
    }
    if wide || lines.iter().any(|l| too_wide(&l.totals)) {
        sheet.write_string_with_format(
            row,
            0,
            "Amounts in red text exceed the 15 digits a number cell shows exactly; they are exact decimal text.",
            &styles.warning,
        )?;
    }
    Ok(sheet)
}

fn too_wide(t: &CurrencyTotals) -> bool {
    [i128::from(t.opening), t.credits, t.debits, t.closing]
        .iter()
        .any(|v| v.unsigned_abs() >= EXACT_LIMIT)
}

fn properties(header: &DocumentHeader) -> DocProperties {
    DocProperties::new()
        .set_title(format!(
            "{} {} {} ({})",
            header.ledger_type, header.merchant.id, header.period, header.stage
        ))
        .set_subject("Merchant ledger")
        .set_comment(format!(
            "Ledger {} version {}",
            header.ledger_id, header.version
        ))
}

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
        let mut workbook = Workbook::new();
        workbook.set_zip_compression_level(ZIP_LEVEL);
        workbook.set_properties(&properties(header));
        Ok(Self {
            out,
            workbook,
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
        add(&mut c.totals, entry.amount);
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
        let mut out = BufWriter::with_capacity(64 * 1024, &mut self.out);
        self.workbook.save_to_writer(&mut out)?;
        out.flush()?;
        drop(out);
        self.out.flush()?;
        Ok(())
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

fn add(t: &mut CurrencyTotals, amount: i64) {
    t.count += 1;
    if amount >= 0 {
        t.credits += i128::from(amount);
    } else {
        t.debits += i128::from(amount);
    }
    t.closing += i128::from(amount);
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

/// Writes `summary` as a workbook: the first sheet with the header and the totals per
/// currency, then per currency a sheet with an `OPENING_BALANCE` row (the period's local
/// start and the balance), one `DAY` row per local day with entries (date cell, count,
/// credits, debits, net, balance at the day's end), one `TYPE` row per entry type, a
/// `TOTAL` row and a `CLOSING_BALANCE` row. Debits are the sum of the negative amounts. The
/// totals reported, and the totals and closing balances shown, are summed from the day rows
/// written.
pub fn write_summary<W: Write + Send>(
    header: &DocumentHeader,
    summary: &Summary,
    mut out: W,
) -> Result<(ControlTotals, W), RenderError> {
    let styles = Styles::new(header);
    let mut workbook = Workbook::new();
    workbook.set_zip_compression_level(ZIP_LEVEL);
    workbook.set_properties(&properties(header));
    let mut written = ControlTotals::default();
    let mut lines = Vec::new();
    let mut sheets = Vec::new();
    let mut wide = false;
    for c in &summary.currencies {
        let (sheet, totals, sheet_wide) = summary_sheet(header, &styles, c)?;
        wide |= sheet_wide;
        written.entry_count += totals.count;
        written.currencies.insert(c.currency, totals);
        lines.push(CurrencyLine {
            currency: c.currency,
            sheets: vec![sheet.name()],
            totals,
        });
        sheets.push(sheet);
    }
    let front = front_sheet(header, &styles, &lines, written.entry_count, wide)?;
    workbook.push_worksheet(front);
    for sheet in sheets {
        workbook.push_worksheet(sheet);
    }
    let mut buffered = BufWriter::with_capacity(64 * 1024, &mut out);
    workbook.save_to_writer(&mut buffered)?;
    buffered.flush()?;
    drop(buffered);
    out.flush()?;
    Ok((written, out))
}

/// One currency's summary sheet, the totals summed from its day rows, and whether an
/// amount had to be written as text.
fn summary_sheet(
    header: &DocumentHeader,
    styles: &Styles,
    c: &super::summary::CurrencySummary,
) -> Result<(Worksheet, CurrencyTotals, bool), RenderError> {
    let currency = c.currency;
    let format = amount_format(currency);
    let tz = header.timezone;
    let mut sheet = Worksheet::new();
    sheet.set_name(currency.code())?;
    for col in 3..=6 {
        sheet.set_column_format(col, &format)?;
    }
    for (col, name) in (0u16..).zip(SUMMARY_COLUMNS) {
        sheet.write_string_with_format(0, col, name, &styles.bold)?;
    }
    sheet.set_freeze_panes(1, 0)?;
    let mut wide = false;
    let mut totals = CurrencyTotals {
        opening: c.opening,
        ..CurrencyTotals::default()
    };
    let mut row = 1;
    sheet.write_string(row, 0, "OPENING_BALANCE")?;
    write_instant(
        &mut sheet,
        row,
        1,
        header.bounds.0,
        tz,
        Some(&styles.datetime),
    )?;
    wide |= write_amount(
        &mut sheet,
        row,
        6,
        currency,
        i128::from(c.opening),
        None,
        styles,
    )?;
    let mut balance = i128::from(c.opening);
    let mut widest = balance.unsigned_abs();
    for (day, b) in &c.days {
        row += 1;
        sheet.write_string(row, 0, "DAY")?;
        write_day(&mut sheet, row, 1, *day, styles)?;
        balance += b.net();
        wide |= bucket_row(&mut sheet, row, currency, b, styles)?;
        wide |= write_amount(&mut sheet, row, 6, currency, balance, None, styles)?;
        totals.count += b.count;
        totals.credits += b.credits;
        totals.debits += b.debits;
        widest = widest.max(balance.unsigned_abs());
    }
    if c.days.is_empty() {
        row += 1;
        sheet.write_string(row, 1, NO_ENTRIES)?;
    }
    for (entry_type, b) in &c.types {
        row += 1;
        sheet.write_string(row, 0, "TYPE")?;
        sheet.write_string(row, 1, entry_type.as_str())?;
        wide |= bucket_row(&mut sheet, row, currency, b, styles)?;
    }
    totals.closing = i128::from(totals.opening) + totals.credits + totals.debits;
    row += 1;
    sheet.write_string(row, 0, "TOTAL")?;
    let total = Bucket {
        count: totals.count,
        credits: totals.credits,
        debits: totals.debits,
    };
    wide |= bucket_row(&mut sheet, row, currency, &total, styles)?;
    row += 1;
    sheet.write_string(row, 0, "CLOSING_BALANCE")?;
    write_instant(
        &mut sheet,
        row,
        1,
        header.bounds.1,
        tz,
        Some(&styles.datetime),
    )?;
    wide |= write_amount(&mut sheet, row, 6, currency, totals.closing, None, styles)?;
    sheet.autofilter(0, 0, row, 6)?;
    widest = widest
        .max(totals.credits.unsigned_abs())
        .max(totals.debits.unsigned_abs())
        .max(totals.closing.unsigned_abs());
    sheet.set_column_width(0, 18)?;
    sheet.set_column_width(1, 20)?;
    sheet.set_column_width(2, 10)?;
    let width = amount_width(currency, widest);
    for col in 3..=6 {
        sheet.set_column_width(col, width)?;
    }
    Ok((sheet, totals, wide))
}

/// Count, credits, debits and net of a bucket in columns C–F.
fn bucket_row(
    sheet: &mut Worksheet,
    row: u32,
    currency: Currency,
    b: &Bucket,
    styles: &Styles,
) -> Result<bool, XlsxError> {
    sheet.write_number_with_format(row, 2, b.count as f64, &styles.count)?;
    let mut wide = write_amount(sheet, row, 3, currency, b.credits, None, styles)?;
    wide |= write_amount(sheet, row, 4, currency, b.debits, None, styles)?;
    wide |= write_amount(sheet, row, 5, currency, b.net(), None, styles)?;
    Ok(wide)
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Read};

    use calamine::{Data, Range, Reader, Xlsx, open_workbook_from_rs};
    use chrono::NaiveDateTime;

    use super::*;
    use crate::domain::{EntryType, LedgerId, Merchant, MerchantId, Period};
    use crate::render::summary::SummaryRenderer;

    fn c(code: &str) -> Currency {
        Currency::parse(code).unwrap()
    }

    fn header(ledger_type: LedgerType, period: &str, opening: &[(&str, i64)]) -> DocumentHeader {
        let period = Period::parse(period).unwrap();
        let tz = Timezone::parse("Europe/Berlin").unwrap();
        DocumentHeader {
            ledger_id: LedgerId::from_i64(7_123_456_789_012_345_678),
            merchant: Merchant {
                id: MerchantId::parse("m_1").unwrap(),
                name: "Acme & Söhne GmbH".into(),
                timezone: Some(tz),
                locale: None,
            },
            ledger_type,
            period,
            timezone: tz,
            bounds: period.bounds(tz),
            stage: Stage::Draft,
            version: 3,
            generated_at: "2026-03-30T12:00:00Z".parse().unwrap(),
            opening_balances: opening
                .iter()
                .map(|&(code, amount)| Balance {
                    currency: c(code),
                    amount,
                })
                .collect(),
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
            currency: c(currency),
            description: description.into(),
            reference: format!("ref_{id}"),
        }
    }

    /// The totals the pipeline computes from the source.
    fn source_totals(h: &DocumentHeader, entries: &[Entry]) -> ControlTotals {
        let mut t = ControlTotals::with_opening(&h.opening_balances);
        for e in entries {
            t.add(e.currency, e.amount);
        }
        t
    }

    fn render(
        h: &DocumentHeader,
        entries: &[Entry],
        options: &XlsxOptions,
    ) -> (ControlTotals, Vec<u8>) {
        let mut r: Box<dyn Renderer<Vec<u8>>> =
            Box::new(XlsxStatement::with_options(h, Vec::new(), options).unwrap());
        for e in entries {
            r.entry(e).unwrap();
        }
        r.finish().unwrap()
    }

    /// Every sheet's cells as calamine reads them.
    fn contents(bytes: &[u8]) -> Vec<(String, Range<Data>)> {
        let mut book = Book::open(bytes.to_vec());
        book.names()
            .into_iter()
            .map(|name| {
                let range = book.sheet(&name);
                (name, range)
            })
            .collect()
    }

    /// A statement rendered all in memory, all streaming and switching to streaming
    /// halfway: the three must read back the same. Returns the streaming one.
    fn statement(
        h: &DocumentHeader,
        entries: &[Entry],
        options: &XlsxOptions,
    ) -> (ControlTotals, Vec<u8>) {
        let with = |in_memory_entries| XlsxOptions {
            in_memory_entries,
            ..options.clone()
        };
        let (streamed_totals, streamed) = render(h, entries, &with(0));
        for in_memory_entries in [usize::MAX, entries.len() / 2] {
            let (totals, bytes) = render(h, entries, &with(in_memory_entries));
            assert_eq!(totals, streamed_totals, "{in_memory_entries} in memory");
            assert!(
                contents(&bytes) == contents(&streamed),
                "{in_memory_entries} entries in memory read back unlike streaming"
            );
        }
        (streamed_totals, streamed)
    }

    fn summary(h: &DocumentHeader, entries: &[Entry]) -> (ControlTotals, Vec<u8>) {
        let mut r: Box<dyn Renderer<Vec<u8>>> =
            Box::new(SummaryRenderer::new(h, Vec::new(), write_summary).unwrap());
        for e in entries {
            r.entry(e).unwrap();
        }
        r.finish().unwrap()
    }

    struct Book {
        xlsx: Xlsx<Cursor<Vec<u8>>>,
        bytes: Vec<u8>,
    }

    impl Book {
        fn open(bytes: Vec<u8>) -> Self {
            let xlsx = open_workbook_from_rs(Cursor::new(bytes.clone())).unwrap();
            Self { xlsx, bytes }
        }

        fn names(&self) -> Vec<String> {
            self.xlsx.sheet_names()
        }

        fn sheet(&mut self, name: &str) -> Range<Data> {
            self.xlsx.worksheet_range(name).unwrap()
        }

        /// One XML part of the zip, as text.
        fn part(&self, name: &str) -> String {
            let mut zip = zip::ZipArchive::new(Cursor::new(self.bytes.as_slice())).unwrap();
            let mut text = String::new();
            zip.by_name(name)
                .unwrap()
                .read_to_string(&mut text)
                .unwrap();
            text
        }
    }

    fn at(sheet: &Range<Data>, row: u32, col: u32) -> Data {
        sheet.get_value((row, col)).cloned().unwrap_or(Data::Empty)
    }

    /// A numeric cell's value; panics (failing the test) on anything but a number.
    fn num(sheet: &Range<Data>, row: u32, col: u32) -> f64 {
        match at(sheet, row, col) {
            Data::Float(v) => v,
            Data::Int(v) => v as f64,
            other => panic!("({row}, {col}) is not a number: {other:?}"),
        }
    }

    fn string(sheet: &Range<Data>, row: u32, col: u32) -> String {
        match at(sheet, row, col) {
            Data::String(s) => s,
            other => panic!("({row}, {col}) is not text: {other:?}"),
        }
    }

    fn datetime(sheet: &Range<Data>, row: u32, col: u32) -> NaiveDateTime {
        match at(sheet, row, col) {
            Data::DateTime(d) if d.is_datetime() => d.as_datetime().unwrap(),
            other => panic!("({row}, {col}) is not a date cell: {other:?}"),
        }
    }

    fn local(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    /// The row whose column `col` holds `text`.
    fn find(sheet: &Range<Data>, col: u32, text: &str) -> u32 {
        (0..sheet.height() as u32)
            .find(|&r| at(sheet, r, col) == Data::String(text.into()))
            .unwrap_or_else(|| panic!("no {text:?} in column {col}"))
    }

    #[test]
    fn a_statement_reads_back_with_typed_cells_and_running_balances_per_currency() {
        // March 2026 in Berlin: clocks go from 02:00 CET to 03:00 CEST on the 29th.
        let h = header(LedgerType::Statement, "2026-03", &[("EUR", 125_000)]);
        let entries = [
            entry("tx_1", "2026-03-28T23:30:00Z", 1999, "EUR", "Order 1001"),
            entry("tx_2", "2026-03-29T00:45:00Z", 1500, "JPY", "Yen"),
            entry("tx_3", "2026-03-29T01:30:00Z", -1999, "EUR", "Refund 1001"),
            entry("tx_4", "2026-03-30T08:00:00Z", 1999, "KWD", "Dinar"),
            entry("tx_5", "2026-03-31T21:59:59Z", -250, "JPY", "Fee"),
        ];
        let (totals, bytes) = statement(&h, &entries, &XlsxOptions::default());
        assert_eq!(totals, source_totals(&h, &entries));
        let mut book = Book::open(bytes);
        assert_eq!(book.names(), ["Statement", "EUR", "JPY", "KWD"]);

        let eur = book.sheet("EUR");
        let headers: Vec<String> = (0..7).map(|col| string(&eur, 0, col)).collect();
        assert_eq!(headers, STATEMENT_COLUMNS);
        assert_eq!(datetime(&eur, 1, 0), local("2026-03-01 00:00:00"));
        assert_eq!(string(&eur, 1, 2), "OPENING_BALANCE");
        assert_eq!(num(&eur, 1, 6), 1250.0);
        // 23:30 UTC is 00:30 CET, before the change; 01:30 UTC is 03:30 CEST, after it.
        assert_eq!(datetime(&eur, 2, 0), local("2026-03-29 00:30:00"));
        assert_eq!(
            (string(&eur, 2, 1), string(&eur, 2, 2)),
            ("tx_1".into(), "PAYMENT".into())
        );
        assert_eq!(string(&eur, 2, 3), "Order 1001");
        assert_eq!(string(&eur, 2, 4), "ref_tx_1");
        assert_eq!(num(&eur, 2, 5), 19.99);
        assert_eq!(num(&eur, 2, 6), 1269.99);
        assert_eq!(datetime(&eur, 3, 0), local("2026-03-29 03:30:00"));
        assert_eq!(num(&eur, 3, 5), -19.99);
        assert_eq!(num(&eur, 3, 6), 1250.0);
        assert_eq!(string(&eur, 4, 2), "CLOSING_BALANCE");
        assert_eq!(datetime(&eur, 4, 0), local("2026-04-01 00:00:00"));
        assert_eq!(num(&eur, 4, 6), 1250.0);
        let entries_row = find(&eur, 3, "Entries");
        assert_eq!(num(&eur, entries_row, 5), 2.0);
        assert_eq!(num(&eur, find(&eur, 3, "Total credits"), 5), 19.99);
        assert_eq!(num(&eur, find(&eur, 3, "Total debits"), 5), -19.99);

        let jpy = book.sheet("JPY");
        assert_eq!(string(&jpy, 1, 2), "OPENING_BALANCE");
        assert_eq!(num(&jpy, 1, 6), 0.0);
        assert_eq!(datetime(&jpy, 2, 0), local("2026-03-29 01:45:00"));
        assert_eq!(num(&jpy, 2, 5), 1500.0);
        assert_eq!(datetime(&jpy, 3, 0), local("2026-03-31 23:59:59"));
        assert_eq!(num(&jpy, 3, 6), 1250.0);
        assert_eq!(num(&jpy, 4, 6), 1250.0);
        let kwd = book.sheet("KWD");
        assert_eq!(num(&kwd, 2, 5), 1.999);

        // Formats follow the exponent and name the currency.
        let styles = book.part("xl/styles.xml");
        for pattern in [
            "#,##0.00 &quot;EUR&quot;",
            "#,##0 &quot;JPY&quot;",
            "#,##0.000 &quot;KWD&quot;",
            "yyyy-mm-dd hh:mm:ss",
        ] {
            assert!(styles.contains(pattern), "{pattern} missing in {styles}");
        }

        let front = book.sheet("Statement");
        let value = |label: &str| at(&front, find(&front, 0, label), 1);
        assert_eq!(value("Merchant"), Data::String("Acme & Söhne GmbH".into()));
        assert_eq!(value("Merchant ID"), Data::String("m_1".into()));
        assert_eq!(value("Ledger type"), Data::String("STATEMENT".into()));
        assert_eq!(value("Period"), Data::String("2026-03".into()));
        assert_eq!(value("Time zone"), Data::String("Europe/Berlin".into()));
        assert_eq!(
            value("Period start (local)"),
            Data::String("2026-03-01T00:00:00+01:00".into())
        );
        assert_eq!(
            value("Period end, exclusive (local)"),
            Data::String("2026-04-01T00:00:00+02:00".into())
        );
        assert_eq!(
            value("Period start (UTC)"),
            Data::String("2026-02-28T23:00:00Z".into())
        );
        assert_eq!(
            value("Period end, exclusive (UTC)"),
            Data::String("2026-03-31T22:00:00Z".into())
        );
        assert_eq!(value("Stage"), Data::String("DRAFT".into()));
        assert_eq!(value("Version"), Data::Float(3.0));
        assert_eq!(
            value("Generated at (UTC)"),
            Data::String("2026-03-30T12:00:00Z".into())
        );
        assert_eq!(
            value("Ledger ID"),
            Data::String("7123456789012345678".into())
        );
        let eur_line = find(&front, 0, "EUR");
        assert_eq!(string(&front, eur_line, 1), "EUR");
        assert_eq!(num(&front, eur_line, 2), 1250.0);
        assert_eq!(num(&front, eur_line, 3), 2.0);
        assert_eq!(num(&front, eur_line, 4), 19.99);
        assert_eq!(num(&front, eur_line, 5), -19.99);
        assert_eq!(num(&front, eur_line, 6), 1250.0);
        let jpy_line = find(&front, 0, "JPY");
        assert_eq!(num(&front, jpy_line, 6), 1250.0);
    }

    #[test]
    fn dates_follow_the_merchant_s_locale_and_amounts_stay_grouped_numbers() {
        for (tag, datetime_format, date_format) in [
            ("de-DE", "dd\\.mm\\.yyyy hh:mm:ss", "dd\\.mm\\.yyyy"),
            ("en-US", "mm\\/dd\\/yyyy hh:mm:ss", "mm\\/dd\\/yyyy"),
            ("ja-JP", "yyyy\\/mm\\/dd hh:mm:ss", "yyyy\\/mm\\/dd"),
        ] {
            let mut h = header(LedgerType::Statement, "2026-03", &[("EUR", 24_997_881)]);
            h.merchant.locale = Some(crate::domain::Locale::parse(tag).unwrap());
            let entries = [entry("tx_1", "2026-03-02T10:00:00Z", -1999, "EUR", "a")];
            let (_, bytes) = statement(&h, &entries, &XlsxOptions::default());
            let mut book = Book::open(bytes);
            let styles = book.part("xl/styles.xml");
            assert!(
                styles.contains(datetime_format),
                "{tag}: {datetime_format} missing in {styles}"
            );
            assert!(styles.contains("#,##0.00 &quot;EUR&quot;"), "{tag}");
            assert!(!styles.contains("yyyy-mm-dd"), "{tag}: {styles}");
            // Still date cells and number cells, whatever the display.
            let eur = book.sheet("EUR");
            assert_eq!(datetime(&eur, 2, 0), local("2026-03-02 11:00:00"));
            assert_eq!(num(&eur, 1, 6), 249_978.81);
            assert_eq!(num(&eur, 2, 5), -19.99);

            h.ledger_type = LedgerType::Summary;
            let (_, bytes) = summary(&h, &entries);
            let styles = Book::open(bytes).part("xl/styles.xml");
            assert!(
                styles.contains(date_format),
                "{tag}: {date_format} missing in {styles}"
            );
        }
    }

    #[test]
    fn the_header_row_is_frozen_and_filtered_and_columns_have_widths() {
        let h = header(LedgerType::Statement, "2026-03", &[("EUR", 0)]);
        let entries = [entry("tx_1", "2026-03-02T10:00:00Z", 100, "EUR", "a")];
        for in_memory_entries in [0, usize::MAX] {
            let options = XlsxOptions {
                in_memory_entries,
                ..XlsxOptions::default()
            };
            let (_, bytes) = render(&h, &entries, &options);
            let book = Book::open(bytes);
            // calamine does not read panes or filters; the sheet XML says it.
            let xml = book.part("xl/worksheets/sheet2.xml");
            assert!(
                xml.contains(
                    r#"<pane ySplit="1" topLeftCell="A2" activePane="bottomLeft" state="frozen"/>"#
                ),
                "{xml}"
            );
            // Header, opening, the entry and the closing row.
            assert!(xml.contains(r#"<autoFilter ref="A1:G4"/>"#), "{xml}");
            assert!(xml.contains("<cols>"), "{xml}");
            assert!(!xml.contains("<f>"), "no formulas: {xml}");
            let workbook = book.part("xl/workbook.xml");
            assert!(workbook.contains("_xlnm._FilterDatabase"), "{workbook}");
        }
    }

    #[test]
    fn free_text_is_kept_as_text_whatever_it_holds() {
        let h = header(LedgerType::Statement, "2026-03", &[]);
        let long = "é".repeat(40_000);
        // A character outside the BMP is two UTF-16 units: the cut must not split it.
        let astral = format!("{}{}", "a".repeat(EXCEL_MAX_CELL_CHARS - 2), "😀😀");
        let texts = [
            "=HYPERLINK(\"http://evil\",\"x\")",
            "+1+2",
            "-3",
            "@SUM(A1)",
            "Order, \"1001\"\nline 2\ttab",
            "Café Zoë ñ ß 漢字",
            "bell\u{7} nul\u{0} esc\u{1b} cr\r unit\u{1f} nonchar\u{fffe}",
            "_x0041_ stays literal",
            "<b>&amp;</b>",
            "  padded  ",
            long.as_str(),
            astral.as_str(),
        ];
        let entries: Vec<Entry> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                entry(
                    &format!("tx_{i}"),
                    &format!("2026-03-02T10:00:{i:02}Z"),
                    1,
                    "EUR",
                    t,
                )
            })
            .collect();
        let (totals, bytes) = statement(&h, &entries, &XlsxOptions::default());
        assert_eq!(totals, source_totals(&h, &entries));
        let mut book = Book::open(bytes);
        let eur = book.sheet("EUR");
        for (i, t) in texts.iter().enumerate() {
            let row = 2 + i as u32;
            let got = string(&eur, row, 3);
            if t.len() > EXCEL_MAX_CELL_CHARS {
                // At the limit, or one short where the cut would split a surrogate pair.
                let units = got.encode_utf16().count();
                assert!(units == EXCEL_MAX_CELL_CHARS || units == EXCEL_MAX_CELL_CHARS - 1);
                assert!(got.ends_with('…'));
                assert!(t.starts_with(got.trim_end_matches('…')));
            } else {
                assert_eq!(got, *t, "row {row}");
            }
        }
        let xml = book.part("xl/worksheets/sheet2.xml");
        assert!(!xml.contains("<f>"), "free text never becomes a formula");
    }

    #[test]
    fn cell_text_cuts_at_the_limit_on_a_character_boundary() {
        assert_eq!(cell_text("short"), "short");
        let exact = "x".repeat(EXCEL_MAX_CELL_CHARS);
        assert_eq!(cell_text(&exact), exact);
        let over = "x".repeat(EXCEL_MAX_CELL_CHARS + 1);
        let cut = cell_text(&over);
        assert_eq!(cut.chars().count(), EXCEL_MAX_CELL_CHARS);
        assert!(cut.ends_with('…'));
        let astral = "😀".repeat(EXCEL_MAX_CELL_CHARS);
        let cut = cell_text(&astral);
        assert!(cut.encode_utf16().count() <= EXCEL_MAX_CELL_CHARS);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn an_empty_period_is_a_valid_workbook_that_says_so() {
        // No currency at all.
        let h = header(LedgerType::Statement, "2026-03", &[]);
        let (totals, bytes) = statement(&h, &[], &XlsxOptions::default());
        assert_eq!(totals, source_totals(&h, &[]));
        let mut book = Book::open(bytes);
        assert_eq!(book.names(), ["Statement"]);
        let front = book.sheet("Statement");
        find(&front, 0, NO_ENTRIES);

        // Opening balances only: the balances still show.
        let h = header(
            LedgerType::Statement,
            "2026-03",
            &[("EUR", 500), ("EUR", -200), ("USD", 7)],
        );
        let (totals, bytes) = statement(&h, &[], &XlsxOptions::default());
        assert_eq!(totals, source_totals(&h, &[]));
        let mut book = Book::open(bytes);
        assert_eq!(book.names(), ["Statement", "EUR", "USD"]);
        let eur = book.sheet("EUR");
        assert_eq!(num(&eur, 1, 6), 3.0);
        assert_eq!(string(&eur, 2, 3), NO_ENTRIES);
        assert_eq!(string(&eur, 3, 2), "CLOSING_BALANCE");
        assert_eq!(num(&eur, 3, 6), 3.0);
        let front = book.sheet("Statement");
        find(&front, 0, NO_ENTRIES);
        assert_eq!(num(&front, find(&front, 0, "USD"), 6), 0.07);
    }

    #[test]
    fn a_currency_continues_on_a_next_sheet_past_the_row_limit() {
        let h = header(LedgerType::Statement, "2026-03", &[("EUR", 1000)]);
        let mut entries = Vec::new();
        for i in 0..40 {
            let currency = if i % 5 == 4 { "USD" } else { "EUR" };
            entries.push(entry(
                &format!("tx_{i:02}"),
                &format!("2026-03-02T10:{i:02}:00Z"),
                i + 1,
                currency,
                "x",
            ));
        }
        let options = XlsxOptions {
            rows_per_sheet: 10,
            ..XlsxOptions::default()
        };
        let (totals, bytes) = statement(&h, &entries, &options);
        assert_eq!(totals, source_totals(&h, &entries));
        let mut book = Book::open(bytes);
        // 32 EUR entries + opening + closing block over sheets of 9 rows below a header.
        assert_eq!(
            book.names(),
            [
                "Statement",
                "EUR",
                "EUR (2)",
                "EUR (3)",
                "EUR (4)",
                "EUR (5)",
                "USD",
                // 8 USD entries fill the first sheet; the closing block goes on.
                "USD (2)"
            ]
        );
        let mut seen = Vec::new();
        let mut balance = 1000;
        for name in ["EUR", "EUR (2)", "EUR (3)", "EUR (4)", "EUR (5)"] {
            let sheet = book.sheet(name);
            assert!(sheet.height() <= 10, "{name} has {} rows", sheet.height());
            let headers: Vec<String> = (0..7).map(|col| string(&sheet, 0, col)).collect();
            assert_eq!(headers, STATEMENT_COLUMNS, "{name} repeats the header");
            for row in 1..sheet.height() as u32 {
                if let Data::String(id) = at(&sheet, row, 1) {
                    let amount = entries.iter().find(|e| e.id == id).unwrap().amount;
                    balance += amount;
                    assert_eq!(num(&sheet, row, 6), balance as f64 / 100.0, "{id}");
                    seen.push(id);
                }
            }
        }
        let expected: Vec<String> = entries
            .iter()
            .filter(|e| e.currency == c("EUR"))
            .map(|e| e.id.clone())
            .collect();
        assert_eq!(seen, expected, "every EUR entry once, in order");
        let last = book.sheet("EUR (5)");
        let closing = find(&last, 2, "CLOSING_BALANCE");
        assert_eq!(num(&last, closing, 6), balance as f64 / 100.0);
        let front = book.sheet("Statement");
        assert_eq!(
            string(&front, find(&front, 0, "EUR"), 1),
            "EUR, EUR (2), EUR (3), EUR (4), EUR (5)"
        );
    }

    #[test]
    fn amounts_beyond_fifteen_digits_are_exact_text_and_flagged() {
        let h = header(LedgerType::Statement, "2026-03", &[]);
        let limit = 1_000_000_000_000_000_i64;
        let entries = [
            entry(
                "tx_1",
                "2026-03-02T10:00:00Z",
                limit - 1,
                "EUR",
                "largest exact",
            ),
            entry("tx_2", "2026-03-02T11:00:00Z", -(limit - 1), "EUR", "back"),
            entry("tx_3", "2026-03-02T12:00:00Z", limit, "EUR", "too large"),
        ];
        let (totals, bytes) = statement(&h, &entries, &XlsxOptions::default());
        assert_eq!(totals, source_totals(&h, &entries));
        let mut book = Book::open(bytes);
        let eur = book.sheet("EUR");
        assert_eq!(num(&eur, 2, 5), 9_999_999_999_999.99);
        assert_eq!(num(&eur, 3, 6), 0.0);
        assert_eq!(string(&eur, 4, 5), "10000000000000.00");
        assert_eq!(string(&eur, 4, 6), "10000000000000.00");
        let front = book.sheet("Statement");
        let flagged = (0..front.height() as u32).any(
            |r| matches!(at(&front, r, 0), Data::String(s) if s.starts_with("Amounts in red")),
        );
        assert!(flagged, "the first sheet explains the red amounts");
    }

    #[test]
    fn a_running_balance_that_overflows_is_an_error_not_a_panic() {
        let h = header(LedgerType::Statement, "2026-03", &[("EUR", i64::MAX)]);
        let e = entry("tx_1", "2026-03-02T10:00:00Z", 1, "EUR", "");
        let ok = entry("tx_2", "2026-03-02T11:00:00Z", -1, "EUR", "");
        let streaming = XlsxOptions {
            in_memory_entries: 0,
            ..XlsxOptions::default()
        };
        let mut r = XlsxStatement::with_options(&h, Vec::new(), &streaming).unwrap();
        assert!(matches!(r.entry(&e), Err(RenderError::Overflow(_))));
        // The workbook is incomplete from then on.
        assert!(r.entry(&ok).is_err());
        assert!(Box::new(r).finish().is_err());
        // Held back in memory, the entry fails when it is laid out.
        let mut r = XlsxStatement::new(&h, Vec::new()).unwrap();
        r.entry(&e).unwrap();
        assert!(matches!(
            Box::new(r).finish(),
            Err(RenderError::Overflow(_))
        ));
        let h = header(
            LedgerType::Statement,
            "2026-03",
            &[("EUR", i64::MAX), ("EUR", 1)],
        );
        assert!(matches!(
            XlsxStatement::new(&h, Vec::new()),
            Err(RenderError::Overflow(_))
        ));
    }

    #[test]
    fn temporary_files_are_anonymous_and_only_for_large_statements() {
        /// Open files of this process inside `dir` (an unlinked file's link reads
        /// `dir/#123 (deleted)` or `dir/.tmpXXXX (deleted)`).
        fn open_in(dir: &std::path::Path) -> usize {
            std::fs::read_dir("/proc/self/fd")
                .map(|fds| {
                    fds.flatten()
                        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                        .filter(|target| target.starts_with(dir))
                        .count()
                })
                .unwrap_or(0)
        }
        let dir = tempfile::tempdir().unwrap();
        let names = || std::fs::read_dir(dir.path()).unwrap().count();
        let h = header(LedgerType::Statement, "2026-03", &[("EUR", 1)]);
        let entries: Vec<Entry> = (0..2000)
            .map(|i| {
                let currency = if i % 2 == 0 { "EUR" } else { "USD" };
                entry(
                    &format!("tx_{i}"),
                    "2026-03-02T10:00:00Z",
                    1,
                    currency,
                    "secret",
                )
            })
            .collect();
        for in_memory_entries in [1000, 2000] {
            let options = XlsxOptions {
                in_memory_entries,
                temp_dir: Some(dir.path().to_owned()),
                ..XlsxOptions::default()
            };
            let mut r = XlsxStatement::with_options(&h, Vec::new(), &options).unwrap();
            for e in &entries {
                r.entry(e).unwrap();
            }
            assert_eq!(names(), 0, "sheet data never has a name on disk");
            if cfg!(target_os = "linux") {
                let streaming = in_memory_entries < entries.len();
                // One file per currency sheet while streaming; none for a small statement.
                assert_eq!(open_in(dir.path()), if streaming { 2 } else { 0 });
            }
            let (_, bytes) = Box::new(r).finish().unwrap();
            assert_eq!((names(), open_in(dir.path())), (0, 0));
            assert_eq!(Book::open(bytes).names(), ["Statement", "EUR", "USD"]);
        }

        let missing = XlsxOptions {
            in_memory_entries: 0,
            temp_dir: Some(dir.path().join("missing")),
            ..XlsxOptions::default()
        };
        let mut r = XlsxStatement::with_options(&h, Vec::new(), &missing).unwrap();
        assert!(matches!(r.entry(&entries[0]), Err(RenderError::Io(_))));
    }

    /// A writer that fails after `left` bytes.
    struct Failing {
        left: usize,
    }

    impl Write for Failing {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.left < buf.len() {
                return Err(std::io::Error::other("upload failed"));
            }
            self.left -= buf.len();
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failing_output_is_an_error() {
        let h = header(LedgerType::Statement, "2026-03", &[("EUR", 1)]);
        let mut r: Box<dyn Renderer<Failing>> =
            Box::new(XlsxStatement::new(&h, Failing { left: 1000 }).unwrap());
        r.entry(&entry("tx_1", "2026-03-02T10:00:00Z", 1, "EUR", "a"))
            .unwrap();
        assert!(matches!(r.finish(), Err(RenderError::Io(_))));
        let mut h = h;
        h.ledger_type = LedgerType::Summary;
        let mut r: Box<dyn Renderer<Failing>> =
            Box::new(SummaryRenderer::new(&h, Failing { left: 1000 }, write_summary).unwrap());
        r.entry(&entry("tx_1", "2026-03-02T10:00:00Z", 1, "EUR", "a"))
            .unwrap();
        assert!(matches!(r.finish(), Err(RenderError::Io(_))));
    }

    #[test]
    fn instants_excel_cannot_show_become_text() {
        // The end of the year 9999 is 10000-01-01, past Excel's last date.
        let h = header(LedgerType::Statement, "9999-12", &[("EUR", 1)]);
        let (_, bytes) = statement(&h, &[], &XlsxOptions::default());
        let mut book = Book::open(bytes);
        let eur = book.sheet("EUR");
        assert_eq!(datetime(&eur, 1, 0), local("9999-12-01 00:00:00"));
        let closing = find(&eur, 2, "CLOSING_BALANCE");
        assert_eq!(string(&eur, closing, 0), "+10000-01-01T00:00:00+01:00");
    }

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
                !sheet.used_cells().any(|(_, _, v)| matches!(v, Data::String(s) if s.starts_with("tx_") || s.starts_with("ref_"))),
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

    #[test]
    fn the_repeated_hour_of_a_fall_back_shows_its_local_time_twice() {
        // 25 October 2026 in Berlin: 03:00 CEST becomes 02:00 CET.
        let h = header(LedgerType::Statement, "2026-10", &[]);
        let entries = [
            entry("tx_1", "2026-10-25T00:30:00Z", 1, "EUR", "02:30 CEST"),
            entry("tx_2", "2026-10-25T01:30:00Z", 2, "EUR", "02:30 CET"),
            entry("tx_3", "2026-10-25T02:30:00Z", 3, "EUR", "03:30 CET"),
        ];
        let (_, bytes) = statement(&h, &entries, &XlsxOptions::default());
        let eur = Book::open(bytes).sheet("EUR");
        assert_eq!(datetime(&eur, 2, 0), local("2026-10-25 02:30:00"));
        assert_eq!(datetime(&eur, 3, 0), local("2026-10-25 02:30:00"));
        assert_eq!(datetime(&eur, 4, 0), local("2026-10-25 03:30:00"));
        // The sheet keeps the booking order, so the running balance tells them apart.
        assert_eq!([num(&eur, 2, 6), num(&eur, 3, 6)], [0.01, 0.03]);
    }
}
