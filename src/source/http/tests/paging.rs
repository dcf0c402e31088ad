//! The HTTP source runs the source contract, follows cursors (and refuses cycles and endless
//! paging), refuses entries outside the window, stops when dropped, and checks its
//! configuration.

use super::*;

#[tokio::test]
async fn contract_one_entry_per_page() {
    let h = HttpHarness {
        fake: Upstream::new(1).start().await,
    };
    contract::run_all(&h).await;
}

#[tokio::test]
async fn contract_two_entries_per_page() {
    // The validation cases hold three entries: the bad one sits on page 1 or 2.
    let h = HttpHarness {
        fake: Upstream::new(2).start().await,
    };
    contract::run_all(&h).await;
}

#[tokio::test]
async fn contract_single_page() {
    let h = HttpHarness {
        fake: Upstream::new(1000).start().await,
    };
    contract::run_all(&h).await;
}

#[tokio::test]
async fn pages_are_followed_and_indices_continue() {
    let fake = Upstream::new(2).start().await;
    let data = days(7);
    let source = fake.source(&data, None, fast());
    let stream = source.entries(&mid("m_pages"), october()).await.unwrap();
    assert_eq!(stream.opening_balances.len(), 1);
    assert_eq!(stream.opening_balances[0].amount, 1_000);
    let batches: Vec<Vec<Entry>> = stream.entries.map(|b| b.unwrap()).collect::<Vec<_>>().await;
    let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
    assert_eq!(sizes, [2, 2, 2, 1]);
    let ids: Vec<String> = batches.into_iter().flatten().map(|e| e.id).collect();
    assert_eq!(
        ids,
        (0..7).map(|i| format!("tx_{i:02}")).collect::<Vec<_>>()
    );
    assert_eq!(fake.requests(), 4);
    let queries = fake.state.queries.lock().unwrap().clone();
    assert_eq!(
        queries,
        [
            "from=2026-10-01T00%3A00%3A00Z&to=2026-11-01T00%3A00%3A00Z",
            "from=2026-10-01T00%3A00%3A00Z&to=2026-11-01T00%3A00%3A00Z&cursor=c2",
            "from=2026-10-01T00%3A00%3A00Z&to=2026-11-01T00%3A00%3A00Z&cursor=c4",
            "from=2026-10-01T00%3A00%3A00Z&to=2026-11-01T00%3A00%3A00Z&cursor=c6",
        ]
    );

    // A bad entry on the third page is named by its index in the whole stream, and a
    // repeated id is caught across pages.
    let mut bad = days(7);
    bad.entries[5] = entry_json("tx_05", "2026-10-06T12:00:00Z", "PAYMENT", "1.5", "EUR");
    let source = fake.source(&bad, None, fast());
    assert_eq!(
        collect(&source, &mid("m_pages"), october()).await.err(),
        Some(SourceError::Invalid(
            "entries[5].amount: expected integer, found a decimal number".into()
        ))
    );
    let mut repeated = days(7);
    repeated.entries[4] = entry_json("tx_00", "2026-10-05T12:00:00Z", "PAYMENT", "1", "EUR");
    let source = fake.source(&repeated, None, fast());
    assert_eq!(
        collect(&source, &mid("m_pages"), october()).await.err(),
        Some(SourceError::Invalid(
            "entries[4].id: repeated entry id".into()
        ))
    );
}

/// A page of no entries (legal) whose `nextCursor` is `next`.
fn empty_page(next: &str) -> Reply {
    let header = days(1).header_json();
    let head = header.strip_suffix('}').unwrap();
    Reply::Body(format!("{head},\"entries\":[],\"nextCursor\":{next}}}"))
}

#[tokio::test]
async fn cursors_that_cycle_are_refused_instead_of_followed_forever() {
    // A → B → C → A → B → …: every page empty, so nothing else would ever stop it.
    let mut up = Upstream::new(2).script([
        empty_page("\"A\""),
        empty_page("\"B\""),
        empty_page("\"C\""),
    ]);
    up.forever = Some(empty_page("\"A\""));
    let fake = up.start().await;
    let source = fake.source(&days(1), None, fast());
    let outcome = tokio::time::timeout(
        Duration::from_secs(10),
        collect(&source, &mid("m_pages"), october()),
    )
    .await
    .expect("a cycling upstream is not followed forever");
    assert_eq!(
        outcome.err(),
        Some(SourceError::Invalid(
            "nextCursor: page 4 returns to the cursor of an earlier page (a cycle)".into()
        ))
    );
    assert_eq!(
        fake.requests(),
        4,
        "A, B and C once each, after the first page"
    );
}

#[tokio::test]
async fn no_more_pages_than_the_limit_are_followed() {
    let fake = Upstream::new(1).start().await;
    let limited = HttpSourceOptions {
        max_pages: 3,
        ..fast()
    };
    let source = fake.source(&days(5), None, limited);
    assert_eq!(
        collect(&source, &mid("m_pages"), october()).await.err(),
        Some(SourceError::Invalid(
            "nextCursor: the source has more than 3 pages (APP_ENV_SOURCE_MAX_PAGES)".into()
        ))
    );
    assert_eq!(fake.requests(), 3);
    // Exactly at the limit is fine.
    let source = fake.source(&days(3), None, limited);
    let (_, entries) = collect(&source, &mid("m_pages"), october()).await.unwrap();
    assert_eq!(entries.len(), 3);
}

#[tokio::test]
async fn a_later_page_with_other_opening_balances_is_refused() {
    let mut up = Upstream::new(2);
    up.later_opening = Some(r#"{"currency":"EUR","amount":999}"#.to_owned());
    let fake = up.start().await;
    let source = fake.source(&days(5), None, fast());
    assert_eq!(
        collect(&source, &mid("m_pages"), october()).await.err(),
        Some(SourceError::Invalid(
            "openingBalances: page 2 differs from the first page".into()
        ))
    );
}

#[tokio::test]
async fn an_entry_outside_the_window_is_refused() {
    let mut up = Upstream::new(2);
    up.no_cut = true;
    let fake = up.start().await;
    let data = Dataset::new("m_win")
        .entry("a", "2026-10-01T00:00:00Z", "PAYMENT", 1, "EUR")
        .entry("b", "2026-10-15T00:00:00Z", "PAYMENT", 1, "EUR")
        .entry("c", "2026-11-01T00:00:00Z", "PAYMENT", 1, "EUR");
    let source = fake.source(&data, None, fast());
    let err = collect(&source, &mid("m_win"), october())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        SourceError::Invalid("entries[2].bookedAt: outside the requested window".into())
    );
    let early = window("2026-10-02T00:00:00Z", "2026-11-02T00:00:00Z");
    assert_eq!(
        collect(&source, &mid("m_win"), early).await.err(),
        Some(SourceError::Invalid(
            "entries[0].bookedAt: outside the requested window".into()
        ))
    );
}

#[tokio::test]
async fn dropping_the_stream_stops_the_requests() {
    let fake = Upstream::new(1).start().await;
    let source = fake.source(&days(30), None, fast());
    let mut stream = source.entries(&mid("m_pages"), october()).await.unwrap();
    assert_eq!(stream.entries.next().await.unwrap().unwrap().len(), 1);
    drop(stream);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after_drop = fake.requests();
    // The page handed out, two buffered, one in flight at most.
    assert!(after_drop <= 4, "{after_drop}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.requests(), after_drop);
}

#[tokio::test]
async fn readiness_and_configuration() {
    let fake = Upstream::new(10).start().await;
    let source = fake.source(&days(1), None, fast());
    source.ready().await.unwrap();

    // A port nobody listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let url = Url::parse(&format!("http://{addr}/")).unwrap();
    let gone = HttpSource::new(
        url,
        None,
        HttpSourceOptions {
            max_retries: 1,
            ..fast()
        },
    )
    .unwrap();
    assert!(matches!(
        gone.ready().await,
        Err(SourceError::Unavailable(_))
    ));
    let err = collect(&gone, &mid("m_pages"), october())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SourceError::Unavailable(m) if m.starts_with("could not connect") && !m.contains("m_pages")),
        "{err:?}"
    );

    for bad in ["ftp://example.com/", "http://example.com/?a=1"] {
        assert!(matches!(
            HttpSource::new(Url::parse(bad).unwrap(), None, fast()),
            Err(SourceError::Invalid(_))
        ));
    }
    assert!(matches!(
        HttpSource::new(
            Url::parse("http://example.com/").unwrap(),
            Some(Secret::new("bad\ntoken")),
            fast()
        ),
        Err(SourceError::Invalid(m)) if !m.contains("bad")
    ));
    let d = HttpSourceOptions::default();
    assert_eq!(
        (d.request_timeout, d.max_retries, d.initial_backoff),
        (Duration::from_secs(10), 3, Duration::from_millis(200))
    );
}
