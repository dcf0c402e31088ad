//! The merchant list over HTTP: the requests (path, limit, cursor encoding, token), what a
//! page must hold, statuses, retries and bounds.

use super::*;
use crate::source::MerchantPage;
use crate::source::contract::list_all;

/// Merchants `m_a`, `m_b`, … (`n` of them).
fn merchants(n: u8) -> Vec<Dataset> {
    (0..n)
        .map(|i| Dataset::new(&format!("m_{}", char::from(b'a' + i))))
        .collect()
}

fn ids(page: &MerchantPage) -> Vec<&str> {
    page.merchants.iter().map(MerchantId::as_str).collect()
}

fn queries(fake: &Fake) -> Vec<String> {
    fake.state.queries.lock().unwrap().clone()
}

fn invalid(message: &str) -> Result<MerchantPage, SourceError> {
    Err(SourceError::Invalid(message.to_owned()))
}

#[tokio::test]
async fn pages_are_requested_with_limit_and_cursor() {
    let fake = Upstream::new(1).start().await;
    let source = fake.source_all(&merchants(5), None, fast());
    let (listed, sizes) = list_all(&source, 2, 10).await.unwrap();
    assert_eq!(listed, ["m_a", "m_b", "m_c", "m_d", "m_e"]);
    assert_eq!(sizes, [2, 2, 1]);
    assert_eq!(
        queries(&fake),
        ["limit=2", "cursor=m_b&limit=2", "cursor=m_d&limit=2"]
    );
    // A limit of 0 is sent as 1.
    let page = source.list_merchants(None, 0).await.unwrap();
    assert_eq!(ids(&page), ["m_a"]);
    assert_eq!(queries(&fake).last().unwrap(), "limit=1");
}

#[tokio::test]
async fn the_cursor_is_sent_encoded_and_the_token_with_it() {
    let mut up = Upstream::new(1);
    up.token = Some("Bearer s3cr3t-t0ken".to_owned());
    let odd = "a b&c=d/é+%?#";
    let first = serde_json::json!({
        "merchants": [{"id": "m_a", "name": "A"}],
        "nextCursor": odd,
    });
    let fake = up.script([Reply::Body(first.to_string())]).start().await;
    let source = fake.source_all(&merchants(3), Some("s3cr3t-t0ken"), fast());
    let page = source.list_merchants(None, 10).await.unwrap();
    assert_eq!(page.next_cursor.as_deref(), Some(odd));
    // The fake decodes the cursor it was sent: every merchant sorts after it.
    let page = source.list_merchants(Some(odd), 10).await.unwrap();
    assert_eq!(ids(&page), ["m_a", "m_b", "m_c"]);
    assert_eq!(
        queries(&fake)[1],
        "cursor=a+b%26c%3Dd%2F%C3%A9%2B%25%3F%23&limit=10"
    );
    let decoded: Vec<(String, String)> = url::form_urlencoded::parse(queries(&fake)[1].as_bytes())
        .into_owned()
        .collect();
    assert_eq!(decoded[0], ("cursor".to_owned(), odd.to_owned()));

    // Without the token, or with another: refused, not retried, and no token in the error.
    let before = fake.requests();
    let anonymous = fake.source_all(&merchants(3), None, fast());
    let refused = SourceError::Unavailable("the source refused the credentials (HTTP 401)".into());
    assert_eq!(
        anonymous.list_merchants(None, 10).await,
        Err(refused.clone())
    );
    let wrong = fake.source_all(&merchants(3), Some("wr0ng-t0ken"), fast());
    let err = wrong.list_merchants(Some(odd), 10).await.unwrap_err();
    assert_eq!(err, refused);
    assert!(!err.to_string().contains("wr0ng"));
    assert_eq!(fake.requests(), before + 2);
}

#[tokio::test]
async fn a_page_is_returned_as_the_upstream_sent_it() {
    // Unknown members are skipped unread, as in an entries page (`1e999` is no f64).
    let longer = r#"{"merchants": [
        {"id": "m_c", "name": "C", "timezone": "Pacific/Pago_Pago"},
        {"id": "m_a", "name": "A", "timezone": null},
        {"id": "m_b", "name": "", "locale": "de-DE", "other": [1e999, {"x": null}]}
      ],
      "nextCursor": "opaque==", "total": 3}"#;
    let fake = Upstream::new(1)
        .script([
            Reply::Body(longer.to_owned()),
            Reply::Body(r#"{"merchants":[],"nextCursor":"later"}"#.to_owned()),
            Reply::Body(r#"{"merchants":[]}"#.to_owned()),
            Reply::Body(
                r#" {"nextCursor":null,"merchants":[{"name":"Z","id":"m_z"}]} "#.to_owned(),
            ),
        ])
        .start()
        .await;
    let source = fake.source_all(&[], None, fast());
    // More than the limit, in the upstream's order: all of them (cutting the page short
    // would lose the merchants before the upstream's cursor).
    assert_eq!(
        source.list_merchants(None, 2).await,
        Ok(MerchantPage {
            merchants: vec![mid("m_c"), mid("m_a"), mid("m_b")],
            next_cursor: Some("opaque==".to_owned()),
        })
    );
    // An empty page may still have a next one; `nextCursor` may be left out on the last.
    let page = source.list_merchants(Some("opaque=="), 2).await.unwrap();
    assert_eq!(
        (ids(&page).len(), page.next_cursor.as_deref()),
        (0, Some("later"))
    );
    let page = source.list_merchants(Some("later"), 2).await.unwrap();
    assert_eq!((ids(&page).len(), page.next_cursor), (0, None));
    let page = source.list_merchants(None, 2).await.unwrap();
    assert_eq!(
        (ids(&page), page.next_cursor.as_deref()),
        (vec!["m_z"], None)
    );
}

#[tokio::test]
async fn a_bad_page_is_invalid_and_names_the_field() {
    let cases: Vec<(&str, String, String)> = [
        (
            "bad id",
            r#"{"merchants":[{"id":"m_a","name":"A"},{"id":"m_b","name":"B"},{"id":"m_c","name":"C"},{"id":"m 1","name":"D"}]}"#.to_owned(),
            r#"merchants[3].id: expected a merchant id ([A-Za-z0-9_-]{1,64}), found "m 1""#,
        ),
        (
            "id too long",
            format!(r#"{{"merchants":[{{"id":"{}","name":"A"}}]}}"#, "x".repeat(65)),
            // Quoted, cut at 64 characters.
            &format!(
                "merchants[0].id: expected a merchant id ([A-Za-z0-9_-]{{1,64}}), found \"{}\"…",
                "x".repeat(64)
            ),
        ),
        (
            "numeric id",
            r#"{"merchants":[{"id":7,"name":"A"}]}"#.to_owned(),
            "merchants[0].id: expected string, found an integer",
        ),
        (
            "missing id",
            r#"{"merchants":[{"name":"A"}]}"#.to_owned(),
            "merchants[0].id: missing, expected string",
        ),
        (
            "repeated id",
            r#"{"merchants":[{"id":"m_a","name":"A"},{"id":"m_b","name":"B"},{"id":"m_a","name":"A"}]}"#.to_owned(),
            "merchants[2].id: repeated merchant id (first at merchants[0])",
        ),
        (
            "bad time zone",
            r#"{"merchants":[{"id":"m_a","name":"A"},{"id":"m_b","name":"B","timezone":"Mars/Base"}]}"#.to_owned(),
            "merchants[1].timezone: unknown time zone",
        ),
        (
            "numeric time zone",
            r#"{"merchants":[{"id":"m_a","name":"A","timezone":1}]}"#.to_owned(),
            "merchants[0].timezone: expected string, found an integer",
        ),
        (
            "missing name",
            r#"{"merchants":[{"id":"m_a"}]}"#.to_owned(),
            "merchants[0].name: missing, expected string",
        ),
        (
            "null name",
            r#"{"merchants":[{"id":"m_a","name":null}]}"#.to_owned(),
            "merchants[0].name: expected string, found null",
        ),
        (
            "repeated field",
            r#"{"merchants":[{"id":"m_a","name":"A","id":"m_b"}]}"#.to_owned(),
            "merchants[0].id: repeated field",
        ),
        (
            "item not an object",
            r#"{"merchants":["m_a"]}"#.to_owned(),
            "merchants[0]: expected an object, found a string",
        ),
        (
            "no merchants",
            r#"{"nextCursor":null}"#.to_owned(),
            "merchants: missing, expected array",
        ),
        (
            "merchants not an array",
            r#"{"merchants":{"id":"m_a"}}"#.to_owned(),
            "merchants: expected array, found an object",
        ),
        (
            "merchants twice",
            r#"{"merchants":[],"merchants":[]}"#.to_owned(),
            "merchants: repeated field",
        ),
        (
            "numeric cursor",
            r#"{"merchants":[],"nextCursor":2}"#.to_owned(),
            "nextCursor: expected string, found an integer",
        ),
        (
            "not an object",
            r#"[{"id":"m_a","name":"A"}]"#.to_owned(),
            "document: expected an object, found an array",
        ),
        (
            "not JSON",
            "<html>maintenance</html>".to_owned(),
            "the source answered with a body that is not JSON: invalid JSON (expected value at line 1 column 1)",
        ),
        (
            "cut short",
            r#"{"merchants":[{"id":"m_a","#.to_owned(),
            "the source answered with a body that is not JSON: invalid JSON (EOF while parsing a value at line 1 column 26)",
        ),
    ]
    .into_iter()
    .map(|(name, body, message): (&str, String, &str)| (name, body, message.to_owned()))
    .collect();
    let fake = Upstream::new(1)
        .script(cases.iter().map(|(_, body, _)| Reply::Body(body.clone())))
        .start()
        .await;
    let source = fake.source_all(&[], None, fast());
    for (name, _, message) in &cases {
        assert_eq!(
            source.list_merchants(None, 10).await,
            invalid(message),
            "{name}"
        );
    }
    // None of them was retried.
    assert_eq!(fake.requests(), cases.len());
}

#[tokio::test]
async fn a_next_cursor_equal_to_the_one_sent_is_a_loop() {
    let page = r#"{"merchants":[{"id":"m_a","name":"A"}],"nextCursor":"c1"}"#;
    let fake = Upstream::new(1)
        .script([Reply::Body(page.to_owned()), Reply::Body(page.to_owned())])
        .start()
        .await;
    let source = fake.source_all(&[], None, fast());
    assert_eq!(
        source.list_merchants(Some("c1"), 10).await,
        invalid("nextCursor: equal to the cursor of the request (the list would loop)")
    );
    // The first page has no cursor to repeat.
    let first = source.list_merchants(None, 10).await.unwrap();
    assert_eq!(first.next_cursor.as_deref(), Some("c1"));
}

#[tokio::test]
async fn server_errors_and_timeouts_are_retried_then_unavailable() {
    // A 500 and a 503, then the page.
    let fake = Upstream::new(1)
        .script([Reply::Status(500, None), Reply::Status(503, Some("0"))])
        .start()
        .await;
    let source = fake.source_all(&merchants(2), None, fast());
    let page = source.list_merchants(None, 10).await.unwrap();
    assert_eq!(ids(&page), ["m_a", "m_b"]);
    assert_eq!(fake.requests(), 3);

    let mut up = Upstream::new(1);
    up.forever = Some(Reply::Status(500, None));
    let fake = up.start().await;
    let options = HttpSourceOptions {
        max_retries: 2,
        ..fast()
    };
    let source = fake.source_all(&merchants(2), None, options);
    assert_eq!(
        source.list_merchants(None, 10).await,
        Err(SourceError::Unavailable(
            "the source answered HTTP 500 (gave up after 3 attempts)".into()
        ))
    );
    assert_eq!(fake.requests(), 3);

    let mut up = Upstream::new(1);
    up.forever = Some(Reply::Sleep(Duration::from_secs(5)));
    let fake = up.start().await;
    let options = HttpSourceOptions {
        request_timeout: Duration::from_millis(200),
        max_retries: 1,
        ..fast()
    };
    let source = fake.source_all(&merchants(2), None, options);
    let started = Instant::now();
    let err = source.list_merchants(None, 10).await;
    assert_eq!(
        err,
        Err(SourceError::Unavailable(
            "no answer within 200 ms (gave up after 2 attempts)".into()
        ))
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_body_that_breaks_off_is_fetched_again() {
    let fake = Upstream::new(1)
        .script([Reply::BreakAfter(20)])
        .start()
        .await;
    let source = fake.source_all(&merchants(3), None, fast());
    let page = source.list_merchants(None, 10).await.unwrap();
    assert_eq!(ids(&page), ["m_a", "m_b", "m_c"]);
    assert_eq!(fake.requests(), 2);
}

#[tokio::test]
async fn other_statuses_are_refused_requests() {
    let fake = Upstream::new(1)
        .script([Reply::Status(400, None), Reply::Status(302, None)])
        .start()
        .await;
    let source = fake.source_all(&merchants(1), None, fast());
    assert_eq!(
        source.list_merchants(None, 10).await,
        invalid("the source refused the request (HTTP 400)")
    );
    assert_eq!(
        source.list_merchants(None, 10).await,
        invalid("the source answered with a redirect (HTTP 302), which is not followed")
    );
    // No merchant list at this base URL: 404 is no unknown merchant here.
    let nowhere = HttpSource::new(
        Url::parse(&format!("http://{}/999/", fake.addr)).unwrap(),
        None,
        fast(),
    )
    .unwrap();
    assert_eq!(
        nowhere.list_merchants(None, 10).await,
        invalid("the source refused the request (HTTP 404)")
    );
    assert_eq!(fake.requests(), 3);
}

#[tokio::test]
async fn a_page_over_the_bound_is_refused() {
    let pad = "x".repeat(MAX_MERCHANT_PAGE_BYTES);
    let body = format!(r#"{{"merchants":[],"pad":"{pad}"}}"#);
    // Announced by its length, or found out while reading a body without one.
    let fake = Upstream::new(1)
        .script([Reply::Body(body.clone()), Reply::Chunked(body)])
        .start()
        .await;
    let source = fake.source_all(&[], None, fast());
    let too_long = format!(
        "the source answered with a merchant list page longer than {MAX_MERCHANT_PAGE_BYTES} bytes"
    );
    for _ in 0..2 {
        assert_eq!(source.list_merchants(None, 10).await, invalid(&too_long));
    }
    assert_eq!(fake.requests(), 2);
    // Just within the bound, in pieces: read.
    let within = format!(
        r#"{{"merchants":[{{"id":"m_a","name":"A"}}],"pad":"{}"}}"#,
        "x".repeat(MAX_MERCHANT_PAGE_BYTES - 50)
    );
    assert!(within.len() <= MAX_MERCHANT_PAGE_BYTES);
    let fake = Upstream::new(1)
        .script([Reply::Chunked(within)])
        .start()
        .await;
    let source = fake.source_all(&[], None, fast());
    let page = source.list_merchants(None, 10).await.unwrap();
    assert_eq!(ids(&page), ["m_a"]);
}
