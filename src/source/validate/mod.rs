//! Strict validation of source data (header, pages and entries) shared by every adapter, so a
//! bad field gets the same `entries[17].amount: expected integer, found a decimal number`
//! message whichever backend delivered it.
//!
//! Messages are stored at rest (a ledger's `failureReason`), so they name the JSON path, what
//! was expected and what kind of value was found, never the value: no id, amount, timestamp,
//! currency, description or reference of a merchant's data appears in them (its merchant id
//! and the schema's own names do).
//!
//! Each JSON text is first deserialized into borrowed typed structs ([`typed`], the fast
//! path, which is all a valid input ever costs). Only when that fails is it re-read as a
//! loose tree that keeps every field ([`loose`], the slow path), to name the exact field and
//! what was wrong with it. Both paths end in the same semantic checks (here), and both refuse
//! the same inputs: the typed path's rules (integer `i64`, strings, optional `reference`,
//! repeated keys refused, unknown keys ignored) are spelled out again by the slow path.
//!
//! A page of the merchant list ([`parse_merchant_page`]) is small and read once per page, not
//! once per entry: it takes the slow path alone, so there is one reading of it to keep right.

mod loose;
#[cfg(test)]
mod tests;
mod typed;

use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};

use self::loose::{
    Loose, balances_parts, cursor_part, entries_in_header, entry_parts, entry_path, explain, field,
    header_parts, json_error, listed_parts, listing_members, merchant_parts, not_an_array, object,
};
use self::typed::{RawBalance, RawEntry, RawHeaderDoc, RawMerchant, Str};
use super::{MerchantPage, SourceError};
use crate::domain::{Balance, Currency, Entry, EntryType, Locale, Merchant, MerchantId, Timezone};

/// Longest entry id accepted, in characters.
pub const MAX_ID_CHARS: usize = 128;

/// The merchant header of a file or page: who, and the balances before its first entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The merchant (its id equals the requested one).
    pub merchant: Merchant,
    /// Balances before the first entry, one per currency, in source order.
    pub opening_balances: Vec<Balance>,
}

/// What [`EntryValidator::next_from_stream`] found.
#[derive(Debug)]
pub enum Streamed {
    /// The entry, validated, and the length of its JSON text.
    Entry(Entry, usize),
    /// The text ends before the entry does: more is needed.
    Incomplete,
    /// The entry is not a valid one; [`EntryValidator::next_from_json`] over exactly its
    /// text says why.
    Unreadable,
}

/// Validates a merchant's entries one after the other: fields, ascending (`bookedAt`, `id`)
/// order and unique ids across the whole stream. Keep one per stream (across pages).
#[derive(Debug, Clone, Default)]
pub struct EntryValidator {
    next_index: u64,
    last_at: Option<DateTime<Utc>>,
    /// Reused buffer: copying the previous id into it avoids one allocation per entry.
    last_id: String,
    /// 64-bit hashes of every id seen rather than the ids: 8 bytes an entry whatever the id
    /// length. A collision (about 3e-8 for a million ids) would refuse a valid stream as a
    /// repeated id, never accept a bad one; that trade buys bounded memory.
    seen: IdSet,
    /// Ids accepted but not yet checked against `seen` (hash, entry index), checked
    /// [`PENDING`] at a time: once the set outgrows the caches each check waits on memory,
    /// and a group's reads overlap where single ones would stall one after the other (a
    /// fifth of the time a million entries took). Any error, and [`EntryValidator::finish`],
    /// checks them first, so the earliest problem is still the one reported.
    pending: Vec<(u64, u64)>,
}

/// Ids checked together (see [`EntryValidator::pending`]).
const PENDING: usize = 16;

/// A set of 64-bit id hashes: open addressing with linear probing, so an insert touches one
/// or two cache lines. With a million entries the set outgrows the caches and a general hash set's
/// two random reads per insert (control byte, then slot) cost more than parsing the JSON.
#[derive(Debug, Clone, Default)]
struct IdSet {
    /// A power of two long (or empty); 0 marks a free slot.
    slots: Vec<u64>,
    len: usize,
}

impl IdSet {
    /// `false` when `hash` was present already.
    fn insert(&mut self, hash: u64) -> bool {
        // 0 means free, so hash 0 is stored as 1: one more collision in 2^64.
        let hash = hash.max(1);
        // Filled up to three quarters: 11 to 21 bytes an id (8 at full load), and a miss
        // probes about eight slots, one or two cache lines.
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        // The hash is uniformly mixed, so its low bits are a fine slot number.
        let mut i = (hash as usize) & mask;
        loop {
            match self.slots[i] {
                0 => {
                    self.slots[i] = hash;
                    self.len += 1;
                    return true;
                }
                h if h == hash => return false,
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// Reads the slot `hash` would start at, so it is in the cache when inserted.
    fn touch(&self, hash: u64) {
        if !self.slots.is_empty() {
            let i = (hash.max(1) as usize) & (self.slots.len() - 1);
            std::hint::black_box(self.slots[i]);
        }
    }

    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(1024);
        let old = std::mem::replace(&mut self.slots, vec![0; size]);
        self.len = 0;
        for hash in old.into_iter().filter(|h| *h != 0) {
            self.insert(hash);
        }
    }
}

impl EntryValidator {
    /// A validator at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many entries were accepted so far (also the index the next entry gets).
    pub fn count(&self) -> u64 {
        self.next_index
    }

    /// A validator that goes on from entry `next_index` of a stream whose entries before it
    /// were all validated already, the last of them booked at `last_at` with id `last_id`:
    /// the order and every field are still checked, and ids against those seen from here
    /// on. Only for a stream known to repeat no id before `next_index` or across it (an
    /// indexed file: [`crate::source::file`]).
    pub fn resume(next_index: u64, last_at: DateTime<Utc>, last_id: &str) -> Self {
        Self {
            next_index,
            last_at: Some(last_at),
            last_id: last_id.to_owned(),
            ..Self::default()
        }
    }

    /// When the last entry accepted was booked, and its id.
    pub fn last(&self) -> Option<(DateTime<Utc>, &str)> {
        self.last_at.map(|at| (at, self.last_id.as_str()))
    }

    /// Parses and validates the next entry from one JSON object (an NDJSON line).
    pub fn next_from_json(&mut self, json: &[u8]) -> Result<Entry, SourceError> {
        self.next_from_json_with(json, |checked| checked.entry())
    }

    /// [`Self::next_from_json`], handing the validated entry to `then` while it still
    /// borrows the line: an entry only folded into a balance is never copied out.
    pub fn next_from_json_with<T>(
        &mut self,
        json: &[u8],
        then: impl FnOnce(Checked<'_>) -> T,
    ) -> Result<T, SourceError> {
        let index = self.next_index;
        // One UTF-8 check of the whole line is cheaper than serde_json's check of each string
        // on its own; a line that fails it fails `from_slice` too, so the slow path explains.
        let typed = match std::str::from_utf8(json) {
            Ok(text) => serde_json::from_str::<RawEntry<'_>>(text),
            Err(_) => serde_json::from_slice::<RawEntry<'_>>(json),
        };
        match typed {
            Ok(raw) => self.accept(raw.parts(), index).map(then),
            Err(typed) => {
                let e = explain(json, &typed, &entry_path(index), |value, path| {
                    entry_parts(value, path).map(drop)
                });
                Err(self.first_error(e))
            }
        }
    }

    /// Parses and validates the next entry from the start of `bytes`, where it lies in a
    /// longer text (an element of a page's `entries`, followed by the rest of the page as far
    /// as it has arrived). Its end is found by the parse itself.
    pub fn next_from_stream(&mut self, bytes: &[u8]) -> Result<Streamed, SourceError> {
        let mut stream = serde_json::Deserializer::from_slice(bytes).into_iter::<RawEntry<'_>>();
        match stream.next() {
            Some(Ok(raw)) => {
                let len = stream.byte_offset();
                let index = self.next_index;
                self.accept(raw.parts(), index)
                    .map(|checked| Streamed::Entry(checked.entry(), len))
            }
            Some(Err(e)) if e.is_eof() => Ok(Streamed::Incomplete),
            None => Ok(Streamed::Incomplete),
            Some(Err(_)) => Ok(Streamed::Unreadable),
        }
    }

    /// Checks the ids still pending: call it where the stream ends (whether it was read to
    /// its end or only to the end of a window), before it counts as valid.
    pub fn finish(&mut self) -> Result<(), SourceError> {
        self.check_pending()
    }

    /// `e`, unless an id pending before it turns out repeated: that earlier problem is the
    /// one to report. Every error of the stream goes through here.
    pub fn first_error(&mut self, e: SourceError) -> SourceError {
        self.check_pending().err().unwrap_or(e)
    }

    fn check_pending(&mut self) -> Result<(), SourceError> {
        // Independent reads first, so their misses overlap; then the inserts, in order,
        // find their slots in the cache.
        for (hash, _) in &self.pending {
            self.seen.touch(*hash);
        }
        for i in 0..self.pending.len() {
            let (hash, index) = self.pending[i];
            if !self.seen.insert(hash) {
                // Only hashes are kept, so where the id was first seen is not known.
                self.pending.clear();
                return Err(invalid(format!("entries[{index}].id"), "repeated entry id"));
            }
        }
        self.pending.clear();
        Ok(())
    }

    /// The shared semantic checks and the stream checks (uniqueness, order).
    fn accept<'r>(&mut self, raw: EntryParts<'r>, index: u64) -> Result<Checked<'r>, SourceError> {
        self.accept_fields(raw, index)
            .map_err(|e| self.first_error(e))
    }

    fn accept_fields<'r>(
        &mut self,
        raw: EntryParts<'r>,
        index: u64,
    ) -> Result<Checked<'r>, SourceError> {
        let at = |field: &str| format!("entries[{index}].{field}");
        let id_chars = raw.id.chars().count();
        if id_chars == 0 {
            return Err(invalid(at("id"), "expected a non-empty string"));
        }
        if id_chars > MAX_ID_CHARS {
            return Err(invalid(
                at("id"),
                format!("longer than {MAX_ID_CHARS} characters ({id_chars})"),
            ));
        }
        let booked_at = parse_booked_at(raw.booked_at)
            .ok_or_else(|| invalid(at("bookedAt"), "expected an RFC 3339 timestamp with offset"))?;
        let entry_type = EntryType::parse(raw.entry_type).ok_or_else(|| {
            invalid(
                at("type"),
                "expected one of PAYMENT, REFUND, FEE, PAYOUT, ADJUSTMENT, CHARGEBACK",
            )
        })?;
        let currency = parse_currency(raw.currency, || at("currency"))?;
        // Checked with the next ones, or before any error (this entry's order included).
        self.pending.push((id_hash(raw.id), index));

        if let Some(last_at) = self.last_at {
            let previous = index.wrapping_sub(1);
            if booked_at < last_at {
                return Err(invalid(
                    at("bookedAt"),
                    format!("out of order (before entries[{previous}])"),
                ));
            }
            if booked_at == last_at && raw.id <= self.last_id.as_str() {
                return Err(invalid(
                    at("id"),
                    format!(
                        "out of order (not after entries[{previous}].id, booked at the same instant)"
                    ),
                ));
            }
        }
        if self.pending.len() >= PENDING {
            self.check_pending()?;
        }
        self.last_at = Some(booked_at);
        self.last_id.clear();
        self.last_id.push_str(raw.id);
        self.next_index = index + 1;
        Ok(Checked {
            booked_at,
            entry_type,
            currency,
            raw,
        })
    }
}

/// An entry that passed validation, its text still borrowed from where it was read.
pub struct Checked<'r> {
    /// When it was booked.
    pub booked_at: DateTime<Utc>,
    entry_type: EntryType,
    /// Its currency.
    pub currency: Currency,
    raw: EntryParts<'r>,
}

impl Checked<'_> {
    /// Signed minor units.
    pub fn amount(&self) -> i64 {
        self.raw.amount
    }

    /// The entry, its text copied out.
    pub fn entry(self) -> Entry {
        Entry {
            id: self.raw.id.to_owned(),
            booked_at: self.booked_at,
            entry_type: self.entry_type,
            amount: self.raw.amount,
            currency: self.currency,
            description: self.raw.description.to_owned(),
            reference: self.raw.reference.unwrap_or_default().to_owned(),
        }
    }
}

/// Parses a header object (`merchant`, `openingBalances`), as on the first NDJSON line.
/// An `entries` member is refused: entries belong on their own lines.
pub fn parse_header(json: &[u8], expected: &MerchantId) -> Result<Header, SourceError> {
    match serde_json::from_slice::<RawHeaderDoc<'_>>(json) {
        Ok(raw) => {
            if raw.entries.is_some() {
                return Err(entries_in_header());
            }
            finish_header(
                &raw.merchant.parts(),
                raw.opening_balances.iter().map(RawBalance::parts),
                expected,
            )
        }
        Err(typed) => Err(explain(json, &typed, "", |value, _| {
            let doc = object(value, "")?;
            if field(doc, "", "entries")?.is_some_and(|v| !matches!(v, Loose::Null)) {
                return Err(entries_in_header());
            }
            header_parts(doc).map(drop)
        })),
    }
}

/// Parses the `merchant` member of a page (`json` is its value) and checks it names
/// `expected`.
pub fn parse_merchant(json: &[u8], expected: &MerchantId) -> Result<Merchant, SourceError> {
    match serde_json::from_slice::<RawMerchant<'_>>(json) {
        Ok(raw) => finish_merchant(&raw.parts(), expected),
        Err(typed) => Err(explain(json, &typed, "merchant", |value, _| {
            merchant_parts(value).map(drop)
        })),
    }
}

/// Parses the `openingBalances` member of a page (`json` is its value).
pub fn parse_opening_balances(json: &[u8]) -> Result<Vec<Balance>, SourceError> {
    match serde_json::from_slice::<Vec<RawBalance<'_>>>(json) {
        Ok(raw) => finish_balances(raw.iter().map(RawBalance::parts)),
        Err(typed) => Err(explain(json, &typed, "openingBalances", |value, _| {
            balances_parts(value).map(drop)
        })),
    }
}

/// Parses the `nextCursor` member of a page (`json` is its value): a string, or null on the
/// last page.
pub fn parse_next_cursor(json: &[u8]) -> Result<Option<String>, SourceError> {
    match serde_json::from_slice::<Option<Str<'_>>>(json) {
        Ok(raw) => Ok(raw.map(|c| c.0.into_owned())),
        Err(typed) => Err(explain(json, &typed, "nextCursor", |value, _| {
            cursor_part(value)
        })),
    }
}

/// Parses a page of the merchant list, `{"merchants": [{"id", "name", "timezone"}],
/// "nextCursor": string | null}`: every `id` a merchant id, once in the page; `name` a
/// string; `timezone`, when present and not null, an IANA zone; `nextCursor` absent or null
/// on the last page. Other members are ignored, a member given twice is refused. Only the
/// ids are kept.
pub fn parse_merchant_page(json: &[u8]) -> Result<MerchantPage, SourceError> {
    let value = serde_json::from_slice::<Loose>(json).map_err(|syntax| {
        SourceError::Invalid(format!("invalid JSON ({})", json_error(&syntax)))
    })?;
    let (items, next_cursor) = listing_members(&value)?;
    let mut merchants = Vec::with_capacity(items.len());
    // Where each id was first met, to name both places of a repeated one.
    let mut first_at: HashMap<&str, usize> = HashMap::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let item = listed_parts(item, &format!("merchants[{i}]"))?;
        // Merchant ids may be shown (quoted and cut): they are not entry data.
        let id = MerchantId::parse(item.id).map_err(|_| {
            invalid(
                format!("merchants[{i}].id"),
                format!(
                    "expected a merchant id ([A-Za-z0-9_-]{{1,64}}), found {}",
                    quoted(item.id)
                ),
            )
        })?;
        if let Some(first) = first_at.insert(item.id, i) {
            return Err(invalid(
                format!("merchants[{i}].id"),
                format!("repeated merchant id (first at merchants[{first}])"),
            ));
        }
        if let Some(raw) = item.timezone {
            Timezone::parse(raw)
                .map_err(|_| invalid(format!("merchants[{i}].timezone"), "unknown time zone"))?;
        }
        merchants.push(id);
    }
    Ok(MerchantPage {
        merchants,
        next_cursor: next_cursor.map(str::to_owned),
    })
}

/// The error for an `entries` member whose value (`json`) is not an array.
pub fn entries_not_an_array(json: &[u8]) -> SourceError {
    match serde_json::from_slice::<Loose>(json) {
        Ok(value) => not_an_array("entries", &value),
        Err(syntax) => invalid(
            "entries",
            format!("invalid JSON ({})", loose::json_error(&syntax)),
        ),
    }
}

// ---------------------------------------------------------------------------------------
// Shared semantic checks: what both paths hand over, and what is made of it.

struct EntryParts<'a> {
    id: &'a str,
    booked_at: &'a str,
    entry_type: &'a str,
    amount: i64,
    currency: &'a str,
    description: &'a str,
    reference: Option<&'a str>,
}

struct MerchantParts<'a> {
    id: &'a str,
    name: &'a str,
    timezone: Option<&'a str>,
    locale: Option<&'a str>,
}

/// One item of a merchant list page (its `name`, a string, is not kept).
struct ListedParts<'a> {
    id: &'a str,
    timezone: Option<&'a str>,
}

struct BalanceParts<'a> {
    currency: &'a str,
    amount: i64,
}

fn finish_header<'a>(
    merchant: &MerchantParts<'_>,
    balances: impl Iterator<Item = BalanceParts<'a>>,
    expected: &MerchantId,
) -> Result<Header, SourceError> {
    Ok(Header {
        merchant: finish_merchant(merchant, expected)?,
        opening_balances: finish_balances(balances)?,
    })
}

fn finish_merchant(
    merchant: &MerchantParts<'_>,
    expected: &MerchantId,
) -> Result<Merchant, SourceError> {
    // Merchant ids may be shown: they are not entry data.
    if merchant.id != expected.as_str() {
        return Err(invalid(
            "merchant.id",
            format!(
                "expected {}, found {}",
                quoted(expected.as_str()),
                quoted(merchant.id)
            ),
        ));
    }
    let timezone = match merchant.timezone {
        None => None,
        Some(raw) => Some(
            Timezone::parse(raw).map_err(|_| invalid("merchant.timezone", "unknown time zone"))?,
        ),
    };
    // Only the syntax is checked: a well-formed tag the documents do not know falls back
    // (render::locale), a malformed one is the source's error to fix.
    let locale = match merchant.locale {
        None => None,
        Some(raw) => Some(
            Locale::parse(raw).map_err(|e| invalid(format!("merchant.{}", e.field), e.message))?,
        ),
    };
    Ok(Merchant {
        id: expected.clone(),
        name: merchant.name.to_owned(),
        timezone,
        locale,
    })
}

fn finish_balances<'a>(
    balances: impl Iterator<Item = BalanceParts<'a>>,
) -> Result<Vec<Balance>, SourceError> {
    let mut opening_balances: Vec<Balance> = Vec::new();
    for (i, balance) in balances.enumerate() {
        let currency = parse_currency(balance.currency, || {
            format!("openingBalances[{i}].currency")
        })?;
        if let Some(first) = opening_balances.iter().position(|b| b.currency == currency) {
            return Err(invalid(
                format!("openingBalances[{i}].currency"),
                format!("repeated currency (first at openingBalances[{first}])"),
            ));
        }
        opening_balances.push(Balance {
            currency,
            amount: balance.amount,
        });
    }
    Ok(opening_balances)
}

fn parse_currency(raw: &str, path: impl FnOnce() -> String) -> Result<Currency, SourceError> {
    Currency::parse(raw).ok_or_else(|| {
        let n = raw.chars().count();
        let s = if n == 1 { "" } else { "s" };
        invalid(path(), format!("unknown currency code ({n} character{s})"))
    })
}

fn invalid(path: impl Into<String>, message: impl fmt::Display) -> SourceError {
    SourceError::Invalid(format!("{}: {message}", path.into()))
}

/// A 64-bit hash of an entry id, stable for the whole stream: foldhash (folded 64×64→128
/// multiplies), a fraction of SipHash's cost. Its quality matters: a home-made
/// multiply-rotate chain tried here collided on `tx_03952026` / `tx_03109099` within 10
/// million sequential ids. It need not resist chosen collisions, which could only make a
/// source refuse its own valid stream.
pub(in crate::source) fn id_hash(id: &str) -> u64 {
    use std::hash::BuildHasher;
    foldhash::quality::FixedState::with_seed(0x001e_d9e5).hash_one(id)
}

/// An RFC 3339 timestamp with offset. The common `YYYY-MM-DDTHH:MM:SSZ` is read by hand
/// (chrono's general parser is a tenth of the time per entry); anything else, offsets,
/// fractions, leap seconds and every malformed value included, goes through chrono, which
/// accepts the hand-read shape with the same result.
fn parse_booked_at(raw: &str) -> Option<DateTime<Utc>> {
    let b = raw.as_bytes();
    if let [
        y0,
        y1,
        y2,
        y3,
        b'-',
        m0,
        m1,
        b'-',
        d0,
        d1,
        b'T',
        h0,
        h1,
        b':',
        i0,
        i1,
        b':',
        s0,
        s1,
        b'Z',
    ] = *b
    {
        let num = |digits: &[u8]| {
            digits.iter().try_fold(0u32, |acc, &c| {
                c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
            })
        };
        let fields = (
            num(&[y0, y1, y2, y3]).and_then(|y| i32::try_from(y).ok()),
            num(&[m0, m1]),
            num(&[d0, d1]),
            num(&[h0, h1]),
            num(&[i0, i1]),
            num(&[s0, s1]).filter(|s| *s < 60),
        );
        if let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(sec)) = fields
            && let Some(t) =
                NaiveDate::from_ymd_opt(y, mo, d).and_then(|d| d.and_hms_opt(h, mi, sec))
        {
            return Some(t.and_utc());
        }
    }
    DateTime::parse_from_rfc3339(raw)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A merchant id quoted for a message, cut so a huge bad field cannot flood a log line. Never
/// used on entry data.
fn quoted(raw: &str) -> String {
    const MAX: usize = 64;
    if raw.chars().count() <= MAX {
        format!("{raw:?}")
    } else {
        let head: String = raw.chars().take(MAX).collect();
        format!("{head:?}…")
    }
}
