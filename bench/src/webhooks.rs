//! `ledger-bench webhooks`: small ledgers end to end with webhook endpoints subscribed to
//! their completion, delivered to a receiver in this process (plain HTTP on 127.0.0.1, so
//! the service runs with `APP_ENV_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true`). Prints the ledger
//! rate, the delivery rate (deliveries over the span from the first to the last one
//! received) and the lag from a ledger's completion to its delivery.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use axum::extract::State;
use axum::http::StatusCode;
use ledger::outln;
use serde_json::{Value, json};

use crate::harness::{day_merchants, day_statements, env_vars, percentile, start_with};

/// What the receiver saw: each delivery's arrival and its ledger id.
#[derive(Default)]
struct Seen {
    arrivals: Vec<(Instant, chrono::DateTime<chrono::Utc>, String)>,
}

async fn receive(State(seen): State<Arc<Mutex<Seen>>>, body: String) -> StatusCode {
    let at = Instant::now();
    let now = chrono::Utc::now();
    let id = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["data"]["id"].as_str().map(str::to_owned))
        .unwrap_or_default();
    seen.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .arrivals
        .push((at, now, id));
    StatusCode::NO_CONTENT
}

pub async fn webhooks(
    count: usize,
    entries: u64,
    endpoints: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = receiver.local_addr()?.port();
    let app = axum::Router::new()
        .route("/hook/{n}", axum::routing::post(receive))
        .with_state(seen.clone());
    let served = tokio::spawn(async move { axum::serve(receiver, app).await });

    let dir = tempfile::tempdir()?;
    let merchants = day_merchants(dir.path(), "m_hook", count, entries)?;
    let mut base = env_vars();
    base.insert(
        "APP_ENV_WEBHOOK_ALLOW_PRIVATE_NETWORKS".into(),
        "true".into(),
    );
    let bench = start_with(dir, concurrency, base).await?;
    for n in 0..endpoints {
        let r = bench
            .client
            .post(format!("{}/webhooks", bench.base))
            .bearer_auth(&bench.token)
            .json(&json!({"url": format!("http://127.0.0.1:{port}/hook/{n}"),
                          "events": ["ledger.completed"], "merchantIds": merchants}))
            .send()
            .await?;
        if r.status() != 201 {
            bail!(
                "creating a webhook answered {}: {}",
                r.status(),
                r.text().await?
            );
        }
    }
    let bodies = day_statements(&merchants, count);
    let t0 = Instant::now();
    let ids = bench.create_all(&bodies).await?;
    let mut completed_at = std::collections::HashMap::with_capacity(count);
    for id in &ids {
        let l = bench.wait_completed(id, Duration::from_millis(20)).await?;
        if let Ok(at) =
            chrono::DateTime::parse_from_rfc3339(l["completedAt"].as_str().unwrap_or_default())
        {
            completed_at.insert(id.clone(), at.with_timezone(&chrono::Utc));
        }
    }
    let generated = t0.elapsed().as_secs_f64();
    let expected = count * endpoints;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let got = seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .arrivals
            .len();
        if got >= expected {
            break;
        }
        if Instant::now() > deadline {
            bail!("{got} of {expected} deliveries arrived within 600 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let wall = t0.elapsed().as_secs_f64();
    let (span, mut lags) = {
        let seen = seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let first = seen.arrivals.iter().map(|a| a.0).min().unwrap_or(t0);
        let last = seen.arrivals.iter().map(|a| a.0).max().unwrap_or(t0);
        let lags: Vec<f64> = seen
            .arrivals
            .iter()
            .filter_map(|(_, at, id)| {
                completed_at
                    .get(id)
                    .map(|c| (*at - *c).num_milliseconds() as f64)
            })
            .collect();
        ((last - first).as_secs_f64().max(1e-3), lags)
    };
    lags.sort_by(|a, b| a.total_cmp(b));
    outln!(
        "webhooks: {count} small CSV ledgers, {endpoints} endpoint(s) each: ledgers done in \
         {generated:.2}s ({:.1} ledgers/s), {expected} deliveries in {wall:.2}s wall, \
         {:.1} deliveries/s from the first to the last, completion→delivery p50 {:.0}ms \
         p99 {:.0}ms",
        count as f64 / generated,
        expected as f64 / span,
        percentile(&lags, 0.5),
        percentile(&lags, 0.99),
    )?;
    bench.stop().await;
    served.abort();
    Ok(())
}
