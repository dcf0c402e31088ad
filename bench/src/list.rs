//! `ledger-bench list`: `GET /ledgers` over a store seeded with many ledgers, in every filter
//! combination the API offers, for callers of every reach, first pages and the pages after.
//!
//! The store is seeded straight through SQL (`ledger::store::sql::seed`: a big merchant with
//! a tenth of the ledgers, 1,999 others, 96% COMPLETED, rare REJECTED/PENDING/PROCESSING,
//! 1% deleted), then the api role alone serves in this process (no worker takes the seeded
//! PENDING rows). Each request's time is the client's: HTTP on loopback, the token checked,
//! the scope looked up, the query, the JSON.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{Datelike, NaiveDate};
use serde_json::Value;

use crate::harness::{Bench, env_vars, percentile, prepare, start_prepared};
use ledger::domain::Grant;
use ledger::outln;

/// Who lists, and what it names.
struct Caller {
    name: &'static str,
    token: String,
    /// `merchantId` to send: none, a random small merchant, or the big one.
    merchant: Pick,
    /// Which periods its merchants have: the big merchant's days, the others' months.
    periods: Periods,
}

#[derive(Clone, Copy)]
enum Pick {
    None,
    Small,
    Big,
}

#[derive(Clone, Copy)]
enum Periods {
    Days,
    Months,
    Both,
}

/// A small deterministic generator (xorshift64*): the same requests run after run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

const STATUSES: [&str; 4] = ["COMPLETED", "REJECTED", "PENDING", "PROCESSING"];
const TYPES: [&str; 2] = ["STATEMENT", "SUMMARY"];
/// Pages read per request: the first, then `nextCursor` this many times more.
const PAGES: usize = 3;

pub async fn list(
    ledgers: usize,
    requests: usize,
    timelines: bool,
    batch: bool,
) -> anyhow::Result<()> {
    if ledgers < 20_000 {
        bail!("--ledgers must be at least 20000 (every seeded merchant gets some)");
    }
    let dir = tempfile::tempdir()?;
    let mut base = env_vars();
    base.insert("APP_ENV_APPLICATION_ROLES".into(), "api".into());
    base.insert("APP_ENV_LOG_LEVEL".into(), "error".into());
    let prepared = prepare(dir.path(), 1, base).await?;
    let config = prepared.config.clone();
    let engine = match config.database {
        ledger::config::DatabaseKind::Sqlite(_) => "SQLite",
        ledger::config::DatabaseKind::Postgres(_) => "PostgreSQL",
    };
    let seeding = Instant::now();
    let now_ms = chrono::Utc::now().timestamp_millis() - 60_000;
    let first_id =
        ledger::store::sql::seed::seed_database(&config.database, ledgers as i64, now_ms)
            .await
            .context("seeding the store")?;
    let seed_secs = seeding.elapsed().as_secs_f64();
    let timeline_secs = if timelines {
        let started = Instant::now();
        ledger::store::sql::seed::seed_timelines(&config.database, first_id)
            .await
            .context("seeding the timelines")?;
        Some(started.elapsed().as_secs_f64())
    } else {
        None
    };
    let batch = if batch {
        let started = Instant::now();
        let id = ledger::store::sql::seed::seed_batch_database(&config.database, first_id)
            .await
            .context("seeding a batch")?;
        Some((id, started.elapsed().as_secs_f64()))
    } else {
        None
    };

    // Callers of every reach: a platform admin (every merchant), and viewers of a few,
    // of many, and of the big merchant.
    let store = ledger::app::open_store(&config).await?;
    let key = ledger::app::dev_key(&config)?;
    let sign = |subject: &str| -> anyhow::Result<String> {
        Ok(key.sign(
            subject,
            Duration::from_secs(3600),
            config.auth_issuer.as_deref(),
            config.auth_audience.as_deref(),
        )?)
    };
    let grant = async |subject: &str, merchants: Vec<String>| -> anyhow::Result<String> {
        for domain in merchants {
            store
                .add_grant(&Grant {
                    subject: subject.into(),
                    role: "merchant_viewer".into(),
                    domain,
                })
                .await?;
        }
        sign(subject)
    };
    let small = |n: usize| (0..n).map(|i| format!("m_seed_{i:04}")).collect::<Vec<_>>();
    let mut big_and_four = vec![ledger::store::sql::seed::BIG_MERCHANT.to_owned()];
    big_and_four.extend(small(4));
    let callers = vec![
        Caller {
            name: "platform admin, every merchant",
            token: prepared.token.clone(),
            merchant: Pick::None,
            periods: Periods::Both,
        },
        Caller {
            name: "platform admin, merchantId=<small>",
            token: prepared.token.clone(),
            merchant: Pick::Small,
            periods: Periods::Months,
        },
        Caller {
            name: "platform admin, merchantId=<big>",
            token: prepared.token.clone(),
            merchant: Pick::Big,
            periods: Periods::Days,
        },
        Caller {
            name: "viewer of 5 merchants",
            token: grant("bench_viewer_5", small(5)).await?,
            merchant: Pick::None,
            periods: Periods::Months,
        },
        Caller {
            name: "viewer of 50 merchants",
            token: grant("bench_viewer_50", small(50)).await?,
            merchant: Pick::None,
            periods: Periods::Months,
        },
        Caller {
            name: "viewer of the big merchant and 4",
            token: grant("bench_viewer_big", big_and_four).await?,
            merchant: Pick::None,
            periods: Periods::Both,
        },
    ];
    let bench = start_prepared(dir, prepared).await?;

    // The seeded periods: the big merchant's days from 2010-01-01, the others' months
    // from 2020-01.
    let days = (ledgers as u64 / 10 / 18).max(1);
    let months = (ledgers as u64 * 9 / 10 / 1999 / 6).max(1);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut all = Vec::new();
    let mut worst: (f64, String) = (0.0, String::new());
    outln!(
        "list, {engine}: {ledgers} ledgers seeded in {seed_secs:.1}s; {requests} requests a \
         shape, {PAGES} pages each (first page, then nextCursor), limit 50"
    )?;
    outln!(
        "  {:<36} {:<22} {:>8} {:>8} {:>8} {:>6}",
        "caller",
        "filters",
        "p50 ms",
        "p99 ms",
        "max ms",
        "items"
    )?;
    for caller in &callers {
        for filters in 0..8u8 {
            let mut times = Vec::with_capacity(requests * PAGES);
            let mut items = 0usize;
            for _ in 0..requests {
                let mut query: Vec<(&str, String)> = Vec::new();
                match caller.merchant {
                    Pick::None => {}
                    Pick::Small => {
                        query.push(("merchantId", format!("m_seed_{:04}", rng.below(1999))))
                    }
                    Pick::Big => query.push((
                        "merchantId",
                        ledger::store::sql::seed::BIG_MERCHANT.to_owned(),
                    )),
                }
                if filters & 1 != 0 {
                    query.push(("status", STATUSES[rng.below(4) as usize].to_owned()));
                }
                if filters & 2 != 0 {
                    query.push(("type", TYPES[rng.below(2) as usize].to_owned()));
                }
                if filters & 4 != 0 {
                    let day = matches!(caller.periods, Periods::Days)
                        || (matches!(caller.periods, Periods::Both) && rng.below(2) == 0);
                    query.push((
                        "period",
                        if day {
                            day_period(rng.below(days))
                        } else {
                            month_period(rng.below(months))
                        },
                    ));
                }
                let mut cursor: Option<String> = None;
                for _ in 0..PAGES {
                    let mut q = query.clone();
                    if let Some(c) = &cursor {
                        q.push(("cursor", c.clone()));
                    }
                    let (ms, page) = timed_get(&bench, &caller.token, "/ledgers", &q).await?;
                    times.push(ms);
                    items += page["items"].as_array().map_or(0, Vec::len);
                    cursor = page["nextCursor"].as_str().map(str::to_owned);
                    if cursor.is_none() {
                        break;
                    }
                }
            }
            times.sort_by(|a, b| a.total_cmp(b));
            let p99 = percentile(&times, 99.0);
            let label = filter_label(filters);
            if p99 > worst.0 {
                worst = (p99, format!("{} / {label}", caller.name));
            }
            outln!(
                "  {:<36} {:<22} {:>8.2} {:>8.2} {:>8.2} {:>6}",
                caller.name,
                label,
                percentile(&times, 50.0),
                p99,
                times.last().copied().unwrap_or(f64::NAN),
                items / requests.max(1)
            )?;
            all.extend(times);
        }
    }
    all.sort_by(|a, b| a.total_cmp(b));
    outln!(
        "  all {} pages: p50 {:.2}ms p99 {:.2}ms max {:.2}ms; worst shape p99 {:.2}ms ({})",
        all.len(),
        percentile(&all, 50.0),
        percentile(&all, 99.0),
        all.last().copied().unwrap_or(f64::NAN),
        worst.0,
        worst.1
    )?;
    if let Some(secs) = timeline_secs {
        timelines_and_replays(&bench, &*store, ledgers, first_id, now_ms, requests, secs).await?;
    }
    if let Some((id, secs)) = batch {
        batch_pages(&bench, id, requests, secs).await?;
    }
    bench.stop().await;
    Ok(())
}

/// Timelines (`GET /ledgers/:id/events`) of random seeded ledgers, and `?since=` replays'
/// store reads (the pages a reconnecting socket reads, up to its 10,000 events) for windows
/// back from the newest seeded event, for every merchant, one, five, and the big one (a
/// tenth of the events).
async fn timelines_and_replays(
    bench: &Bench,
    store: &dyn ledger::store::JobStore,
    ledgers: usize,
    first_id: i64,
    now_ms: i64,
    requests: usize,
    seed_secs: f64,
) -> anyhow::Result<()> {
    outln!(
        "  timelines ({} status events) seeded in {seed_secs:.1}s",
        ledgers * 3
    )?;
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut times = Vec::new();
    for _ in 0..requests * 5 {
        // Seeded ids are 50 ms apart: (ms << 22).
        let id = first_id + ((rng.below(ledgers as u64) as i64 * 50) << 22);
        let started = Instant::now();
        let r = bench
            .client
            .get(format!("{}/ledgers/{id}/events", bench.base))
            .bearer_auth(&bench.token)
            .send()
            .await?;
        let status = r.status();
        let body: Value = r.json().await?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        if status != 200 || body["items"].as_array().is_none_or(Vec::is_empty) {
            bail!("GET /ledgers/{id}/events answered {status}: {body}");
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    outln!(
        "  {:<36} {:<22} {:>8.2} {:>8.2} {:>8.2}",
        "timeline of a ledger",
        "",
        percentile(&times, 50.0),
        percentile(&times, 99.0),
        times.last().copied().unwrap_or(f64::NAN)
    )?;
    let newest = chrono::DateTime::from_timestamp_millis(now_ms).context("a time")?;
    let one = vec![ledger::domain::MerchantId::parse("m_seed_0001")?];
    let big = vec![ledger::domain::MerchantId::parse(
        ledger::store::sql::seed::BIG_MERCHANT,
    )?];
    let five: Vec<_> = (0..5)
        .map(|i| ledger::domain::MerchantId::parse(&format!("m_seed_{i:04}")))
        .collect::<Result<_, _>>()?;
    for (label, window) in [
        ("1 s", Duration::from_secs(1)),
        ("1 min", Duration::from_secs(60)),
        ("1 h", Duration::from_secs(3600)),
        ("24 h", Duration::from_secs(86_400)),
    ] {
        let since = newest - chrono::Duration::from_std(window)?;
        for (scope, merchants) in [
            ("every merchant", None),
            ("one merchant", Some(one.as_slice())),
            ("5 merchants", Some(five.as_slice())),
            ("the big merchant", Some(big.as_slice())),
        ] {
            // The store reads of one replay: pages of 500 until 10,000 events or the end.
            let started = Instant::now();
            let (mut after, mut events) = (0, 0usize);
            loop {
                let page = store
                    .status_events_since(merchants, since, after, 500)
                    .await?;
                events += page.len();
                match page.last() {
                    Some((seq, _)) if page.len() == 500 && events < 10_000 => after = *seq,
                    _ => break,
                }
            }
            outln!(
                "  replay of {label:<5} {scope:<16} {events:>6} events, {:.2} ms",
                started.elapsed().as_secs_f64() * 1000.0
            )?;
        }
    }
    Ok(())
}

/// `GET /batches/:id/ledgers` of the seeded batch (a third of the ledgers) with every filter,
/// each request reading up to [`PAGES`] pages, and `GET /batches/:id` (its counts).
async fn batch_pages(
    bench: &Bench,
    id: i64,
    requests: usize,
    seed_secs: f64,
) -> anyhow::Result<()> {
    let path = format!("/batches/{id}/ledgers");
    let (_, batch) = timed_get(bench, &bench.token, &format!("/batches/{id}"), &[]).await?;
    outln!(
        "  a batch of {} members seeded in {seed_secs:.1}s",
        batch["total"]
    )?;
    let mut filters = vec![("every member", None)];
    for status in ["EXISTING", "COMPLETED", "REJECTED", "PENDING", "PROCESSING"] {
        filters.push((status, Some(status)));
    }
    let mut all = Vec::new();
    for (label, status) in filters {
        let mut times = Vec::with_capacity(requests * PAGES);
        for _ in 0..requests {
            let mut cursor: Option<String> = None;
            for _ in 0..PAGES {
                let mut q: Vec<(&str, String)> = Vec::new();
                if let Some(s) = status {
                    q.push(("status", s.to_owned()));
                }
                if let Some(c) = &cursor {
                    q.push(("cursor", c.clone()));
                }
                let (ms, page) = timed_get(bench, &bench.token, &path, &q).await?;
                times.push(ms);
                cursor = page["nextCursor"].as_str().map(str::to_owned);
                if cursor.is_none() {
                    break;
                }
            }
        }
        times.sort_by(|a, b| a.total_cmp(b));
        outln!(
            "  {:<36} {:<22} {:>8.2} {:>8.2} {:>8.2}",
            "batch members",
            label,
            percentile(&times, 50.0),
            percentile(&times, 99.0),
            times.last().copied().unwrap_or(f64::NAN)
        )?;
        all.extend(times);
    }
    all.sort_by(|a, b| a.total_cmp(b));
    outln!(
        "  all {} member pages: p50 {:.2}ms p99 {:.2}ms max {:.2}ms",
        all.len(),
        percentile(&all, 50.0),
        percentile(&all, 99.0),
        all.last().copied().unwrap_or(f64::NAN)
    )?;
    let mut times = Vec::with_capacity(requests);
    for _ in 0..requests {
        times.push(
            timed_get(bench, &bench.token, &format!("/batches/{id}"), &[])
                .await?
                .0,
        );
    }
    times.sort_by(|a, b| a.total_cmp(b));
    outln!(
        "  {:<36} {:<22} {:>8.2} {:>8.2} {:>8.2}",
        "batch counts (GET /batches/:id)",
        "",
        percentile(&times, 50.0),
        percentile(&times, 99.0),
        times.last().copied().unwrap_or(f64::NAN)
    )?;
    Ok(())
}

fn filter_label(filters: u8) -> String {
    let names: Vec<&str> = [(1, "status"), (2, "type"), (4, "period")]
        .into_iter()
        .filter(|(bit, _)| filters & bit != 0)
        .map(|(_, name)| name)
        .collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join("+")
    }
}

fn day_period(day: u64) -> String {
    let start = NaiveDate::from_ymd_opt(2010, 1, 1).expect("a valid date");
    (start + chrono::Days::new(day))
        .format("%Y-%m-%d")
        .to_string()
}

fn month_period(month: u64) -> String {
    let m = 2020 * 12 + month;
    let date =
        NaiveDate::from_ymd_opt((m / 12) as i32, (m % 12) as u32 + 1, 1).expect("a valid month");
    format!("{:04}-{:02}", date.year(), date.month())
}

/// One `GET /ledgers` and the client's time for it, in milliseconds.
async fn timed_get(
    bench: &Bench,
    token: &str,
    path: &str,
    query: &[(&str, String)],
) -> anyhow::Result<(f64, Value)> {
    let started = Instant::now();
    let r = bench
        .client
        .get(format!("{}{path}", bench.base))
        .bearer_auth(token)
        .query(query)
        .send()
        .await?;
    let status = r.status();
    let body: Value = r.json().await?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if status != 200 {
        bail!("GET {path} {query:?} answered {status}: {body}");
    }
    Ok((ms, body))
}
