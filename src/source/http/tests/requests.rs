//! One page's request: the bearer token, status codes, retries with backoff and
//! `Retry-After`, timeouts, and bodies that are not JSON or too large.

use super::*;

#[tokio::test]
async fn bearer_token_is_sent_and_a_refusal_is_unavailable() {
    let mut up = Upstream::new(2);
    up.token = Some("Bearer s3cr3t-t0ken".to_owned());
    let fake = up.start().await;
    let data = days(3);
    let good = fake.source(&data, Some("s3cr3t-t0ken"), fast());
    let (_, entries) = collect(&good, &mid("m_pages"), october()).await.unwrap();
    assert_eq!(entries.len(), 3);
    assert_eq!(
        good.merchant(&mid("m_pages")).await.unwrap().name,
        "Contract GmbH"
    );
    assert!(!format!("{good:?}").contains("s3cr3t"), "{good:?}");

    let before = fake.requests();
    let anonymous = fake.source(&data, None, fast());
    let refused = SourceError::Unavailable("the source refused the credentials (HTTP 401)".into());
    assert_eq!(
        collect(&anonymous, &mid("m_pages"), october()).await.err(),
        Some(refused.clone())
    );
    // A refusal is not transient: exactly one request.
    assert_eq!(fake.requests(), before + 1);
    let wrong = fake.source(&data, Some("wr0ng-t0ken"), fast());
    let err = wrong.merchant(&mid("m_pages")).await.unwrap_err();
    assert_eq!(err, refused);
    assert!(!err.to_string().contains("wr0ng"));
    assert!(!format!("{wrong:?}").contains("wr0ng"));
}

#[tokio::test]
async fn not_found_is_an_unknown_merchant() {
    let fake = Upstream::new(2).start().await;
    let source = fake.source(&days(1), None, fast());
    assert_eq!(
        collect(&source, &mid("m_nobody"), october()).await.err(),
        Some(SourceError::UnknownMerchant("m_nobody".into()))
    );
    assert_eq!(
        source.merchant(&mid("m_nobody")).await,
        Err(SourceError::UnknownMerchant("m_nobody".into()))
    );
    assert_eq!(fake.requests(), 2);
}

#[tokio::test]
async fn transient_failures_are_retried() {
    let fake = Upstream::new(2)
        .script([Reply::Status(503, None), Reply::Status(503, None)])
        .start()
        .await;
    let source = fake.source(&days(3), None, fast());
    let (_, entries) = collect(&source, &mid("m_pages"), october()).await.unwrap();
    assert_eq!(entries.len(), 3);
    // Two failures, the first page, the second page.
    assert_eq!(fake.requests(), 4);

    // A failure on a later page is retried too, and 429 / 502 count as transient.
    let fake = Upstream::new(1)
        .script([
            Reply::Sleep(Duration::ZERO),
            Reply::Status(429, Some("0")),
            Reply::Status(502, None),
        ])
        .start()
        .await;
    let source = fake.source(&days(3), None, fast());
    let (_, entries) = collect(&source, &mid("m_pages"), october()).await.unwrap();
    assert_eq!(entries.len(), 3);
    assert_eq!(fake.requests(), 5);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let fake = Upstream::new(10)
        .script([Reply::Status(503, Some("1"))])
        .start()
        .await;
    let source = fake.source(&days(1), None, fast());
    let started = Instant::now();
    collect(&source, &mid("m_pages"), october()).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(fake.requests(), 2);
}

#[tokio::test]
async fn persistent_failure_gives_up_after_max_retries() {
    let mut up = Upstream::new(2);
    up.forever = Some(Reply::Status(503, None));
    let fake = up.start().await;
    let options = HttpSourceOptions {
        max_retries: 2,
        ..fast()
    };
    let source = fake.source(&days(3), None, options);
    assert_eq!(
        collect(&source, &mid("m_pages"), october()).await.err(),
        Some(SourceError::Unavailable(
            "the source answered HTTP 503 (gave up after 3 attempts)".into()
        ))
    );
    assert_eq!(fake.requests(), 3);
    let source = fake.source(
        &days(3),
        None,
        HttpSourceOptions {
            max_retries: 0,
            ..fast()
        },
    );
    assert!(matches!(
        source.merchant(&mid("m_pages")).await,
        Err(SourceError::Unavailable(_))
    ));
    assert_eq!(fake.requests(), 4);
}

#[tokio::test]
async fn a_slow_upstream_times_out() {
    let mut up = Upstream::new(2);
    up.forever = Some(Reply::Sleep(Duration::from_secs(5)));
    let fake = up.start().await;
    let options = HttpSourceOptions {
        request_timeout: Duration::from_millis(200),
        max_retries: 1,
        initial_backoff: Duration::from_millis(1),
        ..fast()
    };
    let source = fake.source(&days(1), None, options);
    let started = Instant::now();
    let err = collect(&source, &mid("m_pages"), october()).await.err();
    assert!(
        matches!(&err, Some(SourceError::Unavailable(m)) if m.ends_with("(gave up after 2 attempts)")),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(fake.requests(), 2);
}

#[tokio::test]
async fn other_refusals_and_bad_bodies_are_invalid() {
    let fake = Upstream::new(10)
        .script([
            Reply::Status(400, None),
            Reply::Status(302, None),
            Reply::Body("<html>maintenance</html>".to_owned()),
        ])
        .start()
        .await;
    let source = fake.source(&days(2), None, fast());
    let id = mid("m_pages");
    assert_eq!(
        collect(&source, &id, october()).await.err(),
        Some(SourceError::Invalid(
            "the source refused the request (HTTP 400)".into()
        ))
    );
    assert_eq!(
        collect(&source, &id, october()).await.err(),
        Some(SourceError::Invalid(
            "the source answered with a redirect (HTTP 302), which is not followed".into()
        ))
    );
    assert_eq!(
        collect(&source, &id, october()).await.err(),
        Some(SourceError::Invalid(
            "the source answered with a body that is not JSON: invalid JSON (expected a value at byte 0)".into()
        ))
    );
    // None of them was retried.
    assert_eq!(fake.requests(), 3);
}

#[tokio::test]
async fn a_body_that_breaks_off_is_fetched_again_and_read_on_after_what_was_handed_over() {
    // One page of 20 entries, broken off in the middle of its 7th entry the first time.
    let fake = Upstream::new(20)
        .script([Reply::BreakAfter(900)])
        .start()
        .await;
    let data = days(20);
    let source = fake.source(&data, None, fast());
    let (opening, entries) = collect(&source, &mid("m_pages"), october())
        .await
        .expect("the second answer completes the page");
    assert_eq!(opening[0].amount, 1_000);
    let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
    let expected: Vec<String> = (0..20).map(|i| format!("tx_{i:02}")).collect();
    assert_eq!(ids, expected, "every entry once, in order");
    assert_eq!(fake.requests(), 2);

    // Broken every time: given up like any transient failure.
    let mut up = Upstream::new(20);
    up.forever = Some(Reply::BreakAfter(900));
    let fake = up.start().await;
    let source = fake.source(&data, None, fast());
    let err = collect(&source, &mid("m_pages"), october()).await.err();
    assert!(
        matches!(&err, Some(SourceError::Unavailable(m)) if m.ends_with("(gave up after 4 attempts)")),
        "{err:?}"
    );
    assert_eq!(fake.requests(), 4);
}

#[tokio::test]
async fn a_page_with_its_entries_first_is_fetched_twice_and_reads_the_same() {
    let mut up = Upstream::new(5);
    up.forever = Some(Reply::EntriesFirst);
    let fake = up.start().await;
    let data = days(12);
    let source = fake.source(&data, None, fast());
    let (opening, entries) = collect(&source, &mid("m_pages"), october())
        .await
        .expect("read");
    assert_eq!(opening[0].amount, 1_000);
    assert_eq!(entries.len(), 12);
    assert_eq!(entries[11].id, "tx_11");
    // Three pages, each read once for its header and once for its entries.
    assert_eq!(fake.requests(), 6);
}
