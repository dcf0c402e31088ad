//! The file source's merchant list: which directory entries are merchants, cursors, a missing
//! directory, and a directory of many files.

use std::os::unix::ffi::OsStrExt;

use super::*;
use crate::source::MerchantPage;
use crate::source::contract::list_all;

fn touch(dir: &Path, name: impl AsRef<std::ffi::OsStr>) {
    std::fs::write(dir.join(name.as_ref()), "{}").unwrap();
}

fn ids(page: &MerchantPage) -> Vec<&str> {
    page.merchants.iter().map(MerchantId::as_str).collect()
}

#[tokio::test]
async fn only_merchant_files_are_listed_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let longest = "x".repeat(64);
    for name in [
        "m_a.json",
        "m_b.ndjson",
        // Both spellings: one merchant (reading it is refused, listing it is not).
        "m_both.json",
        "m_both.ndjson",
        &format!("{longest}.ndjson"),
        // Not merchant files.
        "README.md",
        "m_c.txt",
        "m_d.json.bak",
        "m_e.JSON",
        "m_f.jsonl",
        "m_g",
        ".json",
        ".ndjson",
        ".hidden.json",
        "m 1.json",
        "m.1.json",
        "é.json",
        &format!("{longest}x.json"),
    ] {
        touch(d, name);
    }
    // Not valid UTF-8.
    touch(d, std::ffi::OsStr::from_bytes(b"m_\xff.json"));
    // Directories, whatever their names.
    std::fs::create_dir(d.join("m_dir.json")).unwrap();
    std::fs::create_dir(d.join("m_sub")).unwrap();
    touch(&d.join("m_sub"), "m_nested.json");
    // A link to a file is read through, so it is listed; a dangling one or one to a
    // directory is not.
    std::os::unix::fs::symlink(d.join("m_a.json"), d.join("m_link.json")).unwrap();
    std::os::unix::fs::symlink(d.join("m_gone.json"), d.join("m_dangling.json")).unwrap();
    std::os::unix::fs::symlink(d.join("m_sub"), d.join("m_ldir.ndjson")).unwrap();

    let source = FileSource::new(d);
    let expected = ["m_a", "m_b", "m_both", "m_link", longest.as_str()];
    for limit in [1, 2, 5, 100] {
        let (listed, _) = list_all(&source, limit, 10).await.unwrap();
        assert_eq!(listed, expected, "limit {limit}");
    }
    let page = source.list_merchants(None, 100).await.unwrap();
    assert_eq!(ids(&page), expected);
    assert_eq!(page.next_cursor, None);
    // Each page ends at its last id.
    let page = source.list_merchants(None, 2).await.unwrap();
    assert_eq!(ids(&page), ["m_a", "m_b"]);
    assert_eq!(page.next_cursor.as_deref(), Some("m_b"));
    let page = source.list_merchants(Some("m_b"), 2).await.unwrap();
    assert_eq!(ids(&page), ["m_both", "m_link"]);
    assert_eq!(page.next_cursor.as_deref(), Some("m_link"));
    // A limit of 0 is taken as 1.
    let page = source.list_merchants(None, 0).await.unwrap();
    assert_eq!(ids(&page), ["m_a"]);
    assert_eq!(page.next_cursor.as_deref(), Some("m_a"));
}

#[tokio::test]
async fn a_merchant_in_both_formats_at_a_page_boundary_is_listed_once() {
    let dir = tempfile::tempdir().unwrap();
    let expected: Vec<String> = (0..40).map(|i| format!("m_{i:02}")).collect();
    for id in &expected {
        touch(dir.path(), format!("{id}.json"));
        touch(dir.path(), format!("{id}.ndjson"));
    }
    let source = FileSource::new(dir.path());
    for limit in [1, 3, 39, 40, 41] {
        let (listed, sizes) = list_all(&source, limit, 50).await.unwrap();
        assert_eq!(listed, expected, "limit {limit}");
        assert_eq!(sizes.len(), 40_usize.div_ceil(limit.min(40) as usize));
    }
}

#[tokio::test]
async fn the_cursor_must_be_a_merchant_id_and_need_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    for id in ["m_a", "m_c", "m_e"] {
        touch(dir.path(), format!("{id}.json"));
    }
    let source = FileSource::new(dir.path());
    for bad in ["", "../m_a", "m 1", "m_a.json", &"x".repeat(65)] {
        assert_eq!(
            source.list_merchants(Some(bad), 10).await,
            Err(SourceError::Invalid(
                "cursor: not a cursor of the file source (the last merchant id of a page)".into()
            )),
            "{bad:?}"
        );
    }
    // A merchant removed since its page was listed: the list goes on after it.
    let page = source.list_merchants(Some("m_b"), 10).await.unwrap();
    assert_eq!(ids(&page), ["m_c", "m_e"]);
    assert_eq!(page.next_cursor, None);
    // Before every id.
    let page = source.list_merchants(Some("A"), 2).await.unwrap();
    assert_eq!(ids(&page), ["m_a", "m_c"]);
    assert_eq!(page.next_cursor.as_deref(), Some("m_c"));
}

#[tokio::test]
async fn a_missing_or_unreadable_directory_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let missing = FileSource::new(dir.path().join("nope"));
    match missing.list_merchants(None, 10).await {
        Err(SourceError::Unavailable(m)) => {
            assert!(m.starts_with("source directory "), "{m}");
            assert!(m.contains("nope"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    // A file where the directory should be.
    touch(dir.path(), "m_a.json");
    let not_a_dir = FileSource::new(dir.path().join("m_a.json"));
    assert!(matches!(
        not_a_dir.list_merchants(None, 10).await,
        Err(SourceError::Unavailable(_))
    ));
    // A missing directory is refused whatever the cursor (a valid one), not read as empty.
    assert!(matches!(
        missing.list_merchants(Some("m_a"), 10).await,
        Err(SourceError::Unavailable(_))
    ));
}

#[tokio::test]
async fn the_shipped_examples_are_listed() {
    let dir = if Path::new("examples/source").is_dir() {
        Path::new("examples/source")
    } else {
        super::examples_dir()
    };
    let (listed, _) = list_all(&FileSource::new(dir), 1000, 2).await.unwrap();
    assert_eq!(listed, ["m_acme", "m_broken", "m_global", "m_tokyo"]);
}

/// A directory of `count` merchants, every tenth in both formats, and a README; their ids,
/// sorted.
fn many_files(count: usize) -> (tempfile::TempDir, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let mut expected: Vec<String> = (0..count).map(|i| format!("m_{i:07}")).collect();
    // Created in an order unrelated to the ids' order.
    for (i, id) in expected.iter().enumerate().rev() {
        touch(dir.path(), format!("{id}.ndjson"));
        if i % 10 == 0 {
            touch(dir.path(), format!("{id}.json"));
        }
    }
    touch(dir.path(), "README.md");
    expected.sort();
    (dir, expected)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_of_many_files_is_listed_page_by_page() {
    let (dir, expected) = many_files(5_000);
    let source = FileSource::new(dir.path());
    let (listed, sizes) = list_all(&source, 700, 20).await.unwrap();
    assert_eq!(listed, expected);
    assert_eq!(sizes, [700, 700, 700, 700, 700, 700, 700, 100]);
}

/// `cargo test --release --lib -- --ignored --nocapture listing_speed`
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run in release"]
async fn listing_speed() {
    let (dir, expected) = many_files(100_000);
    let source = FileSource::new(dir.path());
    for limit in [1_000, 10_000] {
        let started = Instant::now();
        let (listed, sizes) = list_all(&source, limit, 1_000).await.unwrap();
        let elapsed = started.elapsed();
        assert_eq!(listed, expected);
        println!(
            "100,000 merchants (110,001 files), pages of {limit}: {} pages in {elapsed:?}",
            sizes.len()
        );
    }
}
