//! The file source adapter: `{dir}/{merchantId}.json` (one page of the schema, read as it
//! streams by [`super::page`]) or `{merchantId}.ndjson` (a header line, then one entry per
//! line), read on a blocking thread and handed over through a bounded channel so memory
//! stays flat whatever the file size. The merchants it lists are the files' stems
//! ([`listing`]).

mod index;
mod listing;

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use super::batches::{Message, receive};
use super::page::{Event, PageParser, PageReads, Progress, Sink};
use super::validate::{EntryValidator, Header, parse_header};
use super::{EntryStream, MerchantPage, Source, SourceError, Window};
use crate::domain::{Balance, Currency, Entry, Merchant, MerchantId};
use index::{FileKey, Indexes};

/// Entries per batch sent to the consumer.
const BATCH: usize = 1024;
/// Batches in flight between the reader thread and the consumer: with [`BATCH`] this bounds
/// the buffered entries to a few thousand however large the file.
const CHANNEL_BATCHES: usize = 4;
/// Longest NDJSON line accepted; a file without newlines must not be read into memory whole.
const MAX_LINE_BYTES: u64 = 1 << 20;
/// How often (in entries) the fold before the window checks whether anyone still waits.
const CANCEL_CHECK_EVERY: u64 = 4096;

/// Reads merchants from a directory of `.json` / `.ndjson` files.
#[derive(Debug, Clone)]
pub struct FileSource {
    dir: PathBuf,
    /// Checkpoints into the long NDJSON files read so far ([`index`]).
    indexes: Arc<Indexes>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Ndjson,
}

impl FileSource {
    /// A source reading `{dir}/{merchantId}.json` or `.ndjson`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            indexes: Arc::default(),
        }
    }

    /// The directory read.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The merchant's file. Both spellings present is refused rather than guessed.
    async fn locate(&self, id: &MerchantId) -> Result<(PathBuf, Format), SourceError> {
        // Only the file name is built from the id (which is `[A-Za-z0-9_-]` already), so the
        // path cannot leave `dir`.
        let json = self.dir.join(format!("{id}.json"));
        let ndjson = self.dir.join(format!("{id}.ndjson"));
        match (exists(&json).await?, exists(&ndjson).await?) {
            (true, true) => Err(SourceError::Invalid(format!(
                "both {id}.json and {id}.ndjson exist; keep one"
            ))),
            (true, false) => Ok((json, Format::Json)),
            (false, true) => Ok((ndjson, Format::Ndjson)),
            (false, false) => Err(SourceError::UnknownMerchant(id.to_string())),
        }
    }
}

async fn exists(path: &Path) -> Result<bool, SourceError> {
    match tokio::fs::metadata(path).await {
        Ok(meta) => Ok(meta.is_file()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(unavailable(path, &e)),
    }
}

fn unavailable(path: &Path, e: &std::io::Error) -> SourceError {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    SourceError::Unavailable(format!("{name}: {e}"))
}

#[async_trait]
impl Source for FileSource {
    async fn merchant(&self, id: &MerchantId) -> Result<Merchant, SourceError> {
        let (path, format) = self.locate(id).await?;
        let id = id.clone();
        blocking(move || read_header(&path, format, &id).map(|header| header.merchant)).await
    }

    async fn entries(&self, id: &MerchantId, window: Window) -> Result<EntryStream, SourceError> {
        let (path, format) = self.locate(id).await?;
        let id = id.clone();
        let indexes = self.indexes.clone();
        let (opening_tx, opening_rx) = oneshot::channel();
        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
        // Not awaited: the thread outlives this call and feeds the stream. It stops on its
        // own at the end of the window, on an error, or when the consumer goes away.
        let _reader = tokio::task::spawn_blocking(move || {
            let channels = Channels {
                opening: Some(opening_tx),
                batches: tx,
            };
            read_window(&path, format, &id, window, channels, &indexes);
        });
        let opening_balances = opening_rx.await.map_err(|_| {
            SourceError::Unavailable("the file reader stopped before the window".to_owned())
        })??;
        let entries = receive(rx, "the file reader stopped unexpectedly");
        Ok(EntryStream {
            opening_balances,
            entries,
        })
    }

    async fn list_merchants(
        &self,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<MerchantPage, SourceError> {
        self.merchant_page(cursor, limit).await
    }

    async fn ready(&self) -> Result<(), SourceError> {
        match tokio::fs::read_dir(&self.dir).await {
            Ok(_) => Ok(()),
            Err(e) => Err(SourceError::Unavailable(format!(
                "source directory {}: {e}",
                self.dir.display()
            ))),
        }
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, SourceError> + Send + 'static,
) -> Result<T, SourceError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| SourceError::Unavailable(format!("file reader failed: {e}")))?
}

/// The merchant header alone: the first line of an NDJSON file, or the `.json` page read up
/// to its header.
fn read_header(path: &Path, format: Format, id: &MerchantId) -> Result<Header, SourceError> {
    match format {
        Format::Json => read_json_header(path, id),
        Format::Ndjson => read_ndjson_header(path, id).map(|(header, _)| header),
    }
}

/// A `.json` page read until its header is known (its entries crossed, if they come first).
fn read_json_header(path: &Path, id: &MerchantId) -> Result<Header, SourceError> {
    let mut file = File::open(path).map_err(|e| unavailable(path, &e))?;
    let mut parser = PageParser::new(id.clone());
    loop {
        let more = match parser.next()? {
            Some(Event::Header(header)) => return Ok(header),
            Some(Event::Entry(entry)) => !entry.skip()?,
            // A page that ends without its header is refused by the parser.
            Some(Event::End { .. }) | None => true,
        };
        if more {
            parser.fill(&mut file).map_err(|e| unavailable(path, &e))?;
        }
    }
}

/// The header line and the reader positioned after it.
fn read_ndjson_header(path: &Path, id: &MerchantId) -> Result<(Header, Lines), SourceError> {
    let file = File::open(path).map_err(|e| unavailable(path, &e))?;
    let mut lines = Lines {
        reader: BufReader::with_capacity(1 << 16, file),
        buf: Vec::new(),
        position: 0,
    };
    let header = match lines.next(path, || "header".to_owned())? {
        Some(line) => parse_header(line, id)?,
        None => {
            return Err(SourceError::Invalid(
                "merchant: missing (the file is empty; expected a header line)".to_owned(),
            ));
        }
    };
    Ok((header, lines))
}

/// Non-blank lines of an NDJSON file, each at most [`MAX_LINE_BYTES`].
struct Lines {
    reader: BufReader<File>,
    buf: Vec<u8>,
    /// Byte offset of the next line.
    position: u64,
}

impl Lines {
    /// Byte offset of the next line.
    fn position(&self) -> u64 {
        self.position
    }

    /// Goes on reading at byte `offset`, the start of a line.
    fn seek(&mut self, path: &Path, offset: u64) -> Result<(), SourceError> {
        self.reader
            .seek(SeekFrom::Start(offset))
            .map_err(|e| unavailable(path, &e))?;
        self.position = offset;
        Ok(())
    }

    /// The next non-blank line; `what` names it in a too-long error.
    fn next(
        &mut self,
        path: &Path,
        what: impl Fn() -> String,
    ) -> Result<Option<&[u8]>, SourceError> {
        loop {
            self.buf.clear();
            let read = (&mut self.reader)
                .take(MAX_LINE_BYTES + 1)
                .read_until(b'\n', &mut self.buf)
                .map_err(|e| unavailable(path, &e))?;
            self.position += read as u64;
            if read == 0 {
                return Ok(None);
            }
            if self.buf.len() as u64 > MAX_LINE_BYTES {
                return Err(SourceError::Invalid(format!(
                    "{}: line longer than {MAX_LINE_BYTES} bytes",
                    what()
                )));
            }
            if !self.buf.iter().all(u8::is_ascii_whitespace) {
                return Ok(Some(&self.buf));
            }
        }
    }
}

/// Ends of the reader thread.
struct Channels {
    /// Taken once the opening balances are known.
    opening: Option<oneshot::Sender<Result<Vec<Balance>, SourceError>>>,
    batches: mpsc::Sender<Message>,
}

impl Channels {
    /// Reports `e` wherever the consumer is waiting now.
    fn fail(&mut self, e: SourceError) {
        match self.opening.take() {
            Some(opening) => {
                let _ = opening.send(Err(e));
            }
            None => {
                let _ = self.batches.blocking_send(Message::Failed(e));
            }
        }
    }
}

fn read_window(
    path: &Path,
    format: Format,
    id: &MerchantId,
    window: Window,
    mut channels: Channels,
    indexes: &Indexes,
) {
    let folded = match stream_window(path, format, id, window, &mut channels, indexes) {
        Ok(folded) => folded,
        Err(e) => {
            channels.fail(e);
            return;
        }
    };
    // The window is delivered. If it started late in a long NDJSON file not indexed yet,
    // the file is read through now, on this thread, so the next windows of this file start
    // near where they begin. A window near the start (a whole history, say) costs no
    // folding that an index would save, and a second pass over it would only slow the job.
    drop(channels);
    if format == Format::Ndjson
        && folded >= index::WORTH_INDEXING
        && let Ok(key) = File::open(path).and_then(|f| FileKey::of(&f))
        && indexes.claim_build(path, &key)
    {
        let built = index::build(path, id, &key);
        indexes.finish_build(path, key, built);
    }
}

/// `Ok` also when the consumer went away: there is nobody to tell. The entries folded into
/// the opening balances, read before the window.
fn stream_window(
    path: &Path,
    format: Format,
    id: &MerchantId,
    window: Window,
    channels: &mut Channels,
    indexes: &Indexes,
) -> Result<u64, SourceError> {
    let mut validator = EntryValidator::new();
    let read = match format {
        Format::Ndjson => read_ndjson(path, id, window, &mut validator, channels, indexes),
        Format::Json => read_json(path, id, window, &mut validator, channels),
    };
    let mut cutter = read.map_err(|e| validator.first_error(e))?;
    // Read to the end or past the window: valid once the ids still pending are checked too.
    validator.finish()?;
    cutter.finish(channels);
    Ok(cutter.folded)
}

/// Streams an `.ndjson` file into a [`Cutter`], until its end, the window's end, or nobody
/// waits any more; from the last checkpoint before the window where the file is indexed.
fn read_ndjson(
    path: &Path,
    id: &MerchantId,
    window: Window,
    validator: &mut EntryValidator,
    channels: &mut Channels,
    indexes: &Indexes,
) -> Result<Cutter, SourceError> {
    let (header, mut lines) = read_ndjson_header(path, id)?;
    let start = FileKey::of(lines.reader.get_ref())
        .ok()
        .and_then(|key| indexes.start_before(path, &key, window.from));
    let mut cutter = match start {
        Some(checkpoint) => {
            lines.seek(path, checkpoint.offset)?;
            *validator =
                EntryValidator::resume(checkpoint.index, checkpoint.last_at, &checkpoint.last_id);
            Cutter::new(checkpoint.balances, window)
        }
        None => Cutter::new(header.opening_balances, window),
    };
    loop {
        let index = validator.count();
        let Some(line) = lines.next(path, || format!("entries[{index}]"))? else {
            return Ok(cutter);
        };
        // An entry before the window only moves a balance: its text is never copied out.
        let more = validator.next_from_json_with(line, |checked| {
            if checked.booked_at < window.from {
                cutter.fold(checked.currency, checked.amount(), index, channels)
            } else {
                cutter.push(checked.entry(), index, channels)
            }
        })??;
        if !more {
            return Ok(cutter);
        }
    }
}

/// Streams a `.json` page into a [`Cutter`], until its end, the window's end, or nobody
/// waits any more. A page whose entries come before its header is read twice (see
/// [`super::page`]).
fn read_json(
    path: &Path,
    id: &MerchantId,
    window: Window,
    validator: &mut EntryValidator,
    channels: &mut Channels,
) -> Result<Cutter, SourceError> {
    let mut sink = FileSink {
        window,
        cutter: None,
        channels,
    };
    let mut reads = PageReads::default();
    loop {
        let mut file = File::open(path).map_err(|e| unavailable(path, &e))?;
        let mut parser = PageParser::new(id.clone());
        reads.begin();
        let again = loop {
            match reads.drain(&mut parser, validator, &mut sink)? {
                Progress::More => parser.fill(&mut file).map_err(|e| unavailable(path, &e))?,
                Progress::Stop => break false,
                Progress::End { next_cursor, again } => {
                    if next_cursor.is_some() {
                        return Err(SourceError::Invalid(
                            "nextCursor: expected null (a file is a single page)".to_owned(),
                        ));
                    }
                    break again;
                }
            }
        };
        if !again {
            // A page read to its end or stopped in its entries had its header.
            return sink.cutter.ok_or_else(|| {
                SourceError::Invalid("merchant: missing, expected object".to_owned())
            });
        }
    }
}

/// Where a `.json` page's entries go: the [`Cutter`], made once the header is known.
struct FileSink<'c> {
    window: Window,
    cutter: Option<Cutter>,
    channels: &'c mut Channels,
}

impl Sink for FileSink<'_> {
    fn header(&mut self, header: Header) -> Result<bool, SourceError> {
        self.cutter = Some(Cutter::new(header.opening_balances, self.window));
        Ok(true)
    }

    fn entry(&mut self, entry: Entry, index: u64) -> Result<bool, SourceError> {
        match &mut self.cutter {
            Some(cutter) => cutter.push(entry, index, self.channels),
            // The page's reads hand entries over only after the header.
            None => Err(SourceError::Unavailable(
                "an entry came before the header was known".to_owned(),
            )),
        }
    }
}

/// Folds entries before the window into the opening balances, batches the ones inside it
/// and stops at the first one after it.
struct Cutter {
    opening: Vec<Balance>,
    window: Window,
    batch: Vec<Entry>,
    /// Entries folded into the opening balances so far.
    folded: u64,
}

impl Cutter {
    fn new(opening: Vec<Balance>, window: Window) -> Self {
        Self {
            opening,
            window,
            batch: Vec::new(),
            folded: 0,
        }
    }

    /// `false` when reading should stop (window ended, or the consumer is gone).
    fn push(
        &mut self,
        entry: Entry,
        index: u64,
        channels: &mut Channels,
    ) -> Result<bool, SourceError> {
        if entry.booked_at < self.window.from {
            return self.fold(entry.currency, entry.amount, index, channels);
        }
        if !self.open(channels) {
            return Ok(false);
        }
        if entry.booked_at >= self.window.to {
            // The caller finishes, once the stream so far is known valid.
            return Ok(false);
        }
        self.batch.push(entry);
        if self.batch.len() >= BATCH {
            let full = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
            return Ok(channels.batches.blocking_send(Message::Batch(full)).is_ok());
        }
        Ok(true)
    }

    /// Folds entry `index`, booked before the window, into the opening balances. `false`
    /// when reading should stop (nobody waits any more).
    fn fold(
        &mut self,
        currency: Currency,
        amount: i64,
        index: u64,
        channels: &mut Channels,
    ) -> Result<bool, SourceError> {
        index::fold_into(&mut self.opening, currency, amount, index)?;
        self.folded += 1;
        if index.is_multiple_of(CANCEL_CHECK_EVERY) {
            return Ok(channels.opening.as_ref().is_some_and(|o| !o.is_closed()));
        }
        Ok(true)
    }

    /// Hands out the opening balances once; `false` when nobody waits for them any more.
    fn open(&mut self, channels: &mut Channels) -> bool {
        match channels.opening.take() {
            Some(opening) => opening.send(Ok(std::mem::take(&mut self.opening))).is_ok(),
            None => true,
        }
    }

    fn finish(&mut self, channels: &mut Channels) {
        if !self.open(channels) {
            return;
        }
        if !self.batch.is_empty() {
            let last = std::mem::take(&mut self.batch);
            if channels
                .batches
                .blocking_send(Message::Batch(last))
                .is_err()
            {
                return;
            }
        }
        let _ = channels.batches.blocking_send(Message::End);
    }
}

#[cfg(test)]
mod tests;
