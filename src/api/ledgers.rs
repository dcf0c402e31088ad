//! The ledger resource: create, list, read, timeline, download, retry, regenerate, delete.
//! Every handler authenticates ([`Caller`]), turns raw input into domain values, and calls
//! `assert_merchant_access` before it reads or changes a merchant's data.

use std::collections::HashMap;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::download::Decrypting;
use super::extract::{JsonObject, Path, Query};
use super::openapi::error_responses;
use super::{ApiError, AppState};
use crate::auth::{Caller, MerchantScope, Permission, assert_merchant_access};
use crate::crypto::{Binding, Decryptor};
use crate::domain::ledger::{parse_wire, stage_at};
use crate::domain::{
    Action, FailureReason, Format, InvalidInput, Ledger, LedgerId, LedgerType, MerchantId, Period,
    Stage, Status, Timezone,
};
use crate::queue::JobMessage;
use crate::store::{IdempotencyRecord, InsertOutcome, ListQuery, NewLedger, UserChange};

/// Largest page of a list.
const MAX_LIMIT: u32 = 200;
/// Page size when none is asked for.
const DEFAULT_LIMIT: u32 = 50;

/// The ledger routes, relative to the API's base path; each handler documents itself.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(read, delete))
        .routes(routes!(events))
        .routes(routes!(download))
        .routes(routes!(retry))
        .routes(routes!(regenerate))
}

/// An instant as the API writes it: RFC 3339 UTC with milliseconds.
fn millis<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// [`millis`] or `null`.
fn millis_or_null<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => millis(t, s),
        None => s.serialize_none(),
    }
}

/// The JSON view of a ledger (docs/data-model.md).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Ledger)]
pub struct LedgerView {
    /// Snowflake id, a decimal string.
    #[schema(pattern = "^[1-9][0-9]{0,18}$", example = "383687767063789568")]
    pub id: String,
    /// The merchant.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$", example = "m_acme")]
    pub merchant_id: String,
    /// What the document contains.
    #[serde(rename = "type")]
    pub ledger_type: LedgerType,
    /// The period in canonical form (`2026`, `2026-Q3`, `2026-10`, `2026-W40`, `2026-10-15`).
    #[schema(example = "2026-10")]
    pub period: String,
    /// The IANA zone the period is cut in. A requested zone is shown from the start. Without
    /// one, the merchant's own zone is used, which only the source knows: it is `null` (also
    /// in the 202 of the create) until a worker has generated the ledger, since the API never
    /// waits for the source.
    #[schema(required = true, example = "Europe/Berlin")]
    pub timezone: Option<String>,
    /// The document format.
    pub format: Format,
    /// DRAFT while the period had not ended at generation time, FINAL after.
    pub stage: Stage,
    /// Where the job is.
    pub status: Status,
    /// 1, +1 on every regenerate.
    #[schema(minimum = 1)]
    pub version: u32,
    /// Lifetime count of processing attempts.
    pub attempt_count: u32,
    /// The last failure, if any.
    #[schema(required = true)]
    pub failure_reason: Option<FailureReasonView>,
    /// The newest completed file, if any.
    #[schema(required = true)]
    pub file: Option<crate::domain::FileInfo>,
    /// The subject (`sub`) that created the ledger.
    pub created_by: String,
    /// When it was created.
    #[serde(serialize_with = "millis")]
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    #[serde(serialize_with = "millis")]
    pub updated_at: DateTime<Utc>,
    /// When the last attempt was claimed.
    #[serde(serialize_with = "millis_or_null")]
    #[schema(required = true)]
    pub started_at: Option<DateTime<Utc>>,
    /// When it last completed.
    #[serde(serialize_with = "millis_or_null")]
    #[schema(required = true)]
    pub completed_at: Option<DateTime<Utc>>,
    /// When it was (softly) deleted.
    #[serde(serialize_with = "millis_or_null")]
    #[schema(required = true)]
    pub deleted_at: Option<DateTime<Utc>>,
}

/// Why the last attempt failed.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = FailureReason)]
pub struct FailureReasonView {
    /// `FETCH_DATA_ERROR`, `JOB_EXECUTION_FAILED` or `ENQUEUE_FAILED`.
    #[schema(example = "FETCH_DATA_ERROR")]
    pub error_code: String,
    /// Readable detail, e.g. the path of a bad field in the source.
    pub message: String,
    /// Whether a retry may succeed without a change of input.
    pub retryable: bool,
    /// When it failed.
    #[serde(serialize_with = "millis")]
    pub at: DateTime<Utc>,
}

/// A page of ledgers, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = LedgerPage)]
pub struct LedgerPage {
    /// At most `limit` ledgers.
    pub items: Vec<LedgerView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[schema(required = true, pattern = "^[A-Za-z0-9_-]+$")]
    pub next_cursor: Option<String>,
}

/// A ledger's timeline, oldest first: one item per status change and per pipeline phase.
#[derive(Debug, Serialize, ToSchema)]
pub struct Timeline {
    /// The items.
    pub items: Vec<crate::domain::TimelineItem>,
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

/// The JSON view of a ledger (SPEC §3).
pub fn view(l: &Ledger) -> LedgerView {
    LedgerView {
        id: l.id.to_string(),
        merchant_id: l.merchant_id.to_string(),
        ledger_type: l.ledger_type,
        period: l.period.to_string(),
        timezone: l
            .timezone
            .or(l.requested_timezone)
            .map(|t| t.name().to_owned()),
        format: l.format,
        stage: l.stage,
        status: l.status,
        version: l.version,
        attempt_count: l.attempt_count,
        failure_reason: l.failure_reason.as_ref().map(|f| FailureReasonView {
            error_code: f.error_code.clone(),
            message: f.message.clone(),
            retryable: f.retryable,
            at: f.at,
        }),
        file: l.file.clone(),
        created_by: l.created_by.clone(),
        created_at: l.created_at,
        updated_at: l.updated_at,
        started_at: l.started_at,
        completed_at: l.completed_at,
        deleted_at: l.deleted_at,
    }
}

fn accepted(l: &Ledger) -> Response {
    let mut response = (StatusCode::ACCEPTED, Json(view(l))).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("{}/ledgers/{}", super::BASE, l.id)) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

fn string_field<'a>(
    body: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, InvalidInput> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(InvalidInput::new(name, "expected a string")),
    }
}

fn required<'a>(body: &'a Map<String, Value>, name: &str) -> Result<&'a str, InvalidInput> {
    string_field(body, name)?.ok_or_else(|| InvalidInput::new(name, "is required"))
}

/// A validated create request.
struct CreateRequest {
    merchant_id: MerchantId,
    ledger_type: LedgerType,
    period: Period,
    format: Format,
    timezone: Option<Timezone>,
}

impl CreateRequest {
    fn parse(body: &Map<String, Value>, now: DateTime<Utc>) -> Result<Self, InvalidInput> {
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
        // Without a zone the merchant's is not known yet: judge by the earliest zone on
        // Earth, so no period that has started anywhere is refused.
        let earliest = Timezone(chrono_tz::Pacific::Kiritimati);
        if !period.has_started(timezone.unwrap_or(earliest), now) {
            return Err(InvalidInput::new(
                "period",
                "the period has not started yet",
            ));
        }
        Ok(Self {
            merchant_id,
            ledger_type,
            period,
            format,
            timezone,
        })
    }

    /// A hash of the normalised request: the same request in other whitespace or field
    /// order is the same request.
    fn fingerprint(&self) -> String {
        let canonical = format!(
            "{}|{}|{}|{}|{}",
            self.merchant_id,
            self.ledger_type,
            self.period,
            self.format,
            self.timezone.map(|t| t.name()).unwrap_or("")
        );
        hex::encode(Sha256::digest(canonical.as_bytes()))
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
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

error_responses! {
    /// What creating a ledger can answer besides 202.
    CreateErrors {
        400 => ["VALIDATION_ERROR"],
        401 => ["UNAUTHORIZED"],
        403 => ["FORBIDDEN"],
        409 => ["LEDGER_EXISTS"],
        413 => ["PAYLOAD_TOO_LARGE"],
        415 => ["UNSUPPORTED_MEDIA_TYPE"],
        422 => ["IDEMPOTENCY_KEY_REUSED"],
        500 => ["INTERNAL"],
        503 => ["ENQUEUE_FAILED", "SERVICE_UNAVAILABLE"],
    }
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
    let now = Utc::now();
    let merchant_id = MerchantId::parse(required(&body, "merchantId")?)?;
    assert_merchant_access(&state.authz, &caller, &merchant_id, Permission::Create).await?;
    let request = CreateRequest::parse(&body, now)?;
    let key = idempotency_key(&headers)?;

    for _ in 0..8 {
        let new = NewLedger {
            id: state.ids.next_id(),
            merchant_id: request.merchant_id.clone(),
            ledger_type: request.ledger_type,
            period: request.period,
            requested_timezone: request.timezone,
            format: request.format,
            stage: stage_at(
                &request.period,
                request.timezone.unwrap_or(Timezone::UTC),
                now,
            ),
            created_by: caller.subject.clone(),
            created_at: now,
        };
        let pending = serde_json::to_string(&view(&pending_view(&new)))
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let record = key.as_ref().map(|k| IdempotencyRecord {
            subject: caller.subject.clone(),
            key: k.clone(),
            request_hash: request.fingerprint(),
            ledger_id: new.id,
            status_code: StatusCode::ACCEPTED.as_u16(),
            body: pending.clone(),
        });
        match state.store.insert_ledger(&new, record.as_ref()).await? {
            InsertOutcome::Created(ledger) => {
                return Ok(enqueue_or_reject(&state, ledger, key.as_deref(), &caller).await);
            }
            InsertOutcome::Exists(id) => return Err(ApiError::LedgerExists(id)),
            InsertOutcome::Replay(found) => {
                if found.request_hash != request.fingerprint() {
                    return Err(ApiError::IdempotencyMismatch);
                }
                let status = StatusCode::from_u16(found.status_code)
                    .map_err(|e| ApiError::Internal(e.to_string()))?;
                let body: Value = serde_json::from_str(&found.body)
                    .map_err(|e| ApiError::Internal(e.to_string()))?;
                let mut response = (status, Json(body)).into_response();
                response
                    .headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
                return Ok(response);
            }
            // A Snowflake collision with another replica: take a fresh id.
            InsertOutcome::IdTaken => continue,
        }
    }
    Err(ApiError::Internal(
        "could not allocate a unique ledger id".into(),
    ))
}

/// The ledger a successful insert of `new` stores (for the idempotency record).
fn pending_view(new: &NewLedger) -> Ledger {
    Ledger {
        id: new.id,
        merchant_id: new.merchant_id.clone(),
        ledger_type: new.ledger_type,
        period: new.period,
        requested_timezone: new.requested_timezone,
        timezone: None,
        format: new.format,
        stage: new.stage,
        status: Status::Pending,
        version: 1,
        attempt_count: 0,
        failure_reason: None,
        file: None,
        created_by: new.created_by.clone(),
        created_at: new.created_at,
        updated_at: new.created_at,
        started_at: None,
        completed_at: None,
        deleted_at: None,
        lease_until: None,
    }
}

/// Enqueues a PENDING ledger; a refused enqueue leaves it REJECTED/ENQUEUE_FAILED (so `retry`
/// works) and answers 503.
async fn enqueue_or_reject(
    state: &AppState,
    ledger: Ledger,
    idempotency_key: Option<&str>,
    caller: &Caller,
) -> Response {
    state.notifier.status(&ledger).await;
    let message = JobMessage {
        ledger_id: ledger.id,
        merchant_id: ledger.merchant_id.clone(),
        redelivery: false,
    };
    let Err(e) = state.queue.enqueue(&message).await else {
        return accepted(&ledger);
    };
    tracing::error!(ledgerId = %ledger.id, merchantId = %ledger.merchant_id, errorCode = "ENQUEUE_FAILED", error = %e, "enqueue failed");
    metrics::counter!("ledger_jobs_total", "status" => "REJECTED", "error_code" => "ENQUEUE_FAILED")
        .increment(1);
    let reason = FailureReason {
        error_code: "ENQUEUE_FAILED".into(),
        message: "the queue did not accept the job; retry it".into(),
        retryable: true,
        at: Utc::now(),
    };
    let rejected = match state.store.reject_pending(ledger.id, &reason).await {
        Ok(Some(l)) => l,
        Ok(None) | Err(_) => ledger,
    };
    state.notifier.status(&rejected).await;
    let error = ApiError::EnqueueFailed(Box::new(view(&rejected)));
    if let Some(key) = idempotency_key
        && let Err(e) = state
            .store
            .update_idempotency(&caller.subject, key, 503, &error.body().to_string())
            .await
    {
        tracing::warn!(error = %e, "could not record the idempotent response");
    }
    error.into_response()
}

fn parse_id(raw: &str) -> Result<LedgerId, ApiError> {
    raw.parse::<LedgerId>().map_err(|e| {
        // A decimal id of the documented form (`^[1-9][0-9]{0,18}$`) that does not fit in 63
        // bits is well-formed: no ledger has it.
        let documented = (1..=19).contains(&raw.len())
            && !raw.starts_with('0')
            && raw.bytes().all(|b| b.is_ascii_digit());
        if documented {
            ApiError::NotFound("no such ledger")
        } else {
            ApiError::Validation(e)
        }
    })
}

/// Loads a ledger the caller may use with `perm`; anything else — a deleted ledger too,
/// unless `include_deleted` (an audit read) — is the same 404.
async fn load(
    state: &AppState,
    caller: &Caller,
    raw_id: &str,
    perm: Permission,
    include_deleted: bool,
) -> Result<Ledger, ApiError> {
    const MISSING: ApiError = ApiError::NotFound("no such ledger");
    let id = parse_id(raw_id)?;
    let ledger = state.store.get_ledger(id).await?.ok_or(MISSING)?;
    match assert_merchant_access(&state.authz, caller, &ledger.merchant_id, perm).await {
        Ok(()) if ledger.deleted_at.is_some() && !include_deleted => Err(MISSING),
        Ok(()) => Ok(ledger),
        // Existence is not leaked: an id the caller may not see is just missing.
        Err(crate::auth::AccessError::Denied { .. }) => Err(MISSING),
        Err(e) => Err(e.into()),
    }
}

error_responses! {
    /// What reading one ledger (or its timeline) can answer besides 200; 403 only for an
    /// audit read (`includeDeleted=true`) by a caller who is not platform_admin.
    ReadErrors {
        400 => ["VALIDATION_ERROR"],
        401 => ["UNAUTHORIZED"],
        403 => ["FORBIDDEN"],
        404 => ["NOT_FOUND"],
        500 => ["INTERNAL"],
        503 => ["SERVICE_UNAVAILABLE"],
    }
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
        ("id" = String, Path, description = "The ledger id", pattern = "^[1-9][0-9]{0,18}$", example = "383687767063789568"),
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
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<LedgerView>, ApiError> {
    let deleted = include_deleted(&state, &caller, &params).await?;
    let ledger = load(&state, &caller, &id, Permission::Read, deleted).await?;
    Ok(Json(view(&ledger)))
}

/// Whether the request asks for an audit read of deleted ledgers (`includeDeleted=true`),
/// which only a caller who may delete every merchant's ledgers may make.
async fn include_deleted(
    state: &AppState,
    caller: &Caller,
    params: &HashMap<String, String>,
) -> Result<bool, ApiError> {
    if let Some(unknown) = params.keys().find(|k| k.as_str() != "includeDeleted") {
        return Err(InvalidInput::new(unknown.clone(), "unknown query parameter").into());
    }
    match params.get("includeDeleted").map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => match state
            .authz
            .scope(&caller.subject, Permission::Delete)
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?
        {
            MerchantScope::All => Ok(true),
            MerchantScope::Only(_) => Err(ApiError::AuditOnly),
        },
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
        ("id" = String, Path, description = "The ledger id", pattern = "^[1-9][0-9]{0,18}$", example = "383687767063789568"),
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
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Timeline>, ApiError> {
    let deleted = include_deleted(&state, &caller, &params).await?;
    let ledger = load(&state, &caller, &id, Permission::Read, deleted).await?;
    let items = state.store.list_events(ledger.id).await?;
    Ok(Json(Timeline { items }))
}

fn encode_cursor(id: LedgerId) -> String {
    URL_SAFE_NO_PAD.encode(format!("v1:{id}"))
}

fn decode_cursor(raw: &str) -> Result<LedgerId, InvalidInput> {
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
    ListErrors {
        400 => ["VALIDATION_ERROR"],
        401 => ["UNAUTHORIZED"],
        403 => ["FORBIDDEN"],
        500 => ["INTERNAL"],
        503 => ["SERVICE_UNAVAILABLE"],
    }
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
    let (audit, filters): (HashMap<String, String>, HashMap<String, String>) =
        params.into_iter().partition(|(k, _)| k == "includeDeleted");
    let params = filters;
    if let Some(unknown) = params.keys().find(|k| !PARAMS.contains(&k.as_str())) {
        return Err(InvalidInput::new(unknown.clone(), "unknown query parameter").into());
    }
    let include_deleted = include_deleted(&state, &caller, &audit).await?;
    let get = |k: &str| params.get(k).map(String::as_str);
    let status = get("status")
        .map(|s| parse_wire("status", s, Status::ALL, Status::parse))
        .transpose()?;
    let ledger_type = get("type")
        .map(|s| parse_wire("type", s, LedgerType::ALL, LedgerType::parse))
        .transpose()?;
    let period = get("period")
        .map(Period::parse)
        .transpose()?
        .map(|p| p.to_string());
    let limit = match get("limit") {
        None => DEFAULT_LIMIT,
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| InvalidInput::new("limit", format!("expected 1 to {MAX_LIMIT}")))?,
    };
    let before = get("cursor").map(decode_cursor).transpose()?;
    let merchants = match get("merchantId") {
        Some(raw) => {
            let merchant = MerchantId::parse(raw)?;
            assert_merchant_access(&state.authz, &caller, &merchant, Permission::Read).await?;
            Some(vec![merchant])
        }
        None => match state
            .authz
            .scope(&caller.subject, Permission::Read)
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?
        {
            MerchantScope::All => None,
            MerchantScope::Only(list) => Some(list),
        },
    };
    let query = ListQuery {
        merchants,
        status,
        ledger_type,
        period,
        before,
        limit: limit + 1,
        include_deleted,
    };
    let mut ledgers = state.store.list_ledgers(&query).await?;
    let next = if ledgers.len() > limit as usize {
        ledgers.truncate(limit as usize);
        ledgers.last().map(|l| encode_cursor(l.id))
    } else {
        None
    };
    Ok(Json(LedgerPage {
        items: ledgers.iter().map(view).collect(),
        next_cursor: next,
    }))
}

/// The `version` query parameter of a download: a `u32` from 1 (the path macro's literals
/// cannot say `maximum = u32::MAX`).
enum VersionParam {}

impl utoipa::IntoParams for VersionParam {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        vec![
            ParameterBuilder::new()
                .name("version")
                .parameter_in(ParameterIn::Query)
                .description(Some(
                    "Which version's file (default: the newest completed one)",
                ))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                            utoipa::openapi::KnownFormat::Int64,
                        )))
                        .minimum(Some(1))
                        .maximum(Some(u32::MAX)),
                ))
                .build(),
        ]
    }
}

error_responses! {
    /// What a download can answer besides 200.
    DownloadErrors {
        400 => ["VALIDATION_ERROR"],
        401 => ["UNAUTHORIZED"],
        404 => ["NOT_FOUND"],
        409 => ["JOB_NOT_READY"],
        500 => ["INTERNAL"],
        503 => ["SERVICE_UNAVAILABLE"],
    }
}

/// Download a ledger's document, decrypted.
///
/// The plaintext is streamed as it is decrypted and verified; a file that fails verification
/// after the first byte ends the connection early (the body is shorter than its
/// `Content-Length`), never with wrong bytes. A deleted ledger is a 404.
#[utoipa::path(
    get,
    path = "/ledgers/{id}/download",
    tag = "ledgers",
    operation_id = "downloadLedger",
    params(
        ("id" = String, Path, description = "The ledger id", pattern = "^[1-9][0-9]{0,18}$", example = "383687767063789568"),
        VersionParam,
    ),
    responses(
        (
            status = 200,
            description = "The document",
            content(
                ("application/pdf"),
                ("text/csv"),
                ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
            ),
            headers(
                ("Content-Disposition" = String, description = "`attachment; filename=\"…\"; filename*=UTF-8''…`"),
                ("Content-Length" = u64, description = "Size of the plaintext"),
                ("ETag" = String, description = "The quoted hex SHA-256 of the plaintext"),
                ("X-Content-Type-Options" = String, description = "`nosniff`"),
                ("Cache-Control" = String, description = "`no-store`"),
            ),
        ),
        DownloadErrors,
    ),
    security(("bearer" = [])),
)]
async fn download(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    if let Some(unknown) = params.keys().find(|k| k.as_str() != "version") {
        return Err(InvalidInput::new(unknown.clone(), "unknown query parameter").into());
    }
    let ledger = load(&state, &caller, &id, Permission::Download, false).await?;
    let version = match params.get("version") {
        None => match &ledger.file {
            Some(f) => f.version,
            None => return Err(not_ready(&ledger)),
        },
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|v| *v >= 1)
            .ok_or_else(|| InvalidInput::new("version", "expected a positive integer"))?,
    };
    let Some(file) = state.store.get_file(ledger.id, version).await? else {
        return Err(if version == ledger.version {
            not_ready(&ledger)
        } else {
            ApiError::NotFound("no such version")
        });
    };
    let binding = Binding {
        ledger_id: ledger.id.as_i64(),
        version,
    };
    let objects = state
        .storage
        .read(&file.object_key)
        .await
        .map_err(|e| download_error(&file.object_key, e.into()))?;
    let mut plain = Decrypting::new(
        Decryptor::new(&state.keyring, binding),
        objects,
        &file.info.sha256,
    );
    // The first chunk proves the header (key id, wrapped key, binding) before a 200 is sent.
    let first = plain
        .next_chunk()
        .await
        .map_err(|e| download_error(&file.object_key, e))?;
    let body = plain.into_body(first, file.object_key.clone());
    let name = &file.info.file_name;
    let disposition = format!("attachment; filename=\"{name}\"; filename*=UTF-8''{name}");
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    let value = |s: &str| HeaderValue::from_str(s).map_err(|e| ApiError::Internal(e.to_string()));
    headers.insert(header::CONTENT_TYPE, value(&file.info.content_type)?);
    headers.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(file.info.size_bytes),
    );
    headers.insert(header::CONTENT_DISPOSITION, value(&disposition)?);
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::ETAG, value(&format!("\"{}\"", file.info.sha256))?);
    Ok(response)
}

/// Why `ledger`'s current version has no file to download, and what the caller can do.
fn not_ready(ledger: &Ledger) -> ApiError {
    ApiError::NotReady(match (&ledger.status, &ledger.failure_reason) {
        (Status::Rejected, reason) => format!(
            "version {} was rejected{} and has no file (see the ledger's failureReason); \
             POST /ledgers/{}/retry generates it again",
            ledger.version,
            reason
                .as_ref()
                .map(|r| format!(" with {}", r.error_code))
                .unwrap_or_default(),
            ledger.id
        ),
        _ => format!(
            "version {} is {}: its file can be downloaded once the ledger is COMPLETED",
            ledger.version, ledger.status
        ),
    })
}

/// A download that failed before its first byte: an unreachable storage backend is a 503 the
/// client may retry; a recorded file that is missing or does not decrypt to what was
/// recorded is lost data, a 500 logged with the object key.
fn download_error(object_key: &str, e: super::download::DownloadError) -> ApiError {
    use super::download::DownloadError;
    use crate::storage::StorageError;
    match e {
        DownloadError::Storage(StorageError::Backend(cause)) => {
            ApiError::Unavailable(format!("object storage reading {object_key}: {cause}"))
        }
        other => ApiError::Internal(format!("{object_key}: {other}")),
    }
}

/// Applies a user's state change through the state machine, then the store.
async fn change(
    state: &AppState,
    caller: &Caller,
    raw_id: &str,
    perm: Permission,
    action: Action,
    store_change: UserChange,
) -> Result<Option<Ledger>, ApiError> {
    // A deleted ledger is a 404 for every change, a second DELETE included.
    let ledger = load(state, caller, raw_id, perm, false).await?;
    ledger.status.apply(action, ledger.stage)?;
    match state
        .store
        .user_change(
            ledger.id,
            crate::store::Expected::of(&ledger),
            store_change,
            Utc::now(),
        )
        .await?
    {
        Some(changed) => Ok(Some(changed)),
        None => {
            // Changed under us: report against the fresh state.
            let fresh = state
                .store
                .get_ledger(ledger.id)
                .await?
                .ok_or(ApiError::NotFound("no such ledger"))?;
            if fresh.deleted_at.is_some() {
                // Deleted meanwhile: gone for every action, a racing second DELETE too.
                return Err(ApiError::NotFound("no such ledger"));
            }
            fresh.status.apply(action, fresh.stage)?;
            Err(ApiError::Conflict(crate::domain::TransitionError {
                code: "JOB_IN_PROGRESS",
                message: "the ledger changed meanwhile; read it and try again",
            }))
        }
    }
}

error_responses! {
    /// What a retry can answer besides 202.
    RetryErrors {
        400 => ["VALIDATION_ERROR"],
        401 => ["UNAUTHORIZED"],
        404 => ["NOT_FOUND"],
        409 => ["JOB_IN_PROGRESS", "INVALID_STATE"],
        500 => ["INTERNAL"],
        503 => ["ENQUEUE_FAILED", "SERVICE_UNAVAILABLE"],
    }
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
    params(("id" = String, Path, description = "The ledger id", pattern = "^[1-9][0-9]{0,18}$", example = "383687767063789568")),
    responses(
        (status = 202, description = "PENDING again, queued", body = LedgerView, headers(("Location" = String, description = "The ledger's URL"))),
        RetryErrors,
    ),
    security(("bearer" = [])),
)]
async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let changed = change(
        &state,
        &caller,
        &id,
        Permission::Retry,
        Action::Retry,
        UserChange::Retry,
    )
    .await?;
    let ledger = changed.ok_or(ApiError::NotFound("no such ledger"))?;
    Ok(enqueue_or_reject(&state, ledger, None, &caller).await)
}

error_responses! {
    /// What a regenerate can answer besides 202.
    RegenerateErrors {
        400 => ["VALIDATION_ERROR"],
        401 => ["UNAUTHORIZED"],
        404 => ["NOT_FOUND"],
        409 => ["JOB_IN_PROGRESS", "INVALID_STATE", "LEDGER_FINAL"],
        500 => ["INTERNAL"],
        503 => ["ENQUEUE_FAILED", "SERVICE_UNAVAILABLE"],
    }
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
    params(("id" = String, Path, description = "The ledger id", pattern = "^[1-9][0-9]{0,18}$", example = "383687767063789568")),
    responses(
        (status = 202, description = "The new version, PENDING, queued", body = LedgerView, headers(("Location" = String, description = "The ledger's URL"))),
        RegenerateErrors,
    ),
    security(("bearer" = [])),
)]
async fn regenerate(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let changed = change(
        &state,
        &caller,
        &id,
        Permission::Regenerate,
        Action::Regenerate,
        UserChange::Regenerate,
    )
    .await?;
    let ledger = changed.ok_or(ApiError::NotFound("no such ledger"))?;
    Ok(enqueue_or_reject(&state, ledger, None, &caller).await)
}

error_responses! {
    /// What a delete can answer besides 204.
    DeleteErrors {
        400 => ["VALIDATION_ERROR"],
        401 => ["UNAUTHORIZED"],
        404 => ["NOT_FOUND"],
        409 => ["JOB_IN_PROGRESS"],
        500 => ["INTERNAL"],
        503 => ["SERVICE_UNAVAILABLE"],
    }
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
    params(("id" = String, Path, description = "The ledger id", pattern = "^[1-9][0-9]{0,18}$", example = "383687767063789568")),
    responses(
        (status = 204, description = "Deleted"),
        DeleteErrors,
    ),
    security(("bearer" = [])),
)]
async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if let Some(deleted) = change(
        &state,
        &caller,
        &id,
        Permission::Delete,
        Action::Delete,
        UserChange::Delete,
    )
    .await?
    {
        tracing::info!(ledgerId = %deleted.id, merchantId = %deleted.merchant_id, subject = %caller.subject, "ledger deleted (soft)");
    }
    Ok(StatusCode::NO_CONTENT)
}
