//! The slow path: a JSON text the typed structs refused, re-read as a loose tree that keeps
//! repeated keys and walked with its path, to name the exact field and what was wrong with it.
//! It ends in the same semantic checks as the fast path and refuses the same inputs.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::error::Category;

use super::{BalanceParts, EntryParts, ListedParts, MerchantParts, invalid};
use crate::source::SourceError;

/// Every member name the schema knows. Values of other members are skipped unparsed, as the
/// typed structs skip them, so an odd value in an unknown member is refused by neither path.
const KNOWN_KEYS: [&str; 15] = [
    "merchant",
    "merchants",
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

pub(super) enum Loose {
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
pub(super) fn explain(
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
pub(super) fn json_error(e: &serde_json::Error) -> String {
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

pub(super) fn entry_path(index: u64) -> String {
    format!("entries[{index}]")
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

pub(super) fn object<'v>(
    value: &'v Loose,
    path: &str,
) -> Result<&'v [(String, Loose)], SourceError> {
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
pub(super) fn field<'v>(
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

pub(super) fn entry_parts<'v>(value: &'v Loose, path: &str) -> Result<EntryParts<'v>, SourceError> {
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

pub(super) fn header_parts(
    doc: &[(String, Loose)],
) -> Result<(MerchantParts<'_>, Vec<BalanceParts<'_>>), SourceError> {
    let merchant = merchant_parts(required(doc, "", "merchant", "object")?)?;
    let balances = balances_parts(required(doc, "", "openingBalances", "array")?)?;
    Ok((merchant, balances))
}

/// The `merchant` object's fields.
pub(super) fn merchant_parts(value: &Loose) -> Result<MerchantParts<'_>, SourceError> {
    let merchant = object(value, "merchant")?;
    Ok(MerchantParts {
        id: required_string(merchant, "merchant", "id")?,
        name: required_string(merchant, "merchant", "name")?,
        timezone: optional_string(merchant, "merchant", "timezone")?,
        locale: optional_string(merchant, "merchant", "locale")?,
    })
}

/// The `openingBalances` array's items.
pub(super) fn balances_parts(value: &Loose) -> Result<Vec<BalanceParts<'_>>, SourceError> {
    let balances = match value {
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
    Ok(parts)
}

/// A merchant list page's `merchants` items and its `nextCursor`.
pub(super) fn listing_members(value: &Loose) -> Result<(&[Loose], Option<&str>), SourceError> {
    let doc = object(value, "")?;
    let items = match required(doc, "", "merchants", "array")? {
        Loose::Array(items) => items,
        other => return Err(not_an_array("merchants", other)),
    };
    let next_cursor = optional_string(doc, "", "nextCursor")?;
    Ok((items, next_cursor))
}

/// The fields of item `path` (`merchants[3]`) of a merchant list page; `name` must be a
/// string but is not kept.
pub(super) fn listed_parts<'v>(
    item: &'v Loose,
    path: &str,
) -> Result<ListedParts<'v>, SourceError> {
    let m = object(item, path)?;
    let id = required_string(m, path, "id")?;
    required_string(m, path, "name")?;
    let timezone = optional_string(m, path, "timezone")?;
    Ok(ListedParts { id, timezone })
}

/// `nextCursor`: a string or null.
pub(super) fn cursor_part(value: &Loose) -> Result<(), SourceError> {
    match value {
        Loose::Null => Ok(()),
        other => string(other, "", "nextCursor").map(drop),
    }
}

/// `entries` when it is not an array.
pub(super) fn not_an_array(name: &str, value: &Loose) -> SourceError {
    invalid(name, format!("expected array, found {}", found(value)))
}

pub(super) fn entries_in_header() -> SourceError {
    invalid(
        "entries",
        "not allowed in the header line (one entry per following line)",
    )
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
