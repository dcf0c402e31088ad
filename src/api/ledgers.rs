//! The ledger resource: create, list, read, timeline, download, retry, regenerate, delete.
//! Every handler authenticates ([`Caller`]), turns raw input into domain values, and calls
//! `assert_merchant_access` before it reads or changes a merchant's data.

use std::collections::HashMap;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::download::Decrypting;
use super::extract::{JsonObject, Path, Query};
use super::{ApiError, AppState};
use crate::auth::{Caller, MerchantScope, Permission, assert_merchant_access};
use crate::crypto::{Binding, Decryptor};
use crate::domain::ledger::{parse_wire, stage_at};
use crate::domain::{
    Action, FailureReason, Format, InvalidInput, Ledger, LedgerId, LedgerType, MerchantId, Period,
    Status, Timezone,
};
use crate::queue::JobMessage;
use crate::store::{IdempotencyRecord, InsertOutcome, ListQuery, NewLedger, UserChange};

/// Largest page of a list.
const MAX_LIMIT: u32 = 200;
/// Page size when none is asked for.
const DEFAULT_LIMIT: u32 = 50;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/ledgers", post(create).get(list))
        .route("/ledgers/{id}", get(read).delete(delete))
        .route("/ledgers/{id}/events", get(events))
        .route("/ledgers/{id}/download", get(download))
        .route("/ledgers/{id}/retry", post(retry))
        .route("/ledgers/{id}/regenerate", post(regenerate))
        .route("/openapi.json", get(openapi))
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The JSON view of a ledger (SPEC §3).
pub fn view(l: &Ledger) -> Value {
    let failure = l.failure_reason.as_ref().map(|f| {
        json!({
            "errorCode": f.error_code, "message": f.message,
            "retryable": f.retryable, "at": rfc3339(f.at),
        })
    });
    json!({
        "id": l.id.to_string(),
        "merchantId": l.merchant_id,
        "type": l.ledger_type,
        "period": l.period.to_string(),
        "timezone": l.timezone.or(l.requested_timezone).map(|t| t.name()),
        "format": l.format,
        "stage": l.stage,
        "status": l.status,
        "version": l.version,
        "attemptCount": l.attempt_count,
        "failureReason": failure,
        "file": l.file,
        "createdBy": l.created_by,
        "createdAt": rfc3339(l.created_at),
        "updatedAt": rfc3339(l.updated_at),
        "startedAt": l.started_at.map(rfc3339),
        "completedAt": l.completed_at.map(rfc3339),
        "deletedAt": l.deleted_at.map(rfc3339),
    })
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
        let record = key.as_ref().map(|k| IdempotencyRecord {
            subject: caller.subject.clone(),
            key: k.clone(),
            request_hash: request.fingerprint(),
            ledger_id: new.id,
            status_code: StatusCode::ACCEPTED.as_u16(),
            body: view(&pending_view(&new)).to_string(),
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
    raw.parse::<LedgerId>().map_err(ApiError::Validation)
}

/// Loads a ledger the caller may use with `perm`; anything else is the same 404.
async fn load(
    state: &AppState,
    caller: &Caller,
    raw_id: &str,
    perm: Permission,
) -> Result<Ledger, ApiError> {
    const MISSING: ApiError = ApiError::NotFound("no such ledger");
    let id = parse_id(raw_id)?;
    let ledger = state.store.get_ledger(id).await?.ok_or(MISSING)?;
    match assert_merchant_access(&state.authz, caller, &ledger.merchant_id, perm).await {
        Ok(()) => Ok(ledger),
        // Existence is not leaked: an id the caller may not see is just missing.
        Err(crate::auth::AccessError::Denied) => Err(MISSING),
        Err(e) => Err(e.into()),
    }
}

async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let ledger = load(&state, &caller, &id, Permission::Read).await?;
    Ok(Json(view(&ledger)))
}

async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let ledger = load(&state, &caller, &id, Permission::Read).await?;
    let items = state.store.list_events(ledger.id).await?;
    Ok(Json(json!({ "items": items })))
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

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    const PARAMS: [&str; 6] = ["merchantId", "status", "type", "period", "limit", "cursor"];
    if let Some(unknown) = params.keys().find(|k| !PARAMS.contains(&k.as_str())) {
        return Err(InvalidInput::new(unknown.clone(), "unknown query parameter").into());
    }
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
    };
    let mut ledgers = state.store.list_ledgers(&query).await?;
    let next = if ledgers.len() > limit as usize {
        ledgers.truncate(limit as usize);
        ledgers.last().map(|l| encode_cursor(l.id))
    } else {
        None
    };
    let items: Vec<Value> = ledgers.iter().map(view).collect();
    Ok(Json(json!({ "items": items, "nextCursor": next })))
}

async fn download(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    if let Some(unknown) = params.keys().find(|k| k.as_str() != "version") {
        return Err(InvalidInput::new(unknown.clone(), "unknown query parameter").into());
    }
    let ledger = load(&state, &caller, &id, Permission::Download).await?;
    if ledger.deleted_at.is_some() {
        return Err(ApiError::NotFound("no such ledger"));
    }
    let version = match params.get("version") {
        None => match &ledger.file {
            Some(f) => f.version,
            None => return Err(ApiError::NotReady),
        },
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|v| *v >= 1)
            .ok_or_else(|| InvalidInput::new("version", "expected a positive integer"))?,
    };
    let Some(file) = state.store.get_file(ledger.id, version).await? else {
        return Err(if version == ledger.version {
            ApiError::NotReady
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
    let ledger = load(state, caller, raw_id, perm).await?;
    if ledger.deleted_at.is_some() {
        return if matches!(action, Action::Delete) {
            Ok(None)
        } else {
            Err(ApiError::NotFound("no such ledger"))
        };
    }
    ledger.status.apply(action, ledger.stage)?;
    match state
        .store
        .user_change(ledger.id, ledger.status, store_change, Utc::now())
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
                // Deleted meanwhile: a second DELETE succeeded already; anything else is gone.
                return if matches!(action, Action::Delete) {
                    Ok(None)
                } else {
                    Err(ApiError::NotFound("no such ledger"))
                };
            }
            fresh.status.apply(action, fresh.stage)?;
            Err(ApiError::Conflict(crate::domain::TransitionError {
                code: "JOB_IN_PROGRESS",
                message: "the ledger changed meanwhile; read it and try again",
            }))
        }
    }
}

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

async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
}
