//! Schedules (SPEC §11) as a client sees them: catch-up from `from`, each merchant's period
//! closing in its own zone (Kiritimati a day before Pago Pago), exactly one ledger per
//! (merchant, period, format) with two worker processes racing and across a restart,
//! authorization, validation, pause, resume and delete.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use serde_json::{Value, json};

use crate::helpers::{Options, TestApp, assert_error, spawn_app, spawn_with, write_merchant};

/// A source of one merchant in Kiritimati (UTC+14) and one in Pago Pago (UTC−11).
fn two_zones() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    write_merchant(dir.path(), "m_kiri", 20, Some("Pacific/Kiritimati"));
    write_merchant(dir.path(), "m_pago", 20, Some("Pacific/Pago_Pago"));
    dir
}

/// A process on `data_dir` (and its backends) reading `source`, with `roles` and `extra`
/// settings.
async fn process_with(
    data_dir: &str,
    source: &std::path::Path,
    roles: &str,
    extra: &[(&'static str, String)],
) -> TestApp {
    let mut vars = vec![
        ("APP_ENV_DATA_DIR", data_dir.to_owned()),
        ("APP_ENV_APPLICATION_ROLES", roles.to_owned()),
    ];
    vars.extend(extra.iter().cloned());
    spawn_with(Options {
        vars,
        source_dir: Some(source.to_path_buf()),
        ..Options::default()
    })
    .await
}

/// A process on `data_dir` (and its backends) reading `source`, with `roles`.
async fn process(data_dir: &str, source: &std::path::Path, roles: &str) -> TestApp {
    spawn_with(Options {
        vars: vec![
            ("APP_ENV_DATA_DIR", data_dir.to_owned()),
            ("APP_ENV_APPLICATION_ROLES", roles.to_owned()),
        ],
        source_dir: Some(source.to_path_buf()),
        ..Options::default()
    })
    .await
}

/// The day that is still open in Pago Pago (UTC−11) but closed in Kiritimati (UTC+14):
/// there always is one, as the two are 25 hours apart.
fn open_in_pago_pago() -> NaiveDate {
    (Utc::now() - chrono::Duration::hours(11)).date_naive()
}

async fn create_schedule(app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/schedules"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("request")
}

async fn created(app: &TestApp, token: &str, body: &Value) -> Value {
    let r = create_schedule(app, token, body).await;
    let status = r.status().as_u16();
    let json: Value = r.json().await.expect("json");
    assert_eq!(status, 201, "{json}");
    json
}

/// The merchants of a batch's ledgers.
async fn merchants_of(app: &TestApp, token: &str, batch: &str) -> BTreeSet<String> {
    let page = app
        .get_json(token, &format!("/batches/{batch}/ledgers?limit=200"))
        .await;
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["merchantId"].as_str().unwrap().to_owned())
        .collect()
}

/// Polls the schedule until `done` holds for it.
async fn until(
    app: &TestApp,
    token: &str,
    id: &str,
    secs: u64,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let s = app.get_json(token, &format!("/schedules/{id}")).await;
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: {s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn run_of<'a>(schedule: &'a Value, period: &str) -> Option<&'a Value> {
    schedule["runs"]
        .as_array()?
        .iter()
        .find(|r| r["period"] == period)
}

/// Every ledger the store holds, per (merchant, period, format): each exactly once.
async fn assert_each_ledger_once(app: &TestApp, token: &str) -> usize {
    let mut seen: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/ledgers?limit=200".to_owned();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = app.get_json(token, &path).await;
        for l in page["items"].as_array().unwrap() {
            let key = (
                l["merchantId"].as_str().unwrap().to_owned(),
                l["period"].as_str().unwrap().to_owned(),
                l["format"].as_str().unwrap().to_owned(),
            );
            *seen.entry(key).or_default() += 1;
        }
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "made more than once: {twice:?}");
    seen.len()
}

#[tokio::test]
async fn a_schedule_catches_up_and_each_merchant_closes_in_its_own_zone() {
    let source = two_zones();
    let app = spawn_with(Options {
        source_dir: Some(source.path().to_path_buf()),
        ..Options::default()
    })
    .await;
    // A second worker on the same store races the first for every run and every pass.
    let data_dir = app.data_dir.path().display().to_string();
    let other = process(&data_dir, source.path(), "worker").await;
    let token = app.user("ops", "platform_admin", "*").await;
    let open = open_in_pago_pago();
    let day = |back: i64| (open - chrono::Duration::days(back)).to_string();
    let s = created(
        &app,
        &token,
        &json!({"merchantIds": ["m_kiri", "m_pago"], "type": "STATEMENT", "formats": ["CSV"],
                "cadence": "DAILY", "delay": "PT0S", "from": day(2)}),
    )
    .await;
    assert_eq!(
        (s["cadence"].as_str(), s["delay"].as_str()),
        (Some("DAILY"), Some("PT0S"))
    );
    let id = s["id"].as_str().unwrap().to_owned();

    let s = until(
        &app,
        &token,
        &id,
        90,
        "the closed days' runs complete",
        |s| {
            [day(2), day(1)]
                .iter()
                .all(|d| run_of(s, d).is_some_and(|r| r["status"] == "COMPLETED"))
                && run_of(s, &day(0)).is_some()
        },
    )
    .await;
    // Both merchants' days closed before today: each run has both.
    for d in [day(2), day(1)] {
        let batch = run_of(&s, &d).unwrap()["batchId"].as_str().unwrap();
        assert_eq!(
            merchants_of(&app, &token, batch).await,
            BTreeSet::from(["m_kiri".into(), "m_pago".into()]),
            "{d}"
        );
    }
    // Today in Pago Pago is still open: its run has Kiritimati's ledger only, and waits.
    let today = run_of(&s, &day(0)).unwrap();
    let batch = today["batchId"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let merchants = merchants_of(&app, &token, &batch).await;
        if !merchants.is_empty() {
            assert_eq!(merchants, BTreeSet::from(["m_kiri".into()]));
            break;
        }
        assert!(Instant::now() < deadline, "Kiritimati's ledger never came");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let b = app.get_json(&token, &format!("/batches/{batch}")).await;
    assert_eq!(
        (b["status"].as_str(), b["expanding"].as_bool()),
        (Some("RUNNING"), Some(true)),
        "{b}"
    );
    // Pago Pago closes today 25 hours after Kiritimati: it is the next close at the latest.
    let pago_close = (open + chrono::Duration::days(1))
        .and_hms_opt(11, 0, 0)
        .unwrap()
        .and_utc();
    let next: chrono::DateTime<Utc> = s["nextRunAt"].as_str().unwrap().parse().unwrap();
    assert!(
        next <= pago_close && next > Utc::now() - chrono::Duration::minutes(1),
        "{s}"
    );

    // Two workers, each run once, each ledger once.
    let periods: Vec<&str> = s["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["period"].as_str().unwrap())
        .collect();
    let distinct: BTreeSet<&str> = periods.iter().copied().collect();
    assert_eq!(periods.len(), distinct.len(), "{periods:?}");
    assert!(assert_each_ledger_once(&app, &token).await >= 5);
    other.stop().await;
}

#[tokio::test]
async fn a_restarted_service_goes_on_where_its_schedule_stopped() {
    let source = two_zones();
    // The data dir (and in the production run its database) outlives both processes.
    let data = crate::helpers::data_dir();
    let data_dir = data.path().display().to_string();
    // On the production backends, PostgreSQL, S3 and Redis with the in-database queue: the
    // hand-over of Kafka partitions from a stopped process to a new one is production.rs's
    // subject, and tansu was seen to leave the new member without partitions for minutes
    // (with its own broker too), which is not what this tests.
    let production = std::env::var("LEDGER_TEST_BACKENDS").is_ok_and(|b| b == "production");
    let extra: Vec<(&'static str, String)> = if production {
        vec![("APP_ENV_QUEUE", "db".to_owned())]
    } else {
        Vec::new()
    };
    let first = process_with(&data_dir, source.path(), "api,worker", &extra).await;
    let token = first.user("ops", "platform_admin", "*").await;
    let open = open_in_pago_pago();
    let from = (open - chrono::Duration::days(20)).to_string();
    let s = created(
        &first,
        &token,
        &json!({"merchantIds": ["m_kiri", "m_pago"], "type": "SUMMARY", "formats": ["CSV", "XLSX"],
                "cadence": "DAILY", "delay": "PT0S", "from": from}),
    )
    .await;
    let id = s["id"].as_str().unwrap().to_owned();
    // Once the first service runs (its queue consumer working: a Kafka consumer stopped
    // while still joining its group holds the group's partitions for its session timeout,
    // longer than this test waits).
    until(&first, &token, &id, 60, "a first completed run", |s| {
        s["runs"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["status"] == "COMPLETED"))
    })
    .await;
    // Stopped in the middle of the catch-up: it gives its expansion back and exits; a new
    // service on the same data dir (and backends) goes on from there. (Sequential, as a
    // restart is: two Kafka consumers joining and leaving one group at once can wait a
    // minute for a rebalance under the full suite's load, which is not what this tests.)
    tokio::time::timeout(Duration::from_secs(30), first.stop())
        .await
        .expect("the first service stops within 30 s");
    let second = process_with(&data_dir, source.path(), "api,worker", &extra).await;
    let closed: Vec<String> = (1..=20)
        .map(|back| (open - chrono::Duration::days(back)).to_string())
        .collect();
    until(
        &second,
        &token,
        &id,
        240,
        "every closed day's run completes",
        |s| {
            closed
                .iter()
                .all(|d| run_of(s, d).is_some_and(|r| r["status"] == "COMPLETED"))
        },
    )
    .await;
    // 20 closed days × 2 merchants × 2 formats, plus Kiritimati's today: once each.
    let made = assert_each_ledger_once(&second, &token).await;
    assert!((80..=84).contains(&made), "{made}");
    second.stop().await;
}

#[tokio::test]
async fn schedules_are_authorized_validated_paused_and_deleted() {
    let app = spawn_app().await;
    let ana = app.user("ana", "merchant_operator", "m_acme").await;
    let bob = app.user("bob", "merchant_operator", "m_acme").await;
    let monthly = |merchants: Value| json!({"merchantIds": merchants, "type": "STATEMENT", "formats": ["PDF"], "cadence": "MONTHLY"});
    assert_error(
        create_schedule(&app, &ana, &monthly(json!("*"))).await,
        403,
        "FORBIDDEN",
    )
    .await;
    let body = assert_error(
        create_schedule(&app, &ana, &monthly(json!(["m_acme", "m_global"]))).await,
        403,
        "FORBIDDEN",
    )
    .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("m_global")
    );
    for (patch, field) in [
        (json!({"cadence": "HOURLY"}), "cadence"),
        (json!({"from": "2026-Q3"}), "from"),
        (json!({"from": "2999-01"}), "from"),
        (json!({"from": "1990-01"}), "from"),
        (json!({"delay": "P1M"}), "delay"),
        (json!({"delay": "P40D"}), "delay"),
        (json!({"formats": []}), "formats"),
        (json!({"paused": true}), "paused"),
    ] {
        let mut body = monthly(json!(["m_acme"]));
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let e = assert_error(
            create_schedule(&app, &ana, &body).await,
            400,
            "VALIDATION_ERROR",
        )
        .await;
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{field}:")),
            "{field}: {e}"
        );
    }

    // No delay: an hour.
    let default = created(&app, &ana, &monthly(json!(["m_acme"]))).await;
    assert_eq!(default["delay"], "PT1H");
    assert_eq!(
        app.delete(
            &ana,
            &format!("/schedules/{}", default["id"].as_str().unwrap())
        )
        .await
        .status(),
        204
    );
    // No `from`: the first run is this month's (UTC), once it has closed somewhere (in
    // Kiritimati, UTC+14) and the delay has passed. A delay of 31 days keeps it in the
    // future on any day, the last hours of a month included.
    let before = Utc::now();
    let mut body = monthly(json!(["m_acme"]));
    body["delay"] = json!("P31D");
    let s = created(&app, &ana, &body).await;
    let id = s["id"].as_str().unwrap().to_owned();
    assert_eq!(s["delay"], "P31D");
    let month = ledger::domain::Period::parse(&before.format("%Y-%m").to_string()).unwrap();
    let (_, kiritimati_end) =
        month.bounds(ledger::domain::Timezone::parse("Pacific/Kiritimati").unwrap());
    let next: chrono::DateTime<Utc> = s["nextRunAt"].as_str().unwrap().parse().unwrap();
    assert_eq!(next, kiritimati_end + chrono::Duration::days(31), "{s}");
    assert!(next > Utc::now(), "{s}");
    let one = app.get_json(&ana, &format!("/schedules/{id}")).await;
    assert_eq!(one["runs"], json!([]));
    assert_eq!(
        app.get_json(&ana, "/schedules").await["items"][0]["id"],
        id.as_str()
    );

    // Only its creator (or a platform admin) sees or changes it.
    assert_error(
        app.get(&bob, &format!("/schedules/{id}")).await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_eq!(app.get_json(&bob, "/schedules").await["items"], json!([]));
    let patch = |token: &str, body: Value| {
        app.client
            .patch(app.url(&format!("/schedules/{id}")))
            .bearer_auth(token.to_owned())
            .json(&body)
            .send()
    };
    assert_error(
        patch(&bob, json!({"paused": true})).await.unwrap(),
        404,
        "NOT_FOUND",
    )
    .await;
    assert_error(
        patch(&ana, json!({"paused": "yes"})).await.unwrap(),
        400,
        "VALIDATION_ERROR",
    )
    .await;
    let paused: Value = patch(&ana, json!({"paused": true}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (paused["paused"].as_bool(), &paused["nextRunAt"]),
        (Some(true), &Value::Null)
    );
    let resumed: Value = patch(&ana, json!({"paused": false}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resumed["paused"], false);
    assert_eq!(resumed["nextRunAt"], s["nextRunAt"]);

    assert_error(
        app.delete(&bob, &format!("/schedules/{id}")).await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_eq!(
        app.delete(&ana, &format!("/schedules/{id}")).await.status(),
        204
    );
    assert_error(
        app.get(&ana, &format!("/schedules/{id}")).await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_error(
        app.delete(&ana, &format!("/schedules/{id}")).await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_error(
        app.get(&ana, "/schedules/abc").await,
        400,
        "VALIDATION_ERROR",
    )
    .await;
}
