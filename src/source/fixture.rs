//! Deterministic source data for tests, examples and benchmarks: realistic merchant histories
//! written as `.json` or `.ndjson` in the source schema.

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
    write_page(path, spec, false)
}

/// Like [`write_json`], with `entries` before `merchant` and `openingBalances` (a page the
/// source reads twice).
pub fn write_json_entries_first(path: &Path, spec: &FixtureSpec<'_>) -> io::Result<()> {
    write_page(path, spec, true)
}

fn write_page(path: &Path, spec: &FixtureSpec<'_>, entries_first: bool) -> io::Result<()> {
    let generator = generate(spec)?;
    let mut out = BufWriter::with_capacity(1 << 16, File::create(path)?);
    if !entries_first {
        out.write_all(b"{")?;
        write_header_members(&mut out, spec)?;
        out.write_all(b",\n")?;
    } else {
        out.write_all(b"{\n")?;
    }
    out.write_all(b" \"entries\": [")?;
    for (i, entry) in generator.enumerate() {
        out.write_all(if i == 0 { b"\n  " } else { b",\n  " })?;
        write_entry(&mut out, &entry, i as u64, spec.timezone)?;
    }
    out.write_all(b"\n ],\n \"nextCursor\": null")?;
    if entries_first {
        out.write_all(b",\n ")?;
        write_header_members(&mut out, spec)?;
    }
    out.write_all(b"}\n")?;
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
