//! Webhooks (SPEC §12) as a receiving program meets them: a receiver written with the
//! official Python library of Standard Webhooks (tests/it/webhook_receiver.py, not the
//! service's code) verifies every delivery; retries keep the event's id; a 410 disables an
//! endpoint; a revoked grant stops deliveries; private addresses and redirects are refused;
//! a slow receiver holds up no other; a kill -9 of the delivering process loses nothing.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{
    Options, Served, TestApp, assert_error, data_dir, examples_dir, granted_on, open_statement,
    spawn_with,
};

/// The receiver process; killed when dropped.
struct Receiver {
    child: Child,
    port: u16,
    client: reqwest::Client,
}

impl Receiver {
    fn start() -> Receiver {
        let python = std::env::var("LEDGER_TEST_PYTHON").unwrap_or_else(|_| {
            panic!(
                "LEDGER_TEST_PYTHON is not set: run the suite through scripts/run-tests.sh \
                 (scripts/services.sh installs standardwebhooks into its virtualenv)"
            )
        });
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/webhook_receiver.py");
        let mut child = Command::new(python)
            .arg(script)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the webhook receiver");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
            &mut line,
        )
        .expect("the receiver's port");
        let port = line.trim().parse().expect("a port");
        Receiver {
            child,
            port,
            client: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// How `path` answers, and the secret it verifies with.
    async fn script(&self, path: &str, secret: Option<&str>, statuses: &[u16], delay: f64) {
        let r = self
            .client
            .post(self.url("/_config"))
            .json(
                &json!({"path": path, "secret": secret, "statuses": statuses, "delay": delay,
                          "location": self.url("/elsewhere")}),
            )
            .send()
            .await
            .expect("configure the receiver");
        assert!(r.status().is_success());
    }

    async fn requests(&self, path: &str) -> Vec<Value> {
        self.client
            .get(self.url("/_requests"))
            .query(&[("path", path)])
            .send()
            .await
            .expect("receiver")
            .json()
            .await
            .expect("json")
    }

    /// Waits until `path` has received `n` requests.
    async fn wait_requests(&self, path: &str, n: usize, secs: u64) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let seen = self.requests(path).await;
            if seen.len() >= n {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "{path} received {} of {n} requests within {secs}s: {seen:?}",
                seen.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A service whose webhooks may reach the receiver on 127.0.0.1, with quick retries.
async fn app() -> TestApp {
    app_with(&[]).await
}

/// [`app`] with more settings.
async fn app_with(extra: &[(&'static str, &str)]) -> TestApp {
    let mut vars = vec![
        ("APP_ENV_WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true".to_owned()),
        (
            "APP_ENV_WEBHOOK_RETRY_SCHEDULE",
            "300ms,300ms,300ms".to_owned(),
        ),
    ];
    vars.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    spawn_with(Options {
        vars,
        ..Options::default()
    })
    .await
}

async fn create_webhook(app: &TestApp, token: &str, body: Value) -> Value {
    let r = app
        .client
        .post(app.url("/webhooks"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let cache = r.headers().get("cache-control").cloned();
    let created: Value = r.json().await.expect("json");
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        cache.unwrap(),
        "no-store",
        "an answer with a secret is not cached"
    );
    created
}

/// Deliveries of `webhook`, newest first.
async fn deliveries(app: &TestApp, token: &str, webhook: &str) -> Vec<Value> {
    app.get_json(token, &format!("/webhooks/{webhook}/deliveries"))
        .await["items"]
        .as_array()
        .expect("items")
        .clone()
}

/// Waits until every delivery of `webhook` is in `status` (and there are `n`).
async fn wait_deliveries(
    app: &TestApp,
    token: &str,
    webhook: &str,
    n: usize,
    status: &str,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = deliveries(app, token, webhook).await;
        if seen.len() == n && seen.iter().all(|d| d["status"] == status) {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "the deliveries of {webhook} did not all become {status}: {seen:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn deliveries_are_signed_per_standard_webhooks_and_retried_under_one_id() {
    let receiver = Receiver::start();
    let app = app().await;
    let ops = app.user("ops", "merchant_admin", "m_acme").await;
    app.grant("ops", "merchant_admin", "m_broken").await;

    // An endpoint for completions of m_acme, one for rejections of m_broken that fails twice.
    let done = create_webhook(
        &app,
        &ops,
        json!({"url": receiver.url("/done"), "events": ["ledger.completed"], "merchantIds": ["m_acme"]}),
    )
    .await;
    let secret = done["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"), "{done}");
    assert_eq!(done["events"], json!(["ledger.completed"]));
    assert_eq!(done["merchantIds"], json!(["m_acme"]));
    receiver.script("/done", Some(secret), &[204], 0.0).await;
    let failing = create_webhook(
        &app,
        &ops,
        json!({"url": receiver.url("/flaky"), "events": ["ledger.rejected", "ledger.completed"],
               "merchantIds": ["m_broken"]}),
    )
    .await;
    receiver
        .script("/flaky", failing["secret"].as_str(), &[503, 500, 200], 0.0)
        .await;

    // The secret is shown only at creation.
    let shown = app
        .get_json(&ops, &format!("/webhooks/{}", done["id"].as_str().unwrap()))
        .await;
    assert!(shown.get("secret").is_none(), "{shown}");
    let listed = app.get_json(&ops, "/webhooks").await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    assert!(listed.to_string().find("whsec_").is_none());

    let (id, _) = app.completed(&ops, open_statement("m_acme"), 30).await;
    let got = receiver.wait_requests("/done", 1, 30).await;
    let first = &got[0];
    assert_eq!(
        first["verified"], true,
        "standardwebhooks refused it: {first}"
    );
    let body: Value = serde_json::from_str(first["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["type"], "ledger.completed");
    assert_eq!(body["data"]["id"], id.as_str());
    assert_eq!(body["data"]["status"], "COMPLETED");
    assert_eq!(body["data"]["merchantId"], "m_acme");
    assert!(body["data"]["file"]["sha256"].is_string(), "{body}");
    assert_eq!(first["headers"]["content-type"], "application/json");
    let listed = wait_deliveries(&app, &ops, done["id"].as_str().unwrap(), 1, "DELIVERED").await;
    assert_eq!(listed[0]["messageId"], first["headers"]["webhook-id"]);
    assert_eq!(listed[0]["type"], "ledger.completed");
    assert_eq!(listed[0]["resourceId"], id.as_str());
    assert_eq!(
        (
            listed[0]["attempts"].as_u64(),
            listed[0]["lastHttpStatus"].as_u64()
        ),
        (Some(1), Some(204))
    );

    // A rejection, delivered on the third attempt under the same id, each attempt signed.
    let broken = app.create_id(&ops, open_statement("m_broken")).await;
    app.wait_for(&ops, &broken, "REJECTED", 30).await;
    let tries = receiver.wait_requests("/flaky", 3, 30).await;
    assert!(tries.iter().all(|t| t["verified"] == true), "{tries:#?}");
    let ids: Vec<&Value> = tries.iter().map(|t| &t["headers"]["webhook-id"]).collect();
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "one event, one id: {ids:?}"
    );
    let body: Value = serde_json::from_str(tries[2]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["type"], "ledger.rejected");
    assert_eq!(
        body["data"]["failureReason"]["errorCode"],
        "FETCH_DATA_ERROR"
    );
    let fid = failing["id"].as_str().unwrap();
    let listed = wait_deliveries(&app, &ops, fid, 1, "DELIVERED").await;
    assert_eq!(listed[0]["attempts"], 3);
    // The endpoint's run of failures ended with the success.
    assert_eq!(
        app.get_json(&ops, &format!("/webhooks/{fid}")).await["failingSince"],
        Value::Null
    );

    // Redelivery: the same event again, the same id.
    let r = app
        .post(
            &ops,
            &format!(
                "/webhooks/{fid}/deliveries/{}/redeliver",
                listed[0]["id"].as_str().unwrap()
            ),
        )
        .await;
    assert_eq!(r.status(), 202);
    let again = receiver.wait_requests("/flaky", 4, 30).await;
    assert_eq!(again[3]["headers"]["webhook-id"], *ids[0]);
    assert_eq!(again[3]["verified"], true);

    // Rotation: the new secret verifies; for a day the old one does too.
    let rotated: Value = app
        .post(&ops, &format!("/webhooks/{fid}/rotate-secret"))
        .await
        .json()
        .await
        .unwrap();
    let new_secret = rotated["secret"].as_str().unwrap();
    assert_ne!(Some(new_secret), failing["secret"].as_str());
    receiver
        .script("/flaky", Some(new_secret), &[200], 0.0)
        .await;
    let other = app
        .create_id(
            &ops,
            open_statement("m_broken")
                .as_object()
                .map(|o| {
                    let mut o = o.clone();
                    o.insert("format".into(), json!("PDF"));
                    Value::Object(o)
                })
                .unwrap(),
        )
        .await;
    app.wait_for(&ops, &other, "REJECTED", 30).await;
    let after = receiver.wait_requests("/flaky", 5, 30).await;
    assert_eq!(after[4]["verified"], true, "{}", after[4]);
    let signatures = after[4]["headers"]["webhook-signature"].as_str().unwrap();
    assert_eq!(
        signatures.split(' ').count(),
        2,
        "signed with both secrets: {signatures}"
    );
    receiver
        .script("/flaky", failing["secret"].as_str(), &[200], 0.0)
        .await;
    let old = app
        .create_id(&ops, {
            let mut o = open_statement("m_broken");
            o["format"] = json!("XLSX");
            o
        })
        .await;
    app.wait_for(&ops, &old, "REJECTED", 30).await;
    let by_old = receiver.wait_requests("/flaky", 6, 30).await;
    assert_eq!(
        by_old[5]["verified"], true,
        "the old secret still verifies: {}",
        by_old[5]
    );

    // Deleted: nothing more is delivered, and it is gone.
    let r = app.delete(&ops, &format!("/webhooks/{fid}")).await;
    assert_eq!(r.status(), 204);
    assert_error(
        app.get(&ops, &format!("/webhooks/{fid}")).await,
        404,
        "NOT_FOUND",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_410_disables_the_endpoint_and_a_revoked_grant_stops_deliveries() {
    let receiver = Receiver::start();
    let app = app().await;
    let ops = app.user("ops", "merchant_admin", "m_acme").await;
    let alice = app.user("alice", "merchant_admin", "m_acme").await;
    let gone = create_webhook(
        &app,
        &ops,
        json!({"url": receiver.url("/gone"), "events": ["ledger.completed"], "merchantIds": ["m_acme"]}),
    )
    .await;
    receiver
        .script("/gone", gone["secret"].as_str(), &[410], 0.0)
        .await;
    let revoked = create_webhook(
        &app,
        &alice,
        json!({"url": receiver.url("/alice"), "events": ["ledger.completed"], "merchantIds": ["m_acme"]}),
    )
    .await;
    app.revoke("alice", "merchant_admin", "m_acme").await;

    app.completed(&ops, open_statement("m_acme"), 30).await;
    receiver.wait_requests("/gone", 1, 30).await;
    let gid = gone["id"].as_str().unwrap();
    let listed = wait_deliveries(&app, &ops, gid, 1, "FAILED").await;
    assert_eq!(listed[0]["lastHttpStatus"], 410);
    let endpoint = app.get_json(&ops, &format!("/webhooks/{gid}")).await;
    assert_eq!(endpoint["disabledReason"], "GONE", "{endpoint}");
    assert!(endpoint["disabledAt"].is_string());
    // Disabled: no new delivery, and no redelivery.
    let r = app
        .post(
            &ops,
            &format!(
                "/webhooks/{gid}/deliveries/{}/redeliver",
                listed[0]["id"].as_str().unwrap()
            ),
        )
        .await;
    assert_error(r, 409, "INVALID_STATE").await;

    // alice may no longer read m_acme: her endpoint is told nothing.
    let aid = revoked["id"].as_str().unwrap();
    let skipped = wait_deliveries(&app, &alice, aid, 1, "SKIPPED").await;
    assert!(
        skipped[0]["lastError"].as_str().unwrap().contains("m_acme"),
        "{skipped:?}"
    );
    assert!(receiver.requests("/alice").await.is_empty());
    // Another subject's endpoint is a 404 to one who may not manage every merchant's.
    let viewer = app.user("vic", "merchant_viewer", "m_acme").await;
    assert_error(
        app.get(&viewer, &format!("/webhooks/{gid}")).await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_eq!(app.get_json(&viewer, "/webhooks").await["items"], json!([]));
    app.stop().await;
}

#[tokio::test]
async fn endpoints_are_checked_when_made() {
    // Without the flag: https only, and no address that is not public.
    let app = crate::helpers::spawn_app().await;
    let admin = app.user("adm", "merchant_admin", "m_acme").await;
    let make = |body: Value| {
        let app = &app;
        let admin = admin.clone();
        async move {
            app.client
                .post(app.url("/webhooks"))
                .bearer_auth(&admin)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    for (body, field, says) in [
        (
            json!({"url": "http://hooks.example.com/x", "events": ["ledger.completed"], "merchantIds": ["m_acme"]}),
            "url",
            "https",
        ),
        (
            json!({"url": "https://127.0.0.1/x", "events": ["ledger.completed"], "merchantIds": ["m_acme"]}),
            "url",
            "private",
        ),
        (
            json!({"url": "https://[::1]/x", "events": ["ledger.completed"], "merchantIds": ["m_acme"]}),
            "url",
            "private",
        ),
        (
            json!({"url": "https://169.254.169.254/latest", "events": ["ledger.completed"], "merchantIds": ["m_acme"]}),
            "url",
            "private",
        ),
        (
            json!({"url": "https://user:pw@hooks.example.com/", "events": ["ledger.completed"], "merchantIds": ["m_acme"]}),
            "url",
            "password",
        ),
        (
            json!({"url": "not a url", "events": ["ledger.completed"], "merchantIds": ["m_acme"]}),
            "url",
            "https URL",
        ),
        (json!({"events": ["ledger.completed"]}), "url", "required"),
        (
            json!({"url": "https://hooks.example.com/", "events": []}),
            "events",
            "at least one",
        ),
        (
            json!({"url": "https://hooks.example.com/", "events": ["ledger.created"]}),
            "events[0]",
            "unknown event type",
        ),
        (
            json!({"url": "https://hooks.example.com/", "events": "ledger.completed"}),
            "events",
            "array",
        ),
        (
            json!({"url": "https://hooks.example.com/", "events": ["ledger.completed"], "merchantIds": []}),
            "merchantIds",
            "at least one",
        ),
        (
            json!({"url": "https://hooks.example.com/", "events": ["ledger.completed"], "merchantIds": ["bad id"]}),
            "merchantIds[0]",
            "A-Za-z0-9",
        ),
        (
            json!({"url": "https://hooks.example.com/", "events": ["ledger.completed"], "secret": "x"}),
            "secret",
            "unknown field",
        ),
    ] {
        let r = make(body.clone()).await;
        let error = assert_error(r, 400, "VALIDATION_ERROR").await;
        let text = error.to_string();
        assert_eq!(error["error"]["field"], field, "{body}: {text}");
        assert!(text.contains(says), "{body}: {text}");
    }
    // Naming a merchant the caller may not manage, or none without `*`: 403.
    let r = make(json!({"url": "https://hooks.example.com/", "events": ["ledger.completed"], "merchantIds": ["m_tokyo"]})).await;
    let body = assert_error(r, 403, "FORBIDDEN").await;
    assert!(
        body.to_string()
            .contains("manage webhooks for merchant m_tokyo"),
        "{body}"
    );
    let r =
        make(json!({"url": "https://hooks.example.com/", "events": ["ledger.completed"]})).await;
    assert_error(r, 403, "FORBIDDEN").await;
    let operator = app.user("op", "merchant_operator", "m_acme").await;
    let r = app
        .client
        .post(app.url("/webhooks"))
        .bearer_auth(&operator)
        .json(&json!({"url": "https://hooks.example.com/", "events": ["ledger.completed"], "merchantIds": ["m_acme"]}))
        .send()
        .await
        .unwrap();
    assert_error(r, 403, "FORBIDDEN").await;
    // A name is judged by its addresses when delivering: localhost resolves to loopback.
    let local = create_webhook(
        &app,
        &admin,
        json!({"url": "https://localhost:1/hook", "events": ["ledger.completed"], "merchantIds": ["m_acme"]}),
    )
    .await;
    app.completed(&admin, open_statement("m_acme"), 30).await;
    let lid = local["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let failed = loop {
        let seen = deliveries(&app, &admin, lid).await;
        if seen.first().is_some_and(|d| d["attempts"] == 1) {
            break seen[0].clone();
        }
        assert!(Instant::now() < deadline, "{seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(failed["status"], "PENDING", "retried later: {failed}");
    assert_eq!(failed["lastHttpStatus"], Value::Null);
    let error = failed["lastError"].as_str().unwrap();
    assert!(
        error.contains("not allowed") || error.contains("address"),
        "{error}"
    );
    // Malformed ids and cursors.
    assert_error(
        app.get(&admin, "/webhooks/abc").await,
        400,
        "VALIDATION_ERROR",
    )
    .await;
    assert_error(app.get(&admin, "/webhooks/123").await, 404, "NOT_FOUND").await;
    assert_error(
        app.get(&admin, "/webhooks?cursor=zzz").await,
        400,
        "VALIDATION_ERROR",
    )
    .await;
    let r = app
        .post(&admin, &format!("/webhooks/{lid}/deliveries/x1/redeliver"))
        .await;
    assert_error(r, 400, "VALIDATION_ERROR").await;
    let r = app
        .post(
            &admin,
            &format!("/webhooks/{lid}/deliveries/999999/redeliver"),
        )
        .await;
    assert_error(r, 404, "NOT_FOUND").await;
    app.stop().await;
}

#[tokio::test]
async fn redirects_are_not_followed_and_a_slow_receiver_holds_up_no_other() {
    let receiver = Receiver::start();
    // Four deliveries in flight, one per endpoint.
    let app = app_with(&[("APP_ENV_WEBHOOK_CONCURRENCY", "4")]).await;
    let ops = app.user("ops", "merchant_admin", "m_acme").await;
    let moved = create_webhook(
        &app,
        &ops,
        json!({"url": receiver.url("/moved"), "events": ["ledger.completed"], "merchantIds": ["m_acme"]}),
    )
    .await;
    receiver
        .script("/moved", moved["secret"].as_str(), &[302], 0.0)
        .await;
    let slow = create_webhook(
        &app,
        &ops,
        json!({"url": receiver.url("/slow"), "events": ["ledger.completed"], "merchantIds": ["m_acme"]}),
    )
    .await;
    receiver
        .script("/slow", slow["secret"].as_str(), &[200], 30.0)
        .await;
    let fast = create_webhook(
        &app,
        &ops,
        json!({"url": receiver.url("/fast"), "events": ["ledger.completed"], "merchantIds": ["m_acme"]}),
    )
    .await;
    receiver
        .script("/fast", fast["secret"].as_str(), &[200], 0.0)
        .await;

    // Three ledgers: the slow endpoint holds its one slot, the fast one is served meanwhile.
    let mut ids = Vec::new();
    for format in ["CSV", "PDF", "XLSX"] {
        let mut body = open_statement("m_acme");
        body["format"] = json!(format);
        ids.push(app.create_id(&ops, body).await);
    }
    for id in &ids {
        app.wait_for(&ops, id, "COMPLETED", 30).await;
    }
    let started = Instant::now();
    let fast_got = receiver.wait_requests("/fast", ids.len(), 10).await;
    assert!(fast_got.iter().all(|r| r["verified"] == true));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        receiver.requests("/slow").await.len(),
        1,
        "the slow endpoint is still holding its first delivery, and only that one"
    );

    // The redirect was answered, not followed: retried, then FAILED, and /elsewhere never hit.
    let mid = moved["id"].as_str().unwrap();
    let failed = wait_deliveries(&app, &ops, mid, ids.len(), "FAILED").await;
    assert!(
        failed
            .iter()
            .all(|d| d["lastHttpStatus"] == 302 && d["attempts"] == 4),
        "{failed:#?}"
    );
    assert!(
        failed[0]["lastError"]
            .as_str()
            .unwrap()
            .contains("redirect")
    );
    assert!(receiver.requests("/elsewhere").await.is_empty());
    assert!(
        app.get_json(&ops, &format!("/webhooks/{mid}")).await["failingSince"].is_string(),
        "the endpoint is failing"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_kill_9_while_delivering_loses_no_delivery() {
    let receiver = Receiver::start();
    let data = data_dir();
    let source = examples_dir();
    let env = [
        ("APP_ENV_WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true"),
        ("APP_ENV_WEBHOOK_RETRY_SCHEDULE", "300ms"),
    ];
    let (backends, ops) = granted_on(data.path(), "merchant_admin", "m_acme").await;
    let mut first = Served::start(data.path(), &source, &backends, &env);
    let client = reqwest::Client::new();
    first.ready(&client).await;
    let created: Value = client
        .post(format!("{}/v1/api/ledger/webhooks", first.base))
        .bearer_auth(&ops)
        .json(&json!({"url": receiver.url("/hang"), "events": ["ledger.completed"], "merchantIds": ["m_acme"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = created["secret"].as_str().expect("created").to_owned();
    // The first attempt hangs past the kill; after that the receiver answers at once.
    receiver.script("/hang", Some(&secret), &[200], 60.0).await;
    let id = first.create(&client, &ops, &open_statement("m_acme")).await;
    first.wait_for(&client, &ops, &id, "COMPLETED", 30).await;
    let hanging = receiver.wait_requests("/hang", 1, 30).await;
    first.child.kill().expect("kill -9");
    first.child.wait().unwrap();
    receiver.script("/hang", Some(&secret), &[200], 0.0).await;

    let second = Served::start(data.path(), &source, &backends, &env);
    second.ready(&client).await;
    // Due again once the dead process's claim ends (its lease), then delivered.
    let got = receiver.wait_requests("/hang", 2, 60).await;
    assert_eq!(
        got[1]["headers"]["webhook-id"],
        hanging[0]["headers"]["webhook-id"]
    );
    assert_eq!(got[1]["verified"], true);
    let body: Value = serde_json::from_str(got[1]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["data"]["id"], id.as_str());
}

#[tokio::test]
async fn a_finished_batch_is_announced_to_its_creators_endpoints_only() {
    let receiver = Receiver::start();
    let app = app().await;
    let ops = app.user("ops", "merchant_admin", "m_acme").await;
    app.grant("ops", "merchant_admin", "m_broken").await;
    let eve = app.user("eve", "merchant_admin", "m_acme").await;
    let mine = create_webhook(
        &app,
        &ops,
        json!({"url": receiver.url("/mine"), "events": ["batch.completed"], "merchantIds": ["m_acme"]}),
    )
    .await;
    receiver
        .script("/mine", mine["secret"].as_str(), &[204], 0.0)
        .await;
    // Another subject's endpoint for the same merchant: not told about ops's batch.
    let theirs = create_webhook(
        &app,
        &eve,
        json!({"url": receiver.url("/theirs"), "events": ["batch.completed"], "merchantIds": ["m_acme"]}),
    )
    .await;
    receiver
        .script("/theirs", theirs["secret"].as_str(), &[204], 0.0)
        .await;

    let r = app
        .client
        .post(app.url("/batches"))
        .bearer_auth(&ops)
        .json(
            &json!({"merchantIds": ["m_acme", "m_broken"], "type": "STATEMENT",
                      "period": "2026-10", "formats": ["CSV"]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let batch: Value = r.json().await.unwrap();
    let got = receiver.wait_requests("/mine", 1, 60).await;
    assert_eq!(got[0]["verified"], true, "{}", got[0]);
    let body: Value = serde_json::from_str(got[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["type"], "batch.completed");
    assert_eq!(body["data"]["id"], batch["id"]);
    assert_eq!(body["data"]["status"], "COMPLETED_WITH_ERRORS", "{body}");
    assert_eq!(body["data"]["counts"]["COMPLETED"], 1);
    assert_eq!(body["data"]["counts"]["REJECTED"], 1);
    // The batch reads as the event said.
    let now = app
        .get_json(&ops, &format!("/batches/{}", batch["id"].as_str().unwrap()))
        .await;
    assert_eq!(now["status"], body["data"]["status"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(receiver.requests("/theirs").await.is_empty());
    assert_eq!(
        deliveries(&app, &eve, theirs["id"].as_str().unwrap()).await,
        Vec::<Value>::new(),
        "nothing was even queued for another subject's endpoint"
    );
    app.stop().await;
}
