//! Batches (SPEC §11) as a client sees them: named merchants and `"*"`, ledgers that exist
//! joining as EXISTING, a rejected member making COMPLETED_WITH_ERRORS, a retry re-opening
//! it, authorization per merchant, idempotent replays, and `batch.progress` on the socket.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, spawn_app, statement};
use crate::live::{connect, next_json};

fn batch(merchants: Value, formats: &[&str]) -> Value {
    json!({"merchantIds": merchants, "type": "STATEMENT", "period": "2026-10", "formats": formats})
}

async fn post_batch(
    app: &TestApp,
    token: &str,
    body: &Value,
    key: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/batches"))
        .bearer_auth(token)
        .json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.send().await.expect("request")
}

async fn created(app: &TestApp, token: &str, body: &Value) -> Value {
    let r = post_batch(app, token, body, None).await;
    let status = r.status().as_u16();
    let location = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned());
    let json: Value = r.json().await.expect("json");
    assert_eq!(status, 202, "{json}");
    assert_eq!(json["status"], "RUNNING", "{json}");
    assert_eq!(
        location.as_deref(),
        Some(format!("/v1/api/ledger/batches/{}", json["id"].as_str().unwrap()).as_str())
    );
    json
}

/// Polls the batch until its status is not RUNNING.
async fn finished(app: &TestApp, token: &str, id: &str, secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let b = app.get_json(token, &format!("/batches/{id}")).await;
        if b["status"] != "RUNNING" {
            return b;
        }
        assert!(Instant::now() < deadline, "batch {id} still running: {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every ledger of a batch, following the cursor with pages of `limit`.
async fn members(app: &TestApp, token: &str, id: &str, query: &str, limit: u32) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/batches/{id}/ledgers?limit={limit}{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = app.get_json(token, &path).await;
        out.extend(page["items"].as_array().expect("items").iter().cloned());
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
}

#[tokio::test]
async fn a_batch_counts_existing_ledgers_once_and_a_rejected_member_makes_it_completed_with_errors()
{
    let app = spawn_app().await;
    let token = app.user("ops", "platform_admin", "*").await;
    // m_acme's CSV exists before the batch.
    let (before, _) = app
        .completed(&token, statement("m_acme", "2026-10"), 30)
        .await;

    let body = batch(
        json!(["m_acme", "m_global", "m_broken", "m_acme"]),
        &["CSV", "PDF"],
    );
    let b = created(&app, &token, &body).await;
    let id = b["id"].as_str().unwrap().to_owned();
    assert_eq!(b["formats"], json!(["CSV", "PDF"]));
    let done = finished(&app, &token, &id, 90).await;
    assert_eq!(done["status"], "COMPLETED_WITH_ERRORS", "{done}");
    assert_eq!(
        done["counts"],
        json!({"PENDING": 0, "PROCESSING": 0, "COMPLETED": 3, "REJECTED": 2, "EXISTING": 1}),
        "m_acme named twice counts once; its CSV existed"
    );
    assert_eq!(done["total"], 6);
    assert_eq!(done["expanding"], false);
    assert!(done["finishedAt"].is_string(), "{done}");

    // Pages of its ledgers, each once, and by state.
    let all = members(&app, &token, &id, "", 2).await;
    let ids: BTreeSet<&str> = all.iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!((all.len(), ids.len()), (6, 6), "{all:?}");
    let existing = members(&app, &token, &id, "&status=EXISTING", 50).await;
    assert_eq!(existing.len(), 1);
    assert_eq!(existing[0]["id"], before.as_str());
    assert_eq!(existing[0]["existing"], true);
    let rejected = members(&app, &token, &id, "&status=REJECTED", 50).await;
    assert_eq!(rejected.len(), 2);
    assert!(
        rejected
            .iter()
            .all(|l| l["merchantId"] == "m_broken" && l["existing"] == false)
    );

    // A retried member re-opens the batch; it ends again when the member does.
    let retried = rejected[0]["id"].as_str().unwrap();
    assert_eq!(app.retry(&token, retried).await.status(), 202);
    let reopened = app.get_json(&token, &format!("/batches/{id}")).await;
    assert!(
        reopened["status"] == "RUNNING" || reopened["counts"]["REJECTED"] == 2,
        "{reopened}"
    );
    app.wait_for(&token, retried, "REJECTED", 30).await;
    let again = finished(&app, &token, &id, 30).await;
    assert_eq!(again["status"], "COMPLETED_WITH_ERRORS");

    // The list shows it once the progress was published.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = app.get_json(&token, "/batches").await;
        let item = &page["items"][0];
        assert_eq!(item["id"], id.as_str());
        if item["status"] == "COMPLETED_WITH_ERRORS" {
            assert_eq!(item["counts"], again["counts"]);
            break;
        }
        assert!(Instant::now() < deadline, "{page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn every_merchant_means_those_the_source_lists_that_the_caller_may_create_for() {
    let app = spawn_app().await;
    app.grant("ana", "merchant_operator", "m_acme").await;
    let token = app.user("ana", "merchant_operator", "m_tokyo").await;
    let b = created(&app, &token, &batch(json!("*"), &["CSV"])).await;
    assert_eq!(b["merchants"], "*");
    let id = b["id"].as_str().unwrap();
    let done = finished(&app, &token, id, 60).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["total"], 2);
    assert_eq!(done["skipped"], 2, "m_broken and m_global are not hers");
    let merchants: BTreeSet<String> = members(&app, &token, id, "", 50)
        .await
        .iter()
        .map(|l| l["merchantId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        merchants,
        BTreeSet::from(["m_acme".into(), "m_tokyo".into()])
    );
}

#[tokio::test]
async fn a_merchant_the_caller_may_not_create_for_is_a_403_naming_it() {
    let app = spawn_app().await;
    app.grant("vic", "merchant_viewer", "m_global").await;
    let token = app.user("vic", "merchant_operator", "m_acme").await;
    let body = assert_error(
        post_batch(
            &app,
            &token,
            &batch(json!(["m_acme", "m_global"]), &["CSV"]),
            None,
        )
        .await,
        403,
        "FORBIDDEN",
    )
    .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("m_global"),
        "{body}"
    );
    // Every merchant, by one who may create for none: refused, not a batch of nothing.
    let nobody = app.token("nobody");
    let body = assert_error(
        post_batch(&app, &nobody, &batch(json!("*"), &["CSV"]), None).await,
        403,
        "FORBIDDEN",
    )
    .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at least one merchant")
    );
    // Nothing was stored.
    let page = app.get_json(&token, "/batches").await;
    assert_eq!(page["items"], json!([]));
}

#[tokio::test]
async fn bad_batch_requests_are_400s_naming_the_field() {
    let app = spawn_app().await;
    let token = app.user("ops", "platform_admin", "*").await;
    let too_many: Vec<String> = (0..10_001).map(|i| format!("m_{i}")).collect();
    let future = (chrono::Utc::now() + chrono::Duration::days(400))
        .format("%Y")
        .to_string();
    let cases = [
        (batch(json!(too_many), &["CSV"]), "merchantIds"),
        (batch(json!([]), &["CSV"]), "merchantIds"),
        (batch(json!("m_acme"), &["CSV"]), "merchantIds"),
        (
            batch(json!(["m_acme", "not ok"]), &["CSV"]),
            "merchantIds[1]",
        ),
        (batch(json!(["m_acme"]), &[]), "formats"),
        (batch(json!(["m_acme"]), &["CSV", "CSV"]), "formats[1]"),
        (batch(json!(["m_acme"]), &["DOCX"]), "formats[0]"),
        (
            json!({"merchantIds": ["m_acme"], "type": "STATEMENT", "period": future, "formats": ["CSV"]}),
            "period",
        ),
        (
            json!({"merchantIds": ["m_acme"], "type": "STATEMENT", "period": "2026-10", "formats": ["CSV"], "extra": 1}),
            "extra",
        ),
    ];
    for (body, field) in cases {
        let r = post_batch(&app, &token, &body, None).await;
        let error = assert_error(r, 400, "VALIDATION_ERROR").await;
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{field}:")),
            "{field}: {error}"
        );
    }
    assert_error(
        app.get(&token, "/batches/abc").await,
        400,
        "VALIDATION_ERROR",
    )
    .await;
    assert_error(app.get(&token, "/batches/123").await, 404, "NOT_FOUND").await;
    assert_error(
        app.get(&token, "/batches?cursor=nope").await,
        400,
        "VALIDATION_ERROR",
    )
    .await;
}

#[tokio::test]
async fn an_idempotency_key_answers_the_same_batch_and_refuses_another_body() {
    let app = spawn_app().await;
    let token = app.user("ops", "platform_admin", "*").await;
    let body = batch(json!(["m_acme"]), &["CSV"]);
    let first = post_batch(&app, &token, &body, Some("close-2026-10")).await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let again = post_batch(&app, &token, &body, Some("close-2026-10")).await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    let other = batch(json!(["m_global"]), &["CSV"]);
    assert_error(
        post_batch(&app, &token, &other, Some("close-2026-10")).await,
        422,
        "IDEMPOTENCY_KEY_REUSED",
    )
    .await;
    let page = app.get_json(&token, "/batches").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_batch_is_seen_by_its_creator_and_platform_readers_only() {
    let app = spawn_app().await;
    let ana = app.user("ana", "merchant_operator", "m_acme").await;
    let bob = app.user("bob", "merchant_operator", "m_acme").await;
    let admin = app.user("root", "platform_admin", "*").await;
    let b = created(&app, &ana, &batch(json!(["m_acme"]), &["CSV"])).await;
    let id = b["id"].as_str().unwrap();
    assert_error(
        app.get(&bob, &format!("/batches/{id}")).await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_error(
        app.get(&bob, &format!("/batches/{id}/ledgers")).await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_eq!(
        app.get(&admin, &format!("/batches/{id}")).await.status(),
        200
    );
    assert_eq!(app.get_json(&bob, "/batches").await["items"], json!([]));
}

#[tokio::test]
async fn batch_progress_reaches_the_creators_socket_until_the_batch_completes() {
    let app = spawn_app().await;
    let token = app.user("ana", "merchant_operator", "m_acme").await;
    app.grant("ana", "merchant_operator", "m_global").await;
    let stranger = app.user("eve", "merchant_operator", "m_tokyo").await;
    let mut socket = connect(&app, &token).await;
    let mut theirs = connect(&app, &stranger).await;
    let b = created(
        &app,
        &token,
        &batch(json!(["m_acme", "m_global"]), &["CSV", "XLSX"]),
    )
    .await;
    let id = b["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "no final batch.progress: {seen:?}"
        );
        let Some(event) = next_json(&mut socket, Duration::from_secs(1)).await else {
            continue;
        };
        if event["event"] != "batch.progress" {
            continue;
        }
        assert_eq!(event["batchId"], id);
        let total = event["total"].as_u64().unwrap();
        let counted: u64 = event["counts"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(total, counted, "{event}");
        seen.push(event["status"].as_str().unwrap().to_owned());
        if event["status"] != "RUNNING" {
            assert_eq!(event["status"], "COMPLETED");
            assert_eq!(event["counts"]["COMPLETED"], 4);
            break;
        }
    }
    // Another merchant's user heard nothing of it.
    while let Some(event) = next_json(&mut theirs, Duration::from_millis(300)).await {
        assert_ne!(event["event"], "batch.progress", "{event}");
    }
}
