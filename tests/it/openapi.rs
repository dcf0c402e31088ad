//! The OpenAPI document as a client sees it: served without a token, valid OpenAPI 3.1 whose
//! references all resolve, in step with the routes the service answers (every documented
//! operation is served, every other method on a documented path is a 405), naming every error
//! code the API has, printed identically by `ledger openapi`, and holding up under
//! schemathesis: no 5xx for any input, every response as documented.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use ledger::api::ApiError;
use ledger::domain::{
    Action, Format, InvalidInput, LedgerId, LedgerType, Stage, Status, TransitionError,
};
use serde_json::{Value, json};

use crate::helpers::{TestApp, ledger_command, spawn_app, statement};

const BASE: &str = "/v1/api/ledger";
const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// `GET /v1/api/ledger/openapi.json` without a token.
async fn served(app: &TestApp) -> Value {
    let r = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200, "the document is public");
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    r.json().await.expect("the document is JSON")
}

/// Every `(path, method, operation)` of the document.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if METHODS.contains(&method.as_str()) {
                out.push((path.clone(), method.clone(), op.clone()));
            }
        }
    }
    out
}

/// Resolves a local `$ref` (`#/components/...`) in `doc`.
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

/// Every `$ref` anywhere in `value`, with where it was found.
fn refs(value: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    out.push((at.to_owned(), v.as_str().unwrap_or("<not a string>").into()));
                } else {
                    refs(v, &format!("{at}/{k}"), out);
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                refs(v, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// The enum of a component schema.
fn enum_of(doc: &Value, schema: &str) -> Vec<String> {
    doc["components"]["schemas"][schema]["enum"]
        .as_array()
        .unwrap_or_else(|| panic!("{schema} has no enum"))
        .iter()
        .map(|v| v.as_str().expect("string").to_owned())
        .collect()
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_every_reference_resolves() {
    let app = spawn_app().await;
    let doc = served(&app).await;

    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "ledger");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));

    let mut found = Vec::new();
    refs(&doc, "#", &mut found);
    assert!(found.len() > 50, "only {} references", found.len());
    for (at, reference) in &found {
        assert!(
            reference.starts_with("#/components/"),
            "{at}: {reference} is not local"
        );
        assert!(
            resolve(&doc, reference).is_some(),
            "{at}: {reference} does not resolve"
        );
    }

    let mut operation_ids = BTreeSet::new();
    for (path, method, op) in operations(&doc) {
        let what = format!("{method} {path}");
        let id = op["operationId"].as_str().expect("operationId");
        assert!(operation_ids.insert(id.to_owned()), "{what}: {id} twice");
        assert!(op["summary"].is_string(), "{what}: no summary");
        let responses = op["responses"].as_object().expect("responses");
        assert!(!responses.is_empty(), "{what}: no responses");
        for (status, response) in responses {
            assert!(response["description"].is_string(), "{what} {status}");
            assert_eq!(
                response["headers"]["X-Request-Id"]["$ref"], "#/components/headers/X-Request-Id",
                "{what} {status}: every response carries X-Request-Id"
            );
        }
        // Path parameters: exactly the template's, each required.
        let template: BTreeSet<String> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .map(str::to_owned)
            .collect();
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        let declared: BTreeSet<String> = params
            .iter()
            .filter(|p| p["in"] == "path")
            .map(|p| {
                assert_eq!(p["required"], true, "{what}: {p}");
                p["name"].as_str().expect("name").to_owned()
            })
            .collect();
        assert_eq!(template, declared, "{what}: path parameters");
        let names: Vec<(&str, &str)> = params
            .iter()
            .map(|p| {
                (
                    p["in"].as_str().expect("in"),
                    p["name"].as_str().expect("name"),
                )
            })
            .collect();
        let unique: BTreeSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{what}: a parameter twice");

        // A bearer token on everything under the base path but the document itself and the
        // keys that verify manifests (their users, a statement's recipients, have no account).
        let under_base = path.starts_with(BASE);
        let public = !under_base
            || path == "/v1/api/ledger/openapi.json"
            || path == "/v1/api/ledger/.well-known/jwks.json";
        let security = op["security"].as_array().cloned().unwrap_or_default();
        if public {
            assert!(security.is_empty(), "{what} is public: {security:?}");
            assert!(responses.get("401").is_none(), "{what}: no 401 when public");
        } else {
            assert!(
                security.contains(&json!({ "bearer": [] })),
                "{what}: {security:?}"
            );
            assert!(responses.contains_key("401"), "{what}: no 401");
            assert!(responses.contains_key("500"), "{what}: no 500");
        }
        if !under_base {
            let description = op["description"].as_str().unwrap_or_default();
            assert!(
                description.contains("Outside the base path"),
                "{what}: {description}"
            );
        }
    }
    let documented: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(p, m, _)| (m, p))
        .collect();
    let expected: BTreeSet<(String, String)> = [
        ("post", "/v1/api/ledger/ledgers"),
        ("get", "/v1/api/ledger/ledgers"),
        ("get", "/v1/api/ledger/ledgers/{id}"),
        ("delete", "/v1/api/ledger/ledgers/{id}"),
        ("get", "/v1/api/ledger/ledgers/{id}/events"),
        ("get", "/v1/api/ledger/ledgers/{id}/download"),
        ("get", "/v1/api/ledger/ledgers/{id}/manifest"),
        ("post", "/v1/api/ledger/ledgers/{id}/retry"),
        ("post", "/v1/api/ledger/ledgers/{id}/regenerate"),
        ("post", "/v1/api/ledger/batches"),
        ("get", "/v1/api/ledger/batches"),
        ("get", "/v1/api/ledger/batches/{id}"),
        ("get", "/v1/api/ledger/batches/{id}/ledgers"),
        ("post", "/v1/api/ledger/schedules"),
        ("get", "/v1/api/ledger/schedules"),
        ("get", "/v1/api/ledger/schedules/{id}"),
        ("patch", "/v1/api/ledger/schedules/{id}"),
        ("delete", "/v1/api/ledger/schedules/{id}"),
        ("post", "/v1/api/ledger/webhooks"),
        ("get", "/v1/api/ledger/webhooks"),
        ("get", "/v1/api/ledger/webhooks/{id}"),
        ("delete", "/v1/api/ledger/webhooks/{id}"),
        ("post", "/v1/api/ledger/webhooks/{id}/rotate-secret"),
        ("get", "/v1/api/ledger/webhooks/{id}/deliveries"),
        (
            "post",
            "/v1/api/ledger/webhooks/{id}/deliveries/{deliveryId}/redeliver",
        ),
        ("get", "/v1/api/ledger/ws"),
        ("get", "/v1/api/ledger/openapi.json"),
        ("get", "/v1/api/ledger/.well-known/jwks.json"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_owned(), p.to_owned()))
    .collect();
    assert_eq!(documented, expected, "the operations of SPEC §4");

    let bearer = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(bearer["type"], "http", "{bearer}");
    assert_eq!(bearer["scheme"], "bearer", "{bearer}");
    assert_eq!(bearer["bearerFormat"], "JWT", "{bearer}");
    assert!(
        bearer["description"]
            .as_str()
            .is_some_and(|d| d.contains("ES256")),
        "{bearer}"
    );

    // The wire types with the exact values of SPEC §3.
    assert_eq!(
        enum_of(&doc, "Status"),
        ["PENDING", "PROCESSING", "COMPLETED", "REJECTED"]
    );
    assert_eq!(enum_of(&doc, "Format"), ["PDF", "CSV", "XLSX"]);
    assert_eq!(enum_of(&doc, "LedgerType"), ["STATEMENT", "SUMMARY"]);
    assert_eq!(enum_of(&doc, "Stage"), ["DRAFT", "FINAL"]);
    let schemas = &doc["components"]["schemas"];
    let ledger = &schemas["Ledger"];
    let fields: BTreeSet<&str> = ledger["properties"]
        .as_object()
        .expect("Ledger properties")
        .keys()
        .map(String::as_str)
        .collect();
    let spec_fields: BTreeSet<&str> = [
        "id",
        "merchantId",
        "type",
        "period",
        "timezone",
        "format",
        "stage",
        "status",
        "version",
        "attemptCount",
        "failureReason",
        "file",
        "createdBy",
        "createdAt",
        "updatedAt",
        "startedAt",
        "completedAt",
        "deletedAt",
    ]
    .into();
    assert_eq!(fields, spec_fields, "Ledger");
    assert_eq!(
        ledger["properties"]["id"]["type"], "string",
        "ids are strings"
    );
    assert_eq!(schemas["CreateLedger"]["additionalProperties"], false);
    assert_eq!(
        schemas["CreateLedger"]["required"],
        json!(["merchantId", "type", "period", "format"])
    );
    assert_eq!(
        schemas["LedgerPage"]["required"],
        json!(["items", "nextCursor"])
    );
    assert_eq!(
        schemas["Error"]["properties"]["error"]["$ref"],
        "#/components/schemas/ErrorDetail"
    );
    assert_eq!(
        schemas["ErrorDetail"]["required"],
        json!(["code", "message", "requestId"])
    );

    let paths = &doc["paths"];
    let create = &paths["/v1/api/ledger/ledgers"]["post"];
    assert!(
        create["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header"),
        "{create}"
    );
    assert_eq!(
        create["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/CreateLedger"
    );
    assert_eq!(
        create["responses"]["202"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Ledger"
    );
    let limit = paths["/v1/api/ledger/ledgers"]["get"]["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .find(|p| p["name"] == "limit")
        .expect("limit")
        .clone();
    assert_eq!(limit["schema"]["minimum"], 1, "{limit}");
    assert_eq!(limit["schema"]["maximum"], 200, "{limit}");

    let download = &paths["/v1/api/ledger/ledgers/{id}/download"]["get"]["responses"]["200"];
    for header in [
        "Content-Disposition",
        "ETag",
        "X-Content-Type-Options",
        "Cache-Control",
    ] {
        assert!(
            download["headers"][header].is_object(),
            "{header}: {download}"
        );
    }
    for media in ["application/pdf", "text/csv"] {
        assert!(
            download["content"][media].is_object(),
            "{media}: {download}"
        );
    }

    let ws = &paths["/v1/api/ledger/ws"]["get"];
    assert!(ws["responses"]["101"].is_object(), "{ws}");
    let ws_params: BTreeSet<&str> = ws["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .filter(|p| p["in"] == "query")
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    assert_eq!(ws_params, BTreeSet::from(["access_token", "since"]));
    let close_codes = ws["x-websocket"]["closeCodes"]
        .as_object()
        .expect("close codes");
    for code in ["1001", "1003", "4008"] {
        assert!(close_codes.contains_key(code), "{code}: {ws}");
    }
    let frames = serde_json::to_string(&schemas["WsServerFrame"]).expect("json");
    for frame in ["Event", "ReplayFrame", "ErrorFrame", "SubscribedFrame"] {
        assert!(frames.contains(frame), "{frame}: {frames}");
    }
    let event = serde_json::to_string(&schemas["Event"]).expect("json");
    assert!(
        event.contains("ledger.status") && event.contains("ledger.progress"),
        "{event}"
    );

    let ready = &paths["/readyz"]["get"]["responses"];
    assert!(
        ready["200"].is_object() && ready["503"].is_object(),
        "{ready}"
    );
    assert!(
        paths["/metrics"]["get"]["responses"]["200"]["content"]["text/plain"].is_object(),
        "metrics are text"
    );
}

/// Every `ApiError` a handler or the router can answer, one per code.
fn every_api_error() -> Vec<ApiError> {
    let mut errors = vec![
        ApiError::Validation(InvalidInput::new("period", "bad")),
        ApiError::MalformedBody("bad".into()),
        ApiError::Unauthorized("no token".into()),
        ApiError::Forbidden {
            merchant: ledger::domain::MerchantId::parse("m_acme").expect("merchant"),
            permission: ledger::auth::Permission::Create,
        },
        ApiError::AuditOnly,
        ApiError::EveryMerchantOnly("a schedule of \"*\" needs create on every merchant"),
        ApiError::NotFound("no such ledger"),
        ApiError::MethodNotAllowed,
        ApiError::LedgerExists(LedgerId::from_i64(1)),
        ApiError::NotReady("not yet".into()),
        ApiError::PayloadTooLarge,
        ApiError::UnsupportedMediaType,
        ApiError::IdempotencyMismatch,
        ApiError::TooManyRequests("sockets".into()),
        ApiError::Unavailable("store".into()),
        ApiError::KeyUnavailable("root key local:0badc0de".into()),
        ApiError::Shredded("shredded".into()),
        ApiError::Internal("bug".into()),
    ];
    // Every refusal of the state machine a user's action can meet.
    let mut refusals: Vec<TransitionError> = Vec::new();
    for status in Status::ALL {
        for action in [Action::Retry, Action::Regenerate, Action::Delete] {
            for stage in Stage::ALL {
                if let Err(e) = status.apply(action, *stage)
                    && !refusals.contains(&e)
                {
                    refusals.push(e);
                }
            }
        }
    }
    errors.extend(refusals.into_iter().map(ApiError::Conflict));
    errors.push(enqueue_failed());
    for e in &errors {
        exhaustive(e);
    }
    errors
}

/// Fails to compile when `ApiError` gains a variant: add it to [`every_api_error`].
fn exhaustive(e: &ApiError) {
    match e {
        ApiError::Validation(_)
        | ApiError::MalformedBody(_)
        | ApiError::Unauthorized(_)
        | ApiError::Forbidden { .. }
        | ApiError::AuditOnly
        | ApiError::EveryMerchantOnly(_)
        | ApiError::NotFound(_)
        | ApiError::MethodNotAllowed
        | ApiError::LedgerExists(_)
        | ApiError::Conflict(_)
        | ApiError::NotReady(_)
        | ApiError::PayloadTooLarge
        | ApiError::UnsupportedMediaType
        | ApiError::IdempotencyMismatch
        | ApiError::TooManyRequests(_)
        | ApiError::EnqueueFailed(_)
        | ApiError::Unavailable(_)
        | ApiError::KeyUnavailable(_)
        | ApiError::Shredded(_)
        | ApiError::Internal(_) => {}
    }
}

/// An ENQUEUE_FAILED error, which carries the ledger as stored.
fn enqueue_failed() -> ApiError {
    let now = chrono::Utc::now();
    let view = ledger::api::ledgers::LedgerView {
        id: "1".into(),
        merchant_id: "m_acme".into(),
        ledger_type: LedgerType::Statement,
        period: "2026-10".into(),
        timezone: None,
        format: Format::Csv,
        stage: Stage::Final,
        status: Status::Rejected,
        version: 1,
        attempt_count: 0,
        failure_reason: None,
        file: None,
        created_by: "alice".into(),
        created_at: now,
        updated_at: now,
        started_at: None,
        completed_at: None,
        deleted_at: None,
    };
    ApiError::EnqueueFailed(Box::new(view))
}

#[tokio::test]
async fn every_error_code_of_the_api_is_documented() {
    let app = spawn_app().await;
    let doc = served(&app).await;
    let documented_codes: BTreeSet<String> =
        doc["components"]["schemas"]["ErrorDetail"]["properties"]["code"]["enum"]
            .as_array()
            .expect("the code enum")
            .iter()
            .map(|c| c.as_str().expect("string").to_owned())
            .collect();
    // Per status, the codes the operations document for it.
    let mut by_status: BTreeMap<u16, BTreeSet<String>> = BTreeMap::new();
    for (_, _, op) in operations(&doc) {
        for (status, response) in op["responses"].as_object().expect("responses") {
            let Some(codes) = response.pointer(
                "/content/application~1json/schema/allOf/1/properties/error/properties/code/enum",
            ) else {
                continue;
            };
            for code in codes.as_array().expect("codes") {
                by_status
                    .entry(status.parse().expect("status"))
                    .or_default()
                    .insert(code.as_str().expect("code").to_owned());
            }
        }
    }

    let mut produced = BTreeSet::new();
    let mut errors = every_api_error();
    for error in errors.drain(..) {
        let (status, code) = error.parts();
        let status = status.as_u16();
        produced.insert(code.to_owned());
        assert!(
            documented_codes.contains(code),
            "{code} is not in the Error schema's code enum"
        );
        // The router answers 405 for any path, outside every operation.
        if code == "METHOD_NOT_ALLOWED" {
            continue;
        }
        assert!(
            by_status.get(&status).is_some_and(|c| c.contains(code)),
            "no operation documents {status} {code}: {by_status:?}"
        );
    }
    // And the document names no code the API never answers with.
    assert_eq!(documented_codes, produced);
}

/// `method url` with `token`, a valid create body on `POST /ledgers`.
async fn call(app: &TestApp, token: &str, method: &str, url: &str) -> reqwest::Response {
    let method =
        reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).expect("method");
    let mut request = app.client.request(method.clone(), url).bearer_auth(token);
    if method == reqwest::Method::POST {
        request = request.json(&statement("m_acme", "2026-09"));
    }
    request.send().await.expect("request")
}

/// Status, `Allow` header and JSON body of `r`.
async fn answer(r: reqwest::Response) -> (u16, Option<String>, Value) {
    let status = r.status().as_u16();
    let allow = r
        .headers()
        .get("allow")
        .map(|v| v.to_str().expect("ascii").to_owned());
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (status, allow, body)
}

/// True for the router's own answers (no such route, no such method on a route), as opposed
/// to a handler's.
fn is_router_fallback(status: u16, body: &Value) -> bool {
    status == 405 || (status == 404 && body["error"]["message"] == "no such route")
}

#[tokio::test]
async fn every_documented_operation_is_served_and_no_other_method_is() {
    let app = spawn_app().await;
    let token = app.user("alice", "platform_admin", "*").await;
    let created = app.create_ok(&token, statement("m_acme", "2026-10")).await;
    let id = created["id"].as_str().expect("id").to_owned();
    app.wait_for(&token, &id, "COMPLETED", 30).await;
    let doc = served(&app).await;

    // The control: the router's own 404 is told apart from a handler's by its message.
    let (status, _, body) = answer(call(&app, &token, "get", &app.url("/nope")).await).await;
    assert!(is_router_fallback(status, &body), "{status} {body}");
    let (status, _, body) = answer(
        call(
            &app,
            &token,
            "get",
            &app.url("/ledgers/7000000000000000000"),
        )
        .await,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(
        !is_router_fallback(status, &body),
        "a handler's 404: {body}"
    );

    let mut documented: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, method, _) in operations(&doc) {
        documented
            .entry(path.clone())
            .or_default()
            .insert(method.clone());
        let url = format!("{}{}", app.base, path.replace("{id}", &id));
        let (status, _, body) = answer(call(&app, &token, &method, &url).await).await;
        assert!(
            !is_router_fallback(status, &body),
            "{method} {path} is documented but not served: {status} {body}"
        );
        assert!(status < 500, "{method} {path}: {status} {body}");
    }
    // Every other method on a documented path is the router's 405, whose Allow header lists
    // exactly the documented methods: the router has nothing there the document lacks.
    for (path, methods) in &documented {
        let url = format!("{}{}", app.base, path.replace("{id}", &id));
        for method in METHODS.iter().filter(|m| !methods.contains(**m)) {
            let (status, allow, body) = answer(call(&app, &token, method, &url).await).await;
            assert_eq!(status, 405, "{method} {path}: {body}");
            assert_eq!(
                body["error"]["code"], "METHOD_NOT_ALLOWED",
                "{method} {path}"
            );
            let allow: BTreeSet<String> = allow
                .unwrap_or_else(|| panic!("{method} {path}: no Allow"))
                .split(',')
                .map(|m| m.trim().to_ascii_lowercase())
                .filter(|m| m != "head")
                .collect();
            assert_eq!(&allow, methods, "{method} {path}: Allow");
        }
    }
}

#[tokio::test]
async fn the_cli_prints_the_served_document() {
    let app = spawn_app().await;
    let doc = served(&app).await;
    let output = tokio::task::spawn_blocking(|| {
        ledger_command()
            .arg("openapi")
            .output()
            .expect("run ledger openapi")
    })
    .await
    .expect("join");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(
        printed, doc,
        "ledger openapi prints what the service serves"
    );
}

/// The schemathesis configuration of a run: the bearer token, and the checks that cannot hold
/// for this API by contract, each with the reason.
fn schemathesis_config(token: &str) -> String {
    format!(
        r#"
[auth.openapi.bearer]
bearer = "{token}"

# Schema-valid but refused by rule, each a 400/422 by the spec: a period that has not started
# yet, a day or ISO week the calendar lacks, a zone name the IANA database lacks (JSON Schema
# cannot say "not in the future"), and an Idempotency-Key that schemathesis reuses with
# another body (422 by SPEC §4).
[[operations]]
include-operation-id = "createLedger"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "422"]

# A cursor is opaque: only the `nextCursor` values the API returned are valid; and a period
# filter the calendar lacks (2026-02-30) is a 400.
[[operations]]
include-operation-id = "listLedgers"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409"]

# Schema-valid but refused by rule: a period that has not started yet, a format named
# twice, more than 10,000 merchants, a merchant id list that is not one (400); an
# Idempotency-Key reused with another body (422).
[[operations]]
include-operation-id = "createBatch"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "422"]

# Opaque cursors, as for listLedgers.
[[operations]]
include-operation-id = "listBatches"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409"]

# Schema-valid but refused by rule: a `from` that is not a period of the cadence or has not
# started, a delay of calendar units or above P31D, a format named twice (400).
[[operations]]
include-operation-id = "createSchedule"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409"]

[[operations]]
include-operation-id = "listSchedules"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409"]

[[operations]]
include-operation-id = "listBatchLedgers"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409"]

# Schema-valid but refused by rule: a URL the network rules refuse (http, an address that
# is not public, credentials), a merchant id that is not one (400).
[[operations]]
include-operation-id = "createWebhook"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409"]

# Opaque cursors, as for listLedgers.
[[operations]]
include-operation-id = "listWebhooks"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409"]

[[operations]]
include-operation-id = "listWebhookDeliveries"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409"]
"#
    )
}

/// Runs schemathesis against the app's document with `token`; fails with its report.
async fn schemathesis(app: &TestApp, binary: &str, token: &str, examples: u32, what: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("schemathesis.toml");
    std::fs::write(&config, schemathesis_config(token)).expect("config");
    let run = tokio::process::Command::new(binary)
        .current_dir(dir.path())
        .arg("--config-file")
        .arg(&config)
        .arg("--no-color")
        .args(["run", &app.url("/openapi.json")])
        .args(["--checks", "all"])
        // A deleted ledger is a 404 on every route (tests/it/lifecycle.rs), but the admin
        // run may ask for the audit read (`includeDeleted=true`), which by contract still
        // shows it: "a deleted resource is still available" would flag that.
        .args(["--exclude-checks", "use_after_free"])
        // A WebSocket upgrade is not an HTTP exchange schemathesis can complete (a 101 never
        // ends); tests/it/live.rs drives /ws through real sockets.
        .args(["--exclude-path", "/v1/api/ledger/ws"])
        .args(["--max-examples", &examples.to_string()])
        .args(["--seed", "20261124"])
        // One worker: with two, hypothesis's lambda descriptions race in CPython's `ast.parse`
        // ("AST constructor recursion depth mismatch"), an error of the tool, not the API.
        .args(["--workers", "1"])
        .args(["--request-timeout", "10"])
        .args(["--generation-database", "none"])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .unwrap_or_else(|_| panic!("{what}: schemathesis did not finish within 240 s"))
        .expect("start schemathesis");
    let mut report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Its failures and summary come last; a traceback can be long.
    if report.len() > 30_000 {
        let cut = report.ceil_char_boundary(report.len() - 30_000);
        report = format!("…{}", &report[cut..]);
    }
    assert!(
        output.status.success(),
        "{what}: schemathesis found problems (exit {:?}):\n{report}",
        output.status.code()
    );
    // A run that tested nothing passes too: make sure it tested every operation.
    assert!(
        report.contains("Selected: 29/30") && report.contains("Tested: 29"),
        "{what}: not every operation but /ws was tested:\n{report}"
    );
}

#[tokio::test]
async fn schemathesis_finds_no_5xx_and_no_schema_violation() {
    let binary = std::env::var("LEDGER_TEST_SCHEMATHESIS_BIN").unwrap_or_else(|_| {
        panic!(
            "LEDGER_TEST_SCHEMATHESIS_BIN is not set: run the suite through scripts/run-tests.sh \
             (scripts/services.sh installs schemathesis into its virtualenv and exports it)"
        )
    });
    assert!(
        Path::new(&binary).is_file(),
        "{binary} does not exist: scripts/services.sh installs schemathesis"
    );
    let app = spawn_app().await;
    // Ledgers to find: a completed one (downloads), a pending one, another merchant's.
    let admin = app.user("fuzzer", "platform_admin", "*").await;
    let done = app.create_ok(&admin, statement("m_acme", "2026-10")).await;
    let done = done["id"].as_str().expect("id").to_owned();
    app.create_ok(&admin, statement("m_tokyo", "2026-Q3")).await;
    app.wait_for(&admin, &done, "COMPLETED", 30).await;

    schemathesis(&app, &binary, &admin, 40, "platform_admin on *").await;
    // A caller who may only read and download one merchant: creates are 403s, others' ledgers
    // 404s; still no 5xx and nothing undocumented.
    let viewer = app.user("viewer", "merchant_viewer", "m_acme").await;
    schemathesis(&app, &binary, &viewer, 15, "merchant_viewer on m_acme").await;
}
