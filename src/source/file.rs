//! The file source adapter: `{dir}/{merchantId}.json` (one page of the schema) or
//! `{merchantId}.ndjson` (a header line, then one entry per line), streamed from a blocking
//! thread through a bounded channel so memory stays flat whatever the file size.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::validate::{EntryValidator, Header, Page, parse_header, parse_page};
use super::{EntryStream, Source, SourceError, Window};
use crate::domain::{Balance, Entry, Merchant, MerchantId};

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Ndjson,
}

/// What the reader thread sends; the explicit end tells a finished file from a dead thread.
enum Message {
    Batch(Vec<Entry>),
    Failed(SourceError),
    End,
}

impl FileSource {
    /// A source reading `{dir}/{merchantId}.json` or `.ndjson`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
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
        let (opening_tx, opening_rx) = oneshot::channel();
        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
        // Not awaited: the thread outlives this call and feeds the stream. It stops on its
        // own at the end of the window, on an error, or when the consumer goes away.
        let _reader = tokio::task::spawn_blocking(move || {
            let channels = Channels {
                opening: Some(opening_tx),
                batches: tx,
            };
            read_window(&path, format, &id, window, channels);
        });
        let opening_balances = opening_rx.await.map_err(|_| {
            SourceError::Unavailable("the file reader stopped before the window".to_owned())
        })??;
        let entries = futures::stream::unfold((rx, false), |(mut rx, done)| async move {
            if done {
                return None;
            }
            match rx.recv().await {
                Some(Message::Batch(batch)) => Some((Ok(batch), (rx, false))),
                Some(Message::Failed(e)) => Some((Err(e), (rx, true))),
                Some(Message::End) => None,
                // A reader that vanished without `End` must not look like a short ledger.
                None => Some((
                    Err(SourceError::Unavailable(
                        "the file reader stopped unexpectedly".to_owned(),
                    )),
                    (rx, true),
                )),
            }
        })
        .boxed();
        Ok(EntryStream {
            opening_balances,
            entries,
        })
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

/// The merchant header alone: the first line of an NDJSON file, or the parsed `.json` page.
fn read_header(path: &Path, format: Format, id: &MerchantId) -> Result<Header, SourceError> {
    match format {
        Format::Json => read_json(path, id).map(|page| page.header),
        Format::Ndjson => read_ndjson_header(path, id).map(|(header, _)| header),
    }
}

/// The header line and the reader positioned after it.
fn read_ndjson_header(path: &Path, id: &MerchantId) -> Result<(Header, Lines), SourceError> {
    let file = File::open(path).map_err(|e| unavailable(path, &e))?;
    let mut lines = Lines {
        reader: BufReader::with_capacity(1 << 16, file),
        buf: Vec::new(),
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

/// A `.json` file: one page, read and validated whole.
fn read_json(path: &Path, id: &MerchantId) -> Result<Page, SourceError> {
    let bytes = std::fs::read(path).map_err(|e| unavailable(path, &e))?;
    let page = parse_page(&bytes, id, &mut EntryValidator::new())?;
    if page.next_cursor.is_some() {
        return Err(SourceError::Invalid(
            "nextCursor: expected null (a file is a single page)".to_owned(),
        ));
    }
    Ok(page)
}

/// Non-blank lines of an NDJSON file, each at most [`MAX_LINE_BYTES`].
struct Lines {
    reader: BufReader<File>,
    buf: Vec<u8>,
}

impl Lines {
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
) {
    if let Err(e) = stream_window(path, format, id, window, &mut channels) {
        channels.fail(e);
    }
}

/// `Ok` also when the consumer went away: there is nobody to tell.
fn stream_window(
    path: &Path,
    format: Format,
    id: &MerchantId,
    window: Window,
    channels: &mut Channels,
) -> Result<(), SourceError> {
    let mut cutter = match format {
        Format::Ndjson => {
            let (header, mut lines) = read_ndjson_header(path, id)?;
            let mut cutter = Cutter::new(header.opening_balances, window);
            let mut validator = EntryValidator::new();
            loop {
                let index = validator.count();
                let Some(line) = lines.next(path, || format!("entries[{index}]"))? else {
                    break;
                };
                let entry = validator.next_from_json(line)?;
                if !cutter.push(entry, index, channels)? {
                    return Ok(());
                }
            }
            cutter
        }
        Format::Json => {
            let page = read_json(path, id)?;
            let mut cutter = Cutter::new(page.header.opening_balances, window);
            for (index, entry) in page.entries.into_iter().enumerate() {
                if !cutter.push(entry, index as u64, channels)? {
                    return Ok(());
                }
            }
            cutter
        }
    };
    cutter.finish(channels);
    Ok(())
}

/// Folds entries before the window into the opening balances, batches the ones inside it
/// and stops at the first one after it.
struct Cutter {
    opening: Vec<Balance>,
    window: Window,
    batch: Vec<Entry>,
}

impl Cutter {
    fn new(opening: Vec<Balance>, window: Window) -> Self {
        Self {
            opening,
            window,
            batch: Vec::new(),
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
            let balance = match self
                .opening
                .iter_mut()
                .find(|b| b.currency == entry.currency)
            {
                Some(balance) => balance,
                None => {
                    self.opening.push(Balance {
                        currency: entry.currency,
                        amount: 0,
                    });
                    let last = self.opening.len() - 1;
                    &mut self.opening[last]
                }
            };
            balance.amount = balance.amount.checked_add(entry.amount).ok_or_else(|| {
                SourceError::Invalid(format!(
                    "entries[{index}].amount: the {} balance overflows",
                    entry.currency
                ))
            })?;
            if index.is_multiple_of(CANCEL_CHECK_EVERY) {
                return Ok(channels.opening.as_ref().is_some_and(|o| !o.is_closed()));
            }
            return Ok(true);
        }
        if !self.open(channels) {
            return Ok(false);
        }
        if entry.booked_at >= self.window.to {
            self.finish(channels);
            return Ok(false);
        }
        self.batch.push(entry);
        if self.batch.len() >= BATCH {
            let full = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
            return Ok(channels.batches.blocking_send(Message::Batch(full)).is_ok());
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
mod tests {
    use std::path::Path;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use async_trait::async_trait;
    use futures::StreamExt;

    use super::*;
    use crate::domain::{Currency, EntryType};
    use crate::source::fixture::contract::{
        self, Dataset, Harness, at, collect, everything, mid, window,
    };
    use crate::source::fixture::{self, FixtureSpec};

    /// Writes each dataset into a fresh directory in one format.
    struct FileHarness {
        root: tempfile::TempDir,
        next: AtomicU64,
        format: Format,
    }

    impl FileHarness {
        fn new(format: Format) -> Self {
            Self {
                root: tempfile::tempdir().unwrap(),
                next: AtomicU64::new(0),
                format,
            }
        }
    }

    #[async_trait]
    impl Harness for FileHarness {
        async fn source_with(&self, data: &Dataset) -> Box<dyn Source> {
            let dir = self
                .root
                .path()
                .join(self.next.fetch_add(1, Ordering::Relaxed).to_string());
            std::fs::create_dir(&dir).unwrap();
            let (name, text) = match self.format {
                Format::Json => (format!("{}.json", data.merchant_id), data.json()),
                Format::Ndjson => (format!("{}.ndjson", data.merchant_id), data.ndjson()),
            };
            std::fs::write(dir.join(name), text).unwrap();
            Box::new(FileSource::new(dir))
        }
    }

    #[tokio::test]
    async fn contract_ndjson() {
        contract::run_all(&FileHarness::new(Format::Ndjson)).await;
    }

    #[tokio::test]
    async fn contract_json() {
        contract::run_all(&FileHarness::new(Format::Json)).await;
    }

    #[tokio::test]
    async fn error_index_counts_entries_before_the_window() {
        for format in [Format::Ndjson, Format::Json] {
            let h = FileHarness::new(format);
            let mut data =
                Dataset::new("m_idx").entry("a", "2026-01-01T00:00:00Z", "PAYMENT", 1, "EUR");
            data = data.entry("b", "2026-01-02T00:00:00Z", "PAYMENT", 1, "EUR");
            data.entries.push(contract::entry_json(
                "c",
                "2026-03-01T00:00:00Z",
                "FEE",
                "0.5",
                "EUR",
            ));
            let source = h.source_with(&data).await;
            let march = window("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z");
            let got = collect(&*source, &mid("m_idx"), march).await;
            assert_eq!(
                got.err(),
                Some(SourceError::Invalid(
                    "entries[2].amount: expected integer, found a decimal number".into()
                )),
                "{format:?}"
            );
        }
    }

    #[tokio::test]
    async fn ndjson_stops_reading_at_the_window_end() {
        // A broken line after the first entry past the window is never read.
        let h = FileHarness::new(Format::Ndjson);
        let mut data = Dataset::new("m_stop")
            .entry("a", "2026-01-01T00:00:00Z", "PAYMENT", 1, "EUR")
            .entry("b", "2026-02-01T00:00:00Z", "PAYMENT", 2, "EUR");
        data.entries.push("this is not json".to_owned());
        let source = h.source_with(&data).await;
        let jan = window("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z");
        let (_, entries) = collect(&*source, &mid("m_stop"), jan).await.unwrap();
        assert_eq!(entries.len(), 1);
        let got = collect(&*source, &mid("m_stop"), everything()).await;
        match got {
            Err(SourceError::Invalid(m)) => {
                assert!(m.starts_with("entries[2]: invalid JSON"), "{m}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn ndjson_layout_details() {
        let dir = tempfile::tempdir().unwrap();
        let text = "\n{\"merchant\":{\"id\":\"m_l\",\"name\":\"L\",\"timezone\":null},\"openingBalances\":[]}\r\n\r\n   \n\
            {\"id\":\"1\",\"bookedAt\":\"2026-01-01T00:00:00Z\",\"type\":\"ADJUSTMENT\",\"amount\":-5,\"currency\":\"EUR\",\"extra\":{\"x\":[1e999]}}\r\n\n";
        std::fs::write(dir.path().join("m_l.ndjson"), text).unwrap();
        let source = FileSource::new(dir.path());
        assert_eq!(source.merchant(&mid("m_l")).await.unwrap().timezone, None);
        let (_, entries) = collect(&source, &mid("m_l"), everything()).await.unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(
            (entries[0].amount, entries[0].entry_type),
            (-5, EntryType::Adjustment)
        );
        assert_eq!(
            (
                entries[0].description.as_str(),
                entries[0].reference.as_str()
            ),
            ("", "")
        );

        std::fs::write(dir.path().join("m_e.ndjson"), "\n\n").unwrap();
        assert!(matches!(
            source.merchant(&mid("m_e")).await,
            Err(SourceError::Invalid(_))
        ));

        let with_entries =
            r#"{"merchant":{"id":"m_h","name":"H"},"openingBalances":[],"entries":[]}"#;
        std::fs::write(dir.path().join("m_h.ndjson"), with_entries).unwrap();
        let err = source.merchant(&mid("m_h")).await.unwrap_err();
        assert!(err.to_string().starts_with("entries: not allowed"), "{err}");

        std::fs::write(dir.path().join("m_both.json"), "{}").unwrap();
        std::fs::write(dir.path().join("m_both.ndjson"), "{}").unwrap();
        assert!(matches!(
            source.merchant(&mid("m_both")).await,
            Err(SourceError::Invalid(_))
        ));

        let page = r#"{"merchant":{"id":"m_c","name":"C"},"openingBalances":[],"entries":[],"nextCursor":"p2"}"#;
        std::fs::write(dir.path().join("m_c.json"), page).unwrap();
        let err = collect(&source, &mid("m_c"), everything())
            .await
            .unwrap_err();
        assert!(err.to_string().starts_with("nextCursor:"), "{err}");
    }

    #[tokio::test]
    async fn a_line_without_end_is_refused_not_buffered() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = r#"{"merchant":{"id":"m_big","name":"B"},"openingBalances":[]}"#.to_owned();
        text.push('\n');
        text.push_str(&"x".repeat(2 << 20));
        std::fs::write(dir.path().join("m_big.ndjson"), text).unwrap();
        let err = collect(&FileSource::new(dir.path()), &mid("m_big"), everything())
            .await
            .unwrap_err();
        assert_eq!(
            err,
            SourceError::Invalid("entries[0]: line longer than 1048576 bytes".into())
        );
    }

    #[tokio::test]
    async fn ready_and_io_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(FileSource::new(dir.path()).ready().await, Ok(()));
        let missing = FileSource::new(dir.path().join("nope"));
        assert!(matches!(
            missing.ready().await,
            Err(SourceError::Unavailable(_))
        ));
        // A directory where the file should be cannot be read: not a merchant file.
        std::fs::create_dir(dir.path().join("m_dir.ndjson")).unwrap();
        let source = FileSource::new(dir.path());
        assert!(matches!(
            source.merchant(&mid("m_dir")).await,
            Err(SourceError::UnknownMerchant(_))
        ));
    }

    fn spec(id: &str, entries: u64) -> FixtureSpec<'_> {
        FixtureSpec {
            merchant_id: id,
            name: "Equivalence AG",
            timezone: Some("Europe/Berlin"),
            currencies: vec![("EUR", 125_000), ("USD", -300), ("JPY", 0), ("KWD", 1)],
            entries,
            start: at("2026-01-01T00:00:00Z"),
            step_seconds: 3_000,
            seed: 7,
        }
    }

    #[tokio::test]
    async fn json_and_ndjson_read_the_same() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let spec = spec("m_eq", 3_000);
        fixture::write_json(&a.path().join("m_eq.json"), &spec).unwrap();
        fixture::write_ndjson(&b.path().join("m_eq.ndjson"), &spec).unwrap();
        let (json, ndjson) = (FileSource::new(a.path()), FileSource::new(b.path()));
        assert_eq!(
            json.merchant(&mid("m_eq")).await,
            ndjson.merchant(&mid("m_eq")).await
        );
        let expected: Vec<Entry> = fixture::generate(&spec).unwrap().collect();
        for w in [
            everything(),
            window("2026-02-01T00:00:00Z", "2026-02-08T00:00:00Z"),
        ] {
            let x = collect(&json, &mid("m_eq"), w).await.unwrap();
            let y = collect(&ndjson, &mid("m_eq"), w).await.unwrap();
            assert_eq!(x, y);
            let inside: Vec<&Entry> = expected
                .iter()
                .filter(|e| e.booked_at >= w.from && e.booked_at < w.to)
                .collect();
            assert_eq!(x.1.iter().collect::<Vec<_>>(), inside);
        }
    }

    /// Streams `count` generated entries, checking batches stay bounded and totals add up.
    /// Returns the time to write the file and the time to stream it.
    async fn stream_big(count: u64) -> (Duration, Duration) {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = spec("m_big", count);
        spec.timezone = None;
        spec.step_seconds = 30;
        let started = Instant::now();
        fixture::write_ndjson(&dir.path().join("m_big.ndjson"), &spec).unwrap();
        let written = started.elapsed();
        let source = FileSource::new(dir.path());
        let started = Instant::now();
        let stream = source.entries(&mid("m_big"), everything()).await.unwrap();
        let mut batches = stream.entries;
        let (mut n, mut sum, mut largest) = (0u64, 0i128, 0usize);
        while let Some(batch) = batches.next().await {
            let batch = batch.unwrap();
            largest = largest.max(batch.len());
            n += batch.len() as u64;
            sum += batch.iter().map(|e| i128::from(e.amount)).sum::<i128>();
        }
        let elapsed = started.elapsed();
        assert_eq!(n, count);
        assert!(largest <= BATCH);
        let expected: i128 = fixture::generate(&spec)
            .unwrap()
            .map(|e| i128::from(e.amount))
            .sum();
        assert_eq!(sum, expected);
        (written, elapsed)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn streams_200k_entries_in_bounded_batches() {
        stream_big(200_000).await;
    }

    /// `cargo test --release -- --ignored --nocapture big_file_speed`
    #[tokio::test(flavor = "multi_thread")]
    #[ignore = "benchmark: run in release"]
    async fn big_file_speed() {
        let (written, streamed) = stream_big(1_000_000).await;
        println!(
            "1,000,000 entries: written in {written:?}, parsed + validated + streamed in {streamed:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn dropping_the_stream_stops_the_reader() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec("m_drop", 200_000);
        let path = dir.path().join("m_drop.ndjson");
        fixture::write_ndjson(&path, &spec).unwrap();
        let (header, _) = read_ndjson_header(&path, &mid("m_drop")).unwrap();
        let (opening_tx, opening_rx) = oneshot::channel();
        let (tx, mut rx) = mpsc::channel(CHANNEL_BATCHES);
        let reader = tokio::task::spawn_blocking(move || {
            let channels = Channels {
                opening: Some(opening_tx),
                batches: tx,
            };
            read_window(
                &path,
                Format::Ndjson,
                &mid("m_drop"),
                everything(),
                channels,
            );
        });
        assert_eq!(opening_rx.await.unwrap().unwrap(), header.opening_balances);
        assert!(matches!(rx.recv().await, Some(Message::Batch(_))));
        drop(rx);
        tokio::time::timeout(Duration::from_secs(2), reader)
            .await
            .unwrap()
            .unwrap();

        // Through the port: dropping the `EntryStream` after one batch is enough.
        let source = FileSource::new(dir.path());
        let mut stream = source.entries(&mid("m_drop"), everything()).await.unwrap();
        assert!(stream.entries.next().await.is_some());
        drop(stream);
    }

    #[tokio::test]
    async fn dropping_during_the_fold_stops_the_reader() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec("m_fold", 50_000);
        let path = dir.path().join("m_fold.ndjson");
        fixture::write_ndjson(&path, &spec).unwrap();
        let (opening_tx, opening_rx) = oneshot::channel();
        let (tx, _rx) = mpsc::channel(CHANNEL_BATCHES);
        drop(opening_rx);
        let late = window("2099-01-01T00:00:00Z", "2099-02-01T00:00:00Z");
        let started = Instant::now();
        let channels = Channels {
            opening: Some(opening_tx),
            batches: tx,
        };
        let ok = tokio::task::spawn_blocking(move || {
            let mut channels = channels;
            stream_window(&path, Format::Ndjson, &mid("m_fold"), late, &mut channels).is_ok()
        });
        assert!(ok.await.unwrap());
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    fn examples_dir() -> &'static Path {
        Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../main/examples/source"
        ))
    }

    #[tokio::test]
    async fn shipped_examples_parse() {
        let dir = if Path::new("examples/source").is_dir() {
            Path::new("examples/source")
        } else {
            examples_dir()
        };
        let source = FileSource::new(dir);
        for (id, entries, currencies) in [
            ("m_acme", 200, 1),
            ("m_tokyo", 500, 2),
            ("m_global", 5_000, 5),
        ] {
            let merchant = source.merchant(&mid(id)).await.unwrap();
            assert_eq!(merchant.id, mid(id));
            let (opening, all) = collect(&source, &mid(id), everything()).await.unwrap();
            assert_eq!(all.len(), entries, "{id}");
            assert_eq!(opening.len(), currencies, "{id}");
            for t in EntryType::ALL {
                assert!(all.iter().any(|e| e.entry_type == t), "{id} lacks {t:?}");
            }
        }
        let acme = source.merchant(&mid("m_acme")).await.unwrap();
        assert_eq!(acme.name, "Acme GmbH");
        assert_eq!(acme.timezone.map(|t| t.name()), Some("Europe/Berlin"));
        let (opening, _) = collect(&source, &mid("m_acme"), everything())
            .await
            .unwrap();
        assert_eq!(opening[0].amount, 125_000);
        assert_eq!(opening[0].currency, Currency::parse("EUR").unwrap());
        assert_eq!(
            source.merchant(&mid("m_global")).await.unwrap().timezone,
            None
        );
        let broken = collect(&source, &mid("m_broken"), everything())
            .await
            .unwrap_err();
        match broken {
            SourceError::Invalid(m) => assert!(m.starts_with("entries[2].amount: "), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
