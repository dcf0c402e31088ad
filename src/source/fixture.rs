//! Deterministic source data for tests, examples and benchmarks: realistic merchant histories
//! written as `.json` or `.ndjson` in the source schema, plus (in tests) the contract checks
//! every [`Source`](super::Source) adapter must pass.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use chrono::{DateTime, Datelike, SecondsFormat, TimeDelta, Timelike, Utc};

use crate::domain::{Currency, Entry, EntryType, Timezone};

/// What to generate. Equal specs give byte-identical files.
#[derive(Debug, Clone)]
pub struct FixtureSpec<'a> {
    /// `merchant.id`, also the file's stem.
    pub merchant_id: &'a str,
    /// `merchant.name`.
    pub name: &'a str,
    /// `merchant.timezone`; `None` leaves it out (the merchant then reads as UTC).
    pub timezone: Option<&'a str>,
    /// Currencies with their opening balance in minor units; the first gets most entries.
    pub currencies: Vec<(&'a str, i64)>,
    /// Number of entries.
    pub entries: u64,
    /// Booking time of the first entry.
    pub start: DateTime<Utc>,
    /// Average seconds between entries (each gets a jitter below it).
    pub step_seconds: i64,
    /// PRNG seed.
    pub seed: u64,
}

impl<'a> FixtureSpec<'a> {
    /// `entries` EUR entries from 2026-01-01 one every 5 minutes, opening 0, no time zone.
    pub fn new(merchant_id: &'a str, entries: u64) -> Self {
        Self {
            merchant_id,
            name: "Fixture Merchant",
            timezone: None,
            currencies: vec![("EUR", 0)],
            entries,
            start: DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default(),
            step_seconds: 300,
            seed: 42,
        }
    }

    /// The step that spreads the entries evenly over `[start, end)`.
    pub fn spread_until(mut self, end: DateTime<Utc>) -> Self {
        let seconds = (end - self.start).num_seconds().max(0);
        self.step_seconds = seconds / i64::try_from(self.entries.max(1)).unwrap_or(i64::MAX);
        self
    }
}

/// Writes `spec` as NDJSON: the header line, then one entry per line.
pub fn write_ndjson(path: &Path, spec: &FixtureSpec<'_>) -> io::Result<()> {
    let generator = generate(spec)?;
    let mut out = BufWriter::with_capacity(1 << 16, File::create(path)?);
    out.write_all(b"{")?;
    write_header_members(&mut out, spec)?;
    out.write_all(b"}\n")?;
    for (i, entry) in generator.enumerate() {
        write_entry(&mut out, &entry, i as u64, spec.timezone)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Writes `spec` as one JSON page (`nextCursor: null`), one entry per line for readability.
pub fn write_json(path: &Path, spec: &FixtureSpec<'_>) -> io::Result<()> {
    let generator = generate(spec)?;
    let mut out = BufWriter::with_capacity(1 << 16, File::create(path)?);
    out.write_all(b"{")?;
    write_header_members(&mut out, spec)?;
    out.write_all(b",\n \"entries\": [")?;
    for (i, entry) in generator.enumerate() {
        out.write_all(if i == 0 { b"\n  " } else { b",\n  " })?;
        write_entry(&mut out, &entry, i as u64, spec.timezone)?;
    }
    out.write_all(b"\n ],\n \"nextCursor\": null}\n")?;
    out.flush()
}

/// The entries `spec` describes, in file order, as the source would validate them.
pub fn generate(spec: &FixtureSpec<'_>) -> io::Result<Generator> {
    let currencies = spec
        .currencies
        .iter()
        .map(|(code, _)| {
            Currency::parse(code).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("unknown currency {code}"),
                )
            })
        })
        .collect::<io::Result<Vec<_>>>()?;
    if currencies.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no currency"));
    }
    Ok(Generator {
        rng: SplitMix64(spec.seed),
        currencies,
        index: 0,
        total: spec.entries,
        start: spec.start,
        step: spec.step_seconds.max(0),
        previous: None,
    })
}

/// Iterator over a fixture's entries.
#[derive(Debug, Clone)]
pub struct Generator {
    rng: SplitMix64,
    currencies: Vec<Currency>,
    index: u64,
    total: u64,
    start: DateTime<Utc>,
    step: i64,
    previous: Option<DateTime<Utc>>,
}

impl Iterator for Generator {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        if self.index >= self.total {
            return None;
        }
        let i = self.index;
        self.index += 1;
        let rng = &mut self.rng;

        // Jitter below one step keeps times ascending; every 41st entry shares its
        // predecessor's second so the `id` tie-break gets exercised.
        let jitter = if self.step > 1 {
            rng.below(self.step as u64 / 2) as i64
        } else {
            0
        };
        let offset = i64::try_from(i)
            .unwrap_or(i64::MAX)
            .saturating_mul(self.step)
            + jitter;
        let mut booked_at = self.start + TimeDelta::seconds(offset);
        if let Some(previous) = self.previous.filter(|_| i.is_multiple_of(41)) {
            booked_at = previous;
        }
        self.previous = Some(booked_at);

        // Two thirds of the entries in the first currency, the rest spread over the others.
        let currency = if self.currencies.len() == 1 || rng.below(3) < 2 {
            self.currencies[0]
        } else {
            self.currencies[1 + rng.below(self.currencies.len() as u64 - 1) as usize]
        };
        let roll = rng.below(100);
        let entry_type = match roll {
            0..62 => EntryType::Payment,
            62..76 => EntryType::Fee,
            76..84 => EntryType::Refund,
            84..90 => EntryType::Payout,
            90..95 => EntryType::Adjustment,
            _ => EntryType::Chargeback,
        };
        // Amounts in major units scaled to the currency: yen amounts are a hundredfold.
        let major: i64 = if currency.exponent() == 0 { 100 } else { 1 };
        let unit = 10_i64.pow(u32::from(currency.exponent())) * major;
        let mut between = |lo: i64, hi: i64| {
            let span = (hi - lo) * unit;
            lo * unit + rng.below(span.max(1) as u64) as i64
        };
        let order = 1000 + i;
        let (amount, description, reference) = match entry_type {
            EntryType::Payment => {
                let description = match i % 97 {
                    17 => "Café Müller, \"Zahlung\"".to_owned(),
                    60 => "Gift card\nmessage: \"Happy birthday!\"".to_owned(),
                    n if n % 7 == 3 => format!("Order {order}, 2 items"),
                    _ => format!("Order {order}"),
                };
                (between(5, 500), description, format!("ord_{order}"))
            }
            EntryType::Refund => {
                let of = order.saturating_sub(1 + i % 40).max(1000);
                (
                    -between(5, 200),
                    format!("Refund for order {of}"),
                    format!("ord_{of}"),
                )
            }
            EntryType::Fee => (
                -(between(0, 5) + 10),
                "Processing fee, card".to_owned(),
                String::new(),
            ),
            EntryType::Payout => (
                -between(200, 2000),
                "Payout to bank account ending 4821".to_owned(),
                format!("po_{}", 500 + i / 50),
            ),
            EntryType::Adjustment => {
                let amount = between(1, 50);
                let (amount, text) = if rng.below(2) == 0 {
                    (amount, "Manual adjustment: goodwill credit")
                } else {
                    (-amount, "Manual adjustment: correction")
                };
                (amount, text.to_owned(), String::new())
            }
            EntryType::Chargeback => (
                -between(5, 300),
                format!("Chargeback, dispute dp_{order}"),
                format!("ord_{}", order.saturating_sub(11 + i % 90).max(1000)),
            ),
        };
        Some(Entry {
            id: format!("tx_{i:08}"),
            booked_at,
            entry_type,
            amount,
            currency,
            description,
            reference,
        })
    }
}

/// Writes the header members `"merchant":{…},"openingBalances":[…]` (no braces around them),
/// keys in schema order.
fn write_header_members<W: Write>(out: &mut W, spec: &FixtureSpec<'_>) -> io::Result<()> {
    out.write_all(b"\"merchant\":{\"id\":")?;
    serde_json::to_writer(&mut *out, spec.merchant_id)?;
    out.write_all(b",\"name\":")?;
    serde_json::to_writer(&mut *out, spec.name)?;
    if let Some(tz) = spec.timezone {
        out.write_all(b",\"timezone\":")?;
        serde_json::to_writer(&mut *out, tz)?;
    }
    out.write_all(b"},\"openingBalances\":[")?;
    for (i, (currency, amount)) in spec.currencies.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        out.write_all(b"{\"currency\":")?;
        serde_json::to_writer(&mut *out, currency)?;
        write!(out, ",\"amount\":{amount}}}")?;
    }
    out.write_all(b"]")
}

/// Writes one entry object. `i` varies the spelling the schema allows (local offsets,
/// `reference: null` or absent, no `description`) so readers meet all of it.
pub fn write_entry<W: Write>(
    out: &mut W,
    entry: &Entry,
    i: u64,
    timezone: Option<&str>,
) -> io::Result<()> {
    out.write_all(b"{\"id\":")?;
    serde_json::to_writer(&mut *out, &entry.id)?;
    out.write_all(b",\"bookedAt\":\"")?;
    match timezone
        .and_then(|tz| Timezone::parse(tz).ok())
        .filter(|_| i % 2 == 1)
    {
        Some(tz) => out.write_all(
            entry
                .booked_at
                .with_timezone(&tz.0)
                .to_rfc3339_opts(SecondsFormat::Secs, true)
                .as_bytes(),
        )?,
        None => {
            let t = entry.booked_at;
            write!(
                out,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                t.year(),
                t.month(),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )?;
        }
    }
    write!(
        out,
        "\",\"type\":\"{}\",\"amount\":{},\"currency\":\"{}\"",
        entry.entry_type.as_str(),
        entry.amount,
        entry.currency
    )?;
    if !(entry.description.is_empty() && i.is_multiple_of(2)) {
        out.write_all(b",\"description\":")?;
        serde_json::to_writer(&mut *out, &entry.description)?;
    }
    if !entry.reference.is_empty() {
        out.write_all(b",\"reference\":")?;
        serde_json::to_writer(&mut *out, &entry.reference)?;
    } else if !i.is_multiple_of(3) {
        out.write_all(b",\"reference\":null")?;
    }
    out.write_all(b"}")
}

/// splitmix64: tiny, fast, and good enough for plausible test data.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform enough in `[0, n)`; `0` when `n` is 0.
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// The checks every [`Source`](super::Source) adapter passes, written against `&dyn Source`
/// and a [`contract::Harness`] that builds a source holding a [`contract::Dataset`], so the
/// HTTP adapter can run them against a fake upstream.
#[cfg(test)]
pub mod contract {
    use async_trait::async_trait;
    use chrono::{DateTime, Utc};
    use futures::StreamExt;

    use crate::domain::{
        Balance, Currency, Entry, EntryType, Locale, Merchant, MerchantId, Timezone,
    };
    use crate::source::{Source, SourceError, Window};

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
        pub fn entry(
            mut self,
            id: &str,
            at: &str,
            kind: &str,
            amount: i64,
            currency: &str,
        ) -> Self {
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
        assert_eq!(
            opening,
            vec![Balance {
                currency: eur(),
                amount: 10_500
            }]
        );
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
        assert_eq!(
            opening,
            vec![Balance {
                currency: eur(),
                amount: 10_000
            }]
        );
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
        let (opening, entries) = collect(&*source, &mid("m_empty"), june)
            .await
            .expect("june");
        assert_eq!(
            opening,
            vec![Balance {
                currency: eur(),
                amount: 50
            }]
        );
        assert!(entries.is_empty());
        let early = window("2020-01-01T00:00:00Z", "2020-02-01T00:00:00Z");
        let (opening, entries) = collect(&*source, &mid("m_empty"), early)
            .await
            .expect("early");
        assert_eq!(
            opening,
            vec![Balance {
                currency: eur(),
                amount: 42
            }]
        );
        assert!(entries.is_empty());
        let late = window("2027-01-01T00:00:00Z", "2027-02-01T00:00:00Z");
        let (opening, entries) = collect(&*source, &mid("m_empty"), late)
            .await
            .expect("late");
        assert_eq!(
            opening,
            vec![Balance {
                currency: eur(),
                amount: 59
            }]
        );
        assert!(entries.is_empty());
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

    /// All of the above.
    pub async fn run_all(h: &dyn Harness) {
        merchant_header(h).await;
        window_cutting(h).await;
        multi_currency_opening(h).await;
        empty_window(h).await;
        unknown_merchant(h).await;
        validation_errors(h).await;
    }
}
