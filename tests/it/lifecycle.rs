//! The life of a ledger through the API: create, generate, download, retry, regenerate,
//! delete, as a user sees it.

use serde_json::{Value, json};

use crate::helpers::{assert_error, open_statement, spawn_app, statement};

fn csv_rows(bytes: &[u8]) -> Vec<Vec<String>> {
    let mut reader = csv::Reader::from_reader(bytes);
    reader
        .records()
        .map(|r| r.expect("csv row").iter().map(str::to_owned).collect())
        .collect()
}

#[tokio::test]
async fn a_ledger_is_created_generated_and_downloaded() {
    let app = spawn_app().await;
    let token = app.user("alice", "merchant_operator", "m_acme").await;
    let created = app.create_ok(&token, statement("m_acme", "2026-10")).await;
    assert_eq!(created["status"], "PENDING");
    assert_eq!(created["version"], 1);
    assert_eq!(created["createdBy"], "alice");
    assert!(
        created["id"].is_string(),
        "ids are strings in JSON: {created}"
    );
    let id = created["id"].as_str().unwrap().to_owned();

    let done = app.wait_for(&token, &id, "COMPLETED", 30).await;
    assert_eq!(done["attemptCount"], 1);
    assert_eq!(
        done["timezone"], "Europe/Berlin",
        "the merchant's own zone is used"
    );
    assert_eq!(done["stage"], "FINAL", "2026-10 has ended");
    assert_eq!(done["failureReason"], Value::Null);
    let file = &done["file"];
    assert_eq!(file["version"], 1);
    assert_eq!(file["contentType"], "text/csv; charset=utf-8");

    let r = app.download(&token, &id).await;
    assert_eq!(r.status(), 200);
    let body = r.bytes().await.unwrap();
    assert_eq!(body.len() as u64, file["sizeBytes"].as_u64().unwrap());
    let rows = csv_rows(&body);
    assert_eq!(rows.first().unwrap()[2], "OPENING_BALANCE");
    assert_eq!(rows.last().unwrap()[2], "CLOSING_BALANCE");
    let entries: Vec<&Vec<String>> = rows
        .iter()
        // Entry rows carry an entry id; balance and total rows do not.
        .filter(|r| !r[1].is_empty())
        .collect();
    assert!(!entries.is_empty());
    for row in &entries {
        assert!(
            row[0].starts_with("2026-10-") || row[0].starts_with("2026-11-01T00"),
            "{row:?}"
        );
        assert!(
            row[0].ends_with("+02:00") || row[0].ends_with("+01:00"),
            "local offsets: {row:?}"
        );
    }
    // The running balance of the last entry is the closing balance.
    assert_eq!(entries.last().unwrap()[7], rows.last().unwrap()[7]);

    // The timeline tells the story in order.
    let events = app.get_json(&token, &format!("/ledgers/{id}/events")).await;
    let steps: Vec<String> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e["status"]
                .as_str()
                .or(e["phase"].as_str())
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        steps,
        [
            "PENDING",
            "PROCESSING",
            "FETCH_START",
            "GENERATE_START",
            "FETCH_DONE",
            "GENERATE_DONE",
            "UPLOAD_DONE",
            "COMPLETED"
        ]
    );
    let fetch_done = &events["items"][4];
    assert_eq!(fetch_done["detail"], format!("{} entries", entries.len()));
    app.stop().await;
}

#[tokio::test]
async fn the_requested_zone_cuts_the_period() {
    let app = spawn_app().await;
    let token = app.user("alice", "merchant_operator", "m_acme").await;
    let mut body = statement("m_acme", "2026-10-15");
    body["timezone"] = json!("America/New_York");
    let created = app.create_ok(&token, body).await;
    let id = created["id"].as_str().unwrap();
    let done = app.wait_for(&token, id, "COMPLETED", 30).await;
    assert_eq!(done["timezone"], "America/New_York");
    let csv = app
        .get(&token, &format!("/ledgers/{id}/download"))
        .await
        .bytes()
        .await
        .unwrap();
    let rows = csv_rows(&csv);
    assert_eq!(
        rows[0][0], "2026-10-15T00:00:00-04:00",
        "opening at local midnight"
    );
    assert_eq!(rows.last().unwrap()[0], "2026-10-16T00:00:00-04:00");
    for row in rows.iter().filter(|r| !r[1].is_empty()) {
        assert!(row[0].starts_with("2026-10-15T"), "{row:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn ledgers_that_differ_only_in_their_zone_download_under_different_names() {
    let app = spawn_app().await;
    let token = app.user("alice", "merchant_operator", "m_acme").await;
    let own = app.create_ok(&token, statement("m_acme", "2026-10")).await;
    // The merchant's own zone is known once a worker has generated the ledger: null until then.
    assert!(
        own["timezone"].is_null() || own["timezone"] == "Europe/Berlin",
        "{own}"
    );
    let mut body = statement("m_acme", "2026-10");
    body["timezone"] = json!("America/New_York");
    let zoned = app.create_ok(&token, body).await;
    assert_eq!(
        zoned["timezone"], "America/New_York",
        "a requested zone is shown from the start"
    );
    let mut names = Vec::new();
    for created in [&own, &zoned] {
        let id = created["id"].as_str().unwrap();
        app.wait_for(&token, id, "COMPLETED", 30).await;
        let r = app.download(&token, &id).await;
        assert_eq!(r.status(), 200);
        names.push(
            r.headers()["content-disposition"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(
        names[0],
        "attachment; filename=\"ledger-m_acme-statement-2026-10-v1.csv\"; \
         filename*=UTF-8''ledger-m_acme-statement-2026-10-v1.csv"
    );
    assert!(
        names[1].contains("filename=\"ledger-m_acme-statement-2026-10-America-New_York-v1.csv\""),
        "{}",
        names[1]
    );
    app.stop().await;
}

#[tokio::test]
async fn bad_source_data_rejects_with_the_field_path_and_retry_counts_attempts() {
    let app = spawn_app().await;
    let token = app.user("alice", "merchant_admin", "m_broken").await;
    let created = app
        .create_ok(&token, statement("m_broken", "2026-10"))
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let rejected = app.wait_for(&token, &id, "REJECTED", 30).await;
    let reason = &rejected["failureReason"];
    assert_eq!(reason["errorCode"], "FETCH_DATA_ERROR");
    assert!(
        reason["message"]
            .as_str()
            .unwrap()
            .contains("entries[2].amount"),
        "{reason}"
    );
    assert_eq!(reason["retryable"], false);
    // It will never have a file unless retried, and the answer says so.
    let refused = assert_error(app.download(&token, &id).await, 409, "JOB_NOT_READY").await;
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("rejected with FETCH_DATA_ERROR")
            && message.contains(&format!("/ledgers/{id}/retry")),
        "{message}"
    );
    assert_error(app.regenerate(&token, &id).await, 409, "INVALID_STATE").await;

    let r = app.retry(&token, &id).await;
    assert_eq!(r.status(), 202);
    let again = app.wait_for(&token, &id, "REJECTED", 30).await;
    assert_eq!(
        again["attemptCount"], 2,
        "attempts are counted over the ledger's life"
    );

    // Deleting is soft: afterwards every route of the id is a 404 (a second DELETE too), the
    // ledger leaves lists and frees its identity; a platform_admin can still audit it.
    assert_eq!(
        app.delete(&token, &format!("/ledgers/{id}")).await.status(),
        204
    );
    for (method, path) in [
        ("DELETE", format!("/ledgers/{id}")),
        ("GET", format!("/ledgers/{id}")),
        ("GET", format!("/ledgers/{id}/events")),
        ("GET", format!("/ledgers/{id}/download")),
        ("POST", format!("/ledgers/{id}/retry")),
        ("POST", format!("/ledgers/{id}/regenerate")),
    ] {
        let r = match method {
            "DELETE" => app.delete(&token, &path).await,
            "POST" => app.post(&token, &path).await,
            _ => app.get(&token, &path).await,
        };
        assert_error(r, 404, "NOT_FOUND").await;
    }
    // The audit read is for platform_admin only.
    assert_error(
        app.get(&token, &format!("/ledgers/{id}?includeDeleted=true"))
            .await,
        403,
        "FORBIDDEN",
    )
    .await;
    let auditor = app.user("auditor", "platform_admin", "*").await;
    let deleted = app
        .get_json(&auditor, &format!("/ledgers/{id}?includeDeleted=true"))
        .await;
    assert!(deleted["deletedAt"].is_string(), "{deleted}");
    let r = app
        .get(
            &auditor,
            &format!("/ledgers/{id}/events?includeDeleted=true"),
        )
        .await;
    assert_eq!(r.status(), 200);
    let audit = app
        .get_json(&auditor, "/ledgers?merchantId=m_broken&includeDeleted=true")
        .await;
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["id"] == id.as_str() && l["deletedAt"].is_string()),
        "{audit}"
    );
    assert_error(
        app.get(&token, "/ledgers?includeDeleted=true").await,
        403,
        "FORBIDDEN",
    )
    .await;
    assert_error(
        app.get(&auditor, &format!("/ledgers/{id}")).await,
        404,
        "NOT_FOUND",
    )
    .await;
    let list = app.get_json(&token, "/ledgers?merchantId=m_broken").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
    assert_error(app.retry(&token, &id).await, 404, "NOT_FOUND").await;
    let recreated = app
        .create_ok(&token, statement("m_broken", "2026-10"))
        .await;
    assert_ne!(recreated["id"], created["id"]);
    app.stop().await;
}

#[tokio::test]
async fn drafts_regenerate_into_new_versions_and_finals_do_not() {
    let app = spawn_app().await;
    let token = app.user("alice", "merchant_operator", "m_acme").await;
    // A month that has not ended: a DRAFT.
    let (id, v1) = app.completed(&token, open_statement("m_acme"), 30).await;
    assert_eq!(v1["stage"], "DRAFT");
    assert_error(app.retry(&token, &id).await, 409, "INVALID_STATE").await;

    let r = app.regenerate(&token, &id).await;
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["version"], 2);
    let v2 = app.wait_for(&token, &id, "COMPLETED", 30).await;
    assert_eq!(v2["version"], 2);
    assert_eq!(v2["file"]["version"], 2);
    for version in [1, 2] {
        let r = app
            .get(&token, &format!("/ledgers/{id}/download?version={version}"))
            .await;
        assert_eq!(r.status(), 200, "version {version} is kept");
        let name = r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(name.contains(&format!("-v{version}.csv")), "{name}");
    }
    assert_error(
        app.get(&token, &format!("/ledgers/{id}/download?version=3"))
            .await,
        404,
        "NOT_FOUND",
    )
    .await;

    let fin = app.create_ok(&token, statement("m_acme", "2026-09")).await;
    let fin_id = fin["id"].as_str().unwrap();
    let done = app.wait_for(&token, fin_id, "COMPLETED", 30).await;
    assert_eq!(done["stage"], "FINAL");
    assert_error(app.regenerate(&token, &fin_id).await, 409, "LEDGER_FINAL").await;
    app.stop().await;
}

#[tokio::test]
async fn jobs_in_progress_refuse_changes() {
    // An api-only process: nothing consumes, jobs stay PENDING.
    let app = crate::helpers::spawn_role("api", &[]).await;
    let token = app.user("alice", "merchant_admin", "m_acme").await;
    let created = app.create_ok(&token, statement("m_acme", "2026-10")).await;
    let id = created["id"].as_str().unwrap();
    for (r, code) in [
        (app.retry(&token, &id).await, "JOB_IN_PROGRESS"),
        (app.regenerate(&token, &id).await, "JOB_IN_PROGRESS"),
        (
            app.delete(&token, &format!("/ledgers/{id}")).await,
            "JOB_IN_PROGRESS",
        ),
        (app.download(&token, &id).await, "JOB_NOT_READY"),
    ] {
        assert_error(r, 409, code).await;
    }
    let again = app.create(&token, statement("m_acme", "2026-10")).await;
    let body = assert_error(again, 409, "LEDGER_EXISTS").await;
    assert_eq!(body["error"]["ledgerId"], created["id"]);
    app.stop().await;
}

#[tokio::test]
async fn multi_currency_statements_balance_per_currency() {
    let app = spawn_app().await;
    let token = app.user("alice", "merchant_viewer", "m_global").await;
    app.grant("alice", "merchant_operator", "m_global").await;
    let created = app
        .create_ok(&token, statement("m_global", "2026-Q3"))
        .await;
    let id = created["id"].as_str().unwrap();
    app.wait_for(&token, id, "COMPLETED", 30).await;
    let csv = app
        .get(&token, &format!("/ledgers/{id}/download"))
        .await
        .bytes()
        .await
        .unwrap();
    let rows = csv_rows(&csv);
    let closings: Vec<&Vec<String>> = rows.iter().filter(|r| r[2] == "CLOSING_BALANCE").collect();
    assert!(closings.len() >= 3, "several currencies: {closings:?}");
    for closing in closings {
        let currency = &closing[5];
        let last = rows
            .iter()
            .rfind(|r| &r[5] == currency && (!r[1].is_empty() || r[2] == "OPENING_BALANCE"))
            .unwrap();
        assert_eq!(
            last[7], closing[7],
            "{currency} running balance ends at its closing"
        );
        if currency == "JPY" {
            assert!(
                !closing[7].contains('.'),
                "JPY has no minor digits: {closing:?}"
            );
        }
        if currency == "KWD" {
            assert_eq!(
                closing[7].split('.').nth(1).map(str::len),
                Some(3),
                "{closing:?}"
            );
        }
    }
    app.stop().await;
}
