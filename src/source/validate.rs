//! Strict validation of source data (header, pages and entries) shared by every adapter, so a
//! bad field gets the same `entries[17].amount: expected integer, found a decimal number`
//! message whichever backend delivered it.
//!
//! Messages are stored at rest (a ledger's `failureReason`), so they name the JSON path, what
//! was expected and what kind of value was found, never the value: no id, amount, timestamp,
//! currency, description or reference of a merchant's data appears in them (its merchant id
//! and the schema's own names do).
//!
//! Each JSON text is first deserialized into borrowed typed structs (the fast path, which
//! is all a valid input ever costs). Only when that fails is it re-read as a loose tree that
//! keeps every field (the slow path), to name the exact field and what was wrong with it.
//! Both paths end in the same semantic checks, and both refuse the same inputs: the typed
//! path's rules (integer `i64`, strings, optional `reference`, repeated keys refused, unknown
//! keys ignored) are spelled out again in [`Loose`] and the `*_parts` functions below.

use std::borrow::Cow;
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};

use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::error::Category;

use super::SourceError;
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

/// One page of the source schema: the header, its entries and the cursor of the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The merchant and its opening balances.
    pub header: Header,
    /// The page's entries, validated (order and uniqueness checked across pages too).
    pub entries: Vec<Entry>,
    /// `nextCursor`: `None` on the last page.
    pub next_cursor: Option<String>,
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
}

/// A set of 64-bit id hashes: open addressing with linear probing, so an insert touches one
/// cache line. With a million entries the set outgrows the caches and a general hash set's
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
        if (self.len + 1) * 2 > self.slots.len() {
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

    /// Parses and validates the next entry from one JSON object (an NDJSON line).
    pub fn next_from_json(&mut self, json: &[u8]) -> Result<Entry, SourceError> {
        let index = self.next_index;
        // One UTF-8 check of the whole line is cheaper than serde_json's check of each string
        // on its own; a line that fails it fails `from_slice` too, so the slow path explains.
        let typed = match std::str::from_utf8(json) {
            Ok(text) => serde_json::from_str::<RawEntry<'_>>(text),
            Err(_) => serde_json::from_slice::<RawEntry<'_>>(json),
        };
        match typed {
            Ok(raw) => self.accept(raw.parts(), index),
            Err(typed) => Err(explain(json, &typed, &entry_path(index), |value, path| {
                entry_parts(value, path).map(drop)
            })),
        }
    }

    /// The shared semantic checks and the stream checks (uniqueness, order).
    fn accept(&mut self, raw: EntryParts<'_>, index: u64) -> Result<Entry, SourceError> {
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

        // Only hashes are kept, so where the id was first seen is not known here.
        if !self.seen.insert(id_hash(raw.id)) {
            return Err(invalid(at("id"), "repeated entry id"));
        }
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
        self.last_at = Some(booked_at);
        self.last_id.clear();
        self.last_id.push_str(raw.id);
        self.next_index = index + 1;
        Ok(Entry {
            id: raw.id.to_owned(),
            booked_at,
            entry_type,
            amount: raw.amount,
            currency,
            description: raw.description.to_owned(),
            reference: raw.reference.unwrap_or_default().to_owned(),
        })
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

/// Parses a whole page (`merchant`, `openingBalances`, `entries`, `nextCursor`) and validates
/// its entries with `validator`, which carries order, uniqueness and the entry index across
/// pages.
pub fn parse_page(
    json: &[u8],
    expected: &MerchantId,
    validator: &mut EntryValidator,
) -> Result<Page, SourceError> {
    let raw = match serde_json::from_slice::<RawPageDoc<'_>>(json) {
        Ok(raw) => raw,
        Err(typed) => {
            // The typed parse stops at the first problem; the walk names it, and the walk
            // checks entries in document order so an earlier semantic error wins, as it
            // would have on the fast path.
            let mut shadow = validator.clone();
            return Err(explain(json, &typed, "", |value, _| {
                page_parts(value, expected, &mut shadow).map(drop)
            }));
        }
    };
    let header = finish_header(
        &raw.merchant.parts(),
        raw.opening_balances.iter().map(RawBalance::parts),
        expected,
    )?;
    let mut entries = Vec::with_capacity(raw.entries.len());
    for entry in &raw.entries {
        let index = validator.next_index;
        entries.push(validator.accept(entry.parts(), index)?);
    }
    Ok(Page {
        header,
        entries,
        next_cursor: raw.next_cursor.map(|c| c.0.into_owned()),
    })
}

// ---------------------------------------------------------------------------------------
// Fast path: typed, borrowed.

/// A JSON string borrowed from the input when it has no escapes. Serde's own `Cow<str>`
/// borrows only as a bare `#[serde(borrow)]` field, not inside an `Option`; this one always
/// does, which saves an allocation per entry.
struct Str<'a>(Cow<'a, str>);

impl std::ops::Deref for Str<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Default for Str<'_> {
    fn default() -> Self {
        Str(Cow::Borrowed(""))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for StrVisitor<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(StrVisitor(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct RawEntry<'a> {
    #[serde(borrow)]
    id: Str<'a>,
    #[serde(rename = "bookedAt", borrow)]
    booked_at: Str<'a>,
    #[serde(rename = "type", borrow)]
    entry_type: Str<'a>,
    amount: i64,
    #[serde(borrow)]
    currency: Str<'a>,
    #[serde(default, borrow)]
    description: Str<'a>,
    #[serde(default, borrow)]
    reference: Option<Str<'a>>,
}

impl RawEntry<'_> {
    fn parts(&self) -> EntryParts<'_> {
        EntryParts {
            id: &self.id,
            booked_at: &self.booked_at,
            entry_type: &self.entry_type,
            amount: self.amount,
            currency: &self.currency,
            description: &self.description,
            reference: self.reference.as_deref(),
        }
    }
}

#[derive(Deserialize)]
struct RawMerchant<'a> {
    #[serde(borrow)]
    id: Str<'a>,
    #[serde(borrow)]
    name: Str<'a>,
    #[serde(default, borrow)]
    timezone: Option<Str<'a>>,
    #[serde(default, borrow)]
    locale: Option<Str<'a>>,
}

impl RawMerchant<'_> {
    fn parts(&self) -> MerchantParts<'_> {
        MerchantParts {
            id: &self.id,
            name: &self.name,
            timezone: self.timezone.as_deref(),
            locale: self.locale.as_deref(),
        }
    }
}

#[derive(Deserialize)]
struct RawBalance<'a> {
    #[serde(borrow)]
    currency: Str<'a>,
    amount: i64,
}

impl RawBalance<'_> {
    fn parts(&self) -> BalanceParts<'_> {
        BalanceParts {
            currency: &self.currency,
            amount: self.amount,
        }
    }
}

#[derive(Deserialize)]
struct RawHeaderDoc<'a> {
    #[serde(borrow)]
    merchant: RawMerchant<'a>,
    #[serde(rename = "openingBalances", borrow)]
    opening_balances: Vec<RawBalance<'a>>,
    #[serde(default)]
    entries: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct RawPageDoc<'a> {
    #[serde(borrow)]
    merchant: RawMerchant<'a>,
    #[serde(rename = "openingBalances", borrow)]
    opening_balances: Vec<RawBalance<'a>>,
    #[serde(borrow)]
    entries: Vec<RawEntry<'a>>,
    #[serde(rename = "nextCursor", default, borrow)]
    next_cursor: Option<Str<'a>>,
}

// ---------------------------------------------------------------------------------------
// Shared semantic checks.

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

struct BalanceParts<'a> {
    currency: &'a str,
    amount: i64,
}

fn finish_header<'a>(
    merchant: &MerchantParts<'_>,
    balances: impl Iterator<Item = BalanceParts<'a>>,
    expected: &MerchantId,
) -> Result<Header, SourceError> {
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
    Ok(Header {
        merchant: Merchant {
            id: expected.clone(),
            name: merchant.name.to_owned(),
            timezone,
            locale,
        },
        opening_balances,
    })
}

fn parse_currency(raw: &str, path: impl FnOnce() -> String) -> Result<Currency, SourceError> {
    Currency::parse(raw).ok_or_else(|| {
        let n = raw.chars().count();
        let s = if n == 1 { "" } else { "s" };
        invalid(path(), format!("unknown currency code ({n} character{s})"))
    })
}

// ---------------------------------------------------------------------------------------
// Slow path: a loose tree that keeps repeated keys, walked with a path.

/// Every member name the schema knows. Values of other members are skipped unparsed, as the
/// typed structs skip them, so an odd value in an unknown member is refused by neither path.
const KNOWN_KEYS: [&str; 14] = [
    "merchant",
    "openingBalances",
    "entries",
    "nextCursor",
    "id",
    "name",
    "timezone",
    "locale",
    "currency",
    "amount",
    "bookedAt",
    "type",
    "description",
    "reference",
];

enum Loose {
    Null,
    /// A boolean; which one is never needed.
    Bool,
    Number(serde_json::Number),
    String(String),
    Array(Vec<Loose>),
    /// Members in document order, repeated keys kept.
    Object(Vec<(String, Loose)>),
    /// The value of an unknown member.
    Skipped,
}

impl<'de> Deserialize<'de> for Loose {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LooseVisitor)
    }
}

struct LooseVisitor;

impl<'de> Visitor<'de> for LooseVisitor {
    type Value = Loose;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Loose, E> {
        Ok(Loose::Bool)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Loose, E> {
        Ok(Loose::Number(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Loose, E> {
        Ok(Loose::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Loose, E> {
        serde_json::Number::from_f64(v)
            .map(Loose::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Loose, E> {
        Ok(Loose::String(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Loose, E> {
        Ok(Loose::String(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Loose, E> {
        Ok(Loose::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Loose, E> {
        Ok(Loose::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Loose, D::Error> {
        Loose::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Loose, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Loose>()? {
            items.push(item);
        }
        Ok(Loose::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Loose, A::Error> {
        let mut members = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = if KNOWN_KEYS.contains(&key.as_str()) {
                map.next_value::<Loose>()?
            } else {
                map.next_value::<IgnoredAny>()?;
                Loose::Skipped
            };
            members.push((key, value));
        }
        Ok(Loose::Object(members))
    }
}

/// Turns the typed path's failure into the precise message of the slow path.
fn explain(
    json: &[u8],
    typed: &serde_json::Error,
    path: &str,
    walk: impl FnOnce(&Loose, &str) -> Result<(), SourceError>,
) -> SourceError {
    let prefix = if path.is_empty() {
        String::new()
    } else {
        format!("{path}: ")
    };
    match serde_json::from_slice::<Loose>(json) {
        Err(syntax) => {
            SourceError::Invalid(format!("{prefix}invalid JSON ({})", json_error(&syntax)))
        }
        Ok(value) => match walk(&value, path) {
            Err(precise) => precise,
            // Not reachable while both paths agree; the typed error still refuses the input,
            // by its position only: its text can quote a value (`floating point `19.99``).
            Ok(()) => SourceError::Invalid(format!(
                "{prefix}refused at line {} column {}",
                typed.line(),
                typed.column()
            )),
        },
    }
}

/// A JSON error without any of the input: serde_json's syntax and end-of-input messages are
/// fixed texts plus the position; anything else (a custom message) is reduced to the position.
fn json_error(e: &serde_json::Error) -> String {
    match e.classify() {
        Category::Syntax | Category::Eof => e.to_string(),
        Category::Data | Category::Io => {
            format!(
                "unreadable value at line {} column {}",
                e.line(),
                e.column()
            )
        }
    }
}

fn entry_path(index: u64) -> String {
    format!("entries[{index}]")
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn object<'v>(value: &'v Loose, path: &str) -> Result<&'v [(String, Loose)], SourceError> {
    match value {
        Loose::Object(members) => Ok(members),
        other => Err(invalid(
            if path.is_empty() {
                "document".to_owned()
            } else {
                path.to_owned()
            },
            format!("expected an object, found {}", found(other)),
        )),
    }
}

/// The member `name`, refusing it twice (the typed path refuses a duplicate field too).
fn field<'v>(
    members: &'v [(String, Loose)],
    path: &str,
    name: &str,
) -> Result<Option<&'v Loose>, SourceError> {
    let mut hits = members.iter().filter(|(k, _)| k == name).map(|(_, v)| v);
    let first = hits.next();
    if hits.next().is_some() {
        return Err(invalid(join(path, name), "repeated field"));
    }
    Ok(first)
}

fn required<'v>(
    members: &'v [(String, Loose)],
    path: &str,
    name: &str,
    expected: &str,
) -> Result<&'v Loose, SourceError> {
    field(members, path, name)?
        .ok_or_else(|| invalid(join(path, name), format!("missing, expected {expected}")))
}

fn string<'v>(value: &'v Loose, path: &str, name: &str) -> Result<&'v str, SourceError> {
    match value {
        Loose::String(s) => Ok(s),
        other => Err(invalid(
            join(path, name),
            format!("expected string, found {}", found(other)),
        )),
    }
}

fn required_string<'v>(
    members: &'v [(String, Loose)],
    path: &str,
    name: &str,
) -> Result<&'v str, SourceError> {
    string(required(members, path, name, "string")?, path, name)
}

fn optional_string<'v>(
    members: &'v [(String, Loose)],
    path: &str,
    name: &str,
) -> Result<Option<&'v str>, SourceError> {
    match field(members, path, name)? {
        None | Some(Loose::Null) => Ok(None),
        Some(value) => string(value, path, name).map(Some),
    }
}

fn integer(members: &[(String, Loose)], path: &str, name: &str) -> Result<i64, SourceError> {
    match required(members, path, name, "integer")? {
        Loose::Number(n) => n.as_i64().ok_or_else(|| {
            // serde_json reads an integer literal beyond `i64` as `u64` or, when negative, as
            // `f64`: a whole `f64` beyond `i64` is told apart from a fraction that way.
            const LIMIT: f64 = 9_223_372_036_854_775_808.0; // 2^63
            let whole_out_of_range = n
                .as_f64()
                .is_some_and(|v| v.fract() == 0.0 && (v >= LIMIT || v <= -LIMIT));
            if n.is_u64() || whole_out_of_range {
                invalid(join(path, name), "integer out of range")
            } else {
                invalid(join(path, name), "expected integer, found a decimal number")
            }
        }),
        other => Err(invalid(
            join(path, name),
            format!("expected integer, found {}", found(other)),
        )),
    }
}

fn entry_parts<'v>(value: &'v Loose, path: &str) -> Result<EntryParts<'v>, SourceError> {
    let m = object(value, path)?;
    Ok(EntryParts {
        id: required_string(m, path, "id")?,
        booked_at: required_string(m, path, "bookedAt")?,
        entry_type: required_string(m, path, "type")?,
        amount: integer(m, path, "amount")?,
        currency: required_string(m, path, "currency")?,
        description: match field(m, path, "description")? {
            None => "",
            Some(value) => string(value, path, "description")?,
        },
        reference: optional_string(m, path, "reference")?,
    })
}

fn header_parts(
    doc: &[(String, Loose)],
) -> Result<(MerchantParts<'_>, Vec<BalanceParts<'_>>), SourceError> {
    let merchant = object(required(doc, "", "merchant", "object")?, "merchant")?;
    let merchant = MerchantParts {
        id: required_string(merchant, "merchant", "id")?,
        name: required_string(merchant, "merchant", "name")?,
        timezone: optional_string(merchant, "merchant", "timezone")?,
        locale: optional_string(merchant, "merchant", "locale")?,
    };
    let balances = match required(doc, "", "openingBalances", "array")? {
        Loose::Array(items) => items,
        other => {
            return Err(invalid(
                "openingBalances",
                format!("expected array, found {}", found(other)),
            ));
        }
    };
    let mut parts = Vec::with_capacity(balances.len());
    for (i, item) in balances.iter().enumerate() {
        let path = format!("openingBalances[{i}]");
        let m = object(item, &path)?;
        parts.push(BalanceParts {
            currency: required_string(m, &path, "currency")?,
            amount: integer(m, &path, "amount")?,
        });
    }
    Ok((merchant, parts))
}

fn page_parts(
    value: &Loose,
    expected: &MerchantId,
    validator: &mut EntryValidator,
) -> Result<(), SourceError> {
    let doc = object(value, "")?;
    let (merchant, balances) = header_parts(doc)?;
    finish_header(&merchant, balances.into_iter(), expected)?;
    let entries = match required(doc, "", "entries", "array")? {
        Loose::Array(items) => items,
        other => {
            return Err(invalid(
                "entries",
                format!("expected array, found {}", found(other)),
            ));
        }
    };
    for item in entries {
        let index = validator.next_index;
        validator.accept(entry_parts(item, &entry_path(index))?, index)?;
    }
    optional_string(doc, "", "nextCursor").map(drop)
}

fn entries_in_header() -> SourceError {
    invalid(
        "entries",
        "not allowed in the header line (one entry per following line)",
    )
}

// ---------------------------------------------------------------------------------------

fn invalid(path: impl Into<String>, message: impl fmt::Display) -> SourceError {
    SourceError::Invalid(format!("{}: {message}", path.into()))
}

fn id_hash(id: &str) -> u64 {
    // `DefaultHasher::new()` has fixed keys, so the hash is stable for the whole stream.
    let mut hasher = DefaultHasher::new();
    id.hash(&mut hasher);
    hasher.finish()
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

/// The kind of a value, for a message; never the value itself.
fn found(value: &Loose) -> &'static str {
    match value {
        Loose::Null => "null",
        Loose::Bool => "a boolean",
        Loose::Number(n) if n.is_f64() => "a decimal number",
        Loose::Number(_) => "an integer",
        Loose::String(_) => "a string",
        Loose::Array(_) => "an array",
        Loose::Object(_) => "an object",
        Loose::Skipped => "an unknown value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::contract::{mid, validation_cases};

    /// The typed path alone, for comparing verdicts.
    fn fast(line: &str) -> bool {
        match serde_json::from_slice::<RawEntry<'_>>(line.as_bytes()) {
            Ok(raw) => EntryValidator::new().accept(raw.parts(), 0).is_ok(),
            Err(_) => false,
        }
    }

    /// The loose path alone, as a complete validator.
    fn slow(line: &str) -> Result<Entry, SourceError> {
        let value = serde_json::from_slice::<Loose>(line.as_bytes())
            .map_err(|e| SourceError::Invalid(format!("invalid JSON ({})", json_error(&e))))?;
        let parts = entry_parts(&value, "entries[0]")?;
        EntryValidator::new().accept(parts, 0)
    }

    const OK_PREFIX: &str =
        r#""id":"tx_1","bookedAt":"2026-10-01T08:15:00Z","type":"PAYMENT","currency":"EUR""#;

    fn with_amount(amount: &str) -> String {
        format!(r#"{{{OK_PREFIX},"amount":{amount}}}"#)
    }

    /// Lines both paths must judge alike; `true` when they are valid.
    fn table() -> Vec<(String, bool)> {
        let mut t: Vec<(String, bool)> = vec![
            (with_amount("1999"), true),
            (with_amount("-1999"), true),
            (with_amount("0"), true),
            // serde_json reads `-0` as the float -0.0: refused by both paths.
            (with_amount("-0"), false),
            (with_amount("9223372036854775807"), true),
            (with_amount("-9223372036854775808"), true),
            (with_amount("19.99"), false),
            (with_amount("1.0"), false),
            (with_amount("1e3"), false),
            (with_amount("1E3"), false),
            (with_amount("-1e-3"), false),
            (with_amount("9223372036854775808"), false),
            (with_amount("-9223372036854775809"), false),
            (with_amount("18446744073709551616"), false),
            (with_amount(r#""1999""#), false),
            (with_amount("null"), false),
            (with_amount("true"), false),
            (with_amount("[1]"), false),
            (with_amount("{}"), false),
            (with_amount("1999,\"amount\":1"), false),
            (with_amount("1,\"extra\":{\"a\":[1,2,{\"b\":null}]},\"extra\":1"), true),
            (with_amount("1,\"description\":\"Café, \\\"quoted\\\"\\nline\""), true),
            (with_amount("1,\"description\":null"), false),
            (with_amount("1,\"description\":5"), false),
            (with_amount("1,\"reference\":null"), true),
            (with_amount("1,\"reference\":\"ord_\\u0031\""), true),
            (with_amount("1,\"reference\":[]"), false),
            (with_amount("1,\"reference\":\"\\ud800\""), false),
            (r#"{"id":"\u0074x","bookedAt":"2026-10-01T08:15:00\u005A","type":"FEE","amount":-1,"currency":"EUR"}"#.into(), true),
            (r#"{"bookedAt":"2026-10-01T08:15:00Z","type":"FEE","amount":-1,"currency":"EUR"}"#.into(), false),
            (r#"{"id":1,"bookedAt":"2026-10-01T08:15:00Z","type":"FEE","amount":-1,"currency":"EUR"}"#.into(), false),
            (r#"{"id":"","bookedAt":"2026-10-01T08:15:00Z","type":"FEE","amount":-1,"currency":"EUR"}"#.into(), false),
            (r#"{"id":"a","bookedAt":"2026-10-01","type":"FEE","amount":-1,"currency":"EUR"}"#.into(), false),
            (r#"{"id":"a","bookedAt":"2026-10-01T08:15:00+05:30","type":"FEE","amount":-1,"currency":"EUR"}"#.into(), true),
            (r#"{"id":"a","bookedAt":"2026-10-01T08:15:00.123456Z","type":"FEE","amount":-1,"currency":"EUR"}"#.into(), true),
            (r#"{"id":"a","bookedAt":"2026-13-01T08:15:00Z","type":"FEE","amount":-1,"currency":"EUR"}"#.into(), false),
            (r#"{"id":"a","bookedAt":"2026-10-01T08:15:00Z","type":"fee","amount":-1,"currency":"EUR"}"#.into(), false),
            (r#"{"id":"a","bookedAt":"2026-10-01T08:15:00Z","type":"FEE","amount":-1,"currency":"XYZ"}"#.into(), false),
            (r#"{"id":"a","bookedAt":"2026-10-01T08:15:00Z","type":"FEE","amount":-1}"#.into(), false),
            (format!(r#"{{"id":"{}","bookedAt":"2026-10-01T08:15:00Z","type":"FEE","amount":-1,"currency":"EUR"}}"#, "é".repeat(128)), true),
            (format!(r#"{{"id":"{}","bookedAt":"2026-10-01T08:15:00Z","type":"FEE","amount":-1,"currency":"EUR"}}"#, "é".repeat(129)), false),
            ("[]".into(), false),
            ("null".into(), false),
            ("\"x\"".into(), false),
            ("{".into(), false),
            (format!("{} trailing", with_amount("1")), false),
            (format!("{}\r\n", with_amount("1")), true),
            (format!("  {}  ", with_amount("1")), true),
        ];
        t.push((with_amount("1,\"extra\":1e999"), true));
        t
    }

    #[test]
    fn fast_and_slow_paths_agree() {
        for (line, valid) in table() {
            let slow = slow(&line);
            assert_eq!(fast(&line), valid, "fast path on {line}");
            assert_eq!(slow.is_ok(), valid, "slow path on {line}: {slow:?}");
            // The combined path: same verdict, and the slow path's message.
            let combined = EntryValidator::new().next_from_json(line.as_bytes());
            assert_eq!(combined.is_ok(), valid, "{line}");
            if let (Err(got), Err(SourceError::Invalid(expected))) = (&combined, &slow)
                && !expected.starts_with("invalid JSON")
            {
                assert_eq!(got, &SourceError::Invalid(expected.clone()), "{line}");
            }
        }
    }

    #[test]
    fn id_set_finds_repeats_across_growth() {
        let mut set = IdSet::default();
        for i in 0..100_000u64 {
            assert!(set.insert(id_hash(&format!("tx_{i}"))));
        }
        for i in (0..100_000u64).step_by(997) {
            assert!(!set.insert(id_hash(&format!("tx_{i}"))));
        }
        assert!(set.insert(0));
        assert!(!set.insert(1), "0 and 1 share a slot value");
        assert_eq!(set.len, 100_001);
        assert!(set.slots.len() >= 2 * set.len);
    }

    #[test]
    fn hand_read_timestamps_match_chrono() {
        for raw in [
            "2026-10-01T08:15:00Z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "2024-02-29T12:00:00Z",
            "2026-02-29T12:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-12-31T24:00:00Z",
            "2026-12-31T23:60:00Z",
            "2016-12-31T23:59:60Z",
            "2026-10-01t08:15:00z",
            "2026-10-01 08:15:00Z",
            "2026-10-01T08:15:00+00:00",
            "+026-10-01T08:15:00Z",
            "2026-1a-01T08:15:00Z",
        ] {
            let chrono = DateTime::parse_from_rfc3339(raw)
                .ok()
                .map(|t| t.with_timezone(&Utc));
            assert_eq!(parse_booked_at(raw), chrono, "{raw}");
        }
    }

    #[test]
    fn messages_name_the_path() {
        let mut v = EntryValidator::new();
        assert!(v.next_from_json(with_amount("1").as_bytes()).is_ok());
        let err = v
            .next_from_json(with_amount("19.99").as_bytes())
            .unwrap_err();
        assert_eq!(
            err,
            SourceError::Invalid(
                "entries[1].amount: expected integer, found a decimal number".into()
            )
        );
        let long = format!(
            r#"{{"id":"a","bookedAt":"{}","type":"FEE","amount":1,"currency":"EUR"}}"#,
            "9".repeat(500)
        );
        let entry = |id: &str, at: &str, kind: &str, currency: &str, extra: &str| {
            format!(
                r#"{{"id":"{id}","bookedAt":"{at}","type":"{kind}","amount":1,"currency":"{currency}"{extra}}}"#
            )
        };
        let at = "2026-10-01T08:15:00Z";
        for (line, message) in [
            (
                with_amount(r#""19.99""#),
                "entries[0].amount: expected integer, found a string",
            ),
            (
                with_amount("1e3"),
                "entries[0].amount: expected integer, found a decimal number",
            ),
            (
                with_amount("-1e-3"),
                "entries[0].amount: expected integer, found a decimal number",
            ),
            (
                with_amount("true"),
                "entries[0].amount: expected integer, found a boolean",
            ),
            (
                with_amount("null"),
                "entries[0].amount: expected integer, found null",
            ),
            (
                with_amount("[1]"),
                "entries[0].amount: expected integer, found an array",
            ),
            (
                with_amount("{}"),
                "entries[0].amount: expected integer, found an object",
            ),
            (
                with_amount("9223372036854775808"),
                "entries[0].amount: integer out of range",
            ),
            (
                with_amount("-9223372036854775809"),
                "entries[0].amount: integer out of range",
            ),
            (
                with_amount("18446744073709551616"),
                "entries[0].amount: integer out of range",
            ),
            (
                with_amount("1,\"description\":5"),
                "entries[0].description: expected string, found an integer",
            ),
            (
                with_amount("1,\"reference\":2.5"),
                "entries[0].reference: expected string, found a decimal number",
            ),
            (
                r#"{"id":1,"bookedAt":"x"}"#.to_owned(),
                "entries[0].id: expected string, found an integer",
            ),
            (
                entry("a", "2026-10-01", "FEE", "EUR", ""),
                "entries[0].bookedAt: expected an RFC 3339 timestamp with offset",
            ),
            (
                long,
                "entries[0].bookedAt: expected an RFC 3339 timestamp with offset",
            ),
            (
                entry("a", at, "fee", "EUR", ""),
                "entries[0].type: expected one of PAYMENT, REFUND, FEE, PAYOUT, ADJUSTMENT, CHARGEBACK",
            ),
            (
                entry("a", at, "FEE", "XYZ", ""),
                "entries[0].currency: unknown currency code (3 characters)",
            ),
            (
                entry("a", at, "FEE", "E", ""),
                "entries[0].currency: unknown currency code (1 character)",
            ),
            (
                entry("a", at, "FEE", "€UR", ""),
                "entries[0].currency: unknown currency code (3 characters)",
            ),
            (
                entry(&"x".repeat(129), at, "FEE", "EUR", ""),
                "entries[0].id: longer than 128 characters (129)",
            ),
            (
                "{".to_owned(),
                "entries[0]: invalid JSON (EOF while parsing an object at line 1 column 1)",
            ),
            (
                r#"{"id":"secret\q"}"#.to_owned(),
                "entries[0]: invalid JSON (invalid escape at line 1 column 15)",
            ),
            (
                with_amount("1 secret"),
                "entries[0]: invalid JSON (expected `,` or `}` at line 1 column 93)",
            ),
            (
                "\"secret\"".to_owned(),
                "entries[0]: expected an object, found a string",
            ),
        ] {
            assert_eq!(
                EntryValidator::new().next_from_json(line.as_bytes()),
                Err(SourceError::Invalid(message.into())),
                "{line}"
            );
            assert_eq!(
                slow(&line).err(),
                Some(SourceError::Invalid(
                    message.replace("entries[0]: invalid JSON", "invalid JSON")
                )),
                "{line}"
            );
        }
        // A message serde_json could carry with input in it is reduced to its position.
        let custom = <serde_json::Error as de::Error>::custom("invalid type: `19.99`");
        assert_eq!(json_error(&custom), "unreadable value at line 0 column 0");
    }

    /// Every scalar value literally in `json` (string contents raw and unescaped, numbers as
    /// written and as serde_json renders them), keys and `true`/`false`/`null` left out.
    fn literals(json: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = json;
        while let Some(c) = rest.chars().next() {
            if c == '"' {
                let mut end = 1;
                let bytes = rest.as_bytes();
                while end < bytes.len() && bytes[end] != b'"' {
                    end += if bytes[end] == b'\\' { 2 } else { 1 };
                }
                let raw = &rest[1..end.min(rest.len())];
                rest = &rest[(end + 1).min(rest.len())..];
                if rest.trim_start().starts_with(':') {
                    continue;
                }
                out.push(raw.to_owned());
                if let Ok(text) = serde_json::from_str::<String>(&format!("\"{raw}\"")) {
                    out.push(text);
                }
            } else if "{}[],:".contains(c) || c.is_whitespace() {
                rest = &rest[c.len_utf8()..];
            } else {
                let end = rest
                    .find(|c: char| "{}[],:\"".contains(c) || c.is_whitespace())
                    .unwrap_or(rest.len());
                let token = &rest[..end];
                rest = &rest[end..];
                if ["true", "false", "null"].contains(&token) {
                    continue;
                }
                out.push(token.to_owned());
                if let Ok(n) = serde_json::from_str::<serde_json::Number>(token) {
                    out.push(n.to_string());
                }
                if let Ok(v) = token.parse::<f64>() {
                    out.push(v.to_string());
                }
            }
        }
        out.retain(|l| !l.is_empty());
        out
    }

    /// `message` without its `[n]` indices holds none of `literals` of at least `min` chars.
    /// The schema's own words (entry type names) are not data and may appear.
    fn assert_echoes_nothing(message: &str, literals: &[String], min: usize, case: &str) {
        let mut text = String::new();
        let mut rest = message;
        while let Some(open) = rest.find('[') {
            text.push_str(&rest[..open]);
            let tail = &rest[open + 1..];
            let digits = tail
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(tail.len());
            if digits > 0 && tail[digits..].starts_with(']') {
                rest = &tail[digits + 1..];
            } else {
                text.push('[');
                rest = tail;
            }
        }
        text.push_str(rest);
        for literal in literals {
            if literal.chars().count() < min || EntryType::parse(literal).is_some() {
                continue;
            }
            assert!(
                !text.contains(literal.as_str()),
                "{case}: message {message:?} echoes {literal:?}"
            );
        }
    }

    #[test]
    fn messages_never_echo_the_data() {
        let mut checked = 0;
        for (name, data, message) in validation_cases() {
            // Every value of the data set, good entries included (a message comparing two
            // entries must name neither); the merchant ids may be shown.
            let mut values = Vec::new();
            for json in data.entries.iter().chain(&data.opening) {
                values.extend(literals(json));
            }
            values.extend(data.timezone.clone());
            values.extend(data.locale.as_ref().map(|l| l.trim_matches('"').to_owned()));
            values.push(data.name.clone());
            values.retain(|v| *v != data.merchant_id && *v != data.header_id);
            assert!(!values.is_empty(), "{name}");
            let got = parse_page(
                data.json().as_bytes(),
                &mid(&data.merchant_id),
                &mut EntryValidator::new(),
            );
            assert_eq!(got, Err(SourceError::Invalid(message.into())), "{name}");
            assert_echoes_nothing(message, &values, 1, name);
            checked += 1;
        }
        assert!(checked >= 20, "{checked}");
        // The fast/slow table too, for the lines that are JSON at all (a syntax error names
        // serde_json's own words); one-character values (`a`, `1`) are words of any message.
        for (line, _) in table() {
            if serde_json::from_str::<IgnoredAny>(&line).is_err() {
                continue;
            }
            if let Err(SourceError::Invalid(message)) =
                EntryValidator::new().next_from_json(line.as_bytes())
            {
                assert_echoes_nothing(&message, &literals(&line), 2, &line);
            }
        }
    }

    #[test]
    fn entry_fields_are_kept() {
        let line = r#"{"id":"tx_9","bookedAt":"2026-10-01T10:15:00+02:00","type":"CHARGEBACK","amount":-1999,"currency":"JPY","description":"Café, \"x\"\n","reference":null,"future":{"a":1}}"#;
        let e = EntryValidator::new()
            .next_from_json(line.as_bytes())
            .unwrap();
        assert_eq!(e.id, "tx_9");
        assert_eq!(e.booked_at.to_rfc3339(), "2026-10-01T08:15:00+00:00");
        assert_eq!((e.entry_type, e.amount), (EntryType::Chargeback, -1999));
        assert_eq!(e.currency.code(), "JPY");
        assert_eq!(e.description, "Café, \"x\"\n");
        assert_eq!(e.reference, "");
    }

    #[test]
    fn order_and_uniqueness_span_the_stream() {
        let line = |id: &str, at: &str| {
            format!(
                r#"{{"id":"{id}","bookedAt":"{at}","type":"FEE","amount":-1,"currency":"EUR"}}"#
            )
        };
        let mut v = EntryValidator::new();
        for (id, at) in [
            ("b", "2026-01-01T00:00:00Z"),
            ("c", "2026-01-01T00:00:00Z"),
            ("a", "2026-01-02T00:00:00Z"),
        ] {
            v.next_from_json(line(id, at).as_bytes()).unwrap();
        }
        assert_eq!(v.count(), 3);
        let err = v
            .next_from_json(line("b", "2026-01-03T00:00:00Z").as_bytes())
            .unwrap_err();
        assert_eq!(
            err,
            SourceError::Invalid("entries[3].id: repeated entry id".into())
        );
        let err = v
            .next_from_json(line("z", "2026-01-01T21:00:00-02:00").as_bytes())
            .unwrap_err();
        assert_eq!(
            err,
            SourceError::Invalid("entries[3].bookedAt: out of order (before entries[2])".into())
        );
    }

    fn page(entries: &str, cursor: &str) -> String {
        format!(
            r#"{{"merchant":{{"id":"m_1","name":"Acme GmbH","timezone":"Europe/Berlin"}},"openingBalances":[{{"currency":"EUR","amount":125000}}],"entries":[{entries}],"nextCursor":{cursor}}}"#
        )
    }

    #[test]
    fn pages_share_one_validator() {
        let e = |id: &str, at: &str| {
            format!(
                r#"{{"id":"{id}","bookedAt":"{at}","type":"PAYMENT","amount":1999,"currency":"EUR"}}"#
            )
        };
        let mut v = EntryValidator::new();
        let first = page(
            &format!(
                "{},{}",
                e("tx_1", "2026-10-01T08:15:00Z"),
                e("tx_2", "2026-10-01T09:00:00Z")
            ),
            r#""c2""#,
        );
        let p1 = parse_page(first.as_bytes(), &mid("m_1"), &mut v).unwrap();
        assert_eq!(p1.next_cursor.as_deref(), Some("c2"));
        assert_eq!(p1.entries.len(), 2);
        assert_eq!(p1.header.merchant.name, "Acme GmbH");
        assert_eq!(p1.header.opening_balances[0].amount, 125_000);
        let second = page(
            &format!(
                "{},{}",
                e("tx_3", "2026-10-02T00:00:00Z"),
                e("tx_1", "2026-10-03T00:00:00Z")
            ),
            "null",
        );
        let err = parse_page(second.as_bytes(), &mid("m_1"), &mut v).unwrap_err();
        assert_eq!(
            err,
            SourceError::Invalid("entries[3].id: repeated entry id".into())
        );
        // A typed failure on a later page still counts indices across pages.
        let mut v = EntryValidator::new();
        parse_page(first.as_bytes(), &mid("m_1"), &mut v).unwrap();
        let third = page(
            &e("tx_3", "2026-10-01T09:00:00Z").replace("1999", "19.99"),
            "null",
        );
        let err = parse_page(third.as_bytes(), &mid("m_1"), &mut v).unwrap_err();
        assert_eq!(
            err,
            SourceError::Invalid(
                "entries[2].amount: expected integer, found a decimal number".into()
            )
        );
        let err = parse_page(
            page("", "7").as_bytes(),
            &mid("m_1"),
            &mut EntryValidator::new(),
        )
        .unwrap_err();
        assert_eq!(
            err,
            SourceError::Invalid("nextCursor: expected string, found an integer".into())
        );
        let err = parse_page(b"[]", &mid("m_1"), &mut EntryValidator::new()).unwrap_err();
        assert_eq!(
            err,
            SourceError::Invalid("document: expected an object, found an array".into())
        );
        let missing = r#"{"merchant":{"id":"m_1","name":"A"},"openingBalances":[]}"#;
        let err =
            parse_page(missing.as_bytes(), &mid("m_1"), &mut EntryValidator::new()).unwrap_err();
        assert_eq!(
            err,
            SourceError::Invalid("entries: missing, expected array".into())
        );
    }

    #[test]
    fn header_rules() {
        let ok = r#"{"merchant":{"id":"m_1","name":"A","timezone":null,"logo":"x"},"openingBalances":[],"entries":null}"#;
        let h = parse_header(ok.as_bytes(), &mid("m_1")).unwrap();
        assert_eq!((h.merchant.timezone, h.opening_balances.len()), (None, 0));
        for (raw, message) in [
            (
                r#"{"merchant":{"id":"m_1","name":"A","timezone":"Mars/Base"},"openingBalances":[]}"#,
                "merchant.timezone: unknown time zone",
            ),
            (
                r#"{"merchant":{"id":"m_1","name":"A"},"openingBalances":[{"currency":"EUR","amount":1.5}]}"#,
                "openingBalances[0].amount: expected integer, found a decimal number",
            ),
            (
                r#"{"merchant":{"id":"m_1","name":"A"},"openingBalances":[{"currency":"EUR"}]}"#,
                "openingBalances[0].amount: missing, expected integer",
            ),
            (
                r#"{"merchant":{"id":"m_1"},"openingBalances":[]}"#,
                "merchant.name: missing, expected string",
            ),
            (
                r#"{"merchant":"m_1","openingBalances":[]}"#,
                "merchant: expected an object, found a string",
            ),
            (
                r#"{"merchant":{"id":"m_1","name":"A"}}"#,
                "openingBalances: missing, expected array",
            ),
            (
                r#"{"merchant":{"id":"m_1","name":"A"},"openingBalances":{}}"#,
                "openingBalances: expected array, found an object",
            ),
            (
                r#"{"merchant":{"id":"m_2","name":"A"},"openingBalances":[]}"#,
                r#"merchant.id: expected "m_1", found "m_2""#,
            ),
            (
                r#"{"merchant":{"id":"m_1","name":"A"},"openingBalances":[],"entries":[]}"#,
                "entries: not allowed in the header line (one entry per following line)",
            ),
            (
                r#"{"merchant":{"id":"m_1","name":"A","name":"B"},"openingBalances":[]}"#,
                "merchant.name: repeated field",
            ),
        ] {
            assert_eq!(
                parse_header(raw.as_bytes(), &mid("m_1")),
                Err(SourceError::Invalid(message.into())),
                "{raw}"
            );
        }
    }

    #[test]
    fn contract_cases_are_refused_by_both_paths() {
        // The same table the adapters run, checked on the bare functions via the page form.
        for (name, data, message) in validation_cases() {
            let got = parse_page(
                data.json().as_bytes(),
                &mid(&data.merchant_id),
                &mut EntryValidator::new(),
            );
            assert_eq!(
                got.err(),
                Some(SourceError::Invalid(message.into())),
                "{name}"
            );
        }
    }
}
