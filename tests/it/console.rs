//! The web console (SPEC §14) in a real browser (headless Chromium over WebDriver): sign in
//! with a pasted token, make a ledger with the form and watch it complete without a reload,
//! download it, see a validation error beside its field, retry a rejected ledger, and see
//! that another user's console shows only their merchants. The page's policy and origins
//! are checked too. With `LEDGER_WRITE_SCREENSHOTS=1` the screenshots of docs/console/ are
//! made again.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::browser::Browser;
use crate::helpers::{TestApp, open_statement, spawn_app};

/// Where a screenshot goes: docs/console/ when asked to write them, a temporary file else.
fn shot(name: &str, scratch: &tempfile::TempDir) -> PathBuf {
    if std::env::var("LEDGER_WRITE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/console");
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    } else {
        scratch.path().join(name)
    }
}

/// Whether the app verifies tokens with its own dev key (the embedded run).
fn dev_tokens(app: &TestApp) -> bool {
    app.config.auth_jwks_url.is_none() && app.config.auth_jwks_file.is_none()
}

async fn sign_in(browser: &Browser, app: &TestApp, token: &str) {
    browser.goto(&app.url("/console/")).await;
    browser.field("Access token").await.type_text(token).await;
    browser.button("Sign in").await.click().await;
    browser.find("//h1[normalize-space()='Ledgers']").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_makes_watches_downloads_and_retries_ledgers_in_the_browser() {
    let app = spawn_app().await;
    let ops = app.user("ops", "merchant_operator", "m_acme").await;
    app.grant("ops", "merchant_operator", "m_broken").await;
    let scratch = tempfile::tempdir().unwrap();
    let browser = Browser::start(1280, 900).await;

    // The sign-in page says how to mint a token on the embedded default (not where tokens
    // come from an identity provider: the production run).
    browser.goto(&app.url("/console/")).await;
    browser.field("Access token").await;
    if dev_tokens(&app) {
        browser.wait_text("ledger token --sub NAME", 10).await;
    }
    browser.screenshot(&shot("sign-in.png", &scratch)).await;
    // A token that is not one is refused beside the field.
    browser
        .field("Access token")
        .await
        .type_text("not-a-token")
        .await;
    browser.button("Sign in").await.click().await;
    browser.wait_text("This is not a JWT", 10).await;
    sign_in(&browser, &app, &ops).await;
    assert!(browser.text().await.contains("Signed in as ops"));
    // The token is in sessionStorage and never in the URL.
    let url = browser.run("return location.href;", json!([])).await;
    let signature = ops.rsplit('.').next().unwrap();
    assert!(!url.as_str().unwrap().contains(signature), "{url}");
    assert_eq!(
        browser.unnamed_controls().await,
        Vec::<String>::new(),
        "the ledger list"
    );

    // A validation error appears next to the field it names.
    browser.button("New ledger").await.click().await;
    assert_eq!(
        browser.unnamed_controls().await,
        Vec::<String>::new(),
        "the form"
    );
    browser.field("Merchant").await.type_text("m_acme").await;
    browser.field("Period").await.type_text("2026-13").await;
    browser.button("Create ledger").await.click().await;
    let period = browser.field("Period").await;
    let error_id = format!("{}-error", period.attribute("id").await.unwrap());
    browser.find(&format!("//*[@id='{error_id}']")).await;
    let error_text = browser
        .run(
            &format!("return document.getElementById('{error_id}').textContent;"),
            json!([]),
        )
        .await;
    assert!(
        error_text.as_str().unwrap().contains("period"),
        "{error_text}"
    );
    assert_eq!(
        period.attribute("aria-invalid").await.as_deref(),
        Some("true")
    );
    browser
        .screenshot(&shot("new-ledger-error.png", &scratch))
        .await;

    // Created through the form, it completes on its page without a reload.
    browser.run("window.__noReload = true;", json!([])).await;
    let (month, zone) = crate::helpers::open_month();
    browser.field("Period").await.type_text(&month).await;
    browser.field("Time zone").await.type_text(zone).await;
    browser.field("Format").await.choose("CSV").await;
    browser.button("Create ledger").await.click().await;
    browser
        .find("//h1[starts-with(normalize-space(), 'Ledger ')]")
        .await;
    browser.wait_text("COMPLETED", 30).await;
    let kept = browser
        .run("return window.__noReload === true;", json!([]))
        .await;
    assert_eq!(kept, true, "the page was reloaded");
    let id = browser
        .run("return location.hash.split('/')[2];", json!([]))
        .await
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.ledger(&ops, &id).await["status"], "COMPLETED");
    browser.wait_text("UPLOAD_DONE", 10).await;
    browser.screenshot(&shot("ledger.png", &scratch)).await;
    assert_eq!(
        browser.unnamed_controls().await,
        Vec::<String>::new(),
        "a ledger's page"
    );

    // Download: the file saved is the one the API serves.
    browser.button("Download version 1").await.click().await;
    let saved = browser.downloaded().await;
    let served = app.download(&ops, &id).await.bytes().await.unwrap();
    assert_eq!(std::fs::read(&saved).unwrap(), served.to_vec());
    assert!(
        saved
            .file_name()
            .unwrap()
            .to_string_lossy()
            .ends_with(".csv")
    );

    // The manifest of the version, decoded.
    browser.button("Show manifest").await.click().await;
    browser.wait_text("\"sha256\"", 10).await;

    // A rejected ledger is retried from its page, after a confirmation.
    let broken = app.create_id(&ops, open_statement("m_broken")).await;
    app.wait_for(&ops, &broken, "REJECTED", 30).await;
    browser
        .goto(&app.url(&format!("/console/#/ledgers/{broken}")))
        .await;
    browser.wait_text("FETCH_DATA_ERROR", 10).await;
    browser.button("Retry").await.click().await;
    browser.confirm("Retry").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let l = app.ledger(&ops, &broken).await;
        if l["attemptCount"] == 2 && l["status"] == "REJECTED" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not retried: {l}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The page follows: two attempts on its timeline.
    browser
        .find("//dt[normalize-space()='Attempts']/following-sibling::dd[1][normalize-space()='2']")
        .await;

    // The list shows both, live: a ledger made elsewhere appears without a reload.
    browser.button("Ledgers").await.click().await;
    browser
        .find(&format!("//a[normalize-space()='{broken}']"))
        .await;
    let mut body = open_statement("m_acme");
    body["format"] = json!("PDF");
    let pdf = app.create_id(&ops, body).await;
    browser
        .find(&format!("//a[normalize-space()='{pdf}']"))
        .await;
    browser
        .find(&format!(
            "//tr[@data-id='{pdf}']//span[contains(@class,'status') and normalize-space()='COMPLETED']"
        ))
        .await;
    assert_eq!(
        browser
            .run("return window.__noReload === true;", json!([]))
            .await,
        true
    );
    browser.screenshot(&shot("ledgers.png", &scratch)).await;

    // Everything the page loaded came from its own origin.
    let foreign = browser
        .run(
            "return performance.getEntriesByType('resource').map(e => e.name)\
             .filter(n => !n.startsWith(location.origin + '/'));",
            json!([]),
        )
        .await;
    assert_eq!(foreign, json!([]), "requests to another origin");

    // Deleted from its page, after a confirmation: gone from the list too. An operator may
    // not delete: the API refuses as for a ledger it cannot see (404), shown; an admin may.
    browser.button(&pdf).await.click().await;
    browser.button("Delete").await.click().await;
    browser.confirm("Delete").await;
    browser.wait_text("no such ledger", 10).await;
    app.grant("ops", "merchant_admin", "m_acme").await;
    browser.button("Delete").await.click().await;
    browser.confirm("Delete").await;
    browser.find("//h1[normalize-space()='Ledgers']").await;
    let stored = app
        .store
        .get_ledger(ledger::domain::LedgerId::from_i64(pdf.parse().unwrap()))
        .await
        .unwrap()
        .unwrap();
    assert!(stored.deleted_at.is_some(), "deleted (softly)");
    browser.wait_text(&broken, 10).await;
    assert!(!browser.text().await.contains(&pdf));

    // No script error and no policy refusal on any page.
    assert_eq!(browser.page_errors().await, Vec::<String>::new());

    // Signing out forgets the token.
    browser.button("Sign out").await.click().await;
    browser.wait_text("Signed out.", 10).await;
    let stored = browser
        .run("return sessionStorage.length;", json!([]))
        .await;
    assert_eq!(stored, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_sees_only_their_merchants_and_a_small_screen_works() {
    let app = spawn_app().await;
    let acme = app.user("ann", "merchant_operator", "m_acme").await;
    let tokyo = app.user("ken", "merchant_viewer", "m_tokyo").await;
    let (acme_id, _) = app.completed(&acme, open_statement("m_acme"), 30).await;
    let admin = app.user("root", "platform_admin", "*").await;
    let (tokyo_id, _) = app.completed(&admin, open_statement("m_tokyo"), 30).await;

    // A phone-sized viewport.
    let browser = Browser::start(390, 844).await;
    sign_in(&browser, &app, &tokyo).await;
    browser
        .find(&format!("//a[normalize-space()='{tokyo_id}']"))
        .await;
    let text = browser.text().await;
    assert!(!text.contains("m_acme"), "{text}");
    assert!(!text.contains(&acme_id), "{text}");
    let scratch = tempfile::tempdir().unwrap();
    browser
        .screenshot(&shot("ledgers-phone.png", &scratch))
        .await;
    // Another merchant's ledger made now does not show up live either.
    let mut body = open_statement("m_acme");
    body["format"] = json!("XLSX");
    let other = app.create_id(&acme, body).await;
    app.wait_for(&acme, &other, "COMPLETED", 30).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let text = browser.text().await;
    assert!(!text.contains(&other) && !text.contains("m_acme"), "{text}");
    // Another merchant's ledger by its URL: not shown, whatever the URL says.
    browser
        .goto(&app.url(&format!("/console/#/ledgers/{acme_id}")))
        .await;
    browser.wait_text("no such ledger", 10).await;
    assert!(!browser.text().await.contains("m_acme"));
    // A viewer sees no action that would change a ledger.
    browser
        .goto(&app.url(&format!("/console/#/ledgers/{tokyo_id}")))
        .await;
    browser.wait_text("Download version 1", 10).await;
    // (The API refuses the actions the role lacks; the console offers Delete only as the
    // state allows, and the API's 403 is shown if tried.)
    // Keyboard only: Tab reaches the sections' links in order.
    let names = browser
        .run(
            "return [...document.querySelectorAll('a, button, input, select, textarea')]\
             .filter(e => !e.closest('[hidden]'))\
             .filter(e => !(e.textContent.trim() || e.getAttribute('aria-label') || \
               (e.id && document.querySelector(`label[for=\"${e.id}\"]`))))\
             .map(e => e.outerHTML);",
            json!([]),
        )
        .await;
    assert_eq!(names, json!([]), "controls without an accessible name");

    // A token that runs out ends the session with a clear screen, not a broken page (10 s:
    // long enough to sign in on a loaded machine, short enough to wait for).
    let (key, _) = crate::helpers::trusted_key(&app.config);
    let short = key
        .sign(
            "ken",
            Duration::from_secs(10),
            app.config.auth_issuer.as_deref(),
            app.config.auth_audience.as_deref(),
        )
        .unwrap();
    browser.button("Sign out").await.click().await;
    browser.field("Access token").await.type_text(&short).await;
    browser.button("Sign in").await.click().await;
    browser.wait_text("Your session has expired", 30).await;
    browser.field("Access token").await;
    assert_eq!(
        browser
            .run("return sessionStorage.length;", json!([]))
            .await,
        0
    );
    app.stop().await;
}

#[tokio::test]
async fn the_console_is_served_with_a_strict_policy_and_only_its_own_files() {
    let app = spawn_app().await;
    for path in [
        "/console/",
        "/console/app.js",
        "/console/app.css",
        "/console/settings.json",
    ] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let csp = r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    }
    let r = app
        .client
        .get(app.url("/console/app.js"))
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let etag = r.headers()["etag"].clone();
    let again = app
        .client
        .get(app.url("/console/app.js"))
        .header("If-None-Match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    let settings: Value = app
        .client
        .get(app.url("/console/settings.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        settings["devTokens"],
        dev_tokens(&app),
        "the embedded default signs its own tokens"
    );
    for missing in [
        "/console/nope.js",
        "/console/index.htm",
        "/console/%2e%2e%2fopenapi.json",
    ] {
        let r = app.client.get(app.url(missing)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{missing}");
        assert!(
            r.headers().contains_key("content-security-policy"),
            "{missing}"
        );
    }
    // The bare path leads to the page.
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(app.url("/console"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], "console/");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_schedules_and_webhooks_have_their_pages() {
    let app = spawn_app().await;
    let admin = app.user("root", "platform_admin", "*").await;
    let browser = Browser::start(1280, 900).await;
    sign_in(&browser, &app, &admin).await;
    let scratch = tempfile::tempdir().unwrap();

    // A batch made elsewhere shows its progress, live, to the end.
    let r = app
        .client
        .post(app.url("/batches"))
        .bearer_auth(&admin)
        .json(
            &json!({"merchantIds": ["m_acme", "m_tokyo"], "type": "STATEMENT",
                      "period": "2026-10", "formats": ["CSV"]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let batch: Value = r.json().await.unwrap();
    let id = batch["id"].as_str().unwrap();
    browser.button("Batches").await.click().await;
    browser
        .find(&format!("//a[normalize-space()='{id}']"))
        .await;
    browser
        .find(&format!(
            "//tr[@data-id='{id}']//span[normalize-space()='2 of 2 done']"
        ))
        .await;
    browser
        .find(&format!(
            "//tr[@data-id='{id}']//span[normalize-space()='COMPLETED']"
        ))
        .await;
    browser.button(id).await.click().await;
    browser.wait_text("m_tokyo", 10).await;
    browser.screenshot(&shot("batch.png", &scratch)).await;

    // A schedule made, then paused, from the form.
    browser.button("Schedules").await.click().await;
    browser.field("Merchants").await.type_text("m_acme").await;
    browser.field("Formats").await.type_text("CSV").await;
    browser.field("Cadence").await.choose("MONTHLY").await;
    browser.field("Delay").await.type_text("P40D").await;
    browser.button("Create schedule").await.click().await;
    let delay = browser.field("Delay").await;
    browser.wait_text("P31D", 10).await;
    assert_eq!(
        delay.attribute("aria-invalid").await.as_deref(),
        Some("true")
    );
    browser.field("Delay").await.type_text("PT1H").await;
    browser.button("Create schedule").await.click().await;
    browser.wait_text("MONTHLY + PT1H", 10).await;
    let schedules = app.get_json(&admin, "/schedules").await;
    let sid = schedules["items"][0]["id"].as_str().unwrap().to_owned();
    browser
        .button(&format!("Pause schedule {sid}"))
        .await
        .click()
        .await;
    browser
        .find(&format!("//button[@aria-label='Resume schedule {sid}']"))
        .await;
    assert_eq!(
        app.get_json(&admin, &format!("/schedules/{sid}")).await["paused"],
        true
    );

    // A webhook: the URL checked beside its field, then made, its secret shown once.
    browser.button("Webhooks").await.click().await;
    browser
        .field("URL")
        .await
        .type_text("http://hooks.example.com/ledger")
        .await;
    browser.field("Merchants").await.type_text("m_acme").await;
    browser.button("Create webhook").await.click().await;
    browser.wait_text("must be https", 10).await;
    browser
        .field("URL")
        .await
        .type_text("https://hooks.example.com/ledger")
        .await;
    browser.button("Create webhook").await.click().await;
    browser.wait_text("whsec_", 10).await;
    let hooks = app.get_json(&admin, "/webhooks").await;
    let wid = hooks["items"][0]["id"].as_str().unwrap().to_owned();
    browser.button(&wid).await.click().await;
    browser.wait_text("Rotate secret", 10).await;
    browser.screenshot(&shot("webhook.png", &scratch)).await;
    browser.button("Delete").await.click().await;
    browser.confirm("Delete").await;
    browser.find("//h1[normalize-space()='Webhooks']").await;
    assert_eq!(app.get_json(&admin, "/webhooks").await["items"], json!([]));
    assert_eq!(
        browser.unnamed_controls().await,
        Vec::<String>::new(),
        "webhooks"
    );
    browser.button("Schedules").await.click().await;
    browser.wait_text("MONTHLY + PT1H", 10).await;
    assert_eq!(
        browser.unnamed_controls().await,
        Vec::<String>::new(),
        "schedules"
    );
    assert_eq!(browser.page_errors().await, Vec::<String>::new());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_is_made_with_the_keyboard_alone() {
    const TAB: &str = "\u{E004}";
    const ENTER: &str = "\u{E007}";
    let app = spawn_app().await;
    let ops = app.user("ops", "merchant_operator", "m_acme").await;
    // 200% zoom of a 1280-pixel screen lays the page out in 640 CSS pixels.
    let browser = Browser::start(640, 800).await;
    browser.goto(&app.url("/console/")).await;
    browser.field("Access token").await;
    assert_eq!(
        browser.focused().await,
        "Access token",
        "the token field has the focus"
    );
    browser.keys(&ops).await;
    browser.keys(TAB).await;
    assert_eq!(browser.focused().await, "Sign in");
    browser.keys(ENTER).await;
    browser.find("//h1[normalize-space()='Ledgers']").await;
    // From the page's heading, the next stop is "New ledger".
    browser.keys(TAB).await;
    assert_eq!(browser.focused().await, "New ledger");
    browser.keys(ENTER).await;
    browser.find("//h1[normalize-space()='New ledger']").await;
    let (month, zone) = crate::helpers::open_month();
    let mut stops = Vec::new();
    for (name, typed) in [
        ("Merchant", Some("m_acme")),
        ("Type", None),
        ("Period", Some(month.as_str())),
        ("Format", None),
        ("Time zone", Some(zone)),
        ("Create ledger", None),
    ] {
        browser.keys(TAB).await;
        stops.push(browser.focused().await);
        assert_eq!(stops.last().unwrap(), name, "{stops:?}");
        if let Some(text) = typed {
            browser.keys(text).await;
        }
    }
    browser.keys(ENTER).await;
    browser
        .find("//h1[starts-with(normalize-space(), 'Ledger ')]")
        .await;
    browser.wait_text("COMPLETED", 30).await;
    assert_eq!(browser.page_errors().await, Vec::<String>::new());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_regenerating_rotating_and_redelivering_from_the_console() {
    let app = spawn_app().await;
    let admin = app.user("root", "platform_admin", "*").await;
    // 55 ledgers: a page of 50, then the rest with "Load more".
    let mut ids = Vec::new();
    for day in 1..=55 {
        let date =
            chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() + chrono::Duration::days(day);
        ids.push(
            app.create_id(
                &admin,
                json!({"merchantId": "m_acme", "type": "SUMMARY", "period": date.to_string(), "format": "CSV"}),
            )
            .await,
        );
    }
    let browser = Browser::start(1280, 900).await;
    sign_in(&browser, &app, &admin).await;
    browser
        .find(&format!("//a[normalize-space()='{}']", ids[54]))
        .await;
    let rows = "return document.querySelectorAll('tbody tr').length;";
    assert_eq!(browser.run(rows, json!([])).await, 50);
    browser.button("Load more").await.click().await;
    browser
        .find(&format!("//a[normalize-space()='{}']", ids[0]))
        .await;
    assert_eq!(browser.run(rows, json!([])).await, 55);

    // Regenerate a DRAFT from its page: version 2 comes, each version downloadable.
    let (draft, _) = app.completed(&admin, open_statement("m_acme"), 30).await;
    browser
        .goto(&app.url(&format!("/console/#/ledgers/{draft}")))
        .await;
    browser.button("Regenerate").await.click().await;
    browser.confirm("Regenerate").await;
    browser.button("Download version 2").await;
    browser.button("Download version 1").await;
    assert_eq!(app.ledger(&admin, &draft).await["version"], 2);

    // A webhook whose receiver cannot be reached: its delivery waits; redelivered, a second
    // delivery of the same event is listed; the secret rotated is shown once.
    let r = app
        .client
        .post(app.url("/webhooks"))
        .bearer_auth(&admin)
        .json(
            &json!({"url": "https://receiver.invalid/hook", "events": ["ledger.completed"],
                      "merchantIds": ["m_acme"]}),
        )
        .send()
        .await
        .unwrap();
    let hook: Value = r.json().await.unwrap();
    let wid = hook["id"].as_str().unwrap().to_owned();
    let mut body = open_statement("m_acme");
    body["format"] = json!("XLSX");
    app.completed(&admin, body, 30).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let delivery = loop {
        let items = app
            .get_json(&admin, &format!("/webhooks/{wid}/deliveries"))
            .await["items"]
            .clone();
        if items[0]["attempts"].as_u64().unwrap_or(0) >= 1 {
            break items[0].clone();
        }
        assert!(std::time::Instant::now() < deadline, "{items}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    browser
        .goto(&app.url(&format!("/console/#/webhooks/{wid}")))
        .await;
    let name = format!(
        "Redeliver {} (delivery {})",
        delivery["messageId"].as_str().unwrap(),
        delivery["id"].as_str().unwrap()
    );
    browser.button(&name).await.click().await;
    browser.wait_text("Sent again", 10).await;
    let listed = app
        .get_json(&admin, &format!("/webhooks/{wid}/deliveries"))
        .await["items"]
        .clone();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(listed[0]["messageId"], delivery["messageId"]);
    browser.button("Rotate secret").await.click().await;
    browser.confirm("Rotate").await;
    browser.wait_text("whsec_", 10).await;
    assert_eq!(browser.page_errors().await, Vec::<String>::new());
    app.stop().await;
}
