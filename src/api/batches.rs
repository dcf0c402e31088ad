//! The batch resource over HTTP (SPEC §11): create, read with live counts, list the caller's,
//! and page a batch's ledgers. Handlers turn raw input into domain values, call the use
//! case ([`Batches`]) and answer views.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, error_responses};
use super::extract::{JsonObject, Path, Query};
use super::ledgers::{encode_cursor, idempotency_key, required, string_field};
use super::params::{paging, snowflake_id};
use super::state::AppState;
use super::views::{LedgerView, view};
use crate::auth::Caller;
use crate::domain::ledger::parse_wire;
use crate::domain::{
    BatchId, Format, InvalidInput, LedgerType, MerchantId, Period, Selection, Status, Timezone,
};
use crate::store::batches::MemberFilter;
use crate::usecases::batches::{BatchCreated, BatchRequest, BatchView};
use crate::views::{BatchBody, batch_body as body};

/// The batch routes, relative to the API's base path; each handler documents itself.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(read))
        .routes(routes!(ledgers))
}

/// The body of `POST /batches`. Unknown fields are refused.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = CreateBatch)]
#[allow(dead_code)] // Documentation only: `create` parses the body field by field for precise errors.
pub struct CreateBatchBody {
    /// The merchants: 1 to 10,000 ids (repeats count once), or `"*"` for every merchant the
    /// source lists that the caller may create for.
    #[schema(value_type = Object, example = json!(["m_acme", "m_globex"]))]
    merchant_ids: Value,
    /// What the documents contain.
    #[serde(rename = "type")]
    ledger_type: LedgerType,
    /// The period, in any of the five forms of `POST /ledgers`.
    #[schema(example = "2026-10")]
    period: String,
    /// One ledger per merchant and format; each format once.
    formats: Vec<Format>,
    /// IANA zone to cut the period in; omitted or `null`: each merchant's own.
    #[schema(example = "Europe/Berlin")]
    timezone: Option<String>,
}

/// The body of a batch with its members counted now.
fn live(v: &BatchView) -> BatchBody {
    let finished = v.tally.finished_at(v.batch.expanding, v.batch.created_at);
    body(&v.batch, v.status(), v.tally.counts, finished)
}

/// A page of batches.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchPage {
    /// At most `limit` batches, newest first.
    pub items: Vec<BatchBody>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[schema(required = true, pattern = "^[A-Za-z0-9_-]+$")]
    pub next_cursor: Option<String>,
}

/// A ledger of a batch.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchLedger {
    /// The ledger.
    #[serde(flatten)]
    pub ledger: LedgerView,
    /// Whether it existed before the batch reached it (counted under `EXISTING`).
    pub existing: bool,
}

/// A page of a batch's ledgers.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchLedgerPage {
    /// At most `limit` ledgers, newest first.
    pub items: Vec<BatchLedger>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[schema(required = true, pattern = "^[A-Za-z0-9_-]+$")]
    pub next_cursor: Option<String>,
}

/// The merchants of a body: `"*"` or an array of ids.
pub(super) fn selection(body: &Map<String, Value>) -> Result<Selection, InvalidInput> {
    const FIELD: &str = "merchantIds";
    match body.get(FIELD) {
        None | Some(Value::Null) => Err(InvalidInput::new(FIELD, "is required")),
        Some(Value::String(s)) if s == "*" => Ok(Selection::All),
        Some(Value::Array(items)) => {
            if items.len() > crate::domain::batch::MAX_EXPLICIT_MERCHANTS {
                return Err(InvalidInput::new(
                    FIELD,
                    format!(
                        "at most {} merchants may be named; use \"*\" for every merchant",
                        crate::domain::batch::MAX_EXPLICIT_MERCHANTS
                    ),
                ));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(s) => MerchantId::parse(s)
                        .map_err(|e| InvalidInput::new(format!("{FIELD}[{i}]"), e.message)),
                    _ => Err(InvalidInput::new(
                        format!("{FIELD}[{i}]"),
                        "expected a merchant id",
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Selection::Only)
        }
        Some(_) => Err(InvalidInput::new(
            FIELD,
            "expected an array of merchant ids, or \"*\"",
        )),
    }
}

/// The formats of a body.
pub(super) fn formats(body: &Map<String, Value>) -> Result<Vec<Format>, InvalidInput> {
    match body.get("formats") {
        None | Some(Value::Null) => Err(InvalidInput::new("formats", "is required")),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let field = format!("formats[{i}]");
                match item {
                    Value::String(s) => parse_wire(&field, s, Format::ALL, Format::parse),
                    _ => Err(InvalidInput::new(field, "expected a format")),
                }
            })
            .collect(),
        Some(_) => Err(InvalidInput::new("formats", "expected an array of formats")),
    }
}

/// The batch request of a body, validated field by field.
fn batch_request(body: &Map<String, Value>) -> Result<BatchRequest, InvalidInput> {
    const FIELDS: [&str; 5] = ["merchantIds", "type", "period", "formats", "timezone"];
    if let Some(unknown) = body.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(InvalidInput::new(unknown.clone(), "unknown field"));
    }
    let merchants = selection(body)?;
    let ledger_type = parse_wire(
        "type",
        required(body, "type")?,
        LedgerType::ALL,
        LedgerType::parse,
    )?;
    let period = Period::parse(required(body, "period")?)?;
    let formats = formats(body)?;
    let timezone = string_field(body, "timezone")?
        .map(Timezone::parse)
        .transpose()?;
    BatchRequest::new(
        merchants,
        ledger_type,
        period,
        formats,
        timezone,
        Utc::now(),
    )
}

/// The batch id of a path; a well-formed id no batch has is a 404.
fn batch_id(raw: &str) -> Result<BatchId, ApiError> {
    snowflake_id(raw, "no such batch")
}

/// The `{id}` of a batch's path.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
struct BatchIdPath {
    /// The batch id.
    #[param(pattern = "^[1-9][0-9]{0,18}$", example = "383687767063789568")]
    id: String,
}

error_responses! {
    /// What creating a batch can answer besides 202.
    CreateBatchErrors [
        Validation, Unauthorized, Forbidden, PayloadTooLarge, UnsupportedMediaType,
        IdempotencyKeyReused, Internal, ServiceUnavailable,
    ]
}

/// Ask for the ledgers of many merchants and formats at once.
///
/// One ledger per (merchant, format) of `type` and `period`. The batch is stored and
/// answered at once; the worker role adds its members in the background (`expanding`), so
/// a batch of every merchant (`"*"`) never waits for the source's listing. A ledger that
/// already exists joins the batch and is counted under `EXISTING` instead of failing it.
/// Naming a merchant the caller may not create for is a 403 naming it; with `"*"`, the
/// merchants the caller may not create for are left out (`skipped`). With an
/// `Idempotency-Key`, the same key and body answer the same batch (with
/// `Idempotent-Replayed: true`); the same key with another body is a 422. Progress:
/// `GET /batches/{id}` and the WebSocket's `batch.progress` events.
#[utoipa::path(
    post,
    path = "/batches",
    tag = "batches",
    operation_id = "createBatch",
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Makes the request safe to repeat: 1 to 255 visible ASCII characters, scoped to the caller, remembered for 24 hours", pattern = "^[!-~]{1,255}$", example = "close-2026-10"),
    ),
    request_body(content = CreateBatchBody, content_type = "application/json", description = "What to generate; at most 1 MiB"),
    responses(
        (
            status = 202,
            description = "Stored; members are added in the background",
            body = BatchBody,
            headers(
                ("Location" = String, description = "The batch's URL"),
                ("Idempotent-Replayed" = String, description = "`true` when this answers an earlier request with the same key"),
            ),
            links(
                ("GetBatch" = (operation_id = "getBatch", parameters(("id" = "$response.body#/id")))),
                ("ListBatchLedgers" = (operation_id = "listBatchLedgers", parameters(("id" = "$response.body#/id")))),
            ),
        ),
        CreateBatchErrors,
    ),
    security(("bearer" = [])),
)]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let request = batch_request(&body)?;
    let key = idempotency_key(&headers)?;
    let (view, replayed) = match state.batches().create(&caller, request, key).await? {
        BatchCreated::New(v) => (v, false),
        BatchCreated::Replayed(v) => (v, true),
    };
    let mut response = (StatusCode::ACCEPTED, Json(live(&view))).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("{}/batches/{}", super::BASE, view.batch.id)) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

error_responses! {
    /// What reading a batch (or its ledgers) can answer besides 200.
    ReadBatchErrors [Validation, Unauthorized, NotFound, Internal, ServiceUnavailable]
}

/// One batch, its members counted now.
///
/// Visible to its creator and to callers who may read every merchant; to anyone else it is
/// a 404 like a missing one.
#[utoipa::path(
    get,
    path = "/batches/{id}",
    tag = "batches",
    operation_id = "getBatch",
    params(BatchIdPath),
    responses(
        (status = 200, description = "The batch", body = BatchBody),
        ReadBatchErrors,
    ),
    security(("bearer" = [])),
)]
async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): Path<BatchIdPath>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<BatchBody>, ApiError> {
    if let Some(unknown) = params.keys().next() {
        return Err(InvalidInput::new(unknown.clone(), "unknown query parameter").into());
    }
    let view = state.batches().get(&caller, batch_id(&path.id)?).await?;
    Ok(Json(live(&view)))
}

error_responses! {
    /// What listing batches can answer besides 200.
    ListBatchErrors [Validation, Unauthorized, Internal, ServiceUnavailable]
}

/// The caller's batches, newest first.
///
/// Counts and status as last published (at most about a second behind while a batch
/// runs); `GET /batches/{id}` counts them now.
#[utoipa::path(
    get,
    path = "/batches",
    tag = "batches",
    operation_id = "listBatches",
    params(
        ("limit" = Option<u32>, Query, description = "Page size, 1 to 200 (default 50)", minimum = 1, maximum = 200),
        ("cursor" = Option<String>, Query, description = "The `nextCursor` of the previous page", pattern = "^[A-Za-z0-9_-]+$"),
    ),
    responses(
        (status = 200, description = "A page of batches", body = BatchPage),
        ListBatchErrors,
    ),
    security(("bearer" = [])),
)]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<BatchPage>, ApiError> {
    let (limit, before) = paging::<BatchId>(&params, &[])?;
    let page = state.batches().list(&caller, before, limit).await?;
    Ok(Json(BatchPage {
        items: page
            .items
            .iter()
            .map(|b| body(b, b.status, b.counts, b.finished_at))
            .collect(),
        next_cursor: page.more_after.map(encode_cursor),
    }))
}

/// A batch's ledgers, newest first.
///
/// `status` narrows to the members the batch made that are in that status, or with
/// `EXISTING` to those that existed before it, as `counts` counts them. Ledgers of a
/// merchant the caller may not read are left out.
#[utoipa::path(
    get,
    path = "/batches/{id}/ledgers",
    tag = "batches",
    operation_id = "listBatchLedgers",
    params(
        BatchIdPath,
        ("status" = Option<String>, Query, description = "PENDING, PROCESSING, COMPLETED, REJECTED or EXISTING", pattern = "^(PENDING|PROCESSING|COMPLETED|REJECTED|EXISTING)$"),
        ("limit" = Option<u32>, Query, description = "Page size, 1 to 200 (default 50)", minimum = 1, maximum = 200),
        ("cursor" = Option<String>, Query, description = "The `nextCursor` of the previous page", pattern = "^[A-Za-z0-9_-]+$"),
    ),
    responses(
        (status = 200, description = "A page of the batch's ledgers", body = BatchLedgerPage),
        ReadBatchErrors,
    ),
    security(("bearer" = [])),
)]
async fn ledgers(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): Path<BatchIdPath>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<BatchLedgerPage>, ApiError> {
    let id = batch_id(&path.id)?;
    let (limit, before) = paging(&params, &["status"])?;
    let filter = match params.get("status").map(String::as_str) {
        None => None,
        Some("EXISTING") => Some(MemberFilter::Existing),
        Some(raw) => Some(MemberFilter::Status(Status::parse(raw).ok_or_else(
            || {
                InvalidInput::new(
                    "status",
                    "expected PENDING, PROCESSING, COMPLETED, REJECTED or EXISTING",
                )
            },
        )?)),
    };
    let page = state
        .batches()
        .members(&caller, id, filter, before, limit)
        .await?;
    Ok(Json(BatchLedgerPage {
        items: page
            .items
            .iter()
            .map(|m| BatchLedger {
                ledger: view(&m.ledger),
                existing: m.existing,
            })
            .collect(),
        next_cursor: page.more_after.map(encode_cursor),
    }))
}
