//! The schedule resource over HTTP (SPEC §11): create, list, read with its runs, pause or
//! resume, delete. Handlers turn raw input into domain values, call the use case
//! ([`Schedules`](crate::usecases::Schedules)) and answer views.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::batches::{formats, selection};
use super::error::{ApiError, error_responses};
use super::extract::{JsonObject, Path, Query};
use super::ledgers::{encode_cursor, required, string_field};
use super::params::{no_query, paging, snowflake_id};
use super::state::AppState;
use crate::auth::Caller;
use crate::domain::ledger::parse_wire;
use crate::domain::schedule::{format_delay, parse_delay};
use crate::domain::{
    BatchId, BatchStatus, Cadence, Format, InvalidInput, LedgerType, Period, Selection,
};
use crate::store::schedules::RunRecord;
use crate::usecases::schedules::{ScheduleRequest, ScheduleView};

/// Runs shown with a schedule.
const RUNS_SHOWN: u32 = 50;
/// The delay when none is asked for.
const DEFAULT_DELAY: std::time::Duration = std::time::Duration::from_secs(3600);

/// The schedule routes, relative to the API's base path; each handler documents itself.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(read, update, delete))
}

/// The body of `POST /schedules`. Unknown fields are refused.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = CreateSchedule)]
#[allow(dead_code)] // Documentation only: `create` parses the body field by field for precise errors.
pub struct CreateScheduleBody {
    /// The merchants: 1 to 10,000 ids, or `"*"` (every merchant the source lists; needs
    /// platform_admin).
    #[schema(value_type = Object, example = json!(["m_acme", "m_globex"]))]
    merchant_ids: Value,
    /// What the documents contain.
    #[serde(rename = "type")]
    ledger_type: LedgerType,
    /// One ledger per merchant and format; each format once.
    formats: Vec<Format>,
    /// How often: each period of the cadence becomes one run.
    cadence: Cadence,
    /// How long after a merchant's period closes (in its zone) its ledgers are made: an
    /// ISO 8601 duration of weeks, days, hours, minutes, seconds, at most P31D (default
    /// PT1H).
    #[schema(example = "PT1H")]
    delay: Option<String>,
    /// Catch up from this period of the cadence: every period since that has closed is
    /// made at once. Without it, the first run is the period holding today (UTC).
    #[schema(example = "2026-01")]
    from: Option<String>,
}

/// A run of a schedule: one period's batch.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunBody {
    /// The period.
    pub period: String,
    /// Its batch (`GET /batches/{id}`).
    #[schema(value_type = String)]
    pub batch_id: BatchId,
    /// The batch's status as last published.
    pub status: BatchStatus,
    /// When the run opened.
    pub started_at: DateTime<Utc>,
    /// Merchants it left out because the creator may not create for them (any more).
    pub skipped: u64,
    /// The first of them (at most 100).
    pub skipped_merchant_ids: Vec<String>,
}

/// A schedule.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Schedule)]
pub struct ScheduleBody {
    /// The schedule id (a decimal string).
    #[schema(example = "383687767063789568")]
    pub id: String,
    /// The merchant ids, or `"*"`.
    #[schema(value_type = Object)]
    pub merchant_ids: Value,
    /// What the documents contain.
    #[serde(rename = "type")]
    pub ledger_type: LedgerType,
    /// The formats.
    pub formats: Vec<Format>,
    /// How often.
    pub cadence: Cadence,
    /// The delay after each merchant's close (ISO 8601).
    pub delay: String,
    /// The first period asked for, if any.
    pub from: Option<String>,
    /// Paused: no run opens or grows; resuming catches up.
    pub paused: bool,
    /// The creator's subject; each run acts for them.
    pub created_by: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// The earliest upcoming close (plus the delay) over its merchants; `null` while
    /// paused. Until a run has seen the merchants' zones, the earliest zone on Earth's.
    pub next_run_at: Option<DateTime<Utc>>,
    /// Its runs, newest first (on `GET /schedules/{id}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runs: Option<Vec<RunBody>>,
}

fn body(view: &ScheduleView, runs: Option<&[RunRecord]>) -> ScheduleBody {
    let s = &view.schedule;
    ScheduleBody {
        id: s.id.to_string(),
        merchant_ids: match &s.merchants {
            Selection::All => Value::from("*"),
            Selection::Only(ids) => Value::from(ids.iter().map(|m| m.as_str()).collect::<Vec<_>>()),
        },
        ledger_type: s.ledger_type,
        formats: s.formats.clone(),
        cadence: s.cadence,
        delay: format_delay(s.delay),
        from: s.from.map(|p| p.to_string()),
        paused: s.paused,
        created_by: s.created_by.clone(),
        created_at: s.created_at,
        next_run_at: view.next_run_at,
        runs: runs.map(|runs| {
            runs.iter()
                .map(|r| RunBody {
                    period: r.period.to_string(),
                    batch_id: r.batch_id,
                    status: r.status,
                    started_at: r.started_at,
                    skipped: r.skipped,
                    skipped_merchant_ids: r
                        .skipped_ids
                        .iter()
                        .map(|m| m.as_str().to_owned())
                        .collect(),
                })
                .collect()
        }),
    }
}

/// A page of schedules.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulePage {
    /// At most `limit` schedules, newest first.
    pub items: Vec<ScheduleBody>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[schema(required = true, pattern = "^[A-Za-z0-9_-]+$")]
    pub next_cursor: Option<String>,
}

/// The schedule request of a body, validated field by field.
fn schedule_request(body: &Map<String, Value>) -> Result<ScheduleRequest, InvalidInput> {
    const FIELDS: [&str; 6] = ["merchantIds", "type", "formats", "cadence", "delay", "from"];
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
    let formats = formats(body)?;
    let cadence = parse_wire(
        "cadence",
        required(body, "cadence")?,
        Cadence::ALL,
        Cadence::parse,
    )?;
    let delay = string_field(body, "delay")?
        .map(parse_delay)
        .transpose()?
        .unwrap_or(DEFAULT_DELAY);
    let from = string_field(body, "from")?
        .map(|raw| Period::parse(raw).map_err(|e| InvalidInput::new("from", e.message)))
        .transpose()?;
    ScheduleRequest::new(
        merchants,
        ledger_type,
        formats,
        cadence,
        delay,
        from,
        Utc::now(),
    )
}

/// The schedule id of a path; a well-formed id no schedule has is a 404.
fn schedule_id(raw: &str) -> Result<i64, ApiError> {
    snowflake_id::<BatchId>(raw, "no such schedule").map(BatchId::as_i64)
}

/// The `{id}` of a schedule's path.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
struct ScheduleIdPath {
    /// The schedule id.
    #[param(pattern = "^[1-9][0-9]{0,18}$", example = "383687767063789568")]
    id: String,
}

error_responses! {
    /// What creating a schedule can answer besides 201.
    CreateScheduleErrors [
        Validation, Unauthorized, Forbidden, PayloadTooLarge, UnsupportedMediaType, Internal,
        ServiceUnavailable,
    ]
}

/// Make a schedule: every period of a cadence, once closed, becomes its ledgers.
///
/// For each merchant, once a period of the cadence has ended in the merchant's own zone and
/// `delay` has passed, the worker role makes that period's ledgers (FINAL), one run — a
/// batch — per period: the run's batch grows as each merchant's close passes and ends when
/// the last has and every ledger is done. Exactly once per (schedule, merchant, period,
/// format), across replicas, restarts and downtime: missed periods are caught up. Naming a
/// merchant the caller may not create for is a 403 naming it; `"*"` needs platform_admin.
/// Each run acts for the creator, judged again per merchant (`skipped`).
#[utoipa::path(
    post,
    path = "/schedules",
    tag = "schedules",
    operation_id = "createSchedule",
    request_body(content = CreateScheduleBody, content_type = "application/json", description = "The schedule; at most 1 MiB"),
    responses(
        (
            status = 201,
            description = "Made",
            body = ScheduleBody,
            headers(("Location" = String, description = "The schedule's URL")),
            links(
                ("GetSchedule" = (operation_id = "getSchedule", parameters(("id" = "$response.body#/id")))),
            ),
        ),
        CreateScheduleErrors,
    ),
    security(("bearer" = [])),
)]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let request = schedule_request(&body)?;
    let view = state.schedules().create(&caller, request).await?;
    let mut response = (StatusCode::CREATED, Json(body_of(&view))).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("{}/schedules/{}", super::BASE, view.schedule.id))
    {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

fn body_of(view: &ScheduleView) -> ScheduleBody {
    body(view, None)
}

error_responses! {
    /// What reading a schedule can answer besides 200.
    ReadScheduleErrors [Validation, Unauthorized, NotFound, Internal, ServiceUnavailable]
}

/// One schedule, with its newest runs (up to 50).
///
/// Visible to its creator and to callers who may read every merchant; to anyone else (and
/// once deleted) it is a 404.
#[utoipa::path(
    get,
    path = "/schedules/{id}",
    tag = "schedules",
    operation_id = "getSchedule",
    params(ScheduleIdPath),
    responses(
        (status = 200, description = "The schedule and its runs", body = ScheduleBody),
        ReadScheduleErrors,
    ),
    security(("bearer" = [])),
)]
async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): Path<ScheduleIdPath>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<ScheduleBody>, ApiError> {
    no_query(&params)?;
    let (view, runs) = state
        .schedules()
        .get(&caller, schedule_id(&path.id)?, RUNS_SHOWN)
        .await?;
    Ok(Json(body(&view, Some(&runs))))
}

error_responses! {
    /// What listing schedules can answer besides 200.
    ListScheduleErrors [Validation, Unauthorized, Internal, ServiceUnavailable]
}

/// The caller's schedules, newest first.
#[utoipa::path(
    get,
    path = "/schedules",
    tag = "schedules",
    operation_id = "listSchedules",
    params(
        ("limit" = Option<u32>, Query, description = "Page size, 1 to 200 (default 50)", minimum = 1, maximum = 200),
        ("cursor" = Option<String>, Query, description = "The `nextCursor` of the previous page", pattern = "^[A-Za-z0-9_-]+$"),
    ),
    responses(
        (status = 200, description = "A page of schedules", body = SchedulePage),
        ListScheduleErrors,
    ),
    security(("bearer" = [])),
)]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<SchedulePage>, ApiError> {
    let (limit, before) = paging::<BatchId>(&params, &[])?;
    let before = before.map(BatchId::as_i64);
    let (items, more) = state.schedules().list(&caller, before, limit).await?;
    Ok(Json(SchedulePage {
        items: items.iter().map(body_of).collect(),
        next_cursor: more.map(encode_cursor),
    }))
}

/// The body of `PATCH /schedules/{id}`.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = UpdateSchedule)]
#[allow(dead_code)] // Documentation only: `update` parses the body itself.
pub struct UpdateScheduleBody {
    /// Pause (no run opens or grows) or resume (periods that closed meanwhile are caught
    /// up).
    paused: bool,
}

error_responses! {
    /// What pausing or resuming a schedule can answer besides 200.
    UpdateScheduleErrors [
        Validation, Unauthorized, NotFound, PayloadTooLarge, UnsupportedMediaType, Internal,
        ServiceUnavailable,
    ]
}

/// Pause or resume a schedule.
///
/// Its creator, or a caller who may create for every merchant.
#[utoipa::path(
    patch,
    path = "/schedules/{id}",
    tag = "schedules",
    operation_id = "updateSchedule",
    params(ScheduleIdPath),
    request_body(content = UpdateScheduleBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The schedule as it is now", body = ScheduleBody),
        UpdateScheduleErrors,
    ),
    security(("bearer" = [])),
)]
async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): Path<ScheduleIdPath>,
    JsonObject(body): JsonObject,
) -> Result<Json<ScheduleBody>, ApiError> {
    let id = schedule_id(&path.id)?;
    if let Some(unknown) = body.keys().find(|k| k.as_str() != "paused") {
        return Err(InvalidInput::new(unknown.clone(), "unknown field").into());
    }
    let paused = match body.get("paused") {
        Some(Value::Bool(b)) => *b,
        None => return Err(InvalidInput::new("paused", "is required").into()),
        Some(_) => return Err(InvalidInput::new("paused", "expected true or false").into()),
    };
    let view = state.schedules().set_paused(&caller, id, paused).await?;
    Ok(Json(body_of(&view)))
}

error_responses! {
    /// What deleting a schedule can answer besides 204.
    DeleteScheduleErrors [Validation, Unauthorized, NotFound, Internal, ServiceUnavailable]
}

/// Delete a schedule.
///
/// No run opens or grows any more; its runs and their ledgers stay. Its creator, or a
/// caller who may create for every merchant; afterwards the id is a 404.
#[utoipa::path(
    delete,
    path = "/schedules/{id}",
    tag = "schedules",
    operation_id = "deleteSchedule",
    params(ScheduleIdPath),
    responses(
        (status = 204, description = "Deleted"),
        DeleteScheduleErrors,
    ),
    security(("bearer" = [])),
)]
async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): Path<ScheduleIdPath>,
) -> Result<StatusCode, ApiError> {
    state
        .schedules()
        .delete(&caller, schedule_id(&path.id)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
