//! The SUMMARY type, shared by every format: entries are folded into per-currency totals per
//! local day and per entry type while they stream in (memory grows with days × types ×
//! currencies, never with entries), and a format only writes the finished [`Summary`].

use std::collections::BTreeMap;
use std::io::Write;

use chrono::NaiveDate;

use super::{DocumentHeader, RenderError, Renderer, opening_balances};
use crate::domain::{ControlTotals, Currency, CurrencyTotals, Entry, EntryType, Timezone};

/// Count and sums of a group of entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Entries in the group.
    pub count: u64,
    /// Sum of the positive amounts.
    pub credits: i128,
    /// Sum of the negative amounts (zero or negative).
    pub debits: i128,
}

impl Bucket {
    /// Adds one amount.
    pub fn add(&mut self, amount: i64) {
        self.count += 1;
        if amount >= 0 {
            self.credits += i128::from(amount);
        } else {
            self.debits += i128::from(amount);
        }
    }

    /// credits + debits.
    pub fn net(&self) -> i128 {
        self.credits + self.debits
    }
}

/// Everything a summary shows for one currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrencySummary {
    /// The currency.
    pub currency: Currency,
    /// Balance at the period's start (zero for a currency first seen inside the period).
    pub opening: i64,
    /// Per local day (in the period's time zone) that has entries, ascending.
    pub days: BTreeMap<NaiveDate, Bucket>,
    /// Per entry type that occurs, in [`EntryType::ALL`] order.
    pub types: BTreeMap<EntryType, Bucket>,
    /// All entries of the currency.
    pub total: Bucket,
}

impl CurrencySummary {
    fn new(currency: Currency, opening: i64) -> Self {
        Self {
            currency,
            opening,
            days: BTreeMap::new(),
            types: BTreeMap::new(),
            total: Bucket::default(),
        }
    }

    /// opening + every amount.
    pub fn closing(&self) -> i128 {
        i128::from(self.opening) + self.total.net()
    }
}

/// A finished summary: one part per currency, ordered by currency code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Per currency; empty when the merchant has neither balances nor entries.
    pub currencies: Vec<CurrencySummary>,
    /// Entries over all currencies.
    pub entry_count: u64,
}

impl Summary {
    /// The control totals of what a document showing this summary's day rows states. They
    /// are computed from the day rows, so a writer that shows every day row and the
    /// balances shows exactly these.
    pub fn control_totals(&self) -> ControlTotals {
        let mut totals = ControlTotals::default();
        for c in &self.currencies {
            let mut t = CurrencyTotals {
                opening: c.opening,
                ..CurrencyTotals::default()
            };
            for day in c.days.values() {
                t.count += day.count;
                t.credits += day.credits;
                t.debits += day.debits;
            }
            t.closing = i128::from(t.opening) + t.credits + t.debits;
            totals.entry_count += t.count;
            totals.currencies.insert(c.currency, t);
        }
        totals
    }
}

/// Folds entries into a [`Summary`].
#[derive(Debug, Clone)]
pub struct SummaryBuilder {
    timezone: Timezone,
    currencies: BTreeMap<Currency, CurrencySummary>,
    entry_count: u64,
}

impl SummaryBuilder {
    /// Starts from the header's opening balances (several for one currency are added).
    pub fn new(header: &DocumentHeader) -> Result<Self, RenderError> {
        Ok(Self {
            timezone: header.timezone,
            currencies: opening_balances(&header.opening_balances)?
                .into_iter()
                .map(|(currency, opening)| (currency, CurrencySummary::new(currency, opening)))
                .collect(),
            entry_count: 0,
        })
    }

    /// Adds one entry.
    pub fn add(&mut self, entry: &Entry) {
        let day = entry.booked_at.with_timezone(&self.timezone.0).date_naive();
        let c = self
            .currencies
            .entry(entry.currency)
            .or_insert_with(|| CurrencySummary::new(entry.currency, 0));
        c.days.entry(day).or_default().add(entry.amount);
        c.types
            .entry(entry.entry_type)
            .or_default()
            .add(entry.amount);
        c.total.add(entry.amount);
        self.entry_count += 1;
    }

    /// The finished summary.
    pub fn finish(self) -> Summary {
        Summary {
            currencies: self.currencies.into_values().collect(),
            entry_count: self.entry_count,
        }
    }
}

/// Writes a finished summary in one format and hands the output back.
pub type WriteSummary<W> =
    fn(&DocumentHeader, &Summary, W) -> Result<(ControlTotals, W), RenderError>;

/// A [`Renderer`] for SUMMARY documents: folds entries, then lets `write` lay the summary
/// out. The totals reported are the writer's.
pub struct SummaryRenderer<W: Write> {
    header: DocumentHeader,
    builder: SummaryBuilder,
    out: W,
    write: WriteSummary<W>,
}

impl<W: Write> SummaryRenderer<W> {
    /// A summary of `header`'s ledger written by `write` to `out`.
    pub fn new(
        header: &DocumentHeader,
        out: W,
        write: WriteSummary<W>,
    ) -> Result<Self, RenderError> {
        Ok(Self {
            header: header.clone(),
            builder: SummaryBuilder::new(header)?,
            out,
            write,
        })
    }
}

impl<W: Write + Send> Renderer<W> for SummaryRenderer<W> {
    fn entry(&mut self, entry: &Entry) -> Result<(), RenderError> {
        self.builder.add(entry);
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(ControlTotals, W), RenderError> {
        let summary = self.builder.finish();
        (self.write)(&self.header, &summary, self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::LedgerType;
    use crate::render::testing::{entry, header};

    #[test]
    fn entries_fold_per_local_day_type_and_currency() {
        let eur = Currency::parse("EUR").unwrap();
        let usd = Currency::parse("USD").unwrap();
        let h = header(
            LedgerType::Summary,
            "2026-10",
            &[("EUR", 1000), ("EUR", 500)],
        );
        let mut b = SummaryBuilder::new(&h).unwrap();
        // 22:30 UTC on Oct 1 is Oct 2 in Berlin.
        b.add(&entry("tx_1", "2026-10-01T22:30:00Z", 2000, "EUR"));
        b.add(&Entry {
            entry_type: EntryType::Fee,
            ..entry("tx_2", "2026-10-02T08:00:00Z", -30, "EUR")
        });
        b.add(&entry("tx_3", "2026-10-03T08:00:00Z", 700, "USD"));
        let s = b.finish();
        assert_eq!(s.entry_count, 3);
        assert_eq!(s.currencies.len(), 2);
        let e = &s.currencies[0];
        assert_eq!((e.currency, e.opening), (eur, 1500));
        let oct2 = NaiveDate::from_ymd_opt(2026, 10, 2).unwrap();
        assert_eq!(e.days.len(), 1);
        assert_eq!(
            e.days[&oct2],
            Bucket {
                count: 2,
                credits: 2000,
                debits: -30
            }
        );
        assert_eq!(e.types[&EntryType::Fee].debits, -30);
        assert_eq!(e.closing(), 3470);
        let u = &s.currencies[1];
        assert_eq!((u.currency, u.opening, u.closing()), (usd, 0, 700));
        let totals = s.control_totals();
        assert_eq!(totals.entry_count, 3);
        assert_eq!(totals.currencies[&eur].closing, 3470);
        assert_eq!(totals.currencies[&usd].credits, 700);
    }

    #[test]
    fn an_empty_period_keeps_its_opening_balances() {
        let h = header(LedgerType::Summary, "2026-10", &[("EUR", -5)]);
        let s = SummaryBuilder::new(&h).unwrap().finish();
        assert_eq!(s.entry_count, 0);
        assert_eq!(s.currencies[0].closing(), -5);
        assert!(s.currencies[0].days.is_empty());
    }
}
