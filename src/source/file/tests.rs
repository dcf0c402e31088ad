//! Tests of the file source: the contract in both formats, then streaming, cancellation and
//! limits on large files.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;

use super::*;
use crate::domain::{Currency, EntryType};
use crate::source::contract::{self, Dataset, Harness, at, collect, everything, mid, window};
use crate::source::fixture::{self, FixtureSpec};

mod listing;

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

    /// A fresh directory holding `data`, one file each.
    fn dir_with(&self, data: &[Dataset]) -> PathBuf {
        let dir = self
            .root
            .path()
            .join(self.next.fetch_add(1, Ordering::Relaxed).to_string());
        std::fs::create_dir(&dir).unwrap();
        for data in data {
            let (name, text) = match self.format {
                Format::Json => (format!("{}.json", data.merchant_id), data.json()),
                Format::Ndjson => (format!("{}.ndjson", data.merchant_id), data.ndjson()),
            };
            std::fs::write(dir.join(name), text).unwrap();
        }
        dir
    }
}

#[async_trait]
impl Harness for FileHarness {
    async fn source_with(&self, data: &Dataset) -> Box<dyn Source> {
        Box::new(FileSource::new(self.dir_with(std::slice::from_ref(data))))
    }

    async fn source_with_all(&self, data: &[Dataset]) -> Box<dyn Source> {
        Box::new(FileSource::new(self.dir_with(data)))
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

    let with_entries = r#"{"merchant":{"id":"m_h","name":"H"},"openingBalances":[],"entries":[]}"#;
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
            &Indexes::default(),
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
        stream_window(
            &path,
            Format::Ndjson,
            &mid("m_fold"),
            late,
            &mut channels,
            &Indexes::default(),
        )
        .is_ok()
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

/// Waits until `source` has indexed `n` files (the index is built after a window is read).
async fn indexed(source: &FileSource, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while source.indexes.ready() != n {
        assert!(Instant::now() < deadline, "{n} file(s) not indexed in time");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Windows of one day at several points of a long file.
fn days_of(entries: &[Entry]) -> Vec<Window> {
    [0, 1, 511, 512, 513, 1500, 4000, entries.len() - 1]
        .into_iter()
        .map(|i| {
            let day = entries[i].booked_at.date_naive();
            let from = day.and_hms_opt(0, 0, 0).unwrap().and_utc();
            Window {
                from,
                to: from + chrono::Duration::days(1),
            }
        })
        .collect()
}

#[tokio::test]
async fn an_indexed_file_reads_every_window_as_a_read_from_its_start_does() {
    let dir = tempfile::tempdir().unwrap();
    let spec = FixtureSpec {
        currencies: vec![("EUR", 1_000), ("USD", -50)],
        ..FixtureSpec::new("m_long", 5_000)
    };
    fixture::write_ndjson(&dir.path().join("m_long.ndjson"), &spec).unwrap();
    let id = mid("m_long");
    let indexed_source = FileSource::new(dir.path());
    let (_, all) = collect(&indexed_source, &id, everything()).await.unwrap();
    // A read from the start folds nothing: no index. A late window does, and makes it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(indexed_source.indexes.ready(), 0);
    collect(&indexed_source, &id, *days_of(&all).last().unwrap())
        .await
        .unwrap();
    indexed(&indexed_source, 1).await;
    for w in days_of(&all) {
        // A source of its own has no index: it reads the file from its start.
        let plain = collect(&FileSource::new(dir.path()), &id, w).await.unwrap();
        let fast = collect(&indexed_source, &id, w).await.unwrap();
        assert!(!plain.1.is_empty(), "{w:?}");
        assert_eq!(fast, plain, "{w:?}");
    }
}

#[tokio::test]
async fn a_changed_file_is_read_from_its_start_and_indexed_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m_edit.ndjson");
    fixture::write_ndjson(&path, &FixtureSpec::new("m_edit", 5_000)).unwrap();
    let id = mid("m_edit");
    let source = FileSource::new(dir.path());
    let (_, all) = collect(&source, &id, everything()).await.unwrap();
    let late = *days_of(&all).last().unwrap();
    collect(&source, &id, late).await.unwrap();
    indexed(&source, 1).await;
    let before = collect(&source, &id, late).await.unwrap();

    // The opening balance in the header changes (same length): every balance moves.
    let text = std::fs::read_to_string(&path).unwrap();
    let (header, rest) = text.split_once('\n').unwrap();
    assert!(header.contains("\"amount\":0"), "{header}");
    std::fs::write(
        &path,
        format!("{}\n{rest}", header.replace("\"amount\":0", "\"amount\":7")),
    )
    .unwrap();
    let after = collect(&source, &id, late).await.unwrap();
    assert_eq!(after.1, before.1);
    assert_eq!(after.0[0].amount, before.0[0].amount + 7);
    assert_eq!(
        after,
        collect(&FileSource::new(dir.path()), &id, late)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn a_file_with_a_bad_entry_is_not_indexed_and_reports_it_where_it_did() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m_bad.ndjson");
    fixture::write_ndjson(&path, &FixtureSpec::new("m_bad", 5_000)).unwrap();
    let id = mid("m_bad");
    let (_, all) = collect(&FileSource::new(dir.path()), &id, everything())
        .await
        .unwrap();
    // Entry 2000 repeats entry 10's id.
    let mut lines: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let (first, repeated) = (&all[10].id, &all[2000].id);
    lines[2001] = lines[2001].replace(repeated.as_str(), first.as_str());
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();

    let source = FileSource::new(dir.path());
    let early = days_of(&all)[0];
    // A window before the repeat reads as before; reading the file through finds the
    // repeat, so no index is made.
    assert!(collect(&source, &id, early).await.is_ok());
    let late = *days_of(&all).last().unwrap();
    for _ in 0..2 {
        let e = collect(&source, &id, late).await.unwrap_err();
        assert!(
            e.to_string()
                .contains("entries[2000].id: repeated entry id"),
            "{e}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(source.indexes.ready(), 0);
}
