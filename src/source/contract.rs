//! The source contract: the checks every [`Source`](super::Source) adapter passes, written
//! against `&dyn Source` and a [`Harness`] that builds a source holding one [`Dataset`] or
//! several, so the HTTP adapter can run them against a fake upstream. Each adapter's tests
//! call [`run_all`] (which includes [`run_listing`]).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;

use crate::domain::{Balance, Currency, Entry, EntryType, Locale, Merchant, MerchantId, Timezone};
use crate::source::{MerchantPage, Source, SourceError, Window};

/// Source data as JSON text, so tests can hold data no valid type could (floats, …).
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The merchant the source is asked about (the file name).
    pub merchant_id: String,
    /// `merchant.id` inside the data; usually equal to `merchant_id`.
    pub header_id: String,
    /// `merchant.name`.
    pub name: String,
    /// `merchant.timezone`, left out when `None`.
    pub timezone: Option<String>,
    /// `merchant.locale` as raw JSON (`"de-DE"` with its quotes, or `49`), left out
    /// when `None`.
    pub locale: Option<String>,
    /// `openingBalances` as raw JSON objects.
    pub opening: Vec<String>,
    /// Entry objects as raw JSON, in source order.
    pub entries: Vec<String>,
}

impl Dataset {
    /// A merchant `id` named "Contract GmbH", no time zone, no balances, no entries.
    pub fn new(id: &str) -> Self {
        Self {
            merchant_id: id.to_owned(),
            header_id: id.to_owned(),
            name: "Contract GmbH".to_owned(),
            timezone: None,
            locale: None,
            opening: Vec::new(),
            entries: Vec::new(),
        }
    }

    /// Adds an opening balance.
    pub fn opening(mut self, currency: &str, amount: i64) -> Self {
        self.opening
            .push(format!(r#"{{"currency":"{currency}","amount":{amount}}}"#));
        self
    }

    /// Adds a valid-looking entry.
    pub fn entry(mut self, id: &str, at: &str, kind: &str, amount: i64, currency: &str) -> Self {
        self.entries
            .push(entry_json(id, at, kind, &amount.to_string(), currency));
        self
    }

    /// The header object without entries.
    pub fn header_json(&self) -> String {
        let tz = match &self.timezone {
            Some(tz) => format!(r#","timezone":"{tz}""#),
            None => String::new(),
        };
        let locale = match &self.locale {
            Some(raw) => format!(r#","locale":{raw}"#),
            None => String::new(),
        };
        format!(
            r#"{{"merchant":{{"id":"{}","name":"{}"{tz}{locale}}},"openingBalances":[{}]}}"#,
            self.header_id,
            self.name,
            self.opening.join(",")
        )
    }

    /// The NDJSON file text.
    pub fn ndjson(&self) -> String {
        let mut text = self.header_json();
        text.push('\n');
        for entry in &self.entries {
            text.push_str(entry);
            text.push('\n');
        }
        text
    }

    /// The single-page JSON document text.
    pub fn json(&self) -> String {
        let header = self.header_json();
        let head = header.strip_suffix('}').unwrap_or(&header);
        format!(
            "{head},\"entries\":[\n{}\n],\"nextCursor\":null}}\n",
            self.entries.join(",\n")
        )
    }
}

/// One entry object with `amount` spliced in verbatim (`19.99`, `"1999"`, …).
pub fn entry_json(id: &str, at: &str, kind: &str, amount: &str, currency: &str) -> String {
    format!(
        r#"{{"id":"{id}","bookedAt":"{at}","type":"{kind}","amount":{amount},"currency":"{currency}","description":"Order, \"{id}\"","reference":"ord_{id}"}}"#
    )
}

/// Builds a source holding given data.
#[async_trait]
pub trait Harness: Sync {
    /// A source that serves `data` for `data.merchant_id`.
    async fn source_with(&self, data: &Dataset) -> Box<dyn Source>;
    /// A source that serves each of `data` for its `merchant_id` (distinct ids), and lists
    /// them sorted by id with the last id listed as the cursor (the file source's own
    /// cursor, which a fake upstream mirrors).
    async fn source_with_all(&self, data: &[Dataset]) -> Box<dyn Source>;
}

/// Parses an RFC 3339 instant.
pub fn at(raw: &str) -> DateTime<Utc> {
    raw.parse().expect("test instant")
}

/// `[from, to)`.
pub fn window(from: &str, to: &str) -> Window {
    Window {
        from: at(from),
        to: at(to),
    }
}

/// A window holding any plausible entry.
pub fn everything() -> Window {
    window("1970-01-01T00:00:00Z", "2100-01-01T00:00:00Z")
}

/// A merchant id.
pub fn mid(raw: &str) -> MerchantId {
    MerchantId::parse(raw).expect("test merchant id")
}

fn eur() -> Currency {
    Currency::parse("EUR").expect("EUR")
}

/// One opening balance of `amount` in EUR.
fn in_eur(amount: i64) -> Vec<Balance> {
    vec![Balance {
        currency: eur(),
        amount,
    }]
}

/// Opening balances and every entry of `window`, or the first error either step gave.
pub async fn collect(
    source: &dyn Source,
    id: &MerchantId,
    window: Window,
) -> Result<(Vec<Balance>, Vec<Entry>), SourceError> {
    let stream = source.entries(id, window).await?;
    let mut entries = Vec::new();
    let mut batches = stream.entries;
    while let Some(batch) = batches.next().await {
        entries.extend(batch?);
    }
    Ok((stream.opening_balances, entries))
}

fn ids(entries: &[Entry]) -> Vec<&str> {
    entries.iter().map(|e| e.id.as_str()).collect()
}

/// The header: id, name, time zone (present and absent).
pub async fn merchant_header(h: &dyn Harness) {
    let mut data = Dataset::new("m_head").opening("EUR", 100);
    data.name = "Café Müller & Söhne".to_owned();
    data.timezone = Some("Europe/Berlin".to_owned());
    let source = h.source_with(&data).await;
    let merchant = source.merchant(&mid("m_head")).await.expect("merchant");
    assert_eq!(
        merchant,
        Merchant {
            id: mid("m_head"),
            name: "Café Müller & Söhne".to_owned(),
            timezone: Some(Timezone::parse("Europe/Berlin").expect("tz")),
            locale: None,
        }
    );
    // A locale is read in any case and kept in canonical case.
    let mut localized = Dataset::new("m_locale");
    localized.locale = Some(r#""de-de""#.to_owned());
    let source = h.source_with(&localized).await;
    let merchant = source.merchant(&mid("m_locale")).await.expect("merchant");
    assert_eq!(merchant.locale.as_ref().map(Locale::as_str), Some("de-DE"));
    let plain = h.source_with(&Dataset::new("m_plain")).await;
    assert_eq!(
        plain
            .merchant(&mid("m_plain"))
            .await
            .expect("merchant")
            .timezone,
        None
    );
}

/// Entries before `from` go into the opening balance, `from` is inclusive, `to` exclusive.
pub async fn window_cutting(h: &dyn Harness) {
    let data = Dataset::new("m_cut")
        .opening("EUR", 10_000)
        .entry("a", "2026-09-30T23:59:59Z", "PAYMENT", 500, "EUR")
        .entry("b", "2026-10-01T00:00:00Z", "FEE", -25, "EUR")
        .entry("c", "2026-10-15T12:00:00+02:00", "PAYMENT", 1999, "EUR")
        .entry("d", "2026-10-31T23:59:59Z", "REFUND", -100, "EUR")
        .entry("e", "2026-11-01T00:00:00Z", "PAYMENT", 7, "EUR");
    let source = h.source_with(&data).await;
    let (opening, entries) = collect(
        &*source,
        &mid("m_cut"),
        window("2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z"),
    )
    .await
    .expect("window");
    assert_eq!(opening, in_eur(10_500));
    assert_eq!(ids(&entries), ["b", "c", "d"]);
    let c = &entries[1];
    assert_eq!(c.booked_at, at("2026-10-15T10:00:00Z"));
    assert_eq!(
        (c.entry_type, c.amount, c.currency),
        (EntryType::Payment, 1999, eur())
    );
    assert_eq!(c.description, "Order, \"c\"");
    assert_eq!(c.reference, "ord_c");

    // The whole history: opening as in the file, every entry.
    let (opening, entries) = collect(&*source, &mid("m_cut"), everything())
        .await
        .expect("all");
    assert_eq!(opening, in_eur(10_000));
    assert_eq!(entries.len(), 5);
}

/// Opening balances per currency, including currencies the header did not list.
pub async fn multi_currency_opening(h: &dyn Harness) {
    let data = Dataset::new("m_multi")
        .opening("EUR", 1_000)
        .opening("JPY", 50_000)
        .entry("1", "2026-01-01T00:00:00Z", "PAYMENT", 200, "EUR")
        .entry("2", "2026-01-02T00:00:00Z", "FEE", -3_000, "JPY")
        .entry("3", "2026-01-03T00:00:00Z", "PAYMENT", 1_234, "KWD")
        .entry("4", "2026-01-03T00:00:00Z", "PAYOUT", -1_200, "EUR")
        .entry("5", "2026-02-01T00:00:00Z", "PAYMENT", 1, "USD");
    let source = h.source_with(&data).await;
    let (opening, entries) = collect(
        &*source,
        &mid("m_multi"),
        window("2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"),
    )
    .await
    .expect("window");
    let c = |code: &str| Currency::parse(code).expect("currency");
    let mut opening: Vec<(String, i64)> = opening
        .iter()
        .map(|b| (b.currency.code().to_owned(), b.amount))
        .collect();
    opening.sort();
    assert_eq!(
        opening,
        [
            ("EUR".to_owned(), 0),
            ("JPY".to_owned(), 47_000),
            ("KWD".to_owned(), 1_234)
        ]
    );
    assert_eq!(ids(&entries), ["5"]);
    assert_eq!(entries[0].currency, c("USD"));
}

/// A window without entries, and one before any entry.
pub async fn empty_window(h: &dyn Harness) {
    let data = Dataset::new("m_empty")
        .opening("EUR", 42)
        .entry("x", "2026-05-01T00:00:00Z", "PAYMENT", 8, "EUR")
        .entry("y", "2026-07-01T00:00:00Z", "PAYMENT", 9, "EUR");
    let source = h.source_with(&data).await;
    let june = window("2026-06-01T00:00:00Z", "2026-07-01T00:00:00Z");
    let early = window("2020-01-01T00:00:00Z", "2020-02-01T00:00:00Z");
    let late = window("2027-01-01T00:00:00Z", "2027-02-01T00:00:00Z");
    for (name, window, opening_eur) in
        [("june", june, 50), ("early", early, 42), ("late", late, 59)]
    {
        let (opening, entries) = collect(&*source, &mid("m_empty"), window)
            .await
            .expect(name);
        assert_eq!(opening, in_eur(opening_eur), "{name}");
        assert!(entries.is_empty(), "{name}");
    }
    let none = h.source_with(&Dataset::new("m_none")).await;
    let (opening, entries) = collect(&*none, &mid("m_none"), june).await.expect("none");
    assert!(opening.is_empty() && entries.is_empty());
}

/// A merchant the source does not hold.
pub async fn unknown_merchant(h: &dyn Harness) {
    let source = h.source_with(&Dataset::new("m_known")).await;
    let ghost = mid("m_ghost");
    assert_eq!(
        source.merchant(&ghost).await,
        Err(SourceError::UnknownMerchant("m_ghost".to_owned()))
    );
    assert_eq!(
        collect(&*source, &ghost, everything()).await.err(),
        Some(SourceError::UnknownMerchant("m_ghost".to_owned()))
    );
}

fn good(id: &str, at: &str) -> String {
    entry_json(id, at, "PAYMENT", "100", "EUR")
}

/// Every validation rule with its exact path message.
pub fn validation_cases() -> Vec<(&'static str, Dataset, &'static str)> {
    let base = || {
        let mut d = Dataset::new("m_bad").opening("EUR", 0);
        d.entries = vec![
            good("tx_1", "2026-10-01T00:00:00Z"),
            good("tx_2", "2026-10-02T00:00:00Z"),
            good("tx_3", "2026-10-03T00:00:00Z"),
        ];
        d
    };
    let with = |i: usize, raw: String| {
        let mut d = base();
        d.entries[i] = raw;
        d
    };
    let at2 = "2026-10-02T00:00:00Z";
    let mut cases = vec![
        (
            "float amount",
            with(1, entry_json("tx_2", at2, "PAYMENT", "19.99", "EUR")),
            "entries[1].amount: expected integer, found a decimal number",
        ),
        (
            "string amount",
            with(1, entry_json("tx_2", at2, "PAYMENT", r#""1999""#, "EUR")),
            "entries[1].amount: expected integer, found a string",
        ),
        (
            "exponent amount",
            with(1, entry_json("tx_2", at2, "PAYMENT", "1e3", "EUR")),
            "entries[1].amount: expected integer, found a decimal number",
        ),
        (
            "amount 2^63",
            with(
                1,
                entry_json("tx_2", at2, "PAYMENT", "9223372036854775808", "EUR"),
            ),
            "entries[1].amount: integer out of range",
        ),
        (
            "unknown currency",
            with(1, entry_json("tx_2", at2, "PAYMENT", "1", "EURO")),
            "entries[1].currency: unknown currency code (4 characters)",
        ),
        (
            "lower-case currency",
            with(1, entry_json("tx_2", at2, "PAYMENT", "1", "eur")),
            "entries[1].currency: unknown currency code (3 characters)",
        ),
        (
            "unknown type",
            with(1, entry_json("tx_2", at2, "DEPOSIT", "1", "EUR")),
            "entries[1].type: expected one of PAYMENT, REFUND, FEE, PAYOUT, ADJUSTMENT, CHARGEBACK",
        ),
        (
            "time without offset",
            with(
                1,
                entry_json("tx_2", "2026-10-02T00:00:00", "PAYMENT", "1", "EUR"),
            ),
            "entries[1].bookedAt: expected an RFC 3339 timestamp with offset",
        ),
        (
            "out of order",
            with(2, good("tx_3", "2026-10-01T08:00:00Z")),
            "entries[2].bookedAt: out of order (before entries[1])",
        ),
        (
            "same instant, id not ascending",
            with(2, good("tx_0", "2026-10-02T02:00:00+02:00")),
            "entries[2].id: out of order (not after entries[1].id, booked at the same instant)",
        ),
        (
            "repeated id",
            with(2, good("tx_1", "2026-10-03T00:00:00Z")),
            "entries[2].id: repeated entry id",
        ),
        (
            "empty id",
            with(1, good("", at2)),
            "entries[1].id: expected a non-empty string",
        ),
        (
            "id too long",
            with(1, good(&"x".repeat(129), at2)),
            "entries[1].id: longer than 128 characters (129)",
        ),
        (
            "missing currency",
            with(
                1,
                format!(r#"{{"id":"tx_2","bookedAt":"{at2}","type":"FEE","amount":1}}"#),
            ),
            "entries[1].currency: missing, expected string",
        ),
        (
            "null description",
            with(
                1,
                format!(
                    r#"{{"id":"tx_2","bookedAt":"{at2}","type":"FEE","amount":1,"currency":"EUR","description":null}}"#
                ),
            ),
            "entries[1].description: expected string, found null",
        ),
        (
            "numeric reference",
            with(
                1,
                format!(
                    r#"{{"id":"tx_2","bookedAt":"{at2}","type":"FEE","amount":1,"currency":"EUR","reference":42}}"#
                ),
            ),
            "entries[1].reference: expected string, found an integer",
        ),
        (
            "repeated field",
            with(
                1,
                format!(
                    r#"{{"id":"tx_2","bookedAt":"{at2}","type":"FEE","amount":1,"amount":2,"currency":"EUR"}}"#
                ),
            ),
            "entries[1].amount: repeated field",
        ),
        (
            "entry not an object",
            with(1, "[1,2]".to_owned()),
            "entries[1]: expected an object, found an array",
        ),
    ];
    let mut tz = base();
    tz.timezone = Some("Mars/Base".to_owned());
    cases.push((
        "unknown time zone",
        tz,
        "merchant.timezone: unknown time zone",
    ));
    let mut locale = base();
    locale.locale = Some(r#""de_DE""#.to_owned());
    cases.push((
        "malformed locale",
        locale,
        "merchant.locale: not made of letters, digits and hyphens; expected a BCP 47 language tag such as de-DE",
    ));
    let mut locale = base();
    locale.locale = Some("49".to_owned());
    cases.push((
        "numeric locale",
        locale,
        "merchant.locale: expected string, found an integer",
    ));
    let mut float_opening = base();
    float_opening.opening = vec![r#"{"currency":"EUR","amount":12.5}"#.to_owned()];
    cases.push((
        "float opening balance",
        float_opening,
        "openingBalances[0].amount: expected integer, found a decimal number",
    ));
    let mut bad_opening = base();
    bad_opening.opening = vec![r#"{"currency":"EURO","amount":1}"#.to_owned()];
    cases.push((
        "unknown opening currency",
        bad_opening,
        "openingBalances[0].currency: unknown currency code (4 characters)",
    ));
    let twice = base().opening("EUR", 5);
    cases.push((
        "repeated opening currency",
        twice,
        "openingBalances[1].currency: repeated currency (first at openingBalances[0])",
    ));
    let mut other = base();
    other.header_id = "m_other".to_owned();
    cases.push((
        "other merchant's data",
        other,
        r#"merchant.id: expected "m_bad", found "m_other""#,
    ));
    cases
}

/// Each rule of [`validation_cases`] refuses with its exact message.
pub async fn validation_errors(h: &dyn Harness) {
    for (name, data, message) in validation_cases() {
        let source = h.source_with(&data).await;
        let got = collect(&*source, &mid(&data.merchant_id), everything()).await;
        assert_eq!(
            got.err(),
            Some(SourceError::Invalid(message.to_owned())),
            "{name}"
        );
    }
}

/// Every merchant of `source` by following cursors from the start with `limit`, and the
/// size of each page; panics after more pages than `max_pages` (a cursor that never ends).
pub async fn list_all(
    source: &dyn Source,
    limit: u32,
    max_pages: usize,
) -> Result<(Vec<String>, Vec<usize>), SourceError> {
    let mut ids = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        assert!(sizes.len() < max_pages, "more than {max_pages} pages");
        let page = source.list_merchants(cursor.as_deref(), limit).await?;
        sizes.push(page.merchants.len());
        ids.extend(page.merchants.iter().map(ToString::to_string));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok((ids, sizes)),
        }
    }
}

/// Seven merchants in an order that is not theirs, with and without a time zone.
fn merchants() -> Vec<Dataset> {
    ["m_g", "m_b", "M_Z", "m_a", "m-dash", "m_c0", "m_c"]
        .into_iter()
        .enumerate()
        .map(|(i, id)| {
            let mut data = Dataset::new(id).entry("tx_1", "2026-10-01T00:00:00Z", "FEE", -1, "EUR");
            if i % 2 == 0 {
                data.timezone = Some("Pacific/Kiritimati".to_owned());
            }
            data
        })
        .collect()
}

/// Every merchant is listed exactly once, sorted by id, whatever the page size; pages hold
/// `limit` merchants but the last, which is never empty unless the source is; listing
/// again gives the same; each merchant listed can be read.
pub async fn listing_pages(h: &dyn Harness) {
    let data = merchants();
    let source = h.source_with_all(&data).await;
    let mut expected: Vec<String> = data.iter().map(|d| d.merchant_id.clone()).collect();
    // Byte order: `-`, digits, upper case, `_`, lower case.
    expected.sort();
    assert_eq!(
        expected,
        ["M_Z", "m-dash", "m_a", "m_b", "m_c", "m_c0", "m_g"]
    );
    let n = expected.len();
    for limit in [1_u32, 2, 3, 6, 7, 8, 1000, u32::MAX] {
        let (ids, sizes) = list_all(&*source, limit, n + 2).await.expect("list");
        assert_eq!(ids, expected, "limit {limit}");
        let page = usize::try_from(limit).unwrap_or(usize::MAX);
        let pages = n.div_ceil(page.min(n));
        assert_eq!(sizes.len(), pages, "limit {limit}: {sizes:?}");
        assert!(
            sizes.iter().all(|&size| size >= 1 && size <= page),
            "limit {limit}: {sizes:?}"
        );
        assert!(
            sizes[..pages - 1].iter().all(|&size| size == page),
            "limit {limit}: {sizes:?}"
        );
        let (again, _) = list_all(&*source, limit, n + 2).await.expect("list again");
        assert_eq!(again, ids, "limit {limit}: a second listing differs");
    }
    // A page taken up again from the same cursor is the same page.
    let first = source.list_merchants(None, 3).await.expect("first page");
    let cursor = first.next_cursor.clone().expect("a second page");
    let second = source
        .list_merchants(Some(&cursor), 3)
        .await
        .expect("second page");
    assert_eq!(
        source.list_merchants(Some(&cursor), 3).await,
        Ok(second.clone())
    );
    assert_eq!(
        second
            .merchants
            .iter()
            .map(MerchantId::as_str)
            .collect::<Vec<_>>(),
        ["m_b", "m_c", "m_c0"]
    );
    for id in &expected {
        let merchant = source.merchant(&mid(id)).await.expect("a listed merchant");
        assert_eq!(merchant.id.as_str(), id);
    }
}

/// A source without merchants lists one empty page without a cursor; a cursor past the last
/// merchant gives the same.
pub async fn listing_empty(h: &dyn Harness) {
    let empty = h.source_with_all(&[]).await;
    for limit in [1, 1000] {
        assert_eq!(
            empty.list_merchants(None, limit).await,
            Ok(MerchantPage {
                merchants: Vec::new(),
                next_cursor: None,
            }),
            "limit {limit}"
        );
    }
    let source = h.source_with_all(&merchants()).await;
    for past in ["m_g", "m_z", "zzz"] {
        assert_eq!(
            source.list_merchants(Some(past), 10).await,
            Ok(MerchantPage {
                merchants: Vec::new(),
                next_cursor: None,
            }),
            "after {past}"
        );
    }
    // One before the last: the last alone.
    assert_eq!(
        source.list_merchants(Some("m_c0"), 10).await,
        Ok(MerchantPage {
            merchants: vec![mid("m_g")],
            next_cursor: None,
        })
    );
}

/// The listing checks.
pub async fn run_listing(h: &dyn Harness) {
    listing_pages(h).await;
    listing_empty(h).await;
}

/// All of the above.
pub async fn run_all(h: &dyn Harness) {
    merchant_header(h).await;
    window_cutting(h).await;
    multi_currency_opening(h).await;
    empty_window(h).await;
    unknown_merchant(h).await;
    validation_errors(h).await;
    run_listing(h).await;
}
