//! Live status over a real WebSocket, as a client sees it.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::helpers::{TestApp, spawn_app, statement};

/// Reads status frames until every ledger of `ids` was heard COMPLETED (or fails the test
/// after `wait`), and asserts that each one's statuses came in order: PENDING, PROCESSING,
/// COMPLETED. (How long they take is `ledger-bench live`'s figure, not a test's.)
pub(crate) async fn assert_each_completes_in_order(
    socket: &mut Socket,
    ids: &[String],
    wait: Duration,
) {
    let deadline = Instant::now() + wait;
    let mut heard: std::collections::HashMap<&str, Vec<String>> =
        ids.iter().map(|id| (id.as_str(), Vec::new())).collect();
    let done = |heard: &std::collections::HashMap<&str, Vec<String>>| {
        heard
            .values()
            .all(|s| s.last().is_some_and(|s| s == "COMPLETED"))
    };
    while !done(&heard) && Instant::now() < deadline {
        let Some(frame) = next_json(socket, Duration::from_secs(1)).await else {
            continue;
        };
        if frame["event"] != "ledger.status" {
            continue;
        }
        if let Some(statuses) = frame["ledgerId"].as_str().and_then(|id| heard.get_mut(id)) {
            statuses.push(frame["status"].as_str().unwrap().to_owned());
        }
    }
    for (id, statuses) in &heard {
        assert_eq!(
            statuses,
            &["PENDING", "PROCESSING", "COMPLETED"],
            "ledger {id}: every status event arrived, in order"
        );
    }
}

pub(crate) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn ws_url(app: &TestApp) -> String {
    format!("{}/v1/api/ledger/ws", app.base.replacen("http", "ws", 1))
}

pub(crate) async fn connect(app: &TestApp, token: &str) -> Socket {
    let mut request = ws_url(app).into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    let (socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("upgrade");
    assert_eq!(response.status(), 101);
    socket
}

/// The next JSON text frame, or `None` when nothing arrives within `wait`.
pub(crate) async fn next_json(socket: &mut Socket, wait: Duration) -> Option<Value> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return Some(serde_json::from_str(&text).unwrap()),
            Ok(Some(Ok(Message::Close(frame)))) => panic!("closed: {frame:?}"),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => panic!("socket error: {e}"),
            Ok(None) | Err(_) => return None,
        }
    }
}

/// Status and progress events of `id` until COMPLETED (or `wait` runs out).
async fn follow(socket: &mut Socket, id: &str, wait: Duration) -> (Vec<String>, Vec<Value>) {
    let deadline = Instant::now() + wait;
    let (mut statuses, mut progress) = (Vec::new(), Vec::new());
    while Instant::now() < deadline {
        let Some(event) = next_json(socket, Duration::from_secs(1)).await else {
            continue;
        };
        if event["ledgerId"] != id {
            continue;
        }
        match event["event"].as_str() {
            Some("ledger.status") => {
                let s = event["status"].as_str().unwrap().to_owned();
                let done = s == "COMPLETED" || s == "REJECTED";
                statuses.push(s);
                if done {
                    break;
                }
            }
            Some("ledger.progress") => progress.push(event),
            other => panic!("unexpected frame {other:?}: {event}"),
        }
    }
    (statuses, progress)
}

#[tokio::test]
async fn a_client_watches_its_ledger_and_another_tenant_sees_nothing_of_it() {
    let app = spawn_app().await;
    let alice = app.user("alice", "merchant_operator", "m_acme").await;
    let bob = app.user("bob", "merchant_viewer", "m_tokyo").await;
    let mut watching = connect(&app, &alice).await;
    let mut other = connect(&app, &bob).await;

    let id = app.create_id(&alice, statement("m_acme", "2026-10")).await;
    let (statuses, progress) = follow(&mut watching, &id, Duration::from_secs(30)).await;
    assert_eq!(
        statuses,
        ["PENDING", "PROCESSING", "COMPLETED"],
        "{progress:?}"
    );
    assert!(!progress.is_empty(), "progress frames arrive");
    // rowsDone never goes down within a phase.
    let mut last: std::collections::HashMap<String, u64> = Default::default();
    for p in &progress {
        assert_eq!(p["merchantId"], "m_acme");
        let phase = p["phase"].as_str().unwrap().to_owned();
        let done = p["rowsDone"].as_u64().unwrap();
        let before = last.insert(phase.clone(), done).unwrap_or(0);
        assert!(done >= before, "{phase}: {before} then {done}");
    }
    // Bob may read m_tokyo only: not a single frame of m_acme reaches him.
    while let Some(frame) = next_json(&mut other, Duration::from_millis(500)).await {
        assert_ne!(frame["merchantId"], "m_acme", "{frame}");
    }
    app.stop().await;
}

#[tokio::test]
async fn upgrades_without_a_valid_token_are_refused_before_the_socket_opens() {
    let app = spawn_app().await;
    let token = app.user("alice", "merchant_viewer", "m_acme").await;
    let plain = reqwest::Client::new();
    let url = format!("{}/v1/api/ledger/ws", app.base);
    let r = plain.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let forged = format!("{}x", &token[..token.len() - 1]);
    for bad in [format!("?access_token={forged}"), "?access_token=".into()] {
        let r = plain.get(format!("{url}{bad}")).send().await.unwrap();
        assert_eq!(r.status(), 401, "{bad}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "UNAUTHORIZED");
    }
    for bad in ["?since=yesterday", "?sinse=2026-01-01T00:00:00Z"] {
        let r = plain
            .get(format!("{url}{bad}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    // A valid token but a plain GET: not a WebSocket upgrade.
    let r = plain.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 400);
    // The token in the query string works for browsers, which cannot set headers.
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("{}?access_token={token}", ws_url(&app)))
            .await
            .expect("upgrade with ?access_token");
    let answer = ask(&mut socket, json!({"subscribe": ["m_acme"]})).await;
    assert_eq!(answer["subscribed"], json!(["m_acme"]));
    app.stop().await;
}

#[tokio::test]
async fn subscribing_to_a_merchant_one_may_not_read_is_forbidden_and_narrowing_works() {
    let app = spawn_app().await;
    let token = app.user("ops", "merchant_operator", "m_acme").await;
    app.grant("ops", "merchant_operator", "m_global").await;
    let mut socket = connect(&app, &token).await;
    let refused = ask(&mut socket, json!({"subscribe": ["m_tokyo"]})).await;
    assert_eq!(refused["error"]["code"], "FORBIDDEN", "{refused}");
    socket.send(Message::Text("not json".into())).await.unwrap();
    let bad = next_json(&mut socket, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(bad["error"]["code"], "VALIDATION_ERROR", "{bad}");

    // Narrowed to m_global: m_acme's events no longer arrive, m_global's do.
    let ok = ask(&mut socket, json!({"subscribe": ["m_global"]})).await;
    assert_eq!(ok["subscribed"], json!(["m_global"]));
    let acme = app.create_ok(&token, statement("m_acme", "2026-10")).await;
    let global = app
        .create_ok(&token, statement("m_global", "2026-10"))
        .await;
    let (statuses, _) = follow(
        &mut socket,
        global["id"].as_str().unwrap(),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(statuses.last().map(String::as_str), Some("COMPLETED"));
    app.wait_for(&token, acme["id"].as_str().unwrap(), "COMPLETED", 30)
        .await;
    while let Some(frame) = next_json(&mut socket, Duration::from_millis(300)).await {
        assert_ne!(frame["merchantId"], "m_acme", "{frame}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_never_reads_does_not_slow_a_job() {
    let source = crate::helpers::source_with("m_big", 200_000, Some("UTC"));
    // Small fixed kernel buffers, so the stuck client's backlog really fills.
    let app = crate::helpers::spawn_with(crate::helpers::Options {
        source_dir: Some(source.path().to_owned()),
        send_buffer: Some(4096),
        ..Default::default()
    })
    .await;
    let token = app.user("ops", "merchant_operator", "m_big").await;
    let timed = |period: &'static str| {
        let app = &app;
        let token = &token;
        async move {
            let t0 = Instant::now();
            let l = app.create_ok(token, statement("m_big", period)).await;
            app.wait_for(token, l["id"].as_str().unwrap(), "COMPLETED", 60)
                .await;
            t0.elapsed()
        }
    };
    let alone = timed("2026-Q1").await;
    // A client that connects and then never reads a frame.
    let _stuck = connect(&app, &token).await;
    let with_stuck = timed("2026-Q2").await;
    assert!(
        with_stuck < alone * 3 + Duration::from_secs(2),
        "alone {alone:?}, with a stuck client {with_stuck:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn shutdown_closes_sockets_with_going_away() {
    let app = spawn_app().await;
    let token = app.user("alice", "merchant_viewer", "m_acme").await;
    let mut socket = connect(&app, &token).await;
    let stopping = tokio::spawn(app.stop());
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, socket.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => break u16::from(frame.code),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(code, 1001);
    stopping.await.unwrap();
}

#[tokio::test]
async fn a_client_reconnecting_with_since_gets_what_it_missed_then_live_events() {
    let app = spawn_app().await;
    let alice = app.user("alice", "merchant_operator", "m_acme").await;
    let other = app.user("bob", "merchant_operator", "m_tokyo").await;
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    // While nobody is connected: one ledger of alice's merchant, one of another merchant.
    let missed = app.create_ok(&alice, statement("m_acme", "2026-10")).await;
    let missed = missed["id"].as_str().unwrap().to_owned();
    let foreign = app.create_ok(&other, statement("m_tokyo", "2026-10")).await;
    app.wait_for(&alice, &missed, "COMPLETED", 30).await;
    app.wait_for(&other, foreign["id"].as_str().unwrap(), "COMPLETED", 30)
        .await;

    let mut request = format!(
        "{}?since={}",
        ws_url(&app),
        before.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    )
    .into_client_request()
    .unwrap();
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {alice}")).unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut replayed = Vec::new();
    let marker = loop {
        let frame = next_json(&mut socket, Duration::from_secs(5))
            .await
            .expect("replay frames");
        if frame.get("replay").is_some() {
            break frame;
        }
        assert_eq!(frame["event"], "ledger.status", "{frame}");
        assert_eq!(
            frame["merchantId"], "m_acme",
            "only what alice may read: {frame}"
        );
        if frame["ledgerId"] == missed.as_str() {
            replayed.push(frame["status"].as_str().unwrap().to_owned());
        }
    };
    assert_eq!(replayed, ["PENDING", "PROCESSING", "COMPLETED"]);
    assert_eq!(marker["replay"]["complete"], true, "{marker}");
    // Then live.
    let live = app.create_ok(&alice, statement("m_acme", "2026-09")).await;
    let (statuses, _) = follow(
        &mut socket,
        live["id"].as_str().unwrap(),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(statuses, ["PENDING", "PROCESSING", "COMPLETED"]);
    app.stop().await;
}

#[tokio::test]
async fn many_ledgers_at_once_each_send_their_statuses_in_order() {
    let app = spawn_app().await;
    let token = app.user("ops", "merchant_operator", "m_global").await;
    let mut socket = connect(&app, &token).await;
    let day0 = chrono::NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
    let mut ids = Vec::new();
    for d in 0..40u64 {
        let period = (day0 + chrono::Days::new(d)).to_string();
        let l = app.create_ok(&token, statement("m_global", &period)).await;
        ids.push(l["id"].as_str().unwrap().to_owned());
    }
    assert_each_completes_in_order(&mut socket, &ids, Duration::from_secs(60)).await;
    app.stop().await;
}

#[tokio::test]
async fn a_grant_revoked_while_connected_stops_the_flow() {
    // The suite's policy cache TTL is 0: the flow stops within the one-second re-check.
    let app = spawn_app().await;
    let ops = app.user("ops", "merchant_operator", "m_acme").await;
    let viewer = app.user("carol", "merchant_viewer", "m_acme").await;
    let mut socket = connect(&app, &viewer).await;
    let first = app.create_ok(&ops, statement("m_acme", "2026-10")).await;
    let (statuses, _) = follow(
        &mut socket,
        first["id"].as_str().unwrap(),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(statuses.last().map(String::as_str), Some("COMPLETED"));

    app.revoke("carol", "merchant_viewer", "m_acme").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = app.create_ok(&ops, statement("m_acme", "2026-09")).await;
    app.wait_for(&ops, second["id"].as_str().unwrap(), "COMPLETED", 30)
        .await;
    while let Some(frame) = next_json(&mut socket, Duration::from_millis(500)).await {
        assert_ne!(
            frame["ledgerId"], second["id"],
            "an event after the revoke: {frame}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_falls_too_far_behind_is_closed_with_4008_and_never_slows_the_jobs() {
    // Small fixed kernel buffers on both ends, so "too far behind" is a few hundred frames
    // (the per-client queue holds 256) rather than megabytes.
    let app = crate::helpers::spawn_with(crate::helpers::Options {
        send_buffer: Some(4096),
        ..Default::default()
    })
    .await;
    let token = app.user("ops", "merchant_operator", "m_global").await;
    // A client with a tiny receive window that reads nothing until the jobs are done.
    let address: std::net::SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
    let raw = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    raw.set_recv_buffer_size(2048).unwrap();
    raw.connect(&address.into()).unwrap();
    raw.set_nonblocking(true).unwrap();
    let stream = tokio::net::TcpStream::from_std(raw.into()).unwrap();
    let mut request = ws_url(&app).into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();

    // Only this test drives a client this far behind; other tests share the counter.
    let closes_before = metric(&app, "ledger_ws_slow_client_closes_total").await;
    let day0 = chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
    let mut ids = Vec::new();
    for d in 0..150u64 {
        let period = (day0 + chrono::Days::new(d)).to_string();
        let l = app.create_ok(&token, statement("m_global", &period)).await;
        ids.push(l["id"].as_str().unwrap().to_owned());
    }
    // The jobs run on while the client is stuck, until the server gives up on it. (A close
    // frame cannot reach a client that never reads: the server cuts the connection 10 s
    // after deciding to close, so the client starts reading as soon as that decision is
    // visible, not when every job is done — on a loaded machine that can take longer.)
    let deadline = Instant::now() + Duration::from_secs(90);
    while metric(&app, "ledger_ws_slow_client_closes_total").await <= closes_before {
        assert!(
            Instant::now() < deadline,
            "the stuck client was never closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Now read: what was buffered, then the close frame that says why.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut frames = 0;
    let code = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, socket.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => break Some(u16::from(frame.code)),
            Ok(Some(Ok(_))) => frames += 1,
            other => {
                eprintln!("after {frames} frames: {other:?}");
                break None;
            }
        }
    };
    assert_eq!(code, Some(4008), "a client that fell behind is told so");
    for id in &ids {
        app.wait_for(&token, id, "COMPLETED", 60).await;
    }
    app.stop().await;
}

/// The value of an unlabelled metric on the app's `/metrics` (0 when not yet recorded).
async fn metric(app: &TestApp, name: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", app.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_silent_client_is_closed_and_a_listening_one_is_kept() {
    let app = crate::helpers::spawn_with(crate::helpers::Options {
        vars: vec![("APP_ENV_WS_PING_INTERVAL_MS", "200".into())],
        ..Default::default()
    })
    .await;
    let token = app.user("alice", "merchant_viewer", "m_acme").await;
    // Polled all the time, this client answers every ping (tungstenite does on read).
    let mut listening = connect(&app, &token).await;
    // Never polled for a second: it answers no ping.
    let mut silent = connect(&app, &token).await;
    let t0 = Instant::now();
    let mut pings = 0;
    while t0.elapsed() < Duration::from_millis(1500) {
        match tokio::time::timeout(Duration::from_millis(100), listening.next()).await {
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(Some(Ok(Message::Close(frame)))) => {
                panic!("a listening client was closed: {frame:?}")
            }
            _ => {}
        }
    }
    assert!(pings >= 3, "pings arrive: {pings}");
    let deadline = Instant::now() + Duration::from_secs(5);
    let closed = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, silent.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                break (u16::from(frame.code), frame.reason.to_string());
            }
            Ok(Some(Ok(_))) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(closed.0, 1001);
    assert!(closed.1.contains("ping"), "{closed:?}");
    app.stop().await;
}

/// The close frame `socket` gets within `wait` (frames before it are read and dropped), and
/// when it arrived.
async fn closed_with(socket: &mut Socket, wait: Duration) -> (u16, String, Instant) {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, socket.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                return (
                    u16::from(frame.code),
                    frame.reason.to_string(),
                    Instant::now(),
                );
            }
            Ok(Some(Ok(_))) => continue,
            other => panic!("no close frame within {wait:?}: {other:?}"),
        }
    }
}

/// A token of `sub` expiring `ttl` from now, and its `exp` in ms since the epoch.
fn short_token(app: &TestApp, sub: &str, ttl: Duration) -> (String, i64) {
    let token = crate::helpers::trusted_key(&app.config)
        .0
        .sign(
            sub,
            ttl,
            app.config.auth_issuer.as_deref(),
            app.config.auth_audience.as_deref(),
        )
        .unwrap();
    let exp = crate::helpers::claims(&token)["exp"].as_i64().unwrap();
    (token, exp * 1000)
}

#[tokio::test]
async fn a_socket_is_closed_with_4001_when_its_token_expires_plus_the_leeway() {
    let app = crate::helpers::spawn_with(crate::helpers::Options {
        vars: vec![("APP_ENV_AUTH_LEEWAY_SECS", "1".into())],
        ..Default::default()
    })
    .await;
    app.grant("alice", "merchant_viewer", "m_acme").await;
    let (token, exp_ms) = short_token(&app, "alice", Duration::from_secs(3));
    let mut by_header = connect(&app, &token).await;
    let (mut by_query, _) =
        tokio_tungstenite::connect_async(format!("{}?access_token={token}", ws_url(&app)))
            .await
            .expect("upgrade with ?access_token");
    let (code, reason, _) = closed_with(&mut by_header, Duration::from_secs(10)).await;
    let closed_at = chrono::Utc::now().timestamp_millis();
    assert_eq!(code, 4001, "{reason}");
    assert!(reason.contains("expired"), "{reason}");
    // Not before exp + leeway (1 s), and promptly after it.
    let leeway_ms = 1000;
    assert!(
        closed_at >= exp_ms + leeway_ms - 50,
        "closed {} ms before exp + leeway",
        exp_ms + leeway_ms - closed_at
    );
    assert!(
        closed_at <= exp_ms + leeway_ms + 1500,
        "closed {} ms after exp + leeway",
        closed_at - exp_ms - leeway_ms
    );
    let (code, _, _) = closed_with(&mut by_query, Duration::from_secs(2)).await;
    assert_eq!(code, 4001);
    // And the same token no longer opens one (the verifier counts whole seconds: it may
    // accept a token for under a second past exp + leeway).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = app
        .client
        .get(app.url("/ws"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    app.stop().await;
}

/// Opens a socket without a token, as a browser does.
async fn connect_anonymously(app: &TestApp, query: &str) -> Socket {
    let (socket, response) = tokio_tungstenite::connect_async(format!("{}{query}", ws_url(app)))
        .await
        .expect("upgrade without a token");
    assert_eq!(response.status(), 101);
    socket
}

async fn send_json(socket: &mut Socket, value: Value) {
    socket
        .send(Message::Text(value.to_string().into()))
        .await
        .unwrap();
}

/// Sends `value` and returns the server's answer (failing the test after 5 s without one).
async fn ask(socket: &mut Socket, value: Value) -> Value {
    send_json(socket, value).await;
    next_json(socket, Duration::from_secs(5))
        .await
        .expect("an answer")
}

#[tokio::test]
async fn a_browser_authenticates_with_its_first_frame_and_is_sent_nothing_before() {
    let app = crate::helpers::spawn_with(crate::helpers::Options {
        vars: vec![("APP_ENV_AUTH_LEEWAY_SECS", "0".into())],
        ..Default::default()
    })
    .await;
    let ops = app.user("ops", "merchant_operator", "m_acme").await;
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    let mut browser = connect_anonymously(
        &app,
        &format!(
            "?since={}",
            before.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        ),
    )
    .await;
    // A ledger is created while the socket is not authenticated: its event does not arrive.
    let early = app.create_ok(&ops, statement("m_acme", "2026-10")).await;
    let early = early["id"].as_str().unwrap().to_owned();
    assert_eq!(
        next_json(&mut browser, Duration::from_millis(500)).await,
        None,
        "nothing before authentication"
    );
    // The token expires in a few seconds (leeway 0): it authenticates, then ends the socket.
    let (token, exp_ms) = short_token(&app, "ops", Duration::from_secs(5));
    send_json(&mut browser, json!({ "auth": token })).await;
    // The replay of what it may read comes after the authentication, then live events.
    let mut replayed = Vec::new();
    loop {
        let frame = next_json(&mut browser, Duration::from_secs(5))
            .await
            .expect("replay");
        if frame.get("replay").is_some() {
            assert_eq!(frame["replay"]["complete"], true, "{frame}");
            break;
        }
        if frame["ledgerId"] == early.as_str() {
            replayed.push(frame["status"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(
        replayed.first().map(String::as_str),
        Some("PENDING"),
        "{replayed:?}"
    );
    let (code, _, _) = closed_with(&mut browser, Duration::from_secs(8)).await;
    assert_eq!(code, 4001, "the first-frame token also bounds the socket");
    assert!(chrono::Utc::now().timestamp_millis() >= exp_ms - 50);
    app.stop().await;
}

#[tokio::test]
async fn a_socket_without_a_token_that_does_not_authenticate_first_is_closed() {
    let app = spawn_app().await;
    let token = app.user("alice", "merchant_viewer", "m_acme").await;
    // A forged token in the first frame: 4001.
    let mut forged = connect_anonymously(&app, "").await;
    send_json(
        &mut forged,
        json!({ "auth": format!("{}x", &token[..token.len() - 1]) }),
    )
    .await;
    let (code, reason, _) = closed_with(&mut forged, Duration::from_secs(5)).await;
    assert_eq!(code, 4001, "{reason}");
    assert!(reason.contains("invalid token"), "{reason}");
    // Anything else first: a policy violation, 1008.
    let mut rude = connect_anonymously(&app, "").await;
    send_json(&mut rude, json!({ "subscribe": ["m_acme"] })).await;
    let (code, reason, _) = closed_with(&mut rude, Duration::from_secs(5)).await;
    assert_eq!(code, 1008, "{reason}");
    // Nothing within 5 s: 4001, not before.
    let t0 = Instant::now();
    let mut silent = connect_anonymously(&app, "").await;
    let (code, reason, at) = closed_with(&mut silent, Duration::from_secs(8)).await;
    assert_eq!(code, 4001, "{reason}");
    let waited = at - t0;
    assert!(
        waited >= Duration::from_millis(4900) && waited < Duration::from_secs(7),
        "{waited:?}"
    );
    app.stop().await;
}

/// An upgrade request made with a plain HTTP client, to read the refusal's body.
async fn upgrade_with(app: &TestApp, token: &str) -> reqwest::Response {
    app.client
        .get(app.url("/ws"))
        .bearer_auth(token)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_subject_holds_at_most_the_configured_number_of_sockets() {
    let app = crate::helpers::spawn_with(crate::helpers::Options {
        vars: vec![("APP_ENV_WS_MAX_SOCKETS_PER_SUBJECT", "2".into())],
        ..Default::default()
    })
    .await;
    let alice = app.user("alice", "merchant_viewer", "m_acme").await;
    let bob = app.user("bob", "merchant_viewer", "m_acme").await;
    let first = connect(&app, &alice).await;
    let _second = connect(&app, &alice).await;
    let body =
        crate::helpers::assert_error(upgrade_with(&app, &alice).await, 429, "TOO_MANY_REQUESTS")
            .await;
    assert!(
        body["error"]["message"].as_str().unwrap().contains('2'),
        "{body}"
    );
    // The query-string token counts the same.
    let refused =
        tokio_tungstenite::connect_async(format!("{}?access_token={alice}", ws_url(&app))).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429)
        }
        other => panic!("expected a 429: {other:?}"),
    }
    // Over the limit after first-frame authentication: closed with 4029.
    let mut browser = connect_anonymously(&app, "").await;
    send_json(&mut browser, json!({ "auth": alice })).await;
    let (code, _, _) = closed_with(&mut browser, Duration::from_secs(5)).await;
    assert_eq!(code, 4029);
    // Another subject is not affected.
    let _bob = connect(&app, &bob).await;
    // A closed socket gives its place back.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = upgrade_with(&app, &alice).await;
        if r.status() == 101 {
            break;
        }
        assert_eq!(r.status(), 429);
        assert!(Instant::now() < deadline, "the place was never given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn since_replays_at_most_the_configured_age_back_and_says_it_is_incomplete() {
    let app = crate::helpers::spawn_with(crate::helpers::Options {
        vars: vec![("APP_ENV_WS_REPLAY_MAX_AGE_MS", "2000".into())],
        ..Default::default()
    })
    .await;
    let alice = app.user("alice", "merchant_operator", "m_acme").await;
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    let old = app.create_ok(&alice, statement("m_acme", "2026-10")).await;
    let old = old["id"].as_str().unwrap().to_owned();
    app.wait_for(&alice, &old, "COMPLETED", 30).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let recent_since = chrono::Utc::now() - chrono::Duration::milliseconds(500);
    let recent = app.create_ok(&alice, statement("m_acme", "2026-09")).await;
    let recent = recent["id"].as_str().unwrap().to_owned();
    app.wait_for(&alice, &recent, "COMPLETED", 30).await;

    let replay = |since: chrono::DateTime<chrono::Utc>| {
        let (app, alice) = (&app, &alice);
        async move {
            let mut request = format!(
                "{}?since={}",
                ws_url(app),
                since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            )
            .into_client_request()
            .unwrap();
            request.headers_mut().insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {alice}")).unwrap(),
            );
            let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
            let mut ledgers = std::collections::BTreeSet::new();
            loop {
                let frame = next_json(&mut socket, Duration::from_secs(5))
                    .await
                    .expect("replay frames");
                if frame.get("replay").is_some() {
                    return (ledgers, frame["replay"].clone());
                }
                ledgers.insert(frame["ledgerId"].as_str().unwrap().to_owned());
            }
        }
    };
    // Older than the maximum age: replayed from now − 2 s only, and said so.
    let (ledgers, marker) = replay(before).await;
    assert!(!ledgers.contains(&old), "{ledgers:?}");
    assert!(ledgers.contains(&recent), "{ledgers:?}");
    assert_eq!(marker["complete"], false, "{marker}");
    let from: chrono::DateTime<chrono::Utc> = marker["from"].as_str().unwrap().parse().unwrap();
    let expected = chrono::Utc::now() - chrono::Duration::seconds(2);
    assert!(
        (from - expected).num_milliseconds().abs() < 1000,
        "from {from}, expected about {expected}"
    );
    // Within it: everything since, complete.
    let (ledgers, marker) = replay(recent_since).await;
    assert_eq!(ledgers.into_iter().collect::<Vec<_>>(), [recent]);
    assert_eq!(marker["complete"], true, "{marker}");
    app.stop().await;
}

#[tokio::test]
async fn a_client_cannot_grow_its_subscription_lists_without_bound() {
    let app = spawn_app().await;
    app.grant("root", "platform_admin", "*").await;
    let root = app.token("root");
    let mut socket = connect(&app, &root).await;
    let merchants = |from: usize, n: usize| -> Vec<String> {
        (from..from + n).map(|i| format!("m_{i:05}")).collect()
    };
    // Every merchant is readable: the cap is what bounds the lists.
    let ok = ask(&mut socket, json!({ "unsubscribe": merchants(0, 1000) })).await;
    assert_eq!(ok["unsubscribed"].as_array().map(Vec::len), Some(1000));
    // The same ones again cost nothing; one more is refused.
    let again = ask(&mut socket, json!({ "unsubscribe": merchants(0, 10) })).await;
    assert!(again.get("unsubscribed").is_some(), "{again}");
    let refused = ask(&mut socket, json!({ "unsubscribe": merchants(1000, 1) })).await;
    assert_eq!(refused["error"]["code"], "VALIDATION_ERROR", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1000"),
        "{refused}"
    );
    // Subscriptions are capped the same way.
    let refused = ask(&mut socket, json!({ "subscribe": merchants(5000, 1001) })).await;
    assert_eq!(refused["error"]["code"], "VALIDATION_ERROR", "{refused}");
    let ok = ask(&mut socket, json!({ "subscribe": merchants(5000, 1000) })).await;
    assert_eq!(ok["subscribed"].as_array().map(Vec::len), Some(1000));

    // A viewer of one merchant: unsubscribing others is accepted and holds nothing.
    let viewer = app.user("carol", "merchant_viewer", "m_acme").await;
    let mut narrow = connect(&app, &viewer).await;
    for round in 0..3 {
        send_json(
            &mut narrow,
            json!({ "unsubscribe": merchants(round * 1000, 1000) }),
        )
        .await;
        let ok = next_json(&mut narrow, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(ok.get("unsubscribed").is_some(), "round {round}: {ok}");
    }
    app.stop().await;
}
