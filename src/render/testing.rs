//! Builders of the headers and entries that the tests of every format render, and the
//! helpers that run a renderer over them (tests only).

use chrono::{DateTime, Utc};

use super::summary::{SummaryRenderer, WriteSummary};
use super::{DocumentHeader, Renderer};
use crate::domain::{
    Balance, ControlTotals, Currency, Entry, EntryType, LedgerId, LedgerType, Merchant, MerchantId,
    Period, Stage, Timezone,
};

/// The test ledger's id: 19 digits, more than a number cell or an `f64` holds exactly.
pub(crate) const LEDGER_ID: i64 = 7_123_456_789_012_345_678;
/// The test merchant's id.
pub(crate) const MERCHANT_ID: &str = "m_acme";
/// The test merchant's name: an XML special and letters beyond ASCII.
pub(crate) const MERCHANT_NAME: &str = "Acme & Söhne Café GmbH";
/// When the test documents are generated.
pub(crate) const GENERATED_AT: &str = "2026-11-02T09:00:00Z";

/// The currency with ISO code `code`.
pub(crate) fn currency(code: &str) -> Currency {
    Currency::parse(code).unwrap()
}

/// A FINAL, version 3 document of the test merchant (Europe/Berlin, no locale) for
/// `period`, with `opening` balances as (currency code, minor units).
pub(crate) fn header(
    ledger_type: LedgerType,
    period: &str,
    opening: &[(&str, i64)],
) -> DocumentHeader {
    let period = Period::parse(period).unwrap();
    let tz = Timezone::parse("Europe/Berlin").unwrap();
    DocumentHeader {
        ledger_id: LedgerId::from_i64(LEDGER_ID),
        merchant: Merchant {
            id: MerchantId::parse(MERCHANT_ID).unwrap(),
            name: MERCHANT_NAME.into(),
            timezone: Some(tz),
            locale: None,
        },
        ledger_type,
        period,
        timezone: tz,
        bounds: period.bounds(tz),
        stage: Stage::Final,
        version: 3,
        generated_at: GENERATED_AT.parse().unwrap(),
        opening_balances: opening
            .iter()
            .map(|&(code, amount)| Balance {
                currency: currency(code),
                amount,
            })
            .collect(),
    }
}

/// An entry booked at `at` (RFC 3339): a PAYMENT when `amount` is positive or zero, else a
/// REFUND; described as `Order {id}`, referenced as `ord_{id}`.
pub(crate) fn entry(id: &str, at: &str, amount: i64, currency_code: &str) -> Entry {
    Entry {
        id: id.into(),
        booked_at: at.parse::<DateTime<Utc>>().unwrap(),
        entry_type: if amount >= 0 {
            EntryType::Payment
        } else {
            EntryType::Refund
        },
        amount,
        currency: currency(currency_code),
        description: format!("Order {id}"),
        reference: format!("ord_{id}"),
    }
}

/// [`entry`] with its own description.
pub(crate) fn described_entry(
    id: &str,
    at: &str,
    amount: i64,
    currency_code: &str,
    description: &str,
) -> Entry {
    Entry {
        description: description.into(),
        ..entry(id, at, amount, currency_code)
    }
}

/// The totals the pipeline computes from the source.
pub(crate) fn source_totals(h: &DocumentHeader, entries: &[Entry]) -> ControlTotals {
    let mut t = ControlTotals::with_opening(&h.opening_balances);
    for e in entries {
        t.add(e.currency, e.amount);
    }
    t
}

/// Feeds `entries` to `renderer` and finishes it.
pub(crate) fn render(
    mut renderer: Box<dyn Renderer<Vec<u8>>>,
    entries: &[Entry],
) -> (ControlTotals, Vec<u8>) {
    for e in entries {
        renderer.entry(e).unwrap();
    }
    renderer.finish().unwrap()
}

/// A SUMMARY of `entries` written by `write`.
pub(crate) fn summary(
    h: &DocumentHeader,
    entries: &[Entry],
    write: WriteSummary<Vec<u8>>,
) -> (ControlTotals, Vec<u8>) {
    render(
        Box::new(SummaryRenderer::new(h, Vec::new(), write).unwrap()),
        entries,
    )
}
