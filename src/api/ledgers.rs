//! The ledger resource over HTTP: create, list, read, timeline, retry, regenerate, delete
//! (the download has its own module). Every handler authenticates ([`Caller`]), turns raw
//! input into domain values, calls the use case ([`Ledgers`]) and answers its result as a
//! view.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, error_responses};
use super::extract::{JsonObject, Path, Query};
use super::params::{LedgerIdPath, ledger_id, page_limit};
use super::state::AppState;
pub use super::views::{FailureReasonView, LedgerPage, LedgerView, Timeline, view};
use crate::auth::{Caller, Permission};
use crate::domain::ledger::parse_wire;
use crate::domain::{
    Format, InvalidInput, Ledger, LedgerType, MerchantId, Period, Status, Timezone,
};
use crate::usecases::ledgers::{
    AuditRead, CreateRequest, Created, Idempotency, ListFilter, Replies, Requeue,
};
use crate::usecases::{LedgerError, Ledgers};

/// The ledger routes, relative to the API's base path; each handler documents itself.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(read, delete))
        .routes(routes!(events))
        .routes(routes!(retry))
        .routes(routes!(regenerate))
}

/// The body of `POST /ledgers`. Unknown fields are refused.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = CreateLedger)]
#[allow(dead_code)] // Documentation only: `create` parses the body field by field for precise errors.
pub struct CreateLedgerBody {
    /// The merchant.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$", example = "m_acme")]
    merchant_id: String,
    /// What the document contains.
    #[serde(rename = "type")]
    ledger_type: LedgerType,
    /// `YYYY`, `YYYY-Qn`, `YYYY-MM`, `YYYY-Www` (ISO week) or `YYYY-MM-DD`, a year from 1970;
    /// a period that has not started yet, a day the calendar lacks or a week the ISO year
    /// lacks is a 400.
    #[schema(
        pattern = "^(19[7-9][0-9]|[2-9][0-9]{3})(-[Qq][1-4]|-[Ww](0[1-9]|[1-4][0-9]|5[0-3])|-(0[1-9]|1[0-2])(-(0[1-9]|[12][0-9]|3[01]))?)?$",
        example = "2026-10"
    )]
    period: String,
    /// The document format.
    format: Format,
    /// IANA zone to cut the period in; omitted or `null`: the merchant's own (else UTC).
    #[schema(example = "Europe/Berlin")]
    timezone: Option<String>,
}

fn accepted(l: &Ledger) -> Response {
    let mut response = (StatusCode::ACCEPTED, Json(view(l))).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("{}/ledgers/{}", super::BASE, l.id)) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

/// A use case's answer to a change that queues the ledger: 202 with the ledger, or its
/// error (a 503 ENQUEUE_FAILED carries the ledger as stored).
fn queued(result: Result<Ledger, LedgerError>) -> Result<Response, ApiError> {
    Ok(accepted(&result?))
}

pub(super) fn string_field<'a>(
    body: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, InvalidInput> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(InvalidInput::new(name, "expected a string")),
    }
}

pub(super) fn required<'a>(
    body: &'a Map<String, Value>,
    name: &str,
) -> Result<&'a str, InvalidInput> {
    string_field(body, name)?.ok_or_else(|| InvalidInput::new(name, "is required"))
}

/// The create request of a body, validated field by field for precise errors.
fn create_request(body: &Map<String, Value>) -> Result<CreateRequest, InvalidInput> {
    const FIELDS: [&str; 5] = ["merchantId", "type", "period", "format", "timezone"];
    if let Some(unknown) = body.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(InvalidInput::new(unknown.clone(), "unknown field"));
    }
    let merchant_id = MerchantId::parse(required(body, "merchantId")?)?;
    let ledger_type = parse_wire(
        "type",
        required(body, "type")?,
        LedgerType::ALL,
        LedgerType::parse,
    )?;
    let format = parse_wire(
        "format",
        required(body, "format")?,
        Format::ALL,
        Format::parse,
    )?;
    let period = Period::parse(required(body, "period")?)?;
    let timezone = string_field(body, "timezone")?
        .map(Timezone::parse)
        .transpose()?;
    CreateRequest::new(
        merchant_id,
        ledger_type,
        period,
        format,
        timezone,
        Utc::now(),
    )
}

pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(raw) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = raw
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            InvalidInput::new(
                "Idempotency-Key",
                "expected 1 to 255 visible ASCII characters",
            )
        })?;
    Ok(Some(key.to_owned()))
}

/// How the API's replies to a create are remembered under an idempotency key: the JSON
/// bodies it answers, so a replay is byte for byte the first answer.
struct HttpReplies;

impl Replies for HttpReplies {
    fn accepted(&self, ledger: &Ledger) -> Result<(u16, String), LedgerError> {
        let body = serde_json::to_string(&view(ledger))
            .map_err(|e| LedgerError::Internal(e.to_string()))?;
        Ok((StatusCode::ACCEPTED.as_u16(), body))
    }

    fn enqueue_failed(&self, ledger: &Ledger) -> (u16, String) {
        let error = ApiError::EnqueueFailed(Box::new(view(ledger)));
        (error.code().status().as_u16(), error.body().to_string())
    }
}

error_responses! {
    /// What creating a ledger can answer besides 202.
    CreateErrors [
        Validation, Unauthorized, Forbidden, LedgerExists, PayloadTooLarge,
        UnsupportedMediaType, IdempotencyKeyReused, Internal, EnqueueFailed, ServiceUnavailable,
    ]
}

/// Create a ledger and queue its generation.
///
/// At most one non-deleted ledger exists per merchant, type, period, requested timezone and
/// format: another is a 409 LEDGER_EXISTS naming it (`ledgerId`). With an `Idempotency-Key`,
/// the same key and body replay the first response (with `Idempotent-Replayed: true`); the
/// same key with another body is a 422. When the queue refuses the job, the ledger is kept
/// as REJECTED / ENQUEUE_FAILED (in the 503 body's `ledger`) and `retry` works.
#[utoipa::path(
    post,
    path = "/ledgers",
    tag = "ledgers",
    operation_id = "createLedger",
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Makes the request safe to repeat: 1 to 255 visible ASCII characters, scoped to the caller, remembered for 24 hours", pattern = "^[!-~]{1,255}$", example = "8f14e45f-ceea-467a-9575-6f2b1c3d4e5f"),
    ),
    request_body(content = CreateLedgerBody, content_type = "application/json", description = "What to generate; at most 1 MiB"),
    responses(
        (
            status = 202,
            description = "Stored and queued: the ledger, PENDING (or the replay of the first response to this Idempotency-Key)",
            body = LedgerView,
            headers(
                ("Location" = String, description = "The ledger's URL"),
                ("Idempotent-Replayed" = String, description = "`true` when this is the replay of an earlier response"),
            ),
            links(
                ("GetLedger" = (operation_id = "getLedger", parameters(("id" = "$response.body#/id")))),
                ("GetLedgerEvents" = (operation_id = "getLedgerEvents", parameters(("id" = "$response.body#/id")))),
                ("DownloadLedger" = (operation_id = "downloadLedger", parameters(("id" = "$response.body#/id")))),
                ("RetryLedger" = (operation_id = "retryLedger", parameters(("id" = "$response.body#/id")))),
                ("RegenerateLedger" = (operation_id = "regenerateLedger", parameters(("id" = "$response.body#/id")))),
                ("DeleteLedger" = (operation_id = "deleteLedger", parameters(("id" = "$response.body#/id")))),
            ),
        ),
        CreateErrors,
    ),
    security(("bearer" = [])),
)]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let ledgers = state.ledgers();
    let merchant_id = MerchantId::parse(required(&body, "merchantId")?)?;
    let grant = ledgers.authorize_create(&caller, &merchant_id).await?;
    let request = create_request(&body)?;
    let idempotency = idempotency_key(&headers)?.map(|key| Idempotency {
        key,
        replies: &HttpReplies,
    });
    match ledgers.create(grant, request, idempotency).await? {
        Created::Queued(ledger) => Ok(accepted(&ledger)),
        Created::Replayed { status, body } => {
            let status =
                StatusCode::from_u16(status).map_err(|e| ApiError::Internal(e.to_string()))?;
            let body: Value =
                serde_json::from_str(&body).map_err(|e| ApiError::Internal(e.to_string()))?;
            let mut response = (status, Json(body)).into_response();
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            Ok(response)
        }
    }
}

error_responses! {
    /// What reading one ledger (or its timeline) can answer besides 200; 403 only for an
    /// audit read (`includeDeleted=true`) by a caller who is not platform_admin.
    ReadErrors [Validation, Unauthorized, Forbidden, NotFound, Internal, ServiceUnavailable]
}

/// One ledger.
///
/// An id the caller may not read is a 404 like a missing one: existence is not leaked. A
/// deleted ledger is a 404 too, except for an audit read (`includeDeleted=true`) by a
/// caller who may delete every merchant's ledgers (`platform_admin`).
#[utoipa::path(
    get,
    path = "/ledgers/{id}",
    tag = "ledgers",
    operation_id = "getLedger",
    params(
        LedgerIdPath,
        ("includeDeleted" = Option<bool>, Query, description = "Audit read: also a deleted ledger (platform_admin only; anyone else gets 403)"),
    ),
    responses(
        (status = 200, description = "The ledger", body = LedgerView),
        ReadErrors,
    ),
    security(("bearer" = [])),
)]
async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): Path<LedgerIdPath>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<LedgerView>, ApiError> {
    let ledgers = state.ledgers();
    let audit = audit_read(&ledgers, &caller, &params).await?;
    let ledger = ledgers
        .load(&caller, ledger_id(&path.id)?, Permission::Read, audit)
        .await?;
    Ok(Json(view(&ledger)))
}

/// The audit read (`includeDeleted=true`) a request asks for, which only a caller who may
/// delete every merchant's ledgers may make; other query parameters are refused.
async fn audit_read(
    ledgers: &Ledgers,
    caller: &Caller,
    params: &HashMap<String, String>,
) -> Result<Option<AuditRead>, ApiError> {
    if let Some(unknown) = params.keys().find(|k| k.as_str() != "includeDeleted") {
        return Err(InvalidInput::new(unknown.clone(), "unknown query parameter").into());
    }
    match params.get("includeDeleted").map(String::as_str) {
        None | Some("false") => Ok(None),
        Some("true") => Ok(Some(ledgers.audit(caller).await?)),
        Some(_) => Err(InvalidInput::new("includeDeleted", "expected true or false").into()),
    }
}

/// A ledger's timeline, oldest first.
///
/// One item per status change `{at, attempt, status, errorCode?}` and one per pipeline phase
/// `{at, attempt, phase, detail?}`. Phases overlap: entries stream from the source straight
/// into the renderer, so fetching and rendering run together and `GENERATE_START` comes
/// before `FETCH_DONE`. `FETCH_START`: the source is asked for the merchant. `GENERATE_START`
/// (`detail`: the zone the period is cut in): the merchant is read, and rendering, encryption
/// and upload start, fed entry by entry as the source sends them. `FETCH_DONE` (`detail`: how
/// many entries): every entry was read and validated. `GENERATE_DONE` (`detail`: the size):
/// the document is complete; its control totals are checked against the source next.
/// `UPLOAD_DONE`: the encrypted file is stored. Then the status change to COMPLETED — or to
/// REJECTED, with its `errorCode`, at whichever phase failed.
#[utoipa::path(
    get,
    path = "/ledgers/{id}/events",
    tag = "ledgers",
    operation_id = "getLedgerEvents",
    params(
        LedgerIdPath,
        ("includeDeleted" = Option<bool>, Query, description = "Audit read: also a deleted ledger's timeline (platform_admin only; anyone else gets 403)"),
    ),
    responses(
        (status = 200, description = "The timeline", body = Timeline),
        ReadErrors,
    ),
    security(("bearer" = [])),
)]
async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): Path<LedgerIdPath>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Timeline>, ApiError> {
    let ledgers = state.ledgers();
    let audit = audit_read(&ledgers, &caller, &params).await?;
    let items = ledgers
        .timeline(&caller, ledger_id(&path.id)?, audit)
        .await?;
    Ok(Json(Timeline { items }))
}

/// The opaque `nextCursor` of a page that ends at `id` (a ledger's or a batch's).
pub(super) fn encode_cursor(id: impl std::fmt::Display) -> String {
    URL_SAFE_NO_PAD.encode(format!("v1:{id}"))
}

/// The id an [`encode_cursor`] cursor ends at.
pub(super) fn decode_cursor<T: std::str::FromStr>(raw: &str) -> Result<T, InvalidInput> {
    let bad = || InvalidInput::new("cursor", "not a cursor returned by this API");
    let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    text.strip_prefix("v1:")
        .ok_or_else(bad)?
        .parse()
        .map_err(|_| bad())
}

error_responses! {
    /// What listing ledgers can answer besides 200.
    ListErrors [Validation, Unauthorized, Forbidden, Internal, ServiceUnavailable]
}

/// List ledgers, newest first.
///
/// Without `merchantId`, the ledgers of every merchant the caller may read; naming a merchant
/// the caller may not read is a 403. Deleted ledgers are left out, except for an audit read
/// (`includeDeleted=true`) by platform_admin. Unknown
/// query parameters are a 400.
#[utoipa::path(
    get,
    path = "/ledgers",
    tag = "ledgers",
    operation_id = "listLedgers",
    params(
        ("merchantId" = Option<String>, Query, description = "Only this merchant's ledgers", pattern = "^[A-Za-z0-9_-]{1,64}$", example = "m_acme"),
        ("status" = Option<Status>, Query, description = "Only ledgers in this status"),
        ("type" = Option<LedgerType>, Query, description = "Only ledgers of this type"),
        ("period" = Option<String>, Query, description = "Only ledgers of this period (any of the five forms; compared in canonical form)", pattern = "^(19[7-9][0-9]|[2-9][0-9]{3})(-[Qq][1-4]|-[Ww](0[1-9]|[1-4][0-9]|5[0-3])|-(0[1-9]|1[0-2])(-(0[1-9]|[12][0-9]|3[01]))?)?$", example = "2026-10"),
        ("limit" = Option<u32>, Query, description = "Page size, 1 to 200 (default 50)", minimum = 1, maximum = 200),
        ("cursor" = Option<String>, Query, description = "The `nextCursor` of the previous page", pattern = "^[A-Za-z0-9_-]+$"),
        ("includeDeleted" = Option<bool>, Query, description = "Audit read: deleted ledgers too, with `deletedAt` (platform_admin only; anyone else gets 403)"),
    ),
    responses(
        (status = 200, description = "A page of ledgers", body = LedgerPage),
        ListErrors,
    ),
    security(("bearer" = [])),
)]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<LedgerPage>, ApiError> {
    const PARAMS: [&str; 6] = ["merchantId", "status", "type", "period", "limit", "cursor"];
    let ledgers = state.ledgers();
    let (audit, filters): (HashMap<String, String>, HashMap<String, String>) =
        params.into_iter().partition(|(k, _)| k == "includeDeleted");
    let params = filters;
    if let Some(unknown) = params.keys().find(|k| !PARAMS.contains(&k.as_str())) {
        return Err(InvalidInput::new(unknown.clone(), "unknown query parameter").into());
    }
    let audit = audit_read(&ledgers, &caller, &audit).await?;
    let get = |k: &str| params.get(k).map(String::as_str);
    let status = get("status")
        .map(|s| parse_wire("status", s, Status::ALL, Status::parse))
        .transpose()?;
    let ledger_type = get("type")
        .map(|s| parse_wire("type", s, LedgerType::ALL, LedgerType::parse))
        .transpose()?;
    let period = get("period").map(Period::parse).transpose()?;
    let limit = page_limit(&params)?;
    let before = get("cursor").map(decode_cursor).transpose()?;
    let merchant = get("merchantId").map(MerchantId::parse).transpose()?;
    let filter = ListFilter {
        merchant,
        status,
        ledger_type,
        period,
        before,
        limit,
    };
    let page = ledgers.list(&caller, filter, audit).await?;
    Ok(Json(LedgerPage {
        items: page.items.iter().map(view).collect(),
        next_cursor: page.more_after.map(encode_cursor),
    }))
}

/// Retries or regenerates a ledger: the one handler of both routes.
async fn requeue(
    state: AppState,
    caller: Caller,
    id: String,
    requeue: Requeue,
) -> Result<Response, ApiError> {
    let id = ledger_id(&id)?;
    queued(state.ledgers().requeue(&caller, id, requeue).await)
}

error_responses! {
    /// What a retry can answer besides 202.
    RetryErrors [
        Validation, Unauthorized, NotFound, JobInProgress, InvalidState, Internal,
        EnqueueFailed, ServiceUnavailable,
    ]
}

/// Retry a REJECTED ledger: back to PENDING and queued again.
///
/// PENDING or PROCESSING is a 409 JOB_IN_PROGRESS, COMPLETED a 409 INVALID_STATE (use
/// regenerate); a deleted ledger is a 404.
#[utoipa::path(
    post,
    path = "/ledgers/{id}/retry",
    tag = "ledgers",
    operation_id = "retryLedger",
    params(LedgerIdPath),
    responses(
        (status = 202, description = "PENDING again, queued", body = LedgerView, headers(("Location" = String, description = "The ledger's URL"))),
        RetryErrors,
    ),
    security(("bearer" = [])),
)]
async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): Path<LedgerIdPath>,
) -> Result<Response, ApiError> {
    requeue(state, caller, path.id, Requeue::Retry).await
}

error_responses! {
    /// What a regenerate can answer besides 202.
    RegenerateErrors [
        Validation, Unauthorized, NotFound, JobInProgress, InvalidState, LedgerFinal, Internal,
        EnqueueFailed, ServiceUnavailable,
    ]
}

/// Generate a new version of a COMPLETED DRAFT ledger.
///
/// The version goes up by one and the ledger is PENDING and queued; every version's file is
/// kept. FINAL is a 409 LEDGER_FINAL, PENDING or PROCESSING a 409 JOB_IN_PROGRESS, REJECTED a
/// 409 INVALID_STATE (use retry).
#[utoipa::path(
    post,
    path = "/ledgers/{id}/regenerate",
    tag = "ledgers",
    operation_id = "regenerateLedger",
    params(LedgerIdPath),
    responses(
        (status = 202, description = "The new version, PENDING, queued", body = LedgerView, headers(("Location" = String, description = "The ledger's URL"))),
        RegenerateErrors,
    ),
    security(("bearer" = [])),
)]
async fn regenerate(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): Path<LedgerIdPath>,
) -> Result<Response, ApiError> {
    requeue(state, caller, path.id, Requeue::Regenerate).await
}

error_responses! {
    /// What a delete can answer besides 204.
    DeleteErrors [Validation, Unauthorized, NotFound, JobInProgress, Internal, ServiceUnavailable]
}

/// Delete a ledger (softly).
///
/// Sets `deletedAt`; the files stay. Afterwards every route of the id is a 404 (a second
/// DELETE too), except an audit read by platform_admin (`includeDeleted=true`). PENDING or
/// PROCESSING is a 409 JOB_IN_PROGRESS.
#[utoipa::path(
    delete,
    path = "/ledgers/{id}",
    tag = "ledgers",
    operation_id = "deleteLedger",
    params(LedgerIdPath),
    responses(
        (status = 204, description = "Deleted"),
        DeleteErrors,
    ),
    security(("bearer" = [])),
)]
async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): Path<LedgerIdPath>,
) -> Result<StatusCode, ApiError> {
    state
        .ledgers()
        .delete(&caller, ledger_id(&path.id)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
