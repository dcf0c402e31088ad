//! The fast path: the source schema as borrowed typed structs, which is all a valid input
//! ever costs. Their rules (integer `i64`, strings, optional `reference`, repeated keys
//! refused, unknown keys ignored) are spelled out again by the slow path in [`super::loose`].

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, Visitor};

use super::{BalanceParts, EntryParts, MerchantParts};

/// A JSON string borrowed from the input when it has no escapes. Serde's own `Cow<str>`
/// borrows only as a bare `#[serde(borrow)]` field, not inside an `Option`; this one always
/// does, which saves an allocation per entry.
pub(super) struct Str<'a>(pub(super) Cow<'a, str>);

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
pub(super) struct RawEntry<'a> {
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
    pub(super) fn parts(&self) -> EntryParts<'_> {
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
pub(super) struct RawMerchant<'a> {
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
    pub(super) fn parts(&self) -> MerchantParts<'_> {
        MerchantParts {
            id: &self.id,
            name: &self.name,
            timezone: self.timezone.as_deref(),
            locale: self.locale.as_deref(),
        }
    }
}

#[derive(Deserialize)]
pub(super) struct RawBalance<'a> {
    #[serde(borrow)]
    currency: Str<'a>,
    amount: i64,
}

impl RawBalance<'_> {
    pub(super) fn parts(&self) -> BalanceParts<'_> {
        BalanceParts {
            currency: &self.currency,
            amount: self.amount,
        }
    }
}

#[derive(Deserialize)]
pub(super) struct RawHeaderDoc<'a> {
    #[serde(borrow)]
    pub(super) merchant: RawMerchant<'a>,
    #[serde(rename = "openingBalances", borrow)]
    pub(super) opening_balances: Vec<RawBalance<'a>>,
    #[serde(default)]
    pub(super) entries: Option<IgnoredAny>,
}
