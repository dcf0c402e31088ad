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
//! At [`Renderer::finish`](crate::render::Renderer::finish) the workbook is zipped straight
//! into `W` (`save_to_writer`, a streaming zip with data descriptors that needs no `Seek`),
//! reading each temporary file back once: the compressed workbook is never held in memory
//! either. Deflate level 1 is used: for 100,000 entries it zips in 65 ms to 8.2 MB, where
//! level 3 takes 140 ms for 5.7 MB and the default level 6 460 ms for 5.3 MB.
//!
//! The writer `expect`s on a failed write to its temporary file (a full disk); that panic
//! is caught at this boundary and reported as [`RenderError::Io`], and the renderer refuses
//! further calls.

mod cells;
mod front;
mod statement;
mod summary;
#[cfg(test)]
mod tests;

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use rust_xlsxwriter::{Workbook, XlsxError};

pub use statement::XlsxStatement;
pub use summary::write_summary;

use super::{DocumentHeader, RenderError};

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

/// A workbook zipped at [`ZIP_LEVEL`] with `header`'s document properties.
fn new_workbook(header: &DocumentHeader) -> Workbook {
    let mut workbook = Workbook::new();
    workbook.set_zip_compression_level(ZIP_LEVEL);
    workbook.set_properties(&front::properties(header));
    workbook
}

/// Zips `workbook` straight into `out` (through a 64 KiB buffer) and flushes it.
fn save<W: Write + Send>(workbook: &mut Workbook, out: &mut W) -> Result<(), RenderError> {
    let mut buffered = BufWriter::with_capacity(64 * 1024, &mut *out);
    workbook.save_to_writer(&mut buffered)?;
    buffered.flush()?;
    drop(buffered);
    out.flush()?;
    Ok(())
}
