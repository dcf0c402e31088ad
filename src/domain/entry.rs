//! Source data: a merchant, its opening balances and its booked entries, plus the control
//! totals the pipeline computes twice (from the source and from the rendered document).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Currency, Locale, MerchantId, Timezone};

/// What the source says about a merchant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merchant {
    /// The merchant's id (equal to the requested one).
    pub id: MerchantId,
    /// Display name printed on documents.
    pub name: String,
    /// The merchant's own time zone, used when a request names none.
    pub timezone: Option<Timezone>,
    /// How the merchant's PDF and XLSX documents write numbers and dates; `None` is the
    /// documents' default (see `render::locale`). CSV never follows it.
    pub locale: Option<Locale>,
}

/// A balance in one currency, in minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Balance {
    /// The currency.
    pub currency: Currency,
    /// Signed minor units.
    pub amount: i64,
}

/// The kinds of booked entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EntryType {
    /// A customer payment (credit).
    Payment,
    /// Money returned to a customer.
    Refund,
    /// A fee charged to the merchant.
    Fee,
    /// Money paid out to the merchant's bank account.
    Payout,
    /// A manual correction.
    Adjustment,
    /// A disputed payment taken back.
    Chargeback,
}

impl EntryType {
    /// Every type, in display order.
    pub const ALL: [EntryType; 6] = [
        EntryType::Payment,
        EntryType::Refund,
        EntryType::Fee,
        EntryType::Payout,
        EntryType::Adjustment,
        EntryType::Chargeback,
    ];

    /// The wire name (`PAYMENT`).
    pub fn as_str(self) -> &'static str {
        match self {
            EntryType::Payment => "PAYMENT",
            EntryType::Refund => "REFUND",
            EntryType::Fee => "FEE",
            EntryType::Payout => "PAYOUT",
            EntryType::Adjustment => "ADJUSTMENT",
            EntryType::Chargeback => "CHARGEBACK",
        }
    }

    /// Parses the wire name.
    pub fn parse(raw: &str) -> Option<EntryType> {
        EntryType::ALL.into_iter().find(|t| t.as_str() == raw)
    }
}

/// One validated booked entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The source's entry id, unique per merchant.
    pub id: String,
    /// When it was booked.
    pub booked_at: DateTime<Utc>,
    /// Its kind.
    pub entry_type: EntryType,
    /// Signed minor units.
    pub amount: i64,
    /// Its currency.
    pub currency: Currency,
    /// Free text; may hold quotes, commas, newlines.
    pub description: String,
    /// The merchant's reference, possibly empty.
    pub reference: String,
}

/// Totals of one currency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CurrencyTotals {
    /// Balance before the first entry of the period.
    pub opening: i64,
    /// Number of entries.
    pub count: u64,
    /// Sum of positive amounts.
    pub credits: i128,
    /// Sum of negative amounts (a negative number or zero).
    pub debits: i128,
    /// opening + credits + debits.
    pub closing: i128,
}

impl CurrencyTotals {
    /// Counts one entry of `amount` as a credit or a debit and moves the closing balance.
    pub fn add(&mut self, amount: i64) {
        self.count += 1;
        if amount >= 0 {
            self.credits += i128::from(amount);
        } else {
            self.debits += i128::from(amount);
        }
        self.closing += i128::from(amount);
    }
}

/// Control totals of a document: what the self-check compares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControlTotals {
    /// Entries in the whole document.
    pub entry_count: u64,
    /// Per currency, ordered by code.
    pub currencies: BTreeMap<Currency, CurrencyTotals>,
}

impl ControlTotals {
    /// Totals starting from `opening` balances.
    pub fn with_opening(opening: &[Balance]) -> Self {
        let mut totals = ControlTotals::default();
        for b in opening {
            let t = totals.currencies.entry(b.currency).or_default();
            t.opening = t.opening.saturating_add(b.amount);
            t.closing = i128::from(t.opening);
        }
        totals
    }

    /// Adds one entry.
    pub fn add(&mut self, currency: Currency, amount: i64) {
        self.entry_count += 1;
        self.currencies.entry(currency).or_default().add(amount);
    }

    /// Describes the first difference from `other`, if any, for the self-check's error.
    pub fn difference(&self, other: &ControlTotals) -> Option<String> {
        if self.entry_count != other.entry_count {
            return Some("entry counts differ".to_owned());
        }
        for (currency, mine) in &self.currencies {
            match other.currencies.get(currency) {
                None => return Some(format!("currency {currency} missing")),
                Some(theirs) if theirs != mine => {
                    // Which totals differ, never the amounts: this text is stored and logged.
                    let mut fields = Vec::new();
                    for (name, differs) in [
                        ("count", mine.count != theirs.count),
                        ("opening", mine.opening != theirs.opening),
                        ("credits", mine.credits != theirs.credits),
                        ("debits", mine.debits != theirs.debits),
                        ("closing", mine.closing != theirs.closing),
                    ] {
                        if differs {
                            fields.push(name);
                        }
                    }
                    return Some(format!("{currency} {} differ", fields.join(", ")));
                }
                Some(_) => {}
            }
        }
        other
            .currencies
            .keys()
            .find(|c| !self.currencies.contains_key(*c))
            .map(|c| format!("unexpected currency {c}"))
    }
}
